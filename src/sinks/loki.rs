//! The Loki sink (skeleton: the sinks issue implements the push).

use super::{RunFuture, Sink, SinkContext};
use crate::config::{Problems, Secret};
use crate::pipeline::{Acker, Chunk};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LokiConfig {
    pub name: String,
    /// Loki's base URL; `/loki/api/v1/push` is appended.
    pub endpoint: String,
    /// Sent as `X-Scope-OrgID` when not empty.
    #[serde(default)]
    pub tenant_id: Secret,
}

impl LokiConfig {
    pub fn validate(&self, path: &str, p: &mut Problems) {
        p.url(format!("{path}.endpoint"), &self.endpoint);
    }
}

pub struct LokiSink;

impl LokiSink {
    pub fn build(c: &LokiConfig, _ctx: &SinkContext) -> Result<Box<dyn Sink>, super::Error> {
        Err(super::Error::Build { name: c.name.clone(), message: "the loki sink is not implemented yet".into() })
    }
}

impl Sink for LokiSink {
    fn run(self: Box<Self>, _input: mpsc::Receiver<Arc<Chunk>>, _acker: Acker) -> RunFuture {
        Box::pin(async {})
    }
}
