//! In-process receivers for the HTTP sinks, on the bench's own runtime (so their CPU is the
//! bench's, never vigil's): Loki push (protobuf + snappy, or JSON), Elasticsearch `_bulk`
//! (NDJSON, gzip) and OTLP/HTTP logs (protobuf, gzip). Each decodes the body as the real server
//! must (snappy / gzip), counts the lines by their markers and records the latency of timed
//! lines at the moment it answers; it answers as the real server does on success (Loki 204,
//! `_bulk` 200 with one `create` item of status 201 per document, OTLP 200 with an empty
//! `ExportLogsServiceResponse`). The Elasticsearch receiver can be capped in documents per
//! second: requests are served one after the other at that rate, as a saturated cluster would.

use crate::data::{markers, now_ns};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Loki,
    Es,
    Otlp,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Loki => "loki",
            Kind::Es => "elasticsearch",
            Kind::Otlp => "otlp",
        }
    }
}

#[derive(Default)]
pub struct Stats {
    /// Lines (markers) delivered.
    pub lines: AtomicU64,
    pub requests: AtomicU64,
    /// Per tag: latencies (ns) of timed lines.
    pub latencies: Mutex<Vec<Vec<u64>>>,
    /// Per tag: lines delivered.
    pub per_tag: Mutex<[u64; 10]>,
}

impl Stats {
    fn record(&self, body: &[u8]) {
        let now = now_ns();
        let mut n = 0;
        let mut lat = self.latencies.lock().unwrap();
        let mut tags = self.per_tag.lock().unwrap();
        markers(body, |t, tag| {
            n += 1;
            let tag = (tag as usize).min(9);
            tags[tag] += 1;
            if t > 0 {
                if lat.len() <= tag {
                    lat.resize(tag + 1, Vec::new());
                }
                lat[tag].push(now.saturating_sub(t));
            }
        });
        self.lines.fetch_add(n, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct Receiver {
    pub url: String,
    pub stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Limit {
    docs_per_sec: f64,
    next_free: Mutex<Instant>,
}

impl Receiver {
    /// Listens on 127.0.0.1 (any port). `docs_per_sec`: the Elasticsearch cap, if any.
    pub fn start(rt: &tokio::runtime::Handle, kind: Kind, docs_per_sec: Option<f64>) -> Receiver {
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let limit = docs_per_sec.map(|r| Arc::new(Limit { docs_per_sec: r, next_free: Mutex::new(Instant::now()) }));
        let st = stats.clone();
        let task = rt.spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else { continue };
                let (st, limit) = (st.clone(), limit.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(kind, req, st.clone(), limit.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
                        .await;
                });
            }
        });
        Receiver { url: format!("http://{addr}"), stats, task }
    }
}

fn decode(req_headers: &hyper::HeaderMap, kind: Kind, body: &[u8]) -> Result<Vec<u8>, String> {
    let header = |k: &str| req_headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    if header("content-encoding") == "gzip" {
        let mut out = Vec::with_capacity(body.len() * 8);
        flate2::read::GzDecoder::new(body).read_to_end(&mut out).map_err(|e| format!("gzip: {e}"))?;
        return Ok(out);
    }
    if kind == Kind::Loki && header("content-type") == "application/x-protobuf" {
        // Loki's push API: a snappy block (not the framed format) around the protobuf.
        return snap::raw::Decoder::new().decompress_vec(body).map_err(|e| format!("snappy: {e}"));
    }
    Ok(body.to_vec())
}

async fn handle(
    kind: Kind,
    req: Request<Incoming>,
    stats: Arc<Stats>,
    limit: Option<Arc<Limit>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let headers = req.headers().clone();
    let body = req.into_body().collect().await?.to_bytes();
    let body = match decode(&headers, kind, &body) {
        Ok(b) => b,
        Err(e) => return Ok(Response::builder().status(400).body(Full::new(Bytes::from(e))).unwrap()),
    };
    let docs = match kind {
        Kind::Es => memchr::memchr_iter(b'\n', &body).count() / 2,
        _ => 0,
    };
    if let Some(l) = &limit {
        let end = {
            let mut next = l.next_free.lock().unwrap();
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs_f64(docs as f64 / l.docs_per_sec);
            *next
        };
        tokio::time::sleep_until(end).await;
    }
    stats.record(&body);
    Ok(match kind {
        Kind::Loki => Response::builder().status(204).body(Full::new(Bytes::new())).unwrap(),
        Kind::Otlp => Response::builder()
            .status(200)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::new()))
            .unwrap(),
        Kind::Es => {
            let item = r#"{"create":{"_index":"b","_version":1,"result":"created","status":201}}"#;
            let mut s = String::with_capacity(40 + docs * (item.len() + 1));
            s.push_str(r#"{"took":1,"errors":false,"items":["#);
            for i in 0..docs {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(item);
            }
            s.push_str("]}");
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(s)))
                .unwrap()
        }
    })
}
