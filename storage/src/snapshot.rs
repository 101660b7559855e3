//! A point-in-time copy of one version's live points, ordered by id: what every
//! evaluation reads. Taken in short store-lock holds (see [`Snapshot::take`]).

use emberdb_eval::{Data, Space};

use crate::distance::Metric;
use crate::error::Result;
use crate::store::Store;
use crate::version::{Version, poisoned};

fn space_of(metric: Metric) -> Space {
    match metric {
        Metric::L2 => Space::L2,
        Metric::Cosine => Space::Cosine,
        Metric::Dot => Space::Dot,
    }
}

/// A version's live points, ordered by id (so "lower row" means "lower id").
pub struct Snapshot {
    /// Op sequence the snapshot reflects.
    pub seq: u64,
    pub ids: Vec<u64>,
    pub vectors: Vec<f32>,
    /// Label id per row; 0 = unlabelled.
    pub labels: Vec<u32>,
    pub label_names: Vec<String>,
    /// timestamp_ms per row.
    pub timestamps: Vec<i64>,
    pub dim: usize,
    pub space: Space,
}

/// Old label id → new id with ids 1.. in name order, and the new names (index 0, "unlabelled",
/// keeps its place).
fn labels_in_name_order(names: &[String]) -> (Vec<u32>, Vec<String>) {
    let mut order: Vec<usize> = (1..names.len()).collect();
    order.sort_by(|&a, &b| names[a].cmp(&names[b]));
    let mut remap = vec![0u32; names.len()];
    let mut out = Vec::with_capacity(names.len());
    out.push(names.first().cloned().unwrap_or_default());
    for (rank, &old) in order.iter().enumerate() {
        remap[old] = rank as u32 + 1;
        out.push(names[old].clone());
    }
    (remap, out)
}

/// Slots whose ids a snapshot reads per read-lock hold (the ids pass is cheap per slot).
const ID_SLOTS_PER_HOLD: usize = 1 << 16;

impl Snapshot {
    /// The live points of `v` at one op sequence, in id order. Copied in short read-lock holds
    /// (a writer queued behind one long hold would stall every search behind it): the live set
    /// and sequence are read in one hold, the slots' contents (which never change while the
    /// store's layout stays) in later ones. A compaction in between starts it again; after a
    /// few such restarts it copies under one hold.
    pub(crate) fn take(v: &Version) -> Result<Snapshot> {
        for _ in 0..3 {
            if let Some(s) = Self::take_in_holds(v)? {
                return Ok(s);
            }
        }
        let store = v.store().read().map_err(poisoned)?;
        let mut rows = Self::live_rows(&store, store.live(), 0..store.len());
        rows.sort_unstable();
        let mut snap = Self::empty(v, &store, rows.len());
        snap.fill(&store, &rows);
        Ok(snap.finish(rows))
    }

    fn take_in_holds(v: &Version) -> Result<Option<Snapshot>> {
        let (layout, live, mut snap) = {
            let store = v.store().read().map_err(poisoned)?;
            (
                store.layout(),
                store.live().to_vec(),
                Self::empty(v, &store, store.live_count()),
            )
        };
        let mut rows = Vec::with_capacity(snap.ids.capacity());
        for from in (0..live.len()).step_by(ID_SLOTS_PER_HOLD) {
            let store = v.store().read().map_err(poisoned)?;
            if store.layout() != layout {
                return Ok(None);
            }
            rows.extend(Self::live_rows(
                &store,
                &live,
                from..(from + ID_SLOTS_PER_HOLD).min(live.len()),
            ));
        }
        rows.sort_unstable();
        let per_hold = crate::store::slots_per_hold(snap.dim);
        for part in rows.chunks(per_hold) {
            let store = v.store().read().map_err(poisoned)?;
            if store.layout() != layout {
                return Ok(None);
            }
            snap.fill(&store, part);
        }
        Ok(Some(snap.finish(rows)))
    }

    /// (id, slot) of the slots in `range` that `live` marks, unsorted.
    fn live_rows(store: &Store, live: &[bool], range: std::ops::Range<usize>) -> Vec<(u64, usize)> {
        range
            .filter(|&s| live[s])
            .map(|s| (store.id(s), s))
            .collect()
    }

    /// A snapshot header: sequence, label names, metric; points to come from `fill`.
    fn empty(v: &Version, store: &Store, n: usize) -> Snapshot {
        Snapshot {
            seq: store.applied_seq(),
            ids: Vec::with_capacity(n),
            labels: Vec::with_capacity(n),
            timestamps: Vec::with_capacity(n),
            label_names: store.label_names().to_vec(),
            vectors: Vec::with_capacity(n * store.dim()),
            dim: store.dim(),
            space: space_of(v.metric()),
        }
    }

    /// Appends `rows`' vectors, labels (store numbering) and timestamps.
    fn fill(&mut self, store: &Store, rows: &[(u64, usize)]) {
        for &(_, s) in rows {
            self.vectors.extend_from_slice(store.vector(s));
            self.labels.push(store.label_at(s));
            self.timestamps.push(store.timestamp(s));
        }
    }

    /// Ids from `rows`; labels renumbered in name order.
    fn finish(mut self, rows: Vec<(u64, usize)>) -> Snapshot {
        // The store numbers labels in the order it first saw them; the snapshot renumbers them in
        // name order, so every order "by label" downstream (pairs with equal counts, classes) is
        // the label order the API documents. 0 stays "unlabelled".
        let (remap, label_names) = labels_in_name_order(&self.label_names);
        self.ids = rows.iter().map(|r| r.0).collect();
        for l in &mut self.labels {
            *l = remap[*l as usize];
        }
        self.label_names = label_names;
        self
    }

    /// The snapshot a version holding exactly `points` (ids ascending, vectors as stored) would
    /// give at `seq`: vectors prepared for `metric` the way the store prepares them, labels
    /// numbered in name order. An evaluation of it equals one of a server that imported them.
    pub fn from_points(
        metric: Metric,
        dim: usize,
        seq: u64,
        points: &[crate::PointOutput],
    ) -> Snapshot {
        let mut names = vec![String::new()];
        let mut ids_of: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
        ids_of.insert("", 0);
        let mut snap = Snapshot {
            seq,
            ids: Vec::with_capacity(points.len()),
            vectors: Vec::with_capacity(points.len() * dim),
            labels: Vec::with_capacity(points.len()),
            label_names: Vec::new(),
            timestamps: Vec::with_capacity(points.len()),
            dim,
            space: space_of(metric),
        };
        let mut rows = Vec::with_capacity(points.len());
        for p in points {
            let at = snap.vectors.len();
            snap.vectors
                .extend_from_slice(p.vector.as_deref().unwrap_or(&[]));
            snap.vectors.resize(at + dim, 0.0);
            if metric == Metric::Cosine {
                crate::distance::normalize(&mut snap.vectors[at..]);
            }
            let next = names.len() as u32;
            let l = *ids_of.entry(p.label.as_str()).or_insert(next);
            if l == next {
                names.push(p.label.clone());
            }
            snap.labels.push(l);
            snap.timestamps.push(p.timestamp_ms);
            rows.push((p.id, 0));
        }
        snap.label_names = names;
        snap.finish(rows)
    }

    pub fn data(&self) -> Data<'_> {
        Data::new(self.dim, &self.vectors)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The labelled rows (every row when none is labelled), as a sub-snapshot.
    pub fn labelled(&self) -> Snapshot {
        let keep: Vec<usize> = (0..self.len()).filter(|&r| self.labels[r] != 0).collect();
        if keep.is_empty() {
            return self.rows(&(0..self.len()).collect::<Vec<_>>());
        }
        self.rows(&keep)
    }

    /// The given rows (ascending), as a sub-snapshot.
    pub fn rows(&self, keep: &[usize]) -> Snapshot {
        let mut vectors = Vec::with_capacity(keep.len() * self.dim);
        for &r in keep {
            vectors.extend_from_slice(&self.vectors[r * self.dim..(r + 1) * self.dim]);
        }
        Snapshot {
            seq: self.seq,
            ids: keep.iter().map(|&r| self.ids[r]).collect(),
            labels: keep.iter().map(|&r| self.labels[r]).collect(),
            timestamps: keep.iter().map(|&r| self.timestamps[r]).collect(),
            label_names: self.label_names.clone(),
            vectors,
            dim: self.dim,
            space: self.space,
        }
    }

    pub fn label(&self, row: usize) -> &str {
        &self.label_names[self.labels[row] as usize]
    }
}
