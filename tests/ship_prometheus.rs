//! The real binary pushes its metrics to a real Prometheus (Debian's package, started on
//! 127.0.0.1 with `--web.enable-remote-write-receiver` and a temp data dir), which stores them;
//! PromQL queries check what arrived, including across a receiver outage.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::prometheus::Prometheus;
use support::{Vigil, free_port, wait_for};

const PROMETHEUS_YML: &str = "global:\n  scrape_interval: 1h\n";
const RECEIVER: &[&str] = &["--web.enable-remote-write-receiver"];

fn local(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A vigil config with a file log sink and a remote-write sink to `receiver`, shipping every
/// second. `extra` is appended to the remote-write sink's entry.
fn config(dir: &std::path::Path, node: &str, listen: SocketAddr, receiver: SocketAddr, extra: &str) -> String {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    format!(
        "node_name: {node}
sources:
  containers:
    include: ['{logs}/*.log']
    checkpoint_dir: {ckpt}
sinks:
  - name: out
    type: file
    path: {out}
  - name: central
    type: prometheus_remote_write
    endpoint: http://{receiver}/api/v1/write
    external_labels: {{cluster: e2e}}
    retry: {{initial_backoff: 100ms, max_backoff: 1s}}
{extra}
shutdown:
  grace_period: 3s
metrics:
  listen: {listen}
  ship:
    interval: 1s
    sinks: [central]
",
        logs = logs.display(),
        ckpt = dir.join("ckpt").display(),
        out = dir.join("events.ndjson").display(),
    )
}

/// The single value of an instant-query result.
fn value(result: &[serde_json::Value]) -> f64 {
    assert_eq!(result.len(), 1, "expected one series: {result:?}");
    result[0]["value"][1].as_str().unwrap().parse().unwrap()
}

fn meminfo_bytes(field: &str) -> f64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024.0
}

fn rss_bytes(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024.0
}

#[test]
fn vigil_pushes_its_metrics_into_a_real_prometheus() {
    let prom = Prometheus::start(PROMETHEUS_YML, RECEIVER);
    let dir = tempfile::tempdir().unwrap();
    let listen = local(free_port());
    let config = config(dir.path(), "ship-node", listen, prom.addr, "");
    let lines: String = (0..3).map(|i| format!("2026-11-28T06:12:13.123456789Z stdout F line {i}\n")).collect();
    std::fs::write(dir.path().join("logs/app.log"), lines).unwrap();
    let mut vigil = Vigil::start(dir.path(), &config, listen);
    vigil.wait_ready(Duration::from_secs(20));

    let build = prom.query_until_nonempty(r#"vigil_build_info{node="ship-node",instance="ship-node",cluster="e2e"}"#);
    assert_eq!(value(&build), 1.0);
    assert_eq!(build[0]["metric"]["version"], env!("CARGO_PKG_VERSION"));

    // The node's metrics, as node_exporter names them, with the node's value: MemTotal from
    // /proc/meminfo, in kB, times 1024.
    let mem = value(&prom.query_until_nonempty(r#"node_memory_MemTotal_bytes{node="ship-node",instance="ship-node"}"#));
    assert_eq!(mem, meminfo_bytes("MemTotal"));

    // A process metric with the right value: vigil's resident memory as the kernel reports it.
    let rss = value(&prom.query_until_nonempty(r#"process_resident_memory_bytes{node="ship-node"}"#));
    let now = rss_bytes(vigil.child.id());
    assert!(rss > now / 2.0 && rss < now * 2.0, "shipped RSS {rss} vs /proc {now}");

    // vigil's own pipeline counters travel too: the shipper counts what Prometheus accepted,
    // and that count reaches Prometheus in a later snapshot.
    let sent = wait_for(Duration::from_secs(30), || {
        let r = prom.query(r#"vigil_ship_samples_sent_total{node="ship-node",sink="central"}"#);
        (r.len() == 1 && value(&r) > 0.0).then(|| value(&r))
    })
    .unwrap_or_else(|| panic!("no vigil_ship_samples_sent_total > 0; vigil stderr:\n{}", vigil.stderr()));
    assert!(sent >= 10.0, "{sent}");
    // Histograms arrive expanded as a scrape stores them: the sink's own request latency.
    let inf = prom.query(r#"vigil_sink_request_duration_seconds_bucket{node="ship-node",sink="central",le="+Inf"}"#);
    assert!(value(&inf) >= 1.0, "{inf:?}");
    // One query, so both series come from the same snapshot: +Inf bucket == count.
    let diff = prom.query(
        r#"vigil_sink_request_duration_seconds_bucket{node="ship-node",sink="central",le="+Inf"}
           - ignoring(le) vigil_sink_request_duration_seconds_count{node="ship-node",sink="central"}"#,
    );
    assert_eq!(value(&diff), 0.0);
    let buckets = prom.query(r#"count(vigil_sink_request_duration_seconds_bucket{node="ship-node",sink="central"})"#);
    assert_eq!(value(&buckets), 13.0, "12 bounds and +Inf");

    // The log pipeline's counters travel too: the three lines written before start, read and
    // acknowledged by the file sink.
    let shipped = wait_for(Duration::from_secs(30), || {
        let r = prom.query(r#"vigil_lines_shipped_total{node="ship-node",cluster="e2e"}"#);
        (r.len() == 1 && value(&r) == 3.0).then_some(())
    });
    assert!(shipped.is_some(), "vigil_lines_shipped_total never reached 3; vigil stderr:\n{}", vigil.stderr());
    let dropped = prom.query(r#"sum(vigil_ship_samples_dropped_total{node="ship-node"})"#);
    assert_eq!(value(&dropped), 0.0);

    vigil.signal(libc::SIGTERM);
    assert!(vigil.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()), "{}", vigil.stderr());
}

#[test]
fn samples_from_a_receiver_outage_arrive_once_it_is_back_and_the_bound_drops_the_oldest() {
    // Prometheus' address is fixed now, but nothing listens there until later.
    let receiver = local(free_port());
    let dir = tempfile::tempdir().unwrap();
    let (roomy_dir, tight_dir) = (dir.path().join("roomy"), dir.path().join("tight"));
    std::fs::create_dir_all(&roomy_dir).unwrap();
    std::fs::create_dir_all(&tight_dir).unwrap();
    let (l1, l2) = (local(free_port()), local(free_port()));
    let mut roomy = Vigil::start(&roomy_dir, &config(&roomy_dir, "roomy-node", l1, receiver, ""), l1);
    // Room for about one snapshot only (vigil alone exports well over 20 series).
    let mut tight =
        Vigil::start(&tight_dir, &config(&tight_dir, "tight-node", l2, receiver, "    queue_max_samples: 20"), l2);
    roomy.wait_ready(Duration::from_secs(20));
    tight.wait_ready(Duration::from_secs(20));
    let down_from = unix_now();
    std::thread::sleep(Duration::from_secs(6));
    let back_at = unix_now();
    let prom = Prometheus::start_on(receiver, PROMETHEUS_YML, RECEIVER);

    // Wait until something newer than the outage is stored: the backlog went before it.
    let fresh = |node: &str| {
        let q = format!(r#"timestamp(vigil_uptime_seconds{{node="{node}"}})"#);
        wait_for(Duration::from_secs(30), || {
            let r = prom.query(&q);
            (r.len() == 1 && value(&r) > back_at + 1.0).then_some(())
        })
        .unwrap_or_else(|| panic!("no fresh sample from {node}; prometheus log:\n{}", prom.log()))
    };
    fresh("roomy-node");
    fresh("tight-node");

    let window = (back_at - down_from).ceil() as u64;
    let in_outage = |node: &str| {
        let q = format!(r#"count_over_time(vigil_uptime_seconds{{node="{node}"}}[{window}s])"#);
        let r = prom.query_at(&q, back_at);
        if r.is_empty() { 0.0 } else { value(&r) }
    };
    let roomy_n = in_outage("roomy-node");
    let tight_n = in_outage("tight-node");
    assert!(roomy_n >= 4.0, "samples from the {window}s outage stored for roomy-node: {roomy_n}");
    assert!(tight_n <= 2.0, "the tight queue kept only the newest snapshot: {tight_n}");

    // The values are those of their collection time: uptime rose by about a second each.
    let q = format!(r#"vigil_uptime_seconds{{node="roomy-node"}}[{window}s]"#);
    let m = prom.query_at(&q, back_at);
    let points: Vec<(f64, f64)> = m[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_f64().unwrap(), p[1].as_str().unwrap().parse().unwrap()))
        .collect();
    for w in points.windows(2) {
        let (dt, dv) = (w[1].0 - w[0].0, w[1].1 - w[0].1);
        assert!((dv - dt).abs() < 0.5, "uptime advanced {dv}s in {dt}s: {points:?}");
    }

    let dropped = wait_for(Duration::from_secs(30), || {
        let r = prom.query(r#"vigil_ship_samples_dropped_total{node="tight-node",reason="queue_full"}"#);
        (r.len() == 1 && value(&r) > 0.0).then(|| value(&r))
    });
    assert!(dropped.is_some(), "the tight queue's drops are counted and shipped");
    let roomy_dropped = prom.query(r#"sum(vigil_ship_samples_dropped_total{node="roomy-node"})"#);
    assert_eq!(value(&roomy_dropped), 0.0);
    for v in [&roomy, &tight] {
        v.signal(libc::SIGTERM);
    }
    for v in [&mut roomy, &mut tight] {
        assert!(v.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()), "{}", v.stderr());
    }
}
