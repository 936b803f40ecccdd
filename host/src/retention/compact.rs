//! Carry out a [`Plan`]: write the new archive beside the old one, build its catalog
//! with the same calls a replay of the new archive makes, then swap the pair (archive
//! first: `pair.rs`). The caller holds the old archive's lock throughout.
//!
//! The new archive, in file order: a new first member (format and generation); then,
//! for every old run in order, its members that are still needed (copied byte for
//! byte, or re-packed) — each adopted by the first kept run at or after the run that
//! wrote it — and, for a kept run, its manifest (written anew when its member list or
//! folders changed, else copied); before the last kept run's manifest, this
//! compaction's retention event; after it, the uncommitted tail (a crashed run's
//! members, holds not yet adopted), copied, less any erased message.
//!
//! The new catalog is written run by run with `Catalog::write_run` from the rewritten
//! manifests, the new locations, and the records the old catalog holds for each
//! snapshot (minus erased messages): exactly what `reindex` derives from the new
//! archive alone (the tests compare both).
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use super::error::{Result, RetentionError};
use super::pair::{self, new_archive_path};
use super::plan::{Action, Fate, MemberPlan, Plan, user_entry_name};
use crate::archive::{self, EntryName, Members, read_entry_at, rewrite};
use crate::catalog::{Catalog, FolderMeta, MemberRow, RunParts};
use crate::cyrus::Guid;
use crate::io_error::IoContext;
use crate::model::retention::{RetentionEvent, parse_event};
use crate::model::{EntryLoc, FolderInRun, RecordState, RunManifest, parse_manifest};

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CompactReport {
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub members_copied: u64,
    pub bytes_copied: u64,
    pub members_repacked: u64,
    /// Compressed bytes of the members re-packed (read and inflated).
    pub bytes_repacked: u64,
    pub members_dropped: u64,
    /// Members the catalog did not fully account for, inflated to decide.
    pub members_inspected: u64,
    pub manifests_rewritten: u64,
    pub manifests_copied: u64,
    /// The new archive's generation.
    pub generation: String,
    pub duration_ms: u64,
}

/// A member of the new archive and what is in it.
struct NewMember {
    offset: u64,
    compressed_len: u64,
    uncompressed_len: u64,
    /// (name, offset in member, size)
    entries: Vec<(String, u64, u64)>,
}

/// The state of a compaction in progress.
struct Writer<'a> {
    old: File,
    old_path: &'a Path,
    new: rewrite::NewArchive,
    plan: &'a Plan,
    cat: &'a Catalog,
    /// New members not yet handed to a run, in file order.
    pending: Vec<NewMember>,
    /// First location of every entry name in the new archive's committed part.
    names: HashMap<String, EntryLoc>,
    /// Folders live after the last kept run replayed.
    live: HashSet<String>,
    newcat: Catalog,
    report: CompactReport,
}

/// Write the new archive and catalog for `plan` and swap them in. `event` is this
/// compaction's record (its `seq` free in the archive; `bytes_after` is filled here).
/// The caller holds the old archive's lock.
pub fn compact(
    cat: &Catalog,
    plan: &Plan,
    archive: &Path,
    catalog: &Path,
    mut event: RetentionEvent,
) -> Result<CompactReport> {
    let t0 = Instant::now();
    let new_path = new_archive_path(archive);
    let old = File::open(archive).at("opening", archive)?;
    let prev_gen = pair::archive_generation(archive)?;
    let generation = pair::next_generation(prev_gen.as_deref());
    let mut w = Writer {
        old,
        old_path: archive,
        new: rewrite::NewArchive::create(&new_path)?,
        plan,
        cat,
        pending: Vec::new(),
        names: HashMap::new(),
        live: HashSet::new(),
        newcat: Catalog::create_fresh(catalog)?,
        report: CompactReport {
            bytes_before: plan.archive_len,
            generation: generation.clone(),
            ..CompactReport::default()
        },
    };
    let result = w.run(&mut event, &generation);
    let mut w = match result {
        Ok(()) => w,
        Err(e) => {
            let _ = w.newcat.discard();
            let _ = std::fs::remove_file(&new_path);
            return Err(e);
        }
    };
    w.report.bytes_after = w.new.len();
    w.new.sync()?;
    let target = w.newcat.seal()?;
    // The commit point: the new archive takes the old one's name (still locked, by us).
    w.new.rename_to(archive)?;
    Catalog::install_sealed(&target)?;
    w.report.duration_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(w.report)
}

impl Writer<'_> {
    fn run(&mut self, event: &mut RetentionEvent, generation: &str) -> Result<()> {
        let mtime = u64::try_from(event.at).unwrap_or(0);
        let first = rewrite::format_member(generation, mtime)
            .map_err(|e| RetentionError::archive(self.old_path, e))?;
        self.append_member(&first)?;
        let kept = &self.plan.kept;
        let Some(&last_kept) = kept.last() else {
            return Err(RetentionError::other(
                "a compaction must keep at least one run".into(),
            ));
        };
        // Kept runs by the member their manifest is in, with the manifest's location.
        let mut manifests: HashMap<u64, (u64, EntryLoc)> = HashMap::new();
        for r in self.cat.runs()? {
            if let (true, Some(l)) = (kept.binary_search(&r.run).is_ok(), r.manifest) {
                manifests.insert(l.member_offset, (r.run, l));
            }
        }
        // Members to inflate go to worker threads (inflate, choose, re-pack, deflate)
        // a few ahead of the one being written; results are written in file order.
        let members = &self.plan.members;
        let plan = self.plan;
        let old = self.old.try_clone().at("opening", self.old_path)?;
        let path = self.old_path;
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 4);
        let window = 2 * workers;
        type Reply = std::sync::mpsc::Receiver<Result<(Vec<u8>, Repacked)>>;
        type Job = (usize, std::sync::mpsc::Sender<Result<(Vec<u8>, Repacked)>>);
        let (job_tx, job_rx) = std::sync::mpsc::channel::<Job>();
        let job_rx = std::sync::Mutex::new(job_rx);
        std::thread::scope(|scope| -> Result<()> {
            // Owned here: dropped when this returns (early, on an error, too), which
            // ends the workers, so the scope can join them.
            let job_tx = job_tx;
            for _ in 0..workers {
                let (job_rx, old) = (&job_rx, &old);
                scope.spawn(move || {
                    loop {
                        let next = job_rx.lock().ok().and_then(|rx| rx.recv().ok());
                        let Some((i, reply)) = next else { return };
                        let m: &MemberPlan = &members[i];
                        let off = m.offset;
                        let r = read_at(old, path, off, m.compressed_len).and_then(|raw| {
                            repack(&raw, path, off, |name, o| plan.fate(name, off, o))
                                .map(|r| (raw, r))
                        });
                        let _ = reply.send(r);
                    }
                });
            }
            let mut replies: std::collections::VecDeque<(usize, Reply)> = Default::default();
            let mut submitted = 0usize;
            let needs_inflate = |m: &MemberPlan| {
                matches!(m.action, Action::Repack | Action::Inspect | Action::Format)
            };
            for (i, m) in members.iter().enumerate() {
                while submitted < members.len() && submitted < i + window {
                    if needs_inflate(&members[submitted]) {
                        let (tx, rx) = std::sync::mpsc::channel();
                        job_tx.send((submitted, tx)).map_err(|_| {
                            RetentionError::other("compaction workers stopped".into())
                        })?;
                        replies.push_back((submitted, rx));
                    }
                    submitted += 1;
                }
                match m.action {
                    Action::Copy => {
                        self.copy(m.offset, m.compressed_len, m.uncompressed_len, &m.known)?;
                    }
                    Action::Drop => self.report.members_dropped += 1,
                    Action::Repack | Action::Inspect | Action::Format => {
                        let Some((j, rx)) = replies.pop_front() else {
                            return Err(RetentionError::other("a re-pack job went missing".into()));
                        };
                        debug_assert_eq!(j, i);
                        let (raw, r) = rx.recv().map_err(|_| {
                            RetentionError::other("a compaction worker died".into())
                        })??;
                        if m.action == Action::Inspect {
                            self.report.members_inspected += 1;
                        }
                        self.apply(&raw, r)?;
                    }
                    Action::Manifest(run) if !manifests.contains_key(&m.offset) => {
                        debug_assert!(kept.binary_search(&run).is_err());
                        self.report.members_dropped += 1;
                    }
                    Action::Manifest(_) => {}
                }
                // A kept run's manifest comes right after the member that held it (its
                // own member normally: then it can be copied when nothing in it
                // changes).
                if let Some(&(run, loc)) = manifests.get(&m.offset) {
                    if run == last_kept {
                        self.event_member(event)?;
                    }
                    let alone = matches!(m.action, Action::Manifest(_))
                        .then_some((m.offset, m.compressed_len));
                    self.manifest(run, loc, alone)?;
                }
            }
            drop(job_tx);
            Ok(())
        })?;
        if !self.pending.is_empty() {
            return Err(RetentionError::other(format!(
                "{} new member(s) after the last kept run's manifest",
                self.pending.len()
            )));
        }
        self.tail()?;
        // Every retention event, old and new, with where it now is.
        let mut events: Vec<(RetentionEvent, EntryLoc)> = Vec::new();
        for r in self.cat.retention_events()? {
            let name = archive::retention_entry(r.seq);
            let bytes = read_entry_at(
                &mut self.old,
                self.old_path,
                r.loc.member_offset,
                r.loc.offset_in_member,
                r.loc.size,
            )?;
            let ev = parse_event(&bytes).map_err(|e| RetentionError::parse(self.old_path, e))?;
            let loc = self.locate(&name)?;
            events.push((ev, loc));
        }
        let name = archive::retention_entry(event.seq);
        events.push((event.clone(), self.locate(&name)?));
        for (ev, loc) in &events {
            self.newcat.add_retention_event(ev, loc)?;
        }
        self.newcat.set_archive_generation(generation)?;
        Ok(())
    }

    fn locate(&self, name: &str) -> Result<EntryLoc> {
        self.names
            .get(name)
            .copied()
            .ok_or_else(|| RetentionError::other(format!("{name} did not reach the new archive")))
    }

    /// Append a whole member to the new archive and note its entries.
    fn append_member(&mut self, gz: &[u8]) -> Result<()> {
        let (_, info) = rewrite::inflate_member(gz, self.new.path(), 0)?;
        let offset = self.new.append(gz)?;
        self.note(NewMember {
            offset,
            compressed_len: gz.len() as u64,
            uncompressed_len: info.uncompressed_len,
            entries: info
                .entries
                .iter()
                .map(|e| (e.name.clone(), e.offset_in_member, e.size))
                .collect(),
        });
        Ok(())
    }

    fn note(&mut self, m: NewMember) {
        for (name, off, size) in &m.entries {
            self.names.entry(name.clone()).or_insert(EntryLoc {
                member_offset: m.offset,
                offset_in_member: *off,
                size: *size,
            });
        }
        self.pending.push(m);
    }

    /// Copy a member the catalog fully accounts for, byte for byte (checking that
    /// the bytes there are a gzip member of the length the catalog says).
    fn copy(
        &mut self,
        offset: u64,
        clen: u64,
        ulen: u64,
        known: &[super::plan::Known],
    ) -> Result<()> {
        self.check_frame(offset, clen, ulen)?;
        let at = self.new.copy_from(&self.old, self.old_path, offset, clen)?;
        self.report.members_copied += 1;
        self.report.bytes_copied += clen;
        self.note(NewMember {
            offset: at,
            compressed_len: clen,
            uncompressed_len: ulen,
            entries: known
                .iter()
                .map(|k| (k.name.clone(), k.offset_in_member, k.size))
                .collect(),
        });
        Ok(())
    }

    /// The gzip header at `offset` and the ISIZE of the trailer at its end: a cheap
    /// check that the catalog's member is really there before copying it unread.
    fn check_frame(&mut self, offset: u64, clen: u64, ulen: u64) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let bad = |what: &'static str| {
            RetentionError::archive(
                self.old_path,
                archive::ArchiveError::Damaged {
                    offset,
                    damage: archive::Damage::BadHeader(what),
                },
            )
        };
        if clen < 18 {
            return Err(bad("member shorter than a gzip frame"));
        }
        let mut head = [0u8; 3];
        let mut tail = [0u8; 8];
        self.old
            .seek(SeekFrom::Start(offset))
            .at("seeking in", self.old_path)?;
        self.old
            .read_exact(&mut head)
            .at("reading", self.old_path)?;
        self.old
            .seek(SeekFrom::Start(offset + clen - 8))
            .at("seeking in", self.old_path)?;
        self.old
            .read_exact(&mut tail)
            .at("reading", self.old_path)?;
        if head != [0x1f, 0x8b, 0x08] {
            return Err(bad("no gzip magic where the catalog has a member"));
        }
        let isize = u32::from_le_bytes([tail[4], tail[5], tail[6], tail[7]]);
        if u64::from(isize) != ulen & 0xffff_ffff {
            return Err(bad("the trailer's size is not the catalog's"));
        }
        Ok(())
    }

    /// Put a re-pack's result in the new archive.
    fn apply(&mut self, raw: &[u8], r: Repacked) -> Result<()> {
        match r {
            Repacked::Whole { ulen, entries } => {
                let at = self.new.append(raw)?;
                self.report.members_copied += 1;
                self.report.bytes_copied += raw.len() as u64;
                self.note(NewMember {
                    offset: at,
                    compressed_len: raw.len() as u64,
                    uncompressed_len: ulen,
                    entries,
                });
            }
            Repacked::Nothing => self.report.members_dropped += 1,
            Repacked::New { gz, ulen, entries } => {
                let at = self.new.append(&gz)?;
                self.report.members_repacked += 1;
                self.report.bytes_repacked += raw.len() as u64;
                self.note(NewMember {
                    offset: at,
                    compressed_len: gz.len() as u64,
                    uncompressed_len: ulen,
                    entries,
                });
            }
        }
        Ok(())
    }

    /// This compaction's event, alone in a member of the last kept run.
    fn event_member(&mut self, event: &mut RetentionEvent) -> Result<()> {
        // The archive's size after is not known yet; the event says what was removed.
        let name = archive::retention_entry(event.seq);
        let tar = rewrite::tar_entry(
            &name,
            &event.to_json(),
            u64::try_from(event.at).unwrap_or(0),
        )
        .map_err(|e| RetentionError::archive(self.old_path, e))?;
        let (gz, _) = rewrite::compress_member(&tar);
        self.append_member(&gz)
    }

    /// The manifest of kept run `run` (old member at `offset`), rewritten when
    /// something in it changes, and the run replayed into the new catalog.
    fn manifest(&mut self, run: u64, info: EntryLoc, alone: Option<(u64, u64)>) -> Result<()> {
        let old_bytes = read_entry_at(
            &mut self.old,
            self.old_path,
            info.member_offset,
            info.offset_in_member,
            info.size,
        )?;
        let members: Vec<u64> = self.pending.iter().map(|m| m.offset).collect();
        let (json, changed) = self.rewrite(run, &old_bytes, &members)?;
        let name = archive::run_manifest_entry(&archive::run_id(run))
            .map_err(|e| RetentionError::archive(self.old_path, e))?;
        if let (false, Some((offset, clen))) = (changed, alone) {
            let raw = rewrite::read_raw(&mut self.old, self.old_path, offset, clen)?;
            self.append_member(&raw)?;
            self.report.manifests_copied += 1;
        } else {
            let m: Value = serde_json::from_slice(&json).unwrap_or(Value::Null);
            let mtime = m["finished"].as_u64().unwrap_or(0);
            let tar = rewrite::tar_entry(&name, &json, mtime)
                .map_err(|e| RetentionError::archive(self.old_path, e))?;
            let (gz, _) = rewrite::compress_member(&tar);
            self.append_member(&gz)?;
            self.report.manifests_rewritten += 1;
        }
        let manifest =
            parse_manifest(&json).map_err(|e| RetentionError::parse(self.old_path, e))?;
        let manifest_loc = self.locate(&name)?;
        self.replay(&manifest, manifest_loc)
    }

    /// The manifest of `run` for the new archive: members at their new offsets,
    /// folders taken out left out, and the folders the old catalog had live (or gone)
    /// at `run` said so explicitly where the runs that said it are removed. Returns
    /// the JSON and whether it differs from `old`.
    fn rewrite(&self, run: u64, old: &[u8], members: &[u64]) -> Result<(Vec<u8>, bool)> {
        let mut v: Value = serde_json::from_slice(old)
            .map_err(|e| RetentionError::other(format!("run {run}: manifest is not JSON: {e}")))?;
        let mut changed = false;
        let drop = &self.plan.drop_folders;
        let Some(list) = v.get("folders").and_then(Value::as_array).cloned() else {
            return Err(RetentionError::other(format!(
                "run {run}: manifest has no folders"
            )));
        };
        let mut mentioned = HashSet::new();
        let mut folders = Vec::new();
        for f in list {
            let uid = f["uniqueid"].as_str().unwrap_or_default().to_string();
            let deleted = f["deleted"].as_bool().unwrap_or(false);
            mentioned.insert(uid.clone());
            if drop.contains_key(&uid) || (deleted && !self.live.contains(&uid)) {
                changed = true;
                continue;
            }
            folders.push(f);
        }
        let at = self.cat.folders_at(run)?;
        for f in &at {
            if mentioned.contains(&f.uniqueid) || drop.contains_key(&f.uniqueid) {
                continue;
            }
            // Present at `run` (live, or in Cyrus's delayed-delete area) but not
            // mentioned (failed, carried forward): said explicitly. Gone by `run` but
            // live at the previous kept run: its deletion was in a removed run; said
            // here.
            let gone = !f.present(run);
            if gone && !self.live.contains(&f.uniqueid) {
                continue;
            }
            let Some(s) = self.cat.folder_snapshot_at(&f.uniqueid, f.last_run)? else {
                continue;
            };
            let entry = FolderInRun {
                uniqueid: f.uniqueid.clone(),
                name: f.name.clone(),
                internal_name: f.internal_name.clone(),
                deleted: gone,
                state: s.state,
                snapshot_run: s.snapshot_run,
                deleted_at: f.deleted_at,
            };
            folders.push(
                serde_json::to_value(entry).map_err(|e| RetentionError::other(e.to_string()))?,
            );
            changed = true;
        }
        let old_members: Vec<u64> = v["members"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        if old_members != members {
            changed = true;
        }
        if !changed {
            return Ok((old.to_vec(), false));
        }
        v["folders"] = Value::Array(folders);
        v["members"] = Value::Array(members.iter().map(|&o| Value::from(o)).collect());
        let json = serde_json::to_vec(&v).map_err(|e| RetentionError::other(e.to_string()))?;
        Ok((json, true))
    }

    /// Write kept run `m` into the new catalog from the pending members.
    fn replay(&mut self, m: &RunManifest, manifest_loc: EntryLoc) -> Result<()> {
        let members = std::mem::take(&mut self.pending);
        let rows: Vec<MemberRow> = members
            .iter()
            .map(|n| MemberRow {
                offset: n.offset,
                compressed_len: n.compressed_len,
                uncompressed_len: n.uncompressed_len,
                crc32: None,
            })
            .collect();
        let mut messages: Vec<(Guid, EntryLoc)> = Vec::new();
        for n in &members {
            for (name, off, size) in &n.entries {
                if let EntryName::Message(g) = archive::parse_entry_name(name) {
                    messages.push((
                        g,
                        EntryLoc {
                            member_offset: n.offset,
                            offset_in_member: *off,
                            size: *size,
                        },
                    ));
                }
            }
        }
        let mut snapshots: HashMap<String, (FolderMeta, Vec<RecordState>)> = HashMap::new();
        for f in m.folders.iter().filter(|f| !f.deleted) {
            let s = f.snapshot_run;
            if s > m.run || (s < m.run && !self.newcat.needs_snapshot(&f.uniqueid, s)?) {
                continue;
            }
            let rid = archive::run_id(s);
            let at = |file: &str| {
                archive::folder_entry(&f.uniqueid, &rid, file)
                    .ok()
                    .and_then(|n| self.names.get(&n).copied())
            };
            let meta = FolderMeta {
                header: at("cyrus.header"),
                index: at("cyrus.index"),
                annotations: at("cyrus.annotations"),
                state: at("state.json"),
            };
            let records: Vec<RecordState> = self
                .cat
                .snapshot_records(&f.uniqueid, s)?
                .into_iter()
                .filter(|r| !self.plan.erased.contains_key(&r.guid))
                .collect();
            snapshots.insert(f.uniqueid.clone(), (meta, records));
        }
        let mut user_files = Vec::new();
        if let Some(us) = &m.user_state {
            for uf in &us.files {
                let loc = user_entry_name(us.snapshot_run, uf.kind.as_str(), &uf.name)
                    .and_then(|n| self.names.get(&n).copied());
                if let Some(loc) = loc {
                    user_files.push((uf.clone(), loc));
                }
            }
        }
        self.newcat.write_run(
            m,
            &RunParts {
                manifest_loc: Some(manifest_loc),
                members: &rows,
                messages: &messages,
                snapshots: &snapshots,
                user_files: &user_files,
            },
        )?;
        for f in &m.folders {
            if f.deleted {
                self.live.remove(&f.uniqueid);
            } else {
                self.live.insert(f.uniqueid.clone());
            }
        }
        Ok(())
    }

    /// The uncommitted tail, copied (re-packed without erased messages); a crash
    /// leftover at the very end is not copied.
    fn tail(&mut self) -> Result<()> {
        let start = self.plan.committed_end;
        if start >= self.plan.archive_len {
            return Ok(());
        }
        let reader = File::open(self.old_path).at("opening", self.old_path)?;
        {
            use std::io::{Seek, SeekFrom};
            let mut r = &reader;
            r.seek(SeekFrom::Start(start))
                .at("seeking in", self.old_path)?;
        }
        let mut members = Members::at(&reader, start, self.old_path);
        let mut tail = Vec::new();
        for m in members.by_ref() {
            match m {
                Ok(m) => tail.push((m.offset, m.compressed_len)),
                Err(e) if matches!(e.as_archive(), Some(archive::ArchiveError::Damaged { .. })) => {
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let good_end = tail.last().map_or(start, |&(o, l)| o + l);
        if good_end < self.plan.archive_len {
            let mut f = File::open(self.old_path).at("opening", self.old_path)?;
            if !archive::is_crash_leftover(&mut f, self.old_path, good_end, self.plan.archive_len)?
            {
                return Err(RetentionError::archive(
                    self.old_path,
                    archive::ArchiveError::Damaged {
                        offset: good_end,
                        damage: archive::Damage::Truncated,
                    },
                ));
            }
        }
        for (offset, clen) in tail {
            let raw = rewrite::read_raw(&mut self.old, self.old_path, offset, clen)?;
            let plan = self.plan;
            let r = repack(&raw, self.old_path, offset, |name, _| plan.tail_fate(name))?;
            self.apply(&raw, r)?;
        }
        // Tail members belong to no run: the next backup adopts them.
        let tail_members = std::mem::take(&mut self.pending);
        for m in tail_members {
            for (name, off, size) in m.entries {
                self.names.entry(name).or_insert(EntryLoc {
                    member_offset: m.offset,
                    offset_in_member: off,
                    size,
                });
            }
        }
        Ok(())
    }
}

/// What re-packing one member gave.
enum Repacked {
    /// Every entry stays: the original bytes, as they are.
    Whole {
        ulen: u64,
        entries: Vec<(String, u64, u64)>,
    },
    /// No entry stays.
    Nothing,
    /// Some stay: a new member.
    New {
        gz: Vec<u8>,
        ulen: u64,
        entries: Vec<(String, u64, u64)>,
    },
}

/// `len` bytes at `offset` of `file`, without moving a shared cursor (`pread`).
fn read_at(file: &File, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let n = usize::try_from(len)
        .map_err(|_| RetentionError::other(format!("member of {len} bytes")))?;
    let mut buf = vec![0u8; n];
    file.read_exact_at(&mut buf, offset).at("reading", path)?;
    Ok(buf)
}

/// Inflate a member and keep the entries `keep(name, offset in member)` keeps: all of
/// them → the original bytes; none → nothing; some → a re-packed member (only their
/// header blocks and data, zero padding, deflated anew: no byte of the others).
fn repack(
    raw: &[u8],
    path: &Path,
    offset: u64,
    fate: impl Fn(&str, u64) -> Fate,
) -> Result<Repacked> {
    let (tar, info) = rewrite::inflate_member_unhashed(raw, path, offset)?;
    let keep: Vec<bool> = info
        .entries
        .iter()
        .map(|e| fate(&e.name, e.offset_in_member) == Fate::Keep)
        .collect();
    let list = |locs: &[archive::EntryLoc]| -> Vec<(String, u64, u64)> {
        locs.iter()
            .map(|e| (e.name.clone(), e.offset_in_member, e.size))
            .collect()
    };
    if keep.iter().all(|&k| k) {
        return Ok(Repacked::Whole {
            ulen: info.uncompressed_len,
            entries: list(&info.entries),
        });
    }
    if !keep.iter().any(|&k| k) {
        return Ok(Repacked::Nothing);
    }
    let (new_tar, locs) = rewrite::repack_tar(&tar, &info.entries, &keep).map_err(|d| {
        RetentionError::archive(path, archive::ArchiveError::Damaged { offset, damage: d })
    })?;
    drop(tar);
    let (gz, _) = rewrite::compress_member(&new_tar);
    Ok(Repacked::New {
        gz,
        ulen: new_tar.len() as u64,
        entries: list(&locs),
    })
}
