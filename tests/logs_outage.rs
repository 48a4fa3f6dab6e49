//! The measured scenario of issue 15, in real time (30 s, so `#[ignore]`d; run with
//! `cargo test --test logs_outage -- --ignored --nocapture`): six containers writing 150
//! lines/s each, kubelet-style rotation (rename at 256 KiB, rotated files but the newest
//! compressed, two kept), and the sink down for 20 s. Prints what was written, delivered and
//! lost; nothing may be lost. The bounded, fast version of this runs in every suite:
//! `logs_behaviour::rotated_and_pruned_files_are_read_after_a_sink_outage`.

mod logs_common;

use logs_common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vigil::config::{ByteSize, HumanDuration};

const CONTAINERS: usize = 6;
const LINES_PER_SEC: f64 = 150.0;

/// The kubelet's rotation: rename to `<file>.<n>`, a new file at the path, the rotated files
/// but the newest compressed (plain one removed), at most two rotated files kept.
fn rotate(path: &Path, n: u32) {
    let rotated = PathBuf::from(format!("{}.20261128-06{n:04}", path.display()));
    std::fs::rename(path, &rotated).unwrap();
    std::fs::File::create(path).unwrap();
    let dir = path.parent().unwrap();
    let list = || {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p != path && p.file_name().unwrap().to_str().unwrap().starts_with("0.log."))
            .collect();
        v.sort();
        v
    };
    for p in list() {
        if p != rotated && p.extension().is_none_or(|x| x != "gz") {
            let gz = PathBuf::from(format!("{}.gz", p.display()));
            let mut enc =
                flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
            enc.write_all(&std::fs::read(&p).unwrap()).unwrap();
            enc.finish().unwrap();
            std::fs::remove_file(&p).unwrap();
        }
    }
    let mut v = list();
    while v.len() > 2 {
        std::fs::remove_file(v.remove(0)).unwrap();
    }
}

/// One container: `LINES_PER_SEC` lines, rotated at 256 KiB, until `stop`.
fn container(c: usize, path: PathBuf, written: Arc<AtomicUsize>, stop: Arc<AtomicBool>) {
    let (mut n, mut rotations) = (0u64, 0);
    let t0 = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let due = (t0.elapsed().as_secs_f64() * LINES_PER_SEC) as u64;
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        while n < due {
            f.write_all(cri("stdout", "F", &format!("c{c} n{n} {}", "x".repeat(120))).as_bytes()).unwrap();
            n += 1;
            written.fetch_add(1, Ordering::Relaxed);
        }
        drop(f);
        if std::fs::metadata(&path).unwrap().len() >= 256 * 1024 {
            rotations += 1;
            rotate(&path, rotations);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "30 s in real time; the bounded version runs in logs_behaviour"]
async fn a_20_second_sink_outage_under_kubelet_rotation_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    std::fs::create_dir_all(root.join("pods")).unwrap();
    let mut cfg = config(&root, &d.path().join("cp"));
    // The defaults, not the test harness's fast polls.
    cfg.poll_interval = HumanDuration::millis(250);
    cfg.rescan_interval = HumanDuration::secs(10);
    cfg.read_budget = ByteSize::kib(256);
    let got: Got = Arc::new(Mutex::new(Vec::new()));
    let (gate, gate_rx) = tokio::sync::watch::channel(true);
    let r = start_gated(&cfg, got.clone(), Duration::ZERO, gate_rx).await;
    let written = Arc::new(AtomicUsize::new(0));
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..CONTAINERS)
        .map(|c| {
            let dir = root.join(format!("pods/ns_p{c}_u{c}/c"));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("0.log");
            std::fs::File::create(&path).unwrap();
            let (written, stop) = (written.clone(), stop_writing.clone());
            std::thread::spawn(move || container(c, path, written, stop))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    gate.send_replace(false);
    tokio::time::sleep(Duration::from_secs(20)).await;
    gate.send_replace(true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop_writing.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let total = written.load(Ordering::Relaxed);
    wait_for(Duration::from_secs(60), || got.lock().unwrap().len() >= total).await;
    let delivered = got.lock().unwrap().len();
    let dropped = metric(&r.registry, "vigil_deleted_bytes_dropped_total");
    eprintln!(
        "written {total}, delivered {delivered}, lost {}, bytes dropped {dropped}",
        total.saturating_sub(delivered)
    );
    stop(r).await;
    assert_eq!(delivered, total);
}
