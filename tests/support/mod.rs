//! Shared test support: free ports, a tiny HTTP/1.0 GET client, the real vigil binary as a
//! child process, and a real Prometheus server; for the sink tests, in-process Loki,
//! Elasticsearch and OTLP servers that decode the real wire formats (`loki`, `es`, `otlp`, on
//! `server`) and helpers to build events and run a sink. Every server binds 127.0.0.1 and is stopped on
//! drop; every wait is bounded. Each test binary uses a different subset.
#![allow(dead_code)]

pub mod es;
pub mod loki;
pub mod node_collectors;
pub mod otlp;
pub mod prometheus;
pub mod server;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET over a fresh connection; returns (status, body). Bounded by a 10 s timeout.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Polls `f` every 20 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn vigil_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vigil")
}

/// The real vigil binary running a config file; killed on drop.
pub struct Vigil {
    pub child: Child,
    pub addr: SocketAddr,
    pub config: PathBuf,
}

impl Vigil {
    /// Writes `config` (which must listen on `addr`) into `dir` and starts `vigil run`.
    /// stdout and stderr go to files in `dir` (vigil.stdout, vigil.stderr).
    pub fn start(dir: &Path, config: &str, addr: SocketAddr) -> Vigil {
        Self::start_with_env(dir, config, addr, &[])
    }

    /// `start`, with extra environment variables for the child.
    pub fn start_with_env(dir: &Path, config: &str, addr: SocketAddr, env: &[(&str, &str)]) -> Vigil {
        let path = dir.join("vigil.yaml");
        std::fs::write(&path, config).unwrap();
        let out = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("vigil.stdout")).unwrap();
        let err = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("vigil.stderr")).unwrap();
        let child = Command::new(vigil_bin())
            .args(["run", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        Vigil { child, addr, config: path }
    }

    /// Waits until /readyz answers 200; panics with vigil's stderr after `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let addr = self.addr;
        let ok = wait_for(timeout, || match http_get(addr, "/readyz") {
            Ok((200, _)) => Some(()),
            _ => None,
        });
        if ok.is_none() {
            let _ = self.child.kill();
            let stderr = std::fs::read_to_string(self.config.with_file_name("vigil.stderr")).unwrap_or_default();
            panic!("vigil did not become ready within {timeout:?}; stderr:\n{stderr}");
        }
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for exit at most `timeout`; None if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_for(timeout, || self.child.try_wait().ok().flatten())
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.config.with_file_name("vigil.stderr")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.config.with_file_name("vigil.stdout")).unwrap_or_default()
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- sink test helpers ----

use std::sync::Arc;
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
            ..K8sMeta::default()
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
        parsed: None,
    }
}

pub fn context() -> (SinkContext, ::prometheus::Registry) {
    let registry = ::prometheus::Registry::new();
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
pub fn metric(registry: &::prometheus::Registry, series: &str) -> f64 {
    let mut buf = Vec::new();
    ::prometheus::Encoder::encode(&::prometheus::TextEncoder::new(), &registry.gather(), &mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).map(|v| v.parse().unwrap()))
        .unwrap_or(0.0)
}

/// The value of the first counter or gauge series named `name` that carries every pair of
/// `labels` (others may be present); panics when there is none.
pub fn series_value(registry: &::prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    for mf in registry.gather() {
        if mf.name() != name {
            continue;
        }
        for m in mf.get_metric() {
            if labels.iter().all(|(k, v)| m.get_label().iter().any(|l| l.name() == *k && l.value() == *v)) {
                return match mf.get_field_type() {
                    ::prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
                    _ => m.get_gauge().get_value(),
                };
            }
        }
    }
    panic!("no series {name}{labels:?}");
}

/// Waits until `cond` holds, at most `secs` seconds.
pub async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
