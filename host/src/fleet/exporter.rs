//! `cyrvault run --metrics-listen ADDR`: a tiny HTTP/1.x responder that answers
//! `GET /metrics` with the Prometheus text of the running fleet (`metrics.rs`).
//!
//! Why not an HTTP crate: Prometheus sends one GET every scrape interval and needs one
//! plain-text answer; a std `TcpListener` on one thread does that in ~150 lines,
//! where a server framework would bring an async runtime into the backup host.
//! Connections are served one at a time with 2-second read and write timeouts, so a
//! peer that connects and says nothing delays a scrape by at most that, and nothing
//! it sends is buffered past 8 KiB.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};

/// Most bytes of a request head read (request line and headers).
const MAX_HEAD: usize = 8192;
/// Read and write timeout per connection.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the idle accept loop looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// The page: called for each `GET /metrics`.
pub type Page = Box<dyn FnMut() -> String + Send>;

/// A running responder; stopped when dropped.
pub struct Exporter {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Listen on `addr` (`host:port`; port 0 picks a free one) and answer scrapes
    /// with `page()` on a thread of its own.
    pub fn start(addr: &str, mut page: Page) -> Result<Exporter> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| Error::other(format!("--metrics-listen {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::other(format!("--metrics-listen {addr}: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::other(format!("--metrics-listen {addr}: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, peer)) => {
                        if let Err(e) = answer(conn, &mut page) {
                            log::debug!(target: "cyrvault::metrics", "scrape from {peer}: {e}");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(POLL)
                    }
                    Err(e) => {
                        log::warn!(target: "cyrvault::metrics", "accepting a scrape: {e}");
                        std::thread::sleep(POLL);
                    }
                }
            }
        });
        Ok(Exporter {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    /// `GET /metrics` (or `/`); `HEAD` wants no body.
    Metrics {
        body: bool,
    },
    NotFound,
    BadMethod,
    Bad,
}

/// Parse the request line of `head` (`METHOD TARGET HTTP/x.y`).
fn parse_head(head: &[u8]) -> Ask {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = String::from_utf8_lossy(&head[..line_end]);
    let mut words = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return Ask::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Ask::Bad;
    }
    let body = match method {
        "GET" => true,
        "HEAD" => false,
        _ => return Ask::BadMethod,
    };
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" | "/" => Ask::Metrics { body },
        _ => Ask::NotFound,
    }
}

/// Read the head (up to the blank line, at most `MAX_HEAD` bytes), answer, close.
fn answer(mut conn: TcpStream, page: &mut Page) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            break;
        }
    }
    let (status, body, send_body) = match parse_head(&head) {
        Ask::Metrics { body } => ("200 OK", page(), body),
        Ask::NotFound => ("404 Not Found", "metrics are at /metrics\n".into(), true),
        Ask::BadMethod => ("405 Method Not Allowed", "GET only\n".into(), true),
        Ask::Bad => ("400 Bad Request", "not an HTTP/1 request\n".into(), true),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if send_body {
        out.extend_from_slice(body.as_bytes());
    }
    conn.write_all(&out)?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(request).unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn requests() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ask::Metrics { body: true }
        );
        assert_eq!(
            parse_head(b"HEAD /?x=1 HTTP/1.0\r\n\r\n"),
            Ask::Metrics { body: false }
        );
        assert_eq!(parse_head(b"GET /x HTTP/1.1\r\n\r\n"), Ask::NotFound);
        assert_eq!(
            parse_head(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Ask::BadMethod
        );
        assert_eq!(parse_head(b"hello\r\n\r\n"), Ask::Bad);
        assert_eq!(parse_head(b""), Ask::Bad);
    }

    #[test]
    fn serves_the_page_and_survives_a_silent_peer() {
        let mut n = 0;
        let ex = Exporter::start(
            "127.0.0.1:0",
            Box::new(move || {
                n += 1;
                format!("x {n}\n")
            }),
        )
        .unwrap();
        let addr = ex.local_addr();
        // a peer that connects and says nothing: the next scrape is served anyway
        let silent = TcpStream::connect(addr).unwrap();
        let r = get(addr, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        drop(silent);
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("text/plain; version=0.0.4"), "{r}");
        assert!(r.ends_with("\r\n\r\nx 1\n"), "{r}");
        assert!(get(addr, b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        // a head over the bound (exactly one byte over, so nothing is left unread)
        let big = vec![b'a'; MAX_HEAD + 1];
        let r = get(addr, &big);
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
        drop(ex);
        assert!(TcpStream::connect(addr).is_err(), "stopped when dropped");
    }
}
