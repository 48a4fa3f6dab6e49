//! The HTTP server: `/metrics`, `/healthz`, `/readyz`.
//!
//! Key decision: `/metrics` gathers the registry on a blocking thread and shares nothing with the
//! log pipeline but atomics, so a wedged sink or a slow disk never delays a scrape. Node
//! collectors bound their own slow calls (statfs) with timeouts.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{Encoder, Registry, TextEncoder};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What `/readyz` answers. Ready once sources and sinks have started; see README "Health".
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {error}; is another process (another vigil?) using that port? Change metrics.listen")]
pub struct BindError {
    pub addr: String,
    #[source]
    pub error: std::io::Error,
}

/// A running server; dropping the handle's stop sender ends it.
pub struct Server {
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds now (so a taken port fails before anything else starts), then serves in a task.
    pub async fn start(listen: &str, registry: Registry, health: Arc<Health>) -> Result<Self, BindError> {
        let listener =
            TcpListener::bind(listen).await.map_err(|error| BindError { addr: listen.to_string(), error })?;
        let local_addr = listener.local_addr().map_err(|error| BindError { addr: listen.to_string(), error })?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    c = listener.accept() => c,
                    _ = stopped.changed() => break,
                };
                let (stream, _) = match conn {
                    Ok(c) => c,
                    Err(error) => {
                        tracing::warn!(%error, "metrics server: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let registry = registry.clone();
                let health = health.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, registry.clone(), health.clone()));
                    // header_read_timeout needs a timer: without one hyper panics on every
                    // connection ("timeout `header_read_timeout` set, but no timer set").
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(std::time::Duration::from_secs(10))
                        .serve_connection(TokioIo::new(stream), svc);
                    if let Err(error) = conn.await {
                        tracing::debug!(%error, "metrics server: connection error");
                    }
                });
            }
        });
        Ok(Self { local_addr, stop, task })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn handle(
    req: Request<Incoming>,
    registry: Registry,
    health: Arc<Health>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let text = |code: StatusCode, body: &'static str| {
        Response::builder()
            .status(code)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("static response is valid")
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"));
    }
    Ok(match req.uri().path() {
        "/metrics" => {
            let body = tokio::task::spawn_blocking(move || render(&registry)).await.unwrap_or_default();
            Response::builder()
                .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                .body(Full::new(Bytes::from(body)))
                .expect("metrics response is valid")
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if health.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(StatusCode::NOT_FOUND, "not found; try /metrics, /healthz or /readyz\n"),
    })
}

/// The registry in the Prometheus text format. The node collector's families are written
/// straight from its own flat form (`metrics::node::render_text`); the rest is gathered and
/// encoded as usual.
pub fn render(registry: &Registry) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64 * 1024);
    crate::metrics::node::render_text(registry, &mut buf, encode);
    buf
}

/// Gathered families in the text format. The crate's encoder panics on untyped families
/// (node_exporter's vmstat, netstat and textfile ones): those are written here, the rest by the
/// encoder, in the order given.
pub fn encode(families: &[MetricFamily], buf: &mut Vec<u8>) {
    let mut rest = families;
    while !rest.is_empty() {
        let typed = rest.iter().position(|f| f.get_field_type() == MetricType::UNTYPED).unwrap_or(rest.len());
        if let Err(error) = TextEncoder::new().encode(&rest[..typed], buf) {
            tracing::warn!(%error, "metrics: encoding failed");
        }
        if let Some(f) = rest.get(typed) {
            write_untyped(f, buf);
        }
        rest = &rest[(typed + 1).min(rest.len())..];
    }
}

/// One untyped family in the text format (escaping as the format's spec).
fn write_untyped(f: &MetricFamily, buf: &mut Vec<u8>) {
    use std::fmt::Write;
    let mut s = String::new();
    let help = f.help().replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(s, "# HELP {} {help}\n# TYPE {} untyped", f.name(), f.name());
    for m in f.get_metric() {
        s.push_str(f.name());
        if !m.get_label().is_empty() {
            s.push('{');
            for (i, l) in m.get_label().iter().enumerate() {
                let v = l.value().replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(s, "{}{}=\"{v}\"", if i > 0 { "," } else { "" }, l.name());
            }
            s.push('}');
        }
        #[allow(deprecated)] // protobuf-specific accessor; the only way to an untyped value.
        let v = m.get_untyped().get_value();
        let _ = writeln!(s, " {}", prometheus_value(v));
    }
    buf.extend_from_slice(s.as_bytes());
}

/// A sample value as Go's strconv (and the crate's encoder) writes it.
fn prometheus_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        v.to_string()
    }
}
