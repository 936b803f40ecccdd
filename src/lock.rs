//! Cyrus-compatible fcntl locks (being written).

/// A lock that could not be taken.
#[derive(Debug, thiserror::Error)]
#[error("locking {}: {message}", path.display())]
pub struct LockError {
    pub path: std::path::PathBuf,
    pub message: String,
    pub timeout: bool,
}

impl LockError {
    /// The wait timed out (somebody else holds the lock): try again later.
    pub fn is_timeout(&self) -> bool {
        self.timeout
    }
}
