//! The log event: what sources produce and sinks consume.
//!
//! Key decision: per-file facts (path, Kubernetes metadata, node) live once in an `Arc<Source>`
//! shared by every event of that file, so an event costs its message and a pointer, not a copy
//! of six strings. Timestamps are UTC nanoseconds: parsed once, formatted by each sink.

use serde::Serialize;
use std::sync::Arc;

/// Which output stream of the container wrote the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Kubernetes metadata, parsed from the log file's path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct K8sMeta {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    /// Present when the path carries it (docker json-file, /var/log/containers symlinks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The CRI `<restart>.log` number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<u32>,
}

/// Facts shared by every event read from one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The path the file was discovered under.
    pub file: String,
    pub node: Arc<str>,
    pub kubernetes: K8sMeta,
}

/// Where an event came from in its file: the basis of acknowledgements and deterministic ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Opaque key of the file's content (device, inode and a generation given when vigil first
    /// saw the content: a truncated file's new content gets a new one), stable across restarts
    /// and renames. Assigned by the tailer.
    pub file: u64,
    /// Byte offset of the first record of this event in the file.
    pub offset: u64,
    /// The offset from which reading may resume once this event and every earlier event of the
    /// file are delivered. At most the end of this event's last record; less when a partial line
    /// of the other stream is still pending.
    pub resume: u64,
}

/// One log line (after partial-line merge), enriched.
#[derive(Debug, Clone)]
pub struct Event {
    /// UTC, nanoseconds since the Unix epoch.
    pub timestamp: i64,
    pub stream: Stream,
    pub message: String,
    /// The line could not be parsed as its file's format; `message` holds the raw text (invalid
    /// UTF-8 replaced).
    pub malformed: bool,
    /// The line was longer than `max_line_bytes` and was cut.
    pub truncated: bool,
    pub source: Arc<Source>,
    pub origin: Origin,
    /// What the processing stage parsed out of a JSON or logfmt message (`crate::process`);
    /// None for plain text, so a plain event pays one pointer.
    pub parsed: Option<Box<Parsed>>,
}

/// The structure of a parsed message: the lifted well-known keys and the other fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// From `level` or `severity`, lower-cased.
    pub level: Option<String>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    /// The other keys (logfmt: in message order; JSON: sorted by key), at most
    /// `sources.containers.max_fields`; nested JSON objects and arrays are kept as their JSON
    /// text, so a field is always a scalar.
    pub fields: Vec<(String, serde_json::Value)>,
    /// The line as written, kept when `msg`/`message` was lifted into `Event::message`.
    pub raw: Option<String>,
}

impl Event {
    pub fn level(&self) -> Option<&str> {
        self.parsed.as_ref().and_then(|p| p.level.as_deref())
    }

    /// The line as the container wrote it (before a `msg` key was lifted into `message`).
    pub fn raw_line(&self) -> &str {
        self.parsed.as_ref().and_then(|p| p.raw.as_deref()).unwrap_or(&self.message)
    }
}

/// Formats UTC nanoseconds as RFC 3339 with 9 fractional digits and `Z`.
pub fn format_rfc3339_nanos(ns: i64, out: &mut String) {
    let mut b = [0u8; 30];
    let n = rfc3339_nanos_bytes(ns, &mut b);
    out.push_str(std::str::from_utf8(&b[..n]).expect("ASCII digits"));
}

/// The same into bytes: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (30 bytes for years 0..=9999).
/// Hand-written: this runs once per event in every sink, where a general formatter's parsing
/// of a format string per call was a tenth of the pipeline's CPU.
fn rfc3339_nanos_bytes(ns: i64, b: &mut [u8; 30]) -> usize {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    // civil_from_days (Howard Hinnant): proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + if month <= 2 { 1 } else { 0 }).clamp(0, 9999) as u32;
    let put = |b: &mut [u8; 30], at: usize, v: u32, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            b[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(b, 0, year, 4);
    b[4] = b'-';
    put(b, 5, month, 2);
    b[7] = b'-';
    put(b, 8, day, 2);
    b[10] = b'T';
    put(b, 11, sod / 3600, 2);
    b[13] = b':';
    put(b, 14, sod / 60 % 60, 2);
    b[16] = b':';
    put(b, 17, sod % 60, 2);
    b[19] = b'.';
    put(b, 20, nanos, 9);
    b[29] = b'Z';
    30
}

/// Whether any of the 8 bytes in `w` needs escaping in JSON (`< 0x20`, `"` or `\\`). SWAR:
/// exact as a yes/no answer for the word (the classic has-zero-byte trick), so clean text is
/// checked 8 bytes at a time.
#[inline]
fn word_needs_escape(w: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let control = w.wrapping_sub(LO * 0x20) & !w & HI;
    let q = w ^ (LO * b'"' as u64);
    let quote = q.wrapping_sub(LO) & !q & HI;
    let b = w ^ (LO * b'\\' as u64);
    let backslash = b.wrapping_sub(LO) & !b & HI;
    (control | quote | backslash) != 0
}

/// Appends `s` as a JSON string, escaped exactly as serde_json does (`"`, `\\`, control
/// characters; `\\u00xx` in lower-case hex for those without a short form).
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    let escape_byte = |out: &mut Vec<u8>, j: usize, start: &mut usize| {
        let c = bytes[j];
        let short: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => return,
        };
        out.extend_from_slice(&bytes[*start..j]);
        if short.is_empty() {
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
        } else {
            out.extend_from_slice(short);
        }
        *start = j + 1;
    };
    while i + 8 <= bytes.len() {
        let w = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        if word_needs_escape(w) {
            for j in i..i + 8 {
                escape_byte(out, j, &mut start);
            }
        }
        i += 8;
    }
    for j in i..bytes.len() {
        escape_byte(out, j, &mut start);
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

impl Event {
    /// Appends the event as one JSON object and `\n`: the documented event contract of the
    /// stdout and file sinks. Keys, in order: timestamp, stream, message, kubernetes
    /// {namespace, pod, pod_uid, container, container_id?, restart_count?}, node, file,
    /// malformed? and truncated? (present only when true), then for a parsed message level?,
    /// trace_id?, span_id? and fields? (an object; present only when known).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let k = &self.source.kubernetes;
        let mut ts = [0u8; 30];
        let n = rfc3339_nanos_bytes(self.timestamp, &mut ts);
        out.reserve(self.message.len() + 160 + self.source.file.len());
        out.extend_from_slice(b"{\"timestamp\":\"");
        out.extend_from_slice(&ts[..n]);
        out.extend_from_slice(match self.stream {
            Stream::Stdout => b"\",\"stream\":\"stdout\",\"message\":",
            Stream::Stderr => b"\",\"stream\":\"stderr\",\"message\":",
        });
        write_json_str(out, &self.message);
        out.extend_from_slice(b",\"kubernetes\":{\"namespace\":");
        write_json_str(out, &k.namespace);
        out.extend_from_slice(b",\"pod\":");
        write_json_str(out, &k.pod);
        out.extend_from_slice(b",\"pod_uid\":");
        write_json_str(out, &k.pod_uid);
        out.extend_from_slice(b",\"container\":");
        write_json_str(out, &k.container);
        if let Some(id) = &k.container_id {
            out.extend_from_slice(b",\"container_id\":");
            write_json_str(out, id);
        }
        if let Some(r) = k.restart_count {
            use std::io::Write;
            let _ = write!(out, ",\"restart_count\":{r}");
        }
        out.extend_from_slice(b"},\"node\":");
        write_json_str(out, &self.source.node);
        out.extend_from_slice(b",\"file\":");
        write_json_str(out, &self.source.file);
        if self.malformed {
            out.extend_from_slice(b",\"malformed\":true");
        }
        if self.truncated {
            out.extend_from_slice(b",\"truncated\":true");
        }
        if let Some(p) = &self.parsed {
            for (key, v) in
                [(&b",\"level\":"[..], &p.level), (b",\"trace_id\":", &p.trace_id), (b",\"span_id\":", &p.span_id)]
            {
                if let Some(v) = v {
                    out.extend_from_slice(key);
                    write_json_str(out, v);
                }
            }
            if !p.fields.is_empty() {
                out.extend_from_slice(b",\"fields\":{");
                for (i, (k, v)) in p.fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_str(out, k);
                    out.push(b':');
                    serde_json::to_writer(&mut *out, v).expect("writing JSON to a Vec cannot fail");
                }
                out.push(b'}');
            }
        }
        out.extend_from_slice(b"}\n");
    }

    /// The contract written with serde (the reference `write_json` is tested against).
    #[cfg(test)]
    fn write_json_serde(&self, out: &mut Vec<u8>) {
        #[derive(Serialize)]
        struct Wire<'a> {
            timestamp: &'a str,
            stream: Stream,
            message: &'a str,
            kubernetes: &'a K8sMeta,
            node: &'a str,
            file: &'a str,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            malformed: bool,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            truncated: bool,
        }
        let secs = self.timestamp.div_euclid(1_000_000_000);
        let nanos = self.timestamp.rem_euclid(1_000_000_000) as u32;
        let ts = chrono::DateTime::from_timestamp(secs, nanos).unwrap_or_default().format("%Y-%m-%dT%H:%M:%S%.9fZ");
        let wire = Wire {
            timestamp: &ts.to_string(),
            stream: self.stream,
            message: &self.message,
            kubernetes: &self.source.kubernetes,
            node: &self.source.node,
            file: &self.source.file,
            malformed: self.malformed,
            truncated: self.truncated,
        };
        serde_json::to_writer(&mut *out, &wire).expect("writing JSON to a Vec cannot fail");
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_contract() {
        let source = Arc::new(Source {
            file: "/var/log/pods/ns_p_uid/c/0.log".into(),
            node: "n".into(),
            kubernetes: K8sMeta {
                namespace: "ns".into(),
                pod: "p".into(),
                pod_uid: "uid".into(),
                container: "c".into(),
                container_id: None,
                restart_count: Some(0),
            },
        });
        let ev = Event {
            timestamp: 1_795_846_333_123_456_789,
            stream: Stream::Stdout,
            message: "hi \"there\"".into(),
            malformed: false,
            truncated: false,
            source,
            origin: Origin { file: 1, offset: 0, resume: 10 },
            parsed: None,
        };
        let mut out = Vec::new();
        ev.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["timestamp"], "2026-11-28T06:12:13.123456789Z");
        assert_eq!(v["stream"], "stdout");
        assert_eq!(v["message"], "hi \"there\"");
        assert_eq!(v["kubernetes"]["namespace"], "ns");
        assert_eq!(v["kubernetes"]["pod_uid"], "uid");
        assert_eq!(v["node"], "n");
        assert_eq!(v["file"], "/var/log/pods/ns_p_uid/c/0.log");
        assert!(v.get("malformed").is_none());
        assert!(out.ends_with(b"}\n"));
    }

    proptest::proptest! {
        /// The hand-written writer produces exactly what serde_json would.
        #[test]
        fn write_json_matches_serde(
            msg in proptest::prelude::any::<String>(),
            ns in "[a-z0-9-]{0,12}",
            pod in "\\PC{0,12}",
            id in proptest::option::of("[0-9a-f]{0,64}"),
            restart in proptest::option::of(proptest::prelude::any::<u32>()),
            ts in 0i64..i64::MAX,
            malformed: bool,
            truncated: bool,
            stderr: bool,
        ) {
            let source = Arc::new(Source {
                file: format!("/var/log/pods/{ns}_{pod}_u/c/0.log"),
                node: "n\"1".into(),
                kubernetes: K8sMeta {
                    namespace: ns.clone(),
                    pod: pod.clone(),
                    pod_uid: "u".into(),
                    container: "c\u{1}".into(),
                    container_id: id,
                    restart_count: restart,
                },
            });
            let ev = Event {
                timestamp: ts,
                stream: if stderr { Stream::Stderr } else { Stream::Stdout },
                message: msg,
                malformed,
                truncated,
                source,
                origin: Origin { file: 1, offset: 0, resume: 10 },
                parsed: None,
            };
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            let mut ev = ev;
            if malformed {
                // Dense escapes at every alignment, for the 8-byte scan.
                ev.message = ev.message.chars().map(|c| ['"', '\\', '\u{1}', '\n', 'é', 'a', '\u{1f}', '\t'][c as usize % 8]).collect();
            }
            ev.write_json(&mut fast);
            ev.write_json_serde(&mut slow);
            proptest::prop_assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(slow).unwrap());
        }
    }
}
