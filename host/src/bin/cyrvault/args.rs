//! The command line as plain data (clap derive). Resolved into library calls by the
//! `cmd_*` files.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Backup for Cyrus IMAP servers.
#[derive(Debug, Parser)]
#[command(name = "cyrvault", version, about, long_about = None)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print what cyrvault's parsers read from a Cyrus file.
    Inspect(InspectArgs),
    /// Users in the vault: last run, archive size, runs (`--stale 26h`: only late ones).
    List(ListArgs),
    /// A user's runs and folders (with their names over time).
    Show(ShowArgs),
    /// A user's folders, or one folder's messages, as of a run.
    Ls(LsArgs),
    /// One message's raw bytes to stdout: `cat USER GUID` or `cat USER FOLDER UID`.
    Cat(CatArgs),
    /// Check archives end to end and against their catalogs; name any damage.
    Verify(TargetsArgs),
    /// Rebuild catalogs from the archives alone (refused for a damaged archive unless --salvage).
    Reindex(ReindexArgs),
    /// Raw vs unique vs stored bytes, dedup and compression ratios, runs.
    Stats(StatsArgs),
    /// Remove runs by a policy (restic's --keep-*) and compact the archive.
    Prune(crate::cmd_prune::PruneArgs),
    /// Erase messages, a folder, everything before a date, or a whole user, with a record.
    Forget(crate::cmd_forget::ForgetArgs),
    /// Place, release or list legal holds (prune and forget refuse a held user).
    Hold(crate::cmd_hold::HoldArgs),
    /// Pull users' mail from a cyrvaultd (or stock backupcyrusd) into the vault.
    Backup(BackupArgs),
    /// Restore a user, folders or messages from the vault into IMAP or to files.
    Restore(Box<RestoreArgs>),
    /// Fill the fleet's user directory from every server in cyrvault.conf.
    Discover(crate::cmd_discover::DiscoverArgs),
    /// Back up the whole fleet with N worker processes.
    Run(crate::cmd_run::RunArgs),
    /// Per-server, per-drive-unit summary of the last fleet run; stale users.
    FleetStatus(crate::cmd_run::FleetStatusArgs),
    /// The fleet's health as Prometheus text (for node_exporter's textfile collector).
    Metrics(crate::cmd_metrics::MetricsArgs),
    /// Ask a running cyrvaultd how it is doing (sessions, requests, bytes, lock
    /// waits, errors since master started; the Cyrus it serves).
    Status(crate::cmd_status::StatusArgs),
    /// One worker process of `cyrvault run` (started by it).
    #[command(hide = true)]
    Worker(crate::cmd_discover::WorkerArgs),
    /// Shell completions on stdout (bash, zsh, fish, elvish, powershell).
    Completions(crate::cmd_man::CompletionsArgs),
    /// Write the manual pages into DIR (the packages do).
    #[command(hide = true)]
    Man(crate::cmd_man::ManArgs),
}

impl Command {
    /// The subcommand's name, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Inspect(_) => "inspect",
            Command::List(_) => "list",
            Command::Show(_) => "show",
            Command::Ls(_) => "ls",
            Command::Cat(_) => "cat",
            Command::Verify(_) => "verify",
            Command::Reindex(_) => "reindex",
            Command::Stats(_) => "stats",
            Command::Prune(_) => "prune",
            Command::Forget(_) => "forget",
            Command::Hold(_) => "hold",
            Command::Backup(_) => "backup",
            Command::Restore(_) => "restore",
            Command::Discover(_) => "discover",
            Command::Run(_) => "run",
            Command::FleetStatus(_) => "fleet-status",
            Command::Metrics(_) => "metrics",
            Command::Status(_) => "status",
            Command::Worker(_) => "worker",
            Command::Completions(_) => "completions",
            Command::Man(_) => "man",
        }
    }
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(subcommand)]
    pub what: InspectWhat,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum InspectWhat {
    /// cyrus.index: header and every record (a file or a mailbox directory).
    Index { path: PathBuf },
    /// cyrus.header: name, uniqueid, ACL, keyword names.
    Header { path: PathBuf },
    /// cyrus.cache, checked entry by entry against the index beside it.
    Cache {
        path: PathBuf,
        /// The cyrus.index to walk the cache with (default: beside the cache).
        #[arg(long)]
        index: Option<PathBuf>,
    },
    /// mailboxes.db: every mailbox (twoskip file).
    Mailboxes {
        path: PathBuf,
        /// The imapd.conf `deletedprefix`.
        #[arg(long, default_value = "DELETED")]
        deletedprefix: String,
        /// Print exactly what `ctl_mboxlist -d` prints (JSON).
        #[arg(long)]
        ctl_mboxlist: bool,
    },
}

/// Options every admin command takes.
#[derive(Debug, Args)]
pub struct AdminOpts {
    /// The vault directory (`<vault>/<g0g1>/<inbox-uniqueid>.tar.gz`). A USER may also be
    /// given as the path of a `.tar.gz`.
    #[arg(long, default_value = "/var/lib/cyrvault")]
    pub vault: PathBuf,
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Which run: the latest by default.
#[derive(Debug, Args)]
pub struct RunSelArgs {
    /// The newest run that started at or before TIME (RFC 3339, Unix seconds, or
    /// `YYYY-MM-DD[ HH:MM[:SS]]`, UTC unless followed by Z or an offset).
    #[arg(long, value_name = "TIME", conflicts_with = "run")]
    pub at: Option<String>,
    /// Run number N.
    #[arg(long, value_name = "N")]
    pub run: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub opts: AdminOpts,
    /// Only users whose last run finished longer ago than this (`26h`, `2d`, `90m`);
    /// the exit status is 1 when any is listed.
    #[arg(long, value_name = "AGE")]
    pub stale: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub opts: AdminOpts,
    pub user: String,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub opts: AdminOpts,
    #[command(flatten)]
    pub sel: RunSelArgs,
    pub user: String,
    /// A folder name (`INBOX`, `Lists/cyrus`); without it, the folders are listed.
    pub folder: Option<String>,
}

#[derive(Debug, Args)]
pub struct CatArgs {
    #[command(flatten)]
    pub opts: AdminOpts,
    #[command(flatten)]
    pub sel: RunSelArgs,
    pub user: String,
    /// A GUID (40 hex digits), or a folder name followed by a UID.
    pub guid_or_folder: String,
    pub uid: Option<u32>,
}

#[derive(Debug, Args)]
pub struct TargetsArgs {
    #[command(flatten)]
    pub opts: AdminOpts,
    /// Every archive in the vault.
    #[arg(long, conflicts_with = "users")]
    pub all: bool,
    /// Archives processed at once (default: the number of cores).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    #[arg(required_unless_present = "all")]
    pub users: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReindexArgs {
    #[command(flatten)]
    pub targets: TargetsArgs,
    /// Rebuild from what can still be read when the archive is damaged, and say what
    /// was lost (without it a damaged archive is refused and its catalog kept).
    #[arg(long)]
    pub salvage: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub opts: AdminOpts,
    /// One user (default: every user, with totals).
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Users to back up (or --all).
    pub users: Vec<String>,
    /// The service to pull from, HOST:PORT.
    #[arg(long)]
    pub server: String,
    /// File holding the shared secret (cyrvaultd_secret_file on the server).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// The server's `servername` (the protocol's slot); learned from the server if not given.
    #[arg(long)]
    pub servername: Option<String>,
    /// The vault directory (archives, catalogs, vault.json).
    #[arg(long, default_value = "/var/lib/cyrvault")]
    pub vault: PathBuf,
    /// Back up every user the server lists (USERS) and every shared hierarchy (SHARED).
    #[arg(long)]
    pub all: bool,
    /// With --all: do not back up shared (non-user) mailboxes. Without it, --all
    /// against a server that cannot list them (a stock backupcyrusd, --base-protocol)
    /// fails with exit status 78 after backing up the users.
    #[arg(long, requires = "all")]
    pub no_shared: bool,
    /// Speak only the base protocol (stock backupcyrusd): no CAPABILITY, AUTH, SNAPSHOT.
    #[arg(long)]
    pub base_protocol: bool,
    /// Users backed up at once, each on its own connection (default: the number of cores).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Machine-readable JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backed-up user.
    #[arg(required_unless_present = "all")]
    pub user: Option<String>,
    /// Every user of the vault (a lost server onto its replacement): each as of its
    /// latest run (or --at), N at a time; a second run does only what is missing.
    #[arg(long, conflicts_with_all = ["user", "run", "messages", "into", "to_user", "to_mbox", "to_maildir", "to_eml", "archive", "dry_run"])]
    pub all: bool,
    /// With --all: users restored at the same time; for one user over IMAP: sessions
    /// appending at the same time (its folders shared out between them).
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Folders by their backed-up name (INBOX, Work, Archive/2023; subfolders come
    /// along). None: every folder.
    pub folders: Vec<String>,
    /// The vault directory.
    #[arg(long, default_value = "/var/lib/cyrvault")]
    pub vault: PathBuf,
    /// Read this archive (its catalog beside it) instead of the vault's.
    #[arg(long)]
    pub archive: Option<PathBuf>,
    /// Restore the state of the newest run that started at or before TIME (Unix
    /// seconds, or YYYY-MM-DD[THH:MM[:SS]], UTC unless followed by Z or an offset).
    #[arg(long, conflicts_with = "run")]
    pub at: Option<String>,
    /// Restore the state of this run.
    #[arg(long)]
    pub run: Option<u64>,
    /// Only these messages (GUIDs, 40 hex digits).
    #[arg(long = "message", value_name = "GUID")]
    pub messages: Vec<String>,
    /// The IMAP server to restore into, HOST:PORT.
    #[arg(long, required_unless_present_any = ["to_mbox", "to_maildir", "to_eml", "exact"])]
    pub imap: Option<String>,
    /// Re-create the user exactly as at the run (same UniqueIDs, UIDVALIDITY, UIDs,
    /// MODSEQs) through the target's sync_server (--sync); only where the user does
    /// not exist there.
    #[arg(long, requires = "sync", conflicts_with_all = ["into", "to_user", "include_expunged", "messages", "folders", "to_mbox", "to_maildir", "to_eml"])]
    pub exact: bool,
    /// With --exact: the target's sync_server, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub sync: Option<String>,
    /// With --exact: the target partition for the folders (default: Cyrus's `default`).
    #[arg(long, default_value = "default")]
    pub partition: String,
    /// With --exact: continue an exact restore of this user that did not finish.
    #[arg(long, requires = "exact")]
    pub resume: bool,
    /// The IMAP admin to act as the user with.
    #[arg(long, default_value = "cyrus")]
    pub admin: String,
    /// File holding the admin's password (else env CYRVAULT_IMAP_PASSWORD).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Restore into this user instead of the backed-up one.
    #[arg(long)]
    pub to_user: Option<String>,
    /// Restore under this new folder tree ("Restored/2026-11-28") instead of the
    /// original names.
    #[arg(long)]
    pub into: Option<String>,
    /// Also bring back expunged messages and deleted folders still in the backup.
    #[arg(long)]
    pub include_expunged: bool,
    /// With --include-expunged: only what was expunged at or after TIME.
    #[arg(long, requires = "include_expunged")]
    pub expunged_since: Option<String>,
    /// With --include-expunged: only what was expunged at or before TIME.
    #[arg(long, requires = "include_expunged")]
    pub expunged_until: Option<String>,
    /// Merge the backed-up seen database into the `\Seen` flags.
    #[arg(long)]
    pub seen: bool,
    /// Subscribe the user to the restored folders that were subscribed.
    #[arg(long)]
    pub subscriptions: bool,
    /// Upload the sieve scripts over ManageSieve (HOST:PORT; default: the IMAP host,
    /// port 4190) and activate the active one.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    pub sieve: Option<String>,
    /// Print what would be created, appended and skipped; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write an mbox (one folder) or a directory of mboxes instead.
    #[arg(long, conflicts_with_all = ["imap", "to_maildir", "to_eml"])]
    pub to_mbox: Option<PathBuf>,
    /// Write a Maildir++ tree instead.
    #[arg(long, conflicts_with_all = ["imap", "to_eml"])]
    pub to_maildir: Option<PathBuf>,
    /// Write one .eml file per message instead.
    #[arg(long, conflicts_with = "imap")]
    pub to_eml: Option<PathBuf>,
    /// Machine-readable JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// The IMAP port speaks TLS from the first byte (imaps, 993) instead of STARTTLS.
    #[arg(long)]
    pub tls_implicit: bool,
}

/// TLS to a server, with its certificate checked (doc/security.md).
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Require TLS (STARTTLS); without --tls-ca-file or --tls-pin the server's
    /// certificate is checked against the system's CAs.
    #[arg(long)]
    pub tls: bool,
    /// Trust servers whose certificate chain leads to a CA in this PEM file
    /// (implies --tls).
    #[arg(long)]
    pub tls_ca_file: Option<PathBuf>,
    /// Trust the server whose certificate has this SHA-256 fingerprint (as
    /// `openssl x509 -noout -fingerprint -sha256` prints it; implies --tls).
    #[arg(long)]
    pub tls_pin: Option<String>,
    /// The name the server's certificate must carry (default: the host of the address).
    #[arg(long)]
    pub tls_server_name: Option<String>,
}
