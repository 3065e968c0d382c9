//! TCP: a per-core listener sharing the port through SO_REUSEPORT, and connections split into a
//! reading and a writing half, over the socket itself or over TLS (`io::tls`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};

use futures_lite::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use socket2::{Domain, Protocol, Socket, Type};

type Stream = glommio::net::TcpStream;
type TlsStream = futures_rustls::server::TlsStream<Stream>;

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

    pub async fn accept(&self) -> io::Result<(Accepted, SocketAddr)> {
        let stream = self.0.accept().await.map_err(io::Error::from)?;
        stream.set_nodelay(true).map_err(io::Error::from)?;
        let peer = stream.peer_addr().map_err(io::Error::from)?;
        let fd = stream.as_raw_fd();
        Ok((Accepted { stream, fd }, peer))
    }
}

/// An accepted connection, before it is split (and, on a TLS listener, before its handshake).
pub struct Accepted {
    stream: Stream,
    fd: RawFd,
}

/// What a TLS handshake learned about the client.
pub struct TlsPeer {
    /// The client's certificate chain, leaf first (empty without mutual TLS).
    pub certificates: Vec<Vec<u8>>,
    /// "TLSv1_3", "TLSv1_2".
    pub version: String,
}

impl Accepted {
    /// The connection as it is, unencrypted.
    pub fn plain(self) -> (ConnReader, ConnWriter) {
        let (r, w) = futures_lite::io::split(self.stream);
        (ConnReader { half: ReadSide::Plain(r), fd: self.fd }, ConnWriter(WriteSide::Plain(w)))
    }

    /// Runs the server side of a TLS handshake (no deadline here: see `server::connection`).
    pub async fn tls(self, acceptor: futures_rustls::TlsAcceptor) -> io::Result<(ConnReader, ConnWriter, TlsPeer)> {
        let fd = self.fd;
        let stream = acceptor.accept(self.stream).await?;
        let (_, session) = stream.get_ref();
        let peer = TlsPeer {
            certificates: session.peer_certificates().unwrap_or_default().iter().map(|c| c.to_vec()).collect(),
            version: session.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default(),
        };
        let (r, w) = futures_lite::io::split(stream);
        Ok((ConnReader { half: ReadSide::Tls(r), fd }, ConnWriter(WriteSide::Tls(w)), peer))
    }
}

enum ReadSide {
    Plain(ReadHalf<Stream>),
    Tls(ReadHalf<TlsStream>),
}

enum WriteSide {
    Plain(WriteHalf<Stream>),
    Tls(WriteHalf<TlsStream>),
}

/// The reading half of a client connection.
pub struct ConnReader {
    half: ReadSide,
    fd: RawFd,
}

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
        ConnCloser(self.fd)
    }

    /// Whether the connection runs over TLS (its bytes are read through rustls, never straight
    /// from the socket).
    pub fn is_tls(&self) -> bool {
        matches!(self.half, ReadSide::Tls(_))
    }

    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.half {
            ReadSide::Plain(r) => r.read(buf).await,
            ReadSide::Tls(r) => r.read(buf).await,
        }
    }

    /// Reads what has arrived, without waiting: `None` when nothing has, `Some(Ok(0))` when the
    /// peer has closed. A plain nonblocking recv(2), no ring; always `None` over TLS (whose
    /// bytes must go through rustls).
    pub fn try_read(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        if self.is_tls() {
            return None;
        }
        // SAFETY: buf is valid for writes of buf.len() bytes.
        unsafe { recv_now(self.fd, buf.as_mut_ptr(), buf.len()) }
    }

    /// A handle that tells whether the peer has sent bytes not yet read, from another task.
    pub fn peeker(&self) -> ConnPeeker {
        ConnPeeker(self.fd)
    }

    /// Reads exactly `n` bytes into `v` (emptied first), without zeroing its memory first (a
    /// request frame of a produce can be megabytes): what has arrived is received straight into
    /// the vector's spare capacity, and only when nothing has does the read wait on the ring,
    /// taking what comes then through a small buffer.
    pub async fn read_exact_into(&mut self, v: &mut Vec<u8>, n: usize) -> io::Result<ReadExact> {
        const WAIT_BYTES: usize = 512;
        v.clear();
        let ended = |got: usize| if got == 0 { ReadExact::Closed } else { ReadExact::Truncated(got) };
        if self.is_tls() {
            // Decrypted bytes come from rustls' buffer: read them into zeroed memory.
            v.resize(n, 0);
            return Ok(match self.read_exact(v).await? {
                ReadExact::Full => ReadExact::Full,
                r => {
                    v.clear();
                    r
                }
            });
        }
        v.reserve_exact(n);
        while v.len() < n {
            let missing = n - v.len();
            let spare = &mut v.spare_capacity_mut()[..missing];
            // SAFETY: spare is the vector's reserved, unused capacity, valid for writes of
            // `missing` bytes; exactly the bytes recv reports are then counted in.
            match unsafe { recv_now(self.fd, spare.as_mut_ptr().cast(), missing) } {
                Some(Ok(0)) => return Ok(ended(v.len())),
                // SAFETY: the r bytes after len were just written by recv, and len + r <= n <= capacity.
                Some(Ok(r)) => unsafe { v.set_len(v.len() + r) },
                Some(Err(e)) => return Err(e),
                None => {
                    let mut small = [0u8; WAIT_BYTES];
                    let want = missing.min(WAIT_BYTES);
                    let got = self.read(&mut small[..want]).await?;
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
            let n = self.read(&mut buf[got..]).await?;
            if n == 0 {
                return Ok(if got == 0 { ReadExact::Closed } else { ReadExact::Truncated(got) });
            }
            got += n;
        }
        Ok(ReadExact::Full)
    }
}

/// The writing half of a client connection.
pub struct ConnWriter(WriteSide);

impl ConnWriter {
    pub async fn write_all(&mut self, bufs: &[&[u8]]) -> io::Result<()> {
        match &mut self.0 {
            WriteSide::Plain(w) => {
                for b in bufs {
                    w.write_all(b).await?;
                }
                w.flush().await
            }
            WriteSide::Tls(w) => {
                for b in bufs {
                    w.write_all(b).await?;
                }
                w.flush().await
            }
        }
    }

    /// Closes the write side (the client sees end of stream and closes its end; over TLS after
    /// a close_notify alert).
    pub async fn close(&mut self) {
        let _ = match &mut self.0 {
            WriteSide::Plain(w) => w.close().await,
            WriteSide::Tls(w) => w.close().await,
        };
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
        let (reader, writer) = Accepted { stream, fd }.plain();
        Ok(PeerConn { reader, writer })
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
