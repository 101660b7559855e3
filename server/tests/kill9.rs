//! Durability: SIGKILL the server while a client upserts in batches; after a
//! restart every acknowledged point is present with its exact vector and label.

mod common;

use common::{connect, free_port, spawn};
use std::time::Duration;

use emberdb_client::{Metric, Point};
use rand::{Rng, SeedableRng};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_upserts_survive_sigkill() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let seed = 20261122u64;
    println!("seed={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dim = 24;
    let mut acked: std::collections::HashMap<u64, Point> = Default::default();
    let mut next_id = 0u64;

    for round in 0..5 {
        let port = free_port();
        let server = spawn(dir.path(), port, &[]);
        let mut c = connect(port).await?;
        if round == 0 {
            c.create_version("col", "v", dim, Metric::L2).await?;
        }
        // Everything acknowledged so far is present, byte-exact.
        let ids: Vec<u64> = acked.keys().copied().collect();
        for chunk in ids.chunks(5000) {
            let got = c.get("col", "v", chunk.to_vec(), true).await?;
            assert_eq!(
                got.len(),
                chunk.len(),
                "round {round}: acknowledged points missing"
            );
            for p in got {
                let want = &acked[&p.id];
                assert_eq!(&p, want, "round {round}: point {} differs", p.id);
            }
        }
        // Upsert in a background task; kill the server at a random moment.
        let kill_after = Duration::from_millis(rng.random_range(200..1200));
        let batches: Vec<Vec<Point>> = (0..200)
            .map(|_| {
                (0..100)
                    .map(|_| {
                        next_id += 1;
                        Point {
                            id: next_id,
                            vector: (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect(),
                            label: format!("l{}", next_id % 7),
                            metadata: Default::default(),
                            timestamp_ms: next_id as i64,
                        }
                    })
                    .collect()
            })
            .collect();
        let writer = tokio::spawn(async move {
            let mut ok = Vec::new();
            for b in batches {
                match c.upsert("col", "v", b.clone()).await {
                    Ok(_) => ok.extend(b),
                    Err(_) => break,
                }
            }
            ok
        });
        tokio::time::sleep(kill_after).await;
        let mut server = server;
        server.0.kill()?; // SIGKILL
        server.0.wait()?;
        let ok = writer.await?;
        println!(
            "round {round}: {} points acknowledged before SIGKILL",
            ok.len()
        );
        for p in ok {
            acked.insert(p.id, p);
        }
    }
    // Final check on a clean start, including search: every acked point finds itself.
    let port = free_port();
    let _server = spawn(dir.path(), port, &[]);
    let mut c = connect(port).await?;
    let info = c.describe("col", "v").await?;
    assert!(info.point_count >= acked.len() as u64);
    let ids: Vec<u64> = acked.keys().copied().collect();
    for chunk in ids.chunks(5000) {
        let got = c.get("col", "v", chunk.to_vec(), true).await?;
        assert_eq!(got.len(), chunk.len());
    }
    for id in ids.iter().take(50) {
        let p = &acked[id];
        let hits = c
            .search("col", "v", p.vector.clone(), 1, Default::default())
            .await?;
        assert_eq!(hits[0].id, *id);
    }
    assert!(!acked.is_empty());
    Ok(())
}
