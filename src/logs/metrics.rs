//! The log source's metrics (names are a contract with the dashboards; see README). No per-pod
//! labels: cardinality stays fixed whatever runs on the node.

use super::parse::ParseError;
use super::tail::DropCause;
use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct LogMetrics {
    pub files_tailed: IntGauge,
    pub read_bytes: IntCounter,
    pub read_lines: IntCounter,
    pub parse_errors: IntCounterVec,
    pub lines_truncated: IntCounter,
    pub rotations: IntCounter,
    pub truncations: IntCounter,
    pub truncation_copies_found: IntCounter,
    pub truncation_copies_missing: IntCounter,
    /// By `cause` (`tail::DropCause`).
    pub deleted_files_dropped: IntCounterVec,
    pub deleted_bytes_dropped: IntCounterVec,
    pub held_files: IntGauge,
    pub held_bytes: IntGauge,
    pub lag_bytes: IntGauge,
    pub lag_max_bytes: IntGauge,
    pub checkpoint_writes: IntCounter,
    pub checkpoint_failures: IntCounter,
    pub checkpoint_last_write: IntGauge,
    pub inotify_fallback: IntGauge,
    pub rescans: IntCounter,
    pub open_failures: IntCounter,
}

impl LogMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        /// Registers `m` and hands it back (one place for every metric of the source).
        fn reg<M: Collector + Clone + 'static>(r: &Registry, m: prometheus::Result<M>) -> prometheus::Result<M> {
            let m = m?;
            r.register(Box::new(m.clone()))?;
            Ok(m)
        }
        let c = |r, name, help| reg(r, IntCounter::new(name, help));
        let g = |r, name, help| reg(r, IntGauge::new(name, help));
        let parse_errors = reg(
            r,
            IntCounterVec::new(
                Opts::new(
                    "vigil_parse_errors_total",
                    "Log lines that could not be parsed and were shipped raw (malformed), by kind; kind utf8: \
                     lines shipped with bytes that were not UTF-8 replaced by U+FFFD.",
                ),
                &["kind"],
            ),
        )?;
        for k in ParseError::ALL {
            parse_errors.with_label_values(&[k.kind()]);
        }
        let by_cause = |name: &str, help: &str| -> prometheus::Result<IntCounterVec> {
            let v = reg(r, IntCounterVec::new(Opts::new(name, help), &["cause"]))?;
            for c in DropCause::ALL {
                v.with_label_values(&[c.label()]);
            }
            Ok(v)
        };
        Ok(Self {
            files_tailed: g(r, "vigil_files_tailed", "Log files open and being tailed.")?,
            read_bytes: c(r, "vigil_read_bytes_total", "Bytes read from log files.")?,
            read_lines: c(r, "vigil_read_lines_total", "Log lines read (after partial-line merge).")?,
            parse_errors,
            lines_truncated: c(r, "vigil_lines_truncated_total", "Lines longer than max_line_bytes, cut.")?,
            rotations: c(r, "vigil_rotations_total", "Log files seen rotated (renamed away and replaced).")?,
            truncations: c(r, "vigil_truncations_total", "Log files truncated in place (copytruncate).")?,
            truncation_copies_found: c(
                r,
                "vigil_truncation_copies_found_total",
                "Truncations whose copy (copytruncate) was found; the old content was finished from it.",
            )?,
            truncation_copies_missing: c(
                r,
                "vigil_truncation_copies_missing_total",
                "Truncations without a copy found; lines written before the truncation and not yet read are lost.",
            )?,
            deleted_files_dropped: by_cause(
                "vigil_deleted_files_dropped_total",
                "Deleted log files closed before they were fully read, by the bound that closed them (cause: max_hold, max_unread).",
            )?,
            deleted_bytes_dropped: by_cause(
                "vigil_deleted_bytes_dropped_total",
                "Unread bytes of deleted log files given up on, by the bound that dropped them.",
            )?,
            held_files: g(
                r,
                "vigil_held_files",
                "Log files kept open after leaving their path (rotated or deleted) until they are read to their end.",
            )?,
            held_bytes: g(r, "vigil_held_bytes", "Unread bytes of the held files (vigil_held_files).")?,
            lag_bytes: g(r, "vigil_lag_bytes", "Bytes written to tailed files and not yet read, total.")?,
            lag_max_bytes: g(r, "vigil_lag_max_bytes", "Bytes not yet read of the most-behind file.")?,
            checkpoint_writes: c(r, "vigil_checkpoint_writes_total", "Checkpoint files written.")?,
            checkpoint_failures: c(r, "vigil_checkpoint_failures_total", "Checkpoint writes that failed.")?,
            checkpoint_last_write: g(
                r,
                "vigil_checkpoint_last_write_timestamp_seconds",
                "Unix time of the last successful checkpoint write.",
            )?,
            inotify_fallback: g(r, "vigil_inotify_fallback", "1 when inotify failed and discovery polls instead.")?,
            rescans: c(r, "vigil_discovery_rescans_total", "Walks of the include globs.")?,
            open_failures: c(r, "vigil_file_open_failures_total", "Log files that could not be opened or read.")?,
        })
    }

    pub fn parse_error(&self, e: ParseError) {
        self.parse_errors.with_label_values(&[e.kind()]).inc();
    }
}
