//! The contract between the metrics shipper (`metrics::ship`, which gathers, queues and
//! retries) and the sinks that carry metrics (`remote_write`, `es_metrics`, `otlp::metrics`):
//! a [`Snapshot`] in, ready-to-send [`Batch`]es out, and one try's [`SendOutcome`].
//!
//! It lives with the sinks so that the dependency runs one way: `metrics::ship` uses sinks,
//! sinks never import the shipper. **Invariant:** nothing here does I/O; `encode` runs on a
//! blocking thread, `send` makes one try.

use super::retry::RetryConfig;
use bytes::Bytes;
use prometheus::Registry;
use prometheus::proto::MetricFamily;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One gather of the registry, as every metrics sink sees it.
#[derive(Debug)]
pub struct Snapshot {
    /// Collection time, milliseconds since the Unix epoch: the timestamp of every sample.
    pub timestamp_ms: i64,
    pub families: Vec<MetricFamily>,
    /// The node's name (`node` and default `instance` label, `host.name`).
    pub node: Arc<str>,
}

impl Snapshot {
    /// Gathers `registry` now. Blocking: collectors read /proc and /sys.
    pub fn gather(registry: &Registry, node: Arc<str>) -> Self {
        let timestamp_ms = now_ms();
        Self { timestamp_ms, families: registry.gather(), node }
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// One sample of a snapshot, as a scrape of `/metrics` would store it.
pub struct FlatSample<'a> {
    /// The family's name, e.g. `vigil_sink_request_duration_seconds`.
    pub family: &'a str,
    /// `""`, `_bucket`, `_sum` or `_count`.
    pub suffix: &'static str,
    /// `le` of a histogram bucket or `quantile` of a summary, as the text format writes it.
    pub extra: Option<(&'static str, String)>,
    /// The metric's own labels.
    pub labels: &'a [prometheus::proto::LabelPair],
    pub value: f64,
    pub kind: prometheus::proto::MetricType,
}

impl FlatSample<'_> {
    /// The series name: family plus suffix.
    pub fn name(&self) -> String {
        format!("{}{}", self.family, self.suffix)
    }
}

/// Calls `f` for every sample of `families`, expanded as Prometheus stores a scrape: counters,
/// gauges and untyped values as one sample each; a histogram as `_bucket{le}` (with `+Inf`),
/// `_sum`, `_count`; a summary as `{quantile}`, `_sum`, `_count`. Shared by every metrics sink
/// so all of them carry the same series `/metrics` shows.
pub fn for_each_sample(families: &[MetricFamily], mut f: impl FnMut(FlatSample<'_>)) {
    use prometheus::proto::MetricType;
    for mf in families {
        let kind = mf.get_field_type();
        for m in mf.get_metric() {
            let mut emit = |suffix: &'static str, extra: Option<(&'static str, String)>, value: f64| {
                f(FlatSample { family: mf.name(), suffix, extra, labels: m.get_label(), value, kind })
            };
            match kind {
                MetricType::COUNTER => emit("", None, m.get_counter().get_value()),
                MetricType::GAUGE => emit("", None, m.get_gauge().get_value()),
                // The crate deprecates `Untyped` (its text encoder cannot even print one), but a
                // custom collector can still return it: ship it rather than drop it.
                #[allow(deprecated)]
                MetricType::UNTYPED => emit("", None, m.get_untyped().get_value()),
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let mut inf = false;
                    for b in h.get_bucket() {
                        inf |= b.upper_bound() == f64::INFINITY;
                        emit("_bucket", Some(("le", float_label(b.upper_bound()))), b.cumulative_count() as f64);
                    }
                    if !inf {
                        emit("_bucket", Some(("le", "+Inf".into())), h.get_sample_count() as f64);
                    }
                    emit("_sum", None, h.get_sample_sum());
                    emit("_count", None, h.get_sample_count() as f64);
                }
                MetricType::SUMMARY => {
                    let s = m.get_summary();
                    for q in s.get_quantile() {
                        emit("", Some(("quantile", float_label(q.quantile()))), q.value());
                    }
                    emit("_sum", None, s.sample_sum());
                    emit("_count", None, s.sample_count() as f64);
                }
            }
        }
    }
}

/// A float as Prometheus' text format writes it in `le` and `quantile` (the same text
/// `/metrics` serves, so a scraped and a pushed series are the same series).
pub fn float_label(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

/// One ready-to-send request: an encoded (and usually compressed) body and what it carries.
#[derive(Debug, Clone)]
pub struct Batch {
    pub body: Bytes,
    /// Samples (remote write) or documents (Elasticsearch) in the body.
    pub samples: usize,
    /// The snapshot's collection time, ms since the epoch (for age-based eviction).
    pub timestamp_ms: i64,
}

/// How a send attempt went.
#[derive(Debug)]
pub enum SendOutcome {
    /// Final for the whole batch: `delivered` samples arrived, `rejected` were refused for good
    /// (a final 4xx per `retry::classify`, a rejected Elasticsearch item) and are counted as
    /// dropped.
    Done { delivered: usize, rejected: usize },
    /// Worth retrying (connection error, timeout, 429, 5xx). `rest` is what is left to send
    /// (the whole batch, or the failed part of a partial success); `delivered` samples of the
    /// batch did arrive.
    Retry { rest: Batch, delivered: usize, retry_after: Option<Duration> },
}

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = SendOutcome> + Send + 'a>>;

/// A sink that carries metrics.
pub trait MetricsSink: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// Turns a snapshot into requests. Called on a blocking thread; must not do I/O.
    fn encode(&self, snapshot: &Snapshot) -> Vec<Batch>;
    /// Sends one request once. Logs what went wrong; the caller retries, counts and drops.
    fn send<'a>(&'a self, batch: &'a Batch) -> SendFuture<'a>;
    /// Backoff between retries of a failing request (the sinks' shared policy).
    fn retry(&self) -> RetryConfig;
    /// Bounds of the queue kept while the receiver is down.
    fn queue_limits(&self) -> QueueLimits;
}

/// What the queue may hold while the receiver is down.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Samples older than this (by collection time, against the newest) are dropped first.
    pub max_age: Duration,
    /// Hard bound on queued samples, whatever the series count.
    pub max_samples: usize,
}
