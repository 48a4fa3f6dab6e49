//! `uname`: `node_uname_info` from uname(2), in vigil's own UTS namespace (the node's with
//! `hostNetwork: true`, which shares it), as node_exporter.

use super::{Collect, Error, Family, Scrape};
use std::ffi::CStr;

pub(super) struct UnameCollector;

impl Collect for UnameCollector {
    fn name(&self) -> &'static str {
        "uname"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        // SAFETY: uname fills the zeroed struct; every field is then a NUL-terminated string
        // within its array (the kernel guarantees the terminator).
        let u = unsafe {
            let mut u: libc::utsname = std::mem::zeroed();
            if libc::uname(&mut u) != 0 {
                return Err(Error::Other(format!("uname: {}", std::io::Error::last_os_error())));
            }
            u
        };
        let s = |f: &[libc::c_char]| {
            // SAFETY: see above; the field is NUL-terminated inside its fixed-size array.
            unsafe { CStr::from_ptr(f.as_ptr()) }.to_string_lossy().into_owned()
        };
        let mut f =
            Family::gauge("node_uname_info", "Labeled system information as provided by the uname system call.");
        f.push(
            &[
                ("domainname", &s(&u.domainname)),
                ("machine", &s(&u.machine)),
                ("nodename", &s(&u.nodename)),
                ("release", &s(&u.release)),
                ("sysname", &s(&u.sysname)),
                ("version", &s(&u.version)),
            ],
            1.0,
        );
        out.push(f.finish());
        Ok(())
    }
}
