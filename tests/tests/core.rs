//! Core path: create → upsert 10k → search (ANN and exact) → restart → same results.

use emberdb_client::{Metric, SearchOptions};
use emberdb_tests::{TestServer, brute_force_l2, clustered, points, upsert_all, wait_ready};

const COL: &str = "images";
const VER: &str = "resnet-v1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_upsert_search_restart() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    let dim = 32;
    c.create_version(COL, VER, dim, Metric::L2).await?;
    // 10,000 points to store and 50 held-out queries from the same distribution.
    let (mut vs, mut labels) = clustered(7, 10_050, dim as usize, 20);
    let queries: Vec<Vec<f32>> = vs.split_off(10_000);
    labels.truncate(10_000);
    upsert_all(&mut c, COL, VER, points(&vs, &labels, 0), 1000).await?;
    let info = c.describe(COL, VER).await?;
    assert_eq!(info.point_count, 10_000);

    // Exact search equals a brute-force f64 reference (ids, order, distances).
    let data: Vec<(u64, Vec<f32>)> = vs
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, v)| (i as u64, v))
        .collect();
    let exact_opts = SearchOptions {
        exact: true,
        ..Default::default()
    };
    let mut before_exact = Vec::new();
    for q in &queries {
        let got = c
            .search(COL, VER, q.clone(), 10, exact_opts.clone())
            .await?;
        let want = brute_force_l2(&data, q, 10);
        let got_ids: Vec<u64> = got.iter().map(|n| n.id).collect();
        let want_ids: Vec<u64> = want.iter().map(|w| w.0).collect();
        assert_eq!(got_ids, want_ids);
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (f64::from(g.distance) - w.1).abs() <= 1e-4 * w.1.max(1.0),
                "{} vs {}",
                g.distance,
                w.1
            );
        }
        before_exact.push(got);
    }

    // ANN recall against exact, once the graph holds everything.
    wait_ready(&mut c, COL, VER).await?;
    let mut hits = 0;
    let mut before_ann = Vec::new();
    for (q, exact) in queries.iter().zip(&before_exact) {
        let got = c
            .search(
                COL,
                VER,
                q.clone(),
                10,
                SearchOptions {
                    ef: 64,
                    ..Default::default()
                },
            )
            .await?;
        hits += got
            .iter()
            .filter(|n| exact.iter().any(|e| e.id == n.id))
            .count();
        before_ann.push(got);
    }
    let recall = hits as f64 / (10.0 * queries.len() as f64);
    println!("recall@10 before restart = {recall}");
    assert!(recall >= 0.95, "recall@10 = {recall}");

    // Restart on the same data dir: the graph is reloaded from its generation, so
    // ANN results are identical, and exact results are unchanged.
    let tmp = server.stop().await?.expect("owned tempdir");
    let server =
        TestServer::start_in(tmp.path(), emberdb_server::DEFAULT_MAX_MESSAGE_BYTES).await?;
    let mut c = server.client().await?;
    let info = c.describe(COL, VER).await?;
    assert_eq!(info.point_count, 10_000);
    assert_eq!(
        info.indexed_count, 10_000,
        "graph should be loaded, not rebuilt"
    );
    for (i, q) in queries.iter().enumerate() {
        let exact = c
            .search(COL, VER, q.clone(), 10, exact_opts.clone())
            .await?;
        assert_eq!(exact, before_exact[i]);
        let ann = c
            .search(
                COL,
                VER,
                q.clone(),
                10,
                SearchOptions {
                    ef: 64,
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(ann, before_ann[i], "query {i}");
    }
    let metrics = server.scrape().await?;
    assert!(
        !metrics.contains("emberdb_index_rebuilds_total{reason=\"corrupt\"} 1"),
        "{metrics}"
    );
    server.stop().await?;
    drop(tmp);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_points_are_found_before_indexing() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    c.create_version(COL, VER, 8, Metric::L2).await?;
    let (vs, labels) = clustered(11, 3000, 8, 5);
    // Every acknowledged point is immediately its own nearest neighbour, ANN path included,
    // whether or not the indexer has reached it.
    for (i, chunk) in points(&vs, &labels, 0).chunks(500).enumerate() {
        c.upsert(COL, VER, chunk.to_vec()).await?;
        let last = chunk.last().expect("non-empty");
        let got = c
            .search(COL, VER, last.vector.clone(), 1, SearchOptions::default())
            .await?;
        assert_eq!(got[0].id, last.id, "batch {i}");
        assert_eq!(got[0].distance, 0.0);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_returns_exact_vectors_and_last_write_wins() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    c.create_version(COL, VER, 3, Metric::L2).await?;
    let mut p = emberdb_client::Point {
        id: 5,
        vector: vec![0.1, -0.0, 3.4028235e38 / 1e20],
        label: "cat".into(),
        metadata: [("source".to_string(), "cam-1".to_string())].into(),
        timestamp_ms: 1234,
    };
    // The same id three times in one batch: the last one wins.
    let mut p2 = p.clone();
    p2.label = "dog".into();
    let mut p3 = p.clone();
    p3.label = "bird".into();
    p3.vector = vec![1.0, 2.0, 3.0];
    assert_eq!(
        c.upsert(COL, VER, vec![p.clone(), p2, p3.clone()]).await?,
        3
    );
    let got = c.get(COL, VER, vec![5, 6, 5], true).await?;
    assert_eq!(
        got,
        vec![p3.clone()],
        "missing ids are left out, duplicates once"
    );
    // Overwrite again; the point is findable only by its new vector.
    p.vector = vec![-1.0, -1.0, -1.0];
    c.upsert(COL, VER, vec![p.clone()]).await?;
    let got = c.get(COL, VER, vec![5], true).await?;
    assert_eq!(got[0].vector, p.vector);
    assert_eq!(got[0].vector[1].to_bits(), p.vector[1].to_bits());
    let hits = c
        .search(COL, VER, vec![1.0, 2.0, 3.0], 10, SearchOptions::default())
        .await?;
    assert_eq!(
        hits.len(),
        1,
        "one live point, never the stale copy: {hits:?}"
    );
    assert_eq!(c.describe(COL, VER).await?.point_count, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosine_and_dot_distances() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    c.create_version(COL, "cos", 2, Metric::Cosine).await?;
    c.create_version(COL, "dot", 2, Metric::Dot).await?;
    let pts = vec![
        emberdb_client::Point {
            id: 1,
            vector: vec![1.0, 0.0],
            ..Default::default()
        },
        emberdb_client::Point {
            id: 2,
            vector: vec![0.0, 2.0],
            ..Default::default()
        },
        emberdb_client::Point {
            id: 3,
            vector: vec![-3.0, 0.0],
            ..Default::default()
        },
    ];
    c.upsert(COL, "cos", pts.clone()).await?;
    c.upsert(COL, "dot", pts).await?;
    let cos = c
        .search(COL, "cos", vec![2.0, 0.0], 3, SearchOptions::default())
        .await?;
    let got: Vec<(u64, f32)> = cos.iter().map(|n| (n.id, n.distance)).collect();
    assert_eq!(got, vec![(1, 0.0), (2, 1.0), (3, 2.0)]);
    let dot = c
        .search(COL, "dot", vec![1.0, 1.0], 3, SearchOptions::default())
        .await?;
    let got: Vec<(u64, f32)> = dot.iter().map(|n| (n.id, n.distance)).collect();
    assert_eq!(got, vec![(2, -2.0), (1, -1.0), (3, 3.0)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_return_k_when_k_match() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut c = server.client().await?;
    c.create_version(COL, VER, 16, Metric::L2).await?;
    let (vs, labels) = clustered(21, 4000, 16, 10);
    let mut pts = points(&vs, &labels, 0);
    for p in pts.iter_mut() {
        p.metadata.insert(
            "parity".into(),
            if p.id % 2 == 0 { "even" } else { "odd" }.into(),
        );
    }
    upsert_all(&mut c, COL, VER, pts.clone(), 1000).await?;
    wait_ready(&mut c, COL, VER).await?;
    // A rare label (about 1% of points after we relabel 40 of them) and a metadata filter.
    let rare: Vec<_> = pts
        .iter()
        .take(40)
        .cloned()
        .map(|mut p| {
            p.label = "rare".into();
            p
        })
        .collect();
    c.upsert(COL, VER, rare).await?;
    for (labels, metadata, k) in [
        (vec!["rare".to_string()], Default::default(), 25u32),
        (vec!["rare".to_string()], Default::default(), 100u32),
        (
            vec![],
            [("parity".to_string(), "odd".to_string())].into(),
            50,
        ),
        (
            vec!["c1".to_string(), "c2".to_string()],
            [("parity".to_string(), "even".to_string())].into(),
            30,
        ),
    ] {
        let filter = emberdb_client::pb::Filter {
            labels: labels.clone(),
            metadata,
        };
        let matching: Vec<&emberdb_client::Point> = pts
            .iter()
            .filter(|p| {
                let label = if p.id < 40 { "rare" } else { p.label.as_str() };
                (labels.is_empty() || labels.iter().any(|l| l == label))
                    && filter
                        .metadata
                        .iter()
                        .all(|(k, v)| p.metadata.get(k) == Some(v))
            })
            .collect();
        let want = (k as usize).min(matching.len());
        let got = c
            .search(
                COL,
                VER,
                vs[100].clone(),
                k,
                SearchOptions {
                    filter: Some(filter.clone()),
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(got.len(), want, "filter {filter:?} k={k}");
        assert!(got.iter().all(|n| matching.iter().any(|p| p.id == n.id)));
    }
    Ok(())
}
