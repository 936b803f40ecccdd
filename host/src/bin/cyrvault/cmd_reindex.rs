//! `cyrvault reindex USER...|--all [--salvage] [--json]`: rebuild each catalog from its
//! archive alone. A damaged archive is refused (its catalog kept) unless `--salvage`,
//! which rebuilds from what can be read and says what was lost. Exit status 65
//! (EX_DATAERR) when an archive is damaged, refused or salvaged alike.

use std::process::ExitCode;

use serde::Serialize;

use cyrvault_host::admin::{self, ReindexOptions, ReindexReport};

use crate::args::ReindexArgs;
use crate::cmd_verify::{Gathered, each_archive};
use crate::output;

#[derive(Serialize)]
struct All<'a> {
    ok: bool,
    users: &'a [ReindexReport],
    errors: Vec<(String, String)>,
}

fn print_human(r: &ReindexReport) {
    if r.refused {
        println!(
            "{}: REFUSED: the archive is damaged; the catalog {} was kept as it was \
             (`cyrvault reindex --salvage` rebuilds it from what can be read)",
            r.user,
            r.catalog.display()
        );
        for d in &r.damage {
            println!("  {d}");
        }
        return;
    }
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
    if !r.lost.runs.is_empty() {
        println!("  LOST: runs {:?} of the old catalog", r.lost.runs);
    }
    if !r.lost.messages.is_empty() {
        println!(
            "  LOST: {} message(s) of the old catalog: {}",
            r.lost.messages.len(),
            r.lost
                .messages
                .iter()
                .map(|g| g.to_hex())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if let Some(why) = &r.lost.no_old_catalog {
        println!("  note: no old catalog to compare with ({why})");
    }
    if !r.unindexed_members.is_empty() {
        println!(
            "  note: members no run lists (a crashed run's): {:?}",
            r.unindexed_members
        );
    }
}

pub fn run(r: &ReindexArgs, quiet: bool) -> Result<ExitCode, cyrvault_host::Error> {
    let a = &r.targets;
    let opts = ReindexOptions { salvage: r.salvage };
    // Only temporary failures (an archive locked by a running backup): retry later.
    let Gathered {
        reports,
        errors,
        all_temporary,
    } = each_archive(
        a,
        quiet,
        "reindex",
        |ua| admin::reindex(ua, &opts),
        print_human,
    )?;
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
        ExitCode::from(cyrvault_host::error::EX_TEMPFAIL as u8)
    } else {
        ExitCode::from(cyrvault_host::error::EX_DATAERR as u8)
    })
}
