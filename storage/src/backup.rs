//! Backups: a point-in-time copy of the whole data directory, which a restore verifies file by
//! file before it writes anything. A backup is `<data-dir>/snapshots/<name>/`:
//! - `index/<version id>/MANIFEST` and `gen-<n>/…`: each version's committed index generation,
//!   hard-linked (committed generation files never change) under the version's index lock, so
//!   the indexer cannot replace it half-way. Taken first.
//! - `db/`: a RocksDB checkpoint, taken after the generations. Every generation therefore covers
//!   a prefix of the ops the checkpoint holds: a restored server serves it and indexes the rest,
//!   as after any restart. Each acknowledged write batch is in the checkpoint whole or not at all.
//! - `backup.json`: the format, name, creation time, the op sequence of every version as the
//!   checkpoint holds it, and the size and SHA-256 of every other file; `backup.json.sha256` holds
//!   the manifest's own SHA-256. Written last (temp file, fsync, rename; the manifest after its
//!   sum): a directory without it is an unfinished backup, never listed nor restored.
//!
//! The catalog writer is held for the whole backup, so no version is created or dropped during
//! it; writes to points go on.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::{self, CF_CATALOG, CF_META, CF_POINTS};
use crate::engine::{Engine, now_ms};
use crate::error::{Error, Result};
use crate::generation::{fsync_dir, io};
use crate::validate;
use crate::version::poisoned;

const FORMAT: u32 = 1;
const MANIFEST: &str = "backup.json";
/// The SHA-256 of `backup.json` itself (hex), so a damaged manifest is caught like any file.
const MANIFEST_SUM: &str = "backup.json.sha256";
const DIR: &str = "snapshots";

/// One version as a backup holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupVersion {
    pub collection: String,
    pub version: String,
    pub id: u64,
    /// The version's op sequence in the backup.
    pub seq: u64,
    /// The committed index generation the backup carries (None: rebuilt after a restore).
    pub generation: Option<u64>,
}

/// One file of a backup, relative to its directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// A backup's `backup.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: u32,
    pub name: String,
    pub created_ms: i64,
    /// The one collection the snapshot holds; None: every collection.
    #[serde(default)]
    pub collection: Option<String>,
    pub versions: Vec<BackupVersion>,
    pub files: Vec<BackupFile>,
}

impl BackupManifest {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Hex SHA-256 and size of a file, read in 1 MiB blocks.
fn sha256_file(p: &Path) -> Result<(u64, String)> {
    let mut f = fs::File::open(p).map_err(io("open", p))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io("read", p))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, hex(&h.finalize())))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Every regular file under `root`, as paths relative to it with `/` separators, sorted. Anything
/// else (a symlink, a device) is refused: a backup holds plain files only.
fn files_under(root: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
        for e in fs::read_dir(dir).map_err(io("list", dir))? {
            let e = e.map_err(io("list", dir))?;
            let p = e.path();
            let t = e.file_type().map_err(io("stat", &p))?;
            if t.is_dir() {
                walk(root, &p, out)?;
            } else if t.is_file() {
                let rel = p.strip_prefix(root).map_err(|_| {
                    Error::Internal(format!("{} is outside {}", p.display(), root.display()))
                })?;
                out.push(rel.to_string_lossy().replace('\\', "/"));
            } else {
                return Err(Error::DataCorruption(format!(
                    "{} is not a regular file",
                    p.display()
                )));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

fn write_synced(p: &Path, bytes: &[u8]) -> Result<()> {
    crate::generation::write_file(p, bytes)?;
    fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(io("fsync", p))
}

/// Hard-links `from` to `to`, or copies it when the two are on different file systems.
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to).map_err(io("copy", from))?;
    Ok(())
}

/// Links the version's committed generation into `dst` (`MANIFEST` and `gen-<n>/`) and returns
/// its number; None when it has none (or only a damaged one: the restored server rebuilds it).
/// The manifest is read first and written as read, so the pair is consistent; a generation
/// removed while it was being linked (a newer one was committed) is tried again from the newer.
fn link_generation(src: &crate::generation::IndexDir, dst: &Path) -> Result<Option<u64>> {
    for _ in 0..5 {
        let mpath = src.root.join("MANIFEST");
        let Ok(bytes) = fs::read(&mpath) else {
            return Ok(None);
        };
        let Ok(m) = crate::generation::decode_manifest(&bytes) else {
            return Ok(None);
        };
        let gen_src = src.gen_dir(m.generation);
        let gen_dst = dst.join(format!("gen-{}", m.generation));
        if dst.exists() {
            fs::remove_dir_all(dst).map_err(io("remove", dst))?;
        }
        fs::create_dir_all(&gen_dst).map_err(io("mkdir", &gen_dst))?;
        let mut linked = Vec::new();
        let mut complete = true;
        match fs::read_dir(&gen_src) {
            Ok(entries) => {
                for e in entries {
                    let e = e.map_err(io("list", &gen_src))?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    match link_or_copy(&e.path(), &gen_dst.join(&name)) {
                        Ok(()) => linked.push(name),
                        Err(_) if !e.path().exists() => complete = false,
                        Err(err) => return Err(err),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => complete = false,
            Err(e) => return Err(io("list", &gen_src)(e)),
        }
        if complete && m.files.iter().all(|f| linked.contains(&f.name)) {
            write_synced(&dst.join("MANIFEST"), &bytes)?;
            return Ok(Some(m.generation));
        }
    }
    // Generations committed faster than they can be linked: the restored server rebuilds.
    if dst.exists() {
        fs::remove_dir_all(dst).map_err(io("remove", dst))?;
    }
    Ok(None)
}

/// The op sequence of every version in the checkpoint at `db_dir`. The checkpoint is opened as
/// the engine opens a data dir: a checkpoint taken under writes carries a WAL, which this replays
/// into its own tables (RocksDB's read-only open cannot replay it safely), so a restored server
/// finds the same points with nothing left to recover. Its files are checksummed after this.
///
/// With `keep`, every other collection leaves the checkpoint first: its catalog record, points,
/// op sequences and monitor specs are deleted and the tables compacted, so the snapshot holds no
/// byte of another collection's data.
fn versions_in(db_dir: &Path, keep: Option<&str>) -> Result<Vec<BackupVersion>> {
    let db = crate::engine::open_db(db_dir, false)?;
    let cf = |n: &str| {
        db.cf_handle(n)
            .ok_or_else(|| Error::Internal(format!("column family {n} missing")))
    };
    let mut out = Vec::new();
    let mut drop_batch = rocksdb::WriteBatch::default();
    for item in db.prefix_iterator_cf(cf(CF_CATALOG)?, b"coll/") {
        let (k, val) = item?;
        if !k.starts_with(b"coll/") {
            break;
        }
        let record = codec::decode_collection_record(&val)?;
        if keep.is_some_and(|c| c != record.name) {
            drop_batch.delete_cf(cf(CF_CATALOG)?, &k);
            for v in record.versions.values() {
                drop_batch.delete_range_cf(
                    cf(CF_POINTS)?,
                    codec::point_key(v.id, 0),
                    codec::point_key(v.id.saturating_add(1), 0),
                );
                drop_batch.delete_cf(cf(CF_META)?, codec::seq_key(v.id));
            }
            let prefix = crate::specs::key(&record.name, "");
            for spec in db.prefix_iterator_cf(cf(CF_META)?, &prefix) {
                let (sk, _) = spec?;
                if !sk.starts_with(&prefix) {
                    break;
                }
                drop_batch.delete_cf(cf(CF_META)?, &sk);
            }
            continue;
        }
        for v in record.versions.values() {
            let seq = crate::catalog::read_u64(&db, CF_META, &codec::seq_key(v.id), 0)?;
            out.push(BackupVersion {
                collection: record.name.clone(),
                version: v.name.clone(),
                id: v.id,
                seq,
                generation: None,
            });
        }
    }
    if !drop_batch.is_empty() {
        db.write(drop_batch)?;
        for name in [CF_CATALOG, CF_POINTS, CF_META] {
            db.compact_range_cf(cf(name)?, None::<&[u8]>, None::<&[u8]>);
        }
        db.flush_wal(true)?;
    }
    Ok(out)
}

/// Reads and checks a backup directory: its manifest parses, every listed file exists with the
/// listed size and SHA-256, and nothing else is there. The first problem is DATA_CORRUPTION naming
/// the file.
pub fn verify_backup(dir: &Path) -> Result<BackupManifest> {
    let mpath = dir.join(MANIFEST);
    let body = fs::read(&mpath).map_err(io("read", &mpath))?;
    let spath = dir.join(MANIFEST_SUM);
    let want = fs::read_to_string(&spath).map_err(io("read", &spath))?;
    let got = sha256_hex(&body);
    if want.trim() != got {
        return Err(Error::DataCorruption(format!(
            "{}: SHA-256 {got}; {MANIFEST_SUM} says {}",
            mpath.display(),
            want.trim()
        )));
    }
    let m = parse_manifest(&mpath, &body)?;
    if m.format != FORMAT {
        return Err(Error::DataCorruption(format!(
            "{}: format {} (this server reads {FORMAT})",
            mpath.display(),
            m.format
        )));
    }
    let present = files_under(dir)?;
    let mut listed: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    listed.push(MANIFEST);
    listed.push(MANIFEST_SUM);
    listed.sort_unstable();
    if let Some(extra) = present
        .iter()
        .find(|p| listed.binary_search(&p.as_str()).is_err())
    {
        return Err(Error::DataCorruption(format!(
            "{}: not listed in {MANIFEST}",
            dir.join(extra).display()
        )));
    }
    for f in &m.files {
        if f.path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(Error::DataCorruption(format!(
                "{MANIFEST} lists an unsafe path '{}'",
                f.path
            )));
        }
        let p = dir.join(&f.path);
        if !p.is_file() {
            return Err(Error::DataCorruption(format!("{}: missing", p.display())));
        }
        let (size, sha) = sha256_file(&p)?;
        if size != f.size || sha != f.sha256 {
            return Err(Error::DataCorruption(format!(
                "{}: size {size}, SHA-256 {sha}; {MANIFEST} says size {}, SHA-256 {}",
                p.display(),
                f.size,
                f.sha256
            )));
        }
    }
    Ok(m)
}

/// Restores the backup at `from` into the data directory `to`, which must be missing or empty.
/// Every file is verified before anything is written; the files are copied into a temporary
/// directory beside `to` and moved into it only once all are there, so on any failure `to` is
/// left as it was (missing or empty).
pub fn restore_backup(from: &Path, to: &Path) -> Result<BackupManifest> {
    let staging = staging_beside(to, "restoring")?;
    let m = verify_backup(from)?;
    let copied = (|| -> Result<()> {
        for f in &m.files {
            let dst = staging.join(&f.path);
            if let Some(d) = dst.parent() {
                fs::create_dir_all(d).map_err(io("mkdir", d))?;
            }
            fs::copy(from.join(&f.path), &dst).map_err(io("copy to", &dst))?;
            fs::File::open(&dst)
                .and_then(|h| h.sync_all())
                .map_err(io("fsync", &dst))?;
        }
        // The copies are checked again: what the disk gave back is what was verified.
        for f in &m.files {
            let (size, sha) = sha256_file(&staging.join(&f.path))?;
            if size != f.size || sha != f.sha256 {
                return Err(Error::DataCorruption(format!(
                    "{}: changed while it was copied",
                    from.join(&f.path).display()
                )));
            }
        }
        fs::create_dir_all(to).map_err(io("mkdir", to))?;
        for e in fs::read_dir(&staging).map_err(io("list", &staging))? {
            let e = e.map_err(io("list", &staging))?;
            let dst = to.join(e.file_name());
            fs::rename(e.path(), &dst).map_err(io("move into place", &dst))?;
        }
        fsync_dir(to)
    })();
    let cleanup = fs::remove_dir_all(&staging);
    if let Err(e) = copied {
        // Whatever reached `to` goes again: it must stay empty.
        if let Ok(entries) = fs::read_dir(to) {
            for e in entries.flatten() {
                let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
            }
        }
        return Err(e);
    }
    if let Err(e) = cleanup
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %staging.display(), error = %e, "could not remove restore staging dir");
    }
    Ok(m)
}

/// Writes the backup at `dir` as one tar archive: `backup.json.sha256` and `backup.json` first,
/// then every listed file in manifest order, each checked against the manifest as it is read
/// (the archive carries exactly what the manifest promises, or the call fails).
pub fn write_archive(dir: &Path, out: impl std::io::Write) -> Result<()> {
    let m = read_manifest(dir)?;
    let mut ar = tar::Builder::new(out);
    ar.mode(tar::HeaderMode::Deterministic);
    for name in [MANIFEST_SUM, MANIFEST] {
        let p = dir.join(name);
        ar.append_path_with_name(&p, name)
            .map_err(io("archive", &p))?;
    }
    for f in &m.files {
        let p = dir.join(&f.path);
        let (size, sha) = sha256_file(&p)?;
        if size != f.size || sha != f.sha256 {
            return Err(Error::DataCorruption(format!(
                "{}: changed since the snapshot was taken",
                p.display()
            )));
        }
        ar.append_path_with_name(&p, &f.path)
            .map_err(io("archive", &p))?;
    }
    ar.finish().map_err(io("archive", dir))?;
    Ok(())
}

/// Restores a tar archive made by [`write_archive`] into the data directory `to` (missing or
/// empty): unpacked into a staging directory beside `to` (entries that would leave it are
/// refused), then restored as [`restore_backup`] does. On any failure `to` stays empty.
pub fn restore_archive(archive: &Path, to: &Path) -> Result<BackupManifest> {
    let staging = staging_beside(to, "unpacking")?;
    let out = (|| {
        fs::create_dir_all(&staging).map_err(io("mkdir", &staging))?;
        let file = fs::File::open(archive).map_err(io("open", archive))?;
        let mut ar = tar::Archive::new(std::io::BufReader::new(file));
        for entry in ar.entries().map_err(io("read", archive))? {
            let mut entry = entry.map_err(|e| {
                Error::DataCorruption(format!(
                    "{}: not a readable tar archive: {e}",
                    archive.display()
                ))
            })?;
            let name = entry
                .path()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !entry.header().entry_type().is_file() {
                return Err(Error::DataCorruption(format!(
                    "{}: entry '{name}' is not a regular file",
                    archive.display()
                )));
            }
            let unpacked = entry.unpack_in(&staging).map_err(|e| {
                Error::DataCorruption(format!("{}: entry '{name}': {e}", archive.display()))
            })?;
            if !unpacked {
                return Err(Error::DataCorruption(format!(
                    "{}: entry '{name}' would be written outside the restore",
                    archive.display()
                )));
            }
        }
        restore_backup(&staging, to).map_err(|e| match e {
            Error::DataCorruption(m) => Error::DataCorruption(format!(
                "{} (inside {})",
                m.replace(&format!("{}/", staging.display()), ""),
                archive.display()
            )),
            other => other,
        })
    })();
    let _ = fs::remove_dir_all(&staging);
    out
}

fn read_manifest(dir: &Path) -> Result<BackupManifest> {
    let mpath = dir.join(MANIFEST);
    let body = fs::read(&mpath).map_err(io("read", &mpath))?;
    parse_manifest(&mpath, &body)
}

fn parse_manifest(mpath: &Path, body: &[u8]) -> Result<BackupManifest> {
    serde_json::from_slice(body)
        .map_err(|e| Error::DataCorruption(format!("{}: {e}", mpath.display())))
}

/// Refuses a non-empty restore target, creates its parent, and returns a fresh staging path
/// beside it (`.<name>.<tag>-<pid>`, any leftover of a crashed restore removed): staging on the
/// same file system lets the finished files move in by rename.
fn staging_beside(to: &Path, tag: &str) -> Result<PathBuf> {
    if to.exists() && fs::read_dir(to).map_err(io("list", to))?.next().is_some() {
        return Err(Error::FailedPrecondition(format!(
            "{} is not empty; restore writes into an empty (or missing) data directory",
            to.display()
        )));
    }
    let parent = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io("mkdir", parent))?;
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let staging = parent.join(format!(".{name}.{tag}-{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io("remove", &staging))?;
    }
    Ok(staging)
}

impl Engine {
    fn backups_root(&self) -> PathBuf {
        self.data_dir().join(DIR)
    }

    /// The directory of a finished backup (NOT_FOUND otherwise).
    pub fn backup_dir(&self, name: &str) -> Result<PathBuf> {
        validate::name("name", name)?;
        let dir = self.backups_root().join(name);
        if !dir.join(MANIFEST).is_file() {
            return Err(Error::NotFound {
                kind: "snapshot",
                name: name.into(),
            });
        }
        Ok(dir)
    }

    /// Takes a point-in-time backup of every collection while writes go on (see the module).
    /// ALREADY_EXISTS when a backup of that name exists. On failure nothing is left behind.
    pub fn create_backup(&self, name: &str) -> Result<BackupManifest> {
        self.create_backup_of(name, None)
    }

    /// [`Engine::create_backup`] of one collection (`Some`), or of every one (`None`).
    /// NOT_FOUND when the collection does not exist.
    pub fn create_backup_of(&self, name: &str, collection: Option<&str>) -> Result<BackupManifest> {
        validate::name("name", name)?;
        if let Some(c) = collection {
            validate::name("collection", c)?;
        }
        let s = self.shared();
        let _catalog = s.catalog_writer.lock().map_err(poisoned)?;
        if let Some(c) = collection
            && !s.catalog.read().map_err(poisoned)?.contains_key(c)
        {
            return Err(Error::NotFound {
                kind: "collection",
                name: c.into(),
            });
        }
        let root = self.backups_root();
        let dir = root.join(name);
        if dir.exists() {
            return Err(Error::AlreadyExists {
                kind: "snapshot",
                name: name.into(),
            });
        }
        fs::create_dir_all(&dir).map_err(io("mkdir", &dir))?;
        let out = self.fill_backup(name, &dir, collection);
        if out.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        out
    }

    fn fill_backup(
        &self,
        name: &str,
        dir: &Path,
        collection: Option<&str>,
    ) -> Result<BackupManifest> {
        let s = self.shared();
        // 1. Committed generations. No lock: a committed generation's files never change, and
        //    the indexer removes them only after committing the next one, which a retry picks up.
        let mut generations = std::collections::HashMap::new();
        for v in s.versions() {
            if collection.is_some_and(|c| c != v.collection()) {
                continue;
            }
            let dst = dir.join("index").join(v.id().to_string());
            if let Some(g) = link_generation(v.dir(), &dst)? {
                generations.insert(v.id(), g);
            }
        }
        // 2. The checkpoint (it flushes the memtables; the WAL holds nothing it misses). A flush
        //    that ran out of space would stop RocksDB's writes until it is reopened: refuse first
        //    unless the memtables (about the size of the WAL) fit above the reserve.
        let wal_bytes: u64 = std::fs::read_dir(s.config.data_dir.join("db"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        s.check_free_space(wal_bytes)?;
        let db_dir = dir.join("db");
        rocksdb::checkpoint::Checkpoint::new(&s.db)?.create_checkpoint(&db_dir)?;
        let mut versions = versions_in(&db_dir, collection)?;
        for v in &mut versions {
            v.generation = generations.get(&v.id).copied();
        }
        // 3. The manifest: every file's size and SHA-256, written last.
        let mut files = Vec::new();
        for path in files_under(dir)? {
            let (size, sha256) = sha256_file(&dir.join(&path))?;
            files.push(BackupFile { path, size, sha256 });
        }
        let m = BackupManifest {
            format: FORMAT,
            name: name.into(),
            created_ms: now_ms(),
            collection: collection.map(str::to_string),
            versions,
            files,
        };
        let body = serde_json::to_vec_pretty(&m).map_err(|e| Error::Internal(e.to_string()))?;
        write_synced(&dir.join(MANIFEST_SUM), sha256_hex(&body).as_bytes())?;
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        write_synced(&tmp, &body)?;
        let final_path = dir.join(MANIFEST);
        fs::rename(&tmp, &final_path).map_err(io("rename", &final_path))?;
        fsync_dir(dir)?;
        Ok(m)
    }

    /// Finished backups, by name. A directory without its manifest (a backup that did not finish)
    /// is not listed.
    pub fn list_backups(&self) -> Result<Vec<BackupManifest>> {
        let root = self.backups_root();
        let Ok(entries) = fs::read_dir(&root) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let mpath = e.path().join(MANIFEST);
            if let Ok(body) = fs::read(&mpath) {
                out.push(parse_manifest(&mpath, &body)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn delete_backup(&self, name: &str) -> Result<()> {
        let dir = self.backup_dir(name)?;
        // The manifest goes first: a half-deleted backup is never listed.
        let mpath = dir.join(MANIFEST);
        fs::remove_file(&mpath).map_err(io("remove", &mpath))?;
        fs::remove_dir_all(&dir).map_err(io("remove", &dir))
    }
}
