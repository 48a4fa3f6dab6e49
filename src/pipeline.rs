//! The log pipeline between the source and the sinks: fan-out, acknowledgements, commits.
//!
//! Key decision: every chunk of events goes to every sink as one shared `Arc<Chunk>`; each sink
//! acks a chunk (by id, in any order) once it is delivered or permanently rejected. The
//! `Tracker` commits a chunk's file positions only when *all* sinks have acked it *and* every
//! earlier chunk is committed, so a checkpoint never passes an undelivered line. Rejected
//! alternative: per-sink checkpoints (Vector's disk buffers, Fluent Bit's per-output chunks),
//! which need a second on-disk queue; here the log files themselves are the buffer.
//!
//! In-flight budget: events handed to the sinks and not yet acked by all of them are limited to
//! about `IN_FLIGHT_TIME` (1 s) of the measured commit rate, never below `MIN_IN_FLIGHT_EVENTS`
//! (so a sink's batch can still fill by count or size instead of waiting for its timeout). With
//! a slow sink, a line read now is delivered within about that second plus one source batch,
//! whichever container it comes from: the noisy container's backlog stays in its file, where
//! the tailer's round-robin reads give every file its turn, instead of in queues that every
//! quiet line must wait behind (the queues held several seconds of it, issue 17). A fast sink
//! commits millions of lines per second, so its budget never binds. Rejected: counting chunks
//! (a chunk is 1 to 2048 lines) and a fixed size in lines (too small for a fast sink, seconds
//! long for a slow one).
//!
//! Invariant: an offset is committed only after every sink has acknowledged every event before
//! it. Invariant: channels are bounded, so a slow sink stops the fan-out, which stops the source.

use crate::event::Event;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Events in flight are limited to this much of the measured commit rate.
const IN_FLIGHT_TIME: Duration = Duration::from_secs(1);
/// ... but never to fewer events than this (the HTTP sinks' default batches fill by count or
/// bytes below it; a budget under a batch would leave each batch waiting for its timeout).
const MIN_IN_FLIGHT_EVENTS: u64 = 4096;
/// The commit rate is measured over windows of at least this.
const RATE_WINDOW: Duration = Duration::from_millis(250);

/// The in-flight budget (see the module doc): the commit rate, measured per window.
#[derive(Debug)]
struct Budget {
    /// Events/s; `None` until the first window closed (no limit before: nothing measured).
    rate: Option<f64>,
    window_start: Instant,
    window_events: u64,
}

impl Budget {
    fn new() -> Self {
        Self { rate: None, window_start: Instant::now(), window_events: 0 }
    }

    /// `n` events were committed now.
    fn committed(&mut self, n: u64) {
        self.window_events += n;
        let elapsed = self.window_start.elapsed();
        if elapsed >= RATE_WINDOW {
            let r = self.window_events as f64 / elapsed.as_secs_f64();
            // Smoothed, so one short window does not halve the budget.
            self.rate = Some(self.rate.map_or(r, |old| 0.5 * old + 0.5 * r));
            self.window_start = Instant::now();
            self.window_events = 0;
        }
    }

    /// Most events in flight before the fan-out takes no new batch.
    fn limit(&self) -> u64 {
        self.rate.map_or(u64::MAX, |r| ((r * IN_FLIGHT_TIME.as_secs_f64()) as u64).max(MIN_IN_FLIGHT_EVENTS))
    }
}

/// What the source hands to the pipeline: events, plus the file positions that become safe to
/// resume from once they are all delivered. Positions may be given without events (e.g. a
/// file whose remaining bytes were skipped), and then commit in order like any other.
#[derive(Debug, Default)]
pub struct SourceBatch {
    pub events: Vec<Event>,
    /// (file key, resume offset); the last entry for a file wins.
    pub positions: Vec<(u64, u64)>,
}

impl SourceBatch {
    /// A batch whose positions are taken from its events' origins.
    pub fn from_events(events: Vec<Event>) -> Self {
        let mut positions: Vec<(u64, u64)> = Vec::new();
        for e in &events {
            match positions.iter_mut().find(|(f, _)| *f == e.origin.file) {
                Some(p) => p.1 = e.origin.resume,
                None => positions.push((e.origin.file, e.origin.resume)),
            }
        }
        Self { events, positions }
    }
}

/// A chunk as sinks see it.
#[derive(Debug)]
pub struct Chunk {
    pub id: u64,
    pub events: Vec<Event>,
}

/// A sink's handle to acknowledge chunks.
#[derive(Clone, Debug)]
pub struct Acker {
    tx: mpsc::UnboundedSender<u64>,
}

impl Acker {
    /// The chunk is delivered (or permanently rejected and counted): its events may be
    /// checkpointed once every other sink agrees.
    pub fn ack(&self, chunk_id: u64) {
        // The tracker outlives every sink; a send error means shutdown already gave up waiting.
        let _ = self.tx.send(chunk_id);
    }

    /// A new acker and the receiving end of its acks (given to `Pipeline::start`, or read
    /// directly by sink tests).
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<u64>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }
}

/// The committed positions: file key → offset from which reading may resume. Written by the
/// tracker, read by the checkpoint writer.
#[derive(Debug, Default)]
pub struct Committed {
    offsets: Mutex<HashMap<u64, u64>>,
}

impl Committed {
    pub fn snapshot(&self) -> HashMap<u64, u64> {
        self.offsets.lock().expect("committed offsets lock poisoned").clone()
    }

    pub fn get(&self, file: u64) -> Option<u64> {
        self.offsets.lock().expect("committed offsets lock poisoned").get(&file).copied()
    }

    /// Forgets a file (finished and deleted): its checkpoint entry goes away.
    pub fn remove(&self, file: u64) {
        self.offsets.lock().expect("committed offsets lock poisoned").remove(&file);
    }

    fn apply(&self, positions: &[(u64, u64)]) {
        let mut map = self.offsets.lock().expect("committed offsets lock poisoned");
        for &(file, off) in positions {
            map.insert(file, off);
        }
    }
}

struct Pending {
    acks_left: usize,
    events: u64,
    positions: Vec<(u64, u64)>,
}

/// `vigil_lines_shipped_total` and `vigil_pipeline_chunks_in_flight`.
#[derive(Clone)]
pub struct PipelineMetrics {
    lines_shipped: prometheus::IntCounter,
    chunks_in_flight: prometheus::IntGauge,
}

impl PipelineMetrics {
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let lines_shipped = prometheus::IntCounter::new(
            "vigil_lines_shipped_total",
            "Log lines acknowledged by every sink (delivered or permanently rejected and counted).",
        )?;
        let chunks_in_flight = prometheus::IntGauge::new(
            "vigil_pipeline_chunks_in_flight",
            "Chunks handed to the sinks and not yet acknowledged by all of them.",
        )?;
        registry.register(Box::new(lines_shipped.clone()))?;
        registry.register(Box::new(chunks_in_flight.clone()))?;
        Ok(Self { lines_shipped, chunks_in_flight })
    }
}

/// Orders acknowledgements into commits.
struct Tracker {
    sinks: usize,
    metrics: Option<PipelineMetrics>,
    pending: BTreeMap<u64, Pending>,
    committed: Arc<Committed>,
    /// Events of the pending chunks.
    pending_events: u64,
    budget: Budget,
}

impl Tracker {
    fn new(sinks: usize, metrics: Option<PipelineMetrics>, committed: Arc<Committed>) -> Self {
        Self { sinks, metrics, pending: BTreeMap::new(), committed, pending_events: 0, budget: Budget::new() }
    }

    fn register(&mut self, id: u64, events: u64, positions: Vec<(u64, u64)>) {
        self.pending.insert(id, Pending { acks_left: self.sinks, events, positions });
        self.pending_events += events;
        self.drain();
    }

    /// Whether the fan-out may take another batch: always when nothing is in flight (one batch
    /// larger than the budget still goes), else while under the budget.
    fn has_room(&self) -> bool {
        self.pending_events == 0 || self.pending_events < self.budget.limit()
    }

    fn ack(&mut self, id: u64) {
        if let Some(p) = self.pending.get_mut(&id) {
            p.acks_left = p.acks_left.saturating_sub(1);
        }
        self.drain();
    }

    /// Commits the done prefix. Chunk ids are registered in increasing order before any sink
    /// sees them, so the first pending entry is always the oldest outstanding chunk.
    fn drain(&mut self) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().acks_left > 0 {
                break;
            }
            let p = entry.remove();
            self.pending_events -= p.events;
            self.budget.committed(p.events);
            self.committed.apply(&p.positions);
            if let Some(m) = &self.metrics {
                m.lines_shipped.inc_by(p.events);
            }
        }
        if let Some(m) = &self.metrics {
            m.chunks_in_flight.set(self.pending.len() as i64);
        }
    }
}

/// Handles of a running pipeline.
pub struct Pipeline {
    pub committed: Arc<Committed>,
    task: tokio::task::JoinHandle<()>,
}

impl Pipeline {
    /// Starts the fan-out from `input` to `sinks` (one bounded sender each). Returns once
    /// wired; the task ends when `input` closes and every sink's channel is drained and acked,
    /// or when all sinks are gone.
    pub fn start(
        mut input: mpsc::Receiver<SourceBatch>,
        sinks: Vec<mpsc::Sender<Arc<Chunk>>>,
        mut ack_rx: mpsc::UnboundedReceiver<u64>,
        metrics: Option<PipelineMetrics>,
    ) -> Self {
        let committed = Arc::new(Committed::default());
        let mut tracker = Tracker::new(sinks.len(), metrics, committed.clone());
        let task = tokio::spawn(async move {
            let mut next_id: u64 = 0;
            let mut input_open = true;
            loop {
                if !input_open && tracker.pending.is_empty() {
                    break;
                }
                tokio::select! {
                    biased;
                    Some(id) = ack_rx.recv() => tracker.ack(id),
                    batch = input.recv(), if input_open && tracker.has_room() => {
                        let Some(batch) = batch else {
                            input_open = false;
                            continue;
                        };
                        let id = next_id;
                        next_id += 1;
                        tracker.register(id, batch.events.len() as u64, batch.positions);
                        if tracker.sinks == 0 {
                            continue;
                        }
                        let chunk = Arc::new(Chunk { id, events: batch.events });
                        for tx in &sinks {
                            // A sink whose task died can never ack: its chunks stay pending and
                            // nothing commits past them. That is the safe side (counting it as
                            // acked would checkpoint undelivered lines); the app exits on it
                            // (`App::sink_failed`) and the lines are read again after a restart.
                            let _ = send_while_acking(tx, chunk.clone(), &mut ack_rx, &mut tracker).await;
                        }
                    }
                    else => break,
                }
            }
        });
        Self { committed, task }
    }

    /// Waits until every chunk is acked (after the input closed).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// Sends to a sink's bounded channel, still processing acks while it is full (otherwise a full
/// channel would stall commits of other sinks' acks for as long as the slow sink takes).
async fn send_while_acking(
    tx: &mpsc::Sender<Arc<Chunk>>,
    chunk: Arc<Chunk>,
    ack_rx: &mut mpsc::UnboundedReceiver<u64>,
    tracker: &mut Tracker,
) -> Result<(), ()> {
    let permit = loop {
        tokio::select! {
            biased;
            Some(id) = ack_rx.recv() => tracker.ack(id),
            permit = tx.reserve() => break permit.map_err(|_| ())?,
        }
    };
    permit.send(chunk);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Origin, Source, Stream};

    fn event(file: u64, resume: u64) -> Event {
        Event {
            timestamp: 0,
            stream: Stream::Stdout,
            message: format!("{file}@{resume}"),
            malformed: false,
            truncated: false,
            source: Arc::new(Source { file: "f".into(), node: "n".into(), kubernetes: Default::default() }),
            origin: Origin { file, offset: resume.saturating_sub(1), resume },
        }
    }

    #[test]
    fn positions_come_from_the_last_event_of_each_file() {
        let b = SourceBatch::from_events(vec![event(1, 10), event(2, 5), event(1, 20)]);
        assert_eq!(b.positions, vec![(1, 20), (2, 5)]);
    }

    #[test]
    fn commits_need_every_sink_and_every_earlier_chunk() {
        let committed = Arc::new(Committed::default());
        let mut t = Tracker::new(2, None, committed.clone());
        t.register(0, 1, vec![(1, 10)]);
        t.register(1, 1, vec![(1, 20), (2, 7)]);
        t.ack(1);
        t.ack(1);
        assert_eq!(committed.get(1), None, "chunk 1 is acked by both, but chunk 0 is not");
        t.ack(0);
        assert_eq!(committed.get(1), None, "chunk 0 is acked by one sink of two");
        t.ack(0);
        assert_eq!(committed.get(1), Some(20));
        assert_eq!(committed.get(2), Some(7));
        assert!(t.pending.is_empty());
    }

    /// A sink that never reads: the fan-out stops, then the source's bounded channel fills.
    #[tokio::test]
    async fn a_stalled_sink_backpressures_the_source() {
        let (src_tx, src_rx) = mpsc::channel(2);
        let (sink_tx, _sink_rx) = mpsc::channel(1);
        let (_acker, ack_rx) = Acker::channel();
        let _p = Pipeline::start(src_rx, vec![sink_tx], ack_rx, None);
        let mut sent = 0;
        for i in 0..100 {
            let b = SourceBatch::from_events(vec![event(1, i + 1)]);
            match tokio::time::timeout(std::time::Duration::from_millis(200), src_tx.send(b)).await {
                Ok(Ok(())) => sent += 1,
                _ => break,
            }
        }
        // 1 in the sink's channel, 1 held by the fan-out waiting for room, 2 in the source channel.
        assert_eq!(sent, 4, "the pipeline buffered {sent} batches for a sink that reads nothing");
    }

    /// Regression (issue 17, fairness): behind a slow sink, the queues held all the backlog
    /// they could take (here 16 chunks of 1000 lines: 3 s of what the sink takes), so a line
    /// read now, from any container, waited behind all of it. Now the events in flight are
    /// about one second of the measured commit rate (here the 4096 floor: the sink takes at
    /// most 5000 lines/s, less on a loaded machine).
    #[tokio::test]
    async fn a_slow_sink_holds_about_a_second_of_events_in_flight_not_every_chunk_the_queues_take() {
        let registry = prometheus::Registry::new();
        let metrics = PipelineMetrics::register(&registry).unwrap();
        let (src_tx, src_rx) = mpsc::channel(1);
        // A roomy sink queue: only the budget can hold the fan-out back.
        let (sink_tx, mut sink_rx) = mpsc::channel::<Arc<Chunk>>(16);
        let (acker, ack_rx) = Acker::channel();
        let _p = Pipeline::start(src_rx, vec![sink_tx], ack_rx, Some(metrics.clone()));
        tokio::spawn(async move {
            for i in 0u64.. {
                let events = (0..1000).map(|j| event(1, i * 1000 + j + 1)).collect();
                if src_tx.send(SourceBatch::from_events(events)).await.is_err() {
                    return;
                }
            }
        });
        let mut most_in_flight = 0;
        for n in 0..30 {
            let c = sink_rx.recv().await.expect("a chunk");
            tokio::time::sleep(Duration::from_millis(200)).await;
            acker.ack(c.id);
            // After the start-up backlog (queued before any rate was measured).
            if n >= 20 {
                most_in_flight = most_in_flight.max(metrics.chunks_in_flight.get());
            }
        }
        // Under the budget a chunk may still go: 4 chunks (4000 events) + 1.
        assert!(
            most_in_flight <= 5,
            "{most_in_flight} chunks of 1000 events in flight behind a sink of 1000 per 200 ms"
        );
    }

    /// Regression: with nothing in flight, closing the input used to leave the fan-out waiting
    /// for acks forever, so shutdown always took the whole grace period.
    #[tokio::test]
    async fn an_idle_pipeline_ends_as_soon_as_input_closes() {
        let (src_tx, src_rx) = mpsc::channel(1);
        let (sink_tx, _sink_rx) = mpsc::channel(1);
        let (_acker, ack_rx) = Acker::channel();
        let p = Pipeline::start(src_rx, vec![sink_tx], ack_rx, None);
        drop(src_tx);
        tokio::time::timeout(std::time::Duration::from_secs(5), p.join()).await.expect("pipeline ends");
    }

    #[tokio::test]
    async fn acked_chunks_commit_and_the_pipeline_ends_when_input_closes() {
        let registry = prometheus::Registry::new();
        let metrics = PipelineMetrics::register(&registry).unwrap();
        let (src_tx, src_rx) = mpsc::channel(4);
        let (sink_tx, mut sink_rx) = mpsc::channel::<Arc<Chunk>>(4);
        let (acker, ack_rx) = Acker::channel();
        let p = Pipeline::start(src_rx, vec![sink_tx], ack_rx, Some(metrics.clone()));
        let committed = p.committed.clone();
        let sink = tokio::spawn(async move {
            while let Some(c) = sink_rx.recv().await {
                acker.ack(c.id);
            }
        });
        src_tx.send(SourceBatch::from_events(vec![event(1, 5), event(1, 9)])).await.unwrap();
        src_tx.send(SourceBatch::from_events(vec![event(2, 3)])).await.unwrap();
        drop(src_tx);
        tokio::time::timeout(std::time::Duration::from_secs(5), p.join()).await.unwrap();
        sink.await.unwrap();
        assert_eq!(committed.get(1), Some(9));
        assert_eq!(committed.get(2), Some(3));
        assert_eq!(metrics.lines_shipped.get(), 3);
        assert_eq!(metrics.chunks_in_flight.get(), 0);
    }
}
