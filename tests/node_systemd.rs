//! The systemd collector against a real D-Bus: a private `dbus-daemon` (system bus config) with a
//! stand-in systemd (tests/fixtures/systemd/fake_systemd.py, dbus-python) that answers
//! ListUnits and Properties.Get with systemd's signatures. The bus, the wire format and the
//! decoding are real; only the unit list is fixed. Also the "socket not mounted" path: the
//! collector is off, the others run. dbus-daemon and python3-dbus/gi come from scripts/test.sh.

use prometheus::Registry;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vigil::metrics::node::NodeCollector;
use vigil::metrics::node::config::NodeMetricsConfig;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private system bus listening on `<dir>/run/dbus/system_bus_socket`, and the fake systemd
/// on it, once it owns org.freedesktop.systemd1.
fn bus_with_fake_systemd(dir: &Path) -> (Killed, Killed) {
    let run = dir.join("run/dbus");
    std::fs::create_dir_all(&run).unwrap();
    let socket = run.join("system_bus_socket");
    let conf = dir.join("bus.conf");
    std::fs::write(
        &conf,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
            socket.display()
        ),
    )
    .unwrap();
    let mut daemon = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", conf.display()))
        .args(["--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-daemon (apt-get install dbus-daemon; scripts/test.sh does it)");
    let mut address = String::new();
    BufReader::new(daemon.stdout.take().unwrap()).read_line(&mut address).unwrap();
    assert!(address.starts_with("unix:"), "dbus-daemon printed {address:?}");
    let daemon = Killed(daemon);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/systemd/fake_systemd.py");
    let mut fake = Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(address.trim())
        .stdout(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 with python3-dbus and python3-gi (scripts/test.sh installs them)");
    let mut line = String::new();
    BufReader::new(fake.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "fake systemd did not start");
    (daemon, Killed(fake))
}

fn render(cfg: &NodeMetricsConfig) -> String {
    let registry = Registry::new();
    registry.register(Box::new(NodeCollector::new(cfg).unwrap())).unwrap();
    String::from_utf8(vigil::server::render(&registry)).unwrap()
}

fn config(root: &Path) -> NodeMetricsConfig {
    let mut cfg = NodeMetricsConfig { rootfs: root.display().to_string(), ..Default::default() };
    cfg.collectors = serde_yaml_ng::from_str(
        "{cpu: false, meminfo: false, loadavg: false, filesystem: false, diskstats: false, netdev: false, stat: false, \
         time: false, uname: false, os: false, arp: false, cpufreq: false, entropy: false, hwmon: false, \
         powersupplyclass: false, schedstat: false, softnet: false, thermal_zone: false, udp_queues: false, \
         filefd: false, conntrack: false, timex: false, vmstat: false, textfile: false, netclass: false, \
         mdadm: false, bonding: false, pressure: false, netstat: false, sockstat: false, systemd: true}",
    )
    .unwrap();
    cfg
}

fn has(t: &str, line: &str) -> bool {
    t.lines().any(|l| l == line)
}

#[test]
fn systemd_units_over_a_real_bus_map_to_node_exporter_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let _bus = bus_with_fake_systemd(dir.path());
    let cfg = config(dir.path());
    // The fake owns its name before it prints "ready"; still, allow a loaded machine a retry.
    let deadline = Instant::now() + Duration::from_secs(30);
    let t = loop {
        let t = render(&cfg);
        if has(&t, r#"node_scrape_collector_success{collector="systemd"} 1"#) || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(has(&t, r#"node_scrape_collector_success{collector="systemd"} 1"#), "{t}");
    // Five series per reported unit, 1 on its ActiveState; type from Service.Type / Mount.Type.
    for (name, state, kind) in [
        ("sshd.service", "active", "notify"),
        ("cron.service", "failed", "simple"),
        ("kubelet.service", "activating", "simple"),
    ] {
        for s in ["active", "activating", "deactivating", "inactive", "failed"] {
            let v = if s == state { 1 } else { 0 };
            assert!(
                has(&t, &format!(r#"node_systemd_unit_state{{name="{name}",state="{s}",type="{kind}"}} {v}"#)),
                "{name} {s}:\n{t}"
            );
        }
    }
    assert!(has(&t, r#"node_systemd_unit_state{name="logrotate.timer",state="active",type=""} 1"#), "{t}");
    assert!(has(&t, r#"node_systemd_unit_state{name="shutdown.target",state="deactivating",type=""} 1"#));
    // Not loaded, or excluded by default (.mount, .device): not reported per unit...
    for gone in ["ghost.service", "boot.mount", "dev-sda.device"] {
        assert!(!t.contains(&format!(r#"name="{gone}""#)), "{gone}:\n{t}");
    }
    // ...but counted in the summary, which covers every unit.
    assert!(has(&t, r#"node_systemd_units{state="active"} 5"#), "{t}");
    assert!(has(&t, r#"node_systemd_units{state="inactive"} 1"#));
    assert!(has(&t, r#"node_systemd_units{state="failed"} 1"#));
    assert!(has(&t, r#"node_systemd_units{state="activating"} 1"#));
    assert!(has(&t, r#"node_systemd_units{state="deactivating"} 1"#));
    assert!(has(&t, "node_systemd_system_running 0"), "degraded is not running:\n{t}");
    assert!(has(&t, r#"node_systemd_version{version="252.33-1~deb12u1"} 252.33"#), "{t}");
    assert!(has(&t, r#"node_systemd_virtualization_info{virtualization_type="none"} 1"#));
    assert!(has(&t, r#"node_systemd_timer_last_trigger_seconds{name="logrotate.timer"} 1700000000.123456"#), "{t}");
    assert!(has(&t, r#"node_systemd_socket_accepted_connections_total{name="docker.socket"} 42"#));
    assert!(has(&t, r#"node_systemd_socket_current_connections{name="docker.socket"} 3"#));
    assert!(has(&t, r#"node_systemd_socket_refused_connections_total{name="docker.socket"} 1"#));
    assert!(t.contains("# TYPE node_systemd_socket_accepted_connections_total counter\n"));
    assert!(t.contains("# TYPE node_systemd_unit_state gauge\n"));
    assert!(t.contains("# HELP node_systemd_unit_state Systemd unit\n"));
    // The opt-in families are off by default, as upstream.
    for name in ["unit_start_time_seconds", "unit_tasks_current", "unit_tasks_max", "service_restart_total"] {
        assert!(!t.contains(&format!("node_systemd_{name}")), "{name} is opt-in:\n{t}");
    }
}

#[test]
fn opt_in_start_time_task_and_restart_metrics_as_upstream_flags() {
    let dir = tempfile::tempdir().unwrap();
    let _bus = bus_with_fake_systemd(dir.path());
    let mut cfg = config(dir.path());
    cfg.systemd.enable_start_time_metrics = true;
    cfg.systemd.enable_task_metrics = true;
    cfg.systemd.enable_restarts_metrics = true;
    let deadline = Instant::now() + Duration::from_secs(30);
    let t = loop {
        let t = render(&cfg);
        if has(&t, r#"node_scrape_collector_success{collector="systemd"} 1"#) || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(has(&t, r#"node_scrape_collector_success{collector="systemd"} 1"#), "{t}");
    // ActiveEnterTimestamp µs / 1e6 for an active unit; 0 for one that is not active, even
    // though systemd has an older timestamp for it (upstream does not ask).
    assert!(has(&t, r#"node_systemd_unit_start_time_seconds{name="sshd.service"} 1700000001.5"#), "{t}");
    assert!(has(&t, r#"node_systemd_unit_start_time_seconds{name="cron.service"} 0"#), "{t}");
    assert!(has(&t, r#"node_systemd_unit_start_time_seconds{name="kubelet.service"} 0"#), "{t}");
    // Tasks of services; u64::MAX means not counted / no limit and is left out.
    assert!(has(&t, r#"node_systemd_unit_tasks_current{name="sshd.service"} 5"#), "{t}");
    assert!(has(&t, r#"node_systemd_unit_tasks_max{name="sshd.service"} 4915"#), "{t}");
    assert!(!t.contains(r#"node_systemd_unit_tasks_current{name="kubelet.service"}"#), "{t}");
    assert!(!t.contains(r#"node_systemd_unit_tasks_max{name="kubelet.service"}"#), "{t}");
    assert!(has(&t, r#"node_systemd_service_restart_total{name="sshd.service"} 2"#), "{t}");
    assert!(has(&t, r#"node_systemd_service_restart_total{name="kubelet.service"} 7"#), "{t}");
    assert!(has(&t, r#"node_systemd_service_restart_total{name="cron.service"} 0"#), "{t}");
    assert!(!t.contains(r#"node_systemd_service_restart_total{name="docker.socket"}"#), "services only:\n{t}");
    assert!(t.contains("# TYPE node_systemd_service_restart_total counter\n"), "{t}");
    assert!(t.contains("# TYPE node_systemd_unit_start_time_seconds gauge\n"), "{t}");
    assert!(t.contains("# HELP node_systemd_unit_tasks_current Current number of tasks per Systemd unit\n"));
}

#[test]
fn unit_include_and_exclude_are_anchored_regexes() {
    let dir = tempfile::tempdir().unwrap();
    let _bus = bus_with_fake_systemd(dir.path());
    let mut cfg = config(dir.path());
    cfg.systemd.unit_include = "(sshd|cron)\\.service|boot.mount".into();
    cfg.systemd.unit_exclude = "cron.*".into();
    let t = render(&cfg);
    assert!(has(&t, r#"node_scrape_collector_success{collector="systemd"} 1"#), "{t}");
    assert!(
        t.contains(r#"name="sshd.service""#)
            && t.contains(r#"node_systemd_unit_state{name="boot.mount",state="active",type="ext4"} 1"#),
        "{t}"
    );
    assert!(!t.contains(r#"name="cron.service""#) && !t.contains(r#"name="kubelet.service""#));
    // The summary is over all units, filters or not.
    assert!(has(&t, r#"node_systemd_units{state="active"} 5"#));
}

#[test]
fn no_bus_socket_switches_the_collector_off_and_the_others_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.collectors.loadavg = true;
    cfg.procfs = Some("/proc".into());
    let c = NodeCollector::new(&cfg).expect("a missing bus socket is not a config error");
    assert_eq!(c.names(), ["loadavg"]);
    let t = render(&cfg);
    assert!(!t.contains("node_systemd_") && !t.contains(r#"collector="systemd""#), "{t}");
    assert!(has(&t, r#"node_scrape_collector_success{collector="loadavg"} 1"#), "{t}");
}
