//! Metric documents for Elasticsearch: what an `elasticsearch` sink named under
//! `metrics.ship.sinks` writes to its `metrics_index`.
//!
//! Key decision: one document per series per snapshot, ECS-minded:
//! ```json
//! {"@timestamp":"2026-11-28T08:00:00.000Z","host":{"name":"node-a"},
//!  "agent":{"type":"vigil","version":"0.1.0"},
//!  "metric":{"name":"node_filesystem_avail_bytes","type":"gauge","value":1.2e9},
//!  "labels":{"device":"/dev/sda1","fstype":"ext4","mountpoint":"/","cluster":"prod"}}
//! ```
//! The series are exactly those remote write sends (histograms as `_bucket` with `labels.le`,
//! `_sum`, `_count`; summaries with `labels.quantile`), so a Kibana query and a PromQL query
//! name the same thing. Labels go under ECS `labels` (keyword values); Prometheus label names
//! never contain dots, and the sink's constant `labels` are de-dotted, so no key can become an
//! object path that clashes in the mapping. The node is `host.name` (not repeated as a label).
//! Rejected: one document per metric family with every series nested (one mapping field per
//! label value combination, awkward to aggregate in Kibana) and Metricbeat's
//! `prometheus.metrics.<name>` shape (one mapping field per metric name: thousands of fields,
//! near the default 1000-field limit with node metrics alone).
//!
//! `_id` = FNV-1a of (node, series) plus the timestamp: a retried request only meets 409s.
//! Non-finite values (a summary's NaN quantile before any observation) are left out: JSON has
//! no NaN and a document without a value is useless.

use super::elasticsearch::bulk::{BulkDoc, BulkSender};
use super::elasticsearch::{ElasticsearchConfig, IndexPattern, dedot, fnv1a64};
use super::retry::RetryConfig;
use super::{Error, SinkContext};
use crate::sinks::metrics_sink::{Batch, MetricsSink, QueueLimits, SendFuture, SendOutcome, Snapshot, for_each_sample};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// `metrics_index` when not set.
pub const DEFAULT_METRICS_INDEX: &str = "metrics-vigil-%Y.%m.%d";
/// Documents per `_bulk` request: about 300 bytes each, so well under a MiB per request.
const DOCS_PER_REQUEST: usize = 2000;
/// The same bounds as remote write's defaults: five minutes, 200000 documents.
const QUEUE: QueueLimits = QueueLimits { max_age: Duration::from_secs(300), max_samples: 200_000 };

/// An `elasticsearch` sink's metrics side: metric documents through the same `_bulk` sender
/// (per-item retries, 409 = stored, rejections counted, dead-letter index) as its logs.
pub struct EsMetricsSink {
    name: String,
    sender: BulkSender,
    index: IndexPattern,
    /// The sink's `labels`, de-dotted.
    labels: BTreeMap<String, String>,
    retry: RetryConfig,
}

impl EsMetricsSink {
    pub fn build(c: &ElasticsearchConfig, ctx: &SinkContext) -> Result<Arc<dyn MetricsSink>, Error> {
        let err = |message: String| Error::Build { name: c.name.clone(), message };
        let sender = c.bulk_sender(ctx.sink_metrics(&c.name)).map_err(err)?;
        let index = IndexPattern::new(c.metrics_index.as_deref().unwrap_or(DEFAULT_METRICS_INDEX))
            .map_err(|e| err(format!("metrics_index {e}")))?;
        let labels = c.labels.iter().map(|(k, v)| (dedot(k), v.clone())).collect();
        Ok(Arc::new(Self { name: c.name.clone(), sender, index, labels, retry: c.retry }))
    }
}

impl MetricsSink for EsMetricsSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn encode(&self, snapshot: &Snapshot) -> Vec<Batch> {
        let (docs, skipped) = documents(snapshot, &self.labels);
        if skipped > 0 {
            tracing::debug!(sink = %self.name, samples = skipped, "non-finite metric values left out of Elasticsearch");
        }
        let index = self.index.render(snapshot.timestamp_ms.saturating_mul(1_000_000));
        docs.chunks(DOCS_PER_REQUEST)
            .map(|chunk| Batch { body: pack(&index, chunk), samples: chunk.len(), timestamp_ms: snapshot.timestamp_ms })
            .collect()
    }

    fn send<'a>(&'a self, batch: &'a Batch) -> SendFuture<'a> {
        Box::pin(async move {
            let Some((index, docs)) = unpack(&batch.body) else {
                // Only this module packs batches: a failure here is a bug, not bad input.
                tracing::error!(sink = %self.name, "metric documents could not be unpacked; dropped");
                return SendOutcome::Done { delivered: 0, rejected: batch.samples };
            };
            let index: Arc<str> = index.into();
            let docs =
                docs.into_iter().map(|d| BulkDoc { index: index.clone(), id: Some(d.id), source: d.source }).collect();
            // The bulk sender retries what is retryable itself, item by item, until each
            // document is stored, already there, dead-lettered or rejected.
            let out = self.sender.deliver(docs).await;
            let rejected = out.rejected.values().sum::<usize>();
            SendOutcome::Done { delivered: out.delivered(), rejected }
        })
    }

    fn retry(&self) -> RetryConfig {
        self.retry
    }

    fn queue_limits(&self) -> QueueLimits {
        QUEUE
    }
}

/// One metric document, ready for a `create` action.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricDoc {
    pub id: String,
    /// One JSON object, no newline.
    pub source: Vec<u8>,
}

#[derive(Serialize)]
struct Doc<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: &'a str,
    host: Host<'a>,
    agent: Agent,
    metric: Metric<'a>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct Host<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct Agent {
    #[serde(rename = "type")]
    kind: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct Metric<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    value: f64,
}

/// The `@timestamp` of a snapshot: RFC 3339, milliseconds, UTC (the one RFC 3339 formatter,
/// `event`'s).
pub fn timestamp(ms: i64) -> String {
    crate::event::format_rfc3339_millis(ms)
}

/// The documents of one snapshot. `constant` are the sink's `labels` (keys already de-dotted);
/// a series' own label of the same name wins. Returns the documents and how many samples were
/// left out for a non-finite value.
pub fn documents(snapshot: &Snapshot, constant: &BTreeMap<String, String>) -> (Vec<MetricDoc>, usize) {
    let ts = timestamp(snapshot.timestamp_ms);
    let node = &*snapshot.node;
    let mut docs = Vec::new();
    let mut skipped = 0;
    let mut key = Vec::new();
    for_each_sample(&snapshot.families, |s| {
        if !s.value.is_finite() {
            skipped += 1;
            return;
        }
        let name = s.name();
        let mut labels: BTreeMap<&str, &str> = BTreeMap::new();
        for (k, v) in constant {
            labels.insert(k, v);
        }
        for l in s.labels {
            if !l.value().is_empty() {
                labels.insert(l.name(), l.value());
            }
        }
        if let Some((k, v)) = &s.extra {
            labels.insert(k, v);
        }
        let kind = match s.kind {
            prometheus::proto::MetricType::COUNTER => "counter",
            prometheus::proto::MetricType::GAUGE => "gauge",
            prometheus::proto::MetricType::HISTOGRAM => "histogram",
            prometheus::proto::MetricType::SUMMARY => "summary",
            prometheus::proto::MetricType::UNTYPED => "untyped",
        };
        key.clear();
        key.extend_from_slice(node.as_bytes());
        key.push(0xff);
        key.extend_from_slice(name.as_bytes());
        for (k, v) in &labels {
            key.push(0xff);
            key.extend_from_slice(k.as_bytes());
            key.push(b'=');
            key.extend_from_slice(v.as_bytes());
        }
        let h = fnv1a64(&key);
        let doc = Doc {
            timestamp: &ts,
            host: Host { name: node },
            agent: Agent { kind: "vigil", version: env!("CARGO_PKG_VERSION") },
            metric: Metric { name: &name, kind, value: s.value },
            labels,
        };
        let source = serde_json::to_vec(&doc).expect("a metric document serializes: strings and a finite float");
        docs.push(MetricDoc { id: format!("{h:016x}-{}", snapshot.timestamp_ms), source });
    });
    (docs, skipped)
}

/// Packs documents bound for one index into a queue entry: `index\n` then `id\tsource\n` per
/// document (ids are hex, sources are JSON, which escapes tabs and newlines), snappy-compressed
/// so an outage's backlog stays small.
pub fn pack(index: &str, docs: &[MetricDoc]) -> bytes::Bytes {
    let mut raw =
        Vec::with_capacity(index.len() + 1 + docs.iter().map(|d| d.id.len() + d.source.len() + 2).sum::<usize>());
    raw.extend_from_slice(index.as_bytes());
    raw.push(b'\n');
    for d in docs {
        raw.extend_from_slice(d.id.as_bytes());
        raw.push(b'\t');
        raw.extend_from_slice(&d.source);
        raw.push(b'\n');
    }
    bytes::Bytes::from(snap::raw::Encoder::new().compress_vec(&raw).expect("snappy compresses any in-memory input"))
}

/// The inverse of `pack`: the index and the documents.
pub fn unpack(body: &[u8]) -> Option<(String, Vec<MetricDoc>)> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).ok()?;
    let mut lines = raw.split(|b| *b == b'\n');
    let index = String::from_utf8(lines.next()?.to_vec()).ok()?;
    let mut docs = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let tab = line.iter().position(|b| *b == b'\t')?;
        docs.push(MetricDoc { id: String::from_utf8(line[..tab].to_vec()).ok()?, source: line[tab + 1..].to_vec() });
    }
    Some((index, docs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{GaugeVec, HistogramOpts, HistogramVec, Opts, Registry};

    fn snapshot() -> Snapshot {
        let r = Registry::new();
        let g =
            GaugeVec::new(Opts::new("node_filesystem_avail_bytes", "a"), &["device", "mountpoint", "cluster"]).unwrap();
        g.with_label_values(&["/dev/sda1", "/", ""]).set(1.5e9);
        g.with_label_values(&["tmpfs", "/run", "own"]).set(f64::NAN);
        r.register(Box::new(g)).unwrap();
        let h = HistogramVec::new(HistogramOpts::new("vigil_h_seconds", "h").buckets(vec![0.5]), &["sink"]).unwrap();
        h.with_label_values(&["es"]).observe(0.25);
        r.register(Box::new(h)).unwrap();
        Snapshot { timestamp_ms: 1_764_316_800_123, families: r.gather(), node: "node-a".into() }
    }

    #[test]
    fn one_ecs_document_per_series_with_labels_and_no_non_finite_values() {
        let constant = BTreeMap::from([("cluster".to_string(), "prod".to_string())]);
        let (docs, skipped) = documents(&snapshot(), &constant);
        assert_eq!(skipped, 1, "the NaN gauge is left out");
        let json: Vec<serde_json::Value> = docs.iter().map(|d| serde_json::from_slice(&d.source).unwrap()).collect();
        assert_eq!(
            json[0],
            serde_json::json!({
                "@timestamp": "2025-11-28T08:00:00.123Z",
                "host": {"name": "node-a"},
                "agent": {"type": "vigil", "version": env!("CARGO_PKG_VERSION")},
                "metric": {"name": "node_filesystem_avail_bytes", "type": "gauge", "value": 1.5e9},
                "labels": {"cluster": "prod", "device": "/dev/sda1", "mountpoint": "/"}
            })
        );
        let names: Vec<(&str, Option<&str>)> =
            json[1..].iter().map(|j| (j["metric"]["name"].as_str().unwrap(), j["labels"]["le"].as_str())).collect();
        assert_eq!(
            names,
            vec![
                ("vigil_h_seconds_bucket", Some("0.5")),
                ("vigil_h_seconds_bucket", Some("+Inf")),
                ("vigil_h_seconds_sum", None),
                ("vigil_h_seconds_count", None)
            ]
        );
        assert!(json[1..].iter().all(|j| j["metric"]["type"] == "histogram"));
    }

    #[test]
    fn ids_are_stable_per_series_and_timestamp_and_distinct_across_series() {
        let (a, _) = documents(&snapshot(), &BTreeMap::new());
        let (b, _) = documents(&snapshot(), &BTreeMap::new());
        assert_eq!(a.iter().map(|d| &d.id).collect::<Vec<_>>(), b.iter().map(|d| &d.id).collect::<Vec<_>>());
        let ids: std::collections::HashSet<&String> = a.iter().map(|d| &d.id).collect();
        assert_eq!(ids.len(), a.len());
        assert!(a[0].id.ends_with("-1764316800123"), "{}", a[0].id);
        let mut later = snapshot();
        later.timestamp_ms += 15_000;
        let (c, _) = documents(&later, &BTreeMap::new());
        assert_ne!(a[0].id, c[0].id);
        assert_eq!(a[0].id.split('-').next(), c[0].id.split('-').next(), "same series, same hash");
    }

    #[test]
    fn pack_round_trips() {
        let (docs, _) = documents(&snapshot(), &BTreeMap::new());
        let body = pack("metrics-vigil-2025.11.28", &docs);
        let (index, back) = unpack(&body).unwrap();
        assert_eq!(index, "metrics-vigil-2025.11.28");
        assert_eq!(back, docs);
        assert!(unpack(b"not snappy").is_none());
    }
}
