//! The backup host's error type: the service half's errors (converted at this edge,
//! [`From<cyrvault::Error>`]) plus the host's own layers, the catalog, the archive,
//! a backup run and retention. Module errors are wrapped with the context known at the
//! call site; there is deliberately no blanket `From<io::Error>`: use [`IoContext::at`].
//! The classes ([`ErrorKind`]) and exit codes are the service's, shared by both halves.

use std::io;
use std::path::{Path, PathBuf};

use crate::catalog::CatalogError;
use crate::cyrus::ParseError;
use crate::cyrus::config::ConfigError;
use crate::lock::LockError;

pub use cyrvault::error::{
    EX_CONFIG, EX_DATAERR, EX_IOERR, EX_NOINPUT, EX_NOPERM, EX_OSERR, EX_SOFTWARE, EX_TEMPFAIL,
    EX_USAGE, ErrorKind,
};

/// Result with the host [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error the backup host's library returns.
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
    /// The SQLite catalog failed or refused (see `catalog::CatalogError`).
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A mailbox's files are damaged (names user, mailbox, file and offset).
    #[error(transparent)]
    Mailbox(#[from] Box<crate::spool::MailboxError>),
    /// A per-user archive is locked, damaged or not what we expected.
    #[error("archive {}: {source}", path.display())]
    Archive {
        path: PathBuf,
        #[source]
        source: crate::archive::ArchiveError,
    },
    /// A backup run refused or failed in a way the admin must act on.
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    /// Prune, forget or hold refused (held user, catalog behind the archive, ...).
    #[error(transparent)]
    Retention(#[from] crate::retention::RetentionError),
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

/// The edge between the halves: a service-side error keeps its variant (and so its
/// class, message and `source()` chain) in the host's error.
impl From<cyrvault::Error> for Error {
    fn from(e: cyrvault::Error) -> Error {
        use cyrvault::Error as S;
        match e {
            S::Io { op, path, source } => Error::Io { op, path, source },
            S::Parse { path, source } => Error::Parse { path, source },
            S::Config(e) => Error::Config(e),
            S::Lock(e) => Error::Lock(e),
            S::Mailbox(e) => Error::Mailbox(e),
            S::NotFound { what, name } => Error::NotFound { what, name },
            S::Imap { server, message } => Error::Imap { server, message },
            S::Protocol(m) => Error::Protocol(m),
            S::Server { kind, message } => Error::Server { kind, message },
            S::Refused(m) => Error::Refused(m),
            S::Other(m) => Error::Other(m),
        }
    }
}

/// A Cyrus path that cannot be made (see the service's conversion).
impl From<crate::cyrus::paths::PathError> for Error {
    fn from(e: crate::cyrus::paths::PathError) -> Error {
        cyrvault::Error::from(e).into()
    }
}

/// A lock that could not be taken (see the service's conversion).
impl From<crate::lock::LockFailure> for Error {
    fn from(e: crate::lock::LockFailure) -> Error {
        cyrvault::Error::from(e).into()
    }
}

/// A wire-protocol failure seen by the host's client (see the service's conversion).
impl From<crate::protocol::ProtocolError> for Error {
    fn from(e: crate::protocol::ProtocolError) -> Error {
        cyrvault::Error::from(e).into()
    }
}

/// A refused or unreadable secret file (see the service's conversion).
impl From<crate::secret::SecretError> for Error {
    fn from(e: crate::secret::SecretError) -> Error {
        cyrvault::Error::from(e).into()
    }
}

/// A TLS configuration that cannot be built (see the service's conversion).
impl From<crate::tls::TlsError> for Error {
    fn from(e: crate::tls::TlsError) -> Error {
        cyrvault::Error::from(e).into()
    }
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
            Error::Catalog(e) => e.kind(),
            Error::Archive { source, .. } if source.is_temporary() => ErrorKind::Temporary,
            Error::Archive { .. } => ErrorKind::Data,
            Error::Backup(e) => e.kind(),
            Error::Retention(e) => e.kind(),
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

    /// The sysexits code for this error (what shell scripts and the fleet expect).
    pub fn exit_code(&self) -> i32 {
        self.kind().exit_code()
    }

    /// A service's `NO <text>` as an error: see [`cyrvault::Error::from_server_no`].
    pub fn from_server_no(context: &str, text: &str) -> Error {
        cyrvault::Error::from_server_no(context, text).into()
    }

    /// Wrap a parse error with the file it came from.
    pub fn parse(path: impl Into<PathBuf>, source: ParseError) -> Self {
        Error::Parse {
            path: path.into(),
            source,
        }
    }

    /// Wrap an archive error with the archive it is about.
    pub fn archive(path: impl Into<PathBuf>, source: crate::archive::ArchiveError) -> Self {
        Error::Archive {
            path: path.into(),
            source,
        }
    }

    /// The archive error inside, if this is one (for callers that match on it).
    pub fn as_archive(&self) -> Option<&crate::archive::ArchiveError> {
        match self {
            Error::Archive { source, .. } => Some(source),
            _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_error_keeps_its_class_across_the_edge() {
        let e: Error = cyrvault::Error::from_server_no("srv:1 USERS", "iam imap7").into();
        assert_eq!(e.exit_code(), EX_CONFIG);
        assert!(e.to_string().contains("--servername imap7"), "{e}");
        let e: Error = cyrvault::Error::io("reading", "/x", io::Error::other("boom")).into();
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(e.to_string(), "reading /x: boom");
    }
}
