//! The Elasticsearch sink against an in-process `_bulk` server with `create` semantics.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::es::{EsServer, RequestAnswer};
use support::server::Reply;
use support::{Running, context, event, eventually, metric, source};
use vigil::event::{Event, Stream};
use vigil::sinks::elasticsearch::{ElasticsearchConfig, ElasticsearchSink};

const TS: i64 = 1_795_847_533_123_456_789; // 2026-11-28T06:32:13.123456789Z

fn config(endpoint: &str, extra: &str) -> ElasticsearchConfig {
    let batch = if extra.contains("batch:") { "" } else { "batch: {timeout: 20ms}\n" };
    let yaml =
        format!("name: es\nendpoint: {endpoint}\nretry: {{initial_backoff: 20ms, max_backoff: 200ms}}\n{batch}{extra}");
    serde_yaml_ng::from_str(&yaml).unwrap()
}

fn sink(c: &ElasticsearchConfig) -> (Box<dyn vigil::sinks::Sink>, prometheus::Registry) {
    let (ctx, registry) = context();
    (Box::new(ElasticsearchSink::new(c, &ctx).unwrap()), registry)
}

fn events(n: usize, tag: &str) -> Vec<Event> {
    let src = source("shop", "web-1", "nginx");
    (0..n).map(|i| event(&src, 7, i as u64 * 100, TS + i as i64, Stream::Stdout, &format!("{tag} {i}"))).collect()
}

#[tokio::test]
async fn ecs_documents_with_deterministic_ids_dated_index_path_prefix_query_gzip_and_basic_auth() {
    let server = EsServer::start().await;
    let c = config(
        &format!("{}/proxy/es/?pipeline=logs", server.url()),
        "auth: {username: elastic, password: changeme}\nlabels: {cluster: prod, app.kubernetes.io/name: shop}",
    );
    let (s, registry) = sink(&c);
    let mut run = Running::start(s, 2);
    let src = source("shop", "web-1", "nginx");
    let mut e2 = event(&src, 7, 200, TS + 86_400_000_000_000, Stream::Stderr, "next day");
    e2.malformed = true;
    run.send(vec![event(&src, 7, 100, TS, Stream::Stdout, "hello \"es\""), e2]).await;
    assert_eq!(run.finish().await, vec![0]);

    let st = server.state.lock().unwrap();
    assert!(st.bad_requests.is_empty(), "{:?}", st.bad_requests);
    let req = &st.requests[0];
    assert_eq!(req.path, "/proxy/es/_bulk");
    assert_eq!(req.query.as_deref(), Some("pipeline=logs"));
    assert_eq!(req.content_encoding.as_deref(), Some("gzip"));
    assert_eq!(req.authorization.as_deref(), Some("Basic ZWxhc3RpYzpjaGFuZ2VtZQ=="));
    assert_eq!(req.docs[0].index, "logs-vigil-2026.11.28");
    assert_eq!(req.docs[1].index, "logs-vigil-2026.11.29", "the index takes the event's own date");
    assert_eq!(req.docs[0].id.len(), 48);
    assert_ne!(req.docs[0].id, req.docs[1].id, "two lines, two ids");
    let d = &req.docs[0].source;
    assert_eq!(d["@timestamp"], "2026-11-28T06:32:13.123456789Z");
    assert_eq!(d["message"], "hello \"es\"");
    assert_eq!(d["stream"], "stdout");
    assert_eq!(d["kubernetes"]["namespace"], "shop");
    assert_eq!(d["kubernetes"]["pod"]["name"], "web-1");
    assert_eq!(d["kubernetes"]["pod"]["uid"], "uid-web-1");
    assert_eq!(d["kubernetes"]["container"]["name"], "nginx");
    assert_eq!(d["container"]["id"], "cid-web-1-nginx");
    assert_eq!(d["host"]["name"], "node-a");
    assert_eq!(d["log"]["file"]["path"], "/var/log/pods/shop_web-1_uid-web-1/nginx/0.log");
    assert_eq!(d["labels"]["cluster"], "prod");
    assert_eq!(d["labels"]["app_kubernetes_io/name"], "shop", "label keys are de-dotted");
    assert!(d.get("tags").is_none());
    assert_eq!(req.docs[1].source["tags"], serde_json::json!(["malformed"]));
    drop(st);
    assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"es\"}"), 2.0);
}

#[tokio::test]
async fn partial_bulk_failures_retry_only_failed_items_and_dead_letter_mapping_errors() {
    let attempts = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, usize>::new()));
    let a = attempts.clone();
    let server = EsServer::scripted(
        Box::new(|_| RequestAnswer::Process(Duration::ZERO)),
        Box::new(move |doc| {
            let msg = doc.source["message"].as_str().unwrap_or_default().to_string();
            let mut a = a.lock().unwrap();
            let n = a.entry(msg.clone()).or_default();
            *n += 1;
            if msg.starts_with("throttled") && *n <= 2 {
                Some((429, "es_rejected_execution_exception".into()))
            } else if msg.starts_with("unavailable") && *n <= 1 {
                Some((503, "unavailable_shards_exception".into()))
            } else if msg.starts_with("mapping") && doc.index != "vigil-dead-letter" {
                Some((400, "mapper_parsing_exception".into()))
            } else {
                None
            }
        }),
    )
    .await;
    let c = config(&server.url(), "dead_letter_index: vigil-dead-letter\nmax_in_flight: 1");
    let (s, registry) = sink(&c);
    let mut run = Running::start(s, 2);
    let src = source("ns", "p", "c");
    let msgs = ["ok 0", "throttled 1", "mapping 2", "unavailable 3", "ok 4"];
    run.send(msgs.iter().enumerate().map(|(i, m)| event(&src, 1, i as u64, TS, Stream::Stdout, m)).collect()).await;
    assert_eq!(run.finish().await, vec![0]);

    let mut stored = server.messages();
    stored.sort();
    assert_eq!(stored, vec!["ok 0", "ok 4", "throttled 1", "unavailable 3"]);
    let st = server.state.lock().unwrap();
    assert_eq!(st.resent_stored, 0, "an item that succeeded was sent again");
    // Request 1: all five. Request 2: the 429, the 503, and the dead letter. Request 3: the 429.
    let sizes: Vec<usize> = st.requests.iter().map(|r| r.docs.len()).collect();
    assert_eq!(sizes, vec![5, 3, 1]);
    drop(st);
    let dlq = server.stored_in("vigil-dead-letter");
    assert_eq!(dlq.len(), 1);
    let original: serde_json::Value = serde_json::from_str(dlq[0]["event"]["original"].as_str().unwrap()).unwrap();
    assert_eq!(original["message"], "mapping 2");
    assert!(dlq[0]["error"]["message"].as_str().unwrap().contains("mapper_parsing_exception"));
    assert_eq!(dlq[0]["vigil"]["index"], "logs-vigil-2026.11.28");
    assert_eq!(
        metric(&registry, "vigil_sink_events_rejected_total{reason=\"mapper_parsing_exception\",sink=\"es\"}"),
        1.0
    );
    assert_eq!(metric(&registry, "vigil_sink_events_dead_lettered_total{sink=\"es\"}"), 1.0);
    assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"es\"}"), 4.0);
    assert_eq!(metric(&registry, "vigil_sink_retries_total{sink=\"es\"}"), 2.0);
}

#[tokio::test]
async fn mapping_errors_without_dead_letter_index_are_counted_and_acked() {
    let server = EsServer::scripted(
        Box::new(|_| RequestAnswer::Process(Duration::ZERO)),
        Box::new(|doc| {
            doc.source["message"]
                .as_str()
                .unwrap()
                .starts_with("bad")
                .then(|| (400, "document_parsing_exception".into()))
        }),
    )
    .await;
    let (s, registry) = sink(&config(&server.url(), ""));
    let mut run = Running::start(s, 1);
    let src = source("ns", "p", "c");
    run.send(vec![event(&src, 1, 0, TS, Stream::Stdout, "bad"), event(&src, 1, 1, TS, Stream::Stdout, "good")]).await;
    assert_eq!(run.finish().await, vec![0]);
    assert_eq!(server.messages(), vec!["good"]);
    assert_eq!(server.state.lock().unwrap().requests.len(), 1, "400 items are not retried");
    assert_eq!(
        metric(&registry, "vigil_sink_events_rejected_total{reason=\"document_parsing_exception\",sink=\"es\"}"),
        1.0
    );
}

#[tokio::test]
async fn lines_read_again_after_a_restart_answer_409_and_count_as_delivered() {
    let server = EsServer::start().await;
    let c = config(&server.url(), "");
    for _ in 0..2 {
        let (s, registry) = sink(&c);
        let mut run = Running::start(s, 1);
        run.send(events(50, "line")).await;
        assert_eq!(run.finish().await, vec![0]);
        assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"es\"}"), 50.0);
        assert_eq!(metric(&registry, "vigil_sink_retries_total{sink=\"es\"}"), 0.0);
    }
    assert_eq!(server.messages().len(), 50, "no duplicate documents");
    assert_eq!(server.state.lock().unwrap().resent_stored, 50);
}

#[tokio::test]
async fn whole_request_failures_are_retried_and_every_line_is_stored_once() {
    // 429 with Retry-After, 500, a dropped connection, and a slow answer past the timeout that
    // the server did process: the retry after it gets 409s, not duplicates.
    let n = Arc::new(AtomicUsize::new(0));
    let k = n.clone();
    let server = EsServer::scripted(
        Box::new(move |_| match k.fetch_add(1, Ordering::SeqCst) {
            0 => RequestAnswer::Refuse(
                Reply::json(
                    429,
                    &serde_json::json!({"error": {"type": "es_rejected_execution_exception"}, "status": 429}),
                )
                .with_header("Retry-After", "0"),
            ),
            1 => RequestAnswer::Refuse(Reply::status(500, "boom")),
            2 => RequestAnswer::Refuse(Reply::Drop),
            3 => RequestAnswer::Process(Duration::from_millis(700)),
            _ => RequestAnswer::Process(Duration::ZERO),
        }),
        Box::new(|_| None),
    )
    .await;
    let (s, registry) = sink(&config(&server.url(), "request_timeout: 250ms\nmax_in_flight: 1"));
    let mut run = Running::start(s, 1);
    run.send(events(20, "x")).await;
    assert_eq!(run.finish().await, vec![0]);
    let mut got = server.messages();
    got.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("x {i}")).collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(server.state.lock().unwrap().resent_stored, 20, "the retry after the timeout met 409s");
    assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"es\"}"), 20.0);
    assert_eq!(metric(&registry, "vigil_sink_retries_total{sink=\"es\"}"), 4.0);
    assert_eq!(metric(&registry, "vigil_sink_healthy{sink=\"es\"}"), 1.0);
}

#[tokio::test]
async fn backend_down_then_back_bounded_in_flight_and_intake_every_line_arrives() {
    let server = EsServer::start().await;
    server.server.set_down(true);
    let (s, registry) =
        sink(&config(&server.url(), "max_in_flight: 2\nbatch: {max_events: 10, timeout: 10ms}\ncompression: none"));
    let mut run = Running::start(s, 1);
    let tx = run.tx.take().unwrap();
    // Kept only to see whether the sink still reads its input; dropped before the finish.
    let probe = tx.clone();
    let sent = Arc::new(AtomicUsize::new(0));
    let sent2 = sent.clone();
    let src = source("ns", "p", "c");
    let producer = tokio::spawn(async move {
        for id in 0..100u64 {
            let events =
                (0..10).map(|i| event(&src, 1, id * 10 + i, TS, Stream::Stdout, &format!("{id}/{i}"))).collect();
            tx.send(Arc::new(vigil::pipeline::Chunk { id, events })).await.unwrap();
            sent2.fetch_add(1, Ordering::SeqCst);
        }
    });
    // Positive signal first: the backend refused tries and the sink stopped taking its input
    // (the queue in front of it is full); then two more refused tries, so an unbounded sink
    // would have had ample time to read everything (which also ends the wait).
    let retries = || metric(&registry, "vigil_sink_retries_total{sink=\"es\"}");
    let stalled = tokio::time::timeout(Duration::from_secs(60), async {
        while !(retries() >= 2.0 && probe.capacity() == 0) && sent.load(Ordering::SeqCst) < 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seen = retries();
        while retries() < seen + 2.0 && sent.load(Ordering::SeqCst) < 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(stalled.is_ok(), "the sink neither stalled nor read everything within 60s");
    drop(probe);
    let during = sent.load(Ordering::SeqCst);
    // 2 in flight + 1 ready + 1 building (10 events = 1 chunk each) + queue (1) + overshoot.
    assert!(during <= 6, "the sink kept reading while its backend was down: {during} chunks");
    assert!(metric(&registry, "vigil_sink_in_flight_requests{sink=\"es\"}") <= 2.0);
    assert_eq!(metric(&registry, "vigil_sink_healthy{sink=\"es\"}"), 0.0);
    server.server.set_down(false);
    producer.await.unwrap();
    assert_eq!(run.finish().await, (0..100).collect::<Vec<_>>());
    assert_eq!(server.messages().len(), 1000);
    assert_eq!(server.state.lock().unwrap().resent_stored, 0);
    assert!(server.server.max_concurrent.load(Ordering::SeqCst) <= 2);
}

#[tokio::test]
async fn data_stream_with_api_key() {
    let server = EsServer::start().await;
    let (s, _r) = sink(&config(&server.url(), "data_stream: logs-kubernetes-default\nauth: {api_key: Zm9vOmJhcg==}"));
    let mut run = Running::start(s, 1);
    run.send(events(3, "ds")).await;
    run.finish().await;
    let st = server.state.lock().unwrap();
    assert!(st.requests[0].docs.iter().all(|d| d.index == "logs-kubernetes-default"));
    assert_eq!(st.requests[0].authorization.as_deref(), Some("ApiKey Zm9vOmJhcg=="));
}

/// A whole request refused for its content (Elasticsearch: 400 `illegal_argument_exception`)
/// is final: its events are rejected, counted and acked; the backend answered, so it is healthy.
/// (401/403/404/407/408 are retried instead: tests/sink_errors.rs.)
#[tokio::test]
async fn a_whole_request_400_rejects_its_events_and_acks() {
    let server = EsServer::scripted(
        Box::new(|_| {
            RequestAnswer::Refuse(Reply::json(
                400,
                &serde_json::json!({"error": {"type": "illegal_argument_exception", "reason": "bad"}, "status": 400}),
            ))
        }),
        Box::new(|_| None),
    )
    .await;
    let (s, registry) = sink(&config(&server.url(), ""));
    let mut run = Running::start(s, 1);
    run.send(events(4, "nope")).await;
    assert_eq!(run.finish().await, vec![0]);
    assert_eq!(metric(&registry, "vigil_sink_events_rejected_total{reason=\"status_400\",sink=\"es\"}"), 4.0);
    assert_eq!(metric(&registry, "vigil_sink_requests_total{sink=\"es\",status=\"4xx\"}"), 1.0);
    assert_eq!(metric(&registry, "vigil_sink_healthy{sink=\"es\"}"), 1.0);
    assert_eq!(metric(&registry, "vigil_sink_last_success_timestamp_seconds{sink=\"es\"}"), 0.0);
}

#[tokio::test]
async fn a_backend_that_is_not_there_yet_gets_everything_once_it_starts() {
    // Connection refused (nothing listens), then a server appears on that port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (s, registry) = sink(&config(&format!("http://{addr}"), ""));
    let mut run = Running::start(s, 1);
    run.send(events(5, "late")).await;
    eventually(10, "a refused connection is retried", || {
        metric(&registry, "vigil_sink_retries_total{sink=\"es\"}") >= 2.0
    })
    .await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let server =
        EsServer::scripted_on(listener, Box::new(|_| RequestAnswer::Process(Duration::ZERO)), Box::new(|_| None));
    assert_eq!(run.finish().await, vec![0]);
    assert_eq!(server.messages().len(), 5);
    assert!(metric(&registry, "vigil_sink_requests_total{sink=\"es\",status=\"error\"}") >= 2.0);
}

#[test]
fn validate_never_prints_secrets() {
    let yaml = r#"
sinks:
  - name: es
    type: elasticsearch
    endpoint: https://es:9200
    auth: {username: elastic, password: hunter2-password}
    headers: {X-Custom-Auth: hunter2-header}
  - name: es2
    type: elasticsearch
    endpoint: https://es:9200
    auth: {api_key: hunter2-apikey}
  - name: loki
    type: loki
    endpoint: http://loki:3100
    tenant_id: hunter2-tenant
    auth: {bearer_token: hunter2-token}
"#;
    let c = vigil::config::Config::from_yaml(yaml, &|_| None).unwrap();
    let printed = c.to_yaml();
    let debugged = format!("{c:?}");
    for out in [&printed, &debugged] {
        assert!(!out.contains("hunter2"), "a secret leaked:\n{out}");
    }
    assert!(printed.contains("username: elastic"));
    assert!(printed.contains("'***'") || printed.contains("\"***\"") || printed.contains("***"));
}

#[tokio::test]
async fn a_413_from_a_proxy_splits_the_request_until_it_fits() {
    let server = EsServer::scripted(
        Box::new(|r| {
            if r.docs.len() > 3 {
                RequestAnswer::Refuse(Reply::status(413, "<html>413 Request Entity Too Large</html>"))
            } else {
                RequestAnswer::Process(Duration::ZERO)
            }
        }),
        Box::new(|_| None),
    )
    .await;
    let (s, registry) = sink(&config(&server.url(), ""));
    let mut run = Running::start(s, 1);
    run.send(events(10, "big")).await;
    assert_eq!(run.finish().await, vec![0]);
    let mut got = server.messages();
    got.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("big {i}")).collect();
    want.sort();
    assert_eq!(got, want, "every line stored, none rejected for size");
    assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"es\"}"), 10.0);
    assert_eq!(server.state.lock().unwrap().resent_stored, 0);
}

/// Elasticsearch answers `"errors": false` when no operation failed; vigil then only counts the
/// items. A large all-success answer (the receiver writes one item per document, as ES does) is
/// still taken as every document stored, in one request, and acked.
#[tokio::test]
async fn an_all_success_answer_with_a_huge_item_list_is_accepted_and_acked() {
    let server = EsServer::start().await;
    let (s, registry) =
        sink(&config(&server.url(), "batch: {max_events: 10000, max_bytes: 64MiB, timeout: 50ms}\ncompression: none"));
    let mut run = Running::start(s, 1);
    run.send(events(10_000, "bulk")).await;
    assert_eq!(run.finish().await, vec![0]);
    let st = server.state.lock().unwrap();
    assert_eq!(st.requests.len(), 1, "one request, taken as stored at once");
    assert_eq!(st.requests[0].docs.len(), 10_000);
    assert_eq!(st.order.len(), 10_000);
    drop(st);
    assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"es\"}"), 10_000.0);
}

/// With `"errors": false` the items are only counted, so the count must still cover the request:
/// an answer cut short (a proxy's body limit, `filter_path`) is retried, never taken as stored.
#[tokio::test]
async fn an_errors_false_answer_with_fewer_items_than_documents_is_retried() {
    let n = Arc::new(AtomicUsize::new(0));
    let k = n.clone();
    let short = Reply::json(
        200,
        &serde_json::json!({"took": 1, "errors": false,
            "items": [{"create": {"_index": "x", "_id": "y", "status": 201, "result": "created"}}]}),
    );
    let server = EsServer::scripted(
        Box::new(move |_| {
            if k.fetch_add(1, Ordering::SeqCst) == 0 {
                RequestAnswer::Refuse(short.clone())
            } else {
                RequestAnswer::Process(Duration::ZERO)
            }
        }),
        Box::new(|_| None),
    )
    .await;
    let (s, registry) = sink(&config(&server.url(), ""));
    let mut run = Running::start(s, 1);
    run.send(events(5, "short")).await;
    assert_eq!(run.finish().await, vec![0]);
    assert_eq!(n.load(Ordering::SeqCst), 2, "retried after the short answer");
    assert_eq!(server.messages().len(), 5);
    assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"es\"}"), 5.0);
}
