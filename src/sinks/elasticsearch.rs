//! The Elasticsearch sink (skeleton: the sinks issue implements `_bulk`).

use super::{RunFuture, Sink, SinkContext};
use crate::config::Problems;
use crate::pipeline::{Acker, Chunk};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    pub name: String,
    /// Base URL; `/_bulk` is appended, a path prefix and query string are kept.
    pub endpoint: String,
    /// Index name pattern with strftime-like date fields from the event's timestamp.
    #[serde(default = "default_index")]
    pub index: String,
}

fn default_index() -> String {
    "logs-vigil-%Y.%m.%d".into()
}

impl ElasticsearchConfig {
    pub fn validate(&self, path: &str, p: &mut Problems) {
        p.url(format!("{path}.endpoint"), &self.endpoint);
    }
}

pub struct ElasticsearchSink;

impl ElasticsearchSink {
    pub fn build(c: &ElasticsearchConfig, _ctx: &SinkContext) -> Result<Box<dyn Sink>, super::Error> {
        Err(super::Error::Build {
            name: c.name.clone(),
            message: "the elasticsearch sink is not implemented yet".into(),
        })
    }
}

impl Sink for ElasticsearchSink {
    fn run(self: Box<Self>, _input: mpsc::Receiver<Arc<Chunk>>, _acker: Acker) -> RunFuture {
        Box::pin(async {})
    }
}
