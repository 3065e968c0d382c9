//! TCP: a per-core listener sharing the port through SO_REUSEPORT, and connections split into a
//! reading and a writing half.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};

use futures_lite::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use socket2::{Domain, Protocol, Socket, Type};

type Stream = glommio::net::TcpStream;

/// Holds a port without listening on it, so every core can bind the same (possibly ephemeral)
/// port with SO_REUSEPORT before any connection is accepted. Created on the main thread.
pub struct PortReservation {
    _socket: Socket,
    pub addr: SocketAddr,
}

impl PortReservation {
    pub fn new(addr: SocketAddr) -> io::Result<Self> {
        let s = new_socket(addr)?;
        s.bind(&addr.into())?;
        let addr = s
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("bound address is not IP"))?;
        Ok(PortReservation { _socket: s, addr })
    }
}

/// Start-up only: fails with `AddrInUse` when any socket listens on `addr`'s port, another
/// Spate included. The probe binds without SO_REUSEPORT, which every socket of ours sets, so
/// a second broker cannot silently share the port with the first; it keeps SO_REUSEADDR, so
/// connections of a previous run left in TIME_WAIT do not count. Port 0 always passes.
pub fn check_port_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    Ok(s)
}

/// One core's listening socket. Owned by that core.
pub struct Listener(glommio::net::TcpListener);

impl Listener {
    pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
        let s = new_socket(addr)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        // SAFETY: the fd comes from a socket we own and hand over whole.
        Ok(Listener(unsafe { glommio::net::TcpListener::from_raw_fd(s.into_raw_fd()) }))
    }

    pub async fn accept(&self) -> io::Result<(ConnReader, ConnWriter, SocketAddr)> {
        let stream = self.0.accept().await.map_err(io::Error::from)?;
        stream.set_nodelay(true).map_err(io::Error::from)?;
        let peer = stream.peer_addr().map_err(io::Error::from)?;
        let fd = stream.as_raw_fd();
        let (r, w) = futures_lite::io::split(stream);
        Ok((ConnReader(r, fd), ConnWriter(w), peer))
    }
}

/// The reading half of a client connection.
pub struct ConnReader(ReadHalf<Stream>, RawFd);

/// Ends a connection from outside its reader and writer (an idle timeout): both halves' pending
/// and later operations see the connection closed. Valid while the connection's reader lives.
#[derive(Clone, Copy)]
pub struct ConnCloser(RawFd);

impl ConnCloser {
    pub fn shutdown(&self) {
        // SAFETY: shutdown(2) on a descriptor the connection still owns; it frees nothing.
        unsafe {
            libc::shutdown(self.0, libc::SHUT_RDWR);
        }
    }
}

/// Looks for unread bytes from the peer without reading them. Valid while the connection's
/// reader lives.
#[derive(Clone, Copy)]
pub struct ConnPeeker(RawFd);

impl ConnPeeker {
    /// Whether the peer has sent bytes not yet read (a nonblocking one-byte MSG_PEEK).
    pub fn has_unread(&self) -> bool {
        let mut b = 0u8;
        // SAFETY: recv(2) with MSG_PEEK writes at most one byte into a local, on a descriptor
        // the connection still owns.
        unsafe { libc::recv(self.0, (&mut b as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) > 0 }
    }
}

/// How a read of an exact number of bytes ended.
pub enum ReadExact {
    Full,
    /// The peer closed before the first byte: a clean close between frames.
    Closed,
    /// The peer closed after some bytes: a truncated frame.
    Truncated(usize),
}

/// One nonblocking recv(2) of at most `len` bytes into `ptr`, retried when a signal interrupts
/// it: `None` when nothing has arrived, `Some(Ok(0))` when the peer has closed.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn recv_now(fd: RawFd, ptr: *mut u8, len: usize) -> Option<io::Result<usize>> {
    loop {
        // SAFETY: the caller vouches for ptr and len; recv(2) writes at most len bytes there.
        let r = unsafe { libc::recv(fd, ptr.cast(), len, libc::MSG_DONTWAIT) };
        if r >= 0 {
            return Some(Ok(r as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return None,
            _ => return Some(Err(e)),
        }
    }
}

impl ConnReader {
    /// A handle that can shut the connection down from another task.
    pub fn closer(&self) -> ConnCloser {
        ConnCloser(self.1)
    }

    /// Reads what has arrived, without waiting: `None` when nothing has, `Some(Ok(0))` when the
    /// peer has closed. A plain nonblocking recv(2), no ring.
    pub fn try_read(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        unsafe { recv_now(self.1, buf.as_mut_ptr(), buf.len()) }
    }

    /// A handle that tells whether the peer has sent bytes not yet read, from another task.
    pub fn peeker(&self) -> ConnPeeker {
        ConnPeeker(self.1)
    }

    /// Reads exactly `n` bytes into `v` (emptied first), without zeroing its memory first (a
    /// request frame of a produce can be megabytes): what has arrived is received straight into
    /// the vector's spare capacity, and only when nothing has does the read wait on the ring,
    /// taking what comes then through a small buffer.
    pub async fn read_exact_into(&mut self, v: &mut Vec<u8>, n: usize) -> io::Result<ReadExact> {
        const WAIT_BYTES: usize = 512;
        v.clear();
        v.reserve_exact(n);
        let ended = |got: usize| if got == 0 { ReadExact::Closed } else { ReadExact::Truncated(got) };
        while v.len() < n {
            let missing = n - v.len();
            let spare = &mut v.spare_capacity_mut()[..missing];
            // SAFETY: spare is the vector's reserved, unused capacity, valid for writes of
            // `missing` bytes; exactly the bytes recv reports are then counted in.
            match unsafe { recv_now(self.1, spare.as_mut_ptr().cast(), missing) } {
                Some(Ok(0)) => return Ok(ended(v.len())),
                // SAFETY: the r bytes after len were just written by recv, and len + r <= n <= capacity.
                Some(Ok(r)) => unsafe { v.set_len(v.len() + r) },
                Some(Err(e)) => return Err(e),
                None => {
                    let mut small = [0u8; WAIT_BYTES];
                    let want = missing.min(WAIT_BYTES);
                    let got = self.0.read(&mut small[..want]).await?;
                    if got == 0 {
                        return Ok(ended(v.len()));
                    }
                    v.extend_from_slice(&small[..got]);
                }
            }
        }
        Ok(ReadExact::Full)
    }

    /// Fills `buf` completely, telling a clean close from a torn one.
    pub async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<ReadExact> {
        let mut got = 0;
        while got < buf.len() {
            let n = self.0.read(&mut buf[got..]).await?;
            if n == 0 {
                return Ok(if got == 0 { ReadExact::Closed } else { ReadExact::Truncated(got) });
            }
            got += n;
        }
        Ok(ReadExact::Full)
    }
}

/// The writing half of a client connection.
pub struct ConnWriter(WriteHalf<Stream>);

impl ConnWriter {
    pub async fn write_all(&mut self, bufs: &[&[u8]]) -> io::Result<()> {
        for b in bufs {
            self.0.write_all(b).await?;
        }
        self.0.flush().await
    }

    /// Closes the write side (the client sees end of stream and closes its end).
    pub async fn close(&mut self) {
        let _ = self.0.close().await;
    }
}

/// A connection this broker opens to another broker (a follower's replica fetcher to a leader):
/// length-prefixed frames out and in, each step bounded by a deadline. Owned by one core.
pub struct PeerConn {
    reader: ConnReader,
    writer: ConnWriter,
}

impl PeerConn {
    /// Connects to `addr` (`host:port`; a name is resolved with the system resolver, which
    /// blocks the core, so brokers advertise addresses) within `timeout`.
    pub async fn connect(addr: &str, timeout: std::time::Duration) -> io::Result<PeerConn> {
        let target: SocketAddr = match addr.parse() {
            Ok(a) => a,
            Err(_) => std::net::ToSocketAddrs::to_socket_addrs(addr)?
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{addr} resolves to no address")))?,
        };
        let stream = Stream::connect_timeout(target, timeout).await.map_err(io::Error::from)?;
        stream.set_nodelay(true).map_err(io::Error::from)?;
        let fd = stream.as_raw_fd();
        let (r, w) = futures_lite::io::split(stream);
        Ok(PeerConn { reader: ConnReader(r, fd), writer: ConnWriter(w) })
    }

    /// Sends one frame: its 4-byte big-endian length, then `body`.
    pub async fn send(&mut self, body: &[u8]) -> io::Result<()> {
        let len = u32::try_from(body.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
        self.writer.write_all(&[&len.to_be_bytes(), body]).await
    }

    /// Receives one frame's body, refusing one announced longer than `max` bytes before
    /// allocating it.
    pub async fn recv(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        match self.reader.read_exact(&mut len).await? {
            ReadExact::Full => {}
            _ => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the connection")),
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > max {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a frame of {n} bytes is over the {max}-byte bound")));
        }
        let mut body = Vec::new();
        match self.reader.read_exact_into(&mut body, n).await? {
            ReadExact::Full => Ok(body),
            _ => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the connection mid-frame")),
        }
    }
}
