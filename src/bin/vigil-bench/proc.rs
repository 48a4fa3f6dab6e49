//! Child processes and their resource usage (from `wait4`, so only the child is counted), and
//! the machine the bench runs on.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub wall: Duration,
    pub cpu: Duration,
    pub max_rss_kib: i64,
}

/// Waits for a child and returns its resource usage.
pub fn wait_usage(child: &Child, started: Instant) -> Usage {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert!(pid > 0, "wait4 failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Usage { wall: started.elapsed(), cpu: tv(ru.ru_utime) + tv(ru.ru_stime), max_rss_kib: ru.ru_maxrss }
}

/// SIGTERM to a child, then its usage.
pub fn stop(child: &Child, started: Instant) -> Usage {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_usage(child, started)
}

/// Starts `vigil run --config <config>` (stderr kept for failures, in `<config>.stderr`).
pub fn spawn_vigil(vigil: &Path, config: &Path) -> Child {
    let err = std::fs::File::create(config.with_extension("stderr")).unwrap();
    Command::new(vigil)
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("run vigil")
}

/// The CPU time this process used so far (the in-process receivers and the bench's own loops).
pub fn self_cpu() -> Duration {
    // SAFETY: rusage is plain data.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// "CPU model, N cores, Linux x.y".
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU")
        .to_string();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{model}, {cores} cores, Linux {}, load average {}", kernel.trim(), load.join(" "))
}
