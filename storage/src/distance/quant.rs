//! Int8 codes with error bounds: the first pass of an exact scan.
//!
//! Each vector `x` is stored beside its code: a scale `s` (max |x_i| / 127), codes
//! `c_i = round(x_i / s)` and the exact residual `e = ‖x − s·c‖` (rounded up). A
//! query is coded the same way. The integer dot product `c_q · c_x` (simsimd,
//! a quarter of the bytes of the f32 vectors) then bounds the f32 ranking score
//! from both sides:
//!
//! - L2: `‖q − x‖` is within `e_q + e_x` of `‖q̂ − x̂‖` (triangle inequality), and
//!   `‖q̂ − x̂‖² = s_q²‖c_q‖² + s_x²‖c_x‖² − 2 s_q s_x (c_q · c_x)`;
//! - cosine and dot: `q · x` is within `‖q‖ e_x + e_q ‖x̂‖` of `s_q s_x (c_q · c_x)`
//!   (Cauchy–Schwarz on `q·(x − x̂) + (q − q̂)·x̂`).
//!
//! Both are widened by the f32 kernel's own rounding bound, so the true top-k by
//! the f32 score is always among the rows whose lower bound is at most the k-th
//! smallest upper bound, and re-scoring those few with the f32 kernel gives the
//! same answer as scoring every row.

use simsimd::SpatialSimilarity;

use super::Metric;

// Σ c_i² and the code dot product fit an i32 (simsimd accumulates in i32) at
// the largest dimension we accept.
const _: () = assert!(crate::validate::MAX_DIMENSION as i64 * 127 * 127 <= i32::MAX as i64);

/// A vector's code summary (its codes live in a separate slot-major array).
#[derive(Debug, Clone, Copy, Default)]
pub struct CodeMeta {
    /// The scale `s`: the vector is `s · codes` plus the residual.
    pub scale: f32,
    /// `Σ c_i²`.
    pub sq: i32,
    /// `‖x − s·c‖`, rounded up.
    pub err: f32,
    /// `‖s·c‖`, rounded up.
    pub norm: f32,
}

/// Codes `v` into `out` (same length) and returns its summary.
pub fn encode(v: &[f32], out: &mut [i8]) -> CodeMeta {
    debug_assert_eq!(v.len(), out.len());
    let amax = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if amax == 0.0 || !amax.is_finite() {
        out.fill(0);
        let err: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        return CodeMeta {
            scale: 0.0,
            sq: 0,
            err: round_up(err.sqrt()),
            norm: 0.0,
        };
    }
    let scale = amax / 127.0;
    let s = f64::from(scale);
    let (mut sq, mut err) = (0i32, 0.0f64);
    for (o, &x) in out.iter_mut().zip(v) {
        let c = (f64::from(x) / s).round().clamp(-127.0, 127.0);
        *o = c as i8;
        sq += (c as i32) * (c as i32);
        let r = f64::from(x) - s * c;
        err += r * r;
    }
    CodeMeta {
        scale,
        sq,
        err: round_up(err.sqrt()),
        norm: round_up(s * f64::from(sq).sqrt()),
    }
}

/// The current k-th smallest upper bound, prepared for [`QueryCode::beyond`].
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    pub tau: f64,
    /// L2: `sqrt(tau / (1 − ρ))`, the distance the lower bound is compared in.
    root: f64,
}

/// An f64 rounded up to an f32 (with room for the f64 sum's own rounding).
fn round_up(x: f64) -> f32 {
    let x = x * (1.0 + 1e-12);
    let f = x as f32;
    if f64::from(f) < x { f.next_up() } else { f }
}

/// A coded query and what the bounds need of it.
#[derive(Debug, Clone)]
pub struct QueryCode {
    codes: Vec<i8>,
    scale: f64,
    sq: f64,
    err: f64,
    norm: f64,
    /// Relative rounding bound of the f32 kernels at this dimension.
    rho: f64,
}

impl QueryCode {
    pub fn new(q: &[f32]) -> Self {
        let mut codes = vec![0i8; q.len()];
        let m = encode(q, &mut codes);
        let norm = q
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        QueryCode {
            codes,
            scale: f64::from(m.scale),
            sq: f64::from(m.sq),
            err: f64::from(m.err),
            norm,
            // An f32 sum of n terms is within n·u of the exact sum of their magnitudes;
            // doubled for the products and the final rounding.
            rho: (q.len() as f64 + 4.0) * f64::from(f32::EPSILON),
        }
    }

    /// The integer dot product of the query's codes with a stored vector's.
    #[inline]
    pub fn dot(&self, codes: &[i8]) -> f64 {
        <i8 as SpatialSimilarity>::dot(&self.codes, codes).unwrap_or_else(|| {
            self.codes
                .iter()
                .zip(codes)
                .map(|(&a, &b)| f64::from(i32::from(a) * i32::from(b)))
                .sum()
        })
    }

    pub fn cut(&self, tau: f64) -> Cut {
        Cut {
            tau,
            root: (tau.max(0.0) / (1.0 - self.rho)).sqrt(),
        }
    }

    /// True when `x`'s lower bound is certainly above the cut, so it cannot be in
    /// the top k; for L2 without a square root (`lo > tau` ⟺ `est − slack > (root + e)²`).
    #[inline]
    pub fn beyond(&self, metric: Metric, dot: f64, x: &CodeMeta, cut: &Cut) -> bool {
        match metric {
            Metric::L2 => {
                let (est, slack) = self.l2_estimate(dot, x);
                let r = cut.root + self.err + f64::from(x.err);
                est - slack > r * r * (1.0 + 1e-12)
            }
            Metric::Cosine | Metric::Dot => self.bounds(metric, dot, x).0 > cut.tau,
        }
    }

    /// `‖q̂ − x̂‖²` from the code dot product, and the f64 rounding room around it.
    #[inline]
    fn l2_estimate(&self, dot: f64, x: &CodeMeta) -> (f64, f64) {
        let sx = f64::from(x.scale);
        let p = self.scale * sx * dot;
        let (a, b) = (self.scale * self.scale * self.sq, sx * sx * f64::from(x.sq));
        (a + b - 2.0 * p, 1e-12 * (a + b + 2.0 * p.abs()))
    }

    /// Lower and upper bounds of `metric.score(q, x)` (the f32 kernel's value)
    /// from the code dot product `dot = c_q · c_x` and `x`'s summary.
    #[inline]
    pub fn bounds(&self, metric: Metric, dot: f64, x: &CodeMeta) -> (f64, f64) {
        let ex = f64::from(x.err);
        match metric {
            Metric::L2 => {
                let (est, slack) = self.l2_estimate(dot, x);
                let e = self.err + ex;
                let lo = ((est - slack).max(0.0).sqrt() - e).max(0.0);
                let hi = (est + slack).max(0.0).sqrt() + e;
                (lo * lo * (1.0 - self.rho), hi * hi * (1.0 + self.rho))
            }
            Metric::Cosine | Metric::Dot => {
                let p = self.scale * f64::from(x.scale) * dot;
                let x_hat = f64::from(x.norm);
                let e = self.norm * ex + self.err * x_hat;
                // The f32 dot product's rounding, plus the f64 product's.
                let t = self.rho * self.norm * (x_hat + ex) + 1e-12 * p.abs();
                let (lo, hi) = (-p - e - t, -p + e + t);
                if metric == Metric::Cosine {
                    ((1.0 + lo).max(0.0), (1.0 + hi).max(0.0))
                } else {
                    (lo, hi)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vecs(seed: u64, n: usize, dim: usize, offset: f32) -> Vec<Vec<f32>> {
        let mut s = emberdb_eval::sample::SplitMix(seed);
        (0..n)
            .map(|_| {
                (0..dim)
                    .map(|_| {
                        offset + ((s.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.0
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn codes_reconstruct_within_the_recorded_error() {
        for v in vecs(1, 50, 37, 0.0).iter().chain(&vecs(2, 50, 300, 20.0)) {
            let mut c = vec![0i8; v.len()];
            let m = encode(v, &mut c);
            let r: f64 = v
                .iter()
                .zip(&c)
                .map(|(&x, &c)| (f64::from(x) - f64::from(m.scale) * f64::from(c)).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(r <= f64::from(m.err), "{r} > {}", m.err);
            assert!(f64::from(m.err) <= r * 1.0001 + 1e-30);
            assert!(c.iter().all(|&x| x != i8::MIN));
        }
        let mut c = vec![5i8; 4];
        let m = encode(&[0.0; 4], &mut c);
        assert_eq!((m.scale, m.sq, m.err, c), (0.0, 0, 0.0, vec![0; 4]));
    }

    #[test]
    fn bounds_hold_the_f32_scores_in_every_metric() {
        for (dim, offset) in [(8, 0.0), (128, 0.0), (784, 0.0), (64, 50.0)] {
            let xs = vecs(dim as u64, 200, dim, offset);
            let qs = vecs(dim as u64 + 1, 10, dim, offset);
            for metric in [Metric::L2, Metric::Cosine, Metric::Dot] {
                let prep = |v: &Vec<f32>| {
                    let mut v = v.clone();
                    if metric == Metric::Cosine {
                        super::super::normalize(&mut v);
                    }
                    v
                };
                for q in qs.iter().map(prep) {
                    let qc = QueryCode::new(&q);
                    for x in xs.iter().map(prep) {
                        let mut c = vec![0i8; dim];
                        let m = encode(&x, &mut c);
                        let (lo, hi) = qc.bounds(metric, qc.dot(&c), &m);
                        let s = f64::from(metric.score(&q, &x));
                        assert!(
                            lo <= s && s <= hi,
                            "{metric:?} dim {dim}: {lo} <= {s} <= {hi}"
                        );
                        // `beyond` says "above the cut" exactly when the lower bound is
                        // (up to the 1e-12 it leaves for rounding).
                        for tau in [lo * 0.999 - 1e-9, lo * 1.001 + 1e-9, f64::INFINITY] {
                            let cut = qc.cut(tau);
                            let beyond = qc.beyond(metric, qc.dot(&c), &m, &cut);
                            assert_eq!(beyond, lo > tau, "{metric:?} tau {tau} lo {lo}");
                        }
                        // Near the origin they are tight enough to prune with.
                        let norm =
                            |v: &[f32]| v.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>().sqrt();
                        let scale = if metric == Metric::L2 {
                            s.abs()
                        } else {
                            norm(&q) * norm(&x)
                        };
                        if offset == 0.0 {
                            assert!(
                                hi - lo <= 0.1 * (1.0 + scale),
                                "{metric:?} dim {dim}: {lo}..{hi} for {s}"
                            );
                        }
                    }
                }
            }
        }
    }
}
