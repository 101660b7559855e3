//! Incident bundles: the evidence of a drift incident, gathered so that it can be carried away
//! and replayed. Two windows' points (read back from RocksDB as stored, sampled with a recorded
//! seed past a cap) and the figures computed from **exactly those points**: Drift between them,
//! and leave-one-out Confusion and Margin of the current one when it is labelled. A server that
//! imports the same points answers the same figures, which is what `ember bundle replay` checks.
//! The server packs this into files (`emberdb_server::bundle`).

use std::sync::Arc;

use emberdb_eval::knn::all_neighbors;
use emberdb_storage::validate::MAX_BATCH;
use emberdb_storage::{Error, PointOutput, Result, Snapshot, Version, VersionInfo, validate};

use crate::drift::{self, DriftOut, DriftRequest, WindowSpec};
use crate::evaluate::{
    self, ConfusionOut, EvalConfig, MarginOut, Mode, deadline_error, exact_loo_bytes, sample_rows,
};
use crate::monitor::MonitorStatus;
use crate::{Analysis, Budget};

/// Points per window a bundle holds unless the request says otherwise.
pub const DEFAULT_MAX_POINTS: u32 = 10_000;
/// The most a request may ask for.
pub const MAX_POINTS: u32 = 1_000_000;
/// Examples each report keeps (confusion pairs, lowest-margin points) by default.
pub const DEFAULT_EXAMPLES: u32 = 10;
pub const MAX_EXAMPLES: u32 = 1000;

#[derive(Debug, Clone, Default)]
pub struct BundleRequest {
    pub collection: String,
    pub baseline: WindowSpec,
    pub current: WindowSpec,
    /// Examples each report keeps; default [`DEFAULT_EXAMPLES`].
    pub examples: Option<u32>,
    /// Points per window; default [`DEFAULT_MAX_POINTS`].
    pub max_points: Option<u32>,
    pub drift: DriftRequest,
}

/// One window as the bundle holds it.
#[derive(Debug, Clone)]
pub struct BundleWindow {
    pub spec: WindowSpec,
    /// The version the window's name resolved to (an alias resolved once).
    pub info: VersionInfo,
    /// Op sequence of the snapshot the window's ids were taken from.
    pub seq: u64,
    /// Points in the window at `seq`.
    pub window_points: u64,
    /// Whether `points` is a seeded sample of the window.
    pub sampled: bool,
    /// The points, ids ascending, vectors byte-exact as stored.
    pub points: Vec<PointOutput>,
}

#[derive(Debug, Clone)]
pub struct BundleData {
    pub collection: String,
    pub baseline: BundleWindow,
    pub current: BundleWindow,
    /// Seed of the window samples (the drift seed).
    pub sample_seed: u64,
    pub examples: u32,
    pub max_points: u32,
    /// The drift parameters the request gave (defaults unresolved, as a replay passes them).
    pub drift_request: DriftRequest,
    pub drift: DriftOut,
    /// Confusion and Margin of the current window's labelled points (exact leave-one-out).
    pub confusion: Option<ConfusionOut>,
    pub margin: Option<MarginOut>,
    /// Why `confusion` and `margin` are absent, when they are.
    pub eval_skipped: Option<String>,
    /// Monitors of the current window's version (by its name or an alias of it).
    pub monitors: Vec<MonitorStatus>,
    /// The `[eval]` settings the figures were computed with.
    pub eval_config: EvalConfig,
}

/// Working memory of one bundled window of `n` points: about four copies of its vectors (points
/// read back, the prepared snapshot, the `.npy` file, the archive) plus row bookkeeping.
pub fn window_bytes(n: usize, dim: usize) -> u64 {
    n as u64 * (4 * dim as u64 * 4 + 256)
}

/// What [`Analysis::gather`] read: the checked parameters, both windows' points, the monitors.
struct Gathered {
    examples: u32,
    max_points: u32,
    seed: u64,
    baseline: BundleWindow,
    current: BundleWindow,
    monitors: Vec<MonitorStatus>,
}

impl Analysis {
    /// Gathers an incident bundle's points and figures (the figures on the evaluation pool,
    /// honouring `budget`).
    pub fn bundle(&self, req: &BundleRequest, budget: impl Into<Budget>) -> Result<BundleData> {
        let g = self.gather(req)?;
        self.evaluate(|d| self.figures(g, req, d), budget)
    }

    /// [`Analysis::bundle`] for the flight recorder: the figures on the idle-class monitor
    /// thread, so a recorded incident never slows searches down.
    pub fn record_bundle(&self, req: &BundleRequest) -> Result<BundleData> {
        let g = self.gather(req)?;
        self.monitor_pool
            .install(|| self.figures(g, req, &emberdb_eval::Deadline::none()))
    }

    /// Checks the request and reads both windows' points (store locks are taken here, on the
    /// caller's thread at normal priority).
    fn gather(&self, req: &BundleRequest) -> Result<Gathered> {
        validate::name("collection", &req.collection)?;
        req.baseline.validate("baseline")?;
        req.current.validate("current")?;
        let examples = req.examples.unwrap_or(DEFAULT_EXAMPLES);
        if examples == 0 || examples > MAX_EXAMPLES {
            return Err(Error::invalid(
                "k",
                format!("must be between 1 and {MAX_EXAMPLES}, got {examples}"),
            ));
        }
        let max_points = req.max_points.unwrap_or(DEFAULT_MAX_POINTS);
        if max_points == 0 || max_points > MAX_POINTS {
            return Err(Error::invalid(
                "max_points",
                format!("must be between 1 and {MAX_POINTS}, got {max_points}"),
            ));
        }
        let bv = self
            .engine
            .resolve(&req.collection, &req.baseline.version)?;
        let cv = self.engine.resolve(&req.collection, &req.current.version)?;
        drift::check(&bv, &cv, &req.drift, &self.config.eval)?;
        let seed = req.drift.seed.unwrap_or(0);
        let monitors = self
            .list_monitors(&req.collection)?
            .into_iter()
            .filter(|m| {
                self.engine
                    .resolve(&req.collection, &m.spec.version)
                    .is_ok_and(|v| v.name() == cv.name())
            })
            .collect();
        Ok(Gathered {
            examples,
            max_points,
            seed,
            baseline: self.window_points(&bv, &req.baseline, max_points, seed)?,
            current: self.window_points(&cv, &req.current, max_points, seed)?,
            monitors,
        })
    }

    /// The figures of exactly the gathered points.
    fn figures(
        &self,
        g: Gathered,
        req: &BundleRequest,
        d: &emberdb_eval::Deadline,
    ) -> Result<BundleData> {
        let cfg = &self.config.eval;
        let info = &g.current.info;
        let (metric, dim) = (info.metric, info.dim as usize);
        let bs = Snapshot::from_points(metric, dim, g.baseline.seq, &g.baseline.points);
        let cs = Snapshot::from_points(metric, dim, g.current.seq, &g.current.points);
        let drift = drift::drift_on(&bs, &cs, &req.drift, cfg, d)?;
        let labelled = cs.labelled();
        let need = exact_loo_bytes(labelled.len(), dim);
        let (confusion, margin, eval_skipped) = if cs.labels.iter().all(|&l| l == 0) {
            (
                None,
                None,
                Some("the current window holds no labels".into()),
            )
        } else if labelled.len() < 3 {
            let why = "the current window holds fewer than 3 labelled points";
            (None, None, Some(why.into()))
        } else if cfg.exact_memory_bytes.is_some_and(|limit| need > limit) {
            let why = format!(
                "an exact evaluation of {} points needs about {} MiB, over the server's limit; lower max_points",
                labelled.len(),
                need.div_ceil(1 << 20)
            );
            (None, None, Some(why))
        } else {
            let nn =
                all_neighbors(labelled.data(), labelled.space, 2, d).map_err(deadline_error)?;
            let n = g.examples as usize;
            (
                Some(evaluate::confusion_out(&labelled, &nn, cfg, n, Mode::Exact)),
                Some(evaluate::margin_out(
                    &labelled,
                    &nn,
                    cfg.margin_threshold,
                    n,
                    Mode::Exact,
                )),
                None,
            )
        };
        Ok(BundleData {
            collection: req.collection.clone(),
            baseline: g.baseline,
            current: g.current,
            sample_seed: g.seed,
            examples: g.examples,
            max_points: g.max_points,
            drift_request: req.drift.clone(),
            drift,
            confusion,
            margin,
            eval_skipped,
            monitors: g.monitors,
            eval_config: cfg.clone(),
        })
    }

    /// The window's points at one sequence (a seeded sample past `max_points`), read back from
    /// RocksDB. A point overwritten after the snapshot is taken as it is now, and left out when
    /// it has left the window or been deleted: the figures are computed from what is returned.
    fn window_points(
        &self,
        v: &Arc<Version>,
        spec: &WindowSpec,
        max_points: u32,
        seed: u64,
    ) -> Result<BundleWindow> {
        let snap = drift::window(v, spec)?;
        let rows = if snap.len() > max_points as usize {
            let mut rows = sample_rows(snap.len(), max_points as usize, seed);
            rows.sort_unstable();
            rows
        } else {
            (0..snap.len()).collect()
        };
        // The bundled vectors live in several copies at once (the points read back, the prepared
        // snapshot, the rendered files): refuse before reading what would not fit in half the
        // evaluation memory limit (the other half is the other window's).
        let need = window_bytes(rows.len(), v.dim());
        if let Some(limit) = self.config.eval.exact_memory_bytes
            && need > limit / 2
        {
            return Err(Error::FailedPrecondition(format!(
                "a bundle of {} points x {} dimensions per window needs about {} MiB, over the \
                 server's limit of {} MiB ([limits] evaluation_memory_bytes); lower max_points",
                rows.len(),
                v.dim(),
                (2 * need).div_ceil(1 << 20),
                limit / (1 << 20)
            )));
        }
        let ids: Vec<u64> = rows.iter().map(|&r| snap.ids[r]).collect();
        let mut points = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_BATCH) {
            points.extend(
                self.engine
                    .get(v.collection(), v.name(), chunk, true)?
                    .into_iter()
                    .filter(|p| spec.contains(p.timestamp_ms)),
            );
        }
        Ok(BundleWindow {
            spec: spec.clone(),
            info: self.engine.describe_version(v.collection(), v.name())?,
            seq: snap.seq,
            window_points: snap.len() as u64,
            sampled: rows.len() < snap.len(),
            points,
        })
    }
}
