//! `textfile`: the `*.prom` files (Prometheus text format 0.0.4) in `textfile_directory`,
//! exported as node_exporter's textfile collector does: families keep their type (counter,
//! gauge, untyped, histogram, summary), label sets are unioned per family (a missing label is
//! ""), a family without HELP gets `Metric read from <files>`, and
//! `node_textfile_mtime_seconds{file}` gives each file's mtime. A file that cannot be read or
//! parsed, or has a sample with a timestamp, is skipped and sets `node_textfile_scrape_error`
//! to 1; so does a family whose HELP differs from another file's (the later one is dropped).
//! The collector itself always succeeds, as node_exporter's.
//!
//! Key decision: a small parser here rather than a crate: the format is line based, the
//! `prometheus` crate only encodes it, and the parsers on crates.io come with their own
//! metric model that would need converting to `MetricFamily` anyway. Only the directory itself
//! is read (not recursive, no globs in the path: a plain directory, as the DaemonSet mounts).

use super::{Collect, Error, Family, Scrape};
use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType, Quantile, Summary};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub(super) struct TextfileCollector {
    dir: Option<PathBuf>,
    /// Files that failed last scrape: a file that stays bad is logged once, not every scrape.
    failing: Mutex<HashSet<PathBuf>>,
    /// `vigil_node_textfile_errors_total`: files (or the directory) found bad, per scrape.
    errors: std::sync::atomic::AtomicU64,
}

impl TextfileCollector {
    pub fn new(dir: Option<&str>) -> Self {
        Self { dir: dir.map(PathBuf::from), failing: Mutex::default(), errors: Default::default() }
    }
}

/// One sample line.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// A family as parsed from the files.
#[derive(Debug)]
struct TextFamily {
    help: Option<String>,
    kind: MetricType,
    samples: Vec<Sample>,
    files: Vec<String>,
}

fn unescape(s: &str, label: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some('"') if label => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

type Labels = Vec<(String, String)>;

/// `{a="x",b="y"}` → pairs and the rest of the line.
fn labels(s: &str) -> Result<(Labels, &str), String> {
    let mut rest = &s[1..];
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((out, r));
        }
        let (name, r) = rest.split_once('=').ok_or("label without '='")?;
        let name = name.trim();
        if !valid_name(name) || name.contains(':') {
            return Err(format!("invalid label name '{name}'"));
        }
        let r = r.trim_start().strip_prefix('"').ok_or("label value without quotes")?;
        // The closing quote is the first one not escaped.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in r.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = end.ok_or("unterminated label value")?;
        if out.iter().any(|(n, _)| n == name) {
            return Err(format!("label '{name}' given twice"));
        }
        out.push((name.to_string(), unescape(&r[..end], true)));
        rest = r[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if v.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')) => v.parse().ok(),
        _ => None,
    }
}

/// The family a sample named `name` belongs to, given the TYPEs seen so far.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, MetricType>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            match types.get(base) {
                Some(MetricType::HISTOGRAM) => return base,
                Some(MetricType::SUMMARY) if suffix != "_bucket" => return base,
                _ => {}
            }
        }
    }
    name
}

/// Parses one file, or says why the whole file is rejected.
fn parse_file(text: &str, file: &str) -> Result<BTreeMap<String, TextFamily>, String> {
    let mut types: BTreeMap<String, MetricType> = BTreeMap::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut samples: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), rest) => {
                    let before = helps.insert(name.to_string(), unescape(rest.unwrap_or("").trim(), false));
                    if before.is_some() {
                        return Err(format!("line {n}: second HELP for {name}"));
                    }
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    let kind = match kind.trim() {
                        "counter" => MetricType::COUNTER,
                        "gauge" => MetricType::GAUGE,
                        "untyped" => MetricType::UNTYPED,
                        "histogram" => MetricType::HISTOGRAM,
                        "summary" => MetricType::SUMMARY,
                        other => return Err(format!("line {n}: unknown type '{other}'")),
                    };
                    if samples.contains_key(name) || types.insert(name.to_string(), kind).is_some() {
                        return Err(format!("line {n}: TYPE for {name} after its samples or twice"));
                    }
                }
                _ => {}
            }
            continue;
        }
        let name_end = line.find(|c: char| c == '{' || c.is_ascii_whitespace()).unwrap_or(line.len());
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(format!("line {n}: invalid metric name '{name}'"));
        }
        let rest = &line[name_end..];
        let (mut labels, rest) = if rest.starts_with('{') {
            labels(rest).map_err(|e| format!("line {n}: {e}"))?
        } else {
            (Vec::new(), rest)
        };
        let mut fields = rest.split_ascii_whitespace();
        let value = fields.next().ok_or_else(|| format!("line {n}: no value"))?;
        let value = parse_value(value).ok_or_else(|| format!("line {n}: '{value}' is not a number"))?;
        if fields.next().is_some() {
            return Err(format!("line {n}: samples with timestamps are not supported (as in node_exporter)"));
        }
        labels.sort();
        let family = family_of(name, &types).to_string();
        samples.entry(family).or_default().push(Sample { name: name.to_string(), labels, value });
    }
    Ok(samples
        .into_iter()
        .map(|(name, samples)| {
            let kind = types.get(&name).copied().unwrap_or(MetricType::UNTYPED);
            let help = helps.get(&name).cloned();
            (name, TextFamily { help, kind, samples, files: vec![file.to_string()] })
        })
        .collect())
}

/// Adds one file's families to `all`. A family whose HELP or type differs from the same
/// family in an earlier file is dropped; the conflicts are returned.
fn merge(all: &mut BTreeMap<String, TextFamily>, file: BTreeMap<String, TextFamily>) -> Vec<String> {
    let mut conflicts = Vec::new();
    for (name, f) in file {
        match all.get_mut(&name) {
            None => {
                all.insert(name, f);
            }
            Some(have) => {
                if have.kind != f.kind || (f.help.is_some() && have.help.is_some() && f.help != have.help) {
                    conflicts.push(format!("{name}: other HELP or TYPE than in {}", have.files.join(", ")));
                    continue;
                }
                have.help = have.help.take().or(f.help);
                have.samples.extend(f.samples);
                have.files.extend(f.files);
            }
        }
    }
    conflicts
}

fn label_pairs(labels: &[(String, String)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(k, v)| {
            let mut lp = LabelPair::default();
            lp.set_name(k.clone());
            lp.set_value(v.clone());
            lp
        })
        .collect()
}

/// The `MetricFamily` for a parsed family: labels unioned ("" where missing), histograms and
/// summaries assembled from their `_bucket`/`_sum`/`_count` (or quantile) lines.
fn build(name: &str, f: TextFamily) -> Family {
    let special = match f.kind {
        MetricType::HISTOGRAM => Some("le"),
        MetricType::SUMMARY => Some("quantile"),
        _ => None,
    };
    let all: BTreeSet<&str> = f
        .samples
        .iter()
        .flat_map(|s| s.labels.iter().map(|(k, _)| k.as_str()))
        .filter(|k| Some(*k) != special)
        .collect();
    let full = |s: &Sample| -> Vec<(String, String)> {
        all.iter()
            .map(|k| {
                let v = s.labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
                (k.to_string(), v)
            })
            .collect()
    };
    let help = f.help.clone().unwrap_or_else(|| format!("Metric read from {}", f.files.join(", ")));
    let mut metrics: Vec<Metric> = Vec::new();
    match special {
        None => {
            let mut fam = match f.kind {
                MetricType::COUNTER => Family::counter(name.to_string(), help.clone()),
                MetricType::GAUGE => Family::gauge(name.to_string(), help.clone()),
                _ => Family::untyped(name.to_string(), help.clone()),
            };
            let mut seen = HashSet::new();
            for s in &f.samples {
                let l = full(s);
                if seen.insert(l.clone()) {
                    let refs: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    fam.push(&refs, s.value);
                }
            }
            return fam;
        }
        Some(special) => {
            // One histogram/summary per label set without `le`/`quantile`.
            let mut groups: BTreeMap<Vec<(String, String)>, Vec<&Sample>> = BTreeMap::new();
            for s in &f.samples {
                groups.entry(full(s)).or_default().push(s);
            }
            for (labels, samples) in groups {
                let mut m = Metric::default();
                m.set_label(label_pairs(&labels));
                let sum = samples.iter().find(|s| s.name.ends_with("_sum")).map_or(0.0, |s| s.value);
                let count = samples.iter().find(|s| s.name.ends_with("_count")).map_or(0.0, |s| s.value);
                let points = samples.iter().filter_map(|s| {
                    let at = s.labels.iter().find(|(k, _)| k == special)?;
                    Some((parse_value(&at.1)?, s.value))
                });
                if f.kind == MetricType::HISTOGRAM {
                    let mut h = Histogram::default();
                    h.set_sample_sum(sum);
                    h.set_sample_count(count as u64);
                    let mut buckets: Vec<(f64, f64)> = points.filter(|(le, _)| le.is_finite()).collect();
                    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                    h.set_bucket(
                        buckets
                            .into_iter()
                            .map(|(le, c)| {
                                let mut b = Bucket::default();
                                b.set_upper_bound(le);
                                b.set_cumulative_count(c as u64);
                                b
                            })
                            .collect(),
                    );
                    m.set_histogram(h);
                } else {
                    let mut q = Summary::default();
                    q.set_sample_sum(sum);
                    q.set_sample_count(count as u64);
                    let mut qs: Vec<(f64, f64)> = points.collect();
                    qs.sort_by(|a, b| a.0.total_cmp(&b.0));
                    q.set_quantile(
                        qs.into_iter()
                            .map(|(at, v)| {
                                let mut x = Quantile::default();
                                x.set_quantile(at);
                                x.set_value(v);
                                x
                            })
                            .collect(),
                    );
                    m.set_summary(q);
                }
                metrics.push(m);
            }
        }
    }
    let mut mf = MetricFamily::default();
    mf.set_name(name.to_string());
    mf.set_help(help);
    mf.set_field_type(f.kind);
    mf.set_metric(metrics);
    Family::from_proto(mf)
}

impl Collect for TextfileCollector {
    fn name(&self) -> &'static str {
        "textfile"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let mut error = false;
        let mut failing_now = HashSet::new();
        let mut mtimes = Family::gauge("node_textfile_mtime_seconds", "Unixtime mtime of textfiles successfully read.");
        let mut families: BTreeMap<String, TextFamily> = BTreeMap::new();
        if let Some(dir) = &self.dir {
            let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
                Ok(entries) => entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "prom"))
                    .collect(),
                Err(e) => {
                    failing_now.insert(dir.clone());
                    self.report(dir, &e.to_string(), "cannot read the textfile directory");
                    error = true;
                    Vec::new()
                }
            };
            files.sort();
            for path in files {
                let file = path.display().to_string();
                let parsed = std::fs::read_to_string(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|text| parse_file(&text, &file))
                    .and_then(|fams| mtime(&path).map(|t| (fams, t)).map_err(|e| e.to_string()));
                match parsed {
                    Ok((fams, secs)) => {
                        mtimes.push(&[("file", &file)], secs);
                        let conflicts = merge(&mut families, fams);
                        if !conflicts.is_empty() {
                            failing_now.insert(path.clone());
                            self.report(
                                &path,
                                &conflicts.join("; "),
                                "textfile families dropped; node_textfile_scrape_error is 1",
                            );
                            error = true;
                        }
                    }
                    Err(e) => {
                        failing_now.insert(path.clone());
                        self.report(&path, &e, "textfile skipped; node_textfile_scrape_error is 1");
                        error = true;
                    }
                }
            }
        }
        use std::sync::atomic::Ordering;
        let total = self.errors.fetch_add(failing_now.len() as u64, Ordering::Relaxed) + failing_now.len() as u64;
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = failing_now;
        let mut c = Family::counter(
            "vigil_node_textfile_errors_total",
            "Textfiles (or the textfile directory) found unreadable, unparsable or conflicting, counted once per scrape.",
        );
        c.push(&[], total as f64);
        out.push(c.finish());
        for (name, f) in families {
            out.push(build(&name, f));
        }
        mtimes.finish_into(out);
        let mut e = Family::gauge(
            "node_textfile_scrape_error",
            "1 if there was an error opening or reading a file, 0 otherwise",
        );
        e.push(&[], if error { 1.0 } else { 0.0 });
        out.push(e.finish());
        Ok(())
    }
}

impl TextfileCollector {
    /// Logs a bad file or directory the first scrape it is bad.
    fn report(&self, path: &Path, error: &str, msg: &'static str) {
        if self.failing.lock().unwrap_or_else(|p| p.into_inner()).contains(path) {
            tracing::debug!(path = %path.display(), %error, "{msg}");
        } else {
            tracing::warn!(path = %path.display(), %error, "{msg}");
        }
    }
}

/// A file's mtime in whole Unix seconds (truncated, as node_exporter).
fn mtime(path: &Path) -> std::io::Result<f64> {
    let m = std::fs::metadata(path)?.modified()?;
    Ok(m.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as f64).unwrap_or(0.0))
}
