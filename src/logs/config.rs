//! `sources.containers`: which container log files to tail and how.

use crate::config::Problems;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainersConfig {
    /// Globs of log files to tail. Default: CRI logs under /var/log/pods and docker json-file
    /// logs under /var/lib/docker/containers. `/var/log/containers/*.log` symlinks may be listed
    /// too: a file reached by two paths is read once.
    #[serde(default = "default_include")]
    pub include: Vec<String>,
    /// Globs of files never to tail, even when `include` matches. Default none.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where to start in a file that has no checkpoint: `beginning` (default: nothing already
    /// written is lost when vigil is installed on a running node) or `end`.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// Directory for the offsets checkpoint. Default /var/lib/vigil (a hostPath in Kubernetes,
    /// so offsets survive pod restarts).
    #[serde(default = "default_checkpoint_dir")]
    pub checkpoint_dir: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

impl Default for ContainersConfig {
    fn default() -> Self {
        Self {
            include: default_include(),
            exclude: Vec::new(),
            read_from: ReadFrom::Beginning,
            checkpoint_dir: default_checkpoint_dir(),
        }
    }
}

fn default_include() -> Vec<String> {
    vec!["/var/log/pods/*/*/*.log".into(), "/var/lib/docker/containers/*/*-json.log".into()]
}
fn default_checkpoint_dir() -> String {
    "/var/lib/vigil".into()
}

impl ContainersConfig {
    pub fn validate(&self, path: &str, p: &mut Problems) {
        for (field, globs) in [("include", &self.include), ("exclude", &self.exclude)] {
            for (i, g) in globs.iter().enumerate() {
                if let Err(e) = globset::Glob::new(g) {
                    p.push(
                        format!("{path}.{field}[{i}]"),
                        format!("'{g}' is not a glob ({e}); expected e.g. /var/log/pods/*/*/*.log"),
                    );
                }
            }
        }
        if self.checkpoint_dir.is_empty() {
            p.push(format!("{path}.checkpoint_dir"), "is empty; expected a writable directory, e.g. /var/lib/vigil");
        }
    }
}
