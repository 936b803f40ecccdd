//! `cyrvault restore` against a real Cyrus sandbox (3.6; the round trip also on
//! 3.10, `per_cyrus!`): the real `cyrvaultd` under
//! Cyrus's real master for the backups, Cyrus's real imapd for the restores and its
//! real `timsieved` for sieve scripts.
//!
//! * `round_trip_point_in_time_and_interrupted` — ~1,100 messages over seven folders
//!   (one with a space, one with a modified-UTF-7 name), three runs with changes
//!   between; each run restored into `Restored/runN` equals what `cyrvault ls USER
//!   [FOLDER] --run N` says (and the catalog's `records_at`); expunged messages come
//!   back with `--include-expunged`; a restore killed halfway and run again ends exact
//!   (no duplicate, nothing missing); `--dry-run` says exactly what the real run does;
//!   `ls --at` and `restore --at` read a zoneless time as UTC and pick the same run
//!   under a local zone 9 hours east;
//!   then the user is DELETEd and restored: same folders, GUIDs, flags, keywords,
//!   internal dates, seen state, subscriptions, sieve scripts and active script, and a
//!   new INBOX identity.
//! * `exports::exports_damage_and_single_message` (`tests/restore/exports.rs`) — mbox and Maildir read back by Python's
//!   `mailbox`; a flipped byte in one member fails only that member's messages; one
//!   message out of a large archive reads one member (bytes read measured).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cyrvault_host::backup::{self, BackupOptions, ConnectOptions, Server};
use cyrvault_host::catalog::Catalog;
use cyrvault_host::imap::Client;
use cyrvault_host::restore::imap_flags;
use cyrvault_host::restore::sieve::SieveClient;
use cyrvault_host::vault::Vault;
use cyrvault_testkit::sandbox::{
    CyrusInstall, MailGen, PopulatePlan, Sandbox, SandboxOptions, ServiceLine, make_history,
    populate,
};

mod exports; // mbox/Maildir read back by Python, a damaged member, one message from a big archive
mod must_show; // issue #12: the realistic user restored --exact, at run 1, and over IMAP, compared over IMAP
mod quota; // issue #12: quota roots read like Cyrus's `quota` tool (quotalegacy, twoskip), stored on limit changes
mod realistic; // issue #12's realistic user and the IMAP/ManageSieve view the restores are compared with
mod tls; // restore over IMAP STARTTLS / imaps and ManageSieve STARTTLS, certificates checked
mod whole_server; // issue #12: restore --all, exact and over IMAP, killed and resumed, rerun does nothing

static N: AtomicU32 = AtomicU32::new(0);

/// A sandbox with cyrvaultd and timsieved under master, and a vault directory.
struct Env {
    sb: Sandbox,
    dir: PathBuf,
    vault: PathBuf,
    password_file: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn env(name: &str) -> Env {
    env_on(None, name)
}

/// [`env`] on a given Cyrus installation (None: the system's).
fn env_on(cyrus: Option<&CyrusInstall>, name: &str) -> Env {
    let dir = std::env::temp_dir().join(format!(
        "cyrvault-rs-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let sb = Sandbox::start(SandboxOptions {
        name_hint: name.into(),
        extra_services: vec![
            ServiceLine::tcp("cyrvaultd", env!("CARGO_BIN_EXE_cyrvaultd")),
            ServiceLine::tcp("sieve", "timsieved"),
        ],
        cyrus: cyrus.cloned(),
        ..Default::default()
    })
    .unwrap();
    let password_file = dir.join("imap-password");
    // sasl_pwcheck_method: alwaystrue in the sandbox; the file is what the CLI reads.
    fs::write(&password_file, "secret\n").unwrap();
    let vault = dir.join("vault");
    Env {
        sb,
        dir,
        vault,
        password_file,
    }
}

impl Env {
    fn backup(&self, user: &str) -> u64 {
        let v = Vault::open(&self.vault).unwrap();
        let addr = self.sb.service_addrs["cyrvaultd"].to_string();
        let opts = ConnectOptions {
            secret: Some(self.sb.cyrvaultd_secret().unwrap()),
            ..Default::default()
        };
        let mut s = Server::connect(&addr, &opts).unwrap();
        backup::backup_user(&mut s, &v, user, &BackupOptions::default())
            .unwrap_or_else(|e| panic!("backing up {user}: {e}"))
            .run
    }

    fn catalog(&self, user: &str) -> (Catalog, PathBuf) {
        let ua = Vault::open(&self.vault)
            .unwrap()
            .user(user)
            .unwrap()
            .unwrap();
        (Catalog::open_existing(&ua.catalog).unwrap(), ua.archive)
    }

    fn sieve_addr(&self) -> String {
        self.sb.service_addrs["sieve"].to_string()
    }

    fn sieve(&self, user: &str) -> SieveClient {
        let mut c = SieveClient::connect(&self.sieve_addr()).unwrap();
        c.authenticate_plain(user, "cyrus", "secret").unwrap();
        c
    }

    /// `cyrvault restore USER ARGS... --vault V --imap A --password-file F`.
    fn restore_cmd(&self, user: &str, args: &[&str]) -> Command {
        let mut c = Command::new(crate::bins::cyrvault());
        c.arg("restore")
            .arg(user)
            .args(args)
            .arg("--vault")
            .arg(&self.vault)
            .stdin(Stdio::null());
        if !args.iter().any(|a| a.starts_with("--to-")) {
            c.arg("--imap")
                .arg(self.sb.imap_addr.to_string())
                .arg("--password-file")
                .arg(&self.password_file);
        }
        c
    }

    fn restore(&self, user: &str, args: &[&str]) -> (Output, serde_json::Value) {
        let out = self
            .restore_cmd(user, &[args, &["--json"]].concat())
            .output()
            .unwrap();
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "restore {args:?}: {e}\nstdout {}\nstderr {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out, v)
    }

    fn restore_ok(&self, user: &str, args: &[&str]) -> serde_json::Value {
        let (out, v) = self.restore(user, args);
        assert!(
            out.status.success() && v["failed"] == 0,
            "restore {args:?}: {}\n{v}",
            String::from_utf8_lossy(&out.stderr)
        );
        v
    }
}

/// One message as a folder shows it: GUID, flags (sorted, no \Recent), internal date.
type Msg = (String, Vec<String>, i64);
/// Folder (by its backed-up name) → its messages, sorted.
type Content = BTreeMap<String, Vec<Msg>>;

/// What the user sees in every folder (as the user: the owner's flags), the folders
/// under `INBOX.<prefix>.` renamed back to their backed-up names (`...INBOX` → INBOX)
/// and, without a prefix, the `Restored` tree left out.
fn live(sb: &Sandbox, user: &str, prefix: Option<&str>) -> Content {
    let mut c = sb.admin_as(user).unwrap();
    let mut out = Content::new();
    for e in c.list("", "*").unwrap() {
        if e.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Noselect")) {
            continue;
        }
        let name = match prefix {
            Some(p) => match e.name.strip_prefix(&format!("INBOX.{p}.")) {
                Some("INBOX") => "INBOX".to_string(),
                Some(rest) => format!("INBOX.{rest}"),
                None => continue,
            },
            None if e.name.starts_with("INBOX.Restored") => continue,
            None => e.name.clone(),
        };
        out.insert(name, folder_msgs(&mut c, &e.name));
    }
    c.logout().unwrap();
    out
}

fn folder_msgs(c: &mut Client, name: &str) -> Vec<Msg> {
    let info = c.examine(name).unwrap();
    if info.exists == 0 {
        return Vec::new();
    }
    let mut v: Vec<Msg> = c
        .uid_fetch("1:*", "(UID FLAGS INTERNALDATE DIGEST.SHA1)")
        .unwrap()
        .into_iter()
        .map(|f| {
            let mut flags: Vec<String> = f
                .flags
                .unwrap_or_default()
                .into_iter()
                .filter(|x| !x.eq_ignore_ascii_case("\\Recent"))
                .collect();
            flags.sort();
            (
                f.digest_sha1.unwrap().to_lowercase(),
                flags,
                f.internaldate.unwrap().0,
            )
        })
        .collect();
    v.sort();
    v
}

/// The catalog's view of run `run`: live folders, non-expunged records (or all with
/// `expunged`).
fn expected(cat: &Catalog, run: u64, expunged: bool) -> Content {
    let mut out = Content::new();
    for f in cat.folders_at(run).unwrap() {
        // Cyrus's own `#sieve` mailbox (3.6 keeps scripts there) is not a user folder.
        if f.deleted || f.name.contains(".#") {
            continue;
        }
        let mut v: Vec<Msg> = cat
            .records_at(&f.uniqueid, run)
            .unwrap()
            .into_iter()
            .filter(|r| expunged || !r.is_expunged())
            .map(|mut r| {
                // An expunged message comes back as a normal one, without the \Deleted
                // it carried (or the next EXPUNGE would remove it again; issue #12).
                if r.is_expunged() {
                    r.system_flags &= !4;
                }
                r.system_flags &= 0xFFFF;
                let mut flags = imap_flags(&r);
                flags.sort();
                (r.guid.to_hex(), flags, r.internaldate)
            })
            .collect();
        v.sort();
        out.insert(f.name, v);
    }
    out
}

/// Panic with the first differences between two contents (whole dumps are too long
/// to read).
#[track_caller]
fn assert_same(got: &Content, want: &Content, what: &str) {
    if got == want {
        return;
    }
    let mut d = Vec::new();
    for k in got.keys().chain(want.keys()).collect::<BTreeSet<_>>() {
        let (g, w) = (got.get(k), want.get(k));
        match (g, w) {
            (None, Some(w)) => d.push(format!("{k}: missing ({} messages wanted)", w.len())),
            (Some(g), None) => d.push(format!("{k}: unexpected ({} messages)", g.len())),
            (Some(g), Some(w)) if g != w => {
                let extra: Vec<_> = g.iter().filter(|m| !w.contains(m)).take(3).collect();
                let lack: Vec<_> = w.iter().filter(|m| !g.contains(m)).take(3).collect();
                d.push(format!(
                    "{k}: {} vs {} wanted; extra {extra:?}; lacking {lack:?}",
                    g.len(),
                    w.len()
                ));
            }
            _ => {}
        }
    }
    panic!("{what}: contents differ:\n{}", d.join("\n"));
}

/// What `cyrvault ls USER --run N` and `ls USER FOLDER --run N` (the admin commands)
/// say the user held at run `run`: live folders, non-expunged messages.
fn expected_ls(e: &Env, user: &str, run: u64) -> Content {
    let ls = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(crate::bins::cyrvault())
            .arg("ls")
            .arg(user)
            .args(args)
            .args(["--run", &run.to_string(), "--json", "--vault"])
            .arg(&e.vault)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let mut out = Content::new();
    for f in ls(&[])["folders"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        if f["deleted"] == true || name.contains(".#") {
            continue;
        }
        let mut v: Vec<Msg> = ls(&[name])["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["expunged"] == false)
            .map(|m| {
                let mut flags: Vec<String> = m["flags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_string())
                    .collect();
                flags.sort();
                (
                    m["guid"].as_str().unwrap().to_string(),
                    flags,
                    m["internaldate"].as_i64().unwrap(),
                )
            })
            .collect();
        v.sort();
        out.insert(name.to_string(), v);
    }
    out
}

fn count(c: &Content) -> usize {
    c.values().map(Vec::len).sum()
}

fn lsub(sb: &Sandbox, user: &str) -> BTreeSet<String> {
    let mut c = sb.admin_as(user).unwrap();
    let s = c
        .lsub("", "*")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .filter(|n| !n.starts_with("INBOX.Restored"))
        .collect();
    c.logout().unwrap();
    s
}

fn sieve_state(e: &Env, user: &str) -> Vec<(String, bool, String)> {
    let mut c = e.sieve(user);
    let mut out: Vec<(String, bool, String)> = c
        .listscripts()
        .unwrap()
        .into_iter()
        .map(|(n, a)| (n.clone(), a, String::new()))
        .collect();
    for s in &mut out {
        s.2 = c.getscript(&s.0).unwrap();
    }
    c.logout().unwrap();
    out.sort();
    out
}

const SCRIPT_A: &str = "require [\"fileinto\"];\r\nif header :contains \"subject\" \"cyrus\" {\r\n  fileinto \"INBOX.Lists\";\r\n}\r\n";
const SCRIPT_B: &str = "require [\"vacation\"];\r\nvacation :days 7 \"Away until Monday.\";\r\n";

/// Restore round trip, point in time, interrupted restore: on Cyrus 3.6 and 3.10.
fn round_trip_point_in_time_and_interrupted(cyrus: &CyrusInstall) {
    let e = env_on(Some(cyrus), "rt");
    let plan = PopulatePlan {
        users: vec!["bob".into()],
        folders_per_user: 6,
        messages: 1100,
        seed: 5,
        partitions: false,
        max_message_size: 12_000,
        lmtp_every: 9,
        duplicate_every: 13,
        fixtures: false,
    };
    let t0 = Instant::now();
    let pop = populate(&e.sb, &plan).unwrap();
    let mut s = e.sieve("bob");
    s.putscript("filters", SCRIPT_A.as_bytes()).unwrap();
    s.putscript("vacation", SCRIPT_B.as_bytes()).unwrap();
    s.setactive("filters").unwrap();
    s.logout().unwrap();
    println!(
        "populated {} messages in {:?}",
        pop.appended + pop.delivered,
        t0.elapsed()
    );

    // Run 1, then history (flags, expunges, a rename, a delete), run 2, then more
    // mail, an unsubscribe and another active script, run 3.
    assert_eq!(e.backup("bob"), 1);
    make_history(&e.sb, &pop, 9).unwrap();
    assert_eq!(e.backup("bob"), 2);
    let mut mg = MailGen::new(77).with_max_size(6000);
    for i in 0..30 {
        let flags: &[&str] = if i % 3 == 0 {
            &["\\Seen", "$Forwarded"]
        } else {
            &[]
        };
        e.sb.append(
            "bob",
            None,
            flags,
            Some(1_700_000_000 + i),
            &mg.message().bytes,
        )
        .unwrap();
    }
    let subs_now = lsub(&e.sb, "bob");
    let unsub = subs_now
        .iter()
        .find(|n| n.starts_with("INBOX."))
        .unwrap()
        .clone();
    let mut c = e.sb.admin_as("bob").unwrap();
    c.unsubscribe(&unsub).unwrap();
    c.logout().unwrap();
    let mut s = e.sieve("bob");
    s.setactive("vacation").unwrap();
    s.logout().unwrap();
    // Run 3 starts in a later second than run 2 (`--at` resolves by whole seconds).
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(e.backup("bob"), 3);
    let content3 = live(&e.sb, "bob", None);
    let subs3 = lsub(&e.sb, "bob");
    let sieve3 = sieve_state(&e, "bob");
    assert!(sieve3.iter().any(|s| s.0 == "vacation" && s.1));

    let (cat, _) = e.catalog("bob");
    // The catalog's run 3 is what the server holds (the backup's own tests check
    // this in depth; here it anchors the comparisons below).
    assert_same(
        &content3,
        &expected(&cat, 3, false),
        "server vs catalog at run 3",
    );

    // Point in time: each run into Restored/runN equals the catalog at that run.
    let started2 = cat.runs().unwrap()[1].started;
    for n in 1..=3u64 {
        let into = format!("Restored/run{n}");
        let t = Instant::now();
        let when = if n == 2 {
            vec!["--at".to_string(), started2.to_string()]
        } else {
            vec!["--run".to_string(), n.to_string()]
        };
        let mut args: Vec<&str> = when.iter().map(String::as_str).collect();
        args.extend(["--into", &into]);
        let v = e.restore_ok("bob", &args);
        // What the admin's `ls --run N` says, which is the catalog's view.
        let want = expected_ls(&e, "bob", n);
        assert_same(&want, &expected(&cat, n, false), "ls vs catalog");
        assert_eq!(v["run"], n);
        assert_eq!(v["appended"], count(&want) as u64, "{v}");
        assert_eq!(v["created"], want.len() as u64, "{v}");
        let got = live(&e.sb, "bob", Some(&format!("Restored.run{n}")));
        assert_same(&got, &want, &format!("run {n}"));
        println!(
            "run {n}: {} folders, {} messages restored in {:?}",
            want.len(),
            count(&want),
            t.elapsed()
        );
    }
    assert_ne!(expected(&cat, 1, false), expected(&cat, 2, false));

    // One time rule for every --at (issue #12): a string without a zone is UTC, in
    // `ls` and in `restore` alike, whatever the local zone (here 9 hours east).
    let at = cyrvault_host::admin::format_time(started2)
        .replace('T', " ")
        .replace('Z', "");
    let out = Command::new(crate::bins::cyrvault())
        .args(["ls", "bob", "--at", &at, "--json", "--vault"])
        .arg(&e.vault)
        .env("TZ", "JST-9")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = e
        .restore_cmd("bob", &["--at", &at, "--dry-run", "--json"])
        .env("TZ", "JST-9")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dry: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (ls["run"].as_u64(), dry["run"].as_u64()),
        (Some(2), Some(2)),
        "--at {at:?}"
    );

    // Expunged messages come back when asked.
    let v = e.restore_ok(
        "bob",
        &[
            "--run",
            "2",
            "--include-expunged",
            "INBOX",
            "--into",
            "Restored/exp",
        ],
    );
    let with = expected(&cat, 2, true);
    let without = expected(&cat, 2, false);
    assert!(with["INBOX"].len() > without["INBOX"].len());
    assert_eq!(v["appended"], with["INBOX"].len() as u64);
    let got = live(&e.sb, "bob", Some("Restored.exp"));
    assert_eq!(got.keys().collect::<Vec<_>>(), ["INBOX"]);
    assert_eq!(got["INBOX"], with["INBOX"]);

    // The window selects by expunge time: none was expunged after 2100.
    let v = e.restore_ok(
        "bob",
        &[
            "--run",
            "2",
            "--include-expunged",
            "--expunged-since",
            "2100-01-01",
            "INBOX",
            "--into",
            "Restored/exp2",
            "--dry-run",
        ],
    );
    assert_eq!(
        v["actions"].as_array().unwrap().len(),
        1 + without["INBOX"].len()
    );

    // Interrupted: kill the restore halfway, run it again.
    let want3 = expected(&cat, 3, false);
    let total = count(&want3);
    let mut child = e
        .restore_cmd("bob", &["--run", "3", "--into", "Restored/kill"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let at_kill = loop {
        let n = count(&live(&e.sb, "bob", Some("Restored.kill")));
        if n >= total / 3 {
            child.kill().unwrap();
            child.wait().unwrap();
            // APPENDs are pipelined: imapd finishes the commands it had already read
            // after the client is gone. Count once the folders stop changing.
            let mut last = count(&live(&e.sb, "bob", Some("Restored.kill")));
            let settled = loop {
                std::thread::sleep(Duration::from_millis(400));
                let now = count(&live(&e.sb, "bob", Some("Restored.kill")));
                if now == last {
                    break now;
                }
                last = now;
            };
            break settled;
        }
        assert!(Instant::now() < deadline, "restore made no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(30));
    };
    // The kill came before the client finished (checked above), but imapd may still
    // complete every APPEND it had read: then the rerun has nothing left to append.
    assert!(at_kill > 0 && at_kill <= total, "{at_kill} of {total}");
    // Dry run first: says exactly what the real run then does.
    let dry = e.restore_ok(
        "bob",
        &["--run", "3", "--into", "Restored/kill", "--dry-run"],
    );
    let v = e.restore_ok("bob", &["--run", "3", "--into", "Restored/kill"]);
    assert_eq!(v["skipped"], at_kill as u64);
    assert_eq!(v["appended"], (total - at_kill) as u64);
    assert_eq!(dry["skipped"], v["skipped"]);
    // The dry run counts what the real run then does (issue #12).
    assert_eq!(dry["appended"], v["appended"]);
    assert_eq!(dry["created"], v["created"]);
    let dry_appends = dry["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "append")
        .count();
    assert_eq!(dry_appends, total - at_kill);
    assert_same(
        &live(&e.sb, "bob", Some("Restored.kill")),
        &want3,
        "after the kill",
    );
    println!(
        "killed at {at_kill} of {total}; second run appended {}",
        total - at_kill
    );
    // A third run changes nothing.
    let v = e.restore_ok("bob", &["--run", "3", "--into", "Restored/kill"]);
    assert_eq!(
        (v["appended"].as_u64(), v["skipped"].as_u64()),
        (Some(0), Some(total as u64))
    );

    // Round trip: DELETE the whole user, restore it (INBOX created again).
    let old_inbox = cat
        .folders_at(3)
        .unwrap()
        .into_iter()
        .find(|f| f.name == "INBOX")
        .unwrap()
        .uniqueid;
    let mut admin = e.sb.admin().unwrap();
    // An admin holds only implicit `lca` rights; deleting needs `x`.
    admin.setacl("user.bob", "cyrus", "lrswipkxtecda").unwrap();
    admin.delete("user.bob").unwrap();
    admin.logout().unwrap();
    assert!(live(&e.sb, "bob", None).is_empty());
    let t = Instant::now();
    let v = e.restore_ok(
        "bob",
        &["--subscriptions", "--sieve", &e.sieve_addr(), "--seen"],
    );
    println!(
        "round trip: {} messages restored in {:?}",
        v["appended"],
        t.elapsed()
    );
    assert_eq!(v["sieve_scripts"], sieve3.len() as u64, "{v}");
    assert_eq!(v["subscribed"], subs3.len() as u64, "{v}");
    assert_same(&live(&e.sb, "bob", None), &content3, "round trip");
    assert_eq!(lsub(&e.sb, "bob"), subs3);
    assert_eq!(sieve_state(&e, "bob"), sieve3);
    let mut c = e.sb.admin_as("bob").unwrap();
    let new_inbox = c.examine("INBOX").unwrap().mailboxid.unwrap();
    assert_ne!(
        new_inbox, old_inbox,
        "the restored INBOX must be a new mailbox"
    );
}

crate::per_cyrus!(round_trip_point_in_time_and_interrupted);
