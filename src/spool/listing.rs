//! The mailbox list as one request needs it, read the way Cyrus reads it for one
//! user (`mboxlist_usermboxtree`): lookups and ordered walks of the owner's key
//! ranges of `mailboxes.db` under its shared lock (`db.rs`), never a copy or a
//! parse of the rest of the file. A user's cost is O(log n) record reads
//! whatever the server holds; only `USERS`/`PARTITIONS` walk all users, in
//! bounded chunks.
//!
//! **Which keys belong to an owner** is one function, [`Spool::owner_ranges`]
//! (dbname ranges: the INBOX, its children, its delayed-delete copies), plus the
//! per-owner record kinds of [`owner_key_prefixes`] (Cyrus 3.13's `J` records,
//! keyed by userid). Each `N` record found brings its `I<uniqueid>` record (the
//! name history) by one lookup. The records are then parsed by the same
//! `parse_mboxlist` as a whole file, so a user's entries are exactly the ones a
//! whole-file parse gives for that user.
//!
//! **Cache.** The last owner's parsed list is kept with the [`DbState`] it was
//! read from (device, inode, 64 header bytes); a later request takes the lock,
//! reads the header and reuses the list only if the state is the same, so it
//! can never serve a list older than the file. A DIRTY file is never cached.
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};

use super::Spool;
use super::db::{DbState, LockedDb, with_db};
use crate::cyrus::mboxlist::parse_mboxlist;
use crate::cyrus::mboxlist::{DB_DOMAINSEP, DB_HIERSEP, MailboxEntry, MbName, Mboxlist};
use crate::error::{Error, Result};

/// Whose mailboxes a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// A user (`bob`, or `bob@example.com` with virtual domains).
    User(&'a str),
}

/// One run of mailbox names (dbnames: `mailboxes.db` keys without their `N`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRange {
    /// The dbname, or the prefix every dbname of the range starts with.
    pub dbname: Vec<u8>,
    /// Only `dbname` itself, not the names it prefixes.
    pub exact: bool,
}

impl NameRange {
    /// Whether `dbname` is in this range.
    pub fn contains(&self, dbname: &[u8]) -> bool {
        if self.exact {
            dbname == self.dbname.as_slice()
        } else {
            dbname.starts_with(&self.dbname)
        }
    }
}

/// Key prefixes of records other than `N`/`I` that belong to an owner: Cyrus
/// 3.13's JMAP-id records, `J<userid> RS <jmapid>` (`mboxlist_jmapid_to_key`).
pub fn owner_key_prefixes(owner: Owner<'_>) -> Vec<Vec<u8>> {
    let Owner::User(userid) = owner;
    let mut j = vec![b'J'];
    j.extend_from_slice(userid.as_bytes());
    j.push(0x1e);
    vec![j]
}

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
    /// The dbname ranges an owner's mailboxes occupy, in `FMULTISTATUS` order:
    /// the INBOX itself, its children (`user US bob US ...`), then its
    /// delayed-delete copies (`DELETED US user US bob US ...`, after the domain).
    /// A name that merely starts like the user's (`bobby`, `bob.x`) is in none.
    pub fn owner_ranges(&self, owner: Owner<'_>) -> Vec<NameRange> {
        let Owner::User(userid) = owner;
        let dp = self.conf.deletedprefix();
        let (localpart, domain) = self.ns.user_parts(userid);
        let inbox = MbName {
            domain: domain.clone(),
            localpart: Some(localpart),
            ..MbName::default()
        }
        .to_dbname(dp);
        let mut children = inbox.clone();
        children.push(DB_HIERSEP);
        // `<domain> GS DELETED US <rest of the INBOX dbname> US`.
        let mut deleted = Vec::new();
        let rest = match &domain {
            Some(d) => {
                deleted.extend_from_slice(d.as_bytes());
                deleted.push(DB_DOMAINSEP);
                &inbox[d.len() + 1..]
            }
            None => &inbox[..],
        };
        deleted.extend_from_slice(dp.as_bytes());
        deleted.push(DB_HIERSEP);
        deleted.extend_from_slice(rest);
        deleted.push(DB_HIERSEP);
        vec![
            NameRange {
                dbname: inbox,
                exact: true,
            },
            NameRange {
                dbname: children,
                exact: false,
            },
            NameRange {
                dbname: deleted,
                exact: false,
            },
        ]
    }

    /// The owner's entries of `mailboxes.db` (every kind: tombstones and
    /// intermediates too), read by lookups and range walks under the file's
    /// shared lock; from the cache when the file is unchanged since.
    pub fn owner_mboxlist(&self, owner: Owner<'_>) -> Result<Arc<Mboxlist>> {
        let Owner::User(name) = owner;
        let path = self.conf.mboxlist_db_path();
        self.reads.mailboxes_db();
        let dp = self.conf.deletedprefix();
        let read = with_db(&self.locker, &path, |db| {
            if let Ok(c) = self.list_cache.lock()
                && let Some((n, state, list)) = &c.entry
                && n == name
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
            let ranges = self.owner_ranges(owner);
            let mut i = 0;
            while let Some(r) = ranges.get(i) {
                let mut key = vec![b'N'];
                key.extend_from_slice(&r.dbname);
                // A name and its children are adjacent keys (0x1F sorts below every
                // other byte that may follow the name): one walk reads both.
                let children = ranges.get(i + 1).filter(|c| {
                    r.exact
                        && !c.exact
                        && c.dbname.strip_suffix(&[DB_HIERSEP]) == Some(&r.dbname[..])
                });
                if let Some(c) = children {
                    db.walk_from(&key, |k, v| {
                        let name = &k[1..];
                        let keep =
                            k.first() == Some(&b'N') && (r.contains(name) || c.contains(name));
                        if keep {
                            recs.push((k.to_vec(), v.to_vec()));
                        }
                        keep
                    })?;
                    i += 2;
                    continue;
                }
                if r.exact {
                    if let Some(v) = db.get(&key)? {
                        recs.push((key, v));
                    }
                } else {
                    db.prefix_into(&key, &mut recs)?;
                }
                i += 1;
            }
            // The I record of each entry carries its name history.
            let names: Vec<(Vec<u8>, Vec<u8>)> = recs
                .iter()
                .filter(|(k, _)| k.first() == Some(&b'N'))
                .cloned()
                .collect();
            let by_name = parse_mboxlist(&names, dp).map_err(|e| Error::parse(&path, e))?;
            for e in by_name.entries() {
                if let Some(id) = &e.uniqueid {
                    let mut key = vec![b'I'];
                    key.extend_from_slice(id.as_bytes());
                    if let Some(v) = db.get(&key)? {
                        recs.push((key, v));
                    }
                }
            }
            for p in owner_key_prefixes(owner) {
                db.prefix_into(&p, &mut recs)?;
            }
            recs.sort();
            recs.dedup_by(|a, b| a.0 == b.0);
            Ok(Read::Fresh(
                recs,
                (!db.is_dirty()).then(|| db.state().clone()),
            ))
        })?
        .ok_or_else(|| Error::NotFound {
            what: "mailboxes.db",
            name: path.display().to_string(),
        })?;
        let (recs, state) = match read {
            Read::Cached(list) => return Ok(list),
            Read::Fresh(recs, state) => (recs, state),
        };
        let list = Arc::new(parse_mboxlist(&recs, dp).map_err(|e| Error::parse(&path, e))?);
        if let (Some(state), Ok(mut c)) = (state, self.list_cache.lock()) {
            c.entry = Some((name.to_string(), state, Arc::clone(&list)));
        }
        Ok(list)
    }

    /// Call `f(userid, entry)` for every user's INBOX entry in `mailboxes.db`
    /// order: live, not intermediate, not a delayed-delete copy (what upstream
    /// `USERS` lists, `mboxlist_alluser`). O(server) by nature, but streamed: the
    /// file is walked in chunks of [`USERS_CHUNK`] records, each under its own
    /// lock hold, the chunk's records parsed after the lock is released; memory
    /// stays bounded by a chunk. Like Cyrus's `foreach`, not one snapshot.
    pub fn each_user_inbox(&self, mut f: impl FnMut(String, &MailboxEntry)) -> Result<()> {
        let path = self.conf.mboxlist_db_path();
        let dp = self.conf.deletedprefix();
        let mut resume: Option<Vec<u8>> = None;
        loop {
            self.reads.mailboxes_db();
            let chunk = with_db(&self.locker, &path, |db| {
                if resume.is_none() {
                    check_layout(db, dp)?;
                }
                let from = resume.clone().unwrap_or_else(|| b"N".to_vec());
                let mut seen = 0usize;
                let mut last = None;
                let mut more = false;
                let mut inboxes = Vec::new();
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
                    if inbox_shaped(&k[1..]) {
                        inboxes.push((k.to_vec(), v.to_vec()));
                    }
                    true
                })?;
                Ok((inboxes, last, more))
            })?
            .ok_or_else(|| Error::NotFound {
                what: "mailboxes.db",
                name: path.display().to_string(),
            })?;
            let (inboxes, last, more) = chunk;
            let list = parse_mboxlist(&inboxes, dp).map_err(|e| Error::parse(&path, e))?;
            for e in list.entries() {
                if e.mbtype.is_deleted_tombstone() || e.mbtype.is_intermediate() {
                    continue;
                }
                let Ok(m) = MbName::from_dbname(&e.dbname, dp) else {
                    continue;
                };
                if m.deleted.is_some() || !m.boxes.is_empty() {
                    continue;
                }
                if let Some(user) = m.userid() {
                    f(user, e);
                }
            }
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

/// A pre-3.6 `mailboxes.db` (plain internal names as keys) has none of the keys
/// a range walk looks for, so it would look like a server without mailboxes:
/// the first and last records go through the same layout check as a whole-file
/// parse (which refuses such a file and says how to upgrade it).
fn check_layout(db: &mut LockedDb<'_>, dp: &str) -> Result<()> {
    if let Some(ends) = db.ends()? {
        parse_mboxlist(&ends, dp).map_err(|e| Error::parse(db.path(), e))?;
    }
    Ok(())
}
