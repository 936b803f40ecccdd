//! `cyrvault forget`: erase messages from a user's archive for good, with a record.
//!
//! `--message GUID…`, `--folder NAME` (the folder leaves every run's history, and the
//! bytes of every message it ever held leave the archive — also where another folder
//! held the same message; `--dry-run` names those folders), `--before DATE` (every
//! message whose internal date is earlier). Every run is kept; the records that named
//! an erased message are gone from every run, and a `retention/<seq>.json` event says
//! what (GUIDs and sizes, never content), when and why. `--all` removes the user's
//! archive, catalog and vault entry, and appends a line to `<vault>/erasures.log`.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::compact::{CompactReport, compact};
use super::error::{Result, RetentionError};
use super::hold::{HoldInfo, Target, now_secs};
use super::plan::plan;
use super::prune::{erased_list, lock_checked, next_seq};
use crate::cyrus::Guid;
use crate::io_error::IoContext;
use crate::model::retention::{EventKind, RETENTION_FORMAT, RemovedFolder, RetentionEvent};

/// What to forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgetWhat {
    /// These messages.
    Messages(Vec<Guid>),
    /// A folder (its name at the latest run, or its UniqueID) and every message it held.
    Folder(String),
    /// Every message with an internal date before this (Unix seconds).
    Before(i64),
    /// The user's whole archive.
    All,
}

/// How to forget.
#[derive(Debug, Clone)]
pub struct ForgetOptions {
    pub what: ForgetWhat,
    /// Why (required): kept in the archive's record of the erasure.
    pub reason: String,
    pub dry_run: bool,
    pub wait: Option<Duration>,
}

/// What forget did (or would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ForgetReport {
    pub user: String,
    pub reason: String,
    pub dry_run: bool,
    /// Messages erased: GUID and size.
    pub messages: Vec<(Guid, u64)>,
    pub message_bytes: u64,
    /// Folders taken out of every run.
    pub folders_removed: Vec<RemovedFolder>,
    /// Every folder (UniqueID → last name) whose records named an erased message.
    pub folders_touched: BTreeMap<String, String>,
    /// Runs whose state changes (every run that listed an erased message).
    pub runs: u64,
    /// Folders that still showed an erased message at the latest run: it is on the
    /// server, and will not be backed up again (delete it there too).
    pub still_on_server: Vec<String>,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// `--all`: the archive and catalog removed.
    pub removed_files: Vec<String>,
    pub compaction: Option<CompactReport>,
}

fn refuse_held(t: &Target, holds: &[HoldInfo]) -> Result<()> {
    if holds.is_empty() {
        return Ok(());
    }
    Err(RetentionError::Held {
        user: t.user.clone(),
        holds: holds.iter().map(HoldInfo::describe).collect(),
    })
}

/// Forget `opts.what` from `t`. `vault` is where `--all` records the erasure and drops
/// the user from the index.
pub fn forget(
    t: &Target,
    vault: Option<&crate::vault::Vault>,
    opts: &ForgetOptions,
) -> Result<ForgetReport> {
    if opts.reason.trim().is_empty() {
        return Err(RetentionError::refused(
            "forget needs a --reason (it is kept with the record)".into(),
        ));
    }
    let now = now_secs();
    let (locked, holds) = lock_checked(t, opts.wait, now)?;
    refuse_held(t, &holds)?;
    let cat = &locked.cat;
    let mut report = ForgetReport {
        user: t.user.clone(),
        reason: opts.reason.clone(),
        dry_run: opts.dry_run,
        bytes_before: locked.len,
        ..ForgetReport::default()
    };
    let not_in = |what: String| RetentionError::NotInArchive {
        user: t.user.clone(),
        what,
    };
    let mut drop_folders = BTreeMap::new();
    let erase: HashSet<Guid> = match &opts.what {
        ForgetWhat::All => {
            drop(locked);
            return forget_all(t, vault, opts, report);
        }
        ForgetWhat::Messages(gs) => {
            let held: HashSet<Guid> = cat.message_guids()?.into_iter().collect();
            for g in gs {
                if !held.contains(g) {
                    return Err(not_in(format!("message {g}")));
                }
            }
            gs.iter().copied().collect()
        }
        ForgetWhat::Folder(name) => {
            let last = cat.last_run()?.map_or(0, |r| r.run);
            let uid = match cat.folder_by_name_at(name, last)? {
                Some(f) => f.uniqueid,
                None if cat.folder_history(name)?.is_empty() => {
                    return Err(not_in(format!("folder {name:?}")));
                }
                None => name.clone(),
            };
            let last_name = cat
                .folder_history(&uid)?
                .last()
                .map_or_else(|| name.clone(), |n| n.name.clone());
            drop_folders.insert(uid.clone(), last_name);
            cat.folder_guids(&uid)?
        }
        ForgetWhat::Before(t0) => cat.guids_before(*t0)?,
    };
    report.folders_touched = cat.folders_naming(&erase)?.into_iter().collect();
    let kept: BTreeSet<u64> = cat.runs()?.iter().map(|r| r.run).collect();
    let p = plan(cat, &t.user, locked.len, &kept, &erase, &drop_folders)?;
    report.messages = p.erased.iter().map(|(g, s)| (*g, *s)).collect();
    report.message_bytes = p.erased.values().sum();
    report.folders_removed = drop_folders
        .iter()
        .map(|(u, n)| RemovedFolder {
            uniqueid: u.clone(),
            name: n.clone(),
        })
        .collect();
    report.runs = cat.runs_listing(&erase)?;
    if let Some(last) = cat.last_run()? {
        for f in cat.folders_at(last.run)?.into_iter().filter(|f| !f.deleted) {
            if drop_folders.contains_key(&f.uniqueid) {
                continue;
            }
            let shows = cat
                .records_at(&f.uniqueid, last.run)?
                .iter()
                .any(|r| !r.is_expunged() && p.erased.contains_key(&r.guid));
            if shows {
                report.still_on_server.push(f.name);
            }
        }
    }
    if opts.dry_run || (p.erased.is_empty() && drop_folders.is_empty()) {
        report.bytes_after = if opts.dry_run {
            p.estimated_after()
        } else {
            locked.len
        };
        return Ok(report);
    }
    let event = RetentionEvent {
        format: RETENTION_FORMAT,
        seq: next_seq(cat)?,
        kind: EventKind::Erase,
        at: now,
        reason: opts.reason.clone(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        until: None,
        releases: None,
        up_to_run: cat.last_run()?.map(|r| r.run),
        erased: erased_list(&p),
        runs_removed: Vec::new(),
        folders_removed: report.folders_removed.clone(),
        bytes_before: locked.len,
        bytes_after: 0,
    };
    let c = compact(cat, &p, &t.archive, &t.catalog, event)?;
    report.bytes_after = c.bytes_after;
    report.compaction = Some(c);
    drop(locked);
    Ok(report)
}

/// One line of `<vault>/erasures.log` (JSON): what `forget --all` removed, when, why.
#[derive(Debug, Serialize)]
struct AllErased<'a> {
    at: i64,
    user: &'a str,
    archive: String,
    bytes: u64,
    reason: &'a str,
    tool_version: &'static str,
}

/// File name of the vault's log of whole-user erasures.
pub const ERASURES_LOG: &str = "erasures.log";

fn forget_all(
    t: &Target,
    vault: Option<&crate::vault::Vault>,
    opts: &ForgetOptions,
    mut report: ForgetReport,
) -> Result<ForgetReport> {
    let files: Vec<std::path::PathBuf> = [
        t.catalog.clone(),
        sib(&t.catalog, "-wal"),
        sib(&t.catalog, "-shm"),
        sib(&t.catalog, ".new"),
        super::pair::new_archive_path(&t.archive),
        t.archive.clone(),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .collect();
    report.removed_files = files.iter().map(|p| p.display().to_string()).collect();
    report.bytes_after = 0;
    if opts.dry_run {
        return Ok(report);
    }
    // Under the lock (checked again: a hold placed meanwhile wins).
    let (locked, holds) = lock_checked(t, opts.wait, now_secs())?;
    refuse_held(t, &holds)?;
    if let Some(v) = vault {
        let line = AllErased {
            at: now_secs(),
            user: &t.user,
            archive: t.archive.display().to_string(),
            bytes: report.bytes_before,
            reason: &opts.reason,
            tool_version: env!("CARGO_PKG_VERSION"),
        };
        let log = v.root().join(ERASURES_LOG);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .at("opening", &log)?;
        let mut bytes =
            serde_json::to_vec(&line).map_err(|e| RetentionError::other(e.to_string()))?;
        bytes.push(b'\n');
        f.write_all(&bytes).at("writing", &log)?;
        f.sync_all().at("syncing", &log)?;
        v.remove_archive(&t.archive)?;
    }
    // The catalog first: without it nothing points into the archive any more; the
    // archive last (removing it is what erases).
    for p in &files {
        std::fs::remove_file(p).at("removing", p)?;
    }
    if let Some(dir) = t.archive.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .at("syncing directory", dir)?;
    }
    drop(locked);
    Ok(report)
}

fn sib(p: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    std::path::PathBuf::from(s)
}
