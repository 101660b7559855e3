//! Every decoder of bytes this process did not write itself in this run: RocksDB point records
//! and keys, catalog records, and the index generation files (MANIFEST, slot map, graph links). Each returns
//! `DataCorruption` on any input it cannot read; none panics, loops or allocates more than its
//! input implies. `tests/hostile_input.rs` and `ember-fuzz-bench` drive them with random and
//! mutated bytes.

pub use crate::codec::{
    CollectionRecord, StoredPoint, VersionRecord, decode_collection_record, decode_point,
    encode_point, point_id_from_key, point_key,
};
pub use crate::generation::{
    FORMAT_VERSION as MANIFEST_FORMAT_VERSION, FileEntry, Links, Manifest, NOT_A_NODE, SlotEntry,
    decode_links, decode_manifest, decode_slots, encode_links, encode_manifest, encode_slots,
};
