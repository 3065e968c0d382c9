//! Produce (key 0): validate each partition's batches on the connection's core (sizes, magic,
//! CRC-32C), then append them on the owning cores, all partitions in parallel. acks=1 answers once
//! the batches are written; acks=-1 (all) also waits for fdatasync under the default flush policy
//! and, on a replicated partition, for every in-sync replica to have them
//! (`replication::wait_for_isr`, up to the request's `timeout_ms`; refused up front with
//! NOT_ENOUGH_REPLICAS while the ISR is below `min.insync.replicas`); acks=0 gets no response at
//! all. A topic whose `compression.type` names a codec gets every
//! batch in it: batches in another are recompressed here, before the append.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};

use super::super::metadata::{MetadataImage, TopicMeta};
use super::super::shard::Shard;
use super::{on_partitions, PartWork};
use crate::config::limits::RECORDS_DECOMPRESSED_MAX_BYTES;
use crate::config::Compression;
use crate::protocol::batch::{self, BatchError, BatchHeader};
use crate::protocol::{ResponseError, StrBytes};
use crate::storage::log::AppendInfo;

pub const VERSIONS: (i16, i16) = (3, 13);

type Outcome = Result<AppendInfo, (ResponseError, String)>;

/// How many times a transactional batch's partition is verified with its coordinator while
/// markers of its producer keep landing on the partition during the check, before the produce
/// is answered NOT_ENOUGH_REPLICAS (retried by the producer).
const VERIFY_TRIES: u32 = 3;

/// `frame` is the request body `req` was decoded from: once `req` lets go of its slices of it,
/// the batches are appended in the frame's own bytes ([`batch::own_batches`]).
pub async fn handle(shard: &Rc<Shard>, version: i16, mut req: ProduceRequest, frame: Bytes) -> Option<ProduceResponse> {
    let acks = req.acks;
    let txn_id = req.transactional_id.as_ref().map(|t| t.0.to_string());
    let image = shard.image();
    let acks_ok = matches!(acks, -1..=1);
    // Per partition, in request order: either an error now, or work for an owning core.
    let mut outcomes: Vec<Option<Outcome>> = Vec::new();
    let mut work = Vec::new();
    for t in &req.topic_data {
        let meta = if version >= 13 { image.topic_by_id(&t.topic_id) } else { image.topic(t.name.0.as_str()) };
        for p in &t.partition_data {
            let slot = outcomes.len();
            outcomes.push(None);
            let checked = (|| -> Result<(String, Vec<(Bytes, BatchHeader)>), (ResponseError, String)> {
                if !acks_ok {
                    return Err((ResponseError::InvalidRequiredAcks, format!("acks={acks} is not -1, 0 or 1")));
                }
                let meta = meta.ok_or_else(|| {
                    let e = if version >= 13 { ResponseError::UnknownTopicId } else { ResponseError::UnknownTopicOrPartition };
                    (e, "unknown topic".to_string())
                })?;
                if p.index < 0 || p.index >= meta.partitions {
                    return Err((ResponseError::UnknownTopicOrPartition, format!("no partition {}", p.index)));
                }
                if !image.leads(meta, p.index) {
                    return Err(not_leader(&image, meta, p.index));
                }
                if acks == -1 {
                    crate::server::replication::check_min_isr(&image, &meta.name, p.index)?;
                }
                let records = p.records.as_ref().ok_or((ResponseError::CorruptMessage, "null record set".to_string()))?;
                let batches = batch::split(records).map_err(|e| match e {
                    BatchError::Corrupt(_) => (ResponseError::CorruptMessage, e.to_string()),
                    BatchError::UnsupportedMagic(_) => (ResponseError::UnsupportedForMessageFormat, e.to_string()),
                })?;
                // Markers are the transaction coordinator's to write, as in Kafka; a producer's
                // batch carries sequences; a transactional batch comes with its transactional id
                // (its partition is checked with the coordinator below, on the owning core).
                if batches.iter().any(|(_, h)| h.is_control()) {
                    return Err((ResponseError::InvalidRecord, "clients may not write control batches (transaction markers)".to_string()));
                }
                if let Some((_, h)) = batches.iter().find(|(_, h)| h.producer_id >= 0 && h.base_sequence < 0) {
                    return Err((ResponseError::InvalidRecord, format!("producer {}'s batch carries no sequence number", h.producer_id)));
                }
                if let Some((_, h)) = batches.iter().find(|(_, h)| h.is_transactional() && (txn_id.is_none() || h.producer_id < 0)) {
                    return Err((ResponseError::InvalidTxnState, format!("a transactional batch of producer {} without a transactional id", h.producer_id)));
                }
                let max = meta.config.message_max_bytes;
                let too_large = |batches: &[(Bytes, BatchHeader)]| match batches.iter().find(|(b, _)| b.len() as i64 > max) {
                    Some((b, _)) => Err((ResponseError::MessageTooLarge, format!("batch of {} bytes exceeds max.message.bytes {max}", b.len()))),
                    None => Ok(()),
                };
                too_large(&batches)?;
                let batches = to_topic_codec(batches, meta.config.compression)?;
                too_large(&batches)?;
                // As Kafka: a partition's batches must fit in one segment (RECORD_LIST_TOO_LARGE).
                let total: usize = batches.iter().map(|(b, _)| b.len()).sum();
                if total as i64 > meta.config.segment_bytes {
                    let msg = format!("{total} bytes of batches exceed segment.bytes {}", meta.config.segment_bytes);
                    return Err((ResponseError::RecordListTooLarge, msg));
                }
                Ok((meta.name.clone(), batches))
            })();
            match checked {
                Ok((topic, data)) => work.push(PartWork { slot, topic, partition: p.index, data }),
                Err(e) => {
                    tracing::debug!(topic = %t.name.0.as_str(), partition = p.index, code = ?e.0, "produce refused: {}", e.1);
                    outcomes[slot] = Some(Err(e));
                }
            }
        }
    }
    let_go_of_frame(&mut req);
    let (heads, batches): (Vec<_>, Vec<_>) = work.into_iter().map(|w| ((w.slot, w.topic, w.partition), w.data)).unzip();
    let owned = batch::own_batches(frame, batches);
    let wait_durable = acks == -1;
    let timeout_ms = req.timeout_ms as i64;
    let txn_id = txn_id.unwrap_or_default();
    let work: Vec<_> = heads
        .into_iter()
        .zip(owned)
        .map(|((slot, topic, partition), data)| PartWork { slot, partition, data: (topic.clone(), partition, data), topic })
        .collect();
    let results = on_partitions(shard, work, move |log, (topic, partition, batches): (String, i32, Vec<(BytesMut, BatchHeader)>)| {
        let txn_id = txn_id.clone();
        async move {
            // KIP-890: a producer's first transactional batch in this partition (at this epoch)
            // is taken only if its coordinator has the partition in the producer's ongoing
            // transaction (part 1), so a late batch of an ended transaction cannot open one that
            // nobody will close; for Produce v12+ (clients of transaction version 2, which do
            // not send AddPartitionsToTxn) the coordinator adds it (part 2).
            // The verification holds for the append only if no marker of the producer is
            // written here in between (Kafka's verification guard): the append checks that, and
            // a marker that came during the check itself has it asked again.
            // A producer pipelines its batches: they must reach the append in request order,
            // and a verification's wait would let a later batch of the producer pass an earlier
            // one (found by Java's producer at transaction version 2, as OUT_OF_ORDER_SEQUENCE).
            // So transactional batches take a turn here, in request order (the ticket is taken
            // before any await), and hold it until their append has taken its own.
            let mut txn_turn = batches.first().filter(|(_, h)| h.is_transactional()).map(|_| log.transactional_ticket());
            let mut verified_at = None;
            if let (Some(turn), Some((_, h))) = (txn_turn.as_mut(), batches.first()) {
                turn.turn().await;
                let mut asked = 0;
                while !log.in_transaction(h.producer_id, h.producer_epoch) {
                    if asked == VERIFY_TRIES {
                        let msg = format!("the producer's markers kept coming while {topic}-{partition}'s transaction was verified");
                        return Err((ResponseError::NotEnoughReplicas, msg));
                    }
                    asked += 1;
                    let before = log.marker_token(h.producer_id);
                    let s = super::super::shard::current();
                    let (pid, epoch) = (h.producer_id, h.producer_epoch);
                    let add = version >= 12;
                    super::super::transactions::check_partition(&s, &txn_id, pid, epoch, &topic, partition, add).await.map_err(|code| {
                        let msg = format!("producer {pid} epoch {epoch} has no ongoing transaction with {topic}-{partition} at its coordinator");
                        // As Kafka: a fenced producer's produce gets INVALID_PRODUCER_EPOCH (what
                        // producers expect there), and a coordinator busy or moving
                        // NOT_ENOUGH_REPLICAS, which every producer retries.
                        let e = match ResponseError::try_from_code(code) {
                            Some(ResponseError::ProducerFenced) | None => ResponseError::InvalidProducerEpoch,
                            Some(
                                ResponseError::ConcurrentTransactions
                                | ResponseError::CoordinatorLoadInProgress
                                | ResponseError::CoordinatorNotAvailable
                                | ResponseError::NotCoordinator,
                            ) => ResponseError::NotEnoughReplicas,
                            Some(e) => e,
                        };
                        (e, msg)
                    })?;
                    if log.marker_token(h.producer_id) == before {
                        verified_at = Some(before);
                        break;
                    }
                }
            }
            let bytes = batches.iter().map(|(b, _)| b.len() as u64).sum();
            let records = batches.iter().map(|(_, h)| h.records_count.max(0) as u64).sum();
            let s = super::super::shard::current();
            // Leadership may have moved since the request was routed: a follower's log takes only
            // its leader's batches (one that slipped in would be cut back, unacknowledged).
            let image = s.image();
            if !image.topic(&topic).is_some_and(|t| image.leads(t, partition)) {
                return Err((ResponseError::NotLeaderOrFollower, format!("broker {} no longer leads {topic}-{partition}", image.node_id)));
            }
            // A replicated partition's acks=all waits for its in-sync replicas too (at the
            // leadership the append was made under).
            let epoch = if wait_durable { s.replication.leading_epoch(&topic, partition) } else { None };
            let appended = log.append_owned_verified(batches, wait_durable, verified_at);
            // The append's first poll (no yield before it) takes its place in the partition's
            // line; only then may the next transactional batch go on.
            drop(txn_turn);
            let r = appended.await.map_err(|e| (super::log_error_code(&e), e.to_string()));
            if r.is_ok() {
                crate::metrics::produced(&topic, bytes, records);
            }
            let a = r?;
            crate::server::replication::wait_for_isr(&s, &topic, partition, &log, a.end, epoch, timeout_ms).await?;
            Ok(a)
        }
    })
    .await;
    for (slot, r) in results {
        outcomes[slot] = Some(r.unwrap_or_else(|| Err((ResponseError::UnknownTopicOrPartition, "topic deleted".to_string()))));
    }
    if acks == 0 {
        return None;
    }
    let mut outcomes = outcomes.into_iter();
    let mut resp = ProduceResponse::default();
    for t in req.topic_data {
        let mut tr = TopicProduceResponse::default().with_name(t.name).with_topic_id(t.topic_id);
        for p in t.partition_data {
            let mut pr = PartitionProduceResponse::default().with_index(p.index);
            match outcomes.next().flatten().expect("one outcome per partition") {
                Ok(a) => {
                    pr.base_offset = a.base_offset;
                    pr.log_append_time_ms = a.log_append_time;
                    if version >= 5 {
                        pr.log_start_offset = a.log_start;
                    }
                }
                Err((code, msg)) => {
                    pr.error_code = code.code();
                    pr.base_offset = -1;
                    if version >= 8 {
                        pr.error_message = Some(StrBytes::from_string(msg));
                    }
                }
            }
            tr.partition_responses.push(pr);
        }
        resp.responses.push(tr);
    }
    Some(resp)
}

/// The batches with their records in the topic's `compression.type` codec: those in another
/// are recompressed here, on the connection's core (decompressed into at most
/// `RECORDS_DECOMPRESSED_MAX_BYTES`; INVALID_RECORD, saying why, if they do not decompress or
/// parse). With `producer`, or a batch already in the codec, the bytes are left as they came.
fn to_topic_codec(batches: Vec<(Bytes, BatchHeader)>, c: Compression) -> Result<Vec<(Bytes, BatchHeader)>, (ResponseError, String)> {
    let Compression::Codec(codec) = c else { return Ok(batches) };
    batches
        .into_iter()
        .map(|(b, h)| match batch::recompress(&b, &h, codec, RECORDS_DECOMPRESSED_MAX_BYTES) {
            Ok(None) => Ok((b, h)),
            Ok(Some(packed)) => {
                crate::metrics::recompressed(b.len() as u64);
                let h = batch::validate(&packed).expect("a recompressed batch is valid");
                Ok((packed, h))
            }
            Err(m) => Err((ResponseError::InvalidRecord, format!("recompressing the batch as {}: {m}", c.name()))),
        })
        .collect()
}

/// Drops every slice of the request frame `req` holds (the names it answers with become
/// copies), so that the batches, taken out already, can be patched where they arrived.
fn let_go_of_frame(req: &mut ProduceRequest) {
    req.transactional_id = None;
    req.unknown_tagged_fields.clear();
    for t in &mut req.topic_data {
        t.name = TopicName(StrBytes::from_string(t.name.0.to_string()));
        t.unknown_tagged_fields.clear();
        for p in &mut t.partition_data {
            p.records = None;
            p.unknown_tagged_fields.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, RequestHeader, TransactionalId};
    use kafka_protocol::protocol::{Decodable, Encodable};

    use super::*;
    use crate::protocol::batch::tests::make_batch;
    use crate::protocol::frame;

    /// The path dispatch takes: once the header and the decoded request let go of the frame, a
    /// batch that fills most of it is appended in the bytes it arrived in.
    #[test]
    fn a_decoded_produce_request_lets_go_of_its_frame() {
        let batch = make_batch(300, 0);
        for version in [3, 8, 9, 13] {
            let req = ProduceRequest::default()
                .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx"))))
                .with_acks(-1)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("topic")))
                    .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch.clone()))])]);
            let header = RequestHeader::default()
                .with_request_api_key(ApiKey::Produce as i16)
                .with_request_api_version(version)
                .with_client_id(Some(StrBytes::from_static_str("client")));
            let mut buf = BytesMut::new();
            header.encode(&mut buf, ApiKey::Produce.request_header_version(version)).unwrap();
            req.encode(&mut buf, version).unwrap();
            let frame = buf.freeze();
            let span = frame.as_ptr_range();

            let (_, header, mut body) = frame::decode_request(frame).unwrap();
            let whole = body.clone();
            let mut req = ProduceRequest::decode(&mut body, version).unwrap();
            drop(body);
            let records = req.topic_data[0].partition_data[0].records.clone().unwrap();
            let batches = batch::split(&records).unwrap();
            drop(records);
            let_go_of_frame(&mut req);
            let owned = batch::own_batches(whole, vec![batches]);
            assert_eq!(&owned[0][0].0[..], &batch[..], "v{version}");
            assert!(span.contains(&owned[0][0].0.as_ptr()), "v{version}: the batch was copied");
            let name = if version < 13 { "topic" } else { "" }; // v13 names topics by id
            assert_eq!((header.client_id.unwrap().as_str(), req.topic_data[0].name.0.as_str()), ("client", name));
        }
    }
}

/// NOT_LEADER_OR_FOLLOWER for a partition another broker (or nobody) leads: the client
/// refreshes its metadata and sends it there.
pub fn not_leader(image: &MetadataImage, meta: &TopicMeta, partition: i32) -> (ResponseError, String) {
    let leader = image.leader(meta, partition);
    let who = if leader == -1 { "no broker leads it now".to_string() } else { format!("broker {leader} leads it") };
    (ResponseError::NotLeaderOrFollower, format!("broker {} does not lead {}-{partition}: {who}", image.node_id, meta.name))
}
