//! Message buffers handed back by the sinks for the parsers to fill again.
//!
//! Key decision: a line's message is allocated on the tailer thread and, once delivered, freed
//! on a sink's thread. With glibc that cost a malloc and a free per line, each on an arena the
//! other thread also uses (perf, CRI → file sink: malloc and free were about 12% of vigil's
//! CPU). So a sink done with a chunk hands its messages back in one piece (one lock per chunk),
//! the tailer thread takes such a list when its own spare list is empty (one lock per list) and
//! fills the buffers in place of allocating. Only the buffers travel; an event's other parts
//! are dropped by the sink as before.
//!
//! Rejected: a global allocator such as mimalloc (a dependency and a bigger binary for a cost
//! that is one allocation per line, and its per-thread heaps work against the memory cuts at
//! 10,000 files); one buffer per batch with events pointing into it (every stage and sink reads
//! `Event::message` as a `String`: a change to all of them).
//!
//! Bounded: at most `POOL_BYTES` of buffer capacity wait between a sink and the tailer, and a
//! buffer larger than `MAX_BUFFER` is freed, not kept (one long line does not pin memory). A
//! buffer kept is one that was allocated for an earlier line and would have been freed: the
//! pool never holds more than was in flight before.

use crate::event::Event;
use std::cell::RefCell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most buffer capacity waiting in a pool (about four default batches of 256 KiB).
pub const POOL_BYTES: usize = 1 << 20;
/// Buffers with more capacity than this are freed, not kept.
pub const MAX_BUFFER: usize = 4096;

/// Lists of empty buffers handed back, and their total capacity.
pub struct Pool {
    lists: Mutex<Vec<(Vec<Vec<u8>>, usize)>>,
    /// The capacity in `lists`; read without the lock to skip it when the pool is empty.
    bytes: AtomicUsize,
}

/// The pool of message buffers of this process.
static MESSAGES: Pool = Pool::new();

thread_local! {
    /// The list this thread fills messages from (taken whole from `MESSAGES`).
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

impl Pool {
    pub const fn new() -> Self {
        Self { lists: Mutex::new(Vec::new()), bytes: AtomicUsize::new(0) }
    }

    /// Keeps the messages of `events` (those within `MAX_BUFFER`, while the pool has room) and
    /// drops the rest of the events.
    pub fn give_back(&self, events: Vec<Event>) {
        let room = POOL_BYTES.saturating_sub(self.bytes.load(Ordering::Relaxed));
        if room == 0 {
            return;
        }
        let mut list = Vec::with_capacity(events.len());
        let mut bytes = 0;
        for e in events {
            let cap = e.message.capacity();
            if cap > 0 && cap <= MAX_BUFFER && bytes + cap <= room {
                bytes += cap;
                list.push(e.message.into_bytes());
            }
        }
        if list.is_empty() {
            return;
        }
        let mut lists = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        // Another sink may have filled the pool since `room` was read.
        if self.bytes.load(Ordering::Relaxed) + bytes <= POOL_BYTES {
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
            lists.push((list, bytes));
        }
    }

    /// One list of buffers handed back (the most recent), if any.
    pub fn take_list(&self) -> Option<Vec<Vec<u8>>> {
        if self.bytes.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut lists = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        let (list, bytes) = lists.pop()?;
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        Some(list)
    }

    /// The capacity waiting in the pool (tests).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

/// A sink is done with these events (delivered and acked): their message buffers go back to the
/// parsers.
pub fn give_back(events: Vec<Event>) {
    MESSAGES.give_back(events);
}

/// An empty buffer with room for `len` bytes, for a message: a buffer handed back when one
/// large enough is at hand, else a new one.
pub fn buffer(len: usize) -> Vec<u8> {
    SPARE.with_borrow_mut(|spare| {
        if spare.is_empty()
            && let Some(list) = MESSAGES.take_list()
        {
            *spare = list;
        }
        match spare.pop() {
            Some(mut b) if b.capacity() >= len => {
                b.clear();
                b
            }
            // Too small: freed here rather than grown. New buffers are rounded up to 64 bytes
            // so that lines of about one length fit each other's buffers.
            _ => Vec::with_capacity(if len <= MAX_BUFFER { len.next_multiple_of(64) } else { len }),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{K8sMeta, Origin, Source, Stream};
    use std::sync::Arc;

    fn event(message: String) -> Event {
        Event {
            timestamp: 0,
            stream: Stream::Stdout,
            message,
            malformed: false,
            truncated: false,
            source: Arc::new(Source { file: "/f".into(), node: "n".into(), kubernetes: K8sMeta::default() }),
            origin: Origin { file: 1, offset: 0, resume: 1 },
            parsed: None,
        }
    }

    #[test]
    fn handed_back_buffers_come_back_empty_and_the_same() {
        let pool = Pool::new();
        let messages: Vec<String> = (0..3).map(|i| format!("line {i} {}", "x".repeat(100))).collect();
        let ptrs: Vec<*const u8> = messages.iter().map(|m| m.as_ptr()).collect();
        pool.give_back(messages.into_iter().map(event).collect());
        assert!(pool.bytes() >= 300);
        let list = pool.take_list().expect("a list");
        assert_eq!(list.iter().map(|b| b.as_ptr()).collect::<Vec<_>>(), ptrs, "the same allocations");
        assert_eq!(pool.bytes(), 0);
        assert!(pool.take_list().is_none());
    }

    #[test]
    fn the_pool_is_bounded_and_large_buffers_are_freed() {
        let pool = Pool::new();
        pool.give_back(vec![event("x".repeat(MAX_BUFFER + 1)), event(String::new())]);
        assert_eq!(pool.bytes(), 0, "an oversized buffer and an empty one are not kept");
        assert!(pool.take_list().is_none());
        for _ in 0..3 * POOL_BYTES / MAX_BUFFER {
            pool.give_back(vec![event("y".repeat(MAX_BUFFER))]);
        }
        assert!(pool.bytes() <= POOL_BYTES && pool.bytes() >= POOL_BYTES - MAX_BUFFER, "{}", pool.bytes());
    }

    #[test]
    fn buffer_has_room_and_is_empty() {
        give_back(vec![event("z".repeat(64)), event("w".repeat(2000))]);
        for len in [0, 10, 64, 1000, 5000] {
            let b = buffer(len);
            assert!(b.is_empty() && b.capacity() >= len);
        }
    }
}
