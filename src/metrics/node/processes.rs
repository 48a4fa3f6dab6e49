//! `processes` (off by default, as upstream): `node_processes_{pids,threads,max_processes,
//! max_threads}` and `node_processes_state{state}` / `node_processes_threads_state{thread_state}`
//! from every `<procfs>/<pid>/stat` and `<pid>/task/<tid>/stat`, as node_exporter's processes
//! collector. It reads one file per thread on the node, which is why it is off by default. A
//! process or thread that exits between listing and reading is skipped.

use super::{Collect, Error, Family, Paths, Scrape, parse_err};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub(super) struct ProcessesCollector {
    procfs: PathBuf,
}

impl ProcessesCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { procfs: paths.procfs.clone() }
    }
}

/// The state letter and num_threads of a `stat` line; None if the file vanished.
fn read_stat(path: &Path) -> Result<Option<(String, u64)>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            return Ok(None);
        }
        Err(error) => return Err(Error::Read { path: path.to_path_buf(), error }),
    };
    // `pid (comm) S ppid ...`: comm may hold spaces and parentheses, so split after the last ')'.
    let rest = text.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| parse_err(path, "no ')' after comm"))?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next().ok_or_else(|| parse_err(path, "no state"))?.to_string();
    // num_threads is field 20 of stat(5); state is field 3.
    let threads = fields.nth(16).and_then(|f| f.parse().ok()).ok_or_else(|| parse_err(path, "no num_threads"))?;
    Ok(Some((state, threads)))
}

fn numeric_entries(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.bytes().all(|b| b.is_ascii_digit()).then(|| (name, e.path()))
        })
        .collect())
}

fn read_number(path: &Path) -> Result<f64, Error> {
    let text = std::fs::read_to_string(path).map_err(|error| Error::Read { path: path.to_path_buf(), error })?;
    text.trim()
        .parse::<u64>()
        .map(|v| v as f64)
        .map_err(|_| parse_err(path, format!("'{}' is not a number", text.trim())))
}

impl Collect for ProcessesCollector {
    fn name(&self) -> &'static str {
        "processes"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let pids_list =
            numeric_entries(&self.procfs).map_err(|error| Error::Read { path: self.procfs.clone(), error })?;
        let (mut pids, mut threads) = (0u64, 0u64);
        let mut states: BTreeMap<String, u64> = BTreeMap::new();
        let mut thread_states: BTreeMap<String, u64> = BTreeMap::new();
        for (pid, dir) in pids_list {
            let Some((state, n)) = read_stat(&dir.join("stat"))? else { continue };
            pids += 1;
            threads += n;
            *states.entry(state.clone()).or_default() += 1;
            // Each task's own state; the main thread counts with the process' state.
            let Ok(tasks) = numeric_entries(&dir.join("task")) else { continue };
            for (tid, tdir) in tasks {
                let tstate =
                    if tid == pid { Some(state.clone()) } else { read_stat(&tdir.join("stat"))?.map(|(s, _)| s) };
                if let Some(s) = tstate {
                    *thread_states.entry(s).or_default() += 1;
                }
            }
        }
        let max_threads = read_number(&self.procfs.join("sys/kernel/threads-max"))?;
        let max_pids = read_number(&self.procfs.join("sys/kernel/pid_max"))?;
        let single = |name: &'static str, help: &'static str, v: f64| {
            let mut f = Family::gauge(name, help);
            f.push(&[], v);
            f.finish()
        };
        out.push(single("node_processes_threads", "Allocated threads in system", threads as f64));
        out.push(single("node_processes_max_threads", "Limit of threads in the system", max_threads));
        out.push(single("node_processes_pids", "Number of PIDs", pids as f64));
        out.push(single("node_processes_max_processes", "Number of max PIDs limit", max_pids));
        let mut f = Family::gauge("node_processes_state", "Number of processes in each state.");
        for (s, n) in &states {
            f.push(&[("state", s)], *n as f64);
        }
        f.finish_into(out);
        let mut f = Family::gauge("node_processes_threads_state", "Number of threads in each state.");
        for (s, n) in &thread_states {
            f.push(&[("thread_state", s)], *n as f64);
        }
        f.finish_into(out);
        Ok(())
    }
}
