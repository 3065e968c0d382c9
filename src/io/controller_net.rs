//! The metadata quorum's runtime and sockets: the `controller` thread with its tokio
//! current-thread runtime, and the TCP listener and connections its RPCs travel on, as
//! length-prefixed frames with deadlines.
//!
//! Why tokio here when the cores run glommio: openraft 0.9 drives its tasks on tokio and wants
//! `Send` futures (ARCHITECTURE.md, "The cluster's shape"). The runtime is one thread's, so the
//! quorum never competes with the shard cores for more than that thread. What is above this file
//! (`controller`) sees only [`run_thread`], [`FrameListener`] and [`FrameConn`]: opaque byte
//! frames, no socket.
//!
//! A frame is a 4-byte big-endian length and that many bytes. A length above the caller's bound
//! is refused before anything is allocated for it; a peer that closes between frames is a clean
//! close (`Ok(None)`), one that closes inside a frame is `UnexpectedEof`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts a thread named `name` that runs `make()`'s future to completion on a tokio
/// current-thread runtime (timers and sockets enabled), and returns the thread's handle. The
/// runtime, and every task spawned on it, ends with the future: dropping it closes the sockets
/// those tasks held.
pub fn run_thread<F, Fut>(name: &str, make: F) -> io::Result<std::thread::JoinHandle<Fut::Output>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future,
    Fut::Output: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name(name.to_string()).spawn(move || runtime.block_on(make()))
}

/// A listening socket for the quorum's RPCs. Owned by the controller thread.
pub struct FrameListener {
    inner: TcpListener,
}

impl FrameListener {
    /// Binds `addr` (`host:port`; a name is resolved). Must run on the controller's runtime.
    pub async fn bind(addr: &str) -> io::Result<FrameListener> {
        Ok(FrameListener { inner: TcpListener::bind(addr).await? })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    pub async fn accept(&self) -> io::Result<(FrameConn, SocketAddr)> {
        let (stream, peer) = self.inner.accept().await?;
        stream.set_nodelay(true)?;
        Ok((FrameConn { stream }, peer))
    }
}

/// One TCP connection carrying frames, either way. Owned by one task at a time.
pub struct FrameConn {
    stream: TcpStream,
}

impl FrameConn {
    /// Connects to `addr` (`host:port`), giving up after `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> io::Result<FrameConn> {
        let stream = deadline(timeout, TcpStream::connect(addr)).await??;
        stream.set_nodelay(true)?;
        Ok(FrameConn { stream })
    }

    /// Whether a kept connection is already unusable before anything is sent on it: the peer
    /// closed it (a process that died closes its sockets), it failed, or bytes arrived that no
    /// request asked for. Never waits. A request sent on such a connection would fail with an
    /// outcome the caller could not know; checked first, it is known not to have been sent.
    pub fn closed_by_peer(&self) -> bool {
        let mut probe = [0u8; 1];
        !matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends one frame, giving up after `timeout` (the connection is then unusable).
    pub async fn send(&mut self, frame: &[u8], timeout: Duration) -> io::Result<()> {
        let len = u32::try_from(frame.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
        let mut buf = Vec::with_capacity(4 + frame.len());
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(frame);
        deadline(timeout, self.stream.write_all(&buf)).await?
    }

    /// Receives one frame of at most `max_bytes`, all of it within `timeout`. `Ok(None)`: the
    /// peer closed the connection between frames.
    pub async fn recv(&mut self, max_bytes: usize, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        deadline(timeout, async {
            let mut len = [0u8; 4];
            let first = self.stream.read(&mut len).await?;
            if first == 0 {
                return Ok(None);
            }
            self.stream.read_exact(&mut len[first..]).await?;
            let len = u32::from_be_bytes(len) as usize;
            if len > max_bytes {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("frame of {len} bytes announced, above the {max_bytes} allowed"),
                ));
            }
            let mut frame = vec![0u8; len];
            self.stream.read_exact(&mut frame).await?;
            Ok(Some(frame))
        })
        .await?
    }
}

async fn deadline<T>(timeout: Duration, f: impl Future<Output = T>) -> io::Result<T> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no progress within {} ms", timeout.as_millis())))
}

/// Tests only: a loopback port that was free a moment ago (another process may take it before
/// the caller binds it; callers that care retry), and never one this process was given before.
/// The kernel may hand out a port it just released again, and tests that build their voters
/// from these ports directly (not through `config::parse_voters`, which refuses an address
/// given twice) once got the same port for two voters: the leader's AppendEntries to "the
/// other" reached itself, and openraft's debug assertion that a follower is not the leader
/// fired.
pub fn free_loopback_port() -> io::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
}
