//! A small synchronous IMAP4rev1 client, over plain TCP, STARTTLS or implicit TLS
//! (the server's certificate checked, `tls::client`), used by restore and by the test
//! sandbox to talk to a real Cyrus.
//!
//! It owns the connection: tags, command serialisation (quoted strings, `{N}` literals with
//! continuation, LITERAL+ `{N+}` when announced), and reading whole responses (lines plus
//! literals). Parsing is pure and lives in `parse.rs` (tokens), `types.rs`
//! (LIST/SELECT/FETCH/ACL views) and `date.rs` (internal dates). Errors are [`ImapError`]s
//! naming the server, the command and the server's answer (they convert into the service's
//! `Imap`, in `crate::Error::Service`); a NO or BAD answer is an error from the convenience
//! methods, while [`Client::execute`] hands back every tagged status.
#![forbid(unsafe_code)]

pub mod date;
pub mod error;
pub mod meta;
pub mod parse;
pub mod pipeline;
mod tls;
pub mod types;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::tls::{Half, Shared, Stream};

pub use date::{format_internaldate, parse_internaldate};
pub use error::{ImapError, ImapErrorKind};
pub use parse::{Response, Status, StatusText, Value};
pub use tls::{Tls, TlsMode};
pub use types::{FetchItem, ListEntry, SelectInfo};

/// Results of the client.
pub type Result<T, E = ImapError> = std::result::Result<T, E>;

/// The longest response line we accept (literals excluded).
const MAX_LINE: u64 = 1 << 20;
/// The largest literal we accept from the server.
const MAX_LITERAL: usize = 1 << 30;
/// Default socket timeout.
const TIMEOUT: Duration = Duration::from_secs(120);

/// One argument of a command.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    /// Sent verbatim (keywords, sequence sets, parenthesised item lists).
    Atom(&'a str),
    /// A string: quoted when it can be, else sent as a literal.
    Str(&'a [u8]),
    /// Always sent as a literal (message bodies).
    Literal(&'a [u8]),
    /// Sent verbatim right after the previous argument, without the space (a `)`
    /// closing a list whose last element is a string or literal).
    Glued(&'a str),
}

/// The outcome of one command: the untagged responses it produced and its tagged status.
#[derive(Debug, Clone)]
pub struct Reply {
    pub untagged: Vec<Response>,
    pub status: StatusText,
}

impl Reply {
    /// The untagged data responses whose first or second token is `word`
    /// (`* LIST ...`, `* 3 FETCH ...`).
    pub fn data<'a>(&'a self, word: &'a str) -> impl Iterator<Item = &'a [Value]> + 'a {
        self.untagged.iter().filter_map(move |r| match r {
            Response::Data(v) if v.first().is_some_and(|x| x.is_atom(word)) => Some(v.as_slice()),
            Response::Data(v) if v.get(1).is_some_and(|x| x.is_atom(word)) => Some(v.as_slice()),
            _ => None,
        })
    }
}

/// A connected IMAP session.
pub struct Client {
    reader: BufReader<Half<TcpStream>>,
    writer: Half<TcpStream>,
    stream: Shared<TcpStream>,
    /// The address as given (its host names the certificate to expect).
    given: String,
    server: String,
    next_tag: u32,
    caps: Vec<String>,
    greeting: String,
    /// The command in progress, for error messages.
    command: String,
}

impl Client {
    /// Connect in plaintext, read the greeting (OK or PREAUTH; BYE is an error) and
    /// learn the capabilities (from the greeting's code, or by asking).
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Client> {
        Client::open(addr, String::new(), None)
    }

    /// Connect as `tls` says (None: plaintext). With TLS asked for, a server that
    /// does not offer it, or whose certificate does not verify, is an error of kind
    /// [`ImapErrorKind::Tls`]: nothing (no password) is ever sent in plaintext.
    pub fn connect_with(addr: &str, tls: Option<&Tls>) -> Result<Client> {
        Client::open(addr, addr.to_string(), tls)
    }

    /// `given`: the address as the user wrote it (its host is what the certificate
    /// must name), or empty.
    fn open(addr: impl ToSocketAddrs, given: String, tls: Option<&Tls>) -> Result<Client> {
        let connect_err = |server: &str, text: String| ImapError {
            server: server.to_string(),
            command: String::new(),
            kind: ImapErrorKind::Connect,
            code: None,
            text,
        };
        let addrs: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|e| connect_err("?", format!("resolving address: {e}")))?
            .collect();
        let server = addrs
            .first()
            .map(|a| a.to_string())
            .ok_or_else(|| connect_err("?", "address resolved to nothing".into()))?;
        let stream = TcpStream::connect(&addrs[..])
            .map_err(|e| connect_err(&server, format!("connecting: {e}")))?;
        let io_err = |e: std::io::Error| connect_err(&server, format!("setting up socket: {e}"));
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io_err)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io_err)?;
        stream.set_nodelay(true).map_err(io_err)?;
        let shared = Shared::new(Stream::plain(stream));
        let mut client = Client {
            reader: BufReader::with_capacity(64 * 1024, shared.half()),
            writer: shared.half(),
            stream: shared,
            given: if given.is_empty() {
                server.clone()
            } else {
                given
            },
            server,
            next_tag: 1,
            caps: Vec::new(),
            greeting: String::new(),
            command: "greeting".into(),
        };
        if let Some(t) = tls.filter(|t| t.mode == TlsMode::Implicit) {
            client.handshake(t)?;
        }
        match client.read_response()? {
            Response::UntaggedStatus(st) if matches!(st.status, Status::Ok | Status::PreAuth) => {
                client.greeting = st.text.clone();
                if !client.absorb_caps(&st) {
                    client.capability()?;
                }
            }
            Response::UntaggedStatus(st) if st.status == Status::Bye => {
                return Err(client.err(ImapErrorKind::Bye, st.text));
            }
            other => {
                return Err(client.err(
                    ImapErrorKind::Protocol,
                    format!("unexpected greeting {other:?}"),
                ));
            }
        }
        if let Some(t) = tls.filter(|t| t.mode == TlsMode::StartTls) {
            client.starttls(t)?;
        }
        Ok(client)
    }

    /// The server address, as used in error messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The text of the server's greeting (Cyrus puts its `servername` first).
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// The capabilities last announced, uppercased.
    pub fn capabilities(&self) -> &[String] {
        &self.caps
    }

    /// Whether the server announced `cap` (case-insensitive).
    pub fn has_capability(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c.eq_ignore_ascii_case(cap))
    }

    /// Stop using LITERAL+ even if announced: every literal then waits for the
    /// server's continuation request (tests of the synchronising path use this).
    pub fn disable_literal_plus(&mut self) {
        self.caps.retain(|c| c != "LITERAL+");
    }

    fn err(&self, kind: ImapErrorKind, text: String) -> ImapError {
        ImapError {
            server: self.server.clone(),
            command: self.command.clone(),
            kind,
            code: None,
            text,
        }
    }

    /// The error for a tagged NO/BAD answer.
    pub(crate) fn refused(&self, st: &StatusText) -> ImapError {
        let kind = if st.status == Status::Bad {
            ImapErrorKind::Bad
        } else {
            ImapErrorKind::No
        };
        let code = st
            .code
            .as_ref()
            .and_then(|c| c.first())
            .and_then(Value::as_text)
            .map(|c| c.to_ascii_uppercase());
        ImapError {
            code,
            ..self.err(kind, st.text.clone())
        }
    }

    fn absorb_caps(&mut self, st: &StatusText) -> bool {
        match st.code_args("CAPABILITY") {
            Some(args) => {
                self.caps = args
                    .iter()
                    .filter_map(Value::as_text)
                    .map(|s| s.to_ascii_uppercase())
                    .collect();
                true
            }
            None => false,
        }
    }

    /// Read one line (with its CRLF) into `out`.
    fn read_line_into(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', out)
            .map_err(|e| self.err(ImapErrorKind::Io, format!("reading response: {e}")))?;
        if n == 0 {
            return Err(self.err(ImapErrorKind::Io, "connection closed by server".into()));
        }
        if !out[start..].ends_with(b"\n") {
            return Err(self.err(
                ImapErrorKind::Protocol,
                format!("response line longer than {MAX_LINE} bytes"),
            ));
        }
        Ok(())
    }

    /// Read one whole response: a line, and for each `{N}` it ends with, N bytes and
    /// the line that continues after them.
    fn read_response(&mut self) -> Result<Response> {
        let mut buf = Vec::new();
        loop {
            let line_start = buf.len();
            self.read_line_into(&mut buf)?;
            let line = &buf[line_start..];
            let line = line
                .strip_suffix(b"\r\n")
                .or_else(|| line.strip_suffix(b"\n"))
                .unwrap_or(line);
            let Some(len) = parse::literal_suffix(line) else {
                break;
            };
            if len > MAX_LITERAL {
                return Err(self.err(
                    ImapErrorKind::Protocol,
                    format!("server literal of {len} bytes is too large"),
                ));
            }
            let at = buf.len();
            buf.resize(at + len, 0);
            self.reader.read_exact(&mut buf[at..]).map_err(|e| {
                self.err(
                    ImapErrorKind::Io,
                    format!("reading {len}-byte literal: {e}"),
                )
            })?;
        }
        parse::parse_response(&buf).map_err(|e| {
            let head = String::from_utf8_lossy(&buf[..buf.len().min(200)]).into_owned();
            self.err(ImapErrorKind::Protocol, format!("{e} in {head:?}"))
        })
    }

    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer
            .write_all(bytes)
            .and_then(|()| self.writer.flush())
            .map_err(|e| self.err(ImapErrorKind::Io, format!("sending command: {e}")))
    }

    /// Read until the continuation request for a synchronising literal. Untagged
    /// responses on the way are kept; the tagged answer (refusal) ends the command.
    fn await_continuation(
        &mut self,
        tag: &str,
        untagged: &mut Vec<Response>,
    ) -> Result<Option<StatusText>> {
        loop {
            match self.read_response()? {
                Response::Continuation(_) => return Ok(None),
                Response::Tagged { tag: t, body } if t == tag => return Ok(Some(body)),
                other => untagged.push(other),
            }
        }
    }

    /// Send one command and read until its tagged answer, whatever the status.
    pub fn execute(&mut self, args: &[Arg<'_>]) -> Result<Reply> {
        self.command = describe(args);
        let tag = format!("C{}", self.next_tag);
        self.next_tag = self.next_tag.wrapping_add(1);
        let literal_plus = self.has_capability("LITERAL+");
        let mut untagged = Vec::new();
        let mut out = tag.clone().into_bytes();
        for arg in args {
            if let Arg::Glued(g) = *arg {
                out.extend_from_slice(g.as_bytes());
                continue;
            }
            out.push(b' ');
            let literal = match *arg {
                Arg::Glued(_) => continue,
                Arg::Atom(a) => {
                    out.extend_from_slice(a.as_bytes());
                    continue;
                }
                Arg::Str(s) => match parse::quote(s) {
                    Some(q) => {
                        out.extend_from_slice(&q);
                        continue;
                    }
                    None => s,
                },
                Arg::Literal(l) => l,
            };
            if literal_plus {
                out.extend_from_slice(format!("{{{}+}}\r\n", literal.len()).as_bytes());
                out.extend_from_slice(literal);
            } else {
                out.extend_from_slice(format!("{{{}}}\r\n", literal.len()).as_bytes());
                self.write_all(&out)?;
                out.clear();
                if let Some(refusal) = self.await_continuation(&tag, &mut untagged)? {
                    return Ok(Reply {
                        untagged,
                        status: refusal,
                    });
                }
                self.write_all(literal)?;
            }
        }
        out.extend_from_slice(b"\r\n");
        self.write_all(&out)?;
        self.finish(&tag, untagged)
    }

    pub(crate) fn finish(&mut self, tag: &str, mut untagged: Vec<Response>) -> Result<Reply> {
        loop {
            let response = match self.read_response() {
                Ok(r) => r,
                // A BYE before the connection dropped says why.
                Err(e) if e.kind == ImapErrorKind::Io => {
                    let bye = untagged.iter().find_map(|r| match r {
                        Response::UntaggedStatus(st) if st.status == Status::Bye => {
                            Some(st.text.clone())
                        }
                        _ => None,
                    });
                    return Err(match bye {
                        Some(text) => self.err(ImapErrorKind::Bye, text),
                        None => e,
                    });
                }
                Err(e) => return Err(e),
            };
            match response {
                Response::Tagged { tag: t, body } if t == tag => {
                    self.absorb_caps(&body);
                    return Ok(Reply {
                        untagged,
                        status: body,
                    });
                }
                Response::Tagged { tag: t, body } => {
                    return Err(self.err(
                        ImapErrorKind::Protocol,
                        format!("answer for unknown tag {t}: {}", body.text),
                    ));
                }
                Response::Continuation(c) => {
                    return Err(self.err(
                        ImapErrorKind::Protocol,
                        format!(
                            "unexpected continuation request: {}",
                            String::from_utf8_lossy(&c)
                        ),
                    ));
                }
                other => untagged.push(other),
            }
        }
    }

    /// Like [`Client::execute`], but a NO or BAD answer is an error naming the command.
    pub fn run(&mut self, args: &[Arg<'_>]) -> Result<Reply> {
        let reply = self.execute(args)?;
        if reply.status.status != Status::Ok {
            return Err(self.refused(&reply.status));
        }
        Ok(reply)
    }

    /// CAPABILITY: ask again and remember the answer.
    pub fn capability(&mut self) -> Result<Vec<String>> {
        let reply = self.run(&[Arg::Atom("CAPABILITY")])?;
        if let Some(v) = reply.data("CAPABILITY").next() {
            self.caps = v[1..]
                .iter()
                .filter_map(Value::as_text)
                .map(|s| s.to_ascii_uppercase())
                .collect();
        }
        Ok(self.caps.clone())
    }

    /// LOGIN with a plain password.
    pub fn login(&mut self, user: &str, pass: &str) -> Result<()> {
        self.run(&[
            Arg::Atom("LOGIN"),
            Arg::Str(user.as_bytes()),
            Arg::Str(pass.as_bytes()),
        ])?;
        Ok(())
    }

    /// AUTHENTICATE PLAIN as `authn` acting for `authz` (Cyrus lets an admin log in on
    /// behalf of any user this way). An empty `authz` means "as myself".
    pub fn authenticate_plain(&mut self, authz: &str, authn: &str, pass: &str) -> Result<()> {
        let mut raw = Vec::new();
        raw.extend_from_slice(authz.as_bytes());
        raw.push(0);
        raw.extend_from_slice(authn.as_bytes());
        raw.push(0);
        raw.extend_from_slice(pass.as_bytes());
        let b64 = base64(&raw);
        if self.has_capability("SASL-IR") {
            self.run(&[
                Arg::Atom("AUTHENTICATE"),
                Arg::Atom("PLAIN"),
                Arg::Atom(&b64),
            ])?;
            return Ok(());
        }
        self.command = "authenticate PLAIN".into();
        let tag = format!("C{}", self.next_tag);
        self.next_tag = self.next_tag.wrapping_add(1);
        self.write_all(format!("{tag} AUTHENTICATE PLAIN\r\n").as_bytes())?;
        let mut untagged = Vec::new();
        if let Some(refusal) = self.await_continuation(&tag, &mut untagged)? {
            return Err(self.refused(&refusal));
        }
        self.write_all(format!("{b64}\r\n").as_bytes())?;
        let reply = self.finish(&tag, untagged)?;
        if reply.status.status != Status::Ok {
            return Err(self.refused(&reply.status));
        }
        Ok(())
    }

    fn list_like(
        &mut self,
        cmd: &'static str,
        reference: &str,
        pattern: &str,
    ) -> Result<Vec<ListEntry>> {
        let reply = self.run(&[
            Arg::Atom(cmd),
            Arg::Str(reference.as_bytes()),
            Arg::Str(pattern.as_bytes()),
        ])?;
        Ok(reply
            .data(cmd)
            .filter_map(|v| types::list_entry(v, cmd))
            .collect())
    }

    /// LIST reference pattern.
    pub fn list(&mut self, reference: &str, pattern: &str) -> Result<Vec<ListEntry>> {
        self.list_like("LIST", reference, pattern)
    }

    /// LSUB reference pattern.
    pub fn lsub(&mut self, reference: &str, pattern: &str) -> Result<Vec<ListEntry>> {
        self.list_like("LSUB", reference, pattern)
    }

    fn simple(&mut self, cmd: &str, name: &str) -> Result<Reply> {
        self.run(&[Arg::Atom(cmd), Arg::Str(name.as_bytes())])
    }

    /// CREATE a mailbox.
    pub fn create(&mut self, name: &str) -> Result<()> {
        self.simple("CREATE", name).map(drop)
    }

    /// `CREATE name (PARTITION p)`: Cyrus lets admins pick the spool partition.
    pub fn create_on_partition(&mut self, name: &str, partition: &str) -> Result<()> {
        let extra = format!("(PARTITION {partition})");
        self.run(&[
            Arg::Atom("CREATE"),
            Arg::Str(name.as_bytes()),
            Arg::Atom(&extra),
        ])
        .map(drop)
    }

    /// DELETE a mailbox.
    pub fn delete(&mut self, name: &str) -> Result<()> {
        self.simple("DELETE", name).map(drop)
    }

    /// RENAME a mailbox.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.run(&[
            Arg::Atom("RENAME"),
            Arg::Str(from.as_bytes()),
            Arg::Str(to.as_bytes()),
        ])
        .map(drop)
    }

    /// SUBSCRIBE.
    pub fn subscribe(&mut self, name: &str) -> Result<()> {
        self.simple("SUBSCRIBE", name).map(drop)
    }

    /// UNSUBSCRIBE.
    pub fn unsubscribe(&mut self, name: &str) -> Result<()> {
        self.simple("UNSUBSCRIBE", name).map(drop)
    }

    /// SELECT (read-write; CONDSTORE is enabled so HIGHESTMODSEQ is reported).
    pub fn select(&mut self, name: &str) -> Result<SelectInfo> {
        self.open_mailbox("SELECT", name)
    }

    /// EXAMINE (read-only).
    pub fn examine(&mut self, name: &str) -> Result<SelectInfo> {
        self.open_mailbox("EXAMINE", name)
    }

    fn open_mailbox(&mut self, cmd: &str, name: &str) -> Result<SelectInfo> {
        let condstore = self.has_capability("CONDSTORE");
        let mut args = vec![Arg::Atom(cmd), Arg::Str(name.as_bytes())];
        if condstore {
            args.push(Arg::Atom("(CONDSTORE)"));
        }
        let reply = self.run(&args)?;
        let mut info = types::select_info(&reply.untagged);
        info.read_only = reply.status.code_args("READ-ONLY").is_some();
        Ok(info)
    }

    /// APPEND a message; returns (uidvalidity, uid) when the server sends APPENDUID.
    /// `internaldate` is Unix seconds, sent in UTC.
    pub fn append(
        &mut self,
        mailbox: &str,
        flags: &[&str],
        internaldate: Option<i64>,
        message: &[u8],
    ) -> Result<Option<(u32, u32)>> {
        let flag_list = format!("({})", flags.join(" "));
        let date = internaldate.map(|t| format!("\"{}\"", format_internaldate(t, 0)));
        let mut args = vec![
            Arg::Atom("APPEND"),
            Arg::Str(mailbox.as_bytes()),
            Arg::Atom(&flag_list),
        ];
        if let Some(d) = &date {
            args.push(Arg::Atom(d));
        }
        args.push(Arg::Literal(message));
        let reply = self.run(&args)?;
        Ok(reply.status.code_args("APPENDUID").and_then(|a| match a {
            [v, u, ..] => Some((
                u32::try_from(v.as_u64()?).ok()?,
                u32::try_from(u.as_u64()?).ok()?,
            )),
            _ => None,
        }))
    }

    /// `UID STORE set op (flags)`, e.g. op `+FLAGS` or `-FLAGS.SILENT`; returns the
    /// FETCH responses the server sent back.
    pub fn uid_store(&mut self, set: &str, op: &str, flags: &[&str]) -> Result<Vec<FetchItem>> {
        let flag_list = format!("({})", flags.join(" "));
        let reply = self.run(&[
            Arg::Atom("UID"),
            Arg::Atom("STORE"),
            Arg::Atom(set),
            Arg::Atom(op),
            Arg::Atom(&flag_list),
        ])?;
        Ok(reply.data("FETCH").filter_map(types::fetch_item).collect())
    }

    /// `UID FETCH set items`, with `items` such as `(UID FLAGS RFC822.SIZE BODY.PEEK[])`.
    pub fn uid_fetch(&mut self, set: &str, items: &str) -> Result<Vec<FetchItem>> {
        let reply = self.run(&[
            Arg::Atom("UID"),
            Arg::Atom("FETCH"),
            Arg::Atom(set),
            Arg::Atom(items),
        ])?;
        Ok(reply.data("FETCH").filter_map(types::fetch_item).collect())
    }

    /// EXPUNGE; returns the sequence numbers reported expunged.
    pub fn expunge(&mut self) -> Result<Vec<u32>> {
        let reply = self.run(&[Arg::Atom("EXPUNGE")])?;
        Ok(reply
            .data("EXPUNGE")
            .filter_map(|v| v.first()?.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect())
    }

    /// `STATUS mailbox (items)`; returns the (item, number) pairs.
    pub fn status(&mut self, mailbox: &str, items: &str) -> Result<Vec<(String, u64)>> {
        let reply = self.run(&[
            Arg::Atom("STATUS"),
            Arg::Str(mailbox.as_bytes()),
            Arg::Atom(items),
        ])?;
        let mut out = Vec::new();
        for v in reply.data("STATUS") {
            if let Some(list) = v.get(2).and_then(Value::as_list) {
                for pair in list.chunks(2) {
                    if let [k, n] = pair
                        && let (Some(k), Some(n)) = (k.as_text(), n.as_u64())
                    {
                        out.push((k.to_ascii_uppercase(), n));
                    }
                }
            }
        }
        Ok(out)
    }

    /// SETACL mailbox identifier rights.
    pub fn setacl(&mut self, mailbox: &str, identifier: &str, rights: &str) -> Result<()> {
        self.run(&[
            Arg::Atom("SETACL"),
            Arg::Str(mailbox.as_bytes()),
            Arg::Str(identifier.as_bytes()),
            Arg::Str(rights.as_bytes()),
        ])
        .map(drop)
    }

    /// DELETEACL mailbox identifier.
    pub fn deleteacl(&mut self, mailbox: &str, identifier: &str) -> Result<()> {
        self.run(&[
            Arg::Atom("DELETEACL"),
            Arg::Str(mailbox.as_bytes()),
            Arg::Str(identifier.as_bytes()),
        ])
        .map(drop)
    }

    /// GETACL mailbox: (identifier, rights) pairs.
    pub fn getacl(&mut self, mailbox: &str) -> Result<Vec<(String, String)>> {
        let reply = self.simple("GETACL", mailbox)?;
        Ok(reply
            .data("ACL")
            .filter_map(types::acl_entries)
            .flatten()
            .collect())
    }

    /// NOOP.
    pub fn noop(&mut self) -> Result<()> {
        self.run(&[Arg::Atom("NOOP")]).map(drop)
    }

    /// CLOSE the selected mailbox (expunging \Deleted messages).
    pub fn close(&mut self) -> Result<()> {
        self.run(&[Arg::Atom("CLOSE")]).map(drop)
    }

    /// LOGOUT; the connection is closed afterwards.
    pub fn logout(mut self) -> Result<()> {
        self.run(&[Arg::Atom("LOGOUT")]).map(drop)
    }
}

/// How a command appears in errors: its keywords lowercased and its first string
/// argument quoted (usually the mailbox). Message bodies, later arguments (passwords)
/// and parenthesised lists are left out.
fn describe(args: &[Arg<'_>]) -> String {
    let mut what: Vec<String> = Vec::new();
    for a in args {
        match a {
            Arg::Atom(s) if what.len() < 2 && !s.starts_with('(') && !s.starts_with('"') => {
                what.push(s.to_ascii_lowercase())
            }
            Arg::Str(s) => {
                let text = String::from_utf8_lossy(&s[..s.len().min(80)]).into_owned();
                what.push(format!("{text:?}"));
                break;
            }
            _ => break,
        }
    }
    what.join(" ")
}

/// Standard base64 (RFC 4648, with padding), as SASL and MIME use it.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        // RFC 4648 section 10.
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(b"alice\0cyrus\0x"), "YWxpY2UAY3lydXMAeA==");
    }
}
