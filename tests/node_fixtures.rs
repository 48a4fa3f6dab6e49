//! Node collectors on fixture /proc, /sys and / trees (tests/fixtures/node): exact names, labels,
//! values and types, pinned in tests/fixtures/node/expected.prom, plus the behaviours a fixture
//! file alone cannot show (hung statfs, failing collectors, CPU counters stepping back, rootfs
//! stripping). statfs is replaced by a table here (sizes on a real disk move); the real statfs is
//! covered by the tests against the real machine (node_compat.rs).

#[path = "support/tree.rs"]
mod tree;
use prometheus::Registry;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use vigil::config::HumanDuration;
use vigil::metrics::node::config::NodeMetricsConfig;
use vigil::metrics::node::{FsStat, NodeCollector, StatfsFn};

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node")
}

fn config(root: &Path) -> NodeMetricsConfig {
    NodeMetricsConfig { rootfs: root.display().to_string(), ..Default::default() }
}

/// A statfs table keyed by the mount point as the node sees it (statfs gets `<rootfs>/<mp>`).
fn table_statfs(root: &Path, table: HashMap<&'static str, io::Result<FsStat>>) -> StatfsFn {
    let root = root.to_path_buf();
    let table: HashMap<String, Result<FsStat, i32>> =
        table.into_iter().map(|(k, v)| (k.to_string(), v.map_err(|e| e.raw_os_error().unwrap_or(libc::EIO)))).collect();
    Arc::new(move |p: &Path| {
        let rel = p.strip_prefix(&root).unwrap_or_else(|_| panic!("statfs outside rootfs: {}", p.display()));
        let key = format!("/{}", rel.display());
        match table.get(&key) {
            Some(Ok(s)) => Ok(*s),
            Some(Err(code)) => Err(io::Error::from_raw_os_error(*code)),
            None => panic!("statfs on an excluded or unknown mount point: {key}"),
        }
    })
}

fn fs(block_size: u64, blocks: u64, free: u64, avail: u64, files: u64, ffree: u64) -> io::Result<FsStat> {
    Ok(FsStat { block_size, blocks, blocks_free: free, blocks_avail: avail, files, files_free: ffree })
}

fn fixture_statfs(root: &Path) -> StatfsFn {
    table_statfs(
        root,
        HashMap::from([
            ("/", fs(4096, 1_000_000, 400_000, 350_000, 65536, 40000)),
            ("/dev/shm", fs(4096, 2_000_000, 2_000_000, 2_000_000, 2_048_000, 2_047_999)),
            ("/run", fs(4096, 409_600, 409_000, 409_000, 2_048_000, 2_047_000)),
            ("/boot/efi", fs(512, 1_048_576, 1_000_000, 1_000_000, 0, 0)),
            ("/var/lib/data", fs(4096, 25_000_000, 20_000_000, 20_000_000, 12_500_000, 12_400_000)),
            (
                "/var/lib/kubelet/pods/0c4d7a6e-1111-2222-3333-444455556666/volumes/kubernetes.io~projected/kube-api-access-x7k2p",
                fs(4096, 42_500, 42_497, 42_497, 2_048_000, 2_047_991),
            ),
            ("/mnt/my disk", fs(1024, 100, 50, 40, 10, 5)),
            ("/mnt/nas", Err(io::Error::from_raw_os_error(libc::EIO))),
        ]),
    )
}

fn render(collector: NodeCollector) -> (Registry, String) {
    let registry = Registry::new();
    registry.register(Box::new(collector)).unwrap();
    let text = String::from_utf8(vigil::server::render(&registry)).unwrap();
    (registry, text)
}

fn scrape(registry: &Registry) -> String {
    String::from_utf8(vigil::server::render(registry)).unwrap()
}

/// Drops what legitimately differs between runs: collector durations (and vigil's version).
fn stable(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("node_scrape_collector_duration_seconds{"))
        // Carries vigil's version; pinned in node_fixtures_kernel.rs.
        .filter(|l| !l.starts_with("node_exporter_build_info{"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The value of one exact series line (`name{labels}`), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().unwrap())
    })
}

#[test]
fn fixture_tree_output_is_pinned() {
    let root = fixture_root();
    let mut cfg = config(&root);
    // uname and the clock read the real machine, not files; they are checked below.
    cfg.collectors.uname = false;
    cfg.collectors.time = false;
    cfg.collectors.timex = false; // adjtimex(2): the real kernel clock, see node_fixtures_kernel.rs
    let (_, text) = render(NodeCollector::with_statfs(&cfg, fixture_statfs(&root)).unwrap());
    let got = stable(&text);
    let golden = root.join("expected.prom");
    if std::env::var_os("VIGIL_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    if got != want {
        let diff: Vec<String> = want
            .lines()
            .filter(|l| !got.lines().any(|g| g == *l))
            .map(|l| format!("- {l}"))
            .chain(got.lines().filter(|l| !want.lines().any(|w| w == *l)).map(|l| format!("+ {l}")))
            .collect();
        panic!("output differs from {} (VIGIL_UPDATE_GOLDEN=1 rewrites it):\n{}", golden.display(), diff.join("\n"));
    }
}

/// The golden file is generated; these are the figures worked out by hand from the fixture
/// files and node_exporter's rules, so a wrong rule cannot hide in a regenerated golden file.
#[test]
fn fixture_figures_follow_node_exporter_rules() {
    let root = fixture_root();
    let (_, t) = render(NodeCollector::with_statfs(&config(&root), fixture_statfs(&root)).unwrap());
    let v = |s: &str| value(&t, s).unwrap_or_else(|| panic!("no series {s} in:\n{t}"));
    // cpu: USER_HZ ticks / 100; guest columns separately.
    assert_eq!(v(r#"node_cpu_seconds_total{cpu="0",mode="user"}"#), 20.0);
    assert_eq!(v(r#"node_cpu_seconds_total{cpu="0",mode="nice"}"#), 0.1);
    assert_eq!(v(r#"node_cpu_seconds_total{cpu="1",mode="idle"}"#), 497.65);
    assert_eq!(v(r#"node_cpu_seconds_total{cpu="1",mode="steal"}"#), 0.37);
    assert_eq!(v(r#"node_cpu_guest_seconds_total{cpu="0",mode="user"}"#), 0.8);
    assert!(!t.contains(r#"cpu="cpu""#) && !t.contains(r#"mode="guest""#));
    assert!(t.contains("# TYPE node_cpu_seconds_total counter\n"));
    // stat
    assert_eq!(v("node_boot_time_seconds"), 1_700_000_000.0);
    assert_eq!(v("node_intr_total"), 123_456.0);
    assert_eq!(v("node_context_switches_total"), 987_654.0);
    assert_eq!(v("node_forks_total"), 4321.0);
    assert_eq!(v("node_procs_running"), 3.0);
    assert_eq!(v("node_procs_blocked"), 1.0);
    assert!(t.contains("# TYPE node_boot_time_seconds gauge\n") && t.contains("# TYPE node_forks_total counter\n"));
    // loadavg
    assert_eq!((v("node_load1"), v("node_load5"), v("node_load15")), (0.52, 1.25, 2.0));
    // meminfo: kB × 1024 with _bytes; (x) → _x; unitless HugePages_* as is.
    assert_eq!(v("node_memory_MemTotal_bytes"), 16_384_000.0 * 1024.0);
    assert_eq!(v("node_memory_Active_anon_bytes"), 2_048_000.0 * 1024.0);
    assert_eq!(v("node_memory_Committed_AS_bytes"), 8_388_608.0 * 1024.0);
    assert_eq!(v("node_memory_HugePages_Total"), 4.0);
    assert!(!t.contains("node_memory_HugePages_Total_bytes"));
    for f in ["MemFree", "MemAvailable", "Buffers", "Cached", "SwapTotal", "SwapFree", "Dirty", "Shmem", "Slab"] {
        assert!(t.contains(&format!("# TYPE node_memory_{f}_bytes gauge\n")), "{f}");
    }
    // diskstats: sectors × 512, ms / 1000; partitions, loop and zram excluded; dm kept.
    assert_eq!(v(r#"node_disk_read_bytes_total{device="sda"}"#), 8_765_432.0 * 512.0);
    assert_eq!(v(r#"node_disk_written_bytes_total{device="sda"}"#), 12_345_678.0 * 512.0);
    assert_eq!(v(r#"node_disk_reads_completed_total{device="sda"}"#), 104_567.0);
    assert_eq!(v(r#"node_disk_writes_completed_total{device="sda"}"#), 98_765.0);
    assert_eq!(v(r#"node_disk_io_time_seconds_total{device="sda"}"#), 234.567);
    assert_eq!(v(r#"node_disk_io_now{device="sda"}"#), 2.0);
    assert_eq!(v(r#"node_disk_discarded_sectors_total{device="sda"}"#), 2048.0);
    assert_eq!(v(r#"node_disk_flush_requests_total{device="nvme0n1"}"#), 42.0);
    assert_eq!(v(r#"node_disk_io_time_seconds_total{device="dm-0"}"#), 5.0);
    for gone in ["sda1", "nvme0n1p1", "loop0", "zram0"] {
        assert!(!t.contains(&format!(r#"device="{gone}""#)), "{gone} must be excluded");
    }
    // A pre-4.18 line has no discard columns: no discard series for it.
    assert_eq!(v(r#"node_disk_io_time_seconds_total{device="sdb"}"#), 0.08);
    assert!(value(&t, r#"node_disk_discards_completed_total{device="sdb"}"#).is_none());
    assert_eq!(
        v(
            r#"node_disk_info{device="sda",major="8",minor="0",model="Samsung_SSD_870_EVO_1TB",path="pci-0000:00:17.0-ata-1",revision="SVT01B6Q",serial="S6PTNZ0R123456A",wwn="0x5002538f4123abcd"}"#
        ),
        1.0
    );
    // serial: SCSI_IDENT_SERIAL, else ID_SERIAL_SHORT, else ID_SERIAL.
    assert!(t.contains(
        r#"node_disk_info{device="dm-0",major="253",minor="0",model="",path="",revision="",serial="LABEL-42",wwn=""} 1"#
    ));
    assert!(t.contains(r#"node_disk_info{device="nvme0n1",major="259",minor="0",model="QEMU_NVMe_Ctrl",path="",revision="",serial="deadbeef",wwn=""} 1"#));
    assert!(t.contains("# TYPE node_disk_io_now gauge\n") && t.contains("# TYPE node_disk_read_bytes_total counter\n"));
    // netdev: every device (lo too), the 16 legacy columns.
    assert_eq!(v(r#"node_network_receive_bytes_total{device="eth0"}"#), 170_444_648.0);
    assert_eq!(v(r#"node_network_receive_errs_total{device="eth0"}"#), 1.0);
    assert_eq!(v(r#"node_network_receive_drop_total{device="eth0"}"#), 2.0);
    assert_eq!(v(r#"node_network_receive_multicast_total{device="eth0"}"#), 6.0);
    assert_eq!(v(r#"node_network_transmit_packets_total{device="eth0"}"#), 3430.0);
    assert_eq!(v(r#"node_network_transmit_colls_total{device="eth0"}"#), 10.0);
    assert_eq!(v(r#"node_network_transmit_compressed_total{device="eth0"}"#), 12.0);
    assert_eq!(v(r#"node_network_transmit_bytes_total{device="lo"}"#), 2_890_101.0);
    assert_eq!(v(r#"node_network_receive_packets_total{device="cali1234abcd"}"#), 2.0);
    // filesystem: f_* × f_bsize; pseudo, overlay, /run/credentials, container storage and
    // squashfs excluded, tmpfs kept; \040 decoded; duplicates once; ro from options.
    let root_labels = r#"{device="/dev/sda2",fstype="ext4",mountpoint="/"}"#;
    assert_eq!(v(&format!("node_filesystem_size_bytes{root_labels}")), 4096.0 * 1_000_000.0);
    assert_eq!(v(&format!("node_filesystem_free_bytes{root_labels}")), 4096.0 * 400_000.0);
    assert_eq!(v(&format!("node_filesystem_avail_bytes{root_labels}")), 4096.0 * 350_000.0);
    assert_eq!(v(&format!("node_filesystem_files{root_labels}")), 65536.0);
    assert_eq!(v(&format!("node_filesystem_files_free{root_labels}")), 40000.0);
    assert_eq!(v(&format!("node_filesystem_device_error{root_labels}")), 0.0);
    assert_eq!(v(r#"node_filesystem_readonly{device="/dev/sda1",fstype="vfat",mountpoint="/boot/efi"}"#), 1.0);
    assert_eq!(
        v(r#"node_filesystem_size_bytes{device="/dev/sdb1",fstype="ext4",mountpoint="/mnt/my disk"}"#),
        102_400.0
    );
    assert_eq!(t.matches(r#"node_filesystem_size_bytes{device="/dev/mapper/vg-data""#).count(), 1);
    assert!(
        t.contains(r#"node_filesystem_size_bytes{device="tmpfs",fstype="tmpfs",mountpoint="/var/lib/kubelet/pods/"#)
    );
    for gone in ["/proc", "/sys", "/dev\"", "/run/credentials", "/var/lib/containers", "/sys/fs/cgroup", "/snap"] {
        assert!(!t.contains(&format!("mountpoint=\"{gone}")), "{gone} must be excluded");
    }
    // statfs error: device_error 1 and readonly, no sizes.
    let nas = r#"{device="nas:/export",fstype="nfs4",mountpoint="/mnt/nas"}"#;
    assert_eq!(v(&format!("node_filesystem_device_error{nas}")), 1.0);
    assert_eq!(v(&format!("node_filesystem_readonly{nas}")), 0.0);
    assert!(value(&t, &format!("node_filesystem_size_bytes{nas}")).is_none());
    // os
    assert_eq!(v(r#"node_os_version{id="ubuntu",id_like="debian",name="Ubuntu"}"#), 22.04);
    assert!(t.contains(r#"node_os_info{build_id="",id="ubuntu",id_like="debian",image_id="",image_version="",name="Ubuntu",pretty_name="Ubuntu 22.04.4 LTS",variant="",variant_id="",version="22.04.4 LTS (Jammy Jellyfish)",version_codename="jammy",version_id="22.04"} 1"#));
    // time: clock sources from the fixture sysfs; the clock itself is the real one.
    assert_eq!(v(r#"node_time_clocksource_available_info{clocksource="acpi_pm",device="0"}"#), 1.0);
    assert_eq!(v(r#"node_time_clocksource_current_info{clocksource="kvm-clock",device="0"}"#), 1.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((v("node_time_seconds") - now).abs() < 60.0);
    assert!(t.contains("node_time_zone_offset_seconds{time_zone=\""));
    // uname is the real machine's.
    let sysname = t.lines().find(|l| l.starts_with("node_uname_info{")).expect("node_uname_info");
    assert!(sysname.contains(r#"sysname="Linux""#) && sysname.ends_with(" 1"), "{sysname}");
    // Every collector reports success.
    for c in ["cpu", "diskstats", "filesystem", "loadavg", "meminfo", "netdev", "os", "stat", "time", "uname"] {
        assert_eq!(v(&format!(r#"node_scrape_collector_success{{collector="{c}"}}"#)), 1.0, "{c}");
        assert!(value(&t, &format!(r#"node_scrape_collector_duration_seconds{{collector="{c}"}}"#)).unwrap() >= 0.0);
    }
}

#[test]
fn a_missing_file_fails_only_its_collector() {
    let dir = tempfile::tempdir().unwrap();
    tree::copy_tree(&fixture_root(), dir.path());
    std::fs::remove_file(dir.path().join("proc/loadavg")).unwrap();
    let (registry, t) = render(NodeCollector::with_statfs(&config(dir.path()), fixture_statfs(dir.path())).unwrap());
    assert_eq!(value(&t, r#"node_scrape_collector_success{collector="loadavg"}"#), Some(0.0));
    assert_eq!(value(&t, r#"node_scrape_collector_success{collector="meminfo"}"#), Some(1.0));
    assert!(value(&t, "node_load1").is_none());
    assert!(value(&t, "node_memory_MemTotal_bytes").is_some());
    assert_eq!(value(&t, r#"vigil_node_collector_errors_total{collector="loadavg"}"#), Some(1.0));
    // It recovers when the file is back.
    std::fs::write(dir.path().join("proc/loadavg"), "1.00 2.00 3.00 1/2 3\n").unwrap();
    let t = scrape(&registry);
    assert_eq!(value(&t, r#"node_scrape_collector_success{collector="loadavg"}"#), Some(1.0));
    assert_eq!(value(&t, "node_load15"), Some(3.0));
    assert_eq!(value(&t, r#"vigil_node_collector_errors_total{collector="loadavg"}"#), Some(1.0));
}

#[test]
fn garbage_in_a_file_fails_its_collector_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    tree::copy_tree(&fixture_root(), dir.path());
    std::fs::write(dir.path().join("proc/stat"), "cpu0 x y z\n\u{0}\u{1}garbage\n").unwrap();
    std::fs::write(dir.path().join("proc/net/dev"), "h1\nh2\n  eth0: 1 2 3\n").unwrap();
    std::fs::write(dir.path().join("proc/meminfo"), "MemTotal: lots kB\n").unwrap();
    std::fs::write(dir.path().join("proc/diskstats"), "8 0 sda 1 2\nnonsense\n").unwrap();
    let (_, t) = render(NodeCollector::with_statfs(&config(dir.path()), fixture_statfs(dir.path())).unwrap());
    for c in ["cpu", "stat", "netdev", "meminfo"] {
        assert_eq!(value(&t, &format!(r#"node_scrape_collector_success{{collector="{c}"}}"#)), Some(0.0), "{c}");
    }
    // Short diskstats lines are skipped, not fatal.
    assert_eq!(value(&t, r#"node_scrape_collector_success{collector="diskstats"}"#), Some(1.0));
    assert!(!t.contains("node_cpu_seconds_total{"));
}

#[test]
fn proc_mounts_is_the_fallback_for_proc_1_mounts() {
    let dir = tempfile::tempdir().unwrap();
    tree::copy_tree(&fixture_root(), dir.path());
    std::fs::remove_dir_all(dir.path().join("proc/1")).unwrap();
    std::fs::write(dir.path().join("proc/mounts"), "/dev/sda2 / ext4 rw 0 0\n").unwrap();
    let (_, t) = render(NodeCollector::with_statfs(&config(dir.path()), fixture_statfs(dir.path())).unwrap());
    assert_eq!(
        value(&t, r#"node_filesystem_size_bytes{device="/dev/sda2",fstype="ext4",mountpoint="/"}"#),
        Some(4096e6)
    );
    assert_eq!(t.matches("node_filesystem_size_bytes{").count(), 1);
}

/// With the node's / at <rootfs> and vigil's own mount table (no host PID namespace), mounts
/// under <rootfs> are reported as the node sees them, and statfs (the real one) runs on them.
#[test]
fn mountpoints_are_reported_as_the_node_sees_them() {
    let host = tempfile::tempdir().unwrap();
    let root = host.path().join("host");
    let procfs = host.path().join("procfs");
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::create_dir_all(root.join("../hostdata")).unwrap();
    std::fs::create_dir_all(procfs.join("1")).unwrap();
    let r = root.display();
    std::fs::write(
        procfs.join("1/mounts"),
        format!("/dev/sda2 {r} ext4 rw 0 0\n/dev/sdb1 {r}/data xfs ro 0 0\n/dev/sdc1 {r}data ext4 rw 0 0\n"),
    )
    .unwrap();
    let mut cfg = config(&root);
    cfg.procfs = Some(procfs.display().to_string());
    cfg.collectors = serde_yaml_ng::from_str("{cpu: false, meminfo: false, loadavg: false, diskstats: false, netdev: false, stat: false, time: false, uname: false, os: false}").unwrap();
    let (_, t) = render(NodeCollector::new(&cfg).unwrap());
    let real = {
        // SAFETY: a valid C path and a zeroed out-parameter.
        let c = std::ffi::CString::new(root.join("data").display().to_string()).unwrap();
        let mut s: libc::statfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut s) }, 0);
        s.f_blocks as f64 * s.f_bsize as f64
    };
    assert_eq!(value(&t, r#"node_filesystem_size_bytes{device="/dev/sda2",fstype="ext4",mountpoint="/"}"#), Some(real));
    assert_eq!(
        value(&t, r#"node_filesystem_size_bytes{device="/dev/sdb1",fstype="xfs",mountpoint="/data"}"#),
        Some(real)
    );
    assert_eq!(value(&t, r#"node_filesystem_readonly{device="/dev/sdb1",fstype="xfs",mountpoint="/data"}"#), Some(1.0));
    // `<rootfs>data` is not under rootfs: kept whole (node_exporter would cut it to `data`).
    assert!(t.contains(&format!(r#"mountpoint="{r}data""#)), "{t}");
    assert_eq!(t.matches("node_filesystem_device_error{").count(), 3);
}

/// A statfs that blocks (a dead NFS server) costs one timeout once, is then skipped while it
/// stays blocked (no second call, so no second thread), and is reported again once it returns.
/// Two dead servers cost one timeout, not two: the scrape's statfs budget is one timeout.
#[test]
fn hung_statfs_does_not_hang_scrapes_or_pile_up_threads() {
    let root = fixture_root();
    let calls: Arc<Mutex<HashMap<PathBuf, usize>>> = Arc::default();
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let inner = fixture_statfs(&root);
    let hung = [root.join("var/lib/data"), root.join("mnt/nas")];
    let statfs: StatfsFn = {
        let (calls, gate, hung) = (calls.clone(), gate.clone(), hung.clone());
        Arc::new(move |p: &Path| {
            if hung.iter().any(|h| h == p) {
                *calls.lock().unwrap().entry(p.to_path_buf()).or_default() += 1;
                let (open, cv) = &*gate;
                let mut g = open.lock().unwrap();
                while !*g {
                    g = cv.wait(g).unwrap();
                }
                return fs(4096, 10, 5, 5, 3, 2);
            }
            inner(p)
        })
    };
    let mut cfg = config(&root);
    // Long enough that the grace given to healthy mounts after the budget is spent (a tenth of
    // it) is far above any scheduling delay on a loaded machine.
    cfg.filesystem.statfs_timeout = HumanDuration::millis(1000);
    let started = std::time::Instant::now();
    let (registry, t) = render(NodeCollector::with_statfs(&cfg, statfs).unwrap());
    // A bound for "the scrape did not hang", not a performance figure: two timeouts would be 2 s.
    assert!(started.elapsed() < Duration::from_millis(1900), "first scrape took {:?}", started.elapsed());
    let nas = r#"{device="nas:/export",fstype="nfs4",mountpoint="/mnt/nas"}"#;
    let data = r#"{device="/dev/mapper/vg-data",fstype="xfs",mountpoint="/var/lib/data"}"#;
    let check_hung = |t: &str| {
        for labels in [nas, data] {
            assert_eq!(value(t, &format!("node_filesystem_device_error{labels}")), Some(1.0), "{t}");
            assert!(value(t, &format!("node_filesystem_size_bytes{labels}")).is_none());
        }
        // Mounts after the hung ones in the table are still measured.
        assert_eq!(
            value(t, r#"node_filesystem_size_bytes{device="/dev/sdb1",fstype="ext4",mountpoint="/mnt/my disk"}"#),
            Some(102_400.0)
        );
        assert!(t.contains(
            r#"node_filesystem_device_error{device="tmpfs",fstype="tmpfs",mountpoint="/var/lib/kubelet/pods/"#
        ));
        assert!(!t.contains(r#"node_filesystem_device_error{device="tmpfs",fstype="tmpfs",mountpoint="/var/lib/kubelet/pods/0c4d7a6e-1111-2222-3333-444455556666/volumes/kubernetes.io~projected/kube-api-access-x7k2p"} 1"#));
        assert_eq!(value(t, r#"node_scrape_collector_success{collector="filesystem"}"#), Some(1.0));
    };
    check_hung(&t);
    assert_eq!(value(&t, "vigil_node_statfs_timeouts_total"), Some(2.0));
    for _ in 0..3 {
        let t = scrape(&registry);
        check_hung(&t);
        assert_eq!(value(&t, "vigil_node_statfs_timeouts_total"), Some(2.0), "a stuck mount is skipped, not retried");
    }
    // Two mounts share /mnt/nas (an over-mount): still one call.
    assert!(t_has(
        &scrape(&registry),
        r#"node_filesystem_device_error{device="nas-b:/export",fstype="nfs4",mountpoint="/mnt/nas"} 1"#
    ));
    let counts = calls.lock().unwrap().clone();
    assert_eq!(counts, HashMap::from([(hung[0].clone(), 1), (hung[1].clone(), 1)]), "one parked thread per dead mount");
    // The servers come back: the parked calls return and the mounts are measured again.
    {
        let (open, cv) = &*gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
    let back = vigil_wait(Duration::from_secs(10), || {
        let t = scrape(&registry);
        [nas, data].iter().all(|l| value(&t, &format!("node_filesystem_device_error{l}")) == Some(0.0)).then_some(t)
    })
    .expect("mounts reported again after their statfs returned");
    assert_eq!(value(&back, &format!("node_filesystem_size_bytes{nas}")), Some(40960.0));
    assert_eq!(value(&back, &format!("node_filesystem_size_bytes{data}")), Some(40960.0));
}

fn t_has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

fn vigil_wait<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// /proc/stat's per-CPU counters can step back (iowait races, hotplug): what is exported never
/// decreases, and an idle drop of 3 s or more starts that CPU over, as node_exporter.
#[test]
fn cpu_counters_never_go_backwards_except_after_hotplug() {
    let dir = tempfile::tempdir().unwrap();
    tree::copy_tree(&fixture_root(), dir.path());
    let stat = dir.path().join("proc/stat");
    let base = std::fs::read_to_string(&stat).unwrap();
    let with_cpu0 = |line: &str| {
        base.lines()
            .map(|l| if l.starts_with("cpu0 ") { line.to_string() } else { l.to_string() })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut cfg = config(dir.path());
    cfg.collectors = serde_yaml_ng::from_str("{meminfo: false, loadavg: false, filesystem: false, diskstats: false, netdev: false, stat: false, time: false, uname: false, os: false}").unwrap();
    let (registry, t) = render(NodeCollector::new(&cfg).unwrap());
    let iowait = r#"node_cpu_seconds_total{cpu="0",mode="iowait"}"#;
    let idle = r#"node_cpu_seconds_total{cpu="0",mode="idle"}"#;
    assert_eq!(value(&t, iowait), Some(3.0));
    // iowait steps back by 0.5 s, idle by 1 s: both held.
    std::fs::write(&stat, with_cpu0("cpu0 2000 10 1200 48900 250 0 20 30 80 0")).unwrap();
    let t = scrape(&registry);
    assert_eq!(value(&t, iowait), Some(3.0));
    assert_eq!(value(&t, idle), Some(490.0));
    // idle drops by 490 s: hotplug; the CPU starts over with the new figures.
    std::fs::write(&stat, with_cpu0("cpu0 5 0 3 100 1 0 0 0 0 0")).unwrap();
    let t = scrape(&registry);
    assert_eq!(value(&t, idle), Some(1.0));
    assert_eq!(value(&t, iowait), Some(0.01));
    // A CPU that goes offline is no longer reported.
    std::fs::write(&stat, base.lines().filter(|l| !l.starts_with("cpu1 ")).collect::<Vec<_>>().join("\n")).unwrap();
    let t = scrape(&registry);
    assert!(!t.contains(r#"node_cpu_seconds_total{cpu="1""#));
}

#[test]
fn disabled_collectors_are_not_run() {
    let root = fixture_root();
    let mut cfg = config(&root);
    cfg.collectors = serde_yaml_ng::from_str("{filesystem: false, meminfo: false}").unwrap();
    let c = NodeCollector::new(&cfg).unwrap();
    assert_eq!(
        c.names(),
        [
            "cpu",
            "diskstats",
            "loadavg",
            "netdev",
            "os",
            "stat",
            "time",
            "uname",
            "arp",
            "cpufreq",
            "entropy",
            "hwmon",
            "powersupplyclass",
            "schedstat",
            "softnet",
            "thermal_zone",
            "udp_queues",
            "bonding",
            "conntrack",
            "filefd",
            "mdadm",
            "netclass",
            "netstat",
            "pressure",
            "sockstat",
            "textfile",
            "timex",
            "vmstat",
        ]
    );
    let (_, t) = render(c);
    assert!(!t.contains("node_filesystem_") && !t.contains("node_memory_"));
    assert!(!t.contains(r#"collector="filesystem""#));
}

mod garbage {
    use super::*;
    use proptest::prelude::*;

    const FILES: [&str; 8] = [
        "proc/stat",
        "proc/meminfo",
        "proc/loadavg",
        "proc/diskstats",
        "proc/net/dev",
        "proc/1/mounts",
        "etc/os-release",
        "run/udev/data/b8:0",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        /// Any bytes in any file: a scrape returns (each collector succeeds or reports 0), never
        /// panics, and success is reported for every collector either way.
        #[test]
        fn arbitrary_file_contents_never_panic(
            contents in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), FILES.len()),
            keep_lines in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            tree::copy_tree(&fixture_root(), dir.path());
            for (file, bytes) in FILES.iter().zip(&contents) {
                let mut data = bytes.clone();
                if keep_lines {
                    // Mostly-valid files: a real file with garbage spliced in.
                    let mut real = std::fs::read(dir.path().join(file)).unwrap();
                    let at = real.len() / 2;
                    real.splice(at..at, data);
                    data = real;
                }
                std::fs::write(dir.path().join(file), data).unwrap();
            }
            let statfs: StatfsFn = Arc::new(|_: &Path| Err(io::Error::from_raw_os_error(libc::EACCES)));
            let mut cfg = config(dir.path());
            cfg.collectors.uname = false;
            let (_, t) = render(NodeCollector::with_statfs(&cfg, statfs).unwrap());
            for c in ["cpu", "diskstats", "filesystem", "loadavg", "meminfo", "netdev", "os", "stat", "time"] {
                let s = value(&t, &format!(r#"node_scrape_collector_success{{collector="{c}"}}"#));
                prop_assert!(s == Some(0.0) || s == Some(1.0), "{c}: {s:?}");
            }
        }
    }
}

/// Hand-worked figures for the hardware, scheduler and queue collectors (entropy, softnet,
/// schedstat, cpufreq, hwmon, thermal_zone, udp_queues, arp, powersupplyclass), from the
/// fixture files and node_exporter's rules, so a wrong rule cannot hide in the golden file.
#[test]
fn hardware_and_queue_figures_follow_node_exporter_rules() {
    let root = fixture_root();
    let (_, t) = render(NodeCollector::with_statfs(&config(&root), fixture_statfs(&root)).unwrap());
    let v = |s: &str| value(&t, s).unwrap_or_else(|| panic!("no series {s} in:\n{t}"));
    let has_type = |name: &str, kind: &str| t.contains(&format!("# TYPE {name} {kind}\n"));
    // entropy
    assert_eq!((v("node_entropy_available_bits"), v("node_entropy_pool_size_bits")), (3776.0, 4096.0));
    // softnet: hex columns; cpu from column 12 when present (row 2 is CPU 2, not 1).
    assert_eq!(v(r#"node_softnet_processed_total{cpu="0"}"#), 0x15c73 as f64);
    assert_eq!(v(r#"node_softnet_dropped_total{cpu="0"}"#), 0x20e76 as f64);
    assert_eq!(v(r#"node_softnet_times_squeezed_total{cpu="0"}"#), 0xf000_0769u32 as f64);
    assert_eq!(v(r#"node_softnet_processed_total{cpu="2"}"#), 0x1663fb2 as f64);
    assert_eq!(v(r#"node_softnet_cpu_collision_total{cpu="2"}"#), 10.0);
    assert_eq!(v(r#"node_softnet_received_rps_total{cpu="2"}"#), 11.0);
    assert_eq!(v(r#"node_softnet_flow_limit_count_total{cpu="2"}"#), 12.0);
    assert_eq!(v(r#"node_softnet_backlog_len{cpu="2"}"#), 7.0);
    assert!(value(&t, r#"node_softnet_processed_total{cpu="1"}"#).is_none());
    assert!(has_type("node_softnet_processed_total", "counter") && has_type("node_softnet_backlog_len", "gauge"));
    // schedstat: fields 7 and 8 in ns → s; 9 raw; domain lines ignored.
    assert_eq!(v(r#"node_schedstat_running_seconds_total{cpu="1"}"#), 1.052_133_95);
    assert_eq!(v(r#"node_schedstat_waiting_seconds_total{cpu="1"}"#), 2.406_301_017);
    assert_eq!(v(r#"node_schedstat_timeslices_total{cpu="0"}"#), 4_767_485_306.0);
    assert!(has_type("node_schedstat_running_seconds_total", "counter"));
    // cpufreq: kHz × 1000; offline cpu2 skipped; root-only cpuinfo_cur_freq absent for cpu1.
    assert_eq!(v(r#"node_cpu_frequency_hertz{cpu="0"}"#), 1.8e9);
    assert!(value(&t, r#"node_cpu_frequency_hertz{cpu="1"}"#).is_none());
    assert_eq!(v(r#"node_cpu_scaling_frequency_hertz{cpu="0"}"#), 1_799_998_000.0);
    assert_eq!(v(r#"node_cpu_frequency_min_hertz{cpu="1"}"#), 8e8);
    assert_eq!(v(r#"node_cpu_scaling_frequency_max_hertz{cpu="1"}"#), 2.4e9);
    assert_eq!(v(r#"node_cpu_scaling_governor{cpu="0",governor="powersave"}"#), 1.0);
    assert_eq!(v(r#"node_cpu_scaling_governor{cpu="0",governor="performance"}"#), 0.0);
    assert_eq!(v(r#"node_cpu_scaling_governor{cpu="1",governor="performance"}"#), 1.0);
    assert!(!t.contains(r#"cpu="2""#.replace("2", "2\",governor").as_str()) && !t.contains(r#"hertz{cpu="2"}"#));
    // hwmon: chip from the device path, else the name file, else hwmonX; units per type.
    assert_eq!(v(r#"node_hwmon_temp_celsius{chip="platform_coretemp_0",sensor="temp1"}"#), 55.0);
    assert_eq!(v(r#"node_hwmon_temp_max_celsius{chip="platform_coretemp_0",sensor="temp1"}"#), 84.0);
    assert_eq!(v(r#"node_hwmon_temp_crit_alarm_celsius{chip="platform_coretemp_0",sensor="temp1"}"#), 0.0);
    assert_eq!(v(r#"node_hwmon_temp_type{chip="platform_coretemp_0",sensor="temp2"}"#), 3.0);
    assert_eq!(v(r#"node_hwmon_chip_names{chip="platform_coretemp_0",chip_name="coretemp"}"#), 1.0);
    assert_eq!(v(r#"node_hwmon_sensor_label{chip="platform_coretemp_0",label="Package id 0",sensor="temp1"}"#), 1.0);
    assert_eq!(v(r#"node_hwmon_temp_celsius{chip="hwmon2",sensor="temp1"}"#), 30.0);
    assert_eq!(v(r#"node_hwmon_fan_rpm{chip="nct6775",sensor="fan1"}"#), 1200.0);
    assert_eq!(v(r#"node_hwmon_fan_min_rpm{chip="nct6775",sensor="fan1"}"#), 300.0);
    assert_eq!(v(r#"node_hwmon_fan_alarm{chip="nct6775",sensor="fan1"}"#), 0.0);
    assert_eq!(v(r#"node_hwmon_fan_beep_enabled{chip="nct6775",sensor="fan1"}"#), 1.0);
    assert_eq!(v(r#"node_hwmon_in_volts{chip="nct6775",sensor="in0"}"#), 1.016);
    assert_eq!(v(r#"node_hwmon_curr_amps{chip="nct6775",sensor="curr1"}"#), 2.5);
    assert_eq!(v(r#"node_hwmon_power_watt{chip="nct6775",sensor="power1"}"#), 12.345678);
    assert_eq!(v(r#"node_hwmon_power_accuracy{chip="nct6775",sensor="power1"}"#), 0.0025);
    assert_eq!(v(r#"node_hwmon_power_average_interval_seconds{chip="nct6775",sensor="power1"}"#), 1.0);
    assert_eq!(v(r#"node_hwmon_energy_joule_total{chip="nct6775",sensor="energy1"}"#), 123_456.789);
    assert!(has_type("node_hwmon_energy_joule_total", "counter") && has_type("node_hwmon_temp_celsius", "gauge"));
    assert_eq!(v(r#"node_hwmon_humidity{chip="nct6775",sensor="humidity1"}"#), 45.5);
    assert_eq!(v(r#"node_hwmon_pwm{chip="nct6775",sensor="pwm1"}"#), 153.0);
    assert_eq!(v(r#"node_hwmon_beep_enabled{chip="nct6775",sensor="beep_enable0"}"#), 1.0);
    assert_eq!(v(r#"node_hwmon_update_interval_seconds{chip="nct6775",sensor="update_interval0"}"#), 2.0);
    assert_eq!(v(r#"node_hwmon_voltage_regulator_version{chip="nct6775",sensor="vrm0"}"#), 10.0);
    assert_eq!(v(r#"node_hwmon_freq_freq_mhz{chip="nct6775",sensor="sclk"}"#), 1500.0);
    // Unparsable temp1_input skipped; unlabelled freq2 not exported; uevent not read.
    assert!(value(&t, r#"node_hwmon_temp_celsius{chip="nct6775",sensor="temp1"}"#).is_none());
    assert!(!t.contains(r#"sensor="freq2""#) && !t.contains("uevent"));
    // thermal_zone: millidegrees → °C; a cooling device without states skipped.
    assert_eq!(v(r#"node_thermal_zone_temp{type="x86_pkg_temp",zone="0"}"#), 48.0);
    assert_eq!(v(r#"node_thermal_zone_temp{type="acpitz",zone="1"}"#), -2.5);
    assert_eq!(v(r#"node_cooling_device_max_state{name="1",type="intel_powerclamp"}"#), 50.0);
    assert_eq!(v(r#"node_cooling_device_cur_state{name="1",type="intel_powerclamp"}"#), -1.0);
    assert!(!t.contains(r#"type="TCC""#));
    // udp_queues: hex tx:rx summed; v4 from the net/udp fallback, v6 from 1/net/udp6.
    assert_eq!(v(r#"node_udp_queues{ip="v4",queue="tx"}"#), 16.0);
    assert_eq!(v(r#"node_udp_queues{ip="v4",queue="rx"}"#), 2560.0);
    assert_eq!(v(r#"node_udp_queues{ip="v6",queue="tx"}"#), 4.0);
    assert_eq!(v(r#"node_udp_queues{ip="v6",queue="rx"}"#), 2.0);
    // arp: rows per device.
    assert_eq!(v(r#"node_arp_entries{device="eth0"}"#), 2.0);
    assert_eq!(v(r#"node_arp_entries{device="cni0"}"#), 1.0);
    // powersupplyclass: µ-units ÷ 1e6, temp ÷ 10, info labels only for non-empty values.
    assert_eq!(v(r#"node_power_supply_energy_watthour{power_supply="BAT0"}"#), 36.58);
    assert_eq!(v(r#"node_power_supply_power_watt{power_supply="BAT0"}"#), 5.002);
    assert_eq!(v(r#"node_power_supply_voltage_volt{power_supply="BAT0"}"#), 12.229);
    assert_eq!(v(r#"node_power_supply_temp_celsius{power_supply="BAT0"}"#), 25.1);
    assert_eq!(v(r#"node_power_supply_capacity{power_supply="BAT0"}"#), 81.0);
    assert_eq!(v(r#"node_power_supply_cyclecount{power_supply="BAT0"}"#), 0.0);
    assert_eq!(v(r#"node_power_supply_online{power_supply="AC"}"#), 1.0);
    assert_eq!(v(r#"node_power_supply_info{power_supply="AC",type="Mains"}"#), 1.0);
    assert!(t.contains(r#"node_power_supply_info{capacity_level="Normal",manufacturer="LGC",model_name="LNV-45N1",power_supply="BAT0",serial_number="38109",status="Discharging",technology="Li-ion",type="Battery"} 1"#));
    assert!(
        t.contains("# HELP node_power_supply_capacity capacity value of /sys/class/power_supply/<power_supply>.\n")
    );
    for c in
        ["arp", "cpufreq", "entropy", "hwmon", "powersupplyclass", "schedstat", "softnet", "thermal_zone", "udp_queues"]
    {
        assert_eq!(v(&format!(r#"node_scrape_collector_success{{collector="{c}"}}"#)), 1.0, "{c}");
    }
    // processes is off by default, as upstream.
    assert!(!t.contains("node_processes_") && !t.contains(r#"collector="processes""#));
}

/// processes (when switched on): per-process states, per-task thread states (the main thread
/// with its process' state), num_threads summed, the kernel limits; a comm with spaces and ')'.
#[test]
fn processes_counts_processes_and_threads_by_state() {
    let root = fixture_root();
    let mut cfg = config(&root);
    cfg.collectors = serde_yaml_ng::from_str("{processes: true}").unwrap();
    let (_, t) = render(NodeCollector::with_statfs(&cfg, fixture_statfs(&root)).unwrap());
    let v = |s: &str| value(&t, s).unwrap_or_else(|| panic!("no series {s} in:\n{t}"));
    assert_eq!(v(r#"node_scrape_collector_success{collector="processes"}"#), 1.0);
    assert_eq!(v("node_processes_pids"), 3.0);
    assert_eq!(v("node_processes_threads"), 4.0);
    assert_eq!(v("node_processes_max_threads"), 63404.0);
    assert_eq!(v("node_processes_max_processes"), 4_194_304.0);
    assert_eq!(v(r#"node_processes_state{state="S"}"#), 1.0);
    assert_eq!(v(r#"node_processes_state{state="I"}"#), 1.0);
    assert_eq!(v(r#"node_processes_state{state="R"}"#), 1.0);
    assert_eq!(v(r#"node_processes_threads_state{thread_state="S"}"#), 1.0);
    assert_eq!(v(r#"node_processes_threads_state{thread_state="D"}"#), 1.0);
    assert_eq!(v(r#"node_processes_threads_state{thread_state="I"}"#), 1.0);
    // pid 77 has no task/ directory here: counted as a process, no thread state.
    assert!(value(&t, r#"node_processes_threads_state{thread_state="R"}"#).is_none());
}

/// A node without hwmon, power supplies or schedstats (a VM): those collectors report "no
/// data" (success 0) as node_exporter's ErrNoData, without an error in the log; thermal_zone
/// and cpufreq report nothing and succeed, as upstream on such a node; the rest are intact.
#[test]
fn a_node_without_hardware_trees_reports_no_data_as_node_exporter() {
    let dir = tempfile::tempdir().unwrap();
    tree::copy_tree(&fixture_root(), dir.path());
    for d in ["sys/class", "sys/devices/system/cpu"] {
        std::fs::remove_dir_all(dir.path().join(d)).unwrap();
    }
    std::fs::remove_file(dir.path().join("proc/schedstat")).unwrap();
    let (_, t) = render(NodeCollector::with_statfs(&config(dir.path()), fixture_statfs(dir.path())).unwrap());
    let success = |c: &str| value(&t, &format!(r#"node_scrape_collector_success{{collector="{c}"}}"#));
    for c in ["hwmon", "powersupplyclass", "schedstat"] {
        assert_eq!(success(c), Some(0.0), "{c}");
        // Not a failure: not counted (Error::NoData).
        let errors = format!(r#"vigil_node_collector_errors_total{{collector="{c}"}}"#);
        assert!(value(&t, &errors).is_none(), "{c}");
    }
    for c in ["thermal_zone", "cpufreq", "entropy", "softnet", "cpu", "meminfo"] {
        assert_eq!(success(c), Some(1.0), "{c}");
    }
    assert!(!t.contains("node_hwmon_") && !t.contains("node_power_supply_") && !t.contains("node_schedstat_"));
    assert!(!t.contains("node_thermal_zone_temp{") && !t.contains("node_cpu_frequency"));
}

#[test]
fn garbage_in_hardware_and_queue_files_fails_only_its_collector() {
    let dir = tempfile::tempdir().unwrap();
    tree::copy_tree(&fixture_root(), dir.path());
    for f in ["proc/net/softnet_stat", "proc/schedstat", "proc/net/udp", "proc/sys/kernel/random/entropy_avail"] {
        std::fs::write(dir.path().join(f), "cpu0 zz 1 2\nnot:hex zz:yy a b c d e\n").unwrap();
    }
    std::fs::write(dir.path().join("sys/class/thermal/cooling_device0/max_state"), "lots\n").unwrap();
    let (_, t) = render(NodeCollector::with_statfs(&config(dir.path()), fixture_statfs(dir.path())).unwrap());
    let success = |c: &str| value(&t, &format!(r#"node_scrape_collector_success{{collector="{c}"}}"#));
    for c in ["softnet", "schedstat", "udp_queues", "entropy", "thermal_zone"] {
        assert_eq!(success(c), Some(0.0), "{c}");
    }
    assert_eq!(success("hwmon"), Some(1.0));
    assert!(!t.contains("node_udp_queues{") && !t.contains("node_softnet_"));
}

/// `/metrics` writes the node families straight from the collectors' flat form
/// (`metrics::node::render_text`); everything else (shipping, `Registry::gather`) gets protobuf.
/// Both must say the same, byte for byte: the whole fixture tree, every collector, a textfile
/// directory with untyped, histogram and summary families, label values that need escaping and
/// families split over two files, with vigil's own families sorting before, between and after
/// the node ones.
#[test]
fn metrics_text_written_directly_equals_the_encoders_output_of_the_gathered_families() {
    let root = fixture_root();
    let textfiles = tempfile::tempdir().unwrap();
    std::fs::write(
        textfiles.path().join("a.prom"),
        "# HELP z_last Escapes: back\\\\slash and \\n newline.\n# TYPE z_last gauge\n\
         z_last{path=\"a \\\"q\\\" b\",zone=\"back\\\\slash\\nnext\"} 1.5\nz_last{path=\"\",zone=\"a\"} +Inf\n\
         untyped_thing{b=\"2\"} 3\nuntyped_thing{b=\"1\"} -Inf\n\
         # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n\
         # TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 2\ns_count 3\n",
    )
    .unwrap();
    std::fs::write(textfiles.path().join("b.prom"), "# TYPE z_last gauge\nz_last{site=\"x\"} 7\n").unwrap();
    let mut cfg = config(&root);
    cfg.textfile_directory = Some(textfiles.path().display().to_string());
    let collector = NodeCollector::with_statfs(&cfg, fixture_statfs(&root)).unwrap();
    let registry = Registry::new();
    registry.register(Box::new(collector)).unwrap();
    for name in ["aaa_vigil_first", "node_m_between", "zzz_vigil_last"] {
        let c = prometheus::IntCounterVec::new(prometheus::Opts::new(name, "vigil's own"), &["sink"]).unwrap();
        c.with_label_values(&["b"]).inc();
        c.with_label_values(&["a"]).inc_by(2);
        registry.register(Box::new(c)).unwrap();
    }
    let direct = String::from_utf8(vigil::server::render(&registry)).unwrap();
    let mut encoded = Vec::new();
    vigil::server::encode(&registry.gather(), &mut encoded);
    let encoded = String::from_utf8(encoded).unwrap();
    assert!(direct.contains("node_cpu_seconds_total") && direct.contains("h_bucket") && direct.contains("z_last"));
    assert!(direct.contains(r#"zone="back\\slash\nnext""#), "{direct}");
    // The clock moves between the two scrapes; everything else is read from the fixture tree.
    let still =
        |t: &str| stable(t).lines().filter(|l| !l.starts_with("node_time_seconds ")).collect::<Vec<_>>().join("\n");
    if still(&direct) != still(&encoded) {
        let (d, e) = (still(&direct), still(&encoded));
        let first = d.lines().zip(e.lines()).find(|(a, b)| a != b);
        panic!(
            "first difference (direct, encoded): {first:?}\n{} against {} lines",
            d.lines().count(),
            e.lines().count()
        );
    }
}
