//! The Loki sink against an in-process Loki that decodes the real wire format.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use support::loki::{Answer, LokiServer, labels};
use support::server::Reply;
use support::{Running, context, event, eventually, metric, source};
use vigil::event::{Event, Stream};
use vigil::sinks::loki::{LokiConfig, LokiSink};

fn config(url: &str, extra: &str) -> LokiConfig {
    let batch = if extra.contains("batch:") { "" } else { "batch: {timeout: 20ms}\n" };
    let yaml =
        format!("name: loki\nendpoint: {url}\nretry: {{initial_backoff: 20ms, max_backoff: 200ms}}\n{batch}{extra}");
    serde_yaml_ng::from_str(&yaml).unwrap()
}

fn sink(c: &LokiConfig) -> (Box<dyn vigil::sinks::Sink>, prometheus::Registry) {
    let (ctx, registry) = context();
    (Box::new(LokiSink::new(c, &ctx).unwrap()), registry)
}

/// `n` chunks of `per` events over `pods` pods, alternating stdout/stderr; messages name pod,
/// stream and a per-stream sequence number, timestamps increase.
/// Lines per (pod, stream), in order.
type PerStream = BTreeMap<(String, &'static str), Vec<String>>;

fn workload(pods: usize, n: usize, per: usize) -> (Vec<Vec<Event>>, PerStream) {
    let srcs: Vec<_> = (0..pods).map(|p| source("shop", &format!("pod-{p}"), "app")).collect();
    let mut expected = PerStream::new();
    let mut chunks = Vec::new();
    let mut k = 0u64;
    for _ in 0..n {
        let mut events = Vec::new();
        for _ in 0..per {
            let p = (k as usize) % pods;
            let stream = if (k / pods as u64) % 2 == 0 { Stream::Stdout } else { Stream::Stderr };
            let seq = expected.entry((format!("pod-{p}"), stream.as_str())).or_default();
            let msg = format!("pod-{p} {} line {}", stream.as_str(), seq.len());
            seq.push(msg.clone());
            events.push(event(&srcs[p], p as u64, k * 100, 1_795_847_533_000_000_000 + k as i64 * 1000, stream, &msg));
            k += 1;
        }
        chunks.push(events);
    }
    (chunks, expected)
}

fn by_pod_stream(server: &LokiServer) -> PerStream {
    server
        .lines()
        .into_iter()
        .map(|(l, lines)| {
            let stream = if l["stream"] == "stdout" { "stdout" } else { "stderr" };
            ((l["pod"].clone(), stream), lines)
        })
        .collect()
}

#[tokio::test]
async fn protobuf_push_delivers_every_line_once_in_order_per_stream() {
    let server = LokiServer::start().await;
    let c = config(
        &server.url(),
        "tenant_id: team-a\nstatic_labels: {cluster: prod}\nbatch: {max_events: 37, timeout: 20ms}",
    );
    let (s, registry) = sink(&c);
    let mut run = Running::start(s, 2);
    let (chunks, expected) = workload(3, 20, 50);
    for events in chunks {
        run.send(events).await;
    }
    let acks = run.finish().await;
    assert_eq!(acks, (0..20).collect::<Vec<_>>(), "every chunk acked exactly once");
    assert_eq!(by_pod_stream(&server), expected, "lines per stream, in order, none lost or repeated");
    {
        let st = server.state.lock().unwrap();
        assert!(st.bad_requests.is_empty(), "{:?}", st.bad_requests);
        assert_eq!(st.deduplicated, 0, "nothing accepted was sent again");
        let p = &st.pushes[0];
        assert_eq!(p.tenant.as_deref(), Some("team-a"));
        assert_eq!(p.content_type.as_deref(), Some("application/x-protobuf"));
        assert!(p.user_agent.as_deref().unwrap().starts_with("vigil/"));
        let l = &p.streams[0].labels;
        assert_eq!(l["namespace"], "shop");
        assert_eq!(l["container"], "app");
        assert_eq!(l["node"], "node-a");
        assert_eq!(l["cluster"], "prod");
        assert_eq!(l.len(), 6, "only the default labels + static: {l:?}");
        assert!(st.pushes.iter().all(|p| p.streams.iter().map(|s| s.entries.len()).sum::<usize>() <= 37));
        assert!(p.streams[0].entries.iter().all(|e| e.metadata.is_empty()), "no structured metadata by default");
    }
    assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"loki\"}"), 1000.0);
    assert!(metric(&registry, "vigil_sink_requests_total{sink=\"loki\",status=\"2xx\"}") >= 28.0);
    assert_eq!(metric(&registry, "vigil_sink_healthy{sink=\"loki\"}"), 1.0);
    assert_eq!(metric(&registry, "vigil_sink_in_flight_requests{sink=\"loki\"}"), 0.0);
    assert!(metric(&registry, "vigil_sink_last_success_timestamp_seconds{sink=\"loki\"}") > 1.7e9);
    server.server.stop().await;
}

#[tokio::test]
async fn entries_of_a_stream_are_sorted_by_timestamp_within_a_push() {
    let server = LokiServer::start().await;
    let (s, _r) = sink(&config(&server.url(), ""));
    let mut run = Running::start(s, 2);
    // Two files of one container (restart 0.log and 1.log) feed one stream; 1.log is read first.
    let src = source("ns", "p", "c");
    let ts = 1_795_847_533_000_000_000;
    run.send(vec![
        event(&src, 2, 0, ts + 30, Stream::Stdout, "c"),
        event(&src, 1, 0, ts + 10, Stream::Stdout, "a"),
        event(&src, 1, 10, ts + 20, Stream::Stdout, "b"),
        event(&src, 1, 20, ts + 20, Stream::Stdout, "b2 (same timestamp: read order kept)"),
    ])
    .await;
    run.finish().await;
    let lines: Vec<Vec<String>> = server.lines().into_values().collect();
    assert_eq!(lines, vec![vec!["a", "b", "b2 (same timestamp: read order kept)", "c"]]);
}

#[tokio::test]
async fn retryable_answers_are_retried_until_accepted_and_nothing_is_lost_or_doubled() {
    // 500, 429 with Retry-After, 260 (ingestion blocked: 2xx but not stored), a dropped
    // connection, then success.
    let answers = Arc::new(std::sync::Mutex::new(vec![
        Reply::status(500, "internal error"),
        Reply::status(429, "Ingestion rate limit exceeded").with_header("Retry-After", "0"),
        Reply::status(260, ""),
        Reply::Drop,
    ]));
    let a = answers.clone();
    let server = LokiServer::scripted(Box::new(move |_| match a.lock().unwrap().pop() {
        Some(r) => Answer::Refuse(r),
        None => Answer::Accept(Duration::ZERO),
    }))
    .await;
    let (s, registry) = sink(&config(&server.url(), "max_in_flight: 1"));
    let mut run = Running::start(s, 2);
    let (chunks, expected) = workload(2, 3, 10);
    for events in chunks {
        run.send(events).await;
    }
    assert_eq!(run.finish().await, vec![0, 1, 2]);
    assert_eq!(by_pod_stream(&server), expected);
    assert_eq!(server.state.lock().unwrap().deduplicated, 0);
    assert_eq!(metric(&registry, "vigil_sink_retries_total{sink=\"loki\"}"), 4.0);
    assert_eq!(metric(&registry, "vigil_sink_requests_total{sink=\"loki\",status=\"5xx\"}"), 1.0);
    assert_eq!(metric(&registry, "vigil_sink_requests_total{sink=\"loki\",status=\"4xx\"}"), 1.0);
    assert_eq!(metric(&registry, "vigil_sink_requests_total{sink=\"loki\",status=\"error\"}"), 1.0);
    assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"loki\"}"), 30.0);
}

#[tokio::test]
async fn a_400_is_counted_logged_and_acked_not_retried() {
    let server = LokiServer::scripted(Box::new(|p| {
        if p.has_line(|_, e| e.line.contains("too old")) {
            Answer::Refuse(Reply::status(
                400,
                "entry for stream '{pod=\"p\"}' has timestamp too old: 1970-01-01T00:00:00Z, oldest acceptable timestamp is: 2026-11-21T00:00:00Z",
            ))
        } else {
            Answer::Accept(Duration::ZERO)
        }
    }))
    .await;
    let (s, registry) = sink(&config(&server.url(), "max_in_flight: 1"));
    let mut run = Running::start(s, 1);
    let src = source("ns", "p", "c");
    run.send(vec![event(&src, 1, 0, 1, Stream::Stdout, "too old"), event(&src, 1, 10, 2, Stream::Stdout, "too old 2")])
        .await;
    // Wait for the first push so the next chunk is a separate request.
    eventually(10, "first push answered", || {
        metric(&registry, "vigil_sink_requests_total{sink=\"loki\",status=\"4xx\"}") == 1.0
    })
    .await;
    run.send(vec![event(&src, 1, 20, 1_795_847_533_000_000_000, Stream::Stdout, "fine")]).await;
    assert_eq!(run.finish().await, vec![0, 1]);
    assert_eq!(server.lines().into_values().collect::<Vec<_>>(), vec![vec!["fine".to_string()]]);
    assert_eq!(server.state.lock().unwrap().pushes.len(), 2, "the 400 was not retried");
    assert_eq!(metric(&registry, "vigil_sink_events_rejected_total{reason=\"too_old\",sink=\"loki\"}"), 2.0);
    assert_eq!(metric(&registry, "vigil_sink_retries_total{sink=\"loki\"}"), 0.0);
}

#[tokio::test]
async fn a_stream_held_back_by_429_does_not_block_streams_of_other_shards() {
    let blocked = Arc::new(AtomicBool::new(true));
    let b = blocked.clone();
    let server = LokiServer::scripted(Box::new(move |p| {
        if b.load(Ordering::SeqCst) && p.has_line(|l, _| l["pod"] == "noisy") {
            Answer::Refuse(
                Reply::status(429, "Per stream rate limit exceeded (limit: 3MB/sec) while attempting to ingest for stream '{pod=\"noisy\"}'")
                    .with_header("Retry-After", "0"),
            )
        } else {
            Answer::Accept(Duration::ZERO)
        }
    }))
    .await;
    let (s, registry) = sink(&config(&server.url(), "max_in_flight: 4\nbatch: {max_events: 5, timeout: 10ms}"));
    let mut run = Running::start(s, 4);
    let noisy = source("ns", "noisy", "c");
    let quiet: Vec<_> = (0..8).map(|i| source("ns", &format!("quiet-{i}"), "c")).collect();
    let mut events = vec![event(&noisy, 100, 0, 1, Stream::Stdout, "noisy 0")];
    for (i, q) in quiet.iter().enumerate() {
        events.push(event(q, i as u64, 0, 1, Stream::Stdout, &format!("quiet-{i} 0")));
    }
    run.send(events).await;
    // The noisy shard retries; every quiet stream outside its shard is delivered meanwhile.
    eventually(10, "the noisy stream was refused a few times", || {
        metric(&registry, "vigil_sink_retries_total{sink=\"loki\"}") >= 3.0
    })
    .await;
    let stored: Vec<String> = server.lines().into_keys().map(|l| l["pod"].clone()).collect();
    assert!(!stored.contains(&"noisy".to_string()));
    let held_back: Vec<String> = {
        let st = server.state.lock().unwrap();
        let mut pods: Vec<String> = st
            .pushes
            .iter()
            .filter(|p| p.has_line(|l, _| l["pod"] == "noisy"))
            .flat_map(|p| p.streams.iter().map(|s| s.labels["pod"].clone()))
            .collect();
        pods.sort();
        pods.dedup();
        pods
    };
    for i in 0..8 {
        let pod = format!("quiet-{i}");
        assert!(
            stored.contains(&pod) || held_back.contains(&pod),
            "{pod} is neither delivered nor in the held-back shard: blocked by another stream"
        );
    }
    assert!(stored.len() >= 2, "quiet streams of other shards were delivered: {stored:?}");
    assert_eq!(metric(&registry, "vigil_sink_healthy{sink=\"loki\"}"), 0.0);
    blocked.store(false, Ordering::SeqCst);
    assert_eq!(run.finish().await, vec![0]);
    assert_eq!(server.lines().len(), 9, "every stream arrived once the 429s stopped");
    assert_eq!(metric(&registry, "vigil_sink_healthy{sink=\"loki\"}"), 1.0);
}

#[tokio::test]
async fn backend_down_then_back_every_line_arrives_and_intake_stays_bounded() {
    let server = LokiServer::start().await;
    server.server.set_down(true);
    let (s, registry) = sink(&config(&server.url(), "max_in_flight: 2\nbatch: {max_events: 10, timeout: 10ms}"));
    let mut run = Running::start(s, 1);
    let (chunks, expected) = workload(4, 100, 10);
    let tx = run.tx.take().unwrap();
    // Kept only to see whether the sink still reads its input; dropped before the finish.
    let probe = tx.clone();
    let sent = Arc::new(AtomicUsize::new(0));
    let sent2 = sent.clone();
    let producer = tokio::spawn(async move {
        for (id, events) in chunks.into_iter().enumerate() {
            tx.send(Arc::new(vigil::pipeline::Chunk { id: id as u64, events })).await.unwrap();
            sent2.fetch_add(1, Ordering::SeqCst);
        }
    });
    // Positive signal first: the backend refused tries and the sink stopped taking its input
    // (the queue in front of it is full); then two more refused tries, so an unbounded sink
    // would have had ample time to read everything (which also ends the wait).
    let retries = || metric(&registry, "vigil_sink_retries_total{sink=\"loki\"}");
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
    let during_outage = sent.load(Ordering::SeqCst);
    eprintln!("chunks taken during the outage: {during_outage}");
    // 2 shards × (1 in flight + 1 ready + 1 building) batches of ≤ 10 events, chunks of 10
    // events, + the input queue (1) + one chunk of overshoot.
    assert!(during_outage <= 9, "the sink kept reading while its backend was down: {during_outage} chunks taken");
    assert!(metric(&registry, "vigil_sink_in_flight_requests{sink=\"loki\"}") <= 2.0);
    assert_eq!(metric(&registry, "vigil_sink_healthy{sink=\"loki\"}"), 0.0);
    server.server.set_down(false);
    producer.await.unwrap();
    let acks = run.finish().await;
    assert_eq!(acks, (0..100).collect::<Vec<_>>());
    assert_eq!(by_pod_stream(&server), expected);
    assert_eq!(server.state.lock().unwrap().deduplicated, 0);
}

/// The resent entry is the stream's previous entry in timestamp and line, which Loki documents
/// it ignores as an exact duplicate (Loki docs, overview, "Timestamp ordering": a line equal to
/// the previously received one in both timestamp and text is dropped; a line with the same
/// timestamp and other text is kept). The fake ignores exactly that case and nothing more.
#[tokio::test]
async fn a_slow_answer_past_the_timeout_is_retried_and_loki_deduplicates_it() {
    let first = Arc::new(AtomicBool::new(true));
    let f = first.clone();
    let server = LokiServer::scripted(Box::new(move |_| {
        // The first push is stored but answered after the client gave up.
        Answer::Accept(if f.swap(false, Ordering::SeqCst) { Duration::from_millis(800) } else { Duration::ZERO })
    }))
    .await;
    let (s, registry) = sink(&config(&server.url(), "request_timeout: 200ms"));
    let mut run = Running::start(s, 1);
    let src = source("ns", "p", "c");
    run.send(vec![event(&src, 1, 0, 1_795_847_533_000_000_000, Stream::Stdout, "once")]).await;
    assert_eq!(run.finish().await, vec![0]);
    assert_eq!(server.lines().into_values().collect::<Vec<_>>(), vec![vec!["once".to_string()]]);
    assert_eq!(server.state.lock().unwrap().deduplicated, 1);
    assert_eq!(metric(&registry, "vigil_sink_requests_total{sink=\"loki\",status=\"error\"}"), 1.0);
}

#[tokio::test]
async fn json_gzip_structured_metadata_and_the_max_streams_guard() {
    let server = LokiServer::start().await;
    let c = config(
        &server.url(),
        "encoding: json\ncompression: gzip\nstructured_metadata: [pod_uid, container_id]\nmax_streams: 2\nstatic_labels: {cluster: prod}\nlabels: [namespace, pod, stream]",
    );
    let (s, registry) = sink(&c);
    let mut run = Running::start(s, 1);
    let srcs: Vec<_> = (0..3).map(|i| source("ns", &format!("p{i}"), "c")).collect();
    let ts = 1_795_847_533_000_000_000;
    run.send(
        srcs.iter()
            .enumerate()
            .map(|(i, s)| event(s, i as u64, 0, ts, Stream::Stdout, &format!("from p{i}")))
            .collect(),
    )
    .await;
    run.finish().await;
    let st = server.state.lock().unwrap();
    let p = &st.pushes[0];
    assert_eq!(p.content_type.as_deref(), Some("application/json"));
    assert_eq!(p.content_encoding.as_deref(), Some("gzip"));
    let stored = &st.stored;
    assert_eq!(stored.len(), 3);
    let p0 = &stored[&labels(&[("cluster", "prod"), ("namespace", "ns"), ("pod", "p0"), ("stream", "stdout")])];
    assert_eq!(p0[0].line, "from p0");
    let mut md = p0[0].metadata.clone();
    md.sort();
    assert_eq!(md, vec![("container_id".into(), "cid-p0-c".into()), ("pod_uid".into(), "uid-p0".into())]);
    let overflow =
        &stored[&labels(&[("cluster", "prod"), ("node", "node-a"), ("stream", "stdout"), ("vigil_overflow", "true")])];
    assert_eq!(overflow[0].line, "from p2", "the third stream went to the overflow stream, not dropped");
    drop(st);
    assert_eq!(metric(&registry, "vigil_sink_loki_stream_overflow_events_total{sink=\"loki\"}"), 1.0);
}

#[test]
fn validation_lists_every_problem_with_its_path() {
    let yaml = r#"
sinks:
  - name: loki
    type: loki
    endpoint: loki:3100
    tenant_id: "a|b"
    static_labels: {"app.kubernetes.io/name": x, pod: y}
    max_streams: 0
    max_in_flight: 0
    batch: {max_events: 0, max_bytes: 1GiB}
    retry: {initial_backoff: 10s, max_backoff: 1s}
    tls: {cert_file: /c.pem}
    auth: {bearer_token: t, bearer_token_file: /f}
"#;
    let err = vigil::config::Config::from_yaml(yaml, &|_| None).unwrap_err().to_string();
    for needle in [
        "sinks[0].endpoint",
        "sinks[0].tenant_id",
        "sinks[0].static_labels.app.kubernetes.io/name",
        "sinks[0].static_labels.pod",
        "sinks[0].max_streams",
        "sinks[0].max_in_flight",
        "sinks[0].batch.max_events",
        "sinks[0].batch.max_bytes",
        "sinks[0].retry.max_backoff",
        "sinks[0].tls",
        "sinks[0].auth",
    ] {
        assert!(err.contains(needle), "missing {needle} in:\n{err}");
    }
    assert!(!err.contains("a|b"), "the tenant is a secret: {err}");
}

#[test]
fn unknown_keys_and_high_cardinality_labels_are_refused() {
    for bad in ["labels: [message]", "labels: [pod_uid]", "batchsize: 10"] {
        let yaml = format!("sinks:\n  - name: l\n    type: loki\n    endpoint: http://l:3100\n    {bad}\n");
        assert!(vigil::config::Config::from_yaml(&yaml, &|_| None).is_err(), "{bad} was accepted");
    }
}

#[tokio::test]
async fn a_413_from_a_proxy_splits_the_push_and_keeps_stream_order() {
    let server = LokiServer::scripted(Box::new(|p| {
        if p.streams.iter().map(|s| s.entries.len()).sum::<usize>() > 3 {
            Answer::Refuse(Reply::status(413, "<html>413 Request Entity Too Large</html>"))
        } else {
            Answer::Accept(Duration::ZERO)
        }
    }))
    .await;
    let (s, registry) = sink(&config(&server.url(), "max_in_flight: 1"));
    let mut run = Running::start(s, 1);
    let (chunks, expected) = workload(1, 1, 10);
    for events in chunks {
        run.send(events).await;
    }
    assert_eq!(run.finish().await, vec![0]);
    assert_eq!(by_pod_stream(&server), expected);
    assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"loki\"}"), 10.0);
}

#[tokio::test]
async fn a_rotated_bearer_token_file_is_used_from_the_next_push_on() {
    let server = LokiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first-token\n").unwrap();
    let (s, registry) =
        sink(&config(&server.url(), &format!("max_in_flight: 1\nauth: {{bearer_token_file: {}}}", token.display())));
    let mut run = Running::start(s, 1);
    let src = source("ns", "p", "c");
    run.send(vec![event(&src, 1, 0, 1_795_847_533_000_000_000, Stream::Stdout, "a")]).await;
    eventually(10, "first push", || metric(&registry, "vigil_sink_events_sent_total{sink=\"loki\"}") == 1.0).await;
    // Rotated the way kubelet swaps projected tokens: a new file renamed over the old path.
    std::fs::write(dir.path().join("new"), "second-token-longer\n").unwrap();
    std::fs::rename(dir.path().join("new"), &token).unwrap();
    run.send(vec![event(&src, 1, 10, 1_795_847_533_000_000_001, Stream::Stdout, "b")]).await;
    run.finish().await;
    let auth: Vec<Option<String>> =
        server.state.lock().unwrap().pushes.iter().map(|p| p.authorization.clone()).collect();
    assert_eq!(auth, vec![Some("Bearer first-token".into()), Some("Bearer second-token-longer".into())]);
}

#[tokio::test]
async fn a_partial_400_counts_only_the_entries_loki_ignored() {
    let server = LokiServer::scripted(Box::new(|_| {
        Answer::Refuse(Reply::status(
            400,
            "entry with timestamp 2026-11-28 06:32:13 +0000 UTC ignored, reason: 'entry too far behind',\nuser 'fake', total ignored: 1 out of 3 for stream: {pod=\"p\"}",
        ))
    }))
    .await;
    let (s, registry) = sink(&config(&server.url(), ""));
    let mut run = Running::start(s, 1);
    let src = source("ns", "p", "c");
    run.send((0..3).map(|i| event(&src, 1, i, 1_795_847_533_000_000_000 + i as i64, Stream::Stdout, "x")).collect())
        .await;
    assert_eq!(run.finish().await, vec![0]);
    assert_eq!(metric(&registry, "vigil_sink_events_rejected_total{reason=\"out_of_order\",sink=\"loki\"}"), 1.0);
    assert_eq!(metric(&registry, "vigil_sink_events_sent_total{sink=\"loki\"}"), 2.0);
}
