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
    let text = server.scrape().await?;
    let line = text
        .lines()
        .find(|l| l.starts_with("emberdb_search_offloaded_total "))
        .ok_or_else(|| anyhow::anyhow!("no emberdb_search_offloaded_total in /metrics"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse::<f64>()? as u64)
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
