//! Deep leave-one-out rankings for most rows of a data set, each unordered
//! pair scored once.
//!
//! MAP@R ranks R neighbours per query, R being the query's class size − 1, so
//! it needs hundreds of neighbours for every row. The per-query path
//! ([`for_each_query`]) multiplies every query against every row and selects from
//! a full row of scores; this path halves the multiplication and never holds a
//! full row:
//!
//! 1. **Cut-offs.** Each query row's cut-off is guessed from a strided sample of
//!    the columns: the coarse score at about twice the rank it needs.
//! 2. **Panels.** Panels of rows are multiplied against the columns at and after
//!    them. A coarse score goes to the row's candidate list and to the column's
//!    when it is under that row's cut-off (plus its error bound).
//! 3. **Finishing.** Panels are handed out in order. Once every panel up to a
//!    row's own is done, no score for that row is still to come: its list is cut
//!    to the candidates [`Exact::top_m`] would keep, re-measured in f64, sorted,
//!    handed to `f` and freed. So lists live only between a row's first and last
//!    score, not for the whole pass.
//!
//! A row whose guessed cut-off kept fewer than it needs is redone by the
//! per-query path, so the answer is exactly [`Exact::top_m`]'s.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::knn::{
    Exact, Neighbor, coarse_slack, for_each_query, gemm_block, norms, score_block, spare,
    squared_norm,
};
use crate::{Data, Deadline, EvalError, Result, Space, exact_distance};

/// Rows per panel.
const PANEL: usize = 256;
/// Columns per GEMM strip (a panel × strip tile of scores stays in cache).
const STRIP: usize = 2048;
/// Every STRIDE-th row is a column of the cut-off sample.
const STRIDE: usize = 16;
/// Scores tested together in the emission loop (bits of a u32 mask).
const LANES: usize = 16;

/// How deep to rank and what must be exact.
#[derive(Debug, Clone, Copy)]
pub struct Ranking<'k> {
    /// Neighbours per query (`m`).
    pub depth: usize,
    /// Leading neighbours whose distances are re-measured in f64.
    pub exact: usize,
    /// A label per row: past `exact`, rows of one label may keep f32 order
    /// among themselves where f32 cannot order them.
    pub key: Option<&'k [u32]>,
}

/// The `m` (`ranking.depth`) exact nearest other rows of every row in `queries`, by (distance,
/// index), passed to `f(query, neighbours)`; results in `queries` order. The
/// neighbours and their order equal [`Exact::top_m`]'s with no filter; the
/// first `ranking.exact` distances are re-measured in f64, later ones may be the f32
/// pass's (within its error bound), which is all a ranking metric needs.
/// With `ranking.key` (a label per row), neighbours past the first `exact` whose
/// distances are within that error of each other and share a key may stay in
/// f32 order: the sequence of keys is still exact, which is what MAP@R reads. Uses the pairwise path when
/// the queries are at least half the rows (distinct) and `m` is small next to
/// the row count, the per-query path otherwise.
pub fn for_each_query_top<T, F>(
    data: Data<'_>,
    space: Space,
    queries: &[usize],
    ranking: Ranking<'_>,
    deadline: &Deadline,
    f: F,
) -> Result<Vec<T>>
where
    T: Send,
    F: Fn(usize, &[Neighbor]) -> T + Sync,
{
    let Ranking {
        depth: m,
        exact,
        key,
    } = ranking;
    let n = data.len();
    let m = m.min(n.saturating_sub(1));
    let keep = m + spare(m);
    let rank = (2 * keep / STRIDE + 16).min((n / STRIDE).saturating_sub(1));
    if m > 0 && pairwise_fits(n, keep, queries) {
        pairwise(data, space, queries, m, exact, key, rank, deadline, &f)
    } else {
        let exact = Exact::new(data, space);
        for_each_query(data, space, queries, deadline, |q, row| {
            f(q, &exact.top_m(q, row, m, |_| true))
        })
    }
}

/// The pairwise path pays when most rows are queries, a sampled cut-off can be
/// trusted (enough sample columns, the rank well inside them) and the queries
/// are distinct rows.
fn pairwise_fits(n: usize, keep: usize, queries: &[usize]) -> bool {
    if queries.len() * 2 < n || n < keep * 8 || n / STRIDE < 128 {
        return false;
    }
    let mut seen = vec![false; n];
    queries
        .iter()
        .all(|&q| q < n && !std::mem::replace(&mut seen[q], true))
}

/// Per-row state shared by the panel workers.
struct Rows<'a> {
    data: Data<'a>,
    space: Space,
    exact: Exact<'a>,
    /// Squared norms (L2 only).
    norms: Vec<f32>,
    /// Guessed cut-off per row; −∞ for rows that are not queries.
    cut: Vec<f32>,
    /// Coarse-score error bound per row.
    slack: Vec<f32>,
    /// Candidate (coarse score, column) lists, filled by any panel.
    lists: Vec<Mutex<Vec<(f32, u32)>>>,
    /// Column terms of the spaces without norms.
    zeros: Vec<f32>,
    /// Rows with equal keys are interchangeable past the exact prefix.
    key: Option<&'a [u32]>,
}

#[allow(clippy::too_many_arguments)]
fn pairwise<'a, T, F>(
    data: Data<'a>,
    space: Space,
    queries: &[usize],
    m: usize,
    exact: usize,
    key: Option<&'a [u32]>,
    rank: usize,
    deadline: &Deadline,
    f: &F,
) -> Result<Vec<T>>
where
    T: Send,
    F: Fn(usize, &[Neighbor]) -> T + Sync,
{
    let n = data.len();
    let keep = m + spare(m);
    let exact_prefix = exact;
    let exact = Exact::new(data, space);
    let norms = if space == Space::L2 {
        norms(data)
    } else {
        Vec::new()
    };
    let mut is_query = vec![false; n];
    for &q in queries {
        is_query[q] = true;
    }
    let slack: Vec<f32> = (0..n)
        .map(|i| {
            let nq = if space == Space::Cosine {
                1.0
            } else {
                squared_norm(data.row(i))
            };
            coarse_slack(data.dim, nq, exact.max_norm)
        })
        .collect();
    let cut = cut_offs(data, space, &norms, &is_query, rank, deadline)?;
    let rows = Rows {
        data,
        space,
        exact,
        norms,
        cut,
        slack,
        lists: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
        zeros: vec![0.0; STRIP],
        key,
    };

    let panels = n.div_ceil(PANEL);
    let next = AtomicUsize::new(0);
    let done: Vec<AtomicBool> = (0..panels).map(|_| AtomicBool::new(false)).collect();
    let finished_upto = Mutex::new(0usize);
    let workers = rayon::current_num_threads().max(1);
    let outs: Vec<Result<Finished<T>>> = (0..workers)
        .into_par_iter()
        .map(|_| {
            let mut out = Finished {
                results: Vec::new(),
                redo: Vec::new(),
            };
            let mut c = Vec::new();
            let mut own: Vec<Vec<(f32, u32)>> = vec![Vec::new(); PANEL];
            let mut pend: Vec<Vec<(f32, u32)>> = vec![Vec::new(); STRIP];
            loop {
                let p = next.fetch_add(1, Ordering::Relaxed);
                if p >= panels {
                    return Ok(out);
                }
                rows.panel(p, &mut c, &mut own, &mut pend, deadline)
                    .map_err(|()| EvalError::DeadlineExceeded {
                        done: p,
                        total: panels,
                    })?;
                done[p].store(true, Ordering::Release);
                // Finish every panel whose predecessors are all done.
                let ready = {
                    let mut upto = finished_upto.lock().unwrap_or_else(|e| e.into_inner());
                    let start = *upto;
                    while *upto < panels && done[*upto].load(Ordering::Acquire) {
                        *upto += 1;
                    }
                    start..*upto
                };
                for q in ready {
                    let panel_rows = q * PANEL..((q + 1) * PANEL).min(n);
                    for i in panel_rows.filter(|&i| is_query[i]) {
                        match rows.finish(i, m, keep, exact_prefix) {
                            Some(nn) => out.results.push((i, f(i, &nn))),
                            None => out.redo.push(i),
                        }
                    }
                }
            }
        })
        .collect();

    let mut by_row: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut redo = Vec::new();
    for o in outs {
        let o = o?;
        for (i, t) in o.results {
            by_row[i] = Some(t);
        }
        redo.extend(o.redo);
    }
    if !redo.is_empty() {
        redo.sort_unstable();
        let fixed = for_each_query(data, space, &redo, deadline, |q, row| {
            f(q, &rows.exact.top_m(q, row, m, |_| true))
        })?;
        for (i, t) in redo.into_iter().zip(fixed) {
            by_row[i] = Some(t);
        }
    }
    Ok(queries
        .iter()
        .map(|&q| {
            by_row[q]
                .take()
                .expect("every query row is finished or redone")
        })
        .collect())
}

/// What one worker finished: results by row, and rows to redo.
struct Finished<T> {
    results: Vec<(usize, T)>,
    redo: Vec<usize>,
}

/// Per query row, the coarse score at `rank` among a strided sample of columns
/// (about twice the `keep`-th smallest over all columns); −∞ for other rows.
fn cut_offs(
    data: Data<'_>,
    space: Space,
    norms: &[f32],
    is_query: &[bool],
    rank: usize,
    deadline: &Deadline,
) -> Result<Vec<f32>> {
    let n = data.len();
    let dim = data.dim;
    let sample: Vec<usize> = (0..n).step_by(STRIDE).collect();
    let mut vectors = Vec::with_capacity(sample.len() * dim);
    for &j in &sample {
        vectors.extend_from_slice(data.row(j));
    }
    let sample_norms: Vec<f32> = sample
        .iter()
        .filter_map(|&j| norms.get(j).copied())
        .collect();
    let sdata = Data::new(dim, &vectors);
    let starts: Vec<usize> = (0..n).step_by(PANEL).collect();
    let total = starts.len();
    let parts: Vec<Result<Vec<f32>>> = starts
        .par_iter()
        .enumerate()
        .map_init(
            || (Vec::<f32>::new(), Vec::<f32>::new()),
            |(c, tmp), (bi, &i0)| {
                if deadline.expired() {
                    return Err(EvalError::DeadlineExceeded { done: bi, total });
                }
                let i1 = (i0 + PANEL).min(n);
                let qn = if norms.is_empty() {
                    &[][..]
                } else {
                    &norms[i0..i1]
                };
                score_block(
                    sdata,
                    &sample_norms,
                    space,
                    &data.vectors[i0 * dim..i1 * dim],
                    qn,
                    c,
                );
                Ok(c.chunks_exact(sample.len())
                    .enumerate()
                    .map(|(r, row)| {
                        if !is_query[i0 + r] {
                            return f32::NEG_INFINITY;
                        }
                        tmp.clear();
                        tmp.extend_from_slice(row);
                        let (_, cut, _) = tmp.select_nth_unstable_by(rank, f32::total_cmp);
                        *cut
                    })
                    .collect())
            },
        )
        .collect();
    let mut cut = Vec::with_capacity(n);
    for p in parts {
        cut.extend(p?);
    }
    Ok(cut)
}

impl Rows<'_> {
    /// Scores panel `p`'s rows against every column at or after the panel and
    /// sends each score under a cut-off to that row's list. `Err` when the
    /// deadline passed.
    fn panel(
        &self,
        p: usize,
        c: &mut Vec<f32>,
        own: &mut [Vec<(f32, u32)>],
        pend: &mut [Vec<(f32, u32)>],
        deadline: &Deadline,
    ) -> std::result::Result<(), ()> {
        let (data, n, dim) = (self.data, self.data.len(), self.data.dim);
        let i0 = p * PANEL;
        let i1 = (i0 + PANEL).min(n);
        let a = &data.vectors[i0 * dim..i1 * dim];
        let mut j0 = i0;
        while j0 < n {
            if deadline.expired() {
                return Err(());
            }
            let j1 = (j0 + STRIP).min(n);
            let strip = Data::new(dim, &data.vectors[j0 * dim..j1 * dim]);
            gemm_block(strip, a, c);
            let col_terms = if self.space == Space::L2 {
                &self.norms[j0..j1]
            } else {
                &self.zeros[..j1 - j0]
            };
            self.emit(i0, i1 - i0, j0, c, col_terms, own, pend);
            self.hand_over(j0, &mut pend[..j1 - j0]);
            j0 = j1;
        }
        self.hand_over(i0, &mut own[..i1 - i0]);
        Ok(())
    }

    /// Moves buffered candidates to the shared lists of rows `first..`, one lock
    /// per row that has any.
    fn hand_over(&self, first: usize, bufs: &mut [Vec<(f32, u32)>]) {
        for (t, buf) in bufs.iter_mut().enumerate() {
            if !buf.is_empty() {
                self.lists[first + t]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .append(buf);
            }
        }
    }

    /// One tile of dot products `c` (panel rows from `i0` × strip columns from
    /// `j0`): scores over pairs with column > row go to the row (`own`) and to
    /// the column (`pend`) when under their cut-offs. A coarse score is
    /// `max(row_term + col_term − scale·g, floor)`: L2 `‖q‖² + ‖x‖² − 2g`,
    /// cosine `1 − g`, dot `−g`.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        i0: usize,
        rows: usize,
        j0: usize,
        c: &[f32],
        col_terms: &[f32],
        own: &mut [Vec<(f32, u32)>],
        pend: &mut [Vec<(f32, u32)>],
    ) {
        let w = c.len() / rows;
        let (scale, floor) = match self.space {
            Space::L2 => (2.0, 0.0),
            Space::Cosine => (1.0, 0.0),
            Space::Dot => (1.0, f32::NEG_INFINITY),
        };
        let lim_cols: Vec<f32> = (j0..j0 + w).map(|j| self.cut[j] + self.slack[j]).collect();
        for (r, row) in c.chunks_exact(w).enumerate() {
            let i = i0 + r;
            let lim = self.cut[i] + self.slack[i];
            let row_term = match self.space {
                Space::L2 => self.norms[i],
                Space::Cosine => 1.0,
                Space::Dot => 0.0,
            };
            // Within the diagonal tile only columns after the row: each pair once.
            let start = if j0 <= i { i + 1 - j0 } else { 0 };
            // Almost every score is under neither cut-off: score and test LANES at
            // a time (this vectorises) and look closer only at a lane group with a hit.
            let mut off = start;
            while off < w {
                let end = (off + LANES).min(w);
                let mut s = [0.0f32; LANES];
                let (row_hits, col_hits) = if end - off == LANES {
                    score_lanes(
                        &row[off..end],
                        &col_terms[off..end],
                        &lim_cols[off..end],
                        (row_term, scale, floor, lim),
                        &mut s,
                    )
                } else {
                    let (mut rh, mut ch) = (0u32, 0u32);
                    for t in 0..end - off {
                        s[t] = (row_term + col_terms[off + t] - scale * row[off + t]).max(floor);
                        rh |= u32::from(s[t] <= lim) << t;
                        ch |= u32::from(s[t] <= lim_cols[off + t]) << t;
                    }
                    (rh, ch)
                };
                let mut bits = row_hits;
                while bits != 0 {
                    let t = bits.trailing_zeros() as usize;
                    own[r].push((s[t], (j0 + off + t) as u32));
                    bits &= bits - 1;
                }
                let mut bits = col_hits;
                while bits != 0 {
                    let t = bits.trailing_zeros() as usize;
                    pend[off + t].push((s[t], i as u32));
                    bits &= bits - 1;
                }
                off = end;
            }
        }
    }

    /// Row `i`'s ranking from its complete list, or `None` when its cut-off kept
    /// fewer than `keep` (the caller redoes it). The order is exact; distances
    /// are re-measured in f64 for the first `exact` neighbours and wherever two
    /// coarse scores are too close to order (unless all rows that close share
    /// a key), and are the coarse score's elsewhere.
    fn finish(&self, i: usize, m: usize, keep: usize, exact: usize) -> Option<Vec<Neighbor>> {
        let list = std::mem::take(&mut *self.lists[i].lock().unwrap_or_else(|e| e.into_inner()));
        let cut = self.cut[i];
        if list.iter().filter(|x| x.0 <= cut).count() < keep {
            return None;
        }
        // As `coarse_top`: the `keep` smallest by (score, column), plus any other
        // within the error bound of the largest of them.
        // Packed as u64 keys in (score, column) order, which sort fastest.
        let mut keys: Vec<u64> = list.iter().map(|&(s, j)| pack(s, j)).collect();
        drop(list);
        keys.select_nth_unstable(keep - 1);
        let slack = self.slack[i];
        let limit = unpack(keys[keep - 1]).0 + slack;
        let mut n_cands = keep;
        for t in keep..keys.len() {
            if unpack(keys[t]).0 <= limit {
                keys.swap(n_cands, t);
                n_cands += 1;
            }
        }
        keys.truncate(n_cands);
        keys.sort_unstable();
        let list: Vec<(f32, u32)> = keys.into_iter().map(unpack).collect();
        // Runs of coarse scores with gaps within `slack` may be misordered; runs
        // further apart than that are ordered correctly by the coarse scores.
        let q = self.data.row(i);
        let mut out: Vec<Neighbor> = Vec::with_capacity(m);
        let mut g0 = 0;
        while g0 < list.len() && out.len() < m {
            let mut g1 = g0 + 1;
            while g1 < list.len() && list[g1].0 - list[g1 - 1].0 <= slack {
                g1 += 1;
            }
            let run = &list[g0..g1];
            // Past the exact prefix a run needs no re-measure when its order cannot
            // matter: one element, or all of one key.
            let settled = g1 - g0 == 1
                || self.key.is_some_and(|key| {
                    run.iter()
                        .all(|x| key[x.1 as usize] == key[run[0].1 as usize])
                });
            if settled && out.len() >= exact {
                out.extend(
                    run.iter()
                        .map(|&(s, j)| (j as usize, coarse_distance(self.space, s))),
                );
            } else {
                let mut run: Vec<Neighbor> = run
                    .iter()
                    .map(|&(_, j)| {
                        let j = j as usize;
                        (j, exact_distance(self.space, q, self.data.row(j)))
                    })
                    .collect();
                run.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                out.extend(run);
            }
            g0 = g1;
        }
        out.truncate(m);
        Some(out)
    }
}

/// Scores of one full lane group into `s`, and bit masks of the lanes under
/// the row's limit and under their column's.
#[inline(always)]
fn score_lanes(
    g: &[f32],
    col_terms: &[f32],
    lim_cols: &[f32],
    (row_term, scale, floor, lim): (f32, f32, f32, f32),
    s: &mut [f32; LANES],
) -> (u32, u32) {
    let (g, col_terms, lim_cols) = (&g[..LANES], &col_terms[..LANES], &lim_cols[..LANES]);
    let (mut row_hits, mut col_hits) = (0u32, 0u32);
    for t in 0..LANES {
        s[t] = (row_term + col_terms[t] - scale * g[t]).max(floor);
    }
    for t in 0..LANES {
        row_hits |= u32::from(s[t] <= lim) << t;
        col_hits |= u32::from(s[t] <= lim_cols[t]) << t;
    }
    (row_hits, col_hits)
}

/// (score, column) as a u64 whose integer order is `f32::total_cmp` on the
/// score, then the column.
fn pack(s: f32, j: u32) -> u64 {
    let b = s.to_bits();
    let ordered = if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    };
    (u64::from(ordered) << 32) | u64::from(j)
}

fn unpack(k: u64) -> (f32, u32) {
    let ordered = (k >> 32) as u32;
    let b = if ordered & 0x8000_0000 != 0 {
        ordered & 0x7fff_ffff
    } else {
        !ordered
    };
    (f32::from_bits(b), k as u32)
}

/// A coarse score in the units of [`exact_distance`].
fn coarse_distance(space: Space, s: f32) -> f64 {
    match space {
        Space::L2 => f64::from(s.max(0.0)).sqrt(),
        Space::Cosine | Space::Dot => f64::from(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knn::naive_neighbors;

    fn clustered(seed: u64, n: usize, dim: usize, clusters: usize) -> Vec<f32> {
        let mut s = crate::sample::SplitMix(seed);
        let mut unit = move || (s.next_u64() >> 11) as f32 / (1u64 << 53) as f32;
        let centres: Vec<f32> = (0..clusters * dim).map(|_| unit() * 4.0 - 2.0).collect();
        let mut out = Vec::with_capacity(n * dim);
        for i in 0..n {
            let c = i % clusters;
            for d in 0..dim {
                out.push(centres[c * dim + d] + (unit() - 0.5) * 0.6);
            }
        }
        // A few exact duplicates, which the norm form scores worst.
        let row = out[..dim].to_vec();
        for i in [7usize, 300, 4000].into_iter().filter(|&i| i < n) {
            out[i * dim..(i + 1) * dim].copy_from_slice(&row);
        }
        out
    }

    fn check(space: Space, queries: &[usize], m: usize, rank: Option<usize>) {
        let dim = 12;
        let mut v = clustered(5, 4200, dim, 30);
        if space == Space::Cosine {
            for row in v.chunks_exact_mut(dim) {
                let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                row.iter_mut().for_each(|x| *x /= norm);
            }
        }
        let data = Data::new(dim, &v);
        assert!(pairwise_fits(data.len(), m + spare(m), queries));
        let got = match rank {
            Some(rank) => pairwise(
                data,
                space,
                queries,
                m,
                3,
                None,
                rank,
                &Deadline::none(),
                &|_, nn| nn.to_vec(),
            ),
            None => for_each_query_top(
                data,
                space,
                queries,
                Ranking {
                    depth: m,
                    exact: 3,
                    key: None,
                },
                &Deadline::none(),
                |_, nn| nn.to_vec(),
            ),
        }
        .expect("no deadline");
        assert_eq!(got.len(), queries.len());
        for (&q, nn) in queries.iter().zip(&got).step_by(37) {
            let want = naive_neighbors(data, space, q, m, |_| true);
            let ids = |v: &[Neighbor]| v.iter().map(|x| x.0).collect::<Vec<_>>();
            assert_eq!(ids(nn), ids(&want), "row {q} ({space:?})");
        }
        // Every row against the per-query path.
        let exact = Exact::new(data, space);
        let per_query = for_each_query(data, space, queries, &Deadline::none(), |q, row| {
            exact.top_m(q, row, m, |_| true)
        })
        .expect("no deadline");
        // Same neighbours in the same order; the first 3 distances exact, the
        // rest within the f32 pass's error.
        for (q, (a, b)) in got.iter().zip(&per_query).enumerate() {
            assert_eq!(
                a.iter().map(|x| x.0).collect::<Vec<_>>(),
                b.iter().map(|x| x.0).collect::<Vec<_>>(),
                "row {q} ({space:?})"
            );
            for (t, (x, y)) in a.iter().zip(b).enumerate() {
                if t < 3 {
                    assert_eq!(x.1, y.1, "row {q} rank {t}");
                } else {
                    assert!(
                        (x.1 - y.1).abs() <= 1e-4 * (1.0 + y.1.abs()),
                        "row {q} rank {t}"
                    );
                }
            }
        }
    }

    #[test]
    fn pairwise_equals_the_per_query_path_in_every_space() {
        let all: Vec<usize> = (0..4200).collect();
        for space in [Space::L2, Space::Cosine, Space::Dot] {
            check(space, &all, 40, None);
        }
    }

    #[test]
    fn with_keys_the_sequence_of_keys_is_exact() {
        let dim = 12;
        // Far from the origin the norm form loses most digits, so runs of scores
        // too close to order in f32 are common.
        let v: Vec<f32> = clustered(5, 4200, dim, 30)
            .iter()
            .map(|x| x + 40.0)
            .collect();
        let data = Data::new(dim, &v);
        // Labels follow the clusters, with a tenth of them wrong.
        let labels: Vec<u32> = (0..4200u32)
            .map(|i| {
                if i % 10 == 3 {
                    1 + (i * 7) % 30
                } else {
                    1 + i % 30
                }
            })
            .collect();
        let all: Vec<usize> = (0..4200).collect();
        let m = 160;
        let got = for_each_query_top(
            data,
            Space::L2,
            &all,
            Ranking {
                depth: m,
                exact: 5,
                key: Some(&labels),
            },
            &Deadline::none(),
            |_, nn| nn.to_vec(),
        )
        .expect("no deadline");
        let exact = Exact::new(data, Space::L2);
        let want = for_each_query(data, Space::L2, &all, &Deadline::none(), |q, row| {
            exact.top_m(q, row, m, |_| true)
        })
        .expect("no deadline");
        for (q, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_eq!(a[..5], b[..5], "row {q}: the exact prefix");
            let keys = |v: &[Neighbor]| v.iter().map(|x| labels[x.0]).collect::<Vec<_>>();
            assert_eq!(keys(a), keys(b), "row {q}: the key sequence");
        }
    }

    #[test]
    fn a_subset_of_queries_in_any_order() {
        let mut some: Vec<usize> = (0..4200).filter(|i| i % 3 != 0).collect();
        some.reverse();
        check(Space::L2, &some, 25, None);
    }

    #[test]
    fn rows_whose_cut_off_kept_too_few_are_redone() {
        // Rank 0 guesses the smallest sampled score: far too low for most rows.
        let all: Vec<usize> = (0..4200).collect();
        check(Space::L2, &all, 40, Some(0));
    }

    #[test]
    fn packed_keys_sort_as_total_cmp_then_column() {
        let mut v = [
            (1.5f32, 3u32),
            (-2.0, 9),
            (0.0, 1),
            (-0.0, 4),
            (1.5, 2),
            (f32::INFINITY, 0),
            (-7.25, 5),
        ];
        let mut keys: Vec<u64> = v.iter().map(|&(s, j)| pack(s, j)).collect();
        keys.sort_unstable();
        v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let back: Vec<(f32, u32)> = keys.into_iter().map(unpack).collect();
        assert_eq!(
            back.iter()
                .map(|x| (x.0.to_bits(), x.1))
                .collect::<Vec<_>>(),
            v.iter().map(|x| (x.0.to_bits(), x.1)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn small_inputs_take_the_per_query_path() {
        let v = clustered(9, 300, 4, 5);
        let data = Data::new(4, &v);
        let all: Vec<usize> = (0..300).collect();
        assert!(!pairwise_fits(300, 10, &all));
        let got = for_each_query_top(
            data,
            Space::L2,
            &all,
            Ranking {
                depth: 6,
                exact: 6,
                key: None,
            },
            &Deadline::none(),
            |q, nn| (q, nn.to_vec()),
        )
        .expect("no deadline");
        for (q, nn) in got.iter().step_by(11) {
            assert_eq!(nn, &naive_neighbors(data, Space::L2, *q, 6, |_| true));
        }
    }

    #[test]
    fn expired_deadline_stops() {
        let v = clustered(1, 4200, 12, 30);
        let data = Data::new(12, &v);
        let all: Vec<usize> = (0..4200).collect();
        let d = Deadline::new(Some(std::time::Instant::now()));
        let r = for_each_query_top(
            data,
            Space::L2,
            &all,
            Ranking {
                depth: 40,
                exact: 2,
                key: None,
            },
            &d,
            |_, nn| nn.len(),
        );
        assert!(matches!(r, Err(EvalError::DeadlineExceeded { .. })));
    }
}
