//! Exact nearest neighbours by blocked matrix multiplication.
//!
//! For a block of query rows Q and all rows X, `G = Q·Xᵀ` (matrixmultiply's
//! sgemm) gives coarse scores: L2 `‖q‖² + ‖x‖² − 2G`, cosine `1 − G` (unit
//! rows), dot `−G`. The norm form cancels badly for near-duplicates, so each
//! row keeps a few spare candidates beyond what is asked and they are
//! **re-measured in f64** with the direct difference form before ranking.
//! Memory is one `block × n` score buffer per worker, never `n × n`.

use rayon::prelude::*;

use crate::{Data, Deadline, EvalError, Result, Space, exact_distance};

/// Query rows per GEMM block.
pub const QUERY_BLOCK: usize = 64;

/// A neighbour: row index and exact distance.
pub type Neighbor = (usize, f64);

/// Squared norms of every row (f32, as the GEMM pass uses them).
pub fn norms(data: Data<'_>) -> Vec<f32> {
    (0..data.len()).map(|i| squared_norm(data.row(i))).collect()
}

/// Runs `f(query_row, coarse_scores_over_all_rows)` for every query row of `data`,
/// on the current rayon pool, checking `deadline` between blocks. Results are in
/// query order.
pub fn for_each_query<T, F>(
    data: Data<'_>,
    space: Space,
    queries: &[usize],
    deadline: &Deadline,
    f: F,
) -> Result<Vec<T>>
where
    T: Send,
    F: Fn(usize, &[f32]) -> T + Sync,
{
    let norms = if space == Space::L2 {
        norms(data)
    } else {
        Vec::new()
    };
    let blocks: Vec<&[usize]> = queries.chunks(QUERY_BLOCK).collect();
    let total = blocks.len();
    let out: Vec<Result<Vec<T>>> = blocks
        .par_iter()
        .enumerate()
        .map_init(
            || (Vec::<f32>::new(), Vec::<f32>::new()),
            |(a, c), (bi, block)| {
                if deadline.expired() {
                    return Err(EvalError::DeadlineExceeded { done: bi, total });
                }
                a.clear();
                for &q in block.iter() {
                    a.extend_from_slice(data.row(q));
                }
                let qnorms: Vec<f32> = block
                    .iter()
                    .map(|&q| norms.get(q).copied().unwrap_or(0.0))
                    .collect();
                score_block(data, &norms, space, a, &qnorms, c);
                let n = data.len();
                Ok(block
                    .iter()
                    .enumerate()
                    .map(|(r, &q)| f(q, &c[r * n..(r + 1) * n]))
                    .collect())
            },
        )
        .collect();
    let mut all = Vec::with_capacity(queries.len());
    for r in out {
        all.extend(r?);
    }
    Ok(all)
}

/// Coarse scores of a block of query vectors `a` (row-major, `data.dim` wide)
/// against every row of `data`, written to `c` (block × n). `base_norms` are
/// the rows' squared norms (L2 only), `qnorms` the queries'.
pub fn score_block(
    data: Data<'_>,
    base_norms: &[f32],
    space: Space,
    a: &[f32],
    qnorms: &[f32],
    c: &mut Vec<f32>,
) {
    gemm_block(data, a, c);
    let n = data.len();
    if n == 0 {
        return;
    }
    for (r, row) in c.chunks_exact_mut(n).enumerate() {
        match space {
            Space::L2 => {
                let nq = qnorms[r];
                for (s, nj) in row.iter_mut().zip(base_norms) {
                    *s = (nq + nj - 2.0 * *s).max(0.0);
                }
            }
            Space::Cosine => row.iter_mut().for_each(|s| *s = 1.0 - *s),
            Space::Dot => row.iter_mut().for_each(|s| *s = -*s),
        }
    }
}

/// Plain dot products `c = a · Xᵀ` (block × n) of query vectors `a` against every
/// row of `data`. `c` is reused: it is resized, never cleared, since the GEMM
/// overwrites every element.
pub fn gemm_block(data: Data<'_>, a: &[f32], c: &mut Vec<f32>) {
    let n = data.len();
    let dim = data.dim;
    let qb = a.len() / dim;
    c.resize(qb * n, 0.0);
    if n == 0 || qb == 0 {
        return;
    }
    #[allow(unsafe_code)]
    // SAFETY: C (qb×n, row stride n) = A (qb×dim, row stride dim) · Xᵀ, where X is
    // n×dim row-major and read as dim×n with strides (1, dim). The pointers and
    // strides describe exactly these live buffers, and C aliases neither input.
    unsafe {
        matrixmultiply::sgemm(
            qb,
            dim,
            n,
            1.0,
            a.as_ptr(),
            dim as isize,
            1,
            data.vectors.as_ptr(),
            1,
            dim as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Squared norm of one vector (f32, matching the GEMM pass).
pub fn squared_norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum()
}

/// Worst-case absolute error of a coarse score between a query with squared norm
/// `nq` and rows whose largest squared norm is `nmax`, in `dim` dimensions: the
/// f32 dot product's error bound (≈ dim·ε·‖q‖‖x‖) doubled, on the norm scale.
pub fn coarse_slack(dim: usize, nq: f32, nmax: f32) -> f32 {
    2.0 * dim as f32 * f32::EPSILON * (nq + nmax)
}

/// Candidates for the exact re-check: the `keep` smallest coarse scores passing
/// `candidate`, plus every other passing score within `slack` of the largest of
/// them, since the coarse (norm-form) scores may misorder anything that close.
/// Sorted by (score, index).
pub fn coarse_top(
    coarse: &[f32],
    keep: usize,
    slack: f32,
    candidate: impl Fn(usize) -> bool,
) -> Vec<(f32, usize)> {
    let mut cands: Vec<(f32, usize)> = Vec::with_capacity(keep + 1);
    if keep == 0 {
        return cands;
    }
    if keep <= 32 {
        // Insertion into a small sorted buffer; after warm-up almost every element
        // costs one comparison against the current worst.
        for (j, &s) in coarse.iter().enumerate() {
            if cands.len() == keep && s > cands[keep - 1].0 {
                continue;
            }
            if !candidate(j) {
                continue;
            }
            if cands.len() == keep {
                if (s, j) >= cands[keep - 1] {
                    continue;
                }
                cands.pop();
            }
            let pos = cands.partition_point(|c| (c.0, c.1) < (s, j));
            cands.insert(pos, (s, j));
        }
    } else if let Some(c) = cut_by_sample(coarse, keep, &candidate) {
        cands = c;
    } else {
        // A bounded max-heap: after warm-up almost every element costs one comparison
        // against the worst kept, and nothing of size n is allocated per query.
        let mut heap: std::collections::BinaryHeap<Scored> =
            std::collections::BinaryHeap::with_capacity(keep + 1);
        for (j, &s) in coarse.iter().enumerate() {
            let c = Scored(s, j);
            if heap.len() == keep {
                if heap.peek().is_some_and(|top| c >= *top) {
                    continue;
                }
                if !candidate(j) {
                    continue;
                }
                heap.pop();
            } else if !candidate(j) {
                continue;
            }
            heap.push(c);
        }
        cands = heap
            .into_sorted_vec()
            .into_iter()
            .map(|c| (c.0, c.1))
            .collect();
    }
    if cands.len() == keep && slack > 0.0 {
        let last = cands[keep - 1];
        let limit = last.0 + slack;
        for (j, &s) in coarse.iter().enumerate() {
            if s <= limit && (s, j) > last && candidate(j) {
                cands.push((s, j));
            }
        }
    }
    cands
}

/// The `keep` smallest passing scores, sorted, found by guessing a cut-off from
/// a strided sample (twice the expected rank) and selecting among the scores at
/// or below it. `None` when the guess keeps too few (the caller falls back).
/// Exact: every passing score below the true keep-th is at or below the cut.
fn cut_by_sample(
    coarse: &[f32],
    keep: usize,
    candidate: &impl Fn(usize) -> bool,
) -> Option<Vec<(f32, usize)>> {
    const STRIDE: usize = 16;
    let n = coarse.len();
    if n < keep * 8 || n / STRIDE < 256 {
        return None;
    }
    let mut sample: Vec<f32> = coarse.iter().step_by(STRIDE).copied().collect();
    let rank = (2 * keep / STRIDE + 16).min(sample.len() - 1);
    let (_, cut, _) = sample.select_nth_unstable_by(rank, f32::total_cmp);
    let cut = *cut;
    let mut cands: Vec<(f32, usize)> = coarse
        .iter()
        .enumerate()
        .filter(|&(j, &s)| s <= cut && candidate(j))
        .map(|(j, &s)| (s, j))
        .collect();
    if cands.len() < keep {
        return None;
    }
    let order = |a: &(f32, usize), b: &(f32, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    if cands.len() > keep {
        cands.select_nth_unstable_by(keep - 1, order);
        cands.truncate(keep);
    }
    cands.sort_by(order);
    Some(cands)
}

/// (score, index) with a total order (NaN-safe), for the bounded heap.
#[derive(Debug, Clone, Copy)]
struct Scored(f32, usize);

impl PartialEq for Scored {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scored {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

/// Spare candidates kept beyond `m` before the exact re-check.
pub fn spare(m: usize) -> usize {
    4 + m / 8
}

/// The exact re-check over one data set: knows the largest row norm, which
/// bounds the coarse scores' error.
#[derive(Debug, Clone, Copy)]
pub struct Exact<'a> {
    pub data: Data<'a>,
    pub space: Space,
    pub max_norm: f32,
}

impl<'a> Exact<'a> {
    pub fn new(data: Data<'a>, space: Space) -> Self {
        let max_norm = match space {
            Space::Cosine => 1.0,
            Space::L2 | Space::Dot => (0..data.len())
                .map(|i| squared_norm(data.row(i)))
                .fold(0.0, f32::max),
        };
        Exact {
            data,
            space,
            max_norm,
        }
    }

    /// From one coarse score row: the `m` nearest rows other than `query` that
    /// pass `candidate`, re-measured exactly in f64, sorted by (distance, index).
    pub fn top_m(
        &self,
        query: usize,
        coarse: &[f32],
        m: usize,
        candidate: impl Fn(usize) -> bool,
    ) -> Vec<Neighbor> {
        let q = self.data.row(query);
        let nq = if self.space == Space::Cosine {
            1.0
        } else {
            squared_norm(q)
        };
        let slack = coarse_slack(self.data.dim, nq, self.max_norm);
        let cands = coarse_top(coarse, m + spare(m), slack, |j| j != query && candidate(j));
        let mut exact: Vec<Neighbor> = cands
            .into_iter()
            .map(|(_, j)| (j, exact_distance(self.space, q, self.data.row(j))))
            .collect();
        exact.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        exact.truncate(m);
        exact
    }
}

/// Leave-one-out: the `m` exact nearest other rows of every row.
///
/// Small `m` (margin and confusion need 2) uses the symmetric path: each
/// unordered pair is scored once. Rows whose kept candidates are too close to
/// call in f32 are recomputed by the full-row path, so the answer is exact.
pub fn all_neighbors(
    data: Data<'_>,
    space: Space,
    m: usize,
    deadline: &Deadline,
) -> Result<Vec<Vec<Neighbor>>> {
    let exact = Exact::new(data, space);
    let queries: Vec<usize> = (0..data.len()).collect();
    if m + spare(m) > SYM_KEEP_MAX || data.len() < 2 * SYM_BLOCK {
        return for_each_query(data, space, &queries, deadline, |q, row| {
            exact.top_m(q, row, m, |_| true)
        });
    }
    let keep = m + spare(m);
    let tops = symmetric_tops(data, space, keep, deadline)?;
    let mut out: Vec<Vec<Neighbor>> = Vec::with_capacity(data.len());
    let mut redo = Vec::new();
    for (q, top) in tops.iter().enumerate() {
        let cands = top.sorted();
        let nq = if space == Space::Cosine {
            1.0
        } else {
            squared_norm(data.row(q))
        };
        let slack = coarse_slack(data.dim, nq, exact.max_norm);
        // Safe when everything not kept is beyond the m-th kept by two error bounds.
        let safe =
            cands.len() < keep || cands[keep - 1].0 >= cands[m.saturating_sub(1)].0 + 2.0 * slack;
        if !safe {
            redo.push(q);
        }
        let q_row = data.row(q);
        let mut ex: Vec<Neighbor> = cands
            .iter()
            .map(|&(_, j)| (j, exact_distance(space, q_row, data.row(j))))
            .collect();
        ex.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        ex.truncate(m);
        out.push(ex);
    }
    if !redo.is_empty() {
        let fixed = for_each_query(data, space, &redo, deadline, |q, row| {
            exact.top_m(q, row, m, |_| true)
        })?;
        for (q, nn) in redo.into_iter().zip(fixed) {
            out[q] = nn;
        }
    }
    Ok(out)
}

/// Largest candidate list the symmetric path keeps per row.
const SYM_KEEP_MAX: usize = 16;
/// Rows per block of the symmetric path.
const SYM_BLOCK: usize = 256;
/// Columns per GEMM strip of the symmetric path.
const SYM_STRIP: usize = 2048;

/// A row's best `keep` (coarse score, index) pairs, unsorted, with its worst cached.
#[derive(Clone, Copy)]
struct SmallTop {
    items: [(f32, u32); SYM_KEEP_MAX],
    len: u8,
    worst: f32,
}

impl SmallTop {
    const EMPTY: SmallTop = SmallTop {
        items: [(f32::INFINITY, u32::MAX); SYM_KEEP_MAX],
        len: 0,
        worst: f32::INFINITY,
    };

    #[inline]
    fn push(&mut self, keep: usize, s: f32, j: u32) {
        if (self.len as usize) < keep {
            self.items[self.len as usize] = (s, j);
            self.len += 1;
            if self.len as usize == keep {
                self.worst = self.items[..keep]
                    .iter()
                    .map(|x| x.0)
                    .fold(f32::NEG_INFINITY, f32::max);
            }
            return;
        }
        if s >= self.worst {
            // Ties at the boundary: prefer the lower index, as the final ranking does.
            if s > self.worst {
                return;
            }
        }
        // Replace the worst (largest score, then largest index).
        let (wi, w) = self.items[..keep]
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.0.total_cmp(&b.1.0).then(a.1.1.cmp(&b.1.1)))
            .map(|(i, x)| (i, *x))
            .expect("keep > 0");
        if (s, j) < w {
            self.items[wi] = (s, j);
            self.worst = self.items[..keep]
                .iter()
                .map(|x| x.0)
                .fold(f32::NEG_INFINITY, f32::max);
        }
    }

    fn sorted(&self) -> Vec<(f32, usize)> {
        let mut v: Vec<(f32, usize)> = self.items[..self.len as usize]
            .iter()
            .map(|&(s, j)| (s, j as usize))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        v
    }
}

/// Per-row top-`keep` coarse candidates over all other rows, scoring each
/// unordered pair once (blocks of rows against the strips at and after them).
fn symmetric_tops(
    data: Data<'_>,
    space: Space,
    keep: usize,
    deadline: &Deadline,
) -> Result<Vec<SmallTop>> {
    let n = data.len();
    let norms = if space == Space::L2 {
        norms(data)
    } else {
        Vec::new()
    };
    let blocks: Vec<usize> = (0..n).step_by(SYM_BLOCK).collect();
    let total = blocks.len();
    let state = blocks
        .par_iter()
        .enumerate()
        .try_fold(
            || (vec![SmallTop::EMPTY; n], Vec::<f32>::new()),
            |(mut tops, mut c), (bi, &i0)| {
                if deadline.expired() {
                    return Err(EvalError::DeadlineExceeded { done: bi, total });
                }
                let i1 = (i0 + SYM_BLOCK).min(n);
                let a = &data.vectors[i0 * data.dim..i1 * data.dim];
                let qn: Vec<f32> = (i0..i1)
                    .map(|i| norms.get(i).copied().unwrap_or(0.0))
                    .collect();
                let mut j0 = i0;
                while j0 < n {
                    let j1 = (j0 + SYM_STRIP).min(n);
                    let strip = Data::new(data.dim, &data.vectors[j0 * data.dim..j1 * data.dim]);
                    let strip_norms = if norms.is_empty() {
                        &norms[..]
                    } else {
                        &norms[j0..j1]
                    };
                    score_block(strip, strip_norms, space, a, &qn, &mut c);
                    let w = j1 - j0;
                    for (r, row) in c.chunks_exact(w).enumerate() {
                        let i = i0 + r;
                        // Within the diagonal region only j > i, so each pair is seen once.
                        let start = if j0 <= i { i + 1 - j0 } else { 0 };
                        for (off, &s) in row.iter().enumerate().skip(start) {
                            let j = j0 + off;
                            tops[i].push(keep, s, j as u32);
                            tops[j].push(keep, s, i as u32);
                        }
                    }
                    j0 = j1;
                }
                Ok((tops, c))
            },
        )
        .map(|r| r.map(|(tops, _)| tops))
        .try_reduce(
            || vec![SmallTop::EMPTY; n],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(&b) {
                    for &(s, j) in &y.items[..y.len as usize] {
                        x.push(keep, s, j);
                    }
                }
                Ok(a)
            },
        )?;
    Ok(state)
}

/// Naive f64 reference (tests and small inputs).
pub fn naive_neighbors(
    data: Data<'_>,
    space: Space,
    query: usize,
    m: usize,
    candidate: impl Fn(usize) -> bool,
) -> Vec<Neighbor> {
    let q = data.row(query);
    let mut all: Vec<Neighbor> = (0..data.len())
        .filter(|&j| j != query && candidate(j))
        .map(|j| (j, exact_distance(space, q, data.row(j))))
        .collect();
    all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    all.truncate(m);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_top_paths_agree_with_a_full_sort() {
        // Scores with many ties; every path (small buffer, sampled cut, heap fallback).
        let coarse: Vec<f32> = (0..20_000u64)
            .map(|i| ((i.wrapping_mul(2_654_435_761) % 5000) as f32) / 7.0)
            .collect();
        for keep in [5usize, 40, 300, 2000] {
            for filter in [0usize, 3, 97] {
                let pass = |j: usize| filter == 0 || !j.is_multiple_of(filter);
                let mut want: Vec<(f32, usize)> = coarse
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| pass(j))
                    .map(|(j, &s)| (s, j))
                    .collect();
                want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                want.truncate(keep);
                assert_eq!(
                    coarse_top(&coarse, keep, 0.0, pass),
                    want,
                    "keep {keep} filter {filter}"
                );
            }
        }
        // A filter that rejects almost everything forces the heap path.
        let rare = |j: usize| j.is_multiple_of(1000);
        let got = coarse_top(&coarse, 50, 0.0, rare);
        assert!(got.iter().all(|&(_, j)| rare(j)) && got.len() == 20);
    }
    use rand::{Rng, SeedableRng};

    fn random(seed: u64, n: usize, dim: usize) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n * dim)
            .map(|_| rng.random_range(-10.0f32..10.0))
            .collect()
    }

    #[test]
    fn blocked_matches_naive_with_near_duplicates() {
        let (n, dim) = (700, 33);
        let mut v = random(9, n, dim);
        // Planted near-duplicates and exact duplicates far from the origin (worst case
        // for the norm form): rows 1..=20 copy row 0 plus tiny noise; row 21 = row 0.
        let mut rng = rand::rngs::StdRng::seed_from_u64(10);
        for x in v[..dim].iter_mut() {
            *x += 1000.0;
        }
        for r in 1..=21 {
            for d in 0..dim {
                let noise = if r == 21 {
                    0.0
                } else {
                    rng.random_range(-1e-3f32..1e-3)
                };
                v[r * dim + d] = v[d] + noise;
            }
        }
        let data = Data::new(dim, &v);
        for space in [Space::L2, Space::Dot] {
            let got = all_neighbors(data, space, 3, &Deadline::none()).expect("no deadline");
            assert_eq!(got.len(), n);
            for (q, got_q) in got.iter().enumerate() {
                let want = naive_neighbors(data, space, q, 3, |_| true);
                let gi: Vec<usize> = got_q.iter().map(|x| x.0).collect();
                let wi: Vec<usize> = want.iter().map(|x| x.0).collect();
                assert_eq!(gi, wi, "{space:?} row {q}");
                for (g, w) in got_q.iter().zip(&want) {
                    assert!((g.1 - w.1).abs() <= 1e-9 * w.1.abs().max(1.0));
                }
            }
        }
    }

    #[test]
    fn symmetric_path_matches_naive() {
        // Large enough for the symmetric path (n >= 2 blocks), with exact duplicates,
        // near-duplicate clusters far from the origin, and integer data full of ties.
        let (n, dim) = (1300, 16);
        let mut v = random(11, n, dim);
        for x in v[..dim].iter_mut() {
            *x += 5000.0;
        }
        for r in 1..=30 {
            for d in 0..dim {
                v[r * dim + d] = v[d] + if r % 3 == 0 { 0.0 } else { 1e-3 * r as f32 };
            }
        }
        for x in v[600 * dim..].iter_mut() {
            *x = x.round();
        }
        let data = Data::new(dim, &v);
        for space in [Space::L2, Space::Dot] {
            let got = all_neighbors(data, space, 2, &Deadline::none()).expect("no deadline");
            for (q, g) in got.iter().enumerate() {
                let want = naive_neighbors(data, space, q, 2, |_| true);
                assert_eq!(
                    g.iter().map(|x| x.0).collect::<Vec<_>>(),
                    want.iter().map(|x| x.0).collect::<Vec<_>>(),
                    "{space:?} row {q}"
                );
            }
        }
    }

    #[test]
    fn large_m_uses_selection_and_matches() {
        let (n, dim) = (300, 8);
        let v = random(3, n, dim);
        let data = Data::new(dim, &v);
        let q: Vec<usize> = (0..n).step_by(7).collect();
        let exact = Exact::new(data, Space::L2);
        let got = for_each_query(data, Space::L2, &q, &Deadline::none(), |q, row| {
            exact.top_m(q, row, 100, |j| j % 3 != 0)
        })
        .expect("no deadline");
        for (i, &qq) in q.iter().enumerate() {
            let want = naive_neighbors(data, Space::L2, qq, 100, |j| j % 3 != 0);
            assert_eq!(
                got[i].iter().map(|x| x.0).collect::<Vec<_>>(),
                want.iter().map(|x| x.0).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn expired_deadline_stops() {
        let v = random(1, 200, 4);
        let d = Deadline::new(Some(std::time::Instant::now()));
        let r = all_neighbors(Data::new(4, &v), Space::L2, 2, &d);
        assert!(matches!(r, Err(EvalError::DeadlineExceeded { .. })));
    }
}
