//! The approximate-nearest-neighbour index behind a small trait of our own, so
//! hnsw_rs (its lifetimes, panics and missing delete) stays in this module and
//! [`crate::mmap`].
//!
//! Ids seen here are dense in-memory **slots**, never user ids: hnsw_rs does not
//! deduplicate, so a user id updated twice would otherwise be two live points.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use hnsw_rs::prelude::{AnnT, Distance, Hnsw};

use crate::distance::l2sq;
use crate::error::{Error, Result};
use crate::mmap::LoadedGraph;

/// The graph distance: squared L2 via simsimd. Cosine versions store unit
/// vectors, so the same kernel ranks them. Renaming this type makes old dumps
/// fail to load (hnsw_rs compares type names), which we treat as "rebuild".
#[derive(Debug, Default, Clone, Copy)]
pub struct GraphL2;

impl Distance<f32> for GraphL2 {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        // hnsw_rs panics on NaN and asserts non-negative distances; inputs are
        // validated finite and l2sq clamps at 0, so this is belt and braces.
        let d = l2sq(a, b);
        if d.is_nan() { f32::MAX } else { d }
    }
}

/// hnsw_rs requires 16 layers for a dump to succeed (see notes on `file_dump`).
const MAX_LAYER: usize = 16;

/// What every ANN implementation offers.
pub trait AnnIndex: Send + Sync {
    /// Inserts points (slot, vector). Slots must be new to this index.
    fn insert(&self, points: &[(usize, &[f32])]) -> Result<()>;
    /// Up to `k` (slot, graph distance) pairs passing `filter` (all when `None`), nearest first.
    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: Option<&(dyn Fn(usize) -> bool + Sync)>,
    ) -> Result<Vec<(usize, f32)>>;
    /// Number of points inserted.
    fn len(&self) -> usize;
    /// Whether the index holds no point.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes the index into an existing, empty directory and returns the basename used.
    fn dump(&self, dir: &Path) -> Result<String>;
}

enum Graph {
    Built(Hnsw<'static, f32, GraphL2>),
    Loaded(LoadedGraph),
}

/// The two pools graph work runs on. `normal` is for work searches wait for: start-up loads,
/// rebuilds a repair asked for, and catching up while more slots lie outside the view than a
/// search scans inline. `background` threads are in the idle scheduling class: a search thread
/// that wakes preempts them at once, instead of waiting out a build thread's time slice, so
/// steady trickle writes (insert a few points, export the view again) do not reach search
/// tails. They take none of the locks requests wait on (the indexer thread does the copies and
/// swaps), so their low priority cannot hold a request up either.
pub struct BuildPools {
    normal: rayon::ThreadPool,
    background: rayon::ThreadPool,
}

impl BuildPools {
    pub fn new(threads: usize) -> Result<Self> {
        let build = |name: &'static str, idle: bool| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads.max(1))
                .thread_name(move |i| format!("{name}-{i}"))
                .start_handler(move |_| {
                    if idle {
                        crate::os::lower_thread_priority(19);
                    }
                })
                .build()
                .map_err(|e| Error::Internal(e.to_string()))
        };
        Ok(BuildPools {
            normal: build("ember-build", false)?,
            background: build("ember-bg-build", true)?,
        })
    }

    /// The pool for work searches wait for.
    pub fn normal(&self) -> &rayon::ThreadPool {
        &self.normal
    }

    /// The idle-class pool: for work that holds no lock a request waits on.
    pub fn background(&self) -> &rayon::ThreadPool {
        &self.background
    }
}

/// hnsw_rs-backed index.
pub struct HnswIndex {
    graph: Graph,
    pools: Arc<BuildPools>,
    /// Whether its inserts and exports run on the background pool (the indexer decides per step).
    background: std::sync::atomic::AtomicBool,
    /// Unique per graph object in this process, so a view knows which graph it came from.
    id: u64,
}

fn next_graph_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl HnswIndex {
    /// A new empty graph. `m` is validated by the caller (4..=128; hnsw_rs exits the process above 256).
    pub fn new(m: usize, ef_construction: usize, capacity: usize, pools: Arc<BuildPools>) -> Self {
        let hnsw = Hnsw::new(m, capacity.max(1024), MAX_LAYER, ef_construction, GraphL2);
        HnswIndex {
            graph: Graph::Built(hnsw),
            pools,
            background: false.into(),
            id: next_graph_id(),
        }
    }

    /// Reloads a dump (data file memory-mapped).
    pub fn load(dir: &Path, basename: &str, pools: Arc<BuildPools>) -> Result<Self> {
        Ok(HnswIndex {
            graph: Graph::Loaded(LoadedGraph::load(dir, basename)?),
            pools,
            background: false.into(),
            id: next_graph_id(),
        })
    }

    /// Moves this graph's further inserts and exports to the background pool, or back.
    pub fn set_background(&self, background: bool) {
        self.background
            .store(background, std::sync::atomic::Ordering::Relaxed);
    }

    fn hnsw(&self) -> &Hnsw<'static, f32, GraphL2> {
        match &self.graph {
            Graph::Built(h) => h,
            Graph::Loaded(l) => l.hnsw(),
        }
    }

    /// This graph object's process-unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The pool its inserts and exports run on now (see [`HnswIndex::set_background`]).
    pub fn pool(&self) -> &rayon::ThreadPool {
        if self.background.load(std::sync::atomic::Ordering::Relaxed) {
            &self.pools.background
        } else {
            &self.pools.normal
        }
    }

    /// The graph's nodes below slot `covers`: level, neighbours per layer, and access to the
    /// vector each node holds (no copy). An empty graph exports as empty: hnsw_rs's point
    /// iterator panics on a graph without an entry point.
    pub fn export_raw(&self, covers: usize) -> Result<RawGraph<'_>> {
        let mut g = RawGraph {
            entry: None,
            layers: vec![None; covers],
            points: vec![None; covers],
            _index: std::marker::PhantomData,
        };
        if self.hnsw().get_nb_point() == 0 {
            return Ok(g);
        }
        guarded("export", || {
            for p in self.hnsw().get_point_indexation() {
                let slot = p.get_origin_id();
                if slot >= covers {
                    continue;
                }
                let level = p.get_point_id().0 as usize;
                let s = slot as u32;
                if g.entry
                    .is_none_or(|(l, e)| level > l || (level == l && s < e))
                {
                    g.entry = Some((level, s));
                }
                let layers: Vec<Vec<u32>> = p
                    .get_neighborhood_id()
                    .iter()
                    .take(level + 1)
                    .map(|l| {
                        l.iter()
                            .filter(|n| n.d_id < covers)
                            .map(|n| n.d_id as u32)
                            .collect()
                    })
                    .collect();
                g.layers[slot] = Some(layers);
                g.points[slot] = Some(p);
            }
        })?;
        Ok(g)
    }

    /// Calls `f(slot, level, neighbours_by_layer, vector)` for every node of the graph (for a
    /// loaded graph the vector is read from the mapped data file). Not concurrent with inserts.
    pub fn for_each_node(
        &self,
        mut f: impl FnMut(usize, usize, &[Vec<usize>], &[f32]),
    ) -> Result<()> {
        if self.hnsw().get_nb_point() == 0 {
            return Ok(());
        }
        guarded("export", || {
            for p in self.hnsw().get_point_indexation() {
                let layers: Vec<Vec<usize>> = p
                    .get_neighborhood_id()
                    .iter()
                    .map(|l| l.iter().map(|n| n.d_id).collect())
                    .collect();
                f(
                    p.get_origin_id(),
                    p.get_point_id().0 as usize,
                    &layers,
                    p.get_v(),
                );
            }
        })
    }

    /// Inserts points one at a time on the calling thread. Slower than
    /// [`AnnIndex::insert`], but a serial build leaves no unreachable points
    /// (hnsw_rs's parallel insert occasionally does); repair uses it.
    pub fn insert_serial(&self, points: &[(usize, &[f32])]) -> Result<()> {
        let hnsw = self.hnsw();
        guarded("insert", || {
            for (slot, v) in points {
                hnsw.insert_slice((v, *slot));
            }
        })
    }
}

/// A graph as hnsw_rs holds it, by slot, borrowed from its [`HnswIndex`] for the
/// duration of an export.
pub struct RawGraph<'a> {
    /// (level, slot) of the entry point: highest level, lowest slot.
    pub entry: Option<(usize, u32)>,
    /// Per slot: its neighbours on layers 0..=level, or `None` when the slot is not a node.
    pub layers: Vec<Option<Vec<Vec<u32>>>>,
    points: Vec<Option<Arc<hnsw_rs::hnsw::Point<'static, f32>>>>,
    _index: std::marker::PhantomData<&'a HnswIndex>,
}

impl RawGraph<'_> {
    /// The vector node `slot` holds (empty when it is not a node).
    pub fn vector(&self, slot: u32) -> &[f32] {
        self.points[slot as usize]
            .as_ref()
            .map_or(&[][..], |p| p.get_v())
    }
}

fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| Error::Internal(format!("hnsw {what} panicked")))
}

impl AnnIndex for HnswIndex {
    fn insert(&self, points: &[(usize, &[f32])]) -> Result<()> {
        let batch: Vec<(&[f32], usize)> = points.iter().map(|(s, v)| (*v, *s)).collect();
        let hnsw = self.hnsw();
        guarded("insert", || {
            // Our own pool, so a build never starves searches on the blocking pool.
            self.pool().install(|| hnsw.parallel_insert_slice(&batch))
        })
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: Option<&(dyn Fn(usize) -> bool + Sync)>,
    ) -> Result<Vec<(usize, f32)>> {
        let found = match filter {
            // The unfiltered path keeps hnsw_rs's early exit.
            None => guarded("search", || self.hnsw().search(query, k, ef))?,
            Some(filter) => {
                let f = |id: &usize| filter(*id);
                guarded("search", || {
                    self.hnsw().search_filter(query, k, ef, Some(&f))
                })?
            }
        };
        Ok(found
            .into_iter()
            .map(|n| (n.d_id, n.distance.max(0.0)))
            .collect())
    }

    fn len(&self) -> usize {
        self.hnsw().get_nb_point()
    }

    fn dump(&self, dir: &Path) -> Result<String> {
        if !dir.is_dir() {
            // hnsw_rs panics on a missing directory.
            return Err(Error::Internal(format!(
                "dump dir {} missing",
                dir.display()
            )));
        }
        guarded("dump", || self.hnsw().file_dump(dir, "graph"))?
            .map_err(|e| Error::Internal(format!("hnsw dump: {e}")))
    }
}
