//! `filefd`: `node_filefd_allocated` and `node_filefd_maximum` from `<procfs>/sys/fs/file-nr`
//! (allocated, unused, maximum; node_exporter ignores the middle field, so does vigil).

use super::{Collect, Error, Family, Paths, Scrape, parse_err, read_file};
use std::path::PathBuf;

pub(super) struct FilefdCollector {
    path: PathBuf,
}

impl FilefdCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { path: paths.proc("sys/fs/file-nr") }
    }
}

impl Collect for FilefdCollector {
    fn name(&self) -> &'static str {
        "filefd"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let text = read_file(&self.path)?;
        let fields: Vec<&str> = text.split_ascii_whitespace().collect();
        let [allocated, _, maximum] = fields[..] else {
            return Err(parse_err(&self.path, format!("{} fields, expected 3", fields.len())));
        };
        for (name, value) in [("allocated", allocated), ("maximum", maximum)] {
            let v: u64 = value.parse().map_err(|_| parse_err(&self.path, format!("'{value}' is not a number")))?;
            let mut f = Family::gauge(format!("node_filefd_{name}"), format!("File descriptor statistics: {name}."));
            f.push(&[], v as f64);
            out.push(f.finish());
        }
        Ok(())
    }
}
