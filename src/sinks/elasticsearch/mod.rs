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
    fn document(&self, e: &Event, cache: &mut DocCache, out: &mut Vec<u8>) {
        use crate::event::write_json_str as str;
        out.extend_from_slice(b"{\"@timestamp\":\"");
        out.extend_from_slice(cache.clock.format(e.timestamp).as_bytes());
        out.extend_from_slice(b"\",\"message\":");
        str(out, &e.message);
        out.extend_from_slice(match e.stream {
            crate::event::Stream::Stdout => b",\"stream\":\"stdout\",",
            crate::event::Stream::Stderr => b",\"stream\":\"stderr\",",
        });
        if !cache.source.as_ref().is_some_and(|s| Arc::ptr_eq(s, &e.source)) {
            cache.encoded.clear();
            write_source_document(&e.source, &mut cache.encoded);
            cache.source = Some(e.source.clone());
        }
        out.extend_from_slice(&cache.encoded);
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
    fn push(&self, docs: &mut BulkDocs, index: &str, e: &Event, cache: &mut DocCache) {
        let mut id = [0u8; 48];
        id[..16].copy_from_slice(&self.node_hex);
        hex16(e.origin.file, &mut id[16..32]);
        hex16(e.origin.offset, &mut id[32..]);
        let id = std::str::from_utf8(&id).expect("hex digits");
        docs.push(index, Some(id), |out| self.document(e, cache, out));
    }

    fn documents(&self, batch: &Batch) -> BulkDocs {
        use std::sync::atomic::Ordering::Relaxed;
        let ratio = self.encoded_per_estimated.load(Relaxed);
        let mut docs = BulkDocs::with_capacity(batch.bytes.saturating_mul(ratio) / 1000, batch.events);
        // Most events of a batch share a day: render the index once per bucket, and share
        // the name between documents rather than copying it per event.
        let mut cached: Option<(i64, Arc<str>)> = None;
        let mut cached_source: Option<(usize, i64, Arc<str>)> = None;
        let mut cache = DocCache::default();
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
            self.push(&mut docs, &index, e, &mut cache);
        }
        // A sixteenth to spare, for a batch of longer lines than the last.
        if let Some(r) = docs.body().len().saturating_mul(1000).checked_div(batch.bytes) {
            self.encoded_per_estimated.store((r + r / 16).clamp(500, 4000), Relaxed);
        }
        docs
    }
}

/// `"kubernetes":{…},"container":{…}?,"host":{…},"log":{"file":{"path":…}`: the part of a
/// document that is the same for every event of a file, written once per run of events that
/// share one `Arc<Source>` (`DocCache`) and copied after that.
fn write_source_document(source: &crate::event::Source, out: &mut Vec<u8>) {
    use crate::event::write_json_str as str;
    let k = &source.kubernetes;
    out.extend_from_slice(b"\"kubernetes\":{\"namespace\":");
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
    str(out, &source.node);
    out.extend_from_slice(b"},\"log\":{\"file\":{\"path\":");
    str(out, &source.file);
    out.push(b'}');
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

/// What the documents of one delivery share: the timestamp's second, and the per-file part of
/// the last file's events (perf, CRI → Elasticsearch: escaping the six per-file strings of
/// every document was most of the encoding beyond the message).
#[derive(Default)]
struct DocCache {
    clock: Rfc3339Cache,
    source: Option<Arc<crate::event::Source>>,
    /// `write_source_document` of `source`.
    encoded: Vec<u8>,
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
        batch.recycle();
        let outcome = self.sender.deliver_encoded(docs).await;
        self.metrics.events_sent.inc_by(outcome.delivered() as u64);
    }
}

#[cfg(test)]
mod tests;
