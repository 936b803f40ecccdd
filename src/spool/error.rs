//! The spool's error ([`SpoolError`]): every way reading one server's files can
//! fail, each naming the file (and, for a damaged mailbox, the user, mailbox and
//! byte offset: [`MailboxError`]). Cyrus's answer to a damaged mailbox is
//! `reconstruct`; we never repair, we report and skip. The spool's callers (the
//! service) convert it into the service's `Error` at their edge, variant for
//! variant; [`SpoolError::kind`] is the class it keeps there.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::PathBuf;

use crate::cyrus::config::ConfigError;
use crate::cyrus::paths::PathError;
use crate::cyrus::{ParseError, ParseErrorKind};
use crate::io_error::IoError;
use crate::kind::ErrorKind;
use crate::lock::{LockError, LockFailure};

/// Result with the spool's [`SpoolError`].
pub type Result<T, E = SpoolError> = std::result::Result<T, E>;

/// Everything the spool returns.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// An I/O call failed (says what was being done to which file).
    #[error(transparent)]
    Io(#[from] IoError),
    /// A global database (mailboxes.db, annotations.db, quotas.db, ...) did not
    /// parse.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The database.
        path: PathBuf,
        /// What and where (offset).
        #[source]
        source: ParseError,
    },
    /// imapd.conf says something the spool cannot work with.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A lock could not be taken (a timeout is temporary).
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A mailbox's files are damaged (names user, mailbox, file and offset).
    #[error(transparent)]
    Mailbox(#[from] Box<MailboxError>),
    /// A mailbox, user or file does not exist.
    #[error("{what} not found: {name}")]
    NotFound {
        /// What kind of thing (`mailbox`, `mailboxes.db`, ...).
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// A name or setting the spool refuses (bad user name, unsupported backend).
    #[error("refused: {0}")]
    Refused(String),
    /// A broken invariant of our own, with a message that says what and where.
    #[error("{0}")]
    Other(String),
}

impl SpoolError {
    /// The class of this error (the service's `Error` keeps it).
    pub fn kind(&self) -> ErrorKind {
        match self {
            SpoolError::Io(_) => ErrorKind::Io,
            SpoolError::Parse { .. } | SpoolError::Mailbox(_) => ErrorKind::Data,
            SpoolError::Config(_) => ErrorKind::Config,
            SpoolError::Lock(e) if e.is_timeout() => ErrorKind::Temporary,
            SpoolError::Lock(_) => ErrorKind::Io,
            SpoolError::NotFound { .. } => ErrorKind::NotFound,
            SpoolError::Refused(_) => ErrorKind::Usage,
            SpoolError::Other(_) => ErrorKind::Software,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        self.kind() == ErrorKind::Temporary
    }

    /// Wrap a parse error with the file it came from.
    pub fn parse(path: impl Into<PathBuf>, source: ParseError) -> Self {
        SpoolError::Parse {
            path: path.into(),
            source,
        }
    }

    /// An I/O error with context.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SpoolError::Io(IoError::new(op, path, source))
    }
}

// The lock layer's failures, each to the variant (and so the class) it always had.
impl From<LockFailure> for SpoolError {
    fn from(e: LockFailure) -> SpoolError {
        match e {
            LockFailure::Lock(e) => SpoolError::Lock(e),
            LockFailure::Path(e) => e.into(),
            LockFailure::Config(e) => SpoolError::Config(e),
            LockFailure::Other(m) => SpoolError::Other(m),
        }
    }
}

// A path that cannot be made is refused input or a configuration gap.
impl From<PathError> for SpoolError {
    fn from(e: PathError) -> SpoolError {
        match e {
            PathError::Refused(m) => SpoolError::Refused(m),
            PathError::Config(c) => SpoolError::Config(c),
        }
    }
}

/// What is wrong with a mailbox's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// A file did not parse (bad magic, version, CRC, layout); the offset is in
    /// the parse error.
    Parse(ParseError),
    /// `cyrus.header` names another uniqueid than mailboxes.db.
    UniqueidMismatch {
        /// The uniqueid in `cyrus.header`.
        header: Option<String>,
        /// The uniqueid in the mailboxes.db entry.
        mboxlist: Option<String>,
    },
    /// `cyrus.cache` belongs to another generation of the index.
    CacheGeneration {
        /// Generation at the start of `cyrus.cache`.
        cache: u32,
        /// `generation_no` of `cyrus.index`.
        index: u32,
    },
}

/// A mailbox whose files are damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxError {
    /// The owner, for a user's mailbox.
    pub user: Option<String>,
    /// Internal mailbox name, e.g. `user.bob.Sent`.
    pub mailbox: String,
    /// The damaged file.
    pub file: PathBuf,
    /// What is wrong.
    pub damage: Damage,
}

impl MailboxError {
    /// What the admin should do: a file of a version we do not read was not
    /// damaged by anyone, and `reconstruct` is the wrong advice for it.
    pub fn advice(&self) -> &'static str {
        match &self.damage {
            Damage::Parse(ParseError {
                kind: ParseErrorKind::UnsupportedVersion { found, supported },
                ..
            }) => {
                let newest = supported
                    .rsplit(['-', ' ', ','])
                    .next()
                    .and_then(|n| n.parse::<u64>().ok());
                if newest.is_some_and(|n| *found > n) {
                    "written by a Cyrus newer than this cyrvault reads (it knows 3.6 to 3.13): upgrade cyrvault"
                } else {
                    "written by a Cyrus older than this cyrvault reads: `reconstruct -V max` rewrites it in a current version"
                }
            }
            _ => "needs reconstruct",
        }
    }

    /// Byte offset of the damage in [`MailboxError::file`], when known.
    pub fn offset(&self) -> Option<u64> {
        match &self.damage {
            Damage::Parse(p) => Some(p.offset),
            Damage::UniqueidMismatch { .. } => None,
            Damage::CacheGeneration { .. } => Some(0),
        }
    }
}

impl fmt::Display for MailboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "damaged mailbox {}", self.mailbox)?;
        if let Some(u) = &self.user {
            write!(f, " of user {u}")?;
        }
        write!(f, ": {}: ", self.file.display())?;
        match &self.damage {
            Damage::Parse(p) => write!(f, "{p}"),
            Damage::UniqueidMismatch { header, mboxlist } => write!(
                f,
                "uniqueid {} in the header, {} in mailboxes.db",
                header.as_deref().unwrap_or("(none)"),
                mboxlist.as_deref().unwrap_or("(none)")
            ),
            Damage::CacheGeneration { cache, index } => write!(
                f,
                "cache generation {cache} does not match index generation {index}"
            ),
        }?;
        write!(f, " ({})", self.advice())
    }
}

impl std::error::Error for MailboxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.damage {
            Damage::Parse(p) => Some(p),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_fits_the_damage() {
        let e = |found| MailboxError {
            user: Some("bob".into()),
            mailbox: "user.bob".into(),
            file: "/p/cyrus.index".into(),
            damage: Damage::Parse(ParseError::new(
                "cyrus.index header",
                8,
                ParseErrorKind::UnsupportedVersion {
                    found,
                    supported: "12-20",
                },
            )),
        };
        let newer = e(21).to_string();
        assert!(newer.contains("/p/cyrus.index"), "{newer}");
        assert!(
            newer.contains("unsupported version 21 (supported: 12-20)"),
            "{newer}"
        );
        assert!(
            newer.contains("upgrade cyrvault") && !newer.contains("needs reconstruct"),
            "{newer}"
        );
        assert!(e(10).to_string().contains("reconstruct -V max"));
        let mut crc = e(17);
        crc.damage = Damage::Parse(ParseError::invalid("x", 0, "bad"));
        assert!(crc.to_string().ends_with("(needs reconstruct)"));
    }
}
