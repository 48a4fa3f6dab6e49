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

/// Most chunks coalesced into one write.
const MAX_COALESCED: usize = 16;

impl Sink for StdoutSink {
    fn run(self: Box<Self>, mut input: mpsc::Receiver<Arc<Chunk>>, acker: Acker) -> RunFuture {
        Box::pin(async move {
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
                let (data, chunks) = tokio::task::spawn_blocking(move || {
                    let mut data = data;
                    data.clear();
                    for c in &chunks {
                        for e in &c.events {
                            e.write_json(&mut data);
                        }
                    }
                    let mut out = std::io::stdout().lock();
                    if let Err(error) = out.write_all(&data).and_then(|_| out.flush()) {
                        tracing::warn!(%error, "stdout sink: write failed; events dropped");
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
