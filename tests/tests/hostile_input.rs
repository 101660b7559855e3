//! Every decoder of untrusted bytes (RocksDB records and keys, catalog, generation manifest and
//! slot map, the config file, and `ember import`'s .npy, CSV and JSONL parsers) gets 10,000
//! random and mutated inputs each: none may panic, take more than a second, or ask for an
//! allocation larger than 64 MiB (a length field must be checked against the bytes present
//! before it sizes a buffer). The long run is `ember-fuzz-bench`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use emberdb_tests::hostile;

/// Records the largest single allocation request.
struct Peak;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only reads the layout's size.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Peak = Peak;

const CASES: u64 = 10_000;
const MAX_ALLOCATION: usize = 64 << 20;

#[test]
fn no_decoder_panics_hangs_or_overallocates_on_hostile_input() {
    let mut failures = Vec::new();
    for (i, t) in hostile::targets().iter().enumerate() {
        let seed = 0xE3B0_C442 + i as u64;
        LARGEST.store(0, Ordering::Relaxed);
        let r = hostile::run(t, CASES, seed);
        let largest = LARGEST.load(Ordering::Relaxed);
        println!(
            "{}: seed {seed}, {} cases, {} accepted, {} rejected, slowest {:?}, largest allocation {} KiB",
            t.name,
            r.cases,
            r.accepted,
            r.rejected,
            r.slowest,
            largest / 1024
        );
        if !r.panics.is_empty() {
            failures.push(format!("{}: panicked on {:?}", t.name, r.panics));
        }
        if r.slowest > std::time::Duration::from_secs(1) {
            failures.push(format!("{}: one input took {:?}", t.name, r.slowest));
        }
        if largest > MAX_ALLOCATION {
            failures.push(format!("{}: allocated {largest} bytes at once", t.name));
        }
        assert!(
            r.rejected > 0,
            "{}: the mutations must reach the error paths",
            t.name
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn npy_with_a_huge_shape_is_an_error_not_an_allocation() {
    // A well-formed header whose shape claims 2^62 x 9 floats, followed by 8 bytes of data.
    let header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 9), }\n";
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header);
    b.extend_from_slice(&[0u8; 8]);
    let e = emberdb_client::formats::parse_npy_f32(&b)
        .unwrap_err()
        .to_string();
    assert!(e.contains("shape"), "{e}");
}
