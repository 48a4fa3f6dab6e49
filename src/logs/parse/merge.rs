//! Partial-line merge: consecutive partial records of the *same stream* are joined (no
//! separator) up to and including the next complete record. stdout and stderr interleave in
//! one file, so each stream has its own buffer. The merged line takes the first piece's
//! timestamp (docker stamps every piece with it; for CRI it is when the line began).
//!
//! Pure: the caller supplies a monotonic "now" in milliseconds for the flush timeout, and the
//! byte offsets of records, which the merge reports back so the tailer can keep the resume
//! offset behind any pending piece.

use super::{Record, truncate_utf8};
use crate::event::Stream;

/// A whole line out of the merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub timestamp: i64,
    pub stream: Stream,
    pub message: String,
    /// Longer than the limit: the message holds its first `max` bytes.
    pub truncated: bool,
    /// Byte offset of the line's first record in the file.
    pub start: u64,
}

#[derive(Debug)]
struct Pending {
    line: Line,
    since_ms: u64,
}

/// Per-file merge state.
#[derive(Debug)]
pub struct Merger {
    max: usize,
    pending: [Option<Pending>; 2],
}

fn idx(s: Stream) -> usize {
    match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl Merger {
    /// `max`: the longest message kept (bytes); longer lines are cut and flagged.
    pub fn new(max: usize) -> Self {
        Self { max, pending: [None, None] }
    }

    /// Feeds one record that starts at byte `start`; returns the line it completes, if any.
    /// `cut`: the parser already cut this record's message.
    pub fn push(&mut self, rec: Record, cut: bool, start: u64, now_ms: u64) -> Option<Line> {
        let slot = &mut self.pending[idx(rec.stream)];
        match slot {
            Some(p) => {
                let room = self.max.saturating_sub(p.line.message.len());
                if p.line.truncated {
                    // Already cut: the rest of the line is dropped, never appended.
                } else if rec.message.len() > room {
                    p.line.message.push_str(&rec.message[..floor_boundary(&rec.message, room)]);
                    p.line.truncated = true;
                } else {
                    p.line.message.push_str(&rec.message);
                }
                p.line.truncated |= cut;
                if rec.partial { None } else { slot.take().map(|p| p.line) }
            }
            None => {
                let mut message = rec.message;
                let mut truncated = cut;
                if message.len() > self.max {
                    truncate_utf8(&mut message, self.max);
                    truncated = true;
                }
                let line = Line { timestamp: rec.timestamp, stream: rec.stream, message, truncated, start };
                if rec.partial {
                    *slot = Some(Pending { line, since_ms: now_ms });
                    None
                } else {
                    Some(line)
                }
            }
        }
    }

    /// The smallest start offset of a pending piece: reading must resume there or earlier.
    pub fn pending_start(&self) -> Option<u64> {
        self.pending.iter().flatten().map(|p| p.line.start).min()
    }

    pub fn has_pending(&self) -> bool {
        self.pending.iter().any(Option::is_some)
    }

    /// Takes the pending lines older than `timeout_ms` (a container that exited mid-line
    /// writes a final partial and nothing more), oldest piece first.
    pub fn take_expired(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<Line> {
        let mut out = Vec::new();
        for slot in &mut self.pending {
            if slot.as_ref().is_some_and(|p| now_ms.saturating_sub(p.since_ms) >= timeout_ms) {
                out.extend(slot.take().map(|p| p.line));
            }
        }
        out.sort_by_key(|l| l.start);
        out
    }

    /// Takes every pending line (the file is finished), oldest piece first.
    pub fn take_all(&mut self) -> Vec<Line> {
        self.take_expired(u64::MAX, 0)
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(stream: Stream, partial: bool, msg: &str, ts: i64) -> Record {
        Record { timestamp: ts, stream, partial, message: msg.into() }
    }

    #[test]
    fn merges_per_stream() {
        let mut m = Merger::new(1024);
        assert_eq!(m.push(rec(Stream::Stdout, true, "a", 1), false, 0, 0), None);
        assert_eq!(m.push(rec(Stream::Stderr, true, "x", 2), false, 10, 0), None);
        assert_eq!(m.pending_start(), Some(0));
        let l = m.push(rec(Stream::Stdout, false, "b", 3), false, 20, 0).unwrap();
        assert_eq!((l.message.as_str(), l.timestamp, l.start, l.truncated), ("ab", 1, 0, false));
        assert_eq!(m.pending_start(), Some(10));
        let l = m.push(rec(Stream::Stderr, false, "y", 4), false, 30, 0).unwrap();
        assert_eq!((l.message.as_str(), l.stream, l.start), ("xy", Stream::Stderr, 10));
        assert_eq!(m.pending_start(), None);
    }

    #[test]
    fn truncates_without_growing() {
        let mut m = Merger::new(5);
        for i in 0..100 {
            assert!(m.push(rec(Stream::Stdout, true, "éé", 0), false, i, 0).is_none());
        }
        let l = m.push(rec(Stream::Stdout, false, "end", 0), false, 100, 0).unwrap();
        assert_eq!(l.message, "éé");
        assert!(l.truncated);
        let l = m.push(rec(Stream::Stdout, false, "123456", 0), false, 101, 0).unwrap();
        assert_eq!((l.message.as_str(), l.truncated), ("12345", true));
    }

    #[test]
    fn trailing_partial_flushes_after_timeout() {
        let mut m = Merger::new(100);
        m.push(rec(Stream::Stdout, true, "exited mid-line", 7), false, 40, 1000);
        assert!(m.take_expired(1500, 1000).is_empty());
        let out = m.take_expired(2000, 1000);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].message, "exited mid-line");
        assert!(!m.has_pending());
    }

    proptest! {
        /// Whatever the split, merging the pieces gives back the lines, per stream, in order.
        #[test]
        fn pieces_merge_back(lines in proptest::collection::vec(("[a-z]{0,30}", any::<bool>(), 1usize..5), 0..20)) {
            let mut m = Merger::new(usize::MAX);
            let mut out = Vec::new();
            let mut off = 0;
            for (line, stderr, pieces) in &lines {
                let stream = if *stderr { Stream::Stderr } else { Stream::Stdout };
                let step = line.len().div_ceil(*pieces).max(1);
                let chunks: Vec<&str> = if line.is_empty() { vec![""] } else { line.as_bytes().chunks(step).map(|c| std::str::from_utf8(c).unwrap()).collect() };
                for (i, c) in chunks.iter().enumerate() {
                    off += 1;
                    out.extend(m.push(rec(stream, i + 1 < chunks.len(), c, 0), false, off, 0));
                }
            }
            let got: Vec<&str> = out.iter().map(|l| l.message.as_str()).collect();
            let want: Vec<&str> = lines.iter().map(|(l, _, _)| l.as_str()).collect();
            prop_assert_eq!(got, want);
        }
    }
}
