//! Pod metadata from the Kubernetes API: labels, the asked annotations, the owning workload,
//! container images, namespace labels, and the per-pod controls `vigil.io/exclude` and
//! `vigil.io/exclude-containers`.
//!
//! ```text
//!  API server ──list+watch pods (fieldSelector=spec.nodeName=<node>)──→ watch::run ──→ PodCache
//!                                                                                  │ (uid, ns/name)
//!  tailer ──SourceBatch──→ stage::run: swap each file's Arc<Source> for an enriched one,
//!                          drop excluded lines (positions kept), wait ≤ max_wait for an
//!                          unknown pod ──SourceBatch──→ pipeline
//! ```
//!
//! Key decision: enrichment is a stage between the tailer and the pipeline's fan-out, not part
//! of the tailer. The cache is per node (one watch, only this node's pods, nothing but what
//! events need: no Pod objects are kept), and a file's enriched `Arc<Source>` is built once per
//! file and pod change, never per line. A line whose pod is not (yet) in the cache waits, with
//! the whole stage, until the pod arrives or `max_wait` after the stage first saw that file's
//! unknown pod; then it ships with path metadata (`vigil_kubernetes_metadata_missing_total`).
//! The wait counts once per file, so a pod that never shows up (deleted long ago, API down)
//! costs one `max_wait`, not one per batch. Rejected: leaving a file unread while its pod is
//! unknown (needs no buffer, but is a change inside the tailer, which is being split, and the
//! tailer would have to ask the cache per file on every round); waiting per line in the sinks
//! (every sink would wait, and sinks never see files).
//!
//! Invariants: the stage never drops a position, so excluded lines are still checkpointed;
//! no line waits longer than `max_wait` for metadata (plus the time to build its batch); the
//! pod watch never asks for pods of another node.

pub mod stage;
pub mod watch;

use crate::config::{HumanDuration, Problems};
use crate::event::{Labels, Owner, PodMeta};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// `sources.containers.kubernetes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Ask the API server for pod metadata. Default false: path metadata only, no API access
    /// (and no RBAC) needed.
    #[serde(default)]
    pub enabled: bool,
    /// The node whose pods are watched (`fieldSelector=spec.nodeName=<node>`). Default: the
    /// top-level `node_name` (in the DaemonSet, `${NODE_NAME}` from `spec.nodeName`).
    #[serde(default)]
    pub node_name: Option<String>,
    /// Annotation keys copied onto events as `kubernetes.annotations` (labels are all copied).
    /// Default none: annotations are often large (last-applied-configuration).
    #[serde(default)]
    pub annotations: Vec<String>,
    /// Also copy the namespace's labels (`kubernetes.namespace_labels`); needs list/watch on
    /// namespaces (the `namespace-labels` overlay's RBAC). Default false.
    #[serde(default)]
    pub namespace_labels: bool,
    /// Longest a line waits for its pod's metadata before it ships without it. Default 2s:
    /// a new pod's first lines usually arrive before the watch event that announces it, by
    /// milliseconds; 2s covers a slow API server without holding logs back for long.
    #[serde(default = "default_max_wait")]
    pub max_wait: HumanDuration,
    /// Metadata is kept this long after a pod is deleted, for the last lines of its files.
    /// Default 5m.
    #[serde(default = "default_deleted_pod_grace")]
    pub deleted_pod_grace: HumanDuration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            node_name: None,
            annotations: Vec::new(),
            namespace_labels: false,
            max_wait: default_max_wait(),
            deleted_pod_grace: default_deleted_pod_grace(),
        }
    }
}

fn default_max_wait() -> HumanDuration {
    HumanDuration::secs(2)
}
fn default_deleted_pod_grace() -> HumanDuration {
    HumanDuration::secs(300)
}

impl KubernetesConfig {
    pub fn validate(&self, path: &str, p: &mut Problems) {
        if self.node_name.as_deref() == Some("") {
            p.push(format!("{path}.node_name"), "is empty; leave it out to use the top-level node_name");
        }
        for (i, a) in self.annotations.iter().enumerate() {
            if a.is_empty() || a.contains(char::is_whitespace) {
                p.push(format!("{path}.annotations[{i}]"), format!("'{a}' is not an annotation key"));
            }
        }
        if self.max_wait.get() > Duration::from_secs(60) {
            p.push(
                format!("{path}.max_wait"),
                format!("'{}' holds logs back too long; expected at most 1m, e.g. 2s", self.max_wait),
            );
        }
    }
}

/// The annotation that skips a pod's logs (`"true"`).
pub const EXCLUDE: &str = "vigil.io/exclude";
/// The annotation that skips the named containers of a pod (`"a,b"`).
pub const EXCLUDE_CONTAINERS: &str = "vigil.io/exclude-containers";
/// Prefix of the annotations vigil always keeps (per-pod controls).
pub const CONTROL_PREFIX: &str = "vigil.io/";

/// One pod as the cache keeps it: only what events need.
#[derive(Debug)]
pub struct CachedPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub meta: Arc<PodMeta>,
    /// Container name → image, for every container kind (init, regular, ephemeral).
    pub images: Vec<(String, Arc<str>)>,
    deleted_at: Option<Instant>,
}

impl CachedPod {
    /// Builds the cache entry from a Pod, keeping only labels, the asked annotations, every
    /// `vigil.io/*` annotation, the resolved owner and the images.
    pub fn from_pod(pod: &k8s_openapi::api::core::v1::Pod, asked: &[String]) -> Option<Self> {
        let md = &pod.metadata;
        let (namespace, name, uid) = (md.namespace.clone()?, md.name.clone()?, md.uid.clone().unwrap_or_default());
        let labels: Labels = md.labels.clone().unwrap_or_default().into_iter().collect();
        let mut annotations = Labels::new();
        let mut controls = Labels::new();
        for (k, v) in md.annotations.iter().flatten() {
            if asked.iter().any(|a| a == k) {
                annotations.insert(k.clone(), v.clone());
            }
            if k.starts_with(CONTROL_PREFIX) {
                controls.insert(k.clone(), v.clone());
            }
        }
        let owner = md
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| resolve_owner(&o.kind, &o.name, &labels));
        let mut images = Vec::new();
        if let Some(spec) = &pod.spec {
            let all = spec.containers.iter().chain(spec.init_containers.iter().flatten());
            for c in all {
                if let Some(image) = &c.image {
                    images.push((c.name.clone(), Arc::from(image.as_str())));
                }
            }
            for c in spec.ephemeral_containers.iter().flatten() {
                if let Some(image) = &c.image {
                    images.push((c.name.clone(), Arc::from(image.as_str())));
                }
            }
        }
        images.shrink_to_fit();
        Some(Self {
            namespace,
            name,
            uid,
            meta: Arc::new(PodMeta { labels, annotations, owner, controls }),
            images,
            deleted_at: None,
        })
    }

    pub fn image(&self, container: &str) -> Option<Arc<str>> {
        self.images.iter().find(|(c, _)| c == container).map(|(_, i)| i.clone())
    }

    /// Whether lines of `container` are skipped by the pod's annotations.
    pub fn excludes(&self, container: &str) -> bool {
        let c = &self.meta.controls;
        if c.get(EXCLUDE).is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return true;
        }
        c.get(EXCLUDE_CONTAINERS).is_some_and(|v| v.split(',').any(|n| n.trim() == container))
    }
}

/// The controlling workload: a ReplicaSet whose name ends in the pod's `pod-template-hash`
/// label belongs to the Deployment of the name before it (the Deployment controller names its
/// ReplicaSets `<deployment>-<pod-template-hash>`); a Job named `<name>-<8+ digits>` was made by
/// the CronJob `<name>` (the CronJob controller names Jobs `<cronjob>-<scheduled time in
/// minutes since the epoch>`). Anything else is the controller reference itself.
pub fn resolve_owner(kind: &str, name: &str, labels: &Labels) -> Owner {
    let own = |k: &str, n: &str| Owner { kind: k.to_string(), name: n.to_string() };
    match kind {
        "ReplicaSet" => match labels.get("pod-template-hash") {
            Some(hash) if !hash.is_empty() => {
                match name.strip_suffix(hash.as_str()).and_then(|s| s.strip_suffix('-')) {
                    Some(d) if !d.is_empty() => own("Deployment", d),
                    _ => own(kind, name),
                }
            }
            _ => own(kind, name),
        },
        "Job" => match name.rsplit_once('-') {
            Some((cron, t)) if !cron.is_empty() && t.len() >= 8 && t.bytes().all(|b| b.is_ascii_digit()) => {
                own("CronJob", cron)
            }
            _ => own(kind, name),
        },
        _ => own(kind, name),
    }
}

#[derive(Default)]
struct CacheInner {
    by_uid: HashMap<String, CachedPod>,
    /// (namespace, name) → uid of the newest pod of that name.
    by_name: HashMap<(String, String), String>,
    namespaces: HashMap<String, Arc<Labels>>,
    /// uids listed since the current relist began (`None`: not relisting).
    relisting: Option<HashSet<String>>,
    relisting_ns: Option<HashSet<String>>,
}

/// The pods of this node, as the watch last saw them, plus deleted ones for
/// `deleted_pod_grace`. Shared by the watch (writer) and the enrichment stage (reader); other
/// stages may look pods up too (`pod`).
pub struct PodCache {
    inner: RwLock<CacheInner>,
    /// Bumped on every change: the stage rebuilds a file's `Source` when it moved, and waits
    /// on it for pods it does not know yet.
    generation: tokio::sync::watch::Sender<u64>,
    grace: Duration,
    pods_gauge: Option<prometheus::IntGauge>,
}

impl PodCache {
    pub fn new(grace: Duration, pods_gauge: Option<prometheus::IntGauge>) -> Self {
        Self { inner: RwLock::default(), generation: tokio::sync::watch::Sender::new(0), grace, pods_gauge }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, CacheInner> {
        self.inner.write().expect("pod cache lock poisoned")
    }
    fn read(&self) -> std::sync::RwLockReadGuard<'_, CacheInner> {
        self.inner.read().expect("pod cache lock poisoned")
    }

    fn changed(&self, inner: &CacheInner) {
        if let Some(g) = &self.pods_gauge {
            g.set(inner.by_uid.len() as i64);
        }
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// A pod was added or modified (or listed).
    pub fn apply(&self, pod: CachedPod) {
        let mut inner = self.write();
        if let Some(seen) = inner.relisting.as_mut() {
            seen.insert(pod.uid.clone());
        }
        inner.by_name.insert((pod.namespace.clone(), pod.name.clone()), pod.uid.clone());
        inner.by_uid.insert(pod.uid.clone(), pod);
        self.sweep(&mut inner, Instant::now());
        self.changed(&inner);
    }

    /// A pod was deleted: kept for `deleted_pod_grace`.
    pub fn delete(&self, uid: &str) {
        let mut inner = self.write();
        if let Some(p) = inner.by_uid.get_mut(uid) {
            p.deleted_at.get_or_insert_with(Instant::now);
        }
        self.sweep(&mut inner, Instant::now());
        self.changed(&inner);
    }

    /// A relist begins (first start, or after a 410 Gone): pods not listed again by
    /// `end_relist` were deleted while the watch was away.
    pub fn begin_relist(&self) {
        self.write().relisting = Some(HashSet::new());
    }

    pub fn end_relist(&self) {
        let mut inner = self.write();
        if let Some(seen) = inner.relisting.take() {
            let now = Instant::now();
            for (uid, p) in inner.by_uid.iter_mut() {
                if !seen.contains(uid) {
                    p.deleted_at.get_or_insert(now);
                }
            }
        }
        self.sweep(&mut inner, Instant::now());
        self.changed(&inner);
    }

    /// Drops pods deleted more than `grace` ago.
    fn sweep(&self, inner: &mut CacheInner, now: Instant) {
        let grace = self.grace;
        let before = inner.by_uid.len();
        inner.by_uid.retain(|_, p| p.deleted_at.is_none_or(|t| now.duration_since(t) < grace));
        if inner.by_uid.len() != before {
            let CacheInner { by_uid, by_name, .. } = inner;
            by_name.retain(|_, uid| by_uid.contains_key(uid));
        }
    }

    /// Drops expired deleted pods; called periodically by the watch task so a quiet node frees
    /// them too.
    pub fn expire(&self) {
        let mut inner = self.write();
        let before = inner.by_uid.len();
        self.sweep(&mut inner, Instant::now());
        if inner.by_uid.len() != before {
            self.changed(&inner);
        }
    }

    pub fn apply_namespace(&self, name: String, labels: Labels) {
        let mut inner = self.write();
        if let Some(seen) = inner.relisting_ns.as_mut() {
            seen.insert(name.clone());
        }
        inner.namespaces.insert(name, Arc::new(labels));
        self.changed(&inner);
    }

    pub fn delete_namespace(&self, name: &str) {
        let mut inner = self.write();
        inner.namespaces.remove(name);
        self.changed(&inner);
    }

    pub fn begin_relist_namespaces(&self) {
        self.write().relisting_ns = Some(HashSet::new());
    }

    pub fn end_relist_namespaces(&self) {
        let mut inner = self.write();
        if let Some(seen) = inner.relisting_ns.take() {
            inner.namespaces.retain(|n, _| seen.contains(n));
        }
        self.changed(&inner);
    }

    /// Calls `f` with the cached pod of a file's path metadata: by uid when the path has one
    /// (a pod recreated under the same name is another pod), else by namespace and name.
    pub fn with_pod<R>(
        &self,
        k: &crate::event::K8sMeta,
        f: impl FnOnce(&CachedPod, Option<&Arc<Labels>>) -> R,
    ) -> Option<R> {
        let inner = self.read();
        let pod = if k.pod_uid.is_empty() {
            let uid = inner.by_name.get(&(k.namespace.clone(), k.pod.clone()))?;
            inner.by_uid.get(uid)?
        } else {
            let p = inner.by_uid.get(&k.pod_uid)?;
            if p.namespace != k.namespace || p.name != k.pod {
                return None;
            }
            p
        };
        Some(f(pod, inner.namespaces.get(&pod.namespace)))
    }

    /// The API metadata of the pod a file belongs to (labels, annotations incl. every
    /// `vigil.io/*` one, owner), or `None` when the pod is not (yet) known. For stages that run
    /// before enrichment, e.g. multiline's `vigil.io/multiline`:
    /// `cache.pod(&event.source.kubernetes).and_then(|m| m.annotation("vigil.io/multiline"))`.
    pub fn pod(&self, k: &crate::event::K8sMeta) -> Option<Arc<PodMeta>> {
        self.with_pod(k, |p, _| p.meta.clone())
    }

    /// Pods held (including deleted ones within their grace).
    pub fn len(&self) -> usize {
        self.read().by_uid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `vigil_kubernetes_*`: the metadata stage's and the watch's counters. No per-pod labels.
#[derive(Clone)]
pub struct KubeMetrics {
    /// Lines shipped with path metadata only, after waiting `max_wait` for their pod.
    pub metadata_missing: prometheus::IntCounter,
    /// Lines skipped by `vigil.io/exclude` / `vigil.io/exclude-containers` (still checkpointed).
    pub lines_excluded: prometheus::IntCounter,
    /// Failed list/watch calls and watch errors (each retried with backoff; 410 Gone relists).
    pub watch_errors: prometheus::IntCounterVec,
    /// Full lists of this node's pods (start, and after a 410 Gone).
    pub relists: prometheus::IntCounterVec,
    /// Pods in the cache (incl. deleted ones within `deleted_pod_grace`).
    pub pods: prometheus::IntGauge,
    /// Seconds lines spent waiting for pod metadata in the stage.
    pub wait_seconds: prometheus::Counter,
}

impl KubeMetrics {
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        use prometheus::{Counter, IntCounter, IntCounterVec, IntGauge, Opts};
        let m = Self {
            metadata_missing: IntCounter::new(
                "vigil_kubernetes_metadata_missing_total",
                "Log lines shipped with path metadata only: their pod was not known to the API watch within max_wait.",
            )?,
            lines_excluded: IntCounter::new(
                "vigil_kubernetes_lines_excluded_total",
                "Log lines skipped by the vigil.io/exclude or vigil.io/exclude-containers pod annotations (checkpointed, not shipped).",
            )?,
            watch_errors: IntCounterVec::new(
                Opts::new(
                    "vigil_kubernetes_watch_errors_total",
                    "Failed list or watch calls to the Kubernetes API (retried with backoff), by resource.",
                ),
                &["resource"],
            )?,
            relists: IntCounterVec::new(
                Opts::new(
                    "vigil_kubernetes_relists_total",
                    "Full lists from the Kubernetes API (at start and after 410 Gone), by resource.",
                ),
                &["resource"],
            )?,
            pods: IntGauge::new(
                "vigil_kubernetes_pods",
                "Pods whose metadata is cached (this node's, plus deleted ones within deleted_pod_grace).",
            )?,
            wait_seconds: Counter::new(
                "vigil_kubernetes_metadata_wait_seconds_total",
                "Time the metadata stage held log lines back waiting for an unknown pod.",
            )?,
        };
        registry.register(Box::new(m.metadata_missing.clone()))?;
        registry.register(Box::new(m.lines_excluded.clone()))?;
        registry.register(Box::new(m.watch_errors.clone()))?;
        registry.register(Box::new(m.relists.clone()))?;
        registry.register(Box::new(m.pods.clone()))?;
        registry.register(Box::new(m.wait_seconds.clone()))?;
        for r in ["pods", "namespaces"] {
            m.watch_errors.with_label_values(&[r]);
            m.relists.with_label_values(&[r]);
        }
        Ok(m)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "sources.containers.kubernetes: no Kubernetes API configuration (in-cluster service account or KUBECONFIG): {0}"
    )]
    Config(#[source] kube::config::InferConfigError),
    #[error("sources.containers.kubernetes: building the API client: {0}")]
    Client(#[source] kube::Error),
    #[error("registering the kubernetes metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The running metadata source: the watch tasks and the cache they fill.
pub struct Kubernetes {
    pub cache: Arc<PodCache>,
    pub metrics: KubeMetrics,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Kubernetes {
    /// Starts the pod (and namespace) watch with the in-cluster config, or `KUBECONFIG` /
    /// `~/.kube/config` for local runs (kube's `Config::infer`). Never waits for the API
    /// server: a server that is down only means lines ship without metadata after `max_wait`.
    pub async fn start(cfg: &KubernetesConfig, node: &str, metrics: KubeMetrics) -> Result<Self, Error> {
        let config = kube::Config::infer().await.map_err(Error::Config)?;
        Self::start_with(cfg, node, config, metrics, watch::WatchTuning::default())
    }

    /// `start` with an explicit client config (tests point it at a fake API server).
    pub fn start_with(
        cfg: &KubernetesConfig,
        node: &str,
        config: kube::Config,
        metrics: KubeMetrics,
        tuning: watch::WatchTuning,
    ) -> Result<Self, Error> {
        let client = kube::Client::try_from(config).map_err(Error::Client)?;
        let node = cfg.node_name.clone().unwrap_or_else(|| node.to_string());
        let cache = Arc::new(PodCache::new(cfg.deleted_pod_grace.get(), Some(metrics.pods.clone())));
        let mut tasks = vec![tokio::spawn(watch::pods(
            client.clone(),
            node,
            cfg.annotations.clone(),
            cache.clone(),
            metrics.clone(),
            tuning,
        ))];
        if cfg.namespace_labels {
            tasks.push(tokio::spawn(watch::namespaces(client, cache.clone(), metrics.clone(), tuning)));
        }
        Ok(Self { cache, metrics, tasks })
    }
}

impl Drop for Kubernetes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests;

/// Puts the metadata stage in front of the pipeline when `cfg.enabled`: returns the receiver
/// the pipeline reads (the stage's output, or `input` itself when off) and the running watch,
/// which must live as long as the pipeline.
pub async fn wire(
    cfg: &KubernetesConfig,
    node: &str,
    registry: &prometheus::Registry,
    input: tokio::sync::mpsc::Receiver<crate::pipeline::SourceBatch>,
) -> Result<(tokio::sync::mpsc::Receiver<crate::pipeline::SourceBatch>, Option<Kubernetes>), Error> {
    // Registered even when off, so dashboards and alerts see zeros rather than no series.
    let metrics = KubeMetrics::register(registry)?;
    if !cfg.enabled {
        return Ok((input, None));
    }
    let k = Kubernetes::start(cfg, node, metrics).await?;
    // One batch of slack: the stage holds one batch while it waits, the queue another.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(stage::run(input, tx, k.cache.clone(), k.metrics.clone(), cfg.max_wait.get()));
    tracing::info!(node = cfg.node_name.as_deref().unwrap_or(node), "kubernetes: pod metadata from the API");
    Ok((rx, Some(k)))
}
