//! `thermal_zone`: `node_thermal_zone_temp{type,zone}` from
//! `<sysfs>/class/thermal/thermal_zoneN/{type,temp}` (millidegrees → °C) and
//! `node_cooling_device_{cur,max}_state{name,type}` from `cooling_deviceN/`, as node_exporter's
//! thermal_zone collector. As upstream, a zone whose files cannot be read is still reported
//! (temp 0, type empty); a cooling device whose files are missing or refuse reading (ENOENT,
//! EACCES, EINVAL, ENOTSUP, as some drivers answer) is skipped; any other error fails the
//! collector. No `class/thermal` at all (most VMs) reports nothing and succeeds.

use super::{Collect, Error, Family, Paths, Scrape, parse_err};
use std::path::{Path, PathBuf};

pub(super) struct ThermalZoneCollector {
    dir: PathBuf,
}

impl ThermalZoneCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { dir: paths.sys("class/thermal") }
    }
}

/// The N of every `<prefix>N` entry in `dir`, sorted numerically.
pub(super) fn numbered(dir: &Path, prefix: &str) -> Result<Vec<(u64, PathBuf)>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(Error::Read { path: dir.to_path_buf(), error }),
    };
    let mut out: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix(prefix)?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn read_trimmed(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path).map(|s| s.trim().to_string())
}

impl Collect for ThermalZoneCollector {
    fn name(&self) -> &'static str {
        "thermal_zone"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let mut temp = Family::gauge("node_thermal_zone_temp", "Zone temperature in Celsius");
        for (n, dir) in numbered(&self.dir, "thermal_zone")? {
            let kind = read_trimmed(&dir.join("type")).unwrap_or_default();
            let millis: i64 = read_trimmed(&dir.join("temp")).ok().and_then(|t| t.parse().ok()).unwrap_or(0);
            temp.push(&[("type", &kind), ("zone", &n.to_string())], millis as f64 / 1000.0);
        }
        let mut cur = Family::gauge("node_cooling_device_cur_state", "Current throttle state of the cooling device");
        let mut max = Family::gauge("node_cooling_device_max_state", "Maximum throttle state of the cooling device");
        'devices: for (n, dir) in numbered(&self.dir, "cooling_device")? {
            let mut values = [String::new(), String::new(), String::new()];
            for (slot, file) in values.iter_mut().zip(["type", "cur_state", "max_state"]) {
                let path = dir.join(file);
                match read_trimmed(&path) {
                    Ok(v) => *slot = v,
                    Err(e) if skippable(&e) => continue 'devices,
                    Err(error) => return Err(Error::Read { path, error }),
                }
            }
            let [kind, c, m] = values;
            let parse = |v: &str, file: &str| {
                v.parse::<i64>().map_err(|_| parse_err(&dir.join(file), format!("'{v}' is not a number")))
            };
            let (c, m) = (parse(&c, "cur_state")?, parse(&m, "max_state")?);
            let name = n.to_string();
            cur.push(&[("name", &name), ("type", &kind)], c as f64);
            max.push(&[("name", &name), ("type", &kind)], m as f64);
        }
        temp.finish_into(out);
        cur.finish_into(out);
        max.finish_into(out);
        Ok(())
    }
}

/// Errors a sysfs attribute gives when the driver does not support it right now.
pub(super) fn skippable(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
        || matches!(e.raw_os_error(), Some(libc::EACCES | libc::EINVAL | libc::ENOTSUP | libc::ENODEV))
}
