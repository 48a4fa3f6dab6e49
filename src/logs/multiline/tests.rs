use super::*;
use crate::config::HumanDuration;
use crate::logs::config::MultilineRule;
use proptest::prelude::*;

const MAX: usize = 1 << 20;

/// Real-looking traces, written by hand (`tests/fixtures/multiline/`).
const FIXTURES: [(&str, &str); 11] = [
    ("java", include_str!("../../../tests/fixtures/multiline/java.txt")),
    ("python", include_str!("../../../tests/fixtures/multiline/python.txt")),
    ("go", include_str!("../../../tests/fixtures/multiline/go_panic.txt")),
    ("go", include_str!("../../../tests/fixtures/multiline/go_goroutines.txt")),
    ("nodejs", include_str!("../../../tests/fixtures/multiline/nodejs.txt")),
    ("nodejs", include_str!("../../../tests/fixtures/multiline/nodejs_uncaught.txt")),
    ("ruby", include_str!("../../../tests/fixtures/multiline/ruby.txt")),
    ("ruby", include_str!("../../../tests/fixtures/multiline/ruby_rails.txt")),
    ("php", include_str!("../../../tests/fixtures/multiline/php.txt")),
    ("dotnet", include_str!("../../../tests/fixtures/multiline/dotnet.txt")),
    ("dotnet", include_str!("../../../tests/fixtures/multiline/dotnet_logger.txt")),
];

fn line(stream: Stream, msg: &str, start: u64) -> Line {
    Line { timestamp: start as i64, stream, message: msg.into(), truncated: false, invalid_utf8: false, start }
}

/// Pushes `lines` (stdout) through a joiner at time 0, then flushes: the messages out.
fn run(mode: Mode, lines: &[&str]) -> Vec<String> {
    let mut j = Joiner::new(mode, MAX, 1000);
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let p = j.push(line(Stream::Stdout, l, i as u64), 0);
        out.extend(p.closed.into_iter().chain(p.line).map(|l| l.message));
    }
    out.extend(j.take_all().into_iter().map(|l| l.message));
    out
}

const BEFORE: &str = "2026-11-30T02:50:54.120Z INFO  request started id=9f2c1e";
const AFTER: &str = "2026-11-30T02:50:54.310Z INFO  request finished id=9f2c1e status=500";

#[test]
fn each_fixture_becomes_one_event_in_auto_and_in_its_language() {
    for (lang, text) in FIXTURES {
        let trace = text.trim_end_matches('\n');
        let mut lines = vec![BEFORE];
        lines.extend(trace.lines());
        lines.push(AFTER);
        for mode in [Mode::Auto, Mode::parse(lang).unwrap()] {
            let got = run(mode.clone(), &lines);
            assert_eq!(got, vec![BEFORE, trace, AFTER], "{lang} in {mode:?}");
        }
    }
}

#[test]
fn a_language_mode_joins_only_its_own_traces() {
    let java = FIXTURES[0].1.trim_end();
    let python = FIXTURES[1].1.trim_end();
    let lines: Vec<&str> = java.lines().chain(python.lines()).collect();
    let got = run(Mode::Language(Language::Python), &lines);
    assert_eq!(got.len(), java.lines().count() + 1);
    assert_eq!(got.last().unwrap(), python);
    assert_eq!(run(Mode::Off, &lines).len(), lines.len());
}

/// Nothing that is not a trace is joined, and ordinary lines are never held: each comes
/// back from the very push that brought it, including lines that mention errors.
#[test]
fn ordinary_lines_pass_at_once() {
    let mut j = Joiner::new(Mode::Auto, MAX, 1000);
    let lines = [
        "2026-11-30T02:50:54Z ERROR java.lang.IllegalStateException: boom",
        "{\"level\":\"error\",\"msg\":\"Traceback (most recent call last):\"}",
        "level=error msg=\"panic: nope\"",
        "ERROR: relation \"users\" does not exist",
        "I1130 02:50:54.123456       1 main.go:42] starting",
        "[notice] fpm is running, pid 1",
        "    indented but alone",
        "\tat com.example.Orphan.frame(Orphan.java:1)",
        "",
        "goroutine leak suspected",
        "failed to connect: timeout",
    ];
    for (i, l) in lines.iter().enumerate() {
        let p = j.push(line(Stream::Stdout, l, i as u64), 0);
        assert!(p.closed.is_none());
        assert_eq!(p.line.map(|l| l.message).as_deref(), Some(*l));
    }
    assert!(!j.has_open());
}

/// A line that looks like a trace start but is followed by no frame ships alone, as soon as
/// the next line comes (not joined with it).
#[test]
fn a_start_without_frames_ships_alone() {
    assert_eq!(run(Mode::Auto, &["Error: not found", AFTER]), vec!["Error: not found", AFTER]);
    assert_eq!(
        run(Mode::Auto, &["Traceback (most recent call last):", AFTER]),
        vec!["Traceback (most recent call last):", AFTER]
    );
}

#[test]
fn streams_are_joined_separately() {
    let java: Vec<&str> = FIXTURES[0].1.trim_end().lines().collect();
    let py: Vec<&str> = FIXTURES[1].1.trim_end().lines().collect();
    let mut j = Joiner::new(Mode::Auto, MAX, 1000);
    let mut out = Vec::new();
    let n = java.len().max(py.len());
    let mut off = 0;
    for i in 0..n {
        for (stream, src) in [(Stream::Stdout, &java), (Stream::Stderr, &py)] {
            if let Some(l) = src.get(i) {
                let p = j.push(line(stream, l, off), 0);
                out.extend(p.closed.into_iter().chain(p.line));
                off += 1;
            }
        }
        if i == 0 {
            assert_eq!(j.pending_start(), Some(0));
        }
    }
    out.extend(j.take_all());
    let got: Vec<(Stream, &str, u64)> = out.iter().map(|l| (l.stream, l.message.as_str(), l.start)).collect();
    assert_eq!(got, vec![(Stream::Stdout, java.join("\n").as_str(), 0), (Stream::Stderr, py.join("\n").as_str(), 1)]);
}

#[test]
fn a_group_expires_max_wait_after_its_first_line() {
    let mut j = Joiner::new(Mode::Auto, MAX, 1000);
    assert!(j.push(line(Stream::Stderr, "panic: boom", 10), 5000).line.is_none());
    assert!(j.push(line(Stream::Stderr, "", 20), 5900).line.is_none());
    assert!(j.take_expired(5999).is_empty());
    assert_eq!(j.pending_start(), Some(10));
    let out = j.take_expired(6000);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].message.as_str(), out[0].start), ("panic: boom", 10));
    assert_eq!(j.pending_start(), None);
}

#[test]
fn a_joined_event_is_capped_and_flagged() {
    let max = 64;
    let mut j = Joiner::new(Mode::Auto, max, 1000);
    assert!(j.push(line(Stream::Stdout, "java.lang.RuntimeException: é", 0), 0).line.is_none());
    for i in 1..50 {
        assert!(j.push(line(Stream::Stdout, "\tat a.b.C.déf(C.java:1)", i), 0).line.is_none());
    }
    let p = j.push(line(Stream::Stdout, AFTER, 50), 0);
    let g = p.closed.unwrap();
    assert!(g.truncated && g.message.len() <= max, "{} bytes", g.message.len());
    assert!(g.message.starts_with("java.lang.RuntimeException: é\n\tat a.b.C.déf"));
    assert_eq!(p.line.unwrap().message, AFTER);
    // Under the cap: not flagged.
    let mut j = Joiner::new(Mode::Auto, max, 1000);
    j.push(line(Stream::Stdout, "java.lang.Error", 0), 0);
    j.push(line(Stream::Stdout, "\tat a.B.c(B.java:1)", 1), 0);
    let g = j.take_all().pop().unwrap();
    assert!(!g.truncated);
}

#[test]
fn regex_mode_joins_until_the_next_start() {
    let mode = Mode::parse(r"regex:^\d{4}-\d\d-\d\d ").unwrap();
    let got = run(mode, &["2026-11-30 first", "  detail a", "detail b", "2026-11-30 second", "2026-11-30 third", "x"]);
    assert_eq!(got, vec!["2026-11-30 first\n  detail a\ndetail b", "2026-11-30 second", "2026-11-30 third\nx"]);
    // A line before any start is not held.
    assert_eq!(run(Mode::parse("regex:^START").unwrap(), &["loose", "START", "a"]), vec!["loose", "START\na"]);
}

#[test]
fn mode_parse_accepts_the_annotation_grammar() {
    assert_eq!(Mode::parse("off"), Ok(Mode::Off));
    assert_eq!(Mode::parse(" auto "), Ok(Mode::Auto));
    for l in Language::ALL {
        assert_eq!(Mode::parse(l.name()), Ok(Mode::Language(l)));
    }
    assert!(matches!(Mode::parse("regex:^\\[\\d+"), Ok(Mode::Regex(r)) if r.as_str() == "^\\[\\d+"));
    let e = Mode::parse("jav").unwrap_err();
    assert!(e.contains("'jav'") && e.contains("java"), "{e}");
    assert!(Mode::parse("regex:(").unwrap_err().contains("not a valid regex"));
    assert!(Mode::parse("regex:").unwrap_err().contains("empty"));
}

fn cfg(mode: &str, rules: Vec<MultilineRule>) -> MultilineConfig {
    MultilineConfig { mode: mode.into(), max_wait: HumanDuration::secs(1), rules }
}

fn rule(m: &str, mode: Option<&str>, start: Option<&str>) -> MultilineRule {
    MultilineRule { matches: m.into(), mode: mode.map(Into::into), start_pattern: start.map(Into::into) }
}

#[test]
fn select_prefers_annotation_then_first_matching_rule_then_mode() {
    let m = Multiline::compile(&cfg(
        "auto",
        vec![
            rule("/var/log/pods/shop_*/*/*.log", Some("java"), None),
            rule("/var/log/pods/shop_*/*/*.log", Some("off"), None),
            rule("/var/log/pods/legacy_*/*/*.log", None, Some(r"^\d{4}-")),
        ],
    ))
    .unwrap();
    let shop = Path::new("/var/log/pods/shop_web-1_u1/app/0.log");
    let legacy = Path::new("/var/log/pods/legacy_x_u2/app/0.log");
    let other = Path::new("/var/log/pods/default_x_u3/app/0.log");
    assert_eq!(m.select(shop, None), (Mode::Language(Language::Java), None));
    assert!(matches!(m.select(legacy, None), (Mode::Regex(r), None) if r.as_str() == r"^\d{4}-"));
    assert_eq!(m.select(other, None), (Mode::Auto, None));
    assert_eq!(m.select(shop, Some("off")), (Mode::Off, None));
    assert_eq!(m.select(other, Some("python")), (Mode::Language(Language::Python), None));
    assert!(matches!(m.select(other, Some("regex:^x")), (Mode::Regex(_), None)));
    // An invalid annotation is reported and the configured mode kept.
    let (mode, err) = m.select(shop, Some("regex:(("));
    assert_eq!(mode, Mode::Language(Language::Java));
    assert!(err.unwrap().contains("vigil.io/multiline"));
}

#[test]
fn compile_names_every_problem_by_path() {
    let mut c = cfg(
        "klingon",
        vec![
            rule("[", Some("auto"), None),
            rule("/a/*", None, Some("(unclosed")),
            rule("/b/*", None, None),
            rule("/c/*", Some("java"), Some("^x")),
            rule("/d/*", Some("regex:)"), None),
        ],
    );
    c.max_wait = HumanDuration::millis(0);
    let fields: Vec<String> = Multiline::compile(&c).unwrap_err().into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        vec![
            "mode",
            "rules[0].match",
            "rules[1].start_pattern",
            "rules[2]",
            "rules[3].mode",
            "rules[4].mode",
            "max_wait"
        ]
    );
    assert!(Multiline::compile(&MultilineConfig::default()).is_ok());
    assert!(std::ptr::eq(Multiline::leak(&MultilineConfig::default()), Multiline::auto()));
}

proptest! {
    /// Whatever mix of traces and ordinary lines on two streams: every line comes out once,
    /// in its stream's order, no event exceeds the cap, and while a group is open its start
    /// is the smallest start of anything not yet out.
    #[test]
    fn lines_come_out_once_in_order(
        picks in proptest::collection::vec((0usize..14, any::<bool>()), 0..30),
        max in 40usize..400,
    ) {
        let mut j = Joiner::new(Mode::Auto, max, 1000);
        let mut fed: [Vec<String>; 2] = Default::default();
        let mut out: Vec<Line> = Vec::new();
        let mut off = 0u64;
        for (pick, stderr) in picks {
            let stream = if stderr { Stream::Stderr } else { Stream::Stdout };
            let text: Vec<&str> = match pick {
                0..=10 => FIXTURES[pick].1.trim_end().lines().collect(),
                11 => vec![BEFORE],
                12 => vec!["Error: alone"],
                _ => vec![""],
            };
            for l in text {
                fed[idx(stream)].push(l.to_string());
                let p = j.push(line(stream, l, off), 0);
                off += 1;
                out.extend(p.closed.into_iter().chain(p.line));
            }
        }
        out.extend(j.take_all());
        for stream in [Stream::Stdout, Stream::Stderr] {
            let events: Vec<&Line> = out.iter().filter(|l| l.stream == stream).collect();
            let mut starts: Vec<u64> = events.iter().map(|l| l.start).collect();
            let sorted = { let mut s = starts.clone(); s.sort(); s };
            prop_assert_eq!(&starts, &sorted);
            starts.dedup();
            prop_assert_eq!(starts.len(), events.len());
            for e in &events {
                prop_assert!(e.message.len() <= max.max(e.message.lines().next().unwrap_or("").len()));
            }
            if events.iter().all(|e| !e.truncated) {
                // Uncut: joining the events back gives the lines (blank trailing lines of
                // a trace aside, which carry nothing).
                let got: Vec<&str> = events.iter().flat_map(|e| e.message.split('\n')).filter(|l| !l.is_empty()).collect();
                let want: Vec<&str> = fed[idx(stream)].iter().map(String::as_str).filter(|l| !l.is_empty()).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}

/// The stage inside `FileTail`, on a real CRI file: resume offsets, batches, partials.
mod in_file {
    use super::*;
    use crate::event::Event;
    use crate::logs::metrics::LogMetrics;
    use crate::logs::tail::file::{FileTail, Limits, Opened, Out};
    use crate::logs::tail::identity::{FileId, Fingerprint};
    use std::io::Write;

    fn cri(stream: Stream, tag: &str, msg: &str) -> String {
        let s = if stream == Stream::Stdout { "stdout" } else { "stderr" };
        format!("2026-11-30T02:50:54.123456789Z {s} {tag} {msg}\n")
    }

    /// A line as CRI records, cut into `pieces` partials (P...P F) at byte counts.
    fn records(stream: Stream, msg: &str, pieces: usize) -> String {
        let b = msg.as_bytes();
        let step = b.len().div_ceil(pieces.max(1)).max(1);
        let chunks: Vec<&[u8]> = if b.is_empty() { vec![b""] } else { b.chunks(step).collect() };
        let mut out = String::new();
        for (i, c) in chunks.iter().enumerate() {
            // Byte cuts may split a character: the merger joins bytes, so a lossy piece
            // here would not round-trip; fixtures are ASCII except where noted.
            let c = std::str::from_utf8(c).expect("ASCII fixture");
            out += &cri(stream, if i + 1 < chunks.len() { "P" } else { "F" }, c);
        }
        out
    }

    struct Tail {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        t: FileTail,
        out: Out,
        m: LogMetrics,
    }

    impl Tail {
        fn new(first: &[u8], ml: &'static Multiline, max_line: usize, max_events: usize) -> Tail {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("0.log");
            std::fs::write(&path, first).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            let source = Arc::new(crate::event::Source {
                file: path.display().to_string(),
                node: "n".into(),
                kubernetes: Default::default(),
            });
            let t = FileTail::plain(Opened {
                key: 1,
                id: FileId { dev: 1, ino: 1 },
                fp: Fingerprint::of_bytes(first),
                path: path.as_path().into(),
                source,
                file,
                offset: 0,
                limits: Limits { max_line, max_raw: max_line + 4096, multiline: ml },
            });
            let m = LogMetrics::register(&prometheus::Registry::new()).unwrap();
            Tail { _dir: dir, path, t, out: Out::new(max_events, 0), m }
        }

        fn append(&mut self, data: &[u8]) {
            std::fs::OpenOptions::new().append(true).open(&self.path).unwrap().write_all(data).unwrap();
        }

        fn read(&mut self, buf_len: usize, now_ms: u64) {
            let mut buf = vec![0u8; buf_len];
            while self.t.read_slice(&mut buf, buf_len, now_ms, &mut self.out, &self.m).unwrap() > 0 {}
        }

        /// Every batch so far (the one being built last), sealed.
        fn batches(&mut self) -> Vec<(Vec<Event>, Vec<u64>)> {
            self.out.seal();
            self.out.ready.drain(..).map(|b| (b.events, b.positions.iter().map(|p| p.1).collect())).collect()
        }
    }

    /// Checks the checkpoint invariant over batches in order: no event's resume and no
    /// batch position passes the first record of an event that comes later.
    fn check_resume(batches: &[(Vec<Event>, Vec<u64>)]) -> Result<(), String> {
        let events: Vec<(usize, &Event)> =
            batches.iter().enumerate().flat_map(|(b, (es, _))| es.iter().map(move |e| (b, e))).collect();
        for (k, (_, e)) in events.iter().enumerate() {
            if let Some(later) = events[k + 1..].iter().map(|(_, l)| l.origin.offset).min()
                && e.origin.resume > later
            {
                return Err(format!(
                    "event at {} has resume {} past a later event at {later}",
                    e.origin.offset, e.origin.resume
                ));
            }
        }
        for (b, (_, positions)) in batches.iter().enumerate() {
            let later = events.iter().filter(|(eb, _)| *eb > b).map(|(_, e)| e.origin.offset).min();
            if let (Some(p), Some(later)) = (positions.iter().max(), later)
                && *p > later
            {
                return Err(format!("batch {b} position {p} passes a later event at {later}"));
            }
        }
        Ok(())
    }

    fn messages(batches: &[(Vec<Event>, Vec<u64>)], stream: Stream) -> Vec<String> {
        batches.iter().flat_map(|b| &b.0).filter(|e| e.stream == stream).map(|e| e.message.clone()).collect()
    }

    fn fixture(i: usize) -> &'static str {
        FIXTURES[i].1.trim_end()
    }

    /// A Java trace on stdout and a Python traceback on stderr, written line by line in
    /// turn, with ordinary lines around: two joined events, each on its stream.
    #[test]
    fn traces_interleaved_on_stdout_and_stderr() {
        let java: Vec<&str> = fixture(0).lines().collect();
        let py: Vec<&str> = fixture(1).lines().collect();
        let mut data = records(Stream::Stdout, BEFORE, 1) + &records(Stream::Stderr, BEFORE, 1);
        for i in 0..java.len().max(py.len()) {
            if let Some(l) = java.get(i) {
                data += &records(Stream::Stdout, l, 1);
            }
            if let Some(l) = py.get(i) {
                data += &records(Stream::Stderr, l, 1);
            }
        }
        data += &records(Stream::Stderr, AFTER, 1);
        data += &records(Stream::Stdout, AFTER, 1);
        let mut t = Tail::new(data.as_bytes(), Multiline::auto(), MAX, 0);
        t.read(7, 0);
        let b = t.batches();
        assert_eq!(messages(&b, Stream::Stdout), vec![BEFORE, fixture(0), AFTER]);
        assert_eq!(messages(&b, Stream::Stderr), vec![BEFORE, fixture(1), AFTER]);
        check_resume(&b).unwrap();
        assert_eq!(t.t.resume(), data.len() as u64);
    }

    /// Trace lines cut into CRI partials (P, P, F): merged first, then joined.
    #[test]
    fn trace_split_across_cri_partials() {
        let mut data = String::new();
        for (i, l) in fixture(2).lines().enumerate() {
            data += &records(Stream::Stderr, l, 1 + i % 3);
        }
        data += &records(Stream::Stderr, AFTER, 2);
        let mut t = Tail::new(data.as_bytes(), Multiline::auto(), MAX, 0);
        t.read(16, 0);
        let b = t.batches();
        assert_eq!(messages(&b, Stream::Stderr), vec![fixture(2), AFTER]);
        check_resume(&b).unwrap();
    }

    /// While a trace's group is open its resume holds at the trace's first record, also for
    /// lines of the other stream emitted meanwhile; `max_wait` after the first line (the
    /// file read to its end) the group ships and resume moves on.
    #[test]
    fn open_group_holds_resume_until_max_wait() {
        let head: Vec<&str> = fixture(0).lines().take(3).collect();
        let mut data = records(Stream::Stdout, BEFORE, 1);
        let trace_start = data.len() as u64;
        for l in &head {
            data += &records(Stream::Stdout, l, 1);
        }
        let mut t = Tail::new(data.as_bytes(), Multiline::auto(), MAX, 0);
        t.read(4096, 1000);
        assert_eq!(t.t.resume(), trace_start);
        let other = records(Stream::Stderr, AFTER, 1);
        t.append(other.as_bytes());
        t.read(4096, 1500);
        t.t.flush_expired(1999, 60_000, &mut t.out);
        assert_eq!(t.t.resume(), trace_start, "group still open before max_wait");
        t.t.flush_expired(2000, 60_000, &mut t.out);
        let b = t.batches();
        assert_eq!(messages(&b, Stream::Stderr), vec![AFTER]);
        assert_eq!(messages(&b, Stream::Stdout), vec![BEFORE.to_string(), head.join("\n")]);
        let stderr = b[0].0.iter().find(|e| e.stream == Stream::Stderr).unwrap();
        assert_eq!(stderr.origin.resume, trace_start);
        assert_eq!(t.t.resume(), (data.len() + other.len()) as u64);
        check_resume(&b).unwrap();
    }

    /// Batches sealed in the middle of traces (one event per batch): a batch never
    /// carries a position past the line that closed a group and comes in the next batch.
    #[test]
    fn batch_sealed_between_a_group_and_the_line_that_closed_it() {
        let mut data = String::new();
        for i in [0, 6, 9] {
            for l in fixture(i).lines() {
                data += &records(Stream::Stdout, l, 1);
            }
            data += &records(Stream::Stdout, AFTER, 1);
        }
        let mut t = Tail::new(data.as_bytes(), Multiline::auto(), MAX, 1);
        t.read(4096, 0);
        t.t.finish(0, &mut t.out, &t.m);
        let b = t.batches();
        assert_eq!(b.len(), 6);
        check_resume(&b).unwrap();
    }

    #[test]
    fn joined_event_is_capped_at_max_line_bytes_and_flagged() {
        let mut data = String::new();
        for l in fixture(0).lines() {
            data += &records(Stream::Stdout, l, 1);
        }
        data += &records(Stream::Stdout, AFTER, 1);
        let mut t = Tail::new(data.as_bytes(), Multiline::auto(), 300, 0);
        t.read(4096, 0);
        let b = t.batches();
        let events = &b[0].0;
        assert_eq!(events.len(), 2);
        assert!(events[0].truncated && events[0].message.len() <= 300);
        assert!(fixture(0).starts_with(&events[0].message));
        assert_eq!((events[1].message.as_str(), events[1].truncated), (AFTER, false));
        assert_eq!(t.out.truncated, 1);
    }

    #[test]
    fn off_ships_every_line() {
        let mut data = String::new();
        for l in fixture(0).lines() {
            data += &records(Stream::Stdout, l, 1);
        }
        let mut t = Tail::new(data.as_bytes(), Multiline::off(), MAX, 0);
        t.read(4096, 0);
        assert_eq!(t.batches()[0].0.len(), fixture(0).lines().count());
    }

    /// The one call the Kubernetes metadata will make: the pod's annotation switches the
    /// file's mode; an invalid one keeps the configured mode.
    #[test]
    fn the_annotation_sets_the_files_mode() {
        let mut data = String::new();
        for l in fixture(0).lines() {
            data += &records(Stream::Stdout, l, 1);
        }
        let n = fixture(0).lines().count();
        for (annotation, events) in [(Some("off"), n), (Some("python"), n), (Some("regex:(("), 1), (None, 1)] {
            let mut t = Tail::new(data.as_bytes(), Multiline::auto(), MAX, 0);
            t.t.set_multiline_annotation(annotation, &mut t.out);
            t.read(4096, 0);
            t.t.finish(0, &mut t.out, &t.m);
            assert_eq!(t.batches()[0].0.len(), events, "{annotation:?}");
        }
    }

    /// The pod becomes known while a trace is open under the configured mode: the open group
    /// ships before the lines read under the pod's mode, so the file's order holds.
    #[test]
    fn a_group_open_when_the_annotation_arrives_ships_before_the_lines_after_it() {
        let head: Vec<&str> = fixture(0).lines().take(2).collect();
        let data: String = head.iter().map(|l| records(Stream::Stdout, l, 1)).collect();
        let mut t = Tail::new(data.as_bytes(), Multiline::auto(), MAX, 0);
        t.read(4096, 0);
        t.t.set_multiline_annotation(Some("off"), &mut t.out);
        t.append(records(Stream::Stdout, "after", 1).as_bytes());
        t.read(4096, 0);
        t.t.finish(0, &mut t.out, &t.m);
        let batches = t.batches();
        let got: Vec<String> = batches.iter().flat_map(|b| b.0.iter().map(|e| e.message.clone())).collect();
        assert_eq!(got, [head.join("\n"), "after".to_string()]);
        check_resume(&batches).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Traces and ordinary lines on both streams, lines cut into partials, the file
        /// written in chunks, read in slices of any size, max_wait expiring at random
        /// points, batches of 1 to 4 events: every line is delivered once, in its stream's
        /// order, and no resume offset or batch position passes an unfinished group.
        #[test]
        fn no_resume_passes_an_unfinished_group(
            picks in proptest::collection::vec((0usize..13, any::<bool>(), 1usize..4, any::<bool>()), 1..16),
            buf_len in 1usize..200,
            max_events in 1usize..5,
        ) {
            let mut chunks: Vec<(String, bool)> = Vec::new();
            let mut fed: [Vec<String>; 2] = Default::default();
            for (pick, stderr, pieces, expire) in picks {
                let stream = if stderr { Stream::Stderr } else { Stream::Stdout };
                let text: Vec<&str> = match pick {
                    0..=10 => fixture(pick).lines().collect(),
                    11 => vec![BEFORE],
                    _ => vec!["Error: alone"],
                };
                let mut chunk = String::new();
                for l in text {
                    fed[idx(stream)].push(l.to_string());
                    chunk += &records(stream, l, pieces);
                }
                chunks.push((chunk, expire));
            }
            let mut t = Tail::new(chunks[0].0.as_bytes(), Multiline::auto(), MAX, max_events);
            let mut now = 0;
            for (i, (chunk, expire)) in chunks.iter().enumerate() {
                if i > 0 {
                    t.append(chunk.as_bytes());
                }
                t.read(buf_len, now);
                if *expire {
                    now += 1000;
                    t.t.flush_expired(now, 60_000, &mut t.out);
                }
            }
            t.t.finish(now, &mut t.out, &t.m);
            let b = t.batches();
            check_resume(&b).map_err(TestCaseError::fail)?;
            for stream in [Stream::Stdout, Stream::Stderr] {
                let got: Vec<String> = messages(&b, stream).iter().flat_map(|m| m.split('\n')).filter(|l| !l.is_empty()).map(String::from).collect();
                let want: Vec<String> = fed[idx(stream)].iter().filter(|l| !l.is_empty()).cloned().collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
