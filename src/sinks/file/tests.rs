use super::*;

/// An output not yet opened, as `FileSink` builds it.
fn output(path: &Path, max_bytes: u64, max_files: u32) -> Output {
    Output::new(path, max_bytes, max_files)
}

/// A syncer as the sink starts it, syncing with `sync`.
fn syncer(sync: fn(&File) -> std::io::Result<()>) -> Syncer {
    Syncer { sync, failed_open: Arc::new(AtomicU64::new(0)), dropped_open: 0, dropped: 0 }
}

/// A `sync: always` file sink at `path` that syncs with `sync_fn`.
fn sink(path: &Path, sync_fn: fn(&File) -> std::io::Result<()>, ctx: &SinkContext) -> Box<FileSink> {
    Box::new(FileSink {
        path: path.to_path_buf(),
        max_bytes: 0,
        max_files: 1,
        sync: FileSync::Always,
        name: "f".into(),
        metrics: ctx.sink_metrics("f"),
        panic_in_writer: false,
        sync_fn,
    })
}

/// A chunk of one line, `message`.
fn chunk(id: u64, message: &str) -> Arc<Chunk> {
    use crate::event::{Event, K8sMeta, Origin, Source, Stream};
    let source = Arc::new(Source { file: "/f.log".into(), node: "n".into(), kubernetes: K8sMeta::default() });
    let event = Event {
        timestamp: 0,
        stream: Stream::Stdout,
        message: message.into(),
        malformed: false,
        truncated: false,
        source,
        parsed: None,
        origin: Origin { file: 1, offset: id, resume: id + 1 },
    };
    Arc::new(Chunk { id, events: vec![event] })
}

/// Waits (20 s at most, for a loaded machine) until `path` holds `n` lines.
fn wait_lines(path: &Path, n: usize) -> String {
    let t0 = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n || t0.elapsed() > Duration::from_secs(20) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn rotates_by_size_and_keeps_max_files() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("out/events.ndjson");
    let mut o = output(&path, 10, 2);
    for i in 0..5 {
        o.write(format!("line{i}-----\n").as_bytes()).unwrap();
    }
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
    assert_eq!(read(path.clone()), "line4-----\n");
    assert_eq!(read(d.path().join("out/events.ndjson.1")), "line3-----\n");
    assert_eq!(read(d.path().join("out/events.ndjson.2")), "line2-----\n");
    assert!(!d.path().join("out/events.ndjson.3").exists());
}

#[test]
fn torn_last_line_is_cut_before_appending() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("e.ndjson");
    std::fs::write(&path, "{\"a\":1}\n{\"b\":").unwrap();
    let mut o = output(&path, 0, 0);
    o.write(b"{\"c\":3}\n").unwrap();
    assert_eq!(std::fs::read_to_string(path).unwrap(), "{\"a\":1}\n{\"c\":3}\n");
}

#[tokio::test]
async fn acks_each_chunk_once_its_lines_are_on_disk() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("events.ndjson");
    let cfg = FileConfig {
        name: "f".into(),
        route: None,
        path: path.display().to_string(),
        max_bytes: ByteSize(0),
        max_files: 5,
        sync: FileSync::Always,
    };
    let ctx = SinkContext::new(prometheus::Registry::new(), "n".into()).unwrap();
    let sink = FileSink::build(&cfg, &ctx).unwrap();
    let (acker, mut acks) = Acker::channel();
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(sink.run(rx, acker));
    for id in 0..3u64 {
        tx.send(chunk(id, &format!("line {id}"))).await.unwrap();
        assert_eq!(acks.recv().await, Some(id));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count() as u64, id + 1, "acked before written");
        assert!(text.contains(&format!("\"message\":\"line {id}\"")));
    }
    drop(tx);
    task.await.unwrap();
}

/// Regression: a writer thread that died left the sink task waiting for input with the
/// chunks it held unacked forever: checkpoints froze and nothing said so.
#[tokio::test]
async fn a_dead_writer_thread_ends_the_sink_task_with_its_panic() {
    let d = tempfile::tempdir().unwrap();
    let ctx = SinkContext::new(prometheus::Registry::new(), "n".into()).unwrap();
    let mut sink = sink(&d.path().join("e.ndjson"), File::sync_data, &ctx);
    sink.panic_in_writer = true;
    let (acker, mut acks) = Acker::channel();
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(sink.run(rx, acker));
    tx.send(chunk(0, "x")).await.unwrap();
    // No further input: the sink must notice the dead writer by itself.
    let error = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the sink task ends while its input stays open")
        .expect_err("with the writer's panic");
    assert!(error.is_panic());
    assert!(acks.try_recv().is_err(), "nothing was written, nothing may be acked");
    drop(tx);
}

#[test]
fn sync_defaults_to_always_and_never_still_writes_every_line() {
    let c: FileConfig = serde_yaml_ng::from_str("{name: f, path: /x}").unwrap();
    assert_eq!(c.sync, FileSync::Always);
    let c: FileConfig = serde_yaml_ng::from_str("{name: f, path: /x, sync: never}").unwrap();
    assert_eq!(c.sync, FileSync::Never);
    assert!(serde_yaml_ng::from_str::<FileConfig>("{name: f, path: /x, sync: sometimes}").is_err());
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("e.ndjson");
    let mut o = output(&path, 0, 0);
    o.write(b"a\n").unwrap();
    o.write(b"b\n").unwrap();
    assert_eq!(std::fs::read_to_string(path).unwrap(), "a\nb\n");
}

/// Dropping synced pages behind the writer never touches what is written, follows the
/// current file across a rotation, and stays a window behind the end.
#[test]
fn drop_behind_keeps_every_line_and_restarts_after_rotation() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("e.ndjson");
    let mut o = output(&path, 12 << 20, 1);
    let mut s = syncer(File::sync_data);
    let mut write = |buf: &[u8]| {
        let written = o.write(buf).unwrap();
        let (done, again) = s.sync(vec![Unsynced { written, bytes: buf.len(), chunks: Vec::new() }], "f");
        assert_eq!((done.len(), again.len()), (1, 0));
        s.dropped
    };
    let line = |i: usize| format!("{i:0>1023}\n").into_bytes();
    // 64 KiB writes (one sync each) of 1 KiB lines.
    let mut dropped = 0;
    for w in 0..12 * 16 {
        dropped = write(&(w * 64..(w + 1) * 64).flat_map(line).collect::<Vec<u8>>());
    }
    assert_eq!(dropped, 4 << 20, "8 MiB kept behind the end, in whole MiB");
    assert_eq!(write(&line(12 * 1024)), 0, "a rotated-in file starts from its beginning");
    let rotated = std::fs::read(d.path().join("e.ndjson.1")).unwrap();
    let want: Vec<u8> = (0..12 * 1024).flat_map(line).collect();
    assert!(rotated == want, "every line of the rotated file intact");
    assert_eq!(std::fs::read(&path).unwrap(), line(12 * 1024));
}

#[test]
fn appends_to_an_existing_file() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("e.ndjson");
    std::fs::write(&path, "old\n").unwrap();
    let mut o = output(&path, 0, 0);
    o.write(b"new\n").unwrap();
    assert_eq!(std::fs::read_to_string(path).unwrap(), "old\nnew\n");
}

/// One gate per test that holds syncs back (tests run in parallel).
static GATES: [std::sync::atomic::AtomicBool; 2] =
    [std::sync::atomic::AtomicBool::new(false), std::sync::atomic::AtomicBool::new(false)];

/// Syncs once gate `G` is open.
fn gated_sync<const G: usize>(f: &File) -> std::io::Result<()> {
    while !GATES[G].load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    f.sync_data()
}

/// A sync on a busy disk (hundreds of milliseconds) held every later line out of the file
/// until it returned: the writer synced each write before taking the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sync_does_not_hold_back_the_next_lines() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("e.ndjson");
    let ctx = SinkContext::new(prometheus::Registry::new(), "n".into()).unwrap();
    let (acker, mut acks) = Acker::channel();
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(sink(&path, gated_sync::<0>, &ctx).run(rx, acker));
    tx.send(chunk(0, "first")).await.unwrap();
    assert!(wait_lines(&path, 1).contains("\"message\":\"first\""));
    // The first line's sync now waits at the gate.
    tx.send(chunk(1, "second")).await.unwrap();
    let text = wait_lines(&path, 2);
    assert!(text.contains("\"message\":\"second\""), "the second line waited for the first one's sync: {text:?}");
    assert!(acks.try_recv().is_err(), "acked before its sync returned");
    GATES[0].store(true, Ordering::SeqCst);
    assert_eq!(acks.recv().await, Some(0));
    assert_eq!(acks.recv().await, Some(1));
    drop(tx);
    task.await.unwrap();
}

static SYNCS: AtomicU64 = AtomicU64::new(0);

/// Fails the first sync (EIO, as a disk's writeback error), syncs after.
fn first_sync_fails(f: &File) -> std::io::Result<()> {
    if SYNCS.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EIO));
    }
    f.sync_data()
}

/// After a failed sync the pages it covered may be gone while later syncs succeed (the
/// kernel reports a writeback error once): its lines are written again, to a reopened file,
/// and acked only once that write is synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_writes_its_lines_again_and_acks_them_once_synced() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("e.ndjson");
    let ctx = SinkContext::new(prometheus::Registry::new(), "n".into()).unwrap();
    let (acker, mut acks) = Acker::channel();
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(sink(&path, first_sync_fails, &ctx).run(rx, acker));
    tx.send(chunk(0, "kept")).await.unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(20), acks.recv()).await;
    assert_eq!(acked, Ok(Some(0)), "acked once written again and synced");
    assert_eq!(SYNCS.load(Ordering::SeqCst), 2, "the failed sync, then the one of the second write");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches("\"message\":\"kept\"").count(), 2, "written again after the failed sync: {text:?}");
    tx.send(chunk(1, "next")).await.unwrap();
    assert_eq!(acks.recv().await, Some(1));
    assert!(acks.try_recv().is_err(), "each chunk acked once");
    drop(tx);
    task.await.unwrap();
}

/// Regression: with no bound, the writer ran ahead of the syncer by the pipeline's whole
/// in-flight budget (RSS 108 MB instead of 20 MB to the file sink at full speed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_waits_while_unsynced_max_bytes_wait_for_a_sync() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("e.ndjson");
    let ctx = SinkContext::new(prometheus::Registry::new(), "n".into()).unwrap();
    let (acker, mut acks) = Acker::channel();
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(sink(&path, gated_sync::<1>, &ctx).run(rx, acker));
    let big = "x".repeat(UNSYNCED_MAX * 3 / 4);
    tx.send(chunk(0, &big)).await.unwrap();
    assert_eq!(wait_lines(&path, 1).lines().count(), 1, "the first write waits for no sync");
    // Each chunk is sent once the sink task took the one before from the input (capacity back
    // to 4), so none is coalesced with another. The sink task can take chunk 3 only once its
    // send of chunk 2 into the writer's one-slot queue went through, that is once the writer
    // took chunk 1: a positive signal that the writer holds it, not a sleep.
    for (id, message) in [(1, big.as_str()), (2, "small"), (3, "small")] {
        tx.send(chunk(id, message)).await.unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while tx.capacity() < 4 {
            assert!(std::time::Instant::now() < until, "the sink task never took chunk {id}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let written = std::fs::read_to_string(&path).unwrap().lines().count();
    // Opened before asserting: a failure must not leave the sink's threads waiting forever.
    GATES[1].store(true, Ordering::SeqCst);
    assert_eq!(written, 1, "written past UNSYNCED_MAX unsynced");
    for id in 0..4 {
        assert_eq!(acks.recv().await, Some(id));
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 4);
    drop(tx);
    task.await.unwrap();
}
