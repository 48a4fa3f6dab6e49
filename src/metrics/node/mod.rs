//! Node metrics under node_exporter's exact names, labels, units and types, so the alerts and
//! dashboards written for node_exporter work against vigil unchanged.
//!
//! Key decision: each collector reads the kernel's text files (/proc, /sys) itself, from an
//! injectable root (`metrics.node.rootfs`/`procfs`/`sysfs`), and builds `MetricFamily` values
//! directly in one [`NodeCollector`] registered on the shared registry. That is exact (the same
//! files node_exporter reads, the same arithmetic), cheap (one read per file per scrape, no
//! intermediate maps, no per-series metric objects kept alive), and testable on fixture trees.
//! Rejected: sysinfo (it has no per-mode CPU seconds, only usage percentages, and a handful of
//! the meminfo fields; where it does give node_exporter's figure, such as total memory or
//! filesystem space, it reads the same files, so reading them directly is as exact and does
//! not refresh more than a scrape needs); `prometheus` `GaugeVec`s updated per scrape (they
//! keep series of vanished devices forever and cost a hash lookup per sample); the `procfs`
//! crate (it parses every field of every file into owned structs, most of a scrape's cost).
//!
//! Collectors run sequentially on the scraping thread (the server gathers on a blocking thread).
//! The only call that can block for long, statfs(2) on a dead network mount, runs on a helper
//! thread with a timeout (see `filesystem`).

mod build_info;
pub mod config;
mod cpu;
mod diskstats;
mod filesystem;
mod loadavg;
mod meminfo;
mod netdev;
mod os;
mod stat;
mod time;
mod uname;
// node_exporter's hardware, scheduler and network-queue collectors.
mod arp;
mod cpufreq;
mod entropy;
mod hwmon;
mod powersupplyclass;
mod processes;
mod schedstat;
mod softnet;
mod systemd;
mod thermal_zone;
mod udp_queues;
// Collectors added for issue 12 (first half).
mod bonding;
mod conntrack;
mod filefd;
mod mdadm;
mod netclass;
mod netstat;
mod pressure;
mod sockstat;
mod textfile;
mod timex;
mod vmstat;

pub use filesystem::{FsStat, StatfsFn};

use config::NodeMetricsConfig;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{IntCounterVec, Opts, Registry};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Why a collector produced no data this scrape. It is reported as
/// `node_scrape_collector_success{collector} 0`, logged and counted; other collectors go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("unexpected content in {}: {what}", path.display())]
    Parse { path: PathBuf, what: String },
    #[error("{0}")]
    Other(String),
    #[error("invalid node metrics config: {0}")]
    Config(String),
    /// What the collector reads does not exist on this node (no md arrays, no bonding, no
    /// conntrack module): node_exporter's ErrNoData. `node_scrape_collector_success` is 0 as
    /// there, but it is not a failure: logged at debug, not counted, and what the collector
    /// appended before finding out is kept (node_exporter exposes it too).
    #[error("no data: {0}")]
    NoData(String),
}

impl Error {
    /// `Read` of a file that does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Error::Read { error, .. } if error.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Where the node's files are, as node_exporter's `--path.*` flags.
#[derive(Debug, Clone)]
pub struct Paths {
    pub rootfs: PathBuf,
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
}

impl Paths {
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.procfs.join(rel)
    }
    pub fn sys(&self, rel: &str) -> PathBuf {
        self.sysfs.join(rel)
    }
    pub fn root(&self, rel: &str) -> PathBuf {
        self.rootfs.join(rel.trim_start_matches('/'))
    }
}

/// One node_exporter collector.
trait Collect: Send + Sync {
    /// The `collector` label value, as node_exporter names it.
    fn name(&self) -> &'static str;
    /// Appends this collector's families to `out`. On error, what it appended is discarded.
    fn collect(&self, scrape: &Scrape<'_>, out: &mut Vec<MetricFamily>) -> Result<(), Error>;
}

/// Files that more than one collector reads, read once per scrape: /proc/stat (cpu and stat)
/// is the costliest file of a scrape on a big machine, where the kernel sums every interrupt
/// over every CPU to write it.
pub(crate) struct Scrape<'a> {
    stat_buf: &'a Buf,
    proc_stat: std::cell::OnceCell<std::io::Result<MutexGuard<'a, String>>>,
}

impl Scrape<'_> {
    pub fn proc_stat(&self, path: &Path) -> Result<&str, Error> {
        match self.proc_stat.get_or_init(|| self.stat_buf.read_raw(path)) {
            Ok(text) => Ok(text.as_str()),
            Err(e) => {
                Err(Error::Read { path: path.to_path_buf(), error: std::io::Error::new(e.kind(), e.to_string()) })
            }
        }
    }
}

/// A read buffer kept between scrapes. procfs files report size 0, so `fs::read_to_string`
/// starts from an empty buffer and grows it read by read; reading into a kept buffer costs no
/// allocation and one or two read(2) calls per file.
pub(crate) struct Buf(Mutex<String>);

impl Buf {
    pub fn new() -> Self {
        Buf(Mutex::new(String::with_capacity(8192)))
    }

    pub fn read(&self, path: &Path) -> Result<MutexGuard<'_, String>, Error> {
        self.read_raw(path).map_err(|error| Error::Read { path: path.to_path_buf(), error })
    }

    fn read_raw(&self, path: &Path) -> std::io::Result<MutexGuard<'_, String>> {
        use std::io::Read;
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.clear();
        std::fs::File::open(path)?.read_to_string(&mut g)?;
        Ok(g)
    }
}

/// All enabled node collectors as one `prometheus` collector.
pub struct NodeCollector {
    collectors: Vec<Box<dyn Collect>>,
    /// Whether each collector failed last time, so a persistent failure logs once, not per scrape.
    failing: Mutex<Vec<bool>>,
    errors: IntCounterVec,
    descs: Vec<Desc>,
    stat_buf: Buf,
}

impl NodeCollector {
    /// The collectors `config` enables, reading the real node.
    pub fn new(config: &NodeMetricsConfig) -> Result<Self, Error> {
        Self::with_statfs(config, filesystem::real_statfs())
    }

    /// As `new`, with `statfs` in place of statfs(2): tests use it to pin filesystem sizes and
    /// to simulate a hung mount, which a test cannot create for real without root and NFS.
    pub fn with_statfs(config: &NodeMetricsConfig, statfs: StatfsFn) -> Result<Self, Error> {
        let paths = Paths { rootfs: config.rootfs_path(), procfs: config.procfs_path(), sysfs: config.sysfs_path() };
        let on = &config.collectors;
        let mut collectors: Vec<Box<dyn Collect>> = Vec::new();
        // Alphabetical, as node_exporter lists them (the registry sorts the output anyway).
        if on.cpu {
            collectors.push(Box::new(cpu::CpuCollector::new(&paths)));
        }
        if on.diskstats {
            collectors.push(Box::new(diskstats::DiskstatsCollector::new(&paths, &config.diskstats)?));
        }
        if on.filesystem {
            collectors.push(Box::new(filesystem::FilesystemCollector::new(&paths, &config.filesystem, statfs)?));
        }
        if on.loadavg {
            collectors.push(Box::new(loadavg::LoadavgCollector::new(&paths)));
        }
        if on.meminfo {
            collectors.push(Box::new(meminfo::MeminfoCollector::new(&paths)));
        }
        if on.netdev {
            collectors.push(Box::new(netdev::NetdevCollector::new(&paths, &config.netdev)?));
        }
        if on.os {
            collectors.push(Box::new(os::OsCollector::new(&paths)));
        }
        if on.stat {
            collectors.push(Box::new(stat::StatCollector::new(&paths)));
        }
        if on.time {
            collectors.push(Box::new(time::TimeCollector::new(&paths)));
        }
        if on.uname {
            collectors.push(Box::new(uname::UnameCollector));
        }
        if on.arp {
            collectors.push(Box::new(arp::ArpCollector::new(&paths)));
        }
        if on.cpufreq {
            collectors.push(Box::new(cpufreq::CpufreqCollector::new(&paths)));
        }
        if on.entropy {
            collectors.push(Box::new(entropy::EntropyCollector::new(&paths)));
        }
        if on.hwmon {
            collectors.push(Box::new(hwmon::HwmonCollector::new(&paths)));
        }
        if on.powersupplyclass {
            collectors.push(Box::new(powersupplyclass::PowerSupplyClassCollector::new(&paths)));
        }
        if on.processes {
            collectors.push(Box::new(processes::ProcessesCollector::new(&paths)));
        }
        if on.schedstat {
            collectors.push(Box::new(schedstat::SchedstatCollector::new(&paths)));
        }
        if on.softnet {
            collectors.push(Box::new(softnet::SoftnetCollector::new(&paths)));
        }
        if on.thermal_zone {
            collectors.push(Box::new(thermal_zone::ThermalZoneCollector::new(&paths)));
        }
        if on.udp_queues {
            collectors.push(Box::new(udp_queues::UdpQueuesCollector::new(&paths)));
        }
        if on.systemd {
            // No bus socket (not mounted): off, said once at start, rather than a failure per scrape.
            match systemd::SystemdCollector::new(&paths, &config.systemd) {
                Ok(c) => collectors.push(Box::new(c)),
                Err(error) => tracing::error!(collector = "systemd", %error, "node collector switched off"),
            }
        }
        if on.bonding {
            collectors.push(Box::new(bonding::BondingCollector::new(&paths)));
        }
        if on.conntrack {
            collectors.push(Box::new(conntrack::ConntrackCollector::new(&paths)));
        }
        if on.filefd {
            collectors.push(Box::new(filefd::FilefdCollector::new(&paths)));
        }
        if on.mdadm {
            collectors.push(Box::new(mdadm::MdadmCollector::new(&paths)));
        }
        if on.netclass {
            collectors.push(Box::new(netclass::NetclassCollector::new(&paths)));
        }
        if on.netstat {
            collectors.push(Box::new(netstat::NetstatCollector::new(&paths, &config.netstat)?));
        }
        if on.pressure {
            collectors.push(Box::new(pressure::PressureCollector::new(&paths)));
        }
        if on.sockstat {
            collectors.push(Box::new(sockstat::SockstatCollector::new(&paths)));
        }
        if on.textfile {
            collectors.push(Box::new(textfile::TextfileCollector::new(config.textfile_directory.as_deref())));
        }
        if on.timex {
            collectors.push(Box::new(timex::TimexCollector::new(&paths)));
        }
        if on.vmstat {
            collectors.push(Box::new(vmstat::VmstatCollector::new(&paths, &config.vmstat)?));
        }
        let errors = IntCounterVec::new(
            Opts::new(
                "vigil_node_collector_errors_total",
                "Scrapes in which a node collector failed (node_scrape_collector_success was 0).",
            ),
            &["collector"],
        )
        .map_err(|e| Error::Config(e.to_string()))?;
        let descs = [
            ("node_scrape_collector_duration_seconds", "node_exporter: Duration of a collector scrape."),
            ("node_scrape_collector_success", "node_exporter: Whether a collector succeeded."),
        ]
        .into_iter()
        .map(|(name, help)| Desc::new(name.into(), help.into(), vec!["collector".into()], Default::default()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(e.to_string()))?;
        let failing = Mutex::new(vec![false; collectors.len()]);
        Ok(Self { collectors, failing, errors, descs, stat_buf: Buf::new() })
    }

    /// The `collector` label of every enabled collector.
    pub fn names(&self) -> Vec<&'static str> {
        self.collectors.iter().map(|c| c.name()).collect()
    }
}

/// Registers the node collectors `config` enables on `registry`.
pub fn register(registry: &Registry, config: &NodeMetricsConfig) -> Result<(), Error> {
    let collector = NodeCollector::new(config)?;
    registry.register(Box::new(collector)).map_err(|e| Error::Config(e.to_string()))
}

impl Collector for NodeCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d: Vec<&Desc> = self.descs.iter().collect();
        d.extend(self.errors.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Vec::with_capacity(96);
        let mut duration = Family::gauge("node_scrape_collector_duration_seconds", self.descs[0].help.as_str());
        let mut success = Family::gauge("node_scrape_collector_success", self.descs[1].help.as_str());
        let mut failed_now = Vec::with_capacity(self.collectors.len());
        let mut no_data: Vec<&'static str> = Vec::new();
        let scrape = Scrape { stat_buf: &self.stat_buf, proc_stat: Default::default() };
        for c in &self.collectors {
            let start = Instant::now();
            let before = out.len();
            let mut result = c.collect(&scrape, &mut out);
            let took = start.elapsed().as_secs_f64();
            if let Err(Error::NoData(what)) = &result {
                tracing::debug!(collector = c.name(), what = %what, "node collector has no data on this node");
                no_data.push(c.name());
                result = Ok(());
            } else if result.is_err() {
                out.truncate(before);
            }
            duration.push(&[("collector", c.name())], took);
            let ok = result.is_ok() && !no_data.contains(&c.name());
            success.push(&[("collector", c.name())], if ok { 1.0 } else { 0.0 });
            failed_now.push(result.err());
        }
        {
            let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
            for (i, (c, err)) in self.collectors.iter().zip(&failed_now).enumerate() {
                match err {
                    Some(error) => {
                        self.errors.with_label_values(&[c.name()]).inc();
                        if !failing[i] {
                            tracing::warn!(collector = c.name(), %error, "node collector failed; node_scrape_collector_success is 0 until it recovers");
                        } else {
                            tracing::debug!(collector = c.name(), %error, "node collector still failing");
                        }
                        failing[i] = true;
                    }
                    None if failing[i] => {
                        tracing::info!(collector = c.name(), "node collector recovered");
                        failing[i] = false;
                    }
                    None => {}
                }
            }
        }
        out.push(duration.finish());
        out.push(success.finish());
        out.push(build_info::family());
        out.extend(self.errors.collect());
        out
    }
}

/// A metric family under construction. Label names must be given in sorted order (as
/// client_golang writes them), which every call site does with static names.
pub(crate) struct Family {
    mf: MetricFamily,
    kind: MetricType,
}

impl Family {
    pub fn gauge(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::GAUGE)
    }

    pub fn counter(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::COUNTER)
    }

    /// node_exporter's untyped families (vmstat, netstat, textfile samples without TYPE).
    pub fn untyped(name: &str, help: &str) -> Self {
        Self::new(name, help, MetricType::UNTYPED)
    }

    fn new(name: &str, help: &str, kind: MetricType) -> Self {
        let mut mf = MetricFamily::default();
        mf.set_name(name.to_string());
        mf.set_help(help.to_string());
        mf.set_field_type(kind);
        Self { mf, kind }
    }

    pub fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        debug_assert!(labels.windows(2).all(|w| w[0].0 < w[1].0), "label names must be sorted: {labels:?}");
        let mut m = Metric::default();
        if !labels.is_empty() {
            m.set_label(
                labels
                    .iter()
                    .map(|(k, v)| {
                        let mut lp = LabelPair::default();
                        lp.set_name(k.to_string());
                        lp.set_value(v.to_string());
                        lp
                    })
                    .collect(),
            );
        }
        match self.kind {
            MetricType::COUNTER => {
                let mut c = Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            // Deprecated in the crate as protobuf-specific, but it is the only way to give the
            // text encoder an untyped sample, which node_exporter's vmstat/netstat are.
            #[allow(deprecated)]
            MetricType::UNTYPED => {
                let mut u = prometheus::proto::Untyped::default();
                u.set_value(value);
                m.set_untyped(u);
            }
            _ => {
                let mut g = Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        self.mf.mut_metric().push(m);
    }

    pub fn finish(self) -> MetricFamily {
        self.mf
    }

    pub fn is_empty(&self) -> bool {
        self.mf.get_metric().is_empty()
    }

    /// Appends the family to `out` unless it has no samples.
    pub fn finish_into(self, out: &mut Vec<MetricFamily>) {
        if !self.mf.get_metric().is_empty() {
            out.push(self.mf);
        }
    }
}

/// A file in the node's network namespace: `<procfs>/1/net/<rel>` (PID 1's namespace, readable
/// without host networking, as `netdev` reads), falling back to `<procfs>/net/<rel>` (vigil's
/// own namespace, which is the node's under `hostNetwork: true`), which node_exporter reads.
pub(crate) struct NetFile {
    node: PathBuf,
    own: PathBuf,
}

impl NetFile {
    pub fn new(paths: &Paths, rel: &str) -> Self {
        Self { node: paths.proc(&format!("1/net/{rel}")), own: paths.proc(&format!("net/{rel}")) }
    }

    /// The text and the path it came from; the error is the fallback's.
    pub fn read(&self) -> Result<(String, &Path), Error> {
        match std::fs::read_to_string(&self.node) {
            Ok(t) => Ok((t, &self.node)),
            Err(_) => read_file(&self.own).map(|t| (t, self.own.as_path())),
        }
    }
}

/// A whole small file (sysfs attributes, /proc/sys values).
pub(crate) fn read_file(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|error| Error::Read { path: path.to_path_buf(), error })
}

pub(crate) fn parse_err(path: &Path, what: impl Into<String>) -> Error {
    Error::Parse { path: path.to_path_buf(), what: what.into() }
}

/// A regex from config; validation has already compiled it, so this fails only if called
/// without validation.
pub(crate) fn regex(field: &str, re: &str) -> Result<Option<regex::Regex>, Error> {
    if re.is_empty() {
        return Ok(None);
    }
    regex::Regex::new(re).map(Some).map_err(|e| Error::Config(format!("{field}: '{re}' is not a regex: {e}")))
}
