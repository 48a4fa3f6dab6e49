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
use std::path::{Path, PathBuf};

/// (sysfs attribute, metric name, HELP, counter?), in node_exporter's order; the HELP is
/// "Network device property: <metric suffix>".
const NUMERIC: [(&str, &str, &str, bool); 17] = [
    ("addr_assign_type", "node_network_address_assign_type", "Network device property: address_assign_type", false),
    ("carrier", "node_network_carrier", "Network device property: carrier", false),
    ("carrier_changes", "node_network_carrier_changes_total", "Network device property: carrier_changes_total", true),
    (
        "carrier_up_count",
        "node_network_carrier_up_changes_total",
        "Network device property: carrier_up_changes_total",
        true,
    ),
    (
        "carrier_down_count",
        "node_network_carrier_down_changes_total",
        "Network device property: carrier_down_changes_total",
        true,
    ),
    ("dev_id", "node_network_device_id", "Network device property: device_id", false),
    ("dormant", "node_network_dormant", "Network device property: dormant", false),
    ("flags", "node_network_flags", "Network device property: flags", false),
    ("ifindex", "node_network_iface_id", "Network device property: iface_id", false),
    ("iflink", "node_network_iface_link", "Network device property: iface_link", false),
    ("link_mode", "node_network_iface_link_mode", "Network device property: iface_link_mode", false),
    ("mtu", "node_network_mtu_bytes", "Network device property: mtu_bytes", false),
    ("name_assign_type", "node_network_name_assign_type", "Network device property: name_assign_type", false),
    ("netdev_group", "node_network_net_dev_group", "Network device property: net_dev_group", false),
    ("speed", "node_network_speed_bytes", "Network device property: speed_bytes", false),
    ("tx_queue_len", "node_network_transmit_queue_length", "Network device property: transmit_queue_length", false),
    ("type", "node_network_protocol_type", "Network device property: protocol_type", false),
];

pub(super) struct NetclassCollector {
    dir: PathBuf,
}

impl NetclassCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { dir: paths.sys("class/net") }
    }
}

/// Reads the attributes of one device with one directory handle and one read buffer: each
/// attribute is opened relative to the device's directory (the kernel does not walk
/// `class/net/<device>` and its symlink into `devices/` again for every attribute), and a sysfs
/// attribute gives its whole text (at most a page) to the first read(2), so open, one read and
/// close replace `fs::read`'s path walk, stat and extra read to EOF, with no allocation.
struct Attributes {
    /// The device's directory, for error messages and the fallback.
    path: PathBuf,
    /// The device's directory opened with O_PATH; None if that failed, then every attribute is
    /// opened by path and fails (or not) as it would alone.
    dir: Option<std::fs::File>,
    buf: Box<[u8; 4096]>,
}

impl Attributes {
    fn new() -> Self {
        Self { path: PathBuf::new(), dir: None, buf: Box::new([0; 4096]) }
    }

    /// Points the reader at `<class_net>/<device>`.
    fn device(&mut self, class_net: &Path, device: &str) {
        use std::os::unix::fs::OpenOptionsExt;
        self.path.clear();
        self.path.push(class_net);
        self.path.push(device);
        self.dir =
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_DIRECTORY).open(&self.path).ok();
    }

    fn open(&self, name: &str) -> std::io::Result<std::fs::File> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let Some(dir) = &self.dir else { return std::fs::File::open(self.path.join(name)) };
        let c = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
        // SAFETY: `c` is NUL-terminated and `dir` an open descriptor; openat returns -1 or a new
        // descriptor that nothing else owns.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor owned by nothing else.
        Ok(unsafe { std::fs::File::from_raw_fd(fd) })
    }

    /// The first 128 bytes of attribute `name`, untrimmed; None if the kernel does not give it
    /// for this device.
    fn raw(&mut self, name: &str) -> Result<Option<&[u8]>, Error> {
        use std::io::Read;
        let read = self.open(name).and_then(|mut f| f.read(&mut self.buf[..]));
        match read {
            Ok(n) => Ok(Some(&self.buf[..n.min(128)])),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.kind() == std::io::ErrorKind::PermissionDenied
                    || matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENODEV)) =>
            {
                Ok(None)
            }
            Err(error) => Err(Error::Read { path: self.path.join(name), error }),
        }
    }

    /// One attribute, trimmed; None if the kernel does not give it for this device.
    fn text(&mut self, name: &str) -> Result<Option<String>, Error> {
        Ok(self.raw(name)?.map(|b| String::from_utf8_lossy(b).trim().to_string()))
    }

    /// One integer attribute; None if absent or not an integer.
    fn integer(&mut self, name: &str) -> Result<Option<i64>, Error> {
        Ok(self.raw(name)?.and_then(|b| integer(String::from_utf8_lossy(b).trim())))
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

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
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
            .map(
                |&(_, name, help, counter)| {
                    if counter { Family::counter(name, help) } else { Family::gauge(name, help) }
                },
            )
            .collect();
        let mut attrs = Attributes::new();
        for device in &devices {
            attrs.device(&self.dir, device);
            let operstate = attrs.text("operstate")?.unwrap_or_default();
            up.push(&[("device", device)], if operstate == "up" { 1.0 } else { 0.0 });
            let flags = attrs.integer("flags")?;
            let adminstate = match flags {
                Some(f) if f & libc::IFF_UP as i64 != 0 => "up",
                Some(_) => "down",
                None => "unknown",
            };
            info.push(
                &[
                    ("address", &attrs.text("address")?.unwrap_or_default()),
                    ("adminstate", adminstate),
                    ("broadcast", &attrs.text("broadcast")?.unwrap_or_default()),
                    ("device", device),
                    ("duplex", &attrs.text("duplex")?.unwrap_or_default()),
                    ("ifalias", &attrs.text("ifalias")?.unwrap_or_default()),
                    ("operstate", &operstate),
                ],
                1.0,
            );
            for (family, (attr, _, _, _)) in numeric.iter_mut().zip(NUMERIC) {
                // flags was read above for adminstate.
                let v = if attr == "flags" { flags } else { attrs.integer(attr)? };
                let Some(v) = v else { continue };
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
