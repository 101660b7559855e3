//! Engine tests against a real RocksDB in a temp dir.

use std::time::Duration;

use crate::{Engine, EngineConfig, Error, Metric, PointInput, SearchParams, VersionSpec};

type R = Result<(), Box<dyn std::error::Error>>;

fn spec(dim: u32) -> VersionSpec {
    VersionSpec {
        dim,
        metric: Some(Metric::L2),
        m: 8,
        ef_construction: 50,
    }
}

fn pts(range: std::ops::Range<u64>, dim: usize) -> Vec<PointInput> {
    range
        .map(|i| PointInput {
            id: i,
            vector: (0..dim)
                .map(|d| ((i * 31 + d as u64 * 7) % 101) as f32 / 10.0)
                .collect(),
            label: format!("l{}", i % 3),
            ..Default::default()
        })
        .collect()
}

fn params(k: usize) -> SearchParams<'static> {
    SearchParams {
        k,
        ef: 64,
        exact: false,
        filter: None,
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dst)?;
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), dst)?;
        }
    }
    Ok(())
}

#[test]
fn second_process_on_same_dir_is_refused() -> R {
    let dir = tempfile::tempdir()?;
    let _a = Engine::open(EngineConfig::new(dir.path()))?;
    match Engine::open(EngineConfig::new(dir.path())) {
        Err(Error::FailedPrecondition(m)) => assert!(m.contains("in use"), "{m}"),
        other => panic!("expected FailedPrecondition, got {:?}", other.err()),
    }
    Ok(())
}

#[test]
fn index_covering_lost_writes_refuses_to_start() -> R {
    let a = tempfile::tempdir()?;
    let b = tempfile::tempdir()?;
    {
        let e = Engine::open(EngineConfig::new(a.path()))?;
        e.create_version("c", "v", spec(4))?;
        e.upsert("c", "v", &pts(0..50, 4))?;
        e.close()?;
    }
    // B = the database as it was after 50 ops.
    copy_dir(a.path(), b.path())?;
    {
        let e = Engine::open(EngineConfig::new(a.path()))?;
        e.upsert("c", "v", &pts(50..100, 4))?;
        assert!(e.wait_indexed("c", "v", Duration::from_secs(30))?);
        assert!(e.persist_index("c", "v")?);
        e.close()?;
    }
    // Put A's newer index generation over B's older database: ops 51..100 are "lost".
    // B may or may not have committed a generation of its own (timing of the first close).
    let _ = std::fs::remove_dir_all(b.path().join("index"));
    copy_dir(&a.path().join("index"), &b.path().join("index"))?;
    match Engine::open(EngineConfig::new(b.path())) {
        Err(Error::DataCorruption(m)) => {
            assert!(m.contains("acknowledged writes are missing"), "{m}")
        }
        other => panic!("expected DataCorruption, got {:?}", other.err()),
    }
    Ok(())
}

#[test]
fn mostly_dead_graph_is_rebuilt_and_searches_stay_correct() -> R {
    let dir = tempfile::tempdir()?;
    let e = Engine::open(EngineConfig::new(dir.path()))?;
    e.create_version("c", "v", spec(8))?;
    e.upsert("c", "v", &pts(0..3000, 8))?;
    assert!(e.wait_indexed("c", "v", Duration::from_secs(60))?);
    let dead: Vec<u64> = (0..3000).filter(|i| i % 2 == 0).collect();
    assert_eq!(e.delete("c", "v", &dead)?, 1500);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while e
        .stats()
        .rebuilds_dead
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(std::time::Instant::now() < deadline, "no rebuild happened");
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in pts(0..3000, 8).iter().step_by(37) {
        let hits = e.search("c", "v", &p.vector, params(5))?;
        assert!(hits.iter().all(|h| h.id % 2 == 1), "{hits:?}");
        assert_eq!(hits.len(), 5);
    }
    Ok(())
}

#[test]
fn empty_and_dot_versions_survive_restart() -> R {
    let dir = tempfile::tempdir()?;
    {
        let e = Engine::open(EngineConfig::new(dir.path()))?;
        e.create_version("c", "empty", spec(4))?;
        e.create_version(
            "c",
            "dot",
            VersionSpec {
                metric: Some(Metric::Dot),
                ..spec(4)
            },
        )?;
        e.upsert("c", "dot", &pts(0..10, 4))?;
        e.close()?;
    }
    let e = Engine::open(EngineConfig::new(dir.path()))?;
    assert_eq!(e.describe_version("c", "empty")?.point_count, 0);
    assert!(e.search("c", "empty", &[1.0; 4], params(3))?.is_empty());
    assert_eq!(e.search("c", "dot", &[1.0; 4], params(3))?.len(), 3);
    Ok(())
}

#[test]
fn delete_counts_each_existing_id_once() -> R {
    let dir = tempfile::tempdir()?;
    let e = Engine::open(EngineConfig::new(dir.path()))?;
    e.create_version("c", "v", spec(4))?;
    e.upsert("c", "v", &pts(0..100, 4))?;
    assert_eq!(e.delete("c", "v", &[1, 2, 2, 999_999, 1, 3])?, 3);
    assert_eq!(e.delete("c", "v", &[1])?, 0);
    assert_eq!(e.describe_version("c", "v")?.point_count, 97);
    Ok(())
}
