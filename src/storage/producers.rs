//! Idempotent-producer state of one partition: for each producer id, its epoch and the last five
//! batches it wrote (sequence range and offsets), as Kafka keeps them. An append checks each
//! batch against it before assigning offsets: a retried batch is found and answered with its
//! original offsets instead of being written twice, a gap in the sequence is refused
//! (OUT_OF_ORDER_SEQUENCE_NUMBER) and a stale epoch is fenced (INVALID_PRODUCER_EPOCH).
//!
//! Transactions (see "Transactions' shape" in ARCHITECTURE.md): a transactional batch opens its
//! producer's transaction in the partition at its first offset; a control batch (a COMMIT or
//! ABORT marker) closes it ([`ProducerStates::end_transaction`]). The smallest first offset of an
//! open transaction, or of a closed one whose marker the high watermark has not passed, bounds the
//! last stable offset ([`ProducerStates::first_unstable_offset`]).
//!
//! Pure: no I/O. The log snapshots it beside the segments when one rolls
//! ([`ProducerStates::encode`]) and rebuilds it on open from the newest snapshot plus the
//! batches written after it.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::protocol::batch::{BatchHeader, Marker};

/// Batches remembered per producer (Kafka's `ProducerStateEntry.NUM_BATCHES_TO_RETAIN`; the
/// client keeps at most five requests in flight per partition with idempotence).
pub const BATCHES_PER_PRODUCER: usize = 5;

/// Producers remembered per partition. The oldest (by last write) is forgotten beyond it; a
/// forgotten producer is treated as new, as Kafka treats an expired one.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 10_000;

/// One batch a producer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
    /// Broker clock at its last write (which producer is forgotten first).
    last_write_ms: i64,
    /// The largest timestamp of its last batch (the log append time on LogAppendTime topics),
    /// as Kafka's DescribeProducers reports it.
    last_timestamp: i64,
    /// The first offset of its open transaction in this partition.
    txn_first_offset: Option<i64>,
    /// The coordinator epoch of the last marker written for it (-1: none yet); a marker from an
    /// older coordinator is refused.
    coordinator_epoch: i32,
}

/// A transaction a marker closed in this partition: what the aborted-transaction index keeps
/// of an aborted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    pub aborted: bool,
}

/// Why a marker may not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerRefusal {
    /// The producer has moved to a newer epoch than the marker's (INVALID_PRODUCER_EPOCH).
    StaleProducerEpoch { current: i16 },
    /// A newer coordinator has written markers for the producer (TRANSACTION_COORDINATOR_FENCED).
    StaleCoordinatorEpoch { current: i32 },
}

/// What to do with an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it.
    Append,
    /// Already written: answer with these offsets.
    Duplicate(BatchMeta),
    /// A sequence gap (or a new epoch not starting at 0): OUT_OF_ORDER_SEQUENCE_NUMBER.
    OutOfOrder { expected: i32 },
    /// An epoch older than the producer's current one: INVALID_PRODUCER_EPOCH.
    StaleEpoch { current: i16 },
}

/// The producer state of one partition.
#[derive(Debug, Clone, Default)]
pub struct ProducerStates {
    entries: HashMap<i64, Entry>,
    /// Open transactions: first offset -> producer id (kept with `Entry::txn_first_offset`).
    open: BTreeMap<i64, i64>,
    /// The last transactions markers closed: (marker offset, producer id, first offset), so a
    /// marker whose write is rolled back ([`ProducerStates::truncate`]) reopens its transaction.
    /// Not in snapshots (they are taken of written data only).
    recently_closed: VecDeque<(i64, i64, i64)>,
    /// Transactions closed by markers the high watermark has not passed yet: (marker offset,
    /// first offset), in marker order. Their records stay unstable until the marker is readable
    /// (as Kafka's unreplicated transactions), or a read_committed consumer could read a
    /// transaction whose outcome a crash or a new leader can still take back.
    closing: VecDeque<(i64, i64)>,
}

/// Equal when what a snapshot keeps is equal.
impl PartialEq for ProducerStates {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries && self.open == other.open
    }
}

impl Eq for ProducerStates {}

/// Closed transactions remembered for a rollback: far more than the writes a rollback can undo
/// (those not yet written when a write fails).
const RECENTLY_CLOSED_MAX: usize = 1024;

/// Closed transactions kept until the high watermark passes their markers. Past it the oldest
/// is forgotten, which can only let the last stable offset run ahead of markers not yet
/// replicated when more than this many are waiting.
const CLOSING_MAX: usize = 10_000;

/// Kafka's `inSequence`: the next sequence, wrapping at i32::MAX.
fn follows(last: i32, next: i32) -> bool {
    next == last.wrapping_add(1) || (last == i32::MAX && next == 0)
}

fn last_seq(h: &BatchHeader) -> i32 {
    // Sequences wrap: a batch may start near i32::MAX and end past 0.
    (h.base_sequence as i64 + h.last_offset_delta as i64).rem_euclid(i32::MAX as i64 + 1) as i32
}

/// One producer of a partition, as DescribeProducers reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    /// The last sequence number it wrote.
    pub last_sequence: i32,
    /// The largest timestamp of its last batch, as Kafka reports it.
    pub last_timestamp: i64,
    /// The first offset of its open transaction here, or -1 (DescribeProducers'
    /// `CurrentTxnStartOffset`).
    pub txn_start_offset: i64,
    /// The coordinator epoch of its last marker here, or -1.
    pub coordinator_epoch: i32,
}

impl ProducerStates {
    /// Every producer remembered, by id.
    pub fn active(&self) -> Vec<ActiveProducer> {
        let mut out: Vec<ActiveProducer> = self
            .entries
            .iter()
            .map(|(id, e)| ActiveProducer {
                producer_id: *id,
                epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp: e.last_timestamp,
                txn_start_offset: e.txn_first_offset.unwrap_or(-1),
                coordinator_epoch: e.coordinator_epoch,
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks an idempotent batch (`producer_id >= 0`) against the state.
    pub fn check(&self, h: &BatchHeader) -> Verdict {
        let Some(e) = self.entries.get(&h.producer_id) else {
            // Unknown producer (new, or its state expired): any sequence starts it, as in Kafka
            // since KIP-360.
            return Verdict::Append;
        };
        if h.producer_epoch < e.epoch {
            return Verdict::StaleEpoch { current: e.epoch };
        }
        if h.base_sequence < 0 {
            // A coordinator's batch (transactional offsets in `__consumer_offsets`): no
            // sequence to check, only the epoch (clients' batches always carry one; the produce
            // path refuses those that do not).
            return Verdict::Append;
        }
        if h.producer_epoch > e.epoch {
            return if h.base_sequence == 0 { Verdict::Append } else { Verdict::OutOfOrder { expected: 0 } };
        }
        let last = last_seq(h);
        if let Some(b) = e.batches.iter().find(|b| b.first_seq == h.base_sequence && b.last_seq == last) {
            return Verdict::Duplicate(*b);
        }
        match e.batches.back() {
            Some(b) if !follows(b.last_seq, h.base_sequence) => Verdict::OutOfOrder { expected: b.last_seq.wrapping_add(1) },
            _ => Verdict::Append,
        }
    }

    /// Records a batch written at `first_offset` whose largest timestamp is `max_timestamp` (the
    /// log append time on LogAppendTime topics). A transactional batch opens its producer's
    /// transaction here if none is open. A control batch is left to
    /// [`ProducerStates::end_transaction`], which the log calls with its marker.
    pub fn record(&mut self, h: &BatchHeader, first_offset: i64, max_timestamp: i64, now_ms: i64) {
        if h.is_control() {
            return;
        }
        let meta = BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_seq(h),
            first_offset,
            last_offset: first_offset + h.last_offset_delta as i64,
        };
        let e = self.entry(h.producer_id, h.producer_epoch, now_ms, max_timestamp);
        let opens = h.is_transactional() && e.txn_first_offset.is_none();
        if opens {
            e.txn_first_offset = Some(first_offset);
        }
        if h.producer_epoch != e.epoch {
            e.epoch = h.producer_epoch;
            e.batches.clear();
        }
        if h.base_sequence >= 0 {
            e.batches.push_back(meta);
        }
        while e.batches.len() > BATCHES_PER_PRODUCER {
            e.batches.pop_front();
        }
        e.last_write_ms = now_ms;
        e.last_timestamp = max_timestamp;
        if opens {
            self.open.insert(first_offset, h.producer_id);
        }
        self.forget_beyond_max();
    }

    fn entry(&mut self, producer_id: i64, epoch: i16, now_ms: i64, max_timestamp: i64) -> &mut Entry {
        self.entries.entry(producer_id).or_insert_with(|| Entry {
            epoch,
            batches: VecDeque::new(),
            last_write_ms: now_ms,
            last_timestamp: max_timestamp,
            txn_first_offset: None,
            coordinator_epoch: -1,
        })
    }

    /// Forgets the producer written to longest ago beyond [`PRODUCERS_PER_PARTITION_MAX`], never
    /// one with an open transaction (the last stable offset waits for it).
    fn forget_beyond_max(&mut self) {
        if self.entries.len() > PRODUCERS_PER_PARTITION_MAX {
            let oldest = self.entries.iter().filter(|(_, e)| e.txn_first_offset.is_none()).min_by_key(|(_, e)| e.last_write_ms).map(|(pid, _)| *pid);
            if let Some(pid) = oldest {
                self.entries.remove(&pid);
            }
        }
    }

    /// Whether a marker of `producer_id` at `producer_epoch` from a coordinator at
    /// `coordinator_epoch` may be written.
    pub fn check_marker(&self, producer_id: i64, producer_epoch: i16, coordinator_epoch: i32) -> Result<(), MarkerRefusal> {
        let Some(e) = self.entries.get(&producer_id) else { return Ok(()) };
        if producer_epoch < e.epoch {
            return Err(MarkerRefusal::StaleProducerEpoch { current: e.epoch });
        }
        if coordinator_epoch < e.coordinator_epoch {
            return Err(MarkerRefusal::StaleCoordinatorEpoch { current: e.coordinator_epoch });
        }
        Ok(())
    }

    /// A marker (the control batch `h`, written at `offset`) closes its producer's transaction
    /// here; the transaction, if one was open.
    pub fn end_transaction(&mut self, h: &BatchHeader, marker: Marker, offset: i64, now_ms: i64) -> Option<CompletedTxn> {
        let e = self.entry(h.producer_id, h.producer_epoch, now_ms, h.max_timestamp);
        if h.producer_epoch > e.epoch {
            // A coordinator's fencing marker bumps the epoch: the batches remembered are the old
            // epoch's, and the new epoch's sequences start again at 0 (found by the storage
            // simulation: kept, they made the new producer's first batch a "retry" of the old
            // one's, acknowledged and never written).
            e.epoch = h.producer_epoch;
            e.batches.clear();
        }
        e.coordinator_epoch = e.coordinator_epoch.max(marker.coordinator_epoch);
        e.last_write_ms = now_ms;
        let first = e.txn_first_offset.take()?;
        self.open.remove(&first);
        self.recently_closed.push_back((offset, h.producer_id, first));
        if self.recently_closed.len() > RECENTLY_CLOSED_MAX {
            self.recently_closed.pop_front();
        }
        self.closing.push_back((offset, first));
        if self.closing.len() > CLOSING_MAX {
            self.closing.pop_front();
        }
        Some(CompletedTxn { producer_id: h.producer_id, first_offset: first, last_offset: offset, aborted: !marker.commit })
    }

    /// Whether producer `producer_id` has a transaction open in this partition at `epoch`
    /// (one left open at an older epoch is about to be closed by its marker, at a newer one).
    pub fn in_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        self.entries.get(&producer_id).is_some_and(|e| e.txn_first_offset.is_some() && e.epoch == epoch)
    }

    /// The first offset of the oldest open transaction.
    pub fn first_open_offset(&self) -> Option<i64> {
        self.open.keys().next().copied()
    }

    /// The first offset of the oldest transaction that is open, or closed by a marker at or past
    /// the high watermark `hw`: the last stable offset is at most this.
    pub fn first_unstable_offset(&self, hw: i64) -> Option<i64> {
        let closing = self.closing.iter().filter(|(marker, _)| *marker >= hw).map(|(_, first)| *first).min();
        match (self.first_open_offset(), closing) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The high watermark is at `hw`: closed transactions whose markers lie below it are stable.
    pub fn high_watermark_moved(&mut self, hw: i64) {
        while self.closing.front().is_some_and(|(marker, _)| *marker < hw) {
            self.closing.pop_front();
        }
    }

    /// Forgets batches at or past `end` (a failed write rolled them back), so a retry of them is
    /// written again instead of being answered as a duplicate of bytes that are gone.
    pub fn truncate(&mut self, end: i64) {
        // Markers rolled back: their transactions are open again (newest first, so a producer's
        // older transaction is not reopened over a newer one).
        while let Some(&(marker, pid, first)) = self.recently_closed.back() {
            if marker < end {
                break;
            }
            self.recently_closed.pop_back();
            if let Some(e) = self.entries.get_mut(&pid).filter(|e| e.txn_first_offset.is_none()) {
                e.txn_first_offset = Some(first);
                self.open.insert(first, pid);
            }
        }
        while self.closing.back().is_some_and(|(m, _)| *m >= end) {
            self.closing.pop_back();
        }
        self.entries.retain(|_, e| {
            while e.batches.back().is_some_and(|b| b.last_offset >= end) {
                e.batches.pop_back();
            }
            if e.txn_first_offset.is_some_and(|f| f >= end) {
                e.txn_first_offset = None;
            }
            !e.batches.is_empty() || e.txn_first_offset.is_some()
        });
        self.open.retain(|first, _| *first < end);
    }

    /// Snapshot bytes: version, entry count, each producer with its batches, CRC-32C last.
    /// Version 2 added each producer's last timestamp after its last write time; version 3 its
    /// open transaction's first offset (-1: none) and coordinator epoch after that.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&3u16.to_be_bytes());
        b.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        let mut pids: Vec<&i64> = self.entries.keys().collect();
        pids.sort();
        for pid in pids {
            let e = &self.entries[pid];
            b.extend_from_slice(&pid.to_be_bytes());
            b.extend_from_slice(&e.epoch.to_be_bytes());
            b.extend_from_slice(&e.last_write_ms.to_be_bytes());
            b.extend_from_slice(&e.last_timestamp.to_be_bytes());
            b.extend_from_slice(&e.txn_first_offset.unwrap_or(-1).to_be_bytes());
            b.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            b.push(e.batches.len() as u8);
            for m in &e.batches {
                b.extend_from_slice(&m.first_seq.to_be_bytes());
                b.extend_from_slice(&m.last_seq.to_be_bytes());
                b.extend_from_slice(&m.first_offset.to_be_bytes());
                b.extend_from_slice(&m.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    /// Reads a snapshot (versions 1 to 3; a version 1 producer's last timestamp is its last write
    /// time; before version 3 none has an open transaction); `None` if it is damaged or of another
    /// version (the caller then rebuilds from the log).
    pub fn decode(b: &[u8]) -> Option<ProducerStates> {
        let (body, crc) = b.split_at_checked(b.len().checked_sub(4)?)?;
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = body;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (x, rest) = r.split_at_checked(n)?;
            r = rest;
            Some(x)
        };
        let version = u16::from_be_bytes(take(2)?.try_into().ok()?);
        if !matches!(version, 1..=3) {
            return None;
        }
        let n = u32::from_be_bytes(take(4)?.try_into().ok()?);
        let mut entries = HashMap::new();
        let mut open = BTreeMap::new();
        for _ in 0..n {
            let pid = i64::from_be_bytes(take(8)?.try_into().ok()?);
            let epoch = i16::from_be_bytes(take(2)?.try_into().ok()?);
            let last_write_ms = i64::from_be_bytes(take(8)?.try_into().ok()?);
            let last_timestamp = if version >= 2 { i64::from_be_bytes(take(8)?.try_into().ok()?) } else { last_write_ms };
            let (txn_first_offset, coordinator_epoch) = if version >= 3 {
                let first = i64::from_be_bytes(take(8)?.try_into().ok()?);
                let coordinator_epoch = i32::from_be_bytes(take(4)?.try_into().ok()?);
                ((first >= 0).then_some(first), coordinator_epoch)
            } else {
                (None, -1)
            };
            if let Some(first) = txn_first_offset {
                if open.insert(first, pid).is_some() {
                    return None; // two transactions cannot start at one offset
                }
            }
            let count = take(1)?[0] as usize;
            if count > BATCHES_PER_PRODUCER {
                return None;
            }
            let mut batches = VecDeque::new();
            for _ in 0..count {
                batches.push_back(BatchMeta {
                    first_seq: i32::from_be_bytes(take(4)?.try_into().ok()?),
                    last_seq: i32::from_be_bytes(take(4)?.try_into().ok()?),
                    first_offset: i64::from_be_bytes(take(8)?.try_into().ok()?),
                    last_offset: i64::from_be_bytes(take(8)?.try_into().ok()?),
                });
            }
            if entries.insert(pid, Entry { epoch, batches, last_write_ms, last_timestamp, txn_first_offset, coordinator_epoch }).is_some() {
                return None;
            }
        }
        r.is_empty().then_some(ProducerStates { entries, open, recently_closed: VecDeque::new(), closing: VecDeque::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pid: i64, epoch: i16, seq: i32, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: records,
        }
    }

    #[test]
    fn retries_are_found_and_gaps_and_stale_epochs_refused() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(&h(7, 0, 0, 3)), Verdict::Append);
        s.record(&h(7, 0, 0, 3), 100, 0, 1);
        assert_eq!(s.check(&h(7, 0, 3, 2)), Verdict::Append);
        s.record(&h(7, 0, 3, 2), 110, 0, 2);
        let first = BatchMeta { first_seq: 0, last_seq: 2, first_offset: 100, last_offset: 102 };
        assert_eq!(s.check(&h(7, 0, 0, 3)), Verdict::Duplicate(first), "a retry of the first batch");
        assert_eq!(s.check(&h(7, 0, 6, 1)), Verdict::OutOfOrder { expected: 5 }, "sequence 5 was skipped");
        assert_eq!(s.check(&h(7, 0, 1, 1)), Verdict::OutOfOrder { expected: 5 }, "not a batch we wrote");
        assert_eq!(s.check(&h(7, 1, 0, 1)), Verdict::Append, "a new epoch starts at 0");
        assert_eq!(s.check(&h(7, 1, 4, 1)), Verdict::OutOfOrder { expected: 0 });
        s.record(&h(7, 1, 0, 1), 120, 0, 3);
        assert_eq!(s.check(&h(7, 0, 5, 1)), Verdict::StaleEpoch { current: 1 });
        assert_eq!(s.check(&h(8, 0, 42, 1)), Verdict::Append, "an unknown producer may start anywhere");
    }

    /// A transactional batch (attribute bit 4) or a marker's control batch (bits 4 and 5).
    fn txn(pid: i64, epoch: i16, seq: i32, records: i32) -> BatchHeader {
        BatchHeader { attributes: 0x10, ..h(pid, epoch, seq, records) }
    }
    fn marker(pid: i64, epoch: i16) -> BatchHeader {
        BatchHeader { attributes: 0x30, base_sequence: -1, ..h(pid, epoch, 0, 1) }
    }
    const COMMIT: Marker = Marker { commit: true, coordinator_epoch: 3 };
    const ABORT: Marker = Marker { commit: false, coordinator_epoch: 3 };

    #[test]
    fn a_closed_transaction_stays_unstable_until_the_high_watermark_passes_its_marker() {
        let mut s = ProducerStates::default();
        s.record(&txn(7, 0, 0, 2), 10, 0, 0);
        assert_eq!(s.first_unstable_offset(10), Some(10));
        s.end_transaction(&marker(7, 0), Marker { commit: true, coordinator_epoch: 0 }, 12, 0);
        assert_eq!(s.first_open_offset(), None);
        assert_eq!(s.first_unstable_offset(12), Some(10), "the marker at 12 is not readable yet");
        assert_eq!(s.first_unstable_offset(13), None, "readable once the high watermark passes it");
        s.high_watermark_moved(12);
        assert_eq!(s.first_unstable_offset(12), Some(10), "still waiting");
        s.high_watermark_moved(13);
        assert_eq!(s.first_unstable_offset(0), None, "forgotten once passed");
        // A marker rolled back by a failed write leaves the transaction open, not closing.
        s.record(&txn(7, 0, 2, 1), 20, 0, 0);
        s.end_transaction(&marker(7, 0), Marker { commit: false, coordinator_epoch: 0 }, 21, 0);
        s.truncate(21);
        assert_eq!((s.first_open_offset(), s.first_unstable_offset(100)), (Some(20), Some(20)));
    }

    #[test]
    fn a_fencing_marker_starts_the_new_epoch_afresh() {
        let mut s = ProducerStates::default();
        s.record(&txn(7, 0, 0, 3), 0, 0, 0);
        // The coordinator aborts under epoch 1 (a new incarnation); its first batch, sequence 0
        // at epoch 1, is new, not a retry of epoch 0's sequence 0.
        s.end_transaction(&marker(7, 1), Marker { commit: false, coordinator_epoch: 0 }, 3, 0);
        assert_eq!(s.check(&txn(7, 1, 0, 3)), Verdict::Append);
        assert!(matches!(s.check(&txn(7, 0, 3, 1)), Verdict::StaleEpoch { current: 1 }));
    }

    #[test]
    fn transactions_open_at_their_first_batch_and_markers_close_them() {
        let mut s = ProducerStates::default();
        s.record(&h(1, 0, 0, 2), 0, 0, 0); // idempotent, not transactional
        assert_eq!(s.first_open_offset(), None);
        s.record(&txn(7, 0, 0, 2), 2, 0, 0);
        s.record(&txn(8, 0, 0, 1), 4, 0, 0);
        s.record(&txn(7, 0, 2, 3), 5, 0, 0);
        assert_eq!(s.first_open_offset(), Some(2), "producer 7's transaction began at 2");
        assert_eq!(s.check(&txn(7, 0, 5, 1)), Verdict::Append, "sequences go on inside a transaction");
        // Producer 7 commits at 8: producer 8's transaction (from 4) bounds the LSO now.
        assert_eq!(s.check_marker(7, 0, 3), Ok(()));
        s.record(&marker(7, 0), 8, 0, 0);
        let done = s.end_transaction(&marker(7, 0), COMMIT, 8, 0);
        assert_eq!(done, Some(CompletedTxn { producer_id: 7, first_offset: 2, last_offset: 8, aborted: false }));
        assert_eq!(s.first_open_offset(), Some(4));
        assert_eq!(s.active()[1].txn_start_offset, -1);
        assert_eq!(s.active()[2].txn_start_offset, 4);
        // Its sequence is untouched by the marker; its next transaction opens at its first batch.
        assert!(matches!(s.check(&txn(7, 0, 2, 3)), Verdict::Duplicate(_)));
        s.record(&txn(7, 0, 5, 1), 9, 0, 0);
        assert_eq!(s.active()[1].txn_start_offset, 9);
        // Producer 8 aborts, from coordinator epoch 3; an older coordinator is fenced after that,
        // and so is a marker for an older producer epoch.
        let aborted = s.end_transaction(&marker(8, 0), ABORT, 10, 0);
        assert_eq!(aborted, Some(CompletedTxn { producer_id: 8, first_offset: 4, last_offset: 10, aborted: true }));
        assert_eq!(s.first_open_offset(), Some(9));
        assert_eq!(s.check_marker(8, 0, 2), Err(MarkerRefusal::StaleCoordinatorEpoch { current: 3 }));
        s.record(&txn(8, 1, 0, 1), 11, 0, 0);
        assert_eq!(s.check_marker(8, 0, 3), Err(MarkerRefusal::StaleProducerEpoch { current: 1 }));
        // A marker with no transaction open here (the partition was added, never written).
        assert_eq!(s.end_transaction(&marker(9, 0), COMMIT, 12, 0), None);
        // The snapshot keeps open transactions and coordinator epochs.
        let again = ProducerStates::decode(&s.encode()).expect("a version 3 snapshot");
        assert_eq!(again, s);
        assert_eq!(again.first_open_offset(), Some(9));
        assert_eq!(again.check_marker(8, 1, 2), Err(MarkerRefusal::StaleCoordinatorEpoch { current: 3 }));
    }

    #[test]
    fn a_rolled_back_marker_reopens_its_transaction_and_a_rolled_back_start_forgets_it() {
        let mut s = ProducerStates::default();
        s.record(&txn(7, 0, 0, 2), 10, 0, 0);
        s.record(&txn(8, 0, 0, 2), 12, 0, 0);
        s.record(&marker(7, 0), 14, 0, 0);
        s.end_transaction(&marker(7, 0), COMMIT, 14, 0);
        assert_eq!(s.first_open_offset(), Some(12));
        // The write from 14 on failed: the marker is gone, producer 7's transaction is open again.
        s.truncate(14);
        assert_eq!(s.first_open_offset(), Some(10));
        assert_eq!(s.active()[0].txn_start_offset, 10);
        // The write from 12 on failed too: producer 8's transaction never began.
        s.truncate(12);
        assert_eq!(s.active().iter().map(|p| (p.producer_id, p.txn_start_offset)).collect::<Vec<_>>(), vec![(7, 10)]);
        assert_eq!(s.check(&txn(8, 0, 0, 2)), Verdict::Append, "its batch is written again on retry");
    }

    #[test]
    fn a_producer_with_an_open_transaction_is_never_forgotten() {
        let mut s = ProducerStates::default();
        s.record(&txn(0, 0, 0, 1), 0, 0, 0); // the oldest write of all
        for pid in 1..=PRODUCERS_PER_PARTITION_MAX as i64 + 5 {
            s.record(&h(pid, 0, 0, 1), pid, 0, pid);
        }
        assert_eq!(s.len(), PRODUCERS_PER_PARTITION_MAX);
        assert_eq!(s.first_open_offset(), Some(0));
        assert!(s.active().iter().any(|p| p.producer_id == 0));
    }

    #[test]
    fn only_five_batches_are_remembered_and_sequences_wrap() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(&h(1, 0, i, 1), i as i64, 0, 0);
        }
        assert!(matches!(s.check(&h(1, 0, 6, 1)), Verdict::Duplicate(_)));
        assert!(matches!(s.check(&h(1, 0, 2, 1)), Verdict::Duplicate(_)));
        assert_eq!(s.check(&h(1, 0, 1, 1)), Verdict::OutOfOrder { expected: 7 }, "too old to be recognised");
        let mut w = ProducerStates::default();
        w.record(&h(2, 0, i32::MAX - 1, 2), 0, 0, 0);
        assert_eq!(w.check(&h(2, 0, 0, 1)), Verdict::Append, "after i32::MAX comes 0");
    }

    #[test]
    fn rollback_forgets_unwritten_batches() {
        let mut s = ProducerStates::default();
        s.record(&h(1, 0, 0, 2), 10, 0, 0);
        s.record(&h(1, 0, 2, 2), 12, 0, 0);
        s.record(&h(3, 0, 0, 1), 14, 0, 0);
        s.truncate(12);
        assert_eq!(s.check(&h(1, 0, 2, 2)), Verdict::Append, "the rolled-back batch is written again on retry");
        assert_eq!(s.check(&h(3, 0, 5, 1)), Verdict::Append, "producer 3 is forgotten entirely");
        assert!(matches!(s.check(&h(1, 0, 0, 2)), Verdict::Duplicate(_)));
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_refused() {
        let mut s = ProducerStates::default();
        for pid in 0..20 {
            for i in 0..(pid % 7) {
                s.record(&h(pid, (pid % 3) as i16, i as i32 * 2, 2), pid * 100 + i * 2, 1_000 + pid * 7, pid);
            }
        }
        let b = s.encode();
        assert_eq!(ProducerStates::decode(&b), Some(s));
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x40;
            assert_eq!(ProducerStates::decode(&bad), None, "flipped byte {i}");
        }
        assert_eq!(ProducerStates::decode(&b[..b.len() - 1]), None);
        assert_eq!(ProducerStates::decode(&[]), None);
    }

    /// A version 1 snapshot (written before last timestamps were kept) still reads, each
    /// producer's last timestamp taken from its last write time.
    #[test]
    fn version_1_snapshots_still_read() {
        let mut v1 = 1u16.to_be_bytes().to_vec();
        v1.extend_from_slice(&1u32.to_be_bytes());
        v1.extend_from_slice(&42i64.to_be_bytes()); // producer id
        v1.extend_from_slice(&3i16.to_be_bytes()); // epoch
        v1.extend_from_slice(&555i64.to_be_bytes()); // last write
        v1.push(1);
        for x in [0i32, 4] {
            v1.extend_from_slice(&x.to_be_bytes());
        }
        for x in [10i64, 14] {
            v1.extend_from_slice(&x.to_be_bytes());
        }
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        let s = ProducerStates::decode(&v1).expect("a version 1 snapshot");
        assert_eq!(
            s.active(),
            vec![ActiveProducer { producer_id: 42, epoch: 3, last_sequence: 4, last_timestamp: 555, txn_start_offset: -1, coordinator_epoch: -1 }]
        );
        assert!(matches!(s.check(&h(42, 3, 0, 5)), Verdict::Duplicate(_)));
    }
}
