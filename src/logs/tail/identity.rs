//! File identity: `(device, inode)` plus a fingerprint of the file's first bytes.
//!
//! `(dev, ino)` alone is not enough: once a file is deleted and closed, the filesystem reuses
//! its inode for the next file, which would then be "resumed" at the old offset. The
//! fingerprint (FNV-1a over the first `FINGERPRINT_BYTES`, or fewer while the file is shorter,
//! remembering how many) tells the two apart. It also finds a file again after it was renamed
//! or gzip-compressed (new inode, same first bytes of content). Rejected: fingerprint only
//! (Vector's default): identical first lines in two files (a common banner) would collide.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

/// Bytes hashed into the fingerprint once the file has that many.
pub const FINGERPRINT_BYTES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self { dev: meta.dev(), ino: meta.ino() }
    }
}

/// A hash of the first `len` bytes of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    pub len: u16,
    pub hash: u64,
}

impl Default for Fingerprint {
    /// The fingerprint of an empty file (matches every file).
    fn default() -> Self {
        Self::of_bytes(&[])
    }
}

impl Fingerprint {
    pub fn of_bytes(b: &[u8]) -> Self {
        let b = &b[..b.len().min(FINGERPRINT_BYTES)];
        Self { len: b.len() as u16, hash: fnv1a(b) }
    }

    /// The fingerprint of an open file (positional reads: the file's offset is untouched).
    pub fn of_file(f: &File) -> io::Result<Self> {
        let mut buf = [0u8; FINGERPRINT_BYTES];
        let mut n = 0;
        while n < buf.len() {
            match f.read_at(&mut buf[n..], n as u64)? {
                0 => break,
                k => n += k,
            }
        }
        Ok(Self::of_bytes(&buf[..n]))
    }

    /// Whether `self` (taken over `self.len` bytes) is a prefix-fingerprint of a file whose
    /// first bytes are `head`.
    pub fn matches(&self, head: &[u8]) -> bool {
        let n = self.len as usize;
        head.len() >= n && fnv1a(&head[..n]) == self.hash
    }

    pub fn complete(&self) -> bool {
        self.len as usize >= FINGERPRINT_BYTES
    }
}

/// FNV-1a 64 (`crate::hash`): stable across builds and versions (the checkpoint depends on it).
pub use crate::hash::fnv1a64 as fnv1a;

/// The `Origin.file` key of one *instance* of a file's content: its identity and the
/// generation it got when vigil first saw that content (see `Generations`). Persisted in the
/// checkpoint, so it stays the same across restarts and renames; a truncation or a new file
/// at a reused inode gets a new generation, hence a new key, so `(key, offset)` never names
/// two different lines.
pub fn file_key(id: FileId, generation: u64) -> u64 {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(&id.dev.to_le_bytes());
    b[8..16].copy_from_slice(&id.ino.to_le_bytes());
    b[16..24].copy_from_slice(&generation.to_le_bytes());
    fnv1a(&b)
}

/// Hands out generations: unique per file content seen on this node, strictly increasing.
///
/// A generation is the wall clock in nanoseconds when vigil first saw the content (a new file,
/// a reused inode, or a file refilled after a truncation), raised above every generation
/// handed out before, including those in the loaded checkpoint, so neither a restart nor a
/// clock stepping back repeats one. Rejected: the fingerprint as the only tell (an inode
/// reused while the new file is still empty has the same empty fingerprint as the old one,
/// and a truncated file may start with the same bytes again) and a plain counter (a crash
/// before the checkpoint that recorded it hands the same number out again).
#[derive(Debug, Default)]
pub struct Generations {
    last: u64,
}

impl Generations {
    /// Continues after `seen` (the generations of the loaded checkpoint).
    pub fn after(seen: impl IntoIterator<Item = u64>) -> Self {
        Self { last: seen.into_iter().max().unwrap_or(0) }
    }

    pub fn take(&mut self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        self.last = now.max(self.last + 1);
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matching() {
        let fp = Fingerprint::of_bytes(b"hello");
        assert!(fp.matches(b"hello world"));
        assert!(!fp.matches(b"hell"));
        assert!(!fp.matches(b"jello world"));
        let long = vec![7u8; 1000];
        let fp = Fingerprint::of_bytes(&long);
        assert_eq!(fp.len as usize, FINGERPRINT_BYTES);
        assert!(fp.complete());
        assert!(fp.matches(&long));
        // Known FNV-1a vector.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn generations_increase_past_the_checkpoint_and_give_distinct_keys() {
        let far = u64::MAX / 2;
        let mut g = Generations::after([3, far, 7]);
        let (a, b) = (g.take(), g.take());
        assert!(a > far && b > a);
        let id = FileId { dev: 1, ino: 2 };
        assert_ne!(file_key(id, a), file_key(id, b));
        assert_ne!(file_key(id, a), file_key(FileId { dev: 1, ino: 3 }, a));
    }
}
