//! Writing one run into the catalog: [`Catalog::begin_run`] opens one SQLite
//! transaction, the [`RunTx`] calls record what the run stored and saw, and
//! [`RunTx::commit`] makes it visible at once. Dropping a `RunTx` without committing
//! rolls everything back: a run that is not committed leaves no trace.
//!
//! Record history: each row of `records` is one version of one (folder, uid), valid
//! for runs `from_run <= run < to_run`. [`RunTx::folder_snapshot`] diffs the new
//! records against the current versions and writes only what changed, so an unchanged
//! message costs nothing per run.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use super::error::Result;
use super::{Catalog, CatalogError, DbContext, check_version, corrupt, misuse};
use crate::cyrus::Guid;
use crate::model::{EntryLoc, FolderState, RecordState, UserFile};

/// What a run is, known when its archive member(s) have been written and fsynced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunHeader {
    /// Run number; strictly greater than every committed run.
    pub run: u64,
    /// The user's name at this run (a renamed user keeps its archive).
    pub user: String,
    /// Unix seconds.
    pub started: i64,
    /// Unix seconds.
    pub finished: i64,
    /// The server pulled from (`host:port`).
    pub server: String,
    /// cyrvault version that made the run.
    pub tool_version: String,
    /// Where the run manifest (`runs/<run>.json`) is, if it was written.
    pub manifest: Option<EntryLoc>,
}

/// One gzip member of the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberRow {
    /// File offset of the member's first byte.
    pub offset: u64,
    /// Bytes in the file, gzip header and trailer included.
    pub compressed_len: u64,
    /// Tar bytes inside.
    pub uncompressed_len: u64,
    /// CRC-32 of the uncompressed data (the gzip trailer's), if the writer or reader
    /// reported it. Both the backup and reindex must give the same (or both `None`).
    pub crc32: Option<u32>,
}

/// A folder as named in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderRef<'a> {
    /// Cyrus mailbox UniqueID.
    pub uniqueid: &'a str,
    /// External name relative to the user (`INBOX`, `Lists/cyrus`).
    pub name: &'a str,
    /// Cyrus's internal name (`user.bob.Lists.cyrus`).
    pub internal_name: &'a str,
    /// The folder sits in Cyrus's delayed-delete area since this time
    /// ([`crate::model::FolderInRun::deleted_at`]).
    pub deleted_at: Option<i64>,
}

impl<'a> From<&'a crate::model::FolderInRun> for FolderRef<'a> {
    fn from(f: &'a crate::model::FolderInRun) -> Self {
        FolderRef {
            uniqueid: &f.uniqueid,
            name: &f.name,
            internal_name: &f.internal_name,
            deleted_at: f.deleted_at,
        }
    }
}

/// Where a folder snapshot's meta files are in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FolderMeta {
    /// `folders/<uniqueid>/<run>/cyrus.header`.
    pub header: Option<EntryLoc>,
    /// `folders/<uniqueid>/<run>/cyrus.index`.
    pub index: Option<EntryLoc>,
    /// `folders/<uniqueid>/<run>/cyrus.annotations`.
    pub annotations: Option<EntryLoc>,
    /// `folders/<uniqueid>/<run>/state.json`.
    pub state: Option<EntryLoc>,
}

/// One run being written. See the module docs.
pub struct RunTx<'c> {
    tx: Transaction<'c>,
    path: &'c Path,
    run: u64,
    /// Folders this run has spoken about; the rest are carried forward at commit.
    touched: HashSet<String>,
    /// A call failed part-way: the transaction may hold half a folder, so
    /// [`RunTx::commit`] refuses and the run rolls back.
    poisoned: bool,
}

impl Catalog {
    /// Open the transaction of run `h.run` (an IMMEDIATE transaction: the write lock is
    /// taken now, and a second writer waits [`super::BUSY_TIMEOUT`] then fails
    /// temporarily). The schema version is checked again inside the transaction.
    pub fn begin_run(&mut self, h: &RunHeader) -> Result<RunTx<'_>> {
        let path = self.path.as_path();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db("beginning a run", path)?;
        let v: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .db("reading the schema version", path)?;
        check_version(path, v)?;
        let last: Option<u64> = tx
            .query_row("SELECT max(run) FROM runs", [], |r| r.get(0))
            .db("reading the last run", path)?;
        if let Some(last) = last.filter(|&l| l >= h.run) {
            return Err(misuse(
                path,
                format!("run {} is not after the last committed run {last}", h.run),
            ));
        }
        let m = h.manifest;
        tx.execute(
            "INSERT INTO runs (run, started, finished, server, user, tool_version,
                 manifest_member, manifest_offset, manifest_size, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'complete')",
            params![
                h.run,
                h.started,
                h.finished,
                h.server,
                h.user,
                h.tool_version,
                m.map(|l| l.member_offset),
                m.map(|l| l.offset_in_member),
                m.map(|l| l.size),
            ],
        )
        .db("adding the run", path)?;
        Ok(RunTx {
            tx,
            path,
            run: h.run,
            touched: HashSet::new(),
            poisoned: false,
        })
    }
}

impl RunTx<'_> {
    /// The run being written.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// Record a gzip member written in this run.
    pub fn add_member(&mut self, m: &MemberRow) -> Result<()> {
        let r = self.add_member_inner(m);
        self.poison(r)
    }

    fn add_member_inner(&mut self, m: &MemberRow) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO members (offset, compressed_len, uncompressed_len, run, crc32)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    m.offset,
                    m.compressed_len,
                    m.uncompressed_len,
                    self.run,
                    m.crc32
                ])
            })
            .db("adding a member", self.path)?;
        Ok(())
    }

    /// Record where a message is stored. A GUID already in the catalog keeps its first
    /// location (the archive stores a message once; a second copy is never preferred).
    /// Returns whether the GUID was new.
    pub fn add_message(&mut self, guid: &Guid, loc: &EntryLoc) -> Result<bool> {
        let r = self.add_message_inner(guid, loc);
        self.poison(r)
    }

    fn add_message_inner(&mut self, guid: &Guid, loc: &EntryLoc) -> Result<bool> {
        let n = self
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO messages
                     (guid, size, member_offset, offset_in_member, first_run)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    &guid.0[..],
                    loc.size,
                    loc.member_offset,
                    loc.offset_in_member,
                    self.run
                ])
            })
            .db("adding a message", self.path)?;
        Ok(n == 1)
    }

    /// The folder changed (or is new): store its state, meta locations and records as
    /// of this run. Records are diffed against the current versions: an unchanged
    /// record costs nothing, a changed one closes the old version and opens a new one,
    /// a vanished uid is closed. A record whose GUID is not in `messages` (added by
    /// [`RunTx::add_message`] in this run or an earlier one) is refused with
    /// [`CatalogError::Unheld`], and the run cannot commit.
    pub fn folder_snapshot(
        &mut self,
        f: FolderRef<'_>,
        state: &FolderState,
        records: &[RecordState],
        meta: &FolderMeta,
    ) -> Result<()> {
        let r = self.folder_snapshot_inner(f, self.run, state, records, meta);
        self.poison(r)
    }

    /// As [`RunTx::folder_snapshot`], for a folder described by the entries an earlier
    /// run `snapshot_run` wrote (`folders/<uniqueid>/<snapshot_run>/...`) that this
    /// catalog does not carry: the first kept run after a prune removed that run.
    pub fn folder_snapshot_from(
        &mut self,
        f: FolderRef<'_>,
        snapshot_run: u64,
        state: &FolderState,
        records: &[RecordState],
        meta: &FolderMeta,
    ) -> Result<()> {
        let r = if snapshot_run > self.run {
            Err(misuse(
                self.path,
                format!(
                    "run {}: folder {} described by a later run {snapshot_run}",
                    self.run, f.uniqueid
                ),
            ))
        } else {
            self.folder_snapshot_inner(f, snapshot_run, state, records, meta)
        };
        self.poison(r)
    }

    fn folder_snapshot_inner(
        &mut self,
        f: FolderRef<'_>,
        snapshot_run: u64,
        state: &FolderState,
        records: &[RecordState],
        meta: &FolderMeta,
    ) -> Result<()> {
        self.touch(f.uniqueid)?;
        self.upsert_folder(f)?;
        self.insert_folder_run(f.uniqueid, snapshot_run, state, meta)?;
        self.diff_records(f.uniqueid, records)
    }

    /// The folder did not change since its last snapshot (same state): carry its
    /// records and meta forward, and follow a rename.
    pub fn folder_unchanged(&mut self, f: FolderRef<'_>) -> Result<()> {
        let r = self.folder_unchanged_inner(f);
        self.poison(r)
    }

    fn folder_unchanged_inner(&mut self, f: FolderRef<'_>) -> Result<()> {
        self.touch(f.uniqueid)?;
        self.carry_forward(f.uniqueid)?;
        self.upsert_folder(f)
    }

    /// The folder is gone from the server in this run: its name and records are closed
    /// at this run; its history stays.
    pub fn folder_gone(&mut self, uniqueid: &str) -> Result<()> {
        let r = self.folder_gone_inner(uniqueid);
        self.poison(r)
    }

    fn folder_gone_inner(&mut self, uniqueid: &str) -> Result<()> {
        self.touch(uniqueid)?;
        let live = self.folder_deleted_run(uniqueid)?;
        match live {
            None => {
                return Err(misuse(
                    self.path,
                    format!("folder {uniqueid} was never seen"),
                ));
            }
            Some(Some(d)) => {
                return Err(misuse(
                    self.path,
                    format!("folder {uniqueid} was already deleted in run {d}"),
                ));
            }
            Some(None) => {}
        }
        let run = self.run;
        let tx = &self.tx;
        (|| {
            tx.execute(
                "UPDATE folders SET deleted_run = ?2 WHERE uniqueid = ?1",
                params![uniqueid, run],
            )?;
            tx.execute(
                "UPDATE folder_names SET to_run = ?2 WHERE uniqueid = ?1 AND to_run IS NULL",
                params![uniqueid, run],
            )?;
            tx.execute(
                "UPDATE records SET to_run = ?2 WHERE uniqueid = ?1 AND to_run IS NULL",
                params![uniqueid, run],
            )
        })()
        .db("closing a deleted folder", self.path)?;
        Ok(())
    }

    /// The user-level files (seen, subscriptions, sieve) as of this run, with the run
    /// whose `user/<run>/` entries hold them and where each one is.
    pub fn user_state(&mut self, snapshot_run: u64, files: &[(UserFile, EntryLoc)]) -> Result<()> {
        let r = self.user_state_inner(snapshot_run, files);
        self.poison(r)
    }

    fn user_state_inner(
        &mut self,
        snapshot_run: u64,
        files: &[(UserFile, EntryLoc)],
    ) -> Result<()> {
        let mut st = self
            .tx
            .prepare_cached(
                "INSERT INTO user_files (run, snapshot_run, kind, name, active,
                     member_offset, offset_in_member, size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .db("adding user files", self.path)?;
        for (f, loc) in files {
            st.execute(params![
                self.run,
                snapshot_run,
                f.kind.as_str(),
                f.name,
                f.active,
                loc.member_offset,
                loc.offset_in_member,
                loc.size
            ])
            .db("adding user files", self.path)?;
        }
        Ok(())
    }

    /// Make the run visible. Live folders this run did not mention are carried forward
    /// unchanged, so a run that skipped a folder does not lose it.
    pub fn commit(mut self) -> Result<()> {
        if self.poisoned {
            return Err(misuse(
                self.path,
                format!("run {} had a failed call; it was rolled back", self.run),
            ));
        }
        let live: Vec<String> = {
            let mut st = self
                .tx
                .prepare("SELECT uniqueid FROM folders WHERE deleted_run IS NULL ORDER BY uniqueid")
                .db("listing live folders", self.path)?;
            let rows = st
                .query_map([], |r| r.get(0))
                .db("listing live folders", self.path)?;
            rows.collect::<rusqlite::Result<_>>()
                .db("listing live folders", self.path)?
        };
        for u in live {
            if !self.touched.contains(&u) {
                self.carry_forward(&u)?;
                self.tx
                    .execute(
                        "UPDATE folders SET last_seen_run = ?2 WHERE uniqueid = ?1",
                        params![u, self.run],
                    )
                    .db("carrying a folder forward", self.path)?;
            }
        }
        self.tx.commit().db("committing the run", self.path)
    }

    // -----------------------------------------------------------------------------

    fn poison<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    fn touch(&mut self, uniqueid: &str) -> Result<()> {
        if !self.touched.insert(uniqueid.to_string()) {
            return Err(misuse(
                self.path,
                format!("folder {uniqueid} given twice in run {}", self.run),
            ));
        }
        Ok(())
    }

    /// Insert or refresh the folder row and its name interval.
    fn upsert_folder(&mut self, f: FolderRef<'_>) -> Result<()> {
        let run = self.run;
        self.tx
            .execute(
                "INSERT INTO folders (uniqueid, first_run, last_seen_run) VALUES (?1, ?2, ?2)
                 ON CONFLICT (uniqueid) DO UPDATE
                     SET last_seen_run = excluded.last_seen_run, deleted_run = NULL",
                params![f.uniqueid, run],
            )
            .db("adding a folder", self.path)?;
        let cur: Option<(String, String, u64, Option<i64>)> = self
            .tx
            .query_row(
                "SELECT name, internal_name, from_run, deleted_at FROM folder_names
                 WHERE uniqueid = ?1 AND to_run IS NULL",
                [f.uniqueid],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .db("reading a folder name", self.path)?;
        if let Some((name, internal, from, deleted_at)) = &cur {
            if name == f.name && internal == f.internal_name && *deleted_at == f.deleted_at {
                return Ok(());
            }
            self.tx
                .execute(
                    "UPDATE folder_names SET to_run = ?3 WHERE uniqueid = ?1 AND from_run = ?2",
                    params![f.uniqueid, from, run],
                )
                .db("closing a folder name", self.path)?;
        }
        self.tx
            .execute(
                "INSERT INTO folder_names (uniqueid, name, internal_name, from_run, deleted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![f.uniqueid, f.name, f.internal_name, run, f.deleted_at],
            )
            .db("adding a folder name", self.path)?;
        Ok(())
    }

    fn insert_folder_run(
        &mut self,
        uniqueid: &str,
        snapshot_run: u64,
        state: &FolderState,
        meta: &FolderMeta,
    ) -> Result<()> {
        let json = serde_json::to_string(state)
            .map_err(|e| corrupt(self.path, format!("folder state of {uniqueid}: {e}")))?;
        let l = |o: Option<EntryLoc>| {
            (
                o.map(|l| l.member_offset),
                o.map(|l| l.offset_in_member),
                o.map(|l| l.size),
            )
        };
        let (hm, ho, hs) = l(meta.header);
        let (im, io, is) = l(meta.index);
        let (am, ao, as_) = l(meta.annotations);
        let (sm, so, ss) = l(meta.state);
        self.tx
            .prepare_cached(
                "INSERT INTO folder_runs (uniqueid, run, snapshot_run, uidvalidity,
                     highestmodseq, last_uid, exists_count, state,
                     header_member, header_offset, header_size,
                     index_member, index_offset, index_size,
                     annot_member, annot_offset, annot_size,
                     state_member, state_offset, state_size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                         ?15, ?16, ?17, ?18, ?19, ?20)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    uniqueid,
                    self.run,
                    snapshot_run,
                    state.uidvalidity,
                    state.highestmodseq,
                    state.last_uid,
                    state.exists,
                    json,
                    hm,
                    ho,
                    hs,
                    im,
                    io,
                    is,
                    am,
                    ao,
                    as_,
                    sm,
                    so,
                    ss
                ])
            })
            .db("adding a folder run", self.path)?;
        Ok(())
    }

    /// A folder's `deleted_run`: `None` if the catalog never saw it, `Some(None)` while
    /// it is live, `Some(Some(run))` once deleted.
    fn folder_deleted_run(&self, uniqueid: &str) -> Result<Option<Option<u64>>> {
        self.tx
            .query_row(
                "SELECT deleted_run FROM folders WHERE uniqueid = ?1",
                [uniqueid],
                |r| r.get(0),
            )
            .optional()
            .db("reading a folder", self.path)
    }

    /// Copy the folder's latest `folder_runs` row to this run (same snapshot_run).
    fn carry_forward(&mut self, uniqueid: &str) -> Result<()> {
        let deleted = self.folder_deleted_run(uniqueid)?;
        match deleted {
            None => {
                return Err(misuse(
                    self.path,
                    format!("folder {uniqueid} is unchanged but was never snapshotted"),
                ));
            }
            Some(Some(d)) => {
                return Err(misuse(
                    self.path,
                    format!("folder {uniqueid} is unchanged but was deleted in run {d}"),
                ));
            }
            Some(None) => {}
        }
        let n = self
            .tx
            .execute(
                "INSERT INTO folder_runs (uniqueid, run, snapshot_run, uidvalidity,
                     highestmodseq, last_uid, exists_count, state,
                     header_member, header_offset, header_size,
                     index_member, index_offset, index_size,
                     annot_member, annot_offset, annot_size,
                     state_member, state_offset, state_size)
                 SELECT uniqueid, ?2, snapshot_run, uidvalidity,
                     highestmodseq, last_uid, exists_count, state,
                     header_member, header_offset, header_size,
                     index_member, index_offset, index_size,
                     annot_member, annot_offset, annot_size,
                     state_member, state_offset, state_size
                 FROM folder_runs WHERE uniqueid = ?1
                 ORDER BY run DESC LIMIT 1",
                params![uniqueid, self.run],
            )
            .db("carrying a folder forward", self.path)?;
        if n != 1 {
            return Err(misuse(
                self.path,
                format!("folder {uniqueid} has no earlier snapshot to carry forward"),
            ));
        }
        Ok(())
    }

    fn diff_records(&mut self, uniqueid: &str, records: &[RecordState]) -> Result<()> {
        let path = self.path;
        // The current versions, by uid, as (uid, row id, fingerprint): 32 bytes each
        // instead of the whole record, so diffing a folder of 200,000 messages does
        // not hold a second copy of its records.
        let mut current: Vec<(u32, i64, [u8; 20])> = Vec::new();
        {
            let mut st = self
                .tx
                .prepare_cached(
                    "SELECT id, uid, guid, system_flags, keywords, internaldate, size,
                         modseq, last_updated, savedate
                     FROM records WHERE uniqueid = ?1 AND to_run IS NULL ORDER BY uid",
                )
                .db("reading current records", path)?;
            let mut rows = st.query([uniqueid]).db("reading current records", path)?;
            while let Some(r) = rows.next().db("reading current records", path)? {
                let id: i64 = r.get(0).db("reading current records", path)?;
                let rec = super::query::record_from_row(r, 1, path)?;
                current.push((rec.uid, id, fingerprint(&rec)));
            }
        }
        // Each current version is matched by at most one new record (uids are unique
        // among the new ones, checked below).
        let mut matched = vec![false; current.len()];
        let mut seen = HashSet::with_capacity(records.len());
        let mut close = self
            .tx
            .prepare_cached("UPDATE records SET to_run = ?2 WHERE id = ?1")
            .db("closing a record", path)?;
        let mut insert = self
            .tx
            .prepare_cached(
                "INSERT INTO records (uniqueid, uid, guid, system_flags, keywords,
                     internaldate, size, modseq, last_updated, savedate, from_run)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .db("adding a record", path)?;
        let mut held = self
            .tx
            .prepare_cached("SELECT 1 FROM messages WHERE guid = ?1")
            .db("checking a record's message", path)?;
        for rec in records {
            if !seen.insert(rec.uid) {
                return Err(misuse(
                    path,
                    format!("folder {uniqueid}: uid {} given twice", rec.uid),
                ));
            }
            if let Ok(i) = current.binary_search_by_key(&rec.uid, |c| c.0) {
                matched[i] = true;
                let (_, id, fp) = current[i];
                if fp == fingerprint(rec) {
                    continue;
                }
                close
                    .execute(params![id, self.run])
                    .db("closing a record", path)?;
            }
            // No record may name a message the archive does not hold (doc/catalog.md,
            // "the held rule"). Only rows written now are checked: every older row was
            // checked when it was written, and `messages` rows are never removed.
            let held = held
                .query_row([&rec.guid.0[..]], |_| Ok(()))
                .optional()
                .db("checking a record's message", path)?
                .is_some();
            if !held {
                return Err(CatalogError::Unheld {
                    path: path.to_path_buf(),
                    run: self.run,
                    uniqueid: uniqueid.to_string(),
                    uid: rec.uid,
                    guid: rec.guid,
                });
            }
            let kw = serde_json::to_string(&rec.keywords)
                .map_err(|e| corrupt(path, format!("keywords of uid {}: {e}", rec.uid)))?;
            insert
                .execute(params![
                    uniqueid,
                    rec.uid,
                    &rec.guid.0[..],
                    rec.system_flags,
                    kw,
                    rec.internaldate,
                    rec.size,
                    rec.modseq,
                    rec.last_updated,
                    rec.savedate,
                    self.run
                ])
                .db("adding a record", path)?;
        }
        for ((_, id, _), m) in current.iter().zip(&matched) {
            if !m {
                close
                    .execute(params![id, self.run])
                    .db("closing a record", path)?;
            }
        }
        Ok(())
    }
}

/// A digest of every field of a record version (what "the record changed" compares).
fn fingerprint(r: &RecordState) -> [u8; 20] {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(r.uid.to_le_bytes());
    h.update(r.guid.0);
    h.update(r.system_flags.to_le_bytes());
    h.update((r.keywords.len() as u64).to_le_bytes());
    for k in &r.keywords {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
    }
    h.update(r.internaldate.to_le_bytes());
    h.update(r.size.to_le_bytes());
    h.update(r.modseq.to_le_bytes());
    h.update(r.last_updated.to_le_bytes());
    h.update(r.savedate.to_le_bytes());
    h.finalize().into()
}

#[cfg(test)]
#[path = "write_tests.rs"]
mod tests;
