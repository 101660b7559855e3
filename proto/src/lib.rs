//! EmberDB's gRPC API (`emberdb.v1`): the protobuf messages and tonic services,
//! generated at build time from `proto/emberdb/v1/*.proto`.

#![allow(clippy::all, missing_docs)]

pub mod bundle;

pub mod v1 {
    tonic::include_proto!("emberdb.v1");

    /// Encoded `FileDescriptorSet` of every EmberDB proto, for server reflection
    /// and for tests that enumerate every RPC.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("emberdb_descriptor");
}
