//! Reading the kernel's text files into buffers kept between scrapes.

use super::*;

/// A read buffer kept between scrapes. procfs files report size 0, so `fs::read_to_string`
/// starts from an empty buffer and grows it read by read; reading into a kept buffer costs no
/// allocation and one or two read(2) calls per file.
///
/// A procfs or sysfs file is also kept open: the kernel writes such a file's text afresh when
/// it is read from offset 0, so the next scrape seeks back and reads again, instead of opening
/// (a path walk; under `/proc/1/net` a PID lookup too) and closing it every time. Only for
/// those two filesystems (checked with fstatfs when the file is opened): a regular file (a
/// fixture tree in tests) may be replaced by another, which an open descriptor would not see.
/// A file that read empty is not kept: seq_file does not start over on a seek to 0 from 0.
pub(crate) struct Buf {
    text: Mutex<String>,
    /// The open file and its path.
    pub(super) kept: Mutex<Option<(PathBuf, std::fs::File)>>,
}

impl Buf {
    pub fn new() -> Self {
        Buf { text: Mutex::new(String::with_capacity(8192)), kept: Mutex::new(None) }
    }

    pub fn read(&self, path: &Path) -> Result<MutexGuard<'_, String>, Error> {
        self.read_raw(path).map_err(|error| Error::Read { path: path.to_path_buf(), error })
    }

    pub(super) fn read_raw(&self, path: &Path) -> std::io::Result<MutexGuard<'_, String>> {
        self.read_kept(path, None)
    }

    /// Reads a procfs seq_file of records no longer than `max_record` bytes. Such a file's
    /// read(2) fills the kernel's buffer (at least a page) with whole records and stops only
    /// when the next one does not fit, when the caller's buffer is full, or at the end: so a
    /// first read from a kept file that returns less than a page minus `max_record` (into a
    /// larger buffer) got the whole text, and the read that would return 0 is skipped. That
    /// read is not free: the kernel seeks to the end by walking the table again (net/udp walks
    /// every bucket of the UDP hash). A longer text is read to EOF as any other file.
    pub fn read_records(&self, path: &Path, max_record: usize) -> Result<MutexGuard<'_, String>, Error> {
        self.read_kept(path, Some(max_record)).map_err(|error| Error::Read { path: path.to_path_buf(), error })
    }

    fn read_kept(&self, path: &Path, max_record: Option<usize>) -> std::io::Result<MutexGuard<'_, String>> {
        use std::io::{Read, Seek};
        let mut text = self.text.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        text.clear();
        if let Some((kept_path, file)) = kept.as_mut().filter(|(p, _)| p == path) {
            if max_record.is_some_and(|max| first_read_whole(file, &mut text, max)) {
                return Ok(text);
            }
            let again = file.rewind().and_then(|()| file.take(u64::MAX).read_to_string(&mut text));
            match again {
                Ok(n) if n > 0 => return Ok(text),
                // Gone (a device removed, a process ended) or empty: open it again.
                _ => {
                    tracing::trace!(path = %kept_path.display(), "node: kept file reopened");
                    text.clear();
                }
            }
        }
        let mut file = std::fs::File::open(path)?;
        let n = (&mut file).take(u64::MAX).read_to_string(&mut text)?;
        *kept = (n > 0 && generated_by_kernel(&file)).then(|| (path.to_path_buf(), file));
        Ok(text)
    }
}

/// One read(2) at offset 0 of a kept seq_file into `text` (cleared); true if it got the whole
/// text (see [`Buf::read_records`]): at least one byte, and less than a page minus `max_record`.
/// Else `text` is left empty.
fn first_read_whole(file: &std::fs::File, text: &mut String, max_record: usize) -> bool {
    use std::os::unix::fs::FileExt;
    const PAGE: usize = 4096;
    let mut bytes = std::mem::take(text).into_bytes();
    bytes.clear();
    bytes.resize(2 * PAGE, 0);
    let n = file.read_at(&mut bytes, 0).unwrap_or(0);
    bytes.truncate(n);
    let whole = n > 0 && n + max_record <= PAGE;
    match String::from_utf8(bytes) {
        Ok(s) if whole => {
            *text = s;
            true
        }
        Ok(s) => {
            *text = s;
            text.clear();
            false
        }
        Err(e) => {
            let mut bytes = e.into_bytes();
            bytes.clear();
            *text = String::from_utf8(bytes).unwrap_or_default();
            false
        }
    }
}

/// Whether `file` is on procfs or sysfs, whose files the kernel generates at each read.
pub(crate) fn generated_by_kernel(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    const SYSFS_MAGIC: i64 = 0x6265_6572;
    // SAFETY: `fs` is a plain C struct for fstatfs to fill; the descriptor is open.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0 {
        return false;
    }
    matches!(fs.f_type as i64, PROC_SUPER_MAGIC | SYSFS_MAGIC)
}

/// Reads the whole file at `path` into `text` (cleared first), reusing its capacity.
/// `File::read_to_string` asks the file's size (statx) and position (lseek) first to size the
/// buffer, which /proc and /sys files do not know (they report 0): two system calls per file
/// for nothing. Through `Take` (which has no size hint), std's generic loop reads straight into
/// the spare capacity until EOF. Not through a reader that has only `read`: std then zeroes the
/// whole spare capacity before reading into it, for every file (a 64 KiB memset per read).
pub(crate) fn read_into(path: &Path, text: &mut String) -> std::io::Result<()> {
    use std::io::Read;
    text.clear();
    std::fs::File::open(path)?.take(u64::MAX).read_to_string(text).map(drop)
}
