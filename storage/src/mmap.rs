//! The only module that maps files or extends a borrow with `unsafe`.
//!
//! # Safety contract
//! A file mapped here is a committed index-generation file. Generation files are
//! written once into a fresh directory, fsynced, and never written, truncated or
//! renamed afterwards; older generations are deleted only after the index that
//! maps them is dropped. Under that rule a mapping cannot see its file change
//! (which would be undefined behaviour, or SIGBUS on truncation).
#![allow(unsafe_code)]

use std::fs::File;
use std::mem::ManuallyDrop;
use std::path::Path;
use std::ptr::NonNull;

use hnsw_rs::prelude::{Hnsw, HnswIo, ReloadOptions};

use crate::ann::GraphL2;
use crate::error::{Error, Result};

/// CRC32C of a whole file, read through a read-only mapping.
pub fn file_crc32c(path: &Path) -> Result<(u64, u32)> {
    let file = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
        .len();
    if len == 0 {
        return Ok((0, crc32c::crc32c(&[])));
    }
    // SAFETY: see the module contract; the file is a committed generation file,
    // immutable while mapped. The mapping is dropped before this function returns.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| Error::io(format!("mmap {}", path.display()), e))?;
    Ok((len, crc32c::crc32c(&map)))
}

/// An hnsw_rs index reloaded from a dump, owning the `HnswIo` it borrows from.
///
/// hnsw_rs ties a loaded `Hnsw<'b, ..>` to `&'a mut HnswIo` with `'a: 'b`
/// (upstream issue #19). We box the `HnswIo`, hand the loader a reference with
/// an extended lifetime, and guarantee in `Drop` that the `Hnsw` is dropped
/// before the `HnswIo` (and its mapping) is freed. The `'static` in the field
/// type never escapes: [`LoadedGraph::hnsw`] returns a reference bounded by
/// `&self`, and callers never clone points out of the graph.
pub struct LoadedGraph {
    hnsw: ManuallyDrop<Hnsw<'static, f32, GraphL2>>,
    io: NonNull<HnswIo>,
}

// SAFETY: `Hnsw` is Send + Sync (internal locks); the `HnswIo` is only touched
// again in `Drop`, which has exclusive access.
unsafe impl Send for LoadedGraph {}
unsafe impl Sync for LoadedGraph {}

impl LoadedGraph {
    /// Loads `<dir>/<basename>.hnsw.{graph,data}`, memory-mapping the data file.
    /// The caller has already checked sizes and checksums against the manifest,
    /// since hnsw_rs trusts the file. Panics inside hnsw_rs become `Err`.
    pub fn load(dir: &Path, basename: &str) -> Result<Self> {
        let mut io = Box::new(HnswIo::new(dir, basename));
        io.set_options(ReloadOptions::default().set_mmap(true));
        let io = NonNull::from(Box::leak(io));
        let loaded = std::panic::catch_unwind(|| {
            // SAFETY: `io` points to a live, leaked Box; the returned Hnsw borrows it
            // and is dropped in `Drop` before the Box is reclaimed.
            let io_ref: &'static mut HnswIo = unsafe { &mut *io.as_ptr() };
            io_ref.load_hnsw::<f32, GraphL2>()
        });
        match loaded {
            Ok(Ok(hnsw)) => Ok(LoadedGraph {
                hnsw: ManuallyDrop::new(hnsw),
                io,
            }),
            failed => {
                // SAFETY: no Hnsw borrowing `io` survived (the load failed or panicked).
                drop(unsafe { Box::from_raw(io.as_ptr()) });
                Err(match failed {
                    Ok(Err(e)) => Error::DataCorruption(format!("hnsw load: {e}")),
                    _ => Error::DataCorruption("hnsw load panicked".into()),
                })
            }
        }
    }

    /// The loaded graph, borrowed no longer than `self`.
    pub fn hnsw(&self) -> &Hnsw<'static, f32, GraphL2> {
        &self.hnsw
    }
}

impl Drop for LoadedGraph {
    fn drop(&mut self) {
        // SAFETY: drop order is the whole point: the Hnsw (which may hold slices
        // into the mapping owned by HnswIo) goes first, then the HnswIo.
        unsafe {
            ManuallyDrop::drop(&mut self.hnsw);
            drop(Box::from_raw(self.io.as_ptr()));
        }
    }
}
