//! The OTLP sink (logs and metrics) against an in-process OTLP/HTTP receiver that decodes the
//! real protobuf, gzip included, and answers success, partial success, 429 and 503.

mod support;

use std::sync::Mutex;
use std::time::Duration;
use support::otlp::{Answer, OtlpServer, attr, attrs};
use support::server::Reply;
use support::{Running, context, event, eventually, metric, source};
use vigil::event::Stream;
use vigil::metrics::ship::{SendOutcome, Snapshot};
use vigil::sinks::otlp::OtlpConfig;
use vigil::sinks::otlp::logs::OtlpSink;
use vigil::sinks::otlp::proto::logs::v1::SeverityNumber;
use vigil::sinks::otlp::proto::metrics::v1::metric;

const TS: i64 = 1_795_847_533_000_000_000;

fn config(url: &str, extra: &str) -> OtlpConfig {
    let yaml = format!(
        "name: otel\nendpoint: '{url}'\nretry: {{initial_backoff: 20ms, max_backoff: 3s}}\nbatch: {{timeout: 20ms}}\n{extra}"
    );
    serde_yaml_ng::from_str(&yaml).unwrap()
}

fn sink(c: &OtlpConfig) -> (Box<dyn vigil::sinks::Sink>, prometheus::Registry) {
    let (ctx, registry) = context();
    (Box::new(OtlpSink::new(c, &ctx).unwrap()), registry)
}

/// Replies popped from the end, then `Answer::Ok`.
fn scripted(replies: Vec<Answer>) -> support::otlp::Script {
    let replies = Mutex::new(replies);
    Box::new(move |_| replies.lock().unwrap().pop().unwrap_or(Answer::Ok))
}

#[tokio::test]
async fn logs_arrive_gzipped_one_resource_per_container_with_k8s_attributes() {
    let server = OtlpServer::start().await;
    // A path prefix and a query are kept, as for Loki 3's `/otlp`.
    let c = config(
        &format!("{}/otlp?tenant=a", server.url()),
        "resource_attributes: {k8s.cluster.name: prod}\nheaders: {X-Scope-OrgID: team-a}\nmax_in_flight: 1",
    );
    let (s, registry) = sink(&c);
    let mut run = Running::start(s, 2);
    let web = source("shop", "web", "nginx");
    let db = source("shop", "db", "postgres");
    run.send(vec![
        event(&web, 1, 0, TS, Stream::Stdout, "GET /"),
        event(&db, 2, 0, TS + 1, Stream::Stderr, "checkpoint starting"),
        event(&web, 1, 10, TS + 2, Stream::Stderr, "upstream timed out"),
    ])
    .await;
    assert_eq!(run.finish().await, vec![0]);
    assert!(server.bad_requests().is_empty(), "{:?}", server.bad_requests());
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.path, "/otlp/v1/logs");
    assert_eq!(r.query.as_deref(), Some("tenant=a"));
    assert_eq!(r.content_encoding.as_deref(), Some("gzip"), "gzip is the default");
    assert_eq!(r.headers.get("x-scope-orgid").unwrap(), "team-a");
    let logs = r.logs();
    assert_eq!(logs.resource_logs.len(), 2, "one resource per container");
    let web_res = &logs.resource_logs[0];
    assert_eq!(
        attrs(&web_res.resource.as_ref().unwrap().attributes),
        [
            ("k8s.namespace.name", "shop"),
            ("k8s.pod.name", "web"),
            ("k8s.pod.uid", "uid-web"),
            ("k8s.container.name", "nginx"),
            ("k8s.container.restart_count", "int:0"),
            ("k8s.node.name", "node-a"),
            ("container.id", "cid-web-nginx"),
            ("k8s.cluster.name", "prod"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    let recs = &web_res.scope_logs[0].log_records;
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].time_unix_nano, TS as u64);
    assert_eq!(recs[1].time_unix_nano, TS as u64 + 2);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    assert!(
        recs[0].observed_time_unix_nano <= now && recs[0].observed_time_unix_nano > now - 60_000_000_000,
        "observed time is the time vigil took the line"
    );
    assert_eq!(attr(&recs[1].attributes, "log.iostream").as_deref(), Some("stderr"));
    assert_eq!(attr(&recs[1].attributes, "log.file.path").as_deref(), Some(web.file.as_str()));
    assert_eq!(recs[1].severity_number, SeverityNumber::Unspecified as i32);
    assert_eq!(server.stored_bodies(), ["GET /", "upstream timed out", "checkpoint starting"]);
    assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"otel\"}"), 3.0);
    assert_eq!(metric(&registry, "vigil_sink_healthy{sink=\"otel\"}"), 1.0);
}

#[tokio::test]
async fn lokis_204_with_an_empty_body_is_success() {
    // Loki 3's `/otlp/v1/logs` answers 204 No Content with no body (pkg/distributor/http.go).
    let server = OtlpServer::scripted(Box::new(|_| Answer::NoContent)).await;
    let (s, registry) = sink(&config(&server.url(), "compression: none"));
    let mut run = Running::start(s, 1);
    let src = source("ns", "p", "c");
    run.send(vec![event(&src, 1, 0, TS, Stream::Stdout, "one"), event(&src, 1, 5, TS, Stream::Stdout, "two")]).await;
    assert_eq!(run.finish().await, vec![0]);
    assert_eq!(server.requests()[0].content_encoding, None);
    assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"otel\"}"), 2.0);
    assert_eq!(metric(&registry, "vigil_sink_retries_total{sink=\"otel\"}"), 0.0);
}

#[tokio::test]
async fn a_partial_success_counts_the_rejected_records_and_is_not_retried() {
    let server = OtlpServer::scripted(scripted(vec![Answer::Partial {
        rejected: 2,
        message: "2 log records exceed the line size limit".into(),
    }]))
    .await;
    let (s, registry) = sink(&config(&server.url(), ""));
    let mut run = Running::start(s, 1);
    let src = source("ns", "p", "c");
    run.send((0..5).map(|i| event(&src, 1, i * 10, TS + i as i64, Stream::Stdout, &format!("l{i}"))).collect()).await;
    assert_eq!(run.finish().await, vec![0], "acked: the rejected records are counted, not retried");
    assert_eq!(server.requests().len(), 1, "OTLP forbids retrying a partial success");
    assert_eq!(metric(&registry, "vigil_sink_events_rejected_total{reason=\"partial_success\",sink=\"otel\"}"), 2.0);
    assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"otel\"}"), 3.0);
    assert_eq!(metric(&registry, "vigil_sink_healthy{sink=\"otel\"}"), 1.0);
}

#[tokio::test]
async fn throttling_and_gateway_errors_are_retried_honouring_retry_after() {
    // 429 with Retry-After: 1 (seconds), then 503, 502 and 504, then success.
    let server = OtlpServer::scripted(scripted(vec![
        Answer::Refuse(Reply::status(504, "gateway timeout")),
        Answer::Refuse(Reply::status(502, "bad gateway")),
        Answer::Refuse(Reply::status(503, "unavailable")),
        Answer::Refuse(Reply::status(429, "rate limited").with_header("Retry-After", "1")),
    ]))
    .await;
    let (s, registry) = sink(&config(&server.url(), ""));
    let mut run = Running::start(s, 1);
    let src = source("ns", "p", "c");
    run.send(vec![event(&src, 1, 0, TS, Stream::Stdout, "must arrive once")]).await;
    assert_eq!(run.finish().await, vec![0]);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 5);
    assert!(reqs.iter().all(|r| r.records() == 1), "every try resends the same record");
    assert_eq!(server.stored_bodies(), ["must arrive once"]);
    // The backoff starts at 20ms; only Retry-After explains a second between the first two.
    let gap = reqs[1].at - reqs[0].at;
    assert!(gap >= Duration::from_millis(950), "Retry-After: 1 was not honoured: {gap:?}");
    assert_eq!(metric(&registry, "vigil_sink_retries_total{sink=\"otel\"}"), 4.0);
    assert_eq!(metric(&registry, "vigil_sink_requests_total{sink=\"otel\",status=\"5xx\"}"), 3.0);
    assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"otel\"}"), 1.0);
    assert_eq!(metric(&registry, "vigil_sink_healthy{sink=\"otel\"}"), 1.0);
}

#[tokio::test]
async fn observed_time_is_when_the_line_arrived_not_when_a_throttled_lane_finally_sent_it() {
    // The first request is throttled for 2 s; a line arriving meanwhile waits behind it in the
    // same lane and must keep the time it arrived as its observed time.
    let server = OtlpServer::scripted(scripted(vec![Answer::Refuse(
        Reply::status(429, "slow down").with_header("Retry-After", "2"),
    )]))
    .await;
    let (s, _registry) = sink(&config(&server.url(), "max_in_flight: 1"));
    let mut run = Running::start(s, 4);
    let src = source("ns", "p", "c");
    run.send(vec![event(&src, 1, 0, TS, Stream::Stdout, "first")]).await;
    eventually(10, "the first request throttled", || server.requests().len() == 1).await;
    let before = support::otlp::unix_nanos();
    run.send(vec![event(&src, 1, 10, TS, Stream::Stdout, "second")]).await;
    assert_eq!(run.finish().await, vec![0, 1]);
    let reqs = server.requests();
    let (req, rec) = reqs
        .iter()
        .find_map(|r| {
            let rec = r.logs().resource_logs[0].scope_logs[0].log_records.iter().find(|rec| {
                matches!(rec.body.as_ref().and_then(|b| b.value.as_ref()),
                    Some(vigil::sinks::otlp::proto::common::v1::any_value::Value::StringValue(s)) if s == "second")
            })?;
            Some((r, rec.clone()))
        })
        .expect("the second line was sent");
    assert!(rec.observed_time_unix_nano >= before, "observed before the line existed");
    assert!(
        rec.observed_time_unix_nano + 1_000_000_000 < req.at_unix_nanos,
        "observed time {} is the send time ({}), not the arrival",
        rec.observed_time_unix_nano,
        req.at_unix_nanos
    );
}

#[tokio::test]
async fn a_400_is_rejected_counted_and_acked() {
    let server = OtlpServer::scripted(scripted(vec![Answer::Refuse(Reply::status(400, "invalid resource"))])).await;
    let (s, registry) = sink(&config(&server.url(), "max_in_flight: 1"));
    let mut run = Running::start(s, 1);
    let src = source("ns", "p", "c");
    run.send(vec![event(&src, 1, 0, TS, Stream::Stdout, "bad")]).await;
    eventually(10, "the first request answered", || {
        metric(&registry, "vigil_sink_requests_total{sink=\"otel\",status=\"4xx\"}") == 1.0
    })
    .await;
    run.send(vec![event(&src, 1, 10, TS, Stream::Stdout, "good")]).await;
    assert_eq!(run.finish().await, vec![0, 1]);
    assert_eq!(server.requests().len(), 2, "the 400 was not retried");
    assert_eq!(server.stored_bodies(), ["good"]);
    assert_eq!(metric(&registry, "vigil_sink_events_rejected_total{reason=\"bad_request\",sink=\"otel\"}"), 1.0);
}

#[tokio::test]
async fn severity_from_stream_marks_stderr_warn() {
    let server = OtlpServer::start().await;
    let (s, _registry) = sink(&config(&server.url(), "severity_from_stream: true"));
    let mut run = Running::start(s, 1);
    let src = source("ns", "p", "c");
    run.send(vec![event(&src, 1, 0, TS, Stream::Stderr, "err"), event(&src, 1, 5, TS, Stream::Stdout, "out")]).await;
    run.finish().await;
    let reqs = server.requests();
    let recs = &reqs[0].logs().resource_logs[0].scope_logs[0].log_records;
    assert_eq!((recs[0].severity_number, recs[0].severity_text.as_str()), (SeverityNumber::Warn as i32, "WARN"));
    assert_eq!((recs[1].severity_number, recs[1].severity_text.as_str()), (0, ""));
}

fn snapshot() -> Snapshot {
    let r = prometheus::Registry::new();
    let c = prometheus::IntCounterVec::new(prometheus::Opts::new("vigil_demo_total", "demo"), &["sink"]).unwrap();
    c.with_label_values(&["a"]).inc_by(7);
    c.with_label_values(&["b"]).inc_by(1);
    r.register(Box::new(c)).unwrap();
    let g = prometheus::Gauge::new("node_load1", "load").unwrap();
    g.set(0.25);
    r.register(Box::new(g)).unwrap();
    Snapshot { timestamp_ms: 1_795_847_533_000, families: r.gather(), node: "node-a".into() }
}

#[tokio::test]
async fn metrics_arrive_as_otlp_sums_and_gauges_and_partial_success_counts_as_rejected() {
    let server = OtlpServer::scripted(scripted(vec![
        Answer::Partial { rejected: 1, message: "out of order".into() },
        Answer::Refuse(Reply::status(503, "unavailable").with_header("Retry-After", "2")),
    ]))
    .await;
    let c = config(&format!("{}/otlp", server.url()), "logs: false\nresource_attributes: {k8s.cluster.name: prod}");
    let (ctx, registry) = context();
    let sink = vigil::sinks::build_metrics(&vigil::sinks::SinkConfig::Otlp(Box::new(c)), &ctx).unwrap();
    let batches = sink.encode(&snapshot());
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].samples, 3);
    match sink.send(&batches[0]).await {
        SendOutcome::Retry { delivered: 0, retry_after, .. } => assert_eq!(retry_after, Some(Duration::from_secs(2))),
        other => panic!("503 should be retried: {other:?}"),
    }
    match sink.send(&batches[0]).await {
        SendOutcome::Done { delivered, rejected } => assert_eq!((delivered, rejected), (2, 1)),
        other => panic!("a partial success is final: {other:?}"),
    }
    assert!(server.bad_requests().is_empty(), "{:?}", server.bad_requests());
    let reqs = server.requests();
    assert_eq!(reqs[1].path, "/otlp/v1/metrics");
    assert_eq!(reqs[1].content_encoding.as_deref(), Some("gzip"));
    let support::otlp::Export::Metrics(m) = &reqs[1].export else { panic!("not metrics") };
    let rm = &m.resource_metrics[0];
    let res = &rm.resource.as_ref().unwrap().attributes;
    assert_eq!(attr(res, "host.name").as_deref(), Some("node-a"));
    assert_eq!(attr(res, "k8s.node.name").as_deref(), Some("node-a"));
    assert_eq!(attr(res, "k8s.cluster.name").as_deref(), Some("prod"));
    let metrics = &rm.scope_metrics[0].metrics;
    let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["node_load1", "vigil_demo_total"]);
    match &metrics[1].data {
        Some(metric::Data::Sum(s)) => {
            assert!(s.is_monotonic);
            assert_eq!(s.data_points.len(), 2);
            assert_eq!(attr(&s.data_points[0].attributes, "sink").as_deref(), Some("a"));
            assert_eq!(s.data_points[0].time_unix_nano, 1_795_847_533_000_000_000);
        }
        other => panic!("a counter should be a monotonic Sum: {other:?}"),
    }
    assert_eq!(metric(&registry, "vigil_sink_retries_total{sink=\"otel\"}"), 1.0);
}

#[test]
fn a_metrics_only_otlp_sink_must_be_listed_under_metrics_ship() {
    let yaml = "node_name: n\nsinks:\n  - {name: mimir, type: otlp, endpoint: 'http://mimir:8080/otlp', logs: false}\n";
    let e = vigil::config::Config::from_yaml(yaml, &|_| None).unwrap_err().to_string();
    assert!(e.contains("sinks[0]: sink 'mimir' of type otlp carries metrics only"), "{e}");
    let ok = format!("{yaml}metrics:\n  ship:\n    sinks: [mimir]\n");
    let c = vigil::config::Config::from_yaml(&ok, &|_| None).unwrap();
    assert!(!c.sinks[0].carries_logs() && c.sinks[0].carries_metrics());
    let grpc = "node_name: n\nsinks:\n  - {name: o, type: otlp, endpoint: 'http://c:4317', protocol: grpc}\n";
    let e = vigil::config::Config::from_yaml(grpc, &|_| None).unwrap_err().to_string();
    assert!(e.contains("sinks[0].protocol: 'grpc' is not supported; use http/protobuf"), "{e}");
}

/// The value of the first data point of metric `name` among the metrics requests, if any.
fn shipped_value(server: &OtlpServer, name: &str) -> Option<f64> {
    use vigil::sinks::otlp::proto::metrics::v1::number_data_point::Value;
    server.requests().iter().rev().find_map(|r| {
        let support::otlp::Export::Metrics(m) = &r.export else { return None };
        let found = m
            .resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|s| &s.metrics)
            .find(|m| m.name == name)?;
        let point = match found.data.as_ref()? {
            metric::Data::Gauge(g) => g.data_points.first()?,
            metric::Data::Sum(s) => s.data_points.first()?,
            _ => return None,
        };
        match point.value? {
            Value::AsDouble(v) => Some(v),
            Value::AsInt(v) => Some(v as f64),
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binary_ships_the_sample_node_logs_and_metrics_over_otlp() {
    let server = OtlpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port()).parse().unwrap();
    let node = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/node");
    let cfg = format!(
        r#"
node_name: example-node
sources:
  containers:
    include:
      - {node}/var/log/pods/*/*/*.log
      - {node}/var/log/containers/*.log
      - {node}/var/lib/docker/containers/*/*-json.log
    read_from: beginning
    checkpoint_dir: {cp}
sinks:
  - name: otel
    type: otlp
    endpoint: {url}
    resource_attributes: {{k8s.cluster.name: e2e}}
    batch: {{timeout: 100ms}}
    retry: {{initial_backoff: 50ms, max_backoff: 300ms}}
metrics:
  listen: {addr}
  ship:
    interval: 1s
    sinks: [otel]
log:
  level: warn
"#,
        cp = dir.path().join("cp").display(),
        url = server.url(),
    );
    let mut vigil = support::Vigil::start(dir.path(), &cfg, addr);
    tokio::task::block_in_place(|| vigil.wait_ready(Duration::from_secs(20)));
    // 14 events in the sample node; the trailing partial line comes after partial_flush_timeout.
    eventually(30, "the sample node's 14 lines", || server.stored_bodies().len() >= 14).await;
    eventually(30, "a snapshot that counts them", || {
        shipped_value(&server, "vigil_sink_events_sent_total") == Some(14.0)
    })
    .await;
    assert!(server.bad_requests().is_empty(), "{:?}", server.bad_requests());
    let mut bodies = server.stored_bodies();
    assert_eq!(bodies.len(), 14, "{bodies:#?}");
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 14, "a line arrived twice");

    let reqs = server.requests();
    let nginx = reqs
        .iter()
        .filter(|r| r.path == "/v1/logs")
        .flat_map(|r| &r.logs().resource_logs)
        .find(|rl| attr(&rl.resource.as_ref().unwrap().attributes, "k8s.container.name").as_deref() == Some("nginx"))
        .expect("nginx's resource");
    let res = &nginx.resource.as_ref().unwrap().attributes;
    assert_eq!(attr(res, "k8s.namespace.name").as_deref(), Some("default"));
    assert_eq!(attr(res, "k8s.pod.name").as_deref(), Some("web-6b7f9c8d4-x2k9p"));
    assert_eq!(attr(res, "k8s.pod.uid").as_deref(), Some("7c1e2a3b-0d4f-4e5a-9b8c-1a2b3c4d5e6f"));
    assert_eq!(attr(res, "k8s.container.restart_count").as_deref(), Some("int:0"));
    assert_eq!(attr(res, "k8s.node.name").as_deref(), Some("example-node"));
    assert_eq!(attr(res, "k8s.cluster.name").as_deref(), Some("e2e"));
    let rec = &nginx.scope_logs[0].log_records[0];
    assert!(attr(&rec.attributes, "log.file.path").unwrap().contains("/var/log/pods/default_web-"), "{rec:?}");
    assert!(rec.time_unix_nano > 0 && rec.observed_time_unix_nano >= rec.time_unix_nano);

    // Metrics: vigil's own and the node's, from the resource of the node.
    assert_eq!(shipped_value(&server, "vigil_build_info"), Some(1.0));
    let metrics_req = reqs.iter().find(|r| r.path == "/v1/metrics").expect("a metrics request");
    let support::otlp::Export::Metrics(m) = &metrics_req.export else { unreachable!() };
    let res = &m.resource_metrics[0].resource.as_ref().unwrap().attributes;
    assert_eq!(attr(res, "host.name").as_deref(), Some("example-node"));
    assert_eq!(attr(res, "k8s.node.name").as_deref(), Some("example-node"));

    vigil.signal(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| vigil.wait_exit(Duration::from_secs(20))).expect("vigil exits");
    assert!(status.success(), "exit status {status:?}; stderr:\n{}", vigil.stderr());
}
