//! docker json-file records: `{"log":"…\n","stream":"stdout","time":"…"}`, keys in that order
//! as moby writes them. A `log` without a trailing `\n` is a piece of a longer line (docker's
//! 16 KiB split, or a stream closed mid-line): `partial`.
//!
//! Fast path: a hand-written scanner for exactly moby's layout (the JSON string decoded with
//! memchr over runs of plain bytes). Anything else that is still JSON (an `attrs` object,
//! other key orders, whitespace) goes through serde_json, so correctness never depends on the
//! fast path.
//!
//! The `log` string is decoded to bytes, not checked as UTF-8: the merge checks the whole line.
//! moby's copier cuts at 16 KiB of bytes and its encoder writes every byte that is not UTF-8
//! as `\ufffd` (`ffjsonWriteJSONBytesAsString`), so a character cut at a piece boundary is
//! already one U+FFFD per byte in the file and cannot be restored; the merged line is exactly
//! the pieces' text. Raw bytes that are not UTF-8 (a writer that does not escape them) are
//! kept as bytes, so a character cut between two pieces is whole again after the merge.

use super::{ParseError, Record, time::parse_rfc3339};
use crate::event::Stream;

/// Parses one docker json-file record; see the module doc.
pub fn parse(line: &[u8], max_message: usize) -> Result<(Record, bool), ParseError> {
    let (timestamp, stream, mut msg) = match fast(line) {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(e),
        None => slow(line)?,
    };
    let partial = !msg.ends_with(b"\n");
    if !partial {
        msg.pop();
    }
    let cut = msg.len() > max_message;
    msg.truncate(max_message);
    Ok((Record { timestamp, stream, partial, message: msg }, cut))
}

type Parts = (i64, Stream, Vec<u8>);

/// `None`: not moby's exact layout, try the general parser.
fn fast(line: &[u8]) -> Option<Result<Parts, ParseError>> {
    let rest = line.strip_prefix(b"{\"log\":\"")?;
    // moby's tail after the message (`","stream":"stdout","time":"<35>"}`) is about 60 bytes:
    // sized so the message rarely reallocates and rarely wastes.
    let mut msg = super::recycle::buffer(rest.len().saturating_sub(56));
    let used = unescape(rest, &mut msg)?;
    let rest = rest[used..].strip_prefix(b",\"stream\":\"")?;
    let (stream, rest) = if let Some(r) = rest.strip_prefix(b"stdout\"") {
        (Stream::Stdout, r)
    } else if let Some(r) = rest.strip_prefix(b"stderr\"") {
        (Stream::Stderr, r)
    } else {
        return None;
    };
    let rest = rest.strip_prefix(b",\"time\":\"")?;
    let q = memchr::memchr(b'"', rest)?;
    if rest[q + 1..].trim_ascii_end() != b"}" {
        return None;
    }
    Some(match parse_rfc3339(&rest[..q]) {
        Some(ts) => Ok((ts, stream, msg)),
        None => Err(ParseError::Timestamp),
    })
}

fn slow(line: &[u8]) -> Result<Parts, ParseError> {
    #[derive(serde::Deserialize)]
    struct Wire<'a> {
        #[serde(default)]
        log: LogBytes,
        #[serde(borrow)]
        stream: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        time: std::borrow::Cow<'a, str>,
    }
    let w: Wire = serde_json::from_slice(line).map_err(|_| ParseError::Json)?;
    let stream = match &*w.stream {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return Err(ParseError::Json),
    };
    let ts = parse_rfc3339(w.time.as_bytes()).ok_or(ParseError::Timestamp)?;
    Ok((ts, stream, w.log.0))
}

/// The `log` string as bytes: escapes decoded, UTF-8 not checked (serde_json's
/// `deserialize_bytes`; a lone `\u` surrogate becomes its WTF-8 bytes, replaced in the merge).
#[derive(Default)]
struct LogBytes(Vec<u8>);

impl<'de> serde::Deserialize<'de> for LogBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = LogBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<LogBytes, E> {
                Ok(LogBytes(v.to_vec()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LogBytes, E> {
                Ok(LogBytes(v.as_bytes().to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Decodes the body of a JSON string (after its opening quote) into `out`; returns the bytes
/// consumed including the closing quote. `None` on a malformed escape or a missing quote.
fn unescape(s: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let mut i = 0;
    loop {
        let j = i + memchr::memchr2(b'"', b'\\', &s[i..])?;
        out.extend_from_slice(&s[i..j]);
        if s[j] == b'"' {
            return Some(j + 1);
        }
        let e = *s.get(j + 1)?;
        i = j + 2;
        match e {
            b'"' => out.push(b'"'),
            b'\\' => out.push(b'\\'),
            b'/' => out.push(b'/'),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'u' => {
                let hi = hex4(s.get(i..i + 4)?)?;
                i += 4;
                let c = if (0xD800..0xDC00).contains(&hi) {
                    // A surrogate pair; a lone high surrogate becomes U+FFFD as in serde_json's
                    // lossy mode would not: reject and let the slow path decide.
                    if s.get(i..i + 2)? != b"\\u" {
                        return None;
                    }
                    let lo = hex4(s.get(i + 2..i + 6)?)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return None;
                    }
                    i += 6;
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                } else {
                    char::from_u32(hi)?
                };
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            _ => return None,
        }
    }
}

fn hex4(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        v = v * 16 + (c as char).to_digit(16)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(line: &str) -> (Record, bool) {
        parse(line.as_bytes(), 1 << 20).unwrap()
    }

    fn text(r: &Record) -> &str {
        std::str::from_utf8(&r.message).unwrap()
    }

    #[test]
    fn table() {
        let (r, cut) = ok(r#"{"log":"hello\n","stream":"stdout","time":"2026-11-28T06:12:13.123456789Z"}"#);
        assert_eq!(
            r,
            Record {
                timestamp: 1_795_846_333_123_456_789,
                stream: Stream::Stdout,
                partial: false,
                message: b"hello".to_vec()
            }
        );
        assert!(!cut);
        // 16 KiB split: no trailing newline.
        let (r, _) = ok(r#"{"log":"first half","stream":"stderr","time":"2026-11-28T06:12:13Z"}"#);
        assert!(r.partial);
        assert_eq!(r.stream, Stream::Stderr);
        // Escapes, including moby's \u003c and a surrogate pair.
        let (r, _) = ok(
            r#"{"log":"a\"b\\c\/d\te \u003cdb\u003e \ud83d\ude00 é\n","stream":"stdout","time":"2026-11-28T06:12:13Z"}"#,
        );
        assert_eq!(text(&r), "a\"b\\c/d\te <db> 😀 é");
        // attrs and other layouts go through serde_json.
        let (r, _) = ok(r#"{"log":"x\n","stream":"stdout","attrs":{"tag":"t"},"time":"2026-11-28T06:12:13Z"}"#);
        assert_eq!(text(&r), "x");
        let (r, _) = ok(r#"{ "time":"2026-11-28T06:12:13Z", "stream":"stderr", "log":"y\n" }"#);
        assert_eq!((text(&r), r.stream), ("y", Stream::Stderr));
        // An empty log is omitted by moby.
        let (r, _) = ok(r#"{"stream":"stdout","time":"2026-11-28T06:12:13Z"}"#);
        assert_eq!((text(&r), r.partial), ("", true));
        // Trailing CR kept, as docker does.
        assert_eq!(ok(r#"{"log":"dos\r\n","stream":"stdout","time":"2026-11-28T06:12:13Z"}"#).0.message, b"dos\r");
    }

    #[test]
    fn errors() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"", ParseError::Json),
            (b"{", ParseError::Json),
            (b"{\"log\":\"x", ParseError::Json),
            (b"not json", ParseError::Json),
            (br#"{"log":"x\n","stream":"stdin","time":"2026-11-28T06:12:13Z"}"#, ParseError::Json),
            (br#"{"log":"x\n","stream":"stdout","time":"yesterday"}"#, ParseError::Timestamp),
            (br#"{"log":"x\n","stream":"stdout"}"#, ParseError::Json),
            (br#"{"log":"\q","stream":"stdout","time":"2026-11-28T06:12:13Z"}"#, ParseError::Json),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line, 1 << 20).unwrap_err(), *want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    /// Regression: raw bytes that are not UTF-8 inside `log` made the record malformed; they
    /// are the message's bytes (replaced after the merge), on the fast path and the slow one.
    #[test]
    fn invalid_utf8_in_log_is_kept_as_bytes() {
        let fast = b"{\"log\":\"a\xe3\x81\\n\",\"stream\":\"stderr\",\"time\":\"2026-11-28T06:12:13Z\"}";
        let slow = b"{\"log\":\"a\xe3\x81\\n\",\"stream\":\"stderr\",\"attrs\":{},\"time\":\"2026-11-28T06:12:13Z\"}";
        for line in [&fast[..], &slow[..]] {
            let (r, _) = parse(line, 1 << 20).unwrap();
            assert_eq!(r.message, b"a\xe3\x81");
            assert_eq!((r.stream, r.partial, r.timestamp), (Stream::Stderr, false, 1_795_846_333_000_000_000));
        }
        // A lone surrogate escape (moby never writes one) is bytes too, not an error.
        let (r, _) =
            parse(br#"{"log":"a\ud800b\n","stream":"stdout","time":"2026-11-28T06:12:13Z"}"#, 1 << 20).unwrap();
        assert_eq!(String::from_utf8_lossy(&r.message), "a\u{fffd}\u{fffd}\u{fffd}b");
    }

    #[test]
    fn cut_keeps_partial_flag_of_the_whole_record() {
        let (r, cut) = parse(br#"{"log":"0123456789\n","stream":"stdout","time":"2026-11-28T06:12:13Z"}"#, 4).unwrap();
        assert!(cut);
        assert!(!r.partial);
        assert_eq!(r.message, b"0123");
    }

    proptest! {
        #[test]
        fn round_trip(msg in any::<String>(), newline: bool, stderr: bool) {
            let log = if newline { format!("{msg}\n") } else { msg.clone() };
            let line = format!(
                r#"{{"log":{},"stream":"{}","time":"2026-11-28T06:12:13.5Z"}}"#,
                serde_json::to_string(&log).unwrap(),
                if stderr { "stderr" } else { "stdout" }
            );
            let (r, _) = parse(line.as_bytes(), usize::MAX).unwrap();
            prop_assert_eq!(r.message, msg.into_bytes());
            prop_assert_eq!(r.partial, !newline);
            prop_assert_eq!(r.timestamp, 1_795_846_333_500_000_000);
        }

        #[test]
        fn fast_path_agrees_with_serde(msg in "(\\PC|[\"\\\\\n\t\u{1}])*") {
            let line = format!(r#"{{"log":{},"stream":"stdout","time":"2026-11-28T06:12:13Z"}}"#, serde_json::to_string(&msg).unwrap());
            let fast = fast(line.as_bytes()).unwrap().unwrap();
            let slow = slow(line.as_bytes()).unwrap();
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..120), max in 0usize..64) {
            let _ = parse(&b, max);
        }
    }
}
