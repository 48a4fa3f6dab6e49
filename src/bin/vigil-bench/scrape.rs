//! Scrape cost: CPU per `/metrics` scrape of vigil's node metrics against Debian's
//! `prometheus-node-exporter` (when installed), each with its default collectors, scraped
//! alternately so both see the same load. CPU is user + system of each process from
//! /proc/<pid>/stat over all the scrapes. Twice: with no Accept-Encoding (neither gzips), and
//! with `Accept-Encoding: gzip` as Prometheus asks (each compresses its answer).
//! `benches/node_scrape.rs` prints the same comparison with per-collector times.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One exporter's figures.
pub struct Cost {
    pub cpu_per_scrape: Duration,
    pub series: usize,
}

/// Kills the child when dropped.
struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port on 127.0.0.1")
}

/// GET /metrics over a fresh connection: the body, or None when it is not a 200.
fn scrape(addr: SocketAddr, gzip: bool) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let accept = if gzip { "Accept-Encoding: gzip\r\n" } else { "" };
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n").ok()?;
    let mut buf = Vec::with_capacity(128 * 1024);
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_string())
}

/// user + system CPU of a process so far.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else { return Duration::ZERO };
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11..13).map(|t| t.iter().filter_map(|v| v.parse::<u64>().ok()).sum()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Duration::from_secs_f64(ticks as f64 / hz)
}

fn wait_up(addr: SocketAddr) -> Result<(), String> {
    let t0 = Instant::now();
    while scrape(addr, false).is_none() {
        if t0.elapsed() > Duration::from_secs(20) {
            return Err(format!("{addr} did not answer /metrics within 20 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// vigil (node metrics with their defaults; a log source with no files) and node_exporter
/// (`node_exporter`: its binary, as packaged, default collectors), `n` scrapes each, without
/// and with gzip.
pub fn compare(vigil: &Path, node_exporter: &Path, work: &Path, n: usize) -> Result<[(Cost, Cost); 2], String> {
    let dir = work.join("scrape");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (vaddr, naddr) = (free_addr(), free_addr());
    let config = dir.join("vigil.yaml");
    let yaml = format!(
        "sources:\n  containers:\n    include: [\"{d}/none/*.log\"]\n    checkpoint_dir: {d}/cp\n\
         sinks:\n  - name: out\n    type: file\n    path: {d}/out.ndjson\nmetrics:\n  listen: {vaddr}\nlog:\n  level: warn\n",
        d = dir.display()
    );
    std::fs::write(&config, yaml).map_err(|e| e.to_string())?;
    let v = Running(crate::proc::spawn_vigil(vigil, &config));
    let ne = Command::new(node_exporter)
        .arg(format!("--web.listen-address={naddr}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", node_exporter.display()))?;
    let ne = Running(ne);
    wait_up(vaddr)?;
    wait_up(naddr)?;
    let series = |t: &str| t.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count();
    let (vseries, nseries) =
        (series(&scrape(vaddr, false).unwrap_or_default()), series(&scrape(naddr, false).unwrap_or_default()));
    let run = |gzip: bool| -> Result<(Cost, Cost), String> {
        // Warm-up: page cache, lazy initialisation, Go's heap growth.
        for _ in 0..20 {
            scrape(vaddr, gzip);
            scrape(naddr, gzip);
        }
        let (v0, n0) = (cpu(v.0.id()), cpu(ne.0.id()));
        for _ in 0..n {
            scrape(vaddr, gzip).ok_or("a vigil scrape failed")?;
            scrape(naddr, gzip).ok_or("a node_exporter scrape failed")?;
        }
        let (vcpu, ncpu) = (cpu(v.0.id()) - v0, cpu(ne.0.id()) - n0);
        let n = n.max(1) as u32;
        Ok((Cost { cpu_per_scrape: vcpu / n, series: vseries }, Cost { cpu_per_scrape: ncpu / n, series: nseries }))
    };
    Ok([run(false)?, run(true)?])
}

/// `prometheus-node-exporter` (Debian's name) or `node_exporter` on PATH.
pub fn find_node_exporter() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| [d.join("prometheus-node-exporter"), d.join("node_exporter")])
        .find(|p| p.is_file())
}
