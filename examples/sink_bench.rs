//! Sink throughput: pushes synthetic events through the Loki and Elasticsearch sinks to a
//! local HTTP server that accepts everything, and reports events/s and wire bytes per event,
//! with a baseline measured in the same run: encoding the same events as the event-contract
//! NDJSON (what the stdout sink does), so the ratios survive a different machine.
//!
//! `cargo run --release --example sink_bench [events]` (default 200000).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use vigil::event::{Event, K8sMeta, Origin, Source, Stream};
use vigil::pipeline::{Acker, Chunk};
use vigil::sinks::{self, SinkConfig, SinkContext};

const CHUNK: usize = 500;

fn events(n: usize) -> Vec<Vec<Event>> {
    let sources: Vec<Arc<Source>> = (0..50)
        .map(|p| {
            Arc::new(Source {
                file: format!("/var/log/pods/shop_web-{p}_0d7c4f0e-4b7a-4a8e-9d55-{p:012}/nginx/0.log"),
                node: "node-a".into(),
                kubernetes: K8sMeta {
                    namespace: "shop".into(),
                    pod: format!("web-{p}"),
                    pod_uid: format!("0d7c4f0e-4b7a-4a8e-9d55-{p:012}"),
                    container: "nginx".into(),
                    container_id: None,
                    restart_count: Some(0),
                    ..K8sMeta::default()
                },
            })
        })
        .collect();
    let all: Vec<Event> = (0..n)
        .map(|i| Event {
            timestamp: 1_795_847_533_000_000_000 + i as i64 * 1000,
            stream: if i % 7 == 0 { Stream::Stderr } else { Stream::Stdout },
            message: format!(
                "10.0.{}.{} - - [28/Nov/2026:06:32:13 +0000] \"GET /api/v1/items/{i} HTTP/1.1\" 200 {} \"-\" \"kube-probe/1.31\"",
                i % 256,
                (i / 256) % 256,
                i % 5000
            ),
            malformed: false,
            truncated: false,
            source: sources[i % sources.len()].clone(),
            origin: Origin { file: (i % sources.len()) as u64, offset: i as u64 * 140, resume: i as u64 * 140 + 140 },
            parsed: None,
        })
        .collect();
    all.chunks(CHUNK).map(|c| c.to_vec()).collect()
}

async fn server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let is_bulk = req.uri().path().ends_with("/_bulk");
                    let _ = req.into_body().collect().await;
                    let resp = if is_bulk {
                        hyper::Response::new(Full::new(Bytes::from_static(
                            b"{\"took\":1,\"errors\":false,\"items\":[]}",
                        )))
                    } else {
                        hyper::Response::builder().status(204).body(Full::new(Bytes::new())).unwrap()
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(sock), svc).await;
            });
        }
    });
    addr
}

async fn run(name: &str, yaml: &str, chunks: &[Vec<Event>], baseline: f64) {
    let config: SinkConfig = serde_yaml_ng::from_str(yaml).unwrap();
    let registry = prometheus::Registry::new();
    let ctx = SinkContext::new(registry.clone(), "node-a".into()).unwrap();
    let sink = sinks::build(&config, &ctx).unwrap();
    let (tx, rx) = mpsc::channel(4);
    let (acker, mut acks) = Acker::channel();
    let started = Instant::now();
    let task = tokio::spawn(sink.run(rx, acker));
    let feed: Vec<Arc<Chunk>> =
        chunks.iter().enumerate().map(|(id, e)| Arc::new(Chunk { id: id as u64, events: e.clone() })).collect();
    for c in feed {
        tx.send(c).await.unwrap();
    }
    drop(tx);
    task.await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    let mut n = 0;
    while acks.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, chunks.len(), "every chunk acked");
    let events = chunks.iter().map(Vec::len).sum::<usize>() as f64;
    let m = ctx.sink_metrics(config.name());
    let wire = m.bytes_sent.get() as f64;
    let rate = events / secs;
    println!(
        "{name:<26} {:>10.0} events/s  {:>6.1} wire bytes/event  {:>5.2}x baseline",
        rate,
        wire / events,
        rate / baseline
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let chunks = events(n);
    let raw: usize = chunks.iter().flatten().map(|e| e.message.len()).sum();
    println!("{n} events, {:.1} message bytes/event", raw as f64 / n as f64);

    // Baseline: the event-contract NDJSON encoding of the same events (the stdout sink's work).
    let started = Instant::now();
    let mut out = Vec::with_capacity(1 << 20);
    let mut total = 0usize;
    for c in &chunks {
        out.clear();
        for e in c {
            e.write_json(&mut out);
        }
        total += out.len();
    }
    let baseline = n as f64 / started.elapsed().as_secs_f64();
    println!(
        "{:<26} {:>10.0} events/s  {:>6.1} bytes/event",
        "baseline (NDJSON encode)",
        baseline,
        total as f64 / n as f64
    );

    let addr = server().await;
    let url = format!("http://{addr}");
    run("loki protobuf+snappy", &format!("{{name: l, type: loki, endpoint: '{url}'}}"), &chunks, baseline).await;
    run("loki json", &format!("{{name: l, type: loki, endpoint: '{url}', encoding: json}}"), &chunks, baseline).await;
    run(
        "loki json+gzip",
        &format!("{{name: l, type: loki, endpoint: '{url}', encoding: json, compression: gzip}}"),
        &chunks,
        baseline,
    )
    .await;
    run("elasticsearch gzip", &format!("{{name: e, type: elasticsearch, endpoint: '{url}'}}"), &chunks, baseline).await;
    run(
        "elasticsearch uncompressed",
        &format!("{{name: e, type: elasticsearch, endpoint: '{url}', compression: none}}"),
        &chunks,
        baseline,
    )
    .await;
}
