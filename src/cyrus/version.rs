//! Which Cyrus release a server runs, and the conventions that follow from it.
//!
//! Almost everything that differs between Cyrus 3.6 and 3.13 is visible in the
//! files themselves and is handled where each file is parsed: `cyrus.index`
//! carries its minor version (17 in 3.6 and 3.8, 19 in 3.10 and 3.12, 20 from
//! 3.13.1), `mailboxes.db` its record kinds (`UG` from 3.12, `J` from 3.13.1),
//! `cyrus.header` its fields (`J` from 3.13.1). One convention is not in any file
//! we read: the name of the **user namespace lock** (`imap/user.c`,
//! `_namelock_name_from_userid`): `*U*` + the userid with `.` written `^` up to
//! 3.10, `*U*` + the user's INBOX internal name from 3.12 (upstream commit
//! 48c803e9c7, which landed during the 3.11 development series). Locking the
//! wrong name silently loses exclusion against user renames, user deletes and
//! `cyr_withlock_run --user`, so this module decides it from what is known:
//! the release (asked of the server's own `master -V`, see `spool::detect`), else
//! the version markers of `mailboxes.db`, else both names.
//!
//! [`SERIES`] is the one table of supported release series; `doc/cyrus-files.md`
//! ("Supported Cyrus versions") prints it for operators.
#![forbid(unsafe_code)]

use std::fmt;

use serde::Serialize;

/// A Cyrus release as its `master -V` prints it (`cyrus-imapd 3.10.1-3~bpo12+1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CyrusVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// The whole version word as printed (distributions append their own).
    pub text: String,
}

impl CyrusVersion {
    /// Parse `cyrus-imapd 3.6.1-Debian-3.6.1-4+deb12u5`, or just `3.10.1`: the
    /// first word that starts with `<digits>.<digits>`; a missing patch is 0.
    pub fn parse(s: &str) -> Option<CyrusVersion> {
        s.split_whitespace().find_map(|word| {
            let mut nums = word
                .split(|c: char| !c.is_ascii_digit())
                .map(|n| n.parse::<u32>().ok());
            let major = nums.next()??;
            // the separator after major must be a '.'
            if !word[major.to_string().len()..].starts_with('.') {
                return None;
            }
            let minor = nums.next()??;
            let patch = nums.next().flatten().unwrap_or(0);
            Some(CyrusVersion {
                major,
                minor,
                patch,
                text: word.to_string(),
            })
        })
    }

    /// `(major, minor)`.
    pub fn series(&self) -> (u32, u32) {
        (self.major, self.minor)
    }
}

impl fmt::Display for CyrusVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// How the user namespace lock file is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UserLockNaming {
    /// `*U*<userid>`, `.` written `^` (Cyrus 3.6 to 3.10).
    UserId,
    /// `*U*<INBOX internal name>`, e.g. `*U*user.bob^smith`,
    /// `*U*example.com!user.bob` (Cyrus 3.12 on).
    Inbox,
    /// Both names, shared: the release is not known and no file says it is 3.12
    /// or later. A Cyrus of either convention never touches the other name, so
    /// the extra lock blocks nobody and is never waited on; it costs one lock
    /// file per user in the lock directory.
    Both,
}

impl UserLockNaming {
    /// For log lines: the name(s) locked for user `bob`.
    pub fn example(self) -> &'static str {
        match self {
            UserLockNaming::UserId => "*U*bob",
            UserLockNaming::Inbox => "*U*user.bob",
            UserLockNaming::Both => "*U*bob and *U*user.bob",
        }
    }
}

/// What cyrvault does differently per Cyrus release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Conventions {
    /// The user namespace lock's name.
    pub user_lock: UserLockNaming,
}

impl Conventions {
    /// Nothing known: the safe choice.
    pub const UNKNOWN: Conventions = Conventions {
        user_lock: UserLockNaming::Both,
    };
}

/// A release's place against what this cyrvault knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Support {
    /// One of [`SERIES`].
    Supported,
    /// A development series between two supported ones (3.7, 3.9, 3.11).
    Development,
    /// Newer than the newest series we know: read with the newest conventions;
    /// files of a layout we do not know are refused by their parsers.
    Newer,
    /// Older than 3.6: its mailboxes.db layout is refused.
    Older,
}

/// One supported release series and what differs in it.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    pub major: u32,
    pub minor: u32,
    /// The `cyrus.index` minor version it writes for new mailboxes.
    pub index_version: u32,
    /// The user namespace lock name.
    pub user_lock: UserLockNaming,
    /// `mailboxes.db` record kinds it writes.
    pub mailboxes_db: &'static str,
    /// `cyrus.header` fields it writes.
    pub header: &'static str,
}

/// The supported series, oldest first (facts from the release tags of
/// `cyrusimap/cyrus-imapd`: `MAILBOX_MINOR_VERSION`, `KEY_TYPE_*`,
/// `_namelock_name_from_userid`, `mailbox_header_data_cstring`).
pub const SERIES: &[Series] = &[
    Series {
        major: 3,
        minor: 6,
        index_version: 17,
        user_lock: UserLockNaming::UserId,
        mailboxes_db: "N I A",
        header: "T N I Q A U",
    },
    Series {
        major: 3,
        minor: 8,
        index_version: 17,
        user_lock: UserLockNaming::UserId,
        mailboxes_db: "N I A (mbtype j)",
        header: "T N I Q A U",
    },
    Series {
        major: 3,
        minor: 10,
        index_version: 19,
        user_lock: UserLockNaming::UserId,
        mailboxes_db: "N I A",
        header: "T N I Q A U",
    },
    Series {
        major: 3,
        minor: 12,
        index_version: 19,
        user_lock: UserLockNaming::Inbox,
        mailboxes_db: "N I A UG",
        header: "T N I Q A U",
    },
    Series {
        major: 3,
        minor: 13,
        index_version: 20,
        user_lock: UserLockNaming::Inbox,
        mailboxes_db: "N I A UG J",
        header: "T N I J Q A U",
    },
];

/// The newest series we know.
pub fn newest() -> &'static Series {
    &SERIES[SERIES.len() - 1]
}

/// The conventions of a release, and where it stands.
pub fn conventions_for(v: &CyrusVersion) -> (Conventions, Support) {
    let series = v.series();
    if let Some(s) = SERIES.iter().find(|s| (s.major, s.minor) == series) {
        return (
            Conventions {
                user_lock: s.user_lock,
            },
            Support::Supported,
        );
    }
    let oldest = &SERIES[0];
    let newest = newest();
    if series < (oldest.major, oldest.minor) {
        return (
            Conventions {
                user_lock: UserLockNaming::UserId,
            },
            Support::Older,
        );
    }
    if series > (newest.major, newest.minor) {
        return (
            Conventions {
                user_lock: newest.user_lock,
            },
            Support::Newer,
        );
    }
    // A development series: the conventions of the series on both sides if they
    // agree, else both lock names (3.11 changed the name somewhere in its life).
    let below = SERIES.iter().rev().find(|s| (s.major, s.minor) < series);
    let above = SERIES.iter().find(|s| (s.major, s.minor) > series);
    let user_lock = match (below, above) {
        (Some(b), Some(a)) if b.user_lock == a.user_lock => b.user_lock,
        _ => UserLockNaming::Both,
    };
    (Conventions { user_lock }, Support::Development)
}

/// The conventions when only the files speak: `marker` is the oldest series that
/// writes what `mailboxes.db` holds (`KindCounts::newest_marker`). Its absence
/// proves nothing (a 3.12 server without user groups looks like a 3.10 one).
pub fn conventions_from_marker(marker: Option<(u32, u32)>) -> Conventions {
    match marker {
        Some(m) if m >= (3, 12) => Conventions {
            user_lock: UserLockNaming::Inbox,
        },
        _ => Conventions::UNKNOWN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> CyrusVersion {
        CyrusVersion::parse(s).unwrap()
    }

    #[test]
    fn parses_what_master_prints() {
        let d = v("cyrus-imapd 3.6.1-Debian-3.6.1-4+deb12u5\n");
        assert_eq!((d.major, d.minor, d.patch), (3, 6, 1));
        assert_eq!(d.text, "3.6.1-Debian-3.6.1-4+deb12u5");
        let b = v("cyrus-imapd 3.10.1-3~bpo12+1");
        assert_eq!(b.series(), (3, 10));
        assert_eq!(v("3.13.0-alpha0-12-g1f3a129").series(), (3, 13));
        assert_eq!(v("cyrus-imapd 4.0").patch, 0);
        for bad in ["", "cyrus-imapd", "cyrus-imapd x.y", "cyrus-imapd 3", "3-6"] {
            assert!(CyrusVersion::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn conventions_per_release() {
        let lock = |s: &str| conventions_for(&v(s));
        for s in ["3.6.1", "3.8.3", "3.10.1"] {
            assert_eq!(
                lock(s),
                (
                    Conventions {
                        user_lock: UserLockNaming::UserId
                    },
                    Support::Supported
                ),
                "{s}"
            );
        }
        for s in ["3.12.0", "3.13.6"] {
            assert_eq!(lock(s).0.user_lock, UserLockNaming::Inbox, "{s}");
            assert_eq!(lock(s).1, Support::Supported);
        }
        assert_eq!(
            lock("3.9.0"),
            (
                Conventions {
                    user_lock: UserLockNaming::UserId
                },
                Support::Development
            )
        );
        assert_eq!(lock("3.11.1"), (Conventions::UNKNOWN, Support::Development));
        assert_eq!(
            lock("3.14.0"),
            (
                Conventions {
                    user_lock: UserLockNaming::Inbox
                },
                Support::Newer
            )
        );
        assert_eq!(lock("4.0.0").1, Support::Newer);
        assert_eq!(lock("3.4.5").1, Support::Older);
        assert_eq!(lock("2.5.17").1, Support::Older);
    }

    #[test]
    fn markers_only_ever_prove_a_newer_release() {
        assert_eq!(
            conventions_from_marker(Some((3, 13))).user_lock,
            UserLockNaming::Inbox
        );
        assert_eq!(
            conventions_from_marker(Some((3, 12))).user_lock,
            UserLockNaming::Inbox
        );
        assert_eq!(conventions_from_marker(None), Conventions::UNKNOWN);
    }

    #[test]
    fn table_is_ordered_and_ends_with_3_13() {
        assert!(
            SERIES
                .windows(2)
                .all(|w| (w[0].major, w[0].minor) < (w[1].major, w[1].minor))
        );
        assert_eq!(
            (newest().major, newest().minor, newest().index_version),
            (3, 13, 20)
        );
        assert_eq!(crate::cyrus::index::SUPPORTED_VERSIONS, "12-20");
    }
}
