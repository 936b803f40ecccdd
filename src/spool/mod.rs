//! One Cyrus server's files as seen from disk, read consistently under Cyrus's
//! own locks: the engine of the service. It knows nothing about the network;
//! `service` turns requests into calls here.
//!
//! * [`Spool::owner_mboxlist`] (`listing.rs` over `db.rs`): one owner's entries
//!   of `mailboxes.db`, by lookups and range walks of the live file under its
//!   shared lock, cached per file state; [`Spool::users`] and [`Spool::shared`]
//!   walk all names in bounded chunks; [`Spool::mboxlist`] copies and parses the
//!   whole file (inspection, tests).
//! * [`Spool::users`], [`Spool::folders`], [`Spool::resolve_folder`],
//!   [`Spool::stat_meta`]: what upstream `backupcyrusd` lists (USERS,
//!   FMULTISTATUS), with upstream's folder names (`names.rs`).
//! * [`Spool::open_folder_for`] (`folder.rs`, `records.rs`): namespace → name →
//!   index locks, what the request needs read and validated ([`Load`]: private
//!   metadata copies, spilled to a temporary file when large, or only the index
//!   records of the UIDs asked for), index and namespace locks dropped at once;
//!   only the shared name lock is kept while message files are *opened*, then
//!   [`OpenFolder::release`] drops it before anything is streamed.
//! * [`Spool::user_files`] / [`Spool::read_user_files`] (`user.rs`): seen, sub
//!   and the sieve directory under the user's namespace lock.
//!
//! Why and how, with the Cyrus sources: `doc/cyrus-files.md`, "reading a
//! mailbox consistently"; protocol contract: `doc/protocol.md` §5.
#![forbid(unsafe_code)]

mod annotations;
mod copy;
mod db;
pub mod detect;
mod error;
mod folder;
mod listing;
mod names;
pub mod owner;
mod records;
mod user;

use std::path::PathBuf;
use std::time::Duration;

pub use copy::{CopyReader, FileCopy, FileStat, MetaCopy, SPILL_AT};
pub use detect::Detection;
pub use error::{Damage, MailboxError, Result, SpoolError};
pub use folder::{Load, MessageFile, OpenFolder};
pub use owner::{Owner, OwnerKeys, SharedHierarchy, owner_keys};
pub use user::{SieveFile, UserFile, UserFiles, UserFilesCopy, sieve_stats};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cyrus::config::ImapdConf;
use crate::cyrus::mboxlist::{MailboxEntry, MbName, Mboxlist, parse_mboxlist};
use crate::cyrus::paths::{self, MetaFile};
use crate::cyrus::twoskip;
use crate::lock::{LockStatsSnapshot, Locker};
use names::Namespace;

/// One Cyrus server's spool, configuration and locks.
#[derive(Debug, Clone)]
pub struct Spool {
    conf: ImapdConf,
    locker: Locker,
    ns: Namespace,
    detection: Detection,
    /// The last owner's mailbox list (`listing.rs`).
    list_cache: listing::SharedListCache,
    reads: Arc<DbReads>,
    /// Metadata files above this many bytes are spilled, not held in memory.
    spill_at: u64,
    /// Records of mailboxes.db per lock hold of the all-users walk.
    users_chunk: usize,
}

/// How often the global databases were opened (for `STATUS`-style figures and
/// for tests that prove a request does not touch one).
#[derive(Debug, Default)]
pub(crate) struct DbReads {
    mailboxes: AtomicU64,
    annotations: AtomicU64,
    list_hits: AtomicU64,
    mailboxes_bytes: AtomicU64,
    annotations_bytes: AtomicU64,
    quota: AtomicU64,
    quota_bytes: AtomicU64,
}

impl DbReads {
    fn mailboxes_db(&self) {
        self.mailboxes.fetch_add(1, Ordering::Relaxed);
    }
    fn annotations_db(&self) {
        self.annotations.fetch_add(1, Ordering::Relaxed);
    }
    fn quota_db(&self) {
        self.quota.fetch_add(1, Ordering::Relaxed);
    }
    fn list_hit(&self) {
        self.list_hits.fetch_add(1, Ordering::Relaxed);
    }
}

/// [`Spool::db_reads`]: opens of `mailboxes.db`, `annotations.db` and the quota
/// database so far, and the bytes read from each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DbReadCounts {
    /// Lock-and-read passes over `mailboxes.db` (lookups, walk chunks, copies).
    pub mailboxes_db: u64,
    /// Lock-and-read passes over the global `annotations.db`.
    pub annotations_db: u64,
    /// Owner lists served from the cache (the file was unchanged since).
    pub list_cache_hits: u64,
    /// Bytes read from `mailboxes.db` (every `pread`, header included; a whole
    /// copy counts its size): what a request costs the server's disk and cache.
    pub mailboxes_db_bytes: u64,
    /// Bytes read from the global `annotations.db`, likewise.
    pub annotations_db_bytes: u64,
    /// Reads of the quota database for a user's quota roots ([`Spool::user_quota`]):
    /// one per call that found something to read (a lock-and-lookup pass over a
    /// twoskip `quotas.db`, a copy of a flat one, or the `quotalegacy` files of
    /// one user's roots).
    pub quota_db: u64,
    /// Bytes read from the quota database, likewise: a twoskip lookup counts every
    /// `pread` (header included), a flat copy its size, `quotalegacy` the files read.
    pub quota_db_bytes: u64,
}

/// Where one mailbox's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderPaths {
    /// `cyrus.header`.
    pub header: PathBuf,
    /// `cyrus.index`.
    pub index: PathBuf,
    /// `cyrus.cache`.
    pub cache: PathBuf,
    /// `cyrus.annotations` (per-message annotations).
    pub annotations: PathBuf,
    /// Message files of records without FLAG_INTERNAL_ARCHIVED.
    pub data_dir: PathBuf,
    /// Message files of archived records.
    pub archive_dir: PathBuf,
    /// The mailbox name lock: the uniqueid, or the name for legacy mailboxes.
    pub lockname: String,
}

/// One of an owner's folders, as FMULTISTATUS lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderRef {
    /// The owner id (`bob`, or `%shared` for a shared hierarchy; see `owner.rs`).
    pub userid: String,
    /// Upstream's external name relative to the owner (`INBOX`, `INBOX.Sent` or
    /// `Sent`, `DELETED.user.bob.Old.5F3A1B2C`; `shared.News` for a shared owner).
    pub external: String,
    /// For a delayed-delete (`DELETED.*`) mailbox: the external name it had before
    /// it was deleted (`INBOX.Old`, `Old`, `shared.News`).
    pub original: Option<String>,
    /// The mailboxes.db entry.
    pub entry: MailboxEntry,
    /// Its files; None if they cannot be located (no partition, unknown
    /// partition, no uniqueid).
    pub paths: Option<FolderPaths>,
}

impl FolderRef {
    /// Internal mailbox name.
    pub fn internal(&self) -> &str {
        &self.entry.name
    }

    /// Uniqueid from mailboxes.db (empty if it has none).
    pub fn uniqueid(&self) -> &str {
        self.entry.uniqueid.as_deref().unwrap_or("")
    }

    /// Whether this is a delayed-delete (`DELETED.*`) mailbox.
    pub fn is_deleted(&self) -> bool {
        self.entry.deleted.is_some()
    }
}

/// `stat` of a folder's metadata files (None: missing), taken without locks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaStat {
    /// `cyrus.header`.
    pub header: Option<FileStat>,
    /// `cyrus.index`.
    pub index: Option<FileStat>,
    /// `cyrus.annotations`.
    pub annotations: Option<FileStat>,
}

impl Spool {
    /// A spool for this configuration; every lock request waits at most
    /// `lock_timeout`. Refuses a `mboxlist_db` other than twoskip. Which Cyrus
    /// release wrote it, and so how its user namespace lock is named, is found
    /// out here (`detect.rs`).
    pub fn open(conf: ImapdConf, lock_timeout: Duration) -> Result<Spool> {
        conf.mboxlist_db()?;
        let locker = Locker::new(&conf, lock_timeout)?;
        let detection = detect::detect(&conf, &locker);
        Self::assemble(conf, locker, detection)
    }

    /// [`Spool::open`] for a release the caller knows (no detection).
    pub fn open_as(conf: ImapdConf, lock_timeout: Duration, detection: Detection) -> Result<Spool> {
        conf.mboxlist_db()?;
        let locker = Locker::new(&conf, lock_timeout)?;
        Self::assemble(conf, locker, detection)
    }

    fn assemble(conf: ImapdConf, locker: Locker, detection: Detection) -> Result<Spool> {
        let locker = locker.with_user_lock_naming(detection.conventions.user_lock);
        let ns = Namespace::new(&conf);
        Ok(Spool {
            conf,
            locker,
            ns,
            detection,
            list_cache: Default::default(),
            reads: Default::default(),
            spill_at: SPILL_AT,
            users_chunk: listing::USERS_CHUNK,
        })
    }

    /// What is known about the Cyrus release, and the conventions in force.
    pub fn detection(&self) -> &Detection {
        &self.detection
    }

    /// Walk all users ([`Spool::each_user_inbox`]) `records` records per lock
    /// hold (at least 1): smaller only to exercise the resumed walk (tests).
    pub fn with_users_chunk(mut self, records: usize) -> Spool {
        self.users_chunk = records.max(1);
        self
    }

    /// Spill metadata copies above `bytes` (at most [`SPILL_AT`]) to temporary
    /// files: lower only to exercise the spilled path (tests, benchmarks).
    pub fn with_spill_threshold(mut self, bytes: u64) -> Spool {
        self.spill_at = bytes.min(SPILL_AT);
        self
    }

    /// How many times this spool (and its clones) read `mailboxes.db`,
    /// `annotations.db` and the quota database, and how many bytes of each.
    pub fn db_reads(&self) -> DbReadCounts {
        DbReadCounts {
            mailboxes_db: self.reads.mailboxes.load(Ordering::Relaxed),
            annotations_db: self.reads.annotations.load(Ordering::Relaxed),
            list_cache_hits: self.reads.list_hits.load(Ordering::Relaxed),
            mailboxes_db_bytes: self.reads.mailboxes_bytes.load(Ordering::Relaxed),
            annotations_db_bytes: self.reads.annotations_bytes.load(Ordering::Relaxed),
            quota_db: self.reads.quota.load(Ordering::Relaxed),
            quota_db_bytes: self.reads.quota_bytes.load(Ordering::Relaxed),
        }
    }

    /// The configuration.
    pub fn conf(&self) -> &ImapdConf {
        &self.conf
    }

    /// The locker (its statistics cover every lock this spool took).
    pub fn locker(&self) -> &Locker {
        &self.locker
    }

    /// Lock hold statistics. The hold of a user namespace lock taken by
    /// [`Spool::open_folder`] is the whole critical section (first lock taken →
    /// index and namespace released).
    pub fn lock_stats(&self) -> LockStatsSnapshot {
        self.locker.stats()
    }

    /// All of `mailboxes.db`: shared lock with reopen-if-replaced, copy
    /// `[0, current_size)`, release, then parse the copy. O(server) in time and
    /// memory: for inspection and as the tests' oracle; the service reads an
    /// owner's keys only ([`Spool::owner_mboxlist`]).
    pub fn mboxlist(&self) -> Result<Mboxlist> {
        let path = self.conf.mboxlist_db_path();
        self.reads.mailboxes_db();
        let copy =
            copy::copy_twoskip(&self.locker, &path)?.ok_or_else(|| SpoolError::NotFound {
                what: "mailboxes.db",
                name: path.display().to_string(),
            })?;
        self.reads
            .mailboxes_bytes
            .fetch_add(copy.bytes.len() as u64, Ordering::Relaxed);
        let records = twoskip::read_all(&copy.bytes).map_err(|e| SpoolError::parse(&path, e))?;
        parse_mboxlist(&records, self.conf.deletedprefix()).map_err(|e| SpoolError::parse(&path, e))
    }

    /// The users `USERS` lists: owners of every live user INBOX in mailboxes.db
    /// order (upstream's `mboxlist_alluser`), then users that own folders without a
    /// live INBOX; a chunked walk ([`Spool::each_user_inbox`]).
    pub fn users(&self) -> Result<Vec<String>> {
        let mut users = Vec::new();
        self.each_user_inbox(|u, _| users.push(u))?;
        Ok(users)
    }

    /// An owner's folders in upstream FMULTISTATUS order (`mboxlist_usermboxtree`
    /// with `MBOXTREE_DELETED`): the INBOX (or a shared hierarchy's top-level
    /// mailbox), its children in key order, then the delayed-delete copies;
    /// tombstones and intermediates left out. `owner` is a userid or a shared
    /// hierarchy's `%<top>` (`owner.rs`); an id that names nothing has no folders.
    pub fn folders(&self, mboxlist: &Mboxlist, owner: &str) -> Vec<FolderRef> {
        let Some(o) = self.ns.owner(owner) else {
            return Vec::new();
        };
        owner::owner_entries(mboxlist, &o)
            .map(|e| self.folder_ref(&o, owner, e))
            .collect()
    }

    /// Every top-level shared hierarchy with a live mailbox (`SHARED`).
    pub fn shared_hierarchies(&self, mboxlist: &Mboxlist) -> Vec<SharedHierarchy> {
        owner::shared_hierarchies(mboxlist)
    }

    fn folder_ref(&self, owner: &Owner, id: &str, e: &MailboxEntry) -> FolderRef {
        let dp = self.conf.deletedprefix();
        let (external, original) = match MbName::from_dbname(&e.dbname, dp) {
            Ok(m) => {
                let original = m.deleted.map(|_| {
                    let live = MbName {
                        deleted: None,
                        ..m.clone()
                    };
                    self.ns.owner_extname(owner, &live)
                });
                (self.ns.owner_extname(owner, &m), original)
            }
            Err(_) => (e.name.clone(), None),
        };
        let paths = match self.folder_paths(e) {
            Ok(p) => Some(p),
            Err(err) => {
                log::debug!(target: "spool", "no paths for mailbox {}: {err}", e.name);
                None
            }
        };
        FolderRef {
            userid: id.to_string(),
            external,
            original,
            entry: e.clone(),
            paths,
        }
    }

    fn folder_paths(&self, e: &MailboxEntry) -> Result<FolderPaths> {
        let part = e.partition.as_deref().ok_or_else(|| {
            SpoolError::Refused(format!(
                "mailbox {} has no partition in mailboxes.db",
                e.name
            ))
        })?;
        let (name, id, legacy) = (&e.name, e.uniqueid.as_deref(), e.mbtype.is_legacy_dirs());
        let meta = |f| paths::mailbox_meta_path(&self.conf, part, name, id, legacy, f);
        Ok(FolderPaths {
            header: meta(MetaFile::Header)?,
            index: meta(MetaFile::Index)?,
            cache: meta(MetaFile::Cache)?,
            annotations: meta(MetaFile::Annotations)?,
            data_dir: paths::mailbox_data_dir(&self.conf, part, name, id, legacy)?,
            archive_dir: paths::mailbox_archive_dir(&self.conf, part, name, id, legacy)?,
            lockname: paths::mailbox_lockname(name, id, legacy)?,
        })
    }

    /// The owner's folder that `external` names, by the exact name
    /// [`Spool::folders`] gives, or as upstream resolves it (`mbname_from_extname`).
    /// Only the owner's own folders resolve (upstream would also open other
    /// users' and shared mailboxes); tombstones and intermediates never do.
    pub fn resolve_folder(
        &self,
        mboxlist: &Mboxlist,
        owner: &str,
        external: &str,
    ) -> Option<FolderRef> {
        let mut folders = self.folders(mboxlist, owner);
        if let Some(i) = folders.iter().position(|f| f.external == external) {
            return Some(folders.swap_remove(i));
        }
        let internal = self.internal_name(owner, external)?;
        folders.into_iter().find(|f| f.entry.name == internal)
    }

    /// The internal mailbox name upstream computes for `external` as seen by
    /// `owner` (`mbname_from_extname`), e.g. for FMETA's `NO no such folder
    /// <internal name>`; None if it cannot be parsed.
    pub fn internal_name(&self, owner: &str, external: &str) -> Option<String> {
        match self.ns.owner(owner) {
            Some(o) => self.ns.owner_intname(&o, external),
            None => self.ns.intname(external, owner),
        }
    }

    /// `stat` of the folder's header, index and annotations, without locks, as
    /// upstream's FMULTISTATUS does.
    pub fn stat_meta(&self, folder: &FolderRef) -> Result<MetaStat> {
        let Some(p) = &folder.paths else {
            return Ok(MetaStat::default());
        };
        Ok(MetaStat {
            header: FileStat::stat(&p.header)?,
            index: FileStat::stat(&p.index)?,
            annotations: FileStat::stat(&p.annotations)?,
        })
    }
}

/// [`Spool::users`] on an already read mailbox list.
pub fn users_of(mboxlist: &Mboxlist, deletedprefix: &str) -> Vec<String> {
    user_inboxes(mboxlist, deletedprefix)
        .map(|(user, _)| user)
        .collect()
}

/// Every user that owns a folder, with the entry giving its partition: users with
/// a live INBOX in mailboxes.db order, then users whose INBOX record is gone but who
/// still own folders or a delayed-delete tree ([`owner::user_owners`]).
pub fn user_inboxes<'a>(
    mboxlist: &'a Mboxlist,
    _deletedprefix: &'a str,
) -> impl Iterator<Item = (String, &'a MailboxEntry)> + 'a {
    owner::user_owners(mboxlist).into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cyrus::config::parse_imapd_conf;
    use std::path::Path;

    fn rec(k: &[u8], v: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (k.to_vec(), v.to_vec())
    }

    fn spool(extra: &str) -> Spool {
        let text = format!(
            "configdirectory: /nonexistent\npartition-p1: /nonexistent/p1\n\
             altnamespace: no\nunixhierarchysep: no\n{extra}"
        );
        Spool::open(
            parse_imapd_conf(&text, "t", None).unwrap(),
            Duration::from_secs(1),
        )
        .unwrap()
    }

    #[rustfmt::skip]
    fn list() -> Mboxlist {
        let recs = vec![
            rec(b"NDELETED\x1fuser\x1fbob\x1fOld\x1f5F3A1B2C", b"%(T e I u9 P p1)"),
            rec(b"NDELETED\x1fuser\x1fbobby\x1f5F3A1B2D", b"%(T e I u8 P p1)"),
            rec(b"Nex.org\x1dDELETED\x1fuser\x1fbob\x1fX\x1f5F3A1B2E", b"%(T e I u7 P p1)"),
            rec(b"Nex.org\x1duser\x1fbob", b"%(T e I u6 P p1)"),
            rec(b"Nshared", b"%(T e I u5 P p1)"),
            rec(b"Nuser\x1fbob", b"%(T e I u1 P p1)"),
            rec(b"Nuser\x1fbob\x1fA", b"%(T e I u2 P p1)"),
            rec(b"Nuser\x1fbob\x1fA\x1fB", b"%(T e I u3 P p1)"),
            rec(b"Nuser\x1fbob\x1fGone", b"%(T ed I u4)"),
            rec(b"Nuser\x1fbob\x1fMid", b"%(T ei I u10 P p1)"),
            rec(b"Nuser\x1fbobby", b"%(T e I u11 P p1)"),
            rec(b"Nuser\x1fghost\x1fKid", b"%(T e I u12 P p1)"),
        ];
        parse_mboxlist(&recs, "DELETED").unwrap()
    }

    #[test]
    fn users_are_live_inboxes_in_key_order() {
        let l = list();
        assert_eq!(
            users_of(&l, "DELETED"),
            ["bob@ex.org", "bob", "bobby", "ghost"]
        );
    }

    #[test]
    fn folders_in_fmultistatus_order() {
        let s = spool("");
        let l = list();
        let names: Vec<String> = s
            .folders(&l, "bob")
            .into_iter()
            .map(|f| f.external)
            .collect();
        assert_eq!(
            names,
            [
                "INBOX",
                "INBOX.A",
                "INBOX.A.B",
                "DELETED.user.bob.Old.5F3A1B2C"
            ]
        );
        let bobby: Vec<String> = s
            .folders(&l, "bobby")
            .into_iter()
            .map(|f| f.entry.name)
            .collect();
        assert_eq!(bobby, ["user.bobby", "DELETED.user.bobby.5F3A1B2D"]);
        // A delayed-delete copy says what it was called.
        let del = s.folders(&l, "bob").pop().unwrap();
        assert_eq!(del.original.as_deref(), Some("INBOX.Old"));
        // A shared hierarchy is an owner of its own.
        let shared: Vec<String> = s
            .folders(&l, "%shared")
            .into_iter()
            .map(|f| f.external)
            .collect();
        assert_eq!(shared, ["shared"]);
        assert!(s.folders(&l, "%user").is_empty());
        // A user without INBOX still lists its folders, as upstream does.
        assert_eq!(s.folders(&l, "ghost").len(), 1);
        let r = s
            .resolve_folder(&l, "bob", "DELETED.user.bob.Old.5F3A1B2C")
            .unwrap();
        assert_eq!(r.uniqueid(), "u9");
        assert!(s.resolve_folder(&l, "bob", "INBOX.Gone").is_none());
        assert!(s.resolve_folder(&l, "bob", "INBOX.Mid").is_none());
        assert!(s.resolve_folder(&l, "bob", "shared").is_none());
        assert_eq!(
            s.internal_name("bob", "INBOX.Nope").as_deref(),
            Some("user.bob.Nope")
        );
        let p = r.paths.unwrap();
        assert_eq!(p.data_dir, Path::new("/nonexistent/p1/uuid/u/9/u9"));
        assert_eq!(p.lockname, "u9");
    }

    #[test]
    fn folders_of_a_domain_user() {
        let s = spool("virtdomains: userid\n");
        let l = list();
        let f: Vec<String> = s
            .folders(&l, "bob@ex.org")
            .into_iter()
            .map(|f| f.entry.name)
            .collect();
        assert_eq!(f, ["ex.org!user.bob", "ex.org!DELETED.user.bob.X.5F3A1B2E"]);
    }
}
