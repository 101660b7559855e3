//! Benchmark datasets: the real Fashion-MNIST (Debian `dataset-fashion-mnist`)
//! and seeded clustered Gaussian vectors.

use std::io::Read;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

pub struct Dataset {
    pub name: String,
    pub dim: usize,
    pub train: Vec<Vec<f32>>,
    pub train_labels: Vec<String>,
    pub queries: Vec<Vec<f32>>,
}

fn read_gz(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path)?).read_to_end(&mut out)?;
    Ok(out)
}

fn be_u32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// IDX3 images as f32 pixel values 0..=255 (the ann-benchmarks setup).
fn idx_images(path: &Path) -> anyhow::Result<(usize, Vec<Vec<f32>>)> {
    let b = read_gz(path)?;
    anyhow::ensure!(
        be_u32(&b, 0) == 0x0803,
        "{}: not an IDX3 file",
        path.display()
    );
    let (n, rows, cols) = (be_u32(&b, 4), be_u32(&b, 8), be_u32(&b, 12));
    let dim = rows * cols;
    anyhow::ensure!(b.len() == 16 + n * dim, "{}: truncated", path.display());
    Ok((
        dim,
        b[16..]
            .chunks_exact(dim)
            .map(|px| px.iter().map(|&p| f32::from(p)).collect())
            .collect(),
    ))
}

fn idx_labels(path: &Path) -> anyhow::Result<Vec<String>> {
    let b = read_gz(path)?;
    anyhow::ensure!(
        be_u32(&b, 0) == 0x0801,
        "{}: not an IDX1 file",
        path.display()
    );
    Ok(b[8..].iter().map(|l| format!("class-{l}")).collect())
}

pub fn fashion_mnist(dir: &Path) -> anyhow::Result<Dataset> {
    let (dim, train) = idx_images(&dir.join("train-images-idx3-ubyte.gz"))?;
    let train_labels = idx_labels(&dir.join("train-labels-idx1-ubyte.gz"))?;
    let (_, queries) = idx_images(&dir.join("t10k-images-idx3-ubyte.gz"))?;
    Ok(Dataset {
        name: "fashion-mnist-784".into(),
        dim,
        train,
        train_labels,
        queries,
    })
}

pub fn clustered(seed: u64, n: usize, n_queries: usize, dim: usize, clusters: usize) -> Dataset {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let centre = Normal::new(0.0f32, 1.0).expect("valid");
    let noise = Normal::new(0.0f32, 0.35).expect("valid");
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| (0..dim).map(|_| centre.sample(&mut rng)).collect())
        .collect();
    let draw = |rng: &mut rand::rngs::StdRng| {
        let c = rng.random_range(0..clusters);
        (
            centres[c]
                .iter()
                .map(|x| x + noise.sample(rng))
                .collect::<Vec<f32>>(),
            format!("c{c}"),
        )
    };
    let (train, train_labels): (Vec<_>, Vec<_>) = (0..n).map(|_| draw(&mut rng)).unzip();
    let queries = (0..n_queries).map(|_| draw(&mut rng).0).collect();
    Dataset {
        name: format!("clustered-{n}x{dim}-seed{seed}"),
        dim,
        train,
        train_labels,
        queries,
    }
}
