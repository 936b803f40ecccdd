//! Restore into a live Cyrus over IMAP.
//!
//! The session is the admin acting as the user (SASL PLAIN with authorization id =
//! the user, authentication id = the admin), so every flag lands as the owner's own:
//! in Cyrus 3.6 the owner's `\Seen` lives in the index record, a non-owner's in the
//! seen database. A second session, the admin's own (PLAIN without an authorization
//! id), creates a missing INBOX and sets the backed-up ACL on every folder the restore
//! creates.
//!
//! Idempotent: before appending to a folder, its messages' GUIDs are read
//! (`UID FETCH 1:* (DIGEST.SHA1)`; Cyrus's digest is the SHA-1 of the message file,
//! the same as its GUID; a server without it is asked for the bodies, which are
//! hashed). Per GUID, only as many copies as the backup held and the folder lacks are
//! appended, so a restore that was interrupted finishes when run again, without
//! duplicates. A folder created here is a new mailbox with a new UniqueID: nothing
//! is ever made to share the backed-up folder's identity (Cyrus issue #4702).
#![forbid(unsafe_code)]

use std::collections::HashMap;

use super::{Action, FolderPlan, Plan, Progress, Source, Subscription, Summary, imap_flags};
use crate::cyrus::Guid;
use crate::error::{Error, Result};
use crate::imap::{Client, ImapError, ImapErrorKind};
use crate::model::RecordState;

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
}

/// A session as the user plus the admin's own session.
struct Sessions<'a> {
    target: &'a ImapTarget,
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

    fn admin(&mut self) -> Result<&mut Client> {
        if self.admin.is_none() {
            let mut c = Client::connect(self.target.addr.as_str())?;
            c.authenticate_plain("", &self.target.admin, &self.target.password)?;
            self.admin = Some(c);
        }
        self.admin
            .as_mut()
            .ok_or_else(|| Error::Other("admin session".into()))
    }
}

/// The session that creates folders and appends: the admin acting as the user, or
/// for a shared hierarchy the admin's own (shared mailboxes have no owner; their
/// `\Seen` is per reader anyway).
fn connect_as_user(t: &ImapTarget) -> Result<Client> {
    let mut c = Client::connect(t.addr.as_str())?;
    let authz = if t.is_shared() { "" } else { t.user.as_str() };
    c.authenticate_plain(authz, &t.admin, &t.password)?;
    Ok(c)
}

/// Whether an IMAP failure is the connection's rather than this command's.
fn connection_lost(e: &ImapError) -> bool {
    matches!(
        e.kind,
        ImapErrorKind::Io | ImapErrorKind::Bye | ImapErrorKind::Connect | ImapErrorKind::Protocol
    )
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
fn admin_inbox(user: &str, sep: char) -> String {
    match user.split_once('@') {
        Some((l, d)) => format!("user{sep}{l}@{d}"),
        None => format!("user{sep}{user}"),
    }
}

/// The user-view name → admin-view name (`INBOX.X` → `user.bob.X`).
fn admin_name(user_view: &str, user: &str, sep: char) -> String {
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

/// GUID → how many copies a folder holds.
fn folder_guids(c: &mut Client, name: &str) -> Result<HashMap<Guid, usize>> {
    let mut out = HashMap::new();
    let info = c.examine(name)?;
    if info.exists == 0 {
        return Ok(out);
    }
    let digests = c.uid_fetch("1:*", "(UID DIGEST.SHA1)");
    let items = match digests {
        Ok(items) if items.iter().all(|i| i.digest_sha1.is_some()) => items,
        Ok(_)
        | Err(ImapError {
            kind: ImapErrorKind::Bad | ImapErrorKind::No,
            ..
        }) => {
            // No DIGEST.SHA1: hash the bodies, a hundred at a time.
            let uids: Vec<u32> = c
                .uid_fetch("1:*", "(UID)")?
                .iter()
                .filter_map(|i| i.uid)
                .collect();
            for chunk in uids.chunks(100) {
                let set: Vec<String> = chunk.iter().map(u32::to_string).collect();
                for i in c.uid_fetch(&set.join(","), "(UID BODY.PEEK[])")? {
                    if let Some(b) = &i.body {
                        *out.entry(Guid::of(b)).or_insert(0) += 1;
                    }
                }
            }
            return Ok(out);
        }
        Err(e) => return Err(e.into()),
    };
    for i in items {
        if let Some(g) = i.digest_sha1.as_deref().and_then(Guid::from_hex) {
            *out.entry(g).or_insert(0) += 1;
        }
    }
    Ok(out)
}

/// Whether the user can see a folder of exactly this name.
fn folder_exists(c: &mut Client, name: &str) -> Result<bool> {
    Ok(c.list("", name)?
        .iter()
        .any(|e| e.name == name || (name == "INBOX" && e.name.eq_ignore_ascii_case("INBOX"))))
}

/// One message to append.
struct Job {
    folder: String,
    record: RecordState,
}

/// Carry out `plan` against the server: create folders, append what is missing,
/// subscribe, upload sieve scripts. Messages that fail are listed in the summary.
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
    // The INBOX must exist before anything can go under it.
    if !shared && !folder_exists(&mut s.user, "INBOX")? {
        sum.created += 1;
        if opts.dry_run {
            sum.actions.push(Action::Create {
                folder: "INBOX".into(),
            });
        } else {
            s.admin()?.create(&admin_inbox(&target.user, sep))?;
        }
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
        match prepare_folder(&mut s, f, &name, sep, opts.dry_run, &mut sum) {
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
    } else {
        append_all(src, &mut s, &jobs, &mut sum, progress)?;
    }
    if opts.subscriptions && !shared {
        subscribe(&mut s, plan, opts, sep, &mut sum)?;
    }
    if let Some(addr) = &opts.sieve {
        super::sieve::restore_scripts(addr, target, plan, opts.dry_run, &mut sum);
    }
    Ok(sum)
}

/// Make sure the folder exists (creating it with its backed-up ACL) and return the
/// GUIDs it already holds.
fn prepare_folder(
    s: &mut Sessions<'_>,
    f: &FolderPlan,
    name: &str,
    sep: char,
    dry_run: bool,
    sum: &mut Summary,
) -> Result<HashMap<Guid, usize>> {
    if folder_exists(&mut s.user, name)? {
        return folder_guids(&mut s.user, name);
    }
    sum.created += 1;
    if dry_run {
        sum.actions.push(Action::Create {
            folder: name.to_string(),
        });
        return Ok(HashMap::new());
    }
    match s.user.create(name) {
        Ok(()) => {}
        // Created meanwhile (or an intermediate Cyrus made): fine.
        Err(e) if e.is_no(Some("ALREADYEXISTS")) => {}
        Err(e) => return Err(e.into()),
    }
    if !f.acl.is_empty() {
        let user = s.target.user.clone();
        let aname = if s.target.is_shared() {
            name.to_string()
        } else {
            admin_name(name, &user, sep)
        };
        let admin = s.admin()?;
        let now = admin.getacl(&aname)?;
        for (id, rights) in &f.acl {
            admin.setacl(&aname, id, rights)?;
        }
        for (id, _) in now {
            if !f.acl.iter().any(|(i, _)| *i == id) {
                admin.deleteacl(&aname, &id)?;
            }
        }
    }
    Ok(HashMap::new())
}

/// Append every job, reading the messages member by member.
fn append_all(
    src: &mut Source,
    s: &mut Sessions<'_>,
    jobs: &[Job],
    sum: &mut Summary,
    progress: &mut dyn Progress,
) -> Result<()> {
    let guids: Vec<Guid> = jobs.iter().map(|j| j.record.guid).collect();
    let mut fatal: Option<Error> = None;
    src.read_batch(&guids, |i, bytes| {
        let Some(job) = jobs.get(i) else { return };
        progress.tick();
        if fatal.is_some() {
            sum.fail(&job.folder, Some(&job.record), "restore stopped".into());
            return;
        }
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                sum.fail(&job.folder, Some(&job.record), e.to_string());
                return;
            }
        };
        let flags = imap_flags(&job.record);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let date = Some(job.record.internaldate);
        let mut r = s.user.append(&job.folder, &flags, date, &bytes);
        if let Err(e) = &r
            && connection_lost(e)
        {
            // One reconnect, then the same message again.
            match connect_as_user(s.target) {
                Ok(c) => {
                    s.user = c;
                    r = s.user.append(&job.folder, &flags, date, &bytes);
                }
                Err(e) => fatal = Some(e),
            }
        }
        match r {
            Ok(_) => sum.appended += 1,
            Err(e) => sum.fail(&job.folder, Some(&job.record), e.to_string()),
        }
    })?;
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// SUBSCRIBE the user to the backed-up subscriptions that name restored folders (or
/// anything else, under the original names).
fn subscribe(
    s: &mut Sessions<'_>,
    plan: &Plan,
    opts: &ImapOptions,
    sep: char,
    sum: &mut Summary,
) -> Result<()> {
    for sub in &plan.subscriptions {
        let name = match sub {
            Subscription::Own(n) => {
                // Only folders this restore covers (a partial restore leaves the rest).
                if !plan.folders.iter().any(|f| &f.parts == n) {
                    continue;
                }
                match target_name(n, opts.into.as_deref(), sep) {
                    Some(t) => t,
                    None => continue,
                }
            }
            Subscription::Other(n) if opts.into.is_none() && plan_is_whole(plan) => {
                n.replace('.', &sep.to_string())
            }
            Subscription::Other(_) => continue,
        };
        if opts.dry_run {
            sum.actions.push(Action::Subscribe { folder: name });
            continue;
        }
        match s.user.subscribe(&name) {
            Ok(()) => sum.subscribed += 1,
            Err(e) => sum.fail(&name, None, format!("subscribe: {e}")),
        }
    }
    Ok(())
}

/// Whether the plan restores the user's whole tree (then foreign subscriptions go back
/// too).
fn plan_is_whole(plan: &Plan) -> bool {
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
}
