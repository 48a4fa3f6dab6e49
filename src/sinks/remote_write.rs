//! The `prometheus_remote_write` sink: metrics snapshots to Prometheus, Mimir, Thanos Receive,
//! VictoriaMetrics or anything else that speaks Remote-Write 1.0.
//!
//! Key decision: the wire structs (`prometheus.WriteRequest` and friends) are hand-written
//! `prost` derives of the few messages Remote-Write 1.0 uses, checked field by field against
//! prometheus/prompb `remote.proto` and `types.proto`; rejected: a build-time protoc/prost-build
//! step (one more toolchain for four messages) and Remote-Write 2.0 (receivers that need 1.0,
//! e.g. Prometheus before 2.54 and many proxies, are the common case; 1.0 is what every receiver
//! accepts).
//!
//! Series are expanded as a Prometheus scrape of `/metrics` would store them: counters, gauges
//! and untyped values as one series each; a histogram as `_bucket{le}` (with `+Inf`), `_sum`,
//! `_count`; a summary as `{quantile}`, `_sum`, `_count`. Every series also gets `node` and
//! `instance` (both the node's name by default) and the `external_labels`; the series' own labels
//! win over external labels, which win over the two defaults (so `external_labels: {instance:
//! ...}` overrides the default instance). Labels are sorted by name, `__name__` included, as the
//! protocol requires, and empty values are left out (Prometheus treats them as absent). A series
//! that was in the previous snapshot and is gone (a pod's veth or tmpfs mount) gets one stale
//! marker, as Prometheus writes for a scraped series that disappears; none are written at
//! shutdown (a restarting vigil resumes the same series seconds later).
//!
//! Delivery (queue, retries, drops) is `metrics::ship`'s; this module encodes and sends once.

use super::deliver::{self, Accepted, Exchange, Step, Texts, Unit, Whole};
use super::http::{HttpClient, HttpResponse};
use super::retry::{Backoff, RetryConfig};
use super::{Error, SinkContext};
use crate::config::{HumanDuration, Problems, Secret};
use crate::sinks::metrics_sink::{Batch, MetricsSink, QueueLimits, SendFuture, SendOutcome, Snapshot, for_each_sample};
use bytes::Bytes;
use prometheus::proto::{MetricFamily, MetricType};
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

crate::sinks::http::http_sink_config! {
    /// A `type: prometheus_remote_write` entry of `sinks:`. It carries metrics only: it must be
    /// listed under `metrics.ship.sinks` and never receives log events.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RemoteWriteConfig {
        pub name: String,
        /// The full write URL, used as is: `http://prometheus:9090/api/v1/write`, Mimir's
        /// `.../api/v1/push`, Thanos' `.../api/v1/receive`.
        pub endpoint: String,
        /// Labels added to every series (unless the series has that label already), e.g.
        /// `{cluster: prod}`. Setting `instance` here replaces the default (the node's name).
        /// Default none.
        #[serde(default)]
        pub external_labels: BTreeMap<String, String>,
        /// Sent as `X-Scope-OrgID` when not empty (Mimir, Cortex, Thanos tenants). Default empty.
        #[serde(default)]
        pub tenant_id: Secret,
        /// At most this many samples per request; a larger snapshot is split. Default 2000
        /// (Prometheus' max_samples_per_send): well under every receiver's request-size limit.
        #[serde(default = "default_max_samples_per_send")]
        pub max_samples_per_send: usize,
        /// While the receiver is unreachable, keep at most this much data (by collection time);
        /// older samples are dropped first and counted. Default 5m: a receiver restart or a short
        /// network outage loses nothing, and Prometheus still accepts samples that old.
        #[serde(default = "default_queue_max_age")]
        pub queue_max_age: HumanDuration,
        /// Hard bound on queued samples, whatever the series count, so memory stays bounded.
        /// Default 200000: five minutes at 15s of a node with 10000 series, a few MiB compressed.
        #[serde(default = "default_queue_max_samples")]
        pub queue_max_samples: usize,
    }
}

fn default_max_samples_per_send() -> usize {
    2000
}
fn default_queue_max_age() -> HumanDuration {
    HumanDuration::secs(300)
}
fn default_queue_max_samples() -> usize {
    200_000
}

impl RemoteWriteConfig {
    pub fn validate(&self, path: &str, p: &mut Problems) {
        self.http().validate(path, p);
        for (k, v) in &self.external_labels {
            let at = format!("{path}.external_labels.{k}");
            if !super::is_label_name(k) {
                p.push(at, format!("'{k}' is not a label name; expected [a-zA-Z_][a-zA-Z0-9_]*, e.g. cluster"));
            } else if k.starts_with("__") {
                p.push(at, format!("'{k}' starts with __, which Prometheus reserves; pick another name"));
            } else if v.is_empty() {
                p.push(at, "is empty; Prometheus drops empty labels, so give it a value or remove it");
            }
        }
        if self.max_samples_per_send == 0 {
            p.push(format!("{path}.max_samples_per_send"), "is 0; expected at least 1, e.g. 2000");
        }
        if self.queue_max_samples == 0 {
            p.push(format!("{path}.queue_max_samples"), "is 0; expected at least 1, e.g. 200000");
        }
        self.retry.validate(&format!("{path}.retry"), p);
    }
}

/// The Remote-Write 1.0 messages (prometheus/prompb). Field numbers are the contract.
pub mod proto {
    /// `prometheus.WriteRequest`; field 2 is reserved upstream.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
        #[prost(message, repeated, tag = "3")]
        pub metadata: Vec<MetricMetadata>,
    }

    /// `prometheus.TimeSeries` (exemplars = 3 and native histograms = 4 are not used).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Milliseconds since the Unix epoch.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    /// `prometheus.MetricMetadata`: the family's type and help, for receivers that keep them.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricMetadata {
        #[prost(enumeration = "MetricKind", tag = "1")]
        pub r#type: i32,
        #[prost(string, tag = "2")]
        pub metric_family_name: String,
        #[prost(string, tag = "4")]
        pub help: String,
        #[prost(string, tag = "5")]
        pub unit: String,
    }

    /// `prometheus.MetricMetadata.MetricType`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricKind {
        Unknown = 0,
        Counter = 1,
        Gauge = 2,
        Histogram = 3,
        Gaugehistogram = 4,
        Summary = 5,
        Info = 6,
        Stateset = 7,
    }
}

use proto::{Label, MetricKind, MetricMetadata, Sample, TimeSeries};

/// Prometheus' staleness marker: a NaN with this exact bit pattern (`value.StaleNaN`), which
/// queries treat as "this series ended here".
pub const STALE_NAN: f64 = f64::from_bits(0x7ff0_0000_0000_0002);

fn label_hash(labels: &[Label]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for l in labels {
        l.name.hash(&mut h);
        l.value.hash(&mut h);
    }
    h.finish()
}

/// Metadata (type, help) is resent this often: receivers that keep it (Mimir) expire it, and it
/// costs as much as the samples, so not with every snapshot (Prometheus: every minute).
const METADATA_EVERY_MS: i64 = 60_000;

/// How labels are added to every series.
#[derive(Debug, Clone)]
pub struct SeriesLabels {
    pub node: String,
    pub external: BTreeMap<String, String>,
}

/// Expands a snapshot's families into series, each with one sample at `timestamp_ms`.
pub fn series(families: &[MetricFamily], timestamp_ms: i64, extra: &SeriesLabels) -> Vec<TimeSeries> {
    let mut out = Vec::new();
    for_each_sample(families, |s| {
        let mut labels: Vec<Label> = Vec::with_capacity(s.labels.len() + extra.external.len() + 4);
        let add = |labels: &mut Vec<Label>, n: &str, v: &str| {
            if !v.is_empty() && !labels.iter().any(|l| l.name == n) {
                labels.push(Label { name: n.to_string(), value: v.to_string() });
            }
        };
        add(&mut labels, "__name__", &s.name());
        if let Some((n, v)) = &s.extra {
            add(&mut labels, n, v);
        }
        for l in s.labels {
            add(&mut labels, l.name(), l.value());
        }
        for (n, v) in &extra.external {
            add(&mut labels, n, v);
        }
        add(&mut labels, "instance", &extra.node);
        add(&mut labels, "node", &extra.node);
        labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        out.push(TimeSeries { labels, samples: vec![Sample { value: s.value, timestamp: timestamp_ms }] });
    });
    out
}

fn metadata(families: &[MetricFamily]) -> Vec<MetricMetadata> {
    families
        .iter()
        .map(|mf| MetricMetadata {
            r#type: match mf.get_field_type() {
                MetricType::COUNTER => MetricKind::Counter,
                MetricType::GAUGE => MetricKind::Gauge,
                MetricType::HISTOGRAM => MetricKind::Histogram,
                MetricType::SUMMARY => MetricKind::Summary,
                MetricType::UNTYPED => MetricKind::Unknown,
            } as i32,
            metric_family_name: mf.name().to_string(),
            help: mf.help().to_string(),
            unit: String::new(),
        })
        .collect()
}

/// The sink: encoding state and the HTTP transport.
pub struct RemoteWriteSink {
    name: String,
    endpoint: reqwest::Url,
    labels: SeriesLabels,
    max_samples_per_send: usize,
    limits: QueueLimits,
    retry: RetryConfig,
    client: HttpClient,
    /// Protocol headers and the tenant, sent with every request.
    headers: HeaderMap,
    last_metadata_ms: AtomicI64,
    /// The series of the previous snapshot, by label hash: one that is gone now gets a stale
    /// marker, as a scrape would write.
    previous: Mutex<HashMap<u64, Vec<Label>>>,
    /// A failure streak is logged once at warn, its end at info (a dead receiver would
    /// otherwise log at every retry).
    failing: AtomicBool,
}

impl RemoteWriteSink {
    pub fn build(c: &RemoteWriteConfig, ctx: &SinkContext) -> Result<Arc<dyn MetricsSink>, Error> {
        let build_err = |message: String| Error::Build { name: c.name.clone(), message };
        let endpoint = reqwest::Url::parse(&c.endpoint).map_err(|e| build_err(format!("endpoint: {e}")))?;
        let client = HttpClient::new(&c.http(), ctx.sink_metrics(&c.name)).map_err(|e| build_err(e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("snappy"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        headers.insert("x-prometheus-remote-write-version", HeaderValue::from_static("0.1.0"));
        if !c.tenant_id.expose().is_empty() {
            let mut v = HeaderValue::from_str(c.tenant_id.expose())
                .map_err(|_| build_err("tenant_id is not a valid header value".into()))?;
            v.set_sensitive(true);
            headers.insert("x-scope-orgid", v);
        }
        Ok(Arc::new(RemoteWriteSink {
            name: c.name.clone(),
            endpoint,
            labels: SeriesLabels { node: ctx.node_name.to_string(), external: c.external_labels.clone() },
            max_samples_per_send: c.max_samples_per_send.max(1),
            limits: QueueLimits { max_age: c.queue_max_age.get(), max_samples: c.queue_max_samples },
            retry: c.retry,
            client,
            headers,
            last_metadata_ms: AtomicI64::new(i64::MIN),
            previous: Mutex::new(HashMap::new()),
            failing: AtomicBool::new(false),
        }))
    }

    fn failed(&self, message: std::fmt::Arguments<'_>) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(sink = %self.name, error = %message, "remote write failed; retrying with backoff");
        } else {
            tracing::debug!(sink = %self.name, error = %message, "remote write failed again");
        }
    }
}

impl MetricsSink for RemoteWriteSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn encode(&self, snapshot: &Snapshot) -> Vec<Batch> {
        let mut all = series(&snapshot.families, snapshot.timestamp_ms, &self.labels);
        let hashes: Vec<u64> = all.iter().map(|t| label_hash(&t.labels)).collect();
        let mut previous = self.previous.lock().expect("previous series lock poisoned");
        {
            // A series of the previous snapshot that is gone now (a pod's veth or tmpfs mount)
            // gets a stale marker, as a scrape would write: otherwise queries would show its
            // last value for Prometheus' 5-minute lookback.
            let now: HashSet<u64> = hashes.iter().copied().collect();
            for (hash, labels) in previous.drain() {
                if !now.contains(&hash) {
                    let stale = Sample { value: STALE_NAN, timestamp: snapshot.timestamp_ms };
                    all.push(TimeSeries { labels, samples: vec![stale] });
                }
            }
        }
        let last = self.last_metadata_ms.load(Ordering::Relaxed);
        let mut meta = if snapshot.timestamp_ms.saturating_sub(last) >= METADATA_EVERY_MS {
            self.last_metadata_ms.store(snapshot.timestamp_ms, Ordering::Relaxed);
            metadata(&snapshot.families)
        } else {
            Vec::new()
        };
        // The WriteRequest is written field by field from borrowed series (the same bytes prost
        // would write for the struct), so the label sets can move into `previous` afterwards
        // instead of being cloned.
        let mut snappy = snap::raw::Encoder::new();
        let mut raw = Vec::new();
        let mut batches = Vec::new();
        let mut chunks = all.chunks(self.max_samples_per_send).peekable();
        while chunks.peek().is_some() || !meta.is_empty() {
            let chunk = chunks.next().unwrap_or_default();
            raw.clear();
            for ts in chunk {
                prost::encoding::message::encode(1, ts, &mut raw);
            }
            for m in std::mem::take(&mut meta) {
                prost::encoding::message::encode(3, &m, &mut raw);
            }
            let body = snappy.compress_vec(&raw).expect("snappy compresses any in-memory input");
            batches.push(Batch { body: Bytes::from(body), samples: chunk.len(), timestamp_ms: snapshot.timestamp_ms });
        }
        // Stale markers sit past `hashes.len()`: zip leaves them out, so each is written once.
        previous.extend(hashes.into_iter().zip(all).map(|(h, t)| (h, t.labels)));
        batches
    }

    fn send<'a>(&'a self, batch: &'a Batch) -> SendFuture<'a> {
        Box::pin(async move {
            let request = (batch.body.clone(), self.headers.clone());
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
        self.limits
    }
}

/// Remote write's part of one try (`deliver::once`); `metrics::ship` retries.
impl<'a> Exchange<Whole<&'a Batch>> for RemoteWriteSink {
    type Outcome = SendOutcome;

    fn client(&self) -> &HttpClient {
        &self.client
    }
    fn url(&self) -> &reqwest::Url {
        &self.endpoint
    }
    fn max_answer(&self) -> usize {
        4096
    }
    fn backoff(&self) -> Backoff {
        self.retry.backoff()
    }
    fn texts(&self) -> &'static Texts {
        &Texts { unit: Unit::Events, too_large: "remote write: request too large", retrying: "remote write failed" }
    }
    fn encode_request(&self, batch: &Whole<&'a Batch>) -> (Bytes, HeaderMap) {
        (batch.0.body.clone(), self.headers.clone())
    }

    fn accepted(&self, batch: &mut Whole<&'a Batch>, _: &HttpResponse, out: &mut SendOutcome) -> Accepted {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(sink = %self.name, "remote write receiver reachable again");
        }
        *out = SendOutcome::Done { delivered: batch.0.samples, rejected: 0 };
        Accepted::All
    }

    fn rejected(&self, batch: &Whole<&'a Batch>, r: &HttpResponse, out: &mut SendOutcome) {
        // The receiver answered, so it is up; the request itself is wrong (an out-of-order or
        // duplicate sample, a too-large request) and would fail again.
        self.client.metrics().success();
        tracing::warn!(
            sink = %self.name,
            status = r.status,
            samples = batch.0.samples,
            error = %r.body_sample(512),
            "remote write rejected a request; its samples are dropped (vigil_ship_samples_dropped_total)"
        );
        *out = SendOutcome::Done { delivered: 0, rejected: batch.0.samples };
    }
}

#[cfg(test)]
mod tests {
    use super::proto::WriteRequest;
    use super::*;
    use prometheus::{Counter, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

    fn ctx() -> SinkContext {
        SinkContext::new(Registry::new(), "n1".into()).unwrap()
    }

    fn label_map(ts: &TimeSeries) -> Vec<(String, String)> {
        ts.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn series_expand_like_a_scrape_with_sorted_labels_and_node_labels() {
        let r = Registry::new();
        let c = IntCounterVec::new(Opts::new("vigil_x_total", "x"), &["sink", "Zeta"]).unwrap();
        c.with_label_values(&["es", "z"]).inc_by(3);
        r.register(Box::new(c)).unwrap();
        let h =
            HistogramVec::new(HistogramOpts::new("vigil_h_seconds", "h").buckets(vec![0.5, 1.0]), &["sink"]).unwrap();
        h.with_label_values(&["es"]).observe(0.7);
        r.register(Box::new(h)).unwrap();
        let extra = SeriesLabels {
            node: "n1".into(),
            external: BTreeMap::from([("cluster".into(), "prod".into()), ("sink".into(), "ignored".into())]),
        };
        let s = series(&r.gather(), 1234, &extra);
        let got: Vec<_> = s.iter().map(|t| (label_map(t), t.samples[0].value, t.samples[0].timestamp)).collect();
        let base = |name: &str, le: Option<&str>| {
            let mut v = vec![("__name__", name), ("cluster", "prod"), ("instance", "n1")];
            if let Some(le) = le {
                v.push(("le", le));
            }
            v.extend([("node", "n1"), ("sink", "es")]);
            pairs(&v)
        };
        assert_eq!(
            got,
            vec![
                (base("vigil_h_seconds_bucket", Some("0.5")), 0.0, 1234),
                (base("vigil_h_seconds_bucket", Some("1")), 1.0, 1234),
                (base("vigil_h_seconds_bucket", Some("+Inf")), 1.0, 1234),
                (base("vigil_h_seconds_sum", None), 0.7, 1234),
                (base("vigil_h_seconds_count", None), 1.0, 1234),
                (
                    // Upper-case names sort before `__name__` in byte order.
                    pairs(&[
                        ("Zeta", "z"),
                        ("__name__", "vigil_x_total"),
                        ("cluster", "prod"),
                        ("instance", "n1"),
                        ("node", "n1"),
                        ("sink", "es")
                    ]),
                    3.0,
                    1234
                ),
            ]
        );
    }

    #[test]
    fn external_instance_overrides_the_default_and_empty_values_are_left_out() {
        let r = Registry::new();
        let c = IntCounterVec::new(Opts::new("c_total", "c"), &["empty"]).unwrap();
        c.with_label_values(&[""]).inc();
        r.register(Box::new(c)).unwrap();
        let extra =
            SeriesLabels { node: "n1".into(), external: BTreeMap::from([("instance".into(), "10.0.0.1:9102".into())]) };
        let s = series(&r.gather(), 0, &extra);
        assert_eq!(label_map(&s[0]), pairs(&[("__name__", "c_total"), ("instance", "10.0.0.1:9102"), ("node", "n1")]));
    }

    #[test]
    fn encode_splits_by_max_samples_and_round_trips_through_snappy_and_protobuf() {
        let r = Registry::new();
        for i in 0..5 {
            let c = Counter::new(format!("c{i}_total"), "c").unwrap();
            c.inc_by(i as f64);
            r.register(Box::new(c)).unwrap();
        }
        let c = RemoteWriteConfig {
            max_samples_per_send: 2,
            ..serde_yaml_ng::from_str("{name: rw, endpoint: 'http://127.0.0.1:1/api/v1/write'}").unwrap()
        };
        let sink = RemoteWriteSink::build(&c, &ctx()).unwrap();
        let snap = Snapshot { timestamp_ms: 99_000, families: r.gather(), node: "n1".into() };
        let decode = |b: &Batch| -> WriteRequest {
            let raw = snap::raw::Decoder::new().decompress_vec(&b.body).unwrap();
            prost::Message::decode(raw.as_slice()).unwrap()
        };
        let batches = sink.encode(&snap);
        assert_eq!(batches.iter().map(|b| b.samples).collect::<Vec<_>>(), vec![2, 2, 1]);
        let reqs: Vec<WriteRequest> = batches.iter().map(decode).collect();
        // Metadata rides with the first request only, then not again within a minute.
        assert_eq!(reqs.iter().map(|r| r.metadata.len()).collect::<Vec<_>>(), vec![5, 0, 0]);
        assert_eq!(reqs[0].metadata[0].metric_family_name, "c0_total");
        assert_eq!(reqs[0].metadata[0].r#type, MetricKind::Counter as i32);
        let values: Vec<f64> = reqs.iter().flat_map(|r| r.timeseries.iter().map(|t| t.samples[0].value)).collect();
        assert_eq!(values, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        assert!(reqs.iter().all(|r| r.timeseries.iter().all(|t| t.samples[0].timestamp == 99_000)));
        let later = Snapshot { timestamp_ms: 114_000, families: r.gather(), node: "n1".into() };
        assert!(sink.encode(&later).iter().map(decode).all(|r| r.metadata.is_empty()));
        let much_later = Snapshot { timestamp_ms: 160_000, families: r.gather(), node: "n1".into() };
        assert_eq!(decode(&sink.encode(&much_later)[0]).metadata.len(), 5);
    }

    #[test]
    fn a_series_that_disappears_gets_one_stale_marker() {
        let r = Registry::new();
        let g = prometheus::GaugeVec::new(Opts::new("node_network_up", "up"), &["device"]).unwrap();
        g.with_label_values(&["eth0"]).set(1.0);
        g.with_label_values(&["veth1"]).set(1.0);
        r.register(Box::new(g.clone())).unwrap();
        let c: RemoteWriteConfig = serde_yaml_ng::from_str("{name: rw, endpoint: 'http://127.0.0.1:1/w'}").unwrap();
        let sink = RemoteWriteSink::build(&c, &ctx()).unwrap();
        let decode = |b: &Batch| -> WriteRequest {
            prost::Message::decode(snap::raw::Decoder::new().decompress_vec(&b.body).unwrap().as_slice()).unwrap()
        };
        let at = |ms| {
            let snap = Snapshot { timestamp_ms: ms, families: r.gather(), node: "n1".into() };
            let req = decode(&sink.encode(&snap)[0]);
            req.timeseries
                .iter()
                .map(|t| {
                    let dev = t.labels.iter().find(|l| l.name == "device").unwrap().value.clone();
                    (dev, t.samples[0].value.to_bits(), t.samples[0].timestamp)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(at(1000).len(), 2);
        g.remove_label_values(&["veth1"]).unwrap();
        assert_eq!(
            at(2000),
            vec![("eth0".to_string(), 1.0f64.to_bits(), 2000), ("veth1".to_string(), STALE_NAN.to_bits(), 2000)]
        );
        assert_eq!(at(3000), vec![("eth0".to_string(), 1.0f64.to_bits(), 3000)], "marked stale once");
    }

    #[test]
    fn validation_reports_bad_labels_and_bounds() {
        let c: RemoteWriteConfig = serde_yaml_ng::from_str(
            "{name: rw, endpoint: 'htp:/x', external_labels: {'a-b': x, __x: y, ok: ''}, max_samples_per_send: 0, \
             retry: {initial_backoff: 10s, max_backoff: 1s}}",
        )
        .unwrap();
        let mut p = Problems::default();
        c.validate("sinks[0]", &mut p);
        let all = p.0.join("\n");
        for needle in [
            "sinks[0].endpoint: 'htp:/x' is not a URL",
            "sinks[0].external_labels.a-b: 'a-b' is not a label name",
            "sinks[0].external_labels.__x: '__x' starts with __",
            "sinks[0].external_labels.ok: is empty",
            "sinks[0].max_samples_per_send: is 0",
            "sinks[0].retry.max_backoff: '1s' is below initial_backoff '10s'",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(p.0.len(), 6, "{all}");
    }

    #[test]
    fn auth_config_shapes() {
        let c: RemoteWriteConfig =
            serde_yaml_ng::from_str("{name: rw, endpoint: 'http://x', auth: {username: u, password: s3cret}}").unwrap();
        assert_eq!(c.auth.password.expose(), "s3cret");
        let printed = serde_yaml_ng::to_string(&c).unwrap();
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(
            serde_yaml_ng::from_str::<RemoteWriteConfig>("{name: rw, endpoint: 'http://x', auth: {digest: {}}}")
                .is_err()
        );
        let two: RemoteWriteConfig =
            serde_yaml_ng::from_str("{name: rw, endpoint: 'http://x', auth: {bearer_token: t, bearer_token_file: /f}}")
                .unwrap();
        let mut p = Problems::default();
        two.validate("sinks[0]", &mut p);
        assert_eq!(
            p.0,
            vec![
                "sinks[0].auth: sets more than one method; choose one of username/password, bearer_token, \
                 bearer_token_file, api_key"
            ]
        );
    }
}
