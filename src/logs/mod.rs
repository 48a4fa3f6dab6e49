//! Container log collection: discover → tail → parse → enrich, producing `pipeline::SourceBatch`es.
//! (Skeleton: the collection issue fills this in.)

pub mod config;

use crate::pipeline::{Committed, SourceBatch};
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("checkpoint directory {path}: {error}")]
    CheckpointDir { path: String, error: std::io::Error },
}

/// The running log source.
pub struct LogSource {
    out: Option<mpsc::Sender<SourceBatch>>,
}

impl LogSource {
    /// Starts discovery and tailing; batches go to `out`; `committed` says what is delivered.
    pub fn start(
        _config: &config::ContainersConfig,
        _node: Arc<str>,
        _registry: &prometheus::Registry,
        out: mpsc::Sender<SourceBatch>,
        _committed: Arc<Committed>,
    ) -> Result<Self, Error> {
        Ok(Self { out: Some(out) })
    }

    /// Stops reading: no new batches; the output channel closes.
    pub async fn stop_intake(&mut self) {
        self.out = None;
    }

    /// Writes the final checkpoint (after the pipeline has drained).
    pub async fn finish(self) {}
}
