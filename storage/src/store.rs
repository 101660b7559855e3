//! The in-memory mirror of one version's live points, addressed by slot.
//!
//! RocksDB is the truth; this is what exact scans, filters and the indexer read.
//! A slot is immutable once assigned: an update gets a new slot and the old one
//! is marked dead, because hnsw_rs cannot update or delete.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::distance::quant::{CodeMeta, encode};
use crate::distance::{Metric, normalize};

/// Label 0 means "unlabelled".
pub type LabelId = u32;

#[derive(Debug, Default)]
pub struct Store {
    dim: usize,
    /// Slot-major vectors, prepared for the metric (unit length for cosine).
    vectors: Vec<f32>,
    /// Squared norm of each slot's vector (for the blocked exact path).
    norms: Vec<f32>,
    /// Slot-major int8 codes of the vectors and their summaries: the exact
    /// scan's first pass (`distance::quant`).
    codes: Vec<i8>,
    code_meta: Vec<CodeMeta>,
    ids: Vec<u64>,
    seqs: Vec<u64>,
    labels: Vec<LabelId>,
    timestamps: Vec<i64>,
    metadata: Vec<Option<Arc<BTreeMap<String, String>>>>,
    live: Vec<bool>,
    id_to_slot: HashMap<u64, usize>,
    label_names: Vec<String>,
    label_ids: HashMap<String, LabelId>,
    live_count: usize,
    /// Live slots in each block of `LIVE_BLOCK` slots, so `live_below` costs
    /// len / LIVE_BLOCK additions, not a pass over every slot.
    live_blocks: Vec<u32>,
    /// Highest op sequence applied to this mirror.
    applied_seq: u64,
    /// Process-unique identity of this slot layout. A slot's contents never change while the
    /// layout stays; a rebuild's compaction or a repair's reload installs a new store, and
    /// with it a new layout. Readers that copy in several short lock holds check it.
    layout: u64,
}

fn next_layout() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

const LIVE_BLOCK: usize = 4096;

/// Floats a copy of the store made in several read-lock holds (a rebuild's compaction, an
/// evaluation snapshot) takes per hold: about a megabyte, a fraction of a millisecond.
const COPY_FLOATS_PER_HOLD: usize = 1 << 18;

/// Slots of dimension `dim` such a copy takes per read-lock hold.
pub(crate) fn slots_per_hold(dim: usize) -> usize {
    COPY_FLOATS_PER_HOLD / dim.max(1) + 1
}

impl Store {
    pub fn new(dim: usize) -> Self {
        Store {
            dim,
            layout: next_layout(),
            label_names: vec![String::new()],
            label_ids: [(String::new(), 0)].into(),
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Slot-major vectors, prepared for the metric.
    pub fn vectors(&self) -> &[f32] {
        &self.vectors
    }

    /// Squared norm of each slot's vector.
    pub fn norms(&self) -> &[f32] {
        &self.norms
    }

    pub fn code_meta(&self, slot: usize) -> &CodeMeta {
        &self.code_meta[slot]
    }

    pub fn id(&self, slot: usize) -> u64 {
        self.ids[slot]
    }

    /// The op sequence that wrote the slot.
    pub fn seq(&self, slot: usize) -> u64 {
        self.seqs[slot]
    }

    /// The slot's label number (0 = unlabelled; see `label_names`).
    pub fn label_at(&self, slot: usize) -> LabelId {
        self.labels[slot]
    }

    /// Label names by number, in the order the store first saw them; 0 is "unlabelled".
    pub fn label_names(&self) -> &[String] {
        &self.label_names
    }

    pub fn timestamp(&self, slot: usize) -> i64 {
        self.timestamps[slot]
    }

    pub fn metadata_at(&self, slot: usize) -> Option<&Arc<BTreeMap<String, String>>> {
        self.metadata[slot].as_ref()
    }

    pub fn is_live(&self, slot: usize) -> bool {
        self.live[slot]
    }

    /// Liveness of every slot.
    pub fn live(&self) -> &[bool] {
        &self.live
    }

    pub fn live_count(&self) -> usize {
        self.live_count
    }

    /// The slot of `id`'s current point (none once deleted).
    pub fn slot_of(&self, id: u64) -> Option<usize> {
        self.id_to_slot.get(&id).copied()
    }

    /// Highest op sequence applied to this mirror.
    pub fn applied_seq(&self) -> u64 {
        self.applied_seq
    }

    /// Records the op sequence a batch applied (or a reload read back).
    pub fn set_applied_seq(&mut self, seq: u64) {
        self.applied_seq = seq;
    }

    /// See the field: equal layouts, equal slot contents.
    pub fn layout(&self) -> u64 {
        self.layout
    }

    /// Whether any slot is dead (deleted or overwritten).
    pub fn has_dead(&self) -> bool {
        self.live_count != self.len()
    }

    /// Live slots among `[0, upto)`.
    pub fn live_below(&self, upto: usize) -> usize {
        let upto = upto.min(self.len());
        let full = upto / LIVE_BLOCK;
        let whole: usize = self.live_blocks[..full].iter().map(|&c| c as usize).sum();
        whole
            + self.live[full * LIVE_BLOCK..upto]
                .iter()
                .filter(|&&l| l)
                .count()
    }

    fn push_slot_live(&mut self, live: bool) {
        if self.live.len().is_multiple_of(LIVE_BLOCK) {
            self.live_blocks.push(0);
        }
        self.live.push(false);
        if live {
            self.set_live(self.live.len() - 1, true);
        }
    }

    /// Sets a slot's liveness, keeping `live_count` and the block counts with it.
    fn set_live(&mut self, slot: usize, live: bool) {
        if self.live[slot] == live {
            return;
        }
        self.live[slot] = live;
        let block = &mut self.live_blocks[slot / LIVE_BLOCK];
        if live {
            *block += 1;
            self.live_count += 1;
        } else {
            *block -= 1;
            self.live_count -= 1;
        }
    }

    pub fn vector(&self, slot: usize) -> &[f32] {
        &self.vectors[slot * self.dim..(slot + 1) * self.dim]
    }

    pub fn code(&self, slot: usize) -> &[i8] {
        &self.codes[slot * self.dim..(slot + 1) * self.dim]
    }

    pub fn label_id(&mut self, label: &str) -> LabelId {
        if let Some(&l) = self.label_ids.get(label) {
            return l;
        }
        let l = self.label_names.len() as LabelId;
        self.label_names.push(label.to_string());
        self.label_ids.insert(label.to_string(), l);
        l
    }

    pub fn lookup_label(&self, label: &str) -> Option<LabelId> {
        self.label_ids.get(label).copied()
    }

    pub fn label(&self, slot: usize) -> &str {
        &self.label_names[self.labels[slot] as usize]
    }

    /// Reserves a dead placeholder slot (a graph slot whose point is gone).
    pub fn push_dead(&mut self, id: u64, seq: u64) {
        self.vectors.resize(self.vectors.len() + self.dim, 0.0);
        self.norms.push(0.0);
        self.codes.resize(self.codes.len() + self.dim, 0);
        self.code_meta.push(CodeMeta::default());
        self.ids.push(id);
        self.seqs.push(seq);
        self.labels.push(0);
        self.timestamps.push(0);
        self.metadata.push(None);
        self.push_slot_live(false);
    }

    /// Fills a reserved slot with a live point.
    pub fn fill(&mut self, slot: usize, metric: Metric, p: PointRef<'_>) {
        let label = self.label_id(p.label);
        let dst = &mut self.vectors[slot * self.dim..(slot + 1) * self.dim];
        dst.copy_from_slice(p.vector);
        if metric == Metric::Cosine {
            normalize(dst);
        }
        self.norms[slot] = emberdb_eval::knn::squared_norm(dst);
        self.code_meta[slot] = encode(
            &self.vectors[slot * self.dim..(slot + 1) * self.dim],
            &mut self.codes[slot * self.dim..(slot + 1) * self.dim],
        );
        self.ids[slot] = p.id;
        self.seqs[slot] = p.seq;
        self.labels[slot] = label;
        self.timestamps[slot] = p.timestamp_ms;
        self.metadata[slot] = (!p.metadata.is_empty()).then(|| Arc::new(p.metadata.clone()));
        self.set_live(slot, true);
        if let Some(old) = self.id_to_slot.insert(p.id, slot)
            && old != slot
        {
            self.set_live(old, false);
        }
        self.applied_seq = self.applied_seq.max(p.seq);
    }

    /// Appends a live point in a new slot, killing the id's previous slot.
    pub fn append(&mut self, metric: Metric, p: PointRef<'_>) -> usize {
        let slot = self.len();
        self.push_dead(p.id, p.seq);
        self.fill(slot, metric, p);
        slot
    }

    /// A copy holding only the slots `kept` (in that order, as slots `0..kept.len()`)
    /// followed by every slot from `tail` on, renumbered; everything else (dead
    /// slots) is dropped. Taken under the read lock; [`Store::catch_up`] then
    /// applies, under the write lock, what changed since.
    #[cfg(test)]
    pub fn compacted(&self, kept: &[usize], tail: usize) -> Store {
        let mut out = self.empty_copy(kept.len() + self.len().saturating_sub(tail));
        self.copy_slots(&mut out, kept.iter().copied().chain(tail..self.len()));
        out
    }

    /// An empty store of the same dimension and labels, with room for `n` slots and a new
    /// layout: the start of a [`Store::compacted`] copy made in several lock holds.
    pub fn empty_copy(&self, n: usize) -> Store {
        Store {
            dim: self.dim,
            vectors: Vec::with_capacity(n * self.dim),
            norms: Vec::with_capacity(n),
            codes: Vec::with_capacity(n * self.dim),
            code_meta: Vec::with_capacity(n),
            ids: Vec::with_capacity(n),
            seqs: Vec::with_capacity(n),
            labels: Vec::with_capacity(n),
            timestamps: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            live: Vec::with_capacity(n),
            id_to_slot: HashMap::with_capacity(n),
            label_names: self.label_names.clone(),
            label_ids: self.label_ids.clone(),
            live_count: 0,
            live_blocks: Vec::with_capacity(n.div_ceil(LIVE_BLOCK)),
            applied_seq: self.applied_seq,
            layout: next_layout(),
        }
    }

    /// Appends this store's slots `olds` to `out`, renumbered, live as they are here.
    pub fn copy_slots(&self, out: &mut Store, olds: impl IntoIterator<Item = usize>) {
        for old in olds {
            out.push_from(self, old);
        }
    }

    /// Brings a [`Store::compacted`] copy taken when this store had `copied` slots up
    /// to date: slots that died since die in the copy too (slots never come back to
    /// life), slots appended since are appended, labels and the op sequence follow.
    pub fn catch_up(&self, copy: &mut Store, kept: &[usize], tail: usize, copied: usize) {
        for (new, old) in kept.iter().copied().chain(tail..copied).enumerate() {
            if copy.live[new] && !self.live[old] {
                copy.set_live(new, false);
                if copy.id_to_slot.get(&copy.ids[new]) == Some(&new) {
                    copy.id_to_slot.remove(&copy.ids[new]);
                }
            }
        }
        copy.label_names = self.label_names.clone();
        copy.label_ids = self.label_ids.clone();
        for old in copied..self.len() {
            copy.push_from(self, old);
        }
        copy.applied_seq = self.applied_seq;
    }

    /// Appends `src`'s slot `old` as the next slot, live as it is there.
    fn push_from(&mut self, src: &Store, old: usize) {
        let new = self.len();
        self.vectors.extend_from_slice(src.vector(old));
        self.codes.extend_from_slice(src.code(old));
        self.norms.push(src.norms[old]);
        self.code_meta.push(src.code_meta[old]);
        self.ids.push(src.ids[old]);
        self.seqs.push(src.seqs[old]);
        self.labels.push(src.labels[old]);
        self.timestamps.push(src.timestamps[old]);
        self.metadata.push(src.metadata[old].clone());
        self.push_slot_live(src.live[old]);
        if src.live[old] {
            self.id_to_slot.insert(src.ids[old], new);
        }
    }

    /// Marks an id deleted. Returns whether it was live.
    pub fn delete(&mut self, id: u64, seq: u64) -> bool {
        self.applied_seq = self.applied_seq.max(seq);
        match self.id_to_slot.remove(&id) {
            Some(slot) if self.live[slot] => {
                self.set_live(slot, false);
                true
            }
            _ => false,
        }
    }
}

/// A borrowed point, as written or as loaded.
#[derive(Debug, Clone, Copy)]
pub struct PointRef<'a> {
    pub id: u64,
    pub seq: u64,
    pub vector: &'a [f32],
    pub label: &'a str,
    pub metadata: &'a BTreeMap<String, String>,
    pub timestamp_ms: i64,
}

impl<'a> PointRef<'a> {
    /// The point RocksDB stores under `id`.
    pub fn stored(id: u64, p: &'a crate::codec::StoredPoint) -> Self {
        PointRef {
            id,
            seq: p.seq,
            vector: &p.vector,
            label: &p.label,
            metadata: &p.metadata,
            timestamp_ms: p.timestamp_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compacted_copy_caught_up_equals_a_copy_taken_after_the_writes() {
        let empty = std::collections::BTreeMap::new();
        let mut seq = 0;
        let mut put = |st: &mut Store, id: u64, x: f32, label: &str| {
            seq += 1;
            let v = [x, -x, 0.5];
            st.append(
                Metric::L2,
                PointRef {
                    id,
                    seq,
                    vector: &v,
                    label,
                    metadata: &empty,
                    timestamp_ms: seq as i64,
                },
            );
        };
        let mut st = Store::new(3);
        for id in 0..40 {
            put(&mut st, id, id as f32, "a");
        }
        for id in (0..40).step_by(4) {
            put(&mut st, id, 100.0 + id as f32, "b"); // overwrites: old slots die
        }
        assert!(st.delete(1, 1000));
        let end = st.len();
        let kept: Vec<usize> = (0..end).filter(|&s| st.live[s]).collect();
        put(&mut st, 50, 5.0, "c"); // appended before the copy
        let copied = st.len();
        let mut copy = st.compacted(&kept, end);

        // Writes between the copy and the swap.
        assert!(st.delete(2, 1001)); // a kept slot dies
        put(&mut st, 3, -3.0, "d"); // a kept id is overwritten by a new slot
        assert!(st.delete(50, 1002)); // a copied tail slot dies
        put(&mut st, 60, 6.0, "new label");
        st.catch_up(&mut copy, &kept, end, copied);

        let fresh = st.compacted(&kept, end);
        assert_eq!(copy.ids, fresh.ids);
        assert_eq!(copy.live, fresh.live);
        assert_eq!(copy.vectors, fresh.vectors);
        assert_eq!(copy.codes, fresh.codes);
        assert_eq!(copy.labels, fresh.labels);
        assert_eq!(copy.label_names, fresh.label_names);
        assert_eq!(copy.id_to_slot, fresh.id_to_slot);
        assert_eq!(copy.live_count, fresh.live_count);
        assert_eq!(copy.live_count, st.live_count);
        assert_eq!(copy.applied_seq, st.applied_seq);
        // Every live id maps to a slot holding it, and nothing dead is mapped.
        for (id, &s) in &copy.id_to_slot {
            assert!(copy.live[s] && copy.ids[s] == *id);
        }
        assert!(copy.len() < st.len());
    }

    #[test]
    fn live_below_counts_like_a_pass_over_the_slots() {
        let mut s = Store::new(2);
        let meta = BTreeMap::new();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let check = |s: &Store| {
            for upto in [
                0,
                1,
                4095,
                4096,
                4097,
                8192,
                s.len() / 2,
                s.len(),
                s.len() + 5,
            ] {
                let naive = s.live[..upto.min(s.len())].iter().filter(|&&l| l).count();
                assert_eq!(s.live_below(upto), naive, "upto {upto} of {}", s.len());
            }
            assert_eq!(s.live_below(s.len()), s.live_count);
        };
        for seq in 1..20_000u64 {
            let id = next() % 6_000;
            match next() % 10 {
                0..=6 => {
                    s.append(
                        Metric::L2,
                        PointRef {
                            id,
                            seq,
                            vector: &[1.0, 2.0],
                            label: "",
                            metadata: &meta,
                            timestamp_ms: 0,
                        },
                    );
                }
                7 => s.push_dead(id, seq),
                _ => {
                    s.delete(id, seq);
                }
            }
            if seq % 2_500 == 0 {
                check(&s);
            }
        }
        check(&s);
        // A compacted copy, brought up to date after more deletes, counts the same way.
        let kept: Vec<usize> = (0..s.len() / 2).filter(|&i| s.live[i]).collect();
        let copied = s.len();
        let mut copy = s.compacted(&kept, s.len() / 2);
        check(&copy);
        for id in 0..3_000 {
            s.delete(id, 30_000 + id);
        }
        s.catch_up(&mut copy, &kept, s.len() / 2, copied);
        check(&copy);
        assert_eq!(copy.live_count, s.live_count);
    }
}
