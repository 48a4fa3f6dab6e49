//! Config reload with the real binary: SIGHUP adding a Loki sink while lines flow (nothing lost
//! from the old sink, every line written after the reload at the new one), a bad reload (the
//! old config keeps running, counted as a failure), and a ConfigMap update performed exactly as
//! the kubelet's atomic writer does it (an include change applied at the next scan, a
//! `checkpoint_dir` change reported as "needs restart").

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use support::loki::LokiServer;
use support::{Vigil, free_port, http_get, vigil_bin, wait_for};

const WAIT: Duration = Duration::from_secs(60);

fn pod_log(root: &Path, pod: &str) -> PathBuf {
    root.join(format!("pods/shop_{pod}_uid-{pod}/app/0.log"))
}

/// Appends CRI lines `line <i>` for `i` in `range` to `pod`'s log file.
fn write_lines(root: &Path, pod: &str, range: std::ops::Range<usize>) {
    let p = pod_log(root, pod);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&p).unwrap();
    let mut buf = String::new();
    for i in range {
        buf.push_str(&format!("2026-11-30T03:00:00.{i:09}Z stdout F line {i}\n"));
    }
    f.write_all(buf.as_bytes()).unwrap();
}

/// The messages the file sink wrote, in order (complete lines only).
fn file_sink_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["message"].as_str().unwrap().to_string())
        .collect()
}

fn numbered(n: std::ops::Range<usize>) -> Vec<String> {
    n.map(|i| format!("line {i}")).collect()
}

/// A series' value on /metrics (`name{labels}` exactly as printed), if present.
fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics").ok()?;
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn wait_metric(vigil: &Vigil, series: &str, value: f64) {
    let addr = vigil.addr;
    let got = wait_for(WAIT, || (metric(addr, series) == Some(value)).then_some(()));
    assert!(
        got.is_some(),
        "{series} never became {value} (now {:?}); stderr:\n{}",
        metric(addr, series),
        vigil.stderr()
    );
}

fn config(root: &Path, dir: &Path, addr: SocketAddr, include: &str, sinks: &str) -> String {
    format!(
        r#"
node_name: node-reload
sources:
  containers:
    include: ["{root}/pods/{include}/*/*.log"]
    checkpoint_dir: {cp}
    poll_interval: 50ms
    checkpoint_interval: 100ms
sinks:
{sinks}
metrics:
  listen: {addr}
  node: {{enabled: false}}
log:
  level: info
"#,
        root = root.display(),
        cp = dir.join("cp").display(),
    )
}

fn file_sink(dir: &Path) -> String {
    format!("  - {{name: f, type: file, path: {}}}\n", dir.join("out.jsonl").display())
}

fn loki_sink(url: &str) -> String {
    format!(
        "  - name: loki\n    type: loki\n    endpoint: {url}\n    batch: {{timeout: 100ms}}\n    retry: {{initial_backoff: 50ms, max_backoff: 300ms}}\n"
    )
}

/// `vigil run --config <config>`, stderr in `dir/vigil.stderr` (outside the watched config
/// directory, so vigil's own logging is no change there).
fn spawn(dir: &Path, config: &Path, addr: SocketAddr) -> Vigil {
    let err = std::fs::File::create(dir.join("vigil.stderr")).unwrap();
    let child = Command::new(vigil_bin())
        .args(["run", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    let mut v = Vigil { child, addr, config: dir.join("vigil.yaml") };
    v.wait_ready(WAIT);
    v
}

/// SIGHUP adds a Loki sink while a writer appends lines without pause. The config file is a
/// symlink to a file in another directory, which the directory watch does not see: only the
/// signal can trigger this reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_loki_sink_while_lines_flow_and_loses_nothing() {
    let loki = LokiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (root, conf, real) = (dir.path().join("node"), dir.path().join("conf"), dir.path().join("real"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&real).unwrap();
    std::os::unix::fs::symlink(real.join("vigil.yaml"), conf.join("vigil.yaml")).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    write_lines(&root, "web", 0..0);
    std::fs::write(real.join("vigil.yaml"), config(&root, dir.path(), addr, "*", &file_sink(dir.path()))).unwrap();
    let vigil = tokio::task::block_in_place(|| spawn(dir.path(), &conf.join("vigil.yaml"), addr));

    let written = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (root, written, stop) = (root.clone(), written.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let i = written.load(Ordering::SeqCst);
                write_lines(&root, "web", i..i + 5);
                written.store(i + 5, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let out = dir.path().join("out.jsonl");
    tokio::task::block_in_place(|| {
        assert!(wait_for(WAIT, || (file_sink_lines(&out).len() >= 200).then_some(())).is_some(), "file sink got lines");
        let both = config(&root, dir.path(), addr, "*", &(file_sink(dir.path()) + &loki_sink(&loki.url())));
        std::fs::write(real.join("vigil.yaml"), both).unwrap();
        vigil.signal(libc::SIGHUP);
        wait_metric(&vigil, "vigil_config_reload_total{result=\"success\"}", 1.0);
    });
    // Every line written from now on must reach Loki.
    let after = written.load(Ordering::SeqCst);
    tokio::task::block_in_place(|| {
        let _ = wait_for(WAIT, || (written.load(Ordering::SeqCst) >= after + 500).then_some(()));
    });
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let total = written.load(Ordering::SeqCst);
    tokio::task::block_in_place(|| {
        let done = wait_for(WAIT, || {
            let loki_has_all =
                loki.lines().values().next().is_some_and(|v| v.last() == Some(&format!("line {}", total - 1)));
            (file_sink_lines(&out).len() >= total && loki_has_all).then_some(())
        });
        assert!(done.is_some(), "both sinks caught up to {total} lines; stderr:\n{}", vigil.stderr());
    });
    assert_eq!(file_sink_lines(&out), numbered(0..total), "the old sink lost or repeated nothing across the reload");
    let streams = loki.lines();
    assert_eq!(streams.len(), 1, "{:?}", streams.keys());
    let at_loki = streams.into_values().next().unwrap();
    let first: usize = at_loki[0].strip_prefix("line ").unwrap().parse().unwrap();
    assert!(first <= after, "Loki starts at line {first}, after line {after} that was written after the reload");
    assert_eq!(at_loki, numbered(first..total), "every line after the reload reached Loki, once, in order");
    assert_eq!(metric(vigil.addr, "vigil_config_reload_total{result=\"failure\"}"), Some(0.0));
    assert_eq!(metric(vigil.addr, "vigil_config_last_reload_successful"), Some(1.0));
    assert_eq!(metric(vigil.addr, "vigil_config_needs_restart"), Some(0.0));
}

/// A config that does not validate changes nothing: the old sinks keep receiving, every
/// problem is logged with its path, and the counters say failure. Then a good one applies.
/// (A plain file rewritten in place, as an editor or `kubectl cp` would.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_keeps_the_old_config_running() {
    let dir = tempfile::tempdir().unwrap();
    let (root, conf) = (dir.path().join("node"), dir.path().join("conf"));
    std::fs::create_dir_all(&conf).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    write_lines(&root, "web", 0..100);
    let good = config(&root, dir.path(), addr, "*", &file_sink(dir.path()));
    std::fs::write(conf.join("vigil.yaml"), &good).unwrap();
    let vigil = tokio::task::block_in_place(|| spawn(dir.path(), &conf.join("vigil.yaml"), addr));
    assert_eq!(metric(addr, "vigil_config_reload_total{result=\"failure\"}"), Some(0.0), "initialised at 0");
    assert_eq!(metric(addr, "vigil_config_reload_total{result=\"success\"}"), Some(0.0), "initialised at 0");
    assert_eq!(metric(addr, "vigil_config_last_reload_successful"), Some(1.0));
    let out = dir.path().join("out.jsonl");
    tokio::task::block_in_place(|| {
        assert!(wait_for(WAIT, || (file_sink_lines(&out).len() == 100).then_some(())).is_some());
        // Two problems: a bad glob and a Loki sink without a URL; and the file sink removed.
        let bad = config(&root, dir.path(), addr, "[", "  - {name: loki, type: loki, endpoint: 'not a url'}\n");
        std::fs::write(conf.join("vigil.yaml"), bad).unwrap();
        wait_metric(&vigil, "vigil_config_reload_total{result=\"failure\"}", 1.0);
    });
    assert_eq!(metric(addr, "vigil_config_last_reload_successful"), Some(0.0));
    assert_eq!(metric(addr, "vigil_config_reload_total{result=\"success\"}"), Some(0.0));
    let stderr = vigil.stderr();
    assert!(stderr.contains("sources.containers.include[0]"), "{stderr}");
    assert!(stderr.contains("sinks[0].endpoint"), "{stderr}");
    // The old config still runs: new lines reach the file sink.
    write_lines(&root, "web", 100..200);
    tokio::task::block_in_place(|| {
        let ok = wait_for(WAIT, || (file_sink_lines(&out).len() == 200).then_some(()));
        assert!(ok.is_some(), "the old sink still gets lines; stderr:\n{}", vigil.stderr());
    });
    assert_eq!(file_sink_lines(&out), numbered(0..200));
    // A good config again: success, and the gauge back at 1.
    let exclude = good.replace("    poll_interval", "    exclude: [\"/nothing/*\"]\n    poll_interval");
    std::fs::write(conf.join("vigil.yaml"), exclude).unwrap();
    tokio::task::block_in_place(|| wait_metric(&vigil, "vigil_config_reload_total{result=\"success\"}", 1.0));
    assert_eq!(metric(addr, "vigil_config_last_reload_successful"), Some(1.0));
    assert_eq!(metric(addr, "vigil_config_reload_total{result=\"failure\"}"), Some(1.0));
}

/// A ConfigMap update as the kubelet performs it (kubernetes `pkg/volume/util/atomic_writer.go`,
/// `AtomicWriter.Write`): the payload is written into a new hidden timestamped directory
/// (`..2026_11_30_03_00_01.000000002`), a symlink `..data_tmp` pointing at it is created and
/// renamed over `..data` (the atomic step: `os.Rename`), then the old timestamped directory is
/// removed. The user-visible `vigil.yaml -> ..data/vigil.yaml` symlink is never touched, so
/// only a watch of the directory sees the update. The new config widens `include` to a second
/// pod (applied at the next scan) and moves `checkpoint_dir` (needs restart: reported, not
/// applied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_is_reloaded_like_the_kubelet_does_it() {
    let dir = tempfile::tempdir().unwrap();
    let (root, conf) = (dir.path().join("node"), dir.path().join("conf"));
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    write_lines(&root, "web", 0..50);
    write_lines(&root, "api", 0..50);
    let old_ts = "..2026_11_30_03_00_00.000000001";
    std::fs::create_dir_all(conf.join(old_ts)).unwrap();
    let first = config(&root, dir.path(), addr, "shop_web_*", &file_sink(dir.path()));
    std::fs::write(conf.join(old_ts).join("vigil.yaml"), &first).unwrap();
    std::os::unix::fs::symlink(old_ts, conf.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/vigil.yaml", conf.join("vigil.yaml")).unwrap();
    let vigil = tokio::task::block_in_place(|| spawn(dir.path(), &conf.join("vigil.yaml"), addr));
    let out = dir.path().join("out.jsonl");
    tokio::task::block_in_place(|| {
        assert!(wait_for(WAIT, || (file_sink_lines(&out).len() == 50).then_some(())).is_some());
    });

    let second = config(&root, dir.path(), addr, "*", &file_sink(dir.path()))
        .replace(&dir.path().join("cp").display().to_string(), &dir.path().join("cp2").display().to_string());
    let new_ts = "..2026_11_30_03_00_01.000000002";
    std::fs::create_dir_all(conf.join(new_ts)).unwrap();
    std::fs::write(conf.join(new_ts).join("vigil.yaml"), second).unwrap();
    std::os::unix::fs::symlink(new_ts, conf.join("..data_tmp")).unwrap();
    std::fs::rename(conf.join("..data_tmp"), conf.join("..data")).unwrap();
    std::fs::remove_dir_all(conf.join(old_ts)).unwrap();

    tokio::task::block_in_place(|| {
        wait_metric(&vigil, "vigil_config_reload_total{result=\"success\"}", 1.0);
        // The api pod's file is found by the next scan (asked for by the reload), whole.
        let ok = wait_for(WAIT, || (file_sink_lines(&out).len() == 100).then_some(()));
        assert!(ok.is_some(), "the widened include is applied; stderr:\n{}", vigil.stderr());
    });
    assert_eq!(metric(addr, "vigil_config_needs_restart"), Some(1.0));
    let stderr = vigil.stderr();
    assert!(
        stderr.lines().any(|l| l.contains("needs restart") && l.contains("sources.containers.checkpoint_dir")),
        "{stderr}"
    );
    assert!(!dir.path().join("cp2").exists(), "checkpoint_dir is not applied live");
    let mut got = file_sink_lines(&out);
    got.sort();
    let mut want = [numbered(0..50), numbered(0..50)].concat();
    want.sort();
    assert_eq!(got, want, "web's lines once (not re-read across the reload), api's once");
    assert_eq!(metric(addr, "vigil_config_reload_total{result=\"failure\"}"), Some(0.0));

    // A second update puts checkpoint_dir back: the file and what runs agree again.
    let third = config(&root, dir.path(), addr, "*", &file_sink(dir.path()));
    let third_ts = "..2026_11_30_03_00_02.000000003";
    std::fs::create_dir_all(conf.join(third_ts)).unwrap();
    std::fs::write(conf.join(third_ts).join("vigil.yaml"), third).unwrap();
    std::os::unix::fs::symlink(third_ts, conf.join("..data_tmp")).unwrap();
    std::fs::rename(conf.join("..data_tmp"), conf.join("..data")).unwrap();
    std::fs::remove_dir_all(conf.join(new_ts)).unwrap();
    tokio::task::block_in_place(|| wait_metric(&vigil, "vigil_config_reload_total{result=\"success\"}", 2.0));
    assert_eq!(metric(addr, "vigil_config_needs_restart"), Some(0.0));
}

/// A reload that removes a sink whose backend is down and changes another: the removed sink
/// cannot drain, so after `shutdown.grace_period` its pending acks are no longer awaited and
/// the lines the other sink acked commit (vigil keeps running: a removed sink's end is not a
/// failure); the changed file sink's old instance drains and the new one takes every later
/// line, so the two files together hold each line exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_sink_that_cannot_drain_is_given_up_and_a_changed_one_hands_over() {
    let loki = LokiServer::start().await;
    loki.server.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let (root, conf) = (dir.path().join("node"), dir.path().join("conf"));
    std::fs::create_dir_all(&conf).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    write_lines(&root, "web", 0..100);
    let with_grace = |c: String| c + "shutdown: {grace_period: 1s}\n";
    let first = with_grace(config(&root, dir.path(), addr, "*", &(file_sink(dir.path()) + &loki_sink(&loki.url()))));
    std::fs::write(conf.join("vigil.yaml"), first).unwrap();
    let mut vigil = tokio::task::block_in_place(|| spawn(dir.path(), &conf.join("vigil.yaml"), addr));
    let (out, out2) = (dir.path().join("out.jsonl"), dir.path().join("out2.jsonl"));
    tokio::task::block_in_place(|| {
        assert!(wait_for(WAIT, || (file_sink_lines(&out).len() == 100).then_some(())).is_some());
    });
    assert_eq!(metric(addr, "vigil_lines_shipped_total"), Some(0.0), "nothing commits while Loki is down");

    let second =
        with_grace(config(&root, dir.path(), addr, "*", &file_sink(dir.path()))).replace("out.jsonl", "out2.jsonl");
    std::fs::write(conf.join("vigil.yaml"), second).unwrap();
    tokio::task::block_in_place(|| {
        wait_metric(&vigil, "vigil_config_reload_total{result=\"success\"}", 1.0);
        wait_metric(&vigil, "vigil_lines_shipped_total", 100.0);
    });
    write_lines(&root, "web", 100..200);
    tokio::task::block_in_place(|| wait_metric(&vigil, "vigil_lines_shipped_total", 200.0));
    assert!(vigil.child.try_wait().unwrap().is_none(), "vigil still runs; stderr:\n{}", vigil.stderr());
    let both = [file_sink_lines(&out), file_sink_lines(&out2)].concat();
    assert_eq!(both, numbered(0..200), "each line once across the old and the new file sink");
    assert!(!file_sink_lines(&out2).is_empty(), "the new file sink took the later lines");
    assert_eq!(loki.stored_count(), 0);
}
