//! An in-process Loki: `POST /loki/api/v1/push`, protobuf + snappy (decoded here with a
//! protobuf reader written from `push.proto`, independent of vigil's prost structs) or JSON,
//! gzip; answers 204 and stores entries (de-duplicating same stream, timestamp and line, as Loki
//! does), or whatever a test scripts: 400 with a body, 429 with Retry-After, 500, 260, slow,
//! dropped connections.

use super::server::{Handler, Reply, Request, TestServer, decoded_body};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub ts: i64,
    pub line: String,
    pub metadata: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct PushStream {
    pub labels: Labels,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
pub struct Push {
    pub tenant: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub user_agent: Option<String>,
    pub authorization: Option<String>,
    pub streams: Vec<PushStream>,
}

impl Push {
    pub fn has_line(&self, pred: impl Fn(&Labels, &Entry) -> bool) -> bool {
        self.streams.iter().any(|s| s.entries.iter().any(|e| pred(&s.labels, e)))
    }
}

/// What the scripted server does with a decoded push.
pub enum Answer {
    /// Store and answer 204 (after `delay`).
    Accept(Duration),
    /// Answer this without storing anything.
    Refuse(Reply),
}

pub type Script = Box<dyn FnMut(&Push) -> Answer + Send>;

#[derive(Default)]
pub struct LokiState {
    /// Every push decoded, accepted or not, in arrival order.
    pub pushes: Vec<Push>,
    /// Accepted entries per stream, in arrival order.
    pub stored: BTreeMap<Labels, Vec<Entry>>,
    /// Entries sent again: same stream, timestamp and line as an accepted one. Loki ignores
    /// only those equal to the stream's previous entry; the others are stored twice.
    pub deduplicated: usize,
    /// Requests refused for an undecodable body (a bug in the sink).
    pub bad_requests: Vec<String>,
}

pub struct LokiServer {
    pub server: TestServer,
    pub state: Arc<Mutex<LokiState>>,
}

impl LokiServer {
    /// A Loki that accepts everything.
    pub async fn start() -> Self {
        Self::scripted(Box::new(|_| Answer::Accept(Duration::ZERO))).await
    }

    pub async fn scripted(script: Script) -> Self {
        let state = Arc::new(Mutex::new(LokiState::default()));
        let script = Arc::new(Mutex::new(script));
        let st = state.clone();
        let handler: Handler = Arc::new(move |req: Request| handle(req, &st, &script));
        Self { server: TestServer::start(handler).await, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Lines stored per stream, in order.
    pub fn lines(&self) -> BTreeMap<Labels, Vec<String>> {
        let s = self.state.lock().unwrap();
        s.stored.iter().map(|(k, v)| (k.clone(), v.iter().map(|e| e.line.clone()).collect())).collect()
    }

    pub fn stored_count(&self) -> usize {
        self.state.lock().unwrap().stored.values().map(Vec::len).sum()
    }
}

fn handle(req: Request, state: &Mutex<LokiState>, script: &Mutex<Script>) -> Reply {
    if req.method != "POST" || req.path != "/loki/api/v1/push" {
        return Reply::status(404, "404 page not found\n");
    }
    let push = match decode(&req) {
        Ok(p) => p,
        Err(e) => {
            state.lock().unwrap().bad_requests.push(e.clone());
            return Reply::status(400, &format!("{e}\n"));
        }
    };
    let answer = (script.lock().unwrap())(&push);
    let mut st = state.lock().unwrap();
    st.pushes.push(push.clone());
    match answer {
        Answer::Refuse(r) => r,
        Answer::Accept(delay) => {
            for s in push.streams {
                let stored = st.stored.entry(s.labels).or_default();
                let mut dups = 0;
                for e in s.entries {
                    if stored.iter().any(|x| x.ts == e.ts && x.line == e.line) {
                        dups += 1;
                    }
                    // Loki's documented de-duplication ("Timestamp ordering" in the Loki docs'
                    // overview): an entry whose timestamp and line both match the previous entry
                    // received for the stream is ignored as an exact duplicate; any other
                    // repeat is stored again.
                    if !stored.last().is_some_and(|x| x.ts == e.ts && x.line == e.line) {
                        stored.push(e);
                    }
                }
                st.deduplicated += dups;
            }
            Reply::status(204, "").delayed(delay)
        }
    }
}

fn decode(req: &Request) -> Result<Push, String> {
    let body = decoded_body(req)?;
    let ct = req.header("content-type").map(str::to_string);
    let streams = if ct.as_deref() == Some("application/json") {
        decode_json(&body)?
    } else {
        let raw = snap::raw::Decoder::new().decompress_vec(&body).map_err(|e| format!("snappy: {e}"))?;
        decode_proto(&raw)?
    };
    if streams.iter().any(|s| s.labels.is_empty()) {
        return Err("error at least one label pair is required per stream".into());
    }
    Ok(Push {
        tenant: req.header("x-scope-orgid").map(str::to_string),
        content_type: ct,
        content_encoding: req.header("content-encoding").map(str::to_string),
        user_agent: req.header("user-agent").map(str::to_string),
        authorization: req.header("authorization").map(str::to_string),
        streams,
    })
}

fn decode_json(body: &[u8]) -> Result<Vec<PushStream>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("json: {e}"))?;
    let mut out = Vec::new();
    for s in v["streams"].as_array().ok_or("no streams array")? {
        let labels: Labels = s["stream"]
            .as_object()
            .ok_or("no stream object")?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let mut entries = Vec::new();
        for e in s["values"].as_array().ok_or("no values")? {
            let ts: i64 = e[0].as_str().ok_or("ts not a string")?.parse().map_err(|_| "ts not a number")?;
            let line = e[1].as_str().ok_or("line not a string")?.to_string();
            let metadata = e
                .get(2)
                .and_then(|m| m.as_object())
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
                .unwrap_or_default();
            entries.push(Entry { ts, line, metadata });
        }
        out.push(PushStream { labels, entries });
    }
    Ok(out)
}

/// Protobuf wire reader: just enough for `logproto.PushRequest`.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    /// Next (field number, value); value is the varint or the length-delimited bytes.
    fn field(&mut self) -> Result<Option<(u64, Field<'a>)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (num, wt) = (key >> 3, key & 7);
        let f = match wt {
            0 => Field::Varint(self.varint()?),
            2 => {
                let len = self.varint()? as usize;
                if len > self.buf.len() {
                    return Err("truncated bytes".into());
                }
                let (b, rest) = self.buf.split_at(len);
                self.buf = rest;
                Field::Bytes(b)
            }
            1 => {
                self.buf = self.buf.get(8..).ok_or("truncated fixed64")?;
                Field::Other
            }
            5 => {
                self.buf = self.buf.get(4..).ok_or("truncated fixed32")?;
                Field::Other
            }
            w => return Err(format!("unexpected wire type {w}")),
        };
        Ok(Some((num, f)))
    }
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

fn string(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "string field is not UTF-8".to_string())
}

fn decode_proto(buf: &[u8]) -> Result<Vec<PushStream>, String> {
    let mut streams = Vec::new();
    let mut r = Reader { buf };
    while let Some((num, f)) = r.field()? {
        if let (1, Field::Bytes(b)) = (num, f) {
            streams.push(decode_stream(b)?);
        }
    }
    Ok(streams)
}

fn decode_stream(buf: &[u8]) -> Result<PushStream, String> {
    let mut labels = None;
    let mut entries = Vec::new();
    let mut r = Reader { buf };
    while let Some((num, f)) = r.field()? {
        match (num, f) {
            (1, Field::Bytes(b)) => labels = Some(parse_labels(&string(b)?)?),
            (2, Field::Bytes(b)) => entries.push(decode_entry(b)?),
            _ => {}
        }
    }
    Ok(PushStream { labels: labels.ok_or("stream without labels")?, entries })
}

fn decode_entry(buf: &[u8]) -> Result<Entry, String> {
    let (mut secs, mut nanos) = (0i64, 0i64);
    let mut line = String::new();
    let mut metadata = Vec::new();
    let mut r = Reader { buf };
    while let Some((num, f)) = r.field()? {
        match (num, f) {
            (1, Field::Bytes(b)) => {
                let mut t = Reader { buf: b };
                while let Some((n, f)) = t.field()? {
                    match (n, f) {
                        (1, Field::Varint(v)) => secs = v as i64,
                        (2, Field::Varint(v)) => nanos = v as i32 as i64,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(b)) => line = string(b)?,
            (3, Field::Bytes(b)) => {
                let mut p = Reader { buf: b };
                let (mut name, mut value) = (String::new(), String::new());
                while let Some((n, f)) = p.field()? {
                    match (n, f) {
                        (1, Field::Bytes(b)) => name = string(b)?,
                        (2, Field::Bytes(b)) => value = string(b)?,
                        _ => {}
                    }
                }
                metadata.push((name, value));
            }
            _ => {}
        }
    }
    Ok(Entry { ts: secs * 1_000_000_000 + nanos, line, metadata })
}

/// Parses `{a="x", b="y"}` (Prometheus/LogQL selector syntax with Go string escapes), as Loki's
/// `syntax.ParseLabels` does; a failure rejects the whole push with 400.
pub fn parse_labels(s: &str) -> Result<Labels, String> {
    let err = |m: &str| format!("parse error in labels {s:?}: {m}");
    let inner = s.strip_prefix('{').and_then(|x| x.strip_suffix('}')).ok_or_else(|| err("no braces"))?;
    let mut out = Labels::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(err("bad label name"));
        }
        if chars.next() != Some('=') || chars.next() != Some('"') {
            return Err(err("expected =\""));
        }
        let mut value = String::new();
        loop {
            match chars.next().ok_or_else(|| err("unterminated value"))? {
                '"' => break,
                '\\' => value.push(match chars.next().ok_or_else(|| err("bad escape"))? {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '\\' => '\\',
                    '"' => '"',
                    _ => return Err(err("unknown escape")),
                }),
                '\n' => return Err(err("newline in value")),
                c => value.push(c),
            }
        }
        if out.insert(name, value).is_some() {
            return Err(err("duplicate label"));
        }
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        match chars.next() {
            Some(',') => continue,
            None => break,
            _ => return Err(err("expected ,")),
        }
    }
    Ok(out)
}

/// Label set helper for assertions.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}
