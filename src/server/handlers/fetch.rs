//! Fetch (key 1): read each partition on its owning core, in parallel; if fewer than `min_bytes`
//! came back, wait (up to `max_wait_ms`) for an append on any of the partitions, woken by the
//! append itself, then read again. Record bytes go out exactly as stored.
//!
//! Fetch sessions (KIP-227, v7 and later), as Kafka's `FetchManager` decides them: epoch -1 is a
//! sessionless fetch (as v4-v6 always are), and with a nonzero session id it also closes that
//! session; epoch 0 is a full fetch, which closes the session it names (if any) and opens a new
//! one of its partitions in this core's cache (`server::fetch_sessions`) if there is room, else
//! answers session id 0; any other epoch is incremental: the session must be in this core's cache
//! (else FETCH_SESSION_ID_NOT_FOUND), carry that epoch (else INVALID_FETCH_SESSION_EPOCH) and name
//! topics as the request version does, by id from v13 (else FETCH_SESSION_TOPIC_ID_ERROR). The
//! partitions it lists are added or updated, `forgotten_topics_data` removes; then every partition
//! of the session is read (and waited on), and only those with records, an error, or a high
//! watermark, last stable offset or log start offset the client was not told yet are answered.
//! A session left empty, or grown past the bound of its partitions, is closed and the request is
//! answered as a sessionless one (session id 0), as Kafka does for an empty one. A deleted or
//! recreated topic is UNKNOWN_TOPIC_ID for its old id's partitions, per partition, as in Kafka
//! (which answers FETCH_SESSION_TOPIC_ID_ERROR only for the version mismatch).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use uuid::Uuid;

use super::super::fetch_sessions::{
    next_epoch, Asked, FetchSession, FetchSessionCache, PartKey, TopicKey, Told, FINAL_EPOCH, INITIAL_EPOCH,
    UNKNOWN_PARTITIONS_MAX,
};
use super::super::memory::Held;
use super::super::metadata::MetadataImage;
use super::super::shard::{current, Shard};
use super::{group_by_core, on_partitions, PartWork};
use crate::config::limits::{FETCH_RESPONSE_MAX_BYTES, FETCH_WAIT_MAX_MS};
use crate::io::rt;
use crate::metrics::FetchKind;
use crate::protocol::{batch, ResponseError, StrBytes};
use crate::storage::now_ms;

pub const VERSIONS: (i16, i16) = (4, 18);

/// One partition to read, with (fetch offset, partition max bytes).
type Want = PartWork<(i64, usize)>;

/// What a reader may see of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::server) enum Visible {
    /// A follower: what is written.
    Written,
    /// A `read_uncommitted` consumer: up to the high watermark.
    HighWatermark,
    /// A `read_committed` consumer: up to the last stable offset.
    Stable,
}

#[derive(Debug, Clone)]
struct PartRead {
    error: i16,
    high_watermark: i64,
    last_stable: i64,
    log_start: i64,
    records: Bytes,
    /// For `read_committed`: the aborted transactions (producer id, first offset) overlapping
    /// `records`.
    aborted: Option<Vec<(i64, i64)>>,
}

impl PartRead {
    /// No records and no offsets, with error `code` (0 until the partition is read).
    fn error(code: i16) -> PartRead {
        PartRead { error: code, high_watermark: -1, last_stable: -1, log_start: -1, records: Bytes::new(), aborted: None }
    }
}

/// How a fetch is served.
enum Context {
    /// The partitions listed, all answered, session id 0.
    Sessionless,
    /// The partitions listed, all answered; a session is made of them if the core has room.
    Full,
    /// Every partition of a session, answered only where something changed. `epoch` is the one
    /// the session moved to for this request: if it moved on before the answer, a later request
    /// of the session was taken meanwhile and this one is stale.
    Incremental { session: Rc<RefCell<FetchSession>>, epoch: i32 },
}

/// A partition to read and answer for.
struct Item {
    /// Consecutive items of one group go out under one topic entry of the response.
    group: usize,
    key: PartKey,
    asked: Asked,
}

pub async fn handle(shard: &Rc<Shard>, version: i16, req: FetchRequest) -> FetchResponse {
    // Another broker's replica fetcher (see `server::replication`).
    let replica = if version >= 15 { req.replica_state.replica_id.0 } else { req.replica_id.0 };
    if replica >= 0 {
        return super::super::replication::handle_fetch(shard, version, req, replica).await;
    }
    let image = shard.image();
    let visible = if req.isolation_level == 1 { Visible::Stable } else { Visible::HighWatermark };
    let (context, items) = match open(shard, version, &req, &image) {
        Ok(opened) => opened,
        Err(e) => return FetchResponse::default().with_error_code(e.code()),
    };
    crate::metrics::fetch_kind(match context {
        Context::Sessionless => FetchKind::Sessionless,
        Context::Full => FetchKind::Full,
        Context::Incremental { .. } => FetchKind::Incremental,
    });
    let mut results: Vec<PartRead> = Vec::with_capacity(items.len());
    let mut wants: Vec<Want> = Vec::new();
    for (slot, item) in items.iter().enumerate() {
        match resolve(&image, &item.key, item.asked.current_leader_epoch) {
            Err(e) => results.push(PartRead::error(e.code())),
            Ok(name) => {
                results.push(PartRead::error(0));
                wants.push(PartWork {
                    slot,
                    topic: name.to_string(),
                    partition: item.key.partition,
                    data: (item.asked.fetch_offset, item.asked.max_bytes.max(0) as usize),
                });
            }
        }
    }
    // Memory bound: partitions are read concurrently, so each may read at most its share of the
    // response's limit (itself capped by FETCH_RESPONSE_MAX_BYTES, and by what is left of the
    // core's memory budget when the read starts). A read still returns at least one whole batch,
    // so the response holds at most the limit plus one batch per partition. What was read is
    // held in the core's budget until the connection charges the response (`server::memory`).
    let asked: Vec<usize> = wants.iter().map(|w| w.data.1).collect();
    let asked_max = (req.max_bytes.max(0) as usize).min(FETCH_RESPONSE_MAX_BYTES);
    // The most this fetch can return: the response limit, or all partitions' limits together.
    let can_return = asked_max.min(asked.iter().sum());
    let mut max_bytes;
    let wait_ms = req.max_wait_ms.clamp(0, FETCH_WAIT_MAX_MS) as i64;
    let deadline = now_ms() + wait_ms;
    let min_bytes = req.min_bytes.max(0) as usize;
    let mut held = Held::charge(&shard.memory, 0);
    loop {
        held.resize_to(0);
        max_bytes = asked_max.min(shard.memory.room());
        if max_bytes < can_return {
            crate::metrics::fetch_trimmed();
        }
        let share = (max_bytes / wants.len().max(1)).max(1);
        for (w, asked) in wants.iter_mut().zip(&asked) {
            w.data.1 = (*asked).min(share);
        }
        held.resize_to(max_bytes);
        let mut total = 0;
        let mut any_error = false;
        for (slot, r) in read_all(shard, &wants, visible).await {
            total += r.records.len();
            any_error |= r.error != 0;
            results[slot] = r;
        }
        held.resize_to(total);
        let stopping = shard.lifecycle.is_stopping();
        if wants.is_empty() || total >= min_bytes || any_error || now_ms() >= deadline || stopping {
            break;
        }
        let parts = wants.iter().map(|w| (w.topic.clone(), w.partition, w.data.0)).collect();
        wait_any(shard, parts, deadline, visible).await;
    }
    if let Context::Incremental { session, epoch } = &context {
        let s = session.borrow();
        if s.epoch != *epoch {
            tracing::info!(session = s.id, expected = epoch, now = s.epoch, "fetch session moved on while this fetch waited; possible duplicate request");
            return FetchResponse::default().with_error_code(ResponseError::InvalidFetchSessionEpoch.code()).with_session_id(s.id);
        }
    }
    // Assemble in order, honouring the response-wide max_bytes (the first non-empty partition is
    // always included whole, as Kafka does, so a large batch cannot stall a consumer).
    let mut sent = 0usize;
    let mut resp = FetchResponse::default();
    let mut group = None;
    let mut told_full = Vec::new();
    for (item, r) in items.into_iter().zip(results) {
        let records = if sent > 0 && sent + r.records.len() > max_bytes { Bytes::new() } else { r.records };
        sent += records.len();
        if let Ok(name) = resolve(&image, &item.key, -1) {
            crate::metrics::fetched(name, records.len() as u64);
        }
        let log_start = if version >= 5 { r.log_start } else { -1 };
        let told = Told { high_watermark: r.high_watermark, last_stable_offset: r.last_stable, log_start_offset: log_start };
        match &context {
            Context::Sessionless => {}
            Context::Full => told_full.push((item.key.clone(), item.asked, told)),
            Context::Incremental { session, .. } => {
                if !session.borrow_mut().must_respond(&item.key, told, !records.is_empty(), r.error != 0) {
                    continue;
                }
            }
        }
        if group != Some(item.group) {
            group = Some(item.group);
            let (name, id) = match &item.key.topic {
                TopicKey::Id(id) => (TopicName::default(), *id),
                TopicKey::Name(n) => (TopicName(StrBytes::from_string(n.to_string())), Uuid::nil()),
            };
            resp.responses.push(FetchableTopicResponse::default().with_topic(name).with_topic_id(id));
        }
        if let Some(t) = resp.responses.last_mut() {
            t.partitions.push(
                PartitionData::default()
                    .with_partition_index(item.key.partition)
                    .with_error_code(r.error)
                    .with_high_watermark(r.high_watermark)
                    .with_last_stable_offset(r.last_stable)
                    .with_log_start_offset(log_start)
                    .with_aborted_transactions(r.aborted.map(|list| {
                        list.into_iter()
                            .map(|(pid, first)| AbortedTransaction::default().with_producer_id(pid.into()).with_first_offset(first))
                            .collect()
                    }))
                    .with_records(Some(records)),
            );
        }
    }
    resp.session_id = match &context {
        Context::Sessionless => 0,
        Context::Full if told_full.len() > session_bound(&image) => 0,
        Context::Full => {
            let created = shard.fetch_sessions.borrow_mut().create(now_ms(), version >= 13, told_full);
            match created {
                Some(id) => tracing::debug!(session = id, core = shard.core, "opened a fetch session"),
                None => tracing::debug!(core = shard.core, "no room for a fetch session; answered without one"),
            }
            created.unwrap_or(0)
        }
        Context::Incremental { session, .. } => session.borrow().id,
    };
    resp
}

/// What kind of fetch this is and which partitions it reads, or the session error to answer.
/// An incremental fetch's changes are applied to its session here.
fn open(shard: &Rc<Shard>, version: i16, req: &FetchRequest, image: &MetadataImage) -> Result<(Context, Vec<Item>), ResponseError> {
    let listed = listed(version, req);
    let (id, epoch) = (req.session_id, req.session_epoch);
    if version < 7 || epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
        if version >= 7 && id != 0 {
            close(shard, id);
        }
        let full = version >= 7 && epoch == INITIAL_EPOCH;
        return Ok((if full { Context::Full } else { Context::Sessionless }, listed));
    }
    let Some(session) = shard.fetch_sessions.borrow().get(id) else {
        tracing::debug!(session = id, core = shard.core, "incremental fetch of a session not on this core");
        return Err(ResponseError::FetchSessionIdNotFound);
    };
    let mut s = session.borrow_mut();
    if s.epoch != epoch {
        tracing::debug!(session = id, expected = s.epoch, got = epoch, "incremental fetch with the wrong session epoch");
        return Err(ResponseError::InvalidFetchSessionEpoch);
    }
    if s.uses_topic_ids != (version >= 13) {
        tracing::debug!(session = id, version, "incremental fetch naming topics otherwise than its session");
        return Err(ResponseError::FetchSessionTopicIdError);
    }
    let before = s.len();
    for item in &listed {
        s.upsert(item.key.clone(), item.asked);
    }
    for t in &req.forgotten_topics_data {
        let topic = topic_key(version, &t.topic, t.topic_id);
        for p in &t.partitions {
            s.forget(&PartKey { topic: topic.clone(), partition: *p });
        }
    }
    if s.is_empty() || (s.len() > before && s.len() > session_bound(image)) {
        tracing::debug!(session = id, partitions = s.len(), "closed a fetch session left empty or grown too big");
        drop(s);
        shard.fetch_sessions.borrow_mut().remove(id);
        return Ok((Context::Sessionless, listed));
    }
    shard.fetch_sessions.borrow().touch(&mut s, now_ms());
    s.epoch = next_epoch(s.epoch);
    let mut items: Vec<Item> = Vec::with_capacity(s.len());
    for (key, asked) in s.partitions() {
        let group = match items.last() {
            Some(prev) if prev.key.topic == key.topic => prev.group,
            Some(prev) => prev.group + 1,
            None => 0,
        };
        items.push(Item { group, key, asked });
    }
    let epoch = s.epoch;
    drop(s);
    Ok((Context::Incremental { session, epoch }, items))
}

/// The partitions a request lists, in its order, one group per topic entry.
fn listed(version: i16, req: &FetchRequest) -> Vec<Item> {
    let mut items = Vec::new();
    for (group, t) in req.topics.iter().enumerate() {
        let topic = topic_key(version, &t.topic, t.topic_id);
        for p in &t.partitions {
            let asked = Asked {
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                log_start_offset: p.log_start_offset,
                current_leader_epoch: if version >= 9 { p.current_leader_epoch } else { -1 },
            };
            items.push(Item { group, key: PartKey { topic: topic.clone(), partition: p.partition }, asked });
        }
    }
    items
}

/// A topic as a request of `version` names it: by id from v13, by name before.
fn topic_key(version: i16, name: &TopicName, id: Uuid) -> TopicKey {
    if version >= 13 {
        TopicKey::Id(id)
    } else {
        TopicKey::Name(Rc::from(name.0.as_str()))
    }
}

/// The name of the topic `key` is a partition of, or the error that partition gets: a fetcher
/// that knows an older leader epoch than the image is FENCED_LEADER_EPOCH, one that knows a
/// newer one UNKNOWN_LEADER_EPOCH (this broker's metadata is behind); both refresh their
/// metadata and come back (KIP-320).
fn resolve<'a>(image: &'a MetadataImage, key: &PartKey, known_epoch: i32) -> Result<&'a str, ResponseError> {
    let meta = match &key.topic {
        TopicKey::Id(id) => image.topic_by_id(id).ok_or(ResponseError::UnknownTopicId)?,
        TopicKey::Name(name) => image.topic(name).ok_or(ResponseError::UnknownTopicOrPartition)?,
    };
    if key.partition < 0 || key.partition >= meta.partitions {
        return Err(ResponseError::UnknownTopicOrPartition);
    }
    if !image.leads(meta, key.partition) {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    if let Some(e) = super::leader_epoch_error(known_epoch, image.leader_epoch(meta, key.partition)) {
        return Err(e);
    }
    Ok(&meta.name)
}

/// The most partitions a session may hold: those of every topic, and a few unknown ones.
fn session_bound(image: &MetadataImage) -> usize {
    image.topics.values().map(|t| t.partitions.max(0) as usize).sum::<usize>() + UNKNOWN_PARTITIONS_MAX
}

/// Closes session `id` on whichever core holds it (a full fetch names its old session after an
/// error or a reconnect, perhaps to another core); another core removes it there, unawaited.
fn close(shard: &Rc<Shard>, id: i32) {
    match FetchSessionCache::owner_core(id, shard.cores) {
        Some(core) if core == shard.core => {
            shard.fetch_sessions.borrow_mut().remove(id);
        }
        Some(core) => {
            let shard = shard.clone();
            rt::spawn(async move {
                shard
                    .invoke_on(core, move || async move {
                        current().fetch_sessions.borrow_mut().remove(id);
                    })
                    .await
            })
            .detach();
        }
        None => {}
    }
}

/// Reads every wanted partition on its owning core; returns (slot, result) pairs.
async fn read_all(shard: &Rc<Shard>, wants: &[Want], visible: Visible) -> Vec<(usize, PartRead)> {
    let results = on_partitions(shard, wants.to_vec(), move |log, (offset, max_bytes): (i64, usize)| async move {
        let committed = visible == Visible::Stable;
        let read = if committed { log.read_committed(offset, max_bytes).await } else { log.read(offset, max_bytes).await };
        // Read after the records: what was read is below both.
        let last_stable = log.last_stable_offset();
        match read {
            Ok(r) => {
                let aborted = committed.then(|| {
                    let mut upper = offset;
                    batch::scan_while(&r.records, |_, h| {
                        upper = h.last_offset() + 1;
                        Ok(())
                    });
                    if upper > offset { log.aborted_transactions(offset, upper) } else { Vec::new() }
                });
                PartRead { error: 0, high_watermark: r.high_watermark, last_stable, log_start: r.log_start, records: r.records, aborted }
            }
            Err(e) => {
                let o = log.offsets();
                let code = super::log_error_code(&e);
                PartRead { error: code.code(), high_watermark: o.high_watermark, last_stable, log_start: o.log_start, records: Bytes::new(), aborted: None }
            }
        }
    })
    .await;
    results
        .into_iter()
        .map(|(slot, r)| (slot, r.unwrap_or_else(|| PartRead::error(ResponseError::UnknownTopicOrPartition.code()))))
        .collect()
}

/// Returns when any of `parts` (topic, partition, fetch offset; on any core) has data past its
/// fetch offset, or at the deadline: past the high watermark for a consumer, past what is
/// written for a follower (`replica`). Each owning core waits on its own append signal; the
/// first to answer wins.
pub(in crate::server) async fn wait_any(shard: &Rc<Shard>, parts: Vec<(String, i32, i64)>, deadline: i64, visible: Visible) {
    let (tx, rx) = flume::bounded::<()>(shard.cores);
    let mut tasks = Vec::new();
    let owned = parts.into_iter().map(|part| (shard.owner(&part.0, part.1), part));
    for (core, items) in group_by_core(shard.cores, owned) {
        let shard = shard.clone();
        let tx = tx.clone();
        let parts: Vec<(String, i32, i64)> = items.into_iter().map(|(_, part)| part).collect();
        tasks.push(rt::spawn(async move {
            shard.invoke_on(core, move || async move { wait_on_core(parts, deadline, visible).await }).await;
            let _ = tx.try_send(());
        }));
    }
    drop(tx);
    let left = (deadline - now_ms()).max(0) as u64;
    let _ = rt::timeout(Duration::from_millis(left), rx.recv_async()).await;
    for t in tasks {
        t.detach();
    }
}

/// On the owning core: waits until one of `parts` has data past its offset (see [`wait_any`]),
/// or the deadline.
async fn wait_on_core(parts: Vec<(String, i32, i64)>, deadline: i64, visible: Visible) {
    let s = current();
    loop {
        let ready = parts.iter().any(|(n, p, o)| match s.partition(n, *p) {
            None => true,
            Some(log) if visible == Visible::Written => log.offsets().written > *o,
            Some(log) => {
                let off = log.offsets();
                let end = if visible == Visible::Stable { log.last_stable_offset() } else { off.high_watermark };
                end > *o || *o > off.log_end || *o < off.log_start
            }
        });
        let left = deadline - now_ms();
        // At shutdown every core wakes its waiters; the fetch answers with what it has.
        if ready || left <= 0 || s.lifecycle.is_stopping() {
            return;
        }
        if rt::timeout(Duration::from_millis(left as u64), s.data_arrived.wait()).await.is_none() {
            return;
        }
    }
}
