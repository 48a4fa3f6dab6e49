//! `process_*`: vigil's own CPU, memory, descriptors, threads and start time, under the names
//! and help texts client_golang's process collector (and the `prometheus` crate's) give them.
//!
//! Key decision: read with what costs least per scrape, since every scrape pays for it. One
//! kept descriptor of /proc/self/stat (read again from offset 0, as the node collectors do),
//! getrlimit(2) instead of parsing /proc/self/limits, and the open descriptor count from
//! fstat(2) of a kept /proc/self/fd (Linux 6.2+ gives the count as its size; older kernels
//! list the directory). The start time is read once. Rejected: the `prometheus` crate's
//! `ProcessCollector` (through the `procfs` crate it opened four files, parsed every field into
//! owned structs and allocated a protobuf family per metric at each scrape: a twentieth of a
//! scrape's CPU) and `sysinfo` (it refreshes far more than these seven figures).

use super::node::{Buf, Family, hand_over};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use std::path::{Path, PathBuf};

/// (name, help, counter?) of each family, in the order written.
const FAMILIES: [(&str, &str, bool); 8] = [
    ("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", true),
    ("process_open_fds", "Number of open file descriptors.", false),
    ("process_max_fds", "Maximum number of open file descriptors.", false),
    ("process_virtual_memory_bytes", "Virtual memory size in bytes.", false),
    ("process_virtual_memory_max_bytes", "Maximum amount of virtual memory available in bytes.", false),
    ("process_resident_memory_bytes", "Resident memory size in bytes.", false),
    ("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", false),
    ("process_threads", "Number of OS threads in the process.", false),
];

pub struct ProcessCollector {
    descs: Vec<Desc>,
    stat_path: PathBuf,
    stat: Buf,
    fd_path: PathBuf,
    /// `fd_path`, kept open; None if it could not be opened (no /proc).
    fd_dir: Option<std::fs::File>,
    /// Seconds since the epoch; None without /proc.
    start_time: Option<f64>,
    ticks_per_second: f64,
    page_size: f64,
}

/// The fields of /proc/self/stat a scrape reports.
#[derive(Debug, PartialEq)]
struct Stat {
    cpu_ticks: u64,
    threads: u64,
    start_ticks: u64,
    virtual_bytes: u64,
    resident_pages: u64,
}

/// Parses /proc/<pid>/stat (proc(5)): the command name, field 2, is in parentheses and may
/// itself hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // `rest` starts at field 3 (state), so field n is its (n - 3)th word; `nth` skips from the
    // word after the last one taken.
    let mut words = rest.split_ascii_whitespace();
    let mut next = |skip: usize| words.nth(skip)?.parse::<u64>().ok();
    let utime = next(11)?; // 14
    let stime = next(0)?; // 15
    let threads = next(4)?; // 20
    let start_ticks = next(1)?; // 22
    let virtual_bytes = next(0)?; // 23
    let resident_pages = next(0)?; // 24
    Some(Stat { cpu_ticks: utime + stime, threads, start_ticks, virtual_bytes, resident_pages })
}

/// `btime` of /proc/stat: the boot time, seconds since the epoch.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

/// The soft limit of `resource`; None when unlimited or unknown.
fn soft_limit(resource: i32) -> Option<u64> {
    // SAFETY: `limit` is a plain C struct getrlimit fills.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above; getrlimit only writes into `limit`.
    if unsafe { libc::getrlimit(resource as _, &mut limit) } != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(limit.rlim_cur)
}

/// Entries of the directory at `path` other than `.` and `..`.
fn count_entries(path: &Path) -> Option<u64> {
    Some(std::fs::read_dir(path).ok()?.filter(|e| e.is_ok()).count() as u64)
}

impl ProcessCollector {
    /// The collector for vigil's own process.
    pub fn for_self() -> prometheus::Result<Self> {
        Self::new(Path::new("/proc"))
    }

    fn new(proc: &Path) -> prometheus::Result<Self> {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, _)| Desc::new(name.to_string(), help.to_string(), Vec::new(), Default::default()))
            .collect::<prometheus::Result<Vec<_>>>()?;
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let ticks_per_second = if ticks > 0 { ticks as f64 } else { 100.0 };
        let (stat_path, fd_path) = (proc.join("self/stat"), proc.join("self/fd"));
        let stat = Buf::new();
        let start_time = (|| {
            let btime = boot_time(&std::fs::read_to_string(proc.join("stat")).ok()?)?;
            let started = parse_stat(&stat.read(&stat_path).ok()?)?.start_ticks;
            Some(btime as f64 + started as f64 / ticks_per_second)
        })();
        Ok(Self {
            descs,
            stat_path,
            stat,
            fd_dir: std::fs::File::open(&fd_path).ok(),
            fd_path,
            start_time,
            ticks_per_second,
            page_size: if page > 0 { page as f64 } else { 4096.0 },
        })
    }

    /// Open descriptors, this collector's kept one included.
    fn open_fds(&self) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        let dir = self.fd_dir.as_ref()?;
        match dir.metadata().map(|m| m.size()) {
            Ok(n) if n > 0 => Some(n),
            // Before Linux 6.2 the size is 0.
            _ => count_entries(&self.fd_path),
        }
    }

    fn families(&self) -> Vec<Family> {
        let stat = self.stat.read(&self.stat_path).ok().and_then(|t| parse_stat(&t));
        let values: [Option<f64>; 8] = [
            stat.as_ref().map(|s| s.cpu_ticks as f64 / self.ticks_per_second),
            self.open_fds().map(|n| n as f64),
            soft_limit(libc::RLIMIT_NOFILE as i32).map(|n| n as f64),
            stat.as_ref().map(|s| s.virtual_bytes as f64),
            Some(soft_limit(libc::RLIMIT_AS as i32).map_or(-1.0, |n| n as f64)),
            stat.as_ref().map(|s| s.resident_pages as f64 * self.page_size),
            self.start_time,
            stat.as_ref().map(|s| s.threads as f64),
        ];
        let mut out = Vec::with_capacity(FAMILIES.len());
        for ((name, help, counter), value) in FAMILIES.iter().zip(values) {
            let Some(value) = value else { continue };
            let mut f = if *counter { Family::counter(*name, *help) } else { Family::gauge(*name, *help) };
            f.push(&[], value);
            out.push(f);
        }
        out
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        hand_over(&mut self.families())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis, as proc(5) warns.
        let text = "4242 (we ird) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 125 0 0 20 0 7 0 \
                    123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                cpu_ticks: 375,
                threads: 7,
                start_ticks: 123456,
                virtual_bytes: 987654321,
                resident_pages: 2048
            })
        );
        assert_eq!(parse_stat("4242 (cut) S 1 2 3"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn boot_time_is_the_btime_line() {
        assert_eq!(boot_time("cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n"), Some(1_700_000_000));
        assert_eq!(boot_time("cpu  1 2 3\n"), None);
    }

    fn value(families: &[Family], name: &str) -> f64 {
        let f = families.iter().find(|f| f.name() == name).unwrap_or_else(|| panic!("no {name}"));
        let mf = f.to_proto();
        let m = &mf.get_metric()[0];
        m.get_gauge().get_value() + m.get_counter().get_value()
    }

    #[test]
    fn figures_are_this_process_s() {
        let c = ProcessCollector::for_self().unwrap();
        let families = c.families();
        let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
        assert_eq!(names, FAMILIES.map(|f| f.0), "every family, on a Linux with /proc");

        // Compared with what the kernel says by other means, read around the collector's read
        // (other test threads open and close descriptors, allocate and spend CPU meanwhile).
        let me = std::fs::read_to_string("/proc/self/stat").unwrap();
        let me = parse_stat(&me).unwrap();
        let ticks = c.ticks_per_second;
        assert!(value(&families, "process_cpu_seconds_total") <= me.cpu_ticks as f64 / ticks);
        assert!(value(&families, "process_threads") >= 1.0);
        let rss = value(&families, "process_resident_memory_bytes");
        assert!(rss > 1e6 && rss < 4e9, "resident {rss}");
        assert!(value(&families, "process_virtual_memory_bytes") >= rss);
        assert_eq!(value(&families, "process_max_fds"), soft_limit(libc::RLIMIT_NOFILE as i32).unwrap() as f64);

        // The start time: between boot and now, and within a minute of when this test binary
        // started (its own /proc entry's start, read independently).
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let btime = boot_time(&std::fs::read_to_string("/proc/stat").unwrap()).unwrap() as f64;
        let start = value(&families, "process_start_time_seconds");
        assert!(start >= btime && start <= now, "start {start}, boot {btime}, now {now}");
        assert_eq!(start, btime + me.start_ticks as f64 / ticks);

        // Descriptors: the fstat size (Linux 6.2+) and the listing agree, within what other
        // test threads open meanwhile.
        let listed = count_entries(Path::new("/proc/self/fd")).unwrap() as f64;
        let reported = value(&families, "process_open_fds");
        assert!((reported - listed).abs() <= 16.0, "reported {reported}, listed {listed}");
        assert!(reported >= 3.0);
    }

    #[test]
    fn a_scrape_after_more_cpu_reports_more() {
        let c = ProcessCollector::for_self().unwrap();
        let before = value(&c.families(), "process_cpu_seconds_total");
        // CPU time is counted in ticks (10 ms at the usual 100 Hz): spin until this thread has
        // spent 50 ms of CPU, measured by the kernel's precise clock, not 50 ms of wall time
        // (on a loaded machine that could be less than a tick of CPU).
        let thread_cpu = || {
            // SAFETY: clock_gettime only writes into `t`.
            let mut t: libc::timespec = unsafe { std::mem::zeroed() };
            // SAFETY: as above; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
            std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
        };
        let t0 = thread_cpu();
        let mut x = 0u64;
        while thread_cpu() - t0 < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = value(&c.families(), "process_cpu_seconds_total");
        assert!(after > before, "cpu seconds {before} then {after}");
    }

    #[test]
    fn without_proc_only_the_limits_are_reported() {
        let c = ProcessCollector::new(Path::new("/nonexistent-proc")).unwrap();
        let names: Vec<String> = c.families().iter().map(|f| f.name().to_string()).collect();
        assert_eq!(names, ["process_max_fds", "process_virtual_memory_max_bytes"]);
    }
}
