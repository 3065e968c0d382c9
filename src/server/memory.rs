//! A core's budget for the bytes its connections hold: request frames read but not yet answered,
//! and responses built but not yet written. Its limit is the core's even share of
//! `queued_max_request_bytes`, so all cores together hold at most that much (plus the overshoot
//! described below), whatever the number of connections. Redpanda bounds each shard's Kafka
//! request memory the same way; Kafka has one pool for the whole broker.
//!
//! - A connection takes a request's bytes before reading its body and waits while the core is
//!   over budget, so the socket is not read and the client is slowed by TCP backpressure.
//!   Anything fits while nothing at all is held, so one request larger than the share still runs.
//! - A fetch never waits for memory: it reads at most what is left (`room`), so under pressure
//!   it returns less, down to one batch per partition, the least that keeps a consumer moving.
//!   That batch is the overshoot: at most one batch per partition of each fetch in flight.
//! - A response is charged once built, by the task that built it, and given back once written.
//!
//! A client that never reads its responses holds its share until the connection's idle watchdog
//! closes it (`connections_max_idle_ms` without a byte written), which frees it.
//!
//! Everything here is core-local (`Cell`), as the connections of a core run on that core only.

use std::cell::Cell;

use crate::sync::Notify;

pub struct CoreMemory {
    limit: usize,
    used: Cell<usize>,
    peak: Cell<usize>,
    freed: Notify,
}

impl CoreMemory {
    pub fn new(limit: usize) -> CoreMemory {
        CoreMemory { limit: limit.max(1), used: Cell::new(0), peak: Cell::new(0), freed: Notify::default() }
    }

    /// Waits until `n` more bytes fit (anything fits while nothing is held), then takes them.
    pub async fn take(&self, n: usize) {
        let mut waited = false;
        while self.used.get() > 0 && self.used.get() + n > self.limit {
            if !waited {
                waited = true;
                crate::metrics::memory_waited();
            }
            self.freed.wait().await;
        }
        self.charge(n);
    }

    /// Takes `n` bytes whether or not they fit (what is already built must be held).
    pub fn charge(&self, n: usize) {
        let used = self.used.get() + n;
        self.used.set(used);
        self.peak.set(self.peak.get().max(used));
    }

    pub fn give(&self, n: usize) {
        debug_assert!(n <= self.used.get(), "gave back more memory than was taken");
        self.used.set(self.used.get().saturating_sub(n));
        if n > 0 {
            self.freed.notify_all();
        }
    }

    /// Bytes that may still be taken without going over the limit.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.used.get())
    }

    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// The most held at once since the last call (for the metrics), then starts again from now.
    pub fn take_peak(&self) -> usize {
        self.peak.replace(self.used.get())
    }
}

/// Bytes taken from a core's budget, given back on drop.
pub struct Held<'a> {
    memory: &'a CoreMemory,
    bytes: usize,
}

impl<'a> Held<'a> {
    pub fn charge(memory: &'a CoreMemory, bytes: usize) -> Held<'a> {
        memory.charge(bytes);
        Held { memory, bytes }
    }

    /// Holds exactly `bytes` from now on: gives back the rest, or charges the difference.
    pub fn resize_to(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.memory.give(self.bytes - bytes);
        } else {
            self.memory.charge(bytes - self.bytes);
        }
        self.bytes = bytes;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.memory.give(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::rt;

    #[test]
    fn a_take_waits_for_room_and_anything_fits_an_empty_budget() {
        rt::run_local(async {
            let m = std::rc::Rc::new(CoreMemory::new(100));
            m.take(250).await; // larger than the limit, but nothing else is held
            assert_eq!(m.used(), 250);
            m.give(250);
            assert_eq!(m.take_peak(), 250);
            m.take(60).await;
            let waiter = rt::spawn({
                let m = m.clone();
                async move { m.take(60).await }
            });
            rt::sleep(std::time::Duration::from_millis(20)).await;
            assert_eq!(m.used(), 60, "a take over the limit waits");
            m.give(60);
            waiter.await;
            assert_eq!(m.used(), 60);
            assert_eq!(m.room(), 40);
            let mut h = Held::charge(&m, 30);
            assert_eq!(m.room(), 10);
            h.resize_to(5);
            assert_eq!(m.used(), 65);
            h.resize_to(45);
            assert_eq!(m.used(), 105, "what was read past the room is held too");
            h.resize_to(5);
            drop(h);
            assert_eq!(m.used(), 60);
            assert_eq!(m.take_peak(), 105);
            assert_eq!(m.take_peak(), 60);
        });
    }
}
