//! The backup: pull one user's mail from a server (`cyrvaultd` or a stock
//! `backupcyrusd`) into the user's archive and catalog in the vault.
//!
//! This module owns the ORDER of a run (doc/backup.md): one `FMULTISTATUS`; unchanged
//! folders cost nothing more; changed folders get `FMETA`, their records
//! (`model::records_from_meta`, the same function reindex uses), and `FDATA` for the
//! GUIDs the archive lacks, each message's SHA-1 checked against its GUID before it is
//! stored; user state when it changed; then the archive members are written and
//! fsynced, the run manifest is written last in its own member, and only then is the
//! catalog committed, in one transaction, through `Catalog::write_run` (the same call
//! reindex makes). Recovery after a crash (`recover.rs`) replays runs whose manifest
//! reached the archive but not the catalog, and adopts members of runs that never got
//! a manifest.
//!
//! Files: `server.rs` (connection, servername, AUTH), `run.rs` (one user's run),
//! `folder.rs` (a changed folder: FMETA, FDATA, GUID checks), `user.rs` (seen, subs,
//! sieve), `recover.rs` (roll forward, adoption), `ext.rs` (what a run remembers for the next
//! one, inside its manifest), `status.rs` (a running service's `STATUS`).
#![forbid(unsafe_code)]

mod ext;
mod folder;
mod listing;
mod recover;
mod report;
mod run;
mod server;
mod status;
mod user;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use recover::replay_archive;
pub use report::{FailureClass, FolderFailure};
pub use run::backup_user;
pub use server::{ConnectOptions, Connector, Server};
pub use status::ServiceStatus;

use crate::archive::{ArchiveError, ArchiveFailure};
use crate::catalog::CatalogError;
use crate::protocol::ProtocolError;
use crate::retention::RetentionError;
use crate::tls::TlsError;
use crate::vault::{Vault, VaultError};
use cyrvault::error::ErrorKind;

/// Most UIDs per `FDATA` request (what the Perl client sends; the service allows 4096).
pub const FDATA_BATCH: usize = 1024;

/// A folder whose metadata files were modified in the second the server read them, or
/// in the `RACY_SECS - 1` seconds before, is fetched again next run: `stat` times are
/// whole seconds, so a second change within the same second would look unchanged
/// ("racy" stat, as git calls it). "When the server read them" is the server's own
/// clock (`SERVERTIME`, doc/protocol.md 2.6), or without it a lower bound of that clock
/// (doc/backup.md, "Racy stats"); the second of slack covers the file system stamping
/// times from a clock that may lag by a tick.
pub const RACY_SECS: u64 = 2;

/// Told about progress while a run goes (the CLI draws a progress bar with it).
pub trait Progress: Send + Sync {
    /// A user's run starts; `folders` is how many folders the server listed.
    fn user_started(&self, user: &str, folders: usize);
    /// A folder is being looked at.
    fn folder(&self, user: &str, name: &str);
    /// A changed folder's metadata has been read (`FMETA`); its messages are fetched
    /// next (`FDATA`). The tests use this to change the folder at exactly that point.
    fn folder_read(&self, _user: &str, _name: &str) {}
    /// Message bytes arrived.
    fn bytes(&self, n: u64);
}

/// How to run a backup.
#[derive(Clone, Default)]
pub struct BackupOptions {
    /// Progress callbacks (none by default).
    pub progress: Option<Arc<dyn Progress>>,
    /// Archive writer tuning (member size, levels); `committed_len` is set by the run.
    pub writer: Option<crate::archive::WriterOptions>,
}

impl fmt::Debug for BackupOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupOptions")
            .field("progress", &self.progress.is_some())
            .field("writer", &self.writer)
            .finish()
    }
}

/// A message whose bytes do not hash to the GUID Cyrus's index gives it: damage in the
/// server's spool. It is reported and not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpoolDamage {
    pub user: String,
    pub folder: String,
    pub uid: u32,
    /// The GUID in `cyrus.index`.
    pub expected: String,
    /// SHA-1 of the bytes the server sent.
    pub got: String,
}

impl fmt::Display for SpoolDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spool damage: user {} folder {} uid {}: message file hashes to {}, the index says {}",
            self.user, self.folder, self.uid, self.got, self.expected
        )
    }
}

/// What a crash left behind and what the run did about it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Recovery {
    /// Bytes of an incomplete member cut from the tail: `(offset, len)`.
    pub cut: Option<(u64, u64)>,
    /// Runs whose manifest was in the archive but not in the catalog, now replayed.
    pub rolled_forward: Vec<u64>,
    /// Complete members of a run that never got its manifest, adopted by this run.
    pub adopted_members: usize,
    /// Messages in those members, reused instead of fetched again.
    pub adopted_messages: usize,
}

/// What one user's run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UserReport {
    pub user: String,
    pub inbox_uniqueid: String,
    /// The archive written.
    pub archive: PathBuf,
    /// The run number committed (when `unchanged`: the last run, which still
    /// describes the user).
    pub run: u64,
    /// Live folders the server listed.
    pub folders_seen: usize,
    /// Folders snapshotted (new or changed).
    pub folders_changed: usize,
    /// Folders that cost nothing but the status line.
    pub folders_unchanged: usize,
    /// Folders the catalog had that the server no longer lists (kept in the archive).
    pub folders_gone: usize,
    /// Delayed-delete (`DELETED.*`) folders the server listed: backed up as deleted
    /// folders (their former name, deletion time and content), not counted in
    /// `folders_seen`.
    pub folders_delayed_delete: usize,
    /// Folders not backed up in this run, with the reason (see [`FolderFailure`]): the
    /// catalog carries their last state forward. Any entry makes the exit status
    /// non-zero.
    pub folders_failed: Vec<FolderFailure>,
    /// Messages fetched and stored.
    pub messages_fetched: u64,
    /// Records left out because their message was erased (`cyrvault forget`, or an
    /// expunged copy of one `--keep-deleted` expired): still on the server, not backed
    /// up again (doc/retention.md).
    pub messages_erased_skipped: u64,
    /// Message bytes fetched.
    pub bytes_fetched: u64,
    /// Metadata bytes fetched (index, header, annotations, user files).
    pub meta_bytes_fetched: u64,
    /// How much the archive grew.
    pub bytes_written: u64,
    /// Whether user-level state (seen, subscriptions, sieve) was stored anew.
    pub user_state_stored: bool,
    /// Messages that did not hash to their GUID (not stored).
    pub damage: Vec<SpoolDamage>,
    /// `(folder, uid)` whose file the server no longer had when asked.
    pub missing: Vec<(String, u32)>,
    pub recovery: Recovery,
    /// Nothing changed since run `run` (no folder, no user file): no run was written
    /// (no archive byte, no fsync); the catalog recorded the check.
    pub unchanged: bool,
    /// Protocol round trips this user cost (a pipelined batch counts once).
    pub round_trips: u64,
    /// fsyncs of the archive (file and directory); the catalog's commit adds none
    /// (`Catalog::open_backup`).
    pub fsyncs: u64,
    /// Wall-clock time of the run.
    pub duration_ms: u64,
}

impl UserReport {
    /// Whether the run found problems worth a non-zero exit: a folder not backed up,
    /// or spool damage.
    pub fn has_problems(&self) -> bool {
        !self.damage.is_empty() || !self.folders_failed.is_empty()
    }

    /// Record that a folder is not backed up in this run (logged at once). Any code
    /// that finds a folder it cannot back up calls this; the run then carries the
    /// folder's previous state forward and its exit status is non-zero.
    pub fn fail_folder(&mut self, f: FolderFailure) {
        // Whether its state is carried forward is known at commit; not said here.
        log::warn!(
            target: "cyrvault::backup",
            "user {} folder {}: FAILED ({}): {}",
            f.user, f.folder, f.class, f.reason
        );
        self.folders_failed.push(f);
    }

    /// The exit status this run's problems call for: `None` when green; 65 when
    /// anything is damaged or refused (an admin must act), else 75 (try again).
    pub fn problem_exit_code(&self) -> Option<i32> {
        if !self.damage.is_empty()
            || self
                .folders_failed
                .iter()
                .any(|f| f.class != FailureClass::Temporary)
        {
            Some(cyrvault::error::EX_DATAERR)
        } else if !self.folders_failed.is_empty() {
            Some(cyrvault::error::EX_TEMPFAIL)
        } else {
            None
        }
    }

    /// The problems as one error (for callers that count a run with problems as
    /// failed, like the fleet), or `None` when green.
    pub fn problems(&self) -> Option<BackupError> {
        self.problem_exit_code()?;
        Some(BackupError::Incomplete {
            user: self.user.clone(),
            run: self.run,
            failed: self.folders_failed.clone(),
            damaged: self.damage.len(),
        })
    }
}

/// Result with [`BackupError`].
pub type Result<T, E = BackupError> = std::result::Result<T, E>;

/// The backup layer's error: the failures the admin must act on (the crate
/// `Error::Backup`), and what a run met below, each kept whole and transparent (the
/// crate `Error` converts them at this layer's edge into the variants they have
/// there).
#[derive(Debug)]
pub enum BackupError {
    /// Another process is writing this user's archive.
    Locked { user: String, archive: PathBuf },
    /// The archive is shorter than its catalog says was committed. Never wiped or
    /// restarted: `cyrvault verify` and `cyrvault reindex` deal with it.
    ShorterThanCatalog {
        user: String,
        archive: PathBuf,
        len: u64,
        committed: u64,
    },
    /// The catalog has committed runs but the archive file is gone.
    ArchiveMissing {
        user: String,
        archive: PathBuf,
        committed: u64,
    },
    /// The server lists no folder for the user (unknown user).
    NoSuchUser { user: String },
    /// The archive's tail or a run in it is not what a crash leaves: verify/reindex.
    NeedsRepair {
        user: String,
        archive: PathBuf,
        what: String,
    },
    /// The run committed, but without some folders (carried forward) or with spool
    /// damage: what [`UserReport::problems`] gives.
    Incomplete {
        user: String,
        run: u64,
        failed: Vec<FolderFailure>,
        damaged: usize,
    },
    /// A service-side failure: I/O with what and where, the wire, a server's `NO`,
    /// a refused request, ...
    Service(cyrvault::Error),
    /// An archive that could not be read or written (never holds a service error).
    Archive(ArchiveFailure),
    /// The catalog failed (never holds a service error).
    Catalog(CatalogError),
    /// Retention refused or failed (finishing a swap, the pair's generation; never
    /// holds a service, archive or catalog error).
    Retention(RetentionError),
}

/// An I/O failure with what and where is the service's `Error::Io` here too (so `?`
/// takes `IoContext::at`'s result straight into this layer's error).
impl From<cyrvault::io_error::IoError> for BackupError {
    fn from(e: cyrvault::io_error::IoError) -> Self {
        cyrvault::Error::from(e).into()
    }
}

impl From<cyrvault::Error> for BackupError {
    fn from(e: cyrvault::Error) -> Self {
        BackupError::Service(e)
    }
}

impl From<ProtocolError> for BackupError {
    fn from(e: ProtocolError) -> Self {
        cyrvault::Error::from(e).into()
    }
}

impl From<TlsError> for BackupError {
    fn from(e: TlsError) -> Self {
        cyrvault::Error::from(e).into()
    }
}

impl From<ArchiveFailure> for BackupError {
    fn from(e: ArchiveFailure) -> Self {
        match e {
            ArchiveFailure::Service(e) => BackupError::Service(e),
            e => BackupError::Archive(e),
        }
    }
}

impl From<CatalogError> for BackupError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Service(e) => BackupError::Service(e),
            e => BackupError::Catalog(e),
        }
    }
}

impl From<VaultError> for BackupError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Service(e) => BackupError::Service(e),
            VaultError::Archive(e) => e.into(),
        }
    }
}

impl From<RetentionError> for BackupError {
    fn from(e: RetentionError) -> Self {
        match e {
            RetentionError::Service(e) => BackupError::Service(e),
            RetentionError::Archive(e) => e.into(),
            RetentionError::Catalog(e) => e.into(),
            e => BackupError::Retention(e),
        }
    }
}

impl fmt::Display for BackupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupError::Locked { user, archive } => write!(
                f,
                "user {user}: archive {} is locked by another cyrvault writer (a backup of this user is already running); try again later",
                archive.display()
            ),
            BackupError::ShorterThanCatalog {
                user,
                archive,
                len,
                committed,
            } => write!(
                f,
                "user {user}: archive {} is {len} bytes but its catalog has {committed} bytes committed; it was cut or replaced. Nothing was changed: run `cyrvault verify {user}` and `cyrvault reindex {user}`",
                archive.display()
            ),
            BackupError::ArchiveMissing {
                user,
                archive,
                committed,
            } => write!(
                f,
                "user {user}: archive {} is missing but its catalog has {committed} bytes committed. Nothing was created: restore the file or run `cyrvault verify {user}`",
                archive.display()
            ),
            BackupError::NoSuchUser { user } => {
                write!(f, "user {user}: the server lists no folders for this user")
            }
            BackupError::NeedsRepair {
                user,
                archive,
                what,
            } => write!(
                f,
                "user {user}: archive {}: {what}. Nothing was changed: run `cyrvault verify {user}` and `cyrvault reindex {user}`",
                archive.display()
            ),
            BackupError::Incomplete {
                user,
                run,
                failed,
                damaged,
            } => {
                write!(f, "user {user}: run {run} committed")?;
                if !failed.is_empty() {
                    write!(f, " without {} folder(s):", failed.len())?;
                    for x in failed {
                        write!(f, " [{}: {} ({})]", x.folder, x.reason, x.class)?;
                    }
                }
                if *damaged > 0 {
                    write!(f, "; {damaged} damaged message(s) in the spool")?;
                }
                Ok(())
            }
            BackupError::Service(e) => fmt::Display::fmt(e, f),
            BackupError::Archive(e) => fmt::Display::fmt(e, f),
            BackupError::Catalog(e) => fmt::Display::fmt(e, f),
            BackupError::Retention(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for BackupError {
    // The wrapped errors are transparent: their own sources, as if unwrapped.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BackupError::Service(e) => e.source(),
            BackupError::Archive(e) => e.source(),
            BackupError::Catalog(e) => e.source(),
            BackupError::Retention(e) => e.source(),
            _ => None,
        }
    }
}

impl BackupError {
    /// The error class (exit status) of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BackupError::Locked { .. } => ErrorKind::Temporary,
            BackupError::NoSuchUser { .. } => ErrorKind::NotFound,
            BackupError::Incomplete {
                failed, damaged, ..
            } if *damaged == 0 && failed.iter().all(|f| f.class == FailureClass::Temporary) => {
                ErrorKind::Temporary
            }
            BackupError::Service(e) => e.kind(),
            BackupError::Archive(e) => e.kind(),
            BackupError::Catalog(e) => e.kind(),
            BackupError::Retention(e) => e.kind(),
            _ => ErrorKind::Data,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        self.kind() == ErrorKind::Temporary
    }

    /// The sysexits code for this error.
    pub fn exit_code(&self) -> i32 {
        self.kind().exit_code()
    }

    /// The archive error inside, if this is one (for callers that match on it).
    pub fn as_archive(&self) -> Option<&ArchiveError> {
        match self {
            BackupError::Archive(e) => e.as_archive(),
            _ => None,
        }
    }

    /// An archive error with the archive it is about.
    pub fn archive(path: impl Into<PathBuf>, source: ArchiveError) -> Self {
        ArchiveFailure::archive(path, source).into()
    }

    /// An I/O error with context (the service's `Io`).
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        cyrvault::Error::io(op, path, source).into()
    }

    /// A Cyrus or cyrvault file that does not parse (the service's `Parse`).
    pub fn parse(path: impl Into<PathBuf>, source: crate::cyrus::ParseError) -> Self {
        cyrvault::Error::parse(path, source).into()
    }

    /// A request that is not allowed (the service's `Refused`, class Usage).
    pub fn refused(message: String) -> Self {
        cyrvault::Error::Refused(message).into()
    }

    /// The peer broke the wire protocol (the service's `Protocol`, class Temporary).
    pub fn protocol(message: String) -> Self {
        cyrvault::Error::Protocol(message).into()
    }

    /// A failure of class `kind` that retrying cannot fix (the service's `Server`).
    pub fn server(kind: ErrorKind, message: String) -> Self {
        cyrvault::Error::Server { kind, message }.into()
    }

    /// A service's `NO <text>`: see [`cyrvault::Error::from_server_no`].
    pub fn from_server_no(context: &str, text: &str) -> Self {
        cyrvault::Error::from_server_no(context, text).into()
    }

    /// Anything else, with a message that says what and where (the service's `Other`).
    pub fn other(message: String) -> Self {
        cyrvault::Error::Other(message).into()
    }
}

/// Back up `users` one after the other. One user's failure is reported in its slot and
/// the rest go on (after a failure the connection is reopened, in case the protocol
/// stream was left out of step).
pub fn backup_users(
    server: &mut Server,
    vault: &Vault,
    users: &[String],
    opts: &BackupOptions,
) -> Vec<(String, Result<UserReport>)> {
    let mut out = Vec::with_capacity(users.len());
    for u in users {
        let r = backup_user(server, vault, u, opts);
        let failed = r.is_err();
        out.push((u.clone(), r));
        if failed && let Err(e) = server.reconnect() {
            log::error!(target: "cyrvault::backup", "reconnecting to {}: {e}", server.addr);
        }
    }
    out
}

/// The default number of parallel jobs: the cores this process may use.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Back up `users` with up to `jobs` of them at once, each job on its own connection
/// (the first job uses `server`, the others open theirs with
/// [`Server::connector`] when they start). Users are taken in the given order and the
/// results come back in that order, whatever order they finished in, so the output
/// is the same for any `jobs`. Two jobs never share a user (a name given twice is
/// backed up once, in its first place); each user's archive is its own, and
/// updates of the vault index are serialised by its lock. One user's failure is
/// reported in its slot and that job reconnects.
pub fn backup_users_jobs(
    server: &mut Server,
    vault: &Vault,
    users: &[String],
    opts: &BackupOptions,
    jobs: usize,
) -> Vec<(String, Result<UserReport>)> {
    // A set, not `Vec::contains`: `--all` on a server of 10^4 users.
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let distinct: Vec<String> = users
        .iter()
        .filter(|u| seen.insert(u.as_str()))
        .cloned()
        .collect();
    let jobs = jobs.clamp(1, distinct.len().max(1));
    if jobs == 1 {
        backup_users(server, vault, &distinct, opts)
    } else {
        let next = AtomicUsize::new(0);
        let slots: Vec<Mutex<Option<Result<UserReport>>>> =
            distinct.iter().map(|_| Mutex::new(None)).collect();
        let connector = server.connector();
        let job = |mut conn: Option<&mut Server>| {
            let mut own: Option<Server> = None;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(user) = distinct.get(i) else {
                    return;
                };
                let r = match conn.as_deref_mut().or(own.as_mut()) {
                    Some(s) => Ok(s),
                    None => connector.connect().map(|s| own.insert(s)),
                }
                .and_then(|s| {
                    let r = backup_user(s, vault, user, opts);
                    if r.is_err()
                        && let Err(e) = s.reconnect()
                    {
                        log::error!(target: "cyrvault::backup", "reconnecting to {}: {e}", s.addr);
                    }
                    r
                });
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(r);
                }
            }
        };
        std::thread::scope(|s| {
            for _ in 1..jobs {
                s.spawn(|| job(None));
            }
            job(Some(server));
        });
        distinct
            .iter()
            .zip(slots)
            .map(|(u, slot)| {
                let r = slot.into_inner().ok().flatten().unwrap_or_else(|| {
                    Err(BackupError::other(format!(
                        "user {u}: no result (a backup job died)"
                    )))
                });
                (u.clone(), r)
            })
            .collect()
    }
}
