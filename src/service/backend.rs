//! The session's [`Spool`] over a real Cyrus spool (`crate::spool`).
//!
//! Locking, as `doc/protocol.md` §1.7 and `doc/cyrus-files.md` ("reading a mailbox
//! consistently") describe it: [`Spool::open_folder`] takes the user namespace,
//! mailbox name and `cyrus.index` locks SHARED, copies every meta file into memory
//! and drops the namespace and index locks before it returns, so no network byte is
//! ever written while Cyrus's writers are blocked. For `FDATA`, each message file
//! is opened (and `fstat`ed) under the remaining shared name lock while the session
//! resolves UIDs; [`Folder::unlock_index`] then drops the name lock too, and the
//! files are streamed from their open descriptors with no Cyrus lock held at all:
//! message files are immutable and an open descriptor keeps the inode readable even
//! if Cyrus's expunge cleanup unlinks it meanwhile. Only when one request names more
//! files than the descriptor budget does the name lock stay held (shared: it blocks
//! nobody but a repack or delete of that one mailbox) while the rest are opened lazily.
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::session::{
    DeletedAs, Fetch, Folder, FolderEntry, FolderOpen, MetaFile, OpenFile, PartitionMap,
    SharedEntry, Spool, UserFile, Want,
};
use crate::cyrus::mboxlist::Mboxlist;
use crate::io_error::IoContext;
use crate::protocol::FileStat;
use crate::spool::{self, FileCopy, Load, MessageFile, MetaCopy, OpenFolder, SpoolError};
use crate::{Error, Result};

/// Most message descriptors one `FDATA` opens before it falls back to holding the
/// shared name lock and opening lazily (the Perl client asks for 1024 at a time).
pub const FD_BUDGET: usize = 2048;

/// A Cyrus spool as the session sees it.
pub struct CyrusSpool {
    spool: spool::Spool,
    fd_budget: usize,
}

impl CyrusSpool {
    /// Wrap a spool; `fd_budget` bounds the descriptors one request keeps open.
    pub fn new(spool: spool::Spool, fd_budget: usize) -> CyrusSpool {
        CyrusSpool { spool, fd_budget }
    }

    /// The spool underneath.
    pub fn spool(&self) -> &spool::Spool {
        &self.spool
    }

    fn user(user: &[u8]) -> Result<&str> {
        std::str::from_utf8(user).map_err(|_| Error::Refused("user id is not UTF-8".into()))
    }

    /// The user's own entries of mailboxes.db (a range read, cached per session).
    fn list(&self, user: &str) -> Result<Arc<Mboxlist>> {
        Ok(self.spool.owner_mboxlist(user)?)
    }
}

fn wire_stat(s: spool::FileStat) -> FileStat {
    FileStat {
        size: s.size,
        mtime: u64::try_from(s.mtime).unwrap_or(0),
        ino: s.inode,
    }
}

/// An in-memory copy as a file to send: the size is what was copied (for a twoskip
/// database, its committed length), the mtime and inode those of the file read.
fn copy_fetch(copy: &FileCopy) -> Fetch<'_> {
    let mut stat = wire_stat(copy.stat);
    stat.size = copy.bytes.len() as u64;
    Fetch::Open(OpenFile {
        stat,
        reader: Box::new(Cursor::new(copy.bytes.as_slice())),
    })
}

/// A private metadata copy (in memory or spilled) as a file to send.
fn meta_fetch(copy: &MetaCopy) -> Fetch<'_> {
    let mut stat = wire_stat(copy.stat);
    stat.size = copy.len();
    Fetch::Open(OpenFile {
        stat,
        reader: Box::new(copy.reader()),
    })
}

fn owned_fetch(stat: spool::FileStat, bytes: Vec<u8>) -> Fetch<'static> {
    let mut stat = wire_stat(stat);
    stat.size = bytes.len() as u64;
    Fetch::Open(OpenFile {
        stat,
        reader: Box::new(Cursor::new(bytes)),
    })
}

impl Spool for CyrusSpool {
    fn partitions(&self) -> Result<PartitionMap> {
        use std::os::unix::fs::MetadataExt;
        let conf = self.spool.conf();
        let parts = conf.partitions();
        let mut map = PartitionMap::default();
        for (name, path) in &parts {
            let md = std::fs::metadata(path).at("stat of partition", path)?;
            map.partitions.push((
                name.clone().into_bytes(),
                path.as_os_str().as_encoded_bytes().to_vec(),
                md.dev(),
            ));
        }
        let default = conf
            .defaultpartition()
            .or_else(|| parts.keys().next().cloned())
            .unwrap_or_default();
        // The same users `USERS` lists; an INBOX without a partition is on the default.
        self.spool.each_user_inbox(|u, e| {
            let part = e.partition.as_deref().unwrap_or(&default);
            map.users.push((u.into_bytes(), part.as_bytes().to_vec()));
        })?;
        Ok(map)
    }

    fn users(&self) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .spool
            .users()?
            .into_iter()
            .map(String::into_bytes)
            .collect())
    }

    fn user_file_stat(&self, user: &[u8], which: UserFile) -> Result<Option<FileStat>> {
        let user = Self::user(user)?;
        let files = self.spool.user_files(user, &*self.list(user)?)?;
        let f = match which {
            UserFile::Seen => files.seen,
            UserFile::Sub => files.sub,
            // Synthetic: never listed.
            UserFile::Quota => None,
        };
        Ok(f.map(|f| wire_stat(f.stat)))
    }

    fn open_user_file(&self, user: &[u8], which: UserFile) -> Result<Fetch<'_>> {
        let user = Self::user(user)?;
        let ml = self.list(user)?;
        if which == UserFile::Quota {
            let bytes = self.spool.user_quota(user, &ml)?;
            if bytes.is_empty() {
                return Ok(Fetch::Missing);
            }
            // Like `mailbox_annotations`: mtime 0, inode from the content's SHA-1.
            let sha: [u8; 20] = <sha1::Sha1 as sha1::Digest>::digest(&bytes).into();
            let stat = spool::FileStat {
                size: bytes.len() as u64,
                mtime: 0,
                inode: crate::protocol::reply::synthetic_ino(&sha),
            };
            return Ok(owned_fetch(stat, bytes));
        }
        let files = self.spool.user_files(user, &ml)?;
        let copy = self.spool.read_user_files(user, &files)?;
        let c = match which {
            UserFile::Seen => copy.seen,
            UserFile::Sub => copy.sub,
            UserFile::Quota => None,
        };
        Ok(match c {
            Some(c) => owned_fetch(c.stat, c.bytes),
            None => Fetch::Missing,
        })
    }

    fn folders(&self, user: &[u8]) -> Result<Vec<FolderEntry>> {
        let user = Self::user(user)?;
        let folders = self.spool.folders(&*self.list(user)?, user);
        let refs: Vec<&spool::FolderRef> = folders.iter().collect();
        let annots = self.spool.folder_annotations(&refs)?;
        let mut out = Vec::new();
        for (f, annots) in folders.iter().zip(annots) {
            let st = self.spool.stat_meta(f)?;
            out.push(FolderEntry {
                name: f.external.clone().into_bytes(),
                uniqueid: f.uniqueid().as_bytes().to_vec(),
                // Cyrus 3.13's JMAP id (upstream sends mbentry->jmapid); empty before.
                jmapid: f.entry.jmapid.clone().unwrap_or_default().into_bytes(),
                header: st.header.map(wire_stat),
                index: st.index.map(wire_stat),
                annotations: st.annotations.map(wire_stat),
                mailbox_annotations: self.spool.mailbox_annotations(f, &annots),
                deleted: match (&f.entry.deleted, &f.original) {
                    (Some(d), Some(original)) => Some(DeletedAs {
                        time: d.timestamp,
                        original: original.clone().into_bytes(),
                        internal: f.entry.name.clone().into_bytes(),
                    }),
                    _ => None,
                },
            });
        }
        Ok(out)
    }

    fn shared(&self) -> Result<Vec<SharedEntry>> {
        Ok(self
            .spool
            .shared()?
            .into_iter()
            .map(|h| SharedEntry {
                owner: h.owner.into_bytes(),
                uniqueid: h.uniqueid.into_bytes(),
                partition: h.partition.unwrap_or_default().into_bytes(),
            })
            .collect())
    }

    fn open_folder(&self, user: &[u8], folder: &[u8], want: Want<'_>) -> Result<FolderOpen<'_>> {
        let user = Self::user(user)?;
        let missing = || FolderOpen::Missing {
            intname: self
                .spool
                .internal_name(user, &String::from_utf8_lossy(folder))
                .unwrap_or_default()
                .into_bytes(),
        };
        let Ok(external) = std::str::from_utf8(folder) else {
            return Ok(missing());
        };
        let Some(fref) = self
            .spool
            .resolve_folder(&*self.list(user)?, user, external)
        else {
            return Ok(missing());
        };
        // FDATA needs no annotations: annotations.db is not even opened for it.
        let (load, mailbox_annotations) = match want {
            Want::Messages(uids) => (Load::Messages(uids), None),
            Want::Meta => {
                let annots = self.spool.folder_annotations(&[&fref])?;
                let json = annots
                    .first()
                    .and_then(|a| self.spool.mailbox_annotations(&fref, a));
                (Load::Meta, json)
            }
        };
        let open = match self.spool.open_folder_for(&fref, load) {
            Ok(o) => o,
            Err(SpoolError::NotFound { .. }) => return Ok(missing()),
            Err(e) => return Err(e.into()),
        };
        Ok(FolderOpen::Open(Box::new(CyrusFolder {
            uniqueid: fref.uniqueid().as_bytes().to_vec(),
            jmapid: fref.entry.jmapid.clone().unwrap_or_default().into_bytes(),
            hold: open.hold_time(),
            open: Some(open),
            mailbox_annotations,
            files: RefCell::new(HashMap::new()),
            lazy: RefCell::new(false),
            fd_budget: self.fd_budget,
        })))
    }

    fn user_file_stats(&self, user: &[u8]) -> Result<Vec<(Vec<u8>, FileStat)>> {
        let user = Self::user(user)?;
        // The owner's entries (its INBOX says where the files are), as SNAPSHOT and
        // FDATA read them: never the whole mailboxes.db, which cost an unchanged user
        // 1.3 s of CPU and ~360 MB on a server of 200,000 mailboxes (issue 10).
        let files = self.spool.user_files(user, &*self.list(user)?)?;
        let mut out = Vec::new();
        for (name, f) in [(&b"seen"[..], &files.seen), (b"sub", &files.sub)] {
            if let Some(f) = f {
                out.push((name.to_vec(), wire_stat(f.stat)));
            }
        }
        if let Some(dir) = &files.sieve_dir {
            for (name, st) in spool::sieve_stats(dir)? {
                out.push((format!("sieve/{name}").into_bytes(), wire_stat(st)));
            }
        }
        Ok(out)
    }

    fn sieve_scripts(&self, user: &[u8]) -> Result<Vec<Vec<u8>>> {
        let user = Self::user(user)?;
        let files = self.spool.user_files(user, &*self.list(user)?)?;
        let copy = self.spool.read_user_files(user, &files)?;
        Ok(copy
            .sieve
            .into_iter()
            .map(|s| s.name.into_bytes())
            .collect())
    }

    fn open_sieve(&self, user: &[u8], name: &[u8]) -> Result<Fetch<'_>> {
        let user = Self::user(user)?;
        let files = self.spool.user_files(user, &*self.list(user)?)?;
        let copy = self.spool.read_user_files(user, &files)?;
        Ok(
            match copy.sieve.into_iter().find(|s| s.name.as_bytes() == name) {
                Some(s) => owned_fetch(s.copy.stat, s.copy.bytes),
                None => Fetch::Missing,
            },
        )
    }
}

/// One metadata file of an open folder.
enum Meta<'a> {
    Bytes(&'a FileCopy),
    Copy(&'a MetaCopy),
}

/// One open folder: metadata copies in memory, message descriptors opened on demand.
struct CyrusFolder<'a> {
    uniqueid: Vec<u8>,
    /// The JMAP id (Cyrus 3.13 on; empty before).
    jmapid: Vec<u8>,
    /// How long the namespace and index locks were held while copying.
    hold: Duration,
    /// Holds the shared name lock until released.
    open: Option<OpenFolder<'a>>,
    mailbox_annotations: Option<Vec<u8>>,
    /// Message files opened while resolving UIDs, by path.
    files: RefCell<HashMap<PathBuf, Result<MessageFile>>>,
    /// More files were asked for than the budget: the name lock stays held.
    lazy: RefCell<bool>,
    fd_budget: usize,
}

impl CyrusFolder<'_> {
    fn meta(&self, file: MetaFile) -> Option<Meta<'_>> {
        let open = self.open.as_ref()?;
        match file {
            MetaFile::Header => Some(Meta::Bytes(open.header_file())),
            MetaFile::Index => open.index_file().map(Meta::Copy),
            MetaFile::Annotations => open.annotations_file().map(Meta::Copy),
        }
    }

    fn open_uid(&self, uid: u32) -> Option<(PathBuf, Result<MessageFile>)> {
        let open = self.open.as_ref()?;
        let (_, res) = open.open_messages(&[uid]).into_iter().next()?;
        match res {
            Ok(m) => Some((m.path.clone(), Ok(m))),
            Err(SpoolError::NotFound { .. }) => None,
            Err(e) => {
                // The record exists but its file could not be opened: remember the
                // failure under the path the record names.
                let path = open
                    .record(uid)
                    .and_then(|_| open.folder().paths.as_ref())
                    .map(|p| crate::cyrus::paths::message_path(&p.data_dir, uid))?;
                Some((path, Err(e.into())))
            }
        }
    }
}

impl Folder for CyrusFolder<'_> {
    fn uniqueid(&self) -> &[u8] {
        &self.uniqueid
    }

    fn jmapid(&self) -> &[u8] {
        &self.jmapid
    }

    fn meta_stat(&self, file: MetaFile) -> Option<FileStat> {
        self.meta(file).map(|m| match m {
            Meta::Bytes(c) => wire_stat(c.stat),
            Meta::Copy(c) => wire_stat(c.stat),
        })
    }

    fn open_meta(&self, file: MetaFile) -> Fetch<'_> {
        match self.meta(file) {
            Some(Meta::Bytes(c)) => copy_fetch(c),
            Some(Meta::Copy(c)) => meta_fetch(c),
            None => Fetch::Missing,
        }
    }

    fn detached(&self) -> bool {
        true
    }

    fn mailbox_annotations(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.mailbox_annotations.clone())
    }

    fn message_file(&self, uid: u32) -> Option<PathBuf> {
        if self.files.borrow().len() >= self.fd_budget {
            // Over budget: resolve the path now, open after the index phase.
            *self.lazy.borrow_mut() = true;
            let open = self.open.as_ref()?;
            let rec = open.record(uid).filter(|r| !r.is_unlinked())?;
            let paths = open.folder().paths.as_ref()?;
            let dir = if rec.is_archived() {
                &paths.archive_dir
            } else {
                &paths.data_dir
            };
            return Some(crate::cyrus::paths::message_path(dir, uid));
        }
        let (path, res) = self.open_uid(uid)?;
        self.files.borrow_mut().insert(path.clone(), res);
        Some(path)
    }

    fn unlock_index(&mut self) {
        // The namespace and index locks were dropped inside open_folder. Once every
        // message file is open, the name lock can go too: streaming needs no lock,
        // and the metadata copies are private.
        if !*self.lazy.borrow()
            && let Some(open) = self.open.as_mut()
        {
            open.release_locks();
        }
    }

    fn open_message(&self, path: &Path) -> Fetch<'_> {
        let taken = self.files.borrow_mut().remove(path);
        let res = match taken {
            Some(r) => r,
            None => {
                // Lazily opened (over budget): the name lock is still held.
                let uid = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix('.'))
                    .and_then(|n| n.parse::<u32>().ok());
                match uid.and_then(|u| self.open_uid(u)) {
                    Some((_, r)) => r,
                    None => return Fetch::Missing,
                }
            }
        };
        match res {
            Ok(m) => Fetch::Open(OpenFile {
                stat: wire_stat(m.stat),
                reader: Box::new(m.file),
            }),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Fetch::Missing
            }
            Err(Error::NotFound { .. }) => Fetch::Missing,
            Err(e) => {
                log::warn!(target: "cyrvault::service", "opening {}: {e}", path.display());
                Fetch::OpenFailed
            }
        }
    }

    fn lock_hold(&self) -> Option<Duration> {
        Some(self.hold)
    }
}
