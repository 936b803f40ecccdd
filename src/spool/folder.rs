//! Opening one mailbox consistently (reference §9.5, §14): user namespace lock
//! SHARED → mailbox name lock SHARED → `cyrus.index` SHARED (read-only), each
//! with the locker's timeout; under them `cyrus.header`, `cyrus.index`,
//! `cyrus.annotations` (its own twoskip shared lock) and optionally
//! `cyrus.cache` are copied into memory with their `fstat`; then the index and
//! namespace locks are dropped at once, as Cyrus's `mailbox_unlock_index` does.
//! The copies are validated after the release: they are private bytes, so
//! parsing them outside the lock gives the same answer and keeps Cyrus's
//! writers waiting only for the copy.
//!
//! The [`OpenFolder`] keeps only the shared name lock, which is what keeps Cyrus
//! from repacking the index or unlinking message files (§9.2). Under it,
//! [`OpenFolder::open_messages`] opens and `fstat`s the message files; after
//! [`OpenFolder::release`] the open descriptors stay readable even if Cyrus
//! unlinks the files, because message files are immutable and an open
//! descriptor keeps the inode alive. So streaming needs no lock at all.
#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::copy::{self, FileCopy, FileStat};
use super::error::{Damage, MailboxError};
use super::{FolderRef, Spool};
use crate::cyrus::annotations::{self, Annotation, AnnotationDb};
use crate::cyrus::header::{self, MailboxHeader};
use crate::cyrus::index::{self, Index, IndexRecord};
use crate::cyrus::{ParseError, cache, crc32, paths, twoskip};
use crate::error::{Error, IoContext, Result};
use crate::lock::{LockMode, LockSet};

/// `OPT_MAILBOX_DELETED` in the index `options`: the mailbox is being deleted
/// and Cyrus treats it as non-existent.
const OPT_MAILBOX_DELETED: u32 = 0x8000_0000;

/// A validated in-memory snapshot of one mailbox's metadata, still holding the
/// shared mailbox name lock (nothing else).
#[derive(Debug)]
pub struct OpenFolder<'a> {
    locks: LockSet<'a>,
    folder: FolderRef,
    header_copy: FileCopy,
    index_copy: FileCopy,
    cache_copy: Option<FileCopy>,
    annotations_copy: Option<FileCopy>,
    index: Index,
    header: MailboxHeader,
    annotations: Vec<Annotation>,
    header_crc_mismatch: bool,
    hold: Duration,
}

/// An opened message file: the descriptor stays valid after every lock is gone.
#[derive(Debug)]
pub struct MessageFile {
    /// The UID.
    pub uid: u32,
    /// The path it was opened at (spool or archive).
    pub path: PathBuf,
    /// The open file (read-only).
    pub file: File,
    /// `fstat` of the descriptor.
    pub stat: FileStat,
    /// The index record (GUID, size, flags) from the snapshot.
    pub record: IndexRecord,
}

fn damaged(folder: &FolderRef, file: &std::path::Path, e: ParseError) -> Error {
    damage(folder, file, Damage::Parse(e))
}

fn damage(folder: &FolderRef, file: &std::path::Path, damage: Damage) -> Error {
    Error::Mailbox(Box::new(MailboxError {
        user: folder.entry.userid.clone(),
        mailbox: folder.entry.name.clone(),
        file: file.to_path_buf(),
        damage,
    }))
}

fn not_found(folder: &FolderRef, why: &str) -> Error {
    Error::NotFound {
        what: "mailbox",
        name: format!("{} ({why})", folder.entry.name),
    }
}

/// What is copied under the index lock.
struct Copies {
    header: FileCopy,
    index: FileCopy,
    cache: Option<FileCopy>,
    annotations: Option<FileCopy>,
}

impl Spool {
    /// Open `folder` read-locked, copy and validate its metadata, and drop the
    /// index and namespace locks before returning (see the module docs). A lock
    /// that stays taken past the timeout fails with a `LockError` (temporary); a
    /// damaged file with [`MailboxError`]; a deleted or half-created mailbox with
    /// `NotFound`.
    pub fn open_folder(&self, folder: &FolderRef, want_cache: bool) -> Result<OpenFolder<'_>> {
        let paths = folder
            .paths
            .as_ref()
            .ok_or_else(|| not_found(folder, "its files cannot be located"))?;
        if !folder.entry.mbtype.is_openable() {
            return Err(not_found(folder, "not a local mailbox"));
        }
        let mut locks = self.locker.lock_set();
        let mut started = None;
        if let Some(user) = &folder.entry.userid {
            locks.namespace(user, LockMode::Shared)?;
            started = Some(Instant::now());
        }
        locks.mailbox_name(&paths.lockname, LockMode::Shared)?;
        let started = started.unwrap_or_else(Instant::now);
        if let Err(e) = locks.index(&paths.index, LockMode::Shared) {
            if !paths.index.exists() {
                return Err(not_found(folder, "no cyrus.index"));
            }
            return Err(e);
        }
        let copied = self.copy_locked(&locks, folder, want_cache);
        locks.release_index();
        locks.release_namespace();
        let hold = started.elapsed();
        let c = copied?;
        log::debug!(target: "spool", "{}: index and namespace locks held {hold:?}", folder.entry.name);

        let index =
            index::parse_index(&c.index.bytes).map_err(|e| damaged(folder, &paths.index, e))?;
        if index.header.options & OPT_MAILBOX_DELETED != 0 {
            return Err(not_found(folder, "being deleted"));
        }
        let header =
            header::parse_header(&c.header.bytes).map_err(|e| damaged(folder, &paths.header, e))?;
        if header.uniqueid != folder.entry.uniqueid {
            return Err(damage(
                folder,
                &paths.header,
                Damage::UniqueidMismatch {
                    header: header.uniqueid.clone(),
                    mboxlist: folder.entry.uniqueid.clone(),
                },
            ));
        }
        // Cyrus only logs a mismatch (mailbox_lock_index_internal); so do we.
        let stored = index.header.header_file_crc;
        let header_crc_mismatch = stored != 0 && stored != crc32(&c.header.bytes);
        if header_crc_mismatch {
            log::warn!(target: "spool", "{}: header_file_crc {stored:08x} does not match {}",
                folder.entry.name, paths.header.display());
        }
        if let Some(cc) = &c.cache {
            self.check_cache(folder, &index, cc)?;
        }
        let annotations = match &c.annotations {
            Some(a) => twoskip::read_all(&a.bytes)
                .and_then(|r| annotations::parse_annotations(&r, AnnotationDb::Mailbox))
                .map_err(|e| damaged(folder, &a.path, e))?,
            None => Vec::new(),
        };
        Ok(OpenFolder {
            locks,
            folder: folder.clone(),
            header_copy: c.header,
            index_copy: c.index,
            cache_copy: c.cache,
            annotations_copy: c.annotations,
            index,
            header,
            annotations,
            header_crc_mismatch,
            hold,
        })
    }

    /// Copy the metadata files while `locks` holds the index lock.
    fn copy_locked(
        &self,
        locks: &LockSet<'_>,
        folder: &FolderRef,
        want_cache: bool,
    ) -> Result<Copies> {
        let p = folder
            .paths
            .as_ref()
            .ok_or_else(|| not_found(folder, "no paths"))?;
        let lock = locks
            .index_lock()
            .ok_or_else(|| Error::Other(format!("{}: index lock not held", folder.entry.name)))?;
        let index = FileCopy {
            path: p.index.clone(),
            stat: FileStat::of(&lock.file().metadata().at("fstat", &p.index)?),
            bytes: copy::read_all(lock.file(), &p.index)?,
        };
        let header = copy::read_file(&p.header)?.ok_or_else(|| {
            Error::io(
                "opening",
                &p.header,
                io::Error::from(io::ErrorKind::NotFound),
            )
        })?;
        let cache = if want_cache {
            copy::read_file(&p.cache)?
        } else {
            None
        };
        let annotations = copy::copy_twoskip(&self.locker, &p.annotations)?;
        Ok(Copies {
            header,
            index,
            cache,
            annotations,
        })
    }

    /// The cache generation must be the index's, and every record's entry must
    /// parse with its CRC. Archived records keep theirs in the archive cache
    /// when archiving is on, so they are not checked against this file.
    fn check_cache(&self, folder: &FolderRef, index: &Index, c: &FileCopy) -> Result<()> {
        let gen_ =
            cache::parse_cache_generation(&c.bytes).map_err(|e| damaged(folder, &c.path, e))?;
        if gen_ != index.header.generation_no {
            return Err(damage(
                folder,
                &c.path,
                Damage::CacheGeneration {
                    cache: gen_,
                    index: index.header.generation_no,
                },
            ));
        }
        let archive = self.conf.archive_enabled();
        for r in &index.records {
            if r.cache_offset == 0 || (archive && r.is_archived()) {
                continue;
            }
            cache::check_record(&c.bytes, r).map_err(|e| damaged(folder, &c.path, e))?;
        }
        Ok(())
    }
}

impl OpenFolder<'_> {
    /// The folder.
    pub fn folder(&self) -> &FolderRef {
        &self.folder
    }

    /// The parsed `cyrus.index` (header and records, CRCs checked).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The parsed `cyrus.header`.
    pub fn header(&self) -> &MailboxHeader {
        &self.header
    }

    /// `cyrus.header` bytes and `fstat`.
    pub fn header_file(&self) -> &FileCopy {
        &self.header_copy
    }

    /// `cyrus.index` bytes and `fstat` (the whole file as it was under the lock).
    pub fn index_file(&self) -> &FileCopy {
        &self.index_copy
    }

    /// `cyrus.cache` bytes and `fstat`, if asked for and present.
    pub fn cache_file(&self) -> Option<&FileCopy> {
        self.cache_copy.as_ref()
    }

    /// `cyrus.annotations` bytes (`[0, current_size)`) and `fstat`, if present.
    pub fn annotations_file(&self) -> Option<&FileCopy> {
        self.annotations_copy.as_ref()
    }

    /// The per-message annotations.
    pub fn annotations(&self) -> &[Annotation] {
        &self.annotations
    }

    /// Whether the index's `header_file_crc` disagreed with `cyrus.header`
    /// (Cyrus logs this and goes on; so do we).
    pub fn header_crc_mismatch(&self) -> bool {
        self.header_crc_mismatch
    }

    /// How long the namespace and index locks were held (first lock taken →
    /// both released).
    pub fn hold_time(&self) -> Duration {
        self.hold
    }

    /// How long the remaining name lock has been held.
    pub fn name_lock_held_for(&self) -> Duration {
        self.locks
            .name_lock()
            .map(|l| l.held_for())
            .unwrap_or_default()
    }

    /// Open the message file of each UID, in the order given: the record is
    /// looked up in the snapshot (none → `NotFound`), an UNLINKED record is
    /// `NotFound` too, ARCHIVED records are opened under the archive directory.
    /// A file that is gone is reported for its UID; the others go on.
    pub fn open_messages(&self, uids: &[u32]) -> Vec<(u32, Result<MessageFile>)> {
        uids.iter().map(|&u| (u, self.open_message(u))).collect()
    }

    fn open_message(&self, uid: u32) -> Result<MessageFile> {
        let name = &self.folder.entry.name;
        let missing = |why: &str| Error::NotFound {
            what: "message",
            name: format!("uid {uid} in {name} ({why})"),
        };
        let recs = &self.index.records;
        let record = recs
            .binary_search_by_key(&uid, |r| r.uid)
            .ok()
            .and_then(|i| recs.get(i))
            .ok_or_else(|| missing("no index record"))?;
        if record.is_unlinked() {
            return Err(missing("expunged and unlinked"));
        }
        let p = self
            .folder
            .paths
            .as_ref()
            .ok_or_else(|| missing("no paths"))?;
        let dir = if record.is_archived() {
            &p.archive_dir
        } else {
            &p.data_dir
        };
        let path = paths::message_path(dir, uid);
        // Message files are never symlinks; O_NOFOLLOW keeps a planted one from
        // making us read something else.
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(missing("file vanished"));
            }
            Err(e) => return Err(Error::io("opening", &path, e)),
        };
        let stat = FileStat::of(&file.metadata().at("fstat", &path)?);
        Ok(MessageFile {
            uid,
            path,
            file,
            stat,
            record: record.clone(),
        })
    }

    /// Drop the name lock. Files opened by [`OpenFolder::open_messages`] stay
    /// readable.
    pub fn release(mut self) {
        self.locks.release_all();
    }
}
