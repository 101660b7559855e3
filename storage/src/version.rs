//! One version of a collection: its in-memory store, its ANN index, and search.
//!
//! Search = ANN over the indexed slots `[0, indexed_upto)` plus an exact scan of
//! the not-yet-indexed tail `[indexed_upto, len)`, so an acknowledged point is
//! found immediately. Dead slots (deleted or overwritten) are filtered out.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::ann::{AnnIndex, HnswIndex};
use crate::codec::VersionRecord;
use crate::distance::{Metric, normalize};
use crate::error::{Error, Result};
use crate::generation::IndexDir;
use crate::store::{LabelId, Store};

/// A search filter: label in a set (when non-empty) and metadata equality.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub labels: Vec<String>,
    pub metadata: BTreeMap<String, String>,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: u64,
    pub distance: f32,
    pub label: String,
}

/// Search parameters, validated.
#[derive(Debug, Clone, Copy)]
pub struct SearchParams<'a> {
    pub k: usize,
    pub ef: usize,
    pub exact: bool,
    pub filter: Option<&'a Filter>,
}

/// Indexer bookkeeping of one version, guarded by `Version::index`.
#[derive(Debug, Default)]
pub(crate) struct IndexState {
    /// Last committed generation number.
    pub generation: u64,
    /// Generation whose files the current graph maps (kept until replaced).
    pub mapped_generation: Option<u64>,
    /// Slots inserted since the last committed generation.
    pub unpersisted: usize,
    /// When the index last changed (for the idle-persist policy).
    pub last_change: Option<std::time::Instant>,
}

pub struct Version {
    pub record: VersionRecord,
    pub collection: String,
    /// Serialises writers so that op-sequence order equals commit order.
    /// A std Mutex: held across the synced RocksDB write on a blocking thread, never across `.await`.
    pub(crate) writer: Mutex<()>,
    /// Last op sequence written durably (mirrors `seq/<id>` in RocksDB).
    pub(crate) last_seq: AtomicU64,
    /// Read-mostly: searches share it; writers hold it only to apply a committed batch.
    pub(crate) store: RwLock<Store>,
    pub(crate) ann: RwLock<Option<Arc<HnswIndex>>>,
    /// Slots below this are in `ann` (unless they were dead when the indexer reached them).
    pub(crate) indexed_upto: AtomicUsize,
    /// Held by the indexer for one step (insert chunk, persist, rebuild), and by drop.
    pub(crate) index: Mutex<IndexState>,
    pub(crate) dropped: AtomicBool,
    pub(crate) dir: IndexDir,
}

/// Score-ordered candidate: (score, id, slot); total order so NaN can never panic.
#[derive(Debug, Clone, Copy)]
struct Cand(f32, u64, usize);

impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == CmpOrdering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

/// Keeps the k best candidates (max-heap on the worst kept).
struct TopK {
    k: usize,
    heap: BinaryHeap<Cand>,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }
    #[inline]
    fn push(&mut self, c: Cand) {
        if self.heap.len() < self.k {
            self.heap.push(c);
        } else if let Some(top) = self.heap.peek()
            && c < *top
        {
            self.heap.pop();
            self.heap.push(c);
        }
    }
    fn into_sorted(self) -> Vec<Cand> {
        self.heap.into_sorted_vec()
    }
}

/// A filter resolved against one store's label table.
struct CompiledFilter<'a> {
    labels: Option<HashSet<LabelId>>,
    metadata: &'a BTreeMap<String, String>,
}

impl<'a> CompiledFilter<'a> {
    fn new(f: &'a Filter, store: &Store) -> Self {
        let labels = (!f.labels.is_empty()).then(|| {
            f.labels
                .iter()
                .filter_map(|l| store.lookup_label(l))
                .collect()
        });
        CompiledFilter {
            labels,
            metadata: &f.metadata,
        }
    }

    #[inline]
    fn matches(&self, store: &Store, slot: usize) -> bool {
        if let Some(ls) = &self.labels
            && !ls.contains(&store.labels[slot])
        {
            return false;
        }
        if self.metadata.is_empty() {
            return true;
        }
        match &store.metadata[slot] {
            Some(m) => self.metadata.iter().all(|(k, v)| m.get(k) == Some(v)),
            None => false,
        }
    }
}

impl Version {
    pub fn metric(&self) -> Metric {
        self.record.metric
    }

    pub fn dim(&self) -> usize {
        self.record.dim as usize
    }

    /// Copies the query and prepares it for the metric.
    fn prepare(&self, q: &[f32]) -> Vec<f32> {
        let mut q = q.to_vec();
        if self.metric() == Metric::Cosine {
            normalize(&mut q);
        }
        q
    }

    /// k nearest live points (filtered), nearest first, ties by lower id.
    /// The query has been validated by the caller.
    pub fn search(&self, query: &[f32], p: SearchParams<'_>) -> Result<Vec<Hit>> {
        let q = self.prepare(query);
        let metric = self.metric();
        // Read the watermark before the index: a slot inserted meanwhile may then be
        // seen twice (ANN and tail), never zero times. Duplicates are removed below.
        let upto = self.indexed_upto.load(Ordering::SeqCst);
        let ann = if p.exact {
            None
        } else {
            self.ann.read().map_err(poisoned)?.clone()
        };
        let store = self.store.read().map_err(poisoned)?;
        let filter = p.filter.map(|f| CompiledFilter::new(f, &store));
        let pass = |s: usize| store.live[s] && filter.as_ref().is_none_or(|f| f.matches(&store, s));
        let n = store.len();

        let exact_all = |slots: std::ops::Range<usize>, k: usize| {
            let mut top = TopK::new(k);
            for s in slots {
                if pass(s) {
                    top.push(Cand(metric.score(&q, store.vector(s)), store.ids[s], s));
                }
            }
            top.into_sorted()
        };

        let cands = match ann {
            None => exact_all(0..n, p.k),
            Some(ann) => {
                // How many results must exist; a very selective filter is cheaper as a scan
                // (hnsw_rs filters after traversal and may walk most of the graph).
                let (expected, selective) = match &filter {
                    Some(_) => {
                        let matching = (0..n).filter(|&s| pass(s)).count();
                        (
                            p.k.min(matching),
                            matching <= p.k.saturating_mul(20) || matching * 20 < n,
                        )
                    }
                    None => (p.k.min(store.live_count), false),
                };
                if selective {
                    exact_all(0..n, p.k)
                } else {
                    let mut ef = p.ef;
                    loop {
                        let mut top = TopK::new(p.k);
                        let graph_pass = |s: usize| s < upto && s < n && pass(s);
                        for (s, _) in ann.search(&q, p.k, ef, &graph_pass)? {
                            top.push(Cand(metric.score(&q, store.vector(s)), store.ids[s], s));
                        }
                        for c in exact_all(upto.min(n)..n, p.k) {
                            top.push(c);
                        }
                        let mut got = top.into_sorted();
                        got.dedup_by_key(|c| c.2);
                        if got.len() >= expected {
                            break got;
                        }
                        if ef >= 4 * p.ef.max(p.k) || ef >= crate::validate::MAX_K as usize {
                            // The graph cannot reach enough passing points: answer exactly.
                            break exact_all(0..n, p.k);
                        }
                        ef *= 2;
                    }
                }
            }
        };
        Ok(cands
            .into_iter()
            .map(|Cand(score, id, s)| Hit {
                id,
                distance: metric.finish(score),
                label: store.label(s).to_string(),
            })
            .collect())
    }

    /// Live points and live points present in the graph.
    pub fn counts(&self) -> Result<(u64, u64)> {
        let store = self.store.read().map_err(poisoned)?;
        let live = store.live_count as u64;
        if !self.metric().uses_graph() {
            return Ok((live, live));
        }
        let upto = self.indexed_upto.load(Ordering::SeqCst).min(store.len());
        let indexed = store.live[..upto].iter().filter(|&&l| l).count() as u64;
        Ok((live, indexed))
    }
}

pub(crate) fn poisoned<T>(_: T) -> Error {
    Error::Internal("a lock was poisoned by an earlier panic".into())
}
