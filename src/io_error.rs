//! An I/O failure with its context: what we were doing (`op`) to which file
//! (`path`). Every layer that does I/O wraps [`IoError`] in its own error
//! (`spool::SpoolError::Io`, `secret::SecretError::Io`, the service's
//! `Error::Io`), so the context is attached once, where it is known, and each
//! layer's error still says "reading /var/lib/cyrus/quotas.db: ...". There is
//! deliberately no blanket `From<io::Error>` anywhere: use [`IoContext::at`].
//! Depends on nothing inside the crate.
#![forbid(unsafe_code)]

use std::io;
use std::path::{Path, PathBuf};

/// An I/O call failed; `op` says what we were doing, `path` to what.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct IoError {
    /// What we were doing, e.g. `reading`, `opening secret file`.
    pub op: &'static str,
    /// The file (or directory) it was done to.
    pub path: PathBuf,
    /// What the system said.
    #[source]
    pub source: io::Error,
}

impl IoError {
    /// An I/O error with context.
    pub fn new(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        IoError {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Attach "what we were doing, to which file" to an `io::Result`; `?` then
/// converts the [`IoError`] into the calling layer's error.
pub trait IoContext<T> {
    /// `file.read_exact(&mut buf).at("reading", &path)?`
    fn at(self, op: &'static str, path: &Path) -> Result<T, IoError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T, IoError> {
        self.map_err(|source| IoError {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}
