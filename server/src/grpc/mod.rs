//! The gRPC server: services, tower layers, health, reflection, limits, shutdown.

mod blocking;
mod collections;
pub mod convert;
mod evaluation;
mod operations;
mod points;

use std::future::Future;
use std::sync::Arc;

use emberdb_proto::v1::collections_server::CollectionsServer;
use emberdb_proto::v1::evaluation_server::EvaluationServer;
use emberdb_proto::v1::operations_server::OperationsServer;
use emberdb_proto::v1::points_server::PointsServer;
use emberdb_storage::Engine;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

pub use blocking::Blocking;

use crate::metrics::{Metrics, MetricsLayer};

/// Serves gRPC on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    metrics: Arc<Metrics>,
    max_message_bytes: usize,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let blocking = Arc::new(Blocking::new(engine, cores * 8));

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
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(emberdb_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    tonic::transport::Server::builder()
        .concurrency_limit_per_connection(256)
        .layer(MetricsLayer(metrics))
        .add_service(health)
        .add_service(reflection)
        .add_service(collections)
        .add_service(points)
        .add_service(evaluation)
        .add_service(operations)
        .serve_with_incoming_shutdown(
            // Our own listener skips tonic's defaults: without TCP_NODELAY, small
            // responses wait on Nagle's algorithm.
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}
