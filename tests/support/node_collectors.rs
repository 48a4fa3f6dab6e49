//! The node_exporter collectors vigil implements, as node_exporter names them: the one list
//! that tests/node_compat.rs and benches/node_scrape.rs start both exporters with.

/// The core collectors and issue 12's, on by default in both. textfile has no directory in
/// the tests and the bench (node_textfile_scrape_error 0 in both).
pub const COLLECTORS: &[&str] = &[
    "cpu",
    "diskstats",
    "filesystem",
    "loadavg",
    "meminfo",
    "netdev",
    "os",
    "stat",
    "time",
    "uname",
    "filefd",
    "conntrack",
    "timex",
    "vmstat",
    "textfile",
    "netclass",
    "mdadm",
    "bonding",
    "pressure",
    "netstat",
    "sockstat",
];

/// The hardware, scheduler and queue collectors, on by default in both.
pub const HARDWARE_COLLECTORS: &[&str] =
    &["arp", "cpufreq", "entropy", "hwmon", "powersupplyclass", "schedstat", "softnet", "thermal_zone", "udp_queues"];

/// Off by default in both (node_compat switches them on in both).
pub const OFF_BY_DEFAULT: &[&str] = &["processes"];
