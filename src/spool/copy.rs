//! Consistent in-memory copies of single Cyrus files: a twoskip database under
//! its own shared fcntl lock (reference §8.6), and plain reads of files that are
//! only ever replaced by rename (flat dbs, sieve scripts) or protected by a lock
//! the caller holds (`cyrus.header`, `cyrus.index`, `cyrus.cache`).
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::cyrus::twoskip::{HEADER_SIZE, parse_twoskip_header};
use crate::error::{Error, IoContext, Result};
use crate::lock::{LockMode, Locker};

/// `stat(2)` numbers as upstream `backupcyrusd` prints them: size, mtime
/// (seconds) and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FileStat {
    /// `st_size`.
    pub size: u64,
    /// `st_mtim.tv_sec`.
    pub mtime: i64,
    /// `st_ino`.
    pub inode: u64,
}

impl FileStat {
    /// From metadata (`stat` or `fstat`).
    pub fn of(m: &std::fs::Metadata) -> FileStat {
        FileStat {
            size: m.size(),
            mtime: m.mtime(),
            inode: m.ino(),
        }
    }

    /// `stat(path)`, None if it does not exist.
    pub fn stat(path: &Path) -> Result<Option<FileStat>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(FileStat::of(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }
}

/// A file's bytes as read, with the `fstat` of the descriptor they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCopy {
    /// Where it was read from.
    pub path: PathBuf,
    /// The bytes (for a twoskip db: `[0, current_size)`).
    pub bytes: Vec<u8>,
    /// `fstat` of the descriptor read.
    pub stat: FileStat,
}

/// Read all of an open file from offset 0.
pub(crate) fn read_all(mut f: &File, path: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).at("reading", path)?;
    Ok(buf)
}

/// Open and read a whole file; None if it does not exist.
pub(crate) fn read_file(path: &Path) -> Result<Option<FileCopy>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("opening", path, e)),
    };
    let stat = FileStat::of(&f.metadata().at("fstat", path)?);
    let bytes = read_all(&f, path)?;
    Ok(Some(FileCopy {
        path: path.to_path_buf(),
        bytes,
        stat,
    }))
}

/// Copy a twoskip database consistently: shared fcntl lock with the inode
/// re-check (a checkpoint renames a new file into place), read the header,
/// copy `[0, current_size)`, release. The copy is parsed later, lock-free.
/// None if the file does not exist.
pub(crate) fn copy_twoskip(locker: &Locker, path: &Path) -> Result<Option<FileCopy>> {
    if FileStat::stat(path)?.is_none() {
        return Ok(None);
    }
    let lock = locker.file(path, LockMode::Shared, true)?;
    let f = lock.file();
    let stat = FileStat::of(&f.metadata().at("fstat", path)?);
    let mut head = vec![0u8; HEADER_SIZE];
    f.read_exact_at(&mut head, 0)
        .at("reading the header of", path)?;
    let header = parse_twoskip_header(&head).map_err(|e| Error::parse(path, e))?;
    let size = usize::try_from(header.current_size)
        .ok()
        .filter(|&s| s as u64 <= stat.size && s >= HEADER_SIZE)
        .ok_or_else(|| {
            Error::parse(
                path,
                crate::cyrus::ParseError::new(
                    "twoskip header",
                    48,
                    crate::cyrus::ParseErrorKind::BadSize {
                        field: "current_size",
                        found: header.current_size,
                        expected: stat.size,
                    },
                ),
            )
        })?;
    let mut bytes = vec![0u8; size];
    f.read_exact_at(&mut bytes, 0).at("copying", path)?;
    drop(lock);
    Ok(Some(FileCopy {
        path: path.to_path_buf(),
        bytes,
        stat,
    }))
}
