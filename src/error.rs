//! The service's error type: what `service/`, `ffi/` and `inspect` return, and what
//! the backup host converts at its edge (`cyrvault_host::Error`). Each layer below
//! has its own error and converts into this one here, at its edge, keeping its
//! message, its `source()` chain and its class: `cyrus::ParseError` (with the file
//! it came from), `cyrus::config::ConfigError`, `cyrus::paths::PathError`,
//! `lock::LockError`/`LockFailure`, `protocol::ProtocolError`, `spool::SpoolError`,
//! `secret::SecretError`, `tls::TlsError` and `io_error::IoError`. Imports go one
//! way: those layers never name this module (tests/layers.rs). There is
//! deliberately no blanket `From<io::Error>`: use `io_error::IoContext::at`. The
//! classes ([`ErrorKind`]) and the sysexits codes live in `kind` and are
//! re-exported here; they are shared by every layer and by both halves.

use std::io;
use std::path::PathBuf;

use crate::cyrus::ParseError;
use crate::cyrus::config::ConfigError;
use crate::cyrus::paths::PathError;
use crate::io_error::IoError;
use crate::lock::{LockError, LockFailure};
use crate::protocol::ProtocolError;
use crate::secret::SecretError;
use crate::spool::{MailboxError, SpoolError};
use crate::tls::TlsError;

pub use crate::kind::{
    EX_CONFIG, EX_DATAERR, EX_IOERR, EX_NOINPUT, EX_NOPERM, EX_OSERR, EX_SOFTWARE, EX_TEMPFAIL,
    EX_USAGE, ErrorKind,
};

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
    Mailbox(#[from] Box<MailboxError>),
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

// An I/O failure keeps its context and its class.
impl From<IoError> for Error {
    fn from(e: IoError) -> Error {
        Error::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

// The spool's failures, each to the variant (and so the class, message and
// `source()` chain) it had when the spool returned this error itself.
impl From<SpoolError> for Error {
    fn from(e: SpoolError) -> Error {
        match e {
            SpoolError::Io(e) => e.into(),
            SpoolError::Parse { path, source } => Error::Parse { path, source },
            SpoolError::Config(e) => Error::Config(e),
            SpoolError::Lock(e) => Error::Lock(e),
            SpoolError::Mailbox(e) => Error::Mailbox(e),
            SpoolError::NotFound { what, name } => Error::NotFound { what, name },
            SpoolError::Refused(m) => Error::Refused(m),
            SpoolError::Other(m) => Error::Other(m),
        }
    }
}

impl From<SecretError> for Error {
    fn from(e: SecretError) -> Error {
        match e {
            SecretError::Config(e) => Error::Config(e),
            SecretError::Io(e) => e.into(),
        }
    }
}

impl From<TlsError> for Error {
    fn from(e: TlsError) -> Error {
        match e {
            TlsError::Config(e) => Error::Config(e),
            TlsError::Setup(m) => Error::Other(m),
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

    /// Every layer's error keeps its text, its `source()` chain and its class (so
    /// its exit code and wire name) when the service converts it at the edge.
    #[test]
    fn layer_errors_keep_text_source_and_class_across_the_edge() {
        use crate::cyrus::ParseError;
        use crate::spool::{Damage, MailboxError, SpoolError};
        use std::error::Error as _;

        fn chain(e: &dyn std::error::Error) -> Vec<String> {
            let mut out = vec![e.to_string()];
            let mut at = e.source();
            while let Some(s) = at {
                out.push(s.to_string());
                at = s.source();
            }
            out
        }
        let lock = |timeout| LockError {
            path: "/run/cyrus/lock/x".into(),
            message: "held".into(),
            timeout,
        };
        let spool = vec![
            SpoolError::io("reading", "/q", io::Error::other("boom")),
            SpoolError::parse("/m.db", ParseError::invalid("twoskip record", 64, "bad")),
            SpoolError::Config(ConfigError::new("/etc/imapd.conf", "quota_db", "x")),
            SpoolError::Lock(lock(true)),
            SpoolError::Lock(lock(false)),
            SpoolError::Mailbox(Box::new(MailboxError {
                user: Some("bob".into()),
                mailbox: "user.bob".into(),
                file: "/p/cyrus.index".into(),
                damage: Damage::Parse(ParseError::invalid("cyrus.index record 2", 300, "crc")),
            })),
            SpoolError::NotFound {
                what: "mailbox",
                name: "user.bob".into(),
            },
            SpoolError::Refused("bad name".into()),
            SpoolError::Other("index lock not held".into()),
        ];
        for e in spool {
            let (kind, text) = (e.kind(), chain(&e));
            let hub = Error::from(e);
            assert_eq!(hub.kind(), kind, "{hub}");
            assert_eq!(chain(&hub), text);
        }
        let secret = vec![
            SecretError::Config(ConfigError::new("-", "--secret-file", "mode 0644")),
            SecretError::Io(IoError::new(
                "reading secret file",
                "/s",
                io::Error::other("eio"),
            )),
        ];
        for e in secret {
            let (kind, text) = (e.kind(), chain(&e));
            let hub = Error::from(e);
            assert_eq!((hub.kind(), chain(&hub)), (kind, text));
        }
        let tls = vec![
            TlsError::Config(ConfigError::new(
                "/etc/imapd.conf",
                "tls_server_cert",
                "none",
            )),
            TlsError::Setup("TLS versions: x".into()),
        ];
        for e in tls {
            let (kind, text) = (e.kind(), chain(&e));
            let hub = Error::from(e);
            assert_eq!((hub.kind(), chain(&hub)), (kind, text));
        }
        // An I/O failure reads the same in every layer's error.
        let io = Error::from(IoError::new("opening", "/x", io::Error::other("gone")));
        assert_eq!(io.to_string(), "opening /x: gone");
        assert_eq!(io.kind(), ErrorKind::Io);
        assert!(io.source().is_some());
    }
}
