//! `metrics.tls` and `metrics.auth` on the real server: a CA made here with the `openssl` CLI
//! (as an operator or cert-manager would make one), HTTPS scrapes with reqwest (rustls, as
//! Prometheus' Go TLS would verify: the CA, the IP SAN), basic and bearer auth, client
//! certificates, and a certificate rotated on disk served without a restart.

use prometheus::{IntCounter, Registry};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil::access::{Access, AccessMetrics, BasicAuthConfig, ServerAuthConfig, ServerTlsConfig};
use vigil::server::{Health, Server};

/// Runs openssl in `dir` with whitespace-separated `args`, panicking with its output on failure.
fn openssl(dir: &Path, args: &str) {
    let args: Vec<&str> = args.split_whitespace().collect();
    let out = Command::new("openssl").args(&args).current_dir(dir).output().expect("the openssl CLI runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

const EC_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

/// A self-signed CA `<name>.pem` / `<name>.key`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &format!(
            "req -x509 {EC_KEY} -keyout {name}.key -out {name}.pem -days 2 -subj /CN={name} \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        ),
    );
}

/// A leaf `<name>.pem` / `<name>.key` signed by `ca`: a server certificate for 127.0.0.1, or
/// a client certificate.
fn make_leaf(dir: &Path, ca: &str, name: &str, server: bool) {
    openssl(dir, &format!("req {EC_KEY} -keyout {name}.key -out {name}.csr -subj /CN={name}"));
    let ext = if server {
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    } else {
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    };
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &format!(
            "x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -out {name}.pem -days 2 \
             -extfile {name}.ext"
        ),
    );
}

/// Two CAs, a server certificate from each, a client certificate from each.
fn pki() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (ca, server, client) in [("ca1", "server1", "client1"), ("ca2", "server2", "client2")] {
        make_ca(d, ca);
        make_leaf(d, ca, server, true);
        make_leaf(d, ca, client, false);
    }
    dir
}

struct Running {
    server: Server,
    base: String,
    _registry: Registry,
}

/// The real server on 127.0.0.1 with a registry holding one vigil counter.
async fn start(access: Access) -> Running {
    let registry = Registry::new();
    let c = IntCounter::new("vigil_test_total", "test").unwrap();
    c.inc();
    registry.register(Box::new(c)).unwrap();
    let health = Arc::new(Health::default());
    health.set_ready(true);
    let scheme = if access.tls.is_some() { "https" } else { "http" };
    let server =
        Server::start_with_access("127.0.0.1:0", Arc::new(access), registry.clone(), health).await.expect("binds");
    let base = format!("{scheme}://127.0.0.1:{}", server.local_addr.port());
    Running { server, base, _registry: registry }
}

fn tls(d: &Path, server: &str, client_ca: Option<&str>) -> ServerTlsConfig {
    ServerTlsConfig {
        cert_file: d.join(format!("{server}.pem")),
        key_file: d.join(format!("{server}.key")),
        client_ca_file: client_ca.map(|c| d.join(format!("{c}.pem"))),
    }
}

/// A fresh client (no pooled connection: every request makes its own handshake) trusting `ca`.
fn client(d: &Path, ca: &str, identity: Option<&str>) -> reqwest::Client {
    let pem = std::fs::read(d.join(format!("{ca}.pem"))).unwrap();
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20));
    if let Some(name) = identity {
        let mut pem = std::fs::read(d.join(format!("{name}.pem"))).unwrap();
        pem.extend(std::fs::read(d.join(format!("{name}.key"))).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

async fn get(req: reqwest::RequestBuilder) -> Result<(u16, Option<String>, String), String> {
    let resp = req.send().await.map_err(|e| vigil::sinks::http::error_chain(&e))?;
    let status = resp.status().as_u16();
    let challenge = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
    Ok((status, challenge, resp.text().await.map_err(|e| e.to_string())?))
}

fn write_secret(d: &Path, name: &str, value: &str) -> PathBuf {
    let p = d.join(name);
    std::fs::write(&p, value).unwrap();
    p
}

#[tokio::test]
async fn tls_with_a_test_ca_and_basic_auth_wrong_password_401_right_password_200_probes_open() {
    let pki = pki();
    let d = pki.path();
    let password_file = write_secret(d, "password", "correct horse\n");
    let auth = ServerAuthConfig {
        basic: Some(BasicAuthConfig { username: "prometheus".into(), password_file }),
        ..Default::default()
    };
    let m = AccessMetrics::default();
    let r = start(Access::new(Some(&tls(d, "server1", None)), Some(&auth), m.clone()).unwrap()).await;
    let c = client(d, "ca1", None);
    let metrics = format!("{}/metrics", r.base);

    let (status, challenge, _) = get(c.get(&metrics).basic_auth("prometheus", Some("wrong"))).await.unwrap();
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some("Basic realm=\"vigil\", charset=\"UTF-8\""));
    let (status, _, _) = get(c.get(&metrics)).await.unwrap();
    assert_eq!(status, 401, "no credentials");
    let (status, _, _) = get(c.get(&metrics).basic_auth("someone", Some("correct horse"))).await.unwrap();
    assert_eq!(status, 401, "wrong user");
    let (status, _, body) = get(c.get(&metrics).basic_auth("prometheus", Some("correct horse"))).await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("vigil_test_total 1"), "{body}");
    assert_eq!(m.unauthorized.get(), 3, "each 401 is counted");

    // The kubelet's probes carry no credentials.
    for probe in ["/healthz", "/readyz"] {
        let (status, _, _) = get(c.get(format!("{}{probe}", r.base))).await.unwrap();
        assert_eq!(status, 200, "{probe}");
    }
    // Plain HTTP on the TLS port gets no answer; a client that does not trust the CA refuses.
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{}/healthz", r.server.local_addr.port()));
    assert!(get(plain).await.is_err());
    let e = get(client(d, "ca2", None).get(format!("{}/healthz", r.base))).await.unwrap_err();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    r.server.stop().await;
}

#[tokio::test]
async fn bearer_token_file_right_token_200_wrong_401() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_secret(dir.path(), "token", "t0ken-value\n");
    let auth = ServerAuthConfig { bearer_token_file: Some(token.clone()), ..Default::default() };
    let r = start(Access::new(None, Some(&auth), AccessMetrics::default()).unwrap()).await;
    let c = reqwest::Client::new();
    let metrics = format!("{}/metrics", r.base);
    let (status, challenge, _) = get(c.get(&metrics).bearer_auth("nope")).await.unwrap();
    assert_eq!((status, challenge.as_deref()), (401, Some("Bearer realm=\"vigil\"")));
    let (status, _, body) = get(c.get(&metrics).bearer_auth("t0ken-value")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    // A rotated token file: the new token is accepted at once, the old one refused.
    std::fs::write(&token, "rotated-token-value").unwrap();
    assert_eq!(get(c.get(&metrics).bearer_auth("rotated-token-value")).await.unwrap().0, 200);
    assert_eq!(get(c.get(&metrics).bearer_auth("t0ken-value")).await.unwrap().0, 401);
    assert_eq!(get(c.get(format!("{}/healthz", r.base))).await.unwrap().0, 200);
    r.server.stop().await;
}

#[tokio::test]
async fn client_ca_rejects_an_unsigned_client_and_requires_a_certificate_for_metrics_not_probes() {
    let pki = pki();
    let d = pki.path();
    let m = AccessMetrics::default();
    let r = start(Access::new(Some(&tls(d, "server1", Some("ca1"))), None, m.clone()).unwrap()).await;
    let metrics = format!("{}/metrics", r.base);
    let (status, _, body) = get(client(d, "ca1", None).get(&metrics)).await.unwrap();
    assert_eq!(status, 403, "no client certificate: {body}");
    assert_eq!(m.unauthorized.get(), 1);
    // The kubelet's probes send no certificate and stay open.
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(get(client(d, "ca1", None).get(format!("{}{probe}", r.base))).await.unwrap().0, 200, "{probe}");
    }
    let e = get(client(d, "ca1", Some("client2")).get(&metrics)).await.unwrap_err();
    assert!(e.to_lowercase().contains("certificate") || e.contains("alert"), "signed by another CA: {e}");
    assert!(m.handshake_failures.get() >= 1, "refused handshakes are counted");
    let (status, _, body) = get(client(d, "ca1", Some("client1")).get(&metrics)).await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("vigil_test_total"), "{body}");
    r.server.stop().await;
}

#[tokio::test]
async fn rotated_certificate_files_are_served_without_a_restart() {
    let pki = pki();
    let d = pki.path();
    // The served files, replaced the way a Secret volume update replaces them (rename).
    let live = d.join("live");
    std::fs::create_dir(&live).unwrap();
    std::fs::copy(d.join("server1.pem"), live.join("tls.crt")).unwrap();
    std::fs::copy(d.join("server1.key"), live.join("tls.key")).unwrap();
    let cfg = ServerTlsConfig { cert_file: live.join("tls.crt"), key_file: live.join("tls.key"), client_ca_file: None };
    let m = AccessMetrics::default();
    let r = start(Access::new(Some(&cfg), None, m.clone()).unwrap()).await;
    let healthz = format!("{}/healthz", r.base);
    assert_eq!(get(client(d, "ca1", None).get(&healthz)).await.unwrap().0, 200);
    assert!(get(client(d, "ca2", None).get(&healthz)).await.is_err(), "the ca2 certificate is not served yet");

    for (from, to) in [("server2.pem", "tls.crt"), ("server2.key", "tls.key")] {
        std::fs::copy(d.join(from), live.join(format!("{to}.new"))).unwrap();
        std::fs::rename(live.join(format!("{to}.new")), live.join(to)).unwrap();
    }
    // Positive signal: a client trusting only the new CA gets through (checks are at most every
    // RELOAD_CHECK; generous bound for a loaded machine).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match get(client(d, "ca2", None).get(&healthz)).await {
            Ok((200, _, _)) => break,
            other => assert!(Instant::now() < deadline, "the new certificate was never served: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And the old one is no longer served.
    assert!(get(client(d, "ca1", None).get(&healthz)).await.is_err());
    assert!(m.tls_reloads_ok.get() >= 1);
    r.server.stop().await;
}

fn vigil_with(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vigil.yaml");
    std::fs::write(&path, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_vigil")).args(["run", "--config"]).arg(&path).output().unwrap()
}

#[test]
fn bad_access_config_exits_1_before_starting_naming_the_field() {
    let base = "sinks: [{name: out, type: stdout}]\nsources: {containers: {include: [/nonexistent/*.log], checkpoint_dir: /nonexistent/state}}\n";
    let cases = [
        (
            "metrics: {listen: '127.0.0.1:0', tls: {cert_file: /nonexistent/tls.crt, key_file: /nonexistent/tls.key}}",
            "metrics.tls.cert_file: /nonexistent/tls.crt: cannot read it",
        ),
        (
            "metrics: {listen: '127.0.0.1:0', auth: {basic: {username: p, password_file: /nonexistent/pw}}}",
            "metrics.auth.basic.password_file: /nonexistent/pw: cannot read it",
        ),
        (
            "metrics: {listen: '127.0.0.1:0', auth: {basic: {username: p, password_file: /x}, bearer_token_file: /y}}",
            "metrics.auth: sets both basic and bearer_token_file",
        ),
        ("metrics: {listen: '127.0.0.1:0', tls: {cert_file: /x}}", "metrics.tls: missing field `key_file`"),
    ];
    for (metrics, want) in cases {
        let out = vigil_with(&format!("{base}{metrics}\n"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{metrics}: {stderr}");
        assert!(stderr.contains(want), "{metrics}: want {want:?} in:\n{stderr}");
    }
}
