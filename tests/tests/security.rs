//! Access control over the real server (issue: who may do what): every RPC of every service
//! against every kind of caller, collection-limited listings, and the evaluation limits.

use std::sync::Arc;

use emberdb_client::{Client, ConnectOptions, SearchOptions, pb};
use emberdb_server::auth::{AuthConfig, KeyConfig, Keyring, Role, hash_hex};
use emberdb_tests::{TestServer, clustered, points, upsert_all};
use tonic::Code;

const ADMIN: &str = "admin-key-0123456789";
const WRITER: &str = "writer-key-0123456789";
const READER: &str = "reader-key-0123456789";
const LIMITED: &str = "limited-key-0123456789";

fn keyring() -> Arc<Keyring> {
    let key = |name: &str, k: &str, role, cols: Option<Vec<&str>>| KeyConfig {
        name: name.into(),
        sha256: hash_hex(k),
        role,
        collections: cols.map(|c| c.into_iter().map(String::from).collect()),
    };
    Arc::new(
        Keyring::from_config(&AuthConfig {
            keys: vec![
                key("admin", ADMIN, Role::Admin, None),
                key("writer", WRITER, Role::Writer, None),
                key("reader", READER, Role::Reader, None),
                key(
                    "limited",
                    LIMITED,
                    Role::Writer,
                    Some(vec!["other", "team-*"]),
                ),
            ],
            metrics_key_sha256: None,
        })
        .expect("valid keys"),
    )
}

async fn connect(s: &TestServer, key: Option<&str>) -> Client {
    Client::connect_with(
        format!("http://{}", s.addr),
        ConnectOptions {
            api_key: key.map(String::from),
            ..Default::default()
        },
    )
    .await
    .expect("connect")
}

fn code<T>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

/// Calls one RPC as `c` on collection `images` (which exists); returns the status code.
async fn call(c: &mut Client, rpc: &str) -> Code {
    let col = "images";
    let win = |v: &str| {
        Some(pb::Window {
            version: v.into(),
            from_ms: None,
            to_ms: None,
        })
    };
    match rpc {
        "CreateVersion" => code(
            c.create_version(col, &format!("tmp-{}", rand_suffix()), 8, pb::Metric::L2)
                .await,
        ),
        "ListCollections" => code(c.list_collections().await),
        "DescribeVersion" => code(c.describe(col, "v1").await),
        "DropVersion" => code(c.drop_version(col, "no-such-version").await),
        // A collection that does not exist: admins get NOT_FOUND, others an auth error.
        "DropCollection" => code(c.drop_collection("doomed").await),
        "SetAlias" => code(c.set_alias(col, "prod", "v1").await),
        "DeleteAlias" => code(c.delete_alias(col, "no-such-alias").await),
        "Upsert" => code(c.upsert(col, "v1", one_point()).await),
        "UpsertStream" => {
            let msg = pb::UpsertRequest {
                collection: col.into(),
                version: "v1".into(),
                points: one_point(),
            };
            code(c.upsert_stream(futures::stream::iter(vec![msg])).await)
        }
        "Delete" => code(c.delete(col, "v1", vec![987_654]).await),
        "Get" => code(c.get(col, "v1", vec![1], false).await),
        "Search" => code(
            c.search(col, "v1", vec![0.0; 8], 3, SearchOptions::default())
                .await,
        ),
        "SearchBatch" => code(
            c.search_batch(col, "v1", vec![vec![0.0; 8]], 3, SearchOptions::default())
                .await,
        ),
        "Recall" => code(
            c.recall(
                pb::RecallRequest {
                    collection: col.into(),
                    version: "v1".into(),
                    k: Some(3),
                    ef: None,
                    sample_size: Some(10),
                    seed: None,
                },
                None,
            )
            .await,
        ),
        "Margin" => code(
            c.margin(
                pb::MarginRequest {
                    collection: col.into(),
                    version: "v1".into(),
                    ..Default::default()
                },
                None,
            )
            .await,
        ),
        "Confusion" => code(
            c.confusion(
                pb::ConfusionRequest {
                    collection: col.into(),
                    version: "v1".into(),
                    ..Default::default()
                },
                None,
            )
            .await,
        ),
        "Actions" => code(
            c.actions(
                pb::ActionsRequest {
                    collection: col.into(),
                    version: "v1".into(),
                    ..Default::default()
                },
                None,
            )
            .await,
        ),
        "Project" => code(
            c.project(
                pb::ProjectRequest {
                    collection: col.into(),
                    version: "v1".into(),
                    ..Default::default()
                },
                None,
            )
            .await,
        ),
        "Drift" => code(
            c.drift(
                pb::DriftRequest {
                    collection: col.into(),
                    baseline: win("v1"),
                    current: win("v1"),
                    sample_size: Some(50),
                    ..Default::default()
                },
                None,
            )
            .await,
        ),
        "CompareVersions" => code(c.compare_versions(compare(""), None).await),
        "CompareVersions+promote" => code(c.compare_versions(compare("prod"), None).await),
        "CheckConsistency" => code(c.check_consistency(col, "v1", false).await),
        "CheckConsistency+repair" => code(c.check_consistency(col, "v1", true).await),
        "SetMonitor" => code(
            c.set_monitor(pb::MonitorSpec {
                collection: col.into(),
                version: "v1".into(),
                interval_s: 3600,
                ..Default::default()
            })
            .await,
        ),
        "ListMonitors" => code(c.list_monitors(col).await),
        "DeleteMonitor" => code(c.delete_monitor(col, "no-such-version").await),
        "CreateSnapshot" => code(c.create_snapshot(&format!("s{}", rand_suffix()), "").await),
        "ListSnapshots" => code(c.list_snapshots().await),
        "DeleteSnapshot" => code(c.delete_snapshot("no-such-snapshot").await),
        "DownloadSnapshot" => {
            let out = std::env::temp_dir().join(format!("emberdb-dl-{}.tar", rand_suffix()));
            match c.download_snapshot("no-such-snapshot", &out).await {
                Ok(_) => Code::Ok,
                Err(e) => e
                    .downcast_ref::<tonic::Status>()
                    .map_or(Code::Unknown, |s| s.code()),
            }
        }
        "ExportBundle" => {
            let out = std::env::temp_dir().join(format!("emberdb-bundle-{}.tar.gz", rand_suffix()));
            let req = pb::ExportBundleRequest {
                collection: col.into(),
                current: win("v1"),
                baseline: win("v1"),
                include_points: true,
                sample_size: Some(50),
                ..Default::default()
            };
            let got = match c.export_bundle(req, None, &out).await {
                Ok(_) => Code::Ok,
                Err(e) => e
                    .downcast_ref::<tonic::Status>()
                    .map_or(Code::Unknown, |s| s.code()),
            };
            let _ = std::fs::remove_file(&out);
            got
        }
        "ListBundles" => code(c.list_bundles(col).await),
        "DownloadBundle" => {
            let out = std::env::temp_dir().join(format!("emberdb-dlb-{}.tar.gz", rand_suffix()));
            match c.download_bundle(&format!("{col}.v1.1.tar.gz"), &out).await {
                Ok(_) => Code::Ok,
                Err(e) => e
                    .downcast_ref::<tonic::Status>()
                    .map_or(Code::Unknown, |s| s.code()),
            }
        }
        other => panic!("no call for {other}"),
    }
}

fn compare(promote: &str) -> pb::CompareVersionsRequest {
    pb::CompareVersionsRequest {
        collection: "images".into(),
        baseline_version: "v1".into(),
        candidate_version: "v1".into(),
        k: Some(3),
        sample_size: Some(20),
        seed: None,
        promote_alias: promote.into(),
    }
}

fn one_point() -> Vec<pb::Point> {
    vec![pb::Point {
        id: 1,
        vector: vec![0.5; 8],
        label: "c0".into(),
        metadata: Default::default(),
        timestamp_ms: 0,
    }]
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The role each call needs: the RPC's own, raised by promotion and repair.
fn needs(rpc: &str) -> Role {
    match rpc {
        "CompareVersions+promote" | "CheckConsistency+repair" => Role::Admin,
        r => emberdb_server::auth::method_role(&format!("/x/{r}")).expect("a role"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_matrix_every_rpc_every_caller() -> anyhow::Result<()> {
    let s = TestServer::start_with(|c| c.keys = keyring()).await?;
    let mut admin = s
        .client_with(ConnectOptions {
            api_key: Some(ADMIN.into()),
            ..Default::default()
        })
        .await?;
    admin
        .create_version("images", "v1", 8, pb::Metric::L2)
        .await?;
    admin
        .create_version("other", "v1", 8, pb::Metric::L2)
        .await?;
    let (vs, labels) = clustered(7, 60, 8, 3);
    upsert_all(&mut admin, "images", "v1", points(&vs, &labels, 1), 30).await?;

    // Every RPC in the descriptor set has a row (two RPCs have an admin-only variant).
    let fds = <prost_types::FileDescriptorSet as prost::Message>::decode(
        emberdb_proto::v1::FILE_DESCRIPTOR_SET,
    )?;
    let mut rpcs: Vec<String> = fds
        .file
        .iter()
        .flat_map(|f| f.service.iter())
        .flat_map(|s| s.method.iter().map(|m| m.name().to_string()))
        .collect();
    rpcs.push("CompareVersions+promote".into());
    rpcs.push("CheckConsistency+repair".into());
    assert_eq!(rpcs.len(), 31 + 2);

    let callers: [(&str, Option<&str>); 6] = [
        ("no key", None),
        ("unknown key", Some("not-a-key")),
        ("reader", Some(READER)),
        ("writer", Some(WRITER)),
        ("limited writer", Some(LIMITED)),
        ("admin", Some(ADMIN)),
    ];
    let mut failures = Vec::new();
    for rpc in &rpcs {
        for (who, key) in &callers {
            let mut c = connect(&s, *key).await;
            let got = call(&mut c, rpc).await;
            let need = needs(rpc);
            let role = match *who {
                "reader" => Some(Role::Reader),
                "writer" | "limited writer" => Some(Role::Writer),
                "admin" => Some(Role::Admin),
                _ => None,
            };
            let want_auth_error = match role {
                None => Some(Code::Unauthenticated),
                Some(r) if r < need => Some(Code::PermissionDenied),
                // The limited key may list collections (filtered) but touch nothing of `images`.
                Some(_) if *who == "limited writer" && rpc != "ListCollections" => {
                    Some(Code::PermissionDenied)
                }
                Some(_) => None,
            };
            let ok = match want_auth_error {
                Some(want) => got == want,
                None => got != Code::Unauthenticated && got != Code::PermissionDenied,
            };
            if !ok {
                failures.push(format!(
                    "{rpc} as {who}: got {got:?}, want {want_auth_error:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "auth matrix:\n{}", failures.join("\n"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_keys_see_only_their_collections() -> anyhow::Result<()> {
    let s = TestServer::start_with(|c| c.keys = keyring()).await?;
    let mut admin = connect(&s, Some(ADMIN)).await;
    for col in ["images", "other", "team-a", "teams"] {
        admin.create_version(col, "v1", 4, pb::Metric::L2).await?;
    }
    let mut limited = connect(&s, Some(LIMITED)).await;
    let names: Vec<String> = limited
        .list_collections()
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["other", "team-a"]);
    // Monitors, likewise: an unscoped listing shows only its collections' monitors.
    for col in ["images", "team-a"] {
        admin
            .set_monitor(pb::MonitorSpec {
                collection: col.into(),
                version: "v1".into(),
                interval_s: 3600,
                ..Default::default()
            })
            .await?;
    }
    let monitored: Vec<String> = limited
        .list_monitors("")
        .await?
        .into_iter()
        .filter_map(|m| m.spec.map(|s| s.collection))
        .collect();
    assert_eq!(monitored, ["team-a"]);
    assert_eq!(admin.list_monitors("").await?.len(), 2);
    // Same status and message for a collection that exists and one that does not.
    let exists = limited.describe("images", "v1").await.unwrap_err();
    let missing = limited.describe("ghost", "v1").await.unwrap_err();
    assert_eq!(exists.code(), Code::PermissionDenied);
    assert_eq!(
        (exists.code(), exists.message()),
        (missing.code(), missing.message())
    );
    // Its own collections work, writes included.
    limited
        .upsert(
            "team-a",
            "v1",
            vec![pb::Point {
                id: 1,
                vector: vec![1.0; 4],
                ..Default::default()
            }],
        )
        .await?;
    assert_eq!(limited.describe("team-a", "v1").await?.point_count, 1);
    // Health stays open without a key.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", s.addr))?
        .connect()
        .await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    assert_eq!(r.into_inner().status, 1, "SERVING");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluation_limits() -> anyhow::Result<()> {
    let s = TestServer::start_with(|c| {
        c.limits.max_concurrent_evaluations = 1;
    })
    .await?;
    let mut c = s.client().await?;
    c.create_version("big", "v1", 32, pb::Metric::L2).await?;
    let (vs, labels) = clustered(11, 6000, 32, 10);
    upsert_all(&mut c, "big", "v1", points(&vs, &labels, 0), 1000).await?;
    // Eight evaluations at once against a limit of one: the extra ones are refused at once.
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.compare_versions(
                pb::CompareVersionsRequest {
                    collection: "big".into(),
                    baseline_version: "v1".into(),
                    candidate_version: "v1".into(),
                    k: Some(10),
                    sample_size: None,
                    seed: Some(i),
                    promote_alias: String::new(),
                },
                None,
            )
            .await
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(code(t.await?));
    }
    let refused = codes
        .iter()
        .filter(|&&c| c == Code::ResourceExhausted)
        .count();
    let served = codes.iter().filter(|&&c| c == Code::Ok).count();
    assert!(served >= 1 && refused >= 1, "codes: {codes:?}");
    assert_eq!(served + refused, 8, "codes: {codes:?}");
    drop(s);

    // An exact evaluation over the memory limit is refused before it starts, naming the estimate.
    let s = TestServer::start_with(|c| c.limits.evaluation_memory_bytes = 16 << 20).await?;
    let mut c = s.client().await?;
    c.create_version("big", "v1", 32, pb::Metric::L2).await?;
    upsert_all(
        &mut c,
        "big",
        "v1",
        points(&vs[..500], &labels[..500], 0),
        500,
    )
    .await?;
    let req = |mode: pb::EvalMode| pb::ConfusionRequest {
        collection: "big".into(),
        version: "v1".into(),
        top_pairs: None,
        mode: mode as i32,
    };
    let e = c
        .confusion(req(pb::EvalMode::Exact), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("MiB") && e.message().contains("mode = approximate"),
        "{}",
        e.message()
    );
    wait_ready(&mut c).await?;
    c.confusion(req(pb::EvalMode::Approximate), None).await?;
    Ok(())
}

async fn wait_ready(c: &mut Client) -> anyhow::Result<()> {
    emberdb_tests::wait_ready(c, "big", "v1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_key_guards_the_scrape() -> anyhow::Result<()> {
    let s = TestServer::start_with(|c| {
        c.keys = Arc::new(
            Keyring::from_config(&AuthConfig {
                keys: vec![KeyConfig {
                    name: "admin".into(),
                    sha256: hash_hex(ADMIN),
                    role: Role::Admin,
                    collections: None,
                }],
                metrics_key_sha256: Some(hash_hex("scrape-key")),
            })
            .expect("valid keys"),
        )
    })
    .await?;
    let get = |auth: Option<&str>| {
        let addr = s.metrics_addr;
        let auth = auth
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut c = tokio::net::TcpStream::connect(addr).await?;
            c.write_all(
                format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
            let mut out = String::new();
            c.read_to_string(&mut out).await?;
            anyhow::Ok(out)
        }
    };
    let denied = get(None).await?;
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
    assert!(!denied.contains("emberdb_grpc_requests_total"));
    assert!(get(Some("wrong")).await?.starts_with("HTTP/1.1 401"));
    let ok = get(Some("scrape-key")).await?;
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.contains("emberdb_"),
        "{ok}"
    );
    Ok(())
}
