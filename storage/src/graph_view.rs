//! A read-only copy of an HNSW graph in flat arrays, searched by our own routine.
//!
//! Why: hnsw_rs 0.3.5's `search` descends the upper layers with a single hop per
//! layer (it scans the pivot's neighbours once instead of walking until no
//! neighbour is closer). On well-separated clusters the layer-0 search can then
//! start in the wrong cluster and never leave it. Its insertion descends
//! properly, so the graph is sound; we export it (`Point::get_neighborhood_id`)
//! and search it with the standard algorithm: greedy descent to convergence on
//! every upper layer, then a beam of width `ef` on layer 0. Distances use our
//! SIMD kernel on the store's vectors; no locks or `Arc`s per visited node.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::ann::HnswIndex;

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
}

thread_local! {
    /// Per-thread visited marks with an epoch, so a search never clears a big array.
    static VISITED: RefCell<(Vec<u32>, u32)> = const { RefCell::new((Vec::new(), 0)) };
}

impl GraphView {
    /// Exports the graph; `covers` is the slot watermark at export time.
    pub fn export(index: &HnswIndex, covers: usize) -> GraphView {
        let mut adj0: Vec<Vec<u32>> = vec![Vec::new(); covers];
        let mut upper: Vec<HashMap<u32, Vec<u32>>> = Vec::new();
        let mut entry: Option<(usize, u32)> = None;
        index.for_each_point(|slot, level, layers| {
            if slot >= covers {
                return;
            }
            let s = slot as u32;
            if entry.is_none_or(|(l, e)| level > l || (level == l && s < e)) {
                entry = Some((level, s));
            }
            for (layer, nbs) in layers.iter().enumerate() {
                let ids: Vec<u32> = nbs
                    .iter()
                    .filter(|&&n| n < covers)
                    .map(|&n| n as u32)
                    .collect();
                if layer == 0 {
                    adj0[slot] = ids;
                } else if layer <= level {
                    if upper.len() < layer {
                        upper.resize_with(layer, HashMap::new);
                    }
                    upper[layer - 1].insert(s, ids);
                }
            }
        });
        let mut offsets = Vec::with_capacity(covers + 1);
        let mut targets = Vec::new();
        offsets.push(0u32);
        for a in &adj0 {
            targets.extend_from_slice(a);
            offsets.push(targets.len() as u32);
        }
        GraphView {
            covers,
            entry: entry.map(|e| e.1),
            max_level: entry.map_or(0, |e| e.0),
            offsets,
            targets,
            upper,
        }
    }

    fn layer0(&self, s: u32) -> &[u32] {
        let (a, b) = (
            self.offsets[s as usize] as usize,
            self.offsets[s as usize + 1] as usize,
        );
        &self.targets[a..b]
    }

    /// Up to `k` (slot, distance) pairs passing `pass`, nearest first. `dist(slot)`
    /// is the distance from the query to a slot's vector.
    pub fn search(
        &self,
        k: usize,
        ef: usize,
        dist: impl Fn(u32) -> f32,
        pass: Option<&(dyn Fn(usize) -> bool + Sync)>,
    ) -> Vec<(usize, f32)> {
        let Some(mut ep) = self.entry else {
            return Vec::new();
        };
        let mut d_ep = dist(ep);
        for layer in (1..=self.max_level).rev() {
            let Some(adj) = self.upper.get(layer - 1) else {
                continue;
            };
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
            let epoch = *epoch;
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
                for &n in self.layer0(s) {
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
            let mut out: Vec<(usize, f32)> =
                res.into_iter().map(|(D(d), s)| (s as usize, d)).collect();
            out.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            out.truncate(k);
            out
        })
    }
}
