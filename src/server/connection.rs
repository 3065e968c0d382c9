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
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::handlers;
use super::shard::Shard;
use crate::config::limits::{
    CONNECTION_BUFFER_MAX_BYTES, CONNECTION_IN_FLIGHT_MAX, FETCH_RESPONSE_MAX_BYTES, REQUEST_FRAME_MAX_BYTES,
};
use crate::io::net::{ConnReader, ConnWriter, ReadExact};
use crate::io::rt;
use crate::protocol::frame;
use crate::storage::notify::Notify;
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
}

pub async fn run(shard: Rc<Shard>, reader: ConnReader, writer: ConnWriter, peer: SocketAddr) {
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
    futures_lite::future::or(serve(shard.clone(), reader, writer, peer), async {
        life.cut().await;
        tracing::debug!(%peer, "shutdown grace period over; dropping the connection");
    })
    .await;
}

/// Reads `buf` full, unless the core starts stopping first (`None`).
async fn read_unless_stopping(shard: &Shard, reader: &mut ConnReader, buf: &mut [u8]) -> Option<std::io::Result<ReadExact>> {
    futures_lite::future::or(async { Some(reader.read_exact(buf).await) }, async {
        shard.lifecycle.stopping().await;
        None
    })
    .await
}

async fn serve(shard: Rc<Shard>, mut reader: ConnReader, mut writer: ConnWriter, peer: SocketAddr) {
    let (tx, rx) = flume::bounded::<(Pending, Holds)>(CONNECTION_IN_FLIGHT_MAX);
    let shared = Rc::new(Shared {
        closing: Cell::new(false),
        budget: Budget { used: Cell::new(0), freed: Notify::default() },
        in_flight: Cell::new(0),
        last_activity: Cell::new(now_ms()),
        writing_since: Cell::new(None),
    });
    // The idle watchdog: shuts the socket (waking the reader) once nothing is in flight and
    // nothing has been read or written for connections_max_idle_ms, or once one response has
    // been waiting that long for the client to read it (which also wakes the writer).
    let idle_ms = shard.config.connections_max_idle_ms;
    let watchdog = rt::spawn({
        let (closer, shared) = (reader.closer(), shared.clone());
        async move {
            let tick = Duration::from_millis((idle_ms as u64 / 4).clamp(10, 1000));
            loop {
                rt::sleep(tick).await;
                if shared.closing.get() {
                    return;
                }
                let now = now_ms();
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
        let (shared, shard) = (shared.clone(), shard.clone());
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
                        let written = writer.write_all(&chunks).await;
                        shared.writing_since.set(None);
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
        let Some(read) = read_unless_stopping(&shard, &mut reader, &mut len).await else {
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
        if n < 8 || n as usize > REQUEST_FRAME_MAX_BYTES {
            tracing::warn!(%peer, frame_bytes = n, limit = REQUEST_FRAME_MAX_BYTES, "request frame size refused; closing connection");
            break;
        }
        shared.budget.take(n as usize).await;
        shard.memory.take(n as usize).await;
        let mut held = Holds { request: n as usize, connection: n as usize };
        let mut buf = vec![0u8; n as usize];
        let Some(read) = read_unless_stopping(&shard, &mut reader, &mut buf).await else {
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
        if api_key == kafka_protocol::messages::ApiKey::Fetch {
            // A fetch answer may be large: reserve it before running the request.
            shared.budget.take(FETCH_RESPONSE_MAX_BYTES).await;
            held.connection += FETCH_RESPONSE_MAX_BYTES;
        }
        shared.in_flight.set(shared.in_flight.get() + 1);
        let task_shard = shard.clone();
        let task = rt::spawn(async move {
            let shard = task_shard;
            let out = handlers::respond(&shard, api_key, header, body, peer).await;
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
        self.shared.in_flight.set(self.shared.in_flight.get() - 1);
    }
}
