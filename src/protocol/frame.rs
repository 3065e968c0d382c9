//! Request frames in, response frames out.
//!
//! A frame is a 4-byte big-endian length and that many bytes. The request header (key, version,
//! correlation id, client id, tagged fields) is decoded here; the body is decoded by the handler
//! table, which knows which versions it implements.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FetchResponse, RequestHeader, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Why a frame could not be turned into a request.
#[derive(Debug)]
pub enum FrameError {
    /// Shorter than the fixed part of every request header.
    TooShort(usize),
    /// An API key Kafka does not define.
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    /// The header did not decode.
    BadHeader { api_key: ApiKey, api_version: i16, correlation_id: i32, reason: String },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooShort(n) => write!(f, "request frame of {n} bytes is shorter than a header"),
            FrameError::UnknownApiKey { api_key, correlation_id } => {
                write!(f, "unknown API key {api_key} (correlation id {correlation_id})")
            }
            FrameError::BadHeader { api_key, api_version, correlation_id, reason } => write!(
                f,
                "malformed {api_key:?} v{api_version} request header (correlation id {correlation_id}): {reason}"
            ),
        }
    }
}

/// The fixed start of every request header: enough to answer even when the rest is bad.
#[derive(Debug, Clone, Copy)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

pub fn peek_prefix(frame: &[u8]) -> Option<HeaderPrefix> {
    if frame.len() < 8 {
        return None;
    }
    let mut b = &frame[..8];
    Some(HeaderPrefix { api_key: b.get_i16(), api_version: b.get_i16(), correlation_id: b.get_i32() })
}

/// Decodes a request header; returns it with the API key and the remaining body bytes.
///
/// `api_version` may lie outside what Spate implements: the caller decides what to answer.
pub fn decode_request(mut frame: Bytes) -> Result<(ApiKey, RequestHeader, Bytes), FrameError> {
    let p = peek_prefix(&frame).ok_or(FrameError::TooShort(frame.len()))?;
    let api_key = ApiKey::try_from(p.api_key)
        .map_err(|_| FrameError::UnknownApiKey { api_key: p.api_key, correlation_id: p.correlation_id })?;
    let header_version = api_key.request_header_version(p.api_version);
    let mut header = RequestHeader::decode(&mut frame, header_version).map_err(|e| FrameError::BadHeader {
        api_key,
        api_version: p.api_version,
        correlation_id: p.correlation_id,
        reason: e.to_string(),
    })?;
    if api_key == ApiKey::Produce {
        // A produce request's batches are appended in the frame's own bytes, which needs every
        // other reference to the frame gone: the header keeps copies, not slices.
        header.client_id = header.client_id.map(|c| StrBytes::from_string(c.to_string()));
        header.unknown_tagged_fields.clear();
    }
    Ok((api_key, header, frame))
}

/// Encodes a response frame (length prefix included) for `api_key` at `version`.
///
/// Fails only when the response cannot be represented at that version (a handler bug).
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> anyhow::Result<BytesMut> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    // ApiVersions responses always use header v0, so a client that sent a version we do not
    // support can still read the answer (KIP-511).
    let header_version =
        if api_key == ApiKey::ApiVersions { 0 } else { api_key.response_header_version(version) };
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header.encode(&mut buf, header_version)?;
    body.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// An encoded response frame, as chunks to write in order.
#[derive(Debug, Clone)]
pub struct Frame {
    pub chunks: Vec<Bytes>,
}

impl Frame {
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame's bytes in one buffer (tests).
    pub fn to_vec(&self) -> Vec<u8> {
        self.chunks.concat()
    }
}

impl From<BytesMut> for Frame {
    fn from(b: BytesMut) -> Frame {
        Frame { chunks: vec![b.freeze()] }
    }
}

/// Record sets at least this large go out by reference; smaller ones are copied into the frame
/// (one more send costs more than copying a few KiB).
pub const SHARED_RECORDS_MIN_BYTES: usize = 16 * 1024;

/// Encodes a Fetch response frame without copying its record bytes: kafka-protocol encodes the
/// length prefix, header and every field, and each partition's records of at least
/// [`SHARED_RECORDS_MIN_BYTES`] become a chunk of their own that shares the fetched bytes (from
/// the batch cache or a segment read), so record data is never re-encoded or copied before the
/// socket.
pub fn encode_fetch_response(version: i16, correlation_id: i32, body: &FetchResponse) -> anyhow::Result<Frame> {
    let shared: Vec<Bytes> = body
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.clone())
        .filter(|r| r.len() >= SHARED_RECORDS_MIN_BYTES)
        .collect();
    let header_version = ApiKey::Fetch.response_header_version(version);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let size = header.compute_size(header_version)? + body.compute_size(version)?;
    let mut buf = Chunked { done: Vec::new(), sealed: 0, cur: BytesMut::with_capacity(256), shared: &shared };
    buf.put_i32(i32::try_from(size).map_err(|_| anyhow::anyhow!("fetch response of {size} bytes"))?);
    header.encode(&mut buf, header_version)?;
    body.encode(&mut buf, version)?;
    let mut chunks = buf.done;
    if !buf.cur.is_empty() {
        chunks.push(buf.cur.freeze());
    }
    let frame = Frame { chunks };
    anyhow::ensure!(frame.len() == size + 4, "fetch response encoded to {} bytes, computed {}", frame.len(), size + 4);
    Ok(frame)
}

/// A `BufMut` that writes into `cur`, except that a slice which is exactly one of `shared` is
/// taken by reference: `cur` is sealed into `done` and the shared `Bytes` follows it. The
/// encoder writes a byte field with one `put_slice` of the whole value, which is what is matched
/// (by address and length).
struct Chunked<'a> {
    done: Vec<Bytes>,
    /// Bytes in `done`.
    sealed: usize,
    cur: BytesMut,
    shared: &'a [Bytes],
}

// SAFETY: every method forwards to `cur`, a BytesMut, which upholds BufMut's contract.
unsafe impl BufMut for Chunked<'_> {
    fn remaining_mut(&self) -> usize {
        self.cur.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `cur`'s chunk_mut, as BufMut requires.
        unsafe { self.cur.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        self.cur.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= SHARED_RECORDS_MIN_BYTES {
            if let Some(b) = self.shared.iter().find(|b| b.as_ptr() == src.as_ptr() && b.len() == src.len()) {
                if !self.cur.is_empty() {
                    self.sealed += self.cur.len();
                    self.done.push(self.cur.split().freeze());
                }
                self.sealed += b.len();
                self.done.push(b.clone());
                return;
            }
        }
        self.cur.extend_from_slice(src);
    }
}

// Message encoding never seeks back (only record-batch compression does, which this buffer
// never sees); offsets inside the current chunk still work.
impl ByteBufMut for Chunked<'_> {
    fn offset(&self) -> usize {
        self.sealed + self.cur.len()
    }

    fn seek(&mut self, offset: usize) {
        let at = offset.checked_sub(self.sealed).expect("Chunked: seek into a sealed chunk");
        self.cur.resize(at, 0);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        let start = r.start.checked_sub(self.sealed).expect("Chunked: range in a sealed chunk");
        &mut self.cur[start..r.end - self.sealed]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsRequest;

    /// The chunked Fetch encoding is byte for byte the copying one, at every version, with
    /// large record sets shared and small ones copied.
    #[test]
    fn fetch_frames_share_large_record_sets_and_match_the_copying_encoding() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::TopicName;
        use kafka_protocol::protocol::StrBytes;
        let big = Bytes::from(vec![7u8; 100_000]);
        let small = Bytes::from(vec![9u8; 100]);
        let mut t = FetchableTopicResponse::default().with_topic(TopicName(StrBytes::from_static_str("t")));
        for (i, r) in [Some(big.clone()), Some(small), None, Some(big.slice(..50_000))].into_iter().enumerate() {
            t.partitions.push(PartitionData::default().with_partition_index(i as i32).with_high_watermark(5).with_records(r));
        }
        let resp = FetchResponse::default().with_responses(vec![t]);
        for version in 4..=18 {
            let copied = encode_response(ApiKey::Fetch, version, 42, &ResponseKind::Fetch(resp.clone())).unwrap();
            let frame = encode_fetch_response(version, 42, &resp).unwrap();
            assert_eq!(frame.to_vec(), copied.to_vec(), "v{version}");
            let shared = frame.chunks.iter().filter(|c| c.as_ptr() == big.as_ptr()).count();
            assert_eq!(shared, 2, "v{version}: both slices of the big record set are shared, not copied");
        }
    }

    fn request_bytes(key: i16, version: i16, corr: i32, body: &impl Encodable) -> Bytes {
        let mut buf = BytesMut::new();
        let mut h = RequestHeader::default();
        h.request_api_key = key;
        h.request_api_version = version;
        h.correlation_id = corr;
        let hv = ApiKey::try_from(key).unwrap().request_header_version(version);
        h.encode(&mut buf, hv).unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn decodes_header_and_leaves_body() {
        let body = ApiVersionsRequest::default();
        let frame = request_bytes(18, 3, 42, &body);
        let (key, header, rest) = decode_request(frame).unwrap();
        assert_eq!(key, ApiKey::ApiVersions);
        assert_eq!(header.correlation_id, 42);
        let decoded = ApiVersionsRequest::decode(&mut rest.clone(), 3).unwrap();
        assert_eq!(decoded, body);
    }

    #[test]
    fn short_and_unknown_frames_are_errors_not_panics() {
        assert!(matches!(decode_request(Bytes::from_static(&[0, 1])), Err(FrameError::TooShort(2))));
        let f = Bytes::from_static(&[0x7f, 0x00, 0, 0, 0, 0, 0, 9]);
        assert!(matches!(decode_request(f), Err(FrameError::UnknownApiKey { correlation_id: 9, .. })));
        // A flexible header whose client id length runs past the end.
        let f = Bytes::from_static(&[0, 18, 0, 3, 0, 0, 0, 1, 0x7f, 0xff]);
        assert!(matches!(decode_request(f), Err(FrameError::BadHeader { .. })));
    }
}
