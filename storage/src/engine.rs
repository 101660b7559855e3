//! The engine: the catalog of collections, versions and aliases; the write path
//! (validate → one synced `WriteBatch` → apply to memory); the read path; and
//! start-up (lock the data dir, open RocksDB, load or rebuild every index).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rocksdb::{
    ColumnFamilyDescriptor, DB, DBRecoveryMode, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions,
};

use crate::ann::HnswIndex;
use crate::canary::{CompareOut, CompareRequest};
use crate::codec::{
    self, CF_CATALOG, CF_META, CF_POINTS, CollectionRecord, NEXT_ID_KEY, StoredPoint, VersionRecord,
};
use crate::consistency::ConsistencyOut;
use crate::distance::Metric;
use crate::drift::{DriftOut, DriftRequest, WindowSpec};
use crate::error::{Error, Result};
use crate::evaluate::{
    self, ActionsOut, ConfusionOut, EvalConfig, MarginOut, ModeRequest, ProjectedOut, RecallParams,
    RecallReport,
};
use crate::generation::IndexDir;
use crate::indexer::Indexer;
use crate::store::{PointRef, Store};
use crate::validate;
use crate::version::{Hit, IndexState, SearchParams, Version, poisoned};

/// Slots outside the graph an inline search may scan (`Engine::try_search_inline`): 4,096
/// slots of 784 floats are a fraction of a millisecond of SIMD work.
pub const INLINE_SCAN_SLOTS: usize = 4096;

/// How long an evaluation may run: a deadline, and a flag the caller sets when it goes away
/// (both checked between blocks of work). `None.into()` is "no limit".
#[derive(Debug, Clone, Default)]
pub struct Budget {
    pub at: Option<Instant>,
    pub cancel: Option<Arc<AtomicBool>>,
}

impl From<Option<Instant>> for Budget {
    fn from(at: Option<Instant>) -> Self {
        Budget { at, cancel: None }
    }
}

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
    /// Threads of the evaluation pool; default: the number of cores.
    pub eval_threads: usize,
    /// Evaluation thresholds, owners and limits.
    pub eval: EvalConfig,
    /// Nice value of the monitor thread (19 = yield to everything else).
    pub monitor_nice: i32,
    /// Once a version's graph is committed and no insert came for this long, hnsw_rs's own
    /// structure is dropped: searches walk the view, and the next insert reloads the graph
    /// from its generation. `None` keeps it resident.
    pub graph_park_after: Option<std::time::Duration>,
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
            eval_threads: cores,
            eval: EvalConfig::default(),
            monitor_nice: 19,
            graph_park_after: Some(std::time::Duration::from_secs(30)),
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
    /// Evaluations stopped because their caller went away.
    pub evaluations_cancelled: AtomicU64,
    /// Reads of a version's committed generation files to verify their checksums.
    pub generation_file_checks: AtomicU64,
    /// Monitor runs that reused the last result: nothing they read had changed.
    pub monitor_results_reused: AtomicU64,
}

struct CollectionState {
    record: CollectionRecord,
    versions: HashMap<String, Arc<Version>>,
}

pub(crate) struct Shared {
    pub db: DB,
    pub config: EngineConfig,
    catalog: RwLock<BTreeMap<String, CollectionState>>,
    /// Serialises catalog mutations (each one is a read-modify-write of a record).
    catalog_writer: Mutex<()>,
    pub build_pools: Arc<crate::ann::BuildPools>,
    pub query_pool: rayon::ThreadPool,
    /// Long evaluations run here, so they never queue behind (or in front of) batch searches.
    pub eval_pool: rayon::ThreadPool,
    /// Monitors' math: one thread at low priority, so scheduled evaluations yield
    /// the CPU to searches (locks are taken on the caller's thread, at normal priority).
    pub monitor_pool: rayon::ThreadPool,
    pub stats: EngineStats,
    pub shutdown: AtomicBool,
    pub wake: (Mutex<bool>, std::sync::Condvar),
    index_root: PathBuf,
    /// Scheduled evaluations (persisted in CF_META).
    pub(crate) monitors: crate::monitor::Registry,
    _lock: File,
}

/// The storage engine. Cheap to share behind an `Arc`; every method is blocking
/// and belongs on a blocking thread.
pub struct Engine {
    shared: Arc<Shared>,
    indexer: Mutex<Option<Indexer>>,
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

        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Replay stops at the first inconsistency; with sync-on-ACK every ACK precedes it.
        opts.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
        opts.set_track_and_verify_wals_in_manifest(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let cfs = [CF_CATALOG, CF_POINTS, CF_META]
            .into_iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir.join("db"), cfs)?;

        let pool = |n: usize, name: &'static str| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .thread_name(move |i| format!("{name}-{i}"))
                .build()
                .map_err(|e| Error::Internal(e.to_string()))
        };
        let shared = Arc::new(Shared {
            build_pools: Arc::new(crate::ann::BuildPools::new(config.build_threads)?),
            query_pool: pool(config.query_threads, "ember-query")?,
            eval_pool: pool(config.eval_threads, "ember-eval")?,
            monitor_pool: {
                let nice = config.monitor_nice;
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .thread_name(|_| "ember-monitor".into())
                    .start_handler(move |_| crate::os::lower_thread_priority(nice))
                    .build()
                    .map_err(|e| Error::Internal(e.to_string()))?
            },
            index_root: dir.join("index"),
            db,
            config,
            catalog: RwLock::new(BTreeMap::new()),
            catalog_writer: Mutex::new(()),
            stats: EngineStats::default(),
            shutdown: AtomicBool::new(false),
            wake: (Mutex::new(false), std::sync::Condvar::new()),
            monitors: Mutex::new(BTreeMap::new()),
            _lock: lock,
        });
        shared.load_catalog()?;
        *shared.monitors.lock().map_err(poisoned)? =
            crate::monitor::load(&shared.db, shared.cf(CF_META)?)?;
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

    // ---- catalog ----

    pub fn create_version(
        &self,
        collection: &str,
        version: &str,
        spec: VersionSpec,
    ) -> Result<VersionInfo> {
        validate::name("collection", collection)?;
        validate::name("version", version)?;
        if spec.dim == 0 || spec.dim > validate::MAX_DIMENSION {
            return Err(Error::invalid(
                "dimension",
                format!(
                    "must be in 1..={}, got {}",
                    validate::MAX_DIMENSION,
                    spec.dim
                ),
            ));
        }
        let metric = spec.metric.ok_or_else(|| {
            Error::invalid("metric", "must be METRIC_L2, METRIC_COSINE or METRIC_DOT")
        })?;
        let m = if spec.m == 0 { 16 } else { spec.m };
        if !(4..=128).contains(&m) {
            return Err(Error::invalid(
                "hnsw.m",
                format!("must be in 4..=128, got {m}"),
            ));
        }
        let efc = if spec.ef_construction == 0 {
            200
        } else {
            spec.ef_construction
        };
        if !(8..=2000).contains(&efc) {
            return Err(Error::invalid(
                "hnsw.ef_construction",
                format!("must be in 8..=2000, got {efc}"),
            ));
        }
        let s = &self.shared;
        let _w = s.catalog_writer.lock().map_err(poisoned)?;
        let mut record = match s.catalog.read().map_err(poisoned)?.get(collection) {
            Some(c) => {
                if c.record.versions.contains_key(version) {
                    return Err(Error::AlreadyExists {
                        kind: "version",
                        name: version.into(),
                    });
                }
                if c.record.aliases.contains_key(version) {
                    return Err(Error::AlreadyExists {
                        kind: "alias",
                        name: version.into(),
                    });
                }
                c.record.clone()
            }
            None => CollectionRecord {
                name: collection.into(),
                created_ms: now_ms(),
                versions: BTreeMap::new(),
                aliases: BTreeMap::new(),
            },
        };
        let id = s.next_id()?;
        let vrec = VersionRecord {
            id,
            name: version.into(),
            dim: spec.dim,
            metric,
            m,
            ef_construction: efc,
            created_ms: now_ms(),
        };
        record.versions.insert(version.into(), vrec.clone());
        let mut batch = WriteBatch::default();
        batch.put_cf(s.cf(CF_CATALOG)?, NEXT_ID_KEY, (id + 1).to_le_bytes());
        batch.put_cf(s.cf(CF_META)?, codec::seq_key(id), 0u64.to_le_bytes());
        s.put_collection(&mut batch, &record)?;
        s.db.write_opt(batch, &sync_write())?;
        // A stale index dir of a crashed, never-committed version cannot exist (ids are
        // never reused), but clear it anyway.
        let v = Arc::new(s.new_version(collection, vrec, Store::new(spec.dim as usize), 0));
        v.dir.remove_all();
        let mut cat = s.catalog.write().map_err(poisoned)?;
        let entry = cat
            .entry(collection.to_string())
            .or_insert_with(|| CollectionState {
                record: record.clone(),
                versions: HashMap::new(),
            });
        entry.record = record;
        entry.versions.insert(version.into(), v.clone());
        drop(cat);
        info_of(&v)
    }

    pub fn list_collections(&self) -> Result<Vec<CollectionInfo>> {
        let cat = self.shared.catalog.read().map_err(poisoned)?;
        cat.values()
            .map(|c| {
                let mut versions: Vec<_> = c.versions.values().cloned().collect();
                versions.sort_by(|a, b| a.record.name.cmp(&b.record.name));
                Ok(CollectionInfo {
                    name: c.record.name.clone(),
                    versions: versions.iter().map(|v| info_of(v)).collect::<Result<_>>()?,
                    aliases: c
                        .record
                        .aliases
                        .iter()
                        .map(|(a, v)| (a.clone(), v.clone()))
                        .collect(),
                })
            })
            .collect()
    }

    pub fn describe_version(&self, collection: &str, version: &str) -> Result<VersionInfo> {
        let v = self.resolve(collection, version)?;
        info_of(&v)
    }

    /// Resolves a version name or alias to the version.
    pub fn resolve(&self, collection: &str, version: &str) -> Result<Arc<Version>> {
        validate::name("collection", collection)?;
        validate::name("version", version)?;
        let cat = self.shared.catalog.read().map_err(poisoned)?;
        let c = cat.get(collection).ok_or_else(|| Error::NotFound {
            kind: "collection",
            name: collection.into(),
        })?;
        let target = c
            .record
            .aliases
            .get(version)
            .map_or(version, String::as_str);
        c.versions
            .get(target)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                kind: "version or alias",
                name: version.into(),
            })
    }

    pub fn drop_version(&self, collection: &str, version: &str) -> Result<()> {
        validate::name("collection", collection)?;
        validate::name("version", version)?;
        let s = &self.shared;
        let _w = s.catalog_writer.lock().map_err(poisoned)?;
        let mut record = s.collection_record(collection)?;
        if !record.versions.contains_key(version) {
            return Err(Error::NotFound {
                kind: "version",
                name: version.into(),
            });
        }
        if let Some((alias, _)) = record.aliases.iter().find(|(_, v)| v.as_str() == version) {
            return Err(Error::FailedPrecondition(format!(
                "version '{version}' is the target of alias '{alias}'; delete or move the alias first"
            )));
        }
        let vrec = record.versions.remove(version).expect("checked above");
        let mut batch = WriteBatch::default();
        s.put_collection(&mut batch, &record)?;
        s.delete_version_data(&mut batch, vrec.id)?;
        // Its monitors go in the same batch (a monitor naming an alias stays: an alias target
        // cannot be dropped).
        let monitors = s.monitors_of(collection, Some(version))?;
        for (c, v) in &monitors {
            batch.delete_cf(s.cf(CF_META)?, crate::monitor::key(c, v));
        }
        s.db.write_opt(batch, &sync_write())?;
        s.forget_monitors(&monitors)?;
        let removed = {
            let mut cat = s.catalog.write().map_err(poisoned)?;
            let c = cat.get_mut(collection).expect("checked above");
            c.record = record;
            c.versions.remove(version)
        };
        if let Some(v) = removed {
            s.retire(&v);
        }
        Ok(())
    }

    pub fn drop_collection(&self, collection: &str) -> Result<()> {
        validate::name("collection", collection)?;
        let s = &self.shared;
        let _w = s.catalog_writer.lock().map_err(poisoned)?;
        let record = s.collection_record(collection)?;
        let mut batch = WriteBatch::default();
        batch.delete_cf(s.cf(CF_CATALOG)?, codec::collection_key(collection));
        for v in record.versions.values() {
            s.delete_version_data(&mut batch, v.id)?;
        }
        let monitors = s.monitors_of(collection, None)?;
        for (c, v) in &monitors {
            batch.delete_cf(s.cf(CF_META)?, crate::monitor::key(c, v));
        }
        s.db.write_opt(batch, &sync_write())?;
        s.forget_monitors(&monitors)?;
        let removed = s.catalog.write().map_err(poisoned)?.remove(collection);
        for v in removed.into_iter().flat_map(|c| c.versions.into_values()) {
            s.retire(&v);
        }
        Ok(())
    }

    /// Points `alias` at `version` atomically; returns the previous target.
    pub fn set_alias(
        &self,
        collection: &str,
        alias: &str,
        version: &str,
    ) -> Result<Option<String>> {
        validate::name("collection", collection)?;
        validate::name("alias", alias)?;
        validate::name("version", version)?;
        let s = &self.shared;
        let _w = s.catalog_writer.lock().map_err(poisoned)?;
        let mut record = s.collection_record(collection)?;
        if !record.versions.contains_key(version) {
            return Err(Error::NotFound {
                kind: "version",
                name: version.into(),
            });
        }
        if record.versions.contains_key(alias) {
            return Err(Error::invalid(
                "alias",
                format!("'{alias}' is already a version name"),
            ));
        }
        let previous = record.aliases.insert(alias.into(), version.into());
        let mut batch = WriteBatch::default();
        s.put_collection(&mut batch, &record)?;
        s.db.write_opt(batch, &sync_write())?;
        // One pointer swap under the catalog lock: readers see the old or the new target.
        s.catalog
            .write()
            .map_err(poisoned)?
            .get_mut(collection)
            .expect("exists")
            .record = record;
        Ok(previous)
    }

    pub fn delete_alias(&self, collection: &str, alias: &str) -> Result<()> {
        validate::name("collection", collection)?;
        validate::name("alias", alias)?;
        let s = &self.shared;
        let _w = s.catalog_writer.lock().map_err(poisoned)?;
        let mut record = s.collection_record(collection)?;
        if record.aliases.remove(alias).is_none() {
            return Err(Error::NotFound {
                kind: "alias",
                name: alias.into(),
            });
        }
        let mut batch = WriteBatch::default();
        s.put_collection(&mut batch, &record)?;
        s.db.write_opt(batch, &sync_write())?;
        s.catalog
            .write()
            .map_err(poisoned)?
            .get_mut(collection)
            .expect("exists")
            .record = record;
        Ok(())
    }

    // ---- points ----

    /// Writes a batch atomically and durably. Returns the number of points written.
    pub fn upsert(&self, collection: &str, version: &str, points: &[PointInput]) -> Result<u64> {
        let v = self.resolve(collection, version)?;
        if points.len() > validate::MAX_BATCH {
            return Err(Error::invalid(
                "points",
                format!(
                    "at most {} points per request, got {}",
                    validate::MAX_BATCH,
                    points.len()
                ),
            ));
        }
        let cosine = v.metric() == Metric::Cosine;
        for (i, p) in points.iter().enumerate() {
            validate::vector(&format!("points[{i}].vector"), &p.vector, v.dim(), cosine)?;
            validate::label_and_metadata(&format!("points[{i}]"), &p.label, p.metadata.iter())?;
        }
        if points.is_empty() {
            return Ok(0);
        }
        let s = &self.shared;
        let _w = v.writer.lock().map_err(poisoned)?;
        if v.dropped.load(Ordering::SeqCst) {
            return Err(Error::NotFound {
                kind: "version",
                name: version.into(),
            });
        }
        let first = v.last_seq.load(Ordering::SeqCst) + 1;
        let points_cf = s.cf(CF_POINTS)?;
        let mut batch = WriteBatch::default();
        for (i, p) in points.iter().enumerate() {
            let rec = StoredPoint {
                id: p.id,
                seq: first + i as u64,
                timestamp_ms: p.timestamp_ms,
                vector: p.vector.clone(),
                label: p.label.clone(),
                metadata: p.metadata.clone(),
            };
            batch.put_cf(
                points_cf,
                codec::point_key(v.record.id, p.id),
                codec::encode_point(&rec),
            );
        }
        let last = first + points.len() as u64 - 1;
        batch.put_cf(
            s.cf(CF_META)?,
            codec::seq_key(v.record.id),
            last.to_le_bytes(),
        );
        s.db.write_opt(batch, &sync_write())?;
        v.last_seq.store(last, Ordering::SeqCst);
        {
            let mut store = v.store.write().map_err(poisoned)?;
            for (i, p) in points.iter().enumerate() {
                store.append(
                    v.metric(),
                    PointRef {
                        id: p.id,
                        seq: first + i as u64,
                        vector: &p.vector,
                        label: &p.label,
                        metadata: &p.metadata,
                        timestamp_ms: p.timestamp_ms,
                    },
                );
            }
        }
        s.notify();
        Ok(points.len() as u64)
    }

    /// Deletes ids durably; returns how many existed.
    pub fn delete(&self, collection: &str, version: &str, ids: &[u64]) -> Result<u64> {
        let v = self.resolve(collection, version)?;
        if ids.len() > validate::MAX_BATCH * 10 {
            return Err(Error::invalid("ids", "at most 100000 ids per request"));
        }
        let s = &self.shared;
        let _w = v.writer.lock().map_err(poisoned)?;
        let present: Vec<u64> = {
            let store = v.store.read().map_err(poisoned)?;
            let mut seen = std::collections::HashSet::new();
            ids.iter()
                .copied()
                .filter(|id| store.id_to_slot.contains_key(id) && seen.insert(*id))
                .collect()
        };
        if present.is_empty() {
            return Ok(0);
        }
        let first = v.last_seq.load(Ordering::SeqCst) + 1;
        let mut batch = WriteBatch::default();
        let points_cf = s.cf(CF_POINTS)?;
        for id in &present {
            batch.delete_cf(points_cf, codec::point_key(v.record.id, *id));
        }
        let last = first + present.len() as u64 - 1;
        batch.put_cf(
            s.cf(CF_META)?,
            codec::seq_key(v.record.id),
            last.to_le_bytes(),
        );
        s.db.write_opt(batch, &sync_write())?;
        v.last_seq.store(last, Ordering::SeqCst);
        let mut store = v.store.write().map_err(poisoned)?;
        for (i, id) in present.iter().enumerate() {
            store.delete(*id, first + i as u64);
        }
        Ok(present.len() as u64)
    }

    /// Reads points from RocksDB (byte-exact vectors), in request order, missing ids left out.
    pub fn get(
        &self,
        collection: &str,
        version: &str,
        ids: &[u64],
        with_vectors: bool,
    ) -> Result<Vec<PointOutput>> {
        let v = self.resolve(collection, version)?;
        if ids.len() > validate::MAX_BATCH {
            return Err(Error::invalid(
                "ids",
                format!("at most {} ids per request", validate::MAX_BATCH),
            ));
        }
        let s = &self.shared;
        let cf = s.cf(CF_POINTS)?;
        let keys: Vec<_> = ids
            .iter()
            .map(|id| (cf, codec::point_key(v.record.id, *id)))
            .collect();
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (id, got) in ids.iter().zip(s.db.multi_get_cf(keys)) {
            if let Some(bytes) = got? {
                if !seen.insert(*id) {
                    continue;
                }
                let p = codec::decode_point(*id, &bytes)?;
                out.push(PointOutput {
                    id: p.id,
                    vector: with_vectors.then_some(p.vector),
                    label: p.label,
                    metadata: p.metadata,
                    timestamp_ms: p.timestamp_ms,
                });
            }
        }
        Ok(out)
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
        Ok((hits, v.record.name.clone()))
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
        Ok(hits.map(|hits| (hits, v.record.name.clone())))
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

    // ---- evaluation (long-running; each honours `deadline` between blocks of work) ----

    fn evaluate<T: Send>(
        &self,
        f: impl FnOnce(&emberdb_eval::Deadline) -> Result<T> + Send,
        deadline: impl Into<Budget>,
    ) -> Result<T> {
        let Budget { at, cancel } = deadline.into();
        let d = match &cancel {
            Some(c) => emberdb_eval::Deadline::with_cancel(at, c.clone()),
            None => emberdb_eval::Deadline::new(at),
        };
        let out = self.shared.eval_pool.install(|| f(&d));
        if out.is_err() && cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            self.shared
                .stats
                .evaluations_cancelled
                .fetch_add(1, Ordering::Relaxed);
        }
        out
    }

    pub fn eval_config(&self) -> &EvalConfig {
        &self.shared.config.eval
    }

    /// ANN recall@k against exact search, plus label-based retrieval quality.
    pub fn eval_recall(
        &self,
        collection: &str,
        version: &str,
        p: &RecallParams,
        deadline: impl Into<Budget>,
    ) -> Result<RecallReport> {
        let v = self.resolve(collection, version)?;
        self.evaluate(|d| evaluate::recall(&v, p, d), deadline)
    }

    /// Leave-one-out 1-NN margin.
    pub fn eval_margin(
        &self,
        collection: &str,
        version: &str,
        threshold: Option<f64>,
        lowest_n: Option<u32>,
        mode: ModeRequest,
        deadline: impl Into<Budget>,
    ) -> Result<MarginOut> {
        let v = self.resolve(collection, version)?;
        let cfg = &self.shared.config.eval;
        self.evaluate(
            |d| evaluate::margin(&v, cfg, threshold, lowest_n, mode, d),
            deadline,
        )
    }

    /// Leave-one-out 1-NN confusion.
    pub fn eval_confusion(
        &self,
        collection: &str,
        version: &str,
        top_pairs: Option<u32>,
        mode: ModeRequest,
        deadline: impl Into<Budget>,
    ) -> Result<ConfusionOut> {
        let v = self.resolve(collection, version)?;
        let cfg = &self.shared.config.eval;
        self.evaluate(
            |d| evaluate::confusion(&v, cfg, top_pairs, mode, d),
            deadline,
        )
    }

    /// Signals turned into owned work items.
    pub fn eval_actions(
        &self,
        collection: &str,
        version: &str,
        mode: ModeRequest,
        deadline: impl Into<Budget>,
    ) -> Result<ActionsOut> {
        let v = self.resolve(collection, version)?;
        let cfg = &self.shared.config.eval;
        self.evaluate(|d| evaluate::actions(&v, cfg, mode, d), deadline)
    }

    /// 2-D PCA coordinates of (a sample of) the version's points.
    pub fn eval_project(
        &self,
        collection: &str,
        version: &str,
        sample_size: Option<u32>,
        seed: Option<u64>,
    ) -> Result<Vec<ProjectedOut>> {
        let v = self.resolve(collection, version)?;
        self.evaluate(|_| evaluate::project(&v, sample_size, seed), None)
    }

    /// Distribution shift between two windows of the collection.
    pub fn drift(
        &self,
        collection: &str,
        baseline: &WindowSpec,
        current: &WindowSpec,
        req: &DriftRequest,
        deadline: impl Into<Budget>,
    ) -> Result<DriftOut> {
        validate::name("collection", collection)?;
        baseline.validate("baseline")?;
        current.validate("current")?;
        let bv = self.resolve(collection, &baseline.version)?;
        let cv = self.resolve(collection, &current.version)?;
        let cfg = &self.shared.config.eval;
        self.evaluate(
            |d| crate::drift::drift(&bv, baseline, &cv, current, req, cfg, d),
            deadline,
        )
    }

    /// Canary comparison of two versions; on PROMOTE with `promote_alias` set,
    /// the alias moves to the candidate atomically before this returns.
    pub fn compare_versions(
        &self,
        collection: &str,
        baseline_version: &str,
        candidate_version: &str,
        req: &CompareRequest,
        deadline: impl Into<Budget>,
    ) -> Result<CompareOut> {
        validate::name("collection", collection)?;
        validate::name("baseline_version", baseline_version)?;
        validate::name("candidate_version", candidate_version)?;
        if !req.promote_alias.is_empty() {
            validate::name("promote_alias", &req.promote_alias)?;
        }
        let bv = self.resolve(collection, baseline_version)?;
        let cv = self.resolve(collection, candidate_version)?;
        if !req.promote_alias.is_empty() && bv.record.name != cv.record.name {
            // Refuse before the work, not after it: the alias must not name a version.
            let cat = self.shared.catalog.read().map_err(poisoned)?;
            if cat
                .get(collection)
                .is_some_and(|c| c.versions.contains_key(&req.promote_alias))
            {
                return Err(Error::invalid(
                    "promote_alias",
                    format!("'{}' is a version name, not an alias", req.promote_alias),
                ));
            }
        }
        let cfg = &self.shared.config.eval;
        let mut out = self.evaluate(|d| crate::canary::compare(&bv, &cv, req, cfg, d), deadline)?;
        if out.verdict == crate::canary::Verdict::Promote && !req.promote_alias.is_empty() {
            self.set_alias(collection, &req.promote_alias, &cv.record.name)?;
            out.alias_moved = true;
            tracing::info!(collection, alias = %req.promote_alias, version = %cv.record.name, "canary promoted");
        }
        Ok(out)
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
        s.eval_pool.install(|| {
            if repair {
                crate::consistency::check_and_repair(s, &v)
            } else {
                crate::consistency::check(s, &v, crate::consistency::Depth::Full)
            }
        })
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
        let mut st = v.index.lock().map_err(poisoned)?;
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

fn info_of(v: &Version) -> Result<VersionInfo> {
    let (point_count, indexed_count) = v.counts()?;
    Ok(VersionInfo {
        collection: v.collection.clone(),
        version: v.record.name.clone(),
        dim: v.record.dim,
        metric: v.record.metric,
        point_count,
        indexed_count,
        status: if point_count == indexed_count {
            IndexStatus::Ready
        } else {
            IndexStatus::Indexing
        },
        m: v.record.m,
        ef_construction: v.record.ef_construction,
        created_ms: v.record.created_ms,
    })
}

impl Shared {
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

    /// A little-endian u64 stored under `key`, or `default` when absent.
    fn get_u64(&self, cf: &str, key: &[u8], default: u64) -> Result<u64> {
        match self.db.get_cf(self.cf(cf)?, key)? {
            Some(b) => Ok(u64::from_le_bytes(b.as_slice().try_into().map_err(
                |_| {
                    Error::DataCorruption(format!(
                        "{cf}/{} is not 8 bytes",
                        String::from_utf8_lossy(key)
                    ))
                },
            )?)),
            None => Ok(default),
        }
    }

    fn next_id(&self) -> Result<u64> {
        self.get_u64(CF_CATALOG, NEXT_ID_KEY, 1)
    }

    fn collection_record(&self, name: &str) -> Result<CollectionRecord> {
        self.catalog
            .read()
            .map_err(poisoned)?
            .get(name)
            .map(|c| c.record.clone())
            .ok_or_else(|| Error::NotFound {
                kind: "collection",
                name: name.into(),
            })
    }

    fn put_collection(&self, batch: &mut WriteBatch, record: &CollectionRecord) -> Result<()> {
        let json = serde_json::to_vec(record).map_err(|e| Error::Internal(e.to_string()))?;
        batch.put_cf(
            self.cf(CF_CATALOG)?,
            codec::collection_key(&record.name),
            json,
        );
        Ok(())
    }

    fn delete_version_data(&self, batch: &mut WriteBatch, id: u64) -> Result<()> {
        batch.delete_range_cf(
            self.cf(CF_POINTS)?,
            codec::point_key(id, 0),
            codec::point_key(id + 1, 0),
        );
        batch.delete_cf(self.cf(CF_META)?, codec::seq_key(id));
        Ok(())
    }

    /// After a version left the catalog: stop its indexer work and remove its files.
    /// The (collection, version) keys of the monitors on `collection` (and `version`, when given).
    fn monitors_of(
        &self,
        collection: &str,
        version: Option<&str>,
    ) -> Result<Vec<(String, String)>> {
        let reg = self.monitors.lock().map_err(poisoned)?;
        Ok(reg
            .keys()
            .filter(|(c, v)| c == collection && version.is_none_or(|want| v == want))
            .cloned()
            .collect())
    }

    /// Removes monitors from the registry once their records are deleted.
    fn forget_monitors(&self, keys: &[(String, String)]) -> Result<()> {
        let mut reg = self.monitors.lock().map_err(poisoned)?;
        for k in keys {
            reg.remove(k);
        }
        Ok(())
    }

    fn retire(&self, v: &Version) {
        v.dropped.store(true, Ordering::SeqCst);
        let _writer = v.writer.lock();
        let _index = v.index.lock();
        v.dir.remove_all();
    }

    fn new_version(
        &self,
        collection: &str,
        record: VersionRecord,
        store: Store,
        last_seq: u64,
    ) -> Version {
        Version {
            dir: IndexDir::new(&self.index_root, record.id),
            record,
            collection: collection.into(),
            writer: Mutex::new(()),
            last_seq: AtomicU64::new(last_seq),
            store: crate::version::StoreLock::new(store),
            ann: RwLock::new(None),
            view: RwLock::new(None),
            indexed_upto: AtomicUsize::new(0),
            parked: AtomicU64::new(0),
            index: Mutex::new(IndexState::default()),
            dropped: AtomicBool::new(false),
            loo_cache: Mutex::new(None),
            graph_check: Mutex::new(None),
        }
    }

    fn load_catalog(&self) -> Result<()> {
        let cf = self.cf(CF_CATALOG)?;
        let mut cat = BTreeMap::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(b"coll/", Direction::Forward))
        {
            let (k, val) = item?;
            if !k.starts_with(b"coll/") {
                break;
            }
            let record: CollectionRecord = codec::decode_collection_record(&val)?;
            let mut versions = HashMap::new();
            for vrec in record.versions.values() {
                let v = self.load_version(&record.name, vrec.clone())?;
                versions.insert(vrec.name.clone(), Arc::new(v));
            }
            cat.insert(record.name.clone(), CollectionState { record, versions });
        }
        *self.catalog.write().map_err(poisoned)? = cat;
        Ok(())
    }

    /// Loads one version: its points from RocksDB, and its graph from the committed
    /// generation when every check passes. Otherwise the graph is rebuilt in the
    /// background and searches use the exact path until then.
    fn load_version(&self, collection: &str, rec: VersionRecord) -> Result<Version> {
        let started = Instant::now();
        let stored_seq = self.get_u64(CF_META, &codec::seq_key(rec.id), 0)?;
        let version = self.new_version(
            collection,
            rec.clone(),
            Store::new(rec.dim as usize),
            stored_seq,
        );
        let dir = &version.dir;

        let mut graph = None;
        if rec.metric.uses_graph() {
            match dir.open_verified() {
                Ok(Some((manifest, gen_dir, slots))) => {
                    if manifest.applied_seq > stored_seq {
                        return Err(Error::DataCorruption(format!(
                            "collection '{collection}' version '{}': index generation covers op {} but RocksDB recovered only up to op {stored_seq}; acknowledged writes are missing, refusing to serve",
                            rec.name, manifest.applied_seq
                        )));
                    }
                    if manifest.dim != rec.dim {
                        tracing::warn!(
                            version_id = rec.id,
                            "index manifest dimension differs; rebuilding"
                        );
                        self.stats.rebuilds_corrupt.fetch_add(1, Ordering::Relaxed);
                    } else {
                        graph = Some((manifest, slots, gen_dir));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(version_id = rec.id, error = %e, "index generation failed verification; rebuilding from RocksDB");
                    self.stats.rebuilds_corrupt.fetch_add(1, Ordering::Relaxed);
                }
            }
        }

        let mut store = Store::new(rec.dim as usize);
        // id → (slot, seq) of the graph's slot map; later slots win.
        let mut slot_of: HashMap<u64, (usize, u64)> = HashMap::new();
        if let Some((manifest, slots, _)) = &graph {
            for (slot, e) in slots.iter().enumerate() {
                store.push_dead(e.id, e.seq);
                slot_of.insert(e.id, (slot, e.seq));
            }
            debug_assert_eq!(store.len() as u64, manifest.slot_count);
        }
        self.for_each_stored_point(rec.id, rec.dim as usize, |id, p| {
            let pref = PointRef {
                id,
                seq: p.seq,
                vector: &p.vector,
                label: &p.label,
                metadata: &p.metadata,
                timestamp_ms: p.timestamp_ms,
            };
            match slot_of.get(&id) {
                Some(&(slot, seq)) if seq == p.seq => store.fill(slot, rec.metric, pref),
                _ => {
                    store.append(rec.metric, pref);
                }
            }
            Ok(())
        })?;
        store.applied_seq = stored_seq;
        let live = store.live_count;
        *version.store.write().map_err(poisoned)? = store;
        // A generation serves once its view is installed; if that fails, it is not trusted and
        // the indexer rebuilds from the store.
        let graph = match graph {
            Some((manifest, _, gen_dir)) => {
                version
                    .indexed_upto
                    .store(manifest.slot_count as usize, Ordering::SeqCst);
                match load_view(&version, &manifest, &gen_dir, &self.build_pools) {
                    Ok(ix) => Some((manifest, ix)),
                    Err(e) => {
                        tracing::warn!(version_id = rec.id, error = %e, "index graph failed to export; rebuilding from RocksDB");
                        self.stats.rebuilds_corrupt.fetch_add(1, Ordering::Relaxed);
                        version.indexed_upto.store(0, Ordering::SeqCst);
                        *version.view.write().map_err(poisoned)? = None;
                        None
                    }
                }
            }
            None => None,
        };
        if let Some((manifest, ix)) = graph {
            let mut st = version.index.lock().map_err(poisoned)?;
            st.generation = manifest.generation;
            match ix {
                // Loaded only because the generation's view had to be selected again.
                Some(ix) => {
                    *version.ann.write().map_err(poisoned)? = Some(ix);
                    st.mapped_generation = Some(manifest.generation);
                }
                None => version.parked.store(manifest.generation, Ordering::SeqCst),
            }
            dir.remove_other_generations(&[manifest.generation]);
            self.stats.loads.fetch_add(1, Ordering::Relaxed);
            tracing::info!(collection, version = %rec.name, points = live, generation = manifest.generation,
                elapsed_ms = started.elapsed().as_millis() as u64, "loaded version with its index");
        } else {
            // Whatever generation exists is not trusted; the indexer writes a new one.
            let mut st = version.index.lock().map_err(poisoned)?;
            st.generation = dir
                .open_verified()
                .ok()
                .flatten()
                .map_or(0, |(m, _, _)| m.generation);
            st.generation = st.generation.max(highest_gen_on_disk(&dir.root));
            tracing::info!(collection, version = %rec.name, points = live, recovered_seq = stored_seq,
                elapsed_ms = started.elapsed().as_millis() as u64, "loaded version; index will be built in the background");
        }
        Ok(version)
    }

    pub(crate) fn versions(&self) -> Vec<Arc<Version>> {
        self.catalog
            .read()
            .map(|c| {
                c.values()
                    .flat_map(|c| c.versions.values().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn highest_gen_on_disk(root: &Path) -> u64 {
    std::fs::read_dir(root)
        .map(|it| {
            it.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_prefix("gen-")?
                        .parse::<u64>()
                        .ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Installs the searchable view of a committed generation: the view it recorded (`links.bin`),
/// with hnsw_rs's graph left on disk until an insert needs it (`Ok(None)`: the version is parked).
/// Generations without a usable `links.bin` load hnsw_rs's graph and select the view again.
fn load_view(
    version: &Version,
    manifest: &crate::generation::Manifest,
    gen_dir: &Path,
    pools: &Arc<crate::ann::BuildPools>,
) -> Result<Option<Arc<HnswIndex>>> {
    let has_links = manifest
        .files
        .iter()
        .any(|f| f.name == crate::generation::LINKS_FILE);
    if has_links {
        let path = gen_dir.join(crate::generation::LINKS_FILE);
        let recorded = std::fs::read(&path)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))
            .and_then(|b| crate::generation::decode_links(&b))
            .and_then(|l| {
                crate::graph_view::GraphView::from_links(l, manifest.slot_count as usize)
            });
        match recorded {
            Ok(view)
                if view.nodes() as u64 == manifest.graph_points
                    && view.unreachable().is_empty() =>
            {
                *version.view.write().map_err(poisoned)? = Some(Arc::new(view));
                return Ok(None);
            }
            Ok(_) => tracing::warn!(
                version_id = version.record.id,
                "recorded graph view disagrees with its generation; selecting it again"
            ),
            Err(e) => tracing::warn!(version_id = version.record.id, error = %e,
                "recorded graph view unusable; selecting it again"),
        }
    }
    let ix = crate::indexer::load_graph(manifest, gen_dir, pools.clone())?;
    crate::indexer::refresh_view(version, &ix, crate::graph_view::Refine::Polish)?;
    Ok(Some(Arc::new(ix)))
}
