//! Node metrics under node_exporter's exact names, labels, units and types, so the alerts and
//! dashboards written for node_exporter work against vigil unchanged.
//!
//! Key decision: each collector reads the kernel's text files (/proc, /sys) itself, from an
//! injectable root (`metrics.node.rootfs`/`procfs`/`sysfs`), and builds flat [`Family`] values
//! directly in one [`NodeCollector`] registered on the shared registry (written straight to the
//! text format by `/metrics`, handed over as `MetricFamily` to any other gather). That is exact (the same
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

mod read;
pub(crate) use read::{Buf, generated_by_kernel, read_into};
mod text;
pub use text::render_text;
use text::{CAPTURED, SPARE_FAMILIES};
#[cfg(test)]
use text::{write_text, write_value};

pub use filesystem::{FsStat, StatfsFn};

use config::NodeMetricsConfig;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{IntCounterVec, Opts, Registry};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
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
    fn collect(&self, scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error>;
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
        let mut out = std::mem::take(&mut *SPARE_FAMILIES.lock().unwrap_or_else(|p| p.into_inner()));
        out.reserve(512);
        let mut duration = Family::gauge("node_scrape_collector_duration_seconds", self.descs[0].help.clone());
        let mut success = Family::gauge("node_scrape_collector_success", self.descs[1].help.clone());
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
        out.extend(self.errors.collect().into_iter().map(Family::from_proto));
        out.retain(|f| !f.is_empty());
        let families = hand_over(&mut out);
        if out.capacity() > 0 {
            *SPARE_FAMILIES.lock().unwrap_or_else(|p| p.into_inner()) = out;
        }
        families
    }
}

/// The end of a `Collector::collect` that builds [`Family`] values: under `render_text` the
/// families go to it as they are (nothing is returned); anywhere else (shipping, tests) they are
/// returned as protobuf. `out` is left empty, its capacity kept when it was not handed over.
pub(crate) fn hand_over(out: &mut Vec<Family>) -> Vec<MetricFamily> {
    let captured = CAPTURED.with(|c| {
        c.borrow_mut().as_mut().map(|captured| match captured.is_empty() {
            true => std::mem::swap(captured, out),
            false => captured.append(out),
        })
    });
    match captured {
        Some(()) => Vec::new(),
        None => {
            let families = out.iter().map(Family::to_proto).collect();
            out.clear();
            families
        }
    }
}

/// A metric family as the node collectors build it: samples kept flat (every label name and
/// value back to back in one string, offsets beside it), so a scrape of ~500 series costs a
/// few allocations per family instead of five per sample in protobuf `Metric`s. `/metrics`
/// writes it straight to the text format ([`write_text`]); shipping and any other
/// `Registry::gather` get the same content as a `MetricFamily` ([`Family::to_proto`]). Label
/// names must be given in sorted order (as client_golang writes them), which every call site
/// does with static names. Histograms and summaries (only from textfiles) are carried as their
/// `MetricFamily`.
pub(crate) struct Family {
    /// Mostly the collectors' literals, or names a collector built once and keeps: no
    /// allocation for them per scrape.
    name: Text,
    help: Text,
    kind: MetricType,
    /// Label names and values of every sample, back to back.
    text: String,
    /// End offsets in `text`: name, value, name, value, ... for every label of every sample.
    cuts: Vec<u32>,
    /// Per sample: the end of its labels in `cuts`, and its value.
    samples: Vec<(u32, f64)>,
    /// A histogram or summary read from a textfile (boxed: families are moved around when
    /// sorted, and a `MetricFamily` inline would make every move several times longer).
    proto: Option<Box<MetricFamily>>,
}

impl Family {
    pub fn gauge(name: impl Into<Text>, help: impl Into<Text>) -> Self {
        Self::new(name.into(), help.into(), MetricType::GAUGE)
    }

    pub fn counter(name: impl Into<Text>, help: impl Into<Text>) -> Self {
        Self::new(name.into(), help.into(), MetricType::COUNTER)
    }

    /// node_exporter's untyped families (vmstat, netstat, textfile samples without TYPE).
    pub fn untyped(name: impl Into<Text>, help: impl Into<Text>) -> Self {
        Self::new(name.into(), help.into(), MetricType::UNTYPED)
    }

    fn new(name: Text, help: Text, kind: MetricType) -> Self {
        Self { name, help, kind, text: String::new(), cuts: Vec::new(), samples: Vec::new(), proto: None }
    }

    /// A family built elsewhere as a `MetricFamily` (textfile histograms and summaries).
    pub fn from_proto(mf: MetricFamily) -> Self {
        let mut f = Self::new(mf.name().to_string().into(), mf.help().to_string().into(), mf.get_field_type());
        f.proto = Some(Box::new(mf));
        f
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        debug_assert!(labels.windows(2).all(|w| w[0].0 < w[1].0), "label names must be sorted: {labels:?}");
        for (k, v) in labels {
            self.text.push_str(k);
            self.cuts.push(self.text.len() as u32);
            self.text.push_str(v);
            self.cuts.push(self.text.len() as u32);
        }
        self.samples.push((self.cuts.len() as u32, value));
    }

    pub fn finish(self) -> Family {
        self
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty() && self.proto.as_ref().is_none_or(|p| p.get_metric().is_empty())
    }

    /// Appends the family to `out` unless it has no samples.
    pub fn finish_into(self, out: &mut Vec<Family>) {
        if !self.is_empty() {
            out.push(self);
        }
    }

    /// Sample `i`'s labels as (name, value).
    fn labels(&self, i: usize) -> impl Iterator<Item = (&str, &str)> + '_ {
        let from = if i == 0 { 0 } else { self.samples[i - 1].0 as usize };
        let to = self.samples[i].0 as usize;
        (from..to).step_by(2).map(move |c| {
            let start = if c == 0 { 0 } else { self.cuts[c - 1] as usize };
            let (mid, end) = (self.cuts[c] as usize, self.cuts[c + 1] as usize);
            (&self.text[start..mid], &self.text[mid..end])
        })
    }

    /// Sample indices in the order `Registry::gather` sorts metrics (by label values), or None
    /// if the samples are in that order already, as most families are (no allocation then).
    fn order(&self) -> Option<Vec<usize>> {
        let key = |i: usize| self.labels(i).map(|(_, v)| v);
        if (1..self.samples.len()).all(|i| key(i - 1).cmp(key(i)).is_le()) {
            return None;
        }
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        order.sort_by(|&a, &b| {
            let (la, lb) = (self.labels(a).count(), self.labels(b).count());
            la.cmp(&lb).then_with(|| key(a).cmp(key(b)))
        });
        Some(order)
    }

    /// Moves `other`'s samples (a family of the same name) into this one.
    fn append(&mut self, other: Family) {
        let base = self.text.len() as u32;
        let cut_base = self.cuts.len() as u32;
        self.text.push_str(&other.text);
        self.cuts.extend(other.cuts.iter().map(|c| c + base));
        self.samples.extend(other.samples.iter().map(|&(end, v)| (end + cut_base, v)));
        match (&mut self.proto, other.proto) {
            (Some(p), Some(o)) => p.mut_metric().extend(o.get_metric().iter().cloned()),
            (p @ None, Some(o)) => *p = Some(o),
            _ => {}
        }
    }

    /// The same content as a protobuf `MetricFamily`, metrics sorted as `Registry::gather` does.
    pub fn to_proto(&self) -> MetricFamily {
        if let Some(p) = &self.proto {
            return MetricFamily::clone(p);
        }
        let mut mf = MetricFamily::default();
        mf.set_name(self.name.to_string());
        mf.set_help(self.help.to_string());
        mf.set_field_type(self.kind);
        for i in 0..self.samples.len() {
            let mut m = Metric::default();
            let labels: Vec<LabelPair> = self
                .labels(i)
                .map(|(k, v)| {
                    let mut lp = LabelPair::default();
                    lp.set_name(k.to_string());
                    lp.set_value(v.to_string());
                    lp
                })
                .collect();
            if !labels.is_empty() {
                m.set_label(labels);
            }
            let value = self.samples[i].1;
            match self.kind {
                MetricType::COUNTER => {
                    let mut c = Counter::default();
                    c.set_value(value);
                    m.set_counter(c);
                }
                // Deprecated in the crate as protobuf-specific, but it is the only way to give
                // the text encoder an untyped sample, which node_exporter's vmstat/netstat are.
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
            mf.mut_metric().push(m);
        }
        if let Some(order) = self.order() {
            let mut metrics = mf.take_metric();
            let mut sorted: Vec<Metric> = Vec::with_capacity(metrics.len());
            let mut slots: Vec<Option<Metric>> = metrics.drain(..).map(Some).collect();
            for o in order {
                sorted.push(slots[o].take().expect("each index once"));
            }
            mf.set_metric(sorted);
        }
        mf
    }
}

/// A family's name or help text: a literal, or text a collector built once (from the keys of
/// the file it reads: meminfo's fields, netstat's columns) and shares with every scrape, so a
/// family costs no allocation for its name.
#[derive(Clone, Debug)]
pub(crate) enum Text {
    Static(&'static str),
    Shared(Arc<str>),
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Text::Static(s) => s,
            Text::Shared(s) => s,
        }
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Self {
        Text::Static(s)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text::Shared(s.into())
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Self {
        Text::Shared(s.as_str().into())
    }
}

impl From<Arc<str>> for Text {
    fn from(s: Arc<str>) -> Self {
        Text::Shared(s)
    }
}

/// A file in the node's network namespace: `<procfs>/1/net/<rel>` (PID 1's namespace, readable
/// without host networking, as `netdev` reads), falling back to `<procfs>/net/<rel>` (vigil's
/// own namespace, which is the node's under `hostNetwork: true`), which node_exporter reads.
pub(crate) struct NetFile {
    node: PathBuf,
    own: PathBuf,
    buf: Buf,
}

impl NetFile {
    pub fn new(paths: &Paths, rel: &str) -> Self {
        Self { node: paths.proc(&format!("1/net/{rel}")), own: paths.proc(&format!("net/{rel}")), buf: Buf::new() }
    }

    /// The text and the path it came from; the error is the fallback's. Read into a buffer
    /// kept between scrapes.
    pub fn read(&self) -> Result<(MutexGuard<'_, String>, &Path), Error> {
        match self.buf.read_raw(&self.node) {
            Ok(t) => Ok((t, &self.node)),
            Err(_) => self.buf.read(&self.own).map(|t| (t, self.own.as_path())),
        }
    }
}

/// What a collector derives from each key of a file whose keys the kernel writes in the same
/// order at every read (meminfo's fields, vmstat's, sockstat's): family names and helps, and
/// whether a field filter keeps the key. Kept by line position and checked against the key, so
/// a scrape costs one comparison per line instead of formatting two names (and matching a
/// regex) per line. Holds at most one entry per line of the file.
pub(crate) struct ByLine<V>(Mutex<Vec<(Box<str>, V)>>);

impl<V> ByLine<V> {
    pub fn new() -> Self {
        ByLine(Mutex::new(Vec::new()))
    }

    pub fn lock(&self) -> MutexGuard<'_, Vec<(Box<str>, V)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The next entry (`at` counts the keys asked so far this scrape, from 0) if it was built for
/// `key`, otherwise built now by `build` and kept in its place.
pub(crate) fn by_line<'c, V>(
    cache: &'c mut Vec<(Box<str>, V)>,
    at: &mut usize,
    key: &str,
    build: impl FnOnce() -> V,
) -> &'c V {
    let i = *at;
    *at += 1;
    match cache.get(i) {
        Some((k, _)) if **k == *key => {}
        Some(_) => cache[i] = (key.into(), build()),
        None => cache.push((key.into(), build())),
    }
    &cache[i].1
}

/// `text` as `f64`, exactly as `str::parse::<f64>` reads it, faster for what the kernel writes:
/// a whole non-negative number goes through the integer parser, and `u64 as f64` rounds to
/// the nearest float as the float parser does; anything else (a sign, a fraction, a number
/// beyond u64) goes to the float parser.
pub(crate) fn parse_f64(text: &str) -> Option<f64> {
    match text.parse::<u64>() {
        Ok(v) => Some(v as f64),
        Err(_) => text.parse().ok(),
    }
}

/// A whole small file (sysfs attributes, /proc/sys values).
pub(crate) fn read_file(path: &Path) -> Result<String, Error> {
    let mut text = String::with_capacity(256);
    read_into(path, &mut text).map_err(|error| Error::Read { path: path.to_path_buf(), error })?;
    Ok(text)
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

#[cfg(test)]
mod tests;
