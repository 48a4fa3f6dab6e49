//! The configuration: one YAML file, `${VAR}`-expanded, parsed into typed structs, validated.
//!
//! Key decision: serde does the shape (types, unknown keys: first error wins, with its path via
//! serde_path_to_error), then `validate` walks the typed config and collects *every* semantic
//! problem with its field path, the bad value and the fix. Each module owns the config struct
//! of its own part (`logs::config`, `sinks::*`, `metrics::node::config`); this module only
//! assembles them. Keys are a user contract: add, never rename.

use serde::{Deserialize, Serialize};
use std::path::Path;

// The primitives live in the leaf module `crate::primitives`; these re-exports keep every
// `crate::config::{Problems, Secret, units, expand, ...}` import working.
pub use crate::primitives::units::{ByteSize, HumanDuration};
pub use crate::primitives::{Problems, Secret, expand, units};

use crate::logs::config::ContainersConfig;
use crate::metrics::node::config::NodeMetricsConfig;
use crate::metrics::ship::ShipConfig;
use crate::sinks::SinkConfig;

/// The embedded default: what `vigil run` uses without `--config`. Standard node paths, a
/// stdout sink, metrics on 0.0.0.0:9102.
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("invalid config:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The node's name, stamped on every event and series. Default: empty, meaning the host
    /// name. In Kubernetes set it from the downward API: `${NODE_NAME:-}`.
    #[serde(default)]
    pub node_name: String,
    #[serde(default)]
    pub sources: SourcesConfig,
    /// The sinks, each with a unique `name` and a `type`. Default: one stdout sink.
    #[serde(default = "default_sinks")]
    pub sinks: Vec<SinkConfig>,
    /// Steps applied in order to every line before the sinks: drop, redact, sample,
    /// rate_limit, each with a unique `name` and an optional `when:`. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<crate::process::transform::TransformConfig>,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesConfig {
    #[serde(default)]
    pub containers: ContainersConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP server for /metrics, /healthz and /readyz. Default 0.0.0.0:9102.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Node metrics collectors (node_exporter compatible).
    #[serde(default)]
    pub node: NodeMetricsConfig,
    /// Pushing the same metrics to sinks (Prometheus remote write, Elasticsearch). Default: off.
    #[serde(default)]
    pub ship: ShipConfig,
    /// Serve over HTTPS: `{cert_file, key_file, client_ca_file}`, files re-read when they
    /// change. Default off (plain HTTP). See README "Protecting /metrics".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::access::ServerTlsConfig>,
    /// Require credentials on `/metrics`: `{basic: {username, password_file}}` or
    /// `{bearer_token_file}`. `/healthz` and `/readyz` stay open. Default off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::access::ServerAuthConfig>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            node: NodeMetricsConfig::default(),
            ship: ShipConfig::default(),
            tls: None,
            auth: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// vigil's own log level: error, warn, info, debug, trace, or a tracing filter directive.
    /// `RUST_LOG`, when set, wins. Default info.
    #[serde(default = "default_level")]
    pub level: String,
    /// `text` for people, `json` for log pipelines. Default text.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: default_level(), format: LogFormat::Text }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long SIGTERM/SIGINT may take to flush sinks and write checkpoints before vigil exits
    /// anyway. Default 25s: under Kubernetes' default terminationGracePeriodSeconds of 30.
    #[serde(default = "default_grace")]
    pub grace_period: HumanDuration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace_period: default_grace() }
    }
}

fn default_listen() -> String {
    "0.0.0.0:9102".into()
}
fn default_level() -> String {
    "info".into()
}
fn default_grace() -> HumanDuration {
    HumanDuration::secs(25)
}
fn default_sinks() -> Vec<SinkConfig> {
    vec![SinkConfig::Stdout(crate::sinks::stdout::StdoutConfig { name: "stdout".into(), route: None })]
}

impl Config {
    /// Loads from a file, or the embedded default when `path` is None.
    pub fn load(path: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let text = match path {
            Some(p) => {
                std::fs::read_to_string(p).map_err(|error| Error::Read { path: p.display().to_string(), error })?
            }
            None => DEFAULT_CONFIG.to_string(),
        };
        Self::from_yaml(&text, env)
    }

    /// Expands, parses and validates YAML text.
    pub fn from_yaml(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let expanded = expand::expand(text, env).map_err(Error::Invalid)?;
        let de = serde_yaml_ng::Deserializer::from_str(&expanded);
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            Error::Invalid(vec![shape_error(&path, &e.into_inner().to_string())])
        })?;
        let problems = config.validate();
        if !problems.0.is_empty() {
            return Err(Error::Invalid(problems.0));
        }
        if config.node_name.is_empty() {
            config.node_name = hostname();
        }
        Ok(config)
    }

    /// Every semantic problem at once.
    pub fn validate(&self) -> Problems {
        let mut p = Problems::default();
        if self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            p.push(
                "metrics.listen",
                format!("'{}' is not a socket address; expected host:port, e.g. 0.0.0.0:9102", self.metrics.listen),
            );
        }
        if !valid_log_level(&self.log.level) {
            p.push(
                "log.level",
                format!("'{}' is not a log level; expected error, warn, info, debug or trace", self.log.level),
            );
        }
        self.sources.containers.validate("sources.containers", &mut p);
        self.metrics.node.validate("metrics.node", &mut p);
        if let Some(t) = &self.metrics.tls {
            t.validate("metrics.tls", &mut p);
        }
        if let Some(a) = &self.metrics.auth {
            a.validate("metrics.auth", &mut p);
        }
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.transforms.iter().enumerate() {
            let path = format!("transforms[{i}]");
            if !names.insert(t.name()) {
                p.push(
                    format!("{path}.name"),
                    format!("'{}' is used by another transform; names must be unique", t.name()),
                );
            }
            t.validate(&path, &mut p);
        }
        if self.sinks.is_empty() {
            p.push("sinks", "no sink configured; add at least one, e.g. {name: stdout, type: stdout}");
        }
        let mut seen = std::collections::HashSet::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            let path = format!("sinks[{i}]");
            if sink.name().is_empty() {
                p.push(format!("{path}.name"), "is empty; every sink needs a unique name");
            } else if !seen.insert(sink.name()) {
                p.push(
                    format!("{path}.name"),
                    format!("'{}' is used by another sink; sink names must be unique", sink.name()),
                );
            }
            sink.validate(&path, &mut p);
            if !sink.carries_logs() && !self.metrics.ship.sinks.iter().any(|n| n == sink.name()) {
                p.push(
                    path,
                    format!(
                        "sink '{}' of type {} carries metrics only but is not listed under metrics.ship.sinks, so \
                         it would receive nothing; add it there",
                        sink.name(),
                        sink.kind()
                    ),
                );
            }
        }
        let kinds: Vec<(&str, &str, bool)> =
            self.sinks.iter().map(|s| (s.name(), s.kind(), s.carries_metrics())).collect();
        self.metrics.ship.validate("metrics.ship", &kinds, &mut p);
        p
    }

    /// The effective config as YAML, secrets masked: what `vigil validate` prints.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("config serializes: all fields are plain data")
    }
}

/// `path: message at line L column C`. serde_path_to_error knows the full path (down to the
/// field whose value is bad); serde_yaml_ng prefixes its message with the parent's path, which
/// is dropped so the path is said once.
fn shape_error(path: &str, inner: &str) -> String {
    let msg = match inner.split_once(": ") {
        Some((prefix, rest)) if !prefix.contains(' ') && path.starts_with(prefix) => rest,
        _ => inner,
    };
    if path.is_empty() || path == "." { msg.to_string() } else { format!("{path}: {msg}") }
}

/// A level name, or a tracing filter directive (`info,vigil::logs=debug`). A bare word must be a
/// level: tracing would read `loud` as a target name and silently log nothing.
fn valid_log_level(s: &str) -> bool {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    if s.contains(['=', ',']) {
        tracing_subscriber::EnvFilter::try_new(s).is_ok()
    } else {
        LEVELS.contains(&s.to_ascii_lowercase().as_str())
    }
}

/// The host name, for `node_name: ""`.
pub fn hostname() -> String {
    sysinfo::System::host_name().unwrap_or_else(|| "unknown".into())
}

/// The process environment; tests pass their own lookup instead.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
