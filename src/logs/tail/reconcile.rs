//! Walk reconciliation: what a walk of the include globs found against the open files. New
//! files are opened (resumed from the checkpoint when it names them), files no longer at
//! their path become `Moved` or `Deleted`, and at start-up the checkpointed files that were
//! rotated while vigil was stopped are found again (`forensics`) and finished first.
//!
//! Invariant: every file a walk lists is read, even when it is rotated or deleted between the
//! walk and its open, and the files of one path are read oldest first: no file of a path is
//! read while an older one of the same path (rotated, restored, followed) is unfinished.

use super::checkpoint::Entry;
use super::file::{FileTail, Opened, State};
use super::forensics::{self, is_gz, read_head, rotated_head, rotated_siblings, rotation_suffix};
use super::identity::{self, FileId, Fingerprint};
use super::{FALLBACK_RESCAN, Tailer, Tracked};
use crate::logs::config::ReadFrom;
use crate::logs::discover::Found;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

impl Tailer {
    /// Walks the globs: opens new files, notices rotations.
    pub(super) fn rescan(&mut self) {
        self.globs.take_update(); // config reload: new include/exclude globs (crate::reload)
        let now = Instant::now();
        self.last_rescan = now;
        self.rescan_wanted = false;
        let interval =
            if self.watcher.failed { self.s.rescan_interval.min(FALLBACK_RESCAN) } else { self.s.rescan_interval };
        self.next_rescan = now + interval;
        let watch = !self.watcher.failed && !self.watch_deferred;
        let found = self.globs.walk(watch.then_some(&mut self.watcher));
        if watch && self.watcher.failed {
            self.shared.metrics.inotify_fallback.set(1);
        }
        self.apply_walk(&found, now);
        // Before the new files' first read.
        self.resolve_multiline();
    }

    /// Starts watching, once the first round has shipped what the start found: a walk adds a
    /// watch to every directory before reading it again, so an entry made since is listed or
    /// sends a hint. A file written before its directory's watch existed sent no hint, so every
    /// file is looked at in the next round.
    pub(super) fn start_watching(&mut self) {
        self.watch_deferred = false;
        if self.watcher.failed {
            return;
        }
        self.rescan();
        for f in &mut self.files {
            f.at_eof = false;
        }
    }

    /// Reconciles the open files with what a walk found (`now`: when it started). Opening is a
    /// separate step: a listed file may be rotated before it is opened (see `open`).
    pub(super) fn apply_walk(&mut self, found: &[Found], now: Instant) {
        {
            // Only a flag that flips counts as a change: an idle walk of 10,000 files must not
            // make the checkpoint writer rebuild and compare every entry. The set of found
            // identities is built only when some entry is closed (rarely: rotated files).
            let mut reg = self.shared.registry.lock().expect("tail registry lock poisoned");
            if reg.values().any(|t| t.closed.is_some()) {
                let ids: HashSet<FileId> = found.iter().map(|f| f.id).collect();
                let mut flipped = false;
                for t in reg.values_mut().filter(|t| t.closed.is_some()) {
                    let visible = ids.contains(&t.id);
                    flipped |= t.visible != visible;
                    t.visible = visible;
                }
                drop(reg);
                if flipped {
                    self.shared.note_change();
                }
            }
        }
        // The open files by identity, kept current as files are opened below: looking each
        // listed file up by a scan of the open ones made a walk quadratic (half a second for
        // 1,000 files on a busy node, during which listed files get rotated away). The open
        // files at the path of a new file are found by one pass over them against the found
        // paths (borrowed, never copied: maps of copied paths were ~2 MB at each walk of
        // 10,000 files).
        let mut by_id: HashMap<FileId, usize> = HashMap::with_capacity(self.files.len());
        index_ids(&self.files, 0, &mut by_id);
        // Each found path, with the first found file at it whose identity is new (`NONE`: no
        // new file there).
        const NONE: usize = usize::MAX;
        let mut at: HashMap<&Path, usize> = HashMap::with_capacity(found.len());
        // Whether a file was opened or left or regained its path (`by_path` is rebuilt then).
        let mut changed = self.first_scan;
        for (k, f) in found.iter().enumerate() {
            let fresh = match by_id.get(&f.id) {
                Some(&i) => {
                    changed |= renamed_back(&mut self.files[i], f);
                    NONE
                }
                None => k,
            };
            let first = at.entry(f.path.as_path()).or_insert(fresh);
            if *first == NONE {
                *first = fresh;
            }
        }
        // (new found file, open file at its path): those were rotated away.
        let mut replaced: Vec<(usize, usize)> = self
            .files
            .iter()
            .enumerate()
            .filter_map(|(i, t)| at.get(&*t.path).filter(|&&k| k != NONE).map(|&k| (k, i)))
            .collect();
        replaced.sort_unstable();
        // Two found files at one path (include globs that overlap, and the file replaced
        // between their stats): the files opened for the first are rotated away by the second.
        let overlap = at.len() < found.len();
        let mut opened_at: HashMap<&Path, std::ops::Range<usize>> = HashMap::new();
        let mut r = 0;
        for (k, f) in found.iter().enumerate() {
            if let Some(&i) = by_id.get(&f.id) {
                // Known, or opened earlier in this walk (a rotated name the globs also match).
                changed |= renamed_back(&mut self.files[i], f);
                continue;
            }
            // A new file at this path: whatever we had there was rotated away.
            while replaced.get(r).is_some_and(|&(rk, _)| rk < k) {
                r += 1;
            }
            let mut gone: Vec<usize> = Vec::new();
            while let Some(&(rk, i)) = replaced.get(r).filter(|&&(rk, _)| rk == k) {
                debug_assert_eq!(rk, k);
                gone.push(i);
                r += 1;
            }
            if overlap && let Some(range) = opened_at.get(f.path.as_path()) {
                gone.extend(range.clone());
            }
            for i in gone {
                let t = &mut self.files[i];
                match t.state {
                    State::Live => {
                        self.shared.metrics.rotations.inc();
                        t.state = State::Moved { replaced: true };
                    }
                    State::Moved { .. } => t.state = State::Moved { replaced: true },
                    State::Deleted { .. } => {}
                }
            }
            let opened = self.files.len();
            changed = true;
            self.open(f);
            index_ids(&self.files, opened, &mut by_id);
            if overlap {
                opened_at.insert(f.path.as_path(), opened..self.files.len());
            }
        }
        for t in &mut self.files {
            if matches!(t.state, State::Live) && !at.contains_key(&*t.path) {
                match t.stat() {
                    Some(Ok((_, 0))) => t.state = State::Deleted { since: now },
                    _ => {
                        self.shared.metrics.rotations.inc();
                        t.state = State::Moved { replaced: false };
                    }
                }
                t.at_eof = false;
                changed = true;
            }
        }
        if self.first_scan {
            self.first_scan = false;
            self.restore_rotated();
            // Every entry is now a tracked file or known to be gone.
            *self.shared.unresolved.lock().expect("unresolved lock poisoned") = None;
            self.shared.note_change();
        }
        if changed {
            self.reindex();
        }
        // Counted when done, so "rescans >= 1" means the first scan has opened every file.
        self.shared.metrics.rescans.inc();
    }

    /// Opens a file the walk found. The walk and the open are two steps: when the file at the
    /// path is no longer the one the walk listed (`f.id`), the listed file was rotated (or
    /// deleted) in between; it is looked for among the rotated names and read first, and the
    /// file now at the path, created after the walk, is read from its start.
    pub(super) fn open(&mut self, f: &Found) {
        if let Some(max_age) = self.s.ignore_older
            && self.restore.get(&f.id).is_none_or(|v| v.is_empty())
            && f.mtime.elapsed().is_ok_and(|age| age > max_age)
        {
            return;
        }
        let file = match File::open(&f.path) {
            Ok(file) => file,
            Err(error) => {
                if error.kind() != std::io::ErrorKind::NotFound {
                    self.shared.metrics.open_failures.inc();
                    tracing::warn!(path = %f.path.display(), %error, "cannot open log file; will retry at next rescan");
                }
                // Gone from its path since the walk: it may have been renamed away, with the
                // runtime not yet writing to a new file (so it may still grow).
                self.open_rotated_since_walk(f, false);
                return;
            }
        };
        let Ok(meta) = file.metadata() else { return };
        let newer_than_walk = FileId::of(&meta) != f.id;
        if newer_than_walk {
            // The runtime writes to the new file: the listed one is complete.
            self.open_rotated_since_walk(f, true);
        }
        self.track(file, &meta, f, State::Live, newer_than_walk);
    }

    /// The walk listed `f`, but its path no longer leads to it: it was rotated since (or
    /// deleted, and then there is nothing left to read). Finds it among the rotated names by
    /// `(dev, ino)` and tails it as a moved file (`replaced`: a new file sits at the path), then
    /// any file rotated after it (created and rotated again in the meantime, never listed),
    /// oldest first, all before the file now at the path. Without this, a file rotated between
    /// the walk and the open was never read: the open silently took its successor, and its
    /// rotated name matches no include glob.
    pub(super) fn open_rotated_since_walk(&mut self, f: &Found, replaced: bool) {
        // A symlink (`/var/log/containers`) names the file; its rotated names sit next to the
        // target.
        let real = std::fs::canonicalize(&f.path).unwrap_or_else(|_| f.path.clone());
        let siblings = rotated_siblings(&real);
        let Some((path, suffix, file, meta)) = siblings.iter().find_map(|(c, suffix)| {
            let file = File::open(c).ok()?;
            let meta = file.metadata().ok()?;
            (meta.is_file() && FileId::of(&meta) == f.id).then(|| (c.clone(), suffix.clone(), file, meta))
        }) else {
            tracing::debug!(path = %f.path.display(), "listed file gone before it was opened (deleted, or compressed)");
            return;
        };
        if self.files.iter().any(|t| t.id == f.id) {
            return;
        }
        tracing::info!(path = %path.display(), "file rotated between discovery and open; reading it under its rotated name");
        self.shared.metrics.rotations.inc();
        self.track(file, &meta, f, State::Moved { replaced }, false);
        let known: Vec<Fingerprint> = self.restore.values().flatten().map(Entry::fingerprint).collect();
        for c in forensics::rotated_since(siblings, &suffix) {
            if let Some(mut t) = self.open_unseen_rotated(&f.path, &c, &known) {
                tracing::info!(path = %c.display(), "reading a file rotated twice between discovery and open");
                let (key, generation) = self.new_key(t.id);
                t.key = key;
                self.register(key, generation, &t, 0);
                t.order = self.take_order();
                self.files.push(Box::new(t));
            }
        }
    }

    /// Starts tailing an open file found as `f` (events name `f.path`): resumes from its
    /// checkpoint when it has one, else from the start (or, at the first scan with
    /// `read_from: end`, from its end unless it is `newer_than_walk`).
    pub(super) fn track(
        &mut self,
        file: File,
        meta: &std::fs::Metadata,
        f: &Found,
        state: State,
        newer_than_walk: bool,
    ) {
        let id = FileId::of(meta);
        let size = meta.len();
        let mut head = vec![0u8; identity::FINGERPRINT_BYTES];
        let n = read_head(&file, &mut head);
        head.truncate(n);
        let fp = Fingerprint::of_bytes(&head);
        let matched = self.restore.get_mut(&id).and_then(|v| {
            let i = v.iter().position(|e| e.fingerprint().matches(&head))?;
            Some(v.swap_remove(i))
        });
        // A file closed earlier in this run (e.g. a rotated name that the include globs also
        // match) resumes where it was closed instead of being read again. None is closed
        // before the first scan ends: skipping the look then keeps a first scan of 10,000
        // files from scanning the registry once per file.
        let matched = matched.or_else(|| {
            if self.first_scan {
                return None;
            }
            let reg = self.shared.registry();
            let (&key, t) = reg.iter().find(|(_, t)| t.id == id && t.closed.is_some() && t.fp.matches(&head))?;
            Some(Entry {
                path: t.path.display().to_string(),
                dev: id.dev,
                ino: id.ino,
                fingerprint_len: t.fp.len,
                fingerprint: t.fp.hash,
                key,
                offset: t.closed.unwrap_or(0),
                generation: t.generation,
                copy: t.copy,
            })
        });
        let (key, generation, offset) = match matched {
            Some(e) => {
                if e.offset > size {
                    tracing::info!(path = %f.path.display(), size, offset = e.offset, "file shrank while vigil was stopped (truncated); reading it from the start");
                    self.shared.metrics.truncations.inc();
                    // New content: a new generation. The old one may go on in a copy (the
                    // start-up search among the rotated names finds it by fingerprint).
                    let (key, generation) = self.new_key(id);
                    self.restore.entry(id).or_default().push(e);
                    (key, generation, 0)
                } else {
                    (e.key, e.generation, e.offset)
                }
            }
            None => {
                if let Some(e) = self.restore.get(&id).and_then(|v| v.first()) {
                    if size < e.offset {
                        // Same inode, new content, shorter than where we were: most likely a
                        // copytruncate while vigil was stopped.
                        tracing::info!(path = %f.path.display(), size, offset = e.offset, "file truncated while vigil was stopped; reading it from the start");
                        self.shared.metrics.truncations.inc();
                    } else {
                        tracing::info!(path = %f.path.display(), "inode reused by a new file (fingerprint differs); reading it from the start");
                    }
                }
                let offset = match (self.first_scan && !newer_than_walk, self.s.read_from) {
                    (true, ReadFrom::End) => line_start_before(&file, size),
                    _ => 0,
                };
                let (key, generation) = self.new_key(id);
                (key, generation, offset)
            }
        };
        let source = self.source(&f.path, f.link.as_deref());
        let path: Arc<Path> = f.path.as_path().into();
        self.shared.registry().insert(
            key,
            Tracked { path: path.clone(), id, fp, generation, base: offset, closed: None, visible: false, copy: false },
        );
        tracing::debug!(path = %f.path.display(), offset, "tailing log file");
        let mut t = FileTail::plain(Opened { key, id, fp, path, source, file, offset, limits: self.s.limits });
        t.state = state;
        t.poll = f.link.as_deref() == Some(f.path.as_path());
        t.order = self.take_order();
        self.files.push(Box::new(t));
    }

    /// Start-up: checkpointed files no longer at their path are looked for among their
    /// rotated names (plain or `.gz`) in the same directory and finished; rotated files newer
    /// than the one found (rotated again while vigil was stopped, never seen) are read whole,
    /// oldest first, before the live file.
    pub(super) fn restore_rotated(&mut self) {
        let entries: Vec<Entry> = self.restore.drain().flat_map(|(_, v)| v).collect();
        let all_fps: Vec<Fingerprint> = entries.iter().map(Entry::fingerprint).collect();
        let mut found_rotated: Vec<(PathBuf, String)> = Vec::new();
        let mut families: Vec<PathBuf> = Vec::new();
        for e in &entries {
            let family = PathBuf::from(&e.path);
            let mut restored = None;
            let copy = e.copy;
            // A copytruncate's copy may be named `<name>-YYYYMMDD`, too.
            let candidates: Vec<PathBuf> = if copy {
                forensics::copy_candidates(&family).into_iter().map(|(_, c)| c).collect()
            } else {
                rotated_siblings(&family).into_iter().map(|(c, _)| c).collect()
            };
            for c in candidates {
                if let Some(mut t) = self.open_rotated(e, &family, &c) {
                    tracing::info!(path = %c.display(), offset = e.offset, "finishing a file rotated while vigil was stopped");
                    self.register(e.key, e.generation, &t, e.offset);
                    if let Some(r) = self.shared.registry().get_mut(&e.key) {
                        r.copy = copy;
                    }
                    t.order = self.take_order();
                    self.files.push(Box::new(t));
                    if !families.contains(&family) {
                        families.push(family.clone());
                    }
                    restored = Some(c);
                    break;
                }
            }
            match restored {
                // Files rotated after a copy are not its successors: the live file is.
                Some(_) if copy => {}
                Some(c) => {
                    let suffix = rotation_suffix(&family, &c).unwrap_or_default();
                    found_rotated.push((family, suffix));
                }
                None => tracing::debug!(path = %e.path, "checkpointed file is gone; forgetting it"),
            }
        }
        for (family, restored_suffix) in found_rotated {
            for c in forensics::rotated_since(rotated_siblings(&family), &restored_suffix) {
                if let Some(mut t) = self.open_unseen_rotated(&family, &c, &all_fps) {
                    tracing::info!(path = %c.display(), "reading a file rotated twice while vigil was stopped");
                    let (key, generation) = self.new_key(t.id);
                    t.key = key;
                    self.register(key, generation, &t, 0);
                    t.order = self.take_order();
                    self.files.push(Box::new(t));
                }
            }
        }
        for family in families {
            self.order_by_rotation(&family);
        }
    }

    /// Puts the rotated files of `family` that are open (restored from the checkpoint, or
    /// followed by the first walk: `open_rotated_since_walk`) in the order they were rotated,
    /// oldest first. They were opened in the order they were found: the files the walk
    /// followed first, then the checkpointed ones in no particular order. A newer file read
    /// first was finished and forgotten (its checkpoint entry dropped) while an older one was
    /// still unfinished, and the next restart, finding that older one, took the newer file for
    /// one rotated while vigil was stopped and read it again whole.
    pub(super) fn order_by_rotation(&mut self, family: &Path) {
        let real = std::fs::canonicalize(family).unwrap_or_else(|_| family.to_path_buf());
        let suffixes: HashMap<FileId, String> = rotated_siblings(&real)
            .into_iter()
            .filter_map(|(c, suffix)| Some((FileId::of(&std::fs::metadata(&c).ok()?), suffix)))
            .collect();
        let mut rotated: Vec<(usize, String)> = self
            .files
            .iter()
            .enumerate()
            .filter(|(_, t)| *t.path == *family && !matches!(t.state, State::Live))
            .filter_map(|(i, t)| Some((i, suffixes.get(&t.id)?.clone())))
            .collect();
        let mut orders: Vec<u64> = rotated.iter().map(|&(i, _)| self.files[i].order).collect();
        orders.sort_unstable();
        rotated.sort_by(|a, b| forensics::rotation_cmp(&a.1, &b.1));
        for ((i, _), order) in rotated.into_iter().zip(orders) {
            self.files[i].order = order;
        }
    }

    /// A rotated file with no checkpoint: opened at 0, unless it is one vigil tracks or has a
    /// checkpoint entry for (by identity or fingerprint).
    pub(super) fn open_unseen_rotated(
        &self,
        family: &Path,
        candidate: &Path,
        known: &[Fingerprint],
    ) -> Option<FileTail> {
        let mut file = File::open(candidate).ok()?;
        let meta = file.metadata().ok()?;
        let id = FileId::of(&meta);
        if !meta.is_file() || self.files.iter().any(|t| t.id == id) {
            return None;
        }
        let gz = is_gz(candidate);
        let head = rotated_head(&mut file, gz, identity::FINGERPRINT_BYTES)?;
        if !forensics::unseen(&head, known) {
            return None;
        }
        let fp = Fingerprint::of_bytes(&head);
        let source = self.source(family, None);
        let o = Opened { key: 0, id, fp, path: family.into(), source, file, offset: 0, limits: self.s.limits };
        FileTail::rotated(o, gz).ok()
    }

    pub(super) fn open_rotated(&self, e: &Entry, family: &Path, candidate: &Path) -> Option<FileTail> {
        let mut file = File::open(candidate).ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() {
            return None;
        }
        let id = FileId::of(&meta);
        if self.files.iter().any(|t| t.id == id) {
            return None;
        }
        let want = e.fingerprint();
        let gz = is_gz(candidate);
        let (head, offset) = if gz {
            if want.len == 0 {
                // An empty fingerprint matches anything: no way to tell which .gz it became.
                return None;
            }
            let head = rotated_head(&mut file, true, want.len as usize)?;
            if !forensics::resumes_entry(want, e.id(), id, true, &head) {
                return None;
            }
            (head, e.offset)
        } else {
            let head = rotated_head(&mut file, false, identity::FINGERPRINT_BYTES)?;
            if !forensics::resumes_entry(want, e.id(), id, false, &head) {
                return None;
            }
            (head, e.offset.min(meta.len()))
        };
        let fp = Fingerprint::of_bytes(&head);
        let source = self.source(family, None);
        let o = Opened { key: e.key, id, fp, path: family.into(), source, file, offset, limits: self.s.limits };
        match FileTail::rotated(o, gz) {
            Ok(t) => Some(t),
            Err(error) => {
                tracing::warn!(path = %candidate.display(), %error, "cannot resume compressed rotated file");
                None
            }
        }
    }
}

/// Adds `files[from..]` to the identities of `Tailer::apply_walk` (plain files: the walk
/// finds no `.gz` by its identity).
fn index_ids(files: &[Box<FileTail>], from: usize, by_id: &mut HashMap<FileId, usize>) {
    for (i, t) in files.iter().enumerate().skip(from) {
        if !t.is_gz() {
            by_id.entry(t.id).or_insert(i);
        }
    }
}

/// A found file vigil already tails: when it is back at the path it was rotated away from (a
/// failed kubelet reopen), it is live again. Returns whether it was.
fn renamed_back(t: &mut FileTail, f: &Found) -> bool {
    if *t.path == *f.path && matches!(t.state, State::Moved { .. }) {
        t.state = State::Live;
        return true;
    }
    false
}

/// The offset just after the last `\n` before `size` (`read_from: end` starts at a line).
fn line_start_before(f: &File, size: u64) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = size;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let len = (end - start) as usize;
        if f.read_exact_at(&mut buf[..len], start).is_err() {
            return size;
        }
        if let Some(i) = memchr::memrchr(b'\n', &buf[..len]) {
            return start + i as u64 + 1;
        }
        end = start;
    }
    0
}
