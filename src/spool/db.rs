//! twoskip databases read in place (`mailboxes.db`, `annotations.db`), the way a
//! Cyrus reader does it (reference §8.6, §9.6): take the file's shared fcntl
//! lock with the reopen-if-replaced check (a checkpoint renames a new file into
//! place), read the header, look up or walk the keys wanted with `pread`, and
//! release. Nothing past the header's `current_size` is read, and nothing else
//! of the file is: a user's lookup costs O(log n) record reads, whatever the
//! server holds.
//!
//! While the shared lock is held no writer can change the file (every Cyrus
//! writer, checkpoints included, takes it exclusively), so what is read under
//! one lock is one committed state. [`DbState`] names that state (device, inode
//! and the 64 header bytes: generation, `num_records`, `current_size`, CRC): a
//! commit always grows `current_size`, and a checkpoint writes a new file with
//! the next generation, so an equal state means equal contents. Caches above
//! this module key on it.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::copy::FileStat;
use super::error::{Result, SpoolError};
use crate::cyrus::ParseError;
use crate::cyrus::twoskip::{HEADER_SIZE, KeyValue, Source, Twoskip};
use crate::lock::{LockMode, Locker};

/// What one `pread` fetches at a jump (a skiplist descent visits records all
/// over the file): enough for a record head and a typical mailboxes.db value.
const WINDOW_MIN: usize = 1024;
/// What it grows to while the reads go on where the last one ended (a level-0
/// walk: after a checkpoint records lie in key order).
const WINDOW_MAX: usize = 64 * 1024;

/// A file read with `pread` through one read-ahead window.
pub(crate) struct FileSource<'f> {
    file: &'f File,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    at: u64,
    /// Valid bytes in `buf`.
    len: usize,
    /// The next refill's size.
    window: usize,
    /// Where the bytes read from the file are counted, if anywhere.
    counter: Option<&'f AtomicU64>,
}

impl<'f> FileSource<'f> {
    pub(crate) fn new(file: &'f File) -> Self {
        FileSource {
            file,
            buf: Vec::new(),
            at: 0,
            len: 0,
            window: WINDOW_MIN,
            counter: None,
        }
    }

    /// Add every byte read from the file to `counter` (the spool's figures).
    pub(crate) fn counting(mut self, counter: &'f AtomicU64) -> Self {
        self.counter = Some(counter);
        self
    }
}

/// A read error: I/O, or the bytes are not a valid twoskip file.
#[derive(Debug)]
pub(crate) enum DbError {
    Io(io::Error),
    Parse(ParseError),
}

impl From<ParseError> for DbError {
    fn from(e: ParseError) -> Self {
        DbError::Parse(e)
    }
}

impl DbError {
    fn at(self, path: &Path) -> SpoolError {
        match self {
            DbError::Io(e) => SpoolError::io("reading", path, e),
            DbError::Parse(e) => SpoolError::parse(path, e),
        }
    }
}

impl Source for FileSource<'_> {
    type Error = DbError;

    fn read(&mut self, off: u64, len: usize) -> std::result::Result<&[u8], DbError> {
        let inside = off >= self.at
            && (off - self.at)
                .checked_add(len as u64)
                .is_some_and(|e| e <= self.len as u64);
        if !inside {
            // Reading on from the end of the window: a walk, read further ahead.
            let end = self.at + self.len as u64;
            self.window = if off >= end && off - end < WINDOW_MIN as u64 {
                (self.window * 2).min(WINDOW_MAX)
            } else {
                WINDOW_MIN
            };
            let want = len.max(self.window);
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
            let mut got = 0;
            while got < want {
                match self
                    .file
                    .read_at(&mut self.buf[got..want], off + got as u64)
                {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(DbError::Io(e)),
                }
            }
            self.at = off;
            self.len = got;
            if let Some(c) = self.counter {
                c.fetch_add(got as u64, Ordering::Relaxed);
            }
        }
        // Both fit: off >= at and off - at <= len (or the window was just refilled at off).
        let start = (off - self.at) as usize;
        let end = start.saturating_add(len).min(self.len);
        Ok(&self.buf[start.min(end)..end])
    }
}

/// One committed state of a twoskip file (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DbState {
    dev: u64,
    ino: u64,
    header: [u8; HEADER_SIZE],
}

/// A twoskip file under its shared lock, open for lookups. Errors name the file.
pub(crate) struct LockedDb<'f> {
    db: Twoskip<FileSource<'f>>,
    state: DbState,
    path: &'f Path,
}

/// Lock `path` shared (re-opening it if a checkpoint replaced it), open it as a
/// twoskip file, run `f`, release the lock; every byte read from the file is
/// added to `bytes_read`. None if the file does not exist.
pub(crate) fn with_db<T>(
    locker: &Locker,
    path: &Path,
    bytes_read: &AtomicU64,
    f: impl FnOnce(&mut LockedDb<'_>) -> Result<T>,
) -> Result<Option<T>> {
    if FileStat::stat(path)?.is_none() {
        return Ok(None);
    }
    let lock = locker.file(path, LockMode::Shared, true)?;
    let md = lock
        .file()
        .metadata()
        .map_err(|e| SpoolError::io("fstat", path, e))?;
    let mut src = FileSource::new(lock.file()).counting(bytes_read);
    let mut header = [0u8; HEADER_SIZE];
    let head = src.read(0, HEADER_SIZE).map_err(|e| e.at(path))?;
    if head.len() == HEADER_SIZE {
        header.copy_from_slice(head);
    }
    let db = Twoskip::open(src, md.size()).map_err(|e| e.at(path))?;
    let mut locked = LockedDb {
        db,
        state: DbState {
            dev: md.dev(),
            ino: md.ino(),
            header,
        },
        path,
    };
    let out = f(&mut locked)?;
    drop(locked);
    drop(lock);
    Ok(Some(out))
}

impl LockedDb<'_> {
    /// The committed state being read.
    pub(crate) fn state(&self) -> &DbState {
        &self.state
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        self.path
    }

    /// Whether a transaction was left open (a crash): such a state may change
    /// without its header changing (Cyrus's recovery), so nothing caches it.
    pub(crate) fn is_dirty(&self) -> bool {
        self.db.header().is_dirty()
    }

    /// The value under exactly `key`.
    pub(crate) fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get(key).map_err(|e| e.at(self.path))
    }

    /// Append every record whose key starts with `prefix` to `out`, in key order.
    pub(crate) fn prefix_into(&mut self, prefix: &[u8], out: &mut Vec<KeyValue>) -> Result<()> {
        self.db
            .prefix(prefix, |k, v| {
                out.push((k.to_vec(), v.to_vec()));
                Ok(true)
            })
            .map_err(|e| e.at(self.path))
    }

    /// Call `f` for every record from the first key >= `from` on, in key order,
    /// while `in_range(key)` holds (the value of the record that ends the range
    /// is not read).
    pub(crate) fn walk_range(
        &mut self,
        from: &[u8],
        in_range: impl FnMut(&[u8]) -> bool,
        mut f: impl FnMut(&[u8], &[u8]),
    ) -> Result<()> {
        self.db
            .walk_range(from, in_range, |k, v| {
                f(k, v);
                Ok(true)
            })
            .map_err(|e| e.at(self.path))
    }

    /// Call `f` for every record from the first key >= `from` on, in key order,
    /// until it returns false.
    pub(crate) fn walk_from(
        &mut self,
        from: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.db
            .walk_from(from, |k, v| Ok(f(k, v)))
            .map_err(|e| e.at(self.path))
    }
}
