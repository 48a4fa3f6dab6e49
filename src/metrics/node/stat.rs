//! `stat`: boot time, context switches, forks, interrupts and process counts from /proc/stat,
//! as node_exporter's stat collector.

use super::{Collect, Error, Family, Paths, Scrape, parse_err};
use std::path::PathBuf;

pub(super) struct StatCollector {
    path: PathBuf,
}

impl StatCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { path: paths.proc("stat") }
    }
}

/// (metric, help, type is counter, /proc/stat key). The value is the key's first number.
const FIELDS: [(&str, &str, bool, &str); 6] = [
    ("node_boot_time_seconds", "Node boot time, in unixtime.", false, "btime"),
    ("node_context_switches_total", "Total number of context switches.", true, "ctxt"),
    ("node_forks_total", "Total number of forks.", true, "processes"),
    ("node_intr_total", "Total number of interrupts serviced.", true, "intr"),
    ("node_procs_blocked", "Number of processes blocked waiting for I/O to complete.", false, "procs_blocked"),
    ("node_procs_running", "Number of processes in runnable state.", false, "procs_running"),
];

impl Collect for StatCollector {
    fn name(&self) -> &'static str {
        "stat"
    }

    fn collect(&self, scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let text = scrape.proc_stat(&self.path)?;
        let mut values = [None; FIELDS.len()];
        for line in text.lines() {
            // The cpu lines come first and are most of the file; skip them cheaply.
            if line.starts_with("cpu") {
                continue;
            }
            let mut it = line.split_ascii_whitespace();
            let Some(key) = it.next() else { continue };
            if let Some(i) = FIELDS.iter().position(|f| f.3 == key) {
                let v = it.next().and_then(|v| v.parse::<u64>().ok());
                values[i] = Some(v.ok_or_else(|| parse_err(&self.path, format!("'{key}' has no number")))? as f64);
            }
        }
        for ((name, help, counter, key), v) in FIELDS.iter().zip(values) {
            let v = v.ok_or_else(|| parse_err(&self.path, format!("no '{key}' line")))?;
            let mut f = if *counter { Family::counter(*name, *help) } else { Family::gauge(*name, *help) };
            f.push(&[], v);
            out.push(f.finish());
        }
        Ok(())
    }
}
