//! Errors of retention (prune, forget, hold): typed, naming the user, and the errors
//! of the layers below that retention meets (the service's, an archive's, the
//! catalog's). The crate `Error` converts it at this layer's edge: its own refusals
//! become `Error::Retention`, the others the variants they have there.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::PathBuf;

use cyrvault::error::ErrorKind;

use crate::archive::{ArchiveError, ArchiveFailure};
use crate::catalog::CatalogError;
use crate::vault::VaultError;

/// Result with [`RetentionError`].
pub type Result<T, E = RetentionError> = std::result::Result<T, E>;

/// What retention refused, or what failed under it.
#[derive(Debug)]
pub enum RetentionError {
    /// The user is under legal hold: prune and forget are refused.
    Held { user: String, holds: Vec<String> },
    /// The archive has committed runs the catalog lacks (a backup died before its
    /// catalog commit): a backup or `reindex` must bring the catalog up first.
    Behind { user: String, runs: Vec<u64> },
    /// The catalog and the archive are of different generations with no pending new
    /// catalog: `reindex`.
    Mismatch {
        user: String,
        catalog: PathBuf,
        what: String,
    },
    /// The catalog does not describe the archive the way a compaction needs (members
    /// not contiguous, a manifest missing): `verify`, then `reindex`.
    Inconsistent { user: String, what: String },
    /// A compaction replaced the archive between opening the catalog and locking the
    /// archive: start again.
    Swapped { archive: PathBuf },
    /// What to forget is not in the archive.
    NotInArchive { user: String, what: String },
    /// A service-side failure: I/O with what and where, a file that does not parse,
    /// a refused request, ...
    Service(cyrvault::Error),
    /// An archive that could not be read or written (never holds a service error).
    Archive(ArchiveFailure),
    /// The catalog failed (never holds a service error).
    Catalog(CatalogError),
}

/// An I/O failure with what and where is the service's `Error::Io` here too (so `?`
/// takes `IoContext::at`'s result straight into this layer's error).
impl From<cyrvault::io_error::IoError> for RetentionError {
    fn from(e: cyrvault::io_error::IoError) -> Self {
        cyrvault::Error::from(e).into()
    }
}

impl From<cyrvault::Error> for RetentionError {
    fn from(e: cyrvault::Error) -> Self {
        RetentionError::Service(e)
    }
}

impl From<ArchiveFailure> for RetentionError {
    fn from(e: ArchiveFailure) -> Self {
        match e {
            ArchiveFailure::Service(e) => RetentionError::Service(e),
            e => RetentionError::Archive(e),
        }
    }
}

impl From<CatalogError> for RetentionError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Service(e) => RetentionError::Service(e),
            e => RetentionError::Catalog(e),
        }
    }
}

impl From<VaultError> for RetentionError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Service(e) => RetentionError::Service(e),
            VaultError::Archive(e) => e.into(),
        }
    }
}

impl RetentionError {
    /// The coarse class, for exit codes and retries.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RetentionError::Held { .. } => ErrorKind::Usage,
            RetentionError::Swapped { .. } => ErrorKind::Temporary,
            RetentionError::Behind { .. }
            | RetentionError::Mismatch { .. }
            | RetentionError::Inconsistent { .. } => ErrorKind::Data,
            RetentionError::NotInArchive { .. } => ErrorKind::NotFound,
            RetentionError::Service(e) => e.kind(),
            RetentionError::Archive(e) => e.kind(),
            RetentionError::Catalog(e) => e.kind(),
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        self.kind() == ErrorKind::Temporary
    }

    /// The sysexits code for this error.
    pub fn exit_code(&self) -> i32 {
        self.kind().exit_code()
    }

    /// An archive error with the archive it is about.
    pub fn archive(path: impl Into<PathBuf>, source: ArchiveError) -> Self {
        ArchiveFailure::archive(path, source).into()
    }

    /// An I/O error with context (the service's `Io`).
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        cyrvault::Error::io(op, path, source).into()
    }

    /// A Cyrus or cyrvault file that does not parse (the service's `Parse`).
    pub fn parse(path: impl Into<PathBuf>, source: crate::cyrus::ParseError) -> Self {
        cyrvault::Error::parse(path, source).into()
    }

    /// A request that is not allowed (the service's `Refused`, class Usage).
    pub fn refused(message: String) -> Self {
        cyrvault::Error::Refused(message).into()
    }

    /// Something that does not exist (the service's `NotFound`).
    pub fn not_found(what: &'static str, name: String) -> Self {
        cyrvault::Error::NotFound { what, name }.into()
    }

    /// Anything else, with a message that says what and where (the service's `Other`).
    pub fn other(message: String) -> Self {
        cyrvault::Error::Other(message).into()
    }
}

impl fmt::Display for RetentionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetentionError::Held { user, holds } => write!(
                f,
                "{user} is under legal hold ({}): prune and forget are refused until it is \
                 released (`cyrvault hold {user} --release`)",
                holds.join("; ")
            ),
            RetentionError::Behind { user, runs } => write!(
                f,
                "{user}: the archive holds run(s) {runs:?} that the catalog does not have yet \
                 (a backup died before its catalog commit): run a backup or `cyrvault reindex \
                 {user}` first"
            ),
            RetentionError::Mismatch {
                user,
                catalog,
                what,
            } => write!(
                f,
                "{user}: catalog {}: {what}; run `cyrvault reindex {user}`",
                catalog.display()
            ),
            RetentionError::Inconsistent { user, what } => write!(
                f,
                "{user}: the catalog does not describe the archive ({what}): run `cyrvault \
                 verify {user}`, then `cyrvault reindex {user}`"
            ),
            RetentionError::Swapped { archive } => write!(
                f,
                "archive {}: it was rewritten by a prune or forget while this run started; \
                 run again",
                archive.display()
            ),
            RetentionError::NotInArchive { user, what } => {
                write!(f, "{user}: {what} is not in the archive")
            }
            RetentionError::Service(e) => fmt::Display::fmt(e, f),
            RetentionError::Archive(e) => fmt::Display::fmt(e, f),
            RetentionError::Catalog(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for RetentionError {
    // The wrapped errors are transparent: their own sources, as if unwrapped.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RetentionError::Service(e) => e.source(),
            RetentionError::Archive(e) => e.source(),
            RetentionError::Catalog(e) => e.source(),
            _ => None,
        }
    }
}
