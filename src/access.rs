//! Access control for the HTTP server (`metrics.tls`, `metrics.auth`): TLS with certificates
//! re-read when their files change, optional client certificates, and basic or bearer
//! authentication on everything but the kubelet's probes (`/healthz`, `/readyz`).
//!
//! Key decision: files are checked by `stat` when they are used, never watched. The TLS files
//! are stat'ed on a handshake at most every `RELOAD_CHECK` and the whole rustls `ServerConfig`
//! is rebuilt when one of them changed (mtime, size or inode: cert-manager's Secret volume
//! swaps a symlink), so a rotated certificate or client CA is served without a restart; a
//! half-written pair (key not matching the certificate) keeps the previous config and is tried
//! again at the next check. The credential files are stat'ed per request (a scrape every 15 s or
//! more) and re-read when changed, as the sinks' `bearer_token_file`. Rejected: inotify watches
//! (one more thread for files that change once in 60 days) and reading the files per request.
//!
//! Credentials are compared in constant time (`subtle`) so the answer time does not tell how
//! much of a guess was right; only the length can leak, as with Go's `subtle.ConstantTimeCompare`
//! that node_exporter's exporter-toolkit uses.

use crate::config::Problems;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio_rustls::rustls;

/// How often, at most, a handshake looks at the TLS files' stamps.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// `metrics.tls`: serve `/metrics`, `/healthz` and `/readyz` over HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain the server presents (leaf first). Re-read when it changes, e.g. a
    /// cert-manager Secret mounted as a volume (`tls.crt`).
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert_file` (`tls.key`). Re-read with it.
    pub key_file: PathBuf,
    /// PEM CA certificates: when set, clients must present a certificate signed by one of them
    /// (mutual TLS; a Prometheus `tlsConfig.cert`). Re-read when it changes. Default none: any
    /// client may connect (and `auth` decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
}

/// `metrics.auth`: credentials `/metrics` requires. Exactly one of `basic` and
/// `bearer_token_file`. `/healthz` and `/readyz` stay open for the kubelet's probes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerAuthConfig {
    /// HTTP basic authentication (RFC 7617).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuthConfig>,
    /// File holding the token clients send as `Authorization: Bearer <token>` (RFC 6750);
    /// surrounding whitespace is ignored. Re-read when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
}

/// `metrics.auth.basic`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    pub username: String,
    /// File holding the password (a Secret's key mounted as a file; a trailing newline is
    /// ignored). Re-read when it changes.
    pub password_file: PathBuf,
}

impl ServerTlsConfig {
    pub fn validate(&self, path: &str, p: &mut Problems) {
        for (field, v) in [("cert_file", &self.cert_file), ("key_file", &self.key_file)] {
            if v.as_os_str().is_empty() {
                p.push(format!("{path}.{field}"), "is empty; expected the path of a PEM file");
            }
        }
    }
}

impl ServerAuthConfig {
    pub fn validate(&self, path: &str, p: &mut Problems) {
        match (&self.basic, &self.bearer_token_file) {
            (Some(_), Some(_)) => p.push(
                path,
                "sets both basic and bearer_token_file; choose one (Prometheus sends one Authorization header)",
            ),
            (None, None) => p.push(path, "sets no method; set basic: {username, password_file} or bearer_token_file"),
            (Some(b), None) => {
                if b.username.is_empty() || b.username.contains(':') {
                    p.push(
                        format!("{path}.basic.username"),
                        "is empty or contains ':'; expected a user name without ':' (RFC 7617)",
                    );
                }
                if b.password_file.as_os_str().is_empty() {
                    p.push(format!("{path}.basic.password_file"), "is empty; expected the path of a file");
                }
            }
            (None, Some(f)) if f.as_os_str().is_empty() => {
                p.push(format!("{path}.bearer_token_file"), "is empty; expected the path of a file")
            }
            (None, Some(_)) => {}
        }
    }
}

/// A file that cannot be used at start: the field path, the file and why.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {path}: {message}")]
pub struct Error {
    pub field: String,
    pub path: String,
    pub message: String,
}

/// The server's access control, built once at start from `metrics.tls` and `metrics.auth`.
#[derive(Default)]
pub struct Access {
    pub tls: Option<Tls>,
    pub auth: Option<Auth>,
    pub metrics: AccessMetrics,
}

/// `vigil_server_*`: what access control refused or reloaded, created at 0. `Default` gives
/// counters on no registry (a server started without one).
#[derive(Clone)]
pub struct AccessMetrics {
    /// Requests answered 401 (credentials) or 403 (no client certificate).
    pub unauthorized: prometheus::IntCounter,
    /// Connections dropped because the TLS handshake failed or timed out.
    pub handshake_failures: prometheus::IntCounter,
    /// Certificate/key/client CA reloads after the files changed, by result.
    pub tls_reloads_ok: prometheus::IntCounter,
    pub tls_reloads_failed: prometheus::IntCounter,
}

impl Default for AccessMetrics {
    fn default() -> Self {
        Self::register(&prometheus::Registry::new()).expect("static metric definitions on an empty registry")
    }
}

impl AccessMetrics {
    pub fn register(r: &prometheus::Registry) -> prometheus::Result<Self> {
        use prometheus::{IntCounter, IntCounterVec, Opts};
        let unauthorized = IntCounter::new(
            "vigil_server_unauthorized_requests_total",
            "Requests refused: 401, missing or wrong credentials (metrics.auth); 403, no client certificate \
             (metrics.tls.client_ca_file).",
        )?;
        let handshake_failures = IntCounter::new(
            "vigil_server_tls_handshake_failures_total",
            "Connections closed because their TLS handshake failed or timed out (metrics.tls).",
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "vigil_server_tls_reloads_total",
                "Reloads of the metrics.tls files after they changed, by result (failure: the previous \
                 certificate is still served).",
            ),
            &["result"],
        )?;
        r.register(Box::new(unauthorized.clone()))?;
        r.register(Box::new(handshake_failures.clone()))?;
        r.register(Box::new(reloads.clone()))?;
        Ok(Self {
            unauthorized,
            handshake_failures,
            tls_reloads_ok: reloads.with_label_values(&["success"]),
            tls_reloads_failed: reloads.with_label_values(&["failure"]),
        })
    }
}

impl Access {
    /// Reads every file now, so a missing or bad one fails before anything starts, with the
    /// field that names it.
    pub fn new(
        tls: Option<&ServerTlsConfig>,
        auth: Option<&ServerAuthConfig>,
        metrics: AccessMetrics,
    ) -> Result<Self, Error> {
        let tls = tls.map(|t| Tls::new(t, metrics.clone())).transpose()?;
        let auth = match auth {
            None => None,
            Some(ServerAuthConfig { basic: Some(b), .. }) => Some(Auth::Basic {
                username: b.username.clone(),
                password: SecretFile::new("metrics.auth.basic.password_file", &b.password_file)?,
            }),
            Some(ServerAuthConfig { bearer_token_file: Some(f), .. }) => {
                Some(Auth::Bearer(SecretFile::new("metrics.auth.bearer_token_file", f)?))
            }
            Some(_) => None,
        };
        Ok(Self { tls, auth, metrics })
    }

    /// Whether a request for `path` with this `Authorization` header may proceed. The probes are
    /// always open.
    pub fn allows(&self, path: &str, authorization: Option<&[u8]>) -> bool {
        match &self.auth {
            None => true,
            Some(_) if path == "/healthz" || path == "/readyz" => true,
            Some(a) => a.check(authorization),
        }
    }

    /// Whether a request for `path` on a connection that did (`client_cert`) or did not present
    /// a verified client certificate may proceed: with `client_ca_file`, every path but the
    /// probes needs one (the handshake accepts a client without a certificate so the kubelet's
    /// probes, which send none, keep working; a certificate that is presented must verify).
    pub fn client_cert_ok(&self, path: &str, client_cert: bool) -> bool {
        let required = self.tls.as_ref().is_some_and(|t| t.config.client_ca_file.is_some());
        !required || client_cert || path == "/healthz" || path == "/readyz"
    }

    /// The `WWW-Authenticate` challenge of a 401.
    pub fn challenge(&self) -> &'static str {
        match self.auth {
            Some(Auth::Bearer(_)) => "Bearer realm=\"vigil\"",
            _ => "Basic realm=\"vigil\", charset=\"UTF-8\"",
        }
    }
}

pub enum Auth {
    Basic { username: String, password: SecretFile },
    Bearer(SecretFile),
}

impl Auth {
    fn check(&self, header: Option<&[u8]>) -> bool {
        let Some(h) = header else { return false };
        // `<scheme> <credentials>`; the scheme is case-insensitive (RFC 9110 11.1).
        let Some(sp) = h.iter().position(|b| *b == b' ') else { return false };
        let (scheme, creds) = (&h[..sp], h[sp + 1..].trim_ascii());
        match self {
            Auth::Bearer(file) => {
                let token = file.current();
                scheme.eq_ignore_ascii_case(b"bearer") && ct_eq(creds, token.as_bytes())
            }
            Auth::Basic { username, password } => {
                if !scheme.eq_ignore_ascii_case(b"basic") {
                    return false;
                }
                let password = password.current();
                use base64::Engine;
                let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(creds) else { return false };
                let Some(colon) = decoded.iter().position(|b| *b == b':') else { return false };
                let user_ok = ct_eq(&decoded[..colon], username.as_bytes());
                let pass_ok = ct_eq(&decoded[colon + 1..], password.as_bytes());
                user_ok & pass_ok
            }
        }
    }
}

/// Constant-time equality (the length is not hidden).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

/// (mtime, size, inode) of a file: what changes when it is rewritten or replaced.
type Stamp = (SystemTime, u64, u64);

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), m.ino()))
}

/// A credential file, re-read when its stamp changes. An unreadable or empty file keeps the
/// last good value (a Secret volume swaps its files), so a rotation never opens the door.
pub struct SecretFile {
    field: &'static str,
    path: PathBuf,
    state: Mutex<(Stamp, Arc<str>)>,
}

impl SecretFile {
    fn new(field: &'static str, path: &Path) -> Result<Self, Error> {
        let err = |message: String| Error { field: field.into(), path: path.display().to_string(), message };
        let st =
            stamp(path).map_err(|e| err(format!("cannot read it ({e}); check the Secret and its volume mount")))?;
        let value = read_secret(path).map_err(|e| err(format!("cannot use it ({e})")))?;
        Ok(Self { field, path: path.to_path_buf(), state: Mutex::new((st, value)) })
    }

    fn current(&self) -> Arc<str> {
        let mut state = self.state.lock().expect("secret file lock poisoned");
        if let Ok(st) = stamp(&self.path) {
            if st != state.0 {
                match read_secret(&self.path) {
                    Ok(v) => *state = (st, v),
                    Err(error) => tracing::warn!(
                        path = %self.path.display(), %error,
                        "{}: cannot re-read the changed file; keeping the previous value", self.field
                    ),
                }
            }
        }
        state.1.clone()
    }
}

fn read_secret(path: &Path) -> std::io::Result<Arc<str>> {
    let s = std::fs::read_to_string(path)?;
    let v = s.trim_end_matches(['\r', '\n']).trim();
    if v.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty"));
    }
    Ok(v.into())
}

/// The TLS side: a rustls config rebuilt when the files change.
pub struct Tls {
    config: ServerTlsConfig,
    state: Mutex<TlsState>,
    metrics: AccessMetrics,
}

struct TlsState {
    checked: Instant,
    stamps: Vec<Option<Stamp>>,
    current: Arc<rustls::ServerConfig>,
}

impl Tls {
    fn new(c: &ServerTlsConfig, metrics: AccessMetrics) -> Result<Self, Error> {
        let stamps = stamps(c);
        let current = build(c).map_err(|(field, path, message)| Error {
            field: format!("metrics.tls.{field}"),
            path,
            message,
        })?;
        Ok(Self {
            config: c.clone(),
            state: Mutex::new(TlsState { checked: Instant::now(), stamps, current }),
            metrics,
        })
    }

    /// The config for a new connection: the current one, rebuilt first if the files changed
    /// (checked at most every `RELOAD_CHECK`).
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        let mut s = self.state.lock().expect("tls lock poisoned");
        if s.checked.elapsed() >= RELOAD_CHECK {
            s.checked = Instant::now();
            let now = stamps(&self.config);
            if now != s.stamps {
                match build(&self.config) {
                    Ok(cfg) => {
                        tracing::info!(cert_file = %self.config.cert_file.display(), "metrics.tls: files changed; serving the new certificate");
                        s.current = cfg;
                        s.stamps = now;
                        self.metrics.tls_reloads_ok.inc();
                    }
                    // Mid-rotation (a key that does not match yet): keep serving the old pair and
                    // look again at the next check.
                    Err((field, path, error)) => {
                        self.metrics.tls_reloads_failed.inc();
                        tracing::warn!(
                            path,
                            error,
                            "metrics.tls.{field}: changed but not usable yet; serving the previous certificate"
                        )
                    }
                }
            }
        }
        s.current.clone()
    }
}

fn stamps(c: &ServerTlsConfig) -> Vec<Option<Stamp>> {
    [Some(&c.cert_file), Some(&c.key_file), c.client_ca_file.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| stamp(p).ok())
        .collect()
}

/// Builds the rustls config from the files; an error names the field, the path and the cause.
fn build(c: &ServerTlsConfig) -> Result<Arc<rustls::ServerConfig>, (&'static str, String, String)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let shown = |p: &Path| p.display().to_string();
    let certs = |field: &'static str, p: &Path| -> Result<Vec<CertificateDer<'static>>, _> {
        let pem = std::fs::read(p).map_err(|e| (field, shown(p), format!("cannot read it ({e})")))?;
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| (field, shown(p), format!("not PEM certificates ({e})")))?;
        if certs.is_empty() {
            return Err((field, shown(p), "holds no PEM certificate".to_string()));
        }
        Ok(certs)
    };
    let chain = certs("cert_file", &c.cert_file)?;
    let key_pem =
        std::fs::read(&c.key_file).map_err(|e| ("key_file", shown(&c.key_file), format!("cannot read it ({e})")))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| ("key_file", shown(&c.key_file), format!("holds no PEM private key ({e})")))?;
    // The crypto provider reqwest's rustls uses (ring): one implementation in the binary.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("cert_file", shown(&c.cert_file), e.to_string()))?;
    let builder = match &c.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs("client_ca_file", ca)? {
                roots.add(cert).map_err(|e| ("client_ca_file", shown(ca), format!("not a usable CA ({e})")))?;
            }
            // Clients without a certificate get through the handshake (the kubelet's probes send
            // none) and `Access::client_cert_ok` refuses them everything but the probes.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| ("client_ca_file", shown(ca), e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| ("key_file", shown(&c.key_file), format!("does not go with cert_file ({e})")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> Vec<u8> {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))).into_bytes()
    }

    #[test]
    fn basic_auth_needs_the_right_user_and_password_and_leaves_probes_open() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let auth = ServerAuthConfig {
            basic: Some(BasicAuthConfig { username: "prom".into(), password_file: pw.clone() }),
            bearer_token_file: None,
        };
        let a = Access::new(None, Some(&auth), AccessMetrics::default()).unwrap();
        assert!(a.allows("/metrics", Some(&basic("prom", "s3cret"))));
        assert!(a.allows("/metrics", Some(b"basic cHJvbTpzM2NyZXQ=")), "the scheme is case-insensitive");
        assert!(!a.allows("/metrics", Some(&basic("prom", "wrong"))));
        assert!(!a.allows("/metrics", Some(&basic("other", "s3cret"))));
        assert!(!a.allows("/metrics", Some(&basic("prom", "s3cret\n"))));
        assert!(!a.allows("/metrics", Some(b"Bearer s3cret")));
        assert!(!a.allows("/metrics", Some(b"Basic !!!")));
        assert!(!a.allows("/metrics", None));
        assert!(!a.allows("/anything", None));
        assert!(a.allows("/healthz", None) && a.allows("/readyz", None));
        // Rotated password: the new one works, the old one no longer.
        std::fs::write(&pw, "longer-new-secret").unwrap();
        assert!(a.allows("/metrics", Some(&basic("prom", "longer-new-secret"))));
        assert!(!a.allows("/metrics", Some(&basic("prom", "s3cret"))));
        // Emptied mid-rotation: the last good password stays, the door does not open.
        std::fs::write(&pw, "").unwrap();
        assert!(!a.allows("/metrics", Some(&basic("prom", ""))));
        assert!(a.allows("/metrics", Some(&basic("prom", "longer-new-secret"))));
    }

    #[test]
    fn bearer_token_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("token");
        std::fs::write(&tok, "abc.def\n").unwrap();
        let auth = ServerAuthConfig { basic: None, bearer_token_file: Some(tok) };
        let a = Access::new(None, Some(&auth), AccessMetrics::default()).unwrap();
        assert!(a.allows("/metrics", Some(b"Bearer abc.def")));
        assert!(a.allows("/metrics", Some(b"bearer abc.def")));
        assert!(!a.allows("/metrics", Some(b"Bearer abc.de")));
        assert!(!a.allows("/metrics", Some(b"Basic abc.def")));
        assert!(!a.allows("/metrics", None));
        assert_eq!(a.challenge(), "Bearer realm=\"vigil\"");
    }

    #[test]
    fn a_missing_file_fails_at_start_naming_the_field() {
        let auth = ServerAuthConfig { basic: None, bearer_token_file: Some("/nonexistent/token".into()) };
        let e = Access::new(None, Some(&auth), AccessMetrics::default()).err().expect("fails").to_string();
        assert!(e.starts_with("metrics.auth.bearer_token_file: /nonexistent/token: cannot read it"), "{e}");
        let tls = ServerTlsConfig {
            cert_file: "/nonexistent/tls.crt".into(),
            key_file: "/nonexistent/tls.key".into(),
            client_ca_file: None,
        };
        let e = Access::new(Some(&tls), None, AccessMetrics::default()).err().expect("fails").to_string();
        assert!(e.starts_with("metrics.tls.cert_file: /nonexistent/tls.crt: cannot read it"), "{e}");
    }

    #[test]
    fn validation_names_the_field() {
        let mut p = Problems::default();
        ServerAuthConfig {
            basic: Some(BasicAuthConfig { username: "a:b".into(), password_file: "/x".into() }),
            bearer_token_file: Some("/y".into()),
        }
        .validate("metrics.auth", &mut p);
        ServerAuthConfig::default().validate("metrics.auth", &mut p);
        ServerAuthConfig {
            basic: Some(BasicAuthConfig { username: "a:b".into(), password_file: "".into() }),
            bearer_token_file: None,
        }
        .validate("metrics.auth", &mut p);
        assert_eq!(p.0.len(), 4, "{:?}", p.0);
        assert!(p.0[0].starts_with("metrics.auth: sets both"), "{:?}", p.0);
        assert!(p.0[1].starts_with("metrics.auth: sets no method"), "{:?}", p.0);
        assert!(p.0[2].starts_with("metrics.auth.basic.username"), "{:?}", p.0);
        assert!(p.0[3].starts_with("metrics.auth.basic.password_file"), "{:?}", p.0);
    }
}
