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

/// Round `r` of overwriting ids `0..n`: every point moved by `r · step` and
/// labelled `r{r}`, so a stale vector is told apart by distance and label; each
/// point gets its own offset (`pts` repeats vectors every 101 ids).
fn overwrite_round(n: u64, dim: usize, r: u64, step: f32) -> Vec<PointInput> {
    pts(0..n, dim)
        .into_iter()
        .map(|mut p| {
            p.vector.iter_mut().for_each(|x| *x += r as f32 * step);
            p.vector[1] += p.id as f32 * 0.01;
            p.label = format!("r{r}");
            p
        })
        .collect()
}

#[test]
fn overwrites_do_not_grow_the_slot_space_without_bound() -> R {
    let dir = tempfile::tempdir()?;
    let n = 1500u64;
    let dim = 8;
    let round = |r: u64| overwrite_round(n, dim, r, 100.0);
    {
        let e = Engine::open(EngineConfig::new(dir.path()))?;
        e.create_version("c", "v", spec(dim as u32))?;
        for r in 0..6 {
            e.upsert("c", "v", &round(r))?;
            assert!(e.wait_indexed("c", "v", Duration::from_secs(60))?);
        }
        // Every overwrite killed a slot; rebuilds compact them away.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let v = e.resolve("c", "v")?;
            let slots = v.store().read().map_err(|_| "poisoned")?.len();
            if slots as f64 <= 1.25 * n as f64 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{slots} slots for {n} points after 6 rounds of overwrites"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            e.stats()
                .rebuilds_dead
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
        check_last_round(&e, &round(5))?;
        e.close()?;
    }
    // After a restart (the compacted generation is loaded) the same holds.
    let e = Engine::open(EngineConfig::new(dir.path()))?;
    assert!(e.wait_indexed("c", "v", Duration::from_secs(60))?);
    assert_eq!(e.describe_version("c", "v")?.point_count, n);
    let v = e.resolve("c", "v")?;
    assert!(v.store().read().map_err(|_| "poisoned")?.len() as f64 <= 1.25 * n as f64);
    check_last_round(&e, &round(5))?;
    let got = e.get("c", "v", &[0, 7, 1499], true)?;
    let want = round(5);
    assert_eq!(got.len(), 3);
    for g in got {
        assert_eq!(g.vector.as_ref(), Some(&want[g.id as usize].vector));
        assert_eq!(g.label, "r5");
    }
    Ok(())
}

/// Only the last round is found: exactly always, by ANN for at least 90 % of the
/// points (this grid-like set is hard for M=8; a fresh graph misses 0.2–3 %).
fn check_last_round(e: &Engine, last: &[PointInput]) -> R {
    let mut found = 0;
    for p in last {
        let mut exact = params(3);
        exact.exact = true;
        let hits = e.search("c", "v", &p.vector, exact)?;
        assert_eq!((hits[0].id, hits[0].distance), (p.id, 0.0), "{hits:?}");
        assert!(hits.iter().all(|h| h.label == "r5"), "{hits:?}");
        let hits = e.search("c", "v", &p.vector, params(3))?;
        assert!(hits.iter().all(|h| h.label == "r5"), "{hits:?}");
        found += usize::from(hits[0].id == p.id);
    }
    assert!(
        found * 10 >= last.len() * 9,
        "ANN found {found} of {}",
        last.len()
    );
    Ok(())
}

#[test]
fn searches_during_compacting_rebuilds_stay_consistent() -> R {
    let dir = tempfile::tempdir()?;
    let n = 1500u64;
    let dim = 8;
    let round = move |r: u64| overwrite_round(n, dim, r, 3.0);
    let e = std::sync::Arc::new(Engine::open(EngineConfig::new(dir.path()))?);
    e.create_version("c", "v", spec(dim as u32))?;
    e.upsert("c", "v", &round(0))?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let (e, stop) = (e.clone(), stop.clone());
            std::thread::spawn(move || -> Result<usize, String> {
                let mut checked = 0;
                let mut i = t;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i = (i * 7919 + 13) % n as usize;
                    let q = round(i as u64 % 9)[i].vector.clone();
                    let mut p = params(5);
                    p.exact = i % 3 == 0;
                    let hits = e.search("c", "v", &q, p).map_err(|e| e.to_string())?;
                    // Every hit's distance is that of the vector its id had in the round
                    // its label names: slot numbers never mix two points.
                    for h in &hits {
                        let r: u64 = h.label[1..].parse().map_err(|_| h.label.clone())?;
                        let v = &round(r)[h.id as usize].vector;
                        let d = q
                            .iter()
                            .zip(v)
                            .map(|(a, b)| (a - b) * (a - b))
                            .sum::<f32>()
                            .sqrt();
                        if (d - h.distance).abs() > 1e-3 * (1.0 + d) {
                            return Err(format!("hit {h:?}: distance of its vector is {d}"));
                        }
                    }
                    checked += hits.len();
                }
                Ok(checked)
            })
        })
        .collect();
    for r in 1..9 {
        e.upsert("c", "v", &round(r))?;
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(e.wait_indexed("c", "v", Duration::from_secs(60))?);
    // The readers keep every core busy: the compacting rebuild starts on the background pool and
    // moves to the normal one once the dead slots are twice the share that starts one, so it
    // happens under them.
    let rebuilt = || {
        e.stats()
            .rebuilds_dead
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !rebuilt() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        let checked = r.join().map_err(|_| "reader panicked")??;
        assert!(checked > 100, "only {checked} hits checked");
    }
    assert!(rebuilt(), "no compacting rebuild under the readers");
    assert!(e.wait_indexed("c", "v", Duration::from_secs(60))?);
    Ok(())
}

/// Monitors re-walk the graph after writes, but re-read the generation files only on their
/// own schedule; CheckConsistency reads them every time.
#[test]
fn monitor_checks_after_writes_do_not_reread_generation_files() -> R {
    let dir = tempfile::tempdir()?;
    let e = Engine::open(EngineConfig::new(dir.path()))?;
    e.create_version("c", "v", spec(4))?;
    e.upsert("c", "v", &pts(0..500, 4))?;
    let checks = || {
        e.stats()
            .generation_file_checks
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let v = e.resolve("c", "v")?;
    let before = checks();
    assert!(crate::consistency::monitor_check(e.shared(), &v)?);
    assert_eq!(
        checks(),
        before + 1,
        "the first monitor check reads the files"
    );
    for round in 0..3u64 {
        e.upsert("c", "v", &pts(500 + round * 10..510 + round * 10, 4))?;
        assert!(crate::consistency::monitor_check(e.shared(), &v)?);
    }
    assert_eq!(
        checks(),
        before + 1,
        "writes alone do not make monitors re-read the files"
    );
    e.check_consistency("c", "v", false)?;
    assert_eq!(checks(), before + 2, "CheckConsistency always reads them");
    Ok(())
}

/// A Gaussian mixture: `centres` centres N(0, 3²) per dimension, points N(centre, 1)
/// (Box–Muller, seeded).
fn mixture(seed: u64, n: u64, dim: usize, centres: usize) -> Vec<PointInput> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = move |rng: &mut rand::rngs::StdRng| -> f32 {
        let (u, v): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    let cs: Vec<Vec<f32>> = (0..centres)
        .map(|_| (0..dim).map(|_| 3.0 * normal(&mut rng)).collect())
        .collect();
    (0..n)
        .map(|id| {
            let c = &cs[rng.random_range(0..centres)];
            PointInput {
                id,
                vector: c.iter().map(|x| x + normal(&mut rng)).collect(),
                ..Default::default()
            }
        })
        .collect()
}

fn assert_all_reachable(e: &Engine, when: &str) -> R {
    assert!(e.wait_indexed("c", "v", Duration::from_secs(300))?);
    let r = e.check_consistency("c", "v", false)?;
    assert!(
        r.unreachable.is_empty(),
        "{when}: {} live points unreachable: {:?}",
        r.unreachable.len(),
        r.findings
    );
    assert!(r.consistent, "{when}: {:?}", r.findings);
    Ok(())
}

/// 10,000 × 32 points around 8 centres, default M and ef_construction: every live point is
/// reachable by search after the build, after 30 % overwrites and the compaction they cause, and
/// after a restart; and each point's own vector finds it.
#[test]
fn gaussian_mixture_graph_leaves_no_point_unreachable() -> R {
    let dir = tempfile::tempdir()?;
    let data = mixture(7, 10_000, 32, 8);
    let spec = VersionSpec {
        dim: 32,
        metric: Some(Metric::L2),
        m: 0,
        ef_construction: 0,
    };
    {
        let e = Engine::open(EngineConfig::new(dir.path()))?;
        e.create_version("c", "v", spec)?;
        for chunk in data.chunks(1000) {
            e.upsert("c", "v", chunk)?;
        }
        assert_all_reachable(&e, "after build")?;
        let mut over = mixture(8, 10_000, 32, 8);
        over.retain(|p| p.id % 10 < 3);
        for chunk in over.chunks(1000) {
            e.upsert("c", "v", chunk)?;
        }
        let t = std::time::Instant::now();
        while e
            .stats()
            .rebuilds_dead
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
            && t.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            e.stats()
                .rebuilds_dead
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
        assert_all_reachable(&e, "after overwrites and compaction")?;
        e.persist_index("c", "v")?;
    }
    let e = Engine::open(EngineConfig::new(dir.path()))?;
    assert_eq!(
        e.stats().loads.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_all_reachable(&e, "after restart")?;
    for p in data.iter().filter(|p| p.id % 10 >= 3).step_by(97) {
        let hits = e.search("c", "v", &p.vector, params(1))?;
        assert_eq!(hits[0].id, p.id);
    }
    Ok(())
}

/// The graph file round-trips, and structural damage behind a valid checksum is refused.
#[test]
fn graph_links_round_trip_and_reject_bad_shapes() -> R {
    use crate::generation::{Links, NOT_A_NODE, decode_links, encode_links};
    let good = Links {
        entry: Some(1),
        levels: vec![0, 1, NOT_A_NODE, 0],
        offsets: vec![0, 2, 4, 4, 6],
        targets: vec![1, 3, 0, 3, 0, 1],
        upper: vec![vec![(1, vec![])]],
    };
    assert_eq!(decode_links(&encode_links(&good))?, good);
    let empty = Links {
        entry: None,
        levels: vec![NOT_A_NODE; 2],
        offsets: vec![0, 0, 0],
        targets: vec![],
        upper: vec![],
    };
    assert_eq!(decode_links(&encode_links(&empty))?, empty);
    let bad = |f: &dyn Fn(&mut Links)| {
        let mut l = good.clone();
        f(&mut l);
        decode_links(&encode_links(&l))
    };
    // A link to a slot that is not a node, a link past the graph, an entry below the top layer,
    // an upper layer missing a node, offsets going backwards.
    assert!(bad(&|l| l.targets[0] = 2).is_err());
    assert!(bad(&|l| l.targets[0] = 9).is_err());
    assert!(bad(&|l| l.entry = Some(0)).is_err());
    assert!(bad(&|l| l.upper = vec![vec![]]).is_err());
    assert!(bad(&|l| l.offsets[1] = 5).is_err());
    assert!(bad(&|l| l.levels[0] = 3).is_err());
    let mut bytes = encode_links(&good);
    bytes.truncate(bytes.len() - 3);
    assert!(decode_links(&bytes).is_err());
    Ok(())
}

/// Once committed and idle, hnsw_rs's graph leaves memory and searches walk the view; an insert
/// loads it back from the generation, a restart serves the recorded view without loading it, and
/// the full check loads it to compare every node with the store.
#[test]
fn idle_graph_is_parked_and_reloaded_for_inserts() -> R {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir()?;
    let config = || {
        let mut c = EngineConfig::new(dir.path());
        c.persist_idle = Duration::from_millis(20);
        c.graph_park_after = Some(Duration::ZERO);
        c
    };
    let wait = |what: &dyn Fn() -> bool| {
        let t = std::time::Instant::now();
        while !what() && t.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(10));
        }
        what()
    };
    let all = mixture(3, 4500, 16, 6);
    let (data, more) = all.split_at(4000);
    let spec = VersionSpec {
        dim: 16,
        metric: Some(Metric::L2),
        m: 0,
        ef_construction: 0,
    };
    // Each point's own vector finds it (ANN: all but a rare few).
    let self_recall = |e: &Engine, pts: &[PointInput]| -> Result<f64, Box<dyn std::error::Error>> {
        let mut found = 0;
        for p in pts {
            found += usize::from(e.search("c", "v", &p.vector, params(1))?[0].id == p.id);
        }
        Ok(found as f64 / pts.len() as f64)
    };
    {
        let e = Engine::open(config())?;
        e.create_version("c", "v", spec)?;
        e.upsert("c", "v", &data[..3000])?;
        assert!(e.wait_indexed("c", "v", Duration::from_secs(120))?);
        assert!(wait(&|| e.stats().graphs_parked.load(Relaxed) >= 1));
        assert!(self_recall(&e, &data[..3000])? >= 0.995, "parked");
        let r = e.check_consistency("c", "v", false)?;
        assert!(r.consistent, "parked: {:?}", r.findings);
        assert_eq!(r.indexed_points, 3000);
        // New points: the graph is loaded back, grows, is committed and parked again.
        e.upsert("c", "v", &data[3000..])?;
        assert!(e.wait_indexed("c", "v", Duration::from_secs(120))?);
        assert_eq!(e.stats().graphs_reloaded.load(Relaxed), 1);
        assert!(wait(&|| e.stats().graphs_parked.load(Relaxed) >= 2));
        assert!(self_recall(&e, data)? >= 0.995, "after reload");
        let r = e.check_consistency("c", "v", false)?;
        assert!(r.consistent, "after reload: {:?}", r.findings);
        assert_eq!(r.indexed_points, 4000);
    }
    let e = Engine::open(config())?;
    assert_eq!(e.stats().loads.load(Relaxed), 1);
    // Served from the recorded view: hnsw_rs's graph was not loaded.
    assert_ne!(e.resolve("c", "v")?.parked().load(Relaxed), 0);
    assert!(
        e.resolve("c", "v")?
            .ann()
            .read()
            .map_err(|e| e.to_string())?
            .is_none()
    );
    assert_eq!(e.describe_version("c", "v")?.indexed_count, 4000);
    assert!(self_recall(&e, data)? >= 0.995, "after restart");
    assert_eq!(e.stats().graphs_reloaded.load(Relaxed), 0);
    e.upsert("c", "v", more)?;
    assert!(e.wait_indexed("c", "v", Duration::from_secs(120))?);
    assert_eq!(e.stats().graphs_reloaded.load(Relaxed), 1);
    let r = e.check_consistency("c", "v", false)?;
    assert!(r.consistent, "after restart and insert: {:?}", r.findings);
    assert_eq!(r.indexed_points, 4500);
    assert!(self_recall(&e, more)? >= 0.995, "after restart and insert");
    assert!(self_recall(&e, data)? >= 0.995, "after restart and insert");
    Ok(())
}
