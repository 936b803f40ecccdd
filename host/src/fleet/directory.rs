//! The user directory: servers, drive units and users with their last result, the
//! rounds of `cyrvault run`, the claims (leases) workers take and every attempt.
//! One implementation over [`Sql`], so SQLite (one host) and PostgreSQL (several
//! hosts) behave the same; only the locking differs (see [`Directory::claim`]).
//!
//! Times are milliseconds since the epoch, taken from the caller's clock.
#![forbid(unsafe_code)]

use serde::Serialize;

pub use super::report::{Failure, UnitSummary};

use super::sql::{Dialect, Sql, Val};
use crate::error::{ErrorKind, Result};

const SCHEMA_COMMON: &str = "
CREATE TABLE IF NOT EXISTS servers (
  name TEXT PRIMARY KEY, address TEXT NOT NULL, discovered_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS units (
  id TEXT PRIMARY KEY, server TEXT NOT NULL, unit TEXT NOT NULL, partitions TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
  server TEXT NOT NULL, userid TEXT NOT NULL, partition TEXT NOT NULL, unit TEXT NOT NULL,
  vault TEXT NOT NULL, gone_since BIGINT, last_round BIGINT, last_result TEXT,
  last_error TEXT, last_try BIGINT, last_success BIGINT, last_bytes BIGINT,
  failures BIGINT NOT NULL DEFAULT 0, next_try BIGINT NOT NULL DEFAULT 0,
  lease_owner TEXT, lease_expires BIGINT, PRIMARY KEY (server, userid));
CREATE INDEX IF NOT EXISTS users_unit ON users (unit);
CREATE INDEX IF NOT EXISTS users_lease ON users (lease_owner);
CREATE TABLE IF NOT EXISTS rounds (
  id BIGINT PRIMARY KEY, started BIGINT NOT NULL, finished BIGINT);
";
const SCHEMA_SQLITE: &str = "
CREATE TABLE IF NOT EXISTS claims (
  id INTEGER PRIMARY KEY, round BIGINT NOT NULL, worker TEXT NOT NULL, server TEXT NOT NULL,
  unit TEXT NOT NULL, users BIGINT NOT NULL, claimed_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL, released_at BIGINT);
CREATE TABLE IF NOT EXISTS attempts (
  id INTEGER PRIMARY KEY, round BIGINT NOT NULL, server TEXT NOT NULL, userid TEXT NOT NULL,
  unit TEXT NOT NULL, worker TEXT NOT NULL, started BIGINT NOT NULL, finished BIGINT NOT NULL,
  ok BIGINT NOT NULL, bytes BIGINT NOT NULL, error TEXT, stored BIGINT NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS claims_open ON claims (unit, released_at);
CREATE INDEX IF NOT EXISTS attempts_round ON attempts (round);
";
const SCHEMA_PG: &str = "
CREATE TABLE IF NOT EXISTS claims (
  id BIGSERIAL PRIMARY KEY, round BIGINT NOT NULL, worker TEXT NOT NULL, server TEXT NOT NULL,
  unit TEXT NOT NULL, users BIGINT NOT NULL, claimed_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL, released_at BIGINT);
CREATE TABLE IF NOT EXISTS attempts (
  id BIGSERIAL PRIMARY KEY, round BIGINT NOT NULL, server TEXT NOT NULL, userid TEXT NOT NULL,
  unit TEXT NOT NULL, worker TEXT NOT NULL, started BIGINT NOT NULL, finished BIGINT NOT NULL,
  ok BIGINT NOT NULL, bytes BIGINT NOT NULL, error TEXT, stored BIGINT NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS claims_open ON claims (unit, released_at);
CREATE INDEX IF NOT EXISTS attempts_round ON attempts (round);
";

/// A user not yet tried in `round`, not in backoff, not leased (or its lease ran out).
const ELIGIBLE: &str = "gone_since IS NULL AND (last_round IS NULL OR last_round <> ?) \
    AND next_try <= ? AND (lease_owner IS NULL OR lease_expires < ?)";

/// The scheduler's limits for one claim.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most users per batch.
    pub batch: usize,
    /// Most workers per drive unit.
    pub unit_limit: usize,
    /// Most workers per server (0: none).
    pub server_limit: usize,
    /// Lease length, ms.
    pub lease_ms: i64,
}

/// What one successful backup moved: message bytes fetched from the server and
/// bytes the archive grew by; and, when the retention policy's prune after it
/// failed, that failure (the backup still counts as done).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Transfer {
    /// Message bytes fetched.
    pub fetched: u64,
    /// Bytes appended to the archive.
    pub stored: u64,
    /// The prune's failure: its class and message.
    pub prune_failed: Option<(ErrorKind, String)>,
}

/// A claimed batch: users of one drive unit, leased to one worker.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    /// The claims row.
    pub claim: i64,
    /// The server the unit belongs to.
    pub server: String,
    /// Unit id `server/unit`.
    pub unit: String,
    /// `(userid, vault root)`, oldest backup first.
    pub users: Vec<(String, String)>,
}

/// One user as discovery saw it.
#[derive(Debug, Clone)]
pub struct SeenUser {
    /// The userid as `USERS` lists it.
    pub userid: String,
    /// Its INBOX's partition.
    pub partition: String,
    /// Unit name (without the server).
    pub unit: String,
}

/// What discovery changed for one server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiscoverCounts {
    /// Users the server listed.
    pub users: usize,
    /// Of those, not in the directory before.
    pub new: usize,
    /// Of those, on another drive unit than before.
    pub moved: usize,
    /// Users in the directory the server no longer lists (now marked gone).
    pub gone: usize,
    /// Drive units of the server.
    pub units: usize,
}

/// Directories made before `attempts.stored` existed get the column (0 for their
/// old attempts). Checked, then added in a write transaction, so workers opening one
/// old directory at once add it once.
fn add_stored_column(db: &mut dyn Sql) -> Result<()> {
    let probe = match db.dialect() {
        Dialect::Sqlite => {
            "SELECT COUNT(*) FROM pragma_table_info('attempts') WHERE name = 'stored'"
        }
        Dialect::Postgres => {
            "SELECT COUNT(*) FROM information_schema.columns \
             WHERE table_name = 'attempts' AND column_name = 'stored' \
             AND table_schema = current_schema()"
        }
    };
    let has = |db: &mut dyn Sql| -> Result<bool> {
        Ok(db
            .query(probe, &[])?
            .first()
            .is_some_and(|r| r[0].int() > 0))
    };
    if has(db)? {
        return Ok(());
    }
    db.begin()?;
    let r = match has(db) {
        Ok(true) => Ok(()),
        Ok(false) => db.batch("ALTER TABLE attempts ADD COLUMN stored BIGINT NOT NULL DEFAULT 0"),
        Err(e) => Err(e),
    };
    match r {
        Ok(()) => db.commit(),
        Err(e) => {
            db.rollback();
            Err(e)
        }
    }
}

/// The directory over one connection.
pub struct Directory {
    pub(super) db: Box<dyn Sql>,
    clock: Box<dyn Fn() -> i64 + Send>,
}

impl Directory {
    /// Wrap a connection and create the tables if needed.
    pub fn open(mut db: Box<dyn Sql>) -> Result<Directory> {
        db.batch(SCHEMA_COMMON)?;
        db.batch(match db.dialect() {
            Dialect::Sqlite => SCHEMA_SQLITE,
            Dialect::Postgres => SCHEMA_PG,
        })?;
        add_stored_column(db.as_mut())?;
        super::report::migrate(db.as_mut())?;
        Ok(Directory {
            db,
            clock: Box::new(super::now_ms),
        })
    }

    /// Replace the clock (ms since the epoch) claims, results and releases are
    /// stamped with (tests).
    pub fn set_clock(&mut self, clock: Box<dyn Fn() -> i64 + Send>) {
        self.clock = clock;
    }

    /// Which database is underneath.
    pub fn dialect(&self) -> Dialect {
        self.db.dialect()
    }

    fn tx<T>(&mut self, f: impl FnOnce(&mut dyn Sql) -> Result<T>) -> Result<T> {
        self.tx_at(|db, _| f(db))
    }

    /// A transaction whose time is read once the database's lock is held, so the
    /// claim trace orders as the database did (a claim that waited for the writer
    /// lock is not stamped before the release it waited for).
    fn tx_at<T>(&mut self, f: impl FnOnce(&mut dyn Sql, i64) -> Result<T>) -> Result<T> {
        self.db.begin()?;
        let now = (self.clock)();
        match f(self.db.as_mut(), now) {
            Ok(v) => {
                self.db.commit()?;
                Ok(v)
            }
            Err(e) => {
                self.db.rollback();
                Err(e)
            }
        }
    }

    /// Record what `discover` saw on `server`: its units (`unit name → partitions`)
    /// and users. Users no longer listed get `gone_since` (kept, not deleted); users
    /// listed again lose it. New users get `vault_for(userid)` as their vault root.
    pub fn record_discovery(
        &mut self,
        server: &str,
        address: &str,
        units: &[(String, Vec<String>)],
        users: &[SeenUser],
        vault_for: &dyn Fn(&str) -> String,
        now: i64,
    ) -> Result<DiscoverCounts> {
        self.tx(|db| {
            let mut c = DiscoverCounts {
                units: units.len(),
                users: users.len(),
                ..Default::default()
            };
            db.exec(
                "INSERT INTO servers (name, address, discovered_at) VALUES (?, ?, ?) \
                 ON CONFLICT (name) DO UPDATE SET address = excluded.address, \
                 discovered_at = excluded.discovered_at",
                &[server.into(), address.into(), now.into()],
            )?;
            for (unit, parts) in units {
                db.exec(
                    "INSERT INTO units (id, server, unit, partitions) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (id) DO UPDATE SET partitions = excluded.partitions",
                    &[
                        format!("{server}/{unit}").into(),
                        server.into(),
                        unit.as_str().into(),
                        parts.join(" ").into(),
                    ],
                )?;
            }
            let known: std::collections::HashMap<String, (String, bool)> = db
                .query(
                    "SELECT userid, unit, gone_since FROM users WHERE server = ?",
                    &[server.into()],
                )?
                .into_iter()
                .map(|r| (r[0].text(), (r[1].text(), r[2].opt_int().is_some())))
                .collect();
            let mut seen = std::collections::HashSet::new();
            for u in users {
                let unit = format!("{server}/{}", u.unit);
                seen.insert(u.userid.as_str());
                match known.get(&u.userid) {
                    None => {
                        c.new += 1;
                        db.exec(
                            "INSERT INTO users (server, userid, partition, unit, vault) \
                             VALUES (?, ?, ?, ?, ?)",
                            &[
                                server.into(),
                                u.userid.as_str().into(),
                                u.partition.as_str().into(),
                                unit.into(),
                                vault_for(&u.userid).into(),
                            ],
                        )?;
                    }
                    Some((old_unit, gone)) => {
                        if *old_unit != unit || *gone {
                            c.moved += usize::from(*old_unit != unit);
                        }
                        db.exec(
                            "UPDATE users SET partition = ?, unit = ?, gone_since = NULL \
                             WHERE server = ? AND userid = ?",
                            &[
                                u.partition.as_str().into(),
                                unit.into(),
                                server.into(),
                                u.userid.as_str().into(),
                            ],
                        )?;
                    }
                }
            }
            for (userid, (_, gone)) in &known {
                if !seen.contains(userid.as_str()) && !gone {
                    c.gone += 1;
                    db.exec(
                        "UPDATE users SET gone_since = ? WHERE server = ? AND userid = ?",
                        &[now.into(), server.into(), userid.as_str().into()],
                    )?;
                }
            }
            Ok(c)
        })
    }

    /// Join the open round (another host's `run` may have started it) or start one.
    /// An open round started more than `window_ms` ago (a run that was stopped) is
    /// closed instead of joined, so the next night backs everyone up again.
    pub fn join_round(&mut self, now: i64, window_ms: i64) -> Result<i64> {
        let pg = self.dialect() == Dialect::Postgres;
        self.tx(|db| {
            if pg {
                db.batch("LOCK TABLE rounds IN EXCLUSIVE MODE")?;
            }
            let open = db.query(
                "SELECT id, started FROM rounds WHERE finished IS NULL ORDER BY id DESC LIMIT 1",
                &[],
            )?;
            if let Some(r) = open.first() {
                if r[1].int() >= now.saturating_sub(window_ms) {
                    return Ok(r[0].int());
                }
                db.exec(
                    "UPDATE rounds SET finished = ? WHERE finished IS NULL",
                    &[now.into()],
                )?;
            }
            let next = db.query("SELECT COALESCE(MAX(id), 0) + 1 FROM rounds", &[])?;
            let id = next.first().map_or(1, |r| r[0].int());
            db.exec(
                "INSERT INTO rounds (id, started) VALUES (?, ?)",
                &[id.into(), now.into()],
            )?;
            Ok(id)
        })
    }

    /// Mark `round` finished (first caller wins; later callers change nothing).
    pub fn finish_round(&mut self, round: i64, now: i64) -> Result<()> {
        self.db.exec(
            "UPDATE rounds SET finished = ? WHERE id = ? AND finished IS NULL",
            &[now.into(), round.into()],
        )?;
        Ok(())
    }

    /// The newest round, finished or not.
    pub fn last_round(&mut self) -> Result<Option<i64>> {
        let r = self.db.query("SELECT MAX(id) FROM rounds", &[])?;
        Ok(r.first().and_then(|r| r[0].opt_int()))
    }

    /// Users still to try in `round` (leased or not).
    pub fn remaining(&mut self, round: i64, now: i64) -> Result<i64> {
        let r = self.db.query(
            "SELECT COUNT(*) FROM users WHERE gone_since IS NULL \
             AND (last_round IS NULL OR last_round <> ?) AND next_try <= ?",
            &[round.into(), now.into()],
        )?;
        Ok(r.first().map_or(0, |r| r[0].int()))
    }

    /// Claim a batch for `worker`: up to `batch` eligible users of ONE drive unit
    /// that has fewer than `unit_limit` workers (open, unexpired claims: a unit stays
    /// taken until its worker released the batch, not just until its last user) (and whose server has fewer than
    /// `server_limit`), the unit whose oldest backup is oldest first, its users
    /// oldest backup first. SQLite: the whole claim runs under `BEGIN IMMEDIATE`
    /// (one writer at a time). PostgreSQL: the unit row is locked `FOR UPDATE SKIP
    /// LOCKED` (two hosts never count one unit's workers at the same time), the
    /// server row `FOR UPDATE` when a server limit is set, the user rows `FOR UPDATE
    /// SKIP LOCKED`. Leases expire after `lease_ms`; expired leases count for nobody.
    pub fn claim(&mut self, worker: &str, round: i64, lim: Limits) -> Result<Option<Batch>> {
        let pg = self.dialect() == Dialect::Postgres;
        self.db.begin()?;
        let r = Self::claim_in(self.db.as_mut(), &self.clock, pg, worker, round, lim);
        match r {
            Ok(v) => {
                self.db.commit()?;
                Ok(v)
            }
            Err(e) => {
                self.db.rollback();
                Err(e)
            }
        }
    }

    fn claim_in(
        db: &mut dyn Sql,
        clock: &dyn Fn() -> i64,
        pg: bool,
        worker: &str,
        round: i64,
        lim: Limits,
    ) -> Result<Option<Batch>> {
        let now = clock();
        {
            let candidates = db.query(
                &format!(
                    "SELECT unit, server, MIN(COALESCE(last_success, 0)) AS oldest FROM users \
                     WHERE {ELIGIBLE} GROUP BY unit, server ORDER BY oldest, unit"
                ),
                &[round.into(), now.into(), now.into()],
            )?;
            for c in candidates {
                let (unit, server) = (c[0].text(), c[1].text());
                if pg {
                    let got = db.query(
                        "SELECT id FROM units WHERE id = ? FOR UPDATE SKIP LOCKED",
                        &[unit.as_str().into()],
                    )?;
                    if got.is_empty() {
                        continue;
                    }
                }
                let busy = db.query(
                    "SELECT COUNT(DISTINCT worker) FROM claims WHERE unit = ? \
                     AND released_at IS NULL AND expires_at >= ? AND worker <> ?",
                    &[unit.as_str().into(), now.into(), worker.into()],
                )?;
                if busy.first().map_or(0, |r| r[0].int()) >= lim.unit_limit as i64 {
                    continue;
                }
                if lim.server_limit > 0 {
                    if pg {
                        db.query(
                            "SELECT name FROM servers WHERE name = ? FOR UPDATE",
                            &[server.as_str().into()],
                        )?;
                    }
                    let busy = db.query(
                        "SELECT COUNT(DISTINCT worker) FROM claims WHERE server = ? \
                         AND released_at IS NULL AND expires_at >= ? AND worker <> ?",
                        &[server.as_str().into(), now.into(), worker.into()],
                    )?;
                    if busy.first().map_or(0, |r| r[0].int()) >= lim.server_limit as i64 {
                        continue;
                    }
                }
                let lock = if pg { " FOR UPDATE SKIP LOCKED" } else { "" };
                let rows = db.query(
                    &format!(
                        "SELECT userid, vault FROM users WHERE unit = ? AND {ELIGIBLE} \
                         ORDER BY COALESCE(last_success, 0), userid LIMIT ?{lock}"
                    ),
                    &[
                        unit.as_str().into(),
                        round.into(),
                        now.into(),
                        now.into(),
                        (lim.batch as i64).into(),
                    ],
                )?;
                if rows.is_empty() {
                    continue;
                }
                // stamped after the unit's lock and count: later than any release
                // or expiry the count relied on (PostgreSQL's BEGIN locks nothing)
                let now = clock().max(now);
                let expires = now.saturating_add(lim.lease_ms);
                let mut users = Vec::with_capacity(rows.len());
                for r in rows {
                    let (u, v) = (r[0].text(), r[1].text());
                    db.exec(
                        "UPDATE users SET lease_owner = ?, lease_expires = ? \
                         WHERE server = ? AND userid = ?",
                        &[
                            worker.into(),
                            expires.into(),
                            server.as_str().into(),
                            u.as_str().into(),
                        ],
                    )?;
                    users.push((u, v));
                }
                let id = db.query(
                    "INSERT INTO claims (round, worker, server, unit, users, claimed_at, expires_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    &[
                        round.into(),
                        worker.into(),
                        server.as_str().into(),
                        unit.as_str().into(),
                        (users.len() as i64).into(),
                        now.into(),
                        expires.into(),
                    ],
                )?;
                return Ok(Some(Batch {
                    claim: id.first().map_or(0, |r| r[0].int()),
                    server,
                    unit,
                    users,
                }));
            }
            Ok(None)
        }
    }

    /// Record one user's attempt and push the lease of the rest of the batch out.
    /// `Ok(false)`: the worker no longer holds the user's lease (it expired and
    /// another worker took it); nothing was recorded and the batch must stop.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        worker: &str,
        round: i64,
        b: &Batch,
        userid: &str,
        outcome: &std::result::Result<Transfer, (ErrorKind, String)>,
        backoff_ms: i64,
        lease_ms: i64,
        started: i64,
    ) -> Result<bool> {
        self.tx_at(|db, now| {
            let key = [b.server.as_str().into(), userid.into(), worker.into()];
            let held = db.query(
                "SELECT failures FROM users WHERE server = ? AND userid = ? AND lease_owner = ?",
                &key,
            )?;
            let Some(row) = held.first() else {
                return Ok(false);
            };
            let failures = row[0].int();
            match outcome {
                Ok(t) => {
                    db.exec(
                        "UPDATE users SET last_round = ?, last_result = 'ok', last_error = NULL, last_class = NULL, \
                         last_try = ?, last_success = ?, last_bytes = ?, failures = 0, next_try = 0, \
                         lease_owner = NULL, lease_expires = NULL WHERE server = ? AND userid = ?",
                        &[
                            round.into(),
                            now.into(),
                            now.into(),
                            (t.fetched as i64).into(),
                            b.server.as_str().into(),
                            userid.into(),
                        ],
                    )?;
                }
                Err((class, msg)) => {
                    // Waiting helps only what passes (a server down, a lock): a
                    // permanent class waits for the admin's fix, so the next run
                    // tries again at once and, until fixed, says so in its status.
                    let shift = failures.clamp(0, 10) as u32;
                    let wait = if *class == ErrorKind::Temporary {
                        backoff_ms.saturating_mul(1i64 << shift)
                    } else {
                        0
                    };
                    db.exec(
                        "UPDATE users SET last_round = ?, last_result = 'failed', last_error = ?, \
                         last_class = ?, last_try = ?, failures = failures + 1, next_try = ?, \
                         lease_owner = NULL, lease_expires = NULL WHERE server = ? AND userid = ?",
                        &[
                            round.into(),
                            msg.as_str().into(),
                            class.name().into(),
                            now.into(),
                            now.saturating_add(wait).into(),
                            b.server.as_str().into(),
                            userid.into(),
                        ],
                    )?;
                }
            }
            let none = Transfer::default();
            let (ok, t, err, class) = match outcome {
                Ok(t) => (1i64, t, Val::Null, Val::Null),
                Err((k, m)) => (0, &none, Val::T(m.clone()), k.name().into()),
            };
            let (prune_class, prune_error) = match &t.prune_failed {
                Some((k, m)) => (k.name().into(), Val::T(m.clone())),
                None => (Val::Null, Val::Null),
            };
            let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            db.exec(
                "INSERT INTO attempts (round, server, userid, unit, worker, started, finished, ok, \
                 bytes, error, stored, class, prune_class, prune_error) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                &[
                    round.into(),
                    b.server.as_str().into(),
                    userid.into(),
                    b.unit.as_str().into(),
                    worker.into(),
                    started.into(),
                    now.into(),
                    ok.into(),
                    as_i64(t.fetched).into(),
                    err,
                    as_i64(t.stored).into(),
                    class,
                    prune_class,
                    prune_error,
                ],
            )?;
            let expires = now.saturating_add(lease_ms);
            db.exec(
                "UPDATE users SET lease_expires = ? WHERE lease_owner = ?",
                &[expires.into(), worker.into()],
            )?;
            db.exec(
                "UPDATE claims SET expires_at = ? WHERE id = ?",
                &[expires.into(), b.claim.into()],
            )?;
            Ok(true)
        })
    }

    /// Push out the lease of everything `worker` holds (its heartbeat, so a live
    /// worker in a long backup never loses its batch; only a dead one does).
    pub fn renew(&mut self, worker: &str, lease_ms: i64) -> Result<()> {
        self.tx_at(|db, now| {
            let expires = now.saturating_add(lease_ms);
            db.exec(
                "UPDATE users SET lease_expires = ? WHERE lease_owner = ?",
                &[expires.into(), worker.into()],
            )?;
            db.exec(
                "UPDATE claims SET expires_at = ? WHERE worker = ? AND released_at IS NULL",
                &[expires.into(), worker.into()],
            )?;
            Ok(())
        })
    }

    /// Give back what is left of a batch.
    pub fn release(&mut self, worker: &str, b: &Batch) -> Result<()> {
        self.tx_at(|db, now| {
            db.exec(
                "UPDATE users SET lease_owner = NULL, lease_expires = NULL WHERE lease_owner = ?",
                &[worker.into()],
            )?;
            db.exec(
                "UPDATE claims SET released_at = ? WHERE id = ?",
                &[now.into(), b.claim.into()],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::sql::Lite;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    type Clock = Arc<AtomicI64>;

    /// Set the fake clock to `t` and hand the directory on.
    fn at<'a>(c: &Clock, t: i64, d: &'a mut Directory) -> &'a mut Directory {
        c.store(t, Ordering::SeqCst);
        d
    }

    fn dir_with(units: &[(&str, &[&str])]) -> (Directory, Clock) {
        let mut d = Directory::open(Box::new(Lite::open(":memory:").unwrap())).unwrap();
        let clk: Clock = Arc::new(AtomicI64::new(0));
        let c2 = clk.clone();
        d.set_clock(Box::new(move || c2.load(Ordering::SeqCst)));
        let mut us = Vec::new();
        for (unit, users) in units {
            for u in *users {
                us.push(SeenUser {
                    userid: u.to_string(),
                    partition: format!("p-{unit}"),
                    unit: unit.to_string(),
                });
            }
        }
        let un: Vec<(String, Vec<String>)> = units
            .iter()
            .map(|(u, _)| (u.to_string(), vec![format!("p-{u}")]))
            .collect();
        d.record_discovery("s1", "h:1", &un, &us, &|_| "/v".into(), 1)
            .unwrap();
        (d, clk)
    }

    const T5: Transfer = Transfer {
        fetched: 5,
        stored: 3,
        prune_failed: None,
    };

    const LIM: Limits = Limits {
        batch: 2,
        unit_limit: 1,
        server_limit: 0,
        lease_ms: 1000,
    };

    #[test]
    fn claims_respect_the_unit_limit_and_leases_expire() {
        let (mut d, clk) = dir_with(&[("a", &["u1", "u2", "u3"]), ("b", &["v1"])]);
        let r = d.join_round(10, 1000).unwrap();
        let b1 = at(&clk, 10, &mut d).claim("w1", r, LIM).unwrap().unwrap();
        assert_eq!(b1.users.len(), 2);
        let b2 = at(&clk, 10, &mut d).claim("w2", r, LIM).unwrap().unwrap();
        assert_ne!(b1.unit, b2.unit, "one worker per unit");
        assert!(
            at(&clk, 10, &mut d).claim("w3", r, LIM).unwrap().is_none(),
            "both units busy"
        );
        // w1 dies: after the lease its users go to w3
        let b3 = at(&clk, 2000, &mut d).claim("w3", r, LIM).unwrap().unwrap();
        assert_eq!(b3.unit, b1.unit);
        assert!(
            !at(&clk, 2001, &mut d)
                .record("w1", r, &b1, "u1", &Ok(T5), 0, 1000, 10)
                .unwrap()
        );
        for (u, _) in &b3.users {
            assert!(
                at(&clk, 2001, &mut d)
                    .record("w3", r, &b3, u, &Ok(T5), 0, 1000, 2000)
                    .unwrap()
            );
        }
        at(&clk, 2002, &mut d).release("w3", &b3).unwrap();
        assert_eq!(
            d.remaining(r, 2003).unwrap(),
            2,
            "u3 and v1 left (v1 leased by w2)"
        );
    }

    /// A backup whose prune failed counts as backed up (last success, no backoff,
    /// not a failure) and is listed with the prune's class, which the round's worst
    /// class takes in.
    #[test]
    fn a_failed_prune_is_recorded_beside_a_good_backup() {
        let (mut d, clk) = dir_with(&[("a", &["u1", "u2"])]);
        let r = d.join_round(10, 1000).unwrap();
        let b = at(&clk, 10, &mut d).claim("w", r, LIM).unwrap().unwrap();
        let pruned_badly = Transfer {
            prune_failed: Some((ErrorKind::Data, "prune: damaged member".into())),
            ..T5
        };
        for (u, t) in [("u1", &pruned_badly), ("u2", &T5)] {
            assert!(
                at(&clk, 20, &mut d)
                    .record("w", r, &b, u, &Ok(t.clone()), 100, 1000, 10)
                    .unwrap()
            );
        }
        at(&clk, 21, &mut d).release("w", &b).unwrap();
        assert!(d.failures(r).unwrap().is_empty());
        assert_eq!(d.successes(r).unwrap().len(), 2);
        let p = d.prune_failures(r).unwrap();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            (p[0].userid.as_str(), p[0].class, p[0].error.as_str()),
            ("u1", ErrorKind::Data, "prune: damaged member")
        );
        assert_eq!(d.worst_class(r).unwrap(), Some(ErrorKind::Data));
        let s = d.summary(r).unwrap();
        assert_eq!((s[0].ok, s[0].failed, s[0].prune_failed), (2, 0, 1));
        assert_eq!(d.stale(20).unwrap().len(), 0, "both have a good backup");
    }

    #[test]
    fn failures_back_off_and_gone_users_are_kept() {
        let (mut d, clk) = dir_with(&[("a", &["u1", "u2"])]);
        let r = d.join_round(10, 1000).unwrap();
        let b = at(&clk, 10, &mut d).claim("w", r, LIM).unwrap().unwrap();
        assert_eq!(b.users.len(), 2);
        // u1: a temporary failure (backs off); u2: a permanent one (does not)
        for (u, class, msg) in [
            ("u1", ErrorKind::Temporary, "down"),
            ("u2", ErrorKind::Permission, "refused"),
        ] {
            at(&clk, 20, &mut d)
                .record("w", r, &b, u, &Err((class, msg.into())), 100, 1000, 10)
                .unwrap();
        }
        at(&clk, 21, &mut d).release("w", &b).unwrap();
        let f = d.failures(r).unwrap();
        assert_eq!(
            (f[0].error.as_str(), f[0].class),
            ("down", ErrorKind::Temporary)
        );
        assert_eq!(f[1].class, ErrorKind::Permission);
        assert_eq!(d.worst_class(r).unwrap(), Some(ErrorKind::Permission));
        assert_eq!(
            d.remaining(r, 22).unwrap(),
            0,
            "no one is tried twice in a round"
        );
        assert!(at(&clk, 500, &mut d).claim("w", r, LIM).unwrap().is_none());
        d.finish_round(r, 23).unwrap();
        let r2 = d.join_round(24, 1000).unwrap();
        assert_eq!(r2, r + 1);
        assert_eq!(
            d.join_round(25, 1000).unwrap(),
            r2,
            "an open round is joined"
        );
        assert_eq!(
            d.join_round(5000, 1000).unwrap(),
            r2 + 1,
            "a stale open round is closed, not joined"
        );
        let b2 = at(&clk, 50, &mut d).claim("w", r2, LIM).unwrap().unwrap();
        assert_eq!(
            b2.users,
            vec![("u2".to_string(), "/v".to_string())],
            "the permanent failure is tried by the next round at once; u1 is in backoff until 120"
        );
        at(&clk, 51, &mut d).release("w", &b2).unwrap();
        let b3 = at(&clk, 130, &mut d).claim("w", r2, LIM).unwrap().unwrap();
        assert_eq!(b3.users.len(), 2, "{b3:?}");
        let c = d
            .record_discovery("s1", "h:1", &[], &[], &|_| "/v".into(), 200)
            .unwrap();
        assert_eq!(c.gone, 2);
        assert_eq!(
            d.stale(i64::MAX).unwrap().len(),
            0,
            "gone users are not stale"
        );
    }
}
