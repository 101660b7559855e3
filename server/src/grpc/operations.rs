//! `emberdb.v1.Operations`: drift, canary comparison, consistency and monitors.
//! Thin handlers; the work runs on the engine's evaluation pool.

use std::sync::Arc;

use emberdb_analysis::canary::{CompareOut, CompareRequest, Verdict, VersionQuality};
use emberdb_analysis::drift::{DriftOut, DriftRequest, ShiftKind, WindowSpec};
use emberdb_analysis::monitor::{MonitorSpec, MonitorStatus};
use emberdb_proto::v1 as pb;
use emberdb_proto::v1::operations_server::Operations;
use emberdb_storage::consistency::{ChecksumState, ConsistencyOut};
use tonic::{Request, Response, Status};

use super::blocking::Blocking;
use super::evaluation::deadline;
use crate::auth::{self, Caller, Role};

pub struct OperationsService {
    pub blocking: Arc<Blocking>,
}

fn window(w: Option<pb::Window>, field: &str) -> Result<WindowSpec, Status> {
    let w = w.ok_or_else(|| Status::invalid_argument(format!("{field}: required")))?;
    Ok(WindowSpec {
        version: w.version,
        from_ms: w.from_ms,
        to_ms: w.to_ms,
    })
}

fn window_pb(w: WindowSpec) -> pb::Window {
    pb::Window {
        version: w.version,
        from_ms: w.from_ms,
        to_ms: w.to_ms,
    }
}

fn kind_pb(k: ShiftKind) -> pb::ShiftKind {
    match k {
        ShiftKind::MeanShift => pb::ShiftKind::MeanShift,
        ShiftKind::ScaleChange => pb::ShiftKind::ScaleChange,
        ShiftKind::VarianceCollapse => pb::ShiftKind::VarianceCollapse,
        ShiftKind::NewCluster => pb::ShiftKind::NewCluster,
        ShiftKind::ClassMixChange => pb::ShiftKind::ClassMixChange,
        ShiftKind::Unknown => pb::ShiftKind::Unknown,
    }
}

fn drift_report(r: DriftOut) -> pb::DriftReport {
    pb::DriftReport {
        baseline_points: r.baseline_points,
        current_points: r.current_points,
        centroid_euclidean: r.centroid_euclidean,
        centroid_cosine: r.centroid_cosine,
        classes: r
            .classes
            .into_iter()
            .map(|c| pb::ClassDrift {
                label: c.label,
                baseline_count: c.baseline_count,
                current_count: c.current_count,
                euclidean: c.euclidean,
                cosine: c.cosine,
            })
            .collect(),
        ks_max: r.ks_max,
        ks_mean: r.ks_mean,
        ks_drifted_share: r.ks_drifted_share,
        mmd2: r.mmd2,
        mmd_sample: r.mmd_sample,
        norm_shift: r.norm_shift,
        norm_ratio: r.norm_ratio,
        drift_score: r.drift_score,
        threshold: r.threshold,
        threshold_calibrated: r.threshold_calibrated,
        drifted: r.drifted,
        fingerprint: Some(pb::Fingerprint {
            primary: kind_pb(r.primary) as i32,
            scores: r
                .scores
                .into_iter()
                .map(|(kind, z, statistic)| pb::ShiftScore {
                    kind: kind_pb(kind) as i32,
                    z,
                    statistic,
                })
                .collect(),
        }),
        calibration_splits: r.calibration_splits,
    }
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

fn spec_pb(s: MonitorSpec) -> pb::MonitorSpec {
    pb::MonitorSpec {
        collection: s.collection,
        version: s.version,
        interval_s: s.interval_s,
        k: s.k,
        sample_size: s.sample_size,
        baseline: s.baseline.map(window_pb),
    }
}

fn status_pb(m: MonitorStatus) -> pb::MonitorStatus {
    let r = m.result.unwrap_or_default();
    pb::MonitorStatus {
        spec: Some(spec_pb(m.spec)),
        last_run_ms: m.last_run_ms,
        recall_at_k: r.recall_at_k,
        precision_at_1: r.precision_at_1,
        low_margin_fraction: r.low_margin_fraction,
        drift_score: r.drift_score,
        consistent: r.consistent,
        points: r.points,
        last_error: m.last_error,
        last_duration_ms: m.last_duration_ms,
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
}
