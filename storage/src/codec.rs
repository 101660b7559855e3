//! RocksDB key layout and the binary point record.
//!
//! Column families:
//! - `catalog`: `coll/<name>` → [`CollectionRecord`] (JSON), `next_id` → u64 LE.
//! - `points`: `<version id u64 BE><point id u64 BE>` → point record (below).
//! - `meta`: `seq/<version id u64 BE>` → u64 LE, the version's last op sequence,
//!   written in the same `WriteBatch` as every op so it is exactly as durable.
//!
//! Point record, format 1 (all little-endian):
//! `[format u8][seq u64][timestamp_ms i64][dim u32][f32 × dim][label_len u16][label]`
//! `[n_meta u16]([key_len u16][key][val_len u16][val])*`

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::distance::Metric;
use crate::error::{Error, Result};

pub const CF_CATALOG: &str = "catalog";
pub const CF_POINTS: &str = "points";
pub const CF_META: &str = "meta";

const RECORD_FORMAT: u8 = 1;

/// A collection as persisted in the catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollectionRecord {
    pub name: String,
    pub created_ms: i64,
    /// Version name → version record.
    pub versions: BTreeMap<String, VersionRecord>,
    /// Alias → version name.
    pub aliases: BTreeMap<String, String>,
}

/// A version as persisted in the catalog. Its numeric `id` names its RocksDB
/// key range and its index directory, so user names never reach a path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionRecord {
    pub id: u64,
    pub name: String,
    pub dim: u32,
    pub metric: Metric,
    pub m: u32,
    pub ef_construction: u32,
    pub created_ms: i64,
}

pub fn collection_key(name: &str) -> Vec<u8> {
    let mut k = b"coll/".to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

pub const NEXT_ID_KEY: &[u8] = b"next_id";

pub fn seq_key(version_id: u64) -> Vec<u8> {
    let mut k = b"seq/".to_vec();
    k.extend_from_slice(&version_id.to_be_bytes());
    k
}

pub fn point_key(version_id: u64, id: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&version_id.to_be_bytes());
    k[8..].copy_from_slice(&id.to_be_bytes());
    k
}

/// A catalog value (`coll/<name>`), as RocksDB returns it.
pub fn decode_collection_record(bytes: &[u8]) -> Result<CollectionRecord> {
    serde_json::from_slice(bytes).map_err(|e| Error::DataCorruption(format!("catalog record: {e}")))
}

pub fn point_id_from_key(key: &[u8]) -> Result<u64> {
    let b: [u8; 8] = key
        .get(8..16)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| Error::DataCorruption(format!("point key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(b))
}

/// A decoded point.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPoint {
    pub id: u64,
    pub seq: u64,
    pub timestamp_ms: i64,
    pub vector: Vec<f32>,
    pub label: String,
    pub metadata: BTreeMap<String, String>,
}

pub fn encode_point(p: &StoredPoint) -> Vec<u8> {
    let meta_len: usize = p.metadata.iter().map(|(k, v)| 4 + k.len() + v.len()).sum();
    let mut out =
        Vec::with_capacity(1 + 8 + 8 + 4 + p.vector.len() * 4 + 2 + p.label.len() + 2 + meta_len);
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&p.seq.to_le_bytes());
    out.extend_from_slice(&p.timestamp_ms.to_le_bytes());
    out.extend_from_slice(&(p.vector.len() as u32).to_le_bytes());
    for x in &p.vector {
        out.extend_from_slice(&x.to_le_bytes());
    }
    // Lengths were validated (labels ≤ 256 B, keys/values ≤ 1 KiB, ≤ 64 entries).
    out.extend_from_slice(&(p.label.len() as u16).to_le_bytes());
    out.extend_from_slice(p.label.as_bytes());
    out.extend_from_slice(&(p.metadata.len() as u16).to_le_bytes());
    for (k, v) in &p.metadata {
        out.extend_from_slice(&(k.len() as u16).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::DataCorruption("point record truncated".into()));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("length checked by take"))
    }
    fn string(&mut self) -> Result<String> {
        let n = u16::from_le_bytes(self.array()?) as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| Error::DataCorruption("point record string is not UTF-8".into()))
    }
}

pub fn decode_point(id: u64, bytes: &[u8]) -> Result<StoredPoint> {
    let mut r = Reader { buf: bytes };
    let [format] = r.array::<1>()?;
    if format != RECORD_FORMAT {
        return Err(Error::DataCorruption(format!(
            "point record format {format}"
        )));
    }
    let seq = u64::from_le_bytes(r.array()?);
    let timestamp_ms = i64::from_le_bytes(r.array()?);
    let dim = u32::from_le_bytes(r.array()?) as usize;
    let raw = r.take(
        dim.checked_mul(4)
            .ok_or_else(|| Error::DataCorruption("dim".into()))?,
    )?;
    let vector = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("chunks of 4")))
        .collect();
    let label = r.string()?;
    let n_meta = u16::from_le_bytes(r.array()?) as usize;
    let mut metadata = BTreeMap::new();
    for _ in 0..n_meta {
        let k = r.string()?;
        let v = r.string()?;
        metadata.insert(k, v);
    }
    if !r.buf.is_empty() {
        return Err(Error::DataCorruption(
            "trailing bytes in point record".into(),
        ));
    }
    Ok(StoredPoint {
        id,
        seq,
        timestamp_ms,
        vector,
        label,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_round_trip() -> Result<()> {
        let p = StoredPoint {
            id: 7,
            seq: 42,
            timestamp_ms: -5,
            vector: vec![1.5, -0.0, f32::MIN_POSITIVE],
            label: "cat".into(),
            metadata: [("k".to_string(), "v".to_string())].into(),
        };
        let bytes = encode_point(&p);
        let back = decode_point(7, &bytes)?;
        assert_eq!(back, p);
        assert_eq!(back.vector[1].to_bits(), (-0.0f32).to_bits());
        // Truncation at every position is an error, never a panic.
        for cut in 0..bytes.len() {
            assert!(decode_point(7, &bytes[..cut]).is_err());
        }
        Ok(())
    }

    #[test]
    fn keys_sort_by_version_then_id() {
        assert!(point_key(1, u64::MAX) < point_key(2, 0));
        assert!(point_key(1, 255) < point_key(1, 256));
        assert_eq!(point_id_from_key(&point_key(3, 99)).unwrap(), 99);
    }
}
