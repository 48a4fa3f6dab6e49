//! HTTP sinks over TLS: a private CA from `tls.ca_file`, client certificates, and
//! `insecure_skip_verify`; an unknown CA is refused (and retried, never dropped).

mod support;

use std::sync::Arc;
use support::server::{Handler, Reply, TestServer, fixture, tls_config};
use support::{Running, context, event, eventually, metric, source};
use vigil::event::Stream;
use vigil::sinks::elasticsearch::{ElasticsearchConfig, ElasticsearchSink};

/// An HTTPS front that answers every `_bulk` with success for the given number of items.
async fn https_es(require_client_cert: bool) -> TestServer {
    let handler: Handler = Arc::new(|req: support::server::Request| {
        let body = support::server::decoded_body(&req).unwrap();
        let n = body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() / 2;
        let items: Vec<_> = (0..n).map(|_| serde_json::json!({"create": {"status": 201}})).collect();
        Reply::json(200, &serde_json::json!({"errors": false, "items": items}))
    });
    TestServer::start_tls(handler, tls_config(require_client_cert)).await
}

fn config(endpoint: &str, tls: &str) -> ElasticsearchConfig {
    let yaml = format!(
        "name: es\nendpoint: {endpoint}\nretry: {{initial_backoff: 20ms, max_backoff: 100ms}}\nbatch: {{timeout: 10ms}}\ntls: {tls}\n"
    );
    serde_yaml_ng::from_str(&yaml).unwrap()
}

async fn deliver_one(c: &ElasticsearchConfig) -> prometheus::Registry {
    let (ctx, registry) = context();
    let mut run = Running::start(Box::new(ElasticsearchSink::new(c, &ctx).unwrap()), 1);
    run.send(vec![event(&source("ns", "p", "c"), 1, 0, 1, Stream::Stdout, "secret line")]).await;
    assert_eq!(run.finish().await, vec![0]);
    registry
}

#[tokio::test]
async fn private_ca_from_ca_file() {
    let server = https_es(false).await;
    let c = config(&server.https_url(), &format!("{{ca_file: {}}}", fixture("ca.pem").display()));
    let r = deliver_one(&c).await;
    assert_eq!(metric(&r, "vigil_sink_events_sent_total{sink=\"es\"}"), 1.0);
    server.stop().await;
}

#[tokio::test]
async fn client_certificate_for_mutual_tls() {
    let server = https_es(true).await;
    let tls = format!(
        "{{ca_file: {}, cert_file: {}, key_file: {}}}",
        fixture("ca.pem").display(),
        fixture("client.pem").display(),
        fixture("client.key").display()
    );
    let r = deliver_one(&config(&server.https_url(), &tls)).await;
    assert_eq!(metric(&r, "vigil_sink_events_sent_total{sink=\"es\"}"), 1.0);
    server.stop().await;
}

#[tokio::test]
async fn insecure_skip_verify_accepts_an_unknown_ca() {
    let server = https_es(false).await;
    let r = deliver_one(&config(&server.https_url(), "{insecure_skip_verify: true}")).await;
    assert_eq!(metric(&r, "vigil_sink_events_sent_total{sink=\"es\"}"), 1.0);
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_ca_is_refused_and_retried_not_dropped() {
    let server = https_es(false).await;
    let (ctx, registry) = context();
    let c = config(&server.https_url(), "{}");
    let mut run = Running::start(Box::new(ElasticsearchSink::new(&c, &ctx).unwrap()), 1);
    run.send(vec![event(&source("ns", "p", "c"), 1, 0, 1, Stream::Stdout, "x")]).await;
    eventually(10, "TLS failures are retried", || metric(&registry, "vigil_sink_retries_total{sink=\"es\"}") >= 2.0)
        .await;
    assert!(metric(&registry, "vigil_sink_requests_total{sink=\"es\",status=\"error\"}") >= 2.0);
    assert!(run.acks.try_recv().is_err(), "nothing acked: the line was not delivered");
    // The sink is still retrying; shutting it down leaves the chunk unacked (read again later).
    run.task.abort();
    server.stop().await;
}

#[test]
fn a_missing_ca_file_fails_at_start_with_its_path() {
    let (ctx, _r) = context();
    let c = config("https://127.0.0.1:9", "{ca_file: /nonexistent/ca.pem}");
    let err = ElasticsearchSink::new(&c, &ctx).err().expect("build fails").to_string();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    assert!(err.contains("sink 'es'"), "{err}");
}
