//! `ember-eval-bench`: exact Confusion + Margin on the real Fashion-MNIST train set
//! (60,000 × 784) through gRPC, the server's peak RSS, and EmberDB against the
//! seed analysis's own numpy/scikit-learn code at n = 20,000 in one run.

use emberdb_benches::data;
use emberdb_benches::server::Server;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use emberdb_client::{Client, Metric, pb};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    fashion_dir: PathBuf,
    /// Python with numpy and scikit-learn (make test creates this venv).
    #[arg(long, default_value_t = format!("{}/.cache/emberdb/venv/bin/python", std::env::var("HOME").unwrap_or_default()))]
    python: String,
    /// Size of the numpy comparison.
    #[arg(long, default_value_t = 20_000)]
    small: usize,
    /// Also run approximate-mode Confusion on this many clustered 128-d points (0 = skip).
    #[arg(long, default_value_t = 0)]
    approx_n: usize,
    /// Run only the approximate-mode part.
    #[arg(long)]
    only_approx: bool,
    /// Sample of the approximate run's agreement check against exact search.
    #[arg(long, default_value_t = 10_000)]
    agreement_sample: usize,
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// `UpsertStream` messages for the first `n` points of `d`, ids = row numbers.
fn messages(col: &str, d: &data::Dataset, n: usize, batch: usize) -> Vec<pb::UpsertRequest> {
    (0..n)
        .collect::<Vec<_>>()
        .chunks(batch)
        .map(|ids| pb::UpsertRequest {
            collection: col.into(),
            version: "v1".into(),
            points: ids
                .iter()
                .map(|&i| pb::Point {
                    id: i as u64,
                    vector: d.train[i].clone(),
                    label: d.train_labels[i].clone(),
                    ..Default::default()
                })
                .collect(),
        })
        .collect()
}

async fn ingest(c: &mut Client, col: &str, d: &data::Dataset, n: usize) -> anyhow::Result<()> {
    c.create_version(col, "v1", d.dim as u32, Metric::L2)
        .await?;
    let msgs = messages(col, d, n, 500);
    c.upsert_stream(futures::stream::iter(msgs)).await?;
    loop {
        let v = c.describe(col, "v1").await?;
        if v.indexed_count == v.point_count {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn confusion_and_margin(
    c: &mut Client,
    col: &str,
) -> anyhow::Result<(f64, f64, pb::ConfusionReport, pb::MarginReport)> {
    let t = Instant::now();
    let conf = c
        .confusion(
            pb::ConfusionRequest {
                collection: col.into(),
                version: "v1".into(),
                top_pairs: Some(10),
                mode: 0,
            },
            Some(Duration::from_secs(600)),
        )
        .await?;
    let t_conf = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let margin = c
        .margin(
            pb::MarginRequest {
                collection: col.into(),
                version: "v1".into(),
                threshold: None,
                lowest_n: Some(10),
                mode: 0,
            },
            Some(Duration::from_secs(600)),
        )
        .await?;
    Ok((t_conf, t.elapsed().as_secs_f64(), conf, margin))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("emberdb.toml");
    std::fs::write(
        &config,
        format!("[eval]\nagreement_sample = {}\n", args.agreement_sample),
    )?;
    let (server, mut c) = Server::start(&[
        "--metrics-addr",
        "off",
        "--config",
        config.to_str().unwrap_or(""),
    ])
    .await?;
    let pid = server.pid();
    if args.only_approx {
        let (n, ingest_s, build_s, eval_s, rep) = approximate(&mut c, args.approx_n).await?;
        println!(
            "approximate: n={n} ingest {ingest_s:.1} s, graph {build_s:.1} s, Confusion {eval_s:.1} s, accuracy {:.4}, agreement {:.4}",
            rep.accuracy,
            rep.approximate_agreement.unwrap_or(f64::NAN)
        );
        let ex = c
            .confusion(
                pb::ConfusionRequest {
                    collection: "approx".into(),
                    version: "v1".into(),
                    top_pairs: Some(3),
                    mode: pb::EvalMode::Exact as i32,
                },
                None,
            )
            .await?;
        println!("exact on the same data: accuracy {:.4}", ex.accuracy);
        drop(server);
        return Ok(());
    }
    let d = data::fashion_mnist(&args.fashion_dir)?;
    ingest(&mut c, "fmnist", &d, d.train.len()).await?;
    let rss_loaded = status_kib(pid, "VmRSS:");
    // Reset the peak so it measures the server holding this one version through the evaluation.
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let (tc, tm, conf, margin) = confusion_and_margin(&mut c, "fmnist").await?;
    let peak = status_kib(pid, "VmHWM:");
    // A second, cold pass: Margin first (it computes), Confusion second (shared pass).
    c.upsert(
        "fmnist",
        "v1",
        vec![pb::Point {
            id: 0,
            vector: d.train[0].clone(),
            label: d.train_labels[0].clone(),
            ..Default::default()
        }],
    )
    .await?;
    let t = Instant::now();
    c.margin(
        pb::MarginRequest {
            collection: "fmnist".into(),
            version: "v1".into(),
            threshold: None,
            lowest_n: Some(1),
            mode: 0,
        },
        None,
    )
    .await?;
    let t_margin_cold = t.elapsed().as_secs_f64();
    ingest(&mut c, "fmnist20k", &d, args.small).await?;
    let (tc20, tm20, conf20, margin20) = confusion_and_margin(&mut c, "fmnist20k").await?;
    let approx = if args.approx_n > 0 {
        Some(approximate(&mut c, args.approx_n).await?)
    } else {
        None
    };
    drop(server);

    // The seed's own numpy/scikit-learn code on the same 20k vectors.
    let tmp = tempfile::tempdir()?;
    let xs: Vec<f32> = d.train[..args.small].iter().flatten().copied().collect();
    emberdb_client::formats::write_npy_f32(&tmp.path().join("x.npy"), args.small, d.dim, &xs)?;
    let labels: Vec<f32> = d.train_labels[..args.small]
        .iter()
        .map(|l| {
            l.trim_start_matches("class-")
                .parse::<f32>()
                .unwrap_or(-1.0)
        })
        .collect();
    emberdb_client::formats::write_npy_f32(&tmp.path().join("y.npy"), args.small, 1, &labels)?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seed_numpy.py");
    let out = Command::new(&args.python)
        .arg(script)
        .arg(tmp.path().join("x.npy"))
        .arg(tmp.path().join("y.npy"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "numpy reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let f: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let (np_s, np_mib, np_acc) = (f[0], f[1], f[2]);

    let vec_mib = (d.train.len() * d.dim * 4) as f64 / 1048576.0;
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()?.get()
    );
    println!("\n## Exact Confusion + Margin, Fashion-MNIST train (60,000 x 784), through gRPC");
    println!(
        "Confusion {tc:.1} s + Margin {tm:.1} s = {:.1} s; LOO 1-NN accuracy {:.4}, errors {}, concentration {:.3}",
        tc + tm,
        conf.accuracy,
        conf.errors,
        conf.concentration
    );
    println!(
        "(Margin reuses Confusion's leave-one-out pass; Margin alone after a write, cold: {t_margin_cold:.1} s)"
    );
    println!(
        "margin: mean {:.3} median {:.3} p10 {:.3}; low-margin (< {}) {} ({:.3}%)",
        margin.mean,
        margin.median,
        margin.p10,
        margin.threshold,
        margin.low_margin_count,
        margin.low_margin_fraction * 100.0
    );
    println!(
        "server RSS: {:.0} MiB loaded (this version, its graph, RocksDB), peak during evaluation {:.0} MiB = loaded + {:.0} MiB (vectors: {vec_mib:.0} MiB; bar: vectors + 1 GiB = {:.0} MiB)",
        rss_loaded as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak as f64 - rss_loaded as f64) / 1024.0,
        vec_mib + 1024.0
    );
    println!(
        "\n## n = {} against the seed's numpy/scikit-learn code",
        args.small
    );
    println!(
        "EmberDB Confusion {tc20:.2} s + Margin {tm20:.2} s = {:.2} s (accuracy {:.4}, low-margin {})",
        tc20 + tm20,
        conf20.accuracy,
        margin20.low_margin_count
    );
    println!("numpy/scikit-learn: {np_s:.2} s, peak RSS {np_mib:.0} MiB (accuracy {np_acc:.4})");
    println!(
        "speed-up {:.1}x (Confusion alone, cold: {:.1}x)",
        np_s / (tc20 + tm20),
        np_s / tc20
    );
    if let Some((n, ingest_s, build_s, eval_s, rep)) = approx {
        println!(
            "\n## Approximate mode: Confusion on {n} clustered 128-d points (HNSW M=16, built at ingest)"
        );
        println!("ingest {ingest_s:.1} s, graph complete {build_s:.1} s after the first upsert");
        println!(
            "Confusion (mode {}): {eval_s:.1} s; accuracy {:.4}; 1-NN label agreement with exact on {} sampled points: {:.4}",
            rep.mode,
            rep.accuracy,
            args.agreement_sample,
            rep.approximate_agreement.unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

/// Ingests `n` clustered points (label = cluster), waits for the graph, then
/// times Confusion in approximate mode.
async fn approximate(
    c: &mut Client,
    n: usize,
) -> anyhow::Result<(usize, f64, f64, f64, pb::ConfusionReport)> {
    let d = data::clustered(1, n, 0, 128, 100);
    emberdb_benches::create_l2_version(c, "approx", "v1", 128, 16, 100).await?;
    let started = Instant::now();
    let msgs = messages("approx", &d, n, 1000);
    drop(d);
    c.upsert_stream(futures::stream::iter(msgs)).await?;
    let ingest_s = started.elapsed().as_secs_f64();
    loop {
        let v = c.describe("approx", "v1").await?;
        if v.indexed_count == v.point_count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let build_s = started.elapsed().as_secs_f64();
    let t = Instant::now();
    let rep = c
        .confusion(
            pb::ConfusionRequest {
                collection: "approx".into(),
                version: "v1".into(),
                top_pairs: Some(5),
                mode: pb::EvalMode::Approximate as i32,
            },
            Some(Duration::from_secs(900)),
        )
        .await?;
    Ok((n, ingest_s, build_s, t.elapsed().as_secs_f64(), rep))
}
