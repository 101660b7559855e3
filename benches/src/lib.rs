//! Shared pieces of EmberDB's benchmark binaries: the datasets and the server process.

pub mod data;
pub mod server;

use emberdb_client::{Client, Metric, pb};

/// Polls until every point of the version is in its graph.
pub async fn wait_indexed(c: &mut Client, collection: &str, version: &str) -> anyhow::Result<()> {
    loop {
        let v = c.describe(collection, version).await?;
        if v.indexed_count == v.point_count {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Creates an L2 version with HNSW parameters `m` and `ef_construction`.
pub async fn create_l2_version(
    c: &mut Client,
    collection: &str,
    version: &str,
    dimension: usize,
    m: u32,
    ef_construction: u32,
) -> anyhow::Result<()> {
    c.create_version_with(pb::CreateVersionRequest {
        collection: collection.into(),
        version: version.into(),
        dimension: dimension as u32,
        metric: Metric::L2 as i32,
        hnsw: Some(pb::HnswParams { m, ef_construction }),
    })
    .await?;
    Ok(())
}
