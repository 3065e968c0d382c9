//! One transactional id's state at its transaction coordinator, and the rules that move it
//! (Kafka's `TransactionMetadata` and `TransactionCoordinator`, transaction version 1: the
//! client adds partitions itself and the epoch is bumped by InitProducerId and by a timeout).
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

/// What the coordinator keeps of one transactional id (Kafka's `TransactionLogValue`, version 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions of the ongoing (or preparing) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// When the ongoing transaction began (its first AddPartitionsToTxn), or -1.
    pub start_ms: i64,
    pub last_update_ms: i64,
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
    /// Already done (a retry): answer without writing.
    Done,
    /// Write `next` (a Prepare state), answer, then send the markers.
    Prepare(TxnMeta),
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
    let fresh = |producer_id: i64, producer_epoch: i16| TxnMeta {
        producer_id,
        producer_epoch,
        timeout_ms,
        state: TxnState::Empty,
        partitions: BTreeSet::new(),
        start_ms: -1,
        last_update_ms: now,
    };
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

/// AddPartitionsToTxn (and AddOffsetsToTxn, whose partition is the group's
/// `__consumer_offsets` one): `Some(next)` to write, `None` when every partition is in the
/// transaction already.
pub fn add_partitions(
    m: &TxnMeta,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[(String, i32)],
    now: i64,
) -> Result<Option<TxnMeta>, ResponseError> {
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

/// EndTxn: commit or abort the ongoing transaction.
pub fn end_txn(m: &TxnMeta, producer_id: i64, producer_epoch: i16, commit: bool, now: i64) -> Result<End, ResponseError> {
    check_producer(m, producer_id, producer_epoch)?;
    match (m.state, commit) {
        (TxnState::Ongoing, _) => {
            let mut next = m.clone();
            next.state = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
            next.last_update_ms = now;
            Ok(End::Prepare(next))
        }
        (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(End::Done),
        (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => Err(ResponseError::ConcurrentTransactions),
        _ => Err(ResponseError::InvalidTxnState),
    }
}

/// The state once every marker of a Prepare state is written.
pub fn complete(m: &TxnMeta, now: i64) -> TxnMeta {
    let mut next = m.clone();
    next.state = match m.state {
        TxnState::PrepareCommit => TxnState::CompleteCommit,
        _ => TxnState::CompleteAbort,
    };
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

/// Kafka's `TransactionLogValue`, version 0 (what Kafka writes for clients of transaction
/// version 0 and 1).
pub fn encode_value(m: &TxnMeta) -> Vec<u8> {
    let mut out = 0i16.to_be_bytes().to_vec();
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
    out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for (t, ps) in topics {
        put_string(&mut out, t);
        out.extend_from_slice(&(ps.len() as i32).to_be_bytes());
        for p in ps {
            out.extend_from_slice(&p.to_be_bytes());
        }
    }
    out.extend_from_slice(&m.last_update_ms.to_be_bytes());
    out.extend_from_slice(&m.start_ms.to_be_bytes());
    out
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
}

/// The transactional id of a `TransactionLogKey`; `None` if it is not one.
pub fn decode_key(key: &[u8]) -> Option<String> {
    let mut r = Reader(key);
    if r.i16()? != 0 {
        return None;
    }
    r.string()
}

/// A `TransactionLogValue` of version 0; `None` if it is damaged or of another version
/// (Spate writes version 0 only).
pub fn decode_value(value: &[u8]) -> Option<TxnMeta> {
    let mut r = Reader(value);
    if r.i16()? != 0 {
        return None;
    }
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let state = TxnState::from_id(r.i8()?)?;
    let mut partitions = BTreeSet::new();
    let topics = r.i32()?;
    for _ in 0..topics.max(0) {
        let t = r.string()?;
        let n = r.i32()?;
        // Each partition is 4 bytes: a count past what is left is damage, not an allocation.
        if n < 0 || n as usize > r.0.len() / 4 {
            return None;
        }
        for _ in 0..n {
            partitions.insert((t.clone(), r.i32()?));
        }
    }
    let last_update_ms = r.i64()?;
    let start_ms = r.i64()?;
    Some(TxnMeta { producer_id, producer_epoch, timeout_ms, state, partitions, start_ms, last_update_ms })
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

    #[test]
    fn a_transaction_goes_from_init_to_complete_and_the_epoch_bumps_per_init() {
        let m = written(init(None, (-1, -1)));
        assert_eq!((m.producer_id, m.producer_epoch, m.state), (101, 0, TxnState::Empty));
        let m = add_partitions(&m, 101, 0, &[tp("a", 0), tp("a", 1)], 2_000).unwrap().unwrap();
        assert_eq!((m.state, m.start_ms, m.partitions.len()), (TxnState::Ongoing, 2_000, 2));
        assert_eq!(add_partitions(&m, 101, 0, &[tp("a", 1)], 2_500), Ok(None), "already in it: nothing to write");
        let m = add_partitions(&m, 101, 0, &[tp("b", 0)], 3_000).unwrap().unwrap();
        assert_eq!((m.start_ms, m.partitions.len()), (2_000, 3), "the start stays");
        assert_eq!(verify(&m, 101, 0, &tp("b", 0)), Ok(()));
        assert_eq!(verify(&m, 101, 0, &tp("c", 0)), Err(ResponseError::InvalidTxnState));
        let End::Prepare(p) = end_txn(&m, 101, 0, true, 4_000).unwrap() else { panic!() };
        assert_eq!(p.state, TxnState::PrepareCommit);
        assert_eq!(end_txn(&p, 101, 0, true, 4_100), Err(ResponseError::ConcurrentTransactions), "markers under way");
        assert_eq!(end_txn(&p, 101, 0, false, 4_100), Err(ResponseError::InvalidTxnState));
        assert_eq!(add_partitions(&p, 101, 0, &[tp("a", 0)], 4_100), Err(ResponseError::ConcurrentTransactions));
        let c = complete(&p, 5_000);
        assert_eq!((c.state, c.partitions.len(), c.start_ms), (TxnState::CompleteCommit, 0, -1));
        assert_eq!(end_txn(&c, 101, 0, true, 5_100), Ok(End::Done), "a retried commit");
        assert_eq!(end_txn(&c, 101, 0, false, 5_100), Err(ResponseError::InvalidTxnState));
        // The next transaction starts afresh; a new incarnation bumps the epoch and fences.
        let n = add_partitions(&c, 101, 0, &[tp("b", 1)], 6_000).unwrap().unwrap();
        assert_eq!((n.partitions.len(), n.start_ms), (1, 6_000));
        let again = written(init(Some(&c), (-1, -1)));
        assert_eq!((again.producer_id, again.producer_epoch), (101, 1));
        assert_eq!(add_partitions(&again, 101, 0, &[tp("a", 0)], 7_000), Err(ResponseError::ProducerFenced));
        assert_eq!(end_txn(&again, 999, 1, true, 7_000), Err(ResponseError::InvalidProducerIdMapping));
    }

    #[test]
    fn a_new_incarnation_aborts_the_open_transaction_under_a_bumped_epoch() {
        let m = written(init(None, (-1, -1)));
        let m = add_partitions(&m, 101, 0, &[tp("a", 0)], 2_000).unwrap().unwrap();
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
        let m = add_partitions(&m, 101, 0, &[tp("a", 0)], 2_000).unwrap().unwrap();
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
        let ongoing = add_partitions(&m, 101, 0, &[tp("a", 0)], 1_000).unwrap().unwrap();
        assert!(!expired_id(&ongoing, 1_000_000, 500), "an ongoing transaction is aborted by its timeout, not forgotten");
        let End::Prepare(p) = end_txn(&ongoing, 101, 0, true, 1_000).unwrap() else { panic!() };
        assert!(!expired_id(&p, 1_000_000, 500));
        assert!(expired_id(&complete(&p, 1_000), 1_000_000, 500));
    }

    #[test]
    fn records_round_trip_in_kafkas_version_0_layout() {
        let m = TxnMeta {
            producer_id: 4242,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: [tp("a", 2), tp("a", 0), tp("b", 1)].into_iter().collect(),
            start_ms: 10,
            last_update_ms: 20,
        };
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
