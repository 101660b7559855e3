//! Shared pieces of EmberDB's benchmark binaries: the datasets.

pub mod data;
