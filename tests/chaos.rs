//! Chaos scenarios (issue 15, "Lose nothing"): the real vigil binary on a temp node tree whose
//! writers rotate, copytruncate and delete, shipping to the in-process Loki and `_bulk`
//! receivers while it is SIGKILLed, its sinks go away, its checkpoint directory turns read-only
//! or full. Each scenario counts lost, duplicated and reordered lines per sink
//! (`chaos_support`) and prints one table row per sink.
//!
//! The plain tests are the bounded versions (seconds each) run by `cargo test`; the `soak_*`
//! tests are the long versions, `#[ignore]`d, run by `scripts/chaos.sh` (release build,
//! `VIGIL_CHAOS_SECS`), which prints the table kept in README ("Chaos soak").
//!
//! Every assertion comes after the rows are printed, so a failing scenario still reports its
//! numbers.

mod chaos_support;
mod support;

use chaos_support::*;
use std::time::{Duration, Instant};

/// Duplicates allowed per SIGKILL: the lines in flight (read, not yet checkpointed) at a kill
/// (issue 15's target).
const DUPLICATES_PER_KILL: u64 = 500;

fn soak() -> bool {
    std::env::var_os("VIGIL_CHAOS_SECS").is_some()
}

fn kubelet(root: &std::path::Path, names: impl Iterator<Item = String>, max_bytes: u64) -> Vec<Container> {
    names.map(|n| Container::create(root, &n, LINE_LEN, Rotation::Kubelet { max_bytes, keep: 2 })).collect()
}

/// Writes one line per container, starts vigil, and waits until those lines are at both sinks.
fn start(rx: &Receivers, node: &mut Node, cs: &mut [Container]) {
    for c in cs.iter_mut() {
        c.append(1);
    }
    node.start();
    wait_all_delivered(rx, node, &written(cs), Duration::from_secs(120));
}

/// Waits for the stragglers, stops vigil (exit 0), and returns the tallies.
fn finish(rx: &Receivers, node: &mut Node, w: &Written) -> (Tally, Tally) {
    let (l, e) = wait_delivered(rx, w, Duration::from_secs(15), Duration::from_secs(300));
    node.stop();
    (l, e)
}

fn assert_sane(name: &str, rx: &Receivers, l: &Tally, e: &Tally) {
    assert_eq!(rx.bad_requests(), 0, "{name}: a receiver could not decode a request");
    assert_eq!((l.unknown, e.unknown), (0, 0), "{name}: lines that were never written arrived");
}

fn assert_no_loss(name: &str, rx: &Receivers, node: &Node, w: &Written, l: &Tally, e: &Tally) {
    assert!(
        l.lost == 0 && e.lost == 0,
        "{name}: lost {} lines at Loki and {} at Elasticsearch of {}:{}\nvigil:\n{}",
        l.lost,
        e.lost,
        l.written,
        rx.lost_ranges(w),
        tail(&node.stderr())
    );
}

/// README: the `_id` depends only on (node, file identity, offset), so a line read again
/// (after a crash, a retry) answers 409: Elasticsearch never stores a line twice.
fn assert_no_es_duplicates(name: &str, rx: &Receivers, w: &Written, e: &Tally) {
    assert_eq!(
        e.duplicated,
        0,
        "{name}: Elasticsearch stored lines under two _ids, e.g. {:?}; duplicates per container (Loki/ES): {}",
        rx.es_duplicates(3),
        rx.duplicates_by_container(w)
    );
}

// ---- SIGKILL loop ----

/// 6 containers rotated like the kubelet and 2 copytruncated, SIGKILLed `kills` times.
fn sigkill_loop(scenario: &str, secs: u64, kills: u32, rate: f64) {
    let t0 = Instant::now();
    let rx = Receivers::start();
    let mut node = Node::new(&rx, "");
    // About 6 rotations of each file per minute at the soak's rate (~88 KB/s per file), ~2 s
    // per rotation at the bounded rate: files rotate between and across kills. The soak keeps
    // every rotated file (gzipped): at 3,500 lines/s on shared cores vigil may fall behind by
    // more than 2 rotations, and a file pruned while vigil is down is gone for any reader; the
    // soak counts vigil's losses, not the disk's. Pruning under lag is the outage scenarios'.
    let (rot, keep) = if soak() { (1 << 20, usize::MAX) } else { (64 << 10, 2) };
    let mut cs: Vec<Container> = (0..6)
        .map(|i| {
            Container::create(&node.root, &format!("k{i:04}"), LINE_LEN, Rotation::Kubelet { max_bytes: rot, keep })
        })
        .collect();
    cs.extend((0..2).map(|i| {
        Container::create(&node.root, &format!("t{i:04}"), LINE_LEN, Rotation::CopyTruncate { max_bytes: rot })
    }));
    start(&rx, &mut node, &mut cs);
    let writers = Writers::start(cs.into_iter().map(|c| vec![c]).collect(), rate);
    let mut rng = fastrand::Rng::with_seed(15);
    let gap = secs * 1000 / (kills as u64 + 1);
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.u64(gap / 2..gap * 3 / 2)));
        node.kill_and_restart();
    }
    std::thread::sleep(Duration::from_millis(gap));
    let w = written(&writers.stop());
    let (l, e) = finish(&rx, &mut node, &w);
    report(&rows(scenario, l, e, 0, t0));
    assert_sane(scenario, &rx, &l, &e);
    assert_no_loss(scenario, &rx, &node, &w, &l, &e);
    assert!(
        l.duplicated <= DUPLICATES_PER_KILL * kills as u64,
        "{scenario}: {} lines sent twice to Loki after {kills} SIGKILLs (at most {DUPLICATES_PER_KILL} per kill); \
         per container (Loki/ES): {}",
        l.duplicated,
        rx.duplicates_by_container(&w)
    );
    assert_no_es_duplicates(scenario, &rx, &w, &e);
    assert_eq!(l.reordered, 0, "{scenario}: lines of a container reached Loki out of order");
}

/// Fails on main before issue 15's fixes: the copytruncated files lose lines (the ES `_id`
/// repeats after a truncation), and checkpoints trail acks by up to `checkpoint_interval`, so
/// more than the lines in flight are sent again after a kill.
#[test]
fn sigkill_loop_loses_nothing_and_resends_only_lines_in_flight() {
    sigkill_loop("SIGKILL loop (4 kills)", chaos_secs(12), 4, 150.0);
}

#[test]
#[ignore = "soak: scripts/chaos.sh"]
fn soak_sigkill_loop() {
    let secs = chaos_secs(300);
    // ~3,500 lines/s in all, as in the duplicate measurement; a kill every ~15 s.
    sigkill_loop(&format!("SIGKILL loop ({} kills, 3,500 lines/s)", secs / 15), secs, (secs / 15) as u32, 440.0);
}

// ---- sink outage under rotation ----

/// 6 containers at 150 lines/s rotated like the kubelet (gzip, 2 rotated files kept); Loki and
/// Elasticsearch both down for `outage`.
fn outage(scenario: &str, outage: Duration, rot: u64, extra: &str) {
    let t0 = Instant::now();
    let rx = Receivers::start();
    let mut node = Node::new(&rx, extra);
    let mut cs = kubelet(&node.root, (0..6).map(|i| format!("o{i:04}")), rot);
    start(&rx, &mut node, &mut cs);
    let writers = Writers::start(cs.into_iter().map(|c| vec![c]).collect(), 150.0);
    std::thread::sleep(Duration::from_secs(2));
    rx.set_down(true);
    std::thread::sleep(outage);
    rx.set_down(false);
    std::thread::sleep(Duration::from_secs(2));
    let w = written(&writers.stop());
    let (l, e) = wait_delivered(&rx, &w, Duration::from_secs(15), Duration::from_secs(300));
    let dropped = node.metric("vigil_deleted_bytes_dropped_total") as u64 / LINE_LEN as u64;
    node.stop();
    report(&rows(scenario, l, e, dropped, t0));
    assert_sane(scenario, &rx, &l, &e);
    assert_no_loss(scenario, &rx, &node, &w, &l, &e);
    assert_eq!(l.reordered, 0, "{scenario}: lines of a container reached Loki out of order");
}

/// Fails on main: while the sinks are down the tailer blocks and discovery stops, so the files
/// the kubelet rotates in the meantime are gzipped and pruned before vigil ever opens them.
/// Bounded version: rotation at 64 KiB (every ~2 s) so an 8 s outage outlasts the 2 rotated
/// files kept, as the 20 s outage does with 256 KiB.
#[test]
fn sink_outage_under_kubelet_rotation_loses_nothing() {
    outage("sinks down 8 s, kubelet rotation at 64 KiB", Duration::from_secs(chaos_secs(8)), 64 << 10, "");
}

#[test]
#[ignore = "soak: scripts/chaos.sh"]
fn soak_sink_outage_20s() {
    outage("sinks down 20 s, kubelet rotation at 256 KiB", Duration::from_secs(20), 256 << 10, "");
}

#[test]
#[ignore = "soak: scripts/chaos.sh"]
fn soak_sink_outage_5min() {
    // Longer than the default deleted_file_max_hold (60s): the rotated files vigil holds open
    // after the kubelet deleted them are the only copy, so the hold is raised to ride it out.
    outage(
        "sinks down 5 min, kubelet rotation at 256 KiB, deleted_file_max_hold 10m",
        Duration::from_secs(300),
        256 << 10,
        "    deleted_file_max_hold: 10m",
    );
}

// ---- copytruncate ----

/// 3 containers copytruncated at 64 KiB (`.1`, `.2.gz`), with a 3 s stall of both sinks in the
/// middle so vigil falls behind: a file is truncated and regrows past vigil's offset before
/// vigil looks, and lines vigil had not read are only in the copy.
fn copytruncate(scenario: &str, secs: u64) {
    let t0 = Instant::now();
    let rx = Receivers::start();
    let mut node = Node::new(&rx, "");
    let mut cs: Vec<Container> = (0..3)
        .map(|i| {
            Container::create(&node.root, &format!("c{i:04}"), LINE_LEN, Rotation::CopyTruncate { max_bytes: 64 << 10 })
        })
        .collect();
    start(&rx, &mut node, &mut cs);
    let writers = Writers::start(cs.into_iter().map(|c| vec![c]).collect(), 150.0);
    let third = Duration::from_millis(secs * 1000 / 3);
    std::thread::sleep(third);
    rx.set_down(true);
    std::thread::sleep(Duration::from_secs(3).min(third));
    rx.set_down(false);
    std::thread::sleep(third);
    let w = written(&writers.stop());
    let (l, e) = finish(&rx, &mut node, &w);
    report(&rows(scenario, l, e, 0, t0));
    assert_sane(scenario, &rx, &l, &e);
    assert_no_loss(scenario, &rx, &node, &w, &l, &e);
    assert_no_es_duplicates(scenario, &rx, &w, &e);
}

/// Fails on main: after a truncation the offsets start again at 0, so the ES `_id` (node, file,
/// offset) repeats and the `_bulk` server answers 409 for new lines; a file regrown past the
/// old offset is not seen as truncated; lines only in `<name>.1` are never read.
#[test]
fn copytruncate_loses_nothing() {
    copytruncate("copytruncate at 64 KiB, sinks stalled 3 s", chaos_secs(10));
}

#[test]
#[ignore = "soak: scripts/chaos.sh"]
fn soak_copytruncate() {
    copytruncate("copytruncate at 64 KiB, sinks stalled 3 s", chaos_secs(300));
}

// ---- 1,000 files ----

/// 1,000 containers at 1 line/s each, rotated like the kubelet every ~10 lines (2 KiB), with a
/// 3 s outage of both sinks in the middle.
fn thousand_files(scenario: &str, secs: u64) {
    let t0 = Instant::now();
    let rx = Receivers::start();
    let mut node = Node::new(&rx, "");
    let mut cs = kubelet(&node.root, (0..1000).map(|i| format!("f{i:04}")), 2 << 10);
    start(&rx, &mut node, &mut cs);
    let mut groups = vec![Vec::new(), Vec::new()];
    for (i, c) in cs.into_iter().enumerate() {
        groups[i % 2].push(c);
    }
    let writers = Writers::start(groups, 1.0);
    let half = Duration::from_millis(secs * 1000 / 2);
    std::thread::sleep(half);
    rx.set_down(true);
    std::thread::sleep(Duration::from_secs(3));
    rx.set_down(false);
    std::thread::sleep(half);
    let w = written(&writers.stop());
    let (l, e) = finish(&rx, &mut node, &w);
    report(&rows(scenario, l, e, 0, t0));
    assert_sane(scenario, &rx, &l, &e);
    assert_no_loss(scenario, &rx, &node, &w, &l, &e);
    assert_eq!(l.reordered, 0, "{scenario}: lines of a container reached Loki out of order");
}

#[test]
fn thousand_rotating_files_lose_nothing() {
    thousand_files("1,000 files, kubelet rotation every ~10 lines, sinks down 3 s", chaos_secs(12));
}

#[test]
#[ignore = "soak: scripts/chaos.sh"]
fn soak_thousand_files() {
    thousand_files("1,000 files, kubelet rotation every ~10 lines, sinks down 3 s", chaos_secs(300));
}

// ---- checkpoint directory read-only, then full ----

/// Waits until `metric` on /metrics exceeds `above` (a positive signal that a phase took
/// effect); false after `secs`.
fn metric_rises(node: &Node, metric: &str, above: f64, secs: u64) -> bool {
    support::wait_for(Duration::from_secs(secs), || (node.metric(metric) > above).then_some(())).is_some()
}

/// 4 containers rotated like the kubelet; the checkpoint directory (a tmpfs) is remounted
/// read-only, vigil is SIGKILLed and restarted, the directory becomes writable again, then it
/// is filled (ENOSPC), vigil is SIGKILLed and restarted, and the space is freed.
fn checkpoint_dir(scenario: &str, secs: u64) {
    let t0 = Instant::now();
    let rx = Receivers::start();
    let mut node = Node::new(&rx, "");
    // Declared after `node`, so it is unmounted before the temp directory is removed.
    let fs = match Tmpfs::mount(&node.checkpoint_dir, "1m") {
        Ok(fs) => fs,
        Err(reason) => {
            eprintln!("SKIPPED {scenario}: this environment cannot provide a read-only or full directory: {reason}");
            return;
        }
    };
    let mut cs = kubelet(&node.root, (0..4).map(|i| format!("r{i:04}")), 64 << 10);
    start(&rx, &mut node, &mut cs);
    let writers = Writers::start(cs.into_iter().map(|c| vec![c]).collect(), 150.0);
    let phase = Duration::from_millis(secs * 1000 / 5);
    let mut problems = Vec::new();
    let mut at_risk = 0;

    std::thread::sleep(phase);
    let before = writers.written_so_far.load(std::sync::atomic::Ordering::Relaxed);
    fs.remount("ro");
    if !metric_rises(&node, "vigil_checkpoint_failures_total", 0.0, 30) {
        problems.push("no checkpoint failure counted while the directory was read-only");
    }
    node.kill_and_restart();
    std::thread::sleep(phase);
    fs.remount("rw");
    if !metric_rises(&node, "vigil_checkpoint_writes_total", 0.0, 30) {
        problems.push("checkpoints did not resume once the directory was writable");
    }
    at_risk += writers.written_so_far.load(std::sync::atomic::Ordering::Relaxed) - before;

    std::thread::sleep(phase);
    let before = writers.written_so_far.load(std::sync::atomic::Ordering::Relaxed);
    let filler = node.checkpoint_dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the checkpoint directory: {e}"),
            }
        }
    }
    let failures = node.metric("vigil_checkpoint_failures_total");
    if !metric_rises(&node, "vigil_checkpoint_failures_total", failures, 30) {
        problems.push("no checkpoint failure counted while the directory was full");
    }
    node.kill_and_restart();
    std::thread::sleep(phase);
    std::fs::remove_file(&filler).unwrap();
    if !metric_rises(&node, "vigil_checkpoint_writes_total", 0.0, 30) {
        problems.push("checkpoints did not resume once the directory had space");
    }
    at_risk += writers.written_so_far.load(std::sync::atomic::Ordering::Relaxed) - before;
    std::thread::sleep(phase);

    let w = written(&writers.stop());
    let (l, e) = finish(&rx, &mut node, &w);
    report(&rows(scenario, l, e, 0, t0));
    assert_sane(scenario, &rx, &l, &e);
    assert!(problems.is_empty(), "{scenario}: {problems:?}; vigil:\n{}", tail(&node.stderr()));
    assert_no_loss(scenario, &rx, &node, &w, &l, &e);
    // Without checkpoints, a kill sends again what was written since the last one that was
    // written, plus what was in flight.
    let bound = at_risk + 2 * DUPLICATES_PER_KILL;
    assert!(l.duplicated <= bound, "{scenario}: {} lines sent twice to Loki (at most {bound})", l.duplicated);
    // Not `assert_no_es_duplicates`: a file first seen while no checkpoint can be written (the
    // kubelet rotated in the read-only or full window before the kill) has a generation that
    // was never stored, so its lines sent again after the kill get a new file key, hence new
    // `_id`s. By design (`identity::Generations`): a wall-clock generation never names two
    // contents, where one derived from the file (e.g. its birth time) would, after a
    // copytruncate that was not checkpointed either, and Elasticsearch would overwrite the
    // old lines with the new. Seen once in ~20 runs; with 4 s between the failure and the
    // kill, 2,289 of 8,699 lines. Bounded like Loki's.
    assert!(
        e.duplicated <= bound,
        "{scenario}: Elasticsearch stored {} lines under two _ids (at most {bound}), e.g. {:?}",
        e.duplicated,
        rx.es_duplicates(3)
    );
}

#[test]
fn checkpoint_dir_read_only_then_full_loses_nothing() {
    checkpoint_dir("checkpoint dir read-only, then full (SIGKILL in each)", chaos_secs(10));
}

#[test]
#[ignore = "soak: scripts/chaos.sh"]
fn soak_checkpoint_dir_read_only_then_full() {
    checkpoint_dir("checkpoint dir read-only, then full (SIGKILL in each)", chaos_secs(300));
}

// ---- a file deleted while vigil is behind ----

/// Both sinks down; a big file is written until vigil stalls with more than
/// `deleted_file_max_unread` (1 MiB) unread, a small one with a few lines; both are deleted.
/// The big file must be closed while vigil is still behind (its disk space freed), the lines
/// before vigil's read position must arrive, and exactly the rest must be counted as dropped;
/// the small file (under the bound) must arrive whole once the sinks are back.
fn deleted_while_behind(scenario: &str) {
    const LEN: usize = 512;
    let t0 = Instant::now();
    let rx = Receivers::start();
    let mut node = Node::new(&rx, "    deleted_file_max_unread: 1MiB");
    let mut big = Container::create(&node.root, "big00", LEN, Rotation::None);
    let mut small = Container::create(&node.root, "small", LEN, Rotation::None);
    start(&rx, &mut node, std::slice::from_mut(&mut big));
    small.append(1);
    wait_all_delivered(&rx, &node, &written(std::slice::from_ref(&small)), Duration::from_secs(60));

    rx.set_down(true);
    // Write 4 MiB at a time until vigil has stopped reading (its queues are full) with more
    // than the bound unread.
    let mut stalled = false;
    for _ in 0..64 {
        big.append((4 << 20) / LEN as u64);
        let read = node.metric("vigil_read_bytes_total");
        std::thread::sleep(Duration::from_secs(1));
        if node.metric("vigil_read_bytes_total") == read && node.metric("vigil_lag_bytes") > (2 << 20) as f64 {
            stalled = true;
            break;
        }
    }
    assert!(stalled, "{scenario}: vigil never fell behind with its sinks down");
    small.append(100);
    std::fs::remove_file(&big.path).unwrap();
    std::fs::remove_file(&small.path).unwrap();
    // vigil looks at its open files every poll_interval (250ms): generous for a loaded machine.
    let dropped_while_behind = metric_rises(&node, "vigil_deleted_files_dropped_total", 0.0, 15);
    rx.set_down(false);

    let cs = [big, small];
    let w = written(&cs);
    let (l, e) = wait_delivered(&rx, &w, Duration::from_secs(15), Duration::from_secs(300));
    let dropped_bytes = node.metric("vigil_deleted_bytes_dropped_total") as u64;
    let dropped_files = node.metric("vigil_deleted_files_dropped_total") as u64;
    node.stop();
    report(&rows(scenario, l, e, dropped_bytes / LEN as u64, t0));
    assert_sane(scenario, &rx, &l, &e);
    let (big_n, small_n) = (cs[0].written, cs[1].written);
    let (lost_loki, lost_es) = rx.lost_seqs("big00", big_n);
    let (small_loki, small_es) = rx.lost_seqs("small", small_n);
    assert!(dropped_while_behind, "{scenario}: the deleted file over the bound was not closed while vigil was behind");
    assert_eq!(dropped_files, 1, "{scenario}: only the file over the bound may be dropped");
    assert!(
        small_loki.is_empty() && small_es.is_empty(),
        "{scenario}: the small deleted file lost {} lines at Loki, {} at Elasticsearch",
        small_loki.len(),
        small_es.len()
    );
    for (sink, lost) in [("Loki", &lost_loki), ("Elasticsearch", &lost_es)] {
        let first = lost.first().copied().unwrap_or(big_n);
        assert_eq!(
            lost.as_slice(),
            (first..big_n).collect::<Vec<_>>().as_slice(),
            "{scenario}: {sink} lost lines before vigil's read position"
        );
        assert_eq!(
            lost.len() as u64 * LEN as u64,
            dropped_bytes,
            "{scenario}: {sink} lost {} lines ({} bytes) but vigil counted {dropped_bytes} bytes dropped",
            lost.len(),
            lost.len() * LEN
        );
    }
}

#[test]
fn file_deleted_while_behind_drops_exactly_what_the_bound_counts() {
    deleted_while_behind("file deleted while vigil is behind (deleted_file_max_unread 1MiB)");
}

#[test]
#[ignore = "soak: scripts/chaos.sh"]
fn soak_file_deleted_while_behind() {
    deleted_while_behind("file deleted while vigil is behind (deleted_file_max_unread 1MiB)");
}
