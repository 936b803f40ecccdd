//! The service's per-owner reads of `mailboxes.db` and `annotations.db` (issue
//! #10 item 1) against the whole-file parse, on a real Cyrus 3.6: every owner's
//! entries (with the name history of their `I` records), folders and
//! annotations equal what the whole file says; user names that prefix each
//! other (`ann`, `ann.b`, `anna`); delayed-delete folders; a repack of the file
//! by Cyrus while a spool keeps its cache; a cache that never serves a stale
//! list while folders are created, renamed and deleted over IMAP.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use cyrvault::cyrus::config::load;
use cyrvault::cyrus::mboxlist::{MailboxEntry, Mboxlist};
use cyrvault::cyrus::twoskip::parse_twoskip_header;
use cyrvault::service::backend::CyrusSpool;
use cyrvault::service::session::{FolderOpen, Spool as _, Want};
use cyrvault::spool::{Owner, Spool, owner_keys, users_of};
use cyrvault_host::imap::Arg;
use cyrvault_testkit::sandbox::{CyrusInstall, Sandbox, SandboxOptions};
use serde_json::{Value, json};

fn start(hint: &str, unixhierarchysep: bool) -> Sandbox {
    Sandbox::start(SandboxOptions {
        name_hint: hint.into(),
        unixhierarchysep,
        ..SandboxOptions::default()
    })
    .unwrap()
}

fn spool(sb: &Sandbox) -> Spool {
    Spool::open(
        load(Some(&sb.imapd_conf), None).unwrap(),
        Duration::from_secs(10),
    )
    .unwrap()
}

/// libeatmydata (Debian's `eatmydata`, installed by scripts/setup.sh): preloaded
/// into `ctl_mboxlist -u` it turns fsync into a no-op. Cyrus commits (and fsyncs)
/// every undumped entry on its own; on a disk that is minutes for tens of
/// thousands of entries, seconds without the fsyncs. The file Cyrus writes is the
/// same.
const EATMYDATA: &str = "/usr/lib/x86_64-linux-gnu/libeatmydata.so";

/// `ctl_mboxlist -u`: Cyrus's own tool adds these entries to mailboxes.db.
fn undump(sb: &Sandbox, entries: &Value) {
    cyrus_tool_fed(
        sb,
        "ctl_mboxlist",
        &["-u".as_ref()],
        entries.to_string().as_bytes(),
    );
}

/// Run Cyrus's `tool -C <imapd.conf> <args>` under eatmydata with `input` on its
/// stdin (bulk writes by Cyrus's own writers: `ctl_mboxlist -u`, `cyr_dbtool set`);
/// a failure fails the test.
pub(crate) fn cyrus_tool_fed(sb: &Sandbox, tool: &str, args: &[&std::ffi::OsStr], input: &[u8]) {
    let bin = sb.cyrus.program(tool);
    assert!(
        Path::new(EATMYDATA).is_file(),
        "{EATMYDATA} is missing: scripts/setup.sh installs the eatmydata package"
    );
    let mut child = sb
        .cyrus_command(&bin)
        .env("LD_PRELOAD", EATMYDATA)
        .arg("-C")
        .arg(&sb.imapd_conf)
        .args(args)
        .current_dir(&sb.root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `n` users `u0000`.. with `folders` sub-folders each, as `ctl_mboxlist -d` prints them.
fn bulk(first: usize, n: usize, folders: usize) -> Value {
    bulk_named("user.u", first, n, folders)
}

/// `n` mailboxes `<prefix>NNNNN` (`user.u` gives users `u00000`.., `shared` gives
/// top-level shared mailboxes `shared00000`..) with `folders` children each.
fn bulk_named(prefix: &str, first: usize, n: usize, folders: usize) -> Value {
    let tag = prefix
        .bytes()
        .fold(0u16, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    let mut m = serde_json::Map::new();
    for i in first..first + n {
        let top = format!("{prefix}{i:05}");
        let user = top.strip_prefix("user.").unwrap_or("cyrus").to_string();
        for f in 0..=folders {
            let name = if f == 0 {
                top.clone()
            } else {
                format!("{top}.F{f}")
            };
            m.insert(
                name,
                json!({
                    "uidvalidity": "1700000000", "createdmodseq": "1", "foldermodseq": "1",
                    "mbtype": "e", "partition": "p1", "acl": { user.clone(): "lrswipkxtecdan" },
                    "uniqueid": format!("00000000-{tag:04x}-4000-8000-{i:06}{f:06}"),
                }),
            );
        }
    }
    Value::Object(m)
}

/// (inode, generation) of mailboxes.db.
fn db_identity(sb: &Sandbox) -> (u64, u64) {
    let path = sb.config_dir().join("mailboxes.db");
    let bytes = std::fs::read(&path).unwrap();
    let h = parse_twoskip_header(&bytes).unwrap();
    (std::fs::metadata(&path).unwrap().ino(), h.generation)
}

/// The owner's entries as the whole-file parse has them: those in its key
/// ranges; for a user the same as `mailboxes_of_user`.
fn whole_entries(sp: &Spool, whole: &Mboxlist, id: &str) -> Vec<MailboxEntry> {
    let dp = sp.conf().deletedprefix();
    let Some(owner) = Owner::parse(id, false, dp) else {
        return Vec::new();
    };
    let keys = owner_keys(&owner, dp);
    let mine: Vec<MailboxEntry> = whole
        .entries()
        .iter()
        .filter(|e| keys.contains(&e.dbname))
        .cloned()
        .collect();
    if !owner.is_shared() {
        let by_user: Vec<MailboxEntry> = whole.mailboxes_of_user(id).into_iter().cloned().collect();
        assert_eq!(mine, by_user, "{id}");
    }
    mine
}

/// For every owner in the file and some names that are not: the range read
/// equals the whole-file parse (entries, folders, annotations).
fn assert_ranges_equal_whole(sp: &Spool, extra: &[&str]) -> usize {
    let whole = sp.mboxlist().unwrap();
    let all_annots = sp.global_annotations().unwrap();
    let mut users = whole.users();
    users.extend(sp.shared_hierarchies(&whole).into_iter().map(|h| h.owner));
    users.extend(extra.iter().map(|u| u.to_string()));
    for u in &users {
        let own = sp.owner_mboxlist(u).unwrap();
        assert_eq!(
            own.entries(),
            whole_entries(sp, &whole, u).as_slice(),
            "{u}"
        );
        let folders = sp.folders(&own, u);
        assert_eq!(folders, sp.folders(&whole, u), "{u}");
        let refs: Vec<_> = folders.iter().collect();
        for (f, annots) in folders.iter().zip(sp.folder_annotations(&refs).unwrap()) {
            let want: Vec<_> = all_annots
                .iter()
                .filter(|a| a.mailbox_id == f.uniqueid().as_bytes())
                .cloned()
                .collect();
            assert_eq!(annots, want, "{u} {}", f.internal());
            assert_eq!(
                sp.mailbox_annotations(f, &annots),
                sp.mailbox_annotations(f, &all_annots),
                "{u} {}",
                f.internal()
            );
        }
    }
    // USERS walks in chunks, each under its own lock hold: any chunk size gives
    // the same list.
    let want = users_of(&whole, sp.conf().deletedprefix());
    assert_eq!(sp.users().unwrap(), want);
    let shared = sp.shared_hierarchies(&whole);
    assert_eq!(sp.shared().unwrap(), shared);
    for chunk in [1, 7, 100] {
        assert_eq!(sp.clone().with_users_chunk(chunk).shared().unwrap(), shared);
        assert_eq!(
            sp.clone().with_users_chunk(chunk).users().unwrap(),
            want,
            "chunk {chunk}"
        );
    }
    users.len()
}

#[test]
fn owner_ranges_equal_the_whole_file_parse() {
    // `/` as separator: a user id may hold a `.` (`ann.b`), kept literally in dbnames.
    let sb = start("listing-ranges", true);
    for u in ["ann", "ann.b", "anna", "bob"] {
        sb.create_user(u, None).unwrap();
        sb.create_folder(u, "Sent", None).unwrap();
    }
    for f in ["Work", "Work/Sub", "a.b", "Old"] {
        sb.create_folder("ann", f, None).unwrap();
    }
    sb.create_folder("anna", "Work", None).unwrap();
    // Shared hierarchies (owners `%shared`, `%sharedX`), one folder deleted.
    let mut admin = sb.admin().unwrap();
    for m in [
        "shared",
        "shared/News",
        "shared/Old",
        "sharedX",
        "Lists",
        "Lists/dev",
    ] {
        admin.create(m).unwrap();
        admin.setacl(m, "cyrus", "lrswipkxtecda").unwrap();
    }
    admin.delete("shared/Old").unwrap();
    admin.logout().unwrap();
    // Delayed deletes (DELETED/user/ann/...), a rename (name history in `I`).
    let mut c = sb.login("ann").unwrap();
    c.delete("INBOX/Work/Sub").unwrap();
    c.rename("INBOX/Old", "INBOX/Older").unwrap();
    c.logout().unwrap();
    let mut c = sb.login("anna").unwrap();
    c.delete("INBOX/Work").unwrap();
    c.logout().unwrap();
    for u in ["ann", "anna"] {
        let mut c = sb.login(u).unwrap();
        c.run(&[
            Arg::Atom("SETMETADATA"),
            Arg::Str(b"INBOX/Sent"),
            Arg::Atom("(/private/comment \"mine\" /shared/comment \"for all\")"),
        ])
        .unwrap();
        c.logout().unwrap();
    }
    // Many more users, by Cyrus's own tool, so the skiplist has many levels.
    undump(&sb, &bulk(0, 400, 4));
    // Folders no live INBOX owns (USERS lists their users after the others), and a
    // shared hierarchy left with delayed-delete copies only (SHARED lists it): a
    // sub-folder without its INBOX record, a deleted user's tree, an INBOX
    // tombstone with a live sub-folder, `DELETED.Gone.*`.
    let mut orphans = serde_json::Map::new();
    for (i, (name, mbtype)) in [
        ("user.ghost.Kid", "e"),
        ("user.ghost.Kid.Deeper", "e"),
        ("DELETED.user.gonner.6B000000", "e"),
        ("DELETED.user.gonner.Sub.6B000000", "e"),
        ("user.tombu", "d"),
        ("user.tombu.Kid", "e"),
        ("DELETED.Gone.6B000001", "e"),
        ("DELETED.Gone.x.6B000001", "e"),
    ]
    .into_iter()
    .enumerate()
    {
        orphans.insert(
            name.into(),
            json!({"uidvalidity": "1", "createdmodseq": "1", "foldermodseq": "1",
                   "mbtype": mbtype, "partition": "p1", "acl": {"cyrus": "lrswipkxtecdan"},
                   "uniqueid": format!("0b000000-0000-4000-8000-{i:012}")}),
        );
    }
    undump(&sb, &Value::Object(orphans));
    let sp = spool(&sb);
    let users = sp.users().unwrap();
    let tail: Vec<&str> = users[users.len() - 3..]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(tail, ["gonner", "ghost", "tombu"], "after the live INBOXes");
    assert_eq!(sp.shared().unwrap().last().unwrap().owner, "%Gone");
    let whole = sp.mboxlist().unwrap();
    assert!(whole.entries().len() > 2000, "{}", whole.entries().len());
    let ann = sp.owner_mboxlist("ann").unwrap();
    let names: Vec<&str> = ann.entries().iter().map(|e| e.name.as_str()).collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("DELETED.user.ann.Work.Sub.")),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.contains("anna")), "{names:?}");
    let older = ann
        .entries()
        .iter()
        .find(|e| e.name == "user.ann.Older")
        .unwrap();
    assert_eq!(older.name_history.len(), 1, "{older:?}");
    let shared = sp.owner_mboxlist("%shared").unwrap();
    let names: Vec<&str> = shared.entries().iter().map(|e| e.name.as_str()).collect();
    assert!(names.contains(&"shared.News"), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("DELETED.shared.Old.")),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("sharedX")), "{names:?}");
    let n = assert_ranges_equal_whole(
        &sp,
        &[
            "an", "annb", "ann.c", "zz", "u00400", "u0000", "%share", "%nothing", "%",
        ],
    );
    assert!(n > 400, "{n}");
}

#[test]
fn a_repack_by_cyrus_while_a_spool_keeps_its_cache() {
    let sb = start("listing-repack", false);
    sb.create_user("ann", None).unwrap();
    sb.create_folder("ann", "Sent", None).unwrap();
    let sp = spool(&sb);
    let before = sp.owner_mboxlist("ann").unwrap();
    assert_eq!(before.entries().len(), 2);
    let id = db_identity(&sb);
    // One ctl_mboxlist run that more than doubles the file: Cyrus repacks it at
    // exit (its delayed checkpoint), renaming a new file with the next generation
    // into place. It also adds a folder for ann.
    let mut more = bulk(0, 300, 1);
    more.as_object_mut().unwrap().insert(
        "user.ann.FromUndump".into(),
        json!({"uidvalidity": "1", "createdmodseq": "1", "foldermodseq": "1", "mbtype": "e",
               "partition": "p1", "acl": {"ann": "lrswipkxtecdan"},
               "uniqueid": "0a000000-0000-4000-8000-000000000001"}),
    );
    undump(&sb, &more);
    let after_id = db_identity(&sb);
    assert_ne!(
        after_id.0, id.0,
        "mailboxes.db was not replaced by a repack"
    );
    assert!(after_id.1 > id.1, "generation {} -> {}", id.1, after_id.1);
    // `ctl_cyrusdb -c` too (a checkpoint of every db; it leaves twoskip in place).
    sb.tool_ok("ctl_cyrusdb", &["-c"]).unwrap();
    let after = sp.owner_mboxlist("ann").unwrap();
    assert!(
        after
            .entries()
            .iter()
            .any(|e| e.name == "user.ann.FromUndump"),
        "stale list after the repack"
    );
    assert_ranges_equal_whole(&sp, &["ann"]);
}

/// Folder names a session lists (`FMULTISTATUS`) through the service backend,
/// and the same from the whole file.
fn listed(backend: &cyrvault::service::backend::CyrusSpool, sp: &Spool, user: &str) -> Vec<String> {
    let got: Vec<String> = backend
        .folders(user.as_bytes())
        .unwrap()
        .into_iter()
        .map(|f| String::from_utf8(f.name).unwrap())
        .collect();
    let whole = sp.mboxlist().unwrap();
    let want: Vec<String> = sp
        .folders(&whole, user)
        .into_iter()
        .map(|f| f.external)
        .collect();
    assert_eq!(got, want, "{user}");
    got
}

#[test]
fn the_session_cache_never_serves_a_stale_list() {
    let sb = start("listing-cache", false);
    sb.create_user("ann", None).unwrap();
    sb.create_user("anna", None).unwrap();
    let backend = cyrvault::service::backend::CyrusSpool::new(spool(&sb), 64);
    let sp = backend.spool().clone();
    assert_eq!(listed(&backend, &sp, "ann"), ["INBOX"]);
    // Nothing changed: the second request is served from the cache.
    let hits = sp.db_reads().list_cache_hits;
    assert_eq!(listed(&backend, &sp, "ann"), ["INBOX"]);
    assert_eq!(
        sp.db_reads().list_cache_hits,
        hits + 1,
        "the cache was not used"
    );
    let mut c = sb.login("ann").unwrap();
    c.create("INBOX.New").unwrap();
    assert_eq!(listed(&backend, &sp, "ann"), ["INBOX", "INBOX.New"]);
    c.rename("INBOX.New", "INBOX.Newer").unwrap();
    assert_eq!(listed(&backend, &sp, "ann"), ["INBOX", "INBOX.Newer"]);
    c.delete("INBOX.Newer").unwrap();
    let l = listed(&backend, &sp, "ann");
    assert_eq!(l.len(), 2, "{l:?}");
    assert!(l[1].starts_with("DELETED.user.ann.Newer."), "{l:?}");
    c.logout().unwrap();
    // Another owner in between, then back: each answer is that owner's.
    assert_eq!(listed(&backend, &sp, "anna"), ["INBOX"]);
    assert_eq!(listed(&backend, &sp, "ann").len(), 2);
    // A change by another user's session also changes the file: no stale answer.
    sb.create_folder("ann", "ByAdmin", None).unwrap();
    assert_eq!(listed(&backend, &sp, "ann").len(), 3);
}

/// What one owner's session (FMULTISTATUS with the USERFILES listing the client
/// pipelines with it, FMETA of every folder, FDATA) reads of `mailboxes.db` and
/// `annotations.db`, in bytes, after checking each answer against the whole-file
/// parse of a separate spool.
fn session_reads(backend: &CyrusSpool, oracle: &Spool, owner: &str) -> (u64, u64, u64) {
    let whole = oracle.mboxlist().unwrap();
    let all_annots = oracle.global_annotations().unwrap();
    let want = oracle.folders(&whole, owner);
    assert!(want.len() >= 3, "{owner}: {want:?}");
    let sp = backend.spool();
    let before = sp.db_reads();
    let listed: Vec<String> = backend
        .folders(owner.as_bytes())
        .unwrap()
        .into_iter()
        .map(|f| String::from_utf8(f.name).unwrap())
        .collect();
    let names: Vec<&str> = want.iter().map(|f| f.external.as_str()).collect();
    assert_eq!(listed, names, "{owner}");
    // USERFILES: an unchanged user's whole session is this listing and the one
    // above (it once parsed all of mailboxes.db: 1.3 s at 200,000 mailboxes).
    let files: Vec<String> = backend
        .user_file_stats(owner.as_bytes())
        .unwrap()
        .into_iter()
        .map(|(n, _)| String::from_utf8(n).unwrap())
        .collect();
    let uf = oracle.user_files(owner, &whole).unwrap();
    let mut expect: Vec<String> = [("seen", uf.seen.is_some()), ("sub", uf.sub.is_some())]
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| n.to_string())
        .collect();
    expect.extend(
        uf.sieve_dir
            .iter()
            .flat_map(|d| cyrvault::spool::sieve_stats(d).unwrap())
            .map(|(n, _)| format!("sieve/{n}")),
    );
    assert_eq!(
        files, expect,
        "{owner}: USERFILES against the whole-file parse"
    );
    for f in &want {
        let FolderOpen::Open(folder) = backend
            .open_folder(owner.as_bytes(), f.external.as_bytes(), Want::Meta)
            .unwrap()
        else {
            panic!("{owner} {} missing", f.external)
        };
        assert_eq!(
            folder.mailbox_annotations().unwrap(),
            oracle.mailbox_annotations(f, &all_annots),
            "{owner} {}",
            f.external
        );
    }
    let meta = sp.db_reads();
    for f in &want {
        let FolderOpen::Open(folder) = backend
            .open_folder(
                owner.as_bytes(),
                f.external.as_bytes(),
                Want::Messages(&[1, 2]),
            )
            .unwrap()
        else {
            panic!("{owner} {} missing", f.external)
        };
        drop(folder);
    }
    let after = sp.db_reads();
    assert_eq!(
        after.annotations_db_bytes, meta.annotations_db_bytes,
        "{owner}: FDATA read annotations.db"
    );
    (
        after.mailboxes_db_bytes - before.mailboxes_db_bytes,
        after.annotations_db_bytes - before.annotations_db_bytes,
        (after.mailboxes_db - before.mailboxes_db),
    )
}

/// Issue #10's own setup: tens of thousands of other owners' mailboxes added by
/// Cyrus's `ctl_mboxlist -u`, named so that their keys come right after the
/// owners' own (`ann00000` after `ann`, `shared00000` after `shared`), and a big
/// annotation of another mailbox. A session of `ann` (INBOX, children, a
/// delayed-delete copy) and of `%shared` (its top, a child, a delayed-delete copy)
/// reads a few KiB of each file, counted in bytes: a whole-file copy, or a walk
/// that does not stop at the end of the owner's range, fails. FDATA reads no byte
/// of annotations.db.
fn a_big_server_costs_an_owner_no_more(cyrus: &CyrusInstall) {
    let sb = Sandbox::start(SandboxOptions {
        name_hint: "listing-big".into(),
        cyrus: Some(cyrus.clone()),
        ..SandboxOptions::default()
    })
    .unwrap();
    sb.create_user("ann", None).unwrap();
    sb.create_user("bob", None).unwrap();
    for f in ["Sent", "Work", "Work.Sub"] {
        sb.create_folder("ann", f, None).unwrap();
    }
    let mut c = sb.login("ann").unwrap();
    for i in 0..3 {
        let m = format!("Subject: m{i}\r\nMessage-ID: <{i}@big>\r\n\r\nbody {i}\r\n");
        c.append("INBOX", &[], None, m.as_bytes()).unwrap();
    }
    c.run(&[
        Arg::Atom("SETMETADATA"),
        Arg::Str(b"INBOX.Sent"),
        Arg::Atom("(/private/comment \"mine\" /shared/comment \"for all\")"),
    ])
    .unwrap();
    c.delete("INBOX.Work.Sub").unwrap();
    c.logout().unwrap();
    // Other mailboxes' annotations make annotations.db big (Cyrus takes quoted
    // values up to 128 KiB).
    for f in ["A", "B", "C", "D"] {
        sb.create_folder("bob", f, None).unwrap();
    }
    let mut c = sb.login("bob").unwrap();
    let big = "x".repeat(60 * 1024);
    for f in ["INBOX.A", "INBOX.B", "INBOX.C", "INBOX.D"] {
        let items = format!("(/private/comment \"{big}\" /shared/comment \"{big}\")");
        c.run(&[
            Arg::Atom("SETMETADATA"),
            Arg::Str(f.as_bytes()),
            Arg::Atom(&items),
        ])
        .unwrap();
    }
    c.logout().unwrap();
    let mut admin = sb.admin().unwrap();
    for m in ["shared", "shared.News", "shared.Old"] {
        admin.create(m).unwrap();
        admin.setacl(m, "cyrus", "lrswipkxtecda").unwrap();
    }
    admin.delete("shared.Old").unwrap();
    admin.logout().unwrap();

    let oracle = spool(&sb);
    let backend = CyrusSpool::new(spool(&sb), 64);
    let small: Vec<_> = ["ann", "%shared"]
        .iter()
        .map(|o| session_reads(&backend, &oracle, o))
        .collect();

    let t = std::time::Instant::now();
    undump(&sb, &bulk_named("user.ann", 0, 2000, 9));
    undump(&sb, &bulk_named("shared", 0, 500, 3));
    eprintln!("undump: {:?}", t.elapsed());
    let whole = oracle.mboxlist().unwrap();
    assert!(whole.entries().len() > 22_000, "{}", whole.entries().len());
    let mb_size = std::fs::metadata(sb.config_dir().join("mailboxes.db"))
        .unwrap()
        .len();
    let an_size = std::fs::metadata(sb.config_dir().join("annotations.db"))
        .unwrap()
        .len();
    assert!(an_size > 400 * 1024, "{an_size}");
    let backend = CyrusSpool::new(spool(&sb), 64);
    for (owner, (mb0, an0, _)) in ["ann", "%shared"].into_iter().zip(small) {
        let (mb, an, opens) = session_reads(&backend, &oracle, owner);
        eprintln!(
            "{owner}: mailboxes.db {mb} of {mb_size} bytes ({mb0} before the bulk), {opens} \
             lock holds; annotations.db {an} of {an_size} bytes ({an0} before)"
        );
        assert!(
            mb * 20 < mb_size && mb < 512 * 1024,
            "{owner}: read {mb} of {mb_size} bytes of mailboxes.db"
        );
        // What an owner reads must not grow with the server (the bulk added ~400 KB of
        // other owners' annotations); the file's own size varies with twoskip's random
        // skip levels, so the fraction is only a loose second check.
        assert!(
            an <= an0 + 16 * 1024 && an * 4 < an_size,
            "{owner}: read {an} of {an_size} bytes of annotations.db ({an0} before the bulk)"
        );
    }
}

crate::per_cyrus!(a_big_server_costs_an_owner_no_more);
