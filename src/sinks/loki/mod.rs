//! The Loki sink: `POST /loki/api/v1/push`, protobuf + snappy (Loki's native format, as
//! Promtail and Alloy send) or JSON, with labels from a low-cardinality allow-list.
//!
//! Key decision: streams are sharded. Every event goes to the shard given by a hash of its label
//! values, and each shard has its own batch and sends one request at a time, retried until Loki
//! takes it; a shard with no request in flight sends what it has at once (`batch`: flush when
//! idle), so a line waits for the push before it, not for the batch to fill. So the entries of a stream leave in read order (sorted by timestamp inside a
//! request), and a 429 or an error stalls only the streams of that shard while the other
//! shards keep sending what they hold; once the stalled shard's next batch is full, intake
//! pauses for all (memory is bounded and nothing may be dropped or reordered), and the files on
//! disk buffer the rest. Rejected: one queue for all streams (Promtail: one slow stream blocks
//! every other for as long as it is retried), and dropping a shard's batch after a deadline
//! (loses lines). A retried request may repeat entries that Loki had already stored from it
//! (a per-stream 429 is partial). Loki documents that it ignores an entry matching the previous
//! entry of its stream in timestamp and line; other repeats are stored twice (at-least-once).
//!
//! Labels (default `namespace, pod, container, node, stream`): what users filter by, bounded by
//! the pods of one node. High-cardinality facts (pod uid, container id, file) can go to
//! structured metadata (`structured_metadata`, Loki 3). `max_streams` guards the stream count:
//! past it, events of new streams are sent under one overflow stream per output stream
//! (`{node, stream, vigil_overflow="true"}` + static labels) and counted, not dropped.

use super::batch::{self, Batch, Deliver, DriverConfig};
use super::deliver::{self, Accepted, Exchange, Retry, Texts, Unit};
use super::http::{self, Compression, HttpClient, HttpResponse, gzip};
use super::metrics::SinkMetrics;
use super::retry::{Backoff, Failure, RetryConfig};
use super::{RunFuture, Sink, SinkContext};
use crate::event::{Event, Source, Stream};
use crate::pipeline::{Acker, Chunk};
use crate::process::template::Template;
use bytes::Bytes;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue};
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

mod config;
pub use config::*;

/// Loki's push protocol (`pkg/push/push.proto`, package `logproto`), written by hand for prost.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<StreamAdapter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamAdapter {
        /// Labels in LogQL syntax: `{a="x", b="y"}`.
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<EntryAdapter>,
        /// Set by Loki; clients leave it 0.
        #[prost(uint64, tag = "3")]
        pub hash: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EntryAdapter {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub line: String,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPairAdapter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPairAdapter {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `google.protobuf.Timestamp`.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

pub struct LokiSink {
    inner: Arc<LokiInner>,
    driver: DriverConfig,
}

struct LokiInner {
    url: reqwest::Url,
    client: HttpClient,
    encoding: LokiEncoding,
    compression: Compression,
    tenant: Option<HeaderValue>,
    /// `tenant_id` as a template of event fields.
    tenant_template: Option<Template>,
    template_default: HeaderValue,
    level_label: bool,
    parsed_fields: ParsedFields,
    labels: Vec<LabelField>,
    pod_labels: Vec<(String, String)>,
    static_labels: Vec<(String, String)>,
    metadata: Vec<MetadataField>,
    retry: RetryConfig,
    shards: usize,
    streams: Mutex<StreamTable>,
    metrics: SinkMetrics,
}

impl LokiSink {
    pub fn build(c: &LokiConfig, ctx: &SinkContext) -> Result<Box<dyn Sink>, super::Error> {
        Ok(Box::new(Self::new(c, ctx)?))
    }

    pub fn new(c: &LokiConfig, ctx: &SinkContext) -> Result<Self, super::Error> {
        let err = |message: String| super::Error::Build { name: c.name.clone(), message };
        let metrics = ctx.sink_metrics(&c.name).with_rejection_reasons(&REJECT_REASONS);
        let url = http::endpoint_with_path(&c.endpoint, "/loki/api/v1/push").map_err(err)?;
        let client = HttpClient::new(&c.http(), metrics.clone()).map_err(|e| err(e.to_string()))?;
        let tenant_template = match Template::parse(c.tenant_id.expose()) {
            Ok(t) if t.has_fields() => Some(t),
            _ => None,
        };
        let template_default = HeaderValue::from_str(&c.template_default)
            .map_err(|_| err("template_default is not a valid header value".into()))?;
        let tenant = match c.tenant_id.expose() {
            _ if tenant_template.is_some() => None,
            "" => None,
            t => {
                let mut v =
                    HeaderValue::from_str(t).map_err(|_| err("tenant_id is not a valid header value".into()))?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let shards = c.max_in_flight.max(1);
        let inner = LokiInner {
            url,
            client,
            encoding: c.encoding,
            compression: c.compression,
            tenant,
            tenant_template,
            template_default,
            level_label: c.level_label,
            parsed_fields: c.parsed_fields,
            labels: c.labels.clone(),
            pod_labels: c.pod_labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            static_labels: c.static_labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            metadata: c.structured_metadata.clone(),
            retry: c.retry,
            shards,
            streams: Mutex::new(StreamTable::new(c.max_streams)),
            metrics,
        };
        let driver = DriverConfig { limits: c.batch.resolve(DEFAULT_LIMITS), lanes: shards, lane_concurrency: 1 };
        Ok(Self { inner: Arc::new(inner), driver })
    }
}

impl Sink for LokiSink {
    fn run(self: Box<Self>, input: mpsc::Receiver<Arc<Chunk>>, acker: Acker) -> RunFuture {
        Box::pin(batch::run(self.inner, self.driver, input, acker))
    }
}

/// The label sets in use, for the `max_streams` guard.
struct StreamTable {
    max: usize,
    seen: HashMap<String, Instant>,
    last_sweep: Instant,
}

/// A stream not pushed to for this long no longer counts against `max_streams`.
const STREAM_IDLE: Duration = Duration::from_secs(3600);

impl StreamTable {
    fn new(max: usize) -> Self {
        Self { max, seen: HashMap::new(), last_sweep: Instant::now() }
    }

    /// Whether `labels` may be sent as its own stream now.
    fn admit(&mut self, labels: &str, now: Instant) -> bool {
        if now.duration_since(self.last_sweep) > Duration::from_secs(60) {
            self.seen.retain(|_, t| now.duration_since(*t) < STREAM_IDLE);
            self.last_sweep = now;
        }
        if let Some(t) = self.seen.get_mut(labels) {
            *t = now;
            return true;
        }
        if self.seen.len() >= self.max {
            return false;
        }
        self.seen.insert(labels.to_string(), now);
        true
    }
}

/// Appends `value` as a LogQL double-quoted string.
fn quote(value: &str, out: &mut String) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One stream of a request being built.
struct StreamEntries<'a> {
    labels: String,
    label_pairs: Vec<(&'a str, &'a str)>,
    entries: Vec<&'a Event>,
}

impl LokiInner {
    /// The label pairs of an event, sorted by name (Loki sorts them too; sorting here makes
    /// the same set always the same string).
    fn label_pairs<'a>(&'a self, e: &'a Event) -> Vec<(&'a str, &'a str)> {
        let mut pairs: Vec<(&str, &str)> = self
            .labels
            .iter()
            .map(|l| (l.name(), l.value(&e.source, e.stream)))
            .chain(self.pod_labels.iter().filter_map(|(name, key)| {
                let v = e.source.kubernetes.labels()?.get(key)?;
                Some((name.as_str(), v.as_str()))
            }))
            .chain(self.static_labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .chain(self.level_label.then(|| e.level().map(|l| ("level", l))).flatten())
            .filter(|(_, v)| !v.is_empty())
            .collect();
        pairs.sort_unstable();
        pairs
    }

    fn overflow_pairs<'a>(&'a self, e: &'a Event) -> Vec<(&'a str, &'a str)> {
        let mut pairs: Vec<(&str, &str)> =
            vec![("node", &*e.source.node), ("stream", e.stream.as_str()), ("vigil_overflow", "true")];
        pairs.extend(self.static_labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        pairs.sort_unstable();
        pairs.dedup_by(|a, b| a.0 == b.0);
        pairs
    }

    /// Groups a batch into streams, entries of each in timestamp order (stable: equal
    /// timestamps keep read order).
    fn group<'a>(&'a self, events: &[&'a Event]) -> Vec<StreamEntries<'a>> {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut streams: Vec<StreamEntries<'a>> = Vec::new();
        let mut last: Option<(&Arc<Source>, Stream, Option<&str>, usize)> = None;
        let now = Instant::now();
        let mut table = self.streams.lock().expect("stream table lock poisoned");
        let mut overflowed = 0u64;
        for &e in events {
            // Consecutive events of one file and stream share a label set: skip the lookup.
            // (With `level_label`, the level too.)
            let level = if self.level_label { e.level() } else { None };
            if let Some((src, st, lv, i)) = last {
                if Arc::ptr_eq(src, &e.source) && st == e.stream && lv == level {
                    streams[i].entries.push(e);
                    continue;
                }
            }
            let mut pairs = self.label_pairs(e);
            let mut labels = render_labels(&pairs);
            if !table.admit(&labels, now) {
                pairs = self.overflow_pairs(e);
                labels = render_labels(&pairs);
                overflowed += 1;
            }
            let i = match index.get(&labels) {
                Some(&i) => i,
                None => {
                    index.insert(labels.clone(), streams.len());
                    streams.push(StreamEntries { labels, label_pairs: pairs, entries: Vec::new() });
                    streams.len() - 1
                }
            };
            streams[i].entries.push(e);
            // The admission of a label set cannot change within a batch (the table only grows),
            // so followers of the same file and stream may reuse the decision.
            last = Some((&e.source, e.stream, level, i));
        }
        drop(table);
        if overflowed > 0 {
            let n = streams
                .iter()
                .filter(|s| s.label_pairs.iter().any(|p| p.0 == "vigil_overflow"))
                .map(|s| s.entries.len() as u64)
                .sum();
            self.metrics.loki_overflow.inc_by(n);
            tracing::warn!(
                sink = self.metrics.name(),
                events = n,
                "loki: max_streams reached; events sent to the overflow stream (vigil_overflow=\"true\")"
            );
        }
        for s in &mut streams {
            s.entries.sort_by_key(|e| e.timestamp);
        }
        streams
    }

    fn metadata<'a>(&self, e: &'a Event) -> Vec<(Cow<'a, str>, Cow<'a, str>)> {
        let mut out: Vec<(Cow<'static, str>, &'a str)> = Vec::new();
        for m in &self.metadata {
            m.push(&e.source, &mut out);
        }
        let mut md: Vec<(Cow<'a, str>, Cow<'a, str>)> = out.into_iter().map(|(k, v)| (k, Cow::Borrowed(v))).collect();
        if self.parsed_fields == ParsedFields::StructuredMetadata {
            if let Some(p) = &e.parsed {
                for (k, v) in [("trace_id", &p.trace_id), ("span_id", &p.span_id)] {
                    if let Some(v) = v {
                        md.push((Cow::Borrowed(k), Cow::Borrowed(v.as_str())));
                    }
                }
                for (k, v) in &p.fields {
                    let v = match v {
                        serde_json::Value::String(s) => Cow::Borrowed(s.as_str()),
                        other => Cow::Owned(other.to_string()),
                    };
                    md.push((Cow::Borrowed(k.as_str()), v));
                }
            }
        }
        md
    }

    /// The line sent: as written, or the lifted message when the fields go to metadata.
    fn line<'a>(&self, e: &'a Event) -> &'a str {
        match self.parsed_fields {
            ParsedFields::Line => e.raw_line(),
            ParsedFields::StructuredMetadata => &e.message,
        }
    }

    /// The tenant of a push (all its events have the same one, see `deliver`).
    fn tenant_of(&self, e: Option<&&Event>) -> Option<HeaderValue> {
        let (Some(template), Some(e)) = (&self.tenant_template, e) else { return self.tenant.clone() };
        let default = self.template_default.to_str().unwrap_or("unknown");
        let name = template.render(e, default, crate::process::template::verbatim);
        let mut value = match HeaderValue::from_str(&name) {
            Ok(v) if !name.is_empty() => v,
            _ => self.template_default.clone(),
        };
        value.set_sensitive(true);
        Some(value)
    }

    /// The request body and its headers.
    fn encode(&self, events: &[&Event]) -> (Bytes, HeaderMap) {
        let streams = self.group(events);
        let mut headers = HeaderMap::new();
        let raw = match self.encoding {
            LokiEncoding::Protobuf => {
                use prost::Message;
                let req = proto::PushRequest {
                    streams: streams
                        .iter()
                        .map(|s| proto::StreamAdapter {
                            labels: s.labels.clone(),
                            entries: s
                                .entries
                                .iter()
                                .map(|e| proto::EntryAdapter {
                                    timestamp: Some(proto::Timestamp {
                                        seconds: e.timestamp.div_euclid(1_000_000_000),
                                        nanos: e.timestamp.rem_euclid(1_000_000_000) as i32,
                                    }),
                                    line: self.line(e).to_string(),
                                    structured_metadata: self
                                        .metadata(e)
                                        .into_iter()
                                        .map(|(n, v)| proto::LabelPairAdapter {
                                            name: n.into_owned(),
                                            value: v.into_owned(),
                                        })
                                        .collect(),
                                })
                                .collect(),
                            hash: 0,
                        })
                        .collect(),
                };
                let pb = req.encode_to_vec();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
                snap::raw::Encoder::new().compress_vec(&pb).expect("snappy compresses any input below 4GiB")
            }
            LokiEncoding::Json => {
                use serde_json::{Map, Value, json};
                let streams: Vec<Value> = streams
                    .iter()
                    .map(|s| {
                        let labels: Map<String, Value> =
                            s.label_pairs.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
                        let values: Vec<Value> = s
                            .entries
                            .iter()
                            .map(|e| {
                                let md: Map<String, Value> = self
                                    .metadata(e)
                                    .into_iter()
                                    .map(|(k, v)| (k.into_owned(), Value::from(v.into_owned())))
                                    .collect();
                                if md.is_empty() {
                                    json!([e.timestamp.to_string(), self.line(e)])
                                } else {
                                    json!([e.timestamp.to_string(), self.line(e), md])
                                }
                            })
                            .collect();
                        json!({"stream": labels, "values": values})
                    })
                    .collect();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                serde_json::to_vec(&json!({ "streams": streams })).expect("JSON values serialize")
            }
        };
        let body = match self.compression {
            Compression::None => raw,
            Compression::Gzip => {
                headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                gzip(&raw)
            }
        };
        if let Some(t) = self.tenant_of(events.first()) {
            headers.insert("X-Scope-OrgID", t);
        }
        (Bytes::from(body), headers)
    }
}

/// Loki's part of the shared delivery loop (`deliver`).
impl<'a, 'b> Exchange<&'a [&'b Event]> for LokiInner {
    type Outcome = ();

    fn client(&self) -> &HttpClient {
        &self.client
    }
    fn url(&self) -> &reqwest::Url {
        &self.url
    }
    fn max_answer(&self) -> usize {
        MAX_ERROR_BODY
    }
    fn backoff(&self) -> Backoff {
        self.retry.backoff()
    }
    fn texts(&self) -> &'static Texts {
        &Texts {
            unit: Unit::Events,
            // Too large for something on the way (a proxy's body limit): halved, in order
            // (first half delivered before the second), instead of rejected.
            too_large: "loki: push too large (413); splitting it in two; lower batch.max_bytes",
            retrying: "loki push failed; retrying",
        }
    }
    fn encode_request(&self, events: &&'a [&'b Event]) -> (Bytes, HeaderMap) {
        LokiInner::encode(self, events)
    }

    fn accepted(&self, events: &mut &'a [&'b Event], r: &HttpResponse, _: &mut ()) -> Accepted {
        // 260: Loki's default `block_ingestion_status_code`: 2xx, yet nothing stored.
        if r.status == 260 {
            return Accepted::Retry(Retry {
                failure: Failure::IngestionBlocked,
                retry_after: r.retry_after,
                error: format!("HTTP 260 (ingestion blocked): {}", r.body_sample(512)),
            });
        }
        self.metrics.events_sent.inc_by(events.len() as u64);
        Accepted::All
    }

    fn rejected(&self, events: &&'a [&'b Event], r: &HttpResponse, _: &mut ()) {
        let n = events.len() as u64;
        let sample = format!("HTTP {}: {}", r.status, r.body_sample(512));
        // A partial 400 stores the valid entries and says how many it dropped ("total
        // ignored: X out of Y").
        let text = String::from_utf8_lossy(&r.body);
        let ignored = total_ignored(&text).filter(|&x| x <= n).unwrap_or(n);
        self.metrics.rejected(reject_reason(r.status, &sample), ignored, &sample);
        self.metrics.events_sent.inc_by(n - ignored);
    }
}

fn render_labels(pairs: &[(&str, &str)]) -> String {
    let mut s = String::with_capacity(128);
    s.push('{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(k);
        s.push('=');
        quote(v, &mut s);
    }
    s.push('}');
    s
}

/// Entries an ingester reports as dropped in a partial failure: the sum of its
/// "total ignored: X out of Y [for stream: …]" lines (one per stream). `None` when the answer
/// has no such count (then every entry of the push is counted as rejected).
fn total_ignored(body: &str) -> Option<u64> {
    const KEY: &str = "total ignored: ";
    let mut sum = None;
    let mut rest = body;
    while let Some(i) = rest.find(KEY) {
        rest = &rest[i + KEY.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(x) = digits.parse::<u64>() {
            sum = Some(sum.unwrap_or(0) + x);
        }
    }
    sum
}

/// The rejection reason of a Loki 4xx, from its status and error text (bounded set: it is a
/// metric label).
/// Every `reject_reason`, created at 0 when the sink starts.
const REJECT_REASONS: [&str; 8] = [
    "too_large",
    "line_too_long",
    "too_old",
    "out_of_order",
    "too_new",
    "invalid_labels",
    "bad_request",
    "client_error",
];

fn reject_reason(status: u16, body: &str) -> &'static str {
    let b = body.to_ascii_lowercase();
    match status {
        413 => "too_large",
        400 if b.contains("too long") || b.contains("line_too_long") => "line_too_long",
        400 if b.contains("too old") || b.contains("greater_than_max_sample_age") => "too_old",
        400 if b.contains("too far behind") || b.contains("out of order") => "out_of_order",
        400 if b.contains("too far in future") || b.contains("too_far_in_future") => "too_new",
        400 if b.contains("label") => "invalid_labels",
        400 => "bad_request",
        _ => "client_error",
    }
}

impl Deliver for LokiInner {
    fn lane(&self, e: &Event) -> usize {
        // The label values decide the stream; equal label sets must share a shard.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for l in &self.labels {
            l.value(&e.source, e.stream).hash(&mut h);
        }
        if self.level_label {
            e.level().hash(&mut h);
        }
        (h.finish() % self.shards as u64) as usize
    }

    fn size(&self, e: &Event) -> usize {
        // Line + timestamp and framing; metadata values when sent.
        self.line(e).len() + 24 + self.metadata(e).iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>()
    }

    async fn deliver(self: Arc<Self>, batch: Batch) {
        let events: Vec<&Event> = batch.events().collect();
        // Pushed in read order, retried until Loki takes them or refuses them for good.
        if self.tenant_template.is_none() {
            return deliver::deliver(&*self, &events[..], &mut ()).await;
        }
        // One push per tenant, each in read order (`encode` takes the tenant of the first).
        let mut tenants: Vec<(Option<HeaderValue>, Vec<&Event>)> = Vec::new();
        for e in events {
            let t = self.tenant_of(Some(&e));
            match tenants.iter_mut().find(|(x, _)| *x == t) {
                Some((_, list)) => list.push(e),
                None => tenants.push((t, vec![e])),
            }
        }
        for (_, list) in &tenants {
            deliver::deliver(&*self, &list[..], &mut ()).await;
        }
    }
}

#[cfg(test)]
mod tests;
