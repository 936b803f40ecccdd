//! After a crash: bring the catalog up to the archive.
//!
//! The writer's open has already cut an incomplete tail member and reported the
//! complete members past the catalog's committed length ("uncommitted"). Two kinds can
//! be there:
//!
//! * members of a run whose manifest (`runs/<run>.json`) reached the archive but whose
//!   catalog transaction did not commit (killed between the manifest's fsync and the
//!   commit). The run IS committed — its manifest is in the archive — so it is replayed
//!   into the catalog with `Catalog::write_run`, exactly as reindex would;
//! * members of a run that never got its manifest: not a committed run. They are
//!   *adopted*: the next run lists them in its manifest (so reindex finds them the same
//!   way) and reuses the messages in them instead of fetching them again.
//!
//! The helpers that turn members into `RunParts` are shared with `run.rs`, so a run
//! and its replay give the catalog the same facts.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use super::BackupError;
use super::Result;
use crate::archive::{
    EntryName, MemberInfo, folder_entry, parse_entry_name, read_entry_at, run_id,
};
use crate::catalog::{Catalog, FolderMeta, MemberRow, RunParts};
use crate::cyrus::Guid;
use crate::io_error::IoContext;
use crate::model::{
    EntryLoc, RecordState, RunManifest, UserFile, parse_manifest, records_from_meta,
};

/// The archive entry name of a user-level file stored in `run`.
pub(crate) fn user_file_entry(run: u64, f: &UserFile) -> Result<String> {
    crate::archive::user_file_entry(run, f.kind, &f.name)
        .map_err(|e| BackupError::archive("(entry name)", e))
}

/// Catalog rows of these members, in file order.
pub(crate) fn member_rows(members: &[MemberInfo]) -> Vec<MemberRow> {
    members
        .iter()
        .map(|m| MemberRow {
            offset: m.offset,
            compressed_len: m.compressed_len,
            uncompressed_len: m.uncompressed_len,
            crc32: None,
        })
        .collect()
}

/// Every message entry in these members, in file order.
pub(crate) fn message_locs(members: &[MemberInfo]) -> Vec<(Guid, EntryLoc)> {
    let mut out = Vec::new();
    for m in members {
        for e in &m.entries {
            if let EntryName::Message(g) = parse_entry_name(&e.name) {
                out.push((
                    g,
                    EntryLoc {
                        member_offset: m.offset,
                        offset_in_member: e.offset_in_member,
                        size: e.size,
                    },
                ));
            }
        }
    }
    out
}

/// Where the first entry called `name` is among these members.
pub(crate) fn find_loc(members: &[MemberInfo], name: &str) -> Option<EntryLoc> {
    members.iter().find_map(|m| {
        m.entries.iter().find(|e| e.name == name).map(|e| EntryLoc {
            member_offset: m.offset,
            offset_in_member: e.offset_in_member,
            size: e.size,
        })
    })
}

/// Where a folder snapshot's meta entries of `run` are.
pub(crate) fn folder_meta(members: &[MemberInfo], uniqueid: &str, run: u64) -> Result<FolderMeta> {
    let r = run_id(run);
    let loc = |file: &str| -> Result<Option<EntryLoc>> {
        let name = folder_entry(uniqueid, &r, file)
            .map_err(|e| BackupError::archive("(entry name)", e))?;
        Ok(find_loc(members, &name))
    };
    Ok(FolderMeta {
        header: loc("cyrus.header")?,
        index: loc("cyrus.index")?,
        annotations: loc("cyrus.annotations")?,
        state: loc("state.json")?,
    })
}

/// The user files a manifest names, with their locations: in these members when the
/// run stored them, else where the catalog's latest run has them.
pub(crate) fn user_file_locs(
    catalog: &Catalog,
    members: &[MemberInfo],
    m: &RunManifest,
) -> Result<Vec<(UserFile, EntryLoc)>> {
    let Some(us) = &m.user_state else {
        return Ok(Vec::new());
    };
    if us.snapshot_run == m.run {
        let mut out = Vec::new();
        for f in &us.files {
            let name = user_file_entry(m.run, f)?;
            if let Some(loc) = find_loc(members, &name) {
                out.push((f.clone(), loc));
            }
        }
        return Ok(out);
    }
    let Some(last) = catalog.last_run()? else {
        return Ok(Vec::new());
    };
    Ok(catalog
        .user_files_at(last.run)?
        .into_iter()
        .map(|(_, f, loc)| (f, loc))
        .collect())
}

/// Commit one run to the catalog from its members (in file order), its manifest and
/// where that manifest is, and its folder snapshots: what a backup does at its end and
/// what recovery does for a run the catalog missed.
pub(crate) fn commit_run(
    catalog: &mut Catalog,
    m: &RunManifest,
    manifest_loc: EntryLoc,
    members: &[MemberInfo],
    snapshots: &HashMap<String, (FolderMeta, Vec<RecordState>)>,
) -> Result<()> {
    let messages = message_locs(members);
    commit_run_with(catalog, m, manifest_loc, members, &messages, snapshots)
}

/// [`commit_run`] with the message entries given apart, in file order (the backup
/// keeps them as `(GUID, location)` pairs instead of named entries, to stay small):
/// `members` then need not list their message entries.
pub(crate) fn commit_run_with(
    catalog: &mut Catalog,
    m: &RunManifest,
    manifest_loc: EntryLoc,
    members: &[MemberInfo],
    messages: &[(Guid, EntryLoc)],
    snapshots: &HashMap<String, (FolderMeta, Vec<RecordState>)>,
) -> Result<()> {
    let user_files = user_file_locs(catalog, members, m)?;
    let rows = member_rows(members);
    Ok(catalog.write_run(
        m,
        &RunParts {
            manifest_loc: Some(manifest_loc),
            members: &rows,
            messages,
            snapshots,
            user_files: &user_files,
        },
    )?)
}

/// What recovery did.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Runs replayed into the catalog.
    pub runs: Vec<u64>,
    /// Members of runs that never got a manifest, in file order: to be adopted.
    pub orphans: Vec<MemberInfo>,
}

/// Replay the runs whose manifests are among `uncommitted` and return the rest.
pub(crate) fn recover(
    catalog: &mut Catalog,
    archive: &Path,
    user: &str,
    uncommitted: Vec<MemberInfo>,
) -> Result<Recovered> {
    let mut out = Recovered::default();
    let mut pending: Vec<MemberInfo> = Vec::new();
    let repair = |what: String| BackupError::NeedsRepair {
        user: user.to_string(),
        archive: archive.to_path_buf(),
        what,
    };
    for member in uncommitted {
        let manifest = member.entries.iter().find_map(|e| {
            matches!(parse_entry_name(&e.name), EntryName::RunManifest { .. }).then(|| e.clone())
        });
        let Some(entry) = manifest else {
            pending.push(member);
            continue;
        };
        let mut f = File::open(archive).at("opening", archive)?;
        let bytes = read_entry_at(
            &mut f,
            archive,
            member.offset,
            entry.offset_in_member,
            entry.size,
        )?;
        let m = parse_manifest(&bytes).map_err(|e| BackupError::parse(archive, e))?;
        let last = catalog.last_run()?.map_or(0, |r| r.run);
        if m.run <= last {
            return Err(repair(format!(
                "uncommitted member at offset {} holds the manifest of run {}, but the catalog already has run {last}",
                member.offset, m.run
            )));
        }
        let mut members = Vec::new();
        for off in &m.members {
            let Some(i) = pending.iter().position(|p| p.offset == *off) else {
                return Err(repair(format!(
                    "run {} lists member {off}, which is not an uncommitted member",
                    m.run
                )));
            };
            members.push(pending.remove(i));
        }
        let manifest_loc = crate::model::EntryLoc {
            member_offset: member.offset,
            offset_in_member: entry.offset_in_member,
            size: entry.size,
        };
        members.push(member);
        members.sort_by_key(|m| m.offset);
        let mut snapshots: HashMap<String, (FolderMeta, Vec<RecordState>)> = HashMap::new();
        for fr in m
            .folders
            .iter()
            .filter(|f| !f.deleted && f.snapshot_run == m.run)
        {
            let meta = folder_meta(&members, &fr.uniqueid, m.run)?;
            let (Some(h), Some(i)) = (meta.header, meta.index) else {
                return Err(repair(format!(
                    "run {} snapshot of folder {} has no cyrus.header/cyrus.index",
                    m.run, fr.uniqueid
                )));
            };
            let hb = read_entry_at(&mut f, archive, h.member_offset, h.offset_in_member, h.size)?;
            let ib = read_entry_at(&mut f, archive, i.member_offset, i.offset_in_member, i.size)?;
            let (_, records) = records_from_meta(&hb, &ib)?;
            snapshots.insert(fr.uniqueid.clone(), (meta, records));
        }
        commit_run(catalog, &m, manifest_loc, &members, &snapshots)?;
        log::warn!(
            target: "cyrvault::backup",
            "{}: run {} was in the archive but not in the catalog (crash before commit): replayed",
            archive.display(),
            m.run
        );
        out.runs.push(m.run);
    }
    out.orphans = pending;
    Ok(out)
}

/// Build a catalog at `catalog` from the archive alone: scan every member and replay
/// every run that has a manifest, in file order, through the same calls the backup
/// makes (`Catalog::write_run`). This is what `reindex` has to do; the tests use it to
/// show that the incrementally built catalog and the replayed one are the same.
/// Returns the runs replayed. The caller must hold the archive's lock (or know that no
/// backup runs), and the catalog is built at `<catalog>.new` and moved into place.
pub fn replay_archive(archive: &Path, catalog: &Path) -> Result<Vec<u64>> {
    let sc = crate::archive::scan(archive)?;
    if let Some(d) = sc.damage.first() {
        return Err(BackupError::NeedsRepair {
            user: "?".into(),
            archive: archive.to_path_buf(),
            what: format!("damaged member at offset {}: {}", d.offset, d.error),
        });
    }
    let mut cat = Catalog::create_fresh(catalog)?;
    let rec = recover(&mut cat, archive, "?", sc.members)?;
    cat.install()?;
    Ok(rec.runs)
}
