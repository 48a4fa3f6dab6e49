//! Checkpoints: the committed offset of every tracked file, persisted in
//! `<checkpoint_dir>/checkpoints.json`.
//!
//! Key decision: one small JSON document rewritten atomically (write `.tmp`, fsync, rename over,
//! fsync the directory), so a crash leaves either the old or the new file, never a torn one.
//! Each entry records the path, `(dev, ino)`, the fingerprint (length + hash), the stable key,
//! its generation, and the offset, which is enough to find the file again under its rotated (or gzipped) name.
//! Rejected: an embedded database (a dependency and a format for a few KB of state) and
//! append-only logs (need compaction; the rewrite is ~100 bytes per file, at most once per
//! `checkpoint_interval` and only when an offset changed).
//!
//! A checkpoint that cannot be parsed is renamed to `checkpoints.json.corrupt-<unix seconds>`
//! with an error log, and vigil starts per `read_from`.

use super::identity::{FileId, Fingerprint};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "checkpoints.json";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create checkpoint directory {path}: {error}; check that it exists and is writable")]
    Dir { path: String, error: std::io::Error },
    #[error("cannot write checkpoint {path}: {error}")]
    Write { path: String, error: std::io::Error },
    #[error("cannot read checkpoint {path}: {error}")]
    Read { path: String, error: std::io::Error },
}

/// One file's entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// The path the file was discovered under (its rotated names share this prefix).
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    /// How many leading bytes `fingerprint` covers.
    pub fingerprint_len: u16,
    /// FNV-1a of those bytes, hex.
    #[serde(with = "hex_u64")]
    pub fingerprint: u64,
    /// The `Origin.file` key, kept across restarts.
    #[serde(with = "hex_u64")]
    pub key: u64,
    /// Reading resumes here.
    pub offset: u64,
    /// When vigil first saw this content (`identity::Generations`): `key` is derived from it.
    /// Absent in checkpoints written before it existed (0): their `key` is kept as it is.
    #[serde(default)]
    pub generation: u64,
    /// A copy made by copytruncate, being finished (no rotation follows it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copy: bool,
}

impl Entry {
    pub fn id(&self) -> FileId {
        FileId { dev: self.dev, ino: self.ino }
    }
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint { len: self.fingerprint_len, hash: self.fingerprint }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: u32,
    files: Vec<Entry>,
}

/// `Document` as written: borrows the entries (no copy of 10,000 of them to write one file).
#[derive(Serialize)]
struct DocumentRef<'a> {
    version: u32,
    files: &'a [Entry],
}

mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:016x}"))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        u64::from_str_radix(&s, 16).map_err(serde::de::Error::custom)
    }
}

/// The checkpoint store in one directory.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
}

impl Checkpoints {
    /// Creates the directory when missing.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|error| Error::Dir { path: dir.display().to_string(), error })?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The stored entries; none when there is no checkpoint yet. A corrupt file is moved aside
    /// (logged) and treated as absent. Only an unreadable file is an error.
    pub fn load(&self) -> Result<Vec<Entry>, Error> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(Error::Read { path: path.display().to_string(), error }),
        };
        match serde_json::from_slice::<Document>(&bytes) {
            Ok(doc) if doc.version == VERSION => Ok(doc.files),
            parsed => {
                let error = match parsed {
                    Ok(doc) => format!("unsupported version {}", doc.version),
                    Err(e) => e.to_string(),
                };
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let aside = self.dir.join(format!("{FILE_NAME}.corrupt-{secs}"));
                match std::fs::rename(&path, &aside) {
                    Ok(()) => tracing::error!(
                        path = %path.display(), kept = %aside.display(), %error,
                        "checkpoint file is corrupt; kept it aside and starting per read_from"
                    ),
                    Err(rename_error) => tracing::error!(
                        path = %path.display(), %error, rename_error = %rename_error,
                        "checkpoint file is corrupt and could not be moved aside; starting per read_from"
                    ),
                }
                Ok(Vec::new())
            }
        }
    }

    /// Replaces the checkpoint atomically: temp file, fsync, rename, fsync of the directory.
    /// Serialized straight into the file (through a small buffer): no document-sized copy.
    pub fn store(&self, files: &[Entry]) -> Result<(), Error> {
        let path = self.path();
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let werr = |error| Error::Write { path: path.display().to_string(), error };
        let doc = DocumentRef { version: VERSION, files };
        let f = std::fs::File::create(&tmp).map_err(werr)?;
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, f);
        serde_json::to_writer(&mut w, &doc).map_err(std::io::Error::from).map_err(werr)?;
        let f = w.into_inner().map_err(|e| werr(e.into_error()))?;
        f.sync_all().map_err(werr)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(werr)?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(werr)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(off: u64) -> Entry {
        Entry {
            path: "/var/log/pods/a_b_c/d/0.log".into(),
            dev: 1,
            ino: 2,
            fingerprint_len: 256,
            fingerprint: 0xdead_beef,
            key: u64::MAX,
            offset: off,
            generation: 1_795_847_533_123_456_789,
            copy: false,
        }
    }

    #[test]
    fn round_trip_and_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoints::open(&dir.path().join("sub")).unwrap();
        assert!(cp.load().unwrap().is_empty());
        cp.store(&[entry(10)]).unwrap();
        cp.store(&[entry(20)]).unwrap();
        assert_eq!(cp.load().unwrap(), vec![entry(20)]);
        assert!(!dir.path().join("sub").join("checkpoints.json.tmp").exists());
    }

    /// A checkpoint written before entries had a generation still loads, keys unchanged.
    #[test]
    fn checkpoint_without_generations_loads() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoints::open(dir.path()).unwrap();
        std::fs::write(
            cp.path(),
            br#"{"version":1,"files":[{"path":"/var/log/pods/a_b_c/d/0.log","dev":1,"ino":2,"fingerprint_len":256,"fingerprint":"00000000deadbeef","key":"ffffffffffffffff","offset":10}]}"#,
        )
        .unwrap();
        assert_eq!(cp.load().unwrap(), vec![Entry { generation: 0, ..entry(10) }]);
    }

    #[test]
    fn corrupt_checkpoint_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoints::open(dir.path()).unwrap();
        std::fs::write(cp.path(), b"{\"version\":1,\"files\":[{\"pa").unwrap();
        assert!(cp.load().unwrap().is_empty());
        assert!(!cp.path().exists());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("checkpoints.json.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1);
        // And a new checkpoint can be written after it.
        cp.store(&[entry(1)]).unwrap();
        assert_eq!(cp.load().unwrap(), vec![entry(1)]);
    }
}
