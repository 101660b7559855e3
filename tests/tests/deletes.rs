//! A deleted id never comes back: not from ANN, exact search or Get, not after
//! a restart, not after a graph rebuild.

use std::collections::HashSet;

use emberdb_client::{Metric, SearchOptions};
use emberdb_tests::{TestServer, clustered, points, upsert_all, wait_ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_ids_never_come_back() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    c.create_version("col", "v", 16, Metric::L2).await?;
    let (vs, labels) = clustered(5, 5000, 16, 10);
    upsert_all(&mut c, "col", "v", points(&vs, &labels, 0), 1000).await?;
    wait_ready(&mut c, "col", "v").await?;
    // Delete 30% (enough to trigger a rebuild), plus a missing id and a repeat.
    let deleted: Vec<u64> = (0..5000).filter(|i| i % 10 < 3).collect();
    let mut req = deleted.clone();
    req.extend([999_999, 2]);
    assert_eq!(
        c.delete("col", "v", req).await?,
        deleted.len() as u64,
        "missing id ignored, repeat counted once"
    );
    assert_eq!(
        c.delete("col", "v", vec![2]).await?,
        0,
        "re-delete is a no-op"
    );
    let dead: HashSet<u64> = deleted.iter().copied().collect();

    let check = |hits: &[emberdb_client::Neighbor]| hits.iter().all(|h| !dead.contains(&h.id));
    for round in 0..2 {
        for (i, q) in vs.iter().enumerate().step_by(97) {
            for exact in [false, true] {
                let hits = c
                    .search(
                        "col",
                        "v",
                        q.clone(),
                        20,
                        SearchOptions {
                            exact,
                            ..Default::default()
                        },
                    )
                    .await?;
                assert_eq!(hits.len(), 20);
                assert!(
                    check(&hits),
                    "round {round} query {i} exact={exact}: {hits:?}"
                );
                if !dead.contains(&(i as u64)) {
                    assert_eq!(
                        hits[0].id, i as u64,
                        "live point is its own nearest neighbour"
                    );
                }
            }
        }
        assert!(c.get("col", "v", deleted.clone(), false).await?.is_empty());
        assert_eq!(c.describe("col", "v").await?.point_count, 3500);
        if round == 0 {
            wait_ready(&mut c, "col", "v").await?;
        }
    }
    let tmp = server.stop().await?.expect("tempdir");
    let server =
        TestServer::start_in(tmp.path(), emberdb_server::DEFAULT_MAX_MESSAGE_BYTES).await?;
    let mut c = server.client().await?;
    assert_eq!(c.describe("col", "v").await?.point_count, 3500);
    for q in vs.iter().step_by(61) {
        let hits = c
            .search("col", "v", q.clone(), 20, SearchOptions::default())
            .await?;
        assert!(check(&hits), "after restart: {hits:?}");
    }
    assert!(c.get("col", "v", deleted, false).await?.is_empty());
    Ok(())
}
