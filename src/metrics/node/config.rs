//! `metrics.node`: which node collectors run, and where the node's /proc, /sys and / are.

use crate::config::Problems;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeMetricsConfig {
    /// Export node metrics at all. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The node's root filesystem as vigil sees it, as node_exporter's --path.rootfs. In a pod
    /// with the node's / mounted at /host, set /host. Default /.
    #[serde(default = "default_root")]
    pub rootfs: String,
}

fn yes() -> bool {
    true
}
fn default_root() -> String {
    "/".into()
}

impl Default for NodeMetricsConfig {
    fn default() -> Self {
        Self { enabled: true, rootfs: default_root() }
    }
}

impl NodeMetricsConfig {
    pub fn validate(&self, path: &str, p: &mut Problems) {
        if !self.rootfs.starts_with('/') {
            p.push(
                format!("{path}.rootfs"),
                format!("'{}' is relative; expected an absolute path such as /host", self.rootfs),
            );
        }
    }
}
