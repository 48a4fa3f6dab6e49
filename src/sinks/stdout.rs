//! The stdout sink: one JSON object per event per line (the event contract), for debugging and
//! for `kubectl logs`-style collection.

use super::metrics::SinkMetrics;
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
    /// Which lines this sink takes: the selectors of a transform's `when:` (namespace, pod,
    /// container, labels, stream, level, message). Default: every line.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub route: Option<crate::process::select::SelectorConfig>,
}

pub struct StdoutSink {
    metrics: SinkMetrics,
}

impl StdoutSink {
    pub fn build(c: &StdoutConfig, ctx: &SinkContext) -> Result<Box<dyn Sink>, super::Error> {
        Ok(Box::new(StdoutSink { metrics: ctx.sink_metrics(&c.name).with_rejection_reasons(&["stdout_write_failed"]) }))
    }
}

/// Most chunks coalesced into one write.
const MAX_COALESCED: usize = 16;

impl Sink for StdoutSink {
    fn run(self: Box<Self>, mut input: mpsc::Receiver<Arc<Chunk>>, acker: Acker) -> RunFuture {
        Box::pin(async move {
            let metrics = self.metrics;
            let mut buf = Vec::with_capacity(64 * 1024);
            while let Some(first) = input.recv().await {
                // Chunks already waiting go out in the same write (one syscall, one thread hop).
                let mut chunks = vec![first];
                while chunks.len() < MAX_COALESCED {
                    match input.try_recv() {
                        Ok(c) => chunks.push(c),
                        Err(_) => break,
                    }
                }
                // Blocking write on a dedicated thread: stdout may be a slow pipe.
                let data = std::mem::take(&mut buf);
                let metrics = metrics.clone();
                let (data, chunks) = tokio::task::spawn_blocking(move || {
                    let mut data = data;
                    data.clear();
                    for c in &chunks {
                        for e in &c.events {
                            e.write_json(&mut data);
                        }
                    }
                    let mut out = std::io::stdout().lock();
                    let events: usize = chunks.iter().map(|c| c.events.len()).sum();
                    match out.write_all(&data).and_then(|_| out.flush()) {
                        Ok(()) => {
                            metrics.events_sent.inc_by(events as u64);
                            metrics.bytes_sent.inc_by(data.len() as u64);
                            metrics.success();
                        }
                        Err(error) => {
                            // stdout is for debugging: a closed pipe must not wedge checkpoints.
                            metrics.rejected("stdout_write_failed", events as u64, &error.to_string());
                        }
                    }
                    (data, chunks)
                })
                .await
                .expect("stdout writer does not panic");
                buf = data;
                if buf.capacity() > 8 << 20 {
                    buf = Vec::with_capacity(64 * 1024);
                }
                for c in chunks {
                    acker.ack(c.id);
                }
            }
        })
    }
}
