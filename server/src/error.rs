//! Storage errors → gRPC status, in one exhaustive match (no `_` arm): a new
//! storage error variant does not compile until it is mapped here.

use emberdb_storage::Error;
use tonic::Status;

pub fn to_status(e: Error) -> Status {
    match e {
        Error::InvalidArgument { .. } => Status::invalid_argument(e.to_string()),
        Error::NotFound { .. } => Status::not_found(e.to_string()),
        Error::AlreadyExists { .. } => Status::already_exists(e.to_string()),
        Error::FailedPrecondition(_) => Status::failed_precondition(e.to_string()),
        Error::ResourceExhausted(_) => Status::resource_exhausted(e.to_string()),
        Error::DeadlineExceeded(_) => Status::deadline_exceeded(e.to_string()),
        Error::DataCorruption(_) => {
            tracing::error!(error = %e, "data corruption");
            Status::data_loss(e.to_string())
        }
        Error::Rocks(_) | Error::Io { .. } => {
            tracing::error!(error = %e, "storage failure");
            Status::unavailable(e.to_string())
        }
        Error::Internal(_) => {
            tracing::error!(error = %e, "internal error");
            Status::internal(e.to_string())
        }
    }
}
