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

use crate::config::Config;
use crate::logs::LogSource;
use crate::metrics::ship::{ShipMetrics, Shipper};
use crate::pipeline::{Acker, Pipeline, PipelineMetrics};
use crate::server::{Health, Server};
use crate::sinks::{self, SinkContext};
use anyhow::Context;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Chunks a sink may have queued before the fan-out waits for it.
const SINK_QUEUE_CHUNKS: usize = 4;
/// Batches the source may have queued before it stops reading.
const SOURCE_QUEUE_BATCHES: usize = 4;

pub struct App {
    pub server: Server,
    pub health: Arc<Health>,
    source: Option<LogSource>,
    pipeline: Pipeline,
    sinks: JoinSet<()>,
    /// Sink task → sink name, for the failure report.
    sink_names: HashMap<tokio::task::Id, String>,
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
        let server = Server::start(&config.metrics.listen, registry.clone(), health.clone()).await?;
        tracing::info!(addr = %server.local_addr, "serving /metrics, /healthz, /readyz");

        let node: Arc<str> = config.node_name.as_str().into();
        let ctx = SinkContext::new(registry.clone(), node.clone()).context("registering sink metrics")?;
        let (acker, ack_rx) = Acker::channel();
        let mut sink_txs = Vec::new();
        let mut sinks = JoinSet::new();
        let mut sink_names = HashMap::new();
        for sc in config.sinks.iter().filter(|s| s.carries_logs()) {
            let sink = sinks::build(sc, &ctx)?;
            let (tx, rx) = mpsc::channel(SINK_QUEUE_CHUNKS);
            sink_txs.push(tx);
            let task = sinks.spawn(sink.run(rx, acker.clone()));
            sink_names.insert(task.id(), sc.name().to_string());
            tracing::info!(sink = sc.name(), "sink started");
        }
        drop(acker);

        let (src_tx, src_rx) = mpsc::channel(SOURCE_QUEUE_BATCHES);
        let has_log_sinks = !sink_txs.is_empty();
        let metrics = PipelineMetrics::register(&registry).context("registering pipeline metrics")?;
        let stage = crate::process::Stage::from_config(&config, &registry).context("registering process metrics")?;
        let pipeline = Pipeline::start_staged(src_rx, sink_txs, ack_rx, Some(metrics), stage);
        let source = if has_log_sinks {
            Some(LogSource::start(
                &config.sources.containers,
                node.clone(),
                &registry,
                src_tx,
                pipeline.committed.clone(),
            )?)
        } else {
            tracing::info!("no sink carries logs: container logs are not read");
            None
        };
        let shipper = start_shipper(&config, &registry, &ctx, node)?;
        health.set_ready(true);
        Ok(App {
            server,
            health,
            source,
            pipeline,
            sinks,
            sink_names,
            sink_died: false,
            shipper,
            grace: config.shutdown.grace_period.get(),
        })
    }

    /// Resolves when a log sink's task, or a task of the metrics shipper, ends (returns or
    /// panics) before shutdown; pending forever otherwise. Call `shutdown` next: it then skips
    /// waiting for the sinks.
    pub async fn sink_failed(&mut self) -> SinkFailed {
        let (sinks, names, shipper) = (&mut self.sinks, &self.sink_names, &mut self.shipper);
        let log_sink = async {
            let Some(done) = sinks.join_next_with_id().await else {
                return std::future::pending().await;
            };
            let (id, cause) = match done {
                Ok((id, ())) => (id, "ended".to_string()),
                Err(e) => (e.id(), join_error_cause(e)),
            };
            SinkFailed { task: format!("sink '{}'", names.get(&id).map_or("?", String::as_str)), cause }
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
