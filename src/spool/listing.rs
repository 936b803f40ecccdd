//! The mailbox list as one request needs it, read the way Cyrus reads it for one
//! user (`mboxlist_usermboxtree`): lookups and ordered walks of the owner's key
//! ranges of `mailboxes.db` under its shared lock (`db.rs`), never a copy or a
//! parse of the rest of the file. A user's cost is O(log n) record reads
//! whatever the server holds; only `USERS`/`PARTITIONS` walk all users, in
//! bounded chunks.
//!
//! **Which keys belong to an owner** is one function, `owner::owner_keys` (a
//! user's INBOX or a shared hierarchy's top, its children, its delayed-delete
//! copies: the ranges `mboxlist_mboxtree` in `imap/mboxlist.c` walks). Each `N`
//! record found brings its `I<uniqueid>` record (the name history) by one lookup.
//! No other record kind is needed: Cyrus reads an entry from `N` and `I` only
//! (`J`, `UG`, `A` are indexes for lookups we never make; `cyrus::mboxlist`).
//! The records are then parsed by the same `parse_mboxlist` as a whole file, so
//! an owner's entries are exactly the ones a whole-file parse gives for it.
//!
//! **Cache.** The last owner's parsed list is kept with the [`DbState`] it was
//! read from (device, inode, 64 header bytes); a later request takes the lock,
//! reads the header and reuses the list only if the state is the same, so it
//! can never serve a list older than the file. A DIRTY file is never cached.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::Spool;
use super::db::{DbState, LockedDb, with_db};
use super::error::{Result, SpoolError};
use super::owner::{SharedHierarchy, owner_entries, owner_keys};
use crate::cyrus::mboxlist::{
    DB_DOMAINSEP, DB_HIERSEP, MailboxEntry, MbName, Mboxlist, RecordKind, kind_of, parse_mboxlist,
};
use crate::cyrus::twoskip::KeyValue;

/// How many `mailboxes.db` records one lock hold of the all-users walk reads
/// before it lets Cyrus's writers in (Cyrus's own `foreach` lets go every 256).
pub(crate) const USERS_CHUNK: usize = 4096;

/// The last owner's list and the state of the file it came from.
#[derive(Debug, Default)]
pub(crate) struct ListCache {
    entry: Option<(String, DbState, Arc<Mboxlist>)>,
    /// The last state whose first and last records passed [`check_layout`].
    layout_ok: Option<DbState>,
}

/// Shared between clones of a [`Spool`] (each lookup validates it anyway).
pub(crate) type SharedListCache = Arc<Mutex<ListCache>>;

/// What one locked read of the owner's keys gave.
enum Read {
    /// The file is unchanged since the cached list was read.
    Cached(Arc<Mboxlist>),
    /// The owner's records, and the state to cache them under (None: DIRTY).
    Fresh(Vec<(Vec<u8>, Vec<u8>)>, Option<DbState>),
}

impl Spool {
    /// The entries of `mailboxes.db` that belong to the owner `id` (a userid or
    /// `%<top>`; every kind: tombstones and intermediates too), read by lookups
    /// and range walks under the file's shared lock; from the cache when the file
    /// is unchanged since. An id that names no owner has none (the file is not
    /// read).
    pub fn owner_mboxlist(&self, id: &str) -> Result<Arc<Mboxlist>> {
        let path = self.conf.mboxlist_db_path();
        let dp = self.conf.deletedprefix();
        let Some(owner) = self.ns.owner(id) else {
            let none = parse_mboxlist(&[], dp).map_err(|e| SpoolError::parse(&path, e))?;
            return Ok(Arc::new(none));
        };
        let keys = owner_keys(&owner, dp);
        self.reads.mailboxes_db();
        let read = with_db(&self.locker, &path, &self.reads.mailboxes_bytes, |db| {
            if let Ok(c) = self.list_cache.lock()
                && let Some((n, state, list)) = &c.entry
                && n == id
                && state == db.state()
            {
                self.reads.list_hit();
                return Ok(Read::Cached(Arc::clone(list)));
            }
            let checked = self
                .list_cache
                .lock()
                .is_ok_and(|c| c.layout_ok.as_ref() == Some(db.state()));
            if !checked {
                check_layout(db, dp)?;
                if let Ok(mut c) = self.list_cache.lock()
                    && !db.is_dirty()
                {
                    c.layout_ok = Some(db.state().clone());
                }
            }
            let mut recs = Vec::new();
            // The root and its children are adjacent keys (0x1F sorts below every
            // other byte that may follow the root's name): one walk reads both.
            let mut root = vec![b'N'];
            root.extend_from_slice(&keys.root);
            let mine = |k: &[u8]| {
                k.first() == Some(&b'N')
                    && (k[1..] == keys.root[..] || k[1..].starts_with(&keys.children))
            };
            db.walk_range(&root, mine, |k, v| recs.push((k.to_vec(), v.to_vec())))?;
            let mut deleted = vec![b'N'];
            deleted.extend_from_slice(&keys.deleted);
            db.prefix_into(&deleted, &mut recs)?;
            // The I record of each entry carries its name history.
            let names: Vec<(Vec<u8>, Vec<u8>)> = recs
                .iter()
                .filter(|(k, _)| k.first() == Some(&b'N'))
                .cloned()
                .collect();
            let by_name = parse_mboxlist(&names, dp).map_err(|e| SpoolError::parse(&path, e))?;
            for e in by_name.entries() {
                if let Some(id) = &e.uniqueid {
                    let mut key = vec![b'I'];
                    key.extend_from_slice(id.as_bytes());
                    if let Some(v) = db.get(&key)? {
                        recs.push((key, v));
                    }
                }
            }
            recs.sort();
            recs.dedup_by(|a, b| a.0 == b.0);
            Ok(Read::Fresh(
                recs,
                (!db.is_dirty()).then(|| db.state().clone()),
            ))
        })?
        .ok_or_else(|| SpoolError::NotFound {
            what: "mailboxes.db",
            name: path.display().to_string(),
        })?;
        let (recs, state) = match read {
            Read::Cached(list) => return Ok(list),
            Read::Fresh(recs, state) => (recs, state),
        };
        let list = Arc::new(parse_mboxlist(&recs, dp).map_err(|e| SpoolError::parse(&path, e))?);
        if let (Some(state), Ok(mut c)) = (state, self.list_cache.lock()) {
            c.entry = Some((id.to_string(), state, Arc::clone(&list)));
        }
        Ok(list)
    }

    /// Call `f(userid, entry)` for every user's INBOX entry in `mailboxes.db`
    /// order: live, not intermediate, not a delayed-delete copy (what upstream
    /// `USERS` lists, `mboxlist_alluser`); then for every user **without** a live
    /// INBOX that still owns folders (`owner::user_owners`, the same list from a
    /// whole-file parse: sub-folders whose INBOX record is gone, a deleted user's
    /// delayed-delete tree), with its first live entry. O(server) by nature, but
    /// streamed ([`Spool::walk_names`]): under the lock only INBOX-shaped keys,
    /// delayed-delete copies of users' folders and sub-folders whose INBOX key was
    /// not just seen are kept (an INBOX key sorts right before its sub-folders);
    /// each candidate is then confirmed by its owner's key ranges (`owner_keys`,
    /// [`Spool::owner_mboxlist`]), so what is listed is exactly what is backed up.
    pub fn each_user_inbox(&self, mut f: impl FnMut(String, &MailboxEntry)) -> Result<()> {
        let path = self.conf.mboxlist_db_path();
        let dp = self.conf.deletedprefix();
        let mut listed: HashSet<String> = HashSet::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut candidates: Vec<String> = Vec::new();
        let mut last_inbox: Vec<u8> = Vec::new();
        let keep = |dbname: &[u8]| {
            if inbox_shaped(dbname) {
                last_inbox.clear();
                last_inbox.extend_from_slice(dbname);
                return true;
            }
            match user_tree_of(dbname, dp) {
                Some(UserKey::Deleted) => true,
                Some(UserKey::Child(tree)) => tree != last_inbox.as_slice(),
                None => false,
            }
        };
        self.walk_names(keep, |recs| {
            let list = parse_mboxlist(&recs, dp).map_err(|e| SpoolError::parse(&path, e))?;
            for e in list.entries() {
                let Ok(m) = MbName::from_dbname(&e.dbname, dp) else {
                    continue;
                };
                let Some(user) = m.userid() else {
                    continue;
                };
                let live = !e.mbtype.is_deleted_tombstone() && !e.mbtype.is_intermediate();
                let inbox = m.deleted.is_none() && m.boxes.is_empty();
                if inbox && live {
                    listed.insert(user.clone());
                    f(user, e);
                } else if (inbox || live) && seen.insert(user.clone()) {
                    // a dead INBOX record (its folders may live on), or a folder
                    // whose INBOX key was not seen: confirmed below
                    candidates.push(user);
                }
            }
            Ok(())
        })?;
        for user in candidates {
            if listed.contains(&user) {
                continue;
            }
            let Some(owner) = self.ns.owner(&user) else {
                continue;
            };
            let list = self.owner_mboxlist(&user)?;
            if let Some(e) = owner_entries(&list, &owner).next() {
                f(user, e);
            }
        }
        Ok(())
    }

    /// Every top-level shared hierarchy with a live mailbox, then those left with
    /// only delayed-delete copies (`SHARED`), as `owner::shared_hierarchies` finds
    /// them in the whole list, from a streamed walk ([`Spool::walk_names`]) that
    /// keeps only the names outside `user` and `<deleted prefix>.user`: memory
    /// grows with the shared mailboxes, not the server.
    pub fn shared(&self) -> Result<Vec<SharedHierarchy>> {
        let path = self.conf.mboxlist_db_path();
        let dp = self.conf.deletedprefix().to_string();
        let mut kept = Vec::new();
        let not_users = |dbname: &[u8]| {
            let name = match dbname.iter().position(|&b| b == DB_DOMAINSEP) {
                Some(i) => &dbname[i + 1..],
                None => dbname,
            };
            let under =
                |top: &[u8]| name.starts_with(top) && name.get(top.len()) == Some(&DB_HIERSEP);
            // a hierarchy deleted as a whole is only `DELETED US <top> ...`
            let deleted_users = [dp.as_bytes(), b"\x1fuser"].concat();
            !under(b"user") && (!under(dp.as_bytes()) || !under(&deleted_users))
        };
        self.walk_names(not_users, |recs| {
            kept.extend(recs);
            Ok(())
        })?;
        let list = parse_mboxlist(&kept, &dp).map_err(|e| SpoolError::parse(&path, e))?;
        Ok(super::owner::shared_hierarchies(&list))
    }

    /// Walk the `N` records of the whole file in key order, in chunks of
    /// `users_chunk` (4096) records, each under its own lock hold (Cyrus's own
    /// `foreach` lets go every 256 records), keeping those whose dbname `keep`
    /// accepts; `on_chunk` gets each chunk's kept records after that lock is
    /// released. Memory is bounded by a chunk; like Cyrus's `foreach`, not one
    /// snapshot. The first chunk checks the file's layout (pre-3.6 is refused).
    fn walk_names(
        &self,
        mut keep: impl FnMut(&[u8]) -> bool,
        mut on_chunk: impl FnMut(Vec<KeyValue>) -> Result<()>,
    ) -> Result<()> {
        let path = self.conf.mboxlist_db_path();
        let dp = self.conf.deletedprefix();
        let mut resume: Option<Vec<u8>> = None;
        loop {
            self.reads.mailboxes_db();
            let chunk = with_db(&self.locker, &path, &self.reads.mailboxes_bytes, |db| {
                if resume.is_none() {
                    check_layout(db, dp)?;
                }
                let from = resume.clone().unwrap_or_else(|| b"N".to_vec());
                let mut seen = 0usize;
                let mut last = None;
                let mut more = false;
                let mut kept = Vec::new();
                db.walk_from(&from, |k, v| {
                    if k.first() != Some(&b'N') {
                        return false;
                    }
                    if Some(k) == resume.as_deref() {
                        return true;
                    }
                    if seen == self.users_chunk {
                        more = true;
                        return false;
                    }
                    seen += 1;
                    last = Some(k.to_vec());
                    if keep(&k[1..]) {
                        kept.push((k.to_vec(), v.to_vec()));
                    }
                    true
                })?;
                Ok((kept, last, more))
            })?
            .ok_or_else(|| SpoolError::NotFound {
                what: "mailboxes.db",
                name: path.display().to_string(),
            })?;
            let (kept, last, more) = chunk;
            on_chunk(kept)?;
            if !more {
                return Ok(());
            }
            resume = last;
        }
    }
}

/// Could this dbname be a user's INBOX (`[<domain> GS] user US <localpart>`)?
/// A cheap filter under the lock; the exact test runs on the parsed entry.
fn inbox_shaped(dbname: &[u8]) -> bool {
    let name = match dbname.iter().position(|&b| b == DB_DOMAINSEP) {
        Some(i) => &dbname[i + 1..],
        None => dbname,
    };
    name.starts_with(b"user\x1f") && name.iter().filter(|&&b| b == DB_HIERSEP).count() == 1
}

/// What a dbname that is not INBOX-shaped is to the all-users walk.
enum UserKey<'a> {
    /// A user's sub-folder; the INBOX key of its user (`[<domain> GS] user US <lp>`).
    Child(&'a [u8]),
    /// A delayed-delete copy of a user's folder (`[<domain> GS] <dp> US user US ...`).
    Deleted,
}

/// The [`UserKey`] of a dbname, None when it is not under `user` or `<dp>.user`.
fn user_tree_of<'a>(dbname: &'a [u8], dp: &str) -> Option<UserKey<'a>> {
    let start = dbname
        .iter()
        .position(|&b| b == DB_DOMAINSEP)
        .map_or(0, |i| i + 1);
    let name = &dbname[start..];
    if let Some(rest) = name.strip_prefix(b"user\x1f") {
        let lp = rest.iter().position(|&b| b == DB_HIERSEP)?;
        return Some(UserKey::Child(&dbname[..start + 5 + lp]));
    }
    let deleted = name
        .strip_prefix(dp.as_bytes())
        .is_some_and(|r| r.starts_with(b"\x1fuser\x1f"));
    deleted.then_some(UserKey::Deleted)
}

/// A pre-3.6 `mailboxes.db` (plain internal names as keys) has none of the keys
/// a range walk looks for, so it would look like a server without mailboxes.
/// Cyrus decides the layout by the first decisive record in key order (an `N` or
/// `I` record, the reverse-ACL or upgrade markers; `mboxlist_upgrade`): read the
/// records up to that one and let the same check a whole-file parse makes decide
/// (it refuses such a file and says how to upgrade it).
fn check_layout(db: &mut LockedDb<'_>, dp: &str) -> Result<()> {
    let mut head = Vec::new();
    db.walk_from(b"", |k, v| {
        head.push((k.to_vec(), v.to_vec()));
        let decisive = match kind_of(k) {
            RecordKind::Name | RecordKind::Id | RecordKind::UpgradeMarker => true,
            RecordKind::ReverseAcl => k.starts_with(b"AS\x1e"),
            _ => false,
        };
        !decisive
    })?;
    parse_mboxlist(&head, dp).map_err(|e| SpoolError::parse(db.path(), e))?;
    Ok(())
}
