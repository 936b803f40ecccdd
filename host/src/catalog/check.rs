//! The last "nothing changed" check of a user: a backup that finds every folder and
//! every user file as the last run left them writes no run at all (no archive bytes,
//! no fsync, doc/backup.md "An unchanged user"); it records here, in the `meta` table
//! under the key `last_check`, when it looked and against which run, so that `list
//! --stale` knows the user is current.
//!
//! This is the one fact in the catalog the archive does not hold: `reindex` cannot
//! rebuild it, and a power loss may take it (the backup's commits are not fsynced).
//! Losing it is harmless: the user then looks as old as its last run, which is what a
//! catalog without checks says anyway. It is not part of `dump_canonical`.
#![forbid(unsafe_code)]

use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use super::error::Result;
use super::{Catalog, CatalogError, DbContext};

/// The `meta` key of the record.
const KEY: &str = "last_check";

/// A backup found nothing changed since run `run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// The latest committed run, which still describes the user.
    pub run: u64,
    /// When the server was asked (Unix seconds).
    pub time: i64,
    /// The server asked (`host:port`).
    pub server: String,
}

impl Catalog {
    /// Record a check (replacing the previous one). One small transaction; with
    /// [`Catalog::open_backup`] it costs no fsync.
    pub fn note_check(&mut self, c: &Check) -> Result<()> {
        let json = serde_json::to_string(c).map_err(|e| {
            CatalogError::other(format!("encoding the check of run {}: {e}", c.run))
        })?;
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (KEY, json),
            )
            .db("recording a check", &self.path)?;
        Ok(())
    }

    /// The last check recorded, if any that still belongs to the latest run (a check
    /// older than the latest run says nothing the run does not). An unreadable record
    /// is no record: it is advisory.
    pub fn last_check(&self) -> Result<Option<Check>> {
        let json: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [KEY], |r| r.get(0))
            .optional()
            .db("reading the last check", &self.path)?;
        let Some(c) = json.and_then(|j| serde_json::from_str::<Check>(&j).ok()) else {
            return Ok(None);
        };
        let last = self.last_run()?.map(|r| r.run);
        Ok((last == Some(c.run)).then_some(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_is_kept_only_for_the_latest_run() {
        let dir = std::env::temp_dir().join(format!("cyrvault-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.sqlite");
        let mut cat = Catalog::open_backup(&p).unwrap();
        assert_eq!(cat.last_check().unwrap(), None);
        let c = Check {
            run: 0,
            time: 5,
            server: "h:1".into(),
        };
        cat.note_check(&c).unwrap();
        // no run 0 in an empty catalog: the record is stale
        assert_eq!(cat.last_check().unwrap(), None);
        let before = cat.dump_canonical().unwrap();
        let tx = cat
            .begin_run(&super::super::RunHeader {
                run: 1,
                user: "u".into(),
                started: 1,
                finished: 2,
                server: "h:1".into(),
                tool_version: "0".into(),
                manifest: None,
            })
            .unwrap();
        tx.commit().unwrap();
        let with_run = cat.dump_canonical().unwrap();
        let c = Check { run: 1, ..c };
        cat.note_check(&c).unwrap();
        assert_eq!(cat.last_check().unwrap(), Some(c));
        assert_eq!(
            cat.dump_canonical().unwrap(),
            with_run,
            "not part of the canonical dump"
        );
        assert_ne!(before, with_run);
        drop(cat);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
