//! One user's backup run, in the order that makes it crash-safe and cheap
//! (doc/backup.md):
//!
//! 1. `FMULTISTATUS` (one exchange; `listing.rs`): every folder of the owner, the
//!    delayed-delete ones (`DELETED.*`) included, backed up as deleted folders.
//! 2. Open the catalog, then the archive with the catalog's committed length (the
//!    writer's lock refuses a second writer; its tail check cuts crash leftovers and
//!    refuses an archive shorter than the catalog). Replay runs whose manifest reached
//!    the archive but not the catalog; adopt members of runs that never got one.
//! 3. Per folder: the stat lines equal the previous run's, not racy, and the catalog's
//!    last `FolderState` has the same index stat → unchanged (`folder_unchanged`), no
//!    more traffic. Otherwise `FMETA` header/index/annotations/mailbox_annotations,
//!    `records_from_meta`, `missing_guids`, `FDATA` (≤ 1024 UIDs per request) for what
//!    the archive lacks; each message's SHA-1 must equal its GUID or it is reported as
//!    spool damage and not stored. A folder whose records name a message that is not
//!    held then is FAILED (`folder.rs`): left out of the manifest, so the catalog
//!    carries its previous state forward.
//! 4. User state (`META` seen/sub, `SNAPSHOT`'s sieve files) when it changed.
//! 5. Folders the catalog had and the server no longer lists → deleted in this run.
//! 6. `finish_member` (fsync), the manifest alone in the last member (fsync), then
//!    `Catalog::write_run` commits the run in one transaction.
//!
//! Steps 3 and 4 are in `folder.rs` and `user.rs` (methods of [`RunCtx`]).
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::time::Instant;

use super::ext::{self, BackupExt};
use super::folder::ClockFloor;
use super::listing::{self, Listed};
use super::recover::{self, folder_meta, message_locs};
use super::server::Server;
use super::{BackupError, BackupOptions, UserReport};
use crate::archive::{
    ArchiveError, ArchiveWriter, EntryName, MemberInfo, WriterOptions, parse_entry_name,
    read_member_at, run_id, run_manifest_entry,
};
use crate::catalog::{Catalog, FolderAt, FolderMeta};
use crate::cyrus::Guid;
use crate::error::{Error, IoContext, Result};
use crate::model::{FileStat, FolderInRun, MANIFEST_FORMAT, RecordState, RunManifest};
use crate::protocol::ProtocolError;
use crate::vault::Vault;

pub(super) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(super) fn proto(server: &Server, what: &str, e: ProtocolError) -> Error {
    e.in_context(&format!("{}: {what}", server.addr))
}

fn map_open_error(e: Error, user: &str, archive: &Path) -> Error {
    let a = archive.to_path_buf();
    let u = user.to_string();
    match e.as_archive() {
        Some(ArchiveError::Locked) => BackupError::Locked {
            user: u,
            archive: a,
        }
        .into(),
        Some(ArchiveError::ShorterThanCommitted { len, committed }) => {
            BackupError::ShorterThanCatalog {
                user: u,
                archive: a,
                len: *len,
                committed: *committed,
            }
            .into()
        }
        Some(
            x @ (ArchiveError::TailNotLeftover { .. }
            | ArchiveError::NotMemberBoundary { .. }
            | ArchiveError::Damaged { .. }),
        ) => BackupError::NeedsRepair {
            user: u,
            archive: a,
            what: x.to_string(),
        }
        .into(),
        _ => e,
    }
}

/// Back up one user from `server` into `vault`. See the module docs for the order.
pub fn backup_user(
    server: &mut Server,
    vault: &Vault,
    userid: &str,
    opts: &BackupOptions,
) -> Result<UserReport> {
    let t0 = Instant::now();
    let started = now_secs();
    let mut rep = UserReport {
        user: userid.to_string(),
        ..Default::default()
    };
    let listing = listing::list_owner(server, userid)?;
    let mut live: Vec<Listed> = listing.folders;
    // A lower bound of the server's clock: the newest mtime it listed (the racy rule
    // without SERVERTIME, doc/backup.md).
    let mut clock = ClockFloor::default();
    for f in &live {
        for s in [f.stats.header, f.stats.index, f.stats.annotations]
            .into_iter()
            .flatten()
        {
            clock.saw_mtime(s[1]);
        }
    }
    rep.folders_delayed_delete = live.iter().filter(|f| f.deleted.is_some()).count();
    rep.folders_seen = live.len() - rep.folders_delayed_delete;
    // A user without a live INBOX keeps the archive the vault has for it.
    let root = match listing.orphan {
        true => vault
            .user(userid)?
            .map_or_else(|| listing.root.clone(), |ua| ua.inbox_uniqueid),
        false => listing.root.clone(),
    };
    rep.inbox_uniqueid = root.clone();
    if let Some(p) = &opts.progress {
        p.user_started(userid, live.len());
    }
    let ua = vault.set_user(userid, &root)?;
    rep.archive = ua.archive.clone();

    // Finish a prune/forget swap a crash interrupted (doc/retention.md), then the
    // catalog, then the archive at the catalog's committed length.
    crate::retention::pair::settle(&ua.archive, &ua.catalog, None)?;
    let mut catalog = Catalog::open(&ua.catalog)?;
    let committed = committed_len(&catalog, userid, &ua.archive)?;
    let wopts = WriterOptions {
        committed_len: Some(committed),
        ..opts.writer.clone().unwrap_or_default()
    };
    let mut writer = ArchiveWriter::open_with(&ua.archive, wopts)
        .map_err(|e| map_open_error(e, userid, &ua.archive))?;
    // A prune that finished between the catalog's open and the archive's lock swapped
    // both: this catalog is the old one. Temporary: the next attempt opens the new pair.
    if !open_created(&writer) {
        crate::retention::pair::check_same_generation(&catalog, &ua.archive)?;
    }
    let open = writer.open_report().clone();
    rep.recovery.cut = open.cut;
    let mut uncommitted = open.uncommitted.clone();
    if open.created {
        // The FORMAT member this open wrote belongs to the first run that commits.
        let mut f = File::open(&ua.archive).at("opening", &ua.archive)?;
        uncommitted.insert(0, read_member_at(&mut f, &ua.archive, 0)?);
    }
    let rec = recover::recover(&mut catalog, &ua.archive, userid, uncommitted)?;
    rep.recovery.rolled_forward = rec.runs;
    let adopted = rec.orphans;
    let adopted_msgs = message_locs(&adopted);
    if !open.created {
        rep.recovery.adopted_members = adopted.len();
        rep.recovery.adopted_messages = adopted_msgs.len();
    }
    let mut have: HashSet<Guid> = adopted_msgs.iter().map(|(g, _)| *g).collect();
    let len_before = open.len;

    let last = catalog.last_run()?;
    // A crashed attempt may have written `folders/<uid>/<run>/...` under the number
    // this run would take; its members are adopted, so skip past every run number they
    // use: entry names never collide (runs may be numbered with gaps).
    let used = adopted
        .iter()
        .flat_map(|m| m.entries.iter())
        .filter_map(|e| match parse_entry_name(&e.name) {
            EntryName::Folder { run, .. }
            | EntryName::User { run, .. }
            | EntryName::RunManifest { run } => run.parse::<u64>().ok(),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let run = last.as_ref().map_or(0, |r| r.run).max(used) + 1;
    let prev_ext = ext::read_ext(&ua.archive, last.as_ref().and_then(|r| r.manifest));
    // Folders the server held at the last run: live ones and those in its
    // delayed-delete area (both are listed by FMULTISTATUS; either can go).
    let live_before: HashMap<String, FolderAt> = match &last {
        Some(l) => catalog
            .folders_at(l.run)?
            .into_iter()
            .filter(|f| f.present(l.run))
            .map(|f| (f.uniqueid.clone(), f))
            .collect(),
        None => HashMap::new(),
    };
    // A delayed-delete folder whose former name had to be guessed from its `DELETED.*`
    // name (stock server) keeps the name the archive knew it by.
    for f in &mut live {
        if let (Some(d), Some(before)) = (&mut f.deleted, live_before.get(&f.uniqueid))
            && d.guessed
            && before.deleted_at.is_none()
        {
            d.original = before.name.clone();
        }
    }

    let mut ctx = RunCtx {
        server,
        writer: &mut writer,
        catalog: &catalog,
        userid,
        run,
        have: &mut have,
        rep: &mut rep,
        opts,
        clock,
        erased: catalog.erased()?,
    };
    let mut folders: Vec<FolderInRun> = Vec::new();
    let mut records: HashMap<String, Vec<RecordState>> = HashMap::new();
    let mut new_ext = BackupExt::default();
    for f in &live {
        if let Some(p) = &opts.progress {
            p.folder(userid, &f.name);
        }
        let internal = f.internal(userid);
        let deleted_at = f.deleted.as_ref().map(|d| d.at);
        let unchanged = match (&last, prev_ext.folders.get(&f.uniqueid)) {
            (Some(l), Some(prev))
                if !prev.racy
                    && prev.same_files(&f.stats)
                    && live_before.contains_key(&f.uniqueid) =>
            {
                let st = catalog.folder_state_last(&f.uniqueid)?;
                let snap = catalog.folder_snapshot_at(&f.uniqueid, l.run)?;
                let index_now = f.stats.index.map(|[size, mtime, inode]| FileStat {
                    size,
                    mtime: i64::try_from(mtime).unwrap_or(i64::MAX),
                    inode,
                });
                match (st, snap) {
                    (Some(st), Some(snap)) if st.index_file_stat == index_now => {
                        Some((st, snap.snapshot_run, prev.clone()))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some((state, snapshot_run, stats)) = unchanged {
            folders.push(FolderInRun {
                uniqueid: f.uniqueid.clone(),
                name: f.record_name().to_string(),
                internal_name: internal,
                deleted: false,
                state,
                snapshot_run,
                deleted_at,
            });
            new_ext.folders.insert(f.uniqueid.clone(), stats);
            ctx.rep.folders_unchanged += 1;
            continue;
        }
        log::debug!(
            target: "cyrvault::backup",
            "user {userid} folder {}: changed (before: {:?}, now: {:?})",
            f.name,
            prev_ext.folders.get(&f.uniqueid),
            f.stats
        );
        let Some(taken) = ctx.take_folder(f)? else {
            continue;
        };
        folders.push(FolderInRun {
            uniqueid: f.uniqueid.clone(),
            name: f.record_name().to_string(),
            internal_name: internal,
            deleted: false,
            state: taken.state,
            snapshot_run: run,
            deleted_at,
        });
        records.insert(f.uniqueid.clone(), taken.records);
        new_ext.folders.insert(f.uniqueid.clone(), taken.stats);
        ctx.rep.folders_changed += 1;
    }

    // Folders the catalog had live that the server no longer lists.
    let listed: HashSet<&str> = live.iter().map(|f| f.uniqueid.as_str()).collect();
    let mut gone: Vec<&FolderAt> = live_before
        .values()
        .filter(|f| !listed.contains(f.uniqueid.as_str()))
        .collect();
    gone.sort_by(|a, b| a.uniqueid.cmp(&b.uniqueid));
    if let Some(l) = &last {
        for g in gone {
            let state = catalog.folder_state_last(&g.uniqueid)?.unwrap_or_default();
            let snapshot_run = catalog
                .folder_snapshot_at(&g.uniqueid, l.run)?
                .map_or(l.run, |s| s.snapshot_run);
            folders.push(FolderInRun {
                uniqueid: g.uniqueid.clone(),
                name: g.name.clone(),
                internal_name: g.internal_name.clone(),
                deleted: true,
                state,
                snapshot_run,
                deleted_at: g.deleted_at,
            });
            ctx.rep.folders_gone += 1;
        }
    }

    let (user_state, user_stats) = ctx.user_state(last.as_ref().map(|l| l.run), &prev_ext)?;
    new_ext.user = user_stats;
    // A failed folder keeps the state the catalog has for it (carried forward at
    // commit), if it has one.
    for f in &mut rep.folders_failed {
        f.carried_forward = f
            .uniqueid
            .as_ref()
            .is_some_and(|u| live_before.contains_key(u));
    }
    new_ext.failed = rep.folders_failed.clone();

    // Durable members first, then the manifest alone in the last member, then commit.
    let content = writer.finish_member()?;
    check_message_names(&content, &ua.archive)?;
    let mut member_offsets: Vec<u64> = adopted.iter().map(|m| m.offset).collect();
    member_offsets.extend(content.iter().map(|m| m.offset));
    let manifest = RunManifest {
        format: MANIFEST_FORMAT,
        run,
        user: userid.to_string(),
        started: i64::try_from(started).unwrap_or(i64::MAX),
        finished: i64::try_from(now_secs()).unwrap_or(i64::MAX),
        server: server.addr.clone(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        folders,
        user_state,
        members: member_offsets,
    };
    let runid = run_id(run);
    let mname = run_manifest_entry(&runid).map_err(|e| Error::archive(&ua.archive, e))?;
    writer.add(
        &mname,
        &ext::manifest_json(&manifest, &new_ext)?,
        now_secs(),
    )?;
    let mm = writer.finish_member()?;
    let Some(manifest_member) = mm
        .iter()
        .find(|m| m.entries.iter().any(|e| e.name == mname))
    else {
        return Err(Error::Other(format!(
            "run {run}: the manifest member was not reported by the writer"
        )));
    };
    let mentry = &manifest_member.entries[0];
    let manifest_loc = crate::model::EntryLoc {
        member_offset: manifest_member.offset,
        offset_in_member: mentry.offset_in_member,
        size: mentry.size,
    };
    let end = mm.iter().map(MemberInfo::end).max().unwrap_or(len_before);
    let mut all: Vec<MemberInfo> = adopted;
    all.extend(content);
    all.extend(mm.iter().cloned());
    all.sort_by_key(|m| m.offset);
    let mut snapshots: HashMap<String, (FolderMeta, Vec<RecordState>)> = HashMap::new();
    for (uid, recs) in records {
        let meta = folder_meta(&all, &uid, run)?;
        snapshots.insert(uid, (meta, recs));
    }
    recover::commit_run(&mut catalog, &manifest, manifest_loc, &all, &snapshots)?;
    rep.run = run;
    rep.bytes_written = end.saturating_sub(len_before);
    rep.duration_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
    for d in &rep.damage {
        log::error!(target: "cyrvault::backup", "{d}");
    }
    Ok(rep)
}

fn open_created(w: &ArchiveWriter) -> bool {
    w.open_report().created
}

/// The archive length the catalog has committed: the end of the last run's manifest
/// member (the manifest is written last, alone in its member), read from the archive
/// itself; a catalog without a manifest location falls back to the members table.
/// A missing or short archive is a typed error and nothing is touched.
fn committed_len(catalog: &Catalog, user: &str, archive: &Path) -> Result<u64> {
    let Some(last) = catalog.last_run()? else {
        return Ok(0);
    };
    let Some(loc) = last.manifest else {
        return Ok(catalog.stats()?.stored_compressed_bytes);
    };
    let len = match std::fs::metadata(archive) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::ArchiveMissing {
                user: user.to_string(),
                archive: archive.to_path_buf(),
                committed: loc.member_offset,
            }
            .into());
        }
        Err(e) => return Err(Error::io("reading metadata of", archive, e)),
    };
    let short = |committed| -> Error {
        BackupError::ShorterThanCatalog {
            user: user.to_string(),
            archive: archive.to_path_buf(),
            len,
            committed,
        }
        .into()
    };
    if len <= loc.member_offset {
        return Err(short(loc.member_offset.saturating_add(1)));
    }
    let mut f = File::open(archive).at("opening", archive)?;
    match read_member_at(&mut f, archive, loc.member_offset) {
        Ok(m) => Ok(m.end()),
        Err(e) => match e.as_archive() {
            Some(ArchiveError::Damaged {
                damage: crate::archive::Damage::Truncated,
                ..
            }) => Err(short(len.saturating_add(1))),
            Some(_) => Err(BackupError::NeedsRepair {
                user: user.to_string(),
                archive: archive.to_path_buf(),
                what: format!("the last committed run's manifest member does not read: {e}"),
            }
            .into()),
            None => Err(e),
        },
    }
}

/// Every message entry written must hash to its name (the writer hashed what it
/// stored); anything else is a bug, and nothing is committed.
fn check_message_names(members: &[MemberInfo], archive: &Path) -> Result<()> {
    for m in members {
        for e in &m.entries {
            if let EntryName::Message(g) = parse_entry_name(&e.name)
                && g != e.sha1
            {
                return Err(Error::Other(format!(
                    "{}: entry {} at member {} hashes to {}: not committing",
                    archive.display(),
                    e.name,
                    m.offset,
                    e.sha1.to_hex()
                )));
            }
        }
    }
    Ok(())
}

pub(super) struct RunCtx<'a> {
    pub(super) server: &'a mut Server,
    pub(super) writer: &'a mut ArchiveWriter,
    pub(super) catalog: &'a Catalog,
    pub(super) userid: &'a str,
    pub(super) run: u64,
    /// GUIDs stored (in committed runs, adopted members, or this run).
    pub(super) have: &'a mut HashSet<Guid>,
    pub(super) rep: &'a mut UserReport,
    pub(super) opts: &'a BackupOptions,
    /// A lower bound of the server's clock (for a server without `SERVERTIME`).
    pub(super) clock: ClockFloor,
    /// Erased messages (doc/retention.md): left out of a folder's records (and never
    /// fetched) unless [`Erasure::keeps`] says otherwise.
    pub(super) erased: HashMap<Guid, crate::model::retention::Erasure>,
}
