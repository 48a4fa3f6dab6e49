//! The metrics shipper and the `prometheus_remote_write` sink against an in-process receiver
//! that decodes the real wire format (snappy block + protobuf `WriteRequest`) and answers like
//! Prometheus does: 204, 400 with a body, 429 with `Retry-After`, 5xx, or not listening at all.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prometheus::{IntCounter, Registry};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::series_value;
use tokio::net::TcpListener;
use vigil::metrics::ship::{MetricsSink, ShipMetrics, Shipper};
use vigil::sinks::SinkContext;
use vigil::sinks::remote_write::proto::WriteRequest;
use vigil::sinks::remote_write::{RemoteWriteConfig, RemoteWriteSink};

/// A series as received: labels as (name, value) pairs, its one value and timestamp.
type Series = (Vec<(String, String)>, f64, i64);

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    headers: hyper::HeaderMap,
    req: WriteRequest,
    /// The status the receiver answered.
    status: u16,
}

impl Received {
    /// `(labels as name=value pairs, value, timestamp)` of each series.
    fn series(&self) -> Vec<Series> {
        self.req
            .timeseries
            .iter()
            .map(|t| {
                assert_eq!(t.samples.len(), 1, "one sample per series per snapshot");
                (
                    t.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect(),
                    t.samples[0].value,
                    t.samples[0].timestamp,
                )
            })
            .collect()
    }

    fn find(&self, name: &str) -> Option<Series> {
        self.series().into_iter().find(|(l, _, _)| l.iter().any(|(n, v)| n == "__name__" && v == name))
    }
}

type Script = Arc<Mutex<VecDeque<(u16, Option<&'static str>, &'static str)>>>;

/// An in-process remote-write receiver: answers from a script (status, Retry-After, body),
/// then 204; records every decoded request.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    script: Script,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    fn start_on(listener: TcpListener) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script: Script = Arc::default();
        let (g, s) = (got.clone(), script.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (g, s) = (g.clone(), s.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (g, s) = (g.clone(), s.clone());
                        async move {
                            let headers = req.headers().clone();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let raw = snap::raw::Decoder::new().decompress_vec(&body).expect("snappy block format");
                            let decoded: WriteRequest = prost::Message::decode(raw.as_slice()).expect("WriteRequest");
                            let (status, retry_after, text) = s.lock().unwrap().pop_front().unwrap_or((204, None, ""));
                            g.lock().unwrap().push(Received { headers, req: decoded, status });
                            let mut resp = Response::builder().status(status);
                            if let Some(ra) = retry_after {
                                resp = resp.header("retry-after", ra);
                            }
                            Ok::<_, std::convert::Infallible>(
                                resp.body(Full::new(Bytes::from_static(text.as_bytes()))).unwrap(),
                            )
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Receiver { addr, got, script, task }
    }

    fn answer(&self, status: u16, retry_after: Option<&'static str>, body: &'static str) {
        self.script.lock().unwrap().push_back((status, retry_after, body));
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (at most 20 s) until `f` holds for the requests received so far.
    async fn wait(&self, what: &str, f: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        for _ in 0..1000 {
            let got = self.received();
            if f(&got) {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("receiver: {what} did not happen within 20 s; got {:#?}", self.received());
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn sink(ctx: &SinkContext, yaml: &str) -> Arc<dyn MetricsSink> {
    let c: RemoteWriteConfig = serde_yaml_ng::from_str(yaml).unwrap();
    let mut p = vigil::config::Problems::default();
    c.validate("sink", &mut p);
    assert!(p.0.is_empty(), "{:?}", p.0);
    RemoteWriteSink::build(&c, ctx).unwrap()
}

/// Sink `central` to `addr` with short retry backoffs (10ms..50ms), for tests that script failures.
fn fast_retry_sink(ctx: &SinkContext, addr: SocketAddr) -> Arc<dyn MetricsSink> {
    sink(
        ctx,
        &format!(
            "{{name: central, endpoint: 'http://{addr}/api/v1/write', retry: {{initial_backoff: 10ms, max_backoff: 50ms}}}}"
        ),
    )
}

/// A registry with one counter `test_events_total` (value 7), the ship metrics and the sink
/// metrics (through the sink context, as the app builds it).
fn registry() -> (Registry, IntCounter, ShipMetrics, SinkContext) {
    let r = Registry::new();
    let c = IntCounter::new("test_events_total", "events").unwrap();
    c.inc_by(7);
    r.register(Box::new(c.clone())).unwrap();
    let m = ShipMetrics::register(&r).unwrap();
    let ctx = SinkContext::new(r.clone(), "node-a".into()).unwrap();
    (r, c, m, ctx)
}

fn start(registry: &Registry, m: &ShipMetrics, interval: Duration, sinks: Vec<Arc<dyn MetricsSink>>) -> Shipper {
    Shipper::start(interval, registry.clone(), "node-a".into(), sinks, m)
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn a_snapshot_arrives_with_protocol_headers_sorted_labels_and_one_timestamp() {
    let rx = Receiver::start().await;
    let (r, _c, m, ctx) = registry();
    let before = vigil::metrics::ship::now_ms();
    let s = sink(
        &ctx,
        &format!(
            "{{name: central, endpoint: 'http://{}/api/v1/write', external_labels: {{cluster: prod}}, tenant_id: team-a, \
         auth: {{username: u, password: p}}, headers: {{X-Extra: yes}}}}",
            rx.addr
        ),
    );
    let shipper = start(&r, &m, Duration::from_secs(3600), vec![s]);
    let got = rx.wait("first snapshot", |g| !g.is_empty()).await;
    let first = &got[0];
    assert_eq!(header(first, "content-encoding"), "snappy");
    assert_eq!(header(first, "content-type"), "application/x-protobuf");
    assert_eq!(header(first, "x-prometheus-remote-write-version"), "0.1.0");
    assert_eq!(header(first, "x-scope-orgid"), "team-a");
    assert_eq!(header(first, "x-extra"), "yes");
    assert_eq!(header(first, "authorization"), "Basic dTpw"); // base64("u:p")

    let (labels, v, ts) = first.find("test_events_total").expect("the counter is shipped");
    let pairs: Vec<(&str, &str)> = labels.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        pairs,
        vec![("__name__", "test_events_total"), ("cluster", "prod"), ("instance", "node-a"), ("node", "node-a")]
    );
    assert_eq!(v, 7.0);
    assert!(ts >= before && ts <= vigil::metrics::ship::now_ms(), "timestamp {ts} is the collection time");
    for (labels, _, t) in first.series() {
        assert_eq!(t, ts, "one collection timestamp for the whole snapshot");
        let names: Vec<&String> = labels.iter().map(|(n, _)| n).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "labels sorted by name");
        assert!(labels.iter().any(|(n, v)| n == "node" && v == "node-a"), "{labels:?}");
    }
    // The ship metrics themselves are in the registry, hence shipped.
    assert!(first.find("vigil_ship_queue_samples").is_some());
    shipper.shutdown(tokio::time::Instant::now() + Duration::from_secs(5)).await;
}

#[tokio::test]
async fn fivexx_and_429_are_retried_until_accepted_and_400_is_dropped_and_counted() {
    let rx = Receiver::start().await;
    rx.answer(503, None, "overloaded");
    rx.answer(429, Some("0"), "slow down");
    rx.answer(500, None, "oops");
    let (r, _c, m, ctx) = registry();
    let s = fast_retry_sink(&ctx, rx.addr);
    let shipper = start(&r, &m, Duration::from_secs(3600), vec![s]);
    let got = rx.wait("a 2xx", |g| g.iter().any(|x| x.status == 204)).await;
    assert_eq!(got.iter().map(|x| x.status).collect::<Vec<_>>(), vec![503, 429, 500, 204]);
    // The same snapshot each time: a retry resends, it does not re-gather.
    assert!(got.iter().all(|x| x.req == got[0].req), "retries carry the same samples");
    let samples = got[3].req.timeseries.len() as f64;
    // The receiver has the 204 before the shipper has read it, counted the samples sent and
    // taken them off its queue.
    let sent = || series_value(&r, "vigil_ship_samples_sent_total", &[("sink", "central")]);
    let queued = || series_value(&r, "vigil_ship_queue_samples", &[("sink", "central")]);
    let t0 = std::time::Instant::now();
    while (sent() != samples || queued() != 0.0) && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sent(), samples);
    assert_eq!(series_value(&r, "vigil_ship_samples_dropped_total", &[("reason", "rejected")]), 0.0);
    assert_eq!(series_value(&r, "vigil_ship_queue_samples", &[("sink", "central")]), 0.0);
    // The shared per-sink request metrics see every attempt.
    let requests = |status| series_value(&r, "vigil_sink_requests_total", &[("sink", "central"), ("status", status)]);
    assert_eq!((requests("2xx"), requests("4xx"), requests("5xx")), (1.0, 1.0, 2.0));
    assert_eq!(series_value(&r, "vigil_sink_retries_total", &[("sink", "central")]), 3.0);
    assert_eq!(series_value(&r, "vigil_sink_healthy", &[("sink", "central")]), 1.0);
    shipper.shutdown(tokio::time::Instant::now() + Duration::from_secs(5)).await;

    // A 400 is final: counted, not retried; the next snapshot goes through.
    let rx = Receiver::start().await;
    rx.answer(400, None, "out of order sample");
    let (r, _c, m, ctx) = registry();
    let s = fast_retry_sink(&ctx, rx.addr);
    let shipper = start(&r, &m, Duration::from_secs(1), vec![s]);
    let got = rx.wait("a 2xx after the 400", |g| g.iter().any(|x| x.status == 204)).await;
    assert_eq!(got[0].status, 400);
    assert_eq!(got[1].status, 204);
    assert!(got[1].req.timeseries[0].samples[0].timestamp > got[0].req.timeseries[0].samples[0].timestamp);
    let rejected = got[0].req.timeseries.len() as f64;
    assert_eq!(series_value(&r, "vigil_ship_samples_dropped_total", &[("reason", "rejected")]), rejected);
    shipper.shutdown(tokio::time::Instant::now() + Duration::from_secs(5)).await;
}

/// Regression: 401/403/404/407/408 were final, so the snapshot was dropped as `rejected`.
/// Prometheus answers 404 on a wrong path; Mimir 401 "no org id" without a tenant; a proxy
/// 403/407/408. They are retried like a 5xx: the same request arrives once accepted.
#[tokio::test]
async fn auth_and_address_answers_are_retried_and_the_snapshot_arrives() {
    for (status, reason) in [
        (401, "unauthorized"),
        (403, "forbidden"),
        (404, "not_found"),
        (407, "proxy_auth_required"),
        (408, "request_timeout"),
    ] {
        let rx = Receiver::start().await;
        rx.answer(status, None, "no org id");
        rx.answer(status, None, "no org id");
        let (r, _c, m, ctx) = registry();
        let s = fast_retry_sink(&ctx, rx.addr);
        let shipper = start(&r, &m, Duration::from_secs(3600), vec![s]);
        let got = rx.wait("a 2xx", |g| g.iter().any(|x| x.status == 204)).await;
        assert_eq!(got.iter().map(|x| x.status).collect::<Vec<_>>(), vec![status, status, 204]);
        assert!(got.iter().all(|x| x.req == got[0].req), "{status}: the refused snapshot itself arrives");
        assert_eq!(series_value(&r, "vigil_ship_samples_dropped_total", &[("reason", "rejected")]), 0.0, "{status}");
        let failures =
            series_value(&r, "vigil_sink_request_failures_total", &[("sink", "central"), ("reason", reason)]);
        assert_eq!(failures, 2.0, "{status}");
        // The receiver records its 204 before vigil has read it: wait for the health to follow.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while series_value(&r, "vigil_sink_healthy", &[("sink", "central")]) != 1.0
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(series_value(&r, "vigil_sink_healthy", &[("sink", "central")]), 1.0, "{status}");
        shipper.shutdown(tokio::time::Instant::now() + Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn an_outage_is_bridged_by_the_queue_in_order_and_overflow_drops_the_oldest() {
    // Reserve a port, then close it: the receiver is down until it binds it again.
    let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let (r, _c, m, ctx) = registry();
    // Two sinks on the same dead receiver: one with room for the whole outage, one that can
    // hold only about two snapshots.
    let per_snapshot = {
        let s = sink(&ctx, "{name: probe, endpoint: 'http://127.0.0.1:9/api/v1/write'}");
        let snap = vigil::metrics::ship::Snapshot::gather(&r, "node-a".into());
        s.encode(&snap).iter().map(|b| b.samples).sum::<usize>()
    };
    let roomy = sink(
        &ctx,
        &format!(
            "{{name: roomy, endpoint: 'http://{addr}/api/v1/write', external_labels: {{via: roomy}}, \
         retry: {{initial_backoff: 20ms, max_backoff: 100ms}}}}"
        ),
    );
    let tight = sink(
        &ctx,
        &format!(
            "{{name: tight, endpoint: 'http://{addr}/api/v1/write', external_labels: {{via: tight}}, \
         queue_max_samples: {}, retry: {{initial_backoff: 20ms, max_backoff: 100ms}}}}",
            per_snapshot * 2 + 2
        ),
    );
    let shipper = start(&r, &m, Duration::from_secs(1), vec![roomy, tight]);
    // Let about five snapshots pile up while nothing listens.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(series_value(&r, "vigil_ship_queue_samples", &[("sink", "roomy")]) >= (per_snapshot * 3) as f64);
    assert_eq!(series_value(&r, "vigil_ship_samples_sent_total", &[("sink", "roomy")]), 0.0);
    let dropped = series_value(&r, "vigil_ship_samples_dropped_total", &[("sink", "tight"), ("reason", "queue_full")]);
    assert!(dropped >= per_snapshot as f64, "the tight queue dropped its oldest: {dropped}");
    let back = vigil::metrics::ship::now_ms();

    let rx = Receiver::start_on(TcpListener::bind(addr).await.unwrap());
    let stamps = |g: &[Received], via: &str| -> Vec<i64> {
        g.iter()
            .filter(|x| x.req.timeseries[0].labels.iter().any(|l| l.name == "via" && l.value == via))
            .map(|x| x.req.timeseries[0].samples[0].timestamp)
            .collect()
    };
    let got = rx
        .wait("the backlog, then a fresh snapshot", |g| {
            stamps(g, "roomy").last().is_some_and(|t| *t > back) && stamps(g, "tight").last().is_some_and(|t| *t > back)
        })
        .await;
    let (roomy, tight) = (stamps(&got, "roomy"), stamps(&got, "tight"));
    for s in [&roomy, &tight] {
        assert!(s.windows(2).all(|w| w[0] < w[1]), "each sink delivers oldest first, once: {s:?}");
    }
    let outage = |s: &[i64]| s.iter().filter(|t| **t < back).count();
    assert!(outage(&roomy) >= 3, "the outage window arrived: {roomy:?} (receiver back at {back})");
    assert!(outage(&tight) < outage(&roomy), "the tight queue kept only its newest: {tight:?} vs {roomy:?}");
    assert!(tight[0] > roomy[0], "the tight queue lost the oldest: {tight:?} vs {roomy:?}");
    assert_eq!(
        series_value(&r, "vigil_ship_samples_dropped_total", &[("sink", "roomy"), ("reason", "queue_full")]),
        0.0
    );
    shipper.shutdown(tokio::time::Instant::now() + Duration::from_secs(5)).await;
}

#[tokio::test]
async fn shutdown_ships_a_last_snapshot_and_gives_up_fast_on_a_dead_receiver() {
    let rx = Receiver::start().await;
    let (r, c, m, ctx) = registry();
    let s = sink(&ctx, &format!("{{name: central, endpoint: 'http://{}/api/v1/write'}}", rx.addr));
    let shipper = start(&r, &m, Duration::from_secs(3600), vec![s]);
    rx.wait("first snapshot", |g| !g.is_empty()).await;
    c.inc_by(100);
    shipper.shutdown(tokio::time::Instant::now() + Duration::from_secs(5)).await;
    let got = rx.received();
    assert_eq!(got.len(), 2, "one snapshot at start, one at shutdown");
    assert_eq!(got[1].find("test_events_total").unwrap().1, 107.0, "the last snapshot has the final values");

    // Nobody listening: the final pass fails at once and is counted; no waiting out the grace.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let (r, _c, m, ctx) = registry();
    let s = sink(
        &ctx,
        &format!(
            "{{name: central, endpoint: 'http://{dead}/api/v1/write', retry: {{initial_backoff: 10s, max_backoff: 10s}}}}"
        ),
    );
    let shipper = start(&r, &m, Duration::from_secs(3600), vec![s]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = tokio::time::Instant::now();
    shipper.shutdown(t0 + Duration::from_secs(20)).await;
    assert!(t0.elapsed() < Duration::from_secs(10), "shutdown waited for the backoff: {:?}", t0.elapsed());
    let dropped = series_value(&r, "vigil_ship_samples_dropped_total", &[("reason", "shutdown")]);
    assert!(dropped > 0.0, "undelivered samples are counted at shutdown");
    assert_eq!(series_value(&r, "vigil_ship_queue_samples", &[("sink", "central")]), 0.0);
}

#[tokio::test]
async fn a_bearer_token_file_is_read_at_each_request() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first\n").unwrap();
    let (r, _c, m, ctx) = registry();
    let s = sink(
        &ctx,
        &format!(
            "{{name: central, endpoint: 'http://{}/api/v1/write', auth: {{bearer_token_file: '{}'}}}}",
            rx.addr,
            token.display()
        ),
    );
    let shipper = start(&r, &m, Duration::from_secs(1), vec![s]);
    rx.wait("first snapshot", |g| !g.is_empty()).await;
    std::fs::write(&token, "rotated").unwrap();
    let got = rx.wait("the rotated token", |g| g.iter().any(|x| header(x, "authorization") == "Bearer rotated")).await;
    assert_eq!(header(&got[0], "authorization"), "Bearer first");
    shipper.shutdown(tokio::time::Instant::now() + Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_request_hanging_at_shutdown_does_not_outlive_the_grace_deadline() {
    // A receiver that accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    let (r, _c, m, ctx) = registry();
    let s = sink(&ctx, &format!("{{name: central, endpoint: 'http://{addr}/api/v1/write', request_timeout: 1h}}"));
    let shipper = start(&r, &m, Duration::from_secs(3600), vec![s]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = tokio::time::Instant::now();
    shipper.shutdown(t0 + Duration::from_secs(1)).await;
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?} with a 1 s grace");
    assert!(series_value(&r, "vigil_ship_samples_dropped_total", &[("reason", "shutdown")]) > 0.0);
    held.abort();
}
