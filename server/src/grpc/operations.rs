//! `emberdb.v1.Operations`: drift, canary comparison, consistency and monitors.
//! Thin handlers; the work runs on the engine's evaluation pool.

use std::sync::Arc;

use emberdb_analysis::bundle::BundleRequest;
use emberdb_analysis::canary::{CompareOut, CompareRequest, Verdict, VersionQuality};
use emberdb_analysis::drift::{DriftRequest, WindowSpec};
use emberdb_analysis::monitor::MonitorSpec;
use emberdb_proto::v1 as pb;
use emberdb_proto::v1::operations_server::Operations;
use emberdb_storage::consistency::{ChecksumState, ConsistencyOut};
use tonic::{Request, Response, Status};

use super::archive::{ChunkStream, stream_archive};
use super::blocking::Blocking;
use super::convert::{drift_report, status_pb};
use super::evaluation::deadline;
use crate::auth::{self, Caller, Role};

pub struct OperationsService {
    pub blocking: Arc<Blocking>,
    pub recorder: Arc<crate::bundle::FlightRecorder>,
}

fn window(w: Option<pb::Window>, field: &str) -> Result<WindowSpec, Status> {
    let w = w.ok_or_else(|| Status::invalid_argument(format!("{field}: required")))?;
    Ok(WindowSpec {
        version: w.version,
        from_ms: w.from_ms,
        to_ms: w.to_ms,
    })
}

fn verdict_pb(v: Verdict) -> pb::Verdict {
    match v {
        Verdict::Promote => pb::Verdict::Promote,
        Verdict::Hold => pb::Verdict::Hold,
        Verdict::Rollback => pb::Verdict::Rollback,
    }
}

fn quality_pb(q: VersionQuality) -> pb::VersionQuality {
    pb::VersionQuality {
        version: q.version,
        precision_at_1: q.precision_at_1,
        hit_at_k: q.hit_at_k,
        map_at_r: q.map_at_r,
        mean_margin: q.mean_margin,
        low_margin_fraction: q.low_margin_fraction,
        ann_recall_at_k: q.ann_recall_at_k,
        recall_queries: q.recall_queries,
        labelled_queries: q.labelled_queries,
    }
}

fn compare_report(r: CompareOut) -> pb::CompareVersionsReport {
    let pairs = |ps: Vec<emberdb_analysis::canary::PairChange>| {
        ps.into_iter()
            .map(|p| pb::PairChange {
                true_label: p.true_label,
                predicted_label: p.predicted_label,
                baseline_count: p.baseline_count,
                candidate_count: p.candidate_count,
            })
            .collect()
    };
    pb::CompareVersionsReport {
        baseline: Some(quality_pb(r.baseline)),
        candidate: Some(quality_pb(r.candidate)),
        delta_precision_at_1: r.delta_precision_at_1,
        delta_hit_at_k: r.delta_hit_at_k,
        delta_map_at_r: r.delta_map_at_r,
        delta_mean_margin: r.delta_mean_margin,
        delta_low_margin_fraction: r.delta_low_margin_fraction,
        delta_ann_recall_at_k: r.delta_ann_recall_at_k,
        neighbor_overlap: r.neighbor_overlap,
        new_pairs: pairs(r.new_pairs),
        resolved_pairs: pairs(r.resolved_pairs),
        verdict: verdict_pb(r.verdict) as i32,
        reasons: r
            .reasons
            .into_iter()
            .map(|x| pb::VerdictReason {
                metric: x.metric,
                value: x.value,
                threshold: x.threshold,
                pushes: verdict_pb(x.pushes) as i32,
                message: x.message,
                owner: x.owner,
            })
            .collect(),
        alias_moved: r.alias_moved,
        k: r.k,
        query_ids: r.query_ids,
        shared_ids: r.shared_ids,
    }
}

pub fn consistency_report(r: ConsistencyOut) -> pb::ConsistencyReport {
    pb::ConsistencyReport {
        stored_points: r.stored_points,
        indexed_points: r.indexed_points,
        pending_points: r.pending_points,
        masked_tombstones: r.masked_tombstones,
        stored_not_indexed: r.stored_not_indexed,
        indexed_not_stored: r.indexed_not_stored,
        vector_mismatch: r.vector_mismatch,
        unreachable: r.unreachable,
        checksum: match r.checksum {
            ChecksumState::Ok => pb::ChecksumState::ChecksumOk,
            ChecksumState::Mismatch => pb::ChecksumState::ChecksumMismatch,
            ChecksumState::NoGeneration => pb::ChecksumState::ChecksumNoGeneration,
        } as i32,
        generation: r.generation,
        consistent: r.consistent,
        repaired: r.repaired,
        before_repair: r.before_repair.map(|b| Box::new(consistency_report(*b))),
        findings: r.findings,
    }
}

#[tonic::async_trait]
impl Operations for OperationsService {
    async fn drift(
        &self,
        req: Request<pb::DriftRequest>,
    ) -> Result<Response<pb::DriftReport>, Status> {
        auth::check_scoped(&req, Role::Reader)?;
        let ticket = self.blocking.eval_permit()?;
        let budget = ticket.budget(deadline(&req));
        let r = req.into_inner();
        let baseline = window(r.baseline, "baseline")?;
        let current = window(r.current, "current")?;
        let dr = DriftRequest {
            threshold: r.threshold,
            calibrate: r.calibrate,
            sample_size: r.sample_size,
            seed: r.seed,
        };
        let collection = r.collection;
        let out = self
            .blocking
            .analyze(move |a| a.drift(&collection, &baseline, &current, &dr, budget))
            .await?;
        Ok(Response::new(drift_report(out)))
    }

    async fn compare_versions(
        &self,
        req: Request<pb::CompareVersionsRequest>,
    ) -> Result<Response<pb::CompareVersionsReport>, Status> {
        let caller = Caller::of(&req)?;
        let deadline = deadline(&req);
        let r = req.into_inner();
        // Promotion moves an alias: admin work, audited. A plain comparison is a read.
        let promotes = !r.promote_alias.is_empty();
        let need = if promotes { Role::Admin } else { Role::Reader };
        let (c, v) = (
            r.collection.clone(),
            format!("{}->{}", r.baseline_version, r.candidate_version),
        );
        let work = async move {
            let ticket = self.blocking.eval_permit()?;
            let budget = ticket.budget(deadline);
            let cr = CompareRequest {
                k: r.k,
                sample_size: r.sample_size,
                seed: r.seed,
                promote_alias: r.promote_alias,
            };
            let out = self
                .blocking
                .analyze(move |a| {
                    a.compare_versions(
                        &r.collection,
                        &r.baseline_version,
                        &r.candidate_version,
                        &cr,
                        budget,
                    )
                })
                .await?;
            Ok(Response::new(compare_report(out)))
        };
        if promotes {
            caller.audited("CompareVersions", &c, &v, need, work).await
        } else {
            caller.check(need, &c)?;
            work.await
        }
    }

    async fn check_consistency(
        &self,
        req: Request<pb::CheckConsistencyRequest>,
    ) -> Result<Response<pb::ConsistencyReport>, Status> {
        let caller = Caller::of(&req)?;
        let r = req.into_inner();
        // Repair rebuilds the graph: admin work, audited. A check is a read.
        let repair = r.repair;
        let (c, v) = (r.collection.clone(), r.version.clone());
        let work = async move {
            let _ticket = self.blocking.eval_permit()?;
            let out = self
                .blocking
                .run(move |e| e.check_consistency(&r.collection, &r.version, r.repair))
                .await?;
            Ok(Response::new(consistency_report(out)))
        };
        if repair {
            caller
                .audited("CheckConsistency", &c, &v, Role::Admin, work)
                .await
        } else {
            caller.check(Role::Reader, &c)?;
            work.await
        }
    }

    async fn set_monitor(
        &self,
        req: Request<pb::SetMonitorRequest>,
    ) -> Result<Response<pb::SetMonitorResponse>, Status> {
        let caller = Caller::of(&req)?;
        let spec = req.into_inner().spec;
        let (c, v) = spec
            .as_ref()
            .map(|s| (s.collection.clone(), s.version.clone()))
            .unwrap_or_default();
        caller
            .audited("SetMonitor", &c, &v, Role::Admin, async move {
                let s = spec.ok_or_else(|| Status::invalid_argument("spec: required"))?;
                let spec = MonitorSpec {
                    collection: s.collection,
                    version: s.version,
                    interval_s: s.interval_s,
                    k: s.k,
                    sample_size: s.sample_size,
                    baseline: s.baseline.map(|w| WindowSpec {
                        version: w.version,
                        from_ms: w.from_ms,
                        to_ms: w.to_ms,
                    }),
                    record_bundles: s.record_bundles,
                };
                let replaced = self.blocking.analyze(move |a| a.set_monitor(spec)).await?;
                Ok(Response::new(pb::SetMonitorResponse { replaced }))
            })
            .await
    }

    async fn list_monitors(
        &self,
        req: Request<pb::ListMonitorsRequest>,
    ) -> Result<Response<pb::ListMonitorsResponse>, Status> {
        let caller = Caller::of(&req)?;
        let c = req.into_inner().collection;
        if !c.is_empty() {
            caller.check(Role::Reader, &c)?;
        }
        let ms = self.blocking.analyze(move |a| a.list_monitors(&c)).await?;
        Ok(Response::new(pb::ListMonitorsResponse {
            monitors: ms
                .into_iter()
                .filter(|m| caller.principal.can_see(&m.spec.collection))
                .map(status_pb)
                .collect(),
        }))
    }

    async fn delete_monitor(
        &self,
        req: Request<pb::DeleteMonitorRequest>,
    ) -> Result<Response<pb::DeleteMonitorResponse>, Status> {
        let caller = Caller::of(&req)?;
        let r = req.into_inner();
        let (c, v) = (r.collection.clone(), r.version.clone());
        caller
            .audited("DeleteMonitor", &c, &v, Role::Admin, async move {
                self.blocking
                    .analyze(move |a| a.delete_monitor(&r.collection, &r.version))
                    .await?;
                Ok(Response::new(pb::DeleteMonitorResponse {}))
            })
            .await
    }

    type ExportBundleStream = ChunkStream<pb::BundleChunk>;

    async fn export_bundle(
        &self,
        req: Request<pb::ExportBundleRequest>,
    ) -> Result<Response<Self::ExportBundleStream>, Status> {
        auth::check_scoped(&req, Role::Reader)?;
        let ticket = self.blocking.eval_permit()?;
        let budget = ticket.budget(deadline(&req));
        let r = req.into_inner();
        let br = BundleRequest {
            collection: r.collection,
            baseline: window(r.baseline, "baseline")?,
            current: window(r.current, "current")?,
            examples: r.k,
            max_points: r.max_points,
            drift: DriftRequest {
                threshold: r.threshold,
                calibrate: r.calibrate,
                sample_size: r.sample_size,
                seed: r.seed,
            },
        };
        let include_points = r.include_points;
        // The figures and the files are made before the stream starts (errors are statuses);
        // the archive is then packed on a blocking thread at the client's pace.
        let files = self
            .blocking
            .analyze(move |a| {
                let data = a.bundle(&br, budget)?;
                Ok(crate::bundle::render(
                    data,
                    &crate::bundle::Render {
                        reason: "ExportBundle".into(),
                        include_points,
                    },
                ))
            })
            .await?;
        drop(ticket);
        Ok(Response::new(stream_archive(move |w| {
            crate::bundle::write_tar_gz(&files, w)
                .map_err(|e| Status::unavailable(format!("writing the bundle: {e}")))
        })))
    }

    async fn list_bundles(
        &self,
        req: Request<pb::ListBundlesRequest>,
    ) -> Result<Response<pb::ListBundlesResponse>, Status> {
        let caller = Caller::of(&req)?;
        let pb::ListBundlesRequest { collection } = req.into_inner();
        if !collection.is_empty() {
            caller.check(Role::Reader, &collection)?;
        }
        let recorder = self.recorder.clone();
        let all = tokio::task::spawn_blocking(move || recorder.list())
            .await
            .map_err(|_| Status::internal("listing bundles failed; see server log"))?;
        let bundles = all
            .into_iter()
            .filter(|b| collection.is_empty() || b.collection == collection)
            .filter(|b| caller.check(Role::Reader, &b.collection).is_ok())
            .map(|b| pb::BundleInfo {
                name: b.name,
                collection: b.collection,
                version: b.version,
                created_ms: b.created_ms,
                bytes: b.bytes,
            })
            .collect();
        Ok(Response::new(pb::ListBundlesResponse { bundles }))
    }

    type DownloadBundleStream = ChunkStream<pb::BundleChunk>;

    async fn download_bundle(
        &self,
        req: Request<pb::DownloadBundleRequest>,
    ) -> Result<Response<Self::DownloadBundleStream>, Status> {
        let caller = Caller::of(&req)?;
        let pb::DownloadBundleRequest { name } = req.into_inner();
        let Some(parsed) = crate::bundle::Recorded::parse(&name) else {
            return Err(Status::invalid_argument(format!(
                "name: not a recorded bundle's name (<collection>.<version>.<ms>.tar.gz): {name:?}"
            )));
        };
        // The caller may read the collection before it learns whether the bundle exists.
        caller.check(Role::Reader, &parsed.collection)?;
        let Some((_, path)) = self.recorder.path_of(&name) else {
            return Err(Status::not_found(format!("bundle {name} not found")));
        };
        Ok(Response::new(stream_archive(move |w| {
            let mut f = std::fs::File::open(&path)
                .map_err(|e| Status::not_found(format!("bundle {name}: {e}")))?;
            std::io::copy(&mut f, w)
                .map(|_| ())
                .map_err(|e| Status::unavailable(format!("reading bundle {name}: {e}")))
        })))
    }
}
