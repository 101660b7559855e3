//! EmberDB's analysis: what a team asks of its embeddings beyond kNN search. Recall of the
//! index, label quality (precision@1, MAP@R), leave-one-out confusion and margin, action items
//! with owners, 2-D projections, drift between windows, canary verdicts between versions, and
//! monitors that run these on a schedule.
//!
//! **Architecture invariant:** this crate uses only the storage engine's public API: a
//! [`Snapshot`](emberdb_storage::Snapshot) of a version's live points at one op sequence,
//! search, `set_alias`, the typed store of monitor specs and the light consistency check. It
//! owns its caches (leave-one-out lists), its pools, the verdict rules and the action items.
//! It knows nothing about gRPC; the server converts at its boundary.

pub mod bundle;
pub mod canary;
pub mod drift;
pub mod evaluate;
pub mod monitor;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use emberdb_storage::{Engine, Error, Result, validate};

pub use canary::{CompareOut, CompareRequest, Verdict};
pub use drift::{DriftOut, DriftRequest, WindowSpec};
pub use evaluate::{
    ActionsOut, ConfusionOut, EvalConfig, MarginOut, ModeRequest, ProjectedOut, RecallParams,
    RecallReport,
};
pub use monitor::{MonitorResult, MonitorSpec, MonitorStatus};

/// How long an evaluation may run: a deadline, and a flag the caller sets when it goes away
/// (both checked between blocks of work). `None.into()` is "no limit".
#[derive(Debug, Clone, Default)]
pub struct Budget {
    pub at: Option<Instant>,
    pub cancel: Option<Arc<AtomicBool>>,
}

impl From<Option<Instant>> for Budget {
    fn from(at: Option<Instant>) -> Self {
        Budget { at, cancel: None }
    }
}

/// Analysis configuration. Defaults are what `emberdb` runs with.
#[derive(Debug, Clone)]
pub struct AnalysisConfig {
    /// Threads of the evaluation pool; default: the number of cores.
    pub eval_threads: usize,
    /// Evaluation thresholds, owners and limits (the `[eval]` table).
    pub eval: EvalConfig,
    /// Nice value of the monitor thread (19 = yield to everything else).
    pub monitor_nice: i32,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            eval_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            eval: EvalConfig::default(),
            monitor_nice: 19,
        }
    }
}

/// Counters exported as metrics by the server.
#[derive(Debug, Default)]
pub struct AnalysisStats {
    /// Evaluations stopped because their caller went away.
    pub evaluations_cancelled: AtomicU64,
    /// Monitor runs that reused the last result: nothing they read had changed.
    pub monitor_results_reused: AtomicU64,
}

/// The analysis service over one engine. Cheap to share behind an `Arc`; every method is
/// blocking and belongs on a blocking thread.
pub struct Analysis {
    engine: Arc<Engine>,
    config: AnalysisConfig,
    /// Long evaluations run here, so they never queue behind (or in front of) batch searches.
    eval_pool: rayon::ThreadPool,
    /// Monitors' math: one thread in the idle scheduling class, so scheduled evaluations yield
    /// the CPU to searches. It only reads snapshots: searches (which take a version's store
    /// lock) run on the engine's query pool, at normal priority.
    monitor_pool: rayon::ThreadPool,
    loo: evaluate::LooCaches,
    monitors: Mutex<monitor::Registry>,
    stats: AnalysisStats,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn poisoned<T>(_: T) -> Error {
    Error::Internal("a lock was poisoned by an earlier panic".into())
}

impl Analysis {
    /// Starts the pools. Stored monitor specs that do not parse are DATA_CORRUPTION.
    pub fn new(engine: Arc<Engine>, config: AnalysisConfig) -> Result<Analysis> {
        let nice = config.monitor_nice;
        let a = Analysis {
            eval_pool: rayon::ThreadPoolBuilder::new()
                .num_threads(config.eval_threads.max(1))
                .thread_name(|i| format!("ember-eval-{i}"))
                .build()
                .map_err(|e| Error::Internal(e.to_string()))?,
            monitor_pool: rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(|_| "ember-monitor".into())
                .start_handler(move |_| emberdb_storage::lower_thread_priority(nice))
                .build()
                .map_err(|e| Error::Internal(e.to_string()))?,
            engine,
            config,
            loo: evaluate::LooCaches::default(),
            monitors: Mutex::new(monitor::Registry::default()),
            stats: AnalysisStats::default(),
        };
        drop(a.registry()?);
        Ok(a)
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn stats(&self) -> &AnalysisStats {
        &self.stats
    }

    pub fn eval_config(&self) -> &EvalConfig {
        &self.config.eval
    }

    // ---- evaluation (long-running; each honours `deadline` between blocks of work) ----

    fn evaluate<T: Send>(
        &self,
        f: impl FnOnce(&emberdb_eval::Deadline) -> Result<T> + Send,
        deadline: impl Into<Budget>,
    ) -> Result<T> {
        let Budget { at, cancel } = deadline.into();
        let d = match &cancel {
            Some(c) => emberdb_eval::Deadline::with_cancel(at, c.clone()),
            None => emberdb_eval::Deadline::new(at),
        };
        let out = self.eval_pool.install(|| f(&d));
        if out.is_err() && cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            self.stats
                .evaluations_cancelled
                .fetch_add(1, Ordering::Relaxed);
        }
        out
    }

    /// ANN recall@k against exact search, plus label-based retrieval quality.
    pub fn recall(
        &self,
        collection: &str,
        version: &str,
        p: &RecallParams,
        deadline: impl Into<Budget>,
    ) -> Result<RecallReport> {
        let v = self.engine.resolve(collection, version)?;
        self.evaluate(|d| evaluate::recall(&v, p, d), deadline)
    }

    /// Leave-one-out 1-NN margin.
    pub fn margin(
        &self,
        collection: &str,
        version: &str,
        threshold: Option<f64>,
        lowest_n: Option<u32>,
        mode: ModeRequest,
        deadline: impl Into<Budget>,
    ) -> Result<MarginOut> {
        let v = self.engine.resolve(collection, version)?;
        let (cfg, loo) = (&self.config.eval, &self.loo);
        self.evaluate(
            |d| evaluate::margin(&v, cfg, loo, threshold, lowest_n, mode, d),
            deadline,
        )
    }

    /// Leave-one-out 1-NN confusion.
    pub fn confusion(
        &self,
        collection: &str,
        version: &str,
        top_pairs: Option<u32>,
        mode: ModeRequest,
        deadline: impl Into<Budget>,
    ) -> Result<ConfusionOut> {
        let v = self.engine.resolve(collection, version)?;
        let (cfg, loo) = (&self.config.eval, &self.loo);
        self.evaluate(
            |d| evaluate::confusion(&v, cfg, loo, top_pairs, mode, d),
            deadline,
        )
    }

    /// Signals turned into owned work items.
    pub fn actions(
        &self,
        collection: &str,
        version: &str,
        mode: ModeRequest,
        deadline: impl Into<Budget>,
    ) -> Result<ActionsOut> {
        let v = self.engine.resolve(collection, version)?;
        let (cfg, loo) = (&self.config.eval, &self.loo);
        self.evaluate(|d| evaluate::actions(&v, cfg, loo, mode, d), deadline)
    }

    /// 2-D PCA coordinates of (a sample of) the version's points.
    pub fn project(
        &self,
        collection: &str,
        version: &str,
        sample_size: Option<u32>,
        seed: Option<u64>,
    ) -> Result<Vec<ProjectedOut>> {
        let v = self.engine.resolve(collection, version)?;
        self.evaluate(|_| evaluate::project(&v, sample_size, seed), None)
    }

    /// Distribution shift between two windows of the collection.
    pub fn drift(
        &self,
        collection: &str,
        baseline: &WindowSpec,
        current: &WindowSpec,
        req: &DriftRequest,
        deadline: impl Into<Budget>,
    ) -> Result<DriftOut> {
        validate::name("collection", collection)?;
        baseline.validate("baseline")?;
        current.validate("current")?;
        let bv = self.engine.resolve(collection, &baseline.version)?;
        let cv = self.engine.resolve(collection, &current.version)?;
        let cfg = &self.config.eval;
        self.evaluate(
            |d| drift::drift(&bv, baseline, &cv, current, req, cfg, d),
            deadline,
        )
    }

    /// Canary comparison of two versions; on PROMOTE with `promote_alias` set,
    /// the alias moves to the candidate atomically before this returns.
    pub fn compare_versions(
        &self,
        collection: &str,
        baseline_version: &str,
        candidate_version: &str,
        req: &CompareRequest,
        deadline: impl Into<Budget>,
    ) -> Result<CompareOut> {
        validate::name("collection", collection)?;
        validate::name("baseline_version", baseline_version)?;
        validate::name("candidate_version", candidate_version)?;
        if !req.promote_alias.is_empty() {
            validate::name("promote_alias", &req.promote_alias)?;
        }
        let bv = self.engine.resolve(collection, baseline_version)?;
        let cv = self.engine.resolve(collection, candidate_version)?;
        if !req.promote_alias.is_empty() && bv.name() != cv.name() {
            // Refuse before the work, not after it: the alias must not name a version.
            if self
                .engine
                .is_version_name(collection, &req.promote_alias)?
            {
                return Err(Error::invalid(
                    "promote_alias",
                    format!("'{}' is a version name, not an alias", req.promote_alias),
                ));
            }
        }
        let cfg = &self.config.eval;
        let mut out = self.evaluate(|d| canary::compare(&bv, &cv, req, cfg, d), deadline)?;
        if out.verdict == Verdict::Promote && !req.promote_alias.is_empty() {
            self.engine
                .set_alias(collection, &req.promote_alias, cv.name())?;
            out.alias_moved = true;
            tracing::info!(collection, alias = %req.promote_alias, version = %cv.name(), "canary promoted");
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
