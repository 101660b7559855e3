//! Drift through the real server: windows cut by version and timestamp, planted
//! shifts of known kind and size are flagged with the right fingerprint, and two
//! windows from one distribution are not (≤ 2 false alarms in 40 seeded trials).

use emberdb_client::{Client, Metric, pb};
use emberdb_tests::TestServer;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use tonic::Code;

const DIM: usize = 32;
const CLASSES: usize = 5;

/// Class centres (plus one spare "new" centre), seeded.
fn centres() -> Vec<Vec<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let n = Normal::new(0.0f32, 3.0).expect("normal");
    (0..=CLASSES)
        .map(|_| (0..DIM).map(|_| n.sample(&mut rng)).collect())
        .collect()
}

/// `n` points drawn with class probabilities `mix` (index CLASSES is the new cluster).
fn draw(n: usize, mix: &[f64], seed: u64) -> Vec<(Vec<f32>, usize)> {
    let cs = centres();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let noise = Normal::new(0.0f32, 1.0).expect("normal");
    (0..n)
        .map(|_| {
            let u: f64 = rng.random();
            let mut acc = 0.0;
            let mut c = mix.len() - 1;
            for (i, p) in mix.iter().enumerate() {
                acc += p;
                if u < acc {
                    c = i;
                    break;
                }
            }
            (
                cs[c].iter().map(|x| x + noise.sample(&mut rng)).collect(),
                c,
            )
        })
        .collect()
}

fn uniform() -> Vec<f64> {
    vec![1.0 / CLASSES as f64; CLASSES]
}

/// Stores `rows` with timestamps in [ts, ts + 1) and ids from `id0`.
async fn put(c: &mut Client, rows: &[(Vec<f32>, usize)], id0: u64, ts: i64) -> anyhow::Result<()> {
    let pts: Vec<pb::Point> = rows
        .iter()
        .enumerate()
        .map(|(i, (v, l))| pb::Point {
            id: id0 + i as u64,
            vector: v.clone(),
            label: format!("c{l}"),
            metadata: Default::default(),
            timestamp_ms: ts,
        })
        .collect();
    for chunk in pts.chunks(2000) {
        c.upsert("d", "v1", chunk.to_vec()).await?;
    }
    Ok(())
}

fn window(ts: i64) -> Option<pb::Window> {
    Some(pb::Window {
        version: "v1".into(),
        from_ms: Some(ts),
        to_ms: Some(ts + 1),
    })
}

fn req(base_ts: i64, cur_ts: i64) -> pb::DriftRequest {
    pb::DriftRequest {
        collection: "d".into(),
        baseline: window(base_ts),
        current: window(cur_ts),
        threshold: None,
        calibrate: false,
        sample_size: None,
        seed: Some(0),
    }
}

fn primary(r: &pb::DriftReport) -> pb::ShiftKind {
    pb::ShiftKind::try_from(r.fingerprint.as_ref().expect("fingerprint").primary)
        .expect("known kind")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_shifts_are_flagged_with_their_kind() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    c.create_version("d", "v1", DIM as u32, Metric::L2).await?;
    const N: usize = 3000;
    put(&mut c, &draw(N, &uniform(), 1), 0, 0).await?; // baseline window: ts 0
    put(&mut c, &draw(N, &uniform(), 2), 10_000, 1).await?; // same distribution: ts 1

    let mut shifted = draw(N, &uniform(), 3);
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let dir: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect();
    let norm = dir.iter().map(|x| x * x).sum::<f32>().sqrt();
    for (v, _) in &mut shifted {
        v.iter_mut()
            .zip(&dir)
            .for_each(|(x, d)| *x += 1.7 * d / norm);
    }
    put(&mut c, &shifted, 20_000, 2).await?;

    let mut scaled = draw(N, &uniform(), 4);
    scaled
        .iter_mut()
        .for_each(|(v, _)| v.iter_mut().for_each(|x| *x *= 1.5));
    put(&mut c, &scaled, 30_000, 3).await?;

    let cs = centres();
    let mut collapsed = draw(N, &uniform(), 5);
    for (v, l) in &mut collapsed {
        v.iter_mut()
            .zip(&cs[*l])
            .for_each(|(x, m)| *x = m + 0.6 * (*x - m));
    }
    put(&mut c, &collapsed, 40_000, 4).await?;

    let mut mix = vec![0.9 / CLASSES as f64; CLASSES];
    mix.push(0.1);
    put(&mut c, &draw(N, &mix, 6), 50_000, 5).await?;
    put(&mut c, &draw(N, &[0.5, 0.2, 0.1, 0.1, 0.1], 7), 60_000, 6).await?;

    let same = c.drift(req(0, 1), None).await?;
    println!("same: score {:.5} {:?}", same.drift_score, same.fingerprint);
    assert!(!same.drifted, "{same:?}");
    assert_eq!(primary(&same), pb::ShiftKind::Unknown);
    assert_eq!(
        (same.baseline_points, same.current_points),
        (N as u64, N as u64)
    );
    assert_eq!(same.classes.len(), CLASSES);
    assert!(same.ks_drifted_share <= 0.1, "{}", same.ks_drifted_share);

    for (ts, kind) in [
        (2, pb::ShiftKind::MeanShift),
        (3, pb::ShiftKind::ScaleChange),
        (4, pb::ShiftKind::VarianceCollapse),
        (5, pb::ShiftKind::NewCluster),
        (6, pb::ShiftKind::ClassMixChange),
    ] {
        let r = c.drift(req(0, ts), None).await?;
        let fp = r.fingerprint.as_ref().expect("fingerprint");
        println!(
            "{kind:?}: score {:.5} drifted {} centroid {:.3} ks_share {:.3} norm_ratio {:.3} scores {:?}",
            r.drift_score,
            r.drifted,
            r.centroid_euclidean,
            r.ks_drifted_share,
            r.norm_ratio,
            fp.scores
                .iter()
                .map(|s| (s.kind, (s.z * 10.0).round() / 10.0))
                .collect::<Vec<_>>()
        );
        assert!(r.drifted, "{kind:?} not drifted: {r:?}");
        assert_eq!(primary(&r), kind, "{r:?}");
        assert_eq!(fp.scores.len(), 5, "a z-score for every kind");
    }
    // The scaled window's mean norm is 1.5x the baseline's.
    let scaled = c.drift(req(0, 3), None).await?;
    assert!(
        (scaled.norm_ratio - 1.5).abs() < 0.01,
        "{}",
        scaled.norm_ratio
    );
    // The new cluster shows as a class the baseline lacks.
    let fresh = c.drift(req(0, 5), None).await?;
    let new_class = fresh.classes.iter().find(|k| k.label == "c5").expect("c5");
    assert_eq!(new_class.baseline_count, 0);
    assert!(new_class.euclidean.is_none());

    // A calibrated threshold comes from the baseline's own splits.
    let mut cal = req(0, 1);
    cal.calibrate = true;
    let r = c.drift(cal.clone(), None).await?;
    assert!(r.threshold_calibrated && r.threshold > 0.0 && r.calibration_splits >= 10);
    assert!(!r.drifted, "{r:?}");
    cal.current = window(2);
    assert!(c.drift(cal, None).await?.drifted);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_distribution_rarely_alarms() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    c.create_version("d", "v1", DIM as u32, Metric::L2).await?;
    const TRIALS: i64 = 40;
    for t in 0..TRIALS {
        let seed = 1000 + 2 * t as u64;
        put(
            &mut c,
            &draw(1000, &uniform(), seed),
            t as u64 * 10_000,
            2 * t,
        )
        .await?;
        put(
            &mut c,
            &draw(1000, &uniform(), seed + 1),
            t as u64 * 10_000 + 5000,
            2 * t + 1,
        )
        .await?;
    }
    let mut alarms = 0;
    let mut wrong_kind = 0;
    for t in 0..TRIALS {
        let mut r = req(2 * t, 2 * t + 1);
        r.seed = Some(t as u64);
        let out = c.drift(r, None).await?;
        alarms += usize::from(out.drifted);
        wrong_kind += usize::from(primary(&out) != pb::ShiftKind::Unknown);
    }
    println!("false alarms {alarms} / {TRIALS}; fingerprints other than UNKNOWN {wrong_kind}");
    assert!(alarms <= 2, "{alarms} false alarms in {TRIALS} trials");
    assert!(wrong_kind <= 2, "{wrong_kind} spurious fingerprints");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_rejects_bad_windows() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    c.create_version("d", "v1", DIM as u32, Metric::L2).await?;
    c.create_version("d", "other", 8, Metric::L2).await?;
    put(&mut c, &draw(100, &uniform(), 1), 0, 0).await?;

    let mut r = req(0, 0);
    r.baseline = None;
    let e = c.drift(r, None).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("baseline"), "{}", e.message());

    let mut r = req(0, 0);
    r.current = Some(pb::Window {
        version: "v1".into(),
        from_ms: Some(5),
        to_ms: Some(5),
    });
    let e = c.drift(r, None).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("current.to_ms"), "{}", e.message());

    let mut r = req(0, 0);
    r.current = Some(pb::Window {
        version: "other".into(),
        from_ms: None,
        to_ms: None,
    });
    let e = c.drift(r, None).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());

    let mut r = req(0, 0);
    r.current = window(77);
    let e = c.drift(r, None).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("current window holds 0 points"),
        "{}",
        e.message()
    );

    let mut r = req(0, 0);
    r.sample_size = Some(100_000);
    let e = c.drift(r, None).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("sample_size"), "{}", e.message());

    let mut r = req(0, 0);
    r.collection = "nope".into();
    assert_eq!(c.drift(r, None).await.unwrap_err().code(), Code::NotFound);
    Ok(())
}
