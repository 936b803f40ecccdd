//! `cyrvault prune`: apply a policy to one user's runs and compact the archive.
//!
//! Under the archive's lock: finish any interrupted swap, bring in retention events a
//! crash left only in the archive, refuse a held user or a catalog behind its archive,
//! decide the runs ([`Policy::select`]), and with `--keep-deleted` the deleted folders
//! and expunged messages that have been gone too long; plan, and (unless `--dry-run`)
//! compact. Nothing to remove means nothing is rewritten.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use serde::Serialize;

use super::compact::{CompactReport, compact};
use super::error::Result;
use super::error::RetentionError;
use super::hold::{HoldInfo, Target, absorb_tail, active_holds, now_secs};
use super::pair;
use super::plan::{Plan, plan};
use super::policy::{Decision, Policy, RunTime, local_offsets};
use crate::archive::lock_archive;
use crate::catalog::Catalog;
use crate::cyrus::Guid;
use crate::io_error::IoContext;
use crate::model::retention::{
    ErasedMessage, EventKind, RETENTION_FORMAT, RemovedFolder, RetentionEvent,
};

/// How to prune.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    pub policy: Policy,
    /// Say what would go; change nothing.
    pub dry_run: bool,
    /// Wait this long for the archive's lock (a backup of the user running); `None`:
    /// fail at once if it is held.
    pub wait: Option<Duration>,
    /// "Now" for `--keep-deleted` (default: the clock).
    pub now: Option<i64>,
    /// TEST ONLY (doc/retention.md, "Testing"): the start time the policy sees for
    /// each run instead of the one recorded, so that runs made minutes apart can
    /// stand for runs made days apart. The archive keeps the recorded times.
    pub run_times: Option<BTreeMap<u64, i64>>,
}

/// What a prune did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub user: String,
    pub policy: String,
    pub dry_run: bool,
    /// Every run, newest first, with whether it is kept and why.
    pub runs: Vec<Decision>,
    pub runs_kept: Vec<u64>,
    pub runs_removed: Vec<u64>,
    /// Messages (and their unique bytes) no kept run needs any more.
    pub messages_freed: u64,
    pub message_bytes_freed: u64,
    /// Messages erased from kept runs by `--keep-deleted`.
    pub messages_erased: u64,
    /// Folders taken out of every run by `--keep-deleted`.
    pub folders_removed: Vec<RemovedFolder>,
    pub bytes_before: u64,
    /// Exact after a prune; an estimate with `--dry-run`.
    pub bytes_after: u64,
    /// Nothing to remove: the archive was not rewritten.
    pub nothing_to_do: bool,
    pub compaction: Option<CompactReport>,
}

/// The decision shared by prune and forget: settle, lock, check, catalog.
pub(crate) struct Locked {
    pub _lock: std::fs::File,
    pub cat: Catalog,
    pub len: u64,
}

/// Lock `t`'s archive (waiting up to `wait`), finish an interrupted swap, take in
/// events only the archive has, and refuse a held user (unless `allow_held`) or a
/// catalog behind its archive.
pub(crate) fn lock_checked(
    t: &Target,
    wait: Option<Duration>,
    now: i64,
) -> Result<(Locked, Vec<HoldInfo>)> {
    let lock = lock_archive(&t.archive, wait)?;
    pair::settle_locked(&t.archive, &t.catalog)?;
    let mut cat = Catalog::open_existing(&t.catalog)?;
    pair::check_same_generation(&cat, &t.archive)?;
    let tail = absorb_tail(&mut cat, &t.archive)?;
    if !tail.runs.is_empty() {
        return Err(RetentionError::Behind {
            user: t.user.clone(),
            runs: tail.runs,
        });
    }
    let holds = active_holds(&cat.retention_events()?, now);
    let len = lock.metadata().at("reading metadata of", &t.archive)?.len();
    Ok((
        Locked {
            _lock: lock,
            cat,
            len,
        },
        holds,
    ))
}

/// The next free event number.
pub(crate) fn next_seq(cat: &Catalog) -> Result<u64> {
    Ok(cat
        .retention_events()?
        .iter()
        .map(|e| e.seq)
        .max()
        .unwrap_or(0)
        + 1)
}

/// Prune `t` by `opts.policy`. A held user is refused ([`RetentionError::Held`]).
pub fn prune(t: &Target, opts: &PruneOptions) -> Result<PruneReport> {
    let now = opts.now.unwrap_or_else(now_secs);
    let (locked, holds) = lock_checked(t, opts.wait, now)?;
    if !holds.is_empty() {
        return Err(RetentionError::Held {
            user: t.user.clone(),
            holds: holds.iter().map(HoldInfo::describe).collect(),
        });
    }
    let cat = &locked.cat;
    let runs = cat.runs()?;
    let mut report = PruneReport {
        user: t.user.clone(),
        policy: opts.policy.describe(),
        dry_run: opts.dry_run,
        bytes_before: locked.len,
        ..PruneReport::default()
    };
    if runs.is_empty() {
        report.nothing_to_do = true;
        report.bytes_after = locked.len;
        return Ok(report);
    }
    let times: Vec<i64> = runs
        .iter()
        .map(|r| {
            opts.run_times
                .as_ref()
                .and_then(|m| m.get(&r.run).copied())
                .unwrap_or(r.started)
        })
        .collect();
    let offsets = local_offsets(&times);
    let rt: Vec<RunTime> = runs
        .iter()
        .zip(times.iter().zip(&offsets))
        .map(|(r, (&started, &utc_offset))| RunTime {
            run: r.run,
            started,
            utc_offset,
        })
        .collect();
    report.runs = opts.policy.select(&rt)?;
    let kept: BTreeSet<u64> = report
        .runs
        .iter()
        .filter(|d| d.keep)
        .map(|d| d.run)
        .collect();
    // --keep-deleted: what has been gone longer than that leaves every run.
    let mut drop_folders = BTreeMap::new();
    let mut erase = HashSet::new();
    if let Some(d) = opts.policy.keep_deleted {
        let cutoff = now.saturating_sub(i64::try_from(d).unwrap_or(i64::MAX));
        let time_of =
            |run: u64| -> Option<i64> { runs.iter().position(|r| r.run == run).map(|i| times[i]) };
        // A folder gone from the server: deleted when the user deleted it (Cyrus's
        // delayed-delete stamp, when a run saw it), else when a run found it gone. One
        // Cyrus still holds in its delayed-delete area is kept: the next backup would
        // capture it again.
        for f in cat.deleted_folders()? {
            let when = f.deleted_at.or_else(|| time_of(f.deleted_run));
            if when.is_some_and(|t| t < cutoff) {
                drop_folders.insert(f.uniqueid, f.name);
            }
        }
        for m in cat.message_lives()? {
            if !m.live && m.gone_run.and_then(time_of).is_some_and(|t| t < cutoff) {
                erase.insert(m.guid);
            }
        }
    }
    let p = plan(cat, &t.user, locked.len, &kept, &erase, &drop_folders)?;
    fill(&mut report, &p);
    if p.is_noop() {
        report.nothing_to_do = true;
        report.bytes_after = locked.len;
        return Ok(report);
    }
    if opts.dry_run {
        report.bytes_after = p.estimated_after();
        return Ok(report);
    }
    let last = runs.last().map_or(0, |r| r.run);
    let event = RetentionEvent {
        format: RETENTION_FORMAT,
        seq: next_seq(cat)?,
        kind: EventKind::Prune,
        at: now_secs(),
        reason: report.policy.clone(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        until: None,
        releases: None,
        up_to_run: Some(last),
        erased: erased_list(&p),
        runs_removed: p.removed.clone(),
        folders_removed: report.folders_removed.clone(),
        bytes_before: locked.len,
        bytes_after: 0,
    };
    let c = compact(cat, &p, &t.archive, &t.catalog, event)?;
    report.bytes_after = c.bytes_after;
    report.compaction = Some(c);
    drop(locked);
    Ok(report)
}

/// The erased messages of a plan, for its event.
pub(crate) fn erased_list(p: &Plan) -> Vec<ErasedMessage> {
    p.erased
        .iter()
        .map(|(g, s): (&Guid, &u64)| ErasedMessage { guid: *g, size: *s })
        .collect()
}

fn fill(report: &mut PruneReport, p: &Plan) {
    report.runs_kept = p.kept.clone();
    report.runs_removed = p.removed.clone();
    report.messages_freed = p.messages_before - p.messages_after;
    report.message_bytes_freed = p.message_bytes_before - p.message_bytes_after;
    report.messages_erased = p.erased.len() as u64;
    report.folders_removed = p
        .drop_folders
        .iter()
        .map(|(u, n)| RemovedFolder {
            uniqueid: u.clone(),
            name: n.clone(),
        })
        .collect();
}
