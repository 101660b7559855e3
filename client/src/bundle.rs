//! Incident bundles on the client side (the format: `emberdb_proto::bundle`): reading and
//! verifying one, replaying it on a server (import both windows, run Drift, Confusion and Margin
//! again) and comparing every recorded figure with the replayed one.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use emberdb_proto::bundle::{self as format, Manifest, PointLine};
use serde_json::Value;

use crate::{Client, pb};

/// Two figures agree when they differ by at most this, relative to the larger.
pub const RELATIVE_TOLERANCE: f64 = 1e-9;
/// ... or by at most this absolutely (figures that are 0 up to rounding).
const ABSOLUTE_FLOOR: f64 = 1e-12;
/// Largest file of a bundle this reader accepts (a hostile archive cannot exhaust memory).
const MAX_FILE_BYTES: u64 = 8 << 30;
static NULL: Value = Value::Null;

/// A bundle read into memory.
#[derive(Debug)]
pub struct Bundle {
    pub manifest: Manifest,
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Bundle {
    /// Reads a `.tar.gz` bundle; fails on anything that is not one (naming what is wrong).
    pub fn read(path: &Path) -> anyhow::Result<Bundle> {
        let f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
        let mut files = BTreeMap::new();
        for entry in tar
            .entries()
            .with_context(|| format!("{}: not a .tar.gz", path.display()))?
        {
            let mut e = entry.with_context(|| format!("{}: damaged archive", path.display()))?;
            let name = e.path()?.to_string_lossy().into_owned();
            anyhow::ensure!(
                e.size() <= MAX_FILE_BYTES,
                "{}: {name} is {} bytes, more than a bundle holds",
                path.display(),
                e.size()
            );
            let mut bytes = Vec::with_capacity(e.size() as usize);
            e.read_to_end(&mut bytes)
                .with_context(|| format!("{}: {name} is truncated", path.display()))?;
            files.insert(name, bytes);
        }
        let raw = files.get(format::MANIFEST).with_context(|| {
            format!(
                "{}: no {} (not an incident bundle)",
                path.display(),
                format::MANIFEST
            )
        })?;
        let manifest: Manifest = serde_json::from_slice(raw)
            .with_context(|| format!("{}: {}", path.display(), format::MANIFEST))?;
        anyhow::ensure!(
            manifest.kind == format::KIND,
            "{}: not an incident bundle (kind {:?})",
            path.display(),
            manifest.kind
        );
        anyhow::ensure!(
            manifest.format <= format::FORMAT,
            "{}: bundle format {} is newer than this ember reads ({}); update ember",
            path.display(),
            manifest.format,
            format::FORMAT
        );
        Ok(Bundle { manifest, files })
    }

    /// Files whose size or SHA-256 differs from the manifest, or that are missing or unlisted.
    pub fn checksum_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in &self.manifest.files {
            match self.files.get(&f.path) {
                None => out.push(format!("{}: listed in the manifest but missing", f.path)),
                Some(b) if b.len() as u64 != f.bytes => out.push(format!(
                    "{}: {} bytes, the manifest says {}",
                    f.path,
                    b.len(),
                    f.bytes
                )),
                Some(b) if format::sha256_hex(b) != f.sha256 => out.push(format!(
                    "{}: SHA-256 differs from the manifest (the file was changed)",
                    f.path
                )),
                Some(_) => {}
            }
        }
        for name in self.files.keys() {
            if name != format::MANIFEST && !self.manifest.files.iter().any(|f| &f.path == name) {
                out.push(format!("{name}: not listed in the manifest"));
            }
        }
        out
    }

    fn json(&self, name: &str) -> anyhow::Result<Value> {
        let b = self
            .files
            .get(name)
            .with_context(|| format!("the bundle has no {name}"))?;
        serde_json::from_slice(b).with_context(|| name.to_string())
    }

    /// One window's points, as the bundle holds them.
    pub fn points(&self, side: &str) -> anyhow::Result<Vec<pb::Point>> {
        let vpath = format::vectors_path(side);
        let ppath = format::points_path(side);
        let v = self
            .files
            .get(&vpath)
            .with_context(|| format!("the bundle has no {vpath}"))?;
        let (rows, cols, data) = crate::formats::parse_npy_f32(v).with_context(|| vpath.clone())?;
        let lines = self
            .files
            .get(&ppath)
            .with_context(|| format!("the bundle has no {ppath}"))?;
        let mut out = Vec::with_capacity(rows);
        for (n, line) in lines
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let p: PointLine =
                serde_json::from_slice(line).with_context(|| format!("{ppath}:{}", n + 1))?;
            anyhow::ensure!(
                n < rows,
                "{ppath} has more lines than {vpath} has rows ({rows})"
            );
            out.push(pb::Point {
                id: p.id,
                vector: data[n * cols..(n + 1) * cols].to_vec(),
                label: p.label,
                metadata: p.metadata.into_iter().collect(),
                timestamp_ms: p.timestamp_ms,
            });
        }
        anyhow::ensure!(
            out.len() == rows,
            "{ppath} has {} lines, {vpath} has {rows} rows",
            out.len()
        );
        Ok(out)
    }
}

/// One recorded figure that the replay did not reproduce.
#[derive(Debug, Clone)]
pub struct Difference {
    pub figure: String,
    pub recorded: String,
    pub replayed: String,
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Comparison {
    /// Figures compared (numbers, strings and flags of the reports).
    pub compared: usize,
    pub differences: Vec<Difference>,
    /// The headline figures, for the side-by-side print.
    pub headline: Vec<Headline>,
}

/// One headline figure: its name, the recorded and the replayed value, and whether they agree.
#[derive(Debug, Clone)]
pub struct Headline {
    pub figure: String,
    pub recorded: String,
    pub replayed: String,
    pub agrees: bool,
}

impl Headline {
    fn of(
        figure: &str,
        rec: Option<&Value>,
        got: Option<&Value>,
        show: impl Fn(&Value) -> String,
    ) -> Self {
        let mut probe = Comparison::default();
        compare_values("", rec.unwrap_or(&NULL), got.unwrap_or(&NULL), &mut probe);
        Headline {
            figure: figure.into(),
            recorded: rec.map_or("-".into(), &show),
            replayed: got.map_or("-".into(), &show),
            agrees: probe.differences.is_empty(),
        }
    }
}

fn number_eq(a: f64, b: f64) -> bool {
    if a == b || (a.is_nan() && b.is_nan()) {
        return true;
    }
    let d = (a - b).abs();
    d <= ABSOLUTE_FLOOR || d <= RELATIVE_TOLERANCE * a.abs().max(b.abs())
}

/// Walks two JSON reports together; every leaf counts as one figure.
fn compare_values(path: &str, rec: &Value, got: &Value, out: &mut Comparison) {
    match (rec, got) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                compare_values(
                    &p,
                    a.get(k).unwrap_or(&NULL),
                    b.get(k).unwrap_or(&NULL),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                out.compared += 1;
                out.differences.push(Difference {
                    figure: format!("{path} (entries)"),
                    recorded: a.len().to_string(),
                    replayed: b.len().to_string(),
                });
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                compare_values(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (Value::Number(x), Value::Number(y)) => {
            out.compared += 1;
            let same = match (x.as_u64(), y.as_u64(), x.as_i64(), y.as_i64()) {
                (Some(a), Some(b), _, _) => a == b,
                (_, _, Some(a), Some(b)) => a == b,
                _ => number_eq(
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                ),
            };
            if !same {
                out.differences.push(Difference {
                    figure: path.into(),
                    recorded: x.to_string(),
                    replayed: y.to_string(),
                });
            }
        }
        (a, b) => {
            out.compared += 1;
            if a != b {
                out.differences.push(Difference {
                    figure: path.into(),
                    recorded: a.to_string(),
                    replayed: b.to_string(),
                });
            }
        }
    }
}

/// A `ShiftKind` number as its name (the number itself when unknown).
pub fn shift_kind_name(k: i32) -> String {
    pb::ShiftKind::try_from(k).map_or_else(|_| k.to_string(), |k| k.as_str_name().to_string())
}

fn kind_name(v: &Value) -> String {
    v.as_i64()
        .and_then(|k| i32::try_from(k).ok())
        .map_or_else(|| v.to_string(), shift_kind_name)
}

/// Replays `b` on `c` in `collection` (which must not exist): creates the two versions as the
/// manifest records them, imports the windows, reruns the reports and compares them.
pub async fn replay(b: &Bundle, c: &mut Client, collection: &str) -> anyhow::Result<Comparison> {
    let m = &b.manifest;
    anyhow::ensure!(
        m.contents.points,
        "this bundle was exported without its points (include_points = false): nothing to replay"
    );
    for (side, w) in format::SIDES.iter().zip([&m.baseline, &m.current]) {
        let r = &w.record;
        let metric = match r.metric.as_str() {
            "l2" => pb::Metric::L2,
            "cosine" => pb::Metric::Cosine,
            "dot" => pb::Metric::Dot,
            other => anyhow::bail!("manifest: unknown metric {other:?} of the {side} window"),
        };
        c.create_version_with(pb::CreateVersionRequest {
            collection: collection.into(),
            version: (*side).into(),
            dimension: r.dim,
            metric: metric as i32,
            hnsw: Some(pb::HnswParams {
                m: r.m,
                ef_construction: r.ef_construction,
            }),
        })
        .await
        .with_context(|| format!("creating the {side} version"))?;
        let points = b.points(side)?;
        // Batches of at most ~8 MiB of vectors.
        let per = (8usize << 20) / (r.dim.max(1) as usize * 4);
        for chunk in points.chunks(per.clamp(1, 10_000)) {
            c.upsert(collection, side, chunk.to_vec())
                .await
                .with_context(|| format!("importing the {side} window"))?;
        }
    }
    let window = |v: &str| pb::Window {
        version: v.into(),
        from_ms: None,
        to_ms: None,
    };
    let d = &m.drift_request;
    let drift = c
        .drift(
            pb::DriftRequest {
                collection: collection.into(),
                baseline: Some(window("baseline")),
                current: Some(window("current")),
                threshold: d.threshold,
                calibrate: d.calibrate,
                sample_size: d.sample_size,
                seed: d.seed,
            },
            None,
        )
        .await
        .context("Drift")?;
    let mut out = Comparison::default();
    let rec = b.json(format::DRIFT)?;
    let got = serde_json::to_value(&drift)?;
    for (name, ptr) in [
        ("drift score", "/drift_score"),
        ("MMD²", "/mmd2"),
        ("KS drifted share", "/ks_drifted_share"),
        ("centroid distance", "/centroid_euclidean"),
    ] {
        let h = Headline::of(name, rec.pointer(ptr), got.pointer(ptr), Value::to_string);
        out.headline.push(h);
    }
    let ptr = "/fingerprint/primary";
    out.headline.push(Headline::of(
        "primary kind",
        rec.pointer(ptr),
        got.pointer(ptr),
        kind_name,
    ));
    compare_values("drift", &rec, &got, &mut out);

    if m.contents.eval {
        let rec = b.json(format::EVAL)?;
        let threshold = rec.pointer("/margin/threshold").and_then(Value::as_f64);
        let confusion = c
            .confusion(
                pb::ConfusionRequest {
                    collection: collection.into(),
                    version: "current".into(),
                    top_pairs: Some(m.k),
                    mode: pb::EvalMode::Exact as i32,
                },
                None,
            )
            .await
            .context("Confusion")?;
        let margin = c
            .margin(
                pb::MarginRequest {
                    collection: collection.into(),
                    version: "current".into(),
                    threshold,
                    lowest_n: Some(m.k),
                    mode: pb::EvalMode::Exact as i32,
                },
                None,
            )
            .await
            .context("Margin")?;
        let got = serde_json::json!({
            "confusion": confusion,
            "margin": margin,
            "skipped": Value::Null,
        });
        for (name, ptr) in [
            ("1-NN accuracy", "/confusion/accuracy"),
            ("mean margin", "/margin/mean"),
            ("low-margin fraction", "/margin/low_margin_fraction"),
        ] {
            let h = Headline::of(name, rec.pointer(ptr), got.pointer(ptr), Value::to_string);
            out.headline.push(h);
        }
        compare_values("eval", &rec, &got, &mut out);
    }
    Ok(out)
}

/// A throwaway `emberdb` on a temporary data dir and a loopback port, killed on drop.
pub struct ThrowawayServer {
    child: std::process::Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for ThrowawayServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `emberdb` binary: `explicit`, else the one next to this executable, else on `PATH`.
pub fn find_server_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Ok(exe) = std::env::current_exe() {
        let beside = exe.with_file_name("emberdb");
        if beside.is_file() {
            return Ok(beside);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("emberdb");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    anyhow::bail!(
        "no emberdb binary next to ember or on PATH; pass --emberdb PATH, or --server ADDR to replay on a running server"
    )
}

impl ThrowawayServer {
    /// Starts `bin` with the recorded `[eval]` settings and waits (at most 60 s) until it serves.
    pub fn start(bin: &Path, eval: &Value) -> anyhow::Result<ThrowawayServer> {
        use std::io::BufRead;
        let dir = tempfile::Builder::new().prefix("ember-replay-").tempdir()?;
        let config = dir.path().join("replay.toml");
        let table = serde_json::json!({ "eval": eval });
        std::fs::write(
            &config,
            toml::to_string(&table).context("recorded [eval] settings")?,
        )?;
        let mut child = std::process::Command::new(bin)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--grpc-addr", "127.0.0.1:0", "--metrics-addr", "off"])
            .args(["--log-format", "json", "--graph-park-after-s", "-1"])
            .arg("--config")
            .arg(&config)
            .env("EMBERDB_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut sent = false;
            // Keep reading to the end, so the server never blocks on a full pipe.
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if sent {
                    continue;
                }
                let Ok(rec) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if rec.pointer("/fields/message").and_then(Value::as_str) == Some("serving gRPC")
                    && let Some(addr) = rec.pointer("/fields/addr").and_then(Value::as_str)
                {
                    sent = tx.send(addr.to_string()).is_ok();
                }
            }
        });
        let mut server = ThrowawayServer {
            child,
            addr: String::new(),
            _dir: dir,
        };
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(addr) => server.addr = format!("http://{addr}"),
            Err(_) => {
                let status = server.child.try_wait()?;
                anyhow::bail!(
                    "{} did not start serving within 60 s{}",
                    bin.display(),
                    status.map_or(String::new(), |s| format!(" (exited: {s})"))
                );
            }
        }
        Ok(server)
    }
}
