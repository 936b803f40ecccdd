//! Which folders a run backs up: the owner's `FMULTISTATUS` listing, every folder in
//! it, each either backed up or reported as failed by the run (issue 9: nothing is
//! set aside). An owner is a user (`bob`) or a top-level shared hierarchy (`%shared`,
//! doc/protocol.md 2.8).
//!
//! Delayed-delete folders (`DELETED.user.bob.Old.5F3A1B2C`, Cyrus's `delete_mode:
//! delayed`) are listed too and backed up as *deleted folders*: the name they had, the
//! time they were deleted (the hex stamp of the name) and their content as Cyrus still
//! holds it. `cyrvaultd` says which folders those are with `FDELETED` (asked only when
//! some listed name ends in an 8-digit hex stamp); against a stock `backupcyrusd` the
//! names are read as the standard namespace writes them.
#![forbid(unsafe_code)]

use std::collections::HashMap;

use super::BackupError;
use super::Result;
use super::ext::{FolderStats, stat3};
use super::run::proto;
use super::server::Server;

/// What a delayed-delete folder was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Deleted {
    /// When the user deleted it (Unix seconds).
    pub(super) at: i64,
    /// The name it had (`INBOX.Old`); the one recorded for it.
    pub(super) original: String,
    /// Cyrus's internal name now (`DELETED.user.bob.Old.5F3A1B2C`).
    pub(super) internal: String,
    /// `original` was worked out from the name, not told by the server: a name the
    /// archive already knows for the folder is better.
    pub(super) guessed: bool,
}

/// A folder as the server listed it.
pub(super) struct Listed {
    /// The name FMULTISTATUS gives (what FMETA/FDATA take).
    pub(super) name: String,
    pub(super) uniqueid: String,
    pub(super) stats: FolderStats,
    /// Set for a delayed-delete folder.
    pub(super) deleted: Option<Deleted>,
}

impl Listed {
    /// The name recorded for the folder: its own, or for a delayed-delete folder the
    /// one it had before.
    pub(super) fn record_name(&self) -> &str {
        match &self.deleted {
            Some(d) => &d.original,
            None => &self.name,
        }
    }

    /// Cyrus's internal name of the folder.
    pub(super) fn internal(&self, owner: &str) -> String {
        match &self.deleted {
            Some(d) => d.internal.clone(),
            None => internal_name(owner, &self.name),
        }
    }
}

/// An owner's folders, and the UniqueID its archive is keyed by.
pub(super) struct OwnerListing {
    pub(super) folders: Vec<Listed>,
    /// The root folder's UniqueID: the user's INBOX, or the hierarchy's top-level
    /// mailbox (the archive key, doc/backup.md "The vault").
    pub(super) root: String,
    /// The user-file listing (`USERFILES`, else `META`) that came with `FMULTISTATUS`
    /// in the same round trip; empty for a shared hierarchy (it has no user files).
    pub(super) user_lines: Vec<crate::protocol::client::NamedStat>,
    /// The quota file (`META <user> quota`) from the same round trip, when the server
    /// has `CAP QUOTA` and the owner is a user (empty: no quota root).
    pub(super) quota: Option<Vec<u8>>,
    /// The user has no live INBOX (its record is gone, or the whole user was deleted
    /// with delayed delete): `root` is a stand-in (see [`orphan_root`]), and an
    /// archive the vault already has for the user is kept instead.
    pub(super) orphan: bool,
}

/// `FMULTISTATUS` for `owner`, the delayed-delete folders told apart, the root found.
///
/// For a user, the user-file listing is pipelined with `FMULTISTATUS` (one round
/// trip: `USERFILES` when `userfiles`, else `META`; doc/protocol.md 2.12).
pub(super) fn list_owner(
    server: &mut Server,
    owner: &str,
    userfiles: bool,
) -> Result<OwnerListing> {
    let mut quota = None;
    let (listing, user_lines) = if owner.starts_with('%') {
        let l = server.client.fmultistatus(owner.as_bytes());
        (l.map_err(|e| proto(server, "FMULTISTATUS", e))?, Vec::new())
    } else {
        let mut rx = crate::protocol::client::Collect::default();
        let want_quota = server.has("QUOTA");
        let got = server
            .client
            .user_status(
                owner.as_bytes(),
                userfiles,
                want_quota.then_some(&mut rx as &mut dyn crate::protocol::client::Receiver),
            )
            .map_err(|e| proto(server, "FMULTISTATUS", e))?;
        if want_quota {
            quota = Some(
                rx.files
                    .into_iter()
                    .find(|(h, _)| h.name == b"quota")
                    .map(|(_, b)| b)
                    .unwrap_or_default(),
            );
        }
        got
    };
    let mut folders: Vec<Listed> = listing
        .into_iter()
        .map(|f| {
            let mut stats = FolderStats::default();
            for (n, s) in &f.files {
                stats.set(n, stat3(s));
            }
            Listed {
                name: String::from_utf8_lossy(&f.name).into_owned(),
                uniqueid: String::from_utf8_lossy(&f.uniqueid).into_owned(),
                stats,
                deleted: None,
            }
        })
        .collect();
    if server.has("FDELETED") {
        if folders.iter().any(|f| has_stamp(&f.name)) {
            let told = server
                .client
                .fdeleted(owner.as_bytes())
                .map_err(|e| proto(server, "FDELETED", e))?;
            let mut by_name: HashMap<String, Deleted> = told
                .into_iter()
                .map(|d| {
                    (
                        String::from_utf8_lossy(&d.name).into_owned(),
                        Deleted {
                            at: i64::try_from(d.time).unwrap_or(i64::MAX),
                            original: String::from_utf8_lossy(&d.original).into_owned(),
                            internal: String::from_utf8_lossy(&d.internal).into_owned(),
                            guessed: false,
                        },
                    )
                })
                .collect();
            for f in &mut folders {
                f.deleted = by_name.remove(&f.name);
            }
        }
    } else {
        for f in &mut folders {
            f.deleted = guess_deleted(owner, &f.name);
        }
    }
    let mut orphan = false;
    let root = match folders
        .iter()
        .find(|f| f.deleted.is_none() && is_root(owner, &f.name))
    {
        Some(f) => f.uniqueid.clone(),
        None => match shared_root(server, owner)? {
            Some(u) => u,
            None => {
                orphan = true;
                orphan_root(owner, &folders).ok_or_else(|| BackupError::NoSuchUser {
                    user: owner.to_string(),
                })?
            }
        },
    };
    Ok(OwnerListing {
        folders,
        root,
        user_lines,
        quota,
        orphan,
    })
}

/// The archive key of a user without a live INBOX that still owns folders (doc/backup.md
/// "Folders no INBOX owns"): the delayed-delete copy of its INBOX, which keeps the
/// INBOX's UniqueID (so a deleted user's tree lands in the archive its earlier backups
/// are in), else the first folder listed. None for a shared owner or no folder.
fn orphan_root(owner: &str, folders: &[Listed]) -> Option<String> {
    if owner.starts_with('%') {
        return None;
    }
    folders
        .iter()
        .find(|f| f.deleted.as_ref().is_some_and(|d| d.original == "INBOX"))
        .or_else(|| folders.first())
        .map(|f| f.uniqueid.clone())
}

/// A shared hierarchy whose top-level mailbox is not itself listed (Cyrus ≥ 3.8 keeps
/// an intermediate when the top-level mailbox is deleted with children below it): its
/// archive is keyed by the top-level entry's UniqueID, which `SHARED` gives.
fn shared_root(server: &mut Server, owner: &str) -> Result<Option<String>> {
    if !owner.starts_with('%') || !server.has("SHARED") {
        return Ok(None);
    }
    let all = server
        .client
        .shared()
        .map_err(|e| proto(server, "SHARED", e))?;
    Ok(all
        .into_iter()
        .find(|s| s.owner == owner.as_bytes())
        .map(|s| String::from_utf8_lossy(&s.uniqueid).into_owned())
        .filter(|u| !u.is_empty()))
}

/// Whether `name` is the owner's root folder: `INBOX` for a user, the top-level name
/// for a shared hierarchy (`%a.b` → `a.b` or, with `.` as separator, `a^b`).
fn is_root(owner: &str, name: &str) -> bool {
    match owner.strip_prefix('%') {
        Some(rest) => {
            let top = shared_top(rest);
            name == top || name == top.replace('.', "^")
        }
        None => name == "INBOX",
    }
}

/// The top-level name of a shared owner id's rest (`shared@ex.org` → `shared`).
fn shared_top(rest: &str) -> &str {
    rest.rsplit_once('@').map_or(rest, |(t, _)| t)
}

/// Whether a name ends in a separator and 8 hex digits, as every delayed-delete
/// name does (`%X` of the deletion time): then `FDELETED` is worth asking.
fn has_stamp(name: &str) -> bool {
    name.rsplit(['.', '/'])
        .next()
        .is_some_and(|h| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        && name.contains(['.', '/'])
}

/// A stock server's delayed-delete name, read as the standard namespace writes it:
/// `DELETED.user.bob.Old.5F3A1B2C` (or with `/`, possibly after one shared-prefix
/// level) for a user; for a shared owner `DELETED.shared.Old.5F3A1B2C`. Never an
/// `INBOX` name.
fn guess_deleted(owner: &str, name: &str) -> Option<Deleted> {
    if name == "INBOX" || name.starts_with("INBOX.") || name.starts_with("INBOX/") {
        return None;
    }
    let sep = if name.contains('/') { '/' } else { '.' };
    let parts: Vec<&str> = name.split(sep).collect();
    let stamp = parts.last()?;
    if stamp.len() < 8 || !stamp.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let at = i64::from_str_radix(stamp, 16).ok()?;
    // `DELETED user bob Old HEX` (maybe behind one shared-prefix level), or for a
    // shared owner `DELETED shared Old HEX`.
    let (start, boxes_from, original) = match owner.strip_prefix('%') {
        Some(rest) => {
            let top = shared_top(rest);
            let i = (0..2).find(|&i| {
                parts
                    .get(i + 1)
                    .is_some_and(|p| *p == top || *p == top.replace('.', "^"))
            })?;
            let boxes = parts.get(i + 1..parts.len() - 1)?;
            (i, i + 1, boxes.join(&sep.to_string()))
        }
        None => {
            let i = (0..2).find(|&i| parts.get(i + 1) == Some(&"user"))?;
            let boxes = parts.get(i + 3..parts.len() - 1)?;
            let mut o = String::from("INBOX");
            for b in boxes {
                o.push(sep);
                o.push_str(b);
            }
            (i, i + 3, o)
        }
    };
    if parts.len() < boxes_from + 1 {
        return None;
    }
    let comps: Vec<String> = parts[start..]
        .iter()
        .map(|c| {
            if sep == '/' {
                c.replace('.', "^")
            } else {
                c.to_string()
            }
        })
        .collect();
    let mut internal = domain_prefix(owner);
    internal.push_str(&comps.join("."));
    Some(Deleted {
        at,
        original,
        internal,
        guessed: true,
    })
}

/// `<domain>!` for an owner id with a domain, else empty.
fn domain_prefix(owner: &str) -> String {
    let id = owner.strip_prefix('%').unwrap_or(owner);
    match id.rsplit_once('@') {
        Some((_, d)) => format!("{d}!"),
        None => String::new(),
    }
}

/// Cyrus's internal name of a live folder from its external name: for a user
/// (standard or alternate namespace, `.` or `/` separator) `user.bob.Sent`,
/// `ex.org!user.bob`; for a shared owner `shared.News`, `ex.org!shared`.
pub(crate) fn internal_name(owner: &str, external: &str) -> String {
    // With `/` as separator a literal `.` is `^` internally; with `.` the name is
    // already written as Cyrus's internal form is (`^` for a literal dot).
    let slash = external.contains('/');
    let comps = |rest: &str| -> String {
        if slash {
            let c: Vec<String> = rest.split('/').map(|c| c.replace('.', "^")).collect();
            c.join(".")
        } else {
            rest.to_string()
        }
    };
    if let Some(rest) = owner.strip_prefix('%') {
        let top = shared_top(rest);
        let mut s = domain_prefix(owner);
        if external == top {
            s.push_str(&top.replace('.', "^"));
        } else {
            s.push_str(&comps(external));
        }
        return s;
    }
    let (local, domain) = match owner.split_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (owner, None),
    };
    let mut s = String::new();
    if let Some(d) = domain {
        s.push_str(d);
        s.push('!');
    }
    s.push_str("user.");
    s.push_str(&local.replace('.', "^"));
    if external != "INBOX" {
        let rest = external
            .strip_prefix("INBOX.")
            .or_else(|| external.strip_prefix("INBOX/"))
            .unwrap_or(external);
        s.push('.');
        s.push_str(&comps(rest));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_delayed_delete_names() {
        let d = guess_deleted("bob", "DELETED.user.bob.Old.5F3A1B2C").unwrap();
        assert_eq!(
            (d.at, d.original.as_str(), d.internal.as_str()),
            (0x5F3A1B2C, "INBOX.Old", "DELETED.user.bob.Old.5F3A1B2C")
        );
        let d = guess_deleted("bob", "DELETED/user/bob/a.b/5F3A1B2C").unwrap();
        assert_eq!(d.original, "INBOX/a.b");
        assert_eq!(d.internal, "DELETED.user.bob.a^b.5F3A1B2C");
        let d = guess_deleted("bob", "Shared Folders/DELETED/user/bob/X/5F3A1B2C").unwrap();
        assert_eq!(d.original, "INBOX/X");
        assert_eq!(d.internal, "DELETED.user.bob.X.5F3A1B2C");
        let d = guess_deleted("bob@ex.org", "DELETED.user.bob.Old.5F3A1B2C").unwrap();
        assert_eq!(d.internal, "ex.org!DELETED.user.bob.Old.5F3A1B2C");
        let d = guess_deleted("%shared", "DELETED.shared.News.5F3A1B2C").unwrap();
        assert_eq!(d.original, "shared.News");
        assert!(guess_deleted("bob", "INBOX").is_none());
        assert!(guess_deleted("bob", "INBOX.DELETED.user.x.5F3A1B2C").is_none());
        assert!(guess_deleted("bob", "Sent").is_none());
        assert!(guess_deleted("bob", "Archive.2023").is_none());
        assert!(has_stamp("INBOX/x/5F3A1B2C"));
        assert!(!has_stamp("5F3A1B2C"));
        assert!(!has_stamp("INBOX.Archive.2023"));
    }

    #[test]
    fn internal_names() {
        assert_eq!(internal_name("bob", "INBOX"), "user.bob");
        assert_eq!(
            internal_name("bob", "INBOX.Sent Items"),
            "user.bob.Sent Items"
        );
        assert_eq!(internal_name("bob", "INBOX/a.b/c"), "user.bob.a^b.c");
        assert_eq!(internal_name("bob", "INBOX/.."), "user.bob.^^");
        assert_eq!(
            internal_name("bob.s@ex.org", "Work"),
            "ex.org!user.bob^s.Work"
        );
        assert_eq!(internal_name("%shared", "shared"), "shared");
        assert_eq!(internal_name("%shared", "shared/a.b"), "shared.a^b");
        assert_eq!(internal_name("%a.b", "a.b"), "a^b");
        assert_eq!(
            internal_name("%shared@ex.org", "shared.X"),
            "ex.org!shared.X"
        );
        assert!(is_root("%a.b", "a^b") && is_root("%a.b", "a.b"));
        assert!(is_root("bob", "INBOX") && !is_root("%shared", "INBOX"));
    }
}
