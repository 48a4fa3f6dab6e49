//! The HTTP client shared by every HTTP sink (Loki, Elasticsearch, and the metrics shippers):
//! endpoint, timeout, TLS (rustls), authentication, extra headers, and per-request metrics.
//!
//! Key decision: one `reqwest::Client` per sink (its own connection pool and TLS settings),
//! wrapped in `HttpClient::post`, which records the sink's request metrics and returns the
//! status, `Retry-After` and a size-limited body; retry policy stays with each sink, because
//! what to retry differs (Elasticsearch retries single items). Authentication is applied per
//! request so a token file can be re-read when it changes (projected service-account tokens
//! rotate hourly): a `stat` per request, a read only when the file's mtime or size changed.
//! Rejected: a file watcher (one more thread and inotify watch per sink for a file read once an
//! hour) and reading the file every request. A token file that cannot be read (not there yet,
//! unreadable, empty) fails the try with `SendError::NoCredentials`, which sinks retry: a request
//! is never sent without the credentials the config asks for (the backend would answer 401, or,
//! worse, an open endpoint would take it as anonymous).
//!
//! Config: the keys every HTTP sink shares (`retry`, `request_timeout`, `tls`, `auth`,
//! `headers`) are defined once, in `http_sink_config!`, which appends them to a sink's config
//! struct; the sink writes its own keys (`endpoint` among them: what is appended to it differs).
//! They stay flat fields because serde cannot combine `flatten` with `deny_unknown_fields`
//! (a flattened struct makes serde accept any key). Rejected: a shared struct with a
//! hand-written `Deserialize` per sink (a visitor listing every key of every sink by hand, its
//! error messages rebuilt to match serde's) and a derive (a proc-macro crate for five fields).
//! The macro leaves the derive, doc comments and `deny_unknown_fields` to serde, so keys,
//! defaults and messages stay serde's own. It also writes the one conversion,
//! `http() -> HttpSettings`, which `HttpClient::new` takes and `validate` checks for every sink
//! alike.

use super::metrics::{InFlight, SinkMetrics};
use crate::config::{HumanDuration, Problems, Secret};
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// `tls:` of an HTTP sink. Server certificates are checked against the system roots (and
/// Mozilla's, bundled) plus `ca_file`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of extra CA certificates to trust (e.g. a cluster-internal CA). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS; needs `key_file`. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert_file`. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. Only for tests against self-signed servers: it makes TLS
    /// useless against an attacker, so vigil logs a warning at start. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

/// `auth:` of an HTTP sink: at most one method.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Basic auth user; with `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Basic auth password. Secret: never printed.
    #[serde(default, skip_serializing_if = "secret_is_empty")]
    pub password: Secret,
    /// Sent as `Authorization: Bearer <token>`. Secret.
    #[serde(default, skip_serializing_if = "secret_is_empty")]
    pub bearer_token: Secret,
    /// File holding the bearer token (e.g. a projected service-account token); re-read when it
    /// changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    /// Elasticsearch API key, the base64 `encoded` form Elasticsearch returns; sent as
    /// `Authorization: ApiKey <key>`. Secret.
    #[serde(default, skip_serializing_if = "secret_is_empty")]
    pub api_key: Secret,
}

fn secret_is_empty(s: &Secret) -> bool {
    s.expose().is_empty()
}

/// Declares an HTTP sink's config struct: its own fields as written, then the HTTP settings
/// every HTTP sink shares (their keys, defaults and doc comments are here, once), and
/// `http()`, the borrowed view `HttpClient::new` and `HttpSettings::validate` take. The
/// struct needs `endpoint: String` and a trailing comma after its last field.
macro_rules! http_sink_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($fields:tt)*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $($fields)*
            /// Backoff between retries of a failing request (connection errors, timeouts, 429,
            /// 5xx): `initial_backoff` (default 500ms), `max_backoff` (default 30s).
            #[serde(default)]
            pub retry: $crate::sinks::retry::RetryConfig,
            /// Time limit of one request, answer included. Default 30s (Prometheus'
            /// remote_timeout): long enough for a large `_bulk` on a busy cluster.
            #[serde(default = "crate::sinks::http::default_request_timeout")]
            pub request_timeout: $crate::config::HumanDuration,
            /// TLS for https endpoints: `ca_file`, `cert_file` + `key_file`,
            /// `insecure_skip_verify`. Default: the system's roots, verification on.
            #[serde(default)]
            pub tls: $crate::sinks::http::TlsConfig,
            /// Authentication, at most one method: `{username, password}` (basic),
            /// `{bearer_token}`, `{bearer_token_file}` (re-read when it changes) or `{api_key}`
            /// (Elasticsearch). Default none.
            #[serde(default)]
            pub auth: $crate::sinks::http::AuthConfig,
            /// Extra request headers (e.g. `X-Scope-OrgID` for a multi-tenant Loki or Mimir).
            /// Values are secrets: never printed. Default none.
            #[serde(default)]
            pub headers: std::collections::BTreeMap<String, $crate::config::Secret>,
        }

        impl $name {
            /// This sink's HTTP settings, for `HttpClient::new` and their validation.
            pub fn http(&self) -> $crate::sinks::http::HttpSettings<'_> {
                $crate::sinks::http::HttpSettings {
                    endpoint: &self.endpoint,
                    request_timeout: self.request_timeout,
                    tls: &self.tls,
                    auth: &self.auth,
                    headers: &self.headers,
                }
            }
        }
    };
}
pub(crate) use http_sink_config;

/// Borrowed view of a sink's HTTP settings.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings<'a> {
    pub endpoint: &'a str,
    pub request_timeout: HumanDuration,
    pub tls: &'a TlsConfig,
    pub auth: &'a AuthConfig,
    /// Extra request headers; values are secrets (they often carry credentials).
    pub headers: &'a BTreeMap<String, Secret>,
}

/// Default `request_timeout` for sinks: long enough for a large `_bulk` on a busy cluster.
pub fn default_request_timeout() -> HumanDuration {
    HumanDuration::secs(30)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {what} {path}: {error}")]
    Read { what: &'static str, path: String, error: std::io::Error },
    #[error("{what} {path} holds no usable PEM data ({error}); expected PEM certificates/keys")]
    Pem { what: &'static str, path: String, error: reqwest::Error },
    #[error("header '{name}': {message}")]
    Header { name: String, message: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl HttpSettings<'_> {
    /// Checks everything that can be checked without touching the network or files that may
    /// only exist on the node (file paths are checked when the sink starts).
    pub fn validate(&self, path: &str, p: &mut Problems) {
        p.url(format!("{path}.endpoint"), self.endpoint);
        if self.request_timeout.get().is_zero() {
            p.push(format!("{path}.request_timeout"), "is 0; expected a positive duration, e.g. 30s");
        }
        let t = self.tls;
        if t.cert_file.is_some() != t.key_file.is_some() {
            p.push(format!("{path}.tls"), "cert_file and key_file go together; set both or neither");
        }
        let a = self.auth;
        let methods = [
            a.username.is_some() || !a.password.expose().is_empty(),
            !a.bearer_token.expose().is_empty(),
            a.bearer_token_file.is_some(),
            !a.api_key.expose().is_empty(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            p.push(
                format!("{path}.auth"),
                "sets more than one method; choose one of username/password, bearer_token, bearer_token_file, api_key",
            );
        }
        if a.username.is_none() && !a.password.expose().is_empty() {
            p.push(format!("{path}.auth.username"), "is missing; a password needs a username");
        }
        for (name, value) in self.headers {
            if let Err(message) = header(name, value.expose()) {
                p.push(format!("{path}.headers.{name}"), message);
            }
        }
    }
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let n = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("'{name}' is not a valid header name; expected e.g. X-Custom-Header"))?;
    if n == reqwest::header::CONTENT_TYPE || n == reqwest::header::CONTENT_ENCODING {
        return Err("is set by the sink itself; remove it".into());
    }
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| "value is not a valid header value (control characters?); fix the value".to_string())?;
    v.set_sensitive(true);
    Ok((n, v))
}

/// Why a try got no HTTP answer. Always worth a retry (`failure` says why, for the metrics).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Connect, TLS, timeout, connection dropped.
    #[error(transparent)]
    Transport(reqwest::Error),
    /// `auth.bearer_token_file` could not be read: the request was not sent.
    #[error("cannot read auth.bearer_token_file {path} ({error}); not sending the request without credentials")]
    NoCredentials { path: String, error: std::io::Error },
}

impl SendError {
    pub fn failure(&self) -> super::retry::Failure {
        match self {
            SendError::Transport(_) => super::retry::Failure::Transport,
            SendError::NoCredentials { .. } => super::retry::Failure::NoCredentials,
        }
    }
}

/// An answer from the server.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// The body, cut at the caller's limit.
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as text for a log line: at most `max` bytes, lossy UTF-8, one line.
    pub fn body_sample(&self, max: usize) -> String {
        let cut = &self.body[..self.body.len().min(max)];
        String::from_utf8_lossy(cut).replace(['\n', '\r'], " ")
    }
}

/// A sink's HTTP client.
pub struct HttpClient {
    client: reqwest::Client,
    auth: Auth,
    metrics: SinkMetrics,
}

enum Auth {
    None,
    Basic { user: String, password: String },
    Bearer(String),
    BearerFile(TokenFile),
    ApiKey(HeaderValue),
}

impl HttpClient {
    /// Builds the client. Reads the TLS files now, so a bad path fails at start with its name.
    pub fn new(s: &HttpSettings<'_>, metrics: SinkMetrics) -> Result<Self, Error> {
        let mut headers = HeaderMap::new();
        for (name, value) in s.headers {
            let (n, v) =
                header(name, value.expose()).map_err(|message| Error::Header { name: name.clone(), message })?;
            headers.insert(n, v);
        }
        let timeout = s.request_timeout.get();
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(50))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers);
        if let Some(ca) = &s.tls.ca_file {
            let pem = read("CA file", ca)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| Error::Pem {
                what: "CA file",
                path: ca.display().to_string(),
                error,
            })?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if let (Some(cert), Some(key)) = (&s.tls.cert_file, &s.tls.key_file) {
            let mut pem = read("client certificate", cert)?;
            pem.push(b'\n');
            pem.extend(read("client key", key)?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|error| Error::Pem {
                what: "client certificate",
                path: cert.display().to_string(),
                error,
            })?;
            b = b.identity(id);
        }
        if s.tls.insecure_skip_verify {
            tracing::warn!(
                sink = metrics.name(),
                "tls.insecure_skip_verify is set: server certificates are NOT checked; anyone on the path can read and alter the data"
            );
            b = b.danger_accept_invalid_certs(true);
        }
        let a = s.auth;
        let auth = if let Some(user) = &a.username {
            Auth::Basic { user: user.clone(), password: a.password.expose().to_string() }
        } else if !a.bearer_token.expose().is_empty() {
            Auth::Bearer(a.bearer_token.expose().to_string())
        } else if let Some(path) = &a.bearer_token_file {
            let tf = TokenFile { path: path.clone(), state: Mutex::new(None) };
            if let Err(error) = tf.token() {
                tracing::warn!(sink = metrics.name(), path = %path.display(), %error, "cannot read the bearer token file yet; requests wait (retried) until it appears");
            }
            Auth::BearerFile(tf)
        } else if !a.api_key.expose().is_empty() {
            let mut v = HeaderValue::from_str(&format!("ApiKey {}", a.api_key.expose())).map_err(|_| {
                Error::Header { name: "auth.api_key".into(), message: "is not a valid header value".into() }
            })?;
            v.set_sensitive(true);
            Auth::ApiKey(v)
        } else {
            Auth::None
        };
        Ok(Self { client: b.build().map_err(Error::Client)?, auth, metrics })
    }

    pub fn metrics(&self) -> &SinkMetrics {
        &self.metrics
    }

    /// POSTs `body` and reads at most `max_body` bytes of the answer. Counts the request by
    /// status class, its duration, bytes sent, and in-flight. An `Err` is a failure without an
    /// HTTP answer (transport, or credentials that cannot be read, in which case nothing was
    /// sent): always worth a retry.
    pub async fn post(
        &self,
        url: &reqwest::Url,
        body: Bytes,
        headers: HeaderMap,
        max_body: usize,
    ) -> Result<HttpResponse, SendError> {
        let mut req = self.client.post(url.clone()).headers(headers);
        req = match &self.auth {
            Auth::None => req,
            Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::BearerFile(f) => match f.token() {
                Ok(t) => req.bearer_auth(t),
                Err(error) => {
                    return Err(SendError::NoCredentials { path: f.path.display().to_string(), error });
                }
            },
            Auth::ApiKey(v) => req.header(reqwest::header::AUTHORIZATION, v.clone()),
        };
        let _in_flight = InFlight::enter(&self.metrics.in_flight);
        let started = Instant::now();
        let len = body.len() as u64;
        let req = req.body(body);
        let result = async {
            let mut resp = req.send().await?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(super::retry::parse_retry_after);
            // Sized from Content-Length when there is one: no regrowth (a copy) of a large answer.
            let mut buf = Vec::with_capacity(resp.content_length().unwrap_or(0).min(max_body as u64) as usize);
            while let Some(piece) = resp.chunk().await? {
                let room = max_body.saturating_sub(buf.len());
                buf.extend_from_slice(&piece[..piece.len().min(room)]);
                if room < piece.len() {
                    break;
                }
            }
            Ok(HttpResponse { status, retry_after, body: Bytes::from(buf) })
        }
        .await;
        self.metrics.duration.observe(started.elapsed().as_secs_f64());
        self.metrics.bytes_sent.inc_by(len);
        self.metrics.request(result.as_ref().ok().map(|r| r.status));
        result.map_err(SendError::Transport)
    }
}

fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|error| Error::Read { what, path: path.display().to_string(), error })
}

/// A token file, re-read when its mtime or size changes.
struct TokenFile {
    path: PathBuf,
    state: Mutex<Option<(SystemTime, u64, String)>>,
}

impl TokenFile {
    fn token(&self) -> std::io::Result<String> {
        let meta = std::fs::metadata(&self.path);
        let mut state = self.state.lock().expect("token file lock poisoned");
        match meta {
            Ok(m) => {
                let stamp = (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len());
                if let Some((t, l, tok)) = state.as_ref() {
                    if (*t, *l) == stamp {
                        return Ok(tok.clone());
                    }
                }
                match std::fs::read_to_string(&self.path) {
                    // Empty: being written (or emptied by mistake); a request with an empty token
                    // would be anonymous.
                    Ok(s) if s.trim().is_empty() => state
                        .as_ref()
                        .map(|s| s.2.clone())
                        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty")),
                    Ok(s) => {
                        let tok = s.trim().to_string();
                        *state = Some((stamp.0, stamp.1, tok.clone()));
                        Ok(tok)
                    }
                    // Mid-rotation: keep the last good token rather than none.
                    Err(e) => state.as_ref().map(|s| s.2.clone()).ok_or(e),
                }
            }
            Err(e) => state.as_ref().map(|s| s.2.clone()).ok_or(e),
        }
    }
}

/// Request body compression. Default per sink type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
}

/// Gzips a request body (fast level: a sink spends CPU of the node it watches, and level 1
/// already takes log text to about a tenth).
///
/// zlib's own gzip wrapper, compressing straight into the output (room for a tenth of the
/// input, grown if that is short) and taking the CRC in zlib; rejected: `write::GzEncoder`,
/// which compresses into a 32 KiB buffer and copies that into the output.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::Compress::new_gzip(flate2::Compression::fast(), 15);
    let mut out = Vec::with_capacity(data.len() / 4 + 64);
    loop {
        let done = z.total_in() as usize;
        match z.compress_vec(&data[done..], &mut out, flate2::FlushCompress::Finish) {
            Ok(flate2::Status::StreamEnd) => return out,
            Ok(_) => out.reserve(out.capacity().max(4096)),
            Err(e) => unreachable!("deflate into a growing Vec cannot fail: {e}"),
        }
    }
}

/// An error with its causes on one line (reqwest's Display hides the root cause, e.g.
/// "connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Appends `suffix` (e.g. `/_bulk`) to the endpoint's path, keeping a path prefix and the query
/// string: `https://h/es/?x=1` + `/_bulk` → `https://h/es/_bulk?x=1`.
pub fn endpoint_with_path(endpoint: &str, suffix: &str) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(endpoint).map_err(|e| format!("'{endpoint}' is not a URL ({e})"))?;
    let path = format!("{}{}", url.path().trim_end_matches('/'), suffix);
    url.set_path(&path);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_round_trips_text_and_incompressible_bytes() {
        use std::io::Read;
        let text = "2026-11-28T06:32:13Z stdout F GET /healthz 200\n".repeat(5000).into_bytes();
        // Pseudo-random bytes do not shrink: the output outgrows its first allocation.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for data in [Vec::new(), text, noise] {
            let z = gzip(&data);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&z[..]).read_to_end(&mut back).unwrap();
            assert_eq!(back, data);
        }
    }

    #[test]
    fn endpoint_keeps_prefix_and_query() {
        let u = endpoint_with_path("https://h:9200/proxy/es/?pipeline=p&x=1", "/_bulk").unwrap();
        assert_eq!(u.as_str(), "https://h:9200/proxy/es/_bulk?pipeline=p&x=1");
        let u = endpoint_with_path("http://loki:3100", "/loki/api/v1/push").unwrap();
        assert_eq!(u.as_str(), "http://loki:3100/loki/api/v1/push");
        let u = endpoint_with_path("http://vl:9428/insert/elasticsearch", "/_bulk").unwrap();
        assert_eq!(u.as_str(), "http://vl:9428/insert/elasticsearch/_bulk");
    }

    #[test]
    fn validation_reports_every_problem() {
        let tls = TlsConfig { cert_file: Some("/c.pem".into()), ..Default::default() };
        let auth = AuthConfig { password: Secret("pw".into()), bearer_token: Secret("t".into()), ..Default::default() };
        let headers = BTreeMap::from([("bad header".to_string(), Secret("v".into()))]);
        let s = HttpSettings {
            endpoint: "htp:/x",
            request_timeout: HumanDuration::secs(0),
            tls: &tls,
            auth: &auth,
            headers: &headers,
        };
        let mut p = Problems::default();
        s.validate("sinks[1]", &mut p);
        let text = p.0.join("\n");
        for needle in [
            "sinks[1].endpoint",
            "sinks[1].request_timeout",
            "sinks[1].tls",
            "sinks[1].auth: sets more than one",
            "sinks[1].auth.username",
            "sinks[1].headers.bad header",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
        assert!(!text.contains("pw"), "a secret leaked into a validation message: {text}");
    }

    /// The HTTP sinks with their own required keys, and the keys their unknown-key error lists
    /// (the contract users see; pinned on the code before `http_sink_config!`).
    const HTTP_SINKS: &[(&str, &str, &str)] = &[
        (
            "loki",
            "endpoint: http://loki:3100",
            "`name`, `match`, `endpoint`, `tenant_id`, `template_default`, `level_label`, `parsed_fields`, \
             `encoding`, `compression`, `labels`, `pod_labels`, `static_labels`, `structured_metadata`, \
             `max_streams`, `batch`, `max_in_flight`, `retry`, `request_timeout`, `tls`, `auth`, `headers`",
        ),
        (
            "elasticsearch",
            "endpoint: http://es:9200",
            "`name`, `match`, `endpoint`, `index`, `data_stream`, `template_default`, `metrics_index`, `labels`, \
             `dead_letter_index`, `accept_empty_response`, `compression`, `batch`, `max_in_flight`, `retry`, \
             `request_timeout`, `tls`, `auth`, `headers`",
        ),
        (
            "otlp",
            "endpoint: http://otel:4318",
            "`name`, `match`, `endpoint`, `protocol`, `compression`, `resource_attributes`, `logs`, \
             `severity_from_stream`, `batch`, `max_in_flight`, `retry`, `request_timeout`, `tls`, `auth`, `headers`",
        ),
        (
            "prometheus_remote_write",
            "endpoint: http://prom:9090/api/v1/write",
            // The same keys as before `http_sink_config!`; only their order in this message
            // moved (the shared ones come last, as they always did for the log sinks).
            "`name`, `endpoint`, `external_labels`, `tenant_id`, `max_samples_per_send`, `queue_max_age`, \
             `queue_max_samples`, `retry`, `request_timeout`, `tls`, `auth`, `headers`",
        ),
    ];

    /// `sinks: [one sink of type kind with these keys]` (a remote-write sink named under
    /// `metrics.ship.sinks`, as it must be), loaded as `vigil run` loads it.
    fn load_sink(kind: &str, keys: &str) -> Result<crate::config::Config, Vec<String>> {
        let ship = if kind == "prometheus_remote_write" { "metrics:\n  ship:\n    sinks: [s]\n" } else { "" };
        let yaml = format!("sinks:\n  - {{name: s, type: {kind}, {keys}}}\n{ship}");
        match crate::config::Config::from_yaml(&yaml, &|_| None) {
            Ok(c) => Ok(c),
            Err(crate::config::Error::Invalid(e)) => Err(e),
            Err(e) => panic!("{kind}: unexpected error kind: {e}"),
        }
    }

    fn settings(s: &crate::sinks::SinkConfig) -> (HttpSettings<'_>, super::super::retry::RetryConfig) {
        use crate::sinks::SinkConfig as S;
        match s {
            S::Loki(c) => (c.http(), c.retry),
            S::Elasticsearch(c) => (c.http(), c.retry),
            S::Otlp(c) => (c.http(), c.retry),
            S::PrometheusRemoteWrite(c) => (c.http(), c.retry),
            other => panic!("not an HTTP sink: {}", other.kind()),
        }
    }

    /// Every key of the HTTP settings parses the same in every HTTP sink, with the same
    /// defaults, and what users get wrong is refused with the same message naming its path.
    #[test]
    fn every_http_sink_keeps_its_http_keys_defaults_and_errors() {
        let keys = "retry: {initial_backoff: 2s, max_backoff: 1m}, request_timeout: 7s, \
                    tls: {ca_file: /ca.pem, cert_file: /c.pem, key_file: /k.pem, insecure_skip_verify: true}, \
                    auth: {bearer_token_file: /token}, headers: {X-Scope-OrgID: team-a}";
        for (kind, own, listed) in HTTP_SINKS {
            let c = load_sink(kind, own).unwrap_or_else(|e| panic!("{kind}: {e:?}"));
            let (s, retry) = settings(&c.sinks[0]);
            assert_eq!(s.request_timeout.get(), Duration::from_secs(30), "{kind}: default request_timeout");
            assert_eq!((s.tls, s.auth), (&TlsConfig::default(), &AuthConfig::default()), "{kind}");
            assert!(s.headers.is_empty(), "{kind}");
            assert_eq!(retry, super::super::retry::RetryConfig::default(), "{kind}");

            let c = load_sink(kind, &format!("{own}, {keys}")).unwrap_or_else(|e| panic!("{kind}: {e:?}"));
            let (s, retry) = settings(&c.sinks[0]);
            assert_eq!(s.endpoint, own.trim_start_matches("endpoint: "), "{kind}");
            assert_eq!(s.request_timeout.get(), Duration::from_secs(7), "{kind}");
            let tls = TlsConfig {
                ca_file: Some("/ca.pem".into()),
                cert_file: Some("/c.pem".into()),
                key_file: Some("/k.pem".into()),
                insecure_skip_verify: true,
            };
            assert_eq!(s.tls, &tls, "{kind}");
            assert_eq!(s.auth.bearer_token_file.as_deref(), Some(std::path::Path::new("/token")), "{kind}");
            assert_eq!(s.headers.get("X-Scope-OrgID").map(Secret::expose), Some("team-a"), "{kind}");
            assert_eq!(
                (retry.initial_backoff.get(), retry.max_backoff.get()),
                (Duration::from_secs(2), Duration::from_secs(60))
            );
            // `vigil validate` prints them back under the same keys, the header value masked.
            let printed = c.to_yaml();
            for key in [
                "request_timeout: 7s",
                "ca_file: /ca.pem",
                "bearer_token_file: /token",
                "X-Scope-OrgID:",
                "initial_backoff: 2s",
            ] {
                assert!(printed.contains(key), "{kind}: {key} not in\n{printed}");
            }
            assert!(!printed.contains("team-a"), "{kind}: a header value was printed:\n{printed}");
            let c = load_sink(kind, &format!("{own}, auth: {{username: u, password: p}}")).expect("basic auth");
            assert_eq!(settings(&c.sinks[0]).0.auth.username.as_deref(), Some("u"), "{kind}");
            let c = load_sink(kind, &format!("{own}, auth: {{api_key: k}}")).expect("api key");
            assert_eq!(settings(&c.sinks[0]).0.auth.api_key.expose(), "k", "{kind}");

            let error = |keys: &str| {
                let e = load_sink(kind, &format!("{own}, {keys}")).expect_err(keys);
                assert_eq!(e.len(), 1, "{kind} {keys}: {e:?}");
                e[0].split(" at line ").next().expect("message").to_owned()
            };
            assert_eq!(error("bogus: 1"), format!("sinks[0]: unknown field `bogus`, expected one of {listed}"));
            assert_eq!(
                error("tls: {ca: /x}"),
                "sinks[0]: unknown field `ca`, expected one of `ca_file`, `cert_file`, `key_file`, \
                 `insecure_skip_verify`"
            );
            assert_eq!(
                error("auth: {token: x}"),
                "sinks[0]: unknown field `token`, expected one of `username`, `password`, `bearer_token`, \
                 `bearer_token_file`, `api_key`"
            );
            assert_eq!(
                error("retry: {max: 1s}"),
                "sinks[0]: unknown field `max`, expected `initial_backoff` or `max_backoff`"
            );
            assert_eq!(
                error("request_timeout: soon"),
                "sinks[0]: 'soon' is not a duration (expected number at 0); expected e.g. 500ms, 5s, 1m30s"
            );
            assert_eq!(error("headers: [a]"), "sinks[0]: invalid type: sequence, expected a map");
            assert_eq!(
                error("request_timeout: 0s"),
                "sinks[0].request_timeout: is 0; expected a positive duration, e.g. 30s"
            );
            assert_eq!(
                error("tls: {cert_file: /c.pem}"),
                "sinks[0].tls: cert_file and key_file go together; set both or neither"
            );
        }
    }

    #[test]
    fn token_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "one\n").unwrap();
        let tf = TokenFile { path: path.clone(), state: Mutex::new(None) };
        assert_eq!(tf.token().unwrap(), "one");
        // Projected tokens are swapped by a rename; the size differs here, so even a filesystem
        // with coarse mtimes notices.
        std::fs::write(dir.path().join("new"), "second\n").unwrap();
        std::fs::rename(dir.path().join("new"), &path).unwrap();
        assert_eq!(tf.token().unwrap(), "second");
        // Gone mid-rotation: the last good token is kept.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(tf.token().unwrap(), "second");
    }

    /// Regression: a token file that was missing at the first request made `post` send the
    /// request without any `Authorization` header.
    #[test]
    fn a_missing_or_empty_token_file_is_an_error_not_an_anonymous_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let tf = TokenFile { path: path.clone(), state: Mutex::new(None) };
        assert!(tf.token().is_err());
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(tf.token().unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        std::fs::write(&path, "tok\n").unwrap();
        assert_eq!(tf.token().unwrap(), "tok");
    }
}
