//! Proto ↔ domain conversions. Proto structs are destructured without `..`, so a
//! new field fails to compile until it is handled here.

use emberdb_proto::v1 as pb;
use emberdb_storage::{
    CollectionInfo, Filter, Hit, IndexStatus, Metric, PointInput, PointOutput, VersionInfo,
    VersionSpec,
};
use tonic::Status;

pub fn metric_from_pb(m: i32) -> Result<Option<Metric>, Status> {
    match pb::Metric::try_from(m) {
        Ok(pb::Metric::Unspecified) => Ok(None),
        Ok(pb::Metric::L2) => Ok(Some(Metric::L2)),
        Ok(pb::Metric::Cosine) => Ok(Some(Metric::Cosine)),
        Ok(pb::Metric::Dot) => Ok(Some(Metric::Dot)),
        Err(_) => Err(Status::invalid_argument(format!(
            "metric: unknown value {m}"
        ))),
    }
}

pub fn metric_to_pb(m: Metric) -> pb::Metric {
    match m {
        Metric::L2 => pb::Metric::L2,
        Metric::Cosine => pb::Metric::Cosine,
        Metric::Dot => pb::Metric::Dot,
    }
}

pub fn version_spec(r: &pb::CreateVersionRequest) -> Result<VersionSpec, Status> {
    let pb::CreateVersionRequest {
        collection: _,
        version: _,
        dimension,
        metric,
        hnsw,
    } = r;
    let (m, ef_construction) = hnsw.as_ref().map_or((0, 0), |h| {
        let pb::HnswParams { m, ef_construction } = h;
        (*m, *ef_construction)
    });
    Ok(VersionSpec {
        dim: *dimension,
        metric: metric_from_pb(*metric)?,
        m,
        ef_construction,
    })
}

pub fn version_info(v: VersionInfo) -> pb::VersionInfo {
    let VersionInfo {
        collection,
        version,
        dim,
        metric,
        point_count,
        indexed_count,
        status,
        m,
        ef_construction,
        created_ms,
    } = v;
    pb::VersionInfo {
        collection,
        version,
        dimension: dim,
        metric: metric_to_pb(metric) as i32,
        point_count,
        indexed_count,
        state: match status {
            IndexStatus::Ready => pb::VersionState::Ready,
            IndexStatus::Indexing => pb::VersionState::Indexing,
        } as i32,
        hnsw: Some(pb::HnswParams { m, ef_construction }),
        created_ms,
    }
}

pub fn collection_info(c: CollectionInfo) -> pb::CollectionInfo {
    let CollectionInfo {
        name,
        versions,
        aliases,
    } = c;
    pb::CollectionInfo {
        name,
        versions: versions.into_iter().map(version_info).collect(),
        aliases: aliases
            .into_iter()
            .map(|(alias, version)| pb::AliasInfo { alias, version })
            .collect(),
    }
}

pub fn point_in(p: pb::Point) -> PointInput {
    let pb::Point {
        id,
        vector,
        label,
        metadata,
        timestamp_ms,
    } = p;
    PointInput {
        id,
        vector,
        label,
        metadata,
        timestamp_ms,
    }
}

pub fn point_out(p: PointOutput) -> pb::Point {
    let PointOutput {
        id,
        vector,
        label,
        metadata,
        timestamp_ms,
    } = p;
    pb::Point {
        id,
        vector: vector.unwrap_or_default(),
        label,
        metadata,
        timestamp_ms,
    }
}

pub fn filter(f: Option<pb::Filter>) -> Option<Filter> {
    f.map(|pb::Filter { labels, metadata }| Filter { labels, metadata })
        .filter(|f| !(f.labels.is_empty() && f.metadata.is_empty()))
}

pub fn neighbors(hits: Vec<Hit>) -> Vec<pb::Neighbor> {
    hits.into_iter()
        .map(
            |Hit {
                 id,
                 distance,
                 label,
             }| pb::Neighbor {
                id,
                distance,
                label,
            },
        )
        .collect()
}
