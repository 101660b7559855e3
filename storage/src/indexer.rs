//! The background indexer: one thread that moves each version's unindexed tail
//! into its HNSW graph in chunks, commits index generations, and rebuilds a
//! graph when too many of its points are dead. Searches never wait for it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::ann::{AnnIndex, HnswIndex};
use crate::engine::Shared;
use crate::error::Result;
use crate::generation::{FORMAT_VERSION, Manifest, SlotEntry};
use crate::graph_view::Refine;
use crate::version::{IndexState, Version, poisoned};

pub(crate) struct Indexer {
    handle: JoinHandle<()>,
}

impl Indexer {
    pub fn spawn(shared: Arc<Shared>) -> Indexer {
        let handle = std::thread::Builder::new()
            .name("ember-indexer".into())
            .spawn(move || run(&shared))
            .expect("spawn indexer thread");
        Indexer { handle }
    }

    pub fn join(self) {
        if self.handle.join().is_err() {
            tracing::error!("indexer thread panicked");
        }
    }
}

fn run(s: &Shared) {
    loop {
        let shutting_down = s.shutdown.load(Ordering::SeqCst);
        let mut busy = false;
        for v in s.versions() {
            if shutting_down {
                break;
            }
            match step(s, &v) {
                Ok(did) => busy |= did,
                Err(e) => {
                    tracing::error!(collection = %v.collection(), version = %v.record().name, error = %e, "indexer step failed")
                }
            }
        }
        if shutting_down {
            // Commit what the graphs hold so the next start loads instead of rebuilding.
            for v in s.versions() {
                if let Ok(mut st) = v.index().lock()
                    && st.unpersisted > 0
                    && let Err(e) = persist(s, &v, &mut st)
                {
                    tracing::error!(version = %v.record().name, error = %e, "commit at shutdown failed");
                }
            }
            return;
        }
        if !busy {
            let (m, c) = &s.wake;
            if let Ok(mut woken) = m.lock() {
                if !*woken {
                    woken = c
                        .wait_timeout(woken, Duration::from_millis(250))
                        .map_or_else(|e| e.into_inner().0, |r| r.0);
                }
                *woken = false;
            }
        }
    }
}

/// One unit of work on one version. Returns whether anything was done.
fn step(s: &Shared, v: &Arc<Version>) -> Result<bool> {
    if !v.metric().uses_graph() {
        return Ok(false);
    }
    let mut st = v.index().lock().map_err(poisoned)?;
    if v.dropped().load(Ordering::SeqCst) {
        return Ok(false);
    }
    let upto = v.indexed_upto().load(Ordering::SeqCst);
    let (len, chunk) = {
        let store = v.store().read().map_err(poisoned)?;
        let end = store.len().min(upto + s.config.index_chunk);
        // Copy out so searches and writers are not blocked while the graph grows.
        let chunk: Vec<(usize, Vec<f32>)> = (upto..end)
            .filter(|&slot| store.is_live(slot))
            .map(|slot| (slot, store.vector(slot).to_vec()))
            .collect();
        (store.len(), (chunk, end))
    };
    let (points, end) = chunk;
    if upto < len {
        let Some(ann) = resident_graph(s, v, &mut st, len)? else {
            // The parked generation did not load back: build afresh from the store.
            rebuild_with(s, v, &mut st, false)?;
            return Ok(true);
        };
        let refs: Vec<(usize, &[f32])> = points.iter().map(|(s, p)| (*s, p.as_slice())).collect();
        ann.set_background(inserts_may_yield(v, &mut st, len)?);
        ann.insert(&refs)?;
        // Insert first, then publish: a search that sees the new watermark sees the points.
        v.indexed_upto().store(end, Ordering::SeqCst);
        let covered = v
            .view()
            .read()
            .map_err(poisoned)?
            .as_ref()
            .map_or(0, |g| g.covers);
        // Re-export while bulk loading once the view lags by 10% (the lag is scanned exactly).
        if end == len {
            // Caught up: the view that will serve from now on is polished.
            refresh_view(v, &ann, Refine::Polish)?;
            st.behind_since = None;
        } else if end - covered >= (covered / 10).max(4 * s.config.index_chunk) {
            refresh_view(v, &ann, Refine::Quick)?;
        }
        st.unpersisted += end - upto;
        st.last_change = Some(Instant::now());
        if st.unpersisted >= s.config.persist_every {
            persist(s, v, &mut st)?;
        }
        return Ok(true);
    }
    if needs_rebuild(s, v)? {
        rebuild(s, v, &mut st)?;
        return Ok(true);
    }
    if let Some(ann) = v.ann().read().map_err(poisoned)?.clone() {
        // Caught up: the view covers every indexed slot, polished.
        let (covered, polished) = v
            .view()
            .read()
            .map_err(poisoned)?
            .as_ref()
            .map_or((0, false), |g| (g.covers, g.refine == Refine::Polish));
        if covered < upto || !polished {
            refresh_view(v, &ann, Refine::Polish)?;
            return Ok(true);
        }
    }
    let idle = st
        .last_change
        .is_some_and(|t| t.elapsed() >= s.config.persist_idle);
    if st.unpersisted > 0 && idle {
        persist(s, v, &mut st)?;
        return Ok(true);
    }
    if may_park(s, v, &st)? {
        park(s, v, &mut st)?;
        return Ok(true);
    }
    Ok(false)
}

/// Whether the resident hnsw_rs graph is committed as it is, the view serves all of it, and no
/// insert came for `graph_park_after`.
fn may_park(s: &Shared, v: &Version, st: &IndexState) -> Result<bool> {
    let Some(after) = s.config.graph_park_after else {
        return Ok(false);
    };
    if st.unpersisted > 0
        || st.generation == 0
        || st.last_change.is_some_and(|t| t.elapsed() < after)
    {
        return Ok(false);
    }
    let Some(ann) = v.ann().read().map_err(poisoned)?.clone() else {
        return Ok(false);
    };
    let upto = v.indexed_upto().load(Ordering::SeqCst);
    let caught_up = upto == v.store().read().map_err(poisoned)?.len();
    let served = v
        .view()
        .read()
        .map_err(poisoned)?
        .as_ref()
        .is_some_and(|g| g.is_final_for(&ann, upto));
    Ok(caught_up && served)
}

/// Drops hnsw_rs's resident graph (an `Arc` per point and per edge, and a copy of every vector):
/// searches walk the view over the store's vectors, and the committed generation holds the graph
/// for the next insert.
fn park(s: &Shared, v: &Version, st: &mut IndexState) -> Result<()> {
    v.parked().store(st.generation, Ordering::SeqCst);
    *v.ann().write().map_err(poisoned)? = None;
    st.mapped_generation = None;
    crate::os::release_free_memory();
    s.stats.graphs_parked.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(collection = %v.collection(), version = %v.record().name, generation = st.generation,
        "graph parked: served from its view, reloaded for the next insert");
    Ok(())
}

/// hnsw_rs's graph of a committed generation whose files were verified, checked against the
/// manifest's point count.
pub(crate) fn load_graph(
    manifest: &crate::generation::Manifest,
    gen_dir: &std::path::Path,
    pools: Arc<crate::ann::BuildPools>,
) -> Result<HnswIndex> {
    let ix = HnswIndex::load(gen_dir, &manifest.basename, pools)?;
    if ix.len() as u64 != manifest.graph_points {
        return Err(crate::error::Error::DataCorruption(format!(
            "generation {} holds {} graph points, its manifest {}",
            manifest.generation,
            ix.len(),
            manifest.graph_points
        )));
    }
    Ok(ix)
}

/// The parked generation's manifest and directory, verified, or why they cannot serve.
pub(crate) fn parked_generation(
    v: &Version,
    generation: u64,
) -> Result<(crate::generation::Manifest, std::path::PathBuf)> {
    match v.dir().open_verified()? {
        Some((m, dir, _)) if m.generation == generation => Ok((m, dir)),
        Some((m, _, _)) => Err(crate::error::Error::Internal(format!(
            "parked generation {generation}, committed {}",
            m.generation
        ))),
        None => Err(crate::error::Error::DataCorruption(format!(
            "parked generation {generation} is gone"
        ))),
    }
}

/// Loads the parked generation's graph back and ties the serving view to it.
fn unpark(s: &Shared, v: &Version, generation: u64) -> Result<Arc<HnswIndex>> {
    let started = Instant::now();
    let (manifest, gen_dir) = parked_generation(v, generation)?;
    let ix = load_graph(&manifest, &gen_dir, s.build_pools.clone())?;
    match v.view().read().map_err(poisoned)?.as_ref() {
        Some(g) if g.covers as u64 == manifest.slot_count => g.adopt(&ix),
        _ => {
            return Err(crate::error::Error::Internal(
                "the serving view is not the parked generation's".into(),
            ));
        }
    }
    s.stats.graphs_reloaded.fetch_add(1, Ordering::Relaxed);
    tracing::info!(collection = %v.collection(), version = %v.record().name, generation,
        elapsed_ms = started.elapsed().as_millis() as u64, "parked graph reloaded for inserts");
    Ok(Arc::new(ix))
}

/// Re-exports the graph into the version's searchable view, covering every
/// slot below the current watermark.
pub(crate) fn refresh_view(v: &Version, ann: &HnswIndex, mode: Refine) -> Result<()> {
    let covers = v.indexed_upto().load(Ordering::SeqCst);
    let started = Instant::now();
    let prev = v.view().read().map_err(poisoned)?.clone();
    // All of the export runs on the graph's pool (its serial parts too, so they yield with
    // the rest when the graph is in the background); the swap below is the indexer thread's.
    let view = ann.pool().install(|| {
        crate::graph_view::GraphView::export(
            ann,
            covers,
            v.record().m as usize,
            v.record().ef_construction as usize,
            mode,
            prev.as_deref(),
        )
    })?;
    let (links, refined) = (view.link_stats, view.refined);
    *v.view().write().map_err(poisoned)? = Some(Arc::new(view));
    tracing::debug!(version = %v.record().name, covers, refined, orphans_linked = links.orphans,
        over_budget = links.over_budget, elapsed_ms = started.elapsed().as_millis() as u64, "graph view refreshed");
    Ok(())
}

/// The graph to insert into: the resident one, the parked generation's loaded back, or a new one.
/// `None` when the parked generation failed to load (counted and logged; the caller rebuilds).
fn resident_graph(
    s: &Shared,
    v: &Version,
    st: &mut IndexState,
    capacity: usize,
) -> Result<Option<Arc<HnswIndex>>> {
    if let Some(a) = v.ann().read().map_err(poisoned)?.as_ref() {
        return Ok(Some(a.clone()));
    }
    let parked = v.parked().load(Ordering::SeqCst);
    if parked != 0 {
        v.parked().store(0, Ordering::SeqCst);
        return match unpark(s, v, parked) {
            Ok(a) => {
                *v.ann().write().map_err(poisoned)? = Some(a.clone());
                st.mapped_generation = Some(parked);
                Ok(Some(a))
            }
            Err(e) => {
                tracing::warn!(collection = %v.collection(), version = %v.record().name, generation = parked,
                    error = %e, "parked graph failed to load; rebuilding from RocksDB");
                s.stats.rebuilds_corrupt.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
        };
    }
    let mut ann = v.ann().write().map_err(poisoned)?;
    let a = Arc::new(HnswIndex::new(
        v.record().m as usize,
        v.record().ef_construction as usize,
        capacity,
        s.build_pools.clone(),
    ));
    *ann = Some(a.clone());
    Ok(Some(a))
}

/// How long inserts may wait on the background pool before they move to the normal one.
pub(crate) const BACKGROUND_PATIENCE: Duration = Duration::from_secs(5);

/// Whether graph work on `v` may run on the background pool: a view serves, and the slots it
/// does not cover (of `len`, which every search scans exactly) are few enough for a search to
/// scan inline. Past that, searches pay for every slot the graph lacks, so the work that closes
/// the gap runs at normal priority.
fn view_serves(v: &Version, len: usize) -> Result<bool> {
    Ok(v.view()
        .read()
        .map_err(poisoned)?
        .as_ref()
        .is_some_and(|g| len.saturating_sub(g.covers) <= crate::engine::INLINE_SCAN_SLOTS))
}

/// [`view_serves`], for inserts: and they have not been pending for `BACKGROUND_PATIENCE` (a
/// machine saturated by requests would otherwise keep fresh points out of the graph for good).
fn inserts_may_yield(v: &Version, st: &mut IndexState, len: usize) -> Result<bool> {
    let since = *st.behind_since.get_or_insert_with(Instant::now);
    Ok(view_serves(v, len)? && since.elapsed() < BACKGROUND_PATIENCE)
}

/// [`view_serves`], for a compacting rebuild: and the dead slots are not yet twice the share
/// that starts one. The old graph serves meanwhile (dead nodes are skipped), so the rebuild
/// waits for idle cores until the dead slots cost searches and memory twice what was planned.
fn rebuild_may_yield(s: &Shared, v: &Version, len: usize, dead: usize) -> Result<bool> {
    Ok(view_serves(v, len)? && (dead as f64) <= 2.0 * s.config.rebuild_dead_fraction * len as f64)
}

fn needs_rebuild(s: &Shared, v: &Version) -> Result<bool> {
    // A parked graph holds exactly the nodes its view does.
    let in_graph = match v.ann().read().map_err(poisoned)?.as_ref() {
        Some(ann) => ann.len(),
        None if v.parked().load(Ordering::SeqCst) != 0 => v
            .view()
            .read()
            .map_err(poisoned)?
            .as_ref()
            .map_or(0, |g| g.nodes()),
        None => return Ok(false),
    };
    if in_graph < 1000 {
        return Ok(false);
    }
    let upto = v.indexed_upto().load(Ordering::SeqCst);
    let store = v.store().read().map_err(poisoned)?;
    let live_in_graph = store.live()[..upto.min(store.len())]
        .iter()
        .filter(|&&l| l)
        .count();
    let dead = in_graph.saturating_sub(live_in_graph);
    Ok(dead as f64 > s.config.rebuild_dead_fraction * in_graph as f64)
}

/// Builds a fresh graph over the live slots below the current length, then swaps it
/// in with the slot space compacted: dead slots are dropped and the rest renumbered.
/// Writers and searches continue meanwhile; slots appended during the build stay in
/// the tail.
pub(crate) fn rebuild(s: &Shared, v: &Version, st: &mut IndexState) -> Result<()> {
    rebuild_with(s, v, st, false)?;
    s.stats.rebuilds_dead.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// [`rebuild`], optionally inserting serially (repair: no unreachable points).
pub(crate) fn rebuild_with(
    s: &Shared,
    v: &Version,
    st: &mut IndexState,
    serial: bool,
) -> Result<()> {
    let started = Instant::now();
    let end = v.store().read().map_err(poisoned)?.len();
    let fresh = Arc::new(HnswIndex::new(
        v.record().m as usize,
        v.record().ef_construction as usize,
        end,
        s.build_pools.clone(),
    ));
    // The graph is built on the compacted numbering: the i-th kept slot becomes slot i.
    let mut kept: Vec<usize> = Vec::new();
    let mut from = 0;
    while from < end {
        if v.dropped().load(Ordering::SeqCst) || s.shutdown.load(Ordering::SeqCst) {
            return Ok(());
        }
        let to = (from + s.config.index_chunk).min(end);
        let (points, len, dead): (Vec<(usize, Vec<f32>)>, usize, usize) = {
            let store = v.store().read().map_err(poisoned)?;
            let points = (from..to)
                .filter(|&slot| store.is_live(slot))
                .map(|slot| {
                    kept.push(slot);
                    (kept.len() - 1, store.vector(slot).to_vec())
                })
                .collect();
            (points, store.len(), store.len() - store.live_count())
        };
        // The old view serves meanwhile: the rebuild yields to searches while what that view
        // misses stays small (a repair the caller waits for does not).
        fresh.set_background(!serial && rebuild_may_yield(s, v, len, dead)?);
        let refs: Vec<(usize, &[f32])> = points.iter().map(|(s, p)| (*s, p.as_slice())).collect();
        if serial {
            fresh.insert_serial(&refs)?;
        } else {
            fresh.insert(&refs)?;
        }
        from = to;
    }
    let covers = kept.len();
    let view = crate::graph_view::GraphView::export(
        &fresh,
        covers,
        v.record().m as usize,
        v.record().ef_construction as usize,
        Refine::Polish,
        None,
    )?;
    // Copy in short read-lock holds (a slot's contents never change while the index lock we
    // hold keeps the layout; a writer queued behind one long hold would stall every search
    // behind it), then catch up and swap under the write lock: store, graph and watermark
    // change together, and searches read all three under the read lock.
    let (mut compacted, copied) = {
        let per_hold = crate::store::slots_per_hold(v.dim());
        let mut out = v.store().read().map_err(poisoned)?.empty_copy(kept.len());
        for olds in kept.chunks(per_hold) {
            let store = v.store().read().map_err(poisoned)?;
            store.copy_slots(&mut out, olds.iter().copied());
        }
        let mut next = end;
        loop {
            let store = v.store().read().map_err(poisoned)?;
            let stop = store.len().min(next + per_hold);
            store.copy_slots(&mut out, next..stop);
            next = stop;
            if next == store.len() {
                break (out, next);
            }
        }
    };
    {
        let mut store = v.store().write().map_err(poisoned)?;
        store.catch_up(&mut compacted, &kept, end, copied);
        *store = compacted;
        *v.view().write().map_err(poisoned)? = Some(Arc::new(view));
        *v.ann().write().map_err(poisoned)? = Some(fresh);
        v.parked().store(0, Ordering::SeqCst);
        v.indexed_upto().store(covers, Ordering::SeqCst);
    }
    st.mapped_generation = None;
    st.unpersisted = covers.max(1);
    tracing::info!(collection = %v.collection(), version = %v.record().name, slots_before = end,
        slots = covers, elapsed_ms = started.elapsed().as_millis() as u64, "index rebuilt");
    persist(s, v, st)?;
    Ok(())
}

/// Commits the current graph as a new generation. Returns false when there is
/// nothing to commit (no graph, or an empty one: hnsw_rs cannot reload those).
pub(crate) fn persist(s: &Shared, v: &Version, st: &mut IndexState) -> Result<bool> {
    if v.dropped().load(Ordering::SeqCst) {
        return Ok(false);
    }
    let Some(ann) = v.ann().read().map_err(poisoned)?.clone() else {
        return Ok(false);
    };
    if ann.is_empty() {
        return Ok(false);
    }
    let started = Instant::now();
    let upto = v.indexed_upto().load(Ordering::SeqCst);
    let (slots, applied_seq) = {
        let store = v.store().read().map_err(poisoned)?;
        let slots: Vec<SlotEntry> = (0..upto)
            .map(|i| SlotEntry {
                id: store.id(i),
                seq: store.seq(i),
            })
            .collect();
        (slots, store.applied_seq())
    };
    // The generation carries the searchable layer 0 too, so a reload need not select it again.
    let current = |v: &Version| -> Result<Option<Arc<crate::graph_view::GraphView>>> {
        Ok(v.view()
            .read()
            .map_err(poisoned)?
            .clone()
            .filter(|g| g.is_final_for(&ann, upto)))
    };
    let view = match current(v)? {
        Some(g) => g,
        None => {
            refresh_view(v, &ann, Refine::Polish)?;
            current(v)?.ok_or_else(|| {
                crate::error::Error::Internal("graph view does not cover the watermark".into())
            })?
        }
    };
    // A generation about as large as the vectors and links it covers must not eat the free-space
    // reserve that keeps RocksDB writing: refused here, the commit is retried later.
    s.check_free_space(upto as u64 * (v.dim() as u64 * 4 + 256))?;
    let generation = st.generation + 1;
    let dir = v.dir().create_gen_dir(generation)?;
    let basename = ann.dump(&dir)?;
    crate::generation::write_file(
        &dir.join(crate::generation::LINKS_FILE),
        &crate::generation::encode_links(&view.links()),
    )?;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        generation,
        basename,
        files: Vec::new(),
        applied_seq,
        slot_count: upto as u64,
        graph_points: ann.len() as u64,
        dim: v.record().dim,
        metric: v.metric().name().into(),
        m: v.record().m,
        ef_construction: v.record().ef_construction,
        hnsw_rs_version: "0.3.5".into(),
    };
    v.dir().commit(&dir, &slots, manifest)?;
    st.generation = generation;
    st.unpersisted = 0;
    let mut keep = vec![generation];
    keep.extend(st.mapped_generation);
    v.dir().remove_other_generations(&keep);
    s.stats
        .generations_committed
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!(collection = %v.collection(), version = %v.record().name, generation, slots = upto,
        elapsed_ms = started.elapsed().as_millis() as u64, "index generation committed");
    Ok(true)
}
