use simsimd::SpatialSimilarity;

/// Squared Euclidean distance, SIMD. Never negative, never NaN for finite input.
#[inline]
pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    match <f32 as SpatialSimilarity>::l2sq(a, b) {
        Some(d) => (d as f32).max(0.0),
        None => l2sq_scalar(a, b),
    }
}

/// Plain scalar loop: the reference the SIMD kernel is benchmarked against.
#[inline]
pub fn l2sq_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        let d = x - y;
        s += d * d;
    }
    s
}
