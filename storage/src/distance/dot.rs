use simsimd::SpatialSimilarity;

/// −a·b: smaller is closer.
#[inline]
pub fn neg_dot(a: &[f32], b: &[f32]) -> f32 {
    let dot = <f32 as SpatialSimilarity>::dot(a, b)
        .unwrap_or_else(|| a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum());
    -(dot as f32)
}
