//! Consistent in-memory copies of single Cyrus files: a twoskip database under
//! its own shared fcntl lock (reference §8.6), and plain reads of files that are
//! only ever replaced by rename (flat dbs, sieve scripts) or protected by a lock
//! the caller holds (`cyrus.header`, `cyrus.index`, `cyrus.cache`).
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::error::{Result, SpoolError};
use crate::cyrus::twoskip::{HEADER_SIZE, parse_twoskip_header};
use crate::io_error::IoContext;
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
            Err(e) => Err(SpoolError::io("stat", path, e)),
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
        Err(e) => return Err(SpoolError::io("opening", path, e)),
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
    let header = parse_twoskip_header(&head).map_err(|e| SpoolError::parse(path, e))?;
    let size = usize::try_from(header.current_size)
        .ok()
        .filter(|&s| s as u64 <= stat.size && s >= HEADER_SIZE)
        .ok_or_else(|| {
            SpoolError::parse(
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

/// Files up to this size are copied into memory; bigger ones are spilled to an
/// unlinked temporary file, so the service's memory does not grow with a
/// folder (a 200,000-message `cyrus.index` is 22 MB).
pub const SPILL_AT: u64 = 4 << 20;

/// How much one step of a spilled copy moves (and the most it buffers).
const SPILL_CHUNK: usize = 256 << 10;

/// A private copy of a metadata file, taken under the lock that protects it and
/// readable after every lock is released: in memory, or (when large) in an
/// unlinked temporary file under Cyrus's `temp_path` that disappears with the
/// copy.
#[derive(Debug)]
pub struct MetaCopy {
    /// Where it was read from.
    pub path: PathBuf,
    /// `fstat` of the descriptor read.
    pub stat: FileStat,
    len: u64,
    body: Body,
}

#[derive(Debug)]
enum Body {
    Memory(Vec<u8>),
    Spilled(File),
}

impl MetaCopy {
    /// Copy bytes `[0, len)` of `src` (open at `path`), spilling to `temp_dir`
    /// above `spill_at` bytes (normally [`SPILL_AT`]).
    pub(crate) fn take(
        src: &File,
        path: &Path,
        stat: FileStat,
        len: u64,
        (temp_dir, spill_at): (&Path, u64),
    ) -> Result<MetaCopy> {
        let body = if len <= spill_at.min(SPILL_AT) {
            let mut bytes = vec![0u8; len as usize]; // len <= SPILL_AT fits
            src.read_exact_at(&mut bytes, 0).at("copying", path)?;
            Body::Memory(bytes)
        } else {
            let tmp = temp_file(temp_dir)?;
            let mut buf = vec![0u8; SPILL_CHUNK];
            let mut off = 0u64;
            while off < len {
                let n = (len - off).min(SPILL_CHUNK as u64) as usize;
                src.read_exact_at(&mut buf[..n], off).at("copying", path)?;
                tmp.write_all_at(&buf[..n], off)
                    .at("writing a temporary copy in", temp_dir)?;
                off += n as u64;
            }
            Body::Spilled(tmp)
        };
        Ok(MetaCopy {
            path: path.to_path_buf(),
            stat,
            len,
            body,
        })
    }

    /// A copy of bytes already in memory.
    pub(crate) fn from_bytes(c: FileCopy) -> MetaCopy {
        MetaCopy {
            path: c.path,
            stat: c.stat,
            len: c.bytes.len() as u64,
            body: Body::Memory(c.bytes),
        }
    }

    /// The number of bytes copied.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was copied.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes, when the copy is in memory (None: spilled).
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Memory(b) => Some(b),
            Body::Spilled(_) => None,
        }
    }

    /// Whether the copy went to a temporary file.
    pub fn is_spilled(&self) -> bool {
        matches!(self.body, Body::Spilled(_))
    }

    /// The temporary file of a spilled copy.
    pub(crate) fn spilled_file(&self) -> Option<&File> {
        match &self.body {
            Body::Memory(_) => None,
            Body::Spilled(f) => Some(f),
        }
    }

    /// Fill `buf` from offset `off` of the copy; fewer bytes only at its end.
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        match &self.body {
            Body::Memory(b) => {
                let start = usize::try_from(off).unwrap_or(usize::MAX).min(b.len());
                let n = buf.len().min(b.len() - start);
                buf[..n].copy_from_slice(&b[start..start + n]);
                Ok(n)
            }
            Body::Spilled(f) => {
                let want = buf.len().min(self.len.saturating_sub(off) as usize);
                let mut got = 0;
                while got < want {
                    match f.read_at(&mut buf[got..want], off + got as u64) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(got)
            }
        }
    }

    /// A reader from the first byte (each call starts again at 0).
    pub fn reader(&self) -> CopyReader<'_> {
        CopyReader { copy: self, pos: 0 }
    }

    /// All bytes in memory (reads a spilled copy back: for inspection and tests).
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        let mut v = vec![0u8; usize::try_from(self.len).unwrap_or(usize::MAX)];
        let n = self
            .read_at(&mut v, 0)
            .at("reading the copy of", &self.path)?;
        v.truncate(n);
        Ok(v)
    }
}

/// [`MetaCopy::reader`].
#[derive(Debug)]
pub struct CopyReader<'a> {
    copy: &'a MetaCopy,
    pos: u64,
}

impl Read for CopyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.copy.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// An anonymous file in `dir` (`O_TMPFILE`; where the filesystem lacks it, a
/// uniquely named file unlinked at once), readable and writable by us only.
fn temp_file(dir: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match tmp {
        Ok(f) => Ok(f),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.join(format!("cyrvaultd.{}.{n}.tmp", std::process::id()));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .at("creating a temporary file", &path)?;
            std::fs::remove_file(&path).at("unlinking", &path)?;
            Ok(f)
        }
        Err(e) => Err(SpoolError::io("creating a temporary file in", dir, e)),
    }
}
