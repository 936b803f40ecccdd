//! Issue #12's realistic user and what a mail client sees of it.
//!
//! [`make_user`] builds, on a real Cyrus 3.6 with `/` as hierarchy separator, a user
//! `bob` the way people use mail: eleven folders (one non-ASCII, one with a space, one
//! with a dot), every flag kind and keywords, expunged and `\Deleted` messages,
//! messages copied between folders, special-use folders and comments, a private
//! comment by a colleague, ACLs, a quota, two sieve scripts (one active),
//! subscriptions (one to a folder that no longer exists, one to a colleague's folder),
//! a per-message annotation, and a colleague `carol` whose `Shared` folder bob reads
//! (his `\Seen` there lives in his seen database).
//!
//! [`view`] is what IMAP shows of it, as bob, as carol and as the admin, and over
//! ManageSieve: the oracle the restores are compared with. Nothing comes from
//! cyrvault's own catalog.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use cyrvault_host::imap::{Arg, Client};
use cyrvault_host::restore::sieve::SieveClient;
use cyrvault_testkit::sandbox::{CyrusInstall, MailGen, Sandbox, SandboxOptions, ServiceLine};

/// A Cyrus (of `install`, None: the system's) with `/` as separator, cyrvaultd,
/// timsieved and sync_server.
pub fn cyrus(install: Option<&CyrusInstall>, name: &str) -> Sandbox {
    Sandbox::start(SandboxOptions {
        name_hint: name.into(),
        cyrus: install.cloned(),
        unixhierarchysep: true,
        extra_services: vec![
            ServiceLine::tcp("cyrvaultd", env!("CARGO_BIN_EXE_cyrvaultd")),
            ServiceLine::tcp("sieve", "timsieved"),
            ServiceLine::tcp("syncserver", "sync_server"),
        ],
        ..Default::default()
    })
    .unwrap()
}

/// Bob's folders below the INBOX.
pub const FOLDERS: [&str; 10] = [
    "Sent",
    "Drafts",
    "Trash",
    "Archive",
    "Archive/2023",
    "Work Projects",
    "Entw&APw-rfe",
    "v1.2 Release",
    "Lists",
    "Lists/cyrus-devel",
];

pub const SCRIPT_A: &str = "require [\"fileinto\"];\r\nif header :contains \"subject\" \"cyrus\" {\r\n  fileinto \"INBOX/Lists/cyrus-devel\";\r\n}\r\n";
pub const SCRIPT_B: &str =
    "require [\"vacation\"];\r\nvacation :days 7 \"Away until Monday.\";\r\n";

/// The flags of the i-th message: every system flag kind and some keywords.
fn flags_for(i: usize) -> Vec<&'static str> {
    let mut f = Vec::new();
    if i.is_multiple_of(2) {
        f.push("\\Seen");
    }
    if i % 5 == 1 {
        f.push("\\Answered");
    }
    if i % 7 == 2 {
        f.push("\\Flagged");
    }
    if i % 11 == 3 {
        f.push("\\Draft");
    }
    if i % 13 == 4 {
        f.push("\\Deleted");
    }
    if i.is_multiple_of(3) {
        f.push("$Forwarded");
    }
    if i % 9 == 5 {
        f.push("$Junk");
    }
    if i % 4 == 1 {
        f.push("Work");
    }
    if i % 17 == 6 {
        f.push("$Label1");
    }
    f
}

fn user_name(f: &str) -> String {
    if f.is_empty() {
        "INBOX".into()
    } else {
        format!("INBOX/{f}")
    }
}

/// Build bob and carol (see the module doc). Returns the number of messages appended.
pub fn make_user(sb: &Sandbox, messages: usize) -> usize {
    let mut admin = sb.admin().unwrap();
    for u in ["bob", "carol"] {
        admin.create(&format!("user/{u}")).unwrap();
    }
    admin.create("user/carol/Shared").unwrap();
    for f in FOLDERS.iter().chain(["Gone"].iter()) {
        admin.create(&format!("user/bob/{f}")).unwrap();
    }
    admin.setacl("user/carol/Shared", "bob", "lrs").unwrap();
    admin
        .setacl("user/bob/Work Projects", "carol", "lrs")
        .unwrap();
    admin.setacl("user/bob/Archive", "anyone", "l").unwrap();
    admin.setacl("user/bob", "carol", "lr").unwrap();
    admin
        .setquota("user/bob", &[("STORAGE", 500_000), ("MESSAGE", 10_000)])
        .unwrap();
    admin.logout().unwrap();

    let mut mg = MailGen::new(12).with_max_size(24_000);
    let mut carol = sb.admin_as("carol").unwrap();
    for i in 0..5 {
        carol
            .append(
                "INBOX/Shared",
                &[],
                Some(1_600_000_000 + i),
                &mg.message().bytes,
            )
            .unwrap();
    }
    carol.logout().unwrap();

    let mut bob = sb.admin_as("bob").unwrap();
    for (f, use_) in [
        ("Sent", "\\Sent"),
        ("Drafts", "\\Drafts"),
        ("Trash", "\\Trash"),
        ("Archive", "\\Archive"),
    ] {
        bob.setmetadata(&user_name(f), "/private/specialuse", Some(use_.as_bytes()))
            .unwrap();
    }
    for (f, c) in [
        ("Sent", "mail I sent"),
        ("Archive", "old stuff, kept"),
        ("Work Projects", "the team's projects"),
    ] {
        bob.setmetadata(&user_name(f), "/shared/comment", Some(c.as_bytes()))
            .unwrap();
    }
    bob.setmetadata(
        "INBOX/Lists",
        "/shared/vendor/cmu/cyrus-imapd/sharedseen",
        Some(b"true"),
    )
    .unwrap();
    // Messages: spread over the INBOX and the folders, in an interleaved order.
    let targets: Vec<String> = std::iter::once(String::new())
        .chain(FOLDERS.iter().map(|s| s.to_string()))
        .collect();
    for i in 0..messages {
        let folder = &targets[(i * 7 + i / 11) % targets.len()];
        let flags = flags_for(i);
        bob.append(
            &user_name(folder),
            &flags,
            Some(1_650_000_000 + (i as i64) * 3_600),
            &mg.message().bytes,
        )
        .unwrap();
    }
    // Copies: the archive holds some INBOX messages (same GUIDs, stored once).
    bob.select("INBOX").unwrap();
    bob.run(&[
        Arg::Atom("UID"),
        Arg::Atom("COPY"),
        Arg::Atom("1:12"),
        Arg::Str(b"INBOX/Archive"),
    ])
    .unwrap();
    // Expunged messages (kept in the index: expunge_mode delayed) and flag changes.
    bob.uid_store("2,5,9", "+FLAGS", &["\\Deleted"]).unwrap();
    bob.expunge().unwrap();
    bob.uid_store("3:4", "+FLAGS", &["\\Flagged", "$Important"])
        .unwrap();
    // A per-message annotation (ANNOTATE-EXPERIMENT-1).
    bob.run(&[
        Arg::Atom("UID"),
        Arg::Atom("STORE"),
        Arg::Atom("1"),
        Arg::Atom("ANNOTATION"),
        Arg::Atom("(/comment (value.shared \"call back\"))"),
    ])
    .unwrap();
    // Subscriptions: every folder, the colleague's, and one that will disappear.
    for f in FOLDERS.iter().chain(["Gone"].iter()) {
        bob.subscribe(&user_name(f)).unwrap();
    }
    bob.subscribe("INBOX").unwrap();
    bob.subscribe("user/carol/Shared").unwrap();
    // \Seen on the colleague's folder: 3 of 5, in bob's seen database.
    bob.select("user/carol/Shared").unwrap();
    bob.uid_store("1,3:4", "+FLAGS", &["\\Seen"]).unwrap();
    bob.logout().unwrap();
    let mut admin = sb.admin().unwrap();
    admin
        .setacl("user/bob/Gone", "cyrus", "lrswipkxtecda")
        .unwrap();
    admin.delete("user/bob/Gone").unwrap();
    admin.logout().unwrap();
    // A private comment by the colleague on bob's shared folder.
    let mut carol = sb.admin_as("carol").unwrap();
    carol
        .setmetadata(
            "user/bob/Work Projects",
            "/private/comment",
            Some(b"carol's view"),
        )
        .unwrap();
    carol.logout().unwrap();

    let mut s = sieve(sb, "bob");
    s.putscript("filters", SCRIPT_A.as_bytes()).unwrap();
    s.putscript("vacation", SCRIPT_B.as_bytes()).unwrap();
    s.setactive("filters").unwrap();
    s.logout().unwrap();
    messages + 12
}

pub fn sieve(sb: &Sandbox, user: &str) -> SieveClient {
    let mut c = SieveClient::connect(&sb.service_addrs["sieve"].to_string()).unwrap();
    c.authenticate_plain(user, "cyrus", "x").unwrap();
    c
}

/// What to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything, UIDs, UIDVALIDITY and MODSEQs included (`--exact`).
    Exact,
    /// Everything but UIDs, UIDVALIDITY, UIDNEXT and MODSEQs (messages in UID order).
    Imap,
}

const METADATA: [&str; 5] = [
    "/private/specialuse",
    "/shared/comment",
    "/private/comment",
    "/shared/vendor/cmu/cyrus-imapd/sharedseen",
    "/shared/vendor/cmu/cyrus-imapd/duplicatedeliver",
];

fn sorted_flags(f: Option<Vec<String>>) -> String {
    let mut f: Vec<String> = f
        .unwrap_or_default()
        .into_iter()
        .filter(|x| !x.eq_ignore_ascii_case("\\Recent"))
        .collect();
    f.sort();
    f.join(" ")
}

/// The messages of the selected folder, one line each, in UID order.
fn messages(c: &mut Client, mode: Mode, annotations: bool) -> Vec<String> {
    let items = if annotations {
        "(UID FLAGS INTERNALDATE RFC822.SIZE DIGEST.SHA1 MODSEQ ANNOTATION (/comment value.shared))"
    } else {
        "(UID FLAGS INTERNALDATE RFC822.SIZE DIGEST.SHA1 MODSEQ)"
    };
    let mut v = c.uid_fetch("1:*", items).unwrap();
    v.sort_by_key(|f| f.uid);
    v.into_iter()
        .map(|f| {
            let annot = f
                .other
                .iter()
                .find(|(k, _)| k == "ANNOTATION")
                .map(|(_, v)| format!(" {v:?}"))
                .unwrap_or_default();
            let head = match mode {
                Mode::Exact => format!("uid {} modseq {} ", f.uid.unwrap(), f.modseq.unwrap()),
                Mode::Imap => String::new(),
            };
            format!(
                "{head}{} [{}] {} {}{annot}",
                f.digest_sha1.unwrap().to_lowercase(),
                sorted_flags(f.flags),
                f.internaldate.unwrap().0,
                f.rfc822_size.unwrap(),
            )
        })
        .collect()
}

/// Everything IMAP and ManageSieve show of bob (as bob, as carol and as the admin),
/// one entry per aspect.
pub fn view(sb: &Sandbox, mode: Mode) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut bob = sb.admin_as("bob").unwrap();
    let mut admin = sb.admin().unwrap();
    let mut list: Vec<String> = bob
        .list("", "*")
        .unwrap()
        .into_iter()
        .map(|e| {
            let mut f: Vec<String> = e
                .flags
                .into_iter()
                .filter(|f| !f.contains("Children"))
                .collect();
            f.sort();
            format!("{} {f:?}", e.name)
        })
        .collect();
    list.sort();
    out.insert("list".into(), list.join("\n"));
    let mut lsub: Vec<String> = bob
        .lsub("", "*")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    lsub.sort();
    out.insert("lsub".into(), lsub.join("\n"));
    let folders: Vec<String> = std::iter::once("INBOX".to_string())
        .chain(FOLDERS.iter().map(|f| user_name(f)))
        .collect();
    for f in &folders {
        let st = bob
            .status(f, "(MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)")
            .unwrap();
        let st: Vec<String> = st
            .into_iter()
            .filter(|(k, _)| mode == Mode::Exact || k == "MESSAGES")
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        out.insert(format!("status {f}"), st.join(" "));
        bob.examine(f).unwrap();
        out.insert(
            format!("messages {f}"),
            messages(&mut bob, mode, mode == Mode::Exact).join("\n"),
        );
        let mut md: Vec<String> = bob
            .getmetadata(f, &METADATA)
            .unwrap()
            .into_iter()
            .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(&v)))
            .collect();
        md.sort();
        out.insert(format!("metadata {f}"), md.join(" "));
        out.insert(format!("myrights {f}"), bob.myrights(f).unwrap());
        let aname = f.replacen("INBOX", "user/bob", 1);
        let mut acl: Vec<String> = admin
            .getacl(&aname)
            .unwrap()
            .into_iter()
            .map(|(i, r)| {
                let mut r: Vec<char> = r.chars().collect();
                r.sort();
                format!("{i}:{}", r.into_iter().collect::<String>())
            })
            .collect();
        acl.sort();
        out.insert(format!("acl {f}"), acl.join(" "));
    }
    out.insert(
        "quota".into(),
        format!("{:?}", bob.getquotaroot("INBOX").unwrap()),
    );
    bob.examine("user/carol/Shared").unwrap();
    out.insert(
        "colleague's folder as bob".into(),
        messages(&mut bob, mode, false).join("\n"),
    );
    bob.logout().unwrap();
    admin.logout().unwrap();
    let mut carol = sb.admin_as("carol").unwrap();
    out.insert(
        "carol's private comment".into(),
        format!(
            "{:?}",
            carol
                .getmetadata("user/bob/Work Projects", &["/private/comment"])
                .unwrap()
        ),
    );
    carol.logout().unwrap();
    let mut s = sieve(sb, "bob");
    let mut scripts = s.listscripts().unwrap();
    scripts.sort();
    for (n, active) in scripts {
        let body = s.getscript(&n).unwrap();
        out.insert(format!("sieve {n}"), format!("active={active}\n{body}"));
    }
    s.logout().unwrap();
    out
}

/// The differences between two views, one line each (empty: equal).
pub fn diff(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> Vec<String> {
    let mut d = Vec::new();
    for k in got
        .keys()
        .chain(want.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (got.get(k), want.get(k)) {
            (Some(g), Some(w)) if g == w => {}
            (g, w) => d.push(format!(
                "{k}:\n   got: {}\n  want: {}",
                g.map_or("(missing)".into(), |s| s.replace('\n', "\n        ")),
                w.map_or("(missing)".into(), |s| s.replace('\n', "\n        "))
            )),
        }
    }
    d
}

/// Per folder, (UIDVALIDITY, HIGHESTMODSEQ, UID list) as a client that synchronised
/// now would remember them.
pub fn client_state(sb: &Sandbox) -> Vec<(String, u32, u64, Vec<u32>)> {
    let mut bob = sb.admin_as("bob").unwrap();
    let mut out = Vec::new();
    for f in std::iter::once("INBOX".to_string()).chain(FOLDERS.iter().map(|f| user_name(f))) {
        let info = bob.examine(&f).unwrap();
        let uids = if info.exists > 0 {
            bob.uid_fetch("1:*", "(UID)")
                .unwrap()
                .into_iter()
                .filter_map(|i| i.uid)
                .collect()
        } else {
            Vec::new()
        };
        out.push((f, info.uidvalidity, info.highestmodseq, uids));
    }
    bob.logout().unwrap();
    out
}

/// A client that last synchronised at `state` resumes with QRESYNC (RFC 7162): for
/// every folder, SELECT ... (QRESYNC (uidvalidity modseq known-uids)) must report no
/// FETCH and no VANISHED, and the same HIGHESTMODSEQ; UID FETCH CHANGEDSINCE must be
/// empty. Returns the problems found.
pub fn qresync_resumes(sb: &Sandbox, state: &[(String, u32, u64, Vec<u32>)]) -> Vec<String> {
    let mut bob = sb.admin_as("bob").unwrap();
    bob.run(&[Arg::Atom("ENABLE"), Arg::Atom("QRESYNC")])
        .unwrap();
    let mut problems = Vec::new();
    for (f, uv, hms, uids) in state {
        let known = if uids.is_empty() {
            String::new()
        } else {
            format!(" 1:{}", uids.iter().max().unwrap())
        };
        let q = format!("(QRESYNC ({uv} {hms}{known}))");
        let r = bob
            .execute(&[Arg::Atom("SELECT"), Arg::Str(f.as_bytes()), Arg::Atom(&q)])
            .unwrap();
        let info = cyrvault_host::imap::types::select_info(&r.untagged);
        let fetches = r.data("FETCH").count();
        let vanished = r.data("VANISHED").count();
        if info.uidvalidity != *uv || info.highestmodseq != *hms || fetches + vanished > 0 {
            problems.push(format!(
                "{f}: uidvalidity {} (had {uv}), highestmodseq {} (had {hms}), {fetches} \
                 FETCH and {vanished} VANISHED on resync",
                info.uidvalidity, info.highestmodseq
            ));
        }
        if info.exists > 0 {
            let changed = bob
                .uid_fetch("1:*", &format!("(FLAGS) (CHANGEDSINCE {hms})"))
                .unwrap();
            if !changed.is_empty() {
                problems.push(format!(
                    "{f}: {} messages changed since {hms}",
                    changed.len()
                ));
            }
        }
    }
    bob.logout().unwrap();
    problems
}

/// Give Cyrus a second so that a run started now is a later second than the last.
pub fn next_second() {
    std::thread::sleep(Duration::from_millis(1100));
}
