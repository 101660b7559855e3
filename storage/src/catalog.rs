//! The catalog: collections, versions and aliases (create, describe, resolve, drop, alias swaps),
//! each change one RocksDB write under `Shared::catalog_writer`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rocksdb::WriteBatch;

use crate::codec::{
    self, CF_CATALOG, CF_META, CF_POINTS, CollectionRecord, NEXT_ID_KEY, VersionRecord,
};
use crate::engine::{
    CollectionInfo, CollectionState, Engine, IndexStatus, Shared, VersionInfo, VersionSpec, now_ms,
    sync_write,
};
use crate::error::{Error, Result};
use crate::generation::IndexDir;
use crate::store::Store;
use crate::validate;
use crate::version::{Version, poisoned};

impl Engine {
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
        v.dir().remove_all();
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
                versions.sort_by(|a, b| a.record().name.cmp(&b.record().name));
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

    /// Whether `name` is a version of `collection` (not an alias). NOT_FOUND without the collection.
    pub fn is_version_name(&self, collection: &str, name: &str) -> Result<bool> {
        let cat = self.shared.catalog.read().map_err(poisoned)?;
        cat.get(collection)
            .map(|c| c.versions.contains_key(name))
            .ok_or_else(|| Error::NotFound {
                kind: "collection",
                name: collection.into(),
            })
    }

    pub fn drop_version(&self, collection: &str, version: &str) -> Result<()> {
        validate::name("collection", collection)?;
        validate::name("version", version)?;
        let s = &self.shared;
        let _w = s.catalog_writer.lock().map_err(poisoned)?;
        let mut record = s.record_with_version(collection, version)?;
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
        let monitors = s.specs.keys_of(collection, Some(version))?;
        for (c, v) in &monitors {
            batch.delete_cf(s.cf(CF_META)?, crate::specs::key(c, v));
        }
        s.db.write_opt(batch, &sync_write())?;
        s.specs.forget(&monitors)?;
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
        let monitors = s.specs.keys_of(collection, None)?;
        for (c, v) in &monitors {
            batch.delete_cf(s.cf(CF_META)?, crate::specs::key(c, v));
        }
        s.db.write_opt(batch, &sync_write())?;
        s.specs.forget(&monitors)?;
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
        let mut record = s.record_with_version(collection, version)?;
        if record.versions.contains_key(alias) {
            return Err(Error::invalid(
                "alias",
                format!("'{alias}' is already a version name"),
            ));
        }
        let previous = record.aliases.insert(alias.into(), version.into());
        s.commit_aliases(collection, record)?;
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
        s.commit_aliases(collection, record)
    }
}

fn info_of(v: &Version) -> Result<VersionInfo> {
    let (point_count, indexed_count) = v.counts()?;
    Ok(VersionInfo {
        collection: v.collection().to_string(),
        version: v.record().name.clone(),
        dim: v.record().dim,
        metric: v.record().metric,
        point_count,
        indexed_count,
        status: if point_count == indexed_count {
            IndexStatus::Ready
        } else {
            IndexStatus::Indexing
        },
        m: v.record().m,
        ef_construction: v.record().ef_construction,
        created_ms: v.record().created_ms,
    })
}

impl Shared {
    /// The collection's record, NOT_FOUND unless it holds `version` (a version name, not an alias).
    fn record_with_version(&self, collection: &str, version: &str) -> Result<CollectionRecord> {
        let record = self.collection_record(collection)?;
        if !record.versions.contains_key(version) {
            return Err(Error::NotFound {
                kind: "version",
                name: version.into(),
            });
        }
        Ok(record)
    }

    /// Writes a collection record whose aliases changed, durably, then swaps it in: one pointer
    /// swap under the catalog lock, so readers see the old or the new target. The caller holds
    /// `catalog_writer`.
    fn commit_aliases(&self, collection: &str, record: CollectionRecord) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.put_collection(&mut batch, &record)?;
        self.db.write_opt(batch, &sync_write())?;
        match self.catalog.write().map_err(poisoned)?.get_mut(collection) {
            Some(c) => {
                c.record = record;
                Ok(())
            }
            None => Err(Error::Internal(format!(
                "collection '{collection}' left the catalog during an alias change"
            ))),
        }
    }

    /// A little-endian u64 stored under `key`, or `default` when absent.
    pub(crate) fn get_u64(&self, cf: &str, key: &[u8], default: u64) -> Result<u64> {
        read_u64(&self.db, cf, key, default)
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
    fn retire(&self, v: &Version) {
        v.dropped().store(true, Ordering::SeqCst);
        let _writer = v.writer().lock();
        let _index = v.index().lock();
        v.dir().remove_all();
    }

    pub(crate) fn new_version(
        &self,
        collection: &str,
        record: VersionRecord,
        store: Store,
        last_seq: u64,
    ) -> Version {
        Version::new(
            IndexDir::new(&self.index_root, record.id),
            record,
            collection,
            store,
            last_seq,
        )
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

/// A little-endian u64 stored under `key` in column family `cf` of `db` (the engine's, or a
/// snapshot's checkpoint), or `default` when absent.
pub(crate) fn read_u64(db: &rocksdb::DB, cf: &str, key: &[u8], default: u64) -> Result<u64> {
    let handle = db
        .cf_handle(cf)
        .ok_or_else(|| Error::Internal(format!("column family {cf} missing")))?;
    match db.get_cf(handle, key)? {
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
