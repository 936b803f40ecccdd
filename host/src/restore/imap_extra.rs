//! The parts of an IMAP restore beyond folders and messages: mailbox metadata and
//! options, the quota of a user the restore creates, and the user's `\Seen` on other
//! users' folders.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::imap::{Sessions, admin_name, connect_as, folder_uid_guids};
use super::{FolderPlan, Plan, Summary};
use crate::catalog::Catalog;
use crate::cyrus::Guid;
use crate::error::Result;
use crate::vault::Vault;

/// Mailbox options (`OPT_*` bits of the index header) and the METADATA entries that
/// set them, with the value meaning "on" (Cyrus's `annotation_set_mailboxopt`).
const OPTION_ENTRIES: [(u32, &str); 3] = [
    (1 << 0, "/shared/vendor/cmu/cyrus-imapd/pop3newuidl"),
    (1 << 2, "/shared/vendor/cmu/cyrus-imapd/sharedseen"),
    (1 << 3, "/shared/vendor/cmu/cyrus-imapd/duplicatedeliver"),
];

/// Set a folder's backed-up mailbox annotations (shared ones and the user's private
/// ones as the user; another user's private ones as that user) and options. Under
/// `--into` the special-use is left out: a restored copy must not take the role of the
/// user's live Sent or Trash (Cyrus refuses a second folder with one anyway).
pub fn set_metadata(
    s: &mut Sessions<'_>,
    plan: &Plan,
    f: &FolderPlan,
    name: &str,
    sep: char,
    into: bool,
    sum: &mut Summary,
) {
    for a in &f.annotations {
        if into && a.entry == "/specialuse" {
            continue;
        }
        let entry = a.metadata_name();
        let vendor = a.entry.starts_with("/vendor/");
        if a.userid.is_empty() || a.userid == plan.user {
            if let Err(e) = s
                .user_client()
                .setmetadata(name, &entry, Some(a.value.as_bytes()))
            {
                let why = format!("{entry} not restored: {e}");
                // Some vendor entries are Cyrus's own bookkeeping, not settable.
                if vendor {
                    sum.warn(name, why);
                } else {
                    sum.fail(name, None, why);
                }
            }
            continue;
        }
        // Another user's private annotation on this folder, set as that user.
        let other = admin_name(name, &s.target.user, sep);
        let r = connect_as(s.target, &a.userid).and_then(|mut c| {
            c.setmetadata(&other, &entry, Some(a.value.as_bytes()))?;
            Ok(c.logout()?)
        });
        if let Err(e) = r {
            sum.warn(name, format!("{entry} of {} not restored: {e}", a.userid));
        }
    }
    for (bit, entry) in OPTION_ENTRIES {
        let on = f.options & bit != 0;
        // Cyrus creates folders with pop3newuidl on and the others off.
        let default = bit == 1;
        if on == default {
            continue;
        }
        let value: &[u8] = if on { b"true" } else { b"false" };
        if let Err(e) = s.user_client().setmetadata(name, entry, Some(value)) {
            sum.fail(name, None, format!("{entry} not restored: {e}"));
        }
    }
}

/// An internal mailbox name (`user.bob.Sent`, `example.org!user.bob`) as the admin
/// names it over IMAP (`user/bob/Sent`, `user/bob@example.org`), with the source
/// user's name replaced by the target's.
pub fn imap_admin_name(internal: &str, source: &str, target: &str, sep: char) -> String {
    let (domain, rest) = match internal.split_once('!') {
        Some((d, r)) => (Some(d), r),
        None => (None, internal),
    };
    let mut levels: Vec<String> = rest.split('.').map(|l| l.replace('^', ".")).collect();
    let src_local = source.split('@').next().unwrap_or(source);
    let (tgt_local, tgt_domain) = match target.split_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (target, None),
    };
    let mut domain = domain.map(str::to_string);
    if levels.len() >= 2 && levels[0] == "user" && levels[1] == src_local {
        levels[1] = tgt_local.to_string();
        domain = tgt_domain.map(str::to_string);
    }
    let mut n = levels.join(&sep.to_string());
    if let Some(d) = domain {
        n.push('@');
        n.push_str(&d);
    }
    n
}

/// SETQUOTA (as the admin) every backed-up quota root, for a user the restore created.
pub fn set_quota(s: &mut Sessions<'_>, plan: &Plan, sep: char, sum: &mut Summary) {
    let target = s.target.user.clone();
    for (root, q) in &plan.quota {
        let name = imap_admin_name(root, &plan.user, &target, sep);
        let limits = q.imap_limits();
        let r = s.admin().and_then(|a| Ok(a.setquota(&name, &limits)?));
        match r {
            Ok(()) => sum.quota_roots += 1,
            Err(e) => sum.fail(&name, None, format!("quota not restored: {e}")),
        }
    }
}

/// The user's `\Seen` on other users' folders (the backed-up seen database's entries
/// for folders that are not theirs). A folder visible to the user with the backed-up
/// UniqueID (the original, or one restored exactly) gets the UIDs as they are. A
/// folder that came back with a new identity is found by the name it had in its
/// owner's archive in `vault` at the time of this run, and the UIDs are mapped through
/// the messages' GUIDs. What cannot be placed is a warning.
pub fn foreign_seen(
    s: &mut Sessions<'_>,
    plan: &Plan,
    vault: Option<&Path>,
    at: i64,
    sep: char,
    sum: &mut Summary,
) -> Result<()> {
    if plan.foreign_seen.is_empty() {
        return Ok(());
    }
    // Folders the user sees that are not theirs, by MAILBOXID.
    let c = s.user_client();
    let mut by_id: HashMap<String, String> = HashMap::new();
    let mut names = Vec::new();
    for e in c.list("", "*")? {
        if e.name.eq_ignore_ascii_case("INBOX")
            || e.name.starts_with(&format!("INBOX{sep}"))
            || e.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Noselect"))
        {
            continue;
        }
        if let Ok(info) = c.examine(&e.name)
            && let Some(id) = info.mailboxid
        {
            by_id.insert(id, e.name.clone());
        }
        names.push(e.name);
    }
    let mut owners: BTreeMap<String, Option<Catalog>> = BTreeMap::new();
    for (id, uids) in &plan.foreign_seen {
        if let Some(name) = by_id.get(id) {
            store_seen(s, name, &|u| uids.contains(u), sum);
            continue;
        }
        let Some(vault) = vault else {
            sum.warn(
                id,
                "\\Seen in another user's folder not restored: the folder is not on the \
                 target with its backed-up UniqueID, and no vault to map it"
                    .into(),
            );
            continue;
        };
        match map_by_owner(s, vault, &mut owners, &names, id, uids, at, sep)? {
            Some((name, mapped)) if !mapped.is_empty() => {
                store_seen(s, &name, &|u| mapped.contains(&u), sum)
            }
            Some(_) => {}
            None => sum.warn(
                id,
                "\\Seen in another user's folder not restored: no such folder on the target".into(),
            ),
        }
    }
    Ok(())
}

/// Set `\Seen` (as the user) on those of `uids` in `name` that lack it; counts the
/// folder when any did.
fn store_seen(s: &mut Sessions<'_>, name: &str, wanted: &dyn Fn(u32) -> bool, sum: &mut Summary) {
    let c = s.user_client();
    let r = (|| -> crate::imap::Result<bool> {
        let info = c.select(name)?;
        if info.exists == 0 {
            return Ok(false);
        }
        let lacking: Vec<String> = c
            .uid_fetch("1:*", "(UID FLAGS)")?
            .into_iter()
            .filter(|f| f.uid.is_some_and(wanted))
            .filter(|f| {
                !f.flags
                    .as_ref()
                    .is_some_and(|fl| fl.iter().any(|x| x.eq_ignore_ascii_case("\\Seen")))
            })
            .filter_map(|f| f.uid.map(|u| u.to_string()))
            .collect();
        if lacking.is_empty() {
            return Ok(false);
        }
        c.uid_store(&lacking.join(","), "+FLAGS.SILENT", &["\\Seen"])?;
        Ok(true)
    })();
    match r {
        Ok(true) => sum.foreign_seen += 1,
        Ok(false) => {}
        Err(e) => sum.warn(name, format!("\\Seen not restored: {e}")),
    }
}

/// Find the folder `id` in the archive of the owner of one of `names` (`user/carol/X`
/// → carol) as it was at `at`, and map the seen UIDs to the UIDs the same messages
/// have in the target folder of that name.
#[allow(clippy::too_many_arguments)]
fn map_by_owner(
    s: &mut Sessions<'_>,
    vault: &Path,
    owners: &mut BTreeMap<String, Option<Catalog>>,
    names: &[String],
    id: &str,
    uids: &super::seen::UidSet,
    at: i64,
    sep: char,
) -> Result<Option<(String, Vec<u32>)>> {
    for name in names {
        let mut levels = name.split(sep);
        let (Some("user"), Some(owner)) = (levels.next(), levels.next()) else {
            continue;
        };
        if !owners.contains_key(owner) {
            let cat = match Vault::open(vault)?.user(owner)? {
                Some(ua) => Catalog::open_existing(&ua.catalog).ok(),
                None => None,
            };
            owners.insert(owner.to_string(), cat);
        }
        let Some(Some(cat)) = owners.get(owner) else {
            continue;
        };
        let run = match cat.run_at(at)? {
            Some(r) => r,
            None => match cat.runs()?.first() {
                Some(r) => r.run,
                None => continue,
            },
        };
        let Some(f) = cat
            .folders_at(run)?
            .into_iter()
            .find(|f| f.uniqueid == id && !f.deleted)
        else {
            continue;
        };
        if imap_admin_name(&f.internal_name, "", "", sep) != *name {
            continue;
        }
        let old: HashMap<u32, Guid> = cat
            .records_at(id, run)?
            .into_iter()
            .filter(|r| !r.is_expunged())
            .map(|r| (r.uid, r.guid))
            .collect();
        let mut new: HashMap<Guid, Vec<u32>> = HashMap::new();
        for (u, g) in folder_uid_guids(s.user_client(), name)? {
            new.entry(g).or_default().push(u);
        }
        let mut out = Vec::new();
        let mut seen_uids: Vec<u32> = old.keys().copied().filter(|u| uids.contains(*u)).collect();
        seen_uids.sort_unstable();
        for u in seen_uids {
            if let Some(list) = old.get(&u).and_then(|g| new.get_mut(g))
                && !list.is_empty()
            {
                out.push(list.remove(0));
            }
        }
        return Ok(Some((name.clone(), out)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_names_of_roots() {
        assert_eq!(imap_admin_name("user.bob", "bob", "bob", '/'), "user/bob");
        assert_eq!(
            imap_admin_name("user.bob.v1^2", "bob", "eve", '/'),
            "user/eve/v1.2"
        );
        assert_eq!(
            imap_admin_name("ex.org!user.bob", "bob@ex.org", "bob@ex.org", '.'),
            "user.bob@ex.org"
        );
        assert_eq!(
            imap_admin_name("user.carol.Shared", "", "", '/'),
            "user/carol/Shared"
        );
    }
}
