//! `diskstats`: `node_disk_*` from /proc/diskstats, as node_exporter: byte counters are sectors
//! × 512 (the kernel's unit whatever the device's sector size), times are ms / 1000, and the
//! discard and flush series appear only when the kernel line has those columns (4.18+, 5.5+).
//! `node_disk_info` carries the device numbers and, when udev's database is readable under
//! `<rootfs>/run/udev/data`, its model, path, revision, serial and WWN.

use super::config::DiskstatsConfig;
use super::{Buf, Collect, Error, Family, Paths, Scrape, regex};
use regex::Regex;
use std::path::PathBuf;

const SECTOR: f64 = 512.0;
const MS: f64 = 0.001;

/// (column after major/minor/name, metric, help, scale, counter).
const COLUMNS: [(usize, &str, &str, f64, bool); 17] = [
    (0, "node_disk_reads_completed_total", "The total number of reads completed successfully.", 1.0, true),
    (1, "node_disk_reads_merged_total", "The total number of reads merged.", 1.0, true),
    (2, "node_disk_read_bytes_total", "The total number of bytes read successfully.", SECTOR, true),
    (3, "node_disk_read_time_seconds_total", "The total number of seconds spent by all reads.", MS, true),
    (4, "node_disk_writes_completed_total", "The total number of writes completed successfully.", 1.0, true),
    (5, "node_disk_writes_merged_total", "The number of writes merged.", 1.0, true),
    (6, "node_disk_written_bytes_total", "The total number of bytes written successfully.", SECTOR, true),
    (7, "node_disk_write_time_seconds_total", "This is the total number of seconds spent by all writes.", MS, true),
    (8, "node_disk_io_now", "The number of I/Os currently in progress.", 1.0, false),
    (9, "node_disk_io_time_seconds_total", "Total seconds spent doing I/Os.", MS, true),
    (10, "node_disk_io_time_weighted_seconds_total", "The weighted # of seconds spent doing I/Os.", MS, true),
    (11, "node_disk_discards_completed_total", "The total number of discards completed successfully.", 1.0, true),
    (12, "node_disk_discards_merged_total", "The total number of discards merged.", 1.0, true),
    (13, "node_disk_discarded_sectors_total", "The total number of sectors discarded successfully.", 1.0, true),
    (
        14,
        "node_disk_discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
        MS,
        true,
    ),
    (15, "node_disk_flush_requests_total", "The total number of flush requests completed successfully", 1.0, true),
    (
        16,
        "node_disk_flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
        MS,
        true,
    ),
];

pub(super) struct DiskstatsCollector {
    path: PathBuf,
    buf: Buf,
    udev: PathBuf,
    exclude: Option<Regex>,
}

impl DiskstatsCollector {
    pub fn new(paths: &Paths, config: &DiskstatsConfig) -> Result<Self, Error> {
        Ok(Self {
            path: paths.proc("diskstats"),
            buf: Buf::new(),
            udev: paths.root("run/udev/data"),
            exclude: regex("diskstats.device_exclude", &config.device_exclude)?,
        })
    }

    /// udev's model, path, revision, serial, wwn for a block device, empty when unknown. The
    /// serial is node_exporter's choice: SCSI_IDENT_SERIAL (the one printed on the disk), else
    /// ID_SERIAL_SHORT, else ID_SERIAL (what virtio disks have).
    fn udev_labels(&self, major: &str, minor: &str) -> [String; 5] {
        let mut labels: [String; 5] = Default::default();
        let Ok(text) = std::fs::read_to_string(self.udev.join(format!("b{major}:{minor}"))) else {
            return labels;
        };
        let mut serials: [Option<&str>; 3] = [None; 3];
        for line in text.lines() {
            let Some((k, v)) = line.strip_prefix("E:").and_then(|kv| kv.split_once('=')) else { continue };
            let slot = match k {
                "ID_MODEL" => 0,
                "ID_PATH" => 1,
                "ID_REVISION" => 2,
                "ID_WWN" => 4,
                "SCSI_IDENT_SERIAL" | "ID_SERIAL_SHORT" | "ID_SERIAL" => {
                    let rank = ["SCSI_IDENT_SERIAL", "ID_SERIAL_SHORT", "ID_SERIAL"].iter().position(|s| *s == k);
                    serials[rank.expect("matched above")] = Some(v).filter(|v| !v.is_empty());
                    continue;
                }
                _ => continue,
            };
            labels[slot] = v.to_string();
        }
        labels[3] = serials.iter().flatten().next().map(|s| s.to_string()).unwrap_or_default();
        labels
    }
}

impl Collect for DiskstatsCollector {
    fn name(&self) -> &'static str {
        "diskstats"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let text = self.buf.read(&self.path)?;
        let mut families: Vec<Family> = COLUMNS
            .iter()
            .map(
                |(_, name, help, _, counter)| {
                    if *counter { Family::counter(*name, *help) } else { Family::gauge(*name, *help) }
                },
            )
            .collect();
        let mut info = Family::gauge("node_disk_info", "Info of /sys/block/<block_device>.");
        let mut values = [0u64; COLUMNS.len()];
        // One stat instead of a failed open per disk on a node without udev.
        let have_udev = self.udev.is_dir();
        for line in text.lines() {
            let mut it = line.split_ascii_whitespace();
            let (Some(major), Some(minor), Some(device)) = (it.next(), it.next(), it.next()) else { continue };
            if self.exclude.as_ref().is_some_and(|re| re.is_match(device)) {
                continue;
            }
            let mut n = 0;
            for (slot, field) in values.iter_mut().zip(it) {
                // A line that does not parse is skipped rather than failing every disk.
                let Ok(v) = field.parse() else { break };
                *slot = v;
                n += 1;
            }
            if n < 11 {
                tracing::debug!(line, "diskstats: short line skipped");
                continue;
            }
            for ((_, _, _, scale, _), (family, v)) in COLUMNS.iter().zip(families.iter_mut().zip(&values)).take(n) {
                family.push(&[("device", device)], *v as f64 * scale);
            }
            let [model, path, revision, serial, wwn] =
                if have_udev { self.udev_labels(major, minor) } else { Default::default() };
            info.push(
                &[
                    ("device", device),
                    ("major", major),
                    ("minor", minor),
                    ("model", &model),
                    ("path", &path),
                    ("revision", &revision),
                    ("serial", &serial),
                    ("wwn", &wwn),
                ],
                1.0,
            );
        }
        for f in families {
            f.finish_into(out);
        }
        info.finish_into(out);
        Ok(())
    }
}
