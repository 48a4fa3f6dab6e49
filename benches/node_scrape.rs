//! Scrape cost of vigil's node metrics against Debian's `prometheus-node-exporter`, same
//! machine, same run, twice: with the same collectors and excludes, and with each one's default
//! collectors (as deployed; the target is vigil ≤ 0.2x node_exporter's CPU there):
//! latency p50/p99 per scrape as seen by the client, CPU time (user + system, from
//! /proc/<pid>/stat) per scrape of each process, and the series count of each.
//!
//! Run: `cargo bench --bench node_scrape` (VIGIL_BENCH_SCRAPES=N to change the default 1000).
//! `VIGIL_BIN=path` runs that vigil binary instead of the one cargo built with the bench (to
//! compare two builds with the same bench, e.g. `target/measure/vigil` against a copy of the
//! one from before a change); `VIGIL_BENCH_DEFAULTS_ONLY=1` runs only the second comparison.
//! Each comparison also prints the mean `node_scrape_collector_duration_seconds` of every
//! collector in both, over all the scrapes (wall time inside each exporter).
//! Scrapes alternate between the two servers so both see the same machine load. Requests carry
//! no Accept-Encoding, so neither compresses (this measures the collectors and the encoding
//! only). `VIGIL_BENCH_GZIP=1` sends `Accept-Encoding: gzip` as Prometheus does: node_exporter
//! then compresses its answer (and its per-collector durations are not read), vigil does not.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::node_collectors::{COLLECTORS, HARDWARE_COLLECTORS};
use support::{Vigil, free_port, http_get, wait_for};
use vigil::metrics::node::config::{DEFAULT_DISK_DEVICE_EXCLUDE, DEFAULT_MOUNT_POINTS_EXCLUDE, DEFAULT_NETSTAT_FIELDS};

/// Samples in an exposition (lines that are not comments).
fn series(text: &str) -> usize {
    text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count()
}

/// user + system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process alive");
    // Fields after the `(comm)`, which may contain spaces: state is field 3, utime 14, stime 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// Adds each collector's `node_scrape_collector_duration_seconds` in `response` to `sums`.
fn add_durations(response: &[u8], sums: &mut BTreeMap<String, f64>) {
    const PREFIX: &str = "node_scrape_collector_duration_seconds{collector=\"";
    for line in String::from_utf8_lossy(response).lines() {
        let Some(rest) = line.strip_prefix(PREFIX) else { continue };
        let Some((name, value)) = rest.split_once("\"} ") else { continue };
        if let Ok(v) = value.trim().parse::<f64>() {
            *sums.entry(name.to_string()).or_default() += v;
        }
    }
}

/// Whether to ask for gzip as Prometheus does (`VIGIL_BENCH_GZIP=1`).
fn gzip() -> bool {
    std::env::var_os("VIGIL_BENCH_GZIP").is_some_and(|v| v != "0" && !v.is_empty())
}

/// One GET /metrics over a fresh connection; returns the whole response.
fn scrape(addr: SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = if gzip() { "Accept-Encoding: gzip\r\n" } else { "" };
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n").unwrap();
    let mut buf = Vec::with_capacity(128 * 1024);
    s.read_to_end(&mut buf).unwrap();
    assert!(
        buf.starts_with(b"HTTP/1.") && buf[9..12] == *b"200",
        "scrape failed: {}",
        String::from_utf8_lossy(&buf[..buf.len().min(200)])
    );
    buf
}

struct Stats {
    latencies: Vec<Duration>,
    cpu: f64,
    bytes: usize,
    /// Sum over the scrapes of each collector's reported duration, in seconds.
    collectors: BTreeMap<String, f64>,
}

impl Stats {
    fn pct(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l[((l.len() as f64 - 1.0) * p).round() as usize]
    }
    fn cpu_per_scrape(&self) -> Duration {
        Duration::from_secs_f64(self.cpu / self.latencies.len() as f64)
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    // `cargo bench` passes --bench; anything else (cargo test --benches) is a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize =
        std::env::var("VIGIL_BENCH_SCRAPES").ok().and_then(|v| v.parse().ok()).unwrap_or(if full { 1000 } else { 5 });

    let dir = tempfile::tempdir().unwrap();
    let vaddr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        "sources:\n  containers:\n    include: [\"{d}/logs/*.log\"]\n    checkpoint_dir: {d}/checkpoints\n\
         sinks:\n  - name: out\n    type: file\n    path: {d}/events.ndjson\n\
         metrics:\n  listen: {vaddr}\nlog:\n  level: warn\n",
        d = dir.path().display()
    );
    let mut vigil = match std::env::var_os("VIGIL_BIN") {
        Some(bin) => {
            let path = dir.path().join("vigil.yaml");
            std::fs::write(&path, &config).unwrap();
            let child = Command::new(bin)
                .args(["run", "--config"])
                .arg(&path)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("VIGIL_BIN runs");
            Vigil { child, addr: vaddr, config: path }
        }
        None => Vigil::start(dir.path(), &config, vaddr),
    };
    vigil.wait_ready(Duration::from_secs(20));
    let defaults_only = std::env::var_os("VIGIL_BENCH_DEFAULTS_ONLY").is_some_and(|v| v != "0" && !v.is_empty());

    let all: Vec<&str> = COLLECTORS.iter().chain(HARDWARE_COLLECTORS).copied().collect();
    // 1. The same collectors and excludes in both.
    let mut same = vec!["--collector.disable-defaults".to_string()];
    same.extend(all.iter().map(|c| format!("--collector.{c}")));
    same.push(format!("--collector.filesystem.mount-points-exclude={DEFAULT_MOUNT_POINTS_EXCLUDE}"));
    same.push(format!("--collector.diskstats.device-exclude={DEFAULT_DISK_DEVICE_EXCLUDE}"));
    same.push("--collector.netdev.device-exclude=".to_string());
    same.push("--collector.netclass.ignored-devices=^$".to_string());
    same.push(format!("--collector.netstat.fields={DEFAULT_NETSTAT_FIELDS}"));
    println!(
        "node metrics scrape, {n} scrapes each, alternating{}",
        if gzip() { ", Accept-Encoding: gzip" } else { "" }
    );
    if !defaults_only {
        println!("\n1. same collectors in both: {}", all.join(","));
        compare(&vigil, &same, n);
    }
    // 2. Each with its default collectors, as deployed (the target: vigil ≤ 0.2x).
    println!("\n2. each with its own default collectors (node_exporter as packaged)");
    compare(&vigil, &[], n);
}

/// Starts node_exporter with `args`, scrapes it and vigil alternately `n` times, prints the figures.
fn compare(vigil: &Vigil, args: &[String], n: usize) {
    let vaddr = vigil.addr;
    let naddr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = Command::new("prometheus-node-exporter");
    cmd.arg(format!("--web.listen-address={naddr}"))
        .args(args)
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let ne = Killed(cmd.spawn().expect("prometheus-node-exporter (scripts/test.sh installs it)"));
    wait_for(Duration::from_secs(20), || matches!(http_get(naddr, "/metrics"), Ok((200, _))).then_some(()))
        .expect("node_exporter up");

    // Warm-up: page cache, lazy initialisation, Go's heap growth.
    for _ in 0..20.min(n) {
        scrape(vaddr);
        scrape(naddr);
    }
    let (vpid, npid) = (vigil.child.id(), ne.0.id());
    let mut v = Stats { latencies: Vec::with_capacity(n), cpu: 0.0, bytes: 0, collectors: BTreeMap::new() };
    let mut e = Stats { latencies: Vec::with_capacity(n), cpu: 0.0, bytes: 0, collectors: BTreeMap::new() };
    let (v0, e0) = (cpu_seconds(vpid), cpu_seconds(npid));
    for _ in 0..n {
        let t = Instant::now();
        let vr = scrape(vaddr);
        v.latencies.push(t.elapsed());
        let t = Instant::now();
        let er = scrape(naddr);
        e.latencies.push(t.elapsed());
        // The client's parsing is not in either process's CPU time.
        (v.bytes, e.bytes) = (vr.len(), er.len());
        add_durations(&vr, &mut v.collectors);
        add_durations(&er, &mut e.collectors);
    }
    v.cpu = cpu_seconds(vpid) - v0;
    e.cpu = cpu_seconds(npid) - e0;

    let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1000.0);
    let (vs, es) = (series(&http_get(vaddr, "/metrics").unwrap().1), series(&http_get(naddr, "/metrics").unwrap().1));
    println!("{:<26} {:>12} {:>12} {:>16} {:>10} {:>8}", "", "p50", "p99", "CPU/scrape", "bytes", "series");
    for (name, s, count) in [("vigil", &v, vs), ("prometheus-node-exporter", &e, es)] {
        println!(
            "{:<26} {:>12} {:>12} {:>16} {:>10} {:>8}",
            name,
            ms(s.pct(0.5)),
            ms(s.pct(0.99)),
            ms(s.cpu_per_scrape()),
            s.bytes,
            count
        );
    }
    let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64().max(1e-9);
    println!("vigil / node_exporter CPU per scrape: {:.2}x", 1.0 / ratio(v.cpu_per_scrape(), e.cpu_per_scrape()));
    println!(
        "node_exporter / vigil: p50 latency {:.1}x, p99 latency {:.1}x",
        ratio(v.pct(0.5), e.pct(0.5)),
        ratio(v.pct(0.99), e.pct(0.99)),
    );
    println!("mean node_scrape_collector_duration_seconds, ms (wall time inside each exporter):");
    println!("{:<20} {:>8} {:>14}", "collector", "vigil", "node_exporter");
    let names: BTreeSet<&String> = v.collectors.keys().chain(e.collectors.keys()).collect();
    let mean = |s: &Stats, c: &String| s.collectors.get(c).map(|t| format!("{:.3}", t * 1000.0 / n as f64));
    for c in names {
        let (a, b) = (mean(&v, c), mean(&e, c));
        println!("{c:<20} {:>8} {:>14}", a.as_deref().unwrap_or("-"), b.as_deref().unwrap_or("-"));
    }
}
