//! An in-process Elasticsearch `_bulk` endpoint: NDJSON action/source pairs (gzip or plain),
//! `create` semantics (409 `version_conflict_engine_exception` when the `_id` exists), and the
//! real answer shape (`errors`, `items` in request order, per-item `status` and `error`).
//! Tests script whole-request answers (429 with Retry-After, 500, 401, slow, dropped) and
//! per-item failures (429, 5xx, 400 mapping errors).

use super::server::{Handler, Reply, Request, TestServer, decoded_body};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Doc {
    pub index: String,
    pub id: String,
    pub source: Value,
}

#[derive(Debug, Clone)]
pub struct BulkRequest {
    pub path: String,
    pub query: Option<String>,
    pub content_encoding: Option<String>,
    pub authorization: Option<String>,
    pub docs: Vec<Doc>,
}

pub enum RequestAnswer {
    /// Process the items (after `delay`, e.g. longer than the client's timeout).
    Process(Duration),
    Refuse(Reply),
}

pub type RequestScript = Box<dyn FnMut(&BulkRequest) -> RequestAnswer + Send>;
/// Per item: `Some((status, error type))` fails it.
pub type ItemScript = Box<dyn FnMut(&Doc) -> Option<(u16, String)> + Send>;

#[derive(Default)]
pub struct EsState {
    pub requests: Vec<BulkRequest>,
    /// (index, id) → source, and the order of creation.
    pub stored: BTreeMap<(String, String), Value>,
    pub order: Vec<(String, String)>,
    /// Documents that arrived again after they were stored (answered 409).
    pub resent_stored: usize,
    pub bad_requests: Vec<String>,
}

pub struct EsServer {
    pub server: TestServer,
    pub state: Arc<Mutex<EsState>>,
}

impl EsServer {
    pub async fn start() -> Self {
        Self::scripted(Box::new(|_| RequestAnswer::Process(Duration::ZERO)), Box::new(|_| None)).await
    }

    pub async fn scripted(requests: RequestScript, items: ItemScript) -> Self {
        Self::scripted_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), requests, items)
    }

    /// On a given listener (e.g. a port a sink was already trying to reach).
    pub fn scripted_on(listener: tokio::net::TcpListener, requests: RequestScript, items: ItemScript) -> Self {
        let state = Arc::new(Mutex::new(EsState::default()));
        let scripts = Arc::new(Mutex::new((requests, items)));
        let st = state.clone();
        let handler: Handler = Arc::new(move |req: Request| handle(req, &st, &scripts));
        Self { server: TestServer::start_on(listener, handler), state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Stored messages (documents with a `message`: not dead letters), in creation order.
    pub fn messages(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.order.iter().filter_map(|k| s.stored[k]["message"].as_str().map(str::to_string)).collect()
    }

    pub fn stored_in(&self, index: &str) -> Vec<Value> {
        let s = self.state.lock().unwrap();
        s.order.iter().filter(|k| k.0 == index).map(|k| s.stored[k].clone()).collect()
    }
}

fn handle(req: Request, state: &Mutex<EsState>, scripts: &Mutex<(RequestScript, ItemScript)>) -> Reply {
    if req.method != "POST" || !req.path.ends_with("/_bulk") {
        return Reply::json(405, &json!({"error": "no handler", "status": 405}));
    }
    let bulk = match parse(&req) {
        Ok(b) => b,
        Err(e) => {
            state.lock().unwrap().bad_requests.push(e.clone());
            return Reply::json(
                400,
                &json!({"error": {"type": "illegal_argument_exception", "reason": e}, "status": 400}),
            );
        }
    };
    let mut scripts = scripts.lock().unwrap();
    let answer = (scripts.0)(&bulk);
    let mut st = state.lock().unwrap();
    st.requests.push(bulk.clone());
    let delay = match answer {
        RequestAnswer::Refuse(r) => return r,
        RequestAnswer::Process(d) => d,
    };
    let mut errors = false;
    let mut items = Vec::new();
    for d in bulk.docs {
        let key = (d.index.clone(), d.id.clone());
        let item = if let Some((status, kind)) = (scripts.1)(&d) {
            errors = true;
            json!({"create": {"_index": d.index, "_id": d.id, "status": status,
                "error": {"type": kind, "reason": format!("scripted failure {status}")}}})
        } else if st.stored.contains_key(&key) {
            errors = true;
            st.resent_stored += 1;
            json!({"create": {"_index": d.index, "_id": d.id, "status": 409,
                "error": {"type": "version_conflict_engine_exception",
                          "reason": format!("[{}]: version conflict, document already exists (current version [1])", d.id)}}})
        } else {
            st.stored.insert(key.clone(), d.source);
            st.order.push(key);
            json!({"create": {"_index": d.index, "_id": d.id, "_version": 1, "result": "created", "status": 201}})
        };
        items.push(item);
    }
    Reply::json(200, &json!({"took": 3, "errors": errors, "items": items})).delayed(delay)
}

fn parse(req: &Request) -> Result<BulkRequest, String> {
    if req.header("content-type") != Some("application/x-ndjson") {
        return Err(format!("Content-Type {:?} is not application/x-ndjson", req.header("content-type")));
    }
    let body = decoded_body(req)?;
    if !body.ends_with(b"\n") {
        return Err("The bulk request must be terminated by a newline [\\n]".into());
    }
    let text = String::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())?;
    let mut lines = text.split('\n');
    let mut docs = Vec::new();
    let mut auto_id = 0;
    while let Some(action) = lines.next() {
        if action.is_empty() {
            continue;
        }
        let a: Value = serde_json::from_str(action).map_err(|e| format!("action line: {e}"))?;
        let meta = a.get("create").ok_or_else(|| format!("expected a create action, got {action}"))?;
        let index = meta["_index"].as_str().ok_or("create without _index")?.to_string();
        let id = match meta["_id"].as_str() {
            Some(id) => id.to_string(),
            None => {
                auto_id += 1;
                format!("auto-{auto_id}-{}", fastrand::u64(..))
            }
        };
        let src = lines.next().ok_or("action without source line")?;
        let source: Value = serde_json::from_str(src).map_err(|e| format!("source line: {e}"))?;
        docs.push(Doc { index, id, source });
    }
    Ok(BulkRequest {
        path: req.path.clone(),
        query: req.query.clone(),
        content_encoding: req.header("content-encoding").map(str::to_string),
        authorization: req.header("authorization").map(str::to_string),
        docs,
    })
}
