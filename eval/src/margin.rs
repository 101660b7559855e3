//! 1-NN margin: second-nearest minus nearest distance, leave-one-out (the seed
//! analysis: diagonal +inf, sort each row, column 1 minus column 0).

use crate::knn::Neighbor;
use crate::stats::{mean, percentile_sorted};

#[derive(Debug, Clone, PartialEq)]
pub struct MarginItem {
    pub row: usize,
    pub nearest: usize,
    pub d1: f64,
    pub second: usize,
    pub d2: f64,
    pub margin: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClassMargin {
    pub label: u32,
    pub count: usize,
    pub mean_margin: f64,
    pub low_margin_fraction: f64,
    /// Members per bin of [`MarginReport::histogram_edges`].
    pub histogram: Vec<u64>,
}

/// Bins of the per-class histograms.
pub const HISTOGRAM_BINS: usize = 20;

#[derive(Debug, Clone, PartialEq)]
pub struct MarginReport {
    pub mean: f64,
    pub median: f64,
    pub p10: f64,
    pub low_margin_count: usize,
    pub low_margin_fraction: f64,
    /// Most unstable first: highest low-margin fraction, then lowest mean margin, then label.
    pub classes: Vec<ClassMargin>,
    /// The `lowest_n` smallest margins, ties to the lower row.
    pub lowest: Vec<MarginItem>,
    /// Every row's item, in row order (for callers that need per-point margins).
    pub items: Vec<MarginItem>,
    /// `HISTOGRAM_BINS + 1` edges from 0 to the 99th percentile.
    pub histogram_edges: Vec<f64>,
}

/// `neighbors[i]` holds at least two exact neighbours of row i (rows with fewer are skipped).
/// `labels[i]` is row i's class. Low means `margin < threshold` (strict).
pub fn margin_report(
    neighbors: &[Vec<Neighbor>],
    labels: &[u32],
    threshold: f64,
    lowest_n: usize,
) -> MarginReport {
    let items: Vec<MarginItem> = neighbors
        .iter()
        .enumerate()
        .filter(|(_, nn)| nn.len() >= 2)
        .map(|(row, nn)| MarginItem {
            row,
            nearest: nn[0].0,
            d1: nn[0].1,
            second: nn[1].0,
            d2: nn[1].1,
            margin: nn[1].1 - nn[0].1,
        })
        .collect();
    let mut sorted: Vec<f64> = items.iter().map(|m| m.margin).collect();
    sorted.sort_by(f64::total_cmp);
    let low = items.iter().filter(|m| m.margin < threshold).count();

    let top = percentile_sorted(&sorted, 99.0);
    let top = if top.is_finite() && top > 0.0 {
        top
    } else {
        1.0
    };
    let histogram_edges: Vec<f64> = (0..=HISTOGRAM_BINS)
        .map(|i| top * i as f64 / HISTOGRAM_BINS as f64)
        .collect();
    let bin = |m: f64| (((m / top) * HISTOGRAM_BINS as f64) as usize).min(HISTOGRAM_BINS - 1);
    let mut by_class: std::collections::BTreeMap<u32, (usize, f64, usize, Vec<u64>)> =
        Default::default();
    for m in &items {
        let e = by_class
            .entry(labels[m.row])
            .or_insert_with(|| (0, 0.0, 0, vec![0; HISTOGRAM_BINS]));
        e.0 += 1;
        e.1 += m.margin;
        e.2 += usize::from(m.margin < threshold);
        e.3[bin(m.margin)] += 1;
    }
    let mut classes: Vec<ClassMargin> = by_class
        .into_iter()
        .map(|(label, (count, sum, low, histogram))| ClassMargin {
            label,
            count,
            mean_margin: sum / count as f64,
            low_margin_fraction: low as f64 / count as f64,
            histogram,
        })
        .collect();
    classes.sort_by(|a, b| {
        b.low_margin_fraction
            .total_cmp(&a.low_margin_fraction)
            .then(a.mean_margin.total_cmp(&b.mean_margin))
            .then(a.label.cmp(&b.label))
    });
    let mut lowest = items.clone();
    lowest.sort_by(|a, b| a.margin.total_cmp(&b.margin).then(a.row.cmp(&b.row)));
    lowest.truncate(lowest_n);
    MarginReport {
        mean: mean(sorted.iter().copied()),
        median: percentile_sorted(&sorted, 50.0),
        p10: percentile_sorted(&sorted, 10.0),
        low_margin_count: low,
        low_margin_fraction: if items.is_empty() {
            0.0
        } else {
            low as f64 / items.len() as f64
        },
        classes,
        lowest,
        items,
        histogram_edges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knn::all_neighbors;
    use crate::{Data, Deadline, Space};

    #[test]
    fn points_on_a_line() {
        // x = 0, 1, 3, 3.01 (labels a a b b): hand-computed margins.
        let v = [0.0f32, 1.0, 3.0, 3.01];
        let nn = all_neighbors(Data::new(1, &v), Space::L2, 2, &Deadline::none()).expect("ok");
        let r = margin_report(&nn, &[0, 0, 1, 1], 0.05, 2);
        let m: Vec<f64> = r.items.iter().map(|i| i.margin).collect();
        let want = [2.0, 1.0, 1.99, 2.01 - 0.01];
        for (g, w) in m.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{m:?}");
        }
        assert_eq!(r.low_margin_count, 0);
        assert_eq!(r.lowest[0].row, 1);
        assert_eq!((r.lowest[0].nearest, r.lowest[0].second), (0, 2));
        // Class b (margins 1.99, 2.0) is less stable than a (2.0, 1.0)? Mean: a=1.5, b=1.995.
        assert_eq!(r.classes[0].label, 0);
        assert!((r.median - 1.995).abs() < 1e-6);
        assert_eq!(r.histogram_edges.len(), HISTOGRAM_BINS + 1);
        assert_eq!(
            r.classes
                .iter()
                .map(|c| c.histogram.iter().sum::<u64>())
                .sum::<u64>(),
            4
        );
    }

    #[test]
    fn exact_duplicates_and_ties() {
        // Two exact duplicates: d1 = 0 for both, margin well defined; ties to lower row.
        let v = [5.0f32, 5.0, 6.0];
        let nn = all_neighbors(Data::new(1, &v), Space::L2, 2, &Deadline::none()).expect("ok");
        let r = margin_report(&nn, &[0, 0, 0], 0.05, 3);
        assert_eq!(r.items[0].nearest, 1);
        assert_eq!(r.items[0].d1, 0.0);
        assert_eq!(r.items[2].margin, 0.0, "row 2 is 1.0 from both duplicates");
        assert_eq!(r.items[2].nearest, 0, "tie goes to the lower row");
        assert_eq!(r.low_margin_count, 1);
        assert_eq!(r.lowest[0].row, 2);
    }
}
