//! Interop on a real spool: the transcripts of `tests/transcripts/` (written from
//! upstream's source) replayed byte for byte against the running service on the
//! spool their README describes; and a client that speaks only the base protocol,
//! driven as `Cyrus::Backup` drives it, backs a user up completely.

use std::collections::BTreeSet;
use std::net::Shutdown;
use std::path::PathBuf;
use std::time::Duration;

use cyrvault::cyrus::config;
use cyrvault::cyrus::index::parse_index;
use cyrvault::cyrus::paths::message_path;
use cyrvault::protocol::FileStat;
use cyrvault::protocol::client::Collect;
use cyrvault::protocol::request::Request;
use cyrvault::protocol::token::decode_reply_token;
use cyrvault_host::imap::Arg;
use cyrvault_testkit::sandbox::{PopulatePlan, make_history, populate};

use super::load::check_folder;
use super::*;
use crate::protocol::{Resolver, all_transcripts, render};

/// Build the spool of tests/transcripts/README.md.
fn readme_spool(sb: &Sandbox) {
    let mut admin = sb.admin().unwrap();
    for m in [
        "user.alice",
        "user.alice.Sent",
        "user.alice.Work Stuff",
        "user.bob",
        "user.bob.Shared",
    ] {
        admin.create(m).unwrap();
    }
    let msg = |s: &str, b: &str| format!("Subject: {s}\r\n\r\n{b}\r\n").into_bytes();
    for (user, folder, subj, body) in [
        ("alice", None, "a1", "one"),
        ("alice", None, "a2", "two"),
        ("alice", None, "a3", "three"),
        ("alice", Some("Sent"), "s1", "sent"),
        ("alice", Some("Work Stuff"), "w1", "w-one"),
        ("alice", Some("Work Stuff"), "w2", "w-two"),
        ("bob", None, "b1", "bob"),
        ("bob", Some("Shared"), "sh1", "shared"),
    ] {
        sb.append(user, folder, &[], None, &msg(subj, body))
            .unwrap();
    }
    admin.setacl("user.bob.Shared", "alice", "lrs").unwrap();
    admin.logout().unwrap();
    let mut a = sb.login("alice").unwrap();
    a.subscribe("INBOX").unwrap();
    a.subscribe("INBOX.Sent").unwrap();
    for (entry, value) in [
        ("/shared/comment", "project notes"),
        ("/private/comment", "mine"),
    ] {
        a.run(&[
            Arg::Atom("SETMETADATA"),
            Arg::Str(b"INBOX.Work Stuff"),
            Arg::Atom(&format!("({entry} \"{value}\")")),
        ])
        .unwrap();
    }
    a.select("user.bob.Shared").unwrap();
    a.uid_store("1", "+FLAGS", &["\\Seen"]).unwrap();
    a.logout().unwrap();
    let mut a = sb.login("alice").unwrap();
    a.select("INBOX.Work Stuff").unwrap();
    a.uid_store("1", "+FLAGS", &["\\Deleted"]).unwrap();
    a.expunge().unwrap();
    a.logout().unwrap();
}

/// The real files of the sandbox, found through our spool reader's path logic
/// (paths only: bytes and stats are read here, from disk).
struct RealSpool {
    servername: String,
    spool: cyrvault::spool::Spool,
}

fn read(path: &std::path::Path) -> Option<(FileStat, Vec<u8>)> {
    let md = std::fs::metadata(path).ok()?;
    Some((FileStat::from_metadata(&md), std::fs::read(path).ok()?))
}

impl RealSpool {
    fn folder(&self, user: &str, name: &str) -> Option<cyrvault::spool::FolderRef> {
        let ml = self.spool.mboxlist().ok()?;
        self.spool
            .folders(&ml, user)
            .into_iter()
            .find(|f| f.external == name)
    }
    fn decode(s: &str) -> Option<String> {
        String::from_utf8(decode_reply_token(s.as_bytes())).ok()
    }
}

impl Resolver for RealSpool {
    fn servername(&self) -> String {
        self.servername.clone()
    }
    fn file(&self, fileref: &str) -> Option<(FileStat, Vec<u8>)> {
        let fileref = Self::decode(fileref)?;
        if let Some((user, rest)) = fileref.split_once('/') {
            let (fname, what) = rest.split_once(':')?;
            let f = self.folder(user, fname)?;
            let p = f.paths.as_ref()?;
            let path: PathBuf = match what {
                "header" => p.header.clone(),
                "index" => p.index.clone(),
                "annotations" => p.annotations.clone(),
                _ => {
                    let uid: u32 = what.strip_prefix("msg:")?.parse().ok()?;
                    let index = parse_index(&std::fs::read(&p.index).ok()?).ok()?;
                    let rec = index.records.iter().find(|r| r.uid == uid)?;
                    if rec.is_unlinked() {
                        return None;
                    }
                    message_path(&p.data_dir, uid)
                }
            };
            return read(&path);
        }
        let (user, what) = fileref.split_once(':')?;
        let ml = self.spool.mboxlist().ok()?;
        let files = self.spool.user_files(user, &ml).ok()?;
        let f = match what {
            "seen" => files.seen?,
            "sub" => files.sub?,
            _ => return None,
        };
        read(&f.path)
    }
    fn uniqueid(&self, folder: &str) -> Option<String> {
        let folder = Self::decode(folder)?;
        let (user, name) = folder.split_once('/')?;
        Some(self.folder(user, name)?.uniqueid().to_string())
    }
    fn jmapid(&self, folder: &str) -> Option<String> {
        self.uniqueid(folder).map(|_| String::new())
    }
}

/// Back `user` up with the base protocol only, as `Cyrus::Backup::BackupUser` does
/// (doc/protocol.md 1.8): META listing + files, FMULTISTATUS, FMETA with the four
/// items per folder, FDATA in batches of 1024. Returns every fetched message's GUID
/// (checked against the file's SHA-1) with whether its record is EXPUNGED, and the
/// number of folders.
fn base_backup(c: &mut TcpClient, slot: &[u8], user: &[u8]) -> (Vec<(Guid, bool)>, usize) {
    assert!(c.users().unwrap().iter().any(|u| u == user));
    let meta = c.meta_listing(user).unwrap();
    let names: Vec<Vec<u8>> = meta.iter().map(|(n, _)| n.clone()).collect();
    let mut rx = Collect::default();
    c.fetch(
        &Request::Meta {
            slot: slot.to_vec(),
            user: user.to_vec(),
            items: Some(names.clone()),
        },
        &mut rx,
    )
    .unwrap();
    assert_eq!(rx.files.len(), names.len(), "META files: {:?}", rx.missing);
    for ((name, st), (h, bytes)) in meta.iter().zip(&rx.files) {
        assert_eq!(&h.name, name);
        assert_eq!(h.stat, *st, "META listing and file agree");
        assert_eq!(bytes.len() as u64, st.size);
    }
    let folders = c.fmultistatus(user).unwrap();
    let mut guids = Vec::new();
    let items: Vec<Vec<u8>> = ["header", "index", "annotations", "mailbox_annotations"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    for f in &folders {
        let mut rx = Grouped::default();
        let done = c
            .fetch(
                &Request::FMeta {
                    slot: slot.to_vec(),
                    user: user.to_vec(),
                    folder: f.name.clone(),
                    items: Some(items.clone()),
                },
                &mut rx,
            )
            .unwrap();
        assert_eq!(done[1], f.uniqueid, "uniqueid from DONE FMETA");
        let snap = SnapFolder {
            name: f.name.clone(),
            uniqueid: String::from_utf8(f.uniqueid.clone()).unwrap(),
            files: rx.user.into_iter().collect(),
            missing: rx.missing,
        };
        let index = check_folder(&snap);
        let uids: Vec<u32> = index
            .records
            .iter()
            .filter(|r| !r.is_unlinked())
            .map(|r| r.uid)
            .collect();
        for batch in uids.chunks(1024) {
            let mut rx = ByUid::default();
            c.fdata(user, &f.name, batch, &mut rx).unwrap();
            assert!(rx.missing.is_empty(), "{:?}", rx.missing);
            for uid in batch {
                let rec = index.records.iter().find(|r| r.uid == *uid).unwrap();
                let bytes = rx.files.get(uid).expect("every message fetched");
                assert_eq!(Guid::of(bytes), rec.guid, "changed underfoot");
                guids.push((rec.guid, rec.is_expunged()));
            }
        }
    }
    (guids, folders.len())
}

#[test]
fn transcripts_replay_and_a_base_client_backs_up_a_user() {
    // The stock Perl client cannot authenticate: the base protocol is served only
    // where the operator says so, as here (doc/security.md).
    let sb = start(
        "svcinterop",
        &[("cyrvaultd_allow_unauthenticated", "yes")],
        vec![],
    );
    readme_spool(&sb);
    let conf = config::load(Some(&sb.imapd_conf), Some("cyrvaultd")).unwrap();
    let real = RealSpool {
        servername: sb.servername.clone(),
        spool: cyrvault::spool::Spool::open(conf, Duration::from_secs(10)).unwrap(),
    };
    let mut failures = Vec::new();
    for t in all_transcripts() {
        let (input, expected) = render(&t, &real).unwrap_or_else(|e| panic!("{e}"));
        let mut r = Raw::new(addr(&sb, "cyrvaultd"));
        r.send(&input);
        r.stream.shutdown(Shutdown::Write).unwrap();
        let got = r.rest();
        if got != expected {
            failures.push(format!(
                "{}:\n--- expected\n{}\n--- got\n{}",
                t.path.display(),
                String::from_utf8_lossy(&expected),
                String::from_utf8_lossy(&got)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // A base-protocol backup of a populated user with history (expunged records,
    // a renamed and a deleted folder).
    let plan = PopulatePlan {
        users: vec!["carol".into()],
        folders_per_user: 4,
        messages: 40,
        max_message_size: 64 * 1024,
        fixtures: false,
        ..Default::default()
    };
    let pop = populate(&sb, &plan).unwrap();
    let hist = make_history(&sb, &pop, 5).unwrap();
    assert!(!hist.deleted.is_empty() && !hist.expunged.is_empty());
    let mut c = unauthenticated(&sb, tcp(addr(&sb, "cyrvaultd")));
    let (guids, nfolders) = base_backup(&mut c, sb.servername.as_bytes(), b"carol");
    let mut want = Vec::new();
    for pat in ["user.carol", "user.carol.*", "DELETED.user.carol.*"] {
        let out = sb.mbexamine(pat).unwrap();
        want.extend(
            mbexamine_guids(&out)
                .into_iter()
                .filter(|(_, flags)| flags & cyrvault::cyrus::index::FLAG_INTERNAL_UNLINKED == 0)
                .map(|(g, _)| g),
        );
    }
    // mbexamine (3.6) prints only records that are not EXPUNGED; the backup also
    // fetched the expunged ones whose files are still there (expunge_mode delayed).
    let expunged = guids.iter().filter(|(_, x)| *x).count();
    assert!(
        expunged >= hist.expunged.len(),
        "expunged messages are backed up too"
    );
    let live: Vec<Guid> = guids.iter().filter(|(_, x)| !x).map(|(g, _)| *g).collect();
    let (mut got_sorted, mut want_sorted) = (live, want.clone());
    got_sorted.sort_by_key(|g| g.to_hex());
    want_sorted.sort_by_key(|g| g.to_hex());
    assert_eq!(
        got_sorted.len(),
        want_sorted.len(),
        "records fetched vs mbexamine"
    );
    assert_eq!(got_sorted, want_sorted);
    let set: BTreeSet<String> = guids.iter().map(|(g, _)| g.to_hex()).collect();
    eprintln!(
        "base backup of carol: {nfolders} folders, {} message files ({expunged} expunged, \
         {} distinct GUIDs); live GUIDs == mbexamine's",
        guids.len(),
        set.len()
    );
}
