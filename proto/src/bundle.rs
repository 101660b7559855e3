//! The incident bundle format (`Operations.ExportBundle`, `ember bundle`): one `.tar.gz` holding
//! `manifest.json` first, then `README.md`, `drift.json`, `eval.json`, `monitors.json` and, when
//! the points are included, `points/{baseline,current}/vectors.npy` (float32, one row per point)
//! beside `points.jsonl` (the same rows' id, label, timestamp and metadata). The server writes
//! bundles; `ember bundle replay` reads them. Reports are the RPCs' own messages as JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of this layout; a reader refuses a newer one.
pub const FORMAT: u32 = 1;
pub const KIND: &str = "emberdb-incident-bundle";
pub const MANIFEST: &str = "manifest.json";
pub const README: &str = "README.md";
pub const DRIFT: &str = "drift.json";
pub const EVAL: &str = "eval.json";
pub const MONITORS: &str = "monitors.json";
pub const SIDES: [&str; 2] = ["baseline", "current"];

pub fn vectors_path(side: &str) -> String {
    format!("points/{side}/vectors.npy")
}

pub fn points_path(side: &str) -> String {
    format!("points/{side}/points.jsonl")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub kind: String,
    pub format: u32,
    pub created_ms: i64,
    /// Why the bundle was written: "ExportBundle", or the monitor and the score that crossed.
    pub reason: String,
    pub server: ServerRecord,
    pub collection: String,
    pub baseline: WindowRecord,
    pub current: WindowRecord,
    /// Seed of the window samples.
    pub sample_seed: u64,
    pub max_points: u32,
    /// Examples the reports keep (Confusion top_pairs, Margin lowest_n).
    pub k: u32,
    pub drift_request: DriftParams,
    pub contents: Contents,
    /// Every other file of the bundle, with its size and SHA-256.
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerRecord {
    pub version: String,
    /// The `[eval]` settings every figure was computed with (a replay server runs with them).
    pub eval: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowRecord {
    /// The version (or alias) the request named, and the time range.
    pub version: String,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub record: VersionRecord,
    /// Op sequence of the snapshot the window's ids were read at.
    pub op_sequence: u64,
    /// Points in the window then, and in the bundle (a seeded sample when fewer).
    pub window_points: u64,
    pub bundled_points: u64,
    pub sampled: bool,
}

/// A version as its catalog record describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: String,
    pub dim: u32,
    /// "l2", "cosine" or "dot".
    pub metric: String,
    pub m: u32,
    pub ef_construction: u32,
    pub point_count: u64,
    pub indexed_count: u64,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DriftParams {
    pub threshold: Option<f64>,
    pub calibrate: bool,
    pub sample_size: Option<u32>,
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Contents {
    pub points: bool,
    pub eval: bool,
    /// Why eval.json holds no reports, when it does not.
    pub eval_skipped: Option<String>,
    pub monitors: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// One line of `points.jsonl`; row `i` of `vectors.npy` is its vector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointLine {
    pub id: u64,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub timestamp_ms: i64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// `eval.json`: the Confusion and Margin reports of the current window (exact leave-one-out).
#[derive(Debug, Clone, Serialize)]
pub struct EvalFile {
    pub confusion: Option<crate::v1::ConfusionReport>,
    pub margin: Option<crate::v1::MarginReport>,
    pub skipped: Option<String>,
}

/// The bytes of a 2-D little-endian float32 `.npy` (C order).
pub fn npy_f32_bytes(rows: usize, cols: usize, data: &[f32]) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for x in data {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
