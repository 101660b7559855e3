//! EmberDB's evaluation math: pure functions over slices, no I/O, no storage.
//!
//! The definitions follow `notes/metrics.md` (and the seed analysis it cites):
//! leave-one-out neighbours come from **exact** search, self is excluded by
//! index (not by distance 0), ties break by (distance, index), and the caller
//! orders rows by point id so "lower index" means "lower id". Values are
//! accumulated in f64.

pub mod confusion;
pub mod drift;
pub mod knn;
pub mod margin;
pub mod project;
pub mod ranked;
pub mod retrieval;
pub mod sample;
pub mod stats;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Distance used by an evaluation; the same the version searches with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Euclidean distance.
    L2,
    /// 1 − cos; the caller passes unit-length vectors.
    Cosine,
    /// −dot.
    Dot,
}

/// Row-major vectors, one row per point, rows ordered by point id.
#[derive(Debug, Clone, Copy)]
pub struct Data<'a> {
    pub dim: usize,
    pub vectors: &'a [f32],
}

impl<'a> Data<'a> {
    pub fn new(dim: usize, vectors: &'a [f32]) -> Self {
        assert!(
            dim > 0 && vectors.len().is_multiple_of(dim),
            "vectors must be rows of dim"
        );
        Data { dim, vectors }
    }
    pub fn len(&self) -> usize {
        self.vectors.len() / self.dim
    }
    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }
}

/// Why an evaluation stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// The caller's deadline passed (checked between blocks of work).
    #[error("evaluation deadline exceeded after {done} of {total} blocks")]
    DeadlineExceeded { done: usize, total: usize },
}

pub type Result<T> = std::result::Result<T, EvalError>;

/// A deadline and a cancel flag, checked between blocks of work.
#[derive(Debug, Default)]
pub struct Deadline {
    at: Option<Instant>,
    cancelled: AtomicBool,
    /// Set from outside (the caller went away); the work then stops as on a deadline.
    cancel: Option<std::sync::Arc<AtomicBool>>,
}

impl Deadline {
    pub fn new(at: Option<Instant>) -> Self {
        Deadline {
            at,
            cancelled: AtomicBool::new(false),
            cancel: None,
        }
    }
    /// A deadline that also ends when `cancel` is set.
    pub fn with_cancel(at: Option<Instant>, cancel: std::sync::Arc<AtomicBool>) -> Self {
        Deadline {
            cancel: Some(cancel),
            ..Self::new(at)
        }
    }
    pub fn none() -> Self {
        Self::new(None)
    }
    /// True once the deadline passed (sticky, so parallel workers all stop).
    pub fn expired(&self) -> bool {
        if self.cancelled.load(Ordering::Relaxed)
            || self
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return true;
        }
        if self.at.is_some_and(|at| Instant::now() >= at) {
            self.cancelled.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }
}

/// Exact distance in f64 between two rows (the re-check after the GEMM pass).
pub fn exact_distance(space: Space, a: &[f32], b: &[f32]) -> f64 {
    match space {
        Space::L2 => {
            // Eight independent f64 lanes so the loop vectorises; same value up to
            // the order of f64 additions.
            let mut acc = [0.0f64; 8];
            let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
            let (ra, rb) = (ca.remainder(), cb.remainder());
            for (x, y) in ca.zip(cb) {
                for l in 0..8 {
                    let d = f64::from(x[l]) - f64::from(y[l]);
                    acc[l] += d * d;
                }
            }
            let mut sum: f64 = acc.iter().sum();
            for (&x, &y) in ra.iter().zip(rb) {
                let d = f64::from(x) - f64::from(y);
                sum += d * d;
            }
            sum.sqrt()
        }
        Space::Cosine => {
            let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
            for (&x, &y) in a.iter().zip(b) {
                let (x, y) = (f64::from(x), f64::from(y));
                dot += x * y;
                na += x * x;
                nb += y * y;
            }
            if na == 0.0 || nb == 0.0 {
                1.0
            } else {
                (1.0 - dot / (na.sqrt() * nb.sqrt())).max(0.0)
            }
        }
        Space::Dot => -a
            .iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum::<f64>(),
    }
}
