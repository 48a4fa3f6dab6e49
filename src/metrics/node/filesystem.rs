//! `filesystem`: `node_filesystem_*{device,fstype,mountpoint}` from the node's mount table and
//! statfs(2), as node_exporter.
//!
//! Mounts come from `<procfs>/1/mounts` (the host's table when vigil shares the host PID
//! namespace), falling back to `<procfs>/mounts` (hidepid). Mount points are reported as the
//! node sees them: with `rootfs: /host`, `/host/var/lib/kubelet` is reported as
//! `/var/lib/kubelet`, and statfs runs on `<rootfs>/<mountpoint>`. Unlike node_exporter's plain
//! string cut, the prefix is stripped only at a path boundary (`/hostdata` stays `/hostdata`).
//!
//! Key decision: a statfs on a dead NFS server blocks in the kernel, uninterruptibly, for as
//! long as the server is gone. statfs therefore runs on a helper thread and the scrape waits at
//! most `statfs_timeout` for it; a mount whose call was given up on is marked stuck and skipped
//! (`device_error` 1, no sizes) until that call returns, so a hung mount costs one parked thread
//! in total, not one per scrape. The scrape as a whole spends at most `statfs_timeout` (plus a
//! short grace per further hung mount) on statfs, so when a server with twenty mounts dies the
//! scrape still answers within Prometheus' timeout instead of taking twenty timeouts.
//! All mounts of a scrape go to the helper as one batch, so the normal case costs one thread
//! wake-up per scrape, not one per mount. Rejected: a thread per statfs (tens of spawns per
//! scrape on a Kubernetes node with many volume mounts); a fixed pool (a few hung mounts would
//! exhaust it and stall every other mount).
//!
//! The mount table is parsed again only when it changed: the kernel marks an open mounts file
//! with POLLPRI after any mount, unmount or remount in its mount namespace (proc(5)), so the
//! file stays open and a scrape polls it (no wait) before reusing the last parse. The kernel
//! writing the table is most of this collector's cost with twenty mounts, and grows with the
//! hundreds a Kubernetes node has. As a safety net the table is read again after
//! [`MOUNTS_MAX_AGE`] anyway. A mounts file not on procfs (a fixture tree) is read every time.

use super::config::FilesystemConfig;
use super::{Collect, Error, Family, Paths, Scrape, regex};
use regex::Regex;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The longest a statfs started after the scrape's budget is spent may take: long enough for
/// any answering filesystem, short enough that twenty dead mounts cost two seconds, not twenty
/// timeouts.
const GRACE: Duration = Duration::from_millis(100);

/// The longest a parsed mount table is reused without being read again, even if the kernel did
/// not signal a change.
const MOUNTS_MAX_AGE: Duration = Duration::from_secs(60);

/// What node_exporter reads from statfs(2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsStat {
    /// f_bsize: the unit of the block counts.
    pub block_size: u64,
    pub blocks: u64,
    pub blocks_free: u64,
    /// Blocks available to unprivileged users.
    pub blocks_avail: u64,
    pub files: u64,
    pub files_free: u64,
}

/// statfs(2), or a stand-in for tests.
pub type StatfsFn = Arc<dyn Fn(&Path) -> io::Result<FsStat> + Send + Sync>;

pub(super) fn real_statfs() -> StatfsFn {
    Arc::new(statfs)
}

fn statfs(path: &Path) -> io::Result<FsStat> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated path and `s` a zeroed out-parameter of the right type.
    let s = unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        if libc::statfs(c.as_ptr(), &mut s) != 0 {
            return Err(io::Error::last_os_error());
        }
        s
    };
    #[allow(clippy::unnecessary_cast)] // field widths differ between libc targets
    Ok(FsStat {
        block_size: s.f_bsize as u64,
        blocks: s.f_blocks as u64,
        blocks_free: s.f_bfree as u64,
        blocks_avail: s.f_bavail as u64,
        files: s.f_files as u64,
        files_free: s.f_ffree as u64,
    })
}

/// One line of the mount table, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mount {
    pub device: String,
    /// As the node sees it (rootfs stripped).
    pub mountpoint: String,
    pub fstype: String,
    pub readonly: bool,
    /// Where vigil calls statfs.
    pub stat_path: PathBuf,
}

/// Decodes the kernel's octal escapes in /proc/*/mounts fields (`\040` space, `\011` tab,
/// `\012` newline, `\134` backslash).
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            if v <= 255 {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// `mountpoint` as the node sees it: `rootfs` removed when it is a path prefix.
pub(super) fn strip_rootfs<'a>(rootfs: &[u8], mountpoint: &'a [u8]) -> &'a [u8] {
    if rootfs == b"/" {
        return mountpoint;
    }
    match mountpoint.strip_prefix(rootfs) {
        Some(b"") => b"/",
        Some(rest) if rest.starts_with(b"/") => rest,
        _ => mountpoint,
    }
}

/// Parses a mounts file (fstab format), deduplicating (device, mountpoint, fstype).
pub(super) fn parse_mounts(text: &str, rootfs: &Path) -> Vec<Mount> {
    let root = rootfs.as_os_str().as_bytes();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let (Some(device), Some(mp), Some(fstype), options) = (it.next(), it.next(), it.next(), it.next()) else {
            continue;
        };
        let raw = unescape(mp);
        let shown = strip_rootfs(root, &raw);
        let stat_path = if root == b"/" || shown.len() != raw.len() {
            // Already under rootfs (or rootfs is /): stat where the table says.
            PathBuf::from(OsStr::from_bytes(&raw))
        } else {
            // A path from the node's own table (host PID namespace): stat it under rootfs.
            rootfs.join(OsStr::from_bytes(shown.strip_prefix(b"/").unwrap_or(shown)))
        };
        let m = Mount {
            device: String::from_utf8_lossy(&unescape(device)).into_owned(),
            mountpoint: String::from_utf8_lossy(shown).into_owned(),
            fstype: fstype.to_string(),
            readonly: options.is_some_and(|o| o.split(',').any(|opt| opt == "ro")),
            stat_path,
        };
        if seen.insert((m.device.clone(), m.mountpoint.clone(), m.fstype.clone())) {
            out.push(m);
        }
    }
    out
}

/// Mount points whose statfs is still blocked, shared with the helper threads.
#[derive(Default)]
struct Shared {
    stuck: HashSet<PathBuf>,
}

/// A helper thread that runs batches of statfs calls in order.
struct Worker {
    jobs: mpsc::Sender<Batch>,
    /// Set (under the `Shared` lock) when the collector gives up on the call in progress.
    abandoned: Arc<AtomicBool>,
}

struct Batch {
    paths: Vec<PathBuf>,
    reply: mpsc::Sender<io::Result<FsStat>>,
}

pub(super) struct FilesystemCollector {
    mounts_path: PathBuf,
    mounts_fallback: PathBuf,
    rootfs: PathBuf,
    mount_points_exclude: Option<Regex>,
    fs_types_exclude: Option<Regex>,
    timeout: Duration,
    statfs: StatfsFn,
    shared: Arc<Mutex<Shared>>,
    /// The idle helper, if any; taken for the length of a scrape.
    worker: Mutex<Option<Worker>>,
    timeouts: AtomicU64,
    mounts_buf: Mutex<Vec<u8>>,
    /// The last mount table read (excluded mounts left out), while it is current.
    table: Mutex<Option<MountTable>>,
}

struct MountTable {
    /// The mounts file it was read from, kept open to be polled; None if not on procfs.
    file: Option<std::fs::File>,
    mounts: Arc<Vec<Mount>>,
    read_at: Instant,
}

impl MountTable {
    /// Whether the table can be used again: the kernel has not marked its file changed, and it
    /// is not older than [`MOUNTS_MAX_AGE`].
    fn current(&self) -> bool {
        use std::os::fd::AsRawFd;
        let Some(file) = &self.file else { return false };
        if self.read_at.elapsed() >= MOUNTS_MAX_AGE {
            return false;
        }
        let mut p = libc::pollfd { fd: file.as_raw_fd(), events: libc::POLLPRI, revents: 0 };
        // SAFETY: one valid pollfd, and a zero timeout: poll only fills `revents`. The kernel's
        // mounts_poll reports POLLERR | POLLPRI once per change (polling acknowledges it).
        unsafe { libc::poll(&mut p, 1, 0) == 0 }
    }
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FilesystemCollector {
    pub fn new(paths: &Paths, config: &FilesystemConfig, statfs: StatfsFn) -> Result<Self, Error> {
        Ok(Self {
            mounts_path: paths.proc("1/mounts"),
            mounts_fallback: paths.proc("mounts"),
            rootfs: paths.rootfs.clone(),
            mount_points_exclude: regex("filesystem.mount_points_exclude", &config.mount_points_exclude)?,
            fs_types_exclude: regex("filesystem.fs_types_exclude", &config.fs_types_exclude)?,
            timeout: config.statfs_timeout.get(),
            statfs,
            shared: Arc::default(),
            worker: Mutex::new(None),
            timeouts: AtomicU64::new(0),
            mounts_buf: Mutex::new(Vec::with_capacity(16 * 1024)),
            table: Mutex::new(None),
        })
    }

    fn spawn_worker(&self) -> io::Result<Worker> {
        let (jobs, rx) = mpsc::channel::<Batch>();
        let abandoned = Arc::new(AtomicBool::new(false));
        let (statfs, shared, flag) = (self.statfs.clone(), self.shared.clone(), abandoned.clone());
        std::thread::Builder::new().name("vigil-statfs".into()).spawn(move || {
            // Ends when the collector drops `jobs` (it was replaced) or gives up on this thread.
            for batch in rx {
                for path in &batch.paths {
                    let result = statfs(path);
                    // The reply is sent under the lock so the collector, which checks the
                    // channel and sets `abandoned` under the same lock, never loses a result
                    // and never leaves a mount marked stuck after its call has returned.
                    let g = lock(&shared);
                    if flag.load(Ordering::Acquire) {
                        let mut g = g;
                        g.stuck.remove(path);
                        tracing::info!(path = %path.display(), "statfs returned after timing out; the mount is reported again");
                        return;
                    }
                    let gone = batch.reply.send(result).is_err();
                    drop(g);
                    if gone {
                        break;
                    }
                }
            }
        })?;
        Ok(Worker { jobs, abandoned })
    }

    /// statfs for each path, in order; None where the call was given up on. Each call may take
    /// `timeout`, but all together only `timeout` plus `grace()` per call started after that.
    fn stat_all(&self, paths: &[PathBuf]) -> Vec<Option<io::Result<FsStat>>> {
        let budget_end = Instant::now() + self.timeout;
        let mut results = Vec::with_capacity(paths.len());
        let mut worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut spawn_failures = 0;
        'batches: while results.len() < paths.len() {
            let w = match worker.take() {
                Some(w) => w,
                None => match self.spawn_worker() {
                    Ok(w) => w,
                    Err(error) => {
                        spawn_failures += 1;
                        if spawn_failures > 1 {
                            tracing::warn!(%error, "cannot start a statfs thread; filesystems reported with device_error 1");
                            while results.len() < paths.len() {
                                results.push(Some(Err(io::Error::other("no statfs thread"))));
                            }
                            break;
                        }
                        continue;
                    }
                },
            };
            let (reply, replies) = mpsc::channel();
            if w.jobs.send(Batch { paths: paths[results.len()..].to_vec(), reply }).is_err() {
                // The thread is gone (it cannot be, short of a panic in statfs); start another.
                continue;
            }
            while results.len() < paths.len() {
                // This call may run until its own timeout, cut to what is left of the scrape's
                // budget, but is always given a short grace: a healthy statfs takes microseconds.
                let started = Instant::now();
                let limit = (started + self.timeout).min(budget_end).max(started + self.grace());
                match replies.recv_timeout(limit - started) {
                    Ok(r) => results.push(Some(r)),
                    Err(RecvTimeoutError::Timeout) => {
                        let path = &paths[results.len()];
                        let mut g = lock(&self.shared);
                        if let Ok(r) = replies.try_recv() {
                            // It returned just now.
                            results.push(Some(r));
                            continue;
                        }
                        w.abandoned.store(true, Ordering::Release);
                        g.stuck.insert(path.clone());
                        drop(g);
                        self.timeouts.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(path = %path.display(), waited = ?started.elapsed(), timeout = ?self.timeout, "statfs did not return; mount reported with node_filesystem_device_error 1 and skipped until the call returns");
                        results.push(None);
                        // `w` stays blocked in the kernel; the rest goes to a fresh thread.
                        continue 'batches;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        results.push(Some(Err(io::Error::other("statfs thread ended"))));
                        continue 'batches;
                    }
                }
            }
            worker = Some(w);
        }
        if let Some(w) = worker {
            *self.worker.lock().unwrap_or_else(|p| p.into_inner()) = Some(w);
        }
        results
    }

    /// How long a call started after the scrape's statfs budget is spent may take.
    fn grace(&self) -> Duration {
        (self.timeout / 10).min(GRACE)
    }

    /// The mounts to report (excluded ones left out): the last table while the kernel says it
    /// has not changed, else read again.
    fn mounts(&self) -> Result<Arc<Vec<Mount>>, Error> {
        use std::io::Read;
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = table.as_ref().filter(|t| t.current()) {
            return Ok(t.mounts.clone());
        }
        // Through `Take` (no size hint): no statx and lseek first (see `read_into`).
        let read = |path: &Path, buf: &mut Vec<u8>| {
            buf.clear();
            let mut file = std::fs::File::open(path)?;
            (&mut file).take(u64::MAX).read_to_end(buf)?;
            io::Result::Ok(file)
        };
        // Kept between scrapes: the mount table of a Kubernetes node is tens of KiB.
        let mut buf = self.mounts_buf.lock().unwrap_or_else(|p| p.into_inner());
        let file = match read(&self.mounts_path, &mut buf) {
            Ok(file) => file,
            Err(_) => read(&self.mounts_fallback, &mut buf)
                .map_err(|error| Error::Read { path: self.mounts_fallback.clone(), error })?,
        };
        // A mount point that is not UTF-8 must not cost every other mount its metrics: it is
        // reported with U+FFFD (and its statfs then fails: device_error 1).
        let mut mounts = parse_mounts(&String::from_utf8_lossy(&buf), &self.rootfs);
        mounts.retain(|m| {
            !self.mount_points_exclude.as_ref().is_some_and(|re| re.is_match(&m.mountpoint))
                && !self.fs_types_exclude.as_ref().is_some_and(|re| re.is_match(&m.fstype))
        });
        let mounts = Arc::new(mounts);
        *table = Some(MountTable {
            file: super::generated_by_kernel(&file).then_some(file),
            mounts: mounts.clone(),
            read_at: Instant::now(),
        });
        Ok(mounts)
    }
}

impl Collect for FilesystemCollector {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn collect(&self, _scrape: &Scrape<'_>, out: &mut Vec<Family>) -> Result<(), Error> {
        let mounts = self.mounts()?;
        // Each path is asked once (several mounts can share a mount point: over-mounts), and
        // not at all while a call from an earlier scrape is still stuck on it.
        let mut slot: HashMap<&Path, Option<usize>> = HashMap::with_capacity(mounts.len());
        let mut to_stat: Vec<PathBuf> = Vec::with_capacity(mounts.len());
        {
            let g = lock(&self.shared);
            for m in mounts.iter() {
                slot.entry(&m.stat_path).or_insert_with(|| {
                    (!g.stuck.contains(&m.stat_path)).then(|| {
                        to_stat.push(m.stat_path.clone());
                        to_stat.len() - 1
                    })
                });
            }
        }
        let stats = self.stat_all(&to_stat);

        let mut size = Family::gauge("node_filesystem_size_bytes", "Filesystem size in bytes.");
        let mut free = Family::gauge("node_filesystem_free_bytes", "Filesystem free space in bytes.");
        let mut avail =
            Family::gauge("node_filesystem_avail_bytes", "Filesystem space available to non-root users in bytes.");
        let mut files = Family::gauge("node_filesystem_files", "Filesystem total file nodes.");
        let mut files_free = Family::gauge("node_filesystem_files_free", "Filesystem total free file nodes.");
        let mut readonly = Family::gauge("node_filesystem_readonly", "Filesystem read-only status.");
        let mut device_error = Family::gauge(
            "node_filesystem_device_error",
            "Whether an error occurred while getting statistics for the given device.",
        );
        for m in mounts.iter() {
            let stat = slot[m.stat_path.as_path()].and_then(|i| stats[i].as_ref());
            let labels =
                [("device", m.device.as_str()), ("fstype", m.fstype.as_str()), ("mountpoint", m.mountpoint.as_str())];
            readonly.push(&labels, if m.readonly { 1.0 } else { 0.0 });
            match stat {
                Some(Ok(s)) => {
                    device_error.push(&labels, 0.0);
                    let bs = s.block_size as f64;
                    size.push(&labels, s.blocks as f64 * bs);
                    free.push(&labels, s.blocks_free as f64 * bs);
                    avail.push(&labels, s.blocks_avail as f64 * bs);
                    files.push(&labels, s.files as f64);
                    files_free.push(&labels, s.files_free as f64);
                }
                Some(Err(error)) => {
                    tracing::debug!(mountpoint = %m.mountpoint, %error, "statfs failed");
                    device_error.push(&labels, 1.0);
                }
                None => device_error.push(&labels, 1.0),
            }
        }
        for f in [size, free, avail, files, files_free, readonly, device_error] {
            f.finish_into(out);
        }
        let mut t = Family::counter(
            "vigil_node_statfs_timeouts_total",
            "statfs calls given up on (longer than metrics.node.filesystem.statfs_timeout, or than the scrape's remaining statfs budget); their mounts are skipped until the call returns.",
        );
        t.push(&[], self.timeouts.load(Ordering::Relaxed) as f64);
        out.push(t.finish());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mount points the collector reports for `mountpoint`, by `fstype`.
    fn reported(c: &FilesystemCollector, mountpoint: &str) -> Vec<String> {
        let mut out = Vec::new();
        let stat = std::cell::OnceCell::new();
        let scrape = Scrape { stat_buf: &super::super::Buf::new(), proc_stat: stat };
        c.collect(&scrape, &mut out).unwrap();
        let readonly = out.iter().find(|f| f.name() == "node_filesystem_readonly").unwrap().to_proto();
        readonly
            .get_metric()
            .iter()
            .filter(|m| m.get_label().iter().any(|l| l.name() == "mountpoint" && l.value() == mountpoint))
            .map(|m| m.get_label().iter().find(|l| l.name() == "fstype").unwrap().value().to_string())
            .collect()
    }

    /// A mount or unmount shows at the next scrape although the parsed table is reused while
    /// the kernel does not mark the mounts file changed. The mount table is a real one: that of
    /// a shell in its own mount namespace (unshare(1), as root), seen through a procfs root
    /// whose `1` is that shell's /proc entry, so the test mounts nothing on the host.
    #[test]
    fn a_mount_and_an_unmount_show_at_the_next_scrape() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let m = dir.join("m");
        std::fs::create_dir(&m).unwrap();
        let script = format!(
            "touch {d}/ready; until [ -e {d}/go ]; do sleep 0.01; done; mount -t tmpfs -o size=1m vigiltest {m} && touch {d}/mounted; \
             until [ -e {d}/go2 ]; do sleep 0.01; done; umount {m} && touch {d}/unmounted; sleep 60",
            d = dir.display(),
            m = m.display()
        );
        let child = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stderr(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            panic!("this test needs unshare(1) (util-linux) and root");
        };
        struct Kill<'a>(&'a mut std::process::Child);
        impl Drop for Kill<'_> {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let pid = child.id();
        let child = Kill(&mut child);
        let mut wait = |name: &str| {
            let t0 = Instant::now();
            while !dir.join(name).exists() {
                assert!(t0.elapsed() < Duration::from_secs(20), "{name} did not appear");
                if let Ok(Some(status)) = child.0.try_wait() {
                    let mut err = String::new();
                    let _ = std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err);
                    panic!("unshare ended ({status}) before {name}: {err}");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait("ready");
        let procfs = dir.join("proc");
        std::fs::create_dir(&procfs).unwrap();
        std::os::unix::fs::symlink(format!("/proc/{pid}"), procfs.join("1")).unwrap();
        let paths = Paths { rootfs: "/".into(), procfs, sysfs: "/sys".into() };
        let c = FilesystemCollector::new(&paths, &FilesystemConfig::default(), real_statfs()).unwrap();
        let mp = m.to_str().unwrap();

        assert_eq!(reported(&c, mp), Vec::<String>::new());
        assert!(c.table.lock().unwrap().as_ref().unwrap().file.is_some(), "a procfs mounts file is kept");
        assert_eq!(reported(&c, mp), Vec::<String>::new(), "reused table");
        std::fs::write(dir.join("go"), "").unwrap();
        wait("mounted");
        assert_eq!(reported(&c, mp), ["tmpfs"], "the mount is seen at the next scrape");
        assert_eq!(reported(&c, mp), ["tmpfs"], "and the table is reused after");
        std::fs::write(dir.join("go2"), "").unwrap();
        wait("unmounted");
        assert_eq!(reported(&c, mp), Vec::<String>::new(), "the unmount is seen at the next scrape");
    }

    /// A mount table not on procfs (a fixture) is read at every scrape.
    #[test]
    fn a_fixture_mount_table_is_read_at_every_scrape() {
        let t = tempfile::tempdir().unwrap();
        let procfs = t.path().join("proc");
        std::fs::create_dir_all(procfs.join("1")).unwrap();
        let table = |mp: &str| format!("/dev/vda1 / ext4 rw 0 0\n/dev/vdb {mp} ext4 rw 0 0\n");
        std::fs::write(procfs.join("1/mounts"), table("/data")).unwrap();
        let paths = Paths { rootfs: "/".into(), procfs: procfs.clone(), sysfs: "/sys".into() };
        let c = FilesystemCollector::new(&paths, &FilesystemConfig::default(), real_statfs()).unwrap();
        assert_eq!(reported(&c, "/data"), ["ext4"]);
        assert!(c.table.lock().unwrap().as_ref().unwrap().file.is_none());
        std::fs::write(procfs.join("1/mounts"), table("/other")).unwrap();
        assert_eq!(reported(&c, "/data"), Vec::<String>::new());
        assert_eq!(reported(&c, "/other"), ["ext4"]);
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape(r"/mnt/a\040b\011c"), b"/mnt/a b\tc");
        assert_eq!(unescape(r"/x\134y"), b"/x\\y");
        assert_eq!(unescape(r"/trailing\04"), b"/trailing\\04");
    }

    #[test]
    fn strips_rootfs_at_path_boundary_only() {
        assert_eq!(strip_rootfs(b"/host", b"/host"), b"/");
        assert_eq!(strip_rootfs(b"/host", b"/host/var/lib"), b"/var/lib");
        assert_eq!(strip_rootfs(b"/host", b"/hostdata"), b"/hostdata");
        assert_eq!(strip_rootfs(b"/", b"/var"), b"/var");
    }

    #[test]
    fn mounts_under_rootfs_and_from_the_host_table() {
        let text = "/dev/sda1 /host ext4 rw 0 0\n/dev/sdb /host/data xfs ro,relatime 0 0\n\
                    /dev/sdc /srv ext4 rw 0 0\n/dev/sdc /srv ext4 rw 0 0\n";
        let m = parse_mounts(text, Path::new("/host"));
        assert_eq!(m.len(), 3, "duplicate (device, mountpoint, fstype) reported once: {m:?}");
        assert_eq!((m[0].mountpoint.as_str(), m[0].stat_path.as_path()), ("/", Path::new("/host")));
        assert_eq!((m[1].mountpoint.as_str(), m[1].stat_path.as_path()), ("/data", Path::new("/host/data")));
        assert!(m[1].readonly && !m[0].readonly);
        assert_eq!((m[2].mountpoint.as_str(), m[2].stat_path.as_path()), ("/srv", Path::new("/host/srv")));
    }
}
