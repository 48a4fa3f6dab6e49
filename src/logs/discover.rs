//! Discovery: which files are container logs. A walk of the include globs (at start, every
//! `rescan_interval`, and soon after inotify reports a new entry), plus inotify to wake the
//! tailer when files change.
//!
//! Key decisions:
//! - Globs are walked from their literal prefix, one directory level per glob component, so a
//!   walk of `/var/log/pods/*/*/*.log` reads only the directories it must (no recursion into
//!   unrelated trees). `**` walks everything below.
//! - A file reachable by several paths (a `/var/log/containers` symlink and its target) is one
//!   file: paths are grouped by `(dev, ino)` of their target, and the non-symlink path wins (it
//!   has the pod uid and restart count); the symlink's name contributes the container id.
//! - inotify is a hint, never the truth: events only trigger reads and rescans, and the
//!   periodic rescan catches whatever was missed. If a watch cannot be added (limits, missing
//!   directory permissions), vigil logs one warning, sets `vigil_inotify_fallback` to 1 and
//!   polls. Rejected: inotify alone (queue overflows and watch limits lose files silently),
//!   polling alone (new files seen only after a full rescan).

use super::tail::identity::FileId;
use globset::{GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// A log file found by a walk.
#[derive(Debug, Clone)]
pub struct Found {
    /// The path events report.
    pub path: PathBuf,
    /// A `/var/log/containers`-style symlink pointing at the same file, if one was found.
    pub link: Option<PathBuf>,
    pub id: FileId,
    /// Last modification (for `ignore_older`).
    pub mtime: std::time::SystemTime,
}

struct Pattern {
    /// Literal leading directory (e.g. `/var/log/pods`).
    root: PathBuf,
    /// Remaining components, each matched against one directory level; `None` for `**`.
    levels: Option<usize>,
    matcher: GlobMatcher,
    /// What the last walk listed under `root`.
    listing: Listing,
}

/// A directory as a walk listed it, kept so the next walk skips reading it while it is
/// unchanged: one `stat` instead of open, two `getdents` and close, and no IN_OPEN event for
/// the watcher to handle. At 10,000 pods that was 70,000 system calls and 34,000 inotify
/// events per walk, every `rescan_interval`.
///
/// Unchanged means same inode and same mtime, and the mtime was more than `SETTLED` before
/// the listing: a directory changes its mtime at every entry created, removed or renamed, but
/// at the clock's granularity, so a change in the same tick as the one before it would not
/// show; a listing taken that soon after a change is not trusted (read again next walk).
/// Files themselves are still looked up at every walk (`group`: their identity and mtime).
#[derive(Default)]
struct Listing {
    /// Hash of (inode, mtime) when listed; 0: not trusted.
    stamp: u64,
    /// Its inotify watch descriptor (0: not watched).
    wd: i32,
    /// Subdirectories (kept only while levels remain below), each with its listing.
    dirs: Box<[(Box<std::ffi::OsStr>, Listing)]>,
    /// The files that matched, and whether each is a symlink.
    files: Box<[(Box<std::ffi::OsStr>, bool)]>,
}

/// How long before a listing a directory's last change must be for the listing to be trusted.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(1);

/// The stamp of a directory (0 when its listing may miss a change made in the same clock tick).
fn stamp(meta: &std::fs::Metadata, now: std::time::SystemTime) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let settled = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).is_some_and(|age| age > SETTLED);
    if !settled {
        return 0;
    }
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&meta.ino().to_le_bytes());
    b[8..16].copy_from_slice(&meta.dev().to_le_bytes());
    b[16..24].copy_from_slice(&meta.mtime().to_le_bytes());
    b[24..32].copy_from_slice(&meta.mtime_nsec().to_le_bytes());
    crate::hash::fnv1a64(&b).max(1)
}

/// The include/exclude globs, ready to walk.
pub struct Globs {
    patterns: Vec<Pattern>,
    exclude: GlobSet,
    update: GlobsUpdate,
    /// Paths the last walk found: the next one's list starts at that capacity (doubling from
    /// empty left up to half of it unused, ~0.5 MB at 10,000 files).
    last_found: usize,
}

/// New include/exclude globs from a config reload, waiting for the tailer's next scan
/// (`Globs::take_update`). Swapping between walks keeps everything else the tailer holds (open
/// files, offsets, held files): a file the new globs no longer find is treated like one that
/// left its path (read to its end, then closed), a newly matched one is opened like a new file.
#[derive(Clone, Default)]
pub struct GlobsUpdate(Arc<Mutex<Option<Globs>>>);

impl GlobsUpdate {
    /// Builds the globs (validated already) and queues them for the next scan.
    pub fn set(&self, include: &[String], exclude: &[String]) -> Result<(), globset::Error> {
        let globs = Globs::new(include, exclude)?;
        *self.0.lock().expect("globs update lock poisoned") = Some(globs);
        Ok(())
    }
}

fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

impl Globs {
    /// Builds from the config's globs (validated already, so errors here are unexpected).
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, globset::Error> {
        let mut patterns = Vec::new();
        for g in include {
            let mut root = PathBuf::new();
            let mut rest = 0usize;
            let mut deep = false;
            let mut literal = true;
            for c in Path::new(g).components() {
                let s = c.as_os_str().to_string_lossy();
                if literal && !has_meta(&s) {
                    root.push(c);
                    continue;
                }
                literal = false;
                if s.contains("**") {
                    deep = true;
                }
                rest += 1;
            }
            if rest == 0 {
                // A literal path: walk its parent for that one name.
                let parent = root.parent().map(Path::to_path_buf).unwrap_or_default();
                root = parent;
                rest = 1;
            }
            if root.as_os_str().is_empty() {
                root = PathBuf::from(".");
            }
            let matcher = GlobBuilder::new(g).literal_separator(true).build()?.compile_matcher();
            patterns.push(Pattern { root, levels: (!deep).then_some(rest), matcher, listing: Listing::default() });
        }
        let mut ex = GlobSetBuilder::new();
        for g in exclude {
            ex.add(GlobBuilder::new(g).literal_separator(true).build()?);
        }
        Ok(Self { patterns, exclude: ex.build()?, update: GlobsUpdate::default(), last_found: 0 })
    }

    /// The handle through which a config reload replaces these globs.
    pub fn updates(&self) -> GlobsUpdate {
        self.update.clone()
    }

    /// Takes the globs a reload queued, if any (the tailer calls this before each walk).
    pub fn take_update(&mut self) {
        let next = self.update.0.lock().expect("globs update lock poisoned").take();
        if let Some(mut next) = next {
            next.update = self.update.clone();
            *self = next;
        }
    }

    /// Walks every include glob; returns one `Found` per distinct file. Directories unchanged
    /// since the last walk are not read again (`Listing`). With `watch`, every directory
    /// listed is watched (before it is read), so a directory made since the last walk is
    /// watched by the walk that finds it.
    pub fn walk(&mut self, mut watch: Option<&mut Watcher>) -> Vec<Found> {
        let mut found = Vec::with_capacity(self.last_found + self.last_found / 16);
        let now = std::time::SystemTime::now();
        for p in &mut self.patterns {
            let mut w = Walk { m: &p.matcher, ex: &self.exclude, now, watch: watch.as_deref_mut() };
            w.dir(&p.root, 0, p.root.as_os_str(), p.levels.unwrap_or(64), &mut p.listing, &mut found);
        }
        self.last_found = found.len();
        group(found)
    }
}

/// One walk of one pattern.
struct Walk<'a> {
    m: &'a GlobMatcher,
    ex: &'a GlobSet,
    now: std::time::SystemTime,
    watch: Option<&'a mut Watcher>,
}

impl Walk<'_> {
    /// Lists `dir` (or reuses its unchanged `listing`), adds the matching files to `out` (one
    /// `Found` per path, `link` set for a symlink: `group` merges the paths of one file), and
    /// walks the subdirectories while `levels` remain.
    /// `parent`: the watch descriptor of the directory `dir` was listed in as `name` (0 for a
    /// root).
    fn dir(
        &mut self,
        dir: &Path,
        parent: i32,
        name: &std::ffi::OsStr,
        levels: usize,
        listing: &mut Listing,
        out: &mut Vec<Found>,
    ) {
        let Ok(meta) = std::fs::metadata(dir) else {
            *listing = Listing::default();
            return;
        };
        let stamp = stamp(&meta, self.now);
        let unwatched = self.watch.as_ref().is_some_and(|w| !w.failed) && listing.wd == 0;
        if stamp == 0 || stamp != listing.stamp || unwatched {
            // Watched before it is read: an entry made after the read sends a hint, one made
            // before it is in the listing. Watched again at each new listing: the same
            // descriptor while it is the same directory, a new one for a directory made again
            // under the same name.
            let wd = match self.watch.as_deref_mut() {
                Some(w) => w.add(dir, parent, name),
                None => listing.wd,
            };
            let Some(fresh) = self.list(dir, levels, listing) else {
                *listing = Listing::default();
                return;
            };
            *listing = fresh;
            listing.stamp = stamp;
            listing.wd = wd;
        }
        let join = |name: &std::ffi::OsStr| if dir == Path::new(".") { PathBuf::from(name) } else { dir.join(name) };
        for (name, is_link) in &listing.files {
            let path = join(name);
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if !meta.is_file() {
                continue;
            }
            let (path, link) = if *is_link { (path.clone(), Some(path)) } else { (path, None) };
            let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            out.push(Found { path, link, id: FileId::of(&meta), mtime });
        }
        if levels > 1 {
            let wd = listing.wd;
            for (name, sub) in listing.dirs.iter_mut() {
                self.dir(&join(name), wd, name, levels - 1, sub, out);
            }
        }
    }

    /// Reads `dir`: its matching files, and its subdirectories (with what `old` knew of them)
    /// while levels remain.
    fn list(&self, dir: &Path, levels: usize, old: &mut Listing) -> Option<Listing> {
        let rd = std::fs::read_dir(dir).ok()?;
        let mut kept: HashMap<Box<std::ffi::OsStr>, Listing> =
            std::mem::take(&mut old.dirs).into_vec().into_iter().collect();
        let (mut dirs, mut files) = (Vec::new(), Vec::new());
        for entry in rd.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            let name = entry.file_name();
            // Symlinks count as files (the kubelet's /var/log/containers links); we never
            // follow a symlink into a directory, which could loop.
            if ft.is_dir() {
                if levels > 1 {
                    let sub = kept.remove(name.as_os_str()).unwrap_or_default();
                    dirs.push((name.into_boxed_os_str(), sub));
                }
            } else if ft.is_file() || ft.is_symlink() {
                let path = if dir == Path::new(".") { PathBuf::from(&name) } else { entry.path() };
                if self.m.is_match(&path) && !self.ex.is_match(&path) {
                    files.push((name.into_boxed_os_str(), ft.is_symlink()));
                }
            }
        }
        Some(Listing { stamp: 0, wd: 0, dirs: dirs.into_boxed_slice(), files: files.into_boxed_slice() })
    }
}

/// Groups the paths found (in walk order, one `Found` each) by the file they reach. In place,
/// without a map: the identities are sorted on the side (a `(FileId, index)` pair each) and
/// only a file reached by several paths is merged. A map of every file by identity was ~1.5 MB
/// at each walk of 10,000 files.
fn group(mut found: Vec<Found>) -> Vec<Found> {
    let mut ids: Vec<(FileId, u32)> = found.iter().enumerate().map(|(i, f)| (f.id, i as u32)).collect();
    ids.sort_unstable_by_key(|&(id, i)| (id.dev, id.ino, i));
    let mut merged = Vec::new();
    for run in ids.chunk_by(|a, b| a.0 == b.0).filter(|run| run.len() > 1) {
        // The first path found keeps the entry; the others give it what it lacks.
        let first = run[0].1 as usize;
        for &(_, i) in &run[1..] {
            let other = std::mem::replace(&mut found[i as usize].path, PathBuf::new());
            let is_link = found[i as usize].link.is_some();
            let f = &mut found[first];
            if is_link {
                f.link.get_or_insert(other);
            } else if f.link.as_ref() == Some(&f.path) {
                // First seen through its symlink: the real path wins.
                f.path = other;
            }
            merged.push(i);
        }
    }
    drop(ids);
    if !merged.is_empty() {
        merged.sort_unstable();
        let mut k = 0u32;
        let mut next = merged.iter().peekable();
        found.retain(|_| {
            let keep = next.peek() != Some(&&k);
            if !keep {
                next.next();
            }
            k += 1;
            keep
        });
    }
    // A file seen only through a symlink keeps the link's path (events report it; opening it
    // reads the target).
    found.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    found
}

/// A hint from the watcher.
#[derive(Debug)]
pub enum Wake {
    /// Something was created/renamed/removed under a watched directory.
    Rescan,
    /// A file was written.
    Data(PathBuf),
    /// Stop (from `LogSource::stop_intake`).
    Stop,
}

/// The inotify side: one watch per directory a walk lists, added by the walk itself (`Walk`),
/// and a thread of its own reading the events into bounded `Wake` hints; when the channel is
/// full, a flag asks the tailer for a full poll and rescan instead (nothing blocks the reading
/// thread, memory is bounded).
///
/// Rejected: notify's recursive watch of each root (it stays for the config file's directory,
/// `crate::reload`). It kept two copies of every directory's full path in two maps, ~5.6 MB
/// for the 20,000 directories of 10,000 pods, walked the tree a second time to add them, and
/// asked for open, close and attribute events, which vigil ignores but had to read. Here each
/// descriptor names its directory by its parent's descriptor and its own name (`Dirs`), and
/// only the events that mean something are asked for: a write or truncation (`IN_MODIFY`,
/// → `Wake::Data`) and an entry created, removed or renamed (→ `Wake::Rescan`).
pub struct Watcher {
    inner: Option<Inner>,
    pub overflow: Arc<AtomicBool>,
    pub failed: bool,
}

struct Inner {
    watches: inotify::Watches,
    dirs: Arc<Mutex<Dirs>>,
    /// Dropping it ends the reading thread (its end of the pipe hangs up).
    _stop: std::os::fd::OwnedFd,
}

/// The directory of each watch descriptor: a root by its path, any other by its parent's
/// descriptor and its name (~60 bytes a directory).
#[derive(Default)]
struct Dirs(HashMap<i32, Dir>);

enum Dir {
    Root(Box<Path>),
    Child { parent: i32, name: Box<std::ffi::OsStr> },
}

impl Dirs {
    /// The path of the directory watched by `wd`; None if it (or a parent) is not known
    /// (removed meanwhile, or its watch not recorded yet).
    fn path(&self, wd: i32) -> Option<PathBuf> {
        let mut names: Vec<&std::ffi::OsStr> = Vec::new();
        let mut wd = wd;
        for _ in 0..256 {
            match self.0.get(&wd)? {
                Dir::Root(p) => {
                    let mut path = p.to_path_buf();
                    path.extend(names.iter().rev());
                    return Some(path);
                }
                Dir::Child { parent, name } => {
                    names.push(name);
                    wd = *parent;
                }
            }
        }
        None
    }
}

/// What vigil asks inotify for on each directory.
fn watch_mask() -> inotify::WatchMask {
    use inotify::WatchMask as M;
    M::MODIFY | M::CREATE | M::DELETE | M::MOVED_FROM | M::MOVED_TO | M::DELETE_SELF | M::MOVE_SELF | M::ONLYDIR
}

impl Watcher {
    pub fn new(tx: SyncSender<Wake>) -> Self {
        let overflow = Arc::new(AtomicBool::new(false));
        match Self::start(tx, overflow.clone()) {
            Ok(inner) => Self { inner: Some(inner), overflow, failed: false },
            Err(error) => {
                tracing::warn!(%error, "inotify unavailable; discovering files by polling (vigil_inotify_fallback=1)");
                Self { inner: None, overflow, failed: true }
            }
        }
    }

    fn start(tx: SyncSender<Wake>, overflow: Arc<AtomicBool>) -> std::io::Result<Inner> {
        let inotify = inotify::Inotify::init()?;
        let (stop_rx, stop_tx) = pipe()?;
        let dirs = Arc::new(Mutex::new(Dirs::default()));
        let watches = inotify.watches();
        let d = dirs.clone();
        std::thread::Builder::new()
            .name("vigil-inotify".into())
            .spawn(move || read_events(inotify, stop_rx, &d, &tx, &overflow))?;
        Ok(Inner { watches, dirs, _stop: stop_tx })
    }

    /// Watches `dir` (a root when `parent` is 0, else a subdirectory of the directory `parent`
    /// watches, named `name`). Returns its descriptor, or 0 when it is not watched: it vanished
    /// (the next walk sees that), or watching failed, and then vigil polls from now on
    /// (`failed`).
    fn add(&mut self, dir: &Path, parent: i32, name: &std::ffi::OsStr) -> i32 {
        let Some(inner) = self.inner.as_mut() else { return 0 };
        match inner.watches.add(dir, watch_mask()) {
            Ok(wd) => {
                let wd = wd.get_watch_descriptor_id();
                let entry = if parent > 0 { Dir::Child { parent, name: name.into() } } else { Dir::Root(dir.into()) };
                inner.dirs.lock().expect("inotify directories lock poisoned").0.insert(wd, entry);
                wd
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
            Err(error) => {
                tracing::warn!(
                    path = %dir.display(), %error,
                    "cannot watch log directory with inotify (raise fs.inotify.max_user_watches?); polling instead (vigil_inotify_fallback=1)"
                );
                self.inner = None;
                self.failed = true;
                0
            }
        }
    }

    /// Directories watched (tests).
    #[cfg(test)]
    pub fn watched(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| i.dirs.lock().unwrap().0.len())
    }
}

/// A pipe (read end, write end), closed on exec.
fn pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened, and nothing else owns them.
    Ok(unsafe { (std::os::fd::OwnedFd::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1])) })
}

/// The reading thread: until the watcher is dropped, turns events into hints.
fn read_events(
    mut inotify: inotify::Inotify,
    stop: std::os::fd::OwnedFd,
    dirs: &Mutex<Dirs>,
    tx: &SyncSender<Wake>,
    overflow: &AtomicBool,
) {
    use inotify::EventMask as E;
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut fds = [
            libc::pollfd { fd: inotify.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfd entries, both descriptors open for the whole call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        let events = match inotify.read_events(&mut buf) {
            Ok(events) => events,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        };
        for ev in events {
            let wd = ev.wd.get_watch_descriptor_id();
            let wake = if ev.mask.contains(E::Q_OVERFLOW) {
                // Hints were lost: the tailer polls every file once.
                overflow.store(true, Ordering::Relaxed);
                Wake::Rescan
            } else if ev.mask.contains(E::IGNORED) {
                // The watch is gone (its directory removed): the removal itself was reported
                // to the parent, which asked for a rescan.
                dirs.lock().expect("inotify directories lock poisoned").0.remove(&wd);
                continue;
            } else if ev.mask.contains(E::MODIFY) && !ev.mask.contains(E::ISDIR) {
                let dir = dirs.lock().expect("inotify directories lock poisoned").path(wd);
                match (dir, ev.name) {
                    (Some(dir), Some(name)) => Wake::Data(dir.join(name)),
                    // A directory not recorded yet: a rescan finds what changed.
                    _ => Wake::Rescan,
                }
            } else {
                Wake::Rescan
            };
            if let Err(TrySendError::Full(_)) = tx.try_send(wake) {
                overflow.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Drains hints without blocking. Returns (rescan wanted, written paths, stop).
pub fn drain(rx: &Receiver<Wake>, data: &mut Vec<PathBuf>) -> (bool, bool) {
    let mut rescan = false;
    let mut stop = false;
    for w in rx.try_iter().take(4096) {
        match w {
            Wake::Rescan => rescan = true,
            Wake::Data(p) => data.push(p),
            Wake::Stop => stop = true,
        }
    }
    (rescan, stop)
}

/// The walk root of one glob (tests).
#[cfg(test)]
fn root_of(g: &str) -> PathBuf {
    Globs::new(&[g.to_string()], &[]).unwrap().patterns[0].root.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn roots() {
        assert_eq!(root_of("/var/log/pods/*/*/*.log"), PathBuf::from("/var/log/pods"));
        assert_eq!(
            root_of("examples/node/var/log/containers/*.log"),
            PathBuf::from("examples/node/var/log/containers")
        );
        assert_eq!(root_of("*.log"), PathBuf::from("."));
        assert_eq!(root_of("/a/b.log"), PathBuf::from("/a"));
    }

    #[test]
    fn a_globs_update_applies_at_the_next_take_only() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.log"), b"x\n").unwrap();
        std::fs::write(d.path().join("b.log"), b"x\n").unwrap();
        let root = d.path().display().to_string();
        let mut g = Globs::new(&[format!("{root}/a.log")], &[]).unwrap();
        g.updates().set(&[format!("{root}/*.log")], &[format!("{root}/a.log")]).unwrap();
        assert_eq!(g.walk(None).len(), 1);
        assert_eq!(g.walk(None)[0].path, d.path().join("a.log"), "not applied before the next scan");
        g.take_update();
        let found = g.walk(None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, d.path().join("b.log"));
        // The handle still works after a swap.
        g.updates().set(&[format!("{root}/*.log")], &[]).unwrap();
        g.take_update();
        assert_eq!(g.walk(None).len(), 2);
    }

    /// Issue 17: a walk does not read a directory again while its inode and mtime are what
    /// the last walk saw (the idle cost of 10,000 pods), unless that mtime was too recent to
    /// trust: a change in the same clock tick as the one before would not move it.
    #[test]
    fn a_walk_reads_again_only_directories_that_changed_or_changed_too_recently_to_trust() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("pods/ns_p_uid/c");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0.log"), b"x\n").unwrap();
        let set_mtime = |t: std::time::SystemTime| std::fs::File::open(&dir).unwrap().set_modified(t).unwrap();
        let names = |g: &mut Globs| -> Vec<String> {
            g.walk(None).iter().map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned()).collect()
        };
        let mut g = Globs::new(&[format!("{}/pods/*/*/*.log", d.path().display())], &[]).unwrap();

        // Changed just now: listed at every walk, even when the mtime does not move.
        let recent = std::time::SystemTime::now();
        set_mtime(recent);
        assert_eq!(names(&mut g), ["0.log"]);
        std::fs::write(dir.join("1.log"), b"x\n").unwrap();
        set_mtime(recent);
        assert_eq!(names(&mut g), ["0.log", "1.log"], "a listing taken right after a change is not trusted");

        // Settled: the listing is reused while the mtime stays (seen by hiding a new file
        // behind the old mtime, which a real change never does) ...
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        set_mtime(old);
        assert_eq!(names(&mut g), ["0.log", "1.log"]);
        std::fs::write(dir.join("2.log"), b"x\n").unwrap();
        set_mtime(old);
        assert_eq!(names(&mut g), ["0.log", "1.log"], "unchanged directory read again");
        // ... and read again as soon as it changes.
        std::fs::remove_file(dir.join("0.log")).unwrap();
        assert_eq!(names(&mut g), ["1.log", "2.log"]);
    }

    /// Issue 17: each directory a walk lists is watched, a write is named by its full path
    /// (rebuilt from the descriptors of its directory and parents), and a removed directory's
    /// watch is forgotten, so pods coming and going do not grow the map.
    #[test]
    fn a_walk_watches_what_it_lists_names_writes_and_forgets_removed_directories() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("pods/ns_p_uid/c");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("0.log");
        std::fs::write(&log, b"x\n").unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let mut w = Watcher::new(tx);
        let mut g = Globs::new(&[format!("{}/pods/*/*/*.log", d.path().display())], &[]).unwrap();
        assert_eq!(g.walk(Some(&mut w)).len(), 1);
        assert_eq!(w.watched(), 3, "the root, the pod and the container directory");
        std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(b"y\n").unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match rx.recv_timeout(until.saturating_duration_since(std::time::Instant::now())) {
                Ok(Wake::Data(p)) => {
                    assert_eq!(p, log);
                    break;
                }
                Ok(_) => {}
                Err(e) => panic!("no hint for the write: {e}"),
            }
        }
        std::fs::remove_dir_all(d.path().join("pods/ns_p_uid")).unwrap();
        while w.watched() > 1 {
            assert!(std::time::Instant::now() < until, "removed directories still watched: {}", w.watched());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(g.walk(Some(&mut w)).is_empty());
        assert_eq!(w.watched(), 1);
    }

    #[test]
    fn walk_dedups_symlinks_and_applies_exclude() {
        let d = tempfile::tempdir().unwrap();
        let pods = d.path().join("pods/ns_p_uid/c");
        std::fs::create_dir_all(&pods).unwrap();
        std::fs::write(pods.join("0.log"), b"x\n").unwrap();
        std::fs::write(pods.join("0.log.20240101-000000"), b"old\n").unwrap();
        let ex = d.path().join("pods/ns_skip_uid/c");
        std::fs::create_dir_all(&ex).unwrap();
        std::fs::write(ex.join("0.log"), b"x\n").unwrap();
        let links = d.path().join("containers");
        std::fs::create_dir_all(&links).unwrap();
        std::os::unix::fs::symlink(pods.join("0.log"), links.join("p_ns_c-abc123.log")).unwrap();
        let root = d.path().display().to_string();
        let mut g = Globs::new(
            &[format!("{root}/containers/*.log"), format!("{root}/pods/*/*/*.log")],
            &[format!("{root}/pods/*_skip_*/**")],
        )
        .unwrap();
        let found = g.walk(None);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, pods.join("0.log"));
        assert_eq!(found[0].link.as_deref(), Some(links.join("p_ns_c-abc123.log").as_path()));
    }
}
