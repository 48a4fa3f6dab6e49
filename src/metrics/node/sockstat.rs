//! `sockstat`: `node_sockstat_*` gauges from `net/sockstat` and `net/sockstat6`, lines of
//! `PROTO: key value key value ...`, as node_exporter: `node_sockstat_sockets_used` (IPv4 file
//! only), `node_sockstat_<PROTO>_<key>` for inuse, orphan, tw, alloc, mem and memory, and
//! `<PROTO>_mem_bytes` = mem (pages) × page size. Read from PID 1's network namespace (see
//! `NetFile`). A missing file is skipped (no IPv6).

use super::{ByLine, Collect, Error, Family, NetFile, Paths, Scrape, Text, by_line, parse_err};

const KEYS: [&str; 6] = ["inuse", "orphan", "tw", "alloc", "mem", "memory"];

pub(super) struct SockstatCollector {
    v4: NetFile,
    v6: NetFile,
    page_size: f64,
    /// Per `PROTO key` pair: the family's name and help, and those of `_mem_bytes` for `mem`.
    names: ByLine<Named>,
}

type Named = ((Text, Text), Option<(Text, Text)>);

fn naming(proto: &str, key: &str) -> Named {
    let family = |key: &str| -> (Text, Text) {
        (format!("node_sockstat_{proto}_{key}").into(), format!("Number of {proto} sockets in state {key}.").into())
    };
    (family(key), (key == "mem").then(|| family("mem_bytes")))
}

impl SockstatCollector {
    pub fn new(paths: &Paths) -> Self {
        // SAFETY: sysconf only reads a constant of the process.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Self {
            v4: NetFile::new(paths, "sockstat"),
            v6: NetFile::new(paths, "sockstat6"),
            page_size: if page_size > 0 { page_size as f64 } else { 4096.0 },
            names: ByLine::new(),
        }
    }
}

impl Collect for SockstatCollector {
    fn name(&self) -> &'static str {
        "sockstat"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let mut names = self.names.lock();
        let (mut at, mut pair) = (0, String::with_capacity(32));
        for (file, v4) in [(&self.v4, true), (&self.v6, false)] {
            let (text, path) = match file.read() {
                Ok(t) => t,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let Some((proto, rest)) = line.split_once(':') else {
                    return Err(parse_err(path, format!("line without 'PROTO:': {line}")));
                };
                let words: Vec<&str> = rest.split_ascii_whitespace().collect();
                if words.len() % 2 != 0 {
                    return Err(parse_err(path, format!("odd number of fields: {line}")));
                }
                for kv in words.chunks(2) {
                    let (key, value) = (kv[0], kv[1]);
                    let v: u64 = value
                        .parse()
                        .map_err(|_| parse_err(path, format!("{proto} {key}: '{value}' is not a number")))?;
                    if proto == "sockets" {
                        if v4 && key == "used" {
                            let mut f = Family::gauge("node_sockstat_sockets_used", "Number of IPv4 sockets in use.");
                            f.push(&[], v as f64);
                            out.push(f.finish());
                        }
                        continue;
                    }
                    if !KEYS.contains(&key) {
                        continue;
                    }
                    pair.clear();
                    pair.push_str(proto);
                    pair.push(' ');
                    pair.push_str(key);
                    let ((name, help), mem_bytes) = by_line(&mut names, &mut at, &pair, || naming(proto, key));
                    let mut f = Family::gauge(name.clone(), help.clone());
                    f.push(&[], v as f64);
                    out.push(f.finish());
                    if let Some((name, help)) = mem_bytes {
                        let mut f = Family::gauge(name.clone(), help.clone());
                        f.push(&[], v as f64 * self.page_size);
                        out.push(f.finish());
                    }
                }
            }
        }
        Ok(())
    }
}
