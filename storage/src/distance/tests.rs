use super::*;
use proptest::prelude::*;

fn l2sq_ref(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum()
}

fn dot_ref(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs().max(1.0)
}

proptest! {
    #[test]
    fn l2sq_matches_reference(v in (1usize..300).prop_flat_map(|n| (
        proptest::collection::vec(-100.0f32..100.0, n),
        proptest::collection::vec(-100.0f32..100.0, n)))) {
        let (a, b) = v;
        prop_assert!(close(f64::from(l2sq(&a, &b)), l2sq_ref(&a, &b), 1e-4));
        prop_assert!(close(f64::from(l2sq_scalar(&a, &b)), l2sq_ref(&a, &b), 1e-4));
    }

    #[test]
    fn dot_matches_reference(v in (1usize..300).prop_flat_map(|n| (
        proptest::collection::vec(-10.0f32..10.0, n),
        proptest::collection::vec(-10.0f32..10.0, n)))) {
        let (a, b) = v;
        let want = -dot_ref(&a, &b);
        let scale: f64 = a.iter().zip(&b).map(|(x, y)| f64::from((x * y).abs())).sum();
        prop_assert!((f64::from(neg_dot(&a, &b)) - want).abs() <= 1e-4 * scale.max(1.0));
    }

    #[test]
    fn cosine_in_range(v in (1usize..64).prop_flat_map(|n| (
        proptest::collection::vec(-10.0f32..10.0, n),
        proptest::collection::vec(-10.0f32..10.0, n)))) {
        let (mut a, mut b) = v;
        prop_assume!(a.iter().any(|x| *x != 0.0) && b.iter().any(|x| *x != 0.0));
        let want = 1.0 - dot_ref(&a, &b) / (dot_ref(&a, &a).sqrt() * dot_ref(&b, &b).sqrt());
        normalize(&mut a);
        normalize(&mut b);
        let got = cosine_distance_normalized(&a, &b);
        prop_assert!((0.0..=2.0).contains(&got));
        prop_assert!((f64::from(got) - want).abs() < 1e-5);
    }
}

#[test]
fn edge_cases() {
    assert_eq!(l2sq(&[0.0], &[0.0]), 0.0);
    assert_eq!(l2sq(&[3.0], &[0.0]), 9.0);
    // Odd tails and a very wide vector.
    for n in [1usize, 3, 7, 15, 17, 33, 65_536] {
        let a: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.5).collect();
        let b: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * -0.25).collect();
        assert!(
            close(f64::from(l2sq(&a, &b)), l2sq_ref(&a, &b), 1e-4),
            "n={n}"
        );
    }
    // Huge magnitudes stay finite when the squared norm fits.
    let a = vec![1e15f32; 16];
    let b = vec![-1e15f32; 16];
    assert!(l2sq(&a, &b).is_finite());
    // Identical unit vectors: cosine distance exactly 0, never negative.
    let mut u = vec![0.3f32, 0.4, 0.5];
    normalize(&mut u);
    assert!(cosine_distance_normalized(&u, &u) >= 0.0);
    assert!(cosine_distance_normalized(&u, &u) < 1e-6);
}

#[test]
fn finish_and_graph_conversions() {
    assert_eq!(Metric::L2.finish(9.0), 3.0);
    assert_eq!(Metric::Cosine.from_graph(0.5), 0.25);
    assert_eq!(Metric::Dot.finish(-2.0), -2.0);
}
