//! `powersupplyclass`: `node_power_supply_*{power_supply}` from the attribute files of
//! `<sysfs>/class/power_supply/<name>/`, and `node_power_supply_info` carrying the text
//! attributes as labels, as node_exporter's powersupplyclass collector: micro-units (µA, µV,
//! µWh, µAh, µW) ÷ 1e6 to base units, tenths of °C ÷ 10, the rest raw. Only the attributes
//! upstream knows are read. An attribute the driver refuses (ENOENT, ENOTSUP, ENODEV, and
//! EACCES/EINVAL as for other sysfs readers) is omitted; no `class/power_supply` at all is
//! "no data", as upstream.

use super::{Collect, Error, Family, Paths, Scrape, thermal_zone::skippable};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// (sysfs file, metric suffix, divisor).
const VALUES: [(&str, &str, f64); 49] = [
    ("authentic", "authentic", 1.0),
    ("calibrate", "calibrate", 1.0),
    ("capacity", "capacity", 1.0),
    ("capacity_alert_max", "capacity_alert_max", 1.0),
    ("capacity_alert_min", "capacity_alert_min", 1.0),
    ("cycle_count", "cyclecount", 1.0),
    ("online", "online", 1.0),
    ("present", "present", 1.0),
    ("time_to_empty_now", "time_to_empty_seconds", 1.0),
    ("time_to_full_now", "time_to_full_seconds", 1.0),
    ("current_boot", "current_boot", 1e6),
    ("current_max", "current_max", 1e6),
    ("current_now", "current_ampere", 1e6),
    ("energy_empty", "energy_empty", 1e6),
    ("energy_empty_design", "energy_empty_design", 1e6),
    ("energy_full", "energy_full", 1e6),
    ("energy_full_design", "energy_full_design", 1e6),
    ("energy_now", "energy_watthour", 1e6),
    ("voltage_boot", "voltage_boot", 1e6),
    ("voltage_max", "voltage_max", 1e6),
    ("voltage_max_design", "voltage_max_design", 1e6),
    ("voltage_min", "voltage_min", 1e6),
    ("voltage_min_design", "voltage_min_design", 1e6),
    ("voltage_now", "voltage_volt", 1e6),
    ("voltage_ocv", "voltage_ocv", 1e6),
    ("charge_control_limit", "charge_control_limit", 1e6),
    ("charge_control_limit_max", "charge_control_limit_max", 1e6),
    ("charge_counter", "charge_counter", 1e6),
    ("charge_empty", "charge_empty", 1e6),
    ("charge_empty_design", "charge_empty_design", 1e6),
    ("charge_full", "charge_full", 1e6),
    ("charge_full_design", "charge_full_design", 1e6),
    ("charge_now", "charge_ampere", 1e6),
    ("charge_term_current", "charge_term_current", 1e6),
    ("constant_charge_current", "constant_charge_current", 1e6),
    ("constant_charge_current_max", "constant_charge_current_max", 1e6),
    ("constant_charge_voltage", "constant_charge_voltage", 1e6),
    ("constant_charge_voltage_max", "constant_charge_voltage_max", 1e6),
    ("precharge_current", "precharge_current", 1e6),
    ("input_current_limit", "input_current_limit", 1e6),
    ("power_now", "power_watt", 1e6),
    ("temp", "temp_celsius", 10.0),
    ("temp_alert_max", "temp_alert_max_celsius", 10.0),
    ("temp_alert_min", "temp_alert_min_celsius", 10.0),
    ("temp_ambient", "temp_ambient_celsius", 10.0),
    ("temp_ambient_max", "temp_ambient_max_celsius", 10.0),
    ("temp_ambient_min", "temp_ambient_min_celsius", 10.0),
    ("temp_max", "temp_max_celsius", 10.0),
    ("temp_min", "temp_min_celsius", 10.0),
];

/// Text attributes that become labels of `node_power_supply_info`, in label (sorted) order;
/// `power_supply` (the directory name) sorts between `model_name` and `scope`.
const INFO: [&str; 11] = [
    "capacity_level",
    "charge_type",
    "health",
    "manufacturer",
    "model_name",
    "scope",
    "serial_number",
    "status",
    "technology",
    "type",
    "usb_type",
];

pub(super) struct PowerSupplyClassCollector {
    dir: PathBuf,
}

impl PowerSupplyClassCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { dir: paths.sys("class/power_supply") }
    }
}

fn read_attr(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).trim().to_string())),
        Err(e) if skippable(&e) => Ok(None),
        Err(error) => Err(Error::Read { path: path.to_path_buf(), error }),
    }
}

impl Collect for PowerSupplyClassCollector {
    fn name(&self) -> &'static str {
        "powersupplyclass"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoData(format!("{} does not exist", self.dir.display())));
            }
            Err(error) => return Err(Error::Read { path: self.dir.clone(), error }),
        };
        let mut supplies: Vec<(String, PathBuf)> =
            entries.filter_map(|e| e.ok()).map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())).collect();
        supplies.sort();
        let mut fams: BTreeMap<&str, Family> = BTreeMap::new();
        let mut info = Family::gauge("node_power_supply_info", "info of /sys/class/power_supply/<power_supply>.");
        for (name, dir) in &supplies {
            for (file, suffix, divisor) in VALUES {
                let Some(text) = read_attr(&dir.join(file))? else { continue };
                let Ok(v) = text.parse::<i64>() else { continue };
                fams.entry(suffix)
                    .or_insert_with(|| {
                        Family::gauge(
                            format!("node_power_supply_{suffix}"),
                            format!("{suffix} value of /sys/class/power_supply/<power_supply>."),
                        )
                    })
                    .push(&[("power_supply", name)], v as f64 / divisor);
            }
            let mut labels: Vec<(&str, String)> = vec![("power_supply", name.clone())];
            for attr in INFO {
                if let Some(v) = read_attr(&dir.join(attr))?.filter(|v| !v.is_empty()) {
                    labels.push((attr, v));
                }
            }
            labels.sort_by_key(|(k, _)| *k);
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            info.push(&labels, 1.0);
        }
        for (_, f) in fams {
            f.finish_into(out);
        }
        info.finish_into(out);
        Ok(())
    }
}
