//! `cyrvault forget USER (--message GUID... | --folder NAME | --before DATE | --all)
//! --reason TEXT [--dry-run] [--wait D] [--json]`: erase for good, with a record
//! (doc/retention.md). A held user is refused.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use cyrvault::cyrus::Guid;
use cyrvault_host::admin;
use cyrvault_host::retention::{self, ForgetOptions, ForgetWhat};
use cyrvault_host::vault::Vault;

use crate::args::AdminOpts;
use crate::cmd_list::size;
use crate::cmd_prune::target;
use crate::output;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["messages", "folder", "before", "all"])))]
pub struct ForgetArgs {
    #[command(flatten)]
    pub opts: AdminOpts,
    pub user: String,
    /// These messages (GUIDs, 40 hex digits).
    #[arg(long = "message", value_name = "GUID", num_args = 1..)]
    pub messages: Vec<String>,
    /// A folder (its name at the latest run, or its UniqueID): it leaves every run, and
    /// every message it ever held leaves the archive.
    #[arg(long)]
    pub folder: Option<String>,
    /// Every message with an internal date before DATE.
    #[arg(long, value_name = "DATE")]
    pub before: Option<String>,
    /// The whole archive and catalog, and the user's vault entry.
    #[arg(long)]
    pub all: bool,
    /// Why (required; kept in the archive's record of the erasure).
    #[arg(long, required = true)]
    pub reason: String,
    /// Say what would be erased; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait this long for the archive while a backup of the user runs.
    #[arg(long, value_name = "DURATION")]
    pub wait: Option<String>,
}

pub fn run(a: &ForgetArgs) -> Result<ExitCode, cyrvault_host::Error> {
    let what = if a.all {
        ForgetWhat::All
    } else if let Some(f) = &a.folder {
        ForgetWhat::Folder(f.clone())
    } else if let Some(d) = &a.before {
        ForgetWhat::Before(admin::parse_time(d)?)
    } else {
        let gs = a
            .messages
            .iter()
            .map(|g| {
                Guid::from_hex(g).ok_or_else(|| {
                    cyrvault_host::Error::refused(format!("{g:?} is not a GUID (40 hex digits)"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        ForgetWhat::Messages(gs)
    };
    let wait = a
        .wait
        .as_deref()
        .map(admin::parse_duration)
        .transpose()?
        .map(Duration::from_secs);
    let ua = admin::find_user(&a.opts.vault, &a.user)?;
    let vault = Vault::open(&a.opts.vault)?;
    let r = retention::forget(
        &target(&ua),
        Some(&vault),
        &ForgetOptions {
            what,
            reason: a.reason.clone(),
            dry_run: a.dry_run,
            wait,
        },
    )?;
    if a.opts.json {
        return output::io_result(output::json(&r));
    }
    let verb = if r.dry_run { "would erase" } else { "erased" };
    if !r.removed_files.is_empty() {
        println!(
            "{}: {verb} the whole archive ({}): {}",
            r.user,
            size(r.bytes_before),
            r.removed_files.join(" ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: {verb} {} message(s) ({}) from {} run(s); archive {} -> {}",
        r.user,
        r.messages.len(),
        size(r.message_bytes),
        r.runs,
        size(r.bytes_before),
        size(r.bytes_after)
    );
    for (g, s) in &r.messages {
        println!("  {g}  {}", size(*s));
    }
    for f in &r.folders_removed {
        println!(
            "  folder taken out of every run: {} ({})",
            f.name, f.uniqueid
        );
    }
    for (u, n) in &r.folders_touched {
        println!("  folder that listed them: {n} ({u})");
    }
    if !r.still_on_server.is_empty() {
        println!(
            "  note: still on the server at the last run in {}: not backed up again; delete \
             it there too",
            r.still_on_server.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
