//! Seeded sampling shared by every evaluation: the same seed picks the same rows.

/// splitmix64: a small, fast, well-mixed generator for seeded samples.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Deterministic sample of `k` of `n` row indices, sorted, by a seeded partial
/// Fisher–Yates. `k` of 0 or at least `n` means every row.
pub fn rows(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if k == 0 || k >= n {
        return idx;
    }
    let mut rng = SplitMix(seed ^ 0x9E37_79B9_7F4A_7C15);
    for i in 0..k {
        let j = i + (rng.next_u64() % (n - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_seeded_sorted_and_distinct() {
        let a = rows(1000, 50, 3);
        assert_eq!(a, rows(1000, 50, 3));
        assert_ne!(a, rows(1000, 50, 4));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(rows(10, 0, 1), (0..10).collect::<Vec<_>>());
        assert_eq!(rows(10, 20, 1).len(), 10);
    }
}
