//! An index written back into a live mailbox under Cyrus's exclusive locks is
//! byte-identical, still served unchanged by imapd, and clean for `chk_cyrus`.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use cyrvault::cyrus::header;
use cyrvault::cyrus::index::{FLAG_FLAGGED, parse_index, sync_crc_basic, write_index};
use cyrvault::cyrus::paths;
use cyrvault::lock::{LockMode, Locker};
use cyrvault_testkit::sandbox::{PopulatePlan, Sandbox, make_history, populate};

use super::{conf, start};

/// Replace `dir/cyrus.index` with `bytes` the way cyrus-reference.md §13 says is
/// safe: user namespace EXCLUSIVE → mailbox name lock EXCLUSIVE → cyrus.index
/// EXCLUSIVE (Cyrus's order), then `cyrus.index.NEW` with the old file's owner and
/// mode, fsync, rename over, fsync the directory. Nobody can have the old index
/// open meanwhile: every Cyrus reader holds the name lock at least shared.
fn replace_index(locker: &Locker, user: &str, lockname: &str, dir: &Path, bytes: &[u8]) {
    try_replace_index(locker, user, lockname, dir, bytes).unwrap();
}

/// [`replace_index`], failing when a lock cannot be had within the locker's timeout.
fn try_replace_index(
    locker: &Locker,
    user: &str,
    lockname: &str,
    dir: &Path,
    bytes: &[u8],
) -> cyrvault_host::Result<()> {
    let index = dir.join("cyrus.index");
    let mut set = locker.lock_set();
    set.namespace(user, LockMode::Exclusive)?;
    set.mailbox_name(lockname, LockMode::Exclusive)?;
    set.index(&index, LockMode::Exclusive)?;
    let old = std::fs::metadata(&index).unwrap();
    let new = dir.join("cyrus.index.NEW");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(old.mode() & 0o7777)
        .open(&new)
        .unwrap();
    std::os::unix::fs::fchown(&f, Some(old.uid()), Some(old.gid())).unwrap();
    f.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o7777))
        .unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::rename(&new, &index).unwrap();
    std::fs::File::open(dir).unwrap().sync_all().unwrap();
    set.release_all();
    Ok(())
}

/// Command lines of the processes that hold a classic (POSIX or flock) lock on
/// one of `files` now, from /proc/locks (our OFD locks show pid -1 there).
fn lock_holders(files: &[&Path]) -> Vec<String> {
    // /proc/locks names a file as <major hex>:<minor hex>:<inode decimal>
    let ids: Vec<String> = files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).unwrap();
            let dev = m.dev();
            let (maj, min) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
            format!("{maj:02x}:{min:02x}:{}", m.ino())
        })
        .collect();
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .filter_map(|l| {
            // "1: POSIX ADVISORY WRITE <pid> <maj>:<min>:<inode> 0 EOF" ("->" marks a waiter)
            let f: Vec<&str> = l.split_whitespace().collect();
            let at = if f.get(1) == Some(&"->") { 5 } else { 4 };
            if !ids.iter().any(|id| f.get(at + 1) == Some(&id.as_str())) {
                return None;
            }
            let cmd = std::fs::read(format!("/proc/{}/cmdline", f.get(at)?)).ok()?;
            Some(String::from_utf8_lossy(&cmd).replace('\0', " "))
        })
        .collect()
}

/// What imapd says about a mailbox: SELECT, then every message's flags, date,
/// size, modseq and bytes.
fn imap_view(
    sb: &Sandbox,
    user: &str,
) -> (
    cyrvault_host::imap::SelectInfo,
    Vec<cyrvault_host::imap::FetchItem>,
) {
    let mut c = sb.login(user).unwrap();
    let info = c.select("INBOX").unwrap();
    let msgs = c
        .uid_fetch(
            "1:*",
            "(UID FLAGS INTERNALDATE RFC822.SIZE MODSEQ BODY.PEEK[])",
        )
        .unwrap();
    c.logout().unwrap();
    (info, msgs)
}

/// `chk_cyrus -P <partition>` (Cyrus 3.6 runs `mailbox_reconstruct` without
/// changes on every mailbox of the partition and prints each problem it would
/// fix on stdout; it exits 0 either way). Returns (stdout, stderr).
fn chk_cyrus(sb: &Sandbox, partition: &str) -> (String, String) {
    let out = sb.tool("chk_cyrus", &["-P", partition]).unwrap();
    assert!(out.status.success(), "chk_cyrus: {}", out.status);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn index_written_back_is_identical_and_still_served() {
    let sb = start("found-writeback");
    let user = "dora";
    let pop = populate(
        &sb,
        &PopulatePlan {
            users: vec![user.into()],
            folders_per_user: 0,
            messages: 40,
            seed: 99,
            max_message_size: 16 * 1024,
            fixtures: false,
            ..PopulatePlan::default()
        },
    )
    .unwrap();
    let hist = make_history(&sb, &pop, 5).unwrap();
    assert!(!hist.expunged.is_empty());
    let conf = conf(&sb);
    let locker = Locker::new(&conf, Duration::from_secs(10)).unwrap();
    let mbox = sb.mailbox_name(user, None);
    let entry = sb.ctl_mboxlist_dump().unwrap()[&mbox].clone();
    let partition = entry["partition"].as_str().unwrap().to_string();
    let lockname = paths::mailbox_lockname(&mbox, entry["uniqueid"].as_str(), false).unwrap();
    let dir = sb.mbpath(&mbox).unwrap();
    let index = dir.join("cyrus.index");

    // A first SELECT settles \Recent (imapd records it in the index header).
    imap_view(&sb, user);
    let before = imap_view(&sb, user);
    assert!(before.0.exists > 20 && before.1.len() == before.0.exists as usize);
    let ex_before = sb.mbexamine(&mbox).unwrap();
    let bytes = std::fs::read(&index).unwrap();
    let parsed = parse_index(&bytes).unwrap();
    assert!(parsed.records.iter().any(|r| r.is_expunged()));
    let written = write_index(&parsed);
    assert_eq!(written, bytes, "write_index(parse_index(b)) != b");
    let (out, err) = chk_cyrus(&sb, &partition);
    assert!(out.is_empty(), "chk_cyrus before: {out}");
    assert!(err.contains(&format!("checking: {mbox}")), "{err}");

    let old = std::fs::metadata(&index).unwrap();
    let t = Instant::now();
    replace_index(&locker, user, &lockname, &dir, &written);
    eprintln!(
        "write-back of {} bytes under exclusive locks: {:?}",
        written.len(),
        t.elapsed()
    );
    let new = std::fs::metadata(&index).unwrap();
    assert_ne!(
        new.ino(),
        old.ino(),
        "the index was replaced, not rewritten"
    );
    assert_eq!(
        (new.uid(), new.gid(), new.mode()),
        (old.uid(), old.gid(), old.mode())
    );
    let cyrus = nix::unistd::User::from_name("cyrus").unwrap().unwrap();
    let mail = nix::unistd::Group::from_name("mail").unwrap().unwrap();
    assert_eq!(
        (new.uid(), new.gid()),
        (cyrus.uid.as_raw(), mail.gid.as_raw())
    );
    assert!(!dir.join("cyrus.index.NEW").exists());
    assert_eq!(std::fs::read(&index).unwrap(), bytes);

    // imapd serves the mailbox exactly as before; Cyrus's tools agree.
    let after = imap_view(&sb, user);
    assert_eq!(after.0, before.0, "SELECT differs after write-back");
    assert_eq!(after.1, before.1, "UID FETCH differs after write-back");
    assert_eq!(sb.mbexamine(&mbox).unwrap(), ex_before);
    let (out, err) = chk_cyrus(&sb, &partition);
    assert!(out.is_empty(), "chk_cyrus after write-back: {out}");
    assert!(err.contains(&format!("checking: {mbox}")), "{err}");
    assert_eq!(
        std::fs::read(&index).unwrap(),
        bytes,
        "imapd rewrote the index"
    );

    // Control: chk_cyrus does see a wrong index written the same way (exists + 1,
    // CRC fixed), so its silence above means something. Then put the real one back.
    let mut wrong = parsed.clone();
    wrong.header.exists += 1;
    replace_index(&locker, user, &lockname, &dir, &write_index(&wrong));
    let (out, _) = chk_cyrus(&sb, &partition);
    assert!(
        out.contains(&format!("{mbox}: updating exists")),
        "chk_cyrus missed it: {out:?}"
    );
    replace_index(&locker, user, &lockname, &dir, &bytes);
    assert_eq!(chk_cyrus(&sb, &partition).0, "");
    assert_eq!(imap_view(&sb, user), after);

    // A real change written by us: \Flagged on one message, with a new modseq, the
    // header's counts, highestmodseq and sync CRC updated as Cyrus would. imapd
    // serves it and chk_cyrus finds nothing to fix. Without the sync CRC update
    // chk_cyrus objects (second control).
    let names = header::parse_header(&std::fs::read(dir.join("cyrus.header")).unwrap())
        .unwrap()
        .user_flags;
    let mut changed = parsed.clone();
    let modseq = changed.header.highestmodseq + 1;
    let rec = changed
        .records
        .iter_mut()
        .find(|r| !r.is_expunged() && r.system_flags & FLAG_FLAGGED == 0)
        .expect("an unflagged message");
    rec.system_flags |= FLAG_FLAGGED;
    rec.modseq = modseq;
    let uid = rec.uid;
    changed.header.highestmodseq = modseq;
    changed.header.flagged += 1;
    let stale_sync = write_index(&changed);
    changed.header.sync_crc_basic = sync_crc_basic(&changed.records, &names);
    assert_ne!(changed.header.sync_crc_basic, parsed.header.sync_crc_basic);
    replace_index(&locker, user, &lockname, &dir, &stale_sync);
    let (out, _) = chk_cyrus(&sb, &partition);
    assert!(
        out.contains(&format!("{mbox}: ")),
        "stale sync CRC not seen: {out:?}"
    );
    eprintln!("chk_cyrus on a stale sync CRC: {}", out.trim());
    replace_index(&locker, user, &lockname, &dir, &write_index(&changed));
    let (out, _) = chk_cyrus(&sb, &partition);
    assert!(out.is_empty(), "chk_cyrus after our change: {out}");
    let (info, msgs) = imap_view(&sb, user);
    assert_eq!(info.highestmodseq, modseq);
    assert_eq!(info.exists, before.0.exists);
    for (m, b) in msgs.iter().zip(&before.1) {
        let flags = m.flags.clone().unwrap();
        if m.uid == Some(uid) {
            assert!(flags.iter().any(|f| f == "\\Flagged"), "{flags:?}");
            assert_eq!(m.modseq, Some(modseq));
        } else {
            assert_eq!(m, b);
        }
    }
    let st = locker.stats();
    assert_eq!(st.count, 15, "{st:?}");

    // A client that has the mailbox SELECTed does not stop the write: an idle
    // 3.6.1 imapd holds no lock at all between commands (seen in /proc/locks; its
    // command loop calls `index_release`, imap/index.c, which `mailbox_close`s and
    // so drops the name lock; not the long-held shared name lock that
    // cyrus-reference.md §9.4 describes). Its session keeps serving the same data
    // across an identical replacement of the index.
    let mut c = sb.login(user).unwrap();
    c.select("INBOX").unwrap();
    let items = "(UID FLAGS INTERNALDATE RFC822.SIZE MODSEQ BODY.PEEK[])";
    let seen = c.uid_fetch("1:*", items).unwrap();
    let name_file = paths::lock_path(&conf, &lockname).unwrap();
    let ns_file = paths::lock_path(&conf, &paths::user_namespace_lockname(user)).unwrap();
    let pidfile = sb.root.join("run/master.pid"); // master's lock: the scan works
    let held = lock_holders(&[&name_file, &ns_file, &index, &pidfile]);
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(held[0].contains("master"), "{held:?}");
    let quick = Locker::new(&conf, Duration::from_millis(700)).unwrap();
    let now = std::fs::read(&index).unwrap();
    try_replace_index(&quick, user, &lockname, &dir, &now).unwrap();
    c.noop().unwrap();
    assert_eq!(c.uid_fetch("1:*", items).unwrap(), seen);
    c.logout().unwrap();
    // and back to the original index, with nobody connected
    replace_index(&locker, user, &lockname, &dir, &bytes);
    assert_eq!(imap_view(&sb, user), after);
    assert_eq!(chk_cyrus(&sb, &partition).0, "");
}
