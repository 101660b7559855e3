//! `emberdb.v1.Snapshots`: thin handlers over the engine's backups (`emberdb_storage::backup`).
//! Every call spans the whole server, so each needs an admin key without a collection limit, and
//! create and delete are audited.

use std::sync::Arc;

use emberdb_proto::v1 as pb;
use emberdb_proto::v1::snapshots_server::Snapshots;
use emberdb_storage::backup::BackupManifest;
use tonic::{Request, Response, Status};

use super::blocking::Blocking;
use crate::auth::{Caller, Role};

pub struct SnapshotsService {
    pub blocking: Arc<Blocking>,
}

fn info(m: BackupManifest) -> pb::SnapshotInfo {
    let (files, bytes) = (m.files.len() as u64, m.bytes());
    let mut versions: Vec<pb::SnapshotVersion> = m
        .versions
        .into_iter()
        .map(|v| pb::SnapshotVersion {
            collection: v.collection,
            version: v.version,
            op_sequence: v.seq,
            has_index: v.generation.is_some(),
        })
        .collect();
    versions.sort_by(|a, b| (&a.collection, &a.version).cmp(&(&b.collection, &b.version)));
    pb::SnapshotInfo {
        name: m.name,
        collection: m.collection.unwrap_or_default(),
        created_ms: m.created_ms,
        files,
        bytes,
        versions,
    }
}

/// The name a snapshot gets when the request leaves it empty.
fn default_name() -> String {
    format!("snapshot-{}", crate::bundle::now_ms())
}

type ChunkStream = super::archive::ChunkStream<pb::SnapshotChunk>;

#[tonic::async_trait]
impl Snapshots for SnapshotsService {
    type DownloadSnapshotStream = ChunkStream;

    async fn download_snapshot(
        &self,
        req: Request<pb::DownloadSnapshotRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        Caller::of(&req)?.check_server_wide(Role::Admin)?;
        let pb::DownloadSnapshotRequest { name } = req.into_inner();
        let dir = self.blocking.run(move |e| e.backup_dir(&name)).await?;
        // Packing reads and hashes every file: a blocking thread, paced by the client's reads.
        Ok(Response::new(super::archive::stream_archive(move |w| {
            emberdb_storage::backup::write_archive(&dir, w).map_err(crate::error::to_status)
        })))
    }

    async fn create_snapshot(
        &self,
        req: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
        let caller = Caller::of(&req)?;
        caller.check_server_wide(Role::Admin)?;
        let pb::CreateSnapshotRequest { name, collection } = req.into_inner();
        let name = if name.is_empty() {
            default_name()
        } else {
            name
        };
        let n = name.clone();
        caller
            .audited("CreateSnapshot", "", &n, Role::Admin, async move {
                let m = self
                    .blocking
                    .run(move |e| {
                        let only = (!collection.is_empty()).then_some(collection.as_str());
                        e.create_backup_of(&name, only)
                    })
                    .await?;
                tracing::info!(snapshot = %m.name, files = m.files.len(), bytes = m.bytes(), "snapshot created");
                Ok(Response::new(pb::CreateSnapshotResponse {
                    snapshot: Some(info(m)),
                }))
            })
            .await
    }

    async fn list_snapshots(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        Caller::of(&req)?.check_server_wide(Role::Admin)?;
        let pb::ListSnapshotsRequest {} = req.into_inner();
        let all = self.blocking.run(|e| e.list_backups()).await?;
        Ok(Response::new(pb::ListSnapshotsResponse {
            snapshots: all.into_iter().map(info).collect(),
        }))
    }

    async fn delete_snapshot(
        &self,
        req: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        let caller = Caller::of(&req)?;
        caller.check_server_wide(Role::Admin)?;
        let pb::DeleteSnapshotRequest { name } = req.into_inner();
        let n = name.clone();
        caller
            .audited("DeleteSnapshot", "", &n, Role::Admin, async move {
                self.blocking.run(move |e| e.delete_backup(&name)).await?;
                Ok(Response::new(pb::DeleteSnapshotResponse {}))
            })
            .await
    }
}
