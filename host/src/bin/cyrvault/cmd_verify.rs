//! `cyrvault verify USER...|--all [--jobs N] [--json]`: every member inflates, every
//! message hashes to its name, archive and catalog agree (N archives at once, each with
//! its archive and catalog sides on two threads). Exit status 65 (EX_DATAERR) when anything
//! is damaged or disagrees; damage names the member and what it takes with it.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use cyrvault_host::admin::{self, MetaAffected, UserArchive, VerifyReport};

use crate::args::TargetsArgs;
use crate::output;

/// The archives named on the command line (or all of the vault's).
pub fn targets(a: &TargetsArgs) -> Result<Vec<UserArchive>, cyrvault_host::Error> {
    if a.all {
        return admin::vault_archives(&a.opts.vault);
    }
    a.users
        .iter()
        .map(|u| admin::find_user(&a.opts.vault, u))
        .collect()
}

/// A progress bar over `users`' archives on stderr, measured in archive bytes, only
/// when stderr is a terminal (and not `--quiet`). It ticks on its own: one archive can
/// take minutes to inflate. Advance it with [`done`] after each archive.
pub fn progress(users: &[UserArchive], quiet: bool, verb: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let total: u64 = users.iter().map(archive_len).sum();
    let pb = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {prefix} [{bar:30}] {bytes}/{total_bytes} {msg} ({elapsed}, {eta} left)",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(verb.to_string());
    pb.enable_steady_tick(Duration::from_millis(150));
    pb
}

fn archive_len(ua: &UserArchive) -> u64 {
    std::fs::metadata(&ua.archive).map_or(0, |m| m.len())
}

/// Advance the bar past `ua`'s archive.
pub fn done(pb: &ProgressBar, ua: &UserArchive) {
    pb.inc(archive_len(ua));
}

/// What [`each_archive`] gathered: the reports, `(user, error)` for each archive that
/// could not be processed, and whether every such error was temporary (an archive
/// locked by a running backup: retry later).
pub struct Gathered<R> {
    pub reports: Vec<R>,
    pub errors: Vec<(String, String)>,
    pub all_temporary: bool,
}

/// The command-line's archives, `--jobs` at once (`admin::map_ordered`), under a
/// progress bar: `op` on each, `print` of its report unless `--json`, `cyrvault VERB:
/// USER: error` on stderr for one that fails; reports and errors in the archives'
/// order whatever order they finished in.
pub fn each_archive<R: Send>(
    a: &TargetsArgs,
    quiet: bool,
    verb: &str,
    op: impl Fn(&UserArchive) -> cyrvault_host::Result<R> + Sync,
    print: impl Fn(&R),
) -> Result<Gathered<R>, cyrvault_host::Error> {
    if a.jobs == Some(0) {
        return Err(cyrvault_host::Error::refused(
            "--jobs must be at least 1".into(),
        ));
    }
    let users = targets(a)?;
    let pb = progress(&users, quiet, verb);
    let mut g = Gathered {
        reports: Vec::new(),
        errors: Vec::new(),
        all_temporary: true,
    };
    let jobs = a.jobs.unwrap_or_else(cyrvault_host::backup::default_jobs);
    admin::map_ordered(&users, jobs, &op, |i, r| {
        let ua = &users[i];
        pb.set_message(ua.user.clone());
        match r {
            Ok(r) => {
                if !a.opts.json {
                    pb.suspend(|| print(&r));
                }
                g.reports.push(r);
            }
            Err(e) => {
                pb.suspend(|| eprintln!("cyrvault {verb}: {}: {e}", ua.user));
                g.all_temporary &= e.is_temporary();
                g.errors.push((ua.user.clone(), e.to_string()));
            }
        }
        done(&pb, ua);
    });
    pb.finish_and_clear();
    Ok(g)
}

#[derive(Serialize)]
struct All<'a> {
    ok: bool,
    users: &'a [VerifyReport],
    /// Archives that could not be read at all.
    errors: Vec<(String, String)>,
}

fn meta_line(m: &MetaAffected) -> String {
    let what = serde_json::to_string(&m.entry).unwrap_or_default();
    let runs: Vec<String> = m.runs.iter().map(u64::to_string).collect();
    format!(
        "{what} written by run {} (needed by runs {})",
        m.snapshot_run,
        runs.join(",")
    )
}

fn print_human(r: &VerifyReport) {
    println!(
        "{}: {} ({} members, {} messages hashed, {} bytes)",
        r.user,
        if r.ok { "ok" } else { "FAILED" },
        r.members_checked,
        r.messages_checked,
        r.archive_bytes
    );
    for d in &r.damaged {
        let runs: Vec<String> = d.runs.iter().map(u64::to_string).collect();
        println!(
            "  damaged member at offset {} ({} bytes): {}",
            d.offset, d.len, d.error
        );
        println!("    runs affected: {}", runs.join(","));
        for m in &d.messages {
            let uses: Vec<String> = m
                .uses
                .iter()
                .map(|u| {
                    let runs: Vec<String> = u.runs.iter().map(u64::to_string).collect();
                    format!("{} uid {} (runs {})", u.folder, u.uid, runs.join(","))
                })
                .collect();
            let state = if m.readable {
                " (its own bytes still read back)"
            } else {
                ""
            };
            println!("    message {}{state}: {}", m.guid, uses.join("; "));
        }
        for m in &d.meta {
            println!("    {}", meta_line(m));
        }
    }
    for m in &r.mismatches {
        match m.member_offset {
            Some(o) => println!("  mismatch (member at {o}): {}", m.what),
            None => println!("  mismatch: {}", m.what),
        }
    }
    for n in &r.notes {
        println!("  note: {n}");
    }
}

pub fn run(a: &TargetsArgs, quiet: bool) -> Result<ExitCode, cyrvault_host::Error> {
    let Gathered {
        reports, errors, ..
    } = each_archive(a, quiet, "verify", admin::verify, print_human)?;
    let ok = errors.is_empty() && reports.iter().all(|r| r.ok);
    if a.opts.json {
        output::io_result(output::json(&All {
            ok,
            users: &reports,
            errors,
        }))?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(cyrvault_host::error::EX_DATAERR as u8)
    })
}
