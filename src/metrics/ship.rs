//! Metrics shipping: every `metrics.ship.interval`, gather the registry that `/metrics` serves
//! (node collectors and vigil's own pipeline metrics alike) under one collection timestamp, and
//! hand that snapshot to each configured metrics sink, which delivers it on its own schedule.
//!
//! Key decision: the snapshot is encoded into ready-to-send requests at collection time and
//! kept, compressed, in a bounded per-sink [`ShipQueue`]; one sender task per sink sends them
//! oldest first, one request in flight. So a dead receiver costs only the queue's bound in
//! memory (oldest dropped and counted beyond it), never blocks collection or the other sinks,
//! and, once back, receives the outage window in timestamp order, which Prometheus-style TSDBs
//! require (out-of-order samples are rejected). Rejected alternatives: a scrape-style pull
//! through the log pipeline's `Chunk`s (metrics have no file offsets to acknowledge, and a stuck
//! log sink would stall them); re-gathering at send time (the values of the outage would be
//! lost, and timestamps would be the send time, not the collection time); a write-ahead log on
//! disk as Prometheus keeps (a node agent's few minutes of data fit in a few MiB of RAM).
//!
//! Shutdown: the shipper takes one last snapshot and each sink makes one pass over its queue,
//! without backoff between requests: what is not delivered by the first retryable failure (a
//! `SendOutcome::Retry`) or by the grace deadline is dropped and counted (`reason="shutdown"`).
//! A sink that retries inside `send` (Elasticsearch's per-item `_bulk` retries) is cut off at
//! the deadline.

use crate::config::{HumanDuration, Problems};
pub use crate::sinks::metrics_sink::{
    Batch, FlatSample, MetricsSink, QueueLimits, SendFuture, SendOutcome, Snapshot, float_label, for_each_sample,
    now_ms,
};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// `metrics.ship`: push the node's metrics to sinks, in addition to serving `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipConfig {
    /// How often a snapshot is taken and shipped. Default 15s: Prometheus' usual scrape interval,
    /// so `rate()` windows and dashboards made for scraping fit.
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// Names of sinks (from `sinks:`) that receive the metrics: `prometheus_remote_write`,
    /// `elasticsearch` or `otlp` sinks. Default empty: nothing is pushed, `/metrics` is scraped as usual.
    #[serde(default)]
    pub sinks: Vec<String>,
}

fn default_interval() -> HumanDuration {
    HumanDuration::secs(15)
}

impl Default for ShipConfig {
    fn default() -> Self {
        Self { interval: default_interval(), sinks: Vec::new() }
    }
}

impl ShipConfig {
    /// Checks the interval and that every named sink exists and can carry metrics.
    /// `sinks` is `(name, type, carries_metrics)` for each entry of `sinks:`.
    pub fn validate(&self, path: &str, sinks: &[(&str, &str, bool)], p: &mut Problems) {
        if self.interval.get() < Duration::from_secs(1) {
            p.push(
                format!("{path}.interval"),
                format!("'{}' is below 1s; expected e.g. 15s (how often metrics are pushed)", self.interval),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, name) in self.sinks.iter().enumerate() {
            let at = format!("{path}.sinks[{i}]");
            if !seen.insert(name.as_str()) {
                p.push(at, format!("'{name}' is listed twice; list each sink once"));
                continue;
            }
            match sinks.iter().find(|(n, _, _)| n == name) {
                None => {
                    let known: Vec<&str> = sinks.iter().filter(|s| s.2).map(|s| s.0).collect();
                    let expected = if known.is_empty() {
                        "no sink under sinks: can carry metrics; add one of type prometheus_remote_write, \
                         elasticsearch or otlp"
                            .to_string()
                    } else {
                        format!("expected one of: {}", known.join(", "))
                    };
                    p.push(at, format!("'{name}' is not the name of a sink under sinks:; {expected}"));
                }
                Some((_, kind, false)) => p.push(
                    at,
                    format!(
                        "sink '{name}' is of type {kind}, which cannot carry metrics; use a sink of type \
                         prometheus_remote_write, elasticsearch or otlp"
                    ),
                ),
                Some(_) => {}
            }
        }
    }
}

/// The `vigil_ship_*` metric families, registered once per registry.
#[derive(Clone)]
pub struct ShipMetrics {
    sent: IntCounterVec,
    dropped: IntCounterVec,
    queued: IntGaugeVec,
}

impl ShipMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let sent = IntCounterVec::new(
            Opts::new("vigil_ship_samples_sent_total", "Metric samples (or documents) the sink's receiver accepted."),
            &["sink"],
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "vigil_ship_samples_dropped_total",
                "Metric samples given up: reason = queue_full (oldest dropped while the receiver was down), \
                 rejected (a final 4xx: not 401/403/404/407/408/429), shutdown (not delivered within the grace period).",
            ),
            &["sink", "reason"],
        )?;
        let queued = IntGaugeVec::new(
            Opts::new("vigil_ship_queue_samples", "Metric samples waiting to be sent (including the one in flight)."),
            &["sink"],
        )?;
        registry.register(Box::new(sent.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(queued.clone()))?;
        Ok(Self { sent, dropped, queued })
    }

    fn for_sink(&self, sink: &str) -> SinkShipMetrics {
        // Pre-create every reason so dashboards see zeros, not absent series.
        for reason in ["queue_full", "rejected", "shutdown"] {
            self.dropped.with_label_values(&[sink, reason]);
        }
        SinkShipMetrics {
            sent: self.sent.with_label_values(&[sink]),
            dropped: self.dropped.clone(),
            queued: self.queued.with_label_values(&[sink]),
            sink: sink.to_string(),
        }
    }
}

struct SinkShipMetrics {
    sent: prometheus::IntCounter,
    dropped: IntCounterVec,
    queued: prometheus::IntGauge,
    sink: String,
}

impl SinkShipMetrics {
    fn dropped(&self, reason: &str, n: usize) {
        if n > 0 {
            self.dropped.with_label_values(&[&self.sink, reason]).inc_by(n as u64);
        }
    }
}

/// The queue of one metrics sink: batches in collection order, bounded by age and samples.
/// The batch at the front may be in flight; it is never evicted while it is (so a request and
/// its eviction cannot both count it), and the newest batch is always kept, which bounds memory
/// at `max_samples` plus two batches.
pub struct ShipQueue {
    state: Mutex<QueueState>,
    notify: Notify,
    limits: QueueLimits,
    metrics: SinkShipMetrics,
}

#[derive(Default)]
struct QueueState {
    batches: VecDeque<Batch>,
    samples: usize,
    in_flight: bool,
    /// Drops were logged in this outage; logged again only after the queue drained once.
    warned_full: bool,
    /// No more batches will come (shutdown): the sender ends once the queue is empty.
    closed: bool,
}

impl ShipQueue {
    fn new(limits: QueueLimits, metrics: SinkShipMetrics) -> Self {
        Self { state: Mutex::new(QueueState::default()), notify: Notify::new(), limits, metrics }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().expect("ship queue lock poisoned")
    }

    /// Appends a snapshot's batches, then evicts the oldest beyond the limits.
    fn push(&self, batches: Vec<Batch>) {
        let mut s = self.lock();
        for b in batches {
            s.samples += b.samples;
            s.batches.push_back(b);
        }
        let newest = s.batches.back().map(|b| b.timestamp_ms).unwrap_or(0);
        let max_age_ms = self.limits.max_age.as_millis() as i64;
        let mut dropped = 0;
        loop {
            // Never evict the batch in flight, and always keep the newest batch: fresh data is
            // worth more than old, even when one snapshot alone exceeds the bound.
            let skip = usize::from(s.in_flight);
            if s.batches.len() <= skip + 1 {
                break;
            }
            let too_old = newest - s.batches[skip].timestamp_ms > max_age_ms;
            if !too_old && s.samples <= self.limits.max_samples {
                break;
            }
            let b = s.batches.remove(skip).expect("index checked above");
            s.samples -= b.samples;
            dropped += b.samples;
        }
        self.metrics.queued.set(s.samples as i64);
        let first = dropped > 0 && !s.warned_full;
        s.warned_full |= dropped > 0;
        drop(s);
        if dropped > 0 {
            self.metrics.dropped("queue_full", dropped);
            if first {
                tracing::warn!(
                    sink = %self.metrics.sink,
                    samples = dropped,
                    "metrics queue full while the receiver is unreachable; dropping the oldest samples \
                     (counted in vigil_ship_samples_dropped_total) until it catches up"
                );
            }
        }
        self.notify.notify_one();
    }

    /// The front batch, marked in flight.
    fn front(&self) -> Option<Batch> {
        let mut s = self.lock();
        let b = s.batches.front().cloned();
        s.in_flight = b.is_some();
        b
    }

    /// Replaces the in-flight front batch with what is left of it, or removes it.
    fn finish_front(&self, rest: Option<Batch>) {
        let mut s = self.lock();
        s.in_flight = false;
        if let Some(old) = s.batches.pop_front() {
            s.samples -= old.samples;
        }
        if let Some(rest) = rest {
            s.samples += rest.samples;
            s.batches.push_front(rest);
        }
        if s.batches.is_empty() {
            s.warned_full = false;
        }
        self.metrics.queued.set(s.samples as i64);
    }

    fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }

    /// Empties the queue; returns the samples that were in it.
    fn clear(&self) -> usize {
        let mut s = self.lock();
        let n = s.samples;
        s.batches.clear();
        s.samples = 0;
        s.in_flight = false;
        self.metrics.queued.set(0);
        n
    }

    fn is_closed_and_empty(&self) -> bool {
        let s = self.lock();
        s.closed && s.batches.is_empty()
    }

    /// Samples queued (tests, metrics).
    pub fn samples(&self) -> usize {
        self.lock().samples
    }
}

/// The running shipper: one collection task and one sender task per sink.
pub struct Shipper {
    stop: watch::Sender<Option<Instant>>,
    tasks: JoinSet<()>,
    /// Task → what it does, for `task_failed`.
    task_names: std::collections::HashMap<tokio::task::Id, String>,
}

impl Shipper {
    /// Starts shipping `registry` to `sinks` every `interval`. The first snapshot is taken at
    /// once, so a receiver sees the node as soon as vigil is up.
    pub fn start(
        interval: Duration,
        registry: Registry,
        node: Arc<str>,
        sinks: Vec<Arc<dyn MetricsSink>>,
        metrics: &ShipMetrics,
    ) -> Self {
        let (stop, stop_rx) = watch::channel(None);
        let mut tasks = JoinSet::new();
        let mut task_names = std::collections::HashMap::new();
        let mut queues = Vec::new();
        for sink in sinks {
            let queue = Arc::new(ShipQueue::new(sink.queue_limits(), metrics.for_sink(sink.name())));
            queues.push((sink.clone(), queue.clone()));
            let name = format!("metrics sender of sink '{}'", sink.name());
            task_names.insert(tasks.spawn(send_loop(sink, queue, stop_rx.clone())).id(), name);
        }
        let collector = tasks.spawn(collect_loop(interval, registry, node, queues, stop_rx));
        task_names.insert(collector.id(), "metrics collection".to_string());
        Self { stop, tasks, task_names }
    }

    /// Resolves when one of the shipper's tasks ends (returns or panics) before `shutdown`, which
    /// never happens by design: metrics would silently stop being shipped. Returns what the task
    /// did and how it ended. Pending forever otherwise.
    pub async fn task_failed(&mut self) -> (String, String) {
        let Some(done) = self.tasks.join_next_with_id().await else {
            return std::future::pending().await;
        };
        let (id, cause) = match done {
            Ok((id, ())) => (id, "ended".to_string()),
            Err(e) => (e.id(), crate::app::join_error_cause(e)),
        };
        (self.task_names.get(&id).cloned().unwrap_or_default(), cause)
    }

    /// Takes a last snapshot, makes one delivery pass over every queue, and returns by
    /// `deadline` at the latest (what is left is dropped and counted).
    pub async fn shutdown(mut self, deadline: Instant) {
        let _ = self.stop.send(Some(deadline));
        // The loops watch the deadline themselves; this bound is a backstop.
        let _ = tokio::time::timeout_at(deadline + Duration::from_millis(200), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
    }
}

type Queues = Vec<(Arc<dyn MetricsSink>, Arc<ShipQueue>)>;

async fn collect_loop(
    interval: Duration,
    registry: Registry,
    node: Arc<str>,
    queues: Queues,
    mut stop: watch::Receiver<Option<Instant>>,
) {
    let queues = Arc::new(queues);
    let mut ticker = tokio::time::interval(interval);
    // After a stall (suspended VM, starved runtime), keep the cadence instead of bursting.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = ticker.tick() => false,
            _ = stop.changed() => true,
        };
        let (registry, node, queues) = (registry.clone(), node.clone(), queues.clone());
        let collected = tokio::task::spawn_blocking(move || {
            let snapshot = Snapshot::gather(&registry, node);
            for (sink, queue) in queues.iter() {
                queue.push(sink.encode(&snapshot));
            }
        })
        .await;
        if let Err(error) = collected {
            tracing::warn!(%error, "metrics shipping: collecting a snapshot failed");
        }
        if last {
            break;
        }
    }
    for (_, queue) in queues.iter() {
        queue.close();
    }
}

async fn send_loop(sink: Arc<dyn MetricsSink>, queue: Arc<ShipQueue>, mut stop: watch::Receiver<Option<Instant>>) {
    let mut backoff = sink.retry().backoff();
    loop {
        let deadline = *stop.borrow();
        if deadline.is_some_and(|d| Instant::now() >= d) || queue.is_closed_and_empty() {
            break;
        }
        let Some(batch) = queue.front() else {
            match deadline {
                // Shutting down: the last snapshot (and the close) will notify.
                Some(d) => tokio::select! {
                    _ = queue.notify.notified() => {}
                    _ = tokio::time::sleep_until(d) => {}
                },
                None => tokio::select! {
                    _ = queue.notify.notified() => {}
                    _ = stop_requested(&mut stop) => {}
                },
            }
            continue;
        };
        // A request in flight when shutdown starts may not outlive the grace deadline (its own
        // timeout can be longer).
        let outcome = tokio::select! {
            o = sink.send(&batch) => o,
            _ = deadline_passed(&mut stop) => break,
        };
        match outcome {
            SendOutcome::Done { delivered, rejected } => {
                backoff = sink.retry().backoff();
                queue.metrics.sent.inc_by(delivered as u64);
                queue.metrics.dropped("rejected", rejected);
                queue.finish_front(None);
            }
            SendOutcome::Retry { rest, delivered, retry_after } => {
                queue.metrics.sent.inc_by(delivered as u64);
                queue.finish_front(Some(rest));
                if stop.borrow().is_some() {
                    // Shutdown makes one pass: a receiver that fails now will not recover in time.
                    break;
                }
                let delay = backoff.next_delay(retry_after);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop_requested(&mut stop) => {}
                }
            }
        }
    }
    // The last snapshot may still be on its way into the queue: count it too.
    let deadline = stop.borrow().unwrap_or_else(Instant::now);
    while !queue.lock().closed {
        tokio::select! {
            _ = queue.notify.notified() => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    let left = queue.clear();
    if left > 0 {
        queue.metrics.dropped("shutdown", left);
        tracing::warn!(sink = sink.name(), samples = left, "metrics not delivered before shutdown; dropped");
    }
}

/// Resolves once shutdown has been asked for (at once if it already was).
async fn stop_requested(stop: &mut watch::Receiver<Option<Instant>>) {
    while stop.borrow().is_none() {
        if stop.changed().await.is_err() {
            // The shipper is gone without a shutdown: its tasks are being aborted.
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves once shutdown has been asked for and its deadline has passed.
async fn deadline_passed(stop: &mut watch::Receiver<Option<Instant>>) {
    stop_requested(stop).await;
    let deadline = stop.borrow().expect("stop_requested saw a deadline");
    tokio::time::sleep_until(deadline).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::retry::RetryConfig;
    use bytes::Bytes;

    fn queue(max_age_s: u64, max_samples: usize) -> (ShipQueue, ShipMetrics) {
        let m = ShipMetrics::register(&Registry::new()).unwrap();
        let q = ShipQueue::new(QueueLimits { max_age: Duration::from_secs(max_age_s), max_samples }, m.for_sink("s"));
        (q, m)
    }

    fn batch(ts_s: i64, samples: usize) -> Batch {
        Batch { body: Bytes::from(vec![0; samples]), samples, timestamp_ms: ts_s * 1000 }
    }

    fn stamps(q: &ShipQueue) -> Vec<i64> {
        q.lock().batches.iter().map(|b| b.timestamp_ms / 1000).collect()
    }

    #[test]
    fn queue_drops_the_oldest_beyond_max_samples_and_counts_them() {
        let (q, m) = queue(3600, 25);
        for t in 0..5 {
            q.push(vec![batch(t, 10)]);
        }
        assert_eq!(stamps(&q), vec![3, 4]);
        assert_eq!(q.samples(), 20);
        assert_eq!(m.dropped.with_label_values(&["s", "queue_full"]).get(), 30);
        assert_eq!(m.queued.with_label_values(&["s"]).get(), 20);
    }

    #[test]
    fn queue_drops_by_age_against_the_newest_snapshot() {
        let (q, m) = queue(60, 1_000_000);
        for t in [0, 30, 60, 90, 120] {
            q.push(vec![batch(t, 1)]);
        }
        assert_eq!(stamps(&q), vec![60, 90, 120]);
        assert_eq!(m.dropped.with_label_values(&["s", "queue_full"]).get(), 2);
    }

    #[test]
    fn the_batch_in_flight_is_never_evicted() {
        let (q, m) = queue(3600, 15);
        q.push(vec![batch(0, 10)]);
        let sending = q.front().unwrap();
        assert_eq!(sending.timestamp_ms, 0);
        q.push(vec![batch(1, 10)]);
        q.push(vec![batch(2, 10)]);
        // The in-flight batch stays; the oldest of the others went.
        assert_eq!(stamps(&q), vec![0, 2]);
        q.finish_front(None);
        assert_eq!(stamps(&q), vec![2]);
        assert_eq!(q.samples(), 10);
        assert_eq!(m.dropped.with_label_values(&["s", "queue_full"]).get(), 10);
    }

    #[test]
    fn a_single_batch_larger_than_the_bound_is_kept_rather_than_nothing() {
        let (q, m) = queue(3600, 5);
        q.push(vec![batch(0, 10)]);
        assert_eq!(stamps(&q), vec![0]);
        q.push(vec![batch(1, 10)]);
        assert_eq!(stamps(&q), vec![1]);
        assert_eq!(m.dropped.with_label_values(&["s", "queue_full"]).get(), 10);
    }

    #[test]
    fn a_partial_retry_replaces_the_front() {
        let (q, _m) = queue(3600, 100);
        q.push(vec![batch(0, 10), batch(0, 10)]);
        let _ = q.front().unwrap();
        q.finish_front(Some(batch(0, 3)));
        assert_eq!(q.samples(), 13);
    }

    struct Panicky;

    impl MetricsSink for Panicky {
        fn name(&self) -> &str {
            "boom"
        }
        fn encode(&self, snapshot: &Snapshot) -> Vec<Batch> {
            vec![Batch { body: Bytes::new(), samples: 1, timestamp_ms: snapshot.timestamp_ms }]
        }
        fn send<'a>(&'a self, _batch: &'a Batch) -> SendFuture<'a> {
            Box::pin(async { panic!("a bug in a metrics sink") })
        }
        fn retry(&self) -> RetryConfig {
            RetryConfig::default()
        }
        fn queue_limits(&self) -> QueueLimits {
            QueueLimits { max_age: Duration::from_secs(60), max_samples: 10 }
        }
    }

    /// A metrics sender that dies must not leave shipping stopped silently: the app learns of it
    /// (and exits, see `app::App::sink_failed`).
    #[tokio::test]
    async fn a_sender_task_that_panics_is_reported() {
        let registry = Registry::new();
        let m = ShipMetrics::register(&registry).unwrap();
        let mut shipper = Shipper::start(Duration::from_secs(3600), registry, "n".into(), vec![Arc::new(Panicky)], &m);
        let (task, cause) = tokio::time::timeout(Duration::from_secs(20), shipper.task_failed())
            .await
            .expect("the dead sender is reported");
        assert_eq!(task, "metrics sender of sink 'boom'");
        assert_eq!(cause, "panicked: a bug in a metrics sink");
        shipper.shutdown(Instant::now()).await;
    }

    #[test]
    fn validation_names_unknown_and_log_only_sinks() {
        let sinks = [("central", "prometheus_remote_write", true), ("loki", "loki", false)];
        let c = ShipConfig {
            interval: HumanDuration::millis(100),
            sinks: vec!["central".into(), "loki".into(), "nope".into(), "central".into()],
        };
        let mut p = Problems::default();
        c.validate("metrics.ship", &sinks, &mut p);
        let all = p.0.join("\n");
        assert_eq!(p.0.len(), 4, "{all}");
        assert!(all.contains("metrics.ship.interval: '100ms' is below 1s"), "{all}");
        assert!(
            all.contains("metrics.ship.sinks[1]: sink 'loki' is of type loki, which cannot carry metrics"),
            "{all}"
        );
        assert!(
            all.contains(
                "metrics.ship.sinks[2]: 'nope' is not the name of a sink under sinks:; expected one of: central"
            ),
            "{all}"
        );
        assert!(all.contains("metrics.ship.sinks[3]: 'central' is listed twice"), "{all}");
    }
}
