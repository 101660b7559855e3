//! 2-D projection for plots: PCA by power iteration with deflation (f64).

use crate::Data;

/// Rows projected onto the two leading principal components.
pub fn pca_2d(data: Data<'_>, rows: &[usize]) -> Vec<(f64, f64)> {
    let dim = data.dim;
    if rows.is_empty() {
        return Vec::new();
    }
    let mut mean = vec![0.0f64; dim];
    for &r in rows {
        for (m, &x) in mean.iter_mut().zip(data.row(r)) {
            *m += f64::from(x);
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows.len() as f64);
    let centered = |r: usize| {
        data.row(r)
            .iter()
            .zip(&mean)
            .map(|(&x, m)| f64::from(x) - m)
    };
    // Covariance-vector product without forming the covariance: C v = Σ x (x·v).
    let cov_mul = |v: &[f64], deflate: &[(f64, Vec<f64>)]| {
        let mut out = vec![0.0f64; dim];
        for &r in rows {
            let dot: f64 = centered(r).zip(v).map(|(x, y)| x * y).sum();
            for (o, x) in out.iter_mut().zip(centered(r)) {
                *o += x * dot;
            }
        }
        for (lambda, u) in deflate {
            let d: f64 = u.iter().zip(v).map(|(a, b)| a * b).sum();
            for (o, ui) in out.iter_mut().zip(u) {
                *o -= lambda * d * ui;
            }
        }
        out
    };
    let norm = |v: &mut Vec<f64>| {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n > 0.0 {
            v.iter_mut().for_each(|x| *x /= n);
        }
        n
    };
    let mut comps: Vec<(f64, Vec<f64>)> = Vec::new();
    for c in 0..2 {
        // Deterministic start vector.
        let mut v: Vec<f64> = (0..dim)
            .map(|i| 1.0 + ((i * 7 + c * 13) % 11) as f64 / 11.0)
            .collect();
        norm(&mut v);
        let mut lambda = 0.0;
        for _ in 0..100 {
            let mut w = cov_mul(&v, &comps);
            lambda = norm(&mut w);
            let delta: f64 = w.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
            v = w;
            if delta < 1e-9 {
                break;
            }
        }
        comps.push((lambda, v));
    }
    rows.iter()
        .map(|&r| {
            let p = |u: &[f64]| centered(r).zip(u).map(|(x, y)| x * y).sum::<f64>();
            (p(&comps[0].1), p(&comps[1].1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_the_dominant_axis() {
        // Points spread along (1, 1, 0) with small noise along z.
        let mut v = Vec::new();
        for i in 0..50 {
            let t = i as f32 - 25.0;
            v.extend_from_slice(&[t, t, (i % 3) as f32 * 0.01]);
        }
        let data = Data::new(3, &v);
        let rows: Vec<usize> = (0..50).collect();
        let p = pca_2d(data, &rows);
        // First coordinate is ±(t − mean t)·√2 (mean t = −0.5); second is tiny.
        assert!(
            (p[0].0.abs() - 24.5 * 2f64.sqrt()).abs() < 1e-3,
            "{:?}",
            p[0]
        );
        assert!(
            (p[49].0.abs() - 24.5 * 2f64.sqrt()).abs() < 1e-3,
            "{:?}",
            p[49]
        );
        assert!(p.iter().all(|x| x.1.abs() < 0.1));
    }
}
