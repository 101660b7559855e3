//! Drift between two windows: a window is one version's live points, optionally
//! cut to a `timestamp_ms` range. The math lives in `emberdb_eval::drift`; this
//! module selects the points, aligns the two label tables and checks the request.

use std::collections::HashMap;

pub use emberdb_eval::drift::ShiftKind;
use emberdb_eval::drift::{self as math, DriftParams};
use emberdb_eval::{Data, Deadline};

use emberdb_storage::{Error, Result, Snapshot, Version};

use crate::evaluate::EvalConfig;

/// Which points a window holds: `from_ms` inclusive, `to_ms` exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowSpec {
    pub version: String,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

impl WindowSpec {
    pub(crate) fn validate(&self, field: &str) -> Result<()> {
        emberdb_storage::validate::name(&format!("{field}.version"), &self.version)?;
        if let (Some(f), Some(t)) = (self.from_ms, self.to_ms)
            && f >= t
        {
            return Err(Error::invalid(
                format!("{field}.to_ms"),
                format!("must be greater than from_ms ({f}), got {t}"),
            ));
        }
        Ok(())
    }

    pub(crate) fn contains(&self, ts: i64) -> bool {
        self.from_ms.is_none_or(|f| ts >= f) && self.to_ms.is_none_or(|t| ts < t)
    }
}

#[derive(Debug, Clone, Default)]
pub struct DriftRequest {
    pub threshold: Option<f64>,
    pub calibrate: bool,
    pub sample_size: Option<u32>,
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClassDriftOut {
    pub label: String,
    pub baseline_count: u64,
    pub current_count: u64,
    pub euclidean: Option<f64>,
    pub cosine: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DriftOut {
    pub baseline_points: u64,
    pub current_points: u64,
    pub centroid_euclidean: f64,
    pub centroid_cosine: Option<f64>,
    pub classes: Vec<ClassDriftOut>,
    pub ks_max: f64,
    pub ks_mean: f64,
    pub ks_drifted_share: f64,
    pub mmd2: f64,
    pub mmd_sample: u32,
    pub norm_shift: f64,
    pub norm_ratio: f64,
    pub drift_score: f64,
    pub threshold: f64,
    pub threshold_calibrated: bool,
    pub drifted: bool,
    pub primary: ShiftKind,
    /// (kind, z, statistic) for every kind.
    pub scores: Vec<(ShiftKind, f64, f64)>,
    pub calibration_splits: u32,
}

/// The largest sample per side a request may ask for (the MMD is O(s²·D)).
pub const MAX_DRIFT_SAMPLE: u32 = 5000;

/// Rows of a version snapshot that fall in the window.
pub(crate) fn window(v: &Version, spec: &WindowSpec) -> Result<Snapshot> {
    let snap = v.snapshot()?;
    let keep: Vec<usize> = (0..snap.len())
        .filter(|&r| spec.contains(snap.timestamps[r]))
        .collect();
    Ok(snap.rows(&keep))
}

/// Refuses two windows of different embedding spaces and out-of-range parameters.
pub(crate) fn check(
    base_v: &Version,
    cur_v: &Version,
    req: &DriftRequest,
    cfg: &EvalConfig,
) -> Result<()> {
    if base_v.dim() != cur_v.dim() || base_v.metric() != cur_v.metric() {
        return Err(Error::FailedPrecondition(format!(
            "drift compares vectors of one embedding space: baseline version '{}' is {}-d {}, current version '{}' is {}-d {}; compare neighbour structure with CompareVersions instead",
            base_v.name(),
            base_v.dim(),
            base_v.metric().name(),
            cur_v.name(),
            cur_v.dim(),
            cur_v.metric().name()
        )));
    }
    if let Some(t) = req.threshold
        && (!t.is_finite() || t < 0.0)
    {
        return Err(Error::invalid(
            "threshold",
            format!("must be a finite number ≥ 0, got {t}"),
        ));
    }
    let sample = req.sample_size.map_or(cfg.drift_sample as u32, |s| s);
    if sample == 0 || sample > MAX_DRIFT_SAMPLE {
        return Err(Error::invalid(
            "sample_size",
            format!("must be between 1 and {MAX_DRIFT_SAMPLE}, got {sample}"),
        ));
    }
    Ok(())
}

pub(crate) fn drift(
    base_v: &Version,
    base: &WindowSpec,
    cur_v: &Version,
    cur: &WindowSpec,
    req: &DriftRequest,
    cfg: &EvalConfig,
    deadline: &Deadline,
) -> Result<DriftOut> {
    check(base_v, cur_v, req, cfg)?;
    drift_on(
        &window(base_v, base)?,
        &window(cur_v, cur)?,
        req,
        cfg,
        deadline,
    )
}

/// Drift between two window snapshots (same dimension; checked by the caller).
pub(crate) fn drift_on(
    b: &Snapshot,
    c: &Snapshot,
    req: &DriftRequest,
    cfg: &EvalConfig,
    deadline: &Deadline,
) -> Result<DriftOut> {
    let sample = req.sample_size.map_or(cfg.drift_sample as u32, |s| s);
    for (field, s) in [("baseline", b), ("current", c)] {
        if s.len() < 4 {
            return Err(Error::FailedPrecondition(format!(
                "{field} window holds {} points; drift needs at least 4",
                s.len()
            )));
        }
    }
    if deadline.expired() {
        return Err(Error::DeadlineExceeded(
            "drift stopped before it began".into(),
        ));
    }

    // One label numbering for both sides.
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut map = |snap: &Snapshot| -> Vec<u32> {
        snap.labels
            .iter()
            .map(|&l| {
                let name = &snap.label_names[l as usize];
                if let Some(&id) = ids.get(name) {
                    return id;
                }
                names.push(name.clone());
                let id = names.len() as u32 - 1;
                ids.insert(name.clone(), id);
                id
            })
            .collect()
    };
    let lb = map(b);
    let lc = map(c);
    let bw = math::Window {
        data: Data::new(b.dim, &b.vectors),
        labels: &lb,
    };
    let cw = math::Window {
        data: Data::new(c.dim, &c.vectors),
        labels: &lc,
    };
    let r = math::drift(
        bw,
        cw,
        DriftParams {
            sample: sample as usize,
            splits: cfg.drift_splits,
            seed: req.seed.unwrap_or(0),
            ks_alpha: 0.05,
            mmd_threshold: cfg.drift_mmd_threshold,
            ks_share_threshold: cfg.drift_ks_share_threshold,
        },
    );
    if deadline.expired() {
        return Err(Error::DeadlineExceeded(
            "drift ran past the deadline".into(),
        ));
    }
    let (threshold, calibrated) = if req.calibrate {
        let mut null = r.null_scores.clone();
        null.sort_by(f64::total_cmp);
        if null.len() < 2 {
            return Err(Error::FailedPrecondition(
                "calibration needs a baseline of at least 8 points".into(),
            ));
        }
        (emberdb_eval::stats::percentile_sorted(&null, 95.0), true)
    } else {
        (req.threshold.unwrap_or(cfg.drift_threshold), false)
    };
    let mut classes: Vec<ClassDriftOut> = r
        .classes
        .iter()
        .map(|k| ClassDriftOut {
            label: names[k.label as usize].clone(),
            baseline_count: k.baseline_count,
            current_count: k.current_count,
            euclidean: k.euclidean,
            cosine: k.cosine,
        })
        .collect();
    classes.sort_by(|a, b| a.label.cmp(&b.label));
    Ok(DriftOut {
        baseline_points: b.len() as u64,
        current_points: c.len() as u64,
        centroid_euclidean: r.centroid_euclidean,
        centroid_cosine: r.centroid_cosine,
        classes,
        ks_max: r.ks_max,
        ks_mean: r.ks_mean,
        ks_drifted_share: r.ks_drifted_share,
        mmd2: r.mmd2,
        mmd_sample: r.sample as u32,
        norm_shift: r.norm_shift,
        norm_ratio: r.norm_ratio,
        drift_score: r.score,
        threshold,
        threshold_calibrated: calibrated,
        drifted: r.score > threshold,
        primary: r.primary,
        scores: r.scores.clone(),
        calibration_splits: r.null_scores.len() as u32,
    })
}
