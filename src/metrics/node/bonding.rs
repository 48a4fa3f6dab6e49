//! `bonding`: `node_bonding_slaves{master}` and `node_bonding_active{master}` (slaves whose MII
//! status is `up`) from `<sysfs>/class/net/bonding_masters` and each master's `bonding/slaves`.
//! A node without the bonding driver has no `bonding_masters`: no data, as node_exporter.

use super::{Collect, Error, Family, Paths, Scrape, read_file};
use std::path::PathBuf;

pub(super) struct BondingCollector {
    dir: PathBuf,
}

impl BondingCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { dir: paths.sys("class/net") }
    }
}

fn no_data_if_missing(e: Error) -> Error {
    if e.is_not_found() { Error::NoData(format!("bonding: {e}")) } else { e }
}

impl Collect for BondingCollector {
    fn name(&self) -> &'static str {
        "bonding"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let masters = read_file(&self.dir.join("bonding_masters")).map_err(no_data_if_missing)?;
        let mut slaves_f = Family::gauge("node_bonding_slaves", "Number of configured slaves per bonding interface.");
        let mut active_f = Family::gauge("node_bonding_active", "Number of active slaves per bonding interface.");
        for master in masters.split_ascii_whitespace() {
            let slaves = read_file(&self.dir.join(master).join("bonding/slaves")).map_err(no_data_if_missing)?;
            let (mut total, mut active) = (0, 0);
            for slave in slaves.split_ascii_whitespace() {
                // Newer kernels link slaves as lower_<slave>, older ones as slave_<slave>.
                let lower = self.dir.join(master).join(format!("lower_{slave}/bonding_slave/mii_status"));
                let status = match read_file(&lower) {
                    Ok(s) => s,
                    Err(e) if e.is_not_found() => {
                        read_file(&self.dir.join(master).join(format!("slave_{slave}/bonding_slave/mii_status")))
                            .map_err(no_data_if_missing)?
                    }
                    Err(e) => return Err(e),
                };
                total += 1;
                active += (status.trim() == "up") as u32;
            }
            slaves_f.push(&[("master", master)], total as f64);
            active_f.push(&[("master", master)], active as f64);
        }
        slaves_f.finish_into(out);
        active_f.finish_into(out);
        Ok(())
    }
}
