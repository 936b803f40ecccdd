//! Retention in the catalog (`doc/retention.md`, `doc/catalog.md`): the events the
//! archive's `retention/<seq>.json` entries record (holds, releases, erasures,
//! prunes), the erased messages, the archive generation the catalog indexes, and the
//! reads a prune plans with (what the kept runs need, when each message left the
//! mailbox).
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::error::Result;
use super::{Catalog, DbContext, corrupt};
use crate::cyrus::Guid;
use crate::model::EntryLoc;
use crate::model::retention::{Erasure, EventKind, RetentionEvent};

/// Cyrus's EXPUNGED system flag bit (`FLAG_INTERNAL_EXPUNGED`), as SQL sees it.
const EXPUNGED_BIT: i64 = 1 << 31;

/// One retention event as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionRow {
    pub seq: u64,
    /// `hold`, `release`, `erase` or `prune`.
    pub kind: String,
    /// Unix seconds.
    pub at: i64,
    pub reason: String,
    /// A hold's end (`None`: until released).
    pub until: Option<i64>,
    /// A release: the hold it ends (`None`: all).
    pub releases: Option<u64>,
    /// Erase/prune: the last run at the time.
    pub up_to_run: Option<u64>,
    /// The event as JSON, without its list of erased messages.
    pub event: String,
    /// Where `retention/<seq>.json` is in the archive.
    pub loc: EntryLoc,
}

/// One message as a prune sees it: whether a folder the server still holds shows it
/// now, and if not, the run that first no longer showed it (its expunge or its folder's
/// removal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLife {
    pub guid: Guid,
    pub size: u64,
    /// A current, visible (not expunged) record names it: in a live folder, or in one
    /// Cyrus still holds in its delayed-delete area (the next backup would capture it
    /// again, so it is not expired before Cyrus removes it).
    pub live: bool,
    /// Not live: the first run that no longer showed it visibly (for a message never
    /// visible, the run that first stored a record of it).
    pub gone_run: Option<u64>,
}

/// A folder gone from the server: the run that found it gone, and when the user deleted
/// it if a run saw it in Cyrus's delayed-delete area first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedFolder {
    pub uniqueid: String,
    pub name: String,
    pub deleted_run: u64,
    pub deleted_at: Option<i64>,
}

/// What a set of kept runs needs from the archive.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// Folder snapshots `(uniqueid, snapshot_run)` some kept run describes a folder with.
    pub snapshots: HashSet<(String, u64)>,
    /// User files `(snapshot_run, kind, name)` some kept run uses.
    pub user_files: HashSet<(u64, String, String)>,
    /// Messages some kept run's records name.
    pub messages: HashSet<Guid>,
}

impl Catalog {
    /// Whether the retention tables exist (a read-only catalog of schema 1 has none).
    fn has_retention(&self) -> Result<bool> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'
                 AND name = 'retention_events'",
                [],
                |r| r.get(0),
            )
            .db("reading the schema", &self.path)?;
        Ok(n > 0)
    }

    /// Record an event read from (or just written to) the archive at `loc`, with its
    /// erased messages, in one transaction. An event already present is refused.
    pub fn add_retention_event(&mut self, ev: &RetentionEvent, loc: &EntryLoc) -> Result<()> {
        let op = "adding a retention event";
        let tx = self.conn.transaction().db(op, &self.path)?;
        tx.execute(
            "INSERT INTO retention_events (seq, kind, at, reason, until, releases, up_to_run,
                 event, member_offset, offset_in_member, size)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                ev.seq,
                ev.kind.as_str(),
                ev.at,
                ev.reason,
                ev.until,
                ev.releases,
                ev.up_to_run,
                ev.summary_json(),
                loc.member_offset,
                loc.offset_in_member,
                loc.size
            ],
        )
        .db(op, &self.path)?;
        {
            // A message erased again (stored anew by a later backup, then erased
            // again) keeps the latest erasure, which covers every run before it.
            let mut st = tx
                .prepare(
                    "INSERT OR REPLACE INTO erased_messages (guid, size, seq, up_to_run,
                         permanent)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .db(op, &self.path)?;
            for m in &ev.erased {
                st.execute(params![
                    &m.guid.0[..],
                    m.size,
                    ev.seq,
                    ev.up_to_run.unwrap_or(0),
                    ev.kind == EventKind::Erase
                ])
                .db(op, &self.path)?;
            }
        }
        tx.commit().db(op, &self.path)
    }

    /// Every retention event, oldest first.
    pub fn retention_events(&self) -> Result<Vec<RetentionRow>> {
        if !self.has_retention()? {
            return Ok(Vec::new());
        }
        let op = "listing retention events";
        let mut st = self
            .conn
            .prepare(
                "SELECT seq, kind, at, reason, until, releases, up_to_run, event,
                     member_offset, offset_in_member, size
                 FROM retention_events ORDER BY seq",
            )
            .db(op, &self.path)?;
        let rows = st
            .query_map([], |r| {
                Ok(RetentionRow {
                    seq: r.get(0)?,
                    kind: r.get(1)?,
                    at: r.get(2)?,
                    reason: r.get(3)?,
                    until: r.get(4)?,
                    releases: r.get(5)?,
                    up_to_run: r.get(6)?,
                    event: r.get(7)?,
                    loc: EntryLoc {
                        member_offset: r.get(8)?,
                        offset_in_member: r.get(9)?,
                        size: r.get(10)?,
                    },
                })
            })
            .db(op, &self.path)?;
        rows.collect::<rusqlite::Result<_>>().db(op, &self.path)
    }

    /// The erased messages and how (see [`Erasure`]).
    pub fn erased(&self) -> Result<HashMap<Guid, Erasure>> {
        if !self.has_retention()? {
            return Ok(HashMap::new());
        }
        let op = "listing erased messages";
        let mut st = self
            .conn
            .prepare("SELECT guid, size, up_to_run, permanent FROM erased_messages")
            .db(op, &self.path)?;
        let mut rows = st.query([]).db(op, &self.path)?;
        let mut out = HashMap::new();
        while let Some(r) = rows.next().db(op, &self.path)? {
            let g: Vec<u8> = r.get(0).db(op, &self.path)?;
            let g: [u8; 20] = g
                .as_slice()
                .try_into()
                .map_err(|_| corrupt(&self.path, "an erased guid that is not 20 bytes"))?;
            out.insert(
                Guid(g),
                Erasure {
                    size: r.get(1).db(op, &self.path)?,
                    up_to_run: r.get(2).db(op, &self.path)?,
                    permanent: r.get(3).db(op, &self.path)?,
                },
            );
        }
        Ok(out)
    }

    /// The generation of the archive this catalog indexes (the line of its
    /// `cyrvault/GENERATION` entry), `None` for an archive never rewritten.
    pub fn archive_generation(&self) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'archive_generation'",
                [],
                |r| r.get(0),
            )
            .optional()
            .db("reading the archive generation", &self.path)
    }

    /// Record the generation of the archive this catalog indexes.
    pub fn set_archive_generation(&mut self, generation: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('archive_generation', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [generation],
            )
            .db("writing the archive generation", &self.path)?;
        Ok(())
    }

    /// What the runs `kept` need, leaving out the folders in `drop_folders` and the
    /// messages in `erase`: the folder snapshots and user files they are described
    /// with, and the messages their records name.
    pub fn needs_of(
        &self,
        kept: &[u64],
        drop_folders: &HashSet<String>,
        erase: &HashSet<Guid>,
    ) -> Result<Needs> {
        let op = "planning what kept runs need";
        let mut needs = Needs::default();
        let kept_set: HashSet<u64> = kept.iter().copied().collect();
        {
            let mut st = self
                .conn
                .prepare("SELECT uniqueid, run, snapshot_run FROM folder_runs")
                .db(op, &self.path)?;
            let mut rows = st.query([]).db(op, &self.path)?;
            while let Some(r) = rows.next().db(op, &self.path)? {
                let run: u64 = r.get(1).db(op, &self.path)?;
                let uid: String = r.get(0).db(op, &self.path)?;
                if kept_set.contains(&run) && !drop_folders.contains(&uid) {
                    needs.snapshots.insert((uid, r.get(2).db(op, &self.path)?));
                }
            }
        }
        {
            let mut st = self
                .conn
                .prepare("SELECT run, snapshot_run, kind, name FROM user_files")
                .db(op, &self.path)?;
            let mut rows = st.query([]).db(op, &self.path)?;
            while let Some(r) = rows.next().db(op, &self.path)? {
                let run: u64 = r.get(0).db(op, &self.path)?;
                if kept_set.contains(&run) {
                    needs.user_files.insert((
                        r.get(1).db(op, &self.path)?,
                        r.get(2).db(op, &self.path)?,
                        r.get(3).db(op, &self.path)?,
                    ));
                }
            }
        }
        {
            let mut sorted = kept.to_vec();
            sorted.sort_unstable();
            let mut st = self
                .conn
                .prepare("SELECT uniqueid, guid, from_run, to_run FROM records")
                .db(op, &self.path)?;
            let mut rows = st.query([]).db(op, &self.path)?;
            while let Some(r) = rows.next().db(op, &self.path)? {
                let from: u64 = r.get(2).db(op, &self.path)?;
                let to: Option<u64> = r.get(3).db(op, &self.path)?;
                // Valid at some kept run: the first kept run at or after `from` is
                // before `to`.
                let i = sorted.partition_point(|&k| k < from);
                let valid = sorted.get(i).is_some_and(|&k| to.is_none_or(|t| k < t));
                if !valid {
                    continue;
                }
                let uid: String = r.get(0).db(op, &self.path)?;
                if drop_folders.contains(&uid) {
                    continue;
                }
                let g: Vec<u8> = r.get(1).db(op, &self.path)?;
                let g: [u8; 20] = g
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt(&self.path, "a record guid that is not 20 bytes"))?;
                if !erase.contains(&Guid(g)) {
                    needs.messages.insert(Guid(g));
                }
            }
        }
        Ok(needs)
    }

    /// Every stored message with whether a folder the server holds shows it now and,
    /// if not, the run that first no longer showed it (for `--keep-deleted`).
    pub fn message_lives(&self) -> Result<Vec<MessageLife>> {
        let op = "reading message lifetimes";
        let mut st = self
            .conn
            .prepare(
                "SELECT m.guid, m.size,
                     max(CASE WHEN r.system_flags & ?1 = 0 AND r.to_run IS NULL THEN 1
                         ELSE 0 END),
                     max(CASE WHEN r.system_flags & ?1 = 0 THEN r.to_run END),
                     min(r.from_run)
                 FROM messages m LEFT JOIN records r ON r.guid = m.guid
                 GROUP BY m.guid",
            )
            .db(op, &self.path)?;
        let mut rows = st.query([EXPUNGED_BIT]).db(op, &self.path)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().db(op, &self.path)? {
            let g: Vec<u8> = r.get(0).db(op, &self.path)?;
            let g: [u8; 20] = g
                .as_slice()
                .try_into()
                .map_err(|_| corrupt(&self.path, "a message guid that is not 20 bytes"))?;
            let live: Option<i64> = r.get(2).db(op, &self.path)?;
            let visible_end: Option<u64> = r.get(3).db(op, &self.path)?;
            let first: Option<u64> = r.get(4).db(op, &self.path)?;
            let live = live == Some(1);
            out.push(MessageLife {
                guid: Guid(g),
                size: r.get(1).db(op, &self.path)?,
                live,
                gone_run: if live { None } else { visible_end.or(first) },
            });
        }
        Ok(out)
    }

    /// Folders gone from the server, with the run that found each gone, when the user
    /// deleted it (if a run saw it in the delayed-delete area) and its last name.
    pub fn deleted_folders(&self) -> Result<Vec<DeletedFolder>> {
        let op = "listing deleted folders";
        let mut st = self
            .conn
            .prepare(
                "SELECT f.uniqueid, f.deleted_run, n.name, n.deleted_at
                 FROM folders f
                 JOIN folder_names n ON n.uniqueid = f.uniqueid
                     AND n.from_run = (SELECT max(from_run) FROM folder_names x
                                       WHERE x.uniqueid = f.uniqueid)
                 WHERE f.deleted_run IS NOT NULL
                 ORDER BY f.uniqueid",
            )
            .db(op, &self.path)?;
        let rows = st
            .query_map([], |r| {
                Ok(DeletedFolder {
                    uniqueid: r.get(0)?,
                    deleted_run: r.get(1)?,
                    name: r.get(2)?,
                    deleted_at: r.get(3)?,
                })
            })
            .db(op, &self.path)?;
        rows.collect::<rusqlite::Result<_>>().db(op, &self.path)
    }

    /// Every message GUID any version of any record of the folder names.
    pub fn folder_guids(&self, uniqueid: &str) -> Result<HashSet<Guid>> {
        self.guids_where("uniqueid = ?1", [uniqueid])
    }

    /// Every message GUID a record with an internal date before `time` names.
    pub fn guids_before(&self, time: i64) -> Result<HashSet<Guid>> {
        self.guids_where("internaldate < ?1", [time])
    }

    fn guids_where<P: rusqlite::Params>(&self, cond: &str, p: P) -> Result<HashSet<Guid>> {
        let op = "selecting messages";
        let mut st = self
            .conn
            .prepare(&format!("SELECT DISTINCT guid FROM records WHERE {cond}"))
            .db(op, &self.path)?;
        let mut rows = st.query(p).db(op, &self.path)?;
        let mut out = HashSet::new();
        while let Some(r) = rows.next().db(op, &self.path)? {
            let g: Vec<u8> = r.get(0).db(op, &self.path)?;
            if let Ok(a) = <[u8; 20]>::try_from(g.as_slice()) {
                out.insert(Guid(a));
            }
        }
        Ok(out)
    }

    /// The folders (UniqueID → last name) any version of whose records names one of
    /// `guids`: what an erasure touches.
    pub fn folders_naming(&self, guids: &HashSet<Guid>) -> Result<HashMap<String, String>> {
        let op = "finding folders of messages";
        let mut st = self
            .conn
            .prepare(
                "SELECT DISTINCT r.uniqueid,
                     (SELECT name FROM folder_names n WHERE n.uniqueid = r.uniqueid
                      ORDER BY from_run DESC LIMIT 1)
                 FROM records r WHERE r.guid = ?1",
            )
            .db(op, &self.path)?;
        let mut out = HashMap::new();
        for g in guids {
            let mut rows = st.query([&g.0[..]]).db(op, &self.path)?;
            while let Some(r) = rows.next().db(op, &self.path)? {
                out.insert(
                    r.get::<_, String>(0).db(op, &self.path)?,
                    r.get::<_, Option<String>>(1)
                        .db(op, &self.path)?
                        .unwrap_or_default(),
                );
            }
        }
        Ok(out)
    }

    /// How many runs have a record naming one of `guids`.
    pub fn runs_listing(&self, guids: &HashSet<Guid>) -> Result<u64> {
        let op = "counting runs of messages";
        let runs: Vec<u64> = {
            let mut st = self
                .conn
                .prepare("SELECT run FROM runs")
                .db(op, &self.path)?;
            let rows = st.query_map([], |r| r.get(0)).db(op, &self.path)?;
            rows.collect::<rusqlite::Result<_>>().db(op, &self.path)?
        };
        let mut hit = HashSet::new();
        let mut st = self
            .conn
            .prepare("SELECT from_run, to_run FROM records WHERE guid = ?1")
            .db(op, &self.path)?;
        for g in guids {
            let mut rows = st.query([&g.0[..]]).db(op, &self.path)?;
            while let Some(r) = rows.next().db(op, &self.path)? {
                let from: u64 = r.get(0).db(op, &self.path)?;
                let to: Option<u64> = r.get(1).db(op, &self.path)?;
                hit.extend(
                    runs.iter()
                        .filter(|&&x| x >= from && to.is_none_or(|t| x < t))
                        .copied(),
                );
            }
        }
        Ok(hit.len() as u64)
    }

    /// Whether a replay of a run whose manifest describes folder `uniqueid` with the
    /// entries of run `snapshot_run` (an earlier run) must write it as a snapshot:
    /// true unless the folder is live here and its latest state already is that
    /// snapshot (then it is carried forward). After a prune the run that wrote the
    /// entries may be gone, and the first kept run after it snapshots the folder anew.
    pub fn needs_snapshot(&self, uniqueid: &str, snapshot_run: u64) -> Result<bool> {
        let row: Option<(Option<u64>, Option<u64>)> = self
            .conn
            .query_row(
                "SELECT f.deleted_run,
                     (SELECT snapshot_run FROM folder_runs r WHERE r.uniqueid = f.uniqueid
                      ORDER BY run DESC LIMIT 1)
                 FROM folders f WHERE f.uniqueid = ?1",
                [uniqueid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .db("reading a folder's last snapshot", &self.path)?;
        Ok(!matches!(row, Some((None, Some(s))) if s == snapshot_run))
    }

    /// The records of a folder's snapshot written at `snapshot_run` as this catalog
    /// holds them: those valid at the first run this catalog describes the folder with
    /// that snapshot (every such run has the same; `snapshot_run` itself may have been
    /// pruned), by ascending uid. Empty if no run uses the snapshot.
    pub fn snapshot_records(
        &self,
        uniqueid: &str,
        snapshot_run: u64,
    ) -> Result<Vec<crate::model::RecordState>> {
        let op = "reading a snapshot's records";
        let first: Option<u64> = self
            .conn
            .query_row(
                "SELECT min(run) FROM folder_runs WHERE uniqueid = ?1 AND snapshot_run = ?2",
                params![uniqueid, snapshot_run],
                |r| r.get(0),
            )
            .db(op, &self.path)?;
        let Some(run) = first else {
            return Ok(Vec::new());
        };
        self.records_at(uniqueid, run)
    }
}
