//! One client connection: read frames, run each request as its own task, write the responses in
//! request order (Kafka clients pipeline and match responses by order as well as id).
//!
//! Bounds: a frame larger than `REQUEST_FRAME_MAX_BYTES` is refused before allocating; at most
//! `CONNECTION_IN_FLIGHT_MAX` requests are in flight, and at most `CONNECTION_BUFFER_MAX_BYTES`
//! of requests and (reserved) responses are held, after which the socket is not read, so a
//! client that never reads its responses is slowed by TCP backpressure instead of growing the
//! broker's memory. The same bytes also count against the core's share of the broker-wide
//! `queued_max_request_bytes` (see `server::memory`), so many connections together are bounded
//! too. A connection with nothing in flight that sends nothing for `connections_max_idle_ms` is
//! closed (this also ends slowloris-style partial frames), and so is one whose responses go
//! unwritten that long because the client reads none of them (which frees its memory); beyond
//! `max_connections` open connections, new ones are closed at once. Anything malformed closes
//! this connection with a log line; the broker and other clients go on.
//!
//! Shutdown: once the core is stopping the reader stops reading (between frames or inside one),
//! the requests already read are answered, and the connection closes. If the grace period ends
//! first, the connection is dropped (its socket closes); the requests it started run on,
//! detached, to their end (see [`Pending`]).

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::handlers;
use super::shard::Shard;
use super::session::Session;
use crate::config::limits::{
    AUTHENTICATION_DEADLINE_MS, CONNECTION_BUFFER_MAX_BYTES, CONNECTION_IN_FLIGHT_MAX, FAILED_AUTHENTICATION_DELAY_MS,
    FETCH_RESPONSE_MAX_BYTES,
    REQUEST_FRAME_MAX_BYTES,
};
use crate::config::security::SecurityProtocol;
use crate::io::net::{Accepted, ConnReader, ConnWriter, ReadExact};
use crate::io::rt;
use crate::protocol::frame;
use crate::protocol::sasl::SASL_TOKEN_MAX_BYTES;
use crate::sync::Notify;
use crate::storage::now_ms;

type Outcome = Result<Option<frame::Frame>, String>;

/// A request's outcome, with the bytes of its response charged to the core's memory budget.
type Answer = (Outcome, usize);

/// A request's task, awaited by the connection's writer. Dropped unfinished (the connection was
/// cut at shutdown) it is detached, not cancelled: an append cancelled during its O_DIRECT write
/// could have that write land after a later one and undo it. Detached, it runs to its end and the
/// partition's close waits for its I/O.
struct Pending(Option<rt::Task<Answer>>);

impl std::future::Future for Pending {
    type Output = Answer;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Answer> {
        let task = self.0.as_mut().expect("a request task is awaited once");
        std::pin::Pin::new(task).poll(cx)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.detach();
        }
    }
}

/// Open client connections, on all cores.
static OPEN: AtomicUsize = AtomicUsize::new(0);

struct Counted;

impl Drop for Counted {
    fn drop(&mut self) {
        let open = OPEN.fetch_sub(1, Ordering::Relaxed) - 1;
        crate::metrics::set_open_connections(open);
    }
}

/// The connection's memory budget: bytes of requests and reserved responses not yet answered.
struct Budget {
    used: Cell<usize>,
    freed: Notify,
}

impl Budget {
    /// Waits until `n` more bytes fit (anything fits when nothing else is held), then takes them.
    async fn take(&self, n: usize) {
        while self.used.get() > 0 && self.used.get() + n > CONNECTION_BUFFER_MAX_BYTES {
            self.freed.wait().await;
        }
        self.used.set(self.used.get() + n);
    }
    fn give(&self, n: usize) {
        self.used.set(self.used.get() - n);
        self.freed.notify_all();
    }
}

/// What the reader, the writer and the idle watchdog of one connection share.
struct Shared {
    closing: Cell<bool>,
    budget: Budget,
    in_flight: Cell<usize>,
    last_activity: Cell<i64>,
    /// When the response being written started to be written, while one is.
    writing_since: Cell<Option<i64>>,
    /// Notified when the last request in flight has been answered.
    answered: Notify,
    /// When that last happened (or the connection opened).
    answered_at: Cell<Instant>,
    /// Whether the client sent its last request within `connection_busy_poll_us` of being
    /// answered: then its socket is polled for the next one (see [`read_frame_len`]).
    quick: Cell<bool>,
    /// When the client last sent a request before the ones in flight were answered.
    pipelined_at: Cell<Option<Instant>>,
}

pub async fn run(shard: Rc<Shard>, accepted: Accepted, peer: SocketAddr, protocol: SecurityProtocol) {
    let open = OPEN.fetch_add(1, Ordering::Relaxed) + 1;
    let _counted = Counted;
    crate::metrics::set_open_connections(open);
    crate::metrics::connection_opened();
    if open > shard.config.max_connections {
        crate::metrics::connection_refused();
        tracing::warn!(%peer, open, limit = shard.config.max_connections, "too many connections (max_connections); closing the new one");
        return;
    }
    let life = &shard.lifecycle;
    let _open = life.connection_opened();
    futures_lite::future::or(
        async {
            let Some((reader, writer, certificate_user)) = secure(&shard, accepted, peer, protocol).await else { return };
            let session = Session::new(peer, protocol);
            if let Some(user) = certificate_user {
                session.set_user(user);
            }
            serve(shard.clone(), reader, writer, Rc::new(session)).await
        },
        async {
            life.cut().await;
            tracing::debug!(%peer, "shutdown grace period over; dropping the connection");
        },
    )
    .await;
}

/// The connection's halves, after its TLS handshake on an SSL or SASL_SSL listener, with the
/// user a client certificate names on an SSL listener (`ssl_principal_mapping_rules`; on
/// SASL_SSL, SASL names the user, as in Kafka); `None` (the connection is dropped, so closed)
/// when the handshake fails or outlives [`AUTHENTICATION_DEADLINE_MS`], or no mapping rule
/// applies to the certificate's subject.
async fn secure(shard: &Shard, accepted: Accepted, peer: SocketAddr, protocol: SecurityProtocol) -> Option<(ConnReader, ConnWriter, Option<String>)> {
    if !protocol.tls() {
        let (r, w) = accepted.plain();
        return Some((r, w, None));
    }
    let listener = protocol.name();
    let Some(acceptor) = crate::io::tls::acceptor() else {
        tracing::error!(%peer, listener, "no TLS configuration loaded; closing");
        return None;
    };
    let deadline = Duration::from_millis(AUTHENTICATION_DEADLINE_MS);
    match rt::timeout(deadline, accepted.tls(acceptor)).await {
        Some(Ok((reader, writer, tls))) => {
            tracing::debug!(%peer, listener, version = tls.version, client_certificates = tls.certificates.len(), "TLS handshake done");
            let user = match tls.certificates.first() {
                Some(leaf) if !protocol.sasl() => {
                    let dn = crate::io::tls::subject_dn(leaf).unwrap_or_default();
                    match shard.config.principal_rules.name(&dn) {
                        Ok(name) => Some(name),
                        Err(e) => {
                            tracing::info!(%peer, listener, subject = dn, error = e, "client certificate refused (ssl_principal_mapping_rules); closing");
                            crate::metrics::authentication(listener, "TLS", "failed");
                            return None;
                        }
                    }
                }
                _ => None,
            };
            crate::metrics::authentication(listener, "TLS", "ok");
            Some((reader, writer, user))
        }
        Some(Err(e)) => {
            tracing::info!(%peer, listener, error = %e, "TLS handshake failed; closing");
            crate::metrics::authentication(listener, "TLS", "failed");
            None
        }
        None => {
            tracing::info!(%peer, listener, deadline_ms = AUTHENTICATION_DEADLINE_MS, "TLS handshake not done in time; closing");
            crate::metrics::authentication(listener, "TLS", "timeout");
            None
        }
    }
}

/// How long a connection that pipelined is not treated as quick (see [`read_frame_len`]).
const PIPELINING_REMEMBERED: Duration = Duration::from_millis(10);

/// Bytes from the client found within this time of starting to write its last answer were sent
/// before it had the answer (see [`read_frame_len`]).
const PIPELINING_SEEN_WITHIN: Duration = Duration::from_micros(20);

/// Runs a read to its end, unless the core starts stopping first (`None`).
async fn unless_stopping(shard: &Shard, read: impl Future<Output = std::io::Result<ReadExact>>) -> Option<std::io::Result<ReadExact>> {
    futures_lite::future::or(async { Some(read.await) }, async {
        shard.lifecycle.stopping().await;
        None
    })
    .await
}

/// Reads the 4-byte length that starts the next request frame.
///
/// Busy poll (`connection_busy_poll_us`): on this kind of host, waking a sleeping core for each
/// request costs more than serving a small request (kernel-notes/connection-busy-poll.md). A
/// connection is *quick* when its client sent its last request within the window of being
/// answered. For a quick connection:
/// - while its requests are in flight its socket is not read at all (the client is waiting for
///   the answers; Kafka itself reads nothing more from a connection until it has answered);
/// - once all are answered, the socket is polled with plain nonblocking reads for up to the
///   window, letting the core's other tasks and I/O run between polls, and only then does the
///   read wait on the ring (and the core sleep when it has nothing else to do). It is not polled
///   while the core has file I/O in flight: polling holds back those completions.
///
/// A client found to send before its answers are written pipelines: a request arrived while
/// others were in flight or, on a quick connection, bytes were already waiting right after its
/// last answer was written (within [`PIPELINING_SEEN_WITHIN`] of starting to write it: a slower
/// write, as when the client shares the CPU or on a VM where waking it makes the send slow, may
/// have let it answer meanwhile). It is not quick for [`PIPELINING_REMEMBERED`] after, so its
/// requests are read as they come and run side by side; a pipelining client keeps being found
/// out, and one that stops becomes quick again. A quick client that pipelines and is not found
/// out (large answers) has its requests run one at a time, as Kafka runs every connection's.
///
/// A client that takes longer than the window to come back stops being quick too, so a quiet
/// connection is never polled; coming back within the window makes it quick again. With a
/// window of 0 every read waits on the ring.
async fn read_frame_len(shard: &Shard, shared: &Shared, reader: &mut ConnReader, len: &mut [u8; 4]) -> std::io::Result<ReadExact> {
    let window = Duration::from_micros(shard.config.connection_busy_poll_us);
    // Over TLS the bytes must go through rustls: no nonblocking polls of the socket.
    if window.is_zero() || reader.is_tls() {
        return reader.read_exact(len).await;
    }
    if !shared.quick.get() {
        let read = reader.read_exact(len).await;
        if matches!(read, Ok(ReadExact::Full)) {
            if shared.in_flight.get() > 0 {
                shared.pipelined_at.set(Some(Instant::now()));
            } else {
                let pipelined = shared.pipelined_at.get().is_some_and(|t| t.elapsed() < PIPELINING_REMEMBERED);
                shared.quick.set(!pipelined && shared.answered_at.get().elapsed() < window);
            }
        }
        return read;
    }
    // A quick client waits for its answers before it sends again, so its socket is not read
    // (nor the ring armed for it) until they are written.
    while shared.in_flight.get() > 0 {
        shared.answered.wait().await;
    }
    let mut got = 0;
    if shared.quick.get() {
        let since = shared.answered_at.get();
        loop {
            match reader.try_read(&mut len[..]) {
                Some(Ok(0)) => return Ok(ReadExact::Closed),
                Some(Ok(n)) => {
                    crate::metrics::busy_poll(true);
                    got = n;
                    break;
                }
                Some(Err(e)) => return Err(e),
                None if since.elapsed() >= window => {
                    crate::metrics::busy_poll(false);
                    shared.quick.set(false);
                    break;
                }
                // While this core has file I/O in flight, polling would hold back its
                // completion (the request waiting on it took about the window longer, see
                // kernel-notes/connection-busy-poll.md): wait on the ring instead.
                None if crate::io::file::ops_pending() > 0 => break,
                None => rt::yield_to_io().await,
            }
        }
    }
    if got == 0 {
        // Not back within the window, found pipelining as its last answer was written, or the
        // core has file I/O in flight.
        return reader.read_exact(len).await;
    }
    Ok(match reader.read_exact(&mut len[got..]).await? {
        ReadExact::Full => ReadExact::Full,
        ReadExact::Closed => ReadExact::Truncated(got),
        ReadExact::Truncated(n) => ReadExact::Truncated(got + n),
    })
}

async fn serve(shard: Rc<Shard>, mut reader: ConnReader, mut writer: ConnWriter, session: Rc<Session>) {
    let peer = session.peer;
    let (tx, rx) = flume::bounded::<(Pending, Holds)>(CONNECTION_IN_FLIGHT_MAX);
    let shared = Rc::new(Shared {
        closing: Cell::new(false),
        budget: Budget { used: Cell::new(0), freed: Notify::default() },
        in_flight: Cell::new(0),
        last_activity: Cell::new(now_ms()),
        writing_since: Cell::new(None),
        answered: Notify::default(),
        answered_at: Cell::new(Instant::now()),
        quick: Cell::new(false),
        pipelined_at: Cell::new(None),
    });
    // The idle watchdog: shuts the socket (waking the reader) once nothing is in flight and
    // nothing has been read or written for connections_max_idle_ms, or once one response has
    // been waiting that long for the client to read it (which also wakes the writer).
    // It also closes a SASL connection not authenticated within AUTHENTICATION_DEADLINE_MS.
    let idle_ms = shard.config.connections_max_idle_ms;
    let watchdog = rt::spawn({
        let (closer, shared, session) = (reader.closer(), shared.clone(), session.clone());
        let opened = now_ms();
        async move {
            let tick = Duration::from_millis((idle_ms as u64 / 4).clamp(10, 1000).min(AUTHENTICATION_DEADLINE_MS / 4));
            loop {
                rt::sleep(tick).await;
                if shared.closing.get() {
                    return;
                }
                let now = now_ms();
                if session.protocol.sasl()
                    && session.sasl_user.borrow().is_none()
                    && now - opened >= AUTHENTICATION_DEADLINE_MS as i64
                {
                    tracing::info!(%peer, deadline_ms = AUTHENTICATION_DEADLINE_MS, "SASL authentication not done in time; closing");
                    crate::metrics::authentication(session.protocol.name(), "SASL", "timeout");
                    shared.closing.set(true);
                    closer.shutdown();
                    return;
                }
                if shared.in_flight.get() == 0 && now - shared.last_activity.get() >= idle_ms {
                    tracing::info!(%peer, idle_ms, "closing idle connection (connections_max_idle_ms)");
                    shared.closing.set(true);
                    closer.shutdown();
                    return;
                }
                if shared.writing_since.get().is_some_and(|t| now - t >= idle_ms) {
                    tracing::warn!(%peer, idle_ms, "closing a connection that has not read its responses (connections_max_idle_ms)");
                    shared.closing.set(true);
                    closer.shutdown();
                    return;
                }
            }
        }
    });
    let writer_task = rt::spawn({
        let (shared, shard, peeker) = (shared.clone(), shard.clone(), reader.peeker());
        async move {
            // Every request task is awaited, even after the connection broke: dropping a task
            // cancels it, and a produce must not be cut off half-way through its append.
            while let Ok((task, held)) = rx.recv_async().await {
                let (out, charged) = task.await;
                let _release = Release { shared: &shared, memory: &shard.memory, held, core_held: held.request + charged };
                shared.last_activity.set(now_ms());
                if shared.closing.get() {
                    continue;
                }
                match out {
                    Ok(Some(frame)) => {
                        shared.writing_since.set(Some(now_ms()));
                        let chunks: Vec<&[u8]> = frame.chunks.iter().map(|c| &c[..]).collect();
                        let started = Instant::now();
                        let written = writer.write_all(&chunks).await;
                        shared.writing_since.set(None);
                        if shared.quick.get()
                            && shared.in_flight.get() == 1
                            && peeker.has_unread()
                            && started.elapsed() < PIPELINING_SEEN_WITHIN
                        {
                            // The client sent again before this, its last answer, was written:
                            // it pipelines (see read_frame_len). A write that took longer says
                            // nothing: the client may have had the answer and sent again
                            // meanwhile (sharing this CPU, or woken by a slow send on a VM).
                            shared.quick.set(false);
                            shared.pipelined_at.set(Some(Instant::now()));
                        }
                        if let Err(e) = written {
                            tracing::debug!(%peer, error = %e, "writing a response failed; closing");
                            shared.closing.set(true);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(%peer, "{e}; closing connection");
                        writer.close().await;
                        shared.closing.set(true);
                    }
                }
            }
        }
    });
    let mut len = [0u8; 4];
    loop {
        // Muted: a client over its quota is not read until its throttle time is over.
        let muted = session.muted_until_ms.get() - now_ms();
        if muted > 0 {
            let pause = futures_lite::future::or(
                async {
                    rt::sleep(Duration::from_millis(muted as u64)).await;
                    true
                },
                async {
                    shard.lifecycle.stopping().await;
                    false
                },
            );
            if !pause.await {
                break;
            }
        }
        let Some(read) = unless_stopping(&shard, read_frame_len(&shard, &shared, &mut reader, &mut len)).await else {
            tracing::debug!(%peer, "shutting down: answering the requests read, then closing");
            break;
        };
        shared.last_activity.set(now_ms());
        match read {
            Ok(ReadExact::Full) => {}
            Ok(ReadExact::Closed) => {
                tracing::debug!(%peer, "client closed the connection");
                break;
            }
            Ok(ReadExact::Truncated(n)) => {
                tracing::warn!(%peer, "connection closed after {n} bytes of a frame length; dropping it");
                break;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection read failed (reset?)");
                break;
            }
        }
        if shared.closing.get() {
            break;
        }
        let n = i32::from_be_bytes(len);
        if session.expects_raw_token() {
            // After SaslHandshake v0: a bare token, answered (bare) before the next read.
            if n < 0 || n as usize > SASL_TOKEN_MAX_BYTES {
                tracing::warn!(%peer, frame_bytes = n, limit = SASL_TOKEN_MAX_BYTES, "SASL token size refused; closing connection");
                break;
            }
            let mut token = Vec::new();
            match unless_stopping(&shard, reader.read_exact_into(&mut token, n as usize)).await {
                Some(Ok(ReadExact::Full)) => {}
                _ => break,
            }
            let Some(answer) = handlers::sasl::raw_token(&shard, &session, token) else { break };
            let frame = frame::Frame { chunks: vec![Bytes::copy_from_slice(&(answer.len() as u32).to_be_bytes()), answer] };
            shared.in_flight.set(shared.in_flight.get() + 1);
            let done = rt::spawn(async move { (Ok(Some(frame)), 0) });
            if tx.send_async((Pending(Some(done)), Holds { connection: 0, request: 0 })).await.is_err() {
                break;
            }
            while shared.in_flight.get() > 0 {
                shared.answered.wait().await;
            }
            continue;
        }
        if n < 8 || n as usize > REQUEST_FRAME_MAX_BYTES {
            tracing::warn!(%peer, frame_bytes = n, limit = REQUEST_FRAME_MAX_BYTES, "request frame size refused; closing connection");
            break;
        }
        shared.budget.take(n as usize).await;
        shard.memory.take(n as usize).await;
        let mut held = Holds { request: n as usize, connection: n as usize };
        let mut buf = Vec::new();
        let Some(read) = unless_stopping(&shard, reader.read_exact_into(&mut buf, n as usize)).await else {
            held.give_back(&shared, &shard);
            tracing::debug!(%peer, "shutting down inside a request frame: dropping it, then closing");
            break;
        };
        shared.last_activity.set(now_ms());
        match read {
            Ok(ReadExact::Full) => {}
            Ok(ReadExact::Closed) | Ok(ReadExact::Truncated(_)) => {
                held.give_back(&shared, &shard);
                tracing::warn!(%peer, frame_bytes = n, "connection closed inside a request frame; dropping it");
                break;
            }
            Err(e) => {
                held.give_back(&shared, &shard);
                tracing::debug!(%peer, error = %e, "connection read failed inside a frame");
                break;
            }
        }
        let (api_key, header, body) = match frame::decode_request(Bytes::from(buf)) {
            Ok(x) => x,
            Err(e) => {
                held.give_back(&shared, &shard);
                tracing::warn!(%peer, "{e}; closing connection");
                break;
            }
        };
        // SASL (see `server::session`): nothing but ApiVersions and the SASL requests before
        // authenticating, and those run one at a time.
        let mut one_at_a_time = false;
        if session.protocol.sasl() {
            use kafka_protocol::messages::ApiKey as K;
            let sasl_api = matches!(api_key, K::ApiVersions | K::SaslHandshake | K::SaslAuthenticate);
            if !sasl_api && !session.may_serve(now_ms()) {
                held.give_back(&shared, &shard);
                let why = if session.sasl_user.borrow().is_some() { "after its SASL session expired (connections_max_reauth_ms)" } else { "before authenticating" };
                tracing::warn!(%peer, api = ?api_key, "client sent {api_key:?} {why}; closing connection");
                break;
            }
            one_at_a_time = sasl_api;
        }
        // A client with a quota: one request at a time, so a throttle mutes the connection
        // before the next is read (see `server::quota`).
        {
            let image = shard.image();
            if !image.quotas.is_empty() {
                let client_id = header.client_id.as_ref().map_or("", |c| c.as_str());
                one_at_a_time |= image.quotas.applies(&session.user.borrow(), client_id);
            }
        }
        if api_key == kafka_protocol::messages::ApiKey::Fetch {
            // A fetch answer may be large: reserve it before running the request.
            shared.budget.take(FETCH_RESPONSE_MAX_BYTES).await;
            held.connection += FETCH_RESPONSE_MAX_BYTES;
        }
        shared.in_flight.set(shared.in_flight.get() + 1);
        let (task_shard, task_session) = (shard.clone(), session.clone());
        let task = rt::spawn(async move {
            let shard = task_shard;
            let out = handlers::respond(&shard, api_key, header, body, &task_session).await;
            // Charged here, before anything else runs on this core: a fetch gives back its own
            // hold on the records as it returns, and the response now holds them.
            let charged = match &out {
                Ok(Some(frame)) => frame.len(),
                _ => 0,
            };
            shard.memory.charge(charged);
            (out, charged)
        });
        if let Err(e) = tx.send_async((Pending(Some(task)), held)).await {
            // The writer is gone (it only ends once this sender is dropped, so this is not
            // expected): the request runs on, and gives its memory back when it ends.
            let (pending, held) = e.into_inner();
            let shard = shard.clone();
            rt::spawn(async move {
                let (_, charged) = pending.await;
                shard.memory.give(held.request + charged);
            })
            .detach();
            break;
        }
        if one_at_a_time {
            while shared.in_flight.get() > 0 {
                shared.answered.wait().await;
            }
            if session.failed() {
                // As Kafka (`connection.failed.authentication.delay.ms`): the answer is out; the
                // close follows a little later, so the client reads the answer before it sees
                // the connection go, and a password guesser is slowed down.
                rt::sleep(Duration::from_millis(FAILED_AUTHENTICATION_DELAY_MS)).await;
                tracing::debug!(%peer, "SASL authentication failed; closing the connection");
                break;
            }
        }
    }
    drop(tx);
    writer_task.await;
    shared.closing.set(true);
    drop(watchdog);
}

/// What a request holds from the connection's budget and (for its frame) the core's.
#[derive(Clone, Copy)]
struct Holds {
    connection: usize,
    request: usize,
}

impl Holds {
    /// For a request dropped before it became a task.
    fn give_back(&self, shared: &Shared, shard: &Shard) {
        shared.budget.give(self.connection);
        shard.memory.give(self.request);
    }
}

/// Gives a request's budgets back once its response is written (or dropped).
struct Release<'a> {
    shared: &'a Shared,
    memory: &'a super::memory::CoreMemory,
    held: Holds,
    /// The request frame and the response, in the core's budget.
    core_held: usize,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.shared.budget.give(self.held.connection);
        self.memory.give(self.core_held);
        let in_flight = self.shared.in_flight.get() - 1;
        self.shared.in_flight.set(in_flight);
        if in_flight == 0 {
            self.shared.answered_at.set(Instant::now());
            self.shared.answered.notify_all();
        }
    }
}
