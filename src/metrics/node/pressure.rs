//! `pressure`: pressure stall information (PSI) from `<procfs>/pressure/{cpu,io,memory,irq}`,
//! as node_exporter: only the `total=` figure (µs) of each line, in seconds, as counters.
//! cpu and io and memory `some` are "waiting", `full` is "stalled"; cpu `full` is not exported
//! and irq has only `full`.
//!
//! A kernel without PSI (or booted with psi=0) has no files or answers EOPNOTSUPP: no data.

use super::{Buf, Collect, Error, Family, Paths, Scrape, parse_err};
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;

/// (resource, line, metric, HELP), in node_exporter's order.
const SERIES: [(&str, &str, &str, &str); 6] = [
    (
        "cpu",
        "some",
        "node_pressure_cpu_waiting_seconds_total",
        "Total time in seconds that processes have waited for CPU time",
    ),
    (
        "io",
        "some",
        "node_pressure_io_waiting_seconds_total",
        "Total time in seconds that processes have waited due to IO congestion",
    ),
    (
        "io",
        "full",
        "node_pressure_io_stalled_seconds_total",
        "Total time in seconds no process could make progress due to IO congestion",
    ),
    (
        "memory",
        "some",
        "node_pressure_memory_waiting_seconds_total",
        "Total time in seconds that processes have waited for memory",
    ),
    (
        "memory",
        "full",
        "node_pressure_memory_stalled_seconds_total",
        "Total time in seconds no process could make progress due to memory congestion",
    ),
    (
        "irq",
        "full",
        "node_pressure_irq_stalled_seconds_total",
        "Total time in seconds no process could make progress due to IRQ congestion",
    ),
];

pub(super) struct PressureCollector {
    dir: PathBuf,
    /// Each resource of `SERIES` with its file and buffer (kept open: see `Buf`).
    files: Vec<(&'static str, PathBuf, Buf)>,
}

impl PressureCollector {
    pub fn new(paths: &Paths) -> Self {
        let dir = paths.proc("pressure");
        let mut files: Vec<(&'static str, PathBuf, Buf)> = Vec::new();
        for (resource, ..) in SERIES {
            if files.last().is_none_or(|(r, ..)| *r != resource) {
                files.push((resource, dir.join(resource), Buf::new()));
            }
        }
        Self { dir, files }
    }
}

/// The `total=` of the line starting with `kind` (`some`/`full`), in µs.
fn total(path: &Path, text: &str, kind: &str) -> Result<Option<u64>, Error> {
    let Some(line) = text.lines().find(|l| l.split_ascii_whitespace().next() == Some(kind)) else {
        return Ok(None);
    };
    let v = line
        .split_ascii_whitespace()
        .find_map(|kv| kv.strip_prefix("total="))
        .ok_or_else(|| parse_err(path, format!("no total= in '{line}'")))?;
    v.parse().map(Some).map_err(|_| parse_err(path, format!("total '{v}' is not a number")))
}

impl Collect for PressureCollector {
    fn name(&self) -> &'static str {
        "pressure"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let mut found = 0;
        let mut current: Option<(&str, &Path, MutexGuard<'_, String>)> = None;
        for (resource, kind, name, help) in SERIES {
            if current.as_ref().is_none_or(|(r, _, _)| *r != resource) {
                let (_, path, buf) =
                    self.files.iter().find(|(r, ..)| *r == resource).expect("new() lists every resource of SERIES");
                current = match buf.read(path) {
                    Ok(text) => Some((resource, path.as_path(), text)),
                    // A kernel older than the resource (irq came in 6.1): skipped.
                    Err(e) if e.is_not_found() => None,
                    Err(Error::Read { error, .. }) if error.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                        return Err(Error::NoData("pressure: PSI is disabled (psi=0)".into()));
                    }
                    Err(e) => return Err(e),
                };
                found += current.is_some() as usize;
            }
            let Some((_, path, text)) = &current else { continue };
            let Some(us) = total(path, text, kind)? else {
                return Err(Error::NoData(format!("pressure: no '{kind}' line in {}", path.display())));
            };
            let mut f = Family::counter(name, help);
            // µs → s in two steps, as node_exporter, so the float is bit-for-bit the same.
            f.push(&[], us as f64 / 1000.0 / 1000.0);
            out.push(f.finish());
        }
        if found == 0 {
            return Err(Error::NoData(format!("pressure: no PSI files under {}", self.dir.display())));
        }
        Ok(())
    }
}
