//! Index generations on disk: the HNSW dump is a derived cache of RocksDB.
//!
//! Layout under `<data>/index/<version id>/`:
//! - `gen-<n>/graph.hnsw.graph`, `gen-<n>/graph.hnsw.data`: the hnsw_rs dump;
//! - `gen-<n>/slots.bin`: slot → (point id, op seq) for every slot in the graph;
//! - `gen-<n>/links.bin`: layer 0 as search walks it (`graph_view.rs`), so a reload need not
//!   select the lists again (a generation without it is polished on load);
//! - `MANIFEST`: which generation is current, with sizes and CRC32C of every file.
//!
//! Commit protocol: write the generation into a fresh directory, fsync its files
//! and the directory, write `MANIFEST.tmp`, fsync, rename to `MANIFEST`, fsync the
//! version directory. The rename is the commit point. Any check failing on open
//! means "rebuild from RocksDB", never "trust the file".

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::mmap::file_crc32c;

const MANIFEST_MAGIC: &[u8; 8] = b"EMBMANI\x01";
const SLOTS_MAGIC: &[u8; 8] = b"EMBSLOT\x01";
const LINKS_MAGIC: &[u8; 8] = b"EMBLINK\x02";
/// The searchable layer 0 of a generation (see `graph_view.rs`), when it was written.
pub const LINKS_FILE: &str = "links.bin";
/// Bumped whenever any file of a generation changes meaning.
pub const FORMAT_VERSION: u32 = 1;

/// One file of a generation with its size and checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub crc32c: u32,
}

/// The committed description of one generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub generation: u64,
    /// Basename hnsw_rs actually used for the dump.
    pub basename: String,
    pub files: Vec<FileEntry>,
    /// Highest op sequence whose effects the slot map reflects.
    pub applied_seq: u64,
    /// Number of slots covered (graph DataIds are < this).
    pub slot_count: u64,
    /// Points in the graph (hnsw_rs's own count).
    pub graph_points: u64,
    pub dim: u32,
    pub metric: String,
    pub m: u32,
    pub ef_construction: u32,
    pub hnsw_rs_version: String,
}

/// Slot map entry: which point (and which write of it) a graph slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotEntry {
    pub id: u64,
    pub seq: u64,
}

pub(crate) fn io(ctx: &str, p: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let c = format!("{ctx} {}", p.display());
    move |e| Error::io(c, e)
}

pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io("fsync dir", dir))
}

/// Writes `bytes` durably to `path` via a temp file and rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Internal("no parent".into()))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(io("rename", &tmp))?;
    fsync_dir(dir)
}

/// Writes a file of a generation being built (`IndexDir::commit` fsyncs and checksums it).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(io("create", path))?;
    f.write_all(bytes).map_err(io("write", path))
}

fn with_crc(magic: &[u8; 8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 20);
    out.extend_from_slice(magic);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out
}

fn check_crc<'a>(magic: &[u8; 8], bytes: &'a [u8], what: &str) -> Result<&'a [u8]> {
    let bad = |why: &str| Error::DataCorruption(format!("{what}: {why}"));
    if bytes.len() < 20 || &bytes[..8] != magic {
        return Err(bad("bad magic or too short"));
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")) as usize;
    if bytes.len() != 16 + len + 4 {
        return Err(bad("length mismatch"));
    }
    let body = &bytes[16..16 + len];
    let crc = u32::from_le_bytes(bytes[16 + len..].try_into().expect("4 bytes"));
    if crc32c::crc32c(body) != crc {
        return Err(bad("checksum mismatch"));
    }
    Ok(body)
}

/// A MANIFEST file's bytes: magic, length, JSON body, CRC32C, and a known format version.
pub fn decode_manifest(bytes: &[u8]) -> Result<Manifest> {
    let body = check_crc(MANIFEST_MAGIC, bytes, "MANIFEST")?;
    let manifest: Manifest = serde_json::from_slice(body)
        .map_err(|e| Error::DataCorruption(format!("MANIFEST: {e}")))?;
    if manifest.format_version != FORMAT_VERSION {
        return Err(Error::DataCorruption(format!(
            "MANIFEST format {} (expected {FORMAT_VERSION})",
            manifest.format_version
        )));
    }
    Ok(manifest)
}

/// A manifest's bytes as `commit` writes them.
pub fn encode_manifest(m: &Manifest) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(m).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(with_crc(MANIFEST_MAGIC, &body))
}

pub fn encode_slots(slots: &[SlotEntry]) -> Vec<u8> {
    let mut body = Vec::with_capacity(slots.len() * 16);
    for s in slots {
        body.extend_from_slice(&s.id.to_le_bytes());
        body.extend_from_slice(&s.seq.to_le_bytes());
    }
    with_crc(SLOTS_MAGIC, &body)
}

pub fn decode_slots(bytes: &[u8]) -> Result<Vec<SlotEntry>> {
    let body = check_crc(SLOTS_MAGIC, bytes, "slots.bin")?;
    if body.len() % 16 != 0 {
        return Err(Error::DataCorruption("slots.bin: ragged body".into()));
    }
    Ok(body
        .chunks_exact(16)
        .map(|c| SlotEntry {
            id: u64::from_le_bytes(c[..8].try_into().expect("8")),
            seq: u64::from_le_bytes(c[8..].try_into().expect("8")),
        })
        .collect())
}

/// The graph as search walks it: every layer, so a committed generation serves searches without
/// hnsw_rs's own structure in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    /// Entry point of the descent (`None` for a graph without nodes).
    pub entry: Option<u32>,
    /// Per slot: its top layer, or [`NOT_A_NODE`].
    pub levels: Vec<u8>,
    /// Layer 0, CSR by slot: `offsets` has one entry per slot plus one.
    pub offsets: Vec<u32>,
    pub targets: Vec<u32>,
    /// Layers 1..: (slot, neighbours) of the nodes on that layer, by slot.
    pub upper: Vec<Vec<(u32, Vec<u32>)>>,
}

/// [`Links::levels`] of a slot that is not a graph node.
pub const NOT_A_NODE: u8 = u8::MAX;

pub fn encode_links(l: &Links) -> Vec<u8> {
    let mut body =
        Vec::with_capacity(16 + l.levels.len() + 4 * (l.offsets.len() + l.targets.len()));
    let mut put = |x: u32| body.extend_from_slice(&x.to_le_bytes());
    put(l.levels.len() as u32);
    put(l.entry.unwrap_or(u32::MAX));
    put(l.upper.len() as u32);
    for x in l.offsets.iter().chain(&l.targets) {
        put(*x);
    }
    for layer in &l.upper {
        put(layer.len() as u32);
        for (slot, nbs) in layer {
            put(*slot);
            put(nbs.len() as u32);
            nbs.iter().for_each(|&n| put(n));
        }
    }
    body.extend_from_slice(&l.levels);
    with_crc(LINKS_MAGIC, &body)
}

/// Checks the shape too: layer 0 is a CSR index, every link names a node of that layer, each
/// upper layer lists exactly the nodes whose level reaches it, and the entry is a top node.
pub fn decode_links(bytes: &[u8]) -> Result<Links> {
    let body = check_crc(LINKS_MAGIC, bytes, LINKS_FILE)?;
    let bad = |what: &str| Error::DataCorruption(format!("{LINKS_FILE}: {what}"));
    let mut words = body
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4")));
    let mut next = |what: &str| words.next().ok_or_else(|| bad(what));
    let n = next("header")? as usize;
    let entry = next("header")?;
    let layers = next("header")? as usize;
    if layers >= NOT_A_NODE as usize {
        return Err(bad("too many layers"));
    }
    // Every count is checked against the bytes left before anything is allocated.
    let left = |used_words: usize| body.len().saturating_sub(4 * used_words);
    if left(3) < n || (left(3) - n) / 4 < n + 1 {
        return Err(bad("slot count out of range"));
    }
    let offsets: Vec<u32> = (0..=n).map(|_| next("offsets")).collect::<Result<_>>()?;
    let total = offsets[n] as usize;
    if offsets[0] != 0 || offsets.windows(2).any(|w| w[0] > w[1]) || (left(4 + n) - n) / 4 < total {
        return Err(bad("offsets are not a CSR index"));
    }
    let targets: Vec<u32> = (0..total).map(|_| next("links")).collect::<Result<_>>()?;
    let mut used = 4 + n + total;
    let mut upper = Vec::with_capacity(layers);
    for _ in 0..layers {
        let count = next("layer")? as usize;
        used += 1;
        if count > n {
            return Err(bad("layer larger than the graph"));
        }
        let mut layer = Vec::with_capacity(count);
        for _ in 0..count {
            let slot = next("layer")?;
            let deg = next("layer")? as usize;
            used += 2;
            if (left(used).saturating_sub(n)) / 4 < deg {
                return Err(bad("neighbour list runs past the end"));
            }
            let nbs: Vec<u32> = (0..deg).map(|_| next("layer")).collect::<Result<_>>()?;
            used += deg;
            layer.push((slot, nbs));
        }
        upper.push(layer);
    }
    let rest = &body[4 * used..];
    if rest.len() != n {
        return Err(bad("level table size"));
    }
    let levels = rest.to_vec();
    let level = |s: u32| levels.get(s as usize).copied().unwrap_or(NOT_A_NODE);
    let on = |s: u32, l: usize| level(s) != NOT_A_NODE && level(s) as usize >= l;
    for s in 0..n {
        let list = &targets[offsets[s] as usize..offsets[s + 1] as usize];
        if (!list.is_empty() && !on(s as u32, 0)) || list.iter().any(|&t| !on(t, 0)) {
            return Err(bad("a layer-0 link names a slot that is not a node"));
        }
    }
    for (i, layer) in upper.iter().enumerate() {
        let l = i + 1;
        let expected = levels
            .iter()
            .filter(|&&x| x != NOT_A_NODE && x as usize >= l)
            .count();
        if layer.len() != expected
            || layer.windows(2).any(|w| w[0].0 >= w[1].0)
            || layer
                .iter()
                .any(|(s, nbs)| !on(*s, l) || nbs.iter().any(|&t| !on(t, l)))
        {
            return Err(bad("an upper layer disagrees with the level table"));
        }
    }
    let top = levels.iter().filter(|&&x| x != NOT_A_NODE).max().copied();
    let entry = match (entry, top) {
        (u32::MAX, None) => None,
        (e, Some(t)) if level(e) == t && t as usize == layers => Some(e),
        _ => return Err(bad("the entry point is not a node of the top layer")),
    };
    Ok(Links {
        entry,
        levels,
        offsets,
        targets,
        upper,
    })
}

/// Paths of one version's index directory.
#[derive(Debug, Clone)]
pub struct IndexDir {
    pub root: PathBuf,
}

impl IndexDir {
    pub fn new(index_root: &Path, version_id: u64) -> Self {
        IndexDir {
            root: index_root.join(version_id.to_string()),
        }
    }

    pub fn gen_dir(&self, generation: u64) -> PathBuf {
        self.root.join(format!("gen-{generation}"))
    }

    fn manifest_path(&self) -> PathBuf {
        self.root.join("MANIFEST")
    }

    /// Creates a fresh, empty generation directory (removing leftovers of a crashed attempt).
    pub fn create_gen_dir(&self, generation: u64) -> Result<PathBuf> {
        fs::create_dir_all(&self.root).map_err(io("mkdir", &self.root))?;
        let dir = self.gen_dir(generation);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io("remove stale", &dir))?;
        }
        fs::create_dir(&dir).map_err(io("mkdir", &dir))?;
        fsync_dir(&self.root)?;
        Ok(dir)
    }

    /// Writes `slots.bin`, fsyncs every file of the generation and its directory,
    /// then commits the manifest. `manifest.files` is filled in here.
    pub fn commit(
        &self,
        dir: &Path,
        slots: &[SlotEntry],
        mut manifest: Manifest,
    ) -> Result<Manifest> {
        let slots_path = dir.join("slots.bin");
        {
            let mut f = File::create(&slots_path).map_err(io("create", &slots_path))?;
            f.write_all(&encode_slots(slots))
                .map_err(io("write", &slots_path))?;
        }
        let mut files = Vec::new();
        let mut names = vec![
            format!("{}.hnsw.graph", manifest.basename),
            format!("{}.hnsw.data", manifest.basename),
            "slots.bin".to_string(),
        ];
        if dir.join(LINKS_FILE).is_file() {
            names.push(LINKS_FILE.to_string());
        }
        for name in names {
            let p = dir.join(&name);
            // hnsw_rs flushes but never fsyncs its dump.
            File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(io("fsync", &p))?;
            let (size, crc32c) = file_crc32c(&p)?;
            files.push(FileEntry { name, size, crc32c });
        }
        fsync_dir(dir)?;
        manifest.files = files;
        write_atomic(&self.manifest_path(), &encode_manifest(&manifest)?)?;
        Ok(manifest)
    }

    /// Reads and verifies the manifest and every file it names.
    /// `Ok(None)`: no generation was ever committed.
    pub fn open_verified(&self) -> Result<Option<(Manifest, PathBuf, Vec<SlotEntry>)>> {
        let path = self.manifest_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        let manifest = decode_manifest(&bytes)?;
        let dir = self.gen_dir(manifest.generation);
        for f in &manifest.files {
            let p = dir.join(&f.name);
            let meta = fs::symlink_metadata(&p).map_err(io("stat", &p))?;
            if !meta.is_file() {
                return Err(Error::DataCorruption(format!(
                    "{} is not a regular file",
                    p.display()
                )));
            }
            let (size, crc) = file_crc32c(&p)?;
            if size != f.size || crc != f.crc32c {
                return Err(Error::DataCorruption(format!(
                    "{}: size {size} crc {crc:08x}, manifest says size {} crc {:08x}",
                    p.display(),
                    f.size,
                    f.crc32c
                )));
            }
        }
        let slots = decode_slots(&fs::read(dir.join("slots.bin")).map_err(io("read", &dir))?)?;
        if slots.len() as u64 != manifest.slot_count {
            return Err(Error::DataCorruption(
                "slots.bin count differs from MANIFEST".into(),
            ));
        }
        Ok(Some((manifest, dir, slots)))
    }

    /// Removes every `gen-*` directory except those in `keep`, and stray temp files.
    pub fn remove_other_generations(&self, keep: &[u64]) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale_gen = name
                .strip_prefix("gen-")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|g| !keep.contains(&g));
            if (stale_gen || name == "MANIFEST.tmp")
                && let Err(err) =
                    fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()))
            {
                tracing::warn!(path = %e.path().display(), %err, "could not remove stale index file");
            }
        }
    }

    /// Removes the whole directory (version dropped).
    pub fn remove_all(&self) {
        if self.root.exists()
            && let Err(err) = fs::remove_dir_all(&self.root)
        {
            tracing::warn!(path = %self.root.display(), %err, "could not remove index dir");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_detect_damage() -> Result<()> {
        let s = vec![
            SlotEntry { id: 1, seq: 2 },
            SlotEntry {
                id: u64::MAX,
                seq: 0,
            },
        ];
        let mut bytes = encode_slots(&s);
        assert_eq!(decode_slots(&bytes)?, s);
        bytes[20] ^= 0xff;
        assert!(matches!(
            decode_slots(&bytes),
            Err(Error::DataCorruption(_))
        ));
        assert!(decode_slots(&bytes[..10]).is_err());
        Ok(())
    }
}
