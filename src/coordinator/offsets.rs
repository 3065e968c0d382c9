//! Committed offsets as records of `__consumer_offsets`, in Kafka's own layout, so the bytes on
//! disk are what Kafka would write: key `OffsetCommitKey` v1 (group, topic, partition), value
//! `OffsetCommitValue` v3 (offset, leader epoch, metadata, commit time). A null value is a
//! tombstone (offset deleted). Pure: no I/O.

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

fn put_str(b: &mut BytesMut, s: &str) {
    let s = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    b.put_i16(s.len() as i16);
    b.put_slice(s);
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

/// Decodes an offset record: (group, topic, partition, committed or `None` for a tombstone).
/// `None` for records of other kinds (group metadata) or bytes it does not understand.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<(String, String, i32, Option<Committed>)> {
    let mut k = key;
    if k.remaining() < 2 || k.get_i16() > KEY_VERSION {
        return None;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_records_round_trip_and_junk_is_ignored() {
        let c = Committed { offset: 42, leader_epoch: 0, metadata: "m".into(), commit_ms: 7 };
        let k = encode_key("g", "t", 3);
        let v = encode_value(&c);
        assert_eq!(decode(&k, Some(&v)), Some(("g".into(), "t".into(), 3, Some(c))));
        assert_eq!(decode(&k, None), Some(("g".into(), "t".into(), 3, None)));
        assert_eq!(decode(&[0, 2, 0, 1, b'g'], Some(&v)), None, "group metadata keys (v2) are not offsets");
        assert_eq!(decode(&k[..k.len() - 1], Some(&v)), None);
        assert_eq!(decode(&k, Some(&v[..5])), None);
    }
}
