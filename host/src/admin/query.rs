//! The read-only admin commands: `list` (users in a vault), `show` (a user's runs and
//! folders), `ls` (folders, or one folder's messages, at a run), `cat` (one message's
//! bytes, by inflating the one member that holds it) and `stats` (raw vs stored bytes).
//! Answers come from the catalog; only `cat` touches the archive.
#![forbid(unsafe_code)]

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{RunSel, UserArchive, vault_archives};
use crate::catalog::{Catalog, CatalogStats, NameSpan, RetentionRow};
use crate::cyrus::Guid;
use crate::error::{Error, IoContext, Result};
use crate::model::RecordState;
use crate::retention::{HoldInfo, active_holds};

/// One user in `list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserLine {
    /// The user's name at the latest run.
    pub user: String,
    /// Archive id (INBOX UniqueID).
    pub id: String,
    /// The archive file.
    pub archive: PathBuf,
    /// Its size in bytes.
    pub archive_bytes: u64,
    /// Committed runs.
    pub runs: u64,
    /// The latest run's number.
    pub last_run: Option<u64>,
    /// When the latest run finished (Unix seconds).
    pub last_run_finished: Option<i64>,
    /// When a later backup last found nothing changed since that run (Unix seconds;
    /// such a backup writes no run, doc/backup.md).
    pub last_checked: Option<i64>,
    /// Neither the latest run nor a later check is younger than `--stale` (or no run
    /// at all).
    pub stale: bool,
    /// Legal holds in force (doc/retention.md): prune and forget refuse the user.
    pub holds: Vec<HoldInfo>,
    /// Why the catalog could not be read (then the other fields are partial).
    pub error: Option<String>,
}

/// The answer of `list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListReport {
    /// The vault directory.
    pub vault: PathBuf,
    /// `--stale` in seconds, if given: then only stale users are listed.
    pub stale_after: Option<u64>,
    pub users: Vec<UserLine>,
}

impl ListReport {
    /// Whether any user's catalog could not be read.
    pub fn failed(&self) -> bool {
        self.users.iter().any(|u| u.error.is_some())
    }
}

/// List the users in `vault`; with `stale_after`, only those whose latest run finished,
/// and which no backup has found unchanged since, more than that many seconds before
/// `now` (or that have no run).
pub fn list(vault: &Path, stale_after: Option<u64>, now: i64) -> Result<ListReport> {
    let mut users = Vec::new();
    for ua in vault_archives(vault)? {
        let archive_bytes = std::fs::metadata(&ua.archive)
            .at("reading metadata of", &ua.archive)?
            .len();
        let mut line = UserLine {
            user: ua.user.clone(),
            id: ua.id.clone(),
            archive: ua.archive.clone(),
            archive_bytes,
            runs: 0,
            last_run: None,
            last_run_finished: None,
            last_checked: None,
            stale: true,
            holds: Vec::new(),
            error: None,
        };
        let read = ua
            .open_catalog()
            .and_then(|c| Ok((c.runs()?, c.last_check()?, c.retention_events()?)));
        match read {
            Ok((runs, check, events)) => {
                line.holds = active_holds(&events, now);
                line.runs = runs.len() as u64;
                line.last_checked = check.map(|c| c.time);
                if let Some(last) = runs.last() {
                    line.last_run = Some(last.run);
                    line.last_run_finished = Some(last.finished);
                    let seen = last.finished.max(line.last_checked.unwrap_or(i64::MIN));
                    let age = now.saturating_sub(seen);
                    line.stale =
                        stale_after.is_some_and(|s| age > i64::try_from(s).unwrap_or(i64::MAX));
                }
            }
            Err(e) => line.error = Some(e.to_string()),
        }
        if stale_after.is_none() || line.stale {
            users.push(line);
        }
    }
    Ok(ListReport {
        vault: vault.to_path_buf(),
        stale_after,
        users,
    })
}

/// One run in `show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShowRun {
    pub run: u64,
    pub started: i64,
    pub finished: i64,
    pub server: String,
    /// The user's name at this run.
    pub user: String,
    /// Messages this run stored for the first time.
    pub messages_added: u64,
    /// Their bytes.
    pub bytes_added: u64,
    /// Compressed bytes of the members this run wrote.
    pub stored_bytes: u64,
}

/// One folder in `show`, with its names over time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShowFolder {
    pub uniqueid: String,
    /// Its latest name.
    pub name: String,
    /// Gone from the server at the latest run.
    pub deleted: bool,
    /// The latest run at which it existed.
    pub last_run: u64,
    /// When the user deleted it, if a run saw it in Cyrus's delayed-delete area.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
    pub names: Vec<NameSpan>,
}

/// The answer of `show USER`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShowReport {
    pub user: String,
    pub id: String,
    pub runs: Vec<ShowRun>,
    pub folders: Vec<ShowFolder>,
    /// Legal holds in force.
    pub holds: Vec<HoldInfo>,
    /// Every hold, release, erasure and prune, oldest first (doc/retention.md).
    pub retention: Vec<RetentionRow>,
}

/// A user's runs and folders: a handful of grouped, indexed queries, whatever the
/// size of the archive (no whole-catalog read).
pub fn show(ua: &UserArchive) -> Result<ShowReport> {
    let cat = ua.open_catalog()?;
    let added = cat.messages_added_by_run()?;
    let stored = cat.stored_bytes_by_run()?;
    let runs: Vec<ShowRun> = cat
        .runs()?
        .into_iter()
        .map(|r| {
            let (n, b) = added.get(&r.run).copied().unwrap_or_default();
            ShowRun {
                run: r.run,
                started: r.started,
                finished: r.finished,
                server: r.server,
                user: r.user,
                messages_added: n,
                bytes_added: b,
                stored_bytes: stored.get(&r.run).copied().unwrap_or(0),
            }
        })
        .collect();
    let mut folders = Vec::new();
    if let Some(last) = runs.last() {
        let mut histories = cat.folder_histories()?;
        for f in cat.folders_at(last.run)? {
            folders.push(ShowFolder {
                names: histories.remove(&f.uniqueid).unwrap_or_default(),
                uniqueid: f.uniqueid,
                name: f.name,
                deleted: f.deleted,
                last_run: f.last_run,
                deleted_at: f.deleted_at,
            });
        }
    }
    let retention = cat.retention_events()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    Ok(ShowReport {
        user: ua.user.clone(),
        id: ua.id.clone(),
        runs,
        folders,
        holds: active_holds(&retention, now),
        retention,
    })
}

/// One folder in `ls USER`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LsFolder {
    pub name: String,
    pub uniqueid: String,
    /// Deleted at or before the run; its content is as of `last_run`.
    pub deleted: bool,
    pub last_run: u64,
    /// When the user deleted it, if a run saw it in Cyrus's delayed-delete area.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
    /// Messages visible to IMAP (not expunged).
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// One message in `ls USER FOLDER`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LsMessage {
    pub uid: u32,
    pub guid: Guid,
    /// IMAP system flags (`\Seen` ...) then keywords.
    pub flags: Vec<String>,
    /// Cyrus's EXPUNGED bit: invisible to IMAP, file still kept.
    pub expunged: bool,
    /// Unix seconds.
    pub internaldate: i64,
    pub size: u64,
    pub modseq: u64,
}

/// The folder `ls` was asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FolderLine {
    pub name: String,
    pub uniqueid: String,
    pub deleted: bool,
    /// The run whose records are shown (for a deleted folder, its last run).
    pub shown_run: u64,
    /// When the user deleted it, if a run saw it in Cyrus's delayed-delete area.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
}

/// The answer of `ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LsReport {
    pub user: String,
    /// The run asked about.
    pub run: u64,
    /// When it started (Unix seconds).
    pub run_started: i64,
    /// Without a folder: every folder at the run.
    pub folders: Vec<LsFolder>,
    /// With a folder: which one.
    pub folder: Option<FolderLine>,
    /// With a folder: its messages.
    pub messages: Vec<LsMessage>,
}

/// IMAP names of the system flag bits (`doc/catalog.md`, `records.system_flags`).
const FLAG_NAMES: [(u32, &str); 5] = [
    (1, "\\Answered"),
    (2, "\\Flagged"),
    (4, "\\Deleted"),
    (8, "\\Draft"),
    (16, "\\Seen"),
];

fn ls_message(r: &RecordState) -> LsMessage {
    let mut flags: Vec<String> = FLAG_NAMES
        .iter()
        .filter(|(bit, _)| r.system_flags & bit != 0)
        .map(|(_, n)| (*n).to_string())
        .collect();
    flags.extend(r.keywords.iter().cloned());
    LsMessage {
        uid: r.uid,
        guid: r.guid,
        flags,
        expunged: r.is_expunged(),
        internaldate: r.internaldate,
        size: r.size,
        modseq: r.modseq,
    }
}

/// The folder called `name` at `run`, and the run whose records describe it. Names are
/// as the backup recorded them; `Work` also finds `INBOX.Work` / `INBOX/Work` (the
/// user's own view of a folder under INBOX) when no folder is called `Work`.
fn folder_at(cat: &Catalog, name: &str, run: u64) -> Result<FolderLine> {
    let mut found = cat.folder_by_name_at(name, run)?;
    if found.is_none() && name != "INBOX" && !name.starts_with("INBOX") {
        for sep in ['.', '/'] {
            found = cat.folder_by_name_at(&format!("INBOX{sep}{name}"), run)?;
            if found.is_some() {
                break;
            }
        }
    }
    let f = found.ok_or_else(|| Error::not_found("folder", format!("{name} at run {run}")))?;
    Ok(FolderLine {
        shown_run: if f.deleted { f.last_run } else { run },
        name: f.name,
        uniqueid: f.uniqueid,
        deleted: f.deleted,
        deleted_at: f.deleted_at,
    })
}

/// Folders at a run, or one folder's messages at a run.
pub fn ls(ua: &UserArchive, folder: Option<&str>, sel: RunSel) -> Result<LsReport> {
    let mut messages = Vec::new();
    let mut r = ls_each(ua, folder, sel, &mut |_| Ok(()), &mut |m| {
        messages.push(m);
        Ok(())
    })?;
    r.messages = messages;
    Ok(r)
}

/// [`ls`], handing one folder's messages to `each` as the catalog reads them instead of
/// collecting them (the report's `messages` stays empty): constant memory and output
/// that starts at once for a folder of any size. `head` gets the report (run, folder)
/// before the first message. Either may stop the listing by returning an error (a
/// closed pipe).
pub fn ls_each(
    ua: &UserArchive,
    folder: Option<&str>,
    sel: RunSel,
    head: &mut dyn FnMut(&LsReport) -> Result<()>,
    each: &mut dyn FnMut(LsMessage) -> Result<()>,
) -> Result<LsReport> {
    let cat = ua.open_catalog()?;
    let run = sel.resolve(&cat)?;
    let run_started = cat
        .runs()?
        .iter()
        .find(|r| r.run == run)
        .map_or(0, |r| r.started);
    let mut out = LsReport {
        user: ua.user.clone(),
        run,
        run_started,
        folders: Vec::new(),
        folder: None,
        messages: Vec::new(),
    };
    match folder {
        None => {
            for f in cat.folders_at(run)? {
                let shown = if f.deleted { f.last_run } else { run };
                let (messages, bytes) = cat.folder_totals_at(&f.uniqueid, shown)?;
                out.folders.push(LsFolder {
                    messages,
                    bytes,
                    name: f.name,
                    uniqueid: f.uniqueid,
                    deleted: f.deleted,
                    last_run: f.last_run,
                    deleted_at: f.deleted_at,
                });
            }
        }
        Some(name) => {
            let f = folder_at(&cat, name, run)?;
            let (uniqueid, shown) = (f.uniqueid.clone(), f.shown_run);
            out.folder = Some(f);
            head(&out)?;
            cat.each_record_at(&uniqueid, shown, &mut |r| each(ls_message(&r)))?;
            return Ok(out);
        }
    }
    head(&out)?;
    Ok(out)
}

/// What `cat` read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatReport {
    pub guid: Guid,
    pub size: u64,
    /// The member the bytes came from.
    pub member_offset: u64,
    /// The message bytes (not in JSON: they go to stdout raw).
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

/// Read the message `guid` through `reader` (the archive file): seek to the one member
/// the catalog names and inflate it only up to the message's end, then check that the
/// bytes hash to the GUID.
pub fn read_message<R: Read + Seek>(
    cat: &Catalog,
    reader: &mut R,
    archive: &Path,
    guid: &Guid,
) -> Result<CatReport> {
    let loc = cat
        .message_loc(guid)?
        .ok_or_else(|| Error::not_found("message in the archive", guid.to_hex()))?;
    let bytes = crate::archive::read_entry_at(
        reader,
        archive,
        loc.member_offset,
        loc.offset_in_member,
        loc.size,
    )?;
    let got = Guid::of(&bytes);
    if got != *guid {
        return Err(Error::other(format!(
            "archive {}: message {guid} in the member at offset {} reads back as {got} \
             ({} bytes): the archive is damaged, run verify",
            archive.display(),
            loc.member_offset,
            bytes.len()
        )));
    }
    Ok(CatReport {
        guid: *guid,
        size: loc.size,
        member_offset: loc.member_offset,
        bytes,
    })
}

/// `cat USER GUID`.
pub fn cat_guid(ua: &UserArchive, guid: &Guid) -> Result<CatReport> {
    let cat = ua.open_catalog()?;
    let mut file = ua.open_archive()?;
    read_message(&cat, &mut file, &ua.archive, guid)
}

/// `cat USER FOLDER UID [--at|--run]`: the message the folder held under that UID at
/// the run (expunged ones included, while the catalog still has them).
pub fn cat(ua: &UserArchive, folder: &str, uid: u32, sel: RunSel) -> Result<CatReport> {
    let cat = ua.open_catalog()?;
    let run = sel.resolve(&cat)?;
    let f = folder_at(&cat, folder, run)?;
    let rec = cat
        .record_at(&f.uniqueid, uid, f.shown_run)?
        .ok_or_else(|| {
            Error::not_found(
                "message",
                format!("{folder} uid {uid} at run {}", f.shown_run),
            )
        })?;
    let mut file = ua.open_archive()?;
    read_message(&cat, &mut file, &ua.archive, &rec.guid)
}

/// One user's totals in `stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserStats {
    pub user: String,
    pub id: String,
    #[serde(flatten)]
    pub totals: CatalogStats,
    /// raw_bytes / unique_bytes: how much storing each message once saves.
    pub dedup_ratio: f64,
    /// stored_compressed_bytes / unique_bytes: what deflate leaves.
    pub compression_ratio: f64,
    /// stored_compressed_bytes / raw_bytes: the two together.
    pub stored_vs_raw: f64,
    /// The archive file's size (members of uncommitted runs and the format member too).
    pub archive_bytes: u64,
}

/// The answer of `stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsReport {
    pub users: Vec<UserStats>,
    /// Sums over all users (ratios of the sums).
    pub total: UserStats,
    /// Users whose catalog could not be read, with the error.
    pub errors: Vec<(String, String)>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn user_stats(user: String, id: String, t: CatalogStats, archive_bytes: u64) -> UserStats {
    UserStats {
        user,
        id,
        dedup_ratio: ratio(t.raw_bytes, t.unique_bytes),
        compression_ratio: ratio(t.stored_compressed_bytes, t.unique_bytes),
        stored_vs_raw: ratio(t.stored_compressed_bytes, t.raw_bytes),
        archive_bytes,
        totals: t,
    }
}

/// Byte and run totals for the given users (all of the vault's when `users` is empty).
pub fn stats(users: &[UserArchive]) -> Result<StatsReport> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut sum = CatalogStats {
        runs: 0,
        folders: 0,
        messages: 0,
        record_versions: 0,
        raw_bytes: 0,
        unique_bytes: 0,
        stored_compressed_bytes: 0,
    };
    let mut sum_archive = 0u64;
    for ua in users {
        let t = match ua.open_catalog().and_then(|c| Ok(c.stats()?)) {
            Ok(t) => t,
            Err(e) => {
                errors.push((ua.user.clone(), e.to_string()));
                continue;
            }
        };
        let archive_bytes = std::fs::metadata(&ua.archive).map_or(0, |m| m.len());
        sum.runs += t.runs;
        sum.folders += t.folders;
        sum.messages += t.messages;
        sum.record_versions += t.record_versions;
        sum.raw_bytes += t.raw_bytes;
        sum.unique_bytes += t.unique_bytes;
        sum.stored_compressed_bytes += t.stored_compressed_bytes;
        sum_archive += archive_bytes;
        out.push(user_stats(ua.user.clone(), ua.id.clone(), t, archive_bytes));
    }
    Ok(StatsReport {
        users: out,
        total: user_stats("(all)".into(), String::new(), sum, sum_archive),
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_imap_names_then_keywords() {
        let r = RecordState {
            uid: 9,
            guid: Guid::of(b"m"),
            system_flags: 1 | 16 | crate::cyrus::index::FLAG_INTERNAL_EXPUNGED,
            keywords: vec!["$Label1".into(), "NonJunk".into()],
            internaldate: 5,
            size: 1,
            modseq: 3,
            last_updated: 0,
            savedate: 0,
        };
        let m = ls_message(&r);
        assert_eq!(m.flags, ["\\Answered", "\\Seen", "$Label1", "NonJunk"]);
        assert!(m.expunged);
        assert_eq!((m.uid, m.size, m.modseq, m.internaldate), (9, 1, 3, 5));
    }

    #[test]
    fn ratios_of_zero_are_zero() {
        assert_eq!(ratio(5, 0), 0.0);
        assert_eq!(ratio(3, 2), 1.5);
    }
}
