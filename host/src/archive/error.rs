//! Typed archive errors: what went wrong, and at which file offset.
//!
//! Callers match on these (a `Locked` archive is retried later, a `Damaged` member is
//! reported by `verify` with the entries it holds). [`ArchiveFailure`] is the archive
//! layer's error: an [`ArchiveError`] with the archive's path, or a service-side
//! error it met (I/O with what and where, through `io_error`); the crate `Error`
//! converts it at this layer's edge into the same variants (`Error::Archive`,
//! `Error::Service`).

use std::fmt;
use std::path::PathBuf;

use cyrvault::error::ErrorKind;

/// Result with the archive layer's [`ArchiveFailure`].
pub type Result<T, E = ArchiveFailure> = std::result::Result<T, E>;

/// Every failure of the archive layer.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveFailure {
    /// An I/O call failed (with what we were doing and to which file), or another
    /// service-side failure.
    #[error(transparent)]
    Service(#[from] cyrvault::Error),
    /// The archive is locked, damaged or not what we expected.
    #[error("archive {}: {source}", path.display())]
    Archive {
        path: PathBuf,
        #[source]
        source: ArchiveError,
    },
}

/// An I/O failure with what and where is the service's `Error::Io` here too (so `?`
/// takes `IoContext::at`'s result straight into this layer's error).
impl From<cyrvault::io_error::IoError> for ArchiveFailure {
    fn from(e: cyrvault::io_error::IoError) -> Self {
        cyrvault::Error::from(e).into()
    }
}

impl ArchiveFailure {
    /// Wrap an archive error with the archive it is about.
    pub fn archive(path: impl Into<PathBuf>, source: ArchiveError) -> Self {
        ArchiveFailure::Archive {
            path: path.into(),
            source,
        }
    }

    /// An I/O error with context.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        cyrvault::Error::io(op, path, source).into()
    }

    /// Anything else, with a message that says what and where (class Software).
    pub fn other(message: String) -> Self {
        cyrvault::Error::Other(message).into()
    }

    /// The archive error inside, if this is one (for callers that match on it).
    pub fn as_archive(&self) -> Option<&ArchiveError> {
        match self {
            ArchiveFailure::Archive { source, .. } => Some(source),
            ArchiveFailure::Service(_) => None,
        }
    }

    /// The class of this failure: a locked archive is temporary, any other archive
    /// error is damaged data.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ArchiveFailure::Service(e) => e.kind(),
            ArchiveFailure::Archive { source, .. } if source.is_temporary() => ErrorKind::Temporary,
            ArchiveFailure::Archive { .. } => ErrorKind::Data,
        }
    }

    /// Whether trying again later may succeed (another writer may finish).
    pub fn is_temporary(&self) -> bool {
        self.kind() == ErrorKind::Temporary
    }

    /// The sysexits code for this failure.
    pub fn exit_code(&self) -> i32 {
        self.kind().exit_code()
    }
}

/// What is wrong inside one gzip member (or the bytes where one should start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The bytes do not start with the gzip magic `1f 8b 08`.
    BadMagic,
    /// The gzip header is malformed; the text says which field.
    BadHeader(&'static str),
    /// The deflate data does not decode; zlib's message.
    Deflate(&'static str),
    /// The member ends before its trailer (a crash leftover when at the tail).
    Truncated,
    /// The trailer's CRC-32 does not match the inflated data.
    BadCrc { stored: u32, computed: u32 },
    /// The trailer's ISIZE does not match the inflated length (mod 2^32).
    BadSize { stored: u32, computed: u32 },
    /// The tar stream inside the member is malformed at this uncompressed offset.
    BadTar {
        offset_in_member: u64,
        what: &'static str,
    },
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::BadMagic => f.write_str("no gzip magic"),
            Damage::BadHeader(what) => write!(f, "bad gzip header: {what}"),
            Damage::Deflate(msg) => write!(f, "deflate data does not decode: {msg}"),
            Damage::Truncated => f.write_str("member is truncated (no complete trailer)"),
            Damage::BadCrc { stored, computed } => write!(
                f,
                "crc32 mismatch (trailer {stored:08x}, data {computed:08x})"
            ),
            Damage::BadSize { stored, computed } => {
                write!(f, "isize mismatch (trailer {stored}, data {computed})")
            }
            Damage::BadTar {
                offset_in_member,
                what,
            } => write!(
                f,
                "bad tar data at uncompressed offset {offset_in_member}: {what}"
            ),
        }
    }
}

/// An archive-level failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveError {
    /// Another writer holds the archive's lock.
    Locked,
    /// The archive is shorter than the length the caller had committed: it was cut or
    /// replaced behind our back. Never repaired by the writer.
    ShorterThanCommitted { len: u64, committed: u64 },
    /// The committed length does not fall on a member boundary.
    NotMemberBoundary { offset: u64 },
    /// The member starting at `offset` is damaged.
    Damaged { offset: u64, damage: Damage },
    /// The bytes past the last complete member are not a crash leftover (not a
    /// truncated member): refusing to cut them.
    TailNotLeftover {
        offset: u64,
        len: u64,
        damage: Damage,
    },
    /// The first member does not start with a `cyrvault/FORMAT` entry.
    NotAnArchive,
    /// The archive's format version is newer than this program reads.
    UnsupportedVersion { found: u32, supported: u32 },
    /// An entry name the format does not allow.
    BadName { name: String, why: &'static str },
    /// `read_entry_at` asked for bytes past the end of the member.
    OutOfRange {
        member_offset: u64,
        offset_in_member: u64,
        size: u64,
    },
    /// The writer hit an earlier I/O error; reopen the archive to continue.
    Poisoned,
}

impl fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchiveError::Locked => f.write_str("locked by another writer"),
            ArchiveError::ShorterThanCommitted { len, committed } => write!(
                f,
                "archive is {len} bytes, shorter than the {committed} bytes committed; not touching it"
            ),
            ArchiveError::NotMemberBoundary { offset } => {
                write!(f, "committed length {offset} is not a member boundary")
            }
            ArchiveError::Damaged { offset, damage } => {
                write!(f, "member at offset {offset}: {damage}")
            }
            ArchiveError::TailNotLeftover {
                offset,
                len,
                damage,
            } => write!(
                f,
                "{len} bytes at offset {offset} past the last complete member are not a truncated member ({damage}); not cutting them"
            ),
            ArchiveError::NotAnArchive => f.write_str("first member does not hold cyrvault/FORMAT"),
            ArchiveError::UnsupportedVersion { found, supported } => write!(
                f,
                "archive format version {found} is newer than supported ({supported})"
            ),
            ArchiveError::BadName { name, why } => write!(f, "entry name {name:?}: {why}"),
            ArchiveError::OutOfRange {
                member_offset,
                offset_in_member,
                size,
            } => write!(
                f,
                "member at offset {member_offset} has no {size} bytes at uncompressed offset {offset_in_member}"
            ),
            ArchiveError::Poisoned => f.write_str("an earlier write failed; reopen the archive"),
        }
    }
}

impl std::error::Error for ArchiveError {}

impl ArchiveError {
    /// Whether trying again later may succeed (another writer may finish).
    pub fn is_temporary(&self) -> bool {
        matches!(self, ArchiveError::Locked)
    }

    /// The file offset this error is about, when it names one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            ArchiveError::Damaged { offset, .. }
            | ArchiveError::TailNotLeftover { offset, .. }
            | ArchiveError::NotMemberBoundary { offset } => Some(*offset),
            ArchiveError::OutOfRange { member_offset, .. } => Some(*member_offset),
            _ => None,
        }
    }
}
