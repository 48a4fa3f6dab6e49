//! Container log collection: discover → tail → parse → enrich, producing `pipeline::SourceBatch`es,
//! and checkpoints of what the sinks acknowledged.
//!
//! ```text
//!  discover (globs walk + inotify hints) ──→ tail::Tailer (one thread, round-robin slices)
//!                                              │ per file: tail::file::FileTail
//!                                              │   pread → lines → parse::{cri,docker} → parse::merge
//!                                              │   → Event { Arc<Source> from enrich, Origin }
//!                                              ↓
//!                         bounded mpsc<SourceBatch> → pipeline → sinks → acks → Committed
//!                                                                                 ↓
//!                         checkpoint thread: within checkpoint_interval of a commit, tail::checkpoint
//! ```
//!
//! Key decision: the source runs on two plain threads (tailer, checkpoint writer), not on the
//! async runtime: file reads block, and the tailer's only async point is the bounded send,
//! which it drives itself. The async runtime stays free for the sinks and `/metrics`.
//!
//! Invariants: parsing never does I/O; an event's `Origin.resume` never passes an unfinished
//! line, a pending partial or an open multiline group of either stream; a checkpoint only holds
//! committed offsets.

pub mod config;
pub mod discover;
pub mod enrich;
pub mod kubernetes;
pub mod metrics;
pub mod multiline;
pub mod parse;
pub mod tail;

use crate::pipeline::{Committed, SourceBatch};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("checkpoint directory {path}: {error}")]
    CheckpointDir { path: String, error: std::io::Error },
    #[error(transparent)]
    Checkpoint(#[from] tail::checkpoint::Error),
    #[error("registering log metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("sources.containers: bad glob: {0}")]
    Glob(#[from] globset::Error),
    #[error("starting the log tailer thread: {0}")]
    Thread(std::io::Error),
}

/// Wakes the checkpoint thread early (shutdown).
#[derive(Default)]
struct CheckpointStop {
    stopped: Mutex<bool>,
    cv: Condvar,
}

/// The running log source.
pub struct LogSource {
    stop: Arc<tail::Stop>,
    wake: std::sync::mpsc::SyncSender<discover::Wake>,
    tailer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
    cp_stop: Arc<CheckpointStop>,
    shared: Arc<tail::Shared>,
    globs: discover::GlobsUpdate,
}

impl LogSource {
    /// Starts discovery and tailing; batches go to `out`; `committed` says what is delivered.
    pub fn start(
        config: &config::ContainersConfig,
        node: Arc<str>,
        registry: &prometheus::Registry,
        out: mpsc::Sender<SourceBatch>,
        committed: Arc<Committed>,
    ) -> Result<Self, Error> {
        Self::start_with_pods(config, node, registry, out, committed, None)
    }

    /// `start`, with the pod metadata cache for the per-pod `vigil.io/multiline` annotation.
    pub fn start_with_pods(
        config: &config::ContainersConfig,
        node: Arc<str>,
        registry: &prometheus::Registry,
        out: mpsc::Sender<SourceBatch>,
        committed: Arc<Committed>,
        pods: Option<Arc<kubernetes::PodCache>>,
    ) -> Result<Self, Error> {
        let checkpoints =
            tail::checkpoint::Checkpoints::open(Path::new(&config.checkpoint_dir)).map_err(|e| match e {
                tail::checkpoint::Error::Dir { path, error } => Error::CheckpointDir { path, error },
                other => Error::Checkpoint(other),
            })?;
        let restore = checkpoints.load()?;
        let metrics = metrics::LogMetrics::register(registry)?;
        let shared = Arc::new(tail::Shared {
            registry: Mutex::new(Default::default()),
            unresolved: Mutex::new(Some(restore.clone())),
            committed,
            checkpoints,
            metrics,
            last_written: Mutex::new(None),
            changes: Default::default(),
        });
        let globs = discover::Globs::new(&config.include, &config.exclude)?;
        let globs_update = globs.updates();
        let (wake, wake_rx) = std::sync::mpsc::sync_channel(1024);
        let watcher = discover::Watcher::new(wake.clone());
        let stop = Arc::new(tail::Stop::default());
        let tailer = tail::Tailer::new(
            tail::Settings::from_config(config),
            shared.clone(),
            node,
            globs,
            watcher,
            wake_rx,
            restore,
            out,
            stop.clone(),
        )
        .map_err(Error::Thread)?
        .with_pods(pods);
        let tailer = std::thread::Builder::new()
            .name("vigil-tail".into())
            .spawn(move || fail_fast("log tailer", move || tailer.run()))
            .map_err(Error::Thread)?;

        let cp_stop = Arc::new(CheckpointStop::default());
        let interval = config.checkpoint_interval.get();
        let checkpointer = {
            let shared = shared.clone();
            let cp_stop = cp_stop.clone();
            std::thread::Builder::new()
                .name("vigil-checkpoint".into())
                .spawn(move || fail_fast("checkpoint writer", move || checkpoint_loop(&shared, &cp_stop, interval)))
                .map_err(Error::Thread)?
        };
        Ok(Self {
            stop,
            wake,
            tailer: Some(tailer),
            checkpointer: Some(checkpointer),
            cp_stop,
            shared,
            globs: globs_update,
        })
    }

    /// Config reload: new include/exclude globs, applied at the tailer's next scan (asked for
    /// now). Open files, offsets and held files stay.
    pub fn set_globs(&self, include: &[String], exclude: &[String]) -> Result<(), Error> {
        self.globs.set(include, exclude)?;
        let _ = self.wake.try_send(discover::Wake::Rescan);
        Ok(())
    }

    /// Stops reading: no new batches; the output channel closes once this returns.
    pub async fn stop_intake(&mut self) {
        self.stop.set();
        let _ = self.wake.try_send(discover::Wake::Stop);
        if let Some(h) = self.tailer.take() {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }

    /// Writes the final checkpoint (after the pipeline has drained).
    pub async fn finish(mut self) {
        self.stop_intake().await;
        {
            let mut s = self.cp_stop.stopped.lock().expect("checkpoint stop lock poisoned");
            *s = true;
            self.cp_stop.cv.notify_all();
        }
        let checkpointer = self.checkpointer.take();
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(h) = checkpointer {
                let _ = h.join();
            }
            shared.write_checkpoint();
        })
        .await;
    }
}

/// Every `interval`, writes the checkpoint if anything changed (an ack committed offsets, a
/// file was opened or finished): a commit is on disk at most `interval` (plus the write) after
/// the ack, commits within one interval share one write, and an idle node writes nothing.
/// Rejected: a wake-up per commit (one fsync per batch under load) and a fixed 1 s period
/// (up to a second of acked lines shipped again after a SIGKILL).
fn checkpoint_loop(shared: &tail::Shared, stop: &CheckpointStop, interval: Duration) {
    let mut stopped = stop.stopped.lock().expect("checkpoint stop lock poisoned");
    loop {
        let (guard, _) = stop.cv.wait_timeout(stopped, interval).expect("checkpoint stop lock poisoned");
        stopped = guard;
        if *stopped {
            return;
        }
        drop(stopped);
        shared.write_checkpoint();
        stopped = stop.stopped.lock().expect("checkpoint stop lock poisoned");
    }
}

/// Runs a source thread; a panic (a broken invariant) ends the process instead of leaving vigil
/// up but silently not collecting. Nothing is lost: the checkpoint only holds delivered lines,
/// and the supervisor (the DaemonSet) restarts vigil.
fn fail_fast(what: &'static str, f: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        let error = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(%error, "{what} failed; exiting so that vigil is restarted from its checkpoint");
        std::process::exit(70);
    }
}
