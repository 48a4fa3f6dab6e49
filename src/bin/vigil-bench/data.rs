//! Data sets: container log lines of 200 bytes in the CRI or docker json-file format, each
//! message carrying a marker `@T<19 digits>.<tag>` that the receivers count and, when the
//! digits are a write time (ns since the epoch, realtime clock), turn into a latency.

use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fmt {
    Cri,
    Docker,
}

impl Fmt {
    pub fn name(self) -> &'static str {
        match self {
            Fmt::Cri => "cri",
            Fmt::Docker => "docker",
        }
    }
}

/// Bytes per line, newline included.
pub const LINE: usize = 200;

/// The marker of a line written at `t_ns` (0: not timed) by container `tag` (one digit).
pub fn marker(t_ns: u64, tag: u8) -> String {
    format!("@T{t_ns:019}.{tag} ")
}

/// One line of `LINE` bytes whose message starts with `msg`.
pub fn line(fmt: Fmt, msg: &str) -> String {
    match fmt {
        Fmt::Cri => {
            let head = "2026-11-28T06:12:13.123456789Z stdout F ";
            format!("{head}{msg}{}\n", "x".repeat(LINE - 1 - head.len() - msg.len()))
        }
        Fmt::Docker => {
            let frame = r#"{"log":"\n","stream":"stdout","time":"2026-11-28T06:12:13.123456789Z"}"#;
            let pad = LINE - 1 - frame.len() - msg.len();
            format!(
                "{{\"log\":\"{msg}{}\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-28T06:12:13.123456789Z\"}}\n",
                "x".repeat(pad)
            )
        }
    }
}

/// The path of container `f`'s log under `root`, as the kubelet (CRI) or dockerd lays it out.
pub fn log_path(root: &Path, fmt: Fmt, f: usize) -> PathBuf {
    match fmt {
        Fmt::Cri => root.join(format!("pods/bench_pod{f}_uid{f}/c/0.log")),
        Fmt::Docker => {
            let id = format!("{f:064x}");
            root.join(format!("docker/{id}/{id}-json.log"))
        }
    }
}

/// The include glob matching every `log_path`.
pub fn include(root: &Path, fmt: Fmt) -> String {
    match fmt {
        Fmt::Cri => format!("{}/pods/*/*/*.log", root.display()),
        Fmt::Docker => format!("{}/docker/*/*-json.log", root.display()),
    }
}

/// Writes `total` bytes of lines over `files` files; returns the paths and the line count.
pub fn generate(root: &Path, fmt: Fmt, files: usize, total: u64) -> (Vec<PathBuf>, u64) {
    let per_file = (total / LINE as u64 / files as u64).max(1) as usize;
    let mut paths = Vec::new();
    for f in 0..files {
        let path = log_path(root, fmt, f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).unwrap());
        for n in 0..per_file {
            let msg = format!("{}file {f} line {n} ", marker(0, 0));
            w.write_all(line(fmt, &msg).as_bytes()).unwrap();
        }
        w.flush().unwrap();
        paths.push(path);
    }
    (paths, (per_file * files) as u64)
}

/// Reads what was appended to `path` since `pos`, handing each read to `each`.
fn appended(path: &Path, pos: &mut u64, mut each: impl FnMut(&[u8])) {
    let Ok(mut f) = std::fs::File::open(path) else { return };
    if f.seek(SeekFrom::Start(*pos)).is_err() {
        return;
    }
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                *pos += n as u64;
                each(&buf[..n]);
            }
        }
    }
}

/// Reads what was appended to `path` since `pos`, calling `each` for every complete line.
pub fn follow(path: &Path, pos: &mut u64, carry: &mut Vec<u8>, mut each: impl FnMut(&[u8])) {
    appended(path, pos, |mut data| {
        while let Some(i) = memchr::memchr(b'\n', data) {
            if carry.is_empty() {
                each(&data[..i]);
            } else {
                carry.extend_from_slice(&data[..i]);
                each(carry);
                carry.clear();
            }
            data = &data[i + 1..];
        }
        carry.extend_from_slice(data);
    });
}

/// Counts newlines appended to `path` since `pos`.
pub fn count_newlines(path: &Path, pos: &mut u64, count: &mut u64) {
    appended(path, pos, |data| *count += memchr::memchr_iter(b'\n', data).count() as u64);
}

/// Every marker in `data`: (write time ns, tag).
pub fn markers(data: &[u8], mut each: impl FnMut(u64, u8)) {
    for i in memchr::memmem::find_iter(data, b"@T") {
        let Some(m) = data.get(i + 2..i + 23) else { continue };
        let mut t = 0u64;
        if !m[..19].iter().all(u8::is_ascii_digit) || m[19] != b'.' {
            continue;
        }
        for &d in &m[..19] {
            t = t * 10 + (d - b'0') as u64;
        }
        each(t, m[20].wrapping_sub(b'0'));
    }
}

/// Realtime clock in ns since the epoch (comparable across processes).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}
