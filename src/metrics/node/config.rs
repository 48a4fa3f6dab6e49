//! `metrics.node`: which node collectors run, and where the node's /proc, /sys and / are.
//!
//! Names and defaults follow node_exporter's flags (`--path.rootfs`, `--path.procfs`,
//! `--path.sysfs`, `--collector.<name>`, `--collector.filesystem.mount-points-exclude`,
//! `--collector.filesystem.fs-types-exclude`, `--collector.filesystem.mount-timeout`,
//! `--collector.diskstats.device-exclude`, `--collector.netdev.device-exclude`), so a
//! node_exporter command line translates key by key.

use crate::config::{HumanDuration, Problems};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// node_exporter's default `--collector.filesystem.mount-points-exclude` (upstream; Debian's
/// package patches it to also drop /run, /mnt and /media).
pub const DEFAULT_MOUNT_POINTS_EXCLUDE: &str =
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
/// node_exporter's default `--collector.filesystem.fs-types-exclude`. tmpfs is kept, as
/// upstream does.
pub const DEFAULT_FS_TYPES_EXCLUDE: &str = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$";
/// node_exporter's default `--collector.diskstats.device-exclude` (recent releases; older ones
/// had `ram` instead of `z?ram`): partitions, ram, zram, loop and floppy devices.
pub const DEFAULT_DISK_DEVICE_EXCLUDE: &str = r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeMetricsConfig {
    /// Export node metrics at all. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The node's root filesystem as vigil sees it, as node_exporter's --path.rootfs. In a pod
    /// with the node's / mounted at /host, set /host. Mount points are reported with this
    /// prefix stripped, as the node sees them. Default /.
    #[serde(default = "default_root")]
    pub rootfs: String,
    /// The node's procfs, as node_exporter's --path.procfs. Default `<rootfs>/proc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procfs: Option<String>,
    /// The node's sysfs, as node_exporter's --path.sysfs. Default `<rootfs>/sys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysfs: Option<String>,
    /// Which collectors run. Default: all of them.
    #[serde(default)]
    pub collectors: Collectors,
    #[serde(default)]
    pub filesystem: FilesystemConfig,
    #[serde(default)]
    pub diskstats: DiskstatsConfig,
    #[serde(default)]
    pub netdev: NetdevConfig,
    #[serde(default)]
    pub systemd: SystemdConfig,
    /// Directory of `*.prom` files (Prometheus text format) that the textfile collector
    /// exports, as node_exporter's --collector.textfile.directory: an absolute path as vigil
    /// sees it (not under rootfs; the DaemonSet mounts the node's directory at the same path).
    /// Files with timestamps or unparsable lines are skipped and set
    /// `node_textfile_scrape_error` to 1. Default unset: no files, as node_exporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub textfile_directory: Option<String>,
    #[serde(default)]
    pub vmstat: VmstatConfig,
    #[serde(default)]
    pub netstat: NetstatConfig,
}

/// node_exporter's default `--collector.vmstat.fields`.
pub const DEFAULT_VMSTAT_FIELDS: &str = "^(oom_kill|pgpg|pswp|pg.*fault).*";
/// node_exporter's default `--collector.netstat.fields` (current release).
pub const DEFAULT_NETSTAT_FIELDS: &str = r"^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts|TCPOFOQueue|TCPRcvQDrop)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmstatConfig {
    /// Regex of /proc/vmstat fields to export as `node_vmstat_<field>`. Default: node_exporter's
    /// (OOM kills, paging in/out, swapping in/out, page faults).
    #[serde(default = "default_vmstat_fields")]
    pub fields: String,
}

impl Default for VmstatConfig {
    fn default() -> Self {
        Self { fields: default_vmstat_fields() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetstatConfig {
    /// Regex of `<Proto>_<Field>` names (from /proc/net/netstat, snmp, snmp6) to export as
    /// `node_netstat_<Proto>_<Field>`. Default: node_exporter's current one.
    #[serde(default = "default_netstat_fields")]
    pub fields: String,
}

impl Default for NetstatConfig {
    fn default() -> Self {
        Self { fields: default_netstat_fields() }
    }
}

fn default_vmstat_fields() -> String {
    DEFAULT_VMSTAT_FIELDS.into()
}
fn default_netstat_fields() -> String {
    DEFAULT_NETSTAT_FIELDS.into()
}

/// node_exporter's default `--collector.systemd.unit-exclude`.
pub const DEFAULT_SYSTEMD_UNIT_EXCLUDE: &str = r".+\.(automount|device|mount|scope|slice)";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemdConfig {
    /// The node's D-Bus system bus socket. Default `<rootfs>/run/dbus/system_bus_socket`: in a
    /// pod, mount the node's /run/dbus there. When it is missing the collector is switched off
    /// at start with an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus_socket: Option<String>,
    /// Regex (anchored) of units to report. Default `.+`, as node_exporter.
    #[serde(default = "default_unit_include")]
    pub unit_include: String,
    /// Regex (anchored) of units not to report. Default node_exporter's: automount, device,
    /// mount, scope and slice units.
    #[serde(default = "default_unit_exclude")]
    pub unit_exclude: String,
    /// `node_systemd_unit_start_time_seconds{name}` (ActiveEnterTimestamp; 0 when the unit is
    /// not active), as node_exporter's `--collector.systemd.enable-start-time-metrics`.
    /// Default false: one more D-Bus call per unit and scrape.
    #[serde(default)]
    pub enable_start_time_metrics: bool,
    /// `node_systemd_unit_tasks_current{name}` and `node_systemd_unit_tasks_max{name}` of
    /// services, as `--collector.systemd.enable-task-metrics`. Default false.
    #[serde(default)]
    pub enable_task_metrics: bool,
    /// `node_systemd_service_restart_total{name}` (NRestarts), as
    /// `--collector.systemd.enable-restarts-metrics`. Default false.
    #[serde(default)]
    pub enable_restarts_metrics: bool,
}

impl Default for SystemdConfig {
    fn default() -> Self {
        Self {
            bus_socket: None,
            unit_include: default_unit_include(),
            unit_exclude: default_unit_exclude(),
            enable_start_time_metrics: false,
            enable_task_metrics: false,
            enable_restarts_metrics: false,
        }
    }
}

fn default_unit_include() -> String {
    ".+".into()
}
fn default_unit_exclude() -> String {
    DEFAULT_SYSTEMD_UNIT_EXCLUDE.into()
}

/// One switch per collector, named as node_exporter's `--collector.<name>`, each on or off by
/// default as in node_exporter (`processes` is off there and here; the rest are on).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collectors {
    /// `node_cpu_seconds_total`, `node_cpu_guest_seconds_total` from /proc/stat.
    #[serde(default = "yes")]
    pub cpu: bool,
    /// `node_memory_*` from /proc/meminfo.
    #[serde(default = "yes")]
    pub meminfo: bool,
    /// `node_load1`, `node_load5`, `node_load15` from /proc/loadavg.
    #[serde(default = "yes")]
    pub loadavg: bool,
    /// `node_filesystem_*` from the mount table and statfs(2).
    #[serde(default = "yes")]
    pub filesystem: bool,
    /// `node_disk_*` from /proc/diskstats.
    #[serde(default = "yes")]
    pub diskstats: bool,
    /// `node_network_*` from /proc/net/dev.
    #[serde(default = "yes")]
    pub netdev: bool,
    /// `node_boot_time_seconds`, `node_context_switches_total`, `node_forks_total`,
    /// `node_intr_total`, `node_procs_{running,blocked}` from /proc/stat.
    #[serde(default = "yes")]
    pub stat: bool,
    /// `node_time_seconds`, `node_time_zone_offset_seconds`, `node_time_clocksource_*`.
    #[serde(default = "yes")]
    pub time: bool,
    /// `node_uname_info` from uname(2).
    #[serde(default = "yes")]
    pub uname: bool,
    /// `node_os_info`, `node_os_version` from `<rootfs>/etc/os-release`.
    #[serde(default = "yes")]
    pub os: bool,
    /// `node_arp_entries{device}` from `<procfs>/1/net/arp`.
    #[serde(default = "yes")]
    pub arp: bool,
    /// `node_cpu_frequency_*_hertz`, `node_cpu_scaling_*` from `<sysfs>/devices/system/cpu`.
    #[serde(default = "yes")]
    pub cpufreq: bool,
    /// `node_entropy_available_bits`, `node_entropy_pool_size_bits`.
    #[serde(default = "yes")]
    pub entropy: bool,
    /// `node_hwmon_*` sensors from `<sysfs>/class/hwmon`.
    #[serde(default = "yes")]
    pub hwmon: bool,
    /// `node_power_supply_*` from `<sysfs>/class/power_supply`.
    #[serde(default = "yes")]
    pub powersupplyclass: bool,
    /// `node_processes_*` from every `<procfs>/<pid>/stat` and task. Default false, as
    /// node_exporter: it reads one file per thread on the node each scrape.
    #[serde(default)]
    pub processes: bool,
    /// `node_schedstat_*` from `<procfs>/schedstat`.
    #[serde(default = "yes")]
    pub schedstat: bool,
    /// `node_softnet_*` from `<procfs>/net/softnet_stat`.
    #[serde(default = "yes")]
    pub softnet: bool,
    /// `node_thermal_zone_temp`, `node_cooling_device_*` from `<sysfs>/class/thermal`.
    #[serde(default = "yes")]
    pub thermal_zone: bool,
    /// `node_udp_queues{ip,queue}` from `<procfs>/1/net/udp{,6}`.
    #[serde(default = "yes")]
    pub udp_queues: bool,
    /// `node_systemd_*` from systemd over the node's D-Bus system bus (see `systemd`). Default
    /// false, as node_exporter.
    #[serde(default)]
    pub systemd: bool,
    /// `node_filefd_allocated`, `node_filefd_maximum` from /proc/sys/fs/file-nr.
    #[serde(default = "yes")]
    pub filefd: bool,
    /// `node_nf_conntrack_*` from /proc/sys/net/netfilter and /proc/net/stat/nf_conntrack.
    #[serde(default = "yes")]
    pub conntrack: bool,
    /// `node_timex_*` from adjtimex(2) (read only).
    #[serde(default = "yes")]
    pub timex: bool,
    /// `node_vmstat_<field>` from /proc/vmstat (fields: `vmstat.fields`).
    #[serde(default = "yes")]
    pub vmstat: bool,
    /// The `*.prom` files in `textfile_directory`, `node_textfile_scrape_error`,
    /// `node_textfile_mtime_seconds`.
    #[serde(default = "yes")]
    pub textfile: bool,
    /// `node_network_up`, `node_network_info` and the other link attributes from
    /// /sys/class/net.
    #[serde(default = "yes")]
    pub netclass: bool,
    /// `node_md_*` from /proc/mdstat and /sys/block/md*/md.
    #[serde(default = "yes")]
    pub mdadm: bool,
    /// `node_bonding_slaves`, `node_bonding_active` from /sys/class/net/bonding_masters.
    #[serde(default = "yes")]
    pub bonding: bool,
    /// `node_pressure_*_seconds_total` from /proc/pressure (PSI).
    #[serde(default = "yes")]
    pub pressure: bool,
    /// `node_netstat_<Proto>_<Field>` from /proc/net/{netstat,snmp,snmp6}.
    #[serde(default = "yes")]
    pub netstat: bool,
    /// `node_sockstat_*` from /proc/net/sockstat and sockstat6.
    #[serde(default = "yes")]
    pub sockstat: bool,
}

impl Default for Collectors {
    fn default() -> Self {
        Self {
            cpu: true,
            meminfo: true,
            loadavg: true,
            filesystem: true,
            diskstats: true,
            netdev: true,
            stat: true,
            time: true,
            uname: true,
            os: true,
            arp: true,
            cpufreq: true,
            entropy: true,
            hwmon: true,
            powersupplyclass: true,
            processes: false,
            schedstat: true,
            softnet: true,
            thermal_zone: true,
            udp_queues: true,
            systemd: false,
            filefd: true,
            conntrack: true,
            timex: true,
            vmstat: true,
            textfile: true,
            netclass: true,
            mdadm: true,
            bonding: true,
            pressure: true,
            netstat: true,
            sockstat: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemConfig {
    /// Regex of mount points (as the node sees them, rootfs prefix stripped) not to report.
    /// Default: node_exporter's, which drops /dev, /proc, /sys, /run/credentials and container
    /// runtime layers under /var/lib/docker and /var/lib/containers/storage.
    #[serde(default = "default_mount_points_exclude")]
    pub mount_points_exclude: String,
    /// Regex of filesystem types not to report. Default: node_exporter's (pseudo filesystems
    /// and overlay; tmpfs is kept).
    #[serde(default = "default_fs_types_exclude")]
    pub fs_types_exclude: String,
    /// How long one statfs(2) may take before its mount is reported with
    /// `node_filesystem_device_error` 1 and no sizes. A mount whose statfs is still stuck is
    /// skipped (device_error 1) until that call returns, so a dead NFS server costs one thread,
    /// not one per scrape. It is also a scrape's whole statfs budget: once spent, each further
    /// mount gets a tenth of it (at most 100ms), so many dead mounts cannot add up to a scrape
    /// longer than Prometheus' timeout. Default 5s, as node_exporter's
    /// --collector.filesystem.mount-timeout.
    #[serde(default = "default_statfs_timeout")]
    pub statfs_timeout: HumanDuration,
}

impl Default for FilesystemConfig {
    fn default() -> Self {
        Self {
            mount_points_exclude: default_mount_points_exclude(),
            fs_types_exclude: default_fs_types_exclude(),
            statfs_timeout: default_statfs_timeout(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskstatsConfig {
    /// Regex of block devices not to report. Default: node_exporter's, which keeps whole disks,
    /// dm-* and md* and drops partitions, ram, zram, loop and floppy devices.
    #[serde(default = "default_disk_device_exclude")]
    pub device_exclude: String,
}

impl Default for DiskstatsConfig {
    fn default() -> Self {
        Self { device_exclude: default_disk_device_exclude() }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetdevConfig {
    /// Regex of network devices not to report. Default empty: every device, as upstream
    /// node_exporter (Debian's package excludes `^lo$`).
    #[serde(default)]
    pub device_exclude: String,
}

fn yes() -> bool {
    true
}
fn default_root() -> String {
    "/".into()
}
fn default_mount_points_exclude() -> String {
    DEFAULT_MOUNT_POINTS_EXCLUDE.into()
}
fn default_fs_types_exclude() -> String {
    DEFAULT_FS_TYPES_EXCLUDE.into()
}
fn default_disk_device_exclude() -> String {
    DEFAULT_DISK_DEVICE_EXCLUDE.into()
}
fn default_statfs_timeout() -> HumanDuration {
    HumanDuration::secs(5)
}

impl Default for NodeMetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rootfs: default_root(),
            procfs: None,
            sysfs: None,
            collectors: Collectors::default(),
            filesystem: FilesystemConfig::default(),
            diskstats: DiskstatsConfig::default(),
            netdev: NetdevConfig::default(),
            systemd: SystemdConfig::default(),
            textfile_directory: None,
            vmstat: VmstatConfig::default(),
            netstat: NetstatConfig::default(),
        }
    }
}

impl NodeMetricsConfig {
    pub fn validate(&self, path: &str, p: &mut Problems) {
        if !self.rootfs.starts_with('/') {
            p.push(
                format!("{path}.rootfs"),
                format!("'{}' is relative; expected an absolute path such as /host", self.rootfs),
            );
        }
        for (field, value, example) in [("procfs", &self.procfs, "/host/proc"), ("sysfs", &self.sysfs, "/host/sys")] {
            if let Some(v) = value.as_deref().filter(|v| !v.starts_with('/')) {
                p.push(
                    format!("{path}.{field}"),
                    format!("'{v}' is relative; expected an absolute path such as {example}, or leave it unset"),
                );
            }
        }
        for (field, re) in [
            ("filesystem.mount_points_exclude", &self.filesystem.mount_points_exclude),
            ("filesystem.fs_types_exclude", &self.filesystem.fs_types_exclude),
            ("diskstats.device_exclude", &self.diskstats.device_exclude),
            ("netdev.device_exclude", &self.netdev.device_exclude),
            ("systemd.unit_include", &self.systemd.unit_include),
            ("systemd.unit_exclude", &self.systemd.unit_exclude),
            ("vmstat.fields", &self.vmstat.fields),
            ("netstat.fields", &self.netstat.fields),
        ] {
            if let Err(e) = regex::Regex::new(re) {
                p.push(
                    format!("{path}.{field}"),
                    format!("'{re}' is not a regular expression ({e}); expected e.g. '^(lo|veth.*)$', or '' for none"),
                );
            }
        }
        if let Some(dir) = self.textfile_directory.as_deref().filter(|d| !d.starts_with('/') || d.contains('\0')) {
            p.push(
                format!("{path}.textfile_directory"),
                format!(
                    "'{dir}' is not an absolute path; expected e.g. /var/lib/node_exporter/textfile_collector, or leave it unset"
                ),
            );
        }
        if self.filesystem.statfs_timeout.get().is_zero() {
            p.push(format!("{path}.filesystem.statfs_timeout"), "is 0; expected a positive duration such as 5s");
        }
    }

    /// The rootfs with trailing slashes removed ("/" stays "/").
    pub fn rootfs_path(&self) -> PathBuf {
        let trimmed = self.rootfs.trim_end_matches('/');
        PathBuf::from(if trimmed.is_empty() { "/" } else { trimmed })
    }

    /// `procfs`, or `<rootfs>/proc`.
    pub fn procfs_path(&self) -> PathBuf {
        self.procfs.as_deref().map(PathBuf::from).unwrap_or_else(|| self.rootfs_path().join("proc"))
    }

    /// `sysfs`, or `<rootfs>/sys`.
    pub fn sysfs_path(&self) -> PathBuf {
        self.sysfs.as_deref().map(PathBuf::from).unwrap_or_else(|| self.rootfs_path().join("sys"))
    }
}
