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
use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::Instant;

use super::Result;
use super::ext::{self, BackupExt, FolderStats, UserListing};
use super::folder::ClockFloor;
use super::listing::{self, Listed};
use super::recover::{self, folder_meta, message_locs};
use super::server::Server;
use super::{BackupError, BackupOptions, UserReport};
use crate::archive::{
    ArchiveError, ArchiveWriter, EntryName, MemberInfo, WriterOptions, parse_entry_name,
    read_member_at, run_id, run_manifest_entry,
};
use crate::catalog::{Catalog, Check, FolderMeta, LiveFolder, RunInfo};
use crate::cyrus::Guid;
use crate::io_error::IoContext;
use crate::model::{FileStat, FolderInRun, FolderState, MANIFEST_FORMAT, RecordState, RunManifest};
use crate::protocol::ProtocolError;
use crate::vault::Vault;

pub(super) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(super) fn proto(server: &Server, what: &str, e: ProtocolError) -> BackupError {
    e.in_context(&format!("{}: {what}", server.addr)).into()
}

fn map_open_error(e: impl Into<BackupError>, user: &str, archive: &Path) -> BackupError {
    let e: BackupError = e.into();
    let a = archive.to_path_buf();
    let u = user.to_string();
    match e.as_archive() {
        Some(ArchiveError::Locked) => BackupError::Locked {
            user: u,
            archive: a,
        },
        Some(ArchiveError::ShorterThanCommitted { len, committed }) => {
            BackupError::ShorterThanCatalog {
                user: u,
                archive: a,
                len: *len,
                committed: *committed,
            }
        }
        Some(
            x @ (ArchiveError::TailNotLeftover { .. }
            | ArchiveError::NotMemberBoundary { .. }
            | ArchiveError::Damaged { .. }),
        ) => BackupError::NeedsRepair {
            user: u,
            archive: a,
            what: x.to_string(),
        },
        _ => e,
    }
}

/// What the last committed run left that the next run compares against.
struct Prior {
    last: Option<RunInfo>,
    /// The `"backup"` key of its manifest (read from the archive).
    ext: BackupExt,
    /// Folders live at the last run, by UniqueID.
    live: HashMap<String, LiveFolder>,
}

impl Prior {
    fn load(catalog: &Catalog, archive: &Path) -> Result<Prior> {
        let last = catalog.last_run()?;
        let ext = ext::read_ext(archive, last.as_ref().and_then(|r| r.manifest));
        let live = match &last {
            Some(l) => catalog
                .folders_live_at(l.run)?
                .into_iter()
                .map(|f| (f.uniqueid.clone(), f))
                .collect(),
            None => HashMap::new(),
        };
        Ok(Prior { last, ext, live })
    }

    /// The folder's state, snapshot run and stats at the last run, if its files are as
    /// that run read them: the same four stat lines, none racy then, live in the
    /// catalog with the same `cyrus.index` stat. Such a folder costs nothing more.
    fn carried(&self, f: &Listed) -> Option<(FolderState, u64, FolderStats)> {
        self.last.as_ref()?;
        let prev = self.ext.folders.get(&f.uniqueid)?;
        if prev.racy || !prev.same_files(&f.stats) {
            return None;
        }
        let lf = self.live.get(&f.uniqueid)?;
        let index_now = f.stats.index.map(|[size, mtime, inode]| FileStat {
            size,
            mtime: i64::try_from(mtime).unwrap_or(i64::MAX),
            inode,
        });
        (lf.state.index_file_stat == index_now)
            .then(|| (lf.state.clone(), lf.snapshot_run, prev.clone()))
    }

    /// Whether nothing at all changed since the last run: the same folders under the
    /// same names, each carried, the user files listed alike, and the archive ending
    /// where the catalog's last run does (no crash leftover to recover). Then the run
    /// writes nothing. The run it was checked against, if so.
    fn unchanged(
        &self,
        catalog: &Catalog,
        archive: &Path,
        userid: &str,
        live: &[Listed],
        user: &UserListing,
    ) -> Result<Option<u64>> {
        let Some(last) = &self.last else {
            return Ok(None);
        };
        let (Some(loc), Some(prev_user)) = (last.manifest, &self.ext.user) else {
            return Ok(None);
        };
        if live.len() != self.live.len() || !user.same_as(prev_user) {
            return Ok(None);
        }
        for f in live {
            let same_name = self.live.get(&f.uniqueid).is_some_and(|lf| {
                lf.name == f.record_name() && lf.internal_name == f.internal(userid)
            });
            if !same_name || self.carried(f).is_none() {
                return Ok(None);
            }
        }
        let Ok(file) = File::open(archive) else {
            return Ok(None);
        };
        // A writer holds the archive (another backup of this user, a compaction): its
        // state is in flux, so say so as the full path would (exit 75). A shared lock
        // taken and dropped at once tells it without waiting.
        match file.try_lock_shared() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(BackupError::archive(archive, ArchiveError::Locked));
            }
            Err(TryLockError::Error(e)) => return Err(BackupError::io("locking", archive, e)),
        }
        let len = file.metadata().at("reading metadata of", archive)?.len();
        drop(file);
        Ok((catalog.member_end(loc.member_offset)? == Some(len)).then_some(last.run))
    }
}

/// Back up one user from `server` into `vault`. See the module docs for the order.
///
/// A user with nothing changed since its last run (no folder, no user file) costs one
/// round trip (`FMULTISTATUS` with the user-file listing pipelined) and writes no run:
/// no archive byte, no fsync; the catalog records the check (`Catalog::note_check`)
/// and the report says `unchanged` with the last run's number.
pub fn backup_user(
    server: &mut Server,
    vault: &Vault,
    userid: &str,
    opts: &BackupOptions,
) -> Result<UserReport> {
    let t0 = Instant::now();
    let started = now_secs();
    let rt0 = server.client.round_trips();
    let mut rep = UserReport {
        user: userid.to_string(),
        ..Default::default()
    };
    let userfiles = server.has("USERFILES");
    let listing = listing::list_owner(server, userid, userfiles)?;
    let user_listing = UserListing {
        quota: listing.quota,
        ..UserListing::from_lines(&listing.user_lines, userfiles)
    };
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
    // Finish a prune/forget swap a crash interrupted (doc/retention.md) before
    // anything reads the pair.
    crate::retention::pair::settle(&ua.archive, &ua.catalog, None)?;
    let mut catalog = Catalog::open_backup(&ua.catalog)?;
    let prior = Prior::load(&catalog, &ua.archive)?;
    // A delayed-delete folder whose former name had to be guessed from its `DELETED.*`
    // name (stock server) keeps the name the archive knew it by.
    for f in &mut live {
        if let (Some(d), Some(before)) = (&mut f.deleted, prior.live.get(&f.uniqueid))
            && d.guessed
            && before.deleted_at.is_none()
        {
            d.original = before.name.clone();
        }
    }
    let unchanged = prior
        .unchanged(&catalog, &ua.archive, userid, &live, &user_listing)
        .map_err(|e| map_open_error(e, userid, &ua.archive))?;
    if let Some(run) = unchanged {
        catalog.note_check(&Check {
            run,
            time: i64::try_from(started).unwrap_or(i64::MAX),
            server: server.addr.clone(),
        })?;
        rep.run = run;
        rep.unchanged = true;
        rep.folders_unchanged = live.len();
        rep.round_trips = server.client.round_trips() - rt0;
        rep.duration_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        return Ok(rep);
    }

    // The archive at the catalog's committed length.
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
    let prior = if rec.runs.is_empty() {
        prior
    } else {
        Prior::load(&catalog, &ua.archive)?
    };
    rep.recovery.rolled_forward = rec.runs;
    let adopted = rec.orphans;
    let adopted_msgs = message_locs(&adopted);
    if !open.created {
        rep.recovery.adopted_members = adopted.len();
        rep.recovery.adopted_messages = adopted_msgs.len();
    }
    let mut have: HashSet<Guid> = adopted_msgs.iter().map(|(g, _)| *g).collect();
    let len_before = open.len;

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
    let last = prior.last.clone();
    let run = last.as_ref().map_or(0, |r| r.run).max(used) + 1;

    let mut written = Written::default();
    let mut ctx = RunCtx {
        server,
        writer: &mut writer,
        written: &mut written,
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
        if let Some((state, snapshot_run, stats)) = prior.carried(f) {
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
            prior.ext.folders.get(&f.uniqueid),
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
    let mut gone: Vec<&LiveFolder> = prior
        .live
        .values()
        .filter(|f| !listed.contains(f.uniqueid.as_str()))
        .collect();
    gone.sort_by(|a, b| a.uniqueid.cmp(&b.uniqueid));
    for g in gone {
        folders.push(FolderInRun {
            uniqueid: g.uniqueid.clone(),
            name: g.name.clone(),
            internal_name: g.internal_name.clone(),
            deleted: true,
            state: g.state.clone(),
            snapshot_run: g.snapshot_run,
            deleted_at: g.deleted_at,
        });
        ctx.rep.folders_gone += 1;
    }

    let (user_state, user_stats) =
        ctx.user_state(last.as_ref().map(|l| l.run), &prior.ext, &user_listing)?;
    new_ext.user = user_stats;
    // A failed folder keeps the state the catalog has for it (carried forward at
    // commit), if it has one.
    for f in &mut rep.folders_failed {
        f.carried_forward = f
            .uniqueid
            .as_ref()
            .is_some_and(|u| prior.live.contains_key(u));
    }
    new_ext.failed = rep.folders_failed.clone();

    // Durable members first, then the manifest alone in the last member, then commit.
    let content = writer.finish_member()?;
    written.absorb(content, &ua.archive)?;
    let mut member_offsets: Vec<u64> = adopted.iter().map(|m| m.offset).collect();
    member_offsets.extend(written.members.iter().map(|m| m.offset));
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
    let mname = run_manifest_entry(&runid).map_err(|e| BackupError::archive(&ua.archive, e))?;
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
        return Err(BackupError::other(format!(
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
    // Taken, not copied: at 200,000 messages a second list is ~10 MB more at the peak.
    let mut messages = std::mem::take(&mut written.messages);
    messages.extend(message_locs(&adopted));
    messages.sort_by_key(|(_, l)| (l.member_offset, l.offset_in_member));
    let mut all: Vec<MemberInfo> = adopted;
    all.append(&mut written.members);
    all.extend(mm.iter().cloned());
    all.sort_by_key(|m| m.offset);
    let mut snapshots: HashMap<String, (FolderMeta, Vec<RecordState>)> = HashMap::new();
    for (uid, recs) in records {
        let meta = folder_meta(&all, &uid, run)?;
        snapshots.insert(uid, (meta, recs));
    }
    recover::commit_run_with(
        &mut catalog,
        &manifest,
        manifest_loc,
        &all,
        &messages,
        &snapshots,
    )?;
    // A checkpoint of a large run's WAL costs the catalog its only fsyncs (two).
    let settled = catalog.settle()?;
    rep.run = run;
    rep.bytes_written = end.saturating_sub(len_before);
    rep.fsyncs = writer.fsyncs() + if settled { 2 } else { 0 };
    rep.round_trips = server.client.round_trips() - rt0;
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
            });
        }
        Err(e) => return Err(BackupError::io("reading metadata of", archive, e)),
    };
    let short = |committed| -> BackupError {
        BackupError::ShorterThanCatalog {
            user: user.to_string(),
            archive: archive.to_path_buf(),
            len,
            committed,
        }
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
            }),
            None => Err(e.into()),
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
                return Err(BackupError::other(format!(
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

/// The members a run's writer has finished, compacted as they come: each message
/// entry, once checked to hash to its name, becomes a `(GUID, location)` pair (44
/// bytes instead of a named entry); the other entries keep their names (the folder
/// snapshots are found by name). A folder of 200,000 messages so costs ~9 MB here
/// instead of ~25 MB.
#[derive(Debug, Default)]
pub(super) struct Written {
    pub(super) members: Vec<MemberInfo>,
    pub(super) messages: Vec<(Guid, crate::model::EntryLoc)>,
}

impl Written {
    /// Take in members the writer finished.
    pub(super) fn absorb(&mut self, members: Vec<MemberInfo>, archive: &Path) -> Result<()> {
        check_message_names(&members, archive)?;
        for mut m in members {
            self.messages.extend(message_locs(std::slice::from_ref(&m)));
            m.entries
                .retain(|e| !matches!(parse_entry_name(&e.name), EntryName::Message(_)));
            // `retain` keeps the capacity: a member's ~2,700 message entries (~170 KB)
            // stayed allocated for every member of the run, ~19 MB for a folder of
            // 200,000 messages (heaptrack, issue 10).
            m.entries.shrink_to_fit();
            self.members.push(m);
        }
        Ok(())
    }
}

pub(super) struct RunCtx<'a> {
    pub(super) server: &'a mut Server,
    pub(super) writer: &'a mut ArchiveWriter,
    /// What the writer finished so far (drained after each FDATA batch).
    pub(super) written: &'a mut Written,
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
