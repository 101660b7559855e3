//! `ember drift | canary | check | monitor`: the model-version operations.

use crate::Spin;
use std::time::Duration;

use clap::Subcommand;
use emberdb_client::bundle::shift_kind_name;
use emberdb_client::{Client, pb};

/// A window argument: `VERSION[@FROM_MS..TO_MS]`, either bound may be empty.
pub fn parse_window(s: &str) -> Result<pb::Window, String> {
    let (version, range) = match s.split_once('@') {
        Some((v, r)) => (v, Some(r)),
        None => (s, None),
    };
    let mut w = pb::Window {
        version: version.to_string(),
        from_ms: None,
        to_ms: None,
    };
    if let Some(r) = range {
        let (a, b) = r
            .split_once("..")
            .ok_or_else(|| format!("window '{s}': expected VERSION@FROM..TO"))?;
        let num = |x: &str| -> Result<Option<i64>, String> {
            if x.is_empty() {
                Ok(None)
            } else {
                x.parse()
                    .map(Some)
                    .map_err(|e| format!("window '{s}': {x}: {e}"))
            }
        };
        w.from_ms = num(a)?;
        w.to_ms = num(b)?;
    }
    Ok(w)
}

#[derive(Debug, Subcommand)]
pub enum MonitorCmd {
    /// Create or replace the monitor of a version or alias.
    Set {
        collection: String,
        version: String,
        #[arg(long, default_value_t = 60)]
        interval_s: u32,
        #[arg(long, default_value_t = 10)]
        k: u32,
        #[arg(long, default_value_t = 200)]
        sample_size: u32,
        /// Drift baseline window, VERSION[@FROM_MS..TO_MS].
        #[arg(long, value_parser = parse_window)]
        baseline: Option<pb::Window>,
        /// Write an incident bundle under <data-dir>/bundles/ when the drift score crosses the
        /// threshold (needs --baseline; at most one per [bundles] min_interval_s).
        #[arg(long, requires = "baseline")]
        record_bundles: bool,
    },
    /// List monitors and their last results.
    List {
        #[arg(default_value = "")]
        collection: String,
    },
    /// Delete a monitor.
    Delete { collection: String, version: String },
}

pub async fn drift(c: &mut Client, req: pb::DriftRequest, timeout: Duration) -> anyhow::Result<()> {
    let r = c.drift(req, Some(timeout)).spin("drift").await?;
    let fp = r.fingerprint.clone().unwrap_or_default();
    println!(
        "{} (score {:.3}, threshold {:.3}{}), looks like {}",
        if r.drifted { "DRIFTED" } else { "no drift" },
        r.drift_score,
        r.threshold,
        if r.threshold_calibrated {
            ", calibrated on the baseline"
        } else {
            ""
        },
        shift_kind_name(fp.primary)
    );
    println!(
        "points: baseline {}  current {}",
        r.baseline_points, r.current_points
    );
    println!(
        "centroid shift: euclidean {:.4}  cosine {}",
        r.centroid_euclidean,
        r.centroid_cosine
            .map_or("n/a".to_string(), |c| format!("{c:.4}"))
    );
    println!(
        "KS per dimension: max {:.4}  mean {:.4}  drifted share {:.3} (BH, alpha 0.05)",
        r.ks_max, r.ks_mean, r.ks_drifted_share
    );
    println!(
        "MMD² {:.5} on {} points per side; mean norm {:+.4} (x{:.3})",
        r.mmd2, r.mmd_sample, r.norm_shift, r.norm_ratio
    );
    println!("fingerprint z-scores (>= 3 names the kind):");
    for s in &fp.scores {
        println!(
            "  {:<20} z {:>8.2}  statistic {:.4}",
            shift_kind_name(s.kind),
            s.z,
            s.statistic
        );
    }
    println!(
        "{:<20} {:>9} {:>9} {:>10} {:>8}",
        "class", "baseline", "current", "euclidean", "cosine"
    );
    for k in &r.classes {
        let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
        println!(
            "{:<20} {:>9} {:>9} {:>10} {:>8}",
            k.label,
            k.baseline_count,
            k.current_count,
            f(k.euclidean),
            f(k.cosine)
        );
    }
    Ok(())
}

pub async fn canary(
    c: &mut Client,
    req: pb::CompareVersionsRequest,
    timeout: Duration,
) -> anyhow::Result<()> {
    let r = c
        .compare_versions(req, Some(timeout))
        .spin("compare")
        .await?;
    let (b, k) = (
        r.baseline.clone().unwrap_or_default(),
        r.candidate.clone().unwrap_or_default(),
    );
    println!(
        "{:<22} {:>12} {:>12} {:>9}",
        "", b.version, k.version, "delta"
    );
    let row =
        |name: &str, x: f64, y: f64| println!("{name:<22} {x:>12.4} {y:>12.4} {:>+9.4}", y - x);
    row("precision@1", b.precision_at_1, k.precision_at_1);
    row(&format!("hit@{}", r.k), b.hit_at_k, k.hit_at_k);
    row("MAP@R", b.map_at_r, k.map_at_r);
    row("mean rel. margin", b.mean_margin, k.mean_margin);
    row(
        "low-margin share",
        b.low_margin_fraction,
        k.low_margin_fraction,
    );
    row(
        &format!("ANN recall@{}", r.k),
        b.ann_recall_at_k,
        k.ann_recall_at_k,
    );
    println!(
        "queries {} of {} shared ids; neighbour overlap@{} (Jaccard) {:.3}",
        r.query_ids.len(),
        r.shared_ids,
        r.k,
        r.neighbor_overlap
    );
    for (title, pairs) in [
        ("new confusion pairs", &r.new_pairs),
        ("resolved pairs", &r.resolved_pairs),
    ] {
        if !pairs.is_empty() {
            println!("{title}:");
            for p in pairs.iter().take(10) {
                println!(
                    "  {} -> {}  (baseline {}, candidate {})",
                    p.true_label, p.predicted_label, p.baseline_count, p.candidate_count
                );
            }
        }
    }
    let verdict = pb::Verdict::try_from(r.verdict).map_or("?", |v| v.as_str_name());
    println!(
        "VERDICT: {verdict}{}",
        if r.alias_moved { " (alias moved)" } else { "" }
    );
    for x in &r.reasons {
        println!("  - {} ({}) -> {}", x.message, x.metric, x.owner);
    }
    Ok(())
}

pub async fn check(
    c: &mut Client,
    collection: &str,
    version: &str,
    repair: bool,
) -> anyhow::Result<()> {
    let r = c
        .check_consistency(collection, version, repair)
        .spin("check")
        .await?;
    if let Some(b) = &r.before_repair {
        println!("before repair:");
        print_check(b);
        println!("after repair:");
    }
    print_check(&r);
    if !r.consistent {
        return Err(crate::Outcome::Inconsistent(format!("{collection}/{version}")).into());
    }
    Ok(())
}

fn print_check(r: &pb::ConsistencyReport) {
    let state = pb::ChecksumState::try_from(r.checksum).map_or("?", |s| s.as_str_name());
    println!(
        "  {}: stored {}  indexed {}  pending {}  masked tombstones {}  files {state} (generation {})",
        if r.consistent {
            "consistent"
        } else {
            "INCONSISTENT"
        },
        r.stored_points,
        r.indexed_points,
        r.pending_points,
        r.masked_tombstones,
        r.generation
    );
    let list = |name: &str, ids: &[u64]| {
        if !ids.is_empty() {
            let shown: Vec<String> = ids.iter().take(20).map(u64::to_string).collect();
            println!(
                "  {name} ({}): {}{}",
                ids.len(),
                shown.join(", "),
                if ids.len() > 20 { ", ..." } else { "" }
            );
        }
    };
    list("stored, not indexed", &r.stored_not_indexed);
    list("indexed, not stored", &r.indexed_not_stored);
    list("vector mismatch", &r.vector_mismatch);
    list("unreachable", &r.unreachable);
    for f in &r.findings {
        println!("  - {f}");
    }
}

pub async fn monitor(c: &mut Client, cmd: MonitorCmd) -> anyhow::Result<()> {
    match cmd {
        MonitorCmd::Set {
            collection,
            version,
            interval_s,
            k,
            sample_size,
            baseline,
            record_bundles,
        } => {
            let replaced = c
                .set_monitor(pb::MonitorSpec {
                    collection: collection.clone(),
                    version: version.clone(),
                    interval_s,
                    k,
                    sample_size,
                    baseline,
                    record_bundles,
                })
                .await?;
            println!(
                "monitor {collection}/{version} {} (every {interval_s} s)",
                if replaced { "replaced" } else { "created" }
            );
        }
        MonitorCmd::List { collection } => {
            println!(
                "{:<28} {:>6} {:>8} {:>8} {:>8} {:>8} {:>6} last error",
                "collection/version", "every", "recall", "p@1", "low-m", "drift", "ok"
            );
            for m in c.list_monitors(&collection).await? {
                let s = m.spec.unwrap_or_default();
                let ran = m.last_run_ms.is_some();
                let f = |x: f64| if ran { format!("{x:.4}") } else { "-".into() };
                println!(
                    "{:<28} {:>5}s {:>8} {:>8} {:>8} {:>8} {:>6} {}",
                    format!("{}/{}", s.collection, s.version),
                    s.interval_s,
                    f(m.recall_at_k),
                    f(m.precision_at_1),
                    f(m.low_margin_fraction),
                    m.drift_score.map_or("-".into(), |d| format!("{d:.3}")),
                    if ran {
                        if m.consistent { "yes" } else { "NO" }
                    } else {
                        "-"
                    },
                    m.last_error
                );
            }
        }
        MonitorCmd::Delete {
            collection,
            version,
        } => {
            c.delete_monitor(&collection, &version).await?;
            println!("monitor {collection}/{version} deleted");
        }
    }
    Ok(())
}
