//! `verify`: is the archive intact, and do the archive and its catalog agree?
//!
//! 1. Every member inflates with a matching CRC-32 and ISIZE and holds well-formed tar
//!    entries (`archive::scan_parallel`: the two halves of the archive on two cores;
//!    it resumes after a damaged member, so the rest of the archive is still checked).
//! 2. Every message entry hashes to its name (`Scan::misnamed`).
//! 3. Catalog to archive: every location in the catalog (members, messages,
//!    manifests, folder snapshots, user files) is whole and non-negative, lies inside
//!    the archive and its member, and points at an entry of the right name and size in
//!    an intact member; every record's message (GUID) has a `messages` row, so a member
//!    holds it (and by 2. with the right SHA-1). Rows are read raw
//!    (`Catalog::audit_*`), so a damaged row is reported, never skipped.
//! 4. Archive to catalog: every member of the committed part of the archive (up to the
//!    end of the catalog's last member) is a catalog member, every message in it has a
//!    row, every manifest in the archive is a run in the catalog and vice versa, and the
//!    counts of runs, members and messages agree. A manifest past everything the
//!    catalog knows is a run whose catalog commit a crash interrupted: noted, not a
//!    failure (the next backup or reindex adds it).
//!
//! 5. Retention (`check_retention`): the catalog indexes the archive's generation, the
//!    archive's retention events and the catalog's agree, no erased message is stored
//!    (unless a later backup stored it again).
//!
//! `verify` never writes: the catalog is opened read-only.
//!
//! Damage is reported by member: its file offset, and from the catalog exactly which
//! messages (GUID, and every folder/UID/runs that refers to it) and which meta entries
//! and runs it takes with it.
#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;

use serde::Serialize;

use super::UserArchive;
use super::entries::user_file_entry;
use crate::archive::{self, EntryName, MemberInfo, Scan};
use crate::catalog::{Catalog, CatalogCounts, LocKind, MetaEntry, RawMember};
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
    /// Rows and entries counted on both sides.
    pub counts: VerifyCounts,
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

/// What the catalog side of `verify` reads, all of it before any comparison: on its
/// own thread and connection, beside the archive's scan.
struct CatalogAudit {
    integrity: Vec<String>,
    members: Vec<RawMember>,
    locs: Vec<crate::catalog::LocRow>,
    unheld: Vec<crate::catalog::UnheldRecord>,
    counts: CatalogCounts,
}

impl CatalogAudit {
    /// The audit, and the connection it was read on (kept for the comparison).
    fn read(ua: &UserArchive) -> Result<(Catalog, CatalogAudit)> {
        // SQLite's integrity check (the costliest part: every index entry is looked up
        // in its table) runs on a connection and thread of its own, beside the reads.
        std::thread::scope(|s| {
            let integrity = s.spawn(|| -> Result<Vec<String>> {
                let cat = ua.open_catalog()?;
                // The integrity check reads the file in B-tree order, not file order:
                // ask the kernel to read the whole file ahead, sequentially, first (a
                // cold catalog of 200,000 messages otherwise costs ~180,000 random
                // reads from disk).
                if let Ok(f) = File::open(&ua.catalog) {
                    use std::os::fd::AsRawFd;
                    let _ = nix::fcntl::posix_fadvise(
                        f.as_raw_fd(),
                        0,
                        0,
                        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
                    );
                }
                Ok(cat.integrity_check()?)
            });
            let cat = ua.open_catalog()?;
            let members = cat.audit_members()?;
            let locs = cat.audit_locations()?;
            let unheld = cat.unheld_records()?;
            let counts = cat.counts()?;
            let integrity = integrity.join().unwrap_or_else(|_| {
                Err(crate::Error::other(format!(
                    "{}: the catalog integrity check thread panicked",
                    ua.catalog.display()
                )))
            })?;
            Ok((
                cat,
                CatalogAudit {
                    integrity,
                    members,
                    locs,
                    unheld,
                    counts,
                },
            ))
        })
    }
}

/// Check one user's archive and catalog. Damage is reported, not returned as an
/// error; errors are for an archive or catalog that cannot be read at all.
///
/// The two sides are read at once, on two threads (two cores): the archive's scan
/// (inflate, CRC, SHA-1 of every entry) and the catalog's audit (SQLite's integrity
/// check and every row); they are compared when both are in.
pub fn verify(ua: &UserArchive) -> Result<VerifyReport> {
    let (scan, audit) = std::thread::scope(|s| {
        let audit = s.spawn(|| CatalogAudit::read(ua));
        let scan = archive::scan_parallel(&ua.archive);
        let audit = audit.join().unwrap_or_else(|_| {
            Err(crate::Error::other(format!(
                "{}: the catalog audit thread panicked",
                ua.catalog.display()
            )))
        });
        (scan, audit)
    });
    let scan: Scan = scan?;
    let mut report = VerifyReport {
        user: ua.user.clone(),
        id: ua.id.clone(),
        archive: ua.archive.clone(),
        ok: false,
        archive_bytes: scan.len,
        members_checked: scan.members.len() as u64,
        messages_checked: 0,
        damaged: Vec::new(),
        mismatches: Vec::new(),
        notes: Vec::new(),
        counts: VerifyCounts::default(),
    };
    if let Some((o, l)) = scan.truncated_tail {
        report.notes.push(format!(
            "{l} bytes at offset {o} are a truncated member (a crash leftover; the next \
             backup cuts them)"
        ));
    }
    // Every message entry hashed, and those whose bytes do not hash to their name.
    for m in &scan.members {
        for e in &m.entries {
            let Some(g) = archive::message_entry_guid(&e.name) else {
                continue;
            };
            report.messages_checked += 1;
            if g != e.sha1 {
                report.mismatches.push(CatalogMismatch {
                    member_offset: Some(m.offset),
                    what: format!("entry {} hashes to {}", e.name, e.sha1),
                });
            }
        }
    }
    let cat = match audit {
        Ok(c) => Some(c),
        Err(e) => {
            report.mismatches.push(CatalogMismatch {
                member_offset: None,
                what: format!("catalog: {e} (run reindex)"),
            });
            None
        }
    };
    if let Some((cat, audit)) = cat {
        check_catalog(ua, &cat, audit, &scan, &mut report)?;
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

/// What `verify` counted on each side. The catalog's `runs`, `members` and `messages`
/// must equal the archive's committed part (the members up to the end of the last
/// member the catalog knows): runs with a manifest there, members there, distinct
/// messages in them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VerifyCounts {
    pub catalog: CatalogCounts,
    pub archive_runs: u64,
    pub archive_members: u64,
    pub archive_messages: u64,
    /// Record versions naming a message no member holds (each also a mismatch).
    pub unheld_records: u64,
}

/// The archive entry a stored location must point at, or why the row cannot name one.
fn expected_entry(kind: &LocKind, run: i64) -> std::result::Result<String, String> {
    let run_id = |r: i64| {
        u64::try_from(r)
            .map(archive::run_id)
            .map_err(|_| format!("run {r}"))
    };
    match kind {
        LocKind::Message { guid } => guid
            .as_ref()
            .map(archive::message_entry)
            .map_err(|hex| format!("GUID {hex:?}")),
        LocKind::Manifest => archive::run_manifest_entry(&run_id(run)?).map_err(|e| e.to_string()),
        LocKind::FolderMeta {
            uniqueid,
            snapshot_run,
            file,
            ..
        } => archive::folder_entry(uniqueid, &run_id(*snapshot_run)?, file)
            .map_err(|e| e.to_string()),
        LocKind::UserFile {
            snapshot_run,
            kind,
            name,
        } => u64::try_from(*snapshot_run)
            .ok()
            .and_then(|r| user_file_entry(r, kind, name))
            .ok_or_else(|| format!("user file {kind} {name:?} of run {snapshot_run}")),
    }
}

/// The entry a stored location must point at: a message's is checked by the GUID its
/// name stands for (no name formatted for each of 200,000 messages).
enum Expect {
    Message(Guid),
    Name(String),
}

impl Expect {
    fn is(&self, name: &str) -> bool {
        match self {
            Expect::Message(g) => archive::message_entry_guid(name) == Some(*g),
            Expect::Name(n) => n == name,
        }
    }

    fn name(&self) -> String {
        match self {
            Expect::Message(g) => archive::message_entry(g),
            Expect::Name(n) => n.clone(),
        }
    }
}

/// A location row for a human: `run 3: folder X cyrus.index of run 2`.
fn describe(kind: &LocKind, run: i64) -> String {
    match kind {
        LocKind::Message { guid } => format!(
            "message {} (first stored by run {run})",
            guid.as_ref().map_or_else(Clone::clone, Guid::to_hex)
        ),
        LocKind::Manifest => format!("run {run}: its manifest"),
        LocKind::FolderMeta {
            uniqueid,
            snapshot_run,
            file,
            ..
        } => format!("run {run}: folder {uniqueid} {file} of run {snapshot_run}"),
        LocKind::UserFile {
            snapshot_run,
            kind,
            name,
        } => format!("run {run}: user file {kind} {name:?} of run {snapshot_run}"),
    }
}

/// Both directions between catalog and archive: every row of the catalog points at an
/// intact entry of the right name and size inside the archive (no negative, partial or
/// past-the-end location), every record's message is held, every committed member and
/// message of the archive is in the catalog, every manifest is a run, and the counts
/// agree.
fn check_catalog(
    ua: &UserArchive,
    cat: &Catalog,
    audit: CatalogAudit,
    scan: &Scan,
    report: &mut VerifyReport,
) -> Result<()> {
    let CatalogAudit {
        integrity,
        members,
        locs,
        unheld,
        counts,
    } = audit;
    for c in integrity {
        report.mismatches.push(CatalogMismatch {
            member_offset: None,
            what: format!("catalog: {c}"),
        });
    }
    let runs: Vec<u64> = locs
        .iter()
        .filter(|l| l.kind == LocKind::Manifest)
        .filter_map(|l| u64::try_from(l.run).ok())
        .collect();
    let member_offsets: Vec<u64> = members
        .iter()
        .filter_map(|m| u64::try_from(m.offset).ok())
        .collect();
    for d in &scan.damage {
        let dm = affected(
            ua,
            cat,
            &member_offsets,
            &runs,
            d.offset,
            d.len,
            d.error.to_string(),
        )
        .unwrap_or_else(|e| DamagedMember {
            offset: d.offset,
            len: d.len,
            error: format!("{} (what it holds is unknown: {e})", d.error),
            catalog_members: Vec::new(),
            messages: Vec::new(),
            meta: Vec::new(),
            runs: Vec::new(),
        });
        report.damaged.push(dm);
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

    // Catalog -> archive: members.
    let mut catalog_members: HashMap<u64, &RawMember> = HashMap::new();
    let mut catalog_end = 0u64;
    for m in &members {
        let (Ok(offset), Ok(clen), Ok(ulen)) = (
            u64::try_from(m.offset),
            u64::try_from(m.compressed_len),
            u64::try_from(m.uncompressed_len),
        ) else {
            mismatch(
                None,
                format!(
                    "run {}: members row (offset {}, {}/{} bytes) has a negative value",
                    m.run, m.offset, m.compressed_len, m.uncompressed_len
                ),
            );
            continue;
        };
        let end = offset.saturating_add(clen);
        catalog_members.insert(offset, m);
        catalog_end = catalog_end.max(end.min(scan.len));
        if end > scan.len {
            mismatch(
                Some(offset),
                format!(
                    "run {}: the catalog's member ends at {end}, past the end of the archive \
                     ({} bytes)",
                    m.run, scan.len
                ),
            );
            continue;
        }
        if damaged(offset) {
            continue;
        }
        match by_offset.get(&offset) {
            None => mismatch(
                Some(offset),
                format!("run {}: the catalog's member is not in the archive", m.run),
            ),
            Some(a) if a.compressed_len != clen || a.uncompressed_len != ulen => mismatch(
                Some(offset),
                format!(
                    "run {}: the catalog says {clen}/{ulen} bytes (compressed/tar), the \
                     archive has {}/{}",
                    m.run, a.compressed_len, a.uncompressed_len
                ),
            ),
            Some(_) => {}
        }
    }

    // Catalog -> archive: every stored location.
    // Sorted vectors, not hash sets: a binary search per message and one sort, with
    // no hashing of 200,000 GUIDs (the rows come in GUID order already).
    let mut catalog_guids: Vec<Guid> = Vec::with_capacity(locs.len());
    // The rows are checked in archive order (member, offset): in GUID order each
    // lookup of a message's entry was a cache miss in a random member's thousands of
    // entries. What they find is reported in the rows' order.
    let mut order: Vec<usize> = (0..locs.len()).collect();
    order.sort_unstable_by_key(|&i| (locs[i].loc.member, locs[i].loc.offset));
    let mut found: Vec<(usize, Option<u64>, String)> = Vec::new();
    for &i in &order {
        let l = &locs[i];
        let mut mismatch = |o: Option<u64>, what: String| found.push((i, o, what));
        if let LocKind::Message { guid: Ok(g) } = &l.kind {
            catalog_guids.push(*g);
        }
        // Only a mismatch needs the words (200,000 rows would format them for nothing).
        let what = || match expected_entry(&l.kind, l.run) {
            Ok(name) => format!("{} ({name})", describe(&l.kind, l.run)),
            Err(_) => describe(&l.kind, l.run),
        };
        if l.loc.is_absent() {
            let required = match &l.kind {
                LocKind::FolderMeta { required, .. } => *required,
                _ => true,
            };
            if required {
                mismatch(
                    None,
                    format!("{}: the catalog has no location for it", what()),
                );
            }
            continue;
        }
        let parts = (l.loc.member, l.loc.offset, l.loc.size);
        let (Some(Ok(member)), Some(Ok(offset)), Some(Ok(size))) = (
            parts.0.map(u64::try_from),
            parts.1.map(u64::try_from),
            parts.2.map(u64::try_from),
        ) else {
            let show = |v: Option<i64>| v.map_or_else(|| "NULL".to_string(), |x| x.to_string());
            mismatch(
                None,
                format!(
                    "{}: damaged location (member {}, offset {}, size {})",
                    what(),
                    show(parts.0),
                    show(parts.1),
                    show(parts.2)
                ),
            );
            continue;
        };
        let expect = match &l.kind {
            LocKind::Message { guid: Ok(g) } => Ok(Expect::Message(*g)),
            kind => expected_entry(kind, l.run).map(Expect::Name),
        };
        let expect = match expect {
            Ok(e) => e,
            Err(why) => {
                mismatch(Some(member), format!("{}: damaged row ({why})", what()));
                continue;
            }
        };
        if !catalog_members.contains_key(&member) {
            mismatch(
                Some(member),
                format!(
                    "{}: member {member} is not one of the catalog's members",
                    what()
                ),
            );
            continue;
        }
        if damaged(member) {
            continue; // reported with the damage
        }
        let Some(m) = by_offset.get(&member) else {
            mismatch(
                Some(member),
                format!("{}: the archive has no member at offset {member}", what()),
            );
            continue;
        };
        if offset.saturating_add(size) > m.uncompressed_len {
            mismatch(
                Some(member),
                format!(
                    "{}: {size} bytes at {offset} run past the end of the member ({} tar \
                     bytes)",
                    what(),
                    m.uncompressed_len
                ),
            );
            continue;
        }
        // A member's entries are in tar order, i.e. by offset: a binary search, not a
        // walk of the member's thousands of entries for each of its messages.
        let at = m
            .entries
            .binary_search_by_key(&offset, |e| e.offset_in_member)
            .ok()
            .map(|i| &m.entries[i]);
        match at {
            None => mismatch(
                Some(member),
                format!("{}: no entry at {offset} in the member at {member}", what()),
            ),
            Some(e) if e.size != size || !expect.is(&e.name) => {
                let name = expect.name();
                mismatch(
                    Some(member),
                    format!(
                        "{}: {name} ({size} bytes) expected, the entry there is {} ({} bytes)",
                        what(),
                        e.name,
                        e.size
                    ),
                )
            }
            Some(_) => {}
        }
    }
    found.sort_by_key(|(i, _, _)| *i);
    for (_, o, what) in found {
        mismatch(o, what);
    }
    catalog_guids.sort_unstable();

    // Catalog -> archive: every record's message is held.
    let mut names: HashMap<String, String> = HashMap::new();
    for r in &unheld {
        if !names.contains_key(&r.uniqueid) {
            let n = cat
                .folder_history(&r.uniqueid)
                .ok()
                .and_then(|h| h.last().map(|n| n.name.clone()))
                .unwrap_or_else(|| r.uniqueid.clone());
            names.insert(r.uniqueid.clone(), n);
        }
        let runs = match r.to_run {
            Some(t) => format!("runs {} to {}", r.from_run, t - 1),
            None => format!("runs {} on", r.from_run),
        };
        mismatch(
            None,
            format!(
                "folder {} ({}) uid {}, {runs}: message {} is in no member of the archive \
                 (a restore of it fails; run `cyrvault reindex --salvage`)",
                names.get(&r.uniqueid).map_or("?", String::as_str),
                r.uniqueid,
                r.uid,
                r.guid
            ),
        );
    }

    // Archive -> catalog: the committed part of the archive (up to the catalog's end)
    // is made of the catalog's members; their messages and manifests are in it.
    let mut archive_members = 0u64;
    let mut archive_guids: Vec<Guid> = Vec::new();
    let mut archive_runs = 0u64;
    for m in scan.members.iter().filter(|m| m.offset < catalog_end) {
        let in_catalog = catalog_members.contains_key(&m.offset);
        // The format marker's member belongs to the first run, or (written by hand) to
        // none: it holds nothing a run needs.
        if !in_catalog && m.entries.iter().all(|e| e.name == archive::FORMAT_ENTRY) {
            continue;
        }
        archive_members += 1;
        if !in_catalog {
            mismatch(
                Some(m.offset),
                "a member in the committed part of the archive is not in the catalog".into(),
            );
            continue;
        }
        for e in &m.entries {
            match archive::parse_entry_name(&e.name) {
                EntryName::Message(g) => {
                    archive_guids.push(g);
                    if catalog_guids.binary_search(&g).is_err() {
                        mismatch(
                            Some(m.offset),
                            format!("{}: the catalog has no row for this message", e.name),
                        );
                    }
                }
                EntryName::RunManifest { .. } => archive_runs += 1,
                _ => {}
            }
        }
    }
    archive_guids.sort_unstable();
    archive_guids.dedup();
    for m in &scan.members {
        for e in &m.entries {
            if e.name.starts_with("messages/") {
                continue;
            }
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
    check_retention(ua, cat, scan, catalog_end, report)?;
    report.counts = VerifyCounts {
        catalog: counts,
        archive_runs,
        archive_members,
        archive_messages: archive_guids.len() as u64,
        unheld_records: unheld.len() as u64,
    };
    // With damage the archive side is short by what the damage took (reported there).
    if scan.damage.is_empty() {
        let c = &report.counts;
        for (what, cat_n, arch_n) in [
            ("runs", c.catalog.runs, c.archive_runs),
            ("members", c.catalog.members, c.archive_members),
            ("messages", c.catalog.messages, c.archive_messages),
        ] {
            if cat_n != arch_n {
                let what = format!(
                    "counts: the catalog has {cat_n} {what}, the committed part of the archive {arch_n}"
                );
                report.mismatches.push(CatalogMismatch {
                    member_offset: None,
                    what,
                });
            }
        }
    }
    Ok(())
}

/// Retention (doc/retention.md): the catalog indexes the archive's generation; every
/// `retention/<seq>.json` of the archive is a catalog event and vice versa (one
/// written after the last run whose catalog write a crash cut off is a note: the next
/// writer adds it); no erased message is in the archive unless a later backup stored
/// it again (then the catalog has it).
fn check_retention(
    ua: &UserArchive,
    cat: &Catalog,
    scan: &Scan,
    catalog_end: u64,
    report: &mut VerifyReport,
) -> Result<()> {
    let archive_gen = match scan.members.first().filter(|m| m.offset == 0) {
        Some(first) => match first
            .entries
            .iter()
            .find(|e| e.name == archive::GENERATION_ENTRY)
        {
            Some(e) => {
                let mut f = File::open(&ua.archive)
                    .map_err(|e| crate::error::Error::io("opening", &ua.archive, e))?;
                let b = archive::read_entry_at(&mut f, &ua.archive, 0, e.offset_in_member, e.size)?;
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
    let cat_gen = cat.archive_generation()?;
    if cat_gen != archive_gen {
        report.mismatches.push(CatalogMismatch {
            member_offset: Some(0),
            what: format!(
                "the catalog indexes archive generation {}, the archive is generation {} \
                 (run reindex)",
                cat_gen.as_deref().unwrap_or("0"),
                archive_gen.as_deref().unwrap_or("0")
            ),
        });
    }
    if cat.path() != ua.catalog {
        report.notes.push(format!(
            "a prune or forget was interrupted after it replaced the archive: its new catalog \
             {} is read; the next backup, prune or forget puts it in place",
            cat.path().display()
        ));
    }
    let events = cat.retention_events()?;
    let mut in_archive: HashMap<u64, (u64, u64, u64)> = HashMap::new();
    for m in &scan.members {
        for e in &m.entries {
            if e.name.starts_with("messages/") {
                continue;
            }
            if let EntryName::Retention { seq } = archive::parse_entry_name(&e.name)
                && let Ok(seq) = seq.parse::<u64>()
            {
                in_archive
                    .entry(seq)
                    .or_insert((m.offset, e.offset_in_member, e.size));
            }
        }
    }
    for ev in &events {
        match in_archive.remove(&ev.seq) {
            Some(at) if at == (ev.loc.member_offset, ev.loc.offset_in_member, ev.loc.size) => {}
            Some((m, o, s)) => report.mismatches.push(CatalogMismatch {
                member_offset: Some(m),
                what: format!(
                    "retention event {}: the catalog has it at {}+{} ({} bytes), the archive \
                     at {m}+{o} ({s} bytes)",
                    ev.seq, ev.loc.member_offset, ev.loc.offset_in_member, ev.loc.size
                ),
            }),
            None => report.mismatches.push(CatalogMismatch {
                member_offset: Some(ev.loc.member_offset),
                what: format!(
                    "retention event {} ({}) is in the catalog, not in any intact member",
                    ev.seq, ev.kind
                ),
            }),
        }
    }
    for (seq, (m, _, _)) in in_archive {
        if m >= catalog_end {
            report.notes.push(format!(
                "retention event {seq} (member at {m}) is in the archive but not yet in the \
                 catalog: the next backup, hold, prune or reindex adds it"
            ));
        } else {
            report.mismatches.push(CatalogMismatch {
                member_offset: Some(m),
                what: format!("retention event {seq} is in the archive, not in the catalog"),
            });
        }
    }
    let erased = cat.erased()?;
    if !erased.is_empty() {
        let held: HashSet<Guid> = cat.message_guids()?.into_iter().collect();
        for m in &scan.members {
            for e in &m.entries {
                if let EntryName::Message(g) = archive::parse_entry_name(&e.name)
                    && erased.contains_key(&g)
                    && !held.contains(&g)
                {
                    report.mismatches.push(CatalogMismatch {
                        member_offset: Some(m.offset),
                        what: format!("message {g} was erased but is still in the archive"),
                    });
                }
            }
        }
    }
    Ok(())
}
