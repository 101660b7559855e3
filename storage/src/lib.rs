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

mod ann;
mod codec;
pub mod distance;
mod engine;
pub mod error;
pub mod evaluate;
mod generation;
mod graph_view;
mod indexer;
mod mmap;
mod store;
pub mod validate;
mod version;

pub use distance::Metric;
pub use engine::{
    CollectionInfo, Engine, EngineConfig, EngineStats, IndexStatus, PointInput, PointOutput,
    VersionInfo, VersionSpec,
};
pub use error::{Error, Result};
pub use version::{Filter, Hit, SearchParams};

#[cfg(test)]
mod tests;
