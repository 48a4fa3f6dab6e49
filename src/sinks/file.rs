//! The file sink: appends the event contract's NDJSON to a file.
//! (Skeleton: the collection issue makes it fsync before acking; the sinks issue adds rotation.)

use super::{RunFuture, Sink, SinkContext};
use crate::config::Problems;
use crate::pipeline::{Acker, Chunk};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub name: String,
    /// File to append to.
    pub path: String,
}

impl FileConfig {
    pub fn validate(&self, path: &str, p: &mut Problems) {
        if self.path.is_empty() {
            p.push(format!("{path}.path"), "is empty; expected a file path, e.g. /tmp/vigil-events.ndjson");
        }
    }
}

pub struct FileSink {
    path: String,
}

impl FileSink {
    pub fn build(c: &FileConfig, _ctx: &SinkContext) -> Result<Box<dyn Sink>, super::Error> {
        Ok(Box::new(FileSink { path: c.path.clone() }))
    }
}

impl Sink for FileSink {
    fn run(self: Box<Self>, mut input: mpsc::Receiver<Arc<Chunk>>, acker: Acker) -> RunFuture {
        Box::pin(async move {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).ok();
            while let Some(chunk) = input.recv().await {
                let mut buf = Vec::new();
                for e in &chunk.events {
                    e.write_json(&mut buf);
                }
                if let Some(f) = f.as_mut() {
                    let _ = f.write_all(&buf).and_then(|_| f.sync_data());
                }
                acker.ack(chunk.id);
            }
        })
    }
}
