//! `cyrvault discover [--config F] [--json]`: fill the fleet's user directory from
//! every server in `cyrvault.conf` (users, partitions, drive units). Exit status 0
//! when every server was asked and listed everything; else the code of the most
//! severe failure class seen (78 a wrong servername or a server that cannot list
//! shared mailboxes, 77 authentication refused, 75 unreachable, ...); and
//! `cyrvault worker` (hidden): one worker process of `cyrvault run`, printing its
//! events as JSON lines on stdout.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use cyrvault_host::error::ErrorKind;
use cyrvault_host::fleet::{self, Event};

use crate::output;

/// Where `cyrvault.conf` is unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/cyrvault.conf";

#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// The fleet configuration (imapd.conf syntax).
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The fleet configuration.
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The round to work on (the parent's).
    #[arg(long)]
    pub round: i64,
}

pub fn run(a: &DiscoverArgs) -> Result<ExitCode, cyrvault_host::Error> {
    let conf = fleet::load_fleet_conf(&a.config)?;
    let mut dir = fleet::open_directory(&conf)?;
    let found = fleet::discover(&mut dir, &conf);
    let worst = found
        .iter()
        .filter(|d| d.error.is_some())
        .map(|d| d.class.unwrap_or(ErrorKind::Temporary))
        .reduce(ErrorKind::worst);
    for d in &found {
        if let Some(e) = &d.error {
            eprintln!("cyrvault discover: {}: {e}", d.server);
        }
    }
    let printed = if a.json {
        output::json(&found)
    } else {
        let rows: Vec<Vec<String>> = found
            .iter()
            .map(|d| {
                vec![
                    d.server.clone(),
                    d.counts.users.to_string(),
                    d.counts.new.to_string(),
                    d.counts.moved.to_string(),
                    d.counts.gone.to_string(),
                    d.units
                        .iter()
                        .map(|(u, p)| format!("{u}={}", p.join(",")))
                        .collect::<Vec<_>>()
                        .join(" "),
                    if d.error.is_some() { "FAILED" } else { "ok" }.to_string(),
                ]
            })
            .collect();
        output::table(
            &[
                "server",
                "users",
                "new",
                "moved",
                "gone",
                "units (partitions)",
                "status",
            ],
            &rows,
        )
    };
    output::io_result(printed)?;
    Ok(match worst {
        None => ExitCode::SUCCESS,
        Some(k) => ExitCode::from(u8::try_from(k.exit_code()).unwrap_or(1)),
    })
}

pub fn worker(a: &WorkerArgs) -> Result<ExitCode, cyrvault_host::Error> {
    let conf = fleet::load_fleet_conf(&a.config)?;
    let mut dir = fleet::open_directory(&conf)?;
    let owner = format!("{}:{}", fleet::run::hostname(), std::process::id());
    let mut emit = |ev: Event| {
        if let Ok(line) = serde_json::to_string(&ev) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    };
    fleet::work(&conf, &mut dir, a.round, &owner, &mut emit)?;
    Ok(ExitCode::SUCCESS)
}
