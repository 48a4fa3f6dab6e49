//! The batch a tailer builds from its files' lines, sealed when full.

use crate::event::Event;
use crate::pipeline::SourceBatch;
use std::collections::VecDeque;

/// Where a slice's output goes: the batch being built, the batches already full (`ready`, in
/// order), and counters flushed to the metrics once per hand-off (not per line).
///
/// A batch is sealed the moment it reaches `max_events` or `max_bytes`, in the middle of a
/// read if need be: checking only between reads let one slice overshoot both limits.
#[derive(Default)]
pub struct Out {
    /// Which batch this is (see `FileTail::emit`).
    pub generation: u64,
    pub events: Vec<Event>,
    pub positions: Vec<(u64, u64)>,
    pub message_bytes: usize,
    pub lines: u64,
    pub truncated: u64,
    /// Lines whose bytes that were not UTF-8 were replaced with U+FFFD.
    pub invalid_utf8: u64,
    /// Sealed batches, oldest first, waiting for room in the pipeline.
    pub ready: VecDeque<SourceBatch>,
    /// Limits of one batch (0: unlimited).
    pub max_events: usize,
    pub max_bytes: usize,
}

impl Out {
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        Self { max_events, max_bytes, ..Self::default() }
    }

    pub fn full(&self) -> bool {
        self.max_events > 0 && self.events.len() >= self.max_events
            || self.max_bytes > 0 && self.message_bytes >= self.max_bytes
    }

    /// Moves the batch being built (if it holds anything) to `ready`.
    pub fn seal(&mut self) {
        if self.events.is_empty() && self.positions.is_empty() {
            return;
        }
        // The next batch is sized like this one: growing it by doubling copied every event
        // about twice.
        let next = Vec::with_capacity(self.events.len());
        let events = std::mem::replace(&mut self.events, next);
        let positions = std::mem::take(&mut self.positions);
        self.ready.push_back(SourceBatch { events, positions });
        self.message_bytes = 0;
        self.generation += 1;
    }
}
