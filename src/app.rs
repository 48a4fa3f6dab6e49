//! Wiring: builds and starts every part from a `Config`, and shuts them down in order.
//!
//! Start order: HTTP server (a taken port fails before anything else), sinks, pipeline, source,
//! metrics shipper; then ready. Shutdown order: stop intake → pipeline drains into sinks → sinks
//! flush and ack → final checkpoint, all within `shutdown.grace_period`; the metrics shipper takes
//! its last snapshot and flushes at the same time.
//!
//! Only sinks that carry logs join the log pipeline (a metrics-only sink never acks a chunk, so
//! it would hold every checkpoint back); with no such sink, no log is read at all rather than
//! read and thrown away. Sinks named under `metrics.ship.sinks` get the metrics snapshots.
//!
//! Supervision: a log sink's task runs until its input closes at shutdown. One that ends before
//! (returns or panics: a dead file-sink writer, a panicking delivery) can never ack again, so
//! every checkpoint would freeze behind it while the pipeline's pending chunks grow; a metrics
//! shipper task that ends would stop shipping silently.
//! `App::sink_failed` resolves then; `main` shuts down at once, without waiting for the sinks
//! (the final checkpoint holds only what every sink acked), and exits 70 so Kubernetes restarts
//! vigil from that checkpoint, as for a tail or checkpoint thread panic. Rejected: restarting
//! the sink in-process (a sink that panicked holds state nobody can vouch for, and the lines it
//! held are only re-read from the files after a restart anyway).
//!
//! Reload (`App::apply`, planned by `crate::reload`): new log sinks are built first (a build
//! error changes nothing), then one `SinkSet::change` closes the removed and changed ones and
//! adds the new ones between two chunks. A closed sink drains (its input closes; it delivers
//! and acks what it holds) while the others go on (a changed sink's new instance takes chunks
//! at once but delivers only after the old one ended); when its task ends it is forgotten by the
//! pipeline, and one still running after `shutdown.grace_period` is aborted and forgotten (its
//! backend may be gone for good: that is often why it was removed). Its end is not a failure.

use crate::config::Config;
use crate::logs::LogSource;
use crate::metrics::ship::{ShipMetrics, Shipper};
use crate::pipeline::{Acker, Pipeline, PipelineMetrics, SinkId};
use crate::server::{Health, Server};
use crate::sinks::{self, SinkContext};
use anyhow::Context;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Chunks a sink may have queued before the fan-out waits for it.
const SINK_QUEUE_CHUNKS: usize = 4;
/// Batches the source may have queued before it stops reading. One: behind a slow sink every
/// queued batch (up to 2048 lines) is time a line read now waits, whatever its container; the
/// pipeline's in-flight budget is the buffer that matters (issue 17).
const SOURCE_QUEUE_BATCHES: usize = 1;

pub struct App {
    pub server: Server,
    pub health: Arc<Health>,
    /// The config reload series, registered (and initialised) before vigil is ready.
    pub reload_metrics: crate::reload::ReloadMetrics,
    source: Option<LogSource>,
    /// The pod watch feeding the metadata stage (`sources.containers.kubernetes`).
    _kubernetes: Option<crate::logs::kubernetes::Kubernetes>,
    pipeline: Pipeline,
    sinks: JoinSet<()>,
    /// Sink task → sink name, for the failure report.
    sink_names: HashMap<tokio::task::Id, String>,
    /// Running log sinks by name.
    live: HashMap<String, LiveSink>,
    /// Tasks of sinks removed by a reload, still draining: their end is not a failure.
    retiring: HashMap<tokio::task::Id, SinkId>,
    ctx: SinkContext,
    /// A sink task ended before shutdown (see the module doc).
    sink_died: bool,
    shipper: Option<Shipper>,
    grace: Duration,
}

/// A sink's task (a log sink, or a metrics sender) ended while vigil was running. `main` exits
/// 70 on it.
#[derive(Debug, thiserror::Error)]
#[error(
    "{task} stopped ({cause}); what it held can no longer be delivered, so vigil exits to be restarted from its last checkpoint"
)]
pub struct SinkFailed {
    /// E.g. "sink 'es'" or "metrics sender of sink 'central'".
    pub task: String,
    /// `panicked: <message>` or `ended`.
    pub cause: String,
}

impl App {
    pub async fn start(config: Config) -> anyhow::Result<App> {
        let registry = prometheus::Registry::new();
        crate::metrics::agent::register(&registry).context("registering vigil's own metrics")?;
        if config.metrics.node.enabled {
            crate::metrics::node::register(&registry, &config.metrics.node).context("registering node metrics")?;
        }
        let health = Arc::new(Health::default());
        let access_metrics =
            crate::access::AccessMetrics::register(&registry).context("registering the server's metrics")?;
        let access =
            crate::access::Access::new(config.metrics.tls.as_ref(), config.metrics.auth.as_ref(), access_metrics)?;
        let server =
            Server::start_with_access(&config.metrics.listen, Arc::new(access), registry.clone(), health.clone())
                .await?;
        tracing::info!(addr = %server.local_addr, "serving /metrics, /healthz, /readyz");

        let node: Arc<str> = config.node_name.as_str().into();
        let ctx = SinkContext::new(registry.clone(), node.clone()).context("registering sink metrics")?;
        let mut built = Vec::new();
        for sc in config.sinks.iter().filter(|s| s.carries_logs()) {
            built.push((sc.name().to_string(), sinks::build(sc, &ctx)?, None, sc.route().map(|r| r.compile())));
        }
        let (src_tx, src_rx) = mpsc::channel(SOURCE_QUEUE_BATCHES);
        let has_log_sinks = !built.is_empty();
        let k8s = if has_log_sinks { &config.sources.containers.kubernetes } else { &Default::default() };
        let (src_rx, kubernetes) = crate::logs::kubernetes::wire(k8s, &node, &registry, src_rx).await?;
        let metrics = PipelineMetrics::register(&registry).context("registering pipeline metrics")?;
        // Every sink joins through the `SinkSet`, so a reload can remove any of them.
        let (_no_shared_sinks, ack_rx) = Acker::channel();
        let stage = crate::process::Stage::from_config(&config, &registry).context("registering process metrics")?;
        let pipeline = Pipeline::start_staged(src_rx, Vec::new(), ack_rx, Some(metrics), stage);
        let mut sinks = JoinSet::new();
        let mut sink_names = HashMap::new();
        let mut live = HashMap::new();
        let added = spawn_sinks(built, &pipeline, &mut sinks, &mut sink_names, &mut live);
        pipeline.sinks.change(Vec::new(), added).await;
        let source = if has_log_sinks {
            Some(LogSource::start_with_pods(
                &config.sources.containers,
                node.clone(),
                &registry,
                src_tx,
                pipeline.committed.clone(),
                kubernetes.as_ref().map(|k| k.cache.clone()),
            )?)
        } else {
            tracing::info!("no sink carries logs: container logs are not read");
            None
        };
        let shipper = start_shipper(&config, &registry, &ctx, node)?;
        let reload_metrics =
            crate::reload::ReloadMetrics::register(&registry).context("registering the config reload metrics")?;
        health.set_ready(true);
        Ok(App {
            server,
            health,
            reload_metrics,
            source,
            _kubernetes: kubernetes,
            pipeline,
            sinks,
            sink_names,
            live,
            retiring: HashMap::new(),
            ctx,
            sink_died: false,
            shipper,
            grace: config.shutdown.grace_period.get(),
        })
    }

    /// Resolves when a log sink's task, or a task of the metrics shipper, ends (returns or
    /// panics) before shutdown; pending forever otherwise. Call `shutdown` next: it then skips
    /// waiting for the sinks.
    pub async fn sink_failed(&mut self) -> SinkFailed {
        let (sinks, names, shipper) = (&mut self.sinks, &mut self.sink_names, &mut self.shipper);
        let (retiring, set) = (&mut self.retiring, &self.pipeline.sinks);
        let log_sink = async {
            loop {
                let Some(done) = sinks.join_next_with_id().await else {
                    return std::future::pending().await;
                };
                let (id, cause) = match done {
                    Ok((id, ())) => (id, "ended".to_string()),
                    Err(e) => (e.id(), join_error_cause(e)),
                };
                let name = names.remove(&id).unwrap_or_else(|| "?".into());
                if let Some(sink) = retiring.remove(&id) {
                    // Removed by a reload: drained (or given up on). Nothing waits for it now.
                    set.forget(sink);
                    tracing::info!(sink = %name, end = %cause, "removed sink stopped");
                    continue;
                }
                return SinkFailed { task: format!("sink '{name}'"), cause };
            }
        };
        let metrics = async {
            match shipper.as_mut() {
                Some(s) => {
                    let (task, cause) = s.task_failed().await;
                    SinkFailed { task, cause }
                }
                None => std::future::pending().await,
            }
        };
        let failed = tokio::select! {
            f = log_sink => f,
            f = metrics => f,
        };
        self.sink_died = true;
        tracing::error!(task = %failed.task, error = %failed, "sink task stopped while vigil was running");
        failed
    }

    /// Stops intake, flushes sinks, writes checkpoints. Gives up on sinks after the grace period
    /// (what they had not delivered is not checkpointed and is read again next start).
    pub async fn shutdown(mut self) {
        self.health.set_ready(false);
        // After a sink died, nothing can drain: stop at once (the checkpoint holds only what
        // every sink acked).
        let grace = if self.sink_died { Duration::ZERO } else { self.grace };
        let deadline = tokio::time::Instant::now() + grace;
        let shipped = async {
            if let Some(shipper) = self.shipper.take() {
                shipper.shutdown(deadline).await;
            }
        };
        let logs = async {
            if let Some(source) = self.source.as_mut() {
                source.stop_intake().await;
            }
            let drained = tokio::time::timeout_at(deadline, async {
                self.pipeline.join().await;
                while self.sinks.join_next().await.is_some() {}
            })
            .await;
            if self.sink_died {
                self.sinks.abort_all();
            } else if drained.is_err() {
                tracing::warn!(grace = ?self.grace, "shutdown: sinks did not flush within the grace period; undelivered lines will be read again at next start");
            }
            if let Some(source) = self.source.take() {
                source.finish().await;
            }
        };
        tokio::join!(shipped, logs);
        self.server.stop().await;
    }
}

impl App {
    /// Applies the live part of a reload `plan` (see `crate::reload`): log sinks and globs.
    /// Builds every new sink first; a build error changes nothing and is returned, with its
    /// path.
    pub async fn apply(&mut self, plan: &crate::reload::Plan, new: &Config) -> Result<(), Vec<String>> {
        let mut built = Vec::new();
        let mut problems = Vec::new();
        for name in plan.added.iter().chain(&plan.changed) {
            let (i, sc) = new.sinks.iter().enumerate().find(|(_, s)| s.name() == name).expect("planned from `new`");
            // A changed sink's new instance starts delivering once the old one has drained, so
            // its backend gets the lines in order (Loki rejects a stream going back in time).
            let after = self.live.get(name).map(|old| old.done.clone());
            match sinks::build(sc, &self.ctx) {
                Ok(sink) => built.push((name.clone(), sink, after, sc.route().map(|r| r.compile()))),
                Err(e) => problems.push(format!("sinks[{i}]: {e}")),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut close = Vec::new();
        for name in plan.removed.iter().chain(&plan.changed) {
            if let Some(LiveSink { id, task, .. }) = self.live.remove(name) {
                close.push(id);
                self.retiring.insert(task.id(), id);
                let grace = new.shutdown.grace_period.get();
                let name = name.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    if !task.is_finished() {
                        tracing::warn!(sink = %name, ?grace, "removed sink did not drain within shutdown.grace_period; its undelivered lines are no longer awaited");
                        task.abort();
                    }
                });
            }
        }
        let added = spawn_sinks(built, &self.pipeline, &mut self.sinks, &mut self.sink_names, &mut self.live);
        self.pipeline.sinks.change(close, added).await;
        if plan.globs
            && let Some(source) = &self.source
        {
            let c = &new.sources.containers;
            // Validated: the globs compile.
            let _ = source.set_globs(&c.include, &c.exclude);
        }
        self.grace = new.shutdown.grace_period.get();
        Ok(())
    }
}

/// A running log sink: its place in the pipeline, its task, and a channel that closes when
/// the task ends (however it ends).
struct LiveSink {
    id: SinkId,
    task: tokio::task::AbortHandle,
    done: watch::Receiver<()>,
}

/// A built sink, by name, and the end of the instance it replaces, if any.
type Built = (String, Box<dyn sinks::Sink>, Option<watch::Receiver<()>>, Option<crate::process::Selector>);

/// Starts built log sinks on their own pipeline channels; returns what `SinkSet::change` adds.
fn spawn_sinks(
    built: Vec<Built>,
    pipeline: &Pipeline,
    tasks: &mut JoinSet<()>,
    names: &mut HashMap<tokio::task::Id, String>,
    live: &mut HashMap<String, LiveSink>,
) -> Vec<(SinkId, mpsc::Sender<Arc<crate::pipeline::Chunk>>)> {
    let mut added = Vec::new();
    for (name, sink, after, route) in built {
        let ch = pipeline.sinks.channel(SINK_QUEUE_CHUNKS);
        // Before `change` adds it: the sink never sees a line its `match:` does not take.
        pipeline.sinks.route(ch.id, route);
        let (ended, done) = watch::channel(());
        let task = tasks.spawn(async move {
            let _ended = ended;
            if let Some(mut old) = after {
                // Never sent: returns when the old instance's task is gone.
                let _ = old.changed().await;
            }
            sink.run(ch.rx, ch.acker).await
        });
        names.insert(task.id(), name.clone());
        tracing::info!(sink = %name, "sink started");
        live.insert(name, LiveSink { id: ch.id, task, done });
        added.push((ch.id, ch.tx));
    }
    added
}

/// How a task ended abnormally, for a log line: "panicked: <message>" or "cancelled".
pub(crate) fn join_error_cause(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return format!("cancelled: {e}");
    }
    let payload = e.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    format!("panicked: {message}")
}

/// Starts pushing metrics to the sinks under `metrics.ship.sinks`, if any.
fn start_shipper(
    config: &Config,
    registry: &prometheus::Registry,
    ctx: &SinkContext,
    node: Arc<str>,
) -> anyhow::Result<Option<Shipper>> {
    let ship = &config.metrics.ship;
    if ship.sinks.is_empty() {
        return Ok(None);
    }
    let metrics = ShipMetrics::register(registry).context("registering the metrics shipping metrics")?;
    let mut targets = Vec::new();
    for name in &ship.sinks {
        let sc = config.sinks.iter().find(|s| s.name() == name).context("metrics.ship.sinks was validated")?;
        targets.push(sinks::build_metrics(sc, ctx)?);
    }
    tracing::info!(sinks = ?ship.sinks, interval = %ship.interval, "shipping metrics");
    Ok(Some(Shipper::start(ship.interval.get(), registry.clone(), node, targets, &metrics)))
}
