//! `cyrvault run`: join (or start) a round, start N worker processes (the cyrvault
//! binary re-executed as `cyrvault worker`), read their event lines, replace a worker
//! that dies while users are left (its batch goes to the others when its lease runs
//! out), and when every worker has stopped, close the round and sum it up.
//!
//! Processes, not threads: a crash (or `kill -9`) in one worker takes nothing else
//! down, and each has its own connections and file descriptors.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::config::FleetConf;
use super::directory::{Failure, UnitSummary};
use super::report::{PruneFailure, worst_of};
use super::worker::Event;
use super::{now_ms, open_directory};
use crate::error::{Error, ErrorKind, IoContext, Result};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `cyrvault` binary to start workers from.
    pub exe: PathBuf,
    /// The config file (passed on to the workers).
    pub config: PathBuf,
    /// Worker processes (None: the config's `workers`).
    pub workers: Option<usize>,
    /// Extra arguments for each worker (tests: none).
    pub worker_args: Vec<String>,
}

/// The end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The round this run worked on.
    pub round: i64,
    /// Users this run's workers tried.
    pub tried: u64,
    /// Of those, backed up.
    pub ok: u64,
    /// Of those, failed.
    pub failed: u64,
    /// Of the backed up, those whose retention prune after the backup failed.
    pub prune_failed: u64,
    /// Message bytes this run's workers fetched.
    pub bytes: u64,
    /// Bytes the archives grew by in this run.
    pub stored: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// Worker processes that died abnormally (and were replaced).
    pub workers_died: u64,
    /// Users of the round nobody tried (every worker gave up: see their errors).
    pub untried: i64,
    /// Per server and drive unit, over the whole round (all hosts).
    pub units: Vec<UnitSummary>,
    /// Users whose attempt in this round failed (all hosts).
    pub failures: Vec<Failure>,
    /// Users backed up in this round whose prune after the backup failed (all hosts).
    pub prune_failures: Vec<PruneFailure>,
    /// The most severe class among `failures` and `prune_failures` (None: none
    /// failed); the run's exit status is its code.
    pub worst_class: Option<ErrorKind>,
}

impl RunSummary {
    /// Nothing done yet in `round`: every count zero, no units, no failures.
    pub fn empty(round: i64) -> Self {
        RunSummary {
            round,
            tried: 0,
            ok: 0,
            failed: 0,
            prune_failed: 0,
            bytes: 0,
            stored: 0,
            seconds: 0.0,
            workers_died: 0,
            untried: 0,
            units: Vec::new(),
            failures: Vec::new(),
            prune_failures: Vec::new(),
            worst_class: None,
        }
    }

    /// Count a worker's `Done` event (other events count nothing).
    fn count(&mut self, ev: &Event) {
        if let Event::Done {
            ok,
            bytes,
            stored,
            prune_class,
            ..
        } = ev
        {
            self.tried += 1;
            if *ok {
                self.ok += 1;
                self.prune_failed += u64::from(prune_class.is_some());
                self.bytes = self.bytes.saturating_add(*bytes);
                self.stored = self.stored.saturating_add(*stored);
            } else {
                self.failed += 1;
            }
        }
    }
}

struct Slot {
    name: String,
    child: Child,
}

fn spawn(
    opts: &RunOptions,
    round: i64,
    index: usize,
    tx: &mpsc::Sender<(usize, String)>,
) -> Result<Slot> {
    let mut cmd = Command::new(&opts.exe);
    cmd.arg("worker")
        .arg("--config")
        .arg(&opts.config)
        .arg("--round")
        .arg(round.to_string())
        .args(&opts.worker_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().at("starting a worker", &opts.exe)?;
    let name = format!("{}:{}", hostname(), child.id());
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send((index, line)).is_err() {
                    break;
                }
            }
        });
    }
    Ok(Slot { name, child })
}

/// This host's name (for lease owners `host:pid`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Run the fleet: see the module docs. `on_event` sees every worker event (and
/// `WorkerDied` from here) as it comes.
pub fn run_fleet(
    conf: &FleetConf,
    opts: &RunOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<RunSummary> {
    let t0 = Instant::now();
    let mut dir = open_directory(conf)?;
    let round = dir.join_round(now_ms(), super::round_window_ms(conf))?;
    let n = opts.workers.unwrap_or(conf.workers).max(1);
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let mut slots: Vec<Option<Slot>> = Vec::with_capacity(n);
    for i in 0..n {
        slots.push(Some(spawn(opts, round, i, &tx)?));
    }
    let mut sum = RunSummary::empty(round);
    let max_respawn = n.saturating_mul(4);
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok((_, line)) => match serde_json::from_str::<Event>(&line) {
                Ok(ev) => {
                    sum.count(&ev);
                    on_event(&ev);
                }
                Err(_) => log::warn!(target: "cyrvault::fleet", "worker said: {line}"),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        let mut alive = 0;
        for (i, entry) in slots.iter_mut().enumerate() {
            let Some(slot) = entry.as_mut() else {
                continue;
            };
            let st = match slot.child.try_wait() {
                Ok(None) => {
                    alive += 1;
                    continue;
                }
                Ok(Some(st)) => st,
                Err(e) => {
                    return Err(Error::Other(format!(
                        "waiting for worker {}: {e}",
                        slot.name
                    )));
                }
            };
            let name = slot.name.clone();
            *entry = None;
            if !st.success() {
                sum.workers_died += 1;
                on_event(&Event::WorkerDied {
                    worker: name,
                    status: st.to_string(),
                });
                if sum.workers_died <= max_respawn as u64 && dir.remaining(round, now_ms())? > 0 {
                    *entry = Some(spawn(opts, round, i, &tx)?);
                    alive += 1;
                }
            }
        }
        if alive == 0 {
            break;
        }
    }
    // the readers may still hold the last lines
    while let Ok((_, line)) = rx.recv_timeout(Duration::from_millis(50)) {
        if let Ok(ev) = serde_json::from_str::<Event>(&line) {
            sum.count(&ev);
            on_event(&ev);
        }
    }
    sum.untried = dir.remaining(round, now_ms())?;
    if sum.untried == 0 {
        dir.finish_round(round, now_ms())?;
    }
    sum.units = dir.summary(round)?;
    sum.failures = dir.failures(round)?;
    sum.prune_failures = dir.prune_failures(round)?;
    sum.worst_class = worst_of(&sum.failures, &sum.prune_failures);
    sum.seconds = t0.elapsed().as_secs_f64();
    Ok(sum)
}
