//! The checkpoint registry and its writer: what each tracked file is (path, identity,
//! fingerprint, generation) and the offsets the pipeline committed for it.
//!
//! Invariant: a checkpoint entry only ever records an offset the pipeline committed (or the
//! base a file was opened at), and an entry is forgotten only once its file is closed and its
//! last line is committed, or once the file is deleted; until the first scan has matched the
//! loaded checkpoint to files, its entries are written back verbatim.

use super::checkpoint::{Checkpoints, Entry};
use super::identity::{FileId, Fingerprint};
use crate::logs::metrics::LogMetrics;
use crate::pipeline::Committed;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// What the checkpoint writer needs to know about a file.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The path events name (shared with the open file's `FileTail::path`).
    pub path: Arc<Path>,
    pub id: FileId,
    pub fp: Fingerprint,
    /// When vigil first saw this content (the key is derived from it).
    pub generation: u64,
    /// Offset to record when nothing was committed yet in this run.
    pub base: u64,
    /// Closed with this final resume offset: forgotten once it is committed.
    pub closed: Option<u64>,
    /// Closed, but the last walk of the include globs still found it (globs that also match
    /// rotated names): kept, so it is not read again when found.
    pub visible: bool,
    /// The copy a copytruncate made (`truncation`): no rotation follows it.
    pub copy: bool,
}

/// State shared by the tailer thread, the checkpoint writer and `LogSource`.
pub struct Shared {
    pub registry: Mutex<HashMap<u64, Tracked>>,
    /// The loaded checkpoint, kept verbatim until the first scan has matched it to files: a
    /// stop before that must not write a checkpoint that forgot them.
    pub unresolved: Mutex<Option<Vec<Entry>>>,
    pub committed: Arc<Committed>,
    pub checkpoints: Checkpoints,
    pub metrics: LogMetrics,
    /// A hash of what the last successful write stored (sorted by key): an unchanged state is
    /// not written again. A hash, not the entries: a copy of 10,000 entries is ~2 MB kept
    /// for nothing but this comparison.
    pub last_written: Mutex<Option<u64>>,
    /// Bumped whenever the registry may have changed (`registry()`): with the committed
    /// offsets' own count, tells the writer that nothing changed since its last write without
    /// building the entries (10,000 files, every `checkpoint_interval`).
    pub changes: Changes,
}

/// Change counts of the registry and of the committed offsets at the last successful write.
#[derive(Default)]
pub struct Changes {
    registry: AtomicU64,
    written: Mutex<Option<(u64, u64)>>,
}

impl Shared {
    /// The registry or the loaded checkpoint changed: the next `write_checkpoint` looks.
    pub(super) fn note_change(&self) {
        self.changes.registry.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn registry(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Tracked>> {
        let guard = self.registry.lock().expect("tail registry lock poisoned");
        self.note_change();
        guard
    }

    /// Writes the committed offsets of every tracked file, unless they are what the last write
    /// stored; forgets closed files whose last line is committed. Does nothing at all when
    /// neither the registry nor the committed offsets changed since the last successful write.
    pub fn write_checkpoint(&self) {
        // Taken before the state is read: a change made meanwhile makes the next call look.
        let stamp = (self.changes.registry.load(Ordering::Relaxed), self.committed.changes());
        if *self.changes.written.lock().expect("checkpoint changes lock poisoned") == Some(stamp) {
            return;
        }
        let committed = self.committed.snapshot();
        let mut done = Vec::new();
        let mut entries: Vec<Entry> = {
            let reg = self.registry.lock().expect("tail registry lock poisoned");
            reg.iter()
                .filter_map(|(&key, t)| {
                    let offset = committed.get(&key).copied().unwrap_or(t.base);
                    if t.closed.is_some_and(|end| offset >= end) && !t.visible {
                        done.push(key);
                        return None;
                    }
                    Some(Entry {
                        path: t.path.display().to_string(),
                        dev: t.id.dev,
                        ino: t.id.ino,
                        fingerprint_len: t.fp.len,
                        fingerprint: t.fp.hash,
                        key,
                        offset,
                        generation: t.generation,
                        copy: t.copy,
                    })
                })
                .collect()
        };
        if let Some(old) = self.unresolved.lock().expect("unresolved lock poisoned").as_ref() {
            let known: HashSet<u64> = entries.iter().map(|e| e.key).collect();
            entries.extend(old.iter().filter(|e| !known.contains(&e.key)).cloned());
        }
        entries.sort_unstable_by_key(|e| e.key);
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            entries.hash(&mut h);
            h.finish()
        };
        let mut last = self.last_written.lock().expect("last checkpoint lock poisoned");
        let stored = if *last == Some(hash) {
            Ok(())
        } else {
            self.checkpoints.store(&entries).inspect(|()| {
                *last = Some(hash);
                self.metrics.checkpoint_writes.inc();
                self.metrics.checkpoint_last_write.set(
                    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0),
                );
            })
        };
        drop(last);
        match stored {
            Ok(()) => {
                *self.changes.written.lock().expect("checkpoint changes lock poisoned") = Some(stamp);
                let mut reg = self.registry.lock().expect("tail registry lock poisoned");
                for key in done {
                    if reg.get(&key).is_some_and(|t| t.closed.is_some()) {
                        reg.remove(&key);
                        self.note_change();
                    }
                }
                // Positions of forgotten files may still have been committed after they were
                // forgotten: drop them so the map does not grow with every file ever seen.
                for key in committed.keys() {
                    if !reg.contains_key(key) {
                        self.committed.remove(*key);
                    }
                }
            }
            Err(error) => {
                self.metrics.checkpoint_failures.inc();
                // About once a minute when every interval tries (default 100ms), not each time.
                if self.metrics.checkpoint_failures.get() % 600 == 1 {
                    tracing::warn!(
                        path = %self.checkpoints.path().display(), %error, failures = self.metrics.checkpoint_failures.get(),
                        "checkpoint write failed; retrying (offsets are kept in memory meanwhile)"
                    );
                }
            }
        }
    }
}
