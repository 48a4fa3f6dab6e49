//! `vmstat`: `node_vmstat_<field>` (untyped, as node_exporter) for the /proc/vmstat fields that
//! match `vmstat.fields` (default: OOM kills, paging, swapping, page faults).
//!
//! Every line is parsed before filtering, as node_exporter does, so a malformed file fails the
//! collector whichever fields are selected.

use super::config::VmstatConfig;
use super::{Buf, ByLine, Collect, Error, Family, Paths, Scrape, Text, by_line, parse_err, parse_f64, regex};
use regex::Regex;
use std::path::PathBuf;

pub(super) struct VmstatCollector {
    path: PathBuf,
    buf: Buf,
    fields: Option<Regex>,
    /// Per line: the family's name and help, None where `fields` drops the field (the regex
    /// runs once per field, not once per field per scrape).
    names: ByLine<Option<(Text, Text)>>,
}

impl VmstatCollector {
    pub fn new(paths: &Paths, config: &VmstatConfig) -> Result<Self, Error> {
        Ok(Self {
            path: paths.proc("vmstat"),
            buf: Buf::new(),
            fields: regex("vmstat.fields", &config.fields)?,
            names: ByLine::new(),
        })
    }
}

impl Collect for VmstatCollector {
    fn name(&self) -> &'static str {
        "vmstat"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let text = self.buf.read(&self.path)?;
        let mut names = self.names.lock();
        let mut at = 0;
        for line in text.lines().filter(|l| !l.is_empty()) {
            let mut it = line.split_ascii_whitespace();
            let (Some(field), Some(value), None) = (it.next(), it.next(), it.next()) else {
                return Err(parse_err(&self.path, format!("expected 'field value': {line}")));
            };
            let v =
                parse_f64(value).ok_or_else(|| parse_err(&self.path, format!("{field}: '{value}' is not a number")))?;
            let named = by_line(&mut names, &mut at, field, || {
                // An empty regex selects every field, as node_exporter's `(?:)` would.
                if self.fields.as_ref().is_some_and(|re| !re.is_match(field)) {
                    return None;
                }
                Some((format!("node_vmstat_{field}").into(), format!("/proc/vmstat information field {field}.").into()))
            });
            let Some((name, help)) = named else { continue };
            let mut f = Family::untyped(name.clone(), help.clone());
            f.push(&[], v);
            out.push(f.finish());
        }
        Ok(())
    }
}
