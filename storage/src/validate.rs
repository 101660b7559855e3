//! Input validation shared by every engine entry point. Everything here runs
//! before anything is written, so a rejected request leaves storage untouched.

use crate::error::{Error, Result};

/// Longest collection, version or alias name.
pub const MAX_NAME_LEN: usize = 64;
/// Largest vector dimension.
pub const MAX_DIMENSION: u32 = 65_536;
/// Largest `k` (and `ef`) a search may ask for.
pub const MAX_K: u32 = 10_000;
/// Largest number of points in one upsert batch or queries in one search batch.
pub const MAX_BATCH: usize = 10_000;
/// Longest label, in bytes.
pub const MAX_LABEL_LEN: usize = 256;
/// Most metadata entries per point.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest metadata key or value, in bytes.
pub const MAX_METADATA_LEN: usize = 1024;

/// Names become catalog keys (never path components), but are still restricted
/// to `[A-Za-z0-9_-]{1,64}` so they are safe in logs, URLs and file listings.
pub fn name(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            field,
            format!(
                "must be at most {MAX_NAME_LEN} characters, got {}",
                value.len()
            ),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(Error::invalid(
            field,
            format!("may contain only A-Z a-z 0-9 _ -, found {:?}", c),
        ));
    }
    Ok(())
}

/// Checks the length and finiteness of a vector (on the f32 value: 1e40 arrives as +inf).
/// For cosine a zero vector has no direction and is rejected.
pub fn vector(field: &str, v: &[f32], dim: usize, reject_zero: bool) -> Result<()> {
    if v.len() != dim {
        return Err(Error::invalid(
            field,
            format!("expected {dim} values, got {}", v.len()),
        ));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::invalid(
            format!("{field}[{i}]"),
            format!("must be finite, got {}", v[i]),
        ));
    }
    // The squared norm must stay finite, or every L2/cosine distance becomes inf or NaN.
    let norm2: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if norm2 > f64::from(f32::MAX) / 4.0 {
        return Err(Error::invalid(
            field,
            "magnitude too large: squared norm overflows f32",
        ));
    }
    if reject_zero && norm2 == 0.0 {
        return Err(Error::invalid(
            field,
            "must not be the zero vector under the cosine metric",
        ));
    }
    Ok(())
}

/// Checks `k` and resolves `ef` (0 means the default `max(64, k)`; smaller than k is raised to k).
pub fn k_and_ef(k: u32, ef: u32) -> Result<(usize, usize)> {
    if k == 0 || k > MAX_K {
        return Err(Error::invalid(
            "k",
            format!("must be in 1..={MAX_K}, got {k}"),
        ));
    }
    if ef > MAX_K {
        return Err(Error::invalid(
            "ef",
            format!("must be at most {MAX_K}, got {ef}"),
        ));
    }
    let ef = if ef == 0 { k.max(64) } else { ef.max(k) };
    Ok((k as usize, ef as usize))
}

/// Checks a label and metadata map of one point.
pub fn label_and_metadata<'a>(
    field: &str,
    label: &str,
    metadata: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Result<()> {
    if label.len() > MAX_LABEL_LEN {
        return Err(Error::invalid(
            format!("{field}.label"),
            format!("must be at most {MAX_LABEL_LEN} bytes"),
        ));
    }
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(Error::invalid(
            format!("{field}.metadata"),
            format!(
                "at most {MAX_METADATA_ENTRIES} entries, got {}",
                metadata.len()
            ),
        ));
    }
    for (k, v) in metadata {
        if k.len() > MAX_METADATA_LEN || v.len() > MAX_METADATA_LEN {
            return Err(Error::invalid(
                format!("{field}.metadata"),
                format!("keys and values must be at most {MAX_METADATA_LEN} bytes"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name("collection", "resnet-v1_2").is_ok());
        for bad in ["", "..", "a/b", "a\0b", "%2e%2e%2f", "é", &"x".repeat(65)] {
            let err = name("collection", bad).unwrap_err();
            assert!(err.to_string().starts_with("collection:"), "{err}");
        }
    }

    #[test]
    fn vectors() {
        assert!(vector("v", &[1.0, 2.0], 2, true).is_ok());
        assert!(
            vector("v", &[1.0], 2, false)
                .unwrap_err()
                .to_string()
                .contains("expected 2")
        );
        let e = vector("v", &[1.0, f32::NAN], 2, false).unwrap_err();
        assert!(e.to_string().starts_with("v[1]:"), "{e}");
        assert!(vector("v", &[f32::INFINITY, 0.0], 2, false).is_err());
        assert!(vector("v", &[1e30, 1e30], 2, false).is_err());
        assert!(vector("v", &[0.0, 0.0], 2, true).is_err());
        assert!(vector("v", &[0.0, 0.0], 2, false).is_ok());
        assert!(vector("v", &[f32::MIN_POSITIVE / 2.0, 1.0], 2, true).is_ok());
    }

    #[test]
    fn k_ef() {
        assert_eq!(k_and_ef(10, 0).unwrap(), (10, 64));
        assert_eq!(k_and_ef(100, 0).unwrap(), (100, 100));
        assert_eq!(k_and_ef(10, 5).unwrap(), (10, 10));
        assert!(k_and_ef(0, 0).is_err());
        assert!(k_and_ef(10_001, 0).is_err());
        assert!(k_and_ef(10, 10_001).is_err());
    }
}
