//! Leave-one-out 1-NN confusion: which classes are confused with which, how
//! often, and whether errors are concentrated in a few pairs.

use std::collections::BTreeMap;

use crate::Data;
use crate::knn::Neighbor;

#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub true_label: u32,
    pub predicted_label: u32,
    pub count: usize,
    /// count / size of the true class.
    pub rate: f64,
    pub share_of_errors: f64,
    /// Rows misclassified this way (ascending).
    pub rows: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClassStats {
    pub label: u32,
    pub count: usize,
    pub accuracy: f64,
    /// Mean Euclidean distance of members to the class centroid (f64).
    pub intra_class_distance: f64,
    /// The class whose centroid is nearest (None for a single class).
    pub nearest_class: Option<u32>,
    /// Distance between this centroid and the nearest other one.
    pub separation: f64,
    /// Members farthest from the centroid, farthest first (evidence for data cleaning).
    pub farthest_rows: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConfusionReport {
    pub accuracy: f64,
    pub errors: usize,
    /// Sorted by count descending, then (true, predicted) ascending.
    pub pairs: Vec<Pair>,
    pub classes: Vec<ClassStats>,
    /// Share of all errors held by the three largest pairs (0 when there are none).
    pub concentration: f64,
}

/// `nearest[i]` is row i's exact nearest other row; `labels[i]` its class.
pub fn confusion_report(
    data: Data<'_>,
    nearest: &[Option<Neighbor>],
    labels: &[u32],
) -> ConfusionReport {
    let n = labels.len();
    let mut class_size: BTreeMap<u32, usize> = BTreeMap::new();
    let mut class_correct: BTreeMap<u32, usize> = BTreeMap::new();
    for &l in labels {
        *class_size.entry(l).or_default() += 1;
    }
    let mut pairs: BTreeMap<(u32, u32), Vec<usize>> = BTreeMap::new();
    let mut correct = 0;
    for (i, nn) in nearest.iter().enumerate() {
        let Some((j, _)) = nn else { continue };
        let (t, p) = (labels[i], labels[*j]);
        if t == p {
            correct += 1;
            *class_correct.entry(t).or_default() += 1;
        } else {
            pairs.entry((t, p)).or_default().push(i);
        }
    }
    let errors = n - correct;
    let mut pairs: Vec<Pair> = pairs
        .into_iter()
        .map(|((t, p), rows)| Pair {
            true_label: t,
            predicted_label: p,
            count: rows.len(),
            rate: rows.len() as f64 / class_size[&t] as f64,
            share_of_errors: rows.len() as f64 / errors.max(1) as f64,
            rows,
        })
        .collect();
    pairs.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.true_label.cmp(&b.true_label))
            .then(a.predicted_label.cmp(&b.predicted_label))
    });
    let top3: usize = pairs.iter().take(3).map(|p| p.count).sum();

    // Centroids in f64.
    let dim = data.dim;
    let mut centroids: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        let c = centroids.entry(l).or_insert_with(|| vec![0.0; dim]);
        for (s, &x) in c.iter_mut().zip(data.row(i)) {
            *s += f64::from(x);
        }
    }
    for (l, c) in centroids.iter_mut() {
        let k = class_size[l] as f64;
        c.iter_mut().for_each(|s| *s /= k);
    }
    let dist64 = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f64>()
            .sqrt()
    };
    let mut member_dists: BTreeMap<u32, Vec<(f64, usize)>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        let c = &centroids[&l];
        let d = data
            .row(i)
            .iter()
            .zip(c)
            .map(|(&x, m)| (f64::from(x) - m).powi(2))
            .sum::<f64>()
            .sqrt();
        member_dists.entry(l).or_default().push((d, i));
    }
    let classes = class_size
        .iter()
        .map(|(&l, &count)| {
            let c = &centroids[&l];
            let nearest = centroids
                .iter()
                .filter(|(o, _)| **o != l)
                .map(|(o, oc)| (dist64(c, oc), *o))
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut md = member_dists.remove(&l).unwrap_or_default();
            let intra = md.iter().map(|x| x.0).sum::<f64>() / count as f64;
            md.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            ClassStats {
                label: l,
                count,
                accuracy: class_correct.get(&l).copied().unwrap_or(0) as f64 / count as f64,
                intra_class_distance: intra,
                nearest_class: nearest.map(|x| x.1),
                separation: nearest.map_or(f64::NAN, |x| x.0),
                farthest_rows: md.iter().take(10).map(|x| x.1).collect(),
            }
        })
        .collect();
    ConfusionReport {
        accuracy: if n == 0 {
            0.0
        } else {
            correct as f64 / n as f64
        },
        errors,
        pairs,
        classes,
        concentration: if errors == 0 {
            0.0
        } else {
            top3 as f64 / errors as f64
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knn::all_neighbors;
    use crate::{Deadline, Space};

    #[test]
    fn line_with_a_single_member_class() {
        // x: 0(a) 1(a) 2(b) 10(c) 11(c) 20(d, single member).
        let v = [0.0f32, 1.0, 2.0, 10.0, 11.0, 20.0];
        let labels = [0, 0, 1, 2, 2, 3];
        let nn = all_neighbors(Data::new(1, &v), Space::L2, 1, &Deadline::none()).expect("ok");
        let nearest: Vec<Option<Neighbor>> = nn.iter().map(|x| x.first().copied()).collect();
        let r = confusion_report(Data::new(1, &v), &nearest, &labels);
        // Row 1 (a) has ties 0 and 2 at distance 1: lower row 0 wins -> correct.
        // Row 2 (b) -> 1 (a): error b->a. Row 5 (d) -> 4 (c): error d->c.
        assert_eq!(r.errors, 2);
        assert!((r.accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(r.pairs.len(), 2);
        assert_eq!((r.pairs[0].true_label, r.pairs[0].predicted_label), (1, 0));
        assert_eq!(r.pairs[0].rate, 1.0);
        assert_eq!(r.pairs[0].share_of_errors, 0.5);
        assert_eq!(r.concentration, 1.0);
        let a = &r.classes[0];
        assert_eq!((a.count, a.accuracy, a.intra_class_distance), (2, 1.0, 0.5));
        assert_eq!(a.nearest_class, Some(1));
        assert_eq!(
            r.classes[3].accuracy, 0.0,
            "a single-member class is always an error"
        );
    }
}
