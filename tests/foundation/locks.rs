//! Lock interop with the running server: while we hold a mailbox's name lock
//! exclusively, or the user's namespace lock or `cyrus.index` shared, an IMAP
//! APPEND waits, and succeeds at normal speed once we release.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cyrvault::cyrus::paths;
use cyrvault::cyrus::version::{UserLockNaming, conventions_for};
use cyrvault::lock::{LockMode, Locker};
use cyrvault_testkit::sandbox::{CyrusInstall, MailGen, Sandbox, SandboxOptions};

use super::conf;

/// A bare IMAP connection with short socket timeouts, so a wait for a lock can
/// never hang the suite (the crate's client waits up to two minutes).
struct RawImap {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

const SOCKET_TIMEOUT: Duration = Duration::from_secs(20);

impl RawImap {
    fn login(sb: &Sandbox, user: &str) -> RawImap {
        let s = TcpStream::connect(sb.imap_addr).unwrap();
        s.set_read_timeout(Some(SOCKET_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(SOCKET_TIMEOUT)).unwrap();
        let mut c = RawImap {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        };
        let greeting = c.line();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        c.w.write_all(format!("L LOGIN {user} x\r\n").as_bytes())
            .unwrap();
        let done = c.until_tagged("L");
        assert!(done.starts_with("L OK"), "{done}");
        c
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        let n = self
            .r
            .read_line(&mut l)
            .expect("imapd answered within the socket timeout");
        assert!(n > 0, "imapd closed the connection");
        l
    }

    fn until_tagged(&mut self, tag: &str) -> String {
        loop {
            let l = self.line();
            if l.starts_with(&format!("{tag} ")) {
                return l;
            }
        }
    }

    /// APPEND with a synchronizing literal; the tagged answer line.
    fn append(&mut self, msg: &[u8]) -> String {
        self.w
            .write_all(format!("A APPEND INBOX {{{}}}\r\n", msg.len()).as_bytes())
            .unwrap();
        loop {
            let l = self.line();
            if l.starts_with('+') {
                self.w.write_all(msg).unwrap();
                self.w.write_all(b"\r\n").unwrap();
            } else if l.starts_with("A ") {
                return l;
            }
        }
    }
}

/// APPEND from another thread while `hold` holds a lock: it must not complete
/// within `HELD`, and must succeed soon after `hold` is dropped. Returns the time
/// from release to the APPEND's answer.
fn append_waits_for<T>(sb: &Sandbox, user: &str, msg: &[u8], hold: T, what: &str) -> Duration {
    const HELD: Duration = Duration::from_millis(500);
    let mut c = RawImap::login(sb, user);
    let (tx, rx) = mpsc::channel();
    let body = msg.to_vec();
    let th = std::thread::spawn(move || {
        let answer = c.append(&body);
        let _ = tx.send((answer, Instant::now()));
    });
    match rx.recv_timeout(HELD) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        other => panic!("APPEND did not wait while we held {what}: {other:?}"),
    }
    let released = Instant::now();
    drop(hold);
    let (answer, done) = rx
        .recv_timeout(SOCKET_TIMEOUT)
        .unwrap_or_else(|e| panic!("APPEND after releasing {what}: {e}"));
    th.join().unwrap();
    assert!(
        answer.starts_with("A OK"),
        "APPEND after releasing {what}: {answer}"
    );
    done.duration_since(released)
}

/// One timed APPEND with nothing held.
fn timed_append(sb: &Sandbox, user: &str, msg: &[u8]) -> Duration {
    let mut c = RawImap::login(sb, user);
    let t = Instant::now();
    let a = c.append(msg);
    let took = t.elapsed();
    assert!(a.starts_with("A OK"), "{a}");
    took
}

/// On Cyrus 3.6 and 3.10 (`per_cyrus!`), with the user namespace lock named as
/// that release names it.
fn our_locks_make_imapd_append_wait(cyrus: &CyrusInstall) {
    lock_interop(
        Sandbox::start(SandboxOptions {
            name_hint: "found-locks".into(),
            cyrus: Some(cyrus.clone()),
            ..SandboxOptions::default()
        })
        .expect("sandbox starts"),
    );
}

crate::per_cyrus!(our_locks_make_imapd_append_wait);

/// The same with legacy directories, where the name lock file is named after the
/// mailbox instead of its uniqueid (and `/` is the separator).
#[test]
fn our_locks_make_imapd_append_wait_legacy_dirs() {
    lock_interop(
        Sandbox::start(SandboxOptions {
            name_hint: "found-locks-legacy".into(),
            legacy_dirs: true,
            unixhierarchysep: true,
            ..SandboxOptions::default()
        })
        .unwrap(),
    );
}

fn lock_interop(sb: Sandbox) {
    let user = "erin";
    sb.create_user(user, Some("p2")).unwrap();
    let mut mg = MailGen::new(17).with_max_size(8 * 1024);
    let mut sent = 0;
    for _ in 0..3 {
        sb.append(user, None, &["\\Seen"], None, &mg.message().bytes)
            .unwrap();
        sent += 1;
    }
    let conf = conf(&sb);
    let naming = conventions_for(&sb.cyrus.version).0.user_lock;
    assert_ne!(
        naming,
        UserLockNaming::Both,
        "a supported release: one name"
    );
    let locker = Locker::new(&conf, Duration::from_secs(5))
        .unwrap()
        .with_user_lock_naming(naming);
    let mbox = sb.mailbox_name(user, None); // the tools' (external) name
    let internal = format!("user.{user}");
    let entry = sb.ctl_mboxlist_dump().unwrap()[&internal].clone();
    let legacy = entry["mbtype"].as_str().unwrap().contains('l');
    assert_eq!(legacy, sb.options.legacy_dirs);
    let lockname = paths::mailbox_lockname(&internal, entry["uniqueid"].as_str(), legacy).unwrap();
    let index = sb.mbpath(&mbox).unwrap().join("cyrus.index");

    let mut baseline = Duration::ZERO;
    for _ in 0..3 {
        baseline = baseline.max(timed_append(&sb, user, &mg.message().bytes));
        sent += 1;
    }

    // the mailbox name lock (the uniqueid's lock file) EXCLUSIVE
    let name = locker.mailbox_name(&lockname, LockMode::Exclusive).unwrap();
    let lockfile = name.path().to_path_buf();
    let w1 = append_waits_for(&sb, user, &mg.message().bytes, name, "the name lock");
    sent += 1;
    // the user namespace lock SHARED: APPEND takes it exclusive (mailbox_open_iwl)
    let ns = locker.user_namespace(user, LockMode::Shared).unwrap();
    let w2 = append_waits_for(&sb, user, &mg.message().bytes, ns, "the namespace lock");
    sent += 1;
    // ... under this release's name only: the other release's name blocks nothing,
    // which is why the name must follow the release (cyrus::version).
    let other = match naming {
        UserLockNaming::UserId => UserLockNaming::Inbox,
        _ => UserLockNaming::UserId,
    };
    let wrong = Locker::new(&conf, Duration::from_secs(5))
        .unwrap()
        .with_user_lock_naming(other);
    let held = wrong.user_namespace(user, LockMode::Exclusive).unwrap();
    let t = timed_append(&sb, user, &mg.message().bytes);
    sent += 1;
    assert!(
        t < Duration::from_secs(2),
        "APPEND waited {t:?} for {} on Cyrus {}",
        held.path().display(),
        sb.cyrus.version
    );
    drop(held);
    // cyrus.index SHARED: APPEND locks it exclusive
    let il = locker.index(&index, LockMode::Shared).unwrap();
    let w3 = append_waits_for(&sb, user, &mg.message().bytes, il, "the index lock");
    sent += 1;

    let mut after = Duration::ZERO;
    for _ in 0..3 {
        after = after.max(timed_append(&sb, user, &mg.message().bytes));
        sent += 1;
    }
    eprintln!(
        "APPEND: unlocked {baseline:?}; answered {w1:?} / {w2:?} / {w3:?} after release \
         (name / namespace / index); afterwards {after:?}"
    );
    // generous for a busy 2-core machine: the point is "not stuck", not speed
    let slow = baseline * 5 + Duration::from_secs(2);
    for w in [w1, w2, w3] {
        assert!(
            w < slow,
            "APPEND answered {w:?} after release (unlocked: {baseline:?})"
        );
    }
    assert!(
        after < slow,
        "APPEND after the test took {after:?} (before: {baseline:?})"
    );

    // every APPEND landed; the lock file is Cyrus's own (owned by cyrus)
    let mut c = sb.login(user).unwrap();
    assert_eq!(c.examine("INBOX").unwrap().exists, sent);
    c.logout().unwrap();
    let cyrus = nix::unistd::User::from_name("cyrus").unwrap().unwrap();
    assert_eq!(
        std::fs::metadata(&lockfile).unwrap().uid(),
        cyrus.uid.as_raw()
    );
    // lock/<hash>/<uniqueid>.lock, or lock/<hash>/user/erin.lock for legacy dirs
    let tail = format!("/{}.lock", lockname.replace('.', "/"));
    assert!(
        lockfile.starts_with(sb.root.join("lock")) && lockfile.to_str().unwrap().ends_with(&tail),
        "{}",
        lockfile.display()
    );
    eprintln!("name lock file: {}", lockfile.display());
}
