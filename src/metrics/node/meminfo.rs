//! `meminfo`: one `node_memory_<Field>[_bytes]` gauge per /proc/meminfo line, named as
//! node_exporter does: `(x)` becomes `_x` (`Active(anon)` → `Active_anon`), `kB` values are
//! multiplied by 1024 and get `_bytes`, unitless ones (`HugePages_*`) are left as they are.
//!
//! Every line is exported, as node_exporter up to 1.8 did; newer releases export a fixed list
//! that is a subset of this, so every series they have is here with the same name and value.

use super::{Buf, ByLine, Collect, Error, Family, Paths, Scrape, Text, by_line, parse_err};
use std::path::PathBuf;

pub(super) struct MeminfoCollector {
    path: PathBuf,
    buf: Buf,
    /// Per line: whether the value was in kB, the family's name and help.
    names: ByLine<(bool, Text, Text)>,
}

impl MeminfoCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { path: paths.proc("meminfo"), buf: Buf::new(), names: ByLine::new() }
    }
}

/// The metric name suffix for a /proc/meminfo key: `Active(anon)` → `Active_anon`.
fn field_name(key: &str, kb: bool) -> String {
    let mut name = String::with_capacity(key.len() + 8);
    for c in key.chars() {
        match c {
            '(' => name.push('_'),
            ')' => {}
            c if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
            _ => name.push('_'),
        }
    }
    if kb {
        name.push_str("_bytes");
    }
    name
}

/// Whether `key`'s value is in kB, and its family's name and help.
fn naming(key: &str, kb: bool) -> (bool, Text, Text) {
    let field = field_name(key, kb);
    (kb, format!("node_memory_{field}").into(), format!("Memory information field {field}.").into())
}

impl Collect for MeminfoCollector {
    fn name(&self) -> &'static str {
        "meminfo"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let text = self.buf.read(&self.path)?;
        let before = out.len();
        let mut names = self.names.lock();
        let mut at = 0;
        for line in text.lines() {
            let mut it = line.split_ascii_whitespace();
            let (Some(key), Some(value)) = (it.next(), it.next()) else { continue };
            let key = key.trim_end_matches(':');
            let Ok(value) = value.parse::<u64>() else {
                return Err(parse_err(&self.path, format!("'{key}' is not a number")));
            };
            let (value, kb) = match it.next() {
                Some("kB") => (value as f64 * 1024.0, true),
                None => (value as f64, false),
                Some(unit) => return Err(parse_err(&self.path, format!("'{key}' has unknown unit '{unit}'"))),
            };
            if names.get(at).is_some_and(|(_, (was_kb, _, _))| *was_kb != kb) {
                // The unit changed: not seen from any kernel, but the name must follow it.
                names.truncate(at);
            }
            let named = by_line(&mut names, &mut at, key, || naming(key, kb));
            let mut f = Family::gauge(named.1.clone(), named.2.clone());
            f.push(&[], value);
            out.push(f.finish());
        }
        if out.len() == before {
            return Err(parse_err(&self.path, "no fields"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::field_name;

    #[test]
    fn names_as_node_exporter() {
        assert_eq!(field_name("Active(anon)", true), "Active_anon_bytes");
        assert_eq!(field_name("MemTotal", true), "MemTotal_bytes");
        assert_eq!(field_name("HugePages_Total", false), "HugePages_Total");
        assert_eq!(field_name("Committed_AS", true), "Committed_AS_bytes");
        assert_eq!(field_name("DirectMap2M", true), "DirectMap2M_bytes");
    }
}
