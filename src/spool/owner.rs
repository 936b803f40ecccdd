//! Who a mailbox belongs to, for a backup: a **user** (the INBOX `user.<u>`, its
//! children and the delayed-delete copies `DELETED.user.<u>.*.<hex>`) or a top-level
//! **shared hierarchy** (`shared`, `shared.Announcements`, `Lists.x`, ... and their
//! `DELETED.<top>.*.<hex>` copies). Each owner is one archive on the backup host.
//!
//! On the wire an owner is named by an **owner id**: a user's id as Cyrus spells it
//! (`bob`, `bob@example.org`), or `%<top>[@<domain>]` for a shared hierarchy
//! (`%shared`, `%Lists@example.org`; `<top>` is the top-level name with a literal
//! `.`). Cyrus refuses a `%` at the start of a userid ("would conflict with backups
//! of shared mailboxes", `mboxname_policycheck` in `imap/mboxname.c`), so the two
//! can never collide.
//!
//! [`owner_keys`] is the ONE place that says which `mailboxes.db` keys belong to an
//! owner; listing (FMULTISTATUS), resolving (FMETA/FDATA) and any key-range walk of
//! the database use it.
#![forbid(unsafe_code)]

use crate::cyrus::mboxlist::{DB_DOMAINSEP, DB_HIERSEP, MailboxEntry, MbName, Mboxlist};

/// The first byte of a shared hierarchy's owner id.
pub const SHARED_MARK: char = '%';

/// The owner of a set of mailboxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A user: `localpart` and, with virtual domains, the domain.
    User {
        localpart: String,
        domain: Option<String>,
    },
    /// A top-level shared hierarchy: its top-level name (literal `.`, never `^`)
    /// and, with virtual domains, the domain.
    Shared { top: String, domain: Option<String> },
}

impl Owner {
    /// The owner an id names (`bob`, `bob@ex.org`, `%shared`, `%shared@ex.org`). The
    /// domain is split off at the last `@` only with virtual domains, as Cyrus does
    /// for userids. None for an id that names nothing (`%`, `%user`, `%a/b`, a top
    /// equal to the deleted prefix).
    pub fn parse(id: &str, virtdomains: bool, deletedprefix: &str) -> Option<Owner> {
        let split = |s: &str| -> (String, Option<String>) {
            if virtdomains && let Some((l, d)) = s.rsplit_once('@') {
                return (l.to_string(), Some(d.to_string()));
            }
            (s.to_string(), None)
        };
        match id.strip_prefix(SHARED_MARK) {
            Some(rest) => {
                let (top, domain) = split(rest);
                let bad = top.is_empty()
                    || top == "user"
                    || top == deletedprefix
                    || top.contains(['/', '\0', char::from(DB_HIERSEP), '!']);
                (!bad).then_some(Owner::Shared { top, domain })
            }
            None => {
                let (localpart, domain) = split(id);
                (!localpart.is_empty()).then_some(Owner::User { localpart, domain })
            }
        }
    }

    /// The owner id (inverse of [`Owner::parse`]).
    pub fn id(&self) -> String {
        let (mark, name, domain) = match self {
            Owner::User { localpart, domain } => ("", localpart, domain),
            Owner::Shared { top, domain } => ("%", top, domain),
        };
        match domain {
            Some(d) => format!("{mark}{name}@{d}"),
            None => format!("{mark}{name}"),
        }
    }

    /// Whether this is a shared hierarchy.
    pub fn is_shared(&self) -> bool {
        matches!(self, Owner::Shared { .. })
    }

    /// The owner's root mailbox: the user's INBOX, or the hierarchy's top-level
    /// mailbox (which may be missing or only an intermediate).
    pub fn root(&self) -> MbName {
        match self {
            Owner::User { localpart, domain } => MbName {
                domain: domain.clone(),
                localpart: Some(localpart.clone()),
                ..MbName::default()
            },
            Owner::Shared { top, domain } => MbName {
                domain: domain.clone(),
                boxes: vec![top.clone()],
                ..MbName::default()
            },
        }
    }

    /// Whether `mb` (a parsed mailbox name) belongs to this owner: the root, a
    /// child, or a delayed-delete copy of either.
    pub fn owns(&self, mb: &MbName) -> bool {
        match self {
            Owner::User { localpart, domain } => {
                mb.domain == *domain && mb.localpart.as_deref() == Some(localpart.as_str())
            }
            Owner::Shared { top, domain } => {
                mb.domain == *domain
                    && mb.localpart.is_none()
                    && mb.boxes.first().map(String::as_str) == Some(top.as_str())
            }
        }
    }
}

/// The `mailboxes.db` keys (dbnames: the record key without its leading `N`) that
/// hold one owner's mailboxes: three contiguous ranges in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerKeys {
    /// The root mailbox's key, exactly (`user` US `bob`, `shared`).
    pub root: Vec<u8>,
    /// Every key starting with this is a child (`user` US `bob` US).
    pub children: Vec<u8>,
    /// Every key starting with this is a delayed-delete copy of the root or a
    /// child (`DELETED` US `user` US `bob` US, `DELETED` US `shared` US), with the
    /// domain first (`ex.org` GS `DELETED` US ...) under virtual domains.
    pub deleted: Vec<u8>,
}

impl OwnerKeys {
    /// Whether a dbname is one of the owner's (in one of the three ranges).
    pub fn contains(&self, dbname: &[u8]) -> bool {
        dbname == self.root.as_slice()
            || dbname.starts_with(&self.children)
            || dbname.starts_with(&self.deleted)
    }
}

/// Which `mailboxes.db` keys belong to `owner` (see [`OwnerKeys`]). Every listing
/// of an owner's folders, and any key-range walk of the database, goes through
/// this function: change what an owner covers here and nowhere else.
pub fn owner_keys(owner: &Owner, deletedprefix: &str) -> OwnerKeys {
    let root_name = owner.root();
    let root = root_name.to_dbname(deletedprefix);
    let mut children = root.clone();
    children.push(DB_HIERSEP);
    // `<domain> GS DELETED US <rest of the root's dbname> US`, or without a domain
    // `DELETED US <root dbname> US` (`mbname_dbname` of a deleted name).
    let mut deleted = Vec::new();
    let rest = match &root_name.domain {
        Some(d) => {
            deleted.extend_from_slice(d.as_bytes());
            deleted.push(DB_DOMAINSEP);
            &root[d.len() + 1..]
        }
        None => &root[..],
    };
    deleted.extend_from_slice(deletedprefix.as_bytes());
    deleted.push(DB_HIERSEP);
    deleted.extend_from_slice(rest);
    deleted.push(DB_HIERSEP);
    OwnerKeys {
        root,
        children,
        deleted,
    }
}

/// The owner's entries in `FMULTISTATUS` order (`mboxlist_usermboxtree` with
/// `MBOXTREE_DELETED`): the root, its children in key order, then the delayed-delete
/// copies; tombstones and intermediates left out.
pub fn owner_entries<'a>(
    mboxlist: &'a Mboxlist,
    owner: &Owner,
) -> impl Iterator<Item = &'a MailboxEntry> + 'a {
    let keys = owner_keys(owner, &mboxlist.deletedprefix);
    let entries = mboxlist.entries();
    let root = with_prefix(entries, &keys.root)
        .iter()
        .filter(move |e| e.dbname == keys.root);
    let kids = with_prefix(entries, &keys.children).iter();
    let dels = with_prefix(entries, &keys.deleted).iter();
    root.chain(kids)
        .chain(dels)
        .filter(|e| !e.mbtype.is_deleted_tombstone() && !e.mbtype.is_intermediate())
}

/// The entries whose dbname starts with `prefix` (entries are in byte order of
/// their keys, so this is one binary search and a contiguous run).
fn with_prefix<'a>(entries: &'a [MailboxEntry], prefix: &[u8]) -> &'a [MailboxEntry] {
    let start = entries.partition_point(|e| e.dbname.as_slice() < prefix);
    let len = entries[start..]
        .iter()
        .take_while(|e| e.dbname.starts_with(prefix))
        .count();
    &entries[start..start + len]
}

/// Every user that owns a folder Cyrus holds, with the entry that gives its
/// partition, in two groups: first each user with a live INBOX, in mailboxes.db
/// order (upstream `USERS`, `mboxlist_alluser`); then each user **without** one
/// whose [`owner_entries`] are not empty, in key order of its first entry:
///
/// - sub-folders whose INBOX record is gone (`user.x.Sub` without `user.x`: made by
///   `ctl_mboxlist -u`, or left by a delete that failed half-way);
/// - a deleted user's delayed-delete tree (`DELETED.user.x.<hex>`,
///   `DELETED.user.x.Sub.<hex>`, after the user was deleted with
///   `delete_mode: delayed`), until `cyr_expire -D` removes it.
///
/// Such a user is backed up as itself (its archive, its folders as the owner's
/// folders); nothing Cyrus holds under `user.` or `DELETED.user.` is left unlisted.
/// For the second group the entry is the first live folder's.
pub fn user_owners(mboxlist: &Mboxlist) -> Vec<(String, &MailboxEntry)> {
    let dp = mboxlist.deletedprefix.as_str();
    let live = |e: &&MailboxEntry| !e.mbtype.is_deleted_tombstone() && !e.mbtype.is_intermediate();
    let mut out: Vec<(String, &MailboxEntry)> = Vec::new();
    let mut listed = std::collections::HashSet::new();
    for e in mboxlist.entries().iter().filter(live) {
        let Ok(m) = MbName::from_dbname(&e.dbname, dp) else {
            continue;
        };
        if m.deleted.is_none()
            && m.boxes.is_empty()
            && let Some(u) = m.userid()
        {
            listed.insert(u.clone());
            out.push((u, e));
        }
    }
    let mut orphans = Vec::new();
    for e in mboxlist.entries().iter().filter(live) {
        let Ok(m) = MbName::from_dbname(&e.dbname, dp) else {
            continue;
        };
        let (Some(localpart), Some(u)) = (m.localpart.clone(), m.userid()) else {
            continue;
        };
        if listed.contains(&u) {
            continue;
        }
        // owner_keys decides: the user is listed only if its own key ranges hold
        // this entry (so listing and backing up can never disagree).
        let owner = Owner::User {
            localpart,
            domain: m.domain.clone(),
        };
        if owner_entries(mboxlist, &owner).next().is_some() {
            listed.insert(u.clone());
            orphans.push((u, e));
        }
    }
    out.extend(orphans);
    out
}

/// One top-level shared hierarchy, as `SHARED` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedHierarchy {
    /// The owner id, `%<top>[@<domain>]`.
    pub owner: String,
    /// The UniqueID of the top-level entry (a mailbox, or the intermediate Cyrus
    /// keeps when the top-level mailbox was deleted with children below it); the
    /// first live mailbox's if the entry has none. The backup host keys the
    /// hierarchy's archive by it.
    pub uniqueid: String,
    /// The top-level mailbox's partition (else the first live mailbox's).
    pub partition: Option<String>,
}

/// Every top-level shared hierarchy that holds at least one live mailbox, in
/// mailboxes.db order; then, as [`user_owners`] does for users, every hierarchy
/// left with only delayed-delete copies (`DELETED.shared.<hex>`,
/// `DELETED.shared.News.<hex>` after the whole hierarchy was deleted), keyed by the
/// copy of its top-level mailbox (same UniqueID) or else its first copy.
pub fn shared_hierarchies(mboxlist: &Mboxlist) -> Vec<SharedHierarchy> {
    let dp = mboxlist.deletedprefix.as_str();
    let mut out: Vec<SharedHierarchy> = Vec::new();
    let mut current: Option<(Owner, Option<&MailboxEntry>)> = None;
    let mut flush = |cur: Option<(Owner, Option<&MailboxEntry>)>,
                     first_live: Option<&MailboxEntry>| {
        if let (Some((owner, top)), Some(live)) = (cur, first_live) {
            let uniqueid = top
                .and_then(|t| t.uniqueid.clone())
                .or_else(|| live.uniqueid.clone())
                .unwrap_or_default();
            let partition = top
                .and_then(|t| t.partition.clone())
                .or_else(|| live.partition.clone());
            out.push(SharedHierarchy {
                owner: owner.id(),
                uniqueid,
                partition,
            });
        }
    };
    let mut first_live: Option<&MailboxEntry> = None;
    for e in mboxlist.entries() {
        if e.mbtype.is_deleted_tombstone() {
            continue;
        }
        let Some((owner, mb)) = shared_owner(e, dp) else {
            continue;
        };
        if mb.deleted.is_some() {
            continue;
        }
        if current.as_ref().map(|(o, _)| o) != Some(&owner) {
            flush(current.take(), first_live.take());
            let is_top = mb.boxes.len() == 1;
            current = Some((owner, is_top.then_some(e)));
        }
        if first_live.is_none() && !e.mbtype.is_intermediate() {
            first_live = Some(e);
        }
    }
    flush(current.take(), first_live.take());
    out.extend(deleted_hierarchies(mboxlist, &out));
    out
}

/// The shared hierarchy an entry of mailboxes.db belongs to (its top-level name and
/// domain), with its parsed name; `None` for a user's folder, a name that does not
/// parse, or the delayed-delete area's own top.
fn shared_owner(e: &MailboxEntry, dp: &str) -> Option<(Owner, MbName)> {
    let mb = MbName::from_dbname(&e.dbname, dp).ok()?;
    if mb.localpart.is_some() {
        return None;
    }
    let top = mb.boxes.first()?;
    if top == "user" || top == dp {
        return None;
    }
    let owner = Owner::Shared {
        top: top.clone(),
        domain: mb.domain.clone(),
    };
    Some((owner, mb))
}

/// Shared hierarchies not in `listed` whose [`owner_entries`] are all delayed-delete
/// copies, in key order of their first copy.
fn deleted_hierarchies(mboxlist: &Mboxlist, listed: &[SharedHierarchy]) -> Vec<SharedHierarchy> {
    let dp = mboxlist.deletedprefix.as_str();
    let mut seen: std::collections::HashSet<String> =
        listed.iter().map(|h| h.owner.clone()).collect();
    let mut out = Vec::new();
    for e in mboxlist.entries() {
        if e.mbtype.is_deleted_tombstone() || e.mbtype.is_intermediate() {
            continue;
        }
        let Some((owner, mb)) = shared_owner(e, dp) else {
            continue;
        };
        if mb.deleted.is_none() {
            continue;
        }
        let id = owner.id();
        if seen.contains(&id) {
            continue;
        }
        // owner_keys decides, as for users: only what the owner's ranges hold.
        let entries: Vec<&MailboxEntry> = owner_entries(mboxlist, &owner).collect();
        let Some(first) = entries.first() else {
            continue;
        };
        let top_copy = entries
            .iter()
            .find(|c| MbName::from_dbname(&c.dbname, dp).is_ok_and(|m| m.boxes.len() == 1));
        let pick = top_copy.unwrap_or(first);
        seen.insert(id.clone());
        out.push(SharedHierarchy {
            owner: id,
            uniqueid: pick.uniqueid.clone().unwrap_or_default(),
            partition: pick.partition.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cyrus::mboxlist::parse_mboxlist;

    fn rec(k: &[u8], v: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (k.to_vec(), v.to_vec())
    }

    #[test]
    fn owner_ids_round_trip_and_refuse_nonsense() {
        for (id, vd) in [
            ("bob", false),
            ("bob@ex.org", true),
            ("%shared", false),
            ("%Lists@ex.org", true),
            ("%a.b", false),
        ] {
            assert_eq!(Owner::parse(id, vd, "DELETED").unwrap().id(), id);
        }
        assert_eq!(
            Owner::parse("%shared@ex.org", false, "DELETED"),
            Some(Owner::Shared {
                top: "shared@ex.org".into(),
                domain: None
            })
        );
        for bad in ["%", "%user", "%DELETED", "%a/b", ""] {
            assert_eq!(Owner::parse(bad, false, "DELETED"), None, "{bad}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn keys_cover_the_root_children_and_delayed_deletes() {
        let k = owner_keys(&Owner::parse("bob", false, "DELETED").unwrap(), "DELETED");
        assert_eq!(k.root, b"user\x1fbob");
        assert!(k.contains(b"user\x1fbob\x1fSent"));
        assert!(k.contains(b"DELETED\x1fuser\x1fbob\x1fOld\x1f5F3A1B2C"));
        assert!(!k.contains(b"user\x1fbobby"));
        assert!(!k.contains(b"DELETED\x1fuser\x1fbobby\x1f5F3A1B2C"));
        let k = owner_keys(&Owner::parse("%shared@ex.org", true, "DELETED").unwrap(), "DELETED");
        assert_eq!(k.root, b"ex.org\x1dshared");
        assert!(k.contains(b"ex.org\x1dshared\x1fNews"));
        assert!(k.contains(b"ex.org\x1dDELETED\x1fshared\x1fNews\x1f5F3A1B2C"));
        assert!(!k.contains(b"ex.org\x1dsharedX"));
        assert!(!k.contains(b"shared\x1fNews"));
    }

    #[test]
    #[rustfmt::skip]
    fn users_without_an_inbox_are_listed_after_the_others() {
        let recs = vec![
            rec(b"NDELETED\x1fuser\x1fann\x1f5F3A1B2C", b"%(T e I a1 P p1)"),
            rec(b"NDELETED\x1fuser\x1fann\x1fSub\x1f5F3A1B2C", b"%(T e I a2 P p1)"),
            rec(b"NDELETED\x1fuser\x1fbob\x1fOld\x1f5F3A1B2C", b"%(T e I b9 P p1)"),
            rec(b"NDELETED\x1fuser\x1ftomb\x1f5F3A1B2C", b"%(T ed I t1)"),
            rec(b"Nex.org\x1duser\x1fdan\x1fKid", b"%(T e I d1 P p2)"),
            rec(b"Nuser\x1fbob", b"%(T e I b1 P p1)"),
            rec(b"Nuser\x1fghost\x1fKid", b"%(T e I g1 P p3)"),
            rec(b"Nuser\x1fghost\x1fKid\x1fDeeper", b"%(T e I g2 P p3)"),
            rec(b"Nuser\x1fmid\x1fOnly", b"%(T i I m1)"),
        ];
        let l = parse_mboxlist(&recs, "DELETED").unwrap();
        let got: Vec<(String, Option<String>)> = user_owners(&l)
            .into_iter()
            .map(|(u, e)| (u, e.partition.clone()))
            .collect();
        let s = |u: &str, p: &str| (u.to_string(), Some(p.to_string()));
        // bob (live INBOX) first; then ann (deleted user), dan@ex.org and ghost
        // (sub-folders without an INBOX); not a tombstone, not an intermediate alone
        assert_eq!(got, [s("bob", "p1"), s("ann", "p1"), s("dan@ex.org", "p2"), s("ghost", "p3")]);
        let ghost = Owner::parse("ghost", false, "DELETED").unwrap();
        let names: Vec<&str> = owner_entries(&l, &ghost).map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["user.ghost.Kid", "user.ghost.Kid.Deeper"]);
        let ann = Owner::parse("ann", false, "DELETED").unwrap();
        assert_eq!(owner_entries(&l, &ann).count(), 2);
    }

    #[test]
    #[rustfmt::skip]
    fn shared_hierarchies_in_key_order() {
        let recs = vec![
            rec(b"NDELETED\x1fGone\x1f5F3A1B2C", b"%(T e I g1 P p1)"),
            rec(b"NDELETED\x1fGone\x1fSub\x1f5F3A1B2C", b"%(T e I g2 P p1)"),
            rec(b"NDELETED\x1fLists\x1fOld\x1f5F3A1B2C", b"%(T e I l9 P p2)"),
            rec(b"NDELETED\x1fNoTop\x1fKid\x1f5F3A1B2C", b"%(T e I n1 P p3)"),
            rec(b"NDELETED\x1fTomb\x1f5F3A1B2C", b"%(T ed I t9)"),
            rec(b"NLists", b"%(T e I l1 P p2)"),
            rec(b"NLists\x1fx", b"%(T e I l2 P p2)"),
            rec(b"NMid", b"%(T i I m0)"),
            rec(b"NMid\x1fa", b"%(T e I m1 P p1)"),
            rec(b"NOnlyTomb", b"%(T ed I t1)"),
            rec(b"Nex.org\x1dshared", b"%(T e I d1 P p1)"),
            rec(b"Nshared", b"%(T e I s1 P p1)"),
            rec(b"Nuser\x1fbob", b"%(T e I u1 P p1)"),
        ];
        let l = parse_mboxlist(&recs, "DELETED").unwrap();
        let got: Vec<(String, String, Option<String>)> = shared_hierarchies(&l)
            .into_iter()
            .map(|h| (h.owner, h.uniqueid, h.partition))
            .collect();
        let s = |a: &str, b: &str, c: Option<&str>| (a.to_string(), b.to_string(), c.map(str::to_string));
        assert_eq!(
            got,
            [
                s("%Lists", "l1", Some("p2")),
                s("%Mid", "m0", Some("p1")),
                s("%shared@ex.org", "d1", Some("p1")),
                s("%shared", "s1", Some("p1")),
                // only delayed-delete copies left: after the live ones
                s("%Gone", "g1", Some("p1")),
                s("%NoTop", "n1", Some("p3")),
            ]
        );
        let gone = Owner::parse("%Gone", false, "DELETED").unwrap();
        assert_eq!(owner_entries(&l, &gone).count(), 2);
        let mid = Owner::parse("%Mid", false, "DELETED").unwrap();
        let names: Vec<&str> = owner_entries(&l, &mid).map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["Mid.a"]);
    }
}
