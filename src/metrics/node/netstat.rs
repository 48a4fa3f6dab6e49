//! `netstat`: `node_netstat_<Proto>_<Field>` (untyped, as node_exporter) from `net/netstat` and
//! `net/snmp` (pairs of `Proto: names...` / `Proto: values...` lines) and `net/snmp6`
//! (`Ip6InOctets 123` lines, the protocol being the name up to its first `6`), filtered by
//! `netstat.fields`. Read from PID 1's network namespace (see `NetFile`). netstat and snmp
//! must exist; snmp6 is skipped when IPv6 is off. Every value is parsed before filtering, as
//! node_exporter does.

use super::config::NetstatConfig;
use super::{Collect, Error, Family, NetFile, Paths, Scrape, Text, parse_err, parse_f64, regex};
use regex::Regex;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// A kept column's metric name and help (shared with every scrape's family); None where
/// `fields` drops the column.
type Column = Option<(Text, Text)>;

pub(super) struct NetstatCollector {
    netstat: NetFile,
    snmp: NetFile,
    snmp6: NetFile,
    fields: Option<Regex>,
    /// The columns of each header seen (a `Proto: names...` line of netstat/snmp, the key of an
    /// snmp6 line). The kernel writes the same headers every scrape, so the `fields` regex and
    /// the name formatting run once per name, not once per name per scrape.
    columns: Mutex<HashMap<String, Vec<Column>>>,
}

/// More distinct headers than any kernel writes: past it the cache starts over (bounds memory
/// should a file ever change its headers at every read).
const MAX_HEADERS: usize = 4096;

impl NetstatCollector {
    pub fn new(paths: &Paths, config: &NetstatConfig) -> Result<Self, Error> {
        Ok(Self {
            netstat: NetFile::new(paths, "netstat"),
            snmp: NetFile::new(paths, "snmp"),
            snmp6: NetFile::new(paths, "snmp6"),
            fields: regex("netstat.fields", &config.fields)?,
            columns: Mutex::new(HashMap::new()),
        })
    }

    /// The metric of `proto`'s `field`, or None if `fields` drops it.
    fn column(&self, proto: &str, field: &str) -> Column {
        let key = format!("{proto}_{field}");
        if self.fields.as_ref().is_some_and(|re| !re.is_match(&key)) {
            return None;
        }
        Some((format!("node_netstat_{key}").into(), format!("Statistic {proto}{field}.").into()))
    }
}

/// The cached columns of `header`, built on first sight.
fn columns_of<'c>(
    cache: &'c mut HashMap<String, Vec<Column>>,
    header: &str,
    build: impl FnOnce() -> Vec<Column>,
) -> &'c [Column] {
    if !cache.contains_key(header) {
        if cache.len() >= MAX_HEADERS {
            cache.clear();
        }
        cache.insert(header.to_string(), build());
    }
    &cache[header]
}

fn number(path: &Path, key: &str, value: &str) -> Result<f64, Error> {
    parse_f64(value).ok_or_else(|| parse_err(path, format!("{key}: '{value}' is not a number")))
}

/// (header line, values) of each section of a header/value paired file.
fn paired<'t>(path: &Path, text: &'t str, out: &mut Vec<(&'t str, Vec<f64>)>) -> Result<(), Error> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    while let Some(header) = lines.next() {
        let values = lines.next().ok_or_else(|| parse_err(path, format!("no value line after '{header}'")))?;
        let (proto, names) =
            header.split_once(':').ok_or_else(|| parse_err(path, format!("no 'Proto:' in {header}")))?;
        let (proto2, values) =
            values.split_once(':').ok_or_else(|| parse_err(path, format!("no 'Proto:' in {values}")))?;
        let count = names.split_ascii_whitespace().count();
        if proto != proto2 || count != values.split_ascii_whitespace().count() {
            return Err(parse_err(path, format!("{proto}: header and value lines do not match")));
        }
        let mut parsed = Vec::with_capacity(count);
        for (name, value) in names.split_ascii_whitespace().zip(values.split_ascii_whitespace()) {
            parsed.push(number(path, name, value)?);
        }
        out.push((header, parsed));
    }
    Ok(())
}

impl Collect for NetstatCollector {
    fn name(&self) -> &'static str {
        "netstat"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        // Every value is parsed (and may fail the collector) before anything is exported.
        let (netstat, netstat_path) = self.netstat.read()?;
        let mut sections = Vec::with_capacity(16);
        paired(netstat_path, &netstat, &mut sections)?;
        let (snmp, snmp_path) = self.snmp.read()?;
        paired(snmp_path, &snmp, &mut sections)?;
        let snmp6 = match self.snmp6.read() {
            Ok(read) => Some(read),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let mut six = Vec::with_capacity(128);
        if let Some((text, path)) = &snmp6 {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let mut it = line.split_ascii_whitespace();
                let (Some(key), Some(value)) = (it.next(), it.next()) else {
                    return Err(parse_err(path, format!("expected 'name value': {line}")));
                };
                if !key.contains('6') {
                    continue;
                }
                six.push((key, number(path, key, value)?));
            }
        }

        let mut cache = self.columns.lock().unwrap_or_else(|p| p.into_inner());
        let mut emit = |column: &Column, v: f64| {
            if let Some((name, help)) = column {
                let mut f = Family::untyped(name.clone(), help.clone());
                f.push(&[], v);
                out.push(f.finish());
            }
        };
        for (header, values) in sections {
            let columns = columns_of(&mut cache, header, || {
                // paired() checked the `Proto:`.
                let (proto, names) = header.split_once(':').unwrap_or_default();
                names.split_ascii_whitespace().map(|name| self.column(proto, name)).collect()
            });
            for (column, v) in columns.iter().zip(values) {
                emit(column, v);
            }
        }
        for (key, v) in six {
            let columns = columns_of(&mut cache, key, || {
                // The protocol is the name up to its first `6` (checked above).
                let (proto, field) = key.split_at(key.find('6').map_or(0, |six| six + 1));
                vec![self.column(proto, field)]
            });
            emit(&columns[0], v);
        }
        Ok(())
    }
}
