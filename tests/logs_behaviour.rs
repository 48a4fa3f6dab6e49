//! Behaviour of the log source on real files, one property per test: what the issue promises
//! about symlinks, malformed lines, partial lines, long lines, deleted files, backpressure,
//! fairness, `read_from`, `ignore_older` and inotify discovery.

mod logs_common;

use logs_common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vigil::config::{ByteSize, HumanDuration};

const WAIT: Duration = Duration::from_secs(10);

fn pod_file(root: &Path, ns: &str, pod: &str, container: &str) -> PathBuf {
    let dir = root.join(format!("pods/{ns}_{pod}_uid-{pod}/{container}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("0.log")
}

fn append(path: &Path, data: &[u8]) {
    std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(data).unwrap();
}

/// Waits until vigil has walked the include globs `n` more times (a positive sign that its loop
/// went on: whatever a walk would open has been opened).
async fn wait_rescans(r: &Running, n: u32) {
    let reg = r.registry.clone();
    let start = metric(&reg, "vigil_discovery_rescans_total");
    assert!(
        wait_for(WAIT, || metric(&reg, "vigil_discovery_rescans_total") >= start + f64::from(n)).await,
        "vigil stopped rescanning"
    );
}

fn new_got() -> Got {
    Arc::new(Mutex::new(Vec::new()))
}

fn messages(got: &Got) -> Vec<String> {
    got.lock().unwrap().iter().map(|g| g.1.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinked_file_is_read_once_under_its_real_path() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let f = pod_file(&root, "ns", "web", "nginx");
    append(&f, cri("stdout", "F", "once").as_bytes());
    let links = root.join("containers");
    std::fs::create_dir_all(&links).unwrap();
    std::os::unix::fs::symlink(&f, links.join("web_ns_nginx-0123abcd.log")).unwrap();
    let mut cfg = config(&root, &d.path().join("cp"));
    cfg.include.push(format!("{}/containers/*.log", root.display()));
    let got = new_got();
    let r = start(&cfg, got.clone()).await;
    assert!(wait_for(WAIT, || !got.lock().unwrap().is_empty()).await);
    // Two more walks that list the link: a second read would have started by then.
    wait_rescans(&r, 2).await;
    stop(r).await;
    assert_eq!(messages(&got), vec!["once"]);
    assert_eq!(got.lock().unwrap()[0].0, f.display().to_string(), "reported under the real path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lines_are_flagged_counted_and_do_not_stop_the_file() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let f = pod_file(&root, "ns", "p", "c");
    let mut data = cri("stdout", "F", "before").into_bytes();
    data.extend_from_slice(b"garbage \xff\xfe\x00 not cri\n");
    data.extend_from_slice(b"2026-13-45T99:00:00Z stdout F bad timestamp\n");
    data.extend_from_slice(cri("stdout", "F", "after").as_bytes());
    append(&f, &data);
    let got = new_got();
    let r = start(&config(&root, &d.path().join("cp")), got.clone()).await;
    assert!(wait_for(WAIT, || got.lock().unwrap().len() == 4).await, "{:?}", got.lock().unwrap());
    let errors = metric(&r.registry, "vigil_parse_errors_total");
    stop(r).await;
    let g = got.lock().unwrap();
    assert_eq!((g[0].1.as_str(), g[0].2), ("before", false));
    assert!(g[1].2 && g[1].1.starts_with("garbage \u{fffd}\u{fffd}"), "{:?}", g[1]);
    assert!(g[2].2 && g[2].1.contains("bad timestamp"));
    assert_eq!((g[3].1.as_str(), g[3].2), ("after", false));
    assert_eq!(errors, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_partial_is_flushed_after_the_timeout() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let f = pod_file(&root, "ns", "p", "c");
    append(&f, format!("{}{}", cri("stdout", "P", "exited "), cri("stdout", "P", "mid-line")).as_bytes());
    let mut cfg = config(&root, &d.path().join("cp"));
    cfg.partial_flush_timeout = HumanDuration::millis(200);
    let got = new_got();
    let r = start(&cfg, got.clone()).await;
    assert!(wait_for(WAIT, || !got.lock().unwrap().is_empty()).await);
    stop(r).await;
    assert_eq!(messages(&got), vec!["exited mid-line"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_split_records_merge_per_stream() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let id = "abc123";
    let dir = root.join("docker").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.v2.json"),
        r#"{"Config":{"Labels":{"io.kubernetes.pod.namespace":"jobs","io.kubernetes.pod.name":"batch","io.kubernetes.pod.uid":"u1","io.kubernetes.container.name":"worker"}}}"#,
    )
    .unwrap();
    let big = "y".repeat(16 * 1024);
    let rec = |log: &str, stream: &str| {
        format!(
            "{{\"log\":{},\"stream\":\"{stream}\",\"time\":\"2026-11-28T06:10:01.5Z\"}}\n",
            serde_json::to_string(log).unwrap()
        )
    };
    let data = rec(&big, "stdout") + &rec("interleaved\n", "stderr") + &rec("tail\n", "stdout");
    append(&dir.join(format!("{id}-json.log")), data.as_bytes());
    let got = new_got();
    let registry_file;
    {
        let r = start(&config(&root, &d.path().join("cp")), got.clone()).await;
        assert!(wait_for(WAIT, || got.lock().unwrap().len() == 2).await);
        registry_file = got.lock().unwrap()[0].0.clone();
        stop(r).await;
    }
    let m = messages(&got);
    assert_eq!(m[0], "interleaved");
    assert_eq!(m[1], format!("{big}tail"));
    assert!(registry_file.ends_with("-json.log"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_are_truncated_without_buffering_them() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let f = pod_file(&root, "ns", "p", "c");
    // A 4 MiB line written in pieces, then a normal one.
    let mut w = std::fs::OpenOptions::new().create(true).append(true).open(&f).unwrap();
    w.write_all(b"2026-11-28T06:12:13Z stdout F ").unwrap();
    for _ in 0..64 {
        w.write_all(&[b'z'; 64 * 1024]).unwrap();
    }
    w.write_all(b"\n").unwrap();
    // A long line of 2-byte characters (cut inside the carry buffer, at an odd offset).
    w.write_all(b"2026-11-28T06:12:13Z stdout F x").unwrap();
    w.write_all("é".repeat(100_000).as_bytes()).unwrap();
    w.write_all(b"\n").unwrap();
    // And a runtime-split line of many P records.
    for _ in 0..100 {
        w.write_all(cri("stderr", "P", &"p".repeat(100)).as_bytes()).unwrap();
    }
    w.write_all(cri("stderr", "F", "end").as_bytes()).unwrap();
    w.write_all(cri("stdout", "F", "next").as_bytes()).unwrap();
    drop(w);
    let mut cfg = config(&root, &d.path().join("cp"));
    cfg.max_line_bytes = ByteSize::kib(2);
    let got = new_got();
    let r = start(&cfg, got.clone()).await;
    assert!(wait_for(WAIT, || got.lock().unwrap().len() == 4).await, "{}", got.lock().unwrap().len());
    let truncated = metric(&r.registry, "vigil_lines_truncated_total");
    stop(r).await;
    let g = got.lock().unwrap();
    assert_eq!(g[0].1, "z".repeat(2048));
    assert!(g[0].3);
    assert_eq!(g[1].1, format!("x{}", "é".repeat(1023)), "cut at a char boundary, not malformed");
    assert!(g[1].3 && !g[1].2);
    assert_eq!(g[2].1, "p".repeat(2048));
    assert!(g[2].3);
    assert_eq!((g[3].1.as_str(), g[3].3), ("next", false));
    assert_eq!(truncated, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_file_far_behind_is_closed_and_counted() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let f = pod_file(&root, "ns", "p", "c");
    let line = cri("stdout", "F", &"d".repeat(200));
    append(&f, line.repeat(20_000).as_bytes());
    let mut cfg = config(&root, &d.path().join("cp"));
    cfg.deleted_file_max_unread = ByteSize::kib(64);
    cfg.batch_max_bytes = ByteSize::kib(8);
    let got = new_got();
    // A slow sink keeps vigil far behind.
    let r = start_slow(&cfg, got.clone(), Duration::from_millis(50)).await;
    assert!(wait_for(WAIT, || !got.lock().unwrap().is_empty()).await);
    std::fs::remove_file(&f).unwrap();
    let reg = r.registry.clone();
    assert!(wait_for(WAIT, || metric(&reg, "vigil_deleted_files_dropped_total") == 1.0).await);
    assert_eq!(metric(&reg, "vigil_deleted_files_dropped_total{cause=\"max_unread\"}"), 1.0);
    assert!(metric(&reg, "vigil_deleted_bytes_dropped_total{cause=\"max_unread\"}") > 1_000_000.0);
    // The descriptor is closed: the disk space is free.
    let held = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .any(|p| p.display().to_string().contains(&f.display().to_string()));
    assert!(!held, "deleted file still open");
    stop(r).await;
    assert!(got.lock().unwrap().len() < 20_000);
}

/// Issue 15: what a bound drops is counted exactly, by cause. A deleted file held past
/// `deleted_file_max_hold` while the sink is down: the bytes shipped plus the bytes counted as
/// dropped are the whole file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_file_held_too_long_is_dropped_and_counted_exactly() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let f = pod_file(&root, "ns", "p", "c");
    let line = cri("stdout", "F", &"h".repeat(200));
    append(&f, line.repeat(5_000).as_bytes());
    let size = std::fs::metadata(&f).unwrap().len() as f64;
    let mut cfg = config(&root, &d.path().join("cp"));
    cfg.deleted_file_max_hold = HumanDuration::millis(300);
    cfg.batch_max_bytes = ByteSize::kib(8);
    let got = new_got();
    let (gate, gate_rx) = tokio::sync::watch::channel(false);
    let r = start_gated(&cfg, got.clone(), Duration::ZERO, gate_rx).await;
    let reg = r.registry.clone();
    assert!(wait_for(WAIT, || metric(&reg, "vigil_lag_bytes") > 500_000.0).await);
    std::fs::remove_file(&f).unwrap();
    assert!(wait_for(WAIT, || metric(&reg, "vigil_deleted_files_dropped_total{cause=\"max_hold\"}") == 1.0).await);
    assert_eq!(metric(&reg, "vigil_deleted_files_dropped_total{cause=\"max_unread\"}"), 0.0);
    assert_eq!(metric(&reg, "vigil_held_files"), 0.0);
    gate.send_replace(true);
    let dropped = metric(&reg, "vigil_deleted_bytes_dropped_total{cause=\"max_hold\"}");
    assert!(dropped > 500_000.0);
    let shipped = || got.lock().unwrap().len() as f64 * line.len() as f64;
    assert!(
        wait_for(WAIT, || shipped() + dropped == size).await,
        "shipped {} + dropped {dropped} bytes of {size}",
        shipped()
    );
    stop(r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sink_stops_reading() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let f = pod_file(&root, "ns", "p", "c");
    let line = cri("stdout", "F", &"b".repeat(200));
    append(&f, line.repeat(100_000).as_bytes()); // ~24 MB
    let mut cfg = config(&root, &d.path().join("cp"));
    cfg.batch_max_bytes = ByteSize::kib(64);
    let got = new_got();
    let r = start_slow(&cfg, got.clone(), Duration::from_secs(3600)).await;
    // The tailer read something and then fell behind: the lag gauges show it (they stay live
    // while the tailer waits on the full queue).
    let reg = r.registry.clone();
    let size = std::fs::metadata(&f).unwrap().len() as f64;
    assert!(wait_for(WAIT, || metric(&reg, "vigil_lag_bytes") >= size - 2_000_000.0).await);
    assert!(metric(&reg, "vigil_read_bytes_total") > 0.0);
    // And it stays behind while its loop keeps going (rescans go on under backpressure).
    wait_rescans(&r, 3).await;
    let read = metric(&reg, "vigil_read_bytes_total");
    // Queues: 4 source batches + 4 sink chunks + one in the sink + one being built, 64 KiB of
    // messages each, plus one read slice.
    assert!(read < 2_000_000.0, "read {read} bytes with a stalled sink");
    assert_eq!(metric(&reg, "vigil_lag_max_bytes"), metric(&reg, "vigil_lag_bytes"));
    // Stop does not hang on the stalled sink.
    let mut source = r.source;
    tokio::time::timeout(Duration::from_secs(5), source.stop_intake())
        .await
        .expect("stop_intake hung on a stalled sink");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_file_does_not_starve_a_quiet_one() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let busy = pod_file(&root, "ns", "busy", "c");
    let quiet = pod_file(&root, "ns", "quiet", "c");
    append(&busy, cri("stdout", "F", &"B".repeat(200)).repeat(50_000).as_bytes());
    append(&quiet, cri("stdout", "F", "quiet line").as_bytes());
    let cfg = config(&root, &d.path().join("cp"));
    let got = new_got();
    let r = start(&cfg, got.clone()).await;
    assert!(wait_for(WAIT, || messages(&got).iter().any(|m| m == "quiet line")).await);
    let pos = messages(&got).iter().position(|m| m == "quiet line").unwrap();
    stop(r).await;
    // read_budget is 16 KiB: the quiet file is read after at most one slice of the busy one.
    let slice_lines = 16 * 1024 / 243 + 1;
    assert!(pos <= slice_lines, "quiet line came after {pos} busy lines");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_from_end_skips_existing_lines_but_not_new_files() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let f = pod_file(&root, "ns", "p", "c");
    append(&f, format!("{}{}", cri("stdout", "F", "old"), "2026-11-28T06:12:13Z stdout F unfinished").as_bytes());
    let mut cfg = config(&root, &d.path().join("cp"));
    cfg.read_from = vigil::logs::config::ReadFrom::End;
    let got = new_got();
    let r = start(&cfg, got.clone()).await;
    append(&f, b" now finished\n");
    append(&f, cri("stdout", "F", "new").as_bytes());
    let later = pod_file(&root, "ns", "later", "c");
    append(&later, cri("stdout", "F", "from a new file").as_bytes());
    assert!(wait_for(WAIT, || got.lock().unwrap().len() == 3).await, "{:?}", messages(&got));
    stop(r).await;
    let mut m = messages(&got);
    m.sort();
    assert_eq!(m, vec!["from a new file", "new", "unfinished now finished"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_older_skips_stale_files() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let stale = pod_file(&root, "ns", "stale", "c");
    let fresh = pod_file(&root, "ns", "fresh", "c");
    append(&stale, cri("stdout", "F", "stale").as_bytes());
    append(&fresh, cri("stdout", "F", "fresh").as_bytes());
    let old = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options().write(true).open(&stale).unwrap().set_modified(old).unwrap();
    let mut cfg = config(&root, &d.path().join("cp"));
    cfg.ignore_older = Some(HumanDuration::secs(3600));
    let got = new_got();
    let r = start(&cfg, got.clone()).await;
    assert!(wait_for(WAIT, || !got.lock().unwrap().is_empty()).await);
    // Two more walks that list the stale file: it would have been opened by then.
    wait_rescans(&r, 2).await;
    stop(r).await;
    assert_eq!(messages(&got), vec!["fresh"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_files_are_found_by_inotify_before_any_rescan() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    std::fs::create_dir_all(root.join("pods")).unwrap();
    let mut cfg = config(&root, &d.path().join("cp"));
    cfg.rescan_interval = HumanDuration::secs(3600);
    let got = new_got();
    let r = start(&cfg, got.clone()).await;
    // A new pod directory, container directory and file, after start.
    let f = pod_file(&root, "ns", "new", "c");
    append(&f, cri("stdout", "F", "hello").as_bytes());
    assert!(wait_for(Duration::from_secs(5), || !got.lock().unwrap().is_empty()).await, "not found without a rescan");
    assert_eq!(metric(&r.registry, "vigil_inotify_fallback"), 0.0);
    stop(r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_checkpoint_is_kept_aside_and_reading_starts_over() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let cp = d.path().join("cp");
    std::fs::create_dir_all(&cp).unwrap();
    std::fs::write(cp.join("checkpoints.json"), b"\x00\x01 not json").unwrap();
    let f = pod_file(&root, "ns", "p", "c");
    append(&f, cri("stdout", "F", "one").as_bytes());
    let got = new_got();
    let r = start(&config(&root, &cp), got.clone()).await;
    assert!(wait_for(WAIT, || got.lock().unwrap().len() == 1).await);
    stop(r).await;
    let names: Vec<String> =
        std::fs::read_dir(&cp).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().any(|n| n.starts_with("checkpoints.json.corrupt-")), "{names:?}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(cp.join("checkpoints.json")).unwrap()).unwrap();
    assert_eq!(doc["files"][0]["offset"], cri("stdout", "F", "one").len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_names_matched_by_the_globs_are_not_read_twice() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let f = pod_file(&root, "ns", "p", "c");
    append(&f, cri("stdout", "F", "one").repeat(3).as_bytes());
    let mut cfg = config(&root, &d.path().join("cp"));
    cfg.include = vec![format!("{}/pods/*/*/*.log*", root.display())];
    let got = new_got();
    let r = start(&cfg, got.clone()).await;
    assert!(wait_for(WAIT, || got.lock().unwrap().len() == 3).await);
    std::fs::rename(&f, f.with_extension("log.20261128-061213")).unwrap();
    append(&f, cri("stdout", "F", "two").as_bytes());
    assert!(wait_for(WAIT, || got.lock().unwrap().len() == 4).await);
    // Several rescans and checkpoint writes later, still nothing read twice.
    wait_rescans(&r, 5).await;
    stop(r).await;
    assert_eq!(messages(&got), vec!["one", "one", "one", "two"]);
}

/// Whether this process holds `path` open (vigil runs in the test process; the test's own
/// writes open and close their handle, so an open descriptor on the path is the tailer's).
fn held_open(path: &Path) -> bool {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|p| p == path)
}

/// kubelet's rotation of one container's file: rename to `<file>.<n>`, the runtime writes one
/// more line to the renamed file before reopening, the rotated files but the newest are
/// compressed (`.gz`, the plain file removed), and only `keep` rotated files are kept.
fn kubelet_rotate(path: &Path, n: u32, last_line: &str, keep: usize) {
    let mut handle = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    let rotated = PathBuf::from(format!("{}.20261128-0612{n:02}", path.display()));
    std::fs::rename(path, &rotated).unwrap();
    handle.write_all(last_line.as_bytes()).unwrap();
    drop(handle);
    std::fs::File::create(path).unwrap();
    let dir = path.parent().unwrap();
    let mut rotated_names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != path && p.file_name().unwrap().to_str().unwrap().starts_with("0.log."))
        .collect();
    rotated_names.sort();
    for p in &rotated_names {
        if *p != rotated && p.extension().is_none_or(|x| x != "gz") {
            let gz = PathBuf::from(format!("{}.gz", p.display()));
            let mut enc =
                flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
            enc.write_all(&std::fs::read(p).unwrap()).unwrap();
            enc.finish().unwrap();
            std::fs::remove_file(p).unwrap();
        }
    }
    let mut rotated_names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != path && p.file_name().unwrap().to_str().unwrap().starts_with("0.log."))
        .collect();
    rotated_names.sort();
    while rotated_names.len() > keep {
        std::fs::remove_file(rotated_names.remove(0)).unwrap();
    }
}

/// Regression (issue 15, measured: 11,079 of 27,972 lines lost): while the sinks pushed back,
/// the tailer sat in its blocking send, so no rescan ran and no file was opened; files created
/// during the outage were rotated, compressed and pruned before vigil ever opened them. Here
/// the sink delivers nothing while three containers rotate four times (kubelet-style: rename,
/// compress all but the newest rotated file, keep two), then comes back: every line arrives,
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_and_pruned_files_are_read_after_a_sink_outage() {
    const CONTAINERS: usize = 3;
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let files: Vec<PathBuf> = (0..CONTAINERS).map(|i| pod_file(&root, "ns", &format!("p{i}"), "c")).collect();
    let mut want: Vec<Vec<String>> = vec![Vec::new(); CONTAINERS];
    let mut seq = 0;
    let mut lines = |i: usize, n: usize, want: &mut Vec<Vec<String>>| -> String {
        let mut s = String::new();
        for _ in 0..n {
            seq += 1;
            let m = format!("c{i} n{seq} {}", "o".repeat(80));
            s.push_str(&cri("stdout", "F", &m));
            want[i].push(m);
        }
        s
    };
    for (i, f) in files.iter().enumerate() {
        append(f, lines(i, 10, &mut want).as_bytes());
    }
    let mut cfg = config(&root, &d.path().join("cp"));
    cfg.batch_max_bytes = ByteSize::kib(8);
    let got = new_got();
    let (gate, gate_rx) = tokio::sync::watch::channel(true);
    let r = start_gated(&cfg, got.clone(), Duration::ZERO, gate_rx).await;
    assert!(wait_for(WAIT, || got.lock().unwrap().len() == 10 * CONTAINERS).await);

    // The backend goes down; the queues fill and the tailer falls behind.
    gate.send_replace(false);
    for (i, f) in files.iter().enumerate() {
        append(f, lines(i, 2000, &mut want).as_bytes());
    }
    let reg = r.registry.clone();
    assert!(
        wait_for(WAIT, || metric(&reg, "vigil_lag_bytes") > 200_000.0).await,
        "the stalled sink did not hold the tailer back"
    );
    for n in 1..=4 {
        for (i, f) in files.iter().enumerate() {
            let last = lines(i, 1, &mut want);
            kubelet_rotate(f, n, &last, 2);
            append(f, lines(i, 200, &mut want).as_bytes());
        }
        // A runtime rotates every few seconds at most: vigil has time to open the new files.
        // (Not asserted here: the lines arriving is what counts.)
        wait_for(Duration::from_secs(5), || files.iter().all(|f| held_open(f))).await;
    }
    for (i, f) in files.iter().enumerate() {
        append(f, lines(i, 5, &mut want).as_bytes());
    }
    // What waits is shown: at least each container's first file (rotated, compressed: deleted)
    // is held with its unread bytes.
    assert!(
        wait_for(WAIT, || metric(&reg, "vigil_held_files") >= CONTAINERS as f64
            && metric(&reg, "vigil_held_bytes") > 100_000.0)
        .await,
        "held: {} files, {} bytes",
        metric(&reg, "vigil_held_files"),
        metric(&reg, "vigil_held_bytes")
    );

    // The backend is back: everything written during the outage arrives, in order.
    gate.send_replace(true);
    let total: usize = want.iter().map(Vec::len).sum();
    let arrived = wait_for(Duration::from_secs(60), || got.lock().unwrap().len() >= total).await;
    let dropped = metric(&r.registry, "vigil_deleted_bytes_dropped_total");
    stop(r).await;
    let g = got.lock().unwrap();
    for (i, f) in files.iter().enumerate() {
        let have: Vec<&String> = g.iter().filter(|e| e.0 == f.display().to_string()).map(|e| &e.1).collect();
        let missing = want[i].iter().filter(|m| !have.contains(m)).count();
        assert_eq!(missing, 0, "container {i}: {missing} of {} lines lost (arrived: {arrived})", want[i].len());
        assert!(have.iter().copied().eq(want[i].iter()), "container {i}: lines out of order or twice");
    }
    assert_eq!(g.len(), total);
    assert_eq!(dropped, 0.0);
    drop(g);
}

/// The offset the checkpoint file records for `file`'s entry, if any.
fn checkpointed(cp: &Path, file: &Path) -> Option<u64> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(cp.join("checkpoints.json")).ok()?).ok()?;
    doc["files"].as_array()?.iter().find(|e| e["path"] == file.display().to_string())?["offset"].as_u64()
}

/// Issue 15: the checkpoint follows acks (written within `checkpoint_interval` of a commit,
/// commits coalesced) instead of being rewritten every interval whether or not anything changed.
/// Regression: the old writer rewrote an unchanged checkpoint every interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_follows_acks_and_is_not_rewritten_while_idle() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let cp = d.path().join("cp");
    let f = pod_file(&root, "ns", "p", "c");
    append(&f, cri("stdout", "F", "first").as_bytes());
    let mut cfg = config(&root, &cp);
    cfg.checkpoint_interval = HumanDuration::millis(50);
    let got = new_got();
    let r = start(&cfg, got.clone()).await;
    assert!(wait_for(WAIT, || got.lock().unwrap().len() == 1).await);
    let size = std::fs::metadata(&f).unwrap().len();
    assert!(wait_for(WAIT, || checkpointed(&cp, &f) == Some(size)).await, "the ack never reached the checkpoint");

    // Idle: several rescans (200 ms apart, four checkpoint intervals each) and no write. The
    // write is counted just after its file is in place: read the count one rescan later, so
    // a loaded machine cannot put that count inside the idle window.
    let reg = r.registry.clone();
    let rescans = metric(&reg, "vigil_discovery_rescans_total");
    assert!(wait_for(WAIT, || metric(&reg, "vigil_discovery_rescans_total") >= rescans + 1.0).await);
    let writes = metric(&reg, "vigil_checkpoint_writes_total");
    assert!(writes >= 1.0, "the checkpoint on disk was not counted");
    let rescans = metric(&reg, "vigil_discovery_rescans_total");
    assert!(wait_for(WAIT, || metric(&reg, "vigil_discovery_rescans_total") >= rescans + 3.0).await);
    assert_eq!(metric(&reg, "vigil_checkpoint_writes_total"), writes, "an unchanged checkpoint was written again");

    // The next ack is written again.
    append(&f, cri("stdout", "F", "second").as_bytes());
    assert!(wait_for(WAIT, || got.lock().unwrap().len() == 2).await);
    let size = std::fs::metadata(&f).unwrap().len();
    assert!(
        wait_for(WAIT, || checkpointed(&cp, &f) == Some(size)).await,
        "the second ack never reached the checkpoint"
    );
    stop(r).await;
}
