//! CompareVersions through the real server: a candidate model that confuses
//! classes gets ROLLBACK and the alias stays; an improved one gets PROMOTE and
//! the alias moves atomically while searches run through it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use emberdb_client::{Client, Metric, pb};
use emberdb_tests::{TestServer, upsert_all, wait_ready};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use tonic::Code;

const DIM: usize = 16;
const CLASSES: usize = 10;
const N: usize = 3000;

/// Point i has class i % CLASSES; `noise` is the within-class spread; a `confused`
/// share of points is embedded at another class's centre (the model mixes them up).
fn embed(noise: f32, confused: f64, seed: u64) -> Vec<pb::Point> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let centre = Normal::new(0.0f32, 4.0).expect("normal");
    let centres: Vec<Vec<f32>> = (0..CLASSES)
        .map(|_| (0..DIM).map(|_| centre.sample(&mut rng)).collect())
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = Normal::new(0.0f32, noise).expect("normal");
    (0..N)
        .map(|i| {
            let class = i % CLASSES;
            let at = if rng.random::<f64>() < confused {
                (class + 1) % CLASSES
            } else {
                class
            };
            pb::Point {
                id: i as u64,
                vector: centres[at].iter().map(|x| x + n.sample(&mut rng)).collect(),
                label: format!("class-{class}"),
                metadata: Default::default(),
                timestamp_ms: 0,
            }
        })
        .collect()
}

fn compare(candidate: &str, alias: &str) -> pb::CompareVersionsRequest {
    pb::CompareVersionsRequest {
        collection: "m".into(),
        baseline_version: "v1".into(),
        candidate_version: candidate.into(),
        k: Some(10),
        sample_size: None,
        seed: Some(1),
        promote_alias: alias.into(),
    }
}

async fn prod_target(c: &mut Client) -> anyhow::Result<String> {
    let cols = c.list_collections().await?;
    let m = cols.iter().find(|x| x.name == "m").expect("collection m");
    Ok(m.aliases
        .iter()
        .find(|a| a.alias == "prod")
        .map(|a| a.version.clone())
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_verdicts_and_atomic_promotion() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    for v in ["v1", "v2", "v3"] {
        c.create_version("m", v, DIM as u32, Metric::L2).await?;
    }
    upsert_all(&mut c, "m", "v1", embed(2.5, 0.0, 1), 1000).await?; // today's model
    upsert_all(&mut c, "m", "v2", embed(1.0, 0.0, 2), 1000).await?; // tighter classes
    upsert_all(&mut c, "m", "v3", embed(2.5, 0.3, 3), 1000).await?; // confuses 30%
    for v in ["v1", "v2", "v3"] {
        wait_ready(&mut c, "m", v).await?;
    }
    c.set_alias("m", "prod", "v1").await?;

    // Searches through the alias run for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut searchers = Vec::new();
    for s in 0..2u64 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let mut sc = server.client().await?;
        searchers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(s);
            while !stop.load(Ordering::Relaxed) {
                let q: Vec<f32> = (0..DIM).map(|_| rng.random_range(-4.0..4.0)).collect();
                match sc.search("m", "prod", q, 5, Default::default()).await {
                    Ok(h) if h.len() == 5 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    let bad = c.compare_versions(compare("v3", "prod"), None).await?;
    println!(
        "v3: verdict {:?} p@1 {:.3} -> {:.3} map@r {:.3} -> {:.3} overlap {:.3} new pairs {} reasons {:?}",
        bad.verdict(),
        bad.baseline.as_ref().unwrap().precision_at_1,
        bad.candidate.as_ref().unwrap().precision_at_1,
        bad.baseline.as_ref().unwrap().map_at_r,
        bad.candidate.as_ref().unwrap().map_at_r,
        bad.neighbor_overlap,
        bad.new_pairs.len(),
        bad.reasons.iter().map(|r| &r.metric).collect::<Vec<_>>()
    );
    assert_eq!(bad.verdict(), pb::Verdict::Rollback);
    assert!(!bad.alias_moved);
    assert!(
        bad.delta_precision_at_1 < -0.1,
        "{}",
        bad.delta_precision_at_1
    );
    assert!(
        bad.reasons
            .iter()
            .any(|r| r.pushes() == pb::Verdict::Rollback && !r.owner.is_empty())
    );
    // class-i points embedded at class i+1: exactly the pairs (class-i -> class-i+1) appear.
    assert!(
        bad.new_pairs.iter().any(|p| p.true_label == "class-0"
            && p.predicted_label == "class-1"
            && p.candidate_count > 10),
        "{:?}",
        bad.new_pairs
    );
    assert_eq!(bad.shared_ids, N as u64);
    assert_eq!(bad.query_ids.len(), N);
    assert_eq!(
        prod_target(&mut c).await?,
        "v1",
        "ROLLBACK leaves the alias"
    );

    let good = c.compare_versions(compare("v2", "prod"), None).await?;
    println!(
        "v2: verdict {:?} p@1 {:.3} -> {:.3} recall {:.3} low-margin {:.3} -> {:.3} resolved {} reasons {:?}",
        good.verdict(),
        good.baseline.as_ref().unwrap().precision_at_1,
        good.candidate.as_ref().unwrap().precision_at_1,
        good.candidate.as_ref().unwrap().ann_recall_at_k,
        good.baseline.as_ref().unwrap().low_margin_fraction,
        good.candidate.as_ref().unwrap().low_margin_fraction,
        good.resolved_pairs.len(),
        good.reasons
    );
    assert_eq!(good.verdict(), pb::Verdict::Promote, "{:?}", good.reasons);
    assert!(good.alias_moved);
    assert!(good.delta_precision_at_1 >= 0.0 && good.delta_map_at_r > 0.0);
    assert!(good.candidate.as_ref().unwrap().ann_recall_at_k >= 0.9);
    assert!(good.neighbor_overlap > 0.0 && good.neighbor_overlap <= 1.0);
    assert_eq!(prod_target(&mut c).await?, "v2");

    stop.store(true, Ordering::Relaxed);
    for s in searchers {
        s.await?;
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("searches through prod during the comparisons: {ok} ok, {failed} failed");
    assert!(ok > 10);
    assert_eq!(failed, 0);

    // A sample: the listed query ids are that many shared ids.
    let mut r = compare("v3", "");
    r.sample_size = Some(200);
    let s = c.compare_versions(r, None).await?;
    assert_eq!(s.query_ids.len(), 200);
    assert_eq!(s.candidate.as_ref().unwrap().labelled_queries, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_rejects_bad_input_and_changes_nothing() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    c.create_version("m", "v1", DIM as u32, Metric::L2).await?;
    c.create_version("m", "v2", DIM as u32, Metric::L2).await?;
    c.create_version("m", "empty", DIM as u32, Metric::L2)
        .await?;
    upsert_all(&mut c, "m", "v1", embed(1.0, 0.0, 1), 1000).await?;
    upsert_all(&mut c, "m", "v2", embed(1.0, 0.0, 2), 1000).await?;
    c.set_alias("m", "prod", "v1").await?;

    let cases: Vec<(pb::CompareVersionsRequest, Code, &str)> = vec![
        (
            compare("v2", "bad/alias"),
            Code::InvalidArgument,
            "promote_alias",
        ),
        (compare("v2", "v1"), Code::InvalidArgument, "promote_alias"),
        (compare("nope", "prod"), Code::NotFound, "nope"),
        (
            pb::CompareVersionsRequest {
                k: Some(0),
                ..compare("v2", "prod")
            },
            Code::InvalidArgument,
            "k",
        ),
        (
            compare("empty", "prod"),
            Code::FailedPrecondition,
            "share 0",
        ),
        (
            pb::CompareVersionsRequest {
                baseline_version: String::new(),
                ..compare("v2", "prod")
            },
            Code::InvalidArgument,
            "baseline_version",
        ),
    ];
    for (req, code, needle) in cases {
        let e = c.compare_versions(req.clone(), None).await.unwrap_err();
        assert_eq!(e.code(), code, "{req:?}: {}", e.message());
        assert!(e.message().contains(needle), "{req:?}: {}", e.message());
    }
    assert_eq!(prod_target(&mut c).await?, "v1");
    // A deadline that cannot be met is honoured.
    let e = c
        .compare_versions(
            compare("v2", "prod"),
            Some(std::time::Duration::from_millis(5)),
        )
        .await
        .unwrap_err();
    // The server answers DEADLINE_EXCEEDED, or the client gives up first.
    assert!(
        matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{e:?}"
    );
    assert_eq!(prod_target(&mut c).await?, "v1");
    Ok(())
}
