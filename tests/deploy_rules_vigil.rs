//! manifests/optional/prometheusrule-vigil.yaml: the alerts on vigil itself. Its structure is
//! checked as the Prometheus Operator reads it, its groups go through `promtool check rules`,
//! every alert has a runbook section in README.md, and `promtool test rules` makes each alert
//! fire on synthetic series (and not fire on healthy ones). That every `vigil_*` metric the
//! rules use is exported by a fresh vigil is checked in deploy_dashboards.rs.

mod deploy_support;

use deploy_support::*;
use serde_json::Value;
use std::collections::BTreeSet;

const FILE: &str = "manifests/optional/prometheusrule-vigil.yaml";

fn rule_object() -> Value {
    prometheus_rule(FILE)
}

/// The six alerts the issue asks for (issue 13, "Alerts for vigil itself").
const ALERTS: [&str; 6] = [
    "VigilSinkUnhealthy",
    "VigilLogLinesDropped",
    "VigilLogLagGrowing",
    "VigilCheckpointWritesFailing",
    "VigilConfigReloadFailing",
    "VigilDaemonSetNotOnEveryNode",
];

#[test]
fn the_vigil_prometheusrule_is_well_formed_and_every_alert_has_a_runbook_in_the_readme() {
    let r = rule_object();
    assert_eq!(r["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(r["kind"], "PrometheusRule");
    let objs = kustomize(&root().join("manifests")).expect("render");
    let ds = the(&objs, "DaemonSet");
    let ns = str_at(ds, &["metadata", "namespace"]);
    assert_eq!(str_at(&r, &["metadata", "namespace"]), ns);
    assert!(selects(&labels(&r, &["metadata", "labels"]), &labels(ds, &["metadata", "labels"])));
    let readme = read(&root().join("README.md"));
    // GitHub's heading anchors: lower case, spaces to '-', punctuation dropped.
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let re = regex::Regex::new(r"\b((?:vigil|kube)_[a-z_]+)(\{[^}]*\})").expect("regex");
    let mut names = Vec::new();
    for rule in rules(&r) {
        let name = str_at(rule, &["alert"]);
        let allowed = BTreeSet::from(["alert", "expr", "for", "labels", "annotations"]);
        for k in rule.as_object().expect("rule").keys() {
            assert!(allowed.contains(k.as_str()), "{name}: unknown key {k}");
        }
        assert_eq!(str_at(rule, &["labels", "severity"]), "warning", "{name}");
        assert!(!str_at(rule, &["annotations", "summary"]).is_empty(), "{name}: summary");
        assert!(!str_at(rule, &["annotations", "description"]).is_empty(), "{name}: description");
        let runbook = str_at(rule, &["annotations", "runbook_url"]);
        let anchor = runbook.strip_prefix("README.md#").unwrap_or_else(|| panic!("{name}: runbook_url {runbook}"));
        assert_eq!(anchor, format!("runbook-{}", name.to_lowercase()), "{name}");
        assert!(anchors.contains(anchor), "{name}: README.md has no section `Runbook: {name}` (#{anchor})");
        let expr = str_at(rule, &["expr"]);
        // vigil's series carry the job the ServiceMonitor gives them; the DaemonSet's status
        // comes from kube-state-metrics, for this namespace and DaemonSet.
        let mut selectors = 0;
        for c in re.captures_iter(&expr) {
            selectors += 1;
            if c[1].starts_with("vigil_") {
                assert!(c[2].contains("job=\"vigil\""), "{name}: {} lacks job=\"vigil\"", &c[0]);
            } else {
                let want = format!("namespace=\"{ns}\",daemonset=\"{}\"", str_at(ds, &["metadata", "name"]));
                assert!(c[2].contains(&want), "{name}: {} lacks {want}", &c[0]);
            }
        }
        assert!(selectors > 0, "{name}: no selector in {expr}");
        names.push(name);
    }
    assert_eq!(names, ALERTS);
}

#[test]
fn the_vigil_rule_groups_pass_promtool_check_rules() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write_rule_file(&rule_object(), dir.path(), true);
    let out = tool("promtool", &["check", "rules", &file.display().to_string()], dir.path());
    let report = text(&out);
    assert!(out.status.success(), "promtool check rules:\n{report}");
    assert!(report.contains(&format!("SUCCESS: {} rules found", ALERTS.len())), "{report}");
}

/// Each alert fires on series that show its problem, on the labels it promises, and stays quiet
/// on a healthy node (node `ok`) and before its `for` has passed.
#[test]
fn each_vigil_alert_fires_on_synthetic_series_and_not_on_healthy_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rule_file = write_rule_file(&rule_object(), dir.path(), false);
    let v = |series: &str, instance: &str, values: &str| {
        let (name, rest) = series.split_once('{').unwrap_or((series, "}"));
        let sep = if rest == "}" { "" } else { "," };
        format!(
            "      - series: '{name}{{job=\"vigil\",instance=\"{instance}\"{sep}{rest}'\n        values: '{values}'\n"
        )
    };
    let ksm = |metric: &str, values: &str| {
        format!(
            "      - series: '{metric}{{job=\"kube-state-metrics\",namespace=\"vigil\",daemonset=\"vigil\"}}'\n        values: '{values}'\n"
        )
    };
    let mib = 1024 * 1024;
    // Node `bad` has every problem from minute 10 on; node `ok` none.
    let lag_bad: Vec<String> = (0..=60).map(|m| (if m < 10 { 0 } else { (m - 9) * 10 * mib }).to_string()).collect();
    let series = [
        v(r#"vigil_sink_healthy{sink="loki"}"#, "bad", "1x9 0x51"),
        v(r#"vigil_sink_healthy{sink="loki"}"#, "ok", "1x60"),
        v(r#"vigil_deleted_bytes_dropped_total{cause="max_unread"}"#, "bad", "0x9 4096x51"),
        v(r#"vigil_deleted_bytes_dropped_total{cause="max_unread"}"#, "ok", "0x60"),
        v("vigil_lag_bytes", "bad", &lag_bad.join(" ")),
        v("vigil_lag_bytes", "ok", &format!("{}x60", 200 * mib)),
        v("vigil_checkpoint_failures_total", "bad", "0x9 1+1x51"),
        v("vigil_checkpoint_failures_total", "ok", "0x60"),
        v("vigil_config_last_reload_successful", "bad", "1x9 0x51"),
        v("vigil_config_last_reload_successful", "ok", "1x60"),
        ksm("kube_daemonset_status_desired_number_scheduled", "3x60"),
        ksm("kube_daemonset_status_number_available", "3x9 2x51"),
    ];
    let bad = "job: vigil, instance: bad";
    let ds = "job: kube-state-metrics, namespace: vigil, daemonset: vigil";
    // (eval time, alert, labels of the one alert expected, or none).
    let expect: Vec<(&str, &str, Option<String>)> = vec![
        ("12m", "VigilSinkUnhealthy", None),
        ("16m", "VigilSinkUnhealthy", Some(format!("{bad}, sink: loki"))),
        ("9m", "VigilLogLinesDropped", None),
        ("12m", "VigilLogLinesDropped", Some(format!("{bad}, cause: max_unread"))),
        ("40m", "VigilLogLinesDropped", None),
        ("20m", "VigilLogLagGrowing", None),
        ("45m", "VigilLogLagGrowing", Some(bad.to_string())),
        ("15m", "VigilCheckpointWritesFailing", None),
        ("25m", "VigilCheckpointWritesFailing", Some(bad.to_string())),
        ("12m", "VigilConfigReloadFailing", None),
        ("16m", "VigilConfigReloadFailing", Some(bad.to_string())),
        ("20m", "VigilDaemonSetNotOnEveryNode", None),
        ("30m", "VigilDaemonSetNotOnEveryNode", Some(ds.to_string())),
    ];
    let mut test = format!(
        "rule_files: ['{}']\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{}    alert_rule_test:\n",
        rule_file.display(),
        series.concat()
    );
    for (at, alert, labels) in &expect {
        test.push_str(&format!("      - eval_time: {at}\n        alertname: {alert}\n"));
        if let Some(l) = labels {
            test.push_str(&format!("        exp_alerts:\n          - exp_labels: {{severity: warning, {l}}}\n"));
        }
    }
    let fired: BTreeSet<&str> = expect.iter().filter(|e| e.2.is_some()).map(|e| e.1).collect();
    assert_eq!(fired, BTreeSet::from(ALERTS), "every alert is made to fire once");
    let test_file = dir.path().join("test.yaml");
    std::fs::write(&test_file, &test).expect("write test");
    let out = tool("promtool", &["test", "rules", &test_file.display().to_string()], dir.path());
    assert!(out.status.success(), "promtool test rules:\n{}\n{test}", text(&out));
}
