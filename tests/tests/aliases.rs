//! Aliases swap atomically: searches through an alias never fail while it moves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use emberdb_client::{Metric, SearchOptions};
use emberdb_tests::{TestServer, clustered, points, upsert_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_swap_under_concurrent_searches_never_errors() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    for v in ["v1", "v2"] {
        c.create_version("col", v, 8, Metric::L2).await?;
    }
    let (vs, labels) = clustered(3, 500, 8, 4);
    // v1 holds ids 0..500, v2 ids 1000..1500, so every answer tells which version served it.
    upsert_all(&mut c, "col", "v1", points(&vs, &labels, 0), 500).await?;
    upsert_all(&mut c, "col", "v2", points(&vs, &labels, 1000), 500).await?;
    assert_eq!(c.set_alias("col", "prod", "v1").await?, "");

    let stop = Arc::new(AtomicBool::new(false));
    let (seen_v1, seen_v2) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for q in vs.iter().take(4) {
        let mut c = server.client().await?;
        let (stop, s1, s2, q) = (stop.clone(), seen_v1.clone(), seen_v2.clone(), q.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 100_000 {
                let hits = c
                    .search("col", "prod", q.clone(), 5, SearchOptions::default())
                    .await?;
                anyhow::ensure!(hits.len() == 5, "short answer {hits:?}");
                let from_v1 = hits.iter().all(|h| h.id < 1000);
                let from_v2 = hits.iter().all(|h| h.id >= 1000);
                anyhow::ensure!(from_v1 || from_v2, "mixed versions in one answer: {hits:?}");
                if from_v1 {
                    s1.fetch_add(1, Ordering::Relaxed)
                } else {
                    s2.fetch_add(1, Ordering::Relaxed)
                };
                n += 1;
            }
            Ok(n)
        }));
    }
    for i in 0..40 {
        let target = if i % 2 == 0 { "v2" } else { "v1" };
        c.set_alias("col", "prod", target).await?;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    println!(
        "searches={total} v1={} v2={}",
        seen_v1.load(Ordering::Relaxed),
        seen_v2.load(Ordering::Relaxed)
    );
    assert!(total > 0);
    assert!(seen_v1.load(Ordering::Relaxed) > 0 && seen_v2.load(Ordering::Relaxed) > 0);

    // Describe through the alias resolves to the current target; list shows it.
    assert_eq!(c.describe("col", "prod").await?.version, "v1");
    let cols = c.list_collections().await?;
    assert_eq!(cols[0].aliases[0].alias, "prod");
    // A version with an alias pointing at it cannot be dropped.
    let err = c.drop_version("col", "v1").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("prod"), "{}", err.message());
    c.delete_alias("col", "prod").await?;
    c.drop_version("col", "v1").await?;
    assert_eq!(
        c.describe("col", "v1").await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_and_catalog_survive_restart() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    c.create_version("a", "v1", 4, Metric::Cosine).await?;
    c.create_version("a", "v2", 4, Metric::L2).await?;
    c.create_version("b", "v1", 2, Metric::Dot).await?;
    c.set_alias("a", "canary", "v2").await?;
    c.drop_collection("b").await?;
    let tmp = server.stop().await?.expect("tempdir");
    let server =
        TestServer::start_in(tmp.path(), emberdb_server::DEFAULT_MAX_MESSAGE_BYTES).await?;
    let mut c = server.client().await?;
    let cols = c.list_collections().await?;
    assert_eq!(cols.len(), 1);
    assert_eq!(cols[0].versions.len(), 2);
    assert_eq!(c.describe("a", "canary").await?.version, "v2");
    assert_eq!(c.describe("a", "v1").await?.metric, Metric::Cosine as i32);
    Ok(())
}
