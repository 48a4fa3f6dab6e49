//! `vmstat`: `node_vmstat_<field>` (untyped, as node_exporter) for the /proc/vmstat fields that
//! match `vmstat.fields` (default: OOM kills, paging, swapping, page faults).
//!
//! Every line is parsed before filtering, as node_exporter does, so a malformed file fails the
//! collector whichever fields are selected.

use super::config::VmstatConfig;
use super::{Buf, Collect, Error, Family, Paths, Scrape, parse_err, regex};
use regex::Regex;
use std::path::PathBuf;

pub(super) struct VmstatCollector {
    path: PathBuf,
    buf: Buf,
    fields: Option<Regex>,
}

impl VmstatCollector {
    pub fn new(paths: &Paths, config: &VmstatConfig) -> Result<Self, Error> {
        Ok(Self { path: paths.proc("vmstat"), buf: Buf::new(), fields: regex("vmstat.fields", &config.fields)? })
    }
}

impl Collect for VmstatCollector {
    fn name(&self) -> &'static str {
        "vmstat"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let text = self.buf.read(&self.path)?;
        for line in text.lines().filter(|l| !l.is_empty()) {
            let mut it = line.split_ascii_whitespace();
            let (Some(field), Some(value), None) = (it.next(), it.next(), it.next()) else {
                return Err(parse_err(&self.path, format!("expected 'field value': {line}")));
            };
            let v: f64 =
                value.parse().map_err(|_| parse_err(&self.path, format!("{field}: '{value}' is not a number")))?;
            // An empty regex selects every field, as node_exporter's `(?:)` would.
            if self.fields.as_ref().is_some_and(|re| !re.is_match(field)) {
                continue;
            }
            let mut f =
                Family::untyped(format!("node_vmstat_{field}"), format!("/proc/vmstat information field {field}."));
            f.push(&[], v);
            out.push(f.finish());
        }
        Ok(())
    }
}
