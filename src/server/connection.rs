//! One client connection: read frames, run each request as its own task, write the responses in
//! request order (Kafka clients pipeline and match responses by order as well as id).
//!
//! Bounds: a frame larger than `REQUEST_FRAME_MAX_BYTES` is refused before allocating; at most
//! `CONNECTION_IN_FLIGHT_MAX` requests are in flight, after which the socket is not read.
//! Anything malformed closes this connection with a log line; the broker and other clients go on.

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

type Pending = rt::Task<Result<Option<bytes::BytesMut>, String>>;

pub async fn run(shard: Rc<Shard>, mut reader: ConnReader, mut writer: ConnWriter, peer: SocketAddr) {
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
        match reader.read_exact(&mut len).await {
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
        match reader.read_exact(&mut buf).await {
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
        if tx.send_async(task).await.is_err() {
            break;
        }
    }
    drop(tx);
    writer_task.await;
}
