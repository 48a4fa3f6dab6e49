//! Batching and acknowledgement for HTTP sinks: turns the stream of `Arc<Chunk>`s into batches
//! (by events, bytes and time), keeps a bounded number of requests in flight, and acks each
//! chunk exactly once when every one of its events is delivered or permanently rejected.
//!
//! Key decision: a batch holds references into the shared chunks (`Arc<Chunk>` + event
//! indices), never copies of events, and the driver counts per chunk how many of its events
//! are still outstanding. A chunk may be split over several batches and lanes; it is acked when
//! its count reaches zero, in whatever order requests finish (the pipeline's tracker orders
//! commits). Rejected: acking chunks in arrival order from the sink (would make one slow lane
//! delay the acks of all), and copying events into per-request buffers (memory per sink).
//!
//! Lanes: events are routed to lanes by the sink (`Deliver::lane`). Each lane has its own batch
//! and a limit of concurrent requests. The Loki sink uses one lane per stream shard with one
//! request at a time (order per stream, and a stream's 429 stalls only its shard); the
//! Elasticsearch sink uses one lane with several concurrent requests (idempotent `_id`s make
//! order irrelevant).
//!
//! When a batch leaves: at its size limits (`max_events`, `max_bytes`), or as soon as its lane
//! has a free request slot ("flush when idle"), or at `timeout` after its first event, whichever
//! comes first. So at a low rate every chunk leaves at once in a small request (latency is one
//! round trip, not the timeout), and at a high rate, or behind a slow backend, events gather
//! while the lane's requests are in flight and batches grow up to their size limits by
//! themselves: the request rate adapts to the backend's speed without a setting. Chunks already
//! waiting in the input are taken together before an idle lane flushes. Rejected: sending only
//! at size or timeout (the old rule: at 10,000 lines/s a 1 MiB Loki batch waited ~0.5 s to fill,
//! p99 0.9 s), and a shorter default timeout (small requests at every rate, still a fixed wait).
//!
//! Memory bound: at most `lanes × (concurrency + 1 ready + 1 building)` batches, plus one chunk
//! of overshoot. When a lane has a batch ready that it cannot send, the driver stops reading
//! its input; the bounded channel then stops the pipeline, which stops the tailers: the files
//! are the buffer.
//!
//! A delivery task that panics (a bug) ends the whole driver with that panic: its chunks can
//! never be acked, so going on would freeze the checkpoints while the pipeline's pending chunks
//! grow. The app sees the sink task end and exits non-zero, and vigil restarts from the last
//! checkpoint (`app::App::sink_failed`). Rejected: carrying on with the next batch (the old
//! behaviour: a silent stall of every checkpoint behind the lost chunk).

use crate::config::{ByteSize, HumanDuration, Problems};
use crate::event::Event;
use crate::pipeline::{Acker, Chunk};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// `batch:` of an HTTP sink. Unset fields take the sink type's defaults (see each sink).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most events in one request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_events: Option<usize>,
    /// Most bytes of payload (before compression) in one request; one event larger than this
    /// is sent alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<ByteSize>,
    /// Longest time the first event of a batch waits for the batch to fill, while its lane's
    /// requests are all in flight (a lane with a free request slot sends what it has at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// Effective batch limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_events: usize,
    pub max_bytes: usize,
    pub timeout: Duration,
}

impl BatchConfig {
    pub fn resolve(&self, defaults: BatchLimits) -> BatchLimits {
        BatchLimits {
            max_events: self.max_events.unwrap_or(defaults.max_events),
            max_bytes: self.max_bytes.map(|b| b.get() as usize).unwrap_or(defaults.max_bytes),
            timeout: self.timeout.map(|t| t.get()).unwrap_or(defaults.timeout),
        }
    }

    pub fn validate(&self, path: &str, hard_max_bytes: u64, p: &mut Problems) {
        if self.max_events == Some(0) {
            p.push(format!("{path}.max_events"), "is 0; expected at least 1, e.g. 1000");
        }
        if let Some(b) = self.max_bytes {
            if b.get() == 0 || b.get() > hard_max_bytes {
                p.push(
                    format!("{path}.max_bytes"),
                    format!("'{b}' is out of range; expected 1B to {}", ByteSize(hard_max_bytes)),
                );
            }
        }
        if self.timeout.is_some_and(|t| t.get().is_zero()) {
            p.push(format!("{path}.timeout"), "is 0; expected a positive duration, e.g. 1s");
        }
    }
}

/// Events of one chunk that belong to a batch.
#[derive(Debug, Clone)]
pub struct Piece {
    pub chunk: Arc<Chunk>,
    pub indices: Vec<u32>,
}

/// A batch: pieces of chunks, in the order their events were read.
#[derive(Debug, Default)]
pub struct Batch {
    pub pieces: Vec<Piece>,
    pub events: usize,
    pub bytes: usize,
}

impl Batch {
    /// The batch's events in read order.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.pieces.iter().flat_map(|p| p.indices.iter().map(|&i| &p.chunk.events[i as usize]))
    }

    fn push(&mut self, chunk: &Arc<Chunk>, index: u32, bytes: usize) {
        match self.pieces.last_mut() {
            Some(p) if p.chunk.id == chunk.id => p.indices.push(index),
            _ => self.pieces.push(Piece { chunk: chunk.clone(), indices: vec![index] }),
        }
        self.events += 1;
        self.bytes += bytes;
    }

    /// Lets go of the batch's events, once encoded (acks go by chunk id and count): a chunk no
    /// other batch or sink still holds hands its messages' buffers back to the parsers
    /// (`logs::parse::recycle`) instead of freeing them here.
    pub fn recycle(self) {
        for p in self.pieces {
            if let Some(c) = Arc::into_inner(p.chunk) {
                crate::logs::parse::recycle::give_back(c.events);
            }
        }
    }

    fn ack_counts(&self) -> Vec<(u64, usize)> {
        self.pieces.iter().map(|p| (p.chunk.id, p.indices.len())).collect()
    }
}

/// What a sink plugs into the driver.
pub trait Deliver: Send + Sync + 'static {
    /// The lane of an event, below `lanes()`.
    fn lane(&self, event: &Event) -> usize;
    /// The event's payload size estimate in bytes, for `max_bytes`.
    fn size(&self, event: &Event) -> usize;
    /// Delivers a batch, retrying as long as needed; returns once every event in it is
    /// delivered or permanently rejected (and counted).
    fn deliver(self: Arc<Self>, batch: Batch) -> impl Future<Output = ()> + Send + 'static;
    /// Called once per non-empty chunk when the driver takes it from the input, before its
    /// events are batched (the OTLP sink notes the time). Default: nothing.
    fn arrived(&self, _chunk: &Chunk) {}
}

/// How the driver schedules requests.
#[derive(Debug, Clone, Copy)]
pub struct DriverConfig {
    pub limits: BatchLimits,
    pub lanes: usize,
    /// Concurrent requests per lane.
    pub lane_concurrency: usize,
}

struct Lane {
    building: Batch,
    deadline: Option<Instant>,
    ready: VecDeque<Batch>,
    in_flight: usize,
}

/// Batches a ready lane may hold beyond its in-flight requests before intake pauses.
const READY_PER_LANE: usize = 1;

/// Runs the sink: reads `input` until it closes, delivers everything, acks every chunk, returns.
pub async fn run<D: Deliver>(deliver: Arc<D>, cfg: DriverConfig, mut input: mpsc::Receiver<Arc<Chunk>>, acker: Acker) {
    let lanes_n = cfg.lanes.max(1);
    let mut lanes: Vec<Lane> = (0..lanes_n)
        .map(|_| Lane { building: Batch::default(), deadline: None, ready: VecDeque::new(), in_flight: 0 })
        .collect();
    // chunk id → events not yet final.
    let mut outstanding: HashMap<u64, usize> = HashMap::new();
    let mut tasks: JoinSet<(usize, Vec<(u64, usize)>)> = JoinSet::new();
    let mut task_lanes: HashMap<tokio::task::Id, usize> = HashMap::new();
    let mut input_open = true;
    let limits = cfg.limits;

    loop {
        // Send what can be sent. Flush when idle: a lane with a free request slot and nothing
        // sealed sends what it is building now, without waiting for the batch to fill or time
        // out (see the module doc).
        for (i, lane) in lanes.iter_mut().enumerate() {
            if lane.ready.is_empty() && lane.in_flight < cfg.lane_concurrency {
                seal(lane);
            }
            while lane.in_flight < cfg.lane_concurrency {
                let Some(batch) = lane.ready.pop_front() else { break };
                lane.in_flight += 1;
                let counts = batch.ack_counts();
                let d = deliver.clone();
                let handle = tasks.spawn(async move {
                    d.deliver(batch).await;
                    (i, counts)
                });
                task_lanes.insert(handle.id(), i);
            }
        }
        let blocked = lanes.iter().any(|l| l.ready.len() >= READY_PER_LANE);
        if !input_open && tasks.is_empty() && lanes.iter().all(|l| l.ready.is_empty() && l.building.events == 0) {
            break;
        }
        let next_deadline = lanes.iter().filter_map(|l| l.deadline).min();

        tokio::select! {
            biased;
            done = tasks.join_next_with_id(), if !tasks.is_empty() => match done {
                Some(Ok((id, (lane, counts)))) => {
                    task_lanes.remove(&id);
                    lanes[lane].in_flight -= 1;
                    for (id, n) in counts {
                        let left = outstanding.get_mut(&id).expect("every batched chunk is outstanding");
                        *left -= n;
                        if *left == 0 {
                            outstanding.remove(&id);
                            acker.ack(id);
                        }
                    }
                }
                Some(Err(error)) => {
                    // A delivery task panicked (a bug): its chunks can never be acked. End the
                    // sink with the same panic (see the module doc); nothing past those chunks
                    // was checkpointed, so they are read again after the restart.
                    tracing::error!(%error, "sink delivery task failed; its events are not acknowledged; stopping the sink");
                    if error.is_panic() {
                        std::panic::resume_unwind(error.into_panic());
                    }
                    panic!("sink delivery task cancelled: {error}");
                }
                None => {}
            },
            _ = sleep_until(next_deadline), if next_deadline.is_some() => {
                let now = Instant::now();
                for lane in lanes.iter_mut() {
                    if lane.deadline.is_some_and(|d| d <= now) {
                        seal(lane);
                    }
                }
            }
            chunk = input.recv(), if input_open && !blocked => match chunk {
                Some(chunk) => {
                    // Every chunk already waiting joins the batches before the idle lanes
                    // flush: what arrived together leaves together (fuller requests at no
                    // cost in latency).
                    let mut next = Some(chunk);
                    while let Some(chunk) = next.take() {
                        take(&*deliver, &mut lanes, &mut outstanding, &acker, limits, chunk);
                        if !lanes.iter().any(|l| l.ready.len() >= READY_PER_LANE) {
                            next = input.try_recv().ok();
                        }
                    }
                }
                None => {
                    input_open = false;
                    for lane in lanes.iter_mut() {
                        seal(lane);
                    }
                }
            },
        }
    }
}

/// Adds a chunk's events to their lanes' batches, sealing a batch that reaches a size limit.
fn take<D: Deliver>(
    deliver: &D,
    lanes: &mut [Lane],
    outstanding: &mut HashMap<u64, usize>,
    acker: &Acker,
    limits: BatchLimits,
    chunk: Arc<Chunk>,
) {
    if chunk.events.is_empty() {
        acker.ack(chunk.id);
        return;
    }
    outstanding.insert(chunk.id, chunk.events.len());
    deliver.arrived(&chunk);
    let lanes_n = lanes.len();
    for (idx, event) in chunk.events.iter().enumerate() {
        let lane = &mut lanes[deliver.lane(event) % lanes_n];
        let size = deliver.size(event);
        if lane.building.events > 0
            && (lane.building.events >= limits.max_events || lane.building.bytes + size > limits.max_bytes)
        {
            seal(lane);
        }
        if lane.building.events == 0 {
            lane.deadline = Some(Instant::now() + limits.timeout);
        }
        lane.building.push(&chunk, idx as u32, size);
        if lane.building.events >= limits.max_events {
            seal(lane);
        }
    }
}

fn seal(lane: &mut Lane) {
    lane.deadline = None;
    if lane.building.events > 0 {
        lane.ready.push_back(std::mem::take(&mut lane.building));
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{K8sMeta, Origin, Source, Stream};
    use std::sync::Mutex;

    fn chunk(id: u64, n: usize) -> Arc<Chunk> {
        let source = Arc::new(Source { file: "f".into(), node: "n".into(), kubernetes: K8sMeta::default() });
        let events = (0..n)
            .map(|i| Event {
                timestamp: i as i64,
                stream: if i % 2 == 0 { Stream::Stdout } else { Stream::Stderr },
                message: format!("{id}-{i}"),
                malformed: false,
                truncated: false,
                source: source.clone(),
                origin: Origin { file: id, offset: i as u64, resume: i as u64 + 1 },
                parsed: None,
            })
            .collect();
        Arc::new(Chunk { id, events })
    }

    /// Records batches; delivery of lane 1 waits until released.
    struct Recorder {
        batches: Mutex<Vec<(usize, Vec<String>)>>,
        gate: tokio::sync::Semaphore,
        /// Deliveries of lane 1 that reached the gate.
        at_gate: std::sync::atomic::AtomicUsize,
    }

    impl Deliver for Recorder {
        fn lane(&self, e: &Event) -> usize {
            (e.stream == Stream::Stderr) as usize
        }
        fn size(&self, e: &Event) -> usize {
            e.message.len()
        }
        async fn deliver(self: Arc<Self>, batch: Batch) {
            {
                let lane = self.lane(batch.events().next().unwrap());
                if lane == 1 {
                    self.at_gate.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    self.gate.acquire().await.unwrap().forget();
                }
                let msgs = batch.events().map(|e| e.message.clone()).collect();
                self.batches.lock().unwrap().push((lane, msgs));
            }
        }
    }

    #[tokio::test]
    async fn splits_by_lane_and_size_and_acks_each_chunk_once_when_all_lanes_delivered() {
        let rec = Arc::new(Recorder {
            batches: Mutex::default(),
            gate: tokio::sync::Semaphore::new(0),
            at_gate: Default::default(),
        });
        let cfg = DriverConfig {
            limits: BatchLimits { max_events: 3, max_bytes: 1 << 20, timeout: Duration::from_millis(20) },
            lanes: 2,
            lane_concurrency: 1,
        };
        let (tx, rx) = mpsc::channel(1);
        let (acker, mut acks) = Acker::channel();
        let task = tokio::spawn(run(rec.clone(), cfg, rx, acker));
        tx.send(chunk(0, 4)).await.unwrap();
        tx.send(chunk(1, 0)).await.unwrap();
        // The empty chunk is acked at once; chunk 0 waits for lane 1 (stderr), which is gated.
        assert_eq!(acks.recv().await, Some(1));
        // Positive signal first: lane 0 delivered its batch and lane 1's delivery waits at the
        // gate; only then is "chunk 0 not acked" a statement about the driver.
        let both = tokio::time::timeout(Duration::from_secs(30), async {
            while rec.batches.lock().unwrap().is_empty() || rec.at_gate.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(both.is_ok(), "lane 0 was not delivered or lane 1 never reached the gate within 30s");
        // Time for an ack that would follow lane 0's delivery to arrive.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(acks.try_recv().is_err(), "chunk 0 acked before its stderr events were delivered");
        assert_eq!(rec.batches.lock().unwrap().clone(), vec![(0, vec!["0-0".to_string(), "0-2".to_string()])]);
        rec.gate.add_permits(100);
        assert_eq!(acks.recv().await, Some(0));
        drop(tx);
        task.await.unwrap();
        assert!(acks.recv().await.is_none(), "a chunk was acked twice");
    }

    #[tokio::test]
    async fn input_close_flushes_partial_batches() {
        let rec = Arc::new(Recorder {
            batches: Mutex::default(),
            gate: tokio::sync::Semaphore::new(100),
            at_gate: Default::default(),
        });
        let cfg = DriverConfig {
            limits: BatchLimits { max_events: 1000, max_bytes: 8, timeout: Duration::from_secs(3600) },
            lanes: 1,
            lane_concurrency: 4,
        };
        let (tx, rx) = mpsc::channel(4);
        let (acker, mut acks) = Acker::channel();
        let task = tokio::spawn(run(rec.clone(), cfg, rx, acker));
        tx.send(chunk(7, 5)).await.unwrap();
        drop(tx);
        task.await.unwrap();
        assert_eq!(acks.recv().await, Some(7));
        let mut all: Vec<String> = rec.batches.lock().unwrap().iter().flat_map(|b| b.1.clone()).collect();
        all.sort();
        assert_eq!(all, vec!["7-0", "7-1", "7-2", "7-3", "7-4"]);
        // 3-byte messages, 8-byte limit: two per batch.
        assert!(rec.batches.lock().unwrap().iter().all(|b| b.1.len() <= 2));
    }

    /// One lane; each delivery first reaches the gate (counted), then waits for a permit.
    struct Gated {
        batches: Mutex<Vec<Vec<String>>>,
        gate: tokio::sync::Semaphore,
        at_gate: std::sync::atomic::AtomicUsize,
    }

    impl Deliver for Gated {
        fn lane(&self, _: &Event) -> usize {
            0
        }
        fn size(&self, e: &Event) -> usize {
            e.message.len()
        }
        async fn deliver(self: Arc<Self>, batch: Batch) {
            self.at_gate.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.gate.acquire().await.unwrap().forget();
            self.batches.lock().unwrap().push(batch.events().map(|e| e.message.clone()).collect());
        }
    }

    fn gated(permits: usize) -> Arc<Gated> {
        Arc::new(Gated {
            batches: Mutex::default(),
            gate: tokio::sync::Semaphore::new(permits),
            at_gate: Default::default(),
        })
    }

    /// A batch that can never fill by size, and a timeout far beyond the test's patience.
    fn patient(lane_concurrency: usize) -> DriverConfig {
        DriverConfig {
            limits: BatchLimits { max_events: 10_000, max_bytes: 1 << 20, timeout: Duration::from_secs(60) },
            lanes: 1,
            lane_concurrency,
        }
    }

    /// Regression (issue 17, Loki p99 0.9 s at 10,000 lines/s): a batch left only at its size
    /// limit or its timeout, so a lone line waited the whole timeout although nothing was in
    /// flight. Seen failing before flush-when-idle (no ack within 30 s of a 60 s timeout).
    #[tokio::test]
    async fn an_idle_lane_sends_a_single_line_without_waiting_for_the_batch_timeout() {
        let rec = gated(100);
        let (tx, rx) = mpsc::channel(4);
        let (acker, mut acks) = Acker::channel();
        let task = tokio::spawn(run(rec.clone(), patient(1), rx, acker));
        tx.send(chunk(0, 1)).await.unwrap();
        let acked = tokio::time::timeout(Duration::from_secs(30), acks.recv()).await;
        assert_eq!(acked.ok().flatten(), Some(0), "a single line waited for the 60 s batch timeout");
        assert_eq!(rec.batches.lock().unwrap().clone(), vec![vec!["0-0".to_string()]]);
        drop(tx);
        task.await.unwrap();
    }

    /// While a lane's one request is in flight, what arrives gathers in one batch, which leaves
    /// as soon as the request returns (not at the timeout).
    #[tokio::test]
    async fn lines_arriving_while_a_request_is_in_flight_leave_together_as_soon_as_it_returns() {
        let rec = gated(0);
        let (tx, rx) = mpsc::channel(4);
        let (acker, mut acks) = Acker::channel();
        let task = tokio::spawn(run(rec.clone(), patient(1), rx, acker));
        tx.send(chunk(0, 1)).await.unwrap();
        let at_gate = tokio::time::timeout(Duration::from_secs(30), async {
            while rec.at_gate.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(at_gate.is_ok(), "the first line was not sent at once");
        tx.send(chunk(1, 2)).await.unwrap();
        tx.send(chunk(2, 1)).await.unwrap();
        // Positive signal: the driver took both chunks from its input (into the building batch).
        let taken = tokio::time::timeout(Duration::from_secs(30), async {
            while tx.capacity() < tx.max_capacity() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(taken.is_ok(), "the driver stopped reading its input while a request was in flight");
        assert_eq!(
            rec.at_gate.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "a second request while one was in flight"
        );
        rec.gate.add_permits(100);
        let mut got = Vec::new();
        for _ in 0..3 {
            let ack = tokio::time::timeout(Duration::from_secs(30), acks.recv()).await;
            got.push(ack.ok().flatten().expect("every chunk acked without waiting for the 60 s timeout"));
        }
        got.sort();
        assert_eq!(got, vec![0, 1, 2]);
        let batches = rec.batches.lock().unwrap().clone();
        assert_eq!(batches, vec![vec!["0-0".to_string()], vec!["1-0".into(), "1-1".into(), "2-0".into()]]);
        drop(tx);
        task.await.unwrap();
    }

    struct Panicky;

    impl Deliver for Panicky {
        fn lane(&self, _: &Event) -> usize {
            0
        }
        fn size(&self, _: &Event) -> usize {
            1
        }
        async fn deliver(self: Arc<Self>, batch: Batch) {
            if batch.events().any(|e| e.message.starts_with("0-")) {
                panic!("a bug in a delivery");
            }
        }
    }

    /// Regression: a panicking delivery left its chunk unacked while the lane went on, so the
    /// sink looked alive while every checkpoint behind that chunk froze.
    #[tokio::test]
    async fn a_panicking_delivery_ends_the_sink_task_with_its_panic_and_acks_nothing_of_it() {
        let cfg = DriverConfig {
            limits: BatchLimits { max_events: 2, max_bytes: 1 << 20, timeout: Duration::from_millis(5) },
            lanes: 1,
            lane_concurrency: 1,
        };
        let (tx, rx) = mpsc::channel(4);
        let (acker, mut acks) = Acker::channel();
        let task = tokio::spawn(run(Arc::new(Panicky), cfg, rx, acker));
        tx.send(chunk(0, 2)).await.unwrap();
        let error = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the sink task ends instead of going on")
            .expect_err("the sink task ends with the delivery's panic");
        let payload = error.into_panic();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"a bug in a delivery"));
        assert!(acks.try_recv().is_err(), "chunk 0 was never delivered, so it is never acked");
        assert!(tx.send(chunk(1, 2)).await.is_err(), "the sink's input is closed");
    }

    /// Delivers after a random short delay, recording (chunk, index) of every event.
    struct Random {
        lanes: usize,
        delivered: Mutex<std::collections::HashSet<(u64, u64)>>,
    }

    impl Deliver for Random {
        fn lane(&self, e: &Event) -> usize {
            (e.origin.offset as usize * 7 + e.origin.file as usize) % self.lanes
        }
        fn size(&self, e: &Event) -> usize {
            e.message.len()
        }
        async fn deliver(self: Arc<Self>, batch: Batch) {
            tokio::time::sleep(Duration::from_micros(fastrand::u64(0..2000))).await;
            let mut d = self.delivered.lock().unwrap();
            for e in batch.events() {
                // origin.file is the chunk id in `chunk()`, origin.offset the index.
                assert!(d.insert((e.origin.file, e.origin.offset)), "an event was delivered twice");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 24, ..Default::default() })]
        #[test]
        fn every_chunk_is_acked_once_and_only_after_all_its_events(
            sizes in proptest::collection::vec(0usize..25, 1..30),
            lanes in 1usize..4,
            concurrency in 1usize..3,
            max_events in 1usize..12,
            max_bytes in 3usize..40,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let d = Arc::new(Random { lanes, delivered: Mutex::default() });
                let cfg = DriverConfig {
                    limits: BatchLimits { max_events, max_bytes, timeout: Duration::from_millis(1) },
                    lanes,
                    lane_concurrency: concurrency,
                };
                let (tx, rx) = mpsc::channel(2);
                let (acker, mut acks) = Acker::channel();
                let task = tokio::spawn(run(d.clone(), cfg, rx, acker));
                let checker = {
                    let d = d.clone();
                    let sizes = sizes.clone();
                    tokio::spawn(async move {
                        let mut seen = std::collections::HashSet::new();
                        while let Some(id) = acks.recv().await {
                            assert!(seen.insert(id), "chunk {id} acked twice");
                            let got = d.delivered.lock().unwrap();
                            for i in 0..sizes[id as usize] as u64 {
                                assert!(got.contains(&(id, i)), "chunk {id} acked before event {i} was delivered");
                            }
                        }
                        seen.len()
                    })
                };
                for (id, &n) in sizes.iter().enumerate() {
                    tx.send(chunk(id as u64, n)).await.unwrap();
                }
                drop(tx);
                tokio::time::timeout(Duration::from_secs(10), task).await.expect("driver finished").unwrap();
                let acked = checker.await.unwrap();
                assert_eq!(acked, sizes.len(), "every chunk acked");
                assert_eq!(d.delivered.lock().unwrap().len(), sizes.iter().sum::<usize>(), "every event delivered");
            });
        }
    }
}
