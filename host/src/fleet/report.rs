//! What the user directory tells about a round: the per-server/per-unit summary,
//! the failures, the claim trace, the successes, and stale users (`cyrvault run`'s
//! closing table, `cyrvault fleet-status`, the tests' checks).
#![forbid(unsafe_code)]

use serde::Serialize;

use super::directory::Directory;
use super::sql::{Dialect, Sql};
use crate::error::{ErrorKind, Result};

/// Columns added after the first schema, `(table, column)`: the failure class of a
/// user's last failed attempt and of each attempt (an [`ErrorKind::name`]; NULL on
/// success, and on failures recorded before the column existed, which read as
/// `temporary`, the class they were given then); and, for a successful backup whose
/// retention prune failed, that failure's class and message (NULL otherwise).
const ADDED_COLUMNS: [(&str, &str); 4] = [
    ("users", "last_class"),
    ("attempts", "class"),
    ("attempts", "prune_class"),
    ("attempts", "prune_error"),
];

/// Bring a directory made by an older cyrvault up to date (idempotent; several
/// workers may open the same directory at once).
pub(super) fn migrate(db: &mut dyn Sql) -> Result<()> {
    for (table, column) in ADDED_COLUMNS {
        let has = |db: &mut dyn Sql| -> Result<bool> {
            let sql = match db.dialect() {
                Dialect::Sqlite => "SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?",
                Dialect::Postgres => {
                    "SELECT COUNT(*) FROM information_schema.columns WHERE \
                     table_schema = current_schema() AND table_name = ? AND column_name = ?"
                }
            };
            Ok(db.query(sql, &[table.into(), column.into()])?[0][0].int() > 0)
        };
        if has(db)? {
            continue;
        }
        let add = match db.dialect() {
            Dialect::Sqlite => format!("ALTER TABLE {table} ADD COLUMN {column} TEXT"),
            Dialect::Postgres => {
                format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} TEXT")
            }
        };
        // Another process may have added it between the check and here.
        if let Err(e) = db.batch(&add)
            && !has(db)?
        {
            return Err(e);
        }
    }
    Ok(())
}

/// A row of the per-server/per-unit summary of a round.
#[derive(Debug, Clone, Serialize)]
pub struct UnitSummary {
    /// Server name.
    pub server: String,
    /// Unit id `server/unit`.
    pub unit: String,
    /// Users on the unit (not gone).
    pub users: i64,
    /// Of those, tried in the round.
    pub tried: i64,
    /// Of those, backed up.
    pub ok: i64,
    /// Of those, failed (their last attempt in the round).
    pub failed: i64,
    /// Of the backed up, those whose retention prune after the backup failed.
    pub prune_failed: i64,
    /// Message bytes fetched.
    pub bytes: i64,
    /// Bytes the unit's archives grew by.
    pub stored: i64,
    /// Wall time from the unit's first claim to its last result, ms.
    pub span_ms: i64,
    /// When the unit's first attempt of the round started, ms (0: none yet).
    pub first_start: i64,
    /// When its last attempt of the round ended, ms (0: none yet).
    pub last_end: i64,
}

/// How well one drive unit's users are covered, whatever round: the oldest of their
/// last good backups, and who has none recent enough.
#[derive(Debug, Clone, Serialize)]
pub struct UnitHealth {
    /// Server name.
    pub server: String,
    /// Unit id `server/unit`.
    pub unit: String,
    /// Users on the unit (not gone).
    pub users: i64,
    /// The oldest last good backup among users that have one, ms.
    pub oldest_success: Option<i64>,
    /// Users never backed up.
    pub never: i64,
    /// Users without a good backup since the cutoff (the never backed up included).
    pub stale: i64,
}

/// The newest round.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RoundInfo {
    /// Its number.
    pub id: i64,
    /// When it started, ms.
    pub started: i64,
    /// When it was closed, ms (None: still open).
    pub finished: Option<i64>,
}

/// A user whose last attempt failed.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// Server name.
    pub server: String,
    /// The user.
    pub userid: String,
    /// What went wrong.
    pub error: String,
    /// Its class (`temporary`, `config`, `permission`, `data`, ...: the exit status
    /// `cyrvault backup` gives the same failure).
    pub class: ErrorKind,
    /// Failures in a row.
    pub failures: i64,
}

/// A user backed up in a round whose retention prune after the backup failed: the
/// backup counts (a prune that fails leaves the archive and catalog a consistent
/// pair, doc/retention.md), and the prune is tried again after the next backup.
#[derive(Debug, Clone, Serialize)]
pub struct PruneFailure {
    /// Server name.
    pub server: String,
    /// The user.
    pub userid: String,
    /// What went wrong.
    pub error: String,
    /// Its class (the exit status `cyrvault prune` gives the same failure).
    pub class: ErrorKind,
}

/// A stored class name; NULL (recorded before classes were stored) or unknown
/// (a newer cyrvault's) reads as temporary.
fn class_of(name: Option<String>) -> ErrorKind {
    name.as_deref()
        .and_then(ErrorKind::from_name)
        .unwrap_or(ErrorKind::Temporary)
}

/// The most severe class among failed backups and failed prunes (None: neither):
/// the exit status of a run. A failed prune counts like a failed backup of its
/// class, so a run whose retention could not be applied never exits 0.
pub fn worst_of(failures: &[Failure], prunes: &[PruneFailure]) -> Option<ErrorKind> {
    failures
        .iter()
        .map(|f| f.class)
        .chain(prunes.iter().map(|p| p.class))
        .reduce(ErrorKind::worst)
}

impl Directory {
    /// Per server and drive unit: users, and what `round` did to them.
    pub fn summary(&mut self, round: i64) -> Result<Vec<UnitSummary>> {
        let rows = self.db.query(
            "SELECT u.server, u.unit, COUNT(*), \
             COALESCE(CAST(SUM(CASE WHEN a.userid IS NULL THEN 0 ELSE 1 END) AS BIGINT), 0), \
             COALESCE(CAST(SUM(CASE WHEN a.ok = 1 THEN 1 ELSE 0 END) AS BIGINT), 0), \
             COALESCE(CAST(SUM(CASE WHEN a.ok = 0 THEN 1 ELSE 0 END) AS BIGINT), 0), \
             COALESCE(CAST(SUM(a.bytes) AS BIGINT), 0), \
             COALESCE(MAX(a.finished), 0) - COALESCE(MIN(a.started), 0), \
             COALESCE(CAST(SUM(a.stored) AS BIGINT), 0), \
             COALESCE(MIN(a.started), 0), COALESCE(MAX(a.finished), 0), \
             COALESCE(CAST(SUM(CASE WHEN a.ok = 1 AND a.prune_class IS NOT NULL THEN 1 ELSE 0 END) \
               AS BIGINT), 0) \
             FROM users u LEFT JOIN (SELECT server, userid, MAX(id) AS id FROM attempts \
               WHERE round = ? GROUP BY server, userid) l \
               ON l.server = u.server AND l.userid = u.userid \
             LEFT JOIN attempts a ON a.id = l.id \
             WHERE u.gone_since IS NULL GROUP BY u.server, u.unit ORDER BY u.server, u.unit",
            &[round.into()],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| UnitSummary {
                server: r[0].text(),
                unit: r[1].text(),
                users: r[2].int(),
                tried: r[3].int(),
                ok: r[4].int(),
                failed: r[5].int(),
                bytes: r[6].int(),
                span_ms: r[7].int(),
                stored: r[8].int(),
                first_start: r[9].int(),
                last_end: r[10].int(),
                prune_failed: r[11].int(),
            })
            .collect())
    }

    /// Per server and drive unit: the oldest last good backup, users never backed
    /// up, users without a good backup since `cutoff` (ms). Gone users do not count.
    pub fn health(&mut self, cutoff: i64) -> Result<Vec<UnitHealth>> {
        let rows = self.db.query(
            "SELECT server, unit, COUNT(*), MIN(last_success), \
             COALESCE(CAST(SUM(CASE WHEN last_success IS NULL THEN 1 ELSE 0 END) AS BIGINT), 0), \
             COALESCE(CAST(SUM(CASE WHEN COALESCE(last_success, 0) < ? THEN 1 ELSE 0 END) \
               AS BIGINT), 0) \
             FROM users WHERE gone_since IS NULL GROUP BY server, unit ORDER BY server, unit",
            &[cutoff.into()],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| UnitHealth {
                server: r[0].text(),
                unit: r[1].text(),
                users: r[2].int(),
                oldest_success: r[3].opt_int(),
                never: r[4].int(),
                stale: r[5].int(),
            })
            .collect())
    }

    /// The newest round, finished or not.
    pub fn round_info(&mut self) -> Result<Option<RoundInfo>> {
        let rows = self.db.query(
            "SELECT id, started, finished FROM rounds ORDER BY id DESC LIMIT 1",
            &[],
        )?;
        Ok(rows.first().map(|r| RoundInfo {
            id: r[0].int(),
            started: r[1].int(),
            finished: r[2].opt_int(),
        }))
    }

    /// Users whose last attempt in `round` failed.
    pub fn failures(&mut self, round: i64) -> Result<Vec<Failure>> {
        let rows = self.db.query(
            "SELECT server, userid, COALESCE(last_error, ''), failures, last_class FROM users \
             WHERE last_round = ? AND last_result = 'failed' ORDER BY server, userid",
            &[round.into()],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| Failure {
                server: r[0].text(),
                userid: r[1].text(),
                error: r[2].text(),
                failures: r[3].int(),
                class: class_of(r[4].opt_text()),
            })
            .collect())
    }

    /// Users whose last attempt in `round` backed them up but whose retention prune
    /// after it failed.
    pub fn prune_failures(&mut self, round: i64) -> Result<Vec<PruneFailure>> {
        let rows = self.db.query(
            "SELECT a.server, a.userid, COALESCE(a.prune_error, ''), a.prune_class \
             FROM attempts a JOIN (SELECT server, userid, MAX(id) AS id FROM attempts \
               WHERE round = ? GROUP BY server, userid) l ON a.id = l.id \
             WHERE a.ok = 1 AND a.prune_class IS NOT NULL ORDER BY a.server, a.userid",
            &[round.into()],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| PruneFailure {
                server: r[0].text(),
                userid: r[1].text(),
                error: r[2].text(),
                class: class_of(r[3].opt_text()),
            })
            .collect())
    }

    /// The most severe class among the users whose last attempt in `round` failed
    /// and the prunes that failed after a backup of the round (None: neither).
    pub fn worst_class(&mut self, round: i64) -> Result<Option<ErrorKind>> {
        let prunes = self.prune_failures(round)?;
        Ok(worst_of(&self.failures(round)?, &prunes))
    }

    /// Every claim of `round`: `(worker, unit, claimed_at, end)` where end is the
    /// release time, or the lease expiry for a claim never released (its worker died).
    pub fn claims(&mut self, round: i64) -> Result<Vec<(String, String, i64, i64)>> {
        let rows = self.db.query(
            "SELECT worker, unit, claimed_at, COALESCE(released_at, expires_at) FROM claims \
             WHERE round = ? ORDER BY claimed_at",
            &[round.into()],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| (r[0].text(), r[1].text(), r[2].int(), r[3].int()))
            .collect())
    }

    /// Every successful attempt of `round`: `(server, userid, worker)`.
    pub fn successes(&mut self, round: i64) -> Result<Vec<(String, String, String)>> {
        let rows = self.db.query(
            "SELECT server, userid, worker FROM attempts WHERE round = ? AND ok = 1 ORDER BY id",
            &[round.into()],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| (r[0].text(), r[1].text(), r[2].text()))
            .collect())
    }

    /// Users not backed up successfully since `cutoff` (ms), not gone.
    pub fn stale(&mut self, cutoff: i64) -> Result<Vec<(String, String, Option<i64>)>> {
        let rows = self.db.query(
            "SELECT server, userid, last_success FROM users WHERE gone_since IS NULL \
             AND COALESCE(last_success, 0) < ? ORDER BY server, userid",
            &[cutoff.into()],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| (r[0].text(), r[1].text(), r[2].opt_int()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::sql::Lite;

    /// A directory written before classes were stored (the first schema, one failed
    /// user) is upgraded on open: its old failure reads as temporary, new ones keep
    /// their class, and opening it again changes nothing.
    #[test]
    fn an_old_directory_gains_the_class_columns() {
        let file =
            std::env::temp_dir().join(format!("cyrvault-fleet-migrate-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let url = file.display().to_string();
        {
            let mut db = Lite::open(&url).unwrap();
            db.batch(
                "CREATE TABLE users (server TEXT NOT NULL, userid TEXT NOT NULL, \
                 partition TEXT NOT NULL, unit TEXT NOT NULL, vault TEXT NOT NULL, \
                 gone_since BIGINT, last_round BIGINT, last_result TEXT, last_error TEXT, \
                 last_try BIGINT, last_success BIGINT, last_bytes BIGINT, \
                 failures BIGINT NOT NULL DEFAULT 0, next_try BIGINT NOT NULL DEFAULT 0, \
                 lease_owner TEXT, lease_expires BIGINT, PRIMARY KEY (server, userid));
                 CREATE TABLE attempts (id INTEGER PRIMARY KEY, round BIGINT NOT NULL, \
                 server TEXT NOT NULL, userid TEXT NOT NULL, unit TEXT NOT NULL, \
                 worker TEXT NOT NULL, started BIGINT NOT NULL, finished BIGINT NOT NULL, \
                 ok BIGINT NOT NULL, bytes BIGINT NOT NULL, error TEXT);
                 INSERT INTO users (server, userid, partition, unit, vault, last_round, \
                 last_result, last_error, failures) VALUES ('s1', 'old', 'p', 'u', '/v', 7, \
                 'failed', 'connection refused', 1);",
            )
            .unwrap();
        }
        for _ in 0..2 {
            let mut d = Directory::open(Box::new(Lite::open(&url).unwrap())).unwrap();
            let f = d.failures(7).unwrap();
            assert_eq!(f.len(), 1);
            assert_eq!(f[0].class, ErrorKind::Temporary, "{f:?}");
            assert_eq!(d.worst_class(7).unwrap(), Some(ErrorKind::Temporary));
        }
        let mut db = Lite::open(&url).unwrap();
        for (table, column) in ADDED_COLUMNS {
            let n = db
                .query(
                    "SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?",
                    &[table.into(), column.into()],
                )
                .unwrap();
            assert_eq!(n[0][0].int(), 1, "{table}.{column}");
        }
        db.exec(
            "UPDATE users SET last_class = 'config' WHERE userid = 'old'",
            &[],
        )
        .unwrap();
        let mut d = Directory::open(Box::new(db)).unwrap();
        assert_eq!(d.failures(7).unwrap()[0].class, ErrorKind::Config);
        drop(d);
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{url}{ext}"));
        }
    }
}
