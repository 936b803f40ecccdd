//! The per-user SQLite catalog that sits beside the archive: which runs exist, where
//! every message and meta file lives in the archive, and what every folder looked like
//! at every run. All of cyrvault's SQL lives in this module.
//!
//! The catalog is DERIVED data: the archive is the truth, and `cyrvault reindex USER`
//! rebuilds the catalog from the archive alone ([`Catalog::create_fresh`], then the
//! same [`RunTx`] calls the backup made, then [`Catalog::install`]). Both ways give the
//! same [`Catalog::dump_canonical`]; `tests/catalog.rs` proves it.
//!
//! Files: `schema.rs` (DDL, [`SCHEMA_VERSION`]), `write.rs` (one transaction per run:
//! [`RunTx`]), `replay.rs` (a whole run from its manifest: [`Catalog::write_run`]),
//! `query.rs` (typed reads), `dump.rs` (canonical dump, stats), `audit.rs` (raw reads
//! for `verify`), `retention.rs` (holds, erasures, prunes, the archive generation),
//! `error.rs` ([`CatalogError`]). The tables are described for operators in
//! `doc/catalog.md`.
//!
//! Durability: the archive member is written and fsynced first, then the run's catalog
//! transaction commits. A crash between the two leaves an archive ahead of the
//! catalog, never the reverse. [`Catalog::open`] commits with `synchronous = FULL`
//! (WAL): a commit is on disk when it returns. The backup opens with
//! [`Catalog::open_backup`] instead: `synchronous = NORMAL` and no checkpoint on
//! close, so a commit costs no fsync (the WAL is synced only when it is checkpointed,
//! every ~1000 pages). A power loss may then take the latest commits with it, never
//! corrupt the file; those runs' manifests are in the archive (fsynced before the
//! commit), past what the catalog has, and the next backup replays them
//! (`backup::recover`) exactly as after a kill between the manifest's fsync and the
//! commit. doc/backup.md, "Crash safety".
#![forbid(unsafe_code)]

mod audit;
mod check;
mod dump;
mod error;
mod query;
mod replay;
mod retention;
mod schema;
mod write;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

pub use audit::{CatalogCounts, LocKind, LocRow, RawLoc, RawMember, UnheldRecord};
pub use check::Check;
pub use dump::CatalogStats;
pub use error::{CatalogError, Result};
pub use query::{
    FolderAt, FolderSnapshot, LiveFolder, MessageUse, MetaEntry, MetaUse, NameSpan, RecordUse,
    RunInfo,
};
pub use replay::RunParts;
pub use retention::{DeletedFolder, MessageLife, Needs, RetentionRow};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use write::{FolderMeta, FolderRef, MemberRow, RunHeader, RunTx};

use crate::io_error::IoContext;
use schema::Found;

/// Whether a commit is on disk when it returns (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// `synchronous = FULL`: every commit fsyncs the WAL.
    Full,
    /// `synchronous = NORMAL`, no checkpoint on close: commits are not fsynced; the
    /// WAL is synced when a checkpoint copies it (~every 1000 pages).
    Deferred,
}

/// Pages the backup lets the WAL grow to before SQLite checkpoints it (1 MiB): the
/// first reader to open the catalog afterwards reads every frame of the WAL to rebuild
/// its index, so `cat` and `ls` pay for the WAL's length.
const WAL_PAGES: i64 = 256;

/// How long a writer or reader waits for another process's lock on the catalog.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// An open catalog.
#[derive(Debug)]
pub struct Catalog {
    conn: Connection,
    path: PathBuf,
    /// Set by [`Catalog::create_fresh`]: where [`Catalog::install`] moves the file.
    install_to: Option<PathBuf>,
}

/// Attach "what we were doing, to which catalog" to a rusqlite result.
pub(crate) trait DbContext<T> {
    fn db(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> DbContext<T> for rusqlite::Result<T> {
    fn db(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| CatalogError::Db {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}

pub(crate) fn misuse(path: &Path, what: impl Into<String>) -> CatalogError {
    CatalogError::Misuse {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

pub(crate) fn corrupt(path: &Path, what: impl Into<String>) -> CatalogError {
    CatalogError::Corrupt {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

impl Catalog {
    /// Open the catalog at `path`, creating it (with the current schema) if the file
    /// does not exist. A catalog with a newer schema is refused with
    /// [`CatalogError::SchemaTooNew`] naming both versions; a SQLite file that is not a
    /// catalog with [`CatalogError::NotACatalog`].
    pub fn open(path: &Path) -> Result<Catalog> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        Self::open_with(path, flags, Durability::Full)
    }

    /// Open (or create) the catalog as the backup does: like [`Catalog::open`], but a
    /// commit is not fsynced and closing does not checkpoint (module docs: the
    /// archive, fsynced first, holds every run a power loss could take from the
    /// catalog, and the next backup replays it). An unchanged user's check and a
    /// changed user's run thus cost the catalog no fsync.
    pub fn open_backup(path: &Path) -> Result<Catalog> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        Self::open_with(path, flags, Durability::Deferred)
    }

    /// Open an existing catalog; a missing file is the service's `NotFound` (for the
    /// read-only admin commands, which must not leave an empty catalog behind).
    pub fn open_existing(path: &Path) -> Result<Catalog> {
        if !path.exists() {
            return Err(CatalogError::not_found(
                "catalog",
                path.display().to_string(),
            ));
        }
        Self::open_with(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            Durability::Full,
        )
    }

    /// Open an existing catalog for reading only: nothing is ever written to it (no schema
    /// into an empty file, no journal mode change), for `verify` and the other read-only
    /// admin commands. A missing file is the service's `NotFound`; an empty one, or a
    /// database without our schema, [`CatalogError::NotACatalog`].
    pub fn open_read_only(path: &Path) -> Result<Catalog> {
        if !path.exists() {
            return Err(CatalogError::not_found(
                "catalog",
                path.display().to_string(),
            ));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).db("opening", path)?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .db("setting busy_timeout", path)?;
        match schema::inspect(&conn).db("reading the schema version", path)? {
            // An older schema a writer would migrate reads as the current one, without
            // writing (what it lacks reads as NULL or empty).
            Found::Version(v)
                if v < SCHEMA_VERSION
                    && schema::read_as_current(&conn, v).db("reading an older schema", path)? => {}
            Found::Version(v) => check_version(path, v)?,
            Found::Empty | Found::Foreign => {
                return Err(CatalogError::NotACatalog {
                    path: path.to_path_buf(),
                });
            }
        }
        Ok(Catalog {
            conn,
            path: path.to_path_buf(),
            install_to: None,
        })
    }

    fn open_with(path: &Path, flags: OpenFlags, durability: Durability) -> Result<Catalog> {
        let mut conn = Connection::open_with_flags(path, flags).db("opening", path)?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .db("setting busy_timeout", path)?;
        // WAL lets readers (ls, verify) run beside the writer. FULL: a commit
        // survives power loss. Deferred (the backup): it may not, and the run is
        // replayed from the archive (module docs).
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .db("setting journal_mode", path)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(corrupt(
                path,
                format!("journal_mode is {mode}, WAL was refused"),
            ));
        }
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Deferred => {
                conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
                    .db("keeping the WAL on close", path)?;
                // Readers rebuild the WAL index by reading every frame of the WAL when
                // they are the first to open the file: keep it short.
                conn.pragma_update(None, "wal_autocheckpoint", WAL_PAGES)
                    .db("setting wal_autocheckpoint", path)?;
                conn.pragma_update(None, "journal_size_limit", WAL_PAGES * 4096)
                    .db("setting journal_size_limit", path)?;
                "NORMAL"
            }
        };
        conn.pragma_update(None, "synchronous", sync)
            .db("setting synchronous", path)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .db("enabling foreign keys", path)?;
        match schema::inspect(&conn).db("reading the schema version", path)? {
            Found::Empty => schema::create(&mut conn).db("creating the schema", path)?,
            Found::Version(v) => {
                if v < SCHEMA_VERSION && schema::migrate(&mut conn, v).db("migrating", path)? {
                    log::info!(
                        target: "cyrvault::catalog",
                        "{}: schema version {v} upgraded to {SCHEMA_VERSION}",
                        path.display()
                    );
                } else {
                    check_version(path, v)?;
                }
            }
            Found::Foreign => {
                return Err(CatalogError::NotACatalog {
                    path: path.to_path_buf(),
                });
            }
        }
        Ok(Catalog {
            conn,
            path: path.to_path_buf(),
            install_to: None,
        })
    }

    /// Start a new catalog for `reindex`: the database is built at `<path>.new` (a stale
    /// one from an interrupted reindex is removed first) and only [`Catalog::install`]
    /// puts it in place, so the old catalog stays usable until the new one is complete.
    pub fn create_fresh(path: &Path) -> Result<Catalog> {
        let new = sibling(path, ".new");
        for p in [new.clone(), sibling(&new, "-wal"), sibling(&new, "-shm")] {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(CatalogError::io("removing stale", &p, e));
                }
                _ => {}
            }
        }
        let mut c = Self::open(&new)?;
        c.install_to = Some(path.to_path_buf());
        Ok(c)
    }

    /// Move a catalog made by [`Catalog::create_fresh`] into place and return it opened
    /// at its final path. The caller holds the user's archive lock, so no one else has
    /// the old catalog open. The old catalog's `-wal`/`-shm` are removed *before* the
    /// rename: SQLite would otherwise replay the old WAL into the new file.
    pub fn install(self) -> Result<Catalog> {
        let target = self.seal()?;
        Self::install_sealed(&target)?;
        Catalog::open(&target)
    }

    /// Finish a catalog made by [`Catalog::create_fresh`] without putting it in place:
    /// it leaves WAL mode (so the whole database is the one `<path>.new` file), is
    /// closed and fsynced. Returns the final path; [`Catalog::install_sealed`] moves it
    /// there. Retention seals the new catalog before it swaps the archive, so a crash
    /// between the two renames finds it complete (`doc/retention.md`).
    pub fn seal(self) -> Result<PathBuf> {
        let Some(target) = self.install_to.clone() else {
            return Err(misuse(
                &self.path,
                "seal() on a catalog not made by create_fresh",
            ));
        };
        let new = self.path.clone();
        self.conn
            .pragma_update(None, "journal_mode", "DELETE")
            .db("checkpointing", &new)?;
        self.conn.close().map_err(|(_, e)| e).db("closing", &new)?;
        std::fs::File::open(&new)
            .and_then(|f| f.sync_all())
            .at("fsyncing", &new)?;
        Ok(target)
    }

    /// Where a sealed new catalog for `target` waits to be installed: `<target>.new`.
    pub fn pending_path(target: &Path) -> PathBuf {
        sibling(target, ".new")
    }

    /// Move the sealed `<target>.new` over `target`: the old catalog's `-wal`/`-shm`
    /// go first (SQLite would replay an old WAL into the new file), then the rename and
    /// an fsync of the directory. The caller holds the archive's lock.
    pub fn install_sealed(target: &Path) -> Result<()> {
        let new = sibling(target, ".new");
        for p in [sibling(target, "-wal"), sibling(target, "-shm")] {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(CatalogError::io("removing old", &p, e));
                }
                _ => {}
            }
        }
        std::fs::rename(&new, target).at("renaming into place", target)?;
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|f| f.sync_all())
                .at("fsyncing", dir)?;
        }
        Ok(())
    }

    /// Throw away a catalog made by [`Catalog::create_fresh`] (a refused `reindex`):
    /// the `.new` file goes, the catalog at the final path is not touched.
    pub fn discard(self) -> Result<()> {
        if self.install_to.is_none() {
            return Err(misuse(
                &self.path,
                "discard() on a catalog not made by create_fresh",
            ));
        }
        let new = self.path.clone();
        self.conn.close().map_err(|(_, e)| e).db("closing", &new)?;
        for p in [new.clone(), sibling(&new, "-wal"), sibling(&new, "-shm")] {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(CatalogError::io("removing", &p, e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// After a backup's commit: if the WAL has grown past [`WAL_PAGES`] (a run that
    /// changed thousands of records: one transaction cannot be checkpointed while it
    /// is written), fold it into the file and truncate it (two fsyncs, paid only by
    /// such large runs), so that readers opening the catalog next do not read it all.
    /// Returns whether it checkpointed.
    pub fn settle(&mut self) -> Result<bool> {
        let mut wal = self.path.as_os_str().to_os_string();
        wal.push("-wal");
        let len = std::fs::metadata(PathBuf::from(wal)).map_or(0, |m| m.len());
        if len <= u64::try_from(WAL_PAGES).unwrap_or(0) * 4200 {
            return Ok(false);
        }
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .db("checkpointing", &self.path)?;
        Ok(true)
    }

    /// Change how long calls wait for another process's lock (default
    /// [`BUSY_TIMEOUT`]); past it they fail with a temporary error.
    pub fn set_busy_timeout(&mut self, t: Duration) -> Result<()> {
        self.conn
            .busy_timeout(t)
            .db("setting busy_timeout", &self.path)
    }

    /// The file this catalog is in (for a fresh one, the `.new` file).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `PRAGMA integrity_check` and `foreign_key_check`: empty when all is well,
    /// otherwise SQLite's complaints.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut st = self
            .conn
            .prepare("PRAGMA integrity_check")
            .db("checking integrity", &self.path)?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .db("checking integrity", &self.path)?;
        for r in rows {
            let r = r.db("checking integrity", &self.path)?;
            if r != "ok" {
                out.push(r);
            }
        }
        let mut st = self
            .conn
            .prepare("PRAGMA foreign_key_check")
            .db("checking foreign keys", &self.path)?;
        let rows = st
            .query_map([], |r| {
                Ok(format!(
                    "foreign key: {} row {:?} -> {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, String>(2)?
                ))
            })
            .db("checking foreign keys", &self.path)?;
        for r in rows {
            out.push(r.db("checking foreign keys", &self.path)?);
        }
        Ok(out)
    }
}

/// Refuse a schema we cannot read. Also called inside each write transaction, so a
/// newer cyrvault upgrading the file under a long-running older one is noticed.
pub(crate) fn check_version(path: &Path, found: i64) -> Result<()> {
    if found == SCHEMA_VERSION {
        Ok(())
    } else if found > SCHEMA_VERSION {
        Err(CatalogError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        })
    } else {
        Err(CatalogError::SchemaTooOld {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        })
    }
}

/// `path` with `suffix` appended to its file name (`cat.sqlite` -> `cat.sqlite.new`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}
