//! The log pipeline between the source and the sinks: fan-out, acknowledgements, commits.
//!
//! Key decision: every chunk of events goes to every sink as one shared `Arc<Chunk>`; each sink
//! acks a chunk (by id, in any order) once it is delivered or permanently rejected. The
//! `Tracker` commits a chunk's file positions only when *all* sinks have acked it *and* every
//! earlier chunk is committed, so a checkpoint never passes an undelivered line. Rejected
//! alternative: per-sink checkpoints (Vector's disk buffers, Fluent Bit's per-output chunks),
//! which need a second on-disk queue; here the log files themselves are the buffer.
//!
//! Invariant: an offset is committed only after every sink has acknowledged every event before
//! it. Invariant: channels are bounded, so a slow sink stops the fan-out, which stops the source.

use crate::event::Event;
use crate::process::Stage;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

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
}

impl Tracker {
    #[cfg(test)]
    fn register(&mut self, id: u64, events: u64, positions: Vec<(u64, u64)>) {
        self.register_for(id, events, positions, self.sinks);
    }

    /// Registers a chunk that `acks` sinks receive (those `match:` gave none of it to are not
    /// waited for).
    fn register_for(&mut self, id: u64, events: u64, positions: Vec<(u64, u64)>, acks: usize) {
        self.pending.insert(id, Pending { acks_left: acks, events, positions });
        self.drain();
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
        mut ack_rx: mpsc::UnboundedReceiver<u64>,
        metrics: Option<PipelineMetrics>,
        mut stage: Stage,
    ) -> Self {
        let committed = Arc::new(Committed::default());
        let mut tracker =
            Tracker { sinks: sinks.len(), metrics, pending: BTreeMap::new(), committed: committed.clone() };
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
                    batch = input.recv(), if input_open => {
                        let Some(mut batch) = batch else {
                            input_open = false;
                            continue;
                        };
                        let id = next_id;
                        next_id += 1;
                        stage.apply(&mut batch.events);
                        let n = batch.events.len() as u64;
                        let chunks = stage.route(id, batch.events, tracker.sinks);
                        let acks = chunks.iter().filter(|c| c.is_some()).count();
                        tracker.register_for(id, n, batch.positions, acks);
                        for (tx, chunk) in sinks.iter().zip(chunks) {
                            let Some(chunk) = chunk else { continue };
                            // A sink whose task died can never ack: its chunks stay pending and
                            // nothing commits past them. That is the safe side (counting it as
                            // acked would checkpoint undelivered lines); the app exits on it
                            // (`App::sink_failed`) and the lines are read again after a restart.
                            let _ = send_while_acking(tx, chunk, &mut ack_rx, &mut tracker).await;
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
            parsed: None,
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
        let mut t = Tracker { sinks: 2, metrics: None, pending: BTreeMap::new(), committed: committed.clone() };
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

    fn stage(yaml_transforms: &str, routes: Vec<Option<&str>>) -> Stage {
        let t: Vec<crate::process::transform::TransformConfig> = serde_yaml_ng::from_str(yaml_transforms).unwrap();
        let routes = routes
            .into_iter()
            .map(|r| r.map(|r| serde_yaml_ng::from_str::<crate::process::select::SelectorConfig>(r).unwrap().compile()))
            .collect();
        let parse = crate::process::parse::ParseSettings {
            mode: crate::process::parse::ParseMode::Auto,
            use_message_time: false,
            max_fields: 10,
        };
        Stage::new(parse, &t, routes, None)
    }

    /// A batch whose every line a transform drops is sent to no sink, yet its positions commit.
    #[tokio::test]
    async fn a_dropped_line_still_advances_the_checkpoint() {
        let (src_tx, src_rx) = mpsc::channel(4);
        let (sink_tx, mut sink_rx) = mpsc::channel::<Arc<Chunk>>(4);
        let (acker, ack_rx) = Acker::channel();
        let st = stage("[{name: d, type: drop, when: {message: '^drop'}}]", vec![None]);
        let p = Pipeline::start_staged(src_rx, vec![sink_tx], ack_rx, None, st);
        let committed = p.committed.clone();
        let mut e = event(1, 10);
        e.message = "drop me".into();
        src_tx.send(SourceBatch::from_events(vec![e])).await.unwrap();
        let mut kept = event(1, 20);
        kept.message = "keep me".into();
        src_tx.send(SourceBatch::from_events(vec![kept])).await.unwrap();
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), sink_rx.recv()).await.unwrap().unwrap();
        assert_eq!(chunk.events.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["keep me"]);
        assert_eq!(committed.get(1), Some(10), "the dropped line's position committed without any sink");
        acker.ack(chunk.id);
        drop(src_tx);
        tokio::time::timeout(std::time::Duration::from_secs(10), p.join()).await.unwrap();
        assert_eq!(committed.get(1), Some(20));
    }

    /// Sink 1's `match:` takes none of the chunk: only sink 0's ack is waited for.
    #[tokio::test]
    async fn a_sink_that_gets_none_of_a_chunk_does_not_block_its_commit() {
        let (src_tx, src_rx) = mpsc::channel(4);
        let (a_tx, mut a_rx) = mpsc::channel::<Arc<Chunk>>(4);
        let (b_tx, mut b_rx) = mpsc::channel::<Arc<Chunk>>(4);
        let (acker, ack_rx) = Acker::channel();
        let st = stage("[]", vec![None, Some("{container: nothing-matches}")]);
        let p = Pipeline::start_staged(src_rx, vec![a_tx, b_tx], ack_rx, None, st);
        let committed = p.committed.clone();
        src_tx.send(SourceBatch::from_events(vec![event(3, 30)])).await.unwrap();
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), a_rx.recv()).await.unwrap().unwrap();
        acker.ack(chunk.id);
        drop(src_tx);
        tokio::time::timeout(std::time::Duration::from_secs(10), p.join()).await.expect("pipeline ends");
        assert_eq!(committed.get(3), Some(30));
        assert!(b_rx.try_recv().is_err(), "the sink that matches nothing was sent nothing");
    }
}
