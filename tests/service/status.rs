//! `cyrvault status --server` against cyrvaultd under Cyrus's real master (issue 15
//! item 4): the service-wide figures add up what SEVERAL master children did (each
//! child's own STATUS only knows itself), sessions active now are those of live
//! children, lock waits and timeouts come from a real `cyrus.index` lock held by
//! another process, refusals and errors are counted, and the Cyrus conventions are
//! reported with the release the service learnt from master. The counters file is
//! owned by cyrus, mode 0600.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cyrvault::lock::{LockMode, lock_file};
use cyrvault_host::backup::{ConnectOptions, Server};
use nix::unistd::{User, chown};

use super::*;

const SECRET: &str = "status-test-secret-0123456789-abcdefg";

/// The secret in a directory of ours (owned by cyrus, 0600); removed on drop.
struct SecretFile(PathBuf);

impl SecretFile {
    fn new() -> SecretFile {
        let dir = std::env::temp_dir().join(format!("cyrvault-status-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = dir.join("secret");
        std::fs::write(&p, format!("{SECRET}\n")).unwrap();
        let cyrus = User::from_name("cyrus").unwrap().expect("user cyrus");
        chown(&p, Some(cyrus.uid), Some(cyrus.gid)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        SecretFile(p)
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        if let Some(d) = self.0.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn connect(sb: &Sandbox) -> Server {
    let opts = ConnectOptions {
        secret: Some(cyrvault::secret::Secret::from_bytes(SECRET.as_bytes()).unwrap()),
        timeout: Some(IO_TIMEOUT),
        ..Default::default()
    };
    Server::connect(&addr(sb, "cyrvaultd").to_string(), &opts).expect("connect + AUTH")
}

/// `cyrvault status --server ... --json`, parsed.
fn status_cli(sb: &Sandbox, secret: &SecretFile) -> serde_json::Value {
    let out = Command::new(crate::bins::cyrvault())
        .args(["status", "--json", "--server"])
        .arg(addr(sb, "cyrvaultd").to_string())
        .arg("--secret-file")
        .arg(&secret.0)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json")
}

fn n(v: &serde_json::Value, scope: &str, key: &str) -> u64 {
    v[scope][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {scope}.{key} in {v}"))
}

#[test]
fn status_sums_every_child_of_master() {
    let secret = SecretFile::new();
    let path = secret.0.display().to_string();
    let sb = start(
        "svcstatus",
        &[
            ("cyrvaultd_secret_file", &path),
            ("cyrvaultd_lock_timeout", "1"),
        ],
        vec![],
    );
    sb.create_user("alice", None).unwrap();
    sb.append("alice", None, &[], None, b"Subject: s\r\n\r\nbody\r\n")
        .unwrap();

    // Three sessions open at once: master runs them in three children.
    let mut held: Vec<Server> = (0..3).map(|_| connect(&sb)).collect();
    for s in &mut held {
        assert_eq!(s.users().unwrap(), ["alice"]);
    }
    let st = status_cli(&sb, &secret);
    assert!(
        n(&st, "service", "sessions") >= 4,
        "3 held + this one: {st}"
    );
    assert_eq!(n(&st, "service", "sessions_active"), 4, "{st}");
    assert!(
        n(&st, "process", "sessions_total") < n(&st, "service", "sessions"),
        "one child's own figures are not the service's: {st}"
    );
    assert!(n(&st, "service", "requests") >= 3, "{st}");
    assert!(n(&st, "service", "bytes") > 0, "{st}");
    assert!(n(&st, "service", "since") > 1_600_000_000, "{st}");
    // the release the service learnt from the master that started it (master -V)
    let version = st["cyrus"]["version"].as_str().unwrap_or("");
    assert!(version.starts_with("3.6."), "{st}");
    assert_eq!(st["cyrus"]["version_source"], "master", "{st}");
    assert_eq!(st["cyrus"]["support"], "supported", "{st}");
    assert_eq!(st["cyrus"]["user_lock"], "*U*bob", "{st}");
    assert_eq!(st["cyrus"]["mailbox_layout"], "uuid", "{st}");
    assert_eq!(st["cyrus"]["unixhierarchysep"], "no", "{st}");
    assert_eq!(st["cyrus"]["virtdomains"], "off", "{st}");
    for s in held.drain(..) {
        drop(s);
    }
    // a closed session leaves the active table once its child is done with it
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut st = status_cli(&sb, &secret);
    while n(&st, "service", "sessions_active") != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        st = status_cli(&sb, &secret);
    }
    assert_eq!(n(&st, "service", "sessions_active"), 1, "{st}");
    let sessions_before = n(&st, "service", "sessions");

    // A refused request (unknown command after AUTH) is counted.
    let before = n(&st, "service", "refused");
    let mut raw = Raw::new(addr(&sb, "cyrvaultd"));
    assert!(
        raw.ask(&format!("FROB {} x", sb.servername))
            .starts_with("NO")
    );
    drop(raw);

    // A real cyrus.index lock held by this process: the service waits for it (a
    // lock wait), and when it is held past cyrvaultd_lock_timeout (1 s) the request
    // fails (a timeout and an error).
    let index = sb
        .mbpath(&sb.mailbox_name("alice", None))
        .unwrap()
        .join("cyrus.index");
    let lock = lock_file(&index, LockMode::Exclusive, Duration::from_secs(5), false).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(lock);
    });
    // this sandbox's secret is the test's own file, not the sandbox's usual one
    let mut c = unauthenticated(&sb, tcp(addr(&sb, "cyrvaultd")));
    c.authenticate(SECRET.as_bytes(), None).unwrap();
    let listing = c
        .fmeta_listing(b"alice", b"INBOX")
        .expect("FMETA after the wait");
    assert!(!listing.files.is_empty());
    release.join().unwrap();
    // the same session again, the lock now held past the timeout
    let lock = lock_file(&index, LockMode::Exclusive, Duration::from_secs(5), false).unwrap();
    let e = c.fmeta_listing(b"alice", b"INBOX").unwrap_err();
    assert!(e.to_string().contains("internal error"), "{e}");
    drop(lock);
    drop(c);

    let st = status_cli(&sb, &secret);
    assert!(n(&st, "service", "refused") > before, "{st}");
    assert!(n(&st, "service", "lock_waits") >= 1, "{st}");
    assert!(n(&st, "service", "lock_wait_us") >= 200_000, "{st}");
    assert!(n(&st, "service", "lock_timeouts") >= 1, "{st}");
    assert!(n(&st, "service", "errors") >= 1, "{st}");
    assert!(n(&st, "service", "sessions") >= sessions_before + 3, "{st}");
    // the longest hold is an index-lock hold (a wait for the lock is not a hold)
    assert!(n(&st, "service", "lock_hold_max_us") < 900_000, "{st}");

    // The text form names the same figures.
    let out = Command::new(crate::bins::cyrvault())
        .args(["status", "--server"])
        .arg(addr(&sb, "cyrvaultd").to_string())
        .arg("--secret-file")
        .arg(&secret.0)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for label in [
        "sessions",
        "requests",
        "bytes sent",
        "lock waits",
        "errors",
        "cyrus version      3.6.",
        "user_lock=*U*bob",
        "mailbox_layout=uuid",
    ] {
        assert!(text.contains(label), "{label} in\n{text}");
    }

    // The file every child adds to: cyrus's, private.
    let file = sb.config_dir().join("socket/cyrvaultd.counters");
    let meta = std::fs::metadata(&file).expect("the counters file");
    let cyrus = User::from_name("cyrus").unwrap().unwrap();
    assert_eq!(meta.uid(), cyrus.uid.as_raw());
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 4096);

    // Without the secret, no status.
    let out = Command::new(crate::bins::cyrvault())
        .args(["status", "--server"])
        .arg(addr(&sb, "cyrvaultd").to_string())
        .output()
        .unwrap();
    // an authentication failure: retrying cannot fix it (doc/operations.md, 77)
    assert_eq!(out.status.code(), Some(77), "refused: needs the secret");
    assert!(String::from_utf8_lossy(&out.stderr).contains("requires authentication"));
}
