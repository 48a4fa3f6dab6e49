//! Destinations templated from event fields: Loki `tenant_id: "{kubernetes.namespace}"`,
//! Elasticsearch `index: "logs-{kubernetes.namespace}-%Y.%m.%d"`.
//!
//! Field names are checked when the config is read (an unknown one is a `vigil validate`
//! error); a field without a value for an event renders as the sink's `template_default`.

use crate::event::Event;

/// The names a template may use.
pub const FIELDS: &str = "kubernetes.namespace, kubernetes.pod, kubernetes.container, kubernetes.pod_uid, \
                          kubernetes.container_id, kubernetes.labels.<name>, node, stream, level, fields.<name>";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Namespace,
    Pod,
    Container,
    PodUid,
    ContainerId,
    Label(String),
    Node,
    Stream,
    Level,
    Parsed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Field),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `{field}` references; text outside braces is kept as is.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err("has a '{' without '}'; expected e.g. {kubernetes.namespace}".to_string());
            };
            let name = &rest[open + 1..open + close];
            let field = match name {
                "kubernetes.namespace" => Field::Namespace,
                "kubernetes.pod" => Field::Pod,
                "kubernetes.container" => Field::Container,
                "kubernetes.pod_uid" => Field::PodUid,
                "kubernetes.container_id" => Field::ContainerId,
                "node" => Field::Node,
                "stream" => Field::Stream,
                "level" => Field::Level,
                n if n.starts_with("kubernetes.labels.") && n.len() > 18 => Field::Label(n[18..].to_string()),
                n if n.starts_with("fields.") && n.len() > 7 => Field::Parsed(n[7..].to_string()),
                n => return Err(format!("uses the unknown field '{n}'; known fields: {FIELDS}")),
            };
            parts.push(Part::Field(field));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err("has a '}' without '{'".into());
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// Whether the template refers to any field (otherwise it is a constant).
    pub fn has_fields(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Field(_)))
    }

    /// Whether every field depends on the file only (same value for all events of a `Source`).
    pub fn per_source(&self) -> bool {
        self.parts.iter().all(|p| {
            matches!(
                p,
                Part::Text(_)
                    | Part::Field(
                        Field::Namespace | Field::Pod | Field::Container | Field::PodUid | Field::ContainerId
                    )
                    | Part::Field(Field::Node | Field::Label(_))
            )
        })
    }

    /// Renders for `e`; an empty or missing value becomes `default`. `escape` is applied to
    /// field values (e.g. doubling `%` before strftime).
    pub fn render(&self, e: &Event, default: &str, escape: fn(&str) -> std::borrow::Cow<'_, str>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => {
                    let k = &e.source.kubernetes;
                    let parsed_field;
                    let v: Option<&str> = match f {
                        Field::Namespace => Some(&k.namespace),
                        Field::Pod => Some(&k.pod),
                        Field::Container => Some(&k.container),
                        Field::PodUid => Some(&k.pod_uid),
                        Field::ContainerId => k.container_id.as_deref(),
                        Field::Node => Some(&e.source.node),
                        Field::Stream => Some(e.stream.as_str()),
                        Field::Level => e.level(),
                        Field::Label(l) => {
                            super::select::pod_labels(&e.source).and_then(|m| m.get(l)).map(|s| s.as_str())
                        }
                        Field::Parsed(name) => {
                            parsed_field =
                                e.parsed.as_ref().and_then(|p| p.fields.iter().find(|(k, _)| k == name)).map(
                                    |(_, v)| match v {
                                        serde_json::Value::String(s) => s.clone(),
                                        other => other.to_string(),
                                    },
                                );
                            parsed_field.as_deref()
                        }
                    };
                    match v {
                        Some(v) if !v.is_empty() => out.push_str(&escape(v)),
                        _ => out.push_str(default),
                    }
                }
            }
        }
        out
    }
}

/// No escaping.
pub fn verbatim(s: &str) -> std::borrow::Cow<'_, str> {
    std::borrow::Cow::Borrowed(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Stream;
    use crate::process::tests::ev;

    #[test]
    fn renders_fields_and_defaults() {
        let t = Template::parse("logs-{kubernetes.namespace}-{level}-%Y").unwrap();
        assert!(t.has_fields());
        assert!(!t.per_source());
        let e = ev("shop", "c", Stream::Stdout, "m");
        assert_eq!(t.render(&e, "none", verbatim), "logs-shop-none-%Y");
        assert!(Template::parse("{kubernetes.namespace}").unwrap().per_source());
        assert!(!Template::parse("fixed").unwrap().has_fields());
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = Template::parse("logs-{kubernetes.nmespace}").unwrap_err();
        assert!(e.contains("'kubernetes.nmespace'"), "{e}");
        assert!(Template::parse("logs-{kubernetes.namespace").is_err());
        assert!(Template::parse("a}").is_err());
    }
}
