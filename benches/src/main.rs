//! `ember-bench`: end-to-end benchmark of EmberDB on one machine.
//!
//! For each dataset: ingest through `UpsertStream`, time until the graph holds
//! every point, RSS of the server process, single-client `Search` QPS and
//! p50/p99 at several `ef` with recall@10 against exact search, `SearchBatch`
//! throughput, then the same index searched in-process (the graph reloaded from
//! its committed generation) to measure the server path's overhead, and exact
//! search against a plain scalar loop. All ratios come from one run.

use emberdb_benches::data;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use emberdb_client::{Client, SearchOptions, pb};
use emberdb_storage::{Engine, EngineConfig, SearchParams};
use hdrhistogram::Histogram;

#[derive(Debug, Parser)]
struct Args {
    /// Which datasets: fashion, clustered, or both.
    #[arg(long, default_value = "both")]
    dataset: String,
    /// Fashion-MNIST folder (Debian package dataset-fashion-mnist).
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    fashion_dir: PathBuf,
    /// Queries per single-client measurement.
    #[arg(long, default_value_t = 5000)]
    queries: usize,
    /// Points of the clustered set.
    #[arg(long, default_value_t = 100_000)]
    clustered_n: usize,
    /// ef values to sweep.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,16,24,32,48,64,96,128"
    )]
    ef: Vec<u32>,
    /// HNSW M.
    #[arg(long, default_value_t = 16)]
    m: u32,
    /// HNSW ef_construction.
    #[arg(long, default_value_t = 200)]
    ef_construction: u32,
    /// Points per UpsertStream message.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// The server's `--graph-park-after-s` (its default is 30).
    #[arg(long, default_value_t = 30.0)]
    park_after_s: f64,
}

/// `GET /metrics` on loopback, the value of one unlabelled sample (NaN when absent).
fn scrape(port: u16, name: &str) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return f64::NAN;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `emberdb` on `dir` and waits until it answers.
async fn start_server(
    dir: &std::path::Path,
    park_after_s: f64,
) -> anyhow::Result<(ServerProc, Client, u16)> {
    let (port, metrics_port) = (free_port()?, free_port()?);
    let child = Command::new(server_bin()?)
        .args(["--data-dir", dir.to_str().unwrap_or(".")])
        .args(["--grpc-addr", &format!("127.0.0.1:{port}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args(["--graph-park-after-s", &park_after_s.to_string()])
        .env("EMBERDB_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let server = ServerProc(child);
    let addr = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(600);
    let c = loop {
        if let Ok(mut c) = Client::connect(addr.clone()).await
            && c.list_collections().await.is_ok()
        {
            break c;
        }
        anyhow::ensure!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Ok((server, c, metrics_port))
}

struct ServerProc(Child);

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn server_bin() -> anyhow::Result<PathBuf> {
    let p = std::env::current_exe()?.with_file_name("emberdb");
    anyhow::ensure!(
        p.exists(),
        "{} not built: cargo build --release -p emberdb-server",
        p.display()
    );
    Ok(p)
}

fn recall(got: &[u64], truth: &[u64]) -> f64 {
    got.iter().filter(|id| truth.contains(id)).count() as f64 / truth.len().max(1) as f64
}

struct Row {
    ef: u32,
    recall: f64,
    qps: f64,
    p50_us: u64,
    p99_us: u64,
    inproc_qps: f64,
    inproc_recall: f64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut sets = Vec::new();
    if args.dataset == "fashion" || args.dataset == "both" {
        sets.push(data::fashion_mnist(&args.fashion_dir)?);
    }
    if args.dataset == "clustered" || args.dataset == "both" {
        sets.push(data::clustered(42, args.clustered_n, 10_000, 128, 100));
    }
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism()?.get(),
        cpu_model()
    );
    for d in sets {
        bench_dataset(&args, d).await?;
    }
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default()
}

async fn bench_dataset(args: &Args, d: data::Dataset) -> anyhow::Result<()> {
    println!(
        "\n## {} (n={}, dim={}, queries={})",
        d.name,
        d.train.len(),
        d.dim,
        d.queries.len().min(args.queries)
    );
    let dir = tempfile::tempdir()?;
    let (server, mut c, metrics_port) = start_server(dir.path(), args.park_after_s).await?;
    let pid = server.0.id();
    let (col, ver) = ("bench", "v1");
    emberdb_benches::create_l2_version(&mut c, col, ver, d.dim, args.m, args.ef_construction)
        .await?;

    // Ingest.
    let started = Instant::now();
    let msgs: Vec<pb::UpsertRequest> = d
        .train
        .chunks(args.batch)
        .enumerate()
        .map(|(b, chunk)| pb::UpsertRequest {
            collection: col.into(),
            version: ver.into(),
            points: chunk
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let id = (b * args.batch + i) as u64;
                    pb::Point {
                        id,
                        vector: v.clone(),
                        label: d.train_labels[id as usize].clone(),
                        ..Default::default()
                    }
                })
                .collect(),
        })
        .collect();
    let n = c.upsert_stream(futures::stream::iter(msgs)).await?;
    let ingest = started.elapsed();
    loop {
        let v = c.describe(col, ver).await?;
        if v.indexed_count == v.point_count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = started.elapsed();
    let rss = rss_mib(pid);
    // Once committed and idle, hnsw_rs's own graph leaves memory.
    let park_wait = Instant::now();
    let mut parked = false;
    while args.park_after_s >= 0.0
        && park_wait.elapsed() < Duration::from_secs_f64(args.park_after_s + 120.0)
    {
        if scrape(metrics_port, "emberdb_index_graph_parks_total") >= 1.0 {
            parked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss_parked = rss_mib(pid);
    println!(
        "ingest: {n} points in {:.2} s = {:.0} points/s (durable, UpsertStream, batches of {})",
        ingest.as_secs_f64(),
        n as f64 / ingest.as_secs_f64(),
        args.batch
    );
    println!(
        "index build: all points in the graph {:.1} s after the first upsert ({:.0} points/s)",
        ready.as_secs_f64(),
        n as f64 / ready.as_secs_f64()
    );
    let raw_mib = (d.train.len() * d.dim * 4) as f64 / 1048576.0;
    // The bar: 1.6 × (raw f32 + int8 codes + 4 bytes × 2M layer-0 links per point) + 150 MiB.
    let bar = 1.6
        * (raw_mib + raw_mib / 4.0 + (d.train.len() * 4 * 2 * args.m as usize) as f64 / 1048576.0)
        + 150.0;
    println!(
        "server RSS: {rss:.0} MiB once indexed (hnsw_rs graph resident), {rss_parked:.0} MiB {} (raw vectors: {raw_mib:.0} MiB; bar {bar:.0} MiB)",
        if parked {
            "after the graph was parked"
        } else {
            "(graph never parked)"
        },
    );

    // Ground truth through the exact path, on both cores.
    let queries: Vec<Vec<f32>> = d.queries.iter().take(args.queries).cloned().collect();
    let t = Instant::now();
    let mut truth: Vec<Vec<u64>> = Vec::new();
    for chunk in queries.chunks(100) {
        let r = c
            .search_batch(
                col,
                ver,
                chunk.to_vec(),
                10,
                SearchOptions {
                    exact: true,
                    ..Default::default()
                },
            )
            .await?;
        truth.extend(
            r.into_iter()
                .map(|hits| hits.into_iter().map(|h| h.id).collect::<Vec<u64>>()),
        );
    }
    let exact_batch_qps = queries.len() as f64 / t.elapsed().as_secs_f64();

    // Single client, one query at a time.
    let mut rows = Vec::new();
    for &ef in &args.ef {
        let mut h = Histogram::<u64>::new(3)?;
        let mut rsum = 0.0;
        let t = Instant::now();
        for (q, tr) in queries.iter().zip(&truth) {
            let s = Instant::now();
            let hits = c
                .search(
                    col,
                    ver,
                    q.clone(),
                    10,
                    SearchOptions {
                        ef,
                        ..Default::default()
                    },
                )
                .await?;
            h.record(s.elapsed().as_micros() as u64)?;
            rsum += recall(&hits.iter().map(|x| x.id).collect::<Vec<_>>(), tr);
        }
        rows.push(Row {
            ef,
            recall: rsum / queries.len() as f64,
            qps: queries.len() as f64 / t.elapsed().as_secs_f64(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            inproc_qps: f64::NAN,
            inproc_recall: f64::NAN,
        });
    }
    // SearchBatch on both cores at the smallest ef reaching each recall target.
    let mut batch_lines = Vec::new();
    for target in [0.95, 0.99] {
        if let Some(r) = rows.iter().find(|r| r.recall >= target) {
            let t = Instant::now();
            for chunk in queries.chunks(100) {
                c.search_batch(
                    col,
                    ver,
                    chunk.to_vec(),
                    10,
                    SearchOptions {
                        ef: r.ef,
                        ..Default::default()
                    },
                )
                .await?;
            }
            batch_lines.push(format!(
                "SearchBatch (100 queries/request) at ef={} (recall {:.4}): {:.0} QPS",
                r.ef,
                r.recall,
                queries.len() as f64 / t.elapsed().as_secs_f64()
            ));
        }
    }
    drop(c);
    // Let this (single-threaded) runtime close the connection before the stop.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Graceful stop: the server commits the graph generation.
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let mut server = server;
    server.0.wait()?;

    // Restart: time until every point is served by the graph again, and RSS then.
    let t = Instant::now();
    let (server, mut c, _) = start_server(dir.path(), args.park_after_s).await?;
    loop {
        let v = c.describe(col, ver).await?;
        if v.indexed_count == v.point_count && v.point_count as usize == n as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.search(col, ver, queries[0].clone(), 10, SearchOptions::default())
        .await?;
    let restart = t.elapsed();
    println!(
        "server restart: serving every point from the graph {:.2} s after the process started; RSS {:.0} MiB",
        restart.as_secs_f64(),
        rss_mib(server.0.id())
    );
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()?;
    let mut server = server;
    server.0.wait()?;

    // In-process: the same data dir, graph reloaded (memory-mapped) from its generation.
    let t = Instant::now();
    let engine = Engine::open(EngineConfig::new(dir.path()))?;
    let reopen = t.elapsed();
    let info = engine.describe_version(col, ver)?;
    println!(
        "in-process reopen: {:.2} s, {} of {} points indexed on open",
        reopen.as_secs_f64(),
        info.indexed_count,
        info.point_count
    );
    for r in rows.iter_mut() {
        let mut rsum = 0.0;
        let t = Instant::now();
        for (q, tr) in queries.iter().zip(&truth) {
            let hits = engine.search(
                col,
                ver,
                q,
                SearchParams {
                    k: 10,
                    ef: r.ef.max(10) as usize,
                    exact: false,
                    filter: None,
                },
            )?;
            rsum += recall(&hits.iter().map(|x| x.id).collect::<Vec<_>>(), tr);
        }
        r.inproc_qps = queries.len() as f64 / t.elapsed().as_secs_f64();
        r.inproc_recall = rsum / queries.len() as f64;
    }
    // Exact search through the engine (SIMD kernel; a single query's scan is split over the
    // query pool's two threads) vs a plain scalar loop on one thread, same queries.
    let nq = 200.min(queries.len());
    let t = Instant::now();
    for q in &queries[..nq] {
        engine.search(
            col,
            ver,
            q,
            SearchParams {
                k: 10,
                ef: 10,
                exact: true,
                filter: None,
            },
        )?;
    }
    let exact_qps = nq as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut sink = 0u64;
    for q in &queries[..nq] {
        sink += scalar_top10(&d.train, q)[0];
    }
    let scalar_qps = nq as f64 / t.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    drop(engine);

    println!(
        "\n| ef | recall@10 | gRPC QPS (1 client) | p50 µs | p99 µs | in-process QPS (1 thread) | gRPC / in-process |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.4} | {:.0} | {} | {} | {:.0} | {:.2} |",
            r.ef,
            r.recall,
            r.qps,
            r.p50_us,
            r.p99_us,
            r.inproc_qps,
            r.qps / r.inproc_qps
        );
        if (r.recall - r.inproc_recall).abs() > 0.01 {
            println!("  (note: in-process recall {:.4} differs)", r.inproc_recall);
        }
    }
    println!();
    for l in batch_lines {
        println!("{l}");
    }
    println!("exact SearchBatch (ground truth, both cores): {exact_batch_qps:.0} QPS");
    println!(
        "exact search, one query at a time: {exact_qps:.1} QPS; plain scalar loop (1 thread): {scalar_qps:.1} QPS; ratio {:.1}x",
        exact_qps / scalar_qps
    );
    Ok(())
}

/// The baseline: a plain scalar loop over every vector, keeping the best 10.
fn scalar_top10(data: &[Vec<f32>], q: &[f32]) -> Vec<u64> {
    let mut best: Vec<(f32, u64)> = Vec::with_capacity(11);
    for (i, v) in data.iter().enumerate() {
        let d = emberdb_storage::distance::l2sq_scalar(v, q);
        if best.len() < 10 || d < best[best.len() - 1].0 {
            let pos = best.partition_point(|(bd, _)| *bd <= d);
            best.insert(pos, (d, i as u64));
            best.truncate(10);
        }
    }
    best.into_iter().map(|(_, i)| i).collect()
}
