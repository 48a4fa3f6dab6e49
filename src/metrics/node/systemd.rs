//! `systemd` (off by default, as upstream): `node_systemd_unit_state{name,state,type}`,
//! `node_systemd_units{state}`, `node_systemd_system_running`, `node_systemd_version{version}`,
//! `node_systemd_virtualization_info{virtualization_type}`,
//! `node_systemd_timer_last_trigger_seconds{name}` and `node_systemd_socket_*{name}`, asked of
//! systemd over the host's D-Bus system bus socket, as node_exporter's systemd collector.
//!
//! Key decision: D-Bus through zbus (the pure-Rust, maintained D-Bus crate; no libdbus/libsystemd
//! to link into a distroless image), default features off, on a current-thread Tokio runtime the
//! collector owns, one connection per scrape as upstream (systemd restarts, a bus that went away
//! and came back, need no reconnect logic). Rejected: shelling out to `systemctl` (not in the
//! image, and it would need the host's PID 1 namespace anyway); sd-bus via FFI (a C library to
//! ship). The opt-in upstream metrics are switched on as upstream's flags do:
//! `enable_start_time_metrics` → `node_systemd_unit_start_time_seconds{name}`,
//! `enable_task_metrics` → `node_systemd_unit_tasks_{current,max}{name}` (services; a value of
//! u64::MAX, systemd's "no limit / not counted", is left out), `enable_restarts_metrics` →
//! `node_systemd_service_restart_total{name}` (services; NRestarts, systemd ≥ 235).
//!
//! The bus socket is `<rootfs>/run/dbus/system_bus_socket` unless `systemd.bus_socket` says
//! otherwise; when it is missing (the pod does not mount the node's /run/dbus), the collector is
//! switched off at start with an error saying what to mount, instead of failing every scrape.

use super::config::SystemdConfig;
use super::{Collect, Error, Family, Paths, Scrape};
use regex::Regex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use zbus::OwnedVariant as OwnedValue;

const DEST: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
/// The unit states node_exporter reports, one series each per unit.
const STATES: [&str; 5] = ["active", "activating", "deactivating", "inactive", "failed"];
/// systemd 212 added SystemState and the timers' LastTriggerUSec.
const MIN_VERSION_SYSTEM_STATE: f64 = 212.0;
/// A scrape waits at most this long for systemd.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One row of `ListUnits`: name, description, load state, active state, sub state, followed,
/// object path, job id, job type, job path.
type UnitRow =
    (String, String, String, String, String, String, zbus::OwnedObjectPath, u32, String, zbus::OwnedObjectPath);

/// A unit as ListUnits reports it.
#[derive(Debug, Clone)]
pub(super) struct Unit {
    pub name: String,
    pub load_state: String,
    pub active_state: String,
    pub path: String,
}

/// What one scrape learned from systemd; `families` turns it into metrics.
#[derive(Debug, Default)]
pub(super) struct Answer {
    /// The Manager's Version property, e.g. `252.33-1~deb12u1`.
    pub version: String,
    /// Virtualization; None when the property could not be read.
    pub virtualization: Option<String>,
    pub system_state: Option<String>,
    pub units: Vec<Unit>,
    /// Service.Type / Mount.Type by unit name.
    pub types: HashMap<String, String>,
    /// (timer, LastTriggerUSec).
    pub timers: Vec<(String, u64)>,
    /// (socket, NAccepted, NConnections, NRefused when systemd has it).
    pub sockets: Vec<(String, u32, u32, Option<u32>)>,
    /// Opt-in: (unit, ActiveEnterTimestamp in µs; 0 when not active).
    pub start_times: Vec<(String, u64)>,
    /// Opt-in: (service, TasksCurrent, TasksMax), each None when unreadable or u64::MAX.
    pub tasks: Vec<(String, Option<u64>, Option<u64>)>,
    /// Opt-in: (service, NRestarts).
    pub restarts: Vec<(String, u32)>,
}

/// Which opt-in metrics to ask for.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct OptIn {
    pub start_time: bool,
    pub tasks: bool,
    pub restarts: bool,
}

pub(super) struct SystemdCollector {
    socket: PathBuf,
    include: Regex,
    exclude: Regex,
    opt_in: OptIn,
    rt: tokio::runtime::Runtime,
}

/// `^(?:re)$`, as upstream anchors its unit filters.
fn anchored(field: &str, re: &str) -> Result<Regex, Error> {
    Regex::new(&format!("^(?:{re})$")).map_err(|e| Error::Config(format!("{field}: '{re}' is not a regex: {e}")))
}

impl SystemdCollector {
    pub fn new(paths: &Paths, config: &SystemdConfig) -> Result<Self, Error> {
        let socket =
            config.bus_socket.as_deref().map(PathBuf::from).unwrap_or_else(|| paths.root("run/dbus/system_bus_socket"));
        if !socket.exists() {
            return Err(Error::Other(format!(
                "the D-Bus system bus socket {} does not exist; mount the node's /run/dbus (hostPath, read-only) \
                 under the rootfs, or set metrics.node.systemd.bus_socket, or turn collectors.systemd off",
                socket.display()
            )));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Other(format!("cannot start the systemd collector's runtime: {e}")))?;
        Ok(Self {
            socket,
            include: anchored("systemd.unit_include", &config.unit_include)?,
            exclude: anchored("systemd.unit_exclude", &config.unit_exclude)?,
            opt_in: OptIn {
                start_time: config.enable_start_time_metrics,
                tasks: config.enable_task_metrics,
                restarts: config.enable_restarts_metrics,
            },
            rt,
        })
    }

    fn wanted(&self, u: &Unit) -> bool {
        u.load_state == "loaded" && self.include.is_match(&u.name) && !self.exclude.is_match(&u.name)
    }

    async fn ask(&self) -> Result<Answer, String> {
        let address = format!("unix:path={}", self.socket.display());
        let conn = zbus::connection::Builder::address(address.as_str()).build().await.map_err(|e| e.to_string())?;
        let get = |path: String, iface: &'static str, prop: &'static str| {
            let conn = &conn;
            async move {
                let reply = conn
                    .call_method(Some(DEST), path.as_str(), Some(PROPERTIES), "Get", &(iface, prop))
                    .await
                    .map_err(|e| e.to_string())?;
                reply.body().deserialize::<OwnedValue>().map_err(|e| e.to_string())
            }
        };
        let text = |v: OwnedValue| String::try_from(v).map_err(|e| e.to_string());
        let mut a =
            Answer { version: text(get(MANAGER_PATH.into(), MANAGER, "Version").await?)?, ..Default::default() };
        a.virtualization = match get(MANAGER_PATH.into(), MANAGER, "Virtualization").await {
            Ok(v) => text(v).ok(),
            Err(_) => None,
        };
        if version_number(&a.version) >= MIN_VERSION_SYSTEM_STATE {
            a.system_state = Some(text(get(MANAGER_PATH.into(), MANAGER, "SystemState").await?)?);
        }
        let reply = conn
            .call_method(Some(DEST), MANAGER_PATH, Some(MANAGER), "ListUnits", &())
            .await
            .map_err(|e| format!("ListUnits: {e}"))?;
        let rows: Vec<UnitRow> = reply.body().deserialize().map_err(|e| format!("ListUnits: {e}"))?;
        a.units = rows
            .into_iter()
            .map(|r| Unit { name: r.0, load_state: r.2, active_state: r.3, path: r.6.as_str().to_string() })
            .collect();
        // Per-unit properties of the units reported, as upstream; one that cannot be read is
        // left out (upstream logs it at debug).
        for u in a.units.iter().filter(|u| self.wanted(u)) {
            let p = || u.path.clone();
            const UNIT: &str = "org.freedesktop.systemd1.Unit";
            const SERVICE: &str = "org.freedesktop.systemd1.Service";
            let u64_of = |v: Result<OwnedValue, String>| v.ok().and_then(|v| u64::try_from(v).ok());
            if self.opt_in.start_time {
                // As upstream: 0 for a unit that is not active, without asking.
                if u.active_state != "active" {
                    a.start_times.push((u.name.clone(), 0));
                } else if let Some(us) = u64_of(get(p(), UNIT, "ActiveEnterTimestamp").await) {
                    a.start_times.push((u.name.clone(), us));
                }
            }
            if u.name.ends_with(".service") {
                if self.opt_in.tasks {
                    let limited = |v: Option<u64>| v.filter(|&v| v != u64::MAX);
                    let current = limited(u64_of(get(p(), SERVICE, "TasksCurrent").await));
                    let max = limited(u64_of(get(p(), SERVICE, "TasksMax").await));
                    a.tasks.push((u.name.clone(), current, max));
                }
                if self.opt_in.restarts {
                    if let Some(n) = get(p(), SERVICE, "NRestarts").await.ok().and_then(|v| u32::try_from(v).ok()) {
                        a.restarts.push((u.name.clone(), n));
                    }
                }
            }
            if u.name.ends_with(".service") || u.name.ends_with(".mount") {
                let iface = if u.name.ends_with(".service") {
                    "org.freedesktop.systemd1.Service"
                } else {
                    "org.freedesktop.systemd1.Mount"
                };
                if let Ok(t) = get(p(), iface, "Type").await.and_then(text) {
                    a.types.insert(u.name.clone(), t);
                }
            } else if u.name.ends_with(".timer") && a.system_state.is_some() {
                if let Ok(v) = get(p(), "org.freedesktop.systemd1.Timer", "LastTriggerUSec").await {
                    if let Ok(us) = u64::try_from(v) {
                        a.timers.push((u.name.clone(), us));
                    }
                }
            } else if u.name.ends_with(".socket") {
                let n = |v: Result<OwnedValue, String>| v.ok().and_then(|v| u32::try_from(v).ok());
                const SOCKET: &str = "org.freedesktop.systemd1.Socket";
                let (Some(acc), Some(cur)) =
                    (n(get(p(), SOCKET, "NAccepted").await), n(get(p(), SOCKET, "NConnections").await))
                else {
                    continue;
                };
                a.sockets.push((u.name.clone(), acc, cur, n(get(p(), SOCKET, "NRefused").await)));
            }
        }
        Ok(a)
    }
}

/// `252.33-1~deb12u1` → 252.33, as upstream's `[0-9]{3,}(\.[0-9]+)?`; 0 when there is none.
fn version_number(v: &str) -> f64 {
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i - start >= 3 {
            let mut end = i;
            if end + 1 < b.len() && b[end] == b'.' && b[end + 1].is_ascii_digit() {
                end += 1;
                while end < b.len() && b[end].is_ascii_digit() {
                    end += 1;
                }
            }
            return v[start..end].parse().unwrap_or(0.0);
        }
        i += 1;
    }
    0.0
}

/// The metrics of one answer; `wanted` is the unit filter.
pub(super) fn families(a: &Answer, wanted: impl Fn(&Unit) -> bool, out: &mut Vec<Family>) {
    let version = version_number(&a.version);
    let mut f = Family::gauge("node_systemd_version", "Detected systemd version");
    f.push(&[("version", &a.version)], version);
    out.push(f.finish());
    let mut f = Family::gauge("node_systemd_virtualization_info", "Detected virtualization technology");
    let virt = match a.virtualization.as_deref() {
        None => "unknown",
        Some("") => "none",
        Some(v) => v,
    };
    f.push(&[("virtualization_type", virt)], 1.0);
    out.push(f.finish());
    // Summary over every unit, before filtering.
    let mut f = Family::gauge("node_systemd_units", "Summary of systemd unit states");
    for state in STATES {
        f.push(&[("state", state)], a.units.iter().filter(|u| u.active_state == state).count() as f64);
    }
    out.push(f.finish());
    let mut f = Family::gauge("node_systemd_unit_state", "Systemd unit");
    for u in a.units.iter().filter(|u| wanted(u)) {
        let kind = a.types.get(&u.name).map(String::as_str).unwrap_or("");
        for state in STATES {
            f.push(
                &[("name", &u.name), ("state", state), ("type", kind)],
                if u.active_state == state { 1.0 } else { 0.0 },
            );
        }
    }
    f.finish_into(out);
    let mut f = Family::gauge("node_systemd_timer_last_trigger_seconds", "Seconds since epoch of last trigger.");
    for (name, us) in &a.timers {
        f.push(&[("name", name)], *us as f64 / 1e6);
    }
    f.finish_into(out);
    let mut acc = Family::counter(
        "node_systemd_socket_accepted_connections_total",
        "Total number of accepted socket connections",
    );
    let mut cur = Family::gauge("node_systemd_socket_current_connections", "Current number of socket connections");
    // A gauge despite its name, as upstream types it.
    let mut refused =
        Family::gauge("node_systemd_socket_refused_connections_total", "Total number of refused socket connections");
    for (name, a_, c, r) in &a.sockets {
        acc.push(&[("name", name)], *a_ as f64);
        cur.push(&[("name", name)], *c as f64);
        if let Some(r) = r {
            refused.push(&[("name", name)], *r as f64);
        }
    }
    acc.finish_into(out);
    cur.finish_into(out);
    refused.finish_into(out);
    let mut f =
        Family::gauge("node_systemd_unit_start_time_seconds", "Start time of the unit since unix epoch in seconds.");
    for (name, us) in &a.start_times {
        f.push(&[("name", name)], *us as f64 / 1e6);
    }
    f.finish_into(out);
    let mut current = Family::gauge("node_systemd_unit_tasks_current", "Current number of tasks per Systemd unit");
    let mut max = Family::gauge("node_systemd_unit_tasks_max", "Maximum number of tasks per Systemd unit");
    for (name, c, m) in &a.tasks {
        if let Some(c) = c {
            current.push(&[("name", name)], *c as f64);
        }
        if let Some(m) = m {
            max.push(&[("name", name)], *m as f64);
        }
    }
    current.finish_into(out);
    max.finish_into(out);
    let mut f = Family::counter("node_systemd_service_restart_total", "Service unit count of Restart triggers");
    for (name, n) in &a.restarts {
        f.push(&[("name", name)], *n as f64);
    }
    f.finish_into(out);
    if let Some(state) = &a.system_state {
        let mut f = Family::gauge(
            "node_systemd_system_running",
            "Whether the system is operational (see 'systemctl is-system-running')",
        );
        f.push(&[], if state == "running" { 1.0 } else { 0.0 });
        out.push(f.finish());
    }
}

impl Collect for SystemdCollector {
    fn name(&self) -> &'static str {
        "systemd"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let answer = self
            .rt
            .block_on(async { tokio::time::timeout(TIMEOUT, self.ask()).await })
            .map_err(|_| {
                Error::Other(format!("systemd did not answer on {} within {TIMEOUT:?}", self.socket.display()))
            })?
            .map_err(|e| Error::Other(format!("D-Bus on {}: {e}", self.socket.display())))?;
        families(&answer, |u| self.wanted(u), out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_version_is_parsed_as_upstream() {
        assert_eq!(version_number("252.33-1~deb12u1"), 252.33);
        assert_eq!(version_number("systemd 255 (255.4-1ubuntu8)"), 255.0);
        assert_eq!(version_number("v12"), 0.0);
    }

    #[test]
    fn a_missing_bus_socket_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths { rootfs: dir.path().into(), procfs: dir.path().join("proc"), sysfs: dir.path().join("sys") };
        let error = SystemdCollector::new(&paths, &SystemdConfig::default()).err().expect("no socket").to_string();
        let socket = dir.path().join("run/dbus/system_bus_socket");
        assert!(
            error.contains(&socket.display().to_string()) && error.contains("mount the node's /run/dbus"),
            "{error}"
        );
    }
}
