//! The file sink: appends the event contract's NDJSON to a file, fsyncs, then acknowledges;
//! rotates by size.
//!
//! Key decision: chunks waiting in the input are coalesced into one buffer, written with one
//! `write_all` and made durable with one `fdatasync` before any of them is acked, so the cost
//! of durability is paid per batch, not per chunk or line. Encoding and I/O run on one
//! dedicated writer thread per file sink. A failed write is retried (after a pause, logged) and never acked: the checkpoint
//! stays behind it, and if vigil stops meanwhile the lines are read again at the next start.
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
    /// `fdatasync` after every write (at most 1 MiB of lines), so an acknowledged line survives
    /// a crash of the node; the synced pages older than the last 8 MiB are then dropped from
    /// the page cache (`DROP_BEHIND_KEEP`). `never`: acknowledged once in the page cache; a
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
    file: Option<File>,
    size: u64,
    max_bytes: u64,
    max_files: u32,
    sync: FileSync,
    /// Offset below which the current file's pages were dropped from the page cache.
    dropped: u64,
}

impl Output {
    fn open(&mut self) -> std::io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new().create(true).read(true).append(true).open(&self.path)?;
            self.size = drop_torn_tail(&f)?;
            self.dropped = 0;
            self.file = Some(f);
        }
        Ok(self.file.as_mut().expect("just opened"))
    }

    /// Appends and syncs; rotates first when the file is full.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.max_bytes > 0 && self.file.is_some() && self.size >= self.max_bytes {
            self.rotate()?;
        }
        let sync = self.sync;
        let f = self.open()?;
        f.write_all(buf)?;
        if sync == FileSync::Always {
            f.sync_data()?;
        }
        self.size += buf.len() as u64;
        if sync == FileSync::Always {
            self.drop_behind();
        }
        Ok(())
    }

    /// Advises the kernel to drop the synced pages before the last `DROP_BEHIND_KEEP` bytes
    /// (whole 1 MiB steps). Advice only: a failure changes nothing written, so it is ignored.
    fn drop_behind(&mut self) {
        use std::os::fd::AsRawFd;
        let end = self.size.saturating_sub(DROP_BEHIND_KEEP) & !((1 << 20) - 1);
        let Some(f) = &self.file else { return };
        if end <= self.dropped {
            return;
        }
        // SAFETY: plain syscall on a descriptor this struct owns; no memory is passed.
        unsafe {
            libc::posix_fadvise(
                f.as_raw_fd(),
                self.dropped as libc::off_t,
                (end - self.dropped) as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
        self.dropped = end;
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
            let out = Output {
                path: self.path,
                file: None,
                size: 0,
                max_bytes: self.max_bytes,
                max_files: self.max_files,
                sync: self.sync,
                dropped: 0,
            };
            // One dedicated writer thread (not the blocking pool): its buffers stay in one
            // allocator arena, and the hand-off queue of one coalesced batch bounds memory.
            let (to_writer, from_sink) = mpsc::channel::<Vec<Arc<Chunk>>>(1);
            let metrics = self.metrics.clone();
            let inject = self.panic_in_writer;
            let writer = std::thread::Builder::new()
                .name(format!("vigil-sink-{}", self.name))
                .spawn(move || write_loop(out, from_sink, acker, &metrics, inject));
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

/// The writer thread: encode, append, sync, ack; a failed write is retried, never acked.
fn write_loop(
    mut out: Output,
    mut input: mpsc::Receiver<Vec<Arc<Chunk>>>,
    acker: Acker,
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
        let mut failures = 0u32;
        while let Err(error) = out.write(&buf) {
            // A lost descriptor (ENOSPC, EIO) is reopened on the next try.
            out.file = None;
            metrics.failing();
            if failures % 30 == 0 {
                tracing::warn!(sink = %name, path = %out.path.display(), %error, "file sink: write failed; retrying (lines are not acknowledged until written)");
            }
            failures += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
        let events: usize = chunks.iter().map(|c| c.events.len()).sum();
        metrics.events_sent.inc_by(events as u64);
        metrics.bytes_sent.inc_by(buf.len() as u64);
        metrics.success();
        for c in &chunks {
            acker.ack(c.id);
        }
        // The messages' buffers go back to the tailer to be filled again (`recycle`).
        for c in chunks {
            if let Some(c) = Arc::into_inner(c) {
                crate::logs::parse::recycle::give_back(c.events);
            }
        }
        if buf.capacity() > 4 * WRITE_BUF {
            buf = Vec::with_capacity(WRITE_BUF + WRITE_BUF / 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output not yet opened, as `FileSink` builds it.
    fn output(path: &Path, max_bytes: u64, max_files: u32, sync: FileSync) -> Output {
        Output { path: path.to_path_buf(), file: None, size: 0, max_bytes, max_files, sync, dropped: 0 }
    }

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("out/events.ndjson");
        let mut o = output(&path, 10, 2, FileSync::Always);
        for i in 0..5 {
            o.write(format!("line{i}-----\n").as_bytes()).unwrap();
        }
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(path.clone()), "line4-----\n");
        assert_eq!(read(d.path().join("out/events.ndjson.1")), "line3-----\n");
        assert_eq!(read(d.path().join("out/events.ndjson.2")), "line2-----\n");
        assert!(!d.path().join("out/events.ndjson.3").exists());
    }

    #[test]
    fn torn_last_line_is_cut_before_appending() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("e.ndjson");
        std::fs::write(&path, "{\"a\":1}\n{\"b\":").unwrap();
        let mut o = output(&path, 0, 0, FileSync::Always);
        o.write(b"{\"c\":3}\n").unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "{\"a\":1}\n{\"c\":3}\n");
    }

    #[tokio::test]
    async fn acks_each_chunk_once_its_lines_are_on_disk() {
        use crate::event::{Event, K8sMeta, Origin, Source, Stream};
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("events.ndjson");
        let cfg = FileConfig {
            name: "f".into(),
            route: None,
            path: path.display().to_string(),
            max_bytes: ByteSize(0),
            max_files: 5,
            sync: FileSync::Always,
        };
        let ctx = SinkContext::new(prometheus::Registry::new(), "n".into()).unwrap();
        let sink = FileSink::build(&cfg, &ctx).unwrap();
        let (acker, mut acks) = Acker::channel();
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(sink.run(rx, acker));
        let source = Arc::new(Source { file: "/f.log".into(), node: "n".into(), kubernetes: K8sMeta::default() });
        let event = |m: &str| Event {
            timestamp: 0,
            stream: Stream::Stdout,
            message: m.into(),
            malformed: false,
            truncated: false,
            source: source.clone(),
            origin: Origin { file: 1, offset: 0, resume: 1 },
            parsed: None,
        };
        for id in 0..3u64 {
            tx.send(Arc::new(Chunk { id, events: vec![event(&format!("line {id}"))] })).await.unwrap();
            assert_eq!(acks.recv().await, Some(id));
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text.lines().count() as u64, id + 1, "acked before written");
            assert!(text.contains(&format!("\"message\":\"line {id}\"")));
        }
        drop(tx);
        task.await.unwrap();
    }

    /// Regression: a writer thread that died left the sink task waiting for input with the
    /// chunks it held unacked forever: checkpoints froze and nothing said so.
    #[tokio::test]
    async fn a_dead_writer_thread_ends_the_sink_task_with_its_panic() {
        use crate::event::{Event, K8sMeta, Origin, Source, Stream};
        let d = tempfile::tempdir().unwrap();
        let ctx = SinkContext::new(prometheus::Registry::new(), "n".into()).unwrap();
        let sink = Box::new(FileSink {
            path: d.path().join("e.ndjson"),
            max_bytes: 0,
            max_files: 1,
            sync: FileSync::Always,
            name: "f".into(),
            metrics: ctx.sink_metrics("f"),
            panic_in_writer: true,
        });
        let (acker, mut acks) = Acker::channel();
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(sink.run(rx, acker));
        let source = Arc::new(Source { file: "/f.log".into(), node: "n".into(), kubernetes: K8sMeta::default() });
        let event = Event {
            timestamp: 0,
            stream: Stream::Stdout,
            message: "x".into(),
            malformed: false,
            truncated: false,
            source,
            parsed: None,
            origin: Origin { file: 1, offset: 0, resume: 1 },
        };
        tx.send(Arc::new(Chunk { id: 0, events: vec![event] })).await.unwrap();
        // No further input: the sink must notice the dead writer by itself.
        let error = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("the sink task ends while its input stays open")
            .expect_err("with the writer's panic");
        assert!(error.is_panic());
        assert!(acks.try_recv().is_err(), "nothing was written, nothing may be acked");
        drop(tx);
    }

    #[test]
    fn sync_defaults_to_always_and_never_still_writes_every_line() {
        let c: FileConfig = serde_yaml_ng::from_str("{name: f, path: /x}").unwrap();
        assert_eq!(c.sync, FileSync::Always);
        let c: FileConfig = serde_yaml_ng::from_str("{name: f, path: /x, sync: never}").unwrap();
        assert_eq!(c.sync, FileSync::Never);
        assert!(serde_yaml_ng::from_str::<FileConfig>("{name: f, path: /x, sync: sometimes}").is_err());
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("e.ndjson");
        let mut o = output(&path, 0, 0, FileSync::Never);
        o.write(b"a\n").unwrap();
        o.write(b"b\n").unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "a\nb\n");
    }

    /// Dropping synced pages behind the writer never touches what is written, follows the
    /// current file across a rotation, and stays a window behind the end.
    #[test]
    fn drop_behind_keeps_every_line_and_restarts_after_rotation() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("e.ndjson");
        let mut o = output(&path, 12 << 20, 1, FileSync::Always);
        let line = |i: usize| format!("{i:0>1023}\n").into_bytes();
        // 64 KiB writes (one sync each) of 1 KiB lines.
        for w in 0..12 * 16 {
            o.write(&(w * 64..(w + 1) * 64).flat_map(line).collect::<Vec<u8>>()).unwrap();
        }
        assert_eq!(o.dropped, 4 << 20, "8 MiB kept behind the end, in whole MiB");
        o.write(&line(12 * 1024)).unwrap();
        assert_eq!(o.dropped, 0, "a rotated-in file starts from its beginning");
        let rotated = std::fs::read(d.path().join("e.ndjson.1")).unwrap();
        let want: Vec<u8> = (0..12 * 1024).flat_map(line).collect();
        assert!(rotated == want, "every line of the rotated file intact");
        assert_eq!(std::fs::read(&path).unwrap(), line(12 * 1024));
    }

    #[test]
    fn appends_to_an_existing_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("e.ndjson");
        std::fs::write(&path, "old\n").unwrap();
        let mut o = output(&path, 0, 0, FileSync::Always);
        o.write(b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "old\nnew\n");
    }
}
