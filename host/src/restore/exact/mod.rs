//! Exact restore: the user re-created on a Cyrus server as it was at a run, through
//! that server's `sync_server` (Cyrus's replication protocol, what `sync_client`
//! speaks) — the same mailbox UniqueIDs, UIDVALIDITY, UIDs, MODSEQs and
//! HIGHESTMODSEQ, flags, internal dates, message and mailbox annotations, ACLs,
//! quota, seen state, subscriptions and sieve scripts, so that a mail client that
//! last synchronised at that run resumes (CONDSTORE/QRESYNC) without noticing.
//!
//! Only where the user and its folders' UniqueIDs do not exist on the target: two
//! mailboxes sharing a UniqueID corrupt a Cyrus server, so anything already there is
//! refused with the reason (a restore this tool started and did not finish may be
//! continued, [`ExactOptions::resume`]).
//!
//! The order is `sync_client`'s for a new user (`sync_do_user`, `update_mailbox_once`
//! in `imap/sync_support.c`): the messages (`APPLY MESSAGE`, file literals, any
//! order), then `APPLY MAILBOX` per folder with its records, then seen state,
//! subscriptions and sieve. A big folder goes in as several parts, each an `APPLY
//! MAILBOX` with the next records, over several sessions (`plan_parts`); each `APPLY
//! MAILBOX` sync_server carries out under the user's namespace lock from start to
//! end. Cyrus's own
//! `restore` instead sends `RESTORE MAILBOX`; `sync_restore_mailbox` (3.6) creates a
//! new mailbox under a namespace lock it releases right after `mboxlist_createmailbox`
//! while the mailbox stays open without a lock of its own, then writes the mailbox
//! annotations: `mailbox_annot_changed` calls `mboxlist_update_foldermodseq`, whose
//! `assert_namespacelocked` aborts sync_server (`imap/mboxlist.c:1088`). `APPLY
//! MAILBOX` (`sync_apply_mailbox`) holds the lock throughout, so annotated folders are
//! safe. See `doc/restore.md`, "Exact restore".
#![forbid(unsafe_code)]

pub mod build;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use self::build::{MailboxSpec, apply_mailbox, apply_quota, apply_seen, needs_file};
use super::meta::{FolderFiles, IndexWant};
use super::{Plan, Progress, Source, Subscription, Summary};
use crate::cyrus::Guid;
use crate::cyrus::index::{Index, parse_index};
use crate::error::{Error, Result};
use crate::model::UserFileKind;
use crate::replication::wire::file_literal_head;
use crate::replication::{Kv, Status, SyncClient, Value};

/// Where and as whom.
#[derive(Debug, Clone)]
pub struct ExactTarget {
    /// `host:port` of the target's `sync_server` (a SERVICES entry of its master).
    pub addr: String,
    /// An admin of the target (sync_server refuses anyone else).
    pub admin: String,
    /// Its password.
    pub password: String,
    /// The partition to create the folders on (the backup does not record the
    /// source's; Cyrus's default partition is called `default`).
    pub partition: String,
}

/// How.
#[derive(Debug, Clone, Default)]
pub struct ExactOptions {
    /// sync_server sessions working on the user at the same time (its folders shared
    /// out between them; 0 or 1: one).
    pub connections: usize,
    /// Continue a restore of this user that this tool started: folders already on the
    /// target with the backed-up UniqueID and HIGHESTMODSEQ are kept, the rest is
    /// applied. Without it, any folder of the user on the target refuses the restore.
    pub resume: bool,
    /// Smallest part a big folder is cut into to spread it over the sessions (bytes of
    /// messages; 0: 64 KiB).
    pub part_bytes: u64,
}

/// Flush `APPLY MESSAGE` after this many files...
const BATCH_FILES: usize = 1024;
/// ...or this many bytes.
const BATCH_BYTES: usize = 64 << 20;
/// `APPLY` commands sent ahead of their answers.
const WINDOW: usize = 32;
/// Socket timeout: sync_server answers an `APPLY MAILBOX` of a big folder only once it
/// has parsed and linked every message.
const TIMEOUT: Duration = Duration::from_secs(600);

/// A folder as it will be applied.
struct Image {
    name: String,
    uniqueid: String,
    files: FolderFiles,
    index: Index,
    annotations: build::MessageAnnotations,
    /// Already on the target (resume): leave it.
    done: bool,
    /// On the target half applied (resume): applied again whole, in one part.
    there: bool,
}

/// The internal name of one of `user`'s folders by its levels below the INBOX
/// (`bob`, `[Sent Items]` → `user.bob.Sent Items`; a `.` in a level is `^`; with a
/// domain `example.org!user.bob...`).
pub fn internal_name(user: &str, levels: &[String]) -> String {
    let (local, domain) = match user.split_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (user, None),
    };
    let mut n = String::new();
    if let Some(d) = domain {
        n.push_str(d);
        n.push('!');
    }
    n.push_str("user.");
    n.push_str(&local.replace('.', "^"));
    for l in levels {
        n.push('.');
        n.push_str(&l.replace('.', "^"));
    }
    n
}

fn sync_err(c: &SyncClient, what: String) -> Error {
    Error::imap(c.server().to_string(), what)
}

/// Restore `plan` (a whole user at a run) exactly into the target.
pub fn restore_exact(
    src: &mut Source,
    plan: &Plan,
    target: &ExactTarget,
    opts: &ExactOptions,
    progress: &mut dyn Progress,
) -> Result<Summary> {
    let mut sum = Summary::for_plan(plan);
    let owner = plan.user.clone();
    let t0 = std::time::Instant::now();
    let phase = |what: &str| {
        log::debug!(target: "cyrvault::restore", "{owner}: {what} after {:?}", t0.elapsed());
    };
    // Folder images, parents first (a name sorts before its children).
    let mut images = Vec::new();
    for f in &plan.folders {
        let files = src.folder_files(&f.uniqueid, f.source_run, IndexWant::Whole)?;
        let (Some(header), Some(index_bytes)) = (&files.header, &files.index) else {
            sum.fail(&f.name, None, "no archived cyrus.header/cyrus.index".into());
            continue;
        };
        let index = parse_index(index_bytes)
            .map_err(|e| Error::parse(format!("cyrus.index of {}", f.name), e))?;
        let annotations = build::message_annotations(files.annotations.as_deref(), &owner)?;
        let name = header
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| f.internal_name.clone());
        images.push(Image {
            name,
            uniqueid: f.uniqueid.clone(),
            files,
            index,
            annotations,
            done: false,
            there: false,
        });
    }
    images.sort_by(|a, b| a.name.cmp(&b.name));
    phase("archived meta read");

    let mut c = SyncClient::connect(&target.addr, TIMEOUT)?;
    c.authenticate_plain("", &target.admin, &target.password)?;
    let present = check_target(&mut c, &owner, &mut images, opts)?;
    phase("target checked");

    // Create the first folder empty: this checks the partition before any upload
    // (a resumed restore created it the first time).
    if let Some(first) = images.iter().find(|i| !i.done).filter(|_| !present.any) {
        let none = HashSet::new();
        let v = apply_mailbox(&spec(first, &target.partition, &none), true);
        let r = c.apply("MAILBOX", &v)?;
        if let Status::No(t) | Status::Bad(t) = r.status {
            return Err(Error::refused(format!(
                "sync_server {} refused to create {} on partition {:?}: {t} (is the \
                 partition configured there? --partition names it)",
                target.addr, first.name, target.partition
            )));
        }
    }
    // Commands are sent ahead of their answers (a window of them): every round trip
    // costs two wake-ups, which is what a loaded server makes slow.
    let quotas: Vec<(&String, Value)> = plan
        .quota
        .iter()
        .filter(|(root, q)| present.quotas.get(root) != Some(&q.limits.to_vec()))
        .map(|(root, q)| (root, apply_quota(root, q)))
        .collect();
    let cmds: Vec<(&str, Value)> = quotas.iter().map(|(_, v)| ("QUOTA", v.clone())).collect();
    c.apply_many(&cmds, WINDOW, |i, st| match st {
        Status::Ok(_) => sum.quota_roots += 1,
        Status::No(t) | Status::Bad(t) => {
            sum.fail(quotas[i].0, None, format!("quota not restored: {t}"))
        }
    })?;
    // The folders cut into parts and shared out over `connections` sync_server
    // sessions: each session uploads what its parts need and applies them, so as many
    // sync_server processes work as there are sessions. sync_server writes and fsyncs
    // every uploaded file before it reads the next (`reservefile` in imap/dlist.c):
    // one session is bound by the disk's fsync latency, several overlap it.
    let n = opts.connections.max(1);
    let groups = plan_parts(&images, n, opts.part_bytes);
    let mut total = 0u64;
    for g in &groups {
        let mut seen = HashSet::new();
        for p in g {
            let recs = &images[p.img].index.records[p.range.clone()];
            total += recs
                .iter()
                .filter(|r| needs_file(r) && seen.insert(r.guid))
                .count() as u64;
        }
    }
    progress.total(total);
    let shared = Shared {
        state: std::sync::Mutex::new(State {
            folders: images.iter().map(|_| FolderState::default()).collect(),
            aborted: false,
        }),
        cv: std::sync::Condvar::new(),
    };
    let progress = std::sync::Mutex::new(progress);
    let n = groups.len();
    let mut sums: Vec<Summary> = (0..n).map(|_| Summary::default()).collect();
    let sources = (1..n)
        .map(|_| src.reopen())
        .collect::<Result<Vec<Source>>>()?;
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let progress = &progress;
        let shared = &shared;
        let images = &images;
        let partition = &target.partition;
        let mut handles = Vec::new();
        let mut first = Some((&mut c, &mut *src));
        let mut others = sources.into_iter();
        for (group, sum_g) in groups.iter().zip(sums.iter_mut()) {
            let mine = first.take();
            let other_src = if mine.is_none() { others.next() } else { None };
            handles.push(scope.spawn(move || -> Result<()> {
                let _guard = AbortOnPanic(shared);
                let mut tick = || {
                    if let Ok(mut p) = progress.lock() {
                        p.tick();
                    }
                };
                let mut s = Session {
                    images,
                    parts: group,
                    shared,
                    partition,
                    sum: sum_g,
                    tick: &mut tick,
                };
                let r = match (mine, other_src) {
                    (Some((c, src)), _) => s.run(src, c),
                    (None, Some(src)) => (|| {
                        let mut c = SyncClient::connect(&target.addr, TIMEOUT)?;
                        c.authenticate_plain("", &target.admin, &target.password)?;
                        s.run(&src, &mut c)?;
                        c.exit()
                    })(),
                    (None, None) => Ok(()),
                };
                if r.is_err() {
                    // The other sessions may wait for a part of ours: let them go.
                    shared.abort();
                }
                r
            }));
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::other("restore thread panicked".into())))
            })
            .collect()
    });
    for g in sums {
        sum.created += g.created;
        sum.appended += g.appended;
        sum.bytes += g.bytes;
        sum.failed += g.failed;
        sum.failures.extend(g.failures);
    }
    results.into_iter().collect::<Result<()>>()?;
    phase("folders uploaded and applied");
    let meta = if present.any {
        Some(target_meta(&mut c, &owner)?)
    } else {
        None
    };
    user_state(src, &mut c, plan, &owner, meta.as_ref(), &mut sum)?;
    c.exit()?;
    phase("done");
    Ok(sum)
}

fn spec<'a>(img: &'a Image, partition: &'a str, skip: &'a HashSet<u32>) -> MailboxSpec<'a> {
    MailboxSpec {
        name: &img.name,
        uniqueid: &img.uniqueid,
        partition,
        // Present: images are only made with a header.
        header: img.files.header.as_ref().expect("image has a header"),
        index: &img.index,
        annotations: &img.annotations,
        mailbox_annotations: &img.files.mailbox_annotations,
        skip,
    }
}

/// Refuse a target where the user or any of the UniqueIDs exists (with `resume`, the
/// folders already there with the same name, UniqueID and HIGHESTMODSEQ are marked
/// done and the rest must be absent).
/// What a resumed restore found of the user on the target.
#[derive(Default)]
struct Present {
    /// Anything of the user is there (then its meta is compared before applying).
    any: bool,
    /// Quota roots there with their limits (in [`crate::cyrus::quota::IMAP_NAMES`]
    /// order).
    quotas: HashMap<String, Vec<Option<i64>>>,
}

fn check_target(
    c: &mut SyncClient,
    owner: &str,
    images: &mut [Image],
    opts: &ExactOptions,
) -> Result<Present> {
    let mut present = Present::default();
    let mut there: HashMap<String, (String, u64)> = HashMap::new();
    let ids = Value::List(images.iter().map(|i| Value::str(&i.uniqueid)).collect());
    // A shared hierarchy (owner `%...`) has no user to look up: its folders by name.
    let mut gets = if owner.starts_with('%') {
        let names = images.iter().map(|i| Value::str(&i.name)).collect();
        vec![("MAILBOXES", Value::List(names))]
    } else {
        vec![("USER", Value::str(owner))]
    };
    if !images.is_empty() {
        gets.push(("UNIQUEIDS", ids));
    }
    let mut answers = c.get_many(&gets)?.into_iter();
    let user = answers.next().unwrap_or_default();
    let by_id = answers.next().unwrap_or_default();
    for (k, v) in user.iter().chain(by_id.iter()) {
        if k == "QUOTA"
            && let Some(root) = v.get("ROOT").and_then(|x| x.as_str())
        {
            let limits = crate::cyrus::quota::IMAP_NAMES
                .iter()
                .map(|n| {
                    v.get(n)
                        .and_then(|x| x.as_u64())
                        .and_then(|l| i64::try_from(l).ok())
                })
                .collect();
            present.quotas.insert(root.to_string(), limits);
        }
        if k != "MAILBOX" {
            continue;
        }
        let name = v.get("MBOXNAME").and_then(|x| x.as_str()).unwrap_or("?");
        let id = v.get("UNIQUEID").and_then(|x| x.as_str()).unwrap_or("?");
        let hms = v.get("HIGHESTMODSEQ").and_then(|x| x.as_u64()).unwrap_or(0);
        there.insert(id.to_string(), (name.to_string(), hms));
    }
    if there.is_empty() {
        return Ok(present);
    }
    present.any = true;
    if !opts.resume {
        let (id, (name, _)) = there.iter().next().expect("not empty");
        return Err(Error::refused(format!(
            "user {owner} already has mailboxes on the target ({} of them, e.g. {name} \
             with UniqueID {id}): an exact restore re-creates mailboxes with their \
             UniqueIDs and never writes over existing ones; restore over IMAP instead, \
             or remove the user from the target first",
            there.len()
        )));
    }
    for img in images.iter_mut() {
        let want = img.index.header.highestmodseq.max(1);
        match there.remove(&img.uniqueid) {
            Some((name, hms)) if name == img.name && hms == want => img.done = true,
            // Our own probe (an empty folder) or a half-applied one: apply again.
            Some((name, hms)) if name == img.name && hms <= want => img.there = true,
            Some((name, hms)) => {
                return Err(Error::refused(format!(
                    "cannot resume the exact restore of {owner}: UniqueID {} is {name} \
                     with HIGHESTMODSEQ {hms} on the target, the backup has {} at {want}",
                    img.uniqueid, img.name
                )));
            }
            None => {}
        }
    }
    if let Some((id, (name, _))) = there.into_iter().next() {
        return Err(Error::refused(format!(
            "cannot resume the exact restore of {owner}: the target has {name} \
             (UniqueID {id}), which the backup does not"
        )));
    }
    Ok(present)
}

/// The user's seen entries, subscriptions and sieve scripts on the target (`GET META`).
#[derive(Default)]
struct TargetMeta {
    /// Folder UniqueID → `(lastread, lastuid, lastchange, seenuids)`.
    seen: HashMap<String, (u64, u64, u64, String)>,
    /// Internal names subscribed.
    subs: HashSet<String>,
    /// Sieve files (`name.script`) → active.
    sieve: HashMap<String, bool>,
}

fn target_meta(c: &mut SyncClient, owner: &str) -> Result<TargetMeta> {
    let mut m = TargetMeta::default();
    for (k, v) in c.get("META", &Value::str(owner))? {
        let s = |key: &str| {
            v.get(key)
                .and_then(|x| x.as_str())
                .unwrap_or("")
                .to_string()
        };
        let n = |key: &str| v.get(key).and_then(|x| x.as_u64()).unwrap_or(0);
        match k.as_str() {
            "SEEN" => {
                m.seen.insert(
                    s("UNIQUEID"),
                    (n("LASTREAD"), n("LASTUID"), n("LASTCHANGE"), s("SEENUIDS")),
                );
            }
            "LSUB" => {
                for item in v.as_list().unwrap_or(&[]) {
                    if let Some(name) = item.as_str() {
                        m.subs.insert(name.to_string());
                    }
                }
            }
            "SIEVE" => {
                m.sieve.insert(s("FILENAME"), n("ISACTIVE") == 1);
            }
            _ => {}
        }
    }
    Ok(m)
}

/// A part of a folder: records `range` of `images[img]` (ascending UID), the
/// `part`-th; `last` carries the folder's own counters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    img: usize,
    part: usize,
    range: std::ops::Range<usize>,
    last: bool,
    bytes: u64,
}

/// A folder as the sessions see it.
#[derive(Default)]
struct FolderState {
    /// Parts applied so far (part `k` waits until this is `k`).
    applied: usize,
    /// A part was refused: the later ones are not applied (they would leave a gap).
    failed: bool,
    /// UIDs left out (messages the archive could not give).
    skip: HashSet<u32>,
}

struct State {
    folders: Vec<FolderState>,
    /// A session failed: nobody waits for its parts any more.
    aborted: bool,
}

/// What the sessions share: per folder, how far it is applied.
struct Shared {
    state: std::sync::Mutex<State>,
    cv: std::sync::Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn abort(&self) {
        self.lock().aborted = true;
        self.cv.notify_all();
    }

    /// Wait until the parts before `p` are applied: `Ok(true)` then, `Ok(false)` if
    /// one of them failed.
    fn wait_turn(&self, p: &Part) -> Result<bool> {
        let mut st = self.lock();
        loop {
            if st.aborted {
                return Err(Error::other(
                    "another sync_server session of this restore failed".into(),
                ));
            }
            let f = &st.folders[p.img];
            if f.failed {
                return Ok(false);
            }
            if f.applied >= p.part {
                return Ok(true);
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Lets the other sessions go if this one panics (they may wait for its parts).
struct AbortOnPanic<'a>(&'a Shared);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abort();
        }
    }
}

/// Smallest part a folder is cut into (bytes of messages): below it, the extra
/// `APPLY MAILBOX` (an index commit on the target) costs more than the overlap gains.
const PART_BYTES: u64 = 64 << 10;

/// Cut the folders into parts and share them out over at most `n` sessions.
///
/// A folder of at least twice `part_bytes` (0: [`PART_BYTES`]) is cut into up to `2n`
/// parts of about equal bytes (by UID), so that one big INBOX is uploaded over every
/// session at once. The
/// first parts go by whole subtrees below the INBOX (balanced by bytes), each
/// session's in name order, so a folder is created after its parent by the same
/// session; the later parts go to whichever session has least so far. Every
/// session's list is ordered by part number: a part waits only for the part before
/// it of the same folder, which comes earlier in its own session's list, so no two
/// sessions wait for each other. A folder that is half there (resume) goes whole.
fn plan_parts(images: &[Image], n: usize, part_bytes: u64) -> Vec<Vec<Part>> {
    let n = n.max(1);
    let min = if part_bytes == 0 {
        PART_BYTES
    } else {
        part_bytes
    };
    let mut firsts: std::collections::BTreeMap<String, (u64, Vec<Part>)> = Default::default();
    let mut rest: Vec<Part> = Vec::new();
    for (i, img) in images.iter().enumerate().filter(|(_, i)| !i.done) {
        let recs = &img.index.records;
        let bytes: u64 = recs.iter().map(|r| r.size).sum();
        let k = if img.there || n == 1 {
            1
        } else {
            (bytes / min).clamp(1, 2 * n as u64) as usize
        };
        let mut parts = Vec::new();
        let (mut start, mut acc, mut cum) = (0usize, 0u64, 0u64);
        for (j, r) in recs.iter().enumerate() {
            acc += r.size;
            cum += r.size;
            // Cut where the running total passes the next k-th of the bytes.
            if parts.len() + 1 < k
                && cum.saturating_mul(k as u64) >= bytes.saturating_mul(parts.len() as u64 + 1)
            {
                parts.push((start..j + 1, acc));
                (start, acc) = (j + 1, 0);
            }
        }
        if start < recs.len() || parts.is_empty() {
            parts.push((start..recs.len(), acc));
        }
        let count = parts.len();
        for (part, (range, b)) in parts.into_iter().enumerate() {
            let p = Part {
                img: i,
                part,
                range,
                last: part + 1 == count,
                bytes: b,
            };
            if part == 0 {
                // `user.bob` → "", `user.bob.A.B` → "A" (the level below the INBOX).
                let key = img.name.split('.').nth(2).unwrap_or("").to_string();
                let t = firsts.entry(key).or_default();
                t.0 += p.bytes;
                t.1.push(p);
            } else {
                rest.push(p);
            }
        }
    }
    let mut groups: Vec<(u64, Vec<Part>)> = (0..n).map(|_| (0, Vec::new())).collect();
    let mut trees: Vec<(u64, Vec<Part>)> = firsts.into_values().collect();
    trees.sort_by_key(|t| std::cmp::Reverse(t.0));
    for (bytes, parts) in trees {
        if let Some(g) = groups.iter_mut().min_by_key(|g| g.0) {
            g.0 += bytes;
            g.1.extend(parts);
        }
    }
    rest.sort_by_key(|p| (p.part, std::cmp::Reverse(p.bytes)));
    for p in rest {
        if let Some(g) = groups.iter_mut().min_by_key(|g| g.0) {
            g.0 += p.bytes;
            g.1.push(p);
        }
    }
    groups
        .into_iter()
        .filter(|g| !g.1.is_empty())
        .map(|(_, mut g)| {
            g.sort_by(|a, b| (a.part, &images[a.img].name).cmp(&(b.part, &images[b.img].name)));
            g
        })
        .collect()
}

/// One sync_server session's share of the parts.
struct Session<'a> {
    images: &'a [Image],
    parts: &'a [Part],
    shared: &'a Shared,
    partition: &'a str,
    sum: &'a mut Summary,
    tick: &'a mut dyn FnMut(),
}

impl Session<'_> {
    /// Upload what the parts need, then apply them in order: each part once the one
    /// before it (of its folder) is applied, the ones that wait for nobody sent ahead
    /// of their answers.
    fn run(&mut self, src: &Source, c: &mut SyncClient) -> Result<()> {
        self.upload(src, c)?;
        let mut in_flight: std::collections::VecDeque<usize> = Default::default();
        for (k, p) in self.parts.iter().enumerate() {
            if p.part > 0 {
                while let Some(i) = in_flight.pop_front() {
                    self.answer(c, i)?;
                }
                if !self.shared.wait_turn(p)? {
                    log::debug!(target: "cyrvault::restore",
                        "{}: part {} not applied, an earlier part failed",
                        self.images[p.img].name, p.part);
                    continue;
                }
            }
            let img = &self.images[p.img];
            let skip = self.shared.lock().folders[p.img].skip.clone();
            let v = build::apply_mailbox_part(
                &spec(img, self.partition, &skip),
                p.range.clone(),
                p.last,
            );
            c.send(&crate::replication::wire::command("APPLY", "MAILBOX", &v))?;
            in_flight.push_back(k);
            while in_flight.len() > WINDOW {
                if let Some(i) = in_flight.pop_front() {
                    self.answer(c, i)?;
                }
            }
        }
        while let Some(i) = in_flight.pop_front() {
            self.answer(c, i)?;
        }
        Ok(())
    }

    /// Read the answer to `parts[k]`'s `APPLY MAILBOX` and let its folder go on.
    fn answer(&mut self, c: &mut SyncClient, k: usize) -> Result<()> {
        let p = &self.parts[k];
        let img = &self.images[p.img];
        let status = c.read_response()?.status;
        let mut st = self.shared.lock();
        let f = &mut st.folders[p.img];
        match status {
            Status::Ok(_) => {
                f.applied += 1;
                if p.last {
                    self.sum.created += 1;
                }
                self.sum.appended += img.index.records[p.range.clone()]
                    .iter()
                    .filter(|r| !build::is_expunged(r) && !f.skip.contains(&r.uid))
                    .count() as u64;
            }
            Status::No(t) | Status::Bad(t) => {
                f.failed = true;
                self.sum
                    .fail(&img.name, None, format!("APPLY MAILBOX: {t}"));
            }
        }
        drop(st);
        self.shared.cv.notify_all();
        Ok(())
    }

    /// Upload every message the parts need, in archive order (each member inflated
    /// once), in `APPLY MESSAGE` batches sent without waiting for each answer.
    fn upload(&mut self, src: &Source, c: &mut SyncClient) -> Result<()> {
        let mut want: Vec<Guid> = Vec::new();
        let mut seen = HashSet::new();
        for p in self.parts {
            let recs = &self.images[p.img].index.records[p.range.clone()];
            for r in recs.iter().filter(|r| needs_file(r)) {
                if seen.insert(r.guid) {
                    want.push(r.guid);
                }
            }
        }
        src.sort_by_location(&mut want)?;
        let chunks = src.chunks_by_member(&want)?;
        let mut failed: HashMap<Guid, String> = HashMap::new();
        let mut batch_files = 0usize;
        let mut batch_bytes = 0usize;
        let mut upload_bytes = 0u64;
        let partition = self.partition;
        let tick = &mut *self.tick;
        src.read_ahead(&want, &chunks, |i, bytes| {
            tick();
            let guid = want[i];
            let bytes = match bytes {
                Ok(b) => b,
                Err(e) => {
                    failed.insert(guid, e.to_string());
                    return Ok(());
                }
            };
            c.send_raw(if batch_files == 0 {
                b"APPLY MESSAGE ("
            } else {
                b" "
            })?;
            c.send_raw(&file_literal_head(partition, &guid, bytes.len()))?;
            c.send_raw(&bytes)?;
            upload_bytes += bytes.len() as u64;
            batch_files += 1;
            batch_bytes += bytes.len();
            if batch_files >= BATCH_FILES || batch_bytes >= BATCH_BYTES {
                c.send(b")\r\n")?;
                (batch_files, batch_bytes) = (0, 0);
                // Keep a few batches in flight; answers are one short line each.
                while c.pending() > 2 {
                    expect_ok(c, "APPLY MESSAGE")?;
                }
            }
            Ok(())
        })?;
        if batch_files > 0 {
            c.send(b")\r\n")?;
        }
        self.sum.bytes += upload_bytes;
        while c.pending() > 0 {
            expect_ok(c, "APPLY MESSAGE")?;
        }
        if failed.is_empty() {
            return Ok(());
        }
        // Records whose message could not be read: left out of their folder (an
        // expunged one goes in without its file, as a replica keeps it).
        let mut st = self.shared.lock();
        for p in self.parts {
            let img = &self.images[p.img];
            for r in &img.index.records[p.range.clone()] {
                if let Some(why) = failed.get(&r.guid)
                    && !build::is_expunged(r)
                {
                    st.folders[p.img].skip.insert(r.uid);
                    self.sum.failures.push(super::Failure {
                        folder: img.name.clone(),
                        guid: Some(r.guid.to_hex()),
                        uid: Some(r.uid),
                        reason: why.clone(),
                    });
                    self.sum.failed += 1;
                }
            }
        }
        Ok(())
    }
}

fn expect_ok(c: &mut SyncClient, what: &str) -> Result<()> {
    match c.read_response()?.status {
        Status::Ok(_) => Ok(()),
        Status::No(t) | Status::Bad(t) => Err(sync_err(c, format!("{what}: {t}"))),
    }
}

/// Seen state (the backed-up seen database, entry by entry), subscriptions (all of
/// them: sync_server subscribes even to folders that do not exist) and sieve scripts
/// with the active one.
/// What one `APPLY` of the user state is about (for its answer).
enum Item {
    Seen(String),
    Sub(String),
    Sieve(String),
    Activate(String),
}

fn user_state(
    src: &mut Source,
    c: &mut SyncClient,
    plan: &Plan,
    owner: &str,
    there: Option<&TargetMeta>,
    sum: &mut Summary,
) -> Result<()> {
    let mut items: Vec<Item> = Vec::new();
    let mut cmds: Vec<(&str, Value)> = Vec::new();
    for (_, file, loc) in src.catalog.user_files_at(plan.run)? {
        if file.kind != UserFileKind::Seen {
            continue;
        }
        let bytes = src.read_entry(&loc)?;
        let recs = crate::cyrus::twoskip::read_all(&bytes)
            .map_err(|e| Error::parse("seen database", e))?;
        for (k, v) in recs {
            let (Ok(id), Ok(val)) = (String::from_utf8(k), String::from_utf8(v)) else {
                continue;
            };
            let Some(cmd) = apply_seen(owner, &id, &val) else {
                sum.fail(
                    "seen",
                    None,
                    format!("seen entry for {id}: {val:?} does not parse"),
                );
                continue;
            };
            if there
                .and_then(|m| m.seen.get(&id))
                .is_some_and(|t| same_seen(t, &cmd))
            {
                continue;
            }
            items.push(Item::Seen(id));
            cmds.push(("SEEN", cmd));
        }
    }
    for s in &plan.subscriptions {
        let name = match s {
            Subscription::Own(levels) => internal_name(owner, levels),
            Subscription::Other(n) => n.clone(),
        };
        if there.is_some_and(|m| m.subs.contains(&name)) {
            continue;
        }
        cmds.push((
            "SUB",
            Kv::new().str("USERID", owner).str("MBOXNAME", &name).done(),
        ));
        items.push(Item::Sub(name));
    }
    let when = src
        .catalog
        .runs()?
        .iter()
        .find(|r| r.run == plan.run)
        .map(|r| u64::try_from(r.started).unwrap_or(0))
        .unwrap_or(0);
    for (name, bytes) in &plan.sieve {
        // A script already there is left alone (sync_server would store an empty
        // script over an existing one: `sync_sieve_upload` in 3.6 fills its buffer
        // only for a new name).
        if !name.ends_with(".script") || there.is_some_and(|m| m.sieve.contains_key(name)) {
            continue;
        }
        cmds.push((
            "SIEVE",
            Kv::new()
                .str("USERID", owner)
                .str("FILENAME", name)
                .num("LAST_UPDATE", when)
                .str("CONTENT", bytes)
                .done(),
        ));
        items.push(Item::Sieve(name.clone()));
    }
    let already_active =
        |a: &str| there.is_some_and(|m| m.sieve.get(&format!("{a}.script")) == Some(&true));
    if let Some(active) = plan
        .active_sieve
        .as_deref()
        .and_then(|a| a.strip_suffix(".script"))
        .filter(|a| !already_active(a))
    {
        cmds.push((
            "ACTIVATE_SIEVE",
            Kv::new()
                .str("USERID", owner)
                .str("FILENAME", format!("{active}.bc"))
                .done(),
        ));
        items.push(Item::Activate(active.to_string()));
    }
    c.apply_many(&cmds, WINDOW, |i, st| {
        let bad = match st {
            Status::Ok(_) => None,
            Status::No(t) | Status::Bad(t) => Some(t),
        };
        match (&items[i], bad) {
            (Item::Seen(_), None) => {}
            (Item::Seen(id), Some(t)) => sum.fail("seen", None, format!("seen state of {id}: {t}")),
            (Item::Sub(_), None) => sum.subscribed += 1,
            (Item::Sub(n), Some(t)) => sum.warn(n, format!("subscription not restored: {t}")),
            (Item::Sieve(_), None) => sum.sieve_scripts += 1,
            (Item::Sieve(n), Some(t)) => sum.fail("sieve", None, format!("{n}: {t}")),
            (Item::Activate(_), None) => {}
            (Item::Activate(n), Some(t)) => sum.fail("sieve", None, format!("activating {n}: {t}")),
        }
    })
}

/// Whether the target's seen entry is what `APPLY SEEN` would write.
fn same_seen(t: &(u64, u64, u64, String), cmd: &Value) -> bool {
    let Value::Kv(kv) = cmd else { return false };
    let num = |k: &str| {
        kv.iter().find(|(n, _)| *n == k).and_then(|(_, v)| match v {
            Value::Num(x) => Some(*x),
            _ => None,
        })
    };
    let uids = kv
        .iter()
        .find(|(n, _)| *n == "SEENUIDS")
        .and_then(|(_, v)| match v {
            Value::Str(b) => std::str::from_utf8(b).ok(),
            _ => None,
        });
    Some(t.0) == num("LASTREAD")
        && Some(t.1) == num("LASTUID")
        && Some(t.2) == num("LASTCHANGE")
        && Some(t.3.as_str()) == uids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_names() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(internal_name("bob", &v(&[])), "user.bob");
        assert_eq!(
            internal_name("bob", &v(&["Sent Items", "a.b"])),
            "user.bob.Sent Items.a^b"
        );
        assert_eq!(
            internal_name("bob.smith@ex.org", &v(&["X"])),
            "ex.org!user.bob^smith.X"
        );
    }

    fn image(name: &str, sizes: &[u64]) -> Image {
        let records = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| crate::cyrus::index::IndexRecord {
                uid: i as u32 + 1,
                size,
                ..Default::default()
            })
            .collect();
        Image {
            name: name.into(),
            uniqueid: format!("id-{name}"),
            files: FolderFiles::default(),
            index: Index {
                header: Default::default(),
                records,
            },
            annotations: Default::default(),
            done: false,
            there: false,
        }
    }

    #[test]
    fn parts_cover_every_record_once_in_order_without_cross_waits() {
        let mut images = vec![
            image("user.bob", &[100; 40]),
            image("user.bob.A", &[50; 10]),
            image("user.bob.A.B", &[10; 3]),
            image("user.bob.Sent", &[300; 9]),
            image("user.bob.Z", &[1000]),
        ];
        images[4].done = true;
        let groups = plan_parts(&images, 3, 500);
        assert!(groups.len() <= 3 && !groups.is_empty());
        // Every record of every folder to apply in exactly one part; parts of a
        // folder contiguous, numbered from 0, the last one marked.
        for (i, img) in images.iter().enumerate() {
            let mut parts: Vec<&Part> = groups.iter().flatten().filter(|p| p.img == i).collect();
            if img.done {
                assert!(parts.is_empty());
                continue;
            }
            parts.sort_by_key(|p| p.part);
            let mut next = 0;
            for (k, p) in parts.iter().enumerate() {
                assert_eq!((p.part, p.range.start), (k, next), "{}", img.name);
                assert!(!p.range.is_empty() || img.index.records.is_empty());
                assert_eq!(p.last, k + 1 == parts.len());
                next = p.range.end;
            }
            assert_eq!(next, img.index.records.len(), "{}", img.name);
        }
        // The INBOX (4000 bytes, 500 a part, at most 2n = 6 parts) is cut; B (30
        // bytes) is not.
        let inbox = groups.iter().flatten().filter(|p| p.img == 0).count();
        assert_eq!(inbox, 6);
        assert_eq!(groups.iter().flatten().filter(|p| p.img == 2).count(), 1);
        for g in &groups {
            // Ordered by part number, then name; a subtree's first parts in one
            // session, parent first.
            let keys: Vec<(usize, &str)> = g
                .iter()
                .map(|p| (p.part, images[p.img].name.as_str()))
                .collect();
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted);
        }
        let session_of = |img: usize| {
            groups
                .iter()
                .position(|g| g.iter().any(|p| p.img == img && p.part == 0))
                .unwrap()
        };
        assert_eq!(session_of(1), session_of(2));
        // One session, or a folder half there: whole folders.
        assert!(
            plan_parts(&images, 1, 500)
                .iter()
                .flatten()
                .all(|p| p.last && p.part == 0)
        );
        images[0].there = true;
        let g = plan_parts(&images, 3, 500);
        assert_eq!(g.iter().flatten().filter(|p| p.img == 0).count(), 1);
    }

    #[test]
    fn a_part_grows_the_counters_and_the_last_sets_them() {
        let mut img = image("user.bob", &[10, 20, 30]);
        img.index.header.last_uid = 9;
        img.index.header.highestmodseq = 50;
        img.index.header.sync_crc_basic = 7;
        for (i, r) in img.index.records.iter_mut().enumerate() {
            r.modseq = [40, 12, 45][i];
        }
        img.files.header = Some(crate::cyrus::header::MailboxHeader {
            mbtype: None,
            name: Some("user.bob".into()),
            uniqueid: Some("u".into()),
            jmapid: None,
            quotaroot: None,
            acl: vec![],
            user_flags: vec![],
            format: crate::cyrus::header::HeaderFormat::Dlist36,
        });
        let none = HashSet::new();
        let text = |range: std::ops::Range<usize>, last: bool| {
            let mut out = Vec::new();
            crate::replication::wire::write_value(
                &build::apply_mailbox_part(&spec(&img, "p1", &none), range, last),
                &mut out,
            );
            String::from_utf8(out).unwrap()
        };
        let first = text(0..2, false);
        assert!(
            first.contains("LAST_UID 2 HIGHESTMODSEQ 40 RECENTUID 0"),
            "{first}"
        );
        assert!(
            !first.contains("SYNC_CRC") && first.contains("UID 2 ") && !first.contains("UID 3 ")
        );
        let last = text(2..3, true);
        assert!(
            last.contains("SYNC_CRC 7 ") && last.contains("LAST_UID 9 HIGHESTMODSEQ 50 "),
            "{last}"
        );
        assert!(
            last.contains("%(UID 3 ") && !last.contains("%(UID 1 "),
            "{last}"
        );
    }
}
