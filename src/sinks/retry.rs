//! Retries: exponential backoff with jitter, capped, honouring `Retry-After`; and which HTTP
//! answers are worth retrying (`classify`, the one place every HTTP sink takes that from).
//!
//! Key decision: retries never give up. A retryable failure (connection error, timeout, 429,
//! 5xx) is retried until it succeeds or the process shuts down, because giving up would mean
//! dropping lines; the files on disk are the buffer, and bounded queues turn a long outage into
//! slower reading, not into loss. Rejected: a maximum retry count (Fluent Bit's `Retry_Limit`,
//! which drops the chunk when reached). Only answers about the data itself (400, 413, 422 …)
//! are final: the same request would fail again, so its events are counted as rejected.
//!
//! Answers about access or address (401, 403, 404, 407) are retried too, never final: they say
//! nothing about the data, and a rotated token, a missing tenant or a wrong path fixed by an
//! operator (or a credential file that reappears) lets the same request through. Treating them
//! as final would checkpoint lines that were never stored. 408 (the server timed out reading
//! the request) is a timeout like any other. Such a sink is unhealthy and its logs say what to
//! check (`Failure::hint`), while intake pauses and the files hold the lines.
//!
//! How a sink uses it: through `sinks::deliver`, the one delivery loop (send → `classify` →
//! 413 split → count a final rejection, or back off and resend), giving only its encoding and
//! what a 2xx answer accepted. A 2xx whose body is not the protocol's answer is
//! `Failure::InvalidAnswer`, retried.
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

/// What to do with an HTTP answer, by status alone. Every HTTP sink takes its 4xx rules from
/// here, so they all treat an answer alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx. A sink still checks the body where the protocol defines one (`_bulk` items).
    Success,
    /// Send the same request again after a backoff; never dropped.
    Retry(Failure),
    /// 4xx about the request's data (400, 413, 422 …): it would fail again, so its events are
    /// counted as rejected and acknowledged.
    Reject,
}

/// Why a try failed and is retried: the `reason` of `vigil_sink_request_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// No HTTP answer: connection refused or dropped, TLS, timeout.
    Transport,
    /// 429.
    Throttled,
    /// 5xx.
    ServerError,
    /// 401: credentials missing, wrong or expired (e.g. a rotated token).
    Unauthorized,
    /// 403: the credentials may not write there.
    Forbidden,
    /// 404: wrong endpoint or path.
    NotFound,
    /// 407: a forward proxy wants credentials.
    ProxyAuthRequired,
    /// 408: the server timed out reading the request.
    RequestTimeout,
    /// The credentials could not be read (`bearer_token_file` missing, unreadable or empty):
    /// the request is not sent without them.
    NoCredentials,
    /// A 2xx whose body is not the answer the protocol defines (e.g. an auth proxy's HTML
    /// sign-in page instead of a `_bulk` answer): nothing says the data was stored.
    InvalidAnswer,
    /// Loki's 260: a 2xx, but ingestion is blocked and nothing was stored.
    IngestionBlocked,
    /// 1xx or 3xx (redirects are not followed): a proxy answering while the backend is away.
    UnexpectedStatus,
}

impl Failure {
    /// Every value, for pre-created series and tests.
    pub const ALL: [Failure; 12] = [
        Failure::Transport,
        Failure::Throttled,
        Failure::ServerError,
        Failure::Unauthorized,
        Failure::Forbidden,
        Failure::NotFound,
        Failure::ProxyAuthRequired,
        Failure::RequestTimeout,
        Failure::NoCredentials,
        Failure::InvalidAnswer,
        Failure::IngestionBlocked,
        Failure::UnexpectedStatus,
    ];

    /// The metric label value.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::Transport => "transport",
            Failure::Throttled => "throttled",
            Failure::ServerError => "server_error",
            Failure::Unauthorized => "unauthorized",
            Failure::Forbidden => "forbidden",
            Failure::NotFound => "not_found",
            Failure::ProxyAuthRequired => "proxy_auth_required",
            Failure::RequestTimeout => "request_timeout",
            Failure::NoCredentials => "no_credentials",
            Failure::InvalidAnswer => "invalid_answer",
            Failure::IngestionBlocked => "ingestion_blocked",
            Failure::UnexpectedStatus => "unexpected_status",
        }
    }

    /// What an operator should check, for failures that do not go away by themselves (the
    /// backend answers, but refuses who or where we are); `None` for transient ones.
    pub fn hint(self) -> Option<&'static str> {
        Some(match self {
            Failure::Unauthorized => "check credentials (auth, a rotated or expired token, tenant_id)",
            Failure::Forbidden => "check that the credentials may write to this endpoint, index or tenant",
            Failure::NotFound => "check the endpoint URL and its path",
            Failure::ProxyAuthRequired => "check the credentials of the proxy on the way",
            Failure::NoCredentials => "check that auth.bearer_token_file exists, is readable and not empty",
            Failure::InvalidAnswer => {
                "check the endpoint: something else (an auth proxy's sign-in page?) answers instead of the backend"
            }
            _ => return None,
        })
    }
}

pub fn classify(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Success,
        401 => Verdict::Retry(Failure::Unauthorized),
        403 => Verdict::Retry(Failure::Forbidden),
        404 => Verdict::Retry(Failure::NotFound),
        407 => Verdict::Retry(Failure::ProxyAuthRequired),
        408 => Verdict::Retry(Failure::RequestTimeout),
        429 => Verdict::Retry(Failure::Throttled),
        400..=499 => Verdict::Reject,
        500..=599 => Verdict::Retry(Failure::ServerError),
        _ => Verdict::Retry(Failure::UnexpectedStatus),
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
        assert_eq!(classify(429), Verdict::Retry(Failure::Throttled));
        assert_eq!(classify(503), Verdict::Retry(Failure::ServerError));
        assert_eq!(classify(400), Verdict::Reject);
        assert_eq!(classify(413), Verdict::Reject);
        assert_eq!(classify(422), Verdict::Reject);
        assert_eq!(classify(302), Verdict::Retry(Failure::UnexpectedStatus));
    }

    /// Regression: 401, 403, 404, 407 and 408 were final (`Reject`), so a rotated token or a
    /// wrong path dropped the batch and checkpointed past it.
    #[test]
    fn auth_and_address_answers_are_retried_never_rejected() {
        for (status, failure) in [
            (401, Failure::Unauthorized),
            (403, Failure::Forbidden),
            (404, Failure::NotFound),
            (407, Failure::ProxyAuthRequired),
            (408, Failure::RequestTimeout),
        ] {
            assert_eq!(classify(status), Verdict::Retry(failure), "{status}");
        }
        let reasons: std::collections::HashSet<&str> = Failure::ALL.iter().map(|f| f.reason()).collect();
        assert_eq!(reasons.len(), Failure::ALL.len(), "reasons are distinct label values");
        assert!(Failure::Unauthorized.hint().unwrap().contains("credentials"));
        assert_eq!(Failure::Transport.hint(), None);
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
