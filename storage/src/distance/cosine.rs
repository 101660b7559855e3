use simsimd::SpatialSimilarity;

/// 1 − a·b for unit vectors, clamped at 0 so rounding never yields a negative distance.
#[inline]
pub fn cosine_distance_normalized(a: &[f32], b: &[f32]) -> f32 {
    let dot = <f32 as SpatialSimilarity>::dot(a, b)
        .unwrap_or_else(|| a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum());
    (1.0 - dot as f32).max(0.0)
}

/// Scales `v` to unit length in place (computed in f64). The caller has rejected zero vectors.
pub fn normalize(v: &mut [f32]) {
    let n: f64 = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if n > 0.0 {
        for x in v.iter_mut() {
            *x = (f64::from(*x) / n) as f32;
        }
    }
}
