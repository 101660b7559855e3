//! Shared pieces of EmberDB's benchmark binaries: the datasets and the server process.

pub mod data;
pub mod server;

use emberdb_client::{Client, Metric, pb};

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
