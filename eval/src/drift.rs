//! Distribution shift between two point sets ("windows"): centroid drift,
//! per-dimension Kolmogorov–Smirnov tests, MMD² with an RBF kernel, and a
//! fingerprint that names the kind of shift. Definitions: `notes/metrics.md`
//! (Phoenix centroid drift, Evidently's MMD and KS rules, VIRK's z ≥ 3 rule).
//!
//! The fingerprint compares one statistic per kind of shift against its spread
//! over clean splits of the baseline (the same splits calibrate the threshold).
//! Kinds are explained away in a fixed order so that one cause does not light up
//! the others:
//! 1. class mix: statistics of the classes themselves are weighted by the
//!    *baseline's* class proportions, so a change of proportions moves nothing else;
//! 2. new cluster: when a minority of current points sits far from every baseline
//!    point but close to each other, those points are set aside before the
//!    remaining statistics are computed;
//! 3. mean shift, scale change and variance collapse on what remains.

use rayon::prelude::*;

use crate::knn::{QUERY_BLOCK, norms, score_block};
use crate::sample::{self, SplitMix};
use crate::{Data, Space, stats};

/// Rows of one window: vectors plus a label id per row (0 = unlabelled). The two
/// windows of a comparison share one label numbering.
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    pub data: Data<'a>,
    pub labels: &'a [u32],
}

impl<'a> Window<'a> {
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// f64 mean of the given rows (all rows when `rows` is `None`).
pub fn centroid(data: Data<'_>, rows: Option<&[usize]>) -> Vec<f64> {
    let mut c = vec![0.0f64; data.dim];
    let mut n = 0usize;
    let mut add = |i: usize| {
        for (a, &x) in c.iter_mut().zip(data.row(i)) {
            *a += f64::from(x);
        }
        n += 1;
    };
    match rows {
        Some(rs) => rs.iter().for_each(|&i| add(i)),
        None => (0..data.len()).for_each(&mut add),
    }
    if n > 0 {
        c.iter_mut().for_each(|a| *a /= n as f64);
    }
    c
}

pub fn euclidean(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// 1 − cos between two centroids; `None` when either is the zero vector.
pub fn cosine_distance(a: &[f64], b: &[f64]) -> Option<f64> {
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return None;
    }
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    Some((1.0 - dot / (na * nb)).max(0.0))
}

/// Two-sample KS statistic sup |F_a − F_b| of two **sorted** samples, exact
/// (ties are stepped over together, as `scipy.stats.ks_2samp` does).
pub fn ks_statistic(a: &[f32], b: &[f32]) -> f64 {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 {
        return 0.0;
    }
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < n && j < m {
        let x = a[i].min(b[j]);
        while i < n && a[i] <= x {
            i += 1;
        }
        while j < m && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n as f64 - j as f64 / m as f64).abs());
    }
    d
}

/// Asymptotic two-sided p-value of a KS statistic: Q(λ) = 2 Σ (−1)^{j−1} e^{−2j²λ²},
/// λ = √(nm/(n+m)) · d.
pub fn ks_pvalue(d: f64, n: usize, m: usize) -> f64 {
    if n == 0 || m == 0 {
        return 1.0;
    }
    let ne = (n as f64 * m as f64) / (n + m) as f64;
    let lambda = ne.sqrt() * d;
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    for j in 1..=100 {
        let jf = j as f64;
        let term = (-2.0 * jf * jf * lambda * lambda).exp();
        sum += if j % 2 == 1 { term } else { -term };
        if term < 1e-12 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// How many of the p-values the Benjamini–Hochberg procedure rejects at `alpha`.
pub fn benjamini_hochberg(pvalues: &[f64], alpha: f64) -> usize {
    let mut p: Vec<f64> = pvalues.to_vec();
    p.sort_by(f64::total_cmp);
    let d = p.len() as f64;
    p.iter()
        .enumerate()
        .filter(|(i, x)| **x <= (*i as f64 + 1.0) / d * alpha)
        .map(|(i, _)| i + 1)
        .max()
        .unwrap_or(0)
}

/// Per-dimension KS statistic and p-value over every row of both sets.
pub fn ks_per_dimension(a: Data<'_>, b: Data<'_>) -> Vec<(f64, f64)> {
    let column = |d: Data<'_>, k: usize| {
        let mut c: Vec<f32> = (0..d.len()).map(|i| d.vectors[i * d.dim + k]).collect();
        c.sort_unstable_by(f32::total_cmp);
        c
    };
    (0..a.dim)
        .into_par_iter()
        .map(|k| {
            let (ca, cb) = (column(a, k), column(b, k));
            let d = ks_statistic(&ca, &cb);
            (d, ks_pvalue(d, ca.len(), cb.len()))
        })
        .collect()
}

/// Squared Euclidean distances between every row of `x` and every row of `y`
/// (row-major |x| × |y|), by blocked GEMM on the current rayon pool.
pub fn cross_sq_distances(x: Data<'_>, y: Data<'_>) -> Vec<f32> {
    let ynorms = norms(y);
    let blocks: Vec<Vec<f32>> = (0..x.len())
        .collect::<Vec<_>>()
        .par_chunks(QUERY_BLOCK)
        .map(|rows| {
            let a: Vec<f32> = rows.iter().flat_map(|&r| x.row(r)).copied().collect();
            let qn: Vec<f32> = rows
                .iter()
                .map(|&r| crate::knn::squared_norm(x.row(r)))
                .collect();
            let mut c = Vec::new();
            score_block(y, &ynorms, Space::L2, &a, &qn, &mut c);
            c
        })
        .collect();
    blocks.concat()
}

/// Unbiased MMD² with the RBF kernel exp(−γ‖a − b‖²), γ = 1/σ², σ = the median
/// Euclidean distance between the two samples (Evidently's `mmd` method).
/// Returns (MMD²ᵤ, γ).
pub fn mmd2_unbiased(x: Data<'_>, y: Data<'_>) -> (f64, f64) {
    let (m, n) = (x.len(), y.len());
    if m < 2 || n < 2 {
        return (0.0, 0.0);
    }
    let xy = cross_sq_distances(x, y);
    let mut sorted = xy.clone();
    let mid = sorted.len() / 2;
    let (_, med, _) = sorted.select_nth_unstable_by(mid, f32::total_cmp);
    let sigma2 = f64::from(*med).max(1e-12);
    let gamma = 1.0 / sigma2;
    let k = |d2: &f32| (-gamma * f64::from(*d2)).exp();
    let off_diag_mean = |d: Data<'_>| {
        let sq = cross_sq_distances(d, d);
        let l = d.len();
        let total: f64 = sq.iter().map(k).sum();
        // The diagonal (distance 0, kernel 1) is left out.
        (total - l as f64) / (l * (l - 1)) as f64
    };
    let kxx = off_diag_mean(x);
    let kyy = off_diag_mean(y);
    let kxy = xy.iter().map(k).sum::<f64>() / (m * n) as f64;
    (kxx + kyy - 2.0 * kxy, gamma)
}

/// The fingerprint statistics of one comparison, before standardisation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ShiftStats {
    /// Residual centroid shift (after a possible scaling) / baseline spread.
    pub mean_shift: f64,
    /// |ln ρ| where ρ = current / baseline within-class spread, when the centroid moved with it.
    pub scale_change: f64,
    /// −ln ρ when the spread shrank about a fixed centroid.
    pub variance_collapse: f64,
    /// Share of current points far from every baseline point but near another current point.
    pub new_cluster: f64,
    /// Total variation distance between the class proportions.
    pub class_mix: f64,
}

impl ShiftStats {
    pub fn as_array(&self) -> [f64; 5] {
        [
            self.mean_shift,
            self.scale_change,
            self.variance_collapse,
            self.new_cluster,
            self.class_mix,
        ]
    }
}

/// Kinds in `ShiftStats::as_array` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShiftKind {
    MeanShift,
    ScaleChange,
    VarianceCollapse,
    NewCluster,
    ClassMixChange,
    Unknown,
}

pub const KINDS: [ShiftKind; 5] = [
    ShiftKind::MeanShift,
    ShiftKind::ScaleChange,
    ShiftKind::VarianceCollapse,
    ShiftKind::NewCluster,
    ShiftKind::ClassMixChange,
];

/// A z-score at or above this names the kind (VIRK's rule).
pub const Z_PRIMARY: f64 = 3.0;

/// Rows of `c` that are "novel": farther from every `b` row than the baseline's
/// own 99th-percentile leave-one-out nearest distance, yet within that distance
/// of another `c` row (they form a cluster of their own).
fn novel_rows(b: Data<'_>, c: Data<'_>) -> Vec<usize> {
    if b.len() < 2 || c.len() < 2 {
        return Vec::new();
    }
    let nearest = |sq: &[f32], cols: usize, skip_diag: bool| -> Vec<f32> {
        sq.chunks_exact(cols)
            .enumerate()
            .map(|(r, row)| {
                row.iter()
                    .enumerate()
                    .filter(|(j, _)| !(skip_diag && *j == r))
                    .map(|(_, d)| *d)
                    .fold(f32::INFINITY, f32::min)
            })
            .collect()
    };
    let bb = nearest(&cross_sq_distances(b, b), b.len(), true);
    let mut sorted: Vec<f64> = bb.iter().map(|&d| f64::from(d)).collect();
    sorted.sort_by(f64::total_cmp);
    let tau = stats::percentile_sorted(&sorted, 99.0) as f32;
    let cb = nearest(&cross_sq_distances(c, b), b.len(), false);
    let cc = nearest(&cross_sq_distances(c, c), c.len(), true);
    (0..c.len())
        .filter(|&i| cb[i] > tau && cc[i] <= tau)
        .collect()
}

/// Class-weighted centroid and within-class RMS spread of `rows` of `w`, with the
/// class weights given (label → weight, summing to 1 over the shared classes).
fn weighted_moments(w: Window<'_>, rows: &[usize], weights: &[(u32, f64)]) -> (Vec<f64>, f64) {
    let dim = w.data.dim;
    let mut mu = vec![0.0f64; dim];
    let mut spread2 = 0.0f64;
    for &(label, wt) in weights {
        let members: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|&r| w.labels[r] == label)
            .collect();
        if members.is_empty() {
            continue;
        }
        let c = centroid(w.data, Some(&members));
        let ss: f64 = members
            .iter()
            .map(|&r| {
                w.data
                    .row(r)
                    .iter()
                    .zip(&c)
                    .map(|(&x, m)| (f64::from(x) - m).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / members.len() as f64;
        spread2 += wt * ss;
        for (a, x) in mu.iter_mut().zip(&c) {
            *a += wt * x;
        }
    }
    (mu, spread2.sqrt())
}

/// Label proportions of `w` (label → share).
fn proportions(w: Window<'_>) -> std::collections::BTreeMap<u32, f64> {
    let mut p = std::collections::BTreeMap::new();
    for &l in w.labels {
        *p.entry(l).or_insert(0.0) += 1.0;
    }
    let n = w.len().max(1) as f64;
    p.values_mut().for_each(|v| *v /= n);
    p
}

/// The fingerprint statistics of baseline sample `b` against current sample `c`.
pub fn shift_stats(b: Window<'_>, c: Window<'_>) -> ShiftStats {
    let pb = proportions(b);
    let pc = proportions(c);
    let class_mix = 0.5
        * pb.keys()
            .chain(pc.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|l| (pb.get(l).unwrap_or(&0.0) - pc.get(l).unwrap_or(&0.0)).abs())
            .sum::<f64>();

    let novel = novel_rows(b.data, c.data);
    let new_cluster = novel.len() as f64 / c.len().max(1) as f64;
    // Set a minority of novel points aside before looking at the rest.
    let keep: Vec<usize> = if new_cluster > 0.0 && new_cluster <= 0.5 {
        let mut is_novel = vec![false; c.len()];
        novel.iter().for_each(|&r| is_novel[r] = true);
        (0..c.len()).filter(|&r| !is_novel[r]).collect()
    } else {
        (0..c.len()).collect()
    };

    // Classes present on both sides (≥ 2 members each), weighted by the baseline.
    let counts_c = {
        let mut m = std::collections::BTreeMap::new();
        for &r in &keep {
            *m.entry(c.labels[r]).or_insert(0usize) += 1;
        }
        m
    };
    let mut weights: Vec<(u32, f64)> = pb
        .iter()
        .filter(|(l, p)| **p * b.len() as f64 >= 2.0 && counts_c.get(l).copied().unwrap_or(0) >= 2)
        .map(|(l, p)| (*l, *p))
        .collect();
    let total: f64 = weights.iter().map(|w| w.1).sum();
    if total <= 0.0 {
        return ShiftStats {
            class_mix,
            new_cluster,
            ..Default::default()
        };
    }
    weights.iter_mut().for_each(|w| w.1 /= total);
    let all_b: Vec<usize> = (0..b.len()).collect();
    let (mu_b, spread_b) = weighted_moments(b, &all_b, &weights);
    let (mu_c, spread_c) = weighted_moments(c, &keep, &weights);
    if spread_b <= 0.0 {
        return ShiftStats {
            class_mix,
            new_cluster,
            ..Default::default()
        };
    }
    let rho = (spread_c / spread_b).max(1e-12);
    let e0 = euclidean(&mu_c, &mu_b);
    let scaled: Vec<f64> = mu_b.iter().map(|x| rho * x).collect();
    let es = euclidean(&mu_c, &scaled);
    let (scale_change, variance_collapse) = if rho < 1.0 && e0 <= es {
        (0.0, -rho.ln())
    } else {
        (rho.ln().abs(), 0.0)
    };
    ShiftStats {
        mean_shift: e0.min(es) / spread_b,
        scale_change,
        variance_collapse,
        new_cluster,
        class_mix,
    }
}

/// Copies `rows` of `w` into an owned window.
#[derive(Debug, Clone)]
pub struct Owned {
    pub dim: usize,
    pub vectors: Vec<f32>,
    pub labels: Vec<u32>,
}

impl Owned {
    pub fn take(w: Window<'_>, rows: &[usize]) -> Owned {
        Owned {
            dim: w.data.dim,
            vectors: rows.iter().flat_map(|&r| w.data.row(r)).copied().collect(),
            labels: rows.iter().map(|&r| w.labels[r]).collect(),
        }
    }
    pub fn window(&self) -> Window<'_> {
        Window {
            data: Data::new(self.dim, &self.vectors),
            labels: &self.labels,
        }
    }
}

/// Centroid drift of one class; distances are `None` when a side lacks the class.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassShift {
    pub label: u32,
    pub baseline_count: u64,
    pub current_count: u64,
    pub euclidean: Option<f64>,
    pub cosine: Option<f64>,
}

/// Everything `drift` reports about one comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftResult {
    pub centroid_euclidean: f64,
    pub centroid_cosine: Option<f64>,
    pub classes: Vec<ClassShift>,
    pub ks_max: f64,
    pub ks_mean: f64,
    pub ks_drifted_share: f64,
    pub mmd2: f64,
    pub sample: usize,
    pub norm_shift: f64,
    pub norm_ratio: f64,
    /// max(MMD² / mmd_threshold, KS share / ks_share_threshold).
    pub score: f64,
    /// Calibration: the score of each clean baseline split.
    pub null_scores: Vec<f64>,
    pub stats: ShiftStats,
    /// (z, statistic) per kind in `KINDS` order.
    pub scores: Vec<(ShiftKind, f64, f64)>,
    pub primary: ShiftKind,
}

/// Parameters of `drift`.
#[derive(Debug, Clone, Copy)]
pub struct DriftParams {
    /// Points per side in the MMD and fingerprint samples.
    pub sample: usize,
    /// Clean baseline splits for the null distribution.
    pub splits: usize,
    pub seed: u64,
    /// KS: a dimension drifts when its BH-adjusted p-value is ≤ this.
    pub ks_alpha: f64,
    /// The score is max(MMD² / mmd_threshold, KS drifted share / ks_share_threshold),
    /// so 1.0 is where either of Evidently's rules (`mmd`, `ratio`) would fire.
    pub mmd_threshold: f64,
    pub ks_share_threshold: f64,
}

impl Default for DriftParams {
    fn default() -> Self {
        DriftParams {
            sample: 1000,
            splits: 20,
            seed: 0,
            ks_alpha: 0.05,
            mmd_threshold: 0.015,
            ks_share_threshold: 0.2,
        }
    }
}

fn mean_norm(d: Data<'_>) -> f64 {
    stats::mean((0..d.len()).map(|i| f64::from(crate::knn::squared_norm(d.row(i))).sqrt()))
}

/// Compares two windows. Both must be non-empty and share `dim`.
pub fn drift(b: Window<'_>, c: Window<'_>, p: DriftParams) -> DriftResult {
    let mu_b = centroid(b.data, None);
    let mu_c = centroid(c.data, None);

    // Per class, over the labels of both sides.
    let mut labels: Vec<u32> = b.labels.iter().chain(c.labels).copied().collect();
    labels.sort_unstable();
    labels.dedup();
    let classes = labels
        .iter()
        .map(|&l| {
            let rb: Vec<usize> = (0..b.len()).filter(|&r| b.labels[r] == l).collect();
            let rc: Vec<usize> = (0..c.len()).filter(|&r| c.labels[r] == l).collect();
            let (euclidean, cosine) = if rb.is_empty() || rc.is_empty() {
                (None, None)
            } else {
                let (x, y) = (centroid(b.data, Some(&rb)), centroid(c.data, Some(&rc)));
                (Some(self::euclidean(&x, &y)), cosine_distance(&x, &y))
            };
            ClassShift {
                label: l,
                baseline_count: rb.len() as u64,
                current_count: rc.len() as u64,
                euclidean,
                cosine,
            }
        })
        .collect();

    let ks = ks_per_dimension(b.data, c.data);
    let pvals: Vec<f64> = ks.iter().map(|k| k.1).collect();
    let ks_max = ks.iter().map(|k| k.0).fold(0.0, f64::max);
    let ks_mean = stats::mean(ks.iter().map(|k| k.0));
    let ks_drifted_share = benjamini_hochberg(&pvals, p.ks_alpha) as f64 / ks.len().max(1) as f64;

    // Samples: the current side, and two disjoint baseline halves for the null when
    // the baseline is big enough (else halves of a smaller size).
    let s = p.sample.min(c.len()).min(b.len()).max(1);
    let sc = Owned::take(c, &sample::rows(c.len(), s, p.seed));
    let sb = Owned::take(b, &sample::rows(b.len(), s, p.seed.wrapping_add(1)));
    let (mmd2, _) = mmd2_unbiased(sb.window().data, sc.window().data);
    let st = shift_stats(sb.window(), sc.window());

    let score_of =
        |mmd2: f64, share: f64| (mmd2 / p.mmd_threshold).max(share / p.ks_share_threshold);
    let ks_share = |x: Data<'_>, y: Data<'_>| {
        let ps: Vec<f64> = ks_per_dimension(x, y).iter().map(|k| k.1).collect();
        benjamini_hochberg(&ps, p.ks_alpha) as f64 / ps.len().max(1) as f64
    };
    let half = (b.len() / 2).min(s);
    let mut null_scores = Vec::with_capacity(p.splits);
    let mut null_stats: Vec<[f64; 5]> = Vec::with_capacity(p.splits);
    if half >= 2 {
        let runs: Vec<(f64, [f64; 5])> = (0..p.splits)
            .into_par_iter()
            .map(|i| {
                let rows = sample::rows(b.len(), 2 * half, p.seed.wrapping_add(100 + i as u64));
                // Shuffle the chosen rows into two halves, seeded.
                let mut order = rows.clone();
                let mut rng = SplitMix(p.seed.wrapping_add(1000 + i as u64));
                for k in (1..order.len()).rev() {
                    let j = (rng.next_u64() % (k as u64 + 1)) as usize;
                    order.swap(k, j);
                }
                let (h1, h2) = order.split_at(half);
                let mut h1 = h1.to_vec();
                let mut h2 = h2[..half].to_vec();
                h1.sort_unstable();
                h2.sort_unstable();
                let (w1, w2) = (Owned::take(b, &h1), Owned::take(b, &h2));
                let (m, _) = mmd2_unbiased(w1.window().data, w2.window().data);
                let share = ks_share(w1.window().data, w2.window().data);
                (
                    score_of(m, share),
                    shift_stats(w1.window(), w2.window()).as_array(),
                )
            })
            .collect();
        for (m, s) in runs {
            null_scores.push(m);
            null_stats.push(s);
        }
    }
    let observed = st.as_array();
    let scores: Vec<(ShiftKind, f64, f64)> = KINDS
        .iter()
        .enumerate()
        .map(|(k, &kind)| {
            let xs: Vec<f64> = null_stats.iter().map(|s| s[k]).collect();
            (kind, zscore(observed[k], &xs), observed[k])
        })
        .collect();
    let eligible = |kind: ShiftKind, stat: f64| kind != ShiftKind::NewCluster || stat <= 0.5;
    let primary = scores
        .iter()
        .filter(|(kind, z, stat)| *z >= Z_PRIMARY && eligible(*kind, *stat))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(ShiftKind::Unknown, |s| s.0);

    let (nb, nc) = (mean_norm(b.data), mean_norm(c.data));
    DriftResult {
        centroid_euclidean: euclidean(&mu_b, &mu_c),
        centroid_cosine: cosine_distance(&mu_b, &mu_c),
        classes,
        ks_max,
        ks_mean,
        ks_drifted_share,
        mmd2,
        sample: s,
        norm_shift: nc - nb,
        norm_ratio: if nb > 0.0 { nc / nb } else { f64::NAN },
        score: score_of(mmd2, ks_drifted_share),
        null_scores,
        stats: st,
        scores,
        primary,
    }
}

/// Standard score of `x` against a null sample; 0 without a null, and the
/// null's spread is floored so identical splits cannot divide by zero.
pub fn zscore(x: f64, null: &[f64]) -> f64 {
    if null.len() < 2 {
        return 0.0;
    }
    let m = stats::mean(null.iter().copied());
    let var = null.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (null.len() - 1) as f64;
    let sd = var.sqrt().max(1e-9).max(1e-3 * m.abs());
    (x - m) / sd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ks_matches_hand_values() {
        // scipy.stats.ks_2samp([1,2,3],[2,3,4]).statistic == 1/3
        assert!((ks_statistic(&[1.0, 2.0, 3.0], &[2.0, 3.0, 4.0]) - 1.0 / 3.0).abs() < 1e-12);
        // Disjoint samples: 1.0; identical samples: 0.0.
        assert_eq!(ks_statistic(&[1.0, 2.0], &[3.0, 4.0, 5.0]), 1.0);
        assert_eq!(ks_statistic(&[1.0, 2.0, 2.0], &[1.0, 2.0, 2.0]), 0.0);
        // ks_2samp([0,1,2,3,4],[0.5,1.5,2.5,3.5,4.5,5.5,6.5]).statistic == 0.4285714…
        let d = ks_statistic(
            &[0.0, 1.0, 2.0, 3.0, 4.0],
            &[0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5],
        );
        assert!((d - 3.0 / 7.0).abs() < 1e-12, "{d}");
    }

    #[test]
    fn ks_pvalue_tracks_the_kolmogorov_distribution() {
        // Q(1.36) ≈ 0.049 (the classic 5% critical value).
        let n = 10_000;
        let d = 1.36 / ((n as f64 * n as f64) / (2 * n) as f64).sqrt();
        assert!((ks_pvalue(d, n, n) - 0.049).abs() < 0.002);
        assert_eq!(ks_pvalue(0.0, n, n), 1.0);
        assert!(ks_pvalue(0.5, n, n) < 1e-12);
    }

    #[test]
    fn bh_rejects_the_step_up_set() {
        assert_eq!(benjamini_hochberg(&[0.01, 0.02, 0.03, 0.5], 0.05), 3);
        assert_eq!(benjamini_hochberg(&[0.2, 0.3], 0.05), 0);
        assert_eq!(benjamini_hochberg(&[0.04, 0.001], 0.05), 2);
    }

    #[test]
    fn centroids_and_cosine() {
        let v = [0.0f32, 0.0, 2.0, 4.0];
        let c = centroid(Data::new(2, &v), None);
        assert_eq!(c, vec![1.0, 2.0]);
        assert_eq!(cosine_distance(&[0.0, 0.0], &[1.0, 0.0]), None);
        assert!((cosine_distance(&[1.0, 0.0], &[0.0, 2.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((euclidean(&[0.0, 0.0], &[3.0, 4.0]) - 5.0).abs() < 1e-12);
    }

    #[test]
    fn mmd_is_zero_ish_for_identical_and_positive_for_shifted() {
        let a: Vec<f32> = (0..400).map(|i| ((i * 7919) % 101) as f32 / 50.0).collect();
        let b: Vec<f32> = a.iter().map(|x| x + 3.0).collect();
        let (same, _) = mmd2_unbiased(Data::new(2, &a), Data::new(2, &a));
        let (diff, _) = mmd2_unbiased(Data::new(2, &a), Data::new(2, &b));
        assert!(same.abs() < 0.02, "{same}");
        assert!(diff > 0.2, "{diff}");
    }
}

#[cfg(test)]
mod planted {
    //! Planted shifts of each kind on clustered data: the fingerprint names them.
    use super::*;

    struct Gen(SplitMix);
    impl Gen {
        fn normal(&mut self) -> f32 {
            let u1 = ((self.0.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let u2 = ((self.0.next_u64() >> 11) as f64) / (1u64 << 53) as f64;
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        }
    }

    const DIM: usize = 32;
    const CLASSES: usize = 5;

    fn centers() -> Vec<Vec<f32>> {
        let mut g = Gen(SplitMix(42));
        (0..=CLASSES)
            .map(|_| (0..DIM).map(|_| 3.0 * g.normal()).collect())
            .collect()
    }

    /// `n` points; class c drawn with probability `mix[c]`; class CLASSES is the "new" one.
    fn draw(n: usize, mix: &[f64], seed: u64) -> (Vec<f32>, Vec<u32>) {
        let cs = centers();
        let mut g = Gen(SplitMix(seed));
        let mut v = Vec::with_capacity(n * DIM);
        let mut l = Vec::with_capacity(n);
        for _ in 0..n {
            let u = (g.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let mut acc = 0.0;
            let mut c = mix.len() - 1;
            for (i, p) in mix.iter().enumerate() {
                acc += p;
                if u < acc {
                    c = i;
                    break;
                }
            }
            for &x in &cs[c] {
                v.push(x + g.normal());
            }
            l.push(c as u32 + 1);
        }
        (v, l)
    }

    fn uniform() -> Vec<f64> {
        vec![1.0 / CLASSES as f64; CLASSES]
    }

    fn run(cur: (Vec<f32>, Vec<u32>), seed: u64) -> DriftResult {
        let base = draw(4000, &uniform(), 1);
        let b = Window {
            data: Data::new(DIM, &base.0),
            labels: &base.1,
        };
        let c = Window {
            data: Data::new(DIM, &cur.0),
            labels: &cur.1,
        };
        drift(
            b,
            c,
            DriftParams {
                sample: 1000,
                seed,
                ..Default::default()
            },
        )
    }

    #[test]
    fn fingerprints_name_the_planted_kind() {
        let same = run(draw(4000, &uniform(), 2), 0);
        assert_eq!(same.primary, ShiftKind::Unknown, "{:?}", same.scores);
        assert!(same.mmd2 < 0.015, "{}", same.mmd2);

        let mut shifted = draw(4000, &uniform(), 3);
        let mut g = Gen(SplitMix(9));
        let dir: Vec<f32> = (0..DIM).map(|_| g.normal()).collect();
        let norm = dir.iter().map(|x| x * x).sum::<f32>().sqrt();
        // A shift of about 0.3 of the within-class RMS spread (√32 ≈ 5.7).
        for row in shifted.0.chunks_exact_mut(DIM) {
            for (x, d) in row.iter_mut().zip(&dir) {
                *x += 1.7 * d / norm;
            }
        }
        let r = run(shifted, 0);
        assert_eq!(r.primary, ShiftKind::MeanShift, "{:?}", r.scores);

        let mut scaled = draw(4000, &uniform(), 4);
        scaled.0.iter_mut().for_each(|x| *x *= 1.5);
        let r = run(scaled, 0);
        assert_eq!(r.primary, ShiftKind::ScaleChange, "{:?}", r.scores);

        let cs = centers();
        let mut collapsed = draw(4000, &uniform(), 5);
        for (row, &l) in collapsed.0.chunks_exact_mut(DIM).zip(&collapsed.1) {
            for (x, c) in row.iter_mut().zip(&cs[l as usize - 1]) {
                *x = c + 0.6 * (*x - c);
            }
        }
        let r = run(collapsed, 0);
        assert_eq!(r.primary, ShiftKind::VarianceCollapse, "{:?}", r.scores);

        let mut mix = vec![0.9 / CLASSES as f64; CLASSES];
        mix.push(0.1);
        let r = run(draw(4000, &mix, 6), 0);
        assert_eq!(r.primary, ShiftKind::NewCluster, "{:?}", r.scores);

        let r = run(draw(4000, &[0.5, 0.2, 0.1, 0.1, 0.1], 7), 0);
        assert_eq!(r.primary, ShiftKind::ClassMixChange, "{:?}", r.scores);
    }
}
