//! A client of Cyrus's `sync_server` (the replication protocol, `imap/sync_server.c`),
//! over plain TCP.
//!
//! The session: the server greets with `* SASL <mechs>`, `* STARTTLS`, `* COMPRESS
//! DEFLATE`, `* SIEVE-MAILBOX` lines (each optional) and `* OK <servername> Cyrus sync
//! server <version>`; the client logs in with `AUTHENTICATE PLAIN <base64>` (the
//! authenticated user must be an admin, or every later command is refused); then
//! each command is one line, `GET <KEY> <dlist>` or `APPLY <KEY> <dlist>`, answered by
//! zero or more `* <KEY> <dlist>` lines and one `OK ...`, `NO <code> <text>` or
//! `BAD ...` line; `EXIT` ends the session (`OK Finished`). The server reads commands
//! one after the other from a buffered stream, so they can be sent ahead
//! ([`SyncClient::send`], then [`SyncClient::read_response`] once per command).
//! Literals are `{N+}` (non-synchronising) both ways.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::wire::{Value, command};
use crate::cyrus::dlist::{Dlist, parse_dlist};
use crate::error::{Error, Result};
use crate::imap::base64;

/// The longest response line we accept (literals excluded).
const MAX_LINE: usize = 1 << 20;
/// The largest literal we accept in a response.
const MAX_LITERAL: usize = 1 << 30;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// `OK <text>`.
    Ok(String),
    /// `NO <text>`; Cyrus puts its error code first (`IMAP_SYNC_CHECKSUM ...`).
    No(String),
    /// `BAD <text>`.
    Bad(String),
}

/// One command's answer: its `*` lines (key, value) and its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// `* <KEY> <value>` lines, in order.
    pub items: Vec<(String, Dlist)>,
    /// The closing status.
    pub status: Status,
}

/// A logged-in (or not yet) replication session.
pub struct SyncClient {
    reader: BufReader<TcpStream>,
    writer: std::io::BufWriter<TcpStream>,
    server: String,
    /// The greeting's `* ...` lines after the star (`SASL PLAIN LOGIN`, `SIEVE-MAILBOX`).
    pub banner: Vec<String>,
    /// Commands sent whose answer was not read yet.
    pending: usize,
}

impl SyncClient {
    /// Connect and read the greeting.
    pub fn connect(addr: &str, timeout: Duration) -> Result<SyncClient> {
        let e = |what: String| Error::imap(format!("sync_server {addr}"), what);
        let addrs: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|x| e(format!("resolving: {x}")))?
            .collect();
        let s = TcpStream::connect(&addrs[..]).map_err(|x| e(format!("connecting: {x}")))?;
        s.set_read_timeout(Some(timeout))
            .and_then(|()| s.set_write_timeout(Some(timeout)))
            .and_then(|()| s.set_nodelay(true))
            .map_err(|x| e(format!("socket: {x}")))?;
        let w = s.try_clone().map_err(|x| e(format!("socket: {x}")))?;
        let mut c = SyncClient {
            reader: BufReader::with_capacity(64 << 10, s),
            writer: std::io::BufWriter::with_capacity(1 << 20, w),
            server: format!("sync_server {addr}"),
            banner: Vec::new(),
            pending: 0,
        };
        loop {
            let line = c.read_line()?;
            let text = String::from_utf8_lossy(&line).into_owned();
            match text.strip_prefix("* ") {
                Some(rest) if rest.starts_with("OK ") => {
                    c.banner.push(rest.to_string());
                    return Ok(c);
                }
                Some(rest) => c.banner.push(rest.to_string()),
                None => return Err(c.err(format!("unexpected greeting line {text:?}"))),
            }
        }
    }

    fn err(&self, message: String) -> Error {
        Error::imap(self.server.clone(), message)
    }

    /// Whether the greeting announced `cap` (a `* <cap>` line, e.g. `SIEVE-MAILBOX`).
    pub fn has(&self, cap: &str) -> bool {
        self.banner.iter().any(|b| b == cap)
    }

    /// `AUTHENTICATE PLAIN` with authorization id `authz` (empty: none) and
    /// authentication id `authn`. sync_server accepts only admins.
    pub fn authenticate_plain(&mut self, authz: &str, authn: &str, password: &str) -> Result<()> {
        let mut raw = Vec::new();
        raw.extend_from_slice(authz.as_bytes());
        raw.push(0);
        raw.extend_from_slice(authn.as_bytes());
        raw.push(0);
        raw.extend_from_slice(password.as_bytes());
        self.send(format!("AUTHENTICATE PLAIN {}\r\n", base64(&raw)).as_bytes())?;
        match self.read_response()?.status {
            Status::Ok(_) => Ok(()),
            Status::No(t) | Status::Bad(t) => Err(self.err(format!(
                "logging in as {authn}: {t} (sync_server needs an admin)"
            ))),
        }
    }

    /// Send raw bytes (a whole command, or a piece of one); counts a command when the
    /// bytes end a line. Buffered: [`SyncClient::read_response`] flushes.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer
            .write_all(bytes)
            .map_err(|x| self.err(format!("sending: {x}")))?;
        if bytes.ends_with(b"\r\n") {
            self.pending += 1;
        }
        Ok(())
    }

    /// Send message bytes inside a command (a file literal's content): no line end is
    /// counted.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer
            .write_all(bytes)
            .map_err(|x| self.err(format!("sending: {x}")))
    }

    /// Commands sent whose answers are still unread.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Send `GET <key> <value>` and read its answer; a NO/BAD is an error.
    pub fn get(&mut self, key: &str, v: &Value) -> Result<Vec<(String, Dlist)>> {
        self.send(&command("GET", key, v))?;
        let r = self.read_response()?;
        match r.status {
            Status::Ok(_) => Ok(r.items),
            Status::No(t) | Status::Bad(t) => Err(self.err(format!("GET {key}: {t}"))),
        }
    }

    /// Send `APPLY <key> <value>` and read its answer (whatever the status).
    pub fn apply(&mut self, key: &str, v: &Value) -> Result<Response> {
        self.send(&command("APPLY", key, v))?;
        self.read_response()
    }

    /// Send `APPLY` commands ahead of their answers, at most `window` unanswered at a
    /// time (answers are one short line, so they never fill the socket while we
    /// write), calling `done(i, status)` for the answer to `cmds[i]`, in order. Every
    /// earlier command must have been answered.
    pub fn apply_many(
        &mut self,
        cmds: &[(&str, Value)],
        window: usize,
        mut done: impl FnMut(usize, Status),
    ) -> Result<()> {
        if self.pending != 0 {
            return Err(self.err("apply_many with answers outstanding".into()));
        }
        let mut next = 0;
        for (key, v) in cmds {
            self.send(&command("APPLY", key, v))?;
            while self.pending > window.max(1) {
                done(next, self.read_response()?.status);
                next += 1;
            }
        }
        while self.pending > 0 {
            done(next, self.read_response()?.status);
            next += 1;
        }
        Ok(())
    }

    /// Send several `GET`s at once and read their answers (one round trip); a NO/BAD is
    /// an error.
    pub fn get_many(&mut self, cmds: &[(&str, Value)]) -> Result<Vec<Vec<(String, Dlist)>>> {
        for (key, v) in cmds {
            self.send(&command("GET", key, v))?;
        }
        let mut out = Vec::new();
        for (key, _) in cmds {
            let r = self.read_response()?;
            match r.status {
                Status::Ok(_) => out.push(r.items),
                Status::No(t) | Status::Bad(t) => {
                    return Err(self.err(format!("GET {key}: {t}")));
                }
            }
        }
        Ok(out)
    }

    fn flush(&mut self) -> Result<()> {
        self.writer
            .flush()
            .map_err(|x| self.err(format!("sending: {x}")))
    }

    /// Read one line with its CRLF cut off.
    fn read_line(&mut self) -> Result<Vec<u8>> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .map_err(|x| self.err(format!("reading: {x}")))?;
        if n == 0 {
            return Err(self.err("connection closed by the server".into()));
        }
        if !line.ends_with(b"\n") {
            return Err(self.err(format!("response line longer than {MAX_LINE} bytes")));
        }
        line.pop();
        if line.ends_with(b"\r") {
            line.pop();
        }
        Ok(line)
    }

    /// Read one logical line: a line, and for each `{N}`/`{N+}` it ends with, N bytes
    /// and the line that continues after them (kept as the DList parser expects).
    fn read_logical_line(&mut self) -> Result<Vec<u8>> {
        let mut out = self.read_line()?;
        while let Some(n) = literal_suffix(&out) {
            if n > MAX_LITERAL {
                return Err(self.err(format!("literal of {n} bytes is too large")));
            }
            out.extend_from_slice(b"\r\n");
            let at = out.len();
            out.resize(at + n, 0);
            self.reader
                .read_exact(&mut out[at..])
                .map_err(|x| self.err(format!("reading a {n}-byte literal: {x}")))?;
            let more = self.read_line()?;
            out.extend_from_slice(&more);
        }
        Ok(out)
    }

    /// Read the answer to the oldest command not answered yet.
    pub fn read_response(&mut self) -> Result<Response> {
        self.flush()?;
        let mut items = Vec::new();
        loop {
            let line = self.read_logical_line()?;
            if let Some(rest) = line.strip_prefix(b"* ") {
                let sp = rest
                    .iter()
                    .position(|&b| b == b' ')
                    .ok_or_else(|| self.err("'*' line without a value".into()))?;
                let key = String::from_utf8_lossy(&rest[..sp]).into_owned();
                let v = parse_dlist(&rest[sp + 1..])
                    .map_err(|x| self.err(format!("parsing the {key} line: {x}")))?;
                items.push((key, v));
                continue;
            }
            self.pending = self.pending.saturating_sub(1);
            let text = String::from_utf8_lossy(&line).into_owned();
            let (word, rest) = text.split_once(' ').unwrap_or((&text, ""));
            let status = match word {
                "OK" => Status::Ok(rest.to_string()),
                "NO" => Status::No(rest.to_string()),
                "BAD" => Status::Bad(rest.to_string()),
                _ => return Err(self.err(format!("unexpected response line {text:?}"))),
            };
            return Ok(Response { items, status });
        }
    }

    /// `EXIT`: the server drops its staged files and ends the session.
    pub fn exit(mut self) -> Result<()> {
        while self.pending > 0 {
            self.read_response()?;
        }
        self.send(b"EXIT\r\n")?;
        self.read_response().map(|_| ())
    }

    /// The server, for messages.
    pub fn server(&self) -> &str {
        &self.server
    }
}

/// `{N}` or `{N+}` at the end of a line: N.
fn literal_suffix(line: &[u8]) -> Option<usize> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let digits = &body[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_suffixes() {
        assert_eq!(literal_suffix(b"VALUE {5}"), Some(5));
        assert_eq!(literal_suffix(b"VALUE {12+}"), Some(12));
        assert_eq!(literal_suffix(b"VALUE {x}"), None);
        assert_eq!(literal_suffix(b"VALUE {}"), None);
        assert_eq!(literal_suffix(b"OK success"), None);
    }

    #[test]
    fn parses_what_sync_server_sent() {
        // One line of `GET USER bob` from Cyrus 3.6.1, literal included.
        let line = b"MAILBOX %(UNIQUEID p8q MBOXNAME user.bob.Sent ACL \"bob\tlr\t\" \
                     ANNOTATIONS (%(ENTRY /specialuse USERID bob MODSEQ 0 VALUE {5}\r\n\\Sent)))";
        let sp = line.iter().position(|&b| b == b' ').unwrap();
        let v = parse_dlist(&line[sp + 1..]).unwrap();
        assert_eq!(
            v.get("MBOXNAME").and_then(Dlist::as_str),
            Some("user.bob.Sent")
        );
        let a = &v.get("ANNOTATIONS").unwrap().as_list().unwrap()[0];
        assert_eq!(a.get("VALUE").and_then(Dlist::as_str), Some("\\Sent"));
    }
}
