//! The enrichment stage between the tailer and the pipeline: swaps each file's `Arc<Source>`
//! for one carrying its pod's API metadata, drops the lines of excluded pods and containers
//! (keeping their positions, so they are checkpointed), and holds a batch back at most
//! `max_wait` for a pod the cache does not know yet.
//!
//! Key decision: one memo entry per file (keyed by the tailer's `Arc<Source>`, which the entry
//! keeps alive so its address cannot be reused), rebuilt only when the cache changed. So a line
//! costs one pointer comparison when it follows a line of the same file, and a hash lookup
//! otherwise; an enriched `Source` is allocated once per file and pod change. The wait is
//! counted from the moment the stage first saw a file whose pod was unknown: a pod that never
//! shows up costs one `max_wait` per file, then its lines pass at once (counted), and are
//! enriched after all if the pod arrives later.

use super::{KubeMetrics, PodCache};
use crate::event::{Event, K8sMeta, Source};
use crate::pipeline::SourceBatch;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

enum Resolved {
    /// The pod is known: events get `source`, or are skipped when `excluded`.
    Known { source: Arc<Source>, excluded: bool },
    /// The pod is not in the cache; the stage first saw it missing at `since`.
    Unknown { since: Instant },
    /// The path names no pod (e.g. a docker file without labels): nothing to look up.
    NoPod,
}

struct FileState {
    /// The tailer's `Source`, held so its address (the memo key) stays this file's.
    input: Arc<Source>,
    generation: u64,
    resolved: Resolved,
}

/// The stage's state; `run` drives it.
pub struct Stage {
    cache: Arc<PodCache>,
    metrics: KubeMetrics,
    max_wait: Duration,
    files: HashMap<usize, FileState>,
    generation: tokio::sync::watch::Receiver<u64>,
    batches: u64,
}

/// Forwards batches from `input` to `output` until `input` closes (or `output` does).
pub async fn run(
    mut input: mpsc::Receiver<SourceBatch>,
    output: mpsc::Sender<SourceBatch>,
    cache: Arc<PodCache>,
    metrics: KubeMetrics,
    max_wait: Duration,
) {
    let mut stage = Stage::new(cache, metrics, max_wait);
    while let Some(batch) = input.recv().await {
        let batch = stage.process(batch).await;
        if output.send(batch).await.is_err() {
            break;
        }
    }
}

impl Stage {
    pub fn new(cache: Arc<PodCache>, metrics: KubeMetrics, max_wait: Duration) -> Self {
        let generation = cache.subscribe();
        Self { cache, metrics, max_wait, files: HashMap::new(), generation, batches: 0 }
    }

    /// Enriches one batch, waiting (at most `max_wait` from when each unknown pod's file was
    /// first seen) for pods the cache does not know yet.
    pub async fn process(&mut self, mut batch: SourceBatch) -> SourceBatch {
        if batch.events.is_empty() {
            return batch;
        }
        self.batches += 1;
        if self.batches % 256 == 0 {
            // Files the tailer closed: only this memo still holds their Source.
            self.files.retain(|_, f| Arc::strong_count(&f.input) > 1);
        }
        let started = Instant::now();
        let mut waited = false;
        loop {
            let generation = *self.generation.borrow_and_update();
            let now = Instant::now();
            let mut wait_until: Option<Instant> = None;
            let mut last: Option<usize> = None;
            for e in &batch.events {
                let ptr = Arc::as_ptr(&e.source) as usize;
                if last == Some(ptr) {
                    continue;
                }
                last = Some(ptr);
                let state = self.resolve(&e.source, generation, now);
                if let Resolved::Unknown { since } = state.resolved {
                    let deadline = since + self.max_wait;
                    if deadline > now {
                        wait_until = Some(wait_until.map_or(deadline, |w| w.max(deadline)));
                    }
                }
            }
            let Some(until) = wait_until else { break };
            waited = true;
            tokio::select! {
                changed = self.generation.changed() => {
                    if changed.is_err() {
                        // The cache is gone (shutdown): nothing will arrive.
                        tokio::time::sleep_until(until).await;
                    }
                }
                _ = tokio::time::sleep_until(until) => {}
            }
        }
        if waited {
            self.metrics.wait_seconds.inc_by(started.elapsed().as_secs_f64());
        }
        let (mut excluded, mut missing) = (0u64, 0u64);
        let files = &self.files;
        batch.events.retain_mut(|e| {
            let Some(state) = files.get(&(Arc::as_ptr(&e.source) as usize)) else { return true };
            match &state.resolved {
                Resolved::Known { excluded: true, .. } => {
                    excluded += 1;
                    false
                }
                Resolved::Known { source, .. } => {
                    e.source = source.clone();
                    true
                }
                Resolved::Unknown { .. } => {
                    missing += 1;
                    true
                }
                Resolved::NoPod => true,
            }
        });
        self.metrics.lines_excluded.inc_by(excluded);
        self.metrics.metadata_missing.inc_by(missing);
        batch
    }

    fn resolve(&mut self, source: &Arc<Source>, generation: u64, now: Instant) -> &FileState {
        let key = Arc::as_ptr(source) as usize;
        let cache = &self.cache;
        let state = self.files.entry(key).or_insert_with(|| FileState {
            input: source.clone(),
            generation: generation.wrapping_sub(1),
            resolved: Resolved::NoPod,
        });
        if state.generation != generation {
            state.generation = generation;
            state.resolved = resolve(cache, source, &state.resolved, now);
        }
        state
    }
}

fn resolve(cache: &PodCache, source: &Arc<Source>, previous: &Resolved, now: Instant) -> Resolved {
    let k = &source.kubernetes;
    if k.namespace.is_empty() || k.pod.is_empty() {
        return Resolved::NoPod;
    }
    let known = cache.with_pod(k, |pod, namespace_labels| {
        let excluded = pod.excludes(&k.container);
        let source = Arc::new(Source {
            file: source.file.clone(),
            node: source.node.clone(),
            kubernetes: K8sMeta {
                api: Some(pod.meta.clone()),
                image: pod.image(&k.container),
                namespace_labels: namespace_labels.cloned(),
                ..k.clone()
            },
        });
        Resolved::Known { source, excluded }
    });
    match (known, previous) {
        (Some(r), _) => r,
        (None, Resolved::Unknown { since }) => Resolved::Unknown { since: *since },
        (None, _) => Resolved::Unknown { since: now },
    }
}

/// Whether an event carries API metadata (tests and accessors).
pub fn enriched(e: &Event) -> bool {
    e.source.kubernetes.api.is_some()
}
