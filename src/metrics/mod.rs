//! Metrics: vigil's own (`agent`) and the node's (`node`), all in one `prometheus::Registry`
//! that is passed explicitly (no global registry); `ship` pushes that registry to sinks.

pub mod agent;
pub mod node;
pub mod process;
pub mod ship;
