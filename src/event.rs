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

/// Label or annotation keys and values, sorted by key (so JSON output is stable).
pub type Labels = std::collections::BTreeMap<String, String>;

/// The controlling workload of a pod (`kubernetes.owner`): a ReplicaSet resolved to its
/// Deployment, a Job resolved to its CronJob, otherwise the controller reference as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

/// What the API server says about a pod, as events carry it (`logs::kubernetes` builds it
/// from the pod watch; one per pod, shared by all its files).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PodMeta {
    /// All the pod's labels.
    pub labels: Labels,
    /// Only the annotation keys listed in `sources.containers.kubernetes.annotations`.
    #[serde(skip_serializing_if = "Labels::is_empty")]
    pub annotations: Labels,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Every `vigil.io/*` annotation (per-pod controls such as `vigil.io/exclude` and
    /// `vigil.io/multiline`): kept for vigil's own stages, not written into events unless also
    /// listed in `annotations`.
    #[serde(skip)]
    pub controls: Labels,
}

impl PodMeta {
    /// The value of annotation `key` when vigil keeps it (a `vigil.io/*` key, or one listed in
    /// `annotations`).
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).or_else(|| self.controls.get(key)).map(String::as_str)
    }
}

/// Kubernetes metadata, parsed from the log file's path, plus (when
/// `sources.containers.kubernetes.enabled` and the pod is known) what the API server says.
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
    /// From the API: `labels`, `annotations`, `owner` (flattened into this object).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub api: Option<Arc<PodMeta>>,
    /// From the API: this container's image (`spec.containers[].image`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Arc<str>>,
    /// From the API, when `namespace_labels` is on: the namespace's labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_labels: Option<Arc<Labels>>,
}

impl K8sMeta {
    /// The pod's labels when the API metadata is known (for `when:` selectors and the sinks).
    pub fn labels(&self) -> Option<&Labels> {
        self.api.as_deref().map(|m| &m.labels)
    }

    /// Rough encoded size of the API metadata (keys, values, quotes), for sinks' batch sizes.
    pub fn api_bytes(&self) -> usize {
        let map = |l: &Labels| l.iter().map(|(k, v)| k.len() + v.len() + 6).sum::<usize>();
        let api = self.api.as_deref().map_or(0, |a| {
            map(&a.labels) + map(&a.annotations) + a.owner.as_ref().map_or(0, |o| o.kind.len() + o.name.len() + 30)
        });
        api + self.image.as_ref().map_or(0, |i| i.len() + 20) + self.namespace_labels.as_deref().map_or(0, map)
    }
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

/// Formats UTC milliseconds as RFC 3339 with 3 fractional digits and `Z` (metric documents).
pub fn format_rfc3339_millis(ms: i64) -> String {
    let mut b = [0u8; 30];
    rfc3339_nanos_bytes(ms.saturating_mul(1_000_000), &mut b);
    b[23] = b'Z';
    std::str::from_utf8(&b[..24]).expect("ASCII digits").to_string()
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
    let put = put_digits;
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
    put_nanos(b, nanos);
    b[29] = b'Z';
    30
}

/// Writes nanoseconds (`v` < 10⁹) as 9 digits at `b[20..29]`: two digits per step from a
/// table, so five dependent divisions instead of nine (this runs once per event).
#[inline]
fn put_nanos(b: &mut [u8; 30], v: u32) {
    const PAIRS: &[u8; 200] = b"00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";
    let mut v = v % 1_000_000_000;
    for at in [27, 25, 23, 21] {
        let d = (v % 100) as usize * 2;
        v /= 100;
        b[at..at + 2].copy_from_slice(&PAIRS[d..d + 2]);
    }
    b[20] = b'0' + v as u8;
}

/// Writes `v` as `width` decimal digits (zero-padded) at `b[at..]`.
#[inline]
fn put_digits(b: &mut [u8; 30], at: usize, mut v: u32, width: usize) {
    for i in (0..width).rev() {
        b[at + i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
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

/// Whether any of the 16 bytes needs escaping in JSON: SSE2 (part of every x86_64 CPU) compares
/// all 16 at once; elsewhere two SWAR words. perf (CRI → file sink): the 8-byte SWAR scan alone
/// was 8% of vigil's CPU.
#[inline]
fn block16_needs_escape(b: &[u8; 16]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        };
        // SAFETY: SSE2 is in the x86_64 baseline; the unaligned load reads exactly the 16 bytes
        // of `b`.
        unsafe {
            let v = _mm_loadu_si128(b.as_ptr().cast::<__m128i>());
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // Unsigned v <= 0x1f exactly when max(v, 0x1f) == 0x1f.
            let low = _mm_set1_epi8(0x1f);
            let control = _mm_cmpeq_epi8(_mm_max_epu8(v, low), low);
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) != 0
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let (a, c) = b.split_at(8);
        word_needs_escape(u64::from_le_bytes(a.try_into().expect("8 bytes")))
            || word_needs_escape(u64::from_le_bytes(c.try_into().expect("8 bytes")))
    }
}

/// Appends `s` as a JSON string, escaped exactly as serde_json does (`"`, `\\`, control
/// characters; `\\u00xx` in lower-case hex for those without a short form).
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
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
    while i + 16 <= bytes.len() {
        if block16_needs_escape(bytes[i..i + 16].try_into().expect("16 bytes")) {
            for j in i..i + 16 {
                escape_byte(out, j, &mut start);
            }
        }
        i += 16;
    }
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

/// Appends a string map as a JSON object.
fn write_json_map(out: &mut Vec<u8>, map: &Labels) {
    out.push(b'{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(out, k);
        out.push(b':');
        write_json_str(out, v);
    }
    out.push(b'}');
}

/// `,"kubernetes":{…},"node":…,"file":…`: the part of the event contract that is the same
/// for every event of a file.
fn write_source_json(source: &Source, out: &mut Vec<u8>) {
    let k = &source.kubernetes;
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
    if let Some(api) = &k.api {
        out.extend_from_slice(b",\"labels\":");
        write_json_map(out, &api.labels);
        if !api.annotations.is_empty() {
            out.extend_from_slice(b",\"annotations\":");
            write_json_map(out, &api.annotations);
        }
        if let Some(o) = &api.owner {
            out.extend_from_slice(b",\"owner\":{\"kind\":");
            write_json_str(out, &o.kind);
            out.extend_from_slice(b",\"name\":");
            write_json_str(out, &o.name);
            out.push(b'}');
        }
    }
    if let Some(image) = &k.image {
        out.extend_from_slice(b",\"image\":");
        write_json_str(out, image);
    }
    if let Some(l) = &k.namespace_labels {
        out.extend_from_slice(b",\"namespace_labels\":");
        write_json_map(out, l);
    }
    out.extend_from_slice(b"},\"node\":");
    write_json_str(out, &source.node);
    out.extend_from_slice(b",\"file\":");
    write_json_str(out, &source.file);
}

/// Writes events exactly as `Event::write_json`, encoding the per-file part once per run of
/// events that share one `Arc<Source>` (a batch's events of one file do) and copying it after
/// that: escaping six strings per line was a fifth of the file sink's encoding. Likewise the
/// timestamp's date and time of day are formatted once per second and only the nanoseconds per
/// event (the calendar arithmetic was 5% of vigil's CPU to the file sink).
#[derive(Default)]
pub struct JsonEncoder {
    source: Option<Arc<Source>>,
    encoded: Vec<u8>,
    /// The second (Unix seconds) whose `YYYY-MM-DDTHH:MM:SS.` is in `second_text`.
    second: Option<i64>,
    second_text: [u8; 20],
}

impl JsonEncoder {
    pub fn write(&mut self, e: &Event, out: &mut Vec<u8>) {
        if !self.source.as_ref().is_some_and(|s| Arc::ptr_eq(s, &e.source)) {
            self.encoded.clear();
            write_source_json(&e.source, &mut self.encoded);
            self.source = Some(e.source.clone());
        }
        let secs = e.timestamp.div_euclid(1_000_000_000);
        let mut ts = [0u8; 30];
        if self.second == Some(secs) {
            ts[..20].copy_from_slice(&self.second_text);
            put_nanos(&mut ts, e.timestamp.rem_euclid(1_000_000_000) as u32);
            ts[29] = b'Z';
        } else {
            rfc3339_nanos_bytes(e.timestamp, &mut ts);
            self.second = Some(secs);
            self.second_text.copy_from_slice(&ts[..20]);
        }
        e.write_json_head(&ts, out);
        out.extend_from_slice(&self.encoded);
        e.write_json_end(out);
    }

    /// Lets go of the last file's facts (between batches).
    pub fn clear(&mut self) {
        self.source = None;
    }
}

impl Event {
    /// Appends the event as one JSON object and `\n`: the documented event contract of the
    /// stdout and file sinks. Keys, in order: timestamp, stream, message, kubernetes
    /// {namespace, pod, pod_uid, container, container_id?, restart_count?, labels?,
    /// annotations?, owner?, image?, namespace_labels?}, node, file,
    /// malformed? and truncated? (present only when true), then for a parsed message level?,
    /// trace_id?, span_id? and fields? (an object; present only when known). `JsonEncoder`
    /// writes the same bytes faster for runs of events of one file.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut ts = [0u8; 30];
        rfc3339_nanos_bytes(self.timestamp, &mut ts);
        self.write_json_head(&ts, out);
        write_source_json(&self.source, out);
        self.write_json_end(out);
    }

    /// `{"timestamp":…,"stream":…,"message":…`, `ts`: the formatted timestamp.
    fn write_json_head(&self, ts: &[u8; 30], out: &mut Vec<u8>) {
        out.reserve(self.message.len() + 224 + self.source.file.len());
        out.extend_from_slice(b"{\"timestamp\":\"");
        out.extend_from_slice(ts);
        out.extend_from_slice(match self.stream {
            Stream::Stdout => b"\",\"stream\":\"stdout\",\"message\":",
            Stream::Stderr => b"\",\"stream\":\"stderr\",\"message\":",
        });
        write_json_str(out, &self.message);
    }

    /// The flags and the closing `}\n`.
    fn write_json_end(&self, out: &mut Vec<u8>) {
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

/// A source with API metadata, for sink tests.
#[cfg(test)]
pub(crate) fn test_source_with_api() -> Arc<Source> {
    Arc::new(Source {
        file: "/var/log/pods/shop_web-1_u1/app/0.log".into(),
        node: "node-a".into(),
        kubernetes: K8sMeta {
            namespace: "shop".into(),
            pod: "web-1".into(),
            pod_uid: "u1".into(),
            container: "app".into(),
            restart_count: Some(0),
            api: Some(Arc::new(PodMeta {
                labels: [("app.kubernetes.io/name".to_string(), "web".to_string()), ("tier".into(), "front".into())]
                    .into(),
                annotations: [("team".to_string(), "checkout".to_string())].into(),
                owner: Some(Owner { kind: "Deployment".into(), name: "web".into() }),
                controls: Labels::new(),
            })),
            image: Some("registry.example.com/shop/web:1.2".into()),
            namespace_labels: Some(Arc::new([("env".to_string(), "prod".to_string())].into())),
            ..K8sMeta::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression guard for moving es_metrics' `@timestamp` onto this formatter: the same text
    /// chrono wrote (milliseconds, `Z`) across epochs, leap days and negative times.
    #[test]
    fn millis_format_matches_chrono() {
        for ms in [0, 1, 999, 1_709_164_800_123, 951_782_400_000, -1, -86_400_001, 4_102_444_799_999] {
            let want = chrono::DateTime::from_timestamp_millis(ms)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            assert_eq!(format_rfc3339_millis(ms), want, "{ms}");
        }
    }

    #[test]
    fn json_carries_the_api_metadata() {
        let ev = Event {
            timestamp: 1,
            stream: Stream::Stdout,
            message: "m".into(),
            malformed: false,
            truncated: false,
            source: test_source_with_api(),
            origin: Origin { file: 1, offset: 0, resume: 1 },
            parsed: None,
        };
        let mut out = Vec::new();
        ev.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let k = &v["kubernetes"];
        assert_eq!(k["labels"]["app.kubernetes.io/name"], "web");
        assert_eq!(k["annotations"], serde_json::json!({"team": "checkout"}));
        assert_eq!(k["owner"], serde_json::json!({"kind": "Deployment", "name": "web"}));
        assert_eq!(k["image"], "registry.example.com/shop/web:1.2");
        assert_eq!(k["namespace_labels"]["env"], "prod");
    }

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
                ..K8sMeta::default()
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

    /// The 16-byte block scan finds a character to escape at every position of a block, in
    /// the 8-byte and byte tails after it, and ignores bytes ≥ 0x80 (UTF-8) and DEL.
    #[test]
    fn escapes_at_every_position_match_serde() {
        for len in [15, 16, 17, 24, 31, 32, 40] {
            for at in 0..len {
                for c in ['"', '\\', '\u{0}', '\n', '\u{1f}', '\u{7f}', 'é', ' '] {
                    let mut m: String = "a".repeat(len);
                    m.replace_range(at..at + 1, &c.to_string());
                    let mut out = Vec::new();
                    write_json_str(&mut out, &m);
                    assert_eq!(out, serde_json::to_vec(&m).unwrap(), "{m:?}");
                }
            }
        }
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
            nanos2 in 0i64..1_000_000_000,
            malformed: bool,
            truncated: bool,
            stderr: bool,
            api: bool,
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
                    api: api.then(|| Arc::new(PodMeta {
                        labels: [("app.kubernetes.io/name".to_string(), pod.clone()), ("a\"b".into(), "\u{2}".into())].into(),
                        annotations: if stderr { Labels::new() } else { [("k".to_string(), ns.clone())].into() },
                        owner: truncated.then(|| Owner { kind: "Deployment".into(), name: pod.clone() }),
                        controls: [("vigil.io/exclude".to_string(), "false".into())].into(),
                    })),
                    image: malformed.then(|| "nginx:1.27".into()),
                    namespace_labels: (api && malformed).then(|| Arc::new([("team".to_string(), "x".to_string())].into())),
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
            proptest::prop_assert_eq!(String::from_utf8(fast.clone()).unwrap(), String::from_utf8(slow).unwrap());
            // The encoder with its per-file cache: the same bytes, also when the file changes
            // and changes back (another file's event in between).
            let other = Event {
                source: Arc::new(Source { file: "/o".into(), node: "o".into(), kubernetes: K8sMeta::default() }),
                ..ev.clone()
            };
            // And with its per-second timestamp cache: another time in the same second, the
            // next second, and back.
            let second = ev.timestamp.div_euclid(1_000_000_000) * 1_000_000_000;
            let same_second = Event { timestamp: second + nanos2, ..ev.clone() };
            let next_second = Event { timestamp: second.saturating_add(1_000_000_000 + nanos2), ..other.clone() };
            let (mut enc, mut cached, mut plain) = (JsonEncoder::default(), Vec::new(), Vec::new());
            for e in [&ev, &ev, &same_second, &other, &next_second, &ev, &same_second] {
                enc.write(e, &mut cached);
                e.write_json(&mut plain);
            }
            proptest::prop_assert_eq!(cached, plain);
        }
    }
}
