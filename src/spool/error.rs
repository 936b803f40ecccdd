//! The typed error for a damaged mailbox: which user, which mailbox, which file,
//! which byte offset, and what is wrong. Cyrus's answer to all of them is
//! `reconstruct`; we never repair, we report and skip.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::PathBuf;

use crate::cyrus::ParseError;

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
        write!(f, " (needs reconstruct)")
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
