//! End to end with the real binary: a temp node tree of CRI log files → vigil → the in-process
//! Loki and Elasticsearch servers at once. Every line arrives at both, in order per Loki stream;
//! an Elasticsearch outage delays only Elasticsearch; after a clean restart nothing that was
//! delivered is sent again.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::es::EsServer;
use support::loki::LokiServer;
use support::{Vigil, eventually, free_port, http_get};

const PODS: usize = 3;

fn log_path(root: &Path, pod: usize) -> PathBuf {
    root.join(format!("pods/shop_web-{pod}_uid-{pod}/nginx/0.log"))
}

/// Appends `n` CRI lines to every pod's file, numbered from `from`; stderr every third line.
fn write_lines(root: &Path, from: usize, n: usize) {
    for pod in 0..PODS {
        let p = log_path(root, pod);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&p).unwrap();
        let mut buf = String::new();
        for i in from..from + n {
            let stream = if i % 3 == 2 { "stderr" } else { "stdout" };
            buf.push_str(&format!("2026-11-28T06:32:13.{i:09}Z {stream} F web-{pod} {stream} line {i}\n"));
        }
        f.write_all(buf.as_bytes()).unwrap();
    }
}

/// What Loki must hold after lines `0..n` of every pod: (pod, stream) → lines in order.
fn expected(n: usize) -> std::collections::BTreeMap<(String, String), Vec<String>> {
    let mut m = std::collections::BTreeMap::new();
    for pod in 0..PODS {
        for i in 0..n {
            let stream = if i % 3 == 2 { "stderr" } else { "stdout" };
            m.entry((format!("web-{pod}"), stream.to_string()))
                .or_insert_with(Vec::new)
                .push(format!("web-{pod} {stream} line {i}"));
        }
    }
    m
}

fn loki_lines(loki: &LokiServer) -> std::collections::BTreeMap<(String, String), Vec<String>> {
    loki.lines().into_iter().map(|(l, v)| ((l["pod"].clone(), l["stream"].clone()), v)).collect()
}

fn config(root: &Path, dir: &Path, addr: SocketAddr, loki: &str, es: &str) -> String {
    format!(
        r#"
node_name: node-e2e
sources:
  containers:
    include: ["{root}/pods/*/*/*.log"]
    checkpoint_dir: {cp}
    poll_interval: 50ms
    checkpoint_interval: 100ms
sinks:
  - name: loki
    type: loki
    endpoint: {loki}
    tenant_id: e2e
    batch: {{timeout: 100ms}}
    retry: {{initial_backoff: 50ms, max_backoff: 300ms}}
  - name: es
    type: elasticsearch
    endpoint: {es}
    batch: {{timeout: 100ms}}
    retry: {{initial_backoff: 50ms, max_backoff: 300ms}}
metrics:
  listen: {addr}
log:
  level: warn
"#,
        root = root.display(),
        cp = dir.join("cp").display(),
    )
}

fn metrics(addr: SocketAddr) -> String {
    http_get(addr, "/metrics").map(|(_, body)| body).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_tree_to_loki_and_elasticsearch_at_once() {
    let loki = LokiServer::start().await;
    let es = EsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("node");
    write_lines(&root, 0, 100);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = config(&root, dir.path(), addr, &loki.url(), &es.url());
    let mut vigil = Vigil::start(dir.path(), &cfg, addr);
    tokio::task::block_in_place(|| vigil.wait_ready(Duration::from_secs(20)));

    eventually(30, "the first 100 lines per pod at both backends", || {
        loki.stored_count() == 300 && es.messages().len() == 300
    })
    .await;
    assert_eq!(loki_lines(&loki), expected(100));

    // Elasticsearch goes away; Loki keeps receiving; then Elasticsearch comes back.
    es.server.set_down(true);
    write_lines(&root, 100, 100);
    eventually(30, "Loki gets the new lines while Elasticsearch is down", || loki.stored_count() == 600).await;
    assert!(es.messages().len() < 600);
    es.server.set_down(false);
    eventually(30, "Elasticsearch catches up", || es.messages().len() == 600).await;
    assert_eq!(loki_lines(&loki), expected(200));

    let doc = es.state.lock().unwrap().stored.values().next().unwrap().clone();
    assert_eq!(doc["host"]["name"], "node-e2e");
    assert_eq!(doc["kubernetes"]["namespace"], "shop");
    assert!(doc["kubernetes"]["pod"]["name"].as_str().unwrap().starts_with("web-"));
    assert!(doc["log"]["file"]["path"].as_str().unwrap().ends_with("/nginx/0.log"));
    assert!(loki.state.lock().unwrap().pushes.iter().all(|p| p.tenant.as_deref() == Some("e2e")));

    // The receivers store a request before vigil has read their answer: wait for the counters.
    eventually(30, "the sink counters follow the answers", || {
        let m = tokio::task::block_in_place(|| metrics(addr));
        m.contains("vigil_sink_events_sent_total{sink=\"es\"} 600") && m.contains("vigil_sink_healthy{sink=\"es\"} 1")
    })
    .await;
    let m = tokio::task::block_in_place(|| metrics(addr));
    assert!(m.contains("vigil_sink_events_sent_total{sink=\"loki\"} 600"), "{m}");
    assert!(m.contains("vigil_sink_events_sent_total{sink=\"es\"} 600"), "{m}");
    assert!(m.contains("vigil_sink_healthy{sink=\"es\"} 1"), "{m}");

    // A clean restart: nothing delivered is sent again; new lines still flow.
    vigil.signal(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| vigil.wait_exit(Duration::from_secs(20))).expect("vigil exits");
    assert!(status.success(), "exit status {status:?}; stderr:\n{}", vigil.stderr());
    drop(vigil);
    let mut vigil = Vigil::start(dir.path(), &cfg, addr);
    tokio::task::block_in_place(|| vigil.wait_ready(Duration::from_secs(20)));
    write_lines(&root, 200, 10);
    eventually(30, "lines written after the restart", || loki.stored_count() == 630 && es.messages().len() == 630)
        .await;
    assert_eq!(loki_lines(&loki), expected(210));
    assert_eq!(loki.state.lock().unwrap().deduplicated, 0, "Loki was sent lines it already had");
    assert_eq!(es.state.lock().unwrap().resent_stored, 0, "Elasticsearch was sent documents it already had");
    vigil.signal(libc::SIGTERM);
    tokio::task::block_in_place(|| vigil.wait_exit(Duration::from_secs(20))).expect("vigil exits");
    loki.server.stop().await;
    es.server.stop().await;
}

/// Regression (issue "Lose nothing"): a rotated token made Elasticsearch answer 401 and vigil
/// dropped the batches, acked them, and checkpointed past them. With the real binary: while
/// the token is refused nothing is checkpointed, the log says what to check and the counter
/// moves; once the token file holds the new token every line arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_pauses_delivery_and_once_rotated_every_line_arrives() {
    use support::es::RequestAnswer;
    // Elasticsearch with security on accepts only the new key; anything else is its 401.
    let es = EsServer::scripted(
        Box::new(|req| {
            if req.authorization.as_deref() == Some("Bearer new-token") {
                RequestAnswer::Process(Duration::ZERO)
            } else {
                RequestAnswer::Refuse(support::server::Reply::json(
                    401,
                    &serde_json::json!({"error": {"type": "security_exception",
                        "reason": "unable to authenticate with provided credentials"}, "status": 401}),
                ))
            }
        }),
        Box::new(|_| None),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("node");
    let token = dir.path().join("token");
    std::fs::write(&token, "old-token\n").unwrap();
    write_lines(&root, 0, 50);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = format!(
        r#"
node_name: node-e2e
sources:
  containers:
    include: ["{root}/pods/*/*/*.log"]
    checkpoint_dir: {cp}
    poll_interval: 50ms
    checkpoint_interval: 100ms
sinks:
  - name: es
    type: elasticsearch
    endpoint: {es}
    auth: {{bearer_token_file: {token}}}
    batch: {{timeout: 100ms}}
    retry: {{initial_backoff: 50ms, max_backoff: 200ms}}
metrics:
  listen: {addr}
log:
  level: warn
"#,
        root = root.display(),
        cp = dir.path().join("cp").display(),
        es = es.url(),
        token = token.display(),
    );
    let mut vigil = Vigil::start(dir.path(), &cfg, addr);
    tokio::task::block_in_place(|| vigil.wait_ready(Duration::from_secs(20)));
    let failures = "vigil_sink_request_failures_total{reason=\"unauthorized\",sink=\"es\"}";
    let scrape = || tokio::task::block_in_place(|| metrics(addr));
    eventually(30, "401s counted on /metrics", || {
        scrape().lines().any(|l| l.strip_prefix(failures).is_some_and(|v| v.trim().parse::<f64>().unwrap() >= 3.0))
    })
    .await;
    assert!(scrape().contains("vigil_sink_healthy{sink=\"es\"} 0"));
    let checkpoint = || -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(dir.path().join("cp/checkpoints.json")).ok()?;
        serde_json::from_str(&text).ok()
    };
    let mut cp = serde_json::Value::Null;
    eventually(30, "a checkpoint of the three files written while refused", || {
        cp = checkpoint().unwrap_or_default();
        cp["files"].as_array().is_some_and(|f| f.len() == 3)
    })
    .await;
    for f in cp["files"].as_array().unwrap() {
        assert_eq!(f["offset"], serde_json::json!(0), "checkpointed past lines Elasticsearch refused: {cp}");
    }
    let stderr = vigil.stderr();
    assert!(stderr.contains("sink es: unauthorized: check credentials"), "no clear log line:\n{stderr}");
    assert!(es.messages().is_empty());

    std::fs::write(dir.path().join("token.new"), "new-token\n").unwrap();
    std::fs::rename(dir.path().join("token.new"), &token).unwrap();
    eventually(30, "every line once the token is rotated", || es.messages().len() == 3 * 50).await;
    // Elasticsearch stored them before vigil read its answer: wait for the health to follow.
    eventually(30, "healthy again", || scrape().contains("vigil_sink_healthy{sink=\"es\"} 1")).await;
    vigil.signal(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| vigil.wait_exit(Duration::from_secs(20))).expect("vigil exits");
    assert!(status.success(), "{status:?}");
    es.server.stop().await;
}
