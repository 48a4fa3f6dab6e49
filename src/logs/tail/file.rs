//! One file's state machine: reading, line splitting, parsing, partial merge, and what happens
//! when the file is rotated, truncated or deleted.
//!
//! ```text
//!            rename seen / path gone                 EOF and (replaced or idle rotate_wait)
//!   Live ───────────────────────────────→ Moved ─────────────────────────────────────→ Done
//!    │  ↑ path points at it again ───────┘                                             ↑
//!    │  truncated (size < offset, or head changed): the old content goes on in the     │
//!    │  copy as Moved (copytruncate); the new content is a new Live FileTail with a    │
//!    │  new key (generation). No copy: shipped partials, read again from 0, new key.   │
//!    └─ nlink == 0 ──→ Deleted ── EOF, or held > deleted_file_max_hold, ───────────────┘
//!                               or unread > deleted_file_max_unread (drop, count)
//! ```
//!
//! Key decisions: reads are positional (`pread`) from a file descriptor kept open, so a rename
//! never loses the tail of the old file; bytes of an unfinished last line are carried between
//! reads in a buffer capped at `max_raw` (an overlong line keeps its head and skips the rest,
//! so memory never grows with line length); `resume()` never passes the start of a pending
//! partial or open multiline group of either stream nor an unfinished line. A truncation is looked for before every
//! read (size, then the fingerprinted head), not only at polls, because a file written again
//! past the old offset before the next poll would otherwise be read on from the wrong place;
//! and the head is checked again after each `pread`, before its bytes are used, which closes
//! the window between that look and the read.

use super::identity::{FileId, Fingerprint};
pub use super::out::Out;
use crate::event::{Event, Origin, Source, Stream};
use crate::logs::metrics::LogMetrics;
use crate::logs::multiline::{Joiner, Mode, Multiline};
use crate::logs::parse::merge::{Line, Merger};
use crate::logs::parse::{self, Format};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Where a file is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Its path still points at it.
    Live,
    /// Renamed away (rotated). `replaced`: a new file already sits at its path.
    Moved { replaced: bool },
    /// Unlinked while open, noticed at `since`.
    Deleted { since: Instant },
}

/// The bytes of the file: plain (positional reads, can grow) or a gzip-compressed rotated file
/// (read once, front to back, never grows).
enum Body {
    Plain(File),
    Gz(Box<flate2::read::GzDecoder<io::BufReader<File>>>),
}

/// Limits one file works under (from the config).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_line: usize,
    pub max_raw: usize,
    /// `multiline`, compiled once for the process (`Multiline::leak`).
    pub multiline: &'static Multiline,
}

pub struct FileTail {
    pub key: u64,
    pub id: FileId,
    pub fp: Fingerprint,
    /// The path it was discovered under (shared with `Tailer::by_path` and the registry).
    pub path: Arc<Path>,
    pub source: Arc<Source>,
    /// The copy of `source` shared by this file's events in the current batch, and the batch.
    batch_source: Option<(u64, Arc<Source>)>,
    pub state: State,
    body: Body,
    /// Next byte to read.
    pub offset: u64,
    /// End of the last complete line handled.
    consumed: u64,
    /// The unfinished last line (at most `max_raw` bytes kept) and whether bytes were skipped.
    carry: Vec<u8>,
    carry_cut: bool,
    format: Option<Format>,
    /// Partial lines being merged and open multiline groups: made at the first line, dropped
    /// again when the file is idle with nothing pending (`release_idle`).
    asm: Option<Box<Assembly>>,
    /// The multiline mode of this file's lines (`logs::multiline`).
    mode: Mode,
    limits: Limits,
    /// Last resume offset handed out as a position.
    pub last_position: u64,
    /// Last time a read returned data.
    pub last_data: Instant,
    /// The last read stopped at the end of the file.
    pub at_eof: bool,
    /// Size at the last `stat`.
    pub size: u64,
    /// Opening order (set by the tailer): of two files with the same path, the older one is
    /// read to its end before the newer one is read.
    pub order: u64,
    /// Waiting for an older file with the same path to be finished (not read meanwhile).
    pub blocked: bool,
    /// inotify reported a change since the last poll looked at it (`Tailer::maintain`).
    pub touched: bool,
    /// The last `look` and the tailer's pass it was taken in: a poll in the same pass uses it
    /// instead of looking again (`Tailer::maintain`).
    pub looked: Option<(u64, Look)>,
    /// No inotify hint names this file (found only through a symlink, whose target may sit
    /// outside the watched directories): it is looked at every poll.
    pub poll: bool,
    /// Rate limits of the warnings about bad lines; made at the first one.
    warned: Option<Box<Warned>>,
}

/// The line assembly state of a file (~290 bytes): boxed and made only while lines are read,
/// since at 10,000 idle files keeping it in every `FileTail` (which was ~600 bytes) cost ~3 MB.
/// Lossless to drop when nothing is pending: a `Merger` and a `Joiner` hold nothing else.
struct Assembly {
    merger: Merger,
    /// Stack traces joined after the merge (`logs::multiline`).
    joiner: Joiner,
}

/// Malformed lines since the last warning about them, and when that was (rate limit); the same
/// for lines with invalid UTF-8 (replaced, shipped as normal lines).
#[derive(Default)]
struct Warned {
    malformed_unlogged: u64,
    malformed_logged_at: Option<Instant>,
    invalid_utf8_unlogged: u64,
    invalid_utf8_logged_at: Option<Instant>,
}

/// At most one warning about malformed lines per file per this period.
const MALFORMED_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// An opened file and who it is: what `FileTail::plain` and `FileTail::gz` start from.
pub struct Opened {
    pub key: u64,
    pub id: FileId,
    pub fp: Fingerprint,
    /// The path it was discovered under (shared with `Tailer::by_path` and the registry).
    pub path: Arc<Path>,
    pub source: Arc<Source>,
    pub file: File,
    /// Where reading starts (decompressed bytes for a `.gz`).
    pub offset: u64,
    pub limits: Limits,
}

impl FileTail {
    /// Wraps an open plain file; reading starts at `o.offset`.
    pub fn plain(o: Opened) -> Self {
        let size = o.file.metadata().map(|m| m.len()).unwrap_or(0);
        let Opened { key, id, fp, path, source, file, offset, limits } = o;
        Self::new(key, id, fp, path, source, Body::Plain(file), offset, size, limits)
    }

    /// Wraps a gzip-compressed rotated file, skipping `o.offset` bytes of decompressed data.
    pub fn gz(o: Opened) -> io::Result<Self> {
        let Opened { key, id, fp, path, source, file, offset, limits } = o;
        let mut dec = flate2::read::GzDecoder::new(io::BufReader::new(file));
        let skipped = io::copy(&mut (&mut dec).take(offset), &mut io::sink())?;
        if skipped < offset {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "checkpoint offset past the end of the .gz"));
        }
        let mut t = Self::new(key, id, fp, path, source, Body::Gz(Box::new(dec)), offset, 0, limits);
        t.state = State::Moved { replaced: true };
        Ok(t)
    }

    /// Wraps a rotated file (renamed away, a new file at its path): gzip-compressed or plain.
    pub fn rotated(o: Opened, gz: bool) -> io::Result<Self> {
        if gz {
            return Self::gz(o);
        }
        let mut t = Self::plain(o);
        t.state = State::Moved { replaced: true };
        Ok(t)
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        key: u64,
        id: FileId,
        fp: Fingerprint,
        path: Arc<Path>,
        source: Arc<Source>,
        body: Body,
        offset: u64,
        size: u64,
        limits: Limits,
    ) -> Self {
        let (mode, _) = limits.multiline.select(&path, None);
        Self {
            asm: None,
            mode,
            key,
            id,
            fp,
            path,
            source,
            batch_source: None,
            state: State::Live,
            body,
            offset,
            consumed: offset,
            carry: Vec::new(),
            carry_cut: false,
            format: None,
            limits,
            last_position: offset,
            last_data: Instant::now(),
            at_eof: false,
            size,
            order: 0,
            blocked: false,
            touched: false,
            looked: None,
            poll: false,
            warned: None,
        }
    }

    /// Where reading may resume once everything emitted so far is delivered.
    pub fn resume(&self) -> u64 {
        let Some(a) = &self.asm else { return self.consumed };
        let r = a.merger.pending_start().map_or(self.consumed, |p| p.min(self.consumed));
        a.joiner.pending_start().map_or(r, |g| g.min(r))
    }

    /// The line assembly state, made if the file has none.
    fn asm(&mut self) -> &mut Assembly {
        let (mode, limits) = (&self.mode, &self.limits);
        self.asm.get_or_insert_with(|| {
            Box::new(Assembly {
                merger: Merger::new(limits.max_line),
                joiner: Joiner::new(mode.clone(), limits.max_line, limits.multiline.max_wait_ms),
            })
        })
    }

    /// Whether partial lines or multiline groups are pending.
    fn assembling(&self) -> bool {
        self.asm.as_ref().is_some_and(|a| a.merger.has_pending() || a.joiner.has_open())
    }

    /// Applies the pod's `vigil.io/multiline` annotation (`None`: not set) to this file's
    /// multiline mode: the one call the Kubernetes metadata needs. An invalid value is logged
    /// and the configured mode kept.
    /// A group already open under the old mode (the pod became known after a trace started)
    /// is shipped first, so the lines after it keep their order.
    pub fn set_multiline_annotation(&mut self, annotation: Option<&str>, out: &mut Out) {
        let (mode, error) = self.limits.multiline.select(&self.path, annotation);
        if let Some(error) = error {
            tracing::warn!(path = %self.path.display(), %error, "ignoring the pod's multiline annotation");
        }
        if mode != self.mode
            && let Some(a) = self.asm.as_mut().filter(|a| a.joiner.has_open())
        {
            let groups = a.joiner.take_all();
            self.emit_taken(groups, out);
            self.push_position(out);
        }
        if let Some(a) = &mut self.asm {
            a.joiner.set_mode(mode.clone());
        }
        self.mode = mode;
    }

    /// Frees what a file at its end keeps for nothing: its copy of the source for a batch
    /// already sealed (`generation`: the batch being built; a new batch clones the source
    /// anyway) and the capacity of an empty carry buffer. At 10,000 idle files that was ~4 MB.
    pub fn release_idle(&mut self, generation: u64) {
        if self.batch_source.as_ref().is_some_and(|(g, _)| *g != generation) {
            self.batch_source = None;
        }
        if self.carry.is_empty() && self.carry.capacity() > 0 {
            self.carry = Vec::new();
        }
        if !self.assembling() {
            self.asm = None;
        }
    }

    /// Whether the file keeps its line assembly state (tests).
    #[cfg(test)]
    pub fn holds_assembly(&self) -> bool {
        self.asm.is_some()
    }

    /// Whether the file keeps a copy of its source for a batch (tests).
    #[cfg(test)]
    pub fn holds_batch_source(&self) -> bool {
        self.batch_source.is_some()
    }

    pub fn is_gz(&self) -> bool {
        matches!(self.body, Body::Gz(_))
    }

    /// Reads up to `budget` bytes (in `buf`-sized reads), turning complete lines into events.
    /// Stops early once a batch was sealed (so at most one read's worth waits in `out.ready`).
    /// Returns the bytes read; sets `at_eof` when the end of the file was reached.
    pub fn read_slice(
        &mut self,
        buf: &mut [u8],
        budget: usize,
        now_ms: u64,
        out: &mut Out,
        m: &LogMetrics,
    ) -> io::Result<usize> {
        let mut total = 0;
        self.at_eof = false;
        while total < budget {
            let want = buf.len().min(budget - total);
            let n = match &mut self.body {
                Body::Plain(f) => {
                    let n = f.read_at(&mut buf[..want], self.offset)?;
                    // Truncated (and written again) since the look before this read: these
                    // bytes may be new content at the old offset. Left unread; the caller's
                    // next look (`truncation_seen`) handles the truncation. A truncation after
                    // this check came after the read, so the bytes read are the old content.
                    if n > 0 && !matches!(self.state, State::Deleted { .. }) && !head_matches(f, self.fp) {
                        break;
                    }
                    n
                }
                Body::Gz(d) => d.read(&mut buf[..want])?,
            };
            if n == 0 {
                self.at_eof = true;
                // Read to its end with nothing pending: the assembly state goes until the next
                // line (a first round over 10,000 files made 10,000 of them, ~3 MB, all alive
                // until the next poll).
                if !self.assembling() {
                    self.asm = None;
                }
                break;
            }
            self.process(&buf[..n], now_ms, out, m);
            self.offset += n as u64;
            total += n;
            if !out.ready.is_empty() {
                break;
            }
        }
        if total > 0 {
            self.last_data = Instant::now();
            self.size = self.size.max(self.offset);
        }
        self.push_position(out);
        Ok(total)
    }

    fn push_position(&mut self, out: &mut Out) {
        self.push_position_capped(out, u64::MAX);
    }

    fn push_position_capped(&mut self, out: &mut Out, cap: u64) {
        let r = self.resume().min(cap);
        if r != self.last_position {
            self.last_position = r;
            out.positions.push((self.key, r));
        }
    }

    /// Splits `data` (read at `self.offset`) into lines.
    fn process(&mut self, data: &[u8], now_ms: u64, out: &mut Out, m: &LogMetrics) {
        let base = self.offset;
        let mut pos = 0;
        while let Some(nl) = memchr::memchr(b'\n', &data[pos..]) {
            let end = pos + nl;
            let end_off = base + end as u64 + 1;
            if self.carry.is_empty() && !self.carry_cut {
                let line = &data[pos..end];
                // Cut at exactly `max_raw` bytes, as `append_carry` does, so the result does not
                // depend on read sizes; `line` drops a character the cut split.
                let (line, cut) =
                    if line.len() > self.limits.max_raw { (&line[..self.limits.max_raw], true) } else { (line, false) };
                let start = base + pos as u64;
                self.line(line, cut, start, end_off, now_ms, out, m);
            } else {
                self.append_carry(&data[pos..end]);
                let carry = std::mem::take(&mut self.carry);
                let cut = std::mem::take(&mut self.carry_cut);
                let start = self.consumed;
                self.line(&carry, cut, start, end_off, now_ms, out, m);
                self.carry = carry;
                self.carry.clear();
                if self.carry.capacity() > 64 * 1024 {
                    self.carry = Vec::new();
                }
            }
            pos = end + 1;
        }
        if pos < data.len() {
            self.append_carry(&data[pos..]);
        }
    }

    fn append_carry(&mut self, b: &[u8]) {
        let room = self.limits.max_raw.saturating_sub(self.carry.len());
        if b.len() > room {
            self.carry.extend_from_slice(&b[..room]);
            self.carry_cut = true;
        } else {
            self.carry.extend_from_slice(b);
        }
    }

    /// One raw line `[start, end)` (without its `\n`).
    #[allow(clippy::too_many_arguments)]
    fn line(&mut self, raw: &[u8], raw_cut: bool, start: u64, end: u64, now_ms: u64, out: &mut Out, m: &LogMetrics) {
        self.consumed = end;
        // A line cut at `max_raw` may end inside a UTF-8 sequence; drop that stub so the kept
        // part still parses.
        let raw = if raw_cut { parse::trim_partial_utf8(raw) } else { raw };
        if raw.is_empty() {
            // A blank line carries nothing (runtimes never write one); skipping it keeps empty
            // malformed events out of the sinks.
            return;
        }
        let format = *self.format.get_or_insert_with(|| Format::detect(raw));
        match parse::parse(format, raw, self.limits.max_line) {
            Ok((rec, cut)) => {
                // A raw cut inside a docker record breaks its JSON, so it cannot get here; a
                // cut CRI record keeps its header and is flagged.
                if let Some(line) = self.asm().merger.push(rec, cut || raw_cut, start, now_ms) {
                    self.join(line, now_ms, u64::MAX, out);
                }
            }
            Err(e) => {
                m.parse_error(e);
                let w = self.warned.get_or_insert_default();
                w.malformed_unlogged += 1;
                if w.malformed_logged_at.is_none_or(|t| t.elapsed() >= MALFORMED_LOG_EVERY) {
                    let sample = String::from_utf8_lossy(&raw[..raw.len().min(120)]).into_owned();
                    tracing::warn!(
                        path = %self.path.display(), offset = start, error = e.kind(), lines = w.malformed_unlogged,
                        %sample,
                        "shipping malformed lines as raw text, flagged \"malformed\" (at most one warning per file per minute)"
                    );
                    w.malformed_unlogged = 0;
                    w.malformed_logged_at = Some(Instant::now());
                }
                let (message, cut) = parse::raw_message(raw, self.limits.max_line);
                let line = Line {
                    timestamp: now_ns(),
                    stream: Stream::Stdout,
                    message,
                    truncated: cut || raw_cut,
                    invalid_utf8: false,
                    start,
                };
                self.emit(line, true, out);
                self.seal_if_full(out);
            }
        }
    }

    /// Hands a merged line to the multiline stage and emits what it gives back: a trace the
    /// line closed, then the line unless a group holds it. `rest`: the smallest start of the
    /// lines taken out of the merger but not handed here yet (flush paths; else `u64::MAX`).
    fn join(&mut self, line: Line, now_ms: u64, rest: u64, out: &mut Out) {
        let pushed = self.asm().joiner.push(line, now_ms);
        if let Some(group) = pushed.closed {
            // The line that closed the group is not emitted yet: neither this event's resume
            // nor a batch sealed after it may pass that line's start.
            let cap = pushed.line.as_ref().map_or(rest, |l| l.start.min(rest));
            self.emit_capped(group, false, cap, out);
            if out.full() {
                self.push_position_capped(out, cap);
                out.seal();
            }
        }
        if let Some(line) = pushed.line {
            self.emit_capped(line, false, rest, out);
            if out.full() {
                self.push_position_capped(out, rest);
                out.seal();
            }
        }
    }

    /// Hands lines taken out of the merger (oldest first) to the multiline stage.
    fn join_taken(&mut self, lines: Vec<Line>, now_ms: u64, out: &mut Out) {
        let starts: Vec<u64> = lines.iter().map(|l| l.start).collect();
        for (k, line) in lines.into_iter().enumerate() {
            let rest = starts[k + 1..].iter().copied().min().unwrap_or(u64::MAX);
            self.join(line, now_ms, rest, out);
        }
    }

    fn emit(&mut self, line: Line, malformed: bool, out: &mut Out) {
        self.emit_capped(line, malformed, u64::MAX, out);
    }

    /// Emits `line` with a resume offset of at most `cap`.
    fn emit_capped(&mut self, line: Line, malformed: bool, cap: u64, out: &mut Out) {
        out.lines += 1;
        out.truncated += line.truncated as u64;
        if line.invalid_utf8 {
            out.invalid_utf8 += 1;
            let w = self.warned.get_or_insert_default();
            w.invalid_utf8_unlogged += 1;
            if w.invalid_utf8_logged_at.is_none_or(|t| t.elapsed() >= MALFORMED_LOG_EVERY) {
                tracing::warn!(
                    path = %self.path.display(), offset = line.start, error = "invalid UTF-8",
                    lines = w.invalid_utf8_unlogged,
                    "replaced bytes that are not UTF-8 with U+FFFD in log lines (at most one warning per file per minute)"
                );
                w.invalid_utf8_unlogged = 0;
                w.invalid_utf8_logged_at = Some(Instant::now());
            }
        }
        out.message_bytes += line.message.len();
        let resume = self.resume().min(cap);
        // One `Arc<Source>` per file *per batch*: the sink drops a batch's references on its
        // thread while this thread takes references for the next batch; with a single shared
        // Arc both would hammer one reference count across cores (a cache-line transfer per
        // event). Cloning the few metadata strings once per batch is cheaper. The first event
        // of a file in a batch takes the file's own `Arc` (one count change per batch on
        // each side is no contention); the copy is made at its second: a batch of the first
        // lines of 10,000 files held 10,000 copies (~3 MB) for nothing.
        let source = match &self.batch_source {
            Some((generation, s)) if *generation == out.generation && !Arc::ptr_eq(s, &self.source) => s.clone(),
            Some((generation, _)) if *generation == out.generation => {
                let s = Arc::new((*self.source).clone());
                self.batch_source = Some((out.generation, s.clone()));
                s
            }
            _ => {
                self.batch_source = Some((out.generation, self.source.clone()));
                self.source.clone()
            }
        };
        out.events.push(Event {
            timestamp: line.timestamp,
            stream: line.stream,
            message: line.message,
            malformed,
            truncated: line.truncated,
            source,
            origin: Origin { file: self.key, offset: line.start, resume },
            parsed: None,
        });
    }

    /// Seals a full batch after a line from `process` (one line emitted at a time, so every
    /// line before `resume()` is in the batch or still pending: safe to commit with it). The
    /// flush paths (`finish`, `flush_expired`, `drop_rest`) emit up to one line per stream and
    /// their position after the last; the tailer seals after them.
    fn seal_if_full(&mut self, out: &mut Out) {
        if out.full() {
            self.push_position(out);
            out.seal();
        }
    }

    /// Ships pending partial lines older than `timeout_ms` (through the multiline stage) and
    /// multiline groups opened `max_wait` ago. A group is kept past `max_wait` only while the
    /// file has unread bytes (they may continue it; the wait is then the backlog's, not the
    /// group's).
    pub fn flush_expired(&mut self, now_ms: u64, timeout_ms: u64, out: &mut Out) {
        if !self.assembling() {
            return;
        }
        let lines = self.asm().merger.take_expired(now_ms, timeout_ms);
        self.join_taken(lines, now_ms, out);
        if self.at_eof {
            let groups = self.asm().joiner.take_expired(now_ms);
            self.emit_taken(groups, out);
        }
        self.push_position(out);
    }

    /// Ships every pending partial (through the multiline stage), then every open group.
    fn flush_all(&mut self, now_ms: u64, out: &mut Out) {
        if self.asm.is_none() {
            return;
        }
        let lines = self.asm().merger.take_all();
        self.join_taken(lines, now_ms, out);
        let groups = self.asm().joiner.take_all();
        self.emit_taken(groups, out);
    }

    /// Emits groups taken out of the joiner (oldest first), each with a resume offset short
    /// of the groups after it.
    fn emit_taken(&mut self, groups: Vec<Line>, out: &mut Out) {
        let starts: Vec<u64> = groups.iter().map(|l| l.start).collect();
        for (k, line) in groups.into_iter().enumerate() {
            let rest = starts[k + 1..].iter().copied().min().unwrap_or(u64::MAX);
            self.emit_capped(line, false, rest, out);
        }
    }

    /// The file is done: ships pending partials and an unterminated last line, and gives the
    /// final position.
    pub fn finish(&mut self, now_ms: u64, out: &mut Out, m: &LogMetrics) {
        if !self.carry.is_empty() {
            let carry = std::mem::take(&mut self.carry);
            let cut = std::mem::take(&mut self.carry_cut);
            let start = self.consumed;
            self.line(&carry, cut, start, self.offset, now_ms, out, m);
        }
        self.consumed = self.offset;
        self.flush_all(now_ms, out);
        self.push_position(out);
    }

    /// Gives up on the rest of the file (deleted-file bound): pending partials are shipped,
    /// unread bytes skipped. Returns the bytes dropped.
    pub fn drop_rest(&mut self, out: &mut Out) -> u64 {
        let dropped = self.size.saturating_sub(self.offset) + self.carry.len() as u64;
        self.carry.clear();
        self.carry_cut = false;
        self.offset = self.offset.max(self.size);
        self.consumed = self.offset;
        self.flush_all(0, out);
        self.push_position(out);
        dropped
    }

    /// `fstat` of the open file: size and link count (0 once deleted). `None` for gz bodies.
    pub fn stat(&self) -> Option<io::Result<(u64, u64)>> {
        match &self.body {
            Body::Plain(f) => Some(f.metadata().map(|md| (md.len(), md.nlink()))),
            Body::Gz(_) => None,
        }
    }

    /// One look at the file on disk: `fstat`, then (plain, not deleted) one read of its head,
    /// which both checks for a truncation (`truncation_seen`) and grows a short fingerprint
    /// (`refresh_fingerprint`, reported in `Look::fp_grew`). Two system calls where the
    /// separate checks took five; `None` for gz bodies.
    pub fn look(&mut self) -> Option<io::Result<Look>> {
        let Body::Plain(f) = &self.body else { return None };
        let md = match f.metadata() {
            Ok(md) => md,
            Err(error) => return Some(Err(error)),
        };
        let mut look = Look { size: md.len(), nlink: md.nlink(), truncated: false, fp_grew: false };
        if matches!(self.state, State::Deleted { .. }) {
            return Some(Ok(look));
        }
        if look.size < self.offset {
            look.truncated = true;
            return Some(Ok(look));
        }
        let mut head = [0u8; super::identity::FINGERPRINT_BYTES];
        let want = if self.fp.complete() { self.fp.len as usize } else { head.len() };
        let mut n = 0;
        while n < want {
            match f.read_at(&mut head[n..want], n as u64) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        if n < self.fp.len as usize || !self.fp.matches(&head[..self.fp.len as usize]) {
            look.truncated = true;
        } else if n > self.fp.len as usize {
            self.fp = Fingerprint::of_bytes(&head[..n]);
            look.fp_grew = true;
        }
        Some(Ok(look))
    }

    /// Whether the plain file was truncated since it was last read: it is shorter than the
    /// read offset, or (truncated and written again past the offset before this look) its
    /// first bytes are no longer those fingerprinted. One `fstat` and one read of at most
    /// `FINGERPRINT_BYTES`.
    pub fn truncation_seen(&self) -> bool {
        let Body::Plain(f) = &self.body else { return false };
        if matches!(self.state, State::Deleted { .. }) {
            return false;
        }
        match f.metadata() {
            Ok(md) if md.len() < self.offset => true,
            Ok(_) => !head_matches(f, self.fp),
            Err(_) => false,
        }
    }

    /// The file was truncated in place and its old content is gone: partial state is
    /// shipped, and reading restarts at 0 under `key` (a new generation: the old key's
    /// offsets named other lines).
    pub fn truncated(&mut self, key: u64, now_ms: u64, out: &mut Out, m: &LogMetrics) {
        self.finish(now_ms, out, m);
        self.key = key;
        self.batch_source = None;
        self.offset = 0;
        self.consumed = 0;
        self.carry.clear();
        self.carry_cut = false;
        self.format = None;
        self.asm = None;
        self.last_position = u64::MAX;
        self.size = 0;
        self.push_position(out);
        self.fp = Fingerprint::default();
        self.refresh_fingerprint();
    }

    /// The file was truncated after a copy of it was made (copytruncate): this content goes
    /// on in `copy` (`id`; gzip-compressed when `gz`) at the same offset, with the unfinished
    /// line and pending partials kept, and is finished there as a file rotated away. Returns
    /// the descriptor of the truncated file, which now holds new content.
    pub fn continue_in_copy(&mut self, copy: File, id: FileId, gz: bool) -> io::Result<File> {
        let body = if gz {
            let mut dec = flate2::read::GzDecoder::new(io::BufReader::new(copy));
            let skipped = io::copy(&mut (&mut dec).take(self.offset), &mut io::sink())?;
            if skipped < self.offset {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the copy is shorter than the read offset"));
            }
            self.size = 0;
            Body::Gz(Box::new(dec))
        } else {
            let len = copy.metadata()?.len();
            if len < self.offset {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the copy is shorter than the read offset"));
            }
            self.size = len;
            Body::Plain(copy)
        };
        let Body::Plain(live) = std::mem::replace(&mut self.body, body) else {
            unreachable!("only a plain file is truncated")
        };
        self.id = id;
        self.state = State::Moved { replaced: true };
        self.at_eof = false;
        Ok(live)
    }

    /// Refreshes the fingerprint while the file is shorter than the fingerprint length. Only
    /// a longer head that starts with the fingerprinted bytes counts: a different head is a
    /// truncation (`truncation_seen`), not growth.
    pub fn refresh_fingerprint(&mut self) -> bool {
        if let Body::Plain(f) = &self.body
            && !self.fp.complete()
        {
            let mut head = [0u8; super::identity::FINGERPRINT_BYTES];
            let mut n = 0;
            while n < head.len() {
                match f.read_at(&mut head[n..], n as u64) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            if n > self.fp.len as usize && self.fp.matches(&head[..n]) {
                self.fp = Fingerprint::of_bytes(&head[..n]);
                return true;
            }
        }
        false
    }
}

/// What `FileTail::look` saw.
#[derive(Debug, Clone, Copy)]
pub struct Look {
    pub size: u64,
    /// Link count: 0 once the file is deleted.
    pub nlink: u64,
    /// Shorter than the read offset, or its head is no longer the fingerprinted bytes.
    pub truncated: bool,
    /// The fingerprint was short and now covers more of the head (the registry wants it).
    pub fp_grew: bool,
}

/// Whether `f` still starts with the bytes `fp` was taken over (true for an empty `fp`).
fn head_matches(f: &File, fp: Fingerprint) -> bool {
    let mut head = [0u8; super::identity::FINGERPRINT_BYTES];
    let want = &mut head[..fp.len as usize];
    f.read_exact_at(want, 0).is_ok() && fp.matches(want)
}

/// The wall clock in UTC nanoseconds (for malformed lines, which carry no timestamp).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
