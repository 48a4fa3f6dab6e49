//! Parsing: pure functions from one raw log record (the bytes of one line, without its `\n`) to
//! a `Record`, and the partial-line merge that turns records into lines. No I/O, no clock: the
//! caller passes "now" where a malformed line needs a timestamp.
//!
//! Key decision: hand-written fast paths for the two formats that real runtimes write (CRI's
//! `TS STREAM TAG MSG`, docker's `{"log":…,"stream":…,"time":…}` in that key order) and a
//! general fallback only when the fast path does not apply (docker records with `attrs` or
//! reordered keys go through serde_json). Rejected: serde_json for every docker line (about 3x
//! slower on the hot path) and chrono for every timestamp (RFC 3339 here has one layout; a
//! dozen integer operations parse it).
//!
//! Merge first, then decode: a record's message is bytes, and UTF-8 is checked once, on the
//! whole merged line (`merge`). The runtimes split long lines at a byte count (containerd's
//! 16 KiB, conmon's reads, docker's 16 KiB copier), so a piece can end inside a character;
//! checking pieces would reject lines that are fine. Bytes that are not UTF-8 in a well-formed
//! record are replaced with U+FFFD and the record keeps its timestamp and stream. Only a
//! record whose framing is broken (no CRI header, not JSON, bad timestamp) is a `ParseError`
//! and is shipped raw as `malformed`.

pub mod cri;
pub mod docker;
pub mod merge;
pub mod recycle;
pub mod time;

use crate::event::Stream;

/// The log format of a file, detected from its first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Cri,
    Docker,
}

impl Format {
    /// A docker json-file record starts with `{`; a CRI record with a digit (its timestamp).
    pub fn detect(first_line: &[u8]) -> Format {
        match first_line.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Format::Docker,
            _ => Format::Cri,
        }
    }
}

/// Why a line could not be parsed (its framing is broken: it is shipped raw, `malformed`); the
/// label of `vigil_parse_errors_total{kind}`. `Utf8` is the exception: a well-formed line whose
/// invalid bytes were replaced with U+FFFD is counted under it but is not malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not `TIMESTAMP STREAM TAG MESSAGE`.
    CriFormat,
    /// The timestamp is not RFC 3339.
    Timestamp,
    /// Not a docker json-file object.
    Json,
    /// The merged message was not valid UTF-8; the bad bytes were replaced (never returned by
    /// `parse`, only counted).
    Utf8,
}

impl ParseError {
    pub const ALL: [ParseError; 4] = [ParseError::CriFormat, ParseError::Timestamp, ParseError::Json, ParseError::Utf8];

    pub fn kind(self) -> &'static str {
        match self {
            ParseError::CriFormat => "cri_format",
            ParseError::Timestamp => "timestamp",
            ParseError::Json => "json",
            ParseError::Utf8 => "utf8",
        }
    }
}

/// One parsed record: a whole line or a piece of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// UTC nanoseconds.
    pub timestamp: i64,
    pub stream: Stream,
    /// More pieces of the same line follow (CRI `P`, docker `log` without a trailing `\n`).
    pub partial: bool,
    /// The message's bytes, not yet checked as UTF-8: a piece can end inside a character, so
    /// the check waits for the whole line (`merge`).
    pub message: Vec<u8>,
}

/// Parses one raw line in `format`. `max_message` caps the message (in bytes; the cut may split
/// a character, which `merge` drops); the returned flag says whether it was cut.
pub fn parse(format: Format, line: &[u8], max_message: usize) -> Result<(Record, bool), ParseError> {
    match format {
        Format::Cri => cri::parse(line, max_message),
        Format::Docker => docker::parse(line, max_message),
    }
}

/// The raw text of a malformed line as a message: invalid UTF-8 replaced, cut at `max` bytes.
pub fn raw_message(line: &[u8], max: usize) -> (String, bool) {
    let cut = line.len() > max;
    let line = if cut { trim_partial_utf8(&line[..max]) } else { line };
    decode(line, max, cut)
}

/// A line's bytes as text: invalid UTF-8 replaced with U+FFFD, at most `max` bytes (a
/// replacement is 3 bytes, so replacing can grow the text past `max`; it is then cut again).
/// Returns the text and whether it was cut (`cut` passed in, or cut here).
pub(crate) fn decode(bytes: &[u8], max: usize, cut: bool) -> (String, bool) {
    let mut s = String::from_utf8_lossy(bytes).into_owned();
    let cut = cut || s.len() > max;
    truncate_utf8(&mut s, max);
    (s, cut)
}

/// Cuts `s` to at most `max` bytes at a char boundary.
pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut i = max;
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        s.truncate(i);
    }
}

/// Whether every byte of `b` is ASCII. SSE2 (part of every x86_64 CPU) ORs 64 bytes per step
/// and tests the high bits once; elsewhere std's check.
pub(crate) fn is_ascii(b: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_setzero_si128};
        let mut i = 0;
        // SAFETY: SSE2 is in the x86_64 baseline; every unaligned 16-byte load reads inside
        // `b` (`i + 64 <= len`, then `i + 16 <= len`).
        let high = unsafe {
            let p = b.as_ptr();
            let mut acc = _mm_setzero_si128();
            while i + 64 <= b.len() {
                let q = p.add(i).cast::<__m128i>();
                let x = _mm_or_si128(_mm_loadu_si128(q), _mm_loadu_si128(q.add(1)));
                let y = _mm_or_si128(_mm_loadu_si128(q.add(2)), _mm_loadu_si128(q.add(3)));
                acc = _mm_or_si128(acc, _mm_or_si128(x, y));
                i += 64;
            }
            while i + 16 <= b.len() {
                acc = _mm_or_si128(acc, _mm_loadu_si128(p.add(i).cast::<__m128i>()));
                i += 16;
            }
            _mm_movemask_epi8(acc) != 0
        };
        !high && b[i..].is_ascii()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        b.is_ascii()
    }
}

/// `b` without a trailing incomplete UTF-8 sequence (left by cutting bytes at a fixed size).
pub fn trim_partial_utf8(b: &[u8]) -> &[u8] {
    let n = b.len();
    for back in 1..=n.min(4) {
        let c = b[n - back];
        if c & 0xC0 != 0x80 {
            let need = match c {
                0xF0..=0xF7 => 4,
                0xE0..=0xEF => 3,
                0xC0..=0xDF => 2,
                _ => 1,
            };
            return if need > back { &b[..n - back] } else { b };
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect() {
        assert_eq!(Format::detect(b"{\"log\":\"x\"}"), Format::Docker);
        assert_eq!(Format::detect(b"2024-01-01T00:00:00Z stdout F x"), Format::Cri);
        assert_eq!(Format::detect(b""), Format::Cri);
    }

    #[test]
    fn trim_partial_utf8_drops_only_a_cut_sequence() {
        let s = "aé€😀".as_bytes();
        assert_eq!(trim_partial_utf8(s), s);
        for cut in 0..s.len() {
            let t = trim_partial_utf8(&s[..cut]);
            assert!(std::str::from_utf8(t).is_ok(), "cut {cut}");
            assert!(cut - t.len() < 4);
        }
        assert_eq!(trim_partial_utf8(b"ab\xff"), b"ab\xff", "garbage is not a cut sequence");
    }

    proptest::proptest! {
        /// The 64- and 16-byte steps and the tail agree with std at every length and offset.
        #[test]
        fn is_ascii_agrees_with_std(mut b in proptest::collection::vec(0u8..0x80, 0..200), at: usize, high in 0x80u8.., skip in 0usize..16) {
            let skip = skip.min(b.len());
            proptest::prop_assert!(is_ascii(&b[skip..]));
            if !b.is_empty() {
                let at = at % b.len();
                b[at] = high;
                proptest::prop_assert_eq!(is_ascii(&b[skip..]), b[skip..].is_ascii());
            }
        }
    }

    #[test]
    fn raw_message_is_utf8_and_bounded() {
        assert_eq!(raw_message(b"a\xffb", 10), ("a\u{fffd}b".to_string(), false));
        // Cut inside a character: the stub is dropped, not replaced.
        assert_eq!(raw_message("xé".as_bytes(), 2), ("x".to_string(), true));
        // Replacements grow the text (1 byte -> 3); it still fits `max`.
        let (s, cut) = raw_message(&[0xff; 10], 10);
        assert!(cut && s.len() <= 10 && s.chars().all(|c| c == '\u{fffd}'), "{s:?}");
    }
}
