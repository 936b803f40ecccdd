//! `cyrvault show USER [--json]`: runs and folders with their name history.

use std::process::ExitCode;

use cyrvault_host::admin;

use crate::args::ShowArgs;
use crate::cmd_list::size;
use crate::output;

pub fn run(a: &ShowArgs) -> Result<ExitCode, cyrvault_host::Error> {
    let ua = admin::find_user(&a.opts.vault, &a.user)?;
    let r = admin::show(&ua)?;
    if a.opts.json {
        return output::io_result(output::json(&r));
    }
    println!("user {} (archive {})", r.user, ua.archive.display());
    for h in &r.holds {
        println!(
            "LEGAL HOLD: {} (placed {})",
            h.describe(),
            admin::format_time(h.at)
        );
    }
    let rows: Vec<Vec<String>> = r
        .runs
        .iter()
        .map(|x| {
            vec![
                x.run.to_string(),
                admin::format_time(x.started),
                format!("{}s", x.finished.saturating_sub(x.started)),
                x.server.clone(),
                x.user.clone(),
                x.messages_added.to_string(),
                size(x.bytes_added),
                size(x.stored_bytes),
            ]
        })
        .collect();
    output::io_result(output::table(
        &[
            "RUN",
            "STARTED",
            "TOOK",
            "SERVER",
            "AS USER",
            "NEW MSGS",
            "NEW BYTES",
            "STORED",
        ],
        &rows,
    ))?;
    println!();
    let last = r.runs.last().map_or(0, |x| x.run);
    let rows: Vec<Vec<String>> = r
        .folders
        .iter()
        .map(|f| {
            let names: Vec<String> = f
                .names
                .iter()
                .map(|n| {
                    // a span in Cyrus's delayed-delete area keeps the former name
                    let del = if n.deleted_at.is_some() {
                        "deleted, "
                    } else {
                        ""
                    };
                    match n.to_run {
                        Some(t) => format!("{} ({del}runs {}-{})", n.name, n.from_run, t - 1),
                        None => format!("{} ({del}runs {}-)", n.name, n.from_run),
                    }
                })
                .collect();
            vec![
                f.name.clone(),
                if let (Some(t), true) = (f.deleted_at, f.last_run == last) {
                    format!("deleted {} (held by Cyrus)", admin::format_time(t))
                } else if let Some(t) = f.deleted_at {
                    format!(
                        "deleted {}, gone after run {}",
                        admin::format_time(t),
                        f.last_run
                    )
                } else if f.deleted {
                    format!("deleted after run {}", f.last_run)
                } else {
                    "live".into()
                },
                f.uniqueid.clone(),
                names.join(", "),
            ]
        })
        .collect();
    output::io_result(output::table(
        &["FOLDER", "STATE", "UNIQUEID", "NAMES"],
        &rows,
    ))?;
    if !r.retention.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = r
            .retention
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    admin::format_time(e.at),
                    e.kind.clone(),
                    e.reason.clone(),
                ]
            })
            .collect();
        output::io_result(output::table(&["EVENT", "AT", "KIND", "REASON"], &rows))?;
    }
    Ok(ExitCode::SUCCESS)
}
