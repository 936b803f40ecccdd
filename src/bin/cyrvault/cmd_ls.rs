//! `cyrvault ls USER [FOLDER] [--at TIME|--run N] [--json]`.

use std::process::ExitCode;

use cyrvault::admin::{self, RunSel};

use crate::args::{LsArgs, RunSelArgs};
use crate::cmd_list::size;
use crate::output;

/// `--at` / `--run` as a [`RunSel`].
pub fn run_sel(a: &RunSelArgs) -> Result<RunSel, cyrvault::Error> {
    Ok(match (&a.at, a.run) {
        (Some(t), _) => RunSel::At(admin::parse_time(t)?),
        (None, Some(n)) => RunSel::Run(n),
        (None, None) => RunSel::Latest,
    })
}

pub fn run(a: &LsArgs) -> Result<ExitCode, cyrvault::Error> {
    let ua = admin::find_user(&a.opts.vault, &a.user)?;
    let r = admin::ls(&ua, a.folder.as_deref(), run_sel(&a.sel)?)?;
    if a.opts.json {
        return output::io_result(output::json(&r));
    }
    match &r.folder {
        None => {
            println!(
                "{} at run {} ({})",
                r.user,
                r.run,
                admin::format_time(r.run_started)
            );
            let rows: Vec<Vec<String>> = r
                .folders
                .iter()
                .map(|f| {
                    vec![
                        f.name.clone(),
                        f.messages.to_string(),
                        size(f.bytes),
                        if let Some(t) = f.deleted_at {
                            format!(
                                "deleted {} (as of run {})",
                                admin::format_time(t),
                                f.last_run
                            )
                        } else if f.deleted {
                            format!("deleted (as of run {})", f.last_run)
                        } else {
                            String::new()
                        },
                        f.uniqueid.clone(),
                    ]
                })
                .collect();
            output::io_result(output::table(
                &["FOLDER", "MESSAGES", "SIZE", "", "UNIQUEID"],
                &rows,
            ))
        }
        Some(f) => {
            println!(
                "{} {} at run {}{}",
                r.user,
                f.name,
                f.shown_run,
                match f.deleted_at {
                    Some(t) => format!(" (deleted {})", admin::format_time(t)),
                    None if f.deleted => " (deleted since)".to_string(),
                    None => String::new(),
                }
            );
            let rows: Vec<Vec<String>> = r
                .messages
                .iter()
                .map(|m| {
                    let mut flags = m.flags.join(" ");
                    if m.expunged {
                        flags.push_str(" [expunged]");
                    }
                    vec![
                        m.uid.to_string(),
                        m.guid.to_hex(),
                        admin::format_time(m.internaldate),
                        m.size.to_string(),
                        flags.trim().to_string(),
                    ]
                })
                .collect();
            output::io_result(output::table(
                &["UID", "GUID", "INTERNALDATE", "SIZE", "FLAGS"],
                &rows,
            ))
        }
    }
}
