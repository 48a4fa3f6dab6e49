//! The Elasticsearch sink: ECS documents through `_bulk` `create` actions with a deterministic
//! `_id` per line, into a dated index or a data stream.
//!
//! Key decision: the `_id` is derived from where the line is (node, file key, offset), not
//! from its content, and documents are `create`d, so any resend (a retry, or lines read again
//! after a crash before the checkpoint) answers 409 and is counted as delivered: at-least-once
//! delivery becomes exactly-once storage. That is only sound because `(file key, offset)`
//! names one line: the tailer gives every file content a key of its own (a generation per new
//! file, reused inode and truncation, kept in the checkpoint), so a copytruncated file's new
//! lines never take the `_id`s of the old lines at the same offsets. Rejected: `index`
//! actions (a resend overwrites, and data streams refuse them) and content hashes (two
//! identical lines are two documents).
//!
//! Order does not matter to Elasticsearch, so the sink uses one batch lane with
//! `max_in_flight` concurrent requests (see `batch`). Item-by-item handling is in `bulk`.

pub mod bulk;

use super::batch::{self, Batch, BatchConfig, BatchLimits, Deliver, DriverConfig};
use super::http::{self, Compression, HttpClient};
use super::metrics::SinkMetrics;
use super::{RunFuture, Sink, SinkContext};
use crate::config::Problems;
use crate::event::Event;
use crate::pipeline::{Acker, Chunk};
use crate::process::template::Template;
use bulk::{BulkDocs, BulkSender};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

crate::sinks::http::http_sink_config! {
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ElasticsearchConfig {
        pub name: String,
        /// Which lines this sink takes: the selectors of a transform's `when:` (namespace, pod,
        /// container, labels, stream, level, message). Default: every line.
        #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
        pub route: Option<crate::process::select::SelectorConfig>,
        /// Base URL; `/_bulk` is appended, a path prefix and query string are kept (proxies,
        /// OpenSearch, VictoriaLogs' `/insert/elasticsearch`).
        pub endpoint: String,
        /// Index name pattern; strftime fields (`%Y %m %d`…) take the event's own date, UTC, and
        /// `{field}` the event's fields, e.g. `logs-{kubernetes.namespace}-%Y.%m.%d` (values
        /// lower-cased). Default `logs-vigil-%Y.%m.%d` (when `data_stream` is not set).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub index: Option<String>,
        /// Write to this data stream instead of `index` (e.g. `logs-kubernetes-default`; needs a
        /// matching index template). Default none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub data_stream: Option<String>,
        /// What an `index` template field renders as when the event has no value for it.
        /// Default `unknown`.
        #[serde(default = "default_template_default")]
        pub template_default: String,
        /// Index (a strftime pattern on the snapshot's date, UTC, or a data stream name) for
        /// metric documents, used when this sink is named under `metrics.ship.sinks`. Default
        /// `metrics-vigil-%Y.%m.%d`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub metrics_index: Option<String>,
        /// Constant fields added as ECS `labels.*`, e.g. `{cluster: prod}`. Dots in keys become
        /// `_`, so `app` and `app.kubernetes.io/name` cannot clash in the mapping. Default none.
        #[serde(default)]
        pub labels: BTreeMap<String, String>,
        /// Index for documents Elasticsearch rejects (400-class: mapping errors); they are stored
        /// there with the error and the original as a string. Default none: rejected documents are
        /// counted and logged, then dropped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub dead_letter_index: Option<String>,
        /// Take a 2xx `_bulk` answer with an empty body as "every document stored". Only for an
        /// ES-compatible endpoint known to answer so: with it, nothing checks that the lines were
        /// stored. Default false: an empty (or any non-bulk) 2xx answer is retried with an error.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pub accept_empty_response: bool,
        /// `gzip` or `none`. Default gzip: log text shrinks about tenfold, Elasticsearch accepts
        /// gzipped requests.
        #[serde(default = "default_compression")]
        pub compression: Compression,
        /// Batch limits. Defaults: 5000 events, 5MiB, 1s (Elastic advises a few MB per request).
        #[serde(default)]
        pub batch: BatchConfig,
        /// Concurrent `_bulk` requests. Default 2: hides the latency of one request behind the
        /// other (tens of thousands of lines/s per node), keeps memory to about two batches plus
        /// their compressed bodies, and does not fill a small cluster's write queues from every
        /// node at once.
        #[serde(default = "default_in_flight")]
        pub max_in_flight: usize,
    }
}

fn default_template_default() -> String {
    "unknown".into()
}
fn default_compression() -> Compression {
    Compression::Gzip
}
fn default_in_flight() -> usize {
    2
}

pub const DEFAULT_INDEX: &str = "logs-vigil-%Y.%m.%d";
const DEFAULT_LIMITS: BatchLimits =
    BatchLimits { max_events: 5000, max_bytes: 5 << 20, timeout: Duration::from_secs(1) };
/// Under Elasticsearch's default `http.max_content_length` of 100mb.
const HARD_MAX_BYTES: u64 = 90 << 20;

impl ElasticsearchConfig {
    /// The `_bulk` sender of this sink's endpoint, auth, TLS, compression, retries and dead
    /// letters, counting into `metrics`. The metrics shipper sends its documents through the
    /// same kind of sender.
    pub fn bulk_sender(&self, metrics: SinkMetrics) -> Result<BulkSender, String> {
        let url = http::endpoint_with_path(&self.endpoint, "/_bulk")?;
        let client = HttpClient::new(&self.http(), metrics).map_err(|e| e.to_string())?;
        Ok(BulkSender {
            client,
            url,
            compression: self.compression,
            retry: self.retry,
            dead_letter_index: self.dead_letter_index.clone(),
            accept_empty_response: self.accept_empty_response,
        })
    }

    pub fn validate(&self, path: &str, p: &mut Problems) {
        self.http().validate(path, p);
        match (&self.index, &self.data_stream) {
            (Some(_), Some(_)) => p.push(format!("{path}.index"), "and data_stream are both set; choose one"),
            (_, Some(ds)) => {
                if let Err(e) = check_index_name(ds) {
                    p.push(format!("{path}.data_stream"), format!("'{ds}' {e}"));
                }
            }
            (i, None) => {
                let pattern = i.as_deref().unwrap_or(DEFAULT_INDEX);
                if let Err(e) = IndexTemplate::new(pattern, &self.template_default) {
                    p.push(format!("{path}.index"), format!("'{pattern}' {e}"));
                }
                if let Err(e) = check_index_name(&self.template_default) {
                    p.push(format!("{path}.template_default"), format!("'{}' {e}", self.template_default));
                }
            }
        }
        if let Some(m) = &self.metrics_index {
            if let Err(e) = IndexPattern::new(m) {
                p.push(format!("{path}.metrics_index"), format!("'{m}' {e}"));
            }
        }
        if let Some(d) = &self.dead_letter_index {
            if let Err(e) = check_index_name(d) {
                p.push(format!("{path}.dead_letter_index"), format!("'{d}' {e}"));
            }
        }
        let mut keys = BTreeMap::new();
        for k in self.labels.keys() {
            if let Some(other) = keys.insert(dedot(k), k) {
                p.push(
                    format!("{path}.labels.{k}"),
                    format!("becomes '{}' after de-dotting, like '{other}'; rename one", dedot(k)),
                );
            }
        }
        if self.max_in_flight == 0 || self.max_in_flight > 64 {
            p.push(
                format!("{path}.max_in_flight"),
                format!("'{}' is out of range; expected 1 to 64", self.max_in_flight),
            );
        }
        self.batch.validate(&format!("{path}.batch"), HARD_MAX_BYTES, p);
        self.retry.validate(&format!("{path}.retry"), p);
    }
}

/// `app.kubernetes.io/name` → `app_kubernetes_io/name`: a dotted key would be an object path
/// in the mapping and clash with a plain `app` key.
pub fn dedot(key: &str) -> String {
    key.replace('.', "_")
}

/// Elasticsearch's index name rules (lowercase, no `\ / * ? " < > | , # :` or space, not
/// starting with `-_+`, not `.`/`..`, at most 255 bytes).
pub fn check_index_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err("is not a valid index name".into());
    }
    if name.len() > 255 {
        return Err("is longer than 255 bytes; Elasticsearch refuses it".into());
    }
    if name.starts_with(['-', '_', '+']) {
        return Err("starts with '-', '_' or '+'; Elasticsearch refuses it".into());
    }
    if name.chars().any(|c| c.is_uppercase() || "\\/*?\"<>|,#: ".contains(c)) {
        return Err("has upper-case letters or one of \\ / * ? \" < > | , # : space; Elasticsearch refuses them".into());
    }
    Ok(())
}

/// A parsed index pattern.
#[derive(Debug, Clone)]
pub struct IndexPattern {
    pattern: String,
    /// How long one rendering stays valid: the pattern's finest date field.
    granularity: Granularity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Granularity {
    Static,
    Day,
    Second,
}

impl IndexPattern {
    pub fn new(pattern: &str) -> Result<Self, String> {
        use chrono::format::{Item, StrftimeItems};
        let mut granularity = Granularity::Static;
        for item in StrftimeItems::new(pattern) {
            match item {
                Item::Error => return Err("has an invalid strftime field; expected e.g. logs-%Y.%m.%d".into()),
                Item::Numeric(..) | Item::Fixed(..) => {
                    granularity = granularity.max_with(Granularity::Day);
                }
                _ => {}
            }
        }
        // Any field finer than a day (hour, minute, second, timestamp) renders per second.
        let day_only = ["%Y", "%C", "%y", "%m", "%b", "%h", "%d", "%e", "%j", "%U", "%W", "%G", "%g", "%V", "%F", "%%"];
        let mut rest = pattern.to_string();
        for d in day_only {
            rest = rest.replace(d, "");
        }
        if rest.contains('%') {
            granularity = Granularity::Second;
        }
        let p = Self { pattern: pattern.to_string(), granularity };
        // Render a sample to apply the index name rules to what will really be sent.
        let sample = p.render(1_795_847_533_000_000_000);
        check_index_name(&sample).map_err(|e| format!("renders as '{sample}', which {e}"))?;
        Ok(p)
    }

    pub fn render(&self, ts_ns: i64) -> String {
        if self.granularity == Granularity::Static {
            return self.pattern.clone();
        }
        let secs = ts_ns.div_euclid(1_000_000_000);
        let dt = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
        dt.format(&self.pattern).to_string()
    }

    /// The timestamp range (seconds) within which `render` gives the same name as for `secs`.
    fn bucket(&self, secs: i64) -> i64 {
        match self.granularity {
            Granularity::Static => 0,
            Granularity::Day => secs.div_euclid(86_400),
            Granularity::Second => secs,
        }
    }
}

impl Granularity {
    fn max_with(self, other: Self) -> Self {
        match (self, other) {
            (Granularity::Second, _) | (_, Granularity::Second) => Granularity::Second,
            (Granularity::Day, _) | (_, Granularity::Day) => Granularity::Day,
            _ => Granularity::Static,
        }
    }
}

/// An index pattern with `{field}` references: rendered per event (per file when every field
/// is one of the file's), then formatted as a strftime pattern.
pub struct IndexTemplate {
    template: Template,
    /// The pattern with fields replaced by a sample value: its granularity buckets the cache.
    sample: IndexPattern,
    per_source: bool,
    default: String,
}

impl IndexTemplate {
    pub fn new(pattern: &str, default: &str) -> Result<Self, String> {
        let template = Template::parse(pattern)?;
        let mut sample = String::new();
        let mut rest = pattern;
        while let Some(open) = rest.find('{') {
            sample.push_str(&rest[..open]);
            sample.push('x');
            rest = &rest[open + rest[open..].find('}').map_or(rest.len() - open, |c| c + 1)..];
        }
        sample.push_str(rest);
        let sample = IndexPattern::new(&sample)?;
        Ok(Self { per_source: template.per_source(), template, sample, default: default.to_string() })
    }

    fn render(&self, e: &Event) -> String {
        let pattern =
            self.template.render(e, &self.default, |v| std::borrow::Cow::Owned(v.to_lowercase().replace('%', "%%")));
        IndexPattern { pattern, granularity: self.sample.granularity }.render(e.timestamp)
    }
}

enum Target {
    Pattern(IndexPattern),
    Templated(IndexTemplate),
    DataStream(Arc<str>),
}

pub struct ElasticsearchSink {
    inner: Arc<EsInner>,
    driver: DriverConfig,
}

struct EsInner {
    sender: BulkSender,
    target: Target,
    /// The sink's `labels` object (de-dotted keys) encoded once: `,"labels":{…}`, or None.
    labels_json: Option<Vec<u8>>,
    /// Hash of the node name in hex, the first part of every `_id` (`document_id`).
    node_hex: [u8; 16],
    metrics: SinkMetrics,
    /// Encoded bytes per estimated byte (`size`) of the last delivery, in thousandths: the
    /// next buffer is sized from it, so it is not regrown (a copy of all of it) when the
    /// estimate runs short (e.g. long container ids and image names).
    encoded_per_estimated: std::sync::atomic::AtomicUsize,
}

impl ElasticsearchSink {
    pub fn build(c: &ElasticsearchConfig, ctx: &SinkContext) -> Result<Box<dyn Sink>, super::Error> {
        Ok(Box::new(Self::new(c, ctx)?))
    }

    pub fn new(c: &ElasticsearchConfig, ctx: &SinkContext) -> Result<Self, super::Error> {
        let err = |message: String| super::Error::Build { name: c.name.clone(), message };
        // Reasons are Elasticsearch's error types (an open set): the usual ones are created at 0.
        let metrics = ctx.sink_metrics(&c.name).with_rejection_reasons(&[
            "status_400",
            "status_413",
            "document_parsing_exception",
            "mapper_parsing_exception",
        ]);
        let sender = c.bulk_sender(metrics.clone()).map_err(err)?;
        let target = match &c.data_stream {
            Some(ds) => Target::DataStream(ds.as_str().into()),
            None => {
                let pattern = c.index.as_deref().unwrap_or(DEFAULT_INDEX);
                let t = IndexTemplate::new(pattern, &c.template_default).map_err(err)?;
                if t.template.has_fields() {
                    Target::Templated(t)
                } else {
                    Target::Pattern(IndexPattern::new(pattern).map_err(err)?)
                }
            }
        };
        let labels_json = labels_object(c).map(|l| {
            let mut out = b",\"labels\":".to_vec();
            serde_json::to_writer(&mut out, &l).expect("writing JSON to a Vec cannot fail");
            out
        });
        let mut node_hex = [0u8; 16];
        hex16(fnv1a64(ctx.node_name.as_bytes()), &mut node_hex);
        let inner = EsInner { sender, target, labels_json, node_hex, metrics, encoded_per_estimated: 1125.into() };
        let driver = DriverConfig {
            limits: c.batch.resolve(DEFAULT_LIMITS),
            lanes: 1,
            lane_concurrency: c.max_in_flight.max(1),
        };
        Ok(Self { inner: Arc::new(inner), driver })
    }
}

impl Sink for ElasticsearchSink {
    fn run(self: Box<Self>, input: mpsc::Receiver<Arc<Chunk>>, acker: Acker) -> RunFuture {
        Box::pin(batch::run(self.inner, self.driver, input, acker))
    }
}

/// The sink's `labels` with de-dotted keys, or None.
fn labels_object(c: &ElasticsearchConfig) -> Option<serde_json::Map<String, serde_json::Value>> {
    (!c.labels.is_empty())
        .then(|| c.labels.iter().map(|(k, v)| (dedot(k), serde_json::Value::from(v.as_str()))).collect())
}

/// FNV-1a, 64 bit (`crate::hash`, shared with file fingerprints): a fixed, documented hash, so
/// `_id`s stay the same across vigil versions.
pub use crate::hash::fnv1a64;

/// The deterministic `_id` of an event: node hash, file key and offset, 48 hex digits. The
/// file key (one per file content: identity and generation) and the offset identify a line
/// on a node; the node hash keeps two nodes' lines apart in a shared index.
pub fn document_id(node_hash: u64, e: &Event) -> String {
    format!("{node_hash:016x}{:016x}{:016x}", e.origin.file, e.origin.offset)
}

impl EsInner {
    /// Appends the ECS document of an event, written directly (no serde): keys in this order,
    /// optional ones only when present: `@timestamp`, `message`, `stream`, `kubernetes`
    /// {`namespace`, `pod` {`name`, `uid`}, `container` {`name`, `restart_count`?},
    /// `labels`?, `annotations`?, `owner`? {`kind`, `name`}, `namespace_labels`?} (label keys
    /// de-dotted), `container`? {`id`?, `image`? {`name`}}, `host` {`name`}, `log` {`file`
    /// {`path`}, `level`?}, `labels`? (the sink's), `tags`? (`malformed`, `truncated`),
    /// `trace`? {`id`}, `span`? {`id`}, `fields`? (de-dotted, sorted, the first of two keys
    /// that meet after de-dotting kept). The same bytes as the serde encoding it replaced
    /// (the oracle in the tests), at a fraction of the cost.
    fn document(&self, e: &Event, clock: &mut Rfc3339Cache, out: &mut Vec<u8>) {
        use crate::event::write_json_str as str;
        let k = &e.source.kubernetes;
        out.extend_from_slice(b"{\"@timestamp\":\"");
        out.extend_from_slice(clock.format(e.timestamp).as_bytes());
        out.extend_from_slice(b"\",\"message\":");
        str(out, &e.message);
        out.extend_from_slice(match e.stream {
            crate::event::Stream::Stdout => b",\"stream\":\"stdout\",\"kubernetes\":{\"namespace\":",
            crate::event::Stream::Stderr => b",\"stream\":\"stderr\",\"kubernetes\":{\"namespace\":",
        });
        str(out, &k.namespace);
        out.extend_from_slice(b",\"pod\":{\"name\":");
        str(out, &k.pod);
        out.extend_from_slice(b",\"uid\":");
        str(out, &k.pod_uid);
        out.extend_from_slice(b"},\"container\":{\"name\":");
        str(out, &k.container);
        if let Some(n) = k.restart_count {
            out.extend_from_slice(b",\"restart_count\":");
            write_u64(out, n.into());
        }
        out.push(b'}');
        if let Some(api) = k.api.as_deref() {
            out.extend_from_slice(b",\"labels\":");
            write_dedotted(out, &api.labels);
            if !api.annotations.is_empty() {
                out.extend_from_slice(b",\"annotations\":");
                write_dedotted(out, &api.annotations);
            }
            if let Some(o) = &api.owner {
                out.extend_from_slice(b",\"owner\":{\"kind\":");
                str(out, &o.kind);
                out.extend_from_slice(b",\"name\":");
                str(out, &o.name);
                out.push(b'}');
            }
        }
        if let Some(l) = k.namespace_labels.as_deref() {
            out.extend_from_slice(b",\"namespace_labels\":");
            write_dedotted(out, l);
        }
        out.push(b'}');
        if k.container_id.is_some() || k.image.is_some() {
            out.extend_from_slice(b",\"container\":{");
            if let Some(id) = &k.container_id {
                out.extend_from_slice(b"\"id\":");
                str(out, id);
            }
            if let Some(image) = &k.image {
                if k.container_id.is_some() {
                    out.push(b',');
                }
                out.extend_from_slice(b"\"image\":{\"name\":");
                str(out, image);
                out.push(b'}');
            }
            out.push(b'}');
        }
        out.extend_from_slice(b",\"host\":{\"name\":");
        str(out, &e.source.node);
        out.extend_from_slice(b"},\"log\":{\"file\":{\"path\":");
        str(out, &e.source.file);
        out.push(b'}');
        if let Some(level) = e.level() {
            out.extend_from_slice(b",\"level\":");
            str(out, level);
        }
        out.push(b'}');
        if let Some(labels) = &self.labels_json {
            out.extend_from_slice(labels);
        }
        match (e.malformed, e.truncated) {
            (false, false) => {}
            (true, false) => out.extend_from_slice(b",\"tags\":[\"malformed\"]"),
            (false, true) => out.extend_from_slice(b",\"tags\":[\"truncated\"]"),
            (true, true) => out.extend_from_slice(b",\"tags\":[\"malformed\",\"truncated\"]"),
        }
        if let Some(p) = e.parsed.as_deref() {
            for (key, id) in [(&b",\"trace\":{\"id\":"[..], &p.trace_id), (b",\"span\":{\"id\":", &p.span_id)] {
                if let Some(id) = id {
                    out.extend_from_slice(key);
                    str(out, id);
                    out.push(b'}');
                }
            }
            if !p.fields.is_empty() {
                // Sorted by de-dotted key; of keys that meet after de-dotting (`a.b`, `a_b`)
                // the first is kept: a duplicate key would make Elasticsearch refuse the
                // document. (A stable sort keeps the first of equal keys first.)
                let mut fields: Vec<(std::borrow::Cow<'_, str>, &serde_json::Value)> = p
                    .fields
                    .iter()
                    .map(|(k, v)| (if k.contains('.') { dedot(k).into() } else { k.as_str().into() }, v))
                    .collect();
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                fields.dedup_by(|b, a| a.0 == b.0);
                out.extend_from_slice(b",\"fields\":{");
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    str(out, k);
                    out.push(b':');
                    serde_json::to_writer(&mut *out, v).expect("writing JSON to a Vec cannot fail");
                }
                out.push(b'}');
            }
        }
        out.push(b'}');
    }

    /// Appends the action line (`_id`: `document_id`, written without a `String`) and the
    /// document of an event.
    fn push(&self, docs: &mut BulkDocs, index: &str, e: &Event, clock: &mut Rfc3339Cache) {
        let mut id = [0u8; 48];
        id[..16].copy_from_slice(&self.node_hex);
        hex16(e.origin.file, &mut id[16..32]);
        hex16(e.origin.offset, &mut id[32..]);
        let id = std::str::from_utf8(&id).expect("hex digits");
        docs.push(index, Some(id), |out| self.document(e, clock, out));
    }

    fn documents(&self, batch: &Batch) -> BulkDocs {
        use std::sync::atomic::Ordering::Relaxed;
        let ratio = self.encoded_per_estimated.load(Relaxed);
        let mut docs = BulkDocs::with_capacity(batch.bytes.saturating_mul(ratio) / 1000, batch.events);
        // Most events of a batch share a day: render the index once per bucket, and share
        // the name between documents rather than copying it per event.
        let mut cached: Option<(i64, Arc<str>)> = None;
        let mut cached_source: Option<(usize, i64, Arc<str>)> = None;
        let mut clock = Rfc3339Cache::default();
        for e in batch.events() {
            let index = match &self.target {
                Target::DataStream(ds) => ds.clone(),
                Target::Templated(t) => {
                    let bucket = t.sample.bucket(e.timestamp.div_euclid(1_000_000_000));
                    let src = Arc::as_ptr(&e.source) as usize;
                    match &cached_source {
                        Some((s, b, name)) if t.per_source && *s == src && *b == bucket => name.clone(),
                        _ => {
                            let name: Arc<str> = t.render(e).into();
                            cached_source = Some((src, bucket, name.clone()));
                            name
                        }
                    }
                }
                Target::Pattern(p) => {
                    let bucket = p.bucket(e.timestamp.div_euclid(1_000_000_000));
                    match &cached {
                        Some((b, name)) if *b == bucket => name.clone(),
                        _ => {
                            let name: Arc<str> = p.render(e.timestamp).into();
                            cached = Some((bucket, name.clone()));
                            name
                        }
                    }
                }
            };
            self.push(&mut docs, &index, e, &mut clock);
        }
        // A sixteenth to spare, for a batch of longer lines than the last.
        if let Some(r) = docs.body().len().saturating_mul(1000).checked_div(batch.bytes) {
            self.encoded_per_estimated.store((r + r / 16).clamp(500, 4000), Relaxed);
        }
        docs
    }
}

/// `v` as 16 lower-case hex digits (`{v:016x}`) into `out`.
fn hex16(v: u64, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out[..16].iter_mut().enumerate() {
        *b = HEX[(v >> (60 - 4 * i) & 15) as usize];
    }
}

/// `v` in decimal, as serde_json writes integers.
fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut b = [0u8; 20];
    let mut i = b.len();
    loop {
        i -= 1;
        b[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&b[i..]);
}

/// A label map as a JSON object with de-dotted keys (as the sink's own `labels`), in the
/// map's order. `.` never appears in an escape sequence, so it is replaced after escaping.
fn write_dedotted(out: &mut Vec<u8>, map: &crate::event::Labels) {
    out.push(b'{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let at = out.len();
        crate::event::write_json_str(out, k);
        for b in &mut out[at..] {
            if *b == b'.' {
                *b = b'_';
            }
        }
        out.push(b':');
        crate::event::write_json_str(out, v);
    }
    out.push(b'}');
}

/// RFC 3339 with nanoseconds, the date-time part formatted once per second (chrono's
/// formatter is most of the cost of a document otherwise; events of a batch share seconds).
#[derive(Default)]
struct Rfc3339Cache {
    secs: Option<i64>,
    buf: String,
    prefix_len: usize,
}

impl Rfc3339Cache {
    fn format(&mut self, ns: i64) -> &str {
        let secs = ns.div_euclid(1_000_000_000);
        let nanos = ns.rem_euclid(1_000_000_000);
        if self.secs != Some(secs) {
            self.buf.clear();
            crate::event::format_rfc3339_nanos(secs * 1_000_000_000, &mut self.buf);
            // Keep "YYYY-MM-DDTHH:MM:SS"; the fraction and Z are appended per event.
            self.prefix_len = self.buf.find('.').unwrap_or(self.buf.len());
            self.secs = Some(secs);
        }
        self.buf.truncate(self.prefix_len);
        let mut frac = *b".000000000Z";
        let mut n = nanos as u32;
        for d in frac[1..10].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        self.buf.push_str(std::str::from_utf8(&frac).expect("ASCII digits"));
        &self.buf
    }
}

impl Deliver for EsInner {
    fn lane(&self, _e: &Event) -> usize {
        0
    }

    fn size(&self, e: &Event) -> usize {
        // Message (JSON-escaped roughly as is) plus the ECS fields and the action line.
        let s = &e.source;
        e.message.len()
            + s.file.len()
            + s.node.len()
            + s.kubernetes.namespace.len()
            + s.kubernetes.pod.len()
            + s.kubernetes.pod_uid.len()
            + s.kubernetes.container.len()
            + s.kubernetes.api_bytes()
            + 260
    }

    async fn deliver(self: Arc<Self>, batch: Batch) {
        let docs = self.documents(&batch);
        let outcome = self.sender.deliver_encoded(docs).await;
        self.metrics.events_sent.inc_by(outcome.delivered() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The serde encoding of a document that `EsInner::document` replaced, kept as the oracle:
    /// the documents' bytes are a contract (field names, order, escaping).
    fn document_serde(
        labels: Option<&serde_json::Map<String, serde_json::Value>>,
        e: &Event,
        clock: &mut Rfc3339Cache,
        out: &mut Vec<u8>,
    ) {
        use serde::Serialize;
        #[derive(Serialize)]
        struct Doc<'a> {
            #[serde(rename = "@timestamp")]
            timestamp: &'a str,
            message: &'a str,
            stream: &'static str,
            kubernetes: Kubernetes<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            container: Option<Container<'a>>,
            host: Host<'a>,
            log: Log<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            labels: Option<&'a serde_json::Map<String, serde_json::Value>>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            tags: Vec<&'static str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            trace: Option<Id<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            span: Option<Id<'a>>,
            /// Parsed fields, de-dotted (capped at parse: `sources.containers.max_fields`).
            #[serde(skip_serializing_if = "Option::is_none")]
            fields: Option<serde_json::Map<String, serde_json::Value>>,
        }
        #[derive(Serialize)]
        struct Id<'a> {
            id: &'a str,
        }
        #[derive(Serialize)]
        struct Kubernetes<'a> {
            namespace: &'a str,
            pod: Pod<'a>,
            container: KContainer<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            labels: Option<Dedot<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            annotations: Option<Dedot<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            owner: Option<&'a crate::event::Owner>,
            #[serde(skip_serializing_if = "Option::is_none")]
            namespace_labels: Option<Dedot<'a>>,
        }
        /// A label map with de-dotted keys (as the sink's own `labels`), written without copying.
        struct Dedot<'a>(&'a crate::event::Labels);
        impl Serialize for Dedot<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    if k.contains('.') {
                        m.serialize_entry(&dedot(k), v)?;
                    } else {
                        m.serialize_entry(k, v)?;
                    }
                }
                m.end()
            }
        }
        #[derive(Serialize)]
        struct Pod<'a> {
            name: &'a str,
            uid: &'a str,
        }
        #[derive(Serialize)]
        struct KContainer<'a> {
            name: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            restart_count: Option<u32>,
        }
        #[derive(Serialize)]
        struct Container<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            image: Option<Image<'a>>,
        }
        #[derive(Serialize)]
        struct Image<'a> {
            name: &'a str,
        }
        #[derive(Serialize)]
        struct Host<'a> {
            name: &'a str,
        }
        #[derive(Serialize)]
        struct Log<'a> {
            file: File<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            level: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct File<'a> {
            path: &'a str,
        }
        let ts = clock.format(e.timestamp);
        let k = &e.source.kubernetes;
        let mut tags = Vec::new();
        if e.malformed {
            tags.push("malformed");
        }
        if e.truncated {
            tags.push("truncated");
        }
        let doc = Doc {
            timestamp: ts,
            message: &e.message,
            stream: e.stream.as_str(),
            kubernetes: Kubernetes {
                namespace: &k.namespace,
                pod: Pod { name: &k.pod, uid: &k.pod_uid },
                container: KContainer { name: &k.container, restart_count: k.restart_count },
                labels: k.api.as_deref().map(|a| Dedot(&a.labels)),
                annotations: k.api.as_deref().filter(|a| !a.annotations.is_empty()).map(|a| Dedot(&a.annotations)),
                owner: k.api.as_deref().and_then(|a| a.owner.as_ref()),
                namespace_labels: k.namespace_labels.as_deref().map(Dedot),
            },
            container: (k.container_id.is_some() || k.image.is_some()).then(|| Container {
                id: k.container_id.as_deref(),
                image: k.image.as_deref().map(|name| Image { name }),
            }),
            host: Host { name: &e.source.node },
            log: Log { file: File { path: &e.source.file }, level: e.level() },
            labels,
            tags,
            trace: e.parsed.as_ref().and_then(|p| p.trace_id.as_deref()).map(|id| Id { id }),
            span: e.parsed.as_ref().and_then(|p| p.span_id.as_deref()).map(|id| Id { id }),
            fields: e.parsed.as_ref().filter(|p| !p.fields.is_empty()).map(|p| {
                let mut m = serde_json::Map::new();
                for (k, v) in &p.fields {
                    // `a.b` and `a_b` meet after de-dotting: the first is kept (a duplicate key
                    // would make Elasticsearch refuse the document).
                    m.entry(dedot(k)).or_insert_with(|| v.clone());
                }
                m
            }),
        };
        serde_json::to_writer(&mut *out, &doc).expect("writing JSON to a Vec cannot fail");
    }

    mod oracle {
        use super::*;
        use crate::event::{K8sMeta, Labels, Owner, Parsed, PodMeta, Source, Stream};
        use proptest::prelude::*;

        /// Any text, and text dense in what JSON escapes or de-dotting changes.
        fn text() -> impl Strategy<Value = String> {
            prop_oneof![any::<String>(), "[\"\\\\\\x00-\\x1f\\x7f.a-z_é\u{2028}\u{10FFFF}]{0,24}"]
        }

        fn labels() -> impl Strategy<Value = Labels> {
            // Keys that meet after de-dotting (`a.b`, `a_b`) included.
            let key = prop_oneof![
                text(),
                Just("a.b".to_string()),
                Just("a_b".to_string()),
                Just("app.kubernetes.io/name".to_string())
            ];
            proptest::collection::btree_map(key, text(), 0..4)
        }

        fn value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(serde_json::Value::from),
                text().prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(2, 12, 3, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::from),
                    proptest::collection::btree_map(text(), inner, 0..3)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn parsed() -> impl Strategy<Value = Option<Box<Parsed>>> {
            let key = prop_oneof![text(), Just("a.b".to_string()), Just("a_b".to_string()), Just("x.y.z".to_string())];
            proptest::option::of(
                (
                    proptest::option::of(text()),
                    proptest::option::of(text()),
                    proptest::option::of(text()),
                    proptest::collection::vec((key, value()), 0..5),
                )
                    .prop_map(|(level, trace_id, span_id, fields)| {
                        Box::new(Parsed { level, trace_id, span_id, fields, raw: None })
                    }),
            )
        }

        fn source() -> impl Strategy<Value = Source> {
            (
                (text(), text(), text(), text(), text(), text()),
                (proptest::option::of(text()), proptest::option::of(any::<u32>()), proptest::option::of(text())),
                proptest::option::of((labels(), labels(), proptest::option::of((text(), text())))),
                proptest::option::of(labels()),
            )
                .prop_map(
                    |(
                        (file, node, namespace, pod, pod_uid, container),
                        (container_id, restart_count, image),
                        api,
                        ns_labels,
                    )| Source {
                        file,
                        node: node.into(),
                        kubernetes: K8sMeta {
                            namespace,
                            pod,
                            pod_uid,
                            container,
                            container_id,
                            restart_count,
                            api: api.map(|(labels, annotations, owner)| {
                                Arc::new(PodMeta {
                                    labels,
                                    annotations,
                                    owner: owner.map(|(kind, name)| Owner { kind, name }),
                                    controls: [("vigil.io/exclude".to_string(), "true".to_string())].into(),
                                })
                            }),
                            image: image.map(Into::into),
                            namespace_labels: ns_labels.map(Arc::new),
                        },
                    },
                )
        }

        fn event() -> impl Strategy<Value = Event> {
            (source(), text(), any::<i64>(), any::<(bool, bool, bool)>(), any::<(u64, u64)>(), parsed()).prop_map(
                |(source, message, timestamp, (stderr, malformed, truncated), (file, offset), parsed)| Event {
                    timestamp,
                    stream: if stderr { Stream::Stderr } else { Stream::Stdout },
                    message,
                    malformed,
                    truncated,
                    source: Arc::new(source),
                    origin: crate::event::Origin { file, offset, resume: offset.wrapping_add(1) },
                    parsed,
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            /// The direct encoder writes byte for byte what the serde encoding wrote: action
            /// lines (index, `document_id`) and documents, for any text in any field.
            #[test]
            fn direct_bulk_encoding_is_byte_for_byte_the_serde_one(
                events in proptest::collection::vec(event(), 1..4),
                sink_labels in proptest::collection::btree_map(text(), text(), 0..3),
                node in text(),
                index in prop_oneof![Just("logs-vigil-2026.11.28".to_string()), text()],
            ) {
                let mut c: ElasticsearchConfig = serde_yaml_ng::from_str("{name: es, endpoint: 'http://x'}").unwrap();
                c.labels = sink_labels;
                let ctx = crate::sinks::SinkContext::new(prometheus::Registry::new(), node.as_str().into()).unwrap();
                let inner = ElasticsearchSink::new(&c, &ctx).unwrap().inner;
                let labels = labels_object(&c);
                let (mut docs, mut clock) = (bulk::BulkDocs::with_capacity(0, 0), Rfc3339Cache::default());
                let mut want = Vec::new();
                let mut oracle_clock = Rfc3339Cache::default();
                for e in &events {
                    inner.push(&mut docs, &index, e, &mut clock);
                    let id = document_id(fnv1a64(node.as_bytes()), e);
                    bulk::write_action(&mut want, &bulk::BulkDoc { index: index.as_str().into(), id: Some(id), source: vec![] });
                    document_serde(labels.as_ref(), e, &mut oracle_clock, &mut want);
                    want.push(b'\n');
                }
                prop_assert_eq!(String::from_utf8_lossy(docs.body()), String::from_utf8_lossy(&want));
                prop_assert_eq!(docs.body(), &want[..]);
            }
        }
    }

    #[test]
    fn index_patterns() {
        let p = IndexPattern::new("logs-vigil-%Y.%m.%d").unwrap();
        assert_eq!(p.granularity, Granularity::Day);
        // 2026-11-28T06:32:13Z
        assert_eq!(p.render(1_795_847_533_123_456_789), "logs-vigil-2026.11.28");
        assert_eq!(p.bucket(1_795_847_533), p.bucket(1_795_847_533 + 3600));
        let h = IndexPattern::new("logs-%Y.%m.%d-%H").unwrap();
        assert_eq!(h.granularity, Granularity::Second);
        assert_eq!(h.render(1_795_847_533_000_000_000), "logs-2026.11.28-06");
        assert_eq!(IndexPattern::new("static").unwrap().render(0), "static");
        assert!(IndexPattern::new("Logs-%Y").is_err(), "upper case is refused by Elasticsearch");
        assert!(IndexPattern::new("logs-%b").is_err(), "%b renders 'Nov'");
        assert!(IndexPattern::new("logs-%Q").is_err());
    }

    #[test]
    fn cached_timestamps_match_the_event_contract() {
        let mut c = Rfc3339Cache::default();
        for ns in [0, 1_795_847_533_123_456_789, 1_795_847_533_000_000_001, 1_795_847_534_999_999_999, -1] {
            let mut want = String::new();
            crate::event::format_rfc3339_nanos(ns, &mut want);
            assert_eq!(c.format(ns), want, "{ns}");
        }
    }

    #[test]
    fn documents_carry_the_api_metadata_dedotted() {
        let c: ElasticsearchConfig = serde_yaml_ng::from_str("{name: es, endpoint: 'http://x'}").unwrap();
        let ctx = crate::sinks::SinkContext::new(prometheus::Registry::new(), "node-a".into()).unwrap();
        let inner = ElasticsearchSink::new(&c, &ctx).unwrap().inner;
        let e = Event {
            timestamp: 1_795_847_533_000_000_000,
            stream: crate::event::Stream::Stdout,
            message: "m".into(),
            malformed: false,
            truncated: false,
            source: crate::event::test_source_with_api(),
            origin: crate::event::Origin { file: 1, offset: 0, resume: 1 },
            parsed: None,
        };
        let mut out = Vec::new();
        inner.document(&e, &mut Rfc3339Cache::default(), &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let k = &v["kubernetes"];
        assert_eq!(k["labels"], serde_json::json!({"app_kubernetes_io/name": "web", "tier": "front"}));
        assert_eq!(k["annotations"], serde_json::json!({"team": "checkout"}));
        assert_eq!(k["owner"], serde_json::json!({"kind": "Deployment", "name": "web"}));
        assert_eq!(k["namespace_labels"], serde_json::json!({"env": "prod"}));
        assert_eq!(v["container"]["image"]["name"], "registry.example.com/shop/web:1.2");
        assert!(v["container"].get("id").is_none());
    }

    #[test]
    fn dedot_keys() {
        assert_eq!(dedot("app.kubernetes.io/name"), "app_kubernetes_io/name");
        assert_eq!(dedot("app"), "app");
    }

    /// Lines at other offsets, in other file contents (a truncated file's new content has a
    /// key of its own) or on other nodes get other ids, even with the same text; the same line
    /// sent again gets the same id. (That the tailer gives new content a new key is tested in
    /// `logs::tail`, and end to end in `tests/logs_elasticsearch.rs`.)
    #[test]
    fn different_lines_get_different_ids_and_a_resent_line_the_same() {
        let source = Arc::new(crate::event::Source {
            file: "/var/log/pods/a_b_c/d/0.log".into(),
            node: "n".into(),
            kubernetes: Default::default(),
        });
        let ev = |file, offset| Event {
            timestamp: 0,
            stream: crate::event::Stream::Stdout,
            message: "the same text".into(),
            malformed: false,
            truncated: false,
            source: source.clone(),
            origin: crate::event::Origin { file, offset, resume: offset + 10 },
            parsed: None,
        };
        let (n1, n2) = (fnv1a64(b"node-1"), fnv1a64(b"node-2"));
        let lines = [(n1, 1, 0), (n1, 1, 10), (n1, 2, 0), (n1, 2, 10), (n2, 1, 0)];
        let ids: std::collections::HashSet<String> =
            lines.iter().map(|&(node, file, offset)| document_id(node, &ev(file, offset))).collect();
        assert_eq!(ids.len(), lines.len());
        assert_eq!(document_id(n1, &ev(2, 10)), document_id(n1, &ev(2, 10)));
        // Stable across versions: resends after an upgrade must still be 409s.
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn validation() {
        let yaml = r#"
name: es
endpoint: http://es:9200
index: logs-%Y
data_stream: Logs
labels: {a.b: x, a_b: y}
dead_letter_index: "bad index"
max_in_flight: 0
"#;
        let c: ElasticsearchConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let mut p = Problems::default();
        c.validate("sinks[0]", &mut p);
        let text = p.0.join("\n");
        for needle in ["sinks[0].index", "sinks[0].dead_letter_index", "sinks[0].labels.a_b", "sinks[0].max_in_flight"]
        {
            assert!(text.contains(needle), "missing {needle}:\n{text}");
        }
    }
}
