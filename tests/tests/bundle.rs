//! Incident bundles end to end: a monitor with `record_bundles` records one when a planted mean
//! shift crosses the drift threshold; moved to a fresh directory, `ember bundle replay` starts its
//! own `emberdb` and reproduces every figure (exit 0), and a tampered vector makes it report the
//! difference and exit non-zero. ListBundles and DownloadBundle fetch it byte for byte. ExportBundle samples large windows with a recorded seed, replays
//! on a running server without leaving anything behind, and refuses bad input naming the field.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use emberdb_client::bundle::Bundle;
use emberdb_client::{Client, Metric, pb};
use emberdb_proto::bundle as format;
use emberdb_tests::{TestServer, ember_binary};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use tonic::Code;

const DIM: usize = 16;

/// `n` labelled points around 4 seeded centres, shifted by `shift` along a fixed direction.
fn draw(n: usize, seed: u64, shift: f32, id0: u64, ts: i64) -> Vec<pb::Point> {
    let mut c_rng = rand::rngs::StdRng::seed_from_u64(42);
    let wide = Normal::new(0.0f32, 3.0).expect("normal");
    let centres: Vec<Vec<f32>> = (0..4)
        .map(|_| (0..DIM).map(|_| wide.sample(&mut c_rng)).collect())
        .collect();
    let dir: Vec<f32> = (0..DIM)
        .map(|i| if i % 2 == 0 { 0.35 } else { -0.35 })
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let noise = Normal::new(0.0f32, 1.0).expect("normal");
    (0..n)
        .map(|i| {
            let l = rng.random_range(0..4);
            pb::Point {
                id: id0 + i as u64,
                vector: centres[l]
                    .iter()
                    .zip(&dir)
                    .map(|(m, d)| m + noise.sample(&mut rng) + shift * d)
                    .collect(),
                label: format!("class-{l}"),
                metadata: [("camera".to_string(), format!("cam-{}", i % 3))].into(),
                timestamp_ms: ts + i as i64,
            }
        })
        .collect()
}

async fn put(c: &mut Client, version: &str, pts: Vec<pb::Point>) -> anyhow::Result<()> {
    for chunk in pts.chunks(1000) {
        c.upsert("cams", version, chunk.to_vec()).await?;
    }
    Ok(())
}

fn window(version: &str, from_ms: Option<i64>, to_ms: Option<i64>) -> Option<pb::Window> {
    Some(pb::Window {
        version: version.into(),
        from_ms,
        to_ms,
    })
}

/// Runs `ember` with `args`; (exit code, stdout + stderr).
fn ember(args: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = Command::new(ember_binary()?).args(args).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code().unwrap_or(-1), text))
}

fn bundles_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The files of a `.tar.gz`, in order.
fn unpack(path: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let f = std::fs::File::open(path)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut out = Vec::new();
    for e in tar.entries()? {
        let mut e = e?;
        let name = e.path()?.to_string_lossy().into_owned();
        let mut b = Vec::new();
        e.read_to_end(&mut b)?;
        out.push((name, b));
    }
    Ok(out)
}

fn pack(path: &Path, files: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(path)?, Default::default());
    let mut tar = tar::Builder::new(gz);
    for (name, b) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(b.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, name, b.as_slice())?;
    }
    tar.into_inner()?.finish()?;
    Ok(())
}

/// The headline line of a replay's output for `figure`: (recorded, replayed).
fn headline(out: &str, figure: &str) -> Option<(String, String)> {
    let line = out.lines().find(|l| l.starts_with(figure))?;
    let cols: Vec<&str> = line[figure.len()..].split_whitespace().collect();
    Some((cols.first()?.to_string(), cols.get(1)?.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_records_a_bundle_that_replays_and_catches_tampering() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    c.create_version("cams", "v1", DIM as u32, Metric::L2)
        .await?;
    c.create_version("cams", "v2", DIM as u32, Metric::L2)
        .await?;
    put(&mut c, "v1", draw(800, 1, 0.0, 0, 1_000)).await?;
    put(&mut c, "v2", draw(800, 2, 2.5, 10_000, 5_000)).await?;
    c.set_monitor(pb::MonitorSpec {
        collection: "cams".into(),
        version: "v2".into(),
        interval_s: 1,
        k: 5,
        sample_size: 100,
        baseline: window("v1", None, None),
        record_bundles: true,
    })
    .await?;

    let dir = server.data_dir.join("bundles");
    let deadline = Instant::now() + Duration::from_secs(120);
    while bundles_in(&dir).is_empty() {
        assert!(Instant::now() < deadline, "no bundle recorded within 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Later runs cross the threshold again, but one bundle per monitor per hour.
    let runs_before = c.list_monitors("cams").await?[0].last_run_ms;
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.list_monitors("cams").await?[0].last_run_ms == runs_before {
        assert!(Instant::now() < deadline, "the monitor stopped running");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recorded = bundles_in(&dir);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let scrape = server.scrape().await?;
    assert!(
        scrape
            .lines()
            .any(|l| l == "emberdb_bundles_written_total 1"),
        "{}",
        scrape
            .lines()
            .filter(|l| l.contains("bundles"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Fetched through the API, as an engineer would carry it home: the same bytes.
    let listed = c.list_bundles("").await?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let name = &listed[0].name;
    assert_eq!(
        (listed[0].collection.as_str(), listed[0].version.as_str()),
        ("cams", "v2")
    );
    assert_eq!(listed[0].bytes, std::fs::metadata(&recorded[0])?.len());
    assert_eq!(c.list_bundles("cams").await?.len(), 1);
    assert!(c.list_bundles("other").await?.is_empty());
    let home = tempfile::tempdir()?;
    let bundle = home.path().join("incident.tar.gz");
    c.download_bundle(name, &bundle).await?;
    assert_eq!(std::fs::read(&bundle)?, std::fs::read(&recorded[0])?);
    for (bad, code) in [
        ("../../etc/passwd", Code::InvalidArgument),
        ("cams.v2.1.tar.gz", Code::NotFound),
    ] {
        let e = c
            .download_bundle(bad, &home.path().join("x"))
            .await
            .expect_err(bad);
        let got = e.downcast_ref::<tonic::Status>().map(tonic::Status::code);
        assert_eq!(got, Some(code), "{e:#}");
    }
    let b = Bundle::read(&bundle)?;
    assert!(b.checksum_problems().is_empty());
    let m = &b.manifest;
    assert_eq!(m.collection, "cams");
    assert_eq!(
        (
            m.baseline.record.version.as_str(),
            m.current.record.version.as_str()
        ),
        ("v1", "v2")
    );
    assert_eq!(
        (m.baseline.bundled_points, m.current.bundled_points),
        (800, 800)
    );
    assert!(m.reason.contains("cams/v2"), "{}", m.reason);
    assert!(m.contents.eval && m.contents.points && m.contents.monitors == 1);
    let drift: serde_json::Value = serde_json::from_slice(&b.files[format::DRIFT])?;
    assert_eq!(drift["drifted"], true, "{drift}");
    assert_eq!(
        drift["fingerprint"]["primary"],
        pb::ShiftKind::MeanShift as i32,
        "{drift}"
    );
    assert_eq!(b.points("current")?.len(), 800);

    let path = bundle.to_string_lossy().into_owned();
    let (code, out) = ember(&["bundle", "replay", &path])?;
    println!("{out}");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("replay reproduces the recorded figures"),
        "{out}"
    );
    let (rec, got) = headline(&out, "drift score").expect("drift score line");
    assert_eq!(rec, got);
    assert_eq!(
        headline(&out, "primary kind"),
        Some(("MEAN_SHIFT".into(), "MEAN_SHIFT".into()))
    );

    // Tamper with one vector: the checksum no longer matches and the figures move.
    let mut files = unpack(&bundle)?;
    let npy = format::vectors_path("current");
    let at = files.iter().position(|(n, _)| *n == npy).expect("vectors");
    let data = &mut files[at].1;
    let first = data.len() - 800 * DIM * 4; // row 0 starts after the header
    for j in 0..DIM {
        let x = f32::from_le_bytes(data[first + 4 * j..first + 4 * j + 4].try_into()?);
        data[first + 4 * j..first + 4 * j + 4].copy_from_slice(&(x + 50.0).to_le_bytes());
    }
    let tampered = home.path().join("tampered.tar.gz");
    pack(&tampered, &files)?;
    let (code, out) = ember(&["bundle", "replay", &tampered.to_string_lossy()])?;
    println!("{out}");
    assert_eq!(code, 3, "{out}");
    assert!(out.contains(&format!("CHECKSUM {npy}")), "{out}");
    assert!(out.contains("DIFFERS drift."), "{out}");

    // A deliberate edit that also fixes the manifest still replays differently.
    let mut manifest: format::Manifest = serde_json::from_slice(&files[0].1)?;
    for f in &mut manifest.files {
        if f.path == npy {
            f.sha256 = format::sha256_hex(&files[at].1);
        }
    }
    files[0].1 = serde_json::to_vec_pretty(&manifest)?;
    pack(&tampered, &files)?;
    let (code, out) = ember(&["bundle", "replay", &tampered.to_string_lossy()])?;
    assert_eq!(code, 3, "{out}");
    assert!(!out.contains("CHECKSUM"), "{out}");
    assert!(out.contains("DIFFERS drift.centroid_euclidean"), "{out}");
    assert!(out.contains("0 checksum problem(s)"), "{out}");
    server.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_bundle_samples_windows_and_replays_on_a_running_server() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    c.create_version("cams", "v1", DIM as u32, Metric::Cosine)
        .await?;
    put(&mut c, "v1", draw(1500, 3, 0.0, 0, 0)).await?;
    put(&mut c, "v1", draw(1500, 4, 1.5, 100_000, 10_000)).await?;
    c.set_alias("cams", "prod", "v1").await?;

    // Windows by time over one version (through an alias), the current one sampled to 700.
    let out = tempfile::tempdir()?;
    let file = out.path().join("b.tar.gz");
    let addr = format!("http://{}", server.addr);
    let f = file.to_string_lossy().into_owned();
    let (code, text) = ember(&[
        "--addr",
        &addr,
        "bundle",
        "create",
        "cams",
        "--current",
        "prod@10000..",
        "--baseline",
        "v1@0..10000",
        "--max-points",
        "700",
        "--seed",
        "7",
        "--k",
        "4",
        "--out",
        &f,
    ])?;
    assert_eq!(code, 0, "{text}");
    let b = Bundle::read(&file)?;
    let m = &b.manifest;
    assert_eq!(m.current.version, "prod");
    assert_eq!(m.current.record.version, "v1");
    assert!(m.current.sampled && m.baseline.sampled);
    assert_eq!(
        (m.current.window_points, m.current.bundled_points),
        (1500, 700)
    );
    assert_eq!(m.sample_seed, 7);
    assert_eq!(m.k, 4);
    let pts = b.points("current")?;
    assert!(pts.windows(2).all(|w| w[0].id < w[1].id));
    assert!(
        pts.iter()
            .all(|p| p.id >= 100_000 && p.metadata["camera"].starts_with("cam-"))
    );
    let eval: serde_json::Value = serde_json::from_slice(&b.files[format::EVAL])?;
    assert_eq!(eval["confusion"]["points"], 700, "{eval}");
    assert!(
        eval["margin"]["lowest"]
            .as_array()
            .is_some_and(|l| l.len() == 4)
    );

    // Replay on the running server: a temporary collection, dropped afterwards.
    let (code, text) = ember(&["bundle", "replay", &f, "--server", &addr])?;
    println!("{text}");
    assert_eq!(code, 0, "{text}");
    let names: Vec<String> = c
        .list_collections()
        .await?
        .into_iter()
        .map(|col| col.name)
        .collect();
    assert_eq!(names, vec!["cams".to_string()]);

    // Without points the bundle records the figures but cannot be replayed.
    let bare = out.path().join("bare.tar.gz");
    let req = pb::ExportBundleRequest {
        collection: "cams".into(),
        current: window("v1", Some(10_000), None),
        baseline: window("v1", None, Some(10_000)),
        include_points: false,
        ..Default::default()
    };
    c.export_bundle(req.clone(), None, &bare).await?;
    let b = Bundle::read(&bare)?;
    assert!(!b.manifest.contents.points && !b.files.keys().any(|k| k.starts_with("points/")));
    let (code, text) = ember(&[
        "bundle",
        "replay",
        &bare.to_string_lossy(),
        "--server",
        &addr,
    ])?;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("without its points"), "{text}");

    // Bad input: a clear status naming the field, and no file left behind.
    let bad = out.path().join("bad.tar.gz");
    for (r, field) in [
        (
            pb::ExportBundleRequest {
                max_points: Some(0),
                ..req.clone()
            },
            "max_points",
        ),
        (
            pb::ExportBundleRequest {
                k: Some(0),
                ..req.clone()
            },
            "k",
        ),
        (
            pb::ExportBundleRequest {
                current: None,
                ..req.clone()
            },
            "current",
        ),
        (
            pb::ExportBundleRequest {
                sample_size: Some(0),
                ..req.clone()
            },
            "sample_size",
        ),
    ] {
        let e = c.export_bundle(r, None, &bad).await.expect_err(field);
        let s = e.downcast_ref::<tonic::Status>().expect("a status");
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert!(s.message().starts_with(field), "{s:?}");
        assert!(!bad.exists());
    }
    let e = c
        .export_bundle(
            pb::ExportBundleRequest {
                collection: "nope".into(),
                ..req.clone()
            },
            None,
            &bad,
        )
        .await
        .expect_err("unknown collection");
    assert_eq!(
        e.downcast_ref::<tonic::Status>().map(tonic::Status::code),
        Some(Code::NotFound)
    );
    server.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_over_the_memory_limit_is_refused_before_it_is_read() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.limits.evaluation_memory_bytes = 256 << 10).await?;
    let mut c = server.client().await?;
    c.create_version("cams", "v1", DIM as u32, Metric::L2)
        .await?;
    put(&mut c, "v1", draw(2000, 5, 0.0, 0, 0)).await?;
    let dir = tempfile::tempdir()?;
    let req = pb::ExportBundleRequest {
        collection: "cams".into(),
        current: window("v1", None, None),
        baseline: window("v1", None, None),
        include_points: true,
        ..Default::default()
    };
    let e = c
        .export_bundle(req.clone(), None, &dir.path().join("b.tar.gz"))
        .await
        .expect_err("over the limit");
    let s = e.downcast_ref::<tonic::Status>().expect("a status");
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("max_points"), "{s:?}");
    // A smaller cap fits.
    let small = pb::ExportBundleRequest {
        max_points: Some(100),
        ..req
    };
    c.export_bundle(small, None, &dir.path().join("b.tar.gz"))
        .await?;
    server.stop().await?;
    Ok(())
}
