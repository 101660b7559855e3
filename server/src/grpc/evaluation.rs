//! `emberdb.v1.Evaluation`: thin handlers; the work runs on the engine's evaluation pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use emberdb_analysis::RecallParams;
use emberdb_proto::v1 as pb;
use emberdb_proto::v1::evaluation_server::Evaluation;
use tonic::{Request, Response, Status};

use super::blocking::Blocking;
use super::convert;
use crate::auth::{self, Role};

pub struct EvaluationService {
    pub blocking: Arc<Blocking>,
}

/// The client's deadline from the `grpc-timeout` header (e.g. `250m`, `30S`).
pub(super) fn deadline<T>(req: &Request<T>) -> Option<Instant> {
    let v = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Instant::now().checked_add(d)
}

#[tonic::async_trait]
impl Evaluation for EvaluationService {
    async fn recall(
        &self,
        req: Request<pb::RecallRequest>,
    ) -> Result<Response<pb::RecallReport>, Status> {
        let deadline = deadline(&req);
        auth::check_scoped(&req, Role::Reader)?;
        let ticket = self.blocking.eval_permit()?;
        let budget = ticket.budget(deadline);
        let pb::RecallRequest {
            collection,
            version,
            k,
            ef,
            sample_size,
            seed,
        } = req.into_inner();
        let p = RecallParams {
            k,
            ef,
            sample_size,
            seed,
        };
        let r = self
            .blocking
            .analyze(move |a| a.recall(&collection, &version, &p, budget))
            .await?;
        Ok(Response::new(convert::recall_report(r)))
    }

    async fn margin(
        &self,
        req: Request<pb::MarginRequest>,
    ) -> Result<Response<pb::MarginReport>, Status> {
        let deadline = deadline(&req);
        auth::check_scoped(&req, Role::Reader)?;
        let ticket = self.blocking.eval_permit()?;
        let budget = ticket.budget(deadline);
        let pb::MarginRequest {
            collection,
            version,
            threshold,
            lowest_n,
            mode,
        } = req.into_inner();
        let mode = convert::eval_mode(mode)?;
        let r = self
            .blocking
            .analyze(move |a| a.margin(&collection, &version, threshold, lowest_n, mode, budget))
            .await?;
        Ok(Response::new(convert::margin_report(r)))
    }

    async fn confusion(
        &self,
        req: Request<pb::ConfusionRequest>,
    ) -> Result<Response<pb::ConfusionReport>, Status> {
        let deadline = deadline(&req);
        auth::check_scoped(&req, Role::Reader)?;
        let ticket = self.blocking.eval_permit()?;
        let budget = ticket.budget(deadline);
        let pb::ConfusionRequest {
            collection,
            version,
            top_pairs,
            mode,
        } = req.into_inner();
        let mode = convert::eval_mode(mode)?;
        let r = self
            .blocking
            .analyze(move |a| a.confusion(&collection, &version, top_pairs, mode, budget))
            .await?;
        Ok(Response::new(convert::confusion_report(r)))
    }

    async fn actions(
        &self,
        req: Request<pb::ActionsRequest>,
    ) -> Result<Response<pb::ActionsReport>, Status> {
        let deadline = deadline(&req);
        auth::check_scoped(&req, Role::Reader)?;
        let ticket = self.blocking.eval_permit()?;
        let budget = ticket.budget(deadline);
        let pb::ActionsRequest {
            collection,
            version,
            format,
            mode,
        } = req.into_inner();
        let markdown = match pb::ActionFormat::try_from(format) {
            Ok(pb::ActionFormat::Unspecified | pb::ActionFormat::Structured) => false,
            Ok(pb::ActionFormat::Markdown) => true,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "format: unknown value {format}"
                )));
            }
        };
        let mode = convert::eval_mode(mode)?;
        let (c, v) = (collection.clone(), version.clone());
        let r = self
            .blocking
            .analyze(move |a| a.actions(&c, &v, mode, budget))
            .await?;
        Ok(Response::new(convert::actions_report(
            r,
            markdown.then_some((&collection, &version)),
        )))
    }

    async fn project(
        &self,
        req: Request<pb::ProjectRequest>,
    ) -> Result<Response<pb::ProjectReport>, Status> {
        auth::check_scoped(&req, Role::Reader)?;
        let _ticket = self.blocking.eval_permit()?;
        let pb::ProjectRequest {
            collection,
            version,
            method,
            sample_size,
            seed,
        } = req.into_inner();
        match pb::ProjectionMethod::try_from(method) {
            Ok(pb::ProjectionMethod::Unspecified | pb::ProjectionMethod::Pca) => {}
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "method: unknown value {method}"
                )));
            }
        }
        let pts = self
            .blocking
            .analyze(move |a| a.project(&collection, &version, sample_size, seed))
            .await?;
        Ok(Response::new(pb::ProjectReport {
            method: "pca".into(),
            points: pts
                .into_iter()
                .map(|p| pb::ProjectedPoint {
                    id: p.id,
                    label: p.label,
                    x: p.x,
                    y: p.y,
                })
                .collect(),
        }))
    }
}
