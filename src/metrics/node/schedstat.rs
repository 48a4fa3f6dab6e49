//! `schedstat`: `node_schedstat_{running,waiting}_seconds_total` and
//! `node_schedstat_timeslices_total` per CPU from `<procfs>/schedstat`, as node_exporter's
//! schedstat collector: of a `cpuN` line's nine numbers, the 7th and 8th are nanoseconds spent
//! running and waiting, the 9th the timeslices run. A kernel built without CONFIG_SCHEDSTATS has
//! no such file: that is "no data" (success 0, logged at debug), as upstream's ErrNoData.

use super::{Buf, Collect, Error, Family, Paths, Scrape, parse_err};
use std::path::PathBuf;

pub(super) struct SchedstatCollector {
    path: PathBuf,
    buf: Buf,
}

impl SchedstatCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { path: paths.proc("schedstat"), buf: Buf::new() }
    }
}

impl Collect for SchedstatCollector {
    fn name(&self) -> &'static str {
        "schedstat"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let text = match self.buf.read(&self.path) {
            Err(e) if e.is_not_found() => {
                return Err(Error::NoData(format!("{} does not exist", self.path.display())));
            }
            r => r?,
        };
        let mut running =
            Family::counter("node_schedstat_running_seconds_total", "Number of seconds CPU spent running a process.");
        let mut waiting = Family::counter(
            "node_schedstat_waiting_seconds_total",
            "Number of seconds spent by processing waiting for this CPU.",
        );
        let mut slices = Family::counter("node_schedstat_timeslices_total", "Number of timeslices executed by CPU.");
        for line in text.lines() {
            let mut it = line.split_ascii_whitespace();
            let Some(cpu) = it.next().and_then(|f| f.strip_prefix("cpu")) else { continue };
            let v: Vec<u64> = it
                .map(|f| f.parse::<u64>())
                .collect::<Result<_, _>>()
                .map_err(|_| parse_err(&self.path, format!("cpu{cpu}: not a number in '{line}'")))?;
            if v.len() < 9 {
                return Err(parse_err(&self.path, format!("cpu{cpu}: {} numbers, expected 9", v.len())));
            }
            running.push(&[("cpu", cpu)], v[6] as f64 / 1e9);
            waiting.push(&[("cpu", cpu)], v[7] as f64 / 1e9);
            slices.push(&[("cpu", cpu)], v[8] as f64);
        }
        running.finish_into(out);
        waiting.finish_into(out);
        slices.finish_into(out);
        Ok(())
    }
}
