//! The admin HTTP listener: a small blocking HTTP/1.1 server on its own thread (not on a shard
//! core, so a scrape never competes with client requests and answers even while the cores are
//! still recovering). GET only; one request per connection; bounded request size.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// An answer: status code, content type, body.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// Binds `addr` now (so a port in use is reported at start) and serves `route(path)` on a
/// background thread for the life of the process. Returns the bound address.
pub fn serve(addr: SocketAddr, route: impl Fn(&str) -> Response + Send + 'static) -> io::Result<SocketAddr> {
    // A broker just killed with SIGKILL keeps its sockets for a few milliseconds while the
    // kernel tears its io_uring down (see kernel-notes/): retry "in use" briefly.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let listener = loop {
        match TcpListener::bind(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => break other?,
        }
    };
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("spate-admin-http".into()).spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            if let Err(e) = answer(stream, &route) {
                tracing::debug!(error = %e, "admin HTTP request failed");
            }
        }
    })?;
    Ok(bound)
}

fn answer(stream: TcpStream, route: &impl Fn(&str) -> Response) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?.take(16 * 1024));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Drain the headers (bounded by the take above).
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let r = if method == "GET" || method == "HEAD" {
        route(path)
    } else {
        Response { status: 405, content_type: "text/plain", body: "only GET\n".into() }
    };
    let reason = match r.status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len()
    )?;
    if method != "HEAD" {
        out.write_all(r.body.as_bytes())?;
    }
    out.flush()
}
