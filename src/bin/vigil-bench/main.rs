//! vigil-bench: the cost of the log pipeline, measured on the real binary, in one table.
//!
//! Rows (one run prints all of them):
//! - throughput: CRI and docker json-file data sets (`--files` files, `--mb` MB of 200-byte
//!   lines) read by `cat` (the reading ceiling) and by `vigil run` into the file sink (default
//!   sync and `sync: never`), Loki, Elasticsearch and OTLP. CPU seconds per GB are user +
//!   system of the measured process from `wait4`; the HTTP receivers run inside vigil-bench
//!   (`receiver`), so their decoding is never charged to vigil; "over file" is the sink's cost
//!   beyond the file sink without fsync (its encoding and HTTP).
//! - latency: one container writing 10,000 lines/s, each line stamped with its write time;
//!   write-to-delivery p50 / p99 / max to the file sink (read back every millisecond) and to
//!   Loki with default batching (taken when the receiver answers).
//! - fairness: one container at 12,000 lines/s and five at 5 lines/s into an Elasticsearch
//!   receiver capped at 5,000 documents/s: the quiet containers' latency and the noisy one's
//!   throughput.
//! - idle / many files: `scripts/bench-idle.sh` (when present) is run for each of `--idle-files`
//!   (1,000 and 10,000) idle files and its output printed: idle CPU, peak RSS, start-up.
//! - scrape: CPU per `/metrics` scrape against `prometheus-node-exporter` when it is installed
//!   (`scrape`), each with its default collectors.
//! - `--compare fluent-bit=PATH|vector=PATH`: the same throughput rows for another agent.
//!
//! The machine is shared: every throughput row is the best (least CPU) of `--repeat` runs, and
//! the spread (worst / best − 1) is printed next to it. `--quick --check FILE` is the regression
//! guard (see `check`).
//!
//! Usage: see `USAGE` (`vigil-bench --help`). Expects the `vigil` binary next to itself.

mod check;
mod compare;
mod data;
mod proc;
mod receiver;
mod scenarios;
mod scrape;

use data::Fmt;
use proc::Usage;
use receiver::{Kind, Receiver};
use scenarios::Target;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: cargo build --release --bin vigil --bin vigil-bench && target/release/vigil-bench [options]
  --only LIST            sections: throughput,latency,fairness,idle,scrape (default: all)
  --mb N                 MB of 200-byte lines per format (256; --quick 64)
  --files N              files per data set (10)
  --repeat N             runs per throughput row, best kept (3; --quick 5)
  --dir DIR              where data and outputs go (the temp dir)
  --format cri|docker    one format only
  --sinks LIST           file,file-never,loki,elasticsearch,otlp (all; --quick file)
  --compare AGENT=PATH   also run fluent-bit=PATH or vector=PATH (repeatable)
  --latency-secs S       latency run length (10)
  --fairness-secs S      fairness run length (30)
  --idle-files LIST      idle file counts for scripts/bench-idle.sh (1000,10000)
  --idle-secs S          idle measurement length (30)
  --scrapes N            scrapes of each exporter (500)
  --node-exporter PATH   node_exporter binary (prometheus-node-exporter on PATH)
  --quick                the regression guard's run: throughput to the file sink only
  --check FILE           fail (exit 1) when CPU-s/GB is worse than FILE by more than --tolerance
  --tolerance F          0.3
  --write-baseline FILE  write this run's figures as the baseline
  --parse-only           in-process parse and encode cost per line, no I/O
  --help                 this text
";

/// Options that take a value; the others are flags.
const VALUED: &[&str] = &[
    "--only",
    "--mb",
    "--files",
    "--repeat",
    "--dir",
    "--format",
    "--sinks",
    "--compare",
    "--latency-secs",
    "--fairness-secs",
    "--idle-files",
    "--idle-secs",
    "--scrapes",
    "--node-exporter",
    "--check",
    "--tolerance",
    "--write-baseline",
];
const FLAGS: &[&str] = &["--quick", "--parse-only", "--help", "-h"];

struct Args {
    args: Vec<String>,
}

impl Args {
    /// The first argument that is neither a known option nor an option's value.
    fn unknown(&self) -> Option<&str> {
        let mut rest = self.args.iter().skip(1);
        while let Some(a) = rest.next() {
            if VALUED.contains(&a.as_str()) {
                rest.next()?;
            } else if !FLAGS.contains(&a.as_str()) {
                return Some(a);
            }
        }
        None
    }
    fn value(&self, name: &str) -> Option<String> {
        self.args.iter().position(|a| a == name).and_then(|i| self.args.get(i + 1)).cloned()
    }
    fn values(&self, name: &str) -> Vec<String> {
        self.args.windows(2).filter(|w| w[0] == name).map(|w| w[1].clone()).collect()
    }
    fn flag(&self, name: &str) -> bool {
        self.args.iter().any(|a| a == name)
    }
    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        self.value(name)
            .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: '{v}' is not a number")))
            .unwrap_or(default)
    }
}

/// The best (least CPU) of several runs and the spread of their CPU (worst / best − 1).
struct Best {
    best: Usage,
    spread: f64,
}

fn best_of(n: usize, mut run: impl FnMut() -> Usage) -> Best {
    let runs: Vec<Usage> = (0..n.max(1)).map(|_| run()).collect();
    let best = *runs.iter().min_by_key(|u| u.cpu).unwrap();
    let worst = runs.iter().map(|u| u.cpu).max().unwrap();
    Best { best, spread: worst.as_secs_f64() / best.cpu.as_secs_f64().max(1e-6) - 1.0 }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let a = Args { args: std::env::args().collect() };
    if a.flag("--help") || a.flag("-h") {
        print!("{USAGE}");
        return;
    }
    if let Some(arg) = a.unknown() {
        eprint!("vigil-bench: unknown argument '{arg}' (or an option without its value)\n{USAGE}");
        std::process::exit(2);
    }
    let quick = a.flag("--quick");
    let mb: u64 = a.num("--mb", if quick { 64 } else { 256 });
    let files: usize = a.num("--files", 10);
    let repeat: usize = a.num("--repeat", if quick { 5 } else { 3 }).max(1);
    let base = PathBuf::from(a.value("--dir").unwrap_or_else(|| std::env::temp_dir().display().to_string()));
    let vigil = std::env::current_exe().unwrap().with_file_name("vigil");
    assert!(vigil.exists(), "build vigil first: {} is missing", vigil.display());
    let work = base.join(format!("vigil-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    println!("vigil-bench {} UTC", chrono::Utc::now().format("%Y-%m-%d %H:%M"));
    println!("machine: {}", proc::machine());
    if a.flag("--parse-only") {
        parse_only(&work, mb);
        let _ = std::fs::remove_dir_all(&work);
        return;
    }
    let only: Vec<String> = a
        .value("--only")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| if quick { vec!["throughput".into()] } else { vec![] });
    let wants = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let formats: Vec<Fmt> = match a.value("--format").as_deref() {
        Some("cri") => vec![Fmt::Cri],
        Some("docker") => vec![Fmt::Docker],
        _ => vec![Fmt::Cri, Fmt::Docker],
    };
    let compares: Vec<(compare::Agent, PathBuf)> = a
        .values("--compare")
        .iter()
        .map(|s| compare::Agent::parse(s).unwrap_or_else(|e| panic!("--compare {s}: {e}")))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let mut results: BTreeMap<String, f64> = BTreeMap::new();
    if wants("throughput") {
        println!();
        println!(
            "throughput: {files} files, {mb} MB of {}-byte lines per format; best of {repeat} runs (spread: worst/best − 1 of CPU)",
            data::LINE
        );
        println!("CPU-s/GB: user+system of the reader (wait4); HTTP receivers run in vigil-bench, not counted");
        println!(
            "{:<7} {:<30} {:>8} {:>9} {:>7} {:>8} {:>8} {:>9} {:>11}",
            "format", "reader → sink", "MB/s", "CPU-s/GB", "spread", "RSS MB", "vs cat", "over file", "rcv CPU-s/GB"
        );
        let sinks_arg = a.value("--sinks");
        let sinks: Vec<&str> = match &sinks_arg {
            Some(list) => list.split(',').collect(),
            None if quick => vec!["file"],
            None => vec!["file", "file-never", "loki", "elasticsearch", "otlp"],
        };
        for &fmt in &formats {
            let (root, paths, lines, bytes) = scenarios::dataset(&work, fmt, files, mb);
            let gb = bytes as f64 / 1e9;
            let cat = best_of(repeat, || run_cat(&paths));
            let cat_gb = cat.best.cpu.as_secs_f64() / gb;
            let row = |label: &str, b: &Best, over: Option<f64>, rcv: Option<f64>| {
                let cpu_gb = b.best.cpu.as_secs_f64() / gb;
                println!(
                    "{:<7} {:<30} {:>8.1} {:>9.2} {:>6.0}% {:>8.1} {:>7.1}x {:>9} {:>11}",
                    fmt.name(),
                    label,
                    bytes as f64 / 1e6 / b.best.wall.as_secs_f64(),
                    cpu_gb,
                    b.spread * 100.0,
                    b.best.max_rss_kib as f64 / 1024.0,
                    cpu_gb / cat_gb.max(1e-6),
                    over.map(|o| format!("{o:+.2}")).unwrap_or_default(),
                    rcv.map(|r| format!("{r:.2}")).unwrap_or_default(),
                );
            };
            row("cat", &cat, None, None);
            let mut never_gb = None;
            for sink in &sinks {
                let (kind, sync) = match *sink {
                    "file" => (None, None),
                    "file-never" => (None, Some("never")),
                    "loki" => (Some(Kind::Loki), None),
                    "elasticsearch" => (Some(Kind::Es), None),
                    _ => (Some(Kind::Otlp), None),
                };
                let rx = kind.map(|k| Receiver::start(rt.handle(), k, None));
                let target = match (&rx, kind) {
                    (Some(rx), Some(k)) => Target::Http(k, rx),
                    _ => Target::File { sync },
                };
                let rcv_before = proc::self_cpu();
                let b = best_of(repeat, || scenarios::throughput(&vigil, &work, &root, fmt, lines, &target));
                let rcv = (proc::self_cpu() - rcv_before).as_secs_f64() / repeat as f64 / gb;
                let cpu_gb = b.best.cpu.as_secs_f64() / gb;
                if sync == Some("never") {
                    never_gb = Some(cpu_gb);
                }
                let over = if kind.is_some() { never_gb.map(|n| cpu_gb - n) } else { None };
                row(&target.label(), &b, over, kind.map(|_| rcv));
                if *sink == "file" {
                    results.insert(format!("{}_file", fmt.name()), cpu_gb);
                }
            }
            for (agent, bin) in &compares {
                match compare::run(*agent, bin, &work, &root, fmt, lines) {
                    Ok(u) => {
                        let b = best_of(repeat.saturating_sub(1), || {
                            compare::run(*agent, bin, &work, &root, fmt, lines).unwrap_or(u)
                        });
                        let b = if u.cpu < b.best.cpu { Best { best: u, spread: b.spread } } else { b };
                        row(agent.name(), &b, None, None);
                    }
                    Err(e) => println!("{:<7} {:<30} failed: {e}", fmt.name(), agent.name()),
                }
            }
        }
    }
    if wants("latency") {
        let secs: f64 = a.num("--latency-secs", 10.0);
        println!();
        println!("write-to-delivery latency: one container writing 10000 lines/s for {secs} s (CRI), default settings");
        println!("{:<24} {:>8} {:>9} {:>9} {:>9}", "sink", "lines", "p50 ms", "p99 ms", "max ms");
        let file = Target::File { sync: None };
        let (l, written) = scenarios::latency(&vigil, &work, &file, 10_000.0, secs);
        println!(
            "{:<24} {:>8} {:>9.1} {:>9.1} {:>9.1}",
            "file",
            format!("{}/{written}", l.lines),
            ms(l.p50),
            ms(l.p99),
            ms(l.max)
        );
        let rx = Receiver::start(rt.handle(), Kind::Loki, None);
        let loki = Target::Http(Kind::Loki, &rx);
        let (l, written) = scenarios::latency(&vigil, &work, &loki, 10_000.0, secs);
        println!(
            "{:<24} {:>8} {:>9.1} {:>9.1} {:>9.1}",
            "loki",
            format!("{}/{written}", l.lines),
            ms(l.p50),
            ms(l.p99),
            ms(l.max)
        );
    }
    if wants("fairness") {
        let secs: f64 = a.num("--fairness-secs", 30.0);
        println!();
        println!(
            "fairness: 1 container at 12000 lines/s + 5 at 5 lines/s → elasticsearch capped at 5000 docs/s, {secs} s"
        );
        let f = scenarios::fairness(&vigil, &work, rt.handle(), 12_000.0, 5_000.0, secs);
        println!(
            "quiet containers: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} of {} lines missing 2 s after the writers stopped",
            ms(f.quiet.p50),
            ms(f.quiet.p99),
            ms(f.quiet.max),
            f.quiet_missing,
            f.quiet_written
        );
        println!(
            "noisy container: {:.0} docs/s delivered (written {:.0}/s; the receiver takes at most 5000 in all)",
            f.noisy_per_sec, f.noisy_written_per_sec
        );
    }
    if wants("idle") && !quick {
        println!();
        let secs: u64 = a.num("--idle-secs", 30);
        let counts = a.value("--idle-files").unwrap_or_else(|| "1000,10000".into());
        idle_rows(&vigil, counts.split(',').map(str::trim), secs);
    }
    if wants("scrape") && !quick {
        println!();
        let n: usize = a.num("--scrapes", 500);
        let ne = a.value("--node-exporter").map(PathBuf::from).or_else(scrape::find_node_exporter);
        match ne {
            None => println!("scrape: not measured (no prometheus-node-exporter on PATH; --node-exporter PATH)"),
            Some(ne) => {
                println!("scrape: CPU per /metrics scrape, {n} scrapes each, alternating, default collectors");
                match scrape::compare(&vigil, &ne, &work, n) {
                    Ok(runs) => {
                        let ms = |d: Duration| d.as_secs_f64() * 1e3;
                        println!("{:<36} {:>10} {:>10} {:>8}", "exporter", "plain ms", "gzip ms", "series");
                        let [(v, e), (vz, ez)] = runs;
                        println!(
                            "{:<36} {:>10.3} {:>10.3} {:>8}",
                            "vigil",
                            ms(v.cpu_per_scrape),
                            ms(vz.cpu_per_scrape),
                            v.series
                        );
                        println!(
                            "{:<36} {:>10.3} {:>10.3} {:>8}",
                            ne.display(),
                            ms(e.cpu_per_scrape),
                            ms(ez.cpu_per_scrape),
                            e.series
                        );
                        let ratio =
                            |a: &scrape::Cost, b: &scrape::Cost| ms(a.cpu_per_scrape) / ms(b.cpu_per_scrape).max(1e-9);
                        println!(
                            "vigil / node_exporter CPU per scrape: {:.2}x plain, {:.2}x with gzip (as Prometheus asks)",
                            ratio(&v, &e),
                            ratio(&vz, &ez)
                        );
                    }
                    Err(e) => println!("scrape: failed: {e}"),
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);

    if let Some(path) = a.value("--write-baseline") {
        check::write(
            Path::new(&path),
            &results,
            &format!("vigil-bench --quick baseline: CPU-s/GB to the file sink, best of {repeat}; {}", proc::machine()),
        )
        .expect("write the baseline");
        println!("baseline written to {path}");
    }
    if let Some(path) = a.value("--check") {
        let tolerance: f64 = a.num("--tolerance", 0.3);
        let baseline = check::read(Path::new(&path)).unwrap_or_else(|e| panic!("--check: {e}"));
        let failed = check::compare(&baseline, &results, tolerance);
        if failed.is_empty() {
            println!("check: within {:.0}% of {path}", tolerance * 100.0);
        } else {
            for f in &failed {
                println!("check FAILED: {f}");
            }
            std::process::exit(1);
        }
    }
}

/// The idle and many-files rows come from `scripts/bench-idle.sh` (owned with the tailer's idle
/// work), run once per file count on the `vigil` next to this binary; it prints its own rows.
fn idle_rows<'a>(vigil: &Path, counts: impl Iterator<Item = &'a str>, secs: u64) {
    let script = Path::new("scripts/bench-idle.sh");
    if !script.exists() {
        println!(
            "idle / many files: not measured here (scripts/bench-idle.sh not found; run from the repository root)"
        );
        return;
    }
    println!("idle / many files (scripts/bench-idle.sh N {secs}):");
    for n in counts {
        let run =
            std::process::Command::new("bash").arg(script).arg(n).arg(secs.to_string()).env("VIGIL", vigil).output();
        match run {
            Ok(o) if o.status.success() => print!("{}", String::from_utf8_lossy(&o.stdout)),
            Ok(o) => {
                println!("scripts/bench-idle.sh {n} failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr))
            }
            Err(e) => println!("scripts/bench-idle.sh: {e}"),
        }
    }
}

#[allow(clippy::zombie_processes)]
fn run_cat(paths: &[PathBuf]) -> Usage {
    let started = Instant::now();
    let child =
        std::process::Command::new("cat").args(paths).stdout(std::process::Stdio::null()).spawn().expect("run cat");
    proc::wait_usage(&child, started)
}

/// In-process: parse + merge + event JSON encoding only (no I/O), per line.
fn parse_only(work: &Path, mb: u64) {
    use vigil::logs::parse::{self, Format, merge::Merger};
    for (fmt, format) in [(Fmt::Cri, Format::Cri), (Fmt::Docker, Format::Docker)] {
        let root = work.join("node");
        let _ = std::fs::remove_dir_all(&root);
        let (paths, lines) = data::generate(&root, fmt, 1, mb << 20);
        let data = std::fs::read(&paths[0]).unwrap();
        let source = std::sync::Arc::new(vigil::event::Source {
            file: paths[0].display().to_string(),
            node: "bench".into(),
            kubernetes: Default::default(),
        });
        let mut merger = Merger::new(256 * 1024);
        let (mut parse_t, mut json_t) = (Duration::ZERO, Duration::ZERO);
        let mut out = Vec::with_capacity(4 << 20);
        let mut batch = Vec::with_capacity(2048);
        let mut encoder = vigil::event::JsonEncoder::default();
        let mut pos = 0u64;
        for chunk in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect::<Vec<_>>().chunks(2048) {
            let t = Instant::now();
            for l in chunk {
                let (rec, cut) = parse::parse(format, l, 256 * 1024).expect("bench data parses");
                if let Some(line) = merger.push(rec, cut, pos, 0) {
                    batch.push(vigil::event::Event {
                        timestamp: line.timestamp,
                        stream: line.stream,
                        message: line.message,
                        malformed: false,
                        truncated: false,
                        source: source.clone(),
                        origin: vigil::event::Origin { file: 1, offset: pos, resume: pos },
                        parsed: None,
                    });
                }
                pos += l.len() as u64 + 1;
            }
            parse_t += t.elapsed();
            let t = Instant::now();
            out.clear();
            for e in batch.drain(..) {
                encoder.write(&e, &mut out);
            }
            json_t += t.elapsed();
        }
        let name = match fmt {
            Fmt::Cri => "cri",
            Fmt::Docker => "docker",
        };
        println!(
            "{name:<7} parse+merge {:>6.1} ns/line ({:.2} s/GB)   encode JSON {:>6.1} ns/line ({:.2} s/GB)",
            parse_t.as_nanos() as f64 / lines as f64,
            parse_t.as_secs_f64() / (data.len() as f64 / 1e9),
            json_t.as_nanos() as f64 / lines as f64,
            json_t.as_secs_f64() / (data.len() as f64 / 1e9),
        );
    }
}
