//! The archive and its catalog as a pair, across a compaction (`doc/retention.md`,
//! "Crash safety").
//!
//! Two files cannot be renamed together, so the rule is: **the archive decides**. Every
//! rewritten archive carries a *generation* line in its first member
//! (`cyrvault/GENERATION`, `N <random hex>`), and the catalog that indexes it records
//! the same line (`meta.archive_generation`). A compaction writes the new archive and
//! the new catalog (`<catalog>.new`, sealed: complete and fsynced) before it touches
//! either name; then it renames the archive (the commit point), then the catalog. A
//! crash leaves one of:
//!
//! | on disk | state | what the next opener does |
//! |---|---|---|
//! | old archive, old catalog (+ leftovers `<archive>.prune`, `<catalog>.new`) | old pair, consistent | the leftovers are removed by the next writer ([`settle`]); readers ignore them |
//! | new archive, old catalog, sealed `<catalog>.new` of the new generation | new pair, catalog not yet in place | a writer installs `<catalog>.new` ([`settle`]); a reader reads it ([`catalog_to_read`]) |
//! | new archive, new catalog | new pair, consistent | nothing |
//!
//! A catalog whose generation differs from its archive's with no matching
//! `<catalog>.new` is refused ([`PairState::Mismatch`]): `reindex` rebuilds it.
#![forbid(unsafe_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{Result, RetentionError};
use crate::archive::{lock_archive, rewrite};
use crate::catalog::Catalog;

/// Suffix of the new archive a compaction writes beside the old one.
pub const NEW_ARCHIVE_SUFFIX: &str = ".prune";

/// `<archive>.prune`: where a compaction writes the new archive.
pub fn new_archive_path(archive: &Path) -> PathBuf {
    let mut s = archive.as_os_str().to_os_string();
    s.push(NEW_ARCHIVE_SUFFIX);
    PathBuf::from(s)
}

/// The generation of the archive at `archive` (`None`: never rewritten).
pub fn archive_generation(archive: &Path) -> Result<Option<String>> {
    let mut f = File::open(archive).map_err(|e| RetentionError::io("opening", archive, e))?;
    Ok(rewrite::read_generation(&mut f, archive)?)
}

/// The generation after `prev`: `N+1 <16 random hex digits>` (the random part tells
/// two generations apart even if a counter were ever reused).
pub fn next_generation(prev: Option<&str>) -> String {
    let n = prev
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let mut r = [0u8; 8];
    if getrandom::getrandom(&mut r).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        r = ((t as u64) ^ u64::from(std::process::id())).to_le_bytes();
    }
    format!("{n} {}", hex::encode(r))
}

/// How an archive and its catalog stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairState {
    /// Same generation (or no catalog at all: nothing to disagree).
    Consistent,
    /// The archive is a compaction's new one and its sealed catalog waits at
    /// `<catalog>.new`.
    PendingInstall,
    /// The catalog indexes another generation and no `<catalog>.new` matches.
    Mismatch {
        catalog: Option<String>,
        archive: Option<String>,
    },
}

fn catalog_generation(path: &Path) -> Result<Option<Option<String>>> {
    if !path.exists() {
        return Ok(None);
    }
    let c = Catalog::open_read_only(path)?;
    Ok(Some(c.archive_generation()?))
}

/// Compare the archive's generation with its catalog's (and a pending new catalog's).
pub fn pair_state(archive: &Path, catalog: &Path) -> Result<PairState> {
    let Some(cat_gen) = catalog_generation(catalog)? else {
        return Ok(PairState::Consistent);
    };
    let arch_gen = archive_generation(archive)?;
    if cat_gen == arch_gen {
        return Ok(PairState::Consistent);
    }
    let pending = Catalog::pending_path(catalog);
    if arch_gen.is_some()
        && let Ok(Some(g)) = catalog_generation(&pending)
        && g == arch_gen
    {
        return Ok(PairState::PendingInstall);
    }
    Ok(PairState::Mismatch {
        catalog: cat_gen,
        archive: arch_gen,
    })
}

/// The catalog file a reader should open for `archive`: `<catalog>.new` while a
/// compaction's swap is half done (the archive already new), else `catalog`. Readers
/// never rename anything (the next writer does, [`settle`]).
pub fn catalog_to_read(archive: &Path, catalog: &Path) -> PathBuf {
    // The common case costs one stat: no half-done swap without a `.new`.
    if !Catalog::pending_path(catalog).exists() {
        return catalog.to_path_buf();
    }
    match pair_state(archive, catalog) {
        Ok(PairState::PendingInstall) => Catalog::pending_path(catalog),
        _ => catalog.to_path_buf(),
    }
}

/// What [`settle`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// A half-done swap was finished: the new catalog put in place.
    pub installed: bool,
    /// Leftovers of a compaction that died before its swap were removed.
    pub removed_leftovers: bool,
}

/// Under the archive's lock (taken here, waiting up to `wait`), finish what a
/// compaction left: install a sealed `<catalog>.new` of the archive's generation, or
/// remove the leftovers of one that died before its swap. Refuses a catalog of another
/// generation with no matching new one (`reindex` rebuilds it). A missing archive is
/// nothing to settle.
pub fn settle(archive: &Path, catalog: &Path, wait: Option<Duration>) -> Result<Settled> {
    // Nothing a compaction leaves behind, nothing to do (one stat each): a catalog of
    // another generation is caught by `check_same_generation` under the writer's lock.
    if !archive.exists()
        || (!Catalog::pending_path(catalog).exists() && !new_archive_path(archive).exists())
    {
        return Ok(Settled::default());
    }
    let _lock = lock_archive(archive, wait)?;
    settle_locked(archive, catalog)
}

/// [`settle`] for a caller that holds the archive's lock.
pub fn settle_locked(archive: &Path, catalog: &Path) -> Result<Settled> {
    let mut out = Settled::default();
    match pair_state(archive, catalog)? {
        PairState::Consistent => {}
        PairState::PendingInstall => {
            Catalog::install_sealed(catalog)?;
            log::warn!(
                target: "cyrvault::retention",
                "{}: a compaction was interrupted after its archive swap: its new catalog \
                 is now in place",
                archive.display()
            );
            out.installed = true;
        }
        PairState::Mismatch {
            catalog: c,
            archive: a,
        } => {
            return Err(RetentionError::refused(format!(
                "{}: the catalog indexes archive generation {} but the archive is generation \
                 {}: run `cyrvault reindex` to rebuild the catalog from the archive",
                catalog.display(),
                c.as_deref().unwrap_or("0 (never rewritten)"),
                a.as_deref().unwrap_or("0 (never rewritten)")
            )));
        }
    }
    let stale = new_archive_path(archive);
    if stale.exists() {
        std::fs::remove_file(&stale).map_err(|e| RetentionError::io("removing", &stale, e))?;
        out.removed_leftovers = true;
    }
    let pending = Catalog::pending_path(catalog);
    if !out.installed && pending.exists() {
        // A `.new` of no use to this archive: a compaction that died before its swap.
        for p in [
            pending.clone(),
            sibling(&pending, "-wal"),
            sibling(&pending, "-shm"),
        ] {
            match std::fs::remove_file(&p) {
                Ok(()) => out.removed_leftovers = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RetentionError::io("removing", &p, e)),
            }
        }
    }
    Ok(out)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// For a writer that opened `catalog` before locking the archive: whether the archive
/// it now holds locked is the generation the catalog indexes. A compaction that
/// finished in between makes them differ: the writer must start again (temporary).
pub fn check_same_generation(catalog: &Catalog, archive: &Path) -> Result<()> {
    let c = catalog.archive_generation()?;
    let a = archive_generation(archive)?;
    if c == a {
        return Ok(());
    }
    // The catalog file on disk now: the archive's generation (or a sealed new one
    // waits) means a compaction swapped the pair under us; otherwise the catalog is of
    // another archive generation for good.
    let path = catalog.path();
    if catalog_generation(path)?.is_some_and(|g| g == a)
        || catalog_generation(&Catalog::pending_path(path))?.is_some_and(|g| g == a)
    {
        return Err(super::RetentionError::Swapped {
            archive: archive.to_path_buf(),
        });
    }
    Err(super::RetentionError::Mismatch {
        user: archive.display().to_string(),
        catalog: path.to_path_buf(),
        what: format!(
            "it indexes archive generation {}, the archive is generation {}",
            c.as_deref().unwrap_or("0"),
            a.as_deref().unwrap_or("0")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_count_up_and_differ() {
        let a = next_generation(None);
        assert!(a.starts_with("1 "), "{a}");
        let b = next_generation(Some(&a));
        assert!(b.starts_with("2 "), "{b}");
        assert_ne!(next_generation(Some(&a)), b);
        assert_eq!(a.len(), 2 + 16);
    }
}
