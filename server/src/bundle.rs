//! Incident bundles as files (the format: `emberdb_proto::bundle`). The analysis service gathers
//! the points and figures (`emberdb_analysis::bundle`); this module renders them as the RPCs'
//! own reports in JSON, the points as `.npy` + JSON lines, a README and a manifest with a
//! SHA-256 per file, and packs one `.tar.gz`. [`FlightRecorder`] writes bundles for monitors
//! with `record_bundles` under `<data-dir>/bundles/`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use emberdb_analysis::Analysis;
use emberdb_analysis::bundle::{BundleData, BundleRequest, BundleWindow};
use emberdb_analysis::drift::{DriftRequest, WindowSpec};
use emberdb_analysis::monitor::{MonitorResult, MonitorSpec};
use emberdb_proto::bundle::{self as format, FileEntry, Manifest};
use emberdb_proto::v1 as pb;

use crate::grpc::convert::{confusion_report, drift_report, margin_report, status_pb};

/// What the bundle says about itself.
#[derive(Debug, Clone)]
pub struct Render {
    pub reason: String,
    pub include_points: bool,
}

/// The bundle's files, `manifest.json` first, each path with its bytes.
pub type Files = Vec<(String, Vec<u8>)>;

fn json(v: &impl serde::Serialize) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_else(|e| {
        // Only a non-string map key fails; none of ours has one.
        format!("{{\"error\": \"{e}\"}}").into_bytes()
    });
    out.push(b'\n');
    out
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn window_record(w: &BundleWindow) -> format::WindowRecord {
    let i = &w.info;
    format::WindowRecord {
        version: w.spec.version.clone(),
        from_ms: w.spec.from_ms,
        to_ms: w.spec.to_ms,
        record: format::VersionRecord {
            version: i.version.clone(),
            dim: i.dim,
            metric: i.metric.name().to_string(),
            m: i.m,
            ef_construction: i.ef_construction,
            point_count: i.point_count,
            indexed_count: i.indexed_count,
            created_ms: i.created_ms,
        },
        op_sequence: w.seq,
        window_points: w.window_points,
        bundled_points: w.points.len() as u64,
        sampled: w.sampled,
    }
}

/// `vectors.npy` and `points.jsonl` of one window.
fn points_files(side: &str, w: &BundleWindow) -> Files {
    let dim = w.info.dim as usize;
    let mut vectors = Vec::with_capacity(w.points.len() * dim);
    let mut lines = Vec::new();
    for p in &w.points {
        let at = vectors.len();
        vectors.extend_from_slice(p.vector.as_deref().unwrap_or(&[]));
        vectors.resize(at + dim, 0.0);
        let line = format::PointLine {
            id: p.id,
            label: p.label.clone(),
            timestamp_ms: p.timestamp_ms,
            metadata: p.metadata.clone(),
        };
        if serde_json::to_writer(&mut lines, &line).is_ok() {
            lines.push(b'\n');
        }
    }
    vec![
        (
            format::vectors_path(side),
            format::npy_f32_bytes(w.points.len(), dim, &vectors),
        ),
        (format::points_path(side), lines),
    ]
}

fn window_text(w: &format::WindowRecord) -> String {
    let range = match (w.from_ms, w.to_ms) {
        (None, None) => String::new(),
        (f, t) => format!(
            " @ {}..{}",
            f.map(|x| x.to_string()).unwrap_or_default(),
            t.map(|x| x.to_string()).unwrap_or_default()
        ),
    };
    let resolved = if w.version == w.record.version {
        String::new()
    } else {
        format!(" (= {})", w.record.version)
    };
    let sampled = if w.sampled {
        format!(", a seeded sample of the window's {}", w.window_points)
    } else {
        String::new()
    };
    format!(
        "`{}`{resolved}{range}: {} points{sampled}, op sequence {}",
        w.version, w.bundled_points, w.op_sequence
    )
}

fn readme(m: &Manifest, drift: &pb::DriftReport) -> Vec<u8> {
    let primary = drift
        .fingerprint
        .as_ref()
        .and_then(|f| pb::ShiftKind::try_from(f.primary).ok())
        .map_or("UNKNOWN", |k| k.as_str_name());
    let verdict = if drift.drifted {
        "drifted"
    } else {
        "did not drift"
    };
    let replay = if m.contents.points {
        "Replay it on any machine with the `ember` and `emberdb` binaries:\n\n    ember bundle replay THIS_FILE.tar.gz\n\n\
         It starts a throwaway server on a temporary data directory and a loopback port (with the\n\
         `[eval]` settings recorded in the manifest), imports both windows, runs Drift, Confusion and\n\
         Margin again and prints every recorded figure beside the replayed one. It exits 0 when they\n\
         agree (within 1e-9 relative) and non-zero otherwise, or when a file's checksum differs from\n\
         the manifest. `--server ADDR` replays on a running server instead (its `[eval]` settings must\n\
         match the recorded ones).\n"
            .to_string()
    } else {
        "This bundle was exported without its points: it records the figures but cannot be replayed.\n"
            .to_string()
    };
    format!(
        "# EmberDB incident bundle: collection `{c}`\n\n\
         {reason}.\n\n\
         The current window {verdict} from the baseline: drift score **{score:.4}** against a threshold\n\
         of {threshold:.4}; the shift looks like **{primary}** (MMD² {mmd:.6}, KS drifted share\n\
         {ks:.3}, centroid distance {cen:.4}).\n\n\
         - baseline: {b}\n\
         - current: {cur}\n\n\
         Every figure in `drift.json` and `eval.json` was computed from exactly the points in\n\
         `points/` (samples seeded with {seed}), so it can be reproduced.\n\n\
         ## Files\n\n\
         - `manifest.json`: server version and `[eval]` settings, the version records, the windows,\n\
           the op sequences, the drift parameters and the SHA-256 of every file;\n\
         - `drift.json`: the Drift report of the two windows;\n\
         - `eval.json`: Confusion and Margin of the current window (exact leave-one-out), when it\n\
           is labelled;\n\
         - `monitors.json`: the monitors of the current version, their state and last results;\n\
         - `points/{{baseline,current}}/vectors.npy` (float32, one row per point) and `points.jsonl`\n\
           (the same rows' id, label, timestamp_ms and metadata).\n\n\
         ## Replay\n\n{replay}",
        c = m.collection,
        reason = m.reason,
        score = drift.drift_score,
        threshold = drift.threshold,
        mmd = drift.mmd2,
        ks = drift.ks_drifted_share,
        cen = drift.centroid_euclidean,
        b = window_text(&m.baseline),
        cur = window_text(&m.current),
        seed = m.sample_seed,
    )
    .into_bytes()
}

/// The bundle's files: manifest first, then the README, the reports and the points.
pub fn render(data: BundleData, r: &Render) -> Files {
    let drift = drift_report(data.drift);
    let has_eval = data.confusion.is_some();
    let eval = format::EvalFile {
        confusion: data.confusion.map(confusion_report),
        margin: data.margin.map(margin_report),
        skipped: data.eval_skipped.clone(),
    };
    let monitors: Vec<pb::MonitorStatus> = data.monitors.into_iter().map(status_pb).collect();
    let mut files: Files = vec![
        (format::DRIFT.into(), json(&drift)),
        (format::EVAL.into(), json(&eval)),
        (format::MONITORS.into(), json(&monitors)),
    ];
    if r.include_points {
        for (side, w) in format::SIDES.iter().zip([&data.baseline, &data.current]) {
            files.extend(points_files(side, w));
        }
    }
    let mut manifest = Manifest {
        kind: format::KIND.into(),
        format: format::FORMAT,
        created_ms: now_ms(),
        reason: r.reason.clone(),
        server: format::ServerRecord {
            version: env!("CARGO_PKG_VERSION").into(),
            eval: serde_json::to_value(&data.eval_config).unwrap_or_default(),
        },
        collection: data.collection,
        baseline: window_record(&data.baseline),
        current: window_record(&data.current),
        sample_seed: data.sample_seed,
        max_points: data.max_points,
        k: data.examples,
        drift_request: format::DriftParams::default(),
        contents: format::Contents {
            points: r.include_points,
            eval: has_eval,
            eval_skipped: data.eval_skipped,
            monitors: monitors.len(),
        },
        files: Vec::new(),
    };
    manifest.drift_request = drift_params(&data.drift_request);
    files.insert(0, (format::README.into(), readme(&manifest, &drift)));
    manifest.files = files
        .iter()
        .map(|(path, bytes)| FileEntry {
            path: path.clone(),
            bytes: bytes.len() as u64,
            sha256: format::sha256_hex(bytes),
        })
        .collect();
    files.insert(0, (format::MANIFEST.into(), json(&manifest)));
    files
}

fn drift_params(d: &DriftRequest) -> format::DriftParams {
    format::DriftParams {
        threshold: d.threshold,
        calibrate: d.calibrate,
        sample_size: d.sample_size,
        seed: d.seed,
    }
}

/// Packs `files` as one `.tar.gz` in their order.
pub fn write_tar_gz(files: &Files, out: impl Write) -> std::io::Result<()> {
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mtime = (now_ms() / 1000).max(0) as u64;
    for (path, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, bytes.as_slice())?;
    }
    tar.into_inner()?.finish()?.flush()
}

/// The `[bundles]` table of the config file: the flight recorder's limits.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BundlesConfig {
    /// At most one bundle per monitor per this many seconds.
    pub min_interval_s: u64,
    /// The bundles directory is kept under this size; the oldest bundles go first.
    pub max_total_bytes: u64,
    /// Points per window a recorded bundle holds (a seeded sample past it).
    pub max_points: u32,
}

impl Default for BundlesConfig {
    fn default() -> Self {
        BundlesConfig {
            min_interval_s: 3600,
            max_total_bytes: 1 << 30,
            max_points: 10_000,
        }
    }
}

/// Writes bundles for monitors with `record_bundles` when their drift score crosses the drift
/// threshold: at most one per monitor per `min_interval_s`, the directory bounded by
/// `max_total_bytes` (oldest deleted first). Files are `<collection>.<version>.<ms>.tar.gz`
/// (names never hold a dot), written under a temporary name and renamed when complete.
#[derive(Debug)]
pub struct FlightRecorder {
    dir: PathBuf,
    config: BundlesConfig,
    last: Mutex<HashMap<(String, String), Instant>>,
    written: prometheus::IntCounter,
}

impl FlightRecorder {
    pub fn new(data_dir: &Path, config: BundlesConfig, written: prometheus::IntCounter) -> Self {
        let dir = data_dir.join("bundles");
        // A bundle cut short by a crash never got its final name.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().ends_with(".partial") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        FlightRecorder {
            dir,
            config,
            last: Mutex::new(HashMap::new()),
            written,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Called after every successful monitor run; writes a bundle when it should. Blocking.
    /// A failed attempt (logged) counts against the interval too, so a bundle that cannot be
    /// made (say, over the memory limit) is not retried on every run.
    pub fn after_run(&self, analysis: &Analysis, spec: &MonitorSpec, result: &MonitorResult) {
        let threshold = analysis.eval_config().drift_threshold;
        let (Some(score), Some(baseline)) = (result.drift_score, spec.baseline.as_ref()) else {
            return;
        };
        if !spec.record_bundles || score <= threshold {
            return;
        }
        let key = (spec.collection.clone(), spec.version.clone());
        let interval = Duration::from_secs(self.config.min_interval_s);
        {
            let Ok(mut last) = self.last.lock() else {
                return;
            };
            if last.get(&key).is_some_and(|t| t.elapsed() < interval)
                || self
                    .newest_on_disk(&key)
                    .is_some_and(|ms| now_ms().saturating_sub(ms) < interval.as_millis() as i64)
            {
                return;
            }
            last.insert(key.clone(), Instant::now());
        }
        let reason = format!(
            "Monitor {}/{} recorded this bundle: its drift score {score:.4} exceeded the threshold {threshold}",
            spec.collection, spec.version
        );
        match self.record(analysis, spec, baseline, reason) {
            Ok(path) => {
                self.written.inc();
                tracing::warn!(collection = %spec.collection, version = %spec.version, drift_score = score, bundle = %path.display(), "drift incident recorded");
                self.enforce_budget(&path);
            }
            Err(e) => {
                tracing::error!(collection = %spec.collection, version = %spec.version, error = %e, "recording a drift bundle failed")
            }
        }
    }

    fn record(
        &self,
        analysis: &Analysis,
        spec: &MonitorSpec,
        baseline: &WindowSpec,
        reason: String,
    ) -> anyhow::Result<PathBuf> {
        let req = BundleRequest {
            collection: spec.collection.clone(),
            baseline: baseline.clone(),
            current: WindowSpec {
                version: spec.version.clone(),
                from_ms: None,
                to_ms: None,
            },
            examples: None,
            max_points: Some(self.config.max_points),
            drift: DriftRequest::default(),
        };
        let data = analysis.record_bundle(&req)?;
        let files = render(
            data,
            &Render {
                reason,
                include_points: true,
            },
        );
        std::fs::create_dir_all(&self.dir)?;
        let name = format!("{}.{}.{}.tar.gz", spec.collection, spec.version, now_ms());
        let path = self.dir.join(&name);
        let partial = self.dir.join(format!("{name}.partial"));
        let written = (|| {
            let mut f = std::fs::File::create(&partial)?;
            write_tar_gz(&files, std::io::BufWriter::new(&mut f))?;
            f.sync_all()?;
            std::fs::rename(&partial, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
        Ok(path)
    }

    /// The recorded bundles, oldest first.
    pub fn list(&self) -> Vec<Recorded> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(mut r) = Recorded::parse(&name) {
                r.bytes = e.metadata().map_or(0, |m| m.len());
                out.push(r);
            }
        }
        out.sort_by(|a, b| (a.created_ms, &a.name).cmp(&(b.created_ms, &b.name)));
        out
    }

    /// The path of a recorded bundle: its name must be one the recorder writes (so a request
    /// never reaches outside the directory).
    pub fn path_of(&self, name: &str) -> Option<(Recorded, PathBuf)> {
        let r = Recorded::parse(name)?;
        let path = self.dir.join(&r.name);
        path.is_file().then_some((r, path))
    }

    fn newest_on_disk(&self, key: &(String, String)) -> Option<i64> {
        self.list()
            .into_iter()
            .filter(|b| b.collection == key.0 && b.version == key.1)
            .map(|b| b.created_ms)
            .max()
    }

    /// Deletes the oldest bundles (never `keep`, the one just written) until the directory fits.
    fn enforce_budget(&self, keep: &Path) {
        let all = self.list();
        let mut total: u64 = all.iter().map(|b| b.bytes).sum();
        for b in all {
            if total <= self.config.max_total_bytes {
                break;
            }
            let path = self.dir.join(&b.name);
            if path == keep {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                tracing::info!(bundle = %path.display(), "old drift bundle deleted (bundles over [bundles] max_total_bytes)");
                total -= b.bytes;
            }
        }
    }
}

/// A bundle the flight recorder wrote: `<collection>.<version>.<created_ms>.tar.gz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub name: String,
    pub collection: String,
    pub version: String,
    pub created_ms: i64,
    pub bytes: u64,
}

impl Recorded {
    /// None unless `name` is exactly a recorder's file name (valid names, digits, no path).
    pub fn parse(name: &str) -> Option<Recorded> {
        let stem = name.strip_suffix(".tar.gz")?;
        let parts: Vec<&str> = stem.split('.').collect();
        let [c, v, ms] = parts.as_slice() else {
            return None;
        };
        if emberdb_storage::validate::name("collection", c).is_err()
            || emberdb_storage::validate::name("version", v).is_err()
            || ms.is_empty()
            || !ms.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(Recorded {
            name: name.to_string(),
            collection: c.to_string(),
            version: v.to_string(),
            created_ms: ms.parse().ok()?,
            bytes: 0,
        })
    }
}
