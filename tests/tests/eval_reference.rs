//! Evaluation RPCs against the seed analysis computed by numpy/scikit-learn
//! (`tests/reference/seed_analysis.py`, run in the venv that `make test` creates):
//! scikit-learn's digits (1797 × 64) and a seeded set with planted confusion.

use std::collections::BTreeMap;
use std::path::PathBuf;

use emberdb_client::{Metric, SearchOptions, pb};
use emberdb_tests::TestServer;

#[derive(serde::Deserialize)]
struct Reference {
    dim: u32,
    vectors: Vec<Vec<f32>>,
    labels: Vec<String>,
    accuracy: f64,
    errors: u64,
    pairs: BTreeMap<String, u64>,
    margin: Vec<f64>,
    margin_mean: f64,
    margin_median: f64,
    margin_p10: f64,
    low_margin_count: u64,
    knn10: Vec<Vec<u64>>,
    precision_at_1: f64,
    map_at_r: f64,
}

fn python() -> PathBuf {
    std::env::var_os("EMBERDB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/emberdb/venv/bin/python")
        })
}

fn reference(which: &str) -> anyhow::Result<Reference> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("ref.json");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reference/seed_analysis.py");
    let py = python();
    let status = std::process::Command::new(&py)
        .arg(&script)
        .arg(which)
        .arg(&out)
        .status()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run {} ({e}); `make test` creates it via scripts/setup-python.sh",
                py.display()
            )
        })?;
    anyhow::ensure!(status.success(), "reference script failed for {which}");
    Ok(serde_json::from_slice(&std::fs::read(out)?)?)
}

fn rel_close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-12) || (a - b).abs() < 1e-12
}

async fn check(which: &str) -> anyhow::Result<()> {
    let r = reference(which)?;
    let n = r.vectors.len();
    println!(
        "{which}: n={n} dim={} sklearn LOO accuracy={:.4} errors={}",
        r.dim, r.accuracy, r.errors
    );
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    c.create_version(which, "v1", r.dim, Metric::L2).await?;
    let points = emberdb_tests::points(&r.vectors, &r.labels, 0);
    for chunk in points.chunks(1000) {
        c.upsert(which, "v1", chunk.to_vec()).await?;
    }
    emberdb_tests::wait_ready(&mut c, which, "v1").await?;

    // Confusion: accuracy and every pair count exactly.
    let conf = c
        .confusion(
            pb::ConfusionRequest {
                collection: which.into(),
                version: "v1".into(),
                top_pairs: None,
                mode: 0,
            },
            None,
        )
        .await?;
    assert_eq!(conf.mode, "exact");
    assert_eq!(conf.errors, r.errors, "{which}: errors");
    assert!(
        (conf.accuracy - r.accuracy).abs() < 1e-12,
        "{which}: accuracy {} vs {}",
        conf.accuracy,
        r.accuracy
    );
    let ours: BTreeMap<String, u64> = conf
        .pairs
        .iter()
        .map(|p| (format!("{}->{}", p.true_label, p.predicted_label), p.count))
        .collect();
    assert_eq!(ours, r.pairs, "{which}: confusion pairs");
    let mut counts: Vec<u64> = r.pairs.values().copied().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let top3: u64 = counts.iter().take(3).sum();
    if r.errors > 0 {
        assert!((conf.concentration - top3 as f64 / r.errors as f64).abs() < 1e-12);
    }

    // Margin: every sample's margin within 1e-4 relative, and the summary statistics.
    let m = c
        .margin(
            pb::MarginRequest {
                collection: which.into(),
                version: "v1".into(),
                threshold: None,
                lowest_n: Some(n as u32),
                mode: 0,
            },
            None,
        )
        .await?;
    assert_eq!(m.points as usize, n);
    assert_eq!(m.lowest.len(), n);
    for s in &m.lowest {
        let want = r.margin[s.id as usize];
        assert!(
            rel_close(s.margin, want, 1e-4),
            "{which}: margin of {}: {} vs {want}",
            s.id,
            s.margin
        );
    }
    assert!(
        rel_close(m.mean, r.margin_mean, 1e-6),
        "{} vs {}",
        m.mean,
        r.margin_mean
    );
    assert!(
        rel_close(m.median, r.margin_median, 1e-6),
        "{} vs {}",
        m.median,
        r.margin_median
    );
    assert!(
        rel_close(m.p10, r.margin_p10, 1e-6),
        "{} vs {}",
        m.p10,
        r.margin_p10
    );
    assert_eq!(m.low_margin_count, r.low_margin_count);

    // Recall@10 of EmberDB's ANN against the script's own exact kNN, and label metrics.
    let mut hits = 0usize;
    let queries: Vec<usize> = (0..n).step_by(3).collect();
    for &i in &queries {
        let got = c
            .search(
                which,
                "v1",
                r.vectors[i].clone(),
                11,
                SearchOptions {
                    ef: 64,
                    ..Default::default()
                },
            )
            .await?;
        let mut ids: Vec<u64> = got
            .iter()
            .map(|h| h.id)
            .filter(|&id| id != i as u64)
            .collect();
        ids.truncate(10);
        hits += ids.iter().filter(|id| r.knn10[i].contains(id)).count();
    }
    let recall = hits as f64 / (10 * queries.len()) as f64;
    let rep = c
        .recall(
            pb::RecallRequest {
                collection: which.into(),
                version: "v1".into(),
                k: Some(10),
                ef: Some(64),
                sample_size: None,
                seed: None,
            },
            None,
        )
        .await?;
    println!(
        "{which}: recall@10 vs sklearn exact = {recall:.4}; Recall RPC = {:.4}",
        rep.recall_at_k
    );
    assert!(recall >= 0.95, "{which}: recall@10 {recall}");
    assert_eq!(rep.queries as usize, n);
    assert!(
        (rep.recall_at_k - recall).abs() < 0.03,
        "RPC recall {} vs {recall}",
        rep.recall_at_k
    );
    assert!(
        (rep.precision_at_1 - r.precision_at_1).abs() < 1e-12,
        "p@1 {} vs {}",
        rep.precision_at_1,
        r.precision_at_1
    );
    assert!(
        rel_close(rep.map_at_r, r.map_at_r, 1e-9),
        "MAP@R {} vs {}",
        rep.map_at_r,
        r.map_at_r
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digits_match_scikit_learn() -> anyhow::Result<()> {
    check("digits").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_confusion_matches_numpy_and_yields_actions() -> anyhow::Result<()> {
    check("planted").await?;
    // The planted structure must surface as owned work items.
    let r = reference("planted")?;
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    c.create_version("p", "v", r.dim, Metric::L2).await?;
    let pts = emberdb_tests::points(&r.vectors, &r.labels, 0);
    c.upsert("p", "v", pts).await?;
    let a = c
        .actions(
            pb::ActionsRequest {
                collection: "p".into(),
                version: "v".into(),
                format: pb::ActionFormat::Markdown as i32,
                mode: 0,
            },
            None,
        )
        .await?;
    let has = |signal: pb::Signal, subject: &str| {
        a.items
            .iter()
            .any(|i| i.signal == signal as i32 && i.subject.contains(subject))
    };
    assert!(
        has(pb::Signal::StrongConfusionPair, "c1 -> c2")
            || has(pb::Signal::StrongConfusionPair, "c2 -> c1"),
        "{:#?}",
        a.items
    );
    assert!(
        has(pb::Signal::HighIntraClassDistance, "c7"),
        "{:#?}",
        a.items
    );
    let first = &a.items[0];
    assert!(first.markdown.contains("**Owner:**") && !first.evidence_ids.is_empty());
    assert!(a.items.windows(2).all(|w| w[0].severity >= w[1].severity));
    Ok(())
}
