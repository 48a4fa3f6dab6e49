//! The kernel-facing node collectors of issue 12 (filefd, conntrack, vmstat, netclass, mdadm,
//! bonding, pressure, netstat, sockstat, textfile, timex) on the fixture tree
//! (tests/fixtures/node, laid out as node_exporter's own `proc`/`sys` fixtures): figures worked
//! out by hand from the fixture files and node_exporter's rules. The whole output is also
//! pinned in expected.prom (node_fixtures.rs), and node_compat.rs runs the real node_exporter
//! on the same tree and on the real machine.

use prometheus::Registry;
use std::path::{Path, PathBuf};
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
        assert!(on.filefd && on.conntrack && on.timex && on.vmstat && on.pressure && on.netstat && on.sockstat);
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
