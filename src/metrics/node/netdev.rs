//! `netdev`: `node_network_{receive,transmit}_<field>_total{device}` from `<procfs>/net/dev`,
//! under node_exporter's default (legacy) names: receive bytes, packets, errs, drop, fifo,
//! frame, compressed, multicast; transmit bytes, packets, errs, drop, fifo, colls, carrier,
//! compressed. The kernel already sums into these columns what node_exporter's netlink path
//! sums (drop + missed, frame + length/over/CRC, carrier + aborted/heartbeat/window), so the
//! figures agree.
//!
//! The file is `<procfs>/1/net/dev` (fallback `<procfs>/net/dev`): the network namespace of the
//! node's PID 1, as the mount table is read from `<procfs>/1/mounts`. With the node's /proc
//! mounted at /host/proc that is the node's network even without `hostNetwork: true`, which keeps
//! the pod off the host network (and a NetworkPolicy on its metrics port enforceable).
//! node_exporter reads `<procfs>/net/dev`, i.e. its own namespace, and needs host networking for
//! the same figures. Not exported:
//! `receive_nohandler` (netlink-only; /proc/net/dev has no such column).

use super::config::NetdevConfig;
use super::{Buf, Collect, Error, Family, Paths, Scrape, parse_err, regex};
use regex::Regex;
use std::path::PathBuf;

/// (family name, HELP): "Network device statistic receive_bytes." as node_exporter.
const FIELDS: [(&str, &str); 16] = [
    ("node_network_receive_bytes_total", "Network device statistic receive_bytes."),
    ("node_network_receive_packets_total", "Network device statistic receive_packets."),
    ("node_network_receive_errs_total", "Network device statistic receive_errs."),
    ("node_network_receive_drop_total", "Network device statistic receive_drop."),
    ("node_network_receive_fifo_total", "Network device statistic receive_fifo."),
    ("node_network_receive_frame_total", "Network device statistic receive_frame."),
    ("node_network_receive_compressed_total", "Network device statistic receive_compressed."),
    ("node_network_receive_multicast_total", "Network device statistic receive_multicast."),
    ("node_network_transmit_bytes_total", "Network device statistic transmit_bytes."),
    ("node_network_transmit_packets_total", "Network device statistic transmit_packets."),
    ("node_network_transmit_errs_total", "Network device statistic transmit_errs."),
    ("node_network_transmit_drop_total", "Network device statistic transmit_drop."),
    ("node_network_transmit_fifo_total", "Network device statistic transmit_fifo."),
    ("node_network_transmit_colls_total", "Network device statistic transmit_colls."),
    ("node_network_transmit_carrier_total", "Network device statistic transmit_carrier."),
    ("node_network_transmit_compressed_total", "Network device statistic transmit_compressed."),
];

pub(super) struct NetdevCollector {
    path: PathBuf,
    fallback: PathBuf,
    buf: Buf,
    exclude: Option<Regex>,
}

impl NetdevCollector {
    pub fn new(paths: &Paths, config: &NetdevConfig) -> Result<Self, Error> {
        Ok(Self {
            path: paths.proc("1/net/dev"),
            fallback: paths.proc("net/dev"),
            buf: Buf::new(),
            exclude: regex("netdev.device_exclude", &config.device_exclude)?,
        })
    }
}

impl Collect for NetdevCollector {
    fn name(&self) -> &'static str {
        "netdev"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let (text, path) = match self.buf.read(&self.path) {
            Ok(t) => (t, &self.path),
            Err(_) => (self.buf.read(&self.fallback)?, &self.fallback),
        };
        let mut families: Vec<Family> = FIELDS.iter().map(|&(name, help)| Family::counter(name, help)).collect();
        // Two header lines, then `  name: 16 numbers`.
        for line in text.lines().skip(2) {
            let Some((device, rest)) = line.split_once(':') else {
                return Err(parse_err(path, format!("line without 'device:': {line}")));
            };
            let device = device.trim();
            if self.exclude.as_ref().is_some_and(|re| re.is_match(device)) {
                continue;
            }
            let mut values = [0f64; FIELDS.len()];
            let mut n = 0;
            for (slot, field) in values.iter_mut().zip(rest.split_ascii_whitespace()) {
                *slot =
                    field.parse::<u64>().map_err(|_| parse_err(path, format!("{device}: '{field}' is not a number")))?
                        as f64;
                n += 1;
            }
            if n != FIELDS.len() {
                return Err(parse_err(path, format!("{device}: {n} columns, expected 16")));
            }
            for (family, v) in families.iter_mut().zip(values) {
                family.push(&[("device", device)], v);
            }
        }
        for f in families {
            f.finish_into(out);
        }
        Ok(())
    }
}
