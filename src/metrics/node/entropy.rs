//! `entropy`: `node_entropy_available_bits` and `node_entropy_pool_size_bits` from
//! `<procfs>/sys/kernel/random/{entropy_avail,poolsize}`, as node_exporter's entropy collector.
//! Either file missing fails the collector (upstream treats it as a real error, not "no data").

use super::{Buf, Collect, Error, Family, Paths, Scrape, parse_err};
use std::path::PathBuf;

pub(super) struct EntropyCollector {
    avail: PathBuf,
    pool: PathBuf,
    /// One per file, so each is kept open (see `Buf`).
    bufs: [Buf; 2],
}

impl EntropyCollector {
    pub fn new(paths: &Paths) -> Self {
        Self {
            avail: paths.proc("sys/kernel/random/entropy_avail"),
            pool: paths.proc("sys/kernel/random/poolsize"),
            bufs: [Buf::new(), Buf::new()],
        }
    }
}

impl Collect for EntropyCollector {
    fn name(&self) -> &'static str {
        "entropy"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        for (path, buf, name, help) in [
            (&self.avail, &self.bufs[0], "node_entropy_available_bits", "Bits of available entropy."),
            (&self.pool, &self.bufs[1], "node_entropy_pool_size_bits", "Bits of entropy pool."),
        ] {
            let text = buf.read(path)?;
            let v: u64 =
                text.trim().parse().map_err(|_| parse_err(path, format!("'{}' is not a number", text.trim())))?;
            let mut f = Family::gauge(name, help);
            f.push(&[], v as f64);
            out.push(f.finish());
        }
        Ok(())
    }
}
