//! Restore into a live Cyrus over IMAP: works on any Cyrus and for partial restores.
//!
//! The session is the admin acting as the user (SASL PLAIN with authorization id =
//! the user, authentication id = the admin), so every flag lands as the owner's own:
//! in Cyrus 3.6 the owner's `\Seen` lives in the index record, a non-owner's in the
//! seen database. A second session, the admin's own (PLAIN without an authorization
//! id), creates a missing INBOX, sets the backed-up ACL on every folder the restore
//! creates (the INBOX too) and the quota of a user it creates.
//!
//! Every folder the restore creates gets its backed-up ACL, its mailbox annotations
//! (special-use, comments, every other entry, private ones as their user) and its
//! options (shared seen, duplicate delivery, POP3 UIDLs). Messages go in ascending
//! backed-up UID (`imap_append`). Then subscriptions (a folder Cyrus will not
//! subscribe to because it does not exist is a warning, not a failure), sieve scripts
//! and, for a whole user restored to its names, the user's `\Seen` on other users'
//! folders (`imap_extra`).
//!
//! Idempotent: before appending to a folder, its messages' GUIDs are read
//! (`UID FETCH 1:* (DIGEST.SHA1)`; Cyrus's digest is the SHA-1 of the message file,
//! the same as its GUID; a server without it is asked for the bodies, which are
//! hashed). Per GUID, only as many copies as the backup held and the folder lacks are
//! appended, so a restore that was interrupted finishes when run again, without
//! duplicates. A folder created here is a new mailbox with a new UniqueID: nothing
//! is ever made to share the backed-up folder's identity (Cyrus issue #4702); use
//! `restore::exact` for the same UniqueIDs and UIDs.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use super::imap_append::{Job, append_all};
use super::{Action, FolderPlan, Plan, Progress, Source, Subscription, Summary};
use crate::cyrus::Guid;
use crate::error::{Error, Result};
use crate::imap::{Client, ImapError, ImapErrorKind};

/// Where and as whom to restore.
#[derive(Debug, Clone)]
pub struct ImapTarget {
    /// `host:port` of the IMAP service.
    pub addr: String,
    /// The admin's name (an `admins:` entry in imapd.conf).
    pub admin: String,
    /// The admin's password.
    pub password: String,
    /// The user to restore into (usually the backed-up user), or a shared
    /// hierarchy's owner id (`%shared`): then the folders are restored by their
    /// full names (`shared.News`) in the admin's own session.
    pub user: String,
    /// TLS for the IMAP connections (and STARTTLS for ManageSieve); None: plaintext.
    pub tls: Option<crate::imap::Tls>,
}

impl ImapTarget {
    /// Whether the target is a shared hierarchy rather than a user.
    pub fn is_shared(&self) -> bool {
        self.user.starts_with('%')
    }
}

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct ImapOptions {
    /// Restore under this new folder tree (`Restored/2026-11-28`, `/` between levels)
    /// instead of the original names.
    pub into: Option<String>,
    /// Only say what would be done.
    pub dry_run: bool,
    /// Subscribe the user to the restored folders that were subscribed.
    pub subscriptions: bool,
    /// Upload the sieve scripts (and activate the active one) over ManageSieve here.
    pub sieve: Option<String>,
    /// The vault the archive is in: the user's `\Seen` on another user's folder is
    /// mapped through that user's archive when the folder came back with new UIDs.
    pub vault: Option<PathBuf>,
    /// Sessions of the user appending at the same time (folders shared out between
    /// them; 0 or 1: one).
    pub sessions: usize,
    /// Leave the `\Seen` on other users' folders for a later [`restore_foreign_seen`]
    /// (a whole-server restore does it once every user is back).
    pub defer_foreign_seen: bool,
}

/// A session as the user plus the admin's own session.
pub(crate) struct Sessions<'a> {
    pub(crate) target: &'a ImapTarget,
    user: Client,
    admin: Option<Client>,
}

impl<'a> Sessions<'a> {
    fn open(target: &'a ImapTarget) -> Result<Sessions<'a>> {
        Ok(Sessions {
            target,
            user: connect_as_user(target)?,
            admin: None,
        })
    }

    /// The session as the user.
    pub(crate) fn user_client(&mut self) -> &mut Client {
        &mut self.user
    }

    /// The admin's own session (opened on first use).
    pub(crate) fn admin(&mut self) -> Result<&mut Client> {
        if self.admin.is_none() {
            self.admin = Some(connect_as(self.target, "")?);
        }
        self.admin
            .as_mut()
            .ok_or_else(|| Error::other("admin session".into()))
    }
}

/// A session of `user` opened with the admin's credentials.
pub(crate) fn connect_as(t: &ImapTarget, user: &str) -> Result<Client> {
    let mut c = Client::connect_with(&t.addr, t.tls.as_ref())?;
    c.authenticate_plain(user, &t.admin, &t.password)?;
    Ok(c)
}

/// The session that creates folders and appends: the admin acting as the user, or
/// for a shared hierarchy the admin's own (shared mailboxes have no owner; their
/// `\Seen` is per reader anyway).
pub(crate) fn connect_as_user(t: &ImapTarget) -> Result<Client> {
    let authz = if t.is_shared() { "" } else { t.user.as_str() };
    connect_as(t, authz)
}

/// The name the user sees for a backed-up folder (by its levels below the INBOX):
/// `INBOX`, `INBOX<sep>Work<sep>Sub`, or under `into` (`Restored/2026-11-28`, where the
/// INBOX itself becomes `.../INBOX`). `None` if a level holds the separator.
pub fn target_name(parts: &[String], into: Option<&str>, sep: char) -> Option<String> {
    let mut all: Vec<&str> = Vec::new();
    if let Some(i) = into {
        all.extend(i.split('/').filter(|p| !p.is_empty()));
        if parts.is_empty() {
            all.push("INBOX");
        }
    }
    all.extend(parts.iter().map(String::as_str));
    if all.iter().any(|p| p.is_empty() || p.contains(sep)) {
        return None;
    }
    let mut name = String::from("INBOX");
    for p in all {
        name.push(sep);
        name.push_str(p);
    }
    Some(name)
}

/// The name of a backed-up shared folder (by its levels from the top: `[shared,
/// News]`) on the target: `shared<sep>News`, or under `into` (`Restored/2026-11-28`,
/// a top-level folder of its own). `None` if a level holds the separator.
pub fn shared_target_name(parts: &[String], into: Option<&str>, sep: char) -> Option<String> {
    let mut all: Vec<&str> = Vec::new();
    if let Some(i) = into {
        all.extend(i.split('/').filter(|p| !p.is_empty()));
    }
    all.extend(parts.iter().map(String::as_str));
    if all.is_empty() || all.iter().any(|p| p.is_empty() || p.contains(sep)) {
        return None;
    }
    Some(all.join(&sep.to_string()))
}

/// The admin's name of the user's INBOX: `user<sep>bob` (`user<sep>bob@example.com`).
pub(crate) fn admin_inbox(user: &str, sep: char) -> String {
    match user.split_once('@') {
        Some((l, d)) => format!("user{sep}{l}@{d}"),
        None => format!("user{sep}{user}"),
    }
}

/// The user-view name → admin-view name (`INBOX.X` → `user.bob.X`).
pub(crate) fn admin_name(user_view: &str, user: &str, sep: char) -> String {
    let (local, domain) = match user.split_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (user, None),
    };
    let rest = user_view.get(5..).unwrap_or("");
    let mut n = format!("user{sep}{local}{rest}");
    if let Some(d) = domain {
        n.push('@');
        n.push_str(d);
    }
    n
}

/// The backed-up ACL for the target user: with `--to-user`, the source user's entry
/// becomes the target user's, and the target user gets every right on what the
/// restore creates (it must be able to append, and the folders are theirs now).
pub fn map_acl(acl: &[(String, String)], source: &str, target: &str) -> Vec<(String, String)> {
    if source == target {
        return acl.to_vec();
    }
    const ALL: &str = "lrswipkxtecdan";
    let mut out: Vec<(String, String)> = acl
        .iter()
        .filter(|(id, _)| id != target)
        .map(|(id, r)| {
            let id = if id == source { target } else { id };
            (id.to_string(), r.clone())
        })
        .collect();
    match out.iter_mut().find(|(id, _)| id == target) {
        Some((_, r)) => {
            for c in ALL.chars() {
                if !r.contains(c) {
                    r.push(c);
                }
            }
        }
        None => out.push((target.to_string(), ALL.to_string())),
    }
    out
}

/// GUID → how many copies a folder holds.
fn folder_guids(c: &mut Client, name: &str) -> Result<HashMap<Guid, usize>> {
    let mut out = HashMap::new();
    for (_, g) in folder_uid_guids(c, name)? {
        *out.entry(g).or_insert(0) += 1;
    }
    Ok(out)
}

/// (UID, GUID) of every message of a folder (EXAMINEd here), by DIGEST.SHA1 or, where
/// the server has none, by hashing the bodies a hundred at a time.
pub(crate) fn folder_uid_guids(c: &mut Client, name: &str) -> Result<Vec<(u32, Guid)>> {
    let mut out = Vec::new();
    let info = c.examine(name)?;
    if info.exists == 0 {
        return Ok(out);
    }
    match c.uid_fetch("1:*", "(UID DIGEST.SHA1)") {
        Ok(items) if items.iter().all(|i| i.digest_sha1.is_some()) => {
            for i in items {
                if let (Some(u), Some(g)) =
                    (i.uid, i.digest_sha1.as_deref().and_then(Guid::from_hex))
                {
                    out.push((u, g));
                }
            }
            return Ok(out);
        }
        Ok(_)
        | Err(ImapError {
            kind: ImapErrorKind::Bad | ImapErrorKind::No,
            ..
        }) => {}
        Err(e) => return Err(e.into()),
    }
    let uids: Vec<u32> = c
        .uid_fetch("1:*", "(UID)")?
        .iter()
        .filter_map(|i| i.uid)
        .collect();
    for chunk in uids.chunks(100) {
        let set: Vec<String> = chunk.iter().map(u32::to_string).collect();
        for i in c.uid_fetch(&set.join(","), "(UID BODY.PEEK[])")? {
            if let (Some(u), Some(b)) = (i.uid, &i.body) {
                out.push((u, Guid::of(b)));
            }
        }
    }
    Ok(out)
}

/// Every folder the user can see (one LIST, not one per folder), INBOX spelt `INBOX`.
fn visible_folders(c: &mut Client) -> Result<HashSet<String>> {
    Ok(c.list("", "*")?
        .into_iter()
        .filter(|e| !e.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Noselect")))
        .map(|e| {
            if e.name.eq_ignore_ascii_case("INBOX") {
                "INBOX".to_string()
            } else {
                e.name
            }
        })
        .collect())
}

/// Carry out `plan` against the server: create folders (with their ACLs, metadata and
/// options), append what is missing, quota, subscriptions, sieve scripts, `\Seen` on
/// other users' folders. Messages that fail are listed in the summary.
pub fn restore_to_imap(
    src: &mut Source,
    plan: &Plan,
    target: &ImapTarget,
    opts: &ImapOptions,
    progress: &mut dyn Progress,
) -> Result<Summary> {
    let mut sum = Summary::for_plan(plan);
    let mut s = Sessions::open(target)?;
    let sep = s
        .user
        .list("", "")?
        .first()
        .and_then(|e| e.delimiter)
        .unwrap_or('.');
    let shared = target.is_shared();
    let mut created: HashSet<String> = HashSet::new();
    let existing = visible_folders(&mut s.user)?;
    // The INBOX must exist before anything can go under it.
    if !shared && !existing.contains("INBOX") {
        created.insert("INBOX".to_string());
        sum.created += 1;
        if opts.dry_run {
            sum.actions.push(Action::Create {
                folder: "INBOX".into(),
            });
        } else {
            s.admin()?.create(&admin_inbox(&target.user, sep))?;
        }
    }
    // A user this restore creates gets the backed-up quota.
    if created.contains("INBOX") && opts.into.is_none() && !opts.dry_run {
        super::imap_extra::set_quota(&mut s, plan, sep, &mut sum);
    }
    let mut jobs: Vec<Job> = Vec::new();
    for f in &plan.folders {
        let name = if shared {
            shared_target_name(&f.parts, opts.into.as_deref(), sep)
        } else {
            target_name(&f.parts, opts.into.as_deref(), sep)
        };
        let Some(name) = name else {
            sum.fail(
                &f.name,
                None,
                format!("a level of the name holds the server's separator {sep:?}"),
            );
            continue;
        };
        let exists = existing.contains(&name);
        match prepare_folder(
            &mut s,
            plan,
            f,
            &name,
            exists,
            sep,
            opts,
            &mut created,
            &mut sum,
        ) {
            Ok(mut have) => {
                for r in &f.records {
                    match have.get_mut(&r.guid) {
                        Some(n) if *n > 0 => {
                            *n -= 1;
                            sum.skipped += 1;
                            if opts.dry_run {
                                sum.actions.push(Action::Skip {
                                    folder: name.clone(),
                                    guid: r.guid.to_hex(),
                                    uid: r.uid,
                                });
                            }
                        }
                        _ => jobs.push(Job {
                            folder: name.clone(),
                            record: r.clone(),
                        }),
                    }
                }
            }
            Err(e) => {
                for r in &f.records {
                    sum.fail(&name, Some(r), format!("folder not usable: {e}"));
                }
            }
        }
    }
    progress.total(jobs.len() as u64 + sum.skipped);
    for _ in 0..sum.skipped {
        progress.tick();
    }
    if opts.dry_run {
        for j in &jobs {
            sum.actions.push(Action::Append {
                folder: j.folder.clone(),
                guid: j.record.guid.to_hex(),
                uid: j.record.uid,
            });
        }
        // What the real run would count.
        sum.appended += jobs.len() as u64;
    } else {
        append_all(src, &mut s, &jobs, opts.sessions, &mut sum, progress)?;
    }
    if opts.subscriptions && !shared {
        subscribe(&mut s, plan, opts, sep, &mut sum)?;
    }
    if let Some(addr) = &opts.sieve {
        super::sieve::restore_scripts(addr, target, plan, opts.dry_run, &mut sum);
    }
    if !opts.defer_foreign_seen {
        foreign_seen(src, &mut s, plan, opts, sep, &mut sum)?;
    }
    Ok(sum)
}

fn foreign_seen(
    src: &mut Source,
    s: &mut Sessions<'_>,
    plan: &Plan,
    opts: &ImapOptions,
    sep: char,
    sum: &mut Summary,
) -> Result<()> {
    if plan_is_whole(plan) && opts.into.is_none() && plan.user == s.target.user && !opts.dry_run {
        let at = src
            .catalog
            .runs()?
            .iter()
            .find(|r| r.run == plan.run)
            .map_or(i64::MAX, |r| r.started);
        super::imap_extra::foreign_seen(s, plan, opts.vault.as_deref(), at, sep, sum)?;
    }
    Ok(())
}

/// Only the user's `\Seen` on other users' folders (see
/// [`ImapOptions::defer_foreign_seen`]).
pub fn restore_foreign_seen(
    src: &mut Source,
    plan: &Plan,
    target: &ImapTarget,
    opts: &ImapOptions,
) -> Result<Summary> {
    let mut sum = Summary {
        run: plan.run,
        ..Summary::default()
    };
    if plan.foreign_seen.is_empty() {
        return Ok(sum);
    }
    let mut s = Sessions::open(target)?;
    let sep = s
        .user
        .list("", "")?
        .first()
        .and_then(|e| e.delimiter)
        .unwrap_or('.');
    foreign_seen(src, &mut s, plan, opts, sep, &mut sum)?;
    Ok(sum)
}

/// Make sure the folder exists (creating it with its backed-up ACL, annotations and
/// options) and return the GUIDs it already holds.
#[allow(clippy::too_many_arguments)]
fn prepare_folder(
    s: &mut Sessions<'_>,
    plan: &Plan,
    f: &FolderPlan,
    name: &str,
    exists: bool,
    sep: char,
    opts: &ImapOptions,
    created: &mut HashSet<String>,
    sum: &mut Summary,
) -> Result<HashMap<Guid, usize>> {
    let fresh = created.contains(name);
    if !fresh && exists {
        return folder_guids(&mut s.user, name);
    }
    if !fresh {
        sum.created += 1;
        created.insert(name.to_string());
        if opts.dry_run {
            sum.actions.push(Action::Create {
                folder: name.to_string(),
            });
        }
    }
    if opts.dry_run {
        return Ok(HashMap::new());
    }
    if !fresh {
        match s.user.create(name) {
            Ok(()) => {}
            // Created meanwhile (or an intermediate Cyrus made): fine.
            Err(e) if e.is_no(Some("ALREADYEXISTS")) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Metadata first: setting it needs the `a` right, which the backed-up ACL may not
    // give the user.
    super::imap_extra::set_metadata(s, plan, f, name, sep, opts.into.is_some(), sum);
    let acl = map_acl(&f.acl, &plan.user, &s.target.user);
    if !acl.is_empty() {
        let user = s.target.user.clone();
        let aname = if s.target.is_shared() {
            name.to_string()
        } else {
            admin_name(name, &user, sep)
        };
        let admin = s.admin()?;
        let now = admin.getacl(&aname)?;
        for (id, rights) in &acl {
            admin.setacl(&aname, id, rights)?;
        }
        for (id, _) in now {
            if !acl.iter().any(|(i, _)| *i == id) {
                admin.deleteacl(&aname, &id)?;
            }
        }
    }
    Ok(HashMap::new())
}

/// SUBSCRIBE the user to the backed-up subscriptions that name restored folders (or
/// anything else, under the original names). A subscription Cyrus refuses (to a
/// folder that does not exist, without `allowallsubscribe`) is a warning.
fn subscribe(
    s: &mut Sessions<'_>,
    plan: &Plan,
    opts: &ImapOptions,
    sep: char,
    sum: &mut Summary,
) -> Result<()> {
    let whole = plan_is_whole(plan);
    // What the user is subscribed to already is left alone (a rerun subscribes to
    // nothing).
    let have: HashSet<String> = s.user.lsub("", "*")?.into_iter().map(|e| e.name).collect();
    for sub in &plan.subscriptions {
        let name = match sub {
            Subscription::Own(n) => {
                // A partial restore subscribes only to the folders it restores.
                if !whole && !plan.folders.iter().any(|f| &f.parts == n) {
                    continue;
                }
                match target_name(n, opts.into.as_deref(), sep) {
                    Some(t) => t,
                    None => continue,
                }
            }
            Subscription::Other(n) if opts.into.is_none() && whole => {
                n.replace('.', &sep.to_string())
            }
            Subscription::Other(_) => continue,
        };
        if have.contains(&name) {
            continue;
        }
        if opts.dry_run {
            sum.actions.push(Action::Subscribe { folder: name });
            sum.subscribed += 1;
            continue;
        }
        match s.user.subscribe(&name) {
            Ok(()) => sum.subscribed += 1,
            Err(e) if matches!(e.kind, ImapErrorKind::No) => {
                sum.warn(&name, format!("subscription not restored: {}", e.text))
            }
            Err(e) => sum.fail(&name, None, format!("subscribe: {e}")),
        }
    }
    Ok(())
}

/// Whether the plan restores the user's whole tree (then foreign subscriptions go back
/// too).
pub(crate) fn plan_is_whole(plan: &Plan) -> bool {
    plan.folders.iter().any(|f| f.parts.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_on_the_target() {
        let p = |s: &str| crate::restore::name_parts(s);
        assert_eq!(target_name(&p("INBOX"), None, '.').unwrap(), "INBOX");
        assert_eq!(
            target_name(&p("INBOX.Work.Sub"), None, '.').unwrap(),
            "INBOX.Work.Sub"
        );
        assert_eq!(
            target_name(&p("INBOX"), Some("Restored/2026-11-28"), '.').unwrap(),
            "INBOX.Restored.2026-11-28.INBOX"
        );
        assert_eq!(
            target_name(&p("INBOX.Sent Items"), Some("R"), '/').unwrap(),
            "INBOX/R/Sent Items"
        );
        assert!(target_name(&p("INBOX/a.b"), None, '.').is_none());
        assert_eq!(admin_name("INBOX.Work", "bob", '.'), "user.bob.Work");
        assert_eq!(admin_name("INBOX", "bob@ex.org", '.'), "user.bob@ex.org");
        assert_eq!(admin_inbox("bob", '/'), "user/bob");
        assert_eq!(
            shared_target_name(&p("shared.News"), None, '/').unwrap(),
            "shared/News"
        );
        assert_eq!(
            shared_target_name(&p("shared"), Some("Restored/x"), '.').unwrap(),
            "Restored.x.shared"
        );
        assert!(shared_target_name(&p("shared/a.b"), None, '.').is_none());
    }

    #[test]
    fn acl_for_another_user() {
        let acl = vec![
            ("bob".to_string(), "lrs".to_string()),
            ("carol".to_string(), "lr".to_string()),
        ];
        assert_eq!(map_acl(&acl, "bob", "bob"), acl);
        let m = map_acl(&acl, "bob", "eve");
        assert_eq!(m[0].0, "eve");
        assert!("lrswipkxtecdan".chars().all(|c| m[0].1.contains(c)));
        assert_eq!(m[1], ("carol".to_string(), "lr".to_string()));
        let m = map_acl(&[("carol".into(), "lr".into())], "bob", "eve");
        assert_eq!(m[1], ("eve".to_string(), "lrswipkxtecdan".to_string()));
    }
}
