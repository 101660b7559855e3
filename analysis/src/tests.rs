//! Analysis tests against a real engine (RocksDB in a temp dir).

use std::sync::Arc;
use std::time::Duration;

use emberdb_storage::{Engine, EngineConfig, Metric, PointInput, VersionSpec};

use crate::{Analysis, AnalysisConfig};

type R = Result<(), Box<dyn std::error::Error>>;

/// A Gaussian mixture: `centres` centres N(0, 3²) per dimension, points N(centre, 1), seeded.
fn mixture(seed: u64, n: u64, dim: usize, centres: usize) -> Vec<PointInput> {
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Normal};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let unit = Normal::new(0.0f32, 1.0).expect("valid normal");
    let cs: Vec<Vec<f32>> = (0..centres)
        .map(|_| (0..dim).map(|_| 3.0 * unit.sample(&mut rng)).collect())
        .collect();
    (0..n)
        .map(|id| {
            let c = &cs[rng.random_range(0..centres)];
            PointInput {
                id,
                vector: c.iter().map(|x| x + unit.sample(&mut rng)).collect(),
                ..Default::default()
            }
        })
        .collect()
}

/// An engine with collection "c" holding each (version, seed, n) as an indexed 8-d mixture.
fn indexed_mixtures(
    dir: &std::path::Path,
    versions: &[(&str, u64, u64)],
) -> Result<(Arc<Engine>, Analysis), Box<dyn std::error::Error>> {
    let e = Arc::new(Engine::open(EngineConfig::new(dir))?);
    for &(name, seed, n) in versions {
        let small = VersionSpec {
            dim: 8,
            metric: Some(Metric::L2),
            m: 8,
            ef_construction: 50,
        };
        e.create_version("c", name, small)?;
        e.upsert("c", name, &mixture(seed, n, 8, 4))?;
        assert!(e.wait_indexed("c", name, Duration::from_secs(120))?);
    }
    let a = Analysis::new(e.clone(), AnalysisConfig::default())?;
    Ok((e, a))
}

/// A monitor of c/v every second: recall@10 and margins on 100 sampled queries, drift
/// against `baseline` when given.
fn monitor_spec(baseline: Option<&str>) -> crate::MonitorSpec {
    crate::MonitorSpec {
        collection: "c".into(),
        version: "v".into(),
        interval_s: 1,
        k: 10,
        sample_size: 100,
        baseline: baseline.map(|b| crate::WindowSpec {
            version: b.into(),
            from_ms: None,
            to_ms: None,
        }),
        record_bundles: false,
    }
}

/// Threads of the idle scheduling class (the monitor pool, the background build pool) never
/// take the store lock: one preempted while holding it would stall a queued writer and every
/// search queued behind that writer. Monitors run while trickle writes go to the background
/// pool; every acquisition on such a thread is counted.
#[test]
fn idle_class_threads_never_take_the_store_lock() -> R {
    let dir = tempfile::tempdir()?;
    let (e, a) = indexed_mixtures(dir.path(), &[("v", 3, 3000)])?;
    let spec = monitor_spec(None);
    a.set_monitor(spec.clone())?;
    let before = emberdb_storage::idle_store_locks();
    for round in 0..4u64 {
        // Overwrites of existing ids: small tails the indexer inserts on the background pool.
        let mut batch = mixture(10 + round, 40, 8, 4);
        for (i, p) in batch.iter_mut().enumerate() {
            p.id = round * 40 + i as u64;
        }
        e.upsert("c", "v", &batch)?;
        let r = a.run_monitor(&spec)?;
        assert!(r.recall_at_k > 0.5, "recall {}", r.recall_at_k);
        assert!(r.low_margin_fraction >= 0.0 && r.low_margin_fraction <= 1.0);
        assert_eq!(r.points, 3000);
    }
    assert!(e.wait_indexed("c", "v", Duration::from_secs(120))?);
    assert_eq!(
        emberdb_storage::idle_store_locks(),
        before,
        "store lock taken on an idle-class thread"
    );
    Ok(())
}

/// A monitor run on a version nothing changed in reuses the last numbers (every sample is
/// seeded, so they would come out the same); a write, or a baseline that moves, recomputes.
#[test]
fn monitor_runs_on_unchanged_versions_reuse_their_result() -> R {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir()?;
    let (e, a) = indexed_mixtures(dir.path(), &[("v", 5, 2000), ("base", 6, 2000)])?;
    let spec = monitor_spec(Some("base"));
    a.set_monitor(spec.clone())?;
    let reused = || a.stats().monitor_results_reused.load(Relaxed);
    let first = a.run_monitor(&spec)?;
    assert_eq!(reused(), 0);
    assert_eq!(a.run_monitor(&spec)?, first, "same inputs, same numbers");
    assert_eq!(reused(), 1);
    // A write to the monitored version: computed again.
    e.upsert("c", "v", &mixture(7, 10, 8, 4))?;
    assert!(e.wait_indexed("c", "v", Duration::from_secs(120))?);
    let after_write = a.run_monitor(&spec)?;
    assert_eq!(reused(), 1);
    assert_eq!(after_write.points, 2000);
    // A write to the baseline only: computed again too.
    e.upsert(
        "c",
        "base",
        &mixture(8, 500, 8, 4)
            .into_iter()
            .map(|mut p| {
                p.vector[0] += 20.0;
                p
            })
            .collect::<Vec<_>>(),
    )?;
    let after_baseline = a.run_monitor(&spec)?;
    assert_eq!(reused(), 1);
    assert_ne!(after_baseline.drift_score, after_write.drift_score);
    assert_eq!(a.run_monitor(&spec)?, after_baseline);
    assert_eq!(reused(), 2);
    Ok(())
}
