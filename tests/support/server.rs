//! A small hyper HTTP/1 server on 127.0.0.1:0 whose answers a test scripts: status, headers,
//! body, delay, or a dropped connection (no answer at all).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

/// A request as received (body not decoded).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Debug, Clone)]
pub enum Reply {
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        delay: Duration,
    },
    /// Close the connection without answering.
    Drop,
}

impl Reply {
    pub fn status(status: u16, body: &str) -> Self {
        Reply::Respond { status, headers: vec![], body: body.as_bytes().to_vec(), delay: Duration::ZERO }
    }
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Reply::Respond {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(body).unwrap(),
            delay: Duration::ZERO,
        }
    }
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Reply::Respond { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }
    pub fn delayed(mut self, d: Duration) -> Self {
        if let Reply::Respond { delay, .. } = &mut self {
            *delay = d;
        }
        self
    }
}

pub type Handler = Arc<dyn Fn(Request) -> Reply + Send + Sync>;

pub struct TestServer {
    pub addr: SocketAddr,
    /// While set, every connection is dropped: the backend is "down".
    pub down: Arc<AtomicBool>,
    pub max_concurrent: Arc<AtomicUsize>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(handler: Handler) -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), handler)
    }

    pub fn start_on(listener: TcpListener, handler: Handler) -> Self {
        Self::start_with(listener, handler, None)
    }

    /// An HTTPS server with this rustls config (e.g. one that requires client certificates).
    pub async fn start_tls(handler: Handler, tls: Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        Self::start_with(TcpListener::bind("127.0.0.1:0").await.unwrap(), handler, Some(tls))
    }

    fn start_with(
        listener: TcpListener,
        handler: Handler,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> Self {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let concurrent = Arc::new(AtomicUsize::new(0));
        let max_concurrent = Arc::new(AtomicUsize::new(0));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (d, c, mc) = (down.clone(), concurrent.clone(), max_concurrent.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let (sock, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = stopped.changed() => break,
                };
                if d.load(Ordering::SeqCst) {
                    drop(sock);
                    continue;
                }
                let (h, d, c, mc) = (handler.clone(), d.clone(), c.clone(), mc.clone());
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<Incoming>| {
                        let (h, d, c, mc) = (h.clone(), d.clone(), c.clone(), mc.clone());
                        async move {
                            let now = c.fetch_add(1, Ordering::SeqCst) + 1;
                            mc.fetch_max(now, Ordering::SeqCst);
                            let r = answer(req, &h, &d).await;
                            c.fetch_sub(1, Ordering::SeqCst);
                            r
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(sock), svc).await;
                        }
                        Some(a) => {
                            if let Ok(tls) = a.accept(sock).await {
                                let _ = http.serve_connection(TokioIo::new(tls), svc).await;
                            }
                        }
                    }
                });
            }
            conns.abort_all();
        });
        Self { addr, down, max_concurrent, stop, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[derive(Debug)]
struct Dropped;
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the test server")
    }
}
impl std::error::Error for Dropped {}

async fn answer(
    req: hyper::Request<Incoming>,
    handler: &Handler,
    down: &AtomicBool,
) -> Result<hyper::Response<Full<Bytes>>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|_| Dropped)?.to_bytes();
    if down.load(Ordering::SeqCst) {
        return Err(Dropped);
    }
    let r = Request {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
    };
    match handler(r) {
        Reply::Drop => Err(Dropped),
        Reply::Respond { status, headers, body, delay } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mut resp = hyper::Response::builder().status(status);
            for (k, v) in headers {
                resp = resp.header(k, v);
            }
            Ok(resp.body(Full::new(Bytes::from(body))).unwrap())
        }
    }
}

/// Gunzips when the request says gzip.
pub fn decoded_body(req: &Request) -> Result<Vec<u8>, String> {
    match req.header("content-encoding") {
        None | Some("snappy") => Ok(req.body.to_vec()),
        Some("gzip") => {
            use std::io::Read;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&req.body[..]).read_to_end(&mut out).map_err(|e| format!("gzip: {e}"))?;
            Ok(out)
        }
        Some(other) => Err(format!("unsupported Content-Encoding: {other}")),
    }
}

/// Test TLS material under tests/fixtures/tls.
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls").join(name)
}

/// A rustls server config with the fixture server certificate; `client_ca` requires client
/// certificates signed by the fixture CA.
pub fn tls_config(require_client_cert: bool) -> Arc<tokio_rustls::rustls::ServerConfig> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer> =
        CertificateDer::pem_file_iter(fixture("server.pem")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(fixture("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(builder.with_single_cert(certs, key).unwrap())
}
