//! `cyrvault`: the admin and backup-server command. This file only dispatches:
//! argv → options → one library call → output and exit status.

mod args;
mod cmd_backup;
mod cmd_cat;
mod cmd_discover;
mod cmd_forget;
mod cmd_hold;
mod cmd_inspect;
mod cmd_list;
mod cmd_ls;
mod cmd_man;
mod cmd_metrics;
mod cmd_prune;
mod cmd_reindex;
mod cmd_restore;
mod cmd_run;
mod cmd_show;
mod cmd_stats;
mod cmd_status;
mod cmd_verify;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let level = match (cli.verbose, cli.quiet) {
        (_, true) => log::LevelFilter::Error,
        (0, _) => log::LevelFilter::Warn,
        (1, _) => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    cyrvault::log::init_stderr(level);
    let result = match &cli.command {
        args::Command::Inspect(a) => cmd_inspect::run(a),
        args::Command::List(a) => cmd_list::run(a),
        args::Command::Show(a) => cmd_show::run(a),
        args::Command::Ls(a) => cmd_ls::run(a),
        args::Command::Cat(a) => cmd_cat::run(a),
        args::Command::Verify(a) => cmd_verify::run(a, cli.quiet),
        args::Command::Reindex(a) => cmd_reindex::run(a, cli.quiet),
        args::Command::Stats(a) => cmd_stats::run(a),
        args::Command::Prune(a) => cmd_prune::run(a, cli.quiet),
        args::Command::Forget(a) => cmd_forget::run(a),
        args::Command::Hold(a) => cmd_hold::run(a),
        args::Command::Backup(a) => cmd_backup::run(a),
        args::Command::Restore(a) => cmd_restore::run(a),
        args::Command::Discover(a) => cmd_discover::run(a),
        args::Command::Run(a) => cmd_run::run(a),
        args::Command::FleetStatus(a) => cmd_run::status(a),
        args::Command::Metrics(a) => cmd_metrics::run(a),
        args::Command::Status(a) => cmd_status::run(a),
        args::Command::Worker(a) => cmd_discover::worker(a),
        args::Command::Completions(a) => cmd_man::completions(a),
        args::Command::Man(a) => cmd_man::man(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => output::fail(cli.command.name(), &e),
    }
}
