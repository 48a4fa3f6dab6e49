//! `cpufreq`: `node_cpu_frequency_*_hertz`, `node_cpu_scaling_frequency_*_hertz` and
//! `node_cpu_scaling_governor{cpu,governor}` from `<sysfs>/devices/system/cpu/cpuN/cpufreq/`
//! (kHz × 1000), as node_exporter's cpufreq collector. CPUs without `cpufreq/` (VMs) or listed
//! in `devices/system/cpu/offline` are skipped; a frequency file that is missing or readable
//! only by root (`cpuinfo_cur_freq`) is omitted, as upstream.
//!
//! Differences, on purpose: upstream fails the collector when the `offline` file or a governor
//! file is missing; vigil treats a missing `offline` as "none offline" (node_exporter 1.5
//! does too, and some container sysfs views lack the file) and omits the governor series when
//! `scaling_governor` is missing, reporting the frequencies it could read.

use super::{Collect, Error, Family, Paths, Scrape, thermal_zone::skippable};
use std::path::{Path, PathBuf};

/// (file in cpufreq/, metric, help).
const FREQS: [(&str, &str, &str); 7] = [
    ("cpuinfo_cur_freq", "node_cpu_frequency_hertz", "Current cpu thread frequency in hertz."),
    ("cpuinfo_avg_freq", "node_cpu_frequency_avg_hertz", "Average cpu thread frequency in hertz."),
    ("cpuinfo_max_freq", "node_cpu_frequency_max_hertz", "Maximum cpu thread frequency in hertz."),
    ("cpuinfo_min_freq", "node_cpu_frequency_min_hertz", "Minimum cpu thread frequency in hertz."),
    ("scaling_cur_freq", "node_cpu_scaling_frequency_hertz", "Current scaled CPU thread frequency in hertz."),
    ("scaling_max_freq", "node_cpu_scaling_frequency_max_hertz", "Maximum scaled CPU thread frequency in hertz."),
    ("scaling_min_freq", "node_cpu_scaling_frequency_min_hertz", "Minimum scaled CPU thread frequency in hertz."),
];

pub(super) struct CpufreqCollector {
    dir: PathBuf,
}

impl CpufreqCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { dir: paths.sys("devices/system/cpu") }
    }
}

/// Whether CPU `n` is in a kernel CPU list such as `0-3,8,10-11`.
fn in_cpu_list(list: &str, n: u64) -> bool {
    list.trim().split(',').filter(|r| !r.is_empty()).any(|range| match range.split_once('-') {
        Some((a, b)) => a.parse().is_ok_and(|a: u64| a <= n) && b.parse().is_ok_and(|b: u64| n <= b),
        None => range.parse() == Ok(n),
    })
}

fn read_opt(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if skippable(&e) => Ok(None),
        Err(error) => Err(Error::Read { path: path.to_path_buf(), error }),
    }
}

impl Collect for CpufreqCollector {
    fn name(&self) -> &'static str {
        "cpufreq"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let offline = read_opt(&self.dir.join("offline"))?.unwrap_or_default();
        let mut families: Vec<Family> = FREQS.iter().map(|(_, name, help)| Family::gauge(*name, *help)).collect();
        let mut governor = Family::gauge("node_cpu_scaling_governor", "Current enabled CPU frequency governor.");
        for (n, dir) in super::thermal_zone::numbered(&self.dir, "cpu")? {
            let freq = dir.join("cpufreq");
            if in_cpu_list(&offline, n) || !freq.is_dir() {
                continue;
            }
            let cpu = n.to_string();
            for (family, (file, ..)) in families.iter_mut().zip(FREQS) {
                // A value that does not parse is omitted, as a missing one.
                if let Some(khz) = read_opt(&freq.join(file))?.and_then(|v| v.parse::<u64>().ok()) {
                    family.push(&[("cpu", &cpu)], khz as f64 * 1000.0);
                }
            }
            let current = read_opt(&freq.join("scaling_governor"))?.unwrap_or_default();
            if !current.is_empty() {
                let available = read_opt(&freq.join("scaling_available_governors"))?.unwrap_or_default();
                for g in available.split(' ') {
                    governor.push(&[("cpu", &cpu), ("governor", g)], if g == current { 1.0 } else { 0.0 });
                }
            }
        }
        for f in families {
            f.finish_into(out);
        }
        governor.finish_into(out);
        Ok(())
    }
}
