//! `os`: `node_os_info` and `node_os_version` from `<rootfs>/etc/os-release` (fallback
//! `<rootfs>/usr/lib/os-release`), as node_exporter. The parsed file is cached and re-read only
//! when its modification time or size changes, so a scrape costs one stat(2).

use super::{Collect, Error, Family, Paths, Scrape};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

/// node_os_info's labels, in sorted order, and the os-release key each comes from.
const INFO_LABELS: [(&str, &str); 12] = [
    ("build_id", "BUILD_ID"),
    ("id", "ID"),
    ("id_like", "ID_LIKE"),
    ("image_id", "IMAGE_ID"),
    ("image_version", "IMAGE_VERSION"),
    ("name", "NAME"),
    ("pretty_name", "PRETTY_NAME"),
    ("variant", "VARIANT"),
    ("variant_id", "VARIANT_ID"),
    ("version", "VERSION"),
    ("version_codename", "VERSION_CODENAME"),
    ("version_id", "VERSION_ID"),
];

pub(super) struct OsCollector {
    candidates: [PathBuf; 2],
    cache: Mutex<Option<Cached>>,
}

struct Cached {
    path: PathBuf,
    mtime: SystemTime,
    len: u64,
    fields: HashMap<String, String>,
}

impl OsCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { candidates: [paths.root("etc/os-release"), paths.root("usr/lib/os-release")], cache: Mutex::new(None) }
    }
}

/// `KEY=value` lines; values may be single- or double-quoted, with backslash escapes.
pub(super) fn parse_os_release(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim();
        let value = if let Some(inner) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            let mut s = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        s.push(n);
                    }
                } else {
                    s.push(c);
                }
            }
            s
        } else if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
            inner.to_string()
        } else {
            v.to_string()
        };
        out.insert(k.trim().to_string(), value);
    }
    out
}

/// The leading `major[.minor]` of VERSION_ID as a number: `22.04` → 22.04, `12` → 12,
/// `11.7.1` → 11.7.
pub(super) fn major_minor(version_id: &str) -> Option<f64> {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let major = digits(version_id);
    if major == 0 {
        return None;
    }
    let rest = &version_id[major..];
    let end = match rest.strip_prefix('.') {
        Some(r) => major + 1 + digits(r),
        None => major,
    };
    version_id[..end].trim_end_matches('.').parse().ok()
}

impl Collect for OsCollector {
    fn name(&self) -> &'static str {
        "os"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let mut last_err = None;
        let mut found = false;
        for path in &self.candidates {
            let meta = match std::fs::metadata(path) {
                Ok(m) => m,
                Err(error) => {
                    last_err = Some(Error::Read { path: path.clone(), error });
                    continue;
                }
            };
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let fresh = cache.as_ref().is_some_and(|c| c.path == *path && c.mtime == mtime && c.len == meta.len());
            if !fresh {
                let text = match std::fs::read_to_string(path) {
                    Ok(t) => t,
                    Err(error) => {
                        last_err = Some(Error::Read { path: path.clone(), error });
                        continue;
                    }
                };
                *cache = Some(Cached { path: path.clone(), mtime, len: meta.len(), fields: parse_os_release(&text) });
            }
            found = true;
            break;
        }
        if !found {
            return Err(last_err.unwrap_or_else(|| Error::Other("no os-release file".into())));
        }
        let fields = &cache.as_ref().expect("set above when found").fields;
        let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
        let labels: Vec<(&str, &str)> = INFO_LABELS.iter().map(|(l, k)| (*l, get(k))).collect();
        let mut info = Family::gauge(
            "node_os_info",
            "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.",
        );
        info.push(&labels, 1.0);
        out.push(info.finish());
        if let Some(v) = major_minor(get("VERSION_ID")) {
            let mut version =
                Family::gauge("node_os_version", "Metric containing the major.minor part of the OS version.");
            version.push(&[("id", get("ID")), ("id_like", get("ID_LIKE")), ("name", get("NAME"))], v);
            out.push(version.finish());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(major_minor("22.04"), Some(22.04));
        assert_eq!(major_minor("12"), Some(12.0));
        assert_eq!(major_minor("11.7.1"), Some(11.7));
        assert_eq!(major_minor("rolling"), None);
        assert_eq!(major_minor(""), None);
    }

    #[test]
    fn quoting() {
        let f = parse_os_release("NAME=\"Debian GNU/Linux\"\nID=debian\n# c\nX='a b'\nY=\"q\\\"x\"\n");
        assert_eq!(f["NAME"], "Debian GNU/Linux");
        assert_eq!(f["ID"], "debian");
        assert_eq!(f["X"], "a b");
        assert_eq!(f["Y"], "q\"x");
    }
}
