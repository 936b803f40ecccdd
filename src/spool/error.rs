//! The typed error for a damaged mailbox: which user, which mailbox, which file,
//! which byte offset, and what is wrong. Cyrus's answer to all of them is
//! `reconstruct`; we never repair, we report and skip.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::PathBuf;

use crate::cyrus::{ParseError, ParseErrorKind};

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
