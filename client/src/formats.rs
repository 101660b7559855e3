//! Readers for the import formats of `ember import`: `.npy` (2-D float32) plus an
//! optional labels file (one label per line), CSV (`id,label,v0,v1,…`) and JSONL
//! (`{"id":1,"vector":[…],"label":"cat","metadata":{…},"timestamp_ms":0}`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};

use anyhow::Context;
use std::path::Path;

use crate::pb::Point;

/// Reads a little-endian float32, C-order, 2-D `.npy` file: (rows, cols, data).
pub fn read_npy_f32(path: &Path) -> anyhow::Result<(usize, usize, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    parse_npy_f32(&bytes).with_context(|| path.display().to_string())
}

/// Largest `.npy` header we read (numpy writes 64–4096 bytes).
const MAX_NPY_HEADER: usize = 1 << 20;

/// Parses `.npy` bytes (little-endian float32, C order, 2-D). Hostile input gets an error: the
/// header length and the shape are checked against the bytes present before anything is
/// allocated from them.
pub fn parse_npy_f32(bytes: &[u8]) -> anyhow::Result<(usize, usize, Vec<f32>)> {
    anyhow::ensure!(
        bytes.len() >= 10 && &bytes[..6] == b"\x93NUMPY",
        "not a .npy file"
    );
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            anyhow::ensure!(bytes.len() >= 12, "truncated .npy header");
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => anyhow::bail!("unsupported .npy version {v}"),
    };
    anyhow::ensure!(
        header_len <= MAX_NPY_HEADER && start + header_len <= bytes.len(),
        "truncated .npy header ({header_len} bytes announced)"
    );
    let header = String::from_utf8_lossy(&bytes[start..start + header_len]);
    anyhow::ensure!(
        header.contains("'descr': '<f4'"),
        "only little-endian float32 ('<f4') is supported, header {header}"
    );
    anyhow::ensure!(
        header.contains("'fortran_order': False"),
        "Fortran order is not supported"
    );
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| anyhow::anyhow!("no shape in header"))?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("shape ({shape}): {e}"))?;
    anyhow::ensure!(dims.len() == 2, "expected a 2-D array, shape ({shape})");
    let raw = &bytes[start + header_len..];
    let want = dims[0]
        .checked_mul(dims[1])
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| anyhow::anyhow!("shape ({shape}) overflows"))?;
    anyhow::ensure!(
        raw.len() == want,
        "{} data bytes for shape ({shape}), expected {want}",
        raw.len()
    );
    let data = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((dims[0], dims[1], data))
}

/// Writes a 2-D float32 `.npy` (used by tests and examples).
pub fn write_npy_f32(path: &Path, rows: usize, cols: usize, data: &[f32]) -> std::io::Result<()> {
    std::fs::write(path, npy_f32_bytes(rows, cols, data))
}

pub use emberdb_proto::bundle::npy_f32_bytes;

/// Points from a `.npy` matrix; ids are `id_offset + row`, labels from an optional file.
pub fn points_from_npy(
    npy: &Path,
    labels: Option<&Path>,
    id_offset: u64,
) -> anyhow::Result<Vec<Point>> {
    let (rows, cols, data) = read_npy_f32(npy)?;
    let labels: Vec<String> = match labels {
        Some(p) => std::fs::read_to_string(p)?
            .lines()
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    anyhow::ensure!(
        labels.is_empty() || labels.len() == rows,
        "labels file has {} lines for {rows} vectors",
        labels.len()
    );
    Ok((0..rows)
        .map(|r| Point {
            id: id_offset + r as u64,
            vector: data[r * cols..(r + 1) * cols].to_vec(),
            label: labels.get(r).cloned().unwrap_or_default(),
            metadata: BTreeMap::new(),
            timestamp_ms: 0,
        })
        .collect())
}

/// CSV rows `id,label,v0,v1,…`; a first line starting with `id` is a header.
pub fn points_from_csv(path: &Path) -> anyhow::Result<Vec<Point>> {
    let f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    parse_csv(BufReader::new(f), &path.display().to_string())
}

/// CSV from any reader; errors name `source:line`.
pub fn parse_csv(reader: impl BufRead, source: &str) -> anyhow::Result<Vec<Point>> {
    let mut out = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() || (n == 0 && line.starts_with("id")) {
            continue;
        }
        let mut cols = line.split(',');
        let bad = |what: &str| anyhow::anyhow!("{source}:{}: {what}", n + 1);
        let id = cols
            .next()
            .ok_or_else(|| bad("missing id"))?
            .trim()
            .parse()
            .map_err(|_| bad("bad id"))?;
        let label = cols
            .next()
            .ok_or_else(|| bad("missing label"))?
            .trim()
            .to_string();
        let vector = cols
            .map(|c| c.trim().parse::<f32>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad("bad vector value"))?;
        out.push(Point {
            id,
            vector,
            label,
            metadata: BTreeMap::new(),
            timestamp_ms: 0,
        });
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
struct JsonPoint {
    id: u64,
    vector: Vec<f32>,
    #[serde(default)]
    label: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    timestamp_ms: i64,
}

/// One JSON object per line.
pub fn points_from_jsonl(path: &Path) -> anyhow::Result<Vec<Point>> {
    let f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    parse_jsonl(BufReader::new(f), &path.display().to_string())
}

/// JSONL from any reader; errors name `source:line`.
pub fn parse_jsonl(reader: impl BufRead, source: &str) -> anyhow::Result<Vec<Point>> {
    let mut out = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let p: JsonPoint =
            serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("{source}:{}: {e}", n + 1))?;
        out.push(Point {
            id: p.id,
            vector: p.vector,
            label: p.label,
            metadata: p.metadata,
            timestamp_ms: p.timestamp_ms,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("v.npy");
        write_npy_f32(&p, 2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5])?;
        let (r, c, d) = read_npy_f32(&p)?;
        assert_eq!((r, c), (2, 3));
        assert_eq!(d[5], 6.5);
        let labels = dir.path().join("l.txt");
        std::fs::write(&labels, "a\nb\n")?;
        let pts = points_from_npy(&p, Some(&labels), 10)?;
        assert_eq!(pts[1].id, 11);
        assert_eq!(pts[1].label, "b");
        Ok(())
    }

    #[test]
    fn csv_and_jsonl() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let c = dir.path().join("p.csv");
        std::fs::write(&c, "id,label,v0,v1\n1,cat,0.5,1\n2,dog,2,3\n")?;
        let pts = points_from_csv(&c)?;
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[0].vector, vec![0.5, 1.0]);
        std::fs::write(&c, "1,cat,0.5,x\n")?;
        assert!(points_from_csv(&c).unwrap_err().to_string().contains(":1:"));
        let j = dir.path().join("p.jsonl");
        std::fs::write(
            &j,
            "{\"id\":3,\"vector\":[1,2],\"label\":\"x\",\"metadata\":{\"k\":\"v\"}}\n",
        )?;
        let pts = points_from_jsonl(&j)?;
        assert_eq!(pts[0].metadata.get("k").map(String::as_str), Some("v"));
        Ok(())
    }
}
