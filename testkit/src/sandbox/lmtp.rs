//! A minimal LMTP client (RFC 2033) for delivering test mail into a sandbox's
//! `lmtpd -a`: LHLO, MAIL FROM, RCPT TO, DATA with dot-stuffing, one reply per
//! recipient.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use cyrvault_host::error::{Error, Result};

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    server: String,
}

impl Conn {
    fn open(addr: SocketAddr) -> Result<Conn> {
        let server = format!("lmtp {addr}");
        let e =
            |what: &str, err: std::io::Error| Error::imap(server.clone(), format!("{what}: {err}"));
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|x| e("connecting", x))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(|x| e("socket setup", x))?;
        let writer = s.try_clone().map_err(|x| e("socket setup", x))?;
        Ok(Conn {
            reader: BufReader::new(s),
            writer,
            server,
        })
    }

    fn err(&self, message: String) -> Error {
        Error::imap(self.server.clone(), message)
    }

    /// One (possibly multi-line) reply: (code, text of all lines).
    fn reply(&mut self) -> Result<(u16, String)> {
        let mut text = String::new();
        loop {
            let mut line = Vec::new();
            let n = (&mut self.reader)
                .take(64 * 1024)
                .read_until(b'\n', &mut line)
                .map_err(|e| self.err(format!("reading reply: {e}")))?;
            if n == 0 {
                return Err(self.err("connection closed".into()));
            }
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| self.err(format!("malformed reply {line:?}")))?;
            text.push_str(line.get(4..).unwrap_or(""));
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text));
            }
            text.push('\n');
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer
            .write_all(bytes)
            .map_err(|e| self.err(format!("sending: {e}")))
    }

    fn command(&mut self, line: &str, want: u16) -> Result<String> {
        self.send(format!("{line}\r\n").as_bytes())?;
        let (code, text) = self.reply()?;
        if code != want {
            return Err(self.err(format!("{line} answered {code} {text}")));
        }
        Ok(text)
    }
}

/// The 220 greeting line of the LMTP server at `addr`.
pub fn greeting(addr: SocketAddr) -> Result<String> {
    let mut c = Conn::open(addr)?;
    let (code, text) = c.reply()?;
    let _ = c.send(b"QUIT\r\n");
    if code != 220 {
        return Err(c.err(format!("greeting {code} {text}")));
    }
    Ok(text)
}

/// Dot-stuff a message for DATA and add the terminator. A message that does not end
/// in CRLF gets one (the stored message then has it too).
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Whether `user+detail` can be sent as a plain RCPT local part that lmtpd maps back
/// to the folder: a dot-atom (RFC 5321) without `&`. lmtpd does not unquote quoted
/// local parts, turns 8-bit bytes into `X`, and converts the detail from UTF-8 to
/// modified UTF-7, so `&` would be re-encoded (`imap/lmtpengine.c` `parseaddr`,
/// `imap/mboxname.c` `mbname_from_recipient`).
pub fn addressable(local: &str) -> bool {
    const SPECIAL: &[u8] = b"!#$%'*+-/=?^_`{|}~.";
    !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || SPECIAL.contains(&b))
}

/// Deliver `message` to each recipient (`user` or `user+folder`; `@domain` is added).
/// Every recipient must be accepted and delivered, else the error names it.
pub fn deliver(addr: SocketAddr, domain: &str, rcpts: &[&str], message: &[u8]) -> Result<()> {
    let mut c = Conn::open(addr)?;
    let (code, text) = c.reply()?;
    if code != 220 {
        return Err(c.err(format!("greeting {code} {text}")));
    }
    c.command("LHLO cyrvault-sandbox", 250)?;
    c.command("MAIL FROM:<sender@cyrvault.test>", 250)?;
    for r in rcpts {
        if !addressable(r) {
            return Err(Error::refused(format!(
                "lmtp recipient {r:?} cannot be addressed (spaces, '&' or 8-bit); use APPEND"
            )));
        }
        c.command(&format!("RCPT TO:<{r}@{domain}>"), 250)?;
    }
    c.command("DATA", 354)?;
    c.send(&dot_stuff(message))?;
    for r in rcpts {
        let (code, text) = c.reply()?;
        if code != 250 {
            return Err(c.err(format!("delivery to {r} answered {code} {text}")));
        }
    }
    let _ = c.command("QUIT", 221);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addressable_local_parts() {
        assert!(addressable("alice"));
        assert!(addressable("alice+Work.Sub"));
        assert!(addressable("alice+Archive/2023"));
        assert!(!addressable("bob+Entw&APw-rfe"));
        assert!(!addressable("carol+Sent Items"));
        assert!(!addressable("a\"b"));
        assert!(!addressable("caf\u{e9}"));
        assert!(!addressable(""));
    }

    #[test]
    fn dot_stuffing() {
        assert_eq!(
            dot_stuff(b".a\r\nb\r\n..c\r\n"),
            b"..a\r\nb\r\n...c\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"x"), b"x\r\n.\r\n");
        assert_eq!(dot_stuff(b"a.\r\n.\r\n"), b"a.\r\n..\r\n.\r\n");
    }
}
