//! Distance kernels: simsimd (what we ship) against the plain scalar loop, same data, one run.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use emberdb_storage::distance::{l2sq, l2sq_scalar};
use rand::{Rng, SeedableRng};

fn kernels(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut g = c.benchmark_group("l2sq");
    for dim in [128usize, 784, 1536] {
        let a: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        g.throughput(Throughput::Elements(dim as u64));
        g.bench_with_input(BenchmarkId::new("simsimd", dim), &dim, |bn, _| {
            bn.iter(|| l2sq(std::hint::black_box(&a), std::hint::black_box(&b)))
        });
        g.bench_with_input(BenchmarkId::new("scalar", dim), &dim, |bn, _| {
            bn.iter(|| l2sq_scalar(std::hint::black_box(&a), std::hint::black_box(&b)))
        });
    }
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
