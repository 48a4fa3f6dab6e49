//! `loadavg`: `node_load1`, `node_load5`, `node_load15` from /proc/loadavg.

use super::{Buf, Collect, Error, Family, Paths, Scrape, parse_err};
use std::path::PathBuf;

pub(super) struct LoadavgCollector {
    path: PathBuf,
    buf: Buf,
}

impl LoadavgCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { path: paths.proc("loadavg"), buf: Buf::new() }
    }
}

impl Collect for LoadavgCollector {
    fn name(&self) -> &'static str {
        "loadavg"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let text = self.buf.read(&self.path)?;
        let mut it = text.split_ascii_whitespace();
        for (name, help) in [
            ("node_load1", "1m load average."),
            ("node_load5", "5m load average."),
            ("node_load15", "15m load average."),
        ] {
            let v: f64 = it
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| parse_err(&self.path, "expected three load averages"))?;
            let mut f = Family::gauge(name, help);
            f.push(&[], v);
            out.push(f.finish());
        }
        Ok(())
    }
}
