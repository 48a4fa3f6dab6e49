use super::checkpoint::Checkpoints;
use super::file::State;
use super::forensics::is_gz;
use super::*;
use crate::logs::metrics::LogMetrics;
use crate::pipeline::Committed;
use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

pub(super) fn cri(msg: &str) -> String {
    format!("2026-11-28T06:12:13.123456789Z stdout F {msg}\n")
}

/// A tailer over `<root>/pods/*/*/*.log` with a fresh checkpoint directory, and the
/// receiving end of its batches.
pub(super) fn tailer(root: &Path, read_from: ReadFrom) -> (Tailer, mpsc::Receiver<SourceBatch>) {
    tailer_with(root, |c| c.read_from = read_from)
}

/// `tailer`, with the config changed by `f`.
pub(super) fn tailer_with(root: &Path, f: impl FnOnce(&mut ContainersConfig)) -> (Tailer, mpsc::Receiver<SourceBatch>) {
    let mut config = ContainersConfig {
        include: vec![format!("{}/pods/*/*/*.log", root.display())],
        checkpoint_dir: root.join("cp").display().to_string(),
        ..Default::default()
    };
    f(&mut config);
    let checkpoints = Checkpoints::open(&root.join("cp")).unwrap();
    let restore = checkpoints.load().unwrap();
    let shared = Arc::new(Shared {
        registry: Mutex::new(HashMap::new()),
        unresolved: Mutex::new(Some(restore.clone())),
        committed: Arc::new(Committed::default()),
        checkpoints,
        metrics: LogMetrics::register(&prometheus::Registry::new()).unwrap(),
        last_written: Mutex::new(None),
        changes: Default::default(),
    });
    let globs = Globs::new(&config.include, &config.exclude).unwrap();
    let (wake, wake_rx) = std::sync::mpsc::sync_channel(1024);
    let (tx, rx) = mpsc::channel(64);
    let t = Tailer::new(
        Settings::from_config(&config),
        shared,
        "node".into(),
        globs,
        Watcher::new(wake),
        wake_rx,
        restore,
        tx,
        Arc::new(Stop::default()),
    )
    .unwrap();
    (t, rx)
}

/// Reads every open file to its end and closes finished ones, a few rounds; returns the
/// messages shipped, in order.
pub(super) fn drain(t: &mut Tailer, rx: &mut mpsc::Receiver<SourceBatch>) -> Vec<String> {
    drain_events(t, rx).into_iter().map(|e| e.message).collect()
}

/// `drain`, returning the events.
pub(super) fn drain_events(t: &mut Tailer, rx: &mut mpsc::Receiver<SourceBatch>) -> Vec<crate::event::Event> {
    let mut got = Vec::new();
    for _ in 0..5 {
        t.round(true);
        t.maintain(true);
        assert!(t.send());
        while let Ok(b) = rx.try_recv() {
            got.extend(b.events);
        }
    }
    got
}

pub(super) fn lines(what: &str, range: std::ops::Range<usize>) -> String {
    range.map(|k| cri(&format!("{what} {k}"))).collect()
}

pub(super) fn names(what: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|k| format!("{what} {k}")).collect()
}

/// logrotate's copytruncate: copy the file to `copy` (gzip-compressed when it ends in
/// `.gz`), then truncate the original in place.
pub(super) fn copytruncate(live: &Path, copy: Option<&Path>) {
    let data = std::fs::read(live).unwrap();
    match copy {
        Some(c) if is_gz(c) => {
            let mut enc = flate2::write::GzEncoder::new(File::create(c).unwrap(), flate2::Compression::fast());
            enc.write_all(&data).unwrap();
            enc.finish().unwrap();
        }
        Some(c) => std::fs::write(c, &data).unwrap(),
        None => {}
    }
    std::fs::OpenOptions::new().write(true).open(live).unwrap().set_len(0).unwrap();
}

/// The Elasticsearch `_id` of an event (node "node").
pub(super) fn es_id(e: &crate::event::Event) -> String {
    crate::sinks::elasticsearch::document_id(crate::sinks::elasticsearch::fnv1a64(b"node"), e)
}

/// Regression (issue 15): truncation was seen only as `size < offset`, so a file written
/// again past the old offset before the next look was read on from the old offset (lines
/// lost, a line cut in the middle shipped); and the lines written just before the
/// truncation, not read yet, were never read from the copy that logrotate made.
#[test]
fn copytruncate_reads_the_unread_lines_from_the_copy_and_the_new_content_from_0() {
    let copies: [Option<&str>; 5] =
        [Some("0.log.1"), Some("0.log.1.gz"), Some("0.log-20261128"), Some("0.log-20261128.gz"), None];
    for copy in copies {
        for regrown in [false, true] {
            let what = format!("copy {copy:?}, regrown past the old offset {regrown}");
            let d = tempfile::tempdir().unwrap();
            let dir = d.path().join("pods/ns_p_uid/c");
            std::fs::create_dir_all(&dir).unwrap();
            let live = dir.join("0.log");
            // An older copy with other content must not be taken for the copy.
            std::fs::write(dir.join("0.log.2"), lines("older", 0..20)).unwrap();
            let mut w = std::fs::OpenOptions::new().create(true).append(true).open(&live).unwrap();
            w.write_all(lines("old", 0..5).as_bytes()).unwrap();
            let (mut t, mut rx) = tailer(d.path(), ReadFrom::Beginning);
            t.rescan();
            let mut got = drain(&mut t, &mut rx);
            assert_eq!(got, names("old", 0..5), "{what}");
            // Written just before the truncation: not read yet.
            w.write_all(lines("old", 5..8).as_bytes()).unwrap();
            copytruncate(&live, copy.map(|c| dir.join(c)).as_deref());
            let new = if regrown { 0..20 } else { 0..1 };
            w.write_all(lines("new", new.clone()).as_bytes()).unwrap();
            got.extend(drain(&mut t, &mut rx));
            let mut want = names("old", 0..if copy.is_some() { 8 } else { 5 });
            want.extend(names("new", new));
            assert_eq!(got, want, "{what}");
            let m = &t.shared.metrics;
            assert_eq!(m.truncations.get(), 1, "{what}");
            assert_eq!(m.truncation_copies_found.get(), copy.is_some() as u64, "{what}");
            assert_eq!(m.truncation_copies_missing.get(), copy.is_none() as u64, "{what}");
            // The copy was closed once finished; the live file is read on.
            w.write_all(lines("later", 0..2).as_bytes()).unwrap();
            assert_eq!(drain(&mut t, &mut rx), names("later", 0..2), "{what}");
            assert_eq!(t.files.len(), 1, "{what}");
        }
    }
}

/// Regression (issue 15): the file key survived a truncation, so the lines written after
/// it got the `_id`s of the old lines at the same offsets; Elasticsearch answered 409 and
/// they were counted as delivered, never stored.
#[test]
fn lines_after_a_truncation_get_ids_of_their_own_and_keep_them_after_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("pods/ns_p_uid/c");
    std::fs::create_dir_all(&dir).unwrap();
    let live = dir.join("0.log");
    let mut w = std::fs::OpenOptions::new().create(true).append(true).open(&live).unwrap();
    w.write_all(lines("old", 0..3).as_bytes()).unwrap();
    let (mut t, mut rx) = tailer(d.path(), ReadFrom::Beginning);
    t.rescan();
    let mut first = drain_events(&mut t, &mut rx);
    w.write_all(lines("old", 3..5).as_bytes()).unwrap();
    copytruncate(&live, Some(&dir.join("0.log.1")));
    // Same lengths as the old lines: the same offsets again.
    w.write_all(lines("new", 0..3).as_bytes()).unwrap();
    first.extend(drain_events(&mut t, &mut rx));
    let ids: HashMap<String, String> = first.iter().map(|e| (e.message.clone(), es_id(e))).collect();
    assert_eq!(first.len(), 8);
    assert_eq!(ids.values().collect::<HashSet<_>>().len(), 8, "every line its own _id: {ids:?}");

    // Killed before anything was acknowledged: after the restart everything is read again
    // (the copy from its checkpoint, then the live file), under the same `_id`s.
    t.shared.write_checkpoint();
    drop((t, rx));
    let (mut t, mut rx) = tailer(d.path(), ReadFrom::Beginning);
    t.rescan();
    let again = drain_events(&mut t, &mut rx);
    let again: Vec<(String, String)> = again.iter().map(|e| (e.message.clone(), es_id(e))).collect();
    let want: Vec<(String, String)> = first.iter().map(|e| (e.message.clone(), es_id(e))).collect();
    assert_eq!(again, want);
}

/// Regression: truncated (copytruncate) while vigil was stopped, with older copies next to
/// it: the copy was found, but then the older copies (`.2`, `.3`: compared as text,
/// "after" `.1`) were taken for files rotated after it and read again whole. Now: the unread rest from
/// the copy, nothing older, then the file from 0.
#[test]
fn copytruncate_while_stopped_reads_the_rest_from_the_copy_and_nothing_older() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("pods/ns_p_uid/c");
    std::fs::create_dir_all(&dir).unwrap();
    let live = dir.join("0.log");
    let mut w = std::fs::OpenOptions::new().create(true).append(true).open(&live).unwrap();
    w.write_all(lines("old", 0..8).as_bytes()).unwrap();
    let (mut t, mut rx) = tailer(d.path(), ReadFrom::Beginning);
    t.rescan();
    assert_eq!(drain(&mut t, &mut rx), names("old", 0..8));
    // Everything read counts as delivered for the checkpoint.
    for f in &t.files {
        t.shared.registry().get_mut(&f.key).unwrap().base = f.resume();
    }
    t.shared.write_checkpoint();
    drop((t, rx));
    w.write_all(lines("old", 8..10).as_bytes()).unwrap();
    for (k, name) in ["0.log.3", "0.log.2"].iter().enumerate() {
        std::fs::write(dir.join(name), lines(&format!("older{k}"), 0..10)).unwrap();
    }
    copytruncate(&live, Some(&dir.join("0.log.1")));
    w.write_all(lines("new", 0..3).as_bytes()).unwrap();
    let (mut t, mut rx) = tailer(d.path(), ReadFrom::Beginning);
    t.rescan();
    let mut want = names("old", 8..10);
    want.extend(names("new", 0..3));
    assert_eq!(drain(&mut t, &mut rx), want);
}

/// logrotate `copytruncate` with `rotate 2`: `<name>.1` is moved on to `<name>.2` (with
/// `compress` and `delaycompress`: gzipped to `<name>.2.gz` and removed), then
/// `copytruncate` to `<name>.1`.
pub(super) fn logrotate(live: &Path, compress: bool) {
    let one = PathBuf::from(format!("{}.1", live.display()));
    if one.exists() && !compress {
        std::fs::rename(&one, format!("{}.2", live.display())).unwrap();
    } else if one.exists() {
        let gz = File::create(format!("{}.2.gz", live.display())).unwrap();
        let mut enc = flate2::write::GzEncoder::new(gz, flate2::Compression::fast());
        enc.write_all(&std::fs::read(&one).unwrap()).unwrap();
        enc.finish().unwrap();
        std::fs::remove_file(&one).unwrap();
    }
    copytruncate(live, Some(&one));
}

/// Regression (issue 15, chaos `copytruncate_loses_nothing`): while the pipeline had no
/// room, truncation was looked for only before a read, so nothing noticed it; a file
/// copytruncated twice during a stall (`.1` gzipped to `.2.gz`, a new `.1`) had its middle
/// generation, only in the newer copy, never read. Now each poll looks (head and size,
/// no data read) and holds each copy open, so every generation is read once there is room.
#[test]
fn two_copytruncates_while_stalled_lose_nothing() {
    for (empty_at_first_look, compress) in [(false, true), (true, true), (false, false)] {
        let what = format!("live file empty at the first look: {empty_at_first_look}, compress: {compress}");
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("pods/ns_p_uid/c");
        std::fs::create_dir_all(&dir).unwrap();
        let live = dir.join("0.log");
        let mut w = std::fs::OpenOptions::new().create(true).append(true).open(&live).unwrap();
        w.write_all(lines("a", 0..10).as_bytes()).unwrap();
        let (mut t, mut rx) = tailer(d.path(), ReadFrom::Beginning);
        t.rescan();
        let mut got = drain(&mut t, &mut rx);
        w.write_all(lines("a", 10..12).as_bytes()).unwrap();
        // Stalled from here: no `round`, only the polls (`maintain`) and rescans go on.
        logrotate(&live, compress);
        if empty_at_first_look {
            t.maintain(true);
        }
        w.write_all(lines("b", 0..10).as_bytes()).unwrap();
        t.maintain(true);
        t.rescan();
        logrotate(&live, compress);
        w.write_all(lines("c", 0..10).as_bytes()).unwrap();
        t.maintain(true);
        t.rescan();
        // logrotate moves the copies on again: `b` is only in `.2[.gz]` now, and `a`
        // only in the descriptor held since the first truncation.
        logrotate(&live, compress);
        w.write_all(lines("d", 0..3).as_bytes()).unwrap();
        got.extend(drain(&mut t, &mut rx));
        let mut want = names("a", 0..12);
        want.extend(names("b", 0..10));
        want.extend(names("c", 0..10));
        want.extend(names("d", 0..3));
        assert_eq!(got, want, "{what}");
        assert_eq!(t.shared.metrics.truncation_copies_found.get(), 3, "{what}");
    }
}

/// Regression (issue 15): a file created at a reused inode and first seen empty got the
/// key of the deleted file that had the inode (same identity, same empty fingerprint), so
/// its lines got that file's `_id`s.
#[test]
fn a_new_file_at_a_reused_inode_gets_ids_of_its_own() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("pods/ns_p_uid/c");
    std::fs::create_dir_all(&dir).unwrap();
    let live = dir.join("0.log");
    let (mut t, mut rx) = tailer(d.path(), ReadFrom::Beginning);
    let mut got = Vec::new();
    let mut inodes = Vec::new();
    for what in ["first", "second"] {
        let mut w = File::create(&live).unwrap();
        inodes.push(std::os::unix::fs::MetadataExt::ino(&w.metadata().unwrap()));
        t.rescan();
        assert!(drain_events(&mut t, &mut rx).is_empty());
        w.write_all(lines(what, 0..3).as_bytes()).unwrap();
        got.extend(drain_events(&mut t, &mut rx));
        drop(w);
        std::fs::remove_file(&live).unwrap();
        t.rescan();
        drain_events(&mut t, &mut rx);
        assert!(t.files.is_empty());
    }
    if inodes[0] != inodes[1] {
        // Some filesystems (tmpfs) never reuse an inode number right away.
        eprintln!("inode not reused by this filesystem; the case cannot occur here");
    }
    assert_eq!(got.len(), 6);
    let ids: HashSet<String> = got.iter().map(es_id).collect();
    assert_eq!(ids.len(), 6, "every line its own _id");
}

/// The same race, caught between the rename and the runtime's reopen: nothing at the path
/// yet. The listed file is followed under its rotated name, writes after the rename
/// included (it is not assumed complete: no new file replaced it).
#[test]
fn a_file_renamed_away_between_walk_and_open_is_followed() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("pods/ns_p_uid/c");
    std::fs::create_dir_all(&dir).unwrap();
    let live = dir.join("0.log");
    std::fs::write(&live, cri("old 0")).unwrap();
    let (mut t, mut rx) = tailer(d.path(), ReadFrom::Beginning);
    let found = t.globs.walk(None);
    let mut w = std::fs::OpenOptions::new().append(true).open(&live).unwrap();
    std::fs::rename(&live, dir.join("0.log.20261128-061201")).unwrap();
    t.apply_walk(&found, Instant::now());
    t.first_scan = false;
    let mut got = drain(&mut t, &mut rx);
    w.write_all(cri("old 1 after rename").as_bytes()).unwrap();
    got.extend(drain(&mut t, &mut rx));
    assert_eq!(got, ["old 0", "old 1 after rename"]);
    assert!(matches!(t.files[0].state, State::Moved { replaced: false }));
}

/// Regression (e2e flake under load): the first scan of 1,000 files took ~0.7 s, a file
/// listed by the walk was rotated before its turn to be opened, and the open took the new
/// file at the path; the listed file, never opened, was never read.
#[test]
fn a_file_rotated_between_walk_and_open_is_still_read_first() {
    for read_from in [ReadFrom::Beginning, ReadFrom::End] {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("pods/ns_p_uid/c");
        std::fs::create_dir_all(&dir).unwrap();
        let live = dir.join("0.log");
        std::fs::write(&live, cri("old 0") + &cri("old 1")).unwrap();
        let (mut t, mut rx) = tailer(d.path(), read_from);
        let found = t.globs.walk(None);
        assert_eq!(found.len(), 1);

        // Rotated twice before the tailer gets to open the listed file.
        let mut w = std::fs::OpenOptions::new().append(true).open(&live).unwrap();
        std::fs::rename(&live, dir.join("0.log.20261128-061201")).unwrap();
        w.write_all(cri("old 2 after rename").as_bytes()).unwrap();
        std::fs::write(&live, cri("mid 0")).unwrap();
        std::fs::rename(&live, dir.join("0.log.20261128-061202")).unwrap();
        std::fs::write(&live, cri("new 0")).unwrap();

        t.apply_walk(&found, Instant::now());
        t.first_scan = false;
        let got = drain(&mut t, &mut rx);
        let want: &[&str] = match read_from {
            // Everything, oldest file first.
            ReadFrom::Beginning => &["old 0", "old 1", "old 2 after rename", "mid 0", "new 0"],
            // The listed file from where it ended when it was opened; the files created
            // after the walk started whole.
            ReadFrom::End => &["mid 0", "new 0"],
        };
        assert_eq!(got, want, "read_from {read_from:?}");
        assert_eq!(t.shared.metrics.rotations.get(), 1);
    }
}

/// A tailer "killed" after `run`: every file's checkpoint offset is set by `offset(id,
/// resume)` as if that much were acknowledged, the checkpoint is written, and the tailer is
/// dropped without a final checkpoint.
pub(super) fn kill(t: Tailer, rx: mpsc::Receiver<SourceBatch>, offset: impl Fn(FileId, u64) -> u64) {
    let resumes: Vec<(u64, FileId, u64)> = t.files.iter().map(|f| (f.key, f.id, f.resume())).collect();
    for (key, id, resume) in resumes {
        t.shared.registry().get_mut(&key).unwrap().base = offset(id, resume);
    }
    for r in t.shared.registry().values_mut() {
        if let Some(end) = r.closed {
            r.base = offset(r.id, end);
        }
    }
    t.shared.write_checkpoint();
    drop((t, rx));
}

pub(super) fn id_of(p: &Path) -> FileId {
    FileId::of(&std::fs::metadata(p).unwrap())
}

/// Regression (issue 15, e2e_logs: 15,310 duplicates for 10,226 lines in flight): at a
/// restart, the rotated files restored from the checkpoint were read in the order the
/// checkpoint's entries came out of a hash map, not oldest first. A newer rotated file read
/// before an older unfinished one was finished and forgotten, and the next restart, finding
/// the older one, took the newer one for a file rotated while vigil was stopped and read
/// it again whole, although the checkpoint had covered it.
#[test]
fn rotated_files_restored_at_a_restart_are_read_oldest_first_and_never_again() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("pods/ns_p_uid/c");
    std::fs::create_dir_all(&dir).unwrap();
    let live = dir.join("0.log");
    let (r1, r2) = (dir.join("0.log.20261128-061201"), dir.join("0.log.20261128-061202"));
    // Run 1 sees three files of the path: two rotated, one live.
    std::fs::write(&live, lines("a", 0..6)).unwrap();
    let (mut t, mut rx) = tailer(d.path(), ReadFrom::Beginning);
    t.rescan();
    std::fs::rename(&live, &r1).unwrap();
    std::fs::write(&live, lines("b", 0..6)).unwrap();
    t.rescan();
    std::fs::rename(&live, &r2).unwrap();
    std::fs::write(&live, lines("c", 0..6)).unwrap();
    t.rescan();
    let mut want = names("a", 0..6);
    want.extend(names("b", 0..6));
    want.extend(names("c", 0..6));
    assert_eq!(drain(&mut t, &mut rx), want);
    // Killed with only `a 0`, `a 1` acknowledged.
    let line = cri("a 0").len() as u64;
    let a = id_of(&r1);
    kill(t, rx, |id, _| if id == a { 2 * line } else { 0 });

    // Each restart (a new hash map order each time) reads the rest, oldest file first.
    let mut want = names("a", 2..6);
    want.extend(names("b", 0..6));
    want.extend(names("c", 0..6));
    for _ in 0..8 {
        let (mut t, mut rx) = tailer(d.path(), ReadFrom::Beginning);
        t.rescan();
        assert_eq!(drain(&mut t, &mut rx), want);
        drop((t, rx));
    }

    // A restart whose first walk follows the live file, rotated between the walk and the
    // open, under its rotated name: the older checkpointed files still come first.
    let (mut t, mut rx) = tailer(d.path(), ReadFrom::Beginning);
    let found = t.globs.walk(None);
    let r3 = dir.join("0.log.20261128-061203");
    std::fs::rename(&live, &r3).unwrap();
    std::fs::write(&live, lines("d", 0..6)).unwrap();
    t.apply_walk(&found, Instant::now());
    want.extend(names("d", 0..6));
    assert_eq!(drain(&mut t, &mut rx), want);
    // Killed when the lines up to `c 1` are acknowledged (in the order read), after a walk
    // that let the finished files be forgotten: nothing they covered is read again.
    let (b, c) = (id_of(&r2), id_of(&r3));
    t.rescan();
    kill(t, rx, |id, end| {
        if id == a || id == b {
            end
        } else if id == c {
            2 * line
        } else {
            0
        }
    });
    let (mut t, mut rx) = tailer(d.path(), ReadFrom::Beginning);
    t.rescan();
    let mut want = names("c", 2..6);
    want.extend(names("d", 0..6));
    assert_eq!(drain(&mut t, &mut rx), want);
}

/// Regression (issue 15): the batch limits were checked only between files, so one read
/// slice (`read_budget`, 256 KiB) of short lines made a batch of thousands of events, and
/// one of long lines overshot `batch_max_bytes` by up to a slice.
#[test]
fn batch_limits_hold_inside_one_read_slice() {
    for (msg_len, lines) in [(4, 5000), (100, 2000)] {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("pods/ns_p_uid/c");
        std::fs::create_dir_all(&dir).unwrap();
        let data: String = (0..lines).map(|n| cri(&format!("{n:0msg_len$}"))).collect();
        std::fs::write(dir.join("0.log"), &data).unwrap();
        let max_bytes = 16 * 1024;
        let (mut t, mut rx) = tailer_with(d.path(), |c| {
            c.batch_max_bytes = crate::config::ByteSize::kib(16);
            c.read_budget = crate::config::ByteSize::mib(1);
        });
        t.rescan();
        let (mut events, mut batches) = (0, 0);
        for _ in 0..50 {
            t.round(true);
            assert!(t.send());
            while let Ok(b) = rx.try_recv() {
                batches += 1;
                events += b.events.len();
                let bytes: usize = b.events.iter().map(|e| e.message.len()).sum();
                let last = b.events.last().map_or(0, |e| e.message.len());
                assert!(b.events.len() <= BATCH_MAX_EVENTS, "{} events in one batch", b.events.len());
                assert!(bytes - last < max_bytes, "{bytes} message bytes in one batch (limit {max_bytes})");
                // Each batch commits exactly up to its last line.
                let end = b.events.last().unwrap().origin.resume;
                assert_eq!(b.positions.last().map(|p| p.1), Some(end));
            }
        }
        assert_eq!(events, lines, "{msg_len}-byte messages");
        assert!(batches > 1);
    }
}

/// Issue 17: an idle poll looks (fstat, head read) only at the files inotify named, so 1,000
/// idle files cost nothing between full polls; a change no hint named (inotify is a hint, never
/// the truth) is still caught by the next full poll.
#[test]
fn a_poll_looks_at_the_files_inotify_named_and_a_full_poll_at_every_file() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("pods/ns_p_uid/c");
    std::fs::create_dir_all(&dir).unwrap();
    let live = dir.join("0.log");
    std::fs::write(&live, lines("old", 0..3)).unwrap();
    let (mut t, mut rx) = tailer(d.path(), ReadFrom::Beginning);
    t.rescan();
    assert_eq!(drain(&mut t, &mut rx), names("old", 0..3));
    let truncations = |t: &Tailer| t.shared.metrics.truncations.get();

    // Truncated and written again (same inode), no hint: a poll does not look at it.
    std::fs::write(&live, lines("new", 0..1)).unwrap();
    t.round(false);
    t.maintain(false);
    assert_eq!(truncations(&t), 0);
    // A hint names it (what `run` does with `Wake::Data`): the next poll looks and reads.
    t.files[0].touched = true;
    t.files[0].at_eof = false;
    t.round(false);
    t.maintain(false);
    assert_eq!(truncations(&t), 1);
    assert!(!t.files[0].touched, "looked at, so no longer touched");

    // The same with no hint ever: the full poll catches it.
    std::fs::write(&live, lines("newer", 0..2)).unwrap();
    t.round(false);
    t.maintain(false);
    assert_eq!(truncations(&t), 1);
    t.round(true);
    t.maintain(true);
    assert_eq!(truncations(&t), 2);
    let mut want = names("new", 0..1);
    want.extend(names("newer", 0..2));
    assert_eq!(drain(&mut t, &mut rx), want);
}

/// A pod as the API server sends it, for the metadata cache.
fn cached_pod(
    namespace: &str,
    name: &str,
    uid: &str,
    annotations: serde_json::Value,
) -> crate::logs::kubernetes::CachedPod {
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": namespace, "name": name, "uid": uid, "annotations": annotations},
        "spec": {"containers": [{"name": "c", "image": "img"}]},
    }))
    .unwrap();
    crate::logs::kubernetes::CachedPod::from_pod(&pod, &[]).unwrap()
}

/// `vigil.io/multiline` on a pod sets the mode of its containers' files: `off` ships a Java
/// trace line by line, `regex:<start>` joins by the pod's own pattern; a pod without the
/// annotation keeps the configured mode (`auto`, which joins the trace).
#[test]
fn a_pods_multiline_annotation_sets_the_mode_of_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let trace = [
        "Exception in thread \"main\" java.lang.IllegalStateException: boom",
        "\tat a.B.c(B.java:1)",
        "\tat a.B.main(B.java:2)",
        "done",
    ];
    let regex_lines = ["START one", "  more one", "START two", "  more two"];
    let pods = Arc::new(crate::logs::kubernetes::PodCache::new(Duration::from_secs(60), None));
    for (pod, uid, annotations, lines) in [
        ("plain", "u1", serde_json::json!({"vigil.io/multiline": "off"}), &trace[..]),
        ("custom", "u2", serde_json::json!({"vigil.io/multiline": "regex:^START"}), &regex_lines[..]),
        ("auto", "u3", serde_json::json!({}), &trace[..]),
    ] {
        pods.apply(cached_pod("ns", pod, uid, annotations));
        let d = dir.path().join(format!("pods/ns_{pod}_{uid}/c"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("0.log"), lines.iter().map(|l| cri(l)).collect::<String>()).unwrap();
    }
    // A group still open at the end of a file ships after max_wait.
    let (t, mut rx) = tailer_with(dir.path(), |c| c.multiline.max_wait = crate::config::HumanDuration::millis(1));
    let mut t = t.with_pods(Some(pods));
    t.rescan();
    let mut events = drain_events(&mut t, &mut rx);
    std::thread::sleep(Duration::from_millis(20));
    events.extend(drain_events(&mut t, &mut rx));
    let of = |pod: &str| -> Vec<String> {
        events.iter().filter(|e| e.source.kubernetes.pod == pod).map(|e| e.message.clone()).collect()
    };
    assert_eq!(of("plain"), trace, "off: every line its own event");
    assert_eq!(of("custom"), ["START one\n  more one", "START two\n  more two"]);
    assert_eq!(of("auto"), [trace[..3].join("\n"), "done".to_string()], "no annotation: auto joins the trace");
}
