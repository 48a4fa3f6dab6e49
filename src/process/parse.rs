//! `sources.containers.parse`: JSON and logfmt messages become fields.
//!
//! Key decision: a cheap shape check comes first and decides: JSON only when the message
//! starts with `{`, logfmt only when it starts with `key=`; anything else is text and costs a
//! byte or a word's scan. Parsed keys: `level`/`severity` → level, `msg`/`message` → message,
//! `trace_id`/`span_id` lifted, `time`/`ts` → the timestamp only with `use_message_time`; the
//! rest become `fields` (at most `max_fields`, the others cut and counted).

use crate::event::{Event, Parsed};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParseMode {
    /// A JSON object or clean logfmt is parsed; anything else ships as text.
    #[default]
    Auto,
    Json,
    Logfmt,
    Off,
}

/// What parsing one message gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not JSON/logfmt in shape (plain text): untouched, nothing to count.
    Text,
    Parsed,
    /// Looked like (or was required to be) the format but is not valid: shipped as text.
    Failed(&'static str),
}

/// Settings of the parse step.
#[derive(Debug, Clone, Copy)]
pub struct ParseSettings {
    pub mode: ParseMode,
    pub use_message_time: bool,
    pub max_fields: usize,
}

/// Parses `e.message` in place. Returns the outcome and the number of fields cut.
pub fn parse_event(e: &mut Event, s: &ParseSettings) -> (Outcome, u64) {
    if e.malformed || s.mode == ParseMode::Off {
        return (Outcome::Text, 0);
    }
    let first = e.message.as_bytes().first().copied();
    let pairs = match s.mode {
        ParseMode::Auto | ParseMode::Json if first == Some(b'{') => match json_pairs(&e.message) {
            Some(p) => p,
            None => return (Outcome::Failed("json"), 0),
        },
        ParseMode::Json => return (Outcome::Failed("json"), 0),
        ParseMode::Auto if !looks_like_logfmt(e.message.as_bytes()) => return (Outcome::Text, 0),
        ParseMode::Auto | ParseMode::Logfmt => match logfmt_pairs(&e.message) {
            Some(p) => p,
            None if s.mode == ParseMode::Logfmt => return (Outcome::Failed("logfmt"), 0),
            None => return (Outcome::Text, 0),
        },
        ParseMode::Off => return (Outcome::Text, 0),
    };
    let cut = lift(e, pairs, s);
    (Outcome::Parsed, cut)
}

/// `key=` at the start: an identifier then `=`.
fn looks_like_logfmt(b: &[u8]) -> bool {
    if !b.first().is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_') {
        return false;
    }
    for &c in b.iter().take(64) {
        match c {
            b'=' => return true,
            c if is_key_byte(c) => {}
            _ => return false,
        }
    }
    false
}

fn is_key_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'/')
}

fn json_pairs(msg: &str) -> Option<Vec<(String, Value)>> {
    let map: serde_json::Map<String, Value> = serde_json::from_str(msg).ok()?;
    Some(map.into_iter().collect())
}

/// Clean logfmt: every token is `key=value`, the value bare or double-quoted (with `\"`,
/// `\\`, `\n`, `\t` escapes). A bare word makes the whole message text.
pub fn logfmt_pairs(msg: &str) -> Option<Vec<(String, Value)>> {
    let b = msg.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && is_key_byte(b[i]) {
            i += 1;
        }
        if i == start || i >= b.len() || b[i] != b'=' {
            return None;
        }
        let key = &msg[start..i];
        i += 1;
        let value = if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut v = String::new();
            let mut closed = false;
            let mut seg = i;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        v.push_str(&msg[seg..i]);
                        i += 1;
                        closed = true;
                        break;
                    }
                    b'\\' if i + 1 < b.len() => {
                        v.push_str(&msg[seg..i]);
                        v.push(match b[i + 1] {
                            b'n' => '\n',
                            b't' => '\t',
                            b'r' => '\r',
                            c => c as char,
                        });
                        i += 2;
                        seg = i;
                        // An escaped multi-byte char cannot occur: escapes are ASCII.
                    }
                    _ => i += 1,
                }
            }
            if !closed || (i < b.len() && b[i] != b' ') {
                return None;
            }
            v
        } else {
            let vs = i;
            while i < b.len() && b[i] != b' ' {
                if b[i] == b'"' || b[i] == b'=' && i == vs {
                    return None;
                }
                i += 1;
            }
            msg[vs..i].to_string()
        };
        out.push((key.to_string(), Value::String(value)));
    }
    (!out.is_empty()).then_some(out)
}

/// Moves the well-known keys to their places and the rest into `fields`; returns fields cut.
fn lift(e: &mut Event, pairs: Vec<(String, Value)>, s: &ParseSettings) -> u64 {
    let mut p = Parsed::default();
    let mut message: Option<String> = None;
    let mut cut = 0u64;
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for (k, v) in pairs {
        match k.as_str() {
            "level" | "severity" if p.level.is_none() && !v.is_null() => p.level = Some(text(&v).to_ascii_lowercase()),
            "msg" | "message" if message.is_none() && !v.is_null() => message = Some(text(&v)),
            "trace_id" if p.trace_id.is_none() => p.trace_id = Some(text(&v)),
            "span_id" if p.span_id.is_none() => p.span_id = Some(text(&v)),
            "time" | "ts" if s.use_message_time && message_time(&v).is_some() => {
                e.timestamp = message_time(&v).expect("checked");
            }
            _ => {
                if p.fields.len() >= s.max_fields {
                    cut += 1;
                    continue;
                }
                let v = match v {
                    Value::Object(_) | Value::Array(_) => Value::String(v.to_string()),
                    scalar => scalar,
                };
                p.fields.push((k, v));
            }
        }
    }
    if let Some(m) = message {
        p.raw = Some(std::mem::replace(&mut e.message, m));
    }
    e.parsed = Some(Box::new(p));
    cut
}

/// RFC 3339 text, or a Unix time number in seconds, milliseconds, microseconds or nanoseconds
/// (told apart by magnitude), as UTC nanoseconds.
pub fn message_time(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => {
            chrono::DateTime::parse_from_rfc3339(s).ok().and_then(|t| t.timestamp_nanos_opt()).or_else(|| {
                s.parse::<f64>().ok().and_then(|f| message_time(&serde_json::Number::from_f64(f).map(Value::Number)?))
            })
        }
        Value::Number(n) => {
            let f = n.as_f64()?;
            if !f.is_finite() || f <= 0.0 {
                return None;
            }
            let ns = if f >= 1e17 {
                f
            } else if f >= 1e14 {
                f * 1e3
            } else if f >= 1e11 {
                f * 1e6
            } else {
                f * 1e9
            };
            (ns < i64::MAX as f64).then_some(ns as i64)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Stream;
    use crate::process::tests::ev;

    fn settings(mode: ParseMode) -> ParseSettings {
        ParseSettings { mode, use_message_time: false, max_fields: 100 }
    }

    #[test]
    fn json_lifts_the_well_known_keys() {
        let mut e = ev(
            "ns",
            "c",
            Stream::Stdout,
            r#"{"level":"WARN","msg":"disk low","trace_id":"abc","span_id":"def","user":{"id":7},"n":3}"#,
        );
        let raw = e.message.clone();
        assert_eq!(parse_event(&mut e, &settings(ParseMode::Auto)), (Outcome::Parsed, 0));
        let p = e.parsed.as_ref().unwrap();
        assert_eq!(e.message, "disk low");
        assert_eq!(p.level.as_deref(), Some("warn"));
        assert_eq!(p.trace_id.as_deref(), Some("abc"));
        assert_eq!(p.span_id.as_deref(), Some("def"));
        // JSON keys come sorted (serde_json's map); nested values as their JSON text.
        assert_eq!(p.fields, vec![("n".into(), Value::from(3)), ("user".into(), Value::from(r#"{"id":7}"#))]);
        assert_eq!(e.raw_line(), raw);
    }

    #[test]
    fn logfmt_with_quotes_and_escapes() {
        let mut e = ev("ns", "c", Stream::Stdout, r#"level=info msg="user \"bob\" logged in" dur=3ms empty="#);
        assert_eq!(parse_event(&mut e, &settings(ParseMode::Auto)).0, Outcome::Parsed);
        assert_eq!(e.message, r#"user "bob" logged in"#);
        assert_eq!(e.level(), Some("info"));
        let f = &e.parsed.as_ref().unwrap().fields;
        assert_eq!(f, &vec![("dur".into(), Value::from("3ms")), ("empty".into(), Value::from(""))]);
    }

    #[test]
    fn plain_text_is_left_alone() {
        for line in
            ["2026-01-01 INFO started", "GET /healthz 200", "x=1 and then some words", "", "{not json", "a=\"unclosed"]
        {
            let mut e = ev("ns", "c", Stream::Stdout, line);
            let (o, _) = parse_event(&mut e, &settings(ParseMode::Auto));
            assert_ne!(o, Outcome::Parsed, "{line}");
            assert_eq!(e.message, line);
            assert!(e.parsed.is_none());
        }
    }

    #[test]
    fn required_format_that_is_absent_is_a_failure() {
        let mut e = ev("ns", "c", Stream::Stdout, "plain");
        assert_eq!(parse_event(&mut e, &settings(ParseMode::Json)).0, Outcome::Failed("json"));
        assert_eq!(parse_event(&mut e, &settings(ParseMode::Logfmt)).0, Outcome::Failed("logfmt"));
        let mut j = ev("ns", "c", Stream::Stdout, r#"{"a":1}"#);
        assert_eq!(parse_event(&mut j, &settings(ParseMode::Off)).0, Outcome::Text);
        assert!(j.parsed.is_none());
    }

    #[test]
    fn message_time_only_when_asked() {
        let line = r#"{"ts":"2026-11-28T06:12:13.5Z","msg":"m"}"#;
        let mut e = ev("ns", "c", Stream::Stdout, line);
        parse_event(&mut e, &settings(ParseMode::Auto));
        assert_eq!(e.timestamp, 0);
        assert_eq!(e.parsed.as_ref().unwrap().fields[0].0, "ts");
        let mut e = ev("ns", "c", Stream::Stdout, line);
        parse_event(&mut e, &ParseSettings { use_message_time: true, ..settings(ParseMode::Auto) });
        assert_eq!(e.timestamp, 1_795_846_333_500_000_000);
        assert_eq!(message_time(&Value::from(1_795_846_333_500i64)), Some(1_795_846_333_500_000_000));
        assert_eq!(message_time(&Value::from(1_795_846_333.5)), Some(1_795_846_333_500_000_000));
    }

    #[test]
    fn fields_are_capped_and_the_cut_counted() {
        let mut e = ev("ns", "c", Stream::Stdout, r#"{"a":1,"b":2,"c":3,"level":"x"}"#);
        let (_, cut) = parse_event(&mut e, &ParseSettings { max_fields: 2, ..settings(ParseMode::Json) });
        assert_eq!(cut, 1);
        assert_eq!(e.parsed.as_ref().unwrap().fields.len(), 2);
        assert_eq!(e.level(), Some("x"));
    }
}
