//! Typed async client for EmberDB's gRPC API.
//!
//! **Architecture invariant:** depends on `emberdb-proto` only, never on the
//! server or storage crates.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut c = emberdb_client::Client::connect("http://127.0.0.1:50051").await?;
//! c.create_version("images", "resnet-v1", 128, emberdb_client::Metric::L2).await?;
//! # Ok(()) }
//! ```

pub mod bundle;
pub mod formats;
pub mod report;

pub use emberdb_proto::v1 as pb;
pub use pb::{Metric, Neighbor, Point};

use pb::collections_client::CollectionsClient;
use pb::evaluation_client::EvaluationClient;
use pb::operations_client::OperationsClient;
use pb::points_client::PointsClient;
use pb::snapshots_client::SnapshotsClient;
use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Largest message the client sends or accepts by default.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The channel every typed client sends on, with the API key attached to each request.
type Authed = InterceptedService<Channel, ApiKey>;

/// A connection to one EmberDB server. Cheap to clone (one HTTP/2 channel).
#[derive(Debug, Clone)]
pub struct Client {
    collections: CollectionsClient<Authed>,
    points: PointsClient<Authed>,
    evaluation: EvaluationClient<Authed>,
    operations: OperationsClient<Authed>,
    snapshots: SnapshotsClient<Authed>,
}

/// Adds `authorization: Bearer <key>` to every request when a key is set.
#[derive(Clone, Default)]
pub struct ApiKey(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.write_str(if self.0.is_some() {
            "ApiKey(set)"
        } else {
            "ApiKey(none)"
        })
    }
}

impl Interceptor for ApiKey {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// How to reach a server beyond its address: an API key and TLS settings (PEM contents).
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// Sent as `authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// CA that signed the server's certificate (an `https://` address without it uses the
    /// platform's roots where available).
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Client certificate and key, for servers that require mutual TLS.
    pub tls_identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("tls_ca", &self.tls_ca_pem.is_some())
            .field("tls_identity", &self.tls_identity.is_some())
            .finish()
    }
}

/// Search options beyond the query and k.
#[derive(Debug, Clone, Default)]
pub struct SearchOptions {
    /// 0 means the server default.
    pub ef: u32,
    pub exact: bool,
    pub filter: Option<pb::Filter>,
}

impl Client {
    /// Connects to `addr`, e.g. `http://127.0.0.1:50051`.
    pub async fn connect(addr: impl Into<String>) -> Result<Self, ConnectError> {
        Self::connect_with(addr, ConnectOptions::default()).await
    }

    /// Connects with an API key and/or TLS. An `https://` address uses TLS; so does any
    /// address when a CA or client identity is given.
    pub async fn connect_with(
        addr: impl Into<String>,
        opts: ConnectOptions,
    ) -> Result<Self, ConnectError> {
        let mut addr = addr.into();
        let tls = addr.starts_with("https://")
            || opts.tls_ca_pem.is_some()
            || opts.tls_identity.is_some();
        if tls && addr.starts_with("http://") {
            addr = format!("https://{}", &addr["http://".len()..]);
        }
        let mut endpoint = Channel::from_shared(addr.clone())
            .map_err(|e| ConnectError::InvalidAddress(format!("{addr}: {e}")))?;
        if tls {
            let mut cfg = ClientTlsConfig::new();
            if let Some(ca) = &opts.tls_ca_pem {
                cfg = cfg.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &opts.tls_identity {
                cfg = cfg.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(cfg)?;
        }
        let key = match &opts.api_key {
            None => None,
            Some(k) => Some(
                format!("Bearer {k}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| ConnectError::InvalidApiKey)?,
            ),
        };
        let channel = endpoint.connect().await?;
        Ok(Self::with_key(
            channel,
            DEFAULT_MAX_MESSAGE_BYTES,
            ApiKey(key),
        ))
    }

    pub fn from_channel(channel: Channel, max_message_bytes: usize) -> Self {
        Self::with_key(channel, max_message_bytes, ApiKey::default())
    }

    fn with_key(channel: Channel, max_message_bytes: usize, key: ApiKey) -> Self {
        let authed = InterceptedService::new(channel, key);
        Client {
            collections: CollectionsClient::new(authed.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
            points: PointsClient::new(authed.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
            evaluation: EvaluationClient::new(authed.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
            operations: OperationsClient::new(authed.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
            snapshots: SnapshotsClient::new(authed)
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        }
    }

    pub async fn create_version(
        &mut self,
        collection: &str,
        version: &str,
        dimension: u32,
        metric: Metric,
    ) -> Result<pb::VersionInfo, Status> {
        self.create_version_with(pb::CreateVersionRequest {
            collection: collection.into(),
            version: version.into(),
            dimension,
            metric: metric as i32,
            hnsw: None,
        })
        .await
    }

    pub async fn create_version_with(
        &mut self,
        req: pb::CreateVersionRequest,
    ) -> Result<pb::VersionInfo, Status> {
        let r = self.collections.create_version(req).await?.into_inner();
        r.version
            .ok_or_else(|| Status::internal("server sent no version"))
    }

    pub async fn list_collections(&mut self) -> Result<Vec<pb::CollectionInfo>, Status> {
        Ok(self
            .collections
            .list_collections(pb::ListCollectionsRequest {})
            .await?
            .into_inner()
            .collections)
    }

    pub async fn describe(
        &mut self,
        collection: &str,
        version: &str,
    ) -> Result<pb::VersionInfo, Status> {
        let r = self
            .collections
            .describe_version(pb::DescribeVersionRequest {
                collection: collection.into(),
                version: version.into(),
            })
            .await?
            .into_inner();
        r.version
            .ok_or_else(|| Status::internal("server sent no version"))
    }

    pub async fn drop_version(&mut self, collection: &str, version: &str) -> Result<(), Status> {
        self.collections
            .drop_version(pb::DropVersionRequest {
                collection: collection.into(),
                version: version.into(),
            })
            .await?;
        Ok(())
    }

    pub async fn drop_collection(&mut self, collection: &str) -> Result<(), Status> {
        self.collections
            .drop_collection(pb::DropCollectionRequest {
                collection: collection.into(),
            })
            .await?;
        Ok(())
    }

    /// Returns the version the alias pointed to before ("" when new).
    pub async fn set_alias(
        &mut self,
        collection: &str,
        alias: &str,
        version: &str,
    ) -> Result<String, Status> {
        Ok(self
            .collections
            .set_alias(pb::SetAliasRequest {
                collection: collection.into(),
                alias: alias.into(),
                version: version.into(),
            })
            .await?
            .into_inner()
            .previous_version)
    }

    pub async fn delete_alias(&mut self, collection: &str, alias: &str) -> Result<(), Status> {
        self.collections
            .delete_alias(pb::DeleteAliasRequest {
                collection: collection.into(),
                alias: alias.into(),
            })
            .await?;
        Ok(())
    }

    pub async fn upsert(
        &mut self,
        collection: &str,
        version: &str,
        points: Vec<Point>,
    ) -> Result<u64, Status> {
        Ok(self
            .points
            .upsert(pb::UpsertRequest {
                collection: collection.into(),
                version: version.into(),
                points,
            })
            .await?
            .into_inner()
            .upserted)
    }

    /// Streams batches; each is committed atomically and durably by the server.
    pub async fn upsert_stream(
        &mut self,
        batches: impl futures::Stream<Item = pb::UpsertRequest> + Send + 'static,
    ) -> Result<u64, Status> {
        Ok(self
            .points
            .upsert_stream(batches)
            .await?
            .into_inner()
            .upserted)
    }

    pub async fn delete(
        &mut self,
        collection: &str,
        version: &str,
        ids: Vec<u64>,
    ) -> Result<u64, Status> {
        Ok(self
            .points
            .delete(pb::DeleteRequest {
                collection: collection.into(),
                version: version.into(),
                ids,
            })
            .await?
            .into_inner()
            .deleted)
    }

    pub async fn get(
        &mut self,
        collection: &str,
        version: &str,
        ids: Vec<u64>,
        with_vectors: bool,
    ) -> Result<Vec<Point>, Status> {
        Ok(self
            .points
            .get(pb::GetRequest {
                collection: collection.into(),
                version: version.into(),
                ids,
                with_vectors,
            })
            .await?
            .into_inner()
            .points)
    }

    pub async fn search(
        &mut self,
        collection: &str,
        version: &str,
        vector: Vec<f32>,
        k: u32,
        opts: SearchOptions,
    ) -> Result<Vec<Neighbor>, Status> {
        Ok(self
            .points
            .search(pb::SearchRequest {
                collection: collection.into(),
                version: version.into(),
                vector,
                k,
                ef: opts.ef,
                exact: opts.exact,
                filter: opts.filter,
                columns: false,
            })
            .await?
            .into_inner()
            .neighbors)
    }

    pub async fn search_batch(
        &mut self,
        collection: &str,
        version: &str,
        queries: Vec<Vec<f32>>,
        k: u32,
        opts: SearchOptions,
    ) -> Result<Vec<Vec<Neighbor>>, Status> {
        Ok(self
            .points
            .search_batch(pb::SearchBatchRequest {
                collection: collection.into(),
                version: version.into(),
                queries: queries
                    .into_iter()
                    .map(|vector| pb::SearchQuery { vector })
                    .collect(),
                k,
                ef: opts.ef,
                exact: opts.exact,
                filter: opts.filter,
            })
            .await?
            .into_inner()
            .results
            .into_iter()
            .map(|r| r.neighbors)
            .collect())
    }
}

/// Evaluation calls take the request message as is (every option is a field) and an
/// optional deadline, sent as `grpc-timeout`; the server stops with DEADLINE_EXCEEDED.
fn with_deadline<T>(msg: T, timeout: Option<std::time::Duration>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = timeout {
        r.set_timeout(t);
    }
    r
}

impl Client {
    pub async fn recall(
        &mut self,
        req: pb::RecallRequest,
        timeout: Option<std::time::Duration>,
    ) -> Result<pb::RecallReport, Status> {
        Ok(self
            .evaluation
            .recall(with_deadline(req, timeout))
            .await?
            .into_inner())
    }

    pub async fn margin(
        &mut self,
        req: pb::MarginRequest,
        timeout: Option<std::time::Duration>,
    ) -> Result<pb::MarginReport, Status> {
        Ok(self
            .evaluation
            .margin(with_deadline(req, timeout))
            .await?
            .into_inner())
    }

    pub async fn confusion(
        &mut self,
        req: pb::ConfusionRequest,
        timeout: Option<std::time::Duration>,
    ) -> Result<pb::ConfusionReport, Status> {
        Ok(self
            .evaluation
            .confusion(with_deadline(req, timeout))
            .await?
            .into_inner())
    }

    pub async fn actions(
        &mut self,
        req: pb::ActionsRequest,
        timeout: Option<std::time::Duration>,
    ) -> Result<pb::ActionsReport, Status> {
        Ok(self
            .evaluation
            .actions(with_deadline(req, timeout))
            .await?
            .into_inner())
    }

    pub async fn project(
        &mut self,
        req: pb::ProjectRequest,
        timeout: Option<std::time::Duration>,
    ) -> Result<pb::ProjectReport, Status> {
        Ok(self
            .evaluation
            .project(with_deadline(req, timeout))
            .await?
            .into_inner())
    }
}

impl Client {
    pub async fn drift(
        &mut self,
        req: pb::DriftRequest,
        timeout: Option<std::time::Duration>,
    ) -> Result<pb::DriftReport, Status> {
        Ok(self
            .operations
            .drift(with_deadline(req, timeout))
            .await?
            .into_inner())
    }

    pub async fn compare_versions(
        &mut self,
        req: pb::CompareVersionsRequest,
        timeout: Option<std::time::Duration>,
    ) -> Result<pb::CompareVersionsReport, Status> {
        Ok(self
            .operations
            .compare_versions(with_deadline(req, timeout))
            .await?
            .into_inner())
    }

    pub async fn check_consistency(
        &mut self,
        collection: &str,
        version: &str,
        repair: bool,
    ) -> Result<pb::ConsistencyReport, Status> {
        Ok(self
            .operations
            .check_consistency(pb::CheckConsistencyRequest {
                collection: collection.into(),
                version: version.into(),
                repair,
            })
            .await?
            .into_inner())
    }

    /// Creates or replaces a monitor; returns whether one was replaced.
    pub async fn set_monitor(&mut self, spec: pb::MonitorSpec) -> Result<bool, Status> {
        Ok(self
            .operations
            .set_monitor(pb::SetMonitorRequest { spec: Some(spec) })
            .await?
            .into_inner()
            .replaced)
    }

    pub async fn list_monitors(
        &mut self,
        collection: &str,
    ) -> Result<Vec<pb::MonitorStatus>, Status> {
        Ok(self
            .operations
            .list_monitors(pb::ListMonitorsRequest {
                collection: collection.into(),
            })
            .await?
            .into_inner()
            .monitors)
    }

    pub async fn delete_monitor(&mut self, collection: &str, version: &str) -> Result<(), Status> {
        self.operations
            .delete_monitor(pb::DeleteMonitorRequest {
                collection: collection.into(),
                version: version.into(),
            })
            .await?;
        Ok(())
    }

    /// Writes an incident bundle (`.tar.gz`) of two windows into `out`, checking the archive's
    /// SHA-256; returns the bytes written. On any failure `out` is removed.
    pub async fn export_bundle(
        &mut self,
        req: pb::ExportBundleRequest,
        timeout: Option<std::time::Duration>,
        out: &std::path::Path,
    ) -> anyhow::Result<u64> {
        let stream = self
            .operations
            .export_bundle(with_deadline(req, timeout))
            .await;
        save_archive(stream, out).await
    }

    /// Bundles monitors recorded (`record_bundles`), oldest first; of one collection, or of
    /// every collection the key may read when `collection` is empty.
    pub async fn list_bundles(&mut self, collection: &str) -> Result<Vec<pb::BundleInfo>, Status> {
        Ok(self
            .operations
            .list_bundles(pb::ListBundlesRequest {
                collection: collection.into(),
            })
            .await?
            .into_inner()
            .bundles)
    }

    /// Downloads a recorded bundle into `out`, checking its SHA-256; returns the bytes written.
    pub async fn download_bundle(
        &mut self,
        name: &str,
        out: &std::path::Path,
    ) -> anyhow::Result<u64> {
        let stream = self
            .operations
            .download_bundle(pb::DownloadBundleRequest { name: name.into() })
            .await;
        save_archive(stream, out).await
    }

    /// A point-in-time snapshot of one collection, or of the whole server when `collection` is
    /// empty (`name` empty: one is chosen).
    pub async fn create_snapshot(
        &mut self,
        name: &str,
        collection: &str,
    ) -> Result<pb::SnapshotInfo, Status> {
        self.snapshots
            .create_snapshot(pb::CreateSnapshotRequest {
                name: name.into(),
                collection: collection.into(),
            })
            .await?
            .into_inner()
            .snapshot
            .ok_or_else(|| Status::internal("CreateSnapshot answered without a snapshot"))
    }

    pub async fn list_snapshots(&mut self) -> Result<Vec<pb::SnapshotInfo>, Status> {
        Ok(self
            .snapshots
            .list_snapshots(pb::ListSnapshotsRequest {})
            .await?
            .into_inner()
            .snapshots)
    }

    /// Downloads a snapshot as one tar archive into `out`, checking the archive's SHA-256 against
    /// the server's; returns the bytes written. On any failure `out` is removed.
    pub async fn download_snapshot(
        &mut self,
        name: &str,
        out: &std::path::Path,
    ) -> anyhow::Result<u64> {
        let stream = self
            .snapshots
            .download_snapshot(pb::DownloadSnapshotRequest { name: name.into() })
            .await;
        save_archive(stream, out).await
    }

    pub async fn delete_snapshot(&mut self, name: &str) -> Result<(), Status> {
        self.snapshots
            .delete_snapshot(pb::DeleteSnapshotRequest { name: name.into() })
            .await?;
        Ok(())
    }
}

/// A chunk of a streamed archive: bytes, or (last) the archive's hex SHA-256.
trait ArchiveChunk {
    fn parts(self) -> (Vec<u8>, String);
}

impl ArchiveChunk for pb::SnapshotChunk {
    fn parts(self) -> (Vec<u8>, String) {
        (self.data, self.archive_sha256)
    }
}

impl ArchiveChunk for pb::BundleChunk {
    fn parts(self) -> (Vec<u8>, String) {
        (self.data, self.archive_sha256)
    }
}

/// Writes a streamed archive to `out`, checking its SHA-256; `out` is removed on any failure.
async fn save_archive<C: ArchiveChunk>(
    stream: Result<tonic::Response<tonic::Streaming<C>>, Status>,
    out: &std::path::Path,
) -> anyhow::Result<u64> {
    use sha2::Digest;
    use tokio::io::AsyncWriteExt;
    let result = async {
        let mut stream = stream?.into_inner();
        let mut file = tokio::fs::File::create(out).await?;
        let mut hash = sha2::Sha256::new();
        let mut written = 0u64;
        while let Some(chunk) = stream.message().await? {
            let (data, sha) = chunk.parts();
            if !sha.is_empty() {
                let got: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
                anyhow::ensure!(got == sha, "archive SHA-256 {got}, the server sent {sha}");
                file.sync_all().await?;
                return Ok(written);
            }
            hash.update(&data);
            file.write_all(&data).await?;
            written += data.len() as u64;
        }
        anyhow::bail!("the download ended before the archive's checksum")
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(out).await;
    }
    result
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid server address {0}")]
    InvalidAddress(String),
    #[error("the API key must be printable ASCII")]
    InvalidApiKey,
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}
