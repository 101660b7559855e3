//! Searches that must scan never run on the async workers: while eight of them run against a
//! version without a graph, the server still answers a health check promptly.

use std::time::{Duration, Instant};

use emberdb_client::{Metric, SearchOptions};
use emberdb_tests::{TestServer, clustered, points, upsert_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanning_searches_leave_the_async_workers_free() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    // A dot-product version never has a graph: every ANN search is a full scan, which is
    // exactly the case of an L2 version before its graph exists (start-up, repair, bulk load).
    let (dim, n) = (256, 40_000);
    c.create_version("scan", "dot", dim, Metric::Dot).await?;
    let (vs, labels) = clustered(3, n, dim as usize, 10);
    upsert_all(&mut c, "scan", "dot", points(&vs, &labels, 0), 1000).await?;

    let started = Instant::now();
    c.search("scan", "dot", vs[0].clone(), 10, SearchOptions::default())
        .await?;
    let one_search = started.elapsed();

    // Eight clients search back to back for two seconds.
    let until = Instant::now() + Duration::from_secs(2);
    let mut searchers = Vec::new();
    for i in 0..8 {
        let mut client = server.client().await?;
        let q = vs[i * 97].clone();
        searchers.push(tokio::spawn(async move {
            let mut done = 0u32;
            while Instant::now() < until {
                client
                    .search("scan", "dot", q.clone(), 10, SearchOptions::default())
                    .await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut latencies = Vec::new();
    tokio::time::sleep(Duration::from_millis(100)).await;
    while Instant::now() + Duration::from_millis(100) < until {
        let t = Instant::now();
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        latencies.push(t.elapsed());
        assert_eq!(r.into_inner().status, 1, "SERVING");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut searches = 0;
    for s in searchers {
        searches += s.await??;
    }
    latencies.sort();
    let worst = *latencies.last().expect("health checks ran");
    let median = latencies[latencies.len() / 2];
    println!(
        "one search {one_search:?}; {searches} searches by 8 clients in 2 s; {} health checks, median {median:?}, worst {worst:?}",
        latencies.len()
    );
    assert!(latencies.len() >= 10, "{} health checks", latencies.len());
    // Every one of those searches (and the first) ran on the blocking pool.
    let offloaded = offloaded(&server).await?;
    assert!(
        offloaded > u64::from(searches),
        "{offloaded} searches offloaded of {}",
        searches + 1
    );
    assert!(
        worst < Duration::from_millis(100),
        "a health check waited {worst:?} behind scanning searches"
    );
    Ok(())
}

async fn offloaded(server: &TestServer) -> anyhow::Result<u64> {
    counter(server, "emberdb_search_offloaded_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_over_a_covered_graph_run_inline() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    let dim = 16;
    c.create_version("tail", "v1", dim, Metric::L2).await?;
    let (vs, labels) = clustered(5, 3_000, dim as usize, 5);
    upsert_all(&mut c, "tail", "v1", points(&vs, &labels, 0), 1000).await?;
    emberdb_tests::wait_ready(&mut c, "tail", "v1").await?;
    let before = offloaded(&server).await?;
    for q in vs.iter().take(20) {
        let hits = c
            .search("tail", "v1", q.clone(), 5, SearchOptions::default())
            .await?;
        assert_eq!(hits.len(), 5);
    }
    assert_eq!(
        offloaded(&server).await?,
        before,
        "searches over a fully indexed graph run inline"
    );
    // Exact and filtered searches go to the pool by request; they do not count here.
    let exact = SearchOptions {
        exact: true,
        ..Default::default()
    };
    c.search("tail", "v1", vs[0].clone(), 5, exact).await?;
    assert_eq!(offloaded(&server).await?, before);
    Ok(())
}

async fn counter(server: &TestServer, name: &str) -> anyhow::Result<u64> {
    let text = server.scrape().await?;
    let line = text
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .ok_or_else(|| anyhow::anyhow!("no {name} in /metrics"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse::<f64>()? as u64)
}

/// Polls `emberdb_evaluations_cancelled_total` until it reads `n`; the time since `since`.
async fn cancelled_reaches(
    server: &TestServer,
    n: u64,
    since: Instant,
    limit: Duration,
) -> anyhow::Result<Duration> {
    loop {
        if counter(server, "emberdb_evaluations_cancelled_total").await? == n {
            return Ok(since.elapsed());
        }
        anyhow::ensure!(
            since.elapsed() < limit,
            "evaluation {n} was not stopped within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that goes away (Ctrl-C in `ember`, a dropped connection) stops its evaluation on
/// the server: the work ends at its next block, long before it would have finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_evaluation_stops_on_the_server() -> anyhow::Result<()> {
    use emberdb_client::pb;
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    let dim = 128;
    c.create_version("big", "v1", dim, Metric::L2).await?;
    let (vs, labels) = clustered(9, 16_000, dim as usize, 10);
    upsert_all(&mut c, "big", "v1", points(&vs, &labels, 0), 2000).await?;
    let req = || pb::ConfusionRequest {
        collection: "big".into(),
        version: "v1".into(),
        top_pairs: None,
        mode: pb::EvalMode::Exact as i32,
    };
    // How long the whole exact leave-one-out pass takes here.
    let t = Instant::now();
    c.confusion(req(), None).await?;
    let full = t.elapsed();
    // A write invalidates the cached pass, so the next one starts from scratch; the client
    // abandons it after 200 ms.
    upsert_all(&mut c, "big", "v1", points(&vs[..1], &labels[..1], 0), 1).await?;
    assert_eq!(
        counter(&server, "emberdb_evaluations_cancelled_total").await?,
        0
    );
    let mut c2 = c.clone();
    let call = tokio::spawn(async move { c2.confusion(req(), None).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    call.abort();
    let abandoned = Instant::now();
    let stopped = cancelled_reaches(&server, 1, abandoned, full * 3).await?;
    println!(
        "full exact confusion {full:?}; abandoned one stopped {stopped:?} after the client left"
    );
    assert!(
        stopped < full / 2,
        "stopped after {stopped:?}, a full pass takes {full:?}"
    );

    // The same through the CLI: Ctrl-C (SIGINT) during `ember eval confusion` prints one line,
    // exits 130, and the server stops the evaluation.
    upsert_all(&mut c, "big", "v1", points(&vs[1..2], &labels[1..2], 1), 1).await?;
    let child = std::process::Command::new(emberdb_tests::ember_binary()?)
        .args(["--addr", &format!("http://{}", server.addr)])
        .args(["eval", "confusion", "big", "v1"])
        .env("RUST_BACKTRACE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()?;
    assert!(killed.success());
    let interrupted = Instant::now();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "stderr: {stderr}");
    assert_eq!(stderr.trim(), "ember: cancelled");
    assert!(out.stdout.is_empty(), "no partial report on stdout");
    cancelled_reaches(&server, 2, interrupted, full * 3).await?;
    println!(
        "ember stopped by SIGINT; server stopped the work {:?} after",
        interrupted.elapsed()
    );

    // The server answers the same evaluation in full afterwards.
    let r = c.confusion(req(), None).await?;
    assert_eq!(r.classes.len(), 10);
    Ok(())
}
