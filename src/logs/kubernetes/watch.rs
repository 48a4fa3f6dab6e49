//! The list+watch of this node's pods (and, for `namespace_labels`, of namespaces) into the
//! `PodCache`, through kube-runtime's `watcher`.
//!
//! Key decision: kube's `watcher` state machine rather than hand-written list+watch calls. It
//! lists once (paged), then watches from the list's `resourceVersion` with
//! `allowWatchBookmarks=true`; a watch that ends (the server closes it after `timeoutSeconds`)
//! is resumed from the last event's or bookmark's `resourceVersion` without a list; a watch
//! ERROR event with code 410 (Gone: the version fell out of etcd's compaction window) starts a
//! fresh list (a relist, never a crash); connection errors are retried with client-go's
//! backoff (0.8s doubling to 30s, jittered, reset after 2 minutes of health). The field
//! selector `spec.nodeName=<node>` is on every list and watch request, so the API server only
//! sends this node's pods.

use super::{CachedPod, KubeMetrics, PodCache};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::sync::Arc;
use std::time::Duration;

/// Knobs tests turn; production uses the defaults.
#[derive(Debug, Clone, Copy)]
pub struct WatchTuning {
    /// `timeoutSeconds` of each watch request: the API server closes the watch after it and
    /// the watcher resumes it. Default 290 (kube's default, under the API server's own
    /// `--min-request-timeout` randomisation of 1800s+).
    pub watch_timeout_secs: u32,
}

impl Default for WatchTuning {
    fn default() -> Self {
        Self { watch_timeout_secs: 290 }
    }
}

/// Runs until aborted: this node's pods into `cache`.
pub async fn pods(
    client: kube::Client,
    node: String,
    annotations: Vec<String>,
    cache: Arc<PodCache>,
    metrics: KubeMetrics,
    tuning: WatchTuning,
) {
    let api: kube::Api<Pod> = kube::Api::all(client);
    let selector = format!("spec.nodeName={node}");
    let config = watcher::Config::default().fields(&selector).timeout(tuning.watch_timeout_secs);
    let errors = metrics.watch_errors.with_label_values(&["pods"]);
    let relists = metrics.relists.with_label_values(&["pods"]);
    let stream = watcher::watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut expire = tokio::time::interval(Duration::from_secs(30));
    expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = expire.tick() => {
                cache.expire();
                continue;
            }
        };
        let Some(event) = event else { break };
        match event {
            Ok(Event::Init) => {
                relists.inc();
                cache.begin_relist();
            }
            Ok(Event::InitApply(pod) | Event::Apply(pod)) => {
                if let Some(p) = CachedPod::from_pod(&pod, &annotations) {
                    cache.apply(p);
                }
            }
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    cache.delete(uid);
                }
            }
            Ok(Event::InitDone) => {
                cache.end_relist();
                tracing::debug!(node = %node, pods = cache.len(), "kubernetes: pod list synced");
            }
            Err(error) => {
                errors.inc();
                tracing::warn!(node = %node, %error, "kubernetes: pod list/watch failed; retrying with backoff");
            }
        }
    }
}

/// Runs until aborted: every namespace's labels into `cache` (for `namespace_labels`).
pub async fn namespaces(client: kube::Client, cache: Arc<PodCache>, metrics: KubeMetrics, tuning: WatchTuning) {
    let api: kube::Api<Namespace> = kube::Api::all(client);
    let config = watcher::Config::default().timeout(tuning.watch_timeout_secs);
    let errors = metrics.watch_errors.with_label_values(&["namespaces"]);
    let relists = metrics.relists.with_label_values(&["namespaces"]);
    let stream = watcher::watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => {
                relists.inc();
                cache.begin_relist_namespaces();
            }
            Ok(Event::InitApply(ns) | Event::Apply(ns)) => {
                if let Some(name) = ns.metadata.name {
                    cache.apply_namespace(name, ns.metadata.labels.unwrap_or_default().into_iter().collect());
                }
            }
            Ok(Event::Delete(ns)) => {
                if let Some(name) = ns.metadata.name.as_deref() {
                    cache.delete_namespace(name);
                }
            }
            Ok(Event::InitDone) => cache.end_relist_namespaces(),
            Err(error) => {
                errors.inc();
                tracing::warn!(%error, "kubernetes: namespace list/watch failed; retrying with backoff");
            }
        }
    }
}
