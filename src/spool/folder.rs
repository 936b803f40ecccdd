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
//! What is loaded depends on the request ([`Load`]), so that neither memory nor
//! time grows with the folder where the request does not need it:
//!
//! * [`Load::All`]: every index record parsed, the per-message annotations
//!   parsed, optionally `cyrus.cache` (inspection and tests).
//! * [`Load::Meta`] (`FMETA`, `SNAPSHOT`): private copies of `cyrus.header`,
//!   `cyrus.index` and `cyrus.annotations`, a file above `SPILL_AT` (4 MiB) going
//!   to an unlinked temporary file instead of memory; the index and the
//!   annotations are validated by a streaming pass (every record CRC, UID order)
//!   that keeps nothing.
//! * [`Load::Messages`] (`FDATA`): no copies at all; under the index lock only
//!   the index header and the records of the UIDs asked for are read, found by
//!   binary search (records are fixed-size and in UID order) and read in
//!   windows: O(batch), not O(folder), per request.
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
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::copy::{self, FileCopy, FileStat, MetaCopy};
use super::db::FileSource;
use super::error::{Damage, MailboxError, Result, SpoolError};
use super::records::{ReadError, check_index, select_records};
use super::{FolderRef, Spool};
use crate::cyrus::annotations::{self, Annotation, AnnotationDb};
use crate::cyrus::header::{self, MailboxHeader};
use crate::cyrus::index::{self, Index, IndexHeader, IndexRecord};
use crate::cyrus::twoskip::{HEADER_SIZE, Twoskip, parse_twoskip_header};
use crate::cyrus::{ParseError, cache, crc32, paths, twoskip};
use crate::io_error::IoContext;
use crate::lock::{LockMode, LockSet};

/// `OPT_MAILBOX_DELETED` in the index `options`: the mailbox is being deleted
/// and Cyrus treats it as non-existent.
const OPT_MAILBOX_DELETED: u32 = 0x8000_0000;

/// What [`Spool::open_folder_for`] loads (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load<'u> {
    /// Every record and annotation parsed; `cyrus.cache` too if `cache`.
    All {
        /// Copy and check `cyrus.cache`.
        cache: bool,
    },
    /// Private copies of the metadata files, validated, no records kept.
    Meta,
    /// Only the index records of these UIDs; no copies, no annotations.
    Messages(&'u [u32]),
}

/// A validated snapshot of one mailbox's metadata (what [`Load`] asked for),
/// still holding the shared mailbox name lock (nothing else) until
/// [`OpenFolder::release`] or [`OpenFolder::release_locks`].
#[derive(Debug)]
pub struct OpenFolder<'a> {
    locks: LockSet<'a>,
    folder: FolderRef,
    header_copy: FileCopy,
    index_copy: Option<MetaCopy>,
    cache_copy: Option<FileCopy>,
    annotations_copy: Option<MetaCopy>,
    index_header: IndexHeader,
    /// In UID order: all records ([`Load::All`]), those of the UIDs asked for
    /// ([`Load::Messages`]), or none ([`Load::Meta`]).
    records: Vec<IndexRecord>,
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

fn damaged(folder: &FolderRef, file: &std::path::Path, e: ParseError) -> SpoolError {
    damage(folder, file, Damage::Parse(e))
}

fn damage(folder: &FolderRef, file: &std::path::Path, damage: Damage) -> SpoolError {
    SpoolError::Mailbox(Box::new(MailboxError {
        user: folder.entry.userid.clone(),
        mailbox: folder.entry.name.clone(),
        file: file.to_path_buf(),
        damage,
    }))
}

fn not_found(folder: &FolderRef, why: &str) -> SpoolError {
    SpoolError::NotFound {
        what: "mailbox",
        name: format!("{} ({why})", folder.entry.name),
    }
}

/// What is read under the index lock.
struct Copies {
    header: FileCopy,
    index: Option<MetaCopy>,
    cache: Option<FileCopy>,
    annotations: Option<MetaCopy>,
    /// [`Load::Messages`]: the index header and the records found.
    selected: Option<(IndexHeader, Vec<IndexRecord>)>,
}

impl Spool {
    /// [`Spool::open_folder_for`] with [`Load::All`]: everything parsed.
    pub fn open_folder(&self, folder: &FolderRef, want_cache: bool) -> Result<OpenFolder<'_>> {
        self.open_folder_for(folder, Load::All { cache: want_cache })
    }

    /// Open `folder` read-locked, read and validate what `load` asks for, and
    /// drop the index and namespace locks before returning (see the module
    /// docs). A lock that stays taken past the timeout fails with a `LockError`
    /// (temporary); a damaged file with [`MailboxError`]; a deleted or
    /// half-created mailbox with `NotFound`.
    pub fn open_folder_for(&self, folder: &FolderRef, load: Load<'_>) -> Result<OpenFolder<'_>> {
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
            return Err(e.into());
        }
        let copied = self.copy_locked(&locks, folder, load);
        locks.release_index();
        locks.release_namespace();
        let hold = started.elapsed();
        let c = copied?;
        log::debug!(target: "spool", "{}: index and namespace locks held {hold:?}", folder.entry.name);

        let (index_header, records) = match (&c.selected, &c.index) {
            (Some((h, recs)), _) => (h.clone(), recs.clone()),
            (None, Some(copy)) => match (load, copy.bytes()) {
                (Load::All { .. }, Some(bytes)) => {
                    let Index { header, records } =
                        index::parse_index(bytes).map_err(|e| damaged(folder, &paths.index, e))?;
                    (header, records)
                }
                _ => (
                    check_index(copy).map_err(|e| damaged(folder, &paths.index, e))?,
                    Vec::new(),
                ),
            },
            (None, None) => return Err(not_found(folder, "no cyrus.index")),
        };
        if index_header.options & OPT_MAILBOX_DELETED != 0 {
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
        let stored = index_header.header_file_crc;
        let header_crc_mismatch = stored != 0 && stored != crc32(&c.header.bytes);
        if header_crc_mismatch {
            log::warn!(target: "spool", "{}: header_file_crc {stored:08x} does not match {}",
                folder.entry.name, paths.header.display());
        }
        if let Some(cc) = &c.cache {
            self.check_cache(folder, index_header.generation_no, &records, cc)?;
        }
        let annotations = match &c.annotations {
            Some(a) => check_annotations(a, matches!(load, Load::All { .. }))
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
            index_header,
            records,
            header,
            annotations,
            header_crc_mismatch,
            hold,
        })
    }

    /// Read what `load` wants while `locks` holds the index lock.
    fn copy_locked(
        &self,
        locks: &LockSet<'_>,
        folder: &FolderRef,
        load: Load<'_>,
    ) -> Result<Copies> {
        let p = folder
            .paths
            .as_ref()
            .ok_or_else(|| not_found(folder, "no paths"))?;
        let lock = locks.index_lock().ok_or_else(|| {
            SpoolError::Other(format!("{}: index lock not held", folder.entry.name))
        })?;
        let stat = FileStat::of(&lock.file().metadata().at("fstat", &p.index)?);
        let header = copy::read_file(&p.header)?.ok_or_else(|| {
            SpoolError::io(
                "opening",
                &p.header,
                io::Error::from(io::ErrorKind::NotFound),
            )
        })?;
        if let Load::Messages(uids) = load {
            let selected = select_records(lock.file(), stat.size, uids).map_err(|e| match e {
                ReadError::Io(e) => SpoolError::io("reading", &p.index, e),
                ReadError::Parse(e) => damaged(folder, &p.index, e),
            })?;
            return Ok(Copies {
                header,
                index: None,
                cache: None,
                annotations: None,
                selected: Some(selected),
            });
        }
        let temp = self.temp_dir();
        let index = match load {
            // Parsed whole: in memory.
            Load::All { .. } => MetaCopy::from_bytes(FileCopy {
                path: p.index.clone(),
                stat,
                bytes: copy::read_all(lock.file(), &p.index)?,
            }),
            _ => MetaCopy::take(
                lock.file(),
                &p.index,
                stat,
                stat.size,
                (&temp, self.spill_at),
            )?,
        };
        let cache = match load {
            Load::All { cache: true } => copy::read_file(&p.cache)?,
            _ => None,
        };
        let annotations = self.copy_annotations(&p.annotations, &temp)?;
        Ok(Copies {
            header,
            index: Some(index),
            cache,
            annotations,
            selected: None,
        })
    }

    /// `cyrus.annotations` (twoskip): its own shared lock with the inode
    /// re-check, bytes `[0, current_size)`; None if it does not exist.
    fn copy_annotations(&self, path: &Path, temp: &Path) -> Result<Option<MetaCopy>> {
        if FileStat::stat(path)?.is_none() {
            return Ok(None);
        }
        let lock = self.locker.file(path, LockMode::Shared, true)?;
        let f = lock.file();
        let stat = FileStat::of(&f.metadata().at("fstat", path)?);
        let mut head = [0u8; HEADER_SIZE];
        f.read_exact_at(&mut head, 0)
            .at("reading the header of", path)?;
        let h = parse_twoskip_header(&head).map_err(|e| SpoolError::parse(path, e))?;
        if h.current_size > stat.size || h.current_size < HEADER_SIZE as u64 {
            return Err(SpoolError::parse(
                path,
                ParseError::new(
                    "twoskip header",
                    48,
                    crate::cyrus::ParseErrorKind::BadSize {
                        field: "current_size",
                        found: h.current_size,
                        expected: stat.size,
                    },
                ),
            ));
        }
        Ok(Some(MetaCopy::take(
            f,
            path,
            stat,
            h.current_size,
            (temp, self.spill_at),
        )?))
    }

    /// The cache generation must be the index's, and every record's entry must
    /// parse with its CRC. Archived records keep theirs in the archive cache
    /// when archiving is on, so they are not checked against this file.
    fn check_cache(
        &self,
        folder: &FolderRef,
        generation: u32,
        records: &[IndexRecord],
        c: &FileCopy,
    ) -> Result<()> {
        let gen_ =
            cache::parse_cache_generation(&c.bytes).map_err(|e| damaged(folder, &c.path, e))?;
        if gen_ != generation {
            return Err(damage(
                folder,
                &c.path,
                Damage::CacheGeneration {
                    cache: gen_,
                    index: generation,
                },
            ));
        }
        let archive = self.conf.archive_enabled();
        for r in records {
            if r.cache_offset == 0 || (archive && r.is_archived()) {
                continue;
            }
            cache::check_record(&c.bytes, r).map_err(|e| damaged(folder, &c.path, e))?;
        }
        Ok(())
    }

    /// Where spilled copies go: Cyrus's `temp_path`.
    fn temp_dir(&self) -> PathBuf {
        PathBuf::from(self.conf.get("temp_path").unwrap_or("/tmp"))
    }
}

/// Walk a copy of `cyrus.annotations` (twoskip) and check every record; keep
/// them only if `keep`.
fn check_annotations(
    copy: &MetaCopy,
    keep: bool,
) -> std::result::Result<Vec<Annotation>, ParseError> {
    let mut out = Vec::new();
    let mut each = |k: &[u8], v: &[u8]| -> std::result::Result<(), ParseError> {
        let mut a =
            annotations::parse_annotations(&[(k.to_vec(), v.to_vec())], AnnotationDb::Mailbox)?;
        if keep {
            out.append(&mut a);
        }
        Ok(())
    };
    match copy.bytes() {
        Some(bytes) => {
            for (k, v) in twoskip::read_all(bytes)? {
                each(&k, &v)?;
            }
        }
        None => {
            // Spilled: walk the temporary file in place, as the live one would be.
            let Some(file) = copy.spilled_file() else {
                return Ok(out);
            };
            let mut db = Twoskip::open(FileSource::new(file), copy.len()).map_err(db_err)?;
            let num = db.header().num_records;
            let mut count = 0u64;
            let mut failed = None;
            db.walk_from(b"", |k, v| {
                count += 1;
                match each(k, v) {
                    Ok(()) => Ok(true),
                    Err(e) => {
                        failed = Some(e);
                        Ok(false)
                    }
                }
            })
            .map_err(db_err)?;
            if let Some(e) = failed {
                return Err(e);
            }
            if count != num {
                return Err(ParseError::new(
                    "twoskip header",
                    32,
                    crate::cyrus::ParseErrorKind::BadSize {
                        field: "num_records",
                        found: num,
                        expected: count,
                    },
                ));
            }
        }
    }
    Ok(out)
}

fn db_err(e: super::db::DbError) -> ParseError {
    match e {
        super::db::DbError::Parse(p) => p,
        super::db::DbError::Io(e) => {
            ParseError::invalid("cyrus.annotations copy", 0, e.to_string())
        }
    }
}

impl OpenFolder<'_> {
    /// The folder.
    pub fn folder(&self) -> &FolderRef {
        &self.folder
    }

    /// The parsed `cyrus.index` header (CRC checked).
    pub fn index_header(&self) -> &IndexHeader {
        &self.index_header
    }

    /// The index records loaded, in UID order: all of them ([`Load::All`]), the
    /// ones of the UIDs asked for ([`Load::Messages`]), none ([`Load::Meta`]).
    pub fn records(&self) -> &[IndexRecord] {
        &self.records
    }

    /// The parsed `cyrus.header`.
    pub fn header(&self) -> &MailboxHeader {
        &self.header
    }

    /// `cyrus.header` bytes and `fstat`.
    pub fn header_file(&self) -> &FileCopy {
        &self.header_copy
    }

    /// `cyrus.index` as it was under the lock (the whole file), unless only
    /// records were loaded ([`Load::Messages`]).
    pub fn index_file(&self) -> Option<&MetaCopy> {
        self.index_copy.as_ref()
    }

    /// `cyrus.cache` bytes and `fstat`, if asked for and present.
    pub fn cache_file(&self) -> Option<&FileCopy> {
        self.cache_copy.as_ref()
    }

    /// `cyrus.annotations` (`[0, current_size)`) and `fstat`, if present and
    /// loaded.
    pub fn annotations_file(&self) -> Option<&MetaCopy> {
        self.annotations_copy.as_ref()
    }

    /// The per-message annotations ([`Load::All`] only).
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

    /// The loaded record of `uid`.
    pub fn record(&self, uid: u32) -> Option<&IndexRecord> {
        let recs = &self.records;
        recs.binary_search_by_key(&uid, |r| r.uid)
            .ok()
            .and_then(|i| recs.get(i))
    }

    fn open_message(&self, uid: u32) -> Result<MessageFile> {
        let name = &self.folder.entry.name;
        let missing = |why: &str| SpoolError::NotFound {
            what: "message",
            name: format!("uid {uid} in {name} ({why})"),
        };
        let record = self.record(uid).ok_or_else(|| missing("no index record"))?;
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
            Err(e) => return Err(SpoolError::io("opening", &path, e)),
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

    /// Drop the name lock, keeping the snapshot: the copies stay readable (they
    /// are private), and so do files opened by [`OpenFolder::open_messages`].
    pub fn release_locks(&mut self) {
        self.locks.release_all();
    }

    /// Drop the name lock and the snapshot. Files opened by
    /// [`OpenFolder::open_messages`] stay readable.
    pub fn release(mut self) {
        self.locks.release_all();
    }
}
