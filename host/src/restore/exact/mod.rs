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
//! order), then one `APPLY MAILBOX` per folder with all its records, then seen state,
//! subscriptions and sieve. Every folder is one `APPLY MAILBOX`, which sync_server
//! carries out under the user's namespace lock from start to end. Cyrus's own
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
    skip: HashSet<u32>,
    /// Already on the target (resume): leave it.
    done: bool,
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
    Error::Imap {
        server: c.server().to_string(),
        message: what,
    }
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
            skip: HashSet::new(),
            done: false,
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
        let v = apply_mailbox(&spec(first, &target.partition), true);
        let r = c.apply("MAILBOX", &v)?;
        if let Status::No(t) | Status::Bad(t) = r.status {
            return Err(Error::Refused(format!(
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
    // The folders shared out over `connections` sync_server sessions (whole subtrees,
    // balanced by bytes): each session uploads what its folders need and applies them,
    // so as many sync_server processes work as there are sessions.
    let mut files: HashSet<Guid> = HashSet::new();
    for img in images.iter().filter(|i| !i.done) {
        files.extend(
            img.index
                .records
                .iter()
                .filter(|r| needs_file(r))
                .map(|r| r.guid),
        );
    }
    progress.total(files.len() as u64);
    let groups = share_out(images, opts.connections.max(1));
    let progress = std::sync::Mutex::new(progress);
    let n = groups.len();
    let mut sums: Vec<Summary> = (0..n).map(|_| Summary::default()).collect();
    let sources = (1..n)
        .map(|_| src.reopen())
        .collect::<Result<Vec<Source>>>()?;
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let progress = &progress;
        let partition = &target.partition;
        let mut handles = Vec::new();
        let mut first = Some((&mut c, &mut *src));
        let mut others = sources.into_iter();
        for (mut group, sum_g) in groups.into_iter().zip(sums.iter_mut()) {
            let mine = first.take();
            let other_src = if mine.is_none() { others.next() } else { None };
            handles.push(scope.spawn(move || -> Result<()> {
                let mut tick = || {
                    if let Ok(mut p) = progress.lock() {
                        p.tick();
                    }
                };
                match (mine, other_src) {
                    (Some((c, src)), _) => session(src, c, &mut group, partition, sum_g, &mut tick),
                    (None, Some(src)) => {
                        let mut c = SyncClient::connect(&target.addr, TIMEOUT)?;
                        c.authenticate_plain("", &target.admin, &target.password)?;
                        session(&src, &mut c, &mut group, partition, sum_g, &mut tick)?;
                        c.exit()
                    }
                    (None, None) => Ok(()),
                }
            }));
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Other("restore thread panicked".into())))
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

fn spec<'a>(img: &'a Image, partition: &'a str) -> MailboxSpec<'a> {
    MailboxSpec {
        name: &img.name,
        uniqueid: &img.uniqueid,
        partition,
        // Present: images are only made with a header.
        header: img.files.header.as_ref().expect("image has a header"),
        index: &img.index,
        annotations: &img.annotations,
        mailbox_annotations: &img.files.mailbox_annotations,
        skip: &img.skip,
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
        return Err(Error::Refused(format!(
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
            Some((name, hms)) if name == img.name && hms <= want => {}
            Some((name, hms)) => {
                return Err(Error::Refused(format!(
                    "cannot resume the exact restore of {owner}: UniqueID {} is {name} \
                     with HIGHESTMODSEQ {hms} on the target, the backup has {} at {want}",
                    img.uniqueid, img.name
                )));
            }
            None => {}
        }
    }
    if let Some((id, (name, _))) = there.into_iter().next() {
        return Err(Error::Refused(format!(
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

/// One session's share: upload what its folders need, then apply them (parents
/// first).
fn session(
    src: &Source,
    c: &mut SyncClient,
    images: &mut [Image],
    partition: &str,
    sum: &mut Summary,
    tick: &mut dyn FnMut(),
) -> Result<()> {
    upload(src, c, images, partition, sum, tick)?;
    let todo: Vec<&Image> = images.iter().filter(|i| !i.done).collect();
    let cmds: Vec<(&str, Value)> = todo
        .iter()
        .map(|img| ("MAILBOX", apply_mailbox(&spec(img, partition), false)))
        .collect();
    c.apply_many(&cmds, WINDOW, |i, st| match st {
        Status::Ok(_) => {
            let img = todo[i];
            sum.created += 1;
            sum.appended += img
                .index
                .records
                .iter()
                .filter(|r| !build::is_expunged(r) && !img.skip.contains(&r.uid))
                .count() as u64;
        }
        Status::No(t) | Status::Bad(t) => {
            sum.fail(&todo[i].name, None, format!("APPLY MAILBOX: {t}"));
        }
    })
}

/// The folders in at most `n` groups of whole subtrees below the INBOX (a folder is
/// never applied before its parent), balanced by message bytes; each group in name
/// order.
fn share_out(images: Vec<Image>, n: usize) -> Vec<Vec<Image>> {
    let mut trees: std::collections::BTreeMap<String, (u64, Vec<Image>)> = Default::default();
    for img in images {
        // `user.bob` → "", `user.bob.A.B` → "A" (the level below the INBOX).
        let key = img.name.split('.').nth(2).unwrap_or("").to_string();
        let bytes: u64 = img.index.records.iter().map(|r| r.size).sum();
        let t = trees.entry(key).or_default();
        t.0 += bytes;
        t.1.push(img);
    }
    let mut trees: Vec<(u64, Vec<Image>)> = trees.into_values().collect();
    trees.sort_by_key(|t| std::cmp::Reverse(t.0));
    let n = n.min(trees.len()).max(1);
    let mut groups: Vec<(u64, Vec<Image>)> = (0..n).map(|_| (0, Vec::new())).collect();
    for (bytes, imgs) in trees {
        if let Some(g) = groups.iter_mut().min_by_key(|g| g.0) {
            g.0 += bytes;
            g.1.extend(imgs);
        }
    }
    groups
        .into_iter()
        .map(|(_, mut g)| {
            g.sort_by(|a, b| a.name.cmp(&b.name));
            g
        })
        .collect()
}

/// Upload every message the folders to apply need, in archive order (each member
/// inflated once), in `APPLY MESSAGE` batches sent without waiting for each answer.
fn upload(
    src: &Source,
    c: &mut SyncClient,
    images: &mut [Image],
    partition: &str,
    sum: &mut Summary,
    tick: &mut dyn FnMut(),
) -> Result<()> {
    let mut want: Vec<Guid> = Vec::new();
    let mut seen = HashSet::new();
    for img in images.iter().filter(|i| !i.done) {
        for r in img.index.records.iter().filter(|r| needs_file(r)) {
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
    sum.bytes += upload_bytes;
    while c.pending() > 0 {
        expect_ok(c, "APPLY MESSAGE")?;
    }
    // Records whose message could not be read: left out of their folder (an expunged
    // one goes in without its file, as a replica keeps it).
    for img in images.iter_mut().filter(|i| !i.done) {
        for r in &img.index.records {
            if let Some(why) = failed.get(&r.guid)
                && !build::is_expunged(r)
            {
                img.skip.insert(r.uid);
                sum.failures.push(super::Failure {
                    folder: img.name.clone(),
                    guid: Some(r.guid.to_hex()),
                    uid: Some(r.uid),
                    reason: why.clone(),
                });
                sum.failed += 1;
            }
        }
    }
    Ok(())
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
}
