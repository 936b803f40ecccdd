//! `lock.rs` against real Cyrus 3.6 tools on a scratch configuration (no master):
//! our OFD locks must make `mbexamine` (shared namespace lock) and `reconstruct`
//! (exclusive namespace and index locks) wait exactly when Cyrus would wait for
//! another Cyrus process, our timeouts must fire when Cyrus holds a lock, lock files
//! we create must belong to cyrus:mail, and a replaced file must be re-opened.
//! Every wait is bounded; children still running at the end are killed.

use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cyrvault::cyrus::paths::{self, MetaFile};
use cyrvault::lock::{LockMode, Locker, lock_file};

use crate::cyrus_paths::{Mb, Scratch, cyrus_ids};

const X_ID: &str = "5a1b2c3d-0000-4000-8000-0000000000aa";

/// A scratch Cyrus with `user.x` (UUID dirs) and `user.y` (legacy dirs), both
/// reconstructed so that their index files exist.
fn setup(tag: &str) -> Scratch {
    let s = Scratch::new(tag, "hashimapspool: yes\n");
    s.create_mailboxes(&[
        Mb {
            name: "user.x",
            partition: "default",
            uniqueid: X_ID,
            legacy: false,
            owner: Some("x"),
            inbox: None,
        },
        Mb {
            name: "user.y",
            partition: "default",
            uniqueid: "6b1b2c3d-0000-4000-8000-0000000000bb",
            legacy: true,
            owner: Some("y"),
            inbox: None,
        },
    ]);
    s.ok("reconstruct", &["-f", "user.x"]);
    s.ok("reconstruct", &["-f", "user.y"]);
    s
}

/// A child that is killed if the test ends (or panics) while it still runs.
struct Kid(Child, &'static str);

impl Kid {
    fn spawn(mut c: Command, what: &'static str) -> Kid {
        Kid(
            c.stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
            what,
        )
    }

    /// Still running after `d`?
    fn still_running_after(&mut self, d: Duration) -> bool {
        std::thread::sleep(d);
        self.0.try_wait().unwrap().is_none()
    }

    /// Wait at most `d` for it to exit; returns (success, elapsed).
    fn finish_within(&mut self, d: Duration) -> (bool, Duration) {
        let t = Instant::now();
        while t.elapsed() < d {
            if let Some(st) = self.0.try_wait().unwrap() {
                return (st.success(), t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("{} did not finish within {d:?}", self.1);
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn locker(s: &Scratch, timeout: Duration) -> Locker {
    Locker::new(&s.conf, timeout).unwrap()
}

fn index_of_x(s: &Scratch) -> std::path::PathBuf {
    paths::mailbox_meta_path(
        &s.conf,
        "default",
        "user.x",
        Some(X_ID),
        false,
        MetaFile::Index,
    )
    .unwrap()
}

const WAIT: Duration = Duration::from_millis(300);
const BOUND: Duration = Duration::from_secs(20);

#[test]
fn exclusive_namespace_lock_blocks_mbexamine() {
    let s = setup("lock-nsx");
    let l = locker(&s, Duration::from_secs(2));
    let ns = l.user_namespace("x", LockMode::Exclusive).unwrap();
    let mut kid = Kid::spawn(s.cmd("mbexamine", &["user.x"]), "mbexamine");
    assert!(
        kid.still_running_after(WAIT),
        "mbexamine did not wait for our exclusive namespace lock"
    );
    drop(ns);
    let (ok, _) = kid.finish_within(BOUND);
    assert!(ok, "mbexamine failed after we released");
}

#[test]
fn shared_namespace_lock_lets_readers_in_and_blocks_writers() {
    let s = setup("lock-nss");
    let l = locker(&s, Duration::from_secs(2));
    let ns = l.user_namespace("x", LockMode::Shared).unwrap();
    let mut ex = Kid::spawn(s.cmd("mbexamine", &["user.x"]), "mbexamine");
    let (ok, took) = ex.finish_within(BOUND);
    assert!(ok, "mbexamine failed under our shared lock");
    assert!(took < Duration::from_secs(5), "mbexamine waited {took:?}");
    let mut rc = Kid::spawn(s.cmd("reconstruct", &["user.x"]), "reconstruct");
    assert!(
        rc.still_running_after(WAIT),
        "reconstruct did not wait for our shared namespace lock"
    );
    // While reconstruct holds... nothing yet: it waits for the namespace lock.
    drop(ns);
    let (ok, _) = rc.finish_within(BOUND);
    assert!(ok, "reconstruct failed after we released");
    assert_eq!(l.stats().count, 1);
}

#[test]
fn shared_index_lock_blocks_reconstruct_and_cyrus_blocks_us() {
    let s = setup("lock-idx");
    let l = locker(&s, Duration::from_secs(2));
    let idx = index_of_x(&s);
    let il = l.index(&idx, LockMode::Shared).unwrap();
    let mut rc = Kid::spawn(s.cmd("reconstruct", &["user.x"]), "reconstruct");
    assert!(
        rc.still_running_after(WAIT),
        "reconstruct did not wait for our shared index lock"
    );
    // reconstruct now holds user x's namespace lock exclusively while it waits for
    // the index: our own request must time out, not hang.
    let short = locker(&s, Duration::from_millis(200));
    let t = Instant::now();
    let e = short.user_namespace("x", LockMode::Shared).unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert!(e.to_string().contains("timed out"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(short.stats().timeouts, 1);
    drop(il);
    let (ok, _) = rc.finish_within(BOUND);
    assert!(ok, "reconstruct failed after we released");
    // Now free: granted at once.
    let ns = short.user_namespace("x", LockMode::Exclusive).unwrap();
    assert!(ns.waited() < Duration::from_millis(200));
}

#[test]
fn legacy_name_lock_blocks_reconstruct() {
    let s = setup("lock-name");
    let l = locker(&s, Duration::from_secs(2));
    // Holding a name lock exclusively is something we never do in production; here
    // it proves we lock the same file Cyrus does for a legacy mailbox.
    let lockname = paths::mailbox_lockname("user.y", None, true).unwrap();
    let nl = l.mailbox_name(&lockname, LockMode::Exclusive).unwrap();
    assert_eq!(nl.path(), s.dir.join("lock/y/user/y.lock"));
    let mut ex = Kid::spawn(s.cmd("mbexamine", &["user.y"]), "mbexamine");
    assert!(
        ex.still_running_after(WAIT),
        "mbexamine ignored our name lock"
    );
    drop(nl);
    assert!(ex.finish_within(BOUND).0);
}

#[test]
fn another_process_holding_a_classic_lock_times_us_out() {
    let s = setup("lock-posix");
    let idx = index_of_x(&s);
    // A classic POSIX fcntl lock (what Cyrus uses) from another process.
    let script = "import fcntl,sys,time\nf=open(sys.argv[1],'r+')\nfcntl.lockf(f,fcntl.LOCK_EX)\n\
                  print('locked',flush=True)\ntime.sleep(30)\n";
    let mut py = Command::new("python3")
        .args(["-c", script])
        .arg(&idx)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(py.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    let t = Instant::now();
    let e = lock_file(&idx, LockMode::Shared, Duration::from_millis(250), false).unwrap_err();
    let took = t.elapsed();
    let _ = py.kill();
    let _ = py.wait();
    assert!(e.is_timeout(), "{e}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(1),
        "{took:?}"
    );
    assert!(e.to_string().contains(&idx.display().to_string()), "{e}");
    // Released with the process: granted now.
    lock_file(&idx, LockMode::Exclusive, Duration::from_secs(2), false).unwrap();
}

#[test]
fn created_lock_files_belong_to_cyrus_and_cyrus_can_use_them() {
    let s = setup("lock-owner");
    let l = locker(&s, Duration::from_secs(2));
    assert_eq!(l.owner(), Some(cyrus_ids()));
    // The namespace lock file goes into lock/q/ (Cyrus made that directory); the
    // legacy name lock of user.zed needs lock/z/user/, which nobody made yet.
    assert!(!s.dir.join("lock/z").exists());
    let zl = l.user_namespace("zed", LockMode::Shared).unwrap();
    let ns_file = zl.path().to_path_buf();
    let nl = l.mailbox_name("user.zed", LockMode::Shared).unwrap();
    let name_file = nl.path().to_path_buf();
    drop(nl);
    drop(zl);
    assert_eq!(ns_file, s.dir.join("lock/q/*U*zed.lock"));
    assert_eq!(name_file, s.dir.join("lock/z/user/zed.lock"));
    for p in [&ns_file, &name_file] {
        let m = p.metadata().unwrap();
        assert_eq!((m.uid(), m.gid()), cyrus_ids(), "{}", p.display());
        // 0666 less the configured umask (077), as Cyrus creates them.
        assert_eq!(m.mode() & 0o777, 0o600, "{}", p.display());
    }
    for d in ["lock/z", "lock/z/user"] {
        let m = s.dir.join(d).metadata().unwrap();
        assert_eq!((m.uid(), m.gid()), cyrus_ids(), "{d}");
        assert_eq!(m.mode() & 0o777, 0o700, "{d}");
    }
    // Cyrus (running as cyrus) now uses the file we made.
    s.create_mailboxes(&[Mb {
        name: "user.zed",
        partition: "default",
        uniqueid: "7c1b2c3d-0000-4000-8000-0000000000cc",
        legacy: true,
        owner: Some("zed"),
        inbox: None,
    }]);
    s.ok("reconstruct", &["-f", "user.zed"]);
    s.ok("mbexamine", &["user.zed"]);
    // Cyrus locked (and so could open) the very files we created.
    assert_eq!(ns_file.metadata().unwrap().uid(), cyrus_ids().0);
    assert!(s.dir.join("lock/z/user/zed.lock").exists());
}

#[test]
fn replaced_file_is_reopened() {
    let s = setup("lock-replace");
    let db = s.dir.join("conf/test.db");
    std::fs::write(&db, b"old").unwrap();
    let holder = lock_file(&db, LockMode::Exclusive, Duration::from_secs(1), false).unwrap();
    let old_ino = db.metadata().unwrap().ino();
    let path = db.clone();
    let waiter = std::thread::spawn(move || {
        lock_file(&path, LockMode::Shared, Duration::from_secs(5), true)
    });
    std::thread::sleep(Duration::from_millis(100));
    // What a twoskip checkpoint does: write NEW, rename over, then unlock.
    let new = s.dir.join("conf/test.db.NEW");
    std::fs::write(&new, b"new").unwrap();
    std::fs::rename(&new, &db).unwrap();
    drop(holder);
    let got = waiter.join().unwrap().unwrap();
    let ino = got.file().metadata().unwrap().ino();
    assert_ne!(ino, old_ino);
    assert_eq!(ino, db.metadata().unwrap().ino());
    // Without the flag we would have kept the stale descriptor.
    drop(got);
    let holder = lock_file(&db, LockMode::Exclusive, Duration::from_secs(1), false).unwrap();
    let path = db.clone();
    let stale = std::thread::spawn(move || {
        lock_file(&path, LockMode::Shared, Duration::from_secs(5), false)
    });
    std::thread::sleep(Duration::from_millis(100));
    std::fs::write(&new, b"newer").unwrap();
    std::fs::rename(&new, &db).unwrap();
    drop(holder);
    let got = stale.join().unwrap().unwrap();
    assert_ne!(
        got.file().metadata().unwrap().ino(),
        db.metadata().unwrap().ino()
    );
}

#[test]
fn reader_procedure_blocks_writers_only_while_index_is_locked() {
    let s = setup("lock-proc");
    let l = locker(&s, Duration::from_secs(2));
    let idx = index_of_x(&s);
    let mut set = l.lock_set();
    set.namespace("x", LockMode::Shared).unwrap();
    set.mailbox_name(X_ID, LockMode::Shared).unwrap();
    set.index(&idx, LockMode::Shared).unwrap();
    // Out of order: refused at once, not a wait.
    let t = Instant::now();
    assert!(set.namespace("x", LockMode::Shared).is_err());
    assert!(t.elapsed() < Duration::from_millis(50));
    let mut rc = Kid::spawn(s.cmd("reconstruct", &["user.x"]), "reconstruct");
    assert!(
        rc.still_running_after(WAIT),
        "reconstruct ignored our locks"
    );
    // What mailbox_unlock_index does: drop index and namespace, keep the name lock.
    set.release_index();
    set.release_namespace();
    let (ok, took) = rc.finish_within(BOUND);
    assert!(
        ok,
        "reconstruct failed while we held only the shared name lock"
    );
    eprintln!("reconstruct finished {took:?} after we released index+namespace");
    set.release_all();
}
