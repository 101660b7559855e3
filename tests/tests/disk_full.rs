//! A data dir on a small file system (a tmpfs of a few MiB, mounted by the test as root): upserts
//! that would eat into the free-space reserve fail with RESOURCE_EXHAUSTED naming the disk, no
//! acknowledged point is lost, searches keep answering, a snapshot fails cleanly, and once space
//! is freed writes succeed again without a restart (RocksDB never saw the disk full); a restart
//! finds every acknowledged point.

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
fn a_full_disk_refuses_writes_cleanly_and_writes_resume_once_space_is_freed() -> anyhow::Result<()>
{
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
    assert!(err.to_string().contains("disk full"), "{err}");
    assert!(
        err.to_string()
            .contains(&dir.path().join("data").display().to_string()),
        "{err}"
    );
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
    // The indexer tries to commit a generation while the disk is full (it persists after 2 s
    // idle): refused, it leaves nothing a restart would trust (checked below).
    std::thread::sleep(std::time::Duration::from_secs(3));
    // Space freed: writes succeed again at once, with no restart.
    std::fs::remove_file(&filler)?;
    acked += e.upsert("c", "v", &batch(acked, 100, dim))?;
    assert_eq!(e.describe_version("c", "v")?.point_count, acked);
    // And after a restart every acknowledged point is there and writes go on.
    drop(e);
    let e = Engine::open(EngineConfig::new(dir.path().join("data")))?;
    assert_eq!(e.describe_version("c", "v")?.point_count, acked);
    let n = e.upsert("c", "v", &batch(acked, 50, dim))?;
    assert_eq!(n, 50);
    assert_eq!(e.get("c", "v", &[acked + 49], false)?.len(), 1);
    // The index catches up and agrees with what is stored.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let d = e.describe_version("c", "v")?;
        if d.indexed_count == d.point_count {
            break;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "never indexed: {d:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // (Reachability is the graph's own business, not the disk's: these points repeat every 97
    // ids, so the graph has many exact twins.)
    let r = e.check_consistency("c", "v", false)?;
    assert!(
        r.stored_not_indexed.is_empty()
            && r.indexed_not_stored.is_empty()
            && r.vector_mismatch.is_empty(),
        "{:?}",
        r.findings
    );
    assert!(
        r.checksum != emberdb_storage::consistency::ChecksumState::Mismatch,
        "{:?}",
        r.findings
    );
    drop(e);
    Ok(())
}
