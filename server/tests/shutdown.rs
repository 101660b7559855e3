//! Shutdown: SIGTERM with a client that keeps its connection open and never reads
//! again. The server must still drain, commit and exit (bounded by
//! `--drain-timeout-s`), and everything acknowledged is there after a restart.

mod common;

use common::{connect, free_port, spawn};
use std::process::Command;
use std::time::{Duration, Instant};

use emberdb_client::{Metric, Point};

fn point(id: u64) -> Point {
    Point {
        id,
        vector: vec![id as f32, 1.0, -2.0, 0.5],
        label: format!("l{}", id % 3),
        ..Default::default()
    }
}

#[test]
fn sigterm_with_an_idle_client_connection_still_commits_and_exits() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let mut server = spawn(dir.path(), port, &["--drain-timeout-s", "1"]);

    // A single-threaded client runtime that nobody drives after the writes: its
    // connection stays open and never answers the server's GOAWAY.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let idle_client = rt.block_on(async {
        let mut c = connect(port).await?;
        c.create_version("c", "v1", 4, Metric::L2).await?;
        c.upsert("c", "v1", (0..200).map(point).collect()).await?;
        anyhow::Ok(c)
    })?;

    let asked = Instant::now();
    let term = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()?;
    assert!(term.success());
    let status = loop {
        if let Some(s) = server.0.try_wait()? {
            break s;
        }
        anyhow::ensure!(
            asked.elapsed() < Duration::from_secs(30),
            "server still running 30 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    drop(idle_client);

    // Nothing acknowledged was lost; the index generation was committed.
    let port = free_port();
    let _server = spawn(dir.path(), port, &["--drain-timeout-s", "1"]);
    rt.block_on(async {
        let mut c = connect(port).await?;
        let v = c.describe("c", "v1").await?;
        assert_eq!(v.point_count, 200);
        let got = c.get("c", "v1", (0..200).collect(), true).await?;
        assert_eq!(got, (0..200).map(point).collect::<Vec<_>>());
        anyhow::Ok(())
    })?;
    Ok(())
}
