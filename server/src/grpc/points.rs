//! `emberdb.v1.Points`: thin handlers over the engine.

use std::sync::Arc;

use emberdb_proto::v1 as pb;
use emberdb_proto::v1::points_server::Points;
use emberdb_storage::{SearchParams, validate};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::blocking::Blocking;
use super::convert;
use crate::auth::{self, Caller, Role};

pub struct PointsService {
    pub blocking: Arc<Blocking>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl PointsService {
    async fn upsert_one(&self, r: pb::UpsertRequest) -> Result<u64, Status> {
        let pb::UpsertRequest {
            collection,
            version,
            points,
        } = r;
        let points: Vec<_> = points.into_iter().map(convert::point_in).collect();
        self.blocking
            .run(move |e| e.upsert(&collection, &version, &points))
            .await
    }
}

#[tonic::async_trait]
impl Points for PointsService {
    async fn upsert(
        &self,
        req: Request<pb::UpsertRequest>,
    ) -> Result<Response<pb::UpsertResponse>, Status> {
        let caller = Caller::of(&req)?;
        let r = req.into_inner();
        let (c, v) = (r.collection.clone(), r.version.clone());
        caller
            .audited("Upsert", &c, &v, Role::Writer, async move {
                let upserted = self.upsert_one(r).await?;
                Ok(Response::new(pb::UpsertResponse { upserted }))
            })
            .await
    }

    /// Each message is one atomic, durable batch. On an error, the batches before
    /// it stay committed and the status says which message failed.
    async fn upsert_stream(
        &self,
        req: Request<Streaming<pb::UpsertRequest>>,
    ) -> Result<Response<pb::UpsertResponse>, Status> {
        let caller = Caller::of(&req)?;
        let mut stream = req.into_inner();
        let mut upserted = 0;
        let mut index = 0usize;
        // One audit line per stream, naming the first message's collection and version.
        let mut names: Option<(String, String)> = None;
        let result = async {
            while let Some(msg) = stream.next().await {
                let msg = msg?;
                names.get_or_insert_with(|| (msg.collection.clone(), msg.version.clone()));
                let one = match caller.check(Role::Writer, &msg.collection) {
                    Ok(()) => self.upsert_one(msg).await,
                    Err(e) => Err(e),
                };
                upserted += one.map_err(|s| {
                    Status::new(
                        s.code(),
                        format!(
                            "message {index} (after {upserted} points committed): {}",
                            s.message()
                        ),
                    )
                })?;
                index += 1;
            }
            Ok(Response::new(pb::UpsertResponse { upserted }))
        }
        .await;
        let (c, v) = names.unwrap_or_default();
        caller.audit("UpsertStream", &c, &v, &result);
        result
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let caller = Caller::of(&req)?;
        let pb::DeleteRequest {
            collection,
            version,
            ids,
        } = req.into_inner();
        let (c, v) = (collection.clone(), version.clone());
        caller
            .audited("Delete", &c, &v, Role::Writer, async move {
                let deleted = self
                    .blocking
                    .run(move |e| e.delete(&collection, &version, &ids))
                    .await?;
                Ok(Response::new(pb::DeleteResponse { deleted }))
            })
            .await
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        auth::check_scoped(&req, Role::Reader)?;
        let pb::GetRequest {
            collection,
            version,
            ids,
            with_vectors,
        } = req.into_inner();
        let points = self
            .blocking
            .run(move |e| e.get(&collection, &version, &ids, with_vectors))
            .await?;
        Ok(Response::new(pb::GetResponse {
            points: points.into_iter().map(convert::point_out).collect(),
        }))
    }

    async fn search(
        &self,
        req: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        auth::check_scoped(&req, Role::Reader)?;
        let pb::SearchRequest {
            collection,
            version,
            vector,
            k,
            ef,
            exact,
            filter,
            columns,
        } = req.into_inner();
        let started = std::time::Instant::now();
        let requested_collection = collection.clone();
        let (k, ef) = validate::k_and_ef(k, ef).map_err(crate::error::to_status)?;
        let filter = convert::filter(filter);
        // An unfiltered ANN search over a graph that covers (almost) everything is short and
        // runs here; the engine declines anything that would scan (no graph yet, a long
        // unindexed tail, a filter, exact), and that goes to the blocking pool.
        let inline = if !exact && filter.is_none() {
            self.blocking.run_inline(|e| {
                let params = SearchParams {
                    k,
                    ef,
                    exact,
                    filter: None,
                };
                e.try_search_inline(&collection, &version, &vector, params)
            })?
        } else {
            None
        };
        let (hits, resolved) = match inline {
            Some(answer) => answer,
            None => {
                self.blocking
                    .run(move |e| {
                        let params = SearchParams {
                            k,
                            ef,
                            exact,
                            filter: filter.as_ref(),
                        };
                        e.search_resolved(&collection, &version, &vector, params)
                    })
                    .await?
            }
        };
        // Labelled with the version that answered: a search through `prod` counts for the
        // version `prod` pointed to at that moment.
        self.metrics
            .observe_search(&requested_collection, &resolved, started);
        Ok(Response::new(if columns {
            pb::SearchResponse {
                neighbors: Vec::new(),
                columns: Some(convert::neighbor_columns(hits)),
            }
        } else {
            pb::SearchResponse {
                neighbors: convert::neighbors(hits),
                columns: None,
            }
        }))
    }

    async fn search_batch(
        &self,
        req: Request<pb::SearchBatchRequest>,
    ) -> Result<Response<pb::SearchBatchResponse>, Status> {
        auth::check_scoped(&req, Role::Reader)?;
        let pb::SearchBatchRequest {
            collection,
            version,
            queries,
            k,
            ef,
            exact,
            filter,
        } = req.into_inner();
        let (k, ef) = validate::k_and_ef(k, ef).map_err(crate::error::to_status)?;
        let filter = convert::filter(filter);
        let queries: Vec<Vec<f32>> = queries
            .into_iter()
            .map(|pb::SearchQuery { vector }| vector)
            .collect();
        let results = self
            .blocking
            .run(move |e| {
                let params = SearchParams {
                    k,
                    ef,
                    exact,
                    filter: filter.as_ref(),
                };
                e.search_batch(&collection, &version, &queries, params)
            })
            .await?;
        Ok(Response::new(pb::SearchBatchResponse {
            results: results
                .into_iter()
                .map(|hits| pb::SearchResult {
                    neighbors: convert::neighbors(hits),
                })
                .collect(),
        }))
    }
}
