//! `softnet`: `node_softnet_*{cpu}` from `<procfs>/net/softnet_stat`, one row of hex columns
//! per CPU, as node_exporter's softnet collector (procfs' parser): columns 0, 1, 2, 8, 9, 10
//! are counters, 11 the backlog length; the `cpu` label is column 12 when the kernel writes it
//! (5.10+), otherwise the row's index. A row needs at least 9 columns; missing later columns
//! read as 0, as upstream.

use super::{Buf, Collect, Error, Family, Paths, Scrape, parse_err};
use std::path::PathBuf;

/// (column, metric, help, is counter).
const COLUMNS: [(usize, &str, &str, bool); 7] = [
    (0, "node_softnet_processed_total", "Number of processed packets", true),
    (1, "node_softnet_dropped_total", "Number of dropped packets", true),
    (2, "node_softnet_times_squeezed_total", "Number of times processing packets ran out of quota", true),
    (
        8,
        "node_softnet_cpu_collision_total",
        "Number of collision occur while obtaining device lock while transmitting",
        true,
    ),
    (9, "node_softnet_received_rps_total", "Number of times cpu woken up received_rps", true),
    (10, "node_softnet_flow_limit_count_total", "Number of times flow limit has been reached", true),
    (11, "node_softnet_backlog_len", "Softnet backlog status", false),
];

pub(super) struct SoftnetCollector {
    path: PathBuf,
    buf: Buf,
}

impl SoftnetCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { path: paths.proc("net/softnet_stat"), buf: Buf::new() }
    }
}

impl Collect for SoftnetCollector {
    fn name(&self) -> &'static str {
        "softnet"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let text = self.buf.read(&self.path)?;
        let mut families: Vec<Family> = COLUMNS
            .iter()
            .map(
                |(_, name, help, counter)| {
                    if *counter { Family::counter(*name, *help) } else { Family::gauge(*name, *help) }
                },
            )
            .collect();
        for (row, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let mut cols = [0u32; 13];
            let mut n = 0;
            for field in line.split_ascii_whitespace() {
                let v = u32::from_str_radix(field, 16)
                    .map_err(|_| parse_err(&self.path, format!("row {row}: '{field}' is not a hex number")))?;
                if n < cols.len() {
                    cols[n] = v;
                }
                n += 1;
            }
            if n < 9 {
                return Err(parse_err(&self.path, format!("row {row}: {n} columns, expected at least 9")));
            }
            let cpu = if n >= 13 { cols[12] as usize } else { row }.to_string();
            for (family, (col, ..)) in families.iter_mut().zip(COLUMNS) {
                family.push(&[("cpu", &cpu)], cols[col] as f64);
            }
        }
        for f in families {
            f.finish_into(out);
        }
        Ok(())
    }
}
