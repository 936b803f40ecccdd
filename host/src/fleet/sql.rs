//! The one trait the user directory runs its SQL through, and its two backends:
//! embedded SQLite (`rusqlite`, one backup host) and PostgreSQL (`postgres`, several
//! backup hosts sharing a fleet). Statements are written once with `?` placeholders
//! and only BIGINT/TEXT columns; the PostgreSQL backend numbers the placeholders.
#![forbid(unsafe_code)]

use std::time::Duration;

use crate::error::{Error, Result};

/// One SQL value (the directory uses nothing else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    /// BIGINT.
    I(i64),
    /// TEXT.
    T(String),
    /// NULL.
    Null,
}

impl Val {
    /// The integer, or 0 for NULL/text.
    pub fn int(&self) -> i64 {
        match self {
            Val::I(i) => *i,
            _ => 0,
        }
    }
    /// The integer, None for NULL.
    pub fn opt_int(&self) -> Option<i64> {
        match self {
            Val::I(i) => Some(*i),
            _ => None,
        }
    }
    /// The text, "" for NULL.
    pub fn text(&self) -> String {
        match self {
            Val::T(s) => s.clone(),
            Val::I(i) => i.to_string(),
            Val::Null => String::new(),
        }
    }
    /// The text, None for NULL.
    pub fn opt_text(&self) -> Option<String> {
        match self {
            Val::T(s) => Some(s.clone()),
            Val::I(i) => Some(i.to_string()),
            Val::Null => None,
        }
    }
}

impl From<i64> for Val {
    fn from(i: i64) -> Val {
        Val::I(i)
    }
}
impl From<&str> for Val {
    fn from(s: &str) -> Val {
        Val::T(s.to_string())
    }
}
impl From<String> for Val {
    fn from(s: String) -> Val {
        Val::T(s)
    }
}

/// Which database is underneath (for the few statements that differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection the directory runs statements on.
pub trait Sql: Send {
    /// Which dialect.
    fn dialect(&self) -> Dialect;
    /// Run statements without parameters (schema).
    fn batch(&mut self, sql: &str) -> Result<()>;
    /// Run one statement; rows changed.
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64>;
    /// Run one query; every row.
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>>;
    /// Start a write transaction (SQLite: `BEGIN IMMEDIATE`, the writer lock at once).
    fn begin(&mut self) -> Result<()>;
    /// Commit it.
    fn commit(&mut self) -> Result<()>;
    /// Roll it back (errors ignored: used on the failure path).
    fn rollback(&mut self);
}

fn db_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::other(format!("user directory: {what}: {e}"))
}

/// Open `sqlite:PATH` or `postgresql://...`.
pub fn connect(url: &str) -> Result<Box<dyn Sql>> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        return Ok(Box::new(Lite::open(path)?));
    }
    if url.starts_with("postgresql://") || url.starts_with("postgres://") {
        return Ok(Box::new(Pg::open(url)?));
    }
    Err(Error::other(format!(
        "database {url:?}: expected sqlite:PATH or postgresql://..."
    )))
}

/// SQLite backend.
pub struct Lite(rusqlite::Connection);

impl Lite {
    /// Open (create) the file; WAL, a 60 s busy timeout (worker processes queue on
    /// the writer lock for claims).
    pub fn open(path: &str) -> Result<Lite> {
        if let Some(dir) = std::path::Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| db_err(&format!("creating {}", dir.display()), e))?;
        }
        let c = rusqlite::Connection::open(path).map_err(|e| db_err(path, e))?;
        c.busy_timeout(Duration::from_secs(60))
            .map_err(|e| db_err(path, e))?;
        c.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| db_err(path, e))?;
        c.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| db_err(path, e))?;
        Ok(Lite(c))
    }
}

fn lite_params(p: &[Val]) -> Vec<rusqlite::types::Value> {
    p.iter()
        .map(|v| match v {
            Val::I(i) => rusqlite::types::Value::Integer(*i),
            Val::T(s) => rusqlite::types::Value::Text(s.clone()),
            Val::Null => rusqlite::types::Value::Null,
        })
        .collect()
}

impl Sql for Lite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
    fn batch(&mut self, sql: &str) -> Result<()> {
        self.0.execute_batch(sql).map_err(|e| db_err("schema", e))
    }
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        let n = self
            .0
            .execute(sql, rusqlite::params_from_iter(lite_params(params)))
            .map_err(|e| db_err(sql, e))?;
        Ok(n as u64)
    }
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>> {
        let mut st = self.0.prepare_cached(sql).map_err(|e| db_err(sql, e))?;
        let cols = st.column_count();
        let rows = st
            .query_map(rusqlite::params_from_iter(lite_params(params)), |r| {
                let mut row = Vec::with_capacity(cols);
                for i in 0..cols {
                    row.push(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Integer(n) => Val::I(n),
                        rusqlite::types::ValueRef::Real(f) => Val::I(f as i64),
                        rusqlite::types::ValueRef::Text(t) => {
                            Val::T(String::from_utf8_lossy(t).into_owned())
                        }
                        _ => Val::Null,
                    });
                }
                Ok(row)
            })
            .map_err(|e| db_err(sql, e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| db_err(sql, e))
    }
    fn begin(&mut self) -> Result<()> {
        self.0
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| db_err("BEGIN IMMEDIATE", e))
    }
    fn commit(&mut self) -> Result<()> {
        self.0
            .execute_batch("COMMIT")
            .map_err(|e| db_err("COMMIT", e))
    }
    fn rollback(&mut self) {
        let _ = self.0.execute_batch("ROLLBACK");
    }
}

/// PostgreSQL backend (no TLS: loopback or a trusted network).
pub struct Pg(postgres::Client);

impl Pg {
    /// Connect to `url`.
    pub fn open(url: &str) -> Result<Pg> {
        let c = postgres::Client::connect(url, postgres::NoTls)
            .map_err(|e| db_err(&format!("connecting to {}", redact(url)), e))?;
        Ok(Pg(c))
    }
}

/// `url` without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.split_once(':') {
                Some((u, _)) => format!("{}{u}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// `?` → `$1`, `$2`, ... (the directory's statements have no `?` in literals).
fn number_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

fn pg_params(
    p: &[Val],
    types: &[postgres::types::Type],
) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    p.iter()
        .enumerate()
        .map(|(i, v)| -> Box<dyn postgres::types::ToSql + Sync> {
            match v {
                Val::I(i) => Box::new(*i),
                Val::T(s) => Box::new(s.clone()),
                // a NULL must still carry the parameter's type
                Val::Null if types.get(i) == Some(&postgres::types::Type::INT8) => {
                    Box::new(Option::<i64>::None)
                }
                Val::Null => Box::new(Option::<String>::None),
            }
        })
        .collect()
}

impl Sql for Pg {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
    fn batch(&mut self, sql: &str) -> Result<()> {
        self.0.batch_execute(sql).map_err(|e| db_err("schema", e))
    }
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        let q = number_placeholders(sql);
        let st = self.0.prepare(&q).map_err(|e| db_err(sql, e))?;
        let owned = pg_params(params, st.params());
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            owned.iter().map(|b| b.as_ref()).collect();
        self.0.execute(&st, &refs).map_err(|e| db_err(sql, e))
    }
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>> {
        use postgres::types::Type;
        let q = number_placeholders(sql);
        let st = self.0.prepare(&q).map_err(|e| db_err(sql, e))?;
        let owned = pg_params(params, st.params());
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            owned.iter().map(|b| b.as_ref()).collect();
        let rows = self.0.query(&st, &refs).map_err(|e| db_err(sql, e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut row = Vec::with_capacity(r.len());
            for (i, col) in r.columns().iter().enumerate() {
                let t = col.type_();
                let v = if *t == Type::INT8 {
                    r.try_get::<_, Option<i64>>(i)
                        .map(|o| o.map_or(Val::Null, Val::I))
                } else if *t == Type::INT4 {
                    r.try_get::<_, Option<i32>>(i)
                        .map(|o| o.map_or(Val::Null, |n| Val::I(i64::from(n))))
                } else {
                    r.try_get::<_, Option<String>>(i)
                        .map(|o| o.map_or(Val::Null, Val::T))
                };
                row.push(v.map_err(|e| db_err(sql, e))?);
            }
            out.push(row);
        }
        Ok(out)
    }
    fn begin(&mut self) -> Result<()> {
        self.0
            .batch_execute("BEGIN")
            .map_err(|e| db_err("BEGIN", e))
    }
    fn commit(&mut self) -> Result<()> {
        self.0
            .batch_execute("COMMIT")
            .map_err(|e| db_err("COMMIT", e))
    }
    fn rollback(&mut self) {
        let _ = self.0.batch_execute("ROLLBACK");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_redaction() {
        assert_eq!(number_placeholders("a=? AND b=?"), "a=$1 AND b=$2");
        assert_eq!(
            redact("postgresql://u:pw@h:5/db"),
            "postgresql://u:***@h:5/db"
        );
        assert_eq!(redact("postgresql://u@h/db"), "postgresql://u@h/db");
    }

    #[test]
    fn sqlite_round_trip() {
        let mut l = Lite::open(":memory:").unwrap();
        l.batch("CREATE TABLE t (a BIGINT, b TEXT)").unwrap();
        l.begin().unwrap();
        l.exec("INSERT INTO t VALUES (?, ?)", &[Val::I(3), Val::from("x")])
            .unwrap();
        l.exec("INSERT INTO t VALUES (?, ?)", &[Val::I(4), Val::Null])
            .unwrap();
        l.commit().unwrap();
        let rows = l.query("SELECT a, b FROM t ORDER BY a", &[]).unwrap();
        assert_eq!(
            rows,
            vec![vec![Val::I(3), Val::from("x")], vec![Val::I(4), Val::Null]]
        );
    }
}
