//! Raw reads for `verify`: every location and reference exactly as it is stored —
//! signed, possibly NULL — so that damage to the catalog (a negative offset, half a
//! location, a record naming a message no member holds) is seen, never skipped by a
//! conversion that fails. The typed reads in `query.rs` are for a catalog that is
//! known to be sound; these are for finding out whether it is.
#![forbid(unsafe_code)]

use rusqlite::Row;
use serde::Serialize;

use super::error::Result;
use super::{Catalog, DbContext};

/// A location as stored: `(member offset, offset in the member, size)`, each possibly
/// NULL or negative in a damaged catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RawLoc {
    pub member: Option<i64>,
    pub offset: Option<i64>,
    pub size: Option<i64>,
}

impl RawLoc {
    /// No part set (an optional location that is absent).
    pub fn is_absent(&self) -> bool {
        self.member.is_none() && self.offset.is_none() && self.size.is_none()
    }
}

/// What a stored location is the location of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum LocKind {
    /// `messages`: the message with this GUID; a stored value that is not 20 bytes
    /// (a damaged row) is `Err` with its lower-case hex.
    Message {
        guid: std::result::Result<crate::cyrus::Guid, String>,
    },
    /// `runs`: the run's manifest.
    Manifest,
    /// `folder_runs`: one meta file (`cyrus.header`, `cyrus.index`,
    /// `cyrus.annotations`, `state.json`) of the folder's snapshot at `snapshot_run`.
    FolderMeta {
        uniqueid: String,
        snapshot_run: i64,
        file: &'static str,
        /// Whether every snapshot must have it (all but `cyrus.annotations`).
        required: bool,
    },
    /// `user_files`: a user file stored at `snapshot_run`.
    UserFile {
        snapshot_run: i64,
        kind: String,
        name: String,
    },
}

/// One stored location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocRow {
    pub kind: LocKind,
    /// The run the row belongs to (for `messages`: the first run that stored it).
    pub run: i64,
    pub loc: RawLoc,
}

/// One `members` row as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RawMember {
    pub offset: i64,
    pub compressed_len: i64,
    pub uncompressed_len: i64,
    pub run: i64,
}

/// A record version whose GUID has no `messages` row: a message the catalog says a
/// folder held that no member of the archive holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnheldRecord {
    pub uniqueid: String,
    pub uid: i64,
    /// Lower-case hex of the stored GUID blob.
    pub guid: String,
    pub from_run: i64,
    pub to_run: Option<i64>,
}

/// Row counts of the tables verify compares with the archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CatalogCounts {
    pub runs: u64,
    pub members: u64,
    pub messages: u64,
    pub folder_runs: u64,
    pub records: u64,
}

fn raw_loc(r: &Row<'_>, i: usize) -> rusqlite::Result<RawLoc> {
    Ok(RawLoc {
        member: r.get(i)?,
        offset: r.get(i + 1)?,
        size: r.get(i + 2)?,
    })
}

impl Catalog {
    /// Every `members` row, by offset.
    pub fn audit_members(&self) -> Result<Vec<RawMember>> {
        let op = "auditing members";
        let mut st = self
            .conn
            .prepare(
                "SELECT offset, compressed_len, uncompressed_len, run FROM members ORDER BY offset",
            )
            .db(op, &self.path)?;
        let rows = st
            .query_map([], |r| {
                Ok(RawMember {
                    offset: r.get(0)?,
                    compressed_len: r.get(1)?,
                    uncompressed_len: r.get(2)?,
                    run: r.get(3)?,
                })
            })
            .db(op, &self.path)?;
        rows.collect::<rusqlite::Result<_>>().db(op, &self.path)
    }

    /// Every stored location: messages, run manifests, folder snapshot meta files and
    /// user files.
    pub fn audit_locations(&self) -> Result<Vec<LocRow>> {
        let op = "auditing locations";
        let mut out = Vec::new();
        let mut st = self
            .conn
            .prepare(
                "SELECT guid, first_run, member_offset, offset_in_member, size
                 FROM messages ORDER BY guid",
            )
            .db(op, &self.path)?;
        let rows = st
            .query_map([], |r| {
                // The blob as is (no hex in SQL and back in Rust for every message).
                let guid = match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Blob(b) => <[u8; 20]>::try_from(b)
                        .map(crate::cyrus::Guid)
                        .map_err(|_| hex::encode(b)),
                    rusqlite::types::ValueRef::Text(t) => Err(hex::encode(t)),
                    other => Err(format!("{other:?}")),
                };
                Ok(LocRow {
                    kind: LocKind::Message { guid },
                    run: r.get(1)?,
                    loc: RawLoc {
                        member: r.get(2)?,
                        offset: r.get(3)?,
                        size: r.get(4)?,
                    },
                })
            })
            .db(op, &self.path)?;
        for r in rows {
            out.push(r.db(op, &self.path)?);
        }
        let mut st = self
            .conn
            .prepare(
                "SELECT run, manifest_member, manifest_offset, manifest_size FROM runs
                 ORDER BY run",
            )
            .db(op, &self.path)?;
        let rows = st
            .query_map([], |r| {
                Ok(LocRow {
                    kind: LocKind::Manifest,
                    run: r.get(0)?,
                    loc: raw_loc(r, 1)?,
                })
            })
            .db(op, &self.path)?;
        for r in rows {
            out.push(r.db(op, &self.path)?);
        }
        let mut st = self
            .conn
            .prepare(
                "SELECT uniqueid, run, snapshot_run,
                     header_member, header_offset, header_size,
                     index_member, index_offset, index_size,
                     annot_member, annot_offset, annot_size,
                     state_member, state_offset, state_size
                 FROM folder_runs ORDER BY uniqueid, run",
            )
            .db(op, &self.path)?;
        let mut rows = st.query([]).db(op, &self.path)?;
        while let Some(r) = rows.next().db(op, &self.path)? {
            let uniqueid: String = r.get(0).db(op, &self.path)?;
            let run: i64 = r.get(1).db(op, &self.path)?;
            let snapshot_run: i64 = r.get(2).db(op, &self.path)?;
            for (i, file, required) in [
                (3, "cyrus.header", true),
                (6, "cyrus.index", true),
                (9, "cyrus.annotations", false),
                (12, "state.json", true),
            ] {
                out.push(LocRow {
                    kind: LocKind::FolderMeta {
                        uniqueid: uniqueid.clone(),
                        snapshot_run,
                        file,
                        required,
                    },
                    run,
                    loc: raw_loc(r, i).db(op, &self.path)?,
                });
            }
        }
        let mut st = self
            .conn
            .prepare(
                "SELECT run, snapshot_run, kind, name, member_offset, offset_in_member, size
                 FROM user_files ORDER BY run, kind, name",
            )
            .db(op, &self.path)?;
        let rows = st
            .query_map([], |r| {
                Ok(LocRow {
                    kind: LocKind::UserFile {
                        snapshot_run: r.get(1)?,
                        kind: r.get(2)?,
                        name: r.get(3)?,
                    },
                    run: r.get(0)?,
                    loc: raw_loc(r, 4)?,
                })
            })
            .db(op, &self.path)?;
        for r in rows {
            out.push(r.db(op, &self.path)?);
        }
        Ok(out)
    }

    /// Record versions whose GUID has no `messages` row (a message no member holds).
    ///
    /// Set-based: the distinct GUIDs of `records` (a walk of the `records_by_guid`
    /// index, which covers them) and the GUIDs of `messages` (its primary key), both in
    /// SQLite's BLOB order, are merged here in one pass each. A probe of `messages` per
    /// record (the `NOT EXISTS` form) cost a B-tree descent per record, a third of
    /// `verify`'s CPU for a folder of 200,000 messages. Only the GUIDs found missing
    /// (normally none) are looked up again for their records, which are sorted.
    pub fn unheld_records(&self) -> Result<Vec<UnheldRecord>> {
        use rusqlite::types::{Value, ValueRef};
        let op = "auditing records";
        let mut held = self
            .conn
            .prepare("SELECT guid FROM messages ORDER BY guid")
            .db(op, &self.path)?;
        let mut held = held.query([]).db(op, &self.path)?;
        let mut refs = self
            .conn
            .prepare(
                "SELECT DISTINCT guid FROM records INDEXED BY records_by_guid
                 WHERE guid IS NOT NULL ORDER BY guid",
            )
            .db(op, &self.path)?;
        let mut refs = refs.query([]).db(op, &self.path)?;
        // The current `messages` GUID of the merge; `None` past the last one. Rows
        // whose GUID is not a BLOB (a damaged catalog) sort before every BLOB in
        // SQLite and are skipped on this side: they hold nothing.
        let mut cur: Option<Vec<u8>> = None;
        let mut held_done = false;
        let mut missing: Vec<Value> = Vec::new();
        while let Some(r) = refs.next().db(op, &self.path)? {
            let g = match r.get_ref(0).db(op, &self.path)? {
                ValueRef::Blob(b) => b,
                // A record GUID that is not a BLOB names no message.
                ValueRef::Text(t) => {
                    missing.push(Value::Text(String::from_utf8_lossy(t).into_owned()));
                    continue;
                }
                ValueRef::Integer(i) => {
                    missing.push(Value::Integer(i));
                    continue;
                }
                ValueRef::Real(f) => {
                    missing.push(Value::Real(f));
                    continue;
                }
                ValueRef::Null => continue,
            };
            while !held_done && cur.as_deref().is_none_or(|c| c < g) {
                match held.next().db(op, &self.path)? {
                    Some(h) => {
                        if let ValueRef::Blob(b) = h.get_ref(0).db(op, &self.path)? {
                            cur = Some(b.to_vec());
                        }
                    }
                    None => held_done = true,
                }
            }
            if cur.as_deref() != Some(g) {
                missing.push(Value::Blob(g.to_vec()));
            }
        }
        let mut out = Vec::new();
        if missing.is_empty() {
            return Ok(out);
        }
        let mut st = self
            .conn
            .prepare(
                "SELECT uniqueid, uid, lower(hex(guid)), from_run, to_run FROM records
                 WHERE guid = ?1",
            )
            .db(op, &self.path)?;
        for g in missing {
            let rows = st
                .query_map([g], |r| {
                    Ok(UnheldRecord {
                        uniqueid: r.get(0)?,
                        uid: r.get(1)?,
                        guid: r.get(2)?,
                        from_run: r.get(3)?,
                        to_run: r.get(4)?,
                    })
                })
                .db(op, &self.path)?;
            for r in rows {
                out.push(r.db(op, &self.path)?);
            }
        }
        out.sort_by(|a, b| (&a.uniqueid, a.uid, a.from_run).cmp(&(&b.uniqueid, b.uid, b.from_run)));
        Ok(out)
    }

    /// Every message GUID the catalog has (what `reindex` compares a rebuild with).
    pub fn message_guids(&self) -> Result<Vec<crate::cyrus::Guid>> {
        let op = "listing messages";
        let mut st = self
            .conn
            .prepare("SELECT guid FROM messages ORDER BY guid")
            .db(op, &self.path)?;
        let mut rows = st.query([]).db(op, &self.path)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().db(op, &self.path)? {
            let b: Vec<u8> = r.get(0).db(op, &self.path)?;
            // The schema checks the length; a damaged row is skipped here and
            // reported by verify.
            if let Ok(a) = <[u8; 20]>::try_from(b.as_slice()) {
                out.push(crate::cyrus::Guid(a));
            }
        }
        Ok(out)
    }

    /// How many rows the tables verify compares have.
    pub fn counts(&self) -> Result<CatalogCounts> {
        let op = "counting rows";
        let one = |table: &str| -> Result<u64> {
            self.conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                    r.get::<_, u64>(0)
                })
                .db(op, &self.path)
        };
        Ok(CatalogCounts {
            runs: one("runs")?,
            members: one("members")?,
            messages: one("messages")?,
            folder_runs: one("folder_runs")?,
            records: one("records")?,
        })
    }
}
