//! Per-sink metrics (label `sink`), shared by every sink type and by the metrics shipper.
//!
//! Key decision: the metric families are registered once per registry (`SinkMetricsFamilies`,
//! built with the `SinkContext`) and each sink takes a `SinkMetrics` handle holding its own
//! children, resolved once, so the hot path is a few atomic adds and never a label lookup.
//! Rejected: each sink registering its own families (a second sink's registration fails with
//! `AlreadyReg`), and a process-global registry (the house rule is an explicit registry).
//!
//! `vigil_sink_healthy` is the sink's view of its backend: 1 at start and after a successful
//! request, 0 while a request is failing and being retried. `/readyz` does not follow it (see
//! README "Sinks: health"): restarting the pod never fixes a remote backend, and a not-ready
//! DaemonSet pod only blocks rollouts.
//!
//! Every failed try goes through `SinkMetrics::retrying`, which counts it by `retry::Failure`
//! reason (`vigil_sink_request_failures_total`) and, for failures that need an operator (401,
//! 403, 404, 407, unreadable credentials, a 2xx that is not the protocol's answer), logs at
//! error what to check, at most once per reason every 10 s.

use prometheus::{Gauge, GaugeVec, Registry};
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::retry::Failure;

/// The families, registered once per registry.
#[derive(Clone, Debug)]
pub struct SinkMetricsFamilies {
    events_sent: IntCounterVec,
    bytes_sent: IntCounterVec,
    requests: IntCounterVec,
    retries: IntCounterVec,
    failures: IntCounterVec,
    rejected: IntCounterVec,
    dead_lettered: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
    last_success: GaugeVec,
    healthy: IntGaugeVec,
    loki_overflow: IntCounterVec,
}

impl SinkMetricsFamilies {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> prometheus::Result<C> {
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition"))
        };
        Ok(Self {
            events_sent: counter(
                "vigil_sink_events_sent_total",
                "Events the sink's backend accepted (an Elasticsearch 409 on create counts: already stored).",
                &["sink"],
            )?,
            bytes_sent: counter(
                "vigil_sink_bytes_sent_total",
                "Request body bytes sent, after compression, retries included.",
                &["sink"],
            )?,
            requests: counter(
                "vigil_sink_requests_total",
                "Requests by outcome: status = 2xx, 4xx, 5xx (HTTP class) or error (no HTTP answer).",
                &["sink", "status"],
            )?,
            retries: counter(
                "vigil_sink_retries_total",
                "Requests sent again after a retryable failure (connection error, timeout, 429, 5xx, 401/403/404/407/408, ...).",
                &["sink"],
            )?,
            failures: counter(
                "vigil_sink_request_failures_total",
                "Failed tries by reason, each retried (none is final): transport, throttled, server_error, \
                 unauthorized, forbidden, not_found, proxy_auth_required, request_timeout, no_credentials, \
                 invalid_answer, ingestion_blocked, unexpected_status.",
                &["sink", "reason"],
            )?,
            rejected: counter(
                "vigil_sink_events_rejected_total",
                "Events the backend refused for good (not retried), acknowledged so nothing wedges.",
                &["sink", "reason"],
            )?,
            dead_lettered: counter(
                "vigil_sink_events_dead_lettered_total",
                "Rejected events written to the dead-letter index instead (Elasticsearch).",
                &["sink"],
            )?,
            duration: reg(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "vigil_sink_request_duration_seconds",
                        "Time from sending a request to its complete answer (or failure).",
                    )
                    .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                    &["sink"],
                )
                .expect("static metric definition"),
            )?,
            in_flight: reg(
                registry,
                IntGaugeVec::new(
                    Opts::new("vigil_sink_in_flight_requests", "Requests sent and not yet answered."),
                    &["sink"],
                )
                .expect("static metric definition"),
            )?,
            last_success: reg(
                registry,
                GaugeVec::new(
                    Opts::new(
                        "vigil_sink_last_success_timestamp_seconds",
                        "Unix time of the last request the backend accepted; 0 before the first.",
                    ),
                    &["sink"],
                )
                .expect("static metric definition"),
            )?,
            healthy: reg(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "vigil_sink_healthy",
                        "1 when the sink's last request succeeded (or none failed yet), 0 while it is failing.",
                    ),
                    &["sink"],
                )
                .expect("static metric definition"),
            )?,
            loki_overflow: counter(
                "vigil_sink_loki_stream_overflow_events_total",
                "Loki events sent under the overflow label set because max_streams was reached.",
                &["sink"],
            )?,
        })
    }

    /// The handle of one sink. Calling it twice for the same name gives handles to the same
    /// series.
    pub fn sink(&self, name: &str) -> SinkMetrics {
        let healthy = self.healthy.with_label_values(&[name]);
        healthy.set(1);
        SinkMetrics {
            name: name.into(),
            events_sent: self.events_sent.with_label_values(&[name]),
            bytes_sent: self.bytes_sent.with_label_values(&[name]),
            req_2xx: self.requests.with_label_values(&[name, "2xx"]),
            req_4xx: self.requests.with_label_values(&[name, "4xx"]),
            req_5xx: self.requests.with_label_values(&[name, "5xx"]),
            req_error: self.requests.with_label_values(&[name, "error"]),
            retries: self.retries.with_label_values(&[name]),
            failures: Failure::ALL.map(|f| self.failures.with_label_values(&[name, f.reason()])),
            rejected: self.rejected.clone(),
            dead_lettered: self.dead_lettered.with_label_values(&[name]),
            duration: self.duration.with_label_values(&[name]),
            in_flight: self.in_flight.with_label_values(&[name]),
            last_success: self.last_success.with_label_values(&[name]),
            healthy,
            loki_overflow: self.loki_overflow.with_label_values(&[name]),
            reject_log: std::sync::Arc::new(Mutex::new(HashMap::new())),
            retry_log: std::sync::Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// One sink's metrics. Cheap to clone (every field is an `Arc` inside).
#[derive(Clone, Debug)]
pub struct SinkMetrics {
    name: std::sync::Arc<str>,
    pub events_sent: IntCounter,
    pub bytes_sent: IntCounter,
    req_2xx: IntCounter,
    req_4xx: IntCounter,
    req_5xx: IntCounter,
    req_error: IntCounter,
    pub retries: IntCounter,
    /// One counter per `Failure`, in `Failure::ALL` order.
    failures: [IntCounter; Failure::ALL.len()],
    rejected: IntCounterVec,
    pub dead_lettered: IntCounter,
    pub duration: Histogram,
    pub in_flight: IntGauge,
    last_success: Gauge,
    healthy: IntGauge,
    pub loki_overflow: IntCounter,
    /// reason → (last log time, rejections suppressed since).
    reject_log: std::sync::Arc<Mutex<HashMap<String, (Instant, u64)>>>,
    /// failure → (last log time, tries failed since), for failures with a hint.
    retry_log: std::sync::Arc<Mutex<HashMap<Failure, (Instant, u64)>>>,
}

/// How long a rejection reason stays quiet after it was logged.
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl SinkMetrics {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counts one answered request (or `None`: no HTTP answer) by status class.
    pub fn request(&self, status: Option<u16>) {
        match status {
            Some(200..=299) => self.req_2xx.inc(),
            Some(400..=499) => self.req_4xx.inc(),
            Some(500..=599) => self.req_5xx.inc(),
            // 1xx/3xx are not expected (redirects are not followed); count them with errors.
            _ => self.req_error.inc(),
        }
    }

    /// The backend accepted a request: healthy, and the last-success clock moves.
    pub fn success(&self) {
        self.healthy.set(1);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.last_success.set(now.as_secs_f64());
    }

    /// A request failed and will be retried.
    pub fn failing(&self) {
        self.healthy.set(0);
    }

    /// A try failed for `failure` and will be retried: unhealthy, `vigil_sink_retries_total`
    /// and `vigil_sink_request_failures_total{reason}` move. A failure with a hint (the backend
    /// refuses who or where we are) is logged at error with what to check, at most once per
    /// reason every 10 s; `error` is the backend's answer or the local error, kept short by the
    /// caller. Transient failures are left to the sink's own (sparser) retry log.
    pub fn retrying(&self, failure: Failure, error: &str) {
        self.healthy.set(0);
        self.retries.inc();
        let i = Failure::ALL.iter().position(|f| *f == failure).expect("ALL lists every failure");
        self.failures[i].inc();
        let Some(hint) = failure.hint() else { return };
        let mut log = self.retry_log.lock().expect("retry log lock poisoned");
        let now = Instant::now();
        let entry = log.entry(failure).or_insert((now - REJECT_LOG_INTERVAL * 2, 0));
        if now.duration_since(entry.0) >= REJECT_LOG_INTERVAL {
            let suppressed = entry.1;
            *entry = (now, 0);
            drop(log);
            tracing::error!(
                sink = %self.name,
                reason = failure.reason(),
                failed_since_last_log = suppressed,
                error,
                "sink {}: {}: {hint}; retrying (nothing is dropped; intake waits)",
                self.name,
                failure.reason()
            );
        } else {
            entry.1 += 1;
        }
    }

    /// A whole request was refused for its data (a final 4xx, see `retry::classify`): the
    /// backend answered, so it is up; the events are counted by `rejected`.
    pub fn rejected_request(&self, _status: u16) {
        self.healthy.set(1);
    }

    /// Creates this sink's `vigil_sink_events_rejected_total{reason}` series at 0 for the reasons
    /// it knows at start, so a first rejection is a visible increase (`rate()` alerts fire on
    /// it) and dashboards show 0 rather than "No data" (Prometheus' instrumentation guidelines).
    pub fn with_rejection_reasons(self, reasons: &[&str]) -> Self {
        for reason in reasons {
            self.rejected.with_label_values(&[self.name.as_ref(), reason]);
        }
        self
    }

    /// Counts `n` events rejected for `reason` and logs it, at most once per reason every 10 s,
    /// with one sample (the backend's error text, which the caller keeps short).
    pub fn rejected(&self, reason: &str, n: u64, sample: &str) {
        if n == 0 {
            return;
        }
        self.rejected.with_label_values(&[&self.name, reason]).inc_by(n);
        let mut log = self.reject_log.lock().expect("reject log lock poisoned");
        let now = Instant::now();
        let entry = log.entry(reason.to_string()).or_insert((now - REJECT_LOG_INTERVAL * 2, 0));
        if now.duration_since(entry.0) >= REJECT_LOG_INTERVAL {
            let suppressed = entry.1;
            *entry = (now, 0);
            drop(log);
            tracing::warn!(
                sink = %self.name,
                reason,
                events = n,
                suppressed_since_last_log = suppressed,
                error = sample,
                "sink: events rejected by the backend and dropped (not retried); see vigil_sink_events_rejected_total"
            );
        } else {
            entry.1 += n;
        }
    }
}

/// Decrements the in-flight gauge when dropped, so a cancelled request cannot leak it.
pub struct InFlight<'a>(&'a IntGauge);

impl<'a> InFlight<'a> {
    pub fn enter(g: &'a IntGauge) -> Self {
        g.inc();
        Self(g)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_sinks_share_one_registry() {
        let r = Registry::new();
        let f = SinkMetricsFamilies::register(&r).unwrap();
        let a = f.sink("a");
        let b = f.sink("b");
        a.events_sent.inc_by(3);
        b.request(Some(503));
        a.rejected("mapper_parsing_exception", 2, "sample");
        a.rejected("mapper_parsing_exception", 1, "sample");
        let text = {
            let mut buf = Vec::new();
            prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut buf).unwrap();
            String::from_utf8(buf).unwrap()
        };
        assert!(text.contains("vigil_sink_events_sent_total{sink=\"a\"} 3"), "{text}");
        assert!(text.contains("vigil_sink_requests_total{sink=\"b\",status=\"5xx\"} 1"), "{text}");
        assert!(text.contains("vigil_sink_healthy{sink=\"b\"} 1"), "{text}");
        assert!(
            text.contains("vigil_sink_events_rejected_total{reason=\"mapper_parsing_exception\",sink=\"a\"} 3"),
            "{text}"
        );
        // A second registration on the same registry is refused: families are per registry.
        assert!(SinkMetricsFamilies::register(&r).is_err());
    }

    #[test]
    fn in_flight_guard_restores_gauge() {
        let r = Registry::new();
        let m = SinkMetricsFamilies::register(&r).unwrap().sink("s");
        {
            let _g = InFlight::enter(&m.in_flight);
            assert_eq!(m.in_flight.get(), 1);
        }
        assert_eq!(m.in_flight.get(), 0);
    }
}
