//! Issue 11 §2-4 end to end with the real binary: CRI files of two namespaces → parse,
//! transforms (drop, redact, rate_limit) → Loki with a tenant per namespace and Elasticsearch
//! with `match: prod-*` and an index per namespace (the in-process servers decode the real wire
//! formats). Plus `vigil validate`-style errors with their paths.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use support::es::EsServer;
use support::loki::LokiServer;
use support::{Vigil, eventually, free_port, http_get};
use vigil::config::{Config, Error};

fn append(root: &Path, ns: &str, lines: &[String]) {
    let p = root.join(format!("pods/{ns}_web_uid-{ns}/app/0.log"));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&p).unwrap();
    for (i, l) in lines.iter().enumerate() {
        writeln!(f, "2026-11-28T06:32:13.{i:09}Z stdout F {l}").unwrap();
    }
}

fn metrics(addr: SocketAddr) -> String {
    http_get(addr, "/metrics").map(|(_, body)| body).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_transform_and_route_per_namespace() {
    let loki = LokiServer::start().await;
    let es = EsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("node");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = format!(
        r#"
node_name: node-p
sources:
  containers:
    include: ["{root}/pods/*/*/*.log"]
    checkpoint_dir: {cp}
    poll_interval: 50ms
    checkpoint_interval: 50ms
transforms:
  - name: drop-health
    type: drop
    when: {{message: "GET /healthz"}}
  - name: redact-tokens
    type: redact
    builtin: [bearer_token]
  - name: limit-dev
    type: rate_limit
    when: {{namespace: dev}}
    lines_per_second: 5
sinks:
  - name: loki
    type: loki
    endpoint: {loki}
    tenant_id: "{{kubernetes.namespace}}"
    level_label: true
    batch: {{timeout: 50ms}}
  - name: es
    type: elasticsearch
    endpoint: {es}
    index: "logs-{{kubernetes.namespace}}-%Y.%m.%d"
    match: {{namespace: prod-*}}
    batch: {{timeout: 50ms}}
metrics:
  listen: {addr}
log:
  level: warn
"#,
        root = root.display(),
        cp = dir.path().join("cp").display(),
        loki = loki.url(),
        es = es.url(),
    );
    append(
        &root,
        "prod-a",
        &[
            r#"{"level":"ERROR","msg":"payment failed","order":42}"#.to_string(),
            "GET /healthz 200".to_string(),
            "Authorization: Bearer abc.def.ghi sent".to_string(),
        ],
    );
    // 20 lines at once: the rate limit (5/s) keeps 5 of them, unless a second boundary falls
    // between two batches; at least 10 are over.
    append(&root, "dev", &(0..20).map(|i| format!("level=debug msg=\"dev line {i}\"")).collect::<Vec<_>>());

    let mut vigil = Vigil::start(dir.path(), &cfg, addr);
    tokio::task::block_in_place(|| vigil.wait_ready(Duration::from_secs(20)));

    eventually(30, "prod-a's two kept lines at Elasticsearch", || es.messages().len() == 2).await;
    eventually(30, "the dropped and rate-limited lines counted", || {
        let m = tokio::task::block_in_place(|| metrics(addr));
        m.contains("vigil_transform_dropped_total{transform=\"drop-health\"} 1")
            && m.lines().any(|l| {
                l.starts_with("vigil_transform_dropped_total{transform=\"limit-dev\"}")
                    && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v >= 10.0)
            })
    })
    .await;
    let m = tokio::task::block_in_place(|| metrics(addr));
    assert!(m.contains("vigil_transform_dropped_total{transform=\"redact-tokens\"} 0"), "{m}");

    // Elasticsearch: only prod-a, in its own index, parsed.
    let docs = es.stored_in("logs-prod-a-2026.11.28");
    assert_eq!(docs.len(), 2, "{:?}", es.messages());
    let parsed = docs.iter().find(|d| d["message"] == "payment failed").expect("the JSON line, its msg lifted");
    assert_eq!(parsed["log"]["level"], "error");
    assert_eq!(parsed["fields"]["order"], 42);
    assert!(docs.iter().any(|d| d["message"] == "Authorization: Bearer [REDACTED] sent"), "{docs:?}");
    assert!(es.messages().iter().all(|m| !m.contains("dev line") && !m.contains("healthz")));

    // Loki: one tenant per namespace, level as a label, the line as written.
    eventually(30, "prod-a's and dev's kept lines at Loki", || loki.stored_count() >= 7).await;
    {
        let state = loki.state.lock().unwrap();
        for push in &state.pushes {
            let tenant = push.tenant.as_deref().unwrap();
            for s in &push.streams {
                assert_eq!(s.labels["namespace"], tenant, "a push holds one tenant's lines only");
            }
        }
        let prod: Vec<_> = state.stored.iter().filter(|(l, _)| l["namespace"] == "prod-a").collect();
        assert!(prod.iter().any(|(l, e)| l.get("level").map(String::as_str) == Some("error")
            && e.iter().any(|e| e.line == r#"{"level":"ERROR","msg":"payment failed","order":42}"#)));
        let dev: usize = state.stored.iter().filter(|(l, _)| l["namespace"] == "dev").map(|(_, e)| e.len()).sum();
        assert!((5..=10).contains(&dev), "rate_limit kept {dev} of 20 dev lines");
        assert!(state.stored.values().flatten().all(|e| !e.line.contains("healthz")));
    }

    // Everything was handled, dropped lines included: the checkpoint reaches each file's end.
    vigil.signal(libc::SIGTERM);
    let status = tokio::task::block_in_place(|| vigil.wait_exit(Duration::from_secs(20))).expect("vigil exits");
    assert!(status.success(), "{}", vigil.stderr());
    let before = loki.stored_count();
    let mut again = Vigil::start(dir.path(), &cfg, addr);
    tokio::task::block_in_place(|| again.wait_ready(Duration::from_secs(20)));
    append(&root, "prod-a", &["after restart".to_string()]);
    eventually(30, "the new line arrives at both", || loki.stored_count() == before + 1 && es.messages().len() == 3)
        .await;
    // Neither receiver saw a line twice (both store duplicates once and count them).
    assert_eq!(es.state.lock().unwrap().resent_stored, 0, "a line was read again after the restart");
    assert_eq!(loki.state.lock().unwrap().deduplicated, 0, "a line was read again after the restart");
    assert!(
        tokio::task::block_in_place(|| metrics(addr))
            .contains("vigil_transform_dropped_total{transform=\"drop-health\"} 0")
    );
}

fn errors(yaml: &str) -> Vec<String> {
    match Config::from_yaml(yaml, &|_| None) {
        Err(Error::Invalid(e)) => e,
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(c) => panic!("config should be invalid: {c:?}"),
    }
}

#[test]
fn validate_names_every_processing_mistake_with_its_path() {
    let e = errors(
        r#"
transforms:
  - {name: a, type: drop}
  - {name: a, type: redact, regex: ["(unclosed"]}
  - {name: s, type: sample, rate: 0, when: {namespace: "[bad", stream: both, message: "*"}}
sinks:
  - name: loki
    type: loki
    endpoint: http://loki:3100
    tenant_id: "{kubernetes.nmespace}"
  - name: es
    type: elasticsearch
    endpoint: http://es:9200
    index: "logs-{namespace}-%Y"
    match: {pod: "[x", level: [debug]}
"#,
    );
    let all = e.join("\n");
    for needle in [
        "transforms[0].when: is missing or empty",
        "transforms[1].name: 'a' is used by another transform",
        "transforms[1].regex[0]: '(unclosed' is not a regular expression",
        "transforms[2].rate: is 0",
        "transforms[2].when.namespace[0]: '[bad' is not a glob",
        "transforms[2].when.stream[0]: 'both' is not a stream",
        "transforms[2].when.message: '*' is not a regular expression",
        "sinks[0].tenant_id: '{kubernetes.nmespace}' uses the unknown field 'kubernetes.nmespace'",
        "sinks[1].index: 'logs-{namespace}-%Y' uses the unknown field 'namespace'",
        "sinks[1].match.pod[0]: '[x' is not a glob",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    assert_eq!(e.len(), 10, "{all}");
}

#[test]
fn unknown_keys_of_the_processing_config_are_named() {
    let e = errors("transforms:\n  - {name: d, type: drop, whenn: {pod: x}}\n");
    assert!(e[0].starts_with("transforms[0]: unknown field `whenn`"), "{e:?}");
    let e = errors("sources:\n  containers:\n    parse: yaml\n");
    assert!(e[0].starts_with("sources.containers.parse: unknown variant `yaml`"), "{e:?}");
    let e = errors("sinks:\n  - {name: s, type: stdout, match: {namespaces: x}}\n");
    // A sink entry is buffered by serde for its `type` tag, so the path stops at the sink.
    assert!(e[0].starts_with("sinks[0]: unknown field `namespaces`"), "{e:?}");
}

#[test]
fn the_processing_keys_parse() {
    let c = Config::from_yaml(
        r#"
sources:
  containers:
    parse: json
    use_message_time: true
    max_fields: 20
transforms:
  - {name: drop-kube-system, type: drop, when: {namespace: kube-system}}
  - {name: drop-debug-prod, type: drop, when: {namespace: "prod-*", level: [debug, trace]}}
  - {name: tokens, type: redact, builtin: [bearer_token, aws_access_key, credit_card], regex: ["password=\\S+"], replacement: "***"}
  - {name: sample-noisy, type: sample, rate: 10, when: {container: [chatty, noisy-*]}}
  - {name: limit, type: rate_limit, lines_per_second: 500, when: {stream: stdout}}
sinks:
  - {name: out, type: stdout, match: {namespace: [a, b]}}
"#,
        &|_| None,
    )
    .unwrap();
    assert_eq!(c.transforms.len(), 5);
    assert!(c.sinks[0].route().is_some());
    assert!(c.sources.containers.use_message_time);
}

/// `parsed_fields: structured_metadata`: the line is the lifted message, the fields and trace
/// ids are structured metadata (Loki 3's per-entry `LabelPairAdapter`s), `level` a label.
#[tokio::test]
async fn loki_gets_parsed_fields_as_structured_metadata() {
    use vigil::process::parse::{ParseMode, ParseSettings, parse_event};
    let loki = LokiServer::start().await;
    let yaml = format!(
        "name: loki\nendpoint: {}\nlevel_label: true\nparsed_fields: structured_metadata\nbatch: {{timeout: 20ms}}\n",
        loki.url()
    );
    let c: vigil::sinks::loki::LokiConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    let (ctx, _registry) = support::context();
    let sink = Box::new(vigil::sinks::loki::LokiSink::new(&c, &ctx).unwrap());
    let src = support::source("shop", "web", "app");
    let mut e = support::event(
        &src,
        1,
        0,
        1_795_847_533_000_000_000,
        vigil::event::Stream::Stdout,
        r#"{"level":"warn","msg":"slow query","trace_id":"t1","ms":250}"#,
    );
    parse_event(&mut e, &ParseSettings { mode: ParseMode::Auto, use_message_time: false, max_fields: 10 });
    let mut run = support::Running::start(sink, 2);
    run.send(vec![e]).await;
    assert_eq!(run.finish().await, [0]);
    let state = loki.state.lock().unwrap();
    let (labels, entries) = state.stored.iter().next().expect("one stream");
    assert_eq!(labels["level"], "warn");
    assert_eq!(entries[0].line, "slow query");
    let md: std::collections::BTreeMap<_, _> = entries[0].metadata.iter().cloned().collect();
    assert_eq!(md.get("trace_id").map(String::as_str), Some("t1"));
    assert_eq!(md.get("ms").map(String::as_str), Some("250"));
}
