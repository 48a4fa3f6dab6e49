//! `transforms:`: drop, redact, sample and rate_limit, applied in order, each under a `when:`.

use super::select::{Selector, SelectorConfig, SourceCache};
use crate::config::Problems;
use crate::event::Event;
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// One entry of `transforms:`, chosen by its `type`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TransformConfig {
    /// Drops the lines `when` selects.
    Drop(DropConfig),
    /// Replaces what the patterns find, in the message and in parsed field values.
    Redact(RedactConfig),
    /// Keeps 1 line in `rate` per container.
    Sample(SampleConfig),
    /// Keeps at most `lines_per_second` per container; the rest is dropped and counted.
    RateLimit(RateLimitConfig),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropConfig {
    pub name: String,
    /// Required: which lines to drop.
    #[serde(default)]
    pub when: SelectorConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    pub name: String,
    #[serde(default)]
    pub when: SelectorConfig,
    /// Shipped patterns: `bearer_token` (`Authorization: Bearer …`, the token only),
    /// `aws_access_key` (AKIA…/ASIA… key ids and `aws_secret_access_key=…` values) and
    /// `credit_card` (13 to 19 digits starting with 3 to 6 like Amex, Visa, Mastercard and
    /// Discover numbers, spaces or dashes allowed, passing the Luhn check).
    #[serde(default)]
    pub builtin: Vec<BuiltinPattern>,
    /// Your own regular expressions; the whole match is replaced (`$1` in `replacement`
    /// refers to a group).
    #[serde(default)]
    pub regex: Vec<String>,
    /// Default `[REDACTED]`.
    #[serde(default = "default_replacement")]
    pub replacement: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinPattern {
    BearerToken,
    AwsAccessKey,
    CreditCard,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    pub name: String,
    #[serde(default)]
    pub when: SelectorConfig,
    /// Keep 1 line in this many, per container (the first, then every `rate`-th).
    pub rate: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub name: String,
    #[serde(default)]
    pub when: SelectorConfig,
    /// Lines per second kept per container (a one-second window on vigil's clock).
    pub lines_per_second: u64,
}

fn default_replacement() -> String {
    "[REDACTED]".into()
}

impl TransformConfig {
    pub fn name(&self) -> &str {
        match self {
            TransformConfig::Drop(c) => &c.name,
            TransformConfig::Redact(c) => &c.name,
            TransformConfig::Sample(c) => &c.name,
            TransformConfig::RateLimit(c) => &c.name,
        }
    }

    fn when(&self) -> &SelectorConfig {
        match self {
            TransformConfig::Drop(c) => &c.when,
            TransformConfig::Redact(c) => &c.when,
            TransformConfig::Sample(c) => &c.when,
            TransformConfig::RateLimit(c) => &c.when,
        }
    }

    pub fn validate(&self, path: &str, p: &mut Problems) {
        if !crate::sinks::is_label_name(&self.name().replace('-', "_")) {
            p.push(
                format!("{path}.name"),
                format!(
                    "'{}' is not a name; expected letters, digits, '_' or '-', e.g. drop-health-checks",
                    self.name()
                ),
            );
        }
        self.when().validate(&format!("{path}.when"), p);
        match self {
            TransformConfig::Drop(c) if c.when == SelectorConfig::default() => p.push(
                format!("{path}.when"),
                "is missing or empty, so this drop would drop every line; say which lines, e.g. {namespace: kube-system}",
            ),
            TransformConfig::Redact(c) => {
                if c.builtin.is_empty() && c.regex.is_empty() {
                    p.push(path, "redacts nothing; give builtin (e.g. [bearer_token]) or regex");
                }
                for (i, r) in c.regex.iter().enumerate() {
                    if let Err(e) = Regex::new(r) {
                        p.push(format!("{path}.regex[{i}]"), format!("'{r}' is not a regular expression: {e}"));
                    }
                }
            }
            TransformConfig::Sample(c) if c.rate == 0 => {
                p.push(format!("{path}.rate"), "is 0; expected 1 line kept in N, N at least 1, e.g. 10")
            }
            TransformConfig::RateLimit(c) if c.lines_per_second == 0 => {
                p.push(format!("{path}.lines_per_second"), "is 0; expected at least 1, e.g. 100")
            }
            _ => {}
        }
    }

    /// Compiles a validated transform.
    pub fn compile(&self) -> Transform {
        let kind = match self {
            TransformConfig::Drop(_) => Kind::Drop,
            TransformConfig::Redact(c) => {
                let mut rules: Vec<Rule> = c.builtin.iter().map(|b| builtin(*b, &c.replacement)).collect();
                rules.extend(c.regex.iter().map(|r| Rule {
                    re: Regex::new(r).expect("validated regex"),
                    replace: Replace::Template(c.replacement.clone()),
                }));
                Kind::Redact(rules)
            }
            TransformConfig::Sample(c) => Kind::Sample { rate: c.rate, seen: HashMap::new() },
            TransformConfig::RateLimit(c) => Kind::RateLimit { per_sec: c.lines_per_second, windows: HashMap::new() },
        };
        Transform { name: self.name().to_string(), when: self.when().compile(), kind }
    }
}

/// A compiled transform with its state.
pub struct Transform {
    pub name: String,
    when: Selector,
    kind: Kind,
}

enum Kind {
    Drop,
    Redact(Vec<Rule>),
    Sample { rate: u64, seen: HashMap<u64, u64> },
    RateLimit { per_sec: u64, windows: HashMap<u64, (u64, u64)> },
}

struct Rule {
    re: Regex,
    replace: Replace,
}

enum Replace {
    /// `$n` expanded, as `Regex::replace_all` does.
    Template(String),
    /// Group 1 kept (a prefix such as `Bearer `), the rest replaced by the text.
    KeepPrefix(String),
    /// Replaced only when the digits pass the Luhn check.
    Luhn(String),
}

fn builtin(b: BuiltinPattern, replacement: &str) -> Rule {
    let r = replacement.to_string();
    let (re, replace) = match b {
        BuiltinPattern::BearerToken => (r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]+=*", Replace::KeepPrefix(r)),
        BuiltinPattern::AwsAccessKey => (
            r#"(?i)(aws_secret_access_key["']?\s*[:=]\s*["']?)[A-Za-z0-9/+=]{40}|\b(?-i:(?:AKIA|ASIA)[0-9A-Z]{16})\b"#,
            Replace::KeepPrefix(r),
        ),
        BuiltinPattern::CreditCard => (r"\b[3-6](?:[ -]?\d){12,18}\b", Replace::Luhn(r)),
    };
    Rule { re: Regex::new(re).expect("shipped pattern compiles"), replace }
}

fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d })
        .sum();
    sum % 10 == 0
}

impl Rule {
    fn apply<'a>(&self, s: &'a str) -> Cow<'a, str> {
        match &self.replace {
            Replace::Template(t) => self.re.replace_all(s, t.as_str()),
            Replace::KeepPrefix(t) => self.re.replace_all(s, |c: &regex::Captures| {
                let prefix = c.get(1).map_or("", |m| m.as_str());
                format!("{prefix}{t}")
            }),
            Replace::Luhn(t) => self.re.replace_all(s, |c: &regex::Captures| {
                let m = c.get(0).expect("group 0").as_str();
                if luhn(m) { t.clone() } else { m.to_string() }
            }),
        }
    }
}

fn redact(rules: &[Rule], s: &mut String) {
    for r in rules {
        if let Cow::Owned(new) = r.apply(s) {
            *s = new;
        }
    }
}

/// A key per container (namespace, pod, container).
fn container_key(e: &Event) -> u64 {
    let k = &e.source.kubernetes;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&k.namespace, &k.pod, &k.container).hash(&mut h);
    h.finish()
}

/// Per-container state is bounded: past this many containers it starts over.
const MAX_CONTAINERS: usize = 10_000;

impl Transform {
    /// Applies the transform to `events`, removing what it drops; returns how many it dropped.
    /// `now_sec` is vigil's clock in whole seconds (for `rate_limit`).
    pub fn apply(&mut self, events: &mut Vec<Event>, now_sec: u64) -> u64 {
        let before = events.len();
        let mut cache = SourceCache::default();
        let when = &self.when;
        match &mut self.kind {
            Kind::Drop => events.retain(|e| !cache.matches(when, e)),
            Kind::Redact(rules) => {
                for e in events.iter_mut().filter(|e| cache.matches(when, e)) {
                    redact(rules, &mut e.message);
                    if let Some(p) = &mut e.parsed {
                        if let Some(raw) = &mut p.raw {
                            redact(rules, raw);
                        }
                        for (_, v) in &mut p.fields {
                            if let serde_json::Value::String(s) = v {
                                redact(rules, s);
                            }
                        }
                    }
                }
            }
            Kind::Sample { rate, seen } => {
                if seen.len() > MAX_CONTAINERS {
                    seen.clear();
                }
                events.retain(|e| {
                    if !cache.matches(when, e) {
                        return true;
                    }
                    let n = seen.entry(container_key(e)).or_insert(0);
                    let keep = *n % *rate == 0;
                    *n += 1;
                    keep
                })
            }
            Kind::RateLimit { per_sec, windows } => {
                if windows.len() > MAX_CONTAINERS {
                    windows.retain(|_, (sec, _)| *sec == now_sec);
                }
                events.retain(|e| {
                    if !cache.matches(when, e) {
                        return true;
                    }
                    let w = windows.entry(container_key(e)).or_insert((now_sec, 0));
                    if w.0 != now_sec {
                        *w = (now_sec, 0);
                    }
                    w.1 += 1;
                    w.1 <= *per_sec
                })
            }
        }
        (before - events.len()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Stream;
    use crate::process::tests::ev;

    fn compile(yaml: &str) -> Transform {
        let c: TransformConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let mut p = Problems::default();
        c.validate("t", &mut p);
        assert!(p.0.is_empty(), "{:?}", p.0);
        c.compile()
    }

    #[test]
    fn redact_builtin_patterns() {
        let mut t = compile("{name: r, type: redact, builtin: [bearer_token, aws_access_key, credit_card]}");
        let mut events = vec![
            ev("ns", "c", Stream::Stdout, "Authorization: Bearer eyJhbGciOi.J9.abc-_ ok"),
            ev("ns", "c", Stream::Stdout, "key AKIAIOSFODNN7EXAMPLE used"),
            ev("ns", "c", Stream::Stdout, "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY end"),
            ev("ns", "c", Stream::Stdout, "paid with 4111 1111 1111 1111 today"),
            ev("ns", "c", Stream::Stdout, "order 1234567890123 at 1795846333123456789, 4111 1111 1111 1112"),
        ];
        assert_eq!(t.apply(&mut events, 0), 0);
        let got: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            got,
            [
                "Authorization: Bearer [REDACTED] ok",
                "key [REDACTED] used",
                "aws_secret_access_key=[REDACTED] end",
                "paid with [REDACTED] today",
                "order 1234567890123 at 1795846333123456789, 4111 1111 1111 1112",
            ]
        );
    }

    #[test]
    fn redact_own_regex_in_message_and_fields() {
        let mut t = compile(r#"{name: r, type: redact, regex: ['password=\S+'], replacement: "password=***"}"#);
        let mut e = ev("ns", "c", Stream::Stdout, "login password=hunter2 ok");
        e.parsed = Some(Box::new(crate::event::Parsed {
            fields: vec![("q".into(), serde_json::Value::from("a password=x"))],
            ..Default::default()
        }));
        let mut events = vec![e];
        t.apply(&mut events, 0);
        assert_eq!(events[0].message, "login password=*** ok");
        assert_eq!(events[0].parsed.as_ref().unwrap().fields[0].1, "a password=***");
    }

    #[test]
    fn drop_when_selected() {
        let mut t = compile("{name: d, type: drop, when: {namespace: kube-system}}");
        let mut events = vec![ev("kube-system", "c", Stream::Stdout, "a"), ev("app", "c", Stream::Stdout, "b")];
        assert_eq!(t.apply(&mut events, 0), 1);
        assert_eq!(events[0].message, "b");
    }

    #[test]
    fn sample_keeps_one_in_n_per_container() {
        let mut t = compile("{name: s, type: sample, rate: 3}");
        let mut events: Vec<Event> = (0..6)
            .flat_map(|i| {
                [ev("ns", "a", Stream::Stdout, &format!("a{i}")), ev("ns", "b", Stream::Stdout, &format!("b{i}"))]
            })
            .collect();
        assert_eq!(t.apply(&mut events, 0), 8);
        let got: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(got, ["a0", "b0", "a3", "b3"]);
    }

    #[test]
    fn rate_limit_counts_what_is_over_per_second() {
        let mut t = compile("{name: rl, type: rate_limit, lines_per_second: 2}");
        let mut batch = |n: usize, sec| {
            let mut v: Vec<Event> = (0..n).map(|i| ev("ns", "a", Stream::Stdout, &i.to_string())).collect();
            let dropped = t.apply(&mut v, sec);
            (v.len(), dropped)
        };
        assert_eq!(batch(5, 7), (2, 3));
        assert_eq!(batch(1, 7), (0, 1), "the window of second 7 is used up");
        assert_eq!(batch(3, 8), (2, 1), "a new second, a new window");
    }

    #[test]
    fn validation() {
        for (yaml, needle) in [
            ("{name: d, type: drop}", "t.when"),
            ("{name: r, type: redact}", "redacts nothing"),
            ("{name: r, type: redact, regex: ['(']}", "t.regex[0]"),
            ("{name: s, type: sample, rate: 0}", "t.rate"),
            ("{name: l, type: rate_limit, lines_per_second: 0}", "t.lines_per_second"),
            ("{name: 'a b', type: drop, when: {pod: x}}", "t.name"),
        ] {
            let c: TransformConfig = serde_yaml_ng::from_str(yaml).unwrap();
            let mut p = Problems::default();
            c.validate("t", &mut p);
            assert!(p.0.iter().any(|m| m.contains(needle)), "{yaml}: {:?}", p.0);
        }
    }
}
