//! Replicated partitions (issue 22): Kafka's replication protocol, on the cores that own the
//! partitions.
//!
//! **Followers fetch.** Each core runs one fetcher task per remote broker that leads a
//! partition this core follows ([`run_fetcher`]); it keeps one connection to that broker
//! ([`crate::io::net::PeerConn`]) and sends Kafka Fetch requests (v12) with this broker's id as
//! `replica_id`, every such partition of the core in one request, each at its log end with the
//! epoch of its last record (`last_fetched_epoch`). The batches that come back are appended as
//! they are (`PartitionLog::append_replica`, fdatasync'd under the default flush policy), so
//! the next fetch's offset tells the leader they are safe here; the high watermark the leader
//! reports becomes the follower's.
//!
//! **Leaders track.** A follower's Fetch lands, like a client's, on the core owning the
//! partition ([`handle_fetch`]): the leader first checks the follower's log against its epoch
//! cache (KIP-595's divergence check: the fetch names the epoch of the follower's last record;
//! if that epoch ended earlier here, or never existed, the answer is the diverging epoch and
//! its end instead of records, and the follower cuts its log there (`cut_for_reopen`) before
//! fetching again), then records the follower's log end ([`Leader`]) and moves the high
//! watermark to the smallest log end in the ISR, which wakes acks=all produces waiting for it
//! ([`wait_for_isr`]) and consumers waiting for data.
//!
//! **ISR.** A follower that has not caught up with the leader's log end for
//! `replica_lag_time_max_ms` leaves the ISR, and one whose log end reached the high watermark
//! joins it again: the leader proposes an `AlterPartition` record to the metadata quorum (one at
//! a time per partition), which refuses it if the leadership or the partition epoch moved on.
//! Fencing a broker takes it out of every ISR at once (`controller::metadata`), so a dead
//! follower holds acks=all back for at most the broker session timeout.
//!
//! A partition with one replica (and every partition of a single node) has no [`Leader`]
//! entry: its high watermark is what is written, as before.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{EpochEndOffset, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable};
use uuid::Uuid;

use super::metadata::MetadataImage;
use super::shard::{current, Shard};
use crate::controller::MetadataRecord;
use crate::io::net::PeerConn;
use crate::io::rt;
use crate::protocol::{batch, ResponseError, StrBytes};
use crate::storage::log::PartitionLog;
use crate::storage::now_ms;

/// The Fetch version followers send: replica id in the request body, `last_fetched_epoch`,
/// and the diverging epoch in the answer (v12, Kafka 2.7).
const REPLICA_FETCH_VERSION: i16 = 12;
/// How long a follower's fetch waits at the leader for new data.
const REPLICA_FETCH_WAIT_MS: i32 = 500;
/// Most bytes per partition and per response of one replica fetch (Kafka's
/// `replica.fetch.max.bytes` and `replica.fetch.response.max.bytes`).
const REPLICA_FETCH_PARTITION_MAX_BYTES: i32 = 1 << 20;
const REPLICA_FETCH_RESPONSE_MAX_BYTES: i32 = 10 << 20;
/// Bounds on the connection to a leader: connecting, and one fetch's answer.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const PEER_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
const PEER_RESPONSE_MAX_BYTES: usize = 64 << 20;
/// Pause after a failed connection or fetch before trying again.
const FETCH_RETRY: Duration = Duration::from_millis(200);
/// An AlterPartition not answered within this long may be proposed again.
const ALTER_PARTITION_WAIT_MS: i64 = 5_000;

type Key = (String, i32);

/// A follower's progress as its leader sees it.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The offset of its last fetch: what it holds (durably, by the default flush policy).
    log_end: i64,
    last_fetch_ms: i64,
    /// When its log end last reached the leader's (Kafka's lastCaughtUpTimeMs).
    last_caught_up_ms: i64,
    /// The leader's log end when it answered the follower's previous fetch.
    leader_end_at_last_fetch: i64,
}

/// A partition this core leads that has other replicas.
#[derive(Debug)]
struct Leader {
    topic_id: Uuid,
    leader_epoch: i32,
    partition_epoch: i32,
    isr: Vec<i32>,
    replicas: Vec<i32>,
    /// Followers by broker id; one not heard from since this leadership began is absent.
    followers: HashMap<i32, Progress>,
    since_ms: i64,
    /// When the AlterPartition in flight was proposed.
    altering_since: Option<i64>,
}

/// A partition this core follows: its leader (-1: none now) and leader epoch, and whether a
/// reassignment is adding this replica (then the follower throttle applies to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Following {
    leader: i32,
    leader_epoch: i32,
    throttled: bool,
}

/// A byte rate, per core: what throttled replicas may copy. A bucket that drains at the rate:
/// a read may run over (it returns whole batches, and a batch can be a megabyte), and what it
/// ran over is owed, so over time the copy keeps to the rate.
#[derive(Default)]
struct Throttle {
    last_ms: std::cell::Cell<i64>,
    used: std::cell::Cell<u64>,
}

impl Throttle {
    /// Bytes that may be copied now at `rate` per second: up to one second's worth, less what
    /// is still owed.
    fn room(&self, rate: u64) -> u64 {
        let now = now_ms();
        let drained = rate.saturating_mul((now - self.last_ms.get()).max(0) as u64) / 1000;
        self.last_ms.set(now);
        self.used.set(self.used.get().saturating_sub(drained));
        rate.saturating_sub(self.used.get())
    }

    fn spend(&self, bytes: u64) {
        self.used.set(self.used.get() + bytes);
    }
}

/// A replication throttle rate from the dynamic broker configs (Kafka's
/// `leader.replication.throttled.rate` / `follower.replication.throttled.rate`, bytes per second
/// for the whole broker), as this core's share; None when not set.
fn throttle_rate(shard: &Shard, image: &MetadataImage, key: &str) -> Option<u64> {
    let rate: u64 = image.broker.effective().get(key)?.trim().parse().ok()?;
    Some((rate / shard.cores.max(1) as u64).max(1))
}

/// Whether the replication of `topic`-`p` into `replica` is throttled: the replica is being
/// added by a reassignment, or the topic's `*.replication.throttled.replicas` (as Kafka's
/// reassignment tool sets them) name it: `follower` on the follower side (the follower's own
/// entry), else on the leader side (`leader`'s entry, the leader being this broker).
fn throttled(image: &MetadataImage, topic: &str, p: i32, replica: i32, leader: Option<i32>) -> bool {
    let adding = image.cluster.as_ref().is_some_and(|c| c.reassignments.iter().any(|r| r.topic == topic && r.partition == p && r.adding().contains(&replica)));
    let named = image.topic(topic).is_some_and(|t| match leader {
        None => crate::config::TopicConfig::names_replica(&t.config.follower_throttled_replicas, p, replica),
        Some(l) => crate::config::TopicConfig::names_replica(&t.config.leader_throttled_replicas, p, l),
    });
    adding || named
}

/// One core's replication state (in its [`Shard`]).
#[derive(Default)]
pub struct Replication {
    /// What throttled replicas copied this second, as leader and as follower.
    leader_throttle: Throttle,
    follower_throttle: Throttle,
    leading: RefCell<HashMap<Key, Leader>>,
    following: RefCell<HashMap<Key, Following>>,
    /// Woken when `following` changes, so idle fetchers look again.
    following_changed: crate::sync::Notify,
    /// Remote brokers this core runs a fetcher for.
    fetchers: RefCell<HashSet<i32>>,
    /// Partitions being cut back (a fetcher reopening their log): no second cut starts.
    cutting: RefCell<HashSet<Key>>,
}

/// The placement record of partition `p` of `topic` in `image`, in a cluster.
fn record<'a>(image: &'a MetadataImage, topic: &str, p: i32) -> Option<&'a crate::controller::PartitionRecord> {
    image.topic(topic).and_then(|t| usize::try_from(p).ok().and_then(|i| t.placement.get(i)))
}

impl Replication {
    /// Brings the leader and follower roles of this core's partitions in line with `image`
    /// (a cluster's; a single node's has no placement and nothing changes), and starts a
    /// fetcher for each leader broker that has none on this core. Synchronous, so it can run
    /// just before the image is installed.
    pub fn install(&self, shard: &Shard, image: &MetadataImage) {
        if image.cluster.is_none() {
            return;
        }
        let me = image.node_id;
        let now = now_ms();
        let mut leading = self.leading.borrow_mut();
        let mut following = self.following.borrow_mut();
        let mut keep_leading = HashSet::new();
        let mut keep_following = HashSet::new();
        for ((name, p), log) in shard.partitions_named() {
            let Some(t) = image.topic(&name) else { continue };
            let Some(rec) = usize::try_from(p).ok().and_then(|i| t.placement.get(i)) else { continue };
            let key = (name.clone(), p);
            if rec.leader == me {
                if rec.replicas.len() < 2 {
                    log.set_replicated_high_watermark(None);
                    continue;
                }
                keep_leading.insert(key.clone());
                let fresh = leading.get(&key).is_none_or(|l| l.leader_epoch != rec.leader_epoch || l.topic_id != t.id);
                if fresh {
                    // Until every in-sync follower has fetched once, the high watermark stays
                    // where it was: what the previous leader reported while this replica
                    // followed, or, on a log just opened (a restart), the log start, since
                    // what lies past the true high watermark may yet be cut.
                    if !log.has_replicated_high_watermark() {
                        log.set_replicated_high_watermark(Some(log.offsets().log_start));
                    }
                    tracing::info!(topic = %name, partition = p, epoch = rec.leader_epoch, isr = ?rec.isr, "leading a replicated partition");
                    leading.insert(
                        key.clone(),
                        Leader {
                            topic_id: t.id,
                            leader_epoch: rec.leader_epoch,
                            partition_epoch: rec.partition_epoch,
                            isr: rec.isr.clone(),
                            replicas: rec.replicas.clone(),
                            followers: HashMap::new(),
                            since_ms: now,
                            altering_since: None,
                        },
                    );
                } else if let Some(l) = leading.get_mut(&key) {
                    if l.partition_epoch != rec.partition_epoch {
                        l.altering_since = None;
                    }
                    l.partition_epoch = rec.partition_epoch;
                    l.isr = rec.isr.clone();
                    l.replicas = rec.replicas.clone();
                }
                if let Some(l) = leading.get(&key) {
                    advance_high_watermark(l, &log, me);
                }
            } else if rec.replicas.contains(&me) {
                keep_following.insert(key.clone());
                let f = Following { leader: rec.leader, leader_epoch: rec.leader_epoch, throttled: throttled(image, &name, p, me, None) };
                if following.insert(key.clone(), f) != Some(f) {
                    tracing::info!(topic = %name, partition = p, leader = rec.leader, epoch = rec.leader_epoch, "following");
                    if !log.has_replicated_high_watermark() {
                        log.set_replicated_high_watermark(Some(log.offsets().log_start));
                    }
                }
            }
        }
        leading.retain(|k, _| keep_leading.contains(k));
        following.retain(|k, _| keep_following.contains(k));
        let leaders: HashSet<i32> = following.values().map(|f| f.leader).filter(|l| *l >= 0 && *l != me).collect();
        drop((leading, following));
        for leader in leaders {
            if self.fetchers.borrow_mut().insert(leader) {
                tracing::debug!(core = shard.core, leader, "starting a replica fetcher");
                rt::spawn(run_fetcher(leader)).detach();
            }
        }
        self.following_changed.notify_all();
        // acks=all produces waiting on a partition whose ISR or leadership changed look again.
        shard.data_arrived.notify_all();
    }

    /// The leader epoch of a replicated partition this core leads (None: not one).
    pub fn leading_epoch(&self, topic: &str, p: i32) -> Option<i32> {
        self.leading.borrow().get(&(topic.to_string(), p)).map(|l| l.leader_epoch)
    }

    /// The ISR size of a replicated partition this core leads.
    fn isr_len(&self, topic: &str, p: i32) -> Option<usize> {
        self.leading.borrow().get(&(topic.to_string(), p)).map(|l| l.isr.len())
    }

    /// Every 100 ms (housekeeping): followers in the ISR that have not caught up for
    /// `replica_lag_time_max_ms` are proposed out of it.
    pub fn tick(&self, shard: &Shard) {
        let lag_max = shard.config.replica_lag_time_max_ms;
        let me = shard.config.node_id;
        let now = now_ms();
        let mut shrinks = Vec::new();
        for ((name, p), l) in self.leading.borrow().iter() {
            if l.altering_since.is_some_and(|s| now - s < ALTER_PARTITION_WAIT_MS) {
                continue;
            }
            let lagging: Vec<i32> = l
                .isr
                .iter()
                .copied()
                .filter(|r| *r != me)
                .filter(|r| now - l.followers.get(r).map_or(l.since_ms, |f| f.last_caught_up_ms) > lag_max)
                .collect();
            if !lagging.is_empty() {
                let isr: Vec<i32> = l.isr.iter().copied().filter(|r| !lagging.contains(r)).collect();
                tracing::warn!(topic = %name, partition = p, ?lagging, ?isr, lag_max_ms = lag_max, "followers fell behind; proposing a smaller ISR");
                shrinks.push(((name.clone(), *p), isr));
            }
        }
        for (key, isr) in shrinks {
            if self.propose_isr(shard, key, isr) {
                crate::metrics::isr_change(true);
            }
        }
    }

    /// Proposes `isr` for a partition this core leads, unless a proposal is in flight; returns
    /// whether it did. After a refusal the next may go a second later.
    fn propose_isr(&self, shard: &Shard, key: Key, isr: Vec<i32>) -> bool {
        let Some(link) = shard.cluster.clone() else { return false };
        let record = {
            let mut leading = self.leading.borrow_mut();
            let Some(l) = leading.get_mut(&key) else { return false };
            let now = now_ms();
            if l.altering_since.is_some_and(|s| now - s < ALTER_PARTITION_WAIT_MS) {
                return false;
            }
            l.altering_since = Some(now);
            MetadataRecord::AlterPartition {
                topic: key.0.clone(),
                id: l.topic_id,
                partition: key.1,
                leader: shard.config.node_id,
                leader_epoch: l.leader_epoch,
                partition_epoch: l.partition_epoch,
                isr,
            }
        };
        rt::spawn(async move {
            if let Err(e) = link.handle.propose(record).await {
                tracing::info!(topic = %key.0, partition = key.1, error = %e, "ISR change not made");
                // Tried again in a second (not at every tick while, say, the quorum is away).
                if let Some(l) = current().replication.leading.borrow_mut().get_mut(&key) {
                    l.altering_since = Some(now_ms() - ALTER_PARTITION_WAIT_MS + 1_000);
                }
            }
        })
        .detach();
        true
    }

    /// A partition's replication as this core sees it, for `/metrics` and `/v1/status`: as
    /// leader, its ISR and its followers' largest lag, in offsets behind what is written here
    /// and in time since they were last caught up; as follower, the ISR from `image`.
    pub fn stat(&self, shard: &Shard, image: &MetadataImage, topic: &str, p: i32) -> Option<crate::metrics::ReplicaStat> {
        let key = (topic.to_string(), p);
        let me = shard.config.node_id;
        if let Some(l) = self.leading.borrow().get(&key) {
            let end = shard.partition(topic, p).map_or(0, |log| log.offsets().written);
            let now = now_ms();
            let followers = l.replicas.iter().filter(|r| **r != me);
            let lag_offsets = followers.clone().map(|r| end - l.followers.get(r).map_or(0, |f| f.log_end)).max().unwrap_or(0).max(0);
            let lag_ms = followers.map(|r| now - l.followers.get(r).map_or(l.since_ms, |f| f.last_caught_up_ms)).max().unwrap_or(0).max(0);
            return Some(crate::metrics::ReplicaStat { leader: true, replicas: l.replicas.len(), isr: l.isr.len(), lag_offsets, lag_ms });
        }
        let rec = record(image, topic, p)?;
        (rec.replicas.len() > 1).then(|| crate::metrics::ReplicaStat {
            leader: rec.leader == me,
            replicas: rec.replicas.len(),
            isr: rec.isr.len(),
            lag_offsets: 0,
            lag_ms: 0,
        })
    }
}

/// Moves the leader's high watermark to the smallest log end among its in-sync followers
/// (the leader's own is the cap `PartitionLog` applies); with no follower in the ISR, what is
/// written here. Unchanged until every in-sync follower has fetched in this leadership.
fn advance_high_watermark(l: &Leader, log: &PartitionLog, me: i32) {
    let mut hw = i64::MAX;
    for r in l.isr.iter().filter(|r| **r != me) {
        match l.followers.get(r) {
            Some(f) => hw = hw.min(f.log_end),
            None => return,
        }
    }
    if hw == i64::MAX {
        log.set_replicated_high_watermark(None);
    } else {
        log.set_replicated_high_watermark(Some(hw));
    }
}

/// On the leader's owning core, after an append of a replicated partition that must wait for
/// its ISR (acks=all, and groups' `__consumer_offsets` writes): returns once the high
/// watermark reaches `end`. NOT_LEADER_OR_FOLLOWER if this broker stopped leading it at the
/// epoch it appended in (`epoch`, as [`Replication::leading_epoch`] gave before the append);
/// NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below `min.insync.replicas`
/// meanwhile; REQUEST_TIMED_OUT after `timeout_ms`. A partition with one replica returns at
/// once.
pub async fn wait_for_isr(
    shard: &Shard,
    topic: &str,
    p: i32,
    log: &PartitionLog,
    end: i64,
    epoch: Option<i32>,
    timeout_ms: i64,
) -> Result<(), (ResponseError, String)> {
    let Some(epoch) = epoch else { return Ok(()) };
    let deadline = now_ms() + timeout_ms.max(0);
    loop {
        if shard.replication.leading_epoch(topic, p) != Some(epoch) {
            return Err((ResponseError::NotLeaderOrFollower, format!("leadership of {topic}-{p} moved before the ISR had the records")));
        }
        if log.offsets().high_watermark >= end {
            return Ok(());
        }
        let min_isr = log.config().min_insync_replicas;
        if shard.replication.isr_len(topic, p).is_some_and(|n| (n as i64) < min_isr) {
            return Err((
                ResponseError::NotEnoughReplicasAfterAppend,
                format!("{topic}-{p}: the ISR shrank below min.insync.replicas {min_isr} after the append"),
            ));
        }
        let left = deadline - now_ms();
        if left <= 0 || shard.lifecycle.is_stopping() {
            return Err((ResponseError::RequestTimedOut, format!("{topic}-{p}: the in-sync replicas did not confirm within {timeout_ms} ms")));
        }
        let _ = rt::timeout(Duration::from_millis(left as u64), shard.data_arrived.wait()).await;
    }
}

/// NOT_ENOUGH_REPLICAS for an acks=all produce to a partition whose ISR (in `image`) is
/// smaller than its `min.insync.replicas`.
pub fn check_min_isr(image: &MetadataImage, topic: &str, p: i32) -> Result<(), (ResponseError, String)> {
    let (Some(t), Some(rec)) = (image.topic(topic), record(image, topic, p)) else { return Ok(()) };
    let min = t.config.min_insync_replicas;
    if (rec.isr.len() as i64) < min {
        return Err((
            ResponseError::NotEnoughReplicas,
            format!("{topic}-{p} has {} in-sync replica(s) {:?}, fewer than min.insync.replicas {min}", rec.isr.len(), rec.isr),
        ));
    }
    Ok(())
}

/// What a follower asked for one partition.
#[derive(Debug, Clone, Copy)]
struct Asked {
    fetch_offset: i64,
    last_fetched_epoch: i32,
    max_bytes: usize,
}

/// What the leader answers for one partition.
#[derive(Debug, Clone, Default)]
struct Answer {
    error: i16,
    high_watermark: i64,
    log_start: i64,
    records: Bytes,
    /// (epoch, end offset) where the follower's log diverges from this one's.
    diverging: Option<(i32, i64)>,
}

/// The leader's side of a follower's Fetch (`replica_id` >= 0): per partition on its owning
/// core, the divergence check, the follower's progress and the high watermark, then records up
/// to what is written here; waits up to `max_wait_ms` when nothing came back.
pub async fn handle_fetch(shard: &Rc<Shard>, version: i16, req: FetchRequest, replica: i32) -> FetchResponse {
    let image = shard.image();
    let mut slots: Vec<(usize, usize, Result<(String, i32, Asked), ResponseError>)> = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let meta = if version >= 13 { image.topic_by_id(&t.topic_id) } else { image.topic(t.topic.0.as_str()) };
        for (pi, p) in t.partitions.iter().enumerate() {
            let checked = (|| {
                let meta = meta.ok_or(if version >= 13 { ResponseError::UnknownTopicId } else { ResponseError::UnknownTopicOrPartition })?;
                if p.partition < 0 || p.partition >= meta.partitions {
                    return Err(ResponseError::UnknownTopicOrPartition);
                }
                if !image.leads(meta, p.partition) {
                    return Err(ResponseError::NotLeaderOrFollower);
                }
                // Only a replica reads past the high watermark.
                if !meta.placement.get(p.partition as usize).is_some_and(|r| r.replicas.contains(&replica)) {
                    return Err(ResponseError::NotLeaderOrFollower);
                }
                if let Some(e) = super::handlers::leader_epoch_error(p.current_leader_epoch, image.leader_epoch(meta, p.partition)) {
                    return Err(e);
                }
                let asked = Asked {
                    fetch_offset: p.fetch_offset,
                    last_fetched_epoch: p.last_fetched_epoch,
                    max_bytes: p.partition_max_bytes.clamp(0, REPLICA_FETCH_PARTITION_MAX_BYTES * 8) as usize,
                };
                Ok((meta.name.clone(), p.partition, asked))
            })();
            slots.push((ti, pi, checked));
        }
    }
    let deadline = now_ms() + req.max_wait_ms.clamp(0, crate::config::limits::FETCH_WAIT_MAX_MS) as i64;
    let mut answers: Vec<Answer>;
    loop {
        let work: Vec<super::handlers::PartWork<Asked>> = slots
            .iter()
            .enumerate()
            .filter_map(|(slot, (_, _, c))| c.as_ref().ok().map(|(n, p, a)| super::handlers::PartWork { slot, topic: n.clone(), partition: *p, data: *a }))
            .collect();
        answers = slots.iter().map(|(_, _, c)| Answer { error: c.as_ref().err().map_or(0, |e| e.code()), ..Answer::default() }).collect();
        let keyed = work
            .iter()
            .map(|w| super::handlers::PartWork { slot: w.slot, topic: w.topic.clone(), partition: w.partition, data: (w.topic.clone(), w.partition, w.data) })
            .collect();
        let read = super::handlers::on_partitions(shard, keyed, move |log, (topic, p, asked)| async move {
            let s = current();
            serve_partition(&s, (topic, p), &log, replica, asked).await
        })
        .await;
        let mut any = false;
        for (slot, r) in read {
            let a = r.unwrap_or(Answer { error: ResponseError::NotLeaderOrFollower.code(), ..Answer::default() });
            any |= !a.records.is_empty() || a.error != 0 || a.diverging.is_some();
            answers[slot] = a;
        }
        if any || work.is_empty() || now_ms() >= deadline || shard.lifecycle.is_stopping() {
            break;
        }
        let parts = work.iter().map(|w| (w.topic.clone(), w.partition, w.data.fetch_offset)).collect();
        super::handlers::fetch::wait_any(shard, parts, deadline, super::handlers::fetch::Visible::Written).await;
    }
    let mut resp = FetchResponse::default();
    for ((ti, pi, _), a) in slots.iter().zip(answers) {
        let t = &req.topics[*ti];
        if resp.responses.len() <= *ti {
            resp.responses.resize_with(ti + 1, FetchableTopicResponse::default);
        }
        let tr = &mut resp.responses[*ti];
        tr.topic = t.topic.clone();
        tr.topic_id = t.topic_id;
        let mut pd = PartitionData::default()
            .with_partition_index(t.partitions[*pi].partition)
            .with_error_code(a.error)
            .with_high_watermark(if a.error == 0 { a.high_watermark } else { -1 })
            .with_last_stable_offset(if a.error == 0 { a.high_watermark } else { -1 })
            .with_log_start_offset(if a.error == 0 { a.log_start } else { -1 })
            .with_aborted_transactions(None)
            .with_records(Some(a.records));
        if let Some((epoch, end)) = a.diverging {
            pd.diverging_epoch = EpochEndOffset::default().with_epoch(epoch).with_end_offset(end);
        }
        tr.partitions.push(pd);
    }
    resp
}

/// One partition of a follower's fetch, on its owning core.
async fn serve_partition(s: &Shard, key: Key, log: &Rc<PartitionLog>, replica: i32, asked: Asked) -> Answer {
    let o = log.offsets();
    // KIP-595's check: the epoch of the follower's last record must have lasted here at least
    // up to the follower's log end; else the follower cuts its log back to where it does.
    if asked.last_fetched_epoch >= 0 {
        let (epoch, end) = log.end_offset_for_epoch(asked.last_fetched_epoch);
        if epoch < asked.last_fetched_epoch || end < asked.fetch_offset {
            return Answer { high_watermark: o.high_watermark, log_start: o.log_start, diverging: Some((epoch, end)), ..Answer::default() };
        }
    }
    if asked.fetch_offset < o.log_start || asked.fetch_offset > o.log_end {
        return Answer { error: ResponseError::OffsetOutOfRange.code(), high_watermark: o.high_watermark, log_start: o.log_start, ..Answer::default() };
    }
    let image = s.image();
    let limited = throttled(&image, &key.0, key.1, replica, Some(s.config.node_id))
        .then(|| throttle_rate(s, &image, "leader.replication.throttled.rate"))
        .flatten();
    follower_fetched(s, key, log, replica, asked.fetch_offset);
    let room = limited.map(|rate| s.replication.leader_throttle.room(rate));
    if room == Some(0) {
        let o = log.offsets();
        return Answer { high_watermark: o.high_watermark, log_start: o.log_start, ..Answer::default() };
    }
    // A read returns at least one batch, so a throttled one may run one batch over its room.
    match log.read_for_replica(asked.fetch_offset, asked.max_bytes.min(room.map_or(usize::MAX, |r| r as usize))).await {
        Ok(r) => {
            if limited.is_some() {
                s.replication.leader_throttle.spend(r.records.len() as u64);
            }
            Answer { high_watermark: r.high_watermark, log_start: r.log_start, records: r.records, ..Answer::default() }
        }
        Err(e) => {
            let o = log.offsets();
            Answer { error: super::handlers::log_error_code(&e).code(), high_watermark: o.high_watermark, log_start: o.log_start, ..Answer::default() }
        }
    }
}

/// Records a follower's fetch at `offset` (what it holds): its progress, the high watermark,
/// and, if it is out of the ISR and has caught up to the high watermark, a proposal to let it
/// back in.
fn follower_fetched(s: &Shard, key: Key, log: &PartitionLog, replica: i32, offset: i64) {
    let now = now_ms();
    let written = log.offsets().written;
    let expand = {
        let mut leading = s.replication.leading.borrow_mut();
        let Some(l) = leading.get_mut(&key) else { return };
        if !l.replicas.contains(&replica) {
            return;
        }
        let prev = l.followers.get(&replica).copied();
        let caught_up = if offset >= written {
            now
        } else {
            match prev {
                Some(p) if offset >= p.leader_end_at_last_fetch => p.last_fetch_ms,
                Some(p) => p.last_caught_up_ms,
                None => l.since_ms,
            }
        };
        l.followers.insert(replica, Progress { log_end: offset, last_fetch_ms: now, last_caught_up_ms: caught_up, leader_end_at_last_fetch: written });
        advance_high_watermark(l, log, s.config.node_id);
        let hw = log.offsets().high_watermark;
        let epoch_start = log.end_offset_for_epoch(l.leader_epoch - 1).1;
        // A broker still fenced (just restarted, not yet heartbeating) cannot join: the
        // quorum would refuse it.
        let live = s.image().broker(replica).is_some();
        let proposable = l.altering_since.is_none_or(|since| now - since >= ALTER_PARTITION_WAIT_MS);
        (live && proposable && !l.isr.contains(&replica) && offset >= hw && offset >= epoch_start).then(|| {
            let mut isr = l.isr.clone();
            isr.push(replica);
            isr
        })
    };
    if let Some(isr) = expand {
        if s.replication.propose_isr(s, key.clone(), isr.clone()) {
            tracing::info!(topic = %key.0, partition = key.1, replica, ?isr, "a follower caught up; proposing it back into the ISR");
            crate::metrics::isr_change(false);
        }
    }
}

/// A core's fetcher for the partitions it follows that broker `leader` leads (see the module
/// doc). Runs until the core stops; idles while there are none.
async fn run_fetcher(leader: i32) {
    let shard = current();
    let mut conn: Option<PeerConn> = None;
    let mut correlation = 0i32;
    let mut last_error_log = 0i64;
    loop {
        if shard.lifecycle.is_stopping() {
            return;
        }
        let image = shard.image();
        let rate = throttle_rate(&shard, &image, "follower.replication.throttled.rate");
        let room = rate.map(|r| shard.replication.follower_throttle.room(r));
        let all: Vec<(Key, i32, bool)> = shard
            .replication
            .following
            .borrow()
            .iter()
            .filter(|(k, f)| f.leader == leader && !shard.replication.cutting.borrow().contains(*k))
            .map(|(k, f)| (k.clone(), f.leader_epoch, f.throttled))
            .collect();
        // A throttled replica (one a reassignment is adding here) waits for the next second
        // once this core's share of `follower.replication.throttled.rate` is used.
        let parts: Vec<(Key, i32, Option<u64>)> = all
            .iter()
            .filter_map(|(k, e, throttled)| match (room, *throttled) {
                (Some(0), true) => None,
                (Some(left), true) => Some((k.clone(), *e, Some(left))),
                _ => Some((k.clone(), *e, None)),
            })
            .collect();
        if parts.is_empty() && !all.is_empty() {
            rt::sleep(Duration::from_millis(100)).await;
            continue;
        }
        if parts.is_empty() {
            conn = None;
            let _ = rt::timeout(Duration::from_secs(1), shard.replication.following_changed.wait()).await;
            continue;
        }
        let Some(addr) = image.broker(leader).map(|b| format!("{}:{}", b.host, b.port)) else {
            conn = None;
            rt::sleep(FETCH_RETRY).await;
            continue;
        };
        if conn.is_none() {
            match PeerConn::connect(&addr, PEER_CONNECT_TIMEOUT).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    if now_ms() - last_error_log > 10_000 {
                        last_error_log = now_ms();
                        tracing::warn!(core = shard.core, leader, %addr, error = %e, "replica fetcher cannot connect to the leader; retrying");
                    }
                    rt::sleep(FETCH_RETRY).await;
                    continue;
                }
            }
        }
        correlation = correlation.wrapping_add(1);
        let (request, asked) = fetch_request(&shard, &parts, correlation);
        let c = conn.as_mut().expect("connected above");
        let answer = rt::timeout(PEER_RESPONSE_TIMEOUT, async {
            c.send(&request).await?;
            c.recv(PEER_RESPONSE_MAX_BYTES).await
        })
        .await;
        let body = match answer {
            Some(Ok(body)) => body,
            Some(Err(e)) => {
                tracing::debug!(core = shard.core, leader, error = %e, "replica fetch failed; reconnecting");
                conn = None;
                rt::sleep(FETCH_RETRY).await;
                continue;
            }
            None => {
                tracing::warn!(core = shard.core, leader, "replica fetch got no answer in time; reconnecting");
                conn = None;
                continue;
            }
        };
        let resp = match decode_fetch_response(body, correlation) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(core = shard.core, leader, error = %e, "replica fetch answer unreadable; reconnecting");
                conn = None;
                rt::sleep(FETCH_RETRY).await;
                continue;
            }
        };
        if resp.error_code != 0 {
            tracing::debug!(core = shard.core, leader, code = resp.error_code, "replica fetch refused");
            rt::sleep(FETCH_RETRY).await;
            continue;
        }
        let mut tasks = Vec::new();
        let mut backoff = false;
        for t in resp.responses {
            for pd in t.partitions {
                let key = (t.topic.0.to_string(), pd.partition_index);
                let Some(&(epoch, offset)) = asked.get(&key) else { continue };
                match ResponseError::try_from_code(pd.error_code) {
                    None => {}
                    Some(ResponseError::OffsetOutOfRange) if offset < pd.log_start_offset => {
                        tasks.push(rt::spawn(cut(key, epoch, pd.log_start_offset, true)));
                        continue;
                    }
                    Some(e) => {
                        tracing::debug!(topic = %key.0, partition = key.1, leader, error = ?e, "replica fetch of a partition refused");
                        backoff = true;
                        continue;
                    }
                }
                if pd.diverging_epoch.epoch >= 0 || pd.diverging_epoch.end_offset >= 0 {
                    let Some(log) = shard.partition(&key.0, key.1) else { continue };
                    // Cut to where both logs agree: the leader's end of the epoch, and this
                    // log's end of the same epoch.
                    let (mine_epoch, mine_end) = log.end_offset_for_epoch(pd.diverging_epoch.epoch);
                    let mut at = pd.diverging_epoch.end_offset.min(offset);
                    if mine_epoch == pd.diverging_epoch.epoch && mine_end >= 0 {
                        at = at.min(mine_end);
                    }
                    tracing::warn!(
                        topic = %key.0, partition = key.1, leader, log_end = offset, diverging_epoch = pd.diverging_epoch.epoch,
                        leader_end = pd.diverging_epoch.end_offset, cut_to = at,
                        "this replica's log diverges from the leader's; cutting it back"
                    );
                    tasks.push(rt::spawn(cut(key, epoch, at.max(0), false)));
                    continue;
                }
                let (hw, leader_start) = (pd.high_watermark, pd.log_start_offset);
                let records = pd.records.unwrap_or_default();
                if rate.is_some() && throttled_now(&shard, &key) {
                    shard.replication.follower_throttle.spend(records.len() as u64);
                }
                tasks.push(rt::spawn(append_fetched(key, epoch, offset, records, hw, leader_start)));
            }
        }
        for t in tasks {
            t.await;
        }
        if backoff {
            rt::sleep(FETCH_RETRY).await;
        }
    }
}

/// The Fetch request for `parts` (partition, the leader epoch this follower knows, and for a
/// throttled one the bytes it may still copy this second), each from its log end; also what
/// was asked per partition: (leader epoch, fetch offset).
fn fetch_request(shard: &Shard, parts: &[(Key, i32, Option<u64>)], correlation: i32) -> (Vec<u8>, HashMap<Key, (i32, i64)>) {
    let mut asked = HashMap::new();
    let mut topics: Vec<FetchTopic> = Vec::new();
    for ((name, p), epoch, throttled_room) in parts {
        let Some(log) = shard.partition(name, *p) else { continue };
        let o = log.offsets();
        asked.insert((name.clone(), *p), (*epoch, o.log_end));
        let fp = FetchPartition::default()
            .with_partition(*p)
            .with_current_leader_epoch(*epoch)
            .with_fetch_offset(o.log_end)
            .with_last_fetched_epoch(log.last_fetched_epoch())
            .with_log_start_offset(o.log_start)
            .with_partition_max_bytes(throttled_room.map_or(REPLICA_FETCH_PARTITION_MAX_BYTES, |r| {
                r.min(REPLICA_FETCH_PARTITION_MAX_BYTES as u64) as i32
            }));
        match topics.iter_mut().find(|t| t.topic.0.as_str() == name) {
            Some(t) => t.partitions.push(fp),
            None => topics.push(FetchTopic::default().with_topic(TopicName(StrBytes::from_string(name.clone()))).with_partitions(vec![fp])),
        }
    }
    let req = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(shard.config.node_id))
        .with_max_wait_ms(REPLICA_FETCH_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(REPLICA_FETCH_RESPONSE_MAX_BYTES)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Fetch as i16)
        .with_request_api_version(REPLICA_FETCH_VERSION)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_string(format!("spate-replica-{}", shard.config.node_id))));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, ApiKey::Fetch.request_header_version(REPLICA_FETCH_VERSION)).expect("a request header encodes");
    req.encode(&mut buf, REPLICA_FETCH_VERSION).expect("a fetch request encodes");
    (buf.to_vec(), asked)
}

fn decode_fetch_response(body: Vec<u8>, correlation: i32) -> anyhow::Result<FetchResponse> {
    let mut b = Bytes::from(body);
    let header = ResponseHeader::decode(&mut b, ApiKey::Fetch.response_header_version(REPLICA_FETCH_VERSION))?;
    anyhow::ensure!(header.correlation_id == correlation, "correlation id {} where {correlation} was sent", header.correlation_id);
    FetchResponse::decode(&mut b, REPLICA_FETCH_VERSION)
}

/// Whether the follower throttle applies to `key` (see [`Following`]).
fn throttled_now(shard: &Shard, key: &Key) -> bool {
    shard.replication.following.borrow().get(key).is_some_and(|f| f.throttled)
}

/// Whether this core still follows `key` at leader epoch `epoch` (metadata may have moved on
/// while the fetch was out: then what it brought is not appended).
fn still_following(shard: &Shard, key: &Key, epoch: i32) -> bool {
    shard.replication.following.borrow().get(key).is_some_and(|f| f.leader_epoch == epoch)
}

/// Appends what a fetch brought for one partition, then takes the leader's high watermark,
/// and its log start offset where it has moved past this replica's (DeleteRecords, retention
/// at the leader), as Kafka's followers do.
async fn append_fetched(key: Key, epoch: i32, asked_at: i64, records: Bytes, hw: i64, leader_start: i64) {
    let shard = current();
    let Some(log) = shard.partition(&key.0, key.1) else { return };
    if !still_following(&shard, &key, epoch) || log.offsets().log_end != asked_at {
        return;
    }
    if !records.is_empty() {
        let batches = match batch::split(&records) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(topic = %key.0, partition = key.1, error = %e, "the leader sent a damaged batch; fetching again");
                return;
            }
        };
        let bytes = records.len() as u64;
        if let Err(e) = log.append_replica(batches, epoch, true).await {
            tracing::error!(topic = %key.0, partition = key.1, error = %e, "appending replicated batches failed");
            return;
        }
        crate::metrics::replicated(&key.0, bytes);
    }
    log.set_replicated_high_watermark(Some(hw));
    let o = log.offsets();
    if leader_start > o.log_start {
        if let Err(e) = log.delete_records(leader_start.min(o.high_watermark)).await {
            tracing::warn!(topic = %key.0, partition = key.1, error = %e, "following the leader's log start offset failed");
        }
    }
}

/// Cuts a followed partition's log back to `offset` (or, with `start_over`, empties it to
/// start at `offset`) and reopens it in its place.
async fn cut(key: Key, epoch: i32, offset: i64, start_over: bool) {
    let shard = current();
    let Some(log) = shard.partition(&key.0, key.1) else { return };
    if !still_following(&shard, &key, epoch) || !shard.replication.cutting.borrow_mut().insert(key.clone()) {
        return;
    }
    let result = async {
        log.cut_for_reopen(offset, start_over).await.map_err(|e| e.to_string())?;
        shard.reopen_partition(&key.0, key.1, &log).await
    }
    .await;
    shard.replication.cutting.borrow_mut().remove(&key);
    match result {
        Ok(()) => tracing::info!(topic = %key.0, partition = key.1, offset, start_over, "cut the follower's log back; fetching from there"),
        Err(e) => tracing::error!(topic = %key.0, partition = key.1, error = %e, "cutting the follower's log back failed"),
    }
    shard.replication.following_changed.notify_all();
}
