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
    positions: Vec<(u64, u64)>,
}

/// Orders acknowledgements into commits.
struct Tracker {
    sinks: usize,
    pending: BTreeMap<u64, Pending>,
    committed: Arc<Committed>,
}

impl Tracker {
    fn register(&mut self, id: u64, positions: Vec<(u64, u64)>) {
        self.pending.insert(id, Pending { acks_left: self.sinks, positions });
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
    ) -> Self {
        let committed = Arc::new(Committed::default());
        let mut tracker = Tracker { sinks: sinks.len(), pending: BTreeMap::new(), committed: committed.clone() };
        let task = tokio::spawn(async move {
            let mut next_id: u64 = 0;
            let mut input_open = true;
            loop {
                tokio::select! {
                    biased;
                    Some(id) = ack_rx.recv() => tracker.ack(id),
                    batch = input.recv(), if input_open => {
                        let Some(batch) = batch else {
                            input_open = false;
                            // Nothing outstanding: done now (waiting for an ack would hang).
                            if tracker.pending.is_empty() {
                                break;
                            }
                            continue;
                        };
                        let id = next_id;
                        next_id += 1;
                        tracker.register(id, batch.positions);
                        if tracker.sinks == 0 {
                            continue;
                        }
                        let chunk = Arc::new(Chunk { id, events: batch.events });
                        for tx in &sinks {
                            // A sink that died cannot ack: count it as acked so others still
                            // commit? No: that would checkpoint undelivered data. Its chunks stay
                            // pending and nothing commits past them, which is the safe side.
                            let _ = send_while_acking(tx, chunk.clone(), &mut ack_rx, &mut tracker).await;
                        }
                    }
                    else => break,
                }
                if !input_open && tracker.pending.is_empty() {
                    break;
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
