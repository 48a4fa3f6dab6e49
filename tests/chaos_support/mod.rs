//! The chaos harness: a temp node tree whose writers rotate like the kubelet (rename, gzip,
//! prune) or like logrotate's copytruncate, the real vigil binary shipping to the in-process
//! Loki and `_bulk` servers of `tests/support`, and a checker that counts lost, duplicated and
//! reordered lines per sink.
//!
//! Every line carries its container's name and a sequence number, and all lines of a scenario
//! have the same length, so a byte count on `/metrics` converts exactly into lines. The Loki
//! receiver records every accepted entry (a line sent twice counts twice: that is what the
//! at-least-once bound is about, even though a real Loki would de-duplicate an identical entry);
//! the `_bulk` receiver keeps documents by `_id` like Elasticsearch, so its duplicates are lines
//! stored under two different `_id`s, and a line whose `_id` collided with another's is lost.
//!
//! Rejected alternative: a separate `vigil-chaos` binary. The scenarios need the same receivers
//! as the sink tests, and as a test file the short versions run in the normal suite while
//! `scripts/chaos.sh` runs the long ones (`--ignored`) from the same code.

use crate::support::es::{EsServer, RequestAnswer};
use crate::support::loki::{Answer, LokiServer};
use crate::support::server::Reply;
use crate::support::{Vigil, free_port, http_get, wait_for};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The length of every line of a scenario's files unless it says otherwise (CRI framing
/// included), about a typical application log line.
pub const LINE_LEN: usize = 200;

/// How long the chaos phase of a scenario lasts: `VIGIL_CHAOS_SECS` for the soak, else
/// `short` (the bounded version run by `cargo test`).
pub fn chaos_secs(short: u64) -> u64 {
    std::env::var("VIGIL_CHAOS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(short)
}

/// The message of line `seq` of container `name`: `<name> <seq, 9 digits> <padding>`.
fn message(name: &str, seq: u64, line_len: usize) -> String {
    // 30 (timestamp) + 10 (" stdout F ") + name + 1 + 9 + 1 + pad + 1 ("\n") = line_len.
    let pad = line_len.checked_sub(52 + name.len()).expect("line_len too small for the name");
    format!("{name} {seq:09} {}", "x".repeat(pad))
}

/// A CRI line with a timestamp that grows with `seq` (fixed width, so every line has the same
/// length).
pub fn cri_line(name: &str, seq: u64, line_len: usize) -> String {
    let (secs, micros) = (seq / 1_000_000, seq % 1_000_000);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("2026-11-29T{h:02}:{m:02}:{s:02}.{micros:06}000Z stdout F {}\n", message(name, seq, line_len))
}

/// `<name> <seq>` of a message (the whole message when it has no second space).
fn key_prefix(msg: &str) -> &str {
    match msg.match_indices(' ').nth(1) {
        Some((i, _)) => &msg[..i],
        None => msg,
    }
}

/// (container, seq) of a delivered message, if it is one of ours.
pub fn parse_key(msg: &str) -> Option<(&str, u64)> {
    let (name, seq) = key_prefix(msg).split_once(' ')?;
    Some((name, seq.parse().ok()?))
}

/// How a container's log file is rotated.
#[derive(Debug, Clone, Copy)]
pub enum Rotation {
    None,
    /// The kubelet: at `max_bytes` the file is renamed to `0.log.<timestamp>` (the runtime
    /// writes one more line to the old descriptor, then reopens the path); rotated files but
    /// the newest are gzipped (`.gz.tmp`, then renamed to `.gz`, original removed); at most
    /// `keep` rotated files are kept, the oldest removed.
    Kubelet {
        max_bytes: u64,
        keep: usize,
    },
    /// logrotate `copytruncate` + `compress` + `delaycompress` + `rotate 2`: at `max_bytes`
    /// `<name>.1` is gzipped to `<name>.2.gz` (replacing it), the file is copied to `<name>.1`
    /// and truncated to 0 while the writer keeps its O_APPEND descriptor. The writer does it
    /// itself between two writes, so no line falls into logrotate's own copy-to-truncate
    /// window: every line written is in some file.
    CopyTruncate {
        max_bytes: u64,
    },
}

/// One container's log file and its writer state.
pub struct Container {
    pub name: String,
    pub path: PathBuf,
    pub line_len: usize,
    pub rotation: Rotation,
    file: std::fs::File,
    /// Lines written so far (the next seq).
    pub written: u64,
    size: u64,
    rotations: u64,
}

impl Container {
    /// Creates `<root>/pods/chaos_<pod>_uid-<pod>/<name>/0.log` (the kubelet's layout).
    pub fn create(root: &Path, name: &str, line_len: usize, rotation: Rotation) -> Container {
        let path = root.join(format!("pods/chaos_p{name}_uid-{name}/{name}/0.log"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        Container { name: name.into(), path, line_len, rotation, file, written: 0, size: 0, rotations: 0 }
    }

    /// Appends `n` lines in one write, then rotates if the policy says so.
    pub fn append(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        let mut buf = String::with_capacity(n as usize * self.line_len);
        for _ in 0..n {
            buf.push_str(&cri_line(&self.name, self.written, self.line_len));
            self.written += 1;
        }
        self.file.write_all(buf.as_bytes()).unwrap();
        self.size += buf.len() as u64;
        self.maybe_rotate();
    }

    fn maybe_rotate(&mut self) {
        match self.rotation {
            Rotation::None => {}
            Rotation::Kubelet { max_bytes, keep } if self.size >= max_bytes => {
                self.rotations += 1;
                let r = self.rotations;
                // kubelet names rotated files by time (YYYYMMDD-hhmmss); a counter keeps them
                // unique and sorted like the real names.
                let rotated = PathBuf::from(format!(
                    "{}.20261129-{:02}{:02}{:02}",
                    self.path.display(),
                    (r / 3600) % 24,
                    (r / 60) % 60,
                    r % 60
                ));
                std::fs::rename(&self.path, &rotated).unwrap();
                // The runtime writes a little more before it reopens the path.
                let one = cri_line(&self.name, self.written, self.line_len);
                self.written += 1;
                self.file.write_all(one.as_bytes()).unwrap();
                self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).unwrap();
                self.size = 0;
                let mut rotated_files = rotated_of(&self.path);
                // Compress all but the newest rotated file.
                for p in rotated_files.iter().take(rotated_files.len().saturating_sub(1)) {
                    if p.extension().is_none_or(|e| e != "gz") {
                        gzip_to(p, &PathBuf::from(format!("{}.gz", p.display())));
                    }
                }
                rotated_files = rotated_of(&self.path);
                while rotated_files.len() > keep {
                    std::fs::remove_file(rotated_files.remove(0)).unwrap();
                }
            }
            Rotation::CopyTruncate { max_bytes } if self.size >= max_bytes => {
                self.rotations += 1;
                let one = PathBuf::from(format!("{}.1", self.path.display()));
                if one.exists() {
                    gzip_to(&one, &PathBuf::from(format!("{}.2.gz", self.path.display())));
                }
                std::fs::copy(&self.path, &one).unwrap();
                self.file.set_len(0).unwrap();
                self.size = 0;
            }
            _ => {}
        }
    }
}

/// Rotated kubelet files of `live` (`0.log.<timestamp>[.gz]`), oldest first.
fn rotated_of(live: &Path) -> Vec<PathBuf> {
    let dir = live.parent().unwrap();
    let prefix = format!("{}.", live.file_name().unwrap().to_str().unwrap());
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.starts_with(&prefix) && !n.ends_with(".tmp")
        })
        .collect();
    // The timestamp sorts by name; `x` and `x.gz` are the same rotation.
    v.sort();
    v
}

/// gzip `from` into `to` the way the kubelet does: `<to>.tmp`, fsync-free rename, then the
/// original is removed.
fn gzip_to(from: &Path, to: &Path) {
    let tmp = PathBuf::from(format!("{}.tmp", to.display()));
    let data = std::fs::read(from).unwrap();
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&tmp).unwrap(), flate2::Compression::fast());
    enc.write_all(&data).unwrap();
    enc.finish().unwrap();
    std::fs::rename(&tmp, to).unwrap();
    std::fs::remove_file(from).unwrap();
}

/// Writer threads: each drives some containers at `rate` lines/s per container, in small
/// bursts every 10 ms, until stopped.
pub struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<Container>>>,
    pub written_so_far: Arc<std::sync::atomic::AtomicU64>,
}

impl Writers {
    pub fn start(groups: Vec<Vec<Container>>, rate: f64) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let written_so_far = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads = groups
            .into_iter()
            .map(|mut cs| {
                let (stop, total) = (stop.clone(), written_so_far.clone());
                std::thread::spawn(move || {
                    let t0 = Instant::now();
                    let base: Vec<u64> = cs.iter().map(|c| c.written).collect();
                    while !stop.load(Ordering::Relaxed) {
                        let due = (t0.elapsed().as_secs_f64() * rate) as u64;
                        for (c, b) in cs.iter_mut().zip(&base) {
                            let n = (b + due).saturating_sub(c.written);
                            c.append(n);
                            total.fetch_add(n, Ordering::Relaxed);
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    cs
                })
            })
            .collect();
        Writers { stop, threads, written_so_far }
    }

    pub fn stop(self) -> Vec<Container> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().flat_map(|t| t.join().expect("writer thread")).collect()
    }
}

/// Lines written per container.
pub type Written = BTreeMap<String, u64>;

pub fn written(cs: &[Container]) -> Written {
    cs.iter().map(|c| (c.name.clone(), c.written)).collect()
}

/// What one sink received, against what was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub written: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Lines that arrived (first time) after a later line of the same container.
    pub reordered: u64,
    /// Messages that were never written (a corrupted line).
    pub unknown: u64,
}

/// Counts `deliveries` (messages in arrival order) against `written`.
pub fn tally<'a>(written: &Written, deliveries: impl Iterator<Item = &'a str>) -> Tally {
    let mut seen: BTreeMap<&str, (Vec<u32>, Option<u64>)> =
        written.iter().map(|(k, &n)| (k.as_str(), (vec![0; n as usize], None))).collect();
    let mut t = Tally { written: written.values().sum(), ..Tally::default() };
    for msg in deliveries {
        t.delivered += 1;
        let Some((name, seq)) = parse_key(msg) else {
            t.unknown += 1;
            continue;
        };
        let Some((counts, max)) = seen.get_mut(name) else {
            t.unknown += 1;
            continue;
        };
        let Some(c) = counts.get_mut(seq as usize) else {
            t.unknown += 1;
            continue;
        };
        *c += 1;
        if *c > 1 {
            t.duplicated += 1;
        } else {
            if max.is_some_and(|m| seq < m) {
                t.reordered += 1;
            }
            *max = Some(max.map_or(seq, |m| m.max(seq)));
        }
    }
    t.lost = seen.values().map(|(c, _)| c.iter().filter(|&&n| n == 0).count() as u64).sum();
    t
}

/// The lost seqs of one container at one sink (for exact accounting of a dropped file).
pub fn lost_seqs<'a>(name: &str, n: u64, deliveries: impl Iterator<Item = &'a str>) -> Vec<u64> {
    let mut got = vec![false; n as usize];
    for (k, seq) in deliveries.filter_map(parse_key) {
        if k == name && seq < n {
            got[seq as usize] = true;
        }
    }
    (0..n).filter(|&s| !got[s as usize]).collect()
}

/// The in-process Loki and `_bulk` receivers on their own runtime.
pub struct Receivers {
    pub loki: LokiServer,
    pub es: EsServer,
    /// Every entry Loki accepted, in arrival order (duplicates included).
    loki_lines: Arc<Mutex<Vec<String>>>,
    /// How many of the stored documents (in creation order) `trim` has slimmed.
    es_slimmed: Mutex<usize>,
    /// Runs the servers; dropping it (last) aborts their tasks and closes the listeners.
    _rt: tokio::runtime::Runtime,
}

impl Receivers {
    pub fn start() -> Receivers {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let loki_lines = Arc::new(Mutex::new(Vec::new()));
        let rec = loki_lines.clone();
        let loki = rt.block_on(LokiServer::scripted(Box::new(move |push| {
            // Recorded here rather than in the server's store, whose de-duplication (like
            // Loki's) would hide what was sent twice, and is quadratic per stream. Answered
            // 204 like Loki's push endpoint on success.
            // Only "<name> <seq>" is kept: a soak records millions of entries.
            let mut r = rec.lock().unwrap();
            for s in &push.streams {
                r.extend(s.entries.iter().map(|e| key_prefix(&e.line).to_string()));
            }
            Answer::Refuse(Reply::status(204, ""))
        })));
        let es =
            rt.block_on(EsServer::scripted(Box::new(|_| RequestAnswer::Process(Duration::ZERO)), Box::new(|_| None)));
        Receivers { loki, es, loki_lines, es_slimmed: Mutex::new(0), _rt: rt }
    }

    /// Both backends down (every connection dropped) or back.
    pub fn set_down(&self, down: bool) {
        self.loki.server.set_down(down);
        self.es.server.set_down(down);
    }

    /// Frees what the servers keep per request and slims the stored documents to what the
    /// checker reads (a soak stores millions).
    pub fn trim(&self) {
        self.loki.state.lock().unwrap().pushes.clear();
        let mut s = self.es.state.lock().unwrap();
        s.requests.clear();
        let mut slimmed = self.es_slimmed.lock().unwrap();
        let st = &mut *s;
        for k in &st.order[*slimmed..] {
            let doc = st.stored.get_mut(k).expect("stored in order");
            *doc = serde_json::json!({
                "message": doc["message"].as_str().map(key_prefix),
                "log": {"file": {"path": doc["log"]["file"]["path"]}},
            });
        }
        *slimmed = st.order.len();
    }

    pub fn tally_loki(&self, w: &Written) -> Tally {
        let l = self.loki_lines.lock().unwrap();
        tally(w, l.iter().map(String::as_str))
    }

    /// Documents stored by `_id`; reordering is not counted (concurrent bulk requests and
    /// Elasticsearch itself do not keep arrival order; `@timestamp` orders the documents).
    pub fn tally_es(&self, w: &Written) -> Tally {
        let s = self.es.state.lock().unwrap();
        let mut t = tally(w, s.order.iter().filter_map(|k| s.stored[k]["message"].as_str()));
        t.reordered = 0;
        t
    }

    pub fn lost_seqs(&self, name: &str, n: u64) -> (Vec<u64>, Vec<u64>) {
        let l = self.loki_lines.lock().unwrap();
        let loki = lost_seqs(name, n, l.iter().map(String::as_str));
        drop(l);
        let s = self.es.state.lock().unwrap();
        let es = lost_seqs(name, n, s.order.iter().filter_map(|k| s.stored[k]["message"].as_str()));
        (loki, es)
    }

    /// The lost lines per container at each sink as seq ranges, e.g. `c0001 120..=388` (for
    /// failure messages: a range that starts at a rotation points at the file that was missed).
    /// At most 20 containers per sink.
    pub fn lost_ranges(&self, w: &Written) -> String {
        let ranges = |msgs: &mut dyn Iterator<Item = &str>| {
            let mut got: BTreeMap<&str, Vec<bool>> =
                w.iter().map(|(k, &n)| (k.as_str(), vec![false; n as usize])).collect();
            for (name, seq) in msgs.filter_map(parse_key) {
                if let Some(slot) = got.get_mut(name).and_then(|g| g.get_mut(seq as usize)) {
                    *slot = true;
                }
            }
            let mut out = Vec::new();
            for (name, g) in got {
                let mut rs = Vec::new();
                let mut start = None;
                for (seq, &ok) in g.iter().chain([&true]).enumerate() {
                    match (ok, start) {
                        (false, None) => start = Some(seq),
                        (true, Some(s)) => {
                            rs.push(format!("{s}..={}", seq - 1));
                            start = None;
                        }
                        _ => {}
                    }
                }
                if !rs.is_empty() {
                    out.push(format!("{name} (of {}): {}", g.len(), rs.join(", ")));
                }
            }
            out.truncate(20);
            out
        };
        let l = self.loki_lines.lock().unwrap();
        let loki = ranges(&mut l.iter().map(String::as_str));
        drop(l);
        let s = self.es.state.lock().unwrap();
        let es = ranges(&mut s.order.iter().filter_map(|k| s.stored[k]["message"].as_str()));
        let mut text = String::new();
        for (sink, lines) in [("loki", loki), ("es", es)] {
            for line in lines {
                text.push_str(&format!("\n  {sink} {line}"));
            }
        }
        text
    }

    /// Lines sent twice per container (Loki) and stored twice (Elasticsearch), for failure
    /// messages: e.g. whether the duplicates come from copytruncated or kubelet-rotated files.
    pub fn duplicates_by_container(&self, w: &Written) -> String {
        let count = |msgs: &mut dyn Iterator<Item = &str>| {
            let mut per: BTreeMap<String, BTreeMap<u64, u32>> = BTreeMap::new();
            for (name, seq) in msgs.filter_map(parse_key) {
                *per.entry(name.to_string()).or_default().entry(seq).or_default() += 1;
            }
            per.into_iter()
                .map(|(k, v)| (k, v.values().map(|&c| c as u64 - 1).sum::<u64>()))
                .collect::<BTreeMap<String, u64>>()
        };
        let l = self.loki_lines.lock().unwrap();
        let loki = count(&mut l.iter().map(String::as_str));
        drop(l);
        let s = self.es.state.lock().unwrap();
        let es = count(&mut s.order.iter().filter_map(|k| s.stored[k]["message"].as_str()));
        w.keys()
            .map(|k| format!("{k}: {}/{}", loki.get(k).unwrap_or(&0), es.get(k).unwrap_or(&0)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Up to `n` lines stored under more than one `_id`, with their `_id`s and file paths (for
    /// failure messages).
    pub fn es_duplicates(&self, n: usize) -> Vec<String> {
        let s = self.es.state.lock().unwrap();
        let mut by_line: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
        for (k, doc) in &s.stored {
            if let Some((name, seq)) = doc["message"].as_str().and_then(parse_key) {
                let file = doc["log"]["file"]["path"].as_str().unwrap_or_default();
                by_line.entry((name.to_string(), seq)).or_default().push(format!("{} ({file})", k.1));
            }
        }
        by_line
            .into_iter()
            .filter(|(_, ids)| ids.len() > 1)
            .take(n)
            .map(|((name, seq), ids)| format!("{name} {seq}: {}", ids.join(", ")))
            .collect()
    }

    pub fn bad_requests(&self) -> usize {
        self.loki.state.lock().unwrap().bad_requests.len() + self.es.state.lock().unwrap().bad_requests.len()
    }
}

/// A scenario's node: temp tree, vigil's config and the running binary.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub checkpoint_dir: PathBuf,
    pub addr: SocketAddr,
    config: String,
    pub vigil: Option<Vigil>,
    pub kills: u32,
}

impl Node {
    /// `extra` is YAML added under `sources.containers` (indented by 4 spaces).
    pub fn new(rx: &Receivers, extra: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("node");
        let checkpoint_dir = dir.path().join("cp");
        std::fs::create_dir_all(&checkpoint_dir).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = format!(
            r#"
node_name: chaos-node
sources:
  containers:
    include: ["{root}/pods/*/*/*.log"]
    checkpoint_dir: {cp}
{extra}
sinks:
  - name: loki
    type: loki
    endpoint: {loki}
    batch: {{timeout: 200ms}}
    retry: {{initial_backoff: 100ms, max_backoff: 1s}}
  - name: es
    type: elasticsearch
    endpoint: {es}
    compression: none
    batch: {{timeout: 200ms}}
    retry: {{initial_backoff: 100ms, max_backoff: 1s}}
metrics:
  listen: {addr}
log:
  level: {level}
"#,
            root = root.display(),
            cp = checkpoint_dir.display(),
            loki = rx.loki.url(),
            es = rx.es.url(),
            level = std::env::var("VIGIL_CHAOS_LOG").unwrap_or_else(|_| "warn".into()),
        );
        Node { dir, root, checkpoint_dir, addr, config, vigil: None, kills: 0 }
    }

    /// Starts `vigil run` (the binary in `$VIGIL_BIN` when set, e.g. a release build, else
    /// cargo's) and waits until it is ready. stdout and stderr are appended to files in the
    /// temp directory across restarts.
    pub fn start(&mut self) {
        let dir = self.dir.path();
        let config = dir.join("vigil.yaml");
        std::fs::write(&config, &self.config).unwrap();
        let log = |name: &str| std::fs::OpenOptions::new().create(true).append(true).open(dir.join(name)).unwrap();
        let bin = std::env::var_os("VIGIL_BIN").unwrap_or_else(|| crate::support::vigil_bin().into());
        let child = std::process::Command::new(bin)
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(log("vigil.stdout"))
            .stderr(log("vigil.stderr"))
            .spawn()
            .expect("vigil starts");
        let mut v = Vigil { child, addr: self.addr, config };
        v.wait_ready(Duration::from_secs(60));
        self.vigil = Some(v);
    }

    /// SIGKILL, then start again (waits until ready).
    pub fn kill_and_restart(&mut self) {
        let mut v = self.vigil.take().expect("vigil running");
        v.child.kill().unwrap();
        v.child.wait().unwrap();
        drop(v);
        self.kills += 1;
        self.start();
    }

    /// SIGTERM; asserts a clean exit (0) within 60 s.
    pub fn stop(&mut self) {
        let mut v = self.vigil.take().expect("vigil running");
        v.signal(libc::SIGTERM);
        let status = v.wait_exit(Duration::from_secs(60)).expect("vigil exits within 60 s of SIGTERM");
        assert!(status.success(), "vigil exited with {status}; stderr:\n{}", tail(&v.stderr()));
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vigil.stderr")).unwrap_or_default()
    }

    /// The sum of every series of metric `name` on /metrics (0 when absent or unreachable).
    pub fn metric(&self, name: &str) -> f64 {
        let Ok((200, body)) = http_get(self.addr, "/metrics") else { return 0.0 };
        metric_sum(&body, name)
    }
}

/// Sum of the series of `name` (with or without labels) in a text exposition.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let rest = if let Some(r) = rest.strip_prefix('{') { r.split_once('}')?.1 } else { rest };
            rest.strip_prefix(' ')?.trim().parse::<f64>().ok()
        })
        .sum()
}

/// The last 40 lines of a log, for failure messages, without terminal colour codes.
pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let text = lines[lines.len().saturating_sub(40)..].join("\n");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find("\x1b[") {
        out.push_str(&rest[..i]);
        rest = rest[i..].split_once('m').map_or("", |(_, r)| r);
    }
    out.push_str(rest);
    out
}

/// Waits until both sinks hold every line written, or nothing new arrived for `stall` (what
/// is missing then will not come), or `max` passed. Returns the final tallies (Loki, ES).
pub fn wait_delivered(rx: &Receivers, w: &Written, stall: Duration, max: Duration) -> (Tally, Tally) {
    let t0 = Instant::now();
    let mut last = (0, 0);
    let mut last_change = Instant::now();
    loop {
        rx.trim();
        let (l, e) = (rx.tally_loki(w), rx.tally_es(w));
        if l.lost == 0 && e.lost == 0 {
            return (l, e);
        }
        if (l.delivered, e.delivered) != last {
            last = (l.delivered, e.delivered);
            last_change = Instant::now();
        }
        if last_change.elapsed() > stall || t0.elapsed() > max {
            return (l, e);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until every line written so far is at both sinks (a positive signal before the chaos
/// starts: vigil has found every file). Panics with vigil's log after `timeout`.
pub fn wait_all_delivered(rx: &Receivers, node: &Node, w: &Written, timeout: Duration) {
    let ok = wait_for(timeout, || {
        rx.trim();
        (rx.tally_loki(w).lost == 0 && rx.tally_es(w).lost == 0).then_some(())
    });
    if ok.is_none() {
        panic!(
            "the initial lines did not arrive within {timeout:?}: Loki {:?}, ES {:?}; vigil:\n{}",
            rx.tally_loki(w),
            rx.tally_es(w),
            tail(&node.stderr())
        );
    }
}

/// One row of the chaos table.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub sink: &'static str,
    pub t: Tally,
    /// Lines vigil counted as dropped on /metrics (deleted-file bounds), converted from bytes.
    pub counted_dropped: u64,
    pub secs: f64,
}

pub const TABLE_HEADER: &str = "| scenario | sink | lines written | lost | duplicated | reordered | counted as dropped | duration |\n|---|---|---:|---:|---:|---:|---:|---:|";

impl Row {
    pub fn markdown(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} s |",
            self.scenario,
            self.sink,
            self.t.written,
            self.t.lost,
            self.t.duplicated,
            if self.sink == "elasticsearch" { "n/a".to_string() } else { self.t.reordered.to_string() },
            self.counted_dropped,
            self.secs
        )
    }
}

/// Prints the rows and appends them to `$VIGIL_CHAOS_TABLE` when set (scripts/chaos.sh).
pub fn report(rows: &[Row]) {
    let mut text = String::new();
    for r in rows {
        text.push_str(&r.markdown());
        text.push('\n');
    }
    eprintln!("{TABLE_HEADER}\n{text}");
    if let Some(p) = std::env::var_os("VIGIL_CHAOS_TABLE") {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap();
        if f.metadata().unwrap().len() == 0 {
            writeln!(f, "{TABLE_HEADER}").unwrap();
        }
        f.write_all(text.as_bytes()).unwrap();
    }
}

/// The two rows of a scenario (Loki, Elasticsearch).
pub fn rows(scenario: &str, l: Tally, e: Tally, counted_dropped: u64, t0: Instant) -> Vec<Row> {
    let secs = t0.elapsed().as_secs_f64();
    vec![
        Row { scenario: scenario.into(), sink: "loki", t: l, counted_dropped, secs },
        Row { scenario: scenario.into(), sink: "elasticsearch", t: e, counted_dropped, secs },
    ]
}

/// A tmpfs mounted on a directory (for a checkpoint directory that can be made read-only and
/// full); unmounted on drop.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Err with the reason when this environment cannot mount (not root, no CAP_SYS_ADMIN).
    pub fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs { path: path.to_path_buf() })
    }

    pub fn remount(&self, opts: &str) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount -o remount,{opts}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
