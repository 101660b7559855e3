//! The real `emberdb` binary with access control and TLS: refusal to serve a non-loopback
//! address without keys, TLS and mutual TLS with certificates made at run time, and the audit
//! log (key names, never key material).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, free_port};
use emberdb_client::{Client, ConnectOptions, Metric, Point};
use emberdb_server::auth::hash_hex;

const ADMIN_KEY: &str = "audit-admin-key-5f1c2e";
const WRITER_KEY: &str = "audit-writer-key-9a8b7c";

fn emberdb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_emberdb"))
}

#[test]
fn refuses_non_loopback_without_keys_unless_insecure() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = emberdb()
        .args(["--data-dir", dir.path().to_str().unwrap_or_default()])
        .args(["--grpc-addr", "0.0.0.0:0", "--metrics-addr", "off"])
        .output()?;
    assert!(!out.status.success(), "must refuse to start");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("refusing to serve gRPC") && text.contains("--insecure-no-auth"),
        "{text}"
    );
    // The override starts it (it logs that access control is off, then serves).
    let mut child = emberdb()
        .args(["--data-dir", dir.path().to_str().unwrap_or_default()])
        .args([
            "--grpc-addr",
            "0.0.0.0:0",
            "--metrics-addr",
            "off",
            "--insecure-no-auth",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let server = Server(child);
    let mut serving = false;
    for line in BufReader::new(stdout).lines() {
        if line?.contains("serving gRPC") {
            serving = true;
            break;
        }
    }
    drop(server);
    assert!(serving, "--insecure-no-auth must start the server");
    Ok(())
}

struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> anyhow::Result<Pki> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let server_key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?
        .signed_by(&server_key, &ca, &ca_key)?;
    let client_key = KeyPair::generate()?;
    let client = CertificateParams::new(vec!["ember-client".to_string()])?.signed_by(
        &client_key,
        &ca,
        &ca_key,
    )?;
    Ok(Pki {
        ca: ca.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    })
}

/// Starts the binary with TLS (and mTLS when `mutual`); returns it once it logs that it serves.
fn spawn_tls(dir: &std::path::Path, port: u16, p: &Pki, mutual: bool) -> anyhow::Result<Server> {
    let write = |name: &str, body: &str| -> anyhow::Result<String> {
        let path = dir.join(name);
        std::fs::write(&path, body)?;
        Ok(path.to_string_lossy().into_owned())
    };
    let mut cmd = emberdb();
    cmd.args(["--data-dir", &dir.join("data").to_string_lossy()])
        .args([
            "--grpc-addr",
            &format!("127.0.0.1:{port}"),
            "--metrics-addr",
            "off",
        ])
        .args(["--tls-cert", &write("server.pem", &p.server_cert)?])
        .args(["--tls-key", &write("server.key", &p.server_key)?]);
    if mutual {
        cmd.args(["--tls-client-ca", &write("ca.pem", &p.ca)?]);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let server = Server(child);
    for line in BufReader::new(stdout).lines() {
        if line?.contains("serving gRPC") {
            return Ok(server);
        }
    }
    anyhow::bail!("TLS server exited before serving")
}

async fn try_list(addr: String, opts: ConnectOptions) -> Result<usize, String> {
    let mut c = tokio::time::timeout(Duration::from_secs(10), Client::connect_with(addr, opts))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e:?}"))?;
    tokio::time::timeout(Duration::from_secs(10), c.list_collections())
        .await
        .map_err(|_| "call timed out".to_string())?
        .map(|v| v.len())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls() -> anyhow::Result<()> {
    let p = pki()?;
    let trusted = ConnectOptions {
        tls_ca_pem: Some(p.ca.clone().into_bytes()),
        ..Default::default()
    };

    let dir = tempfile::tempdir()?;
    let port = free_port();
    let _tls = spawn_tls(dir.path(), port, &p, false)?;
    // A client that trusts the CA is served; a plaintext client is refused.
    assert_eq!(
        try_list(format!("https://localhost:{port}"), trusted.clone()).await,
        Ok(0)
    );
    let plain = try_list(
        format!("http://127.0.0.1:{port}"),
        ConnectOptions::default(),
    )
    .await;
    assert!(plain.is_err(), "plaintext against TLS must fail: {plain:?}");

    let dir = tempfile::tempdir()?;
    let port = free_port();
    let _mtls = spawn_tls(dir.path(), port, &p, true)?;
    let no_cert = try_list(format!("https://localhost:{port}"), trusted.clone()).await;
    assert!(
        no_cert.is_err(),
        "a client without a certificate must be refused under mTLS"
    );
    let with_cert = ConnectOptions {
        tls_identity: Some((
            p.client_cert.clone().into_bytes(),
            p.client_key.clone().into_bytes(),
        )),
        ..trusted
    };
    assert_eq!(
        try_list(format!("https://localhost:{port}"), with_cert).await,
        Ok(0)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lines_name_keys_never_key_material() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("emberdb.toml");
    std::fs::write(
        &config,
        format!(
            "[[auth.keys]]\nname = \"ops-admin\"\nsha256 = \"{}\"\nrole = \"admin\"\n\n\
             [[auth.keys]]\nname = \"ci-writer\"\nsha256 = \"{}\"\nrole = \"writer\"\n",
            hash_hex(ADMIN_KEY),
            hash_hex(WRITER_KEY)
        ),
    )?;
    let port = free_port();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path)?;
    let child = emberdb()
        .args(["--data-dir", &dir.path().join("data").to_string_lossy()])
        .args([
            "--grpc-addr",
            &format!("127.0.0.1:{port}"),
            "--metrics-addr",
            "off",
        ])
        .args([
            "--log-format",
            "json",
            "--config",
            &config.to_string_lossy(),
        ])
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()?;
    let server = Server(child);
    let with = |key: &str| ConnectOptions {
        api_key: Some(key.to_string()),
        ..Default::default()
    };
    let addr = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut admin = loop {
        if let Ok(mut c) = Client::connect_with(addr.clone(), with(ADMIN_KEY)).await
            && c.list_collections().await.is_ok()
        {
            break c;
        }
        anyhow::ensure!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    admin.create_version("audited", "v1", 2, Metric::L2).await?;
    let mut writer = Client::connect_with(addr.clone(), with(WRITER_KEY)).await?;
    writer
        .upsert(
            "audited",
            "v1",
            vec![Point {
                id: 7,
                vector: vec![1.0, 2.0],
                ..Default::default()
            }],
        )
        .await?;
    let denied = writer.drop_version("audited", "v1").await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let mut nobody = Client::connect_with(addr.clone(), ConnectOptions::default()).await?;
    assert_eq!(
        nobody
            .delete("audited", "v1", vec![7])
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Unauthenticated
    );
    // A read is not audited.
    writer.describe("audited", "v1").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(server);

    let text = std::fs::read_to_string(&log_path)?;
    let audit: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "audit")
        .collect();
    let find = |method: &str, key: &str, code: &str| {
        audit.iter().any(|v| {
            let f = &v["fields"];
            f["method"] == method && f["key"] == key && f["code"] == code
        })
    };
    assert!(find("CreateVersion", "ops-admin", "Ok"), "{audit:#?}");
    assert!(find("Upsert", "ci-writer", "Ok"), "{audit:#?}");
    assert!(
        find("DropVersion", "ci-writer", "PermissionDenied"),
        "{audit:#?}"
    );
    assert!(find("Delete", "<no key>", "Unauthenticated"), "{audit:#?}");
    assert!(
        !audit
            .iter()
            .any(|v| v["fields"]["method"] == "DescribeVersion"),
        "reads are not audited"
    );
    let upsert = audit
        .iter()
        .find(|v| v["fields"]["method"] == "Upsert")
        .expect("upsert line");
    assert_eq!(upsert["fields"]["collection"], "audited");
    assert_eq!(upsert["fields"]["version"], "v1");
    assert!(
        upsert["fields"]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:"))
    );
    for secret in [ADMIN_KEY, WRITER_KEY] {
        assert!(!text.contains(secret), "the log must not contain a key");
        assert!(
            !text.contains(&hash_hex(secret)),
            "the log must not contain a key's hash"
        );
    }
    Ok(())
}
