//! Fuzzing on stable: proptest targets for everything that reads bytes vigil does not control
//! (the CRI and docker parsers, the partial-line merger, the checkpoint loader, the config
//! loader). Each property runs a bounded number of cases so this file stays well under 30 s in
//! a debug build; `PROPTEST_CASES=100000 cargo test --release --test fuzz` digs deeper.
//!
//! Properties: no panic on arbitrary (and on almost-valid) input; a message encoded as runtime
//! pieces split at arbitrary byte offsets, inside characters too, merges back exactly; the
//! merger's output is never longer than `max_line_bytes`; a corrupt checkpoint is set aside;
//! a bad config is an error, never a panic.

use proptest::prelude::*;
use vigil::event::Stream;
use vigil::logs::parse::merge::{Line, Merger};
use vigil::logs::parse::{self, Format, cri, docker};
use vigil::logs::tail::checkpoint::Checkpoints;

/// Cases per property, unless PROPTEST_CASES says otherwise.
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n);
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

const TS: &str = "2026-11-28T06:12:13.123456789Z";

fn stream_name(stderr: bool) -> &'static str {
    if stderr { "stderr" } else { "stdout" }
}

/// Cuts `b` at the given fractions of its length (sorted, deduplicated): byte offsets, so
/// they fall inside characters.
fn split_at_fractions<'a>(b: &'a [u8], fractions: &[f64]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = fractions.iter().map(|f| (f * b.len() as f64) as usize).collect();
    cuts.push(b.len());
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts {
        if c > at {
            out.push(&b[at..c]);
            at = c;
        }
    }
    if out.is_empty() {
        out.push(&b[..0]);
    }
    out
}

/// A JSON string literal holding exactly `b`: ASCII escaped as JSON requires, other bytes raw
/// (so a character cut between two pieces stays as its bytes).
fn json_bytes(b: &[u8]) -> Vec<u8> {
    let mut s = vec![b'"'];
    for &c in b {
        match c {
            b'"' => s.extend_from_slice(b"\\\""),
            b'\\' => s.extend_from_slice(b"\\\\"),
            b'\n' => s.extend_from_slice(b"\\n"),
            0..=0x1f => s.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
            _ => s.push(c),
        }
    }
    s.push(b'"');
    s
}

/// The same string as moby's json-file encoder writes it: bytes that are not valid UTF-8
/// become one `\ufffd` each (moby `jsonlogbytes.go`, `ffjsonWriteJSONBytesAsString`).
fn moby_json(b: &[u8]) -> Vec<u8> {
    let mut s = vec![b'"'];
    for chunk in b.utf8_chunks() {
        let v = serde_json::to_string(chunk.valid()).unwrap();
        s.extend_from_slice(&v.as_bytes()[1..v.len() - 1]);
        for _ in chunk.invalid() {
            s.extend_from_slice(b"\\ufffd");
        }
    }
    s.push(b'"');
    s
}

fn docker_line(log_json: &[u8], stream: &str) -> Vec<u8> {
    let mut l = b"{\"log\":".to_vec();
    l.extend_from_slice(log_json);
    l.extend_from_slice(format!(",\"stream\":\"{stream}\",\"time\":\"{TS}\"}}").as_bytes());
    l
}

fn cri_line(stream: &str, tag: &str, msg: &[u8]) -> Vec<u8> {
    let mut l = format!("{TS} {stream} {tag} ").into_bytes();
    l.extend_from_slice(msg);
    l
}

/// Parses raw lines of `format` and merges them as the tailer does; malformed lines are
/// returned as `Err` in order.
fn run(format: Format, lines: &[Vec<u8>], max: usize) -> Vec<Result<Line, parse::ParseError>> {
    let mut m = Merger::new(max);
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        match parse::parse(format, l, max) {
            Ok((rec, cut)) => out.extend(m.push(rec, cut, i as u64, 0).map(Ok)),
            Err(e) => out.push(Err(e)),
        }
    }
    out.extend(m.take_all().into_iter().map(Ok));
    out
}

/// A valid document for the checkpoint loader to start mutations from.
const CHECKPOINT: &str = r#"{"version":1,"files":[{"path":"/var/log/pods/a_b_c/d/0.log","dev":1,"ino":2,"fingerprint_len":256,"fingerprint":"00000000deadbeef","key":"ffffffffffffffff","offset":10}]}"#;

/// A config that uses most sections, for the config loader to start mutations from.
const CONFIG: &str = "\
node_name: ${NODE_NAME:-n1}
sources:
  containers:
    include: [\"/var/log/pods/*/*/*.log\"]
    exclude: []
    read_from: beginning
    checkpoint_dir: /var/lib/vigil
    max_line_bytes: 256KiB
    partial_flush_timeout: 5s
    rotate_wait: 10s
    read_budget: 64KiB
    batch_max_bytes: 256KiB
    checkpoint_interval: 1s
sinks:
  - name: out
    type: stdout
  - name: f
    type: file
    path: /tmp/vigil-fuzz.ndjson
    max_bytes: 10MiB
    max_files: 3
  - name: loki
    type: loki
    endpoint: http://loki:3100
    tenant_id: ${TENANT:-t}
    static_labels: {cluster: c}
    max_in_flight: 4
    request_timeout: 10s
    batch: {max_events: 1000, max_bytes: 1MiB, timeout: 1s}
    retry: {initial_backoff: 100ms, max_backoff: 30s}
  - name: es
    type: elasticsearch
    endpoint: https://es:9200
    index: logs
  - name: rw
    type: prometheus_remote_write
    endpoint: http://prom:9090/api/v1/write
    max_samples_per_send: 500
metrics:
  listen: 0.0.0.0:9102
  ship:
    interval: 15s
    sinks: [rw]
log:
  level: info
  format: text
";

/// Tokens that stress YAML and vigil's own value parsers (sizes, durations, URLs, `${}`).
const TOKENS: &[&str] = &[
    "",
    " ",
    "\n",
    "\t",
    ":",
    "- ",
    "#",
    "{",
    "}",
    "[",
    "]",
    "'",
    "\"",
    "&a ",
    "*a",
    "<<: *a",
    "!!binary ",
    "? ",
    "|\n",
    ">-\n",
    "~",
    "null",
    "true",
    "-1",
    "0",
    "1e309",
    "NaN",
    "-0.5",
    "18446744073709551616",
    "0xff",
    "9999999999999999999999h",
    "1y",
    "0s",
    "-5s",
    "1.5.5KiB",
    "999999999999GiB",
    "1e300GiB",
    "KiB",
    "${",
    "${}",
    "${A",
    "${1A}",
    "${A:-",
    "${NODE_NAME}",
    "$$",
    "$",
    "\u{feff}",
    "é",
    "日本",
    "\u{0}",
    "http://",
    "htp:/x",
    "[::1]:99999",
    "unix:",
    "\\",
    "%",
    "@",
    "    ",
    "\r\n",
];

/// Applies edits to `seed`: at a byte position (as a fraction), delete some bytes and insert
/// some tokens. Byte positions may split a character; the result is decoded lossily.
fn mutate(seed: &str, edits: &[(f64, usize, Vec<usize>)]) -> String {
    let mut b = seed.as_bytes().to_vec();
    for (at, del, ins) in edits {
        let at = ((at * b.len() as f64) as usize).min(b.len());
        let end = (at + del).min(b.len());
        let insert: Vec<u8> = ins.iter().flat_map(|&i| TOKENS[i % TOKENS.len()].bytes()).collect();
        b.splice(at..end, insert);
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn edits() -> impl Strategy<Value = Vec<(f64, usize, Vec<usize>)>> {
    proptest::collection::vec((0.0..1.0f64, 0usize..12, proptest::collection::vec(any::<usize>(), 0..3)), 1..5)
}

fn env(name: &str) -> Option<String> {
    (name == "TENANT").then(|| "tenant".to_string())
}

#[test]
fn seeds_are_valid() {
    // Mutations start from inputs that load, so they explore past the first error.
    vigil::config::Config::from_yaml(CONFIG, &env).expect("the seed config is valid");
    let dir = tempfile::tempdir().unwrap();
    let cp = Checkpoints::open(dir.path()).unwrap();
    std::fs::write(cp.path(), CHECKPOINT).unwrap();
    assert_eq!(cp.load().unwrap().len(), 1);
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn cri_parser_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200), max in 0usize..300) {
        let _ = cri::parse(&b, max);
    }

    /// Almost-valid records: a real header, then anything.
    #[test]
    fn cri_parser_never_panics_after_a_header(
        head in prop::sample::select(vec![
            TS.as_bytes(),
            &b"2026-11-28T06:12:13Z stdout "[..],
            &b"2026-11-28T06:12:13+01:00 stderr P"[..],
            &b"2026-11-28T06:12:13."[..],
        ]),
        b in proptest::collection::vec(any::<u8>(), 0..100),
        max in 0usize..200,
    ) {
        let line = [head, &b[..]].concat();
        if let Ok((r, cut)) = cri::parse(&line, max) {
            prop_assert!(r.message.len() <= max);
            prop_assert!(!cut || r.message.len() == max);
        }
    }

    #[test]
    fn docker_parser_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200), max in 0usize..300) {
        let _ = docker::parse(&b, max);
    }

    /// Almost-valid records: moby's layout with arbitrary bytes in and around the string.
    #[test]
    fn docker_parser_never_panics_on_moby_like_lines(
        log in proptest::collection::vec(any::<u8>(), 0..60),
        tail in proptest::collection::vec(any::<u8>(), 0..20),
        max in 0usize..100,
    ) {
        let mut line = b"{\"log\":\"".to_vec();
        line.extend_from_slice(&log);
        line.extend_from_slice(b"\",\"stream\":\"stdout\",\"time\":\"2026-11-28T06:12:13Z\"");
        line.extend_from_slice(&tail);
        if let Ok((r, _)) = docker::parse(&line, max) {
            prop_assert!(r.message.len() <= max);
        }
    }

    /// A message written by containerd / CRI-O as P…P F pieces cut at arbitrary byte offsets
    /// (inside characters too), with the other stream's lines in between, merges back exactly
    /// with its first piece's stream.
    #[test]
    fn cri_pieces_merge_back_exactly(
        msg in "[^\n]{0,80}",
        fractions in proptest::collection::vec(0.0..1.0f64, 0..6),
        stderr: bool,
        other in proptest::collection::vec("[a-z ]{0,10}", 0..4),
    ) {
        let (s, o) = (stream_name(stderr), stream_name(!stderr));
        let pieces = split_at_fractions(msg.as_bytes(), &fractions);
        let mut lines = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            let last = i + 1 == pieces.len();
            lines.push(cri_line(s, if last { "F" } else { "P" }, p));
            if let Some(x) = other.get(i) {
                lines.push(cri_line(o, "F", x.as_bytes()));
            }
        }
        let out = run(Format::Cri, &lines, 1 << 20);
        let ours: Vec<&Line> = out.iter().map(|r| r.as_ref().unwrap()).filter(|l| l.stream == if stderr { Stream::Stderr } else { Stream::Stdout }).collect();
        prop_assert_eq!(ours.len(), 1);
        prop_assert_eq!(&ours[0].message, &msg);
        prop_assert!(!ours[0].truncated && !ours[0].invalid_utf8);
        prop_assert_eq!(out.len(), 1 + other.len().min(pieces.len()));
    }

    /// The same through docker json-file records whose `log` keeps the raw bytes of a cut
    /// character, and through records as moby writes them (the cut character's bytes as
    /// `\ufffd` each): the former is exact, the latter is exactly the pieces' text.
    #[test]
    fn docker_pieces_merge_back(
        msg in "\\PC{0,80}",
        fractions in proptest::collection::vec(0.0..1.0f64, 0..6),
        stderr: bool,
    ) {
        let s = stream_name(stderr);
        let full = format!("{msg}\n");
        let pieces = split_at_fractions(full.as_bytes(), &fractions);
        let raw: Vec<Vec<u8>> = pieces.iter().map(|p| docker_line(&json_bytes(p), s)).collect();
        let out = run(Format::Docker, &raw, 1 << 20);
        prop_assert_eq!(out.len(), 1);
        let l = out[0].as_ref().unwrap();
        prop_assert_eq!(&l.message, &msg);
        prop_assert!(!l.truncated && !l.invalid_utf8);

        let moby: Vec<Vec<u8>> = pieces.iter().map(|p| docker_line(&moby_json(p), s)).collect();
        let want: String = pieces.iter().map(|p| {
            p.utf8_chunks().map(|c| format!("{}{}", c.valid(), "\u{fffd}".repeat(c.invalid().len()))).collect::<String>()
        }).collect();
        let out = run(Format::Docker, &moby, 1 << 20);
        prop_assert_eq!(out.len(), 1);
        prop_assert_eq!(&out[0].as_ref().unwrap().message, want.strip_suffix('\n').unwrap());
    }

    /// Whatever the records (bytes that are not UTF-8, any partial flags and streams, any
    /// limit), every line out of the merger is at most `max` bytes, and a line is flagged
    /// truncated when its pieces held more than `max` bytes.
    #[test]
    fn merger_never_exceeds_max_line_bytes(
        recs in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..40), any::<bool>(), any::<bool>()), 0..30),
        max in 0usize..64,
    ) {
        let mut m = Merger::new(max);
        let mut out = Vec::new();
        // Per stream: bytes of the pieces so far and the first piece's offset.
        let mut sizes = [0usize; 2];
        let mut first: [Option<u64>; 2] = [None, None];
        let mut want = Vec::new();
        for (i, (bytes, partial, stderr)) in recs.into_iter().enumerate() {
            let (stream, s) = if stderr { (Stream::Stderr, 1) } else { (Stream::Stdout, 0) };
            sizes[s] += bytes.len();
            let start = *first[s].get_or_insert(i as u64);
            let rec = parse::Record { timestamp: i as i64, stream, partial, message: bytes };
            if let Some(l) = m.push(rec, false, i as u64, 0) {
                want.push((start, stream, sizes[s] > max));
                sizes[s] = 0;
                first[s] = None;
                out.push(l);
            }
        }
        for (l, (start, stream, was_over)) in out.iter().zip(want) {
            prop_assert!(l.message.len() <= max, "{} > {max}", l.message.len());
            prop_assert_eq!((l.start, l.timestamp as u64, l.stream), (start, start, stream));
            if was_over {
                prop_assert!(l.truncated);
            }
        }
        for l in m.take_all() {
            prop_assert!(l.message.len() <= max);
        }
    }

    /// Parser and merger together on arbitrary lines: never a panic, never over the limit.
    #[test]
    fn parse_and_merge_arbitrary_lines(
        lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..20),
        docker: bool,
        max in 0usize..64,
    ) {
        let prefixed: Vec<Vec<u8>> = lines.iter().enumerate().map(|(i, l)| {
            // Every other line gets a valid header, so the merge sees real pieces.
            if i % 2 == 0 { l.clone() } else if docker { docker_line(&json_bytes(l), "stdout") } else { cri_line("stdout", if l.first() == Some(&b'P') { "P" } else { "F" }, l) }
        }).collect();
        let format = if docker { Format::Docker } else { Format::Cri };
        for l in run(format, &prefixed, max).into_iter().flatten() {
            prop_assert!(l.message.len() <= max);
        }
    }
}

proptest! {
    #![proptest_config(cases(150))]

    /// The checkpoint loader never panics; a file it cannot use is moved aside (same bytes)
    /// and loading starts empty; a file it can use stays and loads the same way again.
    #[test]
    fn checkpoint_loader_sets_corrupt_files_aside(
        garbage in proptest::collection::vec(any::<u8>(), 0..120),
        edits in proptest::collection::vec((0.0..1.0f64, 0usize..8, proptest::collection::vec(any::<u8>(), 0..4)), 0..4),
        use_garbage: bool,
    ) {
        let bytes = if use_garbage {
            garbage
        } else {
            let mut b = CHECKPOINT.as_bytes().to_vec();
            for (at, del, ins) in &edits {
                let at = ((at * b.len() as f64) as usize).min(b.len());
                let end = (at + del).min(b.len());
                b.splice(at..end, ins.iter().copied());
            }
            b
        };
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoints::open(dir.path()).unwrap();
        std::fs::write(cp.path(), &bytes).unwrap();
        let loaded = cp.load().expect("a readable checkpoint file is never an error");
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("checkpoints.json.corrupt-"))
            .collect();
        if cp.path().exists() {
            prop_assert!(aside.is_empty());
            prop_assert_eq!(cp.load().unwrap(), loaded);
        } else {
            prop_assert!(loaded.is_empty());
            prop_assert_eq!(aside.len(), 1);
            prop_assert_eq!(std::fs::read(&aside[0]).unwrap(), bytes);
        }
    }

    /// The config loader returns an error, never panics, on mutated configs and arbitrary
    /// text; what it accepts passes its own validation.
    #[test]
    fn config_loader_never_panics(edits in edits(), text in "\\PC{0,80}") {
        for yaml in [mutate(CONFIG, &edits), text.clone(), format!("{}{text}", &CONFIG[..CONFIG.len() / 2])] {
            if let Ok(c) = vigil::config::Config::from_yaml(&yaml, &env) {
                prop_assert!(c.validate().0.is_empty());
            }
        }
    }

    /// A config file of arbitrary bytes (not UTF-8 too) is an error, not a panic.
    #[test]
    fn config_file_of_arbitrary_bytes_is_an_error(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.yaml");
        std::fs::write(&path, &b).unwrap();
        let _ = vigil::config::Config::load(Some(&path), &env);
    }
}

/// What one file yields, read through the real `FileTail` with reads of `buf_len` bytes:
/// (message, stream, malformed, truncated, offset) per event, and the final resume offset.
type Yield = (Vec<(String, Stream, bool, bool, u64)>, u64);

fn tail_file(data: &[u8], buf_len: usize, max_line: usize, max_raw: usize) -> Yield {
    use vigil::logs::tail::file::{FileTail, Limits, Opened, Out};
    use vigil::logs::tail::identity::{FileId, Fingerprint};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    std::fs::write(&path, data).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let source = std::sync::Arc::new(vigil::event::Source {
        file: path.display().to_string(),
        node: "n".into(),
        kubernetes: Default::default(),
    });
    let opened = Opened {
        key: 1,
        id: FileId { dev: 1, ino: 1 },
        fp: Fingerprint::of_bytes(data),
        path: path.as_path().into(),
        source,
        file,
        offset: 0,
        limits: Limits { max_line, max_raw, multiline: vigil::logs::multiline::Multiline::off() },
    };
    let metrics = vigil::logs::metrics::LogMetrics::register(&prometheus::Registry::new()).unwrap();
    let mut t = FileTail::plain(opened);
    let mut out = Out::default();
    let mut buf = vec![0u8; buf_len];
    while t.read_slice(&mut buf, buf_len, 0, &mut out, &metrics).unwrap() > 0 {}
    t.finish(0, &mut out, &metrics);
    let events =
        out.events.iter().map(|e| (e.message.clone(), e.stream, e.malformed, e.truncated, e.origin.offset)).collect();
    (events, t.resume())
}

proptest! {
    #![proptest_config(cases(300))]

    /// The tailer's line splitting, raw cut, parse and merge: whatever the read size, a file
    /// yields the same events (cuts of over-long lines included), each within `max_line`,
    /// and the resume offset ends at the end of the file.
    #[test]
    fn file_tail_output_does_not_depend_on_read_size(
        records in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..40), 0u8..4, any::<bool>()), 0..12),
        buf_len in 1usize..50,
        max_line in 1usize..40,
        raw_extra in 0usize..40,
    ) {
        // Mostly CRI records (P or F, either stream, any message bytes), some raw garbage.
        let mut data = Vec::new();
        for (msg, kind, stderr) in &records {
            let msg: Vec<u8> = msg.iter().map(|&b| if b == b'\n' { b'.' } else { b }).collect();
            match kind {
                0 => data.extend_from_slice(&msg),
                1 => data.extend(cri_line(stream_name(*stderr), "P", &msg)),
                _ => data.extend(cri_line(stream_name(*stderr), "F", &msg)),
            }
            data.push(b'\n');
        }
        let max_raw = max_line + raw_extra;
        let whole = tail_file(&data, 64 * 1024, max_line, max_raw);
        let small = tail_file(&data, buf_len, max_line, max_raw);
        prop_assert_eq!(&small, &whole);
        prop_assert_eq!(whole.1, data.len() as u64);
        for (m, ..) in &whole.0 {
            prop_assert!(m.len() <= max_line, "{} > {max_line}", m.len());
        }
    }
}

/// Found by `file_tail_output_does_not_depend_on_read_size`: a line longer than `max_raw`
/// was cut at a character boundary when it arrived in one read (backing up over a stray
/// continuation byte and the byte before it) but at `max_raw` bytes when it arrived across
/// reads, so the same file gave different messages depending on read sizes.
#[test]
fn raw_cut_of_an_overlong_line_does_not_depend_on_read_size() {
    let data = [cri_line("stdout", "P", b"\0\x80"), b"\n".to_vec()].concat();
    let (max_line, max_raw) = (29, 41);
    let whole = tail_file(&data, 64 * 1024, max_line, max_raw);
    assert_eq!(tail_file(&data, 1, max_line, max_raw), whole);
    assert_eq!(whole.0, vec![("\0".to_string(), Stream::Stdout, false, true, 0)]);
}

/// An over-long line of continuation bytes (0x80) was cut to nothing at `max_raw` (the cut
/// backed up to the start of a "character" that never started) and the then empty line was
/// skipped without an event or a count. It is a malformed line like any other.
#[test]
fn overlong_line_of_continuation_bytes_is_shipped_malformed() {
    let mut data = vec![0x80u8; 100];
    data.push(b'\n');
    for buf_len in [7, 64 * 1024] {
        let (events, resume) = tail_file(&data, buf_len, 20, 40);
        assert_eq!(events.len(), 1, "read size {buf_len}: {events:?}");
        let (m, _, malformed, truncated, _) = &events[0];
        assert!(*malformed && *truncated && m.len() <= 20 && m.chars().all(|c| c == '\u{fffd}'), "{events:?}");
        assert_eq!(resume, data.len() as u64);
    }
}

/// Deep nesting is where recursive parsers overflow the stack (an abort, not a panic): both
/// loaders must refuse it with an error.
#[test]
fn deeply_nested_config_and_checkpoint_are_errors() {
    for deep in ["[".repeat(1_000), "{a: ".repeat(1_000), "- ".repeat(1_000)] {
        assert!(vigil::config::Config::from_yaml(&format!("sinks: {deep}"), &env).is_err());
    }
    let dir = tempfile::tempdir().unwrap();
    let cp = Checkpoints::open(dir.path()).unwrap();
    std::fs::write(cp.path(), format!("{{\"version\":1,\"files\":{}", "[".repeat(1_000))).unwrap();
    assert!(cp.load().unwrap().is_empty());
    assert!(!cp.path().exists(), "set aside");
}
