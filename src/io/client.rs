//! A small blocking Kafka client connection, for the `spate group` command line (not the broker).
//!
//! One [`Connection`] is one TCP stream to one broker, with connect, read and write timeouts
//! (`config::limits::CLIENT_*`). Frames are a 4-byte big-endian length and the bytes; requests
//! carry a header with client id `spate-cli`. On connecting it asks ApiVersions and from then on
//! sends every request at the highest version both the broker and the `kafka-protocol` crate
//! know, as real clients do; an API the broker lacks is refused with a message naming it. Requests
//! and responses are the `kafka-protocol` crate's types. Talks to any Kafka-compatible broker.
//!
//! Also the little else the command line needs from the operating system: opening an input file
//! ([`open_input`], `spate produce --file`) and turning Ctrl-C into a flag ([`catch_interrupts`],
//! `spate consume --follow`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use crate::config::limits::{CLIENT_CONNECT_TIMEOUT_MS, CLIENT_REQUEST_TIMEOUT_MS, CLIENT_RESPONSE_FRAME_MAX_BYTES};

/// The client id every request carries.
pub const CLIENT_ID: &str = "spate-cli";

/// ApiVersions is first asked at this version (v3 added the client's software name). A broker
/// that lacks it answers at v0 with UNSUPPORTED_VERSION and its list of APIs (KIP-511).
const API_VERSIONS_VERSION: i16 = 3;

/// Kafka's UNSUPPORTED_VERSION error code.
const UNSUPPORTED_VERSION: i16 = 35;

/// A connection to one broker. Blocking; owned by the thread that opened it.
pub struct Connection {
    stream: TcpStream,
    addr: String,
    correlation_id: i32,
    /// (API key, min version, max version) as the broker advertised them.
    versions: Vec<(i16, i16, i16)>,
}

impl Connection {
    /// Connects to `addr` (host:port) and asks the broker which API versions it supports.
    pub fn open(addr: &str) -> Result<Connection> {
        let stream = connect(addr)?;
        let mut c = Connection { stream, addr: addr.to_string(), correlation_id: 0, versions: Vec::new() };
        c.negotiate().with_context(|| format!("asking {addr} for its API versions"))?;
        Ok(c)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The APIs the broker advertised in ApiVersions: (API key, min version, max version).
    pub fn api_versions(&self) -> &[(i16, i16, i16)] {
        &self.versions
    }

    /// The highest version of `Q` both sides support, or an error naming the API.
    pub fn version<Q: Request>(&self) -> Result<i16> {
        let name = api_name(Q::KEY);
        let Some(&(_, min, max)) = self.versions.iter().find(|v| v.0 == Q::KEY) else {
            bail!("the broker at {} does not support the {name} API (key {}), which this command needs", self.addr, Q::KEY);
        };
        let (ours_min, ours_max) = (Q::VERSIONS.min, Q::VERSIONS.max);
        let v = max.min(ours_max);
        if v < min.max(ours_min) {
            bail!(
                "the broker at {} supports {name} versions {min}-{max}, this client {ours_min}-{ours_max}: none in common",
                self.addr
            );
        }
        Ok(v)
    }

    /// Sends the request `build` makes for the negotiated version and returns that version with
    /// the decoded response.
    pub fn call<Q: Request>(&mut self, build: impl FnOnce(i16) -> Q) -> Result<(i16, Q::Response)> {
        let version = self.version::<Q>()?;
        let req = build(version);
        let name = api_name(Q::KEY);
        let mut resp = self
            .round_trip(Q::KEY, version, Q::header_version(version), &req)
            .with_context(|| format!("{name} v{version} to {}", self.addr))?;
        let r = <Q::Response as HeaderVersion>::header_version(version);
        let decoded = decode_response::<Q::Response>(&mut resp, r, version, self.correlation_id)
            .with_context(|| format!("decoding the {name} v{version} response from {}", self.addr))?;
        Ok((version, decoded))
    }

    fn negotiate(&mut self) -> Result<()> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let v = API_VERSIONS_VERSION;
        let mut resp = self.round_trip(ApiKey::ApiVersions as i16, v, ApiVersionsRequest::header_version(v), &req)?;
        let header = ResponseHeader::decode(&mut resp, 0).map_err(|e| anyhow!("bad response header: {e}"))?;
        check_correlation(header.correlation_id, self.correlation_id)?;
        if resp.len() < 2 {
            bail!("empty ApiVersions response");
        }
        let error = i16::from_be_bytes([resp[0], resp[1]]);
        // An older broker answers in v0, whatever was asked, when it does not know the version.
        let body_version = if error == UNSUPPORTED_VERSION { 0 } else { v };
        let body = ApiVersionsResponse::decode(&mut resp, body_version).map_err(|e| anyhow!("bad ApiVersions response: {e}"))?;
        if body.error_code != 0 && body.api_keys.is_empty() {
            bail!("ApiVersions failed with error code {}", body.error_code);
        }
        self.versions = body.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect();
        Ok(())
    }

    /// Writes one request frame and reads the response frame (header and body still encoded).
    fn round_trip<Q: Encodable>(&mut self, key: i16, version: i16, header_version: i16, req: &Q) -> Result<Bytes> {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut body = BytesMut::new();
        header.encode(&mut body, header_version).map_err(|e| anyhow!("encoding the request header: {e}"))?;
        req.encode(&mut body, version).map_err(|e| anyhow!("encoding the request: {e}"))?;
        let mut frame = BytesMut::with_capacity(4 + body.len());
        frame.put_i32(i32::try_from(body.len()).context("request too large")?);
        frame.put_slice(&body);
        self.stream.write_all(&frame).map_err(|e| io_error(e, "sending"))?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).map_err(|e| io_error(e, "reading the response"))?;
        let len = i32::from_be_bytes(len);
        if len < 0 || len as usize > CLIENT_RESPONSE_FRAME_MAX_BYTES {
            bail!("the broker announced a response of {len} bytes (at most {CLIENT_RESPONSE_FRAME_MAX_BYTES} accepted)");
        }
        let mut buf = vec![0u8; len as usize];
        self.stream.read_exact(&mut buf).map_err(|e| io_error(e, "reading the response"))?;
        Ok(Bytes::from(buf))
    }
}

fn decode_response<R: Decodable>(resp: &mut Bytes, header_version: i16, version: i16, correlation_id: i32) -> Result<R> {
    let header = ResponseHeader::decode(resp, header_version).map_err(|e| anyhow!("bad response header: {e}"))?;
    check_correlation(header.correlation_id, correlation_id)?;
    R::decode(resp, version).map_err(|e| anyhow!("{e}"))
}

fn check_correlation(got: i32, want: i32) -> Result<()> {
    if got != want {
        bail!("response has correlation id {got}, expected {want}");
    }
    Ok(())
}

/// Resolves `addr` and connects to the first address that answers, with timeouts set.
fn connect(addr: &str) -> Result<TcpStream> {
    let addrs: Vec<_> = addr.to_socket_addrs().with_context(|| format!("resolving {addr}"))?.collect();
    let timeout = Duration::from_millis(CLIENT_CONNECT_TIMEOUT_MS);
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                let request_timeout = Some(Duration::from_millis(CLIENT_REQUEST_TIMEOUT_MS));
                s.set_read_timeout(request_timeout)?;
                s.set_write_timeout(request_timeout)?;
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(anyhow!("cannot connect to {addr}: {e}")),
        None => Err(anyhow!("{addr} resolves to no address")),
    }
}

fn io_error(e: std::io::Error, doing: &str) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            anyhow!("{doing}: no answer within {} ms", CLIENT_REQUEST_TIMEOUT_MS)
        }
        std::io::ErrorKind::UnexpectedEof => anyhow!("{doing}: the broker closed the connection"),
        _ => anyhow!("{doing}: {e}"),
    }
}

/// The API's name as Kafka spells it (`OffsetCommit`), or its key.
pub fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(_) => format!("key {key}"),
    }
}

/// Opens `path` for reading, with the path in the error.
pub fn open_input(path: &Path) -> Result<Box<dyn Read>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Box::new(f))
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// From now on SIGINT (Ctrl-C) and SIGTERM set a flag, read by [`interrupted`], instead of
/// ending the process, so a command can finish cleanly (print, commit) and exit 0.
pub fn catch_interrupts() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(SigHandler::Handler(on_interrupt), SaFlags::SA_RESTART, SigSet::empty());
    for s in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(s, &action) }.with_context(|| format!("installing a {s} handler"))?;
    }
    Ok(())
}

/// True once SIGINT or SIGTERM arrived after [`catch_interrupts`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}
