//! Metric documents to Elasticsearch: the metrics shipper with an `elasticsearch` sink against
//! the in-process `_bulk` server (`create` semantics, per-item answers, scripted failures).

mod support;

use prometheus::{HistogramOpts, HistogramVec, IntCounter, Registry};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::es::{EsServer, RequestAnswer};
use support::series_value;
use tokio::net::TcpListener;
use vigil::metrics::ship::{MetricsSink, ShipMetrics, Shipper};
use vigil::sinks::SinkContext;
use vigil::sinks::elasticsearch::ElasticsearchConfig;
use vigil::sinks::es_metrics::EsMetricsSink;

/// A registry with `test_events_total` = 7, a histogram with one observation, the ship and
/// sink metrics; and the sink context built on it.
fn registry() -> (Registry, ShipMetrics, SinkContext) {
    let r = Registry::new();
    let c = IntCounter::new("test_events_total", "events").unwrap();
    c.inc_by(7);
    r.register(Box::new(c)).unwrap();
    let h = HistogramVec::new(HistogramOpts::new("test_latency_seconds", "latency").buckets(vec![0.5]), &["route"])
        .unwrap();
    h.with_label_values(&["/a"]).observe(0.25);
    r.register(Box::new(h)).unwrap();
    let m = ShipMetrics::register(&r).unwrap();
    let ctx = SinkContext::new(r.clone(), "node-a".into()).unwrap();
    (r, m, ctx)
}

fn sink(ctx: &SinkContext, url: &str, extra: &str) -> Arc<dyn MetricsSink> {
    let c: ElasticsearchConfig = serde_yaml_ng::from_str(&format!(
        "{{name: es, endpoint: '{url}', metrics_index: 'metrics-test-%Y.%m.%d', \
         retry: {{initial_backoff: 20ms, max_backoff: 200ms}}{extra}}}"
    ))
    .unwrap();
    let mut p = vigil::config::Problems::default();
    c.validate("sink", &mut p);
    assert!(p.0.is_empty(), "{:?}", p.0);
    EsMetricsSink::build(&c, ctx).unwrap()
}

/// Stored metric documents (every index starting with `metrics-test-`), in creation order.
fn stored(es: &EsServer) -> Vec<(String, String, Value)> {
    let s = es.state.lock().unwrap();
    s.order
        .iter()
        .filter(|k| k.0.starts_with("metrics-test-"))
        .map(|k| (k.0.clone(), k.1.clone(), s.stored[k].clone()))
        .collect()
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..1000 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} did not happen within 20 s");
}

fn find<'a>(docs: &'a [(String, String, Value)], name: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d.2["metric"]["name"] == name).map(|d| &d.2).collect()
}

async fn stop(shipper: Shipper) {
    shipper.shutdown(tokio::time::Instant::now() + Duration::from_secs(5)).await;
}

#[tokio::test]
async fn one_ecs_document_per_series_lands_in_the_dated_metrics_index() {
    let es = EsServer::start().await;
    let (r, m, ctx) = registry();
    let s = sink(&ctx, &es.url(), ", labels: {cluster: prod, app.kubernetes.io/name: vigil}");
    let before = chrono::Utc::now();
    let shipper = Shipper::start(Duration::from_secs(3600), r.clone(), "node-a".into(), vec![s], &m);
    let docs = eventually("the first snapshot", || {
        let d = stored(&es);
        (!d.is_empty() && series_value(&r, "vigil_ship_queue_samples", &[("sink", "es")]) == 0.0).then_some(d)
    })
    .await;
    stop(shipper).await;

    let index = &docs[0].0;
    assert_eq!(*index, format!("metrics-test-{}", before.format("%Y.%m.%d")));
    let counter = find(&docs, "test_events_total");
    assert_eq!(counter.len(), 1);
    let ts = counter[0]["@timestamp"].as_str().unwrap().to_string();
    assert_eq!(
        *counter[0],
        json!({
            "@timestamp": ts,
            "host": {"name": "node-a"},
            "agent": {"type": "vigil", "version": env!("CARGO_PKG_VERSION")},
            "metric": {"name": "test_events_total", "type": "counter", "value": 7.0},
            "labels": {"cluster": "prod", "app_kubernetes_io/name": "vigil"}
        })
    );
    let t = chrono::DateTime::parse_from_rfc3339(&ts).unwrap();
    assert!(t >= before - chrono::Duration::milliseconds(1) && t <= chrono::Utc::now(), "{ts}");
    // Histograms expand as a scrape stores them, with `le` among the labels.
    let buckets: Vec<(&str, f64)> = find(&docs, "test_latency_seconds_bucket")
        .iter()
        .map(|d| (d["labels"]["le"].as_str().unwrap(), d["metric"]["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(buckets, vec![("0.5", 1.0), ("+Inf", 1.0)]);
    assert_eq!(find(&docs, "test_latency_seconds_sum")[0]["labels"]["route"], "/a");
    // One collection time for the snapshot's documents (the first snapshot: before shutdown's).
    let first_ts: BTreeSet<&str> = docs.iter().map(|d| d.2["@timestamp"].as_str().unwrap()).collect();
    assert!(first_ts.contains(ts.as_str()));
    // Shutdown shipped a last snapshot: everything counted as sent is stored, once.
    let sent = series_value(&r, "vigil_ship_samples_sent_total", &[("sink", "es")]);
    assert_eq!(sent as usize, stored(&es).len(), "every shipped document is stored once");
    // Through the shared _bulk machinery: create actions with ids, gzip by default.
    let reqs = es.state.lock().unwrap().requests.clone();
    assert!(reqs.iter().all(|q| q.content_encoding.as_deref() == Some("gzip")));
    assert!(reqs.iter().flat_map(|q| &q.docs).all(|d| !d.id.starts_with("auto-")));
    assert_eq!(es.state.lock().unwrap().resent_stored, 0);
}

#[tokio::test]
async fn failed_items_alone_are_retried_and_mapping_rejections_are_counted() {
    // The counter's document fails with 429 twice; the histogram's _sum is refused (400).
    let tries = Arc::new(Mutex::new(0));
    let t = tries.clone();
    let es = EsServer::scripted(
        Box::new(|_| RequestAnswer::Process(Duration::ZERO)),
        Box::new(move |d| match d.source["metric"]["name"].as_str() {
            Some("test_events_total") => {
                let mut n = t.lock().unwrap();
                *n += 1;
                (*n <= 2).then(|| (429, "es_rejected_execution_exception".to_string()))
            }
            Some("test_latency_seconds_sum") => Some((400, "mapper_parsing_exception".to_string())),
            _ => None,
        }),
    )
    .await;
    let (r, m, ctx) = registry();
    let s = sink(&ctx, &es.url(), "");
    let shipper = Shipper::start(Duration::from_secs(3600), r.clone(), "node-a".into(), vec![s], &m);
    eventually("the counter document after its retries", || {
        (find(&stored(&es), "test_events_total").len() == 1
            && series_value(&r, "vigil_ship_queue_samples", &[("sink", "es")]) == 0.0)
            .then_some(())
    })
    .await;
    let requests = es.state.lock().unwrap().requests.clone();
    let tried = *tries.lock().unwrap();
    let sent = series_value(&r, "vigil_ship_samples_sent_total", &[("sink", "es")]);
    let dropped = series_value(&r, "vigil_ship_samples_dropped_total", &[("sink", "es"), ("reason", "rejected")]);
    let rejected =
        series_value(&r, "vigil_sink_events_rejected_total", &[("sink", "es"), ("reason", "mapper_parsing_exception")]);
    stop(shipper).await;

    assert_eq!(tried, 3, "the 429 item was sent three times");
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[1].docs.len(), 1, "a retry carries only the failed item: {:?}", requests[1].docs);
    assert_eq!(requests[1].docs[0].source["metric"]["name"], "test_events_total");
    assert!(find(&stored(&es), "test_latency_seconds_sum").is_empty());
    assert_eq!(dropped, 1.0, "the refused document is counted as dropped");
    assert_eq!(rejected, 1.0, "and as rejected by the shared bulk machinery, with its reason");
    let first = requests[0].docs.len() as f64;
    assert_eq!(sent, first - 1.0, "all but the rejected document delivered");
}

#[tokio::test]
async fn documents_from_an_outage_arrive_once_elasticsearch_is_back() {
    let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let (r, m, ctx) = registry();
    let s = sink(&ctx, &format!("http://{addr}"), "");
    let shipper = Shipper::start(Duration::from_secs(1), r.clone(), "node-a".into(), vec![s], &m);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let back = chrono::Utc::now();
    let es = EsServer::scripted_on(
        TcpListener::bind(addr).await.unwrap(),
        Box::new(|_| RequestAnswer::Process(Duration::ZERO)),
        Box::new(|_| None),
    );
    let stamps = eventually("the backlog and a fresh snapshot", || {
        let stamps: Vec<chrono::DateTime<chrono::FixedOffset>> = find(&stored(&es), "test_events_total")
            .iter()
            .map(|d| chrono::DateTime::parse_from_rfc3339(d["@timestamp"].as_str().unwrap()).unwrap())
            .collect();
        stamps.last().is_some_and(|t| *t > back).then_some(stamps)
    })
    .await;
    stop(shipper).await;
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "oldest first, each once: {stamps:?}");
    let during = stamps.iter().filter(|t| **t < back).count();
    assert!(during >= 3, "documents collected during the outage arrived: {stamps:?}");
    assert_eq!(series_value(&r, "vigil_ship_samples_dropped_total", &[("sink", "es"), ("reason", "queue_full")]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binary_ships_metric_documents_through_a_sink_that_also_carries_logs() {
    let es = EsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port()).parse().unwrap();
    let config = format!(
        "node_name: es-node
sources:
  containers:
    include: ['{logs}/*.log']
    checkpoint_dir: {ckpt}
sinks:
  - name: es
    type: elasticsearch
    endpoint: {url}
    metrics_index: metrics-test-%Y.%m.%d
    labels: {{cluster: e2e}}
shutdown:
  grace_period: 3s
metrics:
  listen: {listen}
  ship:
    interval: 1s
    sinks: [es]
",
        logs = logs.display(),
        ckpt = dir.path().join("ckpt").display(),
        url = es.url(),
    );
    let mut vigil = tokio::task::block_in_place(|| {
        let mut v = support::Vigil::start(dir.path(), &config, listen);
        v.wait_ready(Duration::from_secs(20));
        v
    });
    let docs = eventually("vigil's own metrics as documents", || {
        let d = stored(&es);
        (!find(&d, "vigil_build_info").is_empty() && !find(&d, "vigil_sink_request_duration_seconds_bucket").is_empty())
            .then_some(d)
    })
    .await;
    let build = find(&docs, "vigil_build_info")[0];
    assert_eq!(build["host"]["name"], "es-node");
    assert_eq!(build["labels"]["cluster"], "e2e");
    assert_eq!(build["labels"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(build["metric"]["value"], 1.0);
    // The sink's own request histogram, about the requests carrying these very documents.
    assert!(find(&docs, "vigil_sink_request_duration_seconds_bucket").iter().all(|d| d["labels"]["sink"] == "es"));
    vigil.signal(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| vigil.wait_exit(Duration::from_secs(10)));
    assert!(status.is_some_and(|s| s.success()), "{}", vigil.stderr());
}

/// Regression: a whole `_bulk` request refused with 401 (Elasticsearch with security on and a
/// rotated key: `security_exception`, "unable to authenticate user") dropped the snapshot's
/// documents as `rejected`. Metric documents follow the log sinks' rules: retried, then stored.
#[tokio::test]
async fn a_401_window_delays_metric_documents_without_dropping_them() {
    let refused = Arc::new(Mutex::new(0usize));
    let n = refused.clone();
    let es = EsServer::scripted(
        Box::new(move |_| {
            let mut n = n.lock().unwrap();
            *n += 1;
            if *n <= 2 {
                RequestAnswer::Refuse(support::server::Reply::json(
                    401,
                    &json!({"error": {"type": "security_exception",
                        "reason": "unable to authenticate user [vigil] for REST request [/_bulk]"}, "status": 401}),
                ))
            } else {
                RequestAnswer::Process(Duration::ZERO)
            }
        }),
        Box::new(|_| None),
    )
    .await;
    let (r, m, ctx) = registry();
    let s = sink(&ctx, &es.url(), "");
    let shipper = Shipper::start(Duration::from_secs(3600), r.clone(), "node-a".into(), vec![s], &m);
    let docs = eventually("the first snapshot stored", || {
        let docs = stored(&es);
        (!find(&docs, "test_events_total").is_empty()).then_some(docs)
    })
    .await;
    assert_eq!(*refused.lock().unwrap(), 3, "two refusals, then the same documents accepted");
    stop(shipper).await;
    assert_eq!(find(&docs, "test_events_total")[0]["metric"]["value"], json!(7.0));
    assert_eq!(series_value(&r, "vigil_ship_samples_dropped_total", &[("sink", "es"), ("reason", "rejected")]), 0.0);
    assert_eq!(
        series_value(&r, "vigil_sink_request_failures_total", &[("sink", "es"), ("reason", "unauthorized")]),
        2.0
    );
}
