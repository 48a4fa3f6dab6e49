//! `filefd`: `node_filefd_allocated` and `node_filefd_maximum` from `<procfs>/sys/fs/file-nr`
//! (allocated, unused, maximum; node_exporter ignores the middle field, so does vigil).

use super::{Buf, Collect, Error, Family, Paths, Scrape, parse_err};
use std::path::PathBuf;

pub(super) struct FilefdCollector {
    path: PathBuf,
    buf: Buf,
}

impl FilefdCollector {
    pub fn new(paths: &Paths) -> Self {
        Self { path: paths.proc("sys/fs/file-nr"), buf: Buf::new() }
    }
}

impl Collect for FilefdCollector {
    fn name(&self) -> &'static str {
        "filefd"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let text = self.buf.read(&self.path)?;
        let fields: Vec<&str> = text.split_ascii_whitespace().collect();
        let [allocated, _, maximum] = fields[..] else {
            return Err(parse_err(&self.path, format!("{} fields, expected 3", fields.len())));
        };
        for (name, help, value) in [
            ("node_filefd_allocated", "File descriptor statistics: allocated.", allocated),
            ("node_filefd_maximum", "File descriptor statistics: maximum.", maximum),
        ] {
            let v: u64 = value.parse().map_err(|_| parse_err(&self.path, format!("'{value}' is not a number")))?;
            let mut f = Family::gauge(name, help);
            f.push(&[], v as f64);
            out.push(f.finish());
        }
        Ok(())
    }
}
