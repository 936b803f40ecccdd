//! What one run remembers for the next, stored as an extra `"backup"` key in its run
//! manifest (`runs/<run>.json`; readers ignore unknown keys, doc/archive-format.md):
//! the stat lines each folder's files had when they were read, whether they were
//! "racy" (changed within [`super::RACY_SECS`] of being read), and the stats and
//! SHA-1s of the user-level files. The next run compares the server's `FMULTISTATUS`
//! and `META` listings against these and skips what did not change.
//!
//! The manifest sits alone in a small member, so reading it back costs one small
//! inflate. A manifest without the key (or unreadable) means "assume everything
//! changed": always safe, only slower.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{BackupError, Result};
use crate::archive::read_entry_at;
use crate::io_error::IoContext;
use crate::model::{EntryLoc, RunManifest};
use crate::protocol::FileStat;

/// `(size, mtime, inode)` as the protocol's `STAT` lines give them.
pub type Stat3 = [u64; 3];

/// Convert a protocol stat.
pub fn stat3(s: &FileStat) -> Stat3 {
    [s.size, s.mtime, s.ino]
}

/// The stat lines of one folder's files, as last read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderStats {
    #[serde(default)]
    pub header: Option<Stat3>,
    #[serde(default)]
    pub index: Option<Stat3>,
    #[serde(default)]
    pub annotations: Option<Stat3>,
    #[serde(default)]
    pub mailbox_annotations: Option<Stat3>,
    /// A file changed within `RACY_SECS` of being read: fetch again next run.
    #[serde(default)]
    pub racy: bool,
}

impl FolderStats {
    /// Put the stat of the protocol file `name` in its slot (unknown names ignored).
    pub fn set(&mut self, name: &[u8], s: Stat3) {
        match name {
            b"header" => self.header = Some(s),
            b"index" => self.index = Some(s),
            b"annotations" => self.annotations = Some(s),
            b"mailbox_annotations" => self.mailbox_annotations = Some(s),
            _ => {}
        }
    }

    /// Whether `listing` (fresh from FMULTISTATUS) shows the same files as `self`.
    pub fn same_files(&self, listing: &FolderStats) -> bool {
        self.header == listing.header
            && self.index == listing.index
            && self.annotations == listing.annotations
            && self.mailbox_annotations == listing.mailbox_annotations
    }
}

/// The user-level files as last stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStats {
    /// `META` listing stat of `seen`.
    #[serde(default)]
    pub seen: Option<Stat3>,
    /// `META` listing stat of `sub`.
    #[serde(default)]
    pub sub: Option<Stat3>,
    /// Entry item (`seen`, `subscriptions`, `sieve/<name>`) -> SHA-1 hex of its bytes.
    #[serde(default)]
    pub sha1: BTreeMap<String, String>,
    /// The `USERFILES` listing (`seen`, `sub`, `sieve/<file>` -> stat) when the server
    /// has that extension: any difference means the files are fetched again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<BTreeMap<String, Stat3>>,
}

/// The user's own files as the server listed them in this run (`META` or
/// `USERFILES`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserListing {
    pub seen: Option<Stat3>,
    pub sub: Option<Stat3>,
    /// Every file `USERFILES` listed; `None` from `META` (no sieve stats).
    pub files: Option<BTreeMap<String, Stat3>>,
    /// The quota file (`META <user> quota`, sent with the listing) when the server
    /// has `CAP QUOTA`; empty when the user has no quota root.
    pub quota: Option<Vec<u8>>,
}

impl UserListing {
    /// From the `(name, stat)` lines of `META` (`userfiles == false`) or `USERFILES`.
    pub fn from_lines(lines: &[crate::protocol::client::NamedStat], userfiles: bool) -> Self {
        let mut l = UserListing {
            files: userfiles.then(BTreeMap::new),
            ..Default::default()
        };
        for (n, s) in lines {
            match n.as_slice() {
                b"seen" => l.seen = Some(stat3(s)),
                b"sub" => l.sub = Some(stat3(s)),
                _ => {}
            }
            if let Some(f) = &mut l.files {
                f.insert(String::from_utf8_lossy(n).into_owned(), stat3(s));
            }
        }
        l
    }

    /// Whether the files the last run stored (`prev`) are, by their stats, still the
    /// same: with `USERFILES` every file (sieve included) must be listed alike; from
    /// `META` only seen and sub can be compared.
    pub fn same_as(&self, prev: &UserStats) -> bool {
        match &self.files {
            Some(now) => prev.files.as_ref() == Some(now),
            None => prev.seen == self.seen && prev.sub == self.sub,
        }
    }
}

/// The `"backup"` key of a manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupExt {
    /// Folder UniqueID -> its files' stats.
    #[serde(default)]
    pub folders: BTreeMap<String, FolderStats>,
    #[serde(default)]
    pub user: Option<UserStats>,
    /// Folders this run did not back up, with the reason (their previous state is
    /// carried forward). A record for people and tools reading the archive; a run
    /// ignores it (a failed folder has no stats here, so it is read again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<super::FolderFailure>,
}

/// The manifest's bytes: the model's JSON plus the `"backup"` key.
pub fn manifest_json(m: &RunManifest, ext: &BackupExt) -> Result<Vec<u8>> {
    let enc = |e: serde_json::Error| BackupError::other(format!("encoding run manifest: {e}"));
    let mut v = serde_json::to_value(m).map_err(enc)?;
    if let serde_json::Value::Object(map) = &mut v {
        map.insert("backup".into(), serde_json::to_value(ext).map_err(enc)?);
    }
    let mut out = serde_json::to_vec_pretty(&v).map_err(enc)?;
    out.push(b'\n');
    Ok(out)
}

/// The `"backup"` key of the manifest at `loc` in `archive` (empty if absent or
/// unreadable: the run then treats everything as changed).
pub fn read_ext(archive: &Path, loc: Option<EntryLoc>) -> BackupExt {
    let Some(loc) = loc else {
        return BackupExt::default();
    };
    let got = (|| -> Result<BackupExt> {
        let mut f = File::open(archive).at("opening", archive)?;
        let bytes = read_entry_at(
            &mut f,
            archive,
            loc.member_offset,
            loc.offset_in_member,
            loc.size,
        )?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| BackupError::other(format!("run manifest is not JSON: {e}")))?;
        match v.get("backup") {
            Some(x) => serde_json::from_value(x.clone())
                .map_err(|e| BackupError::other(format!("run manifest backup key: {e}"))),
            None => Ok(BackupExt::default()),
        }
    })();
    got.unwrap_or_else(|e| {
        log::warn!(
            target: "cyrvault::backup",
            "{}: previous run manifest unreadable ({e}): every folder is fetched again",
            archive.display()
        );
        BackupExt::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_keeps_model_fields_and_adds_backup_key() {
        let m = RunManifest {
            format: 1,
            run: 2,
            user: "bob".into(),
            started: 1,
            finished: 2,
            server: "h:1".into(),
            tool_version: "0".into(),
            folders: vec![],
            user_state: None,
            members: vec![0, 100],
        };
        let mut ext = BackupExt::default();
        ext.folders.insert(
            "u1".into(),
            FolderStats {
                index: Some([1, 2, 3]),
                racy: true,
                ..Default::default()
            },
        );
        let bytes = manifest_json(&m, &ext).unwrap();
        assert_eq!(crate::model::parse_manifest(&bytes).unwrap(), m);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let back: BackupExt = serde_json::from_value(v["backup"].clone()).unwrap();
        assert_eq!(back, ext);
        let mut listing = FolderStats::default();
        listing.set(b"index", [1, 2, 3]);
        assert!(ext.folders["u1"].same_files(&listing));
        listing.set(b"header", [1, 1, 1]);
        assert!(!ext.folders["u1"].same_files(&listing));
    }
}
