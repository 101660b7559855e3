//! `ember bundle create|replay`: incident bundles (see `emberdb_client::bundle`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use emberdb_client::bundle::{self, Bundle};
use emberdb_client::{Client, ConnectOptions, pb};

use crate::{Outcome, Spin, ops_cli};

#[derive(Debug, Subcommand)]
pub enum BundleCmd {
    /// Export an incident bundle (.tar.gz) of two windows: the Drift report, Confusion and Margin
    /// of the current window, the monitors and the points. Windows are VERSION[@FROM_MS..TO_MS].
    Create {
        collection: String,
        /// The window that drifted.
        #[arg(long, value_parser = ops_cli::parse_window)]
        current: pb::Window,
        /// The window it is compared with.
        #[arg(long, value_parser = ops_cli::parse_window)]
        baseline: pb::Window,
        #[arg(long)]
        out: PathBuf,
        /// Examples each report keeps (confusion pairs, lowest-margin points).
        #[arg(long, default_value_t = 10)]
        k: u32,
        /// Points per window; a larger window is sampled (seeded by --seed).
        #[arg(long, default_value_t = 10_000)]
        max_points: u32,
        /// Record the figures only: a bundle without points cannot be replayed.
        #[arg(long)]
        no_points: bool,
        /// Drift parameters, as `ember drift` takes them.
        #[arg(long)]
        threshold: Option<f64>,
        #[arg(long)]
        calibrate: bool,
        #[arg(long)]
        sample_size: Option<u32>,
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
    /// Bundles the server's monitors recorded (record_bundles), oldest first.
    List {
        /// Only this collection (default: every collection the key may read).
        #[arg(long, default_value = "")]
        collection: String,
    },
    /// Download a recorded bundle (checked against the server's SHA-256).
    Download {
        name: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Replay a bundle: start a throwaway emberdb (or use --server), import both windows, rerun
    /// Drift, Confusion and Margin, and print each recorded figure beside the replayed one.
    /// Exits 3 when a figure differs (beyond 1e-9 relative) or a file fails its checksum.
    Replay {
        file: PathBuf,
        /// Replay on this running server instead (in a temporary collection, dropped after).
        #[arg(long)]
        server: Option<String>,
        /// The emberdb binary to start (default: next to ember, then PATH).
        #[arg(long)]
        emberdb: Option<PathBuf>,
    },
}

/// `create`, `list` and `download` (a replay connects by itself: [`replay`]).
pub async fn run(c: &mut Client, cmd: BundleCmd) -> anyhow::Result<()> {
    match cmd {
        BundleCmd::List { collection } => {
            for b in c.list_bundles(&collection).await? {
                println!(
                    "{:<56} {:<16} {:<16} {:>12} bytes  created_ms {}",
                    b.name, b.collection, b.version, b.bytes, b.created_ms
                );
            }
            Ok(())
        }
        BundleCmd::Download { name, out } => {
            let n = c.download_bundle(&name, &out).await?;
            println!("bundle {name}: {n} bytes written to {}", out.display());
            Ok(())
        }
        create @ BundleCmd::Create { .. } => self::create(c, create).await,
        BundleCmd::Replay { .. } => anyhow::bail!("a replay is run by `replay`"),
    }
}

async fn create(c: &mut Client, cmd: BundleCmd) -> anyhow::Result<()> {
    let BundleCmd::Create {
        collection,
        current,
        baseline,
        out,
        k,
        max_points,
        no_points,
        threshold,
        calibrate,
        sample_size,
        seed,
        timeout_s,
    } = cmd
    else {
        anyhow::bail!("not a create command");
    };
    let req = pb::ExportBundleRequest {
        collection,
        current: Some(current),
        baseline: Some(baseline),
        k: Some(k),
        include_points: !no_points,
        max_points: Some(max_points),
        threshold,
        calibrate,
        sample_size,
        seed,
    };
    let timeout = std::time::Duration::from_secs(timeout_s);
    let n = c
        .export_bundle(req, Some(timeout), &out)
        .spin("exporting the bundle")
        .await?;
    let b = Bundle::read(&out)?;
    let m = &b.manifest;
    println!("bundle written to {} ({n} bytes)", out.display());
    for (side, w) in [("baseline", &m.baseline), ("current", &m.current)] {
        println!(
            "  {side:<8} {} ({}): {} of {} points{}",
            w.version,
            w.record.version,
            w.bundled_points,
            w.window_points,
            if w.sampled { ", sampled" } else { "" }
        );
    }
    if let Some(why) = &m.contents.eval_skipped {
        println!("  no Confusion/Margin: {why}");
    }
    Ok(())
}

pub async fn replay(
    file: PathBuf,
    server: Option<String>,
    emberdb: Option<PathBuf>,
    opts: ConnectOptions,
) -> anyhow::Result<()> {
    let b = Bundle::read(&file)?;
    let m = &b.manifest;
    println!(
        "bundle {}: collection {}, {}",
        file.display(),
        m.collection,
        m.reason
    );
    let problems = b.checksum_problems();
    for p in &problems {
        println!("CHECKSUM {p}");
    }
    // A throwaway server unless one is given; it lives until the replay is done.
    let (throwaway, addr, collection) = match server {
        Some(addr) => {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            (None, addr, format!("replay-{ms}"))
        }
        None => {
            let bin = bundle::find_server_binary(emberdb.as_deref())?;
            let s = bundle::ThrowawayServer::start(&bin, &m.server.eval)?;
            let addr = s.addr.clone();
            (Some(s), addr, m.collection.clone())
        }
    };
    let mut c = Client::connect_with(addr.clone(), opts)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let result = bundle::replay(&b, &mut c, &collection)
        .spin("replaying the bundle")
        .await;
    if throwaway.is_none() {
        // Best effort: a replay on a shared server leaves nothing behind.
        let _ = c.drop_collection(&collection).await;
    }
    drop(throwaway);
    let cmp = result?;
    println!();
    println!("{:<22} {:>24} {:>24}", "figure", "recorded", "replayed");
    for h in &cmp.headline {
        let mark = if h.agrees { "" } else { "  <- differs" };
        println!(
            "{:<22} {:>24} {:>24}{mark}",
            h.figure, h.recorded, h.replayed
        );
    }
    println!();
    for d in cmp.differences.iter().take(50) {
        println!(
            "DIFFERS {}: recorded {}, replayed {}",
            d.figure, d.recorded, d.replayed
        );
    }
    if cmp.differences.len() > 50 {
        println!("... and {} more", cmp.differences.len() - 50);
    }
    println!(
        "{} figures compared, {} differ (tolerance {:e} relative); {} checksum problem(s)",
        cmp.compared,
        cmp.differences.len(),
        bundle::RELATIVE_TOLERANCE,
        problems.len()
    );
    if cmp.differences.is_empty() && problems.is_empty() {
        println!("replay reproduces the recorded figures");
        Ok(())
    } else {
        Err(Outcome::ReplayDiffers {
            figures: cmp.differences.len(),
            files: problems.len(),
        }
        .into())
    }
}
