//! The mailbox type string of `mailboxes.db` and `cyrus.header` (`T` field).
//!
//! Follows `mboxlist_string_to_mbtype` / `mboxlist_mbtype_to_string` in
//! `imap/mboxlist.c` and the bit values of `imap/mboxlist.h` (3.6.1 to 3.13; 3.8
//! added the type `j`, JMAP notifications). Like Cyrus (which asserts), an
//! unknown letter is an error, never guessed at.
#![forbid(unsafe_code)]

use serde::Serialize;

/// A mailbox type string (`T` field, section 7.4 of the reference): the type
/// letter followed by flag letters, e.g. `e`, `el`, `edl`, `ei`, `c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MbType {
    /// Type letter as Cyrus prints it: `e` email, `n` netnews, `s` JMAP
    /// submission, `p` JMAP push, `j` JMAP notifications (3.8 on), `f` sieve,
    /// `b` collection, `c` calendar, `a` addressbook.
    pub kind: char,
    /// The flag bits ([`MbType::DELETED`] etc.), without the type bits.
    pub flags: u32,
    raw: String,
}

impl Default for MbType {
    fn default() -> Self {
        MbType {
            kind: 'e',
            flags: 0,
            raw: String::new(),
        }
    }
}

impl MbType {
    /// Not on this server (murder): the partition is remote.
    pub const REMOTE: u32 = 1 << 4;
    /// Reserved name (mid-create in a murder).
    pub const RESERVE: u32 = 1 << 5;
    /// Being moved between servers.
    pub const MOVING: u32 = 1 << 6;
    /// Tombstone left behind by a delete or rename.
    pub const DELETED: u32 = 1 << 7;
    /// Placeholder for a missing parent (or an INBOX being created).
    pub const INTERMEDIATE: u32 = 1 << 8;
    /// Spool path is name-based (hashed), not `uuid/x/y/<uniqueid>`.
    pub const LEGACY_DIRS: u32 = 1 << 9;

    const FLAG_LETTERS: [(char, u32); 6] = [
        ('d', Self::DELETED),
        ('m', Self::MOVING),
        ('r', Self::REMOTE),
        ('z', Self::RESERVE),
        ('i', Self::INTERMEDIATE),
        ('l', Self::LEGACY_DIRS),
    ];

    fn type_letter(t: u32) -> Option<char> {
        Some(match t {
            0x0 => 'e',
            0x1 => 'n',
            0x2 => 's',
            0x3 => 'p',
            0x4 => 'j',
            0x5 => 'f',
            0x8 => 'b',
            0x9 => 'c',
            0xa => 'a',
            _ => return None,
        })
    }

    /// Parse the string form as `mboxlist_string_to_mbtype` does: an optional
    /// type letter (none means email), then flag letters. `f` also counts as a
    /// flag there (it ORs the sieve type in). Unknown letters give `None`.
    pub fn parse(s: &str) -> Option<MbType> {
        let mut chars = s.chars().peekable();
        let mut value = match chars.peek() {
            Some('a') => 0xa,
            Some('b') => 0x8,
            Some('c') => 0x9,
            Some('e') => 0x0,
            Some('j') => 0x4,
            Some('n') => 0x1,
            Some('p') => 0x3,
            Some('s') => 0x2,
            _ => u32::MAX,
        };
        if value == u32::MAX {
            value = 0;
        } else {
            chars.next();
        }
        for c in chars {
            value |= match c {
                'f' => 0x5,
                _ => Self::FLAG_LETTERS.iter().find(|(l, _)| *l == c)?.1,
            };
        }
        let mut t = Self::from_number(value)?;
        t.raw = s.to_string();
        Some(t)
    }

    /// From the numeric form of the pre-DList values (3.6 bit layout).
    pub fn from_number(value: u32) -> Option<MbType> {
        let kind = Self::type_letter(value & 0xf)?;
        let flags = value & !0xf;
        if flags & !Self::FLAG_LETTERS.iter().fold(0, |a, (_, b)| a | b) != 0 {
            return None;
        }
        let mut t = MbType {
            kind,
            flags,
            raw: String::new(),
        };
        t.raw = t.to_cyrus_string();
        Some(t)
    }

    /// The string as stored (may differ from the canonical form, e.g. `""`).
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The canonical string `mboxlist_mbtype_to_string` prints: type letter,
    /// then flags in the order d m r z i l.
    pub fn to_cyrus_string(&self) -> String {
        let mut s = String::from(self.kind);
        for (l, bit) in Self::FLAG_LETTERS {
            if self.flags & bit != 0 {
                s.push(l);
            }
        }
        s
    }

    /// `l`: name-based spool directories.
    pub fn is_legacy_dirs(&self) -> bool {
        self.flags & Self::LEGACY_DIRS != 0
    }
    /// `d`: a tombstone, not a mailbox.
    pub fn is_deleted_tombstone(&self) -> bool {
        self.flags & Self::DELETED != 0
    }
    /// `i`: a placeholder, not a mailbox.
    pub fn is_intermediate(&self) -> bool {
        self.flags & Self::INTERMEDIATE != 0
    }
    /// `z`: reserved.
    pub fn is_reserved(&self) -> bool {
        self.flags & Self::RESERVE != 0
    }
    /// `m`: being moved.
    pub fn is_moving(&self) -> bool {
        self.flags & Self::MOVING != 0
    }
    /// `r`: lives on another server.
    pub fn is_remote(&self) -> bool {
        self.flags & Self::REMOTE != 0
    }
    /// A local mailbox with files on disk: none of d, i, z, m, r.
    pub fn is_openable(&self) -> bool {
        self.flags
            & (Self::DELETED | Self::INTERMEDIATE | Self::RESERVE | Self::MOVING | Self::REMOTE)
            == 0
    }
}

impl Serialize for MbType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_cyrus_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbtype_strings() {
        for s in [
            "e", "el", "edl", "ei", "c", "a", "b", "f", "n", "s", "p", "j", "jd", "edmrzil",
        ] {
            assert_eq!(MbType::parse(s).unwrap().to_cyrus_string(), s);
        }
        assert_eq!(MbType::parse("").unwrap().to_cyrus_string(), "e");
        assert_eq!(MbType::parse("l").unwrap().to_cyrus_string(), "el");
        assert!(MbType::parse("ex").is_none());
        let t = MbType::parse("edl").unwrap();
        assert!(t.is_deleted_tombstone() && t.is_legacy_dirs() && !t.is_openable());
        assert!(MbType::parse("el").unwrap().is_openable());
        assert!(!MbType::parse("ei").unwrap().is_openable());
        assert_eq!(MbType::from_number(0x4).unwrap().to_cyrus_string(), "j");
        assert!(MbType::from_number(0x6).is_none());
        assert_eq!(MbType::from_number(16).unwrap().to_cyrus_string(), "er");
    }
}
