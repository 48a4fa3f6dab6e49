//! `time`: the node's clock (`node_time_seconds`), its time zone offset, and the kernel's
//! clock sources from sysfs, as node_exporter's time collector.

use super::{Buf, Collect, Error, Family, Paths, Scrape};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

pub(super) struct TimeCollector {
    clocksource_dir: PathBuf,
    /// Each clocksourceN, listed once: the set is fixed at boot (which source is current is
    /// not, and is read every scrape).
    devices: std::sync::OnceLock<Vec<Clocksource>>,
}

struct Clocksource {
    /// N of clocksourceN.
    number: String,
    available_path: PathBuf,
    current_path: PathBuf,
    /// Read buffers that keep each file open between scrapes.
    available: Buf,
    current: Buf,
}

impl TimeCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { clocksource_dir: paths.sys("devices/system/clocksource"), devices: Default::default() }
    }

    fn devices(&self) -> &[Clocksource] {
        self.devices.get_or_init(|| {
            let Ok(dir) = std::fs::read_dir(&self.clocksource_dir) else { return Vec::new() };
            let mut devices: Vec<(String, PathBuf)> = dir
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let n = name.strip_prefix("clocksource")?;
                    n.parse::<u32>().ok()?;
                    Some((n.to_string(), e.path()))
                })
                .collect();
            devices.sort();
            devices
                .into_iter()
                .map(|(number, path)| Clocksource {
                    number,
                    available_path: path.join("available_clocksource"),
                    current_path: path.join("current_clocksource"),
                    available: Buf::new(),
                    current: Buf::new(),
                })
                .collect()
        })
    }
}

/// The local time zone's abbreviation and offset east of UTC in seconds.
fn zone(now_secs: i64) -> (String, i64) {
    let t = now_secs as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which lives on this stack frame; tm_zone then
    // points to static storage owned by libc (or is null, handled below).
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return ("UTC".into(), 0);
        }
        let name = if tm.tm_zone.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(tm.tm_zone).to_string_lossy().into_owned()
        };
        (name, tm.tm_gmtoff)
    }
}

impl Collect for TimeCollector {
    fn name(&self) -> &'static str {
        "time"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| Error::Other(format!("clock before 1970: {e}")))?;
        let mut f = Family::gauge("node_time_seconds", "System time in seconds since epoch (1970).");
        f.push(&[], now.as_secs_f64());
        out.push(f.finish());

        let (name, offset) = zone(now.as_secs() as i64);
        let mut f = Family::gauge("node_time_zone_offset_seconds", "System time zone offset in seconds.");
        f.push(&[("time_zone", &name)], offset as f64);
        out.push(f.finish());

        // Clock sources are informational: a sysfs without them (a container without /sys)
        // is not a failure of the collector.
        let mut available = Family::gauge(
            "node_time_clocksource_available_info",
            "Available clocksources read from '/sys/devices/system/clocksource'.",
        );
        let mut current = Family::gauge(
            "node_time_clocksource_current_info",
            "Current clocksource read from '/sys/devices/system/clocksource'.",
        );
        for d in self.devices() {
            let device = d.number.as_str();
            if let Ok(list) = d.available.read_raw(&d.available_path) {
                for cs in list.split_ascii_whitespace() {
                    available.push(&[("clocksource", cs), ("device", device)], 1.0);
                }
            }
            if let Ok(cs) = d.current.read_raw(&d.current_path) {
                let cs = cs.trim();
                if !cs.is_empty() {
                    current.push(&[("clocksource", cs), ("device", device)], 1.0);
                }
            }
        }
        available.finish_into(out);
        current.finish_into(out);
        Ok(())
    }
}
