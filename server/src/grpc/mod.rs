//! The gRPC server: services, tower layers, health, reflection, limits, shutdown.

mod archive;
mod blocking;
mod collections;
pub mod convert;
mod evaluation;
mod operations;
mod points;
mod snapshots;

use std::future::Future;
use std::sync::Arc;

use emberdb_proto::v1::collections_server::CollectionsServer;
use emberdb_proto::v1::evaluation_server::EvaluationServer;
use emberdb_proto::v1::operations_server::OperationsServer;
use emberdb_proto::v1::points_server::PointsServer;
use emberdb_proto::v1::snapshots_server::SnapshotsServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

pub use blocking::Blocking;

use crate::auth::{AuthLayer, Keyring};
use crate::metrics::{Metrics, MetricsLayer};

/// Transport settings of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub max_message_bytes: usize,
    pub keys: Arc<Keyring>,
    pub tls: Option<crate::TlsFiles>,
    pub max_concurrent_evaluations: usize,
    /// Where monitors' bundles are (ListBundles, DownloadBundle).
    pub recorder: Arc<crate::bundle::FlightRecorder>,
}

/// Serves gRPC on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    analysis: Arc<emberdb_analysis::Analysis>,
    listener: TcpListener,
    metrics: Arc<Metrics>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let max_message_bytes = opts.max_message_bytes;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let blocking = Arc::new(Blocking::new(
        analysis,
        cores * 8,
        opts.max_concurrent_evaluations,
    ));

    let collections = CollectionsServer::new(collections::CollectionsService {
        blocking: blocking.clone(),
    })
    .max_decoding_message_size(max_message_bytes)
    .max_encoding_message_size(max_message_bytes);
    let evaluation = EvaluationServer::new(evaluation::EvaluationService {
        blocking: blocking.clone(),
    })
    .max_decoding_message_size(max_message_bytes)
    .max_encoding_message_size(max_message_bytes);
    let operations = OperationsServer::new(operations::OperationsService {
        blocking: blocking.clone(),
        recorder: opts.recorder.clone(),
    })
    .max_decoding_message_size(max_message_bytes)
    .max_encoding_message_size(max_message_bytes);
    let snapshots = SnapshotsServer::new(snapshots::SnapshotsService {
        blocking: blocking.clone(),
    })
    .max_decoding_message_size(max_message_bytes)
    .max_encoding_message_size(max_message_bytes);
    let points = PointsServer::new(points::PointsService {
        blocking,
        metrics: metrics.clone(),
    })
    .max_decoding_message_size(max_message_bytes)
    .max_encoding_message_size(max_message_bytes);

    let (health_reporter, health) = tonic_health::server::health_reporter();
    // The engine is fully loaded (indexes verified or scheduled for rebuild) before we get here.
    health_reporter
        .set_serving::<CollectionsServer<collections::CollectionsService>>()
        .await;
    health_reporter
        .set_serving::<PointsServer<points::PointsService>>()
        .await;
    health_reporter
        .set_serving::<EvaluationServer<evaluation::EvaluationService>>()
        .await;
    health_reporter
        .set_serving::<OperationsServer<operations::OperationsService>>()
        .await;
    health_reporter
        .set_serving::<SnapshotsServer<snapshots::SnapshotsService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(emberdb_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = &opts.tls {
        let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(&t.cert_pem, &t.key_pem));
        if let Some(ca) = &t.client_ca_pem {
            cfg = cfg.client_ca_root(Certificate::from_pem(ca));
        }
        builder = builder
            .tls_config(cfg)
            .map_err(|e| anyhow::anyhow!("TLS configuration: {e}"))?;
    }
    builder
        .concurrency_limit_per_connection(256)
        .layer(MetricsLayer(metrics))
        .layer(AuthLayer(opts.keys))
        .add_service(health)
        .add_service(reflection)
        .add_service(collections)
        .add_service(points)
        .add_service(evaluation)
        .add_service(operations)
        .add_service(snapshots)
        .serve_with_incoming_shutdown(
            // Our own listener skips tonic's defaults: without TCP_NODELAY, small
            // responses wait on Nagle's algorithm.
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}
