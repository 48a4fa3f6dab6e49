//! The file sink: appends the event contract's NDJSON to a file, fsyncs, then acknowledges;
//! rotates by size.
//!
//! Key decision: chunks waiting in the input are coalesced into one buffer, written with one
//! `write_all`, and acked only once an `fdatasync` covering them returned, so the cost of
//! durability is paid per batch, not per chunk or line. Writing and syncing run on two
//! dedicated threads per file sink, as a database's group commit: the writer appends (the lines
//! are then visible to readers of the file) and hands the write to the syncer, which syncs
//! everything written since its last sync at once and acks it. A sync on a busy disk (hundreds
//! of milliseconds) therefore delays acks, never the lines' arrival in the file. Rejected: the
//! sync in the writer, as before: every line waited for the sync before it, and at 10,000
//! lines/s beside a build writing to the same disk the write-to-file latency's p99 was 0.5 to
//! 2.7 s.
//!
//! A failed write is retried (after a pause, logged) and never acked: the checkpoint stays
//! behind it, and if vigil stops meanwhile the lines are read again at the next start. A failed
//! sync leaves the pages it covered in doubt (the kernel reports a writeback error once per
//! open file, then marks the pages clean), so every write not yet synced on that open file is
//! written again, after the writer reopened it; the output may then hold those lines twice
//! (at least once), never none.
//!
//! Rotation: when the file reaches `max_bytes`, `path` is renamed to `path.1` (older ones
//! shift to `.2` …, the oldest beyond `max_files` is deleted) and a new `path` is opened.
//!
//! A writer thread that dies (a panic: a bug, since I/O errors are retried) ends the sink task
//! at once with the same panic, even while no new chunk arrives: what it held can never be
//! acked, so the app exits non-zero and vigil restarts from the last checkpoint instead of
//! stalling every checkpoint silently.

use super::metrics::SinkMetrics;
use super::{RunFuture, Sink, SinkContext};
use crate::config::{ByteSize, Problems};
use crate::pipeline::{Acker, Chunk};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub name: String,
    /// Which lines this sink takes: the selectors of a transform's `when:` (namespace, pod,
    /// container, labels, stream, level, message). Default: every line.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub route: Option<crate::process::select::SelectorConfig>,
    /// File to append to (created, with its directory, when missing).
    pub path: String,
    /// Rotate when the file reaches this size. Default 100MiB; `0` never rotates.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// Rotated files kept (`path.1` … `path.N`). Default 5.
    #[serde(default = "default_max_files")]
    pub max_files: u32,
    /// When written lines are made durable before they are acknowledged. `always` (default):
    /// acknowledged only once an `fdatasync` covering them returned (one sync for all that was
    /// written while the previous one ran), so an acknowledged line survives a crash of the
    /// node; the lines are in the file before that, and the synced pages older than the last
    /// 8 MiB are dropped from the page cache (`DROP_BEHIND_KEEP`). `never`: acknowledged once in the page cache; a
    /// node crash (not a vigil crash) can lose the last lines written, since their offsets may
    /// be checkpointed.
    #[serde(default, skip_serializing_if = "FileSync::is_default")]
    pub sync: FileSync,
}

/// `sync` of the file sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileSync {
    #[default]
    Always,
    Never,
}

impl FileSync {
    fn is_default(&self) -> bool {
        *self == FileSync::Always
    }
}

fn default_max_bytes() -> ByteSize {
    ByteSize::mib(100)
}
fn default_max_files() -> u32 {
    5
}

impl FileConfig {
    pub fn validate(&self, path: &str, p: &mut Problems) {
        if self.path.is_empty() {
            p.push(format!("{path}.path"), "is empty; expected a file path, e.g. /tmp/vigil-events.ndjson");
        }
        if self.max_bytes.get() > 0 && self.max_files == 0 {
            p.push(format!("{path}.max_files"), "is 0 with rotation on (max_bytes > 0); expected at least 1, e.g. 5");
        }
    }
}

/// Most bytes encoded before a write (several chunks are coalesced up to this).
const WRITE_BUF: usize = 1 << 20;

/// With `sync: always`, the output's last bytes kept in the page cache; older (synced, so
/// clean) pages are dropped after each sync. Measured (perf, CRI → file): copying into fresh
/// page-cache pages was 45% of vigil's CPU; pages dropped behind are freed and handed out
/// again, hot, for the next writes (a 1 MiB write + fdatasync loop: 1.1 s → 0.25 s of system
/// time per 768 MiB here), and the node's page cache (charged to vigil's memory cgroup) is not
/// filled with a log nobody reads back. A reader tailing the output within the window still
/// reads from memory.
const DROP_BEHIND_KEEP: u64 = 8 << 20;

pub struct FileSink {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    sync: FileSync,
    name: String,
    metrics: SinkMetrics,
    /// Test hook: the writer thread panics on its first batch.
    panic_in_writer: bool,
    /// `File::sync_data`; tests put a slow or failing one in its place.
    sync_fn: fn(&File) -> std::io::Result<()>,
}

impl FileSink {
    pub fn build(c: &FileConfig, ctx: &SinkContext) -> Result<Box<dyn Sink>, super::Error> {
        Ok(Box::new(FileSink {
            path: PathBuf::from(&c.path),
            max_bytes: c.max_bytes.get(),
            max_files: c.max_files,
            sync: c.sync,
            name: c.name.clone(),
            metrics: ctx.sink_metrics(&c.name),
            panic_in_writer: writer_panic_injected(),
            sync_fn: File::sync_data,
        }))
    }
}

/// `VIGIL_TEST_FILE_SINK_WRITER_PANIC` set: the writer thread panics, so the end-to-end tests
/// can check that a dead sink stops vigil. Debug builds only; a release build ignores it.
fn writer_panic_injected() -> bool {
    cfg!(debug_assertions) && std::env::var_os("VIGIL_TEST_FILE_SINK_WRITER_PANIC").is_some()
}

/// The open output file and its size.
struct Output {
    path: PathBuf,
    file: Option<Arc<File>>,
    size: u64,
    max_bytes: u64,
    max_files: u32,
    /// How many times the output was opened: names one open file (`Written::open`).
    opens: u64,
}

/// One append, as the syncer needs it.
struct Written {
    file: Arc<File>,
    /// `Output::opens` when it was written: a failed sync condemns every write to that open.
    open: u64,
    /// The file's size after the append.
    end: u64,
}

impl Output {
    fn new(path: &Path, max_bytes: u64, max_files: u32) -> Self {
        Output { path: path.to_path_buf(), file: None, size: 0, max_bytes, max_files, opens: 0 }
    }

    fn open(&mut self) -> std::io::Result<Arc<File>> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new().create(true).read(true).append(true).open(&self.path)?;
            self.size = drop_torn_tail(&f)?;
            self.opens += 1;
            self.file = Some(Arc::new(f));
        }
        Ok(self.file.clone().expect("just opened"))
    }

    /// Appends (no sync: `Syncer`); rotates first when the file is full.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<Written> {
        if self.max_bytes > 0 && self.file.is_some() && self.size >= self.max_bytes {
            self.rotate()?;
        }
        let file = self.open()?;
        (&*file).write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(Written { file, open: self.opens, end: self.size })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let name = |i: u32| -> PathBuf {
            let mut s = self.path.clone().into_os_string();
            s.push(format!(".{i}"));
            s.into()
        };
        let _ = std::fs::remove_file(name(self.max_files));
        for i in (1..self.max_files).rev() {
            let from = name(i);
            if from.exists() {
                std::fs::rename(&from, name(i + 1))?;
            }
        }
        std::fs::rename(&self.path, name(1))?;
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// A write cut short by a crash leaves a partial last line; nothing after the last `\n` was
/// acknowledged (acks follow a complete, synced buffer), so it is cut off before appending.
/// Returns the resulting size.
fn drop_torn_tail(f: &File) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let size = f.metadata()?.len();
    let mut end = size;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.read_exact_at(chunk, start)?;
        if let Some(i) = memchr::memrchr(b'\n', chunk) {
            let keep = start + i as u64 + 1;
            if keep < size {
                tracing::warn!(bytes = size - keep, "file sink: dropping a partial last line left by a crash");
                f.set_len(keep)?;
            }
            return Ok(keep);
        }
        end = start;
    }
    if size > 0 {
        f.set_len(0)?;
    }
    Ok(0)
}

impl Sink for FileSink {
    fn run(self: Box<Self>, mut input: mpsc::Receiver<Arc<Chunk>>, acker: Acker) -> RunFuture {
        Box::pin(async move {
            let out = Output::new(&self.path, self.max_bytes, self.max_files);
            // One dedicated writer thread (not the blocking pool): its buffers stay in one
            // allocator arena, and the hand-off queue of one coalesced batch bounds memory.
            let (to_writer, from_sink) = mpsc::channel::<Vec<Arc<Chunk>>>(1);
            let commit = match self.sync {
                FileSync::Never => Commit::Now(acker),
                FileSync::Always => {
                    let (jobs, unsynced) = std::sync::mpsc::channel();
                    let failed_open = Arc::new(AtomicU64::new(0));
                    let backlog = Arc::new(Backlog::default());
                    let syncer =
                        Syncer { sync: self.sync_fn, failed_open: failed_open.clone(), dropped_open: 0, dropped: 0 };
                    // Weak: the sink's own sender closing still ends the writer.
                    let (again, metrics, held) = (to_writer.downgrade(), self.metrics.clone(), backlog.clone());
                    let spawned = std::thread::Builder::new()
                        .name(format!("vigil-sync-{}", self.name))
                        .spawn(move || sync_loop(syncer, unsynced, again, acker, &metrics, &held));
                    match spawned {
                        Ok(syncer) => Commit::Sync { jobs, failed_open, backlog, syncer },
                        Err(error) => {
                            tracing::error!(sink = %self.name, %error, "file sink: cannot start its sync thread");
                            return;
                        }
                    }
                }
            };
            let metrics = self.metrics.clone();
            let inject = self.panic_in_writer;
            let writer = std::thread::Builder::new()
                .name(format!("vigil-sink-{}", self.name))
                .spawn(move || write_loop(out, from_sink, commit, &metrics, inject));
            let writer = match writer {
                Ok(w) => w,
                Err(error) => {
                    // Without a writer nothing can be delivered; nothing is acked, so nothing
                    // is checkpointed past what is on disk.
                    tracing::error!(sink = %self.name, %error, "file sink: cannot start its writer thread");
                    return;
                }
            };
            loop {
                let first = tokio::select! {
                    c = input.recv() => match c {
                        Some(c) => c,
                        None => break,
                    },
                    // The writer dropped its end: it died (it only returns once this side closes).
                    _ = to_writer.closed() => break,
                };
                let mut est: usize = first.events.iter().map(|e| e.message.len() + 256).sum();
                let mut chunks = vec![first];
                while est < WRITE_BUF {
                    match input.try_recv() {
                        Ok(c) => {
                            est += c.events.iter().map(|e| e.message.len() + 256).sum::<usize>();
                            chunks.push(c);
                        }
                        Err(_) => break,
                    }
                }
                if to_writer.send(chunks).await.is_err() {
                    break;
                }
            }
            drop(to_writer);
            let joined = tokio::task::spawn_blocking(move || writer.join()).await;
            if let Ok(Err(panic)) = joined {
                tracing::error!(sink = %self.name, "file sink: its writer thread died; the lines it held are not acknowledged");
                std::panic::resume_unwind(panic);
            }
        })
    }
}

/// How the writer gets its writes acknowledged.
enum Commit {
    /// `sync: never`: acked once written.
    Now(Acker),
    /// `sync: always`: handed to the syncer thread, which acks them once synced.
    Sync {
        jobs: std::sync::mpsc::Sender<Unsynced>,
        /// `Written::open` of the newest failed sync: the writer reopens before its next write.
        failed_open: Arc<AtomicU64>,
        backlog: Arc<Backlog>,
        syncer: std::thread::JoinHandle<()>,
    },
}

/// Most bytes written and not yet synced: past it the writer waits for the syncer. Without a
/// bound the writer ran ahead of a disk slower than the input by the pipeline's whole
/// in-flight budget (~100 MB of events at full speed), and the unsynced pages could not be
/// dropped behind (+1 CPU-s/GB).
const UNSYNCED_MAX: usize = 4 * WRITE_BUF;

/// Bytes handed to the syncer and not yet synced (or handed back), and whether the syncer is
/// gone.
#[derive(Default)]
struct Backlog {
    state: std::sync::Mutex<(usize, bool)>,
    changed: std::sync::Condvar,
}

impl Backlog {
    /// Waits until `bytes` more fit (always true when nothing waits); false when the syncer is
    /// gone.
    fn reserve(&self, bytes: usize) -> bool {
        let mut g = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while !g.1 && g.0 > 0 && g.0 + bytes > UNSYNCED_MAX {
            g = self.changed.wait(g).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        g.0 += bytes;
        !g.1
    }

    fn release(&self, bytes: usize) {
        let mut g = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        g.0 = g.0.saturating_sub(bytes);
        self.changed.notify_all();
    }
}

/// Marks the backlog's syncer gone when its thread ends, a panic included, so the writer never
/// waits for it.
struct SyncerGone<'a>(&'a Backlog);

impl Drop for SyncerGone<'_> {
    fn drop(&mut self) {
        self.0.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).1 = true;
        self.0.changed.notify_all();
    }
}

/// A write waiting for its sync, with the chunks it holds.
struct Unsynced {
    written: Written,
    bytes: usize,
    chunks: Vec<Arc<Chunk>>,
}

/// The writer thread: encode, append, hand to the syncer (or ack); a failed write is retried,
/// never acked.
fn write_loop(
    mut out: Output,
    mut input: mpsc::Receiver<Vec<Arc<Chunk>>>,
    commit: Commit,
    metrics: &SinkMetrics,
    inject_panic: bool,
) {
    let name = metrics.name();
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BUF + WRITE_BUF / 2);
    let mut encoder = crate::event::JsonEncoder::default();
    while let Some(chunks) = input.blocking_recv() {
        if inject_panic {
            panic!("file sink writer: panic injected by VIGIL_TEST_FILE_SINK_WRITER_PANIC");
        }
        buf.clear();
        for c in &chunks {
            for e in &c.events {
                encoder.write(e, &mut buf);
            }
        }
        encoder.clear();
        if let Commit::Sync { backlog, .. } = &commit {
            // False: the syncer died (joined below).
            if !backlog.reserve(buf.len()) {
                break;
            }
        }
        let mut failures = 0u32;
        let written = loop {
            if let Commit::Sync { failed_open, .. } = &commit {
                if out.file.is_some() && failed_open.load(Ordering::Acquire) >= out.opens {
                    out.file = None;
                }
            }
            match out.write(&buf) {
                Ok(w) => break w,
                Err(error) => {
                    // A lost descriptor (ENOSPC, EIO) is reopened on the next try.
                    out.file = None;
                    metrics.failing();
                    if failures % 30 == 0 {
                        tracing::warn!(sink = %name, path = %out.path.display(), %error, "file sink: write failed; retrying (lines are not acknowledged until written)");
                    }
                    failures += 1;
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        };
        match &commit {
            Commit::Now(acker) => {
                let events: usize = chunks.iter().map(|c| c.events.len()).sum();
                metrics.events_sent.inc_by(events as u64);
                metrics.bytes_sent.inc_by(buf.len() as u64);
                metrics.success();
                for c in &chunks {
                    acker.ack(c.id);
                }
                give_back(chunks);
            }
            Commit::Sync { jobs, .. } => {
                // A send fails only when the syncer died: joined below.
                if jobs.send(Unsynced { written, bytes: buf.len(), chunks }).is_err() {
                    break;
                }
            }
        }
        if buf.capacity() > 4 * WRITE_BUF {
            buf = Vec::with_capacity(WRITE_BUF + WRITE_BUF / 2);
        }
    }
    if let Commit::Sync { jobs, syncer, .. } = commit {
        drop(jobs);
        if let Err(panic) = syncer.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

/// The messages' buffers of delivered chunks go back to the tailer to be filled again
/// (`recycle`); a chunk another sink still holds is left to it.
fn give_back(chunks: Vec<Arc<Chunk>>) {
    for c in chunks {
        if let Some(c) = Arc::into_inner(c) {
            crate::logs::parse::recycle::give_back(c.events);
        }
    }
}

/// The syncer thread's state.
struct Syncer {
    /// `File::sync_data`, or a test's stand-in.
    sync: fn(&File) -> std::io::Result<()>,
    failed_open: Arc<AtomicU64>,
    /// The open file whose pages were dropped from the page cache below `dropped`.
    dropped_open: u64,
    dropped: u64,
}

impl Syncer {
    /// Syncs the writes of `batch` (in write order), one sync per open file: returns the writes
    /// now durable and those to write again (their sync failed, or an earlier one on the same
    /// open file did).
    fn sync(&mut self, batch: Vec<Unsynced>, name: &str) -> (Vec<Unsynced>, Vec<Unsynced>) {
        let (mut done, mut again) = (Vec::new(), Vec::new());
        let mut rest = batch.into_iter().peekable();
        while let Some(first) = rest.next() {
            let open = first.written.open;
            let mut group = vec![first];
            while let Some(u) = rest.next_if(|u| u.written.open == open) {
                group.push(u);
            }
            if self.failed_open.load(Ordering::Acquire) >= open {
                again.extend(group);
                continue;
            }
            let last = &group[group.len() - 1].written;
            match (self.sync)(&last.file) {
                Ok(()) => {
                    let (file, end) = (last.file.clone(), last.end);
                    self.drop_behind(&file, open, end);
                    done.extend(group);
                }
                Err(error) => {
                    tracing::warn!(sink = %name, %error, "file sink: sync failed; writing its lines again to the reopened file (they are not acknowledged until synced)");
                    self.failed_open.store(open, Ordering::Release);
                    again.extend(group);
                }
            }
        }
        (done, again)
    }

    /// Advises the kernel to drop the synced pages of `file` (open number `open`) before the
    /// last `DROP_BEHIND_KEEP` bytes of `end` (whole 1 MiB steps). Advice only: a failure
    /// changes nothing written, so it is ignored.
    fn drop_behind(&mut self, file: &File, open: u64, end: u64) {
        use std::os::fd::AsRawFd;
        if open != self.dropped_open {
            (self.dropped_open, self.dropped) = (open, 0);
        }
        let end = end.saturating_sub(DROP_BEHIND_KEEP) & !((1 << 20) - 1);
        if end <= self.dropped {
            return;
        }
        // SAFETY: plain syscall on an open descriptor; no memory is passed.
        unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                self.dropped as libc::off_t,
                (end - self.dropped) as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
        self.dropped = end;
    }
}

/// The syncer thread: takes every write waiting, syncs them at once, acks them; hands those
/// whose sync failed back to the writer (`again`: its own input) after a pause.
fn sync_loop(
    mut s: Syncer,
    jobs: std::sync::mpsc::Receiver<Unsynced>,
    again: mpsc::WeakSender<Vec<Arc<Chunk>>>,
    acker: Acker,
    metrics: &SinkMetrics,
    backlog: &Backlog,
) {
    let _gone = SyncerGone(backlog);
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        let bytes: usize = batch.iter().map(|u| u.bytes).sum();
        let (done, failed) = s.sync(batch, metrics.name());
        // Before handing anything back: the writer must be free to take it.
        backlog.release(bytes);
        if !done.is_empty() {
            metrics.success();
        }
        for u in done {
            metrics.events_sent.inc_by(u.chunks.iter().map(|c| c.events.len() as u64).sum());
            metrics.bytes_sent.inc_by(u.bytes as u64);
            for c in &u.chunks {
                acker.ack(c.id);
            }
            give_back(u.chunks);
        }
        if !failed.is_empty() {
            metrics.failing();
            std::thread::sleep(Duration::from_secs(1));
            // Gone at shutdown: those lines stay unacked, read again at the next start.
            if let Some(writer) = again.upgrade() {
                let _ = writer.blocking_send(failed.into_iter().flat_map(|u| u.chunks).collect());
            }
        }
    }
}

#[cfg(test)]
mod tests;
