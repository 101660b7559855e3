//! Retrieval quality: ANN recall@K against exact, and label metrics in the
//! pytorch-metric-learning sense (self excluded; R = other points with the
//! query's label).

use std::collections::HashMap;

/// |ANN ∩ exact| / K for one query, both lists already without the query itself.
pub fn recall_at_k(ann: &[u64], exact: &[u64], k: usize) -> f64 {
    if k == 0 {
        return 1.0;
    }
    let hits = ann
        .iter()
        .take(k)
        .filter(|id| exact.iter().take(k).any(|e| e == *id))
        .count();
    hits as f64 / k as f64
}

/// Label metrics of one query from its ranked neighbour labels.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QueryLabelMetrics {
    pub precision_at_1: f64,
    pub hit_at_k: f64,
    pub mrr: f64,
    /// None when R = 0 (no other point shares the label).
    pub map_at_r: Option<f64>,
    pub knn_correct: f64,
}

/// `ranked` are the labels of the query's exact neighbours, nearest first, at
/// least `max(k, r)` long when that many exist; `r` is the number of other points
/// with the query's label.
pub fn label_metrics(query_label: u32, ranked: &[u32], k: usize, r: usize) -> QueryLabelMetrics {
    let rel = |i: usize| ranked.get(i).is_some_and(|&l| l == query_label);
    let first_hit = (0..k.min(ranked.len())).find(|&i| rel(i));
    let map_at_r = (r > 0).then(|| {
        let mut hits = 0usize;
        let mut sum = 0.0;
        for i in 0..r.min(ranked.len()) {
            if rel(i) {
                hits += 1;
                sum += hits as f64 / (i + 1) as f64;
            }
        }
        sum / r as f64
    });
    QueryLabelMetrics {
        precision_at_1: f64::from(u8::from(rel(0))),
        hit_at_k: f64::from(u8::from(first_hit.is_some())),
        mrr: first_hit.map_or(0.0, |i| 1.0 / (i + 1) as f64),
        map_at_r,
        knn_correct: f64::from(u8::from(
            majority_label(&ranked[..k.min(ranked.len())]) == Some(query_label),
        )),
    }
}

/// Most frequent label; ties go to the label whose member ranks nearest.
pub fn majority_label(ranked: &[u32]) -> Option<u32> {
    let mut votes: HashMap<u32, (usize, usize)> = HashMap::new();
    for (rank, &l) in ranked.iter().enumerate() {
        let e = votes.entry(l).or_insert((0, rank));
        e.0 += 1;
    }
    votes
        .into_iter()
        .max_by(|a, b| a.1.0.cmp(&b.1.0).then(b.1.1.cmp(&a.1.1)))
        .map(|(l, _)| l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked_metrics() {
        // Query label 1; neighbours: 0, 1, 1, 0, 1; R = 3.
        let m = label_metrics(1, &[0, 1, 1, 0, 1], 3, 3);
        assert_eq!(m.precision_at_1, 0.0);
        assert_eq!(m.hit_at_k, 1.0);
        assert_eq!(m.mrr, 0.5);
        // MAP@R over top 3: rel = 0,1,1 -> (1/2 + 2/3) / 3.
        assert!((m.map_at_r.expect("r>0") - (0.5 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert_eq!(m.knn_correct, 1.0, "two of three are label 1");
        assert_eq!(label_metrics(1, &[0, 0], 2, 0).map_at_r, None);
        assert_eq!(label_metrics(1, &[0, 0], 2, 0).mrr, 0.0);
    }

    #[test]
    fn majority_ties_go_to_nearest_member() {
        assert_eq!(majority_label(&[3, 5, 5, 3]), Some(3));
        assert_eq!(majority_label(&[5, 3, 3, 5]), Some(5));
        assert_eq!(majority_label(&[2, 7, 7]), Some(7));
        assert_eq!(majority_label(&[]), None);
    }

    #[test]
    fn recall() {
        assert_eq!(recall_at_k(&[1, 2, 3], &[3, 2, 9], 3), 2.0 / 3.0);
    }
}
