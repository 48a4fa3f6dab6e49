//! The README's first command, as a test: the real binary on `examples/vigil.yaml` (with the
//! metrics port and checkpoint directory made test-safe) prints the sample node's events.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sample_node_tree_prints_its_enriched_events() {
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string("examples/vigil.yaml")
        .unwrap()
        .replace("listen: 127.0.0.1:9102", "listen: 127.0.0.1:0");
    let cfg_path = dir.path().join("vigil.yaml");
    std::fs::write(&cfg_path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--config"])
        .arg(&cfg_path)
        .env("VIGIL_CHECKPOINT_DIR", dir.path().join("cp"))
        .env_remove("NODE_NAME")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    // 14 events; the trailing partial comes after partial_flush_timeout (2s).
    let deadline = Instant::now() + Duration::from_secs(8);
    let cp = dir.path().join("cp/checkpoints.json");
    while Instant::now() < deadline {
        let done = std::fs::read_to_string(&cp).is_ok_and(|t| t.contains("\"offset\":321"));
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let out = reader.join().unwrap();
    let events: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let msgs: Vec<&str> = events.iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert_eq!(events.len(), 14, "{msgs:#?}");
    assert!(events.iter().all(|e| e["node"] == "example-node"));
    // The /var/log/containers symlink is the same file: nginx's lines once, with its id.
    let nginx: Vec<_> = events.iter().filter(|e| e["kubernetes"]["container"] == "nginx").collect();
    assert_eq!(nginx.len(), 4);
    assert!(nginx.iter().all(|e| e["file"].as_str().unwrap().contains("/var/log/pods/")));
    assert_eq!(
        nginx[0]["kubernetes"]["container_id"],
        "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b"
    );
    assert_eq!(nginx[0]["kubernetes"]["pod_uid"], "7c1e2a3b-0d4f-4e5a-9b8c-1a2b3c4d5e6f");
    assert_eq!(
        nginx[3]["message"],
        "a long line split by the runtime, first part; second part, and the end of the line"
    );
    // Malformed line flagged, trailing P flushed.
    let bad: Vec<_> = events.iter().filter(|e| e["malformed"] == true).collect();
    assert_eq!(bad.len(), 1);
    assert!(msgs.contains(&"a trailing partial with no F: the container exited mid-line"));
    // Docker 16 KiB split merged; labels from config.v2.json.
    let worker: Vec<_> = events.iter().filter(|e| e["kubernetes"]["container"] == "worker").collect();
    assert_eq!(worker.len(), 3);
    assert_eq!(worker[1]["message"], "first half of a line longer than 16KiB, second half");
    assert_eq!(worker[0]["kubernetes"]["namespace"], "jobs");
    assert_eq!(worker[2]["stream"], "stderr");
    assert_eq!(worker[2]["message"], "worker error: connection refused <db:5432>");
    // CRI-O offset timestamp converted to UTC.
    let sidecar = events.iter().find(|e| e["kubernetes"]["container"] == "sidecar").unwrap();
    assert_eq!(sidecar["timestamp"], "2026-11-28T06:12:13.000000001Z");
}
