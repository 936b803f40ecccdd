//! `verify`: is the archive intact, and do the archive and its catalog agree?
//!
//! 1. Every member inflates with a matching CRC-32 and ISIZE and holds well-formed tar
//!    entries (`archive::scan`, which resumes after a damaged member, so the rest of
//!    the archive is still checked).
//! 2. Every message entry hashes to its name (`Scan::misnamed`).
//! 3. Every location in the catalog (members, messages, manifests, folder snapshots,
//!    user files) points at an entry of the right name and size in an intact member.
//! 4. Every manifest in the archive is a run in the catalog and vice versa. A manifest
//!    past everything the catalog knows is a run whose catalog commit a crash
//!    interrupted: noted, not a failure (the next backup or reindex adds it).
//!
//! Damage is reported by member: its file offset, and from the catalog exactly which
//! messages (GUID, and every folder/UID/runs that refers to it) and which meta entries
//! and runs it takes with it.
#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::PathBuf;

use serde::Serialize;

use super::UserArchive;
use super::dump::locations;
use crate::archive::{self, EntryName, MemberInfo, Scan};
use crate::catalog::{Catalog, MetaEntry};
use crate::cyrus::Guid;
use crate::error::Result;

/// One folder/UID (over some runs) that refers to a damaged message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AffectedUse {
    /// The folder's name at `from_run`.
    pub folder: String,
    pub uniqueid: String,
    pub uid: u32,
    /// The runs this record version was valid for.
    pub runs: Vec<u64>,
}

/// A message lost with a damaged member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AffectedMessage {
    pub guid: Guid,
    pub uses: Vec<AffectedUse>,
    /// The message's own bytes still inflate and hash to its GUID (the damage lies
    /// after it in the member): `cat` can still read it, a restore can use it.
    pub readable: bool,
}

/// A meta entry lost with a damaged member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetaAffected {
    pub entry: MetaEntry,
    /// The run that wrote it.
    pub snapshot_run: u64,
    /// The runs whose state it describes.
    pub runs: Vec<u64>,
}

/// A damaged region of the archive and what it costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DamagedMember {
    /// File offset of the damaged member.
    pub offset: u64,
    /// Bytes up to the next intact member.
    pub len: u64,
    /// What is wrong.
    pub error: String,
    /// The catalog's members in the region (normally just `offset`).
    pub catalog_members: Vec<u64>,
    /// Messages stored there.
    pub messages: Vec<AffectedMessage>,
    /// Manifests, folder snapshots and user files stored there.
    pub meta: Vec<MetaAffected>,
    /// Every run that wrote into the region or whose state needs something in it.
    pub runs: Vec<u64>,
}

/// A disagreement between catalog and archive (or a misnamed entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogMismatch {
    pub member_offset: Option<u64>,
    pub what: String,
}

/// The answer of `verify` for one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub user: String,
    pub id: String,
    pub archive: PathBuf,
    /// Nothing damaged, nothing misnamed, catalog and archive agree.
    pub ok: bool,
    pub archive_bytes: u64,
    /// Members inflated and checked.
    pub members_checked: u64,
    /// Message entries hashed.
    pub messages_checked: u64,
    pub damaged: Vec<DamagedMember>,
    pub mismatches: Vec<CatalogMismatch>,
    /// Not failures: a crash leftover at the tail, runs committed in the archive but
    /// not yet in the catalog.
    pub notes: Vec<String>,
}

fn runs_between(all: &[u64], from: u64, to: Option<u64>) -> Vec<u64> {
    all.iter()
        .copied()
        .filter(|&r| r >= from && to.is_none_or(|t| r < t))
        .collect()
}

/// What the catalog says lives in the damaged region `[offset, offset + len)`.
fn affected(
    ua: &UserArchive,
    cat: &Catalog,
    member_offsets: &[u64],
    all_runs: &[u64],
    offset: u64,
    len: u64,
    error: String,
) -> Result<DamagedMember> {
    let end = offset.saturating_add(len);
    let in_region: Vec<u64> = member_offsets
        .iter()
        .copied()
        .filter(|&o| o >= offset && o < end)
        .collect();
    let mut runs = BTreeSet::new();
    let mut messages = Vec::new();
    let mut meta = Vec::new();
    let mut names: HashMap<String, Vec<crate::catalog::NameSpan>> = HashMap::new();
    for &o in &in_region {
        for m in cat.messages_in_member(o)? {
            let mut uses = Vec::new();
            for u in m.uses {
                if !names.contains_key(&u.uniqueid) {
                    names.insert(u.uniqueid.clone(), cat.folder_history(&u.uniqueid)?);
                }
                let folder = names
                    .get(&u.uniqueid)
                    .and_then(|h| {
                        h.iter()
                            .rfind(|n| n.from_run <= u.from_run)
                            .or_else(|| h.first())
                    })
                    .map_or_else(|| u.uniqueid.clone(), |n| n.name.clone());
                let r = runs_between(all_runs, u.from_run, u.to_run);
                runs.extend(r.iter().copied());
                uses.push(AffectedUse {
                    folder,
                    uniqueid: u.uniqueid,
                    uid: u.uid,
                    runs: r,
                });
            }
            let readable = match cat.message_loc(&m.guid)? {
                Some(l) => File::open(&ua.archive)
                    .ok()
                    .and_then(|mut f| {
                        archive::read_entry_at(
                            &mut f,
                            &ua.archive,
                            l.member_offset,
                            l.offset_in_member,
                            l.size,
                        )
                        .ok()
                    })
                    .is_some_and(|b| Guid::of(&b) == m.guid),
                None => false,
            };
            messages.push(AffectedMessage {
                guid: m.guid,
                uses,
                readable,
            });
        }
        for m in cat.meta_in_member(o)? {
            runs.extend(m.runs.iter().copied());
            runs.insert(m.snapshot_run);
            meta.push(MetaAffected {
                entry: m.entry,
                snapshot_run: m.snapshot_run,
                runs: m.runs,
            });
        }
    }
    Ok(DamagedMember {
        offset,
        len,
        error,
        catalog_members: in_region,
        messages,
        meta,
        runs: runs.into_iter().collect(),
    })
}

/// Check one user's archive and catalog. Damage is reported, not returned as an
/// error; errors are for an archive or catalog that cannot be read at all.
pub fn verify(ua: &UserArchive) -> Result<VerifyReport> {
    let scan: Scan = archive::scan(&ua.archive)?;
    let mut report = VerifyReport {
        user: ua.user.clone(),
        id: ua.id.clone(),
        archive: ua.archive.clone(),
        ok: false,
        archive_bytes: scan.len,
        members_checked: scan.members.len() as u64,
        messages_checked: scan
            .members
            .iter()
            .flat_map(|m| &m.entries)
            .filter(|e| matches!(archive::parse_entry_name(&e.name), EntryName::Message(_)))
            .count() as u64,
        damaged: Vec::new(),
        mismatches: Vec::new(),
        notes: Vec::new(),
    };
    if let Some((o, l)) = scan.truncated_tail {
        report.notes.push(format!(
            "{l} bytes at offset {o} are a truncated member (a crash leftover; the next \
             backup cuts them)"
        ));
    }
    for (o, e) in scan.misnamed() {
        report.mismatches.push(CatalogMismatch {
            member_offset: Some(o),
            what: format!("entry {} hashes to {}", e.name, e.sha1),
        });
    }
    let cat = match ua.open_catalog() {
        Ok(c) => Some(c),
        Err(e) => {
            report.mismatches.push(CatalogMismatch {
                member_offset: None,
                what: format!("catalog: {e} (run reindex)"),
            });
            None
        }
    };
    if let Some(cat) = &cat {
        check_catalog(ua, cat, &scan, &mut report)?;
    } else {
        for d in &scan.damage {
            report.damaged.push(DamagedMember {
                offset: d.offset,
                len: d.len,
                error: d.error.to_string(),
                catalog_members: Vec::new(),
                messages: Vec::new(),
                meta: Vec::new(),
                runs: Vec::new(),
            });
        }
    }
    report.ok = report.damaged.is_empty() && report.mismatches.is_empty();
    Ok(report)
}

fn check_catalog(
    ua: &UserArchive,
    cat: &Catalog,
    scan: &Scan,
    report: &mut VerifyReport,
) -> Result<()> {
    for c in cat.integrity_check()? {
        report.mismatches.push(CatalogMismatch {
            member_offset: None,
            what: format!("catalog: {c}"),
        });
    }
    let loc = locations(cat)?;
    let runs: Vec<u64> = cat.runs()?.iter().map(|r| r.run).collect();
    let member_offsets: Vec<u64> = loc.members.iter().map(|m| m.offset).collect();
    for d in &scan.damage {
        report.damaged.push(affected(
            ua,
            cat,
            &member_offsets,
            &runs,
            d.offset,
            d.len,
            d.error.to_string(),
        )?);
    }
    let damaged = |o: u64| {
        scan.damage
            .iter()
            .any(|d| o >= d.offset && o < d.offset.saturating_add(d.len))
    };
    let by_offset: HashMap<u64, &MemberInfo> = scan.members.iter().map(|m| (m.offset, m)).collect();
    let mut mismatch = |o: Option<u64>, what: String| {
        report.mismatches.push(CatalogMismatch {
            member_offset: o,
            what,
        })
    };
    for m in &loc.members {
        if damaged(m.offset) {
            continue;
        }
        match by_offset.get(&m.offset) {
            None => mismatch(
                Some(m.offset),
                format!("run {}: the catalog's member is not in the archive", m.run),
            ),
            Some(a)
                if a.compressed_len != m.compressed_len
                    || a.uncompressed_len != m.uncompressed_len =>
            {
                mismatch(
                    Some(m.offset),
                    format!(
                        "run {}: the catalog says {}/{} bytes (compressed/tar), the archive has {}/{}",
                        m.run,
                        m.compressed_len,
                        m.uncompressed_len,
                        a.compressed_len,
                        a.uncompressed_len
                    ),
                )
            }
            Some(_) => {}
        }
    }
    let check_entry = |name: &str, l: &crate::model::EntryLoc| -> Option<String> {
        if damaged(l.member_offset) {
            return None; // reported with the damage
        }
        let Some(m) = by_offset.get(&l.member_offset) else {
            return Some(format!("{name}: no member at offset {}", l.member_offset));
        };
        match m
            .entries
            .iter()
            .find(|e| e.offset_in_member == l.offset_in_member)
        {
            None => Some(format!(
                "{name}: no entry at {} in the member at {}",
                l.offset_in_member, l.member_offset
            )),
            Some(e) if e.name != name || e.size != l.size => Some(format!(
                "{name} ({} bytes): the entry there is {} ({} bytes)",
                l.size, e.name, e.size
            )),
            Some(_) => None,
        }
    };
    for m in &loc.messages {
        if let Some(w) = check_entry(&archive::message_entry(&m.guid), &m.loc) {
            mismatch(Some(m.loc.member_offset), w);
        }
    }
    for m in &loc.meta {
        if let Some(w) = check_entry(&m.name, &m.loc) {
            mismatch(Some(m.loc.member_offset), format!("run {}: {w}", m.run));
        }
    }
    // Runs: every catalog run has its manifest (checked above when it has a location),
    // and every manifest in the archive is a catalog run.
    for r in cat.runs()? {
        if r.manifest.is_none() {
            mismatch(
                None,
                format!("run {}: the catalog has no manifest location", r.run),
            );
        }
    }
    let catalog_end = loc
        .members
        .iter()
        .map(|m| m.offset.saturating_add(m.compressed_len))
        .max()
        .unwrap_or(0);
    for m in &scan.members {
        for e in &m.entries {
            let EntryName::RunManifest { run } = archive::parse_entry_name(&e.name) else {
                continue;
            };
            let Ok(run) = run.parse::<u64>() else {
                mismatch(Some(m.offset), format!("{}: not a run number", e.name));
                continue;
            };
            if runs.contains(&run) {
                continue;
            }
            if m.offset >= catalog_end {
                report.notes.push(format!(
                    "run {run} is committed in the archive (member at {}) but not yet in the \
                     catalog: a crash before the catalog commit; the next backup or reindex \
                     adds it",
                    m.offset
                ));
            } else {
                mismatch(
                    Some(m.offset),
                    format!(
                        "run {run}: its manifest is in the archive, the catalog has no such run"
                    ),
                );
            }
        }
    }
    Ok(())
}
