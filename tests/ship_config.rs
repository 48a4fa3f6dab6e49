//! Config contract of metrics shipping: `metrics.ship` and the `prometheus_remote_write` sink.

mod support;

use std::process::Command;
use vigil::config::{Config, Error};

fn no_env(_: &str) -> Option<String> {
    None
}

fn errors(yaml: &str) -> Vec<String> {
    match Config::from_yaml(yaml, &no_env) {
        Err(Error::Invalid(e)) => e,
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(c) => panic!("config should be invalid: {c:?}"),
    }
}

const SINKS: &str = "
sinks:
  - name: central
    type: prometheus_remote_write
    endpoint: http://prometheus.monitoring:9090/api/v1/write
    external_labels: {cluster: prod}
  - name: es
    type: elasticsearch
    endpoint: https://es.logging:9200
    index: logs-vigil-%Y.%m.%d
    metrics_index: metrics-vigil-%Y.%m.%d
  - name: loki
    type: loki
    endpoint: http://loki.logging:3100
  - name: out
    type: file
    path: /tmp/x
";

#[test]
fn the_issue_contract_parses_and_only_log_sinks_carry_logs() {
    let c = Config::from_yaml(
        &format!("{SINKS}\nmetrics:\n  listen: 0.0.0.0:9102\n  ship:\n    interval: 15s\n    sinks: [central, es]\n"),
        &no_env,
    )
    .unwrap();
    assert_eq!(c.metrics.ship.interval.get(), std::time::Duration::from_secs(15));
    assert_eq!(c.metrics.ship.sinks, vec!["central", "es"]);
    let logs: Vec<&str> = c.sinks.iter().filter(|s| s.carries_logs()).map(|s| s.name()).collect();
    assert_eq!(logs, vec!["es", "loki", "out"]);
    let metrics: Vec<&str> = c.sinks.iter().filter(|s| s.carries_metrics()).map(|s| s.name()).collect();
    assert_eq!(metrics, vec!["central", "es"]);
}

#[test]
fn shipping_is_off_by_default() {
    let c = Config::from_yaml("node_name: n\n", &no_env).unwrap();
    assert!(c.metrics.ship.sinks.is_empty());
    assert_eq!(c.metrics.ship.interval.get(), std::time::Duration::from_secs(15));
}

#[test]
fn a_sink_that_cannot_carry_metrics_is_an_error_that_says_so() {
    let e = errors(&format!("{SINKS}\nmetrics:\n  ship:\n    sinks: [central, loki, out]\n"));
    assert_eq!(
        e,
        vec![
            "metrics.ship.sinks[1]: sink 'loki' is of type loki, which cannot carry metrics; use a sink of type \
             prometheus_remote_write, elasticsearch or otlp",
            "metrics.ship.sinks[2]: sink 'out' is of type file, which cannot carry metrics; use a sink of type \
             prometheus_remote_write, elasticsearch or otlp",
        ]
    );
}

#[test]
fn an_unknown_sink_name_is_an_error_listing_the_candidates() {
    let e = errors(&format!("{SINKS}\nmetrics:\n  ship:\n    sinks: [central, centrall]\n"));
    assert_eq!(
        e,
        vec!["metrics.ship.sinks[1]: 'centrall' is not the name of a sink under sinks:; expected one of: central, es"]
    );
}

#[test]
fn a_remote_write_sink_not_listed_for_shipping_would_get_nothing() {
    let e = errors(&format!("{SINKS}\n"));
    assert_eq!(
        e,
        vec![
            "sinks[0]: sink 'central' of type prometheus_remote_write carries metrics only but is not listed under \
             metrics.ship.sinks, so it would receive nothing; add it there"
        ]
    );
}

#[test]
fn remote_write_keys_are_checked_with_their_path() {
    let e = errors(
        "sinks:\n  - name: central\n    type: prometheus_remote_write\n    endpoint: prometheus:9090\n    \
         external_labels: {app.kubernetes.io/name: x}\n    queue_max_samples: 0\n\
         metrics:\n  ship:\n    interval: 500ms\n    sinks: [central]\n",
    );
    let all = e.join("\n");
    assert!(all.contains("sinks[0].endpoint: 'prometheus:9090' is not a URL"), "{all}");
    assert!(
        all.contains("sinks[0].external_labels.app.kubernetes.io/name: 'app.kubernetes.io/name' is not a label name"),
        "{all}"
    );
    assert!(all.contains("sinks[0].queue_max_samples: is 0"), "{all}");
    assert!(all.contains("metrics.ship.interval: '500ms' is below 1s"), "{all}");
    assert_eq!(e.len(), 4, "{all}");
}

#[test]
fn a_bad_metrics_index_is_reported_with_its_path() {
    let e = errors(
        "sinks:\n  - name: es\n    type: elasticsearch\n    endpoint: http://es:9200\n    metrics_index: Metrics-%Y\n\
         metrics:\n  ship:\n    sinks: [es]\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("sinks[0].metrics_index: 'Metrics-%Y' renders as 'Metrics-2026'"), "{e:?}");
}

#[test]
fn validate_masks_remote_write_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "sinks:\n  - name: central\n    type: prometheus_remote_write\n    endpoint: https://mimir/api/v1/push\n    \
         tenant_id: tenant-s3cret\n    auth: {username: u, password: pw-s3cret}\n    \
         headers: {X-Token: hdr-s3cret}\nmetrics:\n  ship: {sinks: [central]}\n",
    )
    .unwrap();
    let out = Command::new(support::vigil_bin()).args(["validate", "--config"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("type: prometheus_remote_write"), "{stdout}");
    assert!(!stdout.contains("s3cret"), "a secret was printed:\n{stdout}");
}
