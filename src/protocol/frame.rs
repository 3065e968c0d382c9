//! Request frames in, response frames out.
//!
//! A frame is a 4-byte big-endian length and that many bytes. The request header (key, version,
//! correlation id, client id, tagged fields) is decoded here; the body is decoded by the handler
//! table, which knows which versions it implements.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

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
    let header = RequestHeader::decode(&mut frame, header_version).map_err(|e| FrameError::BadHeader {
        api_key,
        api_version: p.api_version,
        correlation_id: p.correlation_id,
        reason: e.to_string(),
    })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsRequest;

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
