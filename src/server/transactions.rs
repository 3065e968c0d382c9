//! The transaction coordinators of a core: the transactional ids whose `__transaction_state`
//! partition this core owns (and this broker leads), each a [`TxnMeta`] moved by the rules of
//! [`crate::coordinator::transaction`], and the markers that end their transactions.
//!
//! Every state change is appended to the id's `__transaction_state` partition (Kafka's records)
//! and, in a cluster, replicated to the in-sync replicas before it takes effect or is answered.
//! While one is being written the id is busy: another request for it gets
//! CONCURRENT_TRANSACTIONS, which clients retry. A Prepare state, once written, is completed by a
//! task that writes the COMMIT or ABORT marker to every partition of the transaction (on this
//! broker through the owning core, on another with WriteTxnMarkers) and then writes the Complete
//! state. Loading a partition (at start, or when its leadership comes here) resumes the
//! markers of every transaction left in a Prepare state, so an EndTxn that was answered is
//! completed after any crash.
//!
//! Transactional offset commits (TxnOffsetCommit) live with the group (`server::groups`); the
//! marker written to a `__consumer_offsets` partition makes them committed or drops them.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use kafka_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, ApiKey, ProducerId, RequestHeader, ResponseHeader, TopicName, TransactionalId, WriteTxnMarkersRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request};

use super::groups::{append_coordinator_batch, ensure_internal_topic, kafka_partition_of, replay_written, OFFSETS_TOPIC};
use super::handlers::{on_partitions, PartWork};
use super::shard::{current, Shard};
use crate::coordinator::transaction::{self as txn, End, Init, TxnMeta, TxnState};
use crate::io::net::PeerConn;
use crate::io::rt;
use crate::protocol::batch::{self, Marker};
use crate::protocol::{ResponseError, StrBytes};
use crate::storage::now_ms;
use crate::sync::Notify;

/// The internal topic holding the transaction coordinators' state.
pub const TXN_TOPIC: &str = "__transaction_state";

/// Partitions of `__transaction_state` (Kafka's `transaction.state.log.num.partitions`).
pub const TXN_PARTITIONS: i32 = 50;

/// How long AddPartitionsToTxn waits for the previous transaction's markers before answering
/// CONCURRENT_TRANSACTIONS. Clients back off 100 ms on that answer (librdkafka's
/// `retry.backoff.ms`), many times what the markers take, so waiting here is what lets a
/// producer commit more than ten transactions a second.
const PREVIOUS_TXN_WAIT: Duration = Duration::from_secs(1);

/// How long a marker write to another broker may take before it is tried again.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// Between rounds of markers that could not all be written (a partition without a leader, a
/// broker down).
const MARKER_RETRY: Duration = Duration::from_millis(200);

/// WriteTxnMarkers version sent to other brokers.
const WRITE_TXN_MARKERS_VERSION: i16 = 1;

/// The `__transaction_state` partition of a transactional id (Kafka's hash, as for groups).
pub fn txn_partition(transactional_id: &str) -> i32 {
    kafka_partition_of(transactional_id, TXN_PARTITIONS)
}

/// The core that coordinates a transactional id: the owner of its `__transaction_state`
/// partition.
pub fn txn_core(transactional_id: &str, cores: usize) -> usize {
    super::metadata::owner_core(TXN_TOPIC, txn_partition(transactional_id), cores)
}

/// NOT_COORDINATOR when another broker (or nobody) leads the id's `__transaction_state`
/// partition, or, in a cluster, while this broker's image has no such topic yet (see
/// `groups::coordinator_elsewhere`, the same reasoning).
pub fn coordinator_elsewhere(shard: &Shard, transactional_id: &str) -> Option<i16> {
    let image = shard.image();
    let Some(t) = image.topic(TXN_TOPIC) else {
        return image.cluster.is_some().then_some(ResponseError::NotCoordinator.code());
    };
    (!image.leads(t, txn_partition(transactional_id))).then_some(ResponseError::NotCoordinator.code())
}

/// Creates `__transaction_state` on first use (FindCoordinator for a transactional id).
pub async fn ensure_txn_topic(shard: &Shard) -> Result<(), i16> {
    let rf = shard.config.transaction_state_log_replication_factor;
    ensure_internal_topic(shard, TXN_TOPIC, TXN_PARTITIONS, rf, "transaction_state_log_replication_factor").await
}


/// Counters for `/metrics`, since start.
#[derive(Debug, Default, Clone, Copy)]
pub struct TxnCounts {
    pub committed: u64,
    pub aborted: u64,
    pub timed_out: u64,
}

/// This core's transaction coordinators. Owned by one core.
#[derive(Default)]
pub struct Transactions {
    entries: RefCell<HashMap<String, TxnMeta>>,
    /// Ids with a state write in flight: other requests for them get CONCURRENT_TRANSACTIONS
    /// until it ends (Kafka's pending state).
    busy: RefCell<HashSet<String>>,
    counts: Cell<TxnCounts>,
    /// Woken whenever an id's state write ends (among them a transaction's Complete state).
    changed: Notify,
}

/// Clears an id's busy flag when a state write ends, however it ends.
struct Busy<'a> {
    txns: &'a Transactions,
    id: &'a str,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.txns.busy.borrow_mut().remove(self.id);
        self.txns.changed.notify_all();
    }
}

/// One transaction as DescribeTransactions and `spate txn` show it.
#[derive(Debug, Clone)]
pub struct Described {
    pub transactional_id: String,
    pub meta: TxnMeta,
}

impl Transactions {
    /// Marks `id` busy, or CONCURRENT_TRANSACTIONS if it already is.
    fn take<'a>(&'a self, id: &'a str) -> Result<Busy<'a>, i16> {
        if !self.busy.borrow_mut().insert(id.to_string()) {
            return Err(ResponseError::ConcurrentTransactions.code());
        }
        Ok(Busy { txns: self, id })
    }

    fn meta(&self, id: &str) -> Option<TxnMeta> {
        self.entries.borrow().get(id).cloned()
    }

    /// Writes `next` as `id`'s state; on success it takes effect.
    async fn write(&self, id: &str, next: TxnMeta) -> Result<(), i16> {
        append_state(id, Some(&next)).await?;
        self.entries.borrow_mut().insert(id.to_string(), next);
        Ok(())
    }

    /// InitProducerId with a transactional id: (producer id, epoch) or the error code.
    pub async fn init_producer_id(&self, id: &str, timeout_ms: i32, expected: (i64, i16)) -> Result<(i64, i16), i16> {
        let shard = current();
        let busy = self.take(id)?;
        let current = self.meta(id);
        let max = shard.config.transaction_max_timeout_ms;
        let step = txn::init_producer_id(current.as_ref(), timeout_ms, max, expected, now_ms(), &mut super::handlers::init_producer_id::next_id)
            .map_err(|e| e.code())?;
        match step {
            Init::Write(next) => {
                let answer = (next.producer_id, next.producer_epoch);
                self.write(id, next).await?;
                drop(busy);
                tracing::info!(transactional_id = %id, producer_id = answer.0, epoch = answer.1, "transactional producer initialized");
                Ok(answer)
            }
            Init::FenceAndAbort(next) => {
                self.write(id, next.clone()).await?;
                drop(busy);
                tracing::info!(transactional_id = %id, producer_id = next.producer_id, epoch = next.producer_epoch, "a new incarnation fences the open transaction; aborting it");
                self.spawn_markers(id, next);
                Err(ResponseError::ConcurrentTransactions.code())
            }
        }
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: one code for all of `partitions`. While the
    /// producer's previous transaction is being completed, waits for it (up to
    /// [`PREVIOUS_TXN_WAIT`]) rather than answering CONCURRENT_TRANSACTIONS at once.
    /// `version2`: added by a partition leader or group coordinator for a client of transaction
    /// version 2.
    pub async fn add_partitions(&self, id: &str, producer_id: i64, epoch: i16, partitions: Vec<(String, i32)>, version2: bool) -> Result<(), i16> {
        let deadline = std::time::Instant::now() + PREVIOUS_TXN_WAIT;
        let (busy, m) = loop {
            let busy = self.take(id);
            let m = self.meta(id);
            let completing = busy.is_err() || m.as_ref().is_some_and(|m| m.state.is_prepare() && txn::after_completion(m) == (producer_id, epoch));
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !completing || left.is_zero() {
                break (busy?, m);
            }
            drop(busy);
            let _ = rt::timeout(left, self.changed.wait()).await;
        };
        let Some(m) = m else { return Err(ResponseError::InvalidProducerIdMapping.code()) };
        if let Some(next) = txn::add_partitions(&m, producer_id, epoch, &partitions, version2, now_ms()).map_err(|e| e.code())? {
            self.write(id, next).await?;
        }
        drop(busy);
        Ok(())
    }

    /// KIP-890 part 1: may a transactional batch of this producer go to `partition`?
    pub fn verify(&self, id: &str, producer_id: i64, epoch: i16, partition: &(String, i32)) -> Result<(), i16> {
        let Some(m) = self.meta(id) else { return Err(ResponseError::InvalidProducerIdMapping.code()) };
        txn::verify(&m, producer_id, epoch, partition).map_err(|e| e.code())
    }

    /// EndTxn: answered once the Prepare state is written; the markers follow. The answer is
    /// the producer id and epoch the producer goes on with (transaction version 2 bumps it).
    pub async fn end_txn(&self, id: &str, producer_id: i64, epoch: i16, commit: bool, version2: bool) -> Result<(i64, i16), i16> {
        let busy = self.take(id)?;
        let Some(m) = self.meta(id) else { return Err(ResponseError::InvalidProducerIdMapping.code()) };
        let step = txn::end_txn(&m, producer_id, epoch, commit, version2, now_ms(), &mut super::handlers::init_producer_id::next_id)
            .map_err(|e| e.code())?;
        match step {
            End::Done(pid, epoch) => Ok((pid, epoch)),
            End::Prepare(next) => {
                let answer = txn::after_completion(&next);
                self.write(id, next.clone()).await?;
                drop(busy);
                self.spawn_markers(id, next);
                Ok(answer)
            }
            End::Complete(next) => {
                let answer = (next.producer_id, next.producer_epoch);
                self.write(id, next).await?;
                drop(busy);
                self.bump(|c| c.aborted += 1);
                Ok(answer)
            }
        }
    }

    /// Aborts the ongoing transactions past their timeout (each under a bumped epoch).
    pub async fn abort_expired(&self) {
        let now = now_ms();
        let due: Vec<(String, TxnMeta)> = self
            .entries
            .borrow()
            .iter()
            .filter_map(|(id, m)| txn::expire(m, now).map(|next| (id.clone(), next)))
            .collect();
        for (id, next) in due {
            let Ok(busy) = self.take(&id) else { continue };
            if self.write(&id, next.clone()).await.is_err() {
                continue;
            }
            drop(busy);
            tracing::info!(transactional_id = %id, producer_id = next.producer_id, timeout_ms = next.timeout_ms, "aborting a transaction open past its timeout");
            self.bump(|c| c.timed_out += 1);
            self.spawn_markers(&id, next);
        }
    }

    /// Forgets the transactional ids idle longer than `expiration_ms` with no transaction under
    /// way ([`txn::expired_id`]): a tombstone in `__transaction_state` first, then memory. The
    /// id's next InitProducerId starts afresh with a new producer id.
    pub async fn expire_ids(&self, expiration_ms: i64) {
        let now = now_ms();
        let due: Vec<String> = self.entries.borrow().iter().filter(|(_, m)| txn::expired_id(m, now, expiration_ms)).map(|(id, _)| id.clone()).collect();
        for id in due {
            let Ok(busy) = self.take(&id) else { continue };
            // Looked at again under the busy mark: a request may have used it meanwhile.
            if !self.meta(&id).is_some_and(|m| txn::expired_id(&m, now_ms(), expiration_ms)) {
                continue;
            }
            if append_state(&id, None).await.is_err() {
                continue;
            }
            self.entries.borrow_mut().remove(&id);
            drop(busy);
            tracing::info!(transactional_id = %id, "transactional id expired (transactional.id.expiration.ms)");
        }
    }

    fn bump(&self, f: impl FnOnce(&mut TxnCounts)) {
        let mut c = self.counts.get();
        f(&mut c);
        self.counts.set(c);
    }

    /// Writes the markers of a Prepare state, then its Complete state, in a task of this core.
    fn spawn_markers(&self, id: &str, prepared: TxnMeta) {
        let id = id.to_string();
        rt::spawn(async move { current().transactions.finish(&id, prepared).await }).detach();
    }

    /// Whether `id` is still in the `prepared` state here: not forgotten (leadership of its
    /// partition left), reloaded or completed meanwhile.
    fn still_prepared(&self, id: &str, prepared: &TxnMeta) -> bool {
        self.entries.borrow().get(id) == Some(prepared)
    }

    /// Writes the markers of `prepared` to every partition of its transaction, trying again
    /// until each is written or its partition is gone, then the Complete state. Gives up when
    /// this broker stops coordinating the id (the next coordinator resumes from the log). A
    /// partition loaded as its leadership comes here is loaded before the image that shows it
    /// is installed: until then the markers wait.
    async fn finish(&self, id: &str, prepared: TxnMeta) {
        let shard = current();
        let commit = prepared.state == TxnState::PrepareCommit;
        let mut left: Vec<(String, i32)> = prepared.partitions.iter().cloned().collect();
        let mut rounds = 0u32;
        loop {
            if !self.still_prepared(id, &prepared) || shard.lifecycle.is_stopping() {
                tracing::info!(transactional_id = %id, "no longer completing this transaction here; its markers are left to its coordinator");
                return;
            }
            if coordinator_elsewhere(&shard, id).is_some() {
                rounds += 1;
                rt::sleep(MARKER_RETRY).await;
                continue;
            }
            if !left.is_empty() {
                let coordinator_epoch = coordinator_epoch(&shard, id);
                let marker = Marker { commit, coordinator_epoch };
                let results = write_markers(&shard, prepared.producer_id, prepared.producer_epoch, marker, left.clone()).await;
                let image = shard.image();
                left = results
                    .into_iter()
                    .filter(|(tp, code)| {
                        let done = *code == 0
                            // A deleted topic takes its transaction's records with it. (One the
                            // image still has is not open yet on its core, as at start-up when a
                            // coordinator resumes its markers before every core has opened its
                            // partitions: asked again.)
                            || (*code == ResponseError::UnknownTopicOrPartition.code()
                                && image.topic(&tp.0).is_none_or(|t| tp.1 >= t.partitions))
                            // A newer epoch or coordinator has written its own marker there.
                            || *code == ResponseError::InvalidProducerEpoch.code()
                            || *code == ResponseError::TransactionCoordinatorFenced.code();
                        if *code != 0 && (done || rounds % 50 == 0) {
                            tracing::warn!(transactional_id = %id, topic = %tp.0, partition = tp.1, code, "transaction marker not written");
                        }
                        !done
                    })
                    .map(|(tp, _)| tp)
                    .collect();
            }
            if left.is_empty() {
                let Ok(busy) = self.take(id) else {
                    rt::sleep(MARKER_RETRY).await;
                    continue;
                };
                if !self.still_prepared(id, &prepared) {
                    return;
                }
                let done = txn::complete(&prepared, now_ms());
                if self.write(id, done).await.is_ok() {
                    drop(busy);
                    self.bump(|c| if commit { c.committed += 1 } else { c.aborted += 1 });
                    tracing::debug!(transactional_id = %id, commit, "transaction complete");
                    return;
                }
            }
            rounds += 1;
            rt::sleep(MARKER_RETRY).await;
        }
    }

    /// Loads the transactional ids of `__transaction_state` partition `p` (this core owns it and
    /// this broker leads it) and resumes the markers of those left in a Prepare state. Returns
    /// how many records were read.
    pub async fn load(&self, shard: &Shard, p: i32) -> Result<usize, String> {
        let Some(log) = shard.partition(TXN_TOPIC, p) else { return Ok(0) };
        let mut read = 0;
        let mut found: BTreeMap<String, Option<TxnMeta>> = BTreeMap::new();
        replay_written(&log, TXN_TOPIC, p, |bytes, h| {
            let Some(kvs) = batch::key_values(bytes, h) else { return };
            for (k, v) in kvs {
                let Some(id) = k.as_deref().and_then(txn::decode_key) else { continue };
                read += 1;
                match v.as_deref().map(txn::decode_value) {
                    None => {
                        found.insert(id, None);
                    }
                    Some(Some(m)) => {
                        found.insert(id, Some(m));
                    }
                    Some(None) => tracing::warn!(transactional_id = %id, "unreadable {TXN_TOPIC} record skipped"),
                }
            }
        })
        .await?;
        let mut resume = Vec::new();
        {
            let mut entries = self.entries.borrow_mut();
            for (id, m) in found {
                match m {
                    Some(mut m) => {
                        if m.state == TxnState::PrepareEpochFence {
                            m.state = TxnState::PrepareAbort;
                        }
                        if m.state.is_prepare() {
                            resume.push((id.clone(), m.clone()));
                        }
                        entries.insert(id, m);
                    }
                    None => {
                        entries.remove(&id);
                    }
                }
            }
        }
        for (id, m) in resume {
            tracing::info!(transactional_id = %id, state = m.state.name(), "resuming the markers of a transaction left prepared");
            rt::spawn(async move { current().transactions.finish(&id, m).await }).detach();
        }
        Ok(read)
    }

    /// Forgets the ids of `__transaction_state` partition `p` (this broker no longer leads it,
    /// or is about to load it afresh). Their marker tasks notice and stop.
    pub fn forget_partition(&self, p: i32) -> usize {
        let mut entries = self.entries.borrow_mut();
        let before = entries.len();
        entries.retain(|id, _| txn_partition(id) != p);
        before - entries.len()
    }

    /// Every transactional id this core coordinates, with its state.
    pub fn list(&self) -> Vec<Described> {
        let mut out: Vec<Described> = self
            .entries
            .borrow()
            .iter()
            .map(|(id, m)| Described { transactional_id: id.clone(), meta: m.clone() })
            .collect();
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        out
    }

    pub fn describe(&self, id: &str) -> Option<Described> {
        self.meta(id).map(|meta| Described { transactional_id: id.to_string(), meta })
    }

    /// (ongoing transactions, counters since start), for metrics.
    pub fn metrics_snapshot(&self) -> (usize, TxnCounts) {
        let open = self.entries.borrow().values().filter(|m| m.state == TxnState::Ongoing || m.state.is_prepare()).count();
        (open, self.counts.get())
    }
}

/// KIP-890, at a partition's leader (or a group's coordinator, for `__consumer_offsets`):
/// asks the coordinator of `id` (on this broker through its core, on another with
/// AddPartitionsToTxn v5) whether `topic` `partition` is in producer `producer_id`'s ongoing
/// transaction at `epoch` (part 1, `add` false: `verify_only`), or adds it there (part 2, for
/// clients of transaction version 2, which leave that to the broker).
pub async fn check_partition(shard: &Rc<Shard>, id: &str, producer_id: i64, epoch: i16, topic: &str, partition: i32, add: bool) -> Result<(), i16> {
    let tp = (topic.to_string(), partition);
    let image = shard.image();
    let Some(t) = image.topic(TXN_TOPIC) else { return Err(ResponseError::InvalidTxnState.code()) };
    let p = txn_partition(id);
    if image.leads(t, p) {
        let id = id.to_string();
        return shard
            .invoke_on(txn_core(&id, shard.cores), move || async move {
                let txns = &current().transactions;
                if add {
                    txns.add_partitions(&id, producer_id, epoch, vec![tp], true).await
                } else {
                    txns.verify(&id, producer_id, epoch, &tp)
                }
            })
            .await;
    }
    let Some(addr) = image.broker(image.leader(t, p)).map(|b| format!("{}:{}", b.host, b.port)) else {
        return Err(ResponseError::NotEnoughReplicas.code());
    };
    let req = AddPartitionsToTxnRequest::default().with_transactions(vec![AddPartitionsToTxnTransaction::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(id.to_string())))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_verify_only(!add)
        .with_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![partition])])]);
    let client_id = format!("spate-partition-leader-{}", shard.config.node_id);
    let resp = call_peer(&addr, if add { 5 } else { 4 }, &req, &client_id).await.map_err(|e| {
        tracing::debug!(%addr, error = %e, "transaction verification with the coordinator failed");
        ResponseError::NotEnoughReplicas.code()
    })?;
    if resp.error_code != 0 {
        return Err(resp.error_code);
    }
    let code = resp
        .results_by_transaction
        .iter()
        .flat_map(|r| r.topic_results.iter())
        .flat_map(|t| t.results_by_partition.iter())
        .map(|p| p.partition_error_code)
        .next()
        .unwrap_or(ResponseError::InvalidTxnState.code());
    if code == 0 {
        Ok(())
    } else {
        Err(code)
    }
}

/// Appends `id`'s state record (`None`: its tombstone) to its `__transaction_state` partition,
/// durably and to the in-sync replicas.
async fn append_state(id: &str, state: Option<&TxnMeta>) -> Result<(), i16> {
    let record = [(Some(Bytes::from(txn::encode_key(id))), state.map(|m| Bytes::from(txn::encode_value(m))))];
    append_coordinator_batch(TXN_TOPIC, txn_partition(id), batch::build(&record, now_ms()), id).await
}

/// The coordinator epoch markers carry: the leader epoch of the id's `__transaction_state`
/// partition, so a marker from a coordinator that has lost it is refused by the partitions.
fn coordinator_epoch(shard: &Shard, id: &str) -> i32 {
    let image = shard.image();
    image.topic(TXN_TOPIC).map_or(0, |t| image.leader_epoch(t, txn_partition(id)).max(0))
}

/// Writes a marker of producer `producer_id` at `epoch` to each of `partitions`, wherever their
/// leaders are; each partition's error code (0: written and replicated).
pub async fn write_markers(shard: &Rc<Shard>, producer_id: i64, epoch: i16, marker: Marker, partitions: Vec<(String, i32)>) -> Vec<((String, i32), i16)> {
    let image = shard.image();
    let mut here = Vec::new();
    let mut by_broker: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
    let mut out = Vec::new();
    for tp in partitions {
        match image.topic(&tp.0) {
            None => out.push((tp, ResponseError::UnknownTopicOrPartition.code())),
            Some(t) if image.leads(t, tp.1) => here.push(tp),
            Some(t) => by_broker.entry(image.leader(t, tp.1)).or_default().push(tp),
        }
    }
    out.extend(write_markers_here(shard, producer_id, epoch, marker, here).await);
    for (broker, tps) in by_broker {
        let Some(addr) = image.broker(broker).map(|b| format!("{}:{}", b.host, b.port)) else {
            out.extend(tps.into_iter().map(|tp| (tp, ResponseError::NotLeaderOrFollower.code())));
            continue;
        };
        out.extend(send_markers(shard, &addr, producer_id, epoch, marker, tps).await);
    }
    out
}

/// Writes markers to partitions this broker leads, each on its owning core, durably and to the
/// in-sync replicas (what WriteTxnMarkers does on the receiving broker). A marker written to a
/// `__consumer_offsets` partition also settles the producer's transactional offsets there.
pub async fn write_markers_here(shard: &Rc<Shard>, producer_id: i64, epoch: i16, marker: Marker, partitions: Vec<(String, i32)>) -> Vec<((String, i32), i16)> {
    let work: Vec<_> = partitions
        .iter()
        .enumerate()
        .map(|(slot, (t, p))| PartWork { slot, topic: t.clone(), partition: *p, data: (t.clone(), *p) })
        .collect();
    let results = on_partitions(shard, work, move |log, (topic, partition): (String, i32)| async move {
        let s = current();
        let image = s.image();
        if !image.topic(&topic).is_some_and(|t| image.leads(t, partition)) {
            return ResponseError::NotLeaderOrFollower.code();
        }
        let b = batch::build_marker(producer_id, epoch, marker, now_ms());
        let h = batch::validate(&b).expect("a marker the broker built is valid");
        let leading = s.replication.leading_epoch(&topic, partition);
        let appended = match log.append(&[(b, h)], true).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(%topic, partition, producer_id, error = %e, "writing a transaction marker failed");
                return super::handlers::log_error_code(&e).code();
            }
        };
        if topic == OFFSETS_TOPIC {
            s.groups.complete_txn_offsets(partition, producer_id, marker.commit);
        }
        match super::replication::wait_for_isr(&s, &topic, partition, &log, appended.end, leading, 30_000).await {
            Ok(()) => 0,
            Err((code, _)) => code.code(),
        }
    })
    .await;
    let mut codes = vec![ResponseError::UnknownTopicOrPartition.code(); partitions.len()];
    for (slot, r) in results {
        if let Some(code) = r {
            codes[slot] = code;
        }
    }
    partitions.into_iter().zip(codes).collect()
}

/// Sends WriteTxnMarkers to the broker at `addr` for partitions it leads.
async fn send_markers(shard: &Shard, addr: &str, producer_id: i64, epoch: i16, marker: Marker, partitions: Vec<(String, i32)>) -> Vec<((String, i32), i16)> {
    let mut topics: Vec<WritableTxnMarkerTopic> = Vec::new();
    for (t, p) in &partitions {
        match topics.iter_mut().find(|x| x.name.0.as_str() == t) {
            Some(x) => x.partition_indexes.push(*p),
            None => topics.push(WritableTxnMarkerTopic::default().with_name(TopicName(StrBytes::from_string(t.clone()))).with_partition_indexes(vec![*p])),
        }
    }
    let req = WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_transaction_result(marker.commit)
        .with_coordinator_epoch(marker.coordinator_epoch)
        .with_topics(topics)]);
    let client_id = format!("spate-txn-coordinator-{}", shard.config.node_id);
    let mut codes: HashMap<(String, i32), i16> = HashMap::new();
    match call_peer(addr, WRITE_TXN_MARKERS_VERSION, &req, &client_id).await {
        Ok(resp) => {
            for m in resp.markers {
                for t in m.topics {
                    for p in t.partitions {
                        codes.insert((t.name.0.to_string(), p.partition_index), p.error_code);
                    }
                }
            }
        }
        Err(e) => tracing::debug!(%addr, error = %e, "WriteTxnMarkers to another broker failed"),
    }
    partitions
        .into_iter()
        .map(|tp| {
            let code = codes.get(&tp).copied().unwrap_or(ResponseError::NotLeaderOrFollower.code());
            (tp, code)
        })
        .collect()
}

/// One request to another broker on a connection of its own, answered within [`PEER_TIMEOUT`].
pub(super) async fn call_peer<Q: Request>(addr: &str, version: i16, req: &Q, client_id: &str) -> Result<Q::Response, String> {
    let key = ApiKey::try_from(Q::KEY).map_err(|_| format!("unknown API key {}", Q::KEY))?;
    let header = RequestHeader::default()
        .with_request_api_key(Q::KEY)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, key.request_header_version(version)).map_err(|e| e.to_string())?;
    req.encode(&mut buf, version).map_err(|e| e.to_string())?;
    let exchange = async {
        let mut conn = PeerConn::connect(addr, PEER_TIMEOUT).await?;
        conn.send(&buf).await?;
        conn.recv(crate::config::limits::REQUEST_FRAME_MAX_BYTES).await
    };
    let body = rt::timeout(PEER_TIMEOUT, exchange)
        .await
        .ok_or_else(|| format!("no answer from {addr} in {PEER_TIMEOUT:?}"))?
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut b = Bytes::from(body);
    let h = ResponseHeader::decode(&mut b, key.response_header_version(version)).map_err(|e| e.to_string())?;
    if h.correlation_id != 1 {
        return Err(format!("{addr} answered correlation id {}", h.correlation_id));
    }
    Q::Response::decode(&mut b, version).map_err(|e| e.to_string())
}
