//! The archive's writer lock: an exclusive `flock` on the archive file itself, held by
//! every process that changes the archive or rebuilds its catalog (`ArchiveWriter`,
//! `reindex`), so there is one writer per user at a time (doc/archive-format.md).
//!
//! A `flock` belongs to the open file description, and a child process forked by any
//! thread of the lock holder shares that description until its `exec` closes the
//! close-on-exec descriptor. So just after a writer lets go, the lock can still look
//! held for as long as some unrelated child takes to reach `exec` (milliseconds,
//! longer on a loaded machine). A second writer therefore retries for a short grace
//! period before it reports the archive as locked: a real second writer (another
//! backup of the same user) holds it for the whole of a run, far longer.
#![forbid(unsafe_code)]

use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

use super::error::ArchiveError;
use super::error::{ArchiveFailure, Result};

/// How long a lock that looks held is retried before the archive is reported locked.
pub const LOCK_GRACE: Duration = Duration::from_secs(2);

/// Between two attempts.
const LOCK_POLL: Duration = Duration::from_millis(20);

/// Take the exclusive writer lock on `file` (the archive at `path`), retrying for
/// [`LOCK_GRACE`]; `ArchiveError::Locked` if another writer still holds it then.
pub fn lock_exclusive(file: &File, path: &Path) -> Result<()> {
    let deadline = Instant::now() + LOCK_GRACE;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(LOCK_POLL)
            }
            Err(TryLockError::WouldBlock) => {
                return Err(ArchiveFailure::archive(path, ArchiveError::Locked));
            }
            Err(TryLockError::Error(e)) => return Err(ArchiveFailure::io("locking", path, e)),
        }
    }
}

/// Take the archive's writer lock without writing (reindex, retention): the file at
/// `path` opened and locked as [`lock_exclusive`] does; held until the returned file
/// drops. With `wait`, a lock still held after the grace is retried every 100 ms until
/// then. A lock taken on a file that was renamed over meanwhile (a compaction swapped
/// the archive, doc/retention.md) is let go and the new file locked.
pub fn lock_archive(path: &Path, wait: Option<Duration>) -> Result<File> {
    let deadline = wait.map(|w| Instant::now() + w);
    loop {
        let f = File::open(path).map_err(|e| ArchiveFailure::io("opening", path, e))?;
        match lock_exclusive(&f, path) {
            Ok(()) if same_file(&f, path)? => return Ok(f),
            Ok(()) => continue,
            Err(e)
                if e.as_archive() == Some(&ArchiveError::Locked)
                    && deadline.is_some_and(|d| Instant::now() < d) =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether `path` still names the file `file` is open on (same device and inode).
pub(crate) fn same_file(file: &File, path: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let open = file
        .metadata()
        .map_err(|e| ArchiveFailure::io("reading metadata of", path, e))?;
    Ok(match std::fs::metadata(path) {
        Ok(now) => now.ino() == open.ino() && now.dev() == open.dev(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(ArchiveFailure::io("reading metadata of", path, e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_reported_after_the_grace_and_a_released_one_is_taken() {
        let dir =
            std::env::temp_dir().join(format!("cyrvault-archive-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.tar.gz");
        let holder = File::create(&path).unwrap();
        lock_exclusive(&holder, &path).unwrap();
        let second = File::open(&path).unwrap();
        let err = lock_exclusive(&second, &path).unwrap_err();
        assert!(
            err.to_string().contains("locked by another writer"),
            "{err}"
        );
        // Released while the second one waits: taken within the grace.
        let path2 = path.clone();
        let t = std::thread::spawn(move || {
            let f = File::open(&path2).unwrap();
            lock_exclusive(&f, &path2).map(|_| f)
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(holder);
        assert!(t.join().unwrap().is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
