//! The kernel-facing node collectors of issue 12 (filefd, conntrack, vmstat, netclass, mdadm,
//! bonding, pressure, netstat, sockstat, textfile, timex) on the fixture tree
//! (tests/fixtures/node, laid out as node_exporter's own `proc`/`sys` fixtures): figures worked
//! out by hand from the fixture files and node_exporter's rules. The whole output is also
//! pinned in expected.prom (node_fixtures.rs), and node_compat.rs runs the real node_exporter
//! on the same tree and on the real machine.

#[path = "support/tree.rs"]
mod tree;
use prometheus::Registry;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use vigil::metrics::node::NodeCollector;
use vigil::metrics::node::config::NodeMetricsConfig;

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node")
}

/// Only the collectors named, on `root`.
fn only(root: &Path, on: &[&str]) -> NodeMetricsConfig {
    let mut cfg = NodeMetricsConfig { rootfs: root.display().to_string(), ..Default::default() };
    let mut c = serde_json::to_value(&cfg.collectors).unwrap();
    for (name, v) in c.as_object_mut().unwrap() {
        *v = on.contains(&name.as_str()).into();
    }
    cfg.collectors = serde_json::from_value(c).unwrap();
    cfg
}

fn render(cfg: &NodeMetricsConfig) -> (Registry, String) {
    let registry = Registry::new();
    registry.register(Box::new(NodeCollector::new(cfg).unwrap())).unwrap();
    let text = String::from_utf8(vigil::server::render(&registry)).unwrap();
    (registry, text)
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().unwrap())
    })
}

fn v(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

fn success(text: &str, collector: &str) -> f64 {
    v(text, &format!(r#"node_scrape_collector_success{{collector="{collector}"}}"#))
}

#[test]
fn proc_collectors_follow_node_exporter_rules() {
    let on = ["filefd", "conntrack", "vmstat", "pressure", "netstat", "sockstat"];
    let (_, t) = render(&only(&fixture_root(), &on));
    for c in on {
        assert_eq!(success(&t, c), 1.0, "{c}");
    }
    // filefd: fields 1 and 3 of file-nr.
    assert_eq!((v(&t, "node_filefd_allocated"), v(&t, "node_filefd_maximum")), (1024.0, 1_631_329.0));
    // conntrack: the sysctls, and hex columns summed over the two CPU rows.
    assert_eq!(v(&t, "node_nf_conntrack_entries"), 123.0);
    assert_eq!(v(&t, "node_nf_conntrack_entries_limit"), 65536.0);
    assert_eq!(v(&t, "node_nf_conntrack_stat_found"), (0x10 + 0x1) as f64);
    assert_eq!(v(&t, "node_nf_conntrack_stat_ignore"), (0xa00 + 0x100) as f64);
    assert_eq!(v(&t, "node_nf_conntrack_stat_insert"), (0x20 + 0x2) as f64);
    assert_eq!(v(&t, "node_nf_conntrack_stat_early_drop"), 3.0);
    assert_eq!(v(&t, "node_nf_conntrack_stat_search_restart"), 5.0);
    assert!(t.contains("# TYPE node_nf_conntrack_stat_drop gauge\n"));
    // vmstat: the default fields only, untyped.
    assert_eq!(v(&t, "node_vmstat_oom_kill"), 3.0);
    assert_eq!(v(&t, "node_vmstat_pgmajfault"), 1600.0);
    assert_eq!(v(&t, "node_vmstat_pswpout"), 34.0);
    assert!(t.contains("# TYPE node_vmstat_pgfault untyped\n"));
    assert!(!t.contains("node_vmstat_nr_dirty") && !t.contains("node_vmstat_pgalloc_normal"));
    // pressure: total= µs in seconds; irq has only "full".
    assert_eq!(v(&t, "node_pressure_cpu_waiting_seconds_total"), 60.763607);
    assert_eq!(v(&t, "node_pressure_io_stalled_seconds_total"), 11.03146);
    assert_eq!(v(&t, "node_pressure_memory_waiting_seconds_total"), 2.260317);
    assert_eq!(v(&t, "node_pressure_irq_stalled_seconds_total"), 4.5);
    assert!(t.contains("# TYPE node_pressure_io_waiting_seconds_total counter\n"));
    // netstat: header/value pairs and snmp6, filtered by the default fields.
    assert_eq!(v(&t, "node_netstat_Tcp_CurrEstab"), 13.0);
    assert_eq!(v(&t, "node_netstat_Tcp_InErrs"), 2.0);
    assert_eq!(v(&t, "node_netstat_TcpExt_ListenDrops"), 6.0);
    assert_eq!(v(&t, "node_netstat_TcpExt_TCPOFOQueue"), 9.0);
    assert_eq!(v(&t, "node_netstat_IpExt_InOctets"), 128_614_061.0);
    assert_eq!(v(&t, "node_netstat_Ip_Forwarding"), 1.0);
    assert_eq!(v(&t, "node_netstat_Icmp6_InErrors"), 1.0);
    assert_eq!(v(&t, "node_netstat_Ip6_OutOctets"), 88_000.0);
    assert_eq!(v(&t, "node_netstat_UdpLite6_InErrors"), 0.0);
    assert!(t.contains(
        "# HELP node_netstat_Udp6_NoPorts Statistic Udp6NoPorts.\n# TYPE node_netstat_Udp6_NoPorts untyped\n"
    ));
    assert!(!t.contains("node_netstat_Tcp_MaxConn") && !t.contains("node_netstat_TcpExt_TCPAbortOnData"));
    // sockstat: mem in pages × the page size; the IPv6 file adds its protocols.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    assert_eq!(v(&t, "node_sockstat_sockets_used"), 229.0);
    assert_eq!(v(&t, "node_sockstat_TCP_tw"), 7.0);
    assert_eq!(v(&t, "node_sockstat_TCP_mem"), 140.0);
    assert_eq!(v(&t, "node_sockstat_TCP_mem_bytes"), 140.0 * page);
    assert_eq!(v(&t, "node_sockstat_FRAG_memory"), 0.0);
    assert_eq!(v(&t, "node_sockstat_TCP6_inuse"), 4.0);
    assert!(t.contains("# HELP node_sockstat_UDP_inuse Number of UDP sockets in state inuse.\n"));
}

#[test]
fn sys_collectors_follow_node_exporter_rules() {
    let (_, t) = render(&only(&fixture_root(), &["netclass", "mdadm", "bonding"]));
    for c in ["netclass", "mdadm", "bonding"] {
        assert_eq!(success(&t, c), 1.0, "{c}");
    }
    // netclass: every interface (lo too); up from operstate; adminstate from flags & IFF_UP.
    assert_eq!(v(&t, r#"node_network_up{device="eth0"}"#), 1.0);
    assert_eq!(v(&t, r#"node_network_up{device="lo"}"#), 0.0);
    assert_eq!(
        v(
            &t,
            r#"node_network_info{address="02:fc:00:00:00:02",adminstate="down",broadcast="ff:ff:ff:ff:ff:ff",device="eth1",duplex="unknown",ifalias="",operstate="down"}"#
        ),
        1.0
    );
    assert!(t.contains(r#"node_network_info{address="02:fc:00:00:00:01",adminstate="up",broadcast="ff:ff:ff:ff:ff:ff",device="eth0",duplex="full",ifalias="uplink",operstate="up"} 1"#));
    assert_eq!(v(&t, r#"node_network_speed_bytes{device="eth0"}"#), 10_000.0 * 125_000.0);
    assert_eq!(v(&t, r#"node_network_speed_bytes{device="eth1"}"#), -125_000.0);
    assert!(value(&t, r#"node_network_speed_bytes{device="lo"}"#).is_none(), "no speed file, no series");
    assert_eq!(v(&t, r#"node_network_flags{device="eth0"}"#), 0x1003 as f64);
    assert_eq!(v(&t, r#"node_network_carrier_down_changes_total{device="eth1"}"#), 3.0);
    assert_eq!(v(&t, r#"node_network_iface_id{device="bond0"}"#), 4.0);
    assert_eq!(v(&t, r#"node_network_protocol_type{device="lo"}"#), 772.0);
    assert!(t.contains("# TYPE node_network_carrier_changes_total counter\n"));
    assert!(t.contains("# HELP node_network_mtu_bytes Network device property: mtu_bytes\n"));
    assert!(!t.contains(r#"device="bonding_masters""#));
    // bonding: lower_<slave> and the older slave_<slave> layout both count.
    assert_eq!(v(&t, r#"node_bonding_slaves{master="bond0"}"#), 2.0);
    assert_eq!(v(&t, r#"node_bonding_active{master="bond0"}"#), 1.0);
    // mdadm from mdstat.
    let state = |d: &str, s: &str| v(&t, &format!(r#"node_md_state{{device="{d}",state="{s}"}}"#));
    assert_eq!((state("md0", "active"), state("md1", "recovering"), state("md3", "inactive")), (1.0, 1.0, 1.0));
    assert_eq!(state("md1", "active"), 0.0);
    let disks = |d: &str, s: &str| v(&t, &format!(r#"node_md_disks{{device="{d}",state="{s}"}}"#));
    assert_eq!((disks("md1", "active"), disks("md1", "failed"), disks("md1", "spare")), (2.0, 1.0, 1.0));
    assert_eq!((disks("md2", "active"), disks("md3", "spare")), (2.0, 1.0));
    assert_eq!(v(&t, r#"node_md_disks_required{device="md1"}"#), 3.0);
    assert_eq!(v(&t, r#"node_md_blocks{device="md1"}"#), 1_953_520_640.0);
    assert_eq!(v(&t, r#"node_md_blocks_synced{device="md1"}"#), 83_184_640.0);
    assert_eq!(v(&t, r#"node_md_blocks_synced{device="md0"}"#), 248_896.0);
    // ... and from sysfs.
    assert_eq!(v(&t, r#"node_md_raid_disks{device="md1"}"#), 3.0);
    assert_eq!(v(&t, r#"node_md_degraded{device="md1"}"#), 1.0);
    assert_eq!(v(&t, r#"node_md_degraded{device="md2"}"#), 0.0, "raid0 has no degraded file: 0");
}

/// A node without md, bonding, conntrack or PSI: node_exporter's "no data" (success 0), which is
/// not a failure of vigil (no error counted) and does not touch the other collectors.
#[test]
fn missing_subsystems_are_no_data_not_failures() {
    let empty = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(empty.path().join("proc/sys/fs")).unwrap();
    std::fs::write(empty.path().join("proc/sys/fs/file-nr"), "5\t0\t10\n").unwrap();
    let on = ["mdadm", "bonding", "conntrack", "pressure", "netclass", "filefd"];
    let (_, t) = render(&only(empty.path(), &on));
    for c in ["mdadm", "bonding", "conntrack", "pressure", "netclass"] {
        assert_eq!(success(&t, c), 0.0, "{c}");
        assert!(value(&t, &format!(r#"vigil_node_collector_errors_total{{collector="{c}"}}"#)).is_none(), "{c}: {t}");
    }
    assert_eq!(success(&t, "filefd"), 1.0);
    assert_eq!(v(&t, "node_filefd_maximum"), 10.0);
    assert!(!t.contains("node_md_") && !t.contains("node_bonding_") && !t.contains("node_nf_conntrack"));
}

#[test]
fn garbage_fails_only_its_collector() {
    let dir = tempfile::tempdir().unwrap();
    for (file, text) in [
        ("proc/vmstat", "pgfault notanumber\n"),
        ("proc/sys/fs/file-nr", "12\n"),
        ("proc/net/netstat", "TcpExt: A B\nTcpExt: 1\n"),
        ("proc/net/snmp", ""),
        ("proc/net/sockstat", "TCP: inuse\n"),
        ("proc/mdstat", "md0 : active raid1 sda1[0]\n      xx blocks\n"),
    ] {
        let p = dir.path().join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let on = ["vmstat", "filefd", "netstat", "sockstat", "mdadm", "timex"];
    let (_, t) = render(&only(dir.path(), &on));
    for c in ["vmstat", "filefd", "netstat", "sockstat", "mdadm"] {
        assert_eq!(success(&t, c), 0.0, "{c}");
        assert_eq!(v(&t, &format!(r#"vigil_node_collector_errors_total{{collector="{c}"}}"#)), 1.0, "{c}");
    }
    assert!(!t.contains("node_vmstat_") && !t.contains("node_filefd_") && !t.contains("node_sockstat_"));
    // timex reads the kernel, not files: unaffected.
    assert_eq!(success(&t, "timex"), 1.0);
    assert!(t.contains("# TYPE node_timex_pps_error_total counter\n"));
}

fn write_prom(dir: &Path, name: &str, text: &str, mtime_secs: u64) {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_millis(mtime_secs * 1000 + 750)).unwrap();
}

#[test]
fn textfile_exports_good_files_and_flags_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_prom(
        d,
        "backup.prom",
        "# HELP backup_last_success_timestamp_seconds Last good backup.\n\
         # TYPE backup_last_success_timestamp_seconds gauge\n\
         backup_last_success_timestamp_seconds{job=\"db\"} 1.7e9\n\
         # TYPE backup_runs_total counter\n\
         backup_runs_total 12\n\
         # TYPE backup_duration_seconds histogram\n\
         backup_duration_seconds_bucket{le=\"60\"} 3\n\
         backup_duration_seconds_bucket{le=\"+Inf\"} 5\n\
         backup_duration_seconds_sum 420\n\
         backup_duration_seconds_count 5\n\
         plain_value{path=\"a \\\"q\\\" b\"} 1\n",
        1_700_000_000,
    );
    // Another file adds a label to the same family: the sets are unioned, "" where missing.
    write_prom(
        d,
        "more.prom",
        "# TYPE backup_last_success_timestamp_seconds gauge\nbackup_last_success_timestamp_seconds{job=\"web\",site=\"x\"} 1.6e9\n",
        1_700_000_100,
    );
    // Rejected: a timestamp; a parse error; and not *.prom at all.
    write_prom(d, "stamped.prom", "stamped_metric 1 1700000000000\n", 1);
    write_prom(d, "broken.prom", "broken_metric{a=\"x\" 1\n", 1);
    write_prom(d, "notes.txt", "ignored_metric 1\n", 1);
    let mut cfg = only(d, &["textfile"]);
    cfg.textfile_directory = Some(d.display().to_string());
    let (registry, t) = render(&cfg);
    assert_eq!(success(&t, "textfile"), 1.0);
    assert_eq!(v(&t, "node_textfile_scrape_error"), 1.0);
    assert_eq!(v(&t, r#"backup_last_success_timestamp_seconds{job="db",site=""}"#), 1.7e9);
    assert_eq!(v(&t, r#"backup_last_success_timestamp_seconds{job="web",site="x"}"#), 1.6e9);
    assert!(t.contains("# HELP backup_last_success_timestamp_seconds Last good backup.\n"));
    assert!(t.contains("# TYPE backup_runs_total counter\nbackup_runs_total 12\n"));
    let backup = d.join("backup.prom").display().to_string();
    assert!(t.contains(&format!("# HELP backup_runs_total Metric read from {backup}\n")), "{t}");
    assert!(t.contains("# TYPE backup_duration_seconds histogram\n"));
    assert_eq!(v(&t, r#"backup_duration_seconds_bucket{le="60"}"#), 3.0);
    assert_eq!(v(&t, r#"backup_duration_seconds_bucket{le="+Inf"}"#), 5.0);
    assert_eq!(v(&t, "backup_duration_seconds_count"), 5.0);
    assert!(t.contains("# TYPE plain_value untyped\nplain_value{path=\"a \\\"q\\\" b\"} 1\n"), "{t}");
    // mtime in whole seconds, only for the files read.
    assert_eq!(v(&t, &format!(r#"node_textfile_mtime_seconds{{file="{backup}"}}"#)), 1_700_000_000.0);
    assert!(!t.contains("stamped_metric") && !t.contains("broken_metric") && !t.contains("ignored_metric"));
    assert!(!t.contains("stamped.prom") && !t.contains("broken.prom"));
    assert_eq!(v(&t, "vigil_node_textfile_errors_total"), 2.0);

    // Fixed: the error clears on the next scrape.
    std::fs::remove_file(d.join("stamped.prom")).unwrap();
    std::fs::remove_file(d.join("broken.prom")).unwrap();
    let t = String::from_utf8(vigil::server::render(&registry)).unwrap();
    assert_eq!(v(&t, "node_textfile_scrape_error"), 0.0);
    assert_eq!(v(&t, "vigil_node_textfile_errors_total"), 2.0);
}

#[test]
fn textfile_help_conflict_drops_the_later_family() {
    let dir = tempfile::tempdir().unwrap();
    write_prom(dir.path(), "a.prom", "# HELP m One.\nm{f=\"a\"} 1\n", 10);
    write_prom(dir.path(), "b.prom", "# HELP m Two.\nm{f=\"b\"} 2\nother 3\n", 20);
    let mut cfg = only(dir.path(), &["textfile"]);
    cfg.textfile_directory = Some(dir.path().display().to_string());
    let (_, t) = render(&cfg);
    assert_eq!(v(&t, "node_textfile_scrape_error"), 1.0);
    assert_eq!(v(&t, r#"m{f="a"}"#), 1.0);
    assert!(value(&t, r#"m{f="b"}"#).is_none());
    assert_eq!(v(&t, "other"), 3.0, "the rest of the file is kept");
}

#[test]
fn textfile_without_a_directory_is_no_error_and_a_missing_one_is() {
    let (_, t) = render(&only(&fixture_root(), &["textfile"]));
    assert_eq!(v(&t, "node_textfile_scrape_error"), 0.0);
    let mut cfg = only(&fixture_root(), &["textfile"]);
    cfg.textfile_directory = Some("/nonexistent/textfile_collector".into());
    let (_, t) = render(&cfg);
    assert_eq!(v(&t, "node_textfile_scrape_error"), 1.0);
    assert_eq!(success(&t, "textfile"), 1.0);
}

#[test]
fn each_collector_can_be_switched_off() {
    let all = [
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
    for off in all {
        let on: Vec<&str> = all.iter().copied().filter(|c| *c != off).collect();
        let (_, t) = render(&only(&fixture_root(), &on));
        assert!(value(&t, &format!(r#"node_scrape_collector_success{{collector="{off}"}}"#)).is_none(), "{off}");
        for c in &on {
            assert!(value(&t, &format!(r#"node_scrape_collector_success{{collector="{c}"}}"#)).is_some(), "{c}");
        }
    }
}

mod config {
    use vigil::config::{Config, Error};
    use vigil::metrics::node::config::{DEFAULT_NETSTAT_FIELDS, DEFAULT_VMSTAT_FIELDS};

    fn load(node: &str) -> Result<Config, Error> {
        Config::from_yaml(&format!("metrics:\n  node:\n{node}"), &|_| None)
    }

    #[test]
    fn new_collectors_default_on_as_node_exporter_and_parse() {
        let c = load("    rootfs: /\n").unwrap().metrics.node;
        let on = &c.collectors;
        assert!(on.filefd && on.conntrack && on.timex && on.vmstat && on.textfile && on.netclass);
        assert!(on.mdadm && on.bonding && on.pressure && on.netstat && on.sockstat);
        assert_eq!(
            (c.vmstat.fields.as_str(), c.netstat.fields.as_str()),
            (DEFAULT_VMSTAT_FIELDS, DEFAULT_NETSTAT_FIELDS)
        );
        assert!(c.textfile_directory.is_none());
        let c = load(
            "    textfile_directory: /var/lib/node_exporter/textfile_collector\n\
             \x20   collectors: {mdadm: false, timex: false}\n\
             \x20   vmstat: {fields: '^oom_kill$'}\n    netstat: {fields: '^Tcp_.*'}\n",
        )
        .unwrap()
        .metrics
        .node;
        assert_eq!(c.textfile_directory.as_deref(), Some("/var/lib/node_exporter/textfile_collector"));
        assert!(!c.collectors.mdadm && !c.collectors.timex && c.collectors.bonding);
        assert_eq!(c.vmstat.fields, "^oom_kill$");
    }

    #[test]
    fn bad_textfile_directory_and_field_regexes_are_reported_with_their_paths() {
        let Err(Error::Invalid(e)) =
            load("    textfile_directory: textfiles\n    vmstat: {fields: '('}\n    netstat: {fields: '['}\n")
        else {
            panic!("should be invalid")
        };
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(
            e.iter().any(|m| m.starts_with("metrics.node.textfile_directory: 'textfiles' is not an absolute path")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|m| m.starts_with("metrics.node.vmstat.fields: '(' is not a regular expression")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|m| m.starts_with("metrics.node.netstat.fields: '[' is not a regular expression")),
            "{e:?}"
        );
    }
}

/// The node mixin's "USE Method / Node" dashboard lists instances with
/// `label_values(node_exporter_build_info, instance)`: vigil answers it, saying it is vigil.
#[test]
fn node_exporter_build_info_names_vigil_and_its_version() {
    let (_, t) = render(&only(&fixture_root(), &["filefd"]));
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        v(
            &t,
            &format!(
                r#"node_exporter_build_info{{goarch="{arch}",goos="linux",tags="vigil",version="{version}",vigil_version="{version}"}}"#
            )
        ),
        1.0
    );
    assert!(t.contains("# TYPE node_exporter_build_info gauge\n"));
    // With metrics.node.enabled false it is gone with every node_* series
    // (node_compat.rs: the_binary_honours_enabled_and_rootfs).
}

/// node_exporter's current release exports a fixed list of /proc/meminfo fields (REFERENCE.md
/// §8, "meminfo naming rule"): every one of them is here, named by the rule. vigil exports every
/// line (a superset: KReclaimable, Hugetlb... too, as node_exporter up to 1.8 did).
#[test]
fn meminfo_has_every_field_of_node_exporters_list() {
    let (_, t) = render(&only(&fixture_root(), &["meminfo"]));
    let kb = [
        "MemTotal",
        "MemFree",
        "MemAvailable",
        "Buffers",
        "Cached",
        "SwapCached",
        "Active",
        "Inactive",
        "Active_anon",
        "Inactive_anon",
        "Active_file",
        "Inactive_file",
        "Unevictable",
        "Mlocked",
        "SwapTotal",
        "SwapFree",
        "Zswap",
        "Zswapped",
        "Dirty",
        "Writeback",
        "WritebackTmp",
        "AnonPages",
        "Mapped",
        "Shmem",
        "ShmemHugePages",
        "ShmemPmdMapped",
        "Slab",
        "SReclaimable",
        "SUnreclaim",
        "KernelStack",
        "PageTables",
        "NFS_Unstable",
        "Bounce",
        "CommitLimit",
        "Committed_AS",
        "VmallocTotal",
        "VmallocUsed",
        "VmallocChunk",
        "Percpu",
        "HardwareCorrupted",
        "AnonHugePages",
        "CmaTotal",
        "CmaFree",
        "Hugepagesize",
        "DirectMap4k",
        "DirectMap2M",
        "DirectMap1G",
    ];
    for f in kb {
        assert!(t.contains(&format!("# TYPE node_memory_{f}_bytes gauge\n")), "{f}");
    }
    for f in ["HugePages_Total", "HugePages_Free", "HugePages_Rsvd", "HugePages_Surp"] {
        assert!(t.contains(&format!("# TYPE node_memory_{f} gauge\n")), "{f}");
    }
    assert_eq!(v(&t, "node_memory_CmaFree_bytes"), 32768.0 * 1024.0);
    assert_eq!(v(&t, "node_memory_Zswapped_bytes"), 4096.0 * 1024.0);
    assert_eq!(v(&t, "node_memory_HardwareCorrupted_bytes"), 0.0);
}

mod garbage {
    use super::*;
    use proptest::prelude::*;

    const FILES: [&str; 14] = [
        "proc/sys/fs/file-nr",
        "proc/sys/net/netfilter/nf_conntrack_count",
        "proc/net/stat/nf_conntrack",
        "proc/vmstat",
        "proc/pressure/io",
        "proc/net/netstat",
        "proc/net/snmp",
        "proc/net/snmp6",
        "proc/net/sockstat",
        "proc/mdstat",
        "sys/block/md1/md/raid_disks",
        "sys/class/net/eth0/flags",
        "sys/class/net/bond0/bonding/slaves",
        "textfile/a.prom",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        /// Any bytes in any file these collectors read, alone or spliced into the real file: a
        /// scrape returns, never panics, and every collector reports success 0 or 1.
        #[test]
        fn arbitrary_file_contents_never_panic(
            contents in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), FILES.len()),
            keep_lines in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            tree::copy_tree(&fixture_root(), dir.path());
            std::fs::create_dir_all(dir.path().join("textfile")).unwrap();
            std::fs::write(dir.path().join("textfile/a.prom"), "# TYPE a counter\na{x=\"1\"} 1\n").unwrap();
            for (file, bytes) in FILES.iter().zip(&contents) {
                let mut data = bytes.clone();
                if keep_lines {
                    let mut real = std::fs::read(dir.path().join(file)).unwrap();
                    let at = real.len() / 2;
                    real.splice(at..at, data);
                    data = real;
                }
                std::fs::write(dir.path().join(file), data).unwrap();
            }
            let on = ["filefd", "conntrack", "vmstat", "pressure", "netstat", "sockstat", "mdadm", "netclass", "bonding", "textfile"];
            let mut cfg = only(dir.path(), &on);
            cfg.textfile_directory = Some(dir.path().join("textfile").display().to_string());
            let (_, t) = render(&cfg);
            for c in on {
                let s = value(&t, &format!(r#"node_scrape_collector_success{{collector="{c}"}}"#));
                prop_assert!(s == Some(0.0) || s == Some(1.0), "{c}: {s:?}");
            }
            // The text stays valid exposition: the textfile collector never passes garbage on.
            let e = value(&t, "node_textfile_scrape_error");
            prop_assert!(e == Some(0.0) || e == Some(1.0), "{e:?}");
        }
    }
}
