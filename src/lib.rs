//! vigil: a Kubernetes node agent. Two pipelines share one process:
//! - logs: `logs` (discover → tail → parse → enrich) → `pipeline` (fan-out, acks, commits)
//!   → `sinks` → acknowledgements → `logs` checkpoints;
//! - metrics: `metrics::node` collectors and pipeline counters → `server` `/metrics`, and
//!   `metrics::ship` pushes the same registry to metrics sinks (remote write, Elasticsearch, OTLP).
//!
//! `app` wires both from a `config::Config`; `main.rs` is the CLI.

pub mod access;
pub mod app;
pub mod config;
pub mod event;
pub mod hash;
pub mod logs;
pub mod metrics;
pub mod pipeline;
pub mod primitives;
pub mod process;
pub mod reload;
pub mod server;
pub mod sinks;
