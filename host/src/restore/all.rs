//! Whole-server disaster recovery: every user of the vault back onto a replacement
//! server, N users at a time, exactly (`restore::exact`, each user as of its latest run
//! or its run at a time) or over IMAP (`restore::imap`).
//!
//! Resumable by construction: a second run does only what is missing. An exact
//! restore of a user continues what a first run left (`ExactOptions::resume`: folders
//! already there with the backed-up UniqueID and HIGHESTMODSEQ are kept, seen entries,
//! subscriptions, sieve scripts and quota already there are not sent again), and a
//! user that is complete costs a few `GET`s; an IMAP restore appends only the messages
//! a folder lacks. A user the target has in another shape (other UniqueIDs) is refused
//! with the reason and the others go on. Over IMAP, the users' `\Seen` on each other's
//! folders is restored in a second pass, once every user is back.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use super::exact::{ExactOptions, ExactTarget, restore_exact};
use super::imap::{ImapOptions, ImapTarget, restore_foreign_seen, restore_to_imap};
use super::{NoProgress, Selection, Source, Summary, When, plan};
use crate::error::{Error, Result};
use crate::vault::{UserArchive, Vault};

/// Where every user goes.
#[derive(Debug, Clone)]
pub enum AllTarget {
    /// Through the target's sync_server.
    Exact(ExactTarget),
    /// Over IMAP (`user` of the target is ignored: each user goes to itself).
    Imap(ImapTarget, ImapOptions),
}

/// How.
#[derive(Debug, Clone)]
pub struct AllOptions {
    /// Users restored at the same time.
    pub jobs: usize,
    /// Sessions per user (sync_server or IMAP; 0: [`SESSIONS_PER_USER`]). The target
    /// writes and fsyncs each message before it reads the next (sync_server's
    /// `reservefile`, imapd's `append_fromstage`), so one session waits on the disk
    /// most of the time; `jobs` x this many sessions overlap those waits.
    pub sessions: usize,
    /// Each user as of its newest run that started at or before this time (Unix
    /// seconds); `None`: each user's latest run.
    pub at: Option<i64>,
    /// Only these users (empty: every user of the vault).
    pub users: Vec<String>,
}

/// Sessions per user by default: with two users at a time, four sessions, which is
/// where the fsync rate of the benchmark machine's disk stops growing
/// (`doc/performance.md`, "Restore").
pub const SESSIONS_PER_USER: usize = 2;

/// One user's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct UserOutcome {
    /// The user.
    pub user: String,
    /// The run restored from (0 if planning failed).
    pub run: u64,
    /// Nothing was missing on the target (a rerun).
    pub unchanged: bool,
    /// The restore's summary (absent if it could not start).
    pub summary: Option<Summary>,
    /// Why it could not start (refused, unreachable, no run).
    pub error: Option<String>,
    /// Wall time.
    pub seconds: f64,
}

impl UserOutcome {
    /// Whether the user is fully restored.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.summary.as_ref().is_some_and(|s| s.failed == 0)
    }
}

/// The final report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AllReport {
    /// Users considered.
    pub users: u64,
    /// Users restored now (something was missing and now is there).
    pub restored: u64,
    /// Users that were complete already.
    pub unchanged: u64,
    /// Users with a failure (see their outcomes).
    pub failed: u64,
    /// Folders created, over all users.
    pub created: u64,
    /// Messages restored, over all users.
    pub appended: u64,
    /// Bytes of the restored messages, over all users.
    pub bytes: u64,
    /// Wall time of the whole restore.
    pub seconds: f64,
    /// Per user, in the order they finished.
    pub outcomes: Vec<UserOutcome>,
}

/// Whether a summary says nothing had to be done.
fn nothing_done(s: &Summary) -> bool {
    s.created + s.appended + s.subscribed + s.sieve_scripts + s.quota_roots + s.foreign_seen == 0
}

/// Restore every user of the vault (or `opts.users`). `on_done(outcome, done, total)`
/// is called as each user finishes (progress).
pub fn restore_all(
    vault: &Path,
    target: &AllTarget,
    opts: &AllOptions,
    on_done: &(dyn Fn(&UserOutcome, usize, usize) + Sync),
) -> Result<AllReport> {
    let started = Instant::now();
    let v = Vault::open(vault)?;
    let mut users = v.users()?;
    if !opts.users.is_empty() {
        users.retain(|(u, _)| opts.users.contains(u));
        for u in &opts.users {
            if !users.iter().any(|(x, _)| x == u) {
                return Err(Error::not_found("user in the vault", u.clone()));
            }
        }
    }
    users.sort_by(|a, b| a.0.cmp(&b.0));
    let total = users.len();
    let queue = Mutex::new(users.into_iter().collect::<VecDeque<_>>());
    let outcomes = Mutex::new(Vec::with_capacity(total));
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.clamp(1, 64) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some((user, ua)) = next else { break };
                    let o = restore_one(&user, &ua, vault, target, opts, false);
                    let mut all = outcomes.lock().unwrap_or_else(|e| e.into_inner());
                    all.push(o);
                    on_done(all.last().expect("just pushed"), all.len(), total);
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    // Over IMAP, each user's \Seen on the others' folders, now that all are back.
    if let AllTarget::Imap(..) = target {
        for o in outcomes.iter_mut().filter(|o| o.error.is_none()) {
            let Some((_, ua)) = v.user(&o.user)?.map(|ua| ((), ua)) else {
                continue;
            };
            let second = restore_one(&o.user, &ua, vault, target, opts, true);
            match (&mut o.summary, second.summary) {
                (Some(s), Some(f)) => {
                    s.foreign_seen += f.foreign_seen;
                    s.warnings.extend(f.warnings);
                    s.failed += f.failed;
                    s.failures.extend(f.failures);
                }
                (_, None) => o.error = second.error,
                _ => {}
            }
        }
    }
    let mut rep = AllReport {
        users: total as u64,
        ..AllReport::default()
    };
    for o in &mut outcomes {
        if let Some(s) = &o.summary {
            o.unchanged = nothing_done(s);
            rep.created += s.created;
            rep.appended += s.appended;
            rep.bytes += s.bytes;
        }
        if !o.ok() {
            rep.failed += 1;
        } else if o.unchanged {
            rep.unchanged += 1;
        } else {
            rep.restored += 1;
        }
    }
    rep.outcomes = outcomes;
    rep.seconds = started.elapsed().as_secs_f64();
    Ok(rep)
}

fn sessions(opts: &AllOptions) -> usize {
    if opts.sessions == 0 {
        SESSIONS_PER_USER
    } else {
        opts.sessions
    }
}

/// One user: plan at its run, then the target's restore (or, with `seen_pass`, only
/// the IMAP `\Seen` on other users' folders).
fn restore_one(
    user: &str,
    ua: &UserArchive,
    vault: &Path,
    target: &AllTarget,
    opts: &AllOptions,
    seen_pass: bool,
) -> UserOutcome {
    let t = Instant::now();
    let mut run = 0;
    let r = (|| -> Result<Summary> {
        let mut src = Source::open(&ua.archive, &ua.catalog)?;
        let sel = Selection {
            when: opts.at.map_or(When::Latest, When::At),
            ..Selection::default()
        };
        let p = plan(&mut src, &sel)?;
        run = p.run;
        match target {
            AllTarget::Exact(t) => {
                let o = ExactOptions {
                    resume: true,
                    connections: sessions(opts),
                    ..ExactOptions::default()
                };
                restore_exact(&mut src, &p, t, &o, &mut NoProgress)
            }
            AllTarget::Imap(t, io) => {
                let t = ImapTarget {
                    user: p.user.clone(),
                    ..t.clone()
                };
                let io = ImapOptions {
                    vault: Some(vault.to_path_buf()),
                    defer_foreign_seen: true,
                    sessions: sessions(opts),
                    ..io.clone()
                };
                if seen_pass {
                    restore_foreign_seen(&mut src, &p, &t, &io)
                } else {
                    restore_to_imap(&mut src, &p, &t, &io, &mut NoProgress)
                }
            }
        }
    })();
    let (summary, error) = match r {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e.to_string())),
    };
    UserOutcome {
        user: user.to_string(),
        run,
        unchanged: false,
        summary,
        error,
        seconds: t.elapsed().as_secs_f64(),
    }
}
