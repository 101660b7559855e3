//! `ember-snapshot-bench`: snapshot and restore of Fashion-MNIST's 60,000 × 784 train set held as
//! two versions (raw pixels, and the same images scaled to [0, 1]), both fully indexed with a
//! committed generation. Times `Engine::create_backup` (checkpoint, generation links, SHA-256 of
//! every file), `restore_backup` into a fresh dir (verify, copy, verify again, move in) and the
//! restored engine's open; reports the snapshot's files and bytes beside the data dir's.
//! In process, one engine, medians of `--rounds`.

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use emberdb_benches::median;
use emberdb_storage::backup::restore_backup;
use emberdb_storage::{Engine, EngineConfig, Metric, PointInput, VersionSpec};

#[derive(Debug, Parser)]
struct Args {
    /// Fashion-MNIST folder (Debian package dataset-fashion-mnist).
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    fashion_dir: std::path::PathBuf,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |d| {
        d.flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                Ok(_) => e.metadata().map_or(0, |m| m.len()),
                Err(_) => 0,
            })
            .sum()
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data = emberdb_benches::data::fashion_mnist(&args.fashion_dir)?;
    let tmp = tempfile::tempdir()?;
    let data_dir = tmp.path().join("data");
    let e = Engine::open(EngineConfig::new(&data_dir))?;
    let spec = VersionSpec {
        dim: data.dim as u32,
        metric: Some(Metric::L2),
        m: 0,
        ef_construction: 0,
    };
    for (version, scale) in [("raw", 1.0f32), ("scaled", 1.0 / 255.0)] {
        e.create_version("fashion", version, spec)?;
        for (start, chunk) in data.train.chunks(5000).enumerate() {
            let pts: Vec<PointInput> = chunk
                .iter()
                .enumerate()
                .map(|(i, v)| PointInput {
                    id: (start * 5000 + i) as u64,
                    vector: v.iter().map(|x| x * scale).collect(),
                    label: data.train_labels[start * 5000 + i].clone(),
                    ..Default::default()
                })
                .collect();
            e.upsert("fashion", version, &pts)?;
        }
        anyhow::ensure!(e.wait_indexed("fashion", version, Duration::from_secs(1800))?);
        e.persist_index("fashion", version)?;
    }
    let source_bytes = dir_bytes(&data_dir.join("db")) + dir_bytes(&data_dir.join("index"));
    let (mut create, mut restore, mut open) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for round in 0..args.rounds {
        let name = format!("bench-{round}");
        let t = Instant::now();
        let m = e.create_backup(&name)?;
        create.push(t.elapsed().as_secs_f64());
        let target = tmp.path().join(format!("restored-{round}"));
        let t = Instant::now();
        restore_backup(&e.backup_dir(&name)?, &target)?;
        restore.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let r = Engine::open(EngineConfig::new(&target))?;
        anyhow::ensure!(r.describe_version("fashion", "scaled")?.point_count == 60_000);
        open.push(t.elapsed().as_secs_f64());
        drop(r);
        std::fs::remove_dir_all(&target)?;
        e.delete_backup(&name)?;
        last = Some(m);
    }
    let m = last.ok_or_else(|| anyhow::anyhow!("--rounds must be at least 1"))?;
    println!(
        "Fashion-MNIST 60,000 x 784, two versions: data dir {:.1} MiB; snapshot {} files, {:.1} MiB (versions with an index: {})",
        source_bytes as f64 / (1 << 20) as f64,
        m.files.len(),
        m.bytes() as f64 / (1 << 20) as f64,
        m.versions.iter().filter(|v| v.generation.is_some()).count()
    );
    println!(
        "create {:.2} s, restore {:.2} s, open of the restored dir {:.2} s (medians of {}; create: {:?}, restore: {:?})",
        median(create.clone()),
        median(restore.clone()),
        median(open.clone()),
        args.rounds,
        create,
        restore
    );
    Ok(())
}
