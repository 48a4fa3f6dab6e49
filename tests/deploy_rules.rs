//! manifests/optional/prometheusrule.yaml: the alert rules on vigil's node metrics. The
//! PrometheusRule is a CRD kubernetes-validate has no schema for (deploy_manifests.rs skips only
//! that part), so its structure is checked here; its groups go through `promtool check rules`;
//! every metric a rule uses must be one vigil exports (on the fixture node, which has md arrays,
//! bonding and a textfile directory); and `promtool test rules` fires the storage, RAID,
//! bonding, OOM and textfile alerts on series copied from vigil's own output.

mod deploy_support;

use deploy_support::*;
use serde_json::Value;
use std::collections::BTreeSet;

fn rule_object() -> Value {
    prometheus_rule("manifests/optional/prometheusrule.yaml")
}

#[test]
fn the_prometheusrule_is_well_formed_for_the_operator_and_the_deployment() {
    let r = rule_object();
    assert_eq!(r["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(r["kind"], "PrometheusRule");
    let objs = kustomize(&root().join("manifests")).expect("render");
    let ds = the(&objs, "DaemonSet");
    assert_eq!(str_at(&r, &["metadata", "namespace"]), str_at(ds, &["metadata", "namespace"]));
    assert!(selects(&labels(&r, &["metadata", "labels"]), &labels(ds, &["metadata", "labels"])));
    // The job every rule selects is the one the ServiceMonitor gives vigil's series.
    let sm = &yaml_file(&root().join("manifests/optional/servicemonitor.yaml"))[0];
    let job = str_at(the(&objs, "Service"), &["metadata", "labels", &str_at(sm, &["spec", "jobLabel"])]);
    let spec = r["spec"].as_object().expect("spec");
    assert_eq!(spec.keys().collect::<Vec<_>>(), ["groups"], "the CRD's spec has only groups");
    let mut names = BTreeSet::new();
    for g in r["spec"]["groups"].as_array().expect("groups") {
        let keys: BTreeSet<&str> = g.as_object().expect("group").keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["name", "rules"]), "{g}");
    }
    for rule in rules(&r) {
        let name = str_at(rule, &["alert"]);
        assert!(names.insert(name.clone()), "{name} twice");
        let allowed = BTreeSet::from(["alert", "expr", "for", "labels", "annotations"]);
        for k in rule.as_object().expect("rule").keys() {
            assert!(allowed.contains(k.as_str()), "{name}: unknown key {k}");
        }
        let severity = str_at(rule, &["labels", "severity"]);
        assert!(severity == "warning" || severity == "critical", "{name}: severity {severity}");
        assert!(!str_at(rule, &["annotations", "summary"]).is_empty(), "{name}: summary");
        assert!(!str_at(rule, &["annotations", "description"]).is_empty(), "{name}: description");
        let expr = str_at(rule, &["expr"]);
        for selector in metric_selectors(&expr) {
            assert!(selector.contains(&format!("job=\"{job}\"")), "{name}: {selector} lacks job=\"{job}\"");
        }
    }
    assert!(names.len() >= 20, "{names:?}");
}

/// `metric{...}` selectors of an expression (metric names start with node_).
fn metric_selectors(expr: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\b(node_[a-zA-Z0-9_]+)(\{[^}]*\})?").expect("regex");
    re.captures_iter(expr).map(|c| c[0].to_string()).collect()
}

fn metric_names(expr: &str) -> BTreeSet<String> {
    metric_selectors(expr).into_iter().map(|s| s.split('{').next().expect("name").to_string()).collect()
}

#[test]
fn the_rule_groups_pass_promtool_check_rules() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write_rule_file(&rule_object(), dir.path(), true);
    let out = tool("promtool", &["check", "rules", &file.display().to_string()], dir.path());
    let report = text(&out);
    assert!(out.status.success(), "promtool check rules:\n{report}");
    let n = rules(&rule_object()).len();
    assert!(report.contains(&format!("SUCCESS: {n} rules found")), "{report}");
}

/// vigil's /metrics on the fixture node: every collector, and a textfile directory.
fn vigil_exposition() -> String {
    let fixture = root().join("tests/fixtures/node");
    let textfiles = tempfile::tempdir().expect("temp dir");
    std::fs::write(textfiles.path().join("bad.prom"), "x 1 1700000000000\n").expect("write");
    let cfg = vigil::metrics::node::config::NodeMetricsConfig {
        rootfs: fixture.display().to_string(),
        textfile_directory: Some(textfiles.path().display().to_string()),
        ..Default::default()
    };
    let registry = prometheus::Registry::new();
    registry.register(Box::new(vigil::metrics::node::NodeCollector::new(&cfg).expect("collector"))).expect("register");
    String::from_utf8(vigil::server::render(&registry)).expect("utf-8")
}

#[test]
fn every_metric_the_rules_use_is_exported_by_vigil() {
    let exposition = vigil_exposition();
    let exported: BTreeSet<&str> =
        exposition.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    let r = rule_object();
    let mut missing = Vec::new();
    for rule in rules(&r) {
        for m in metric_names(&str_at(rule, &["expr"])) {
            if !exported.contains(m.as_str()) {
                missing.push(format!("{}: {m}", str_at(rule, &["alert"])));
            }
        }
    }
    assert!(missing.is_empty(), "rules use metrics vigil does not export:\n{}", missing.join("\n"));
}

/// A series line of vigil's output as a promtool input series with job/instance added.
fn input_series(exposition: &str, series: &str, values: &str) -> String {
    let line = exposition
        .lines()
        .find(|l| l.rsplit_once(' ').is_some_and(|(s, _)| s == series))
        .unwrap_or_else(|| panic!("vigil does not export {series}"));
    let (s, _) = line.rsplit_once(' ').expect("value");
    let with = match s.split_once('{') {
        Some((name, rest)) => format!("{name}{{job=\"vigil\",instance=\"n1\",{rest}"),
        None => format!("{s}{{job=\"vigil\",instance=\"n1\"}}"),
    };
    format!("      - series: '{with}'\n        values: '{values}'\n")
}

#[test]
fn alerts_fire_on_the_series_vigil_exports() {
    let e = vigil_exposition();
    let dir = tempfile::tempdir().expect("temp dir");
    let rule_file = write_rule_file(&rule_object(), dir.path(), false);
    // Values: what the fixture node shows (md1 3 required, 2 active, 1 failed; bond0 1 of 2
    // slaves up; a rejected textfile), held for an hour; plus OOM kills and a filesystem
    // that turns read-only, moved from vigil's fixture values.
    let series = [
        input_series(&e, r#"node_md_disks_required{device="md1"}"#, "3x60"),
        input_series(&e, r#"node_md_disks{device="md1",state="active"}"#, "2x60"),
        input_series(&e, r#"node_md_disks{device="md1",state="failed"}"#, "1x60"),
        input_series(&e, r#"node_bonding_slaves{master="bond0"}"#, "2x60"),
        input_series(&e, r#"node_bonding_active{master="bond0"}"#, "1x60"),
        input_series(&e, "node_textfile_scrape_error", "1x60"),
        input_series(&e, "node_vmstat_oom_kill", "3 3 3 4 4 4x60"),
        input_series(&e, r#"node_filesystem_readonly{device="/dev/sda2",fstype="ext4",mountpoint="/"}"#, "0x70 1x10"),
    ];
    // (eval time, alert, the labels of the one alert expected, or none expected).
    let expect: [(&str, &str, Option<&str>); 8] = [
        ("20m", "NodeRAIDDegraded", Some("severity: critical, device: md1")),
        ("20m", "NodeRAIDDiskFailure", Some("severity: warning, device: md1, state: failed")),
        ("20m", "NodeBondingDegraded", Some("severity: warning, master: bond0")),
        ("20m", "NodeTextFileCollectorScrapeError", Some("severity: warning")),
        ("5m", "NodeOOMKillDetected", Some("severity: warning")),
        ("30m", "NodeOOMKillDetected", None),
        ("60m", "NodeFilesystemRemountedReadOnly", None),
        (
            "75m",
            "NodeFilesystemRemountedReadOnly",
            Some("severity: critical, device: /dev/sda2, fstype: ext4, mountpoint: /"),
        ),
    ];
    let mut test = format!(
        "rule_files: ['{}']\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{}    alert_rule_test:\n",
        rule_file.display(),
        series.concat()
    );
    for (at, alert, labels) in expect {
        test.push_str(&format!("      - eval_time: {at}\n        alertname: {alert}\n"));
        if let Some(l) = labels {
            test.push_str(&format!("        exp_alerts:\n          - exp_labels: {{job: vigil, instance: n1, {l}}}\n"));
        }
    }
    let test_file = dir.path().join("test.yaml");
    std::fs::write(&test_file, &test).expect("write test");
    let out = tool("promtool", &["test", "rules", &test_file.display().to_string()], dir.path());
    assert!(out.status.success(), "promtool test rules:\n{}\n{test}", text(&out));
}
