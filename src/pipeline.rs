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
//! about `IN_FLIGHT_TIME` (0.5 s) of the measured commit rate, never below
//! `MIN_IN_FLIGHT_EVENTS`. Behind a slow sink, a line read now is delivered within about that
//! plus two source batches (about a second in all), whichever container it comes from: the noisy container's backlog stays in its file,
//! where the tailer's round-robin reads give every file its turn, instead of in queues that
//! every quiet line waits behind (they held 5 to 7 s of it, issue 17). A fast sink commits its
//! lines within a round trip, so the budget (0.5 s of its rate) never binds there. This relies on
//! the HTTP sinks' flush-when-idle batching (`sinks::batch`): a batch held below its size limit
//! by the budget leaves as soon as its lane has a free request slot. The first attempt, without
//! it, left each batch waiting for its 1 s timeout and lost throughput (README, Performance).
//! Rejected: counting chunks (1 to 2048 lines each), a fixed count of lines (too small for a
//! fast sink, seconds long for a slow one), and per-sink budgets (the slowest sink decides
//! when a line commits anyway). The measured rate cannot tell a saturated sink from a slow
//! round trip: a sink whose requests take longer than `IN_FLIGHT_TIME` even when idle would be
//! held to `MIN_IN_FLIGHT_EVENTS` per round trip (rate and budget shrinking together: about
//! 2,000 lines/s behind an Elasticsearch taking 1 s per bulk). So while the floor, not the rate,
//! sets the budget, the floor is probed, as TCP does a window: each probe period in which the
//! budget bound (at least `PROBE_PERIOD`, and two mean commit latencies, so a raise can show),
//! it grows by a batch or a quarter; it keeps growing while the commit rate follows, and falls
//! back by half and holds for `PROBE_HOLD` periods when it does not (a saturated sink: more in
//! flight is only more waiting). A sink fast enough for the rate term never sees a probe.
//!
//! Invariant: an offset is committed only after every sink has acknowledged every event before
//! it. Invariant: channels are bounded, so a slow sink stops the fan-out, which stops the source.
//!
//! The sink set can change while it runs (config reload, `SinkSet`): each chunk records the
//! sinks it was sent to when it was registered, and waits for exactly those. A sink that joins
//! gets every chunk registered after the change and is awaited for those only; a sink that
//! leaves gets no new chunk, is still awaited for what it holds until it drained, and is
//! forgotten (no longer awaited) only when `SinkSet::forget` says so, so leaving never commits
//! a chunk another sink has not acknowledged.

use crate::event::Event;
use crate::process::{Selector, Stage};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Events in flight are limited to this much of the measured commit rate. Half a second: the
/// source side holds up to two more batches (the source queue and the one being built), about
/// as much again behind a slow sink, so a line waits about a second in all.
const IN_FLIGHT_TIME: Duration = Duration::from_millis(500);
/// ... but never to fewer events than this (before the first measurement, and while the
/// pipeline idles, the budget is this floor; a burst grows it within a few windows). One
/// source batch (2048 events at most).
const MIN_IN_FLIGHT_EVENTS: u64 = 2048;
/// The commit rate is measured over windows of at least this.
const RATE_WINDOW: Duration = Duration::from_millis(250);
/// A probe (module doc) is judged over a period of at least this, and of two mean commit
/// latencies.
const PROBE_PERIOD: Duration = Duration::from_secs(2);
/// After a raise that did not pay, periods without probing.
const PROBE_HOLD: u32 = 5;
/// The probed floor is at most this many times `MIN_IN_FLIGHT_EVENTS` (32,768 events: a sink
/// taking 8 s per request still gets 4,000 lines/s).
const MAX_FLOOR_FACTOR: u64 = 16;

/// The in-flight budget (see the module doc): the commit rate, measured per window, and a
/// probed floor.
#[derive(Debug)]
struct Budget {
    /// Events/s, smoothed; 0 until the first window closed.
    rate: f64,
    window_start: Instant,
    window_events: u64,
    /// Events above `MIN_IN_FLIGHT_EVENTS` that the probe found the sink turns into commits.
    extra: u64,
    /// Seconds from a chunk's hand-off to its commit, smoothed.
    latency: f64,
    period_start: Instant,
    period_events: u64,
    /// The floor held the fan-out back during this period: only then does the period's rate
    /// say anything about the floor.
    period_bound: bool,
    /// The commit rate of the last period judged.
    period_rate: f64,
    /// The limit before the raise being judged (None: no probe running).
    probing: Option<u64>,
    /// Periods left before the next probe.
    hold: u32,
}

impl Budget {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            rate: 0.0,
            window_start: now,
            window_events: 0,
            extra: 0,
            latency: 0.0,
            period_start: now,
            period_events: 0,
            period_bound: false,
            period_rate: 0.0,
            probing: None,
            hold: 0,
        }
    }

    /// `n` events handed off `latency` ago were committed now.
    fn committed(&mut self, n: u64, latency: Duration, next_batch: u64) {
        self.window_events += n;
        self.period_events += n;
        self.latency = 0.9 * self.latency + 0.1 * latency.as_secs_f64();
        let elapsed = self.window_start.elapsed();
        if elapsed >= RATE_WINDOW {
            let r = self.window_events as f64 / elapsed.as_secs_f64();
            // Smoothed, so one short window does not halve the budget.
            self.rate = 0.5 * self.rate + 0.5 * r;
            self.window_start = Instant::now();
            self.window_events = 0;
        }
        let elapsed = self.period_start.elapsed();
        if elapsed >= PROBE_PERIOD.max(Duration::from_secs_f64(2.0 * self.latency)) {
            self.judge(self.period_events as f64 / elapsed.as_secs_f64(), next_batch);
            self.period_start = Instant::now();
            self.period_events = 0;
            self.period_bound = false;
        }
    }

    /// The budget is full: the fan-out takes no new batch until commits make room.
    fn bound(&mut self) {
        if self.floor() >= self.by_rate() {
            self.period_bound = true;
        }
    }

    /// The end of a probe period whose commit rate was `rate`; a raise is at least `batch`.
    fn judge(&mut self, rate: f64, batch: u64) {
        let limit = self.limit();
        // A probe failing now holds from the next period on: this one is not counted.
        let mut failed_now = false;
        if let Some(from) = self.probing.take() {
            // Half the raise in the rate (the period holds the raise for about half its length),
            // with room for noise: a quarter.
            let expected = 1.0 + 0.25 * (limit as f64 / from.max(1) as f64 - 1.0);
            if !self.period_bound || rate < self.period_rate * expected {
                // The sink did not commit more with more in flight (or the source set the pace).
                self.extra /= 2;
                self.hold = PROBE_HOLD;
                failed_now = true;
            }
        }
        if self.probing.is_none() && self.period_bound && !failed_now {
            if self.hold > 0 {
                self.hold -= 1;
            } else {
                let most = MIN_IN_FLIGHT_EVENTS * (MAX_FLOOR_FACTOR - 1);
                let raised = (self.extra + batch.max(self.floor() / 4)).min(most);
                if raised > self.extra {
                    self.extra = raised;
                    self.probing = Some(limit);
                }
            }
        }
        self.period_rate = rate;
    }

    fn by_rate(&self) -> u64 {
        (self.rate * IN_FLIGHT_TIME.as_secs_f64()) as u64
    }

    fn floor(&self) -> u64 {
        MIN_IN_FLIGHT_EVENTS + self.extra
    }

    /// Most events in flight before the fan-out takes no new batch.
    fn limit(&self) -> u64 {
        self.by_rate().max(self.floor())
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
    tx: AckTx,
}

/// Which sink an ack comes from: the sinks given to `Pipeline::start` share one untagged
/// channel (they are never removed, so any of their acks of a chunk counts as one); a sink
/// added through `SinkSet` names itself, so it can be forgotten.
#[derive(Clone, Debug)]
enum AckTx {
    Shared(mpsc::UnboundedSender<u64>),
    Tagged(mpsc::UnboundedSender<(SinkId, u64)>, SinkId),
}

impl Acker {
    /// The chunk is delivered (or permanently rejected and counted): its events may be
    /// checkpointed once every other sink agrees.
    pub fn ack(&self, chunk_id: u64) {
        // The tracker outlives every sink; a send error means shutdown already gave up waiting.
        match &self.tx {
            AckTx::Shared(tx) => {
                let _ = tx.send(chunk_id);
            }
            AckTx::Tagged(tx, sink) => {
                let _ = tx.send((*sink, chunk_id));
            }
        }
    }

    /// A new acker and the receiving end of its acks (given to `Pipeline::start`, or read
    /// directly by sink tests).
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<u64>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx: AckTx::Shared(tx) }, rx)
    }
}

/// A sink's identity in the fan-out (never reused within a process).
pub type SinkId = u64;

/// The committed positions: file key → offset from which reading may resume. Written by the
/// tracker, read by the checkpoint writer.
#[derive(Debug, Default)]
pub struct Committed {
    offsets: Mutex<HashMap<u64, u64>>,
    /// Bumped by every change (the checkpoint writer skips its work while it stays put).
    changes: std::sync::atomic::AtomicU64,
}

impl Committed {
    pub fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> HashMap<u64, u64> {
        self.offsets.lock().expect("committed offsets lock poisoned").clone()
    }

    pub fn get(&self, file: u64) -> Option<u64> {
        self.offsets.lock().expect("committed offsets lock poisoned").get(&file).copied()
    }

    /// Forgets a file (finished and deleted): its checkpoint entry goes away.
    pub fn remove(&self, file: u64) {
        if self.offsets.lock().expect("committed offsets lock poisoned").remove(&file).is_some() {
            self.changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn apply(&self, positions: &[(u64, u64)]) {
        let mut map = self.offsets.lock().expect("committed offsets lock poisoned");
        for &(file, off) in positions {
            map.insert(file, off);
        }
        self.changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

struct Pending {
    /// The sinks this chunk was sent to that have not acked it yet.
    waiting: Vec<SinkId>,
    events: u64,
    positions: Vec<(u64, u64)>,
    /// Handed to the sinks.
    at: Instant,
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
    /// The sinks that get new chunks, in fan-out order.
    sinks: Vec<SinkId>,
    /// Ids below this are the sinks given to `Pipeline::start` (untagged acks).
    shared: SinkId,
    metrics: Option<PipelineMetrics>,
    pending: BTreeMap<u64, Pending>,
    committed: Arc<Committed>,
    /// Events of the pending chunks.
    pending_events: u64,
    /// Events of the last chunk registered: the next is taken only if one like it fits.
    last_events: u64,
    budget: Budget,
}

impl Tracker {
    fn new(shared: usize, metrics: Option<PipelineMetrics>, committed: Arc<Committed>) -> Self {
        let shared = shared as SinkId;
        Self {
            sinks: (0..shared).collect(),
            shared,
            metrics,
            pending: BTreeMap::new(),
            committed,
            pending_events: 0,
            last_events: 0,
            budget: Budget::new(),
        }
    }

    /// Whether the fan-out may take another batch: always when nothing is in flight (one batch
    /// larger than the budget still goes), else while a batch as large as the last one fits
    /// in the budget (a batch is up to 2048 events: checking only `pending < limit` let the
    /// events in flight pass the budget by most of a batch).
    fn has_room(&self) -> bool {
        self.pending_events == 0 || self.pending_events + self.last_events <= self.budget.limit()
    }

    /// Registers a chunk; returns the sinks it goes to (and waits for).
    #[cfg(test)]
    fn register(&mut self, id: u64, events: u64, positions: Vec<(u64, u64)>) -> Vec<SinkId> {
        let to = self.sinks.clone();
        self.register_to(id, events, positions, to.clone());
        to
    }

    /// Registers a chunk sent to `to` (the sinks `match:` gave any of it to; the others are
    /// not waited for).
    fn register_to(&mut self, id: u64, events: u64, positions: Vec<(u64, u64)>, to: Vec<SinkId>) {
        self.pending.insert(id, Pending { waiting: to, events, positions, at: Instant::now() });
        self.pending_events += events;
        self.last_events = events;
        if !self.has_room() {
            self.budget.bound();
        }
        self.drain();
    }

    /// An ack of chunk `id` by `sink` (None: one of the sinks given to `start`).
    fn ack(&mut self, sink: Option<SinkId>, id: u64) {
        if let Some(p) = self.pending.get_mut(&id) {
            let shared = self.shared;
            let at = match sink {
                Some(s) => p.waiting.iter().position(|&w| w == s),
                None => p.waiting.iter().position(|&w| w < shared),
            };
            if let Some(at) = at {
                p.waiting.swap_remove(at);
            }
        }
        self.drain();
    }

    /// `sink` is gone: no chunk waits for it any more (a removed sink that drained, or was
    /// given up on).
    fn forget(&mut self, sink: SinkId) {
        self.sinks.retain(|&s| s != sink);
        for p in self.pending.values_mut() {
            p.waiting.retain(|&s| s != sink);
        }
        self.drain();
    }

    /// Commits the done prefix. Chunk ids are registered in increasing order before any sink
    /// sees them, so the first pending entry is always the oldest outstanding chunk.
    fn drain(&mut self) {
        while let Some(entry) = self.pending.first_entry() {
            if !entry.get().waiting.is_empty() {
                break;
            }
            let p = entry.remove();
            self.pending_events -= p.events;
            self.budget.committed(p.events, p.at.elapsed(), self.last_events);
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
    /// Adds and removes sinks while it runs.
    pub sinks: SinkSet,
    task: tokio::task::JoinHandle<()>,
}

/// A change of the sink set, applied by the fan-out between two chunks.
enum Control {
    /// Atomically: `close` get no new chunk (their input closes once the fan-out drops its
    /// sender, so they drain and return), `add` get every chunk registered after this.
    Change { close: Vec<SinkId>, add: Vec<(SinkId, mpsc::Sender<Arc<Chunk>>)>, done: oneshot::Sender<()> },
    /// No chunk waits for this sink any more.
    Forget(SinkId),
    /// The sink's `match:` (None: every line), set before the sink is added.
    Route(SinkId, Option<Selector>),
}

/// A handle to change the running pipeline's sinks (config reload).
#[derive(Clone)]
pub struct SinkSet {
    control: mpsc::UnboundedSender<Control>,
    acks: mpsc::UnboundedSender<(SinkId, u64)>,
    next_id: Arc<AtomicU64>,
}

/// A sink's place in the pipeline before it joins: its input and its acker.
pub struct NewSink {
    pub id: SinkId,
    pub tx: mpsc::Sender<Arc<Chunk>>,
    pub rx: mpsc::Receiver<Arc<Chunk>>,
    pub acker: Acker,
}

impl SinkSet {
    /// A new sink's channels (bounded at `queue` chunks); it gets nothing until `change` adds it.
    pub fn channel(&self, queue: usize) -> NewSink {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(queue);
        NewSink { id, tx, rx, acker: Acker { tx: AckTx::Tagged(self.acks.clone(), id) } }
    }

    /// Closes the sinks `close` and adds `add`, between two chunks: no chunk goes to both
    /// or to neither of a replaced sink and its replacement. Returns once applied (or when the
    /// pipeline has ended).
    pub async fn change(&self, close: Vec<SinkId>, add: Vec<(SinkId, mpsc::Sender<Arc<Chunk>>)>) {
        let (done, applied) = oneshot::channel();
        if self.control.send(Control::Change { close, add, done }).is_ok() {
            let _ = applied.await;
        }
    }

    /// Stops waiting for `sink`'s acks (after it was closed and drained, or given up on).
    pub fn forget(&self, sink: SinkId) {
        let _ = self.control.send(Control::Forget(sink));
    }

    /// Sets the `match:` of a sink before `change` adds it (applied in order with changes).
    pub fn route(&self, sink: SinkId, selector: Option<Selector>) {
        let _ = self.control.send(Control::Route(sink, selector));
    }
}

/// The fan-out task's state.
struct FanOut {
    tracker: Tracker,
    stage: Stage,
    senders: HashMap<SinkId, mpsc::Sender<Arc<Chunk>>>,
    shared_acks: mpsc::UnboundedReceiver<u64>,
    tagged_acks: mpsc::UnboundedReceiver<(SinkId, u64)>,
    control: mpsc::UnboundedReceiver<Control>,
}

impl FanOut {
    fn control(&mut self, c: Control) {
        match c {
            Control::Change { close, add, done } => {
                for id in close {
                    self.senders.remove(&id);
                    self.tracker.sinks.retain(|&s| s != id);
                }
                for (id, tx) in add {
                    self.senders.insert(id, tx);
                    self.tracker.sinks.push(id);
                }
                let _ = done.send(());
            }
            Control::Forget(id) => {
                self.senders.remove(&id);
                self.tracker.forget(id);
                self.stage.set_route(id, None);
            }
            Control::Route(id, selector) => self.stage.set_route(id, selector),
        }
    }

    /// Sends to a sink's bounded channel, still processing acks and sink changes while it is
    /// full (otherwise a full channel would stall commits of other sinks' acks for as long as
    /// the slow sink takes, and a reload removing that very sink would wait for it).
    async fn send(&mut self, sink: SinkId, chunk: Arc<Chunk>) {
        loop {
            // A clone, so a change may drop the fan-out's own sender meanwhile.
            let Some(tx) = self.senders.get(&sink).cloned() else { return };
            tokio::select! {
                biased;
                Some(id) = self.shared_acks.recv() => self.tracker.ack(None, id),
                Some((s, id)) = self.tagged_acks.recv() => self.tracker.ack(Some(s), id),
                Some(c) = self.control.recv() => self.control(c),
                // A sink whose task died can never ack: its chunks stay pending and nothing
                // commits past them. That is the safe side (counting it as acked would
                // checkpoint undelivered lines); the app exits on it (`App::sink_failed`) and
                // the lines are read again after a restart.
                permit = tx.reserve() => {
                    if let Ok(permit) = permit {
                        permit.send(chunk);
                    }
                    return;
                }
            }
        }
    }
}

impl Pipeline {
    /// Starts the fan-out from `input` to `sinks` (one bounded sender each, acking through
    /// `ack_rx`); more sinks may join later through `Pipeline::sinks`. Returns once wired; the
    /// task ends when `input` closes and every sink's channel is drained and acked, or when all
    /// sinks are gone.
    pub fn start(
        input: mpsc::Receiver<SourceBatch>,
        sinks: Vec<mpsc::Sender<Arc<Chunk>>>,
        ack_rx: mpsc::UnboundedReceiver<u64>,
        metrics: Option<PipelineMetrics>,
    ) -> Self {
        Self::start_staged(input, sinks, ack_rx, metrics, Stage::passthrough())
    }

    /// `start` with the processing stage (`crate::process`) applied to each batch at intake:
    /// parse and transforms on its events, then `match:` routing per sink. The batch's
    /// positions are registered whatever the stage removed.
    pub fn start_staged(
        mut input: mpsc::Receiver<SourceBatch>,
        sinks: Vec<mpsc::Sender<Arc<Chunk>>>,
        ack_rx: mpsc::UnboundedReceiver<u64>,
        metrics: Option<PipelineMetrics>,
        stage: Stage,
    ) -> Self {
        let committed = Arc::new(Committed::default());
        let (control_tx, control) = mpsc::unbounded_channel();
        let (acks_tx, tagged_acks) = mpsc::unbounded_channel();
        let set =
            SinkSet { control: control_tx, acks: acks_tx, next_id: Arc::new(AtomicU64::new(sinks.len() as SinkId)) };
        let mut f = FanOut {
            tracker: Tracker::new(sinks.len(), metrics, committed.clone()),
            stage,
            senders: sinks.into_iter().enumerate().map(|(i, tx)| (i as SinkId, tx)).collect(),
            shared_acks: ack_rx,
            tagged_acks,
            control,
        };
        let task = tokio::spawn(async move {
            let mut next_id: u64 = 0;
            let mut input_open = true;
            loop {
                if !input_open && f.tracker.pending.is_empty() {
                    break;
                }
                tokio::select! {
                    biased;
                    Some(id) = f.shared_acks.recv() => f.tracker.ack(None, id),
                    Some((s, id)) = f.tagged_acks.recv() => f.tracker.ack(Some(s), id),
                    Some(c) = f.control.recv() => f.control(c),
                    batch = input.recv(), if input_open && f.tracker.has_room() => {
                        let Some(mut batch) = batch else {
                            input_open = false;
                            continue;
                        };
                        let id = next_id;
                        next_id += 1;
                        f.stage.apply(&mut batch.events);
                        let n = batch.events.len() as u64;
                        let chunks = f.stage.route(id, batch.events, &f.tracker.sinks);
                        let to: Vec<(SinkId, Arc<Chunk>)> = f
                            .tracker
                            .sinks
                            .iter()
                            .zip(chunks)
                            .filter_map(|(&sink, c)| Some((sink, c?)))
                            .collect();
                        f.tracker.register_to(id, n, batch.positions, to.iter().map(|(s, _)| *s).collect());
                        for (sink, chunk) in to {
                            f.send(sink, chunk).await;
                        }
                    }
                    else => break,
                }
            }
        });
        Self { committed, sinks: set, task }
    }

    /// Waits until every chunk is acked (after the input closed).
    pub async fn join(self) {
        let Self { task, sinks, .. } = self;
        // Without this handle, the control and ack channels close once no sink holds an acker.
        drop(sinks);
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests;
