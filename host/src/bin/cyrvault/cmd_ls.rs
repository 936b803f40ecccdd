//! `cyrvault ls USER [FOLDER] [--at TIME|--run N] [--json]`.

use std::cell::RefCell;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

use cyrvault_host::admin::{self, RunSel};

use crate::args::{LsArgs, RunSelArgs};
use crate::cmd_list::size;
use crate::output;

/// `--at` / `--run` as a [`RunSel`].
pub fn run_sel(a: &RunSelArgs) -> Result<RunSel, cyrvault_host::Error> {
    Ok(match (&a.at, a.run) {
        (Some(t), _) => RunSel::At(admin::parse_time(t)?),
        (None, Some(n)) => RunSel::Run(n),
        (None, None) => RunSel::Latest,
    })
}

pub fn run(a: &LsArgs) -> Result<ExitCode, cyrvault_host::Error> {
    let ua = admin::find_user(&a.opts.vault, &a.user)?;
    let sel = run_sel(&a.sel)?;
    if let Some(folder) = &a.folder {
        return messages(&ua, folder, sel, a.opts.json);
    }
    let r = admin::ls(&ua, None, sel)?;
    if a.opts.json {
        return output::io_result(output::json(&r));
    }
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
                if f.deleted {
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

fn out_err(e: std::io::Error) -> cyrvault_host::Error {
    cyrvault_host::Error::io("writing", "stdout", e)
}

/// One folder's messages, streamed as the catalog reads them: a table with fixed
/// columns (the widths are known without seeing every row), or JSON with the same
/// shape `ls --json` always had (`{..., "messages": [...]}`), one message per line.
fn messages(
    ua: &admin::UserArchive,
    folder: &str,
    sel: RunSel,
    json: bool,
) -> Result<ExitCode, cyrvault_host::Error> {
    // Both callbacks write to it, one after the other.
    let out = RefCell::new(BufWriter::with_capacity(1 << 16, std::io::stdout().lock()));
    let mut first = true;
    let r = admin::ls_each(
        ua,
        Some(folder),
        sel,
        &mut |r| {
            let Some(f) = &r.folder else {
                return Ok(());
            };
            let mut out = out.borrow_mut();
            if json {
                let mut head = serde_json::to_value(r)
                    .map_err(|e| cyrvault_host::Error::other(format!("encoding JSON: {e}")))?;
                if let Some(m) = head.as_object_mut() {
                    m.remove("messages");
                }
                let head = serde_json::to_string(&head)
                    .map_err(|e| cyrvault_host::Error::other(format!("encoding JSON: {e}")))?;
                // `{...}` without its closing brace, then the messages array.
                let open = head.strip_suffix('}').unwrap_or(&head);
                let comma = if open.ends_with('{') { "" } else { "," };
                write!(out, "{open}{comma}\"messages\":[").map_err(out_err)
            } else {
                writeln!(
                    out,
                    "{} {} at run {}{}\n{:>10}  {:40}  {:20}  {:>10}  FLAGS",
                    r.user,
                    f.name,
                    f.shown_run,
                    if f.deleted { " (deleted since)" } else { "" },
                    "UID",
                    "GUID",
                    "INTERNALDATE",
                    "SIZE"
                )
                .map_err(out_err)
            }
        },
        &mut |m| {
            let mut out = out.borrow_mut();
            if json {
                let line = serde_json::to_string(&m)
                    .map_err(|e| cyrvault_host::Error::other(format!("encoding JSON: {e}")))?;
                let sep = if first { "\n" } else { ",\n" };
                first = false;
                return write!(out, "{sep}{line}").map_err(out_err);
            }
            let mut flags = m.flags.join(" ");
            if m.expunged {
                flags.push_str(" [expunged]");
            }
            writeln!(
                out,
                "{:>10}  {}  {:20}  {:>10}  {}",
                m.uid,
                m.guid.to_hex(),
                admin::format_time(m.internaldate),
                m.size,
                flags.trim()
            )
            .map_err(out_err)
        },
    );
    let mut out = out.into_inner();
    let done = match r {
        Ok(_) if json => writeln!(out, "\n]}}").and_then(|()| out.flush()),
        Ok(_) => out.flush(),
        Err(e) => {
            let _ = out.flush();
            return Err(e);
        }
    };
    output::io_result(done)
}
