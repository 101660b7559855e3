//! Monitor specs: durable records keyed by (collection, version or alias), in `CF_META` under
//! `monitor/<collection>\0<version>`. Storage keeps them, lists them and deletes them with their
//! version or collection in the same write batch; what a spec says and how it runs belongs to
//! the analysis crate, so a body is any serde type (stored as JSON).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::CF_META;
use crate::engine::{Engine, Shared, sync_write};
use crate::error::{Error, Result};
use crate::version::poisoned;

/// (collection, version or alias)
pub type SpecKey = (String, String);

/// The specs in memory (their JSON bodies) and a counter that moves on every change.
pub(crate) struct SpecStore {
    bodies: Mutex<BTreeMap<SpecKey, Vec<u8>>>,
    epoch: AtomicU64,
}

const PREFIX: &[u8] = b"monitor/";

pub(crate) fn key(collection: &str, version: &str) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(collection.as_bytes());
    k.push(0);
    k.extend_from_slice(version.as_bytes());
    k
}

impl SpecStore {
    /// Reads every record (at open).
    pub(crate) fn load(db: &rocksdb::DB, cf: &rocksdb::ColumnFamily) -> Result<SpecStore> {
        let mut bodies = BTreeMap::new();
        for item in db.iterator_cf(
            cf,
            rocksdb::IteratorMode::From(PREFIX, rocksdb::Direction::Forward),
        ) {
            let (k, v) = item?;
            let Some(rest) = k.strip_prefix(PREFIX) else {
                break;
            };
            let split = rest.iter().position(|&b| b == 0).ok_or_else(|| {
                Error::DataCorruption(format!(
                    "monitor record key {:?}",
                    String::from_utf8_lossy(&k)
                ))
            })?;
            let text = |b: &[u8]| {
                String::from_utf8(b.to_vec())
                    .map_err(|_| Error::DataCorruption("monitor record key is not UTF-8".into()))
            };
            bodies.insert(
                (text(&rest[..split])?, text(&rest[split + 1..])?),
                v.to_vec(),
            );
        }
        Ok(SpecStore {
            bodies: Mutex::new(bodies),
            epoch: AtomicU64::new(1),
        })
    }

    /// Keys of the specs on `collection` (and `version`, when given).
    pub(crate) fn keys_of(&self, collection: &str, version: Option<&str>) -> Result<Vec<SpecKey>> {
        Ok(self
            .bodies
            .lock()
            .map_err(poisoned)?
            .keys()
            .filter(|(c, v)| c == collection && version.is_none_or(|want| v == want))
            .cloned()
            .collect())
    }

    /// Forgets specs whose records the caller deleted.
    pub(crate) fn forget(&self, keys: &[SpecKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut b = self.bodies.lock().map_err(poisoned)?;
        for k in keys {
            b.remove(k);
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl Engine {
    /// Stores the spec of (collection, version or alias) durably; returns whether one was
    /// replaced. NOT_FOUND unless the collection holds that name (checked under the catalog
    /// writer, so a spec never outlives a version dropped at the same time).
    pub fn put_monitor_spec<T: Serialize>(
        &self,
        collection: &str,
        version: &str,
        spec: &T,
    ) -> Result<bool> {
        let s: &Shared = self.shared();
        let body = serde_json::to_vec(spec).map_err(|e| Error::Internal(e.to_string()))?;
        let _w = s.catalog_writer.lock().map_err(poisoned)?;
        let known = s
            .catalog
            .read()
            .map_err(poisoned)?
            .get(collection)
            .map(|c| c.versions.contains_key(version) || c.record.aliases.contains_key(version));
        match known {
            None => {
                return Err(Error::NotFound {
                    kind: "collection",
                    name: collection.into(),
                });
            }
            Some(false) => {
                return Err(Error::NotFound {
                    kind: "version",
                    name: version.into(),
                });
            }
            Some(true) => {}
        }
        let mut bodies = s.specs.bodies.lock().map_err(poisoned)?;
        s.db.put_cf_opt(
            s.cf(CF_META)?,
            key(collection, version),
            &body,
            &sync_write(),
        )?;
        let replaced = bodies
            .insert((collection.into(), version.into()), body)
            .is_some();
        s.specs.epoch.fetch_add(1, Ordering::SeqCst);
        Ok(replaced)
    }

    /// Deletes the spec of (collection, version or alias); returns whether there was one.
    pub fn delete_monitor_spec(&self, collection: &str, version: &str) -> Result<bool> {
        let s = self.shared();
        let mut bodies = s.specs.bodies.lock().map_err(poisoned)?;
        let k = (collection.to_string(), version.to_string());
        if !bodies.contains_key(&k) {
            return Ok(false);
        }
        s.db.delete_cf_opt(s.cf(CF_META)?, key(collection, version), &sync_write())?;
        bodies.remove(&k);
        s.specs.epoch.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }

    /// Every stored spec, ordered by (collection, version). A body that does not parse as `T`
    /// is DATA_CORRUPTION naming its key.
    pub fn monitor_specs<T: DeserializeOwned>(&self) -> Result<Vec<(SpecKey, T)>> {
        let bodies = self.shared().specs.bodies.lock().map_err(poisoned)?;
        bodies
            .iter()
            .map(|(k, b)| {
                let spec = serde_json::from_slice(b).map_err(|e| {
                    Error::DataCorruption(format!("monitor record {}/{}: {e}", k.0, k.1))
                })?;
                Ok((k.clone(), spec))
            })
            .collect()
    }

    /// Moves on every change to the stored specs (put, delete, a drop that removed some): a
    /// caller that keeps state per spec re-reads them when it moved.
    pub fn monitor_specs_epoch(&self) -> u64 {
        self.shared().specs.epoch.load(Ordering::SeqCst)
    }
}
