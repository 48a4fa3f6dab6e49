//! The regression guard: `--quick` measures CPU-s/GB of CRI and docker json-file to the file
//! sink (best of `--repeat` runs, the spread reported); `--check FILE` fails (exit 1) when a
//! best run is more than `--tolerance` (default 30%) above the baseline in FILE;
//! `--write-baseline FILE` writes one.
//!
//! Baseline format, one case per line: `<case> <CPU-s/GB>`; `#` starts a comment.

use std::collections::BTreeMap;
use std::path::Path;

pub fn read(path: &Path) -> Result<BTreeMap<String, f64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        let (Some(case), Some(v), None) = (it.next(), it.next(), it.next()) else {
            return Err(format!("{}:{}: expected '<case> <CPU-s/GB>'", path.display(), n + 1));
        };
        let v: f64 = v.parse().map_err(|_| format!("{}:{}: '{v}' is not a number", path.display(), n + 1))?;
        out.insert(case.to_string(), v);
    }
    Ok(out)
}

pub fn write(path: &Path, results: &BTreeMap<String, f64>, header: &str) -> std::io::Result<()> {
    let mut text = format!("# {header}\n");
    for (case, v) in results {
        text.push_str(&format!("{case} {v:.2}\n"));
    }
    std::fs::write(path, text)
}

/// Compares; returns the failing cases' messages.
pub fn compare(baseline: &BTreeMap<String, f64>, results: &BTreeMap<String, f64>, tolerance: f64) -> Vec<String> {
    let mut failed = Vec::new();
    for (case, &base) in baseline {
        match results.get(case) {
            Some(&got) if got > base * (1.0 + tolerance) => failed.push(format!(
                "{case}: {got:.2} CPU-s/GB is {:.0}% above the baseline {base:.2} (tolerance {:.0}%)",
                (got / base - 1.0) * 100.0,
                tolerance * 100.0
            )),
            Some(_) => {}
            None => failed.push(format!("{case}: in the baseline but not measured")),
        }
    }
    failed
}
