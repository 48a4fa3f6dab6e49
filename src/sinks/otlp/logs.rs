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
mod tests {
    use super::*;
    use crate::event::{K8sMeta, Origin};

    #[test]
    fn api_metadata_becomes_resource_attributes() {
        let s = sink("{name: o, endpoint: 'http://x'}");
        let r = s.inner.resource(&crate::event::test_source_with_api());
        let attrs: Vec<(String, String)> = r
            .attributes
            .iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    Some(any_value::Value::ArrayValue(a)) => format!(
                        "{:?}",
                        a.values
                            .iter()
                            .map(|v| match &v.value {
                                Some(any_value::Value::StringValue(s)) => s.clone(),
                                _ => String::new(),
                            })
                            .collect::<Vec<_>>()
                    ),
                    Some(any_value::Value::IntValue(i)) => format!("int:{i}"),
                    _ => String::new(),
                };
                (kv.key.clone(), v)
            })
            .collect();
        for want in [
            ("k8s.pod.label.app.kubernetes.io/name", "web"),
            ("k8s.pod.label.tier", "front"),
            ("k8s.pod.annotation.team", "checkout"),
            ("k8s.deployment.name", "web"),
            ("container.image.name", "registry.example.com/shop/web"),
            ("container.image.tags", "[\"1.2\"]"),
            ("k8s.namespace.label.env", "prod"),
        ] {
            assert!(attrs.iter().any(|(k, v)| k == want.0 && v == want.1), "{want:?} in {attrs:?}");
        }
    }

    /// The lane is cached per source: equal containers in distinct sources (a rotated file, a
    /// source rebuilt with new API metadata) and a source met again after another still get
    /// the lane of their container, so its records stay in one lane, in order.
    #[test]
    fn a_containers_events_keep_one_lane_through_the_lane_cache() {
        let s = sink("{name: o, endpoint: 'http://x', max_in_flight: 4}");
        let d = &s.inner;
        let pods: Vec<String> = (0..32).map(|i| format!("web-{i}")).collect();
        let mut used = std::collections::HashSet::new();
        for pod in &pods {
            let a = source(pod, "/a/0.log", Some(0));
            let b = source(pod, "/a/1.log", Some(0));
            let other = source("other", "/o/0.log", None);
            let want = lane_of(&a, 4);
            for src in [&a, &a, &other, &a, &b, &b] {
                let got = d.lane(&event(src, 1, Stream::Stdout, "x"));
                if Arc::ptr_eq(src, &other) {
                    assert_eq!(got, lane_of(&other, 4));
                } else {
                    assert_eq!(got, want, "{pod}");
                }
            }
            used.insert(want);
        }
        assert!(used.len() > 1, "containers spread over the lanes: {used:?}");
        let one = sink("{name: o, endpoint: 'http://x', max_in_flight: 1}");
        assert_eq!(one.inner.lane(&event(&source("web-1", "/a/0.log", None), 1, Stream::Stdout, "x")), 0);
    }

    fn sink(yaml: &str) -> OtlpSink {
        let c: OtlpConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let ctx = SinkContext::new(prometheus::Registry::new(), "node-a".into()).unwrap();
        OtlpSink::new(&c, &ctx).unwrap()
    }

    fn source(pod: &str, file: &str, restart: Option<u32>) -> Arc<Source> {
        Arc::new(Source {
            file: file.into(),
            node: "node-a".into(),
            kubernetes: K8sMeta {
                namespace: "shop".into(),
                pod: pod.into(),
                pod_uid: format!("uid-{pod}"),
                container: "app".into(),
                container_id: None,
                restart_count: restart,
                ..K8sMeta::default()
            },
        })
    }

    fn event(src: &Arc<Source>, ts: i64, stream: Stream, msg: &str) -> Event {
        Event {
            timestamp: ts,
            stream,
            message: msg.into(),
            malformed: false,
            truncated: false,
            source: src.clone(),
            origin: Origin { file: 1, offset: 0, resume: 1 },
            parsed: None,
        }
    }

    mod oracle {
        use super::*;
        use crate::event::Parsed;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![any::<String>(), "[a-f0-9\\x00\"é]{0,34}", Just(String::new())]
        }

        fn event(sources: Vec<Arc<Source>>) -> impl Strategy<Value = Event> {
            let value = prop_oneof![
                text().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                Just(serde_json::json!({"a": [1, "b"]})),
            ];
            let parsed = proptest::option::of(
                (
                    proptest::option::of(prop_oneof![text(), Just("error".to_string()), Just("Info".to_string())]),
                    proptest::option::of(prop_oneof![text(), "[0-9a-f]{32}"]),
                    proptest::option::of(prop_oneof![text(), "[0-9a-f]{16}"]),
                    proptest::collection::vec((text(), value), 0..3),
                )
                    .prop_map(|(level, trace_id, span_id, fields)| {
                        Box::new(Parsed { level, trace_id, span_id, fields, raw: None })
                    }),
            );
            (0..sources.len(), text(), any::<i64>(), any::<bool>(), parsed).prop_map(
                move |(src, message, timestamp, stderr, parsed)| Event {
                    timestamp,
                    stream: if stderr { Stream::Stderr } else { Stream::Stdout },
                    message,
                    malformed: false,
                    truncated: false,
                    source: sources[src].clone(),
                    origin: Origin { file: 1, offset: 0, resume: 1 },
                    parsed,
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]
            /// The direct encoder writes byte for byte what prost wrote for the same request:
            /// resources in first-seen order, records in read order, any text, parsed fields.
            #[test]
            fn direct_logs_encoding_is_byte_for_byte_the_prost_one(
                events in proptest::collection::vec(
                    event(vec![
                        source("a", "/p/a/0.log", Some(0)),
                        source("b", "", None),
                        crate::event::test_source_with_api(),
                        source("a", "/p/a/0.log.1", Some(0)),
                    ]),
                    0..6,
                ),
                observed in prop_oneof![Just(0u64), any::<u64>()],
                by_stream: bool,
            ) {
                let yaml = format!(
                    "{{name: o, endpoint: 'http://x', severity_from_stream: {by_stream}, resource_attributes: {{k8s.cluster.name: prod}}}}"
                );
                let s = sink(&yaml);
                let refs: Vec<(&Event, u64)> = events.iter().map(|e| (e, observed)).collect();
                prop_assert_eq!(s.inner.encode_raw(&refs), s.inner.request_messages(&refs).encode_to_vec());
            }
        }
    }

    fn attrs(kvs: &[KeyValue]) -> Vec<(String, String)> {
        kvs.iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    Some(any_value::Value::IntValue(i)) => format!("int:{i}"),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect()
    }

    #[test]
    fn one_resource_per_container_even_across_rotated_files() {
        let s = sink("{name: o, endpoint: 'http://x', resource_attributes: {k8s.cluster.name: prod}}");
        let a0 = source("a", "/var/log/pods/shop_a_uid-a/app/0.log", Some(0));
        // The same container's file after rotation: another `Source`, the same resource.
        let a0_rotated = source("a", "/var/log/pods/shop_a_uid-a/app/0.log.20261129-101500", Some(0));
        let b = source("b", "/var/log/pods/shop_b_uid-b/app/2.log", Some(2));
        let evs = [
            event(&a0_rotated, 1, Stream::Stdout, "a1"),
            event(&b, 2, Stream::Stderr, "b1"),
            event(&a0, 3, Stream::Stdout, "a2"),
        ];
        let refs: Vec<(&Event, u64)> = evs.iter().map(|e| (e, 99)).collect();
        let req = s.inner.request(&refs);
        assert_eq!(req.resource_logs.len(), 2);
        let ra = &req.resource_logs[0];
        assert_eq!(
            attrs(&ra.resource.as_ref().unwrap().attributes),
            vec![
                ("k8s.namespace.name".into(), "shop".into()),
                ("k8s.pod.name".into(), "a".into()),
                ("k8s.pod.uid".into(), "uid-a".into()),
                ("k8s.container.name".into(), "app".into()),
                ("k8s.container.restart_count".into(), "int:0".into()),
                ("k8s.node.name".into(), "node-a".into()),
                ("k8s.cluster.name".into(), "prod".into()),
            ]
        );
        let records = &ra.scope_logs[0].log_records;
        let bodies: Vec<_> = records.iter().map(|r| r.body.clone().unwrap().value.unwrap()).collect();
        assert_eq!(
            bodies,
            vec![any_value::Value::StringValue("a1".into()), any_value::Value::StringValue("a2".into())]
        );
        assert_eq!(
            attrs(&records[1].attributes),
            vec![
                ("log.iostream".into(), "stdout".into()),
                ("log.file.path".into(), "/var/log/pods/shop_a_uid-a/app/0.log".into())
            ]
        );
        assert_eq!((records[0].time_unix_nano, records[0].observed_time_unix_nano), (1, 99));
        assert_eq!(ra.scope_logs[0].scope.as_ref().unwrap().name, "vigil");
        let rb = &req.resource_logs[1].scope_logs[0].log_records[0];
        assert_eq!(rb.severity_number, SeverityNumber::Unspecified as i32, "stderr is not WARN unless configured");
        assert_eq!(rb.severity_text, "");
    }

    /// (field number, wire type) of each top-level field of a protobuf message, read by hand.
    fn fields(mut buf: &[u8]) -> Vec<(u32, prost::encoding::WireType, Vec<u8>)> {
        use prost::encoding::{WireType, decode_key, decode_varint};
        let mut out = Vec::new();
        while !buf.is_empty() {
            let (tag, wt) = decode_key(&mut buf).unwrap();
            let len = match wt {
                WireType::Varint => {
                    let v = decode_varint(&mut buf).unwrap();
                    out.push((tag, wt, v.to_le_bytes().to_vec()));
                    continue;
                }
                WireType::SixtyFourBit => 8,
                WireType::ThirtyTwoBit => 4,
                WireType::LengthDelimited => decode_varint(&mut buf).unwrap() as usize,
                other => panic!("unexpected wire type {other:?}"),
            };
            out.push((tag, wt, buf[..len].to_vec()));
            buf = &buf[len..];
        }
        out
    }

    #[test]
    fn the_wire_format_has_the_field_numbers_of_the_otlp_spec() {
        // Independent of the generated structs: field numbers and wire types as
        // opentelemetry-proto's logs.proto defines them (REFERENCE §9).
        use prost::encoding::WireType::{LengthDelimited, SixtyFourBit, Varint};
        let s = sink("{name: o, endpoint: 'http://x', severity_from_stream: true}");
        let src = source("a", "/f.log", Some(3));
        let evs = [event(&src, 0x0102_0304_0506_0708, Stream::Stderr, "hello")];
        let refs: Vec<(&Event, u64)> = evs.iter().map(|e| (e, 0x1111_2222_3333_4444)).collect();
        let bytes = s.inner.request(&refs).encode_to_vec();
        let resource_logs = fields(&bytes);
        assert_eq!((resource_logs[0].0, resource_logs[0].1), (1, LengthDelimited), "resource_logs = 1");
        let rl = fields(&resource_logs[0].2);
        assert_eq!(rl.iter().map(|f| f.0).collect::<Vec<_>>(), [1, 2], "resource = 1, scope_logs = 2");
        let scope_logs = fields(&rl[1].2);
        assert_eq!(scope_logs.iter().map(|f| f.0).collect::<Vec<_>>(), [1, 2], "scope = 1, log_records = 2");
        let record = fields(&scope_logs[1].2);
        let by_tag = |t: u32| record.iter().find(|f| f.0 == t).unwrap_or_else(|| panic!("no field {t}"));
        assert_eq!(by_tag(1).1, SixtyFourBit, "time_unix_nano is fixed64 = 1");
        assert_eq!(by_tag(1).2, 0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(by_tag(11).1, SixtyFourBit, "observed_time_unix_nano is fixed64 = 11");
        assert_eq!(by_tag(11).2, 0x1111_2222_3333_4444u64.to_le_bytes());
        assert_eq!((by_tag(2).1, by_tag(2).2[0]), (Varint, 13), "severity_number = 2, WARN = 13");
        assert_eq!(by_tag(3).2, b"WARN", "severity_text = 3");
        // body = 5: AnyValue with string_value = 1.
        assert_eq!(fields(&by_tag(5).2), [(1, LengthDelimited, b"hello".to_vec())]);
        // attributes = 6: KeyValue{key = 1, value = 2}.
        let kv = fields(&by_tag(6).2);
        assert_eq!(kv[0], (1, LengthDelimited, b"log.iostream".to_vec()));
        // The restart count is an int attribute: AnyValue int_value = 3.
        let res = fields(&rl[0].2);
        let restart = res
            .iter()
            .map(|f| fields(&f.2))
            .find(|kv| kv[0].2 == b"k8s.container.restart_count")
            .expect("restart count attribute");
        assert_eq!(fields(&restart[1].2)[0].0, 3, "int_value = 3");
    }

    #[test]
    fn severity_from_stream_makes_stderr_warn_and_leaves_stdout_unspecified() {
        let s = sink("{name: o, endpoint: 'http://x', severity_from_stream: true}");
        let src = source("a", "/f", None);
        let evs = [event(&src, 1, Stream::Stderr, "e"), event(&src, -5, Stream::Stdout, "o")];
        let refs: Vec<(&Event, u64)> = evs.iter().map(|e| (e, 7)).collect();
        let req = s.inner.request(&refs);
        let r = &req.resource_logs[0].scope_logs[0].log_records;
        assert_eq!((r[0].severity_number, r[0].severity_text.as_str()), (SeverityNumber::Warn as i32, "WARN"));
        assert_eq!((r[1].severity_number, r[1].severity_text.as_str()), (0, ""));
        assert_eq!(r[1].time_unix_nano, 0, "a pre-1970 timestamp is sent as unknown");
        let keys: Vec<String> =
            req.resource_logs[0].resource.as_ref().unwrap().attributes.iter().map(|kv| kv.key.clone()).collect();
        assert!(!keys.contains(&"k8s.container.restart_count".to_string()), "unknown restart count left out: {keys:?}");
    }

    #[test]
    fn a_parsed_level_fields_and_ids_go_to_the_record() {
        let s = sink("{name: o, endpoint: 'http://x', severity_from_stream: true}");
        let src = source("a", "/f", None);
        let mut e = event(&src, 1, Stream::Stderr, "{}");
        e.parsed = Some(Box::new(crate::event::Parsed {
            level: Some("info".into()),
            trace_id: Some("0102030405060708090a0b0c0d0e0f10".into()),
            span_id: Some("not-hex".into()),
            fields: vec![("user".into(), serde_json::Value::from("bob")), ("n".into(), serde_json::Value::from(3))],
            raw: None,
        }));
        let req = s.inner.request(&[(&e, 7)]);
        let r = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!((r.severity_number, r.severity_text.as_str()), (SeverityNumber::Info as i32, "INFO"));
        assert_eq!(r.trace_id, (1..=16).collect::<Vec<u8>>());
        assert!(r.span_id.is_empty(), "an id that is not 16 hex digits is left out");
        let kv: Vec<(String, String)> = r
            .attributes
            .iter()
            .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(v) => Some((kv.key.clone(), v.clone())),
                _ => None,
            })
            .collect();
        assert!(kv.contains(&("user".into(), "bob".into())) && kv.contains(&("n".into(), "3".into())), "{kv:?}");
    }
}
