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
    /// Opaque identity of the file (device, inode and content fingerprint), stable across
    /// restarts and renames. Assigned by the tailer.
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
}

/// Formats UTC nanoseconds as RFC 3339 with 9 fractional digits and `Z`.
pub fn format_rfc3339_nanos(ns: i64, out: &mut String) {
    use std::fmt::Write;
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    let dt = chrono::DateTime::from_timestamp(secs, nanos).unwrap_or_default();
    let _ = write!(out, "{}", dt.format("%Y-%m-%dT%H:%M:%S%.9fZ"));
}

impl Event {
    /// Appends the event as one JSON object and `\n`: the documented event contract of the
    /// stdout and file sinks.
    pub fn write_json(&self, out: &mut Vec<u8>) {
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
        let mut ts = String::with_capacity(32);
        format_rfc3339_nanos(self.timestamp, &mut ts);
        let wire = Wire {
            timestamp: &ts,
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
}
