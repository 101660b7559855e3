//! `ember-bundle-bench`: incident bundles of Fashion-MNIST's 60,000 × 784 train set held as one
//! version whose second half had its exposure raised (every pixel + 25: a camera change). The
//! baseline window is the first 30,000 images, the current one the last 30,000. Times
//! ExportBundle through the real server over gRPC (window snapshots, points read back from
//! RocksDB, Drift and exact leave-one-out Confusion and Margin of the bundled points, packing and
//! streaming the `.tar.gz`) at two caps, reports the bundle's size, and times `ember bundle
//! replay` of the default-cap bundle (a throwaway `emberdb`, import of both windows, the three
//! reports again and the comparison). Measured once the version is fully indexed. Medians of
//! `--rounds`.

use std::time::Instant;

use clap::Parser;
use emberdb_benches::median;
use emberdb_client::pb;
use emberdb_tests::TestServer;

#[derive(Debug, Parser)]
struct Args {
    /// Fashion-MNIST folder (Debian package dataset-fashion-mnist).
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    fashion_dir: std::path::PathBuf,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data = emberdb_benches::data::fashion_mnist(&args.fashion_dir)?;
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    c.create_version("fashion", "v1", data.dim as u32, pb::Metric::L2)
        .await?;
    let half = data.train.len() / 2;
    let points: Vec<pb::Point> = data
        .train
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let shift = if i < half { 0.0 } else { 25.0 };
            pb::Point {
                id: i as u64,
                vector: v.iter().map(|x| x + shift).collect(),
                label: data.train_labels[i].clone(),
                metadata: Default::default(),
                timestamp_ms: i64::from(i >= half),
            }
        })
        .collect();
    for chunk in points.chunks(2000) {
        c.upsert("fashion", "v1", chunk.to_vec()).await?;
    }
    // Measured on a quiet server: the graph build is over.
    emberdb_tests::wait_ready(&mut c, "fashion", "v1").await?;
    let tmp = tempfile::tempdir()?;
    let window = |from, to| {
        Some(pb::Window {
            version: "v1".into(),
            from_ms: Some(from),
            to_ms: Some(to),
        })
    };
    let mut default_bundle = None;
    for cap in [10_000u32, 30_000] {
        let mut times = Vec::new();
        let mut size = 0;
        for round in 0..args.rounds {
            let out = tmp.path().join(format!("b-{cap}-{round}.tar.gz"));
            let req = pb::ExportBundleRequest {
                collection: "fashion".into(),
                current: window(1, 2),
                baseline: window(0, 1),
                include_points: true,
                max_points: Some(cap),
                ..Default::default()
            };
            let t = Instant::now();
            size = c.export_bundle(req, None, &out).await?;
            times.push(t.elapsed().as_secs_f64());
            if cap == 10_000 {
                default_bundle = Some(out);
            }
        }
        println!(
            "ExportBundle, {cap} points per window (784-d, labelled): {:.2} s (median of {}: {:?}), {:.1} MiB",
            median(times.clone()),
            args.rounds,
            times,
            size as f64 / f64::from(1 << 20)
        );
    }
    let bundle = default_bundle.ok_or_else(|| anyhow::anyhow!("--rounds must be at least 1"))?;
    let ember = std::env::current_exe()?.with_file_name("ember");
    let mut times = Vec::new();
    for _ in 0..args.rounds {
        let t = Instant::now();
        let out = std::process::Command::new(&ember)
            .arg("bundle")
            .arg("replay")
            .arg(&bundle)
            .output()?;
        times.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(
            out.status.success(),
            "replay failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!(
        "ember bundle replay of the 10,000-point bundle: {:.2} s (median of {}: {:?}), every figure reproduced",
        median(times.clone()),
        args.rounds,
        times
    );
    server.stop().await?;
    Ok(())
}
