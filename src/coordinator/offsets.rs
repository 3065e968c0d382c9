//! The records of `__consumer_offsets`, in Kafka's own layout, so the bytes on disk are what
//! Kafka would write:
//! - committed offsets: key `OffsetCommitKey` v1 (group, topic, partition), value
//!   `OffsetCommitValue` v3 (offset, leader epoch, metadata, commit time);
//! - group metadata: key `GroupMetadataKey` v2 (group), value `GroupMetadataValue` v3 (protocol,
//!   generation, leader, members with their subscription and assignment);
//! - KIP-848 consumer groups, as Kafka's group coordinator writes them (keys 3 and 5 to 8, values
//!   in the flexible encoding, version 0): the group epoch (`ConsumerGroupMetadata`), each
//!   member's subscription (`ConsumerGroupMemberMetadata`), the target assignment's epoch and
//!   each member's target (`ConsumerGroupTargetAssignmentMetadata` / `...Member`), and each
//!   member's current assignment (`ConsumerGroupCurrentMemberAssignment`). Kafka's partition
//!   metadata (key 4) is not written: the topics are taken from the metadata image on load.
//!
//! A null value is a tombstone (offset or group deleted). Pure: no I/O.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ms: i64,
}

impl Committed {
    /// What OffsetFetch reports where nothing is committed.
    pub fn none() -> Committed {
        Committed { offset: -1, leader_epoch: -1, metadata: String::new(), commit_ms: -1 }
    }
}

const KEY_VERSION: i16 = 1;
const VALUE_VERSION: i16 = 3;
const GROUP_KEY_VERSION: i16 = 2;
const GROUP_VALUE_VERSION: i16 = 3;

/// A group's membership as of its last completed rebalance (or its emptying).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_ms: i64,
    pub members: Vec<MemberSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// Topic partitions by topic id, as the consumer-group records list them.
pub type TopicPartitions = Vec<(uuid::Uuid, Vec<i32>)>;

/// `ConsumerGroupMemberMetadataValue` v0: what a KIP-848 member subscribed with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerMemberMetadata {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub server_assignor: Option<String>,
}

/// `ConsumerGroupCurrentMemberAssignmentValue` v0: where a KIP-848 member is in its
/// reconciliation. `state` is Kafka's `MemberState` id (0 stable, 1 unrevoked partitions, 2
/// unreleased partitions).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerMemberAssignment {
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: i8,
    pub assigned: TopicPartitions,
    pub pending_revocation: TopicPartitions,
}

/// One decoded record of `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A committed offset, or `None` for its tombstone.
    Offset { group: String, topic: String, partition: i32, committed: Option<Committed> },
    /// A group's membership, or `None` for its tombstone (group deleted).
    Group { group: String, snapshot: Option<GroupSnapshot> },
    /// A KIP-848 group's epoch, or `None` (the group is deleted).
    ConsumerGroupEpoch { group: String, epoch: Option<i32> },
    /// A KIP-848 member's subscription, or `None` (the member left).
    ConsumerMember { group: String, member: String, metadata: Option<ConsumerMemberMetadata> },
    /// The epoch of a KIP-848 group's target assignment, or `None`.
    ConsumerTargetEpoch { group: String, epoch: Option<i32> },
    /// A KIP-848 member's target assignment, or `None`.
    ConsumerTarget { group: String, member: String, partitions: Option<TopicPartitions> },
    /// A KIP-848 member's current assignment, or `None`.
    ConsumerAssignment { group: String, member: String, assignment: Option<ConsumerMemberAssignment> },
}

const CONSUMER_GROUP_KEY: i16 = 3;
const CONSUMER_MEMBER_KEY: i16 = 5;
const CONSUMER_TARGET_EPOCH_KEY: i16 = 6;
const CONSUMER_TARGET_KEY: i16 = 7;
const CONSUMER_ASSIGNMENT_KEY: i16 = 8;
/// The value version of every consumer-group record (all flexible from version 0).
const CONSUMER_VALUE_VERSION: i16 = 0;

/// The key of a consumer-group record: its kind (3, 5, 6, 7 or 8), the group and, for the
/// per-member kinds, the member.
fn consumer_key(kind: i16, group: &str, member: Option<&str>) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(kind);
    put_str(&mut b, group);
    if let Some(m) = member {
        put_str(&mut b, m);
    }
    b.freeze()
}

/// The records that store a KIP-848 group whole: its epoch, its target's epoch and, per member,
/// its subscription, target and current assignment; then tombstones for `gone` members (stored
/// before, no longer in the group). Written as one batch, so a reader sees all or none.
pub fn encode_consumer_group(
    group: &str,
    group_epoch: i32,
    assignment_epoch: i32,
    members: Vec<(String, ConsumerMemberMetadata, TopicPartitions, ConsumerMemberAssignment)>,
    gone: &[String],
) -> Vec<(Option<Bytes>, Option<Bytes>)> {
    let mut records = vec![
        Record::ConsumerGroupEpoch { group: group.to_string(), epoch: Some(group_epoch) },
        Record::ConsumerTargetEpoch { group: group.to_string(), epoch: Some(assignment_epoch) },
    ];
    for (member, metadata, target, assignment) in members {
        records.extend(member_records(group, member, Some(metadata), Some(target), Some(assignment)));
    }
    for member in gone {
        records.extend(member_records(group, member.clone(), None, None, None));
    }
    encode_all(&records)
}

/// A member's three records (`None`s: tombstones).
fn member_records(
    group: &str,
    member: String,
    metadata: Option<ConsumerMemberMetadata>,
    target: Option<TopicPartitions>,
    assignment: Option<ConsumerMemberAssignment>,
) -> [Record; 3] {
    let group = group.to_string();
    [
        Record::ConsumerMember { group: group.clone(), member: member.clone(), metadata },
        Record::ConsumerTarget { group: group.clone(), member: member.clone(), partitions: target },
        Record::ConsumerAssignment { group, member, assignment },
    ]
}

fn encode_all(records: &[Record]) -> Vec<(Option<Bytes>, Option<Bytes>)> {
    records.iter().filter_map(encode_consumer_record).map(|(k, v)| (Some(k), v)).collect()
}

/// A consumer-group record's key and value (`None`: a tombstone); `None` for other records.
pub fn encode_consumer_record(r: &Record) -> Option<(Bytes, Option<Bytes>)> {
    let value = |f: &dyn Fn(&mut BytesMut)| {
        let mut b = BytesMut::new();
        b.put_i16(CONSUMER_VALUE_VERSION);
        f(&mut b);
        put_uvarint(&mut b, 0); // no tagged fields
        b.freeze()
    };
    Some(match r {
        Record::ConsumerGroupEpoch { group, epoch } => {
            (consumer_key(CONSUMER_GROUP_KEY, group, None), epoch.map(|e| value(&|b| b.put_i32(e))))
        }
        Record::ConsumerTargetEpoch { group, epoch } => {
            (consumer_key(CONSUMER_TARGET_EPOCH_KEY, group, None), epoch.map(|e| value(&|b| b.put_i32(e))))
        }
        Record::ConsumerMember { group, member, metadata } => {
            let v = metadata.as_ref().map(|meta| {
                value(&|b| {
                    put_compact_nullable_str(b, meta.instance_id.as_deref());
                    put_compact_nullable_str(b, meta.rack_id.as_deref());
                    put_compact_str(b, &meta.client_id);
                    put_compact_str(b, &meta.client_host);
                    put_uvarint(b, meta.subscribed_topic_names.len() as u64 + 1);
                    for t in &meta.subscribed_topic_names {
                        put_compact_str(b, t);
                    }
                    put_compact_nullable_str(b, meta.subscribed_topic_regex.as_deref());
                    b.put_i32(meta.rebalance_timeout_ms);
                    put_compact_nullable_str(b, meta.server_assignor.as_deref());
                })
            });
            (consumer_key(CONSUMER_MEMBER_KEY, group, Some(member)), v)
        }
        Record::ConsumerTarget { group, member, partitions } => (
            consumer_key(CONSUMER_TARGET_KEY, group, Some(member)),
            partitions.as_ref().map(|tps| value(&|b| put_topic_partitions(b, tps))),
        ),
        Record::ConsumerAssignment { group, member, assignment } => {
            let v = assignment.as_ref().map(|a| {
                value(&|b| {
                    b.put_i32(a.member_epoch);
                    b.put_i32(a.previous_member_epoch);
                    b.put_i8(a.state);
                    put_topic_partitions(b, &a.assigned);
                    put_topic_partitions(b, &a.pending_revocation);
                })
            });
            (consumer_key(CONSUMER_ASSIGNMENT_KEY, group, Some(member)), v)
        }
        Record::Offset { .. } | Record::Group { .. } => return None,
    })
}

/// Tombstones for a deleted KIP-848 group: its epoch, its target's epoch and the records of
/// `members` (those stored last; a group is deleted only when empty, so normally none).
pub fn consumer_group_tombstones(group: &str, members: &[String]) -> Vec<(Option<Bytes>, Option<Bytes>)> {
    let mut records = vec![
        Record::ConsumerGroupEpoch { group: group.to_string(), epoch: None },
        Record::ConsumerTargetEpoch { group: group.to_string(), epoch: None },
    ];
    for member in members {
        records.extend(member_records(group, member.clone(), None, None, None));
    }
    encode_all(&records)
}

fn put_uvarint(b: &mut BytesMut, mut x: u64) {
    while x >= 0x80 {
        b.put_u8((x as u8) | 0x80);
        x >>= 7;
    }
    b.put_u8(x as u8);
}

fn put_compact_str(b: &mut BytesMut, s: &str) {
    put_uvarint(b, s.len() as u64 + 1);
    b.put_slice(s.as_bytes());
}

fn put_compact_nullable_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_compact_str(b, s),
        None => put_uvarint(b, 0),
    }
}

fn put_topic_partitions(b: &mut BytesMut, tps: &TopicPartitions) {
    put_uvarint(b, tps.len() as u64 + 1);
    for (id, ps) in tps {
        b.put_slice(id.as_bytes());
        put_uvarint(b, ps.len() as u64 + 1);
        for p in ps {
            b.put_i32(*p);
        }
        put_uvarint(b, 0); // the struct's tagged fields
    }
}

fn get_uvarint(b: &mut &[u8]) -> Option<u64> {
    let mut x = 0u64;
    for shift in (0..64).step_by(7) {
        if !b.has_remaining() {
            return None;
        }
        let byte = b.get_u8();
        x |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(x);
        }
    }
    None
}

/// A compact array's or string's length (`None` for null).
fn get_compact_len(b: &mut &[u8]) -> Option<Option<usize>> {
    let n = get_uvarint(b)?;
    Some(if n == 0 { None } else { Some(usize::try_from(n - 1).ok()?) })
}

fn get_compact_nullable_str(b: &mut &[u8]) -> Option<Option<String>> {
    let Some(n) = get_compact_len(b)? else { return Some(None) };
    if b.remaining() < n {
        return None;
    }
    let s = String::from_utf8(b[..n].to_vec()).ok()?;
    b.advance(n);
    Some(Some(s))
}

fn get_compact_str(b: &mut &[u8]) -> Option<String> {
    get_compact_nullable_str(b)?
}

/// Skips a tagged-field section.
fn skip_tagged(b: &mut &[u8]) -> Option<()> {
    for _ in 0..get_uvarint(b)? {
        let _tag = get_uvarint(b)?;
        let n = usize::try_from(get_uvarint(b)?).ok()?;
        if b.remaining() < n {
            return None;
        }
        b.advance(n);
    }
    Some(())
}

fn get_topic_partitions(b: &mut &[u8]) -> Option<TopicPartitions> {
    let n = get_compact_len(b)?.unwrap_or(0);
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        if b.remaining() < 16 {
            return None;
        }
        let id = uuid::Uuid::from_slice(&b[..16]).ok()?;
        b.advance(16);
        let m = get_compact_len(b)?.unwrap_or(0);
        if b.remaining() < m.checked_mul(4)? {
            return None;
        }
        let ps = (0..m).map(|_| b.get_i32()).collect();
        skip_tagged(b)?;
        out.push((id, ps));
    }
    Some(out)
}

/// A consumer-group value after its version check: `f` reads the fields; `None` for a version
/// this broker does not know or bytes that do not parse.
fn consumer_value<T>(value: &[u8], f: impl FnOnce(&mut &[u8]) -> Option<T>) -> Option<T> {
    let mut v = value;
    if v.remaining() < 2 || v.get_i16() != CONSUMER_VALUE_VERSION {
        return None;
    }
    f(&mut v)
}

fn decode_consumer_record(kind: i16, mut k: &[u8], value: Option<&[u8]>) -> Option<Record> {
    let group = get_str(&mut k)?;
    let member = match kind {
        CONSUMER_MEMBER_KEY | CONSUMER_TARGET_KEY | CONSUMER_ASSIGNMENT_KEY => Some(get_str(&mut k)?),
        _ => None,
    };
    // Fields Kafka added after ours are read past: the value's tagged fields are skipped, and
    // a longer value (a newer Kafka's extra non-tagged field) is ignored from there on.
    let epoch = |v: &mut &[u8]| get_i32(v);
    Some(match (kind, member) {
        (CONSUMER_GROUP_KEY, None) => Record::ConsumerGroupEpoch { group, epoch: maybe(value, epoch)? },
        (CONSUMER_TARGET_EPOCH_KEY, None) => {
            Record::ConsumerTargetEpoch { group, epoch: maybe(value, epoch)? }
        }
        (CONSUMER_MEMBER_KEY, Some(member)) => {
            let metadata = maybe(value, |b| {
                        let instance_id = get_compact_nullable_str(b)?;
                        let rack_id = get_compact_nullable_str(b)?;
                        let client_id = get_compact_str(b)?;
                        let client_host = get_compact_str(b)?;
                        let n = get_compact_len(b)?.unwrap_or(0);
                        let mut subscribed_topic_names = Vec::with_capacity(n.min(1024));
                        for _ in 0..n {
                            subscribed_topic_names.push(get_compact_str(b)?);
                        }
                        let subscribed_topic_regex = get_compact_nullable_str(b)?;
                        let rebalance_timeout_ms = get_i32(b)?;
                        let server_assignor = get_compact_nullable_str(b)?;
                        Some(ConsumerMemberMetadata {
                            instance_id,
                            rack_id,
                            client_id,
                            client_host,
                            subscribed_topic_names,
                            subscribed_topic_regex,
                            rebalance_timeout_ms,
                            server_assignor,
                        })
                    })?;
            Record::ConsumerMember { group, member, metadata }
        }
        (CONSUMER_TARGET_KEY, Some(member)) => {
            let partitions = maybe(value, get_topic_partitions)?;
            Record::ConsumerTarget { group, member, partitions }
        }
        (CONSUMER_ASSIGNMENT_KEY, Some(member)) => {
            let assignment = maybe(value, |b| {
                        let member_epoch = get_i32(b)?;
                        let previous_member_epoch = get_i32(b)?;
                        if !b.has_remaining() {
                            return None;
                        }
                        let state = b.get_i8();
                        let assigned = get_topic_partitions(b)?;
                        let pending_revocation = get_topic_partitions(b)?;
                        Some(ConsumerMemberAssignment { member_epoch, previous_member_epoch, state, assigned, pending_revocation })
                    })?;
            Record::ConsumerAssignment { group, member, assignment }
        }
        _ => return None,
    })
}

/// A value that may be a tombstone: `Some(None)` for a tombstone, `Some(Some(_))` for a value
/// that parses, `None` for one that does not (the record is not understood).
fn maybe<T>(value: Option<&[u8]>, f: impl FnOnce(&mut &[u8]) -> Option<T>) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(v) => consumer_value(v, f).map(Some),
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    let s = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    b.put_i16(s.len() as i16);
    b.put_slice(s);
}

fn put_nullable_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, x: &[u8]) {
    b.put_i32(x.len() as i32);
    b.put_slice(x);
}

fn get_nullable_str(b: &mut &[u8]) -> Option<Option<String>> {
    if b.remaining() >= 2 && i16::from_be_bytes([b[0], b[1]]) == -1 {
        b.advance(2);
        return Some(None);
    }
    get_str(b).map(Some)
}

fn get_bytes(b: &mut &[u8]) -> Option<Bytes> {
    if b.remaining() < 4 {
        return None;
    }
    let n = usize::try_from(b.get_i32()).ok()?;
    if b.remaining() < n {
        return None;
    }
    let x = Bytes::copy_from_slice(&b[..n]);
    b.advance(n);
    Some(x)
}

fn get_i32(b: &mut &[u8]) -> Option<i32> {
    (b.remaining() >= 4).then(|| b.get_i32())
}

fn get_str(b: &mut &[u8]) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let n = b.get_i16();
    let n = usize::try_from(n).ok()?;
    if b.remaining() < n {
        return None;
    }
    let s = String::from_utf8(b[..n].to_vec()).ok()?;
    b.advance(n);
    Some(s)
}

pub fn encode_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(KEY_VERSION);
    put_str(&mut b, group);
    put_str(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

pub fn encode_value(c: &Committed) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(VALUE_VERSION);
    b.put_i64(c.offset);
    b.put_i32(c.leader_epoch);
    put_str(&mut b, &c.metadata);
    b.put_i64(c.commit_ms);
    b.freeze()
}

pub fn encode_group_key(group: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(GROUP_KEY_VERSION);
    put_str(&mut b, group);
    b.freeze()
}

pub fn encode_group_value(g: &GroupSnapshot) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(GROUP_VALUE_VERSION);
    put_str(&mut b, &g.protocol_type);
    b.put_i32(g.generation);
    put_nullable_str(&mut b, g.protocol.as_deref());
    put_nullable_str(&mut b, g.leader.as_deref());
    b.put_i64(g.state_ms);
    b.put_i32(g.members.len() as i32);
    for m in &g.members {
        put_str(&mut b, &m.member_id);
        put_nullable_str(&mut b, m.instance_id.as_deref());
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b.freeze()
}

/// Decodes a record of `__consumer_offsets`; `None` for bytes it does not understand (a newer
/// layout, or junk), which the caller skips.
pub fn decode_record(key: &[u8], value: Option<&[u8]>) -> Option<Record> {
    let mut k = key;
    if k.remaining() < 2 {
        return None;
    }
    match k.get_i16() {
        0 | 1 => {
            let (group, topic, partition, committed) = decode_offset(k, value)?;
            Some(Record::Offset { group, topic, partition, committed })
        }
        GROUP_KEY_VERSION => {
            let group = get_str(&mut k)?;
            let snapshot = match value {
                None => None,
                Some(v) => Some(decode_group_value(v)?),
            };
            Some(Record::Group { group, snapshot })
        }
        kind @ (CONSUMER_GROUP_KEY | CONSUMER_MEMBER_KEY | CONSUMER_TARGET_EPOCH_KEY | CONSUMER_TARGET_KEY | CONSUMER_ASSIGNMENT_KEY) => {
            decode_consumer_record(kind, k, value)
        }
        _ => None,
    }
}

fn decode_group_value(mut v: &[u8]) -> Option<GroupSnapshot> {
    if v.remaining() < 2 || v.get_i16() != GROUP_VALUE_VERSION {
        return None;
    }
    let protocol_type = get_str(&mut v)?;
    let generation = get_i32(&mut v)?;
    let protocol = get_nullable_str(&mut v)?;
    let leader = get_nullable_str(&mut v)?;
    if v.remaining() < 8 {
        return None;
    }
    let state_ms = v.get_i64();
    let n = usize::try_from(get_i32(&mut v)?).ok()?;
    let mut members = Vec::new();
    for _ in 0..n {
        members.push(MemberSnapshot {
            member_id: get_str(&mut v)?,
            instance_id: get_nullable_str(&mut v)?,
            client_id: get_str(&mut v)?,
            client_host: get_str(&mut v)?,
            rebalance_timeout_ms: get_i32(&mut v)?,
            session_timeout_ms: get_i32(&mut v)?,
            subscription: get_bytes(&mut v)?,
            assignment: get_bytes(&mut v)?,
        });
    }
    Some(GroupSnapshot { protocol_type, generation, protocol, leader, state_ms, members })
}

/// An offset record's key (after its version) and value.
fn decode_offset(mut k: &[u8], value: Option<&[u8]>) -> Option<(String, String, i32, Option<Committed>)> {
    let group = get_str(&mut k)?;
    let topic = get_str(&mut k)?;
    if k.remaining() < 4 {
        return None;
    }
    let partition = k.get_i32();
    let Some(mut v) = value else { return Some((group, topic, partition, None)) };
    if v.remaining() < 2 || v.get_i16() != VALUE_VERSION || v.remaining() < 12 {
        return None;
    }
    let offset = v.get_i64();
    let leader_epoch = v.get_i32();
    let metadata = get_str(&mut v)?;
    if v.remaining() < 8 {
        return None;
    }
    let commit_ms = v.get_i64();
    Some((group, topic, partition, Some(Committed { offset, leader_epoch, metadata, commit_ms })))
}

/// The committed offsets that `offsets.retention` has expired (Kafka's rule since KIP-211):
/// - an empty group (`subscribed` is `None`) loses an offset `retention_ms` after the later of
///   its commit and the moment the group became empty (`empty_since`);
/// - a group with members keeps every offset of a topic some member subscribes to, and loses the
///   others `retention_ms` after their commit.
pub fn expired<'a>(
    offsets: impl IntoIterator<Item = (&'a (String, i32), &'a Committed)>,
    empty_since: Option<i64>,
    subscribed: Option<&std::collections::BTreeSet<String>>,
    retention_ms: i64,
    now: i64,
) -> Vec<(String, i32)> {
    offsets
        .into_iter()
        .filter(|((topic, _), c)| {
            let since = match subscribed {
                Some(topics) if topics.contains(topic) => return false,
                Some(_) => c.commit_ms,
                None => c.commit_ms.max(empty_since.unwrap_or(i64::MIN)),
            };
            since.saturating_add(retention_ms) <= now
        })
        .map(|(k, _)| k.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_records_round_trip_and_junk_is_ignored() {
        let c = Committed { offset: 42, leader_epoch: 0, metadata: "m".into(), commit_ms: 7 };
        let k = encode_key("g", "t", 3);
        let v = encode_value(&c);
        let offset = |committed| Some(Record::Offset { group: "g".into(), topic: "t".into(), partition: 3, committed });
        assert_eq!(decode_record(&k, Some(&v)), offset(Some(c)));
        assert_eq!(decode_record(&k, None), offset(None));
        assert_eq!(decode_record(&[0, 2, 0, 1, b'g'], Some(&v)), None, "an offset value under a group key is junk");
        assert_eq!(decode_record(&[0, 9, 0, 1, b'g'], None), None, "unknown key versions are skipped");
        assert_eq!(decode_record(&k[..k.len() - 1], Some(&v)), None);
        assert_eq!(decode_record(&k, Some(&v[..5])), None);
    }

    #[test]
    fn group_records_round_trip_and_truncations_are_refused() {
        let g = GroupSnapshot {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_ms: 1234,
            members: vec![
                MemberSnapshot {
                    member_id: "m1".into(),
                    instance_id: None,
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 45_000,
                    subscription: Bytes::from_static(b"sub"),
                    assignment: Bytes::from_static(b"asg"),
                },
                MemberSnapshot {
                    member_id: "m2".into(),
                    instance_id: Some("i2".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.2".into(),
                    rebalance_timeout_ms: 1,
                    session_timeout_ms: 2,
                    subscription: Bytes::new(),
                    assignment: Bytes::new(),
                },
            ],
        };
        let k = encode_group_key("grp");
        assert_eq!(&k[..2], &[0, 2], "GroupMetadataKey is version 2");
        let v = encode_group_value(&g);
        assert_eq!(decode_record(&k, Some(&v)), Some(Record::Group { group: "grp".into(), snapshot: Some(g) }));
        assert_eq!(decode_record(&k, None), Some(Record::Group { group: "grp".into(), snapshot: None }));
        for cut in 0..v.len() {
            assert_eq!(decode_record(&k, Some(&v[..cut])), None, "a value cut at {cut} bytes is refused");
        }
    }

    #[test]
    fn retention_expires_offsets_of_empty_groups_and_unsubscribed_topics() {
        let at = |commit_ms| Committed { offset: 1, leader_epoch: -1, metadata: String::new(), commit_ms };
        let offsets: std::collections::BTreeMap<(String, i32), Committed> =
            [(("a".to_string(), 0), at(100)), (("b".to_string(), 0), at(500))].into_iter().collect();
        let keys = |v: Vec<(String, i32)>| v.into_iter().map(|(t, _)| t).collect::<Vec<_>>();
        // Empty group, emptied at 300: "a" counts from 300, "b" from its commit at 500.
        assert!(expired(&offsets, Some(300), None, 1000, 1299).is_empty());
        assert_eq!(keys(expired(&offsets, Some(300), None, 1000, 1300)), ["a"]);
        assert_eq!(keys(expired(&offsets, Some(300), None, 1000, 1500)), ["a", "b"]);
        // Never had members (assign() consumers): the commit time alone.
        assert_eq!(keys(expired(&offsets, None, None, 1000, 1100)), ["a"]);
        // Members subscribe to "a": it never expires; "b" does, from its commit.
        let subscribed: std::collections::BTreeSet<String> = ["a".to_string()].into_iter().collect();
        assert_eq!(keys(expired(&offsets, None, Some(&subscribed), 1000, 1_000_000)), ["b"]);
        assert!(expired(&offsets, None, Some(&subscribed), 1000, 1499).is_empty());
    }
}
