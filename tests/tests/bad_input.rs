//! Bad input: a clear status naming the field, nothing stored, server still serving.

use emberdb_client::{Metric, Point, SearchOptions, pb};
use emberdb_tests::TestServer;
use tonic::Code;

fn pt(id: u64, vector: Vec<f32>) -> Point {
    Point {
        id,
        vector,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_and_nothing_is_stored() -> anyhow::Result<()> {
    let server = TestServer::start_in_small().await?;
    let mut c = server.client().await?;
    c.create_version("col", "v", 4, Metric::L2).await?;
    c.create_version("col", "cos", 4, Metric::Cosine).await?;
    c.upsert("col", "v", vec![pt(1, vec![1.0, 2.0, 3.0, 4.0])])
        .await?;

    let expect = |r: Result<u64, tonic::Status>, code: Code, field: &str| {
        let e = r.expect_err("must fail");
        assert_eq!(e.code(), code, "{e:?}");
        assert!(
            e.message().contains(field),
            "message {:?} should name {field}",
            e.message()
        );
    };
    // Wrong dimension, alone and inside a batch (the batch is atomic).
    expect(
        c.upsert("col", "v", vec![pt(2, vec![1.0; 3])]).await,
        Code::InvalidArgument,
        "points[0].vector",
    );
    expect(
        c.upsert(
            "col",
            "v",
            vec![
                pt(2, vec![1.0; 4]),
                pt(3, vec![1.0; 4]),
                pt(4, vec![1.0; 5]),
            ],
        )
        .await,
        Code::InvalidArgument,
        "points[2].vector: expected 4 values, got 5",
    );
    expect(
        c.upsert("col", "v", vec![pt(2, vec![])]).await,
        Code::InvalidArgument,
        "points[0].vector",
    );
    // Non-finite values, and values whose square overflows.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        expect(
            c.upsert("col", "v", vec![pt(2, vec![0.0, bad, 0.0, 0.0])])
                .await,
            Code::InvalidArgument,
            "points[0].vector[1]",
        );
    }
    expect(
        c.upsert("col", "v", vec![pt(2, vec![1e30; 4])]).await,
        Code::InvalidArgument,
        "points[0].vector",
    );
    expect(
        c.upsert("col", "cos", vec![pt(2, vec![0.0; 4])]).await,
        Code::InvalidArgument,
        "zero vector",
    );
    // Over-long label.
    let mut p = pt(2, vec![1.0; 4]);
    p.label = "x".repeat(300);
    expect(
        c.upsert("col", "v", vec![p]).await,
        Code::InvalidArgument,
        "points[0].label",
    );
    // Unknown collection, version or alias.
    expect(
        c.upsert("nope", "v", vec![pt(2, vec![1.0; 4])]).await,
        Code::NotFound,
        "collection 'nope'",
    );
    expect(
        c.upsert("col", "nope", vec![pt(2, vec![1.0; 4])]).await,
        Code::NotFound,
        "'nope'",
    );
    assert_eq!(
        c.describe("col", "v").await?.point_count,
        1,
        "nothing stored by rejected upserts"
    );

    // Search: k, ef, dimension, NaN.
    let s = |r: Result<Vec<pb::Neighbor>, tonic::Status>, code: Code, field: &str| {
        let e = r.expect_err("must fail");
        assert_eq!(e.code(), code, "{e:?}");
        assert!(
            e.message().contains(field),
            "message {:?} should name {field}",
            e.message()
        );
    };
    s(
        c.search("col", "v", vec![1.0; 4], 0, SearchOptions::default())
            .await,
        Code::InvalidArgument,
        "k:",
    );
    s(
        c.search("col", "v", vec![1.0; 4], 10_001, SearchOptions::default())
            .await,
        Code::InvalidArgument,
        "k:",
    );
    s(
        c.search(
            "col",
            "v",
            vec![1.0; 4],
            10,
            SearchOptions {
                ef: 10_000_000,
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
        "ef:",
    );
    s(
        c.search("col", "v", vec![1.0; 3], 10, SearchOptions::default())
            .await,
        Code::InvalidArgument,
        "vector",
    );
    s(
        c.search("col", "v", vec![f32::NAN; 4], 10, SearchOptions::default())
            .await,
        Code::InvalidArgument,
        "vector[0]",
    );
    s(
        c.search("col", "ghost", vec![1.0; 4], 10, SearchOptions::default())
            .await,
        Code::NotFound,
        "ghost",
    );
    assert_eq!(
        c.search("col", "v", vec![1.0; 4], 10_000, SearchOptions::default())
            .await?
            .len(),
        1
    );

    // Names: empty, too long, path-like, control characters.
    for (name, what) in [
        ("", "empty"),
        ("..", "A-Z"),
        ("a/b", "A-Z"),
        ("a\u{1}b", "A-Z"),
        ("%2e%2e%2f", "A-Z"),
    ] {
        let e = c
            .create_version(name, "v", 4, Metric::L2)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("collection") && e.message().contains(what),
            "{}",
            e.message()
        );
        let e = c
            .create_version("col", name, 4, Metric::L2)
            .await
            .unwrap_err();
        assert!(e.message().starts_with("version"), "{}", e.message());
    }
    let long = "x".repeat(65);
    let e = c
        .create_version(&long, "v", 4, Metric::L2)
        .await
        .unwrap_err();
    assert!(e.message().contains("at most 64"), "{}", e.message());
    // Dimension, metric, HNSW params.
    let e = c
        .create_version("col", "d0", 0, Metric::L2)
        .await
        .unwrap_err();
    assert!(e.message().starts_with("dimension"), "{}", e.message());
    let e = c
        .create_version("col", "d1", 65_537, Metric::L2)
        .await
        .unwrap_err();
    assert!(e.message().starts_with("dimension"), "{}", e.message());
    let e = c
        .create_version("col", "m0", 4, Metric::Unspecified)
        .await
        .unwrap_err();
    assert!(e.message().starts_with("metric"), "{}", e.message());
    let e = c
        .create_version_with(pb::CreateVersionRequest {
            collection: "col".into(),
            version: "hm".into(),
            dimension: 4,
            metric: Metric::L2 as i32,
            hnsw: Some(pb::HnswParams {
                m: 300,
                ef_construction: 0,
            }),
        })
        .await
        .unwrap_err();
    assert!(e.message().starts_with("hnsw.m"), "{}", e.message());
    // Existing version, and an alias that collides with a version name.
    let e = c
        .create_version("col", "v", 4, Metric::L2)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(e.message().contains("'v'"), "{}", e.message());
    let e = c.set_alias("col", "cos", "v").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c.delete_alias("col", "nope").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Oversized message: this server's limit is 1 MiB; tonic answers OUT_OF_RANGE.
    let big: Vec<Point> = (0..1000).map(|i| pt(100 + i, vec![1.0; 4])).collect();
    c.upsert("col", "v", big).await?; // well under the limit
    let huge = vec![pt(7, vec![1.0; 300_000])];
    let e = c.upsert("col", "v", huge).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");

    // Nothing else was stored, nothing created, and the server still serves.
    let cols = c.list_collections().await?;
    assert_eq!(cols.len(), 1);
    assert_eq!(cols[0].versions.len(), 2);
    assert_eq!(c.describe("col", "v").await?.point_count, 1001);
    assert_eq!(
        c.search(
            "col",
            "v",
            vec![1.0, 2.0, 3.0, 4.0],
            1,
            SearchOptions::default()
        )
        .await?[0]
            .id,
        1
    );
    Ok(())
}
