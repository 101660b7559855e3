//! The write path (validate → one synced `WriteBatch` → apply to memory) and point reads by id.

use std::sync::atomic::Ordering;

use rocksdb::WriteBatch;

use crate::codec::{self, CF_META, CF_POINTS, StoredPoint};
use crate::distance::Metric;
use crate::engine::{Engine, PointInput, PointOutput, sync_write};
use crate::error::{Error, Result};
use crate::store::PointRef;
use crate::validate;
use crate::version::poisoned;

impl Engine {
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
        let _w = v.writer().lock().map_err(poisoned)?;
        if v.dropped().load(Ordering::SeqCst) {
            return Err(Error::NotFound {
                kind: "version",
                name: version.into(),
            });
        }
        let first = v.last_seq().load(Ordering::SeqCst) + 1;
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
                codec::point_key(v.record().id, p.id),
                codec::encode_point(&rec),
            );
        }
        let last = first + points.len() as u64 - 1;
        s.check_free_space(batch.size_in_bytes() as u64)?;
        commit_ops(s, &v, batch, last)?;
        {
            let mut store = v.store().write().map_err(poisoned)?;
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
        let _w = v.writer().lock().map_err(poisoned)?;
        let present: Vec<u64> = {
            let store = v.store().read().map_err(poisoned)?;
            let mut seen = std::collections::HashSet::new();
            ids.iter()
                .copied()
                .filter(|id| store.slot_of(*id).is_some() && seen.insert(*id))
                .collect()
        };
        if present.is_empty() {
            return Ok(0);
        }
        let first = v.last_seq().load(Ordering::SeqCst) + 1;
        let mut batch = WriteBatch::default();
        let points_cf = s.cf(CF_POINTS)?;
        for id in &present {
            batch.delete_cf(points_cf, codec::point_key(v.record().id, *id));
        }
        let last = first + present.len() as u64 - 1;
        commit_ops(s, &v, batch, last)?;
        let mut store = v.store().write().map_err(poisoned)?;
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
            .map(|id| (cf, codec::point_key(v.record().id, *id)))
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
}

/// Adds the version's op-sequence counter (`last`) to `batch`, writes it in one synced write and
/// publishes `last`. The caller holds the version's writer lock.
fn commit_ops(
    s: &crate::engine::Shared,
    v: &crate::version::Version,
    mut batch: WriteBatch,
    last: u64,
) -> Result<()> {
    batch.put_cf(
        s.cf(CF_META)?,
        codec::seq_key(v.record().id),
        last.to_le_bytes(),
    );
    s.db.write_opt(batch, &sync_write())?;
    v.last_seq().store(last, Ordering::SeqCst);
    Ok(())
}
