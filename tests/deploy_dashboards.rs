//! dashboards/: the Grafana dashboards parse, are well formed (current schema, datasource and
//! node/instance variables, unique panel ids, no overlapping panels), and every metric and
//! label their PromQL uses is exported by a real, running vigil.

mod deploy_support;

use deploy_support::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Grafana's current dashboard schema version (the last of the classic JSON model, which
/// grafana.com imports and every Grafana since 12 reads).
const SCHEMA_VERSION: u64 = 42;

/// Labels Prometheus attaches at scrape time (or vigil's remote write adds), not vigil.
const TARGET_LABELS: &[&str] = &["job", "node", "instance"];

fn dashboards() -> Vec<(String, Value)> {
    files_under(&root().join("dashboards"), "json")
        .into_iter()
        .map(|p| {
            let v: Value = serde_json::from_str(&read(&p)).unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()));
            (p.file_name().expect("name").to_string_lossy().into_owned(), v)
        })
        .collect()
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Every PromQL expression: panel targets and query variables.
fn expressions(d: &Value) -> Vec<String> {
    let mut out: Vec<String> = panels(d)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| str_at(t, &["expr"]))
        .collect();
    for v in d["templating"]["list"].as_array().expect("templating") {
        if v["type"] == "query" {
            out.push(str_at(v, &["definition"]));
        }
    }
    out
}

/// A metric selector in a PromQL expression: the metric name and its label matchers.
#[derive(Debug, PartialEq)]
struct Selector {
    metric: String,
    labels: Vec<String>,
    matchers: String,
}

const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"];
const LABEL_LIST_KEYWORDS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metric selectors of a PromQL expression (or a Grafana `label_values(...)` query).
/// A small lexer: strings, `[range]`s and `$variables` are skipped, label lists after
/// by/without/on/ignoring/group_* are skipped, identifiers followed by `(` are functions, the
/// rest are metric names, with the `{...}` that may follow them.
fn selectors(expr: &str) -> Vec<Selector> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        j
    };
    let skip_string = |j: usize| {
        let q = b[j];
        let mut k = j + 1;
        while k < b.len() && b[k] != q {
            k += if b[k] == b'\\' { 2 } else { 1 };
        }
        k + 1
    };
    // Index just past the group opened at j (`(`, `{` or `[`), strings skipped.
    let skip_group = |j: usize| {
        let (open, close) = (
            b[j],
            match b[j] {
                b'(' => b')',
                b'{' => b'}',
                _ => b']',
            },
        );
        let mut depth = 0;
        let mut k = j;
        while k < b.len() {
            match b[k] {
                b'"' | b'\'' | b'`' => {
                    k = skip_string(k);
                    continue;
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return k + 1;
                    }
                }
                _ => {}
            }
            k += 1;
        }
        panic!("unbalanced {} in {expr}", open as char)
    };
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i = skip_string(i);
        } else if c == b'[' || c == b'{' {
            i = skip_group(i);
        } else if c == b'$' {
            i += 1;
            if i < b.len() && b[i] == b'{' {
                i = skip_group(i);
            }
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
        } else if c.is_ascii_digit() || (c == b'.' && i + 1 < b.len() && b[i + 1].is_ascii_digit()) {
            while i < b.len() && (ident(b[i]) || b[i] == b'.') {
                i += 1;
            }
        } else if ident(c) {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let next = skip_ws(i);
            let lower = word.to_ascii_lowercase();
            if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                if next < b.len() && b[next] == b'(' {
                    i = skip_group(next);
                }
            } else if KEYWORDS.contains(&lower.as_str()) || AGGREGATIONS.contains(&lower.as_str()) {
                // operators and aggregations: not metrics
            } else if next < b.len() && b[next] == b'(' {
                // a function call; its arguments are scanned next
            } else {
                let (matchers, end) = if next < b.len() && b[next] == b'{' {
                    let end = skip_group(next);
                    (expr[next + 1..end - 1].to_owned(), end)
                } else {
                    (String::new(), i)
                };
                let labels = label_names(&matchers);
                out.push(Selector { metric: word.to_owned(), labels, matchers });
                i = end;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The label names of a matcher list `a="x", b=~"y"`.
fn label_names(matchers: &str) -> Vec<String> {
    let re = regex::Regex::new(r#"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*""#).expect("regex");
    re.captures_iter(matchers).map(|c| c[1].to_owned()).collect()
}

#[test]
fn the_promql_lexer_finds_metrics_and_nothing_else() {
    let names = |e: &str| selectors(e).into_iter().map(|s| s.metric).collect::<Vec<_>>();
    assert_eq!(
        names(r#"sum by (sink, le) (rate(vigil_x_bucket{a="b{", c=~"$d"}[$__rate_interval]))"#),
        ["vigil_x_bucket"]
    );
    assert_eq!(
        names(
            r#"sum by (instance, mode) (rate(a{mode!="idle"}[5m])) / on (instance) group_left count by (instance) (b)"#
        ),
        ["a", "b"]
    );
    assert_eq!(names("time() - min(c offset 5m) * 60 + 1e3"), ["c"]);
    assert_eq!(names("count(x == 0) or vector(0)"), ["x"]);
    assert_eq!(names("histogram_quantile(0.99, sum by (le) (rate(h_bucket[1m])))"), ["h_bucket"]);
    assert_eq!(names(r#"label_values(vigil_build_info{job=~"$job"}, node)"#), ["vigil_build_info", "node"]);
    assert_eq!(
        grouping_labels(r#"sum by (sink, reason) (rate(a[1m])) / ignoring (x) sum without(le) (b)"#),
        ["sink", "reason", "le"]
    );
    let s = &selectors(r#"m{fstype!~"tmpfs|x", device="a\"b"}"#)[0];
    assert_eq!(s.labels, ["fstype", "device"]);
}

/// The labels of every `by (...)` / `without (...)` clause of an expression.
fn grouping_labels(expr: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\b(?:by|without)\s*\(([^)]*)\)").expect("regex");
    re.captures_iter(expr)
        .flat_map(|c| c[1].split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect::<Vec<_>>())
        .collect()
}

/// `label_values(metric{...}, label)`: the metric's selector, and the label it lists.
fn label_values(q: &str) -> (Vec<Selector>, String) {
    let inner = q.strip_prefix("label_values(").and_then(|s| s.strip_suffix(')')).expect("label_values(...)");
    let (sel, label) = inner.rsplit_once(',').expect("label_values(selector, label)");
    (selectors(sel), label.trim().to_owned())
}

#[test]
fn dashboards_parse_and_are_well_formed() {
    let all = dashboards();
    let titles: BTreeSet<String> = all.iter().map(|(_, d)| str_at(d, &["title"])).collect();
    assert_eq!(titles, BTreeSet::from(["vigil / Node".to_owned(), "vigil / Pipeline".to_owned()]));
    let uids: BTreeSet<String> = all.iter().map(|(_, d)| str_at(d, &["uid"])).collect();
    assert_eq!(uids.len(), all.len(), "dashboard uids must be unique");
    for (name, d) in &all {
        assert_eq!(d["schemaVersion"], SCHEMA_VERSION, "{name}: schemaVersion");
        assert!(d["id"].is_null(), "{name}: an exported dashboard has id null (Grafana assigns one)");

        // Variables: a datasource picker, and job/node/instance queries through it.
        let vars = d["templating"]["list"].as_array().expect("templating.list");
        let var = |n: &str| vars.iter().find(|v| v["name"] == n).unwrap_or_else(|| panic!("{name}: no ${n} variable"));
        let ds = var("datasource");
        assert_eq!((&ds["type"], &ds["query"]), (&"datasource".into(), &"prometheus".into()), "{name}");
        for v in ["job", "node", "instance"] {
            let v = var(v);
            assert_eq!(v["type"], "query", "{name}");
            assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}: variable {} datasource", v["name"]);
            let (sel, _) = label_values(&str_at(v, &["definition"]));
            assert_eq!(sel.len(), 1, "{name}: {}", v["definition"]);
        }

        // Panels: unique ids, every query through the datasource variable, filtered by the
        // node/instance variables, on the 24-column grid without overlaps.
        let ps = panels(d);
        let ids: Vec<u64> = ps.iter().map(|p| p["id"].as_u64().expect("panel id")).collect();
        let unique: BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "{name}: duplicate panel ids in {ids:?}");
        let mut rects: Vec<(u64, u64, u64, u64, u64)> = Vec::new();
        for p in &ps {
            let id = p["id"].as_u64().expect("id");
            let g = &p["gridPos"];
            let (x, y, w, h) = (g["x"].as_u64(), g["y"].as_u64(), g["w"].as_u64(), g["h"].as_u64());
            let (x, y, w, h) = (x.expect("x"), y.expect("y"), w.expect("w"), h.expect("h"));
            assert!(x + w <= 24 && w > 0 && h > 0, "{name}: panel {id} gridPos {g}");
            for &(oid, ox, oy, ow, oh) in &rects {
                let overlap = x < ox + ow && ox < x + w && y < oy + oh && oy < y + h;
                assert!(!overlap, "{name}: panels {oid} and {id} overlap");
            }
            rects.push((id, x, y, w, h));
            if p["type"] == "row" {
                continue;
            }
            assert!(!str_at(p, &["title"]).is_empty(), "{name}: panel {id} has no title");
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name}: panel {id} datasource");
            let targets = p["targets"].as_array().filter(|t| !t.is_empty());
            for t in targets.unwrap_or_else(|| panic!("{name}: panel {id} has no query")) {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}: panel {id} target datasource");
                let expr = str_at(t, &["expr"]);
                let sels = selectors(&expr);
                assert!(!sels.is_empty(), "{name}: panel {id}: no metric in `{expr}`");
                for s in sels {
                    for filter in [r#"node=~"$node""#, r#"instance=~"$instance""#, r#"job=~"$job""#] {
                        assert!(
                            s.matchers.contains(filter),
                            "{name}: panel {id}: {} is not filtered by {filter}",
                            s.metric
                        );
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Fake Loki, Elasticsearch, remote write and OTLP receivers: just enough HTTP to make vigil's
// sinks deliver, retry and have events rejected, so every sink and shipping metric the
// dashboards use has series.

struct Request {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

type Handler = dyn Fn(usize, &Request) -> Response + Send + Sync;

struct FakeServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn fake_server(handler: Arc<Handler>) -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (reqs, st) = (requests.clone(), stop.clone());
    let accept = std::thread::spawn(move || {
        while !st.load(Ordering::Acquire) {
            match listener.accept() {
                Ok((s, _)) => {
                    let (h, r) = (handler.clone(), reqs.clone());
                    std::thread::spawn(move || {
                        let _ = serve_connection(s, &*h, &r);
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    FakeServer { addr, requests, stop, accept: Some(accept) }
}

/// HTTP/1.1 with keep-alive; bodies by Content-Length or chunked. Ends at EOF or after 5 s idle.
fn serve_connection(s: TcpStream, handler: &Handler, count: &AtomicUsize) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let mut body = Vec::new();
        if headers.get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            loop {
                let mut size = String::new();
                r.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = headers.get("content-length").and_then(|n| n.parse::<usize>().ok()) {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        }
        if headers.get("content-encoding").is_some_and(|e| e == "gzip") {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain)?;
            body = plain;
        }
        let n = count.fetch_add(1, Ordering::AcqRel);
        let resp = handler(n, &Request { headers, body });
        let mut head = format!("HTTP/1.1 {} X\r\ncontent-length: {}\r\n", resp.status, resp.body.len());
        for (k, v) in &resp.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        w.write_all(head.as_bytes())?;
        w.write_all(&resp.body)?;
    }
}

/// Loki: the first push gets 429 with Retry-After (a retry), every later one 204.
fn fake_loki() -> FakeServer {
    fake_server(Arc::new(|n, _req| match n {
        0 => Response { status: 429, headers: vec![("retry-after", "1".into())], body: b"slow down".to_vec() },
        _ => Response { status: 204, headers: vec![], body: vec![] },
    }))
}

/// Elasticsearch `_bulk`: the first request's first item fails with 429 (retried) and its
/// second with a 400 mapping error (rejected); everything else is created.
fn fake_elasticsearch() -> FakeServer {
    fake_server(Arc::new(|n, req| {
        let _ = &req.headers;
        let text = String::from_utf8_lossy(&req.body);
        let actions = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| {
                v.as_object().is_some_and(|o| o.len() == 1 && (o.contains_key("create") || o.contains_key("index")))
            })
            .count();
        let items: Vec<Value> = (0..actions)
            .map(|i| {
                let (status, error) = match (n, i) {
                    (0, 0) => (429, Some("es_rejected_execution_exception")),
                    (0, 1) => (400, Some("mapper_parsing_exception")),
                    _ => (201, None),
                };
                let mut item = serde_json::json!({"_index": "logs-vigil", "_id": format!("{n}-{i}"), "status": status});
                if let Some(e) = error {
                    item["error"] = serde_json::json!({"type": e, "reason": "test"});
                }
                serde_json::json!({ "create": item })
            })
            .collect();
        let errors = items.iter().any(|i| i["create"]["status"] != 201);
        let body = serde_json::json!({"took": 1, "errors": errors, "items": items});
        Response {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }))
}

/// Prometheus remote write receiver: 204 for a request that is remote write 1.0 (snappy
/// protobuf with the version header), 400 otherwise; `accepted` counts the 204s.
fn fake_remote_write(accepted: Arc<AtomicUsize>) -> FakeServer {
    fake_server(Arc::new(move |_n, req| {
        let h = |k: &str| req.headers.get(k).map(String::as_str);
        let ok = h("content-encoding") == Some("snappy")
            && h("content-type") == Some("application/x-protobuf")
            && h("x-prometheus-remote-write-version") == Some("0.1.0")
            && !req.body.is_empty();
        if ok {
            accepted.fetch_add(1, Ordering::AcqRel);
            Response { status: 204, headers: vec![], body: vec![] }
        } else {
            Response { status: 400, headers: vec![], body: format!("not remote write: {:?}", req.headers).into_bytes() }
        }
    }))
}

/// OTLP/HTTP receiver: 200 with an empty body (an empty `Export*ServiceResponse` encodes to no
/// bytes: full success) for a protobuf request, 415 otherwise; `accepted` counts the 200s.
fn fake_otlp(accepted: Arc<AtomicUsize>) -> FakeServer {
    fake_server(Arc::new(move |_n, req| {
        if req.headers.get("content-type").map(String::as_str) == Some("application/x-protobuf") && !req.body.is_empty()
        {
            accepted.fetch_add(1, Ordering::AcqRel);
            Response { status: 200, headers: vec![("content-type", "application/x-protobuf".into())], body: vec![] }
        } else {
            Response { status: 415, headers: vec![], body: b"expected application/x-protobuf".to_vec() }
        }
    }))
}

/// A small node log tree: CRI lines (one partial pair, one garbage line) and docker json lines.
fn write_node_tree(root: &Path) {
    let pod = root.join("var/log/pods/default_web-0_0c6a1b4e-1111-2222-3333-444455556666/web");
    std::fs::create_dir_all(&pod).expect("mkdir");
    let mut cri = String::new();
    for i in 0..20 {
        cri.push_str(&format!("2026-11-28T06:12:{:02}.123456789Z stdout F line {i}\n", i % 60));
    }
    cri.push_str("2026-11-28T06:13:00.000000001Z stderr P partial \n");
    cri.push_str("2026-11-28T06:13:00.000000002Z stderr F end\n");
    cri.push_str("this is not a CRI line\n");
    std::fs::write(pod.join("0.log"), cri).expect("write CRI log");
    let id = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";
    let dir = root.join("var/lib/docker/containers").join(id);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut docker = String::new();
    for i in 0..5 {
        docker.push_str(&format!(
            "{{\"log\":\"docker line {i}\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-28T06:12:0{i}.5Z\"}}\n"
        ));
    }
    std::fs::write(dir.join(format!("{id}-json.log")), docker).expect("write docker log");
}

/// (metric name → label names) of every sample in a Prometheus text exposition.
fn exposition(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_owned()).or_default();
        if line[end..].starts_with('{') {
            let close = line.rfind('}').expect("closing brace");
            labels.extend(label_names(&line[end + 1..close]));
        }
    }
    out
}

/// Series of the OTLP sink (named `otel`) that the Sinks and Metrics shipping rows must show.
const OTLP_SERIES: &[&str] = &[
    "vigil_sink_events_sent_total{sink=\"otel\"}",
    "vigil_sink_bytes_sent_total{sink=\"otel\"}",
    "vigil_sink_requests_total{sink=\"otel\",status=\"2xx\"}",
    "vigil_sink_request_duration_seconds_count{sink=\"otel\"}",
    "vigil_sink_last_success_timestamp_seconds{sink=\"otel\"}",
    "vigil_sink_healthy{sink=\"otel\"}",
    "vigil_ship_samples_sent_total{sink=\"otel\"}",
];

#[test]
fn every_metric_and_label_in_the_dashboards_is_exported_by_a_running_vigil() {
    // What the dashboards need: metric → labels used in its matchers; and every label an
    // expression groups by (`sum by (sink, reason)`, shown in legends), which at least one of
    // that expression's metrics must carry.
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut grouped: BTreeSet<(String, Vec<String>)> = BTreeSet::new();
    for (_, d) in dashboards() {
        for e in expressions(&d) {
            if !e.starts_with("label_values(") {
                let metrics: Vec<String> = selectors(&e).into_iter().map(|s| s.metric).collect();
                for l in grouping_labels(&e).into_iter().filter(|l| !TARGET_LABELS.contains(&l.as_str())) {
                    grouped.insert((l, metrics.clone()));
                }
            }
            let (sels, extra_label) = if e.starts_with("label_values(") {
                let (s, l) = label_values(&e);
                (s, Some(l))
            } else {
                (selectors(&e), None)
            };
            for s in sels {
                let labels = wanted.entry(s.metric).or_default();
                labels.extend(s.labels.into_iter().filter(|l| !TARGET_LABELS.contains(&l.as_str())));
                if let Some(l) = extra_label.as_ref().filter(|l| !TARGET_LABELS.contains(&l.as_str())) {
                    labels.insert(l.clone());
                }
            }
        }
    }
    assert!(wanted.len() > 50, "too few metrics found in the dashboards: {wanted:?}");

    let tmp = tempfile::tempdir().expect("temp dir");
    let t = tmp.path().canonicalize().expect("canonical temp dir");
    write_node_tree(&t);
    let (loki, es) = (fake_loki(), fake_elasticsearch());
    let pushes = Arc::new(AtomicUsize::new(0));
    let rw = fake_remote_write(pushes.clone());
    let otlp_accepted = Arc::new(AtomicUsize::new(0));
    let otlp = fake_otlp(otlp_accepted.clone());
    // /healthz, not /readyz: a sink answering 429 may keep vigil unready, and readiness is not
    // what this test is about.
    let vigil = start_vigil(&t, "/healthz", &|listen| {
        format!(
            "node_name: test-node
sources:
  containers:
    include:
      - {t}/var/log/pods/*/*/*.log
      - {t}/var/lib/docker/containers/*/*-json.log
    read_from: beginning
    checkpoint_dir: {t}/state
sinks:
  - name: file
    type: file
    path: {t}/events.ndjson
  - name: loki
    type: loki
    endpoint: http://{loki}
  - name: es
    type: elasticsearch
    endpoint: http://{es}
    index: logs-vigil-%Y.%m.%d
  - name: remote
    type: prometheus_remote_write
    endpoint: http://{rw}/api/v1/write
    external_labels: {{job: vigil}}
  - name: otel
    type: otlp
    endpoint: http://{otlp}
metrics:
  listen: {listen}
  node:
    enabled: true
    rootfs: /
  ship:
    interval: 1s
    sinks: [remote, otel]
log:
  level: warn
shutdown:
  grace_period: 2s
",
            t = t.display(),
            loki = loki.addr,
            es = es.addr,
            rw = rw.addr,
            otlp = otlp.addr,
        )
    });

    // Counters and histograms with labels have no series until they first move: poll until
    // every wanted name and label is there and the remote write receiver has accepted a push
    // (so the vigil_ship_* series are those of real deliveries), for at most 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let missing = loop {
        let (status, _, body) = http_get(vigil.addr, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        let have = exposition(&body);
        let mut missing: Vec<String> = wanted
            .iter()
            .flat_map(|(m, labels)| match have.get(m) {
                None => vec![m.clone()],
                Some(got) => labels.iter().filter(|l| !got.contains(*l)).map(|l| format!("{m}{{{l}}}")).collect(),
            })
            .collect();
        for (label, metrics) in &grouped {
            if !metrics.iter().any(|m| have.get(m).is_some_and(|got| got.contains(label))) {
                missing.push(format!("by ({label}) over {metrics:?}"));
            }
        }
        // The per-sink panels follow the `sink` label: the OTLP sink's logs and metrics
        // shipping must show up in them like the others'.
        for series in OTLP_SERIES {
            if !body.lines().any(|l| l.starts_with(series) && !l.ends_with(" 0")) {
                missing.push(format!("{series}… (non-zero)"));
            }
        }
        if (missing.is_empty() && pushes.load(Ordering::Acquire) > 0) || Instant::now() > deadline {
            break missing;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        missing.is_empty() && pushes.load(Ordering::Acquire) > 0,
        "{} dashboard metrics/labels are not exported by vigil (after {} Loki, {} Elasticsearch, {} remote write \
         ({} accepted) and {} OTLP ({} accepted) requests):\n  {}\nvigil's log:\n{}",
        missing.len(),
        loki.requests.load(Ordering::Acquire),
        es.requests.load(Ordering::Acquire),
        rw.requests.load(Ordering::Acquire),
        pushes.load(Ordering::Acquire),
        otlp.requests.load(Ordering::Acquire),
        otlp_accepted.load(Ordering::Acquire),
        missing.join("\n  "),
        vigil.stderr()
    );
}

/// One request on a kept-alive connection to a fake server: (status, headers+body text).
fn post(s: &mut TcpStream, body: &[u8], extra: &str) -> (u16, String) {
    write!(s, "POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n{extra}\r\n", body.len()).expect("write");
    s.write_all(body).expect("write body");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut status = String::new();
    r.read_line(&mut status).expect("status line");
    let mut len = 0;
    let mut text = String::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).expect("header");
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().expect("length");
        }
        text.push_str(&h);
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).expect("body");
    text.push_str(&String::from_utf8_lossy(&body));
    (status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status"), text)
}

#[test]
fn the_fake_backends_answer_as_the_test_expects() {
    let loki = fake_loki();
    let mut s = TcpStream::connect(loki.addr).expect("connect");
    let (status, text) = post(&mut s, b"push", "");
    assert_eq!(status, 429);
    assert!(text.contains("retry-after: 1"), "{text}");
    assert_eq!(post(&mut s, b"push", "").0, 204, "second push on the same connection");

    let es = fake_elasticsearch();
    let bulk =
        b"{\"create\":{\"_id\":\"a\"}}\n{\"message\":\"x\"}\n{\"create\":{\"_id\":\"b\"}}\n{\"message\":\"y\"}\n\
                 {\"create\":{\"_id\":\"c\"}}\n{\"message\":\"z\"}\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bulk).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let mut s = TcpStream::connect(es.addr).expect("connect");
    let statuses = |text: &str| -> Vec<u64> {
        let json: Value = serde_json::from_str(&text[text.find('{').expect("json body")..]).expect("bulk response");
        json["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["create"]["status"].as_u64().expect("status"))
            .collect()
    };
    let (status, text) = post(&mut s, &gz, "content-encoding: gzip\r\n");
    assert_eq!(status, 200);
    assert_eq!(statuses(&text), [429, 400, 201]);
    assert_eq!(statuses(&post(&mut s, bulk, "").1), [201, 201, 201]);
    assert_eq!(es.requests.load(Ordering::Acquire), 2);

    let accepted = Arc::new(AtomicUsize::new(0));
    let rw = fake_remote_write(accepted.clone());
    let mut s = TcpStream::connect(rw.addr).expect("connect");
    let rw_headers = "content-encoding: snappy\r\ncontent-type: application/x-protobuf\r\n\
                      x-prometheus-remote-write-version: 0.1.0\r\n";
    assert_eq!(post(&mut s, b"\x0a\x00", rw_headers).0, 204);
    assert_eq!(post(&mut s, b"\x0a\x00", "content-type: application/x-protobuf\r\n").0, 400, "no snappy");
    assert_eq!(accepted.load(Ordering::Acquire), 1);

    let accepted = Arc::new(AtomicUsize::new(0));
    let otlp = fake_otlp(accepted.clone());
    let mut s = TcpStream::connect(otlp.addr).expect("connect");
    let (status, text) = post(&mut s, b"\x0a\x00", "content-type: application/x-protobuf\r\n");
    assert_eq!(status, 200);
    assert!(text.ends_with("\r\n"), "an empty body: {text:?}");
    assert_eq!(post(&mut s, b"{}", "content-type: application/json\r\n").0, 415);
    assert_eq!(accepted.load(Ordering::Acquire), 1);
}

/// Every `vigil_*` metric the dashboards and the shipped alert rules query, with the labels
/// their matchers and groupings use (labels Prometheus adds left out).
fn queried_vigil_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let mut exprs: Vec<String> = dashboards().iter().flat_map(|(_, d)| expressions(d)).collect();
    for file in files_under(&root().join("manifests/optional"), "yaml") {
        for doc in yaml_file(&file).into_iter().filter(|d| d["kind"] == "PrometheusRule") {
            for g in doc["spec"]["groups"].as_array().expect("groups") {
                exprs.extend(g["rules"].as_array().expect("rules").iter().map(|r| str_at(r, &["expr"])));
            }
        }
    }
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in exprs {
        let (sels, extra) = if e.starts_with("label_values(") {
            let (s, l) = label_values(&e);
            (s, Some(l))
        } else {
            (selectors(&e), None)
        };
        let grouped = grouping_labels(&e);
        for s in sels.into_iter().filter(|s| s.metric.starts_with("vigil_")) {
            let labels = wanted.entry(s.metric).or_default();
            labels.extend(s.labels);
            labels.extend(extra.iter().cloned());
            // A grouping label must be on the metric when only one metric is grouped.
            if grouped.len() == 1 || selectors(&e).len() == 1 {
                labels.extend(grouped.iter().cloned());
            }
        }
    }
    for labels in wanted.values_mut() {
        labels.retain(|l| !TARGET_LABELS.contains(&l.as_str()) && l != "le" && l != "cause_or_reason");
    }
    wanted
}

/// Issue 13 "Series exist before the first event": a vigil that has read no line and sent no
/// request already exports, at 0, every series the dashboards and alerts query, for every sink
/// type, so `rate()` alerts fire on the first error and panels show 0 instead of "No data".
/// One scrape once /readyz answers: nothing is polled for.
#[test]
fn every_vigil_metric_the_dashboards_and_alerts_query_exists_on_a_fresh_vigil() {
    let wanted = queried_vigil_metrics();
    assert!(wanted.len() > 20, "too few vigil metrics found in the dashboards and rules: {wanted:?}");
    assert!(wanted.contains_key("vigil_sink_healthy") && wanted.contains_key("vigil_lag_bytes"), "{wanted:?}");
    let tmp = tempfile::tempdir().expect("temp dir");
    let t = tmp.path().canonicalize().expect("canonical temp dir");
    // Every sink type, each pointed at a port nothing listens on. No log line exists, so no log
    // sink sends anything (the metrics shippers push a first snapshot at start, refused).
    let closed = format!("127.0.0.1:{}", free_port());
    let vigil = start_vigil(&t, "/readyz", &|listen| {
        format!(
            "node_name: fresh-node
sources:
  containers:
    include: [{t}/var/log/pods/*/*/*.log]
    checkpoint_dir: {t}/state
sinks:
  - {{name: out, type: stdout}}
  - {{name: file, type: file, path: {t}/events.ndjson}}
  - {{name: loki, type: loki, endpoint: 'http://{closed}'}}
  - {{name: es, type: elasticsearch, endpoint: 'http://{closed}', index: logs}}
  - {{name: otel, type: otlp, endpoint: 'http://{closed}'}}
  - {{name: remote, type: prometheus_remote_write, endpoint: 'http://{closed}/api/v1/write'}}
metrics:
  listen: {listen}
  node: {{enabled: false}}
  ship: {{interval: 1h, sinks: [remote, otel]}}
log: {{level: warn}}
shutdown: {{grace_period: 2s}}
",
            t = t.display(),
        )
    });
    let (status, _, body) = http_get(vigil.addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    let have = exposition(&body);
    let mut missing = Vec::new();
    for (m, labels) in &wanted {
        match have.get(m) {
            None => missing.push(m.clone()),
            Some(got) => missing.extend(labels.iter().filter(|l| !got.contains(*l)).map(|l| format!("{m}{{{l}}}"))),
        }
    }
    // Per sink: every sink has its series of each per-sink family the queries use (the
    // file and stdout sinks never reject a whole request for its data, see README).
    for sink in ["out", "file", "loki", "es", "otel", "remote"] {
        for m in wanted.keys().filter(|m| m.starts_with("vigil_sink_")) {
            let log_only = m == "vigil_sink_events_rejected_total" || m == "vigil_sink_events_sent_total";
            if log_only && sink == "remote" {
                continue;
            }
            if m == "vigil_sink_events_rejected_total" && sink == "file" {
                continue;
            }
            if !body.lines().any(|l| l.starts_with(m.as_str()) && l.contains(&format!("sink=\"{sink}\""))) {
                missing.push(format!("{m}{{sink=\"{sink}\"}}"));
            }
        }
    }
    // And nothing has happened yet: the counters are there at 0.
    for line in
        body.lines().filter(|l| l.starts_with("vigil_read_lines_total") || l.starts_with("vigil_lines_shipped_total"))
    {
        assert!(line.ends_with(" 0"), "a fresh vigil has read and shipped nothing: {line}");
    }
    assert!(
        missing.is_empty(),
        "missing on a fresh vigil:\n  {}\nvigil's log:\n{}",
        missing.join("\n  "),
        vigil.stderr()
    );
}
