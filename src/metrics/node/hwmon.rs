//! `hwmon`: every sensor under `<sysfs>/class/hwmon/hwmonX/` (and its `device/`) as
//! `node_hwmon_<type>[_<prop>]<unit>{chip,sensor}`, with node_exporter's naming, scaling and
//! chip labels, plus `node_hwmon_chip_names` and `node_hwmon_sensor_label` (value 1).
//!
//! A sensor file is `<type><n>[_<prop>]` for a known type (temp, fan, in, curr, power, ...);
//! `_input` is the reading itself, so `temp1_input` is `node_hwmon_temp_celsius{sensor="temp1"}`
//! and `temp1_max` is `node_hwmon_temp_max_celsius`. The `chip` label is the stable device path
//! (`platform_coretemp_0`: parent directory and device name of the resolved `device` link),
//! falling back to the `name` file and then to `hwmonX`, which renumbers across boots.
//!
//! Rules that look odd but are upstream's: only a prop of exactly `alarm`/`fault` is unitless,
//! so `temp1_crit_alarm` is `node_hwmon_temp_crit_alarm_celsius` (÷1000); energy is the one
//! counter; `freqN_input` is exported only with a `freqN_label`. No class/hwmon at all (VMs)
//! is "no data", as upstream. A chip directory that cannot be listed is skipped with the
//! others still reported (upstream reports them too but then fails the scrape).

use super::{Collect, Error, Family, Paths, Scrape};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

const SENSOR_TYPES: [&str; 14] = [
    "vrm",
    "beep_enable",
    "update_interval",
    "in",
    "cpu",
    "fan",
    "pwm",
    "temp",
    "curr",
    "power",
    "energy",
    "humidity",
    "intrusion",
    "freq",
];

pub(super) struct HwmonCollector {
    dir: PathBuf,
}

impl HwmonCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { dir: paths.sys("class/hwmon") }
    }
}

/// Lowercase, `[^a-z0-9:_]` → `_`, `_` trimmed at both ends.
fn clean(s: &str) -> String {
    let lower = s.to_lowercase();
    let replaced: String = lower
        .chars()
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == ':' || c == '_' { c } else { '_' })
        .collect();
    replaced.trim_matches('_').to_string()
}

/// `temp1_crit_alarm` → ("temp", 1, "crit_alarm"); `beep_enable` → ("beep_enable", 0, "").
fn explode(file: &str) -> Option<(&str, u64, &str)> {
    let digits_at = file.find(|c: char| c.is_ascii_digit()).unwrap_or(file.len());
    let (kind, rest) = file.split_at(digits_at);
    if kind.is_empty() {
        return None;
    }
    let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let (num, rest) = rest.split_at(digits_end);
    let num = if num.is_empty() { 0 } else { num.parse().ok()? };
    let prop = match rest {
        "" => "",
        r => r.strip_prefix('_').filter(|p| !p.is_empty())?,
    };
    Some((kind, num, prop))
}

/// A sysfs attribute, at most 128 bytes, trailing newline removed.
fn read_small(path: &Path) -> Option<String> {
    let mut buf = [0u8; 128];
    let n = std::fs::File::open(path).ok()?.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).trim_end_matches('\n').to_string())
}

/// sensor (`temp1`) → prop (`input`, `max`, `label`, ``) → raw value.
type Sensors = BTreeMap<String, BTreeMap<String, String>>;

fn collect_sensor_files(dir: &Path, sensors: &mut Sensors) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((kind, num, prop)) = explode(name) else { continue };
        if !SENSOR_TYPES.contains(&kind) || entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Some(v) = read_small(&entry.path()) {
            sensors.entry(format!("{kind}{num}")).or_default().insert(prop.to_string(), v);
        }
    }
    Ok(())
}

/// The chip label of `hwmon_dir`: see the module doc.
fn chip_name(hwmon_dir: &Path, entry_name: &str) -> String {
    if let Ok(device) = std::fs::canonicalize(hwmon_dir.join("device")) {
        let dev = device.file_name().map(|n| clean(&n.to_string_lossy())).unwrap_or_default();
        let parent =
            device.parent().and_then(|p| p.file_name()).map(|n| clean(&n.to_string_lossy())).unwrap_or_default();
        match (parent.is_empty(), dev.is_empty()) {
            (false, false) => return format!("{parent}_{dev}"),
            (true, false) => return dev,
            _ => {}
        }
    }
    if let Some(name) = read_small(&hwmon_dir.join("name")).map(|n| clean(&n)).filter(|n| !n.is_empty()) {
        return name;
    }
    clean(entry_name)
}

/// Metric families by name, so chips and sensors add to one family each.
#[derive(Default)]
struct Families(BTreeMap<String, Family>);

impl Families {
    fn push(&mut self, name: &str, help: &str, counter: bool, labels: &[(&str, &str)], v: f64) {
        self.0
            .entry(name.to_string())
            .or_insert_with(|| {
                if counter {
                    Family::counter(name.to_string(), help.to_string())
                } else {
                    Family::gauge(name.to_string(), help.to_string())
                }
            })
            .push(labels, v);
    }
}

impl Collect for HwmonCollector {
    fn name(&self) -> &'static str {
        "hwmon"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoData(format!("{} does not exist", self.dir.display())));
            }
            Err(error) => return Err(Error::Read { path: self.dir.clone(), error }),
        };
        let mut dirs: Vec<(String, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir()) // follows the class/hwmon symlinks
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        dirs.sort();
        let mut fams = Families::default();
        let mut chips_seen: Vec<String> = Vec::new();
        for (entry_name, dir) in dirs {
            let mut sensors = Sensors::new();
            if let Err(error) = collect_sensor_files(&dir, &mut sensors) {
                tracing::debug!(path = %dir.display(), %error, "hwmon chip skipped");
                continue;
            }
            if dir.join("device").is_dir() {
                let _ = collect_sensor_files(&dir.join("device"), &mut sensors);
            }
            let raw_name = read_small(&dir.join("name")).map(|n| clean(&n)).filter(|n| !n.is_empty());
            let mut chip = chip_name(&dir, &entry_name);
            if chips_seen.contains(&chip) {
                chip = format!("{chip}_{}", raw_name.clone().unwrap_or_else(|| clean(&entry_name)));
            }
            chips_seen.push(chip.clone());
            if let Some(name) = &raw_name {
                fams.push(
                    "node_hwmon_chip_names",
                    "Annotation metric for human-readable chip names",
                    false,
                    &[("chip", &chip), ("chip_name", name)],
                    1.0,
                );
            }
            for (sensor, props) in &sensors {
                emit_sensor(&mut fams, &chip, sensor, props);
            }
        }
        for (_, f) in fams.0 {
            f.finish_into(out);
        }
        Ok(())
    }
}

fn emit_sensor(fams: &mut Families, chip: &str, sensor: &str, props: &BTreeMap<String, String>) {
    let kind = explode(sensor).map(|(k, ..)| k).unwrap_or(sensor);
    let labels = [("chip", chip), ("sensor", sensor)];
    if let Some(label) = props.get("label") {
        fams.push(
            "node_hwmon_sensor_label",
            "Label for given chip and sensor",
            false,
            &[("chip", chip), ("label", label), ("sensor", sensor)],
            1.0,
        );
    }
    let raw = props.get("").and_then(|v| v.parse::<f64>().ok());
    match kind {
        "beep_enable" => {
            let on = if props.get("").map(String::as_str) == Some("1") { 1.0 } else { 0.0 };
            fams.push("node_hwmon_beep_enabled", "Hardware beep enabled", false, &labels, on);
            return;
        }
        "vrm" => {
            if let Some(v) = raw {
                fams.push("node_hwmon_voltage_regulator_version", "Hardware voltage regulator", false, &labels, v);
            }
            return;
        }
        "update_interval" => {
            if let Some(v) = raw {
                fams.push(
                    "node_hwmon_update_interval_seconds",
                    "Hardware monitor update interval",
                    false,
                    &labels,
                    v * 0.001,
                );
            }
            return;
        }
        "freq" => {
            // Exported only when labelled, with the cleaned label as the sensor (upstream).
            if let (Some(label), Some(v)) = (props.get("label"), props.get("input").and_then(|v| v.parse::<f64>().ok()))
            {
                let sensor = clean(label);
                fams.push(
                    "node_hwmon_freq_freq_mhz",
                    "Hardware monitor for GPU frequency in MHz",
                    false,
                    &[("chip", chip), ("sensor", &sensor)],
                    v / 1e6,
                );
            }
            return;
        }
        _ => {}
    }
    let prefix = format!("node_hwmon_{kind}");
    for (element, value) in props {
        if element == "label" {
            continue;
        }
        let Ok(v) = value.parse::<f64>() else { continue };
        let name = match element.as_str() {
            "" => prefix.clone(),
            "input" if props.contains_key("") => format!("{prefix}_input"),
            "input" => prefix.clone(),
            e => format!("{prefix}_{}", clean(e)),
        };
        let e = element.as_str();
        let (name, help, value, counter) = match (kind, e) {
            (_, "fault" | "alarm") => (name, format!("Hardware sensor {e} status ({kind})"), v, false),
            (_, "beep") => (format!("{name}_enabled"), "Hardware monitor sensor has beeping enabled".into(), v, false),
            ("in" | "cpu", _) => {
                (format!("{name}_volts"), format!("Hardware monitor for voltage ({e})"), v * 0.001, false)
            }
            ("temp", _) if e != "type" => {
                (format!("{name}_celsius"), format!("Hardware monitor for temperature ({e})"), v * 0.001, false)
            }
            ("curr", _) => (format!("{name}_amps"), format!("Hardware monitor for current ({e})"), v * 0.001, false),
            ("energy", _) => {
                (format!("{name}_joule_total"), format!("Hardware monitor for joules used so far ({e})"), v / 1e6, true)
            }
            ("power", "accuracy") => (name, "Hardware monitor power meter accuracy, as a ratio".into(), v / 1e6, false),
            ("power", "average_interval" | "average_interval_min" | "average_interval_max") => (
                format!("{name}_seconds"),
                format!("Hardware monitor power usage update interval ({e})"),
                v * 0.001,
                false,
            ),
            ("power", _) => {
                (format!("{name}_watt"), format!("Hardware monitor for power usage in watts ({e})"), v / 1e6, false)
            }
            ("humidity", _) => (
                name,
                format!(
                    "Hardware monitor for humidity, as a ratio (multiply with 100.0 to get the humidity as a percentage) ({e})"
                ),
                v / 1e6,
                false,
            ),
            ("fan", "input" | "min" | "max" | "target") => {
                (format!("{name}_rpm"), format!("Hardware monitor for fan revolutions per minute ({e})"), v, false)
            }
            _ => (name, format!("Hardware monitor {kind} element {e}"), v, false),
        };
        fams.push(&name, &help, counter, &labels, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensor_file_names_split_as_upstream() {
        assert_eq!(explode("temp1_input"), Some(("temp", 1, "input")));
        assert_eq!(explode("temp1_crit_alarm"), Some(("temp", 1, "crit_alarm")));
        assert_eq!(explode("beep_enable"), Some(("beep_enable", 0, "")));
        assert_eq!(explode("in0"), Some(("in", 0, "")));
        assert_eq!(explode("pwm2_enable"), Some(("pwm", 2, "enable")));
        assert_eq!(explode("temp1x"), None);
        assert_eq!(explode("12"), None);
        assert_eq!(clean("Core 0"), "core_0");
        assert_eq!(clean("-coretemp.0-"), "coretemp_0");
    }
}
