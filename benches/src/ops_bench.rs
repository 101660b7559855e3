//! `ember-ops-bench`: the model-version operations through gRPC against a real
//! server process: Drift on 2 × 100,000 × 128 points, CompareVersions on 50,000
//! shared ids × 128, Search p99 under load (searches plus a steady writer) with and
//! without monitors running, and Search p99 on Fashion-MNIST with and without CheckConsistency
//! running (A/B/A phases in one run, so each ratio is measured on the same noisy machine).

use emberdb_benches::data;
use emberdb_benches::server::Server;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use emberdb_client::{Client, pb};

#[derive(Debug, Parser)]
struct Args {
    /// Points per side of the Drift benchmark.
    #[arg(long, default_value_t = 100_000)]
    drift_n: usize,
    /// Shared ids of the CompareVersions benchmark.
    #[arg(long, default_value_t = 50_000)]
    canary_n: usize,
    /// Seconds of search load per phase of the monitor benchmark.
    #[arg(long, default_value_t = 20)]
    load_s: u64,
    /// Concurrent search clients.
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// Phases with monitors (each between two phases without).
    #[arg(long, default_value_t = 3)]
    monitor_rounds: usize,
    /// Monitor interval while under load.
    #[arg(long, default_value_t = 1)]
    monitor_interval_s: u32,
    /// Monitors running in the "with" phases: the first on the searched version (v1, drift
    /// against v2), the second on v2.
    #[arg(long, default_value_t = 1)]
    monitors: usize,
    /// Points per second a writer overwrites in the searched version during every phase
    /// (batches of 50; 0 = no writer).
    #[arg(long, default_value_t = 500)]
    write_rate: u32,
    /// Skip parts: any of drift, canary, monitors, consistency.
    #[arg(long)]
    skip: Vec<String>,
    /// Fashion-MNIST folder (Debian package dataset-fashion-mnist), for the consistency part.
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    fashion_dir: std::path::PathBuf,
    /// Phases with CheckConsistency running (each between two idle phases).
    #[arg(long, default_value_t = 3)]
    consistency_rounds: usize,
}

/// Streams `d` into collection/version with ids 0.., optionally shifting every vector by `shift`.
async fn ingest(
    c: &mut Client,
    col: &str,
    ver: &str,
    d: &data::Dataset,
    shift: f32,
) -> anyhow::Result<()> {
    emberdb_benches::create_l2_version(c, col, ver, d.dim, 16, 100).await?;
    let msgs: Vec<pb::UpsertRequest> = (0..d.train.len())
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(|ids| pb::UpsertRequest {
            collection: col.into(),
            version: ver.into(),
            points: ids
                .iter()
                .map(|&i| pb::Point {
                    id: i as u64,
                    vector: d.train[i].iter().map(|x| x + shift).collect(),
                    label: d.train_labels[i].clone(),
                    ..Default::default()
                })
                .collect(),
        })
        .collect();
    c.upsert_stream(futures::stream::iter(msgs)).await?;
    Ok(())
}

async fn wait_indexed(c: &mut Client, col: &str, ver: &str) -> anyhow::Result<()> {
    loop {
        let v = c.describe(col, ver).await?;
        if v.indexed_count == v.point_count {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `f` three times; returns the sorted times in seconds and the last result.
async fn three_runs<T, F, Fut>(mut f: F) -> anyhow::Result<(Vec<f64>, T)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let t = Instant::now();
        last = Some(f().await?);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((times, last.expect("three runs")))
}

/// "median M s (runs [a, b, c])" of `three_runs`' sorted times, to two decimals.
fn median_and_runs(times: &[f64]) -> String {
    let runs: Vec<f64> = times.iter().map(|t| (t * 100.0).round() / 100.0).collect();
    format!("median {:.2} s (runs {runs:?})", times[times.len() / 2])
}

/// Closed-loop search load on `target` (collection, version) from `clients` connections for
/// `secs`, beside a writer that overwrites random points of it at `write_rate` points/s (the
/// version's size stays the same); returns (p50, p99, QPS, points written).
async fn load(
    addr: &str,
    target: (&'static str, &'static str),
    d: Arc<data::Dataset>,
    clients: usize,
    secs: u64,
    write_rate: u32,
) -> anyhow::Result<(f64, f64, f64, u64)> {
    let (col, ver) = target;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut c = Client::connect(addr.to_string()).await?;
        let (stop, d) = (stop.clone(), d.clone());
        tokio::spawn(async move {
            const BATCH: u32 = 50;
            let mut written = 0u64;
            if write_rate == 0 {
                return anyhow::Ok(written);
            }
            let mut tick = tokio::time::interval(Duration::from_secs_f64(
                f64::from(BATCH) / f64::from(write_rate),
            ));
            let mut next = 0x9e37_79b9_7f4a_7c15u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let points = (0..BATCH)
                    .map(|_| {
                        next = next.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        let i = (next >> 33) as usize % d.train.len();
                        pb::Point {
                            id: i as u64,
                            vector: d.train[i].clone(),
                            label: d.train_labels[i].clone(),
                            ..Default::default()
                        }
                    })
                    .collect();
                written += c.upsert(col, ver, points).await?;
            }
            anyhow::Ok(written)
        })
    };
    let mut tasks = Vec::new();
    for t in 0..clients {
        let mut c = Client::connect(addr.to_string()).await?;
        let (stop, d) = (stop.clone(), d.clone());
        tasks.push(tokio::spawn(async move {
            let queries = &d.queries;
            let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
            let mut i = t * 7919;
            while !stop.load(Ordering::Relaxed) {
                let q = queries[i % queries.len()].clone();
                i += 1;
                let started = Instant::now();
                c.search(col, ver, q, 10, Default::default()).await?;
                h.record(started.elapsed().as_micros() as u64).ok();
            }
            anyhow::Ok(h)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = hdrhistogram::Histogram::<u64>::new(3)?;
    for t in tasks {
        all.add(t.await??)?;
    }
    let written = writer.await??;
    Ok((
        all.value_at_quantile(0.5) as f64,
        all.value_at_quantile(0.99) as f64,
        all.len() as f64 / secs as f64,
        written,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (server, mut c) = Server::start(&["--metrics-addr", "off"]).await?;
    let addr = server.addr.clone();
    let skip = |what: &str| args.skip.iter().any(|s| s == what);

    if !skip("drift") {
        let base = data::clustered(1, args.drift_n, 0, 128, 100);
        ingest(&mut c, "drift", "v1", &base, 0.0).await?;
        drop(base);
        let cur = data::clustered(2, args.drift_n, 0, 128, 100);
        ingest(&mut c, "drift", "v2", &cur, 0.02).await?;
        drop(cur);
        wait_indexed(&mut c, "drift", "v1").await?;
        wait_indexed(&mut c, "drift", "v2").await?;
        let drift_req = pb::DriftRequest {
            collection: "drift".into(),
            baseline: Some(pb::Window {
                version: "v1".into(),
                from_ms: None,
                to_ms: None,
            }),
            current: Some(pb::Window {
                version: "v2".into(),
                from_ms: None,
                to_ms: None,
            }),
            ..Default::default()
        };
        let (times, r) = three_runs(|| {
            let (mut c, req) = (c.clone(), drift_req.clone());
            async move { Ok(c.drift(req, Some(Duration::from_secs(600))).await?) }
        })
        .await?;
        println!(
            "drift: 2 x {} x 128: {}; score {:.3} drifted {} ks_share {:.3} mmd2 {:.5} primary {:?}",
            args.drift_n,
            median_and_runs(&times),
            r.drift_score,
            r.drifted,
            r.ks_drifted_share,
            r.mmd2,
            r.fingerprint.map(|f| f.primary)
        );
        c.drop_collection("drift").await?;
    }

    // The canary collection also serves the monitor benchmark's search load.
    let d = data::clustered(3, args.canary_n, 5000, 128, 100);
    if !skip("canary") || !skip("monitors") {
        ingest(&mut c, "canary", "v1", &d, 0.0).await?;
        let cand = data::clustered(4, args.canary_n, 0, 128, 100);
        ingest(&mut c, "canary", "v2", &cand, 0.0).await?;
        wait_indexed(&mut c, "canary", "v1").await?;
        wait_indexed(&mut c, "canary", "v2").await?;
    }
    if !skip("canary") {
        let req = pb::CompareVersionsRequest {
            collection: "canary".into(),
            baseline_version: "v1".into(),
            candidate_version: "v2".into(),
            k: Some(10),
            ..Default::default()
        };
        let (times, r) = three_runs(|| {
            let (mut c, req) = (c.clone(), req.clone());
            async move {
                Ok(c.compare_versions(req, Some(Duration::from_secs(600)))
                    .await?)
            }
        })
        .await?;
        println!(
            "canary: {} shared ids x 128: {}; verdict {:?} p@1 {:.4} -> {:.4} recall {:.3} overlap {:.3}",
            r.shared_ids,
            median_and_runs(&times),
            r.verdict(),
            r.baseline.as_ref().map_or(0.0, |b| b.precision_at_1),
            r.candidate.as_ref().map_or(0.0, |b| b.precision_at_1),
            r.candidate.as_ref().map_or(0.0, |b| b.ann_recall_at_k),
            r.neighbor_overlap
        );
    }
    if !skip("monitors") {
        // Alternating phases (off, on, off, on, ..., off) so drift of the machine's speed
        // hits both sides; the ratio compares the medians of the phases' p99s.
        let d = Arc::new(d);
        let monitored: Vec<(&str, &str)> = [("v1", "v2"), ("v2", "v1")]
            .into_iter()
            .take(args.monitors)
            .collect();
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for phase in 0..(2 * args.monitor_rounds + 1) {
            let monitors = phase % 2 == 1;
            if monitors {
                for &(ver, baseline) in &monitored {
                    c.set_monitor(pb::MonitorSpec {
                        collection: "canary".into(),
                        version: ver.into(),
                        interval_s: args.monitor_interval_s,
                        k: 10,
                        sample_size: 200,
                        baseline: Some(pb::Window {
                            version: baseline.into(),
                            from_ms: None,
                            to_ms: None,
                        }),
                        record_bundles: false,
                    })
                    .await?;
                }
            }
            let (p50, p99, qps, written) = load(
                &addr,
                ("canary", "v1"),
                d.clone(),
                args.clients,
                args.load_s,
                args.write_rate,
            )
            .await?;
            let runs: Vec<f64> = if monitors {
                c.list_monitors("canary")
                    .await?
                    .iter()
                    .map(|m| m.last_duration_ms.round())
                    .collect()
            } else {
                Vec::new()
            };
            println!(
                "phase {phase} ({}): p50 {p50} us, p99 {p99} us, {qps:.0} QPS, {written} points written{}",
                if monitors {
                    format!(
                        "{} monitor(s) every {} s",
                        monitored.len(),
                        args.monitor_interval_s
                    )
                } else {
                    "no monitors".into()
                },
                if monitors {
                    format!("; monitor runs take {runs:?} ms")
                } else {
                    String::new()
                }
            );
            if monitors {
                for &(ver, _) in &monitored {
                    c.delete_monitor("canary", ver).await?;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                on.push(p99);
            } else {
                off.push(p99);
            }
        }
        let (m_on, m_off) = (median(&mut on), median(&mut off));
        println!(
            "monitors: median p99 {m_on:.0} us with ({} phases) vs {m_off:.0} us without ({} phases) -> ratio {:.3}",
            on.len(),
            off.len(),
            m_on / m_off
        );
    }
    if !skip("consistency") {
        consistency_under_load(&args, &addr, &mut c).await?;
    }
    drop(server);
    Ok(())
}

/// Search p99 on Fashion-MNIST (60,000 x 784) while CheckConsistency runs back to back, against
/// idle phases (A/B/A, the ratio of the phases' median p99s).
async fn consistency_under_load(args: &Args, addr: &str, c: &mut Client) -> anyhow::Result<()> {
    let d = Arc::new(data::fashion_mnist(&args.fashion_dir)?);
    ingest(c, "fashion", "v1", &d, 0.0).await?;
    wait_indexed(c, "fashion", "v1").await?;
    let (mut idle, mut busy) = (Vec::new(), Vec::new());
    for phase in 0..(2 * args.consistency_rounds + 1) {
        let checking = phase % 2 == 1;
        let stop = Arc::new(AtomicBool::new(false));
        let checker = {
            let (mut c, stop) = (c.clone(), stop.clone());
            tokio::spawn(async move {
                let mut times = Vec::new();
                while checking && !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = c.check_consistency("fashion", "v1", false).await?;
                    anyhow::ensure!(r.consistent, "inconsistent: {:?}", r.findings);
                    times.push(t.elapsed().as_secs_f64());
                }
                anyhow::Ok(times)
            })
        };
        let (p50, p99, qps, _) = load(
            addr,
            ("fashion", "v1"),
            d.clone(),
            args.clients,
            args.load_s,
            0,
        )
        .await?;
        stop.store(true, Ordering::Relaxed);
        let checks = checker.await??;
        println!(
            "consistency phase {phase} ({}): p50 {p50} us, p99 {p99} us, {qps:.0} QPS{}",
            if checking {
                "CheckConsistency back to back"
            } else {
                "idle"
            },
            if checking {
                format!(
                    "; {} checks, median {:.2} s",
                    checks.len(),
                    median(&mut checks.clone())
                )
            } else {
                String::new()
            }
        );
        if checking {
            busy.push(p99)
        } else {
            idle.push(p99)
        }
    }
    let (b, i) = (median(&mut busy), median(&mut idle));
    println!(
        "consistency: median p99 {b:.0} us while checking ({} phases) vs {i:.0} us idle ({} phases) -> ratio {:.3}",
        busy.len(),
        idle.len(),
        b / i
    );
    c.drop_collection("fashion").await?;
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
