//! `cpu`: `node_cpu_seconds_total{cpu,mode}` and `node_cpu_guest_seconds_total{cpu,mode}` from
//! the `cpuN` lines of /proc/stat, in USER_HZ ticks (100 per second on every Linux ABI, which is
//! what node_exporter assumes too).
//!
//! As node_exporter, the values handed out never go backwards: the kernel's per-CPU counters
//! can step back slightly (iowait is racy, and idle jumps back after CPU hotplug), which a
//! `rate()` would read as a counter reset. Each field is kept at its highest value; an idle
//! that drops by 3 s or more means the CPU was replugged, and its cache starts over.

use super::{Collect, Error, Family, Paths, Scrape, parse_err};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

const USER_HZ: f64 = 100.0;
/// An idle counter falling by this much is a hotplug, not jitter (node_exporter's threshold).
const JUMP_BACK_SECONDS: f64 = 3.0;
/// /proc/stat's column order after the `cpuN` name.
const MODES: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];
const IDLE: usize = 3;
/// Guest columns (9th and 10th), already included in user and nice.
const GUEST_MODES: [&str; 2] = ["user", "nice"];

pub(super) struct CpuCollector {
    path: PathBuf,
    /// Per CPU: the 10 columns in seconds, as last handed out.
    cache: Mutex<HashMap<u32, [f64; 10]>>,
}

impl CpuCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { path: paths.proc("stat"), cache: Mutex::new(HashMap::new()) }
    }
}

/// The `cpuN` lines of /proc/stat: (N, the 10 columns in seconds; missing columns are 0).
pub(super) fn parse_cpu_lines(text: &str) -> impl Iterator<Item = Option<(u32, [f64; 10])>> + '_ {
    text.lines().filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)).map(|line| {
        let mut it = line.split_ascii_whitespace();
        let id: u32 = it.next()?[3..].parse().ok()?;
        let mut v = [0.0; 10];
        for (slot, field) in v.iter_mut().zip(it) {
            *slot = field.parse::<u64>().ok()? as f64 / USER_HZ;
        }
        Some((id, v))
    })
}

impl Collect for CpuCollector {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn collect(&self, scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let text = scrape.proc_stat(&self.path)?;
        let mut seconds = Family::counter("node_cpu_seconds_total", "Seconds the CPUs spent in each mode.");
        let mut guest =
            Family::counter("node_cpu_guest_seconds_total", "Seconds the CPUs spent in guests (VMs) for each mode.");
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = Vec::new();
        for parsed in parse_cpu_lines(text) {
            let (id, new) = parsed.ok_or_else(|| parse_err(&self.path, "a cpuN line that is not numbers"))?;
            seen.push(id);
            let kept = cache.entry(id).or_insert([0.0; 10]);
            if kept[IDLE] - new[IDLE] >= JUMP_BACK_SECONDS {
                tracing::debug!(cpu = id, old = kept[IDLE], new = new[IDLE], "CPU idle jumped back; assuming hotplug");
                *kept = [0.0; 10];
            }
            for (k, n) in kept.iter_mut().zip(new) {
                if n >= *k {
                    *k = n;
                }
            }
            let cpu = id.to_string();
            for (mode, v) in MODES.iter().zip(kept.iter()) {
                seconds.push(&[("cpu", &cpu), ("mode", mode)], *v);
            }
            for (mode, v) in GUEST_MODES.iter().zip(&kept[8..]) {
                guest.push(&[("cpu", &cpu), ("mode", mode)], *v);
            }
        }
        if seen.is_empty() {
            return Err(parse_err(&self.path, "no cpuN lines"));
        }
        // CPUs that went offline stop being reported and forget their history.
        cache.retain(|id, _| seen.contains(id));
        seconds.finish_into(out);
        guest.finish_into(out);
        Ok(())
    }
}
