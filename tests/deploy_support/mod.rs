//! Shared by the `deploy_*` tests: the repository's files, the external tools they drive
//! (yamllint, kubernetes-validate, hadolint, kubectl when present), a kustomize renderer, the
//! real `vigil` binary, and a tiny HTTP client.
//!
//! Key decision: kustomize output is rendered here, by a renderer that implements exactly the
//! features manifests/ uses (`resources`, `namespace`, `patches` given by path whose content is
//! a map-only strategic merge) and refuses every other key, list patches and RBAC subjects it
//! would have to rewrite. No kustomize binary can be installed from Debian, PyPI, npm or
//! crates.io (PyPI's `kustomize` is an unrelated Python reimplementation; Debian 12's
//! kubernetes-client is 1.20, whose kustomize v2 predates `patches`). Where `kubectl` is on
//! the PATH (the project's machine image has it), the deploy tests also compare this renderer
//! with `kubectl kustomize`, so the renderer cannot drift from the real thing unnoticed.
#![allow(dead_code)] // each deploy_* test crate uses a different part of this module

use serde::Deserialize;
use serde_json::{Map, Value};
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

pub fn have(name: &str) -> bool {
    Command::new(name).arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

// ------------------------------------------------------------------------------------------
// kustomize

/// Cluster-scoped kinds: the namespace transformer leaves them alone.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "StorageClass",
    "CustomResourceDefinition",
    "PersistentVolume",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
    "RuntimeClass",
    "IngressClass",
    "CSIDriver",
    "Node",
];

/// Renders the kustomization in `dir` (see the module doc for what is supported).
pub fn kustomize(dir: &Path) -> Result<Vec<Value>, String> {
    let kpath = dir.join("kustomization.yaml");
    let docs = yaml_docs(
        &std::fs::read_to_string(&kpath).map_err(|e| format!("{}: {e}", kpath.display()))?,
        &kpath.display().to_string(),
    );
    let [k] = docs.as_slice() else {
        return Err(format!("{}: expected one document", kpath.display()));
    };
    let k = k.as_object().ok_or_else(|| format!("{}: not a map", kpath.display()))?;
    for key in k.keys() {
        if !["apiVersion", "kind", "namespace", "resources", "patches"].contains(&key.as_str()) {
            return Err(format!("{}: `{key}` is not supported by the test renderer", kpath.display()));
        }
    }
    if k.get("kind") != Some(&Value::from("Kustomization")) {
        return Err(format!("{}: kind is not Kustomization", kpath.display()));
    }
    let mut out: Vec<Value> = Vec::new();
    for r in k.get("resources").and_then(Value::as_array).into_iter().flatten() {
        let rel = r.as_str().ok_or_else(|| format!("{}: resource {r} is not a path", kpath.display()))?;
        let p = dir.join(rel);
        let objs = if p.is_dir() {
            kustomize(&p)?
        } else {
            yaml_docs(&std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?, rel)
        };
        for o in objs {
            if out.iter().any(|x| id(x) == id(&o)) {
                return Err(format!("{}: {:?} is defined twice", kpath.display(), id(&o)));
            }
            out.push(o);
        }
    }
    for p in k.get("patches").and_then(Value::as_array).into_iter().flatten() {
        let p = p.as_object().ok_or_else(|| format!("{}: a patch is not a map", kpath.display()))?;
        if p.keys().any(|key| key != "path") {
            return Err(format!("{}: only `patches: - path: FILE` is supported", kpath.display()));
        }
        let file = dir.join(p["path"].as_str().ok_or("patch path is not a string")?);
        for patch in yaml_docs(&read(&file), &file.display().to_string()) {
            let (kind, name) = (str_at(&patch, &["kind"]), str_at(&patch, &["metadata", "name"]));
            let ns = str_at(&patch, &["metadata", "namespace"]);
            let targets: Vec<usize> = (0..out.len())
                .filter(|&i| {
                    str_at(&out[i], &["kind"]) == kind
                        && str_at(&out[i], &["metadata", "name"]) == name
                        && str_at(&out[i], &["apiVersion"]) == str_at(&patch, &["apiVersion"])
                        && (ns.is_empty() || str_at(&out[i], &["metadata", "namespace"]) == ns)
                })
                .collect();
            let [i] = targets.as_slice() else {
                return Err(format!("{}: patch matches {} resources, not one", file.display(), targets.len()));
            };
            merge(&mut out[*i], &patch).map_err(|e| format!("{}: {e}", file.display()))?;
        }
    }
    if let Some(ns) = k.get("namespace").and_then(Value::as_str) {
        for o in &mut out {
            let kind = str_at(o, &["kind"]);
            if kind.ends_with("RoleBinding") {
                return Err("RoleBinding subjects would need rewriting: not supported by the test renderer".into());
            }
            if !CLUSTER_SCOPED.contains(&kind.as_str()) {
                o["metadata"]["namespace"] = Value::from(ns);
            }
        }
    }
    Ok(out)
}

/// Strategic merge of a patch made of maps and scalars: maps merge key by key, scalars
/// replace, null deletes. Lists of maps keyed by `name` (containers, volumes, volumeMounts, env:
/// the fields whose patch merge key is `name`) merge item by item, new items first, as
/// kubectl kustomize does; any other list in the patch is refused (its merge depends on per-field
/// patch strategies this renderer does not know).
fn merge(target: &mut Value, patch: &Value) -> Result<(), String> {
    let named = |v: &Value| v.as_array().is_some_and(|a| a.iter().all(|i| i.get("name").is_some_and(Value::is_string)));
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (key, pv) in p {
                if pv.is_null() {
                    t.remove(key);
                } else if named(pv) && t.get(key).is_none_or(named) {
                    let list = t.entry(key.clone()).or_insert_with(|| Value::Array(Vec::new()));
                    let list = list.as_array_mut().expect("checked");
                    let mut added = Vec::new();
                    for item in pv.as_array().expect("checked") {
                        match list.iter_mut().find(|i| i["name"] == item["name"]) {
                            Some(existing) => merge(existing, item)?,
                            None => added.push(item.clone()),
                        }
                    }
                    // kubectl kustomize puts the patch's new items first, in the patch's order.
                    list.splice(0..0, added);
                } else if pv.is_array() {
                    return Err(format!("list at `{key}`: list patches are not supported by the test renderer"));
                } else if pv.is_object() && t.get(key).is_some_and(Value::is_object) {
                    merge(t.get_mut(key).expect("checked"), pv)?;
                } else {
                    t.insert(key.clone(), pv.clone());
                }
            }
            Ok(())
        }
        _ => Err("a patch document must be a map".into()),
    }
}

/// (kind, namespace, name): what kustomize calls a resource id.
pub fn id(o: &Value) -> (String, String, String) {
    (str_at(o, &["kind"]), str_at(o, &["metadata", "namespace"]), str_at(o, &["metadata", "name"]))
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

/// Sorted, for order-independent comparison of rendered object lists.
pub fn sorted(mut objs: Vec<Value>) -> Vec<Value> {
    objs.sort_by_key(id);
    objs
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
