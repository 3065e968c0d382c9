//! Record batches (magic v2), read and patched in place; re-encoded only to change their codec
//! (a topic's `compression.type`, [`recompress`]).
//!
//! Layout of the 61-byte header (big-endian):
//! ```text
//!  0 base_offset i64        8 batch_length i32      12 partition_leader_epoch i32
//! 16 magic i8              17 crc u32 (CRC-32C of bytes 21..end)
//! 21 attributes i16        23 last_offset_delta i32 27 base_timestamp i64
//! 35 max_timestamp i64     43 producer_id i64       51 producer_epoch i16
//! 53 base_sequence i32     57 records_count i32     61 records...
//! ```
//! The broker rewrites only base_offset and partition_leader_epoch (outside the CRC) and, for
//! LogAppendTime topics, the timestamp-type bit and max_timestamp (then the CRC).

use bytes::{Buf, Bytes, BytesMut};

use super::codec;

pub const HEADER_LEN: usize = 61;
/// Bytes before `batch_length` counts from: base_offset and batch_length themselves.
pub const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;
const ATTR_TIMESTAMP_TYPE: i16 = 1 << 3;
const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// The batch belongs to a transaction.
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
/// A control batch: a transaction marker (COMMIT or ABORT), never shown to applications.
const ATTR_CONTROL: i16 = 1 << 5;
/// The base timestamp is the batch's delete horizon (KIP-534): set by compaction on a marker
/// whose transaction's records are all gone, which goes once the horizon has passed.
const ATTR_DELETE_HORIZON: i16 = 1 << 6;

/// The decoded fixed header of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Bytes the whole batch occupies.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
    /// The delete horizon compaction set on the batch (KIP-534), if any.
    pub fn delete_horizon(&self) -> Option<i64> {
        (self.attributes & ATTR_DELETE_HORIZON != 0).then_some(self.base_timestamp)
    }
}

/// A transaction marker: the one record of a control batch (Kafka's `EndTransactionMarker`:
/// key version 0 and type, 0 ABORT or 1 COMMIT; value version 0 and the coordinator epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// Why bytes are not an acceptable batch. Each maps to a Kafka error code in the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Length fields inconsistent with the bytes present, or a bad CRC: CORRUPT_MESSAGE.
    Corrupt(String),
    /// Magic other than 2: UNSUPPORTED_FOR_MESSAGE_FORMAT.
    UnsupportedMagic(i8),
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Corrupt(s) => write!(f, "corrupt record batch: {s}"),
            BatchError::UnsupportedMagic(m) => write!(f, "record batch magic {m} is not supported (only v2)"),
        }
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes the fixed header; `None` if fewer than [`HEADER_LEN`] bytes are present.
pub fn parse_header(b: &[u8]) -> Option<BatchHeader> {
    if b.len() < HEADER_LEN {
        return None;
    }
    Some(BatchHeader {
        base_offset: be_i64(b, 0),
        batch_length: be_i32(b, 8),
        leader_epoch: be_i32(b, 12),
        magic: b[16] as i8,
        crc: u32::from_be_bytes(b[17..21].try_into().expect("4 bytes")),
        attributes: be_i16(b, 21),
        last_offset_delta: be_i32(b, 23),
        base_timestamp: be_i64(b, 27),
        max_timestamp: be_i64(b, 35),
        producer_id: be_i64(b, 43),
        producer_epoch: be_i16(b, 51),
        base_sequence: be_i32(b, 53),
        records_count: be_i32(b, 57),
    })
}

/// Checks one complete batch (exactly `b`): sizes, magic, CRC-32C, codec, record count.
pub fn validate(b: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = parse_header(b).ok_or_else(|| BatchError::Corrupt(format!("{} bytes is shorter than a batch header", b.len())))?;
    if h.magic != 2 {
        return Err(BatchError::UnsupportedMagic(h.magic));
    }
    if h.batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 || h.total_len() != b.len() {
        return Err(BatchError::Corrupt(format!("batch length {} does not match {} bytes", h.batch_length, b.len())));
    }
    let crc = crc32c::crc32c(&b[CRC_START..]);
    if crc != h.crc {
        return Err(BatchError::Corrupt(format!("CRC mismatch: header {:#010x}, computed {crc:#010x}", h.crc)));
    }
    if h.compression() > 4 {
        return Err(BatchError::Corrupt(format!("unknown compression codec {}", h.compression())));
    }
    if h.records_count < 0 || h.last_offset_delta < 0 || h.records_count as i64 > h.last_offset_delta as i64 + 1 {
        return Err(BatchError::Corrupt(format!(
            "records_count {} inconsistent with last_offset_delta {}",
            h.records_count, h.last_offset_delta
        )));
    }
    Ok(h)
}

/// Splits a produce request's record set into its batches, validating each.
pub fn split(records: &Bytes) -> Result<Vec<(Bytes, BatchHeader)>, BatchError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < records.len() {
        let rest = &records[at..];
        if rest.len() < LOG_OVERHEAD {
            return Err(BatchError::Corrupt(format!("{} trailing bytes after the last batch", rest.len())));
        }
        let len = be_i32(rest, 8);
        if len < 0 || LOG_OVERHEAD + len as usize > rest.len() {
            return Err(BatchError::Corrupt(format!("batch length {len} runs past the {} bytes sent", rest.len())));
        }
        let total = LOG_OVERHEAD + len as usize;
        let h = validate(&rest[..total])?;
        out.push((records.slice(at..at + total), h));
        at += total;
    }
    if out.is_empty() {
        return Err(BatchError::Corrupt("empty record set".into()));
    }
    Ok(out)
}

/// Rewrites the broker-owned fields of a batch in place. With `log_append_time`, also marks the
/// batch LogAppendTime, sets max_timestamp and recomputes the CRC.
pub fn patch(b: &mut [u8], base_offset: i64, leader_epoch: i32, log_append_time: Option<i64>) {
    assert!(b.len() >= HEADER_LEN, "patching a batch shorter than its header");
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
    b[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    if let Some(ts) = log_append_time {
        let attrs = be_i16(b, 21) | ATTR_TIMESTAMP_TYPE;
        b[21..23].copy_from_slice(&attrs.to_be_bytes());
        b[35..43].copy_from_slice(&ts.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Gives each batch of a request (`parts`: per partition, slices of `frame` in frame order) a
/// buffer of its own that [`patch`] can rewrite, without copying when it can: once nothing else
/// refers to `frame` (the caller has let go of the decoded request's other slices of it), the
/// batches are carved out of the frame's own allocation. A batch smaller than half the frame is
/// copied anyway, so a batch kept (in the batch cache, say) never keeps alive more than twice its
/// own size. When the frame is still shared, every batch is copied.
pub fn own_batches(frame: Bytes, parts: Vec<Vec<(Bytes, BatchHeader)>>) -> Vec<Vec<(BytesMut, BatchHeader)>> {
    let base = frame.as_ptr() as usize;
    let mut ranges = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    let mut at = 0;
    for (b, _) in parts.iter().flatten() {
        let start = (b.as_ptr() as usize).wrapping_sub(base);
        if start < at || start > frame.len() || b.len() > frame.len() - start {
            // Not slices of the frame in order (never the case for a decoded request): copy.
            return parts.into_iter().map(|p| p.into_iter().map(|(b, h)| (BytesMut::from(&b[..]), h)).collect()).collect();
        }
        at = start + b.len();
        ranges.push(start..at);
    }
    let headers: Vec<Vec<BatchHeader>> = parts.iter().map(|p| p.iter().map(|(_, h)| *h).collect()).collect();
    drop(parts);
    let whole = frame.len();
    let mut ranges = ranges.into_iter();
    let mut out = Vec::with_capacity(headers.len());
    match frame.try_into_mut() {
        Ok(mut rest) => {
            let mut at = 0;
            for hs in headers {
                let mut batches = Vec::with_capacity(hs.len());
                for h in hs {
                    let r = ranges.next().expect("one range per batch");
                    rest.advance(r.start - at);
                    at = r.end;
                    let own = rest.split_to(r.len());
                    batches.push((if own.len() * 2 < whole { BytesMut::from(&own[..]) } else { own }, h));
                }
                out.push(batches);
            }
        }
        Err(frame) => {
            for hs in headers {
                out.push(hs.into_iter().map(|h| (BytesMut::from(&frame[ranges.next().expect("one range per batch")]), h)).collect());
            }
        }
    }
    out
}

/// The batch `b` with its records compressed with `codec` instead, every other field unchanged
/// (offsets, timestamps, producer id and sequence, record count), its length, attributes and
/// CRC redone; `Ok(None)` if it already uses `codec`. The records are decompressed into at most
/// `decompressed_max` bytes and must parse as `h.records_count` records: anything else is an
/// error saying why.
pub fn recompress(b: &[u8], h: &BatchHeader, codec: i16, decompressed_max: usize) -> Result<Option<Bytes>, String> {
    if h.compression() == codec {
        return Ok(None);
    }
    let records = codec::decompress(h.compression(), &b[HEADER_LEN..], decompressed_max)?;
    walk_records(&records, h, |_| {}).ok_or_else(|| format!("the batch's records do not parse as {} records", h.records_count))?;
    let packed = codec::compress(codec, &records)?;
    let mut out = Vec::with_capacity(HEADER_LEN + packed.len());
    out.extend_from_slice(&b[..HEADER_LEN]);
    out.extend_from_slice(&packed);
    let batch_length = i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| "the recompressed batch is over 2 GiB".to_string())?;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attrs = (h.attributes & !ATTR_COMPRESSION_MASK) | codec;
    out[21..23].copy_from_slice(&attrs.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(Some(Bytes::from(out)))
}

/// Outcome of scanning a byte range that should hold whole batches (a segment, on recovery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEnd {
    /// Bytes from the start of the range covered by whole, valid batches.
    pub valid_len: usize,
    /// Why the scan stopped before the end, if it did: `None` for a clean end, or for a tail of
    /// zero bytes (O_DIRECT padding, not damage).
    pub problem: Option<String>,
}

/// Walks whole valid batches from the start of `b`, calling `f(position, header)` for each.
pub fn scan(b: &[u8], mut f: impl FnMut(usize, &BatchHeader)) -> ScanEnd {
    scan_while(b, |at, h| {
        f(at, h);
        Ok(())
    })
}

/// [`scan`], where `f` may also refuse a valid batch (its offsets do not belong there, say): the
/// scan then stops before it, with `f`'s reason as the problem.
pub fn scan_while(b: &[u8], mut f: impl FnMut(usize, &BatchHeader) -> Result<(), String>) -> ScanEnd {
    let mut at = 0;
    while at < b.len() {
        let rest = &b[at..];
        if rest.iter().all(|&x| x == 0) {
            return ScanEnd { valid_len: at, problem: None };
        }
        if rest.len() < HEADER_LEN {
            return ScanEnd { valid_len: at, problem: Some(format!("{} bytes of partial batch header", rest.len())) };
        }
        let len = be_i32(rest, 8);
        if len < (HEADER_LEN - LOG_OVERHEAD) as i32 || LOG_OVERHEAD + len as usize > rest.len() {
            return ScanEnd {
                valid_len: at,
                problem: Some(format!("batch length {len} with {} bytes left", rest.len())),
            };
        }
        match validate(&rest[..LOG_OVERHEAD + len as usize]) {
            Ok(h) => {
                if let Err(problem) = f(at, &h) {
                    return ScanEnd { valid_len: at, problem: Some(problem) };
                }
                at += h.total_len();
            }
            Err(e) => return ScanEnd { valid_len: at, problem: Some(e.to_string()) },
        }
    }
    ScanEnd { valid_len: at, problem: None }
}

fn read_varint(b: &[u8], at: &mut usize) -> Option<i64> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    None
}

fn put_varint(b: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        b.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    b.push(z as u8);
}

fn put_bytes_field(b: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => put_varint(b, -1),
        Some(v) => {
            put_varint(b, v.len() as i64);
            b.extend_from_slice(v);
        }
    }
}

/// Builds one uncompressed batch (base offset 0, no producer id) of key/value records, all
/// stamped `timestamp`, for records the broker writes itself (`__consumer_offsets`).
pub fn build(records: &[(Option<Bytes>, Option<Bytes>)], timestamp: i64) -> Bytes {
    build_with(records, timestamp, 0, -1, -1)
}

/// A transactional batch of key/value records the broker writes for producer `producer_id` at
/// `producer_epoch`, without sequence numbers (Kafka's coordinator-written batches: the
/// transactional offset commits in `__consumer_offsets`).
pub fn build_transactional(records: &[(Option<Bytes>, Option<Bytes>)], timestamp: i64, producer_id: i64, producer_epoch: i16) -> Bytes {
    build_with(records, timestamp, ATTR_TRANSACTIONAL, producer_id, producer_epoch)
}

/// The control batch of a transaction marker of producer `producer_id` at `producer_epoch`
/// (base offset 0, no sequence), stamped `timestamp`.
pub fn build_marker(producer_id: i64, producer_epoch: i16, marker: Marker, timestamp: i64) -> Bytes {
    let key = [0i16.to_be_bytes(), i16::from(marker.commit).to_be_bytes()].concat();
    let mut value = 0i16.to_be_bytes().to_vec();
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let record = [(Some(Bytes::from(key)), Some(Bytes::from(value)))];
    build_with(&record, timestamp, ATTR_TRANSACTIONAL | ATTR_CONTROL, producer_id, producer_epoch)
}

/// The marker a control batch holds; `None` if `b` is not a well-formed one.
pub fn parse_marker(b: &[u8], h: &BatchHeader) -> Option<Marker> {
    if !h.is_control() || h.records_count != 1 {
        return None;
    }
    let mut out = None;
    each_record(b, h, |r| {
        let (Some(k), Some(v)) = (r.key, r.value) else { return };
        if k.len() < 4 || v.len() < 6 || be_i16(k, 0) != 0 || be_i16(v, 0) != 0 {
            return;
        }
        let commit = match be_i16(k, 2) {
            0 => false,
            1 => true,
            _ => return,
        };
        out = Some(Marker { commit, coordinator_epoch: i32::from_be_bytes([v[2], v[3], v[4], v[5]]) });
    })?;
    out
}

fn build_with(records: &[(Option<Bytes>, Option<Bytes>)], timestamp: i64, attributes: i16, producer_id: i64, producer_epoch: i16) -> Bytes {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let mut body = Vec::new();
    for (i, (k, v)) in records.iter().enumerate() {
        let mut r = vec![0u8]; // attributes
        put_varint(&mut r, 0); // timestamp delta
        put_varint(&mut r, i as i64); // offset delta
        put_bytes_field(&mut r, k.as_deref());
        put_bytes_field(&mut r, v.as_deref());
        put_varint(&mut r, 0); // headers
        put_varint(&mut body, r.len() as i64);
        body.extend_from_slice(&r);
    }
    let n = records.len() as i32;
    let mut b = Vec::with_capacity(HEADER_LEN + body.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&(n - 1).to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&producer_epoch.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(&body);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// One record of an uncompressed batch, as the readers below see it.
struct RawRecord<'a> {
    offset: i64,
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    /// The whole record, its length prefix included.
    bytes: &'a [u8],
}

/// A length-prefixed bytes field (-1: null) inside `r`.
fn get_bytes_field<'a>(r: &'a [u8], at: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = read_varint(r, at)?;
    if len < 0 {
        return Some(None);
    }
    let end = at.checked_add(usize::try_from(len).ok()?)?;
    let v = r.get(*at..end)?;
    *at = end;
    Some(Some(v))
}

/// Calls `f` with each record of an uncompressed batch `b` (exactly the batch `h` heads), in
/// order. `None`, perhaps after some calls, for a compressed batch or a malformed one: a record
/// whose fields run past its own length, an offset or timestamp that overflows, fewer records
/// than `records_count`, or bytes left after the last one. Every reader below goes through this,
/// so they agree on what a well-formed batch is.
fn each_record<'a>(b: &'a [u8], h: &BatchHeader, f: impl FnMut(RawRecord<'a>)) -> Option<()> {
    if h.compression() != 0 || b.len() != h.total_len() {
        return None;
    }
    walk_records(&b[HEADER_LEN..], h, f)
}

/// Calls `f` with each record of `records`, the records of the batch `h` heads as they are once
/// decompressed; the same rules as [`each_record`].
fn walk_records<'a>(b: &'a [u8], h: &BatchHeader, mut f: impl FnMut(RawRecord<'a>)) -> Option<()> {
    let mut at = 0;
    for _ in 0..h.records_count {
        let start = at;
        let len = read_varint(b, &mut at)?;
        let end = at.checked_add(usize::try_from(len).ok()?)?;
        let r = b.get(..end)?;
        let mut c = at + 1; // attributes
        let timestamp = h.base_timestamp.checked_add(read_varint(r, &mut c)?)?;
        let offset = h.base_offset.checked_add(read_varint(r, &mut c)?)?;
        let key = get_bytes_field(r, &mut c)?;
        let value = get_bytes_field(r, &mut c)?;
        f(RawRecord { offset, timestamp, key, value, bytes: &b[start..end] });
        at = end;
    }
    (at == b.len()).then_some(())
}

/// Key and value of each record of an uncompressed batch; `None` for compressed or malformed ones.
pub fn key_values(b: &[u8], h: &BatchHeader) -> Option<Vec<(Option<Bytes>, Option<Bytes>)>> {
    let mut out = Vec::new();
    each_record(b, h, |r| out.push((r.key.map(Bytes::copy_from_slice), r.value.map(Bytes::copy_from_slice))))?;
    Some(out)
}

/// A record as compaction sees it.
pub struct RecordView<'a> {
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    /// A null value: a tombstone.
    pub tombstone: bool,
}

/// Compaction's filter: the batch `b` with only the records `keep` accepts, their bytes and the
/// batch's base offset, last offset delta and timestamps unchanged (so offsets and the
/// segment's end stay where they were), the count and CRC redone. `Some(None)` when no record
/// is kept; `None` for a compressed or malformed batch, which the caller keeps whole.
pub fn retain(b: &[u8], h: &BatchHeader, mut keep: impl FnMut(&RecordView<'_>) -> bool) -> Option<Option<Bytes>> {
    let mut body = Vec::new();
    let mut kept = 0i32;
    visit(b, h, |r, bytes| {
        if keep(r) {
            body.extend_from_slice(bytes);
            kept += 1;
        }
    })?;
    if kept == 0 {
        return Some(None);
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&b[..HEADER_LEN]);
    out.extend_from_slice(&body);
    let batch_length = (out.len() - LOG_OVERHEAD) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    out[57..61].copy_from_slice(&kept.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Some(Some(Bytes::from(out)))
}

/// `b` with delete horizon `horizon_ms` (KIP-534, as Kafka's cleaner stamps a marker it may
/// drop later): the base timestamp becomes the horizon, each record's timestamp delta moves so
/// that its timestamp stays, attribute bit 6 is set and the CRC computed again. `None` for a
/// compressed or malformed batch.
pub fn with_delete_horizon(b: &[u8], h: &BatchHeader, horizon_ms: i64) -> Option<Bytes> {
    let mut body = Vec::new();
    let mut bad = false;
    each_record(b, h, |r| {
        // The record: its length, attributes, timestamp delta, then the rest unchanged.
        let mut at = 0;
        let Some(_) = read_varint(r.bytes, &mut at) else { return bad = true };
        let attrs_at = at;
        let mut c = attrs_at + 1;
        if read_varint(r.bytes, &mut c).is_none() || r.bytes.len() < attrs_at + 1 {
            return bad = true;
        }
        let mut rec = vec![r.bytes[attrs_at]];
        put_varint(&mut rec, r.timestamp - horizon_ms);
        rec.extend_from_slice(&r.bytes[c..]);
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    })?;
    if bad {
        return None;
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&b[..HEADER_LEN]);
    out.extend_from_slice(&body);
    let batch_length = (out.len() - LOG_OVERHEAD) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    out[21..23].copy_from_slice(&(h.attributes | ATTR_DELETE_HORIZON).to_be_bytes());
    out[27..35].copy_from_slice(&horizon_ms.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Some(Bytes::from(out))
}

/// Calls `f` with each record of an uncompressed batch and the record's bytes; `None` (having
/// called `f` for some records, perhaps) for a compressed or malformed batch.
pub fn visit(b: &[u8], h: &BatchHeader, mut f: impl FnMut(&RecordView<'_>, &[u8])) -> Option<()> {
    each_record(b, h, |r| f(&RecordView { offset: r.offset, key: r.key, tombstone: r.value.is_none() }, r.bytes))
}

/// Each record's (offset, timestamp), compressed batches decompressed into at most
/// `decompressed_max` bytes. `None` for LogAppendTime batches (every record has the batch's
/// time), malformed records, or a batch that does not decompress within the bound: callers then
/// fall back to the batch-level timestamps.
pub fn record_timestamps(b: &[u8], h: &BatchHeader, decompressed_max: usize) -> Option<Vec<(i64, i64)>> {
    if h.is_log_append_time() || b.len() != h.total_len() {
        return None;
    }
    let mut out = Vec::new();
    if h.compression() == codec::NONE {
        each_record(b, h, |r| out.push((r.offset, r.timestamp)))?;
    } else {
        let records = codec::decompress(h.compression(), &b[HEADER_LEN..], decompressed_max).ok()?;
        walk_records(&records, h, |r| out.push((r.offset, r.timestamp)))?;
    }
    Some(out)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn put_varint(buf: &mut BytesMut, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            buf.put_u8((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
        buf.put_u8(z as u8);
    }

    #[test]
    fn recompress_changes_only_the_codec_and_keeps_every_record() {
        let deltas: Vec<i64> = (0..200).map(|i| (i * 7) % 50).collect();
        for from in [codec::NONE, codec::GZIP, codec::SNAPPY, codec::LZ4, codec::ZSTD] {
            let b = make_batch_with(&deltas, 1_000, from);
            let h = validate(&b).unwrap();
            let want = record_timestamps(&b, &h, 1 << 20).unwrap();
            for to in [codec::NONE, codec::GZIP, codec::SNAPPY, codec::LZ4, codec::ZSTD] {
                let Some(out) = recompress(&b, &h, to, 1 << 20).unwrap() else {
                    assert_eq!(from, to, "only the same codec is left alone");
                    continue;
                };
                let oh = validate(&out).unwrap();
                assert_eq!(oh.compression(), to);
                let same = |x: &BatchHeader| (x.base_offset, x.last_offset_delta, x.base_timestamp, x.max_timestamp, x.producer_id, x.base_sequence, x.records_count, x.attributes & !ATTR_COMPRESSION_MASK);
                assert_eq!(same(&oh), same(&h), "{from} -> {to}");
                assert_eq!(record_timestamps(&out, &oh, 1 << 20).unwrap(), want, "{from} -> {to}");
            }
            // Bounded: records larger than the bound are refused, not allocated.
            if from != codec::NONE {
                assert!(recompress(&b, &h, codec::NONE, 100).unwrap_err().contains("more than 100"));
            }
        }
        // A count that does not match the records is refused.
        let b = make_batch_with(&deltas, 1_000, codec::GZIP);
        let mut bad = b.to_vec();
        bad[57..61].copy_from_slice(&201i32.to_be_bytes());
        bad[23..27].copy_from_slice(&201i32.to_be_bytes());
        let crc = crc32c::crc32c(&bad[CRC_START..]);
        bad[17..21].copy_from_slice(&crc.to_be_bytes());
        let h = validate(&bad).unwrap();
        assert!(recompress(&bad, &h, codec::ZSTD, 1 << 20).unwrap_err().contains("do not parse"));
    }

    /// Builds a valid uncompressed batch of `n` records with 1 ms apart timestamps.
    pub fn make_batch(n: i32, base_ts: i64) -> Bytes {
        make_batch_with((0..n as i64).collect::<Vec<_>>().as_slice(), base_ts, codec::NONE)
    }

    /// Builds a valid batch with one record per timestamp delta (in any order), its records
    /// compressed with `codec`.
    pub fn make_batch_with(ts_deltas: &[i64], base_ts: i64, codec: i16) -> Bytes {
        let n = ts_deltas.len() as i32;
        let mut recs = BytesMut::new();
        for (i, delta) in ts_deltas.iter().enumerate() {
            let mut r = BytesMut::new();
            r.put_i8(0);
            put_varint(&mut r, *delta); // timestamp delta
            put_varint(&mut r, i as i64); // offset delta
            put_varint(&mut r, -1); // null key
            put_varint(&mut r, 3);
            r.put_slice(b"abc");
            put_varint(&mut r, 0); // headers
            put_varint(&mut recs, r.len() as i64);
            recs.put_slice(&r);
        }
        let recs = codec::tests::compress(codec, &recs);
        let mut b = BytesMut::new();
        b.put_i64(0);
        b.put_i32((HEADER_LEN - LOG_OVERHEAD + recs.len()) as i32);
        b.put_i32(-1);
        b.put_i8(2);
        b.put_u32(0);
        b.put_i16(codec);
        b.put_i32(n - 1);
        b.put_i64(base_ts);
        b.put_i64(base_ts + ts_deltas.iter().copied().max().unwrap_or(0));
        b.put_i64(-1);
        b.put_i16(-1);
        b.put_i32(-1);
        b.put_i32(n);
        b.put_slice(&recs);
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b.freeze()
    }

    #[test]
    fn valid_batch_round_trips_and_patches() {
        let b = make_batch(3, 1000);
        let h = validate(&b).unwrap();
        assert_eq!((h.records_count, h.last_offset_delta, h.max_timestamp), (3, 2, 1002));
        let mut m = b.to_vec();
        patch(&mut m, 500, 7, None);
        let h2 = validate(&m).unwrap();
        assert_eq!((h2.base_offset, h2.leader_epoch, h2.last_offset()), (500, 7, 502));
        patch(&mut m, 500, 7, Some(99_999));
        let h3 = validate(&m).unwrap();
        assert!(h3.is_log_append_time());
        assert_eq!(h3.max_timestamp, 99_999);
    }

    #[test]
    fn request_batches_are_carved_out_of_an_unshared_frame_and_copied_otherwise() {
        let (big, small) = (make_batch(200, 0), make_batch(1, 0));
        let (big_at, small_at) = (10, 10 + big.len() + 5);
        let frame = || {
            let mut f = BytesMut::new();
            f.put_slice(b"header....");
            f.put_slice(&big);
            f.put_slice(b"names");
            f.put_slice(&small);
            f.freeze()
        };
        let parts = |frame: &Bytes| {
            let b = frame.slice(big_at..big_at + big.len());
            let s = frame.slice(small_at..small_at + small.len());
            vec![vec![split(&b).unwrap().remove(0)], vec![split(&s).unwrap().remove(0)]]
        };
        let check = |out: &Vec<Vec<(BytesMut, BatchHeader)>>| {
            assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
            assert_eq!((&out[0][0].0[..], &out[1][0].0[..]), (&big[..], &small[..]));
            assert_eq!((out[0][0].1.records_count, out[1][0].1.records_count), (200, 1));
        };

        // Nothing else holds the frame: the big batch keeps its bytes, the small one (under half
        // the frame) is copied.
        let f = frame();
        let addr = f.as_ptr() as usize;
        let p = parts(&f);
        let mut out = own_batches(f, p);
        check(&out);
        assert_eq!(out[0][0].0.as_ptr() as usize, addr + big_at, "the big batch is not copied");
        assert_ne!(out[1][0].0.as_ptr() as usize, addr + small_at, "the small batch is copied");
        patch(&mut out[0][0].0, 77, 3, None);
        assert_eq!(validate(&out[0][0].0).unwrap().base_offset, 77);

        // Someone else still holds the frame: every batch is copied and the frame is untouched.
        let f = frame();
        let keep = f.clone();
        let p = parts(&f);
        let mut out = own_batches(f, p);
        check(&out);
        assert!(out.iter().flatten().all(|(b, _)| !keep.as_ptr_range().contains(&b.as_ptr())));
        patch(&mut out[0][0].0, 77, 3, None);
        assert_eq!(&keep[big_at..big_at + big.len()], &big[..]);
    }

    #[test]
    fn bad_crc_magic_and_lengths_are_refused() {
        let b = make_batch(2, 0);
        let mut m = b.to_vec();
        let last = m.len() - 1;
        m[last] ^= 1;
        assert!(matches!(validate(&m), Err(BatchError::Corrupt(_))));
        let mut m = b.to_vec();
        m[16] = 1;
        assert_eq!(validate(&m), Err(BatchError::UnsupportedMagic(1)));
        let short = b.slice(0..b.len() - 1);
        assert!(split(&short).is_err());
        assert!(split(&Bytes::new()).is_err());
        let mut two = BytesMut::new();
        two.put_slice(&b);
        two.put_slice(&b);
        assert_eq!(split(&two.freeze()).unwrap().len(), 2);
    }

    #[test]
    fn scan_stops_at_torn_tail_and_ignores_zero_padding() {
        let b = make_batch(2, 0);
        let mut seg = b.to_vec();
        seg.extend_from_slice(&b);
        let whole = seg.len();
        seg.extend_from_slice(&[0u8; 100]);
        let mut n = 0;
        let end = scan(&seg, |_, _| n += 1);
        assert_eq!((n, end.valid_len, end.problem.clone()), (2, whole, None));
        let torn = &seg[..whole - 5];
        let end = scan(torn, |_, _| {});
        assert_eq!(end.valid_len, b.len());
        assert!(end.problem.is_some());
    }

    #[test]
    fn built_batches_validate_and_read_back() {
        let recs = vec![(Some(Bytes::from("k1")), Some(Bytes::from("v1"))), (Some(Bytes::from("k2")), None)];
        let b = build(&recs, 123);
        let h = validate(&b).unwrap();
        assert_eq!((h.records_count, h.last_offset_delta, h.max_timestamp), (2, 1, 123));
        assert_eq!(key_values(&b, &h).unwrap(), recs);
    }

    #[test]
    fn record_timestamps_of_uncompressed_batch() {
        let b = make_batch(3, 50);
        let h = validate(&b).unwrap();
        assert_eq!(record_timestamps(&b, &h, 1 << 20).unwrap(), vec![(0, 50), (1, 51), (2, 52)]);
    }

    /// Timestamps out of order inside a batch, in every codec: each record keeps its own, so a
    /// lookup by timestamp can name the record rather than the batch's last offset.
    #[test]
    fn record_timestamps_of_compressed_batches_are_each_records_own() {
        for codec in [codec::NONE, codec::GZIP, codec::SNAPPY, codec::LZ4, codec::ZSTD] {
            let b = make_batch_with(&[100, 400, 250], 1_000, codec);
            let h = validate(&b).unwrap();
            assert_eq!((h.compression(), h.max_timestamp), (codec, 1_400));
            assert_eq!(record_timestamps(&b, &h, 1 << 20).unwrap(), vec![(0, 1_100), (1, 1_400), (2, 1_250)], "codec {codec}");
            if codec != codec::NONE {
                assert_eq!(record_timestamps(&b, &h, 10), None, "codec {codec}: past the bound, no answer");
            }
        }
    }

    /// Found by fuzzing: `visit` accepted a record whose value ran past the record's own length
    /// while `key_values` refused it, so compaction and the offsets replay disagreed. Every
    /// reader now refuses it, and refuses offsets that overflow.
    #[test]
    fn readers_agree_on_malformed_records() {
        let good = make_batch(1, 0);
        let h = validate(&good).unwrap();
        assert!(visit(&good, &h, |_, _| {}).is_some() && key_values(&good, &h).is_some());
        // The one record: length, attributes, ts delta, offset delta, key -1, value 3 "abc",
        // headers 0. Shorten its declared length by one so the value runs past it, and let a
        // trailing byte keep the batch length.
        let mut m = good.to_vec();
        m[HEADER_LEN] -= 2; // zigzag: length - 1
        m.push(0);
        let len = (m.len() - LOG_OVERHEAD) as i32;
        m[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&m[CRC_START..]);
        m[17..21].copy_from_slice(&crc.to_be_bytes());
        let h = validate(&m).unwrap();
        assert!(visit(&m, &h, |_, _| {}).is_none());
        assert!(key_values(&m, &h).is_none());
        assert!(record_timestamps(&m, &h, 1 << 20).is_none());
        assert_eq!(retain(&m, &h, |_| true), None);
        // A base offset near i64::MAX (outside the CRC, so a flipped bit passes it).
        let mut m = make_batch(2, 0).to_vec();
        patch(&mut m, i64::MAX, 0, None);
        let h = validate(&m).unwrap();
        assert!(visit(&m, &h, |_, _| {}).is_none());
        assert!(record_timestamps(&m, &h, 1 << 20).is_none());
    }

    #[test]
    fn retain_keeps_chosen_records_with_their_offsets() {
        let k = |s: &str| Some(Bytes::from(s.to_string()));
        let mut raw = BytesMut::from(&build(&[(k("a"), k("1")), (k("b"), None), (k("a"), k("2")), (None, k("x"))], 5)[..]);
        patch(&mut raw, 100, 0, None);
        let raw = raw.freeze();
        let h = validate(&raw).unwrap();
        let mut seen = Vec::new();
        let out = retain(&raw, &h, |r| {
            seen.push((r.offset, r.key.map(|k| k.to_vec()), r.tombstone));
            r.offset != 100 && !r.tombstone
        });
        assert_eq!(
            seen,
            vec![(100, Some(b"a".to_vec()), false), (101, Some(b"b".to_vec()), true), (102, Some(b"a".to_vec()), false), (103, None, false)]
        );
        let out = out.unwrap().unwrap();
        let h2 = validate(&out).expect("a valid batch, CRC redone");
        assert_eq!((h2.base_offset, h2.last_offset(), h2.records_count), (100, 103, 2), "offsets unchanged, two records");
        assert_eq!(key_values(&out, &h2).unwrap(), vec![(k("a"), k("2")), (None, k("x"))]);
        let ts = record_timestamps(&out, &h2, 1 << 20).unwrap();
        assert_eq!(ts.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![102, 103]);
        assert_eq!(retain(&raw, &h, |_| false), Some(None));
        let mut compressed = raw.to_vec();
        compressed[22] |= 1;
        let hc = parse_header(&compressed).unwrap();
        assert_eq!(retain(&compressed, &hc, |_| true), None, "compressed batches are kept whole by the caller");
    }

    #[test]
    fn markers_round_trip_and_other_batches_are_not_markers() {
        for (commit, coordinator_epoch) in [(true, 0), (false, 7), (true, i32::MAX)] {
            let m = Marker { commit, coordinator_epoch };
            let b = build_marker(42, 3, m, 1_000);
            let h = validate(&b).expect("a valid batch");
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence, h.records_count), (42, 3, -1, 1));
            assert_eq!(parse_marker(&b, &h), Some(m));
        }
        let plain = make_batch(1, 0);
        let h = validate(&plain).unwrap();
        assert!(!h.is_control() && !h.is_transactional());
        assert_eq!(parse_marker(&plain, &h), None);
    }
}
