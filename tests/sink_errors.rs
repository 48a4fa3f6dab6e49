//! "Lose nothing": whole-request auth and address answers, unreadable credentials and answers
//! that are not the protocol's, against in-process Loki and Elasticsearch servers that decode
//! the real wire format. Each answer is what the real server (or what stands in front of it)
//! sends:
//! - Elasticsearch with security on: 401 `security_exception` "missing authentication
//!   credentials for REST request" with `WWW-Authenticate: Basic realm="security"`; 403
//!   `security_exception` "action [indices:data/write/bulk] is unauthorized for user".
//! - Loki with `auth_enabled`: 401 "no org id" (dskit's tenant middleware); an unknown path:
//!   404 "404 page not found" (gorilla/mux).
//! - A forward proxy wanting credentials: 407 with `Proxy-Authenticate` (squid); a reverse proxy
//!   timing out the request body: 408 (nginx `client_body_timeout`).
//! - An SSO/auth proxy in front of Elasticsearch: 200 with its HTML sign-in page.
//!
//! Each case used to lose lines: the batch was acknowledged (so checkpointed) without being
//! stored, or sent without credentials.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::es::{EsServer, RequestAnswer};
use support::loki::{Answer, LokiServer};
use support::server::Reply;
use support::{Running, context, event, eventually, metric, source};
use vigil::event::{Event, Stream};
use vigil::sinks::elasticsearch::{ElasticsearchConfig, ElasticsearchSink};
use vigil::sinks::loki::{LokiConfig, LokiSink};

const TS: i64 = 1_795_847_533_123_456_789;

fn events(n: usize, tag: &str) -> Vec<Event> {
    let src = source("shop", "web-1", "nginx");
    (0..n).map(|i| event(&src, 7, i as u64 * 100, TS + i as i64, Stream::Stdout, &format!("{tag} {i}"))).collect()
}

fn es_config(endpoint: &str, extra: &str) -> ElasticsearchConfig {
    let yaml = format!(
        "name: es\nendpoint: {endpoint}\nretry: {{initial_backoff: 10ms, max_backoff: 50ms}}\nbatch: {{timeout: 10ms}}\n{extra}"
    );
    serde_yaml_ng::from_str(&yaml).unwrap()
}

fn loki_config(endpoint: &str, extra: &str) -> LokiConfig {
    let yaml = format!(
        "name: loki\nendpoint: {endpoint}\nretry: {{initial_backoff: 10ms, max_backoff: 50ms}}\nbatch: {{timeout: 10ms}}\n{extra}"
    );
    serde_yaml_ng::from_str(&yaml).unwrap()
}

/// The answer a real server (or the proxy in front of it) gives for `status`.
fn refusal(status: u16, backend: &str) -> Reply {
    match (status, backend) {
        (401, "es") => Reply::json(
            401,
            &serde_json::json!({"error": {"root_cause": [{"type": "security_exception",
                "reason": "missing authentication credentials for REST request [/_bulk]"}],
                "type": "security_exception",
                "reason": "missing authentication credentials for REST request [/_bulk]"}, "status": 401}),
        )
        .with_header("WWW-Authenticate", "Basic realm=\"security\" charset=\"UTF-8\""),
        (403, "es") => Reply::json(
            403,
            &serde_json::json!({"error": {"type": "security_exception",
                "reason": "action [indices:data/write/bulk] is unauthorized for user [vigil]"}, "status": 403}),
        ),
        (401, "loki") => Reply::status(401, "no org id\n"),
        (404, _) => Reply::status(404, "404 page not found\n"),
        (407, _) => Reply::status(407, "<html><body>Cache Access Denied</body></html>")
            .with_header("Proxy-Authenticate", "Basic realm=\"proxy\""),
        (408, _) => Reply::status(408, "<html><head><title>408 Request Time-out</title></head></html>"),
        (403, _) => Reply::status(403, "Forbidden\n"),
        _ => unreachable!(),
    }
}

const AUTH_AND_ADDRESS: [(u16, &str); 5] = [
    (401, "unauthorized"),
    (403, "forbidden"),
    (404, "not_found"),
    (407, "proxy_auth_required"),
    (408, "request_timeout"),
];
/// Requests refused before the server accepts.
const WINDOW: usize = 3;

/// Regression: a whole-request 401/403/404/407/408 rejected the batch, which was acked and so
/// checkpointed: a rotated token or a wrong path deleted logs.
#[tokio::test]
async fn es_auth_and_address_answers_are_retried_until_accepted_and_every_line_is_stored() {
    for (status, reason) in AUTH_AND_ADDRESS {
        let (ctx, registry) = context();
        let n = Arc::new(AtomicUsize::new(0));
        // The sink's health as seen by each request after the first: it must be 0 while refused.
        let health_seen = Arc::new(Mutex::new(Vec::new()));
        let (k, r, h) = (n.clone(), registry.clone(), health_seen.clone());
        let server = EsServer::scripted(
            Box::new(move |_| {
                let i = k.fetch_add(1, Ordering::SeqCst);
                if i > 0 {
                    h.lock().unwrap().push(metric(&r, "vigil_sink_healthy{sink=\"es\"}"));
                }
                if i < WINDOW {
                    RequestAnswer::Refuse(refusal(status, "es"))
                } else {
                    RequestAnswer::Process(Duration::ZERO)
                }
            }),
            Box::new(|_| None),
        )
        .await;
        let sink = ElasticsearchSink::new(&es_config(&server.url(), ""), &ctx).unwrap();
        let mut run = Running::start(Box::new(sink), 1);
        run.send(events(6, "line")).await;
        assert_eq!(run.finish().await, vec![0], "{status}");
        let mut got = server.messages();
        got.sort();
        assert_eq!(got, (0..6).map(|i| format!("line {i}")).collect::<Vec<_>>(), "{status}: every line stored");
        assert_eq!(n.load(Ordering::SeqCst), WINDOW + 1, "{status}: retried until accepted");
        assert_eq!(*health_seen.lock().unwrap(), vec![0.0; WINDOW], "{status}: unhealthy while refused");
        assert_eq!(metric(&registry, "vigil_sink_healthy{sink=\"es\"}"), 1.0, "{status}: healthy once accepted");
        assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"es\"}"), 6.0, "{status}");
        assert_eq!(
            metric(&registry, &format!("vigil_sink_request_failures_total{{reason=\"{reason}\",sink=\"es\"}}")),
            WINDOW as f64,
            "{status}: the failure counter moved"
        );
        assert_eq!(metric(&registry, "vigil_sink_retries_total{sink=\"es\"}"), WINDOW as f64, "{status}");
        assert_eq!(
            metric(&registry, &format!("vigil_sink_events_rejected_total{{reason=\"status_{status}\",sink=\"es\"}}")),
            0.0,
            "{status}: nothing rejected"
        );
    }
}

#[tokio::test]
async fn loki_auth_and_address_answers_are_retried_until_accepted_and_every_line_is_stored() {
    for (status, reason) in AUTH_AND_ADDRESS {
        let (ctx, registry) = context();
        let n = Arc::new(AtomicUsize::new(0));
        let health_seen = Arc::new(Mutex::new(Vec::new()));
        let (k, r, h) = (n.clone(), registry.clone(), health_seen.clone());
        let server = LokiServer::scripted(Box::new(move |_| {
            let i = k.fetch_add(1, Ordering::SeqCst);
            if i > 0 {
                h.lock().unwrap().push(metric(&r, "vigil_sink_healthy{sink=\"loki\"}"));
            }
            if i < WINDOW { Answer::Refuse(refusal(status, "loki")) } else { Answer::Accept(Duration::ZERO) }
        }))
        .await;
        let sink = LokiSink::new(&loki_config(&server.url(), "max_in_flight: 1"), &ctx).unwrap();
        let mut run = Running::start(Box::new(sink), 1);
        run.send(events(6, "line")).await;
        assert_eq!(run.finish().await, vec![0], "{status}");
        assert_eq!(server.stored_count(), 6, "{status}: every line stored");
        assert_eq!(n.load(Ordering::SeqCst), WINDOW + 1, "{status}: retried until accepted");
        assert_eq!(*health_seen.lock().unwrap(), vec![0.0; WINDOW], "{status}: unhealthy while refused");
        assert_eq!(metric(&registry, "vigil_sink_healthy{sink=\"loki\"}"), 1.0, "{status}");
        assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"loki\"}"), 6.0, "{status}");
        assert_eq!(
            metric(&registry, &format!("vigil_sink_request_failures_total{{reason=\"{reason}\",sink=\"loki\"}}")),
            WINDOW as f64,
            "{status}: the failure counter moved"
        );
    }
}

/// Regression: a `bearer_token_file` missing at a request made vigil send it without
/// credentials. The server refuses (and records) any request without the token.
#[tokio::test]
async fn a_missing_token_file_holds_requests_back_until_it_appears_never_sending_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    let without = Arc::new(AtomicUsize::new(0));
    let w = without.clone();
    let server = EsServer::scripted(
        Box::new(move |req| {
            if req.authorization.as_deref() == Some("Bearer s3cret") {
                RequestAnswer::Process(Duration::ZERO)
            } else {
                w.fetch_add(1, Ordering::SeqCst);
                RequestAnswer::Refuse(refusal(401, "es"))
            }
        }),
        Box::new(|_| None),
    )
    .await;
    let (ctx, registry) = context();
    let c = es_config(&server.url(), &format!("auth: {{bearer_token_file: '{}'}}", token.display()));
    let mut run = Running::start(Box::new(ElasticsearchSink::new(&c, &ctx).unwrap()), 1);
    run.send(events(4, "secret")).await;
    eventually(20, "tries fail for want of credentials", || {
        metric(&registry, "vigil_sink_request_failures_total{reason=\"no_credentials\",sink=\"es\"}") >= 3.0
    })
    .await;
    assert_eq!(metric(&registry, "vigil_sink_healthy{sink=\"es\"}"), 0.0);
    // Written the way kubelet swaps projected tokens: a new file renamed into place.
    std::fs::write(dir.path().join("t.tmp"), "s3cret\n").unwrap();
    std::fs::rename(dir.path().join("t.tmp"), &token).unwrap();
    assert_eq!(run.finish().await, vec![0]);
    assert_eq!(without.load(Ordering::SeqCst), 0, "a request reached the server without credentials");
    assert_eq!(server.messages().len(), 4);
    assert_eq!(metric(&registry, "vigil_sink_healthy{sink=\"es\"}"), 1.0);
}

#[tokio::test]
async fn loki_never_pushes_without_the_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    let server = LokiServer::start().await;
    let (ctx, registry) = context();
    let c = loki_config(&server.url(), &format!("auth: {{bearer_token_file: '{}'}}", token.display()));
    let mut run = Running::start(Box::new(LokiSink::new(&c, &ctx).unwrap()), 1);
    run.send(events(3, "l")).await;
    eventually(20, "tries fail for want of credentials", || {
        metric(&registry, "vigil_sink_request_failures_total{reason=\"no_credentials\",sink=\"loki\"}") >= 2.0
    })
    .await;
    std::fs::write(&token, "tok").unwrap();
    assert_eq!(run.finish().await, vec![0]);
    let st = server.state.lock().unwrap();
    assert!(!st.pushes.is_empty());
    for p in &st.pushes {
        assert_eq!(p.authorization.as_deref(), Some("Bearer tok"), "a push went without credentials");
    }
}

/// Regression: a 2xx `_bulk` answer that was not a bulk answer (an auth proxy's sign-in page,
/// JSON without `items`) was taken as "all stored".
#[tokio::test]
async fn a_2xx_that_is_not_a_bulk_answer_is_retried_and_not_counted_as_stored() {
    let sign_in = Reply::Respond {
        status: 200,
        headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
        body: b"<!DOCTYPE html><html><head><title>Sign in</title></head><body><form action=\"/oauth2/start\">".to_vec(),
        delay: Duration::ZERO,
    };
    // ES answers `filter_path=errors` with just the summary.
    let summary_only = Reply::json(200, &serde_json::json!({"errors": false}));
    for (what, answer) in [("html sign-in page", sign_in), ("json without items", summary_only)] {
        let n = Arc::new(AtomicUsize::new(0));
        let k = n.clone();
        let server = EsServer::scripted(
            Box::new(move |_| {
                if k.fetch_add(1, Ordering::SeqCst) < 2 {
                    RequestAnswer::Refuse(answer.clone())
                } else {
                    RequestAnswer::Process(Duration::ZERO)
                }
            }),
            Box::new(|_| None),
        )
        .await;
        let (ctx, registry) = context();
        let mut run = Running::start(Box::new(ElasticsearchSink::new(&es_config(&server.url(), ""), &ctx).unwrap()), 1);
        run.send(events(5, "x")).await;
        assert_eq!(run.finish().await, vec![0], "{what}");
        assert_eq!(n.load(Ordering::SeqCst), 3, "{what}: retried until a real bulk answer");
        assert_eq!(server.messages().len(), 5, "{what}");
        assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"es\"}"), 5.0, "{what}: counted once stored");
        assert_eq!(
            metric(&registry, "vigil_sink_request_failures_total{reason=\"invalid_answer\",sink=\"es\"}"),
            2.0,
            "{what}"
        );
    }
}

/// An empty 2xx body is not a bulk answer: retried, unless `accept_empty_response` says this
/// endpoint answers so.
#[tokio::test]
async fn an_empty_2xx_body_is_retried_unless_accept_empty_response_is_set() {
    let empty_then_real = || {
        let n = Arc::new(AtomicUsize::new(0));
        let k = n.clone();
        let script: support::es::RequestScript = Box::new(move |_| {
            if k.fetch_add(1, Ordering::SeqCst) < 2 {
                RequestAnswer::Refuse(Reply::status(200, ""))
            } else {
                RequestAnswer::Process(Duration::ZERO)
            }
        });
        (n, script)
    };
    let (n, script) = empty_then_real();
    let server = EsServer::scripted(script, Box::new(|_| None)).await;
    let (ctx, registry) = context();
    let mut run = Running::start(Box::new(ElasticsearchSink::new(&es_config(&server.url(), ""), &ctx).unwrap()), 1);
    run.send(events(3, "e")).await;
    assert_eq!(run.finish().await, vec![0]);
    assert_eq!(n.load(Ordering::SeqCst), 3, "the empty answers were retried");
    assert_eq!(server.messages().len(), 3);
    assert_eq!(metric(&registry, "vigil_sink_request_failures_total{reason=\"invalid_answer\",sink=\"es\"}"), 2.0);

    let (n, script) = empty_then_real();
    let server = EsServer::scripted(script, Box::new(|_| None)).await;
    let (ctx, registry) = context();
    let c = es_config(&server.url(), "accept_empty_response: true");
    let mut run = Running::start(Box::new(ElasticsearchSink::new(&c, &ctx).unwrap()), 1);
    run.send(events(3, "e")).await;
    assert_eq!(run.finish().await, vec![0]);
    assert_eq!(n.load(Ordering::SeqCst), 1, "the empty answer was taken, as configured");
    assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"es\"}"), 3.0);
    assert_eq!(metric(&registry, "vigil_sink_retries_total{sink=\"es\"}"), 0.0);
}

/// Per-item 400 mapping errors stay final: counted, dead-lettered, acknowledged; while a
/// per-item 403 (an index blocked read-only at the flood-stage watermark:
/// `cluster_block_exception`) waits for the block to lift.
#[tokio::test]
async fn item_400s_are_rejected_and_dead_lettered_while_item_403s_wait() {
    let blocked = Arc::new(AtomicUsize::new(0));
    let b = blocked.clone();
    let server = EsServer::scripted(
        Box::new(|_| RequestAnswer::Process(Duration::ZERO)),
        Box::new(move |doc| {
            let msg = doc.source["message"].as_str().unwrap_or_default();
            if msg.starts_with("mapping") && doc.index != "vigil-dead-letter" {
                Some((400, "mapper_parsing_exception".into()))
            } else if msg.starts_with("blocked") && b.fetch_add(1, Ordering::SeqCst) < 2 {
                Some((403, "cluster_block_exception".into()))
            } else {
                None
            }
        }),
    )
    .await;
    let (ctx, registry) = context();
    let c = es_config(&server.url(), "dead_letter_index: vigil-dead-letter");
    let mut run = Running::start(Box::new(ElasticsearchSink::new(&c, &ctx).unwrap()), 1);
    let src = source("ns", "p", "c");
    run.send(vec![
        event(&src, 1, 0, TS, Stream::Stdout, "mapping 0"),
        event(&src, 1, 1, TS, Stream::Stdout, "blocked 1"),
        event(&src, 1, 2, TS, Stream::Stdout, "ok 2"),
    ])
    .await;
    assert_eq!(run.finish().await, vec![0]);
    let mut stored = server.messages();
    stored.sort();
    assert_eq!(stored, vec!["blocked 1", "ok 2"]);
    assert_eq!(server.stored_in("vigil-dead-letter").len(), 1);
    assert_eq!(
        metric(&registry, "vigil_sink_events_rejected_total{reason=\"mapper_parsing_exception\",sink=\"es\"}"),
        1.0
    );
    assert_eq!(metric(&registry, "vigil_sink_events_dead_lettered_total{sink=\"es\"}"), 1.0);
    assert_eq!(metric(&registry, "vigil_sink_request_failures_total{reason=\"forbidden\",sink=\"es\"}"), 2.0);
}
