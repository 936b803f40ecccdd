//! `cyrvault prune USER...|--all --keep-* ... [--dry-run] [--wait D] [--json]`: remove
//! runs by a policy (restic's vocabulary, doc/retention.md) and compact each archive.
//! A held user named on the command line is refused (exit 64); with `--all` it is
//! skipped and said so. A locked archive (a backup running) fails at once (exit 75)
//! unless `--wait`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use cyrvault_host::admin::{self, UserArchive};
use cyrvault_host::retention::{
    self, Count, Policy, PruneOptions, PruneReport, RetentionError, Target,
};

use crate::args::AdminOpts;
use crate::cmd_list::size;
use crate::output;

/// The `--keep-*` options (also `prune_keep_*` in cyrvault.conf).
#[derive(Debug, Args, Default)]
pub struct PolicyArgs {
    /// Keep the N newest runs (`unlimited`: all).
    #[arg(long, value_name = "N")]
    pub keep_last: Option<String>,
    /// Keep the newest run of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<String>,
    /// Keep the newest run of each of the last N days that have one.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<String>,
    /// Keep the newest run of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<String>,
    /// Keep the newest run of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<String>,
    /// Keep the newest run of each of the last N years that have one.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<String>,
    /// Keep every run within DURATION of the newest run (`30d`, `2w`, `1y`).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Deleted folders and expunged messages leave every run DURATION after the run
    /// that found them gone.
    #[arg(long, value_name = "DURATION")]
    pub keep_deleted: Option<String>,
}

impl PolicyArgs {
    pub fn policy(&self) -> cyrvault_host::Result<Policy> {
        let count = |s: &Option<String>| s.as_deref().map(Count::parse).transpose();
        let dur = |s: &Option<String>| s.as_deref().map(admin::parse_duration).transpose();
        Ok(Policy {
            keep_last: count(&self.keep_last)?,
            keep_hourly: count(&self.keep_hourly)?,
            keep_daily: count(&self.keep_daily)?,
            keep_weekly: count(&self.keep_weekly)?,
            keep_monthly: count(&self.keep_monthly)?,
            keep_yearly: count(&self.keep_yearly)?,
            keep_within: dur(&self.keep_within)?,
            keep_deleted: dur(&self.keep_deleted)?,
        })
    }
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub opts: AdminOpts,
    /// Every archive in the vault.
    #[arg(long, conflicts_with = "users")]
    pub all: bool,
    #[arg(required_unless_present = "all")]
    pub users: Vec<String>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Print which runs go and which messages and bytes are freed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait this long for a user's archive while a backup of it runs (default: fail
    /// at once, exit 75).
    #[arg(long, value_name = "DURATION")]
    pub wait: Option<String>,
}

/// `Target` of an admin archive.
pub fn target(ua: &UserArchive) -> Target {
    Target {
        user: ua.user.clone(),
        archive: ua.archive.clone(),
        catalog: ua.catalog.clone(),
    }
}

#[derive(Serialize)]
struct All<'a> {
    ok: bool,
    dry_run: bool,
    users: &'a [PruneReport],
    /// Held users skipped by `--all`, with their holds.
    held: Vec<(String, String)>,
    errors: Vec<(String, String)>,
}

fn print_human(r: &PruneReport) {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    if r.nothing_to_do {
        println!(
            "{}: nothing to remove ({}), {} runs kept",
            r.user,
            r.policy,
            r.runs_kept.len()
        );
        return;
    }
    println!(
        "{}: {} ({}): {verb} {} of {} runs {:?}; {} messages ({}) freed, {} erased, {} folders taken out; archive {} -> {}{}",
        r.user,
        if r.dry_run { "dry run" } else { "pruned" },
        r.policy,
        r.runs_removed.len(),
        r.runs.len(),
        r.runs_removed,
        r.messages_freed,
        size(r.message_bytes_freed),
        r.messages_erased,
        r.folders_removed.len(),
        size(r.bytes_before),
        size(r.bytes_after),
        if r.dry_run { " (estimate)" } else { "" }
    );
    for d in &r.runs {
        println!(
            "  run {:>6}  {}  {}  {}",
            d.run,
            admin::format_time(d.started),
            if d.keep { "keep" } else { "REMOVE" },
            d.reasons.join(", ")
        );
    }
    for f in &r.folders_removed {
        println!("  folder taken out: {} ({})", f.name, f.uniqueid);
    }
    if let Some(c) = &r.compaction {
        println!(
            "  {} members copied ({}), {} re-packed, {} dropped, {} inspected; {} manifests rewritten; {} ms",
            c.members_copied,
            size(c.bytes_copied),
            c.members_repacked,
            c.members_dropped,
            c.members_inspected,
            c.manifests_rewritten,
            c.duration_ms
        );
    }
}

pub fn run(a: &PruneArgs, _quiet: bool) -> Result<ExitCode, cyrvault_host::Error> {
    let policy = a.policy.policy()?;
    if policy.is_empty() {
        return Err(cyrvault_host::Error::refused(
            "no policy: give at least one --keep-* option".into(),
        ));
    }
    let wait = a
        .wait
        .as_deref()
        .map(admin::parse_duration)
        .transpose()?
        .map(Duration::from_secs);
    let users = if a.all {
        admin::vault_archives(&a.opts.vault)?
    } else {
        a.users
            .iter()
            .map(|u| admin::find_user(&a.opts.vault, u))
            .collect::<Result<_, _>>()?
    };
    let opts = PruneOptions {
        policy,
        dry_run: a.dry_run,
        wait,
        ..PruneOptions::default()
    };
    let mut reports = Vec::new();
    let mut held = Vec::new();
    let mut errors = Vec::new();
    let mut code = 0i32;
    for ua in &users {
        match retention::prune(&target(ua), &opts) {
            Ok(r) => {
                if !a.opts.json {
                    print_human(&r);
                }
                reports.push(r);
            }
            Err(RetentionError::Held { user, holds }) if a.all => {
                if !a.opts.json {
                    println!("{user}: held, not pruned: {}", holds.join("; "));
                }
                held.push((user, holds.join("; ")));
            }
            Err(e) => {
                eprintln!("cyrvault prune: {}: {e}", ua.user);
                if code == 0 {
                    code = e.exit_code();
                }
                errors.push((ua.user.clone(), e.to_string()));
            }
        }
    }
    if a.opts.json {
        output::io_result(output::json(&All {
            ok: errors.is_empty(),
            dry_run: a.dry_run,
            users: &reports,
            held,
            errors,
        }))?;
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
