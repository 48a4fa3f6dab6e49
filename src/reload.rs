//! Config reload: on SIGHUP or when the config file changes, load and validate the new config
//! completely, then apply what can change live and report the rest as "needs restart".
//!
//! Key decisions:
//! - The file is watched through its *directory* (inotify on the parent, not the file's inode):
//!   a Kubernetes ConfigMap volume updates by writing a new timestamped directory, pointing a
//!   `..data_tmp` symlink at it and renaming that over `..data` (kubelet's atomic writer), so
//!   the inode of `vigil.yaml` (a symlink through `..data`) never changes and a watch on it
//!   would never fire. Events are debounced (`DEBOUNCE`) and a file whose text did not change
//!   is not reloaded, so one swap (several events) is one reload.
//! - All or nothing for what is live: a reload whose config does not load, validate, or whose
//!   new sinks cannot be built changes nothing (`vigil_config_reload_total{result="failure"}`,
//!   `vigil_config_last_reload_successful` 0, every problem logged with its path).
//! - Live: the log sinks (added, removed, changed: see `pipeline::SinkSet` and `App::apply`),
//!   `sources.containers.include`/`exclude` (next scan) and `shutdown.grace_period`. Everything
//!   else that differs (found by comparing the effective configs, so a key added later is
//!   "needs restart" until someone makes it live) is logged as "needs restart" with its path,
//!   not applied, and flagged by `vigil_config_needs_restart`; the running config keeps its
//!   old value, so reverting the change clears the flag. Rejected: restarting parts in-process
//!   (the `/metrics` listener, the checkpoint directory, the tailer's settings): each holds
//!   state whose hand-over is riskier than the rollout restart it would save.

use crate::app::App;
use crate::config::{self, Config};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Quiet time after the last change event before reloading: the kubelet's swap is several
/// events within a few milliseconds; an editor's save a few more.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// `vigil_config_reload_total{result}`, `vigil_config_last_reload_successful`,
/// `vigil_config_needs_restart`.
#[derive(Clone)]
pub struct ReloadMetrics {
    total: IntCounterVec,
    last_successful: IntGauge,
    needs_restart: IntGauge,
}

impl ReloadMetrics {
    /// Registers the series, initialised (both results at 0, last reload successful: the
    /// config vigil started with loaded).
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let total = IntCounterVec::new(
            Opts::new("vigil_config_reload_total", "Config reloads (SIGHUP or file change), by result."),
            &["result"],
        )?;
        let last_successful = IntGauge::new(
            "vigil_config_last_reload_successful",
            "1 if the last config reload succeeded (or none was tried), 0 if it failed and the old config runs.",
        )?;
        let needs_restart = IntGauge::new(
            "vigil_config_needs_restart",
            "1 if the config file has valid changes that were not applied because they need a restart.",
        )?;
        registry.register(Box::new(total.clone()))?;
        registry.register(Box::new(last_successful.clone()))?;
        registry.register(Box::new(needs_restart.clone()))?;
        total.with_label_values(&["success"]);
        total.with_label_values(&["failure"]);
        last_successful.set(1);
        Ok(Self { total, last_successful, needs_restart })
    }
}

/// The sinks' entries as written (after `${VAR}` expansion), by name: how a change of any key,
/// secrets included, is noticed (the effective config masks secrets when serialized).
pub type RawSinks = BTreeMap<String, Value>;

/// `sinks:` of a config text, by name. Empty when absent or unreadable (only called on text
/// that loaded).
pub fn raw_sinks(text: &str, env: &dyn Fn(&str) -> Option<String>) -> RawSinks {
    let Ok(expanded) = config::expand::expand(text, env) else { return RawSinks::new() };
    let Ok(value) = serde_yaml_ng::from_str::<Value>(&expanded) else { return RawSinks::new() };
    let Some(Value::Sequence(sinks)) = value.get("sinks") else { return RawSinks::new() };
    sinks.iter().filter_map(|s| Some((s.get("name")?.as_str()?.to_string(), s.clone()))).collect()
}

/// What a valid new config changes.
#[derive(Debug, Default)]
pub struct Plan {
    /// Log sinks (by name) to start, to drain and remove, to replace (drain the old, start the new).
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// `sources.containers.include`/`exclude` differ.
    pub globs: bool,
    /// `(field path, why)` of each change that is not applied.
    pub needs_restart: Vec<(String, String)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.globs
            && self.needs_restart.is_empty()
    }
}

/// The config that runs: the one vigil started with, with the live parts of each applied
/// reload.
pub struct Running {
    pub config: Config,
    pub sinks: RawSinks,
    /// The sinks as they were at start: the metrics shipper is not reloaded.
    pub shipped: RawSinks,
}

/// Compares the running config with a valid new one.
pub fn plan(running: &Running, new: &Config, new_sinks: &RawSinks) -> Plan {
    let old = &running.config;
    let mut plan = Plan::default();
    let log_sinks = |c: &Config| -> Vec<String> {
        c.sinks.iter().filter(|s| s.carries_logs()).map(|s| s.name().to_string()).collect()
    };
    let (old_logs, new_logs) = (log_sinks(old), log_sinks(new));
    if old_logs.is_empty() != new_logs.is_empty() {
        // With no log sink, no log is read at all (see `app`): starting or stopping the
        // source is a restart.
        plan.needs_restart.push((
            "sinks".into(),
            "whether any sink carries logs decides whether container logs are read at all".into(),
        ));
    } else {
        for name in &new_logs {
            if !old_logs.contains(name) {
                plan.added.push(name.clone());
            } else if running.sinks.get(name) != new_sinks.get(name) {
                plan.changed.push(name.clone());
            }
        }
        plan.removed = old_logs.into_iter().filter(|n| !new_logs.contains(n)).collect();
    }
    let (oc, nc) = (&old.sources.containers, &new.sources.containers);
    plan.globs = oc.include != nc.include || oc.exclude != nc.exclude;
    for name in &old.metrics.ship.sinks {
        if running.shipped.get(name) != new_sinks.get(name) {
            plan.needs_restart
                .push((format!("sinks[name={name}]"), "metrics shipping to this sink keeps its old settings".into()));
        }
    }
    let mut a = serde_yaml_ng::to_value(old).expect("config serializes");
    let mut b = serde_yaml_ng::to_value(new).expect("config serializes");
    for v in [&mut a, &mut b] {
        // Live, handled above.
        if let Value::Mapping(m) = v {
            m.remove("sinks");
        }
        for (section, key) in [("sources", "include"), ("sources", "exclude"), ("shutdown", "grace_period")] {
            let parent = if section == "sources" {
                v.get_mut("sources").and_then(|s| s.get_mut("containers"))
            } else {
                v.get_mut(section)
            };
            if let Some(Value::Mapping(m)) = parent {
                m.remove(key);
            }
        }
    }
    diff("", &a, &b, &mut |path| {
        plan.needs_restart.push((path, "cannot change while vigil runs".into()));
    });
    plan
}

/// Calls `changed` with the path of every leaf (or list) that differs.
fn diff(path: &str, a: &Value, b: &Value, changed: &mut dyn FnMut(String)) {
    match (a, b) {
        (Value::Mapping(x), Value::Mapping(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let name = k.as_str().map(str::to_string).unwrap_or_else(|| format!("{k:?}"));
                let at = if path.is_empty() { name } else { format!("{path}.{name}") };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => diff(&at, u, v, changed),
                    _ => changed(at),
                }
            }
        }
        _ if a != b => changed(path.to_string()),
        _ => {}
    }
}

/// Why a reload was tried (a log field).
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    Sighup,
    FileChanged,
}

/// Reloads the config file into a running `App`.
pub struct Reloader {
    path: Option<PathBuf>,
    env: fn(&str) -> Option<String>,
    /// The text last loaded (a file event with the same text is not a reload).
    text: String,
    running: Running,
    metrics: ReloadMetrics,
}

impl Reloader {
    /// `config` is what `App::start` got, loaded from `text`, the contents of `path` (None: the
    /// embedded default).
    pub fn new(
        path: Option<PathBuf>,
        text: String,
        config: Config,
        env: fn(&str) -> Option<String>,
        metrics: ReloadMetrics,
    ) -> Self {
        let sinks = raw_sinks(&text, &env);
        Self { path, env, text, running: Running { config, shipped: sinks.clone(), sinks }, metrics }
    }

    /// The config file (None: the embedded default, nothing to watch).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Loads, validates and applies the config file. On a file event, an unchanged text is
    /// ignored; SIGHUP always reloads.
    pub async fn reload(&mut self, app: &mut App, trigger: Trigger) {
        let Some(path) = self.path.clone() else {
            tracing::info!(?trigger, "running the embedded default config: nothing to reload");
            return;
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(error) => {
                self.failed(&path, trigger, &[format!("cannot read config file: {error}")]);
                return;
            }
        };
        if matches!(trigger, Trigger::FileChanged) && text == self.text {
            tracing::debug!(path = %path.display(), "config file event without a change");
            return;
        }
        let new = match Config::from_yaml(&text, &self.env) {
            Ok(c) => c,
            Err(config::Error::Invalid(problems)) => {
                self.text = text;
                self.failed(&path, trigger, &problems);
                return;
            }
            Err(e) => {
                self.failed(&path, trigger, &[e.to_string()]);
                return;
            }
        };
        self.text = text;
        let new_sinks = raw_sinks(&self.text, &self.env);
        let plan = plan(&self.running, &new, &new_sinks);
        if let Err(problems) = app.apply(&plan, &new).await {
            self.failed(&path, trigger, &problems);
            return;
        }
        for (field, why) in &plan.needs_restart {
            tracing::warn!(path = %path.display(), field = %field, "config change needs restart; not applied: {why}");
        }
        // The running config takes the live parts; the rest keeps its running value.
        let r = &mut self.running;
        if !plan.needs_restart.iter().any(|(f, _)| f == "sinks") {
            r.config.sinks = new.sinks.clone();
            r.sinks = new_sinks;
        }
        r.config.sources.containers.include = new.sources.containers.include.clone();
        r.config.sources.containers.exclude = new.sources.containers.exclude.clone();
        r.config.shutdown.grace_period = new.shutdown.grace_period;
        self.metrics.total.with_label_values(&["success"]).inc();
        self.metrics.last_successful.set(1);
        self.metrics.needs_restart.set(!plan.needs_restart.is_empty() as i64);
        tracing::info!(
            path = %path.display(), ?trigger,
            added = ?plan.added, removed = ?plan.removed, changed = ?plan.changed, globs = plan.globs,
            needs_restart = plan.needs_restart.len(),
            "config reloaded"
        );
    }

    fn failed(&self, path: &Path, trigger: Trigger, problems: &[String]) {
        for error in problems {
            tracing::warn!(path = %path.display(), %error, ?trigger, "config reload rejected; the running config stays");
        }
        self.metrics.total.with_label_values(&["failure"]).inc();
        self.metrics.last_successful.set(0);
    }
}

/// Watches the directory of the config file; each change in it sends a hint (bounded, a full
/// channel already means "reload"). None (logged) when inotify is unavailable: SIGHUP still
/// works.
pub fn watch(path: &Path) -> Option<(notify::RecommendedWatcher, mpsc::Receiver<()>)> {
    use notify::Watcher as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tx, rx) = mpsc::channel(1);
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && matches!(ev.kind, notify::EventKind::Access(_))
        {
            return;
        }
        let _ = tx.try_send(());
    };
    let mut w = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(error) => {
            tracing::warn!(path = %dir.display(), %error, "cannot watch the config directory; reload with SIGHUP");
            return None;
        }
    };
    if let Err(error) = w.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(path = %dir.display(), %error, "cannot watch the config directory; reload with SIGHUP");
        return None;
    }
    Some((w, rx))
}

/// Longest wait after the first hint, for a directory that never goes quiet (e.g. vigil's own
/// stderr redirected next to its config).
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(2);

/// Waits for the first hint, then until `DEBOUNCE` passes without another (at most
/// `DEBOUNCE_MAX`). None when the watcher is gone.
pub async fn changed(rx: &mut mpsc::Receiver<()>) -> Option<()> {
    rx.recv().await?;
    let latest = tokio::time::Instant::now() + DEBOUNCE_MAX;
    loop {
        let quiet = (tokio::time::Instant::now() + DEBOUNCE).min(latest);
        match tokio::time::timeout_at(quiet, rx.recv()).await {
            Ok(Some(())) if tokio::time::Instant::now() < latest => continue,
            _ => return Some(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> (Config, RawSinks) {
        let env = |_: &str| None;
        (Config::from_yaml(yaml, &env).unwrap(), raw_sinks(yaml, &env))
    }

    const BASE: &str = "
node_name: n
sources: {containers: {include: ['/x/*.log'], checkpoint_dir: /tmp/cp}}
sinks:
  - {name: out, type: stdout}
  - {name: f, type: file, path: /tmp/a.jsonl}
";

    fn running(yaml: &str) -> Running {
        let (config, sinks) = load(yaml);
        Running { config, shipped: sinks.clone(), sinks }
    }

    /// One event waits for quiet; a directory that never goes quiet still reloads.
    #[tokio::test]
    async fn changes_are_debounced_but_a_stream_of_events_still_reloads() {
        let (tx, mut rx) = mpsc::channel(1);
        let start = tokio::time::Instant::now();
        tx.send(()).await.unwrap();
        assert_eq!(changed(&mut rx).await, Some(()));
        assert!(start.elapsed() >= DEBOUNCE, "returned before the quiet time");
        let stream = tokio::spawn(async move {
            while tx.send(()).await.is_ok() {
                tokio::time::sleep(DEBOUNCE / 4).await;
            }
        });
        let got = tokio::time::timeout(Duration::from_secs(60), changed(&mut rx)).await;
        assert_eq!(got, Ok(Some(())), "a never-quiet directory must not postpone the reload for ever");
        stream.abort();
    }

    #[test]
    fn the_same_config_plans_nothing() {
        let (c, s) = load(BASE);
        assert!(plan(&running(BASE), &c, &s).is_empty());
    }

    #[test]
    fn sinks_added_removed_changed_and_globs_are_live() {
        let new = "
node_name: n
sources: {containers: {include: ['/y/*.log'], exclude: ['/y/skip*'], checkpoint_dir: /tmp/cp}}
sinks:
  - {name: f, type: file, path: /tmp/b.jsonl}
  - {name: loki, type: loki, endpoint: 'http://127.0.0.1:3100'}
shutdown: {grace_period: 3s}
";
        let (c, s) = load(new);
        let p = plan(&running(BASE), &c, &s);
        assert_eq!(p.added, ["loki"]);
        assert_eq!(p.removed, ["out"]);
        assert_eq!(p.changed, ["f"]);
        assert!(p.globs);
        assert!(p.needs_restart.is_empty(), "{:?}", p.needs_restart);
    }

    #[test]
    fn listen_and_checkpoint_dir_need_restart_by_path() {
        let new = BASE.replace("/tmp/cp", "/tmp/cp2") + "metrics: {listen: '127.0.0.1:9999'}\n";
        let (c, s) = load(&new);
        let p = plan(&running(BASE), &c, &s);
        let fields: Vec<&str> = p.needs_restart.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["sources.containers.checkpoint_dir", "metrics.listen"]);
        assert!(p.added.is_empty() && p.changed.is_empty() && !p.globs);
    }

    #[test]
    fn a_shipped_sink_changes_live_for_logs_and_needs_restart_for_metrics() {
        let with = |host: &str| {
            format!(
                "sinks:\n  - {{name: es, type: elasticsearch, endpoint: 'http://{host}:9200'}}\nmetrics: {{ship: {{sinks: [es]}}}}\n"
            )
        };
        let (c, s) = load(&with("b"));
        let p = plan(&running(&with("a")), &c, &s);
        assert_eq!(p.changed, ["es"]);
        let fields: Vec<&str> = p.needs_restart.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["sinks[name=es]"]);
    }

    #[test]
    fn going_from_log_sinks_to_none_needs_restart_and_changes_no_sink() {
        let none = "
sinks:
  - {name: rw, type: prometheus_remote_write, endpoint: 'http://127.0.0.1:9090/api/v1/write'}
metrics: {ship: {sinks: [rw]}}
";
        let (c, s) = load(none);
        let p = plan(&running(BASE), &c, &s);
        assert!(p.added.is_empty() && p.removed.is_empty() && p.changed.is_empty());
        assert!(p.needs_restart.iter().any(|(f, _)| f == "sinks"), "{:?}", p.needs_restart);
        assert!(p.needs_restart.iter().any(|(f, _)| f == "metrics.ship.sinks"), "{:?}", p.needs_restart);
    }

    #[test]
    fn a_changed_secret_is_a_changed_sink() {
        let with = |pw: &str| {
            format!(
                "sinks:\n  - {{name: l, type: loki, endpoint: 'http://127.0.0.1:1', auth: {{username: u, password: {pw}}}}}\n"
            )
        };
        let (c, s) = load(&with("two"));
        let p = plan(&running(&with("one")), &c, &s);
        assert_eq!(p.changed, ["l"]);
    }
}
