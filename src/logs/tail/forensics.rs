//! Rotation forensics: where a file's earlier content went. Which names in a directory are
//! rotated predecessors of a path (`<name>.<suffix>`, also `.gz`), in what order they were
//! rotated, which one a checkpoint entry became, and which one is the copy a copytruncate made.
//!
//! Invariant: every decision here is a pure function of a directory listing (names), of what
//! a candidate is (`Probe`: identity, regular file, size) and of heads against fingerprints.
//! The filesystem is touched only by the thin wrappers at the bottom (`list`, `find_copy`,
//! `rotated_head`), so each rule is unit-tested without a tailer or a directory.

use super::identity::{FileId, Fingerprint};
use std::cmp::Ordering;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "gz")
}

/// `0.log.20241128-061213.gz` → `20241128-061213`; `x-json.log.2` → `2`.
pub fn rotation_suffix(family: &Path, rotated: &Path) -> Option<String> {
    let name = family.file_name()?.to_str()?;
    let n = rotated.file_name()?.to_str()?;
    let rest = n.strip_prefix(name)?.strip_prefix('.')?;
    Some(rest.strip_suffix(".gz").unwrap_or(rest).to_string())
}

/// Whether the file with rotation suffix `a` was rotated after the one with `b`. docker
/// (`<id>-json.log.N`) and logrotate (`<name>.N`, also copytruncate's copies) number rotated
/// files from the newest (`.1`); the kubelet appends a sortable timestamp
/// (`0.log.20241128-061213`).
pub fn rotated_after(a: &str, b: &str) -> bool {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x < y,
        _ => a > b,
    }
}

/// Rotation order of two suffixes (older first), equal when neither is after the other.
pub fn rotation_cmp(a: &str, b: &str) -> Ordering {
    match (rotated_after(a, b), rotated_after(b, a)) {
        (true, _) => Ordering::Greater,
        (_, true) => Ordering::Less,
        _ => Ordering::Equal,
    }
}

/// The rotated names of `family` among `names` (the entries of its directory; `.tmp`
/// excluded), with their suffix (without `.gz`), sorted by name.
pub fn rotated_siblings_in(family: &Path, names: &[String]) -> Vec<(PathBuf, String)> {
    let dir = family.parent().unwrap_or(Path::new(""));
    let mut out: Vec<(PathBuf, String)> = names
        .iter()
        .filter(|n| !n.ends_with(".tmp"))
        .filter_map(|n| {
            let p = dir.join(n);
            let suffix = rotation_suffix(family, &p)?;
            Some((p, suffix))
        })
        .collect();
    out.sort();
    out
}

/// Of `siblings` (from `rotated_siblings_in`), those rotated after the one with suffix
/// `after`, oldest first: the files rotated again since, never seen.
pub fn rotated_since(siblings: Vec<(PathBuf, String)>, after: &str) -> Vec<PathBuf> {
    let mut newer: Vec<(PathBuf, String)> = siblings.into_iter().filter(|(_, s)| rotated_after(s, after)).collect();
    newer.sort_by(|a, b| if rotated_after(&a.1, &b.1) { Ordering::Greater } else { Ordering::Less });
    newer.into_iter().map(|(p, _)| p).collect()
}

/// The names a copy of `family` may have among `names` (`<name>.<suffix>`, `<name>-<suffix>`,
/// `.tmp` excluded), plain ones first, with whether they are gzip-compressed.
pub fn copy_candidates_in(family: &Path, names: &[String]) -> Vec<(bool, PathBuf)> {
    let (Some(name), Some(dir)) = (family.file_name().and_then(|n| n.to_str()), family.parent()) else {
        return Vec::new();
    };
    let mut out: Vec<(bool, PathBuf)> = names
        .iter()
        .filter_map(|n| {
            let rest = n.strip_prefix(name)?;
            if !(rest.starts_with('.') || rest.starts_with('-')) || rest.len() < 2 || n.ends_with(".tmp") {
                return None;
            }
            Some((is_gz(Path::new(n)), dir.join(n)))
        })
        .collect();
    out.sort();
    out
}

/// What a candidate file is, from one `fstat` of it once opened.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub id: FileId,
    pub is_file: bool,
    pub len: u64,
}

/// The file whose copy is looked for: its fingerprint, identity and read offset.
#[derive(Debug, Clone, Copy)]
pub struct Truncated {
    pub fp: Fingerprint,
    pub id: FileId,
    pub offset: u64,
}

/// Whether a candidate may be the copy of `t` before its head is looked at: a regular file,
/// not `t` itself nor a file already open, and (plain) holding at least what `t` read.
pub fn may_be_copy(t: &Truncated, c: &Probe, gz: bool, open: impl Fn(FileId) -> bool) -> bool {
    c.is_file && c.id != t.id && !open(c.id) && (gz || c.len >= t.offset)
}

/// Whether a rotated file with head `head` is the one checkpoint entry `want` (taken at
/// identity `entry_id`) became: the same first bytes, and, for a plain file, the same identity
/// unless the fingerprint is complete (a copy or a re-created file has a new inode). A `.gz`
/// has a new inode always, so only a non-empty fingerprint can tell.
pub fn resumes_entry(want: Fingerprint, entry_id: FileId, c: FileId, gz: bool, head: &[u8]) -> bool {
    if gz { want.len > 0 && want.matches(head) } else { want.matches(head) && (c == entry_id || want.complete()) }
}

/// Whether a rotated file no checkpoint entry names (by `known` fingerprints) is one never
/// seen: non-empty, and not the start of any known file.
pub fn unseen(head: &[u8], known: &[Fingerprint]) -> bool {
    !head.is_empty() && !known.iter().any(|fp| fp.len > 0 && fp.matches(head))
}

// ---- The filesystem side: a listing, heads, and the copy search over them. ----

/// The names in the directory of `path` (empty when it cannot be read).
pub fn list(path: &Path) -> Vec<String> {
    let Some(dir) = path.parent() else { return Vec::new() };
    let Ok(rd) = std::fs::read_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }) else {
        return Vec::new();
    };
    rd.flatten().filter_map(|d| d.file_name().into_string().ok()).collect()
}

/// The rotated names of `family` in its directory (`rotated_siblings_in` over `list`).
pub fn rotated_siblings(family: &Path) -> Vec<(PathBuf, String)> {
    if family.parent().is_none() {
        return Vec::new();
    }
    rotated_siblings_in(family, &list(family))
}

/// The names a copy of `family` may have in its directory.
pub fn copy_candidates(family: &Path) -> Vec<(bool, PathBuf)> {
    copy_candidates_in(family, &list(family))
}

/// The copy a copytruncate made of `t` (found under `family`) before truncating it: among the
/// `candidates` (`copy_candidates_in`, plain ones first: logrotate compresses the copy after the
/// truncation, so a `.gz` may still be being written while the plain copy next to it is
/// complete), the first that `may_be_copy` and whose first bytes (`head`, decompressed for a
/// `.gz`) are the ones `t` fingerprinted. None when `t` has no fingerprint (an empty one would
/// match any file). `probe` opens a candidate; `head` reads its first bytes.
pub fn find_copy_in<C>(
    t: &Truncated,
    candidates: Vec<(bool, PathBuf)>,
    open: impl Fn(FileId) -> bool,
    mut probe: impl FnMut(&Path) -> Option<(C, Probe)>,
    mut head: impl FnMut(&mut C, bool, usize) -> Option<Vec<u8>>,
) -> Option<(PathBuf, C, FileId, bool)> {
    if t.fp.len == 0 {
        return None;
    }
    candidates.into_iter().find_map(|(gz, path)| {
        let (mut c, p) = probe(&path)?;
        if !may_be_copy(t, &p, gz, &open) {
            return None;
        }
        let h = head(&mut c, gz, t.fp.len as usize)?;
        t.fp.matches(&h).then_some((path, c, p.id, gz))
    })
}

/// `find_copy_in` over the real directory of `path` (a symlink, `/var/log/containers`, names
/// the file; its copies sit next to the target).
pub fn find_copy(path: &Path, t: &Truncated, open: impl Fn(FileId) -> bool) -> Option<(PathBuf, File, FileId, bool)> {
    if t.fp.len == 0 {
        return None;
    }
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    find_copy_in(
        t,
        copy_candidates(&real),
        open,
        |p| {
            let file = File::open(p).ok()?;
            let meta = file.metadata().ok()?;
            Some((file, Probe { id: FileId::of(&meta), is_file: meta.is_file(), len: meta.len() }))
        },
        rotated_head,
    )
}

/// The first `len` bytes of a rotated file (decompressed for a `.gz`), `file` left at its start.
pub fn rotated_head(file: &mut File, gz: bool, len: usize) -> Option<Vec<u8>> {
    if gz {
        let mut head = Vec::new();
        let mut dec = flate2::read::GzDecoder::new(std::io::BufReader::new(file.try_clone().ok()?));
        (&mut dec).take(len as u64).read_to_end(&mut head).ok()?;
        // The clone shares the descriptor's position: start over from the top.
        std::io::Seek::seek(file, std::io::SeekFrom::Start(0)).ok()?;
        Some(head)
    } else {
        let mut head = vec![0u8; len];
        let n = read_head(file, &mut head);
        head.truncate(n);
        Some(head)
    }
}

/// Reads the first `buf.len()` bytes of `f` (fewer when it is shorter); how many.
pub fn read_head(f: &File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], n as u64) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    const ID: FileId = FileId { dev: 1, ino: 10 };

    fn id(ino: u64) -> FileId {
        FileId { dev: 1, ino }
    }

    #[test]
    fn rotation_order() {
        let kubelet = Path::new("/var/log/pods/a_b_c/d/0.log");
        assert!(rotated_after("20241128-071213", "20241128-061213"));
        assert!(!rotated_after("20241128-061213", "20241128-071213"));
        assert!(rotated_after("1", "2"));
        assert!(rotated_after("2", "10"));
        assert_eq!(
            rotation_suffix(kubelet, Path::new("/var/log/pods/a_b_c/d/0.log.20241128-061213.gz")).as_deref(),
            Some("20241128-061213")
        );
        assert_eq!(rotation_suffix(kubelet, kubelet), None);
        let docker = Path::new("/var/lib/docker/containers/x/x-json.log");
        assert_eq!(
            rotation_suffix(docker, Path::new("/var/lib/docker/containers/x/x-json.log.3")).as_deref(),
            Some("3")
        );
        assert_eq!(rotation_cmp("1", "1"), Ordering::Equal);
        assert_eq!(rotation_cmp("2", "1"), Ordering::Less);
    }

    #[test]
    fn rotated_siblings_are_the_family_names_with_a_suffix_and_no_tmp() {
        let family = Path::new("/d/0.log");
        let listing = names(&[
            "0.log",
            "0.log.20241128-061213",
            "0.log.20241128-071213.gz",
            "0.log.20241128-081213.tmp",
            "0.logx",
            "1.log.20241128-061213",
            "0.log-20241128",
        ]);
        let got = rotated_siblings_in(family, &listing);
        assert_eq!(
            got,
            vec![
                (PathBuf::from("/d/0.log.20241128-061213"), "20241128-061213".to_string()),
                (PathBuf::from("/d/0.log.20241128-071213.gz"), "20241128-071213".to_string()),
            ]
        );
    }

    #[test]
    fn files_rotated_since_come_oldest_first() {
        // docker numbering: .1 is the newest. Restored `.3`: `.2` then `.1` came after it.
        let family = Path::new("/d/x-json.log");
        let listing = names(&["x-json.log", "x-json.log.1", "x-json.log.2.gz", "x-json.log.3", "x-json.log.4"]);
        let got = rotated_since(rotated_siblings_in(family, &listing), "3");
        assert_eq!(got, [PathBuf::from("/d/x-json.log.2.gz"), PathBuf::from("/d/x-json.log.1")]);
        // kubelet timestamps: later is newer.
        let family = Path::new("/d/0.log");
        let listing = names(&["0.log.20241128-091213", "0.log.20241128-061213", "0.log.20241128-071213.gz"]);
        let got = rotated_since(rotated_siblings_in(family, &listing), "20241128-061213");
        assert_eq!(got, [PathBuf::from("/d/0.log.20241128-071213.gz"), PathBuf::from("/d/0.log.20241128-091213")]);
    }

    #[test]
    fn copy_candidates_are_dot_or_dash_names_plain_first() {
        let family = Path::new("/d/0.log");
        let listing =
            names(&["0.log", "0.log.1.gz", "0.log-20261128", "0.log.1", "0.log.", "0.log.2.tmp", "0.logs", "1.log.1"]);
        let got = copy_candidates_in(family, &listing);
        assert_eq!(
            got,
            vec![
                (false, PathBuf::from("/d/0.log-20261128")),
                (false, PathBuf::from("/d/0.log.1")),
                (true, PathBuf::from("/d/0.log.1.gz")),
            ]
        );
    }

    /// A fake directory: per name, what it is and its (decompressed) content.
    fn search(t: &Truncated, files: &[(&str, FileId, u64, &[u8])], open: &[FileId]) -> Option<String> {
        let family = Path::new("/d/0.log");
        let listing: Vec<String> = files.iter().map(|f| f.0.to_string()).collect();
        let by_name: HashMap<PathBuf, (FileId, u64, &[u8])> =
            files.iter().map(|&(n, id, len, data)| (Path::new("/d").join(n), (id, len, data))).collect();
        find_copy_in(
            t,
            copy_candidates_in(family, &listing),
            |id| open.contains(&id),
            |p| {
                let &(id, len, data) = by_name.get(p)?;
                Some((data, Probe { id, is_file: true, len }))
            },
            |data, _gz, len| Some(data[..len.min(data.len())].to_vec()),
        )
        .map(|(p, _, _, _)| p.file_name().unwrap().to_str().unwrap().to_string())
    }

    #[test]
    fn the_copy_is_the_candidate_with_the_fingerprinted_head_and_enough_bytes() {
        let old = b"old line 0\nold line 1\n".as_slice();
        let other = b"older content\n".as_slice();
        let t = Truncated { fp: Fingerprint::of_bytes(old), id: ID, offset: old.len() as u64 };
        // An older copy with other content is not taken; the matching one is.
        let files = [("0.log.2", id(2), 14, other), ("0.log.1", id(3), old.len() as u64, old)];
        assert_eq!(search(&t, &files, &[]).as_deref(), Some("0.log.1"));
        // A plain copy shorter than what was read is not it (still being written: the .gz is).
        let files = [("0.log.1", id(3), 5, old), ("0.log.1.gz", id(4), 3, old)];
        assert_eq!(search(&t, &files, &[]).as_deref(), Some("0.log.1.gz"));
        // A file already open (an earlier copy held) or the truncated file itself is not it.
        let files = [("0.log.1", id(3), 100, old), ("0.log-1", ID, 100, old)];
        assert_eq!(search(&t, &files, &[id(3)]), None);
        // No fingerprint: an empty one would match any file.
        let t = Truncated { fp: Fingerprint::default(), id: ID, offset: 0 };
        assert_eq!(search(&t, &[("0.log.1", id(3), 100, old)], &[]), None);
    }

    #[test]
    fn a_checkpoint_entry_resumes_only_in_a_file_that_can_be_it() {
        let head = vec![b'x'; 300];
        let complete = Fingerprint::of_bytes(&head);
        let short = Fingerprint::of_bytes(&head[..10]);
        // Plain: same identity, or any identity with a complete fingerprint (a copy).
        assert!(resumes_entry(short, ID, ID, false, &head));
        assert!(!resumes_entry(short, ID, id(2), false, &head));
        assert!(resumes_entry(complete, ID, id(2), false, &head));
        assert!(!resumes_entry(complete, ID, ID, false, b"other"));
        // gz: a new inode always; an empty fingerprint tells nothing.
        assert!(resumes_entry(short, ID, id(2), true, &head));
        assert!(!resumes_entry(Fingerprint::default(), ID, id(2), true, &head));
        // Unseen rotated files: not empty, not the start of a known file.
        assert!(unseen(&head, &[Fingerprint::default(), Fingerprint::of_bytes(b"other")]));
        assert!(!unseen(&head, &[short]));
        assert!(!unseen(b"", &[]));
    }
}
