//! The delivery loop every HTTP sink shares: send → `retry::classify` → split on 413 → count a
//! final rejection → or back off, log at powers of two, and send again; health follows.
//!
//! A sink gives only what is its own ([`Exchange`]): how items become a request (`encode_request`),
//! where it goes (`client`, `url`), and what an answer accepted (`accepted` for a 2xx,
//! `rejected` for a final 4xx). The answer rules stay in `retry::classify`, so a change to the
//! 4xx rules is made there once and every sink follows.
//!
//! Log sinks (Loki, OTLP logs, Elasticsearch `_bulk`) call [`deliver`], which retries until
//! every item is final. Metrics sinks (remote write, OTLP metrics) call [`once`] for one try:
//! `metrics::ship` owns their queue and backoff.
//!
//! Key decision: a request is encoded once and resent as is; it is encoded again only when an
//! answer settled part of it (`Accepted::Rest`: Elasticsearch's items). Rejected: encoding on
//! every try (a Loki encode also updates the stream table and counts overflow).

use super::http::{HttpClient, HttpResponse, error_chain};
use super::metrics::SinkMetrics;
use super::retry::{self, Backoff, Failure, Verdict};
use bytes::Bytes;
use reqwest::header::HeaderMap;
use std::time::Duration;

/// What one delivery carries (events, documents), in order; halved on a 413.
pub trait Pending: Send + Sized {
    fn count(&self) -> usize;
    /// The first half and the second half, in order.
    fn halve(self) -> (Self, Self);
}

impl<T: Sync> Pending for &[T] {
    fn count(&self) -> usize {
        self.len()
    }
    fn halve(self) -> (Self, Self) {
        self.split_at(self.len() / 2)
    }
}

impl<T: Send> Pending for Vec<T> {
    fn count(&self) -> usize {
        self.len()
    }
    fn halve(mut self) -> (Self, Self) {
        let second = self.split_off(self.len() / 2);
        (self, second)
    }
}

/// A request sent whole or not at all (a metrics batch, encoded when collected): never split.
pub struct Whole<T>(pub T);

impl<T: Send> Pending for Whole<T> {
    fn count(&self) -> usize {
        1
    }
    fn halve(self) -> (Self, Self) {
        unreachable!("a request of one item is never split (`once` splits only counts above 1)")
    }
}

/// A failed try, retried after a backoff.
#[derive(Debug)]
pub struct Retry {
    pub failure: Failure,
    pub retry_after: Option<Duration>,
    /// For the log line and the metrics: `HTTP 503: <body sample>`, a transport error chain.
    pub error: String,
}

impl Retry {
    /// A retryable HTTP status, with the answer's `Retry-After` and a body sample.
    pub fn status(failure: Failure, r: &HttpResponse) -> Self {
        Self { failure, retry_after: r.retry_after, error: format!("HTTP {}: {}", r.status, r.body_sample(512)) }
    }
}

/// What a 2xx answer accepted.
pub enum Accepted {
    /// Every item is final (stored, or counted by the sink as rejected).
    All,
    /// Nothing is settled (e.g. a 2xx that is not the protocol's answer): the same request is
    /// sent again after a backoff.
    Retry(Retry),
    /// Part was settled and the items now hold the rest, encoded anew and sent at once (`None`)
    /// or after a backoff.
    Rest(Option<Retry>),
}

/// How the log lines of a sink's delivery read.
pub struct Texts {
    /// The field counting items: `events` or `documents`.
    pub unit: Unit,
    /// Logged when a 413 halves a request.
    pub too_large: &'static str,
    /// Logged at the 1st, 2nd, 4th, 8th … failed try.
    pub retrying: &'static str,
}

#[derive(Clone, Copy)]
pub enum Unit {
    Events,
    Documents,
}

/// What a sink gives the shared loop.
pub trait Exchange<I: Pending>: Sync {
    /// What the sink learns over a whole delivery (`()` for most; `_bulk` counts per item).
    type Outcome: Send;
    fn client(&self) -> &HttpClient;
    fn url(&self) -> &reqwest::Url;
    /// Answer bodies longer than this are cut.
    fn max_answer(&self) -> usize;
    fn backoff(&self) -> Backoff;
    fn texts(&self) -> &'static Texts;
    /// The request body and headers for `items`.
    fn encode_request(&self, items: &I) -> (Bytes, HeaderMap);
    /// A 2xx: count what it accepted; `items` keep what is still pending.
    fn accepted(&self, items: &mut I, answer: &HttpResponse, out: &mut Self::Outcome) -> Accepted;
    /// A final 4xx (`Verdict::Reject`, after a 413 of several items was split): count it.
    fn rejected(&self, items: &I, answer: &HttpResponse, out: &mut Self::Outcome);
}

/// The result of one try.
pub enum Step {
    /// Every item is final.
    Done,
    /// 413 with more than one item: send each half on its own.
    Split,
    /// Retry the same request after a backoff (already counted in `retrying`).
    Retry(Retry),
    /// The items changed: encode them again, send at once or after a backoff.
    Rest(Option<Retry>),
}

/// One try: sends `request`, reads the answer by `retry::classify` and the sink's rules.
/// A retryable failure is counted (`SinkMetrics::retrying`); an answer that settles
/// everything marks the sink healthy (`success`), a final 4xx counts the rejected request.
pub async fn once<I: Pending, E: Exchange<I> + ?Sized>(
    e: &E,
    items: &mut I,
    request: &(Bytes, HeaderMap),
    out: &mut E::Outcome,
) -> Step {
    let m = e.client().metrics();
    let step = match e.client().post(e.url(), request.0.clone(), request.1.clone(), e.max_answer()).await {
        Err(error) => Step::Retry(Retry { failure: error.failure(), retry_after: None, error: error_chain(&error) }),
        Ok(r) if r.status == 413 && items.count() > 1 => Step::Split,
        Ok(r) => match retry::classify(r.status) {
            Verdict::Success => match e.accepted(items, &r, out) {
                Accepted::All => {
                    m.success();
                    Step::Done
                }
                Accepted::Retry(retry) => Step::Retry(retry),
                Accepted::Rest(retry) => Step::Rest(retry),
            },
            Verdict::Reject => {
                e.rejected(items, &r, out);
                m.rejected_request(r.status);
                Step::Done
            }
            Verdict::Retry(failure) => Step::Retry(Retry::status(failure, &r)),
        },
    };
    if let Step::Retry(r) | Step::Rest(Some(r)) = &step {
        m.retrying(r.failure, &r.error);
    }
    step
}

/// Delivers `items`: retries without limit until each is final (delivered, or rejected and
/// counted), halving on a 413 (first half delivered before the second).
pub async fn deliver<I: Pending, E: Exchange<I>>(e: &E, items: I, out: &mut E::Outcome) {
    let mut items = items;
    let m = e.client().metrics();
    let mut backoff = e.backoff();
    let mut request = e.encode_request(&items);
    loop {
        let retry = match once(e, &mut items, &request, out).await {
            Step::Done => return,
            Step::Split => {
                log_too_large(m, e.texts(), items.count());
                let (a, b) = items.halve();
                Box::pin(deliver(e, a, out)).await;
                Box::pin(deliver(e, b, out)).await;
                return;
            }
            Step::Retry(retry) => retry,
            Step::Rest(retry) => {
                request = e.encode_request(&items);
                match retry {
                    Some(retry) => retry,
                    None => continue,
                }
            }
        };
        let delay = backoff.next_delay(retry.retry_after);
        if backoff.attempts().is_power_of_two() {
            log_retrying(m, e.texts(), backoff.attempts(), items.count(), delay, &retry.error);
        }
        tokio::time::sleep(delay).await;
    }
}

fn log_too_large(m: &SinkMetrics, t: &Texts, n: usize) {
    match t.unit {
        Unit::Events => tracing::warn!(sink = m.name(), events = n, "{}", t.too_large),
        Unit::Documents => tracing::warn!(sink = m.name(), documents = n, "{}", t.too_large),
    }
}

fn log_retrying(m: &SinkMetrics, t: &Texts, attempt: u32, n: usize, retry_in: Duration, error: &str) {
    match t.unit {
        Unit::Events => {
            tracing::warn!(sink = m.name(), attempt, events = n, ?retry_in, error, "{}", t.retrying)
        }
        Unit::Documents => {
            tracing::warn!(sink = m.name(), attempt, documents = n, ?retry_in, error, "{}", t.retrying)
        }
    }
}
