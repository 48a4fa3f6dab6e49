//! An in-process OTLP/HTTP receiver: `POST /…/v1/logs` and `/…/v1/metrics` with protobuf
//! bodies (gzip or not), decoded with the prost types generated from the official
//! opentelemetry-proto files. It answers as the OTLP specification (opentelemetry-proto
//! `docs/specification.md`, "OTLP/HTTP Response") says a receiver does: 200 with an empty
//! `Export*ServiceResponse` on success, 200 with `partial_success` when it rejects some records,
//! 429/503 (with `Retry-After`) when throttled; or as Loki 3 does (204, empty body), or whatever
//! a test scripts.

use super::server::{Handler, Reply, Request, TestServer, decoded_body};
use prost::Message;
use std::sync::{Arc, Mutex};
use vigil::sinks::otlp::proto::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use vigil::sinks::otlp::proto::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use vigil::sinks::otlp::proto::common::v1::{KeyValue, any_value};

/// A decoded export request.
#[derive(Debug, Clone)]
pub enum Export {
    Logs(ExportLogsServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub query: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub authorization: Option<String>,
    pub headers: hyper::HeaderMap,
    pub export: Export,
    /// When it arrived.
    pub at: std::time::Instant,
    /// When it arrived, Unix nanoseconds.
    pub at_unix_nanos: u64,
}

impl Received {
    pub fn logs(&self) -> &ExportLogsServiceRequest {
        match &self.export {
            Export::Logs(l) => l,
            Export::Metrics(_) => panic!("a metrics request where logs were expected: {}", self.path),
        }
    }
    pub fn records(&self) -> usize {
        match &self.export {
            Export::Logs(l) => l.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum(),
            Export::Metrics(_) => 0,
        }
    }
}

/// What the receiver answers to a decoded request.
pub enum Answer {
    /// 200 with an empty response message: everything stored.
    Ok,
    /// 204 with no body, as Loki's `/otlp/v1/logs`: everything stored.
    NoContent,
    /// 200 with `partial_success`: all but `rejected` records stored.
    Partial { rejected: i64, message: String },
    /// This reply; nothing stored.
    Refuse(Reply),
}

pub type Script = Box<dyn FnMut(&Received) -> Answer + Send>;

#[derive(Default)]
pub struct OtlpState {
    /// Every decoded request, accepted or not, in arrival order.
    pub requests: Vec<Received>,
    /// Log bodies stored, in arrival order (rejected records of a partial success are not).
    pub stored_bodies: Vec<String>,
    /// Requests that could not be decoded (a bug in the sender): the reason.
    pub bad_requests: Vec<String>,
}

pub struct OtlpServer {
    pub server: TestServer,
    pub state: Arc<Mutex<OtlpState>>,
}

impl OtlpServer {
    /// A receiver that takes everything (200, empty response).
    pub async fn start() -> Self {
        Self::scripted(Box::new(|_| Answer::Ok)).await
    }

    pub async fn scripted(script: Script) -> Self {
        let state = Arc::new(Mutex::new(OtlpState::default()));
        let script = Arc::new(Mutex::new(script));
        let st = state.clone();
        let handler: Handler = Arc::new(move |req: Request| handle(req, &st, &script));
        Self { server: TestServer::start(handler).await, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn stored_bodies(&self) -> Vec<String> {
        self.state.lock().unwrap().stored_bodies.clone()
    }

    pub fn bad_requests(&self) -> Vec<String> {
        self.state.lock().unwrap().bad_requests.clone()
    }
}

fn protobuf(status: u16, body: Vec<u8>) -> Reply {
    Reply::Respond {
        status,
        headers: vec![("content-type".into(), "application/x-protobuf".into())],
        body,
        delay: std::time::Duration::ZERO,
    }
}

fn handle(req: Request, state: &Mutex<OtlpState>, script: &Mutex<Script>) -> Reply {
    let bad = |state: &Mutex<OtlpState>, why: String| {
        state.lock().unwrap().bad_requests.push(why.clone());
        // A collector answers an undecodable body with 400.
        Reply::status(400, &why)
    };
    if req.method != "POST" {
        return Reply::status(405, "");
    }
    if req.header("content-type") != Some("application/x-protobuf") {
        // OTLP/HTTP receivers answer an unsupported media type with 415.
        let why = format!("content-type {:?}", req.header("content-type"));
        state.lock().unwrap().bad_requests.push(why.clone());
        return Reply::status(415, &why);
    }
    let raw = match decoded_body(&req) {
        Ok(b) => b,
        Err(e) => return bad(state, e),
    };
    let export = if req.path.ends_with("/v1/logs") {
        match ExportLogsServiceRequest::decode(raw.as_slice()) {
            Ok(r) => Export::Logs(r),
            Err(e) => return bad(state, format!("logs protobuf: {e}")),
        }
    } else if req.path.ends_with("/v1/metrics") {
        match ExportMetricsServiceRequest::decode(raw.as_slice()) {
            Ok(r) => Export::Metrics(r),
            Err(e) => return bad(state, format!("metrics protobuf: {e}")),
        }
    } else {
        return Reply::status(404, "404 page not found");
    };
    let received = Received {
        path: req.path.clone(),
        query: req.query.clone(),
        content_type: req.header("content-type").map(str::to_string),
        content_encoding: req.header("content-encoding").map(str::to_string),
        authorization: req.header("authorization").map(str::to_string),
        headers: req.headers.clone(),
        export,
        at: std::time::Instant::now(),
        at_unix_nanos: unix_nanos(),
    };
    let answer = (script.lock().unwrap())(&received);
    let mut st = state.lock().unwrap();
    st.requests.push(received.clone());
    let bodies = || -> Vec<String> {
        match &received.export {
            Export::Logs(l) => l
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .flat_map(|s| &s.log_records)
                .map(|r| match r.body.as_ref().and_then(|b| b.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    other => format!("{other:?}"),
                })
                .collect(),
            Export::Metrics(_) => Vec::new(),
        }
    };
    let is_logs = matches!(received.export, Export::Logs(_));
    match answer {
        Answer::Ok => {
            st.stored_bodies.extend(bodies());
            let body = if is_logs {
                ExportLogsServiceResponse::default().encode_to_vec()
            } else {
                ExportMetricsServiceResponse::default().encode_to_vec()
            };
            protobuf(200, body)
        }
        Answer::NoContent => {
            st.stored_bodies.extend(bodies());
            Reply::status(204, "")
        }
        Answer::Partial { rejected, message } => {
            // Which records a receiver rejects is its business; store all but the last ones.
            let all = bodies();
            let keep = all.len().saturating_sub(rejected.max(0) as usize);
            st.stored_bodies.extend(all.into_iter().take(keep));
            let body = if is_logs {
                ExportLogsServiceResponse {
                    partial_success: Some(ExportLogsPartialSuccess {
                        rejected_log_records: rejected,
                        error_message: message,
                    }),
                }
                .encode_to_vec()
            } else {
                ExportMetricsServiceResponse {
                    partial_success: Some(ExportMetricsPartialSuccess {
                        rejected_data_points: rejected,
                        error_message: message,
                    }),
                }
                .encode_to_vec()
            };
            protobuf(200, body)
        }
        Answer::Refuse(reply) => reply,
    }
}

/// Attributes as (key, value) text pairs; ints as `int:N`.
pub fn attrs(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => format!("int:{i}"),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// The value of attribute `key`, if present.
pub fn attr(kvs: &[KeyValue], key: &str) -> Option<String> {
    attrs(kvs).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}
