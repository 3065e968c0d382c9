//! One transactional id's state at its transaction coordinator, and the rules that move it
//! (Kafka's `TransactionMetadata` and `TransactionCoordinator`). Both transaction versions:
//! with version 1 the client adds partitions itself and the epoch is bumped by InitProducerId
//! and by a timeout; with version 2 (KIP-890 part 2, Java clients 4.x) the partition leaders
//! add the partitions and every EndTxn bumps the epoch, moving to a new producer id when the
//! epoch is spent.
//! Pure: the caller (`server::transactions`) writes each new state to `__transaction_state`
//! before it takes effect, sends the markers a Prepare state calls for, and then writes the
//! Complete state.
//!
//! States, as Kafka numbers them in its log: Empty (0, no transaction), Ongoing (1, partitions
//! added), PrepareCommit (2) / PrepareAbort (3) (EndTxn or a timeout decided; markers being
//! written), CompleteCommit (4) / CompleteAbort (5) (markers written), Dead (6),
//! PrepareEpochFence (7, Kafka's own step before a fencing abort; Spate goes to PrepareAbort
//! with the bumped epoch at once, and reads 7 as PrepareAbort).

use std::collections::BTreeSet;

use crate::protocol::ResponseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    /// Kafka's number for the state in `TransactionLogValue`.
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name DescribeTransactions and ListTransactions give (Kafka's `stateName`).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Markers are being written: the transaction's outcome is decided and not yet complete.
    pub fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence)
    }
}

/// What the coordinator keeps of one transactional id (Kafka's `TransactionLogValue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    pub producer_id: i64,
    /// The producer id before the last move to a new one (transaction version 2, the epoch
    /// spent), so that a retried EndTxn is known; -1 if none.
    pub previous_producer_id: i64,
    /// The producer id a prepared transaction version 2 moves to once complete (its epoch is
    /// spent); -1 if none.
    pub next_producer_id: i64,
    pub producer_epoch: i16,
    /// The transaction version of the last transaction's client: 2 bumps the epoch per EndTxn.
    pub client_version: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions of the ongoing (or preparing) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// When the ongoing transaction began (its first AddPartitionsToTxn), or -1.
    pub start_ms: i64,
    pub last_update_ms: i64,
}

impl TxnMeta {
    /// An id's state with no transaction under way, at transaction version 0.
    pub fn new(producer_id: i64, producer_epoch: i16, timeout_ms: i32, state: TxnState, now: i64) -> TxnMeta {
        TxnMeta {
            producer_id,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch,
            client_version: 0,
            timeout_ms,
            state,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now,
        }
    }
}

/// What InitProducerId does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Init {
    /// Write `next`, then answer with its producer id and epoch.
    Write(TxnMeta),
    /// A transaction of the previous incarnation is open: write `next` (PrepareAbort at a bumped
    /// epoch, which fences the old producer), send its abort markers, and answer
    /// CONCURRENT_TRANSACTIONS; the client asks again and finds the transaction aborted.
    FenceAndAbort(TxnMeta),
}

/// What EndTxn does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Already done (a retry): answer with this producer id and epoch, without writing.
    Done(i64, i16),
    /// Write `next` (a Prepare state), answer with [`after_completion`] of it, then send the
    /// markers.
    Prepare(TxnMeta),
    /// Transaction version 2, an abort with no partition in the transaction: write `next`
    /// (CompleteAbort at the bumped epoch; no marker to write) and answer with its producer.
    Complete(TxnMeta),
}

/// The epoch after `epoch`, or `None` when it is exhausted (the id then gets a new producer id).
fn bumped(epoch: i16) -> Option<i16> {
    (epoch < i16::MAX - 1).then_some(epoch + 1)
}

/// InitProducerId with a transactional id. `expected` is the producer id and epoch the client
/// says it has (KIP-360; `(-1, -1)` when it has none); `new_id` hands out a fresh producer id.
pub fn init_producer_id(
    current: Option<&TxnMeta>,
    timeout_ms: i32,
    max_timeout_ms: i32,
    expected: (i64, i16),
    now: i64,
    new_id: &mut dyn FnMut() -> Option<i64>,
) -> Result<Init, ResponseError> {
    if timeout_ms <= 0 || timeout_ms > max_timeout_ms {
        return Err(ResponseError::InvalidTransactionTimeout);
    }
    let fresh = |producer_id: i64, producer_epoch: i16| TxnMeta::new(producer_id, producer_epoch, timeout_ms, TxnState::Empty, now);
    let Some(m) = current else {
        let id = new_id().ok_or(ResponseError::UnknownServerError)?;
        return Ok(Init::Write(fresh(id, 0)));
    };
    match m.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence | TxnState::Dead => {
            Err(ResponseError::ConcurrentTransactions)
        }
        TxnState::Ongoing => {
            // The previous incarnation's transaction is aborted under a bumped epoch, so its
            // producer is fenced from the partitions and from this coordinator.
            let mut next = m.clone();
            next.producer_epoch = bumped(m.producer_epoch).unwrap_or(m.producer_epoch);
            next.state = TxnState::PrepareAbort;
            next.last_update_ms = now;
            Ok(Init::FenceAndAbort(next))
        }
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            // KIP-360: a producer that names its id and epoch may only bump its own.
            if expected.0 >= 0 && (expected.0 != m.producer_id || expected.1 != m.producer_epoch) {
                return Err(ResponseError::ProducerFenced);
            }
            let next = match bumped(m.producer_epoch) {
                Some(epoch) => fresh(m.producer_id, epoch),
                None => fresh(new_id().ok_or(ResponseError::UnknownServerError)?, 0),
            };
            Ok(Init::Write(next))
        }
    }
}

/// Checks that a request comes from the id's current producer.
fn check_producer(m: &TxnMeta, producer_id: i64, producer_epoch: i16) -> Result<(), ResponseError> {
    if m.producer_id != producer_id {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if m.producer_epoch != producer_epoch {
        return Err(ResponseError::ProducerFenced);
    }
    Ok(())
}

/// The producer id and epoch the id's producer has once `m` is complete: with transaction
/// version 2 a prepared transaction has bumped the epoch already, or moves to a new producer id.
pub fn after_completion(m: &TxnMeta) -> (i64, i16) {
    if m.next_producer_id >= 0 {
        (m.next_producer_id, 0)
    } else {
        (m.producer_id, m.producer_epoch)
    }
}

/// AddPartitionsToTxn (and AddOffsetsToTxn, whose partition is the group's
/// `__consumer_offsets` one): `Some(next)` to write, `None` when every partition is in the
/// transaction already. `version2`: added by a partition leader or group coordinator for a
/// client of transaction version 2 (Produce v12+, TxnOffsetCommit v5+).
pub fn add_partitions(
    m: &TxnMeta,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[(String, i32)],
    version2: bool,
    now: i64,
) -> Result<Option<TxnMeta>, ResponseError> {
    if m.state.is_prepare() && after_completion(m) == (producer_id, producer_epoch) {
        // The producer's previous transaction is being completed (its markers written).
        return Err(ResponseError::ConcurrentTransactions);
    }
    check_producer(m, producer_id, producer_epoch)?;
    match m.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => Err(ResponseError::ConcurrentTransactions),
        TxnState::Dead => Err(ResponseError::InvalidTxnState),
        TxnState::Ongoing if partitions.iter().all(|p| m.partitions.contains(p)) => Ok(None),
        TxnState::Empty | TxnState::Ongoing | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            let mut next = m.clone();
            if m.state != TxnState::Ongoing {
                next.partitions.clear();
                next.start_ms = now;
                next.client_version = if version2 { 2 } else { 0 };
            }
            next.state = TxnState::Ongoing;
            next.partitions.extend(partitions.iter().cloned());
            next.last_update_ms = now;
            Ok(Some(next))
        }
    }
}

/// Whether a partition's leader may take a transactional batch of this producer (KIP-890 part
/// 1: the partition is in its ongoing transaction).
pub fn verify(m: &TxnMeta, producer_id: i64, producer_epoch: i16, partition: &(String, i32)) -> Result<(), ResponseError> {
    check_producer(m, producer_id, producer_epoch)?;
    if m.state == TxnState::Ongoing && m.partitions.contains(partition) {
        Ok(())
    } else {
        Err(ResponseError::InvalidTxnState)
    }
}

/// EndTxn: commit or abort the ongoing transaction. `version2`: the request is of transaction
/// version 2 (EndTxn v5+), so the epoch is bumped (or, spent, a new producer id taken with
/// `new_id`), and the answer carries the producer's next id and epoch. As Kafka's
/// coordinator: under version 2 the same epoch as the id's is a new EndTxn, and the epoch
/// below it (or the last epoch of the previous producer id) a retry of the one before.
pub fn end_txn(
    m: &TxnMeta,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    version2: bool,
    now: i64,
    new_id: &mut dyn FnMut() -> Option<i64>,
) -> Result<End, ResponseError> {
    let bumped_before = m.client_version >= 2;
    let retry_on_bump = bumped_before && m.producer_id == producer_id && producer_epoch.checked_add(1) == Some(m.producer_epoch);
    let retry_on_overflow =
        bumped_before && m.previous_producer_id == producer_id && producer_epoch == i16::MAX - 1 && m.producer_epoch == 0;
    if m.producer_id != producer_id && !retry_on_overflow {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    let same = m.producer_id == producer_id && producer_epoch == m.producer_epoch;
    let matches = |state: TxnState| matches!((state, commit), (TxnState::CompleteCommit | TxnState::PrepareCommit, true) | (TxnState::CompleteAbort | TxnState::PrepareAbort, false));
    match m.state {
        TxnState::Ongoing if same => {
            let mut next = m.clone();
            next.state = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
            next.last_update_ms = now;
            if version2 {
                next.client_version = 2;
                match bumped(m.producer_epoch) {
                    Some(e) => next.producer_epoch = e,
                    None => {
                        // The markers go out at the last epoch; the producer then moves on.
                        next.producer_epoch = i16::MAX;
                        next.next_producer_id = new_id().ok_or(ResponseError::UnknownServerError)?;
                    }
                }
            }
            Ok(End::Prepare(next))
        }
        TxnState::CompleteCommit | TxnState::CompleteAbort if retry_on_bump || retry_on_overflow => {
            if matches(m.state) {
                Ok(End::Done(m.producer_id, m.producer_epoch))
            } else {
                Err(ResponseError::InvalidTxnState)
            }
        }
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort if same => {
            if version2 && !commit {
                // The client produced, but no partition was added (each refused): nothing to
                // mark; the epoch is bumped all the same.
                let mut next = m.clone();
                next.state = TxnState::CompleteAbort;
                next.client_version = 2;
                next.partitions.clear();
                next.start_ms = -1;
                next.last_update_ms = now;
                match bumped(m.producer_epoch) {
                    Some(e) => next.producer_epoch = e,
                    None => {
                        next.previous_producer_id = m.producer_id;
                        next.producer_id = new_id().ok_or(ResponseError::UnknownServerError)?;
                        next.producer_epoch = 0;
                    }
                }
                Ok(End::Complete(next))
            } else if !version2 && !bumped_before && m.state != TxnState::Empty && matches(m.state) {
                // Transaction version 1: the same EndTxn again.
                Ok(End::Done(m.producer_id, m.producer_epoch))
            } else {
                Err(ResponseError::InvalidTxnState)
            }
        }
        state if state.is_prepare() && (if bumped_before { retry_on_bump || same } else { same }) => {
            if matches(state) {
                Err(ResponseError::ConcurrentTransactions)
            } else {
                Err(ResponseError::InvalidTxnState)
            }
        }
        TxnState::Dead => Err(ResponseError::InvalidTxnState),
        _ => Err(ResponseError::ProducerFenced),
    }
}

/// The state once every marker of a Prepare state is written.
pub fn complete(m: &TxnMeta, now: i64) -> TxnMeta {
    let mut next = m.clone();
    next.state = match m.state {
        TxnState::PrepareCommit => TxnState::CompleteCommit,
        _ => TxnState::CompleteAbort,
    };
    if m.next_producer_id >= 0 {
        next.previous_producer_id = m.producer_id;
        next.producer_id = m.next_producer_id;
        next.producer_epoch = 0;
        next.next_producer_id = -1;
    }
    next.partitions.clear();
    next.start_ms = -1;
    next.last_update_ms = now;
    next
}

/// An ongoing transaction past its timeout: aborted under a bumped epoch (so its producer is
/// fenced, as Kafka's coordinator does), or `None` if it has not timed out.
pub fn expire(m: &TxnMeta, now: i64) -> Option<TxnMeta> {
    if m.state != TxnState::Ongoing || m.start_ms < 0 || now <= m.start_ms.saturating_add(m.timeout_ms as i64) {
        return None;
    }
    let mut next = m.clone();
    next.producer_epoch = bumped(m.producer_epoch).unwrap_or(m.producer_epoch);
    next.state = TxnState::PrepareAbort;
    next.last_update_ms = now;
    Some(next)
}

/// Whether a transactional id unused since `m.last_update_ms` is to be forgotten at `now`: no
/// transaction ongoing or being completed, and idle longer than `expiration_ms` (Kafka's
/// `transactional.id.expiration.ms`).
pub fn expired_id(m: &TxnMeta, now: i64, expiration_ms: i64) -> bool {
    matches!(m.state, TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort) && now - m.last_update_ms > expiration_ms
}

/// Kafka's `TransactionLogKey` (version 0): the transactional id.
pub fn encode_key(transactional_id: &str) -> Vec<u8> {
    let mut out = 0i16.to_be_bytes().to_vec();
    put_string(&mut out, transactional_id);
    out
}

/// Kafka's `TransactionLogValue`: version 0 (what Kafka writes for clients of transaction
/// versions 0 and 1), or version 1 (flexible, with the tagged fields of transaction version 2:
/// previous and next producer id, the client's transaction version) once any of them is set.
pub fn encode_value(m: &TxnMeta) -> Vec<u8> {
    let flexible = m.client_version != 0 || m.previous_producer_id >= 0 || m.next_producer_id >= 0;
    let mut out = (flexible as i16).to_be_bytes().to_vec();
    out.extend_from_slice(&m.producer_id.to_be_bytes());
    out.extend_from_slice(&m.producer_epoch.to_be_bytes());
    out.extend_from_slice(&m.timeout_ms.to_be_bytes());
    out.push(m.state.id() as u8);
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (t, p) in &m.partitions {
        match topics.last_mut() {
            Some((last, ps)) if *last == t.as_str() => ps.push(*p),
            _ => topics.push((t.as_str(), vec![*p])),
        }
    }
    if flexible {
        put_uvarint(&mut out, topics.len() as u64 + 1);
    } else {
        out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    }
    for (t, ps) in topics {
        if flexible {
            put_uvarint(&mut out, t.len() as u64 + 1);
            out.extend_from_slice(t.as_bytes());
            put_uvarint(&mut out, ps.len() as u64 + 1);
        } else {
            put_string(&mut out, t);
            out.extend_from_slice(&(ps.len() as i32).to_be_bytes());
        }
        for p in ps {
            out.extend_from_slice(&p.to_be_bytes());
        }
        if flexible {
            put_uvarint(&mut out, 0); // the entry's tagged fields
        }
    }
    out.extend_from_slice(&m.last_update_ms.to_be_bytes());
    out.extend_from_slice(&m.start_ms.to_be_bytes());
    if flexible {
        // Tagged fields, in tag order, each only when not at its default.
        let mut tagged: Vec<(u64, Vec<u8>)> = Vec::new();
        if m.previous_producer_id >= 0 {
            tagged.push((0, m.previous_producer_id.to_be_bytes().to_vec()));
        }
        if m.next_producer_id >= 0 {
            tagged.push((1, m.next_producer_id.to_be_bytes().to_vec()));
        }
        if m.client_version != 0 {
            tagged.push((2, m.client_version.to_be_bytes().to_vec()));
        }
        put_uvarint(&mut out, tagged.len() as u64);
        for (tag, data) in tagged {
            put_uvarint(&mut out, tag);
            put_uvarint(&mut out, data.len() as u64);
            out.extend_from_slice(&data);
        }
    }
    out
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A cursor over big-endian fields; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn i8(&mut self) -> Option<i8> {
        Some(self.take(1)?[0] as i8)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = usize::try_from(self.i16()?).ok()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    /// A compact array's or string's length (`None` for a null or damaged one).
    fn compact_len(&mut self) -> Option<usize> {
        usize::try_from(self.uvarint()?.checked_sub(1)?).ok()
    }
    fn compact_string(&mut self) -> Option<String> {
        let n = self.compact_len()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    /// Skips a block of tagged fields, handing each known one to `f`.
    fn tagged(&mut self, mut f: impl FnMut(u64, &'a [u8])) -> Option<()> {
        for _ in 0..self.uvarint()? {
            let tag = self.uvarint()?;
            let n = usize::try_from(self.uvarint()?).ok()?;
            f(tag, self.take(n)?);
        }
        Some(())
    }
}

/// The transactional id of a `TransactionLogKey`; `None` if it is not one.
pub fn decode_key(key: &[u8]) -> Option<String> {
    let mut r = Reader(key);
    if r.i16()? != 0 {
        return None;
    }
    r.string()
}

/// A `TransactionLogValue` of version 0 or 1; `None` if it is damaged or of another version.
pub fn decode_value(value: &[u8]) -> Option<TxnMeta> {
    let mut r = Reader(value);
    let flexible = match r.i16()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let state = TxnState::from_id(r.i8()?)?;
    let mut partitions = BTreeSet::new();
    let topics = if flexible { r.compact_len()? } else { usize::try_from(r.i32()?.max(0)).ok()? };
    for _ in 0..topics {
        let t = if flexible { r.compact_string()? } else { r.string()? };
        let n = if flexible { r.compact_len()? } else { usize::try_from(r.i32()?).ok()? };
        // Each partition is 4 bytes: a count past what is left is damage, not an allocation.
        if n > r.0.len() / 4 {
            return None;
        }
        for _ in 0..n {
            partitions.insert((t.clone(), r.i32()?));
        }
        if flexible {
            r.tagged(|_, _| {})?;
        }
    }
    let last_update_ms = r.i64()?;
    let start_ms = r.i64()?;
    let mut m = TxnMeta { partitions, start_ms, ..TxnMeta::new(producer_id, producer_epoch, timeout_ms, state, last_update_ms) };
    if flexible {
        let mut bad = false;
        r.tagged(|tag, data| match (tag, data.len()) {
            (0, 8) => m.previous_producer_id = i64::from_be_bytes(data.try_into().expect("8 bytes")),
            (1, 8) => m.next_producer_id = i64::from_be_bytes(data.try_into().expect("8 bytes")),
            (2, 2) => m.client_version = i16::from_be_bytes(data.try_into().expect("2 bytes")),
            (0..=2, _) => bad = true,
            _ => {} // a field of a newer Kafka: skipped, as tagged fields are meant to be
        })?;
        if bad {
            return None;
        }
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: i32 = 900_000;

    fn ids() -> impl FnMut() -> Option<i64> {
        let mut next = 100;
        move || {
            next += 1;
            Some(next)
        }
    }

    fn init(current: Option<&TxnMeta>, expected: (i64, i16)) -> Result<Init, ResponseError> {
        init_producer_id(current, 60_000, MAX, expected, 1_000, &mut ids())
    }

    fn written(i: Result<Init, ResponseError>) -> TxnMeta {
        match i {
            Ok(Init::Write(m)) => m,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    fn tp(t: &str, p: i32) -> (String, i32) {
        (t.to_string(), p)
    }

    /// A transaction of three partitions in `state`, of transaction version 0.
    fn sample(state: TxnState) -> TxnMeta {
        TxnMeta {
            producer_id: 4242,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch: 3,
            client_version: 0,
            timeout_ms: 60_000,
            state,
            partitions: [tp("a", 2), tp("a", 0), tp("b", 1)].into_iter().collect(),
            start_ms: 10,
            last_update_ms: 20,
        }
    }

    #[test]
    fn a_transaction_goes_from_init_to_complete_and_the_epoch_bumps_per_init() {
        let m = written(init(None, (-1, -1)));
        assert_eq!((m.producer_id, m.producer_epoch, m.state), (101, 0, TxnState::Empty));
        let m = add_partitions(&m, 101, 0, &[tp("a", 0), tp("a", 1)], false, 2_000).unwrap().unwrap();
        assert_eq!((m.state, m.start_ms, m.partitions.len()), (TxnState::Ongoing, 2_000, 2));
        assert_eq!(add_partitions(&m, 101, 0, &[tp("a", 1)], false, 2_500), Ok(None), "already in it: nothing to write");
        let m = add_partitions(&m, 101, 0, &[tp("b", 0)], false, 3_000).unwrap().unwrap();
        assert_eq!((m.start_ms, m.partitions.len()), (2_000, 3), "the start stays");
        assert_eq!(verify(&m, 101, 0, &tp("b", 0)), Ok(()));
        assert_eq!(verify(&m, 101, 0, &tp("c", 0)), Err(ResponseError::InvalidTxnState));
        let End::Prepare(p) = end_txn(&m, 101, 0, true, false, 4_000, &mut ids()).unwrap() else { panic!() };
        assert_eq!(p.state, TxnState::PrepareCommit);
        assert_eq!(end_txn(&p, 101, 0, true, false, 4_100, &mut ids()), Err(ResponseError::ConcurrentTransactions), "markers under way");
        assert_eq!(end_txn(&p, 101, 0, false, false, 4_100, &mut ids()), Err(ResponseError::InvalidTxnState));
        assert_eq!(add_partitions(&p, 101, 0, &[tp("a", 0)], false, 4_100), Err(ResponseError::ConcurrentTransactions));
        let c = complete(&p, 5_000);
        assert_eq!((c.state, c.partitions.len(), c.start_ms), (TxnState::CompleteCommit, 0, -1));
        assert_eq!(end_txn(&c, 101, 0, true, false, 5_100, &mut ids()), Ok(End::Done(101, 0)), "a retried commit");
        assert_eq!(end_txn(&c, 101, 0, false, false, 5_100, &mut ids()), Err(ResponseError::InvalidTxnState));
        // The next transaction starts afresh; a new incarnation bumps the epoch and fences.
        let n = add_partitions(&c, 101, 0, &[tp("b", 1)], false, 6_000).unwrap().unwrap();
        assert_eq!((n.partitions.len(), n.start_ms), (1, 6_000));
        let again = written(init(Some(&c), (-1, -1)));
        assert_eq!((again.producer_id, again.producer_epoch), (101, 1));
        assert_eq!(add_partitions(&again, 101, 0, &[tp("a", 0)], false, 7_000), Err(ResponseError::ProducerFenced));
        assert_eq!(end_txn(&again, 999, 1, true, false, 7_000, &mut ids()), Err(ResponseError::InvalidProducerIdMapping));
    }

    #[test]
    fn a_new_incarnation_aborts_the_open_transaction_under_a_bumped_epoch() {
        let m = written(init(None, (-1, -1)));
        let m = add_partitions(&m, 101, 0, &[tp("a", 0)], false, 2_000).unwrap().unwrap();
        let Ok(Init::FenceAndAbort(f)) = init(Some(&m), (-1, -1)) else { panic!() };
        assert_eq!((f.state, f.producer_epoch, f.partitions.len()), (TxnState::PrepareAbort, 1, 1));
        assert_eq!(init(Some(&f), (-1, -1)), Err(ResponseError::ConcurrentTransactions), "until the markers are written");
        let done = complete(&f, 3_000);
        assert_eq!(done.state, TxnState::CompleteAbort);
        let next = written(init(Some(&done), (-1, -1)));
        assert_eq!((next.producer_id, next.producer_epoch, next.state), (101, 2, TxnState::Empty));
        assert_eq!(init(Some(&done), (101, 0)), Err(ResponseError::ProducerFenced), "KIP-360: not its epoch any more");
        assert_eq!(written(init(Some(&done), (101, 1))).producer_epoch, 2);
    }

    #[test]
    fn timeouts_and_exhausted_epochs() {
        assert_eq!(init_producer_id(None, 0, MAX, (-1, -1), 0, &mut ids()), Err(ResponseError::InvalidTransactionTimeout));
        assert_eq!(init_producer_id(None, MAX + 1, MAX, (-1, -1), 0, &mut ids()), Err(ResponseError::InvalidTransactionTimeout));
        let m = written(init(None, (-1, -1)));
        let m = add_partitions(&m, 101, 0, &[tp("a", 0)], false, 2_000).unwrap().unwrap();
        assert_eq!(expire(&m, 62_000), None);
        let e = expire(&m, 62_001).unwrap();
        assert_eq!((e.state, e.producer_epoch), (TxnState::PrepareAbort, 1));
        let mut old = complete(&e, 63_000);
        old.producer_epoch = i16::MAX - 1;
        let renewed = written(init_producer_id(Some(&old), 60_000, MAX, (-1, -1), 64_000, &mut || Some(555)));
        assert_eq!((renewed.producer_id, renewed.producer_epoch), (555, 0), "a new producer id once the epoch is spent");
    }

    #[test]
    fn only_idle_ids_without_a_transaction_expire() {
        let m = written(init(None, (-1, -1)));
        assert!(!expired_id(&m, 1_000 + 500, 500), "not idle long enough");
        assert!(expired_id(&m, 1_000 + 501, 500));
        let ongoing = add_partitions(&m, 101, 0, &[tp("a", 0)], false, 1_000).unwrap().unwrap();
        assert!(!expired_id(&ongoing, 1_000_000, 500), "an ongoing transaction is aborted by its timeout, not forgotten");
        let End::Prepare(p) = end_txn(&ongoing, 101, 0, true, false, 1_000, &mut ids()).unwrap() else { panic!() };
        assert!(!expired_id(&p, 1_000_000, 500));
        assert!(expired_id(&complete(&p, 1_000), 1_000_000, 500));
    }

    #[test]
    fn transaction_version_2_bumps_the_epoch_per_end_txn_and_knows_a_retry() {
        let m = written(init(None, (-1, -1)));
        // The partition leader adds the partition (Produce v12+).
        let m = add_partitions(&m, 101, 0, &[tp("a", 0)], true, 2_000).unwrap().unwrap();
        assert_eq!(m.client_version, 2);
        let End::Prepare(p) = end_txn(&m, 101, 0, true, true, 3_000, &mut ids()).unwrap() else { panic!() };
        assert_eq!((p.state, p.producer_epoch), (TxnState::PrepareCommit, 1), "the markers go out at the bumped epoch");
        assert_eq!(after_completion(&p), (101, 1));
        assert_eq!(end_txn(&p, 101, 0, true, true, 3_100, &mut ids()), Err(ResponseError::ConcurrentTransactions), "a retry while the markers are written");
        // The producer, at its new epoch, starts the next transaction before the markers are done.
        assert_eq!(add_partitions(&p, 101, 1, &[tp("a", 0)], true, 3_100), Err(ResponseError::ConcurrentTransactions));
        let c = complete(&p, 4_000);
        assert_eq!((c.state, c.producer_epoch), (TxnState::CompleteCommit, 1));
        assert_eq!(end_txn(&c, 101, 0, true, true, 4_100, &mut ids()), Ok(End::Done(101, 1)), "a retried commit answers the new epoch");
        assert_eq!(end_txn(&c, 101, 0, false, true, 4_100, &mut ids()), Err(ResponseError::InvalidTxnState));
        assert_eq!(end_txn(&c, 101, 1, true, true, 4_100, &mut ids()), Err(ResponseError::InvalidTxnState), "a commit of nothing");
        // An abort with nothing added (every produce refused) still bumps the epoch.
        let Ok(End::Complete(e)) = end_txn(&c, 101, 1, false, true, 4_200, &mut ids()) else { panic!() };
        assert_eq!((e.state, e.producer_epoch, e.partitions.len()), (TxnState::CompleteAbort, 2, 0));
        assert_eq!(end_txn(&e, 101, 0, false, true, 4_300, &mut ids()), Err(ResponseError::ProducerFenced), "two epochs behind");
        let n = add_partitions(&e, 101, 2, &[tp("b", 0)], true, 5_000).unwrap().unwrap();
        assert_eq!((n.state, n.producer_epoch, n.start_ms), (TxnState::Ongoing, 2, 5_000));
        assert_eq!(end_txn(&n, 101, 1, true, true, 5_100, &mut ids()), Err(ResponseError::ProducerFenced), "an older epoch in an ongoing transaction");
    }

    #[test]
    fn transaction_version_2_moves_to_a_new_producer_id_when_the_epoch_is_spent() {
        let mut m = written(init(None, (-1, -1)));
        m.producer_epoch = i16::MAX - 1;
        let m = add_partitions(&m, 101, i16::MAX - 1, &[tp("a", 0)], true, 2_000).unwrap().unwrap();
        let End::Prepare(p) = end_txn(&m, 101, i16::MAX - 1, false, true, 3_000, &mut || Some(777)).unwrap() else { panic!() };
        assert_eq!((p.producer_id, p.producer_epoch, p.next_producer_id), (101, i16::MAX, 777), "markers at the last epoch");
        assert_eq!(after_completion(&p), (777, 0));
        assert_eq!(add_partitions(&p, 777, 0, &[tp("a", 0)], true, 3_100), Err(ResponseError::ConcurrentTransactions));
        let c = complete(&p, 4_000);
        assert_eq!((c.producer_id, c.producer_epoch, c.previous_producer_id, c.next_producer_id), (777, 0, 101, -1));
        assert_eq!(end_txn(&c, 101, i16::MAX - 1, false, true, 4_100, &mut ids()), Ok(End::Done(777, 0)), "a retry under the old id");
        assert_eq!(end_txn(&c, 101, 5, false, true, 4_100, &mut ids()), Err(ResponseError::InvalidProducerIdMapping));
        assert!(add_partitions(&c, 777, 0, &[tp("a", 0)], true, 5_000).unwrap().is_some());
        assert_eq!(decode_value(&encode_value(&p)), Some(p.clone()));
        assert_eq!(decode_value(&encode_value(&c)), Some(c.clone()));
    }

    #[test]
    fn version_1_records_round_trip_and_skip_unknown_tags() {
        let m = TxnMeta { previous_producer_id: 4000, next_producer_id: 4300, client_version: 2, ..sample(TxnState::PrepareCommit) };
        let v = encode_value(&m);
        assert_eq!(&v[..2], &[0, 1], "version 1");
        assert_eq!(decode_value(&v), Some(m.clone()));
        for cut in 0..v.len() {
            assert_eq!(decode_value(&v[..cut]), None, "cut at {cut}");
        }
        // A tag of a newer Kafka (3, 4 bytes) is skipped.
        let mut newer = v.clone();
        let tags_at = v.len() - (1 + 3 * 2) - 8 - 8 - 2;
        assert_eq!(v[tags_at], 3, "three tagged fields");
        newer[tags_at] = 4;
        newer.extend_from_slice(&[3, 4, 0, 0, 0, 9]);
        assert_eq!(decode_value(&newer), Some(m));
    }

    #[test]
    fn records_round_trip_in_kafkas_version_0_layout() {
        let m = sample(TxnState::Ongoing);
        let v = encode_value(&m);
        // version, producer id, epoch, timeout, state, then 2 topics.
        assert_eq!(&v[..2], &[0, 0]);
        assert_eq!(v[16], 1, "state Ongoing");
        assert_eq!(&v[17..21], &2i32.to_be_bytes());
        assert_eq!(decode_value(&v), Some(m));
        assert_eq!(decode_key(&encode_key("tx-1")), Some("tx-1".to_string()));
        for cut in 0..v.len() {
            assert_eq!(decode_value(&v[..cut]), None, "cut at {cut}");
        }
        let mut huge = v.clone();
        huge[23 + 1..27 + 1].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(decode_value(&huge), None);
    }
}
