//! OTLP logs: container log events as `ExportLogsServiceRequest`s on `<endpoint>/v1/logs`.
//!
//! Key decision: one `ResourceLogs` per container, whose resource carries the Kubernetes
//! semantic conventions (`k8s.namespace.name`, `k8s.pod.name`, `k8s.pod.uid`,
//! `k8s.container.name`, `k8s.container.restart_count`, `k8s.node.name`, `container.id`, plus
//! `resource_attributes`), and per-record facts stay on the record: `log.iostream` (the
//! stream) and `log.file.path` (the file, which changes with rotation while the container does
//! not). Backends index by resource (Loki's index labels, VictoriaLogs' stream fields), so a
//! resource must be as stable as a container; rejected: one resource per file (a new stream at
//! each rotation) and one per node with everything on the records (nothing to index by).
//!
//! Records: `time_unix_nano` is the line's own timestamp; `observed_time_unix_nano` is when the
//! sink took the line's chunk from the pipeline (`Deliver::arrived`). Events carry no read time
//! (that would be a field of `Event` or `Chunk`, shared by every sink); the arrival is the
//! closest the sink sees: the tailer stops reading while the few bounded queues in between are
//! full, so a chunk arrives soon after it was read, however long its batch then waits behind a
//! failing request. Severity comes from the stream only when `severity_from_stream` is set (stderr →
//! WARN), else UNSPECIFIED; the body is the message as a string.
//!
//! Routing: events go to lanes by container, one request per lane at a time (as Loki's
//! shards), so a container's records arrive in read order and a retried lane holds back only
//! its own containers.

#[cfg(test)]
use super::proto::collector::logs::v1::ExportLogsServiceRequest;
use super::proto::collector::logs::v1::ExportLogsServiceResponse;
use super::proto::common::v1::{AnyValue, KeyValue, any_value};
use super::proto::logs::v1::SeverityNumber;
#[cfg(test)]
use super::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use super::proto::resource::v1::Resource;
use super::{MAX_ANSWER_BODY, OtlpConfig, int_kv, now_unix_nanos, reject_reason, scope, string_kv};
use crate::event::{Event, Source, Stream};
use crate::pipeline::{Acker, Chunk};
use crate::sinks::batch::{self, Batch, BatchLimits, Deliver, DriverConfig};
use crate::sinks::deliver::{self, Accepted, Exchange, Texts, Unit};
use crate::sinks::http::{self, Compression, HttpClient, HttpResponse, gzip};
use crate::sinks::metrics::SinkMetrics;
use crate::sinks::retry::{Backoff, RetryConfig};
use crate::sinks::{RunFuture, Sink, SinkContext};
use bytes::Bytes;
use prost::Message;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

const DEFAULT_LIMITS: BatchLimits =
    BatchLimits { max_events: 10_000, max_bytes: 1 << 20, timeout: Duration::from_secs(1) };

/// The logs side of an `otlp` sink.
pub struct OtlpSink {
    inner: Arc<OtlpLogs>,
    driver: DriverConfig,
}

/// Encoding and delivery of log batches (the driver's `Deliver`).
pub struct OtlpLogs {
    url: reqwest::Url,
    client: HttpClient,
    compression: Compression,
    severity_from_stream: bool,
    extra: Vec<KeyValue>,
    retry: RetryConfig,
    lanes: usize,
    metrics: SinkMetrics,
    /// Chunk id → (Unix ns when the chunk arrived, its events not yet delivered): the observed
    /// time of its records. An entry goes when its last event is delivered (a delivery that
    /// panics leaves its entries: a bug, and a few bytes).
    arrivals: Mutex<HashMap<u64, (u64, usize)>>,
    /// Unix seconds of the last logged partial-success warning (they may come with every
    /// request; one line a minute is enough).
    last_warning: AtomicU64,
    /// The last source seen by `lane` and its lane: a chunk's events share one `Arc<Source>`,
    /// so a container is hashed once per run of its events, not per event (SipHash over its
    /// names was ~10% of the sink's CPU). The `Arc` held here keeps its address from being
    /// reused by another source while it is the key.
    last_lane: Mutex<Option<(Arc<Source>, usize)>>,
}

/// A parsed level name as an OTLP severity number (the data model's ranges).
fn level_severity(l: &str) -> SeverityNumber {
    match l {
        "trace" => SeverityNumber::Trace,
        "debug" | "dbug" => SeverityNumber::Debug,
        "info" | "information" | "notice" => SeverityNumber::Info,
        "warn" | "warning" => SeverityNumber::Warn,
        "error" | "err" => SeverityNumber::Error,
        "fatal" | "critical" | "crit" | "panic" | "emerg" | "alert" => SeverityNumber::Fatal,
        _ => SeverityNumber::Unspecified,
    }
}

/// `len` bytes from exactly `2 * len` hex digits.
fn hex_id(s: &str, len: usize) -> Option<Vec<u8>> {
    if s.len() != 2 * len || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..len).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()).collect()
}

impl OtlpSink {
    pub fn build(c: &OtlpConfig, ctx: &SinkContext) -> Result<Box<dyn Sink>, crate::sinks::Error> {
        Ok(Box::new(Self::new(c, ctx)?))
    }

    pub fn new(c: &OtlpConfig, ctx: &SinkContext) -> Result<Self, crate::sinks::Error> {
        let err = |message: String| crate::sinks::Error::Build { name: c.name.clone(), message };
        let metrics = ctx.sink_metrics(&c.name).with_rejection_reasons(&super::REJECT_REASONS);
        let url = http::endpoint_with_path(&c.endpoint, "/v1/logs").map_err(err)?;
        let client = HttpClient::new(&c.http(), metrics.clone()).map_err(|e| err(e.to_string()))?;
        let lanes = c.max_in_flight.max(1);
        let inner = OtlpLogs {
            url,
            client,
            compression: c.compression,
            severity_from_stream: c.severity_from_stream,
            extra: c.extra_attributes(),
            retry: c.retry,
            lanes,
            metrics,
            arrivals: Mutex::new(HashMap::new()),
            last_warning: AtomicU64::new(0),
            last_lane: Mutex::new(None),
        };
        let driver = DriverConfig { limits: c.batch.resolve(DEFAULT_LIMITS), lanes, lane_concurrency: 1 };
        Ok(Self { inner: Arc::new(inner), driver })
    }
}

impl Sink for OtlpSink {
    fn run(self: Box<Self>, input: mpsc::Receiver<Arc<Chunk>>, acker: Acker) -> RunFuture {
        Box::pin(batch::run(self.inner, self.driver, input, acker))
    }
}

/// What makes two events' resources the same: the container (every fact the resource carries),
/// not the file.
#[derive(PartialEq, Eq)]
struct ResourceKey<'a> {
    namespace: &'a str,
    pod: &'a str,
    pod_uid: &'a str,
    container: &'a str,
    restart_count: Option<u32>,
    container_id: Option<&'a str>,
    node: &'a str,
    /// The API metadata, by identity (one `Arc` per pod version; the metadata stage shares it).
    api: usize,
    image: Option<&'a str>,
    namespace_labels: usize,
}

/// Hashes the container only, not its API metadata: the hash also picks the lane, and a
/// container's events must stay in one lane (in order) when its pod's labels change.
impl std::hash::Hash for ResourceKey<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (self.namespace, self.pod, self.pod_uid, self.container, self.restart_count, self.container_id, self.node)
            .hash(h);
    }
}

impl<'a> ResourceKey<'a> {
    fn of(s: &'a Source) -> Self {
        let k = &s.kubernetes;
        Self {
            namespace: &k.namespace,
            pod: &k.pod,
            pod_uid: &k.pod_uid,
            container: &k.container,
            restart_count: k.restart_count,
            container_id: k.container_id.as_deref(),
            node: &s.node,
            api: k.api.as_ref().map_or(0, |a| Arc::as_ptr(a) as usize),
            image: k.image.as_deref(),
            namespace_labels: k.namespace_labels.as_ref().map_or(0, |l| Arc::as_ptr(l) as usize),
        }
    }
}

impl OtlpLogs {
    /// The resource attributes of a container, in the order of the semantic conventions' table;
    /// empty values are left out (a path without that fact).
    fn resource(&self, s: &Source) -> Resource {
        let k = &s.kubernetes;
        let mut attributes = Vec::with_capacity(7 + self.extra.len());
        for (key, value) in [
            ("k8s.namespace.name", k.namespace.as_str()),
            ("k8s.pod.name", &k.pod),
            ("k8s.pod.uid", &k.pod_uid),
            ("k8s.container.name", &k.container),
        ] {
            if !value.is_empty() {
                attributes.push(string_kv(key, value));
            }
        }
        if let Some(n) = k.restart_count {
            attributes.push(int_kv("k8s.container.restart_count", i64::from(n)));
        }
        if !s.node.is_empty() {
            attributes.push(string_kv("k8s.node.name", &s.node));
        }
        if let Some(id) = k.container_id.as_deref().filter(|id| !id.is_empty()) {
            attributes.push(string_kv("container.id", id));
        }
        // The API metadata (semantic conventions: k8s.pod.label.<key>, k8s.pod.annotation.<key>,
        // k8s.<workload>.name, container.image.name/tags, k8s.namespace.label.<key>).
        if let Some(api) = k.api.as_deref() {
            for (key, v) in &api.labels {
                attributes.push(string_kv(&format!("k8s.pod.label.{key}"), v));
            }
            for (key, v) in &api.annotations {
                attributes.push(string_kv(&format!("k8s.pod.annotation.{key}"), v));
            }
            if let Some(o) = &api.owner {
                let attr = match o.kind.as_str() {
                    "Deployment" => Some("k8s.deployment.name"),
                    "ReplicaSet" => Some("k8s.replicaset.name"),
                    "StatefulSet" => Some("k8s.statefulset.name"),
                    "DaemonSet" => Some("k8s.daemonset.name"),
                    "Job" => Some("k8s.job.name"),
                    "CronJob" => Some("k8s.cronjob.name"),
                    _ => None,
                };
                if let Some(attr) = attr {
                    attributes.push(string_kv(attr, &o.name));
                }
            }
        }
        if let Some(image) = k.image.as_deref() {
            // `name[:tag][@digest]`: the tag is after the last ':' that follows the last '/'.
            let slash = image.rfind('/').map_or(0, |i| i + 1);
            let without_digest = image.split('@').next().unwrap_or(image);
            match without_digest[slash.min(without_digest.len())..].rfind(':') {
                Some(i) => {
                    let at = slash + i;
                    attributes.push(string_kv("container.image.name", &without_digest[..at]));
                    let mut tags = string_kv("container.image.tags", &without_digest[at + 1..]);
                    tags.value = Some(AnyValue {
                        value: Some(any_value::Value::ArrayValue(super::proto::common::v1::ArrayValue {
                            values: tags.value.take().into_iter().collect(),
                        })),
                    });
                    attributes.push(tags);
                }
                None => attributes.push(string_kv("container.image.name", without_digest)),
            }
        }
        if let Some(l) = k.namespace_labels.as_deref() {
            for (key, v) in l {
                attributes.push(string_kv(&format!("k8s.namespace.label.{key}"), v));
            }
        }
        attributes.extend(self.extra.iter().cloned());
        Resource { attributes, dropped_attributes_count: 0, entity_refs: Vec::new() }
    }

    /// The severity of a record from its stream (a parsed `level` takes precedence in
    /// `record`).
    fn severity(&self, e: &Event) -> (SeverityNumber, &'static str) {
        if self.severity_from_stream && e.stream == Stream::Stderr {
            (SeverityNumber::Warn, "WARN")
        } else {
            (SeverityNumber::Unspecified, "")
        }
    }

    /// The record as a prost message: the reference `write_record` is tested against.
    #[cfg(test)]
    fn record(&self, e: &Event, observed: u64) -> LogRecord {
        let (mut severity, severity_text) = self.severity(e);
        let mut severity_text = std::borrow::Cow::Borrowed(severity_text);
        let mut attributes =
            vec![string_kv("log.iostream", e.stream.as_str()), string_kv("log.file.path", &e.source.file)];
        let (mut trace_id, mut span_id) = (Vec::new(), Vec::new());
        // A parsed message (`crate::process::parse`): its level wins over the stream, its
        // fields become record attributes, hex trace/span ids of the right length are kept.
        if let Some(p) = &e.parsed {
            if let Some(l) = &p.level {
                severity = level_severity(l);
                severity_text = std::borrow::Cow::Owned(l.to_ascii_uppercase());
            }
            for (k, v) in &p.fields {
                match v {
                    serde_json::Value::String(s) => attributes.push(string_kv(k, s)),
                    other => attributes.push(string_kv(k, &other.to_string())),
                }
            }
            trace_id = p.trace_id.as_deref().and_then(|t| hex_id(t, 16)).unwrap_or_default();
            span_id = p.span_id.as_deref().and_then(|t| hex_id(t, 8)).unwrap_or_default();
        }
        LogRecord {
            // A timestamp before 1970 cannot be written; 0 means "unknown" and receivers then
            // use the observed time.
            time_unix_nano: u64::try_from(e.timestamp).unwrap_or(0),
            observed_time_unix_nano: observed,
            severity_number: severity as i32,
            severity_text: severity_text.into_owned(),
            body: Some(AnyValue { value: Some(any_value::Value::StringValue(e.message.clone())) }),
            attributes,
            dropped_attributes_count: 0,
            flags: 0,
            trace_id,
            span_id,
            event_name: String::new(),
        }
    }

    /// The request for `events` (read order, each with its observed time): one `ResourceLogs`
    /// per container, in the order of each container's first event, its records in read order.
    /// What `encode_raw` writes, read back.
    #[cfg(test)]
    pub fn request(&self, events: &[(&Event, u64)]) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest::decode(&self.encode_raw(events)[..]).expect("vigil's own protobuf")
    }

    /// The same request built from prost messages: the encoding `encode_raw` replaced, kept as
    /// its oracle.
    #[cfg(test)]
    fn request_messages(&self, events: &[(&Event, u64)]) -> ExportLogsServiceRequest {
        let mut index: HashMap<ResourceKey<'_>, usize> = HashMap::new();
        let mut resources: Vec<ResourceLogs> = Vec::new();
        let mut last: Option<(&Arc<Source>, usize)> = None;
        for &(e, observed) in events {
            // Consecutive events of one file share a resource: skip the lookup.
            let i = match last {
                Some((src, i)) if Arc::ptr_eq(src, &e.source) => i,
                _ => *index.entry(ResourceKey::of(&e.source)).or_insert_with(|| {
                    resources.push(ResourceLogs {
                        resource: Some(self.resource(&e.source)),
                        scope_logs: vec![ScopeLogs {
                            scope: Some(scope()),
                            log_records: Vec::new(),
                            schema_url: String::new(),
                        }],
                        schema_url: String::new(),
                    });
                    resources.len() - 1
                }),
            };
            last = Some((&e.source, i));
            resources[i].scope_logs[0].log_records.push(self.record(e, observed));
        }
        ExportLogsServiceRequest { resource_logs: resources }
    }

    /// Appends one `LogRecord` (the message `record` builds) in protobuf, written directly:
    /// no `LogRecord`, no copy of the message or the path into owned strings. Fields in tag
    /// order, proto3 defaults left out, as prost writes them.
    fn write_record(&self, e: &Event, observed: u64, out: &mut Vec<u8>) {
        use prost::encoding::{WireType, encode_key, encode_varint};
        let (mut severity, severity_text) = self.severity(e);
        let mut severity_text = std::borrow::Cow::Borrowed(severity_text);
        let parsed = e.parsed.as_deref();
        if let Some(l) = parsed.and_then(|p| p.level.as_deref()) {
            severity = level_severity(l);
            severity_text = std::borrow::Cow::Owned(l.to_ascii_uppercase());
        }
        let time = u64::try_from(e.timestamp).unwrap_or(0);
        if time != 0 {
            encode_key(1, WireType::SixtyFourBit, out);
            out.extend_from_slice(&time.to_le_bytes());
        }
        if severity as i32 != 0 {
            encode_key(2, WireType::Varint, out);
            encode_varint(severity as i32 as u64, out);
        }
        write_bytes(3, severity_text.as_bytes(), out);
        // body: AnyValue { string_value (1) }, always present.
        let msg = e.message.as_bytes();
        encode_key(5, WireType::LengthDelimited, out);
        encode_varint((1 + prost::encoding::encoded_len_varint(msg.len() as u64) + msg.len()) as u64, out);
        encode_key(1, WireType::LengthDelimited, out);
        encode_varint(msg.len() as u64, out);
        out.extend_from_slice(msg);
        write_string_kv(6, "log.iostream", e.stream.as_str(), out);
        write_string_kv(6, "log.file.path", &e.source.file, out);
        let (mut trace_id, mut span_id) = (None, None);
        if let Some(p) = parsed {
            for (k, v) in &p.fields {
                match v {
                    serde_json::Value::String(s) => write_string_kv(6, k, s, out),
                    other => write_string_kv(6, k, &other.to_string(), out),
                }
            }
            trace_id = p.trace_id.as_deref().and_then(|t| hex_id(t, 16));
            span_id = p.span_id.as_deref().and_then(|t| hex_id(t, 8));
        }
        write_bytes(9, trace_id.as_deref().unwrap_or_default(), out);
        write_bytes(10, span_id.as_deref().unwrap_or_default(), out);
        if observed != 0 {
            encode_key(11, WireType::SixtyFourBit, out);
            out.extend_from_slice(&observed.to_le_bytes());
        }
    }

    /// The protobuf of `request(events)`, written directly: the resources and the scope
    /// through prost (once per container), every record by `write_record` into one buffer
    /// per resource, then the nesting with its lengths.
    pub fn encode_raw(&self, events: &[(&Event, u64)]) -> Vec<u8> {
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
        let scope = scope().encode_to_vec();
        let mut index: HashMap<ResourceKey<'_>, usize> = HashMap::new();
        // Per resource: its encoded `Resource` and its records, each with key and length.
        let mut resources: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut last: Option<(&Arc<Source>, usize)> = None;
        let mut record = Vec::new();
        for &(e, observed) in events {
            let i = match last {
                Some((src, i)) if Arc::ptr_eq(src, &e.source) => i,
                _ => *index.entry(ResourceKey::of(&e.source)).or_insert_with(|| {
                    resources.push((self.resource(&e.source).encode_to_vec(), Vec::new()));
                    resources.len() - 1
                }),
            };
            last = Some((&e.source, i));
            record.clear();
            self.write_record(e, observed, &mut record);
            let records = &mut resources[i].1;
            encode_key(2, WireType::LengthDelimited, records);
            encode_varint(record.len() as u64, records);
            records.extend_from_slice(&record);
        }
        let nested = |len: usize| 1 + encoded_len_varint(len as u64) + len;
        let scope_logs_len = |records: &[u8]| nested(scope.len()) + records.len();
        let resource_logs_len =
            |(res, records): &(Vec<u8>, Vec<u8>)| nested(res.len()) + nested(scope_logs_len(records));
        let total: usize = resources.iter().map(|r| nested(resource_logs_len(r))).sum();
        let mut out = Vec::with_capacity(total);
        for r in &resources {
            let (res, records) = r;
            encode_key(1, WireType::LengthDelimited, &mut out);
            encode_varint(resource_logs_len(r) as u64, &mut out);
            encode_key(1, WireType::LengthDelimited, &mut out);
            encode_varint(res.len() as u64, &mut out);
            out.extend_from_slice(res);
            encode_key(2, WireType::LengthDelimited, &mut out);
            encode_varint(scope_logs_len(records) as u64, &mut out);
            encode_key(1, WireType::LengthDelimited, &mut out);
            encode_varint(scope.len() as u64, &mut out);
            out.extend_from_slice(&scope);
            out.extend_from_slice(records);
        }
        out
    }

    /// The request body and its headers.
    fn encode(&self, events: &[(&Event, u64)]) -> (Bytes, HeaderMap) {
        let raw = self.encode_raw(events);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        let body = match self.compression {
            Compression::None => raw,
            Compression::Gzip => {
                headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                gzip(&raw)
            }
        };
        (Bytes::from(body), headers)
    }

    /// Reads a 2xx answer: the records its `partial_success` rejects are counted (OTLP forbids
    /// retrying them) and returned. An empty body (Loki's 204) or one that is not an
    /// `ExportLogsServiceResponse` means everything was taken.
    fn partial_success(&self, body: &[u8], n: u64) -> u64 {
        if body.is_empty() {
            return 0;
        }
        let Ok(resp) = ExportLogsServiceResponse::decode(body) else {
            tracing::debug!(
                sink = self.metrics.name(),
                "otlp: a 2xx answer is not an ExportLogsServiceResponse; taken as full success"
            );
            return 0;
        };
        let Some(p) = resp.partial_success else { return 0 };
        let rejected = u64::try_from(p.rejected_log_records).unwrap_or(0).min(n);
        if rejected > 0 {
            let sample = format!("partial success, {rejected} of {n} records rejected: {}", p.error_message);
            self.metrics.rejected("partial_success", rejected, &sample);
        } else if !p.error_message.is_empty() {
            // A warning from the receiver; nothing was dropped.
            let now = now_unix_nanos() / 1_000_000_000;
            if now.saturating_sub(self.last_warning.swap(now, Ordering::Relaxed)) >= 60 {
                tracing::warn!(sink = self.metrics.name(), error = %p.error_message, "otlp: the receiver took every record but warned");
            }
        }
        rejected
    }
}

/// OTLP's part of the shared delivery loop (`deliver`).
impl<'a, 'b> Exchange<&'a [(&'b Event, u64)]> for OtlpLogs {
    type Outcome = ();

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
            // Too large for the receiver or a proxy on the way: halved, in order, instead of
            // rejected.
            too_large: "otlp: request too large (413); splitting it in two; lower batch.max_bytes",
            retrying: "otlp logs export failed; retrying",
        }
    }
    fn encode_request(&self, events: &&'a [(&'b Event, u64)]) -> (Bytes, HeaderMap) {
        OtlpLogs::encode(self, events)
    }

    fn accepted(&self, events: &mut &'a [(&'b Event, u64)], r: &HttpResponse, _: &mut ()) -> Accepted {
        let n = events.len() as u64;
        let rejected = self.partial_success(&r.body, n);
        self.metrics.events_sent.inc_by(n - rejected);
        Accepted::All
    }

    fn rejected(&self, events: &&'a [(&'b Event, u64)], r: &HttpResponse, _: &mut ()) {
        let sample = format!("HTTP {}: {}", r.status, r.body_sample(512));
        self.metrics.rejected(reject_reason(r.status), events.len() as u64, &sample);
    }
}

/// A proto3 `string`/`bytes` field: left out when empty, as prost does.
fn write_bytes(tag: u32, v: &[u8], out: &mut Vec<u8>) {
    use prost::encoding::{WireType, encode_key, encode_varint};
    if !v.is_empty() {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(v.len() as u64, out);
        out.extend_from_slice(v);
    }
}

/// A `KeyValue` with a string value (`string_kv`) as field `tag`.
fn write_string_kv(tag: u32, key: &str, value: &str, out: &mut Vec<u8>) {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
    let field = |len: usize| 1 + encoded_len_varint(len as u64) + len;
    let key_len = if key.is_empty() { 0 } else { field(key.len()) };
    // AnyValue { string_value (1) }: a oneof member is written even when empty.
    let any_len = field(value.len());
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint((key_len + field(any_len)) as u64, out);
    write_bytes(1, key.as_bytes(), out);
    encode_key(2, WireType::LengthDelimited, out);
    encode_varint(any_len as u64, out);
    encode_key(1, WireType::LengthDelimited, out);
    encode_varint(value.len() as u64, out);
    out.extend_from_slice(value.as_bytes());
}

/// The lane of a source's events: by container, so a container's records keep their order.
fn lane_of(source: &Source, lanes: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ResourceKey::of(source).hash(&mut h);
    (h.finish() % lanes as u64) as usize
}

impl Deliver for OtlpLogs {
    fn lane(&self, e: &Event) -> usize {
        if self.lanes == 1 {
            return 0;
        }
        let mut last = self.last_lane.lock().expect("lane cache lock poisoned");
        if let Some((source, lane)) = &*last
            && Arc::ptr_eq(source, &e.source)
        {
            return *lane;
        }
        let lane = lane_of(&e.source, self.lanes);
        *last = Some((e.source.clone(), lane));
        lane
    }

    fn size(&self, e: &Event) -> usize {
        // Message, the two record attributes, timestamps and framing; the resource is shared.
        e.message.len() + e.source.file.len() + 64
    }

    fn arrived(&self, chunk: &Chunk) {
        let mut a = self.arrivals.lock().expect("arrivals lock poisoned");
        a.insert(chunk.id, (now_unix_nanos(), chunk.events.len()));
    }

    async fn deliver(self: Arc<Self>, batch: Batch) {
        let events: Vec<(&Event, u64)> = {
            let a = self.arrivals.lock().expect("arrivals lock poisoned");
            let now = now_unix_nanos();
            batch
                .pieces
                .iter()
                .flat_map(|p| {
                    let at = a.get(&p.chunk.id).map_or(now, |x| x.0);
                    p.indices.iter().map(move |&i| (&p.chunk.events[i as usize], at))
                })
                .collect()
        };
        // Sent in read order, retried until the receiver takes them or refuses them for good.
        deliver::deliver(&*self, &events[..], &mut ()).await;
        let mut a = self.arrivals.lock().expect("arrivals lock poisoned");
        for p in &batch.pieces {
            if let Some(entry) = a.get_mut(&p.chunk.id) {
                entry.1 = entry.1.saturating_sub(p.indices.len());
                if entry.1 == 0 {
                    a.remove(&p.chunk.id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
