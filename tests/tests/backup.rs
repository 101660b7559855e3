//! Backups of a real engine (RocksDB in a temp dir): point-in-time under concurrent writers,
//! restored answers equal to the source's, and every kind of damage refused with the file named
//! and the target left empty.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use emberdb_storage::backup::{restore_backup, verify_backup};
use emberdb_storage::{Engine, EngineConfig, Error, Metric, PointInput, SearchParams, VersionSpec};

const DIM: usize = 16;

fn spec() -> VersionSpec {
    VersionSpec {
        dim: DIM as u32,
        metric: Some(Metric::L2),
        m: 8,
        ef_construction: 64,
    }
}

/// A deterministic vector per id (a hash spread over [-1, 1)).
fn vector(id: u64) -> Vec<f32> {
    (0..DIM as u64)
        .map(|d| {
            let mut x =
                id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ d.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x ^= x >> 31;
            x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn point(id: u64) -> PointInput {
    PointInput {
        id,
        vector: vector(id),
        label: format!("l{}", id % 5),
        ..Default::default()
    }
}

fn exact(k: usize) -> SearchParams<'static> {
    SearchParams {
        k,
        ef: 0,
        exact: true,
        filter: None,
    }
}

fn is_empty_or_missing(p: &Path) -> bool {
    std::fs::read_dir(p).map_or(true, |mut d| d.next().is_none())
}

/// Four writers upsert batches of 20 new points while a backup is taken. Restored: every batch is
/// whole or absent, every batch acknowledged before the backup began is there, none begun after
/// it ended is, and the point count is the op sequence the manifest records.
#[test]
fn backup_under_concurrent_writers_holds_exactly_whole_acknowledged_batches() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let e = Arc::new(Engine::open(EngineConfig::new(dir.path().join("data")))?);
    e.create_version("c", "v", spec())?;
    // (first id, acknowledged at, started at) of every batch.
    let log: Arc<Mutex<Vec<(u64, Instant, Instant)>>> = Arc::default();
    // Writers go on until told to stop (after the backup), at most 2,000 batches each.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let (e, log, stop) = (e.clone(), log.clone(), stop.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                for b in 0..2000u64 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let first = w * 1_000_000 + b * 20;
                    let batch: Vec<_> = (first..first + 20).map(point).collect();
                    let started = Instant::now();
                    e.upsert("c", "v", &batch)?;
                    log.lock()
                        .expect("log")
                        .push((first, Instant::now(), started));
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(60));
    let began = Instant::now();
    let m = e.create_backup("mid")?;
    let ended = Instant::now();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer thread")?;
    }
    let log = log.lock().expect("log").clone();
    let v = m
        .versions
        .iter()
        .find(|v| v.version == "v")
        .expect("version in manifest");

    let restored = dir.path().join("restored");
    restore_backup(&e.backup_dir("mid")?, &restored)?;
    let r = Engine::open(EngineConfig::new(&restored))?;
    let (mut whole, mut before, mut after) = (0u64, 0, 0);
    for &(first, acked, started) in &log {
        let ids: Vec<u64> = (first..first + 20).collect();
        let got = r.get("c", "v", &ids, true)?;
        assert!(
            got.is_empty() || got.len() == 20,
            "batch {first}: {} of 20 points",
            got.len()
        );
        if got.len() == 20 {
            whole += 1;
            for p in &got {
                assert_eq!(
                    p.vector,
                    Some(vector(p.id)),
                    "point {} restored with another vector",
                    p.id
                );
            }
        }
        if acked < began {
            before += 1;
            assert_eq!(
                got.len(),
                20,
                "batch {first} acknowledged before the backup is missing"
            );
        }
        if started > ended {
            after += 1;
            assert!(
                got.is_empty(),
                "batch {first} begun after the backup is in it"
            );
        }
    }
    assert!(
        before > 0 && after > 0,
        "the backup did not land mid-load ({before} before, {after} after)"
    );
    assert_eq!(r.describe_version("c", "v")?.point_count, whole * 20);
    assert_eq!(v.seq, whole * 20, "the manifest's op sequence");
    println!(
        "{whole} of {} batches in the backup; {before} acknowledged before it, {after} begun after",
        log.len()
    );
    Ok(())
}

/// A quiet version with a committed generation: the restored engine loads that generation (no
/// rebuild) and answers exact and ANN searches exactly as the source does.
#[test]
fn restored_backup_answers_like_its_source() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let e = Engine::open(EngineConfig::new(dir.path().join("data")))?;
    e.create_version("c", "v", spec())?;
    e.upsert("c", "v", &(0..3000).map(point).collect::<Vec<_>>())?;
    e.delete("c", "v", &[5, 6, 7])?;
    assert!(e.wait_indexed("c", "v", Duration::from_secs(120))?);
    assert!(e.persist_index("c", "v")?);
    let m = e.create_backup("quiet")?;
    assert!(m.versions[0].generation.is_some(), "{:?}", m.versions);
    assert_eq!(
        e.list_backups()?
            .iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>(),
        ["quiet"]
    );

    let restored = dir.path().join("restored");
    restore_backup(&e.backup_dir("quiet")?, &restored)?;
    let r = Engine::open(EngineConfig::new(&restored))?;
    assert_eq!(
        r.stats().loads.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "generation not used"
    );
    assert_eq!(r.describe_version("c", "v")?.point_count, 2997);
    for q in 0..20u64 {
        let query = vector(10_000 + q);
        let ann = SearchParams {
            exact: false,
            ef: 64,
            ..exact(10)
        };
        for p in [exact(10), ann] {
            let a = e.search("c", "v", &query, p)?;
            let b = r.search("c", "v", &query, p)?;
            assert_eq!(a, b, "query {q}, exact = {}", p.exact);
        }
    }
    // A second backup of the same name is refused; a deleted one is gone.
    assert!(matches!(
        e.create_backup("quiet"),
        Err(Error::AlreadyExists { .. })
    ));
    e.delete_backup("quiet")?;
    assert!(e.list_backups()?.is_empty());
    assert!(matches!(e.backup_dir("quiet"), Err(Error::NotFound { .. })));
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), dst)?;
        }
    }
    Ok(())
}

/// Each kind of file of a backup, damaged: a byte flipped, the file truncated, an extra file, the
/// manifest itself. Restore fails naming the file, and the target stays empty.
#[test]
fn damaged_backups_are_refused_naming_the_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let e = Engine::open(EngineConfig::new(dir.path().join("data")))?;
    e.create_version("c", "v", spec())?;
    e.upsert("c", "v", &(0..1500).map(point).collect::<Vec<_>>())?;
    assert!(e.wait_indexed("c", "v", Duration::from_secs(120))?);
    assert!(e.persist_index("c", "v")?);
    let m = e.create_backup("b")?;
    let good = e.backup_dir("b")?;
    verify_backup(&good)?;
    let pick = |pred: &dyn Fn(&str) -> bool| -> String {
        m.files
            .iter()
            .map(|f| f.path.clone())
            .find(|p| pred(p))
            .expect("a file of that kind")
    };
    let cases: Vec<(String, &str)> = vec![
        (
            pick(&|p| p.starts_with("db/") && p.ends_with(".sst")),
            "flip",
        ),
        (pick(&|p| p.starts_with("db/MANIFEST-")), "flip"),
        (pick(&|p| p.starts_with("db/OPTIONS-")), "truncate"),
        (
            pick(&|p| p.starts_with("index/") && p.ends_with("/MANIFEST")),
            "flip",
        ),
        (pick(&|p| p.ends_with("slots.bin")), "truncate"),
        (pick(&|p| p.ends_with("links.bin")), "flip"),
        ("backup.json".to_string(), "flip"),
        ("backup.json.sha256".to_string(), "flip"),
        ("index/stray.bin".to_string(), "extra"),
        (pick(&|p| p.ends_with(".sst")), "remove"),
    ];
    for (i, (file, how)) in cases.iter().enumerate() {
        let bad = dir.path().join(format!("bad-{i}"));
        copy_tree(&good, &bad)?;
        let path: PathBuf = bad.join(file);
        match *how {
            "flip" => {
                let mut b = std::fs::read(&path)?;
                let at = b.len() / 2;
                b[at] ^= 0x20;
                std::fs::write(&path, b)?;
            }
            "truncate" => {
                let b = std::fs::read(&path)?;
                std::fs::write(&path, &b[..b.len() / 2])?;
            }
            "extra" => std::fs::write(&path, b"not part of the backup")?,
            _ => std::fs::remove_file(&path)?,
        }
        let target = dir.path().join(format!("target-{i}"));
        let err = restore_backup(&bad, &target).expect_err("a damaged backup was restored");
        let msg = err.to_string();
        let base = Path::new(file)
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            msg.contains(&base),
            "{how} {file}: message does not name it: {msg}"
        );
        assert!(
            is_empty_or_missing(&target),
            "{how} {file}: target not empty"
        );
        println!("{how} {file}: {msg}");
    }
    // A non-empty target is refused before anything is read.
    let busy = dir.path().join("busy");
    std::fs::create_dir_all(&busy)?;
    std::fs::write(busy.join("x"), b"x")?;
    assert!(matches!(
        restore_backup(&good, &busy),
        Err(Error::FailedPrecondition(_))
    ));
    Ok(())
}

/// The archive form (what DownloadSnapshot streams): restored like the directory; a flipped byte,
/// a truncation or an entry that would land outside the target is refused, the target left empty.
#[test]
fn archives_restore_and_damaged_archives_are_refused() -> anyhow::Result<()> {
    use emberdb_storage::backup::{restore_archive, write_archive};
    let dir = tempfile::tempdir()?;
    let e = Engine::open(EngineConfig::new(dir.path().join("data")))?;
    e.create_version("c", "v", spec())?;
    e.upsert("c", "v", &(0..1200).map(point).collect::<Vec<_>>())?;
    assert!(e.wait_indexed("c", "v", Duration::from_secs(120))?);
    assert!(e.persist_index("c", "v")?);
    e.create_backup("a")?;
    let archive = dir.path().join("a.tar");
    write_archive(&e.backup_dir("a")?, std::fs::File::create(&archive)?)?;

    let restored = dir.path().join("restored");
    restore_archive(&archive, &restored)?;
    let r = Engine::open(EngineConfig::new(&restored))?;
    assert_eq!(r.describe_version("c", "v")?.point_count, 1200);
    let q = vector(99_999);
    assert_eq!(
        r.search("c", "v", &q, exact(10))?,
        e.search("c", "v", &q, exact(10))?
    );

    let bytes = std::fs::read(&archive)?;
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x10;
    let escaping = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Written raw: the builder itself refuses such a name.
        h.as_old_mut().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        b.append(&h, &b"x"[..])?;
        b.into_inner()?
    };
    for (i, (what, body)) in [
        ("flipped", flipped),
        ("truncated", bytes[..bytes.len() / 3].to_vec()),
        ("escaping", escaping),
    ]
    .into_iter()
    .enumerate()
    {
        let bad = dir.path().join(format!("{what}.tar"));
        std::fs::write(&bad, body)?;
        let target = dir.path().join(format!("t{i}"));
        let err = restore_archive(&bad, &target).expect_err("a damaged archive was restored");
        assert!(
            err.to_string().contains(&format!("{what}.tar")),
            "{what}: {err}"
        );
        assert!(is_empty_or_missing(&target), "{what}: target not empty");
        assert!(
            !dir.path().join("escape").exists(),
            "{what}: wrote outside the target"
        );
        println!("{what}: {err}");
    }
    Ok(())
}

/// A snapshot of one collection holds that collection only: restored, the other collection, its
/// points and its monitor specs are gone, and the kept one answers as before.
#[test]
fn a_collection_snapshot_holds_that_collection_only() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let e = Engine::open(EngineConfig::new(dir.path().join("data")))?;
    for (c, n) in [("keep", 900u64), ("other", 700)] {
        e.create_version(c, "v", spec())?;
        e.upsert(c, "v", &(0..n).map(point).collect::<Vec<_>>())?;
        e.put_monitor_spec(c, "v", &serde_json::json!({ "collection": c }))?;
    }
    assert!(e.wait_indexed("keep", "v", Duration::from_secs(120))?);
    assert!(e.persist_index("keep", "v")?);
    let m = e.create_backup_of("one", Some("keep"))?;
    assert_eq!(m.collection.as_deref(), Some("keep"));
    assert_eq!(
        m.versions
            .iter()
            .map(|v| (v.collection.as_str(), v.seq))
            .collect::<Vec<_>>(),
        [("keep", 900)]
    );
    let other_index = format!("index/{}/", e.resolve("other", "v")?.id());
    assert!(!m.files.iter().any(|f| f.path.starts_with(&other_index)));
    assert!(matches!(
        e.create_backup_of("two", Some("ghost")),
        Err(Error::NotFound { .. })
    ));

    let restored = dir.path().join("restored");
    restore_backup(&e.backup_dir("one")?, &restored)?;
    let r = Engine::open(EngineConfig::new(&restored))?;
    assert_eq!(
        r.list_collections()?
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["keep"]
    );
    assert!(matches!(
        r.describe_version("other", "v"),
        Err(Error::NotFound { .. })
    ));
    let specs = r.monitor_specs::<serde_json::Value>()?;
    assert_eq!(
        specs.iter().map(|(k, _)| k.0.as_str()).collect::<Vec<_>>(),
        ["keep"]
    );
    let q = vector(424_242);
    assert_eq!(
        r.search("keep", "v", &q, exact(10))?,
        e.search("keep", "v", &q, exact(10))?
    );
    Ok(())
}
