//! OTLP metrics: what an `otlp` sink named under `metrics.ship.sinks` sends to
//! `<endpoint>/v1/metrics`.
//!
//! Key decision: each metric family of the snapshot becomes one OTLP `Metric` with the
//! family's name and help, and each of its series one data point whose attributes are the
//! series' labels, exactly as `/metrics` shows them: counters as monotonic cumulative `Sum`s,
//! gauges (and untyped values) as `Gauge`s, histograms as cumulative explicit-bucket
//! `Histogram`s (Prometheus' cumulative bucket counts turned into per-bucket counts, `+Inf`
//! becoming the implicit last bucket), summaries as `Summary`s. `unit` stays empty: the names
//! already end in their unit, and a backend that converts back to Prometheus names (Mimir,
//! Prometheus' OTLP receiver) would otherwise append it a second time. Rejected: the
//! flattened series remote write sends (`_bucket`, `_sum`, `_count` as separate gauges), which
//! OTLP backends would store as unrelated gauges instead of histograms.
//!
//! Resource: `host.name` and `k8s.node.name` (the node), plus `service.name: vigil` and
//! `service.instance.id: <node>`, because backends that turn OTLP into Prometheus series derive
//! `job` and `instance` from these two; without them every node's `node_cpu_seconds_total`
//! would be one series. Plus `resource_attributes`.
//!
//! `start_time_unix_nano` of cumulative points is 0 (unknown): node_exporter-style counters
//! count from boot or from an unknown reset, not from a time vigil knows. Delivery (queue,
//! retries, drops) is `metrics::ship`'s; this module encodes and sends once.

use super::proto::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use super::proto::common::v1::KeyValue;
use super::proto::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, Summary, SummaryDataPoint, metric, number_data_point, summary_data_point,
};
use super::proto::resource::v1::Resource;
use super::{MAX_ANSWER_BODY, OtlpConfig, reject_reason, scope, string_kv};
use crate::sinks::deliver::{self, Accepted, Exchange, Step, Texts, Unit, Whole};
use crate::sinks::http::{self, Compression, HttpClient, HttpResponse, gzip};
use crate::sinks::metrics_sink::{Batch, MetricsSink, QueueLimits, SendFuture, SendOutcome, Snapshot};
use crate::sinks::retry::{Backoff, RetryConfig};
use crate::sinks::{Error, SinkContext};
use bytes::Bytes;
use prometheus::proto::{MetricFamily, MetricType};
use prost::Message;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `service.name` of the metrics resource: backends that convert OTLP to Prometheus series make
/// it the `job` label, so it is what a scrape through the ServiceMonitor would set.
pub const SERVICE_NAME: &str = "vigil";
/// Data points per request: a snapshot of a busy node (a few thousand series) goes in one or
/// two requests of a few hundred KiB, well under every receiver's limit.
const POINTS_PER_REQUEST: usize = 5000;
/// The same bounds as remote write's defaults: five minutes, 200000 data points.
const QUEUE: QueueLimits = QueueLimits { max_age: Duration::from_secs(300), max_samples: 200_000 };

/// An `otlp` sink's metrics side.
pub struct OtlpMetricsSink {
    name: String,
    url: reqwest::Url,
    client: HttpClient,
    compression: Compression,
    extra: Vec<KeyValue>,
    retry: RetryConfig,
    /// A failure streak is logged once at warn, its end at info.
    failing: AtomicBool,
}

impl OtlpMetricsSink {
    pub fn build(c: &OtlpConfig, ctx: &SinkContext) -> Result<Arc<dyn MetricsSink>, Error> {
        let err = |message: String| Error::Build { name: c.name.clone(), message };
        let url = http::endpoint_with_path(&c.endpoint, "/v1/metrics").map_err(err)?;
        let client = HttpClient::new(&c.http(), ctx.sink_metrics(&c.name)).map_err(|e| err(e.to_string()))?;
        Ok(Arc::new(Self {
            name: c.name.clone(),
            url,
            client,
            compression: c.compression,
            extra: c.extra_attributes(),
            retry: c.retry,
            failing: AtomicBool::new(false),
        }))
    }

    fn resource(&self, node: &str) -> Resource {
        let mut attributes = vec![
            string_kv("host.name", node),
            string_kv("k8s.node.name", node),
            string_kv("service.name", SERVICE_NAME),
            string_kv("service.instance.id", node),
        ];
        attributes.extend(self.extra.iter().cloned());
        Resource { attributes, dropped_attributes_count: 0, entity_refs: Vec::new() }
    }

    fn failed(&self, message: std::fmt::Arguments<'_>) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(sink = %self.name, error = %message, "otlp metrics export failed; retrying with backoff");
        } else {
            tracing::debug!(sink = %self.name, error = %message, "otlp metrics export failed again");
        }
    }
}

/// The series' labels as attributes; empty values are left out (Prometheus treats them as
/// absent, and so does remote write).
fn attributes(labels: &[prometheus::proto::LabelPair]) -> Vec<KeyValue> {
    labels.iter().filter(|l| !l.value().is_empty()).map(|l| string_kv(l.name(), l.value())).collect()
}

fn number_point(labels: &[prometheus::proto::LabelPair], time: u64, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: 0,
        time_unix_nano: time,
        exemplars: Vec::new(),
        flags: 0,
        value: Some(number_data_point::Value::AsDouble(value)),
    }
}

/// One family as an OTLP metric, with every series as a data point.
pub fn metric(mf: &MetricFamily, time: u64) -> Metric {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let data = match mf.get_field_type() {
        MetricType::COUNTER => metric::Data::Sum(Sum {
            data_points: mf
                .get_metric()
                .iter()
                .map(|m| number_point(m.get_label(), time, m.get_counter().get_value()))
                .collect(),
            aggregation_temporality: cumulative,
            is_monotonic: true,
        }),
        MetricType::GAUGE => metric::Data::Gauge(Gauge {
            data_points: mf
                .get_metric()
                .iter()
                .map(|m| number_point(m.get_label(), time, m.get_gauge().get_value()))
                .collect(),
        }),
        // Deprecated by the crate, still possible from a custom collector: a gauge, as
        // Prometheus' own OTLP translation treats unknown-typed series.
        #[allow(deprecated)]
        MetricType::UNTYPED => metric::Data::Gauge(Gauge {
            data_points: mf
                .get_metric()
                .iter()
                .map(|m| number_point(m.get_label(), time, m.get_untyped().get_value()))
                .collect(),
        }),
        MetricType::HISTOGRAM => metric::Data::Histogram(Histogram {
            data_points: mf
                .get_metric()
                .iter()
                .map(|m| {
                    let h = m.get_histogram();
                    let (explicit_bounds, bucket_counts) = buckets(h);
                    HistogramDataPoint {
                        attributes: attributes(m.get_label()),
                        start_time_unix_nano: 0,
                        time_unix_nano: time,
                        count: h.get_sample_count(),
                        sum: Some(h.get_sample_sum()),
                        bucket_counts,
                        explicit_bounds,
                        exemplars: Vec::new(),
                        flags: 0,
                        min: None,
                        max: None,
                    }
                })
                .collect(),
            aggregation_temporality: cumulative,
        }),
        MetricType::SUMMARY => metric::Data::Summary(Summary {
            data_points: mf
                .get_metric()
                .iter()
                .map(|m| {
                    let s = m.get_summary();
                    SummaryDataPoint {
                        attributes: attributes(m.get_label()),
                        start_time_unix_nano: 0,
                        time_unix_nano: time,
                        count: s.sample_count(),
                        sum: s.sample_sum(),
                        quantile_values: s
                            .get_quantile()
                            .iter()
                            .map(|q| summary_data_point::ValueAtQuantile { quantile: q.quantile(), value: q.value() })
                            .collect(),
                        flags: 0,
                    }
                })
                .collect(),
        }),
    };
    Metric {
        name: mf.name().to_string(),
        description: mf.help().to_string(),
        unit: String::new(),
        metadata: Vec::new(),
        data: Some(data),
    }
}

/// Prometheus' cumulative buckets (upper bounds, maybe with `+Inf`) as OTLP's explicit bounds
/// (finite, increasing) and per-bucket counts, one more than the bounds: the last bucket is
/// (last bound, +Inf] and holds what no finite bucket does.
fn buckets(h: &prometheus::proto::Histogram) -> (Vec<f64>, Vec<u64>) {
    let mut bounds = Vec::with_capacity(h.get_bucket().len());
    let mut counts = Vec::with_capacity(h.get_bucket().len() + 1);
    let mut below = 0u64;
    for b in h.get_bucket() {
        if !b.upper_bound().is_finite() {
            continue;
        }
        bounds.push(b.upper_bound());
        counts.push(b.cumulative_count().saturating_sub(below));
        below = b.cumulative_count().max(below);
    }
    counts.push(h.get_sample_count().saturating_sub(below));
    (bounds, counts)
}

fn points(m: &Metric) -> usize {
    match &m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        None => 0,
    }
}

/// Splits a metric into pieces of at most `max` data points (the same name, help and kind).
fn split(m: Metric, max: usize) -> Vec<Metric> {
    fn pieces<T: Clone>(v: &[T], max: usize) -> Vec<Vec<T>> {
        v.chunks(max).map(<[T]>::to_vec).collect()
    }
    let with = |data: metric::Data| Metric { data: Some(data), ..m.clone() };
    match &m.data {
        Some(metric::Data::Gauge(g)) => pieces(&g.data_points, max)
            .into_iter()
            .map(|p| with(metric::Data::Gauge(Gauge { data_points: p })))
            .collect(),
        Some(metric::Data::Sum(s)) => pieces(&s.data_points, max)
            .into_iter()
            .map(|p| with(metric::Data::Sum(Sum { data_points: p, ..s.clone() })))
            .collect(),
        Some(metric::Data::Histogram(h)) => pieces(&h.data_points, max)
            .into_iter()
            .map(|p| with(metric::Data::Histogram(Histogram { data_points: p, ..h.clone() })))
            .collect(),
        Some(metric::Data::Summary(s)) => pieces(&s.data_points, max)
            .into_iter()
            .map(|p| with(metric::Data::Summary(Summary { data_points: p })))
            .collect(),
        Some(metric::Data::ExponentialHistogram(_)) | None => vec![m],
    }
}

impl OtlpMetricsSink {
    /// The requests of a snapshot, each with at most `max_points` data points (a family larger
    /// than that is split over requests).
    pub fn requests(&self, snapshot: &Snapshot, max_points: usize) -> Vec<(ExportMetricsServiceRequest, usize)> {
        let time = u64::try_from(snapshot.timestamp_ms).unwrap_or(0).saturating_mul(1_000_000);
        let resource = self.resource(&snapshot.node);
        let request = |metrics: Vec<Metric>| ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(resource.clone()),
                scope_metrics: vec![ScopeMetrics { scope: Some(scope()), metrics, schema_url: String::new() }],
                schema_url: String::new(),
            }],
        };
        let mut out = Vec::new();
        let (mut current, mut n) = (Vec::new(), 0);
        for mf in &snapshot.families {
            let m = metric(mf, time);
            if points(&m) == 0 {
                continue;
            }
            for piece in split(m, max_points) {
                let k = points(&piece);
                if n + k > max_points && !current.is_empty() {
                    out.push((request(std::mem::take(&mut current)), n));
                    n = 0;
                }
                current.push(piece);
                n += k;
            }
        }
        if !current.is_empty() {
            out.push((request(current), n));
        }
        out
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        if self.compression == Compression::Gzip {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        h
    }
}

impl MetricsSink for OtlpMetricsSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn encode(&self, snapshot: &Snapshot) -> Vec<Batch> {
        self.requests(snapshot, POINTS_PER_REQUEST)
            .into_iter()
            .map(|(req, samples)| {
                let raw = req.encode_to_vec();
                let body = match self.compression {
                    Compression::None => raw,
                    Compression::Gzip => gzip(&raw),
                };
                Batch { body: Bytes::from(body), samples, timestamp_ms: snapshot.timestamp_ms }
            })
            .collect()
    }

    fn send<'a>(&'a self, batch: &'a Batch) -> SendFuture<'a> {
        Box::pin(async move {
            let request = (batch.body.clone(), self.headers());
            let mut out = SendOutcome::Done { delivered: 0, rejected: 0 };
            match deliver::once(self, &mut Whole(batch), &request, &mut out).await {
                Step::Retry(r) | Step::Rest(Some(r)) => {
                    self.failed(format_args!("{}", r.error));
                    SendOutcome::Retry { rest: batch.clone(), delivered: 0, retry_after: r.retry_after }
                }
                Step::Done | Step::Split | Step::Rest(None) => out,
            }
        })
    }

    fn retry(&self) -> RetryConfig {
        self.retry
    }

    fn queue_limits(&self) -> QueueLimits {
        QUEUE
    }
}

/// OTLP metrics' part of one try (`deliver::once`); `metrics::ship` retries.
impl<'a> Exchange<Whole<&'a Batch>> for OtlpMetricsSink {
    type Outcome = SendOutcome;

    fn client(&self) -> &HttpClient {
        &self.client
    }
    fn url(&self) -> &reqwest::Url {
        &self.url
    }
    fn max_answer(&self) -> usize {
        MAX_ANSWER_BODY
    }
    fn backoff(&self) -> Backoff {
        self.retry.backoff()
    }
    fn texts(&self) -> &'static Texts {
        &Texts {
            unit: Unit::Events,
            too_large: "otlp metrics: request too large",
            retrying: "otlp metrics export failed",
        }
    }
    fn encode_request(&self, batch: &Whole<&'a Batch>) -> (Bytes, HeaderMap) {
        (batch.0.body.clone(), self.headers())
    }

    fn accepted(&self, batch: &mut Whole<&'a Batch>, r: &HttpResponse, out: &mut SendOutcome) -> Accepted {
        let batch = batch.0;
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(sink = %self.name, "otlp metrics receiver reachable again");
        }
        // Partial success: the rejected points are counted as dropped (rejected), never
        // retried. An empty or undecodable 2xx body is full success.
        let partial = ExportMetricsServiceResponse::decode(&r.body[..]).ok().and_then(|r| r.partial_success);
        let rejected = partial
            .as_ref()
            .map(|p| usize::try_from(p.rejected_data_points).unwrap_or(0).min(batch.samples))
            .unwrap_or(0);
        if let Some(p) = partial.filter(|p| p.rejected_data_points > 0 || !p.error_message.is_empty()) {
            tracing::warn!(
                sink = %self.name,
                rejected,
                points = batch.samples,
                error = %p.error_message,
                "otlp metrics receiver rejected part of a request (partial success); those points are dropped"
            );
        }
        *out = SendOutcome::Done { delivered: batch.samples - rejected, rejected };
        Accepted::All
    }

    fn rejected(&self, batch: &Whole<&'a Batch>, r: &HttpResponse, out: &mut SendOutcome) {
        tracing::warn!(
            sink = %self.name,
            status = r.status,
            points = batch.0.samples,
            reason = reject_reason(r.status),
            error = %r.body_sample(512),
            "otlp metrics receiver rejected a request; its points are dropped (vigil_ship_samples_dropped_total)"
        );
        *out = SendOutcome::Done { delivered: 0, rejected: batch.0.samples };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Counter, Gauge as PGauge, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

    fn sink() -> OtlpMetricsSink {
        let c: OtlpConfig = serde_yaml_ng::from_str(
            "{name: o, endpoint: 'http://127.0.0.1:1', resource_attributes: {k8s.cluster.name: prod}}",
        )
        .unwrap();
        let ctx = SinkContext::new(Registry::new(), "node-a".into()).unwrap();
        let url = http::endpoint_with_path(&c.endpoint, "/v1/metrics").unwrap();
        OtlpMetricsSink {
            name: c.name.clone(),
            url,
            client: HttpClient::new(&c.http(), ctx.sink_metrics("o")).unwrap(),
            compression: c.compression,
            extra: c.extra_attributes(),
            retry: c.retry,
            failing: AtomicBool::new(false),
        }
    }

    #[test]
    fn counters_gauges_and_histograms_keep_their_names_labels_and_kinds() {
        let r = Registry::new();
        let c = IntCounterVec::new(Opts::new("vigil_x_total", "x help"), &["sink", "empty"]).unwrap();
        c.with_label_values(&["es", ""]).inc_by(3);
        r.register(Box::new(c)).unwrap();
        let g = PGauge::new("node_load1", "load").unwrap();
        g.set(0.5);
        r.register(Box::new(g)).unwrap();
        let h =
            HistogramVec::new(HistogramOpts::new("vigil_h_seconds", "h").buckets(vec![0.5, 1.0]), &["sink"]).unwrap();
        for v in [0.2, 0.7, 0.8, 3.0] {
            h.with_label_values(&["es"]).observe(v);
        }
        r.register(Box::new(h)).unwrap();
        let snap = Snapshot { timestamp_ms: 1_700_000_000_123, families: r.gather(), node: "node-a".into() };
        let reqs = sink().requests(&snap, 100);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].1, 3, "one data point per series");
        let rm = &reqs[0].0.resource_metrics[0];
        let res: Vec<(&str, String)> = rm
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|kv| (kv.key.as_str(), format!("{:?}", kv.value.as_ref().unwrap().value.as_ref().unwrap())))
            .collect();
        let keys: Vec<&str> = res.iter().map(|r| r.0).collect();
        assert_eq!(keys, ["host.name", "k8s.node.name", "service.name", "service.instance.id", "k8s.cluster.name"]);
        assert!(res[0].1.contains("node-a"), "{res:?}");
        let by_name = |n: &str| rm.scope_metrics[0].metrics.iter().find(|m| m.name == n).unwrap().clone();
        let time = 1_700_000_000_123_000_000;
        match by_name("vigil_x_total").data.unwrap() {
            metric::Data::Sum(s) => {
                assert!(s.is_monotonic);
                assert_eq!(s.aggregation_temporality, AggregationTemporality::Cumulative as i32);
                let p = &s.data_points[0];
                assert_eq!(p.value, Some(number_data_point::Value::AsDouble(3.0)));
                assert_eq!(p.time_unix_nano, time);
                let labels: Vec<&str> = p.attributes.iter().map(|kv| kv.key.as_str()).collect();
                assert_eq!(labels, ["sink"], "the empty label is left out");
            }
            other => panic!("counter became {other:?}"),
        }
        assert_eq!(by_name("vigil_x_total").description, "x help");
        assert!(matches!(by_name("node_load1").data, Some(metric::Data::Gauge(_))));
        match by_name("vigil_h_seconds").data.unwrap() {
            metric::Data::Histogram(h) => {
                assert_eq!(h.aggregation_temporality, AggregationTemporality::Cumulative as i32);
                let p = &h.data_points[0];
                assert_eq!(p.explicit_bounds, vec![0.5, 1.0]);
                // (-inf, 0.5]: 0.2; (0.5, 1]: 0.7, 0.8; (1, +inf): 3.0.
                assert_eq!(p.bucket_counts, vec![1, 2, 1]);
                assert_eq!((p.count, p.sum), (4, Some(4.7)));
            }
            other => panic!("histogram became {other:?}"),
        }
    }

    #[test]
    fn a_large_snapshot_is_split_by_data_points_and_nothing_is_lost() {
        let r = Registry::new();
        let g = prometheus::GaugeVec::new(Opts::new("many", "m"), &["i"]).unwrap();
        for i in 0..7 {
            g.with_label_values(&[&i.to_string()]).set(i as f64);
        }
        r.register(Box::new(g)).unwrap();
        let c = Counter::new("one_total", "o").unwrap();
        r.register(Box::new(c)).unwrap();
        let snap = Snapshot { timestamp_ms: 1, families: r.gather(), node: "n".into() };
        let s = sink();
        let reqs = s.requests(&snap, 3);
        assert_eq!(reqs.iter().map(|r| r.1).collect::<Vec<_>>(), vec![3, 3, 2]);
        let batches = s.encode(&snap);
        assert_eq!(batches.iter().map(|b| b.samples).sum::<usize>(), 8);
        // Encoded bodies are gzip (the default) of a decodable request.
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&batches[0].body[..]), &mut raw).unwrap();
        let req = ExportMetricsServiceRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(req.resource_metrics[0].scope_metrics[0].metrics[0].name, "many");
    }
}
