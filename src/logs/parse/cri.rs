//! CRI log records: `TIMESTAMP SP STREAM SP TAGS SP MESSAGE` (the line's `\n` already removed).
//! Only the first `:`-separated tag has meaning: `P` (partial) or `F` (full / last piece).

use super::{ParseError, Record, time::parse_rfc3339};
use crate::event::Stream;

/// Parses one CRI record. The message keeps every byte after the third space (a `\r` that
/// conmon keeps stays), cut at `max_message` bytes; the flag says whether it was cut. The
/// bytes are not checked as UTF-8 here: containerd cuts `P` pieces at a byte count.
pub fn parse(line: &[u8], max_message: usize) -> Result<(Record, bool), ParseError> {
    let sp1 = memchr::memchr(b' ', line).ok_or(ParseError::CriFormat)?;
    let timestamp = parse_rfc3339(&line[..sp1]).ok_or(ParseError::Timestamp)?;
    let rest = &line[sp1 + 1..];
    let (stream, rest) = if let Some(r) = rest.strip_prefix(b"stdout ") {
        (Stream::Stdout, r)
    } else if let Some(r) = rest.strip_prefix(b"stderr ") {
        (Stream::Stderr, r)
    } else {
        return Err(ParseError::CriFormat);
    };
    // Tags run to the next space; an empty message may also end the line right after them.
    let tag_end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
    let tags = &rest[..tag_end];
    let partial = match tags.split(|&b| b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(ParseError::CriFormat),
    };
    let msg = if tag_end < rest.len() { &rest[tag_end + 1..] } else { &[][..] };
    let cut = msg.len() > max_message;
    let msg = if cut { &msg[..max_message] } else { msg };
    let mut message = super::recycle::buffer(msg.len());
    message.extend_from_slice(msg);
    Ok((Record { timestamp, stream, partial, message }, cut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(line: &str) -> (i64, Stream, bool, String) {
        let (r, _) = parse(line.as_bytes(), 1 << 20).unwrap();
        (r.timestamp, r.stream, r.partial, String::from_utf8(r.message).unwrap())
    }

    #[test]
    fn table() {
        let t = 1_795_846_333_123_456_789;
        assert_eq!(ok("2026-11-28T06:12:13.123456789Z stdout F hello"), (t, Stream::Stdout, false, "hello".into()));
        assert_eq!(ok("2026-11-28T06:12:13.123456789Z stderr P part"), (t, Stream::Stderr, true, "part".into()));
        assert_eq!(
            ok("2026-11-28T07:12:13.123456789+01:00 stdout F cri-o"),
            (t, Stream::Stdout, false, "cri-o".into())
        );
        // Spaces in the message are kept, including leading ones.
        assert_eq!(ok("2026-11-28T06:12:13.123456789Z stdout F  a  b ").3, " a  b ");
        // Empty messages, with or without the separator.
        assert_eq!(ok("2026-11-28T06:12:13.123456789Z stdout F ").3, "");
        assert_eq!(ok("2026-11-28T06:12:13.123456789Z stdout F").3, "");
        // Extra tags after the first are ignored.
        assert!(ok("2026-11-28T06:12:13.123456789Z stdout P:x msg").2);
        // conmon keeps the CR.
        assert_eq!(ok("2026-11-28T06:12:13.123456789Z stdout F dos\r").3, "dos\r");
        assert_eq!(ok("2026-11-28T06:12:13.123456789Z stdout F ünïcödé").3, "ünïcödé");
    }

    #[test]
    fn errors() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"", ParseError::CriFormat),
            (b"garbage", ParseError::CriFormat),
            (b"this line is not CRI", ParseError::Timestamp),
            (b"2026-11-28T06:12:13Z stdin F x", ParseError::CriFormat),
            (b"2026-11-28T06:12:13Z stdout X x", ParseError::CriFormat),
            (b"2026-11-28T06:12:13Z stdout", ParseError::CriFormat),
            (b"2026-11-28 stdout F x", ParseError::Timestamp),
            (b"\x00\x01\x02 \x03", ParseError::Timestamp),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line, 1 << 20).unwrap_err(), *want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    /// Regression: a well-formed record with bytes that are not UTF-8 was rejected as
    /// malformed (raw header in the message, read time as timestamp). Its bytes now go to the
    /// merge, which replaces them.
    #[test]
    fn invalid_utf8_is_not_a_parse_error() {
        let (r, cut) = parse(b"2026-11-28T06:12:13Z stderr F a\xff\xfeb", 1 << 20).unwrap();
        assert!(!cut);
        assert_eq!((r.timestamp, r.stream, r.partial), (1_795_846_333_000_000_000, Stream::Stderr, false));
        assert_eq!(r.message, b"a\xff\xfeb");
    }

    #[test]
    fn long_message_is_cut_at_max_bytes() {
        let line = format!("2026-11-28T06:12:13Z stdout F {}", "é".repeat(10));
        let (r, cut) = parse(line.as_bytes(), 5).unwrap();
        assert!(cut);
        // The merge drops the cut character's first byte.
        assert_eq!(r.message, &"é".repeat(10).as_bytes()[..5]);
    }

    proptest! {
        #[test]
        fn round_trip(msg in "[^\n]{0,200}", stderr: bool, partial: bool, nanos in 0i64..4_000_000_000_000_000_000) {
            let mut ts = String::new();
            crate::event::format_rfc3339_nanos(nanos, &mut ts);
            let line = format!("{ts} {} {} {msg}", if stderr { "stderr" } else { "stdout" }, if partial { "P" } else { "F" });
            let (r, cut) = parse(line.as_bytes(), usize::MAX).unwrap();
            prop_assert!(!cut);
            prop_assert_eq!(r.timestamp, nanos);
            prop_assert_eq!(r.stream, if stderr { Stream::Stderr } else { Stream::Stdout });
            prop_assert_eq!(r.partial, partial);
            prop_assert_eq!(r.message, msg.into_bytes());
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..120), max in 0usize..64) {
            let _ = parse(&b, max);
        }
    }
}
