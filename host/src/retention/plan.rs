//! What a compaction keeps, decided from the catalog alone (no member inflated): the
//! kept runs, the messages erased from them, the folders taken out of them, and for
//! every member of the archive whether it is copied byte for byte, re-packed, dropped,
//! or must be looked into.
//!
//! A member is **copied** when the entries the catalog knows in it are all needed and
//! tile it exactly (each entry's header blocks, data and padding, end to end: then
//! there is nothing else in it); **dropped** when they tile it and none is needed;
//! **re-packed** when they tile it and some are needed; **inspected** (inflated, then
//! decided entry by entry by name) when the catalog does not account for every byte
//! (an entry it does not locate, such as `mailbox_annotations.json` or a crashed
//! attempt's snapshot). A member holding only a run manifest is neither: kept runs'
//! manifests are written anew (their member lists change) or copied when unchanged.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::error::Result;
use super::error::RetentionError;
use crate::archive::{self, EntryName, rewrite};
use crate::catalog::{Catalog, LocKind, Needs};
use crate::cyrus::Guid;

/// What happens to one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Copied byte for byte.
    Copy,
    /// Inflated; its needed entries re-packed into a new member.
    Repack,
    /// Left out.
    Drop,
    /// Inflated and decided entry by entry (the catalog does not account for all of it).
    Inspect,
    /// The manifest of this run, alone in its member.
    Manifest(u64),
    /// The first member (format marker): rebuilt with the new generation.
    Format,
}

/// One known entry of a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub name: String,
    pub offset_in_member: u64,
    pub size: u64,
    pub keep: bool,
}

/// One member of the old archive and its fate.
#[derive(Debug, Clone)]
pub struct MemberPlan {
    pub offset: u64,
    pub compressed_len: u64,
    pub uncompressed_len: u64,
    /// The run that committed it.
    pub run: u64,
    pub action: Action,
    /// The entries the catalog locates in it, in offset order.
    pub known: Vec<Known>,
}

/// The whole decision.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Kept runs, ascending.
    pub kept: Vec<u64>,
    /// Removed runs, ascending.
    pub removed: Vec<u64>,
    /// Messages erased from kept runs (GUID → size).
    pub erased: BTreeMap<Guid, u64>,
    /// Folders taken out of every run (UniqueID → last name).
    pub drop_folders: BTreeMap<String, String>,
    /// What kept runs need.
    pub needs: Needs,
    /// Entry names of the user files kept runs need.
    pub user_names: HashSet<String>,
    /// Where the catalog has each message (to tell a second copy from the one kept).
    pub msg_loc: HashMap<Guid, (u64, u64)>,
    /// Every committed member, in file order.
    pub members: Vec<MemberPlan>,
    /// Where the committed part ends (members past it are a crashed run's, or holds
    /// not yet adopted: copied along, erased messages taken out).
    pub committed_end: u64,
    /// The archive's length.
    pub archive_len: u64,
    /// Messages stored now, and those the new archive keeps.
    pub messages_before: u64,
    pub messages_after: u64,
    /// Unique message bytes stored now, and kept.
    pub message_bytes_before: u64,
    pub message_bytes_after: u64,
}

/// What an entry becomes, decided by its name (for inspected members).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Keep,
    Drop,
}

impl Plan {
    /// Whether the new archive would differ from the old one in anything but the
    /// generation (nothing removed, erased or taken out).
    pub fn is_noop(&self) -> bool {
        self.removed.is_empty()
            && self.erased.is_empty()
            && self.drop_folders.is_empty()
            && self.members.iter().all(|m| {
                matches!(
                    m.action,
                    Action::Copy | Action::Format | Action::Manifest(_)
                )
            })
    }

    /// The fate of entry `name` at `(member, offset_in_member)` of the committed part.
    pub fn fate(&self, name: &str, member: u64, offset_in_member: u64) -> Fate {
        let keep = match archive::parse_entry_name(name) {
            EntryName::Message(g) => {
                self.needs.messages.contains(&g)
                    && self.msg_loc.get(&g) == Some(&(member, offset_in_member))
            }
            EntryName::Folder { uniqueid, run, .. } => run
                .parse::<u64>()
                .is_ok_and(|r| self.needs.snapshots.contains(&(uniqueid, r))),
            EntryName::User { .. } => self.user_names.contains(name),
            EntryName::RunManifest { .. } | EntryName::Format | EntryName::Generation => false,
            EntryName::Retention { .. } | EntryName::Other => true,
        };
        if keep { Fate::Keep } else { Fate::Drop }
    }

    /// The fate of an entry in the uncommitted tail: everything stays (the next backup
    /// adopts it) except erased messages.
    pub fn tail_fate(&self, name: &str) -> Fate {
        match archive::parse_entry_name(name) {
            EntryName::Message(g) if self.erased.contains_key(&g) => Fate::Drop,
            _ => Fate::Keep,
        }
    }

    /// Estimated archive bytes after (copied members exactly, re-packed ones by the
    /// share of their tar bytes kept, inspected ones whole).
    pub fn estimated_after(&self) -> u64 {
        let mut n = self.archive_len.saturating_sub(self.committed_end);
        for m in &self.members {
            n += match m.action {
                Action::Copy | Action::Inspect | Action::Format | Action::Manifest(_) => {
                    m.compressed_len
                }
                Action::Drop => 0,
                Action::Repack => {
                    let kept: u64 = m
                        .known
                        .iter()
                        .filter(|k| k.keep)
                        .map(|k| extent(k).1 - extent(k).0)
                        .sum();
                    m.compressed_len * kept / m.uncompressed_len.max(1)
                }
            };
        }
        n
    }
}

/// `[start, end)` of a known entry in its member: its headers, data and padding.
fn extent(k: &Known) -> (u64, u64) {
    let start = k
        .offset_in_member
        .saturating_sub(rewrite::header_len(&k.name, k.size));
    let end = rewrite::padded_len(k.offset_in_member.saturating_add(k.size)).unwrap_or(u64::MAX);
    (start, end)
}

/// Whether the known entries account for every byte of a member of `len` tar bytes.
fn tiles(known: &[Known], len: u64) -> bool {
    let mut at = 0;
    for k in known {
        let (s, e) = extent(k);
        if s != at {
            return false;
        }
        at = e;
    }
    at == len
}

/// The user-file entry name the catalog's `(snapshot_run, kind, name)` stands for.
pub(crate) fn user_entry_name(snapshot_run: u64, kind: &str, name: &str) -> Option<String> {
    let kind = crate::model::UserFileKind::from_name(kind)?;
    archive::user_file_entry(snapshot_run, kind, name).ok()
}

/// Decide a compaction: keep `kept` runs, erase `erase` (the messages' bytes leave the
/// archive and every run), take `drop_folders` out of every run. `user` names the
/// archive in errors.
pub fn plan(
    cat: &Catalog,
    user: &str,
    archive_len: u64,
    kept: &BTreeSet<u64>,
    erase: &HashSet<Guid>,
    drop_folders: &BTreeMap<String, String>,
) -> Result<Plan> {
    let inconsistent = |what: String| RetentionError::Inconsistent {
        user: user.to_string(),
        what,
    };
    let runs = cat.runs()?;
    let all: Vec<u64> = runs.iter().map(|r| r.run).collect();
    let drop_set: HashSet<String> = drop_folders.keys().cloned().collect();
    let kept_v: Vec<u64> = all.iter().copied().filter(|r| kept.contains(r)).collect();
    let mut needs = cat.needs_of(&kept_v, &drop_set, &HashSet::new())?;
    let mut erased = BTreeMap::new();
    let sizes: HashMap<Guid, u64> = cat
        .message_lives()?
        .into_iter()
        .map(|m| (m.guid, m.size))
        .collect();
    for g in erase {
        if let Some(size) = sizes.get(g) {
            needs.messages.remove(g);
            erased.insert(*g, *size);
        }
    }
    let user_names: HashSet<String> = needs
        .user_files
        .iter()
        .filter_map(|(r, k, n)| user_entry_name(*r, k, n))
        .collect();

    // Every location the catalog knows, once each, by member.
    let mut by_member: BTreeMap<u64, BTreeMap<u64, Known>> = BTreeMap::new();
    let mut msg_loc = HashMap::new();
    let mut manifest_of: HashMap<u64, u64> = HashMap::new();
    let mut plan = Plan {
        kept: kept_v.clone(),
        removed: all.iter().copied().filter(|r| !kept.contains(r)).collect(),
        erased,
        drop_folders: drop_folders.clone(),
        user_names,
        archive_len,
        ..Plan::default()
    };
    for l in cat.audit_locations()? {
        let (Some(m), Some(o), Some(s)) = (l.loc.member, l.loc.offset, l.loc.size) else {
            continue;
        };
        let (Ok(m), Ok(o), Ok(s)) = (u64::try_from(m), u64::try_from(o), u64::try_from(s)) else {
            return Err(inconsistent(format!("a negative location in member {m}")));
        };
        let name = match &l.kind {
            LocKind::Message { guid } => {
                let g = match guid {
                    Ok(g) => *g,
                    Err(hex) => return Err(inconsistent(format!("message {hex:?}"))),
                };
                msg_loc.insert(g, (m, o));
                plan.messages_before += 1;
                plan.message_bytes_before += s;
                if needs.messages.contains(&g) {
                    plan.messages_after += 1;
                    plan.message_bytes_after += s;
                }
                archive::message_entry(&g)
            }
            LocKind::Manifest => {
                let run = u64::try_from(l.run).unwrap_or(0);
                manifest_of.insert(m, run);
                archive::run_manifest_entry(&archive::run_id(run))
                    .map_err(|e| inconsistent(e.to_string()))?
            }
            LocKind::FolderMeta {
                uniqueid,
                snapshot_run,
                file,
                ..
            } => archive::folder_entry(
                uniqueid,
                &archive::run_id(u64::try_from(*snapshot_run).unwrap_or(0)),
                file,
            )
            .map_err(|e| inconsistent(e.to_string()))?,
            LocKind::UserFile {
                snapshot_run,
                kind,
                name,
            } => user_entry_name(u64::try_from(*snapshot_run).unwrap_or(0), kind, name)
                .ok_or_else(|| inconsistent(format!("user file {kind} {name:?}")))?,
        };
        by_member.entry(m).or_default().insert(
            o,
            Known {
                name,
                offset_in_member: o,
                size: s,
                keep: false,
            },
        );
    }
    for r in cat.retention_events()? {
        by_member.entry(r.loc.member_offset).or_default().insert(
            r.loc.offset_in_member,
            Known {
                name: archive::retention_entry(r.seq),
                offset_in_member: r.loc.offset_in_member,
                size: r.loc.size,
                keep: true,
            },
        );
    }
    plan.msg_loc = msg_loc;
    plan.needs = needs;

    // The committed members, contiguous from offset 0.
    let mut end = 0u64;
    for m in cat.audit_members()? {
        let (Ok(offset), Ok(clen), Ok(ulen), Ok(run)) = (
            u64::try_from(m.offset),
            u64::try_from(m.compressed_len),
            u64::try_from(m.uncompressed_len),
            u64::try_from(m.run),
        ) else {
            return Err(inconsistent(format!("member row at {}", m.offset)));
        };
        if offset != end {
            return Err(inconsistent(format!(
                "the catalog's members leave a gap at offset {end} (next member at {offset})"
            )));
        }
        end = offset + clen;
        let mut known: Vec<Known> = by_member
            .remove(&offset)
            .map(|k| k.into_values().collect())
            .unwrap_or_default();
        for k in &mut known {
            if k.keep {
                continue; // retention events
            }
            k.keep = plan.fate(&k.name, offset, k.offset_in_member) == Fate::Keep;
        }
        let tiled = tiles(&known, ulen);
        let action = if offset == 0 {
            Action::Format
        } else if let (Some(&run), true, 1) = (manifest_of.get(&offset), tiled, known.len()) {
            Action::Manifest(run)
        } else if !tiled {
            Action::Inspect
        } else if known.iter().all(|k| k.keep) {
            Action::Copy
        } else if known.iter().any(|k| k.keep) {
            Action::Repack
        } else {
            Action::Drop
        };
        plan.members.push(MemberPlan {
            offset,
            compressed_len: clen,
            uncompressed_len: ulen,
            run,
            action,
            known,
        });
    }
    plan.committed_end = end;
    // Locations in no member row (retention events of the uncommitted tail are
    // fine; anything else is a catalog that does not describe the archive).
    for (m, ks) in by_member {
        if m < end || ks.values().any(|k| !k.name.starts_with("retention/")) {
            return Err(inconsistent(format!(
                "the catalog locates entries in member {m}, which is not one of its members"
            )));
        }
    }
    for r in &runs {
        if r.manifest.is_none() {
            return Err(inconsistent(format!(
                "run {} has no manifest location",
                r.run
            )));
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(name: &str, off: u64, size: u64) -> Known {
        Known {
            name: name.into(),
            offset_in_member: off,
            size,
            keep: true,
        }
    }

    #[test]
    fn tiling_sees_every_gap() {
        // Two entries: 512 header + 5 data (padded to 512), 512 header + 600 (1024).
        let a = k("messages/aa/one", 512, 5);
        let b = k("messages/bb/two", 1536, 600);
        assert!(tiles(&[a.clone(), b.clone()], 2560));
        assert!(!tiles(&[a.clone(), b.clone()], 3072), "an entry after b");
        assert!(!tiles(std::slice::from_ref(&b), 2560), "an entry before b");
        let far = k("messages/bb/two", 2048, 600);
        assert!(!tiles(&[a, far], 3072), "an entry between");
        assert!(tiles(&[], 0));
    }
}
