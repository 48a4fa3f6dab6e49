//! vigil's own process metrics: build info, uptime, and the process collector (CPU, RSS, fds,
//! start time; `super::process`). Pipeline stages register their own `vigil_*` metrics on the same registry.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, IntGaugeVec, Opts, Registry};
use std::time::Instant;

/// Registers build info, uptime and process metrics.
pub fn register(registry: &Registry) -> prometheus::Result<()> {
    let build = IntGaugeVec::new(
        Opts::new("vigil_build_info", "vigil's version and build; always 1."),
        &["version", "rustc", "target"],
    )?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION"), env!("VIGIL_RUSTC_VERSION"), env!("VIGIL_TARGET")]).set(1);
    registry.register(Box::new(build))?;
    registry.register(Box::new(Uptime::new()?))?;
    registry.register(Box::new(super::process::ProcessCollector::for_self()?))?;
    Ok(())
}

/// `vigil_uptime_seconds`, computed at scrape time.
struct Uptime {
    start: Instant,
    gauge: Gauge,
}

impl Uptime {
    fn new() -> prometheus::Result<Self> {
        Ok(Self { start: Instant::now(), gauge: Gauge::new("vigil_uptime_seconds", "Seconds since vigil started.")? })
    }
}

impl Collector for Uptime {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gauge.set(self.start.elapsed().as_secs_f64());
        self.gauge.collect()
    }
}
