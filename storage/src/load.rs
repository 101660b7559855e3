//! Start-up: the catalog and every version read back from RocksDB, each index generation verified
//! and served from its recorded view, or rebuilt in the background.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rocksdb::{Direction, IteratorMode};

use crate::ann::HnswIndex;
use crate::codec::{self, CF_CATALOG, CF_META, CollectionRecord, VersionRecord};
use crate::engine::{CollectionState, Shared};
use crate::error::{Error, Result};
use crate::store::{PointRef, Store};
use crate::version::{Version, poisoned};

impl Shared {
    pub(crate) fn load_catalog(&self) -> Result<()> {
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
        let dir = &version.dir();

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
            let pref = PointRef::stored(id, &p);
            match slot_of.get(&id) {
                Some(&(slot, seq)) if seq == p.seq => store.fill(slot, rec.metric, pref),
                _ => {
                    store.append(rec.metric, pref);
                }
            }
            Ok(())
        })?;
        store.set_applied_seq(stored_seq);
        let live = store.live_count();
        *version.store().write().map_err(poisoned)? = store;
        // A generation serves once its view is installed; if that fails, it is not trusted and
        // the indexer rebuilds from the store.
        let graph = match graph {
            Some((manifest, _, gen_dir)) => {
                version
                    .indexed_upto()
                    .store(manifest.slot_count as usize, Ordering::SeqCst);
                match load_view(&version, &manifest, &gen_dir, &self.build_pools) {
                    Ok(ix) => Some((manifest, ix)),
                    Err(e) => {
                        tracing::warn!(version_id = rec.id, error = %e, "index graph failed to export; rebuilding from RocksDB");
                        self.stats.rebuilds_corrupt.fetch_add(1, Ordering::Relaxed);
                        version.indexed_upto().store(0, Ordering::SeqCst);
                        *version.view().write().map_err(poisoned)? = None;
                        None
                    }
                }
            }
            None => None,
        };
        if let Some((manifest, ix)) = graph {
            let mut st = version.index().lock().map_err(poisoned)?;
            st.generation = manifest.generation;
            match ix {
                // Loaded only because the generation's view had to be selected again.
                Some(ix) => {
                    *version.ann().write().map_err(poisoned)? = Some(ix);
                    st.mapped_generation = Some(manifest.generation);
                }
                None => version
                    .parked()
                    .store(manifest.generation, Ordering::SeqCst),
            }
            dir.remove_other_generations(&[manifest.generation]);
            self.stats.loads.fetch_add(1, Ordering::Relaxed);
            tracing::info!(collection, version = %rec.name, points = live, generation = manifest.generation,
                elapsed_ms = started.elapsed().as_millis() as u64, "loaded version with its index");
        } else {
            // Whatever generation exists is not trusted; the indexer writes a new one.
            let mut st = version.index().lock().map_err(poisoned)?;
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
                *version.view().write().map_err(poisoned)? = Some(Arc::new(view));
                return Ok(None);
            }
            Ok(_) => tracing::warn!(
                version_id = version.record().id,
                "recorded graph view disagrees with its generation; selecting it again"
            ),
            Err(e) => tracing::warn!(version_id = version.record().id, error = %e,
                "recorded graph view unusable; selecting it again"),
        }
    }
    let ix = crate::indexer::load_graph(manifest, gen_dir, pools.clone())?;
    crate::indexer::refresh_view(version, &ix, crate::graph_view::Refine::Polish)?;
    Ok(Some(Arc::new(ix)))
}
