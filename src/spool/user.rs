//! A user's own files outside the mailboxes (reference §6.8-6.11, §9.6):
//! `seen` (twoskip by default: shared lock, reopen-if-replaced, copy
//! `[0, current_size)`), `sub` (flat by default: replaced only by rename, so a
//! plain open + read is a consistent copy) and the sieve directory (`*.script`,
//! `*.bc`, and `defaultbc`, the symlink naming the active script's bytecode).
//! They are copied under the user's namespace lock SHARED, held only while
//! copying: every Cyrus writer of this state takes it exclusively first.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::Spool;
use super::copy::{self, FileCopy, FileStat};
use super::error::{Result, SpoolError};
use crate::cyrus::mboxlist::{MbName, Mboxlist};
use crate::cyrus::paths;
use crate::io_error::IoContext;
use crate::lock::LockMode;

/// Where one per-user file is, and its `stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFile {
    /// The path (`user_file_path`).
    pub path: PathBuf,
    /// Its `stat` when listed.
    pub stat: FileStat,
}

/// A user's per-user files that exist (`META` lists seen and sub).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFiles {
    /// The seen database.
    pub seen: Option<UserFile>,
    /// The subscriptions.
    pub sub: Option<UserFile>,
    /// The sieve script directory, if it exists.
    pub sieve_dir: Option<PathBuf>,
}

/// One file of a sieve directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SieveFile {
    /// File name, e.g. `main.script`, `main.bc`.
    pub name: String,
    /// Its bytes and `fstat`.
    pub copy: FileCopy,
}

/// Consistent copies of a user's per-user files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilesCopy {
    /// The seen database (twoskip: `[0, current_size)`).
    pub seen: Option<FileCopy>,
    /// The subscriptions.
    pub sub: Option<FileCopy>,
    /// `*.script` and `*.bc` files, by name.
    pub sieve: Vec<SieveFile>,
    /// The active script: the target of `defaultbc` (e.g. `main.bc`), if set.
    pub active_sieve: Option<String>,
}

impl Spool {
    /// Where `userid`'s seen and sub files and sieve directory are, with the
    /// `stat` of those that exist (no lock, as upstream `META`). For a user whose
    /// INBOX is UUID-based they are `seen.db`/`sub.db` under the INBOX uniqueid
    /// directory, else the legacy `user/<h>/<userid>.<suffix>`.
    pub fn user_files(&self, userid: &str, mboxlist: &Mboxlist) -> Result<UserFiles> {
        if userid.starts_with(super::owner::SHARED_MARK) {
            // A shared hierarchy has no seen, subscriptions or sieve of its own.
            return Ok(UserFiles::default());
        }
        let (localpart, domain) = self.ns.user_parts(userid);
        let inbox = MbName {
            domain,
            localpart: Some(localpart),
            ..MbName::default()
        }
        .to_internal(self.conf.deletedprefix());
        let entry = mboxlist
            .get(&inbox)
            .filter(|e| !e.mbtype.is_deleted_tombstone());
        let id = entry.and_then(|e| e.uniqueid.as_deref());
        let legacy = entry.is_none_or(|e| e.mbtype.is_legacy_dirs());
        let file = |suffix: &str| -> Result<Option<UserFile>> {
            let path = paths::user_file_path(&self.conf, userid, id, legacy, suffix)?;
            Ok(FileStat::stat(&path)?.map(|stat| UserFile { path, stat }))
        };
        let sieve = paths::user_sieve_dir(&self.conf, userid, id, legacy)?;
        Ok(UserFiles {
            seen: file("seen")?,
            sub: file("sub")?,
            sieve_dir: sieve.is_dir().then_some(sieve),
        })
    }

    /// Copy the files [`Spool::user_files`] found, under the user's namespace
    /// lock SHARED (released before returning). A file that vanished since the
    /// listing is None.
    pub fn read_user_files(&self, userid: &str, files: &UserFiles) -> Result<UserFilesCopy> {
        if *files == UserFiles::default() {
            return Ok(UserFilesCopy::default());
        }
        let ns = self.locker.user_namespace(userid, LockMode::Shared)?;
        let seen = match &files.seen {
            Some(f) => self.copy_db(&f.path, self.conf.seenstate_db())?,
            None => None,
        };
        let sub = match &files.sub {
            Some(f) => self.copy_db(&f.path, self.conf.subscription_db())?,
            None => None,
        };
        let (sieve, active_sieve) = match &files.sieve_dir {
            Some(d) => read_sieve_dir(d)?,
            None => (Vec::new(), None),
        };
        drop(ns);
        Ok(UserFilesCopy {
            seen,
            sub,
            sieve,
            active_sieve,
        })
    }

    /// twoskip: locked copy; flat (or anything replaced by rename): plain read.
    fn copy_db(&self, path: &Path, backend: &str) -> Result<Option<FileCopy>> {
        match backend {
            "twoskip" => copy::copy_twoskip(&self.locker, path),
            "flat" => copy::read_file(path),
            other => Err(SpoolError::Refused(format!(
                "{}: database backend {other} is not supported (twoskip and flat are)",
                path.display()
            ))),
        }
    }
}

/// `(name, stat)` of what [`Spool::read_user_files`] would copy from a sieve
/// directory (`*.script`, `*.bc` regular files) and of the `defaultbc` link itself
/// (`lstat`: activating another script replaces the link), by name. Nothing is read
/// and no lock is taken: a listing to compare with the last run's (`USERFILES`).
pub fn sieve_stats(dir: &Path) -> Result<Vec<(String, FileStat)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(SpoolError::io("listing", dir, e)),
    };
    for ent in rd {
        let ent = ent.at("listing", dir)?;
        let Ok(name) = ent.file_name().into_string() else {
            continue;
        };
        let wanted = name == "defaultbc" || name.ends_with(".script") || name.ends_with(".bc");
        if !wanted {
            continue;
        }
        let path = ent.path();
        let md = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(SpoolError::io("stat", &path, e)),
        };
        if name == "defaultbc" || md.is_file() {
            out.push((name, FileStat::of(&md)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

impl Spool {
    /// The service's `quota` file for `userid` (`cyrus::quota`): one line per quota
    /// root among the user's own mailboxes (normally just the INBOX), in folder
    /// order; empty if none has a quota. `quotalegacy` (Cyrus's default) is one
    /// small file per root, replaced by rename, so each is read with a plain open,
    /// and only the user's mailbox names are looked up (cost: one `stat` per
    /// folder). A twoskip `quotas.db` is read in place under its shared lock, one
    /// lookup per root (O(log n) records whatever the server holds); a flat one is
    /// copied like the seen database and its records for those names are taken.
    /// What was read is counted in [`Spool::db_reads`] (`quota_db`, `quota_db_bytes`).
    pub fn user_quota(&self, userid: &str, mboxlist: &Mboxlist) -> Result<Vec<u8>> {
        let roots: Vec<String> = self
            .folders(mboxlist, userid)
            .into_iter()
            .filter(|f| !f.is_deleted())
            .map(|f| f.internal().to_string())
            .collect();
        let mut out = Vec::new();
        match self.conf.quota_db() {
            "quotalegacy" => {
                let mut read = 0u64;
                for root in &roots {
                    let path = paths::quota_legacy_path(&self.conf, root)?;
                    if let Some(c) = copy::read_file(&path)? {
                        read += c.bytes.len() as u64;
                        out.extend(crate::cyrus::quota::quota_line(root, &c.bytes));
                    }
                }
                if read > 0 {
                    self.reads.quota_db();
                    self.reads.quota_bytes.fetch_add(read, Ordering::Relaxed);
                }
            }
            "twoskip" => {
                // One lookup per root under one shared lock, read in place: a user's
                // quota costs O(log n) record reads whatever the server holds (a
                // copy of the whole quota db per user was O(server), issue 10).
                let path = self.conf.quota_db_path();
                let read =
                    super::db::with_db(&self.locker, &path, &self.reads.quota_bytes, |db| {
                        for root in &roots {
                            if let Some(v) = db.get(root.as_bytes())? {
                                out.extend(crate::cyrus::quota::quota_line(root, &v));
                            }
                        }
                        Ok(())
                    })?;
                if read.is_some() {
                    self.reads.quota_db();
                }
            }
            "flat" => {
                let path = self.conf.quota_db_path();
                let Some(c) = self.copy_db(&path, "flat")? else {
                    return Ok(out);
                };
                self.reads.quota_db();
                self.reads
                    .quota_bytes
                    .fetch_add(c.bytes.len() as u64, Ordering::Relaxed);
                let recs = crate::cyrus::flat::parse_flat(&c.bytes)
                    .map_err(|e| SpoolError::parse(path.display().to_string(), e))?;
                for root in &roots {
                    if let Some((_, v)) = recs.iter().find(|(k, _)| k == root.as_bytes()) {
                        out.extend(crate::cyrus::quota::quota_line(root, v));
                    }
                }
            }
            other => {
                return Err(SpoolError::Refused(format!(
                    "quota_db backend {other} is not supported (quotalegacy, twoskip and flat are)"
                )));
            }
        }
        Ok(out)
    }
}

/// The scripts and bytecode of a sieve directory, and the active script.
fn read_sieve_dir(dir: &Path) -> Result<(Vec<SieveFile>, Option<String>)> {
    let mut files = Vec::new();
    let mut active = None;
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((files, None)),
        Err(e) => return Err(SpoolError::io("listing", dir, e)),
    };
    for ent in rd {
        let ent = ent.at("listing", dir)?;
        let Ok(name) = ent.file_name().into_string() else {
            continue;
        };
        let path = ent.path();
        if name == "defaultbc" {
            let target = std::fs::read_link(&path).at("reading the link", &path)?;
            active = target
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string);
            continue;
        }
        let is_file = ent.file_type().at("stat", &path)?.is_file();
        if is_file
            && (name.ends_with(".script") || name.ends_with(".bc"))
            && let Some(copy) = copy::read_file(&path)?
        {
            files.push(SieveFile { name, copy });
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((files, active))
}
