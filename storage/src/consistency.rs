//! Does a version's index agree with what is stored?
//!
//! Three layers are compared: RocksDB (the truth) against the in-memory mirror
//! (ids, vectors), the mirror against the HNSW graph (which slots are nodes, the
//! vector each node holds), and the graph search walks against itself (every
//! live node must be reachable on layer 0 from the entry point search starts
//! from: the view in `graph_view.rs`). The committed
//! generation's files are re-checked against their manifest.
//!
//! Not errors: points the indexer has not reached yet (searches scan them
//! exactly) and graph nodes of deleted or overwritten points (masked at search,
//! dropped by the next rebuild). Both are counted.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::distance::{Metric, normalize};
use crate::engine::Shared;
use crate::error::Result;
use crate::store::{PointRef, Store};
use crate::version::{IndexState, Version, poisoned};

/// Ids listed per finding at most; the finding text gives the full count.
pub const MAX_LISTED: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumState {
    Ok,
    Mismatch,
    NoGeneration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsistencyOut {
    pub stored_points: u64,
    pub indexed_points: u64,
    pub pending_points: u64,
    pub masked_tombstones: u64,
    pub stored_not_indexed: Vec<u64>,
    pub indexed_not_stored: Vec<u64>,
    pub vector_mismatch: Vec<u64>,
    pub unreachable: Vec<u64>,
    pub checksum: ChecksumState,
    pub generation: u64,
    pub consistent: bool,
    /// Consistent apart from the committed files' checksums.
    pub graph_ok: bool,
    /// RocksDB and the in-memory mirror agree (Full checks; a repair then reloads it).
    pub mirror_ok: bool,
    pub repaired: bool,
    pub before_repair: Option<Box<ConsistencyOut>>,
    pub findings: Vec<String>,
}

/// How deep a check goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Mirror and graph only: no RocksDB scan, writers are not paused (monitors).
    Graph,
    /// Also scan RocksDB and compare it with the mirror (pauses this version's writers).
    Full,
}

fn prepared(metric: Metric, v: &[f32]) -> Vec<f32> {
    let mut v = v.to_vec();
    if metric == Metric::Cosine {
        normalize(&mut v);
    }
    v
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

struct Findings {
    stored_not_indexed: Vec<u64>,
    indexed_not_stored: Vec<u64>,
    vector_mismatch: Vec<u64>,
    unreachable: Vec<u64>,
    notes: Vec<String>,
    /// Problems with no id to list (a node whose slot the mirror does not know).
    anonymous: usize,
    /// RocksDB and the mirror agree (always true when RocksDB was not scanned).
    mirror_ok: bool,
}

/// Compares RocksDB with the mirror. Caller holds the version's writer lock.
fn check_mirror(s: &Shared, v: &Version, store: &Store, f: &mut Findings) -> Result<u64> {
    let mut stored = 0u64;
    let mut seen: HashSet<u64> = HashSet::with_capacity(store.live_count());
    let (mut missing, mut differ) = (0usize, 0usize);
    let mut pacer = crate::os::Pacer::new();
    s.for_each_stored_point(v.record().id, v.dim(), |id, p| {
        pacer.tick();
        stored += 1;
        seen.insert(id);
        match store.slot_of(id) {
            Some(slot) if store.is_live(slot) => {
                if !same_bits(&prepared(v.metric(), &p.vector), store.vector(slot)) {
                    differ += 1;
                    f.vector_mismatch.push(id);
                }
            }
            _ => {
                missing += 1;
                f.stored_not_indexed.push(id);
            }
        }
        Ok(())
    })?;
    let extra: Vec<u64> = (0..store.len())
        .filter(|&slot| store.is_live(slot) && !seen.contains(&store.id(slot)))
        .map(|slot| store.id(slot))
        .collect();
    if missing > 0 {
        f.notes.push(format!(
            "{missing} stored points are missing from memory: no search can return them"
        ));
    }
    if differ > 0 {
        f.notes.push(format!(
            "{differ} points differ between RocksDB and memory: searches rank them by a wrong vector"
        ));
    }
    if !extra.is_empty() {
        f.notes.push(format!(
            "{} points are served from memory but not stored in RocksDB",
            extra.len()
        ));
    }
    f.mirror_ok = missing == 0 && differ == 0 && extra.is_empty();
    f.indexed_not_stored.extend(extra);
    Ok(stored)
}

/// Checks one version. Lock order: writer (Full only), then the index lock.
pub(crate) fn check(s: &Shared, v: &Version, depth: Depth) -> Result<ConsistencyOut> {
    check_with(s, v, depth, true)
}

/// `check`, optionally without re-reading the committed generation files (the report then says
/// `NoGeneration` for them; only the monitors' cached check asks for that).
fn check_with(s: &Shared, v: &Version, depth: Depth, verify_files: bool) -> Result<ConsistencyOut> {
    let pre = Preload::take(s, v, depth, verify_files);
    let _writer = match depth {
        Depth::Full => Some(v.writer().lock().map_err(poisoned)?),
        Depth::Graph => None,
    };
    let st = v.index().lock().map_err(poisoned)?;
    check_locked(s, v, depth, &st, verify_files, pre)
}

/// What a check reads from the generation files, read before it takes any lock (writers wait on
/// the writer lock a full check holds, so that wait no longer includes this I/O), on the
/// background pool (idle class: it holds no lock a request waits on). The check uses it when
/// the generation is still the committed (or parked) one once it holds the locks, and reads
/// again under them otherwise.
struct Preload {
    /// The committed generation's verified manifest and directory, or why verification failed.
    verified: Option<Result<Option<(crate::generation::Manifest, std::path::PathBuf)>>>,
    /// A parked generation (full depth): its number and its graph loaded back.
    graph: Option<(u64, Result<crate::ann::HnswIndex>)>,
}

impl Preload {
    /// Nothing read ahead: the check reads under its locks.
    fn none() -> Preload {
        Preload {
            verified: None,
            graph: None,
        }
    }

    fn take(s: &Shared, v: &Version, depth: Depth, verify_files: bool) -> Preload {
        let uses_graph = v.metric().uses_graph();
        // Nothing to read ahead (a monitor's graph-level check between file checks): do not wait
        // for an idle-class thread at all.
        if !uses_graph || (!verify_files && depth == Depth::Graph) {
            return Preload::none();
        }
        s.build_pools.background().install(|| {
            let verified = (uses_graph && verify_files)
                .then(|| verify_files_of(s, v).map(|o| o.map(|(m, dir, _)| (m, dir))));
            let parked = v.parked().load(Ordering::SeqCst);
            let resident = v.ann().read().map(|a| a.is_some()).unwrap_or(true);
            let graph =
                (uses_graph && depth == Depth::Full && parked != 0 && !resident).then(|| {
                    let known = match &verified {
                        Some(Ok(Some(md))) => Some(md),
                        _ => None,
                    };
                    (parked, load_parked(s, v, parked, known))
                });
            Preload { verified, graph }
        })
    }
}

/// The caller holds the version's index lock (`st`), so the graph cannot change meanwhile.
fn check_locked(
    s: &Shared,
    v: &Version,
    depth: Depth,
    st: &IndexState,
    verify_files: bool,
    pre: Preload,
) -> Result<ConsistencyOut> {
    // Reading and checksumming the generation files is file I/O proportional to the graph: it
    // was done before any lock was taken (`Preload`), and is done again here, before the store
    // lock (the index lock the caller holds keeps the generation from changing), only when a
    // commit came in between.
    let mut file_note = None;
    let mut verified = None;
    // A failure read ahead may be a commit that replaced the generation meanwhile: only what is
    // read under the locks may call the files damaged.
    let preverified = pre.verified.filter(|r| match r {
        Ok(Some((m, _))) => m.generation == st.generation,
        Ok(None) => st.generation == 0,
        Err(_) => false,
    });
    let (checksum, generation) = if v.metric().uses_graph() && verify_files {
        match preverified
            .unwrap_or_else(|| verify_files_of(s, v).map(|o| o.map(|(m, dir, _)| (m, dir))))
        {
            Ok(Some((m, dir))) => {
                let g = m.generation;
                verified = Some((m, dir));
                (ChecksumState::Ok, g)
            }
            Ok(None) => (ChecksumState::NoGeneration, 0),
            Err(e) => {
                file_note = Some(format!("graph files fail verification: {e}"));
                (ChecksumState::Mismatch, st.generation)
            }
        }
    } else {
        (ChecksumState::NoGeneration, 0)
    };
    // A parked graph is not resident: a full check loads its generation for the walk (before the
    // store lock, like the file reads); the monitors' graph-level check takes its nodes from the
    // view read from that generation, whose files the checksums cover.
    let mut load_note = None;
    let parked = v.parked().load(Ordering::SeqCst);
    let resident = v.ann().read().map_err(poisoned)?.clone();
    let ann = match (resident, parked, depth) {
        (Some(a), _, _) => Some(a),
        (None, 0, _) | (None, _, Depth::Graph) => None,
        (None, generation, Depth::Full) => match pre
            .graph
            .filter(|(g, loaded)| *g == generation && loaded.is_ok())
            .map(|(_, loaded)| loaded)
            .unwrap_or_else(|| load_parked(s, v, generation, verified.as_ref()))
        {
            Ok(a) => Some(Arc::new(a)),
            Err(e) => {
                load_note = Some(format!("the committed graph failed to load: {e}"));
                None
            }
        },
    };
    let store = v.store().read().map_err(poisoned)?;
    let mut f = Findings {
        stored_not_indexed: Vec::new(),
        indexed_not_stored: Vec::new(),
        vector_mismatch: Vec::new(),
        unreachable: Vec::new(),
        notes: file_note.into_iter().chain(load_note).collect(),
        anonymous: 0,
        mirror_ok: true,
    };
    let stored = match depth {
        Depth::Full => check_mirror(s, v, &store, &mut f)?,
        Depth::Graph => store.live_count() as u64,
    };

    let mut indexed = 0u64;
    let mut pending = 0u64;
    let mut tombstones = 0u64;

    if v.metric().uses_graph() {
        let upto = v.indexed_upto().load(Ordering::SeqCst).min(store.len());
        let view = v.view().read().map_err(poisoned)?.clone();
        let mut in_graph = vec![false; store.len()];
        let (mut unknown, mut duplicate, mut differ) = (0usize, 0usize, 0usize);
        if let (None, Depth::Graph, Some(g)) = (&ann, depth, view.as_ref().filter(|_| parked != 0))
        {
            for slot in (0..g.covers).filter(|&s| g.is_node(s)) {
                if slot >= store.len() {
                    unknown += 1;
                    continue;
                }
                in_graph[slot] = true;
                if store.is_live(slot) {
                    indexed += 1;
                } else {
                    tombstones += 1;
                }
            }
        }
        if let Some(ann) = &ann {
            let mut pacer = crate::os::Pacer::new();
            ann.for_each_node(|slot, _level, _layers, vector| {
                pacer.tick();
                if slot >= store.len() {
                    unknown += 1;
                    return;
                }
                if in_graph[slot] {
                    duplicate += 1;
                }
                in_graph[slot] = true;
                if !store.is_live(slot) {
                    tombstones += 1;
                    return;
                }
                indexed += 1;
                if !same_bits(vector, store.vector(slot)) {
                    differ += 1;
                    f.vector_mismatch.push(store.id(slot));
                }
            })?;
        }
        let mut lost = 0usize;
        for (slot, &present) in in_graph.iter().enumerate() {
            if !store.is_live(slot) || present {
                continue;
            }
            if slot < upto {
                lost += 1;
                f.stored_not_indexed.push(store.id(slot));
            } else {
                pending += 1;
            }
        }
        // Reachability as search walks: layer 0 of the view from its entry point. Slots the view
        // does not cover are scanned exactly by every search.
        let orphans: Vec<u64> = view
            .as_ref()
            .map(|g| g.unreachable())
            .unwrap_or_default()
            .into_iter()
            .filter(|&slot| slot < store.len() && store.is_live(slot))
            .map(|slot| store.id(slot))
            .collect();
        if lost > 0 {
            f.notes.push(format!(
                "{lost} points below the indexer's watermark are not in the graph: ANN search cannot find them"
            ));
        }
        if differ > 0 {
            f.notes.push(format!(
                "{differ} graph nodes hold a vector that differs from the stored one"
            ));
        }
        if !orphans.is_empty() {
            f.notes.push(format!(
                "{} graph nodes are unreachable from the entry point",
                orphans.len()
            ));
        }
        if unknown > 0 {
            f.anonymous += unknown;
            f.notes.push(format!(
                "{unknown} graph nodes refer to slots the store does not have"
            ));
        }
        if duplicate > 0 {
            f.anonymous += duplicate;
            f.notes
                .push(format!("{duplicate} slots appear twice in the graph"));
        }
        f.unreachable = orphans;
    } else {
        indexed = store.live_count() as u64;
    }
    drop(store);
    // A graph loaded only for this check is millions of small allocations: freed on the
    // background pool (after the check's own locks are gone), not on the request's thread.
    if let Some(a) = ann.filter(|_| parked != 0) {
        s.build_pools.background().spawn(move || drop(a));
    }

    let graph_ok = f.stored_not_indexed.is_empty()
        && f.indexed_not_stored.is_empty()
        && f.vector_mismatch.is_empty()
        && f.unreachable.is_empty()
        && f.anonymous == 0;
    let consistent = graph_ok && checksum != ChecksumState::Mismatch;
    let cap = |mut ids: Vec<u64>| {
        ids.sort_unstable();
        ids.dedup();
        ids.truncate(MAX_LISTED);
        ids
    };
    Ok(ConsistencyOut {
        stored_points: stored,
        indexed_points: indexed,
        pending_points: pending,
        masked_tombstones: tombstones,
        stored_not_indexed: cap(f.stored_not_indexed),
        indexed_not_stored: cap(f.indexed_not_stored),
        vector_mismatch: cap(f.vector_mismatch),
        unreachable: cap(f.unreachable),
        checksum,
        generation,
        consistent,
        graph_ok,
        mirror_ok: f.mirror_ok,
        repaired: false,
        before_repair: None,
        findings: f.notes,
    })
}

/// How often a monitor re-reads the committed files to verify their checksums.
pub const MONITOR_FILE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// The monitors' last check of one version.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MonitorCheck {
    /// (op sequence, watermark, graph identity) the graph walk saw.
    state: (u64, usize, usize),
    graph_ok: bool,
    files_ok: bool,
    files_checked: std::time::Instant,
}

/// Reads and checksums the version's committed generation files (counted).
fn verify_files_of(
    s: &Shared,
    v: &Version,
) -> Result<
    Option<(
        crate::generation::Manifest,
        std::path::PathBuf,
        Vec<crate::generation::SlotEntry>,
    )>,
> {
    s.stats
        .generation_file_checks
        .fetch_add(1, Ordering::Relaxed);
    v.dir().open_verified()
}

/// The monitors' check: graph level, re-walking the graph only when the version
/// changed since the last walk (op sequence, watermark, graph identity), and
/// re-reading the committed files at most every `MONITOR_FILE_CHECK_EVERY`
/// (CheckConsistency always does both).
pub(crate) fn monitor_check(s: &Shared, v: &Version) -> Result<bool> {
    let state = {
        let applied = v.store().read().map_err(poisoned)?.applied_seq();
        // The resident graph, or the parked generation (odd: never an aligned pointer).
        let graph = v
            .ann()
            .read()
            .map_err(poisoned)?
            .as_ref()
            .map_or(2 * v.parked().load(Ordering::SeqCst) as usize + 1, |a| {
                Arc::as_ptr(a) as usize
            });
        (applied, v.indexed_upto().load(Ordering::SeqCst), graph)
    };
    let cached = *v.graph_check().lock().map_err(poisoned)?;
    let now = std::time::Instant::now();
    let entry = match cached {
        Some(c) if c.state == state => {
            if now.duration_since(c.files_checked) < MONITOR_FILE_CHECK_EVERY {
                c
            } else {
                MonitorCheck {
                    files_ok: !v.metric().uses_graph() || verify_files_of(s, v).is_ok(),
                    files_checked: now,
                    ..c
                }
            }
        }
        _ => {
            // The version changed: walk the graph again, but read the files only when their
            // turn has come, so a version under steady writes is not re-read on every run.
            let files_due = cached
                .is_none_or(|c| now.duration_since(c.files_checked) >= MONITOR_FILE_CHECK_EVERY);
            let r = check_with(s, v, Depth::Graph, files_due)?;
            MonitorCheck {
                state,
                graph_ok: r.graph_ok,
                files_ok: match cached {
                    Some(c) if !files_due => c.files_ok,
                    _ => r.checksum != ChecksumState::Mismatch,
                },
                files_checked: match cached {
                    Some(c) if !files_due => c.files_checked,
                    _ => now,
                },
            }
        }
    };
    *v.graph_check().lock().map_err(poisoned)? = Some(entry);
    Ok(entry.graph_ok && entry.files_ok)
}

/// The graph of a parked version's committed generation, loaded for one check; `known` is a
/// manifest and directory already verified, used when it is that generation's.
fn load_parked(
    s: &Shared,
    v: &Version,
    generation: u64,
    known: Option<&(crate::generation::Manifest, std::path::PathBuf)>,
) -> Result<crate::ann::HnswIndex> {
    match known.filter(|(m, _)| m.generation == generation) {
        Some((m, dir)) => crate::indexer::load_graph(m, dir, s.build_pools.clone()),
        None => crate::indexer::parked_generation(v, generation)
            .and_then(|(m, dir)| crate::indexer::load_graph(&m, &dir, s.build_pools.clone())),
    }
}

/// Reloads the mirror from RocksDB (caller holds writer and index locks) and
/// drops the graph, so the rebuild that follows starts from the truth.
fn reload_mirror(s: &Shared, v: &Version) -> Result<()> {
    // Old slots stay (dead) so that a search holding the old graph view still
    // indexes valid slots; the stored points get fresh slots after them.
    let mut store = Store::new(v.dim());
    let applied = {
        let old = v.store().read().map_err(poisoned)?;
        for slot in 0..old.len() {
            store.push_dead(old.id(slot), old.seq(slot));
        }
        old.applied_seq()
    };
    s.for_each_stored_point(v.record().id, v.dim(), |id, p| {
        store.append(v.metric(), PointRef::stored(id, &p));
        Ok(())
    })?;
    store.set_applied_seq(applied);
    // Order: hide the graph first (searches then scan exactly), then swap the mirror.
    v.indexed_upto().store(0, Ordering::SeqCst);
    *v.view().write().map_err(poisoned)? = None;
    *v.ann().write().map_err(poisoned)? = None;
    v.parked().store(0, Ordering::SeqCst);
    *v.store().write().map_err(poisoned)? = store;
    Ok(())
}

/// Checks, and when inconsistent rebuilds (from RocksDB when the mirror is off,
/// serially so no node is left unreachable), commits, and checks again.
pub(crate) fn check_and_repair(s: &Arc<Shared>, v: &Version) -> Result<ConsistencyOut> {
    let writer = v.writer().lock().map_err(poisoned)?;
    let mut st = v.index().lock().map_err(poisoned)?;
    let before = check_locked(s, v, Depth::Full, &st, true, Preload::none())?;
    if before.consistent {
        return Ok(before);
    }
    if !before.mirror_ok {
        reload_mirror(s, v)?;
    }
    // Writers may continue during the rebuild: new points land in the scanned tail.
    drop(writer);
    if v.metric().uses_graph() {
        crate::indexer::rebuild_with(s, v, &mut st, true)?;
    }
    s.stats.repairs.fetch_add(1, Ordering::Relaxed);
    drop(st);
    tracing::warn!(collection = %v.collection(), version = %v.record().name, findings = ?before.findings, "index repaired");
    let mut after = check(s, v, Depth::Full)?;
    after.repaired = true;
    after.before_repair = Some(Box::new(before));
    Ok(after)
}
