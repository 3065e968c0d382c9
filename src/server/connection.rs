//! One client connection: read frames, run each request as its own task, write the responses in
//! request order (Kafka clients pipeline and match responses by order as well as id).
//!
//! Bounds: a frame larger than `REQUEST_FRAME_MAX_BYTES` is refused before allocating; at most
//! `CONNECTION_IN_FLIGHT_MAX` requests are in flight, after which the socket is not read.
//! Anything malformed closes this connection with a log line; the broker and other clients go on.
//!
//! Shutdown: once the core is stopping the reader stops reading (between frames or inside one),
//! the requests already read are answered, and the connection closes. If the grace period ends
//! first, the connection is dropped (its socket closes); the requests it started run on,
//! detached, to their end (see [`Pending`]).

use std::net::SocketAddr;
use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;

use super::handlers;
use super::shard::Shard;
use crate::config::limits::{CONNECTION_IN_FLIGHT_MAX, REQUEST_FRAME_MAX_BYTES};
use crate::io::net::{ConnReader, ConnWriter, ReadExact};
use crate::io::rt;
use crate::protocol::frame;

type Outcome = Result<Option<bytes::BytesMut>, String>;

/// A request's task, awaited by the connection's writer. Dropped unfinished (the connection was
/// cut at shutdown) it is detached, not cancelled: an append cancelled during its O_DIRECT write
/// could have that write land after a later one and undo it. Detached, it runs to its end and the
/// partition's close waits for its I/O.
struct Pending(Option<rt::Task<Outcome>>);

impl std::future::Future for Pending {
    type Output = Outcome;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Outcome> {
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

pub async fn run(shard: Rc<Shard>, reader: ConnReader, writer: ConnWriter, peer: SocketAddr) {
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
    let (tx, rx) = flume::bounded::<Pending>(CONNECTION_IN_FLIGHT_MAX);
    let closing = Rc::new(Cell::new(false));
    let writer_task = rt::spawn({
        let closing = closing.clone();
        async move {
            // Every request task is awaited, even after the connection broke: dropping a task
            // cancels it, and a produce must not be cut off half-way through its append.
            while let Ok(task) = rx.recv_async().await {
                let out = task.await;
                if closing.get() {
                    continue;
                }
                match out {
                    Ok(Some(frame)) => {
                        if let Err(e) = writer.write_all(&[&frame]).await {
                            tracing::debug!(%peer, error = %e, "writing a response failed; closing");
                            closing.set(true);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(%peer, "{e}; closing connection");
                        writer.close().await;
                        closing.set(true);
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
        if closing.get() {
            break;
        }
        let n = i32::from_be_bytes(len);
        if n < 8 || n as usize > REQUEST_FRAME_MAX_BYTES {
            tracing::warn!(%peer, frame_bytes = n, limit = REQUEST_FRAME_MAX_BYTES, "request frame size refused; closing connection");
            break;
        }
        let mut buf = vec![0u8; n as usize];
        let Some(read) = read_unless_stopping(&shard, &mut reader, &mut buf).await else {
            tracing::debug!(%peer, "shutting down inside a request frame: dropping it, then closing");
            break;
        };
        match read {
            Ok(ReadExact::Full) => {}
            Ok(ReadExact::Closed) | Ok(ReadExact::Truncated(_)) => {
                tracing::warn!(%peer, frame_bytes = n, "connection closed inside a request frame; dropping it");
                break;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection read failed inside a frame");
                break;
            }
        }
        let (api_key, header, body) = match frame::decode_request(Bytes::from(buf)) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(%peer, "{e}; closing connection");
                break;
            }
        };
        let shard = shard.clone();
        let task = rt::spawn(async move { handlers::respond(&shard, api_key, header, body, peer).await });
        if tx.send_async(Pending(Some(task))).await.is_err() {
            break;
        }
    }
    drop(tx);
    writer_task.await;
}
