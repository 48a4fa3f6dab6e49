//! `conntrack`: `node_nf_conntrack_entries`, `_entries_limit` from
//! `<procfs>/sys/net/netfilter/nf_conntrack_{count,max}` and the `node_nf_conntrack_stat_*`
//! sums over CPUs of `net/stat/nf_conntrack` (hex columns, one row per CPU).
//!
//! Without the nf_conntrack module the files do not exist: no data, as node_exporter (the
//! families read before the missing file are kept, as there). The stat file is read from PID 1's
//! network namespace (see `NetFile`); the sysctls have no such path and are vigil's namespace's
//! (with the module loaded the limit is the node's; the count is the pod's without host
//! networking).

use super::{Buf, Collect, Error, Family, NetFile, Paths, Scrape, parse_err};
use std::path::PathBuf;

/// (0-based column of net/stat/nf_conntrack, metric name, HELP), as node_exporter.
const STATS: [(usize, &str, &str); 8] = [
    (2, "node_nf_conntrack_stat_found", "Number of searched entries which were successful."),
    (4, "node_nf_conntrack_stat_invalid", "Number of packets seen which can not be tracked."),
    (5, "node_nf_conntrack_stat_ignore", "Number of packets seen which are already connected to a conntrack entry."),
    (8, "node_nf_conntrack_stat_insert", "Number of entries inserted into the list."),
    (9, "node_nf_conntrack_stat_insert_failed", "Number of entries for which list insertion was attempted but failed."),
    (10, "node_nf_conntrack_stat_drop", "Number of packets dropped due to conntrack failure."),
    (
        11,
        "node_nf_conntrack_stat_early_drop",
        "Number of dropped conntrack entries to make room for new ones, if maximum table size was reached.",
    ),
    (
        16,
        "node_nf_conntrack_stat_search_restart",
        "Number of conntrack table lookups which had to be restarted due to hashtable resizes.",
    ),
];

pub(super) struct ConntrackCollector {
    count: PathBuf,
    max: PathBuf,
    /// For count and max, one each (kept open: see `Buf`).
    bufs: [Buf; 2],
    stat: NetFile,
}

impl ConntrackCollector {
    pub fn new(paths: &Paths) -> Self {
        Self {
            count: paths.proc("sys/net/netfilter/nf_conntrack_count"),
            max: paths.proc("sys/net/netfilter/nf_conntrack_max"),
            bufs: [Buf::new(), Buf::new()],
            stat: NetFile::new(paths, "stat/nf_conntrack"),
        }
    }
}

fn no_data_if_missing(e: Error) -> Error {
    if e.is_not_found() { Error::NoData(format!("conntrack: {e} (nf_conntrack module not loaded)")) } else { e }
}

impl Collect for ConntrackCollector {
    fn name(&self) -> &'static str {
        "conntrack"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        for (path, buf, name, help) in [
            (
                &self.count,
                &self.bufs[0],
                "node_nf_conntrack_entries",
                "Number of currently allocated flow entries for connection tracking.",
            ),
            (&self.max, &self.bufs[1], "node_nf_conntrack_entries_limit", "Maximum size of connection tracking table."),
        ] {
            let text = buf.read(path).map_err(no_data_if_missing)?;
            let v: u64 =
                text.trim().parse().map_err(|_| parse_err(path, format!("'{}' is not a number", text.trim())))?;
            let mut f = Family::gauge(name, help);
            f.push(&[], v as f64);
            out.push(f.finish());
        }
        let (text, path) = self.stat.read().map_err(no_data_if_missing)?;
        let mut sums = [0u64; STATS.len()];
        // A header line, then one row per CPU of 16 or 17 hex columns.
        for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let cols: Vec<&str> = line.split_ascii_whitespace().collect();
            if cols.len() < 16 {
                return Err(parse_err(path, format!("{} columns, expected 16 or 17: {line}", cols.len())));
            }
            for (sum, (col, _, _)) in sums.iter_mut().zip(STATS) {
                let Some(hex) = cols.get(col) else { continue };
                let v = u64::from_str_radix(hex, 16).map_err(|_| parse_err(path, format!("'{hex}' is not hex")))?;
                *sum += v;
            }
        }
        for (sum, (_, name, help)) in sums.into_iter().zip(STATS) {
            let mut f = Family::gauge(name, help);
            f.push(&[], sum as f64);
            out.push(f.finish());
        }
        Ok(())
    }
}
