//! The admin HTTP listener: a small blocking HTTP/1.1 server on its own thread (not on a shard
//! core, so a scrape never competes with client requests and answers even while the cores are
//! still recovering). GET only; one request per connection; bounded request size. Optionally
//! over TLS (the listeners' certificate, `io::tls`), and optionally behind a bearer token that
//! every request but the health and readiness probes must carry.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// An answer: status code, content type, body.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// Who may use the admin listener, and how it is reached.
#[derive(Clone, Default)]
pub struct Access {
    /// Serve HTTPS with the TLS configuration `io::tls` holds.
    pub tls: bool,
    /// `Authorization: Bearer <token>` required (but for the probes).
    pub token: Option<String>,
}

/// Paths served without the token: the probes an orchestrator runs.
const OPEN_PATHS: [&str; 2] = ["/v1/health", "/v1/ready"];

/// Binds `addr` now (so a port in use is reported at start) and serves `route(path)` on a
/// background thread for the life of the process. Returns the bound address.
pub fn serve(addr: SocketAddr, access: Access, route: impl Fn(&str) -> Response + Send + 'static) -> io::Result<SocketAddr> {
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
            let served = (|| {
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                stream.set_write_timeout(Some(Duration::from_secs(30)))?;
                if !access.tls {
                    return answer(stream, &access, &route);
                }
                let config = crate::io::tls::current().ok_or_else(|| io::Error::other("no TLS configuration loaded"))?;
                let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
                answer(rustls::StreamOwned::new(conn, stream), &access, &route)
            })();
            if let Err(e) = served {
                tracing::debug!(error = %e, "admin HTTP request failed");
            }
        }
    })?;
    Ok(bound)
}

/// Whether two strings are equal, in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn answer<S: Read + Write>(mut stream: S, access: &Access, route: &impl Fn(&str) -> Response) -> io::Result<()> {
    let (line, authorization) = {
        let mut reader = BufReader::new((&mut stream).take(16 * 1024));
        let mut line = String::new();
        reader.read_line(&mut line)?;
        // Drain the headers (bounded by the take above), keeping Authorization.
        let mut authorization = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                if name.trim().eq_ignore_ascii_case("authorization") {
                    authorization = Some(value.trim().to_string());
                }
            }
        }
        (line, authorization)
    };
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let authorized = match &access.token {
        None => true,
        Some(_) if OPEN_PATHS.contains(&path) => true,
        Some(token) => authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|given| same(given.trim().as_bytes(), token.as_bytes())),
    };
    let r = if !authorized {
        Response { status: 401, content_type: "text/plain", body: "a bearer token is required (admin_token)\n".into() }
    } else if method == "GET" || method == "HEAD" {
        route(path)
    } else {
        Response { status: 405, content_type: "text/plain", body: "only GET\n".into() }
    };
    let reason = match r.status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = stream;
    if r.status == 401 {
        write!(out, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}", r.body.len(), r.body)?;
        return out.flush();
    }
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
