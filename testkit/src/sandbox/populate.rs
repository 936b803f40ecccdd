//! Loading a sandbox with users, folders and mail ([`populate`]), and giving it a
//! history of changes ([`make_history`]): flag changes, expunges, a rename and a
//! delayed delete. What ends up stored is read back from Cyrus over IMAP, so callers
//! compare against the server's truth, not against what we meant to send.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::Sandbox;
use super::mailgen::{MailGen, to_crlf};
use cyrvault_host::error::{Error, IoContext, Result};
use cyrvault_host::imap::Client;

/// What to load.
#[derive(Debug, Clone)]
pub struct PopulatePlan {
    /// User names (lowercase letters and digits).
    pub users: Vec<String>,
    /// Folders per user besides INBOX (up to the length of the folder list).
    pub folders_per_user: usize,
    /// Generated messages in total, spread over users and folders.
    pub messages: usize,
    /// Seed of the generator and of every random choice.
    pub seed: u64,
    /// Put users round-robin on the partitions (and one folder of each user on a
    /// partition other than its INBOX's); otherwise everything on the default one.
    pub partitions: bool,
    /// Cap on generated message size.
    pub max_message_size: usize,
    /// Every Nth message goes in over LMTP instead of APPEND (0: never).
    pub lmtp_every: usize,
    /// Every Nth APPENDed message is also appended to a second folder (same GUID).
    pub duplicate_every: usize,
    /// Also load the awkward real messages from `shared/fixtures/mime` into the first
    /// user's `Fixtures` folder.
    pub fixtures: bool,
}

impl Default for PopulatePlan {
    fn default() -> Self {
        PopulatePlan {
            users: vec!["alice".into(), "bob".into()],
            folders_per_user: 3,
            messages: 60,
            seed: 1,
            partitions: true,
            max_message_size: 512 * 1024,
            lmtp_every: 5,
            duplicate_every: 7,
            fixtures: true,
        }
    }
}

/// One message as Cyrus stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub uid: u32,
    /// SHA-1 of the message file (Cyrus's GUID, from FETCH DIGEST.SHA1), hex.
    pub guid: String,
    pub size: u64,
    pub flags: Vec<String>,
    /// Unix seconds.
    pub internaldate: i64,
}

/// What [`populate`] made.
#[derive(Debug, Clone, Default)]
pub struct Population {
    /// user -> (INBOX partition, folder paths with `/` between levels).
    pub users: BTreeMap<String, (String, Vec<String>)>,
    /// Admin mailbox name -> how many messages we put there.
    pub expected: BTreeMap<String, usize>,
    /// Admin mailbox name -> what Cyrus holds (read back after loading).
    pub stored: BTreeMap<String, Vec<StoredMessage>>,
    /// Fixture file name -> bytes sent (CRLF-normalised).
    pub fixtures: BTreeMap<String, Vec<u8>>,
    /// Messages sent by APPEND and by LMTP, and extra copies appended.
    pub appended: usize,
    pub delivered: usize,
    pub duplicates: usize,
}

/// Folder names users get, in order. Includes a nested folder (after its parent), a
/// name with a space, and a modified-UTF-7 name ("Entwürfe").
pub const FOLDERS: &[&str] = &[
    "Work",
    "Archive",
    "Archive/2023",
    "Lists",
    "Sent Items",
    "Entw&APw-rfe",
    "Receipts",
    "Family",
];

const FLAG_CHOICES: &[&str] = &[
    "\\Seen",
    "\\Flagged",
    "\\Answered",
    "\\Draft",
    "$Forwarded",
    "Work",
    "$Junk",
];

/// Where the shared MIME fixtures are.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/mime")
}

/// Read the fixtures (sorted by name), CRLF-normalised. Files with NUL bytes are
/// skipped: Cyrus refuses them ("Message contains NUL characters").
pub fn read_fixtures(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).at("listing", dir)? {
        let entry = entry.at("listing", dir)?;
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let bytes = fs::read(&path).at("reading", &path)?;
        if bytes.contains(&0) {
            log::warn!(target: "sandbox", "skipping fixture {} with NUL bytes", path.display());
            continue;
        }
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            to_crlf(&bytes),
        ));
    }
    out.sort();
    Ok(out)
}

fn pick_flags<'a>(mg: &mut MailGen) -> Vec<&'a str> {
    FLAG_CHOICES
        .iter()
        .filter(|_| mg.below(4) == 0)
        .copied()
        .collect()
}

/// Create the plan's users and folders and load its mail; then read back what Cyrus
/// stored in every mailbox of those users.
pub fn populate(sb: &Sandbox, plan: &PopulatePlan) -> Result<Population> {
    let mut mg = MailGen::new(plan.seed).with_max_size(plan.max_message_size);
    let mut pop = Population::default();
    let nparts = sb.partitions.len();
    let mut clients: Vec<Client> = Vec::new();
    let mut folders_of: Vec<Vec<Option<String>>> = Vec::new();
    for (i, user) in plan.users.iter().enumerate() {
        let part_idx = if plan.partitions { i % nparts } else { 0 };
        let part = sb.partitions[part_idx].0.clone();
        sb.create_user(user, Some(&part))?;
        let folders: Vec<String> = FOLDERS
            .iter()
            .take(plan.folders_per_user)
            .map(|s| s.to_string())
            .collect();
        for (j, f) in folders.iter().enumerate() {
            // The second folder lives on another partition than the INBOX.
            let other = (plan.partitions && j == 1)
                .then(|| sb.partitions[(part_idx + 1) % nparts].0.as_str());
            sb.create_folder(user, f, other)?;
        }
        let mut c = sb.login(user)?;
        for f in &folders {
            c.subscribe(&sb.user_mailbox_name(Some(f)))?;
        }
        pop.expected.insert(sb.mailbox_name(user, None), 0);
        for f in &folders {
            pop.expected.insert(sb.mailbox_name(user, Some(f)), 0);
        }
        let mut targets = vec![None];
        targets.extend(folders.iter().cloned().map(Some));
        folders_of.push(targets);
        clients.push(c);
        pop.users.insert(user.clone(), (part, folders));
    }
    if plan.users.is_empty() {
        return Ok(pop);
    }

    for k in 0..plan.messages {
        let u = k % plan.users.len();
        let user = &plan.users[u];
        let targets = &folders_of[u];
        let folder = targets[mg.below(targets.len())].clone();
        let mail = mg.message();
        let name = sb.mailbox_name(user, folder.as_deref());
        // Folders lmtpd cannot address (spaces, '&') get the message by APPEND.
        if plan.lmtp_every > 0
            && k % plan.lmtp_every == plan.lmtp_every - 1
            && sb.lmtp_recipient(user, folder.as_deref()).is_some()
        {
            sb.deliver_lmtp(user, folder.as_deref(), &mail.bytes)?;
            pop.delivered += 1;
            *pop.expected.entry(name).or_default() += 1;
            continue;
        }
        let flags = pick_flags(&mut mg);
        let idate = mail.date + i64::try_from(mg.below(3600)).unwrap_or(0);
        clients[u].append(
            &sb.user_mailbox_name(folder.as_deref()),
            &flags,
            Some(idate),
            &mail.bytes,
        )?;
        pop.appended += 1;
        *pop.expected.entry(name).or_default() += 1;
        if plan.duplicate_every > 0 && k % plan.duplicate_every == 0 && targets.len() > 1 {
            // The same bytes in a second folder: same GUID, a second message file.
            let other = targets.iter().find(|t| **t != folder).cloned().flatten();
            clients[u].append(
                &sb.user_mailbox_name(other.as_deref()),
                &[],
                Some(idate),
                &mail.bytes,
            )?;
            pop.duplicates += 1;
            *pop.expected
                .entry(sb.mailbox_name(user, other.as_deref()))
                .or_default() += 1;
        }
    }

    if plan.fixtures {
        let user = &plan.users[0];
        let folder = "Fixtures";
        sb.create_folder(user, folder, None)?;
        let mbox = sb.user_mailbox_name(Some(folder));
        for (name, bytes) in read_fixtures(&fixtures_dir())? {
            clients[0].append(&mbox, &["\\Seen"], Some(1_600_000_000), &bytes)?;
            pop.fixtures.insert(name, bytes);
        }
        pop.expected
            .insert(sb.mailbox_name(user, Some(folder)), pop.fixtures.len());
        if let Some(entry) = pop.users.get_mut(user) {
            entry.1.push(folder.to_string());
        }
    }

    for (c, user) in clients.into_iter().zip(&plan.users) {
        read_back(sb, c, user, &mut pop.stored)?;
    }
    Ok(pop)
}

/// Every message of every mailbox `user` sees under INBOX, keyed by admin name.
fn read_back(
    sb: &Sandbox,
    mut c: Client,
    user: &str,
    out: &mut BTreeMap<String, Vec<StoredMessage>>,
) -> Result<()> {
    let sep = sb.separator();
    let pattern = format!("INBOX{sep}*");
    let mut names = vec!["INBOX".to_string()];
    names.extend(
        c.list("", &pattern)?
            .into_iter()
            .filter(|e| !e.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Noselect")))
            .map(|e| e.name),
    );
    for name in names {
        let info = c.examine(&name)?;
        let msgs = if info.exists == 0 {
            Vec::new()
        } else {
            c.uid_fetch("1:*", "(UID FLAGS RFC822.SIZE DIGEST.SHA1 INTERNALDATE)")?
                .into_iter()
                .filter_map(|f| {
                    Some(StoredMessage {
                        uid: f.uid?,
                        guid: f.digest_sha1?,
                        size: f.rfc822_size?,
                        flags: f.flags.unwrap_or_default(),
                        internaldate: f.internaldate.map(|d| d.0).unwrap_or(0),
                    })
                })
                .collect()
        };
        let folder = name.strip_prefix("INBOX").and_then(|r| r.strip_prefix(sep));
        let admin_name = match folder {
            Some(f) => format!("user{sep}{user}{sep}{f}"),
            None => format!("user{sep}{user}"),
        };
        out.insert(admin_name, msgs);
    }
    Ok(c.logout()?)
}

/// What [`make_history`] did.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Messages whose flags were changed.
    pub flag_changes: usize,
    /// (admin mailbox name, uid) of expunged messages.
    pub expunged: Vec<(String, u32)>,
    /// (old, new) admin names of renamed folders.
    pub renamed: Vec<(String, String)>,
    /// Admin names of deleted folders (with `delete_mode: delayed` they live on as
    /// `DELETED.user...` mailboxes).
    pub deleted: Vec<String>,
}

/// Change a populated sandbox: for each user, flip flags on some INBOX messages,
/// expunge every fifth one, rename the first leaf folder to `<name>-renamed`, and
/// delete the next leaf folder.
pub fn make_history(sb: &Sandbox, pop: &Population, seed: u64) -> Result<History> {
    let mut mg = MailGen::new(seed ^ 0x5eed);
    let mut h = History::default();
    for (user, (_, folders)) in &pop.users {
        let mut c = sb.login(user)?;
        let inbox = sb.mailbox_name(user, None);
        let info = c.select("INBOX")?;
        if info.exists > 0 {
            let uids: Vec<u32> = c
                .uid_fetch("1:*", "(UID)")?
                .into_iter()
                .filter_map(|f| f.uid)
                .collect();
            for (i, uid) in uids.iter().enumerate() {
                let set = uid.to_string();
                if i % 5 == 4 {
                    c.uid_store(&set, "+FLAGS.SILENT", &["\\Deleted"])?;
                    h.expunged.push((inbox.clone(), *uid));
                } else if mg.below(2) == 0 {
                    c.uid_store(&set, "+FLAGS.SILENT", &["\\Flagged", "$Forwarded"])?;
                    c.uid_store(&set, "-FLAGS.SILENT", &["\\Seen"])?;
                    h.flag_changes += 1;
                }
            }
            c.expunge()?;
        }
        c.close()?;
        // Leaf folders: no other folder lies below them.
        let leaves: Vec<&String> = folders
            .iter()
            .filter(|f| f.as_str() != "Fixtures")
            .filter(|f| !folders.iter().any(|o| o.starts_with(&format!("{f}/"))))
            .collect();
        if let Some(f) = leaves.first() {
            let new = format!("{f}-renamed");
            c.rename(
                &sb.user_mailbox_name(Some(f)),
                &sb.user_mailbox_name(Some(&new)),
            )?;
            h.renamed.push((
                sb.mailbox_name(user, Some(f)),
                sb.mailbox_name(user, Some(&new)),
            ));
        }
        if let Some(f) = leaves.get(1) {
            c.delete(&sb.user_mailbox_name(Some(f)))?;
            h.deleted.push(sb.mailbox_name(user, Some(f)));
        }
        c.logout()?;
    }
    if h.expunged.is_empty()
        && h.renamed.is_empty()
        && h.deleted.is_empty()
        && !pop.users.is_empty()
    {
        return Err(Error::other("make_history found nothing to change".into()));
    }
    Ok(h)
}

/// Fill `folder` of `user` (created first unless it is INBOX) with `n` generated
/// messages of about `size` bytes, up to 500 (and 64 MB) at a time in one MULTIAPPEND
/// each (one command, one fsync of Cyrus per batch: a folder of 200,000 messages
/// loads in minutes, not hours). Returns the SHA-1 (Cyrus's GUID) of every message, in UID order.
pub fn fill_folder(
    sb: &Sandbox,
    user: &str,
    folder: &str,
    n: usize,
    size: usize,
    seed: u64,
) -> Result<Vec<[u8; 20]>> {
    use sha1::{Digest, Sha1};
    const BATCH: usize = 500;
    let mut gen_ = MailGen::new(seed);
    let mut c = sb.login(user)?;
    if folder != "INBOX" {
        c.run(&[
            cyrvault_host::imap::Arg::Atom("CREATE"),
            cyrvault_host::imap::Arg::Str(folder.as_bytes()),
        ])?;
    }
    let mut guids = Vec::with_capacity(n);
    let mut sent = 0;
    while sent < n {
        let k = BATCH.min((64 << 20) / size.max(1)).max(1).min(n - sent);
        let batch: Vec<Vec<u8>> = (0..k).map(|_| gen_.message_of_size(size).bytes).collect();
        let mut a = vec![
            cyrvault_host::imap::Arg::Atom("APPEND"),
            cyrvault_host::imap::Arg::Str(folder.as_bytes()),
        ];
        for m in &batch {
            a.push(cyrvault_host::imap::Arg::Atom("()"));
            a.push(cyrvault_host::imap::Arg::Literal(m));
            guids.push(Sha1::digest(m).into());
        }
        c.run(&a)?;
        sent += k;
    }
    c.logout()?;
    Ok(guids)
}
