//! Churn: four IMAP clients APPEND, STORE, EXPUNGE and RENAME in one user's folders
//! while backups run back to back (about 40 s; `CYRVAULT_CHURN_SECS` for longer). Runs
//! may leave folders out (renamed or changed while read: temporary, carried forward),
//! never damage and never a record without its message. Afterwards every GUID that
//! any run lists reads back with `cat`, verify is green, and a final backup equals what
//! IMAP shows (UID, GUID, flags per folder), and so does its restore to a Maildir.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cyrvault::cyrus::Guid;
use cyrvault_host::backup::{self, BackupOptions, FailureClass};
use cyrvault_host::imap::Client;
use cyrvault_host::model::RecordState;
use cyrvault_host::restore::export::maildir_flags;
use cyrvault_host::vault::Vault;
use cyrvault_testkit::sandbox::MailGen;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{env, nothing_lost};

const USER: &str = "chen";
const FOLDERS: [&str; 4] = ["A", "B", "C", "D"];

/// What the four clients did.
#[derive(Default)]
struct Ops {
    append: AtomicU64,
    store: AtomicU64,
    expunge: AtomicU64,
    rename: AtomicU64,
    refused: AtomicU64,
}

fn connect(imap: SocketAddr) -> Client {
    let mut c = Client::connect(imap).unwrap();
    c.login(USER, "pw").unwrap();
    c
}

/// The user's selectable folders, as IMAP lists them.
fn folders(c: &mut Client) -> cyrvault_host::Result<Vec<String>> {
    Ok(c.list("", "INBOX*")?
        .into_iter()
        .filter(|l| !l.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Noselect")))
        .map(|l| l.name)
        .collect())
}

/// One client's loop: APPEND (40%), STORE (30%), EXPUNGE (20%), RENAME (10%, clients 0
/// and 1 only, a folder `X` to `X-r` and back). Refusals (a folder renamed under us)
/// are counted and the loop goes on.
fn client(k: u64, imap: SocketAddr, stop: &AtomicBool, ops: &Ops) {
    let mut c = connect(imap);
    let mut rng = SmallRng::seed_from_u64(k);
    let mut mail = MailGen::new(1000 + k).with_max_size(24_000);
    let flags = ["\\Flagged", "\\Seen", "\\Answered", "$Work"];
    while !stop.load(Ordering::SeqCst) {
        let r = (|| -> cyrvault_host::Result<()> {
            let all = folders(&mut c)?;
            let f = all[rng.gen_range(0..all.len())].clone();
            match rng.gen_range(0..10) {
                0..=3 => {
                    let m = mail.message();
                    let fl: Vec<&str> = flags
                        .iter()
                        .copied()
                        .filter(|_| rng.gen_bool(0.3))
                        .collect();
                    c.append(&f, &fl, Some(m.date), &m.bytes)?;
                    ops.append.fetch_add(1, Ordering::Relaxed);
                }
                4..=8 => {
                    let info = c.select(&f)?;
                    if info.exists > 0 {
                        let uids: Vec<u32> = c
                            .uid_fetch("1:*", "(UID)")?
                            .into_iter()
                            .filter_map(|x| x.uid)
                            .collect();
                        if let Some(&uid) = uids.get(rng.gen_range(0..uids.len().max(1))) {
                            let set = uid.to_string();
                            if rng.gen_range(0..10) < 7 {
                                let op = if rng.gen_bool(0.5) {
                                    "+FLAGS"
                                } else {
                                    "-FLAGS"
                                };
                                let fl = flags[rng.gen_range(0..flags.len())];
                                c.uid_store(&set, op, &[fl])?;
                                ops.store.fetch_add(1, Ordering::Relaxed);
                            } else {
                                c.uid_store(&set, "+FLAGS", &["\\Deleted"])?;
                                c.expunge()?;
                                ops.expunge.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    c.close()?;
                }
                _ if k < 2 && f != "INBOX" => {
                    let to = match f.strip_suffix("-r") {
                        Some(base) => base.to_string(),
                        None => format!("{f}-r"),
                    };
                    c.rename(&f, &to)?;
                    ops.rename.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            Ok(())
        })();
        if let Err(err) = r {
            ops.refused.fetch_add(1, Ordering::Relaxed);
            if !matches!(
                err,
                cyrvault_host::Error::Service(cyrvault::Error::Imap { .. })
            ) || c.noop().is_err()
            {
                c = connect(imap);
            }
        }
        std::thread::sleep(Duration::from_millis(15));
    }
    let _ = c.logout();
}

/// What IMAP shows now: folder name → UID → (GUID, system flags, keywords).
type Shown = BTreeMap<String, BTreeMap<u32, (Guid, u32, Vec<String>)>>;

fn imap_state(imap: SocketAddr) -> Shown {
    let mut c = connect(imap);
    let mut out = Shown::new();
    for f in folders(&mut c).unwrap() {
        c.examine(&f).unwrap();
        let mut msgs = BTreeMap::new();
        for x in c
            .uid_fetch("1:*", "(UID FLAGS DIGEST.SHA1)")
            .unwrap_or_default()
        {
            let (Some(uid), Some(g)) = (x.uid, x.digest_sha1.as_deref().and_then(Guid::from_hex))
            else {
                continue;
            };
            let mut sys = 0u32;
            let mut kw = Vec::new();
            for fl in x.flags.unwrap_or_default() {
                match fl.to_ascii_lowercase().as_str() {
                    "\\answered" => sys |= 1,
                    "\\flagged" => sys |= 2,
                    "\\deleted" => sys |= 4,
                    "\\draft" => sys |= 8,
                    "\\seen" => sys |= 16,
                    "\\recent" => {}
                    _ => kw.push(fl),
                }
            }
            kw.sort();
            msgs.insert(uid, (g, sys, kw));
        }
        c.close().unwrap();
        out.insert(f, msgs);
    }
    c.logout().unwrap();
    out
}

/// Per Maildir folder: the multiset of (SHA-1 of the file, Maildir flags).
fn maildir_state(root: &Path) -> BTreeMap<String, Vec<(Guid, String)>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![("INBOX".to_string(), root.to_path_buf())];
    for e in std::fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(sub) = name.strip_prefix('.') {
            dirs.push((format!("INBOX.{sub}"), e.path()));
        }
    }
    for (name, dir) in dirs {
        let mut v = Vec::new();
        for e in std::fs::read_dir(dir.join("cur")).unwrap() {
            let p = e.unwrap().path();
            let fname = p.file_name().unwrap().to_string_lossy().into_owned();
            let flags = fname.rsplit_once(":2,").map_or("", |x| x.1).to_string();
            v.push((Guid::of(&std::fs::read(&p).unwrap()), flags));
        }
        v.sort();
        out.insert(name, v);
    }
    out
}

#[test]
fn churn_while_backups_run_back_to_back() {
    let secs: u64 = std::env::var("CYRVAULT_CHURN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let e = env("churn", false);
    e.sb.create_user(USER, None).unwrap();
    let mut mail = MailGen::new(77).with_max_size(24_000);
    for f in FOLDERS {
        e.sb.create_folder(USER, f, None).unwrap();
        for _ in 0..5 {
            let m = mail.message();
            e.sb.append(USER, Some(f), &[], Some(m.date), &m.bytes)
                .unwrap();
        }
    }
    let stop = AtomicBool::new(false);
    let ops = Ops::default();
    let imap = e.sb.imap_addr;
    let v = Vault::open(&e.vault).unwrap();
    let mut runs = 0u32;
    let mut failed_folders = 0usize;
    let mut failed_runs = 0u32;
    std::thread::scope(|s| {
        for k in 0..4 {
            let (stop, ops) = (&stop, &ops);
            s.spawn(move || client(k, imap, stop, ops));
        }
        let t0 = Instant::now();
        let mut server = e.server();
        while t0.elapsed() < Duration::from_secs(secs) {
            match backup::backup_user(&mut server, &v, USER, &BackupOptions::default()) {
                Ok(rep) => {
                    runs += 1;
                    for f in &rep.folders_failed {
                        assert_eq!(f.class, FailureClass::Temporary, "{f}");
                    }
                    assert!(rep.damage.is_empty(), "{:?}", rep.damage);
                    failed_folders += rep.folders_failed.len();
                }
                Err(err) => {
                    assert!(err.is_temporary(), "run failed: {err}");
                    failed_runs += 1;
                    server = e.server();
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
    });
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    eprintln!(
        "churn {secs} s: {runs} runs ({failed_runs} failed whole, {failed_folders} folders left \
         out); IMAP: {} appends, {} stores, {} expunges, {} renames, {} refused",
        n(&ops.append),
        n(&ops.store),
        n(&ops.expunge),
        n(&ops.rename),
        n(&ops.refused)
    );
    assert!(runs >= 5, "only {runs} runs");
    assert!(n(&ops.rename) > 0 && n(&ops.expunge) > 0 && n(&ops.append) > 20);

    // Every GUID any run lists reads back; verify is green.
    let read = nothing_lost(&e, USER, 20);
    eprintln!("{read} GUIDs listed by {runs} runs read back");

    // Quiet now: a final backup is green and equals what IMAP shows.
    let fin = e.backup(USER);
    assert!(!fin.has_problems(), "{fin:#?}");
    let shown = imap_state(imap);
    let cat = e.catalog(USER);
    let mut ours: Shown = BTreeMap::new();
    for f in cat
        .folders_at(fin.run)
        .unwrap()
        .into_iter()
        .filter(|f| !f.deleted)
    {
        let recs: BTreeMap<u32, (Guid, u32, Vec<String>)> = cat
            .records_at(&f.uniqueid, fin.run)
            .unwrap()
            .into_iter()
            .filter(|r| !r.is_expunged())
            .map(|r| (r.uid, (r.guid, r.system_flags & 31, r.keywords)))
            .collect();
        ours.insert(f.name, recs);
    }
    assert_eq!(ours, shown, "the final backup differs from IMAP");
    drop(cat);

    // Its restore to files: per folder, the same messages with the same flags.
    let out = e.dir.join("restored");
    let o = e.cli(&[
        "restore",
        USER,
        "--to-maildir",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{o:?}");
    let want: BTreeMap<String, Vec<(Guid, String)>> = shown
        .iter()
        .map(|(f, msgs)| {
            let mut v: Vec<(Guid, String)> = msgs
                .values()
                .map(|(g, sys, kw)| {
                    let r = RecordState {
                        uid: 0,
                        guid: *g,
                        system_flags: *sys,
                        keywords: kw.clone(),
                        internaldate: 0,
                        size: 0,
                        modseq: 0,
                        last_updated: 0,
                        savedate: 0,
                    };
                    (*g, maildir_flags(&r))
                })
                .collect();
            v.sort();
            (f.clone(), v)
        })
        .collect();
    let got = maildir_state(&out);
    let folders_seen: BTreeSet<&String> = want.keys().collect();
    assert_eq!(got.keys().collect::<BTreeSet<_>>(), folders_seen);
    assert_eq!(got, want, "the restore differs from IMAP");
}
