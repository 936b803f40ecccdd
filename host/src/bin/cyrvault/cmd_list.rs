//! `cyrvault list [--vault DIR] [--stale AGE] [--json]`.

use std::process::ExitCode;

use cyrvault_host::admin;

use crate::args::ListArgs;
use crate::output;

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Human size: `1.5 MiB`.
pub fn size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn run(a: &ListArgs) -> Result<ExitCode, cyrvault_host::Error> {
    let stale = a.stale.as_deref().map(admin::parse_duration).transpose()?;
    let r = admin::list(&a.opts.vault, stale, now())?;
    if a.opts.json {
        output::io_result(output::json(&r))?;
    } else {
        let rows: Vec<Vec<String>> = r
            .users
            .iter()
            .map(|u| {
                vec![
                    u.user.clone(),
                    u.last_run_finished
                        .map_or_else(|| "never".into(), admin::format_time),
                    u.last_run.map_or_else(|| "-".into(), |n| n.to_string()),
                    u.last_checked
                        .map_or_else(|| "-".into(), admin::format_time),
                    u.runs.to_string(),
                    size(u.archive_bytes),
                    u.id.clone(),
                    if u.holds.is_empty() {
                        String::new()
                    } else {
                        format!("HELD ({})", u.holds.len())
                    },
                    u.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        output::io_result(output::table(
            &[
                "USER", "LAST RUN", "RUN", "CHECKED", "RUNS", "SIZE", "ID", "HOLD", "",
            ],
            &rows,
        ))?;
    }
    Ok(if r.failed() {
        ExitCode::from(cyrvault_host::error::EX_DATAERR as u8)
    } else if stale.is_some() && !r.users.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
