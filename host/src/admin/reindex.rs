//! `reindex`: rebuild a user's catalog from the archive alone.
//!
//! The archive is scanned end to end (every member inflated and checked); the run
//! manifests (`runs/<run>.json`) are read and applied in run order with
//! `Catalog::write_run`, the same call sequence the backup makes, with each changed
//! folder's records from `model::records_from_meta` of the stored `cyrus.header` and
//! `cyrus.index` — so the rebuilt catalog equals the incremental one
//! (`doc/catalog.md`, "reindex rules"). The new catalog is built beside the old one and
//! renamed over it only when complete (`Catalog::create_fresh` / `install`), under the
//! archive's writer lock so no backup appends meanwhile.
//!
//! A damaged archive is refused: reindex exits non-zero and leaves the old catalog as
//! it was (the new one is built at `<catalog>.new` and thrown away). Damage is a member
//! that does not inflate, a truncated member where the old catalog says committed runs
//! are (a crash leftover past them is not damage: the next backup cuts it), a manifest
//! or snapshot that cannot be read, a snapshot whose records name messages no member
//! holds, and runs or messages the old catalog has that the archive no longer gives.
//! With `--salvage` ([`ReindexOptions::salvage`]) the catalog is rebuilt from what can
//! be read: a damaged member costs its own entries, a folder whose snapshot is lost
//! keeps its previous state, every run that does not need them is indexed, and the
//! report says what was lost (runs and messages the old catalog had).
#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;

use serde::Serialize;

use super::UserArchive;
use super::entries::user_file_entry;
use crate::archive::{self, EntryName, MemberInfo};
use crate::catalog::{Catalog, FolderMeta, LocKind, MemberRow, RunParts};
use crate::cyrus::Guid;
use crate::error::Result;
use crate::model::retention::{Erasure, EventKind, RetentionEvent, parse_event};
use crate::model::{self, EntryLoc, RecordState, RunManifest, UserFile};

/// Something reindex could not use, and what it cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunProblem {
    /// The run concerned, if one is.
    pub run: Option<u64>,
    /// What was wrong.
    pub what: String,
    /// Whether the run was left out of the catalog because of it.
    pub run_lost: bool,
}

/// A damaged region of the archive, skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedRegion {
    pub offset: u64,
    pub len: u64,
    pub error: String,
}

/// How to reindex.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReindexOptions {
    /// Rebuild from what can be read even when the archive is damaged (and say what
    /// was lost); without it a damaged archive is refused and the old catalog kept.
    pub salvage: bool,
}

/// What the old catalog had that the rebuilt one does not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Lost {
    /// Runs the old catalog had that the archive no longer gives.
    pub runs: Vec<u64>,
    /// Messages the old catalog had that no intact member holds.
    pub messages: Vec<Guid>,
    /// The old catalog could not be read (missing or damaged): nothing to compare with.
    pub no_old_catalog: Option<String>,
}

/// The answer of `reindex`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReindexReport {
    pub user: String,
    pub id: String,
    pub archive: PathBuf,
    pub catalog: PathBuf,
    /// Members that inflated cleanly.
    pub members_scanned: u64,
    /// Runs written into the new catalog.
    pub runs_indexed: Vec<u64>,
    /// Distinct messages located.
    pub messages: u64,
    /// Damaged regions whose entries were skipped.
    pub damaged: Vec<SkippedRegion>,
    /// A truncated member at the end (a crash leftover the next backup cuts).
    pub truncated_tail: Option<(u64, u64)>,
    /// Complete members no manifest lists (a crashed run's; a later run may adopt them).
    pub unindexed_members: Vec<u64>,
    pub problems: Vec<RunProblem>,
    /// What the old catalog had that the archive no longer gives.
    pub lost: Lost,
    /// `--salvage` was given.
    pub salvage: bool,
    /// Why the archive counts as damaged (empty: it is not).
    pub damage: Vec<String>,
    /// The archive is damaged and `--salvage` was not given: the old catalog was kept
    /// as it was and nothing was written.
    pub refused: bool,
}

impl ReindexReport {
    /// Whether anything was skipped or lost (or the reindex refused).
    pub fn failed(&self) -> bool {
        self.refused || !self.damage.is_empty()
    }
}

/// The old catalog's runs, message GUIDs and committed end, to tell what a rebuild
/// would lose. `Err`: it cannot be read.
type OldCatalog = (Vec<u64>, HashSet<Guid>, u64, Option<String>);

fn old_catalog(ua: &UserArchive) -> std::result::Result<OldCatalog, String> {
    let cat = crate::catalog::Catalog::open_read_only(&ua.catalog).map_err(|e| e.to_string())?;
    let generation = cat.archive_generation().map_err(|e| e.to_string())?;
    let runs = cat
        .audit_locations()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|l| l.kind == LocKind::Manifest)
        .filter_map(|l| u64::try_from(l.run).ok())
        .collect();
    let guids = cat.message_guids().map_err(|e| e.to_string())?;
    let end = cat
        .audit_members()
        .map_err(|e| e.to_string())?
        .iter()
        .filter_map(|m| {
            let o = u64::try_from(m.offset).ok()?;
            o.checked_add(u64::try_from(m.compressed_len).ok()?)
        })
        .max()
        .unwrap_or(0);
    Ok((runs, guids.into_iter().collect(), end, generation))
}

/// A manifest found in the archive.
struct Found {
    manifest: RunManifest,
    member: u64,
    loc: EntryLoc,
}

fn model_loc(member: u64, e: &archive::EntryLoc) -> EntryLoc {
    EntryLoc {
        member_offset: member,
        offset_in_member: e.offset_in_member,
        size: e.size,
    }
}

/// Take the archive's writer lock (the same `flock` `ArchiveWriter` takes), so no
/// backup appends while the catalog is rebuilt. Held until the returned file drops.
fn lock_archive(ua: &UserArchive) -> Result<File> {
    Ok(archive::lock_archive(&ua.archive, None)?)
}

/// Read the manifests of every intact member, in run order (the first copy of a run
/// number, in file order, wins; later ones are reported).
fn manifests(
    file: &mut File,
    ua: &UserArchive,
    members: &[MemberInfo],
    problems: &mut Vec<RunProblem>,
) -> Result<Vec<Found>> {
    let mut out: Vec<Found> = Vec::new();
    for m in members {
        for e in &m.entries {
            let EntryName::RunManifest { run } = archive::parse_entry_name(&e.name) else {
                continue;
            };
            let bytes =
                archive::read_entry_at(file, &ua.archive, m.offset, e.offset_in_member, e.size)?;
            let manifest = match model::parse_manifest(&bytes) {
                Ok(x) => x,
                Err(err) => {
                    problems.push(RunProblem {
                        run: run.parse().ok(),
                        what: format!("{} in the member at {}: {err}", e.name, m.offset),
                        run_lost: true,
                    });
                    continue;
                }
            };
            if run.parse::<u64>().ok() != Some(manifest.run) {
                problems.push(RunProblem {
                    run: Some(manifest.run),
                    what: format!("{} says it is run {}", e.name, manifest.run),
                    run_lost: true,
                });
                continue;
            }
            if out.iter().any(|f| f.manifest.run == manifest.run) {
                problems.push(RunProblem {
                    run: Some(manifest.run),
                    what: format!(
                        "a second {} in the member at {} (ignored)",
                        e.name, m.offset
                    ),
                    run_lost: false,
                });
                continue;
            }
            out.push(Found {
                loc: model_loc(m.offset, e),
                member: m.offset,
                manifest,
            });
        }
    }
    out.sort_by_key(|f| f.manifest.run);
    Ok(out)
}

/// Read and interpret one folder snapshot (`folders/<uniqueid>/<run>/...`) found in
/// `names`; `Err` says why it cannot be used.
fn read_snapshot(
    file: &mut File,
    ua: &UserArchive,
    names: &HashMap<String, EntryLoc>,
    erased: &HashMap<Guid, Erasure>,
    uniqueid: &str,
    run_id: &str,
) -> std::result::Result<(FolderMeta, Vec<RecordState>), String> {
    let at = |f: &str| {
        archive::folder_entry(uniqueid, run_id, f)
            .ok()
            .and_then(|n| names.get(&n).copied())
    };
    let meta = FolderMeta {
        header: at("cyrus.header"),
        index: at("cyrus.index"),
        annotations: at("cyrus.annotations"),
        state: at("state.json"),
    };
    let (Some(h), Some(i)) = (meta.header, meta.index) else {
        return Err(format!(
            "its cyrus.header/cyrus.index of run {run_id} are not in an intact member"
        ));
    };
    let mut read = |l: EntryLoc| {
        archive::read_entry_at(
            file,
            &ua.archive,
            l.member_offset,
            l.offset_in_member,
            l.size,
        )
        .map_err(|e| e.to_string())
    };
    let hb = read(h)?;
    let ib = read(i)?;
    let (_, mut records) = model::records_from_meta(&hb, &ib).map_err(|e| e.to_string())?;
    // Erased messages leave the records of snapshots as the compaction and the backup
    // left them out (`Erasure::keeps`, doc/retention.md).
    let snapshot_run: u64 = run_id.parse().unwrap_or(0);
    records.retain(|r| {
        erased
            .get(&r.guid)
            .is_none_or(|e| e.keeps(snapshot_run, r.is_expunged()))
    });
    Ok((meta, records))
}

/// Every retention event in the intact members (any member: a hold appended after the
/// last run is committed by itself), in event order. A second event of one number is
/// reported and ignored.
fn retention_events(
    file: &mut File,
    ua: &UserArchive,
    members: &[MemberInfo],
    problems: &mut Vec<RunProblem>,
) -> Result<Vec<(RetentionEvent, EntryLoc)>> {
    let mut out: Vec<(RetentionEvent, EntryLoc)> = Vec::new();
    for m in members {
        for e in &m.entries {
            let EntryName::Retention { seq } = archive::parse_entry_name(&e.name) else {
                continue;
            };
            let bytes =
                archive::read_entry_at(file, &ua.archive, m.offset, e.offset_in_member, e.size)?;
            let ev = match parse_event(&bytes) {
                Ok(ev) if seq.parse::<u64>().ok() == Some(ev.seq) => ev,
                Ok(ev) => {
                    problems.push(RunProblem {
                        run: None,
                        what: format!("{} says it is event {}", e.name, ev.seq),
                        run_lost: false,
                    });
                    continue;
                }
                Err(err) => {
                    problems.push(RunProblem {
                        run: None,
                        what: format!("{} in the member at {}: {err}", e.name, m.offset),
                        run_lost: false,
                    });
                    continue;
                }
            };
            if out.iter().any(|(x, _)| x.seq == ev.seq) {
                problems.push(RunProblem {
                    run: None,
                    what: format!(
                        "a second {} in the member at {} (ignored)",
                        e.name, m.offset
                    ),
                    run_lost: false,
                });
                continue;
            }
            out.push((ev, model_loc(m.offset, e)));
        }
    }
    out.sort_by_key(|(e, _)| e.seq);
    Ok(out)
}

/// Rebuild `ua`'s catalog from its archive and put it in place; a damaged archive is
/// refused (old catalog kept) unless `opts.salvage`. See the module docs.
pub fn reindex(ua: &UserArchive, opts: &ReindexOptions) -> Result<ReindexReport> {
    let _lock = lock_archive(ua)?;
    let old = old_catalog(ua);
    let scan = archive::scan(&ua.archive)?;
    let mut file = ua.open_archive()?;
    let mut report = ReindexReport {
        user: ua.user.clone(),
        id: ua.id.clone(),
        archive: ua.archive.clone(),
        catalog: ua.catalog.clone(),
        members_scanned: scan.members.len() as u64,
        runs_indexed: Vec::new(),
        messages: 0,
        damaged: scan
            .damage
            .iter()
            .map(|d| SkippedRegion {
                offset: d.offset,
                len: d.len,
                error: d.error.to_string(),
            })
            .collect(),
        truncated_tail: scan.truncated_tail,
        unindexed_members: Vec::new(),
        problems: Vec::new(),
        lost: Lost::default(),
        salvage: opts.salvage,
        damage: Vec::new(),
        refused: false,
    };
    let by_offset: HashMap<u64, &MemberInfo> = scan.members.iter().map(|m| (m.offset, m)).collect();
    let found = manifests(&mut file, ua, &scan.members, &mut report.problems)?;
    let events = retention_events(&mut file, ua, &scan.members, &mut report.problems)?;
    // Erased messages, as the catalog's `erased_messages` (the latest erasure wins).
    let mut erased: HashMap<Guid, Erasure> = HashMap::new();
    for (ev, _) in &events {
        for m in &ev.erased {
            erased.insert(
                m.guid,
                Erasure {
                    size: m.size,
                    up_to_run: ev.up_to_run.unwrap_or(0),
                    permanent: ev.kind == EventKind::Erase,
                },
            );
        }
    }
    let generation = match by_offset.get(&0) {
        Some(first) => match first
            .entries
            .iter()
            .find(|e| e.name == archive::GENERATION_ENTRY)
        {
            Some(e) => {
                let b =
                    archive::read_entry_at(&mut file, &ua.archive, 0, e.offset_in_member, e.size)?;
                Some(
                    String::from_utf8_lossy(&b)
                        .trim_end_matches('\n')
                        .to_string(),
                )
            }
            None => None,
        },
        None => None,
    };

    let mut cat = Catalog::create_fresh(&ua.catalog)?;
    // First location of every entry name in the members of the runs applied so far.
    let mut names: HashMap<String, EntryLoc> = HashMap::new();
    let mut applied: HashSet<u64> = HashSet::new();
    let mut guids: HashSet<Guid> = HashSet::new();
    // Folders the new catalog holds as live (so "unchanged" can carry them forward).
    let mut known: HashSet<String> = HashSet::new();
    let mut missing_reported: HashSet<String> = HashSet::new();
    for f in &found {
        let m = &f.manifest;
        let problem = |what: String, lost: bool| RunProblem {
            run: Some(m.run),
            what,
            run_lost: lost,
        };
        let mut offsets: BTreeSet<u64> = m.members.iter().copied().collect();
        offsets.insert(f.member);
        let mut rows = Vec::new();
        let mut messages: Vec<(Guid, EntryLoc)> = Vec::new();
        // Names this run adds to `names`; taken back if the run cannot be written.
        let mut added: Vec<String> = Vec::new();
        for off in offsets {
            if applied.contains(&off) {
                continue;
            }
            let Some(mi) = by_offset.get(&off) else {
                report.problems.push(problem(
                    format!("member at {off} listed by the manifest is damaged or missing"),
                    false,
                ));
                continue;
            };
            rows.push(MemberRow {
                offset: mi.offset,
                compressed_len: mi.compressed_len,
                uncompressed_len: mi.uncompressed_len,
                crc32: None,
            });
            for e in &mi.entries {
                let loc = model_loc(mi.offset, e);
                if !names.contains_key(&e.name) {
                    names.insert(e.name.clone(), loc);
                    added.push(e.name.clone());
                }
                if let EntryName::Message(g) = archive::parse_entry_name(&e.name) {
                    messages.push((g, loc));
                }
            }
        }
        let mut snapshots: HashMap<String, (FolderMeta, Vec<RecordState>)> = HashMap::new();
        // Folders whose snapshot of this run cannot be used (damaged member, bad bytes,
        // records naming messages no member holds).
        let mut unreadable: HashMap<String, String> = HashMap::new();
        let held_now: HashSet<Guid> = messages.iter().map(|(g, _)| *g).collect();
        for folder in m.folders.iter().filter(|x| !x.deleted) {
            // Snapshotted in this run, or described by an earlier run's entries the
            // catalog does not carry (that run was pruned): read them.
            let s = folder.snapshot_run;
            let want = s == m.run || (s < m.run && cat.needs_snapshot(&folder.uniqueid, s)?);
            if !want {
                continue;
            }
            let run_id = archive::run_id(s);
            match read_snapshot(&mut file, ua, &names, &erased, &folder.uniqueid, &run_id) {
                Ok(snap) => {
                    let unheld: Vec<u32> = snap
                        .1
                        .iter()
                        .filter(|r| !guids.contains(&r.guid) && !held_now.contains(&r.guid))
                        .map(|r| r.uid)
                        .collect();
                    if unheld.is_empty() {
                        snapshots.insert(folder.uniqueid.clone(), snap);
                    } else {
                        unreadable.insert(
                            folder.uniqueid.clone(),
                            format!(
                                "{} of its records of run {run_id} name messages no intact \
                                 member holds (uids {:?})",
                                unheld.len(),
                                &unheld[..unheld.len().min(10)]
                            ),
                        );
                    }
                }
                Err(why) => {
                    unreadable.insert(folder.uniqueid.clone(), why);
                }
            }
        }
        // Write what can be written: a folder whose snapshot is lost keeps its previous
        // state (if the catalog has one) or is left out until its next readable
        // snapshot, so one damaged member does not cost the runs after it.
        let run = m.run;
        let mut m = m.clone();
        let mut degraded = Vec::new();
        m.folders.retain_mut(|folder| {
            let uid = folder.uniqueid.clone();
            if folder.deleted {
                return known.contains(&uid);
            }
            if let Some(why) = unreadable.get(&uid) {
                if known.contains(&uid) {
                    degraded.push(format!(
                        "folder {} ({uid}): {why}; its records at this run are those of its \
                         previous snapshot",
                        folder.name
                    ));
                    // Any earlier run: write_run then carries the last state forward.
                    folder.snapshot_run = run - 1;
                    return true;
                }
                degraded.push(format!(
                    "folder {} ({uid}): {why}; first seen in this run, it is left out \
                     until its next readable snapshot",
                    folder.name
                ));
                return false;
            }
            if folder.snapshot_run < run && !known.contains(&uid) && !snapshots.contains_key(&uid) {
                if missing_reported.insert(uid.clone()) {
                    degraded.push(format!(
                        "folder {} ({uid}): no readable snapshot yet; left out of this and \
                         later runs until it has one",
                        folder.name
                    ));
                }
                return false;
            }
            true
        });
        for d in degraded {
            report.problems.push(problem(d, false));
        }
        let mut user_files: Vec<(UserFile, EntryLoc)> = Vec::new();
        if let Some(us) = &m.user_state {
            for uf in &us.files {
                let entry = user_file_entry(us.snapshot_run, uf.kind.as_str(), &uf.name);
                match entry.and_then(|n| names.get(&n).copied()) {
                    Some(loc) => user_files.push((uf.clone(), loc)),
                    None => report.problems.push(problem(
                        format!(
                            "user file {} {:?} of run {} is not in an intact member",
                            uf.kind.as_str(),
                            uf.name,
                            us.snapshot_run
                        ),
                        false,
                    )),
                }
            }
        }
        let parts = RunParts {
            manifest_loc: Some(f.loc),
            members: &rows,
            messages: &messages,
            snapshots: &snapshots,
            user_files: &user_files,
        };
        match cat.write_run(&m, &parts) {
            Ok(()) => {
                for folder in &m.folders {
                    if folder.deleted {
                        known.remove(&folder.uniqueid);
                    } else {
                        known.insert(folder.uniqueid.clone());
                    }
                }
                applied.extend(rows.iter().map(|r| r.offset));
                guids.extend(messages.iter().map(|(g, _)| *g));
                report.runs_indexed.push(m.run);
            }
            Err(e) => {
                for n in &added {
                    names.remove(n);
                }
                report.problems.push(problem(e.to_string(), true));
            }
        }
    }
    report.messages = guids.len() as u64;
    for (ev, loc) in &events {
        cat.add_retention_event(ev, loc)?;
    }
    if let Some(g) = &generation {
        cat.set_archive_generation(g)?;
    }
    match &old {
        // A catalog of an earlier generation (a prune or forget rewrote the archive
        // since) is not compared: what it has and the archive lacks was removed on
        // purpose, and the archive's retention events say so.
        Ok((_, _, _, g)) if *g != generation => {
            report.lost.no_old_catalog = Some(format!(
                "it indexes archive generation {}, the archive is generation {} (rewritten \
                 by a prune or forget since): not compared",
                g.as_deref().unwrap_or("0"),
                generation.as_deref().unwrap_or("0")
            ));
        }
        Ok((runs, messages, _, _)) => {
            report.lost.runs = runs
                .iter()
                .filter(|r| !report.runs_indexed.contains(r))
                .copied()
                .collect();
            let mut lost: Vec<Guid> = messages.difference(&guids).copied().collect();
            lost.sort();
            report.lost.messages = lost;
        }
        Err(why) => report.lost.no_old_catalog = Some(why.clone()),
    }
    let old_end = old.as_ref().ok().filter(|o| o.3 == generation).map(|o| o.2);
    report.damage = damage_found(&report, old_end);
    if !report.damage.is_empty() && !opts.salvage {
        report.refused = true;
        cat.discard()?;
        return Ok(report);
    }
    cat.install()?;
    report.unindexed_members = scan
        .members
        .iter()
        .filter(|m| !applied.contains(&m.offset))
        // The format marker member belongs to no run.
        .filter(|m| {
            !m.entries
                .iter()
                .all(|e| e.name == archive::FORMAT_ENTRY || e.name == archive::GENERATION_ENTRY)
        })
        .map(|m| m.offset)
        .collect();
    Ok(report)
}

/// Why the archive counts as damaged, given what reindex found and the old catalog's
/// committed end (`None`: no old catalog to tell a crash leftover from a cut).
fn damage_found(r: &ReindexReport, old_end: Option<u64>) -> Vec<String> {
    let mut out = Vec::new();
    for d in &r.damaged {
        out.push(format!(
            "damaged member at offset {} ({} bytes): {}",
            d.offset, d.len, d.error
        ));
    }
    if let Some((o, l)) = r.truncated_tail {
        match old_end {
            Some(end) if o >= end => {} // a crash leftover past every committed run
            Some(end) => out.push(format!(
                "the archive is cut at offset {}: {l} bytes of a member at {o}, inside what \
                 the catalog says is committed (up to {end})",
                o.saturating_add(l)
            )),
            None => out.push(format!(
                "{l} bytes at offset {o} are a truncated member, and there is no readable \
                 catalog to tell a crash leftover from a cut archive"
            )),
        }
    }
    for p in &r.problems {
        let run = p.run.map_or_else(String::new, |n| format!("run {n}: "));
        out.push(format!("{run}{}", p.what));
    }
    if !r.lost.runs.is_empty() {
        out.push(format!(
            "the old catalog has run(s) {:?} that the archive no longer gives",
            r.lost.runs
        ));
    }
    if !r.lost.messages.is_empty() {
        out.push(format!(
            "the old catalog has {} message(s) no intact member holds",
            r.lost.messages.len()
        ));
    }
    out
}
