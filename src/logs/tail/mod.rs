//! Tailing: the set of open files, read round-robin in budgeted slices on one thread, turned
//! into `SourceBatch`es; and the checkpoint registry that remembers what each file is.
//!
//! Invariant: `Tailer` is owned by one thread and every open file is in `files` exactly once;
//! `by_path` names the live file of each path. The jobs are one file each, with their own
//! invariant: `registry` (checkpoint registry and writer), `run` (the loop, batching, the wait
//! for room), `upkeep` (per-poll checks and closing), `reconcile` (walk results against the open
//! files, start-up restore), `forensics` (pure rotation/copy search), `file` (one file),
//! `identity` and `checkpoint` (what is stored).
//!
//! Key decisions:
//! - One blocking thread reads every file (`pread` on kept-open descriptors) and parses; the
//!   work per byte is small and sequential, and one thread keeps the per-file state free of
//!   locks. Rejected: a task per file (1,000 tasks, 1,000 buffers, no fairness control) and
//!   tokio's async fs (a thread hop per read).
//! - Fairness: each turn gives a file at most `read_budget` bytes; a file that had more stays
//!   "hot" and is read again next round without waiting for the poll, so a busy container
//!   delays a quiet one by at most one slice and one batch.
//! - Backpressure: a batch is sealed as soon as it is full (`file::Out`) and handed to the
//!   bounded source channel without waiting. While the channel is full nothing is read, but
//!   the loop goes on: rescans open new files, rotations and deletions are noticed, files that
//!   left their path stay open ("held") until read, and the deleted-file bounds are checked.
//!   Rejected: waiting inside the send (the old design), which froze discovery for the whole
//!   outage, so files created and rotated away meanwhile were never opened and their lines
//!   lost. The wait for room (a tiny current-thread runtime) also listens for stop, so
//!   shutdown never hangs on a stuck sink (unsent batches were never committed and are read
//!   again next start), and wakes for the next rescan or poll, and every 50 ms for inotify
//!   hints (they come on a std channel).
//! - Rotation: the renamed file keeps its descriptor and is read to its end (its `State` turns
//!   `Moved`); the new file at the same path waits until then, so one container's lines stay in
//!   order across a rotation. After a restart, a checkpointed file that is no longer at its
//!   path is looked for among its rotated names (`<name>.*`, including `.gz`) in the same
//!   directory, by `(dev, ino)` and fingerprint, and finished first. The same search catches a
//!   file rotated between a rescan's walk (stat) and its open (by path), which would otherwise
//!   be skipped silently.

pub mod checkpoint;
pub mod file;
pub mod forensics;
pub mod identity;
mod out;
mod reconcile;
mod registry;
mod run;
mod upkeep;

pub use self::registry::{Shared, Tracked};

use self::checkpoint::Entry;
use self::file::{FileTail, Limits, Out};
use self::identity::{FileId, Generations, file_key};
use super::config::{ContainersConfig, ReadFrom};
use super::discover::{Globs, Wake, Watcher};
use super::enrich;
use crate::event::Source;
use crate::pipeline::SourceBatch;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Most events in one batch (besides `batch_max_bytes`).
const BATCH_MAX_EVENTS: usize = 2048;
/// Size of the one read buffer.
const READ_BUF: usize = 64 * 1024;
/// While files still have data, a partly filled batch waits at most this long for more (fewer,
/// fuller batches: fewer thread hand-offs and sink writes); when every file is caught up it
/// goes at once.
pub(super) const BATCH_LINGER: Duration = Duration::from_millis(50);
/// Rescans triggered by inotify are at most this frequent.
pub(super) const MIN_RESCAN_GAP: Duration = Duration::from_millis(50);
/// With inotify, every file is looked at (fstat, head) every this many polls (30 s at the
/// default 250 ms); between them only the files it named (see `run`). inotify names every
/// write and truncation (IN_MODIFY) and every rotation and deletion (a rescan); the full poll
/// is the net for a hint lost some other way than a queue overflow (which triggers one at
/// once). At 10,000 idle files it is two system calls per file, so its period is what idle
/// costs: every 20 polls (5 s) it was most of 4.6% of a core.
pub(super) const FULL_POLL_EVERY: u32 = 120;
/// Rescan period without inotify.
pub(super) const FALLBACK_RESCAN: Duration = Duration::from_secs(1);

/// Stop request, visible to the blocking loop (flag) and to the async send (notify).
#[derive(Default)]
pub struct Stop {
    flag: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Stop {
    pub fn set(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// The config values the tailer uses, resolved once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub read_from: ReadFrom,
    pub rescan_interval: Duration,
    pub poll_interval: Duration,
    pub ignore_older: Option<Duration>,
    pub limits: Limits,
    pub partial_timeout_ms: u64,
    pub deleted_max_hold: Duration,
    pub deleted_max_unread: u64,
    pub rotate_wait: Duration,
    pub read_budget: usize,
    pub batch_max_bytes: usize,
    /// `FULL_POLL_EVERY` (tests raise it to show what inotify alone catches).
    pub full_poll_every: u32,
}

impl Settings {
    pub fn from_config(c: &ContainersConfig) -> Self {
        let max_line = c.max_line_bytes.get() as usize;
        Self {
            read_from: c.read_from,
            rescan_interval: c.rescan_interval.get(),
            poll_interval: c.poll_interval.get(),
            ignore_older: c.ignore_older.map(|d| d.get()),
            // A raw record may be longer than its message: CRI's header, docker's escaping.
            limits: Limits {
                max_line,
                max_raw: max_line + max_line.max(64 * 1024),
                multiline: super::multiline::Multiline::leak(&c.multiline),
            },
            partial_timeout_ms: c.partial_flush_timeout.get().as_millis() as u64,
            deleted_max_hold: c.deleted_file_max_hold.get(),
            deleted_max_unread: c.deleted_file_max_unread.get(),
            rotate_wait: c.rotate_wait.get(),
            read_budget: c.read_budget.get() as usize,
            batch_max_bytes: c.batch_max_bytes.get() as usize,
            full_poll_every: FULL_POLL_EVERY,
        }
    }
}

/// Which bound made vigil give up on the rest of a held file (the `cause` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    /// `deleted_file_max_hold`: deleted and not read to its end in time.
    MaxHold,
    /// `deleted_file_max_unread`: deleted with more than this unread.
    MaxUnread,
}

impl DropCause {
    pub const ALL: [DropCause; 2] = [DropCause::MaxHold, DropCause::MaxUnread];

    pub fn label(self) -> &'static str {
        match self {
            DropCause::MaxHold => "max_hold",
            DropCause::MaxUnread => "max_unread",
        }
    }

    pub(super) fn reason(self) -> &'static str {
        match self {
            DropCause::MaxHold => "deleted file held longer than deleted_file_max_hold",
            DropCause::MaxUnread => "deleted file with more than deleted_file_max_unread unread",
        }
    }
}

pub struct Tailer {
    s: Settings,
    shared: Arc<Shared>,
    node: Arc<str>,
    globs: Globs,
    watcher: Watcher,
    wake_rx: Receiver<Wake>,
    /// Boxed: a `FileTail` is ~570 bytes, and a `Vec` of them doubles its capacity, so at
    /// 10,000 files the vector alone held 16,384 slots (9.3 MB); boxed, the slots are pointers.
    #[allow(clippy::vec_box)]
    files: Vec<Box<FileTail>>,
    /// The live file of each path (its key shared with `FileTail::path`).
    by_path: HashMap<Arc<Path>, usize>,
    /// Checkpoint entries not matched to a file yet (start-up only). Several per id: a
    /// deleted file's inode may have been reused by a file that is also checkpointed.
    restore: HashMap<FileId, Vec<Entry>>,
    /// Generations for new file content (new files, reused inodes, refilled truncated files).
    generations: Generations,
    first_scan: bool,
    /// inotify watches are added after the first round shipped (`start_watching`): at 10,000
    /// pods adding 20,000 watches, and handling the IN_OPEN events of the first walk's opens,
    /// delayed the first line shipped after a restart.
    watch_deferred: bool,
    buf: Vec<u8>,
    out: Out,
    tx: mpsc::Sender<SourceBatch>,
    rt: tokio::runtime::Runtime,
    stop: Arc<Stop>,
    epoch: Instant,
    next_rescan: Instant,
    rescan_wanted: bool,
    last_rescan: Instant,
    next_poll: Instant,
    next_full_poll: Instant,
    cursor: usize,
    /// Rounds so far: tells a look taken in this round (`FileTail::looked`) from an old one.
    pass: u64,
    dirty: Vec<PathBuf>,
    last_send: Instant,
    next_order: u64,
    /// The pod metadata cache (`sources.containers.kubernetes`), for each pod's
    /// `vigil.io/multiline` annotation; None with metadata off.
    pods: Option<Arc<crate::logs::kubernetes::PodCache>>,
    /// Keys of the files whose pod was found (its multiline annotation applied).
    multiline_resolved: std::collections::HashSet<u64>,
}

impl Tailer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        s: Settings,
        shared: Arc<Shared>,
        node: Arc<str>,
        globs: Globs,
        watcher: Watcher,
        wake_rx: Receiver<Wake>,
        restore: Vec<Entry>,
        tx: mpsc::Sender<SourceBatch>,
        stop: Arc<Stop>,
    ) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
        let now = Instant::now();
        shared.metrics.inotify_fallback.set(watcher.failed as i64);
        let out = Out::new(BATCH_MAX_EVENTS, s.batch_max_bytes);
        Ok(Self {
            s,
            shared,
            node,
            globs,
            watcher,
            wake_rx,
            files: Vec::new(),
            by_path: HashMap::new(),
            generations: Generations::after(restore.iter().map(|e| e.generation)),
            restore: restore.into_iter().fold(HashMap::new(), |mut m: HashMap<FileId, Vec<Entry>>, e| {
                m.entry(e.id()).or_default().push(e);
                m
            }),
            first_scan: true,
            watch_deferred: true,
            buf: vec![0; READ_BUF],
            out,
            tx,
            rt,
            stop,
            epoch: now,
            next_rescan: now,
            rescan_wanted: true,
            last_rescan: now,
            next_poll: now,
            next_full_poll: now,
            cursor: 0,
            pass: 0,
            dirty: Vec::new(),
            last_send: now,
            next_order: 0,
            pods: None,
            multiline_resolved: Default::default(),
        })
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(super) fn take_order(&mut self) -> u64 {
        self.next_order += 1;
        self.next_order
    }

    /// Gives the tailer the pod metadata cache, for the `vigil.io/multiline` annotation.
    pub fn with_pods(mut self, pods: Option<Arc<crate::logs::kubernetes::PodCache>>) -> Self {
        self.pods = pods;
        self
    }

    /// Applies each pod's `vigil.io/multiline` annotation to the files of its containers,
    /// once the pod is known (at the first look after its file opened, or at a later poll for
    /// a pod the watch has not seen yet). Changing the annotation of a running pod takes
    /// effect for its next log file.
    pub(super) fn resolve_multiline(&mut self) {
        let Some(pods) = &self.pods else { return };
        for t in &mut self.files {
            if self.multiline_resolved.contains(&t.key) {
                continue;
            }
            let Some(pod) = pods.pod(&t.source.kubernetes) else { continue };
            t.set_multiline_annotation(pod.controls.get("vigil.io/multiline").map(String::as_str), &mut self.out);
            self.multiline_resolved.insert(t.key);
        }
        if self.multiline_resolved.len() > 2 * self.files.len() + 64 {
            let open: std::collections::HashSet<u64> = self.files.iter().map(|t| t.key).collect();
            self.multiline_resolved.retain(|k| open.contains(k));
        }
    }

    /// The key and generation of new content at `id` (a new file, a reused inode, a file
    /// written again after a truncation).
    pub(super) fn new_key(&mut self, id: FileId) -> (u64, u64) {
        let reg = self.shared.registry();
        loop {
            let generation = self.generations.take();
            let key = file_key(id, generation);
            if !reg.contains_key(&key) {
                return (key, generation);
            }
        }
    }

    pub(super) fn source(&self, path: &Path, link: Option<&Path>) -> Arc<Source> {
        Arc::new(Source {
            file: path.display().to_string(),
            node: self.node.clone(),
            kubernetes: enrich::metadata(path, link),
        })
    }

    pub(super) fn register(&self, key: u64, generation: u64, t: &FileTail, base: u64) {
        self.shared.registry().insert(
            key,
            Tracked {
                path: t.path.clone(),
                id: t.id,
                fp: t.fp,
                generation,
                base,
                closed: None,
                visible: false,
                copy: false,
            },
        );
    }
}

fn update_fp(shared: &Shared, f: &FileTail) {
    if let Some(t) = shared.registry().get_mut(&f.key) {
        t.fp = f.fp;
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod watch_tests;
