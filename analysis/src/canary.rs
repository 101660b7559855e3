//! Canary comparison of two versions (two embedding models) over the ids they
//! share: label quality, margin and ANN recall per version, their deltas, how
//! much the neighbourhoods agree, which confusions appeared or went away, and a
//! PROMOTE / HOLD / ROLLBACK verdict against configured thresholds.
//!
//! Each version is measured in its own space (dimensions may differ); the two are
//! joined only through point ids and label names.

use std::collections::{BTreeMap, HashMap, HashSet};

use emberdb_eval::knn::{Exact, Neighbor, for_each_query};
use emberdb_eval::ranked::{Ranking, for_each_query_top};
use emberdb_eval::{Deadline, retrieval, stats};

use emberdb_storage::{Error, Result, SearchParams, Snapshot, Version};

use crate::evaluate::{EvalConfig, deadline_error, sample_rows};

#[derive(Debug, Clone, Default)]
pub struct CompareRequest {
    pub k: Option<u32>,
    pub sample_size: Option<u32>,
    pub seed: Option<u64>,
    pub promote_alias: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct VersionQuality {
    pub version: String,
    pub precision_at_1: f64,
    pub hit_at_k: f64,
    pub map_at_r: f64,
    pub mean_margin: f64,
    pub low_margin_fraction: f64,
    pub ann_recall_at_k: f64,
    pub recall_queries: u32,
    pub labelled_queries: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairChange {
    pub true_label: String,
    pub predicted_label: String,
    pub baseline_count: u64,
    pub candidate_count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Promote,
    Hold,
    Rollback,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    pub metric: String,
    pub value: f64,
    pub threshold: f64,
    pub pushes: Verdict,
    pub message: String,
    pub owner: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompareOut {
    pub baseline: VersionQuality,
    pub candidate: VersionQuality,
    pub delta_precision_at_1: f64,
    pub delta_hit_at_k: f64,
    pub delta_map_at_r: f64,
    pub delta_mean_margin: f64,
    pub delta_low_margin_fraction: f64,
    pub delta_ann_recall_at_k: f64,
    pub neighbor_overlap: f64,
    pub new_pairs: Vec<PairChange>,
    pub resolved_pairs: Vec<PairChange>,
    pub verdict: Verdict,
    pub reasons: Vec<Reason>,
    pub alias_moved: bool,
    pub k: u32,
    pub query_ids: Vec<u64>,
    pub shared_ids: u64,
}

/// One version measured on the query ids.
struct Measured {
    quality: VersionQuality,
    /// Exact top-k ids per query (self excluded).
    topk: Vec<Vec<u64>>,
    /// (true, predicted) confusion pair counts by label name.
    pairs: BTreeMap<(String, String), u64>,
}

fn measure(
    v: &Version,
    snap: &Snapshot,
    query_ids: &[u64],
    k: usize,
    cfg: &EvalConfig,
    deadline: &Deadline,
) -> Result<Measured> {
    let data = snap.data();
    let rows: Vec<usize> = query_ids
        .iter()
        .map(|id| {
            snap.ids
                .binary_search(id)
                .expect("query ids are shared ids")
        })
        .collect();
    let mut class_size: HashMap<u32, usize> = HashMap::new();
    for &l in snap.labels.iter().filter(|&&l| l != 0) {
        *class_size.entry(l).or_default() += 1;
    }
    let k_eff = k.min(snap.len() - 1);
    let all_labelled = snap.labels.iter().all(|&l| l != 0);
    let want = k_eff.max(2);
    let depth_of = |q: usize| {
        let ql = snap.labels[q];
        let r = if ql == 0 { 0 } else { class_size[&ql] - 1 };
        (r, k.max(r))
    };
    // One query's figures from its exact neighbours `all` (at least `want` deep)
    // and the labels of its ranking for MAP@R (`None` when unlabelled).
    let summarize = |q: usize, all: &[Neighbor], ranked: Option<Vec<u32>>| {
        let ql = snap.labels[q];
        let (r, _) = depth_of(q);
        let all = &all[..want.min(all.len())];
        // Relative margin (d2 − d1) / d2: two models rarely share a distance scale.
        let margin = (all.len() >= 2).then(|| {
            if all[1].1 > 0.0 {
                (all[1].1 - all[0].1) / all[1].1
            } else {
                0.0
            }
        });
        let labelled = ranked.map(|ranked| {
            let predicted = ranked.first().copied();
            (retrieval::label_metrics(ql, &ranked, k, r), predicted)
        });
        let ids: Vec<u64> = all.iter().take(k_eff).map(|x| snap.ids[x.0]).collect();
        (ids, margin, labelled)
    };
    let per_query = if all_labelled {
        // With every point labelled, one ranking deep enough for the largest class
        // serves the plain top-k, the margin and MAP@R; each unordered pair of rows
        // is scored once when the queries cover most rows.
        let depth = rows
            .iter()
            .map(|&q| want.max(depth_of(q).1))
            .max()
            .unwrap_or(want);
        for_each_query_top(
            data,
            snap.space,
            &rows,
            Ranking {
                depth,
                exact: want,
                key: Some(&snap.labels),
            },
            deadline,
            |q, nn| {
                let ranked: Vec<u32> = nn
                    .iter()
                    .take(depth_of(q).1)
                    .map(|x| snap.labels[x.0])
                    .collect();
                summarize(q, nn, Some(ranked))
            },
        )
    } else {
        let ex = Exact::new(data, snap.space);
        for_each_query(data, snap.space, &rows, deadline, |q, coarse| {
            let nn = ex.top_m(q, coarse, want, |_| true);
            let ranked = (snap.labels[q] != 0).then(|| {
                ex.top_m(q, coarse, depth_of(q).1, |j| snap.labels[j] != 0)
                    .iter()
                    .map(|x| snap.labels[x.0])
                    .collect::<Vec<u32>>()
            });
            summarize(q, &nn, ranked)
        })
    }
    .map_err(deadline_error)?;

    // ANN side on the first queries of the (seeded) sample.
    let recall_rows = &rows[..rows.len().min(cfg.canary_recall_sample.max(1))];
    let ef = 64.max(k_eff + 1);
    let recalls: Vec<f64> = {
        use rayon::prelude::*;
        recall_rows
            .par_iter()
            .enumerate()
            .map(|(i, &q)| {
                if i % 256 == 0 && deadline.expired() {
                    return Err(Error::DeadlineExceeded("canary comparison stopped".into()));
                }
                let hits = v.search(
                    data.row(q),
                    SearchParams {
                        k: k_eff + 1,
                        ef,
                        exact: false,
                        filter: None,
                    },
                )?;
                let me = snap.ids[q];
                let mut ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
                match ids.iter().position(|&id| id == me) {
                    Some(p) => {
                        ids.remove(p);
                    }
                    None => {
                        ids.pop();
                    }
                }
                Ok(retrieval::recall_at_k(&ids, &per_query[i].0, k_eff))
            })
            .collect::<Result<Vec<f64>>>()?
    };

    let margins: Vec<f64> = per_query.iter().filter_map(|p| p.1).collect();
    let labelled: Vec<(&retrieval::QueryLabelMetrics, Option<u32>, u32)> = per_query
        .iter()
        .zip(&rows)
        .filter_map(|(p, &q)| p.2.as_ref().map(|(m, pred)| (m, *pred, snap.labels[q])))
        .collect();
    let mut pairs: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (_, pred, truth) in &labelled {
        if let Some(p) = pred
            && p != truth
        {
            *pairs
                .entry((
                    snap.label_names[*truth as usize].clone(),
                    snap.label_names[*p as usize].clone(),
                ))
                .or_default() += 1;
        }
    }
    let nan0 = |x: f64| if x.is_nan() { 0.0 } else { x };
    Ok(Measured {
        quality: VersionQuality {
            version: v.name().to_string(),
            precision_at_1: nan0(stats::mean(labelled.iter().map(|l| l.0.precision_at_1))),
            hit_at_k: nan0(stats::mean(labelled.iter().map(|l| l.0.hit_at_k))),
            map_at_r: nan0(stats::mean(labelled.iter().filter_map(|l| l.0.map_at_r))),
            mean_margin: nan0(stats::mean(margins.iter().copied())),
            low_margin_fraction: margins
                .iter()
                .filter(|&&m| m < cfg.canary_relative_margin_threshold)
                .count() as f64
                / margins.len().max(1) as f64,
            ann_recall_at_k: nan0(stats::mean(recalls.iter().copied())),
            recall_queries: recalls.len() as u32,
            labelled_queries: labelled.len() as u32,
        },
        topk: per_query.into_iter().map(|p| p.0).collect(),
        pairs,
    })
}

fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    let sa: HashSet<u64> = a.iter().copied().collect();
    let sb: HashSet<u64> = b.iter().copied().collect();
    let union = sa.union(&sb).count();
    if union == 0 {
        return 1.0;
    }
    sa.intersection(&sb).count() as f64 / union as f64
}

/// The verdict and its reasons from the deltas (candidate − baseline).
fn verdict(b: &VersionQuality, c: &VersionQuality, cfg: &EvalConfig) -> (Verdict, Vec<Reason>) {
    let mut reasons = Vec::new();
    for (metric, before, after) in [
        ("precision_at_1", b.precision_at_1, c.precision_at_1),
        ("hit_at_k", b.hit_at_k, c.hit_at_k),
        ("map_at_r", b.map_at_r, c.map_at_r),
    ] {
        let drop = before - after;
        let pushes = if drop > cfg.canary_rollback_drop {
            Verdict::Rollback
        } else if drop > cfg.canary_hold_drop {
            Verdict::Hold
        } else {
            continue;
        };
        let threshold = if pushes == Verdict::Rollback {
            cfg.canary_rollback_drop
        } else {
            cfg.canary_hold_drop
        };
        reasons.push(Reason {
            metric: format!("delta_{metric}"),
            value: after - before,
            threshold: -threshold,
            pushes,
            message: format!(
                "{metric} fell from {before:.4} to {after:.4}: the candidate model separates the labelled classes worse; review its training data and the new confusion pairs"
            ),
            owner: cfg.owner_model_quality.clone(),
        });
    }
    let rise = c.low_margin_fraction - b.low_margin_fraction;
    if rise > cfg.canary_hold_margin_rise {
        let rollback = rise > cfg.canary_rollback_margin_rise;
        reasons.push(Reason {
            metric: "delta_low_margin_fraction".into(),
            value: rise,
            threshold: if rollback {
                cfg.canary_rollback_margin_rise
            } else {
                cfg.canary_hold_margin_rise
            },
            pushes: if rollback {
                Verdict::Rollback
            } else {
                Verdict::Hold
            },
            message: format!(
                "the share of low-margin samples rose from {:.4} to {:.4}: more items sit between two neighbours; targeted data or fine-tuning",
                b.low_margin_fraction, c.low_margin_fraction
            ),
            owner: cfg.owner_model_quality.clone(),
        });
    }
    if c.recall_queries > 0 && c.ann_recall_at_k < cfg.canary_min_recall {
        reasons.push(Reason {
            metric: "candidate_ann_recall_at_k".into(),
            value: c.ann_recall_at_k,
            threshold: cfg.canary_min_recall,
            pushes: Verdict::Hold,
            message: format!(
                "the candidate's HNSW index finds only {:.3} of the exact neighbours; wait for indexing to finish or raise ef / M before promoting",
                c.ann_recall_at_k
            ),
            owner: cfg.owner_index.clone(),
        });
    }
    let v = reasons
        .iter()
        .map(|r| r.pushes)
        .max()
        .unwrap_or(Verdict::Promote);
    (v, reasons)
}

pub(crate) fn compare(
    base_v: &Version,
    cand_v: &Version,
    req: &CompareRequest,
    cfg: &EvalConfig,
    deadline: &Deadline,
) -> Result<CompareOut> {
    let k = req.k.unwrap_or(10);
    if k == 0 || k > emberdb_storage::validate::MAX_K {
        return Err(Error::invalid(
            "k",
            format!(
                "must be between 1 and {}, got {k}",
                emberdb_storage::validate::MAX_K
            ),
        ));
    }
    let (b, c) = (base_v.snapshot()?, cand_v.snapshot()?);
    // Both id lists are sorted: merge for the shared ids.
    let mut shared = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < b.ids.len() && j < c.ids.len() {
        match b.ids[i].cmp(&c.ids[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                shared.push(b.ids[i]);
                i += 1;
                j += 1;
            }
        }
    }
    if shared.len() < 3 {
        return Err(Error::FailedPrecondition(format!(
            "versions '{}' and '{}' share {} point ids; a comparison needs at least 3",
            base_v.name(),
            cand_v.name(),
            shared.len()
        )));
    }
    let query_ids: Vec<u64> = sample_rows(
        shared.len(),
        req.sample_size.unwrap_or(0) as usize,
        req.seed.unwrap_or(0),
    )
    .into_iter()
    .map(|r| shared[r])
    .collect();
    let k = k as usize;
    let mb = measure(base_v, &b, &query_ids, k, cfg, deadline)?;
    let mc = measure(cand_v, &c, &query_ids, k, cfg, deadline)?;
    let neighbor_overlap = stats::mean(mb.topk.iter().zip(&mc.topk).map(|(x, y)| jaccard(x, y)));

    let mut new_pairs = Vec::new();
    let mut resolved_pairs = Vec::new();
    for ((t, p), &cc) in &mc.pairs {
        if !mb.pairs.contains_key(&(t.clone(), p.clone())) {
            new_pairs.push(PairChange {
                true_label: t.clone(),
                predicted_label: p.clone(),
                baseline_count: 0,
                candidate_count: cc,
            });
        }
    }
    for ((t, p), &bc) in &mb.pairs {
        if !mc.pairs.contains_key(&(t.clone(), p.clone())) {
            resolved_pairs.push(PairChange {
                true_label: t.clone(),
                predicted_label: p.clone(),
                baseline_count: bc,
                candidate_count: 0,
            });
        }
    }
    new_pairs.sort_by_key(|p| std::cmp::Reverse(p.candidate_count));
    resolved_pairs.sort_by_key(|p| std::cmp::Reverse(p.baseline_count));

    let (bq, cq) = (mb.quality, mc.quality);
    let (verdict, reasons) = verdict(&bq, &cq, cfg);
    Ok(CompareOut {
        delta_precision_at_1: cq.precision_at_1 - bq.precision_at_1,
        delta_hit_at_k: cq.hit_at_k - bq.hit_at_k,
        delta_map_at_r: cq.map_at_r - bq.map_at_r,
        delta_mean_margin: cq.mean_margin - bq.mean_margin,
        delta_low_margin_fraction: cq.low_margin_fraction - bq.low_margin_fraction,
        delta_ann_recall_at_k: cq.ann_recall_at_k - bq.ann_recall_at_k,
        baseline: bq,
        candidate: cq,
        neighbor_overlap,
        new_pairs,
        resolved_pairs,
        verdict,
        reasons,
        alias_moved: false,
        k: k as u32,
        query_ids,
        shared_ids: shared.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(p1: f64, map: f64, low: f64, recall: f64) -> VersionQuality {
        VersionQuality {
            precision_at_1: p1,
            hit_at_k: 1.0,
            map_at_r: map,
            low_margin_fraction: low,
            ann_recall_at_k: recall,
            recall_queries: 100,
            ..Default::default()
        }
    }

    #[test]
    fn verdict_follows_the_thresholds() {
        let cfg = EvalConfig::default();
        let base = q(0.90, 0.70, 0.10, 0.99);
        assert_eq!(
            verdict(&base, &q(0.90, 0.70, 0.10, 0.99), &cfg).0,
            Verdict::Promote
        );
        assert_eq!(
            verdict(&base, &q(0.95, 0.75, 0.05, 0.99), &cfg).0,
            Verdict::Promote
        );
        // Within tolerance: still promote.
        assert_eq!(
            verdict(&base, &q(0.896, 0.70, 0.10, 0.99), &cfg).0,
            Verdict::Promote
        );
        // p@1 −0.01: hold; −0.03: rollback.
        let (v, r) = verdict(&base, &q(0.89, 0.70, 0.10, 0.99), &cfg);
        assert_eq!(v, Verdict::Hold);
        assert_eq!(r[0].metric, "delta_precision_at_1");
        assert_eq!(
            verdict(&base, &q(0.87, 0.70, 0.10, 0.99), &cfg).0,
            Verdict::Rollback
        );
        // Low-margin share +0.02 holds, +0.06 rolls back.
        assert_eq!(
            verdict(&base, &q(0.90, 0.70, 0.12, 0.99), &cfg).0,
            Verdict::Hold
        );
        assert_eq!(
            verdict(&base, &q(0.90, 0.70, 0.16, 0.99), &cfg).0,
            Verdict::Rollback
        );
        // A weak candidate index holds (its owner is the index team).
        let (v, r) = verdict(&base, &q(0.90, 0.70, 0.10, 0.80), &cfg);
        assert_eq!(v, Verdict::Hold);
        assert_eq!(r[0].owner, cfg.owner_index);
    }

    #[test]
    fn jaccard_of_id_sets() {
        assert_eq!(jaccard(&[1, 2, 3], &[1, 2, 3]), 1.0);
        assert_eq!(jaccard(&[1, 2], &[3, 4]), 0.0);
        assert!((jaccard(&[1, 2, 3], &[2, 3, 4]) - 0.5).abs() < 1e-12);
    }
}
