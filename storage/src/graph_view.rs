//! The graph our searches walk: hnsw_rs builds it, we export it into flat arrays, improve its
//! bottom layer, make every node reachable, and search it with our own routine.
//!
//! Why our own copy:
//! - hnsw_rs 0.3.5's `search` descends the upper layers one hop per layer (it scans the pivot's
//!   neighbours once instead of walking until no neighbour is closer). On well-separated clusters
//!   layer 0 then starts in the wrong cluster and never leaves it. We descend to convergence on
//!   every upper layer, then run a beam of width `ef` on layer 0.
//! - hnsw_rs keeps a node's layer-0 list as its `2M` *nearest* inserted neighbours: each reverse
//!   link pushes the new point and drops the farthest, where hnswlib re-runs the diversity
//!   heuristic. In dense or near-duplicate clusters the lists fill with near twins, long links
//!   between clusters are dropped, and a node whose every in-link was dropped is unreachable (1 %
//!   of Fashion-MNIST, over 10 % of tight twin clusters). So on export each node's layer-0 list
//!   is re-selected from its out- and in-links by the same heuristic hnswlib applies (keep a
//!   candidate only when it is closer to the node than to every neighbour kept so far, nearest
//!   first, at most `2M`), each kept link gets its reverse where the target has room (as
//!   hnswlib links a new point back from its neighbours), and then every node still
//!   unreachable from the entry point is linked in from its nearest reachable nodes.
//! - The upper layers have the same flaw: on well-separated clusters they split into one island
//!   per cluster, the greedy descent ends in the entry's cluster and layer 0 offers no way out.
//!   Their lists are selected again by the same heuristic (from the whole layer when it is small),
//!   and each upper node's long links are offered to its layer-0 selection beyond the cap.
//!
//! Distances use our SIMD kernel; no locks or `Arc`s per visited node.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use rayon::prelude::*;

use crate::ann::{HnswIndex, RawGraph};
use crate::distance::l2sq;
use crate::error::Result;

/// Total order on f32 distances for the heaps.
#[derive(Debug, Clone, Copy, PartialEq)]
struct D(f32);
impl Eq for D {}
impl PartialOrd for D {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for D {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// What making the graph whole took.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkStats {
    /// Nodes unreachable from the entry point after the layer-0 refinement.
    pub orphans: usize,
    /// Of those, linked from a node whose list was already full (the list grew past `2M`).
    pub over_budget: usize,
}

#[derive(Debug, Default)]
pub struct GraphView {
    /// Slots below this were in the graph when it was exported.
    pub covers: usize,
    entry: Option<u32>,
    max_level: usize,
    /// Layer 0 adjacency, CSR by slot.
    offsets: Vec<u32>,
    targets: Vec<u32>,
    /// Layers 1.. : slot → neighbours (few points live there).
    upper: Vec<HashMap<u32, Vec<u32>>>,
    /// Whether each slot below `covers` is a node.
    present: Vec<bool>,
    pub link_stats: LinkStats,
    /// [`HnswIndex::id`] of the graph this view was exported from (or adopted by).
    source: AtomicU64,
    /// Nodes whose list was selected in this export (the rest came from the previous view).
    pub refined: usize,
    /// How this view's lists were selected.
    pub refine: Refine,
}

/// How much work an export puts into layer 0.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Refine {
    /// From hnsw_rs's out- and in-links only: while a bulk load is being indexed.
    #[default]
    Quick,
    /// Also from the neighbours' lists: once the indexer has caught up, after a rebuild or a load.
    Polish,
}

thread_local! {
    /// Per-thread visited marks with an epoch, so a search never clears a big array.
    static VISITED: RefCell<(Vec<u32>, u32)> = const { RefCell::new((Vec::new(), 0)) };
}

/// The descent scans an upper layer above layer 1 whole when its nodes hold at most this many
/// floats (the cost of 512 distances at 128 dimensions, a few microseconds). Layer 1 holds 1/M of
/// the points: scanning it would cost as much as the search on small sets.
const UPPER_SCAN_FLOATS: usize = 65_536;

/// Polish: neighbours (nearest first) whose own lists join a node's candidates.
const TWO_HOP_FANOUT: usize = 8;

impl GraphView {
    /// Exports the graph below slot `covers` (the watermark at export time), refines layer 0 and
    /// links every unreachable node in. `m` is the version's M (layer 0 keeps at most `2M`).
    ///
    /// [`Refine::Quick`] selects every node's list from its hnsw_rs out- and in-links.
    /// [`Refine::Polish`] adds the lists of its nearest neighbours to the candidates and selects
    /// from the `ef_construction / 2` nearest; with `prev`, a polished view of the same graph
    /// (same [`HnswIndex::id`]), only nodes new since `prev` and the nodes whose hnsw_rs lists
    /// they changed are selected again, the rest keep their lists.
    pub fn export(
        index: &HnswIndex,
        covers: usize,
        m: usize,
        ef_construction: usize,
        mode: Refine,
        prev: Option<&GraphView>,
    ) -> Result<GraphView> {
        let raw = index.export_raw(covers)?;
        let prev = prev.filter(|p| {
            mode == Refine::Polish
                && p.refine == Refine::Polish
                && p.source.load(AtomicOrdering::Relaxed) == index.id()
                && p.covers <= covers
        });
        let m0 = (2 * m).max(2);
        let present: Vec<bool> = raw.layers.iter().map(Option::is_some).collect();
        let out0: Vec<&[u32]> = raw
            .layers
            .iter()
            .map(|l| {
                l.as_ref()
                    .and_then(|l| l.first())
                    .map_or(&[][..], Vec::as_slice)
            })
            .collect();
        let mut inn: Vec<Vec<u32>> = vec![Vec::new(); covers];
        for (u, outs) in out0.iter().enumerate() {
            for &v in *outs {
                inn[v as usize].push(u as u32);
            }
        }
        let prev_links = |u: usize| -> &[u32] {
            prev.filter(|p| u < p.covers && p.present[u])
                .map_or(&[][..], |p| p.layer0(u as u32))
        };
        // What to select again: every node, or the new ones and those their insertion touched.
        let mut dirty = vec![prev.is_none(); covers];
        if let Some(p) = prev {
            for u in (0..covers).filter(|&u| present[u] && (u >= p.covers || !p.present[u])) {
                dirty[u] = true;
                for &v in out0[u].iter().chain(&inn[u]) {
                    dirty[v as usize] = true;
                }
            }
        }
        let dist = |a: u32, b: u32| l2sq(raw.vector(a), raw.vector(b));
        let upper = index
            .pool()
            .install(|| select_upper(&raw, m.max(1), ef_construction, mode, &dist));
        // A node's upper-layer links (long ones, across clusters) are layer-0 candidates too.
        let long = |u: usize| -> &[u32] {
            upper
                .first()
                .and_then(|l| l.get(&(u as u32)))
                .map_or(&[][..], Vec::as_slice)
        };
        let (fanout, cap) = match mode {
            Refine::Quick => (0, usize::MAX),
            Refine::Polish => (TWO_HOP_FANOUT, (ef_construction / 2).max(m0)),
        };
        let mut adj: Vec<Vec<u32>> = index.pool().install(|| {
            (0..covers)
                .into_par_iter()
                .map(|u| {
                    if !present[u] {
                        Vec::new()
                    } else if !dirty[u] {
                        prev_links(u).to_vec()
                    } else {
                        let mut c: Vec<u32> = prev_links(u).to_vec();
                        c.extend_from_slice(out0[u]);
                        c.extend_from_slice(&inn[u]);
                        for &v in out0[u].iter().take(fanout) {
                            c.extend_from_slice(out0[v as usize]);
                        }
                        select_diverse(u as u32, c, long(u), m0, cap, &dist)
                    }
                })
                .collect()
        });
        drop(inn);
        add_reverse_links(&mut adj, &dirty, m0);
        let refined = dirty.iter().filter(|&&d| d).count();
        Ok(Self::assemble(
            &raw,
            covers,
            upper,
            adj,
            m0,
            index.id(),
            mode,
            refined,
        ))
    }

    /// The view a committed generation recorded (`links.bin`): no hnsw_rs graph is needed to
    /// serve it. It belongs to no graph until [`GraphView::adopt`] ties it to one.
    pub fn from_links(links: crate::generation::Links, covers: usize) -> Result<GraphView> {
        let crate::generation::Links {
            entry,
            levels,
            offsets,
            targets,
            upper,
        } = links;
        if levels.len() != covers {
            return Err(crate::error::Error::DataCorruption(format!(
                "links.bin covers {} slots, the generation {covers}",
                levels.len()
            )));
        }
        Ok(GraphView {
            covers,
            entry,
            max_level: upper.len(),
            offsets,
            targets,
            upper: upper
                .into_iter()
                .map(|layer| layer.into_iter().collect())
                .collect(),
            present: levels
                .iter()
                .map(|&l| l != crate::generation::NOT_A_NODE)
                .collect(),
            link_stats: LinkStats::default(),
            source: AtomicU64::new(0),
            refined: 0,
            refine: Refine::Polish,
        })
    }

    /// The whole graph as search walks it, for a generation's `links.bin`.
    pub fn links(&self) -> crate::generation::Links {
        let mut levels: Vec<u8> = self
            .present
            .iter()
            .map(|&p| if p { 0 } else { crate::generation::NOT_A_NODE })
            .collect();
        let upper = self
            .upper
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let mut l: Vec<(u32, Vec<u32>)> =
                    layer.iter().map(|(s, n)| (*s, n.clone())).collect();
                l.sort_unstable_by_key(|e| e.0);
                for (s, _) in &l {
                    levels[*s as usize] = levels[*s as usize].max(i as u8 + 1);
                }
                l
            })
            .collect();
        crate::generation::Links {
            entry: self.entry,
            levels,
            offsets: self.offsets.clone(),
            targets: self.targets.clone(),
            upper,
        }
    }

    /// Ties this view to `index`, the graph loaded from the generation the view was read from,
    /// so the next export refines only what later inserts change.
    pub fn adopt(&self, index: &HnswIndex) {
        self.source.store(index.id(), AtomicOrdering::Relaxed);
    }

    /// Whether `slot` is a graph node.
    pub fn is_node(&self, slot: usize) -> bool {
        self.present.get(slot).copied().unwrap_or(false)
    }

    /// Graph nodes in the view.
    pub fn nodes(&self) -> usize {
        self.present.iter().filter(|&&p| p).count()
    }

    /// Whether this view was exported from `index` and covers `covers` slots, polished.
    pub fn is_final_for(&self, index: &HnswIndex, covers: usize) -> bool {
        self.source.load(AtomicOrdering::Relaxed) == index.id()
            && self.covers == covers
            && self.refine == Refine::Polish
    }

    /// Upper layers `upper`, layer 0 from `adj` with every orphan linked in, as CSR.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        raw: &RawGraph<'_>,
        covers: usize,
        upper: Vec<HashMap<u32, Vec<u32>>>,
        mut adj: Vec<Vec<u32>>,
        m0: usize,
        source: u64,
        refine: Refine,
        refined: usize,
    ) -> GraphView {
        let mut view = GraphView {
            covers,
            entry: raw.entry.map(|e| e.1),
            max_level: raw.entry.map_or(0, |e| e.0),
            offsets: Vec::new(),
            targets: Vec::new(),
            upper,
            present: raw.layers.iter().map(Option::is_some).collect(),
            link_stats: LinkStats::default(),
            source: AtomicU64::new(source),
            refined,
            refine,
        };
        view.link_stats = view.link_orphans(&mut adj, m0, &|s| raw.vector(s));
        view.offsets.reserve(covers + 1);
        view.offsets.push(0);
        for a in &adj {
            view.targets.extend_from_slice(a);
            view.offsets.push(view.targets.len() as u32);
        }
        view
    }

    fn layer0(&self, s: u32) -> &[u32] {
        let (a, b) = (
            self.offsets[s as usize] as usize,
            self.offsets[s as usize + 1] as usize,
        );
        &self.targets[a..b]
    }

    /// Nodes that search can never reach: not reachable on layer 0 from the entry point.
    pub fn unreachable(&self) -> Vec<usize> {
        let mut reached = vec![false; self.covers];
        let mut stack: Vec<u32> = self.entry.into_iter().collect();
        for &e in &stack {
            reached[e as usize] = true;
        }
        while let Some(x) = stack.pop() {
            for &n in self.layer0(x) {
                if !reached[n as usize] {
                    reached[n as usize] = true;
                    stack.push(n);
                }
            }
        }
        (0..self.covers)
            .filter(|&s| self.present[s] && !reached[s])
            .collect()
    }

    /// Greedy descent to convergence on every upper layer: the layer-0 start for `dist`.
    fn descend(&self, dim: usize, dist: &impl Fn(u32) -> f32) -> Option<(u32, f32)> {
        let mut ep = self.entry?;
        let mut d_ep = dist(ep);
        for layer in (1..=self.max_level).rev() {
            let Some(adj) = self.upper.get(layer - 1) else {
                continue;
            };
            if layer >= 2 && adj.len().saturating_mul(dim) <= UPPER_SCAN_FLOATS {
                // A small layer is scanned whole: greedy steps among near-equidistant clusters
                // stop at the first local minimum, in a cluster layer 0 may not leave.
                for &n in adj.keys() {
                    let d = dist(n);
                    if d < d_ep || (d == d_ep && n < ep) {
                        ep = n;
                        d_ep = d;
                    }
                }
                continue;
            }
            loop {
                let mut changed = false;
                for &n in adj.get(&ep).map_or(&[][..], Vec::as_slice) {
                    let d = dist(n);
                    if d < d_ep {
                        ep = n;
                        d_ep = d;
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
            }
        }
        Some((ep, d_ep))
    }

    /// Marks every node reachable on layer 0 from the entry point.
    fn reachable(&self, adj: &[Vec<u32>]) -> Vec<bool> {
        let mut reached = vec![false; self.covers];
        if let Some(e) = self.entry {
            mark_from(adj, e, &mut reached);
        }
        reached
    }

    /// Links every node unreachable from the entry point into the graph: the nearest reachable
    /// node with room in its list gets an edge to it (the nearest one, over budget, when every
    /// candidate is full), and it gets an edge back. Orphans are taken in slot order, and what an
    /// orphan's own edges reach becomes reachable with it.
    fn link_orphans<'v>(
        &self,
        adj: &mut [Vec<u32>],
        m0: usize,
        vector: &(dyn Fn(u32) -> &'v [f32] + Sync),
    ) -> LinkStats {
        let mut stats = LinkStats::default();
        let mut reached = self.reachable(adj);
        let mut marks = vec![0u32; self.covers];
        let mut epoch = 0u32;
        for o in 0..self.covers {
            if !self.present[o] || reached[o] {
                continue;
            }
            stats.orphans += 1;
            let q = vector(o as u32);
            let dist = |s: u32| l2sq(q, vector(s));
            let (Some((mut ep, mut d_ep)), Some(entry)) =
                (self.descend(q.len(), &dist), self.entry)
            else {
                break;
            };
            // The descent can end in a part of layer 0 the entry does not reach; start from the
            // entry then, so the beam finds reachable nodes.
            if !reached[ep as usize] {
                (ep, d_ep) = (entry, dist(entry));
            }
            epoch += 1;
            let near = beam(
                |s| adj[s as usize].as_slice(),
                &mut marks,
                epoch,
                ep,
                d_ep,
                m0.max(64),
                &dist,
                &|_| {},
                Some(&|s: usize| reached[s]),
            );
            let o32 = o as u32;
            let target = near
                .iter()
                .find(|(r, _)| adj[*r as usize].len() < m0)
                .or_else(|| {
                    stats.over_budget += usize::from(!near.is_empty());
                    near.first()
                });
            let Some(&(r, _)) = target else {
                continue;
            };
            adj[r as usize].push(o32);
            if let Some(&(r0, _)) = near.first()
                && !adj[o].contains(&r0)
            {
                if adj[o].len() >= m0 {
                    adj[o].pop();
                }
                adj[o].push(r0);
            }
            mark_from(adj, o32, &mut reached);
        }
        stats
    }

    /// Up to `k` (slot, squared L2 distance) pairs passing `pass`, nearest `q` first; `vector(slot)`
    /// is a slot's vector.
    pub fn search<'v>(
        &self,
        k: usize,
        ef: usize,
        q: &[f32],
        vector: impl Fn(u32) -> &'v [f32],
        pass: Option<&(dyn Fn(usize) -> bool + Sync)>,
    ) -> Vec<(usize, f32)> {
        let dist = |s: u32| l2sq(q, vector(s));
        let Some((ep, d_ep)) = self.descend(q.len(), &dist) else {
            return Vec::new();
        };
        let ef = ef.max(k);
        VISITED.with(|v| {
            let (marks, epoch) = &mut *v.borrow_mut();
            if marks.len() < self.covers {
                marks.resize(self.covers, 0);
            }
            *epoch = epoch.wrapping_add(1);
            if *epoch == 0 {
                marks.iter_mut().for_each(|m| *m = 0);
                *epoch = 1;
            }
            let mut out: Vec<(usize, f32)> = beam(
                |s| self.layer0(s),
                marks,
                *epoch,
                ep,
                d_ep,
                ef,
                &dist,
                &|s| crate::os::prefetch(vector(s)),
                pass,
            )
            .into_iter()
            .map(|(s, d)| (s as usize, d))
            .collect();
            out.truncate(k);
            out
        })
    }
}

/// Marks what `from` reaches on layer 0 (iteratively; graphs are deep).
fn mark_from(adj: &[Vec<u32>], from: u32, reached: &mut [bool]) {
    if reached[from as usize] {
        return;
    }
    reached[from as usize] = true;
    let mut stack = vec![from];
    while let Some(x) = stack.pop() {
        for &n in &adj[x as usize] {
            if !reached[n as usize] {
                reached[n as usize] = true;
                stack.push(n);
            }
        }
    }
}

/// hnswlib's neighbour heuristic: of the `cap` candidates nearest to `u`, nearest first, a
/// candidate is kept only when no kept neighbour is closer to it than `u` is; at most `m0`.
fn select_diverse(
    u: u32,
    mut cand: Vec<u32>,
    far: &[u32],
    m0: usize,
    cap: usize,
    dist: &(impl Fn(u32, u32) -> f32 + Sync),
) -> Vec<u32> {
    cand.retain(|&c| c != u);
    cand.sort_unstable();
    cand.dedup();
    let by_distance = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    let mut scored: Vec<(f32, u32)> = cand.into_iter().map(|c| (dist(u, c), c)).collect();
    scored.sort_by(by_distance);
    scored.truncate(cap);
    // Long links compete after the near candidates, whatever the cap cut.
    let mut extra: Vec<(f32, u32)> = far
        .iter()
        .filter(|&&c| c != u && !scored.iter().any(|s| s.1 == c))
        .map(|&c| (dist(u, c), c))
        .collect();
    extra.sort_by(by_distance);
    extra.dedup_by_key(|e| e.1);
    let mut kept: Vec<u32> = Vec::with_capacity(m0);
    for (d, c) in scored.into_iter().chain(extra) {
        if kept.len() >= m0 {
            break;
        }
        if kept.iter().all(|&k| dist(c, k) >= d) {
            kept.push(c);
        }
    }
    kept
}

/// Pairs × dimensions up to which a polished upper layer takes every node of the layer as
/// candidates (about a second of one core at most).
const UPPER_EXACT_BUDGET: usize = 8_000_000_000;

/// The upper layers, each node's list selected again by [`select_diverse`] (at most `m`), then
/// reverse links where there is room. hnsw_rs keeps the `m` nearest there too, so on
/// well-separated clusters the upper layers split into one island per cluster: the descent then
/// cannot leave the entry's cluster, and layer 0 has no link out of it either. Candidates: when
/// polishing a layer small enough ([`UPPER_EXACT_BUDGET`]), the `ef_construction` nearest nodes
/// of the whole layer, as hnswlib's early insertions see them; otherwise hnsw_rs's out- and
/// in-links on that layer and its nearest neighbours' lists.
fn select_upper(
    raw: &RawGraph<'_>,
    m: usize,
    ef_construction: usize,
    mode: Refine,
    dist: &(impl Fn(u32, u32) -> f32 + Sync),
) -> Vec<HashMap<u32, Vec<u32>>> {
    let mut layers: Vec<HashMap<u32, Vec<u32>>> = Vec::new();
    for (slot, ls) in raw.layers.iter().enumerate() {
        for (layer, nbs) in ls.iter().flatten().enumerate().skip(1) {
            if layers.len() < layer {
                layers.resize_with(layer, HashMap::new);
            }
            layers[layer - 1].insert(slot as u32, nbs.clone());
        }
    }
    layers
        .into_iter()
        .map(|out| {
            let mut nodes: Vec<u32> = out.keys().copied().collect();
            nodes.sort_unstable();
            let mut inn: HashMap<u32, Vec<u32>> = HashMap::new();
            for &u in &nodes {
                for &v in &out[&u] {
                    inn.entry(v).or_default().push(u);
                }
            }
            let dim = nodes.first().map_or(0, |&u| raw.vector(u).len());
            let exact = mode == Refine::Polish
                && nodes
                    .len()
                    .saturating_mul(nodes.len())
                    .saturating_mul(dim.max(1))
                    <= UPPER_EXACT_BUDGET;
            let cap = ef_construction.max(m);
            let mut lists: Vec<Vec<u32>> = nodes
                .par_iter()
                .map(|&u| {
                    if exact {
                        let mut all: Vec<(f32, u32)> = nodes
                            .iter()
                            .filter(|&&c| c != u)
                            .map(|&c| (dist(u, c), c))
                            .collect();
                        if all.len() > cap {
                            all.select_nth_unstable_by(cap, |a, b| {
                                a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
                            });
                            all.truncate(cap);
                        }
                        let c = all.into_iter().map(|(_, c)| c).collect();
                        return select_diverse(u, c, &[], m, cap, dist);
                    }
                    let own = &out[&u];
                    let mut c = own.clone();
                    c.extend(inn.get(&u).into_iter().flatten());
                    for v in own.iter().take(TWO_HOP_FANOUT) {
                        c.extend(out.get(v).into_iter().flatten());
                    }
                    c.retain(|x| out.contains_key(x));
                    select_diverse(u, c, &[], m, usize::MAX, dist)
                })
                .collect();
            let at: HashMap<u32, usize> = nodes.iter().enumerate().map(|(i, &u)| (u, i)).collect();
            let forward: Vec<(u32, u32)> = nodes
                .iter()
                .zip(&lists)
                .flat_map(|(&u, l)| l.iter().map(move |&v| (u, v)))
                .collect();
            for (u, v) in forward {
                let l = &mut lists[at[&v]];
                if l.len() < m && !l.contains(&u) {
                    l.push(u);
                }
            }
            nodes.into_iter().zip(lists).collect()
        })
        .collect()
}

/// For every link u → v of a re-selected node u, adds v → u where v's list has room (below
/// `m0`): hnswlib links each new point back from the neighbours it selected; the heuristic alone
/// leaves most lists short and the graph one-directional. Taken in slot order (deterministic).
fn add_reverse_links(adj: &mut [Vec<u32>], dirty: &[bool], m0: usize) {
    let forward: Vec<(u32, u32)> = adj
        .iter()
        .enumerate()
        .filter(|(u, _)| dirty[*u])
        .flat_map(|(u, outs)| outs.iter().map(move |&v| (u as u32, v)))
        .collect();
    for (u, v) in forward {
        let l = &mut adj[v as usize];
        if l.len() < m0 && !l.contains(&u) {
            l.push(u);
        }
    }
}

/// Beam search of width `ef` on layer 0 from `ep`: up to `ef` (slot, distance) pairs passing
/// `pass`, nearest first (ties by slot). `marks[s] == epoch` means visited.
#[allow(clippy::too_many_arguments)]
fn beam<'a>(
    adj: impl Fn(u32) -> &'a [u32],
    marks: &mut [u32],
    epoch: u32,
    ep: u32,
    d_ep: f32,
    ef: usize,
    dist: &impl Fn(u32) -> f32,
    prefetch: &impl Fn(u32),
    pass: Option<&(dyn Fn(usize) -> bool + Sync)>,
) -> Vec<(u32, f32)> {
    let ok = |s: u32| pass.is_none_or(|p| p(s as usize));
    // candidates: nearest first; results: worst first, at most ef passing points.
    let mut cand: BinaryHeap<Reverse<(D, u32)>> = BinaryHeap::new();
    let mut res: BinaryHeap<(D, u32)> = BinaryHeap::new();
    marks[ep as usize] = epoch;
    cand.push(Reverse((D(d_ep), ep)));
    if ok(ep) {
        res.push((D(d_ep), ep));
    }
    while let Some(Reverse((D(d), s))) = cand.pop() {
        if res.len() >= ef && res.peek().is_some_and(|w| d > w.0.0) {
            break;
        }
        let nbs = adj(s);
        for &n in nbs {
            if marks[n as usize] != epoch {
                prefetch(n);
            }
        }
        for &n in nbs {
            let m = &mut marks[n as usize];
            if *m == epoch {
                continue;
            }
            *m = epoch;
            let dn = dist(n);
            let worst = res.peek().map_or(f32::INFINITY, |w| w.0.0);
            if res.len() < ef || dn < worst {
                cand.push(Reverse((D(dn), n)));
                if ok(n) {
                    res.push((D(dn), n));
                    if res.len() > ef {
                        res.pop();
                    }
                }
            }
        }
    }
    let mut out: Vec<(u32, f32)> = res.into_iter().map(|(D(d), s)| (s, d)).collect();
    out.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    out
}
