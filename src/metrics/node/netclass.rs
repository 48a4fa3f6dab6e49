//! `netclass`: link attributes of every interface in `<sysfs>/class/net` under node_exporter's
//! names: `node_network_up` (operstate is `up`), `node_network_info` (address, adminstate,
//! broadcast, duplex, ifalias, operstate), one gauge per numeric attribute and the carrier
//! change counters. An attribute the kernel does not expose, or refuses for this device
//! (speed and duplex of a link that is down: EINVAL; EOPNOTSUPP; EACCES), is left out, as
//! node_exporter does; any other read error fails the collector.
//!
//! The node's sysfs lists the node's interfaces whatever network namespace vigil is in. As
//! node_exporter's default (non-netlink) mode, every interface is reported (`lo` included) and
//! a negative speed is exported as is (-1 Mb/s → -125000).

use super::{Collect, Error, Family, Paths, Scrape};
use prometheus::proto::MetricFamily;
use std::path::{Path, PathBuf};

/// (sysfs attribute, metric suffix, counter?), in node_exporter's order.
const NUMERIC: [(&str, &str, bool); 17] = [
    ("addr_assign_type", "address_assign_type", false),
    ("carrier", "carrier", false),
    ("carrier_changes", "carrier_changes_total", true),
    ("carrier_up_count", "carrier_up_changes_total", true),
    ("carrier_down_count", "carrier_down_changes_total", true),
    ("dev_id", "device_id", false),
    ("dormant", "dormant", false),
    ("flags", "flags", false),
    ("ifindex", "iface_id", false),
    ("iflink", "iface_link", false),
    ("link_mode", "iface_link_mode", false),
    ("mtu", "mtu_bytes", false),
    ("name_assign_type", "name_assign_type", false),
    ("netdev_group", "net_dev_group", false),
    ("speed", "speed_bytes", false),
    ("tx_queue_len", "transmit_queue_length", false),
    ("type", "protocol_type", false),
];

pub(super) struct NetclassCollector {
    dir: PathBuf,
}

impl NetclassCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { dir: paths.sys("class/net") }
    }
}

/// One attribute, trimmed; None if the kernel does not give it for this device.
fn attribute(dir: &Path, name: &str) -> Result<Option<String>, Error> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes[..bytes.len().min(128)]).trim().to_string())),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.kind() == std::io::ErrorKind::PermissionDenied
                || matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENODEV)) =>
        {
            Ok(None)
        }
        Err(error) => Err(Error::Read { path, error }),
    }
}

/// An integer as sysfs writes it: decimal, or hex with 0x (`flags`).
fn integer(s: &str) -> Option<i64> {
    match s.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl Collect for NetclassCollector {
    fn name(&self) -> &'static str {
        "netclass"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<MetricFamily>) -> Result<(), Error> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::NoData(format!("netclass: cannot list {}: {e}", self.dir.display())))?;
        // Interfaces are the entries that are not regular files (symlinks into
        // devices/; bonding_masters is a file).
        let mut devices: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| !t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        devices.sort();

        let mut up = Family::gauge("node_network_up", "Value is 1 if operstate is 'up', 0 otherwise.");
        let mut info =
            Family::gauge("node_network_info", "Non-numeric data from /sys/class/net/<iface>, value is always 1.");
        let mut numeric: Vec<Family> = NUMERIC
            .iter()
            .map(|(_, name, counter)| {
                let (full, help) = (format!("node_network_{name}"), format!("Network device property: {name}"));
                if *counter { Family::counter(&full, &help) } else { Family::gauge(&full, &help) }
            })
            .collect();
        for device in &devices {
            let dir = self.dir.join(device);
            let text = |name: &str| attribute(&dir, name).map(Option::unwrap_or_default);
            let operstate = text("operstate")?;
            up.push(&[("device", device)], if operstate == "up" { 1.0 } else { 0.0 });
            let flags = attribute(&dir, "flags")?.and_then(|f| integer(&f));
            let adminstate = match flags {
                Some(f) if f & libc::IFF_UP as i64 != 0 => "up",
                Some(_) => "down",
                None => "unknown",
            };
            info.push(
                &[
                    ("address", &text("address")?),
                    ("adminstate", adminstate),
                    ("broadcast", &text("broadcast")?),
                    ("device", device),
                    ("duplex", &text("duplex")?),
                    ("ifalias", &text("ifalias")?),
                    ("operstate", &operstate),
                ],
                1.0,
            );
            for (family, (attr, _, _)) in numeric.iter_mut().zip(NUMERIC) {
                let Some(v) = attribute(&dir, attr)?.and_then(|s| integer(&s)) else { continue };
                let v = if attr == "speed" { v as f64 * 125_000.0 } else { v as f64 };
                family.push(&[("device", device)], v);
            }
        }
        up.finish_into(out);
        info.finish_into(out);
        for f in numeric {
            f.finish_into(out);
        }
        Ok(())
    }
}
