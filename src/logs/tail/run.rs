//! The tail loop: one thread reads the files round-robin in budgeted slices, builds batches
//! and hands them to the pipeline, waiting for room on its own current-thread runtime.
//!
//! Invariant: the loop never blocks on the pipeline while upkeep is due: a full pipeline stops
//! reading, never discovery, polling or the deleted-file bounds; and a batch, once sealed, is
//! handed over whole and in order (the oldest sealed batch first).
//!
//! Polling: inotify (a hint, never the truth) names the live files written since the last poll;
//! each `poll_interval` those, every file no hint covers (held files, files seen only through
//! a symlink) and partial-line timeouts are looked at, and every `FULL_POLL_EVERY` polls every
//! file is (fstat, head, read), which catches whatever inotify missed. Without inotify, or
//! after its queue overflowed, every poll is a full one. Rejected: looking at every open file
//! every 250 ms (an fstat and a 256-byte head read each, 1.6% of a core for 1,000 idle files).

use super::file::State;
use super::{BATCH_LINGER, MIN_RESCAN_GAP, Tailer, update_fp};
use crate::logs::discover::{self, Wake};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Instant;
use tokio::sync::mpsc;

impl Tailer {
    /// Runs until stopped. Dropping `self` closes the source channel.
    ///
    /// While the pipeline is full, nothing is read, but the loop goes on: rescans open new
    /// files, rotations and deletions are noticed and descriptors are held, so a
    /// file created and rotated away during a sink outage is still read once the sinks are back.
    pub fn run(mut self) {
        loop {
            if self.stop.is_set() {
                break;
            }
            let (rescan, stop) = discover::drain(&self.wake_rx, &mut self.dirty);
            if stop {
                break;
            }
            self.rescan_wanted |= rescan;
            let mut full = false;
            if self.watcher.overflow.swap(false, Ordering::Relaxed) {
                self.rescan_wanted = true;
                full = true;
            }
            let now = Instant::now();
            if now >= self.next_rescan || (self.rescan_wanted && now >= self.last_rescan + MIN_RESCAN_GAP) {
                self.rescan();
            }
            for p in std::mem::take(&mut self.dirty) {
                if let Some(&i) = self.by_path.get(p.as_path()) {
                    self.files[i].at_eof = false;
                    self.files[i].touched = true;
                }
            }
            let now = Instant::now();
            let poll = now >= self.next_poll;
            // Without inotify every poll looks at every file; with it, only at the full poll.
            full |= poll && (self.watcher.failed || now >= self.next_full_poll);
            if poll && !full {
                // inotify names the live files written since the last poll (`touched`); the
                // others that no hint covers are read at every poll.
                for f in self.files.iter_mut().filter(|f| f.poll || !matches!(f.state, State::Live)) {
                    f.at_eof = false;
                }
            }
            let Some(backlog) = self.push() else { break };
            // Pushed back: read nothing more until the pipeline takes what is sealed.
            let progressed = !backlog && self.round(full);
            if poll || full {
                self.maintain(full);
                let now = Instant::now();
                self.next_poll = now + self.s.poll_interval;
                if full {
                    self.next_full_poll = now + self.s.poll_interval.saturating_mul(self.s.full_poll_every);
                }
            }
            let hot = !backlog && self.files.iter().any(|f| !f.at_eof && !f.blocked);
            if !hot || self.last_send.elapsed() >= BATCH_LINGER {
                self.last_send = Instant::now();
                self.out.seal();
            }
            let Some(backlog) = self.push() else { break };
            if self.watch_deferred {
                self.start_watching();
                continue;
            }
            if backlog {
                if !self.wait_for_room() {
                    break;
                }
            } else if !progressed && !hot {
                self.wait();
            }
        }
        tracing::debug!("log tailer stopped");
    }

    /// When the next rescan or poll is due.
    pub(super) fn next_due(&self) -> Instant {
        let mut until = self.next_poll.min(self.next_rescan);
        if self.rescan_wanted {
            until = until.min(self.last_rescan + MIN_RESCAN_GAP);
        }
        until
    }

    pub(super) fn wait(&mut self) {
        let timeout = self.next_due().saturating_duration_since(Instant::now());
        if timeout.is_zero() {
            return;
        }
        match self.wake_rx.recv_timeout(timeout) {
            Ok(Wake::Rescan) => self.rescan_wanted = true,
            Ok(Wake::Data(p)) => self.dirty.push(p),
            Ok(Wake::Stop) => self.stop.set(),
            Err(RecvTimeoutError::Timeout) => {}
            // The watcher is gone (fallback): sleep instead of spinning.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(timeout),
        }
    }

    /// One round-robin pass. `full`: every file, else only files not known to be at EOF.
    /// Returns whether anything was read. Ends early once a batch is sealed and the pipeline
    /// has no room for it.
    pub(super) fn round(&mut self, full: bool) -> bool {
        let n = self.files.len();
        if n == 0 {
            return false;
        }
        // Per path, the oldest file that is no longer live: it is read to its end first.
        let mut oldest_gone: HashMap<Arc<Path>, u64> = HashMap::new();
        for f in self.files.iter().filter(|f| !matches!(f.state, State::Live)) {
            let o = oldest_gone.entry(f.path.clone()).or_insert(f.order);
            *o = (*o).min(f.order);
        }
        let mut progressed = false;
        self.pass += 1;
        let start = self.cursor % n;
        self.cursor = self.cursor.wrapping_add(1);
        for j in 0..n {
            let i = (start + j) % n;
            let f = &mut self.files[i];
            // An older (rotated) file with this path is still being drained: keep order.
            f.blocked = oldest_gone.get(&f.path).is_some_and(|&o| matches!(f.state, State::Live) || o < f.order);
            if f.blocked || (!full && f.at_eof) {
                continue;
            }
            let now_ms = self.epoch.elapsed().as_millis() as u64;
            // Checked before every read: a file truncated and written again past the old
            // offset would otherwise be read on from the wrong place. The same look (one fstat,
            // one head read) serves this pass's upkeep, and a file with nothing new is not
            // read at all.
            if let Some(Ok(look)) = f.look() {
                f.looked = Some((self.pass, look));
                if look.fp_grew {
                    update_fp(&self.shared, f);
                }
                if look.truncated {
                    self.truncation(i, now_ms);
                    self.files[i].looked = None;
                } else if look.size == f.offset && !f.is_gz() {
                    f.at_eof = true;
                    continue;
                }
            }
            let f = &mut self.files[i];
            match f.read_slice(&mut self.buf, self.s.read_budget, now_ms, &mut self.out, &self.shared.metrics) {
                Ok(n) => {
                    if n > 0 {
                        progressed = true;
                        self.shared.metrics.read_bytes.inc_by(n as u64);
                        // A young file: fingerprint what is there now, so a checkpoint with
                        // an offset never carries a shorter fingerprint than it needs.
                        if !f.fp.complete() && f.refresh_fingerprint() {
                            update_fp(&self.shared, f);
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(path = %f.path.display(), %error, "read failed; closing the file");
                    self.shared.metrics.open_failures.inc();
                    f.at_eof = true;
                    f.state = State::Moved { replaced: true };
                }
            }
            if !self.out.ready.is_empty() && self.push() != Some(false) {
                // The files after this one keep their turn: the next round starts after it.
                self.cursor = i + 1;
                break;
            }
        }
        progressed
    }

    /// Hands sealed batches to the pipeline, oldest first, without waiting. `Some(true)` while
    /// some still wait for room, `None` when the pipeline is gone.
    pub(super) fn push(&mut self) -> Option<bool> {
        if !self.out.ready.is_empty() {
            // Before a sink can see them (tests read the counters once lines arrived).
            self.count_sent();
        }
        while let Some(batch) = self.out.ready.pop_front() {
            let permit = match self.tx.try_reserve() {
                Ok(permit) => permit,
                Err(mpsc::error::TrySendError::Full(())) => {
                    self.out.ready.push_front(batch);
                    return Some(true);
                }
                Err(mpsc::error::TrySendError::Closed(())) => return None,
            };
            permit.send(batch);
        }
        Some(false)
    }

    /// Flushes the counters of what was read to the metrics.
    pub(super) fn count_sent(&mut self) {
        let m = &self.shared.metrics;
        m.read_lines.inc_by(std::mem::take(&mut self.out.lines));
        m.lines_truncated.inc_by(std::mem::take(&mut self.out.truncated));
        m.parse_errors
            .with_label_values(&[crate::logs::parse::ParseError::Utf8.kind()])
            .inc_by(std::mem::take(&mut self.out.invalid_utf8));
    }

    /// Waits until the pipeline has room for the oldest sealed batch (and hands it over), a
    /// rescan or poll is due, or an inotify hint may be waiting (checked every
    /// `MIN_RESCAN_GAP`, as the hints come on a std channel). False when stopped.
    pub(super) fn wait_for_room(&mut self) -> bool {
        let until = self.next_due().min(Instant::now() + MIN_RESCAN_GAP);
        let timeout = until.saturating_duration_since(Instant::now());
        let Self { tx, stop, rt, out, .. } = self;
        let stopped = rt.block_on(async {
            tokio::select! {
                biased;
                _ = stop.notify.notified() => {
                    // Keep the wake-up for whoever waits next.
                    stop.notify.notify_one();
                    true
                }
                r = tx.reserve() => match r {
                    Ok(permit) => {
                        permit.send(out.ready.pop_front().expect("waiting with a batch sealed"));
                        false
                    }
                    Err(_) => true,
                },
                _ = tokio::time::sleep(timeout) => false,
            }
        });
        !stopped
    }

    /// Seals the batch being built and hands every sealed batch to the pipeline, waiting for
    /// room. False when stopped or the pipeline is gone.
    #[cfg(test)]
    pub(super) fn send(&mut self) -> bool {
        self.out.seal();
        loop {
            match self.push() {
                None => return false,
                Some(false) => return true,
                Some(true) if !self.wait_for_room() => return false,
                Some(true) => {}
            }
        }
    }
}
