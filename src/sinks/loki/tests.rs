#[test]
fn every_reject_reason_is_created_at_start() {
    let bodies = ["", "line too long", "entry too old", "out of order", "too far in future", "bad label"];
    for status in [400, 401, 413, 422] {
        for b in bodies {
            let r = super::reject_reason(status, b);
            assert!(super::REJECT_REASONS.contains(&r), "{r} ({status}, {b})");
        }
    }
}

use super::*;
use crate::config::Problems;

#[test]
fn labels_are_quoted_in_logql_syntax() {
    let s = render_labels(&[("a", "x\"y\\z\n"), ("b", "plain")]);
    assert_eq!(s, r#"{a="x\"y\\z\n", b="plain"}"#);
}

#[test]
fn stream_table_caps_and_expires() {
    let mut t = StreamTable::new(2);
    let t0 = Instant::now();
    assert!(t.admit("{a}", t0));
    assert!(t.admit("{b}", t0));
    assert!(!t.admit("{c}", t0));
    assert!(t.admit("{a}", t0), "a known stream is always admitted");
    let later = t0 + STREAM_IDLE + Duration::from_secs(61);
    assert!(t.admit("{a}", t0 + STREAM_IDLE - Duration::from_secs(1)));
    assert!(t.admit("{c}", later), "b expired, so c fits");
}

#[test]
fn reasons() {
    assert_eq!(reject_reason(400, "entry for stream '{a=\"b\"}' has timestamp too old"), "too_old");
    assert_eq!(reject_reason(400, "Max entry size '256' bytes exceeded ... line too long"), "line_too_long");
    assert_eq!(reject_reason(400, "something else"), "bad_request");
}

#[test]
fn partial_rejections() {
    let body = "entry with timestamp 1970-01-01 ignored, reason: 'entry too far behind',\n\
                user 'fake', total ignored: 2 out of 5 for stream: {a=\"b\"}\n\
                user 'fake', total ignored: 1 out of 3 for stream: {a=\"c\"}";
    assert_eq!(total_ignored(body), Some(3));
    assert_eq!(total_ignored("entry for stream '{a=\"b\"}' has timestamp too old"), None);
}

#[test]
fn pod_labels_become_labels_and_the_rest_structured_metadata() {
    let c: LokiConfig = serde_yaml_ng::from_str(
        "{name: l, endpoint: 'http://x', encoding: json, structured_metadata: [pod_uid, pod_labels, annotations, owner, image, namespace_labels]}",
    )
    .unwrap();
    let ctx = SinkContext::new(prometheus::Registry::new(), "node-a".into()).unwrap();
    let sink = LokiSink::new(&c, &ctx).unwrap();
    let e = Event {
        timestamp: 5,
        stream: Stream::Stdout,
        message: "m".into(),
        malformed: false,
        truncated: false,
        source: crate::event::test_source_with_api(),
        origin: crate::event::Origin { file: 1, offset: 0, resume: 1 },
        parsed: None,
    };
    let (body, _) = sink.inner.encode(&[&e]);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let stream = &v["streams"][0];
    // Default labels plus `app` from app.kubernetes.io/name; nothing else.
    assert_eq!(
        stream["stream"],
        serde_json::json!({"app": "web", "container": "app", "namespace": "shop", "node": "node-a", "pod": "web-1", "stream": "stdout"})
    );
    assert_eq!(
        stream["values"][0][2],
        serde_json::json!({"pod_uid": "u1", "pod_label_app_kubernetes_io_name": "web", "pod_label_tier": "front",
            "pod_annotation_team": "checkout", "owner_kind": "Deployment", "owner_name": "web",
            "image": "registry.example.com/shop/web:1.2", "namespace_label_env": "prod"})
    );
    // Without API metadata (kubernetes off, pod unknown) the label set is today's.
    let plain = Event {
        source: Arc::new(Source {
            kubernetes: crate::event::K8sMeta { api: None, ..e.source.kubernetes.clone() },
            ..(*e.source).clone()
        }),
        ..e.clone()
    };
    let pairs = sink.inner.label_pairs(&plain);
    assert!(pairs.iter().all(|(k, _)| *k != "app"), "{pairs:?}");
}

#[test]
fn pod_labels_config_is_checked() {
    let c: LokiConfig =
        serde_yaml_ng::from_str("{name: l, endpoint: 'http://x', pod_labels: {'a.b': x, pod: y, ok: ''}}").unwrap();
    let mut p = Problems::default();
    c.validate("sinks[0]", &mut p);
    let text = format!("{:?}", p.0);
    for needle in ["sinks[0].pod_labels.a.b", "sinks[0].pod_labels.pod", "sinks[0].pod_labels.ok"] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
}

#[test]
fn label_names() {
    assert!(crate::sinks::is_label_name("cluster"));
    assert!(crate::sinks::is_label_name("_x9"));
    assert!(!crate::sinks::is_label_name("9x"));
    assert!(!crate::sinks::is_label_name("app.kubernetes.io/name"));
}
