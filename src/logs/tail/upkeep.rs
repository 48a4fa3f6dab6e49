//! Per-poll upkeep of the open files: truncation (with the copytruncate copy), deletion and
//! rotation endings, the deleted-file bounds, partial-line timeouts, lag and held-file gauges.
//!
//! Invariant: a file leaves the open set only here, and only when it is read to its end
//! (drained, or a finished `.gz`), or when a deleted-file bound drops its rest, which is then
//! counted (`vigil_deleted_*_dropped_total`) and logged; upkeep reads no data, so it runs
//! while the pipeline pushes back.

use super::file::{FileTail, Opened, State};
use super::forensics::{self, Truncated};
use super::{DropCause, Tailer, Tracked, update_fp};
use crate::logs::tail::identity::Fingerprint;
use std::time::Instant;

impl Tailer {
    /// Per-poll upkeep: truncation, deletion and rotation endings, partial-line timeouts, lag,
    /// held files. Runs while the pipeline pushes back, too: a held file's bounds are checked
    /// whether or not it can be read.
    /// `full`: every file is looked at (fstat, head); else only those inotify named
    /// (`touched`), those no hint covers (`poll`) and those no longer live. Partial-line
    /// timeouts and the close decisions are checked for every file either way.
    pub(super) fn maintain(&mut self, full: bool) {
        self.resolve_multiline();
        let now_ms = self.now_ms();
        // Truncation is looked for here too, not only before a read: while the pipeline has
        // no room nothing is read, and a file copytruncated twice before the next read would
        // have its middle generation only in a copy that logrotate then moves on (`.1` →
        // `.2.gz`). Looking costs no data read; the copy found is held open from now on.
        // Files added by `truncation` (at the end) are new content, not looked at again.
        // A file `round` looked at in this pass is not looked at again (one fstat and one
        // head read per file per poll, not five system calls).
        let pass = self.pass;
        for i in 0..self.files.len() {
            let f = &mut self.files[i];
            if !looked_at(f, full) || f.looked.is_some_and(|(p, _)| p == pass) {
                continue;
            }
            f.looked = None;
            if let Some(Ok(look)) = f.look() {
                f.looked = Some((pass, look));
                if look.fp_grew {
                    update_fp(&self.shared, f);
                }
                if look.truncated {
                    self.truncation(i, now_ms);
                    // The file now holds other content (or is the copy): looked at afresh below.
                    self.files[i].looked = None;
                }
            }
        }
        // (index, why its rest is dropped: None when it is done)
        let mut close: Vec<(usize, Option<DropCause>)> = Vec::new();
        let (mut lag, mut lag_max) = (0u64, 0u64);
        for (i, f) in self.files.iter_mut().enumerate() {
            let look = looked_at(f, full);
            f.touched = false;
            let fresh = f.looked.take().filter(|(p, _)| *p == pass).map(|(_, l)| Ok((l.size, l.nlink)));
            let stat = if fresh.is_some() {
                fresh
            } else if !look {
                None
            } else {
                let stat = f.stat();
                if f.refresh_fingerprint() {
                    update_fp(&self.shared, f);
                }
                stat
            };
            match stat {
                Some(Ok((size, nlink))) => {
                    // Truncation is handled above and before each read (`round`).
                    f.size = size;
                    if nlink == 0 && !matches!(f.state, State::Deleted { .. }) {
                        f.state = State::Deleted { since: Instant::now() };
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(path = %f.path.display(), %error, "fstat failed; closing the file");
                    close.push((i, None));
                    continue;
                }
                None => {}
            }
            f.flush_expired(now_ms, self.s.partial_timeout_ms, &mut self.out);
            if f.at_eof {
                f.release_idle(self.out.generation);
            }
            if self.out.full() {
                self.out.seal();
            }
            let unread = f.size.saturating_sub(f.offset);
            lag += unread;
            lag_max = lag_max.max(unread);
            let drained = f.at_eof && unread == 0 && !f.blocked;
            match f.state {
                State::Live => {}
                State::Moved { replaced } => {
                    if !f.blocked && f.is_gz() && f.at_eof
                        || drained && (replaced || f.last_data.elapsed() >= self.s.rotate_wait)
                    {
                        close.push((i, None));
                    }
                }
                State::Deleted { since } => {
                    if drained {
                        close.push((i, None));
                    } else if unread > self.s.deleted_max_unread {
                        close.push((i, Some(DropCause::MaxUnread)));
                    } else if since.elapsed() >= self.s.deleted_max_hold {
                        close.push((i, Some(DropCause::MaxHold)));
                    }
                }
            }
        }
        let m = &self.shared.metrics;
        m.lag_bytes.set(lag as i64);
        m.lag_max_bytes.set(lag_max as i64);
        for &(i, cause) in close.iter().rev() {
            let mut f = self.files.swap_remove(i);
            let m = &self.shared.metrics;
            if let Some(cause) = cause {
                // The size now, not at the last poll: the count is exact.
                if let Some(Ok((size, _))) = f.stat() {
                    f.size = f.size.max(size);
                }
                let bytes = f.drop_rest(&mut self.out);
                m.deleted_files_dropped.with_label_values(&[cause.label()]).inc();
                m.deleted_bytes_dropped.with_label_values(&[cause.label()]).inc_by(bytes);
                tracing::warn!(
                    path = %f.path.display(), bytes, cause = cause.label(),
                    "{}; closed it, its unread bytes are dropped", cause.reason()
                );
            } else {
                f.finish(now_ms, &mut self.out, m);
            }
            if self.out.full() {
                self.out.seal();
            }
            let mut reg = self.shared.registry();
            if matches!(f.state, State::Deleted { .. }) {
                // Gone for good: nothing could resume it, and its inode may be reused.
                reg.remove(&f.key);
            } else if let Some(t) = reg.get_mut(&f.key) {
                t.closed = Some(f.resume());
                // Until the next walk says otherwise, assume the globs may still find it.
                t.visible = true;
            }
            drop(reg);
            tracing::debug!(path = %f.path.display(), "closed log file");
        }
        if !close.is_empty() {
            self.reindex();
        }
        let m = &self.shared.metrics;
        m.files_tailed.set(self.files.len() as i64);
        let held = self.files.iter().filter(|f| !matches!(f.state, State::Live));
        let (files, bytes) = held.fold((0, 0), |(n, b), f| (n + 1, b + f.size.saturating_sub(f.offset)));
        m.held_files.set(files);
        m.held_bytes.set(bytes as i64);
    }

    pub(super) fn reindex(&mut self) {
        self.by_path.clear();
        for (i, f) in self.files.iter().enumerate() {
            if matches!(f.state, State::Live) {
                self.by_path.insert(f.path.clone(), i);
            }
        }
        self.shared.metrics.files_tailed.set(self.files.len() as i64);
    }

    /// `files[i]` was truncated. Its content so far is finished from the copy that a
    /// copytruncate made (found next to it by the fingerprint of its head, see `find_copy`):
    /// the lines written just before the truncation, not read yet, are only there. The new
    /// content is then read from 0 as a new generation (new key, so new `_id`s), after the
    /// copy (`order`). Without a copy, the unread rest of the old content is lost (counted).
    pub(super) fn truncation(&mut self, i: usize, now_ms: u64) {
        let shared = self.shared.clone();
        let m = &shared.metrics;
        m.truncations.inc();
        let (key, generation) = self.new_key(self.files[i].id);
        let t = &self.files[i];
        let truncated = Truncated { fp: t.fp, id: t.id, offset: t.offset };
        let copy = forensics::find_copy(&t.path, &truncated, |id| self.files.iter().any(|o| o.id == id));
        let f = &mut self.files[i];
        let (old_key, live_id, state) = (f.key, f.id, f.state);
        if let Some((path, file, id, gz)) = copy {
            match f.continue_in_copy(file, id, gz) {
                Ok(live) => {
                    tracing::info!(
                        path = %f.path.display(), copy = %path.display(), offset = f.offset,
                        "file truncated after a copy was made (copytruncate); reading the rest of the old content from the copy, then the file from the start"
                    );
                    m.truncation_copies_found.inc();
                    if let Some(t) = shared.registry().get_mut(&old_key) {
                        t.id = id;
                        t.copy = true;
                    }
                    let fp = Fingerprint::of_file(&live).unwrap_or_default();
                    let family = f.path.clone();
                    let o = Opened {
                        key,
                        id: live_id,
                        fp,
                        path: family.clone(),
                        source: f.source.clone(),
                        file: live,
                        offset: 0,
                        limits: self.s.limits,
                    };
                    let mut t = FileTail::plain(o);
                    t.state = state;
                    self.register(key, generation, &t, 0);
                    t.order = self.take_order();
                    self.files.push(Box::new(t));
                    self.reindex();
                    return;
                }
                Err(error) => tracing::warn!(
                    path = %path.display(), %error,
                    "cannot read the copy of a truncated file; the lines written before the truncation and not read yet are lost"
                ),
            }
        }
        m.truncation_copies_missing.inc();
        tracing::info!(
            path = %f.path.display(), offset = f.offset,
            "file truncated and no copy of it found (plain truncation); reading it again from the start"
        );
        f.truncated(key, now_ms, &mut self.out, m);
        f.at_eof = false;
        let mut reg = shared.registry();
        reg.remove(&old_key);
        reg.insert(
            key,
            Tracked {
                path: f.path.clone(),
                id: f.id,
                fp: f.fp,
                generation,
                base: 0,
                closed: None,
                visible: false,
                copy: false,
            },
        );
    }
}

/// Whether a poll looks at `f` on disk (see `Tailer::maintain`).
fn looked_at(f: &FileTail, full: bool) -> bool {
    full || f.touched || f.poll || !matches!(f.state, State::Live)
}
