//! The `_bulk` machinery, shared by the log sink and the metrics shipper: NDJSON `create`
//! actions, gzip, and item-by-item handling of the answer.
//!
//! Key decision: a delivery is a set of pending documents that shrinks. Each attempt sends only
//! the documents still pending; an item that succeeded (2xx) or already exists (409 on
//! `create`: stored by an earlier attempt or an earlier run) leaves the set and is never sent
//! again; items that `retry::classify` retries (429, 5xx, 403, 404 …) stay; other 4xx items
//! are rejected (counted by error type, logged with one sample) or become dead-letter documents
//! that go out with the next attempt. A whole
//! request that fails (transport, 429, 5xx, 401/403/404/407/408: `retry::classify`) is retried
//! as it was: with deterministic `_id`s a retry can only produce 409s, never duplicates.
//! Rejected: resending the whole batch on a partial failure (duplicates without ids, wasted work
//! with them) and dropping failed items after N tries (loses lines).
//!
//! A document counts as stored only when the answer's `items` say so, one item per document
//! (with `errors: false` before them, Elasticsearch's "nothing failed", the items are only
//! counted, not read: parsing every item cost ~15% of the sink's CPU).
//! A 2xx whose body is not a bulk answer (an auth proxy's HTML sign-in page, JSON without
//! `items`, fewer items than documents) is retried with an error saying so, never taken as
//! stored. The one exception is opt-in: `accept_empty_response` takes an empty 2xx body as
//! "all stored", for ES-compatible endpoints known to answer that way. Rejected: trusting any
//! 2xx (a proxy in front of Elasticsearch then silently swallows every line).
//!
//! Encoding: a delivery's documents are written once, action line and source back to back,
//! into one buffer (`BulkDocs`), which is the first attempt's body as is; a later attempt copies
//! only the spans of the documents still pending. Rejected: a `Vec` per document and a second
//! copy into the body (an allocation and a copy of every byte per document, for a retry path
//! that is rare).

use super::super::deliver::{self, Accepted, Exchange, Retry, Texts, Unit};
use super::super::http::{Compression, HttpClient, HttpResponse, gzip};
use super::super::retry::{self, Backoff, Failure, RetryConfig, Verdict};
use bytes::Bytes;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One document to `create`.
#[derive(Debug, Clone)]
pub struct BulkDoc {
    /// Target index; shared by the documents of a batch that go to the same one.
    pub index: Arc<str>,
    /// Deterministic id (so a retry is idempotent); `None` lets Elasticsearch pick one.
    pub id: Option<String>,
    /// The document: one JSON object, no trailing newline.
    pub source: Vec<u8>,
}

/// What happened to a delivery, once every document is final.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BulkOutcome {
    /// Stored by this delivery.
    pub created: usize,
    /// Already stored (409 on `create`): delivered.
    pub conflicts: usize,
    /// Rejected for good, by reason (error type or `status_<code>`).
    pub rejected: BTreeMap<String, usize>,
    /// Rejected, then stored in the dead-letter index.
    pub dead_lettered: usize,
}

impl BulkOutcome {
    pub fn delivered(&self) -> usize {
        self.created + self.conflicts
    }
}

/// Sends `_bulk` requests for one sink.
pub struct BulkSender {
    pub client: HttpClient,
    pub url: reqwest::Url,
    pub compression: Compression,
    pub retry: RetryConfig,
    /// Where rejected documents go instead of being dropped; `None`: dropped and counted.
    pub dead_letter_index: Option<String>,
    /// Take an empty 2xx body as "every document stored" (endpoints known to answer so);
    /// otherwise it is retried like any answer that is not a bulk answer.
    pub accept_empty_response: bool,
}

/// Enough for the answer to a 10000-item request with every item failing.
const MAX_RESPONSE_BODY: usize = 64 << 20;

/// The parts of a `_bulk` answer that matter, read in one pass: `errors` and `items`.
///
/// Elasticsearch's Bulk API sets the top-level `errors` to true if one or more operations
/// failed, false when every one succeeded, and writes it before `items`. So once `errors` is
/// false the items are only counted (skimmed, nothing built): the count still has to match
/// the request, because an answer that does not cover every document (`filter_path=errors`,
/// a truncated list) must not be taken as stored. Otherwise (`errors` true, missing, after
/// `items`, or not a bool) every item is read, as the per-item handling needs.
struct Response {
    items: Option<Items>,
}

enum Items {
    /// `errors` was false before the list: how many items it has.
    Counted(usize),
    Parsed(Vec<Item>),
}

impl Items {
    fn len(&self) -> usize {
        match self {
            Items::Counted(n) => *n,
            Items::Parsed(v) => v.len(),
        }
    }
}

impl<'de> Deserialize<'de> for Response {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Key {
            Errors,
            Items,
            #[serde(other)]
            Other,
        }
        /// The number of elements of a list, each skipped unread.
        struct Count(usize);
        impl<'de> Deserialize<'de> for Count {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Count;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a list of bulk answer items")
                    }
                    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                        let mut n = 0;
                        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                            n += 1;
                        }
                        Ok(Count(n))
                    }
                }
                d.deserialize_seq(V)
            }
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Response;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a bulk answer")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Response, A::Error> {
                let mut errors = None;
                let mut items: Option<Option<Items>> = None;
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        // Lenient, as when `errors` was not read at all: anything but a bool
                        // means "read every item".
                        Key::Errors => errors = map.next_value::<serde_json::Value>()?.as_bool(),
                        Key::Items if items.is_some() => return Err(serde::de::Error::duplicate_field("items")),
                        Key::Items if errors == Some(false) => {
                            items = Some(map.next_value::<Option<Count>>()?.map(|c| Items::Counted(c.0)));
                        }
                        Key::Items => items = Some(map.next_value::<Option<Vec<Item>>>()?.map(Items::Parsed)),
                        Key::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                let items = items.flatten();
                if matches!(items, Some(Items::Counted(_))) && errors != Some(false) {
                    return Err(serde::de::Error::custom("`errors` given twice, false then not"));
                }
                Ok(Response { items })
            }
        }
        d.deserialize_map(V)
    }
}

/// One answer item, `{"create": {…}}`: the result under its one key (the action's name), read
/// without building a map per item; `None` for an empty object.
struct Item(Option<ItemResult>);

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Item;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a bulk answer item")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
                let mut first = None;
                while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
                    if first.is_none() {
                        first = Some(map.next_value::<ItemResult>()?);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(Item(first))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
struct ItemResult {
    status: u16,
    #[serde(default)]
    error: Option<ItemError>,
}

#[derive(Deserialize)]
struct ItemError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    reason: String,
}

/// The documents of one delivery, encoded once: each one's action line, source and `\n`,
/// back to back in one buffer, which is the body of the first attempt as is.
pub struct BulkDocs {
    buf: Vec<u8>,
    spans: Vec<Span>,
    /// The last index and its action line up to the `_id` (`{"create":{"_index":"…"`): the
    /// documents of a batch mostly share one.
    last_index: String,
    action_head: Vec<u8>,
}

/// Where one document is in the buffer: `start..source` is its action line (newline
/// included), `source..end` its source and newline.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    source: usize,
    end: usize,
}

impl BulkDocs {
    /// Room for about `bytes` of NDJSON and `docs` documents.
    pub fn with_capacity(bytes: usize, docs: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(docs),
            last_index: String::new(),
            action_head: Vec::new(),
        }
    }

    /// Appends a document `create`d in `index` with `id` (`None`: Elasticsearch picks one);
    /// `source` appends the document itself (one JSON object, no newline) to the buffer.
    pub fn push(&mut self, index: &str, id: Option<&str>, source: impl FnOnce(&mut Vec<u8>)) {
        if self.action_head.is_empty() || self.last_index != index {
            self.last_index.clear();
            self.last_index.push_str(index);
            self.action_head.clear();
            self.action_head.extend_from_slice(b"{\"create\":{\"_index\":");
            crate::event::write_json_str(&mut self.action_head, index);
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(&self.action_head);
        if let Some(id) = id {
            self.buf.extend_from_slice(b",\"_id\":");
            crate::event::write_json_str(&mut self.buf, id);
        }
        self.buf.extend_from_slice(b"}}\n");
        let src = self.buf.len();
        source(&mut self.buf);
        self.buf.push(b'\n');
        self.spans.push(Span { start, source: src, end: self.buf.len() });
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The NDJSON body of every document (what the first attempt sends).
    pub fn body(&self) -> &[u8] {
        &self.buf
    }

    fn into_pending(self) -> Docs {
        let items = self.spans.into_iter().map(Doc::Encoded).collect();
        Docs { body: Bytes::from(self.buf), items }
    }
}

/// The documents still pending in a delivery: spans of the delivery's buffer (shared by the
/// halves of a split) and dead letters.
pub struct Docs {
    body: Bytes,
    items: Vec<Doc>,
}

enum Doc {
    Encoded(Span),
    DeadLetter(BulkDoc),
}

impl deliver::Pending for Docs {
    fn count(&self) -> usize {
        self.items.len()
    }
    fn halve(mut self) -> (Self, Self) {
        let second = self.items.split_off(self.items.len() / 2);
        let body = self.body.clone();
        (self, Docs { body, items: second })
    }
}

impl Docs {
    /// The body of the next attempt: the buffer as is while every document is pending in
    /// order, otherwise the pending documents copied together.
    fn request_body(&self) -> Bytes {
        let mut next = 0;
        let whole = self.items.iter().all(|d| match d {
            Doc::Encoded(s) if s.start == next => {
                next = s.end;
                true
            }
            _ => false,
        }) && next == self.body.len();
        if whole {
            return self.body.clone();
        }
        let size = self.items.iter().map(|d| match d {
            Doc::Encoded(s) => s.end - s.start,
            Doc::DeadLetter(doc) => doc.source.len() + doc.index.len() + 100,
        });
        let mut out = Vec::with_capacity(size.sum());
        for d in &self.items {
            match d {
                Doc::Encoded(s) => out.extend_from_slice(&self.body[s.start..s.end]),
                Doc::DeadLetter(doc) => {
                    write_action(&mut out, doc);
                    out.extend_from_slice(&doc.source);
                    out.push(b'\n');
                }
            }
        }
        Bytes::from(out)
    }
}

impl BulkSender {
    /// Delivers every document: retries while anything is retryable, returns once each is
    /// stored, already there, dead-lettered, or rejected. Counts rejections and dead letters in
    /// the sink's metrics; the caller counts what it delivered (events or samples).
    pub async fn deliver(&self, docs: Vec<BulkDoc>) -> BulkOutcome {
        let size = docs.iter().map(|d| d.source.len() + d.index.len() + 64).sum();
        let mut encoded = BulkDocs::with_capacity(size, docs.len());
        for d in &docs {
            encoded.push(&d.index, d.id.as_deref(), |out| out.extend_from_slice(&d.source));
        }
        self.deliver_encoded(encoded).await
    }

    /// `deliver` for documents already encoded.
    pub async fn deliver_encoded(&self, docs: BulkDocs) -> BulkOutcome {
        let mut out = BulkOutcome::default();
        deliver::deliver(self, docs.into_pending(), &mut out).await;
        out
    }

    fn all_stored(&self, pending: &mut Docs, out: &mut BulkOutcome) {
        for d in pending.items.drain(..) {
            if let Doc::DeadLetter(_) = d {
                out.dead_lettered += 1;
                self.client.metrics().dead_lettered.inc();
            } else {
                out.created += 1;
            }
        }
    }

    /// Sorts the items of an answer; returns what is still pending. `first` gets the first
    /// retryable failure and its error, for the metrics and the retry log line.
    fn per_item(
        &self,
        pending: &mut Docs,
        items: Vec<Item>,
        out: &mut BulkOutcome,
        first: &mut Option<(Failure, String)>,
    ) {
        let m = self.client.metrics();
        let mut still = Vec::new();
        for (p, item) in std::mem::take(&mut pending.items).into_iter().zip(items) {
            let Item(Some(res)) = item else {
                first.get_or_insert((Failure::InvalidAnswer, "answer item without a result".into()));
                still.push(p);
                continue;
            };
            let is_dead_letter = matches!(p, Doc::DeadLetter(_));
            match res.status {
                200..=299 | 409 => {
                    if is_dead_letter {
                        out.dead_lettered += 1;
                        m.dead_lettered.inc();
                    } else if res.status == 409 {
                        out.conflicts += 1;
                    } else {
                        out.created += 1;
                    }
                }
                // The whole-request rules, item by item: 429, 5xx, and 403 (e.g. an index
                // blocked read-only at the flood-stage disk watermark) or 404 (no index and
                // auto-creation off) wait for the cluster or an operator; they are not final.
                s => match retry::classify(s) {
                    Verdict::Retry(failure) => {
                        first.get_or_insert_with(|| (failure, item_error_text(s, &res.error)));
                        still.push(p);
                    }
                    _ => {
                        let reason = res.error.as_ref().map(|e| e.kind.clone()).filter(|k| valid_reason(k));
                        let reason = reason.unwrap_or_else(|| format!("status_{s}"));
                        let text = item_error_text(s, &res.error);
                        m.rejected(&reason, 1, &text);
                        *out.rejected.entry(reason).or_default() += 1;
                        if let (Some(dlq), Doc::Encoded(span)) = (&self.dead_letter_index, p) {
                            still.push(Doc::DeadLetter(dead_letter(dlq, &pending.body, span, &text)));
                        }
                    }
                },
            }
        }
        pending.items = still;
    }

    fn encode(&self, pending: &Docs) -> (Bytes, HeaderMap) {
        let body = pending.request_body();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        let body = match self.compression {
            Compression::None => body,
            Compression::Gzip => {
                headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                Bytes::from(gzip(&body))
            }
        };
        (body, headers)
    }
}

/// `_bulk`'s part of the shared delivery loop (`deliver`): each try sends the documents still
/// pending.
impl Exchange<Docs> for BulkSender {
    type Outcome = BulkOutcome;

    fn client(&self) -> &HttpClient {
        &self.client
    }
    fn url(&self) -> &reqwest::Url {
        &self.url
    }
    fn max_answer(&self) -> usize {
        MAX_RESPONSE_BODY
    }
    fn backoff(&self) -> Backoff {
        self.retry.backoff()
    }
    fn texts(&self) -> &'static Texts {
        &Texts {
            unit: Unit::Documents,
            // Too large for something on the way (a proxy's body limit is often 1MB): halved
            // until it fits, rather than lines rejected for a size limit.
            too_large: "elasticsearch: request too large (413); splitting it in two; lower batch.max_bytes",
            retrying: "elasticsearch bulk failed; retrying the failed documents",
        }
    }
    fn encode_request(&self, pending: &Docs) -> (Bytes, HeaderMap) {
        BulkSender::encode(self, pending)
    }

    fn accepted(&self, pending: &mut Docs, r: &HttpResponse, out: &mut BulkOutcome) -> Accepted {
        let invalid =
            |error: String| Accepted::Retry(Retry { failure: Failure::InvalidAnswer, retry_after: None, error });
        if r.body.trim_ascii().is_empty() && self.accept_empty_response {
            self.all_stored(pending, out);
            return Accepted::All;
        }
        match serde_json::from_slice::<Response>(&r.body) {
            Ok(Response { items: Some(Items::Counted(n)) }) if n == pending.items.len() => {
                self.all_stored(pending, out);
                Accepted::All
            }
            Ok(Response { items: Some(Items::Parsed(items)) }) if items.len() == pending.items.len() => {
                let mut first = None;
                self.per_item(pending, items, out, &mut first);
                if pending.items.is_empty() {
                    return Accepted::All;
                }
                // Nothing failed retryably: what is left are new dead letters, to send at once,
                // without backoff.
                Accepted::Rest(first.map(|(failure, error)| Retry { failure, retry_after: r.retry_after, error }))
            }
            Ok(Response { items: Some(items) }) => invalid(format!(
                "HTTP {}: answer has {} items for {} documents (filter_path in the endpoint's query?)",
                r.status,
                items.len(),
                pending.items.len()
            )),
            Ok(Response { items: None }) => invalid(format!(
                "HTTP {}: answer without items, so nothing says the documents were stored \
                 (filter_path in the endpoint's query?): {}",
                r.status,
                r.body_sample(512)
            )),
            Err(_) if r.body.trim_ascii().is_empty() => invalid(format!(
                "HTTP {}: empty answer instead of a bulk answer; if this endpoint is known to \
                 answer so, set accept_empty_response: true",
                r.status
            )),
            Err(error) => {
                invalid(format!("HTTP {}: answer is not a bulk answer ({error}): {}", r.status, r.body_sample(512)))
            }
        }
    }

    fn rejected(&self, pending: &Docs, r: &HttpResponse, out: &mut BulkOutcome) {
        // The request as a whole is refused for its content (400, 413 for a single document):
        // every pending document is rejected with that reason.
        let reason = format!("status_{}", r.status);
        let sample = format!("HTTP {}: {}", r.status, r.body_sample(512));
        self.client.metrics().rejected(&reason, pending.items.len() as u64, &sample);
        *out.rejected.entry(reason).or_default() += pending.items.len();
    }
}

pub(super) fn write_action(out: &mut Vec<u8>, doc: &BulkDoc) {
    #[derive(serde::Serialize)]
    struct Meta<'a> {
        _index: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        _id: Option<&'a str>,
    }
    #[derive(serde::Serialize)]
    struct Action<'a> {
        create: Meta<'a>,
    }
    serde_json::to_writer(&mut *out, &Action { create: Meta { _index: &doc.index, _id: doc.id.as_deref() } })
        .expect("writing JSON to a Vec cannot fail");
    out.push(b'\n');
}

/// Error types are Elasticsearch exception names: a bounded set, fine as a label value.
fn valid_reason(k: &str) -> bool {
    !k.is_empty() && k.len() <= 64 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn item_error_text(status: u16, e: &Option<ItemError>) -> String {
    match e {
        Some(e) => {
            let mut cut = e.reason.len().min(400);
            while !e.reason.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("item status {status}: {}: {}", e.kind, &e.reason[..cut])
        }
        None => format!("item status {status}"),
    }
}

/// The dead-letter document of a rejected one: when, why, where it was going, and the
/// original document as a string (`event.original`, ECS), which cannot conflict with any
/// mapping. Same `_id`, so dead-lettering is idempotent too.
fn dead_letter(index: &str, body: &[u8], doc: Span, error: &str) -> BulkDoc {
    #[derive(Deserialize)]
    struct Action {
        create: Meta,
    }
    #[derive(Deserialize)]
    struct Meta {
        _index: String,
        #[serde(default)]
        _id: Option<String>,
    }
    // The action line is vigil's own (`BulkDocs::push`): it always reads back.
    let Action { create: Meta { _index: original_index, _id: id } } =
        serde_json::from_slice(&body[doc.start..doc.source]).expect("an action line vigil wrote");
    let source = &body[doc.source..doc.end - 1];
    let mut ts = String::new();
    crate::event::format_rfc3339_nanos(chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(), &mut ts);
    let source = serde_json::json!({
        "@timestamp": ts,
        "event": { "original": String::from_utf8_lossy(source) },
        "error": { "message": error },
        "vigil": { "index": original_index },
    });
    BulkDoc { index: index.into(), id, source: serde_json::to_vec(&source).expect("JSON values serialize") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_line() {
        let mut out = Vec::new();
        write_action(&mut out, &BulkDoc { index: "logs-a".into(), id: Some("x1".into()), source: vec![] });
        assert_eq!(out, b"{\"create\":{\"_index\":\"logs-a\",\"_id\":\"x1\"}}\n");
    }

    fn answer(body: &str) -> Option<Items> {
        serde_json::from_str::<Response>(body).unwrap().items
    }

    #[test]
    fn an_all_success_answer_is_counted_and_any_other_read_item_by_item() {
        let ok = r#"{"create":{"_index":"a","_id":"1","status":201,"result":"created"}}"#;
        let list = [ok; 3].join(",");
        match answer(&format!(r#"{{"took":1,"errors":false,"items":[{list}]}}"#)) {
            Some(Items::Counted(3)) => {}
            _ => panic!("errors: false before the items: counted"),
        }
        for body in [
            format!(r#"{{"took":1,"errors":true,"items":[{list}]}}"#),
            format!(r#"{{"items":[{list}],"errors":false}}"#),
            format!(r#"{{"items":[{list}]}}"#),
            format!(r#"{{"errors":"no","items":[{list}]}}"#),
        ] {
            match answer(&body) {
                Some(Items::Parsed(v)) => assert_eq!(v.len(), 3, "{body}"),
                _ => panic!("{body}: read item by item"),
            }
        }
        assert!(answer(r#"{"errors":false}"#).is_none());
        assert!(answer(r#"{"errors":false,"items":null}"#).is_none());
        for bad in [
            r#"{"errors":false,"items":[{"create":{}}"#,
            r#"{"errors":false,"items":{}}"#,
            r#"{"errors":false,"items":[],"items":[]}"#,
            r#"{"errors":false,"items":[],"errors":true}"#,
            r#"[]"#,
        ] {
            assert!(serde_json::from_str::<Response>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reasons_are_bounded() {
        assert!(valid_reason("mapper_parsing_exception"));
        assert!(!valid_reason("a b"));
        assert!(!valid_reason(""));
    }
}
