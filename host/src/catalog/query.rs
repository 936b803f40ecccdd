//! Typed reads of the catalog, for the backup pipeline (what is already stored, what
//! is unchanged), restore and the admin commands (`list`, `show`, `ls`, `verify`).
//! Every answer is plain data; no SQL leaves this module.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::error::Result;
use super::write::FolderMeta;
use super::{Catalog, CatalogError, DbContext, corrupt};
use crate::cyrus::Guid;
use crate::model::{EntryLoc, FolderState, RecordState, UserFile, UserFileKind};

/// One committed run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunInfo {
    /// Run number.
    pub run: u64,
    /// Unix seconds.
    pub started: i64,
    /// Unix seconds.
    pub finished: i64,
    /// The server pulled from.
    pub server: String,
    /// The user's name at this run.
    pub user: String,
    /// cyrvault version that made the run.
    pub tool_version: String,
    /// Where `runs/<run>.json` is.
    pub manifest: Option<EntryLoc>,
}

/// A folder as it stood at one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FolderAt {
    pub uniqueid: String,
    /// External name at that run (for a deleted folder: its last name).
    pub name: String,
    pub internal_name: String,
    /// Deleted at or before that run; its content is readable at `last_run`. True too
    /// for a folder in Cyrus's delayed-delete area at that run (`deleted_at` set,
    /// `last_run` the asked run: its content was captured there).
    pub deleted: bool,
    /// The last run at which the folder existed on the server (up to the asked run).
    pub last_run: u64,
    /// When the user deleted it, if the backup saw it in Cyrus's delayed-delete area
    /// (`DELETED.*`); None for a live folder and for one that vanished between two
    /// runs without passing through that area.
    pub deleted_at: Option<i64>,
}

impl FolderAt {
    /// Whether the server still held the folder at the asked run (live, or in the
    /// delayed-delete area), as opposed to gone at or before it.
    pub fn present(&self, run: u64) -> bool {
        self.last_run == run
    }
}

/// A folder live at a run, with what the next run needs to skip it when unchanged:
/// its name there, its state and the run whose snapshot holds its meta files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveFolder {
    pub uniqueid: String,
    pub name: String,
    pub internal_name: String,
    /// The run whose `folders/<uniqueid>/<snapshot_run>/` entries hold its meta.
    pub snapshot_run: u64,
    pub state: FolderState,
    /// Set when the folder was in Cyrus's delayed-delete area at that run.
    pub deleted_at: Option<i64>,
}

/// One name a folder had, for runs `from_run <= run < to_run` (`None`: still).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameSpan {
    pub name: String,
    pub internal_name: String,
    pub from_run: u64,
    pub to_run: Option<u64>,
    /// Set while the folder sat in Cyrus's delayed-delete area: when it was deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
}

/// A folder's stored state at one run and where its meta files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderSnapshot {
    /// The run whose `folders/<uniqueid>/<snapshot_run>/` entries hold the meta.
    pub snapshot_run: u64,
    pub state: FolderState,
    pub meta: FolderMeta,
}

/// One version of one record that refers to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordUse {
    pub uniqueid: String,
    pub uid: u32,
    pub from_run: u64,
    pub to_run: Option<u64>,
}

/// A message stored in a member, and every record version that refers to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageUse {
    pub guid: Guid,
    pub uses: Vec<RecordUse>,
}

/// What kind of non-message entry a member holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetaEntry {
    /// `runs/<run>.json`.
    Manifest,
    /// `folders/<uniqueid>/<run>/cyrus.header`.
    FolderHeader(String),
    /// `folders/<uniqueid>/<run>/cyrus.index`.
    FolderIndex(String),
    /// `folders/<uniqueid>/<run>/cyrus.annotations`.
    FolderAnnotations(String),
    /// `folders/<uniqueid>/<run>/state.json`.
    FolderState(String),
    /// `user/<run>/...`: kind and name.
    UserFile(UserFileKind, String),
}

/// A meta entry stored in a member, and every run that relies on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetaUse {
    pub entry: MetaEntry,
    /// The run that wrote the entry.
    pub snapshot_run: u64,
    /// The runs whose state it describes, ascending.
    pub runs: Vec<u64>,
}

const RUN_COLS: &str = "run, started, finished, server, user, tool_version,
    manifest_member, manifest_offset, manifest_size";

fn run_from_row(r: &Row<'_>) -> rusqlite::Result<RunInfo> {
    Ok(RunInfo {
        run: r.get(0)?,
        started: r.get(1)?,
        finished: r.get(2)?,
        server: r.get(3)?,
        user: r.get(4)?,
        tool_version: r.get(5)?,
        manifest: loc(r.get(6)?, r.get(7)?, r.get(8)?),
    })
}

fn loc(m: Option<u64>, o: Option<u64>, s: Option<u64>) -> Option<EntryLoc> {
    Some(EntryLoc {
        member_offset: m?,
        offset_in_member: o?,
        size: s?,
    })
}

fn guid_from(bytes: &[u8], path: &Path) -> Result<Guid> {
    let a: [u8; 20] = bytes
        .try_into()
        .map_err(|_| corrupt(path, format!("a guid of {} bytes", bytes.len())))?;
    Ok(Guid(a))
}

/// A [`RecordState`] from columns `uid, guid, system_flags, keywords, internaldate,
/// size, modseq, last_updated, savedate` starting at column `at`.
pub(crate) fn record_from_row(r: &Row<'_>, at: usize, path: &Path) -> Result<RecordState> {
    let op = "reading a record";
    let guid: Vec<u8> = r.get(at + 1).db(op, path)?;
    let kw: String = r.get(at + 3).db(op, path)?;
    let keywords =
        serde_json::from_str(&kw).map_err(|e| corrupt(path, format!("keywords {kw:?}: {e}")))?;
    Ok(RecordState {
        uid: r.get(at).db(op, path)?,
        guid: guid_from(&guid, path)?,
        system_flags: r.get(at + 2).db(op, path)?,
        keywords,
        internaldate: r.get(at + 4).db(op, path)?,
        size: r.get(at + 5).db(op, path)?,
        modseq: r.get(at + 6).db(op, path)?,
        last_updated: r.get(at + 7).db(op, path)?,
        savedate: r.get(at + 8).db(op, path)?,
    })
}

impl Catalog {
    /// Every committed run, oldest first.
    pub fn runs(&self) -> Result<Vec<RunInfo>> {
        let op = "listing runs";
        let mut st = self
            .conn
            .prepare_cached(&format!("SELECT {RUN_COLS} FROM runs ORDER BY run"))
            .db(op, &self.path)?;
        let rows = st.query_map([], run_from_row).db(op, &self.path)?;
        rows.collect::<rusqlite::Result<_>>().db(op, &self.path)
    }

    /// The newest committed run.
    pub fn last_run(&self) -> Result<Option<RunInfo>> {
        self.conn
            .query_row(
                &format!("SELECT {RUN_COLS} FROM runs ORDER BY run DESC LIMIT 1"),
                [],
                run_from_row,
            )
            .optional()
            .db("reading the last run", &self.path)
    }

    /// The run that shows the mailbox as of `time` (Unix seconds): the newest run that
    /// started at or before it. `None` if every run is later.
    pub fn run_at(&self, time: i64) -> Result<Option<u64>> {
        self.conn
            .query_row(
                "SELECT run FROM runs WHERE started <= ?1 ORDER BY run DESC LIMIT 1",
                [time],
                |r| r.get(0),
            )
            .optional()
            .db("finding the run at a time", &self.path)
    }

    /// Folders at `run`: those that existed (`deleted == false`), those in Cyrus's
    /// delayed-delete area at that run (`deleted == true`, `deleted_at` set, content
    /// at `run` itself) and those deleted at or before it (`deleted == true`, with
    /// their last name), sorted by name. Deletion is read from the name intervals (an
    /// interval that ends with no successor), so a folder that came back (Cyrus keeps
    /// the UniqueID when a deleted mailbox is restored) shows as deleted exactly for
    /// the runs it was gone.
    pub fn folders_at(&self, run: u64) -> Result<Vec<FolderAt>> {
        let op = "listing folders";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT n.uniqueid, n.name, n.internal_name, n.deleted_at IS NOT NULL, ?1,
                     n.deleted_at
                 FROM folder_names n
                 WHERE n.from_run <= ?1 AND (n.to_run IS NULL OR n.to_run > ?1)
                 UNION ALL
                 SELECT n.uniqueid, n.name, n.internal_name, 1,
                     (SELECT max(run) FROM runs WHERE run < n.to_run), n.deleted_at
                 FROM folder_names n
                 WHERE n.to_run <= ?1
                   -- the interval ended by deletion, not by a rename
                   AND NOT EXISTS (SELECT 1 FROM folder_names s
                       WHERE s.uniqueid = n.uniqueid AND s.from_run = n.to_run)
                   -- the latest such end up to the asked run
                   AND NOT EXISTS (SELECT 1 FROM folder_names l
                       WHERE l.uniqueid = n.uniqueid AND l.from_run > n.from_run
                         AND l.from_run <= ?1)
                 ORDER BY 2, 1",
            )
            .db(op, &self.path)?;
        let rows = st
            .query_map([run], |r| {
                Ok(FolderAt {
                    uniqueid: r.get(0)?,
                    name: r.get(1)?,
                    internal_name: r.get(2)?,
                    deleted: r.get(3)?,
                    last_run: r.get::<_, Option<u64>>(4)?.unwrap_or(0),
                    deleted_at: r.get(5)?,
                })
            })
            .db(op, &self.path)?;
        rows.collect::<rusqlite::Result<_>>().db(op, &self.path)
    }

    /// Every folder live at `run` with its state there, in one indexed query (the
    /// backup's view of the last run: no query per folder).
    pub fn folders_live_at(&self, run: u64) -> Result<Vec<LiveFolder>> {
        let op = "listing live folders";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT r.uniqueid, n.name, n.internal_name, r.snapshot_run, r.state,
                     n.deleted_at
                 FROM folder_runs r JOIN folder_names n ON n.uniqueid = r.uniqueid
                     AND n.from_run <= ?1 AND (n.to_run IS NULL OR n.to_run > ?1)
                 WHERE r.run = ?1
                 ORDER BY r.uniqueid",
            )
            .db(op, &self.path)?;
        let mut rows = st.query([run]).db(op, &self.path)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().db(op, &self.path)? {
            let uniqueid: String = r.get(0).db(op, &self.path)?;
            let json: String = r.get(4).db(op, &self.path)?;
            out.push(LiveFolder {
                state: self.decode_state(&uniqueid, &json)?,
                name: r.get(1).db(op, &self.path)?,
                internal_name: r.get(2).db(op, &self.path)?,
                snapshot_run: r.get(3).db(op, &self.path)?,
                deleted_at: r.get(5).db(op, &self.path)?,
                uniqueid,
            });
        }
        Ok(out)
    }

    /// The end (offset + compressed length) of the member at `offset`, if the catalog
    /// has it.
    pub fn member_end(&self, offset: u64) -> Result<Option<u64>> {
        self.conn
            .query_row(
                "SELECT offset + compressed_len FROM members WHERE offset = ?1",
                [offset],
                |r| r.get(0),
            )
            .optional()
            .db("reading a member", &self.path)
    }

    /// The folder called `name` at `run`: a live one if there is one, else the most
    /// recently deleted one of that name.
    pub fn folder_by_name_at(&self, name: &str, run: u64) -> Result<Option<FolderAt>> {
        let mut found: Vec<FolderAt> = self
            .folders_at(run)?
            .into_iter()
            .filter(|f| f.name == name)
            .collect();
        found.sort_by_key(|f| (!f.deleted, f.last_run));
        Ok(found.pop())
    }

    /// Every name a folder has had, oldest first.
    pub fn folder_history(&self, uniqueid: &str) -> Result<Vec<NameSpan>> {
        let op = "reading folder names";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT name, internal_name, from_run, to_run, deleted_at FROM folder_names
                 WHERE uniqueid = ?1 ORDER BY from_run",
            )
            .db(op, &self.path)?;
        let rows = st
            .query_map([uniqueid], |r| {
                Ok(NameSpan {
                    name: r.get(0)?,
                    internal_name: r.get(1)?,
                    from_run: r.get(2)?,
                    to_run: r.get(3)?,
                    deleted_at: r.get(4)?,
                })
            })
            .db(op, &self.path)?;
        rows.collect::<rusqlite::Result<_>>().db(op, &self.path)
    }

    /// The folder's records as they were at `run`, by ascending uid. Expunged records
    /// whose files were still there are included (see [`RecordState::is_expunged`]).
    pub fn records_at(&self, uniqueid: &str, run: u64) -> Result<Vec<RecordState>> {
        let op = "reading records";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT uid, guid, system_flags, keywords, internaldate, size, modseq,
                     last_updated, savedate
                 FROM records
                 WHERE uniqueid = ?1 AND from_run <= ?2 AND (to_run IS NULL OR to_run > ?2)
                 ORDER BY uid",
            )
            .db(op, &self.path)?;
        let mut rows = st.query(params![uniqueid, run]).db(op, &self.path)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().db(op, &self.path)? {
            out.push(record_from_row(r, 0, &self.path)?);
        }
        Ok(out)
    }

    /// The folder's records as they were at `run`, by ascending uid, handed to `each`
    /// one at a time as SQLite reads them (the `records_by_folder_uid` index gives the
    /// order): `ls` of a folder of any size in constant memory. `each` may stop the
    /// walk by returning an error.
    pub fn each_record_at<E: From<CatalogError>>(
        &self,
        uniqueid: &str,
        run: u64,
        each: &mut dyn FnMut(RecordState) -> Result<(), E>,
    ) -> Result<(), E> {
        let op = "reading records";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT uid, guid, system_flags, keywords, internaldate, size, modseq,
                     last_updated, savedate
                 FROM records
                 WHERE uniqueid = ?1 AND from_run <= ?2 AND (to_run IS NULL OR to_run > ?2)
                 ORDER BY uid",
            )
            .db(op, &self.path)?;
        let mut rows = st.query(params![uniqueid, run]).db(op, &self.path)?;
        while let Some(r) = rows.next().db(op, &self.path)? {
            each(record_from_row(r, 0, &self.path)?)?;
        }
        Ok(())
    }

    /// How many records the folder had at `run` without the EXPUNGED bit, and their
    /// bytes: counted by SQLite, no record decoded.
    pub fn folder_totals_at(&self, uniqueid: &str, run: u64) -> Result<(u64, u64)> {
        self.conn
            .query_row(
                "SELECT count(*), coalesce(sum(size), 0) FROM records
                 WHERE uniqueid = ?1 AND from_run <= ?2 AND (to_run IS NULL OR to_run > ?2)
                   AND (system_flags & ?3) = 0",
                params![
                    uniqueid,
                    run,
                    i64::from(crate::cyrus::index::FLAG_INTERNAL_EXPUNGED)
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .db("counting records", &self.path)
    }

    /// Per run: the messages it stored first and their bytes (`show`), by one grouped
    /// scan of `messages`.
    pub fn messages_added_by_run(&self) -> Result<HashMap<u64, (u64, u64)>> {
        let op = "counting messages per run";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT first_run, count(*), sum(size) FROM messages GROUP BY first_run",
            )
            .db(op, &self.path)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
            .db(op, &self.path)?;
        rows.collect::<rusqlite::Result<_>>().db(op, &self.path)
    }

    /// Per run: the compressed bytes of the members it wrote (`show`).
    pub fn stored_bytes_by_run(&self) -> Result<HashMap<u64, u64>> {
        let op = "summing members per run";
        let mut st = self
            .conn
            .prepare_cached("SELECT run, sum(compressed_len) FROM members GROUP BY run")
            .db(op, &self.path)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .db(op, &self.path)?;
        rows.collect::<rusqlite::Result<_>>().db(op, &self.path)
    }

    /// Every folder's names over time, by UniqueID (`show`: one query, not one per
    /// folder).
    pub fn folder_histories(&self) -> Result<HashMap<String, Vec<NameSpan>>> {
        let op = "reading folder names";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT uniqueid, name, internal_name, from_run, to_run, deleted_at
                 FROM folder_names ORDER BY uniqueid, from_run",
            )
            .db(op, &self.path)?;
        let mut rows = st.query([]).db(op, &self.path)?;
        let mut out: HashMap<String, Vec<NameSpan>> = HashMap::new();
        while let Some(r) = rows.next().db(op, &self.path)? {
            let uniqueid: String = r.get(0).db(op, &self.path)?;
            out.entry(uniqueid).or_default().push(NameSpan {
                name: r.get(1).db(op, &self.path)?,
                internal_name: r.get(2).db(op, &self.path)?,
                from_run: r.get(3).db(op, &self.path)?,
                to_run: r.get(4).db(op, &self.path)?,
                deleted_at: r.get(5).db(op, &self.path)?,
            });
        }
        Ok(out)
    }

    /// One record of the folder as it was at `run` (`cat USER FOLDER UID --run N`).
    pub fn record_at(&self, uniqueid: &str, uid: u32, run: u64) -> Result<Option<RecordState>> {
        let op = "reading a record";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT uid, guid, system_flags, keywords, internaldate, size, modseq,
                     last_updated, savedate
                 FROM records
                 WHERE uniqueid = ?1 AND uid = ?2 AND from_run <= ?3
                   AND (to_run IS NULL OR to_run > ?3)",
            )
            .db(op, &self.path)?;
        let mut rows = st.query(params![uniqueid, uid, run]).db(op, &self.path)?;
        match rows.next().db(op, &self.path)? {
            Some(r) => Ok(Some(record_from_row(r, 0, &self.path)?)),
            None => Ok(None),
        }
    }

    /// Whether the archive holds the message.
    pub fn has_message(&self, guid: &Guid) -> Result<bool> {
        Ok(self.message_loc(guid)?.is_some())
    }

    /// Where the message is stored.
    pub fn message_loc(&self, guid: &Guid) -> Result<Option<EntryLoc>> {
        let op = "looking up a message";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT member_offset, offset_in_member, size FROM messages WHERE guid = ?1",
            )
            .db(op, &self.path)?;
        st.query_row([&guid.0[..]], |r| {
            Ok(EntryLoc {
                member_offset: r.get(0)?,
                offset_in_member: r.get(1)?,
                size: r.get(2)?,
            })
        })
        .optional()
        .db(op, &self.path)
    }

    /// The GUIDs of `guids` the archive does not hold yet, in input order without
    /// duplicates (what the incremental pull must fetch). One prepared lookup per GUID
    /// on the primary key: ~µs each, no SQL length limits.
    pub fn missing_guids(&self, guids: &[Guid]) -> Result<Vec<Guid>> {
        let op = "looking up messages";
        let mut st = self
            .conn
            .prepare_cached("SELECT 1 FROM messages WHERE guid = ?1")
            .db(op, &self.path)?;
        let mut asked = std::collections::HashSet::with_capacity(guids.len());
        let mut out = Vec::new();
        for g in guids {
            if !asked.insert(*g) {
                continue;
            }
            if !st.exists([&g.0[..]]).db(op, &self.path)? {
                out.push(*g);
            }
        }
        Ok(out)
    }

    /// The state of the folder's latest snapshot, to skip an unchanged folder; `None`
    /// for a folder never seen or deleted.
    pub fn folder_state_last(&self, uniqueid: &str) -> Result<Option<FolderState>> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT r.state FROM folder_runs r JOIN folders f USING (uniqueid)
                 WHERE r.uniqueid = ?1 AND f.deleted_run IS NULL
                 ORDER BY r.run DESC LIMIT 1",
                [uniqueid],
                |r| r.get(0),
            )
            .optional()
            .db("reading a folder state", &self.path)?;
        json.map(|j| self.decode_state(uniqueid, &j)).transpose()
    }

    /// The folder's stored state and meta locations at `run` (the snapshot it was
    /// carried from, if unchanged).
    pub fn folder_snapshot_at(&self, uniqueid: &str, run: u64) -> Result<Option<FolderSnapshot>> {
        type Row9 = (u64, String, [Option<u64>; 12]);
        let row: Option<Row9> = self
            .conn
            .query_row(
                "SELECT snapshot_run, state,
                     header_member, header_offset, header_size,
                     index_member, index_offset, index_size,
                     annot_member, annot_offset, annot_size,
                     state_member, state_offset, state_size
                 FROM folder_runs WHERE uniqueid = ?1 AND run = ?2",
                params![uniqueid, run],
                |r| {
                    let mut l = [None; 12];
                    for (i, v) in l.iter_mut().enumerate() {
                        *v = r.get(i + 2)?;
                    }
                    Ok((r.get(0)?, r.get(1)?, l))
                },
            )
            .optional()
            .db("reading a folder snapshot", &self.path)?;
        let Some((snapshot_run, json, l)) = row else {
            return Ok(None);
        };
        Ok(Some(FolderSnapshot {
            snapshot_run,
            state: self.decode_state(uniqueid, &json)?,
            meta: FolderMeta {
                header: loc(l[0], l[1], l[2]),
                index: loc(l[3], l[4], l[5]),
                annotations: loc(l[6], l[7], l[8]),
                state: loc(l[9], l[10], l[11]),
            },
        }))
    }

    /// The user-level files recorded for `run`, with the run whose entries hold them.
    pub fn user_files_at(&self, run: u64) -> Result<Vec<(u64, UserFile, EntryLoc)>> {
        let op = "reading user files";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT snapshot_run, kind, name, active, member_offset, offset_in_member, size
                 FROM user_files WHERE run = ?1 ORDER BY kind, name",
            )
            .db(op, &self.path)?;
        let mut rows = st.query([run]).db(op, &self.path)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().db(op, &self.path)? {
            let kind: String = r.get(1).db(op, &self.path)?;
            let kind = UserFileKind::from_name(&kind)
                .ok_or_else(|| corrupt(&self.path, format!("user file kind {kind:?}")))?;
            out.push((
                r.get(0).db(op, &self.path)?,
                UserFile {
                    kind,
                    name: r.get(2).db(op, &self.path)?,
                    active: r.get(3).db(op, &self.path)?,
                },
                EntryLoc {
                    member_offset: r.get(4).db(op, &self.path)?,
                    offset_in_member: r.get(5).db(op, &self.path)?,
                    size: r.get(6).db(op, &self.path)?,
                },
            ));
        }
        Ok(out)
    }

    /// The messages stored in the member at `offset`, each with every record version
    /// (folder, uid, runs) that refers to it: what a damaged member affects.
    pub fn messages_in_member(&self, offset: u64) -> Result<Vec<MessageUse>> {
        let op = "reading a member's messages";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT m.guid, r.uniqueid, r.uid, r.from_run, r.to_run
                 FROM messages m LEFT JOIN records r ON r.guid = m.guid
                 WHERE m.member_offset = ?1
                 ORDER BY m.offset_in_member, r.uniqueid, r.uid, r.from_run",
            )
            .db(op, &self.path)?;
        let mut rows = st.query([offset]).db(op, &self.path)?;
        let mut out: Vec<MessageUse> = Vec::new();
        while let Some(r) = rows.next().db(op, &self.path)? {
            let g: Vec<u8> = r.get(0).db(op, &self.path)?;
            let guid = guid_from(&g, &self.path)?;
            if out.last().is_none_or(|m| m.guid != guid) {
                out.push(MessageUse {
                    guid,
                    uses: Vec::new(),
                });
            }
            let uniqueid: Option<String> = r.get(1).db(op, &self.path)?;
            if let (Some(uniqueid), Some(last)) = (uniqueid, out.last_mut()) {
                last.uses.push(RecordUse {
                    uniqueid,
                    uid: r.get(2).db(op, &self.path)?,
                    from_run: r.get(3).db(op, &self.path)?,
                    to_run: r.get(4).db(op, &self.path)?,
                });
            }
        }
        Ok(out)
    }

    /// The manifests, folder snapshots and user files stored in the member at `offset`,
    /// each with the runs that rely on it: the rest of what a damaged member affects.
    pub fn meta_in_member(&self, offset: u64) -> Result<Vec<MetaUse>> {
        let op = "reading a member's meta entries";
        let mut out: Vec<MetaUse> = Vec::new();
        // (entry, snapshot_run, run) rows grouped by (entry, snapshot_run)
        let mut push = |entry: MetaEntry, snapshot_run: u64, run: u64| match out.last_mut() {
            Some(m) if m.entry == entry && m.snapshot_run == snapshot_run => m.runs.push(run),
            _ => out.push(MetaUse {
                entry,
                snapshot_run,
                runs: vec![run],
            }),
        };
        {
            let mut st = self
                .conn
                .prepare_cached("SELECT run FROM runs WHERE manifest_member = ?1 ORDER BY run")
                .db(op, &self.path)?;
            let mut rows = st.query([offset]).db(op, &self.path)?;
            while let Some(r) = rows.next().db(op, &self.path)? {
                let run: u64 = r.get(0).db(op, &self.path)?;
                push(MetaEntry::Manifest, run, run);
            }
        }
        type Make = fn(String) -> MetaEntry;
        let kinds: [(&str, Make); 4] = [
            ("header", MetaEntry::FolderHeader),
            ("index", MetaEntry::FolderIndex),
            ("annot", MetaEntry::FolderAnnotations),
            ("state", MetaEntry::FolderState),
        ];
        for (col, make) in kinds {
            let mut st = self
                .conn
                .prepare_cached(&format!(
                    "SELECT uniqueid, snapshot_run, run FROM folder_runs
                     WHERE {col}_member = ?1 ORDER BY uniqueid, snapshot_run, run"
                ))
                .db(op, &self.path)?;
            let mut rows = st.query([offset]).db(op, &self.path)?;
            while let Some(r) = rows.next().db(op, &self.path)? {
                push(
                    make(r.get(0).db(op, &self.path)?),
                    r.get(1).db(op, &self.path)?,
                    r.get(2).db(op, &self.path)?,
                );
            }
        }
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT kind, name, snapshot_run, run FROM user_files
                 WHERE member_offset = ?1 ORDER BY kind, name, snapshot_run, run",
            )
            .db(op, &self.path)?;
        let mut rows = st.query([offset]).db(op, &self.path)?;
        while let Some(r) = rows.next().db(op, &self.path)? {
            let kind: String = r.get(0).db(op, &self.path)?;
            let kind = UserFileKind::from_name(&kind)
                .ok_or_else(|| corrupt(&self.path, format!("user file kind {kind:?}")))?;
            push(
                MetaEntry::UserFile(kind, r.get(1).db(op, &self.path)?),
                r.get(2).db(op, &self.path)?,
                r.get(3).db(op, &self.path)?,
            );
        }
        Ok(out)
    }

    fn decode_state(&self, uniqueid: &str, json: &str) -> Result<FolderState> {
        serde_json::from_str(json)
            .map_err(|e| corrupt(&self.path, format!("folder state of {uniqueid}: {e}")))
    }
}
