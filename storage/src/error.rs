//! The storage error type. Each variant documents its class; the server maps
//! every variant to exactly one gRPC status.

use std::sync::Arc;

/// Errors returned by the storage engine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// User error: a request field is malformed. `field` names it, e.g. `points[3].vector`.
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },

    /// Not found: a collection, version or alias does not exist.
    #[error("{kind} '{name}' not found")]
    NotFound { kind: &'static str, name: String },

    /// User error: the name is already taken.
    #[error("{kind} '{name}' already exists")]
    AlreadyExists { kind: &'static str, name: String },

    /// User error: the request is valid but the current state forbids it.
    #[error("{0}")]
    FailedPrecondition(String),

    /// Overload: the engine refuses more work right now.
    #[error("{0}")]
    ResourceExhausted(String),

    /// The caller's deadline passed while the work was running.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),

    /// Corruption: on-disk data failed a checksum, size or format check.
    #[error("data corruption: {0}")]
    DataCorruption(String),

    /// Internal: RocksDB reported an error.
    #[error("rocksdb: {0}")]
    Rocks(String),

    /// Internal: a file-system operation failed.
    #[error("io error at {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: Arc<std::io::Error>,
    },

    /// Internal: a bug or a library panic caught at our boundary.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias for the storage crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return Error::ResourceExhausted(format!("disk full: {context}: {source}"));
        }
        Error::Io {
            context,
            source: Arc::new(source),
        }
    }
}

/// How RocksDB words an out-of-space failure (its message carries the file it was writing).
const NO_SPACE: &str = "No space left on device";

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        let msg = e.into_string();
        if msg.contains(NO_SPACE) {
            // Past the engine's own free-space check (another process filled the disk): RocksDB
            // may then refuse every write until it is reopened.
            return Error::ResourceExhausted(format!(
                "disk full: {msg} (if writes still fail once space is freed, restart the server: \
                 RocksDB stops writing after it has run out of space)"
            ));
        }
        Error::Rocks(msg)
    }
}
