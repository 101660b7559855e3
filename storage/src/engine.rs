//! The engine: its configuration and shared state, opening (lock the data dir, open RocksDB,
//! start the pools and the indexer) and closing, the read path and the integrity check's entry
//! points. The catalog is in `catalog.rs`, the write path in `write.rs`, start-up loading in
//! `load.rs`, monitor specs in `specs.rs`. Evaluations live in the `emberdb-analysis` crate.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rocksdb::{
    ColumnFamilyDescriptor, DB, DBRecoveryMode, Direction, IteratorMode, Options, WriteOptions,
};

use crate::codec::{self, CF_CATALOG, CF_META, CF_POINTS, CollectionRecord, StoredPoint};
use crate::consistency::ConsistencyOut;
use crate::distance::Metric;
use crate::error::{Error, Result};
use crate::indexer::Indexer;
use crate::validate;
use crate::version::{Hit, SearchParams, Version, poisoned};

/// Slots outside the graph an inline search may scan (`Engine::try_search_inline`): 4,096
/// slots of 784 floats are a fraction of a millisecond of SIMD work.
pub const INLINE_SCAN_SLOTS: usize = 4096;

/// Engine configuration. Defaults are what `emberdb` runs with.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// Threads for index builds (rayon); default: the number of cores.
    pub build_threads: usize,
    /// Threads for batch searches; default: the number of cores.
    pub query_threads: usize,
    /// Points inserted into the graph per indexer step.
    pub index_chunk: usize,
    /// Commit a generation once this many slots were indexed since the last one...
    pub persist_every: usize,
    /// ...or once the index has been idle this long with unpersisted changes.
    pub persist_idle: std::time::Duration,
    /// Rebuild a graph when this fraction of its points is dead.
    pub rebuild_dead_fraction: f64,
    /// Threads of the integrity pool (CheckConsistency and its repairs); default: the number
    /// of cores.
    pub check_threads: usize,
    /// Once a version's graph is committed and no insert came for this long, hnsw_rs's own
    /// structure is dropped: searches walk the view, and the next insert reloads the graph
    /// from its generation. `None` keeps it resident.
    pub graph_park_after: Option<std::time::Duration>,
    /// Upserts are refused (RESOURCE_EXHAUSTED) while the data dir's file system has less than
    /// this free, so RocksDB itself never runs out of space (it would then refuse every write
    /// until reopened); they succeed again as soon as space is freed. `None`: 5 % of the file
    /// system's size, at most 256 MiB.
    pub min_free_disk_bytes: Option<u64>,
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        EngineConfig {
            data_dir: data_dir.into(),
            build_threads: cores,
            query_threads: cores,
            index_chunk: 2048,
            persist_every: 50_000,
            persist_idle: std::time::Duration::from_secs(2),
            rebuild_dead_fraction: 0.2,
            check_threads: cores,
            graph_park_after: Some(std::time::Duration::from_secs(30)),
            min_free_disk_bytes: None,
        }
    }
}

/// Parameters of a new version.
#[derive(Debug, Clone, Copy)]
pub struct VersionSpec {
    pub dim: u32,
    pub metric: Option<Metric>,
    /// 0 means the default (16).
    pub m: u32,
    /// 0 means the default (200).
    pub ef_construction: u32,
}

/// A point to write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PointInput {
    pub id: u64,
    pub vector: Vec<f32>,
    pub label: String,
    pub metadata: BTreeMap<String, String>,
    pub timestamp_ms: i64,
}

/// A point read back (vector as stored, byte-exact).
#[derive(Debug, Clone, PartialEq)]
pub struct PointOutput {
    pub id: u64,
    pub vector: Option<Vec<f32>>,
    pub label: String,
    pub metadata: BTreeMap<String, String>,
    pub timestamp_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexStatus {
    Ready,
    Indexing,
}

#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub collection: String,
    pub version: String,
    pub dim: u32,
    pub metric: Metric,
    pub point_count: u64,
    pub indexed_count: u64,
    pub status: IndexStatus,
    pub m: u32,
    pub ef_construction: u32,
    pub created_ms: i64,
}

#[derive(Debug, Clone)]
pub struct CollectionInfo {
    pub name: String,
    pub versions: Vec<VersionInfo>,
    /// (alias, version)
    pub aliases: Vec<(String, String)>,
}

/// Counters exported as metrics by the server.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Graphs rebuilt because their files were missing or failed a check.
    pub rebuilds_corrupt: AtomicU64,
    /// Graphs rebuilt because too many of their points were dead.
    pub rebuilds_dead: AtomicU64,
    /// Graphs loaded from a committed generation.
    pub loads: AtomicU64,
    /// Generations committed.
    pub generations_committed: AtomicU64,
    /// hnsw_rs graphs dropped from memory once committed and idle (see `graph_park_after`).
    pub graphs_parked: AtomicU64,
    /// Parked graphs loaded back from their generation for new inserts.
    pub graphs_reloaded: AtomicU64,
    /// Versions repaired by CheckConsistency.
    pub repairs: AtomicU64,
    /// Unfiltered ANN searches the graph could not answer alone (no graph yet, or a long
    /// unindexed tail), which `try_search_inline` sent to a blocking thread.
    pub searches_offloaded: AtomicU64,
    /// Reads of a version's committed generation files to verify their checksums.
    pub generation_file_checks: AtomicU64,
}

pub(crate) struct CollectionState {
    pub(crate) record: CollectionRecord,
    pub(crate) versions: HashMap<String, Arc<Version>>,
}

pub(crate) struct Shared {
    pub db: DB,
    pub config: EngineConfig,
    pub(crate) catalog: RwLock<BTreeMap<String, CollectionState>>,
    /// Serialises catalog mutations (each one is a read-modify-write of a record).
    pub(crate) catalog_writer: Mutex<()>,
    pub build_pools: Arc<crate::ann::BuildPools>,
    pub query_pool: rayon::ThreadPool,
    /// Consistency checks and repairs run here, so they never queue behind (or in front of)
    /// batch searches.
    pub check_pool: rayon::ThreadPool,
    pub stats: EngineStats,
    pub shutdown: AtomicBool,
    pub wake: (Mutex<bool>, std::sync::Condvar),
    pub(crate) index_root: PathBuf,
    /// Monitor specs (persisted in CF_META; the analysis crate runs them).
    pub(crate) specs: crate::specs::SpecStore,
    _lock: File,
}

/// The storage engine. Cheap to share behind an `Arc`; every method is blocking
/// and belongs on a blocking thread.
pub struct Engine {
    pub(crate) shared: Arc<Shared>,
    indexer: Mutex<Option<Indexer>>,
}

/// Opens (with `create`: or creates) the RocksDB under a data dir, as the engine runs it.
pub(crate) fn open_db(path: &Path, create: bool) -> Result<DB> {
    let mut opts = Options::default();
    opts.create_if_missing(create);
    opts.create_missing_column_families(create);
    // Replay stops at the first inconsistency; with sync-on-ACK every ACK precedes it.
    opts.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
    opts.set_track_and_verify_wals_in_manifest(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let cfs = [CF_CATALOG, CF_POINTS, CF_META]
        .into_iter()
        .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    Ok(DB::open_cf_descriptors(&opts, path, cfs)?)
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn sync_write() -> WriteOptions {
    let mut w = WriteOptions::default();
    // Durable on ACK. Concurrent writers share fsyncs through RocksDB's group commit.
    w.set_sync(true);
    w
}

impl Engine {
    /// Opens (or creates) the data directory. Fails if another process holds it.
    pub fn open(config: EngineConfig) -> Result<Engine> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let lock_path = dir.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("open {}", lock_path.display()), e))?;
        if lock.try_lock().is_err() {
            return Err(Error::FailedPrecondition(format!(
                "data dir {} is in use by another process",
                dir.display()
            )));
        }

        let db = open_db(&dir.join("db"), true)?;

        let pool = |n: usize, name: &'static str| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .thread_name(move |i| format!("{name}-{i}"))
                .build()
                .map_err(|e| Error::Internal(e.to_string()))
        };
        let specs = crate::specs::SpecStore::load(
            &db,
            db.cf_handle(CF_META)
                .ok_or_else(|| Error::Internal(format!("column family {CF_META} missing")))?,
        )?;
        let shared = Arc::new(Shared {
            build_pools: Arc::new(crate::ann::BuildPools::new(config.build_threads)?),
            query_pool: pool(config.query_threads, "ember-query")?,
            check_pool: pool(config.check_threads, "ember-check")?,
            index_root: dir.join("index"),
            db,
            config,
            catalog: RwLock::new(BTreeMap::new()),
            catalog_writer: Mutex::new(()),
            stats: EngineStats::default(),
            shutdown: AtomicBool::new(false),
            wake: (Mutex::new(false), std::sync::Condvar::new()),
            specs,
            _lock: lock,
        });
        shared.load_catalog()?;
        let indexer = Indexer::spawn(shared.clone());
        Ok(Engine {
            shared,
            indexer: Mutex::new(Some(indexer)),
        })
    }

    /// Stops the indexer (committing pending index generations) and syncs the WAL.
    /// Idempotent; also run on drop.
    pub fn close(&self) -> Result<()> {
        let indexer = self.indexer.lock().map_err(poisoned)?.take();
        if let Some(ix) = indexer {
            self.shared.shutdown.store(true, Ordering::SeqCst);
            self.shared.notify();
            ix.join();
        }
        self.shared.db.flush_wal(true)?;
        Ok(())
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn stats(&self) -> &EngineStats {
        &self.shared.stats
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.config.data_dir
    }

    /// The pool searches run on (normal priority). A caller that searches a version from a
    /// lower-priority thread moves the searches here (see ARCHITECTURE.md, "Priorities").
    pub fn query_pool(&self) -> &rayon::ThreadPool {
        &self.shared.query_pool
    }

    pub fn search(
        &self,
        collection: &str,
        version: &str,
        query: &[f32],
        params: SearchParams<'_>,
    ) -> Result<Vec<Hit>> {
        let v = self.resolve(collection, version)?;
        self.search_on(&v, query, params)
    }

    /// As [`Engine::search`], also naming the version that answered (an alias resolved once,
    /// so metrics label the version, not the alias).
    pub fn search_resolved(
        &self,
        collection: &str,
        version: &str,
        query: &[f32],
        params: SearchParams<'_>,
    ) -> Result<(Vec<Hit>, String)> {
        let v = self.resolve(collection, version)?;
        let hits = self.search_on(&v, query, params)?;
        Ok((hits, v.record().name.clone()))
    }

    /// A search that may run where blocking is not allowed (an async worker): it answers only
    /// when the graph covers all but at most `INLINE_SCAN_SLOTS` slots and no filter or exact
    /// scan is asked for. `Ok(None)` means "run `search_resolved` on a blocking thread instead";
    /// the work done before giving up is bounded by the same figure.
    pub fn try_search_inline(
        &self,
        collection: &str,
        version: &str,
        query: &[f32],
        params: SearchParams<'_>,
    ) -> Result<Option<(Vec<Hit>, String)>> {
        let v = self.resolve(collection, version)?;
        validate::vector("vector", query, v.dim(), v.metric() == Metric::Cosine)?;
        let hits = if v.metric().uses_graph() {
            v.search_bounded(query, params, Some(INLINE_SCAN_SLOTS))?
        } else {
            None
        };
        if hits.is_none() {
            self.shared
                .stats
                .searches_offloaded
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(hits.map(|hits| (hits, v.record().name.clone())))
    }

    fn search_on(&self, v: &Version, query: &[f32], params: SearchParams<'_>) -> Result<Vec<Hit>> {
        validate::vector("vector", query, v.dim(), v.metric() == Metric::Cosine)?;
        if params.exact || !v.metric().uses_graph() {
            // A full scan uses every core of the query pool.
            return self.shared.query_pool.install(|| v.search(query, params));
        }
        v.search(query, params)
    }

    /// Runs the queries on the query pool (all cores), results in query order.
    pub fn search_batch(
        &self,
        collection: &str,
        version: &str,
        queries: &[Vec<f32>],
        params: SearchParams<'_>,
    ) -> Result<Vec<Vec<Hit>>> {
        use rayon::prelude::*;
        let v = self.resolve(collection, version)?;
        if queries.len() > validate::MAX_BATCH {
            return Err(Error::invalid(
                "queries",
                format!("at most {} queries", validate::MAX_BATCH),
            ));
        }
        for (i, q) in queries.iter().enumerate() {
            validate::vector(
                &format!("queries[{i}].vector"),
                q,
                v.dim(),
                v.metric() == Metric::Cosine,
            )?;
        }
        self.shared.query_pool.install(|| {
            if (params.exact || !v.metric().uses_graph()) && queries.len() >= 8 {
                v.search_batch_exact(queries, params.k, params.filter)
            } else {
                queries.par_iter().map(|q| v.search(q, params)).collect()
            }
        })
    }

    /// Compares the version's graph and memory with RocksDB; with `repair`,
    /// rebuilds when inconsistent and checks again.
    pub fn check_consistency(
        &self,
        collection: &str,
        version: &str,
        repair: bool,
    ) -> Result<ConsistencyOut> {
        let v = self.resolve(collection, version)?;
        let s = &self.shared;
        s.check_pool.install(|| {
            if repair {
                crate::consistency::check_and_repair(s, &v)
            } else {
                crate::consistency::check(s, &v, crate::consistency::Depth::Full)
            }
        })
    }

    /// The monitors' check: graph level (no RocksDB scan, writers are not paused), re-walking
    /// the graph only after the version changed and re-reading its committed files at most
    /// every few minutes. True when consistent.
    pub fn light_check(&self, v: &Version) -> Result<bool> {
        crate::consistency::monitor_check(&self.shared, v)
    }

    /// Blocks until every stored point of the version is in its graph (tests, benches).
    pub fn wait_indexed(
        &self,
        collection: &str,
        version: &str,
        timeout: std::time::Duration,
    ) -> Result<bool> {
        let v = self.resolve(collection, version)?;
        let deadline = Instant::now() + timeout;
        loop {
            let (live, indexed) = v.counts()?;
            if live == indexed {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Commits an index generation for the version now (tests, benches, shutdown).
    pub fn persist_index(&self, collection: &str, version: &str) -> Result<bool> {
        let v = self.resolve(collection, version)?;
        let mut st = v.index().lock().map_err(poisoned)?;
        crate::indexer::persist(&self.shared, &v, &mut st)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "engine close failed");
        }
    }
}

impl Shared {
    /// Refuses a write of about `bytes` that would leave the data dir's file system with less
    /// than the reserve free (see [`EngineConfig::min_free_disk_bytes`]). Checked on every
    /// upsert batch (one `statvfs`), so writes resume the moment space is freed.
    pub(crate) fn check_free_space(&self, bytes: u64) -> Result<()> {
        let Ok((free, total)) = crate::os::free_space(&self.config.data_dir) else {
            return Ok(());
        };
        let reserve = self
            .config
            .min_free_disk_bytes
            .unwrap_or_else(|| (total / 20).min(256 << 20));
        // A write costs its bytes twice before a flush: the WAL and the memtable's SST.
        if free < reserve.saturating_add(bytes.saturating_mul(2)) {
            return Err(Error::ResourceExhausted(format!(
                "disk full: the file system of {} has {:.1} MiB free; a write of {:.1} MiB would \
                 leave less than the {:.1} MiB kept in reserve. Free space or grow the volume: \
                 writes resume as soon as there is room",
                self.config.data_dir.display(),
                free as f64 / f64::from(1 << 20),
                bytes as f64 / f64::from(1 << 20),
                reserve as f64 / f64::from(1 << 20)
            )));
        }
        Ok(())
    }

    pub(crate) fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| Error::Internal(format!("column family {name} missing")))
    }

    pub(crate) fn notify(&self) {
        let (m, c) = &self.wake;
        if let Ok(mut w) = m.lock() {
            *w = true;
            c.notify_all();
        }
    }

    /// Calls `f(id, point)` for every point of a version in RocksDB, in id order;
    /// a point whose dimension is not `dim` is corruption.
    pub(crate) fn for_each_stored_point(
        &self,
        version_id: u64,
        dim: usize,
        mut f: impl FnMut(u64, StoredPoint) -> Result<()>,
    ) -> Result<()> {
        let cf = self.cf(CF_POINTS)?;
        let prefix = version_id.to_be_bytes();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, val) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let id = codec::point_id_from_key(&k)?;
            let p = codec::decode_point(id, &val)?;
            if p.vector.len() != dim {
                return Err(Error::DataCorruption(format!(
                    "point {id} has dimension {}",
                    p.vector.len()
                )));
            }
            f(id, p)?;
        }
        Ok(())
    }
}
