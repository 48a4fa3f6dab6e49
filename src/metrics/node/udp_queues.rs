//! `udp_queues`: `node_udp_queues{ip,queue}`, the bytes waiting in every UDP socket's send and
//! receive queues summed, from the `tx_queue:rx_queue` column (hex) of `<procfs>/net/udp` and
//! `udp6`, as node_exporter's udp_queues collector. A missing file drops its `ip` series; both
//! missing is "no data".
//!
//! The files are read from `<procfs>/1/net/` (fallback `<procfs>/net/`), the node's network
//! namespace, for the reason given in `netdev`.

use super::{Buf, Collect, Error, Family, Paths, Scrape, parse_err};
use std::path::{Path, PathBuf};

/// The longest line of net/udp (128 bytes, padded) and net/udp6 (about 170) with room to spare:
/// a first read shorter than a page minus this is the whole table (see `Buf::read_records`).
const MAX_RECORD: usize = 512;

pub(super) struct UdpQueuesCollector {
    /// (ip label, file, fallback, its own buffer so each is kept open: see `Buf`).
    files: [(&'static str, PathBuf, PathBuf, Buf); 2],
}

impl UdpQueuesCollector {
    pub fn new(paths: &Paths) -> Self {
        Self {
            files: [
                ("v4", paths.proc("1/net/udp"), paths.proc("net/udp"), Buf::new()),
                ("v6", paths.proc("1/net/udp6"), paths.proc("net/udp6"), Buf::new()),
            ],
        }
    }
}

/// (tx, rx) bytes summed over the sockets of one /proc/net/udp{,6} table.
fn sum_queues(path: &Path, text: &str) -> Result<(u64, u64), Error> {
    let (mut tx, mut rx) = (0u64, 0u64);
    // `sl local_address rem_address st tx_queue:rx_queue ...`, after one header line.
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let queues = line
            .split_ascii_whitespace()
            .nth(4)
            .ok_or_else(|| parse_err(path, format!("fewer than 5 columns in '{line}'")))?;
        let (t, r) = queues
            .split_once(':')
            .and_then(|(t, r)| Some((u64::from_str_radix(t, 16).ok()?, u64::from_str_radix(r, 16).ok()?)))
            .ok_or_else(|| parse_err(path, format!("'{queues}' is not tx_queue:rx_queue in hex")))?;
        tx += t;
        rx += r;
    }
    Ok((tx, rx))
}

impl Collect for UdpQueuesCollector {
    fn name(&self) -> &'static str {
        "udp_queues"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let mut f =
            Family::gauge("node_udp_queues", "Number of allocated memory in the kernel for UDP datagrams in bytes.");
        for (ip, path, fallback, buf) in &self.files {
            let (text, path) = match buf.read_records(path, MAX_RECORD) {
                Ok(t) => (t, path),
                Err(_) => match buf.read_records(fallback, MAX_RECORD) {
                    Ok(t) => (t, fallback),
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e),
                },
            };
            let (tx, rx) = sum_queues(path, &text)?;
            f.push(&[("ip", ip), ("queue", "rx")], rx as f64);
            f.push(&[("ip", ip), ("queue", "tx")], tx as f64);
        }
        if f.is_empty() {
            return Err(Error::NoData("neither net/udp nor net/udp6 exists".into()));
        }
        f.finish_into(out);
        Ok(())
    }
}
