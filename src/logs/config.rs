//! `sources.containers`: which container log files to tail and how.

use crate::config::{ByteSize, HumanDuration, Problems};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainersConfig {
    /// Globs of log files to tail. Default: CRI logs under /var/log/pods and docker json-file
    /// logs under /var/lib/docker/containers. `/var/log/containers/*.log` symlinks may be listed
    /// too: a file reached by two paths is read once. Matching live files only (`*.log`,
    /// `*-json.log`) is enough: vigil follows rotated files itself. A glob that also matches
    /// rotated names is safe for plain files (a finished file is remembered while the globs
    /// find it) but would read `.gz` files as raw bytes.
    #[serde(default = "default_include")]
    pub include: Vec<String>,
    /// Globs of files never to tail, even when `include` matches. Default none.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where to start in a file that has no checkpoint: `beginning` (default: nothing already
    /// written is lost when vigil is installed on a running node) or `end`.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// Directory for the offsets checkpoint. Default /var/lib/vigil (a hostPath in Kubernetes,
    /// so offsets survive pod restarts).
    #[serde(default = "default_checkpoint_dir")]
    pub checkpoint_dir: String,
    /// How often the include globs are walked again, catching what inotify missed (queue
    /// overflow, watch limits, directories created later). Default 10s. Without inotify (see
    /// `vigil_inotify_fallback`) vigil rescans every second instead.
    #[serde(default = "default_rescan_interval")]
    pub rescan_interval: HumanDuration,
    /// How often every open file is checked for new data, truncation and deletion even when
    /// inotify said nothing. Default 250ms: a cheap `pread` per file; bounds the latency when
    /// inotify is unavailable.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// Skip files not modified for this long (they are looked at again if they change).
    /// Default: none, every matching file is read.
    #[serde(default)]
    pub ignore_older: Option<HumanDuration>,
    /// Longest message kept, in bytes; longer lines (after partial merge) are cut, flagged
    /// `truncated` and counted in `vigil_lines_truncated_total`. Default 256KiB. Memory per
    /// file never exceeds a few times this, whatever the line length.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: ByteSize,
    /// A trailing partial line (CRI `P`, docker record without `\n`) with no continuation is
    /// shipped after this long. Default 2s: long enough for a runtime's next piece, short
    /// enough that a container that exited mid-line is seen promptly.
    #[serde(default = "default_partial_flush_timeout")]
    pub partial_flush_timeout: HumanDuration,
    /// A deleted file is kept open (to read what is left) at most this long after its
    /// deletion was noticed. Default 10m: the kubelet compresses a rotated file (removing the
    /// plain one) at the next rotation, so during a sink outage the files vigil holds for it
    /// are deleted ones; 10 minutes covers a 5-minute outage plus the catch-up. What is unread
    /// after that is dropped, logged with the path and counted (`cause="max_hold"` of
    /// `vigil_deleted_files_dropped_total`, `vigil_deleted_bytes_dropped_total`).
    #[serde(default = "default_deleted_max_hold")]
    pub deleted_file_max_hold: HumanDuration,
    /// A deleted file with more than this many unread bytes is closed at once (its disk space
    /// is freed) and the rest dropped and counted (`cause="max_unread"`). Default 256MiB:
    /// far above a kubelet-rotated file (10MiB by default), so an outage drops nothing, while
    /// it protects the node's disk from a huge deleted file vigil is far behind on.
    #[serde(default = "default_deleted_max_unread")]
    pub deleted_file_max_unread: ByteSize,
    /// A file renamed away (rotated) with no new file at its path yet is kept open this long
    /// after its last data, in case the runtime still writes to it. Default 5s.
    #[serde(default = "default_rotate_wait")]
    pub rotate_wait: HumanDuration,
    /// Bytes read from one file before moving to the next (round-robin), so one busy
    /// container cannot delay the others by more than one slice. Default 256KiB.
    #[serde(default = "default_read_budget")]
    pub read_budget: ByteSize,
    /// Most message bytes in one batch handed to the pipeline. Default 256KiB (at most 2,048
    /// events). A batch is closed as soon as it reaches either limit, even in the middle of a
    /// read, so it exceeds this by less than one message. With the bounded queues this bounds
    /// memory under backpressure (see ARCHITECTURE.md).
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: ByteSize,
    /// Longest delay between an ack and the checkpoint write that records it (in
    /// `checkpoint_dir`): every interval the committed offsets are written if they changed, so
    /// the commits of one interval share one write and an idle node writes nothing. Also at
    /// shutdown. Default 100ms: after a crash, the lines shipped twice are those in flight plus
    /// at most this long of acked lines (~350 at 3,500 lines/s), for at most 10 small writes a
    /// second under load.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: HumanDuration,
    /// Stack traces joined into one event (see `MultilineConfig`). Default: `mode: auto`.
    #[serde(default)]
    pub multiline: MultilineConfig,
    /// Pod metadata from the Kubernetes API (labels, annotations, owner, image) and the
    /// per-pod controls `vigil.io/exclude`, `vigil.io/exclude-containers`. Default off.
    #[serde(default)]
    pub kubernetes: crate::logs::kubernetes::KubernetesConfig,
    /// `auto` (default: a message that is a JSON object or clean logfmt becomes fields,
    /// anything else ships as text), `json`, `logfmt` or `off`. See `crate::process::parse`.
    #[serde(default)]
    pub parse: crate::process::parse::ParseMode,
    /// Take a parsed message's `time`/`ts` (RFC 3339 or Unix seconds/ms/µs/ns) as the event's
    /// timestamp instead of the runtime's. Default false: the runtime's clock is trusted.
    #[serde(default)]
    pub use_message_time: bool,
    /// Most fields kept from one parsed message; the rest are cut and counted in
    /// `vigil_parse_fields_cut_total`, so one noisy app cannot explode an Elasticsearch
    /// mapping. Default 100.
    #[serde(default = "default_max_fields")]
    pub max_fields: usize,
}

/// `sources.containers.multiline`: exception stack traces written over many lines become one
/// event, per file and per stream, after the partial-line merge.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// `auto` (default: the traces of Java, Python, Go, Node.js, Ruby, PHP and .NET are
    /// recognised; nothing else is ever joined), `off`, one language (`java`, `python`, `go`,
    /// `nodejs`, `ruby`, `php`, `dotnet`) or `regex:<start-pattern>` (a line matching the
    /// pattern starts an event, the lines after it that do not match are appended). A pod's
    /// `vigil.io/multiline` annotation, same values, wins over this and over `rules`.
    #[serde(default = "default_multiline_mode")]
    pub mode: String,
    /// A trace is shipped at the latest this long after its first line, complete or not, so
    /// no line waits longer than this. Default 1s: a runtime writes a trace in one burst.
    #[serde(default = "default_multiline_max_wait")]
    pub max_wait: HumanDuration,
    /// Per-file modes: the first rule whose `match` glob matches a file's path sets its mode
    /// (`mode`, or `start_pattern`: a regex for a first line). Default none.
    #[serde(default)]
    pub rules: Vec<MultilineRule>,
}

/// One entry of `multiline.rules`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineRule {
    /// Glob of the file paths it applies to, like `include`, e.g.
    /// `/var/log/pods/shop_*/*/*.log`.
    #[serde(rename = "match")]
    pub matches: String,
    /// The mode of these files (same values as `multiline.mode`).
    #[serde(default)]
    pub mode: Option<String>,
    /// A regex a trace's (or a record's) first line matches; the lines after it that do not
    /// match are appended. Implies `mode: regex`.
    #[serde(default)]
    pub start_pattern: Option<String>,
}

impl Default for MultilineConfig {
    fn default() -> Self {
        Self { mode: default_multiline_mode(), max_wait: default_multiline_max_wait(), rules: Vec::new() }
    }
}

fn default_multiline_mode() -> String {
    "auto".into()
}
fn default_multiline_max_wait() -> HumanDuration {
    HumanDuration::secs(1)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

impl Default for ContainersConfig {
    fn default() -> Self {
        Self {
            include: default_include(),
            exclude: Vec::new(),
            read_from: ReadFrom::Beginning,
            checkpoint_dir: default_checkpoint_dir(),
            rescan_interval: default_rescan_interval(),
            poll_interval: default_poll_interval(),
            ignore_older: None,
            max_line_bytes: default_max_line_bytes(),
            partial_flush_timeout: default_partial_flush_timeout(),
            deleted_file_max_hold: default_deleted_max_hold(),
            deleted_file_max_unread: default_deleted_max_unread(),
            rotate_wait: default_rotate_wait(),
            read_budget: default_read_budget(),
            batch_max_bytes: default_batch_max_bytes(),
            checkpoint_interval: default_checkpoint_interval(),
            multiline: MultilineConfig::default(),
            kubernetes: Default::default(),
            parse: Default::default(),
            use_message_time: false,
            max_fields: default_max_fields(),
        }
    }
}

fn default_include() -> Vec<String> {
    vec!["/var/log/pods/*/*/*.log".into(), "/var/lib/docker/containers/*/*-json.log".into()]
}
fn default_checkpoint_dir() -> String {
    "/var/lib/vigil".into()
}
fn default_rescan_interval() -> HumanDuration {
    HumanDuration::secs(10)
}
fn default_poll_interval() -> HumanDuration {
    HumanDuration::millis(250)
}
fn default_max_line_bytes() -> ByteSize {
    ByteSize::kib(256)
}
fn default_partial_flush_timeout() -> HumanDuration {
    HumanDuration::secs(2)
}
fn default_deleted_max_hold() -> HumanDuration {
    HumanDuration::secs(600)
}
fn default_deleted_max_unread() -> ByteSize {
    ByteSize::mib(256)
}
fn default_rotate_wait() -> HumanDuration {
    HumanDuration::secs(5)
}
fn default_read_budget() -> ByteSize {
    ByteSize::kib(256)
}
fn default_batch_max_bytes() -> ByteSize {
    ByteSize::kib(256)
}
fn default_max_fields() -> usize {
    100
}
fn default_checkpoint_interval() -> HumanDuration {
    HumanDuration::millis(100)
}

impl ContainersConfig {
    /// The settings of the parse step.
    pub fn parse_settings(&self) -> crate::process::parse::ParseSettings {
        crate::process::parse::ParseSettings {
            mode: self.parse,
            use_message_time: self.use_message_time,
            max_fields: self.max_fields,
        }
    }

    pub fn validate(&self, path: &str, p: &mut Problems) {
        for (field, globs) in [("include", &self.include), ("exclude", &self.exclude)] {
            for (i, g) in globs.iter().enumerate() {
                if let Err(e) = globset::Glob::new(g) {
                    p.push(
                        format!("{path}.{field}[{i}]"),
                        format!("'{g}' is not a glob ({e}); expected e.g. /var/log/pods/*/*/*.log"),
                    );
                }
            }
        }
        if self.checkpoint_dir.is_empty() {
            p.push(format!("{path}.checkpoint_dir"), "is empty; expected a writable directory, e.g. /var/lib/vigil");
        }
        for (field, d) in [
            ("rescan_interval", self.rescan_interval),
            ("poll_interval", self.poll_interval),
            ("partial_flush_timeout", self.partial_flush_timeout),
            ("checkpoint_interval", self.checkpoint_interval),
        ] {
            if d.get().is_zero() {
                p.push(format!("{path}.{field}"), format!("'{d}' must be more than zero; e.g. 1s"));
            }
        }
        if self.max_line_bytes.get() < 1024 {
            p.push(
                format!("{path}.max_line_bytes"),
                format!("'{}' is too small; expected at least 1KiB, e.g. 256KiB", self.max_line_bytes),
            );
        }
        if self.read_budget.get() < 4096 {
            p.push(
                format!("{path}.read_budget"),
                format!("'{}' is too small; expected at least 4KiB, e.g. 256KiB", self.read_budget),
            );
        }
        if let Err(problems) = crate::logs::multiline::Multiline::compile(&self.multiline) {
            for (field, message) in problems {
                p.push(format!("{path}.multiline.{field}"), message);
            }
        }
        self.kubernetes.validate(&format!("{path}.kubernetes"), p);
        if self.batch_max_bytes.get() < 4096 {
            p.push(
                format!("{path}.batch_max_bytes"),
                format!("'{}' is too small; expected at least 4KiB, e.g. 1MiB", self.batch_max_bytes),
            );
        }
    }
}
