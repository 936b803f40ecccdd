//! The wire protocol of Cyrus's `backupcyrusd` (Cyrus 3.13), plus cyrvault's announced
//! extensions: pure encode/decode shared by the service (`service::session`) and our
//! backup client.
//!
//! This module owns the byte syntax only: bounded line reading ([`line`]), tokens and
//! their percent-encoding ([`token`]), requests ([`request`]) and replies including the
//! `DATA`/`DONE` framing with SHA-1 ([`reply`]). It does no file I/O and takes no locks;
//! what a command *does* lives in `service::session`.
//!
//! The full protocol description, with every upstream fact and every place where we
//! deliberately differ, is `doc/protocol.md`.
#![forbid(unsafe_code)]

pub mod annotations;
pub mod auth;
pub mod client;
pub mod line;
pub mod reply;
pub mod request;
pub mod token;

use std::fmt;
use std::io;

pub use line::{Line, LineReader};
pub use reply::{DataHeader, FileStat, Reply, ReplyReader, ReplyWriter, parse_reply};
pub use request::{AuthStep, Refusal, Request, encode_request, parse_request, parse_request_line};
pub use token::{decode_reply_token, encode_reply_token, encode_request_token};

/// Version of cyrvault's extensions, announced as `CAP VERSION <n>`. The base protocol
/// (what `backupcyrusd` speaks) has no version number of its own.
pub const EXTENSION_VERSION: u32 = 2;

/// Longest request or reply line we accept, in bytes, without the newline. Upstream has
/// no line limit (only a per-word limit, `maxword`); the Perl client's longest line is
/// an `FDATA` batch of 1024 UIDs, about 11 KiB plus two encoded names.
pub const MAX_LINE: usize = 64 * 1024;

/// Longest single raw token (before percent-decoding).
pub const MAX_TOKEN: usize = 4096;

/// Longest decoded user id.
pub const MAX_USER: usize = 255;

/// Longest decoded folder name (Cyrus's own `MAX_MAILBOX_BUFFER` is 1024).
pub const MAX_FOLDER: usize = 1024;

/// Most items (UIDs or file names) on one `FDATA`/`FMETA`/`META` line.
pub const MAX_ITEMS: usize = 4096;

/// Length of an `AUTH` nonce and of the HMAC-SHA256 answer, in bytes.
pub const AUTH_LEN: usize = 32;

/// Everything that can go wrong encoding or decoding the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// A line exceeded [`MAX_LINE`]; the reader skipped to the next newline.
    LineTooLong { limit: usize },
    /// A token exceeded its bound.
    TokenTooLong { what: &'static str, limit: usize },
    /// More items on one line than [`MAX_ITEMS`].
    TooManyItems { limit: usize },
    /// A user, folder or item name that we refuse (path traversal, control bytes, ...).
    InvalidName {
        what: &'static str,
        reason: &'static str,
    },
    /// An extension argument is malformed.
    BadArgument {
        command: &'static str,
        reason: &'static str,
    },
    /// A request cannot be encoded (it is a parse outcome, not something to send).
    NotEncodable,
    /// A reply line did not have the expected shape.
    MalformedReply { what: &'static str },
    /// The server answered `NO <text>`.
    No(String),
    /// A reply came that does not belong here.
    UnexpectedReply { wanted: &'static str, got: String },
    /// `DATA` was followed by a `DONE` naming another file.
    DataNameMismatch { data: String, done: String },
    /// The SHA-1 in `DONE` does not match the bytes received.
    Sha1Mismatch {
        name: String,
        announced: String,
        computed: String,
    },
    /// The stream ended inside a reply or payload.
    UnexpectedEof { while_: &'static str },
    /// The source of a `DATA` payload delivered fewer bytes than announced.
    ShortSource {
        name: String,
        announced: u64,
        got: u64,
    },
    /// The server accepted our AUTH answer but could not prove it knows the secret
    /// (a server that is not the one configured, or a relay).
    ServerNotProven,
    /// A read or write on the connection failed.
    Io {
        op: &'static str,
        kind: io::ErrorKind,
        message: String,
    },
}

impl ProtocolError {
    /// Wrap an I/O error from the connection.
    pub fn io(op: &'static str, e: &io::Error) -> Self {
        ProtocolError::Io {
            op,
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ProtocolError::*;
        match self {
            LineTooLong { limit } => write!(f, "line too long (limit {limit} bytes)"),
            TokenTooLong { what, limit } => write!(f, "{what} too long (limit {limit} bytes)"),
            TooManyItems { limit } => write!(f, "too many items (limit {limit})"),
            InvalidName { what, reason } => write!(f, "invalid {what}: {reason}"),
            BadArgument { command, reason } => write!(f, "bad {command} argument: {reason}"),
            NotEncodable => write!(f, "request is a parse outcome and cannot be sent"),
            MalformedReply { what } => write!(f, "malformed reply: {what}"),
            No(text) => write!(f, "server said no: {text}"),
            UnexpectedReply { wanted, got } => {
                write!(f, "unexpected reply: wanted {wanted}, got {got:?}")
            }
            DataNameMismatch { data, done } => {
                write!(f, "data for {data:?} ended with done for {done:?}")
            }
            Sha1Mismatch {
                name,
                announced,
                computed,
            } => write!(
                f,
                "sha1 mismatch for {name:?}: server announced {announced}, received bytes hash to {computed}"
            ),
            UnexpectedEof { while_ } => write!(f, "connection closed while {while_}"),
            ShortSource {
                name,
                announced,
                got,
            } => write!(
                f,
                "source of {name:?} ended after {got} of {announced} announced bytes"
            ),
            ServerNotProven => write!(
                f,
                "the server accepted our authentication but did not prove it knows the shared secret"
            ),
            Io { op, message, .. } => write!(f, "{op}: {message}"),
        }
    }
}

impl std::error::Error for ProtocolError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_lowercase_and_names_the_bound() {
        let all = [
            ProtocolError::LineTooLong { limit: 5 },
            ProtocolError::TokenTooLong {
                what: "user",
                limit: 3,
            },
            ProtocolError::TooManyItems { limit: 2 },
            ProtocolError::InvalidName {
                what: "user",
                reason: "contains '/'",
            },
            ProtocolError::UnexpectedEof {
                while_: "reading data",
            },
        ];
        for e in all {
            let s = e.to_string();
            assert!(s.chars().next().is_some_and(|c| c.is_lowercase()), "{s}");
            assert!(!s.ends_with('.'), "{s}");
        }
        assert_eq!(
            ProtocolError::LineTooLong { limit: 5 }.to_string(),
            "line too long (limit 5 bytes)"
        );
    }
}
