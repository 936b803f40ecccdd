//! The record kinds of `mailboxes.db` from Cyrus 3.6 to 3.13, and the check that
//! tells a 3.6-and-later database from one that still has the pre-3.6 layout.
//!
//! What each version writes (`imap/mboxlist.c` at the release tags; key prefixes
//! `KEY_TYPE_*`, `mboxlist_racl_key`, `mboxlist_jmapid_to_key`,
//! `mboxlist_set_usergroup`):
//!
//! | key | meaning | written by |
//! |---|---|---|
//! | `N<dbname>` | the entry by name | 3.6 on |
//! | `I<uniqueid>` | the entry by id, with the name history `H` | 3.6 on |
//! | `AU RS <user> RS <dbname>`, `AS RS ...` | reverse ACL cache (`reverseacls: yes`); `AS RS` alone marks it enabled | 3.6 on |
//! | `UG<userid> RS <group>`, `UG<group> RS <userid>` | user groups | 3.12 on |
//! | `J<userid> RS <jmapid>` | the entry by JMAP id (`J<userid>.<jmapid>` in early 3.13 builds) | 3.13.1 on |
//!
//! Cyrus reads a mailbox from its `N` record and its history from the `I` record;
//! every other kind is an index for lookups we never make, so we skip it as every
//! Cyrus listing does (they are all prefix walks over `N`). A key of no kind above
//! is skipped too, counted and reported ([`KindCounts`]): Cyrus 3.6–3.13 never reads
//! one either.
//!
//! Whether a database is pre-3.6 (keys are plain internal names, `$RACL`/`$RUNQ`
//! markers) is decided exactly as Cyrus's own `mboxlist_upgrade` decides it
//! (`_check_rec_cb`): by the first record, in key order, that is a `$RACL`/`$RUNQ`
//! marker, the `AS RS` reverse-ACL marker, or an `I`/`N` record whose value parses.
#![forbid(unsafe_code)]

use serde::Serialize;

use super::{DB_RECSEP, show_bytes};
use crate::cyrus::ParseError;
use crate::cyrus::dlist::{Dlist, parse_dlist};

/// What a `mailboxes.db` key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// `N<dbname>`: a mailbox entry.
    Name,
    /// `I<uniqueid>`: the same entry by uniqueid, with its name history.
    Id,
    /// `AU RS ...` / `AS RS ...`: the reverse ACL cache.
    ReverseAcl,
    /// `UG...`: user group membership (3.12 on).
    UserGroup,
    /// `J<userid> RS <jmapid>`: the entry by JMAP id (3.13 on).
    JmapId,
    /// `$RACL...` / `$RUNQ...`: only in pre-3.6 databases.
    UpgradeMarker,
    /// None of the above.
    Unknown,
}

/// The kind of a key (see the module table).
pub fn kind_of(key: &[u8]) -> RecordKind {
    match key {
        [b'N', ..] => RecordKind::Name,
        [b'I', ..] => RecordKind::Id,
        [b'A', b'U' | b'S', DB_RECSEP, ..] => RecordKind::ReverseAcl,
        [b'U', b'G', ..] => RecordKind::UserGroup,
        [b'J', ..] => RecordKind::JmapId,
        // `_check_rec_cb` wants at least 6 bytes ("$RACL" plus something).
        k if k.len() >= 6 && (k.starts_with(b"$RACL") || k.starts_with(b"$RUNQ")) => {
            RecordKind::UpgradeMarker
        }
        _ => RecordKind::Unknown,
    }
}

/// How many records of each kind we skipped, for `inspect mailboxes` and the logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KindCounts {
    /// `N` records.
    pub names: u64,
    /// `I` records.
    pub ids: u64,
    /// Reverse ACL records (skipped).
    pub reverse_acls: u64,
    /// User group records (skipped; Cyrus 3.12 on).
    pub user_groups: u64,
    /// JMAP id records (skipped; Cyrus 3.13 on).
    pub jmap_ids: u64,
    /// `N`/`I` values carrying a `J` (JMAP id) field (Cyrus 3.13 on).
    pub jmapid_fields: u64,
    /// Keys of no kind Cyrus 3.6–3.13 writes (skipped).
    pub unknown: u64,
    /// The first such key, printable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_unknown: Option<String>,
}

impl KindCounts {
    /// Count the keys of `records` by kind (the `J` fields are counted by the parser).
    pub fn of(records: &[(Vec<u8>, Vec<u8>)]) -> KindCounts {
        let mut c = KindCounts::default();
        for (key, _) in records {
            match kind_of(key) {
                RecordKind::Name => c.names += 1,
                RecordKind::Id => c.ids += 1,
                RecordKind::ReverseAcl => c.reverse_acls += 1,
                RecordKind::UserGroup => c.user_groups += 1,
                RecordKind::JmapId => c.jmap_ids += 1,
                RecordKind::UpgradeMarker | RecordKind::Unknown => {
                    c.unknown += 1;
                    if c.first_unknown.is_none() {
                        c.first_unknown = Some(show_bytes(key));
                    }
                }
            }
        }
        c
    }

    /// The oldest Cyrus release series that writes what was seen (3.13, 3.12), if
    /// anything version-specific was seen.
    pub fn newest_marker(&self) -> Option<(u32, u32)> {
        if self.jmap_ids > 0 || self.jmapid_fields > 0 {
            Some((3, 13))
        } else if self.user_groups > 0 {
            Some((3, 12))
        } else {
            None
        }
    }
}

/// The first decisive record says the layout is pre-3.6: refuse with Cyrus's own
/// remedy. Otherwise (3.6 layout, or an empty database) Ok. `entry_parses` says
/// whether an `N` value parses as an entry in any form Cyrus reads
/// (`mboxlist_parse_entry`).
pub fn check_layout(
    records: &[(Vec<u8>, Vec<u8>)],
    entry_parses: impl Fn(&[u8]) -> bool,
) -> Result<(), ParseError> {
    for (i, (key, val)) in records.iter().enumerate() {
        let pre36 = |why: String| {
            Err(ParseError::invalid(
                "mailboxes.db",
                i as u64,
                format!(
                    "this mailboxes.db has the pre-3.6 layout: record {i}, key {}, {why} \
                     (decided as Cyrus's own mboxlist_upgrade check decides); Cyrus 3.6 and \
                     later convert it with `ctl_cyrusdb -r`, which their startup runs: start \
                     the server's Cyrus (3.6 or newer) once, then back up",
                    show_bytes(key)
                ),
            ))
        };
        match kind_of(key) {
            RecordKind::UpgradeMarker => {
                return pre36("is a reverse-ACL/run-queue marker only old databases have".into());
            }
            RecordKind::ReverseAcl if key.starts_with(b"AS\x1e") => return Ok(()),
            RecordKind::Name if entry_parses(val) => return Ok(()),
            RecordKind::Id => match parse_dlist(val) {
                Ok(d) if d.as_kvlist().is_some() => {
                    return if d.get("N").and_then(Dlist::as_bytes).is_some() {
                        Ok(())
                    } else {
                        pre36("is an I record without N (the 3.5 development layout)".into())
                    };
                }
                _ => {}
            },
            _ => {}
        }
    }
    match records.first() {
        None => Ok(()),
        Some((key, _)) => Err(ParseError::invalid(
            "mailboxes.db",
            0,
            format!(
                "no record is of a kind Cyrus 3.6-3.13 writes (N, I, A, UG, J; first key {}): \
                 this is a pre-3.6 mailboxes.db (keys are mailbox names); Cyrus 3.6 and later \
                 convert it with `ctl_cyrusdb -r`, which their startup runs: start the server's \
                 Cyrus (3.6 or newer) once, then back up",
                show_bytes(key)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &[u8], v: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (k.to_vec(), v.to_vec())
    }

    #[test]
    fn kinds() {
        assert_eq!(kind_of(b"Nuser\x1fbob"), RecordKind::Name);
        assert_eq!(kind_of(b"I5a1b"), RecordKind::Id);
        assert_eq!(kind_of(b"AU\x1ebob\x1euser\x1fx"), RecordKind::ReverseAcl);
        assert_eq!(kind_of(b"AS\x1e"), RecordKind::ReverseAcl);
        assert_eq!(kind_of(b"Archive"), RecordKind::Unknown);
        assert_eq!(kind_of(b"UGbob\x1estaff"), RecordKind::UserGroup);
        assert_eq!(kind_of(b"Jalice\x1eP-F"), RecordKind::JmapId);
        assert_eq!(kind_of(b"$RACL$U$bob"), RecordKind::UpgradeMarker);
        assert_eq!(kind_of(b"$RACL"), RecordKind::Unknown);
        assert_eq!(kind_of(b"user.bob"), RecordKind::Unknown);
        assert_eq!(kind_of(b""), RecordKind::Unknown);
    }

    #[test]
    fn layout_is_decided_by_the_first_decisive_record() {
        let dlist = |v: &[u8]| parse_dlist(v).is_ok_and(|d| d.as_kvlist().is_some());
        let check = |r: &[(Vec<u8>, Vec<u8>)]| check_layout(r, dlist);
        let ok = |r: &[(Vec<u8>, Vec<u8>)]| check(r).is_ok();
        assert!(ok(&[]));
        // 3.13: J and UG keys sort before N; the N record decides.
        assert!(ok(&[
            rec(b"Jalice\x1eP-F", b"%(T e N user\x1falice I u1)"),
            rec(b"Nuser\x1falice", b"%(T e I u1 J P-F P default)"),
            rec(b"UGalice\x1estaff", b""),
        ]));
        assert!(ok(&[rec(b"AS\x1e", b""), rec(b"zzz", b"")]));
        // An I record with N decides 3.6; without N, the 3.5 layout.
        assert!(ok(&[rec(b"Iu1", b"%(T e N user\x1fa)"), rec(b"x.y", b"")]));
        let e = check(&[rec(b"Iu1", b"%(T e P default)")]).unwrap_err();
        assert!(e.to_string().contains("pre-3.6"), "{e}");
        // $RACL first: pre-3.6 even with N records after it.
        let e = check(&[
            rec(b"$RACL$U$bob$user.bob", b""),
            rec(b"Nuser\x1fbob", b"%(T e)"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("ctl_cyrusdb -r"), "{e}");
        // Only mailbox names as keys.
        let e = check(&[rec(b"user.bob", b"%(T e P default)")]).unwrap_err();
        assert!(e.to_string().contains("pre-3.6"), "{e}");
        // An N record whose value does not parse does not decide.
        assert!(check(&[rec(b"Nancy", b"0 default a\tlrs")]).is_err());
    }

    #[test]
    fn counts_and_markers() {
        let c = KindCounts::of(&[
            rec(b"AS\x1e", b""),
            rec(b"Iu1", b""),
            rec(b"Jbob\x1ex", b""),
            rec(b"Nuser\x1fbob", b""),
            rec(b"UGbob\x1es", b""),
            rec(b"Zfuture", b""),
        ]);
        assert_eq!(
            (
                c.names,
                c.ids,
                c.reverse_acls,
                c.user_groups,
                c.jmap_ids,
                c.unknown
            ),
            (1, 1, 1, 1, 1, 1)
        );
        assert_eq!(c.first_unknown.as_deref(), Some("\"Zfuture\""));
        assert_eq!(c.newest_marker(), Some((3, 13)));
        let c = KindCounts::of(&[rec(b"UGx\x1ey", b"")]);
        assert_eq!(c.newest_marker(), Some((3, 12)));
        assert_eq!(KindCounts::default().newest_marker(), None);
    }
}
