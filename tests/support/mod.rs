//! Test support for the sink tests: in-process Loki and Elasticsearch servers that decode the
//! real wire formats and answer like the real servers, plus helpers to build events and run a
//! sink. Each test binary uses a different subset.
#![allow(dead_code)]

pub mod es;
pub mod loki;
pub mod server;

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use vigil::event::{Event, K8sMeta, Origin, Source, Stream};
use vigil::pipeline::{Acker, Chunk};
use vigil::sinks::{Sink, SinkContext};

/// A source (one container's log file) for test events.
pub fn source(ns: &str, pod: &str, container: &str) -> Arc<Source> {
    Arc::new(Source {
        file: format!("/var/log/pods/{ns}_{pod}_uid-{pod}/{container}/0.log"),
        node: "node-a".into(),
        kubernetes: K8sMeta {
            namespace: ns.into(),
            pod: pod.into(),
            pod_uid: format!("uid-{pod}"),
            container: container.into(),
            container_id: Some(format!("cid-{pod}-{container}")),
            restart_count: Some(0),
        },
    })
}

/// An event of `src`; file key and offset identify it (the `_id` basis).
pub fn event(src: &Arc<Source>, file: u64, offset: u64, ts: i64, stream: Stream, message: &str) -> Event {
    Event {
        timestamp: ts,
        stream,
        message: message.into(),
        malformed: false,
        truncated: false,
        source: src.clone(),
        origin: Origin { file, offset, resume: offset + 1 },
    }
}

pub fn context() -> (SinkContext, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    (SinkContext::new(registry.clone(), "node-a".into()).unwrap(), registry)
}

/// A running sink: its input, its acks, its task.
pub struct Running {
    pub tx: Option<mpsc::Sender<Arc<Chunk>>>,
    pub acks: mpsc::UnboundedReceiver<u64>,
    pub task: tokio::task::JoinHandle<()>,
    next_id: u64,
}

impl Running {
    pub fn start(sink: Box<dyn Sink>, queue: usize) -> Self {
        let (tx, rx) = mpsc::channel(queue);
        let (acker, acks) = Acker::channel();
        let task = tokio::spawn(sink.run(rx, acker));
        Self { tx: Some(tx), acks, task, next_id: 0 }
    }

    /// Sends one chunk; returns its id.
    pub async fn send(&mut self, events: Vec<Event>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.tx.as_ref().expect("input open").send(Arc::new(Chunk { id, events })).await.expect("sink alive");
        id
    }

    /// Closes the input and waits (bounded) for the sink to return; returns every ack, sorted,
    /// and checks none came twice.
    pub async fn finish(mut self) -> Vec<u64> {
        self.tx = None;
        tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("sink flushed in time").unwrap();
        let mut acks = Vec::new();
        while let Ok(id) = self.acks.try_recv() {
            acks.push(id);
        }
        let n = acks.len();
        acks.sort_unstable();
        acks.dedup();
        assert_eq!(acks.len(), n, "a chunk was acked twice");
        acks
    }
}

/// Reads a metric value from the registry's text exposition (`name{labels}` exactly as printed).
pub fn metric(registry: &prometheus::Registry, series: &str) -> f64 {
    let mut buf = Vec::new();
    prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).map(|v| v.parse().unwrap()))
        .unwrap_or(0.0)
}

/// Waits until `cond` holds, at most `secs` seconds.
pub async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
