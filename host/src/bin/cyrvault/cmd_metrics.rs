//! `cyrvault metrics [--config F] [--output FILE]`: the fleet's health as Prometheus
//! text (`fleet::metrics`), on stdout or written atomically to FILE (for
//! node_exporter's textfile collector).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use cyrvault_host::fleet::{self, metrics};

use crate::cmd_discover::DEFAULT_CONFIG;
use crate::output;

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// The fleet configuration.
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Write to FILE atomically (a temporary file renamed over it) instead of stdout;
    /// `-` for stdout. Default: stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(a: &MetricsArgs) -> Result<ExitCode, cyrvault_host::Error> {
    let conf = fleet::load_fleet_conf(&a.config)?;
    let mut dir = fleet::open_directory(&conf)?;
    let snap = metrics::collect(&mut dir, fleet::now_ms(), conf.stale_after_secs)?;
    let text = metrics::render(&snap, None);
    match &a.output {
        Some(p) if p.as_os_str() != "-" => {
            metrics::write_atomically(p, &text)?;
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            use std::io::Write;
            output::io_result(std::io::stdout().lock().write_all(text.as_bytes()))
        }
    }
}
