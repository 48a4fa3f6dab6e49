//! `mdadm`: Linux software RAID from `<procfs>/mdstat` (`node_md_state`, `node_md_disks`,
//! `node_md_disks_required`, `node_md_blocks`, `node_md_blocks_synced`) and
//! `<sysfs>/block/md*/md` (`node_md_raid_disks`, `node_md_degraded`), as node_exporter's
//! current release. A node without md (no /proc/mdstat) is no data, as there.
//!
//! mdstat is parsed as procfs does: a device line `mdN : <state> [(read-only)] <level> <disks>`,
//! a status line `<blocks> blocks ... [total/active] [UU_]`, then an optional bitmap line and
//! an optional sync line (`recovery`, `resync`, `check`, `reshape`, with `(done/total)`).

use super::{Collect, Error, Family, Paths, Scrape, parse_err, read_file};
use std::path::{Path, PathBuf};

/// One array of /proc/mdstat.
#[derive(Debug, PartialEq)]
pub(crate) struct MdStat {
    pub name: String,
    /// active, inactive, recovering, resyncing, checking, reshaping.
    pub activity: String,
    pub disks_active: u64,
    pub disks_total: u64,
    pub disks_failed: u64,
    pub disks_spare: u64,
    pub blocks: u64,
    pub blocks_synced: u64,
}

/// The number in `(done/total)` of a sync line.
fn synced(path: &Path, line: &str) -> Result<u64, Error> {
    let inner = line
        .split_once('(')
        .and_then(|(_, r)| r.split_once('/'))
        .map(|(done, _)| done)
        .ok_or_else(|| parse_err(path, format!("no (done/total) in sync line '{}'", line.trim())))?;
    inner.trim().parse().map_err(|_| parse_err(path, format!("'{inner}' is not a block count")))
}

pub(crate) fn parse_mdstat(path: &Path, text: &str) -> Result<Vec<MdStat>, Error> {
    let lines: Vec<&str> = text.lines().collect();
    let mut arrays = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields.len() < 3 || fields[1] != ":" || line.starts_with(char::is_whitespace) {
            continue;
        }
        if fields[0] == "Personalities" || fields[0] == "unused" {
            continue;
        }
        let name = fields[0].to_string();
        let status = lines.get(i + 1).ok_or_else(|| parse_err(path, format!("{name}: no status line")))?;
        let blocks: u64 = status
            .split_ascii_whitespace()
            .next()
            .and_then(|b| b.parse().ok())
            .ok_or_else(|| parse_err(path, format!("{name}: no block count in '{}'", status.trim())))?;
        let failed = line.matches("(F)").count() as u64;
        let spare = line.matches("(S)").count() as u64;
        let (active, total) = if fields[2] == "inactive" {
            (0, 0)
        } else if line.contains("raid0") || line.contains("linear") {
            // No [n/m] for these: every listed device is needed and active.
            let n = line.matches('[').count() as u64;
            (n, n)
        } else {
            let counts = status
                .split('[')
                .filter_map(|s| s.split_once(']'))
                .find_map(|(inner, _)| inner.split_once('/'))
                .and_then(|(t, a)| Some((t.parse::<u64>().ok()?, a.parse::<u64>().ok()?)));
            let Some((total, active)) = counts else {
                return Err(parse_err(path, format!("{name}: no [total/active] in '{}'", status.trim())));
            };
            (active, total)
        };
        let mut activity = if fields[2] == "inactive" { "inactive" } else { "active" };
        let mut blocks_synced = blocks;
        // The sync line, if any, follows the status line and an optional bitmap line.
        let mut next = i + 2;
        if lines.get(next).is_some_and(|l| l.contains("bitmap")) {
            next += 1;
        }
        if let Some(sync) = lines.get(next).filter(|l| l.starts_with(char::is_whitespace) && !l.trim().is_empty()) {
            let kind =
                [("recovery", "recovering"), ("resync", "resyncing"), ("check", "checking"), ("reshape", "reshaping")]
                    .into_iter()
                    .find(|(word, _)| sync.contains(word));
            if let Some((_, state)) = kind {
                activity = state;
                blocks_synced =
                    if sync.contains("PENDING") || sync.contains("DELAYED") { 0 } else { synced(path, sync)? };
            }
        }
        arrays.push(MdStat {
            name,
            activity: activity.to_string(),
            disks_active: active,
            disks_total: total,
            disks_failed: failed,
            disks_spare: spare,
            blocks,
            blocks_synced,
        });
    }
    Ok(arrays)
}

pub(super) struct MdadmCollector {
    mdstat: PathBuf,
    block: PathBuf,
}

impl MdadmCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { mdstat: paths.proc("mdstat"), block: paths.sys("block") }
    }
}

impl Collect for MdadmCollector {
    fn name(&self) -> &'static str {
        "mdadm"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let text = match read_file(&self.mdstat) {
            Ok(t) => t,
            Err(e) if e.is_not_found() => return Err(Error::NoData(format!("mdadm: {e}"))),
            Err(e) => return Err(e),
        };
        let arrays = parse_mdstat(&self.mdstat, &text)?;
        let mut state = Family::gauge("node_md_state", "Indicates the state of md-device.");
        let mut disks = Family::gauge("node_md_disks", "Number of active/failed/spare disks of device.");
        let mut required = Family::gauge("node_md_disks_required", "Total number of disks of device.");
        let mut blocks = Family::gauge("node_md_blocks", "Total number of blocks on device.");
        let mut synced = Family::gauge("node_md_blocks_synced", "Number of blocks synced on device.");
        for a in &arrays {
            let d = a.name.as_str();
            for (label, activity) in [
                ("active", "active"),
                ("inactive", "inactive"),
                ("recovering", "recovering"),
                ("resync", "resyncing"),
                ("check", "checking"),
            ] {
                state.push(&[("device", d), ("state", label)], (a.activity == activity) as u8 as f64);
            }
            for (label, v) in [("active", a.disks_active), ("failed", a.disks_failed), ("spare", a.disks_spare)] {
                disks.push(&[("device", d), ("state", label)], v as f64);
            }
            required.push(&[("device", d)], a.disks_total as f64);
            blocks.push(&[("device", d)], a.blocks as f64);
            synced.push(&[("device", d)], a.blocks_synced as f64);
        }
        for f in [state, disks, required, blocks, synced] {
            f.finish_into(out);
        }

        // sysfs: arrays the kernel knows, mdstat or not.
        let mut raid_disks = Family::gauge("node_md_raid_disks", "Number of raid disks on device.");
        let mut degraded = Family::gauge("node_md_degraded", "Number of degraded disks on device.");
        let mut devices: Vec<(String, PathBuf)> = std::fs::read_dir(&self.block)
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let name = e.file_name().into_string().ok()?;
                        let md = e.path().join("md");
                        (name.starts_with("md") && md.is_dir()).then_some((name, md))
                    })
                    .collect()
            })
            .unwrap_or_default();
        devices.sort();
        for (name, md) in &devices {
            let optional = |file: &str| match read_file(&md.join(file)) {
                Ok(t) => Ok(Some(t.trim().to_string())),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            };
            let level = optional("level")?.unwrap_or_default();
            let metadata = optional("metadata_version")?.unwrap_or_default();
            // Containers (imsm, ddf) and arrays without a level have no meaningful disk count.
            let container = metadata.contains("imsm") || metadata.contains("ddf") || level == "container";
            if !container && !level.is_empty() {
                // `N` or, while reshaping, `N (M)`: the first number.
                if let Some(n) =
                    optional("raid_disks")?.and_then(|s| s.split_ascii_whitespace().next()?.parse::<u64>().ok())
                {
                    raid_disks.push(&[("device", name)], n as f64);
                }
            }
            // Only redundant levels have `degraded`; the others count as 0, as node_exporter.
            let redundant = matches!(level.as_str(), "raid1" | "raid4" | "raid5" | "raid6" | "raid10");
            let n = if redundant { optional("degraded")?.and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) } else { 0 };
            if !level.is_empty() {
                degraded.push(&[("device", name)], n as f64);
            }
        }
        raid_disks.finish_into(out);
        degraded.finish_into(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mdstat_states_disks_and_sync_as_procfs() {
        let text = "Personalities : [raid1] [raid6] [raid5] [raid4] [raid0]\n\
md1 : active raid5 sdd1[3](S) sdc1[2] sdb1[1](F) sda1[0]\n      1953520640 blocks super 1.2 level 5, 512k chunk, algorithm 2 [3/2] [U_U]\n      bitmap: 0/8 pages [0KB], 65536KB chunk\n      [=>...................]  recovery =  8.5% (83184640/976760320) finish=103.6min speed=143704K/sec\n\n\
md2 : active raid0 sde1[1] sdf1[0]\n      41910272 blocks super 1.2 512k chunks\n\n\
md3 : inactive sdg1[0](S)\n      1048576 blocks\n\n\
md4 : active raid1 sdh1[1] sdi1[0]\n      1048576 blocks [2/2] [UU]\n        resync=DELAYED\n\n\
unused devices: <none>\n";
        let a = parse_mdstat(Path::new("mdstat"), text).unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(
            (a[0].activity.as_str(), a[0].disks_total, a[0].disks_active, a[0].disks_failed, a[0].disks_spare),
            ("recovering", 3, 2, 1, 1)
        );
        assert_eq!((a[0].blocks, a[0].blocks_synced), (1953520640, 83184640));
        assert_eq!((a[1].activity.as_str(), a[1].disks_total, a[1].disks_active), ("active", 2, 2));
        assert_eq!((a[2].activity.as_str(), a[2].disks_total, a[2].disks_spare), ("inactive", 0, 1));
        assert_eq!((a[3].activity.as_str(), a[3].blocks_synced), ("resyncing", 0));
    }
}
