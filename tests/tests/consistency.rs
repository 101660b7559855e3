//! CheckConsistency through the real server: a clean index is consistent; a
//! graph generation written wrong (nodes missing, a vector altered, checksums
//! valid) is reported id by id, repaired, consistent again, and stays so after a
//! restart.

use emberdb_client::{Metric, pb};
use emberdb_tests::{TestServer, clustered, points, upsert_all, wait_ready};
use tonic::Code;

/// Waits until the server has committed an index generation of the version.
async fn wait_generation(c: &mut emberdb_client::Client) -> anyhow::Result<pb::ConsistencyReport> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = c.check_consistency("c", "v", false).await?;
        if r.checksum == pb::ChecksumState::ChecksumOk as i32 {
            return Ok(r);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "no generation: {r:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_graph_is_reported_repaired_and_stays_consistent() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    c.create_version("c", "v", 16, Metric::L2).await?;
    let (vs, labels) = clustered(5, 3000, 16, 6);
    upsert_all(&mut c, "c", "v", points(&vs, &labels, 0), 1000).await?;
    // A few deletes leave masked tombstones in the graph: not an inconsistency.
    wait_ready(&mut c, "c", "v").await?;
    c.delete("c", "v", vec![2990, 2991, 2992]).await?;
    let clean = wait_generation(&mut c).await?;
    println!("clean: {clean:?}");
    assert!(clean.consistent, "{clean:?}");
    assert_eq!(clean.stored_points, 2997);
    assert_eq!(clean.indexed_points, 2997);
    assert_eq!(clean.masked_tombstones, 3);
    assert!(clean.unreachable.is_empty() && clean.vector_mismatch.is_empty());

    let tmp = server.stop().await?.expect("owned temp dir");
    let index_root = tmp.path().join("index");
    let version_dir = std::fs::read_dir(&index_root)?
        .next()
        .expect("one version dir")?
        .path();
    let dropped = [7u64, 100, 1234, 2500];
    let altered = [42u64, 999];
    let damage = emberdb_storage::fault::damage_index(&version_dir, &dropped, &altered)?;
    assert_eq!(damage.dropped, dropped.to_vec());
    assert_eq!(damage.altered, altered.to_vec());

    let server =
        TestServer::start_in(tmp.path(), emberdb_server::DEFAULT_MAX_MESSAGE_BYTES).await?;
    let mut c = server.client().await?;
    let r = c.check_consistency("c", "v", false).await?;
    println!("damaged: {r:?}");
    assert!(!r.consistent);
    cli_check_reports_inconsistency_without_a_backtrace(&server.addr.to_string())?;
    assert_eq!(
        r.checksum,
        pb::ChecksumState::ChecksumOk as i32,
        "checksums cannot see this"
    );
    assert_eq!(r.stored_not_indexed, dropped.to_vec());
    assert_eq!(r.vector_mismatch, altered.to_vec());
    assert!(r.indexed_not_stored.is_empty());
    assert_eq!(r.stored_points, 2997);
    assert_eq!(r.indexed_points, 2997 - dropped.len() as u64);
    assert!(!r.findings.is_empty());

    let fixed = c.check_consistency("c", "v", true).await?;
    println!("repaired: {fixed:?}");
    assert!(fixed.repaired && fixed.consistent, "{fixed:?}");
    let before = fixed.before_repair.as_ref().expect("report before repair");
    assert_eq!(before.stored_not_indexed, dropped.to_vec());
    assert_eq!(before.vector_mismatch, altered.to_vec());
    assert_eq!(fixed.indexed_points, 2997);
    assert_eq!(fixed.masked_tombstones, 0, "the rebuild drops tombstones");
    // A dropped point is found by ANN search again.
    let hits = c
        .search("c", "v", vs[1234].clone(), 1, Default::default())
        .await?;
    assert_eq!(hits[0].id, 1234);

    server.stop().await?;
    let server =
        TestServer::start_in(tmp.path(), emberdb_server::DEFAULT_MAX_MESSAGE_BYTES).await?;
    let mut c = server.client().await?;
    let again = c.check_consistency("c", "v", false).await?;
    assert!(again.consistent, "{again:?}");
    assert_eq!(again.checksum, pb::ChecksumState::ChecksumOk as i32);
    assert!(
        again.generation > damage.generation,
        "the repair committed a new generation"
    );
    // A repair of a consistent version changes nothing.
    let noop = c.check_consistency("c", "v", true).await?;
    assert!(noop.consistent && !noop.repaired);

    let e = c.check_consistency("c", "nope", false).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c.check_consistency("c", "../x", false).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("version"), "{}", e.message());
    server.stop().await?;
    drop(tmp);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_points_are_pending_not_inconsistent() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    c.create_version("c", "v", 8, Metric::Cosine).await?;
    c.create_version("c", "d", 8, Metric::Dot).await?;
    let (vs, labels) = clustered(6, 500, 8, 3);
    upsert_all(&mut c, "c", "v", points(&vs, &labels, 0), 500).await?;
    upsert_all(&mut c, "c", "d", points(&vs, &labels, 0), 500).await?;
    let r = c.check_consistency("c", "v", false).await?;
    assert!(r.consistent, "{r:?}");
    assert_eq!(r.stored_points, 500);
    assert_eq!(r.indexed_points + r.pending_points, 500);
    let d = c.check_consistency("c", "d", false).await?;
    assert!(d.consistent, "{d:?}");
    assert_eq!(
        d.checksum,
        pb::ChecksumState::ChecksumNoGeneration as i32,
        "DOT versions have no graph"
    );
    Ok(())
}

/// Issue 11, item 6: `ember check` on an inconsistent index is an expected outcome: the findings
/// on stdout, one line on stderr, exit code 2 (README), and no backtrace even with
/// RUST_BACKTRACE=1.
fn cli_check_reports_inconsistency_without_a_backtrace(addr: &str) -> anyhow::Result<()> {
    let ember = emberdb_tests::ember_binary()?;
    let out = std::process::Command::new(ember)
        .args(["--addr", &format!("http://{addr}"), "check", "c", "v"])
        .env("RUST_BACKTRACE", "1")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("inconsistent") && !stderr.to_lowercase().contains("backtrace"));
    assert!(
        stdout.contains("INCONSISTENT") || stdout.to_lowercase().contains("inconsistent"),
        "{stdout}"
    );
    Ok(())
}
