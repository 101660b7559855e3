//! Monitors through the real server: scheduled runs export SLI gauges on
//! /metrics, survive a restart, disappear when deleted; a real Prometheus
//! scrapes them and answers `emberdb_recall_at_k` through its query API; and
//! `promtool check metrics` accepts our exposition.

use std::time::{Duration, Instant};

use emberdb_client::{Client, Metric, pb};
use emberdb_tests::{TestServer, clustered, upsert_all, wait_ready};
use tonic::Code;

/// Labelled clustered points: the first half at timestamp 0 (the baseline window), the rest at 1.
async fn load(c: &mut Client) -> anyhow::Result<()> {
    c.create_version("c", "v1", 16, Metric::L2).await?;
    let (vs, labels) = clustered(11, 2000, 16, 5);
    let pts: Vec<pb::Point> = vs
        .iter()
        .zip(&labels)
        .enumerate()
        .map(|(i, (v, l))| pb::Point {
            id: i as u64,
            vector: v.clone(),
            label: l.clone(),
            metadata: Default::default(),
            timestamp_ms: i64::from(i >= 1000),
        })
        .collect();
    upsert_all(c, "c", "v1", pts, 1000).await?;
    wait_ready(c, "c", "v1").await?;
    c.set_alias("c", "prod", "v1").await?;
    Ok(())
}

fn spec(interval_s: u32) -> pb::MonitorSpec {
    pb::MonitorSpec {
        collection: "c".into(),
        version: "prod".into(),
        interval_s,
        k: 10,
        sample_size: 100,
        baseline: Some(pb::Window {
            version: "v1".into(),
            from_ms: Some(0),
            to_ms: Some(1),
        }),
        record_bundles: false,
    }
}

async fn wait_run(c: &mut Client) -> anyhow::Result<pb::MonitorStatus> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ms = c.list_monitors("c").await?;
        if let Some(m) = ms.into_iter().find(|m| m.last_run_ms.is_some()) {
            return Ok(m);
        }
        anyhow::ensure!(Instant::now() < deadline, "monitor never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the first exposition line starting with `prefix`.
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_export_gauges_and_survive_restart() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    load(&mut c).await?;
    assert!(!c.set_monitor(spec(1)).await?);
    let m = wait_run(&mut c).await?;
    println!("monitor: {m:?}");
    assert!(m.last_error.is_empty(), "{}", m.last_error);
    assert!(m.recall_at_k >= 0.9 && m.precision_at_1 > 0.9 && m.consistent);
    assert_eq!(m.points, 2000);
    let drift = m.drift_score.expect("drift against the baseline window");
    assert!(drift < 1.0, "same distribution: {drift}");

    c.search("c", "prod", vec![0.0; 16], 3, Default::default())
        .await?;
    let text = server.scrape().await?;
    let labels = r#"{collection="c",version="prod"}"#;
    assert_eq!(
        value(
            &text,
            r#"emberdb_recall_at_k{collection="c",k="10",version="prod"}"#
        ),
        Some(m.recall_at_k)
    );
    assert_eq!(
        value(&text, &format!("emberdb_precision_at_1{labels}")),
        Some(m.precision_at_1)
    );
    assert_eq!(
        value(&text, &format!("emberdb_low_margin_fraction{labels}")),
        Some(m.low_margin_fraction)
    );
    assert_eq!(
        value(&text, &format!("emberdb_drift_score{labels}")),
        Some(drift)
    );
    assert_eq!(
        value(&text, &format!("emberdb_index_consistent{labels}")),
        Some(1.0)
    );
    assert_eq!(
        value(&text, &format!("emberdb_points{labels}")),
        Some(2000.0)
    );
    assert_eq!(
        value(&text, r#"emberdb_points{collection="c",version="v1"}"#),
        Some(2000.0)
    );
    assert!(
        value(
            &text,
            &format!("emberdb_eval_last_run_timestamp_seconds{labels}")
        )
        .is_some_and(|t| t > 1.7e9)
    );
    // Issue 11, item 7: the search went through `prod`; its latency counts for the version that
    // answered, not for the alias.
    assert_eq!(
        value(
            &text,
            r#"emberdb_search_duration_seconds_count{collection="c",version="v1"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("emberdb_search_duration_seconds_count{labels}")
        ),
        None
    );

    // Replace, restart: the monitor is persisted and runs again.
    assert!(c.set_monitor(spec(2)).await?);
    let tmp = server.stop().await?.expect("owned temp dir");
    let server =
        TestServer::start_in(tmp.path(), emberdb_server::DEFAULT_MAX_MESSAGE_BYTES).await?;
    let mut c = server.client().await?;
    let ms = c.list_monitors("").await?;
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0].spec.as_ref().unwrap().interval_s, 2);
    wait_run(&mut c).await?;

    c.delete_monitor("c", "prod").await?;
    let e = c.delete_monitor("c", "prod").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let text = server.scrape().await?;
    assert!(
        !text.contains("emberdb_recall_at_k{"),
        "series of a deleted monitor remain"
    );

    // Bad input is named and stores nothing.
    let mut bad = spec(0);
    let e = c.set_monitor(bad.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("spec.interval_s"), "{}", e.message());
    bad = spec(1);
    bad.version = "nope".into();
    assert_eq!(c.set_monitor(bad).await.unwrap_err().code(), Code::NotFound);
    bad = spec(1);
    bad.baseline.as_mut().unwrap().to_ms = Some(0);
    let e = c.set_monitor(bad).await.unwrap_err();
    assert!(
        e.message().contains("spec.baseline.to_ms"),
        "{}",
        e.message()
    );
    assert!(c.list_monitors("c").await?.is_empty());
    server.stop().await?;
    drop(tmp);
    Ok(())
}

/// A plain HTTP/1.0 GET on loopback; returns the body.
async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_recall_and_promtool_accepts_the_exposition() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    load(&mut c).await?;
    c.set_monitor(spec(1)).await?;
    let m = wait_run(&mut c).await?;

    // promtool lints the exposition format and our metric names.
    let exposition = server.scrape().await?;
    let body = exposition
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    let mut lint = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!("promtool (Debian package prometheus; make test installs it): {e}")
        })?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = lint.stdin.take().expect("stdin");
        stdin.write_all(body.as_bytes()).await?;
    }
    let out = lint.wait_with_output().await?;
    println!(
        "promtool: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check metrics failed");

    // A real Prometheus on loopback scrapes us every second.
    let dir = tempfile::tempdir()?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let web = format!("127.0.0.1:{port}");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: emberdb\n    static_configs:\n      - targets: ['{}']\n",
            server.metrics_addr
        ),
    )?;
    let mut prom = tokio::process::Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("prometheus (Debian package prometheus): {e}"))?;

    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let body = http_get(&web, "/api/v1/query?query=emberdb_recall_at_k")
            .await
            .unwrap_or_default();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
            && let Some(r) = v["data"]["result"].as_array().and_then(|r| r.first())
        {
            break r.clone();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "Prometheus never returned emberdb_recall_at_k: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("prometheus: {got}");
    assert_eq!(got["metric"]["collection"], "c");
    assert_eq!(got["metric"]["version"], "prod");
    assert_eq!(got["metric"]["k"], "10");
    let v: f64 = got["value"][1].as_str().expect("value").parse()?;
    assert!((v - m.recall_at_k).abs() < 1e-9, "{v} vs {}", m.recall_at_k);
    // Prometheus' own view of the target: up.
    let up = http_get(&web, "/api/v1/query?query=up").await?;
    assert!(
        up.contains(r#""job":"emberdb""#) && up.contains(r#","1"]"#),
        "{up}"
    );
    prom.kill().await?;
    Ok(())
}

/// Issue 11, item 1: dropping a version or a collection removes its monitors and every series
/// labelled with it, and frees its places under the series cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_drops_remove_monitors_and_series() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    for (col, ver) in [("keep", "v1"), ("gone", "v1"), ("keep", "old")] {
        c.create_version(col, ver, 4, emberdb_client::Metric::L2)
            .await?;
        c.upsert(
            col,
            ver,
            vec![emberdb_client::Point {
                id: 1,
                vector: vec![1.0; 4],
                ..Default::default()
            }],
        )
        .await?;
        c.search(col, ver, vec![1.0; 4], 1, Default::default())
            .await?;
        c.set_monitor(pb::MonitorSpec {
            collection: col.into(),
            version: ver.into(),
            interval_s: 3600,
            ..Default::default()
        })
        .await?;
    }
    let series = |text: &str, col: &str, ver: &str| {
        let label = format!(r#"collection="{col}",version="{ver}""#);
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains(&label))
            .count()
    };
    let before = s.scrape().await?;
    for (col, ver) in [("keep", "v1"), ("gone", "v1"), ("keep", "old")] {
        assert!(
            series(&before, col, ver) > 0,
            "{col}/{ver} exported before the drop"
        );
    }
    c.drop_version("keep", "old").await?;
    c.drop_collection("gone").await?;
    let after = s.scrape().await?;
    assert_eq!(series(&after, "keep", "old"), 0, "{after}");
    assert_eq!(series(&after, "gone", "v1"), 0, "{after}");
    assert!(series(&after, "keep", "v1") > 0);
    let monitors: Vec<(String, String)> = c
        .list_monitors("")
        .await?
        .into_iter()
        .filter_map(|m| m.spec.map(|s| (s.collection, s.version)))
        .collect();
    assert_eq!(monitors, [("keep".to_string(), "v1".to_string())]);
    // Recreated under the same names, they start without the old monitors.
    c.create_version("gone", "v1", 4, emberdb_client::Metric::L2)
        .await?;
    assert!(c.list_monitors("gone").await?.is_empty());
    Ok(())
}

/// Issue 11, item 1: a monitor whose runs fail stops publishing its SLIs (old values would read
/// as fresh), counts the failures, and keeps the time of its last success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_failing_monitor_exports_no_stale_slis() -> anyhow::Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    let (vs, labels) = clustered(5, 60, 4, 3);
    for ver in ["base", "live"] {
        c.create_version("fm", ver, 4, Metric::L2).await?;
        upsert_all(
            &mut c,
            "fm",
            ver,
            emberdb_tests::points(&vs, &labels, 0),
            60,
        )
        .await?;
    }
    c.set_monitor(pb::MonitorSpec {
        collection: "fm".into(),
        version: "live".into(),
        interval_s: 1,
        k: 5,
        sample_size: 20,
        baseline: Some(pb::Window {
            version: "base".into(),
            from_ms: None,
            to_ms: None,
        }),
        record_bundles: false,
    })
    .await?;
    let status = |c: &mut Client| {
        let mut c = c.clone();
        async move { anyhow::Ok(c.list_monitors("fm").await?.remove(0)) }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(&mut c).await?.last_run_ms.is_none() {
        anyhow::ensure!(Instant::now() < deadline, "monitor never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(&mut c).await?.last_error, "");
    let labels = r#"{collection="fm",version="live"}"#;
    let ok = s.scrape().await?;
    let recall = r#"emberdb_recall_at_k{collection="fm",k="5",version="live"}"#;
    assert!(value(&ok, recall).is_some(), "{ok}");
    let success = value(
        &ok,
        &format!("emberdb_monitor_last_success_timestamp_seconds{labels}"),
    )
    .expect("last success exported");

    // The baseline disappears: every later run fails.
    c.drop_version("fm", "base").await?;
    while status(&mut c).await?.last_error.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "monitor never failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed = s.scrape().await?;
    assert_eq!(
        value(&failed, recall),
        None,
        "no stale recall after a failed run"
    );
    assert_eq!(
        value(&failed, &format!("emberdb_precision_at_1{labels}")),
        None
    );
    assert!(
        value(
            &failed,
            r#"emberdb_monitor_runs_total{collection="fm",outcome="error",version="live"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{failed}"
    );
    assert_eq!(
        value(
            &failed,
            &format!("emberdb_monitor_last_success_timestamp_seconds{labels}")
        ),
        Some(success)
    );
    let last_run = value(
        &failed,
        &format!("emberdb_eval_last_run_timestamp_seconds{labels}"),
    )
    .expect("last run exported");
    assert!(last_run > success, "the failed run is still a run");
    Ok(())
}
