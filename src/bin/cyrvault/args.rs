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
    /// Rebuild catalogs from the archives alone.
    Reindex(TargetsArgs),
    /// Raw vs unique vs stored bytes, dedup and compression ratios, runs.
    Stats(StatsArgs),
    /// Pull users' mail from a cyrvaultd (or stock backupcyrusd) into the vault.
    Backup(BackupArgs),
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
            Command::Backup(_) => "backup",
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
    /// The newest run that started at or before TIME (RFC 3339, or
    /// `YYYY-MM-DD[ HH:MM]` in local time or with Z).
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
    #[arg(required_unless_present = "all")]
    pub users: Vec<String>,
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
    /// Back up every user the server lists (USERS).
    #[arg(long)]
    pub all: bool,
    /// Speak only the base protocol (stock backupcyrusd): no CAPABILITY, AUTH, SNAPSHOT.
    #[arg(long)]
    pub base_protocol: bool,
    /// Machine-readable JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}
