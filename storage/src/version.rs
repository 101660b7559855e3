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
use crate::distance::quant::QueryCode;
use crate::distance::{Metric, normalize};
use crate::error::{Error, Result};
use crate::generation::IndexDir;
use crate::snapshot::Snapshot;
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
    /// Since when graph work has been pending without the graph catching up (`None`: caught up).
    /// Background work past `indexer::BACKGROUND_PATIENCE` moves to the normal pool.
    pub behind_since: Option<std::time::Instant>,
}

pub struct Version {
    record: VersionRecord,
    collection: String,
    /// Serialises writers so that op-sequence order equals commit order.
    /// A std Mutex: held across the synced RocksDB write on a blocking thread, never across `.await`.
    writer: Mutex<()>,
    /// Last op sequence written durably (mirrors `seq/<id>` in RocksDB).
    last_seq: AtomicU64,
    /// Read-mostly: searches share it; writers hold it only to apply a committed batch.
    store: StoreLock,
    ann: RwLock<Option<Arc<HnswIndex>>>,
    /// Our searchable copy of `ann` (see `graph_view.rs`); covers a prefix of the slots.
    view: RwLock<Option<Arc<crate::graph_view::GraphView>>>,
    /// Slots below this are in `ann` (unless they were dead when the indexer reached them).
    indexed_upto: AtomicUsize,
    /// When not 0: `ann` is not resident; this committed generation holds the graph the view
    /// was read from, and the next insert loads it back. Changed under the `index` lock.
    parked: AtomicU64,
    /// Held by the indexer for one step (insert chunk, persist, rebuild), and by drop.
    index: Mutex<IndexState>,
    dropped: AtomicBool,
    dir: IndexDir,
    /// The last graph-level consistency result and the state it saw (op sequence,
    /// watermark, graph identity): monitors re-walk the graph only after a change.
    graph_check: Mutex<Option<crate::consistency::MonitorCheck>>,
}

/// Construction and the crate's access to a version's state. The fields stay private to this
/// module: the catalog builds a version only through `new`, and the indexer, write path and
/// consistency check reach its locks and counters through these accessors.
impl Version {
    pub(crate) fn new(
        dir: IndexDir,
        record: VersionRecord,
        collection: &str,
        store: Store,
        last_seq: u64,
    ) -> Version {
        Version {
            dir,
            record,
            collection: collection.into(),
            writer: Mutex::new(()),
            last_seq: AtomicU64::new(last_seq),
            store: StoreLock::new(store),
            ann: RwLock::new(None),
            view: RwLock::new(None),
            indexed_upto: AtomicUsize::new(0),
            parked: AtomicU64::new(0),
            index: Mutex::new(IndexState::default()),
            dropped: AtomicBool::new(false),
            graph_check: Mutex::new(None),
        }
    }

    pub(crate) fn record(&self) -> &VersionRecord {
        &self.record
    }

    /// Serialises writers (see the field).
    pub(crate) fn writer(&self) -> &Mutex<()> {
        &self.writer
    }

    pub(crate) fn last_seq(&self) -> &AtomicU64 {
        &self.last_seq
    }

    pub(crate) fn store(&self) -> &StoreLock {
        &self.store
    }

    pub(crate) fn ann(&self) -> &RwLock<Option<Arc<HnswIndex>>> {
        &self.ann
    }

    pub(crate) fn view(&self) -> &RwLock<Option<Arc<crate::graph_view::GraphView>>> {
        &self.view
    }

    pub(crate) fn indexed_upto(&self) -> &AtomicUsize {
        &self.indexed_upto
    }

    pub(crate) fn parked(&self) -> &AtomicU64 {
        &self.parked
    }

    pub(crate) fn index(&self) -> &Mutex<IndexState> {
        &self.index
    }

    pub(crate) fn dropped(&self) -> &AtomicBool {
        &self.dropped
    }

    pub(crate) fn dir(&self) -> &IndexDir {
        &self.dir
    }

    pub(crate) fn graph_check(&self) -> &Mutex<Option<crate::consistency::MonitorCheck>> {
        &self.graph_check
    }
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
            && !ls.contains(&store.label_at(slot))
        {
            return false;
        }
        if self.metadata.is_empty() {
            return true;
        }
        match store.metadata_at(slot) {
            Some(m) => self.metadata.iter().all(|(k, v)| m.get(k) == Some(v)),
            None => false,
        }
    }
}

/// What a version's answers depend on, as an opaque token: the version (by id, so an alias
/// that moved reads as a change), its op sequence, its slot layout and the graph view searches
/// walk. Equal states give equal snapshots and equal search answers, so a caller may reuse a
/// result computed at an equal state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    version: u64,
    seq: u64,
    layout: u64,
    view: (usize, usize, usize, bool),
}

impl ReadState {
    /// The same live points (version, op sequence and layout), whatever the graph did:
    /// exact answers are equal.
    pub fn same_points(&self, other: &ReadState) -> bool {
        (self.version, self.seq, self.layout) == (other.version, other.seq, other.layout)
    }
}

impl Version {
    pub fn metric(&self) -> Metric {
        self.record.metric
    }

    /// The version's name (what an alias resolved to).
    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// The version's internal id: unique for the data directory's lifetime, never reused.
    pub fn id(&self) -> u64 {
        self.record.id
    }

    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// Its live points at one op sequence, in id order.
    pub fn snapshot(&self) -> Result<Snapshot> {
        Snapshot::take(self)
    }

    /// See [`ReadState`]. Read before a snapshot, a write in between makes the next state differ.
    pub fn read_state(&self) -> Result<ReadState> {
        let (seq, layout) = {
            let store = self.store.read().map_err(poisoned)?;
            (store.applied_seq(), store.layout())
        };
        let view = self
            .view
            .read()
            .map_err(poisoned)?
            .as_ref()
            .map_or((0, 0, 0, false), |g| {
                (
                    Arc::as_ptr(g) as usize,
                    g.covers,
                    g.nodes(),
                    g.refine == crate::graph_view::Refine::Polish,
                )
            });
        Ok(ReadState {
            version: self.record.id,
            seq,
            layout,
            view,
        })
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
    /// The query has been validated by the caller. Exact scans of large ranges
    /// are split across the current rayon pool.
    pub fn search(&self, query: &[f32], p: SearchParams<'_>) -> Result<Vec<Hit>> {
        match self.search_bounded(query, p, None)? {
            Some(hits) => Ok(hits),
            None => Err(Error::Internal("unbounded search gave up".into())),
        }
    }

    /// As `search`, but with `max_scan = Some(m)` it answers only when that takes no full scan
    /// and at most `m` slots outside the graph; otherwise it returns `Ok(None)` having done at
    /// most that much work. A caller that must not block (an async worker) then runs the search
    /// elsewhere. The decision is made under the same store lock as the search itself.
    pub fn search_bounded(
        &self,
        query: &[f32],
        p: SearchParams<'_>,
        max_scan: Option<usize>,
    ) -> Result<Option<Vec<Hit>>> {
        let q = self.prepare(query);
        let metric = self.metric();
        // The store first: a compacting rebuild renumbers slots and swaps the store,
        // graph and watermark together under the store's write lock, so what is read
        // below all speaks of the same slots.
        let store = self.store.read().map_err(poisoned)?;
        // Read the watermark before the index: a slot inserted meanwhile may then be
        // seen twice (ANN and tail), never zero times. Duplicates are removed below.
        let upto = self.indexed_upto.load(Ordering::SeqCst);
        // The graph searches walk: the view (hnsw_rs's own graph may not even be resident), or
        // hnsw_rs's search until a first view is exported.
        let view = if p.exact {
            None
        } else {
            self.view.read().map_err(poisoned)?.clone()
        };
        let ann = if p.exact || view.is_some() {
            None
        } else {
            self.ann.read().map_err(poisoned)?.clone()
        };
        // With a view, the graph part is what the view covers; everything after it is scanned.
        let upto = view.as_ref().map_or(upto, |v| v.covers);
        let n = store.len();
        if let Some(m) = max_scan {
            // Short only with a graph, no filter (which may scan) and a small unindexed tail.
            let graph = view.is_some() || ann.is_some();
            if p.exact || p.filter.is_some() || !graph || n.saturating_sub(upto) > m {
                return Ok(None);
            }
        }
        let filter = p.filter.map(|f| CompiledFilter::new(f, &store));
        let filter = filter.as_ref();

        let cands = match (&view, &ann) {
            (None, None) => scan(&store, metric, &q, 0..n, p.k, filter),
            _ => {
                let pass =
                    |s: usize| store.is_live(s) && filter.is_none_or(|f| f.matches(&store, s));
                // How many results must exist; a very selective filter is cheaper as a scan
                // (hnsw_rs filters after traversal and may walk most of the graph).
                let (expected, selective) = match filter {
                    Some(_) => {
                        let matching = (0..n).filter(|&s| pass(s)).count();
                        (
                            p.k.min(matching),
                            matching <= p.k.saturating_mul(20) || matching * 20 < n,
                        )
                    }
                    None => (p.k.min(store.live_count()), false),
                };
                // With nothing dead and no user filter, every graph point qualifies.
                let trivial = filter.is_none() && !store.has_dead();
                if selective {
                    scan(&store, metric, &q, 0..n, p.k, filter)
                } else {
                    let mut ef = p.ef;
                    loop {
                        let mut top = TopK::new(p.k);
                        let graph_filter: Option<&(dyn Fn(usize) -> bool + Sync)> =
                            if trivial { None } else { Some(&pass) };
                        let found = match &view {
                            Some(v) => {
                                v.search(p.k, ef, &q, |s| store.vector(s as usize), graph_filter)
                            }
                            None => match &ann {
                                Some(ann) => ann.search(&q, p.k, ef, graph_filter)?,
                                None => Vec::new(),
                            },
                        };
                        for (s, _) in found {
                            if s < n {
                                top.push(Cand(metric.score(&q, store.vector(s)), store.id(s), s));
                            }
                        }
                        for c in scan(&store, metric, &q, upto.min(n)..n, p.k, filter) {
                            top.push(c);
                        }
                        let mut got = top.into_sorted();
                        got.dedup_by_key(|c| c.2);
                        if got.len() >= expected {
                            break got;
                        }
                        if ef >= 4 * p.ef.max(p.k) || ef >= crate::validate::MAX_K as usize {
                            // The graph cannot reach enough passing points: answer exactly.
                            if max_scan.is_some() {
                                return Ok(None);
                            }
                            break scan(&store, metric, &q, 0..n, p.k, filter);
                        }
                        ef *= 2;
                    }
                }
            }
        };
        Ok(Some(to_hits(&store, metric, cands)))
    }

    /// Exact search of many queries at once: blocks of queries against every slot
    /// by matrix multiplication (emberdb-eval), a few spare candidates per query
    /// re-scored with the SIMD kernel. Runs on the current rayon pool.
    pub fn search_batch_exact(
        &self,
        queries: &[Vec<f32>],
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Vec<Hit>>> {
        use emberdb_eval::knn::{
            QUERY_BLOCK, coarse_slack, coarse_top, score_block, spare, squared_norm,
        };
        use rayon::prelude::*;
        let metric = self.metric();
        let space = match metric {
            Metric::L2 => emberdb_eval::Space::L2,
            Metric::Cosine => emberdb_eval::Space::Cosine,
            Metric::Dot => emberdb_eval::Space::Dot,
        };
        let prepared: Vec<Vec<f32>> = queries.iter().map(|q| self.prepare(q)).collect();
        let blocks: Vec<Result<Vec<Vec<Hit>>>> = prepared
            .par_chunks(QUERY_BLOCK)
            .map(|block| {
                // One block holds the read lock for one GEMM (milliseconds), so writers interleave.
                let store = self.store.read().map_err(poisoned)?;
                let compiled = filter.map(|f| CompiledFilter::new(f, &store));
                let n = store.len();
                let a: Vec<f32> = block.iter().flatten().copied().collect();
                let qnorms: Vec<f32> = block.iter().map(|q| squared_norm(q)).collect();
                let mut c = Vec::new();
                let data = emberdb_eval::Data::new(self.dim(), store.vectors());
                let nmax = store.norms().iter().copied().fold(0.0f32, f32::max);
                score_block(data, store.norms(), space, &a, &qnorms, &mut c);
                Ok(block
                    .iter()
                    .enumerate()
                    .map(|(r, q)| {
                        let row = &c[r * n..(r + 1) * n];
                        let pass = |s: usize| {
                            store.is_live(s)
                                && compiled.as_ref().is_none_or(|f| f.matches(&store, s))
                        };
                        let slack = coarse_slack(self.dim(), squared_norm(q), nmax);
                        let mut cands: Vec<Cand> = coarse_top(row, k + spare(k), slack, pass)
                            .into_iter()
                            .map(|(_, s)| Cand(metric.score(q, store.vector(s)), store.id(s), s))
                            .collect();
                        cands.sort();
                        cands.truncate(k);
                        to_hits(&store, metric, cands)
                    })
                    .collect())
            })
            .collect();
        let mut out = Vec::with_capacity(queries.len());
        for b in blocks {
            out.extend(b?);
        }
        Ok(out)
    }

    /// Live points and live points present in the graph.
    pub fn counts(&self) -> Result<(u64, u64)> {
        let store = self.store.read().map_err(poisoned)?;
        let live = store.live_count() as u64;
        if !self.metric().uses_graph() {
            return Ok((live, live));
        }
        // Indexed = in the graph search walks: the view's coverage (slots the indexer holds
        // beyond it are scanned exactly until the next export).
        let upto = self.indexed_upto.load(Ordering::SeqCst);
        let covers = self
            .view
            .read()
            .map_err(poisoned)?
            .as_ref()
            .map_or(0, |g| g.covers);
        // Block counts: a scrape or Describe costs the same at 10k points as at 1M.
        let indexed = store.live_below(upto.min(covers)) as u64;
        Ok((live, indexed))
    }
}

fn to_hits(store: &Store, metric: Metric, cands: Vec<Cand>) -> Vec<Hit> {
    cands
        .into_iter()
        .map(|Cand(score, id, s)| Hit {
            id,
            distance: metric.finish(score),
            label: store.label(s).to_string(),
        })
        .collect()
}

/// Exact top-k over a range of slots. Large ranges are split across the current
/// rayon pool (a single query then uses every core of the pool) and take two
/// passes: int8 codes bound every slot's score, then only the slots whose lower
/// bound reaches the k-th smallest upper bound are scored with the f32 kernel.
/// The answer is the one scoring every slot gives (see `distance::quant`).
fn scan(
    store: &Store,
    metric: Metric,
    q: &[f32],
    range: std::ops::Range<usize>,
    k: usize,
    filter: Option<&CompiledFilter<'_>>,
) -> Vec<Cand> {
    use rayon::prelude::*;
    let pass = |s: usize| store.is_live(s) && filter.is_none_or(|f| f.matches(store, s));
    if range.len() <= 2 * SCAN_CHUNK {
        return scan_plain(store, metric, q, range, k, &pass).into_sorted();
    }
    let qc = QueryCode::new(q);
    let starts: Vec<usize> = range.clone().step_by(SCAN_CHUNK).collect();
    let parts: Vec<Bounded> = starts
        .into_par_iter()
        .map(|s| {
            bound_chunk(
                store,
                metric,
                &qc,
                s..(s + SCAN_CHUNK).min(range.end),
                k,
                &pass,
            )
        })
        .collect();
    // The k-th smallest upper bound over every chunk.
    let mut uppers: Vec<f64> = parts.iter().flat_map(|p| p.0.iter().copied()).collect();
    let tau = if uppers.len() >= k && k > 0 {
        let (_, t, _) = uppers.select_nth_unstable_by(k - 1, f64::total_cmp);
        *t
    } else {
        f64::INFINITY
    };
    let mut top = TopK::new(k);
    for (_, cands) in &parts {
        for &(lo, s) in cands {
            if lo <= tau {
                top.push(Cand(metric.score(q, store.vector(s)), store.id(s), s));
            }
        }
    }
    top.into_sorted()
}

/// Slots per parallel piece of a scan.
const SCAN_CHUNK: usize = 8192;

/// What the code pass keeps of a chunk: its k smallest upper bounds, and the
/// (lower bound, slot) of each candidate.
type Bounded = (Vec<f64>, Vec<(f64, usize)>);

/// Every passing slot of `range` scored with the f32 kernel.
fn scan_plain(
    store: &Store,
    metric: Metric,
    q: &[f32],
    range: std::ops::Range<usize>,
    k: usize,
    pass: &impl Fn(usize) -> bool,
) -> TopK {
    let mut top = TopK::new(k);
    for s in range {
        if pass(s) {
            top.push(Cand(metric.score(q, store.vector(s)), store.id(s), s));
        }
    }
    top
}

/// The code pass over one chunk: the k smallest upper bounds, and every passing
/// slot whose lower bound was at most the k-th smallest upper bound seen so far
/// (a superset of those under the final one).
fn bound_chunk(
    store: &Store,
    metric: Metric,
    qc: &QueryCode,
    range: std::ops::Range<usize>,
    k: usize,
    pass: &impl Fn(usize) -> bool,
) -> Bounded {
    let mut uppers: BinaryHeap<OrdF64> = BinaryHeap::with_capacity(k + 1);
    let mut cands = Vec::new();
    let mut cut = qc.cut(f64::INFINITY);
    for s in range {
        if !pass(s) {
            continue;
        }
        let dot = qc.dot(store.code(s));
        let meta = store.code_meta(s);
        if qc.beyond(metric, dot, meta, &cut) {
            continue;
        }
        let (lo, hi) = qc.bounds(metric, dot, meta);
        cands.push((lo, s));
        if uppers.len() < k {
            uppers.push(OrdF64(hi));
        } else if hi < cut.tau {
            uppers.pop();
            uppers.push(OrdF64(hi));
        } else {
            continue;
        }
        if uppers.len() == k {
            cut = qc.cut(uppers.peek().map_or(f64::INFINITY, |t| t.0));
        }
    }
    (uppers.into_iter().map(|u| u.0).collect(), cands)
}

/// An f64 with a total order, for the bound heap.
#[derive(Debug, Clone, Copy)]
struct OrdF64(f64);

impl PartialEq for OrdF64 {
    fn eq(&self, o: &Self) -> bool {
        self.0.total_cmp(&o.0) == CmpOrdering::Equal
    }
}
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        self.0.total_cmp(&o.0)
    }
}

/// The store's lock. std's `RwLock` lets a queued writer block new readers, so a holder that
/// is not running (a thread of the idle scheduling class preempted by load) would stall the
/// writer and every search behind it: threads of that class (monitors, background graph work)
/// must never take it. Every acquisition on such a thread is counted ([`idle_store_locks`]),
/// and tests hold the count at zero.
pub(crate) struct StoreLock(RwLock<Store>);

static IDLE_STORE_LOCKS: AtomicU64 = AtomicU64::new(0);

/// Store-lock acquisitions made on idle-class threads since the process started (a defect when
/// not zero; see [`StoreLock`]).
pub fn idle_store_locks() -> u64 {
    IDLE_STORE_LOCKS.load(Ordering::Relaxed)
}

impl StoreLock {
    pub(crate) fn new(store: Store) -> Self {
        StoreLock(RwLock::new(store))
    }

    fn note(&self) {
        if crate::os::on_idle_thread() {
            IDLE_STORE_LOCKS.fetch_add(1, Ordering::Relaxed);
            debug_assert!(false, "the store lock was taken on an idle-class thread");
        }
    }

    pub(crate) fn read(&self) -> std::sync::LockResult<std::sync::RwLockReadGuard<'_, Store>> {
        self.note();
        self.0.read()
    }

    pub(crate) fn write(&self) -> std::sync::LockResult<std::sync::RwLockWriteGuard<'_, Store>> {
        self.note();
        self.0.write()
    }
}

pub(crate) fn poisoned<T>(_: T) -> Error {
    Error::Internal("a lock was poisoned by an earlier panic".into())
}

#[cfg(test)]
mod scan_tests {
    use super::*;
    use crate::store::PointRef;

    /// A store of `n` points: clustered, with exact duplicates, far-from-origin
    /// rows where int8 codes are coarse, a third of the ids overwritten and some
    /// deleted.
    fn store(metric: Metric, n: usize, dim: usize, offset: f32) -> Store {
        let mut rng = emberdb_eval::sample::SplitMix(n as u64 + dim as u64);
        let mut unit = move || (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        let centres: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..dim).map(|_| offset + unit() * 4.0 - 2.0).collect())
            .collect();
        let empty = BTreeMap::new();
        let mut st = Store::new(dim);
        let mut seq = 0;
        for i in 0..n as u64 {
            let c = &centres[i as usize % centres.len()];
            let v: Vec<f32> = if i % 97 == 5 {
                c.clone()
            } else {
                c.iter().map(|x| x + (unit() - 0.5) * 0.5).collect()
            };
            seq += 1;
            let label = if i % 3 == 0 { "even" } else { "odd" };
            let p = PointRef {
                id: i % (n as u64 * 2 / 3),
                seq,
                vector: &v,
                label,
                metadata: &empty,
                timestamp_ms: 0,
            };
            st.append(metric, p);
        }
        for id in (0..n as u64).step_by(11) {
            seq += 1;
            st.delete(id, seq);
        }
        st
    }

    #[test]
    fn two_pass_scan_equals_scoring_every_slot() {
        let filter = Filter {
            labels: vec!["odd".into()],
            metadata: BTreeMap::new(),
        };
        for (dim, offset) in [(24, 0.0), (128, 0.0), (40, 30.0)] {
            for metric in [Metric::L2, Metric::Cosine, Metric::Dot] {
                let st = store(metric, 3 * SCAN_CHUNK + 123, dim, offset);
                let compiled = CompiledFilter::new(&filter, &st);
                let mut rng = emberdb_eval::sample::SplitMix(7);
                for t in 0..12 {
                    let mut q: Vec<f32> = st.vector(t * 977 % st.len()).to_vec();
                    if t % 2 == 1 {
                        q.iter_mut()
                            .for_each(|x| *x += (rng.next_u64() % 100) as f32 / 400.0 - 0.125);
                    }
                    if metric == Metric::Cosine {
                        normalize(&mut q);
                    }
                    for k in [1, 10, 100] {
                        for f in [None, Some(&compiled)] {
                            let pass =
                                |s: usize| st.is_live(s) && f.is_none_or(|f| f.matches(&st, s));
                            let want =
                                scan_plain(&st, metric, &q, 0..st.len(), k, &pass).into_sorted();
                            let got = scan(&st, metric, &q, 0..st.len(), k, f);
                            assert_eq!(got.len(), k.min(want.len()));
                            let key = |c: &[Cand]| {
                                c.iter()
                                    .map(|c| (c.0.to_bits(), c.1, c.2))
                                    .collect::<Vec<_>>()
                            };
                            assert_eq!(
                                key(&got),
                                key(&want),
                                "{metric:?} dim {dim} offset {offset} k {k}"
                            );
                        }
                    }
                }
            }
        }
    }
}
