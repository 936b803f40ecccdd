//! The service half's error type. Module errors (`cyrus::ParseError`,
//! `cyrus::config::ConfigError`, `lock::LockError`, `spool::MailboxError`) are wrapped
//! here with the context known at the call site. There is deliberately no blanket
//! `From<io::Error>`: use [`IoContext::at`]. The backup host has its own error
//! (`cyrvault_host::Error`, for the archive, catalog, backup and retention) and converts
//! this one at its edge; [`ErrorKind`] and the exit codes are shared by both.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::cyrus::ParseError;
use crate::cyrus::config::ConfigError;
use crate::cyrus::paths::PathError;
use crate::lock::{LockError, LockFailure};
use crate::protocol::ProtocolError;

/// Result with the crate [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error the service half returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call failed; `op` says what we were doing, `path` to what.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A Cyrus file did not parse.
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
    /// imapd.conf or our own configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A lock could not be taken.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A mailbox's files are damaged (names user, mailbox, file and offset).
    #[error(transparent)]
    Mailbox(#[from] Box<crate::spool::MailboxError>),
    /// A mailbox or user does not exist.
    #[error("{what} not found: {name}")]
    NotFound { what: &'static str, name: String },
    /// An IMAP server answered something we did not expect.
    #[error("imap {server}: {message}")]
    Imap { server: String, message: String },
    /// The peer broke the wire protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The service answered with a failure that retrying cannot fix, of class
    /// `kind` (see [`Error::from_server_no`]); the message says what to do.
    #[error("{message}")]
    Server { kind: ErrorKind, message: String },
    /// A request that is not allowed (bad name, not authenticated, ...).
    #[error("refused: {0}")]
    Refused(String),
    /// Anything else, with a message that says what and where.
    #[error("{0}")]
    Other(String),
}

/// Coarse classes of errors, for exit codes and retry decisions. In JSON and in
/// the fleet's database a class is its [`ErrorKind::name`] (`temporary`, `config`,
/// `permission`, `data`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Io,
    Data,
    Config,
    Temporary,
    NotFound,
    Usage,
    Software,
    /// Authentication or access refused.
    Permission,
}

impl ErrorKind {
    /// The sysexits name a service puts in a permanent `NO internal error [NAME]`.
    pub fn wire_name(self) -> &'static str {
        match self {
            ErrorKind::Io => "IOERR",
            ErrorKind::Data => "DATAERR",
            ErrorKind::Config => "CONFIG",
            ErrorKind::Temporary => "TEMPFAIL",
            ErrorKind::NotFound => "NOINPUT",
            ErrorKind::Usage => "USAGE",
            ErrorKind::Software => "SOFTWARE",
            ErrorKind::Permission => "NOPERM",
        }
    }

    /// The sysexits code of this class.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Io => EX_IOERR,
            ErrorKind::Data => EX_DATAERR,
            ErrorKind::Config => EX_CONFIG,
            ErrorKind::Temporary => EX_TEMPFAIL,
            ErrorKind::NotFound => EX_NOINPUT,
            ErrorKind::Usage => EX_USAGE,
            ErrorKind::Software => EX_SOFTWARE,
            ErrorKind::Permission => EX_NOPERM,
        }
    }

    /// The class's name in JSON and in the fleet's database (its serde name).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::Data => "data",
            ErrorKind::Config => "config",
            ErrorKind::Temporary => "temporary",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Usage => "usage",
            ErrorKind::Software => "software",
            ErrorKind::Permission => "permission",
        }
    }

    /// The class an [`ErrorKind::name`] names.
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        ALL_KINDS.into_iter().find(|k| k.name() == name)
    }

    /// How much the admin must do about it, for "the most severe class seen" (a run
    /// of many users exits with it): a wrong configuration (78) over refused
    /// credentials (77) over damaged or refused data (65) over the other permanent
    /// classes, and a temporary failure (75, the next run retries) least.
    pub fn severity(self) -> u8 {
        match self {
            ErrorKind::Config => 7,
            ErrorKind::Permission => 6,
            ErrorKind::Data => 5,
            ErrorKind::Io => 4,
            ErrorKind::Software => 3,
            ErrorKind::NotFound => 2,
            ErrorKind::Usage => 1,
            ErrorKind::Temporary => 0,
        }
    }

    /// The more severe of two classes (see [`ErrorKind::severity`]).
    pub fn worst(self, other: ErrorKind) -> ErrorKind {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }

    /// The class of a sysexits code this crate gives (None for 0 or a foreign code).
    pub fn from_exit_code(code: i32) -> Option<ErrorKind> {
        ALL_KINDS.into_iter().find(|k| k.exit_code() == code)
    }

    /// The kind of a [`ErrorKind::wire_name`].
    pub fn from_wire_name(name: &str) -> Option<ErrorKind> {
        ALL_KINDS.into_iter().find(|k| k.wire_name() == name)
    }
}

const ALL_KINDS: [ErrorKind; 8] = [
    ErrorKind::Io,
    ErrorKind::Data,
    ErrorKind::Config,
    ErrorKind::Temporary,
    ErrorKind::NotFound,
    ErrorKind::Usage,
    ErrorKind::Software,
    ErrorKind::Permission,
];

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } => ErrorKind::Io,
            Error::Parse { .. } | Error::Mailbox(_) => ErrorKind::Data,
            Error::Config(_) => ErrorKind::Config,
            Error::Lock(e) if e.is_timeout() => ErrorKind::Temporary,
            Error::Lock(_) => ErrorKind::Io,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Imap { .. } | Error::Protocol(_) => ErrorKind::Temporary,
            Error::Server { kind, .. } => *kind,
            Error::Refused(_) => ErrorKind::Usage,
            Error::Other(_) => ErrorKind::Software,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        self.kind() == ErrorKind::Temporary
    }

    /// The sysexits code for this error (what Cyrus's master and shell scripts expect).
    pub fn exit_code(&self) -> i32 {
        self.kind().exit_code()
    }

    /// A service's `NO <text>` as an error (`context` says which server and
    /// request): the answers that retrying cannot fix get their own class and say
    /// what to do; anything else is a temporary protocol failure.
    ///
    /// | `NO` text | class | exit |
    /// |---|---|---|
    /// | `iam <servername>` | Config | 78 |
    /// | `authentication failed`, `... required`, `too many authentication failures`, `authentication not configured`, `access denied` | Permission | 77 |
    /// | `internal error [<NAME>] <message>` (cyrvaultd, to a client that sent `CAPABILITY`) | the kind `<NAME>` says | by kind, e.g. DATAERR 65 |
    /// | `internal error`, anything else | Temporary | 75 |
    pub fn from_server_no(context: &str, text: &str) -> Error {
        let at = |message: String| {
            if context.is_empty() {
                message
            } else {
                format!("{context}: {message}")
            }
        };
        let server = |kind, message: String| Error::Server {
            kind,
            message: at(message),
        };
        if let Some(name) = text.strip_prefix("iam ") {
            return server(
                ErrorKind::Config,
                format!(
                    "the server's servername is {name:?}, not the one addressed: give --servername {name} \
                     (or correct the server's entry in the fleet configuration)"
                ),
            );
        }
        let permission = match text {
            "authentication failed" | "too many authentication failures" => Some(
                "the shared secret was refused: it must be the one in the server's cyrvaultd_secret_file",
            ),
            "authentication required" => {
                Some("the server requires authentication: give its shared secret (--secret-file)")
            }
            "authentication not configured" => {
                Some("the server has no shared secret configured (cyrvaultd_secret_file)")
            }
            "access denied" => {
                Some("this host is not allowed to connect (cyrvaultd_allow on the server)")
            }
            _ => None,
        };
        if let Some(what) = permission {
            return server(
                ErrorKind::Permission,
                format!("{what} (server said: {text})"),
            );
        }
        if let Some(rest) = text.strip_prefix("internal error [")
            && let Some((name, message)) = rest.split_once("] ")
            && let Some(kind) = ErrorKind::from_wire_name(name)
            && kind != ErrorKind::Temporary
        {
            return server(kind, format!("the server cannot serve this: {message}"));
        }
        Error::Protocol(at(format!("server said no: {text}")))
    }

    /// Wrap a parse error with the file it came from.
    pub fn parse(path: impl Into<PathBuf>, source: ParseError) -> Self {
        Error::Parse {
            path: path.into(),
            source,
        }
    }

    /// An I/O error with context.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

// The lock layer's failures, each to the variant (and so the class) it always had.
impl From<LockFailure> for Error {
    fn from(e: LockFailure) -> Error {
        match e {
            LockFailure::Lock(e) => Error::Lock(e),
            LockFailure::Path(e) => e.into(),
            LockFailure::Config(e) => Error::Config(e),
            LockFailure::Other(m) => Error::Other(m),
        }
    }
}

// A path that cannot be made is refused input or a configuration gap.
impl From<PathError> for Error {
    fn from(e: PathError) -> Error {
        match e {
            PathError::Refused(m) => Error::Refused(m),
            PathError::Config(c) => Error::Config(c),
        }
    }
}

// The wire layer's errors become the service's here, at the protocol's edge (the
// protocol module itself stays pure and imports nothing of the crate).
impl ProtocolError {
    /// As a crate error, with `context` (server and request) in front: a `NO`
    /// that retrying cannot fix gets its own class (`Error::from_server_no`).
    pub fn in_context(self, context: &str) -> Error {
        match self {
            ProtocolError::No(text) => Error::from_server_no(context, &text),
            e => Error::Protocol(format!("{context}: {e}")),
        }
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        match e {
            ProtocolError::InvalidName { .. } | ProtocolError::BadArgument { .. } => {
                Error::Refused(e.to_string())
            }
            ProtocolError::No(text) => Error::from_server_no("", &text),
            other => Error::Protocol(other.to_string()),
        }
    }
}

/// sysexits.h codes, the ones Cyrus uses too.
pub const EX_USAGE: i32 = 64;
pub const EX_DATAERR: i32 = 65;
pub const EX_NOINPUT: i32 = 66;
pub const EX_SOFTWARE: i32 = 70;
pub const EX_NOPERM: i32 = 77;
pub const EX_OSERR: i32 = 71;
pub const EX_IOERR: i32 = 74;
pub const EX_TEMPFAIL: i32 = 75;
pub const EX_CONFIG: i32 = 78;

/// Attach "what we were doing, to which file" to an `io::Result`.
pub trait IoContext<T> {
    /// `file.read_exact(&mut buf).at("reading", &path)?`
    fn at(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_server_answers_are_not_tempfail() {
        let code = |t: &str| Error::from_server_no("srv:1 USERS", t).exit_code();
        assert_eq!(code("iam imap7"), EX_CONFIG);
        assert_eq!(code("authentication failed"), EX_NOPERM);
        assert_eq!(code("authentication required"), EX_NOPERM);
        assert_eq!(code("access denied"), EX_NOPERM);
        assert_eq!(
            code("internal error [DATAERR] /var/lib/cyrus/mailboxes.db: bad"),
            EX_DATAERR
        );
        assert_eq!(code("internal error [CONFIG] x"), EX_CONFIG);
        // Only these: a plain internal error, a lock timeout, or an unknown class
        // may pass with time.
        assert_eq!(code("internal error"), EX_TEMPFAIL);
        assert_eq!(code("internal error [TEMPFAIL] lock busy"), EX_TEMPFAIL);
        assert_eq!(code("internal error [FROB] x"), EX_TEMPFAIL);
        assert_eq!(code("no such folder user.x"), EX_TEMPFAIL);
        let e = Error::from_server_no("srv:1 USERS", "iam imap7");
        let m = e.to_string();
        assert!(
            m.starts_with("srv:1 USERS: ") && m.contains("--servername imap7"),
            "{m}"
        );
        let e = Error::from_server_no("s", "internal error [DATAERR] /x/cyrus.index: v21");
        assert!(e.to_string().contains("/x/cyrus.index: v21"), "{e}");
    }

    #[test]
    fn the_most_severe_class_wins() {
        use ErrorKind::*;
        assert_eq!(Temporary.worst(Data), Data);
        assert_eq!(Data.worst(Permission), Permission);
        assert_eq!(Config.worst(Permission), Config);
        assert_eq!(Temporary.worst(Temporary), Temporary);
        assert_eq!(NotFound.worst(Temporary), NotFound);
    }

    #[test]
    fn wire_names_round_trip() {
        for k in [
            ErrorKind::Data,
            ErrorKind::Permission,
            ErrorKind::Io,
            ErrorKind::Temporary,
        ] {
            assert_eq!(ErrorKind::from_wire_name(k.wire_name()), Some(k));
        }
        for k in ALL_KINDS {
            assert_eq!(ErrorKind::from_name(k.name()), Some(k));
            assert_eq!(ErrorKind::from_exit_code(k.exit_code()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.name());
        }
        assert_eq!(ErrorKind::from_wire_name("nope"), None);
    }
}
