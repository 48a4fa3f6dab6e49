//! Multiline: an exception stack trace written over many lines becomes one event.
//!
//! The stage runs per file and per stream, after the partial-line merge (a trace line split
//! into CRI `P`/`F` pieces is whole before it gets here) and before the event is built:
//! `FileTail` hands every merged line to its `Joiner` and emits what comes back.
//!
//! Key decision: detection is a small hand-written state machine per language, not a list of
//! regexes tried on every line (the way fluent-plugin-detect-exceptions and Google's Ops Agent
//! describe trace shapes, with `(state, pattern) -> next state` rules). A line that is not in an
//! open group only has its first byte looked at, plus, when it starts with a letter, its first
//! word (up to the first blank, at most 256 bytes): a trace starts at column 0 with a fixed
//! header (`Traceback (most recent call last):`, `panic: `, `goroutine 1 [running]:`,
//! `PHP Fatal error:`, `Unhandled exception. `) or with an exception class
//! (`java.lang.IllegalStateException: boom`, `TypeError: x`, `app.rb:3:in ...`). Rejected:
//! an unanchored search for `Exception:` in every line (what detect-exceptions does for Java):
//! it costs a scan of every byte of every line, and `printStackTrace`, logback, log4j, Node,
//! .NET and Ruby all print the exception line at column 0. The price: an exception written in
//! the middle of a log line (`... ERROR x: java.lang.Exception: y`) does not start a group.
//!
//! What is joined is only what the language's rules accept after the start: frames
//! (`\tat `, `  File `, `\t/path.go:12 +0x1d`, `#0 `), `Caused by:`, `... 3 more`, inner
//! exceptions, goroutine headers, the blank lines between goroutines. The first line the rules
//! do not accept closes the group (the group is emitted, that line goes on alone or starts the
//! next group), so an ordinary line is delayed only while a group of its stream is open, and a
//! group is shipped at the latest `max_wait` after its first line. A line that looks like a
//! start but is not followed by a frame (`Error: not found`) ships alone.
//!
//! `regex:<pattern>` (and a rule's `start_pattern`) is the usual "first line" mode of Promtail
//! and Fluent Bit: a line matching the pattern starts a group, every following line that does
//! not match is appended.
//!
//! **Invariant:** a line in an open group is not delivered, so `FileTail::resume` never passes
//! the start of an open group (`Joiner::pending_start`), as for pending partials.

use crate::event::Stream;
use crate::logs::config::MultilineConfig;
use crate::logs::parse::merge::Line;
use regex::Regex;
use std::path::Path;
use std::sync::{Arc, LazyLock};

/// A language whose traces are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Java,
    Python,
    Go,
    Nodejs,
    Ruby,
    Php,
    Dotnet,
}

impl Language {
    pub const ALL: [Language; 7] = [
        Language::Java,
        Language::Python,
        Language::Go,
        Language::Nodejs,
        Language::Ruby,
        Language::Php,
        Language::Dotnet,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Language::Java => "java",
            Language::Python => "python",
            Language::Go => "go",
            Language::Nodejs => "nodejs",
            Language::Ruby => "ruby",
            Language::Php => "php",
            Language::Dotnet => "dotnet",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// How one file's lines are joined.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Every line is its own event.
    Off,
    /// The traces of every known language.
    Auto,
    /// The traces of one language only.
    Language(Language),
    /// A line matching the pattern starts an event; the lines after it that do not match are
    /// appended to it.
    Regex(Arc<Regex>),
}

impl PartialEq for Mode {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Mode::Off, Mode::Off) | (Mode::Auto, Mode::Auto) => true,
            (Mode::Language(a), Mode::Language(b)) => a == b,
            (Mode::Regex(a), Mode::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// The grammar of `multiline.mode`, a rule's `mode` and the `vigil.io/multiline` annotation.
pub const MODE_HELP: &str = "expected off, auto, java, python, go, nodejs, ruby, php, dotnet or regex:<start-pattern>";

impl Mode {
    /// Parses `off | auto | <language> | regex:<start-pattern>` (the pattern is compiled here).
    pub fn parse(s: &str) -> Result<Mode, String> {
        let t = s.trim();
        if let Some(pattern) = t.strip_prefix("regex:") {
            return compile(pattern).map(Mode::Regex);
        }
        match t {
            "off" => Ok(Mode::Off),
            "auto" => Ok(Mode::Auto),
            _ => Language::ALL
                .into_iter()
                .find(|l| l.name() == t)
                .map(Mode::Language)
                .ok_or_else(|| format!("'{s}' is not a multiline mode; {MODE_HELP}")),
        }
    }

    /// The languages whose starts are recognised (0: none, or a regex).
    fn languages(&self) -> u8 {
        match self {
            Mode::Auto => Language::ALL.iter().fold(0, |a, l| a | l.bit()),
            Mode::Language(l) => l.bit(),
            Mode::Off | Mode::Regex(_) => 0,
        }
    }
}

fn compile(pattern: &str) -> Result<Arc<Regex>, String> {
    if pattern.is_empty() {
        return Err("the start pattern is empty; expected a regex matching a first line, e.g. ^\\d{4}-".into());
    }
    Regex::new(pattern).map(Arc::new).map_err(|e| format!("'{pattern}' is not a valid regex: {e}"))
}

/// A `rules` entry, compiled.
#[derive(Debug)]
struct Rule {
    matcher: globset::GlobMatcher,
    mode: Mode,
}

/// `sources.containers.multiline`, compiled at config load: which mode each file gets.
#[derive(Debug)]
pub struct Multiline {
    mode: Mode,
    rules: Vec<Rule>,
    pub max_wait_ms: u64,
}

static OFF: LazyLock<Multiline> = LazyLock::new(|| Multiline { mode: Mode::Off, rules: Vec::new(), max_wait_ms: 1000 });
static AUTO: LazyLock<Multiline> =
    LazyLock::new(|| Multiline { mode: Mode::Auto, rules: Vec::new(), max_wait_ms: 1000 });

impl Multiline {
    /// Multiline off for every file.
    pub fn off() -> &'static Multiline {
        &OFF
    }

    /// `auto` for every file, `max_wait` 1s (the default config).
    pub fn auto() -> &'static Multiline {
        &AUTO
    }

    /// Compiles the config; every problem is returned as (field path below `multiline`,
    /// message), so `validate` can name them all.
    pub fn compile(c: &MultilineConfig) -> Result<Multiline, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mode = Mode::parse(&c.mode).unwrap_or_else(|e| {
            problems.push(("mode".to_string(), e));
            Mode::Off
        });
        let mut rules = Vec::new();
        for (i, r) in c.rules.iter().enumerate() {
            let matcher = match globset::Glob::new(&r.matches) {
                Ok(g) => Some(g.compile_matcher()),
                Err(e) => {
                    problems.push((
                        format!("rules[{i}].match"),
                        format!("'{}' is not a glob ({e}); expected e.g. /var/log/pods/shop_*/*/*.log", r.matches),
                    ));
                    None
                }
            };
            let mode = match (&r.mode, &r.start_pattern) {
                (None, None) => {
                    problems.push((format!("rules[{i}]"), format!("has neither mode nor start_pattern; {MODE_HELP}")));
                    None
                }
                (Some(m), None) => match Mode::parse(m) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        problems.push((format!("rules[{i}].mode"), e));
                        None
                    }
                },
                (m, Some(p)) => {
                    if let Some(m) = m.as_deref().filter(|m| m.trim() != "regex") {
                        problems.push((
                            format!("rules[{i}].mode"),
                            format!("'{m}' cannot go with start_pattern; leave mode out or set it to regex"),
                        ));
                    }
                    match compile(p) {
                        Ok(re) => Some(Mode::Regex(re)),
                        Err(e) => {
                            problems.push((format!("rules[{i}].start_pattern"), e));
                            None
                        }
                    }
                }
            };
            if let (Some(matcher), Some(mode)) = (matcher, mode) {
                rules.push(Rule { matcher, mode });
            }
        }
        if c.max_wait.get().is_zero() {
            problems.push(("max_wait".to_string(), format!("'{}' must be more than zero; e.g. 1s", c.max_wait)));
        }
        if problems.is_empty() {
            Ok(Multiline { mode, rules, max_wait_ms: c.max_wait.get().as_millis() as u64 })
        } else {
            Err(problems)
        }
    }

    /// Compiles a config that passed `validate` for the tailer, which keeps it for the life of
    /// the process (`Limits` is `Copy`, so it holds a `&'static`): the default config and
    /// `off` share one static, any other costs a few hundred bytes per load.
    pub fn leak(c: &MultilineConfig) -> &'static Multiline {
        if c.rules.is_empty() && c.max_wait.get().as_millis() == 1000 {
            match c.mode.trim() {
                "auto" => return Self::auto(),
                "off" => return Self::off(),
                _ => {}
            }
        }
        match Self::compile(c) {
            Ok(m) => Box::leak(Box::new(m)),
            // Unreachable after `validate`; off is the safe reading of a bad config.
            Err(_) => Self::off(),
        }
    }

    /// The mode of one file: the pod's `vigil.io/multiline` annotation when it is set and
    /// valid, else the first rule whose `match` glob matches `path`, else `mode`. An invalid
    /// annotation is ignored; its error is returned for the caller to log.
    pub fn select(&self, path: &Path, annotation: Option<&str>) -> (Mode, Option<String>) {
        let mut error = None;
        if let Some(a) = annotation {
            match Mode::parse(a) {
                Ok(m) => return (m, None),
                Err(e) => error = Some(format!("annotation vigil.io/multiline: {e}")),
            }
        }
        let mode = self.rules.iter().find(|r| r.matcher.is_match(path)).map_or(&self.mode, |r| &r.mode);
        (mode.clone(), error)
    }
}

/// Where a group is in its trace: which lines may come next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// Java, Node.js, .NET: after an exception line (also `Caused by:`, ` ---> `).
    Exc,
    /// After at least one `at` frame.
    Frames,
    /// A blank line after frames: Node.js may print `Node.js v20.1.0` next.
    FramesBlank,
    /// ASP.NET Core's console logger (`fail: Category[0]`): its lines are indented 6 spaces.
    DotnetLogger,
    /// Python: after `Traceback (most recent call last):`: a `  File` line follows.
    PyStart,
    /// Inside its frames.
    PyFrames,
    /// After the exception line that ends a traceback.
    PyExc,
    /// A blank line after it: a chained traceback may follow.
    PyBlank,
    /// After `During handling of the above exception...`: blank lines, then `Traceback`.
    PyChain,
    /// Go: after `panic: `, `fatal error: `, `SIGQUIT: quit`.
    GoPanic,
    /// A blank line: a goroutine header may follow.
    GoBlank,
    /// After a goroutine header or a file:line location: a function line may follow.
    GoLoc,
    /// After a function line: its `\t/path/file.go:12 +0x1d` location follows.
    GoFunc,
    /// Ruby: after `app.rb:3:in 'm': msg (Error)` or a `from` frame.
    Ruby,
    /// Rails: after `NoMethodError (msg):`; blank lines, then `app/x.rb:3:in` frames.
    RubyRails,
    /// PHP: after `PHP Fatal error:  Uncaught ...`; `Stack trace:` follows.
    PhpMsg,
    /// After `Stack trace:`: `#0 ...` frames, then `  thrown in ...` ends it.
    PhpFrames,
    /// `regex:`: every line not matching the start pattern.
    Regex,
    /// The trace's last line was seen: ship it now.
    End,
}

fn is_blank(b: &[u8]) -> bool {
    b.iter().all(|c| *c == b' ' || *c == b'\t' || *c == b'\r')
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| **c == b' ' || **c == b'\t').count();
    &b[n..]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// `goroutine 1 [running]:` (also `goroutine 7 gp=0x... m=nil [chan receive]:`).
fn is_goroutine_header(b: &[u8]) -> bool {
    b.strip_prefix(b"goroutine ").is_some_and(|r| r.first().is_some_and(u8::is_ascii_digit) && r.ends_with(b"]:"))
}

/// `... 12 more`, `... 3 common frames omitted` (after trimming).
fn is_java_more(t: &[u8]) -> bool {
    t.strip_prefix(b"... ").is_some_and(|r| {
        let d = r.iter().take_while(|c| c.is_ascii_digit()).count();
        d > 0 && (r[d..] == *b" more" || r[d..].starts_with(b" common frames omitted"))
    })
}

/// An exception class name: identifier characters and dots, ending with a usual suffix.
fn is_exception_name(name: &[u8]) -> bool {
    (name.ends_with(b"Exception") || name.ends_with(b"Error") || name.ends_with(b"Throwable"))
        && name.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'$'))
}

/// PHP's error lines, with or without error_log's `[30-Nov-2026 02:50:54 UTC] ` prefix.
fn is_php_start(b: &[u8]) -> bool {
    let b = if b.first() == Some(&b'[') {
        match memchr::memchr(b']', &b[..b.len().min(64)]) {
            Some(i) => trim_start(&b[i + 1..]),
            None => return false,
        }
    } else {
        b
    };
    let b = b.strip_prefix(b"PHP ").unwrap_or(b);
    b.starts_with(b"Fatal error: ")
        || b.starts_with(b"Warning: ")
        || b.starts_with(b"Notice: ")
        || b.starts_with(b"Parse error: ")
}

const JAVA: u8 = 1 << Language::Java as u8;
const PYTHON: u8 = 1 << Language::Python as u8;
const GO: u8 = 1 << Language::Go as u8;
const NODEJS: u8 = 1 << Language::Nodejs as u8;
const RUBY: u8 = 1 << Language::Ruby as u8;
const PHP: u8 = 1 << Language::Php as u8;
const DOTNET: u8 = 1 << Language::Dotnet as u8;
/// The languages whose exceptions are a class name and `at` frames.
const AT_FRAMES: u8 = JAVA | NODEJS | DOTNET;

/// Whether `b` starts a trace of one of `langs`, and the state after it. The hot path: most
/// lines are rejected on their first byte (a digit, `{`, `[`, a quote).
fn starts(langs: u8, b: &[u8]) -> Option<St> {
    let &first = b.first()?;
    let fixed = match first {
        b'T' if langs & PYTHON != 0 && b.starts_with(b"Traceback (most recent call last):") => Some(St::PyStart),
        b'p' if langs & GO != 0 && b.starts_with(b"panic: ") => Some(St::GoPanic),
        b'f' if langs & GO != 0 && b.starts_with(b"fatal error: ") => Some(St::GoPanic),
        b'f' if langs & DOTNET != 0 && b.starts_with(b"fail: ") => Some(St::DotnetLogger),
        b'c' if langs & DOTNET != 0 && b.starts_with(b"crit: ") => Some(St::DotnetLogger),
        b'g' if langs & GO != 0 && is_goroutine_header(b) => Some(St::GoLoc),
        b'S' if langs & GO != 0
            && b.starts_with(b"SIG")
            && b.get(3..8).is_some_and(|s| s.iter().all(u8::is_ascii_uppercase))
            && b.windows(2).take(12).any(|w| w == b": ") =>
        {
            Some(St::GoPanic)
        }
        b'U' if langs & DOTNET != 0
            && (b.starts_with(b"Unhandled exception. ") || b.starts_with(b"Unhandled Exception: ")) =>
        {
            Some(St::Exc)
        }
        b'E' if langs & JAVA != 0 && b.starts_with(b"Exception in thread \"") => Some(St::Exc),
        // The rest of a trace whose head is in another file (cut by rotation).
        b'C' if langs & JAVA != 0 && b.starts_with(b"Caused by: ") => Some(St::Exc),
        b'P' | b'[' if langs & PHP != 0 && is_php_start(b) => Some(St::PhpMsg),
        _ => None,
    };
    if fixed.is_some() {
        return fixed;
    }
    if !(first.is_ascii_alphabetic() || first == b'_' || first == b'$' || first == b'/' || first == b'.') {
        return None;
    }
    // The first word.
    let head = &b[..b.len().min(256)];
    let sp = memchr::memchr2(b' ', b'\t', head).unwrap_or(b.len());
    let word = &b[..sp.min(b.len())];
    if langs & RUBY != 0 {
        // `app.rb:3:in 'divide': divided by 0 (ZeroDivisionError)` (uncaught, Ruby 2 and 3).
        if word.ends_with(b":in") && contains(word, b".rb:") {
            return Some(St::Ruby);
        }
        // Rails: `ActionView::Template::Error (undefined method 'x' for nil):`
        if (word.ends_with(b"Error") || word.ends_with(b"Exception") || word.ends_with(b"Invalid"))
            && b[sp..].starts_with(b" (")
            && b.ends_with(b"):")
            && word.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b':' | b'_'))
        {
            return Some(St::RubyRails);
        }
    }
    if langs & AT_FRAMES != 0 {
        // `java.lang.IllegalStateException: boom`, `TypeError: x`, `System.Exception: y`,
        // `java.lang.OutOfMemoryError` alone, `Error [ERR_X]: z` (Node.js codes).
        let (name, ok) = match memchr::memchr(b':', word) {
            Some(i) => (&word[..i], true),
            None => (word, sp >= b.len() || b[sp..].starts_with(b" [")),
        };
        if ok && is_exception_name(name) {
            return Some(St::Exc);
        }
    }
    None
}

/// Whether `b` goes on the trace in state `st`, and the state after it.
fn continues(st: St, b: &[u8]) -> Option<St> {
    let t = trim_start(b);
    let indented = t.len() < b.len();
    match st {
        St::Exc | St::Frames => {
            if indented && t.starts_with(b"at ") || t.starts_with(b"--- End of ") || is_java_more(t) {
                Some(St::Frames)
            } else if t.starts_with(b"Caused by: ")
                || t.starts_with(b"Suppressed: ")
                || t.starts_with(b"Wrapped by: ")
                || t.starts_with(b"---> ")
            {
                Some(St::Exc)
            } else if st == St::Frames && indented {
                // Node.js error properties (`  code: 'ENOENT',`), `[cause]:` blocks, frames of
                // unusual shape: indented lines right after frames belong to the trace.
                Some(St::Frames)
            } else if st == St::Frames && b == b"}" {
                Some(St::End)
            } else if st == St::Frames && b.is_empty() {
                Some(St::FramesBlank)
            } else {
                None
            }
        }
        St::FramesBlank => b.starts_with(b"Node.js v").then_some(St::End),
        St::DotnetLogger => b.starts_with(b"      ").then_some(St::DotnetLogger),
        St::PyStart => indented.then_some(St::PyFrames),
        St::PyFrames => {
            if indented {
                Some(St::PyFrames)
            } else if is_blank(b) {
                None
            } else {
                // `ValueError: bad`, `KeyError: 'x'`, `mod.CustomError`: the traceback's end.
                Some(St::PyExc)
            }
        }
        St::PyExc => {
            if b.is_empty() {
                Some(St::PyBlank)
            } else if indented {
                Some(St::PyExc)
            } else {
                None
            }
        }
        St::PyBlank => (b.starts_with(b"During handling of the above exception")
            || b.starts_with(b"The above exception was the direct cause"))
        .then_some(St::PyChain),
        St::PyChain => {
            if b.is_empty() {
                Some(St::PyChain)
            } else {
                b.starts_with(b"Traceback (most recent call last):").then_some(St::PyStart)
            }
        }
        St::GoPanic => {
            if b.is_empty() {
                Some(St::GoBlank)
            } else if is_goroutine_header(b) {
                Some(St::GoLoc)
            } else if indented || b.starts_with(b"[signal ") || b.starts_with(b"panic: ") || b.starts_with(b"PC=") {
                Some(St::GoPanic)
            } else {
                None
            }
        }
        St::GoBlank => {
            if b.is_empty() {
                Some(St::GoBlank)
            } else {
                is_goroutine_header(b).then_some(St::GoLoc)
            }
        }
        St::GoLoc => {
            if b.is_empty() {
                Some(St::GoBlank)
            } else if is_goroutine_header(b) {
                Some(St::GoLoc)
            } else if b.starts_with(b"exit status ") {
                Some(St::End)
            } else if !indented
                && (b.ends_with(b")") && contains(b, b"(")
                    || b.starts_with(b"created by ")
                    || b.starts_with(b"...additional frames elided..."))
            {
                Some(St::GoFunc)
            } else {
                None
            }
        }
        St::GoFunc => b.starts_with(b"\t").then_some(St::GoLoc),
        St::Ruby => {
            (indented && (t.starts_with(b"from ") || t.starts_with(b"...") || contains(t, b".rb:"))).then_some(St::Ruby)
        }
        St::RubyRails => {
            if is_blank(b) || contains(t, b"rb:") && contains(t, b":in ") {
                Some(St::RubyRails)
            } else {
                None
            }
        }
        St::PhpMsg => t.starts_with(b"Stack trace:").then_some(St::PhpFrames),
        St::PhpFrames => {
            if t.starts_with(b"thrown in ") {
                Some(St::End)
            } else if b.first() == Some(&b'#') && b.get(1).is_some_and(u8::is_ascii_digit) {
                Some(St::PhpFrames)
            } else {
                None
            }
        }
        St::Regex | St::End => None,
    }
}

/// A trace being collected: its first line, with the others appended (`\n`-separated).
#[derive(Debug)]
struct Group {
    line: Line,
    state: St,
    since_ms: u64,
    /// The message reached the cap: further lines are absorbed but not kept.
    full: bool,
}

impl Group {
    fn append(&mut self, l: &Line, max: usize) {
        self.line.invalid_utf8 |= l.invalid_utf8;
        self.line.truncated |= l.truncated;
        if self.full {
            return;
        }
        let msg = &mut self.line.message;
        if msg.len() + 1 + l.message.len() <= max {
            msg.push('\n');
            msg.push_str(&l.message);
            return;
        }
        // Cut at the cap, at a character boundary; the rest of the trace is dropped.
        self.full = true;
        self.line.truncated = true;
        if msg.len() < max {
            let mut room = max - msg.len() - 1;
            while !l.message.is_char_boundary(room) {
                room -= 1;
            }
            msg.push('\n');
            msg.push_str(&l.message[..room]);
        }
    }

    fn finish(mut self) -> Line {
        // Blank lines accepted in case more of the trace followed carry nothing at its end.
        let msg = &mut self.line.message;
        while let Some(i) = msg.rfind('\n')
            && is_blank(&msg.as_bytes()[i + 1..])
        {
            msg.truncate(i);
        }
        self.line
    }
}

fn idx(s: Stream) -> usize {
    match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// One file's multiline state: one open group per stream at most.
#[derive(Debug)]
pub struct Joiner {
    mode: Mode,
    langs: u8,
    max: usize,
    max_wait_ms: u64,
    open: [Option<Group>; 2],
}

/// What `Joiner::push` gives back, in the order to emit: a group that the line closed, then
/// the line itself when it is not held.
#[derive(Debug, Default)]
pub struct Pushed {
    pub closed: Option<Line>,
    pub line: Option<Line>,
}

impl Joiner {
    /// `max`: the longest joined message (bytes); `max_wait_ms`: a group is shipped at the
    /// latest this long after its first line.
    pub fn new(mode: Mode, max: usize, max_wait_ms: u64) -> Self {
        let langs = mode.languages();
        Self { mode, langs, max, max_wait_ms, open: [None, None] }
    }

    pub fn is_off(&self) -> bool {
        matches!(self.mode, Mode::Off)
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Changes the mode for the lines to come (a group already open goes on under its rules).
    pub fn set_mode(&mut self, mode: Mode) {
        self.langs = mode.languages();
        self.mode = mode;
    }

    /// Feeds one whole line at `now_ms`.
    pub fn push(&mut self, line: Line, now_ms: u64) -> Pushed {
        if self.is_off() {
            return Pushed { closed: None, line: Some(line) };
        }
        let i = idx(line.stream);
        let mut closed = None;
        if let Some(g) = &mut self.open[i] {
            let next = match &self.mode {
                Mode::Regex(re) if g.state == St::Regex => (!re.is_match(&line.message)).then_some(St::Regex),
                _ => continues(g.state, line.message.as_bytes()),
            };
            match next {
                Some(St::End) => {
                    g.append(&line, self.max);
                    let g = self.open[i].take().expect("open");
                    return Pushed { closed: Some(g.finish()), line: None };
                }
                Some(st) => {
                    g.append(&line, self.max);
                    g.state = st;
                    return Pushed::default();
                }
                None => closed = self.open[i].take().map(Group::finish),
            }
        }
        let start = match &self.mode {
            Mode::Regex(re) => re.is_match(&line.message).then_some(St::Regex),
            _ => starts(self.langs, line.message.as_bytes()),
        };
        match start {
            Some(state) => {
                self.open[i] = Some(Group { line, state, since_ms: now_ms, full: false });
                Pushed { closed, line: None }
            }
            None => Pushed { closed, line: Some(line) },
        }
    }

    /// The smallest start offset of an open group: reading must resume there or earlier.
    pub fn pending_start(&self) -> Option<u64> {
        self.open.iter().flatten().map(|g| g.line.start).min()
    }

    pub fn has_open(&self) -> bool {
        self.open.iter().any(Option::is_some)
    }

    /// Takes the groups opened `max_wait` or longer ago, oldest first.
    pub fn take_expired(&mut self, now_ms: u64) -> Vec<Line> {
        let mut out = Vec::new();
        for slot in &mut self.open {
            if slot.as_ref().is_some_and(|g| now_ms.saturating_sub(g.since_ms) >= self.max_wait_ms) {
                out.extend(slot.take().map(Group::finish));
            }
        }
        out.sort_by_key(|l| l.start);
        out
    }

    /// Takes every open group (the file is finished), oldest first.
    pub fn take_all(&mut self) -> Vec<Line> {
        let mut out: Vec<Line> = self.open.iter_mut().filter_map(|s| s.take().map(Group::finish)).collect();
        out.sort_by_key(|l| l.start);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;
    use crate::logs::config::MultilineRule;
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;

    /// Real-looking traces, written by hand (`tests/fixtures/multiline/`).
    const FIXTURES: [(&str, &str); 11] = [
        ("java", include_str!("../../tests/fixtures/multiline/java.txt")),
        ("python", include_str!("../../tests/fixtures/multiline/python.txt")),
        ("go", include_str!("../../tests/fixtures/multiline/go_panic.txt")),
        ("go", include_str!("../../tests/fixtures/multiline/go_goroutines.txt")),
        ("nodejs", include_str!("../../tests/fixtures/multiline/nodejs.txt")),
        ("nodejs", include_str!("../../tests/fixtures/multiline/nodejs_uncaught.txt")),
        ("ruby", include_str!("../../tests/fixtures/multiline/ruby.txt")),
        ("ruby", include_str!("../../tests/fixtures/multiline/ruby_rails.txt")),
        ("php", include_str!("../../tests/fixtures/multiline/php.txt")),
        ("dotnet", include_str!("../../tests/fixtures/multiline/dotnet.txt")),
        ("dotnet", include_str!("../../tests/fixtures/multiline/dotnet_logger.txt")),
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
        assert_eq!(
            got,
            vec![(Stream::Stdout, java.join("\n").as_str(), 0), (Stream::Stderr, py.join("\n").as_str(), 1)]
        );
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
        let got =
            run(mode, &["2026-11-30 first", "  detail a", "detail b", "2026-11-30 second", "2026-11-30 third", "x"]);
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
                    path: path.clone(),
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
                t.t.set_multiline_annotation(annotation);
                t.read(4096, 0);
                t.t.finish(0, &mut t.out, &t.m);
                assert_eq!(t.batches()[0].0.len(), events, "{annotation:?}");
            }
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
}
