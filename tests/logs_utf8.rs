//! Long non-ASCII lines and invalid UTF-8 through the real log source (issue 15, "Lose
//! nothing"): the runtimes split long lines at a byte count, so pieces end inside characters;
//! the pieces are merged as bytes and the whole line is decoded once. Invalid bytes in a
//! well-formed record become U+FFFD; only broken framing is `malformed`.

mod logs_common;

use logs_common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use vigil::config::ByteSize;
use vigil::event::{Event, Stream};
use vigil::logs::LogSource;
use vigil::logs::config::ContainersConfig;
use vigil::logs::parse::time::parse_rfc3339;
use vigil::pipeline::{Acker, Chunk, Pipeline};

const WAIT: Duration = Duration::from_secs(20);
/// containerd's `max_container_log_line_size` and docker's copier buffer.
const PIECE: usize = 16 * 1024;

type Events = Arc<Mutex<Vec<Event>>>;

/// The real `LogSource` and `Pipeline` with a sink that keeps whole events (timestamp and
/// stream included) and acks them.
async fn start(cfg: &ContainersConfig, got: Events) -> Running {
    let registry = prometheus::Registry::new();
    let (acker, ack_rx) = Acker::channel();
    let (sink_tx, mut sink_rx) = mpsc::channel::<Arc<Chunk>>(4);
    let sink = tokio::spawn(async move {
        while let Some(c) = sink_rx.recv().await {
            got.lock().unwrap().extend(c.events.iter().cloned());
            acker.ack(c.id);
        }
    });
    let (src_tx, src_rx) = mpsc::channel(4);
    let pipeline = Pipeline::start(src_rx, vec![sink_tx], ack_rx, None);
    let source = LogSource::start(cfg, "node".into(), &registry, src_tx, pipeline.committed.clone()).unwrap();
    Running { source, pipeline, sink, registry }
}

/// Runs the source over `data` written to one file at `path` until an event with message
/// `end` arrives; returns every event and the `utf8` parse-error count.
async fn read_all(root: &Path, cp: &Path, path: &Path, data: &[u8], max_line: Option<ByteSize>) -> (Vec<Event>, f64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(data).unwrap();
    let mut cfg = config(root, cp);
    if let Some(m) = max_line {
        cfg.max_line_bytes = m;
    }
    let got: Events = Arc::new(Mutex::new(Vec::new()));
    let r = start(&cfg, got.clone()).await;
    let done = wait_for(WAIT, || got.lock().unwrap().iter().any(|e| e.message == "end")).await;
    let text = {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new().encode(&r.registry.gather(), &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    };
    stop(r).await;
    assert!(done, "the end marker never arrived: {:?}", summary(&got.lock().unwrap()));
    let utf8 = text
        .lines()
        .find(|l| l.starts_with("vigil_parse_errors_total{kind=\"utf8\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("vigil_parse_errors_total{kind=\"utf8\"} is exported");
    let events = std::mem::take(&mut *got.lock().unwrap());
    (events, utf8)
}

fn summary(events: &[Event]) -> Vec<(usize, bool, bool, String)> {
    events.iter().map(|e| (e.message.len(), e.malformed, e.truncated, e.message.chars().take(40).collect())).collect()
}

fn pod_file(root: &Path) -> PathBuf {
    root.join("pods/ns_p_uid-p/c/0.log")
}

/// A 40,000-byte line of Japanese text (3-byte characters; the 16 KiB cuts fall inside them).
fn japanese_line() -> String {
    let mut s = String::new();
    while s.len() + 30 <= 40_000 {
        s.push_str("日本語のログ行です。");
    }
    while s.len() < 40_000 {
        s.push('.');
    }
    assert_eq!(s.len(), 40_000);
    s
}

fn cri_record(ts: &str, stream: &str, tag: &str, msg: &[u8]) -> Vec<u8> {
    let mut r = format!("{ts} {stream} {tag} ").into_bytes();
    r.extend_from_slice(msg);
    r.push(b'\n');
    r
}

/// The `log` string as moby's json-file encoder writes it: JSON escapes, and every byte that
/// is not part of a valid UTF-8 sequence written as `\ufffd` (moby
/// `jsonlog/jsonlogbytes.go`, `ffjsonWriteJSONBytesAsString`, which takes Go's
/// `utf8.DecodeRune` one byte at a time on invalid input).
fn moby_json_string(b: &[u8]) -> String {
    let mut s = String::from("\"");
    for chunk in b.utf8_chunks() {
        let valid = serde_json::to_string(chunk.valid()).unwrap();
        s.push_str(&valid[1..valid.len() - 1]);
        for _ in chunk.invalid() {
            s.push_str("\\ufffd");
        }
    }
    s.push('"');
    s
}

fn docker_record(log_json: &str, stream: &str, ts: &str) -> Vec<u8> {
    format!("{{\"log\":{log_json},\"stream\":\"{stream}\",\"time\":\"{ts}\"}}\n").into_bytes()
}

/// Regression (failed before the fix: 3 events, the 2nd and 3rd `malformed` with their raw CRI
/// header and the read time as timestamp): a 40,000-byte Japanese line that containerd wrote
/// as P, P, F pieces of 16 KiB, cut inside characters, with a stdout line in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_long_japanese_line_split_inside_characters_is_one_event() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let line = japanese_line();
    let b = line.as_bytes();
    assert!(!line.is_char_boundary(PIECE) && !line.is_char_boundary(2 * PIECE), "cuts fall inside characters");
    let mut data = cri_record("2026-11-28T06:12:13.1Z", "stderr", "P", &b[..PIECE]);
    data.extend(cri_record("2026-11-28T06:12:13.15Z", "stdout", "F", b"between"));
    data.extend(cri_record("2026-11-28T06:12:13.2Z", "stderr", "P", &b[PIECE..2 * PIECE]));
    data.extend(cri_record("2026-11-28T06:12:13.3Z", "stderr", "F", &b[2 * PIECE..]));
    data.extend(cri_record("2026-11-28T06:12:14Z", "stdout", "F", b"end"));
    let (events, utf8) = read_all(&root, &d.path().join("cp"), &pod_file(&root), &data, None).await;
    assert_eq!(events.len(), 3, "{:?}", summary(&events));
    let e = &events[1];
    assert_eq!(e.message, line);
    assert_eq!((e.stream, e.malformed, e.truncated), (Stream::Stderr, false, false));
    assert_eq!(e.timestamp, parse_rfc3339(b"2026-11-28T06:12:13.1Z").unwrap(), "the line's first record's timestamp");
    assert_eq!((events[0].message.as_str(), events[2].message.as_str()), ("between", "end"));
    assert_eq!(utf8, 0.0);
}

/// The same line in docker json-file as moby writes it: 16 KiB pieces whose `log` has no
/// `\n`, every piece stamped with the first one's time. moby replaced the bytes of the cut
/// characters with `\ufffd` in the file, so those are U+FFFD (one per byte, as stored); the
/// rest is exact, one event, not malformed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_long_japanese_line_as_moby_writes_it_is_one_event() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let line = japanese_line() + "\n";
    let b = line.as_bytes();
    let ts = "2026-11-28T06:12:13.123Z";
    let mut data = Vec::new();
    for piece in b.chunks(PIECE) {
        data.extend(docker_record(&moby_json_string(piece), "stderr", ts));
    }
    // What moby stored: each piece's valid text, and a U+FFFD per byte of the cut characters.
    let want: String = b
        .chunks(PIECE)
        .flat_map(|p| p.utf8_chunks().map(|c| format!("{}{}", c.valid(), "\u{fffd}".repeat(c.invalid().len()))))
        .collect::<String>()
        .trim_end_matches('\n')
        .to_string();
    assert_eq!(want.matches('\u{fffd}').count(), 6, "two cut characters of 3 bytes each");
    data.extend(docker_record("\"end\\n\"", "stdout", "2026-11-28T06:12:14Z"));
    let path = root.join("docker/abc/abc-json.log");
    let (events, utf8) = read_all(&root, &d.path().join("cp"), &path, &data, None).await;
    assert_eq!(events.len(), 2, "{:?}", summary(&events));
    let e = &events[0];
    assert_eq!(e.message, want);
    assert_eq!((e.stream, e.malformed, e.truncated), (Stream::Stderr, false, false));
    assert_eq!(e.timestamp, parse_rfc3339(ts.as_bytes()).unwrap());
    assert_eq!(utf8, 0.0, "the file holds valid UTF-8");
}

/// Regression (failed before the fix: both pieces `malformed`): docker pieces whose `log`
/// holds the raw bytes of a character cut at the split (a writer that does not escape them)
/// merge back to the exact line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_raw_bytes_of_a_cut_character_merge_back_exactly() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let line = japanese_line();
    let b = line.as_bytes();
    let raw_json = |p: &[u8]| {
        let mut s = b"\"".to_vec();
        s.extend_from_slice(p);
        s.push(b'"');
        s
    };
    let mut data = Vec::new();
    for (i, piece) in b.chunks(PIECE).enumerate() {
        let mut log = raw_json(piece);
        if i == b.len().div_ceil(PIECE) - 1 {
            log.truncate(log.len() - 1);
            log.extend_from_slice(b"\\n\"");
        }
        data.extend_from_slice(b"{\"log\":");
        data.extend_from_slice(&log);
        data.extend_from_slice(b",\"stream\":\"stdout\",\"time\":\"2026-11-28T06:12:13.5Z\"}\n");
    }
    data.extend(docker_record("\"end\\n\"", "stdout", "2026-11-28T06:12:14Z"));
    let path = root.join("docker/abc/abc-json.log");
    let (events, _) = read_all(&root, &d.path().join("cp"), &path, &data, None).await;
    assert_eq!(events.len(), 2, "{:?}", summary(&events));
    assert_eq!(events[0].message, line);
    assert!(!events[0].malformed && !events[0].truncated);
    assert_eq!(events[0].timestamp, parse_rfc3339(b"2026-11-28T06:12:13.5Z").unwrap());
}

/// Regression (failed before the fix: `malformed`, raw header, read time): a well-formed
/// record with bytes that are not UTF-8 keeps its timestamp and stream, the bytes become
/// U+FFFD, and it is counted under `kind="utf8"`. A record with broken framing is still
/// `malformed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_well_formed_record_is_replaced_not_malformed() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let mut data = cri_record("2026-11-28T06:12:13.7Z", "stderr", "F", b"bad \xff\xfe bytes \xe3\x81");
    data.extend_from_slice(b"2026-11-28T06:12:13Z stdboth F broken framing \xff\n");
    data.extend(cri_record("2026-11-28T06:12:14Z", "stdout", "F", b"end"));
    let (events, utf8) = read_all(&root, &d.path().join("cp"), &pod_file(&root), &data, None).await;
    assert_eq!(events.len(), 3, "{:?}", summary(&events));
    let e = &events[0];
    assert_eq!(e.message, "bad \u{fffd}\u{fffd} bytes \u{fffd}");
    assert_eq!((e.stream, e.malformed, e.truncated), (Stream::Stderr, false, false));
    assert_eq!(e.timestamp, parse_rfc3339(b"2026-11-28T06:12:13.7Z").unwrap());
    assert!(events[1].malformed, "broken framing is malformed: {:?}", events[1].message);
    assert_eq!(events[1].message, "2026-11-28T06:12:13Z stdboth F broken framing \u{fffd}");
    assert_eq!(utf8, 1.0);
}

/// Regression (failed before the fix: the 2nd and 3rd pieces came out `malformed`): a long
/// Japanese line cut at `max_line_bytes` is cut at a character boundary, valid UTF-8, one
/// event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_japanese_line_is_cut_at_a_character_boundary() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let line = japanese_line();
    let b = line.as_bytes();
    let mut data = Vec::new();
    for (i, piece) in b.chunks(PIECE).enumerate() {
        let tag = if (i + 1) * PIECE < b.len() { "P" } else { "F" };
        data.extend(cri_record("2026-11-28T06:12:13Z", "stdout", tag, piece));
    }
    data.extend(cri_record("2026-11-28T06:12:14Z", "stdout", "F", b"end"));
    let max = 1025; // not a multiple of 3: the cut falls inside a character
    let (events, _) = read_all(&root, &d.path().join("cp"), &pod_file(&root), &data, Some(ByteSize(1025))).await;
    assert_eq!(events.len(), 2, "{:?}", summary(&events));
    let mut want = max;
    while !line.is_char_boundary(want) {
        want -= 1;
    }
    assert_eq!(events[0].message, line[..want]);
    assert!(events[0].truncated && !events[0].malformed);
}
