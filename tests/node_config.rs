//! `metrics.node` config: node_exporter's flags as keys, their defaults, and every bad value
//! reported with its path, the value and the fix.

use std::path::Path;
use std::time::Duration;
use vigil::config::{Config, Error};
use vigil::metrics::node::config::{
    DEFAULT_DISK_DEVICE_EXCLUDE, DEFAULT_FS_TYPES_EXCLUDE, DEFAULT_MOUNT_POINTS_EXCLUDE,
};

fn no_env(_: &str) -> Option<String> {
    None
}

fn load(node: &str) -> Result<Config, Error> {
    Config::from_yaml(&format!("metrics:\n  node:\n{node}"), &no_env)
}

fn errors(node: &str) -> Vec<String> {
    match load(node) {
        Err(Error::Invalid(e)) => e,
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(c) => panic!("config should be invalid: {:?}", c.metrics.node),
    }
}

#[test]
fn defaults_are_node_exporters() {
    let c = Config::from_yaml("{}", &no_env).unwrap().metrics.node;
    assert!(c.enabled);
    assert_eq!(c.rootfs_path(), Path::new("/"));
    assert_eq!(c.procfs_path(), Path::new("/proc"));
    assert_eq!(c.sysfs_path(), Path::new("/sys"));
    let on = &c.collectors;
    assert!(on.cpu && on.meminfo && on.loadavg && on.filesystem && on.diskstats && on.netdev);
    assert!(on.stat && on.time && on.uname && on.os);
    assert_eq!(c.filesystem.mount_points_exclude, DEFAULT_MOUNT_POINTS_EXCLUDE);
    assert_eq!(c.filesystem.fs_types_exclude, DEFAULT_FS_TYPES_EXCLUDE);
    assert_eq!(c.filesystem.statfs_timeout.get(), Duration::from_secs(5));
    assert_eq!(c.diskstats.device_exclude, DEFAULT_DISK_DEVICE_EXCLUDE);
    assert_eq!(c.netdev.device_exclude, "");
    // The regexes are node_exporter's: tmpfs is kept, overlay dropped, partitions dropped.
    let fs = regex::Regex::new(DEFAULT_FS_TYPES_EXCLUDE).unwrap();
    assert!(fs.is_match("overlay") && fs.is_match("cgroup2") && !fs.is_match("tmpfs") && !fs.is_match("ext4"));
    let mp = regex::Regex::new(DEFAULT_MOUNT_POINTS_EXCLUDE).unwrap();
    assert!(
        mp.is_match("/proc") && mp.is_match("/var/lib/docker/overlay2/x/merged") && mp.is_match("/run/credentials/a")
    );
    assert!(!mp.is_match("/") && !mp.is_match("/run") && !mp.is_match("/var/lib/docker") && !mp.is_match("/devices"));
    let disk = regex::Regex::new(DEFAULT_DISK_DEVICE_EXCLUDE).unwrap();
    for d in ["sda1", "nvme0n1p2", "loop3", "zram0", "ram1", "xvda1", "vdb2"] {
        assert!(disk.is_match(d), "{d}");
    }
    for d in ["sda", "nvme0n1", "dm-0", "md127", "vda", "xvdb"] {
        assert!(!disk.is_match(d), "{d}");
    }
}

#[test]
fn host_paths_derive_from_rootfs_unless_set() {
    let c = load("    rootfs: /host/\n").unwrap().metrics.node;
    assert_eq!(c.rootfs_path(), Path::new("/host"));
    assert_eq!(c.procfs_path(), Path::new("/host/proc"));
    assert_eq!(c.sysfs_path(), Path::new("/host/sys"));
    let c = load("    rootfs: /host\n    procfs: /hostproc\n    sysfs: /hostsys\n").unwrap().metrics.node;
    assert_eq!(c.procfs_path(), Path::new("/hostproc"));
    assert_eq!(c.sysfs_path(), Path::new("/hostsys"));
}

#[test]
fn every_key_parses() {
    let c = load(
        "    enabled: true\n    rootfs: /host\n\
         \x20   collectors: {cpu: true, meminfo: true, loadavg: false, filesystem: true, diskstats: true, netdev: true, stat: true, time: false, uname: true, os: false}\n\
         \x20   filesystem:\n      mount_points_exclude: '^/(proc|sys)($|/)'\n      fs_types_exclude: '^(proc|sysfs)$'\n      statfs_timeout: 1500ms\n\
         \x20   diskstats:\n      device_exclude: '^loop\\d+$'\n\
         \x20   netdev:\n      device_exclude: '^(lo|veth.*)$'\n",
    )
    .unwrap()
    .metrics
    .node;
    assert!(!c.collectors.loadavg && !c.collectors.time && !c.collectors.os && c.collectors.cpu);
    assert_eq!(c.filesystem.statfs_timeout.get(), Duration::from_millis(1500));
    assert_eq!(c.netdev.device_exclude, "^(lo|veth.*)$");
    // The effective config (what `vigil validate` prints) loads back to the same thing.
    let again = Config::from_yaml(
        &Config::from_yaml("metrics:\n  node:\n    rootfs: /host\n", &no_env).unwrap().to_yaml(),
        &no_env,
    )
    .unwrap();
    assert_eq!(again.metrics.node.rootfs, "/host");
    assert!(again.metrics.node.procfs.is_none());
}

#[test]
fn an_unknown_collector_is_an_error_with_its_path() {
    let e = errors("    collectors: {cpus: false}\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("metrics.node.collectors"), "{e:?}");
    assert!(e[0].contains("unknown field `cpus`"), "{e:?}");
}

#[test]
fn every_bad_value_is_reported_at_once() {
    let e = errors(
        "    rootfs: host\n    procfs: proc\n\
         \x20   filesystem:\n      mount_points_exclude: '^/(dev'\n      statfs_timeout: 0s\n\
         \x20   diskstats:\n      device_exclude: '['\n",
    );
    assert_eq!(e.len(), 5, "{e:#?}");
    assert!(e[0].starts_with("metrics.node.rootfs: 'host' is relative; expected an absolute path"), "{e:?}");
    assert!(e[1].starts_with("metrics.node.procfs: 'proc' is relative"), "{e:?}");
    assert!(
        e.iter().any(
            |m| m.starts_with("metrics.node.filesystem.mount_points_exclude: '^/(dev' is not a regular expression")
        ),
        "{e:?}"
    );
    assert!(
        e.iter().any(|m| m.starts_with("metrics.node.diskstats.device_exclude: '[' is not a regular expression")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|m| m == "metrics.node.filesystem.statfs_timeout: is 0; expected a positive duration such as 5s"),
        "{e:?}"
    );
}
