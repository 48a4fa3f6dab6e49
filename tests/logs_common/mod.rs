//! Test harness for the log source: the real `LogSource` and `Pipeline`, with a sink that
//! records what it receives and acks it (as a real sink does after delivery).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use vigil::config::{ByteSize, HumanDuration};
use vigil::logs::LogSource;
use vigil::logs::config::ContainersConfig;
use vigil::pipeline::{Acker, Chunk, Pipeline};

/// (file, message, malformed, truncated)
pub type Got = Arc<Mutex<Vec<(String, String, bool, bool)>>>;

pub struct Running {
    pub source: LogSource,
    pub pipeline: Pipeline,
    pub sink: tokio::task::JoinHandle<()>,
    pub registry: prometheus::Registry,
}

/// A config for tests: fast polls and rescans.
pub fn config(root: &std::path::Path, checkpoints: &std::path::Path) -> ContainersConfig {
    let mut c = ContainersConfig {
        include: vec![format!("{}/pods/*/*/*.log", root.display()), format!("{}/docker/*/*-json.log", root.display())],
        checkpoint_dir: checkpoints.display().to_string(),
        ..ContainersConfig::default()
    };
    c.poll_interval = HumanDuration::millis(20);
    c.rescan_interval = HumanDuration::millis(200);
    c.checkpoint_interval = HumanDuration::millis(100);
    c.rotate_wait = HumanDuration::millis(300);
    c.partial_flush_timeout = HumanDuration::secs(5);
    c.read_budget = ByteSize::kib(16);
    c
}

pub async fn start(cfg: &ContainersConfig, got: Got) -> Running {
    start_slow(cfg, got, Duration::ZERO).await
}

/// Like `start`, with a sink that takes `delay` per chunk (backpressure).
pub async fn start_slow(cfg: &ContainersConfig, got: Got, delay: Duration) -> Running {
    let (_open, gate) = tokio::sync::watch::channel(true);
    start_gated(cfg, got, delay, gate).await
}

/// Like `start_slow`, with a sink that delivers nothing while `gate` is false (a backend that
/// is down: the chunk it holds and everything behind it wait).
pub async fn start_gated(
    cfg: &ContainersConfig,
    got: Got,
    delay: Duration,
    mut gate: tokio::sync::watch::Receiver<bool>,
) -> Running {
    let registry = prometheus::Registry::new();
    let (acker, ack_rx) = Acker::channel();
    let (sink_tx, mut sink_rx) = mpsc::channel::<Arc<Chunk>>(4);
    let sink = tokio::spawn(async move {
        while let Some(c) = sink_rx.recv().await {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            // Closed sender: the gate stays as it is.
            let _ = gate.wait_for(|open| *open).await;
            {
                let mut g = got.lock().unwrap();
                for e in &c.events {
                    g.push((e.source.file.clone(), e.message.clone(), e.malformed, e.truncated));
                }
            }
            acker.ack(c.id);
        }
    });
    let (src_tx, src_rx) = mpsc::channel(4);
    let pipeline = Pipeline::start(src_rx, vec![sink_tx], ack_rx, None);
    let source = LogSource::start(cfg, "node".into(), &registry, src_tx, pipeline.committed.clone()).unwrap();
    // Up once the first scan has opened every file (as a node agent is, some time after start).
    let reg = registry.clone();
    assert!(wait_for(Duration::from_secs(10), || metric(&reg, "vigil_discovery_rescans_total") >= 1.0).await);
    Running { source, pipeline, sink, registry }
}

/// Graceful stop, in App::shutdown's order.
pub async fn stop(r: Running) {
    let Running { mut source, pipeline, sink, .. } = r;
    source.stop_intake().await;
    pipeline.join().await;
    sink.await.unwrap();
    source.finish().await;
}

/// The sum of a metric's samples, from the text exposition.
pub fn metric(registry: &prometheus::Registry, name: &str) -> f64 {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new().encode(&registry.gather(), &mut buf).unwrap();
    String::from_utf8(buf)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `cond` every 5 ms until true or `timeout`.
pub async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

/// A CRI record.
pub fn cri(stream: &str, tag: &str, msg: &str) -> String {
    format!("2026-11-28T06:12:13.123456789Z {stream} {tag} {msg}\n")
}
