//! `cyrvault hold USER --reason TEXT [--until DATE]` places a legal hold;
//! `hold USER --release [--id N] [--reason TEXT]` releases one (or all);
//! `hold USER` lists those in force. While held, prune and forget refuse the user.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use cyrvault_host::admin;
use cyrvault_host::retention::{self, HoldInfo};

use crate::args::AdminOpts;
use crate::cmd_prune::target;
use crate::output;

#[derive(Debug, Args)]
pub struct HoldArgs {
    #[command(flatten)]
    pub opts: AdminOpts,
    pub user: String,
    /// Why (places a hold; with --release, why it ends).
    #[arg(long)]
    pub reason: Option<String>,
    /// The hold ends by itself at DATE (default: when released).
    #[arg(long, value_name = "DATE", conflicts_with = "release")]
    pub until: Option<String>,
    /// Release the user's holds (or only --id N).
    #[arg(long)]
    pub release: bool,
    /// With --release: only this hold.
    #[arg(long, value_name = "N", requires = "release")]
    pub id: Option<u64>,
    /// Wait this long for the archive while a backup of the user runs.
    #[arg(long, value_name = "DURATION")]
    pub wait: Option<String>,
}

#[derive(Serialize)]
struct Out<'a> {
    user: &'a str,
    action: &'a str,
    holds: &'a [HoldInfo],
}

fn print(holds: &[HoldInfo]) {
    for h in holds {
        println!("  {} (placed {})", h.describe(), admin::format_time(h.at));
    }
}

pub fn run(a: &HoldArgs) -> Result<ExitCode, cyrvault_host::Error> {
    let ua = admin::find_user(&a.opts.vault, &a.user)?;
    let t = target(&ua);
    let wait = a
        .wait
        .as_deref()
        .map(admin::parse_duration)
        .transpose()?
        .map(Duration::from_secs);
    let (action, holds) = if a.release {
        let reason = a.reason.clone().unwrap_or_default();
        ("released", retention::release(&t, a.id, &reason, wait)?)
    } else if let Some(reason) = &a.reason {
        let until = a.until.as_deref().map(admin::parse_time).transpose()?;
        ("placed", vec![retention::hold(&t, until, reason, wait)?])
    } else {
        if a.until.is_some() {
            return Err(cyrvault_host::Error::refused(
                "a hold needs a --reason".into(),
            ));
        }
        ("in force", retention::holds_of(&t)?)
    };
    if a.opts.json {
        return output::io_result(output::json(&Out {
            user: &t.user,
            action,
            holds: &holds,
        }));
    }
    println!("{}: {} hold(s) {action}", t.user, holds.len());
    print(&holds);
    Ok(ExitCode::SUCCESS)
}
