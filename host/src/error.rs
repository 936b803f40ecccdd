//! The backup host's error, for the layers at the top (admin, restore, fleet, imap,
//! replication, the binary): a service-half error held whole ([`Error::Service`],
//! converted by [`From<cyrvault::Error>`], its variants not re-declared), plus the
//! failures of the host's own layers, each converted here at that layer's edge
//! (`archive::ArchiveFailure`, `vault::VaultError`, `catalog::CatalogError`,
//! `retention::RetentionError`, `backup::BackupError`) into the variant it always had.
//! Those layers never name this module, so imports go one way (tests/layers.rs).
//! There is deliberately no blanket `From<io::Error>`: use [`IoContext::at`]
//! (the service's `io_error`, shared by every layer of both halves). The classes ([`ErrorKind`]) and exit
//! codes are the service's, shared by both halves.

use std::io;
use std::path::PathBuf;

use crate::catalog::CatalogError;
use crate::cyrus::ParseError;
use crate::cyrus::config::ConfigError;
use crate::lock::LockError;

pub use crate::io_error::IoContext;

pub use cyrvault::error::{
    EX_CONFIG, EX_DATAERR, EX_IOERR, EX_NOINPUT, EX_NOPERM, EX_OSERR, EX_SOFTWARE, EX_TEMPFAIL,
    EX_USAGE, ErrorKind,
};

/// Result with the host [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error the backup host's library returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A service-side error (I/O with context, a Cyrus file that did not parse, a
    /// lock, a damaged mailbox, the wire, a refusal, ...), converted at the edge
    /// between the halves: its variant, class, message and `source()` chain are kept.
    #[error(transparent)]
    Service(#[from] cyrvault::Error),
    /// The SQLite catalog failed or refused (see `catalog::CatalogError`).
    #[error(transparent)]
    Catalog(CatalogError),
    /// A per-user archive is locked, damaged or not what we expected.
    #[error("archive {}: {source}", path.display())]
    Archive {
        path: PathBuf,
        #[source]
        source: crate::archive::ArchiveError,
    },
    /// A backup run refused or failed in a way the admin must act on.
    #[error(transparent)]
    Backup(crate::backup::BackupError),
    /// Prune, forget or hold refused (held user, catalog behind the archive, ...).
    #[error(transparent)]
    Retention(crate::retention::RetentionError),
}

/// An I/O failure with what and where is the service's `Error::Io` here too (so `?`
/// takes `IoContext::at`'s result straight into this layer's error).
impl From<cyrvault::io_error::IoError> for Error {
    fn from(e: cyrvault::io_error::IoError) -> Self {
        cyrvault::Error::from(e).into()
    }
}

/// The archive layer's edge: its failure keeps its variant (the archive error with its
/// path, or the service-side error it met).
impl From<crate::archive::ArchiveFailure> for Error {
    fn from(e: crate::archive::ArchiveFailure) -> Error {
        use crate::archive::ArchiveFailure as A;
        match e {
            A::Service(e) => Error::Service(e),
            A::Archive { path, source } => Error::Archive { path, source },
        }
    }
}

/// The catalog layer's edge: a service-side error it met stays the service's.
impl From<CatalogError> for Error {
    fn from(e: CatalogError) -> Error {
        match e {
            CatalogError::Service(e) => Error::Service(e),
            e => Error::Catalog(e),
        }
    }
}

/// The vault layer's edge: its service and archive failures keep their variants.
impl From<crate::vault::VaultError> for Error {
    fn from(e: crate::vault::VaultError) -> Error {
        use crate::vault::VaultError as V;
        match e {
            V::Service(e) => Error::Service(e),
            V::Archive(e) => e.into(),
        }
    }
}

/// Retention's edge: its own refusals become `Error::Retention`, what it met below
/// keeps the variant it has here.
impl From<crate::retention::RetentionError> for Error {
    fn from(e: crate::retention::RetentionError) -> Error {
        use crate::retention::RetentionError as R;
        match e {
            R::Service(e) => Error::Service(e),
            R::Archive(e) => e.into(),
            R::Catalog(e) => e.into(),
            e => Error::Retention(e),
        }
    }
}

/// The backup layer's edge: its own failures become `Error::Backup`, what it met
/// below keeps the variant it has here.
impl From<crate::backup::BackupError> for Error {
    fn from(e: crate::backup::BackupError) -> Error {
        use crate::backup::BackupError as B;
        match e {
            B::Service(e) => Error::Service(e),
            B::Archive(e) => e.into(),
            B::Catalog(e) => e.into(),
            B::Retention(e) => e.into(),
            e => Error::Backup(e),
        }
    }
}

/// imapd.conf or our own configuration is wrong (the service's `Config`).
impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        cyrvault::Error::from(e).into()
    }
}

/// A lock that could not be taken (the service's `Lock`).
impl From<LockError> for Error {
    fn from(e: LockError) -> Error {
        cyrvault::Error::from(e).into()
    }
}

/// A mailbox's damaged files (the service's `Mailbox`).
impl From<Box<crate::spool::MailboxError>> for Error {
    fn from(e: Box<crate::spool::MailboxError>) -> Error {
        cyrvault::Error::from(e).into()
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
            Error::Service(e) => e.kind(),
            Error::Catalog(e) => e.kind(),
            Error::Archive { source, .. } if source.is_temporary() => ErrorKind::Temporary,
            Error::Archive { .. } => ErrorKind::Data,
            Error::Backup(e) => e.kind(),
            Error::Retention(e) => e.kind(),
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

    /// Wrap a parse error with the file it came from (the service's `Parse`).
    pub fn parse(path: impl Into<PathBuf>, source: ParseError) -> Self {
        cyrvault::Error::parse(path, source).into()
    }

    /// A request that is not allowed: bad name, held user, ... (the service's
    /// `Refused`, class Usage).
    pub fn refused(message: String) -> Self {
        cyrvault::Error::Refused(message).into()
    }

    /// Anything else, with a message that says what and where (the service's
    /// `Other`, class Software).
    pub fn other(message: String) -> Self {
        cyrvault::Error::Other(message).into()
    }

    /// A mailbox, user, run, ... that does not exist (the service's `NotFound`).
    pub fn not_found(what: &'static str, name: String) -> Self {
        cyrvault::Error::NotFound { what, name }.into()
    }

    /// An IMAP server answered something we did not expect (the service's `Imap`,
    /// class Temporary).
    pub fn imap(server: String, message: String) -> Self {
        cyrvault::Error::Imap { server, message }.into()
    }

    /// The peer broke the wire protocol (the service's `Protocol`, class Temporary).
    pub fn protocol(message: String) -> Self {
        cyrvault::Error::Protocol(message).into()
    }

    /// A failure of class `kind` that retrying cannot fix; the message says what to
    /// do (the service's `Server`).
    pub fn server(kind: ErrorKind, message: String) -> Self {
        cyrvault::Error::Server { kind, message }.into()
    }

    /// The service-side error inside, if this is one (for callers that match on it).
    pub fn as_service(&self) -> Option<&cyrvault::Error> {
        match self {
            Error::Service(e) => Some(e),
            _ => None,
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
        cyrvault::Error::io(op, path, source).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_layer_converts_at_its_edge_into_the_variant_it_always_had() {
        use crate::archive::{ArchiveError, ArchiveFailure};
        use crate::backup::BackupError;
        use crate::catalog::CatalogError;
        use crate::retention::RetentionError;
        // an archive's own failure, through retention and backup, keeps its path,
        // message and class
        let a = ArchiveFailure::archive("/v/u.tar.gz", ArchiveError::Locked);
        let msg = a.to_string();
        let e: Error = BackupError::from(RetentionError::from(a)).into();
        assert!(
            matches!(
                &e,
                Error::Archive {
                    source: ArchiveError::Locked,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.to_string(), msg);
        assert_eq!(e.kind(), ErrorKind::Temporary);
        // a service error met deep down stays the service's, with its source
        let io = CatalogError::io("fsyncing", "/v/c.sqlite", io::Error::other("boom"));
        let e: Error = BackupError::from(RetentionError::from(io)).into();
        assert!(
            matches!(&e, Error::Service(cyrvault::Error::Io { .. })),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "fsyncing /v/c.sqlite: boom");
        assert_eq!(e.exit_code(), EX_IOERR);
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("boom"));
        // a layer's own refusal keeps its variant
        let held = RetentionError::Held {
            user: "u".into(),
            holds: vec!["case 1".into()],
        };
        let e: Error = BackupError::from(held).into();
        assert!(
            matches!(&e, Error::Retention(RetentionError::Held { .. })),
            "{e:?}"
        );
        assert_eq!(e.exit_code(), EX_USAGE);
    }

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
