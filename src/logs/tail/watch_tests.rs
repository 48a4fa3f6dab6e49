//! The tailer with inotify alone (full polls and rescans off), and what idle files let go of.

use super::tests::*;
use super::*;
use std::io::Write;

/// Adds the messages arriving on `rx` to `got` until `done` holds for them (at most a minute:
/// the machine may be loaded).
fn wait_messages(
    rx: &mut mpsc::Receiver<SourceBatch>,
    got: &mut Vec<String>,
    what: &str,
    done: &dyn Fn(&[String]) -> bool,
) {
    let until = Instant::now() + Duration::from_secs(60);
    while !done(got) {
        assert!(Instant::now() < until, "timed out waiting for {what}; got {got:?}");
        while let Ok(b) = rx.try_recv() {
            got.extend(b.events.into_iter().map(|e| e.message));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Issue 17: full polls are rare (every 120 polls), so what a change needs must come from
/// inotify. With full polls and periodic rescans off altogether, a copytruncate (IN_MODIFY names
/// the file, the next poll looks at it and sees the truncation) and the deletion of a file
/// with lines not read yet (IN_DELETE asks for a rescan, which finds it deleted; it is read to
/// its end, then closed) still lose nothing.
#[test]
fn with_full_polls_and_rescans_off_inotify_alone_catches_truncation_and_deletion() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("pods/ns_p_uid/c");
    std::fs::create_dir_all(&dir).unwrap();
    let live = dir.join("0.log");
    std::fs::write(&live, lines("old", 0..3)).unwrap();
    let (mut t, mut rx) = tailer_with(d.path(), |c| {
        c.poll_interval = crate::config::HumanDuration::millis(20);
        c.rescan_interval = crate::config::HumanDuration::secs(3600);
    });
    t.s.full_poll_every = u32::MAX;
    let (shared, stop) = (t.shared.clone(), t.stop.clone());
    let tailer = std::thread::spawn(move || t.run());
    let mut got: Vec<String> = Vec::new();
    let mut wait = |what: &str, done: &dyn Fn(&[String]) -> bool| wait_messages(&mut rx, &mut got, what, done);
    wait("the first lines", &|g| g.len() >= 3);

    copytruncate(&live, Some(&dir.join("0.log.1")));
    std::fs::OpenOptions::new().append(true).open(&live).unwrap().write_all(lines("new", 0..2).as_bytes()).unwrap();
    wait("the lines after the truncation", &|g| g.len() >= 5);
    assert_eq!(shared.metrics.truncations.get(), 1);

    std::fs::OpenOptions::new().append(true).open(&live).unwrap().write_all(lines("last", 0..2).as_bytes()).unwrap();
    std::fs::remove_file(&live).unwrap();
    wait("the deleted file's lines", &|g| g.len() >= 7);
    let until = Instant::now() + Duration::from_secs(60);
    // The deleted file (and the drained copy) are closed once read to their end.
    while shared.metrics.files_tailed.get() > 0 {
        assert!(Instant::now() < until, "deleted file never closed");
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.set();
    tailer.join().unwrap();
    let mut want = names("old", 0..3);
    want.extend(names("new", 0..2));
    want.extend(names("last", 0..2));
    assert_eq!(got, want);
}

/// Issue 17 (peak RSS at 10,000 files): the walk watches each directory it lists (notify's
/// recursive watch cost ~5.6 MB there). With full polls and periodic rescans off, every change
/// must come through those watches: a new pod directory and its file (the root's watch asks for
/// a rescan, which watches the new directories), lines appended to that file (its directory's
/// watch names it), a rotation in it, and the pod directory removed and made again under the
/// same name (watched anew).
#[test]
fn with_full_polls_and_rescans_off_the_walks_watches_see_new_pods_writes_and_rotations() {
    let d = tempfile::tempdir().unwrap();
    let old = d.path().join("pods/ns_old_uid/c");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("0.log"), lines("old", 0..2)).unwrap();
    let (mut t, mut rx) = tailer_with(d.path(), |c| {
        c.poll_interval = crate::config::HumanDuration::millis(20);
        c.rescan_interval = crate::config::HumanDuration::secs(3600);
    });
    t.s.full_poll_every = u32::MAX;
    let stop = t.stop.clone();
    let tailer = std::thread::spawn(move || t.run());
    let mut got: Vec<String> = Vec::new();
    let mut wait = |what: &str, done: &dyn Fn(&[String]) -> bool| wait_messages(&mut rx, &mut got, what, done);
    let append = |p: &Path, s: String| {
        std::fs::OpenOptions::new().append(true).open(p).unwrap().write_all(s.as_bytes()).unwrap()
    };
    wait("the first lines", &|g| g.len() >= 2);
    // The watches exist once a walk after the first round ran: a write to the old file is
    // named by its directory's watch.
    let k = std::cell::Cell::new(0);
    wait("a write named by inotify", &|g| {
        g.iter().any(|l| l.starts_with("ping")) || {
            append(&old.join("0.log"), lines("ping", k.get()..k.get() + 1));
            k.set(k.get() + 1);
            std::thread::sleep(Duration::from_millis(100));
            false
        }
    });

    let new = d.path().join("pods/ns_new_uid/c");
    std::fs::create_dir_all(&new).unwrap();
    std::fs::write(new.join("0.log"), lines("a", 0..2)).unwrap();
    wait("the new pod's file", &|g| g.iter().any(|l| l == "a 1"));
    append(&new.join("0.log"), lines("b", 0..2));
    wait("the lines appended to it", &|g| g.iter().any(|l| l == "b 1"));
    std::fs::rename(new.join("0.log"), new.join("0.log.20261130-000000")).unwrap();
    std::fs::write(new.join("0.log"), lines("c", 0..2)).unwrap();
    wait("the file after the rotation", &|g| g.iter().any(|l| l == "c 1"));
    append(&new.join("0.log"), lines("d", 0..2));
    wait("the lines appended after the rotation", &|g| g.iter().any(|l| l == "d 1"));

    std::fs::remove_dir_all(d.path().join("pods/ns_new_uid")).unwrap();
    std::fs::create_dir_all(&new).unwrap();
    std::fs::write(new.join("0.log"), lines("e", 0..2)).unwrap();
    wait("the file of the pod directory made again", &|g| g.iter().any(|l| l == "e 1"));
    append(&new.join("0.log"), lines("f", 0..2));
    wait("the lines appended to it", &|g| g.iter().any(|l| l == "f 1"));
    stop.set();
    tailer.join().unwrap();
    let after: Vec<String> = got.into_iter().filter(|l| !l.starts_with("old") && !l.starts_with("ping")).collect();
    let mut want = Vec::new();
    for what in ["a", "b", "c", "d", "e", "f"] {
        want.extend(names(what, 0..2));
    }
    assert_eq!(after, want);
}

/// Issue 17 (peak RSS at 10,000 files): a file at its end kept its own copy of its source
/// (path and pod metadata, a few hundred bytes) from the last batch it was in, forever; the
/// next poll after the batch is sealed lets it go, and a later line gets a fresh one.
#[test]
fn an_idle_file_lets_go_of_its_batch_copy_of_the_source() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("pods/ns_p_uid/c");
    std::fs::create_dir_all(&dir).unwrap();
    let live = dir.join("0.log");
    std::fs::write(&live, lines("a", 0..2)).unwrap();
    let (mut t, mut rx) = tailer(d.path(), ReadFrom::Beginning);
    t.rescan();
    t.round(true);
    assert!(t.files[0].holds_batch_source());
    assert!(t.send());
    t.maintain(true);
    assert!(!t.files[0].holds_batch_source(), "released once its batch was sealed");
    std::fs::OpenOptions::new().append(true).open(&live).unwrap().write_all(lines("b", 0..1).as_bytes()).unwrap();
    let mut got = names("a", 0..2);
    got.extend(names("b", 0..1));
    let mut all: Vec<String> = Vec::new();
    while let Ok(b) = rx.try_recv() {
        all.extend(b.events.into_iter().map(|e| e.message));
    }
    all.extend(drain(&mut t, &mut rx));
    assert_eq!(all, got);
}

/// Issue 17 (peak RSS at 10,000 files): the first round's batch of one line per file held a
/// copy of every file's source and every file's line assembly state until the next poll
/// (~6 MB at 10,000 files). The first event of a file in a batch takes the file's own
/// `Arc<Source>`, later ones share one copy per batch (no contention on one count), and a read
/// that reaches the end with nothing pending lets the assembly go at once.
#[test]
fn a_first_round_copies_no_source_and_keeps_no_line_assembly() {
    let d = tempfile::tempdir().unwrap();
    for pod in ["a", "b"] {
        let dir = d.path().join(format!("pods/ns_{pod}_uid/c"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0.log"), lines(pod, 0..if pod == "a" { 1 } else { 3 })).unwrap();
    }
    let (mut t, _rx) = tailer(d.path(), ReadFrom::Beginning);
    t.rescan();
    t.round(true);
    assert!(t.files.iter().all(|f| !f.holds_assembly()), "read to the end, nothing pending");
    let source = |pod: &str| {
        let dir = format!("ns_{pod}_uid");
        t.files.iter().find(|f| f.path.to_string_lossy().contains(&dir)).unwrap().source.clone()
    };
    let events = &t.out.events;
    let of = |pod: &str| events.iter().filter(|e| e.message.starts_with(pod)).collect::<Vec<_>>();
    let (a, b) = (of("a"), of("b"));
    assert_eq!((a.len(), b.len()), (1, 3));
    assert!(Arc::ptr_eq(&a[0].source, &source("a")), "a file's only line in a batch: no copy");
    assert!(Arc::ptr_eq(&b[0].source, &source("b")));
    assert!(!Arc::ptr_eq(&b[1].source, &source("b")), "a second line: the batch's own copy");
    assert!(Arc::ptr_eq(&b[1].source, &b[2].source), "one copy per file per batch");
    assert_eq!(*b[1].source, *source("b"));
}

/// Issue 17 (start-up at 10,000 files): inotify watches are added only after the first round
/// shipped; a line written before they existed (no hint ever comes for it) is still read at
/// the next round, not at the next full poll 30 s later.
#[test]
fn a_line_written_before_the_watches_exist_is_read_at_the_next_round() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("pods/ns_p_uid/c");
    std::fs::create_dir_all(&dir).unwrap();
    let live = dir.join("0.log");
    std::fs::write(&live, lines("a", 0..1)).unwrap();
    let (mut t, mut rx) = tailer(d.path(), ReadFrom::Beginning);
    t.rescan();
    t.round(true);
    assert!(t.watch_deferred, "no watch before the first round shipped");
    std::fs::OpenOptions::new().append(true).open(&live).unwrap().write_all(lines("b", 0..1).as_bytes()).unwrap();
    t.start_watching();
    assert!(!t.watch_deferred);
    assert!(t.watcher.watched() > 0, "the walk that adds the watches ran");
    t.round(false);
    assert!(t.send());
    let mut got = Vec::new();
    while let Ok(b) = rx.try_recv() {
        got.extend(b.events.into_iter().map(|e| e.message));
    }
    let mut want = names("a", 0..1);
    want.extend(names("b", 0..1));
    assert_eq!(got, want);
}

/// Issue 17 (peak RSS at 10,000 files): the line assembly state (pending partials, open
/// multiline groups, ~290 bytes) is made at a file's first line and let go when the file is
/// idle with nothing pending; a partial line waiting for its last piece keeps it, so the
/// line is shipped whole once the piece arrives.
#[test]
fn an_idle_file_lets_go_of_its_line_assembly_but_never_of_a_pending_partial() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("pods/ns_p_uid/c");
    std::fs::create_dir_all(&dir).unwrap();
    let live = dir.join("0.log");
    std::fs::write(&live, "2026-11-28T06:12:13.123456789Z stdout P first half, \n").unwrap();
    let (mut t, mut rx) = tailer(d.path(), ReadFrom::Beginning);
    t.rescan();
    assert!(!t.files[0].holds_assembly(), "nothing read yet");
    t.round(true);
    assert!(t.send());
    t.maintain(true);
    assert!(t.files[0].at_eof);
    assert!(t.files[0].holds_assembly(), "a pending partial keeps its state while the file is idle");
    let append =
        |s: &str| std::fs::OpenOptions::new().append(true).open(&live).unwrap().write_all(s.as_bytes()).unwrap();
    append("2026-11-28T06:12:13.223456789Z stdout F second half\n");
    let mut got: Vec<String> = Vec::new();
    while let Ok(b) = rx.try_recv() {
        got.extend(b.events.into_iter().map(|e| e.message));
    }
    got.extend(drain(&mut t, &mut rx));
    assert_eq!(got, ["first half, second half"]);
    assert!(!t.files[0].holds_assembly(), "idle with nothing pending: let go");
    append(&lines("b", 0..2));
    assert_eq!(drain(&mut t, &mut rx), names("b", 0..2), "made again for the next line");
}
