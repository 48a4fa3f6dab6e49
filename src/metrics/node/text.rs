//! The text exposition format of `/metrics`, written straight from the node collector's
//! [`Family`] values and the rest of the registry's protobuf families, in the order and bytes
//! `prometheus::TextEncoder` gives.

use super::*;

thread_local! {
    /// Set while `render_text` gathers the registry: the node collector then hands its
    /// families over here instead of returning them as protobuf.
    pub(super) static CAPTURED: std::cell::RefCell<Option<Vec<Family>>> = const { std::cell::RefCell::new(None) };
}

/// Gathers `registry` and writes everything in the text format, the node collector's families
/// directly from [`Family`] (no protobuf round trip). The output is the one
/// `TextEncoder::encode(registry.gather())` would give: families sorted by name, same-named
/// families merged, metrics sorted by label values.
pub fn render_text(registry: &Registry, out: &mut Vec<u8>, encode: impl Fn(&[MetricFamily], &mut Vec<u8>)) {
    CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let gathered = registry.gather();
    let mut node = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    // Sorted by name (stable), as gather does. The indices are sorted, not the families (a
    // family is over a hundred bytes, an index four). Collectors emit the same families in the
    // same order at every scrape, so the last order is checked first (one comparison per
    // family); only if it no longer sorts them is there a sort.
    let mut by_name = std::mem::take(&mut *LAST_ORDER.lock().unwrap_or_else(|p| p.into_inner()));
    let key = |i: u32| (node[i as usize].name(), i);
    if by_name.len() != node.len() || !by_name.windows(2).all(|w| key(w[0]) < key(w[1])) {
        by_name.clear();
        by_name.extend(0..node.len() as u32);
        by_name.sort_by(|&a, &b| node[a as usize].name().cmp(node[b as usize].name()));
    }
    let (mut g, mut n) = (gathered.as_slice(), by_name.as_slice());
    fn name<'a>(node: &'a [Family], n: &[u32]) -> Option<&'a str> {
        n.first().map(|&i| &*node[i as usize].name)
    }
    while !g.is_empty() || !n.is_empty() {
        let take_gathered = match (g.first(), name(&node, n)) {
            (Some(a), Some(b)) => a.name() <= b,
            (Some(_), None) => true,
            _ => false,
        };
        if take_gathered {
            let run = g.iter().take_while(|f| name(&node, n).is_none_or(|b| f.name() <= b)).count();
            encode(&g[..run], out);
            g = &g[run..];
            continue;
        }
        // Families of the same name (from different collectors) go out as one, as gather
        // merges them.
        let same = n.iter().take_while(|&&i| *node[i as usize].name == *node[n[0] as usize].name).count();
        let merged;
        let f = if same == 1 {
            &node[n[0] as usize]
        } else {
            let mut first = std::mem::replace(&mut node[n[0] as usize], Family::gauge("", ""));
            for &i in &n[1..same] {
                first.append(std::mem::replace(&mut node[i as usize], Family::gauge("", "")));
            }
            merged = first;
            &merged
        };
        match &f.proto {
            Some(p) => encode(std::slice::from_ref(p), out),
            None => write_text(f, out),
        }
        n = &n[same..];
    }
    node.clear();
    if node.capacity() <= MAX_KEPT_FAMILIES {
        *SPARE_FAMILIES.lock().unwrap_or_else(|p| p.into_inner()) = node;
        *LAST_ORDER.lock().unwrap_or_else(|p| p.into_inner()) = by_name;
    }
}

/// The order (indices into the node collector's list) of the last render's families.
static LAST_ORDER: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// The node collector's list of families, kept (empty) from one `/metrics` render to the next so
/// a scrape does not allocate, grow and free it (some 70 KB, whose allocation also made glibc
/// consolidate its fast bins at every scrape).
pub(super) static SPARE_FAMILIES: Mutex<Vec<Family>> = Mutex::new(Vec::new());

/// A list longer than this (a one-off huge textfile) is not kept.
const MAX_KEPT_FAMILIES: usize = 4096;

/// One family in the Prometheus text format 0.0.4, byte for byte as before: typed families as
/// the `prometheus` crate's `TextEncoder` writes them (no HELP line when the help is empty,
/// values by `f64`'s `Display`), untyped ones as `server`'s writer (HELP always, `+Inf`).
pub(super) fn write_text(f: &Family, out: &mut Vec<u8>) {
    let untyped = f.kind == MetricType::UNTYPED;
    if untyped || !f.help.is_empty() {
        out.extend_from_slice(b"# HELP ");
        out.extend_from_slice(f.name.as_bytes());
        out.push(b' ');
        escape(&f.help, false, out);
        out.push(b'\n');
    }
    out.extend_from_slice(b"# TYPE ");
    out.extend_from_slice(f.name.as_bytes());
    out.extend_from_slice(match f.kind {
        MetricType::COUNTER => b" counter\n",
        MetricType::GAUGE => b" gauge\n",
        MetricType::HISTOGRAM => b" histogram\n",
        MetricType::SUMMARY => b" summary\n",
        _ => b" untyped\n",
    });
    let order = f.order();
    for i in 0..f.samples.len() {
        let i = order.as_ref().map_or(i, |o| o[i]);
        out.extend_from_slice(f.name.as_bytes());
        let mut first = true;
        for (k, v) in f.labels(i) {
            out.push(if first { b'{' } else { b',' });
            first = false;
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"=\"");
            escape(v, true, out);
            out.push(b'"');
        }
        if !first {
            out.push(b'}');
        }
        out.push(b' ');
        match f.samples[i].1 {
            v if untyped && v.is_infinite() => out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" }),
            v => write_value(v, out),
        }
        out.push(b'\n');
    }
}

/// `v` as `f64`'s `Display` writes it. Most node values are whole numbers (counters, bytes,
/// flags), which `Display` writes as their digits: those skip the float formatting.
pub(super) fn write_value(v: f64, out: &mut Vec<u8>) {
    use std::io::Write;
    // Below 2^53 every whole f64 is exact and `Display` writes its plain digits; -0.0 is "-0".
    if v.fract() == 0.0 && v.abs() < 9.0e15 && !(v == 0.0 && v.is_sign_negative()) {
        let mut n = v as i64;
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let negative = n < 0;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10).unsigned_abs() as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if negative {
            out.push(b'-');
        }
        out.extend_from_slice(&digits[at..]);
        return;
    }
    let _ = write!(out, "{v}");
}

/// The text format's escaping: `\\` and newline always, `"` in label values.
fn escape(s: &str, quote: bool, out: &mut Vec<u8>) {
    if !s.bytes().any(|b| b == b'\\' || b == b'\n' || (quote && b == b'"')) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if quote => out.extend_from_slice(b"\\\""),
            _ => out.push(b),
        }
    }
}
