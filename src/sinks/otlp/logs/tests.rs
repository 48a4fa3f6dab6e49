use super::*;
use crate::event::{K8sMeta, Origin};

#[test]
fn api_metadata_becomes_resource_attributes() {
    let s = sink("{name: o, endpoint: 'http://x'}");
    let r = s.inner.resource(&crate::event::test_source_with_api());
    let attrs: Vec<(String, String)> = r
        .attributes
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::ArrayValue(a)) => format!(
                    "{:?}",
                    a.values
                        .iter()
                        .map(|v| match &v.value {
                            Some(any_value::Value::StringValue(s)) => s.clone(),
                            _ => String::new(),
                        })
                        .collect::<Vec<_>>()
                ),
                Some(any_value::Value::IntValue(i)) => format!("int:{i}"),
                _ => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect();
    for want in [
        ("k8s.pod.label.app.kubernetes.io/name", "web"),
        ("k8s.pod.label.tier", "front"),
        ("k8s.pod.annotation.team", "checkout"),
        ("k8s.deployment.name", "web"),
        ("container.image.name", "registry.example.com/shop/web"),
        ("container.image.tags", "[\"1.2\"]"),
        ("k8s.namespace.label.env", "prod"),
    ] {
        assert!(attrs.iter().any(|(k, v)| k == want.0 && v == want.1), "{want:?} in {attrs:?}");
    }
}

/// The lane is cached per source: equal containers in distinct sources (a rotated file, a
/// source rebuilt with new API metadata) and a source met again after another still get
/// the lane of their container, so its records stay in one lane, in order.
#[test]
fn a_containers_events_keep_one_lane_through_the_lane_cache() {
    let s = sink("{name: o, endpoint: 'http://x', max_in_flight: 4}");
    let d = &s.inner;
    let pods: Vec<String> = (0..32).map(|i| format!("web-{i}")).collect();
    let mut used = std::collections::HashSet::new();
    for pod in &pods {
        let a = source(pod, "/a/0.log", Some(0));
        let b = source(pod, "/a/1.log", Some(0));
        let other = source("other", "/o/0.log", None);
        let want = lane_of(&a, 4);
        for src in [&a, &a, &other, &a, &b, &b] {
            let got = d.lane(&event(src, 1, Stream::Stdout, "x"));
            if Arc::ptr_eq(src, &other) {
                assert_eq!(got, lane_of(&other, 4));
            } else {
                assert_eq!(got, want, "{pod}");
            }
        }
        used.insert(want);
    }
    assert!(used.len() > 1, "containers spread over the lanes: {used:?}");
    let one = sink("{name: o, endpoint: 'http://x', max_in_flight: 1}");
    assert_eq!(one.inner.lane(&event(&source("web-1", "/a/0.log", None), 1, Stream::Stdout, "x")), 0);
}

fn sink(yaml: &str) -> OtlpSink {
    let c: OtlpConfig = serde_yaml_ng::from_str(yaml).unwrap();
    let ctx = SinkContext::new(prometheus::Registry::new(), "node-a".into()).unwrap();
    OtlpSink::new(&c, &ctx).unwrap()
}

fn source(pod: &str, file: &str, restart: Option<u32>) -> Arc<Source> {
    Arc::new(Source {
        file: file.into(),
        node: "node-a".into(),
        kubernetes: K8sMeta {
            namespace: "shop".into(),
            pod: pod.into(),
            pod_uid: format!("uid-{pod}"),
            container: "app".into(),
            container_id: None,
            restart_count: restart,
            ..K8sMeta::default()
        },
    })
}

fn event(src: &Arc<Source>, ts: i64, stream: Stream, msg: &str) -> Event {
    Event {
        timestamp: ts,
        stream,
        message: msg.into(),
        malformed: false,
        truncated: false,
        source: src.clone(),
        origin: Origin { file: 1, offset: 0, resume: 1 },
        parsed: None,
    }
}

mod oracle {
    use super::*;
    use crate::event::Parsed;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "[a-f0-9\\x00\"é]{0,34}", Just(String::new())]
    }

    fn event(sources: Vec<Arc<Source>>) -> impl Strategy<Value = Event> {
        let value = prop_oneof![
            text().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            Just(serde_json::json!({"a": [1, "b"]})),
        ];
        let parsed = proptest::option::of(
            (
                proptest::option::of(prop_oneof![text(), Just("error".to_string()), Just("Info".to_string())]),
                proptest::option::of(prop_oneof![text(), "[0-9a-f]{32}"]),
                proptest::option::of(prop_oneof![text(), "[0-9a-f]{16}"]),
                proptest::collection::vec((text(), value), 0..3),
            )
                .prop_map(|(level, trace_id, span_id, fields)| {
                    Box::new(Parsed { level, trace_id, span_id, fields, raw: None })
                }),
        );
        (0..sources.len(), text(), any::<i64>(), any::<bool>(), parsed).prop_map(
            move |(src, message, timestamp, stderr, parsed)| Event {
                timestamp,
                stream: if stderr { Stream::Stderr } else { Stream::Stdout },
                message,
                malformed: false,
                truncated: false,
                source: sources[src].clone(),
                origin: Origin { file: 1, offset: 0, resume: 1 },
                parsed,
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// The direct encoder writes byte for byte what prost wrote for the same request:
        /// resources in first-seen order, records in read order, any text, parsed fields.
        #[test]
        fn direct_logs_encoding_is_byte_for_byte_the_prost_one(
            events in proptest::collection::vec(
                event(vec![
                    source("a", "/p/a/0.log", Some(0)),
                    source("b", "", None),
                    crate::event::test_source_with_api(),
                    source("a", "/p/a/0.log.1", Some(0)),
                ]),
                0..6,
            ),
            observed in prop_oneof![Just(0u64), any::<u64>()],
            by_stream: bool,
        ) {
            let yaml = format!(
                "{{name: o, endpoint: 'http://x', severity_from_stream: {by_stream}, resource_attributes: {{k8s.cluster.name: prod}}}}"
            );
            let s = sink(&yaml);
            let refs: Vec<(&Event, u64)> = events.iter().map(|e| (e, observed)).collect();
            prop_assert_eq!(s.inner.encode_raw(&refs), s.inner.request_messages(&refs).encode_to_vec());
        }
    }
}

fn attrs(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => format!("int:{i}"),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

#[test]
fn one_resource_per_container_even_across_rotated_files() {
    let s = sink("{name: o, endpoint: 'http://x', resource_attributes: {k8s.cluster.name: prod}}");
    let a0 = source("a", "/var/log/pods/shop_a_uid-a/app/0.log", Some(0));
    // The same container's file after rotation: another `Source`, the same resource.
    let a0_rotated = source("a", "/var/log/pods/shop_a_uid-a/app/0.log.20261129-101500", Some(0));
    let b = source("b", "/var/log/pods/shop_b_uid-b/app/2.log", Some(2));
    let evs = [
        event(&a0_rotated, 1, Stream::Stdout, "a1"),
        event(&b, 2, Stream::Stderr, "b1"),
        event(&a0, 3, Stream::Stdout, "a2"),
    ];
    let refs: Vec<(&Event, u64)> = evs.iter().map(|e| (e, 99)).collect();
    let req = s.inner.request(&refs);
    assert_eq!(req.resource_logs.len(), 2);
    let ra = &req.resource_logs[0];
    assert_eq!(
        attrs(&ra.resource.as_ref().unwrap().attributes),
        vec![
            ("k8s.namespace.name".into(), "shop".into()),
            ("k8s.pod.name".into(), "a".into()),
            ("k8s.pod.uid".into(), "uid-a".into()),
            ("k8s.container.name".into(), "app".into()),
            ("k8s.container.restart_count".into(), "int:0".into()),
            ("k8s.node.name".into(), "node-a".into()),
            ("k8s.cluster.name".into(), "prod".into()),
        ]
    );
    let records = &ra.scope_logs[0].log_records;
    let bodies: Vec<_> = records.iter().map(|r| r.body.clone().unwrap().value.unwrap()).collect();
    assert_eq!(bodies, vec![any_value::Value::StringValue("a1".into()), any_value::Value::StringValue("a2".into())]);
    assert_eq!(
        attrs(&records[1].attributes),
        vec![
            ("log.iostream".into(), "stdout".into()),
            ("log.file.path".into(), "/var/log/pods/shop_a_uid-a/app/0.log".into())
        ]
    );
    assert_eq!((records[0].time_unix_nano, records[0].observed_time_unix_nano), (1, 99));
    assert_eq!(ra.scope_logs[0].scope.as_ref().unwrap().name, "vigil");
    let rb = &req.resource_logs[1].scope_logs[0].log_records[0];
    assert_eq!(rb.severity_number, SeverityNumber::Unspecified as i32, "stderr is not WARN unless configured");
    assert_eq!(rb.severity_text, "");
}

/// (field number, wire type) of each top-level field of a protobuf message, read by hand.
fn fields(mut buf: &[u8]) -> Vec<(u32, prost::encoding::WireType, Vec<u8>)> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (tag, wt) = decode_key(&mut buf).unwrap();
        let len = match wt {
            WireType::Varint => {
                let v = decode_varint(&mut buf).unwrap();
                out.push((tag, wt, v.to_le_bytes().to_vec()));
                continue;
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => decode_varint(&mut buf).unwrap() as usize,
            other => panic!("unexpected wire type {other:?}"),
        };
        out.push((tag, wt, buf[..len].to_vec()));
        buf = &buf[len..];
    }
    out
}

#[test]
fn the_wire_format_has_the_field_numbers_of_the_otlp_spec() {
    // Independent of the generated structs: field numbers and wire types as
    // opentelemetry-proto's logs.proto defines them (REFERENCE §9).
    use prost::encoding::WireType::{LengthDelimited, SixtyFourBit, Varint};
    let s = sink("{name: o, endpoint: 'http://x', severity_from_stream: true}");
    let src = source("a", "/f.log", Some(3));
    let evs = [event(&src, 0x0102_0304_0506_0708, Stream::Stderr, "hello")];
    let refs: Vec<(&Event, u64)> = evs.iter().map(|e| (e, 0x1111_2222_3333_4444)).collect();
    let bytes = s.inner.request(&refs).encode_to_vec();
    let resource_logs = fields(&bytes);
    assert_eq!((resource_logs[0].0, resource_logs[0].1), (1, LengthDelimited), "resource_logs = 1");
    let rl = fields(&resource_logs[0].2);
    assert_eq!(rl.iter().map(|f| f.0).collect::<Vec<_>>(), [1, 2], "resource = 1, scope_logs = 2");
    let scope_logs = fields(&rl[1].2);
    assert_eq!(scope_logs.iter().map(|f| f.0).collect::<Vec<_>>(), [1, 2], "scope = 1, log_records = 2");
    let record = fields(&scope_logs[1].2);
    let by_tag = |t: u32| record.iter().find(|f| f.0 == t).unwrap_or_else(|| panic!("no field {t}"));
    assert_eq!(by_tag(1).1, SixtyFourBit, "time_unix_nano is fixed64 = 1");
    assert_eq!(by_tag(1).2, 0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(by_tag(11).1, SixtyFourBit, "observed_time_unix_nano is fixed64 = 11");
    assert_eq!(by_tag(11).2, 0x1111_2222_3333_4444u64.to_le_bytes());
    assert_eq!((by_tag(2).1, by_tag(2).2[0]), (Varint, 13), "severity_number = 2, WARN = 13");
    assert_eq!(by_tag(3).2, b"WARN", "severity_text = 3");
    // body = 5: AnyValue with string_value = 1.
    assert_eq!(fields(&by_tag(5).2), [(1, LengthDelimited, b"hello".to_vec())]);
    // attributes = 6: KeyValue{key = 1, value = 2}.
    let kv = fields(&by_tag(6).2);
    assert_eq!(kv[0], (1, LengthDelimited, b"log.iostream".to_vec()));
    // The restart count is an int attribute: AnyValue int_value = 3.
    let res = fields(&rl[0].2);
    let restart = res
        .iter()
        .map(|f| fields(&f.2))
        .find(|kv| kv[0].2 == b"k8s.container.restart_count")
        .expect("restart count attribute");
    assert_eq!(fields(&restart[1].2)[0].0, 3, "int_value = 3");
}

#[test]
fn severity_from_stream_makes_stderr_warn_and_leaves_stdout_unspecified() {
    let s = sink("{name: o, endpoint: 'http://x', severity_from_stream: true}");
    let src = source("a", "/f", None);
    let evs = [event(&src, 1, Stream::Stderr, "e"), event(&src, -5, Stream::Stdout, "o")];
    let refs: Vec<(&Event, u64)> = evs.iter().map(|e| (e, 7)).collect();
    let req = s.inner.request(&refs);
    let r = &req.resource_logs[0].scope_logs[0].log_records;
    assert_eq!((r[0].severity_number, r[0].severity_text.as_str()), (SeverityNumber::Warn as i32, "WARN"));
    assert_eq!((r[1].severity_number, r[1].severity_text.as_str()), (0, ""));
    assert_eq!(r[1].time_unix_nano, 0, "a pre-1970 timestamp is sent as unknown");
    let keys: Vec<String> =
        req.resource_logs[0].resource.as_ref().unwrap().attributes.iter().map(|kv| kv.key.clone()).collect();
    assert!(!keys.contains(&"k8s.container.restart_count".to_string()), "unknown restart count left out: {keys:?}");
}

#[test]
fn a_parsed_level_fields_and_ids_go_to_the_record() {
    let s = sink("{name: o, endpoint: 'http://x', severity_from_stream: true}");
    let src = source("a", "/f", None);
    let mut e = event(&src, 1, Stream::Stderr, "{}");
    e.parsed = Some(Box::new(crate::event::Parsed {
        level: Some("info".into()),
        trace_id: Some("0102030405060708090a0b0c0d0e0f10".into()),
        span_id: Some("not-hex".into()),
        fields: vec![("user".into(), serde_json::Value::from("bob")), ("n".into(), serde_json::Value::from(3))],
        raw: None,
    }));
    let req = s.inner.request(&[(&e, 7)]);
    let r = &req.resource_logs[0].scope_logs[0].log_records[0];
    assert_eq!((r.severity_number, r.severity_text.as_str()), (SeverityNumber::Info as i32, "INFO"));
    assert_eq!(r.trace_id, (1..=16).collect::<Vec<u8>>());
    assert!(r.span_id.is_empty(), "an id that is not 16 hex digits is left out");
    let kv: Vec<(String, String)> = r
        .attributes
        .iter()
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(v) => Some((kv.key.clone(), v.clone())),
            _ => None,
        })
        .collect();
    assert!(kv.contains(&("user".into(), "bob".into())) && kv.contains(&("n".into(), "3".into())), "{kv:?}");
}
