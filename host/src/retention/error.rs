//! Errors of retention (prune, forget, hold): typed, naming the user, wrapped by the
//! crate `Error::Retention`.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::PathBuf;

use crate::error::ErrorKind;

/// What retention refused.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        }
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
        }
    }
}

impl std::error::Error for RetentionError {}
