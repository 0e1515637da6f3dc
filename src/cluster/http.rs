//! The tiny HTTP/1.1 responder of a node's metrics and health endpoints
//! ([`super::metrics`]): a `std` TcpListener on its own thread, one connection at a time,
//! `GET` (or `HEAD`) of `/metrics`, `/health` and `/ready`, every answer closing its
//! connection (RFC 9112 §9.6, `Connection: close`).
//!
//! It never blocks the node (a separate thread that shares only atomics and the loop's
//! published views) and never waits long on a client: a request must arrive whole, within
//! [`HTTP_REQUEST_LEN_MAX`] bytes, in [`HTTP_REQUEST_TIMEOUT_MS`]; a slow, half-open or
//! garbage connection gets 400 (or 408, 431) or is closed, and the next one is served.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::metrics::{LoopWatch, Source, CONTENT_TYPE};

/// The longest request head read (request line and headers): a scraper's is a few hundred
/// bytes; beyond this the answer is 431 and the connection closes.
pub const HTTP_REQUEST_LEN_MAX: usize = 4_096;

/// How long one connection may take to send its request head, in all: a slow client holds
/// the responder at most this long (one connection at a time), and a half-open one is
/// dropped after it.
pub const HTTP_REQUEST_TIMEOUT_MS: u64 = 2_000;

/// How long writing one answer may take: a client that does not read is dropped.
pub const HTTP_WRITE_TIMEOUT_MS: u64 = 2_000;

/// A running metrics endpoint; dropping it stops its thread.
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `source` on `listener` from a new thread.
    pub fn start(listener: TcpListener, source: Source) -> io::Result<MetricsServer> {
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("udplock-metrics".into())
            .spawn(move || serve(&listener, &source, &stopping))?;
        Ok(MetricsServer {
            local_addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the actual port when it was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept with a connection of our own.
        let mut to = self.local_addr;
        if to.ip().is_unspecified() {
            to.set_ip(if to.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let _ = TcpStream::connect_timeout(&to, Duration::from_millis(500));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: &TcpListener, source: &Source, stop: &AtomicBool) {
    let mut watch = LoopWatch::new(
        source.stats.loop_turns.load(Ordering::Relaxed),
        Instant::now(),
    );
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, _)) => {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                // Any IO error concerns this connection only.
                let _ = answer(stream, source, &mut watch);
            }
            Err(e) => {
                // Out of descriptors, or a connection reset before it was accepted: wait a
                // little rather than spin, and go on.
                log::warn!("udplock metrics: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A GET (`head: false`) or HEAD of `path` (query string removed).
    Get { path: &'a str, head: bool },
    /// Another method: 405.
    Method,
    /// Not an HTTP/1.x request line: 400.
    Bad,
}

/// Parses the request line of `head` (the bytes before the blank line).
pub fn parse(head: &[u8]) -> Parsed<'_> {
    let Ok(head) = std::str::from_utf8(head) else {
        return Parsed::Bad;
    };
    let line = head.split("\r\n").next().unwrap_or("");
    let line = line.strip_suffix('\n').unwrap_or(line);
    let mut words = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Parsed::Bad;
    };
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") || !target.starts_with('/') {
        return Parsed::Bad;
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Parsed::Bad;
    }
    let path = target.split('?').next().unwrap_or(target);
    match method {
        "GET" => Parsed::Get { path, head: false },
        "HEAD" => Parsed::Get { path, head: true },
        _ => Parsed::Method,
    }
}

/// Reads a request head from `stream` within the limits; `Err(status)` says how it failed.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, u16> {
    let deadline = Instant::now() + Duration::from_millis(HTTP_REQUEST_TIMEOUT_MS);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find_end(buf) {
            return Ok(end);
        }
        if buf.len() >= HTTP_REQUEST_LEN_MAX {
            return Err(431);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Err(408);
        }
        let room = (HTTP_REQUEST_LEN_MAX - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]) {
            // Closed before a whole head: nothing to answer.
            Ok(0) => return Err(0),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(408)
            }
            Err(_) => return Err(0),
        }
    }
}

/// The end of the head (the index of its blank line), if it has arrived.
fn find_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn answer(mut stream: TcpStream, source: &Source, watch: &mut LoopWatch) -> io::Result<()> {
    stream.set_write_timeout(Some(Duration::from_millis(HTTP_WRITE_TIMEOUT_MS)))?;
    let mut buf = Vec::with_capacity(512);
    let (status, body, head_only, content_type) = match read_head(&mut stream, &mut buf) {
        Err(0) => return Ok(()),
        Err(status) => (
            status,
            reason(status).to_string() + "\n",
            false,
            "text/plain",
        ),
        Ok(end) => {
            let alive = watch.alive(
                source.stats.loop_turns.load(Ordering::Relaxed),
                Instant::now(),
            );
            match parse(&buf[..end]) {
                Parsed::Bad => (400, "bad request\n".to_string(), false, "text/plain"),
                Parsed::Method => (405, "GET only\n".to_string(), false, "text/plain"),
                Parsed::Get { path, head } => match path {
                    "/metrics" => {
                        let (text, _) = source.render(alive);
                        (200, text, head, CONTENT_TYPE)
                    }
                    "/health" if alive => (200, "ok\n".to_string(), head, "text/plain"),
                    "/health" => (
                        503,
                        "the event loop has not turned for 3 s\n".to_string(),
                        head,
                        "text/plain",
                    ),
                    "/ready" if !alive => (
                        503,
                        "not ready: the event loop does not turn\n".to_string(),
                        head,
                        "text/plain",
                    ),
                    "/ready" if source.shards_ready() => {
                        (200, "ready\n".to_string(), head, "text/plain")
                    }
                    "/ready" => (
                        503,
                        "not ready: a shard this node holds has no known leader\n".to_string(),
                        head,
                        "text/plain",
                    ),
                    _ => (404, "not found\n".to_string(), head, "text/plain"),
                },
            }
        }
    };
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    if status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_or_are_refused() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x"),
            Parsed::Get {
                path: "/metrics",
                head: false
            }
        );
        assert_eq!(
            parse(b"HEAD /health?x=1 HTTP/1.0"),
            Parsed::Get {
                path: "/health",
                head: true
            }
        );
        assert_eq!(parse(b"POST /metrics HTTP/1.1"), Parsed::Method);
        for bad in [
            &b""[..],
            b"GET",
            b"GET /metrics",
            b"GET /metrics HTTP/2",
            b"GET metrics HTTP/1.1",
            b"GET  /metrics HTTP/1.1",
            b"get /metrics HTTP/1.1",
            b"\xff\xfe /metrics HTTP/1.1",
            b"GET /metrics HTTP/1.1 extra",
        ] {
            assert_eq!(parse(bad), Parsed::Bad, "{bad:?}");
        }
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(20));
        assert_eq!(find_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }
}
