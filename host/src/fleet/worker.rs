//! One worker process of `cyrvault run`: claim a batch (users of one drive unit),
//! back its users up with `backup::backup_user`, `jobs` of them at once (the cores the
//! worker has), record each result (a failure, or a panic, is recorded with its class
//! and the batch goes on; a user is tried once per round),
//! release the batch, claim again. When nothing can be claimed it waits while other workers still hold users
//! of the round (their leases may run out), and stops when none is left.
//!
//! Events go to a callback; the `cyrvault worker` subcommand prints them as JSON
//! lines for the parent (`run.rs`).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config::FleetConf;
use super::directory::{Directory, Transfer};
use super::{limits, now_ms};
use crate::backup::{self, BackupOptions, Server};
use crate::error::{ErrorKind, Result};
use crate::vault::Vault;

/// How long an idle worker sleeps before it tries to claim again.
const IDLE_POLL: Duration = Duration::from_millis(300);

/// What a worker reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A batch was claimed.
    Claim {
        worker: String,
        pid: u32,
        claim: i64,
        unit: String,
        users: usize,
    },
    /// A user's backup starts.
    Start {
        worker: String,
        server: String,
        user: String,
    },
    /// A user's backup ended.
    Done {
        worker: String,
        server: String,
        user: String,
        ok: bool,
        /// Message bytes fetched.
        bytes: u64,
        /// Bytes the archive grew by (0 from workers older than this field).
        #[serde(default)]
        stored: u64,
        ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The failure's class (`temporary`, `config`, `permission`, `data`, ...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        class: Option<ErrorKind>,
        /// The user was backed up (`ok`) but the retention prune after it failed:
        /// why, and its class.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prune_error: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prune_class: Option<ErrorKind>,
    },
    /// The lease was lost (expired and taken over); the rest of the batch is dropped.
    LeaseLost {
        worker: String,
        claim: i64,
        user: String,
    },
    /// The batch was released.
    Release { worker: String, claim: i64 },
    /// The worker has nothing left to do.
    Exit { worker: String, users: u64 },
    /// (from the parent) a worker process ended abnormally.
    WorkerDied { worker: String, status: String },
}

fn connect(conf: &FleetConf, server: &str) -> Result<Server> {
    let s = conf.server(server).ok_or_else(|| {
        crate::Error::Other(format!(
            "server {server} is in the directory but not in the config"
        ))
    })?;
    super::discover::connect(s)
}

/// What a job thread tells the worker's main thread.
enum JobMsg {
    /// The user at this index of the batch starts.
    Started(usize),
    /// It ended: bytes fetched and stored, or the error; when it started (ms), how
    /// long it took.
    Done(
        usize,
        std::result::Result<Transfer, (ErrorKind, String)>,
        i64,
        Duration,
    ),
}

/// Run one worker until the round has nothing left for it. `owner` must be unique
/// across every worker of every host (`host:pid`).
///
/// A batch is worked by up to `conf.worker_jobs()` threads at once, each with its own
/// connections; the main thread records each result in the directory as it comes and
/// emits the events, so the directory connection is never shared. When the lease is
/// lost, no further user of the batch is started.
pub fn work(
    conf: &FleetConf,
    dir: &mut Directory,
    round: i64,
    owner: &str,
    emit: &mut dyn FnMut(Event),
) -> Result<u64> {
    let lim = limits(conf);
    let backoff_ms =
        i64::try_from(conf.retry_backoff_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let _heartbeat = Heartbeat::start(conf, owner, lim.lease_ms)?;
    let jobs = conf.worker_jobs().max(1);
    // One connection cache per job thread, kept across batches.
    let mut conns: Vec<HashMap<String, Server>> = (0..jobs).map(|_| HashMap::new()).collect();
    let mut vaults: HashMap<String, Vault> = HashMap::new();
    let mut done = 0u64;
    let opts = BackupOptions::default();
    loop {
        let Some(batch) = dir.claim(owner, round, lim)? else {
            if dir.remaining(round, now_ms())? == 0 {
                emit(Event::Exit {
                    worker: owner.to_string(),
                    users: done,
                });
                return Ok(done);
            }
            std::thread::sleep(IDLE_POLL);
            continue;
        };
        emit(Event::Claim {
            worker: owner.to_string(),
            pid: std::process::id(),
            claim: batch.claim,
            unit: batch.unit.clone(),
            users: batch.users.len(),
        });
        for (_, root) in &batch.users {
            if !vaults.contains_key(root) {
                vaults.insert(root.clone(), Vault::open(Path::new(root))?);
            }
        }
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let (tx, rx) = mpsc::channel::<JobMsg>();
        let mut failure: Option<crate::Error> = None;
        std::thread::scope(|s| {
            let n = jobs.min(batch.users.len());
            for pool in conns.iter_mut().take(n) {
                let (tx, next, stop, vaults, batch, opts) =
                    (tx.clone(), &next, &stop, &vaults, &batch, &opts);
                s.spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some((user, root)) = batch.users.get(i) else {
                            return;
                        };
                        if tx.send(JobMsg::Started(i)).is_err() {
                            return;
                        }
                        let t0 = Instant::now();
                        let started = now_ms();
                        let r = guarded(|| {
                            backup_one(conf, pool, vaults, &batch.server, root, user, opts)
                        });
                        if r.is_err() {
                            // the protocol stream may be out of step: start afresh next time
                            pool.remove(&batch.server);
                        }
                        if tx.send(JobMsg::Done(i, r, started, t0.elapsed())).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(tx);
            for msg in rx {
                let (i, outcome, started, took) = match msg {
                    JobMsg::Started(i) => {
                        if let Some((user, _)) = batch.users.get(i) {
                            emit(Event::Start {
                                worker: owner.to_string(),
                                server: batch.server.clone(),
                                user: user.clone(),
                            });
                        }
                        continue;
                    }
                    JobMsg::Done(i, r, started, took) => (i, r, started, took),
                };
                let Some((user, _)) = batch.users.get(i) else {
                    continue;
                };
                if stop.load(Ordering::SeqCst) {
                    continue; // lease lost or the directory failed: not ours to record
                }
                let kept = match dir.record(
                    owner,
                    round,
                    &batch,
                    user,
                    &outcome,
                    backoff_ms,
                    lim.lease_ms,
                    started,
                ) {
                    Ok(k) => k,
                    Err(e) => {
                        failure = Some(e);
                        stop.store(true, Ordering::SeqCst);
                        continue;
                    }
                };
                if !kept {
                    emit(Event::LeaseLost {
                        worker: owner.to_string(),
                        claim: batch.claim,
                        user: user.clone(),
                    });
                    stop.store(true, Ordering::SeqCst);
                    continue;
                }
                done += 1;
                let (ok, bytes, stored, class, error, prune_class, prune_error) = match outcome {
                    Ok(t) => {
                        let (pk, pm) = t.prune_failed.unzip();
                        (true, t.fetched, t.stored, None, None, pk, pm)
                    }
                    Err((k, m)) => (false, 0, 0, Some(k), Some(m), None, None),
                };
                emit(Event::Done {
                    worker: owner.to_string(),
                    server: batch.server.clone(),
                    user: user.clone(),
                    ok,
                    bytes,
                    stored,
                    ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                    class,
                    error,
                    prune_error,
                    prune_class,
                });
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        dir.release(owner, &batch)?;
        emit(Event::Release {
            worker: owner.to_string(),
            claim: batch.claim,
        });
    }
}

/// Run one user's backup; its error, or a panic (a bug), as the class and message to
/// record. A panic is a `software` failure of that user alone: were it to end the
/// worker, the user's lease would run out and every next worker would try it, and
/// die, in the same round; recorded, it is tried once per round like any failure.
fn guarded(
    f: impl FnOnce() -> Result<Transfer>,
) -> std::result::Result<Transfer, (ErrorKind, String)> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| (e.kind(), e.to_string())),
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err((
                ErrorKind::Software,
                format!(
                    "cyrvault panicked while backing this user up (a bug: please report it): {what}"
                ),
            ))
        }
    }
}

/// Renews the worker's leases every third of a lease on its own connection, until
/// dropped. A worker killed -9 stops renewing with it.
struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(conf: &FleetConf, owner: &str, lease_ms: i64) -> Result<Heartbeat> {
        let mut dir = super::open_directory(conf)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let owner = owner.to_string();
        let every = Duration::from_millis(u64::try_from(lease_ms / 3).unwrap_or(1000).max(100));
        let thread = std::thread::spawn(move || {
            let mut last = Instant::now();
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() >= every {
                    last = Instant::now();
                    if let Err(e) = dir.renew(&owner, lease_ms) {
                        log::warn!(target: "cyrvault::fleet", "{owner}: renewing the lease: {e}");
                    }
                }
            }
        });
        Ok(Heartbeat {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn backup_one(
    conf: &FleetConf,
    servers: &mut HashMap<String, Server>,
    vaults: &HashMap<String, Vault>,
    server: &str,
    vault_root: &str,
    user: &str,
    opts: &BackupOptions,
) -> Result<Transfer> {
    if !servers.contains_key(server) {
        let s = connect(conf, server)?;
        servers.insert(server.to_string(), s);
    }
    let (Some(s), Some(v)) = (servers.get_mut(server), vaults.get(vault_root)) else {
        return Err(crate::Error::Other("connection cache lost an entry".into()));
    };
    let rep = backup::backup_user(s, v, user, opts)?;
    let prune_failed = match &conf.retention {
        Some(policy) => prune_after(v, user, policy).err(),
        None => None,
    };
    // A run that left folders out (carried forward) or met spool damage is a failure
    // for the directory: it is retried, and fleet-status names it with the reason.
    if let Some(e) = rep.problems() {
        return Err(e.into());
    }
    Ok(Transfer {
        fetched: rep.bytes_fetched,
        stored: rep.bytes_written,
        prune_failed,
    })
}

/// Apply `cyrvault.conf`'s retention policy after a user's run (doc/retention.md). A
/// held user is left alone (a hold is not a failure). A failed prune is logged and
/// returned with its class: the backup itself succeeded and still counts, the run's
/// exit status and summary show the prune's failure, and the prune is tried again
/// after the next backup.
fn prune_after(
    v: &Vault,
    user: &str,
    policy: &crate::retention::Policy,
) -> std::result::Result<(), (ErrorKind, String)> {
    let failed = |e: crate::Error| {
        log::warn!(target: "cyrvault::fleet", "{user}: prune failed: {e}");
        (e.kind(), format!("prune: {e}"))
    };
    let ua = match v.user(user) {
        Ok(Some(ua)) => ua,
        Ok(None) => return Ok(()), // no archive: nothing to prune
        Err(e) => return Err(failed(e)),
    };
    let t = crate::retention::Target {
        user: user.to_string(),
        archive: ua.archive,
        catalog: ua.catalog,
    };
    let opts = crate::retention::PruneOptions {
        policy: policy.clone(),
        wait: Some(std::time::Duration::from_secs(30)),
        ..Default::default()
    };
    match crate::retention::prune(&t, &opts) {
        Ok(r) if r.nothing_to_do => Ok(()),
        Ok(r) => {
            log::info!(
                target: "cyrvault::fleet",
                "{user}: pruned runs {:?} ({}): archive {} -> {} bytes",
                r.runs_removed,
                r.policy,
                r.bytes_before,
                r.bytes_after
            );
            Ok(())
        }
        Err(crate::Error::Retention(crate::retention::RetentionError::Held { .. })) => {
            log::info!(target: "cyrvault::fleet", "{user}: under legal hold: not pruned");
            Ok(())
        }
        Err(e) => Err(failed(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_a_software_failure_of_its_user() {
        let r = guarded(|| panic!("index out of bounds"));
        let (k, m) = r.unwrap_err();
        assert_eq!(k, ErrorKind::Software);
        assert!(
            m.contains("panicked") && m.ends_with("index out of bounds"),
            "{m}"
        );
        let n = 7;
        let (_, m) = guarded(|| panic!("at {n}")).unwrap_err();
        assert!(m.ends_with("at 7"), "{m}");
        let ok = guarded(|| {
            Ok(Transfer {
                fetched: 1,
                ..Transfer::default()
            })
        });
        assert_eq!(ok.unwrap().fetched, 1);
        let e = guarded(|| Err(crate::Error::Other("no".into()))).unwrap_err();
        assert_eq!(e, (ErrorKind::Software, "no".to_string()));
    }
}
