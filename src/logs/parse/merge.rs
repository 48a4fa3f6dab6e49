//! Partial-line merge: consecutive partial records of the *same stream* are joined (no
//! separator) up to and including the next complete record. stdout and stderr interleave in
//! one file, so each stream has its own buffer. The merged line takes the first piece's
//! timestamp (docker stamps every piece with it; for CRI it is when the line began).
//!
//! Pieces are joined as bytes and the whole line is decoded once: the runtimes cut pieces at a
//! byte count, so a character split between two pieces is whole again here. Bytes that are
//! still not UTF-8 are replaced with U+FFFD (`Line::invalid_utf8`); the line keeps its own
//! timestamp and stream. A line longer than `max` keeps its first `max` bytes, less a
//! character cut at the limit, so the text is valid UTF-8 and never longer than `max`.
//!
//! Pure: the caller supplies a monotonic "now" in milliseconds for the flush timeout, and the
//! byte offsets of records, which the merge reports back so the tailer can keep the resume
//! offset behind any pending piece.

use super::{Record, decode, is_ascii, trim_partial_utf8};
use crate::event::Stream;

/// A whole line out of the merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub timestamp: i64,
    pub stream: Stream,
    pub message: String,
    /// Longer than the limit: the message holds its first `max` bytes.
    pub truncated: bool,
    /// Some bytes were not UTF-8 and were replaced with U+FFFD.
    pub invalid_utf8: bool,
    /// Byte offset of the line's first record in the file.
    pub start: u64,
}

/// A line still waiting for its last piece: its bytes so far (at most `max`).
#[derive(Debug)]
struct Pending {
    timestamp: i64,
    bytes: Vec<u8>,
    truncated: bool,
    start: u64,
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

const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

impl Merger {
    /// `max`: the longest message kept (bytes); longer lines are cut and flagged.
    pub fn new(max: usize) -> Self {
        Self { max, pending: [None, None] }
    }

    /// Feeds one record that starts at byte `start`; returns the line it completes, if any.
    /// `cut`: the parser already cut this record's message.
    pub fn push(&mut self, rec: Record, cut: bool, start: u64, now_ms: u64) -> Option<Line> {
        let max = self.max;
        let slot = &mut self.pending[idx(rec.stream)];
        match slot {
            Some(p) => {
                if !p.truncated {
                    let room = max.saturating_sub(p.bytes.len());
                    if rec.message.len() > room {
                        p.bytes.extend_from_slice(&rec.message[..room]);
                        p.truncated = true;
                    } else {
                        p.bytes.extend_from_slice(&rec.message);
                    }
                }
                // Once cut, the rest of the line is dropped, never appended.
                p.truncated |= cut;
                if rec.partial {
                    return None;
                }
                let p = slot.take()?;
                Some(finish(p.timestamp, rec.stream, p.bytes, p.truncated, p.start, max))
            }
            None => {
                let mut bytes = rec.message;
                let mut truncated = cut;
                if bytes.len() > max {
                    bytes.truncate(max);
                    truncated = true;
                }
                if rec.partial {
                    *slot = Some(Pending { timestamp: rec.timestamp, bytes, truncated, start, since_ms: now_ms });
                    None
                } else {
                    Some(finish(rec.timestamp, rec.stream, bytes, truncated, start, max))
                }
            }
        }
    }

    /// The smallest start offset of a pending piece: reading must resume there or earlier.
    pub fn pending_start(&self) -> Option<u64> {
        self.pending.iter().flatten().map(|p| p.start).min()
    }

    pub fn has_pending(&self) -> bool {
        self.pending.iter().any(Option::is_some)
    }

    /// Takes the pending lines older than `timeout_ms` (a container that exited mid-line
    /// writes a final partial and nothing more), oldest piece first.
    pub fn take_expired(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<Line> {
        let mut out = Vec::new();
        for (slot, stream) in self.pending.iter_mut().zip(STREAMS) {
            if slot.as_ref().is_some_and(|p| now_ms.saturating_sub(p.since_ms) >= timeout_ms) {
                out.extend(slot.take().map(|p| finish(p.timestamp, stream, p.bytes, p.truncated, p.start, self.max)));
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

/// Decodes a whole line's bytes (at most `max`). A line cut at the limit loses the character
/// the cut split (its first bytes are not text); other bytes that are not UTF-8 become U+FFFD.
fn finish(timestamp: i64, stream: Stream, mut bytes: Vec<u8>, truncated: bool, start: u64, max: usize) -> Line {
    if truncated {
        let keep = trim_partial_utf8(&bytes).len();
        bytes.truncate(keep);
    }
    // The common case: ASCII (checked 64 bytes a step, about twice as fast as `from_utf8`'s
    // own ASCII path on 160-byte lines), else valid UTF-8; checked once, no copy.
    if is_ascii(&bytes) {
        // SAFETY: ASCII is valid UTF-8.
        let message = unsafe { String::from_utf8_unchecked(bytes) };
        return Line { timestamp, stream, message, truncated, invalid_utf8: false, start };
    }
    let (message, truncated, invalid_utf8) = match String::from_utf8(bytes) {
        Ok(message) => (message, truncated, false),
        Err(e) => {
            let (message, truncated) = decode(e.as_bytes(), max, truncated);
            (message, truncated, true)
        }
    };
    Line { timestamp, stream, message, truncated, invalid_utf8, start }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(stream: Stream, partial: bool, msg: impl AsRef<[u8]>, ts: i64) -> Record {
        Record { timestamp: ts, stream, partial, message: msg.as_ref().to_vec() }
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

    /// Regression: pieces were checked as UTF-8 one by one, so a character cut between two
    /// pieces made both malformed. Now the bytes are joined first.
    #[test]
    fn character_split_between_pieces_is_whole_again() {
        let line = "日本語のテキスト".repeat(10);
        let b = line.as_bytes();
        let mut m = Merger::new(1 << 20);
        assert_eq!(m.push(rec(Stream::Stderr, true, &b[..7], 11), false, 0, 0), None);
        assert_eq!(m.push(rec(Stream::Stderr, true, &b[7..50], 12), false, 10, 0), None);
        let l = m.push(rec(Stream::Stderr, false, &b[50..], 13), false, 20, 0).unwrap();
        assert_eq!(
            l,
            Line {
                timestamp: 11,
                stream: Stream::Stderr,
                message: line,
                truncated: false,
                invalid_utf8: false,
                start: 0
            }
        );
    }

    #[test]
    fn invalid_bytes_are_replaced_and_the_line_keeps_its_timestamp_and_stream() {
        let mut m = Merger::new(1024);
        let l = m.push(rec(Stream::Stderr, false, b"a\xffb\xe3\x81", 42), false, 7, 0).unwrap();
        assert_eq!((l.message.as_str(), l.timestamp, l.stream, l.start), ("a\u{fffd}b\u{fffd}", 42, Stream::Stderr, 7));
        assert!(l.invalid_utf8 && !l.truncated);
        // A trailing partial that ends inside a character (the container exited mid-write).
        m.push(rec(Stream::Stdout, true, &"x\u{e9}".as_bytes()[..2], 1), false, 9, 0);
        let l = m.take_all().pop().unwrap();
        assert_eq!((l.message.as_str(), l.invalid_utf8), ("x\u{fffd}", true));
    }

    /// A cut at `max` never leaves half a character, and replacements never grow the text past
    /// `max` (each invalid byte becomes 3 bytes).
    #[test]
    fn truncation_is_valid_utf8_within_max() {
        let mut m = Merger::new(10);
        m.push(rec(Stream::Stdout, true, "ab日本", 0), false, 0, 0);
        let l = m.push(rec(Stream::Stdout, false, "語", 0), false, 1, 0).unwrap();
        assert_eq!((l.message.as_str(), l.truncated, l.invalid_utf8), ("ab日本", true, false));
        let l = m.push(rec(Stream::Stdout, false, [0xffu8; 10], 0), false, 2, 0).unwrap();
        assert_eq!((l.message.as_str(), l.truncated), ("\u{fffd}\u{fffd}\u{fffd}", true));
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
        /// Whatever the split (inside characters too), merging the pieces gives back the lines,
        /// per stream, in order.
        #[test]
        fn pieces_merge_back(lines in proptest::collection::vec((".{0,30}", any::<bool>(), 1usize..5), 0..20)) {
            let mut m = Merger::new(usize::MAX);
            let mut out = Vec::new();
            let mut off = 0;
            for (line, stderr, pieces) in &lines {
                let stream = if *stderr { Stream::Stderr } else { Stream::Stdout };
                let step = line.len().div_ceil(*pieces).max(1);
                let chunks: Vec<&[u8]> = if line.is_empty() { vec![b""] } else { line.as_bytes().chunks(step).collect() };
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
