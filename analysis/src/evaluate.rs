//! Evaluation of one version: snapshot its live points (ordered by id), then run
//! `emberdb-eval` on the evaluation pool. Label metrics use labelled points only
//! and exact neighbours; "approximate" mode takes neighbours from the HNSW graph
//! for versions too large for exact all-pairs, and reports its agreement with
//! exact search on a sample.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use emberdb_eval::knn::{Exact, Neighbor, all_neighbors, for_each_query};
use emberdb_eval::{Deadline, EvalError, confusion, margin, project, retrieval, stats};
use serde::{Deserialize, Serialize};

use emberdb_storage::{Error, Filter, ReadState, Result, SearchParams, Snapshot, Version};

use crate::poisoned;

/// Thresholds, owners and limits of the evaluation endpoints (the `[eval]`
/// section of the server's config file). Every field has a documented default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Versions with at most this many points are evaluated exactly in AUTO mode.
    pub exact_max_points: usize,
    /// Exact leave-one-out evaluations whose estimated working memory
    /// ([`exact_loo_bytes`]) exceeds this are refused (the server's `[limits]
    /// evaluation_memory_bytes`; not part of `[eval]`). None: no limit.
    #[serde(skip)]
    pub exact_memory_bytes: Option<u64>,
    /// Default margin threshold ("low" means strictly below).
    pub margin_threshold: f64,
    /// Errors are "concentrated" when the top three pairs hold at least this share.
    pub concentration_threshold: f64,
    /// HIGH_INTRA_CLASS_DISTANCE fires when a class's intra distance ≥ this × the median.
    pub intra_class_factor: f64,
    /// STRONG_CONFUSION_PAIR fires when count / size of the true class ≥ this ...
    pub confusion_pair_rate: f64,
    /// ... and at least this many points are confused.
    pub confusion_pair_min_count: usize,
    /// LOW_MARGIN_CLUSTER fires when a class's low-margin fraction ≥ this.
    pub low_margin_class_fraction: f64,
    /// Owners of each signal's work item.
    pub owner_intra_class: String,
    pub owner_confusion_pair: String,
    pub owner_low_margin: String,
    /// Sample size of the exact check that approximate mode reports.
    pub agreement_sample: usize,
    /// HNSW search breadth of approximate mode.
    pub approximate_ef: usize,
    /// Drift: `drifted` when drift_score exceeds this, unless the request calibrates.
    /// drift_score = max(MMD² / drift_mmd_threshold, KS drifted share / drift_ks_share_threshold),
    /// so at 1.0 one of Evidently's rules (`mmd`, `ratio` with KS) fires.
    pub drift_threshold: f64,
    /// Evidently's default for the unbiased, median-bandwidth MMD².
    pub drift_mmd_threshold: f64,
    /// Evidently's `ratio` default: share of dimensions drifted (KS, BH-corrected).
    pub drift_ks_share_threshold: f64,
    /// Drift: points per side in the MMD and fingerprint samples.
    pub drift_sample: usize,
    /// Drift: clean baseline splits behind calibration and the fingerprint z-scores.
    pub drift_splits: usize,
    /// Canary: a label metric (p@1, hit@k, MAP@R) dropping by more than this holds ...
    pub canary_hold_drop: f64,
    /// ... and by more than this rolls back.
    pub canary_rollback_drop: f64,
    /// Canary: the low-margin fraction rising by more than this holds ...
    pub canary_hold_margin_rise: f64,
    /// ... and by more than this rolls back.
    pub canary_rollback_margin_rise: f64,
    /// Canary: a relative margin (d2 − d1) / d2 below this is "low" (scale-free, so
    /// two models with different distance scales compare fairly).
    pub canary_relative_margin_threshold: f64,
    /// Canary: the candidate's ANN recall@k below this holds (an index problem, not a model one).
    pub canary_min_recall: f64,
    /// Canary: queries used for the ANN recall side.
    pub canary_recall_sample: usize,
    /// Owners of canary findings.
    pub owner_model_quality: String,
    pub owner_index: String,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            exact_max_points: 250_000,
            exact_memory_bytes: None,
            margin_threshold: 0.05,
            concentration_threshold: 0.5,
            intra_class_factor: 1.5,
            confusion_pair_rate: 0.1,
            confusion_pair_min_count: 3,
            low_margin_class_fraction: 0.2,
            owner_intra_class: "Data Ops".into(),
            owner_confusion_pair: "CV / Product".into(),
            owner_low_margin: "ML Team".into(),
            agreement_sample: 1000,
            approximate_ef: 128,
            drift_threshold: 1.0,
            drift_mmd_threshold: 0.015,
            drift_ks_share_threshold: 0.2,
            drift_sample: 1000,
            drift_splits: 20,
            canary_hold_drop: 0.005,
            canary_rollback_drop: 0.02,
            canary_hold_margin_rise: 0.01,
            canary_rollback_margin_rise: 0.05,
            canary_relative_margin_threshold: 0.05,
            canary_min_recall: 0.9,
            canary_recall_sample: 2000,
            owner_model_quality: "ML Team".into(),
            owner_index: "Platform on-call".into(),
        }
    }
}

/// Requested neighbour mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModeRequest {
    #[default]
    Auto,
    Exact,
    Approximate,
}

/// The mode that ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Exact,
    Approximate,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Exact => "exact",
            Mode::Approximate => "approximate",
        }
    }
}

pub(crate) fn deadline_error(e: EvalError) -> Error {
    match e {
        EvalError::DeadlineExceeded { done, total } => Error::DeadlineExceeded(format!(
            "evaluation stopped after {done} of {total} blocks; raise the deadline or set sample_size"
        )),
    }
}

pub(crate) use emberdb_eval::sample::rows as sample_rows;

/// Estimated peak working memory of an exact leave-one-out pass over `n` points of `dim`
/// dimensions: two f32 copies of the vectors (the snapshot and its labelled rows), the neighbour
/// lists and row bookkeeping (96 bytes a row), and 32 MiB of GEMM tiles and per-thread buffers.
pub fn exact_loo_bytes(n: usize, dim: usize) -> u64 {
    let n = n as u64;
    2 * n * dim as u64 * 4 + n * 96 + (32 << 20)
}

pub(crate) fn resolve_mode(
    req: ModeRequest,
    n: usize,
    cfg: &EvalConfig,
    v: &Version,
) -> Result<Mode> {
    match req {
        ModeRequest::Exact => Ok(Mode::Exact),
        ModeRequest::Approximate if !v.metric().uses_graph() => Err(Error::invalid(
            "mode",
            "approximate mode needs an HNSW graph; METRIC_DOT versions are evaluated exactly",
        )),
        ModeRequest::Approximate => Ok(Mode::Approximate),
        ModeRequest::Auto if n <= cfg.exact_max_points || !v.metric().uses_graph() => {
            Ok(Mode::Exact)
        }
        ModeRequest::Auto => Ok(Mode::Approximate),
    }
}

/// Leave-one-out neighbours (`m` per row) of every row of `snap`, exact or from the graph.
/// In approximate mode distances are re-measured in f64 from the snapshot.
fn loo_neighbors(
    v: &Version,
    snap: &Snapshot,
    m: usize,
    mode: Mode,
    ef: usize,
    deadline: &Deadline,
) -> Result<Vec<Vec<Neighbor>>> {
    match mode {
        Mode::Exact => all_neighbors(snap.data(), snap.space, m, deadline).map_err(deadline_error),
        Mode::Approximate => {
            use rayon::prelude::*;
            let row_of: HashMap<u64, usize> = snap
                .ids
                .iter()
                .enumerate()
                .map(|(r, id)| (*id, r))
                .collect();
            let labels: Vec<String> = {
                let mut ls: Vec<String> = snap
                    .labels
                    .iter()
                    .filter(|&&l| l != 0)
                    .map(|&l| snap.label_names[l as usize].clone())
                    .collect();
                ls.sort();
                ls.dedup();
                ls
            };
            // Restrict to the snapshot's rows only when it leaves some points out (the
            // unlabelled ones): an unfiltered search keeps hnsw_rs's fast path.
            let (live, _) = v.counts()?;
            let restrict = (snap.len() as u64) < live;
            let filter = restrict.then(|| Filter {
                labels,
                metadata: BTreeMap::new(),
            });
            let data = snap.data();
            (0..snap.len())
                .into_par_iter()
                .map(|r| {
                    if r % 1024 == 0 && deadline.expired() {
                        return Err(Error::DeadlineExceeded(
                            "approximate evaluation stopped".into(),
                        ));
                    }
                    let params = SearchParams {
                        k: m + 1,
                        ef: ef.max(m + 1),
                        exact: false,
                        filter: filter.as_ref(),
                    };
                    // The snapshot holds prepared vectors; search prepares again, which is idempotent.
                    let hits = v.search(data.row(r), params)?;
                    let mut out: Vec<Neighbor> = hits
                        .iter()
                        .filter_map(|h| row_of.get(&h.id).copied())
                        .filter(|&j| j != r)
                        .map(|j| {
                            (
                                j,
                                emberdb_eval::exact_distance(snap.space, data.row(r), data.row(j)),
                            )
                        })
                        .collect();
                    out.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                    out.truncate(m);
                    Ok(out)
                })
                .collect()
        }
    }
}

/// Share of a seeded sample whose approximate 1-NN label equals the exact one.
fn agreement(
    snap: &Snapshot,
    approx: &[Vec<Neighbor>],
    sample: usize,
    deadline: &Deadline,
) -> Result<f64> {
    let rows = sample_rows(snap.len(), sample, 7);
    let ex = Exact::new(snap.data(), snap.space);
    let exact = for_each_query(snap.data(), snap.space, &rows, deadline, |q, row| {
        ex.top_m(q, row, 1, |_| true)
    })
    .map_err(deadline_error)?;
    let agree = rows
        .iter()
        .zip(&exact)
        .filter(|(r, e)| {
            let a = approx[**r].first().map(|x| snap.labels[x.0]);
            let b = e.first().map(|x| snap.labels[x.0]);
            a == b
        })
        .count();
    Ok(agree as f64 / rows.len().max(1) as f64)
}

// ---- reports (domain types; the server converts them) ----

#[derive(Debug, Clone, Default)]
pub struct RecallParams {
    pub k: Option<u32>,
    pub ef: Option<u32>,
    pub sample_size: Option<u32>,
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecallReport {
    pub mode: Mode,
    pub recall_at_k: f64,
    pub precision_at_1: f64,
    pub hit_at_k: f64,
    pub mrr: f64,
    pub map_at_r: f64,
    pub knn_accuracy: f64,
    pub query_ids: Vec<u64>,
    pub ann_latency_p50_ms: f64,
    pub exact_latency_p50_ms: f64,
    pub k: u32,
    pub ef: u32,
    pub recall_min: f64,
    pub recall_p5: f64,
    pub queries_below_1: u32,
    pub labelled_queries: u32,
    pub map_at_r_queries: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MarginSample {
    pub id: u64,
    pub label: String,
    pub nearest_id: u64,
    pub nearest_label: String,
    pub d1: f64,
    pub second_id: u64,
    pub second_label: String,
    pub d2: f64,
    pub margin: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClassMarginOut {
    pub label: String,
    pub count: u64,
    pub mean_margin: f64,
    pub low_margin_fraction: f64,
    pub histogram: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MarginOut {
    pub mode: Mode,
    pub mean: f64,
    pub median: f64,
    pub p10: f64,
    pub low_margin_count: u64,
    pub low_margin_fraction: f64,
    pub classes: Vec<ClassMarginOut>,
    pub lowest: Vec<MarginSample>,
    pub threshold: f64,
    pub points: u64,
    pub approximate_agreement: Option<f64>,
    pub histogram_edges: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PairOut {
    pub true_label: String,
    pub predicted_label: String,
    pub count: u64,
    pub rate: f64,
    pub share_of_errors: f64,
    pub example_ids: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClassOut {
    pub label: String,
    pub count: u64,
    pub accuracy: f64,
    pub intra_class_distance: f64,
    pub nearest_class: String,
    pub separation: f64,
    pub farthest_ids: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConfusionOut {
    pub mode: Mode,
    pub accuracy: f64,
    pub errors: u64,
    pub pairs: Vec<PairOut>,
    pub classes: Vec<ClassOut>,
    pub concentration: f64,
    pub concentrated: bool,
    pub points: u64,
    pub approximate_agreement: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    HighIntraClassDistance,
    StrongConfusionPair,
    LowMarginCluster,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActionItem {
    pub signal: Signal,
    pub subject: String,
    pub value: f64,
    pub threshold: f64,
    pub meaning: String,
    pub action: String,
    pub owner: String,
    pub evidence_ids: Vec<u64>,
    pub severity: f64,
}

impl ActionItem {
    /// A ready-to-paste ticket.
    pub fn markdown(&self, collection: &str, version: &str) -> String {
        let signal = match self.signal {
            Signal::HighIntraClassDistance => "High intra-class distance",
            Signal::StrongConfusionPair => "Strong confusion pair",
            Signal::LowMarginCluster => "Low-margin cluster",
        };
        let ids: Vec<String> = self.evidence_ids.iter().map(u64::to_string).collect();
        format!(
            "### {signal}: {subject}\n\n\
             - **Collection / version:** `{collection}` / `{version}`\n\
             - **Signal:** {signal}, value {value:.4} (threshold {threshold:.4}, severity {severity:.2})\n\
             - **Meaning:** {meaning}\n\
             - **Action:** {action}\n\
             - **Owner:** {owner}\n\
             - **Evidence ids:** {ids}\n",
            subject = self.subject,
            value = self.value,
            threshold = self.threshold,
            severity = self.severity,
            meaning = self.meaning,
            action = self.action,
            owner = self.owner,
            ids = if ids.is_empty() {
                "(none)".into()
            } else {
                ids.join(", ")
            },
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActionsOut {
    pub mode: Mode,
    pub items: Vec<ActionItem>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProjectedOut {
    pub id: u64,
    pub label: String,
    pub x: f64,
    pub y: f64,
}

// ---- the computations ----

pub(crate) fn recall(v: &Version, p: &RecallParams, deadline: &Deadline) -> Result<RecallReport> {
    recall_on(v, &v.snapshot()?, p, deadline)
}

/// [`recall`] over a snapshot the caller already took.
pub(crate) fn recall_on(
    v: &Version,
    snap: &Snapshot,
    p: &RecallParams,
    deadline: &Deadline,
) -> Result<RecallReport> {
    let plan = RecallPlan::new(snap, p)?;
    let exact = plan.exact_side(snap, deadline, false)?;
    // ANN side, on the evaluation pool.
    let ann = plan.ann_side(v, snap)?;
    Ok(plan.report(snap, exact, ann).0)
}

/// One recall measurement, in three steps a caller can place on different threads: the ANN
/// side searches the version (store lock, so never on an idle-class thread), the exact side and
/// the report only read the snapshot.
pub(crate) struct RecallPlan {
    pub rows: Vec<usize>,
    k_req: usize,
    k_eff: usize,
    ef: usize,
}

/// Per sampled query: the exact top-k ids, the label metrics (labelled queries), and the
/// margin (second minus first exact distance) when asked for.
pub(crate) type ExactSide = Vec<(
    Vec<u64>,
    Option<(retrieval::QueryLabelMetrics, usize)>,
    Option<f64>,
)>;

impl RecallPlan {
    pub fn new(snap: &Snapshot, p: &RecallParams) -> Result<Self> {
        let n = snap.len();
        if n < 2 {
            return Err(Error::FailedPrecondition(
                "recall needs at least 2 points".into(),
            ));
        }
        let k = p.k.unwrap_or(10);
        let (k_req, ef) = emberdb_storage::validate::k_and_ef(k, p.ef.unwrap_or(0))?;
        Ok(RecallPlan {
            rows: sample_rows(n, p.sample_size.unwrap_or(0) as usize, p.seed.unwrap_or(0)),
            k_req,
            k_eff: k_req.min(n - 1),
            ef,
        })
    }

    /// One blocked pass gives the plain top-k, the labelled ranking, and (`margins`) each
    /// query's nearest-two margin.
    pub fn exact_side(
        &self,
        snap: &Snapshot,
        deadline: &Deadline,
        margins: bool,
    ) -> Result<(ExactSide, f64)> {
        let (k_req, k_eff) = (self.k_req, self.k_eff);
        let data = snap.data();
        let mut class_size: HashMap<u32, usize> = HashMap::new();
        for &l in snap.labels.iter().filter(|&&l| l != 0) {
            *class_size.entry(l).or_default() += 1;
        }
        let started = Instant::now();
        let ex = Exact::new(data, snap.space);
        let top = if margins { k_eff.max(2) } else { k_eff };
        let exact = for_each_query(data, snap.space, &self.rows, deadline, |q, row| {
            let nn = ex.top_m(q, row, top, |_| true);
            let margin = (margins && nn.len() >= 2).then(|| nn[1].1 - nn[0].1);
            let all: Vec<u64> = nn.iter().take(k_eff).map(|x| snap.ids[x.0]).collect();
            let ql = snap.labels[q];
            let labelled = (ql != 0).then(|| {
                let r = class_size[&ql] - 1;
                let ranked: Vec<u32> = ex
                    .top_m(q, row, k_req.max(r), |j| snap.labels[j] != 0)
                    .iter()
                    .map(|x| snap.labels[x.0])
                    .collect();
                (retrieval::label_metrics(ql, &ranked, k_req, r), r)
            });
            (all, labelled, margin)
        })
        .map_err(deadline_error)?;
        let exact_ms = started.elapsed().as_secs_f64() * 1000.0 / self.rows.len().max(1) as f64;
        Ok((exact, exact_ms))
    }

    /// The ANN hits of each sampled query (its own id dropped, or the last hit) and the
    /// search's milliseconds, searched in parallel on the calling pool.
    pub fn ann_side(&self, v: &Version, snap: &Snapshot) -> Result<Vec<(Vec<u64>, f64)>> {
        use rayon::prelude::*;
        let (k_eff, ef) = (self.k_eff, self.ef);
        let data = snap.data();
        self.rows
            .par_iter()
            .map(|&q| {
                let t = Instant::now();
                let hits = v.search(
                    data.row(q),
                    SearchParams {
                        k: k_eff + 1,
                        ef: ef.max(k_eff + 1),
                        exact: false,
                        filter: None,
                    },
                )?;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                let me = snap.ids[q];
                let mut ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
                match ids.iter().position(|&id| id == me) {
                    Some(i) => {
                        ids.remove(i);
                    }
                    None => {
                        ids.pop();
                    }
                }
                ids.truncate(k_eff);
                Ok((ids, ms))
            })
            .collect()
    }

    /// The report, and the margins the exact side measured (empty unless asked for).
    pub fn report(
        &self,
        snap: &Snapshot,
        (exact, exact_ms): (ExactSide, f64),
        ann: Vec<(Vec<u64>, f64)>,
    ) -> (RecallReport, Vec<f64>) {
        let (rows, k_eff, ef) = (&self.rows, self.k_eff, self.ef);
        let mut recalls = Vec::with_capacity(rows.len());
        let mut lat = Vec::with_capacity(rows.len());
        for ((ids, ms), (e, _, _)) in ann.into_iter().zip(&exact) {
            recalls.push(retrieval::recall_at_k(&ids, e, k_eff));
            lat.push(ms);
        }
        lat.sort_by(f64::total_cmp);
        let mut sorted_recalls = recalls.clone();
        sorted_recalls.sort_by(f64::total_cmp);
        let lm: Vec<&(retrieval::QueryLabelMetrics, usize)> =
            exact.iter().filter_map(|(_, l, _)| l.as_ref()).collect();
        let map_vals: Vec<f64> = lm.iter().filter_map(|(m, _)| m.map_at_r).collect();
        let margins: Vec<f64> = exact.iter().filter_map(|(_, _, m)| *m).collect();
        let report = RecallReport {
            mode: Mode::Exact,
            recall_at_k: stats::mean(recalls.iter().copied()),
            precision_at_1: stats::mean(lm.iter().map(|(m, _)| m.precision_at_1)),
            hit_at_k: stats::mean(lm.iter().map(|(m, _)| m.hit_at_k)),
            mrr: stats::mean(lm.iter().map(|(m, _)| m.mrr)),
            map_at_r: stats::mean(map_vals.iter().copied()),
            knn_accuracy: stats::mean(lm.iter().map(|(m, _)| m.knn_correct)),
            query_ids: rows.iter().map(|&r| snap.ids[r]).collect(),
            ann_latency_p50_ms: stats::percentile_sorted(&lat, 50.0),
            exact_latency_p50_ms: exact_ms,
            k: k_eff as u32,
            ef: ef as u32,
            recall_min: sorted_recalls.first().copied().unwrap_or(f64::NAN),
            recall_p5: stats::percentile_sorted(&sorted_recalls, 5.0),
            queries_below_1: recalls.iter().filter(|&&r| r < 1.0).count() as u32,
            labelled_queries: lm.len() as u32,
            map_at_r_queries: map_vals.len() as u32,
        };
        (report, margins)
    }
}

pub(crate) fn margin_out(
    snap: &Snapshot,
    nn: &[Vec<Neighbor>],
    threshold: f64,
    lowest_n: usize,
    mode: Mode,
) -> MarginOut {
    let r = margin::margin_report(nn, &snap.labels, threshold, lowest_n);
    let name = |l: u32| snap.label_names[l as usize].clone();
    MarginOut {
        mode,
        mean: r.mean,
        median: r.median,
        p10: r.p10,
        low_margin_count: r.low_margin_count as u64,
        low_margin_fraction: r.low_margin_fraction,
        classes: r
            .classes
            .iter()
            .map(|c| ClassMarginOut {
                label: name(c.label),
                count: c.count as u64,
                mean_margin: c.mean_margin,
                low_margin_fraction: c.low_margin_fraction,
                histogram: c.histogram.clone(),
            })
            .collect(),
        lowest: r
            .lowest
            .iter()
            .map(|m| MarginSample {
                id: snap.ids[m.row],
                label: snap.label(m.row).into(),
                nearest_id: snap.ids[m.nearest],
                nearest_label: snap.label(m.nearest).into(),
                d1: m.d1,
                second_id: snap.ids[m.second],
                second_label: snap.label(m.second).into(),
                d2: m.d2,
                margin: m.margin,
            })
            .collect(),
        threshold,
        points: r.items.len() as u64,
        approximate_agreement: None,
        histogram_edges: r.histogram_edges,
    }
}

pub(crate) fn confusion_out(
    snap: &Snapshot,
    nn: &[Vec<Neighbor>],
    cfg: &EvalConfig,
    top_pairs: usize,
    mode: Mode,
) -> ConfusionOut {
    let nearest: Vec<Option<Neighbor>> = nn.iter().map(|x| x.first().copied()).collect();
    let r = confusion::confusion_report(snap.data(), &nearest, &snap.labels);
    let name = |l: u32| snap.label_names[l as usize].clone();
    let take = if top_pairs == 0 {
        usize::MAX
    } else {
        top_pairs
    };
    ConfusionOut {
        mode,
        accuracy: r.accuracy,
        errors: r.errors as u64,
        pairs: r
            .pairs
            .iter()
            .take(take)
            .map(|p| PairOut {
                true_label: name(p.true_label),
                predicted_label: name(p.predicted_label),
                count: p.count as u64,
                rate: p.rate,
                share_of_errors: p.share_of_errors,
                example_ids: p.rows.iter().take(10).map(|&r| snap.ids[r]).collect(),
            })
            .collect(),
        classes: r
            .classes
            .iter()
            .map(|c| ClassOut {
                label: name(c.label),
                count: c.count as u64,
                accuracy: c.accuracy,
                intra_class_distance: c.intra_class_distance,
                nearest_class: c.nearest_class.map(name).unwrap_or_default(),
                separation: c.separation,
                farthest_ids: c.farthest_rows.iter().map(|&r| snap.ids[r]).collect(),
            })
            .collect(),
        concentration: r.concentration,
        concentrated: r.errors > 0 && r.concentration >= cfg.concentration_threshold,
        points: snap.len() as u64,
        approximate_agreement: None,
    }
}

/// Cached leave-one-out neighbours of a version's labelled snapshot, with the state they saw:
/// Confusion, Margin and Actions share one all-pairs pass until the next write (approximate
/// mode: until the graph changes too, e.g. after a repair).
#[derive(Debug, Clone)]
struct LooCache {
    state: ReadState,
    seq: u64,
    mode: Mode,
    nn: Arc<Vec<Vec<Neighbor>>>,
    agreement: Option<f64>,
}

/// The last leave-one-out lists of each version (by version id). An entry goes when its version
/// is dropped (checked on every insert), so the cache never outlives the data it describes.
#[derive(Default)]
pub(crate) struct LooCaches(Mutex<HashMap<u64, (Weak<Version>, LooCache)>>);

impl LooCaches {
    fn get(&self, v: &Version, state: &ReadState, mode: Mode) -> Result<Option<LooCache>> {
        let map = self.0.lock().map_err(poisoned)?;
        Ok(map.get(&v.id()).map(|e| &e.1).and_then(|c| {
            let fresh = match mode {
                Mode::Exact => c.state.same_points(state),
                Mode::Approximate => c.state == *state,
            };
            (fresh && c.mode == mode).then(|| c.clone())
        }))
    }

    fn put(&self, v: &Arc<Version>, c: LooCache) -> Result<()> {
        let mut map = self.0.lock().map_err(poisoned)?;
        map.retain(|_, (w, _)| w.strong_count() > 0);
        map.insert(v.id(), (Arc::downgrade(v), c));
        Ok(())
    }
}

/// The labelled snapshot, its leave-one-out neighbours, the mode that ran and
/// (approximate mode) the measured 1-NN label agreement with exact search.
struct Loo {
    snap: Snapshot,
    nn: Arc<Vec<Vec<Neighbor>>>,
    mode: Mode,
    agreement: Option<f64>,
}

/// Shared set-up of margin, confusion and actions: the labelled snapshot and its
/// leave-one-out neighbours (two per row gives both 1-NN and margin).
fn loo(
    v: &Arc<Version>,
    cfg: &EvalConfig,
    cache: &LooCaches,
    mode: ModeRequest,
    deadline: &Deadline,
) -> Result<Loo> {
    // Refuse before the snapshot is copied: the live count bounds the labelled rows.
    if let Some(limit) = cfg.exact_memory_bytes {
        let (live, _) = v.counts()?;
        let n = usize::try_from(live).unwrap_or(usize::MAX);
        if resolve_mode(mode, n, cfg, v)? == Mode::Exact {
            let need = exact_loo_bytes(n, v.dim());
            if need > limit {
                return Err(Error::FailedPrecondition(format!(
                    "an exact evaluation of {n} points x {} dimensions needs about {} MiB of working \
                     memory, over the server's limit of {} MiB ([limits] evaluation_memory_bytes); \
                     use mode = approximate",
                    v.dim(),
                    need.div_ceil(1 << 20),
                    limit / (1 << 20)
                )));
            }
        }
    }
    // Read before the snapshot: a write in between makes the next state differ.
    let state = v.read_state()?;
    let snap = v.snapshot()?.labelled();
    if snap.len() < 3 {
        return Err(Error::FailedPrecondition(
            "this evaluation needs at least 3 points".into(),
        ));
    }
    let mode = resolve_mode(mode, snap.len(), cfg, v)?;
    if let Some(c) = cache.get(v, &state, mode)?.filter(|c| c.seq == snap.seq) {
        return Ok(Loo {
            snap,
            nn: c.nn,
            mode,
            agreement: c.agreement,
        });
    }
    let nn = Arc::new(loo_neighbors(
        v,
        &snap,
        2,
        mode,
        cfg.approximate_ef,
        deadline,
    )?);
    let agreement = match mode {
        Mode::Exact => None,
        Mode::Approximate => Some(agreement(&snap, &nn, cfg.agreement_sample, deadline)?),
    };
    cache.put(
        v,
        LooCache {
            state,
            seq: snap.seq,
            mode,
            nn: nn.clone(),
            agreement,
        },
    )?;
    Ok(Loo {
        snap,
        nn,
        mode,
        agreement,
    })
}

pub(crate) fn margin(
    v: &Arc<Version>,
    cfg: &EvalConfig,
    cache: &LooCaches,
    threshold: Option<f64>,
    lowest_n: Option<u32>,
    mode: ModeRequest,
    deadline: &Deadline,
) -> Result<MarginOut> {
    let threshold = threshold.unwrap_or(cfg.margin_threshold);
    if !threshold.is_finite() || threshold < 0.0 {
        return Err(Error::invalid(
            "threshold",
            format!("must be a finite number ≥ 0, got {threshold}"),
        ));
    }
    let lowest_n = lowest_n.unwrap_or(20).min(10_000) as usize;
    let l = loo(v, cfg, cache, mode, deadline)?;
    let mut out = margin_out(&l.snap, &l.nn, threshold, lowest_n, l.mode);
    out.approximate_agreement = l.agreement;
    Ok(out)
}

pub(crate) fn confusion(
    v: &Arc<Version>,
    cfg: &EvalConfig,
    cache: &LooCaches,
    top_pairs: Option<u32>,
    mode: ModeRequest,
    deadline: &Deadline,
) -> Result<ConfusionOut> {
    let l = loo(v, cfg, cache, mode, deadline)?;
    let mut out = confusion_out(&l.snap, &l.nn, cfg, top_pairs.unwrap_or(0) as usize, l.mode);
    out.approximate_agreement = l.agreement;
    Ok(out)
}

pub(crate) fn actions(
    v: &Arc<Version>,
    cfg: &EvalConfig,
    cache: &LooCaches,
    mode: ModeRequest,
    deadline: &Deadline,
) -> Result<ActionsOut> {
    let Loo { snap, nn, mode, .. } = loo(v, cfg, cache, mode, deadline)?;
    let c = confusion_out(&snap, &nn, cfg, 0, mode);
    let m = margin_out(&snap, &nn, cfg.margin_threshold, usize::MAX, mode);
    let mut items = Vec::new();

    let mut intra: Vec<f64> = c.classes.iter().map(|x| x.intra_class_distance).collect();
    intra.sort_by(f64::total_cmp);
    let median = stats::percentile_sorted(&intra, 50.0);
    if c.classes.len() >= 2 && median > 0.0 {
        let threshold = cfg.intra_class_factor * median;
        for cl in c
            .classes
            .iter()
            .filter(|x| x.intra_class_distance >= threshold)
        {
            items.push(ActionItem {
                signal: Signal::HighIntraClassDistance,
                subject: cl.label.clone(),
                value: cl.intra_class_distance,
                threshold,
                meaning: format!(
                    "same-class samples are inconsistent (spread {:.3} is {:.2}x the median class; spread / separation to '{}' = {:.2})",
                    cl.intra_class_distance,
                    cl.intra_class_distance / median,
                    cl.nearest_class,
                    cl.intra_class_distance / cl.separation
                ),
                action: "clean the dataset (remove low-quality samples); start with the evidence ids, the members farthest from the class centroid".into(),
                owner: cfg.owner_intra_class.clone(),
                evidence_ids: cl.farthest_ids.clone(),
                severity: cl.intra_class_distance / threshold,
            });
        }
    }
    for p in c.pairs.iter().filter(|p| {
        p.rate >= cfg.confusion_pair_rate && p.count as usize >= cfg.confusion_pair_min_count
    }) {
        items.push(ActionItem {
            signal: Signal::StrongConfusionPair,
            subject: format!("{} -> {}", p.true_label, p.predicted_label),
            value: p.rate,
            threshold: cfg.confusion_pair_rate,
            meaning: format!(
                "two classes overlap heavily: {} of '{}' ({:.1}%) have a '{}' nearest neighbour ({:.1}% of all errors)",
                p.count,
                p.true_label,
                p.rate * 100.0,
                p.predicted_label,
                p.share_of_errors * 100.0
            ),
            action: "add discriminative features or review labelling of the pair".into(),
            owner: cfg.owner_confusion_pair.clone(),
            evidence_ids: p.example_ids.clone(),
            severity: p.rate / cfg.confusion_pair_rate,
        });
    }
    for cl in m
        .classes
        .iter()
        .filter(|x| x.low_margin_fraction >= cfg.low_margin_class_fraction)
    {
        let evidence: Vec<u64> = m
            .lowest
            .iter()
            .filter(|s| s.label == cl.label)
            .take(10)
            .map(|s| s.id)
            .collect();
        items.push(ActionItem {
            signal: Signal::LowMarginCluster,
            subject: cl.label.clone(),
            value: cl.low_margin_fraction,
            threshold: cfg.low_margin_class_fraction,
            meaning: format!(
                "the class boundary is unstable: {:.1}% of '{}' have a 1-NN margin below {} (mean margin {:.4})",
                cl.low_margin_fraction * 100.0,
                cl.label,
                cfg.margin_threshold,
                cl.mean_margin
            ),
            action: "targeted data collection or fine-tuning around the evidence samples".into(),
            owner: cfg.owner_low_margin.clone(),
            evidence_ids: evidence,
            severity: cl.low_margin_fraction / cfg.low_margin_class_fraction,
        });
    }
    items.sort_by(|a, b| {
        b.severity
            .total_cmp(&a.severity)
            .then(a.subject.cmp(&b.subject))
    });
    Ok(ActionsOut { mode, items })
}

pub(crate) fn project(
    v: &Version,
    sample_size: Option<u32>,
    seed: Option<u64>,
) -> Result<Vec<ProjectedOut>> {
    const MAX_POINTS: usize = 20_000;
    let snap = v.snapshot()?;
    let want = match sample_size.unwrap_or(0) as usize {
        0 => snap.len().min(MAX_POINTS),
        s => s.min(MAX_POINTS),
    };
    let rows = sample_rows(snap.len(), want, seed.unwrap_or(0));
    let xy = project::pca_2d(snap.data(), &rows);
    Ok(rows
        .iter()
        .zip(xy)
        .map(|(&r, (x, y))| ProjectedOut {
            id: snap.ids[r],
            label: snap.label(r).into(),
            x,
            y,
        })
        .collect())
}
