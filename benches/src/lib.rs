//! Shared pieces of EmberDB's benchmark binaries: the datasets and the server process.

pub mod data;
pub mod server;
