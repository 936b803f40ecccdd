//! One user's backup run, in the order that makes it crash-safe and cheap
//! (doc/backup.md):
//!
//! 1. `FMULTISTATUS` (one exchange). Delayed-delete folders are set aside.
//! 2. Open the catalog, then the archive with the catalog's committed length (the
//!    writer's lock refuses a second writer; its tail check cuts crash leftovers and
//!    refuses an archive shorter than the catalog). Replay runs whose manifest reached
//!    the archive but not the catalog; adopt members of runs that never got one.
//! 3. Per folder: the stat lines equal the previous run's, not racy, and the catalog's
//!    last `FolderState` has the same index stat → unchanged (`folder_unchanged`), no
//!    more traffic. Otherwise `FMETA` header/index/annotations/mailbox_annotations,
//!    `records_from_meta`, `missing_guids`, `FDATA` (≤ 1024 UIDs per request) for what
//!    the archive lacks; each message's SHA-1 must equal its GUID or it is reported as
//!    spool damage and not stored.
//! 4. User state (`META` seen/sub, `SNAPSHOT`'s sieve files) when it changed.
//! 5. Folders the catalog had and the server no longer lists → deleted in this run.
//! 6. `finish_member` (fsync), the manifest alone in the last member (fsync), then
//!    `Catalog::write_run` commits the run in one transaction.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use super::ext::{self, BackupExt, FolderStats, UserStats, stat3};
use super::recover::{
    self, folder_meta, member_rows, message_locs, user_file_entry, user_file_locs,
};
use super::server::Server;
use super::{BackupError, BackupOptions, FDATA_BATCH, RACY_SECS, SpoolDamage, UserReport};
use crate::archive::{
    ArchiveError, ArchiveWriter, EntryName, MemberInfo, WriterOptions, folder_entry, message_entry,
    parse_entry_name, read_member_at, run_id, run_manifest_entry,
};
use crate::catalog::{Catalog, FolderAt, FolderMeta, RunParts};
use crate::cyrus::Guid;
use crate::error::{Error, IoContext, Result};
use crate::model::{
    FileStat, FolderInRun, FolderState, MANIFEST_FORMAT, RecordState, RunManifest, UserFile,
    UserFileKind, UserStateRef, records_from_meta,
};
use crate::protocol::client::{Collect, Receiver};
use crate::protocol::{DataHeader, ProtocolError, Reply, Request};
use crate::vault::Vault;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn proto(server: &Server, what: &str, e: ProtocolError) -> Error {
    Error::Protocol(format!("{}: {what}: {e}", server.addr))
}

/// A folder as FMULTISTATUS listed it.
struct Listed {
    name: String,
    uniqueid: String,
    stats: FolderStats,
}

/// Whether an external name is a delayed-delete folder (`DELETED.user.bob.Old.5F3A1B2C`
/// or with `/`): never an INBOX name, `<prefix> user <localpart> ... <hex stamp>`.
pub(crate) fn is_delayed_delete(name: &str) -> bool {
    if name == "INBOX" || name.starts_with("INBOX.") || name.starts_with("INBOX/") {
        return false;
    }
    let sep = if name.contains('/') { '/' } else { '.' };
    let parts: Vec<&str> = name.split(sep).collect();
    parts.len() >= 4
        && parts[1] == "user"
        && parts
            .last()
            .is_some_and(|h| h.len() >= 8 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Cyrus's internal name of a user's folder from its external name (standard or
/// alternate namespace, `.` or `/` separator): `user.bob.Sent`, `ex.org!user.bob`.
pub(crate) fn internal_name(userid: &str, external: &str) -> String {
    let (local, domain) = match userid.split_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (userid, None),
    };
    let mut s = String::new();
    if let Some(d) = domain {
        s.push_str(d);
        s.push('!');
    }
    s.push_str("user.");
    s.push_str(&local.replace('.', "^"));
    let rest = if external == "INBOX" {
        None
    } else {
        Some(
            external
                .strip_prefix("INBOX.")
                .or_else(|| external.strip_prefix("INBOX/"))
                .unwrap_or(external),
        )
    };
    if let Some(rest) = rest {
        s.push('.');
        if external.contains('/') {
            let comps: Vec<String> = rest.split('/').map(|c| c.replace('.', "^")).collect();
            s.push_str(&comps.join("."));
        } else {
            s.push_str(rest);
        }
    }
    s
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
    let listing = server
        .client
        .fmultistatus(userid.as_bytes())
        .map_err(|e| proto(server, "FMULTISTATUS", e))?;
    let mut live: Vec<Listed> = Vec::new();
    for f in listing {
        let name = String::from_utf8_lossy(&f.name).into_owned();
        if is_delayed_delete(&name) {
            rep.folders_delayed_delete += 1;
            continue;
        }
        let mut stats = FolderStats::default();
        for (n, s) in &f.files {
            stats.set(n, stat3(s));
        }
        live.push(Listed {
            name,
            uniqueid: String::from_utf8_lossy(&f.uniqueid).into_owned(),
            stats,
        });
    }
    let Some(inbox) = live.iter().find(|f| f.name == "INBOX") else {
        return Err(BackupError::NoSuchUser {
            user: userid.to_string(),
        }
        .into());
    };
    rep.folders_seen = live.len();
    rep.inbox_uniqueid = inbox.uniqueid.clone();
    if let Some(p) = &opts.progress {
        p.user_started(userid, live.len());
    }
    let ua = vault.set_user(userid, &inbox.uniqueid)?;
    rep.archive = ua.archive.clone();

    // Catalog, then the archive at the catalog's committed length.
    let mut catalog = Catalog::open(&ua.catalog)?;
    let committed = committed_len(&catalog, userid, &ua.archive)?;
    let wopts = WriterOptions {
        committed_len: Some(committed),
        ..opts.writer.clone().unwrap_or_default()
    };
    let mut writer = ArchiveWriter::open_with(&ua.archive, wopts)
        .map_err(|e| map_open_error(e, userid, &ua.archive))?;
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
    let run = last.as_ref().map_or(1, |r| r.run + 1);
    let prev_ext = ext::read_ext(&ua.archive, last.as_ref().and_then(|r| r.manifest));
    let live_before: HashMap<String, FolderAt> = match &last {
        Some(l) => catalog
            .folders_at(l.run)?
            .into_iter()
            .filter(|f| !f.deleted)
            .map(|f| (f.uniqueid.clone(), f))
            .collect(),
        None => HashMap::new(),
    };

    let mut ctx = RunCtx {
        server,
        writer: &mut writer,
        catalog: &catalog,
        userid,
        run,
        have: &mut have,
        rep: &mut rep,
        opts,
    };
    let mut folders: Vec<FolderInRun> = Vec::new();
    let mut records: HashMap<String, Vec<RecordState>> = HashMap::new();
    let mut new_ext = BackupExt::default();
    for f in &live {
        if let Some(p) = &opts.progress {
            p.folder(userid, &f.name);
        }
        let internal = internal_name(userid, &f.name);
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
                name: f.name.clone(),
                internal_name: internal,
                deleted: false,
                state,
                snapshot_run,
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
            name: f.name.clone(),
            internal_name: internal,
            deleted: false,
            state: taken.state,
            snapshot_run: run,
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
            });
            ctx.rep.folders_gone += 1;
        }
    }

    let (user_state, user_stats) = ctx.user_state(last.as_ref().map(|l| l.run), &prev_ext)?;
    new_ext.user = user_stats;

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
    let user_files = user_file_locs(&catalog, &all, &manifest)?;
    let rows = member_rows(&all);
    let messages = message_locs(&all);
    catalog.write_run(
        &manifest,
        &RunParts {
            manifest_loc: Some(manifest_loc),
            members: &rows,
            messages: &messages,
            snapshots: &snapshots,
            user_files: &user_files,
        },
    )?;
    rep.run = run;
    rep.bytes_written = end.saturating_sub(len_before);
    rep.duration_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
    for d in &rep.damage {
        log::error!(target: "cyrvault::backup", "{d}");
    }
    Ok(rep)
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

/// What a changed folder gave.
struct Taken {
    state: FolderState,
    records: Vec<RecordState>,
    stats: FolderStats,
}

struct RunCtx<'a> {
    server: &'a mut Server,
    writer: &'a mut ArchiveWriter,
    catalog: &'a Catalog,
    userid: &'a str,
    run: u64,
    /// GUIDs stored (in committed runs, adopted members, or this run).
    have: &'a mut HashSet<Guid>,
    rep: &'a mut UserReport,
    opts: &'a BackupOptions,
}

impl RunCtx<'_> {
    fn skip(&mut self, f: &Listed, why: String) {
        log::warn!(
            target: "cyrvault::backup",
            "user {} folder {}: skipped this run: {why}",
            self.userid,
            f.name
        );
        self.rep.folders_skipped.push(f.name.clone());
    }

    /// FMETA, records, missing messages by FDATA, and the folder's entries.
    fn take_folder(&mut self, f: &Listed) -> Result<Option<Taken>> {
        let items: Vec<Vec<u8>> = ["header", "index", "annotations", "mailbox_annotations"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let req = Request::FMeta {
            slot: self.server.slot(),
            user: self.userid.as_bytes().to_vec(),
            folder: f.name.as_bytes().to_vec(),
            items: Some(items),
        };
        let mut rx = Collect::default();
        let done = match self.server.client.fetch(&req, &mut rx) {
            Ok(d) => d,
            Err(ProtocolError::No(t)) => {
                self.skip(f, format!("FMETA answered NO {t}"));
                return Ok(None);
            }
            Err(e) => return Err(proto(self.server, "FMETA", e)),
        };
        if done.get(1).map(|u| u.as_slice()) != Some(f.uniqueid.as_bytes()) {
            self.skip(
                f,
                "the folder was replaced between listing and reading".into(),
            );
            return Ok(None);
        }
        let now = now_secs();
        let mut stats = FolderStats::default();
        let mut files: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for (h, bytes) in rx.files {
            let s = stat3(&h.stat);
            stats.set(&h.name, s);
            if h.name != b"mailbox_annotations" && h.stat.mtime.saturating_add(RACY_SECS) > now {
                stats.racy = true;
            }
            self.rep.meta_bytes_fetched += bytes.len() as u64;
            files.insert(h.name, bytes);
        }
        let (Some(header), Some(index)) = (files.get(&b"header"[..]), files.get(&b"index"[..]))
        else {
            self.skip(f, "cyrus.header or cyrus.index missing".into());
            return Ok(None);
        };
        let (mut state, records) = match records_from_meta(header, index) {
            Ok(x) => x,
            Err(e) => {
                self.skip(f, format!("metadata does not parse: {e}"));
                return Ok(None);
            }
        };
        state.index_file_stat = stats.index.map(|[size, mtime, inode]| FileStat {
            size,
            mtime: i64::try_from(mtime).unwrap_or(i64::MAX),
            inode,
        });
        let runid = run_id(self.run);
        let entry = |file: &str| {
            folder_entry(&f.uniqueid, &runid, file).map_err(|e| Error::archive("(entry)", e))
        };
        for (proto_name, file) in [
            (&b"header"[..], "cyrus.header"),
            (b"index", "cyrus.index"),
            (b"annotations", "cyrus.annotations"),
            (b"mailbox_annotations", "mailbox_annotations.json"),
        ] {
            if let Some(bytes) = files.get(proto_name) {
                self.writer.add(&entry(file)?, bytes, now)?;
            }
        }
        let mut summary = serde_json::to_value(&state)
            .map_err(|e| Error::Other(format!("encoding state.json: {e}")))?;
        if let serde_json::Value::Object(m) = &mut summary {
            m.insert("name".into(), f.name.clone().into());
            m.insert(
                "internal_name".into(),
                internal_name(self.userid, &f.name).into(),
            );
            m.insert("uniqueid".into(), f.uniqueid.clone().into());
            m.insert("records".into(), records.len().into());
        }
        let summary = serde_json::to_vec_pretty(&summary)
            .map_err(|e| Error::Other(format!("encoding state.json: {e}")))?;
        self.writer.add(&entry("state.json")?, &summary, now)?;
        self.fetch_messages(f, &records)?;
        Ok(Some(Taken {
            state,
            records,
            stats,
        }))
    }

    /// FDATA for the records whose GUID the archive does not have yet.
    fn fetch_messages(&mut self, f: &Listed, records: &[RecordState]) -> Result<()> {
        let mut want: Vec<(u32, Guid, i64)> = Vec::new();
        let mut seen: HashSet<Guid> = HashSet::new();
        for r in records {
            if r.guid.0 == [0u8; 20] {
                log::warn!(
                    target: "cyrvault::backup",
                    "user {} folder {} uid {}: record has no GUID; not fetched",
                    self.userid, f.name, r.uid
                );
                continue;
            }
            if !self.have.contains(&r.guid) && seen.insert(r.guid) {
                want.push((r.uid, r.guid, r.internaldate));
            }
        }
        if want.is_empty() {
            return Ok(());
        }
        let guids: Vec<Guid> = want.iter().map(|w| w.1).collect();
        let missing: HashSet<Guid> = self.catalog.missing_guids(&guids)?.into_iter().collect();
        for (_, g, _) in &want {
            if !missing.contains(g) {
                self.have.insert(*g);
            }
        }
        want.retain(|w| missing.contains(&w.1));
        for batch in want.chunks(FDATA_BATCH) {
            let expected: HashMap<u32, (Guid, i64)> =
                batch.iter().map(|(u, g, d)| (*u, (*g, *d))).collect();
            let uids: Vec<u32> = batch.iter().map(|w| w.0).collect();
            let mut rx = MessageRx {
                writer: &mut *self.writer,
                expected: &expected,
                buf: Vec::new(),
                user: self.userid,
                folder: &f.name,
                stored: Vec::new(),
                bytes: 0,
                damage: Vec::new(),
                missing: Vec::new(),
                err: None,
                progress: self.opts.progress.as_deref(),
            };
            let r =
                self.server
                    .client
                    .fdata(self.userid.as_bytes(), f.name.as_bytes(), &uids, &mut rx);
            if let Some(e) = rx.err.take() {
                return Err(e);
            }
            let (stored, bytes, damage, missing) = (rx.stored, rx.bytes, rx.damage, rx.missing);
            match r {
                Ok(_) => {}
                Err(ProtocolError::No(t)) => {
                    self.skip(f, format!("FDATA answered NO {t}"));
                }
                Err(e) => return Err(proto(self.server, "FDATA", e)),
            }
            let rx = (stored, bytes, damage, missing);
            self.rep.messages_fetched += rx.0.len() as u64;
            self.rep.bytes_fetched += rx.1;
            self.have.extend(rx.0.iter().copied());
            self.rep.damage.extend(rx.2);
            self.rep
                .missing
                .extend(rx.3.into_iter().map(|u| (f.name.clone(), u)));
        }
        Ok(())
    }

    /// User-level files: fetched when the first run, when `META`'s stats changed, or
    /// (with `SNAPSHOT`, for the sieve files) when any folder changed; stored anew only
    /// when their bytes differ from the last stored ones.
    fn user_state(
        &mut self,
        last_run: Option<u64>,
        prev: &BackupExt,
    ) -> Result<(Option<UserStateRef>, Option<UserStats>)> {
        let listing = self
            .server
            .client
            .meta_listing(self.userid.as_bytes())
            .map_err(|e| proto(self.server, "META", e))?;
        let mut seen = None;
        let mut sub = None;
        for (n, s) in &listing {
            match n.as_slice() {
                b"seen" => seen = Some(stat3(s)),
                b"sub" => sub = Some(stat3(s)),
                _ => {}
            }
        }
        let snapshot = self.server.has("SNAPSHOT");
        let prev_files: Vec<(u64, UserFile)> = match last_run {
            Some(l) => self
                .catalog
                .user_files_at(l)?
                .into_iter()
                .map(|(r, f, _)| (r, f))
                .collect(),
            None => Vec::new(),
        };
        let this_run = self.run;
        let carried = |prev_user: &UserStats| {
            let snapshot_run = prev_files.first().map_or(this_run, |(r, _)| *r);
            let files = prev_files.iter().map(|(_, f)| f.clone()).collect();
            (
                Some(UserStateRef {
                    snapshot_run,
                    files,
                }),
                Some(prev_user.clone()),
            )
        };
        let changed_folders = self.rep.folders_changed + self.rep.folders_gone > 0;
        if let Some(p) = &prev.user
            && last_run.is_some()
            && p.seen == seen
            && p.sub == sub
            && !(snapshot && changed_folders)
        {
            return Ok(carried(p));
        }
        let files = if snapshot {
            self.snapshot_user_files()?
        } else {
            self.meta_user_files()?
        };
        let mut sha1 = std::collections::BTreeMap::new();
        for (f, bytes) in &files {
            let key = user_file_entry(0, f)?
                .trim_start_matches("user/000000/")
                .to_string();
            sha1.insert(key, Guid::of(bytes).to_hex());
        }
        let stats = UserStats { seen, sub, sha1 };
        if let Some(p) = &prev.user
            && last_run.is_some()
            && p.sha1 == stats.sha1
        {
            let (r, _) = carried(p);
            return Ok((r, Some(stats)));
        }
        let now = now_secs();
        for (f, bytes) in &files {
            self.writer
                .add(&user_file_entry(self.run, f)?, bytes, now)?;
        }
        self.rep.user_state_stored = true;
        Ok((
            Some(UserStateRef {
                snapshot_run: self.run,
                files: files.into_iter().map(|(f, _)| f).collect(),
            }),
            Some(stats),
        ))
    }

    fn meta_user_files(&mut self) -> Result<Vec<(UserFile, Vec<u8>)>> {
        let req = Request::Meta {
            slot: self.server.slot(),
            user: self.userid.as_bytes().to_vec(),
            items: Some(vec![b"seen".to_vec(), b"sub".to_vec()]),
        };
        let mut rx = Collect::default();
        self.server
            .client
            .fetch(&req, &mut rx)
            .map_err(|e| proto(self.server, "META", e))?;
        let mut out = Vec::new();
        for (h, bytes) in rx.files {
            self.rep.meta_bytes_fetched += bytes.len() as u64;
            let kind = match h.name.as_slice() {
                b"seen" => UserFileKind::Seen,
                b"sub" => UserFileKind::Subs,
                _ => continue,
            };
            out.push((
                UserFile {
                    kind,
                    name: String::from_utf8_lossy(&h.name).into_owned(),
                    active: false,
                },
                bytes,
            ));
        }
        Ok(out)
    }

    fn snapshot_user_files(&mut self) -> Result<Vec<(UserFile, Vec<u8>)>> {
        let req = Request::Snapshot {
            slot: self.server.slot(),
            user: self.userid.as_bytes().to_vec(),
        };
        let mut rx = SnapshotRx::default();
        self.server
            .client
            .fetch(&req, &mut rx)
            .map_err(|e| proto(self.server, "SNAPSHOT", e))?;
        self.rep.meta_bytes_fetched += rx.bytes;
        let mut out = Vec::new();
        // The active script: Cyrus's `defaultbc` is a link to the active `<name>.bc`.
        let active_bc = rx
            .files
            .iter()
            .find(|(n, _)| n == "sieve/defaultbc")
            .map(|(_, b)| Guid::of(b));
        let active: Option<String> = active_bc.and_then(|g| {
            rx.files.iter().find_map(|(n, b)| {
                let s = n.strip_prefix("sieve/")?.strip_suffix(".bc")?;
                (Guid::of(b) == g).then(|| format!("{s}.script"))
            })
        });
        for (name, bytes) in rx.files {
            let (kind, fname) = match name.as_str() {
                "seen" => (UserFileKind::Seen, name.clone()),
                "sub" => (UserFileKind::Subs, name.clone()),
                n => match n.strip_prefix("sieve/") {
                    Some(s) if !s.is_empty() => (UserFileKind::Sieve, s.to_string()),
                    _ => continue,
                },
            };
            let is_active = kind == UserFileKind::Sieve && active.as_deref() == Some(&fname);
            out.push((
                UserFile {
                    kind,
                    name: fname,
                    active: is_active,
                },
                bytes,
            ));
        }
        Ok(out)
    }
}

/// FDATA files: each checked against its GUID, then stored.
struct MessageRx<'a> {
    writer: &'a mut ArchiveWriter,
    expected: &'a HashMap<u32, (Guid, i64)>,
    buf: Vec<u8>,
    user: &'a str,
    folder: &'a str,
    stored: Vec<Guid>,
    bytes: u64,
    damage: Vec<SpoolDamage>,
    missing: Vec<u32>,
    err: Option<Error>,
    progress: Option<&'a dyn super::Progress>,
}

impl Receiver for MessageRx<'_> {
    fn file(&mut self, _header: &DataHeader) -> std::result::Result<&mut dyn Write, ProtocolError> {
        self.buf.clear();
        Ok(&mut self.buf)
    }

    fn file_done(
        &mut self,
        header: &DataHeader,
        sha1: &[u8; 20],
    ) -> std::result::Result<(), ProtocolError> {
        let uid: Option<u32> = std::str::from_utf8(&header.name)
            .ok()
            .and_then(|s| s.parse().ok());
        let Some((uid, (guid, internaldate))) =
            uid.and_then(|u| self.expected.get(&u).map(|e| (u, *e)))
        else {
            return Err(ProtocolError::MalformedReply {
                what: "FDATA sent a file that was not asked for",
            });
        };
        // The protocol checked the transfer; this checks the spool: the bytes must be
        // the message Cyrus's index names.
        if *sha1 != guid.0 {
            self.damage.push(SpoolDamage {
                user: self.user.to_string(),
                folder: self.folder.to_string(),
                uid,
                expected: guid.to_hex(),
                got: Guid(*sha1).to_hex(),
            });
            return Ok(());
        }
        let mtime = u64::try_from(internaldate).unwrap_or(0);
        if let Err(e) = self.writer.add(&message_entry(&guid), &self.buf, mtime) {
            self.err = Some(e);
            return Err(ProtocolError::MalformedReply {
                what: "archive write failed",
            });
        }
        self.stored.push(guid);
        self.bytes += self.buf.len() as u64;
        if let Some(p) = self.progress {
            p.bytes(self.buf.len() as u64);
        }
        Ok(())
    }

    fn missing(&mut self, text: &[u8]) -> std::result::Result<(), ProtocolError> {
        let t = String::from_utf8_lossy(text);
        if let Some(uid) = t
            .strip_prefix("no such file ")
            .or_else(|| t.strip_prefix("failed to open file "))
            .and_then(|u| u.trim().parse().ok())
        {
            log::warn!(
                target: "cyrvault::backup",
                "user {} folder {} uid {uid}: the server has no file for it ({t})",
                self.user, self.folder
            );
            self.missing.push(uid);
        }
        Ok(())
    }

    fn other(&mut self, reply: Reply) -> std::result::Result<(), ProtocolError> {
        log::debug!(target: "cyrvault::backup", "FDATA: unexpected line {reply:?}");
        Ok(())
    }
}

/// SNAPSHOT: keep the user files (before the first FOLDER line), drop folder files.
#[derive(Default)]
struct SnapshotRx {
    in_folders: bool,
    files: Vec<(String, Vec<u8>)>,
    cur: Vec<u8>,
    sink: std::io::Sink,
    bytes: u64,
}

impl Receiver for SnapshotRx {
    fn file(&mut self, _h: &DataHeader) -> std::result::Result<&mut dyn Write, ProtocolError> {
        if self.in_folders {
            return Ok(&mut self.sink);
        }
        self.cur.clear();
        Ok(&mut self.cur)
    }

    fn file_done(
        &mut self,
        h: &DataHeader,
        _sha1: &[u8; 20],
    ) -> std::result::Result<(), ProtocolError> {
        self.bytes += h.stat.size;
        if !self.in_folders {
            self.files.push((
                String::from_utf8_lossy(&h.name).into_owned(),
                std::mem::take(&mut self.cur),
            ));
        }
        Ok(())
    }

    fn missing(&mut self, _text: &[u8]) -> std::result::Result<(), ProtocolError> {
        Ok(())
    }

    fn other(&mut self, reply: Reply) -> std::result::Result<(), ProtocolError> {
        if matches!(reply, Reply::Folder { .. }) {
            self.in_folders = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delayed_delete_names() {
        assert!(is_delayed_delete("DELETED.user.bob.Old.5F3A1B2C"));
        assert!(is_delayed_delete("DELETED/user/bob/Old/5F3A1B2C"));
        assert!(is_delayed_delete("DELETED.user.bob.5F3A1B2D"));
        assert!(!is_delayed_delete("INBOX"));
        assert!(!is_delayed_delete("INBOX.DELETED.user.x.5F3A1B2C"));
        assert!(!is_delayed_delete("Sent"));
        assert!(!is_delayed_delete("Archive.2023"));
    }

    #[test]
    fn internal_names() {
        assert_eq!(internal_name("bob", "INBOX"), "user.bob");
        assert_eq!(
            internal_name("bob", "INBOX.Sent Items"),
            "user.bob.Sent Items"
        );
        assert_eq!(internal_name("bob", "INBOX/a.b/c"), "user.bob.a^b.c");
        assert_eq!(
            internal_name("bob.s@ex.org", "Work"),
            "ex.org!user.bob^s.Work"
        );
    }
}
