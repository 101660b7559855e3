//! Distance kernels. Every kernel is SIMD (simsimd) with a scalar f64 reference
//! used by tests and by the "exact vs scalar" benchmark.
//!
//! Convention: smaller is closer. What a search *returns* is the metric's user-facing
//! distance ([`Metric::finish`]); what the kernels rank by is cheaper and monotone in it
//! (squared L2, for instance).

mod cosine;
mod dot;
mod l2;
pub mod quant;

pub use cosine::{cosine_distance_normalized, normalize};
pub use dot::neg_dot;
pub use l2::{l2sq, l2sq_scalar};

use serde::{Deserialize, Serialize};

/// Distance metric of a version. Persisted: discriminants are explicit and stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Metric {
    /// Euclidean; returned as the distance, ranked by its square.
    L2 = 1,
    /// 1 − cos. Vectors are normalised in memory, so 1 − cos = ‖a − b‖² / 2.
    Cosine = 2,
    /// −dot, served by exact scan (HNSW needs non-negative distances).
    Dot = 3,
}

impl Metric {
    /// Stable lower-case name, used in manifests and logs.
    pub fn name(self) -> &'static str {
        match self {
            Metric::L2 => "l2",
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
        }
    }

    /// Whether an HNSW graph is built for this metric.
    pub fn uses_graph(self) -> bool {
        match self {
            Metric::L2 | Metric::Cosine => true,
            Metric::Dot => false,
        }
    }

    /// The ranking score between an (in-memory, prepared) query and a stored vector.
    /// L2: squared distance. Cosine: 1 − dot of unit vectors. Dot: −dot.
    #[inline]
    pub fn score(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::L2 => l2sq(a, b),
            Metric::Cosine => cosine_distance_normalized(a, b),
            Metric::Dot => neg_dot(a, b),
        }
    }

    /// Converts a ranking score into the user-facing distance.
    #[inline]
    pub fn finish(self, score: f32) -> f32 {
        match self {
            Metric::L2 => score.max(0.0).sqrt(),
            Metric::Cosine => score.max(0.0),
            Metric::Dot => score,
        }
    }

    /// Converts the HNSW graph distance (squared L2 on stored vectors) into a ranking score.
    #[inline]
    pub fn from_graph(self, d: f32) -> f32 {
        match self {
            Metric::L2 | Metric::Dot => d,
            Metric::Cosine => d / 2.0,
        }
    }
}

#[cfg(test)]
mod tests;
