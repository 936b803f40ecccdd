//! `spool` against a real Cyrus 3.6 (the sandbox): users and folders as Cyrus
//! lists them, snapshots equal to `mbexamine`, message files hashing to their
//! GUIDs, renamed and delayed-delete folders, lock interplay with a client that
//! APPENDs in a loop, lock hold times, timeouts, damaged files, user files and
//! annotations byte-exact against jansson.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cyrvault::cyrus::Guid;
use cyrvault::cyrus::config::load;
use cyrvault::cyrus::index::Index;
use cyrvault::cyrus::paths;
use cyrvault::spool::SpoolError;
use cyrvault::spool::{FolderRef, Load, OpenFolder, Spool};
use cyrvault_testkit::sandbox::{PopulatePlan, Sandbox, SandboxOptions, make_history, populate};

fn start(hint: &str, extra: &[(&str, &str)]) -> Sandbox {
    Sandbox::start(SandboxOptions {
        name_hint: hint.into(),
        extra_imapd_conf: extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..SandboxOptions::default()
    })
    .unwrap()
}

/// Everything `Load::All` read of the index.
fn index_of(of: &OpenFolder<'_>) -> Index {
    Index {
        header: of.index_header().clone(),
        records: of.records().to_vec(),
    }
}

fn spool(sb: &Sandbox, timeout: Duration) -> Spool {
    Spool::open(load(Some(&sb.imapd_conf), None).unwrap(), timeout).unwrap()
}

fn small_plan(users: &[&str], messages: usize) -> PopulatePlan {
    PopulatePlan {
        users: users.iter().map(|u| u.to_string()).collect(),
        folders_per_user: 4,
        messages,
        max_message_size: 40_000,
        fixtures: false,
        ..PopulatePlan::default()
    }
}

/// (uid, guid, system flags, user flag words) per message, from `mbexamine`.
type Examined = BTreeMap<u32, (String, u32, [u32; 4])>;

fn mbexamine(sb: &Sandbox, mailbox: &str) -> Examined {
    let out = sb.mbexamine(mailbox).unwrap();
    let mut res = Examined::new();
    let mut uid = None;
    // Only the record lines: `000001> UID:...` and the `      > ...` continuations
    // (the cache dump lines after them hold message text).
    let record_line = |l: &str| {
        let t = l.trim_start();
        t.starts_with('>')
            || t.split_once("> UID:")
                .is_some_and(|(n, _)| n.bytes().all(|b| b.is_ascii_digit()))
    };
    for line in out.lines().filter(|l| record_line(l)) {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_string)
        };
        if let Some(u) = field("UID:") {
            uid = Some(u.parse::<u32>().unwrap());
        }
        if let (Some(u), Some(g), Some(f)) = (uid, field("GUID:"), field("SYSFLAGS:")) {
            res.insert(u, (g, u32::from_str_radix(&f, 16).unwrap(), [0; 4]));
        }
        if let (Some(u), Some(i)) = (uid, line.find("USERFLAGS:")) {
            let words: Vec<u32> = line[i + 10..]
                .split_whitespace()
                .map(|w| u32::from_str_radix(w, 16).unwrap())
                .collect();
            // Printed from the highest word down.
            let e = res.get_mut(&u).unwrap();
            e.2 = [words[3], words[2], words[1], words[0]];
        }
    }
    res
}

/// Mailbox names the user sees over IMAP (`LIST "" *`), in the server's order.
fn imap_list(sb: &Sandbox, user: &str) -> Vec<String> {
    let mut c = sb.login(user).unwrap();
    let names = c
        .list("", "*")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    c.logout().unwrap();
    names
}

#[test]
fn users_and_folders_match_cyrus_in_the_standard_namespace() {
    let sb = start("spool-list", &[]);
    let pop = populate(&sb, &small_plan(&["alice", "bob", "carol"], 40)).unwrap();
    let h = make_history(&sb, &pop, 5).unwrap();
    let sp = spool(&sb, Duration::from_secs(5));
    let ml = sp.mboxlist().unwrap();
    let dump = sb.ctl_mboxlist_dump().unwrap();
    let dump = dump.as_object().unwrap();
    // USERS: the INBOXes ctl_mboxlist shows, in its (key) order.
    let inboxes: Vec<String> = dump
        .keys()
        .filter_map(|k| k.strip_prefix("user."))
        .filter(|u| !u.contains('.'))
        .map(str::to_string)
        .collect();
    assert_eq!(sp.users().unwrap(), inboxes);
    assert_eq!(inboxes, ["alice", "bob", "carol"]);
    for user in &inboxes {
        let folders = sp.folders(&ml, user);
        let names: Vec<&str> = folders.iter().map(|f| f.external.as_str()).collect();
        // Live folders: what LIST shows the user (Cyrus's LIST order is the same
        // key order here), then the DELETED.* ones ctl_mboxlist knows.
        let live: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !n.starts_with("DELETED."))
            .collect();
        assert_eq!(live, imap_list(&sb, user), "{user}");
        assert_eq!(names[0], "INBOX");
        let deleted: Vec<&String> = dump
            .keys()
            .filter(|k| k.starts_with(&format!("DELETED.user.{user}.")))
            .collect();
        assert_eq!(names[live.len()..], deleted, "{user}");
        assert_eq!(deleted.len(), 1, "{user}: {names:?}");
        // Every listed folder resolves to itself, is in ctl_mboxlist, and its meta
        // paths are where mbpath puts them.
        for f in &folders {
            let back = sp.resolve_folder(&ml, user, &f.external).unwrap();
            assert_eq!(back.entry.name, f.entry.name);
            let d = &dump[f.internal()];
            assert_eq!(d["uniqueid"], f.uniqueid(), "{}", f.internal());
            let meta = sb.tool_ok("mbpath", &["-M", f.internal()]).unwrap();
            let p = f.paths.as_ref().unwrap();
            assert_eq!(p.header, Path::new(meta.trim()).join("cyrus.header"));
            let st = sp.stat_meta(f).unwrap();
            let md = std::fs::metadata(&p.index).unwrap();
            let si = st.index.unwrap();
            assert_eq!((si.size, si.inode), (md.len(), md.ino()));
            assert!(st.header.is_some() && st.annotations.is_some());
        }
        // Case-insensitive INBOX, as upstream.
        assert_eq!(
            sp.resolve_folder(&ml, user, "inbox.Archive")
                .unwrap()
                .entry
                .name,
            format!("user.{user}.Archive")
        );
        // Another user's folder does not resolve for this user.
        let other = if user == "alice" { "bob" } else { "alice" };
        assert!(
            sp.resolve_folder(&ml, user, &format!("user.{other}"))
                .is_none()
        );
    }
    // The renamed folders are listed under their new name only.
    for (old, new) in &h.renamed {
        let user = old.split('.').nth(1).unwrap();
        let names: Vec<String> = sp
            .folders(&ml, user)
            .into_iter()
            .map(|f| f.entry.name)
            .collect();
        assert!(names.contains(new) && !names.contains(old), "{names:?}");
    }
    // Unknown user: nothing.
    assert!(sp.folders(&ml, "nobody").is_empty());
}

#[test]
fn folder_names_in_the_alternate_namespace_with_slash() {
    let sb = Sandbox::start(SandboxOptions {
        name_hint: "spool-alt".into(),
        unixhierarchysep: true,
        extra_imapd_conf: vec![("altnamespace".into(), "yes".into())],
        ..SandboxOptions::default()
    })
    .unwrap();
    sb.create_user("dora", None).unwrap();
    for f in ["Sent", "Lists", "Lists/cyrus", "a.b", "inbox"] {
        sb.create_folder("dora", f, None).unwrap();
    }
    let sp = spool(&sb, Duration::from_secs(5));
    let ml = sp.mboxlist().unwrap();
    let ours: Vec<String> = sp
        .folders(&ml, "dora")
        .into_iter()
        .map(|f| f.external)
        .collect();
    let mut theirs = imap_list(&sb, "dora");
    let mut sorted = ours.clone();
    sorted.sort();
    theirs.sort();
    assert_eq!(sorted, theirs);
    assert!(ours.contains(&"Lists/cyrus".to_string()) && ours.contains(&"a.b".to_string()));
    assert!(ours.contains(&"Alt Folders/inbox".to_string()), "{ours:?}");
    for n in &ours {
        assert_eq!(&sp.resolve_folder(&ml, "dora", n).unwrap().external, n);
    }

    // A delayed-delete folder has a name here too (upstream has none), under the
    // shared prefix, so it cannot collide with a top-level `DELETED` of the user's.
    sb.create_folder("dora", "DELETED", None).unwrap();
    sb.create_folder("dora", "Gone", None).unwrap();
    let mut c = sb.login("dora").unwrap();
    c.delete("Gone").unwrap();
    c.logout().unwrap();
    let ml = sp.mboxlist().unwrap();
    let all = sp.folders(&ml, "dora");
    let gone = all.iter().find(|f| f.is_deleted()).unwrap();
    assert!(
        gone.external
            .starts_with("Shared Folders/DELETED/user/dora/Gone/"),
        "{}",
        gone.external
    );
    assert_eq!(gone.original.as_deref(), Some("Gone"));
    let r = sp.resolve_folder(&ml, "dora", &gone.external).unwrap();
    assert_eq!(r.uniqueid(), gone.uniqueid());
    let top = sp.resolve_folder(&ml, "dora", "DELETED").unwrap();
    assert_eq!(top.internal(), "user.dora.DELETED");
}

#[test]
fn snapshots_match_mbexamine_and_files_hash_to_their_guids() {
    let sb = start("spool-exam", &[]);
    let pop = populate(
        &sb,
        &PopulatePlan {
            fixtures: true,
            ..small_plan(&["alice", "bob"], 80)
        },
    )
    .unwrap();
    make_history(&sb, &pop, 9).unwrap();
    let sp = spool(&sb, Duration::from_secs(5));
    let ml = sp.mboxlist().unwrap();
    let mut opened = 0;
    for user in sp.users().unwrap() {
        for f in sp.folders(&ml, &user) {
            let of = sp.open_folder(&f, true).unwrap();
            assert!(!of.header_crc_mismatch(), "{}", f.internal());
            let idx = index_of(&of);
            assert_eq!(idx.header.num_records as usize, idx.records.len());
            assert_eq!(of.header().uniqueid.as_deref(), Some(f.uniqueid()));
            let ex = mbexamine(&sb, f.internal());
            let ours: Examined = idx
                .records
                .iter()
                .filter(|r| !r.is_expunged())
                .map(|r| {
                    (
                        r.uid,
                        (r.guid.to_hex(), r.system_flags & 0xffff, r.user_flags),
                    )
                })
                .collect();
            assert_eq!(ours, ex, "{}", f.internal());
            let uids: Vec<u32> = idx.records.iter().map(|r| r.uid).collect();
            for (uid, m) in of.open_messages(&uids) {
                let rec = idx.records.iter().find(|r| r.uid == uid).unwrap();
                match m {
                    Ok(mut m) => {
                        let mut bytes = Vec::new();
                        m.file.read_to_end(&mut bytes).unwrap();
                        assert_eq!(Guid::of(&bytes), rec.guid, "{} uid {uid}", f.internal());
                        assert_eq!(m.stat.size, rec.size);
                        opened += 1;
                    }
                    Err(e) => assert!(rec.is_unlinked(), "{} uid {uid}: {e}", f.internal()),
                }
            }
            // No record: NotFound for that uid only.
            let r = of.open_messages(&[idx.header.last_uid + 1]);
            assert!(matches!(r[0].1, Err(SpoolError::NotFound { .. })));
            of.release();
        }
    }
    assert!(opened >= 80, "{opened}");
}

#[test]
fn open_descriptors_survive_release_and_unlink() {
    let sb = start("spool-fd", &[]);
    sb.create_user("erin", None).unwrap();
    let msg = b"Subject: keep me\r\n\r\nbody\r\n";
    let (_, uid) = sb.append("erin", None, &[], None, msg).unwrap();
    let sp = spool(&sb, Duration::from_secs(5));
    let ml = sp.mboxlist().unwrap();
    let f = sp.resolve_folder(&ml, "erin", "INBOX").unwrap();
    let of = sp.open_folder(&f, false).unwrap();
    let mut files = of.open_messages(&[uid]);
    of.release();
    let (_, m) = files.pop().unwrap();
    let mut m = m.unwrap();
    // Cyrus may now unlink it (here: we do, standing in for a repack).
    std::fs::remove_file(&m.path).unwrap();
    let mut bytes = Vec::new();
    m.file.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, msg);
    // Opening it now reports the vanished file for that uid.
    let of = sp.open_folder(&f, false).unwrap();
    let r = of.open_messages(&[uid]);
    let e = r[0].1.as_ref().unwrap_err();
    assert!(e.to_string().contains("vanished"), "{e}");
}

/// APPEND latencies (ms) of `n` appends on one connection.
/// APPEND `n` messages to `INBOX.Busy` of `user` in one IMAP session. Cyrus
/// takes the folder's locks for each; a lock of ours that excluded APPEND would
/// hang it until the client's timeout, and the unwrap fails the test.
fn append_n(sb: &Sandbox, user: &str, n: usize) {
    let mut c = sb.login(user).unwrap();
    for i in 0..n {
        let msg = format!("Subject: busy {i}\r\n\r\nx\r\n");
        c.append("INBOX.Busy", &[], None, msg.as_bytes()).unwrap();
    }
    c.logout().unwrap();
}

/// Structural, not timed (no wall-clock assertion): APPEND completes while this
/// very thread holds an open folder (so our hold cannot be something APPEND
/// waits for: it would deadlock), and every snapshot taken while a client
/// appends is self-consistent and never goes backwards. The writer waits after
/// each batch until a snapshot has seen it, so the snapshots interleave with
/// the appends however loaded the machine is.
#[test]
fn snapshots_stay_consistent_while_a_client_appends() {
    let sb = Arc::new(start("spool-busy", &[]));
    sb.create_user("fred", None).unwrap();
    sb.create_folder("fred", "Busy", None).unwrap();
    let sp = spool(&sb, Duration::from_secs(10));
    let ml = sp.mboxlist().unwrap();
    let f = sp.resolve_folder(&ml, "fred", "INBOX.Busy").unwrap();

    // Holding an open folder (the shared name lock only) does not hold APPEND up:
    // the appends run on this thread while it holds the folder.
    for _ in 0..4 {
        let held = sp.open_folder(&f, false).unwrap();
        append_n(&sb, "fred", 5);
        held.release();
    }
    let before = sp.open_folder(&f, true).unwrap().index_header().num_records;
    assert_eq!(
        before, 20,
        "every APPEND made while we held the folder landed"
    );

    const BATCHES: u32 = 10;
    const PER_BATCH: u32 = 10;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::atomic::AtomicU32::new(before));
    let writer = {
        let (sb, stop, seen) = (sb.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || {
            for b in 1..=BATCHES {
                append_n(&sb, "fred", PER_BATCH as usize);
                let want = before + b * PER_BATCH;
                // the reader must see this batch before the next one starts
                while seen.load(Ordering::SeqCst) < want && !stop.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
            }
        })
    };
    let total = before + BATCHES * PER_BATCH;
    let mut last = 0u32;
    let mut snaps = 0u32;
    let mut distinct = std::collections::BTreeSet::new();
    while last < total {
        if writer.is_finished() {
            stop.store(true, Ordering::SeqCst);
            break;
        }
        let of = sp.open_folder(&f, true).unwrap();
        let idx = index_of(&of);
        assert_eq!(idx.header.num_records as usize, idx.records.len());
        assert!(idx.header.num_records >= last, "records went backwards");
        assert_eq!(
            idx.records.last().map(|r| r.uid).unwrap_or(0),
            idx.header.last_uid
        );
        last = idx.header.num_records;
        distinct.insert(last);
        seen.store(last, Ordering::SeqCst);
        of.release();
        snaps += 1;
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    eprintln!(
        "{snaps} consistent snapshots while {} APPENDs ran; {} distinct counts seen",
        BATCHES * PER_BATCH,
        distinct.len()
    );
    assert_eq!(last, total, "the snapshots followed the writer to its end");
    assert!(
        distinct.len() >= BATCHES as usize,
        "a snapshot between every two batches: {distinct:?}"
    );
    // And once we hold nothing any more, APPEND goes through as before.
    append_n(&sb, "fred", 5);
    let of = sp.open_folder(&f, true).unwrap();
    assert_eq!(of.index_header().num_records, total + 5);
    of.release();
}

#[test]
fn hold_time_on_a_folder_of_a_few_thousand_messages() {
    let sb = start("spool-hold", &[]);
    sb.create_user("gina", None).unwrap();
    let n = 3000;
    let mut c = sb.login("gina").unwrap();
    for i in 0..n {
        let msg = format!("Subject: m{i}\r\nFrom: a@b\r\n\r\nbody {i}\r\n");
        c.append("INBOX", &["\\Seen"], None, msg.as_bytes())
            .unwrap();
    }
    c.logout().unwrap();
    let sp = spool(&sb, Duration::from_secs(5));
    let ml = sp.mboxlist().unwrap();
    let f = sp.resolve_folder(&ml, "gina", "INBOX").unwrap();
    for want_cache in [false, true] {
        let mut holds: Vec<Duration> = (0..200)
            .map(|_| {
                let of = sp.open_folder(&f, want_cache).unwrap();
                assert_eq!(of.records().len(), n);
                of.hold_time()
            })
            .collect();
        holds.sort();
        let (p50, p99, max) = (holds[100], holds[197], holds[199]);
        eprintln!(
            "open_folder hold (namespace+index), {n} messages, cache={want_cache}: \
             p50 {p50:?} p99 {p99:?} max {max:?} over 200 runs"
        );
        assert!(p99 < Duration::from_millis(500), "{p99:?}");
    }
    let st = sp.lock_stats();
    eprintln!("locker stats: {st:?}");
    assert_eq!(st.timeouts, 0);
}

/// Hold `path` with a classic POSIX exclusive lock (what Cyrus takes) from
/// another process; the child is killed on drop.
struct Holder(std::process::Child);

impl Holder {
    fn exclusive(path: &Path) -> Holder {
        let script = "import fcntl,sys,time\nf=open(sys.argv[1],'r+')\nfcntl.lockf(f,fcntl.LOCK_EX)\n\
                      print('locked',flush=True)\ntime.sleep(60)\n";
        let mut c = Command::new("python3")
            .args(["-c", script])
            .arg(path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(c.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        Holder(c)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn exclusive_namespace_lock_makes_open_folder_time_out() {
    let sb = start("spool-nslock", &[]);
    sb.create_user("hank", None).unwrap();
    sb.append("hank", None, &[], None, b"Subject: x\r\n\r\ny\r\n")
        .unwrap();
    let sp = spool(&sb, Duration::from_millis(400));
    let ml = sp.mboxlist().unwrap();
    let f = sp.resolve_folder(&ml, "hank", "INBOX").unwrap();
    sp.open_folder(&f, false).unwrap().release();
    let conf = load(Some(&sb.imapd_conf), None).unwrap();
    let ns = paths::lock_path(&conf, &paths::user_namespace_lockname("hank")).unwrap();
    let holder = Holder::exclusive(&ns);
    let t = Instant::now();
    let e = sp.open_folder(&f, false).unwrap_err();
    let took = t.elapsed();
    assert!(matches!(&e, SpoolError::Lock(l) if l.is_timeout()), "{e}");
    assert!(e.is_temporary());
    assert!(e.to_string().contains("*U*hank"), "{e}");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    drop(holder);
    sp.open_folder(&f, false).unwrap().release();
    assert_eq!(sp.lock_stats().timeouts, 1);
}

/// The folder with its files copied to `dir` (so damage stays out of Cyrus's way).
fn copied(f: &FolderRef, dir: &Path) -> FolderRef {
    let mut f = f.clone();
    let p = f.paths.as_mut().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    for path in [
        &mut p.header,
        &mut p.index,
        &mut p.cache,
        &mut p.annotations,
    ] {
        let to = dir.join(path.file_name().unwrap());
        std::fs::copy(&*path, &to).unwrap();
        *path = to;
    }
    f
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

#[test]
fn damaged_files_give_typed_errors_naming_the_file() {
    let sb = start("spool-damage", &[]);
    sb.create_user("ivy", None).unwrap();
    for i in 0..3 {
        let m = format!("Subject: {i}\r\n\r\nx\r\n");
        sb.append("ivy", None, &[], None, m.as_bytes()).unwrap();
    }
    let sp = spool(&sb, Duration::from_secs(5));
    let ml = sp.mboxlist().unwrap();
    let f = sp.resolve_folder(&ml, "ivy", "INBOX").unwrap();
    let scratch: PathBuf = sb.root.join("tmp/damage");
    // A copy reads fine.
    let good = copied(&f, &scratch.join("good"));
    sp.open_folder(&good, true).unwrap();
    // One byte of the second index record (v17: header 160, records 112 bytes).
    let bad = copied(&f, &scratch.join("index"));
    let at = 160 + 112 + 20;
    flip(&bad.paths.as_ref().unwrap().index, at);
    let e = sp.open_folder(&bad, false).unwrap_err();
    let SpoolError::Mailbox(m) = &e else {
        panic!("{e}")
    };
    assert_eq!(m.file, bad.paths.as_ref().unwrap().index);
    assert_eq!(
        (m.user.as_deref(), m.mailbox.as_str()),
        (Some("ivy"), "user.ivy")
    );
    // The offset is that of the record's CRC field, inside record 2.
    assert!((160 + 112..160 + 224).contains(&m.offset().unwrap()), "{e}");
    assert_eq!(e.kind(), cyrvault_host::ErrorKind::Data);
    let text = e.to_string();
    assert!(
        text.contains("record 2") && text.contains("user.ivy") && text.contains("cyrus.index"),
        "{text}"
    );
    // FMETA's streaming check of its copies finds it too, in memory or spilled.
    for sp in [sp.clone(), sp.clone().with_spill_threshold(0)] {
        let e = sp.open_folder_for(&bad, Load::Meta).unwrap_err();
        assert!(e.to_string().contains("record 2"), "{e}");
    }
    // The header CRC.
    let bad = copied(&f, &scratch.join("ihead"));
    flip(&bad.paths.as_ref().unwrap().index, 40);
    let e = sp.open_folder(&bad, false).unwrap_err();
    assert!(e.to_string().contains("cyrus.index header"), "{e}");
    // cyrus.header.
    let bad = copied(&f, &scratch.join("header"));
    flip(&bad.paths.as_ref().unwrap().header, 2);
    let e = sp.open_folder(&bad, false).unwrap_err();
    let SpoolError::Mailbox(m) = &e else {
        panic!("{e}")
    };
    assert_eq!(m.file, bad.paths.as_ref().unwrap().header);
    // A cache entry.
    let bad = copied(&f, &scratch.join("cache"));
    let cache = &bad.paths.as_ref().unwrap().cache;
    let len = std::fs::metadata(cache).unwrap().len() as usize;
    flip(cache, len - 3);
    let e = sp.open_folder(&bad, true).unwrap_err();
    assert!(e.to_string().contains("cyrus.cache"), "{e}");
    sp.open_folder(&bad, false).unwrap();
    // No lock is left behind by any failure: Cyrus can still write.
    sb.append("ivy", None, &[], None, b"Subject: after\r\n\r\nx\r\n")
        .unwrap();
}

#[test]
fn lock_files_we_create_belong_to_cyrus() {
    let sb = start("spool-owner", &[]);
    sb.create_user("jack", None).unwrap();
    sb.create_folder("jack", "Sub", None).unwrap();
    let conf = load(Some(&sb.imapd_conf), None).unwrap();
    let sp = spool(&sb, Duration::from_secs(5));
    let ml = sp.mboxlist().unwrap();
    let f = sp.resolve_folder(&ml, "jack", "INBOX.Sub").unwrap();
    let lock = paths::lock_path(&conf, &f.paths.as_ref().unwrap().lockname).unwrap();
    let ns = paths::lock_path(&conf, &paths::user_namespace_lockname("jack")).unwrap();
    // Nobody holds them now; make us the creator.
    let _ = std::fs::remove_file(&lock);
    let _ = std::fs::remove_file(&ns);
    sp.open_folder(&f, false).unwrap().release();
    let cyrus = nix::unistd::User::from_name("cyrus").unwrap().unwrap();
    for p in [&lock, &ns] {
        let md = std::fs::metadata(p).unwrap();
        assert_eq!(md.uid(), cyrus.uid.as_raw(), "{}", p.display());
    }
    // And Cyrus goes on using them.
    sb.append("jack", Some("Sub"), &[], None, b"Subject: x\r\n\r\ny\r\n")
        .unwrap();
}

/// jansson's own `json_dumps(JSON_INDENT(2))` of `[[entry, userid, value], ...]`,
/// through the system libjansson (the library Cyrus links) with python ctypes.
fn jansson_dump(rows: &[[String; 3]]) -> Vec<u8> {
    let script = r#"
import ctypes, json, sys
j = ctypes.CDLL("libjansson.so.4")
j.json_array.restype = ctypes.c_void_p
j.json_pack.restype = ctypes.c_void_p
j.json_dumps.restype = ctypes.c_void_p
j.json_dumps.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
j.json_array_append_new.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
arr = j.json_array()
for e, u, v in json.load(sys.stdin):
    p = j.json_pack(b"[sss]", *(ctypes.c_char_p(x.encode()) for x in (e, u, v)))
    j.json_array_append_new(arr, p)
sys.stdout.buffer.write(ctypes.string_at(j.json_dumps(arr, 2)))
"#;
    let mut c = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    serde_json::to_writer(c.stdin.take().unwrap(), rows).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn annotations_match_what_was_set_and_jansson_formatting() {
    use cyrvault::cyrus::annotations::OWNER_TOKEN;
    use cyrvault_host::imap::Arg;
    let sb = start("spool-annot", &[]);
    sb.create_user("kim", None).unwrap();
    sb.create_folder("kim", "Notes", None).unwrap();
    for i in 0..2 {
        let m = format!("Subject: {i}\r\n\r\nx\r\n");
        sb.append("kim", Some("Notes"), &[], None, m.as_bytes())
            .unwrap();
    }
    let mut c = sb.login("kim").unwrap();
    c.run(&[
        Arg::Atom("SETMETADATA"),
        Arg::Str(b"INBOX.Notes"),
        Arg::Atom(
            "(/private/comment \"mine \\\"quoted\\\" caf\u{e9}\" /shared/comment \"for all\")",
        ),
    ])
    .unwrap();
    let per_message = c.has_capability("ANNOTATE-EXPERIMENT-1");
    if per_message {
        c.select("INBOX.Notes").unwrap();
        c.run(&[Arg::Atom(
            "UID STORE 2 ANNOTATION (/comment (value.shared \"msg note\"))",
        )])
        .unwrap();
    }
    c.logout().unwrap();

    let sp = spool(&sb, Duration::from_secs(5));
    let ml = sp.mboxlist().unwrap();
    let f = sp.resolve_folder(&ml, "kim", "INBOX.Notes").unwrap();
    let all = sp.global_annotations().unwrap();
    let json = sp.mailbox_annotations(&f, &all).expect("annotations");
    let rows: Vec<[String; 3]> = serde_json::from_slice(&json).unwrap();
    eprintln!(
        "mailbox_annotations of INBOX.Notes:\n{}",
        String::from_utf8_lossy(&json)
    );
    assert!(
        rows.contains(&["/comment".into(), "".into(), "for all".into()]),
        "{rows:?}"
    );
    assert!(
        rows.contains(&[
            "/comment".into(),
            "kim".into(),
            "mine \"quoted\" caf\u{e9}".into()
        ]),
        "{rows:?}"
    );
    // The owner's private annotation is stored under the owner token (§5.1).
    let raw: Vec<_> = all
        .iter()
        .filter(|a| a.mailbox_id == f.uniqueid().as_bytes())
        .collect();
    assert!(
        raw.iter()
            .any(|a| a.userid.as_deref() == Some(OWNER_TOKEN.as_bytes())),
        "{raw:?}"
    );
    assert!(raw.iter().all(|a| a.flags == 0), "{raw:?}");
    // The full x86_64 value layout of reference §5.1: 4-byte big-endian length +
    // 4 zero bytes, value, NUL, "text/plain" NUL, 8-byte modifiedsince, 8-byte
    // modseq, flags byte (the db is idle here, so a plain read is fine).
    let db = std::fs::read(sb.config_dir().join("annotations.db")).unwrap();
    for (k, v) in cyrvault::cyrus::twoskip::read_all(&db).unwrap() {
        if k.starts_with(f.uniqueid().as_bytes()) {
            let len = u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize;
            assert_eq!(&v[4..8], &[0; 4]);
            assert_eq!(&v[8 + len..8 + len + 12], b"\0text/plain\0");
            assert_eq!(v.len(), 8 + len + 12 + 8 + 8 + 1, "{v:?}");
        }
    }
    // Byte for byte what jansson prints for the same rows.
    assert_eq!(
        String::from_utf8(jansson_dump(&rows)).unwrap(),
        String::from_utf8(json).unwrap()
    );
    // The INBOX has none.
    let inbox = sp.resolve_folder(&ml, "kim", "INBOX").unwrap();
    assert_eq!(sp.mailbox_annotations(&inbox, &all), None);
    // Per-message annotations come with the snapshot.
    let of = sp.open_folder(&f, false).unwrap();
    assert!(of.annotations_file().is_some());
    if per_message {
        let a = of
            .annotations()
            .iter()
            .find(|a| a.entry == b"/comment")
            .unwrap();
        assert_eq!((a.uid, a.value.as_slice()), (2, &b"msg note"[..]));
        assert_eq!(a.userid.as_deref(), Some(&b""[..]));
    } else {
        crate::prerequisite::missing(
            "annotations_match_what_was_set_and_jansson_formatting",
            "the IMAP server's ANNOTATE-EXPERIMENT-1 capability",
        );
    }
}

#[test]
fn user_files_seen_sub_and_sieve() {
    use cyrvault::cyrus::{flat, twoskip};
    let sb = start("spool-user", &[]);
    for u in ["lea", "max"] {
        sb.create_user(u, None).unwrap();
    }
    sb.create_folder("lea", "Shared", None).unwrap();
    sb.append("lea", Some("Shared"), &[], None, b"Subject: s\r\n\r\nx\r\n")
        .unwrap();
    let mut admin = sb.admin().unwrap();
    admin.setacl("user.lea.Shared", "max", "lrs").unwrap();
    admin.logout().unwrap();
    // max reads lea's folder: his seen db gets an entry for it. He subscribes too.
    let mut c = sb.login("max").unwrap();
    c.select("user.lea.Shared").unwrap();
    c.uid_store("1", "+FLAGS", &["\\Seen"]).unwrap();
    c.subscribe("user.lea.Shared").unwrap();
    c.logout().unwrap();
    // A sieve script compiled by Cyrus's sievec, made active the way Cyrus does.
    let pj: serde_json::Value =
        serde_json::from_str(&sb.tool_ok("mbpath", &["-j", "user.max"]).unwrap()).unwrap();
    let sieve_dir = PathBuf::from(pj["user"]["sieve"].as_str().unwrap());
    std::fs::create_dir_all(&sieve_dir).unwrap();
    std::fs::write(sieve_dir.join("main.script"), "keep;\r\n").unwrap();
    sb.tool_ok(
        "sievec",
        &[
            sieve_dir.join("main.script").to_str().unwrap(),
            sieve_dir.join("main.bc").to_str().unwrap(),
        ],
    )
    .unwrap();
    std::os::unix::fs::symlink("main.bc", sieve_dir.join("defaultbc")).unwrap();

    let sp = spool(&sb, Duration::from_secs(5));
    let ml = sp.mboxlist().unwrap();
    let files = sp.user_files("max", &ml).unwrap();
    let seen = files.seen.as_ref().expect("seen db");
    assert_eq!(
        seen.path,
        PathBuf::from(pj["user"]["seen"].as_str().unwrap())
    );
    assert_eq!(
        files.sub.as_ref().unwrap().path,
        PathBuf::from(pj["user"]["sub"].as_str().unwrap())
    );
    assert_eq!(files.sieve_dir.as_deref(), Some(sieve_dir.as_path()));
    let copy = sp.read_user_files("max", &files).unwrap();
    let seen = twoskip::read_all(&copy.seen.as_ref().unwrap().bytes).unwrap();
    let shared = sp.resolve_folder(&ml, "lea", "INBOX.Shared").unwrap();
    let (k, v) = &seen[0];
    assert_eq!(k.as_slice(), shared.uniqueid().as_bytes());
    assert!(v.starts_with(b"1 "), "{}", String::from_utf8_lossy(v));
    let subs = flat::parse_flat(&copy.sub.as_ref().unwrap().bytes).unwrap();
    // 3.6 keys the subscriptions by N + dbname, next to a version record.
    assert!(
        subs.iter().any(|(k, _)| k == b"Nuser\x1flea\x1fShared"),
        "{subs:?}"
    );
    let names: Vec<&str> = copy.sieve.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["main.bc", "main.script"]);
    assert_eq!(copy.active_sieve.as_deref(), Some("main.bc"));
    // lea has no seen db, a legacy-free layout, and no sieve directory.
    let lea = sp.user_files("lea", &ml).unwrap();
    assert!(lea.seen.is_none() && lea.sieve_dir.is_none());
    // An exclusive namespace lock (a Cyrus writer for max) makes the copy wait
    // and then fail, typed and temporary.
    let conf = load(Some(&sb.imapd_conf), None).unwrap();
    let ns = paths::lock_path(&conf, &paths::user_namespace_lockname("max")).unwrap();
    let _h = Holder::exclusive(&ns);
    let sp = spool(&sb, Duration::from_millis(200));
    let e = sp.read_user_files("max", &files).unwrap_err();
    assert!(e.is_temporary(), "{e}");
}
