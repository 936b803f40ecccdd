//! "What we were doing, to which file" on an `io::Result`, for every host layer: the
//! error becomes the service's `Error::Io` (message `"{op} {path}: {source}"`, class
//! Io), and `?` converts that into the calling layer's own error (each has a
//! `From<cyrvault::Error>`). There is deliberately no blanket `From<io::Error>`
//! anywhere: a bare I/O error says neither what nor where. Depends on nothing inside
//! the crate, so the lowest layer can use it.
#![forbid(unsafe_code)]

use std::io;
use std::path::Path;

/// Attach "what we were doing, to which file" to an `io::Result`.
pub trait IoContext<T> {
    /// `file.read_exact(&mut buf).at("reading", &path)?`
    fn at(self, op: &'static str, path: &Path) -> Result<T, cyrvault::Error>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T, cyrvault::Error> {
        self.map_err(|source| cyrvault::Error::io(op, path, source))
    }
}
