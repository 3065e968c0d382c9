//! Entry points for the fuzz targets in `fuzz/` and for replaying their corpora on stable Rust
//! (`tests/fuzz_corpus.rs`). Not part of Spate's API.
//!
//! Each function takes arbitrary bytes, runs exactly the code the broker runs on bytes it does
//! not trust (a request frame, a record batch, a segment and its index files, a
//! `__consumer_offsets` record, a SASL message), and asserts what that code promises beyond "no panic": round
//! trips, and that whatever it accepts is well formed. A panic here is a bug in Spate (or in the
//! vendored `kafka-protocol`), never in the input.
//!
//! Some targets take a leading flags byte so the fuzzer can reach the code behind a CRC: with
//! [`FIX_CRC`] set, the CRC-32C of every batch whose length fits is recomputed before the bytes
//! are used.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Encodable;

use crate::admin::cluster::decode_assignment;
use crate::config::limits::REQUEST_FRAME_MAX_BYTES;
use crate::coordinator::offsets::{self, Record};
use crate::protocol::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use crate::protocol::frame;
use crate::server::groups::subscribed_topics;
use crate::server::handlers::{self, api_versions};
use crate::protocol::sasl::{self, ScramCredential, ScramMechanism, ScramServer};
use crate::storage::index::SegmentIndex;
use crate::storage::log::{index_entry_matches, SegmentScan};

/// Flags-byte bit: recompute each batch's CRC-32C before use.
pub const FIX_CRC: u8 = 1;

/// How the broker treats one request frame (the bytes after the length prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Refused by its size before decoding: the connection is closed.
    SizeRefused,
    /// The header did not decode (too short, unknown API key, bad header): closed.
    BadFrame,
    /// ApiVersions: answered from the handler table whatever the body holds.
    ApiVersions,
    /// An API or version Spate does not implement: closed.
    Unsupported,
    /// The body did not decode: closed.
    Malformed,
    /// Decoded: the handler would run.
    Decoded(ApiKey),
}

/// One request frame, as `server::connection` and `server::handlers` take it up to the handler:
/// the size check, `frame::decode_request`, the ApiVersions answer (encoded), the version check
/// and `RequestKind::decode`; then the byte-level work the handlers do before touching any state
/// (produce's `batch::split`, the consumer-protocol metadata of JoinGroup and SyncGroup).
/// Asserts that a decoded request encodes and decodes back to itself.
pub fn request(frame_bytes: &[u8]) -> RequestOutcome {
    if frame_bytes.len() < 8 || frame_bytes.len() > REQUEST_FRAME_MAX_BYTES {
        return RequestOutcome::SizeRefused;
    }
    let Ok((key, header, mut body)) = frame::decode_request(Bytes::copy_from_slice(frame_bytes)) else {
        return RequestOutcome::BadFrame;
    };
    let v = header.request_api_version;
    if key == ApiKey::ApiVersions {
        let (resp, version) = api_versions::handle(v, body, 2);
        frame::encode_response(key, version, header.correlation_id, &resp)
            .expect("the ApiVersions answer encodes at the version handle() picked");
        return RequestOutcome::ApiVersions;
    }
    let Some(spec) = handlers::spec(key) else { return RequestOutcome::Unsupported };
    if v < spec.min || v > spec.max {
        return RequestOutcome::Unsupported;
    }
    let Ok(req) = RequestKind::decode(key, &mut body, v) else { return RequestOutcome::Malformed };
    inner_bytes(&req);
    let mut buf = BytesMut::new();
    req.encode(&mut buf, v).unwrap_or_else(|e| panic!("decoded {key:?} v{v} does not encode back: {e}"));
    let again = RequestKind::decode(key, &mut buf.freeze(), v)
        .unwrap_or_else(|e| panic!("re-encoded {key:?} v{v} does not decode: {e}"));
    assert_eq!(again, req, "{key:?} v{v} changed in an encode/decode round trip");
    RequestOutcome::Decoded(key)
}

/// A request frame for an implemented API built from `data`: its first byte picks the API (an
/// index into `handlers::SUPPORTED`), the second a version in its range, the rest is the body
/// behind a well-formed header. Lets the fuzzer spend its time in body decoding.
pub fn request_body(data: &[u8]) -> RequestOutcome {
    let [api, version, body @ ..] = data else { return RequestOutcome::SizeRefused };
    let spec = &handlers::SUPPORTED[*api as usize % handlers::SUPPORTED.len()];
    let v = spec.min + (*version as i16 % (spec.max - spec.min + 1));
    let mut header = RequestHeader::default();
    header.request_api_key = spec.key as i16;
    header.request_api_version = v;
    header.correlation_id = 1;
    let mut buf = BytesMut::new();
    header.encode(&mut buf, spec.key.request_header_version(v)).expect("a default header encodes");
    buf.extend_from_slice(body);
    request(&buf)
}

/// What handlers read out of a decoded request's opaque byte fields.
fn inner_bytes(req: &RequestKind) {
    match req {
        RequestKind::Produce(r) => {
            for p in r.topic_data.iter().flat_map(|t| &t.partition_data) {
                if let Some(records) = &p.records {
                    split_and_check(records);
                }
            }
        }
        RequestKind::JoinGroup(r) => {
            for p in &r.protocols {
                subscribed_topics(&p.metadata);
            }
        }
        RequestKind::SyncGroup(r) => {
            for a in &r.assignments {
                decode_assignment(a.assignment.clone());
            }
        }
        _ => {}
    }
}

/// Recomputes the CRC-32C of each batch from the start of `b` whose length field fits.
fn fix_crcs(b: &mut [u8]) {
    let mut at = 0;
    while at + HEADER_LEN <= b.len() {
        let len = i32::from_be_bytes(b[at + 8..at + 12].try_into().expect("4 bytes"));
        let Ok(len) = usize::try_from(len) else { return };
        let end = at + LOG_OVERHEAD + len;
        if len < HEADER_LEN - LOG_OVERHEAD || end > b.len() {
            return;
        }
        let crc = crc32c::crc32c(&b[at + 21..end]);
        b[at + 17..at + 21].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
}

/// A flags byte, then a record set (a produce request's records, or a stretch of a segment): runs
/// `split`, `scan` and, on every batch they accept, every function that reads records
/// ([`check_batch`]), plus `patch` as produce applies it and `__consumer_offsets` decoding as
/// the offsets replay applies it.
pub fn record_batch(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if flags & FIX_CRC != 0 {
        fix_crcs(&mut bytes);
    }
    let records = Bytes::from(bytes);
    split_and_check(&records);
    let end = batch::scan(&records, |at, h| check_batch(&records[at..at + h.total_len()], h));
    assert!(end.valid_len <= records.len());
    if end.valid_len == records.len() {
        assert!(end.problem.is_none(), "a scan that covered everything reports no problem");
    }
}

fn split_and_check(records: &Bytes) {
    let Ok(batches) = batch::split(records) else { return };
    assert_eq!(batches.iter().map(|(b, _)| b.len()).sum::<usize>(), records.len(), "split covers every byte");
    for (b, h) in &batches {
        check_batch(b, h);
        // What produce does with it: patch in the broker-owned fields.
        for lat in [None, Some(h.base_timestamp ^ 0x5a5a)] {
            let mut m = b.to_vec();
            batch::patch(&mut m, 1 << 40, 7, lat);
            let p = batch::validate(&m).expect("a patched valid batch stays valid");
            assert_eq!((p.base_offset, p.leader_epoch, p.records_count), (1 << 40, 7, h.records_count));
            if let Some(ts) = lat {
                assert!(p.is_log_append_time());
                assert_eq!(p.max_timestamp, ts);
            }
        }
    }
}

/// Every reader of a batch `b` that `validate` accepted with header `h`, and how they agree.
pub fn check_batch(b: &[u8], h: &BatchHeader) {
    assert_eq!(batch::validate(b).as_ref(), Ok(h), "validate is a function of the bytes");
    assert_eq!(h.total_len(), b.len());
    let kvs = batch::key_values(b, h);
    let times = batch::record_timestamps(b, h, crate::config::limits::RECORDS_DECOMPRESSED_MAX_BYTES);
    let mut seen = Vec::new();
    let visited = batch::visit(b, h, |r, bytes| {
        assert!(!bytes.is_empty());
        seen.push((r.offset, r.key.map(<[u8]>::to_vec), r.tombstone));
    });
    if let Some(kvs) = &kvs {
        for (k, v) in kvs {
            if let Some(k) = k {
                // The offsets replay decodes every keyed record of `__consumer_offsets`.
                offsets_decode_checked(k, v.as_deref());
            }
        }
    }
    if visited.is_none() {
        return;
    }
    // visit read every record, exactly up to the end: the other readers agree with it.
    assert_eq!(seen.len(), h.records_count as usize);
    let kvs = kvs.expect("key_values reads a batch visit reads");
    assert_eq!(kvs.len(), seen.len());
    for ((k, v), (_, sk, tomb)) in kvs.iter().zip(&seen) {
        assert_eq!(k.as_deref(), sk.as_deref(), "key_values and visit disagree on a key");
        assert_eq!(v.is_none(), *tomb, "key_values and visit disagree on a tombstone");
    }
    if !h.is_log_append_time() {
        let times = times.expect("record_timestamps reads a batch visit reads");
        let offs: Vec<i64> = times.iter().map(|&(o, _)| o).collect();
        assert_eq!(offs, seen.iter().map(|s| s.0).collect::<Vec<_>>(), "record_timestamps and visit disagree on offsets");
    }
    // Compaction keeping every record writes back the same bytes.
    let all = batch::retain(b, h, |_| true).expect("retain reads a batch visit reads");
    match all {
        None => assert_eq!(h.records_count, 0, "retain(keep all) dropped records"),
        Some(out) => assert_eq!(&out[..], b, "retain(keep all) changed the batch"),
    }
    // Keeping some: a valid batch with the same offsets and timestamps, and the kept records.
    let mut i = 0;
    let mut kept = Vec::new();
    let some = batch::retain(b, h, |r| {
        i += 1;
        let keep = i % 2 == 1 || r.tombstone;
        if keep {
            kept.push(r.offset);
        }
        keep
    })
    .expect("retain reads a batch visit reads");
    let Some(out) = some else {
        assert!(kept.is_empty());
        return;
    };
    let h2 = batch::validate(&out).expect("retain produced an invalid batch");
    assert_eq!(
        (h2.base_offset, h2.last_offset_delta, h2.base_timestamp, h2.max_timestamp, h2.attributes),
        (h.base_offset, h.last_offset_delta, h.base_timestamp, h.max_timestamp, h.attributes),
        "retain changed the batch header"
    );
    assert_eq!(h2.records_count as usize, kept.len());
    let mut again = Vec::new();
    batch::visit(&out, &h2, |r, _| again.push(r.offset)).expect("a retained batch reads back");
    assert_eq!(again, kept, "retain kept other records than asked");
}

/// A `__consumer_offsets` record: a flags byte (bit 0: a null value, a tombstone), a u16 key
/// length, the key, the value. Runs `offsets::decode_record` as the offsets replay does and, on
/// a group record, the consumer-protocol decoding of each member's subscription and assignment;
/// asserts that what decodes encodes back to the same record. The raw value also goes through
/// the consumer-protocol decoders, which meet such bytes in JoinGroup and SyncGroup.
pub fn offsets_record(data: &[u8]) {
    let [flags, k0, k1, rest @ ..] = data else { return };
    let key_len = (u16::from_be_bytes([*k0, *k1]) as usize).min(rest.len());
    let (key, value) = rest.split_at(key_len);
    let value = (flags & 1 == 0).then_some(value);
    offsets_decode_checked(key, value);
    if let Some(v) = value {
        subscribed_topics(&Bytes::copy_from_slice(v));
        decode_assignment(Bytes::copy_from_slice(v));
    }
}

fn offsets_decode_checked(key: &[u8], value: Option<&[u8]>) {
    let Some(record) = offsets::decode_record(key, value) else { return };
    let (k, v) = match &record {
        Record::Offset { group, topic, partition, committed } => {
            (offsets::encode_key(group, topic, *partition), committed.as_ref().map(offsets::encode_value))
        }
        Record::Group { group, snapshot } => {
            for m in snapshot.iter().flat_map(|s| &s.members) {
                subscribed_topics(&m.subscription);
                decode_assignment(m.assignment.clone());
            }
            (offsets::encode_group_key(group), snapshot.as_ref().map(offsets::encode_group_value))
        }
        consumer => offsets::encode_consumer_record(consumer).expect("a consumer-group record encodes"),
    };
    assert_eq!(offsets::decode_record(&k, v.as_deref()).as_ref(), Some(&record), "record changed in an encode/decode round trip");
}

/// A segment as recovery finds it on disk: a flags byte ([`FIX_CRC`]; bits 1-2 pick
/// `index.interval.bytes`; bit 3 a base offset near `i64::MAX`), a u32 base offset, u16 lengths
/// of the `.index` and `.timeindex` files, those files, then the `.log` bytes. Runs
/// `SegmentIndex::decode` and the recovery walk (`storage::log::SegmentScan`) from where
/// recovery would start, and asserts the index round-trips and that offsets never go back.
pub fn segment(data: &[u8]) {
    let [flags, b0, b1, b2, b3, o0, o1, t0, t1, rest @ ..] = data else { return };
    let mut base = u32::from_be_bytes([*b0, *b1, *b2, *b3]) as i64;
    if flags & 8 != 0 {
        base = i64::MAX - base;
    }
    let index_interval = [0, 1, 4096, 1 << 20][(flags >> 1 & 3) as usize];
    let off_len = (u16::from_be_bytes([*o0, *o1]) as usize).min(rest.len());
    let (off_file, rest) = rest.split_at(off_len);
    let time_len = (u16::from_be_bytes([*t0, *t1]) as usize).min(rest.len());
    let (time_file, log) = rest.split_at(time_len);
    let mut log = log.to_vec();
    if flags & FIX_CRC != 0 {
        fix_crcs(&mut log);
    }
    let loaded = SegmentIndex::decode(off_file, time_file);
    if let Some(idx) = &loaded {
        check_index(idx, off_file, time_file);
    }
    let mut walk = SegmentScan {
        base,
        index_interval,
        index: SegmentIndex::default(),
        bytes_since_index: 0,
        max_ts: -1,
        next_offset: base,
        controls: Vec::new(),
    };
    // Where recovery starts: at the last offset-index entry if it names the batch found there.
    let mut start = 0usize;
    if let Some(idx) = loaded {
        if let Some(&(rel, p)) = idx.offsets.last() {
            let p = p as usize;
            let head = log.get(p..).map(|h| &h[..h.len().min(HEADER_LEN)]).unwrap_or(&[]);
            if index_entry_matches(base, rel, head) && p < log.len() {
                start = p;
                walk.max_ts = idx.times.last().map(|&(t, _)| t).unwrap_or(-1);
                walk.index = idx;
            }
        } else {
            walk.index = idx;
        }
    }
    let mut last_next = walk.next_offset;
    let end = batch::scan_while(&log[start..], |at, h| {
        walk.batch((start + at) as u64, h)?;
        assert!(h.base_offset >= last_next, "recovery accepted a batch at {} before offset {last_next}", h.base_offset);
        assert!(walk.next_offset > h.base_offset, "recovery's next offset did not pass the batch");
        last_next = walk.next_offset;
        Ok(())
    });
    let kept = start + end.valid_len;
    assert!(walk.next_offset >= base, "recovery moved the segment's end before its base");
    assert!(walk.index.offsets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
    assert!(walk.index.times.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
    walk.index.truncate_to_position(kept as u32);
    assert!(walk.index.offsets.iter().all(|&(_, p)| (p as usize) < kept.max(1)));
}

/// What `SegmentIndex` promises about a decoded index, and its lookups on it.
fn check_index(idx: &SegmentIndex, off_file: &[u8], time_file: &[u8]) {
    assert_eq!(idx.encode_offsets(), off_file, "offset index does not round-trip");
    assert_eq!(idx.encode_times(), time_file, "time index does not round-trip");
    let probes = idx.offsets.iter().flat_map(|&(o, p)| [o, o.wrapping_sub(1), o.wrapping_add(1), p]);
    for q in probes.chain([0, u32::MAX]) {
        let p = idx.position_for(q);
        assert!(p == 0 || idx.offsets.iter().any(|&(o, pos)| pos == p && o <= q));
    }
    for &(t, _) in &idx.times {
        for ts in [t, t.wrapping_sub(1), t.wrapping_add(1), i64::MIN, i64::MAX] {
            let o = idx.offset_for_time(ts);
            assert!(o == 0 || idx.times.iter().any(|&(tt, oo)| oo == o && tt < ts));
        }
    }
    for &(_, p) in idx.offsets.iter().take(4) {
        let mut t = idx.clone();
        t.truncate_to_position(p);
        assert!(t.offsets.iter().all(|&(_, pp)| pp < p));
        let last = t.offsets.last().map(|&(o, _)| o);
        assert!(t.times.iter().all(|&(_, o)| last.is_some_and(|l| o <= l)));
    }
}

/// The `sasl` target's credential: RFC 7677's password, salt and iterations, so its exchange (with
/// [`SASL_SERVER_NONCE`]) is a seed that authenticates.
const SASL_PASSWORD: &[u8] = b"pencil";
const SASL_SALT: &[u8] = &[
    0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81,
];
const SASL_ITERATIONS: i32 = 4096;
/// RFC 7677's server nonce, used in modes 2 and 3 in place of a random one.
pub const SASL_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

/// The salted password of [`SASL_PASSWORD`] under each mechanism, derived once (4096 rounds of
/// PBKDF2 per input would slow the fuzzer a hundredfold).
fn sasl_salted(m: ScramMechanism) -> &'static [u8] {
    static SALTED: [OnceLock<Vec<u8>>; 2] = [OnceLock::new(), OnceLock::new()];
    let i = ScramMechanism::ALL.iter().position(|&x| x == m).unwrap_or(0);
    SALTED[i].get_or_init(|| sasl::salted_password(m, SASL_PASSWORD, SASL_SALT, SASL_ITERATIONS))
}

/// Every user but `nobody` has the fixed credential.
fn sasl_lookup(m: ScramMechanism) -> impl FnOnce(&str) -> Option<ScramCredential> {
    move |user| {
        (user != "nobody").then(|| ScramCredential::from_salted_password(m, sasl_salted(m), SASL_SALT, SASL_ITERATIONS))
    }
}

/// A SASL message as SaslAuthenticate carries it to `protocol::sasl`: a mode byte, then the input.
/// Mode bit 2 picks SCRAM-SHA-512 over SCRAM-SHA-256; bits 0-1:
///
/// - 0: SASL/PLAIN (`parse_plain`): what it accepts has a non-empty user and password without
///   NUL, and re-encodes (with and without an authzid) to a message that parses the same;
/// - 1: a SCRAM client-first-message (`ScramServer::start`, random server nonce): an accepted
///   one gets `r=<client nonce><24 chars>,s=<salt>,i=4096` back;
/// - 2: client-first NUL client-final (`start` with [`SASL_SERVER_NONCE`], then `finish`), so
///   inputs can echo the nonce and reach the proof check; a success names `start`'s user and
///   answers `v=` with the server signature;
/// - 3: client-first, then the final message an honest client (RFC 5802) builds from the server's
///   answer with the right password: whatever `start` accepts, that authenticates, and the
///   server's signature is the one the client expects.
///
/// Every user but `nobody` has RFC 7677's credential (password `pencil`).
pub fn sasl(data: &[u8]) {
    let Some((&mode, input)) = data.split_first() else { return };
    let m = if mode & 4 == 0 { ScramMechanism::Sha256 } else { ScramMechanism::Sha512 };
    match mode & 3 {
        0 => sasl_plain(input),
        1 => {
            let Ok((server, reply)) = ScramServer::start(m, input, sasl_lookup(m)) else { return };
            let reply = std::str::from_utf8(&reply).expect("server-first-message is UTF-8");
            let (nonce, salt, iterations) = server_first_fields(reply);
            let client_nonce = nonce.get(..nonce.len().saturating_sub(24)).unwrap_or_default();
            assert!(!client_nonce.is_empty(), "server nonce {nonce:?} lacks the client's or its own 24 characters");
            let sent = std::str::from_utf8(input).expect("an accepted client-first-message is UTF-8");
            assert!(sent.contains(&format!(",r={client_nonce}")), "server nonce {nonce:?} does not start with the client's");
            assert_eq!((salt.as_slice(), iterations), (SASL_SALT, SASL_ITERATIONS));
            assert!(!server.user().is_empty());
        }
        2 => {
            let (first, last) = match input.iter().position(|&b| b == 0) {
                Some(at) => (&input[..at], &input[at + 1..]),
                None => (input, &[][..]),
            };
            let Ok((server, _)) = ScramServer::start_with_nonce(m, first, SASL_SERVER_NONCE, sasl_lookup(m)) else { return };
            let user = server.user().to_string();
            if let Ok((who, v)) = server.finish(last) {
                assert_eq!(who, user, "finish authenticated another user than start read");
                let v = std::str::from_utf8(&v).expect("server-final-message is UTF-8");
                let sig = B64.decode(v.strip_prefix("v=").expect("server-final-message is v=...")).expect("v= is base64");
                assert_eq!(sig.len(), m.hash_len());
            }
        }
        _ => sasl_honest_client(m, input),
    }
}

/// `r=`, `s=` and `i=` of a server-first-message, which must have exactly those.
fn server_first_fields(reply: &str) -> (&str, Vec<u8>, i32) {
    let fields: Vec<&str> = reply.split(',').collect();
    let [r, s, i] = fields[..] else { panic!("server-first-message {reply:?} does not have 3 attributes") };
    let nonce = r.strip_prefix("r=").expect("r= first");
    assert!(!nonce.is_empty() && nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)), "nonce {nonce:?} is not printable");
    let salt = B64.decode(s.strip_prefix("s=").expect("s= second")).expect("the salt is base64");
    let iterations = i.strip_prefix("i=").expect("i= third").parse().expect("i= is a number");
    (nonce, salt, iterations)
}

fn sasl_plain(input: &[u8]) {
    let Ok((user, password)) = sasl::parse_plain(input) else { return };
    assert!(!user.is_empty() && !user.contains('\0'), "PLAIN accepted user {user:?}");
    assert!(!password.is_empty() && !password.contains(&0), "PLAIN accepted an empty password or one with NUL");
    for authzid in ["", user.as_str()] {
        let again = [authzid.as_bytes(), b"\0", user.as_bytes(), b"\0", &password].concat();
        assert_eq!(sasl::parse_plain(&again), Ok((user.clone(), password.clone())), "PLAIN does not round-trip");
    }
}

/// Mode 3 of [`sasl`]: RFC 5802's client side, answering whatever client-first `start` accepted.
fn sasl_honest_client(m: ScramMechanism, first: &[u8]) {
    let Ok((server, reply)) = ScramServer::start_with_nonce(m, first, SASL_SERVER_NONCE, sasl_lookup(m)) else { return };
    let first = std::str::from_utf8(first).expect("an accepted client-first-message is UTF-8");
    // The gs2 header ends at the second comma; the rest is client-first-message-bare.
    let gs2_len = first.match_indices(',').nth(1).map(|(at, _)| at + 1).expect("an accepted message has a gs2 header");
    let (gs2_header, bare) = first.split_at(gs2_len);
    let server_first = std::str::from_utf8(&reply).expect("server-first-message is UTF-8");
    let (nonce, salt, iterations) = server_first_fields(server_first);
    assert!(nonce.ends_with(SASL_SERVER_NONCE));
    assert_eq!((salt.as_slice(), iterations), (SASL_SALT, SASL_ITERATIONS));
    let salted = sasl_salted(m);
    let client_key = sasl::mac(m, salted, b"Client Key");
    let without_proof = format!("c={},r={nonce}", B64.encode(gs2_header));
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let proof = sasl::xor(&client_key, &sasl::mac(m, &sasl::hash(m, &client_key), auth_message.as_bytes()));
    let user = server.user().to_string();
    let last = format!("{without_proof},p={}", B64.encode(proof));
    let (who, v) = server.finish(last.as_bytes()).unwrap_or_else(|e| panic!("an honest client's final message failed: {e:?}"));
    assert_eq!(who, user);
    let expected = sasl::mac(m, &sasl::mac(m, salted, b"Server Key"), auth_message.as_bytes());
    assert_eq!(v, format!("v={}", B64.encode(expected)).into_bytes(), "the server signature is not the one the client expects");
}

/// What the broker parses of ACLs and principals, from a mode byte and the input:
///
/// - 0: `ssl_principal_mapping_rules` text, then (after a NUL) a subject DN: parsing and
///   naming never panic; a rule set that parses names or refuses every DN;
/// - 1: a CreateAcls binding (four codes, then NUL-separated name, principal, host): one
///   `binding_to_create` accepts survives its metadata record unchanged, and an ALLOW binding
///   allows its own principal its own operation on its own literal name from any host (a DENY
///   denies it);
/// - 2: a DescribeAcls/DeleteAcls filter (codes, then optional names): `check` and `matches`
///   against a few bindings never panic, and a filter of ANY everything matches them all.
pub fn acl(data: &[u8]) {
    use crate::server::acl::{binding_to_create, Acls, Binding, Filter, Request, WILDCARD};
    let Some((&mode, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split('\0');
    match mode % 3 {
        0 => {
            let rules = parts.next().unwrap_or("");
            let dn = parts.next().unwrap_or("");
            if let Ok(r) = crate::server::principal::MappingRules::parse(rules) {
                let _ = r.name(dn);
            }
        }
        1 => {
            if rest.len() < 4 {
                return;
            }
            let codes = [rest[0] as i8, rest[1] as i8, rest[2] as i8, rest[3] as i8];
            let text = String::from_utf8_lossy(&rest[4..]);
            let mut p = text.split('\0');
            let (name, principal, host) = (p.next().unwrap_or(""), p.next().unwrap_or(""), p.next().unwrap_or(""));
            let Ok(b) = binding_to_create(codes[0], name, codes[1], principal, host, codes[2], codes[3]) else { return };
            assert_eq!(Binding::from_record(&b.record()).as_ref(), Some(&b), "a binding survives its record");
            if b.pattern != crate::server::acl::PatternType::Literal {
                return;
            }
            let mut acls = Acls::new(Vec::new(), false);
            acls.add(b.clone());
            let host = if b.host == WILDCARD { "10.0.0.1" } else { b.host.as_str() };
            let principal = if b.principal == "User:*" { "User:someone" } else { b.principal.as_str() };
            let name = if b.name == WILDCARD { "any-topic" } else { b.name.as_str() };
            let allowed = acls.authorize(&Request { principal, host, operation: b.operation, resource_type: b.resource_type, name });
            assert_eq!(allowed, b.allow, "a lone binding decides its own request: {b:?}");
        }
        _ => {
            if rest.len() < 4 {
                return;
            }
            let text = String::from_utf8_lossy(&rest[4..]);
            let mut p = text.split('\0');
            let mut opt = || p.next().filter(|s| !s.is_empty()).map(String::from);
            let f = Filter {
                resource_type: rest[0] as i8,
                name: opt(),
                pattern: rest[1] as i8,
                principal: opt(),
                host: opt(),
                operation: rest[2] as i8,
                permission: rest[3] as i8,
            };
            let bindings: Vec<Binding> = [(2, "t", 3), (2, "pre", 4), (3, "*", 3), (4, "kafka-cluster", 3)]
                .iter()
                .filter_map(|(t, n, pat)| binding_to_create(*t, n, *pat, "User:alice", "*", 3, 3).ok())
                .collect();
            if f.check().is_ok() {
                for b in &bindings {
                    let _ = f.matches(b);
                }
            }
            let any = Filter { resource_type: 1, pattern: 1, operation: 1, permission: 1, ..Filter::default() };
            assert!(bindings.iter().all(|b| any.matches(b)));
        }
    }
}
