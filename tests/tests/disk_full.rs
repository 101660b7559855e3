//! A data dir on a small file system (a tmpfs of a few MiB, mounted by the test as root): upserts
//! that run out of space fail with RESOURCE_EXHAUSTED naming the file that could not grow, no
//! acknowledged point is lost, searches keep answering, and once space is freed a restart writes
//! again. (Writing again without a restart is not done yet: RocksDB keeps its out-of-space WAL
//! error until the database is reopened, and the engine does not reopen it by itself.)

use std::path::Path;
use std::process::Command;

use emberdb_storage::{Engine, EngineConfig, Error, Metric, PointInput, SearchParams, VersionSpec};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path, mib: u32) -> anyhow::Result<Mount> {
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
        .arg(at)
        .status()?;
    anyhow::ensure!(st.success(), "mount -t tmpfs failed (the test needs root)");
    Ok(Mount(at.to_path_buf()))
}

fn batch(from: u64, n: u64, dim: usize) -> Vec<PointInput> {
    (from..from + n)
        .map(|id| PointInput {
            id,
            vector: (0..dim)
                .map(|d| ((id * 7 + d as u64) % 97) as f32)
                .collect(),
            ..Default::default()
        })
        .collect()
}

#[test]
fn a_full_disk_refuses_writes_cleanly_and_a_restart_recovers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let _m = mount_tmpfs(dir.path(), 24)?;
    // Space to give back later.
    let filler = dir.path().join("filler");
    std::fs::write(&filler, vec![0u8; 6 << 20])?;
    let e = Engine::open(EngineConfig::new(dir.path().join("data")))?;
    let dim = 256;
    e.create_version(
        "c",
        "v",
        VersionSpec {
            dim: dim as u32,
            metric: Some(Metric::L2),
            m: 8,
            ef_construction: 32,
        },
    )?;
    let mut acked = 0u64;
    let err = loop {
        match e.upsert("c", "v", &batch(acked, 200, dim)) {
            Ok(n) => acked += n,
            Err(err) => break err,
        }
        anyhow::ensure!(acked < 1_000_000, "the disk never filled");
    };
    println!("after {acked} points: {err}");
    assert!(matches!(err, Error::ResourceExhausted(_)), "{err:?}");
    assert!(err.to_string().contains("disk"), "{err}");
    // Nothing acknowledged is lost, and searches answer.
    let ids: Vec<u64> = (0..acked).step_by(97).collect();
    assert_eq!(e.get("c", "v", &ids, false)?.len(), ids.len());
    let q = batch(3, 1, dim).remove(0).vector;
    let hits = e.search(
        "c",
        "v",
        &q,
        SearchParams {
            k: 5,
            ef: 0,
            exact: true,
            filter: None,
        },
    )?;
    assert_eq!(hits[0].id, 3);
    // A snapshot on the full disk fails and leaves nothing behind that a listing or a restore
    // would trust.
    let snap = e.create_backup("on-full-disk");
    println!("snapshot on the full disk: {:?}", snap.as_ref().err());
    assert!(snap.is_err(), "a snapshot succeeded on a full disk");
    assert!(e.list_backups()?.is_empty());
    assert!(!dir.path().join("data/snapshots/on-full-disk").exists());
    // Space freed, engine reopened: every acknowledged point is there and writes succeed.
    std::fs::remove_file(&filler)?;
    drop(e);
    let e = Engine::open(EngineConfig::new(dir.path().join("data")))?;
    assert_eq!(e.describe_version("c", "v")?.point_count, acked);
    let n = e.upsert("c", "v", &batch(acked, 50, dim))?;
    assert_eq!(n, 50);
    assert_eq!(e.get("c", "v", &[acked + 49], false)?.len(), 1);
    drop(e);
    Ok(())
}
