//! `${VAR}` and `${VAR:-default}` expansion over the raw config text, before YAML parsing.
//!
//! Expanding the text (as Vector and Fluent Bit do) rather than parsed strings lets a variable
//! hold a number or a list. Comment lines are skipped so a commented-out `${SECRET}` never fails
//! a config. `$$` is a literal `$`. The environment is read through a lookup function so tests
//! inject values instead of mutating the process environment.
//!
//! A value from the environment is text, never YAML syntax: one that would change the parsed
//! structure (a newline, `: `, ` #`, a trailing `:`, a leading YAML indicator such as `*`, `&`,
//! `!`, `|`, `>`, `'`, `"`, `%`, `@` or `#`) is written as a double-quoted YAML string when
//! `${VAR}` is the whole value (`key: ${VAR}`, `- ${VAR}`), escaped when it sits inside a quoted
//! string, and refused with its line otherwise (rather than silently changing the config).
//! Values without such characters are inserted as they are, so a variable may still hold a
//! number or a flow list (`[a, b]`). Defaults (`${VAR:-default}`) are part of the config text
//! and are inserted as written.

/// Expands every `${...}` in `text`. Collects every missing variable, each with its line.
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (lineno, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    errors.push(format!("line {}: unterminated '${{' in config", lineno + 1));
                    out.push('$');
                    rest = after;
                    continue;
                };
                let expr = &body[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (expr, None),
                };
                let valid = !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    errors.push(format!(
                        "line {}: '${{{expr}}}' is not a valid variable reference; expected ${{NAME}} or ${{NAME:-default}}",
                        lineno + 1
                    ));
                } else {
                    match (lookup(name), default) {
                        (Some(v), _) => {
                            let line_before = &line[..line.len() - rest.len() + pos];
                            let line_after = &body[end + 1..];
                            if let Err(e) = insert_value(&mut out, &v, line_before, line_after) {
                                errors.push(format!("line {}: the value of '{name}' {e}", lineno + 1));
                            }
                        }
                        (None, Some(d)) => out.push_str(d),
                        (None, None) => errors.push(format!(
                            "line {}: environment variable '{name}' is not set and has no default; set it or write ${{{name}:-default}}",
                            lineno + 1
                        )),
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// Where a `${VAR}` sits in its line, as far as quoting goes.
enum Context {
    /// Alone after `key:` or `- ` with nothing but a comment after it, or a whole value in a
    /// flow collection.
    WholeValue,
    /// Inside a double-quoted string.
    DoubleQuoted,
    /// Inside a single-quoted string.
    SingleQuoted,
    /// Part of a larger plain scalar.
    Plain,
}

fn context(before: &str, after: &str) -> Context {
    // Quotes opened and not closed before the reference on this line. A quote opens a string
    // only where a scalar starts (after `: `, `- `, `[`, `{`, `,` or at the line start), so an
    // apostrophe inside a plain value is text; `\"` does not close a double-quoted string.
    let (mut single, mut double, mut escaped) = (false, false, false);
    let mut prev: Option<char> = None;
    let mut closed_single = false;
    for c in before.chars() {
        if double {
            match c {
                '\\' => escaped = !escaped,
                '"' if !escaped => double = false,
                _ => escaped = false,
            }
            if c != '\\' {
                escaped = false;
            }
        } else if single {
            single = c != '\'';
            closed_single = !single;
            prev = Some(c);
            continue;
        } else if c == '\'' && closed_single {
            // `''` inside a single-quoted string is one quote: the string goes on.
            single = true;
        } else if matches!(c, '"' | '\'') && matches!(prev, None | Some(':' | '-' | '[' | '{' | ',')) {
            double = c == '"';
            single = c == '\'';
        }
        closed_single = false;
        if !c.is_whitespace() {
            prev = Some(c);
        }
    }
    if double {
        return Context::DoubleQuoted;
    }
    if single {
        return Context::SingleQuoted;
    }
    let b = before.trim_end();
    let spaced = before.len() > b.len();
    let after_key = b.ends_with(':') && spaced;
    let list_item = (b.trim_start() == "-" || b.ends_with(" -")) && spaced;
    let a = after.trim_end_matches(['\n', '\r']);
    let rest_is_comment = a.trim().is_empty() || (a.starts_with([' ', '\t']) && a.trim_start().starts_with('#'));
    // In a flow collection (`{user: u, password: ${VAR}}`, `[${VAR}, b]`) the value ends at
    // `,`, `}` or `]`.
    let flow_item = b.ends_with(['[', ',']);
    let rest_ends_flow = a.trim_start().starts_with([',', '}', ']']);
    if (after_key || list_item || flow_item) && (rest_is_comment || rest_ends_flow) {
        return Context::WholeValue;
    }
    Context::Plain
}

/// Whether `v`, written as it is, would be read by YAML as more (or other) than its text.
fn changes_yaml(v: &str) -> bool {
    v.contains(['\n', '\r'])
        || v.contains(": ")
        || v.contains(" #")
        || v.ends_with(':')
        || v.starts_with(['#', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`'])
}

/// Appends an environment value at a `${VAR}` reference so that it stays the text it is.
fn insert_value(out: &mut String, v: &str, before: &str, after: &str) -> Result<(), &'static str> {
    match context(before, after) {
        Context::DoubleQuoted => {
            let quoted = serde_json::to_string(v).expect("a string serializes");
            out.push_str(&quoted[1..quoted.len() - 1]);
        }
        Context::SingleQuoted if v.contains(['\n', '\r']) => {
            return Err(
                "holds a newline, which a single-quoted YAML string cannot keep; use double quotes or ${VAR} alone",
            );
        }
        Context::SingleQuoted => out.push_str(&v.replace('\'', "''")),
        _ if !changes_yaml(v) => out.push_str(v),
        // JSON strings are YAML double-quoted strings.
        Context::WholeValue => out.push_str(&serde_json::to_string(v).expect("a string serializes")),
        Context::Plain => {
            return Err("holds YAML syntax (a newline, ': ', ' #' or a leading indicator) inside a larger value; \
                 write the reference alone after the key (key: ${VAR}) or inside double quotes");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "NODE_NAME" => Some("node-1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_default_and_escape() {
        let got = expand("a: ${NODE_NAME}\nb: ${NOPE:-dflt}\nc: $$HOME ${EMPTY:-x}\nd: $5\n", &env).unwrap();
        assert_eq!(got, "a: node-1\nb: dflt\nc: $HOME \nd: $5\n");
    }

    #[test]
    fn missing_variables_are_all_reported_with_lines() {
        let errs = expand("a: ${A}\n# b: ${IGNORED}\nc: ${C}\n", &env).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(errs[0].starts_with("line 1: environment variable 'A' is not set"), "{errs:?}");
        assert!(errs[1].starts_with("line 3: environment variable 'C' is not set"), "{errs:?}");
    }

    /// The YAML value at `key` after expanding `text` with `VAL` set to `v`.
    fn parsed(text: &str, v: &str) -> serde_yaml_ng::Value {
        let lookup = |n: &str| (n == "VAL").then(|| v.to_string());
        let expanded = expand(text, &lookup).unwrap_or_else(|e| panic!("{text:?} with {v:?}: {e:?}"));
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&expanded).unwrap_or_else(|e| panic!("{expanded:?} does not parse: {e}"));
        doc
    }

    /// Regression: a value holding `: `, ` #` or a newline was pasted into the YAML text and
    /// changed the parsed config (a map instead of a string, a cut-off secret, a parse error).
    #[test]
    fn a_value_holding_yaml_syntax_stays_one_string() {
        for v in ["pa: ss", "pass #word", "line1\nline2", "*alias", "'quoted", "ends:", "x\"y\\z"] {
            let doc = parsed("a:\n  secret: ${VAL}\n  next: 1\n", v);
            assert_eq!(doc["a"]["secret"].as_str(), Some(v), "key: ${{VAL}} with {v:?}");
            assert_eq!(doc["a"]["next"].as_u64(), Some(1), "the structure after it is intact ({v:?})");
            let doc = parsed("a: \"pre-${VAL}-post\" # c\n", v);
            assert_eq!(doc["a"].as_str(), Some(format!("pre-{v}-post").as_str()), "inside double quotes, {v:?}");
            let doc = parsed("l:\n  - ${VAL} # comment\n", v);
            assert_eq!(doc["l"][0].as_str(), Some(v), "list item with {v:?}");
        }
        let doc = parsed("auth: {username: elastic, password: ${VAL}}\n", "pa: ss #1");
        assert_eq!(doc["auth"]["password"].as_str(), Some("pa: ss #1"), "flow mapping value");
        let doc = parsed("l: [${VAL}, b]\n", "x: y");
        assert_eq!(doc["l"][0].as_str(), Some("x: y"), "flow sequence item");
        let doc = parsed("a: 'it''s ${VAL}'\n", "pa: s'ss #x");
        assert_eq!(doc["a"].as_str(), Some("it's pa: s'ss #x"));
    }

    #[test]
    fn numbers_lists_and_plain_text_are_inserted_as_written() {
        assert_eq!(parsed("n: ${VAL}\n", "42")["n"].as_u64(), Some(42));
        assert_eq!(parsed("l: ${VAL}\n", "[a, b]")["l"][1].as_str(), Some("b"));
        assert_eq!(parsed("u: http://${VAL}:9200/x\n", "es-1")["u"].as_str(), Some("http://es-1:9200/x"));
        assert_eq!(parsed("m: don't ${VAL}\n", "it's")["m"].as_str(), Some("don't it's"));
    }

    #[test]
    fn yaml_syntax_inside_a_larger_plain_value_is_refused() {
        let errs = expand("u: http://${VAL}/x\n", &|_| Some("a: b".into())).unwrap_err();
        assert!(errs[0].starts_with("line 1: the value of 'VAL' holds YAML syntax"), "{errs:?}");
        let errs = expand("u: 'x ${VAL}'\n", &|_| Some("a\nb".into())).unwrap_err();
        assert!(errs[0].contains("newline"), "{errs:?}");
    }

    #[test]
    fn bad_references() {
        let errs = expand("a: ${1X}\nb: ${OPEN\n", &env).unwrap_err();
        assert!(errs[0].contains("not a valid variable reference"));
        assert!(errs[1].contains("unterminated"));
    }
}
