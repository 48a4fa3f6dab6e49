use super::*;

/// The serde encoding of a document that `EsInner::document` replaced, kept as the oracle:
/// the documents' bytes are a contract (field names, order, escaping).
fn document_serde(
    labels: Option<&serde_json::Map<String, serde_json::Value>>,
    e: &Event,
    clock: &mut Rfc3339Cache,
    out: &mut Vec<u8>,
) {
    use serde::Serialize;
    #[derive(Serialize)]
    struct Doc<'a> {
        #[serde(rename = "@timestamp")]
        timestamp: &'a str,
        message: &'a str,
        stream: &'static str,
        kubernetes: Kubernetes<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        container: Option<Container<'a>>,
        host: Host<'a>,
        log: Log<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        labels: Option<&'a serde_json::Map<String, serde_json::Value>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tags: Vec<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        trace: Option<Id<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        span: Option<Id<'a>>,
        /// Parsed fields, de-dotted (capped at parse: `sources.containers.max_fields`).
        #[serde(skip_serializing_if = "Option::is_none")]
        fields: Option<serde_json::Map<String, serde_json::Value>>,
    }
    #[derive(Serialize)]
    struct Id<'a> {
        id: &'a str,
    }
    #[derive(Serialize)]
    struct Kubernetes<'a> {
        namespace: &'a str,
        pod: Pod<'a>,
        container: KContainer<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        labels: Option<Dedot<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        annotations: Option<Dedot<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        owner: Option<&'a crate::event::Owner>,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace_labels: Option<Dedot<'a>>,
    }
    /// A label map with de-dotted keys (as the sink's own `labels`), written without copying.
    struct Dedot<'a>(&'a crate::event::Labels);
    impl Serialize for Dedot<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut m = s.serialize_map(Some(self.0.len()))?;
            for (k, v) in self.0 {
                if k.contains('.') {
                    m.serialize_entry(&dedot(k), v)?;
                } else {
                    m.serialize_entry(k, v)?;
                }
            }
            m.end()
        }
    }
    #[derive(Serialize)]
    struct Pod<'a> {
        name: &'a str,
        uid: &'a str,
    }
    #[derive(Serialize)]
    struct KContainer<'a> {
        name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        restart_count: Option<u32>,
    }
    #[derive(Serialize)]
    struct Container<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        image: Option<Image<'a>>,
    }
    #[derive(Serialize)]
    struct Image<'a> {
        name: &'a str,
    }
    #[derive(Serialize)]
    struct Host<'a> {
        name: &'a str,
    }
    #[derive(Serialize)]
    struct Log<'a> {
        file: File<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        level: Option<&'a str>,
    }
    #[derive(Serialize)]
    struct File<'a> {
        path: &'a str,
    }
    let ts = clock.format(e.timestamp);
    let k = &e.source.kubernetes;
    let mut tags = Vec::new();
    if e.malformed {
        tags.push("malformed");
    }
    if e.truncated {
        tags.push("truncated");
    }
    let doc = Doc {
        timestamp: ts,
        message: &e.message,
        stream: e.stream.as_str(),
        kubernetes: Kubernetes {
            namespace: &k.namespace,
            pod: Pod { name: &k.pod, uid: &k.pod_uid },
            container: KContainer { name: &k.container, restart_count: k.restart_count },
            labels: k.api.as_deref().map(|a| Dedot(&a.labels)),
            annotations: k.api.as_deref().filter(|a| !a.annotations.is_empty()).map(|a| Dedot(&a.annotations)),
            owner: k.api.as_deref().and_then(|a| a.owner.as_ref()),
            namespace_labels: k.namespace_labels.as_deref().map(Dedot),
        },
        container: (k.container_id.is_some() || k.image.is_some())
            .then(|| Container { id: k.container_id.as_deref(), image: k.image.as_deref().map(|name| Image { name }) }),
        host: Host { name: &e.source.node },
        log: Log { file: File { path: &e.source.file }, level: e.level() },
        labels,
        tags,
        trace: e.parsed.as_ref().and_then(|p| p.trace_id.as_deref()).map(|id| Id { id }),
        span: e.parsed.as_ref().and_then(|p| p.span_id.as_deref()).map(|id| Id { id }),
        fields: e.parsed.as_ref().filter(|p| !p.fields.is_empty()).map(|p| {
            let mut m = serde_json::Map::new();
            for (k, v) in &p.fields {
                // `a.b` and `a_b` meet after de-dotting: the first is kept (a duplicate key
                // would make Elasticsearch refuse the document).
                m.entry(dedot(k)).or_insert_with(|| v.clone());
            }
            m
        }),
    };
    serde_json::to_writer(&mut *out, &doc).expect("writing JSON to a Vec cannot fail");
}

mod oracle {
    use super::*;
    use crate::event::{K8sMeta, Labels, Owner, Parsed, PodMeta, Source, Stream};
    use proptest::prelude::*;

    /// Any text, and text dense in what JSON escapes or de-dotting changes.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "[\"\\\\\\x00-\\x1f\\x7f.a-z_é\u{2028}\u{10FFFF}]{0,24}"]
    }

    fn labels() -> impl Strategy<Value = Labels> {
        // Keys that meet after de-dotting (`a.b`, `a_b`) included.
        let key = prop_oneof![
            text(),
            Just("a.b".to_string()),
            Just("a_b".to_string()),
            Just("app.kubernetes.io/name".to_string())
        ];
        proptest::collection::btree_map(key, text(), 0..4)
    }

    fn value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            text().prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(2, 12, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(text(), inner, 0..3)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn parsed() -> impl Strategy<Value = Option<Box<Parsed>>> {
        let key = prop_oneof![text(), Just("a.b".to_string()), Just("a_b".to_string()), Just("x.y.z".to_string())];
        proptest::option::of(
            (
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::collection::vec((key, value()), 0..5),
            )
                .prop_map(|(level, trace_id, span_id, fields)| {
                    Box::new(Parsed { level, trace_id, span_id, fields, raw: None })
                }),
        )
    }

    fn source() -> impl Strategy<Value = Source> {
        (
            (text(), text(), text(), text(), text(), text()),
            (proptest::option::of(text()), proptest::option::of(any::<u32>()), proptest::option::of(text())),
            proptest::option::of((labels(), labels(), proptest::option::of((text(), text())))),
            proptest::option::of(labels()),
        )
            .prop_map(
                |(
                    (file, node, namespace, pod, pod_uid, container),
                    (container_id, restart_count, image),
                    api,
                    ns_labels,
                )| Source {
                    file,
                    node: node.into(),
                    kubernetes: K8sMeta {
                        namespace,
                        pod,
                        pod_uid,
                        container,
                        container_id,
                        restart_count,
                        api: api.map(|(labels, annotations, owner)| {
                            Arc::new(PodMeta {
                                labels,
                                annotations,
                                owner: owner.map(|(kind, name)| Owner { kind, name }),
                                controls: [("vigil.io/exclude".to_string(), "true".to_string())].into(),
                            })
                        }),
                        image: image.map(Into::into),
                        namespace_labels: ns_labels.map(Arc::new),
                    },
                },
            )
    }

    fn event() -> impl Strategy<Value = Event> {
        (source(), text(), any::<i64>(), any::<(bool, bool, bool)>(), any::<(u64, u64)>(), parsed()).prop_map(
            |(source, message, timestamp, (stderr, malformed, truncated), (file, offset), parsed)| Event {
                timestamp,
                stream: if stderr { Stream::Stderr } else { Stream::Stdout },
                message,
                malformed,
                truncated,
                source: Arc::new(source),
                origin: crate::event::Origin { file, offset, resume: offset.wrapping_add(1) },
                parsed,
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// The direct encoder writes byte for byte what the serde encoding wrote: action
        /// lines (index, `document_id`) and documents, for any text in any field.
        #[test]
        fn direct_bulk_encoding_is_byte_for_byte_the_serde_one(
            events in proptest::collection::vec(event(), 1..4),
            sink_labels in proptest::collection::btree_map(text(), text(), 0..3),
            node in text(),
            index in prop_oneof![Just("logs-vigil-2026.11.28".to_string()), text()],
        ) {
            let mut c: ElasticsearchConfig = serde_yaml_ng::from_str("{name: es, endpoint: 'http://x'}").unwrap();
            c.labels = sink_labels;
            let ctx = crate::sinks::SinkContext::new(prometheus::Registry::new(), node.as_str().into()).unwrap();
            let inner = ElasticsearchSink::new(&c, &ctx).unwrap().inner;
            let labels = labels_object(&c);
            let (mut docs, mut cache) = (bulk::BulkDocs::with_capacity(0, 0), DocCache::default());
            let mut want = Vec::new();
            let mut oracle_clock = Rfc3339Cache::default();
            // Events of one file in a row, another file's in between, and back: the per-file
            // part of a document is written once per run of one file's events.
            let first = &events[0];
            let again = Event { message: format!("{}again", first.message), ..first.clone() };
            let events: Vec<&Event> = events.iter().chain([first, &again]).collect();
            for e in events {
                inner.push(&mut docs, &index, e, &mut cache);
                let id = document_id(fnv1a64(node.as_bytes()), e);
                bulk::write_action(&mut want, &bulk::BulkDoc { index: index.as_str().into(), id: Some(id), source: vec![] });
                document_serde(labels.as_ref(), e, &mut oracle_clock, &mut want);
                want.push(b'\n');
            }
            prop_assert_eq!(String::from_utf8_lossy(docs.body()), String::from_utf8_lossy(&want));
            prop_assert_eq!(docs.body(), &want[..]);
        }
    }
}

#[test]
fn index_patterns() {
    let p = IndexPattern::new("logs-vigil-%Y.%m.%d").unwrap();
    assert_eq!(p.granularity, Granularity::Day);
    // 2026-11-28T06:32:13Z
    assert_eq!(p.render(1_795_847_533_123_456_789), "logs-vigil-2026.11.28");
    assert_eq!(p.bucket(1_795_847_533), p.bucket(1_795_847_533 + 3600));
    let h = IndexPattern::new("logs-%Y.%m.%d-%H").unwrap();
    assert_eq!(h.granularity, Granularity::Second);
    assert_eq!(h.render(1_795_847_533_000_000_000), "logs-2026.11.28-06");
    assert_eq!(IndexPattern::new("static").unwrap().render(0), "static");
    assert!(IndexPattern::new("Logs-%Y").is_err(), "upper case is refused by Elasticsearch");
    assert!(IndexPattern::new("logs-%b").is_err(), "%b renders 'Nov'");
    assert!(IndexPattern::new("logs-%Q").is_err());
}

#[test]
fn cached_timestamps_match_the_event_contract() {
    let mut c = Rfc3339Cache::default();
    for ns in [0, 1_795_847_533_123_456_789, 1_795_847_533_000_000_001, 1_795_847_534_999_999_999, -1] {
        let mut want = String::new();
        crate::event::format_rfc3339_nanos(ns, &mut want);
        assert_eq!(c.format(ns), want, "{ns}");
    }
}

#[test]
fn documents_carry_the_api_metadata_dedotted() {
    let c: ElasticsearchConfig = serde_yaml_ng::from_str("{name: es, endpoint: 'http://x'}").unwrap();
    let ctx = crate::sinks::SinkContext::new(prometheus::Registry::new(), "node-a".into()).unwrap();
    let inner = ElasticsearchSink::new(&c, &ctx).unwrap().inner;
    let e = Event {
        timestamp: 1_795_847_533_000_000_000,
        stream: crate::event::Stream::Stdout,
        message: "m".into(),
        malformed: false,
        truncated: false,
        source: crate::event::test_source_with_api(),
        origin: crate::event::Origin { file: 1, offset: 0, resume: 1 },
        parsed: None,
    };
    let mut out = Vec::new();
    inner.document(&e, &mut DocCache::default(), &mut out);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let k = &v["kubernetes"];
    assert_eq!(k["labels"], serde_json::json!({"app_kubernetes_io/name": "web", "tier": "front"}));
    assert_eq!(k["annotations"], serde_json::json!({"team": "checkout"}));
    assert_eq!(k["owner"], serde_json::json!({"kind": "Deployment", "name": "web"}));
    assert_eq!(k["namespace_labels"], serde_json::json!({"env": "prod"}));
    assert_eq!(v["container"]["image"]["name"], "registry.example.com/shop/web:1.2");
    assert!(v["container"].get("id").is_none());
}

#[test]
fn dedot_keys() {
    assert_eq!(dedot("app.kubernetes.io/name"), "app_kubernetes_io/name");
    assert_eq!(dedot("app"), "app");
}

/// Lines at other offsets, in other file contents (a truncated file's new content has a
/// key of its own) or on other nodes get other ids, even with the same text; the same line
/// sent again gets the same id. (That the tailer gives new content a new key is tested in
/// `logs::tail`, and end to end in `tests/logs_elasticsearch.rs`.)
#[test]
fn different_lines_get_different_ids_and_a_resent_line_the_same() {
    let source = Arc::new(crate::event::Source {
        file: "/var/log/pods/a_b_c/d/0.log".into(),
        node: "n".into(),
        kubernetes: Default::default(),
    });
    let ev = |file, offset| Event {
        timestamp: 0,
        stream: crate::event::Stream::Stdout,
        message: "the same text".into(),
        malformed: false,
        truncated: false,
        source: source.clone(),
        origin: crate::event::Origin { file, offset, resume: offset + 10 },
        parsed: None,
    };
    let (n1, n2) = (fnv1a64(b"node-1"), fnv1a64(b"node-2"));
    let lines = [(n1, 1, 0), (n1, 1, 10), (n1, 2, 0), (n1, 2, 10), (n2, 1, 0)];
    let ids: std::collections::HashSet<String> =
        lines.iter().map(|&(node, file, offset)| document_id(node, &ev(file, offset))).collect();
    assert_eq!(ids.len(), lines.len());
    assert_eq!(document_id(n1, &ev(2, 10)), document_id(n1, &ev(2, 10)));
    // Stable across versions: resends after an upgrade must still be 409s.
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn validation() {
    let yaml = r#"
name: es
endpoint: http://es:9200
index: logs-%Y
data_stream: Logs
labels: {a.b: x, a_b: y}
dead_letter_index: "bad index"
max_in_flight: 0
"#;
    let c: ElasticsearchConfig = serde_yaml_ng::from_str(yaml).unwrap();
    let mut p = Problems::default();
    c.validate("sinks[0]", &mut p);
    let text = p.0.join("\n");
    for needle in ["sinks[0].index", "sinks[0].dead_letter_index", "sinks[0].labels.a_b", "sinks[0].max_in_flight"] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
}
