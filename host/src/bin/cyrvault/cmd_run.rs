//! `cyrvault run [--config F] [--workers N] [--json]`: back up the whole fleet with N
//! worker processes (`fleet::run_fleet`). On a terminal: live progress (users done of
//! total, bytes, rate, ETA, what each worker is on); otherwise one log line per user;
//! `--json`: the event stream, one JSON object a line, the summary last. Exit status
//! 0 when every user tried in the round was backed up and, with a retention policy,
//! pruned; else the code of the most severe failure class seen among the backups and
//! the prunes, as `cyrvault backup` and `cyrvault prune` give it: 78 (a wrong
//! servername or configuration), 77 (authentication refused), 65 (damaged or refused
//! data), ..., 75 (temporary: retried by the next run, after their backoff).
//! `--metrics-listen ADDR` serves the fleet's Prometheus metrics over HTTP while the
//! run lasts; with `metrics_file` in the config they are written there when it ends.
//!
//! `cyrvault fleet-status [--config F] [--stale 26h] [--json]`: the per-server,
//! per-drive-unit summary of the last round, its failures, and the users whose last
//! good backup is older than `--stale`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use cyrvault_host::error::{EX_SOFTWARE, EX_USAGE};
use cyrvault_host::fleet::metrics::{self, LiveRun};
use cyrvault_host::fleet::{self, Event, RunOptions, RunSummary};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cmd_discover::DEFAULT_CONFIG;
use crate::output;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The fleet configuration (imapd.conf syntax).
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Worker processes (default: the config's `workers`, 12).
    #[arg(short, long)]
    pub workers: Option<usize>,
    /// The event stream as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics while the run lasts
    /// (HOST:PORT; port 0 picks one, printed on stderr).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct FleetStatusArgs {
    /// The fleet configuration.
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Also list users whose last good backup is older than this (`26h`, `90m`, `2d`).
    #[arg(long)]
    pub stale: Option<String>,
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `26h` → seconds.
fn parse_age(s: &str) -> Option<u64> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().ok()?;
    let mul = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(mul)
}

fn mb(n: u64) -> String {
    format!("{:.1}", n as f64 / 1e6)
}

/// Live display on a terminal: one overall bar, one line per worker.
struct Live {
    multi: MultiProgress,
    total: ProgressBar,
    workers: BTreeMap<String, ProgressBar>,
    bytes: u64,
}

impl Live {
    fn new(total: u64) -> Live {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let bar = multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} users  {msg}  {per_sec}  ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        Live {
            multi,
            total: bar,
            workers: BTreeMap::new(),
            bytes: 0,
        }
    }

    fn worker(&mut self, name: &str) -> &ProgressBar {
        let multi = &self.multi;
        self.workers.entry(name.to_string()).or_insert_with(|| {
            let pb = multi.add(ProgressBar::new_spinner());
            pb.set_style(
                ProgressStyle::with_template("  {spinner} {prefix}: {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.set_prefix(name.to_string());
            pb
        })
    }

    fn event(&mut self, ev: &Event, t0: Instant) {
        match ev {
            Event::Start {
                worker,
                server,
                user,
            } => {
                self.worker(worker).set_message(format!("{server}/{user}"));
            }
            Event::Done { bytes, .. } => {
                self.total.inc(1);
                self.bytes = self.bytes.saturating_add(*bytes);
                let secs = t0.elapsed().as_secs_f64().max(0.001);
                self.total.set_message(format!(
                    "{} MB, {:.1} MB/s",
                    mb(self.bytes),
                    self.bytes as f64 / 1e6 / secs
                ));
            }
            Event::Exit { worker, .. } => {
                self.worker(worker).finish_with_message("done");
            }
            Event::WorkerDied { worker, status } => {
                self.worker(worker)
                    .abandon_with_message(format!("died: {status}"));
            }
            _ => {}
        }
    }
}

fn log_line(ev: &Event, done: &mut u64, total: u64) {
    match ev {
        Event::Done {
            worker,
            server,
            user,
            ok,
            bytes,
            ms,
            error,
            class,
            prune_error,
            prune_class,
            ..
        } => {
            *done += 1;
            match error {
                None if *ok => eprintln!(
                    "cyrvault run: [{done}/{total}] {server}/{user} ok {} MB {ms} ms ({worker}){}",
                    mb(*bytes),
                    match prune_error {
                        Some(e) => format!(
                            "; PRUNE FAILED ({}): {e}",
                            prune_class.map_or("?", |k| k.name())
                        ),
                        None => String::new(),
                    }
                ),
                _ => eprintln!(
                    "cyrvault run: [{done}/{total}] {server}/{user} FAILED ({}): {} ({worker})",
                    class.map_or("?", |k| k.name()),
                    error.as_deref().unwrap_or("?")
                ),
            }
        }
        Event::Claim {
            worker,
            unit,
            users,
            ..
        } => {
            log::info!(target: "cyrvault_host::fleet", "{worker} claimed {users} users on {unit}");
        }
        Event::WorkerDied { worker, status } => {
            eprintln!(
                "cyrvault run: worker {worker} died ({status}); its batch goes to the others after its lease"
            );
        }
        Event::LeaseLost { worker, user, .. } => {
            eprintln!("cyrvault run: {worker} lost its lease at {user}; batch dropped");
        }
        _ => {}
    }
}

pub fn run(a: &RunArgs) -> Result<ExitCode, cyrvault_host::Error> {
    let conf = fleet::load_fleet_conf(&a.config)?;
    if a.workers == Some(0) {
        eprintln!("cyrvault run: --workers must be at least 1");
        return Ok(ExitCode::from(EX_USAGE as u8));
    }
    let total = {
        let mut dir = fleet::open_directory(&conf)?;
        let round = dir.join_round(fleet::now_ms(), fleet::round_window_ms(&conf))?;
        dir.remaining(round, fleet::now_ms())?
    };
    let exe = std::env::current_exe()
        .map_err(|e| cyrvault_host::Error::io("finding", "the cyrvault binary", e))?;
    let opts = RunOptions {
        exe,
        config: a.config.clone(),
        workers: a.workers,
        worker_args: Vec::new(),
    };
    let total = u64::try_from(total).unwrap_or(0);
    if total == 0 {
        eprintln!(
            "cyrvault run: no user to back up in this round (none discovered yet? run \
             `cyrvault discover`; or all are in retry backoff)"
        );
    }
    let t0 = Instant::now();
    let counts = Arc::new(Mutex::new(LiveRun::start(fleet::now_ms(), total)));
    let _exporter = match &a.metrics_listen {
        Some(addr) => {
            let ex = fleet::exporter::Exporter::start(
                addr,
                metrics::live_page(conf.clone(), counts.clone()),
            )?;
            eprintln!(
                "cyrvault run: metrics at http://{}/metrics",
                ex.local_addr()
            );
            Some(ex)
        }
        None => None,
    };
    let mut live = (!a.json && std::io::stderr().is_terminal()).then(|| Live::new(total));
    let mut done = 0u64;
    let json = a.json;
    let sum = fleet::run_fleet(&conf, &opts, &mut |ev| {
        if let Ok(mut c) = counts.lock() {
            c.event(ev);
        }
        if json {
            if let Ok(line) = serde_json::to_string(ev) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        } else if let Some(l) = live.as_mut() {
            l.event(ev, t0);
        } else {
            log_line(ev, &mut done, total);
        }
    })?;
    if let Some(l) = &live {
        l.total.finish_and_clear();
        let _ = l.multi.clear();
    }
    print_summary(&sum, json)?;
    let code = if sum.untried > 0 {
        eprintln!(
            "cyrvault run: {} users of round {} were not tried (the workers failed; see above)",
            sum.untried, sum.round
        );
        EX_SOFTWARE as u8
    } else {
        match sum.worst_class {
            None => 0,
            Some(k) => u8::try_from(k.exit_code()).unwrap_or(1),
        }
    };
    if let Ok(mut c) = counts.lock() {
        c.finish(code);
    }
    if let Some(path) = &conf.metrics_file {
        // a metrics file that cannot be written does not change the run's status:
        // its age (cyrvault_metrics_generated_timestamp_seconds) is what alerts
        let run = counts.lock().map(|c| c.clone()).unwrap_or_default();
        let written = fleet::open_directory(&conf)
            .and_then(|mut d| metrics::collect(&mut d, fleet::now_ms(), conf.stale_after_secs))
            .and_then(|snap| metrics::write_atomically(path, &metrics::render(&snap, Some(&run))));
        if let Err(e) = written {
            eprintln!("cyrvault run: metrics file: {e}");
        }
    }
    Ok(ExitCode::from(code))
}

fn print_summary(sum: &RunSummary, json: bool) -> Result<ExitCode, cyrvault_host::Error> {
    if json {
        let mut v = serde_json::to_value(sum).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("event".into(), "summary".into());
        }
        return output::io_result(
            serde_json::to_string(&v)
                .map_err(std::io::Error::other)
                .and_then(|s| writeln!(std::io::stdout().lock(), "{s}")),
        );
    }
    let secs = sum.seconds.max(0.001);
    println!(
        "round {}: {} users tried by this run, {} ok, {} failed, {} MB in {:.1} s \
         ({:.0} users/hour, {:.2} MB/s){}{}",
        sum.round,
        sum.tried,
        sum.ok,
        sum.failed,
        mb(sum.bytes),
        sum.seconds,
        sum.ok as f64 * 3600.0 / secs,
        sum.bytes as f64 / 1e6 / secs,
        if sum.prune_failed > 0 {
            format!(
                ", {} backed up but not pruned (PRUNE FAILED below)",
                sum.prune_failed
            )
        } else {
            String::new()
        },
        if sum.workers_died > 0 {
            format!(", {} worker(s) died and were replaced", sum.workers_died)
        } else {
            String::new()
        }
    );
    print_units(sum)
}

fn print_units(sum: &RunSummary) -> Result<ExitCode, cyrvault_host::Error> {
    let rows: Vec<Vec<String>> = sum
        .units
        .iter()
        .map(|u| {
            vec![
                u.server.clone(),
                u.unit.clone(),
                u.users.to_string(),
                u.tried.to_string(),
                u.ok.to_string(),
                u.failed.to_string(),
                mb(u64::try_from(u.bytes).unwrap_or(0)),
                format!("{:.1}", u.span_ms as f64 / 1000.0),
            ]
        })
        .collect();
    output::io_result(output::table(
        &[
            "server",
            "drive unit",
            "users",
            "tried",
            "ok",
            "failed",
            "MB",
            "seconds",
        ],
        &rows,
    ))?;
    for f in &sum.failures {
        println!(
            "FAILED {}/{} ({}, {} in a row): {}",
            f.server,
            f.userid,
            f.class.name(),
            f.failures,
            f.error
        );
    }
    for p in &sum.prune_failures {
        println!(
            "PRUNE FAILED {}/{} ({}; backed up): {}",
            p.server,
            p.userid,
            p.class.name(),
            p.error
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(a: &FleetStatusArgs) -> Result<ExitCode, cyrvault_host::Error> {
    let conf = fleet::load_fleet_conf(&a.config)?;
    let mut dir = fleet::open_directory(&conf)?;
    let stale_secs = match a.stale.as_deref().map(parse_age) {
        Some(None) => {
            eprintln!("cyrvault fleet-status: --stale wants a number with s, m, h or d");
            return Ok(ExitCode::from(EX_USAGE as u8));
        }
        Some(Some(s)) => Some(s),
        None => None,
    };
    let Some(round) = dir.last_round()? else {
        println!("no run yet");
        return Ok(ExitCode::SUCCESS);
    };
    let sum = RunSummary {
        units: dir.summary(round)?,
        failures: dir.failures(round)?,
        prune_failures: dir.prune_failures(round)?,
        ..RunSummary::empty(round)
    };
    let stale = match stale_secs {
        Some(s) => {
            let cutoff =
                fleet::now_ms().saturating_sub(i64::try_from(s * 1000).unwrap_or(i64::MAX));
            dir.stale(cutoff)?
        }
        None => Vec::new(),
    };
    if a.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            round: i64,
            units: &'a [fleet::UnitSummary],
            failures: &'a [fleet::directory::Failure],
            prune_failures: &'a [fleet::report::PruneFailure],
            stale: Vec<(String, String, Option<i64>)>,
        }
        return output::io_result(output::json(&Out {
            round,
            units: &sum.units,
            failures: &sum.failures,
            prune_failures: &sum.prune_failures,
            stale,
        }));
    }
    println!("round {round}");
    print_units(&sum)?;
    for (server, user, last) in &stale {
        match last {
            Some(ms) => println!(
                "STALE {server}/{user} last good backup at {} (unix)",
                ms / 1000
            ),
            None => println!("STALE {server}/{user} never backed up"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_age;

    #[test]
    fn ages() {
        assert_eq!(parse_age("26h"), Some(93600));
        assert_eq!(parse_age("90m"), Some(5400));
        assert_eq!(parse_age("2d"), Some(172800));
        assert_eq!(parse_age("30"), Some(30));
        assert_eq!(parse_age("h"), None);
        assert_eq!(parse_age("3w"), None);
    }
}
