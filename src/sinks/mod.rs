//! Sinks: where events go. One module per sink type; each owns its config, encoding, transport
//! and retries, and sees events only (never files).
//!
//! Contract of a sink (`Sink::run`): read `Arc<Chunk>`s from its bounded input, batch them as
//! its backend likes, deliver, and ack each chunk exactly once when all of its events are
//! delivered or permanently rejected (counted). When the input closes, flush everything and
//! return. A sink never drops a chunk without acking it and never acks before delivery.

pub mod batch;
pub mod deliver;
pub mod elasticsearch;
pub mod es_metrics;
pub mod file;
pub mod http;
pub mod loki;
pub mod metrics;
pub mod metrics_sink;
pub mod otlp;
pub mod remote_write;
pub mod retry;
pub mod stdout;

use crate::config::Problems;
use crate::pipeline::{Acker, Chunk};
use crate::sinks::metrics_sink::MetricsSink;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;

/// One entry of `sinks:`, chosen by its `type`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    Stdout(stdout::StdoutConfig),
    File(file::FileConfig),
    // Boxed: the HTTP sinks' configs are large, the others tiny.
    Loki(Box<loki::LokiConfig>),
    Elasticsearch(Box<elasticsearch::ElasticsearchConfig>),
    /// Metrics only: Remote-Write 1.0 to Prometheus, Mimir, Thanos, VictoriaMetrics.
    PrometheusRemoteWrite(Box<remote_write::RemoteWriteConfig>),
    /// Logs and metrics over OTLP/HTTP to any OpenTelemetry backend.
    Otlp(Box<otlp::OtlpConfig>),
}

impl SinkConfig {
    pub fn name(&self) -> &str {
        match self {
            SinkConfig::Stdout(c) => &c.name,
            SinkConfig::File(c) => &c.name,
            SinkConfig::Loki(c) => &c.name,
            SinkConfig::Elasticsearch(c) => &c.name,
            SinkConfig::PrometheusRemoteWrite(c) => &c.name,
            SinkConfig::Otlp(c) => &c.name,
        }
    }

    /// The `type:` as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Stdout(_) => "stdout",
            SinkConfig::File(_) => "file",
            SinkConfig::Loki(_) => "loki",
            SinkConfig::Elasticsearch(_) => "elasticsearch",
            SinkConfig::PrometheusRemoteWrite(_) => "prometheus_remote_write",
            SinkConfig::Otlp(_) => "otlp",
        }
    }

    /// Whether the sink takes log events (joins the log pipeline and its acknowledgements).
    pub fn carries_logs(&self) -> bool {
        match self {
            SinkConfig::PrometheusRemoteWrite(_) => false,
            SinkConfig::Otlp(c) => c.logs,
            _ => true,
        }
    }

    /// Whether the sink can be named under `metrics.ship.sinks`.
    pub fn carries_metrics(&self) -> bool {
        matches!(self, SinkConfig::PrometheusRemoteWrite(_) | SinkConfig::Elasticsearch(_) | SinkConfig::Otlp(_))
    }

    /// The sink's `match:`, when it has one.
    pub fn route(&self) -> Option<&crate::process::select::SelectorConfig> {
        match self {
            SinkConfig::Stdout(c) => c.route.as_ref(),
            SinkConfig::File(c) => c.route.as_ref(),
            SinkConfig::Loki(c) => c.route.as_ref(),
            SinkConfig::Elasticsearch(c) => c.route.as_ref(),
            SinkConfig::Otlp(c) => c.route.as_ref(),
            SinkConfig::PrometheusRemoteWrite(_) => None,
        }
    }

    pub fn validate(&self, path: &str, p: &mut Problems) {
        if let Some(m) = self.route() {
            m.validate(&format!("{path}.match"), p);
        }
        match self {
            SinkConfig::Stdout(_) => {}
            SinkConfig::File(c) => c.validate(path, p),
            SinkConfig::Loki(c) => c.validate(path, p),
            SinkConfig::Elasticsearch(c) => c.validate(path, p),
            SinkConfig::PrometheusRemoteWrite(c) => c.validate(path, p),
            SinkConfig::Otlp(c) => c.validate(path, p),
        }
    }
}

/// What every sink gets when it is built.
#[derive(Clone)]
pub struct SinkContext {
    pub registry: prometheus::Registry,
    pub node_name: Arc<str>,
    /// The `vigil_sink_*` families, registered once on `registry`; each sink takes its handle
    /// with `sink_metrics(name)`.
    pub metrics: metrics::SinkMetricsFamilies,
}

impl SinkContext {
    /// Registers the sink metric families on `registry`; build once per registry.
    pub fn new(registry: prometheus::Registry, node_name: Arc<str>) -> prometheus::Result<Self> {
        let metrics = metrics::SinkMetricsFamilies::register(&registry)?;
        Ok(Self { registry, node_name, metrics })
    }

    /// The metrics handle of the sink called `name`.
    pub fn sink_metrics(&self, name: &str) -> metrics::SinkMetrics {
        self.metrics.sink(name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sink '{name}': {message}")]
    Build { name: String, message: String },
}

pub type RunFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

pub trait Sink: Send {
    /// Runs until `input` closes and everything received is delivered (or rejected) and acked.
    fn run(self: Box<Self>, input: mpsc::Receiver<Arc<Chunk>>, acker: Acker) -> RunFuture;
}

/// Builds the sink a config entry describes.
pub fn build(config: &SinkConfig, ctx: &SinkContext) -> Result<Box<dyn Sink>, Error> {
    match config {
        SinkConfig::Stdout(c) => stdout::StdoutSink::build(c, ctx),
        SinkConfig::File(c) => file::FileSink::build(c, ctx),
        SinkConfig::Loki(c) => loki::LokiSink::build(c, ctx),
        SinkConfig::Elasticsearch(c) => elasticsearch::ElasticsearchSink::build(c, ctx),
        SinkConfig::Otlp(c) => otlp::logs::OtlpSink::build(c, ctx),
        SinkConfig::PrometheusRemoteWrite(c) => Err(Error::Build {
            name: c.name.clone(),
            message: "carries metrics only; list it under metrics.ship.sinks".into(),
        }),
    }
}

/// Builds the metrics side of a sink named under `metrics.ship.sinks` (validation made sure
/// it `carries_metrics`).
pub fn build_metrics(config: &SinkConfig, ctx: &SinkContext) -> Result<Arc<dyn MetricsSink>, Error> {
    match config {
        SinkConfig::PrometheusRemoteWrite(c) => remote_write::RemoteWriteSink::build(c, ctx),
        SinkConfig::Elasticsearch(c) => es_metrics::EsMetricsSink::build(c, ctx),
        SinkConfig::Otlp(c) => otlp::metrics::OtlpMetricsSink::build(c, ctx),
        other => Err(Error::Build {
            name: other.name().to_string(),
            message: format!("a {} sink cannot carry metrics", other.kind()),
        }),
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`: Prometheus' (and Loki's) label name syntax.
pub(crate) fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
