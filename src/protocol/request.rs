//! Requests: one line from the client, parsed into [`Request`] with `backupcyrusd`'s
//! exact decision order, and encoded again for our own client.
//!
//! Upstream's order (`cmdloop` in `imap/backupcyrusd.c`): the command word; `QUIT` and
//! `PING` answer at once whatever follows; every other command reads the slot word and
//! refuses a wrong slot with `NO iam <servername>` *before* looking at the command, so a
//! parse outcome that upstream answers only after the slot check is a
//! [`Request::Refused`] that still carries its slot. Bounds and name validation (ours,
//! not upstream's) are refusals too, answered after the slot check.
#![forbid(unsafe_code)]

use super::token::{AString, Cursor, Term, c_str, decode_request_token, encode_request_token};
use super::{AUTH_LEN, MAX_FOLDER, MAX_ITEMS, MAX_LINE, MAX_TOKEN, MAX_USER, ProtocolError};

/// The two steps of cyrvault's `AUTH` extension (doc/protocol.md 2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// `AUTH <slot> BEGIN <64 hex>`: the client's nonce; asks for the server's.
    Begin([u8; AUTH_LEN]),
    /// `AUTH <slot> ANSWER <64 hex>`: the client's HMAC over both nonces
    /// (`protocol::auth::client_answer`).
    Answer([u8; AUTH_LEN]),
}

/// Why a line is answered without touching the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The slot was not followed by a space: `NO bad command`.
    BadCommand,
    /// `NO unknown command <command>` (the command as sent, cut at a NUL).
    Unknown(Vec<u8>),
    /// `FDATA`/`FMETA` without a folder after the user: `NO missing user`.
    MissingUser,
    /// Upstream writes nothing at all for this line (an argument that is not an
    /// astring, e.g. a double space before the user).
    Silent,
    /// An IMAP literal `{n}` as argument; upstream reads it, we refuse it.
    Literal,
    /// A bound or name rule of ours: `NO <error>`.
    Invalid(ProtocolError),
}

/// One parsed request line. Byte strings are percent-decoded where upstream decodes
/// them (users, folders) and raw where it does not (slot, items).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `QUIT`: answered `OK`, then the session ends.
    Quit,
    /// `PING`: `OK`, `DONE PING`.
    Ping,
    /// `USERS <slot>`.
    Users { slot: Vec<u8> },
    /// `META <slot> <user> [items]`; `items == None` asks for the `STAT` listing.
    Meta {
        slot: Vec<u8>,
        user: Vec<u8>,
        items: Option<Vec<Vec<u8>>>,
    },
    /// `FMULTISTATUS <slot> <user>`.
    FMultiStatus { slot: Vec<u8>, user: Vec<u8> },
    /// `FMETA <slot> <user> <folder> [items]`; `None` asks for the `STAT` listing.
    FMeta {
        slot: Vec<u8>,
        user: Vec<u8>,
        folder: Vec<u8>,
        items: Option<Vec<Vec<u8>>>,
    },
    /// `FDATA <slot> <user> <folder> <uid>...` (items are raw, upstream `atoi`s them).
    FData {
        slot: Vec<u8>,
        user: Vec<u8>,
        folder: Vec<u8>,
        items: Vec<Vec<u8>>,
    },
    /// Extension: `CAPABILITY <slot>`.
    Capability { slot: Vec<u8> },
    /// Extension: `AUTH <slot> BEGIN|ANSWER <hex>`.
    Auth { slot: Vec<u8>, step: AuthStep },
    /// Extension: `STARTTLS <slot>`: the TLS handshake follows the `OK`.
    StartTls { slot: Vec<u8> },
    /// Extension: `STATUS <slot>`.
    Status { slot: Vec<u8> },
    /// Extension: `SNAPSHOT <slot> <user>`.
    Snapshot { slot: Vec<u8>, user: Vec<u8> },
    /// Extension: `PARTITIONS <slot>`: each partition's device and each user's
    /// INBOX partition (the fleet's drive units, doc/protocol.md 2).
    Partitions { slot: Vec<u8> },
    /// Extension: `USERFILES <slot> <user> [FETCH]`: the stats of the user's own files
    /// (seen, sub, the sieve directory), or with `FETCH` the files themselves
    /// (doc/protocol.md 2.11).
    UserFiles {
        slot: Vec<u8>,
        user: Vec<u8>,
        fetch: bool,
    },
    /// Extension: `SHARED <slot>`: every top-level shared hierarchy, as an owner
    /// id (`%shared`) the other commands take in place of a user.
    Shared { slot: Vec<u8> },
    /// Extension: `FDELETED <slot> <owner>`: the owner's delayed-delete folders
    /// with their deletion time and former name.
    FDeleted { slot: Vec<u8>, user: Vec<u8> },
    /// A line answered by a fixed reply after the slot check.
    Refused {
        slot: Vec<u8>,
        command: Vec<u8>,
        refusal: Refusal,
    },
}

impl Request {
    /// The slot the line named (None for `PING`/`QUIT`).
    pub fn slot(&self) -> Option<&[u8]> {
        use Request::*;
        match self {
            Quit | Ping => None,
            Users { slot }
            | Meta { slot, .. }
            | FMultiStatus { slot, .. }
            | FMeta { slot, .. }
            | FData { slot, .. }
            | Capability { slot }
            | Auth { slot, .. }
            | StartTls { slot }
            | Status { slot }
            | Snapshot { slot, .. }
            | Partitions { slot }
            | UserFiles { slot, .. }
            | Shared { slot }
            | FDeleted { slot, .. }
            | Refused { slot, .. } => Some(slot),
        }
    }

    /// Whether the line is allowed before authentication (the handshake: `PING`,
    /// `QUIT`, `CAPABILITY`, `STARTTLS` and `AUTH`, including a malformed `AUTH`).
    pub fn allowed_before_auth(&self) -> bool {
        match self {
            Request::Quit
            | Request::Ping
            | Request::Capability { .. }
            | Request::Auth { .. }
            | Request::StartTls { .. } => true,
            Request::Refused { command, .. } => {
                command.eq_ignore_ascii_case(b"AUTH") || command.eq_ignore_ascii_case(b"CAPABILITY")
            }
            _ => false,
        }
    }
}

/// Parse one request line (without its newline), as if it ended with a newline.
pub fn parse_request(line: &[u8]) -> Result<Request, ProtocolError> {
    parse_request_line(line, true)
}

/// Parse one request line; `terminated` is false for a last line cut by end of stream
/// (upstream then sees `EOF` instead of `'\n'`, which changes a few answers).
///
/// `Err` only for lines whose command or slot break our bounds; everything upstream
/// would answer is an `Ok` request (possibly [`Request::Refused`]).
pub fn parse_request_line(line: &[u8], terminated: bool) -> Result<Request, ProtocolError> {
    if line.len() > MAX_LINE {
        return Err(ProtocolError::LineTooLong { limit: MAX_LINE });
    }
    let mut c = Cursor::new(line, terminated);
    let (cmd, _) = c.word();
    bound(cmd, "command")?;
    let cmd = c_str(cmd);
    if cmd.eq_ignore_ascii_case(b"QUIT") {
        return Ok(Request::Quit);
    }
    if cmd.eq_ignore_ascii_case(b"PING") {
        return Ok(Request::Ping);
    }
    // upstream reads the slot from the *next* line when the command word ended the
    // line; we never look past a line (doc/protocol.md, "Differences")
    let (slot, st) = c.word();
    bound(slot, "slot")?;
    let slot = c_str(slot).to_vec();
    let is = |name: &[u8]| cmd.eq_ignore_ascii_case(name);

    if is(b"USERS") {
        return Ok(Request::Users { slot });
    }
    if is(b"CAPABILITY") {
        return Ok(Request::Capability { slot });
    }
    if is(b"STATUS") {
        return Ok(Request::Status { slot });
    }
    if is(b"PARTITIONS") {
        return Ok(Request::Partitions { slot });
    }
    if is(b"STARTTLS") {
        return Ok(Request::StartTls { slot });
    }
    if is(b"SHARED") {
        return Ok(Request::Shared { slot });
    }
    let body = if !st.is_space() {
        Err(Refusal::BadCommand)
    } else if is(b"META") {
        parse_meta(&mut c, slot.clone())
    } else if is(b"FMULTISTATUS") {
        user_arg(&mut c).and_then(|(user, t)| {
            silent_on_eof(t)?;
            Ok(Request::FMultiStatus {
                slot: slot.clone(),
                user: valid_user(user)?,
            })
        })
    } else if is(b"FMETA") {
        parse_fmeta(&mut c, slot.clone())
    } else if is(b"FDATA") {
        parse_fdata(&mut c, slot.clone())
    } else if is(b"AUTH") {
        parse_auth(&mut c, slot.clone())
    } else if is(b"USERFILES") {
        parse_userfiles(&mut c, slot.clone())
    } else if is(b"FDELETED") {
        user_arg(&mut c).and_then(|(user, t)| {
            if t == Term::Eof && user.is_empty() {
                return Err(Refusal::Invalid(ProtocolError::BadArgument {
                    command: "fdeleted",
                    reason: "missing owner",
                }));
            }
            Ok(Request::FDeleted {
                slot: slot.clone(),
                user: valid_user(user)?,
            })
        })
    } else if is(b"SNAPSHOT") {
        user_arg(&mut c).and_then(|(user, t)| {
            if t == Term::Eof && user.is_empty() {
                return Err(Refusal::Invalid(ProtocolError::BadArgument {
                    command: "snapshot",
                    reason: "missing user",
                }));
            }
            Ok(Request::Snapshot {
                slot: slot.clone(),
                user: valid_user(user)?,
            })
        })
    } else {
        Err(Refusal::Unknown(cmd.to_vec()))
    };
    Ok(body.unwrap_or_else(|refusal| Request::Refused {
        slot,
        command: cmd.to_vec(),
        refusal,
    }))
}

fn bound(tok: &[u8], what: &'static str) -> Result<(), ProtocolError> {
    if tok.len() > MAX_TOKEN {
        return Err(ProtocolError::TokenTooLong {
            what,
            limit: MAX_TOKEN,
        });
    }
    Ok(())
}

fn invalid(e: ProtocolError) -> Refusal {
    Refusal::Invalid(e)
}

/// An astring argument, bounded and percent-decoded.
fn user_arg(c: &mut Cursor<'_>) -> Result<(Vec<u8>, Term), Refusal> {
    match c.astring() {
        AString::Literal => Err(Refusal::Literal),
        AString::Value(raw, t) => {
            bound(&raw, "argument").map_err(invalid)?;
            Ok((decode_request_token(&raw), t))
        }
    }
}

fn silent_on_eof(t: Term) -> Result<(), Refusal> {
    if t == Term::Eof {
        Err(Refusal::Silent)
    } else {
        Ok(())
    }
}

/// Items after the fixed arguments: upstream reads words while the last one ended in
/// a space.
fn items(c: &mut Cursor<'_>, mut t: Term) -> Result<Vec<Vec<u8>>, Refusal> {
    let mut out = Vec::new();
    while t.is_space() {
        let (w, nt) = c.word();
        bound(w, "item").map_err(invalid)?;
        if out.len() >= MAX_ITEMS {
            return Err(invalid(ProtocolError::TooManyItems { limit: MAX_ITEMS }));
        }
        out.push(w.to_vec());
        t = nt;
    }
    Ok(out)
}

fn parse_meta(c: &mut Cursor<'_>, slot: Vec<u8>) -> Result<Request, Refusal> {
    let (user, t) = user_arg(c)?;
    silent_on_eof(t)?;
    let user = valid_user(user)?;
    let items = if t.is_space() {
        Some(items(c, t)?)
    } else {
        None
    };
    Ok(Request::Meta { slot, user, items })
}

fn parse_fmeta(c: &mut Cursor<'_>, slot: Vec<u8>) -> Result<Request, Refusal> {
    let (user, t) = user_arg(c)?;
    silent_on_eof(t)?;
    if !t.is_space() {
        return Err(Refusal::MissingUser);
    }
    let (folder, t) = user_arg(c)?;
    silent_on_eof(t)?;
    let user = valid_user(user)?;
    let folder = valid_folder(folder)?;
    let items = if t.is_space() {
        Some(items(c, t)?)
    } else {
        None
    };
    Ok(Request::FMeta {
        slot,
        user,
        folder,
        items,
    })
}

fn parse_fdata(c: &mut Cursor<'_>, slot: Vec<u8>) -> Result<Request, Refusal> {
    let (user, t) = user_arg(c)?;
    if !t.is_space() {
        return Err(Refusal::MissingUser);
    }
    // no EOF check here upstream: a failed folder astring is an empty folder name
    let (folder, t) = user_arg(c)?;
    let user = valid_user(user)?;
    let folder = valid_folder(folder)?;
    let items = items(c, t)?;
    Ok(Request::FData {
        slot,
        user,
        folder,
        items,
    })
}

fn parse_userfiles(c: &mut Cursor<'_>, slot: Vec<u8>) -> Result<Request, Refusal> {
    let bad = |reason| {
        invalid(ProtocolError::BadArgument {
            command: "userfiles",
            reason,
        })
    };
    let (user, t) = user_arg(c)?;
    if t == Term::Eof && user.is_empty() {
        return Err(bad("missing user"));
    }
    let user = valid_user(user)?;
    let fetch = if t.is_space() {
        let (w, _) = c.word();
        if !w.eq_ignore_ascii_case(b"FETCH") {
            return Err(bad("expected FETCH or nothing after the user"));
        }
        true
    } else {
        false
    };
    Ok(Request::UserFiles { slot, user, fetch })
}

fn parse_auth(c: &mut Cursor<'_>, slot: Vec<u8>) -> Result<Request, Refusal> {
    let bad = |reason| {
        invalid(ProtocolError::BadArgument {
            command: "auth",
            reason,
        })
    };
    let (step, t) = c.word();
    let begin = step.eq_ignore_ascii_case(b"BEGIN");
    if !begin && !step.eq_ignore_ascii_case(b"ANSWER") {
        return Err(bad("expected BEGIN or ANSWER"));
    }
    if !t.is_space() {
        return Err(bad(if begin {
            "missing client nonce"
        } else {
            "missing answer"
        }));
    }
    let (hexed, _) = c.word();
    let mut value = [0u8; AUTH_LEN];
    hex::decode_to_slice(hexed, &mut value).map_err(|_| {
        bad(if begin {
            "client nonce is not 64 hex digits"
        } else {
            "answer is not 64 hex digits"
        })
    })?;
    Ok(Request::Auth {
        slot,
        step: if begin {
            AuthStep::Begin(value)
        } else {
            AuthStep::Answer(value)
        },
    })
}

fn name_rule(what: &'static str, reason: &'static str) -> Refusal {
    invalid(ProtocolError::InvalidName { what, reason })
}

fn control_bytes(name: &[u8], what: &'static str) -> Result<(), Refusal> {
    if name.contains(&0) {
        return Err(name_rule(what, "contains a nul byte"));
    }
    if name.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(name_rule(what, "contains a control character"));
    }
    Ok(())
}

/// A user id (or a shared hierarchy's owner id, `%shared`): bounded, no control
/// bytes, no `/` (never in a Cyrus userid: it is the hierarchy separator with
/// `unixhierarchysep`, and not a legal mailbox name character without). Nothing
/// else: with `unixhierarchysep` Cyrus accepts userids such as `a..b`, `.x` and even
/// `..` (issue 9), and every path built from a userid (seen, sub, sieve) checks each
/// component itself (`cyrus::paths`).
pub fn valid_user(user: Vec<u8>) -> Result<Vec<u8>, Refusal> {
    if user.is_empty() {
        return Err(name_rule("user", "empty"));
    }
    if user.len() > MAX_USER {
        return Err(invalid(ProtocolError::TokenTooLong {
            what: "user",
            limit: MAX_USER,
        }));
    }
    control_bytes(&user, "user")?;
    if user.contains(&b'/') {
        return Err(name_rule("user", "contains '/'"));
    }
    Ok(user)
}

/// A folder name is looked up in mailboxes.db among the owner's own mailboxes and is
/// never used as a path, so any name Cyrus accepts passes: with `unixhierarchysep`
/// Cyrus lets a user create `INBOX/..` and `INBOX/dots/../up` (stored as `^^`), and a
/// backup must not refuse them (issue 9). Only NUL and control bytes are refused.
pub fn valid_folder(folder: Vec<u8>) -> Result<Vec<u8>, Refusal> {
    if folder.len() > MAX_FOLDER {
        return Err(invalid(ProtocolError::TokenTooLong {
            what: "folder",
            limit: MAX_FOLDER,
        }));
    }
    control_bytes(&folder, "folder")?;
    Ok(folder)
}

fn push_slot(slot: &[u8], out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    // upstream compares the slot without decoding it, so it goes out raw
    if slot.is_empty() || slot.len() > MAX_TOKEN || slot.iter().any(|&b| b == 0 || is_word_end(b)) {
        return Err(ProtocolError::InvalidName {
            what: "slot",
            reason: "cannot be sent as one word",
        });
    }
    out.push(b' ');
    out.extend_from_slice(slot);
    Ok(())
}

fn push_arg(arg: &[u8], out: &mut Vec<u8>) {
    out.push(b' ');
    if arg.is_empty() {
        // an empty atom does not exist; an empty quoted string does
        out.extend_from_slice(b"\"\"");
    }
    encode_request_token(arg, out);
}

/// Items are not decoded upstream, so they go out raw and must be plain words.
fn push_item(item: &[u8], out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    if item.len() > MAX_TOKEN || item.iter().any(|&b| b == 0 || is_word_end(b)) {
        return Err(ProtocolError::InvalidName {
            what: "item",
            reason: "cannot be sent as one word",
        });
    }
    out.push(b' ');
    out.extend_from_slice(item);
    Ok(())
}

fn is_word_end(b: u8) -> bool {
    super::token::is_c_space(b) || b"()\"".contains(&b)
}

/// Encode a request as the Perl client would send it: words joined by single spaces,
/// users, folders and items percent-encoded, a bare `\n` at the end.
pub fn encode_request(req: &Request) -> Result<Vec<u8>, ProtocolError> {
    use Request::*;
    let mut out = Vec::new();
    let (name, slot): (&[u8], _) = match req {
        Quit => return Ok(b"QUIT\n".to_vec()),
        Ping => return Ok(b"PING\n".to_vec()),
        Users { slot } => (b"USERS", slot),
        Meta { slot, .. } => (b"META", slot),
        FMultiStatus { slot, .. } => (b"FMULTISTATUS", slot),
        FMeta { slot, .. } => (b"FMETA", slot),
        FData { slot, .. } => (b"FDATA", slot),
        Capability { slot } => (b"CAPABILITY", slot),
        Auth { slot, .. } => (b"AUTH", slot),
        StartTls { slot } => (b"STARTTLS", slot),
        Status { slot } => (b"STATUS", slot),
        Snapshot { slot, .. } => (b"SNAPSHOT", slot),
        Partitions { slot } => (b"PARTITIONS", slot),
        UserFiles { slot, .. } => (b"USERFILES", slot),
        Shared { slot } => (b"SHARED", slot),
        FDeleted { slot, .. } => (b"FDELETED", slot),
        Refused { .. } => return Err(ProtocolError::NotEncodable),
    };
    out.extend_from_slice(name);
    push_slot(slot, &mut out)?;
    match req {
        Meta { user, items, .. } => {
            push_arg(user, &mut out);
            for i in items.iter().flatten() {
                push_item(i, &mut out)?;
            }
        }
        FMultiStatus { user, .. } | Snapshot { user, .. } | FDeleted { user, .. } => {
            push_arg(user, &mut out)
        }
        UserFiles { user, fetch, .. } => {
            push_arg(user, &mut out);
            if *fetch {
                out.extend_from_slice(b" FETCH");
            }
        }
        FMeta {
            user,
            folder,
            items,
            ..
        } => {
            push_arg(user, &mut out);
            push_arg(folder, &mut out);
            for i in items.iter().flatten() {
                push_item(i, &mut out)?;
            }
        }
        FData {
            user,
            folder,
            items,
            ..
        } => {
            push_arg(user, &mut out);
            push_arg(folder, &mut out);
            for i in items {
                push_item(i, &mut out)?;
            }
        }
        Auth { step, .. } => match step {
            AuthStep::Begin(n) => {
                out.extend_from_slice(b" BEGIN ");
                out.extend_from_slice(hex::encode(n).as_bytes());
            }
            AuthStep::Answer(a) => {
                out.extend_from_slice(b" ANSWER ");
                out.extend_from_slice(hex::encode(a).as_bytes());
            }
        },
        _ => {}
    }
    if out.len() > MAX_LINE {
        return Err(ProtocolError::LineTooLong { limit: MAX_LINE });
    }
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
