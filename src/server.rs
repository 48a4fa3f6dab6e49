//! The HTTP server: `/metrics`, `/healthz`, `/readyz`.
//!
//! Key decision: `/metrics` gathers the registry on a blocking thread and shares nothing with the
//! log pipeline but atomics, so a wedged sink or a slow disk never delays a scrape. Node
//! collectors bound their own slow calls (statfs) with timeouts.

use crate::access::Access;
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
        Self::start_with_access(listen, Arc::new(Access::default()), registry, health).await
    }

    /// `start` with TLS and authentication (`metrics.tls`, `metrics.auth`; see `crate::access`).
    pub async fn start_with_access(
        listen: &str,
        access: Arc<Access>,
        registry: Registry,
        health: Arc<Health>,
    ) -> Result<Self, BindError> {
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
                let access = access.clone();
                tokio::spawn(async move {
                    let tls = access.tls.as_ref().map(|t| tokio_rustls::TlsAcceptor::from(t.current()));
                    let guard = access.clone();
                    // `client_cert`: the client presented a certificate the client CA verified.
                    let svc = move |client_cert: bool| {
                        let guard = guard.clone();
                        service_fn(move |req| {
                            let (registry, health) = (registry.clone(), health.clone());
                            let denied = guarded(&guard, &req, client_cert);
                            async move {
                                match denied {
                                    Some(r) => Ok(r),
                                    None => handle(req, registry, health).await,
                                }
                            }
                        })
                    };
                    let result = match tls {
                        // Both kinds boxed, so the task itself is small. A connection's state
                        // is most of a KiB (hyper's), several KiB with TLS (the handshake and
                        // the rustls session); inline, every task would be as big as the
                        // largest, and an allocation over 1 KiB is not served from glibc's
                        // thread cache but by a search of its bins (which first consolidates
                        // every fast bin): 4% of a scrape's CPU.
                        None => Box::pin(serve(stream, svc(false))).await,
                        // A client that never finishes its handshake is dropped like one that
                        // never sends its headers.
                        Some(acceptor) => {
                            Box::pin(async {
                                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(tls)) => {
                                        let client_cert = tls.get_ref().1.peer_certificates().is_some();
                                        serve(tls, svc(client_cert)).await
                                    }
                                    Ok(Err(error)) => {
                                        access.metrics.handshake_failures.inc();
                                        tracing::debug!(%error, "metrics server: TLS handshake failed");
                                        Ok(())
                                    }
                                    Err(_) => {
                                        access.metrics.handshake_failures.inc();
                                        Ok(())
                                    }
                                }
                            })
                            .await
                        }
                    };
                    if let Err(error) = result {
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

const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One HTTP/1 connection over plain TCP or TLS.
async fn serve<I, S>(io: I, svc: S) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Full<Bytes>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // header_read_timeout needs a timer: without one hyper panics on every
    // connection ("timeout `header_read_timeout` set, but no timer set").
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10))
        .serve_connection(TokioIo::new(io), svc)
        .await
}

/// The 403 for a request without the client certificate `metrics.tls.client_ca_file` asks
/// for, the 401 for one `metrics.auth` refuses (`None`: let it through).
fn guarded(access: &Access, req: &Request<Incoming>, client_cert: bool) -> Option<Response<Full<Bytes>>> {
    if !access.client_cert_ok(req.uri().path(), client_cert) {
        access.metrics.unauthorized.inc();
        return Some(
            Response::builder()
                .status(StatusCode::FORBIDDEN)
                .header("content-type", "text/plain; charset=utf-8")
                .body(Full::new(Bytes::from_static(
                    b"a client certificate signed by metrics.tls.client_ca_file is required\n",
                )))
                .expect("static response is valid"),
        );
    }
    let auth = req.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
    if access.allows(req.uri().path(), auth) {
        return None;
    }
    access.metrics.unauthorized.inc();
    tracing::debug!(path = req.uri().path(), "metrics server: 401, missing or wrong credentials");
    Some(
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(hyper::header::WWW_AUTHENTICATE, access.challenge())
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(b"unauthorized; see metrics.auth\n")))
            .expect("static response is valid"),
    )
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
            let body = tokio::task::spawn_blocking(move || render_pooled(&registry)).await.unwrap_or_default();
            Response::builder()
                .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                .body(Full::new(body))
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

/// The buffer of the last `/metrics` response, back from hyper once the response is written,
/// for the next scrape: no 64 KiB+ allocation, growth (realloc and copy) and free per scrape
/// (freeing a chunk that size made glibc consolidate its fast bins every time).
static SPARE: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

/// A buffer above this is not kept (a one-off huge textfile must not pin its memory).
const SPARE_MAX: usize = 4 << 20;

/// The response body: the rendered buffer itself (no copy), given back to `SPARE` on drop.
struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        if buf.capacity() > SPARE_MAX {
            return;
        }
        buf.clear();
        let mut spare = SPARE.lock().unwrap_or_else(|p| p.into_inner());
        // Two scrapes at once: keep the bigger buffer.
        if spare.capacity() < buf.capacity() {
            *spare = buf;
        }
    }
}

/// `render` into the kept buffer, as the body of a response.
fn render_pooled(registry: &Registry) -> Bytes {
    let mut buf = std::mem::take(&mut *SPARE.lock().unwrap_or_else(|p| p.into_inner()));
    if buf.capacity() == 0 {
        buf.reserve(64 * 1024);
    }
    crate::metrics::node::render_text(registry, &mut buf, encode);
    Bytes::from_owner(Pooled(buf))
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_metrics(addr: SocketAddr) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await.unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.unwrap();
        let resp = String::from_utf8(resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.0 200"), "{head}");
        body.to_string()
    }

    /// The response buffer is kept from one scrape to the next: the next body must be that
    /// scrape's text alone, never appended to the last one's.
    #[tokio::test]
    async fn kept_response_buffer_gives_each_scrape_only_its_own_text() {
        let registry = Registry::new();
        let c = prometheus::IntCounter::new("vigil_test_scrapes_total", "Scrapes.").unwrap();
        registry.register(Box::new(c.clone())).unwrap();
        let server = Server::start("127.0.0.1:0", registry.clone(), Arc::new(Health::default())).await.unwrap();
        for n in 0..3 {
            c.inc();
            let body = get_metrics(server.local_addr).await;
            assert_eq!(body, String::from_utf8(render(&registry)).unwrap());
            assert!(body.ends_with(&format!("vigil_test_scrapes_total {}\n", n + 1)), "{body}");
            assert_eq!(body.matches("# TYPE").count(), 1, "{body}");
        }
        server.stop().await;
    }
}
