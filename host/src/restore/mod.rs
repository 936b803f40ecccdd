//! Restore: any user, folders or single messages, as of any run, back into a live Cyrus
//! over IMAP ([`imap`]) or out to files ([`export`]: mbox, Maildir, `.eml`).
//!
//! A restore is two steps. [`plan`] asks the catalog what the selection held at the
//! chosen run (folders with their ACLs, records with flags, keywords and internal
//! dates, subscriptions, sieve scripts); it reads only small meta entries from the
//! archive. Then a target carries the plan out, reading the messages through
//! [`Source::read_batch`] (each member inflated once, every message checked against
//! its GUID). A message that fails is listed in the [`Summary`] and the rest goes on.
//!
//! Operators' guide: `doc/restore.md`.
#![forbid(unsafe_code)]

pub mod all;
pub mod exact;
pub mod export;
pub mod imap;
mod imap_append;
mod imap_extra;
pub mod meta;
pub mod seen;
pub mod sieve;
mod source;
mod summary;

use serde::Serialize;

pub use source::{Source, catalog_path_for, check_guid};
pub use summary::{Action, Failure, NoProgress, Progress, Summary, Warning};

use crate::cyrus::Guid;
use crate::error::{Error, Result};
use crate::model::{RecordState, UserFileKind};

/// Which run to restore from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// The latest committed run.
    Latest,
    /// This run number.
    Run(u64),
    /// The newest run that started at or before this time (Unix seconds).
    At(i64),
}

/// What to restore.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Folders by their backed-up name (`INBOX.Work`, also `Work` or `Work/Sub`);
    /// empty: all. A folder's subfolders come with it, except for `INBOX`, which
    /// means the INBOX alone.
    pub folders: Vec<String>,
    /// Which run.
    pub when: When,
    /// Only these messages (empty: all).
    pub messages: Vec<Guid>,
    /// Also bring back expunged messages whose files were still in the backup, and
    /// folders deleted at or before the run (as of their last run).
    pub include_expunged: bool,
    /// With `include_expunged`: only messages expunged at or after this time.
    pub expunged_since: Option<i64>,
    /// With `include_expunged`: only messages expunged at or before this time.
    pub expunged_until: Option<i64>,
    /// Merge the backed-up seen database into the `\Seen` flags (see [`seen`]).
    pub seen_db: bool,
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            folders: Vec::new(),
            when: When::Latest,
            messages: Vec::new(),
            include_expunged: false,
            expunged_since: None,
            expunged_until: None,
            seen_db: false,
        }
    }
}

/// One folder to restore.
#[derive(Debug, Clone, Serialize)]
pub struct FolderPlan {
    /// The folder's UniqueID in the backup (never reused on the target).
    pub uniqueid: String,
    /// Its backed-up name as the user saw it (`INBOX`, `INBOX.Lists.cyrus`).
    pub name: String,
    /// Cyrus's internal name at the run (`user.bob.Lists.cyrus`).
    pub internal_name: String,
    /// Its levels below the INBOX (`[]` for the INBOX, `["Lists", "cyrus"]`).
    pub parts: Vec<String>,
    /// It was deleted at or before the run; its content is as of `source_run`.
    pub deleted: bool,
    /// The run its records are from.
    pub source_run: u64,
    /// Its ACL as backed up (identifier, rights), from the archived `cyrus.header`.
    pub acl: Vec<(String, String)>,
    /// Its quota root (`user.bob`), from the archived `cyrus.header`.
    pub quotaroot: Option<String>,
    /// Cyrus's mailbox options (`OPT_*` bits of the index header: shared seen,
    /// duplicate delivery, ...).
    pub options: u32,
    /// Mailbox annotations: special-use, comments and the rest.
    pub annotations: Vec<meta::MailboxAnnotation>,
    /// The messages to restore, by ascending UID (expunged bit already cleared).
    pub records: Vec<RecordState>,
}

/// Everything a restore will do, before it touches a target.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The user's name at the run.
    pub user: String,
    /// The run restored from.
    pub run: u64,
    /// Folders in name order (parents before children).
    pub folders: Vec<FolderPlan>,
    /// Subscriptions: the user's own folders by their levels below the INBOX, others
    /// by the internal name as stored.
    pub subscriptions: Vec<Subscription>,
    /// Sieve scripts (name, bytes), and which one was active.
    pub sieve: Vec<(String, Vec<u8>)>,
    /// The active sieve script's name.
    pub active_sieve: Option<String>,
    /// The user's `\Seen` state in other users' (and shared) folders, from the
    /// backed-up seen database: folder UniqueID → seen UIDs there.
    pub foreign_seen: Vec<(String, seen::UidSet)>,
    /// Quota roots among the user's folders with their limits (`user/<run>/quota`;
    /// runs made before the QUOTA extension, or from a stock `backupcyrusd`, have
    /// none).
    pub quota: Vec<(String, crate::cyrus::quota::QuotaValue)>,
    /// Meta that could not be read (a damaged member): the restore goes on without
    /// it (e.g. a folder is created without its backed-up ACL) and reports these as
    /// failures.
    pub problems: Vec<Failure>,
}

/// One subscription from the backed-up subscriptions database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Subscription {
    /// One of the user's folders, by its levels below the INBOX (`[]`, `[Work, Sub]`).
    Own(Vec<String>),
    /// Anything else (other users', shared), internal name as stored.
    Other(String),
}

/// The IMAP system flag names of Cyrus's low flag bits, in bit order.
pub const SYSTEM_FLAGS: [(u32, &str); 5] = [
    (1, "\\Answered"),
    (2, "\\Flagged"),
    (4, "\\Deleted"),
    (8, "\\Draft"),
    (16, "\\Seen"),
];

/// The IMAP flags (system flags, then keywords) of a record.
pub fn imap_flags(r: &RecordState) -> Vec<String> {
    let mut out: Vec<String> = SYSTEM_FLAGS
        .iter()
        .filter(|(bit, _)| r.system_flags & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    out.extend(r.keywords.iter().cloned());
    out
}

/// Resolve `when` to a committed run.
pub fn resolve_run(src: &Source, when: When) -> Result<u64> {
    let none = |what: String| Error::not_found("run", what);
    match when {
        When::Latest => src
            .catalog
            .last_run()?
            .map(|r| r.run)
            .ok_or_else(|| none("any (the archive has no committed run)".into())),
        When::Run(n) => src
            .catalog
            .runs()?
            .iter()
            .any(|r| r.run == n)
            .then_some(n)
            .ok_or_else(|| none(n.to_string())),
        When::At(t) => src
            .catalog
            .run_at(t)?
            .ok_or_else(|| none(format!("at or before {t} (Unix seconds)"))),
    }
}

/// The levels below the INBOX of a backed-up folder name: `INBOX` → `[]`,
/// `INBOX.Work.Sub` or `INBOX/Work/Sub` → `[Work, Sub]`; a name without the `INBOX`
/// prefix (alternate namespace, or typed by a person) is split at `/` if it has one,
/// else at `.`.
pub fn name_parts(name: &str) -> Vec<String> {
    if name.eq_ignore_ascii_case("INBOX") {
        return Vec::new();
    }
    let rest = match name.get(..6) {
        Some(p) if p.eq_ignore_ascii_case("INBOX.") || p.eq_ignore_ascii_case("INBOX/") => {
            let sep = p.as_bytes()[5] as char;
            return name[6..].split(sep).map(str::to_string).collect();
        }
        _ => name,
    };
    let sep = if rest.contains('/') { '/' } else { '.' };
    rest.split(sep).map(str::to_string).collect()
}

/// Whether a folder is one of Cyrus's own (a level starting with `#`: `#sieve`, where
/// Cyrus 3.6 keeps sieve scripts, `#calendars`, `#jmap`, ...). Users cannot see or
/// APPEND to them; their content comes back through its own protocol (sieve scripts
/// through ManageSieve), so restore leaves them out.
pub fn is_cyrus_internal(parts: &[String]) -> bool {
    parts.iter().any(|p| p.starts_with('#'))
}

/// Whether the backed-up folder with levels `parts` is selected by `wanted`: itself
/// or a parent; `INBOX` selects the INBOX alone.
pub fn folder_selected(parts: &[String], wanted: &[String]) -> bool {
    wanted.is_empty()
        || wanted.iter().any(|w| {
            let w = name_parts(w);
            if w.is_empty() {
                parts.is_empty()
            } else {
                parts.starts_with(&w)
            }
        })
}

/// Work out what `sel` holds in the archive: folders, records, ACLs, user files.
pub fn plan(src: &mut Source, sel: &Selection) -> Result<Plan> {
    let run = resolve_run(src, sel.when)?;
    let user = src
        .catalog
        .runs()?
        .into_iter()
        .find(|r| r.run == run)
        .map(|r| r.user)
        .unwrap_or_default();
    let mut folders = Vec::new();
    let mut problems = Vec::new();
    let mut sieve_folder = None;
    // Selected folders left out only because they are deleted: named in the error if
    // nothing else is selected (the admin probably wants `--include-expunged`).
    let mut deleted_left_out: Vec<String> = Vec::new();
    for f in src.catalog.folders_at(run)? {
        let parts = name_parts(&f.name);
        if !f.deleted && parts.len() == 1 && parts[0].eq_ignore_ascii_case("#sieve") {
            sieve_folder = Some(f.uniqueid.clone());
        }
        if !folder_selected(&parts, &sel.folders) || is_cyrus_internal(&parts) {
            continue;
        }
        if f.deleted && !sel.include_expunged {
            deleted_left_out.push(match f.deleted_at {
                Some(t) => {
                    let (days, secs) = crate::time::split_unix(t);
                    let (y, m, d) = crate::time::civil_from_days(days);
                    format!(
                        "{} (deleted {y:04}-{m:02}-{d:02}T{:02}:{:02}Z, held as of run {})",
                        f.name,
                        secs / 3600,
                        secs / 60 % 60,
                        f.last_run
                    )
                }
                None => format!("{} (deleted, as of run {})", f.name, f.last_run),
            });
            continue;
        }
        // A deleted folder and a live one of the same name: the live one wins.
        if f.deleted && folders.iter().any(|p: &FolderPlan| p.name == f.name) {
            continue;
        }
        let source_run = if f.deleted { f.last_run } else { run };
        let meta = match src.folder_files(&f.uniqueid, source_run, meta::IndexWant::Header) {
            Ok(m) => m,
            Err(e) => {
                problems.push(Failure {
                    folder: f.name.clone(),
                    guid: None,
                    uid: None,
                    reason: format!("backed-up ACL and metadata not restored: {e}"),
                });
                meta::FolderFiles::default()
            }
        };
        let mut records = Vec::new();
        for mut r in src.catalog.records_at(&f.uniqueid, source_run)? {
            if !sel.messages.is_empty() && !sel.messages.contains(&r.guid) {
                continue;
            }
            if r.is_expunged() || f.deleted {
                if !sel.include_expunged {
                    continue;
                }
                // Cyrus stamps last_updated when it expunges (for a deleted folder's
                // messages: their last change before the folder went).
                let when = r.last_updated;
                if sel.expunged_since.is_some_and(|t| when < t)
                    || sel.expunged_until.is_some_and(|t| when > t)
                {
                    continue;
                }
                // Restored messages are normal, visible messages: the \Deleted an
                // expunged message carried would make the next EXPUNGE remove it again.
                r.system_flags &= 0xFFFF & !crate::cyrus::index::FLAG_DELETED;
            }
            records.push(r);
        }
        let header = meta.header.as_ref();
        folders.push(FolderPlan {
            uniqueid: f.uniqueid,
            name: f.name,
            internal_name: f.internal_name,
            parts,
            deleted: f.deleted,
            source_run,
            acl: header.map(|h| h.acl.clone()).unwrap_or_default(),
            quotaroot: header.and_then(|h| h.quotaroot.clone()),
            options: meta.index_header.as_ref().map_or(0, |h| h.options),
            annotations: meta.mailbox_annotations,
            records,
        });
    }
    folders.sort_by(|a, b| a.name.cmp(&b.name));
    if !sel.folders.is_empty() && folders.is_empty() {
        let name = if deleted_left_out.is_empty() {
            sel.folders.join(", ")
        } else {
            format!(
                "{}: only deleted folders match: {}; --include-expunged restores them",
                sel.folders.join(", "),
                deleted_left_out.join(", ")
            )
        };
        return Err(Error::not_found("folder at that run", name));
    }
    let mut plan = Plan {
        user,
        run,
        folders,
        subscriptions: Vec::new(),
        sieve: Vec::new(),
        active_sieve: None,
        quota: Vec::new(),
        foreign_seen: Vec::new(),
        problems,
    };
    user_files(src, run, sel, &mut plan)?;
    let have_sources = plan
        .sieve
        .iter()
        .any(|(n, _)| sieve::script_name(n).is_some());
    if let (false, Some(id)) = (have_sources, sieve_folder) {
        sieve_from_folder(src, &id, run, &mut plan)?;
    }
    Ok(plan)
}

/// Cyrus 3.6 keeps each sieve script as a message in the user's `#sieve` folder
/// (`imap/sieve_db.c`, `store_script`): `Subject:` is the script's name, the body is
/// the script, `\Flagged` marks the active one; replaced scripts are expunged. Read
/// the live ones into the plan as `<name>.script`.
fn sieve_from_folder(src: &mut Source, uniqueid: &str, run: u64, plan: &mut Plan) -> Result<()> {
    let mut scripts = Vec::new();
    for r in src.catalog.records_at(uniqueid, run)? {
        if r.is_expunged() || r.system_flags & 4 != 0 {
            continue;
        }
        let parsed = src
            .read_message(&r.guid)
            .and_then(|m| sieve::script_from_message(&m));
        match parsed {
            Ok((name, body)) => {
                let file = format!("{name}.script");
                if r.system_flags & 2 != 0 {
                    plan.active_sieve = Some(file.clone());
                }
                scripts.push((file, body));
            }
            Err(e) => plan.problems.push(Failure {
                folder: "sieve".into(),
                guid: Some(r.guid.to_hex()),
                uid: Some(r.uid),
                reason: format!("sieve script not restored: {e}"),
            }),
        }
    }
    plan.sieve.extend(scripts);
    Ok(())
}

/// Subscriptions, sieve scripts and (with `seen_db`) the seen database of `run`. A
/// file that cannot be read or parsed becomes a problem of the plan.
fn user_files(src: &mut Source, run: u64, sel: &Selection, plan: &mut Plan) -> Result<()> {
    // Every folder the user ever had: seen entries for other UniqueIDs are about other
    // users' folders.
    let mut own: std::collections::HashSet<String> = std::collections::HashSet::new();
    for r in src.catalog.runs()? {
        own.extend(
            src.catalog
                .folders_at(r.run)?
                .into_iter()
                .map(|f| f.uniqueid),
        );
    }
    for (_, file, loc) in src.catalog.user_files_at(run)? {
        let name = format!("{}:{}", file.kind.as_str(), file.name);
        let r = src.read_entry(&loc).and_then(|bytes| match file.kind {
            UserFileKind::Subs => {
                plan.subscriptions = subscriptions(&bytes, &plan.user)?;
                Ok(())
            }
            UserFileKind::Sieve => {
                if file.active {
                    plan.active_sieve = Some(file.name.clone());
                }
                plan.sieve.push((file.name.clone(), bytes));
                Ok(())
            }
            UserFileKind::Quota => {
                plan.quota = crate::cyrus::quota::parse_quota_file(&bytes)
                    .map_err(|e| Error::parse("quota file", e))?;
                Ok(())
            }
            UserFileKind::Seen => {
                let db = seen::parse_seen_db(&bytes)?;
                plan.foreign_seen = db
                    .iter()
                    .filter(|(id, uids)| !own.contains(*id) && !uids.0.is_empty())
                    .map(|(id, uids)| (id.clone(), uids.clone()))
                    .collect();
                if !sel.seen_db {
                    return Ok(());
                }
                for f in &mut plan.folders {
                    if let Some(uids) = db.get(&f.uniqueid) {
                        for r in &mut f.records {
                            if uids.contains(r.uid) {
                                r.system_flags |= 16;
                            }
                        }
                    }
                }
                Ok(())
            }
        });
        if let Err(e) = r {
            plan.problems.push(Failure {
                folder: name,
                guid: None,
                uid: None,
                reason: format!("not restored: {e}"),
            });
        }
    }
    Ok(())
}

/// The subscriptions database as [`Subscription`]s. Cyrus 3.6 (version record
/// `US VER US`) keys each subscription `N` + the mailbox's dbname (levels separated by
/// 0x1F) with the user's own `user US <localpart>` abbreviated to `INBOX`; older files
/// hold plain internal names (`user.bob.Work`). Values are empty either way.
pub fn subscriptions(bytes: &[u8], user: &str) -> Result<Vec<Subscription>> {
    const US: char = '\u{1f}';
    let recs = crate::cyrus::flat::parse_flat(bytes)
        .map_err(|e| Error::parse("subscriptions database", e))?;
    let v2 = recs.iter().any(|(k, _)| k.as_slice() == b"\x1fVER\x1f");
    let mut out = Vec::new();
    for (k, _) in recs {
        let Ok(key) = String::from_utf8(k) else {
            continue;
        };
        if key == "\u{1f}VER\u{1f}" {
            continue;
        }
        if v2 {
            let Some(dbname) = key.strip_prefix('N') else {
                continue;
            };
            let levels: Vec<&str> = dbname.split(US).collect();
            match levels.split_first() {
                Some((&"INBOX", rest)) => out.push(Subscription::Own(
                    rest.iter().map(|s| s.to_string()).collect(),
                )),
                _ => out.push(Subscription::Other(levels.join("."))),
            }
            continue;
        }
        out.push(old_format_subscription(&key, user));
    }
    Ok(out)
}

/// One pre-3.6 subscription key: an internal name, `domain!` first with virtual
/// domains; the user's own start `user.<localpart>`.
fn old_format_subscription(name: &str, user: &str) -> Subscription {
    let (local, domain) = match user.split_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (user, None),
    };
    let inbox = format!("user.{local}");
    let (kdom, rest) = match name.split_once('!') {
        Some((d, r)) => (Some(d), r),
        None => (None, name),
    };
    let own = kdom == domain && (rest == inbox || rest.starts_with(&format!("{inbox}.")));
    if !own {
        return Subscription::Other(name.to_string());
    }
    let tail = rest[inbox.len()..].trim_start_matches('.');
    if tail.is_empty() {
        return Subscription::Own(Vec::new());
    }
    Subscription::Own(tail.split('.').map(|p| p.replace('^', ".")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_and_selection() {
        assert_eq!(name_parts("INBOX"), v(&[]));
        assert_eq!(name_parts("INBOX.Archive.2023"), v(&["Archive", "2023"]));
        assert_eq!(name_parts("INBOX/a.b/c"), v(&["a.b", "c"]));
        assert_eq!(name_parts("Archive/2023"), v(&["Archive", "2023"]));
        assert_eq!(name_parts("Sent Items"), v(&["Sent Items"]));
        let w = vec!["INBOX.Archive".to_string()];
        assert!(folder_selected(&v(&["Archive"]), &w));
        assert!(folder_selected(&v(&["Archive", "2023"]), &w));
        assert!(!folder_selected(&v(&["Archived"]), &w));
        assert!(!folder_selected(&v(&[]), &w));
        let inbox = vec!["INBOX".to_string()];
        assert!(folder_selected(&v(&[]), &inbox));
        assert!(!folder_selected(&v(&["Work"]), &inbox));
        assert!(folder_selected(&v(&["x"]), &[]));
    }

    #[test]
    fn flags_in_bit_order_then_keywords() {
        let r = RecordState {
            uid: 1,
            guid: Guid([0; 20]),
            system_flags: 16 | 2 | (1 << 31),
            keywords: vec!["$Forwarded".into()],
            internaldate: 0,
            size: 0,
            modseq: 0,
            last_updated: 0,
            savedate: 0,
        };
        assert_eq!(imap_flags(&r), ["\\Flagged", "\\Seen", "$Forwarded"]);
    }

    #[test]
    fn subscriptions_version_2() {
        let db = crate::cyrus::flat::write_flat(&[
            (b"\x1fVER\x1f".to_vec(), b"2".to_vec()),
            (b"NINBOX".to_vec(), Vec::new()),
            (b"NINBOX\x1fArchive\x1f2023".to_vec(), Vec::new()),
            (b"Nuser\x1falice\x1fShared".to_vec(), Vec::new()),
        ]);
        let mut s = subscriptions(&db, "bob").unwrap();
        s.sort_by_key(|x| format!("{x:?}"));
        let mut want = vec![
            Subscription::Own(v(&[])),
            Subscription::Own(v(&["Archive", "2023"])),
            Subscription::Other("user.alice.Shared".into()),
        ];
        want.sort_by_key(|x| format!("{x:?}"));
        assert_eq!(s, want);
    }

    #[test]
    fn subscriptions_split_own_and_other() {
        let db = crate::cyrus::flat::write_flat(&[
            (b"user.bob".to_vec(), Vec::new()),
            (b"user.bob.Lists.cyrus".to_vec(), Vec::new()),
            (b"user.bob.a^b".to_vec(), Vec::new()),
            (b"user.bobby.X".to_vec(), Vec::new()),
            (b"shared.news".to_vec(), Vec::new()),
        ]);
        let mut s = subscriptions(&db, "bob").unwrap();
        s.sort_by_key(|x| format!("{x:?}"));
        let mut want = vec![
            Subscription::Own(v(&[])),
            Subscription::Own(v(&["Lists", "cyrus"])),
            Subscription::Own(v(&["a.b"])),
            Subscription::Other("user.bobby.X".into()),
            Subscription::Other("shared.news".into()),
        ];
        want.sort_by_key(|x| format!("{x:?}"));
        assert_eq!(s, want);
    }
}
