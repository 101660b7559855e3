//! Monitors: scheduled evaluations of one version (or alias). Their specs are durable in the
//! storage engine (`Engine::put_monitor_spec`), which drops them with their version or
//! collection; this module keeps each monitor's runtime state and last result, and the server
//! decides when to run them (`due_monitors`) and exports the results as gauges.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use emberdb_storage::{Error, ReadState, Result, Version, validate};

use crate::drift::{self, DriftRequest, WindowSpec};
use crate::evaluate::{self, EvalConfig, RecallParams, sample_rows};
use crate::{Analysis, now_ms, poisoned};

/// What a monitor measures, and how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorSpec {
    pub collection: String,
    /// Version name or alias, as the gauges name it.
    pub version: String,
    pub interval_s: u32,
    pub k: u32,
    pub sample_size: u32,
    pub baseline: Option<WindowSpec>,
    /// Write an incident bundle when a run's drift score exceeds the drift threshold (the server
    /// keeps the flight recorder; this only asks for it). Needs a baseline.
    #[serde(default)]
    pub record_bundles: bool,
}

/// One run's measurements.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MonitorResult {
    pub recall_at_k: f64,
    pub precision_at_1: f64,
    pub low_margin_fraction: f64,
    pub drift_score: Option<f64>,
    pub consistent: bool,
    pub points: u64,
}

#[derive(Debug, Clone)]
pub struct MonitorStatus {
    pub spec: MonitorSpec,
    pub last_run_ms: Option<i64>,
    pub result: Option<MonitorResult>,
    pub last_error: String,
    pub last_duration_ms: f64,
    /// When a run last succeeded (its `result` is from then).
    pub last_success_ms: Option<i64>,
    /// Runs finished since the monitor was set (or the server started), by outcome.
    pub runs_ok: u64,
    pub runs_error: u64,
    next_due: Instant,
    running: bool,
    /// The last computed result and what it was computed from (see [`Inputs`]).
    memo: Option<(Inputs, MonitorResult)>,
}

/// What a monitor's numbers depend on: the state of the version it reads (see [`ReadState`]:
/// its points and the graph view its recall searches walk) and the points of its baseline (only
/// snapshotted, never searched). Every sample is seeded, so equal inputs give equal numbers: a
/// run on an unchanged version reuses the last one (only the consistency check, which has its
/// own schedule, runs again).
#[derive(Debug, Clone, Copy)]
struct Inputs {
    version: ReadState,
    baseline: Option<ReadState>,
}

impl PartialEq for Inputs {
    fn eq(&self, o: &Self) -> bool {
        self.version == o.version
            && match (&self.baseline, &o.baseline) {
                (Some(a), Some(b)) => a.same_points(b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Inputs {
    fn of(v: &Version, baseline: Option<&Version>) -> Result<Inputs> {
        Ok(Inputs {
            version: v.read_state()?,
            baseline: baseline.map(Version::read_state).transpose()?,
        })
    }
}

pub const DEFAULT_K: u32 = 10;
pub const DEFAULT_SAMPLE: u32 = 200;
pub const MAX_SAMPLE: u32 = 100_000;
pub const MAX_INTERVAL_S: u32 = 7 * 24 * 3600;
/// A monitor's drift compares at most this many × `sample_size` points per window
/// (KS), with MMD² and the fingerprint on `MONITOR_MMD_SAMPLE` points per side and
/// `MONITOR_DRIFT_SPLITS` baseline splits: a periodic check costs tens of
/// milliseconds, the full report is the Drift RPC.
pub const DRIFT_SAMPLE_FACTOR: usize = 10;
pub const MONITOR_MMD_SAMPLE: u32 = 300;
pub const MONITOR_DRIFT_SPLITS: usize = 10;

/// Each monitor's runtime state, following the specs storage keeps (`epoch`: the spec epoch
/// the map was last brought up to date with).
#[derive(Default)]
pub(crate) struct Registry {
    epoch: u64,
    monitors: BTreeMap<(String, String), MonitorStatus>,
}

impl Analysis {
    /// The registry, brought up to date with the stored specs: a spec that was deleted (or whose
    /// version or collection was dropped) takes its state with it; a new one is due at once.
    pub(crate) fn registry(&self) -> Result<std::sync::MutexGuard<'_, Registry>> {
        let mut reg = self.monitors.lock().map_err(poisoned)?;
        let epoch = self.engine.monitor_specs_epoch();
        if reg.epoch != epoch {
            let specs = self.engine.monitor_specs::<MonitorSpec>()?;
            let mut old = std::mem::take(&mut reg.monitors);
            for (key, spec) in specs {
                let status = match old.remove(&key) {
                    Some(m) if m.spec == spec => m,
                    _ => MonitorStatus::new(spec),
                };
                reg.monitors.insert(key, status);
            }
            reg.epoch = epoch;
        }
        Ok(reg)
    }
}

impl MonitorStatus {
    fn new(spec: MonitorSpec) -> Self {
        MonitorStatus {
            spec,
            last_run_ms: None,
            result: None,
            last_error: String::new(),
            last_duration_ms: 0.0,
            last_success_ms: None,
            runs_ok: 0,
            runs_error: 0,
            next_due: Instant::now(),
            running: false,
            memo: None,
        }
    }
}

impl Analysis {
    /// Creates or replaces the monitor of (collection, version). Returns whether one was replaced.
    pub fn set_monitor(&self, mut spec: MonitorSpec) -> Result<bool> {
        validate::name("spec.collection", &spec.collection)?;
        validate::name("spec.version", &spec.version)?;
        if spec.interval_s == 0 || spec.interval_s > MAX_INTERVAL_S {
            return Err(Error::invalid(
                "spec.interval_s",
                format!(
                    "must be between 1 and {MAX_INTERVAL_S}, got {}",
                    spec.interval_s
                ),
            ));
        }
        if spec.k == 0 {
            spec.k = DEFAULT_K;
        }
        if spec.k > 1000 {
            return Err(Error::invalid(
                "spec.k",
                format!("must be between 1 and 1000, got {}", spec.k),
            ));
        }
        if spec.sample_size == 0 {
            spec.sample_size = DEFAULT_SAMPLE;
        }
        if spec.sample_size > MAX_SAMPLE {
            return Err(Error::invalid(
                "spec.sample_size",
                format!("must be at most {MAX_SAMPLE}, got {}", spec.sample_size),
            ));
        }
        if spec.record_bundles && spec.baseline.is_none() {
            return Err(Error::invalid(
                "spec.record_bundles",
                "bundles record drift incidents; set spec.baseline too",
            ));
        }
        let v = self.engine.resolve(&spec.collection, &spec.version)?;
        if let Some(b) = &spec.baseline {
            b.validate("spec.baseline")?;
            let bv = self.engine.resolve(&spec.collection, &b.version)?;
            if bv.dim() != v.dim() || bv.metric() != v.metric() {
                return Err(Error::FailedPrecondition(format!(
                    "baseline version '{}' and monitored version '{}' are different embedding spaces; drift needs the same dimension and metric",
                    b.version, spec.version
                )));
            }
        }
        let mut reg = self.registry()?;
        let replaced = self
            .engine
            .put_monitor_spec(&spec.collection, &spec.version, &spec)?;
        // Setting a monitor starts it afresh, even with an unchanged spec.
        reg.monitors
            .remove(&(spec.collection.clone(), spec.version.clone()));
        drop(reg);
        drop(self.registry()?);
        Ok(replaced)
    }

    /// Monitors (of one collection when `collection` is non-empty), ordered by (collection, version).
    pub fn list_monitors(&self, collection: &str) -> Result<Vec<MonitorStatus>> {
        if !collection.is_empty() {
            validate::name("collection", collection)?;
        }
        let reg = self.registry()?;
        Ok(reg
            .monitors
            .values()
            .filter(|m| collection.is_empty() || m.spec.collection == collection)
            .cloned()
            .collect())
    }

    pub fn delete_monitor(&self, collection: &str, version: &str) -> Result<()> {
        validate::name("collection", collection)?;
        validate::name("version", version)?;
        let mut reg = self.registry()?;
        if !self.engine.delete_monitor_spec(collection, version)? {
            return Err(Error::NotFound {
                kind: "monitor",
                name: format!("{collection}/{version}"),
            });
        }
        reg.monitors
            .remove(&(collection.to_string(), version.to_string()));
        Ok(())
    }

    /// Monitors due now; each is marked running until [`Engine::run_monitor`] finishes it.
    pub fn due_monitors(&self) -> Vec<MonitorSpec> {
        let Ok(mut reg) = self.registry() else {
            return Vec::new();
        };
        let now = Instant::now();
        reg.monitors
            .values_mut()
            .filter(|m| !m.running && m.next_due <= now)
            .map(|m| {
                m.running = true;
                m.spec.clone()
            })
            .collect()
    }

    /// Runs one monitor and records its result (or error).
    pub fn run_monitor(&self, spec: &MonitorSpec) -> Result<MonitorResult> {
        let started = Instant::now();
        let result = self.measure(spec);
        let mut reg = self.registry()?;
        // The monitor may have been replaced or deleted meanwhile.
        if let Some(m) = reg
            .monitors
            .get_mut(&(spec.collection.clone(), spec.version.clone()))
            && m.spec == *spec
        {
            m.running = false;
            m.last_run_ms = Some(now_ms());
            m.last_duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            m.next_due = Instant::now() + Duration::from_secs(u64::from(spec.interval_s));
            match &result {
                Ok(r) => {
                    m.result = Some(r.clone());
                    m.last_error.clear();
                    m.last_success_ms = m.last_run_ms;
                    m.runs_ok += 1;
                }
                // `result` keeps the last success (ListMonitors shows it beside the error);
                // the exporter stops publishing it as current.
                Err(e) => {
                    m.last_error = e.to_string();
                    m.runs_error += 1;
                }
            }
        } else if let Some(m) = reg
            .monitors
            .get_mut(&(spec.collection.clone(), spec.version.clone()))
        {
            m.running = false;
        }
        result
    }

    /// One run. Snapshots and the consistency check (which hold locks) run here,
    /// at normal priority; the math runs on the low-priority monitor thread.
    fn measure(&self, spec: &MonitorSpec) -> Result<MonitorResult> {
        let v = self.engine.resolve(&spec.collection, &spec.version)?;
        let baseline_version = match &spec.baseline {
            Some(b) => Some(self.engine.resolve(&spec.collection, &b.version)?),
            None => None,
        };
        // Read before the snapshot: a write in between makes the next run's inputs differ.
        let inputs = Inputs::of(&v, baseline_version.as_deref())?;
        let consistent = self.engine.light_check(&v)?;
        let key = (spec.collection.clone(), spec.version.clone());
        let memo = self
            .registry()?
            .monitors
            .get(&key)
            .filter(|m| m.spec == *spec)
            .and_then(|m| m.memo.clone())
            .filter(|(i, _)| *i == inputs);
        if let Some((_, r)) = memo {
            self.stats
                .monitor_results_reused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(MonitorResult { consistent, ..r });
        }
        let r = self.compute(spec, &v, baseline_version.as_deref(), consistent)?;
        if let Some(m) = self.registry()?.monitors.get_mut(&key)
            && m.spec == *spec
        {
            m.memo = Some((inputs, r.clone()));
        }
        Ok(r)
    }

    /// The measurements of one run (`consistent` from the caller's check).
    fn compute(
        &self,
        spec: &MonitorSpec,
        v: &Arc<Version>,
        baseline_version: Option<&Version>,
        consistent: bool,
    ) -> Result<MonitorResult> {
        let cfg = &self.config.eval;
        let snap = v.snapshot()?;
        // Drift in a monitor compares seeded samples of both windows (the Drift RPC
        // uses every point): a periodic check, not a report.
        let drift_rows = (spec.sample_size as usize * DRIFT_SAMPLE_FACTOR).max(200);
        let baseline = match (&spec.baseline, baseline_version) {
            (Some(b), Some(bv)) => {
                let w = drift::window(bv, b)?;
                Some(w.rows(&sample_rows(w.len(), drift_rows, 1)))
            }
            _ => None,
        };
        let current = baseline
            .as_ref()
            .map(|_| snap.rows(&sample_rows(snap.len(), drift_rows, 2)));
        // The searches take the store lock: they run here, at normal priority, on the query
        // pool. The monitor pool (idle class) only reads the snapshot: a thread of that class
        // holding the lock while preempted would stall a queued writer and every search behind it.
        let plan = evaluate::RecallPlan::new(
            &snap,
            &RecallParams {
                k: Some(spec.k),
                ef: None,
                sample_size: Some(spec.sample_size),
                seed: Some(0),
            },
        )?;
        let ann = self
            .engine
            .query_pool()
            .install(|| plan.ann_side(v, &snap))?;
        self.monitor_pool.install(|| {
            let deadline = emberdb_eval::Deadline::none();
            // Margins of the same sampled queries (nearest two other points), from the same pass.
            let exact = plan.exact_side(&snap, &deadline, true)?;
            let (recall, margins) = plan.report(&snap, exact, ann);
            let low = margins
                .iter()
                .filter(|&&m| m < cfg.margin_threshold)
                .count() as f64
                / margins.len().max(1) as f64;
            let drift_score = match (&baseline, &current) {
                (Some(b), Some(c)) => {
                    let light = EvalConfig {
                        drift_splits: MONITOR_DRIFT_SPLITS,
                        ..cfg.clone()
                    };
                    let req = DriftRequest {
                        sample_size: Some(MONITOR_MMD_SAMPLE),
                        ..Default::default()
                    };
                    Some(drift::drift_on(b, c, &req, &light, &deadline)?.drift_score)
                }
                _ => None,
            };
            Ok(MonitorResult {
                recall_at_k: recall.recall_at_k,
                precision_at_1: if recall.labelled_queries > 0 {
                    recall.precision_at_1
                } else {
                    0.0
                },
                low_margin_fraction: low,
                drift_score,
                consistent,
                points: snap.len() as u64,
            })
        })
    }
}
