//! Sieve scripts back into Cyrus over ManageSieve (RFC 5804; Cyrus's `timsieved`, the
//! `sieve` service), and the smallest client that needs: greeting, `AUTHENTICATE
//! "PLAIN"` as the admin acting for the user, `PUTSCRIPT`, `SETACTIVE`, `LISTSCRIPTS`,
//! `GETSCRIPT`.
//!
//! The backup keeps the sieve directory's files: `<name>.script` (the source) and
//! `<name>.bc` (bytecode Cyrus compiles from it), `defaultbc` (the link to the active
//! one's bytecode). Only sources are uploaded; the server compiles them again. Names without either suffix are taken as script names.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::imap::ImapTarget;
use super::{Action, Plan, Summary};
use crate::error::{Error, Result};
use crate::imap::{Tls, base64};
use crate::tls::{Half, Shared, Stream};

/// A ManageSieve session.
pub struct SieveClient {
    reader: BufReader<Half<TcpStream>>,
    writer: Half<TcpStream>,
    stream: Shared<TcpStream>,
    server: String,
    /// The capability lines of the greeting (or of the one after STARTTLS).
    caps: Vec<String>,
}

fn err(server: &str, what: String) -> Error {
    Error::imap(format!("sieve {server}"), what)
}

/// A quoted ManageSieve string.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl SieveClient {
    /// Connect and read the greeting (capabilities up to `OK`), in plaintext.
    pub fn connect(addr: &str) -> Result<SieveClient> {
        SieveClient::connect_with(addr, None)
    }

    /// Connect, read the greeting and, with `tls`, switch to TLS with `STARTTLS`
    /// (RFC 5804 2.2; ManageSieve has no implicit-TLS port, so the mode is ignored)
    /// before anything else is sent. A server that does not offer it, or whose
    /// certificate does not verify, is refused: no password goes out in plaintext.
    pub fn connect_with(addr: &str, tls: Option<&Tls>) -> Result<SieveClient> {
        let s = TcpStream::connect(addr).map_err(|e| err(addr, format!("connecting: {e}")))?;
        let t = Some(Duration::from_secs(60));
        s.set_read_timeout(t)
            .and_then(|()| s.set_write_timeout(t))
            .map_err(|e| err(addr, format!("socket: {e}")))?;
        let stream = Shared::new(Stream::plain(s));
        let mut c = SieveClient {
            reader: BufReader::new(stream.half()),
            writer: stream.half(),
            stream,
            server: addr.to_string(),
            caps: Vec::new(),
        };
        c.caps = c.response("greeting")?;
        if let Some(t) = tls {
            c.starttls(t)?;
        }
        Ok(c)
    }

    fn starttls(&mut self, t: &Tls) -> Result<()> {
        let refuse = |server: &str, message: String| {
            Error::server(
                crate::ErrorKind::Permission,
                format!("sieve {server}: {message}"),
            )
        };
        if !self
            .caps
            .iter()
            .any(|c| c.eq_ignore_ascii_case("\"STARTTLS\""))
        {
            return Err(refuse(
                &self.server,
                "TLS was asked for, and the server does not announce STARTTLS".into(),
            ));
        }
        self.send(b"STARTTLS\r\n", "starttls")?;
        if !self.reader.buffer().is_empty() {
            return Err(refuse(
                &self.server,
                "the server sent data after STARTTLS before the TLS handshake".into(),
            ));
        }
        let config = crate::tls::client::config(&t.trust)?;
        let name = crate::tls::client::server_name(&t.trust, &self.server)?;
        let res = self.stream.lock().start_client(config, name);
        res.map_err(|e| match crate::tls::is_tls_verdict(&e) {
            true => refuse(&self.server, format!("TLS: {}", crate::tls::describe(&e))),
            false => err(&self.server, format!("TLS handshake: {e}")),
        })?;
        // the server says its capabilities again, now under TLS
        self.caps = self.response("capabilities after STARTTLS")?;
        Ok(())
    }

    /// Whether the session runs in TLS.
    pub fn is_tls(&self) -> bool {
        self.stream.lock().is_tls()
    }

    /// Read lines up to the status line; `Ok(lines before it)` for OK.
    fn response(&mut self, what: &str) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| err(&self.server, format!("{what}: reading: {e}")))?;
            if n == 0 {
                return Err(err(&self.server, format!("{what}: connection closed")));
            }
            let line = line.trim_end().to_string();
            // A literal in a response (`{n}` at the end): the text before it, then
            // its bytes, make one element.
            if let Some((before, len)) = line
                .strip_suffix('}')
                .and_then(|l| l.rsplit_once('{'))
                .and_then(|(b, n)| Some((b, n.trim_end_matches('+').parse::<usize>().ok()?)))
            {
                let mut buf = vec![0; len.min(16 << 20)];
                self.reader
                    .read_exact(&mut buf)
                    .map_err(|e| err(&self.server, format!("{what}: reading: {e}")))?;
                lines.push(format!("{before}{}", String::from_utf8_lossy(&buf)));
                // The CRLF that ends the line the literal is in.
                let mut rest = String::new();
                self.reader
                    .read_line(&mut rest)
                    .map_err(|e| err(&self.server, format!("{what}: reading: {e}")))?;
                continue;
            }
            let up = line.to_ascii_uppercase();
            if up == "OK" || up.starts_with("OK ") {
                return Ok(lines);
            }
            if up.starts_with("NO") || up.starts_with("BYE") {
                let mut text = line.clone();
                if let Some(l) = lines.last() {
                    text.push_str(&format!(" ({l})"));
                }
                return Err(err(&self.server, format!("{what} answered {text}")));
            }
            lines.push(line);
        }
    }

    fn send(&mut self, bytes: &[u8], what: &str) -> Result<Vec<String>> {
        self.writer
            .write_all(bytes)
            .and_then(|()| self.writer.flush())
            .map_err(|e| err(&self.server, format!("{what}: writing: {e}")))?;
        self.response(what)
    }

    /// `AUTHENTICATE "PLAIN"` as `authn` acting for `authz`.
    pub fn authenticate_plain(&mut self, authz: &str, authn: &str, pass: &str) -> Result<()> {
        let raw = format!("{authz}\0{authn}\0{pass}");
        let cmd = format!("AUTHENTICATE \"PLAIN\" \"{}\"\r\n", base64(raw.as_bytes()));
        self.send(cmd.as_bytes(), "authenticate").map(drop)
    }

    /// Upload (or replace) a script.
    pub fn putscript(&mut self, name: &str, script: &[u8]) -> Result<()> {
        let mut cmd = format!("PUTSCRIPT {} {{{}+}}\r\n", quoted(name), script.len()).into_bytes();
        cmd.extend_from_slice(script);
        cmd.extend_from_slice(b"\r\n");
        self.send(&cmd, &format!("putscript {name:?}")).map(drop)
    }

    /// Make `name` the active script.
    pub fn setactive(&mut self, name: &str) -> Result<()> {
        let cmd = format!("SETACTIVE {}\r\n", quoted(name));
        self.send(cmd.as_bytes(), "setactive").map(drop)
    }

    /// The scripts and whether each is active.
    pub fn listscripts(&mut self) -> Result<Vec<(String, bool)>> {
        let lines = self.send(b"LISTSCRIPTS\r\n", "listscripts")?;
        Ok(lines
            .iter()
            .filter_map(|l| {
                let l = l.strip_prefix('"')?;
                let (name, rest) = l.split_once('"')?;
                Some((name.to_string(), rest.trim().eq_ignore_ascii_case("ACTIVE")))
            })
            .collect())
    }

    /// A script's content.
    pub fn getscript(&mut self, name: &str) -> Result<String> {
        let cmd = format!("GETSCRIPT {}\r\n", quoted(name));
        let lines = self.send(cmd.as_bytes(), "getscript")?;
        Ok(lines.into_iter().next().unwrap_or_default())
    }

    /// `LOGOUT`.
    pub fn logout(mut self) -> Result<()> {
        self.send(b"LOGOUT\r\n", "logout").map(drop)
    }
}

/// The script name for a backed-up sieve file, or `None` for compiled bytecode.
pub fn script_name(file: &str) -> Option<&str> {
    if file.ends_with(".bc") || file == "defaultbc" {
        return None;
    }
    Some(file.strip_suffix(".script").unwrap_or(file))
}

/// A script stored as a message of Cyrus 3.6's `#sieve` folder: (name from
/// `Subject:`, body after the header). A MIME-encoded subject (`=?...?=`) is refused
/// rather than guessed.
pub fn script_from_message(msg: &[u8]) -> Result<(String, Vec<u8>)> {
    let bad = |what: &str| Error::other(format!("sieve folder message: {what}"));
    let split = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of header"))?;
    let header = std::str::from_utf8(&msg[..split]).map_err(|_| bad("header not UTF-8"))?;
    let name = header
        .split("\r\n")
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("subject")
                .then(|| v.trim().to_string())
        })
        .ok_or_else(|| bad("no Subject"))?;
    if name.is_empty() || name.contains("=?") || name.contains(['/', '\0']) {
        return Err(bad(&format!("script name {name:?} not usable")));
    }
    Ok((name, msg[split + 4..].to_vec()))
}

/// Upload the plan's sieve scripts as the user and activate the active one. Failures
/// go into the summary.
pub fn restore_scripts(
    addr: &str,
    target: &ImapTarget,
    plan: &Plan,
    dry_run: bool,
    sum: &mut Summary,
) {
    let active = plan
        .active_sieve
        .as_deref()
        .and_then(script_name)
        .map(str::to_string);
    let scripts: Vec<(&str, &[u8])> = plan
        .sieve
        .iter()
        .filter_map(|(n, b)| Some((script_name(n)?, b.as_slice())))
        .collect();
    if scripts.is_empty() {
        return;
    }
    let mut go = || -> Result<()> {
        let tls = target.tls.as_ref().map(|t| Tls {
            mode: crate::imap::TlsMode::StartTls,
            trust: t.trust.clone(),
        });
        let mut c = SieveClient::connect_with(addr, tls.as_ref())?;
        c.authenticate_plain(&target.user, &target.admin, &target.password)?;
        // Scripts the server holds with the same text, and the active one if it is
        // already active, are left alone: a rerun uploads nothing.
        let there = c.listscripts()?;
        let mut todo = Vec::new();
        for (n, b) in &scripts {
            let same = there.iter().any(|(t, _)| t == n) && c.getscript(n)?.as_bytes() == *b;
            if !same {
                todo.push((*n, *b));
            }
        }
        let activate = active
            .as_deref()
            .filter(|a| !there.iter().any(|(t, on)| t == a && *on));
        if dry_run {
            for (n, _) in &todo {
                sum.actions.push(Action::Sieve {
                    script: n.to_string(),
                    active: active.as_deref() == Some(n),
                });
                sum.sieve_scripts += 1;
            }
            return c.logout();
        }
        for (n, b) in &todo {
            match c.putscript(n, b) {
                Ok(()) => sum.sieve_scripts += 1,
                Err(e) => sum.fail(&format!("sieve:{n}"), None, e.to_string()),
            }
        }
        if let Some(a) = activate {
            c.setactive(a)?;
        }
        c.logout()
    };
    if let Err(e) = go() {
        sum.fail("sieve", None, e.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_from_the_sieve_folder() {
        let m = b"From: <bob@x>\r\nSubject: filters\r\nContent-Type: application/sieve\r\n\r\nkeep;\r\n";
        let (n, b) = script_from_message(m).unwrap();
        assert_eq!((n.as_str(), b.as_slice()), ("filters", &b"keep;\r\n"[..]));
        assert!(script_from_message(b"Subject: =?utf-8?q?x?=\r\n\r\nkeep;").is_err());
        assert!(script_from_message(b"Subject: x").is_err());
    }

    #[test]
    fn names_and_quoting() {
        assert_eq!(script_name("vacation.script"), Some("vacation"));
        assert_eq!(script_name("vacation.bc"), None);
        assert_eq!(script_name("defaultbc"), None);
        assert_eq!(script_name("plain"), Some("plain"));
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
