//! Runs engine calls on tokio's blocking pool. A semaphore bounds how many run at
//! once (blocking tasks cannot be aborted), and a panic inside one becomes
//! INTERNAL instead of taking the server down.

use std::sync::Arc;

use emberdb_storage::Engine;
use tokio::sync::Semaphore;
use tonic::Status;

pub struct Blocking {
    pub engine: Arc<Engine>,
    permits: Semaphore,
}

impl Blocking {
    pub fn new(engine: Arc<Engine>, max_concurrent: usize) -> Self {
        Blocking {
            engine,
            permits: Semaphore::new(max_concurrent),
        }
    }

    pub async fn run<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> emberdb_storage::Result<T> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Status::unavailable("server is shutting down"))?;
        let engine = self.engine.clone();
        match tokio::task::spawn_blocking(move || f(&engine)).await {
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
