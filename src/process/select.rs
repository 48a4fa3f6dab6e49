//! `when:` of a transform and `match:` of a sink: which events a step applies to.
//!
//! Every key given must match (AND); a list under one key matches when any entry does (OR).
//! Globs and the regex are compiled once, at start; `validate` names the bad ones.

use crate::config::Problems;
use crate::event::{Event, Source};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

/// The selectors as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorConfig {
    /// Namespace globs, e.g. `[prod-*, payments]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<OneOrMany>,
    /// Pod name globs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<OneOrMany>,
    /// Container name globs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<OneOrMany>,
    /// Pod labels, name → value glob. Pod labels come from the Kubernetes API; until vigil
    /// knows them for a pod, a selector with `labels` does not match its lines.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `stdout` or `stderr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<OneOrMany>,
    /// Levels (case-insensitive) of parsed messages, e.g. `[debug, trace]`. A line without a
    /// level does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<OneOrMany>,
    /// A regular expression searched in the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl SelectorConfig {
    pub fn validate(&self, path: &str, p: &mut Problems) {
        for (key, globs) in [("namespace", &self.namespace), ("pod", &self.pod), ("container", &self.container)] {
            for (i, g) in globs.iter().flat_map(|g| g.items().iter().enumerate()) {
                if let Err(e) = globset::Glob::new(g) {
                    p.push(format!("{path}.{key}[{i}]"), format!("'{g}' is not a glob ({e}); expected e.g. prod-*"));
                }
            }
        }
        for (k, g) in &self.labels {
            if let Err(e) = globset::Glob::new(g) {
                p.push(format!("{path}.labels.{k}"), format!("'{g}' is not a glob ({e}); expected e.g. web-*"));
            }
        }
        for (i, s) in self.stream.iter().flat_map(|s| s.items().iter().enumerate()) {
            if s != "stdout" && s != "stderr" {
                p.push(format!("{path}.stream[{i}]"), format!("'{s}' is not a stream; expected stdout or stderr"));
            }
        }
        if let Some(re) = &self.message {
            if let Err(e) = regex::Regex::new(re) {
                p.push(format!("{path}.message"), format!("'{re}' is not a regular expression: {e}"));
            }
        }
    }

    /// Compiles a validated selector.
    pub fn compile(&self) -> Selector {
        let globs = |g: &Option<OneOrMany>| {
            g.as_ref().map(|g| {
                let mut b = globset::GlobSetBuilder::new();
                for s in g.items() {
                    b.add(globset::Glob::new(s).expect("validated glob"));
                }
                b.build().expect("validated globs")
            })
        };
        Selector {
            namespace: globs(&self.namespace),
            pod: globs(&self.pod),
            container: globs(&self.container),
            labels: self
                .labels
                .iter()
                .map(|(k, g)| (k.clone(), globset::Glob::new(g).expect("validated glob").compile_matcher()))
                .collect(),
            stdout: self.stream.as_ref().is_none_or(|s| s.items().iter().any(|x| x == "stdout")),
            stderr: self.stream.as_ref().is_none_or(|s| s.items().iter().any(|x| x == "stderr")),
            level: self.level.as_ref().map(|l| l.items().iter().map(|x| x.to_ascii_lowercase()).collect()),
            message: self.message.as_ref().map(|r| regex::Regex::new(r).expect("validated regex")),
        }
    }
}

/// A compiled selector.
#[derive(Debug, Clone)]
pub struct Selector {
    namespace: Option<globset::GlobSet>,
    pod: Option<globset::GlobSet>,
    container: Option<globset::GlobSet>,
    labels: Vec<(String, globset::GlobMatcher)>,
    stdout: bool,
    stderr: bool,
    level: Option<Vec<String>>,
    message: Option<regex::Regex>,
}

/// The pod's Kubernetes labels, when known: from the API metadata stage
/// (`sources.containers.kubernetes`), which runs before this one. None with metadata off or
/// while the pod is unknown.
pub fn pod_labels(source: &Source) -> Option<&BTreeMap<String, String>> {
    source.kubernetes.labels()
}

impl Selector {
    /// The part that depends only on the file (namespace, pod, container, labels): the same
    /// for every event of a `Source`, so callers may cache it per source.
    pub fn matches_source(&self, s: &Source) -> bool {
        let k = &s.kubernetes;
        let glob = |g: &Option<globset::GlobSet>, v: &str| g.as_ref().is_none_or(|g| g.is_match(v));
        if !(glob(&self.namespace, &k.namespace) && glob(&self.pod, &k.pod) && glob(&self.container, &k.container)) {
            return false;
        }
        if self.labels.is_empty() {
            return true;
        }
        let Some(labels) = pod_labels(s) else { return false };
        self.labels.iter().all(|(k, m)| labels.get(k).is_some_and(|v| m.is_match(v)))
    }

    /// The per-event part (stream, level, message).
    pub fn matches_line(&self, e: &Event) -> bool {
        let stream_ok = match e.stream {
            crate::event::Stream::Stdout => self.stdout,
            crate::event::Stream::Stderr => self.stderr,
        };
        stream_ok
            && self
                .level
                .as_ref()
                .is_none_or(|ls| e.level().is_some_and(|l| ls.iter().any(|x| x.eq_ignore_ascii_case(l))))
            && self.message.as_ref().is_none_or(|re| re.is_match(&e.message))
    }

    pub fn matches(&self, e: &Event) -> bool {
        self.matches_source(&e.source) && self.matches_line(e)
    }
}

/// Caches `matches_source` for consecutive events of one file (batches are mostly runs of one
/// file): a pointer comparison instead of glob matching per event. Use one cache per batch:
/// the batch's events keep their sources alive, so an address cannot be reused meanwhile.
#[derive(Default)]
pub struct SourceCache {
    last: Option<(usize, bool)>,
}

impl SourceCache {
    pub fn matches(&mut self, sel: &Selector, e: &Event) -> bool {
        let ptr = std::sync::Arc::as_ptr(&e.source) as usize;
        let src_ok = match self.last {
            Some((p, ok)) if p == ptr => ok,
            _ => {
                let ok = sel.matches_source(&e.source);
                self.last = Some((ptr, ok));
                ok
            }
        };
        src_ok && sel.matches_line(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::tests::ev;

    fn sel(yaml: &str) -> Selector {
        let c: SelectorConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let mut p = Problems::default();
        c.validate("w", &mut p);
        assert!(p.0.is_empty(), "{:?}", p.0);
        c.compile()
    }

    #[test]
    fn keys_and_lists() {
        let s = sel("{namespace: [prod-*, pay], stream: stderr, message: 'GET /health'}");
        assert!(s.matches(&ev("prod-1", "c", crate::event::Stream::Stderr, "x GET /healthz")));
        assert!(!s.matches(&ev("prod-1", "c", crate::event::Stream::Stdout, "x GET /healthz")));
        assert!(!s.matches(&ev("dev", "c", crate::event::Stream::Stderr, "GET /health")));
        assert!(s.matches(&ev("pay", "c", crate::event::Stream::Stderr, "GET /health")));
        assert!(sel("{}").matches(&ev("a", "b", crate::event::Stream::Stdout, "")));
    }

    #[test]
    fn labels_do_not_match_while_unknown() {
        let s = sel("{labels: {app: web}}");
        assert!(!s.matches(&ev("a", "b", crate::event::Stream::Stdout, "")));
    }

    #[test]
    fn labels_match_once_the_api_metadata_is_known() {
        let s = sel("{labels: {app: web-*}}");
        let mut e = ev("a", "b", crate::event::Stream::Stdout, "");
        let mut source = (*e.source).clone();
        let mut pod = crate::event::PodMeta::default();
        pod.labels.insert("app".into(), "web-1".into());
        source.kubernetes.api = Some(std::sync::Arc::new(pod));
        e.source = std::sync::Arc::new(source.clone());
        assert!(s.matches(&e));
        let mut other = crate::event::PodMeta::default();
        other.labels.insert("app".into(), "db".into());
        source.kubernetes.api = Some(std::sync::Arc::new(other));
        e.source = std::sync::Arc::new(source);
        assert!(!s.matches(&e));
    }

    #[test]
    fn validation_names_each_bad_value() {
        let c: SelectorConfig =
            serde_yaml_ng::from_str("{namespace: ['a[', ok], stream: out, message: '(', labels: {x: '['}}").unwrap();
        let mut p = Problems::default();
        c.validate("transforms[0].when", &mut p);
        let all = p.0.join("\n");
        for needle in [
            "transforms[0].when.namespace[0]",
            "transforms[0].when.stream[0]",
            "transforms[0].when.message",
            "transforms[0].when.labels.x",
        ] {
            assert!(all.contains(needle), "{needle} missing in {all}");
        }
    }
}
