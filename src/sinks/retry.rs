//! Retries: exponential backoff with jitter, capped, honouring `Retry-After`; and which HTTP
//! answers are worth retrying.
//!
//! Key decision: retries never give up. A retryable failure (connection error, timeout, 429,
//! 5xx) is retried until it succeeds or the process shuts down, because giving up would mean
//! dropping lines; the files on disk are the buffer, and bounded queues turn a long outage into
//! slower reading, not into loss. Rejected: a maximum retry count (Fluent Bit's `Retry_Limit`,
//! which drops the chunk when reached). Permanent failures (other 4xx) are not retried at all.
//!
//! Jitter is "equal jitter" (half fixed, half random) so that the delay never collapses to
//! near zero (full jitter can hammer a recovering backend) while a fleet of DaemonSet pods still
//! spreads out.

use crate::config::{HumanDuration, Problems};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `retry:` of an HTTP sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Delay before the first retry; doubles on each further failure. Default 500ms: short
    /// enough that a blip costs little, long enough not to hammer an overloaded backend.
    #[serde(default = "default_initial")]
    pub initial_backoff: HumanDuration,
    /// Upper bound of the delay between two tries, also for a larger `Retry-After`. Default
    /// 30s: a recovered backend is noticed within half a minute.
    #[serde(default = "default_max")]
    pub max_backoff: HumanDuration,
}

fn default_initial() -> HumanDuration {
    HumanDuration::millis(500)
}
fn default_max() -> HumanDuration {
    HumanDuration::secs(30)
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { initial_backoff: default_initial(), max_backoff: default_max() }
    }
}

impl RetryConfig {
    pub fn validate(&self, path: &str, p: &mut Problems) {
        if self.initial_backoff.get().is_zero() {
            p.push(format!("{path}.initial_backoff"), "is 0; expected a positive duration, e.g. 500ms");
        }
        if self.max_backoff < self.initial_backoff {
            p.push(
                format!("{path}.max_backoff"),
                format!(
                    "'{}' is below initial_backoff '{}'; expected max_backoff >= initial_backoff",
                    self.max_backoff, self.initial_backoff
                ),
            );
        }
    }

    pub fn backoff(&self) -> Backoff {
        Backoff { initial: self.initial_backoff.get(), max: self.max_backoff.get(), attempt: 0 }
    }
}

/// The backoff state of one delivery (one request and its retries).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// The delay before the next try: `initial * 2^n` with equal jitter, at most `max`; at
    /// least `retry_after` when the server gave one (also capped at `max`).
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let exp = self.initial.saturating_mul(1u32 << self.attempt.min(20)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = exp / 2;
        let jittered = half + half.mul_f64(fastrand::f64());
        jittered.max(retry_after.unwrap_or_default()).min(self.max)
    }

    /// Tries so far that failed.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// What to do with an HTTP answer, by status alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// 429, 5xx (and odd answers: 1xx, 3xx, which a proxy may produce while the backend is away).
    Retry,
    /// Other 4xx: the request itself is wrong and would fail again.
    Reject,
}

pub fn classify(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Success,
        429 => Verdict::Retry,
        400..=499 => Verdict::Reject,
        _ => Verdict::Retry,
    }
}

/// Parses a `Retry-After` value: delta seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.signed_duration_since(chrono::Utc::now());
    Some(delta.to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let c = RetryConfig { initial_backoff: HumanDuration::millis(100), max_backoff: HumanDuration::secs(1) };
        let mut b = c.backoff();
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay(None)).collect();
        for (i, d) in d.iter().enumerate() {
            let exp = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(1));
            assert!(*d >= exp / 2 && *d <= exp, "try {i}: {d:?} not in [{:?}, {exp:?}]", exp / 2);
        }
        assert_eq!(b.attempts(), 8);
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let c = RetryConfig { initial_backoff: HumanDuration::millis(10), max_backoff: HumanDuration::secs(5) };
        let mut b = c.backoff();
        assert_eq!(b.next_delay(Some(Duration::from_secs(2))), Duration::from_secs(2));
        assert_eq!(b.next_delay(Some(Duration::from_secs(60))), Duration::from_secs(5));
    }

    #[test]
    fn retry_after_formats() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        let future = (chrono::Utc::now() + chrono::Duration::seconds(100)).to_rfc2822();
        let d = parse_retry_after(&future).unwrap();
        assert!(d > Duration::from_secs(95) && d <= Duration::from_secs(100), "{d:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn verdicts() {
        assert_eq!(classify(204), Verdict::Success);
        assert_eq!(classify(429), Verdict::Retry);
        assert_eq!(classify(503), Verdict::Retry);
        assert_eq!(classify(400), Verdict::Reject);
        assert_eq!(classify(413), Verdict::Reject);
        assert_eq!(classify(302), Verdict::Retry);
    }

    #[test]
    fn validation() {
        let mut p = Problems::default();
        RetryConfig { initial_backoff: HumanDuration::secs(10), max_backoff: HumanDuration::secs(1) }
            .validate("sinks[0].retry", &mut p);
        assert_eq!(p.0.len(), 1);
        assert!(p.0[0].starts_with("sinks[0].retry.max_backoff"), "{:?}", p.0);
    }
}
