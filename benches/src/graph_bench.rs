//! `ember-graph-bench`: the HNSW layer in process, against hnswlib on the same data.
//!
//! For each data set: ingest into an `Engine` (real RocksDB in a temp dir), time until every
//! point is in the graph, count unreachable live points (CheckConsistency) after the build, after
//! 30 % overwrites and the compaction they trigger, and after a restart; sweep `ef` for recall@10
//! against exact search and single-thread QPS, and batch QPS (100 queries per call) at recall
//! 0.95 / 0.99. hnswlib (`benches/hnswlib_ref.py`) builds the same data with the same M and
//! ef_construction on the same number of threads and answers the same queries, so every ratio
//! comes from one run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use emberdb_benches::data::{self, Dataset};
use emberdb_storage::{Engine, EngineConfig, Metric, PointInput, SearchParams, VersionSpec};

#[derive(Debug, Parser)]
struct Args {
    /// Data sets, comma-separated: mixture, twins, clustered, fashion, fashion-pca64.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mixture,twins,fashion,fashion-pca64"
    )]
    datasets: Vec<String>,
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    fashion_dir: PathBuf,
    /// Points of the synthetic sets (mixture: a tenth of it).
    #[arg(long, default_value_t = 100_000)]
    n: usize,
    /// Queries per data set.
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    #[arg(long, default_value_t = 16)]
    m: u32,
    #[arg(long, default_value_t = 200)]
    ef_construction: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// ef grid searched by both indexes.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,12,14,16,20,24,28,32,40,48,56,64,80,96,128,160,192,256,384,512"
    )]
    ef: Vec<usize>,
    /// Python with numpy and hnswlib.
    #[arg(long, default_value = "~/.cache/emberdb/venv/bin/python")]
    python: String,
    /// Skip the overwrite/compaction and restart phases.
    #[arg(long)]
    quick: bool,
    /// Timed passes over the queries per ef (the best counts).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

const K: usize = 10;

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let python = a
        .python
        .replacen('~', &std::env::var("HOME").unwrap_or_default(), 1);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hnswlib_ref.py");
    println!(
        "ember-graph-bench: M={} ef_construction={}, {} cores",
        a.m,
        a.ef_construction,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for name in &a.datasets {
        let tmp = tempfile::tempdir()?;
        let d = match name.as_str() {
            "mixture" => data::mixture(a.seed, a.n / 10, a.queries, 32, 8),
            "twins" => data::twins(a.seed, a.n, a.queries, 128, 50),
            "clustered" => data::clustered(a.seed, a.n, a.queries, 128, 100),
            "fashion" | "fashion-pca64" => {
                let mut d = data::fashion_mnist(&a.fashion_dir)?;
                d.queries.truncate(a.queries);
                if name == "fashion-pca64" {
                    data::write_npy_f32(&tmp.path().join("train.npy"), &d.train)?;
                    data::write_npy_f32(&tmp.path().join("queries.npy"), &d.queries)?;
                    run_py(
                        &python,
                        &script,
                        &["pca", &tmp.path().display().to_string()],
                    )?;
                    d.train = data::read_npy_f32(&tmp.path().join("train_pca.npy"))?;
                    d.queries = data::read_npy_f32(&tmp.path().join("queries_pca.npy"))?;
                    d.dim = 64;
                    d.name = "fashion-mnist-pca64".into();
                }
                d
            }
            other => anyhow::bail!("unknown data set {other}"),
        };
        bench(&a, &python, &script, &d, tmp.path())?;
    }
    Ok(())
}

fn run_py(python: &str, script: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(python).arg(script).args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "hnswlib_ref.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

struct Row {
    ef: usize,
    recall: f64,
    qps1: f64,
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process from /proc (clock ticks of 100 Hz on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn unreachable(e: &Engine) -> anyhow::Result<(usize, usize)> {
    let c = e.check_consistency("g", "v", false)?;
    Ok((c.unreachable.len(), c.stored_not_indexed.len()))
}

fn bench(a: &Args, python: &str, script: &Path, d: &Dataset, tmp: &Path) -> anyhow::Result<()> {
    println!(
        "\n## {} ({} × {}, {} queries)",
        d.name,
        d.train.len(),
        d.dim,
        d.queries.len()
    );
    let dir = tmp.join("data");
    let engine = Engine::open(EngineConfig::new(&dir))?;
    engine.create_version(
        "g",
        "v",
        VersionSpec {
            dim: d.dim as u32,
            metric: Some(Metric::L2),
            m: a.m,
            ef_construction: a.ef_construction,
        },
    )?;
    let points = |rows: &[Vec<f32>], from: usize| -> Vec<PointInput> {
        rows.iter()
            .enumerate()
            .map(|(i, v)| PointInput {
                id: (from + i) as u64,
                vector: v.clone(),
                ..Default::default()
            })
            .collect()
    };
    let t = Instant::now();
    let cpu0 = cpu_seconds();
    for (i, chunk) in d.train.chunks(1000).enumerate() {
        engine.upsert("g", "v", &points(chunk, i * 1000))?;
    }
    let ingest = t.elapsed();
    let t_idx = Instant::now();
    anyhow::ensure!(
        engine.wait_indexed("g", "v", Duration::from_secs(3600))?,
        "index timeout"
    );
    let to_indexed = t_idx.elapsed();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "ingest {:.1} s ({:.0} points/s); last upsert → fully indexed {:.1} s; upload+build CPU {:.1} s",
        ingest.as_secs_f64(),
        d.train.len() as f64 / ingest.as_secs_f64(),
        to_indexed.as_secs_f64(),
        cpu
    );
    let (orphans, lost) = unreachable(&engine)?;
    println!(
        "after build: {orphans} unreachable live points, {lost} below the watermark not in the graph"
    );

    // Ground truth through the engine's exact path.
    let truth: Vec<Vec<u64>> = d
        .queries
        .iter()
        .map(|q| {
            let p = SearchParams {
                k: K,
                ef: K,
                exact: true,
                filter: None,
            };
            Ok(engine
                .search("g", "v", q, p)?
                .into_iter()
                .map(|h| h.id)
                .collect())
        })
        .collect::<anyhow::Result<_>>()?;
    let ours = sweep(&engine, d, &truth, &a.ef, a.repeat)?;

    // hnswlib on the same rows and queries.
    data::write_npy_f32(&tmp.join("train.npy"), &d.train)?;
    data::write_npy_f32(&tmp.join("queries.npy"), &d.queries)?;
    data::write_npy_i64(&tmp.join("truth.npy"), &truth)?;
    let efs =
        a.ef.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string();
    let out = run_py(
        python,
        script,
        &[
            "build-search",
            &tmp.display().to_string(),
            "--m",
            &a.m.to_string(),
            "--ef-construction",
            &a.ef_construction.to_string(),
            "--threads",
            &threads,
            "--ef",
            &efs,
        ],
    )?;
    let r: serde_json::Value = serde_json::from_str(&out)?;
    let href: Vec<(usize, f64, f64, f64)> = r["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            (
                x["ef"].as_u64().unwrap_or(0) as usize,
                x["recall"].as_f64().unwrap_or(0.0),
                x["qps1"].as_f64().unwrap_or(0.0),
                x["qps_batch"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    let h_build = r["build_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "hnswlib build {:.1} s ({:.1} CPU-s) → time to indexed ratio {:.2}",
        h_build,
        r["build_cpu_s"].as_f64().unwrap_or(f64::NAN),
        to_indexed.as_secs_f64() / h_build
    );
    println!(
        "\n| ef | EmberDB recall@10 | EmberDB QPS (1 thread) | hnswlib recall@10 | hnswlib QPS (1 thread) |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for (o, h) in ours.iter().zip(&href) {
        println!(
            "| {} | {:.4} | {:.0} | {:.4} | {:.0} |",
            o.ef, o.recall, o.qps1, h.1, h.2
        );
    }
    for target in [0.95, 0.99] {
        let o = ours.iter().find(|r| r.recall >= target);
        let h = href.iter().find(|r| r.1 >= target);
        match (o, h) {
            (Some(o), Some(h)) => {
                let batch = batch_qps(&engine, d, o.ef)?;
                println!(
                    "recall ≥ {target}: ef {} vs hnswlib {} (ratio {:.2}); 1-thread QPS {:.0} vs {:.0} ({:.2}×); \
                     batch QPS (100/call) {:.0} vs {:.0} ({:.2}×)",
                    o.ef,
                    h.0,
                    o.ef as f64 / h.0 as f64,
                    o.qps1,
                    h.2,
                    o.qps1 / h.2,
                    batch,
                    h.3,
                    batch / h.3
                );
            }
            _ => println!(
                "recall ≥ {target}: EmberDB ef {:?}, hnswlib ef {:?} (not reached in the grid)",
                o.map(|r| r.ef),
                h.map(|r| r.0)
            ),
        }
    }
    if a.quick {
        return Ok(());
    }

    // 30 % overwrites (each with its own vector moved a little), then the compaction they trigger.
    let n = d.train.len();
    let over: Vec<PointInput> = (0..n)
        .filter(|i| i % 10 < 3)
        .map(|i| PointInput {
            id: i as u64,
            vector: d.train[i].iter().map(|x| x * 1.001 + 1e-3).collect(),
            ..Default::default()
        })
        .collect();
    for chunk in over.chunks(1000) {
        engine.upsert("g", "v", chunk)?;
    }
    anyhow::ensure!(
        engine.wait_indexed("g", "v", Duration::from_secs(3600))?,
        "index timeout"
    );
    let before = engine
        .stats()
        .rebuilds_dead
        .load(std::sync::atomic::Ordering::Relaxed);
    let t = Instant::now();
    while engine
        .stats()
        .rebuilds_dead
        .load(std::sync::atomic::Ordering::Relaxed)
        == before
        && t.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::ensure!(
        engine.wait_indexed("g", "v", Duration::from_secs(3600))?,
        "index timeout"
    );
    let (orphans, lost) = unreachable(&engine)?;
    println!(
        "\nafter 30 % overwrites ({} compactions): {orphans} unreachable, {lost} not in the graph",
        engine
            .stats()
            .rebuilds_dead
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    engine.persist_index("g", "v")?;
    engine.close()?;
    drop(engine);
    let t = Instant::now();
    let engine = Engine::open(EngineConfig::new(&dir))?;
    let info = engine.describe_version("g", "v")?;
    println!(
        "restart: reopened in {:.2} s, {} of {} indexed on open",
        t.elapsed().as_secs_f64(),
        info.indexed_count,
        info.point_count
    );
    anyhow::ensure!(
        engine.wait_indexed("g", "v", Duration::from_secs(3600))?,
        "index timeout"
    );
    let (orphans, lost) = unreachable(&engine)?;
    println!("after restart: {orphans} unreachable, {lost} not in the graph");
    Ok(())
}

fn sweep(
    e: &Engine,
    d: &Dataset,
    truth: &[Vec<u64>],
    efs: &[usize],
    repeat: usize,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &ef in efs {
        let mut hits = 0usize;
        let mut best = 0f64;
        for rep in 0..repeat.max(1) {
            let t = Instant::now();
            for (q, tr) in d.queries.iter().zip(truth) {
                let p = SearchParams {
                    k: K,
                    ef,
                    exact: false,
                    filter: None,
                };
                let found = e.search("g", "v", q, p)?;
                if rep == 0 {
                    hits += found.iter().filter(|h| tr.contains(&h.id)).count();
                }
            }
            best = best.max(d.queries.len() as f64 / t.elapsed().as_secs_f64());
        }
        let recall = hits as f64 / (truth.len() * K) as f64;
        rows.push(Row {
            ef,
            recall,
            qps1: best,
        });
        if recall >= 0.999 {
            // Past the last target: the rest of the grid tells nothing new.
            break;
        }
    }
    Ok(rows)
}

fn batch_qps(e: &Engine, d: &Dataset, ef: usize) -> anyhow::Result<f64> {
    let mut best = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        for chunk in d.queries.chunks(100) {
            let p = SearchParams {
                k: K,
                ef,
                exact: false,
                filter: None,
            };
            e.search_batch("g", "v", chunk, p)?;
        }
        best = best.max(d.queries.len() as f64 / t.elapsed().as_secs_f64());
    }
    Ok(best)
}
