//! Config contract: every bad input gives its exact error, env expansion, defaults.

use vigil::config::{Config, Error};

fn env(name: &str) -> Option<String> {
    match name {
        "NODE_NAME" => Some("node-7".into()),
        "LOKI_TENANT" => Some("team-a".into()),
        _ => None,
    }
}

fn errors(yaml: &str) -> Vec<String> {
    match Config::from_yaml(yaml, &env) {
        Err(Error::Invalid(e)) => e,
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(c) => panic!("config should be invalid: {c:?}"),
    }
}

fn one_error(yaml: &str) -> String {
    let e = errors(yaml);
    assert_eq!(e.len(), 1, "{e:?}");
    e.into_iter().next().unwrap()
}

#[test]
fn the_embedded_default_is_valid_and_sensible() {
    let c = Config::load(None, &env).unwrap();
    assert_eq!(c.node_name, "node-7");
    assert_eq!(c.metrics.listen, "0.0.0.0:9102");
    assert_eq!(c.sources.containers.checkpoint_dir, "/var/lib/vigil");
    assert!(c.sources.containers.include.iter().any(|g| g.starts_with("/var/log/pods/")));
    assert_eq!(c.sinks.len(), 1);
    assert_eq!(c.sinks[0].name(), "stdout");
}

#[test]
fn the_issue_contract_parses() {
    let c = Config::from_yaml(
        r#"
node_name: ${NODE_NAME:-}
sources:
  containers:
    include: ["/var/log/pods/*/*/*.log", "/var/lib/docker/containers/*/*-json.log"]
    exclude: []
    read_from: end
    checkpoint_dir: /var/lib/vigil
sinks:
  - name: debug
    type: file
    path: /tmp/vigil-events.ndjson
metrics:
  listen: 0.0.0.0:9102
log:
  level: debug
  format: json
"#,
        &env,
    )
    .unwrap();
    assert_eq!(c.node_name, "node-7");
    assert_eq!(c.sources.containers.read_from, vigil::logs::config::ReadFrom::End);
    assert_eq!(c.log.format, vigil::config::LogFormat::Json);
    assert_eq!(c.sinks[0].name(), "debug");
}

#[test]
fn empty_node_name_means_the_host_name() {
    let c = Config::from_yaml("node_name: ''\n", &env).unwrap();
    assert!(!c.node_name.is_empty());
    assert_eq!(c.node_name, vigil::config::hostname());
}

#[test]
fn unknown_key_names_its_path() {
    let e = one_error("metrics:\n  listen: 0.0.0.0:9102\n  lisen: x\n");
    assert!(
        e.starts_with(
            "metrics.lisen: unknown field `lisen`, expected one of `listen`, `node`, `ship`, `tls`, `auth` at line 3"
        ),
        "{e}"
    );
    let e = one_error("sinks:\n  - name: a\n    type: file\n    path: /tmp/x\n    colour: red\n");
    assert!(e.contains("unknown field `colour`"), "{e}");
    assert!(e.starts_with("sinks[0]"), "{e}");
}

#[test]
fn wrong_type_names_its_path() {
    let e = one_error("sources:\n  containers:\n    include: 5\n");
    assert!(e.starts_with("sources.containers.include: invalid type: integer `5`, expected a sequence"), "{e}");
}

#[test]
fn unknown_sink_type() {
    let e = one_error("sinks:\n  - name: a\n    type: kafka\n");
    assert!(e.contains("unknown variant `kafka`"), "{e}");
    assert!(e.contains("stdout") && e.contains("loki") && e.contains("elasticsearch"), "{e}");
}

#[test]
fn bad_url() {
    let e = one_error("sinks:\n  - name: l\n    type: loki\n    endpoint: 'htp:/x'\n");
    assert_eq!(e, "sinks[0].endpoint: 'htp:/x' is not a URL; expected http(s)://host:port");
}

#[test]
fn duplicate_sink_names() {
    let e = one_error("sinks:\n  - {name: a, type: stdout}\n  - {name: a, type: file, path: /tmp/x}\n");
    assert_eq!(e, "sinks[1].name: 'a' is used by another sink; sink names must be unique");
}

#[test]
fn bad_duration() {
    let e = one_error("shutdown:\n  grace_period: 5 parsecs\n");
    assert!(e.starts_with("shutdown.grace_period: '5 parsecs' is not a duration"), "{e}");
    assert!(e.contains("expected e.g. 500ms, 5s, 1m30s"), "{e}");
}

#[test]
fn missing_env_var_without_default() {
    let e = one_error("node_name: ${NO_SUCH_VAR}\n");
    assert_eq!(
        e,
        "line 1: environment variable 'NO_SUCH_VAR' is not set and has no default; set it or write ${NO_SUCH_VAR:-default}"
    );
}

#[test]
fn env_expansion_with_defaults_and_secrets() {
    let c = Config::from_yaml(
        "sinks:\n  - name: l\n    type: loki\n    endpoint: ${LOKI_URL:-http://loki:3100}\n    tenant_id: ${LOKI_TENANT}\n",
        &env,
    )
    .unwrap();
    let yaml = c.to_yaml();
    assert!(yaml.contains("endpoint: http://loki:3100"), "{yaml}");
    assert!(!yaml.contains("team-a"), "secret leaked into the effective config:\n{yaml}");
    assert!(yaml.contains("tenant_id: '***'"), "{yaml}");
    assert!(!format!("{c:?}").contains("team-a"), "secret leaked into Debug");
}

/// `tenant_id: ${LOKI_TENANT:-}` with the variable unset expands to `tenant_id: ` (YAML null).
#[test]
fn an_unset_secret_expands_to_null_and_means_empty() {
    let c = Config::from_yaml(
        "sinks:\n  - name: l\n    type: loki\n    endpoint: http://loki:3100\n    tenant_id: ${NO_TENANT:-}\n",
        &env,
    )
    .unwrap();
    assert!(c.to_yaml().contains("tenant_id: ''"), "{}", c.to_yaml());
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let e = errors(
        "metrics:\n  listen: nowhere\nlog:\n  level: loud\nsinks:\n  - {name: a, type: loki, endpoint: 'ftp://x'}\n  - {name: a, type: stdout}\n",
    );
    assert_eq!(e.len(), 4, "{e:?}");
    assert!(e[0].starts_with("metrics.listen: 'nowhere' is not a socket address"), "{e:?}");
    assert!(e[1].starts_with("log.level: 'loud' is not a log level"), "{e:?}");
    assert!(e.iter().any(|m| m.starts_with("sinks[0].endpoint: 'ftp://x' is not a URL")), "{e:?}");
    assert!(e.iter().any(|m| m.starts_with("sinks[1].name: 'a' is used by another sink")), "{e:?}");
}

#[test]
fn no_sinks_is_an_error() {
    assert_eq!(
        one_error("sinks: []\n"),
        "sinks: no sink configured; add at least one, e.g. {name: stdout, type: stdout}"
    );
}
