//! The graph files are a derived cache: damage one, restart, and the server
//! notices, rebuilds from RocksDB and answers correctly.

use std::path::{Path, PathBuf};

use emberdb_client::{Metric, SearchOptions};
use emberdb_tests::{TestServer, clustered, points, upsert_all, wait_ready};

fn find(root: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out
}

/// Damages the files of one committed generation under the index root.
type Damage = fn(&Path) -> std::io::Result<()>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_graph_files_are_rebuilt() -> anyhow::Result<()> {
    let damages: [(&str, Damage); 6] = [
        ("truncate graph to half", |root| {
            let p = &find(root, ".hnsw.graph")[0];
            let len = std::fs::metadata(p)?.len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)?
                .set_len(len / 2)
        }),
        ("truncate data to zero", |root| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&find(root, ".hnsw.data")[0])?
                .set_len(0)
        }),
        ("flip 16 bytes in data", |root| {
            let p = &find(root, ".hnsw.data")[0];
            let mut b = std::fs::read(p)?;
            let mid = b.len() / 2;
            for x in &mut b[mid..mid + 16] {
                *x ^= 0x5a;
            }
            std::fs::write(p, b)
        }),
        ("delete graph file", |root| {
            std::fs::remove_file(&find(root, ".hnsw.graph")[0])
        }),
        ("garbage manifest", |root| {
            std::fs::write(&find(root, "MANIFEST")[0], b"not a manifest")
        }),
        ("flip a byte in slots", |root| {
            let p = &find(root, "slots.bin")[0];
            let mut b = std::fs::read(p)?;
            b[20] ^= 1;
            std::fs::write(p, b)
        }),
    ];
    let (vs, labels) = clustered(17, 3000, 16, 8);
    for (what, damage) in damages {
        println!("damage: {what}");
        let server = TestServer::start().await?;
        let mut c = server.client().await?;
        c.create_version("col", "v", 16, Metric::L2).await?;
        upsert_all(&mut c, "col", "v", points(&vs, &labels, 0), 1000).await?;
        wait_ready(&mut c, "col", "v").await?;
        let tmp = server.stop().await?.expect("tempdir");
        let index_root = tmp.path().join("index");
        assert_eq!(
            find(&index_root, ".hnsw.graph").len(),
            1,
            "{what}: one committed generation"
        );
        damage(&index_root)?;

        let server =
            TestServer::start_in(tmp.path(), emberdb_server::DEFAULT_MAX_MESSAGE_BYTES).await?;
        let mut c = server.client().await?;
        assert_eq!(c.describe("col", "v").await?.point_count, 3000, "{what}");
        // Correct answers immediately (exact tail while the graph rebuilds) and after.
        for round in 0..2 {
            for i in (0..3000).step_by(150) {
                let hits = c
                    .search("col", "v", vs[i].clone(), 3, SearchOptions::default())
                    .await?;
                assert_eq!(hits[0].id, i as u64, "{what} round {round}");
                assert_eq!(hits[0].distance, 0.0);
            }
            wait_ready(&mut c, "col", "v").await?;
        }
        let metrics = server.scrape().await?;
        assert!(
            metrics.contains("emberdb_index_rebuilds_total{reason=\"corrupt\"} 1"),
            "{what}: rebuild not counted:\n{metrics}"
        );
        // The rebuilt graph is committed again at shutdown, and loads cleanly next time.
        let tmp2 = server.stop().await?;
        assert!(tmp2.is_none());
        let server =
            TestServer::start_in(tmp.path(), emberdb_server::DEFAULT_MAX_MESSAGE_BYTES).await?;
        let mut c = server.client().await?;
        let info = c.describe("col", "v").await?;
        assert_eq!(info.indexed_count, 3000, "{what}: reloaded graph");
        let metrics = server.scrape().await?;
        assert!(
            !metrics.contains("reason=\"corrupt\"} 1"),
            "{what}: second restart must load"
        );
        server.stop().await?;
    }
    Ok(())
}
