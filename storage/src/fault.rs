//! Fault drills for the consistency check: write a *well-formed, checksummed*
//! index generation that disagrees with the stored points, as a buggy writer or
//! a bit flip before checksumming would. Checksums cannot catch this; only
//! CheckConsistency can. Run it on a data directory no server has open. Built only with the
//! `fault-drill` feature, which only the integration tests turn on.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use crate::ann::{AnnIndex, HnswIndex};
use crate::error::{Error, Result};
use crate::generation::IndexDir;

/// What a drill changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub generation: u64,
    /// Ids whose nodes were left out of the new graph.
    pub dropped: Vec<u64>,
    /// Ids whose graph vector was changed (first component + 1).
    pub altered: Vec<u64>,
}

/// Rewrites the committed generation under `version_index_dir`
/// (`<data>/index/<version id>`) as a new generation whose graph lacks the nodes
/// of `drop_ids` and holds a different vector for `alter_ids`.
pub fn damage_index(
    version_index_dir: &Path,
    drop_ids: &[u64],
    alter_ids: &[u64],
) -> Result<Damage> {
    let dir = IndexDir {
        root: version_index_dir.to_path_buf(),
    };
    let (manifest, gen_dir, slots) = dir
        .open_verified()?
        .ok_or_else(|| Error::FailedPrecondition("no committed index generation".into()))?;
    let pool = Arc::new(crate::ann::BuildPools::new(1)?);
    let old = HnswIndex::load(&gen_dir, &manifest.basename, pool.clone())?;
    let to_drop: HashSet<u64> = drop_ids.iter().copied().collect();
    let alter: HashSet<u64> = alter_ids.iter().copied().collect();
    let mut kept: Vec<(usize, Vec<f32>)> = Vec::new();
    let (mut dropped, mut altered) = (Vec::new(), Vec::new());
    old.for_each_node(|slot, _, _, vector| {
        let id = slots.get(slot).map(|e| e.id);
        if id.is_some_and(|id| to_drop.contains(&id)) {
            dropped.extend(id);
            return;
        }
        let mut v = vector.to_vec();
        if id.is_some_and(|id| alter.contains(&id)) {
            v[0] += 1.0;
            altered.extend(id);
        }
        kept.push((slot, v));
    })?;
    drop(old);
    kept.sort_by_key(|k| k.0);
    let fresh = HnswIndex::new(
        manifest.m as usize,
        manifest.ef_construction as usize,
        slots.len(),
        pool,
    );
    let refs: Vec<(usize, &[f32])> = kept.iter().map(|(s, v)| (*s, v.as_slice())).collect();
    fresh.insert_serial(&refs)?;
    let generation = manifest.generation + 1;
    let out = dir.create_gen_dir(generation)?;
    let basename = fresh.dump(&out)?;
    let mut m = manifest.clone();
    m.generation = generation;
    m.basename = basename;
    m.graph_points = fresh.len() as u64;
    dir.commit(&out, &slots, m)?;
    dropped.sort_unstable();
    altered.sort_unstable();
    Ok(Damage {
        generation,
        dropped,
        altered,
    })
}
