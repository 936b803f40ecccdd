//! The catalog's DDL and its version. `doc/catalog.md` describes every table for
//! operators; change both in the same commit and bump [`SCHEMA_VERSION`] on any
//! change a previous cyrvault could misread.
//!
//! The version lives in `PRAGMA user_version` (and, for people poking with the
//! `sqlite3` shell, in the `meta` table); `PRAGMA application_id` marks the file as a
//! cyrvault catalog. Run intervals are half-open: a row with `from_run = A` and
//! `to_run = B` is valid for runs `A <= run < B`; `to_run IS NULL` means "still
//! current".
#![forbid(unsafe_code)]

use rusqlite::Connection;

/// Version of the schema this cyrvault writes and reads. History:
/// 1 — first version (runs, members, messages, folders, folder_names, folder_runs,
///     records, user_files, meta).
/// 2 — `folder_names.deleted_at`: a name interval during which the folder sat in
///     Cyrus's delayed-delete area (migrated from 1 in place by [`migrate`]).
/// 3 — retention: `retention_events`, `erased_messages`; `folder_runs.snapshot_run`
///     and `user_files.snapshot_run` no longer reference `runs` (they name the
///     entries' run, which a prune may have removed while its entries still describe
///     kept runs); the archive's generation in `meta`. Migrated from 2 in place.
/// 4 — `user_files.kind` may also be `quota` (the QUOTA extension; migrated from 3
///     in place: `user_files` rebuilt with the wider CHECK).
pub const SCHEMA_VERSION: i64 = 4;

/// `PRAGMA application_id` of a cyrvault catalog: "cyrv" in ASCII.
pub const APPLICATION_ID: i64 = 0x6379_7276;

/// The tables and indexes of [`SCHEMA_VERSION`]. Columns are described in
/// `doc/catalog.md`.
pub(crate) const DDL: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE runs (
    run              INTEGER PRIMARY KEY,
    started          INTEGER NOT NULL,
    finished         INTEGER NOT NULL,
    server           TEXT NOT NULL,
    user             TEXT NOT NULL,
    tool_version     TEXT NOT NULL,
    manifest_member  INTEGER,
    manifest_offset  INTEGER,
    manifest_size    INTEGER,
    status           TEXT NOT NULL CHECK (status IN ('complete'))
);

CREATE TABLE members (
    offset            INTEGER PRIMARY KEY,
    compressed_len    INTEGER NOT NULL,
    uncompressed_len  INTEGER NOT NULL,
    run               INTEGER NOT NULL REFERENCES runs(run),
    crc32             INTEGER
);
CREATE INDEX members_by_run ON members(run);

CREATE TABLE messages (
    guid              BLOB PRIMARY KEY CHECK (length(guid) = 20),
    size              INTEGER NOT NULL,
    member_offset     INTEGER NOT NULL REFERENCES members(offset),
    offset_in_member  INTEGER NOT NULL,
    first_run         INTEGER NOT NULL REFERENCES runs(run)
) WITHOUT ROWID;
CREATE INDEX messages_by_member ON messages(member_offset);

CREATE TABLE folders (
    uniqueid       TEXT PRIMARY KEY,
    first_run      INTEGER NOT NULL REFERENCES runs(run),
    last_seen_run  INTEGER NOT NULL REFERENCES runs(run),
    deleted_run    INTEGER REFERENCES runs(run)
) WITHOUT ROWID;

CREATE TABLE folder_names (
    uniqueid       TEXT NOT NULL REFERENCES folders(uniqueid),
    name           TEXT NOT NULL,
    internal_name  TEXT NOT NULL,
    from_run       INTEGER NOT NULL REFERENCES runs(run),
    to_run         INTEGER REFERENCES runs(run),
    deleted_at     INTEGER,
    PRIMARY KEY (uniqueid, from_run)
) WITHOUT ROWID;
CREATE INDEX folder_names_by_name ON folder_names(name, from_run);

CREATE TABLE folder_runs (
    uniqueid          TEXT NOT NULL REFERENCES folders(uniqueid),
    run               INTEGER NOT NULL REFERENCES runs(run),
    snapshot_run      INTEGER NOT NULL,
    uidvalidity       INTEGER NOT NULL,
    highestmodseq     INTEGER NOT NULL,
    last_uid          INTEGER NOT NULL,
    exists_count      INTEGER NOT NULL,
    state             TEXT NOT NULL,
    header_member     INTEGER, header_offset INTEGER, header_size INTEGER,
    index_member      INTEGER, index_offset INTEGER, index_size INTEGER,
    annot_member      INTEGER, annot_offset INTEGER, annot_size INTEGER,
    state_member      INTEGER, state_offset INTEGER, state_size INTEGER,
    PRIMARY KEY (uniqueid, run)
) WITHOUT ROWID;
CREATE INDEX folder_runs_by_run ON folder_runs(run);

CREATE TABLE records (
    id            INTEGER PRIMARY KEY,
    uniqueid      TEXT NOT NULL REFERENCES folders(uniqueid),
    uid           INTEGER NOT NULL,
    guid          BLOB NOT NULL CHECK (length(guid) = 20),
    system_flags  INTEGER NOT NULL,
    keywords      TEXT NOT NULL,
    internaldate  INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    modseq        INTEGER NOT NULL,
    last_updated  INTEGER NOT NULL,
    savedate      INTEGER NOT NULL,
    from_run      INTEGER NOT NULL REFERENCES runs(run),
    to_run        INTEGER REFERENCES runs(run),
    CHECK (to_run IS NULL OR to_run > from_run)
);
CREATE INDEX records_by_folder_uid ON records(uniqueid, uid, from_run);
CREATE INDEX records_current ON records(uniqueid, uid) WHERE to_run IS NULL;
CREATE INDEX records_by_guid ON records(guid);
CREATE INDEX records_by_from_run ON records(from_run);

CREATE TABLE user_files (
    run               INTEGER NOT NULL REFERENCES runs(run),
    snapshot_run      INTEGER NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('seen', 'subs', 'sieve', 'quota')),
    name              TEXT NOT NULL,
    active            INTEGER NOT NULL,
    member_offset     INTEGER NOT NULL,
    offset_in_member  INTEGER NOT NULL,
    size              INTEGER NOT NULL,
    PRIMARY KEY (run, kind, name)
) WITHOUT ROWID;
";

/// The retention tables (version 3), also what [`migrate`] adds to an older catalog.
pub(crate) const RETENTION_DDL: &str = "
CREATE TABLE retention_events (
    seq               INTEGER PRIMARY KEY,
    kind              TEXT NOT NULL CHECK (kind IN ('hold', 'release', 'erase', 'prune')),
    at                INTEGER NOT NULL,
    reason            TEXT NOT NULL,
    until             INTEGER,
    releases          INTEGER,
    up_to_run         INTEGER,
    event             TEXT NOT NULL,
    member_offset     INTEGER NOT NULL,
    offset_in_member  INTEGER NOT NULL,
    size              INTEGER NOT NULL
);

CREATE TABLE erased_messages (
    guid       BLOB PRIMARY KEY CHECK (length(guid) = 20),
    size       INTEGER NOT NULL,
    seq        INTEGER NOT NULL REFERENCES retention_events(seq),
    up_to_run  INTEGER NOT NULL,
    permanent  INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Create the schema in an empty database, inside one transaction.
pub(crate) fn create(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute_batch(DDL)?;
    tx.execute_batch(RETENTION_DDL)?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?1), ('created_by', ?2)",
        (
            SCHEMA_VERSION.to_string(),
            format!("cyrvault {}", env!("CARGO_PKG_VERSION")),
        ),
    )?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

/// Bring a catalog of an older schema version up to [`SCHEMA_VERSION`] in one
/// transaction, step by step. No step changes a derived fact: each adds what the older
/// version could not have held (a version-1 catalog never saw a delayed-delete folder,
/// a version-2 one never saw a prune). Returns whether anything was done.
/// * 1 → 2: `folder_names.deleted_at`;
/// * 2 → 3: `folder_runs` and `user_files` copied into tables without the
///   `snapshot_run` reference (SQLite cannot drop a constraint in place; nothing
///   references these two tables), and the retention tables created;
/// * 3 → 4: `user_files` copied again, into a table whose CHECK admits `quota` (a
///   version-3 catalog never held a quota file).
pub(crate) fn migrate(conn: &mut Connection, found: i64) -> rusqlite::Result<bool> {
    if !(1..SCHEMA_VERSION).contains(&found) {
        return Ok(false);
    }
    // A table of the current DDL under a temporary name, to copy rows into.
    let table = |name: &str| -> String {
        let start = DDL.find(&format!("CREATE TABLE {name} (")).unwrap_or(0);
        let end = DDL[start..].find(';').map_or(DDL.len(), |e| start + e + 1);
        DDL[start..end].replacen(
            &format!("CREATE TABLE {name} ("),
            &format!("CREATE TABLE {name}_v3 ("),
            1,
        )
    };
    let tx = conn.transaction()?;
    if found < 2 {
        tx.execute_batch("ALTER TABLE folder_names ADD COLUMN deleted_at INTEGER;")?;
    }
    if found < 3 {
        tx.execute_batch(&table("folder_runs"))?;
        tx.execute_batch(
            "INSERT INTO folder_runs_v3 SELECT * FROM folder_runs;
             DROP TABLE folder_runs;
             ALTER TABLE folder_runs_v3 RENAME TO folder_runs;
             CREATE INDEX folder_runs_by_run ON folder_runs(run);",
        )?;
        tx.execute_batch(RETENTION_DDL)?;
    }
    if found < 4 {
        // `user_files` from the current DDL: without the `snapshot_run` reference
        // (from 2) and with the `quota` kind (from 2 and 3); rows unchanged.
        tx.execute_batch(&table("user_files"))?;
        tx.execute_batch(
            "INSERT INTO user_files_v3 SELECT * FROM user_files;
             DROP TABLE user_files;
             ALTER TABLE user_files_v3 RENAME TO user_files;",
        )?;
    }
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
        [SCHEMA_VERSION.to_string()],
    )?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(true)
}

/// Let a read-only connection to a catalog of an older schema version answer every
/// query of [`SCHEMA_VERSION`] without writing to the file: a `TEMP` view shadows each
/// table the newer version changed (SQLite looks in the temp schema first), with the
/// columns the older version cannot have held as NULL. The retention tables of
/// version 3 need nothing: their readers find them absent and answer empty; nor does
/// version 4's `quota` kind, which an older catalog never holds. Returns
/// whether `found` is handled so.
pub(crate) fn read_as_current(conn: &Connection, found: i64) -> rusqlite::Result<bool> {
    if !(1..SCHEMA_VERSION).contains(&found) {
        return Ok(false);
    }
    if found < 2 {
        conn.execute_batch(
            "CREATE TEMP VIEW folder_names AS
                 SELECT uniqueid, name, internal_name, from_run, to_run, NULL AS deleted_at
                 FROM main.folder_names;",
        )?;
    }
    Ok(true)
}

/// What an opened database is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// No tables at all: a new file.
    Empty,
    /// A cyrvault catalog of this schema version.
    Version(i64),
    /// Tables, but not ours.
    Foreign,
}

/// Look at `application_id`, `user_version` and whether there are tables.
pub(crate) fn inspect(conn: &Connection) -> rusqlite::Result<Found> {
    let app: i64 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
        [],
        |r| r.get(0),
    )?;
    Ok(if tables == 0 && app == 0 && version == 0 {
        Found::Empty
    } else if app == APPLICATION_ID {
        Found::Version(version)
    } else {
        Found::Foreign
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_creates_and_is_recognised() {
        let mut c = Connection::open_in_memory().unwrap();
        assert_eq!(inspect(&c).unwrap(), Found::Empty);
        create(&mut c).unwrap();
        assert_eq!(inspect(&c).unwrap(), Found::Version(SCHEMA_VERSION));
        let v: String = c
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION.to_string());
    }

    /// The version-2 DDL: today's with the references version 3 dropped.
    fn v2_ddl() -> String {
        DDL.replace(
            "snapshot_run      INTEGER NOT NULL,",
            "snapshot_run      INTEGER NOT NULL REFERENCES runs(run),",
        )
    }

    #[test]
    fn version_2_is_migrated_in_place() {
        let mut c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "foreign_keys", "ON").unwrap();
        c.execute_batch(&v2_ddl()).unwrap();
        c.execute("INSERT INTO meta VALUES ('schema_version', '2')", [])
            .unwrap();
        c.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        c.pragma_update(None, "user_version", 2).unwrap();
        c.execute_batch(
            "INSERT INTO runs VALUES (1, 0, 0, 's', 'u', 't', NULL, NULL, NULL, 'complete');
             INSERT INTO folders VALUES ('f', 1, 1, NULL);
             INSERT INTO folder_runs (uniqueid, run, snapshot_run, uidvalidity, highestmodseq,
                 last_uid, exists_count, state) VALUES ('f', 1, 1, 1, 1, 0, 0, '{}');
             INSERT INTO user_files VALUES (1, 1, 'seen', 'seen', 0, 0, 0, 0);",
        )
        .unwrap();
        // version 2 refuses a snapshot run that is not a run
        assert!(
            c.execute(
                "INSERT INTO user_files VALUES (1, 9, 'subs', 'subs', 0, 0, 0, 0)",
                []
            )
            .is_err()
        );
        assert!(migrate(&mut c, 2).unwrap());
        assert_eq!(inspect(&c).unwrap(), Found::Version(SCHEMA_VERSION));
        let n: i64 = c
            .query_row("SELECT count(*) FROM folder_runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "rows kept");
        c.execute(
            "INSERT INTO user_files VALUES (1, 9, 'subs', 'subs', 0, 0, 0, 0)",
            [],
        )
        .unwrap();
        let fk: i64 = c
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(fk, 0);
        c.execute_batch("SELECT * FROM retention_events; SELECT * FROM erased_messages;")
            .unwrap();
        assert!(!migrate(&mut c, SCHEMA_VERSION).unwrap());
    }

    #[test]
    fn version_1_is_migrated_in_place() {
        let mut c = Connection::open_in_memory().unwrap();
        // the version-1 DDL: version 2's without the column version 2 added
        let v1 = v2_ddl().replace("    deleted_at     INTEGER,\n", "");
        assert_ne!(v1, DDL);
        c.execute_batch(&v1).unwrap();
        c.execute("INSERT INTO meta VALUES ('schema_version', '1')", [])
            .unwrap();
        c.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        assert_eq!(inspect(&c).unwrap(), Found::Version(1));
        assert!(migrate(&mut c, 1).unwrap());
        assert_eq!(inspect(&c).unwrap(), Found::Version(SCHEMA_VERSION));
        c.execute(
            "INSERT INTO runs VALUES (1, 0, 0, 's', 'u', 't', NULL, NULL, NULL, 'complete')",
            [],
        )
        .unwrap();
        c.execute("INSERT INTO folders VALUES ('f', 1, 1, NULL)", [])
            .unwrap();
        c.execute(
            "INSERT INTO folder_names VALUES ('f', 'n', 'i', 1, NULL, 5)",
            [],
        )
        .unwrap();
        assert!(!migrate(&mut c, SCHEMA_VERSION).unwrap());
    }

    #[test]
    fn version_1_is_read_as_current_without_writing() {
        let dir = std::env::temp_dir().join(format!("cyrvault-schema1-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(&v2_ddl().replace("    deleted_at     INTEGER,\n", ""))
                .unwrap();
            c.execute("INSERT INTO meta VALUES ('schema_version', '1')", [])
                .unwrap();
            c.execute(
                "INSERT INTO runs VALUES (1, 0, 0, 's', 'u', 't', NULL, NULL, NULL, 'complete')",
                [],
            )
            .unwrap();
            c.execute("INSERT INTO folders VALUES ('f', 1, 1, NULL)", [])
                .unwrap();
            c.execute(
                "INSERT INTO folder_names VALUES ('f', 'INBOX', 'user.u', 1, NULL)",
                [],
            )
            .unwrap();
            c.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let cat = crate::catalog::Catalog::open_read_only(&path).unwrap();
        let f = cat.folders_at(1).unwrap();
        assert_eq!((f[0].name.as_str(), f[0].deleted_at), ("INBOX", None));
        assert_eq!(cat.folder_history("f").unwrap()[0].deleted_at, None);
        drop(cat);
        assert_eq!(std::fs::read(&path).unwrap(), before, "not written");
        // a writer migrates it in place
        let cat = crate::catalog::Catalog::open(&path).unwrap();
        assert_eq!(cat.folders_at(1).unwrap()[0].deleted_at, None);
        drop(cat);
        let c = Connection::open(&path).unwrap();
        assert_eq!(inspect(&c).unwrap(), Found::Version(SCHEMA_VERSION));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn foreign_database_is_not_ours() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (x)").unwrap();
        assert_eq!(inspect(&c).unwrap(), Found::Foreign);
    }
}
