//! Multiline through the real log source (tailer, pipeline, acks): a trace cut by rotation,
//! the `max_wait` bound, interleaved streams, and a per-file rule.

mod logs_common;

use logs_common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vigil::config::HumanDuration;
use vigil::logs::config::MultilineRule;

const WAIT: Duration = Duration::from_secs(20);
const JAVA: &str = include_str!("fixtures/multiline/java.txt");
const GO: &str = include_str!("fixtures/multiline/go_panic.txt");

fn pod_file(root: &Path, ns: &str, pod: &str) -> PathBuf {
    let dir = root.join(format!("pods/{ns}_{pod}_uid-{pod}/app"));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("0.log")
}

fn append(path: &Path, data: &str) {
    std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(data.as_bytes()).unwrap();
}

fn records(stream: &str, text: &str) -> String {
    text.lines().map(|l| cri(stream, "F", l)).collect()
}

fn messages(got: &Got) -> Vec<String> {
    got.lock().unwrap().iter().map(|g| g.1.clone()).collect()
}

/// kubelet rotates in the middle of a trace: the head is in the rotated file, the rest in the
/// new one. The head ships as one event from the old file when that file is finished; the
/// rest ships from the new file; no line is lost or shipped twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_cut_by_rotation_loses_and_repeats_nothing() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let f = pod_file(&root, "shop", "web");
    let lines: Vec<&str> = JAVA.trim_end().lines().collect();
    let (head, tail) = lines.split_at(6);
    append(&f, &records("stdout", "before"));
    let got: Got = Arc::new(Mutex::new(Vec::new()));
    let r = start(&config(&root, &d.path().join("cp")), got.clone()).await;
    assert!(wait_for(WAIT, || messages(&got) == ["before"]).await, "{:?}", messages(&got));
    append(&f, &records("stdout", &head.join("\n")));
    std::fs::rename(&f, f.with_extension("log.20261130-025054")).unwrap();
    append(&f, &(records("stdout", &tail.join("\n")) + &records("stdout", "after")));
    assert!(wait_for(WAIT, || messages(&got).last().is_some_and(|m| m == "after")).await, "{:?}", messages(&got));
    stop(r).await;
    let mut m = messages(&got);
    assert_eq!(m[0], "before");
    // The head is one event (the old file's lines may come before or after the new file's:
    // the old file is finished, and its group flushed, after it was read to its end).
    let h = m.iter().position(|e| *e == head.join("\n")).expect("the head of the trace as one event");
    m.remove(h);
    // The new file starts with `Caused by:`: the rest of the trace is joined there.
    assert_eq!(m[1..], [tail.join("\n"), "after".to_string()]);
}

/// An ordinary line on the other stream is not held by an open trace, and a trace whose end
/// never comes ships `max_wait` after its first line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_trace_delays_nothing_else_and_ships_after_max_wait() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let f = pod_file(&root, "shop", "api");
    let mut cfg = config(&root, &d.path().join("cp"));
    cfg.multiline.max_wait = HumanDuration::millis(1500);
    let got: Got = Arc::new(Mutex::new(Vec::new()));
    let r = start(&cfg, got.clone()).await;
    let go: Vec<&str> = GO.trim_end().lines().collect();
    // The panic without its `exit status` line: nothing says it is over.
    let open = go[..go.len() - 1].join("\n");
    let t0 = Instant::now();
    append(&f, &(records("stderr", &open) + &records("stdout", "ordinary")));
    assert!(wait_for(WAIT, || messages(&got).contains(&"ordinary".to_string())).await);
    assert!(wait_for(WAIT, || messages(&got).contains(&open)).await, "{:?}", messages(&got));
    // Not before max_wait (the positive signal came first; this is a lower bound).
    assert!(t0.elapsed() >= Duration::from_millis(1500));
    stop(r).await;
    assert_eq!(messages(&got), ["ordinary".to_string(), open]);
}

/// Stack traces on stdout and stderr written line by line in turn, and a file whose rule
/// turns multiline off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_traces_and_a_rule_per_glob() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("node");
    let a = pod_file(&root, "shop", "web");
    let b = pod_file(&root, "legacy", "cron");
    let mut cfg = config(&root, &d.path().join("cp"));
    cfg.multiline.rules = vec![MultilineRule {
        matches: format!("{}/pods/legacy_*/*/*.log", root.display()),
        mode: Some("off".into()),
        start_pattern: None,
    }];
    let java: Vec<&str> = JAVA.trim_end().lines().collect();
    let go: Vec<&str> = GO.trim_end().lines().collect();
    let mut data = String::new();
    for i in 0..java.len().max(go.len()) {
        if let Some(l) = java.get(i) {
            data += &cri("stdout", "F", l);
        }
        if let Some(l) = go.get(i) {
            data += &cri("stderr", "F", l);
        }
    }
    append(&a, &(data + &records("stdout", "done")));
    append(&b, &records("stderr", GO.trim_end()));
    let got: Got = Arc::new(Mutex::new(Vec::new()));
    let r = start(&cfg, got.clone()).await;
    let n_go = go.len();
    assert!(wait_for(WAIT, || got.lock().unwrap().len() >= 3 + n_go).await, "{:?}", messages(&got));
    stop(r).await;
    let got = got.lock().unwrap();
    let from = |p: &Path| -> Vec<String> {
        got.iter().filter(|g| g.0 == p.display().to_string()).map(|g| g.1.clone()).collect()
    };
    let mut web = from(&a);
    web.sort();
    let mut want = vec![JAVA.trim_end().to_string(), GO.trim_end().to_string(), "done".to_string()];
    want.sort();
    assert_eq!(web, want);
    assert_eq!(from(&b), go);
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// The keys of `sources.containers.multiline` load (and print back) as written; every bad
/// value is named by its path, regexes included, before anything starts.
#[test]
fn multiline_config_keys_and_errors_by_path() {
    use vigil::config::{Config, Error};
    let yaml = r#"
sources:
  containers:
    multiline:
      mode: java
      max_wait: 2s
      rules:
        - match: /var/log/pods/legacy_*/*/*.log
          start_pattern: '^\d{4}-\d\d-\d\d '
        - match: /var/log/pods/batch_*/*/*.log
          mode: "off"
"#;
    let c = Config::from_yaml(yaml, &no_env).unwrap();
    let m = &c.sources.containers.multiline;
    assert_eq!((m.mode.as_str(), m.max_wait.get(), m.rules.len()), ("java", Duration::from_secs(2), 2));
    let again = Config::from_yaml(&c.to_yaml(), &no_env).unwrap();
    assert_eq!(again.sources.containers.multiline.rules[0].start_pattern, m.rules[0].start_pattern);
    assert_eq!(Config::from_yaml("{}", &no_env).unwrap().sources.containers.multiline.mode, "auto");

    let bad = r#"
sources:
  containers:
    multiline:
      mode: cobol
      rules:
        - match: /a/*
          start_pattern: '(unclosed'
        - match: /b/*
          mode: 'regex:[z-a]'
"#;
    let Err(Error::Invalid(errors)) = Config::from_yaml(bad, &no_env) else { panic!("should be invalid") };
    let joined = errors.join("\n");
    for path in [
        "sources.containers.multiline.mode: 'cobol' is not a multiline mode",
        "sources.containers.multiline.rules[0].start_pattern: '(unclosed' is not a valid regex",
        "sources.containers.multiline.rules[1].mode: '[z-a]' is not a valid regex",
    ] {
        assert!(joined.contains(path), "{path} not in:\n{joined}");
    }
    let unknown = "sources:\n  containers:\n    multiline:\n      start: x\n";
    let e = Config::from_yaml(unknown, &no_env).unwrap_err().to_string();
    assert!(e.contains("multiline") && e.contains("start"), "{e}");
}
