//! `cyrvault reindex USER...|--all [--json]`: rebuild each catalog from its archive
//! alone. Exit status 65 (EX_DATAERR) when a damaged member or run had to be skipped.

use std::process::ExitCode;

use serde::Serialize;

use cyrvault::admin::{self, ReindexReport};

use crate::args::TargetsArgs;
use crate::cmd_verify::{done, progress, targets};
use crate::output;

#[derive(Serialize)]
struct All<'a> {
    ok: bool,
    users: &'a [ReindexReport],
    errors: Vec<(String, String)>,
}

fn print_human(r: &ReindexReport) {
    println!(
        "{}: {} runs, {} messages, {} members indexed into {}",
        r.user,
        r.runs_indexed.len(),
        r.messages,
        r.members_scanned,
        r.catalog.display()
    );
    for d in &r.damaged {
        println!(
            "  skipped damaged member at offset {} ({} bytes): {}",
            d.offset, d.len, d.error
        );
    }
    for p in &r.problems {
        let run = p.run.map_or_else(String::new, |r| format!("run {r}: "));
        let lost = if p.run_lost { " (run not indexed)" } else { "" };
        println!("  {run}{}{lost}", p.what);
    }
    if let Some((o, l)) = r.truncated_tail {
        println!("  note: {l} bytes at offset {o} are a crash leftover (ignored)");
    }
    if !r.unindexed_members.is_empty() {
        println!(
            "  note: members no run lists (a crashed run's): {:?}",
            r.unindexed_members
        );
    }
}

pub fn run(a: &TargetsArgs, quiet: bool) -> Result<ExitCode, cyrvault::Error> {
    let users = targets(a)?;
    let pb = progress(&users, quiet, "reindex");
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    // Only temporary failures (an archive locked by a running backup): retry later.
    let mut all_temporary = true;
    for ua in &users {
        pb.set_message(ua.user.clone());
        match admin::reindex(ua) {
            Ok(r) => {
                if !a.opts.json {
                    pb.suspend(|| print_human(&r));
                }
                reports.push(r);
            }
            Err(e) => {
                pb.suspend(|| eprintln!("cyrvault reindex: {}: {e}", ua.user));
                all_temporary &= e.is_temporary();
                errors.push((ua.user.clone(), e.to_string()));
            }
        }
        done(&pb, ua);
    }
    pb.finish_and_clear();
    let ok = errors.is_empty() && reports.iter().all(|r| !r.failed());
    if a.opts.json {
        output::io_result(output::json(&All {
            ok,
            users: &reports,
            errors,
        }))?;
    }
    let reports_ok = reports.iter().all(|r| !r.failed());
    Ok(if ok {
        ExitCode::SUCCESS
    } else if reports_ok && all_temporary {
        ExitCode::from(cyrvault::error::EX_TEMPFAIL as u8)
    } else {
        ExitCode::from(cyrvault::error::EX_DATAERR as u8)
    })
}
