//! `timex`: the kernel clock discipline's state from adjtimex(2) with `modes` 0 (read only;
//! no capability needed), under node_exporter's names and units: `sync_status` is 0 when the
//! call answers TIME_ERROR (clock not synchronised), offsets and jitter are in ns when
//! STA_NANO is set and in µs otherwise, frequencies are scaled ppm (2^-16 ppm).
//!
//! The syscall reads the kernel's global clock; no path applies (as in node_exporter). A
//! seccomp profile that refuses it (EPERM) is no data, not a failure, as node_exporter.

use super::{Collect, Error, Family, Paths, Scrape};

/// 2^16 × 1e6: a "scaled ppm" value divided by this is a ratio.
const PPM16: f64 = 65536.0 * 1e6;

/// The fields of `struct timex` node_exporter exports, already read.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Timex {
    pub state: i32,
    pub status: i32,
    pub offset: i64,
    pub freq: i64,
    pub maxerror: i64,
    pub esterror: i64,
    pub constant: i64,
    pub tick: i64,
    pub ppsfreq: i64,
    pub jitter: i64,
    pub shift: i32,
    pub stabil: i64,
    pub jitcnt: i64,
    pub calcnt: i64,
    pub errcnt: i64,
    pub stbcnt: i64,
    pub tai: i32,
}

/// adjtimex(2) without modes: reads, never sets.
#[allow(clippy::unnecessary_cast)] // the fields are c_long: i64 here, i32 on 32-bit targets
fn read_timex() -> std::io::Result<Timex> {
    // SAFETY: a zeroed timex (modes 0) asks the kernel only to fill the struct in.
    let (state, t) = unsafe {
        let mut t: libc::timex = std::mem::zeroed();
        (libc::adjtimex(&mut t), t)
    };
    if state < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Timex {
        state,
        status: t.status,
        offset: t.offset as i64,
        freq: t.freq as i64,
        maxerror: t.maxerror as i64,
        esterror: t.esterror as i64,
        constant: t.constant as i64,
        tick: t.tick as i64,
        ppsfreq: t.ppsfreq as i64,
        jitter: t.jitter as i64,
        shift: t.shift,
        stabil: t.stabil as i64,
        jitcnt: t.jitcnt as i64,
        calcnt: t.calcnt as i64,
        errcnt: t.errcnt as i64,
        stbcnt: t.stbcnt as i64,
        tai: t.tai,
    })
}

pub(super) struct TimexCollector;

impl TimexCollector {
    pub fn new(_paths: &Paths) -> Self {
        Self
    }
}

/// The families node_exporter's timex collector emits for `t`.
pub(crate) fn families(t: &Timex, out: &mut Vec<Family>) {
    let divisor = if t.status & libc::STA_NANO != 0 { 1e9 } else { 1e6 };
    let gauges: [(&str, &str, f64); 13] = [
        (
            "node_timex_sync_status",
            "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
            if t.state == libc::TIME_ERROR { 0.0 } else { 1.0 },
        ),
        (
            "node_timex_offset_seconds",
            "Time offset in between local system and reference clock.",
            t.offset as f64 / divisor,
        ),
        ("node_timex_frequency_adjustment_ratio", "Local clock frequency adjustment.", 1.0 + t.freq as f64 / PPM16),
        ("node_timex_maxerror_seconds", "Maximum error in seconds.", t.maxerror as f64 / 1e6),
        ("node_timex_estimated_error_seconds", "Estimated error in seconds.", t.esterror as f64 / 1e6),
        ("node_timex_status", "Value of the status array bits.", t.status as f64),
        ("node_timex_loop_time_constant", "Phase-locked loop time constant.", t.constant as f64),
        ("node_timex_tick_seconds", "Seconds between clock ticks.", t.tick as f64 / 1e6),
        ("node_timex_pps_frequency_hertz", "Pulse per second frequency.", t.ppsfreq as f64 / PPM16),
        ("node_timex_pps_jitter_seconds", "Pulse per second jitter.", t.jitter as f64 / divisor),
        ("node_timex_pps_shift_seconds", "Pulse per second interval duration.", t.shift as f64),
        (
            "node_timex_pps_stability_hertz",
            "Pulse per second stability, average of recent frequency changes.",
            t.stabil as f64 / PPM16,
        ),
        ("node_timex_tai_offset_seconds", "International Atomic Time (TAI) offset.", t.tai as f64),
    ];
    for (name, help, v) in gauges {
        let mut f = Family::gauge(name, help);
        f.push(&[], v);
        out.push(f.finish());
    }
    for (name, help, v) in [
        ("node_timex_pps_jitter_total", "Pulse per second count of jitter limit exceeded events.", t.jitcnt),
        ("node_timex_pps_calibration_total", "Pulse per second count of calibration intervals.", t.calcnt),
        ("node_timex_pps_error_total", "Pulse per second count of calibration errors.", t.errcnt),
        (
            "node_timex_pps_stability_exceeded_total",
            "Pulse per second count of stability limit exceeded events.",
            t.stbcnt,
        ),
    ] {
        let mut f = Family::counter(name, help);
        f.push(&[], v as f64);
        out.push(f.finish());
    }
}

impl Collect for TimexCollector {
    fn name(&self) -> &'static str {
        "timex"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let t = match read_timex() {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(Error::NoData(format!("timex: adjtimex refused: {e}")));
            }
            Err(e) => return Err(Error::Other(format!("adjtimex: {e}"))),
        };
        families(&t, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(out: &[Family], name: &str) -> f64 {
        let f = out.iter().find(|f| f.name() == name).unwrap_or_else(|| panic!("no {name}")).to_proto();
        let m = &f.get_metric()[0];
        if f.get_field_type() == prometheus::proto::MetricType::COUNTER {
            m.get_counter().get_value()
        } else {
            m.get_gauge().get_value()
        }
    }

    /// Units as node_exporter's timex collector: µs without STA_NANO, ns with it; scaled ppm.
    #[test]
    fn units_follow_sta_nano_and_scaled_ppm() {
        let mut t = Timex {
            state: libc::TIME_OK,
            status: 0,
            offset: 1500,
            freq: 65536 * 10, // +10 ppm
            maxerror: 16_000,
            esterror: 250,
            tick: 10_000,
            jitcnt: 7,
            ..Default::default()
        };
        let mut out = Vec::new();
        families(&t, &mut out);
        assert_eq!(value(&out, "node_timex_offset_seconds"), 0.0015);
        assert_eq!(value(&out, "node_timex_frequency_adjustment_ratio"), 1.00001);
        assert_eq!(value(&out, "node_timex_maxerror_seconds"), 0.016);
        assert_eq!(value(&out, "node_timex_estimated_error_seconds"), 0.00025);
        assert_eq!(value(&out, "node_timex_tick_seconds"), 0.01);
        assert_eq!(value(&out, "node_timex_sync_status"), 1.0);
        assert_eq!(value(&out, "node_timex_pps_jitter_total"), 7.0);
        assert_eq!(out.len(), 17);

        t.status = libc::STA_NANO;
        t.state = libc::TIME_ERROR;
        let mut out = Vec::new();
        families(&t, &mut out);
        assert_eq!(value(&out, "node_timex_offset_seconds"), 0.0000015);
        assert_eq!(value(&out, "node_timex_sync_status"), 0.0);
        // maxerror and tick are µs whatever STA_NANO says.
        assert_eq!(value(&out, "node_timex_maxerror_seconds"), 0.016);
    }

    #[test]
    fn the_real_clock_can_be_read() {
        let t = read_timex().expect("adjtimex with modes 0 needs no privilege");
        assert!(t.tick > 0, "{t:?}");
    }
}
