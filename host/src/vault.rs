//! Where the archives live on the backup host: the vault directory.
//!
//! One archive per user, named by the user's INBOX UniqueID (Cyrus keeps it when a user
//! is renamed, so the archive follows the user): `<root>/<g0g1>/<inbox-uniqueid>.tar.gz`
//! with its catalog beside it, `<...>.catalog.sqlite`. `<g0g1>` is the first two
//! characters of the UniqueID, lower-cased (256 shard directories for hex ids).
//!
//! A small index, `<root>/vault.json`, maps user ids to INBOX UniqueIDs so that the
//! admin commands find a user's archive by name. It is DERIVED data: the archives'
//! manifests say which user each archive belonged to at each run, and
//! [`Vault::rebuild_index`] rebuilds the index from them (the user of each archive's
//! last run). The index is replaced atomically (write a temporary file, fsync, rename,
//! fsync the directory) under an exclusive lock on `<root>/vault.lock`, so concurrent
//! backups of different users do not lose each other's entries.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::archive::ArchiveFailure;
use crate::io_error::IoContext;
use cyrvault::error::ErrorKind;

/// Result with the vault's [`VaultError`].
pub type Result<T, E = VaultError> = std::result::Result<T, E>;

/// Every failure of the vault: a service-side one (I/O on the vault's files with what
/// and where, a refused name, an index that does not encode, a manifest that does not
/// parse) or an archive's, met while reading who owns it. The crate `Error` converts
/// it at this layer's edge into the same variants (`Error::Service`, `Error::Archive`).
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// A service-side failure.
    #[error(transparent)]
    Service(#[from] cyrvault::Error),
    /// An archive that could not be read (never holds a service error: see `From`).
    #[error(transparent)]
    Archive(ArchiveFailure),
}

/// An I/O failure with what and where is the service's `Error::Io` here too (so `?`
/// takes `IoContext::at`'s result straight into this layer's error).
impl From<cyrvault::io_error::IoError> for VaultError {
    fn from(e: cyrvault::io_error::IoError) -> Self {
        cyrvault::Error::from(e).into()
    }
}

impl From<ArchiveFailure> for VaultError {
    fn from(e: ArchiveFailure) -> Self {
        match e {
            ArchiveFailure::Service(e) => VaultError::Service(e),
            e => VaultError::Archive(e),
        }
    }
}

impl VaultError {
    /// The class of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            VaultError::Service(e) => e.kind(),
            VaultError::Archive(e) => e.kind(),
        }
    }

    /// A request that is not allowed (the service's `Refused`, class Usage).
    fn refused(message: String) -> Self {
        cyrvault::Error::Refused(message).into()
    }
}

/// File name of the vault index inside the root.
pub const INDEX_FILE: &str = "vault.json";
/// File name of the lock that serialises index updates.
pub const LOCK_FILE: &str = "vault.lock";
/// Version of the index JSON.
pub const INDEX_FORMAT: u32 = 1;

/// A vault directory.
#[derive(Debug, Clone)]
pub struct Vault {
    root: PathBuf,
    /// The index as this process last read or wrote it (shared by clones, so the
    /// parallel jobs of one backup share it): [`Vault::set_user`] of a user it already
    /// maps right costs no I/O. Another process may change the file meanwhile; the
    /// cache is only trusted to say "already recorded", and any change re-reads the
    /// file under the lock.
    known: Arc<Mutex<Option<BTreeMap<String, String>>>>,
}

/// One user's archive and catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserArchive {
    /// The user's INBOX UniqueID: the archive's key.
    pub inbox_uniqueid: String,
    /// `<root>/<g0g1>/<inbox-uniqueid>.tar.gz`.
    pub archive: PathBuf,
    /// `<root>/<g0g1>/<inbox-uniqueid>.catalog.sqlite`.
    pub catalog: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    format: u32,
    /// userid -> INBOX UniqueID.
    users: BTreeMap<String, String>,
}

/// Whether `id` can name an archive file: 1-64 of `[A-Za-z0-9-]` (as archive entry
/// names require of UniqueIDs), so no path can be smuggled in.
pub fn valid_uniqueid(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Vault {
    /// Open the vault at `root`, creating the directory if needed.
    pub fn open(root: &Path) -> Result<Vault> {
        fs::create_dir_all(root).at("creating the vault directory", root)?;
        Ok(Vault {
            root: root.to_path_buf(),
            known: Arc::new(Mutex::new(None)),
        })
    }

    /// The vault directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the archive and catalog keyed by `inbox_uniqueid` are (whether or not they
    /// exist yet). Refuses a UniqueID that is not a safe file name.
    pub fn archive_for(&self, inbox_uniqueid: &str) -> Result<UserArchive> {
        if !valid_uniqueid(inbox_uniqueid) {
            return Err(VaultError::refused(format!(
                "INBOX uniqueid {inbox_uniqueid:?} is not 1-64 of [A-Za-z0-9-]"
            )));
        }
        let shard: String = inbox_uniqueid
            .chars()
            .take(2)
            .collect::<String>()
            .to_ascii_lowercase();
        let dir = self.root.join(shard);
        Ok(UserArchive {
            inbox_uniqueid: inbox_uniqueid.to_string(),
            archive: dir.join(format!("{inbox_uniqueid}.tar.gz")),
            catalog: dir.join(format!("{inbox_uniqueid}.catalog.sqlite")),
        })
    }

    /// The archive of `userid`, if the index knows the user.
    pub fn user(&self, userid: &str) -> Result<Option<UserArchive>> {
        let idx = self.read_index()?;
        match idx.users.get(userid) {
            Some(id) => Ok(Some(self.archive_for(id)?)),
            None => Ok(None),
        }
    }

    /// Every user in the index, by user id.
    pub fn users(&self) -> Result<Vec<(String, UserArchive)>> {
        let idx = self.read_index()?;
        idx.users
            .iter()
            .map(|(u, id)| Ok((u.clone(), self.archive_for(id)?)))
            .collect()
    }

    /// Record that `userid`'s INBOX has `inbox_uniqueid`. Any other user id mapped to the
    /// same UniqueID is dropped: the user was renamed on the server and the archive
    /// follows the new name. Creates the shard directory of the archive.
    /// Known already (the common case, every night): no lock, no read, no write.
    pub fn set_user(&self, userid: &str, inbox_uniqueid: &str) -> Result<UserArchive> {
        let ua = self.archive_for(inbox_uniqueid)?;
        if let Some(dir) = ua.archive.parent() {
            fs::create_dir_all(dir).at("creating", dir)?;
        }
        if self.cached(userid) == Some(inbox_uniqueid.to_string()) {
            return Ok(ua);
        }
        let _lock = self.lock()?;
        let mut idx = self.read_index()?;
        if idx.users.get(userid).map(String::as_str) != Some(inbox_uniqueid) {
            idx.users.retain(|_, id| id != inbox_uniqueid);
            idx.users
                .insert(userid.to_string(), inbox_uniqueid.to_string());
            self.write_index(&idx)?;
        }
        if let Ok(mut k) = self.known.lock() {
            *k = Some(idx.users);
        }
        Ok(ua)
    }

    /// What the cached index maps `userid` to (reading the index once per process).
    fn cached(&self, userid: &str) -> Option<String> {
        let mut k = self.known.lock().ok()?;
        if k.is_none() {
            *k = Some(self.read_index().ok()?.users);
        }
        k.as_ref()?.get(userid).cloned()
    }

    /// Drop every user the index maps to the archive at `archive` (`forget --all`).
    /// Returns the user ids dropped.
    pub fn remove_archive(&self, archive: &Path) -> Result<Vec<String>> {
        let _lock = self.lock()?;
        let mut idx = self.read_index()?;
        let mut gone = Vec::new();
        let mut keep = BTreeMap::new();
        for (u, id) in std::mem::take(&mut idx.users) {
            if self.archive_for(&id).is_ok_and(|a| a.archive == archive) {
                gone.push(u);
            } else {
                keep.insert(u, id);
            }
        }
        idx.users = keep;
        if !gone.is_empty() {
            self.write_index(&idx)?;
        }
        Ok(gone)
    }

    /// Rebuild the index from the archives alone: for every `<shard>/<id>.tar.gz`, the
    /// user named by the archive's last run manifest. Returns how many users it found.
    /// Archives without a committed run are skipped.
    pub fn rebuild_index(&self) -> Result<usize> {
        let _lock = self.lock()?;
        let mut idx = IndexFile {
            format: INDEX_FORMAT,
            users: BTreeMap::new(),
        };
        let mut found: Vec<(u64, String, String)> = Vec::new();
        for shard in fs::read_dir(&self.root).at("listing", &self.root)? {
            let shard = shard.at("listing", &self.root)?.path();
            if !shard.is_dir() {
                continue;
            }
            for f in fs::read_dir(&shard).at("listing", &shard)? {
                let p = f.at("listing", &shard)?.path();
                let Some(id) = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".tar.gz"))
                    .filter(|id| valid_uniqueid(id))
                    .map(str::to_string)
                else {
                    continue;
                };
                if let Some((run, user)) = last_manifest_user(&p)? {
                    found.push((run, user, id));
                }
            }
        }
        // Should two archives name the same user, the one with more runs wins.
        found.sort();
        for (_, user, id) in found {
            idx.users.insert(user, id);
        }
        let n = idx.users.len();
        self.write_index(&idx)?;
        Ok(n)
    }

    fn index_path(&self) -> PathBuf {
        self.root.join(INDEX_FILE)
    }

    fn lock(&self) -> Result<File> {
        let p = self.root.join(LOCK_FILE);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .at("opening", &p)?;
        f.lock().at("locking", &p)?;
        Ok(f)
    }

    fn read_index(&self) -> Result<IndexFile> {
        let p = self.index_path();
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(IndexFile {
                    format: INDEX_FORMAT,
                    users: BTreeMap::new(),
                });
            }
            Err(e) => return Err(cyrvault::Error::io("reading", &p, e).into()),
        };
        let idx: IndexFile = serde_json::from_slice(&bytes).map_err(|e| {
            VaultError::refused(format!(
                "{}: not a vault index ({e}); rebuild it with `cyrvault` from the archives",
                p.display()
            ))
        })?;
        if idx.format > INDEX_FORMAT {
            return Err(VaultError::refused(format!(
                "{}: index format {} is newer than this cyrvault ({INDEX_FORMAT})",
                p.display(),
                idx.format
            )));
        }
        Ok(idx)
    }

    fn write_index(&self, idx: &IndexFile) -> Result<()> {
        let p = self.index_path();
        let tmp = self.root.join(format!("{INDEX_FILE}.tmp"));
        let mut bytes = serde_json::to_vec_pretty(idx)
            .map_err(|e| cyrvault::Error::Other(format!("encoding the vault index: {e}")))?;
        bytes.push(b'\n');
        let mut f = File::create(&tmp).at("creating", &tmp)?;
        f.write_all(&bytes).at("writing", &tmp)?;
        f.sync_all().at("syncing", &tmp)?;
        fs::rename(&tmp, &p).at("renaming into place", &p)?;
        File::open(&self.root)
            .and_then(|d| d.sync_all())
            .at("syncing", &self.root)?;
        if let Ok(mut k) = self.known.lock() {
            *k = Some(idx.users.clone());
        }
        Ok(())
    }
}

/// The (run, user) of the last run manifest in an archive, scanning it end to end.
fn last_manifest_user(path: &Path) -> Result<Option<(u64, String)>> {
    use crate::archive::{EntryName, parse_entry_name, read_entry_at};
    let scan = crate::archive::scan(path)?;
    let mut last: Option<(u64, u64, u64)> = None;
    for m in &scan.members {
        for e in &m.entries {
            if let EntryName::RunManifest { run } = parse_entry_name(&e.name)
                && let Ok(run) = run.parse::<u64>()
                && last.is_none_or(|(r, _, _)| run > r)
            {
                last = Some((run, m.offset, e.offset_in_member));
            }
        }
    }
    let Some((run, member, off)) = last else {
        return Ok(None);
    };
    let entry = scan
        .members
        .iter()
        .find(|m| m.offset == member)
        .and_then(|m| m.entries.iter().find(|e| e.offset_in_member == off))
        .map(|e| e.size)
        .unwrap_or(0);
    let mut f = File::open(path).at("opening", path)?;
    let bytes = read_entry_at(&mut f, path, member, off, entry)?;
    let m = crate::model::parse_manifest(&bytes).map_err(|e| cyrvault::Error::parse(path, e))?;
    Ok(Some((run, m.user)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_index_and_renames() {
        let dir = std::env::temp_dir().join(format!("cyrvault-vault-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let v = Vault::open(&dir).unwrap();
        assert!(v.user("bob").unwrap().is_none());
        let a = v.set_user("bob", "Ab12-cd").unwrap();
        assert_eq!(a.archive, dir.join("ab").join("Ab12-cd.tar.gz"));
        assert_eq!(a.catalog, dir.join("ab").join("Ab12-cd.catalog.sqlite"));
        assert_eq!(v.user("bob").unwrap(), Some(a.clone()));
        // the user is renamed: same INBOX uniqueid, the archive follows the new name
        v.set_user("robert", "Ab12-cd").unwrap();
        assert!(v.user("bob").unwrap().is_none());
        assert_eq!(v.user("robert").unwrap(), Some(a));
        v.set_user("carol", "ff00").unwrap();
        let users: Vec<String> = v.users().unwrap().into_iter().map(|(u, _)| u).collect();
        assert_eq!(users, ["carol", "robert"]);
        assert!(v.archive_for("../x").is_err());
        assert!(v.archive_for("").is_err());
        // no archives hold manifests here: the rebuilt index is empty
        assert_eq!(v.rebuild_index().unwrap(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
