//! Whole-catalog views: [`Catalog::dump_canonical`], a deterministic text dump of
//! everything the catalog knows (what the reindex test compares), and
//! [`Catalog::stats`] for `cyrvault stats`.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use rusqlite::types::ValueRef;
use serde::Serialize;

use super::error::Result;
use super::{Catalog, DbContext};

/// Each table with the columns and order of its dump. Surrogate keys (`records.id`)
/// and the `meta` rows that record who created the file are left out: they describe
/// the file, not the archive.
const DUMP: &[(&str, &str, &str)] = &[
    (
        "runs",
        "run, started, finished, server, user, tool_version, manifest_member, \
         manifest_offset, manifest_size, status",
        "run",
    ),
    (
        "members",
        "offset, compressed_len, uncompressed_len, run, crc32",
        "offset",
    ),
    (
        "messages",
        "hex(guid), size, member_offset, offset_in_member, first_run",
        "guid",
    ),
    (
        "folders",
        "uniqueid, first_run, last_seen_run, deleted_run",
        "uniqueid",
    ),
    (
        "folder_names",
        "uniqueid, name, internal_name, from_run, to_run, deleted_at",
        "uniqueid, from_run",
    ),
    (
        "folder_runs",
        "uniqueid, run, snapshot_run, uidvalidity, highestmodseq, last_uid, exists_count, \
         state, header_member, header_offset, header_size, index_member, index_offset, \
         index_size, annot_member, annot_offset, annot_size, state_member, state_offset, \
         state_size",
        "uniqueid, run",
    ),
    (
        "records",
        "uniqueid, uid, hex(guid), system_flags, keywords, internaldate, size, modseq, \
         last_updated, savedate, from_run, to_run",
        "uniqueid, uid, from_run",
    ),
    (
        "user_files",
        "run, snapshot_run, kind, name, active, member_offset, offset_in_member, size",
        "run, kind, name",
    ),
    (
        "retention_events",
        "seq, kind, at, reason, until, releases, up_to_run, event, member_offset, \
         offset_in_member, size",
        "seq",
    ),
    (
        "erased_messages",
        "hex(guid), size, seq, up_to_run, permanent",
        "guid",
    ),
];

/// Totals for `cyrvault stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogStats {
    pub runs: u64,
    /// Distinct folders ever seen (deleted ones included).
    pub folders: u64,
    /// Distinct messages stored.
    pub messages: u64,
    /// Record versions (rows in `records`): the catalog's own size driver.
    pub record_versions: u64,
    /// Sum over runs of the sizes of the messages each run's folders held: what
    /// copying the mailbox at every run would have cost.
    pub raw_bytes: u64,
    /// Sum of the sizes of the distinct messages stored.
    pub unique_bytes: u64,
    /// Sum of the compressed lengths of all archive members.
    pub stored_compressed_bytes: u64,
}

impl Catalog {
    /// A deterministic dump of the catalog's content: one section per table, rows in
    /// key order, values as SQL-ish literals. Two catalogs built from the same archive
    /// (incrementally, or by reindex) give the same dump.
    pub fn dump_canonical(&self) -> Result<String> {
        let op = "dumping the catalog";
        let mut out = String::new();
        let v: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .db(op, &self.path)?;
        let _ = writeln!(out, "schema_version {v}");
        let generation = self.archive_generation()?;
        let _ = writeln!(out, "archive_generation {generation:?}");
        for (table, cols, order) in DUMP {
            let present: i64 = self
                .conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .db(op, &self.path)?;
            if present == 0 {
                continue;
            }
            let _ = writeln!(out, "[{table}] {cols}");
            let mut st = self
                .conn
                .prepare(&format!("SELECT {cols} FROM {table} ORDER BY {order}"))
                .db(op, &self.path)?;
            let n = st.column_count();
            let mut rows = st.query([]).db(op, &self.path)?;
            while let Some(r) = rows.next().db(op, &self.path)? {
                for i in 0..n {
                    if i > 0 {
                        out.push('\t');
                    }
                    match r.get_ref(i).db(op, &self.path)? {
                        ValueRef::Null => out.push_str("NULL"),
                        ValueRef::Integer(x) => {
                            let _ = write!(out, "{x}");
                        }
                        ValueRef::Real(x) => {
                            let _ = write!(out, "{x:?}");
                        }
                        ValueRef::Text(t) => {
                            let _ = write!(out, "{:?}", String::from_utf8_lossy(t));
                        }
                        ValueRef::Blob(b) => {
                            let _ = write!(out, "x'{}'", hex::encode(b));
                        }
                    }
                }
                out.push('\n');
            }
        }
        Ok(out)
    }

    /// Totals over the whole catalog.
    pub fn stats(&self) -> Result<CatalogStats> {
        let op = "computing stats";
        let one = |sql: &str| -> Result<u64> {
            self.conn
                .query_row(sql, [], |r| r.get::<_, Option<u64>>(0))
                .db(op, &self.path)
                .map(|v| v.unwrap_or(0))
        };
        Ok(CatalogStats {
            runs: one("SELECT count(*) FROM runs")?,
            folders: one("SELECT count(*) FROM folders")?,
            messages: one("SELECT count(*) FROM messages")?,
            record_versions: one("SELECT count(*) FROM records")?,
            // Runs need not be numbered without gaps, so count the runs each version
            // spans rather than subtracting run numbers.
            raw_bytes: one("SELECT sum(r.size * (SELECT count(*) FROM runs x
                     WHERE x.run >= r.from_run AND (r.to_run IS NULL OR x.run < r.to_run)))
                 FROM records r")?,
            unique_bytes: one("SELECT sum(size) FROM messages")?,
            stored_compressed_bytes: one("SELECT sum(compressed_len) FROM members")?,
        })
    }
}
