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
use std::sync::Mutex;

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

/// Every attribute read per device: the five text ones, then [`NUMERIC`]'s.
const ATTRS: [&str; 22] = {
    let mut all = [""; 22];
    let text = ["operstate", "address", "broadcast", "duplex", "ifalias"];
    let mut i = 0;
    while i < text.len() {
        all[i] = text[i];
        i += 1;
    }
    let mut j = 0;
    while j < NUMERIC.len() {
        all[text.len() + j] = NUMERIC[j].0;
        j += 1;
    }
    all
};
const OPERSTATE: usize = 0;
const ADDRESS: usize = 1;
const BROADCAST: usize = 2;
const DUPLEX: usize = 3;
const IFALIAS: usize = 4;
/// Index in [`ATTRS`] of `NUMERIC[i]`.
const fn numeric_index(i: usize) -> usize {
    5 + i
}
/// Index of `flags` in [`NUMERIC`].
const FLAGS: usize = 7;
const _: () = assert!(matches!(NUMERIC[FLAGS].0.as_bytes(), b"flags"));

/// The most attribute descriptors kept open between scrapes (about eleven interfaces): the
/// tailer holds a descriptor per log file, so a node with hundreds of veth interfaces must not
/// cost thousands more; beyond this, attributes are opened at each scrape as before.
const MAX_KEPT: usize = 256;

pub(super) struct NetclassCollector {
    dir: PathBuf,
    /// Attribute descriptors kept from the last scrape, by device name (sorted).
    kept: Mutex<Vec<Kept>>,
}

/// The attributes of one device kept open: a sysfs attribute gives the kernel's current text
/// at each read from offset 0 (pread), so one read(2) replaces open, read and close.
struct Kept {
    name: String,
    /// The inode of the device's entry in `class/net`: a device removed and created again, or
    /// renamed while another one took its name, has another, and its kept files are dropped.
    ino: u64,
    files: [Option<std::fs::File>; ATTRS.len()],
    /// The device's directory (O_PATH), for the attributes not kept (an empty `ifalias`).
    dir: Option<std::fs::File>,
}

impl NetclassCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { dir: paths.sys("class/net"), kept: Mutex::new(Vec::new()) }
    }

    /// Attribute descriptors kept open now.
    #[cfg(test)]
    pub fn kept_descriptors(&self) -> usize {
        self.kept.lock().unwrap().iter().map(|k| k.files.iter().flatten().count() + k.dir.iter().count()).sum()
    }
}

/// Reads the attributes of one device with one directory handle and one read buffer: each
/// attribute is opened relative to the device's directory (the kernel does not walk
/// `class/net/<device>` and its symlink into `devices/` again for every attribute), and a sysfs
/// attribute gives its whole text (at most a page) to the first read(2), so open, one read and
/// close replace `fs::read`'s path walk, stat and extra read to EOF, with no allocation.
/// On sysfs (not in a fixture tree, whose files may be replaced), an attribute that read
/// non-empty, or that the kernel refused (see [`refused`]), is kept open for the next scrape (up
/// to [`MAX_KEPT`] in all); a kept one that fails otherwise or reads empty is dropped and read
/// afresh, so any other failure is the fresh read's, as before.
struct Attributes {
    /// The device's directory, for error messages and the fallback.
    path: PathBuf,
    /// The device's directory opened with O_PATH, opened at the first attribute not kept:
    /// None before; Some(None) if that failed, then every attribute is opened by path and fails
    /// (or not) as it would alone.
    dir: Option<Option<std::fs::File>>,
    /// Whether the device's directory is on sysfs (attributes may be kept).
    sysfs: bool,
    /// The device's kept descriptors.
    files: [Option<std::fs::File>; ATTRS.len()],
    /// Descriptors kept in all, this scrape.
    kept: usize,
    buf: Box<[u8; 4096]>,
}

impl Attributes {
    fn new() -> Self {
        Self {
            path: PathBuf::new(),
            dir: None,
            sysfs: false,
            files: Default::default(),
            kept: 0,
            buf: Box::new([0; 4096]),
        }
    }

    /// Points the reader at `<class_net>/<device>`, with the descriptors kept for it.
    fn device(
        &mut self,
        class_net: &Path,
        device: &str,
        files: [Option<std::fs::File>; ATTRS.len()],
        dir: Option<std::fs::File>,
    ) {
        self.path.clear();
        self.path.push(class_net);
        self.path.push(device);
        // Kept descriptors were only ever opened on sysfs.
        self.sysfs = files.iter().any(Option::is_some) || dir.is_some();
        // (A kept directory is counted again when it is taken back.)
        self.kept += files.iter().flatten().count();
        self.dir = dir.map(Some);
        self.files = files;
    }

    /// Takes the device's descriptors to keep for the next scrape: its kept attributes, and its
    /// directory if that is on sysfs and room is left.
    fn take_files(&mut self) -> ([Option<std::fs::File>; ATTRS.len()], Option<std::fs::File>) {
        let dir = match self.dir.take() {
            Some(Some(dir)) if self.sysfs && self.kept < MAX_KEPT => {
                self.kept += 1;
                Some(dir)
            }
            _ => None,
        };
        (std::mem::take(&mut self.files), dir)
    }

    fn open(&mut self, name: &str) -> std::io::Result<std::fs::File> {
        use std::os::fd::{AsRawFd, FromRawFd};
        use std::os::unix::fs::OpenOptionsExt;
        if self.dir.is_none() {
            let dir = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                .open(&self.path)
                .ok();
            self.sysfs = dir.as_ref().is_some_and(super::generated_by_kernel);
            self.dir = Some(dir);
        }
        let Some(Some(dir)) = &self.dir else { return std::fs::File::open(self.path.join(name)) };
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

    /// The first 128 bytes of attribute `ATTRS[i]`, untrimmed; None if the kernel does not give
    /// it for this device.
    fn raw(&mut self, i: usize) -> Result<Option<&[u8]>, Error> {
        use std::io::Read;
        use std::os::unix::fs::FileExt;
        if let Some(file) = &self.files[i] {
            match file.read_at(&mut self.buf[..], 0) {
                Ok(n) if n > 0 => return Ok(Some(&self.buf[..n.min(128)])),
                // Still refused (the device is still down): asked again at the next scrape.
                Err(e) if refused(&e) => return Ok(None),
                // Gone, failing otherwise or empty: read it afresh below.
                _ => {
                    self.files[i] = None;
                    self.kept -= 1;
                }
            }
        }
        let name = ATTRS[i];
        let mut file = match self.open(name) {
            Ok(f) => f,
            Err(e) => return self.absent_or_error(name, e),
        };
        let read = file.read(&mut self.buf[..]);
        // A refused read leaves the kernel's seq_file at its first record, so a read at offset 0
        // of the same descriptor asks the attribute again (an empty one moved past its only
        // record: it would read empty for good, and is opened afresh each time).
        let keep = match &read {
            Ok(n) => *n > 0,
            Err(e) => refused(e),
        };
        if keep && self.sysfs && self.kept < MAX_KEPT {
            self.files[i] = Some(file);
            self.kept += 1;
        }
        match read {
            Ok(n) => Ok(Some(&self.buf[..n.min(128)])),
            Err(e) => self.absent_or_error(name, e),
        }
    }

    /// None for an attribute the kernel does not give for this device, else the error.
    fn absent_or_error<T>(&self, name: &str, error: std::io::Error) -> Result<Option<T>, Error> {
        match error.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => Ok(None),
            _ if refused(&error) || error.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            _ => Err(Error::Read { path: self.path.join(name), error }),
        }
    }

    /// One attribute, trimmed; None if the kernel does not give it for this device.
    fn text(&mut self, i: usize) -> Result<Option<String>, Error> {
        Ok(self.raw(i)?.map(|b| String::from_utf8_lossy(b).trim().to_string()))
    }

    /// One integer attribute; None if absent or not an integer.
    fn integer(&mut self, i: usize) -> Result<Option<i64>, Error> {
        Ok(self.raw(i)?.and_then(|b| integer(String::from_utf8_lossy(b).trim())))
    }
}

/// A read the attribute refuses in the device's present state: `carrier`, `speed`, `duplex` of
/// a device that is down (EINVAL), an attribute its driver does not implement (EOPNOTSUPP).
fn refused(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP))
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
        let mut devices: Vec<(String, u64)> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| !t.is_file()))
            .filter_map(|e| {
                use std::os::unix::fs::DirEntryExt;
                let ino = e.ino();
                e.file_name().into_string().ok().map(|name| (name, ino))
            })
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
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        // The last scrape's descriptors, by name; those of devices gone or replaced close here.
        let mut last = std::mem::take(&mut *kept).into_iter().peekable();
        let mut attrs = Attributes::new();
        for (device, ino) in &devices {
            while last.next_if(|k| k.name < *device).is_some() {}
            let (files, dir) = match last.next_if(|k| k.name == *device) {
                Some(k) if k.ino == *ino => (k.files, k.dir),
                _ => Default::default(),
            };
            attrs.device(&self.dir, device, files, dir);
            let read = device_samples(&mut attrs, device, &mut up, &mut info, &mut numeric);
            let (files, dir) = attrs.take_files();
            if files.iter().any(Option::is_some) || dir.is_some() {
                kept.push(Kept { name: device.clone(), ino: *ino, files, dir });
            }
            read?;
        }
        up.finish_into(out);
        info.finish_into(out);
        for f in numeric {
            f.finish_into(out);
        }
        Ok(())
    }
}

/// The samples of one device.
fn device_samples(
    attrs: &mut Attributes,
    device: &str,
    up: &mut Family,
    info: &mut Family,
    numeric: &mut [Family],
) -> Result<(), Error> {
    let operstate = attrs.text(OPERSTATE)?.unwrap_or_default();
    up.push(&[("device", device)], if operstate == "up" { 1.0 } else { 0.0 });
    let flags = attrs.integer(numeric_index(FLAGS))?;
    let adminstate = match flags {
        Some(f) if f & libc::IFF_UP as i64 != 0 => "up",
        Some(_) => "down",
        None => "unknown",
    };
    info.push(
        &[
            ("address", &attrs.text(ADDRESS)?.unwrap_or_default()),
            ("adminstate", adminstate),
            ("broadcast", &attrs.text(BROADCAST)?.unwrap_or_default()),
            ("device", device),
            ("duplex", &attrs.text(DUPLEX)?.unwrap_or_default()),
            ("ifalias", &attrs.text(IFALIAS)?.unwrap_or_default()),
            ("operstate", &operstate),
        ],
        1.0,
    );
    for (i, (family, (attr, _, _, _))) in numeric.iter_mut().zip(NUMERIC).enumerate() {
        // flags was read above for adminstate.
        let v = if i == FLAGS { flags } else { attrs.integer(numeric_index(i))? };
        let Some(v) = v else { continue };
        let v = if attr == "speed" { v as f64 * 125_000.0 } else { v as f64 };
        family.push(&[("device", device)], v);
    }
    Ok(())
}
