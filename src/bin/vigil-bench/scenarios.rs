//! The measured scenarios: throughput of a data set to one sink, write-to-delivery latency at a
//! steady rate, and per-container fairness behind a slow Elasticsearch.

use crate::data::{self, Fmt, count_newlines, follow, include, line, log_path, marker, markers, now_ns};
use crate::proc::{Usage, spawn_vigil, stop};
use crate::receiver::{Kind, Receiver};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Where vigil sends the lines.
pub enum Target<'a> {
    /// The file sink; `sync`: the `sync` key (None: the default).
    File {
        sync: Option<&'static str>,
    },
    Http(Kind, &'a Receiver),
}

impl Target<'_> {
    pub fn label(&self) -> String {
        match self {
            Target::File { sync: None } => "vigil → file".into(),
            Target::File { sync: Some(s) } => format!("vigil → file sync={s}"),
            Target::Http(k, _) => format!("vigil → {}", k.name()),
        }
    }
}

/// Writes the config of a run; returns its path and the output file (file sink).
pub fn write_config(work: &Path, root: &Path, fmt: Fmt, target: &Target) -> (PathBuf, PathBuf) {
    let out = work.join("out.ndjson");
    let _ = std::fs::remove_file(&out);
    let cp = work.join("cp");
    let _ = std::fs::remove_dir_all(&cp);
    let sink = match target {
        Target::File { sync } => format!(
            "  - name: out\n    type: file\n    path: {}\n    max_bytes: 0\n{}",
            out.display(),
            sync.map(|s| format!("    sync: {s}\n")).unwrap_or_default()
        ),
        Target::Http(kind, rx) => format!("  - name: out\n    type: {}\n    endpoint: {}\n", kind.name(), rx.url),
    };
    let config = work.join("bench.yaml");
    std::fs::write(
        &config,
        format!(
            "node_name: bench\nsources:\n  containers:\n    include: [\"{}\"]\n    checkpoint_dir: {}\n\
             sinks:\n{sink}metrics:\n  listen: 127.0.0.1:0\nlog:\n  level: warn\n",
            include(root, fmt),
            cp.display(),
        ),
    )
    .unwrap();
    (config, out)
}

/// Lines delivered so far: counted in the output file, or by the receiver.
struct Progress<'a> {
    target: &'a Target<'a>,
    out: PathBuf,
    pos: u64,
    count: u64,
    base: u64,
}

impl<'a> Progress<'a> {
    fn new(target: &'a Target<'a>, out: PathBuf) -> Self {
        let base = match target {
            Target::Http(_, rx) => rx.stats.lines.load(Ordering::Relaxed),
            _ => 0,
        };
        Progress { target, out, pos: 0, count: 0, base }
    }

    fn delivered(&mut self) -> u64 {
        match self.target {
            Target::File { .. } => {
                count_newlines(&self.out, &mut self.pos, &mut self.count);
                self.count
            }
            Target::Http(_, rx) => rx.stats.lines.load(Ordering::Relaxed) - self.base,
        }
    }
}

/// vigil reads the data set under `root` (`lines` lines) into `target`; returns its usage once
/// every line is delivered.
// The child is reaped by `stop` (wait4, for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn throughput(vigil: &Path, work: &Path, root: &Path, fmt: Fmt, lines: u64, target: &Target) -> Usage {
    let (config, out) = write_config(work, root, fmt, target);
    let mut progress = Progress::new(target, out);
    let started = Instant::now();
    let child = spawn_vigil(vigil, &config);
    let deadline = Instant::now() + Duration::from_secs(600);
    while progress.delivered() < lines && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = started.elapsed();
    // Stopped before the check, so a failed run leaves no vigil behind.
    let mut usage = stop(&child, started);
    // MB/s is of the work, not of the shutdown.
    usage.wall = wall;
    let got = progress.delivered();
    assert!(got >= lines, "vigil delivered {got} of {lines} lines to {} (see {})", target.label(), config.display());
    usage
}

/// One container's log written at a steady rate.
pub struct Stream {
    pub path: PathBuf,
    pub lines_per_sec: f64,
    pub tag: u8,
}

/// Writes every stream at its rate until `stop`, every millisecond (lines due since the start,
/// each with its write time); returns the lines written per stream.
fn write_streams(fmt: Fmt, streams: Vec<Stream>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut files: Vec<std::fs::File> = streams
            .iter()
            .map(|s| std::fs::OpenOptions::new().append(true).create(true).open(&s.path).unwrap())
            .collect();
        let mut written = vec![0u64; streams.len()];
        let start = Instant::now();
        let mut buf = String::new();
        while !stop.load(Ordering::Relaxed) {
            let el = start.elapsed().as_secs_f64();
            for (i, s) in streams.iter().enumerate() {
                let due = (s.lines_per_sec * el) as u64;
                if due <= written[i] {
                    continue;
                }
                buf.clear();
                let t = now_ns();
                for n in written[i]..due {
                    buf.push_str(&line(fmt, &format!("{}n{n} ", marker(t, s.tag))));
                }
                files[i].write_all(buf.as_bytes()).unwrap();
                written[i] = due;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        written
    })
}

pub struct Latency {
    pub lines: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

pub fn percentiles(mut v: Vec<u64>) -> Latency {
    v.sort_unstable();
    let at = |q: f64| {
        if v.is_empty() {
            return Duration::ZERO;
        }
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        Duration::from_nanos(v[i])
    };
    Latency { lines: v.len(), p50: at(0.50), p99: at(0.99), max: at(1.0) }
}

/// Starts vigil on `streams` (each file gets one untimed line first, and the run begins once
/// those arrived), writes for `secs`, waits up to `drain` for the rest; returns per tag the
/// latencies (ns) of timed lines delivered by then, the lines written per stream, the time
/// from the first write to the end of the wait, and vigil's usage. What vigil delivers while it
/// shuts down is not counted (it was counted before, so the noisy container's rate came out
/// above the receiver's cap: the shutdown's drain added seconds of deliveries).
// The child is reaped by `stop` (wait4, for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn timed_run(
    vigil: &Path,
    work: &Path,
    fmt: Fmt,
    streams: Vec<Stream>,
    target: &Target,
    secs: f64,
    drain: Duration,
) -> (Vec<Vec<u64>>, Vec<u64>, Duration, Usage) {
    let root = work.join("node");
    let _ = std::fs::remove_dir_all(&root);
    for s in &streams {
        std::fs::create_dir_all(s.path.parent().unwrap()).unwrap();
        std::fs::write(&s.path, line(fmt, &format!("{}warm-up ", marker(0, 9)))).unwrap();
    }
    let (config, out) = write_config(work, &root, fmt, target);
    let base_lat = match target {
        Target::Http(_, rx) => {
            rx.stats.latencies.lock().unwrap().clear();
            rx.stats.lines.load(Ordering::Relaxed)
        }
        _ => 0,
    };
    let started = Instant::now();
    let child = spawn_vigil(vigil, &config);
    let (mut pos, mut carry) = (0u64, Vec::new());
    let mut lat: Vec<Vec<u64>> = vec![Vec::new(); 10];
    let mut warm = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Warm-up: vigil found every file and delivered their first line.
    while warm < streams.len() as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        match target {
            Target::File { .. } => follow(&out, &mut pos, &mut carry, |_| warm += 1),
            Target::Http(_, rx) => warm = rx.stats.lines.load(Ordering::Relaxed) - base_lat,
        }
    }
    assert!(warm >= streams.len() as u64, "vigil did not start delivering (see {})", config.display());
    let stop_flag = Arc::new(AtomicBool::new(false));
    let n_streams = streams.len();
    let mut writer = Some(write_streams(fmt, streams, stop_flag.clone()));
    let t0 = Instant::now();
    let mut written: Option<Vec<u64>> = None;
    let mut delivered_timed = 0u64;
    let mut drain_deadline = None;
    loop {
        if let Target::File { .. } = target {
            follow(&out, &mut pos, &mut carry, |l| {
                let now = now_ns();
                markers(l, |t, tag| {
                    if t > 0 {
                        lat[tag as usize].push(now.saturating_sub(t));
                        delivered_timed += 1;
                    }
                })
            });
        } else if let Target::Http(_, rx) = target {
            delivered_timed = rx.stats.lines.load(Ordering::Relaxed) - base_lat - n_streams as u64;
        }
        if written.is_none() && t0.elapsed().as_secs_f64() >= secs {
            stop_flag.store(true, Ordering::Relaxed);
            written = writer.take().map(|w| w.join().expect("writer thread"));
            drain_deadline = Some(Instant::now() + drain);
        }
        if let (Some(w), Some(d)) = (&written, drain_deadline) {
            if delivered_timed >= w.iter().sum::<u64>() || Instant::now() >= d {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let window = t0.elapsed();
    if let Target::Http(_, rx) = target {
        lat = rx.stats.latencies.lock().unwrap().clone();
        lat.resize(10, Vec::new());
    }
    let usage = stop(&child, started);
    (lat, written.unwrap_or_default(), window, usage)
}

/// Write-to-delivery latency of one container writing `rate` lines/s for `secs`.
pub fn latency(vigil: &Path, work: &Path, target: &Target, rate: f64, secs: f64) -> (Latency, u64) {
    let root = work.join("node");
    let streams = vec![Stream { path: log_path(&root, Fmt::Cri, 0), lines_per_sec: rate, tag: 0 }];
    let (lat, written, _, _) = timed_run(vigil, work, Fmt::Cri, streams, target, secs, Duration::from_secs(10));
    (percentiles(lat[0].clone()), written.iter().sum())
}

pub struct Fairness {
    pub quiet: Latency,
    pub quiet_written: u64,
    pub quiet_missing: u64,
    pub noisy_per_sec: f64,
    pub noisy_written_per_sec: f64,
}

/// One container at `noisy` lines/s and five at 5 lines/s into an Elasticsearch receiver capped
/// at `cap` documents/s, for `secs`.
pub fn fairness(vigil: &Path, work: &Path, rt: &tokio::runtime::Handle, noisy: f64, cap: f64, secs: f64) -> Fairness {
    let rx = Receiver::start(rt, Kind::Es, Some(cap));
    let target = Target::Http(Kind::Es, &rx);
    let root = work.join("node");
    let mut streams = vec![Stream { path: log_path(&root, Fmt::Cri, 0), lines_per_sec: noisy, tag: 0 }];
    for q in 1..=5u8 {
        streams.push(Stream { path: log_path(&root, Fmt::Cri, q as usize), lines_per_sec: 5.0, tag: q });
    }
    // No drain: what is missing when the writers stop (plus 2 s) is reported.
    let (lat, written, window, _) = timed_run(vigil, work, Fmt::Cri, streams, &target, secs, Duration::from_secs(2));
    let quiet: Vec<u64> = lat[1..=5].iter().flatten().copied().collect();
    let quiet_written: u64 = written.iter().skip(1).sum();
    let delivered_quiet = quiet.len() as u64;
    let noisy_delivered = lat[0].len() as f64;
    Fairness {
        quiet: percentiles(quiet),
        quiet_written,
        quiet_missing: quiet_written.saturating_sub(delivered_quiet),
        noisy_per_sec: noisy_delivered / window.as_secs_f64(),
        noisy_written_per_sec: written.first().copied().unwrap_or(0) as f64 / secs,
    }
}

/// The data set used by the throughput rows.
pub fn dataset(work: &Path, fmt: Fmt, files: usize, mb: u64) -> (PathBuf, Vec<PathBuf>, u64, u64) {
    let root = work.join("node");
    let _ = std::fs::remove_dir_all(&root);
    let (paths, lines) = data::generate(&root, fmt, files, mb << 20);
    // Write the data set out first, so its writeback is not charged to what follows.
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    let bytes: u64 = paths.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    (root, paths, lines, bytes)
}
