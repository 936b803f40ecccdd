//! Commands sent ahead of their answers (RFC 3501 section 5.5 allows a client to
//! send the next command before the previous one completed), used by restore to keep
//! several `APPEND`s in flight instead of one round trip per message.
//!
//! Only with LITERAL+ (RFC 7888): every literal is then non-synchronising and a whole
//! command can be written at once. The server answers in order; each answer is read
//! with [`Client::read_answer`], which returns the untagged responses that came
//! before it together with its tagged status. Answers are short lines, so they never
//! fill the socket while the client is still writing.
#![forbid(unsafe_code)]

use super::parse::quote;
use super::{Arg, Client, Reply, Result};

/// Encode a command for sending ahead: tag, arguments (literals as `{N+}`), CRLF.
fn encode(tag: &str, args: &[Arg<'_>]) -> Vec<u8> {
    let mut out = tag.as_bytes().to_vec();
    for arg in args {
        let literal = match *arg {
            Arg::Glued(g) => {
                out.extend_from_slice(g.as_bytes());
                continue;
            }
            Arg::Atom(a) => {
                out.push(b' ');
                out.extend_from_slice(a.as_bytes());
                continue;
            }
            Arg::Str(s) => match quote(s) {
                Some(q) => {
                    out.push(b' ');
                    out.extend_from_slice(&q);
                    continue;
                }
                None => s,
            },
            Arg::Literal(l) => l,
        };
        out.extend_from_slice(format!(" {{{}+}}\r\n", literal.len()).as_bytes());
        out.extend_from_slice(literal);
    }
    out.extend_from_slice(b"\r\n");
    out
}

impl Client {
    /// Whether commands can be sent ahead (the server announced LITERAL+).
    pub fn can_pipeline(&self) -> bool {
        self.has_capability("LITERAL+")
    }

    /// Send a command without waiting for its answer; returns its tag, to be given
    /// to [`Client::read_answer`] in the order the commands were sent. Needs
    /// [`Client::can_pipeline`].
    pub fn send_ahead(&mut self, args: &[Arg<'_>]) -> Result<String> {
        let tag = format!("C{}", self.next_tag);
        self.next_tag = self.next_tag.wrapping_add(1);
        let bytes = encode(&tag, args);
        self.write_all(&bytes)?;
        Ok(tag)
    }

    /// Read the answer to the command sent with `tag` (the oldest unanswered one).
    pub fn read_answer(&mut self, tag: &str) -> Result<Reply> {
        self.finish(tag, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiappend_encoding() {
        let b = encode(
            "C7",
            &[
                Arg::Atom("APPEND"),
                Arg::Str(b"INBOX/Sent Items"),
                Arg::Atom("(\\Seen)"),
                Arg::Atom("\"01-Jan-2024 00:00:00 +0000\""),
                Arg::Literal(b"ab"),
                Arg::Atom("()"),
                Arg::Literal(b"c"),
            ],
        );
        assert_eq!(
            b,
            b"C7 APPEND \"INBOX/Sent Items\" (\\Seen) \"01-Jan-2024 00:00:00 +0000\" {2+}\r\nab () {1+}\r\nc\r\n"
        );
        let m = encode(
            "C8",
            &[
                Arg::Atom("SETMETADATA"),
                Arg::Str(b"INBOX"),
                Arg::Atom("(/shared/comment"),
                Arg::Str("\u{e9}".as_bytes()),
                Arg::Glued(")"),
            ],
        );
        assert_eq!(
            m,
            b"C8 SETMETADATA \"INBOX\" (/shared/comment {2+}\r\n\xc3\xa9)\r\n"
        );
    }
}
