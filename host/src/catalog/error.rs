//! Errors of the catalog: SQLite failures with what we were doing and to which file,
//! schema version mismatches, misuse of the run writer, and the service-side errors
//! the catalog meets (I/O on its files, a catalog that does not exist). The crate
//! `Error` converts it at this layer's edge (`Error::Catalog`, or `Error::Service`
//! for the service's).
#![forbid(unsafe_code)]

use std::fmt;
use std::path::PathBuf;

use cyrvault::error::ErrorKind;

/// Result with the catalog's [`CatalogError`].
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// What went wrong in the catalog.
#[derive(Debug)]
pub enum CatalogError {
    /// A SQLite call failed; `op` says what we were doing.
    Db {
        op: &'static str,
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The catalog was written by a newer cyrvault (its schema version is higher).
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// The catalog has a schema version we have no migration from.
    SchemaTooOld {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// The file is a SQLite database, but not a cyrvault catalog.
    NotACatalog { path: PathBuf },
    /// Stored data that does not decode (a state column, a GUID blob).
    Corrupt { path: PathBuf, what: String },
    /// A run tried to record a message (GUID) that no member of the archive holds: the
    /// run is refused (doc/catalog.md, "the held rule").
    Unheld {
        path: PathBuf,
        run: u64,
        uniqueid: String,
        uid: u32,
        guid: crate::cyrus::Guid,
    },
    /// The writer was used against its contract (run numbers not increasing, a folder
    /// snapshotted twice in one run, an unchanged folder we never saw...).
    Misuse { path: PathBuf, what: String },
    /// A service-side failure: I/O on the catalog's files (with what and where), a
    /// catalog that does not exist, a state that does not encode.
    Service(cyrvault::Error),
}

/// An I/O failure with what and where is the service's `Error::Io` here too (so `?`
/// takes `IoContext::at`'s result straight into this layer's error).
impl From<cyrvault::io_error::IoError> for CatalogError {
    fn from(e: cyrvault::io_error::IoError) -> Self {
        cyrvault::Error::from(e).into()
    }
}

impl From<cyrvault::Error> for CatalogError {
    fn from(e: cyrvault::Error) -> Self {
        CatalogError::Service(e)
    }
}

impl CatalogError {
    /// Whether trying again later may succeed (a busy or locked database).
    pub fn is_temporary(&self) -> bool {
        self.kind() == ErrorKind::Temporary
    }

    /// An I/O error with context (the service's `Io`).
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        cyrvault::Error::io(op, path, source).into()
    }

    /// A catalog that does not exist (the service's `NotFound`).
    pub fn not_found(what: &'static str, name: String) -> Self {
        cyrvault::Error::NotFound { what, name }.into()
    }

    /// Anything else, with a message that says what and where (the service's `Other`).
    pub fn other(message: String) -> Self {
        cyrvault::Error::Other(message).into()
    }

    /// The coarse class, for exit codes and retries: a busy/locked database is
    /// temporary, a schema or content problem is bad data, misuse is a bug.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CatalogError::Db { source, .. } => match source.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                    ErrorKind::Temporary
                }
                Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::DiskFull) => {
                    ErrorKind::Io
                }
                _ => ErrorKind::Data,
            },
            CatalogError::SchemaTooNew { .. }
            | CatalogError::SchemaTooOld { .. }
            | CatalogError::NotACatalog { .. }
            | CatalogError::Corrupt { .. }
            | CatalogError::Unheld { .. } => ErrorKind::Data,
            CatalogError::Misuse { .. } => ErrorKind::Software,
            CatalogError::Service(e) => e.kind(),
        }
    }
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatalogError::Db { op, path, source } => {
                write!(f, "catalog {}: {op}: {source}", path.display())
            }
            CatalogError::SchemaTooNew {
                path,
                found,
                supported,
            } => write!(
                f,
                "catalog {}: schema version {found} is newer than this cyrvault supports \
                 ({supported}); upgrade cyrvault or run reindex",
                path.display()
            ),
            CatalogError::SchemaTooOld {
                path,
                found,
                supported,
            } => write!(
                f,
                "catalog {}: schema version {found} has no migration to {supported}; run reindex",
                path.display()
            ),
            CatalogError::NotACatalog { path } => {
                write!(f, "{}: not a cyrvault catalog", path.display())
            }
            CatalogError::Corrupt { path, what } => {
                write!(f, "catalog {}: corrupt: {what}", path.display())
            }
            CatalogError::Unheld {
                path,
                run,
                uniqueid,
                uid,
                guid,
            } => write!(
                f,
                "catalog {}: run {run}: folder {uniqueid} uid {uid} names message {guid}, \
                 which no member of the archive holds: refused",
                path.display()
            ),
            CatalogError::Misuse { path, what } => {
                write!(f, "catalog {}: {what}", path.display())
            }
            CatalogError::Service(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for CatalogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CatalogError::Db { source, .. } => Some(source),
            // transparent: the service error's own source, as if unwrapped
            CatalogError::Service(e) => e.source(),
            _ => None,
        }
    }
}
