//! `ember`: EmberDB's command-line client.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use emberdb_client::{Client, Metric, SearchOptions, formats, pb};
use indicatif::{ProgressBar, ProgressStyle};

mod bundle_cli;
mod ops_cli;

#[derive(Debug, Parser)]
#[command(name = "ember", version, about = "EmberDB command-line client")]
struct Cli {
    /// Server address.
    #[arg(
        long,
        global = true,
        env = "EMBERDB_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    addr: String,
    /// API key, sent as `authorization: Bearer <key>`.
    #[arg(long, global = true, env = "EMBERDB_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// CA certificate (PEM) that signed the server's; implies TLS.
    #[arg(long, global = true, env = "EMBERDB_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), for servers that require mutual TLS; needs --tls-key.
    #[arg(long, global = true, env = "EMBERDB_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long, global = true, env = "EMBERDB_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

fn read_file(flag: &str, p: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("{flag} {}", p.display()))
}

/// A new random API key (32 bytes from the OS RNG, base64url) and the config lines that admit it.
fn keygen(name: &str, role: &str) -> anyhow::Result<()> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("OS random number generator: {e}"))?;
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash: String = sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("key: {key}");
    println!();
    println!("# Give the key to the client (EMBERDB_API_KEY or --api-key); put these lines in the");
    println!("# server's --config file. The key itself is not stored anywhere.");
    println!("[[auth.keys]]");
    println!("name = {name:?}");
    println!("sha256 = \"{hash}\"");
    println!("role = {role:?}");
    Ok(())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum MetricArg {
    L2,
    Cosine,
    Dot,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Npy,
    Csv,
    Jsonl,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Print a new random API key and its `[[auth.keys]]` config lines (no server needed).
    Keygen {
        /// The key's name in logs and audit lines.
        #[arg(long, default_value = "my-key")]
        name: String,
        /// Its role.
        #[arg(long, default_value = "reader", value_parser = ["reader", "writer", "admin"])]
        role: String,
    },
    /// Create a version (and its collection when new).
    Create {
        collection: String,
        version: String,
        #[arg(long)]
        dim: u32,
        #[arg(long, value_enum, default_value = "l2")]
        metric: MetricArg,
        /// HNSW M (0 = server default).
        #[arg(long, default_value_t = 0)]
        m: u32,
        /// HNSW ef_construction (0 = server default).
        #[arg(long, default_value_t = 0)]
        ef_construction: u32,
    },
    /// Import points from a file, streamed in batches.
    Import {
        collection: String,
        version: String,
        /// Input file (.npy, .csv or .jsonl).
        file: PathBuf,
        /// Input format; guessed from the extension when omitted.
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// For .npy: a text file with one label per row.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// For .npy: id of the first row.
        #[arg(long, default_value_t = 0)]
        id_offset: u64,
        /// Points per batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Search nearest neighbours of a vector given as comma-separated floats, or of a stored point.
    Search {
        collection: String,
        version: String,
        /// Query vector, e.g. "0.1,0.2,0.3".
        #[arg(long, conflicts_with = "id")]
        vector: Option<String>,
        /// Use the stored vector of this point id as the query.
        #[arg(long)]
        id: Option<u64>,
        #[arg(long, default_value_t = 10)]
        k: u32,
        #[arg(long, default_value_t = 0)]
        ef: u32,
        #[arg(long)]
        exact: bool,
        /// Only points with one of these labels (repeatable).
        #[arg(long)]
        label: Vec<String>,
    },
    /// Describe a version (by name or alias).
    Describe { collection: String, version: String },
    /// List collections, versions and aliases.
    List,
    /// Evaluate a version: where does the embedding model fail?
    Eval {
        #[command(subcommand)]
        what: EvalCmd,
    },
    /// Write one self-contained HTML report: confusion heatmap, margin histograms,
    /// 2-D projection, top confusion pairs and action items.
    Report {
        #[command(flatten)]
        t: Target,
        /// Output file.
        #[arg(long, default_value = "report.html")]
        out: PathBuf,
    },
    /// Distribution shift between two windows: VERSION[@FROM_MS..TO_MS] each.
    Drift {
        collection: String,
        #[arg(value_parser = ops_cli::parse_window)]
        baseline: pb::Window,
        #[arg(value_parser = ops_cli::parse_window)]
        current: pb::Window,
        /// drifted = score > threshold (default: the server's, 1.0).
        #[arg(long)]
        threshold: Option<f64>,
        /// Calibrate the threshold on clean splits of the baseline.
        #[arg(long)]
        calibrate: bool,
        #[arg(long)]
        sample_size: Option<u32>,
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
    /// Canary comparison of two versions, side by side, with a verdict.
    Canary {
        collection: String,
        baseline: String,
        candidate: String,
        #[arg(long, default_value_t = 10)]
        k: u32,
        /// Shared ids used as queries (0 = all).
        #[arg(long, default_value_t = 0)]
        sample_size: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// On PROMOTE, move this alias to the candidate in the same call.
        #[arg(long, default_value = "")]
        promote_alias: String,
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
    /// Does the HNSW graph agree with what is stored? Exits non-zero when not.
    Check {
        collection: String,
        version: String,
        /// Rebuild from RocksDB when inconsistent, then check again.
        #[arg(long)]
        repair: bool,
    },
    /// Scheduled evaluations exported as Prometheus gauges.
    Monitor {
        #[command(subcommand)]
        cmd: ops_cli::MonitorCmd,
    },
    /// Point-in-time snapshots of the whole server (admin).
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
    /// Incident bundles: export the evidence of a drift incident, replay it anywhere.
    Bundle {
        #[command(subcommand)]
        cmd: bundle_cli::BundleCmd,
    },
    /// Point an alias at a version, or delete it with --delete.
    Alias {
        collection: String,
        alias: String,
        version: Option<String>,
        #[arg(long)]
        delete: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SnapshotCmd {
    /// Take a snapshot while writes go on; it lands under <data-dir>/snapshots/<name>/ on the
    /// server, and `emberdb restore --from <that dir> --data-dir DIR` brings it back.
    Create {
        /// Default: snapshot-<milliseconds since the epoch>.
        #[arg(long, default_value = "")]
        name: String,
        /// Only this collection (default: every collection).
        #[arg(long, default_value = "")]
        collection: String,
    },
    List,
    Delete {
        name: String,
    },
    /// Download a snapshot as one tar archive (checked against the server's SHA-256);
    /// `emberdb restore --from FILE.tar --data-dir DIR` restores it.
    Download {
        name: String,
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct Target {
    collection: String,
    /// Version name or alias.
    version: String,
    /// Give up after this many seconds (the server stops with DEADLINE_EXCEEDED).
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
}

#[derive(Debug, Subcommand)]
enum EvalCmd {
    /// ANN recall@k against exact search, and label-based retrieval quality.
    Recall {
        #[command(flatten)]
        t: Target,
        #[arg(long, default_value_t = 10)]
        k: u32,
        /// 0 = server default.
        #[arg(long, default_value_t = 0)]
        ef: u32,
        /// Queries sampled from the stored points; 0 = every point.
        #[arg(long, default_value_t = 200)]
        sample_size: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Leave-one-out 1-NN margin per class and the lowest-margin samples.
    Margin {
        #[command(flatten)]
        t: Target,
        #[arg(long)]
        threshold: Option<f64>,
        #[arg(long, default_value_t = 10)]
        lowest: u32,
    },
    /// Which classes are confused with which, and how concentrated the errors are.
    Confusion {
        #[command(flatten)]
        t: Target,
        #[arg(long, default_value_t = 10)]
        top_pairs: u32,
    },
    /// Signals turned into owned work items.
    Actions {
        #[command(flatten)]
        t: Target,
        /// Print each item as a Markdown ticket.
        #[arg(long)]
        markdown: bool,
    },
}

/// Expected outcomes that are not successes: one line on stderr and a documented exit code,
/// never a backtrace (README, "ember exit codes").
#[derive(Debug, thiserror::Error)]
pub(crate) enum Outcome {
    /// `ember check` found the index of this version inconsistent with the stored points.
    #[error("the index of {0} is inconsistent with the stored points (see the findings above)")]
    Inconsistent(String),
    /// Ctrl-C: the call was abandoned, and the server stops an evaluation whose client left.
    #[error("cancelled")]
    Cancelled,
    /// `ember bundle replay` did not reproduce the bundle.
    #[error(
        "the replay differs from the bundle: {figures} figure(s) differ, {files} file(s) fail their checksum"
    )]
    ReplayDiffers { figures: usize, files: usize },
}

impl Outcome {
    fn exit_code(&self) -> i32 {
        match self {
            Outcome::Inconsistent(_) => 2,
            Outcome::Cancelled => 130,
            Outcome::ReplayDiffers { .. } => 3,
        }
    }
}

/// A spinner with the elapsed time on stderr while a long call runs, when stderr is a terminal
/// (quiet otherwise: scripts and CI logs see only the result).
pub(crate) trait Spin: std::future::Future + Sized {
    fn spin(self, what: &str) -> impl std::future::Future<Output = Self::Output> {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner().with_message(what.to_string());
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} {msg} ({elapsed}, Ctrl-C cancels)")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        async move {
            let out = self.await;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            out
        }
    }
}

impl<F: std::future::Future> Spin for F {}

fn main() {
    let code = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                // Ctrl-C drops the call in flight: the connection closes and the server
                // cancels the evaluation behind it.
                tokio::select! {
                    r = run() => r,
                    _ = tokio::signal::ctrl_c() => Err(Outcome::Cancelled.into()),
                }
            })
        }) {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<Outcome>() {
            Some(o) => {
                eprintln!("ember: {o}");
                o.exit_code()
            }
            None => {
                // Display with causes ({:#}), not Debug: no backtrace, whatever RUST_BACKTRACE says.
                eprintln!("ember: error: {e:#}");
                1
            }
        },
    };
    std::process::exit(code);
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Cmd::Keygen { name, role } = &cli.cmd {
        return keygen(name, role);
    }
    let opts = emberdb_client::ConnectOptions {
        api_key: cli.api_key.clone(),
        tls_ca_pem: cli
            .tls_ca
            .as_deref()
            .map(|p| read_file("--tls-ca", p))
            .transpose()?,
        tls_identity: match (&cli.tls_cert, &cli.tls_key) {
            (Some(c), Some(k)) => Some((read_file("--tls-cert", c)?, read_file("--tls-key", k)?)),
            _ => None,
        },
    };
    // A replay starts its own server unless --server names one: it connects by itself.
    if let Cmd::Bundle {
        cmd:
            bundle_cli::BundleCmd::Replay {
                file,
                server,
                emberdb,
            },
    } = cli.cmd
    {
        return bundle_cli::replay(file, server, emberdb, opts).await;
    }
    let mut c = Client::connect_with(cli.addr.clone(), opts)
        .await
        .with_context(|| format!("connecting to {}", cli.addr))?;
    match cli.cmd {
        Cmd::Keygen { name, role } => keygen(&name, &role)?,
        Cmd::Create {
            collection,
            version,
            dim,
            metric,
            m,
            ef_construction,
        } => {
            let metric = match metric {
                MetricArg::L2 => Metric::L2,
                MetricArg::Cosine => Metric::Cosine,
                MetricArg::Dot => Metric::Dot,
            };
            let v = c
                .create_version_with(pb::CreateVersionRequest {
                    collection,
                    version,
                    dimension: dim,
                    metric: metric as i32,
                    hnsw: Some(pb::HnswParams { m, ef_construction }),
                })
                .await?;
            print_version(&v);
        }
        Cmd::Import {
            collection,
            version,
            file,
            format,
            labels,
            id_offset,
            batch,
        } => {
            let format = format.or_else(|| match file.extension()?.to_str()? {
                "npy" => Some(Format::Npy),
                "csv" => Some(Format::Csv),
                "jsonl" | "ndjson" => Some(Format::Jsonl),
                _ => None,
            });
            let points = match format.context("cannot guess the format; pass --format")? {
                Format::Npy => formats::points_from_npy(&file, labels.as_deref(), id_offset)?,
                Format::Csv => formats::points_from_csv(&file)?,
                Format::Jsonl => formats::points_from_jsonl(&file)?,
            };
            let total = points.len() as u64;
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} points {per_sec} eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let batch = batch.clamp(1, 10_000);
            let chunks: Vec<Vec<pb::Point>> =
                points.chunks(batch).map(<[pb::Point]>::to_vec).collect();
            let b = bar.clone();
            let stream = futures::stream::iter(chunks.into_iter().map(move |points| {
                b.inc(points.len() as u64);
                pb::UpsertRequest {
                    collection: collection.clone(),
                    version: version.clone(),
                    points,
                }
            }));
            let n = c.upsert_stream(stream).await?;
            bar.finish();
            println!("imported {n} of {total} points");
        }
        Cmd::Search {
            collection,
            version,
            vector,
            id,
            k,
            ef,
            exact,
            label,
        } => {
            let query = match (vector, id) {
                (Some(v), _) => v
                    .split(',')
                    .map(|x| x.trim().parse::<f32>())
                    .collect::<Result<Vec<_>, _>>()
                    .context("--vector must be comma-separated numbers")?,
                (None, Some(id)) => {
                    c.get(&collection, &version, vec![id], true)
                        .await?
                        .pop()
                        .with_context(|| format!("point {id} not found"))?
                        .vector
                }
                (None, None) => anyhow::bail!("give --vector or --id"),
            };
            let filter = (!label.is_empty()).then(|| pb::Filter {
                labels: label,
                metadata: Default::default(),
            });
            let hits = c
                .search(
                    &collection,
                    &version,
                    query,
                    k,
                    SearchOptions { ef, exact, filter },
                )
                .await?;
            println!("{:>4}  {:>20}  {:>12}  label", "rank", "id", "distance");
            for (i, h) in hits.iter().enumerate() {
                println!(
                    "{:>4}  {:>20}  {:>12.6}  {}",
                    i + 1,
                    h.id,
                    h.distance,
                    h.label
                );
            }
        }
        Cmd::Eval { what } => eval(&mut c, what).await?,
        Cmd::Report { t, out } => {
            let data = emberdb_client::report::fetch(
                &mut c,
                &t.collection,
                &t.version,
                Some(std::time::Duration::from_secs(t.timeout_s)),
            )
            .await?;
            std::fs::write(&out, emberdb_client::report::render_html(&data))
                .with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {}", out.display());
        }
        Cmd::Describe {
            collection,
            version,
        } => print_version(&c.describe(&collection, &version).await?),
        Cmd::List => {
            for col in c.list_collections().await? {
                println!("{}", col.name);
                for v in &col.versions {
                    println!(
                        "  version {:<24} dim {:<6} points {:<10} indexed {}",
                        v.version, v.dimension, v.point_count, v.indexed_count
                    );
                }
                for a in &col.aliases {
                    println!("  alias   {:<24} -> {}", a.alias, a.version);
                }
            }
        }
        Cmd::Drift {
            collection,
            baseline,
            current,
            threshold,
            calibrate,
            sample_size,
            timeout_s,
        } => {
            let req = pb::DriftRequest {
                collection,
                baseline: Some(baseline),
                current: Some(current),
                threshold,
                calibrate,
                sample_size,
                seed: None,
            };
            ops_cli::drift(&mut c, req, std::time::Duration::from_secs(timeout_s)).await?;
        }
        Cmd::Canary {
            collection,
            baseline,
            candidate,
            k,
            sample_size,
            seed,
            promote_alias,
            timeout_s,
        } => {
            let req = pb::CompareVersionsRequest {
                collection,
                baseline_version: baseline,
                candidate_version: candidate,
                k: Some(k),
                sample_size: Some(sample_size),
                seed: Some(seed),
                promote_alias,
            };
            ops_cli::canary(&mut c, req, std::time::Duration::from_secs(timeout_s)).await?;
        }
        Cmd::Check {
            collection,
            version,
            repair,
        } => ops_cli::check(&mut c, &collection, &version, repair).await?,
        Cmd::Monitor { cmd } => ops_cli::monitor(&mut c, cmd).await?,
        Cmd::Snapshot { cmd } => match cmd {
            SnapshotCmd::Create { name, collection } => {
                print_snapshot(&c.create_snapshot(&name, &collection).await?)
            }
            SnapshotCmd::List => {
                for s in c.list_snapshots().await? {
                    print_snapshot(&s);
                }
            }
            SnapshotCmd::Delete { name } => {
                c.delete_snapshot(&name).await?;
                println!("snapshot {name} deleted");
            }
            SnapshotCmd::Download { name, out } => {
                let n = c.download_snapshot(&name, &out).await?;
                println!("snapshot {name}: {n} bytes written to {}", out.display());
            }
        },
        Cmd::Bundle { cmd } => bundle_cli::run(&mut c, cmd).await?,
        Cmd::Alias {
            collection,
            alias,
            version,
            delete,
        } => {
            if delete {
                c.delete_alias(&collection, &alias).await?;
                println!("alias {alias} deleted");
            } else {
                let v = version.context("give the target version, or --delete")?;
                let prev = c.set_alias(&collection, &alias, &v).await?;
                if prev.is_empty() {
                    println!("alias {alias} -> {v}");
                } else {
                    println!("alias {alias} -> {v} (was {prev})");
                }
            }
        }
    }
    Ok(())
}

fn print_snapshot(s: &pb::SnapshotInfo) {
    let scope = if s.collection.is_empty() {
        "every collection".to_string()
    } else {
        format!("collection {}", s.collection)
    };
    println!(
        "{}  {scope}  created_ms {}  {} files  {} bytes",
        s.name, s.created_ms, s.files, s.bytes
    );
    for v in &s.versions {
        let index = if v.has_index { "index" } else { "no index" };
        println!(
            "  {}/{}  op_sequence {}  {index}",
            v.collection, v.version, v.op_sequence
        );
    }
}

fn print_version(v: &pb::VersionInfo) {
    let metric = pb::Metric::try_from(v.metric).map_or("?", |m| m.as_str_name());
    let state = pb::VersionState::try_from(v.state).map_or("?", |s| s.as_str_name());
    println!("collection   {}", v.collection);
    println!("version      {}", v.version);
    println!("dimension    {}", v.dimension);
    println!("metric       {metric}");
    println!("points       {}", v.point_count);
    println!("indexed      {}", v.indexed_count);
    println!("state        {state}");
}

async fn eval(c: &mut Client, what: EvalCmd) -> anyhow::Result<()> {
    let secs = |t: &Target| Some(std::time::Duration::from_secs(t.timeout_s));
    match what {
        EvalCmd::Recall {
            t,
            k,
            ef,
            sample_size,
            seed,
        } => {
            let timeout = secs(&t);
            let r = c
                .recall(
                    pb::RecallRequest {
                        collection: t.collection,
                        version: t.version,
                        k: Some(k),
                        ef: (ef > 0).then_some(ef),
                        sample_size: Some(sample_size),
                        seed: Some(seed),
                    },
                    timeout,
                )
                .spin("recall")
                .await?;
            println!("mode           {}", r.mode);
            println!("queries        {} (k={}, ef={})", r.queries, r.k, r.ef);
            println!(
                "recall@k       {:.4}  (min {:.2}, p5 {:.2}, {} below 1.0)",
                r.recall_at_k, r.recall_min, r.recall_p5, r.queries_below_1
            );
            println!("precision@1    {:.4}", r.precision_at_1);
            println!("hit@k          {:.4}", r.hit_at_k);
            println!("MRR            {:.4}", r.mrr);
            println!(
                "MAP@R          {:.4}  ({} queries with R > 0)",
                r.map_at_r, r.map_at_r_queries
            );
            println!("kNN accuracy   {:.4}", r.knn_accuracy);
            println!(
                "latency p50    ANN {:.3} ms, exact {:.3} ms (amortised)",
                r.ann_latency_p50_ms, r.exact_latency_p50_ms
            );
        }
        EvalCmd::Margin {
            t,
            threshold,
            lowest,
        } => {
            let timeout = secs(&t);
            let r = c
                .margin(
                    pb::MarginRequest {
                        collection: t.collection,
                        version: t.version,
                        threshold,
                        lowest_n: Some(lowest),
                        mode: 0,
                    },
                    timeout,
                )
                .spin("margin")
                .await?;
            println!(
                "mode {}  points {}  mean {:.4}  median {:.4}  p10 {:.4}",
                r.mode, r.points, r.mean, r.median, r.p10
            );
            println!(
                "low margin (< {}): {} ({:.2}%)\n",
                r.threshold,
                r.low_margin_count,
                r.low_margin_fraction * 100.0
            );
            println!(
                "{:<20} {:>8} {:>12} {:>10}",
                "class", "count", "mean margin", "low %"
            );
            for cl in &r.classes {
                println!(
                    "{:<20} {:>8} {:>12.4} {:>9.2}%",
                    cl.label,
                    cl.count,
                    cl.mean_margin,
                    cl.low_margin_fraction * 100.0
                );
            }
            println!("\nlowest margins:");
            println!(
                "{:>10} {:<12} {:>10} {:<12} {:>10} {:<12} {:>10}",
                "id", "label", "nearest", "label", "second", "label", "margin"
            );
            for s in &r.lowest {
                println!(
                    "{:>10} {:<12} {:>10} {:<12} {:>10} {:<12} {:>10.5}",
                    s.id,
                    s.label,
                    s.nearest_id,
                    s.nearest_label,
                    s.second_id,
                    s.second_label,
                    s.margin
                );
            }
        }
        EvalCmd::Confusion { t, top_pairs } => {
            let timeout = secs(&t);
            let r = c
                .confusion(
                    pb::ConfusionRequest {
                        collection: t.collection,
                        version: t.version,
                        top_pairs: Some(top_pairs),
                        mode: 0,
                    },
                    timeout,
                )
                .spin("confusion")
                .await?;
            println!(
                "mode {}  points {}  LOO 1-NN accuracy {:.4}  errors {}",
                r.mode, r.points, r.accuracy, r.errors
            );
            println!(
                "top-3 pairs hold {:.1}% of errors: {}\n",
                r.concentration * 100.0,
                if r.concentrated {
                    "concentrated"
                } else {
                    "spread out"
                }
            );
            println!(
                "{:<16} {:<16} {:>7} {:>8} {:>9}  examples",
                "true", "predicted", "count", "rate", "share"
            );
            for p in &r.pairs {
                let ex: Vec<String> = p.example_ids.iter().take(5).map(u64::to_string).collect();
                println!(
                    "{:<16} {:<16} {:>7} {:>7.2}% {:>8.2}%  {}",
                    p.true_label,
                    p.predicted_label,
                    p.count,
                    p.rate * 100.0,
                    p.share_of_errors * 100.0,
                    ex.join(",")
                );
            }
            println!(
                "\n{:<16} {:>7} {:>9} {:>12} {:<16}",
                "class", "count", "accuracy", "intra dist", "nearest class"
            );
            for cl in &r.classes {
                println!(
                    "{:<16} {:>7} {:>8.2}% {:>12.4} {:<16}",
                    cl.label,
                    cl.count,
                    cl.accuracy * 100.0,
                    cl.intra_class_distance,
                    cl.nearest_class
                );
            }
        }
        EvalCmd::Actions { t, markdown } => {
            let timeout = secs(&t);
            let format = if markdown {
                pb::ActionFormat::Markdown
            } else {
                pb::ActionFormat::Structured
            };
            let r = c
                .actions(
                    pb::ActionsRequest {
                        collection: t.collection,
                        version: t.version,
                        format: format as i32,
                        mode: 0,
                    },
                    timeout,
                )
                .spin("actions")
                .await?;
            if r.items.is_empty() {
                println!("no action items: every signal is below its threshold");
            }
            for i in &r.items {
                if markdown {
                    println!("{}", i.markdown);
                } else {
                    let signal = pb::Signal::try_from(i.signal).map_or("?", |s| s.as_str_name());
                    println!(
                        "[{:.2}] {:<26} {:<24} {:>8.4} (>= {:.4})  owner: {}",
                        i.severity, signal, i.subject, i.value, i.threshold, i.owner
                    );
                    println!("       {}", i.meaning);
                    println!("       action: {}", i.action);
                }
            }
        }
    }
    Ok(())
}
