//! Tests against an in-process fake API server (hyper on 127.0.0.1) that serves pod list and
//! watch as the real one does:
//! - list: `GET /api/v1/pods?fieldSelector=..&limit=..` → a `PodList` whose
//!   `metadata.resourceVersion` is the version to watch from;
//! - watch: `GET /api/v1/pods?watch=true&resourceVersion=N&allowWatchBookmarks=true&
//!   timeoutSeconds=T` → HTTP 200 with one JSON watch event per line (`ADDED`, `MODIFIED`,
//!   `DELETED`, `BOOKMARK`), every event after version N, closed by the server after T seconds;
//! - a version older than the compaction window is answered, like kube-apiserver's watch cache
//!   ("too old resource version"), by HTTP 200 and one `ERROR` event whose object is a `Status`
//!   with `code: 410, reason: Expired`; clients must list again;
//! - `BOOKMARK` objects carry only `metadata.resourceVersion` (only sent when asked for);
//! - the field selector `spec.nodeName=<node>` filters pods server-side (list and watch).
//!
//! Every request's query is recorded so tests can assert that no request ever went without the
//! node's field selector (a pod on another node must never be asked for).

use super::stage::Stage;
use super::watch::WatchTuning;
use super::*;
use crate::event::{Event, K8sMeta, Origin, Source, Stream};
use crate::pipeline::SourceBatch;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

const NODE: &str = "node-a";

#[derive(Default)]
struct FakeInner {
    rv: u64,
    /// name → current object (every node's pods).
    pods: BTreeMap<String, Value>,
    /// (resourceVersion, type, object): the watch history.
    history: Vec<(u64, &'static str, Value)>,
    /// Watches from a version below this get 410 Gone.
    compacted: u64,
    /// (kind "list"/"watch", query string, Authorization header).
    requests: Vec<(String, String, String)>,
    /// Bumped to end every open watch cleanly (as the server does at timeoutSeconds).
    close_gen: u64,
    /// Bumped to cut every open watch's connection mid-stream.
    drop_gen: u64,
}

struct Fake {
    inner: Mutex<FakeInner>,
    changed: tokio::sync::watch::Sender<u64>,
}

fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or("")
}

impl Fake {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(FakeInner { rv: 1, ..Default::default() }),
            changed: tokio::sync::watch::Sender::new(0),
        })
    }

    fn bump(&self) {
        self.changed.send_modify(|g| *g += 1);
    }

    fn event(&self, kind: &'static str, mut pod: Value) {
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let name = pod["metadata"]["name"].as_str().unwrap().to_string();
        if kind == "DELETED" {
            inner.pods.remove(&name);
        } else {
            inner.pods.insert(name, pod.clone());
        }
        inner.history.push((rv, kind, pod));
        drop(inner);
        self.bump();
    }

    fn add(&self, pod: Value) {
        self.event("ADDED", pod);
    }

    fn bookmark(&self) -> u64 {
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv;
        let obj = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}});
        inner.history.push((rv, "BOOKMARK", obj));
        drop(inner);
        self.bump();
        rv
    }

    /// Versions before the current one fall out of the window (a list still works: its
    /// version is the current one).
    fn compact(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.compacted = inner.rv;
    }

    fn close_watches(&self) {
        self.inner.lock().unwrap().close_gen += 1;
        self.bump();
    }

    fn drop_watches(&self) {
        self.inner.lock().unwrap().drop_gen += 1;
        self.bump();
    }

    fn requests(&self) -> Vec<(String, String, String)> {
        self.inner.lock().unwrap().requests.clone()
    }

    fn count(&self, kind: &str) -> usize {
        self.requests().iter().filter(|r| r.0 == kind).count()
    }

    async fn serve(self: Arc<Self>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let fake = self.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let fake = fake.clone();
                        async move { Ok::<_, std::convert::Infallible>(fake.handle(req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    }

    fn handle(
        self: Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<BoxBody<Bytes, std::io::Error>> {
        let query = req.uri().query().unwrap_or("").to_string();
        let params: HashMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect();
        let auth = req.headers().get("authorization").map(|v| v.to_str().unwrap_or("").to_string()).unwrap_or_default();
        let watch = params.get("watch").is_some_and(|v| v == "true");
        let kind = if watch { "watch" } else { "list" };
        self.inner.lock().unwrap().requests.push((kind.into(), query.clone(), auth));
        let node = params.get("fieldSelector").and_then(|s| s.strip_prefix("spec.nodeName=")).map(str::to_string);
        if req.uri().path() != "/api/v1/pods" {
            return respond(404, json!({"kind": "Status", "code": 404}));
        }
        if !watch {
            let inner = self.inner.lock().unwrap();
            let items: Vec<Value> =
                inner.pods.values().filter(|p| node.as_deref().is_none_or(|n| node_of(p) == n)).cloned().collect();
            return respond(
                200,
                json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items}),
            );
        }
        let from: u64 = params.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let bookmarks = params.get("allowWatchBookmarks").is_some_and(|v| v == "true");
        let timeout = Duration::from_secs(params.get("timeoutSeconds").and_then(|v| v.parse().ok()).unwrap_or(290));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
        let fake = self.clone();
        tokio::spawn(async move {
            let (close0, drop0, compacted) = {
                let i = fake.inner.lock().unwrap();
                (i.close_gen, i.drop_gen, i.compacted)
            };
            if from < compacted {
                // kube-apiserver: "too old resource version" as a watch ERROR event.
                let status = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": format!("too old resource version: {from} ({compacted})"),
                    "reason": "Expired", "code": 410}});
                let _ = tx.send(Ok(Frame::data(Bytes::from(format!("{status}\n"))))).await;
                return;
            }
            let deadline = tokio::time::Instant::now() + timeout;
            let mut cursor = from;
            let mut changed = fake.changed.subscribe();
            loop {
                let (events, closed, dropped) = {
                    let i = fake.inner.lock().unwrap();
                    let ev: Vec<String> = i
                        .history
                        .iter()
                        .filter(|(rv, kind, obj)| {
                            *rv > cursor
                                && if *kind == "BOOKMARK" {
                                    bookmarks
                                } else {
                                    node.as_deref().is_none_or(|n| node_of(obj) == n)
                                }
                        })
                        .map(|(_, kind, obj)| json!({"type": kind, "object": obj}).to_string() + "\n")
                        .collect();
                    cursor = i.rv;
                    (ev, i.close_gen != close0, i.drop_gen != drop0)
                };
                if dropped {
                    let _ = tx.send(Err(std::io::Error::other("connection cut"))).await;
                    return;
                }
                for e in events {
                    if tx.send(Ok(Frame::data(Bytes::from(e)))).await.is_err() {
                        return;
                    }
                }
                if closed {
                    return;
                }
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep_until(deadline) => return,
                }
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        hyper::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(BoxBody::new(StreamBody::new(stream)))
            .unwrap()
    }
}

fn respond(code: u16, body: Value) -> hyper::Response<BoxBody<Bytes, std::io::Error>> {
    hyper::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).map_err(|never| match never {}).boxed())
        .unwrap()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn pod(name: &str, node: &str, uid: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "shop", "uid": uid,
            "labels": {"app.kubernetes.io/name": "web", "pod-template-hash": "7d9f8b6c5d"},
            "annotations": {"team": "checkout", "kubectl.kubernetes.io/last-applied-configuration": "{\"huge\":true}",
                            "vigil.io/multiline": "java"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8b6c5d",
                                 "uid": "rs-1", "controller": true}]
        },
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx:1.27"},
                                                   {"name": "sidecar", "image": "envoy:1.30"}]}
    })
}

fn config(max_wait: Duration) -> KubernetesConfig {
    KubernetesConfig {
        enabled: true,
        annotations: vec!["team".into()],
        max_wait: HumanDuration(max_wait),
        ..Default::default()
    }
}

async fn start(fake: &Arc<Fake>, cfg: &KubernetesConfig, timeout: u32) -> (Kubernetes, prometheus::Registry) {
    let addr = fake.clone().serve().await;
    let client = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let registry = prometheus::Registry::new();
    let metrics = KubeMetrics::register(&registry).unwrap();
    let k = Kubernetes::start_with(cfg, NODE, client, metrics, WatchTuning { watch_timeout_secs: timeout }).unwrap();
    (k, registry)
}

/// Waits (generously: the machine may be loaded) until `f` holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn meta(pod: &str, uid: &str, container: &str) -> K8sMeta {
    K8sMeta {
        namespace: "shop".into(),
        pod: pod.into(),
        pod_uid: uid.into(),
        container: container.into(),
        restart_count: Some(0),
        ..K8sMeta::default()
    }
}

fn source(pod: &str, uid: &str, container: &str) -> Arc<Source> {
    Arc::new(Source {
        file: format!("/var/log/pods/shop_{pod}_{uid}/{container}/0.log"),
        node: NODE.into(),
        kubernetes: meta(pod, uid, container),
    })
}

fn batch(sources: &[(&Arc<Source>, u64)], file: u64) -> SourceBatch {
    let mut events = Vec::new();
    for (i, (s, n)) in sources.iter().enumerate() {
        for j in 0..*n {
            events.push(Event {
                timestamp: 1,
                stream: Stream::Stdout,
                message: format!("line {j}"),
                malformed: false,
                truncated: false,
                source: (*s).clone(),
                origin: Origin { file: file + i as u64, offset: j * 10, resume: (j + 1) * 10 },
                parsed: None,
            });
        }
    }
    SourceBatch::from_events(events)
}

fn assert_selector_on_every_request(fake: &Fake) {
    let reqs = fake.requests();
    assert!(!reqs.is_empty());
    for (kind, q, _) in reqs {
        assert!(
            q.contains("fieldSelector=spec.nodeName%3Dnode-a") || q.contains("fieldSelector=spec.nodeName=node-a"),
            "{kind} request without this node's field selector: {q}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_watch_bookmark_410_and_dropped_watch() {
    let fake = Fake::new();
    fake.add(pod("web-1", NODE, "u1"));
    fake.add(pod("other-1", "node-b", "u-other"));
    let (k, registry) = start(&fake, &config(Duration::from_secs(2)), 290).await;
    let cache = k.cache.clone();
    eventually("the initial list", || cache.pod(&meta("web-1", "u1", "app")).is_some()).await;
    let m = cache.pod(&meta("web-1", "u1", "app")).unwrap();
    assert_eq!(m.labels.get("app.kubernetes.io/name").map(String::as_str), Some("web"));
    assert_eq!(m.annotations.keys().collect::<Vec<_>>(), ["team"], "only the asked annotations are emitted");
    assert_eq!(m.annotation("vigil.io/multiline"), Some("java"), "vigil.io/* annotations are kept for vigil");
    assert!(m.annotation("kubectl.kubernetes.io/last-applied-configuration").is_none());
    assert_eq!(m.owner, Some(crate::event::Owner { kind: "Deployment".into(), name: "web".into() }));
    assert_eq!(fake.count("list"), 1);

    // ADDED through the watch; the other node's pod never reaches us.
    eventually("the watch", || fake.count("watch") == 1).await;
    fake.add(pod("web-2", NODE, "u2"));
    fake.add(pod("other-2", "node-b", "u-other-2"));
    eventually("web-2 from the watch", || cache.pod(&meta("web-2", "u2", "app")).is_some()).await;

    // MODIFIED: a label change shows.
    let mut p = pod("web-2", NODE, "u2");
    p["metadata"]["labels"]["tier"] = json!("front");
    fake.event("MODIFIED", p);
    eventually("the modification", || {
        cache.pod(&meta("web-2", "u2", "app")).is_some_and(|m| m.labels.contains_key("tier"))
    })
    .await;

    // BOOKMARK, then the server ends the watch: the next watch resumes from the bookmark's
    // version (no list).
    let bm = fake.bookmark();
    // Give the bookmark time to be read: wait for a positive signal (a pod added after it).
    fake.add(pod("web-3", NODE, "u3"));
    eventually("web-3", || cache.pod(&meta("web-3", "u3", "app")).is_some()).await;
    let last_rv = fake.inner.lock().unwrap().rv;
    assert!(last_rv > bm);
    let bm2 = fake.bookmark();
    // The fake sends what its history holds before it honours a close, so the bookmark is
    // the last thing the watch reads.
    fake.close_watches();
    eventually("a second watch", || fake.count("watch") == 2).await;
    let (_, q, _) = fake.requests().into_iter().rfind(|r| r.0 == "watch").unwrap();
    assert!(q.contains("allowWatchBookmarks=true"), "bookmarks asked for: {q}");
    assert!(q.contains(&format!("resourceVersion={bm2}")), "resumed from the bookmark {bm2}: {q}");
    assert_eq!(fake.count("list"), 1, "a closed watch is resumed, not relisted");

    // A dropped connection: the watch is retried (with backoff) from the last version seen.
    fake.drop_watches();
    eventually("a watch after the drop", || fake.count("watch") == 3).await;
    assert_eq!(fake.count("list"), 1, "a dropped watch is resumed, not relisted");
    fake.add(pod("web-4", NODE, "u4"));
    eventually("web-4 after the drop", || cache.pod(&meta("web-4", "u4", "app")).is_some()).await;

    // 410 Gone: the history is compacted while a pod is deleted and the watch is away; the
    // next watch gets ERROR 410, the watcher lists again and the deleted pod is marked so.
    fake.inner.lock().unwrap().history.clear();
    {
        let mut i = fake.inner.lock().unwrap();
        i.pods.remove("web-1");
        i.rv += 1;
    }
    fake.compact();
    fake.close_watches();
    eventually("a relist after 410", || fake.count("list") == 2).await;
    let relists = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == "vigil_kubernetes_relists_total")
        .map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()).sum::<f64>())
        .unwrap();
    assert!(relists >= 2.0, "the start and the 410 are relists: {relists}");
    eventually("a watch after the relist", || fake.count("watch") >= 5).await;
    // web-1 is gone from the API but kept for deleted_pod_grace (its last lines).
    assert!(cache.pod(&meta("web-1", "u1", "app")).is_some());
    assert!(cache.pod(&meta("other-1", "u-other", "app")).is_none());
    assert!(cache.pod(&meta("other-2", "u-other-2", "app")).is_none());
    assert_selector_on_every_request(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_that_appears_after_its_first_log_line_is_enriched() {
    let fake = Fake::new();
    fake.add(pod("web-1", NODE, "u1"));
    // A generous max_wait: the test proves enrichment happened before it ran out.
    let (k, registry) = start(&fake, &config(Duration::from_secs(60)), 290).await;
    let cache = k.cache.clone();
    eventually("the initial list", || cache.pod(&meta("web-1", "u1", "app")).is_some()).await;
    let mut stage = Stage::new(k.cache.clone(), k.metrics.clone(), Duration::from_secs(60));
    let late = source("late-1", "u-late", "app");
    let known = source("web-1", "u1", "app");
    let b = batch(&[(&known, 2), (&late, 3)], 1);
    let positions = b.positions.clone();
    let f = fake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        f.add(pod("late-1", NODE, "u-late"));
    });
    let started = std::time::Instant::now();
    let out = stage.process(b).await;
    assert_eq!(out.events.len(), 5);
    assert_eq!(out.positions, positions);
    assert!(out.events.iter().all(stage::enriched), "every line carries API metadata");
    assert_eq!(out.events[4].source.kubernetes.image.as_deref(), Some("nginx:1.27"));
    assert!(started.elapsed() < Duration::from_secs(60));
    let missing = counter(&registry, "vigil_kubernetes_metadata_missing_total");
    assert_eq!(missing, 0.0);
    assert_selector_on_every_request(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_pod_ships_after_max_wait_with_path_metadata_counted() {
    let fake = Fake::new();
    let (k, registry) = start(&fake, &config(Duration::from_millis(300)), 290).await;
    eventually("the watch", || fake.count("watch") == 1).await;
    let mut stage = Stage::new(k.cache.clone(), k.metrics.clone(), Duration::from_millis(300));
    let ghost = source("ghost", "u-ghost", "app");
    let started = std::time::Instant::now();
    let out = stage.process(batch(&[(&ghost, 4)], 1)).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "waited max_wait");
    assert_eq!(out.events.len(), 4);
    assert!(out.events.iter().all(|e| !stage::enriched(e)));
    assert_eq!(out.events[0].source.kubernetes.pod, "ghost", "path metadata kept");
    assert_eq!(counter(&registry, "vigil_kubernetes_metadata_missing_total"), 4.0);
    let waited = counter(&registry, "vigil_kubernetes_metadata_wait_seconds_total");
    // The same file again: no second wait.
    let out = stage.process(batch(&[(&ghost, 2)], 1)).await;
    assert_eq!(out.events.len(), 2);
    assert_eq!(counter(&registry, "vigil_kubernetes_metadata_wait_seconds_total"), waited);
    assert_eq!(counter(&registry, "vigil_kubernetes_metadata_missing_total"), 6.0);
    // It shows up later after all: enriched from then on.
    fake.add(pod("ghost", NODE, "u-ghost"));
    eventually("ghost", || k.cache.pod(&meta("ghost", "u-ghost", "app")).is_some()).await;
    let out = stage.process(batch(&[(&ghost, 1)], 1)).await;
    assert!(stage::enriched(&out.events[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_down_lines_wait_at_most_max_wait() {
    // Nothing listens on this port: every list fails (and is retried with backoff).
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let registry = prometheus::Registry::new();
    let cfg = config(Duration::from_millis(200));
    let k = Kubernetes::start_with(
        &cfg,
        NODE,
        kube::Config::new(format!("http://{addr}").parse().unwrap()),
        KubeMetrics::register(&registry).unwrap(),
        WatchTuning::default(),
    )
    .unwrap();
    let mut stage = Stage::new(k.cache.clone(), k.metrics.clone(), Duration::from_millis(200));
    let s = source("web-1", "u1", "app");
    let out = stage.process(batch(&[(&s, 3)], 1)).await;
    assert_eq!(out.events.len(), 3);
    assert_eq!(counter(&registry, "vigil_kubernetes_metadata_missing_total"), 3.0);
    eventually("a counted watch error", || counter(&registry, "vigil_kubernetes_watch_errors_total") >= 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_pods_and_containers_are_checkpointed_not_shipped() {
    let fake = Fake::new();
    let mut p = pod("web-1", NODE, "u1");
    p["metadata"]["annotations"]["vigil.io/exclude-containers"] = json!("sidecar, other");
    fake.add(p);
    let (k, registry) = start(&fake, &config(Duration::from_secs(60)), 290).await;
    eventually("the list", || k.cache.pod(&meta("web-1", "u1", "app")).is_some()).await;
    let mut stage = Stage::new(k.cache.clone(), k.metrics.clone(), Duration::from_secs(60));
    let app = source("web-1", "u1", "app");
    let sidecar = source("web-1", "u1", "sidecar");
    let b = batch(&[(&app, 2), (&sidecar, 3)], 1);
    let positions = b.positions.clone();
    let out = stage.process(b).await;
    assert_eq!(out.events.len(), 2);
    assert!(out.events.iter().all(|e| e.source.kubernetes.container == "app"));
    assert_eq!(out.positions, positions, "the sidecar's position still commits");
    assert_eq!(counter(&registry, "vigil_kubernetes_lines_excluded_total"), 3.0);

    // A pod that appears after start with vigil.io/exclude: "true".
    let mut p = pod("quiet-1", NODE, "uq");
    p["metadata"]["annotations"]["vigil.io/exclude"] = json!("true");
    fake.add(p);
    let quiet = source("quiet-1", "uq", "app");
    let b = batch(&[(&quiet, 4)], 5);
    let positions = b.positions.clone();
    let out = stage.process(b).await;
    assert!(out.events.is_empty());
    assert_eq!(out.positions, positions);
    assert_eq!(counter(&registry, "vigil_kubernetes_lines_excluded_total"), 7.0);

    // The annotation added to a running pod takes effect.
    let mut p = pod("web-1", NODE, "u1");
    p["metadata"]["annotations"]["vigil.io/exclude"] = json!("true");
    fake.event("MODIFIED", p);
    eventually("the modification", || {
        k.cache.pod(&meta("web-1", "u1", "app")).is_some_and(|m| m.annotation(EXCLUDE).is_some())
    })
    .await;
    let out = stage.process(batch(&[(&app, 2)], 1)).await;
    assert!(out.events.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_file_from_kubeconfig_is_sent() {
    // KUBECONFIG with `tokenFile` (what local runs use; in-cluster config points kube at the
    // service account token the same way). kube-client re-reads the file when its cached copy
    // is older than ~50s (`TokenFile::is_expiring`: 60s lifetime, refreshed 10s early), which
    // is how projected, rotating service account tokens keep working.
    let fake = Fake::new();
    let addr = fake.clone().serve().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "secret-token-1").unwrap();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\nusers:\n- name: vigil\n  user:\n    tokenFile: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: vigil\ncurrent-context: fake\n",
        token.display()
    );
    let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig).unwrap();
    let kcfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    let registry = prometheus::Registry::new();
    let metrics = KubeMetrics::register(&registry).unwrap();
    let _k =
        Kubernetes::start_with(&config(Duration::from_secs(1)), NODE, kcfg, metrics, WatchTuning::default()).unwrap();
    eventually("a list", || fake.count("list") >= 1).await;
    assert_eq!(fake.requests()[0].2, "Bearer secret-token-1");
}

/// Requests per node per hour on a quiet node. The fake server closes every watch after
/// `timeoutSeconds` (as kube-apiserver does); with nothing changing, the only requests are the
/// first list and one watch per timeout. Run with a 1s timeout, the count scales to the
/// production 290s: 1 list + 3600/290 ≈ 12.4 watches ≈ 13.4 requests per hour (plus a relist
/// per 410 Gone, which bookmarks make rare). Printed for the README.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_hour_on_a_quiet_node() {
    let fake = Fake::new();
    for i in 0..110 {
        fake.add(pod(&format!("p-{i}"), NODE, &format!("u{i}")));
    }
    let (_k, _registry) = start(&fake, &config(Duration::from_secs(2)), 1).await;
    let started = std::time::Instant::now();
    eventually("six watches", || fake.count("watch") >= 6).await;
    let elapsed = started.elapsed();
    let (lists, watches) = (fake.count("list"), fake.count("watch"));
    assert_eq!(lists, 1, "a quiet node lists once");
    // Each watch lasted its full timeout: the client never reconnects faster than that.
    assert!(elapsed >= Duration::from_secs(watches as u64 - 1), "{watches} watches in {elapsed:?}");
    let scaled = 1.0 + 3600.0 / 290.0;
    println!(
        "quiet node: {lists} list + {watches} watches in {:.1}s with timeoutSeconds=1 → per hour at 290s: {scaled:.1} requests",
        elapsed.as_secs_f64()
    );
    assert_selector_on_every_request(&fake);
}

#[test]
fn owners_resolve_to_workloads() {
    let hash: crate::event::Labels = [("pod-template-hash".to_string(), "7d9f8b6c5d".to_string())].into();
    let none = crate::event::Labels::new();
    let o = |k: &str, n: &str| crate::event::Owner { kind: k.into(), name: n.into() };
    assert_eq!(resolve_owner("ReplicaSet", "web-7d9f8b6c5d", &hash), o("Deployment", "web"));
    assert_eq!(resolve_owner("ReplicaSet", "web-abc", &hash), o("ReplicaSet", "web-abc"));
    assert_eq!(resolve_owner("ReplicaSet", "bare", &none), o("ReplicaSet", "bare"));
    assert_eq!(resolve_owner("Job", "backup-29012345", &none), o("CronJob", "backup"));
    assert_eq!(resolve_owner("Job", "migrate-2", &none), o("Job", "migrate-2"));
    assert_eq!(resolve_owner("StatefulSet", "db", &none), o("StatefulSet", "db"));
}

#[test]
fn deleted_pods_are_kept_for_the_grace_then_dropped() {
    let p = CachedPod::from_pod(&serde_json::from_value(pod("web-1", NODE, "u1")).unwrap(), &[]).unwrap();
    let kept = PodCache::new(Duration::from_secs(300), None);
    kept.apply(p);
    kept.delete("u1");
    kept.expire();
    assert!(kept.pod(&meta("web-1", "u1", "app")).is_some());
    let gone = PodCache::new(Duration::ZERO, None);
    gone.apply(CachedPod::from_pod(&serde_json::from_value(pod("web-1", NODE, "u1")).unwrap(), &[]).unwrap());
    gone.delete("u1");
    gone.expire();
    assert!(gone.pod(&meta("web-1", "u1", "app")).is_none());
    assert!(gone.is_empty());
    // By name when the path has no uid (a /var/log/containers link); a recreated pod of the
    // same name with another uid is not the old one.
    kept.apply(CachedPod::from_pod(&serde_json::from_value(pod("web-1", NODE, "u9")).unwrap(), &[]).unwrap());
    assert!(kept.pod(&meta("web-1", "", "app")).is_some());
    assert!(kept.pod(&meta("web-1", "u-nope", "app")).is_none());
}

#[test]
fn config_contract() {
    let yaml = "enabled: true\nnode_name: n1\nannotations: [team]\nnamespace_labels: true\nmax_wait: 3s\ndeleted_pod_grace: 1m\n";
    let c: KubernetesConfig = serde_yaml_ng::from_str(yaml).unwrap();
    assert!(c.enabled && c.namespace_labels);
    assert_eq!(c.max_wait.get(), Duration::from_secs(3));
    assert_eq!(c.deleted_pod_grace.get(), Duration::from_secs(60));
    let d = KubernetesConfig::default();
    assert!(!d.enabled);
    assert_eq!((d.max_wait.get(), d.deleted_pod_grace.get()), (Duration::from_secs(2), Duration::from_secs(300)));
    let mut p = Problems::default();
    KubernetesConfig { node_name: Some(String::new()), max_wait: HumanDuration::secs(600), ..d }.validate("k", &mut p);
    assert_eq!(p.0.len(), 2, "{:?}", p.0);
}

fn counter(registry: &prometheus::Registry, name: &str) -> f64 {
    registry
        .gather()
        .into_iter()
        .find(|f| f.name() == name)
        .map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()).sum())
        .unwrap_or(0.0)
}

fn rss_bytes() -> u64 {
    // Return freed heap to the system first, so the figure is what is still held.
    // SAFETY: malloc_trim only releases free memory of glibc's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn realistic_pods() -> Vec<Value> {
    (0..110)
        .map(|i| {
            let mut p =
                pod(&format!("shop-frontend-7d9f8b6c5d-{i:05}"), NODE, &format!("0d7c4f0e-4b7a-4a8e-9d55-{i:012}"));
            let md = &mut p["metadata"];
            md["labels"] = json!({"app.kubernetes.io/name": "frontend", "app.kubernetes.io/instance": "shop",
                "app.kubernetes.io/version": "1.27.3", "app.kubernetes.io/component": "web",
                "app.kubernetes.io/part-of": "shop", "pod-template-hash": "7d9f8b6c5d", "team": "checkout"});
            md["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json!("x".repeat(2048));
            p["spec"]["containers"] = json!([{"name": "app", "image": "registry.example.com/shop/frontend:1.27.3"},
                {"name": "sidecar", "image": "envoyproxy/envoy:v1.30.1"}]);
            p["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox:1.36"}]);
            p
        })
        .collect()
}

/// What the cache and the stage keep for 110 pods (kubelet's default `maxPods`), 3 containers
/// each, realistic labels and a 2 KiB `last-applied-configuration` annotation per pod (not
/// kept): pods decoded from JSON as the watch does, applied to the cache, and one enriched
/// `Source` per container file built by the stage. Single-threaded, heap trimmed before each
/// reading. Not a pass/fail test (RSS of a test process is shared with whatever else runs):
/// `cargo test --lib logs::kubernetes::tests::rss_with_110_pods -- --ignored --nocapture`.
#[test]
#[ignore = "measurement for the README"]
fn rss_with_110_pods() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let pods: Vec<String> = realistic_pods().iter().map(|p| p.to_string()).collect();
    let sources: Vec<Arc<Source>> = (0..110)
        .flat_map(|i| {
            ["app", "sidecar", "init"].map(|c| {
                source(&format!("shop-frontend-7d9f8b6c5d-{i:05}"), &format!("0d7c4f0e-4b7a-4a8e-9d55-{i:012}"), c)
            })
        })
        .collect();
    let registry = prometheus::Registry::new();
    let metrics = KubeMetrics::register(&registry).unwrap();
    let cache = Arc::new(PodCache::new(Duration::from_secs(300), None));
    let mut stage = Stage::new(cache.clone(), metrics, Duration::from_secs(2));
    let asked = vec!["team".to_string()];
    let cold = rss_bytes();
    // A running agent has decoded pods before (list, watch events): warm the allocator with one
    // decode of each, dropped, so the reading below is what the cache keeps, not the heap's
    // first growth.
    let warm: Vec<CachedPod> =
        pods.iter().map(|p| CachedPod::from_pod(&serde_json::from_str(p).unwrap(), &asked).unwrap()).collect();
    drop(warm);
    let before = rss_bytes();
    for p in &pods {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_str(p).unwrap();
        cache.apply(CachedPod::from_pod(&pod, &asked).unwrap());
    }
    let mut enriched = Vec::new();
    rt.block_on(async {
        for s in &sources {
            let out = stage.process(batch(&[(s, 1)], 1)).await;
            enriched.push(out.events[0].source.clone());
        }
    });
    assert!(enriched.iter().all(|s| s.kubernetes.api.is_some()));
    let after = rss_bytes();
    println!(
        "RSS: 110 pods cached and 330 enriched sources: +{} KiB (before {} KiB, after {} KiB; {} KiB before warming)",
        (after as i64 - before as i64) / 1024,
        before / 1024,
        after / 1024,
        cold / 1024
    );
    drop(enriched);
}

#[tokio::test]
async fn namespace_labels_reach_events_and_follow_relists() {
    let cache = Arc::new(PodCache::new(Duration::from_secs(300), None));
    let registry = prometheus::Registry::new();
    let mut stage = Stage::new(cache.clone(), KubeMetrics::register(&registry).unwrap(), Duration::from_secs(60));
    cache.apply(CachedPod::from_pod(&serde_json::from_value(pod("web-1", NODE, "u1")).unwrap(), &[]).unwrap());
    cache.begin_relist_namespaces();
    cache.apply_namespace("shop".into(), [("env".to_string(), "prod".to_string())].into());
    cache.apply_namespace("gone".into(), Default::default());
    cache.end_relist_namespaces();
    let s = source("web-1", "u1", "app");
    let out = stage.process(batch(&[(&s, 1)], 1)).await;
    let k = &out.events[0].source.kubernetes;
    assert_eq!(k.namespace_labels.as_deref().and_then(|l| l.get("env")).map(String::as_str), Some("prod"));
    // A relist that no longer lists a namespace forgets it.
    cache.begin_relist_namespaces();
    cache.apply_namespace("other".into(), Default::default());
    cache.end_relist_namespaces();
    let out = stage.process(batch(&[(&s, 1)], 1)).await;
    assert!(out.events[0].source.kubernetes.namespace_labels.is_none());
    assert!(out.events[0].source.kubernetes.api.is_some());
}
