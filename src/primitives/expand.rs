//! `${VAR}` and `${VAR:-default}` expansion over the raw config text, before YAML parsing.
//!
//! Expanding the text (as Vector and Fluent Bit do) rather than parsed strings lets a variable
//! hold a number or a list. Comment lines are skipped so a commented-out `${SECRET}` never fails
//! a config. `$$` is a literal `$`. The environment is read through a lookup function so tests
//! inject values instead of mutating the process environment.

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
                        (Some(v), _) => out.push_str(&v),
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

    #[test]
    fn bad_references() {
        let errs = expand("a: ${1X}\nb: ${OPEN\n", &env).unwrap_err();
        assert!(errs[0].contains("not a valid variable reference"));
        assert!(errs[1].contains("unterminated"));
    }
}
