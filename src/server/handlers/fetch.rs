//! Fetch (key 1): read each partition on its owning core, in parallel; if fewer than `min_bytes`
//! came back, wait (up to `max_wait_ms`) for an append on any of the partitions, woken by the
//! append itself, then read again. Record bytes go out exactly as stored.
//!
//! Fetch sessions (KIP-227): Spate answers with session id 0, which tells clients that ask for a
//! session to keep sending full fetch requests. librdkafka never asks; the Java client falls back.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use super::super::memory::Held;
use super::super::shard::{current, Shard};
use super::{group_by_core, on_partitions, PartWork};
use crate::config::limits::{FETCH_RESPONSE_MAX_BYTES, FETCH_WAIT_MAX_MS};
use crate::io::rt;
use crate::protocol::ResponseError;
use crate::storage::now_ms;

pub const VERSIONS: (i16, i16) = (4, 18);

/// One partition to read, with (fetch offset, partition max bytes).
type Want = PartWork<(i64, usize)>;

#[derive(Debug, Clone)]
struct PartRead {
    error: i16,
    high_watermark: i64,
    log_start: i64,
    records: Bytes,
}

impl PartRead {
    /// No records and no offsets, with error `code` (0 until the partition is read).
    fn error(code: i16) -> PartRead {
        PartRead { error: code, high_watermark: -1, log_start: -1, records: Bytes::new() }
    }
}

pub async fn handle(shard: &Rc<Shard>, version: i16, req: FetchRequest) -> FetchResponse {
    let image = shard.image();
    let mut results: Vec<PartRead> = Vec::new();
    let mut wants: Vec<Want> = Vec::new();
    for t in &req.topics {
        let meta = if version >= 13 { image.topic_by_id(&t.topic_id) } else { image.topic(t.topic.0.as_str()) };
        for p in &t.partitions {
            let slot = results.len();
            results.push(PartRead::error(0));
            match meta {
                None if version >= 13 => results[slot] = PartRead::error(ResponseError::UnknownTopicId.code()),
                None => results[slot] = PartRead::error(ResponseError::UnknownTopicOrPartition.code()),
                Some(m) if p.partition < 0 || p.partition >= m.partitions => {
                    results[slot] = PartRead::error(ResponseError::UnknownTopicOrPartition.code())
                }
                Some(m) => wants.push(PartWork {
                    slot,
                    topic: m.name.clone(),
                    partition: p.partition,
                    data: (p.fetch_offset, p.partition_max_bytes.max(0) as usize),
                }),
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
        for (slot, r) in read_all(shard, &wants).await {
            total += r.records.len();
            any_error |= r.error != 0;
            results[slot] = r;
        }
        held.resize_to(total);
        let stopping = shard.lifecycle.is_stopping();
        if wants.is_empty() || total >= min_bytes || any_error || now_ms() >= deadline || stopping {
            break;
        }
        wait_any(shard, &wants, deadline).await;
    }
    // Assemble in request order, honouring the response-wide max_bytes (the first non-empty
    // partition is always included whole, as Kafka does, so a large batch cannot stall a consumer).
    let mut sent = 0usize;
    let mut results = results.into_iter();
    let mut resp = FetchResponse::default();
    for t in req.topics {
        let name = if version >= 13 { image.topic_by_id(&t.topic_id).map(|m| m.name.clone()) } else { Some(t.topic.0.to_string()) };
        let mut tr = FetchableTopicResponse::default().with_topic(t.topic).with_topic_id(t.topic_id);
        for p in t.partitions {
            let r = results.next().expect("one result per partition");
            let records = if sent > 0 && sent + r.records.len() > max_bytes { Bytes::new() } else { r.records };
            sent += records.len();
            if let Some(name) = &name {
                crate::metrics::fetched(name, records.len() as u64);
            }
            tr.partitions.push(
                PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_error_code(r.error)
                    .with_high_watermark(r.high_watermark)
                    .with_last_stable_offset(r.high_watermark)
                    .with_log_start_offset(if version >= 5 { r.log_start } else { -1 })
                    .with_aborted_transactions(None)
                    .with_records(Some(records)),
            );
        }
        resp.responses.push(tr);
    }
    resp
}

/// Reads every wanted partition on its owning core; returns (slot, result) pairs.
async fn read_all(shard: &Rc<Shard>, wants: &[Want]) -> Vec<(usize, PartRead)> {
    let results = on_partitions(shard, wants.to_vec(), |log, (offset, max_bytes): (i64, usize)| async move {
        match log.read(offset, max_bytes).await {
            Ok(r) => PartRead { error: 0, high_watermark: r.high_watermark, log_start: r.log_start, records: r.records },
            Err(e) => {
                let o = log.offsets();
                let code = super::log_error_code(&e);
                PartRead { error: code.code(), high_watermark: o.high_watermark, log_start: o.log_start, records: Bytes::new() }
            }
        }
    })
    .await;
    results
        .into_iter()
        .map(|(slot, r)| (slot, r.unwrap_or_else(|| PartRead::error(ResponseError::UnknownTopicOrPartition.code()))))
        .collect()
}

/// Returns when any wanted partition (on any core) has data past its fetch offset, or at the
/// deadline. Each owning core waits on its own append signal; the first to answer wins.
async fn wait_any(shard: &Rc<Shard>, wants: &[Want], deadline: i64) {
    let (tx, rx) = flume::bounded::<()>(shard.cores);
    let mut tasks = Vec::new();
    let owned = wants.iter().map(|w| (shard.owner(&w.topic, w.partition), (w.topic.clone(), w.partition, w.data.0)));
    for (core, items) in group_by_core(shard.cores, owned) {
        let shard = shard.clone();
        let tx = tx.clone();
        let parts: Vec<(String, i32, i64)> = items.into_iter().map(|(_, part)| part).collect();
        tasks.push(rt::spawn(async move {
            shard.invoke_on(core, move || async move { wait_on_core(parts, deadline).await }).await;
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

/// On the owning core: waits until one of `parts` has data past its offset, or the deadline.
async fn wait_on_core(parts: Vec<(String, i32, i64)>, deadline: i64) {
    let s = current();
    loop {
        let ready = parts.iter().any(|(n, p, o)| match s.partition(n, *p) {
            None => true,
            Some(log) => {
                let off = log.offsets();
                off.high_watermark > *o || *o > off.log_end || *o < off.log_start
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
