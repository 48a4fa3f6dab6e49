//! Node metrics, node_exporter compatible (skeleton: the node-metrics issue adds collectors).

pub mod config;
