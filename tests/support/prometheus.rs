//! A real Prometheus server (Debian's `prometheus` package) for tests: temp data dir,
//! 127.0.0.1 only, killed on drop.

use super::{free_port, http_get, wait_for};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Prometheus {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `prometheus` with `config_yaml` (a prometheus.yml) and extra flags, e.g.
    /// `--web.enable-remote-write-receiver`. Panics if it is not ready within 30 s.
    pub fn start(config_yaml: &str, extra_flags: &[&str]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config_yaml).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .args(extra_flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the prometheus binary (apt-get install prometheus; scripts/test.sh does it)");
        let mut p = Prometheus { addr, child, _dir: dir };
        if wait_for(Duration::from_secs(30), || matches!(http_get(addr, "/-/ready"), Ok((200, _))).then_some(()))
            .is_none()
        {
            let _ = p.child.kill();
            panic!("prometheus not ready: {}", p.log());
        }
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant PromQL query; returns the `data.result` array.
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let mut q = String::new();
        for b in promql.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                q.push(b as char);
            } else {
                q.push_str(&format!("%{b:02X}"));
            }
        }
        let (status, body) = http_get(self.addr, &format!("/api/v1/query?query={q}")).unwrap();
        assert_eq!(status, 200, "query {promql}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Polls a query until it returns at least one series (or 60 s pass).
    pub fn query_until_nonempty(&self, promql: &str) -> Vec<serde_json::Value> {
        wait_for(Duration::from_secs(60), || {
            let r = self.query(promql);
            (!r.is_empty()).then_some(r)
        })
        .unwrap_or_else(|| panic!("query {promql} stayed empty; prometheus log:\n{}", self.log()))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
