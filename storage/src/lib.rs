//! EmberDB's storage engine.
//!
//! RocksDB is the source of truth for the catalog and every point; each version's
//! HNSW graph (hnsw_rs) is a derived cache, committed to files as checksummed
//! generations and reloaded memory-mapped at start-up, or rebuilt from RocksDB
//! when anything about it is off. Distances are SIMD kernels (simsimd).
//!
//! **Architecture invariant:** this crate knows nothing about gRPC: no tonic,
//! prost or generated types. The server converts at its boundary.
#![deny(unsafe_code)]

pub mod ann;
pub mod backup;
mod catalog;
mod codec;
pub mod consistency;
pub mod decode;
pub mod distance;
mod engine;
pub mod error;
#[cfg(feature = "fault-drill")]
pub mod fault;
mod generation;
mod graph_view;
mod indexer;
mod load;
mod mmap;
mod os;
pub mod snapshot;
mod specs;
mod store;
pub mod validate;
mod version;
mod write;

pub use distance::Metric;
pub use engine::{
    CollectionInfo, Engine, EngineConfig, EngineStats, IndexStatus, PointInput, PointOutput,
    VersionInfo, VersionSpec,
};
pub use error::{Error, Result};
pub use os::lower_thread_priority;
pub use snapshot::Snapshot;
pub use specs::SpecKey;
pub use version::{Filter, Hit, ReadState, SearchParams, Version, idle_store_locks};

#[cfg(test)]
mod tests;
