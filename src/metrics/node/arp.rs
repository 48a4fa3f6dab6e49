//! `arp`: `node_arp_entries{device}`, the IPv4 neighbour entries per interface, as
//! node_exporter's arp collector.
//!
//! Upstream asks rtnetlink (RTM_GETNEIGH, AF_INET) by default and counts the entries without
//! NUD_NOARP; vigil reads `<procfs>/1/net/arp` (fallback `<procfs>/net/arp`), which the kernel
//! writes from the same ARP table, skipping the same NUD_NOARP entries, so the counts agree
//! without a netlink socket. Reading PID 1's file gives the node's network namespace without
//! `hostNetwork` (see `netdev`); netlink would see only vigil's own namespace.

use super::{Buf, Collect, Error, Family, Paths, Scrape};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub(super) struct ArpCollector {
    path: PathBuf,
    fallback: PathBuf,
    buf: Buf,
}

impl ArpCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { path: paths.proc("1/net/arp"), fallback: paths.proc("net/arp"), buf: Buf::new() }
    }
}

impl Collect for ArpCollector {
    fn name(&self) -> &'static str {
        "arp"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let text = match self.buf.read(&self.path) {
            Ok(t) => t,
            Err(_) => self.buf.read(&self.fallback)?,
        };
        // `IP address  HW type  Flags  HW address  Mask  Device`, one header line.
        let mut per_device: BTreeMap<&str, u64> = BTreeMap::new();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_ascii_whitespace().collect();
            if cols.len() == 6 {
                *per_device.entry(cols[5]).or_default() += 1;
            }
        }
        let mut f = Family::gauge("node_arp_entries", "ARP entries by device");
        for (device, n) in per_device {
            f.push(&[("device", device)], n as f64);
        }
        f.finish_into(out);
        Ok(())
    }
}
