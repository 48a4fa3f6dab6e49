//! Shared test support: free ports, a tiny HTTP/1.0 GET client, the real vigil binary as a
//! child process, and a real Prometheus server. Every server binds 127.0.0.1 and is stopped on
//! drop; every wait is bounded.
#![allow(dead_code)]

pub mod prometheus;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET over a fresh connection; returns (status, body). Bounded by a 10 s timeout.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Polls `f` every 20 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn vigil_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vigil")
}

/// The real vigil binary running a config file; killed on drop.
pub struct Vigil {
    pub child: Child,
    pub addr: SocketAddr,
    pub config: PathBuf,
}

impl Vigil {
    /// Writes `config` (which must listen on `addr`) into `dir` and starts `vigil run`.
    /// stdout and stderr go to files in `dir` (vigil.stdout, vigil.stderr).
    pub fn start(dir: &Path, config: &str, addr: SocketAddr) -> Vigil {
        let path = dir.join("vigil.yaml");
        std::fs::write(&path, config).unwrap();
        let out = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("vigil.stdout")).unwrap();
        let err = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("vigil.stderr")).unwrap();
        let child = Command::new(vigil_bin())
            .args(["run", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        Vigil { child, addr, config: path }
    }

    /// Waits until /readyz answers 200; panics with vigil's stderr after `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let addr = self.addr;
        let ok = wait_for(timeout, || match http_get(addr, "/readyz") {
            Ok((200, _)) => Some(()),
            _ => None,
        });
        if ok.is_none() {
            let _ = self.child.kill();
            let stderr = std::fs::read_to_string(self.config.with_file_name("vigil.stderr")).unwrap_or_default();
            panic!("vigil did not become ready within {timeout:?}; stderr:\n{stderr}");
        }
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for exit at most `timeout`; None if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_for(timeout, || self.child.try_wait().ok().flatten())
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.config.with_file_name("vigil.stderr")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.config.with_file_name("vigil.stdout")).unwrap_or_default()
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
