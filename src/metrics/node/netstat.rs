//! `netstat`: `node_netstat_<Proto>_<Field>` (untyped, as node_exporter) from `net/netstat` and
//! `net/snmp` (pairs of `Proto: names...` / `Proto: values...` lines) and `net/snmp6`
//! (`Ip6InOctets 123` lines, the protocol being the name up to its first `6`), filtered by
//! `netstat.fields`. Read from PID 1's network namespace (see `NetFile`). netstat and snmp
//! must exist; snmp6 is skipped when IPv6 is off. Every value is parsed before filtering, as
//! node_exporter does.

use super::config::NetstatConfig;
use super::{Collect, Error, Family, NetFile, Paths, Scrape, parse_err, regex};
use prometheus::proto::MetricFamily;
use regex::Regex;
use std::path::Path;

pub(super) struct NetstatCollector {
    netstat: NetFile,
    snmp: NetFile,
    snmp6: NetFile,
    fields: Option<Regex>,
}

impl NetstatCollector {
    pub fn new(paths: &Paths, config: &NetstatConfig) -> Result<Self, Error> {
        Ok(Self {
            netstat: NetFile::new(paths, "netstat"),
            snmp: NetFile::new(paths, "snmp"),
            snmp6: NetFile::new(paths, "snmp6"),
            fields: regex("netstat.fields", &config.fields)?,
        })
    }
}

fn number(path: &Path, key: &str, value: &str) -> Result<f64, Error> {
    value.parse().map_err(|_| parse_err(path, format!("{key}: '{value}' is not a number")))
}

/// (`Proto`, `Field`, value) of a header/value paired file.
fn paired(path: &Path, text: &str, out: &mut Vec<(String, String, f64)>) -> Result<(), Error> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    while let Some(names) = lines.next() {
        let values = lines.next().ok_or_else(|| parse_err(path, format!("no value line after '{names}'")))?;
        let (proto, names) = names.split_once(':').ok_or_else(|| parse_err(path, format!("no 'Proto:' in {names}")))?;
        let (proto2, values) =
            values.split_once(':').ok_or_else(|| parse_err(path, format!("no 'Proto:' in {values}")))?;
        let (names, values): (Vec<&str>, Vec<&str>) =
            (names.split_ascii_whitespace().collect(), values.split_ascii_whitespace().collect());
        if proto != proto2 || names.len() != values.len() {
            return Err(parse_err(path, format!("{proto}: header and value lines do not match")));
        }
        for (name, value) in names.into_iter().zip(values) {
            out.push((proto.to_string(), name.to_string(), number(path, name, value)?));
        }
    }
    Ok(())
}

impl Collect for NetstatCollector {
    fn name(&self) -> &'static str {
        "netstat"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<MetricFamily>) -> Result<(), Error> {
        let mut stats = Vec::with_capacity(512);
        for file in [&self.netstat, &self.snmp] {
            let (text, path) = file.read()?;
            paired(path, &text, &mut stats)?;
        }
        match self.snmp6.read() {
            Ok((text, path)) => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let mut it = line.split_ascii_whitespace();
                    let (Some(key), Some(value)) = (it.next(), it.next()) else {
                        return Err(parse_err(path, format!("expected 'name value': {line}")));
                    };
                    let Some(six) = key.find('6') else { continue };
                    let (proto, field) = key.split_at(six + 1);
                    stats.push((proto.to_string(), field.to_string(), number(path, key, value)?));
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        for (proto, field, v) in stats {
            let key = format!("{proto}_{field}");
            if self.fields.as_ref().is_some_and(|re| !re.is_match(&key)) {
                continue;
            }
            let mut f = Family::untyped(&format!("node_netstat_{key}"), &format!("Statistic {proto}{field}."));
            f.push(&[], v);
            out.push(f.finish());
        }
        Ok(())
    }
}
