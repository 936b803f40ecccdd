//! One run written from its manifest: [`Catalog::write_run`] makes the [`RunTx`]
//! calls a run manifest implies, in the one order both the backup and `reindex` use,
//! so the two catalogs cannot drift apart through a different call sequence.
//!
//! The caller supplies what only the archive knows: where the members, messages and
//! meta entries are ([`RunParts`]), and the records of each folder snapshotted in the
//! run (`model::records_from_meta` of the stored `cyrus.header`/`cyrus.index`).
#![forbid(unsafe_code)]

use std::collections::HashMap;

use super::error::Result;
use super::write::{FolderMeta, FolderRef, MemberRow, RunHeader};
use super::{Catalog, corrupt};
use crate::cyrus::Guid;
use crate::model::{EntryLoc, MANIFEST_FORMAT, RecordState, RunManifest, UserFile};

/// The archive-side facts of one run, beside its manifest.
#[derive(Debug, Clone, Copy)]
pub struct RunParts<'a> {
    /// Where `runs/<run>.json` is.
    pub manifest_loc: Option<EntryLoc>,
    /// The run's members: those the manifest lists, plus the manifest's own member.
    pub members: &'a [MemberRow],
    /// Message entries in those members, in file order.
    pub messages: &'a [(Guid, EntryLoc)],
    /// For every folder the manifest says was snapshotted in this run
    /// (`snapshot_run == run`, not deleted): its meta locations and records. Also, for
    /// a folder described by an earlier run's entries that the catalog does not carry
    /// (`Catalog::needs_snapshot`: that run was pruned), those entries' locations and
    /// records; every other folder with `snapshot_run < run` is carried forward.
    pub snapshots: &'a HashMap<String, (FolderMeta, Vec<RecordState>)>,
    /// The user files as of this run, with their locations.
    pub user_files: &'a [(UserFile, EntryLoc)],
}

impl RunHeader {
    /// The header of the run a manifest describes.
    pub fn from_manifest(m: &RunManifest, manifest_loc: Option<EntryLoc>) -> RunHeader {
        RunHeader {
            run: m.run,
            user: m.user.clone(),
            started: m.started,
            finished: m.finished,
            server: m.server.clone(),
            tool_version: m.tool_version.clone(),
            manifest: manifest_loc,
        }
    }
}

impl Catalog {
    /// Write (and commit) the run `m` describes: members, messages, then each folder in
    /// manifest order (deleted -> `folder_gone`, snapshotted in this run ->
    /// `folder_snapshot`, else `folder_unchanged`), then the user files. Nothing is
    /// committed if any part fails.
    pub fn write_run(&mut self, m: &RunManifest, parts: &RunParts<'_>) -> Result<()> {
        let path = self.path.clone();
        if m.format == 0 || m.format > MANIFEST_FORMAT {
            return Err(corrupt(
                &path,
                format!(
                    "run {}: manifest format {} (supported: 1-{MANIFEST_FORMAT})",
                    m.run, m.format
                ),
            ));
        }
        let mut tx = self.begin_run(&RunHeader::from_manifest(m, parts.manifest_loc))?;
        for mem in parts.members {
            tx.add_member(mem)?;
        }
        for (g, loc) in parts.messages {
            tx.add_message(g, loc)?;
        }
        for f in &m.folders {
            if f.deleted {
                tx.folder_gone(&f.uniqueid)?;
            } else if f.snapshot_run < m.run
                && let Some((meta, records)) = parts.snapshots.get(&f.uniqueid)
            {
                // Described by an earlier run's entries the catalog does not carry
                // (that run was pruned): see `Catalog::needs_snapshot`.
                tx.folder_snapshot_from(
                    FolderRef::from(f),
                    f.snapshot_run,
                    &f.state,
                    records,
                    meta,
                )?;
            } else if f.snapshot_run == m.run {
                let Some((meta, records)) = parts.snapshots.get(&f.uniqueid) else {
                    return Err(corrupt(
                        &path,
                        format!(
                            "run {}: folder {} ({}) changed but its snapshot is missing",
                            m.run, f.uniqueid, f.name
                        ),
                    ));
                };
                tx.folder_snapshot(FolderRef::from(f), &f.state, records, meta)?;
            } else if f.snapshot_run > m.run {
                return Err(corrupt(
                    &path,
                    format!(
                        "run {}: folder {} names snapshot run {}, a later run",
                        m.run, f.uniqueid, f.snapshot_run
                    ),
                ));
            } else {
                tx.folder_unchanged(FolderRef::from(f))?;
            }
        }
        if let Some(us) = &m.user_state {
            tx.user_state(us.snapshot_run, parts.user_files)?;
        }
        tx.commit()
    }
}
