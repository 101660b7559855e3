//! Runs engine calls on tokio's blocking pool. A semaphore bounds how many run at
//! once (blocking tasks cannot be aborted), and a panic inside one becomes
//! INTERNAL instead of taking the server down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use emberdb_analysis::Analysis;
use emberdb_storage::Engine;
use tokio::sync::Semaphore;
use tonic::Status;

/// One running evaluation: its concurrency slot and the flag that cancels it.
pub struct EvalTicket<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
    cancel: Arc<AtomicBool>,
}

impl EvalTicket<'_> {
    /// The engine's budget: the client's deadline, and cancellation when this ticket drops.
    pub fn budget(&self, deadline: Option<Instant>) -> emberdb_analysis::Budget {
        emberdb_analysis::Budget {
            at: deadline,
            cancel: Some(self.cancel.clone()),
        }
    }
}

impl Drop for EvalTicket<'_> {
    fn drop(&mut self) {
        // After a finished call this is a no-op; during one it stops the work.
        self.cancel.store(true, Ordering::Relaxed);
    }
}

pub struct Blocking {
    pub engine: Arc<Engine>,
    pub analysis: Arc<Analysis>,
    permits: Semaphore,
    /// Evaluation and operation RPCs running at once (`[limits] max_concurrent_evaluations`):
    /// past it, callers get RESOURCE_EXHAUSTED instead of queueing without bound.
    evals: Semaphore,
    max_evals: usize,
}

impl Blocking {
    pub fn new(analysis: Arc<Analysis>, max_concurrent: usize, max_evaluations: usize) -> Self {
        Blocking {
            engine: analysis.engine().clone(),
            analysis,
            permits: Semaphore::new(max_concurrent),
            evals: Semaphore::new(max_evaluations),
            max_evals: max_evaluations,
        }
    }

    /// A slot for one evaluation or operation RPC, held until the returned ticket drops.
    /// The ticket also cancels the engine work it budgets (`EvalTicket::budget`) when it drops:
    /// a client that goes away (Ctrl-C, a dropped connection) drops the handler's future, and
    /// the evaluation stops at its next block of work instead of running on for minutes.
    pub fn eval_permit(&self) -> Result<EvalTicket<'_>, Status> {
        let permit = self.evals.try_acquire().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} evaluations are already running (limit: [limits] max_concurrent_evaluations); retry later",
                self.max_evals
            ))
        })?;
        Ok(EvalTicket {
            _permit: permit,
            cancel: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Runs a short, CPU-bound engine call (an ANN search: no I/O, bounded by
    /// k and ef) on the current runtime worker. The thread hop of
    /// `spawn_blocking` costs more than such a search; exact scans and writes
    /// still go through [`Blocking::run`]. A panic becomes INTERNAL.
    pub fn run_inline<T>(
        &self,
        f: impl FnOnce(&Engine) -> emberdb_storage::Result<T>,
    ) -> Result<T, Status> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&self.engine))) {
            Ok(r) => r.map_err(crate::error::to_status),
            Err(_) => {
                tracing::error!("engine call panicked");
                Err(Status::internal(
                    "request failed unexpectedly; see server log",
                ))
            }
        }
    }

    pub async fn run<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> emberdb_storage::Result<T> + Send + 'static,
    {
        self.run_on(self.engine.clone(), f).await
    }

    /// [`Blocking::run`] for the analysis service (evaluations, drift, canary, monitors).
    pub async fn analyze<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Analysis) -> emberdb_storage::Result<T> + Send + 'static,
    {
        self.run_on(self.analysis.clone(), f).await
    }

    async fn run_on<S, T, F>(&self, service: Arc<S>, f: F) -> Result<T, Status>
    where
        S: Send + Sync + 'static,
        T: Send + 'static,
        F: FnOnce(&S) -> emberdb_storage::Result<T> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Status::unavailable("server is shutting down"))?;
        // The request's span follows the work onto the blocking thread.
        let span = tracing::Span::current();
        match tokio::task::spawn_blocking(move || span.in_scope(|| f(&service))).await {
            Ok(r) => r.map_err(crate::error::to_status),
            Err(e) => {
                tracing::error!(error = %e, "engine task panicked");
                Err(Status::internal(
                    "request failed unexpectedly; see server log",
                ))
            }
        }
    }
}
