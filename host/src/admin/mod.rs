//! The admin commands as library functions: `list`, `show`, `ls`, `cat`, `verify`,
//! `reindex`, `stats`. Each returns a plain serialisable report; the `cyrvault` binary
//! only prints it (JSON or a table) and turns "anything failed" into the exit status.
//!
//! This module owns how a user on the command line is found in the vault
//! ([`UserArchive`]), how `--at TIME` / `--run N` pick a run ([`RunSel`]), and the
//! cross-checks between an archive and its catalog. It writes nothing but a rebuilt
//! catalog (`reindex`), and reads one archive member per message (`cat`).
//!
//! Files: `query.rs` (list, show, ls, cat, stats), `verify.rs`, `reindex.rs`,
//! `when.rs` (time and duration parsing and printing), `entries.rs` (the archive entry
//! names catalog rows imply). Every listing reads the catalog through indexed or
//! grouped queries, streaming where the answer can be large (`ls_each`); nothing reads
//! a whole-catalog dump (`Catalog::dump_canonical` is for the reindex equality tests).
//! Operators' guide: `doc/admin.md`.
#![forbid(unsafe_code)]

mod entries;
mod query;
mod reindex;
mod verify;
mod when;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use query::{
    CatReport, FolderLine, ListReport, LsFolder, LsMessage, LsReport, ShowFolder, ShowReport,
    ShowRun, StatsReport, UserLine, UserStats, cat, cat_guid, list, ls, ls_each, read_message,
    show, stats,
};
pub use reindex::{Lost, ReindexOptions, ReindexReport, RunProblem, reindex};
pub use verify::{
    AffectedMessage, AffectedUse, CatalogMismatch, DamagedMember, MetaAffected, VerifyCounts,
    VerifyReport, verify,
};
pub use when::{format_time, parse_duration, parse_time};

use crate::catalog::Catalog;
use crate::error::{Error, IoContext, Result};

/// Suffix of an archive file.
pub const ARCHIVE_SUFFIX: &str = ".tar.gz";
/// Suffix of the catalog beside an archive: `<x>.tar.gz` has `<x>.catalog.sqlite`.
pub const CATALOG_SUFFIX: &str = ".catalog.sqlite";

/// One user's archive and the catalog beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserArchive {
    /// The user's name at the latest run (or the archive's stem if no catalog says).
    pub user: String,
    /// Archive stem: the INBOX UniqueID in a vault (`<vault>/<g0g1>/<stem>.tar.gz`).
    pub id: String,
    /// The `.tar.gz` file.
    pub archive: PathBuf,
    /// The `.catalog.sqlite` file beside it (it may not exist: reindex makes it).
    pub catalog: PathBuf,
}

impl UserArchive {
    /// The archive at `archive` (a `<stem>.tar.gz` path) with its catalog beside it;
    /// `user` is read from the catalog's last run when the catalog exists.
    pub fn from_archive_path(archive: &Path) -> UserArchive {
        Self::named(archive, None)
    }

    /// As [`UserArchive::from_archive_path`]; `index_name` is the vault index's name
    /// for the archive, used when no catalog says (a catalog's last run is newer).
    fn named(archive: &Path, index_name: Option<&str>) -> UserArchive {
        let name = archive
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let id = name
            .strip_suffix(ARCHIVE_SUFFIX)
            .unwrap_or(&name)
            .to_string();
        let catalog = archive.with_file_name(format!("{id}{CATALOG_SUFFIX}"));
        let user = Catalog::open_read_only(&catalog)
            .and_then(|c| c.last_run())
            .ok()
            .flatten()
            .map(|r| r.user)
            .or_else(|| index_name.map(str::to_string))
            .unwrap_or_else(|| id.clone());
        UserArchive {
            user,
            id,
            archive: archive.to_path_buf(),
            catalog,
        }
    }

    /// Open the catalog for reading only (it must exist: `reindex` makes a missing
    /// one). The admin commands never write to a catalog: `verify` of an empty file
    /// leaves it empty.
    pub fn open_catalog(&self) -> Result<Catalog> {
        // While a prune's swap is half done (the archive already new), the new catalog
        // waits beside the old one: read that (doc/retention.md).
        Ok(Catalog::open_read_only(
            &crate::retention::pair::catalog_to_read(&self.archive, &self.catalog),
        )?)
    }

    /// Open the archive file for reading (readers take no lock: it is append-only).
    pub fn open_archive(&self) -> Result<File> {
        Ok(File::open(&self.archive).at("opening", &self.archive)?)
    }
}

/// Every archive in the vault directory `vault`: `<vault>/<g0g1>/<id>.tar.gz` (and, for
/// hand-made vaults, `<vault>/<id>.tar.gz`), sorted by user name then id.
pub fn vault_archives(vault: &Path) -> Result<Vec<UserArchive>> {
    let names = index_names(vault)?;
    let mut found = Vec::new();
    let mut dirs = vec![vault.to_path_buf()];
    let top = std::fs::read_dir(vault).at("listing", vault)?;
    for e in top {
        let e = e.at("listing", vault)?;
        let p = e.path();
        if e.file_type().at("listing", &p)?.is_dir() {
            dirs.push(p);
        }
    }
    for d in dirs {
        for e in std::fs::read_dir(&d).at("listing", &d)? {
            let p = e.at("listing", &d)?.path();
            let is_archive = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(ARCHIVE_SUFFIX) && n.len() > ARCHIVE_SUFFIX.len());
            if is_archive && p.is_file() {
                let by_index = names.get(p.as_path()).map(String::as_str);
                found.push(UserArchive::named(&p, by_index));
            }
        }
    }
    found.sort_by(|a, b| (&a.user, &a.id).cmp(&(&b.user, &b.id)));
    Ok(found)
}

/// The vault index (`vault.json`, written by the backup): archive path → user name.
/// Empty when the vault has none.
fn index_names(vault: &Path) -> Result<HashMap<PathBuf, String>> {
    if !vault.join(crate::vault::INDEX_FILE).is_file() {
        return Ok(HashMap::new());
    }
    let v = crate::vault::Vault::open(vault)?;
    Ok(v.users()?
        .into_iter()
        .map(|(user, ua)| (ua.archive, user))
        .collect())
}

/// Find `who` in the vault: a path to a `.tar.gz` is taken as is; then the vault index
/// (`vault.json`: user → INBOX UniqueID); then the archive whose catalog's latest run
/// has that user name, or whose id (INBOX UniqueID) it is.
pub fn find_user(vault: &Path, who: &str) -> Result<UserArchive> {
    let p = Path::new(who);
    if who.ends_with(ARCHIVE_SUFFIX) && p.is_file() {
        return Ok(UserArchive::from_archive_path(p));
    }
    if vault.join(crate::vault::INDEX_FILE).is_file()
        && let Some(ua) = crate::vault::Vault::open(vault)?.user(who)?
        && ua.archive.is_file()
    {
        return Ok(UserArchive::named(&ua.archive, Some(who)));
    }
    let all = vault_archives(vault)?;
    let mut hits: Vec<UserArchive> = all.iter().filter(|a| a.user == who).cloned().collect();
    if hits.is_empty() {
        hits = all.into_iter().filter(|a| a.id == who).collect();
    }
    match hits.len() {
        0 => Err(Error::not_found(
            "user archive",
            format!("{who} (in {})", vault.display()),
        )),
        1 => Ok(hits.remove(0)),
        n => Err(Error::refused(format!(
            "{n} archives in {} are for user {who}: name one by its id ({})",
            vault.display(),
            hits.iter()
                .map(|h| h.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Apply `op` to every item with up to `jobs` of them at once (threads), and hand each
/// result to `done` on the calling thread in the order of `items`, each as soon as
/// every earlier one is in: `verify --all` and `reindex --all` use both cores and still
/// print in the vault's order.
pub fn map_ordered<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    op: impl Fn(&T) -> R + Sync,
    mut done: impl FnMut(usize, R),
) {
    let jobs = jobs.clamp(1, items.len().max(1));
    if jobs == 1 {
        for (i, t) in items.iter().enumerate() {
            done(i, op(t));
        }
        return;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, R)>();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let (tx, next, op) = (tx.clone(), &next, &op);
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(t) = items.get(i) else {
                        return;
                    };
                    if tx.send((i, op(t))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut pending: std::collections::BTreeMap<usize, R> = std::collections::BTreeMap::new();
        let mut want = 0;
        for (i, r) in rx {
            pending.insert(i, r);
            while let Some(r) = pending.remove(&want) {
                done(want, r);
                want += 1;
            }
        }
    });
}

/// Which run a query is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunSel {
    /// The latest committed run.
    #[default]
    Latest,
    /// Run number N.
    Run(u64),
    /// The newest run that started at or before this Unix time.
    At(i64),
}

impl RunSel {
    /// The run number this selects in `cat`; an error names what was asked when no run
    /// matches.
    pub fn resolve(self, cat: &Catalog) -> Result<u64> {
        let none = |what: String| Error::not_found("run", what);
        match self {
            RunSel::Latest => cat
                .last_run()?
                .map(|r| r.run)
                .ok_or_else(|| none("any (the catalog has no runs)".into())),
            RunSel::Run(n) => {
                if cat.runs()?.iter().any(|r| r.run == n) {
                    Ok(n)
                } else {
                    Err(none(n.to_string()))
                }
            }
            RunSel::At(t) => cat
                .run_at(t)?
                .ok_or_else(|| none(format!("at or before {}", format_time(t)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cyrvault-admin-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("ab")).unwrap();
        d
    }

    #[test]
    fn map_ordered_keeps_the_order_whatever_finishes_first() {
        let items: Vec<u64> = (0..40).collect();
        for jobs in [1, 3, 8] {
            let mut got = Vec::new();
            map_ordered(
                &items,
                jobs,
                |&x| {
                    // later items finish first
                    std::thread::sleep(std::time::Duration::from_micros(400 - 10 * x));
                    x * 2
                },
                |i, r| got.push((i, r)),
            );
            let want: Vec<(usize, u64)> = items.iter().map(|&x| (x as usize, x * 2)).collect();
            assert_eq!(got, want, "jobs {jobs}");
        }
    }

    #[test]
    fn archives_are_found_by_path_and_id_and_unknown_users_are_not() {
        let d = tmp("find");
        let a = d.join("ab").join("Ab12-cd.tar.gz");
        std::fs::write(&a, b"").unwrap();
        std::fs::write(d.join("ab").join("notes.txt"), b"").unwrap();
        let all = vault_archives(&d).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].id, "Ab12-cd");
        assert_eq!(
            all[0].user, "Ab12-cd",
            "no catalog: the id stands in for the name"
        );
        assert_eq!(all[0].catalog, d.join("ab").join("Ab12-cd.catalog.sqlite"));
        assert_eq!(find_user(&d, "Ab12-cd").unwrap(), all[0]);
        assert_eq!(find_user(&d, a.to_str().unwrap()).unwrap(), all[0]);
        let e = find_user(&d, "bob").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound, "{e}");
        // No catalog: read-only commands say so instead of creating one.
        assert!(all[0].open_catalog().is_err());
        assert!(!all[0].catalog.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
