//! Durability: SIGKILL the server while a client upserts in batches; after a
//! restart every acknowledged point is present with its exact vector and label.

mod common;

use common::{connect, free_port, spawn, spawn_logged};
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

/// SIGKILL again and again while the graph is being rebuilt in the background (no generation was
/// committed, and a third of every round's writes overwrite earlier points, so restarts find dead
/// slots and compactions run): no server log shows a panic, and the final index is consistent,
/// every live point reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_background_rebuilds_leaves_no_panic() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("server.log");
    let data = dir.path().join("data");
    let seed = 20261205u64;
    println!("seed={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dim = 16;
    let mut next_id = 0u64;
    let point = |rng: &mut rand::rngs::StdRng, id: u64| Point {
        id,
        vector: (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect(),
        label: String::new(),
        metadata: Default::default(),
        timestamp_ms: 0,
    };
    for round in 0..6 {
        let port = free_port();
        let server = spawn_logged(&data, port, &[], &log);
        let mut c = connect(port).await?;
        if round == 0 {
            c.create_version("col", "v", dim, Metric::L2).await?;
        }
        // New points and overwrites of earlier ones, while the restart rebuilds the graph.
        let batches: Vec<Vec<Point>> = (0..60)
            .map(|_| {
                (0..500)
                    .map(|i| {
                        if next_id > 1000 && i % 3 == 0 {
                            let id = rng.random_range(1..next_id);
                            point(&mut rng, id)
                        } else {
                            next_id += 1;
                            point(&mut rng, next_id)
                        }
                    })
                    .collect()
            })
            .collect();
        let writer = tokio::spawn(async move {
            for b in batches {
                if c.upsert("col", "v", b).await.is_err() {
                    break;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        let mut server = server;
        server.0.kill()?;
        server.0.wait()?;
        writer.await?;
    }
    let port = free_port();
    let _server = spawn_logged(&data, port, &[], &log);
    let mut c = connect(port).await?;
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(180);
    loop {
        let info = c.describe("col", "v").await?;
        if info.indexed_count == info.point_count {
            break;
        }
        if std::time::Instant::now() > deadline {
            let text = std::fs::read_to_string(&log)?;
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            anyhow::bail!("not indexed in time: {info:?}\n{}", tail.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "fully indexed {:.1} s after the last start",
        started.elapsed().as_secs_f64()
    );
    let report = c.check_consistency("col", "v", false).await?;
    assert!(report.consistent, "{report:?}");
    assert!(report.unreachable.is_empty(), "{report:?}");
    let text = std::fs::read_to_string(&log)?;
    assert!(text.contains("loaded version"), "the log was not captured");
    for line in text.lines() {
        assert!(
            !line.contains("panicked") && !line.contains("indexer step failed"),
            "server log: {line}"
        );
    }
    Ok(())
}
