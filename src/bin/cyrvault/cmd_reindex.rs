//! `cyrvault reindex USER...|--all [--json]`: rebuild each catalog from its archive
//! alone. Exit status 65 (EX_DATAERR) when a damaged member or run had to be skipped.

use std::process::ExitCode;

use serde::Serialize;

use cyrvault::admin::{self, ReindexReport};

use crate::args::TargetsArgs;
use crate::cmd_verify::{Gathered, each_archive};
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
    // Only temporary failures (an archive locked by a running backup): retry later.
    let Gathered {
        reports,
        errors,
        all_temporary,
    } = each_archive(a, quiet, "reindex", admin::reindex, print_human)?;
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
