//! vigil's node metrics on the real machine against the real tools: Debian's
//! `prometheus-node-exporter` with the same collectors (same series, labels, types, HELP, and
//! values within tolerance for what moves between two scrapes), `promtool check metrics`, and a
//! real Prometheus that scrapes vigil and answers `node_memory_MemTotal_bytes` and
//! `rate(node_cpu_seconds_total[1m])`. The tools are installed by scripts/test.sh.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::node_collectors::{COLLECTORS, HARDWARE_COLLECTORS, OFF_BY_DEFAULT};
use support::prometheus::Prometheus;
use support::{Vigil, free_port, http_get, wait_for};
use vigil::metrics::node::config::{DEFAULT_DISK_DEVICE_EXCLUDE, DEFAULT_MOUNT_POINTS_EXCLUDE, DEFAULT_NETSTAT_FIELDS};

/// The hardware, scheduler and queue collectors, and processes (off by default in both,
/// switched on here in both). Where this machine lacks a tree (no /proc/schedstat or
/// /sys/class/hwmon in a sandbox), both must agree that there is no data.
fn hardware_collectors() -> impl Iterator<Item = &'static str> {
    HARDWARE_COLLECTORS.iter().chain(OFF_BY_DEFAULT).copied()
}

/// node_exporter, on 127.0.0.1, with only the given collectors (`start`: `COLLECTORS` and
/// `HARDWARE_COLLECTORS`), and with upstream's default excludes
/// (Debian's package patches them: it drops /run, /mnt, /media and lo by default). Killed on drop.
struct NodeExporter {
    child: Child,
    addr: SocketAddr,
}

impl NodeExporter {
    fn start() -> NodeExporter {
        let all: Vec<&str> = COLLECTORS.iter().copied().chain(hardware_collectors()).collect();
        Self::start_with(&all, &[])
    }

    /// With `collectors` only, and `args` added (paths, directories).
    fn start_with(collectors: &[&str], args: &[String]) -> NodeExporter {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = Command::new("prometheus-node-exporter");
        cmd.arg(format!("--web.listen-address={addr}")).arg("--collector.disable-defaults");
        for c in collectors {
            cmd.arg(format!("--collector.{c}"));
        }
        cmd.args(args);
        // Upstream's default; Debian's package may patch it like the others.
        cmd.arg("--collector.netclass.ignored-devices=^$");
        // The current release's default, which 1.5's lacks TCPOFOQueue and TCPRcvQDrop from.
        cmd.arg(format!("--collector.netstat.fields={DEFAULT_NETSTAT_FIELDS}"));
        cmd.arg(format!("--collector.filesystem.mount-points-exclude={DEFAULT_MOUNT_POINTS_EXCLUDE}"))
            .arg(format!("--collector.diskstats.device-exclude={DEFAULT_DISK_DEVICE_EXCLUDE}"))
            .arg("--collector.netdev.device-exclude=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .expect("prometheus-node-exporter (apt-get install prometheus-node-exporter; scripts/test.sh does it)");
        let mut ne = NodeExporter { child, addr };
        if wait_for(Duration::from_secs(20), || matches!(http_get(addr, "/metrics"), Ok((200, _))).then_some(()))
            .is_none()
        {
            let _ = ne.child.kill();
            panic!("node_exporter did not answer on {addr}");
        }
        ne
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn vigil_config(dir: &std::path::Path, addr: SocketAddr) -> String {
    format!(
        "sources:\n  containers:\n    include: [\"{d}/logs/*.log\"]\n    checkpoint_dir: {d}/checkpoints\n\
         sinks:\n  - name: out\n    type: file\n    path: {d}/events.ndjson\n\
         metrics:\n  listen: {addr}\n  node:\n    rootfs: /\n",
        d = dir.display()
    )
}

fn start_vigil(dir: &std::path::Path) -> Vigil {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config =
        vigil_config(dir, addr).replace("    rootfs: /\n", "    rootfs: /\n    collectors: {processes: true}\n");
    let mut v = Vigil::start(dir, &config, addr);
    v.wait_ready(Duration::from_secs(20));
    v
}

/// A parsed exposition: family → (type, help), series (`name{labels}`) → value.
#[derive(Default)]
struct Exposition {
    families: BTreeMap<String, (String, String)>,
    series: BTreeMap<String, f64>,
}

fn parse(text: &str) -> Exposition {
    let mut e = Exposition::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            e.families.entry(name.to_string()).or_default().1 = help.to_string();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            e.families.entry(name.to_string()).or_default().0 = kind.to_string();
        } else if !line.is_empty() && !line.starts_with('#') {
            let (series, value) = line.rsplit_once(' ').unwrap();
            e.series.insert(series.to_string(), value.parse().unwrap_or_else(|_| panic!("value in {line}")));
        }
    }
    e
}

fn family(series: &str) -> &str {
    series.split('{').next().unwrap()
}

/// Families node_exporter 1.5 emits with these collectors that vigil does not, and why.
fn not_in_vigil(name: &str) -> bool {
    name.starts_with("go_")
        || name.starts_with("process_")
        || name.starts_with("promhttp_")
        || name == "node_exporter_build_info"
        // Netlink-only; /proc/net/dev has no such column.
        || name == "node_network_receive_nohandler_total"
        // From udev properties, on machines that have them.
        || name.starts_with("node_disk_ata_")
        || name == "node_disk_filesystem_info"
        || name == "node_disk_device_mapper_info"
}

/// Series the current node_exporter release (which vigil follows) has and 1.5 does not:
/// `adminstate` in node_network_info (see `as_1_5`), the md sysfs gauges, PSI's irq line, four
/// softnet families, the average CPU frequency and three hwmon families.
/// (1.5's netstat filter also lacks two TcpExt fields: node_exporter is given the current one.)
fn newer_than_1_5(series: &str) -> bool {
    matches!(
        family(series),
        "node_md_raid_disks"
            | "node_md_degraded"
            | "node_pressure_irq_stalled_seconds_total"
            | "node_softnet_cpu_collision_total"
            | "node_softnet_received_rps_total"
            | "node_softnet_flow_limit_count_total"
            | "node_softnet_backlog_len"
            | "node_cpu_frequency_avg_hertz"
            | "node_hwmon_chip_names"
            | "node_hwmon_sensor_label"
            | "node_hwmon_freq_freq_mhz"
    )
}

/// vigil's series as node_exporter 1.5 writes it: node_network_info without `adminstate`.
fn as_1_5(series: &str) -> String {
    if !series.starts_with("node_network_info{") {
        return series.to_string();
    }
    let start = series.find("adminstate=\"").expect("node_network_info has adminstate");
    let end = start + series[start..].find("\",").expect("a label follows adminstate") + 2;
    format!("{}{}", &series[..start], &series[end..])
}

/// How far apart two scrapes taken a moment apart may be for a series.
fn tolerance(series: &str, a: f64, b: f64) -> f64 {
    let name = family(series);
    let rel = |r: f64| r * a.abs().max(b.abs());
    match name {
        "node_time_seconds" => 10.0,
        "node_load1" | "node_load5" | "node_load15" => 1.0,
        "node_procs_running" | "node_procs_blocked" => 50.0,
        // Counters of a busy machine: a fraction of a second of CPU time, some I/O and packets.
        n if n.starts_with("node_cpu_") => 2.0 + rel(0.001),
        n if n.starts_with("node_memory_") => (256.0 * 1024.0 * 1024.0f64).max(rel(0.05)),
        "node_filesystem_free_bytes" | "node_filesystem_avail_bytes" => (512.0 * 1024.0 * 1024.0f64).max(rel(0.01)),
        "node_filesystem_files_free" => 100_000.0,
        n if n.starts_with("node_disk_") || n.starts_with("node_network_") => 100.0f64.max(rel(0.05)),
        "node_context_switches_total" | "node_intr_total" | "node_forks_total" => 10_000.0f64.max(rel(0.05)),
        "node_scrape_collector_duration_seconds" => 5.0,
        // Other engineers' builds start and end processes between the two scrapes.
        n if n.starts_with("node_processes_")
            && n != "node_processes_max_threads"
            && n != "node_processes_max_processes" =>
        {
            300.0f64.max(rel(0.3))
        }
        n if n.starts_with("node_softnet_") => 1000.0f64.max(rel(0.05)),
        "node_udp_queues" => 1024.0 * 1024.0,
        "node_entropy_available_bits" => 256.0,
        // The kernel clock discipline moves between two reads: maxerror grows by 500 µs/s when
        // unsynchronised; offset and frequency follow NTP.
        n if n.starts_with("node_timex_") => 1.0f64.max(rel(0.01)),
        "node_filefd_allocated" | "node_nf_conntrack_entries" => 1000.0,
        // Sockets and packets of the machine (the scrapes themselves open connections). Socket
        // buffer memory moves with any traffic: the same 6.5 MB in pages (`_mem`) as in bytes.
        n if n.starts_with("node_sockstat_") => {
            100.0f64.max(rel(0.1))
                * if n.ends_with("_bytes") {
                    65536.0
                } else if n.ends_with("_mem") {
                    16.0
                } else {
                    1.0
                }
        }
        n if n.starts_with("node_netstat_") || n.starts_with("node_nf_conntrack_stat_") => 1000.0f64.max(rel(0.05)),
        n if n.starts_with("node_vmstat_") => 100_000.0f64.max(rel(0.05)),
        n if n.starts_with("node_pressure_") => 10.0f64.max(rel(0.01)),
        n if n.starts_with("node_network_carrier") => 2.0,
        _ => 0.0,
    }
}

#[test]
fn same_series_as_node_exporter_on_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = start_vigil(dir.path());
    let ne = NodeExporter::start();
    // node_exporter first and vigil second, twice, so the two scrapes are close in time.
    let _ = http_get(ne.addr, "/metrics");
    let (s, ne_text) = http_get(ne.addr, "/metrics").unwrap();
    assert_eq!(s, 200);
    let (s, vigil_text) = http_get(vigil.addr, "/metrics").unwrap();
    assert_eq!(s, 200);
    let (ne_exp, mut ours) = (parse(&ne_text), parse(&vigil_text));
    ours.series = ours.series.into_iter().map(|(k, v)| (as_1_5(&k), v)).collect();

    let mut problems = Vec::new();
    // Every node_exporter family is in vigil with the same type and HELP.
    for (name, (kind, help)) in &ne_exp.families {
        if not_in_vigil(name) {
            continue;
        }
        match ours.families.get(name) {
            None => problems.push(format!("family {name} missing")),
            Some((k, h)) => {
                if k != kind {
                    problems.push(format!("{name}: type {k}, node_exporter {kind}"));
                }
                if h != help {
                    problems.push(format!("{name}: HELP '{h}', node_exporter '{help}'"));
                }
            }
        }
    }
    // Every node_exporter series (names and labels) is in vigil, with a close value.
    let mut compared = 0;
    for (series, want) in &ne_exp.series {
        if not_in_vigil(family(series)) {
            continue;
        }
        compared += 1;
        // A process state seen in one scrape only (a zombie reaped between them) reads as 0.
        let transient = matches!(family(series), "node_processes_state" | "node_processes_threads_state");
        match ours.series.get(series).or(transient.then_some(&0.0)) {
            None => problems.push(format!("series {series} missing (node_exporter: {want})")),
            Some(got) => {
                let tol = tolerance(series, *got, *want);
                if (got - want).abs() > tol {
                    problems.push(format!("{series}: vigil {got}, node_exporter {want} (tolerance {tol})"));
                }
            }
        }
    }
    // And vigil has no node_* series node_exporter lacks (no invented devices or mounts).
    for series in ours.series.keys().filter(|s| s.starts_with("node_") && !newer_than_1_5(s)) {
        let transient = matches!(family(series), "node_processes_state" | "node_processes_threads_state");
        if !ne_exp.series.contains_key(series) && !not_in_vigil(family(series)) && !transient {
            problems.push(format!("extra series {series}"));
        }
    }
    assert!(problems.is_empty(), "vigil vs node_exporter:\n{}", problems.join("\n"));
    assert!(compared > 100, "only {compared} node_exporter series compared:\n{ne_text}");
    // The issue's series are there at all (a machine with no disk would pass vacuously).
    for name in [
        "node_cpu_seconds_total",
        "node_memory_MemTotal_bytes",
        "node_memory_MemAvailable_bytes",
        "node_load1",
        "node_filesystem_size_bytes",
        "node_filesystem_avail_bytes",
        "node_network_receive_bytes_total",
        "node_boot_time_seconds",
        "node_uname_info",
    ] {
        assert!(ours.families.contains_key(name), "{name} missing");
    }
    // Where this machine lacks a subsystem (no md arrays, no bonding), both say so the same way:
    // success 0 and no series; the collectors that have data succeed in both.
    for c in COLLECTORS {
        let key = format!("node_scrape_collector_success{{collector=\"{c}\"}}");
        assert_eq!(ours.series.get(&key), ne_exp.series.get(&key), "{c}");
    }
    for c in ["cpu", "meminfo", "filefd", "timex", "vmstat", "textfile", "netclass", "netstat", "sockstat"] {
        assert_eq!(ours.series.get(&format!("node_scrape_collector_success{{collector=\"{c}\"}}")), Some(&1.0), "{c}");
    }
    // The hardware collectors ran in both and agree on success (1, or 0 for "no data" where
    // this machine lacks the tree); the values were compared above.
    for c in hardware_collectors() {
        let key = format!("node_scrape_collector_success{{collector=\"{c}\"}}");
        assert!(ours.series.contains_key(&key), "{c} did not run");
        assert_eq!(ours.series.get(&key), ne_exp.series.get(&key), "{c}");
    }
    for name in
        ["node_entropy_available_bits", "node_softnet_processed_total", "node_udp_queues", "node_processes_pids"]
    {
        assert!(ours.families.contains_key(name), "{name} missing");
    }
}

/// promtool's problems with an exposition, one per line; panics on a parse error.
fn promtool_problems(text: &str) -> BTreeSet<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus; scripts/test.sh does it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    match out.status.code() {
        Some(0) => BTreeSet::new(),
        // 3: lint problems only; anything else is a format error.
        Some(3) => all.lines().filter(|l| !l.is_empty()).map(str::to_string).collect(),
        code => panic!("promtool check metrics failed ({code:?}):\n{all}"),
    }
}

#[test]
fn metrics_pass_promtool_check_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = start_vigil(dir.path());
    let ne = NodeExporter::start();
    let (_, text) = http_get(vigil.addr, "/metrics").unwrap();
    let (_, ne_text) = http_get(ne.addr, "/metrics").unwrap();
    assert!(text.contains("node_cpu_seconds_total{"), "{text}");
    let ours = promtool_problems(&text);
    let theirs = promtool_problems(&ne_text);
    // node_exporter's own names (node_memory_MemTotal_bytes...) fail promtool's snake_case lint;
    // they are the contract, so the only problems allowed are those node_exporter has too.
    let extra: Vec<_> = ours.difference(&theirs).collect();
    assert!(extra.is_empty(), "promtool problems node_exporter does not have: {extra:#?}");
}

/// The file-reading collectors of issue 12 on the fixture tree (tests/fixtures/node) and a
/// textfile directory with a good and a rejected file: node_exporter 1.5 and vigil give the
/// same series with the same values, HELP and TYPE, except what the current release added.
#[test]
fn node_exporter_agrees_on_the_fixture_tree() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node");
    let textfiles = tempfile::tempdir().unwrap();
    std::fs::write(
        textfiles.path().join("jobs.prom"),
        "# HELP job_last_run_seconds Last run.\n# TYPE job_last_run_seconds gauge\njob_last_run_seconds{job=\"a\"} 1.7e9\n\
         # TYPE job_duration_seconds summary\njob_duration_seconds{quantile=\"0.5\"} 2\njob_duration_seconds_sum 9\njob_duration_seconds_count 4\n\
         job_plain 3\n",
    )
    .unwrap();
    std::fs::write(textfiles.path().join("stamped.prom"), "job_stamped 1 1700000000000\n").unwrap();
    let collectors = [
        "filefd",
        "conntrack",
        "vmstat",
        "textfile",
        "netclass",
        "mdadm",
        "bonding",
        "pressure",
        "netstat",
        "sockstat",
    ];
    let ne = NodeExporter::start_with(
        &collectors,
        &[
            format!("--path.procfs={}", fixture.join("proc").display()),
            format!("--path.sysfs={}", fixture.join("sys").display()),
            format!("--collector.textfile.directory={}", textfiles.path().display()),
        ],
    );
    let (_, ne_text) = http_get(ne.addr, "/metrics").unwrap();

    let mut cfg = vigil::metrics::node::config::NodeMetricsConfig {
        rootfs: fixture.display().to_string(),
        textfile_directory: Some(textfiles.path().display().to_string()),
        ..Default::default()
    };
    let mut on = serde_json::to_value(&cfg.collectors).unwrap();
    for (name, v) in on.as_object_mut().unwrap() {
        *v = collectors.contains(&name.as_str()).into();
    }
    cfg.collectors = serde_json::from_value(on).unwrap();
    let registry = prometheus::Registry::new();
    registry.register(Box::new(vigil::metrics::node::NodeCollector::new(&cfg).unwrap())).unwrap();
    let vigil_text = String::from_utf8(vigil::server::render(&registry)).unwrap();

    let (theirs, ours) = (parse(&ne_text), parse(&vigil_text));
    let ours_1_5: BTreeMap<String, f64> = ours.series.iter().map(|(k, v)| (as_1_5(k), *v)).collect();
    let skip = |s: &str| not_in_vigil(family(s)) || family(s) == "node_scrape_collector_duration_seconds";
    let mut problems = Vec::new();
    for (series, want) in theirs.series.iter().filter(|(s, _)| !skip(s)) {
        match ours_1_5.get(series) {
            Some(got) if got == want => {}
            got => problems.push(format!("{series}: vigil {got:?}, node_exporter {want}")),
        }
    }
    for series in ours_1_5.keys().filter(|s| !skip(s) && !s.starts_with("vigil_") && !newer_than_1_5(s)) {
        if !theirs.series.contains_key(series) {
            problems.push(format!("extra series {series}"));
        }
    }
    for (name, kind_help) in theirs.families.iter().filter(|(n, _)| !skip(n)) {
        if ours.families.get(name) != Some(kind_help) {
            problems.push(format!("{name}: vigil {:?}, node_exporter {kind_help:?}", ours.families.get(name)));
        }
    }
    assert!(problems.is_empty(), "vigil vs node_exporter on the fixture tree:\n{}", problems.join("\n"));
    // The tree exercises every collector: nothing vacuous.
    for c in collectors {
        assert_eq!(ours.series.get(&format!("node_scrape_collector_success{{collector=\"{c}\"}}")), Some(&1.0), "{c}");
    }
    assert_eq!(ours.series.get("node_textfile_scrape_error"), Some(&1.0));
    assert!(theirs.series.len() > 150, "{ne_text}");
}

#[test]
fn prometheus_scrapes_vigil_and_answers_node_queries() {
    let dir = tempfile::tempdir().unwrap();
    let vigil = start_vigil(dir.path());
    let prom = Prometheus::start(
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: vigil\n    static_configs:\n      - targets: ['{}']\n",
            vigil.addr
        ),
        &[],
    );
    let mem = prom.query_until_nonempty("node_memory_MemTotal_bytes");
    // The node mixin's instance picker: label_values(node_exporter_build_info, instance).
    let build = prom.query_until_nonempty("node_exporter_build_info");
    assert_eq!(build[0]["metric"]["instance"], vigil.addr.to_string(), "{build:?}");
    assert_eq!(build[0]["metric"]["vigil_version"], env!("CARGO_PKG_VERSION"), "{build:?}");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: f64 = meminfo.lines().next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let got: f64 = mem[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert_eq!(got, kb * 1024.0);
    // rate over [1m] needs two samples within the minute: a couple of 1 s scrapes.
    let rates = prom.query_until_nonempty("rate(node_cpu_seconds_total[1m])");
    let cpus = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    assert_eq!(rates.len(), cpus * 8, "one rate per cpu and mode: {rates:?}");
    let values: Vec<f64> = rates.iter().map(|r| r["value"][1].as_str().unwrap().parse().unwrap()).collect();
    assert!(values.iter().all(|v| *v >= 0.0), "{rates:?}");
    assert!(values.iter().sum::<f64>() > 0.0, "CPU time moved: {rates:?}");
    // With a few seconds of data, rate over [1m] is extrapolated over the window; irate reads
    // the last two samples, and across all modes each CPU accounts for one second per second.
    let irates = prom.query_until_nonempty("sum(irate(node_cpu_seconds_total[1m]))");
    let total: f64 = irates[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(total > 0.5 * cpus as f64 && total < 1.5 * cpus as f64, "CPU seconds per second {total} for {cpus} cpus");
    drop(vigil);
}

/// The real binary honours `metrics.node`: off means no node series at all; a rootfs makes it
/// read that tree (here the fixture node), end to end through the HTTP server.
#[test]
fn the_binary_honours_enabled_and_rootfs() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let off = vigil_config(dir.path(), addr).replace("    rootfs: /\n", "    enabled: false\n");
    let mut v = Vigil::start(dir.path(), &off, addr);
    v.wait_ready(Duration::from_secs(20));
    let (_, text) = http_get(addr, "/metrics").unwrap();
    assert!(text.contains("vigil_build_info"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("node_")), "{text}");
    drop(v);

    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node");
    let cfg = vigil_config(dir.path(), addr).replace(
        "    rootfs: /\n",
        &format!("    rootfs: {}\n    collectors: {{filesystem: false}}\n", fixture.display()),
    );
    let mut v = Vigil::start(dir.path(), &cfg, addr);
    v.wait_ready(Duration::from_secs(20));
    let (_, text) = http_get(addr, "/metrics").unwrap();
    let e = parse(&text);
    assert_eq!(e.series.get("node_boot_time_seconds"), Some(&1.7e9), "{text}");
    assert_eq!(e.series.get("node_memory_MemTotal_bytes"), Some(&(16_384_000.0 * 1024.0)));
    assert_eq!(e.series.get(r#"node_network_receive_bytes_total{device="eth0"}"#), Some(&170_444_648.0));
    assert!(!text.contains("node_filesystem_"));
}
