//! `LokiConfig`: the keys of a `type: loki` sink, their defaults and their validation.

use crate::config::{Problems, Secret};
use crate::event::{Source, Stream};
use crate::process::template::Template;
use crate::sinks::batch::{BatchConfig, BatchLimits};
use crate::sinks::http::Compression;
use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

crate::sinks::http::http_sink_config! {
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct LokiConfig {
        pub name: String,
        /// Which lines this sink takes: the selectors of a transform's `when:` (namespace, pod,
        /// container, labels, stream, level, message). Default: every line.
        #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
        pub route: Option<crate::process::select::SelectorConfig>,
        /// Loki's base URL; `/loki/api/v1/push` is appended (a path prefix and query are kept).
        pub endpoint: String,
        /// Sent as `X-Scope-OrgID` when not empty (multi-tenant Loki). Default empty. May be a
        /// template of event fields, e.g. `"{kubernetes.namespace}"`: a tenant per namespace
        /// (each push then holds one tenant's lines).
        #[serde(default)]
        pub tenant_id: Secret,
        /// What a template field renders as when the event has no value for it. Default `unknown`.
        #[serde(default = "default_template_default")]
        pub template_default: String,
        /// Send the parsed `level` (see `sources.containers.parse`) as the `level` label. Default
        /// false: a label per level multiplies the streams.
        #[serde(default)]
        pub level_label: bool,
        /// Where the other parsed fields go: `line` (default: the line is sent as the container
        /// wrote it, fields and all) or `structured_metadata` (the line is the lifted message, and
        /// the fields, `trace_id` and `span_id` are structured metadata; Loki 3).
        #[serde(default)]
        pub parsed_fields: ParsedFields,
        /// `protobuf` (snappy-compressed, Loki's native format) or `json`. Default protobuf: about
        /// half the bytes and CPU of JSON.
        #[serde(default)]
        pub encoding: LokiEncoding,
        /// `none` or `gzip`, on top of the encoding. Default none: protobuf is already snappy.
        #[serde(default = "default_compression")]
        pub compression: Compression,
        /// Event fields sent as labels. Default `[namespace, pod, container, node, stream]`: low
        /// cardinality (bounded by the pods of a node) and what users filter by. Empty values are
        /// left out.
        #[serde(default = "default_labels")]
        pub labels: Vec<LabelField>,
        /// Pod labels (from the API, `sources.containers.kubernetes.enabled`) sent as Loki labels:
        /// Loki label name → pod label key, added when the pod has that label. Default
        /// `{app: app.kubernetes.io/name}`. Keep it to a few low-cardinality keys; send the rest
        /// as structured metadata (`structured_metadata: [pod_labels]`).
        #[serde(default = "default_pod_labels")]
        pub pod_labels: BTreeMap<String, String>,
        /// Constant labels added to every stream, e.g. `{cluster: prod}`. Default none.
        #[serde(default)]
        pub static_labels: BTreeMap<String, String>,
        /// High-cardinality fields sent as structured metadata (Loki 3, or 2.9 with
        /// `allow_structured_metadata`), not as labels: `pod_uid`, `container_id`, `file`, and the
        /// API metadata: `pod_labels` (each as `pod_label_<key>`), `annotations`
        /// (`pod_annotation_<key>`), `owner` (`owner_kind`, `owner_name`), `image`,
        /// `namespace_labels` (`namespace_label_<key>`); keys outside `[a-zA-Z0-9_]` become `_`.
        /// Default none, so older Lokis work.
        #[serde(default)]
        pub structured_metadata: Vec<MetadataField>,
        /// Most distinct label sets this sink sends to at once (idle 1h = gone); past it, new
        /// streams go to the overflow stream. Default 1000: a full node (110 pods × a few
        /// containers × 2 streams) fits; remember Loki's tenant-wide `max_global_streams_per_user`.
        #[serde(default = "default_max_streams")]
        pub max_streams: usize,
        /// Batch limits. Defaults: 10000 events, 1MiB (Promtail's size, well under Loki's default
        /// 6MB ingestion burst: a push larger than the tenant's burst is refused with 429 every
        /// time), 1s.
        #[serde(default)]
        pub batch: BatchConfig,
        /// Requests in flight, which is also the number of stream shards (each sends one request at
        /// a time, so a stream stays in order). Default 4.
        #[serde(default = "default_in_flight")]
        pub max_in_flight: usize,
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LokiEncoding {
    #[default]
    Protobuf,
    Json,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParsedFields {
    #[default]
    Line,
    StructuredMetadata,
}

pub(super) fn default_template_default() -> String {
    "unknown".into()
}

/// Event fields that may become labels: only low-cardinality ones (never the message, a
/// timestamp, a uid or an id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelField {
    Namespace,
    Pod,
    Container,
    Node,
    Stream,
}

impl LabelField {
    pub(super) fn name(self) -> &'static str {
        match self {
            LabelField::Namespace => "namespace",
            LabelField::Pod => "pod",
            LabelField::Container => "container",
            LabelField::Node => "node",
            LabelField::Stream => "stream",
        }
    }
    pub(super) fn value(self, s: &Source, stream: Stream) -> &str {
        match self {
            LabelField::Namespace => &s.kubernetes.namespace,
            LabelField::Pod => &s.kubernetes.pod,
            LabelField::Container => &s.kubernetes.container,
            LabelField::Node => &s.node,
            LabelField::Stream => stream.as_str(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataField {
    PodUid,
    ContainerId,
    File,
    PodLabels,
    Annotations,
    Owner,
    Image,
    NamespaceLabels,
}

impl MetadataField {
    /// Appends this field's (name, value) pairs for a source; empty values are left out.
    pub(super) fn push<'a>(self, s: &'a Source, out: &mut Vec<(Cow<'static, str>, &'a str)>) {
        let k = &s.kubernetes;
        let one = |out: &mut Vec<(Cow<'static, str>, &'a str)>, name: &'static str, v: &'a str| {
            if !v.is_empty() {
                out.push((Cow::Borrowed(name), v));
            }
        };
        let map = |out: &mut Vec<(Cow<'static, str>, &'a str)>, prefix: &str, m: &'a crate::event::Labels| {
            for (key, v) in m.iter().filter(|(_, v)| !v.is_empty()) {
                out.push((Cow::Owned(format!("{prefix}{}", sanitize_name(key))), v));
            }
        };
        match self {
            MetadataField::PodUid => one(out, "pod_uid", &k.pod_uid),
            MetadataField::ContainerId => one(out, "container_id", k.container_id.as_deref().unwrap_or("")),
            MetadataField::File => one(out, "file", &s.file),
            MetadataField::PodLabels => {
                if let Some(l) = k.labels() {
                    map(out, "pod_label_", l);
                }
            }
            MetadataField::Annotations => {
                if let Some(a) = k.api.as_deref() {
                    map(out, "pod_annotation_", &a.annotations);
                }
            }
            MetadataField::Owner => {
                if let Some(o) = k.api.as_deref().and_then(|a| a.owner.as_ref()) {
                    one(out, "owner_kind", &o.kind);
                    one(out, "owner_name", &o.name);
                }
            }
            MetadataField::Image => one(out, "image", k.image.as_deref().unwrap_or("")),
            MetadataField::NamespaceLabels => {
                if let Some(l) = k.namespace_labels.as_deref() {
                    map(out, "namespace_label_", l);
                }
            }
        }
    }
}

/// A Kubernetes key as a Loki name: every byte outside `[a-zA-Z0-9_]` becomes `_`
/// (`app.kubernetes.io/name` → `app_kubernetes_io_name`), as Loki's OTLP ingestion does.
pub(super) fn sanitize_name(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

pub(super) fn default_labels() -> Vec<LabelField> {
    vec![LabelField::Namespace, LabelField::Pod, LabelField::Container, LabelField::Node, LabelField::Stream]
}
pub(super) fn default_pod_labels() -> BTreeMap<String, String> {
    [("app".to_string(), "app.kubernetes.io/name".to_string())].into()
}
pub(super) fn default_compression() -> Compression {
    Compression::None
}
pub(super) fn default_max_streams() -> usize {
    1000
}
pub(super) fn default_in_flight() -> usize {
    4
}

pub(super) const DEFAULT_LIMITS: BatchLimits =
    BatchLimits { max_events: 10_000, max_bytes: 1 << 20, timeout: Duration::from_secs(1) };
/// Upper bound for `batch.max_bytes`. Keep batches under the tenant's `ingestion_burst_size_mb`
/// (default 6MB): Loki answers a push larger than the burst with 429 every time.
pub(super) const HARD_MAX_BYTES: u64 = 64 << 20;
/// Error bodies longer than this are cut (they are only logged).
pub(super) const MAX_ERROR_BODY: usize = 64 << 10;

impl LokiConfig {
    pub fn validate(&self, path: &str, p: &mut Problems) {
        self.http().validate(path, p);
        if self.tenant_id.expose().contains('|') {
            p.push(format!("{path}.tenant_id"), "holds several tenants ('|'); Loki accepts one tenant per push");
        }
        if self.tenant_id.expose().contains('{') || self.tenant_id.expose().contains('}') {
            if let Err(e) = Template::parse(self.tenant_id.expose()) {
                p.push(format!("{path}.tenant_id"), format!("'{}' {e}", self.tenant_id.expose()));
            }
        }
        if self.template_default.is_empty() || HeaderValue::from_str(&self.template_default).is_err() {
            p.push(format!("{path}.template_default"), "is empty or not a valid header value; expected e.g. unknown");
        }
        for (k, v) in &self.static_labels {
            if !crate::sinks::is_label_name(k) || k.starts_with("__") {
                p.push(
                    format!("{path}.static_labels.{k}"),
                    "is not a valid label name; expected [a-zA-Z_][a-zA-Z0-9_]*, not starting with __",
                );
            }
            if v.is_empty() {
                p.push(format!("{path}.static_labels.{k}"), "has an empty value; Loki ignores it, remove it");
            }
            if self.labels.iter().any(|l| l.name() == k) {
                p.push(format!("{path}.static_labels.{k}"), "is also in labels; keep it in one of the two");
            }
        }
        for (k, v) in &self.pod_labels {
            let at = format!("{path}.pod_labels.{k}");
            if !crate::sinks::is_label_name(k) || k.starts_with("__") {
                p.push(&at, "is not a valid label name; expected [a-zA-Z_][a-zA-Z0-9_]*, not starting with __");
            }
            if v.is_empty() {
                p.push(&at, "has no pod label key; expected e.g. app.kubernetes.io/name");
            }
            if self.labels.iter().any(|l| l.name() == k) || self.static_labels.contains_key(k) {
                p.push(&at, "is also in labels or static_labels; keep it in one place");
            }
        }
        if self.labels.is_empty() && self.static_labels.is_empty() {
            p.push(format!("{path}.labels"), "is empty and there are no static_labels; Loki needs at least one label");
        }
        if self.max_streams == 0 {
            p.push(format!("{path}.max_streams"), "is 0; expected at least 1, e.g. 1000");
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
