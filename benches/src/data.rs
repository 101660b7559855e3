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

/// A Gaussian mixture: `centres` centres drawn N(0, 3²) per dimension, points N(centre, 1).
pub fn mixture(seed: u64, n: usize, n_queries: usize, dim: usize, centres: usize) -> Dataset {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let c = Normal::new(0.0f32, 3.0).expect("valid");
    let noise = Normal::new(0.0f32, 1.0).expect("valid");
    let cs: Vec<Vec<f32>> = (0..centres)
        .map(|_| (0..dim).map(|_| c.sample(&mut rng)).collect())
        .collect();
    let draw = |rng: &mut rand::rngs::StdRng| {
        let k = rng.random_range(0..centres);
        let v: Vec<f32> = cs[k].iter().map(|x| x + noise.sample(rng)).collect();
        (v, format!("m{k}"))
    };
    let (train, train_labels): (Vec<_>, Vec<_>) = (0..n).map(|_| draw(&mut rng)).unzip();
    let queries = (0..n_queries).map(|_| draw(&mut rng).0).collect();
    Dataset {
        name: format!("mixture-{n}x{dim}-{centres}c-seed{seed}"),
        dim,
        train,
        train_labels,
        queries,
    }
}

/// Tight, partly overlapping clusters in near-twin pairs: `pairs` base centres N(0, 1) per
/// dimension, each with a twin displaced by N(0, 0.12²) per dimension; every cluster has its own
/// spread (σ uniform in 0.08..0.35), so twins overlap more or less; cluster sizes vary 1:4.
pub fn twins(seed: u64, n: usize, n_queries: usize, dim: usize, pairs: usize) -> Dataset {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let unit = Normal::new(0.0f32, 1.0).expect("valid");
    let mut centres: Vec<(Vec<f32>, f32, f64)> = Vec::new();
    for _ in 0..pairs {
        let c: Vec<f32> = (0..dim).map(|_| unit.sample(&mut rng)).collect();
        let t: Vec<f32> = c.iter().map(|x| x + 0.12 * unit.sample(&mut rng)).collect();
        for v in [c, t] {
            let sigma = rng.random_range(0.08f32..0.35);
            let weight = rng.random_range(1.0f64..4.0);
            centres.push((v, sigma, weight));
        }
    }
    let total: f64 = centres.iter().map(|c| c.2).sum();
    let draw = |rng: &mut rand::rngs::StdRng| {
        let mut u = rng.random_range(0.0..total);
        let mut k = 0;
        while k + 1 < centres.len() && u >= centres[k].2 {
            u -= centres[k].2;
            k += 1;
        }
        let (c, sigma, _) = &centres[k];
        let v: Vec<f32> = c.iter().map(|x| x + sigma * unit.sample(rng)).collect();
        (v, format!("t{k}"))
    };
    let (train, train_labels): (Vec<_>, Vec<_>) = (0..n).map(|_| draw(&mut rng)).unzip();
    let queries = (0..n_queries).map(|_| draw(&mut rng).0).collect();
    Dataset {
        name: format!("twins-{n}x{dim}-{pairs}pairs-seed{seed}"),
        dim,
        train,
        train_labels,
        queries,
    }
}

/// Writes rows as a little-endian float32 `.npy` file.
pub fn write_npy_f32(path: &Path, rows: &[Vec<f32>]) -> anyhow::Result<()> {
    let dim = rows.first().map_or(0, Vec::len);
    let mut out = npy_header("<f4", rows.len(), dim);
    for r in rows {
        anyhow::ensure!(r.len() == dim, "ragged rows");
        for x in r {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// Writes rows of ids as a little-endian int64 `.npy` file.
pub fn write_npy_i64(path: &Path, rows: &[Vec<u64>]) -> anyhow::Result<()> {
    let dim = rows.first().map_or(0, Vec::len);
    let mut out = npy_header("<i8", rows.len(), dim);
    for r in rows {
        anyhow::ensure!(r.len() == dim, "ragged rows");
        for &x in r {
            out.extend_from_slice(&(x as i64).to_le_bytes());
        }
    }
    std::fs::write(path, out)?;
    Ok(())
}

fn npy_header(descr: &str, n: usize, dim: usize) -> Vec<u8> {
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({n}, {dim}), }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out
}

/// Reads a little-endian float32 C-order 2-d `.npy` file.
pub fn read_npy_f32(path: &Path) -> anyhow::Result<Vec<Vec<f32>>> {
    let b = std::fs::read(path)?;
    anyhow::ensure!(
        b.len() > 10 && &b[..6] == b"\x93NUMPY",
        "{}: not npy",
        path.display()
    );
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    let h = std::str::from_utf8(&b[10..10 + hl])?;
    anyhow::ensure!(
        h.contains("'<f4'") && h.contains("False"),
        "{}: want <f4 C order",
        path.display()
    );
    let shape = h
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| anyhow::anyhow!("{}: no shape", path.display()))?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(dims.len() == 2, "{}: want 2-d", path.display());
    let body = &b[10 + hl..];
    anyhow::ensure!(
        body.len() == dims[0] * dims[1] * 4,
        "{}: truncated",
        path.display()
    );
    Ok(body
        .chunks_exact(dims[1] * 4)
        .map(|r| {
            r.chunks_exact(4)
                .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
                .collect()
        })
        .collect())
}
