//! `cyrvault stats [USER] [--json]`.

use std::process::ExitCode;

use cyrvault_host::admin::{self, UserStats};

use crate::args::StatsArgs;
use crate::cmd_list::size;
use crate::output;

fn row(s: &UserStats) -> Vec<String> {
    let t = &s.totals;
    vec![
        s.user.clone(),
        t.runs.to_string(),
        t.messages.to_string(),
        size(t.raw_bytes),
        size(t.unique_bytes),
        size(t.stored_compressed_bytes),
        format!("{:.2}", s.dedup_ratio),
        format!("{:.3}", s.compression_ratio),
        format!("{:.3}", s.stored_vs_raw),
    ]
}

pub fn run(a: &StatsArgs) -> Result<ExitCode, cyrvault_host::Error> {
    let users = match &a.user {
        Some(u) => vec![admin::find_user(&a.opts.vault, u)?],
        None => admin::vault_archives(&a.opts.vault)?,
    };
    let r = admin::stats(&users)?;
    if a.opts.json {
        output::io_result(output::json(&r))?;
    } else {
        let mut rows: Vec<Vec<String>> = r.users.iter().map(row).collect();
        if r.users.len() > 1 {
            rows.push(row(&r.total));
        }
        output::io_result(output::table(
            &[
                "USER",
                "RUNS",
                "MESSAGES",
                "RAW",
                "UNIQUE",
                "STORED",
                "DEDUP",
                "COMPRESS",
                "STORED/RAW",
            ],
            &rows,
        ))?;
        for (u, e) in &r.errors {
            eprintln!("cyrvault stats: {u}: {e}");
        }
    }
    Ok(if r.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(cyrvault_host::error::EX_DATAERR as u8)
    })
}
