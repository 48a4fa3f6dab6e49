//! The stdout sink: one JSON object per event per line (the event contract), for debugging and
//! for `kubectl logs`-style collection.

use super::{RunFuture, Sink, SinkContext};
use crate::pipeline::{Acker, Chunk};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    pub name: String,
}

pub struct StdoutSink;

impl StdoutSink {
    pub fn build(_c: &StdoutConfig, _ctx: &SinkContext) -> Result<Box<dyn Sink>, super::Error> {
        Ok(Box::new(StdoutSink))
    }
}

impl Sink for StdoutSink {
    fn run(self: Box<Self>, mut input: mpsc::Receiver<Arc<Chunk>>, acker: Acker) -> RunFuture {
        Box::pin(async move {
            let mut buf = Vec::with_capacity(64 * 1024);
            while let Some(chunk) = input.recv().await {
                buf.clear();
                for e in &chunk.events {
                    e.write_json(&mut buf);
                }
                // Blocking write on a dedicated thread: stdout may be a slow pipe.
                let data = std::mem::take(&mut buf);
                buf = tokio::task::spawn_blocking(move || {
                    let mut out = std::io::stdout().lock();
                    if let Err(error) = out.write_all(&data).and_then(|_| out.flush()) {
                        tracing::warn!(%error, "stdout sink: write failed; events dropped");
                    }
                    data
                })
                .await
                .unwrap_or_default();
                acker.ack(chunk.id);
            }
        })
    }
}
