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
mod tests;
