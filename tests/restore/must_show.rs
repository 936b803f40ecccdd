//! Issue #12, "Must show": the realistic user (`realistic.rs`) backed up twice from a
//! real Cyrus 3.6 and restored into fresh ones, compared over IMAP and ManageSieve as
//! bob, as carol and as the admin — never through cyrvault's catalog.
//!
//! * `--exact` (through the target's sync_server): 0 differences in every aspect,
//!   UIDs, UIDVALIDITY, MODSEQs and HIGHESTMODSEQ included; a client that last
//!   synchronised at the restored run resumes with QRESYNC and CONDSTORE without a
//!   single FETCH or VANISHED; a second run is refused (the user exists), with
//!   `--resume` it does nothing; the restore at `--run 1` equals what bob looked like
//!   at run 1.
//! * over IMAP: every aspect but UIDs, UIDVALIDITY and MODSEQs equal (messages in the
//!   same order), the subscription to a folder that no longer exists reported as a
//!   warning (exit 0); a second run appends nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use cyrvault_host::backup::{self, BackupOptions, ConnectOptions, Server};
use cyrvault_host::vault::Vault;
use cyrvault_testkit::sandbox::{CyrusInstall, Sandbox};

use super::realistic::{Mode, client_state, diff, make_user, next_second, qresync_resumes, view};

static N: AtomicU32 = AtomicU32::new(0);

/// A scratch directory with a vault and a password file, removed on drop.
pub struct Work {
    pub dir: PathBuf,
    pub vault: PathBuf,
    pub password_file: PathBuf,
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub fn work(name: &str) -> Work {
    let dir = std::env::temp_dir().join(format!(
        "cyrvault-ms-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let password_file = dir.join("pw");
    fs::write(&password_file, "secret\n").unwrap();
    Work {
        vault: dir.join("vault"),
        dir,
        password_file,
    }
}

pub fn backup(sb: &Sandbox, vault: &Path, user: &str) -> u64 {
    let v = Vault::open(vault).unwrap();
    let addr = sb.service_addrs["cyrvaultd"].to_string();
    let opts = ConnectOptions {
        secret: Some(sb.cyrvaultd_secret().unwrap()),
        ..Default::default()
    };
    let mut s = Server::connect(&addr, &opts).unwrap();
    backup::backup_user(&mut s, &v, user, &BackupOptions::default())
        .unwrap_or_else(|e| panic!("backing up {user}: {e}"))
        .run
}

/// `cyrvault restore ARGS --vault V --password-file F --json`: (exit code, JSON, stderr).
pub fn restore(w: &Work, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(crate::bins::cyrvault())
        .arg("restore")
        .args(args)
        .arg("--vault")
        .arg(&w.vault)
        .arg("--password-file")
        .arg(&w.password_file)
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), v, stderr)
}

fn exact(w: &Work, t: &Sandbox, user: &str, more: &[&str]) -> (i32, serde_json::Value, String) {
    let sync = t.service_addrs["syncserver"].to_string();
    let mut args = vec![user, "--exact", "--sync", &sync, "--partition", "p1"];
    args.extend_from_slice(more);
    restore(w, &args)
}

fn over_imap(w: &Work, t: &Sandbox, user: &str) -> (i32, serde_json::Value, String) {
    let imap = t.imap_addr.to_string();
    let sieve = t.service_addrs["sieve"].to_string();
    restore(
        w,
        &[user, "--imap", &imap, "--subscriptions", "--sieve", &sieve],
    )
}

#[track_caller]
fn ok(r: &(i32, serde_json::Value, String), what: &str) {
    assert!(
        r.0 == 0 && r.1["failed"] == 0,
        "{what}: exit {}\n{}\n{}",
        r.0,
        r.1,
        r.2
    );
}

#[track_caller]
fn same(
    got: &std::collections::BTreeMap<String, String>,
    want: &std::collections::BTreeMap<String, String>,
    what: &str,
) {
    let d = diff(got, want);
    assert!(
        d.is_empty(),
        "{what}: {} differences:\n{}",
        d.len(),
        d.join("\n")
    );
}

/// On Cyrus 3.6 and 3.10 (`per_cyrus!`): lost and replacement servers of one release.
fn realistic_user_exact_point_in_time_and_imap(install: &CyrusInstall) {
    let cyrus = |name: &str| super::realistic::cyrus(Some(install), name);
    let w = work("real");
    let src = cyrus("src12");
    let t = Instant::now();
    let n = make_user(&src, 267);
    println!("realistic user: {n} messages in {:?}", t.elapsed());
    assert_eq!(backup(&src, &w.vault, "carol"), 1);
    assert_eq!(backup(&src, &w.vault, "bob"), 1);
    let view1 = view(&src, Mode::Exact);
    let state1 = client_state(&src);
    assert!(view1["metadata INBOX/Sent"].contains("\\Sent"), "{view1:?}");

    // Changes between the runs: new mail, flags, an expunge, a comment, a quota.
    next_second();
    let mut bob = src.admin_as("bob").unwrap();
    let mut mg = cyrvault_testkit::sandbox::MailGen::new(99).with_max_size(8000);
    for i in 0..6 {
        bob.append(
            "INBOX",
            &["$Forwarded"],
            Some(1_700_000_000 + i),
            &mg.message().bytes,
        )
        .unwrap();
    }
    bob.select("INBOX/Archive").unwrap();
    bob.uid_store("1:3", "+FLAGS", &["\\Seen", "$Junk"])
        .unwrap();
    bob.uid_store("4", "+FLAGS", &["\\Deleted"]).unwrap();
    bob.expunge().unwrap();
    bob.setmetadata("INBOX/Lists", "/shared/comment", Some(b"mailing lists"))
        .unwrap();
    bob.logout().unwrap();
    let mut admin = src.admin().unwrap();
    admin
        .setquota("user/bob", &[("STORAGE", 600_000), ("MESSAGE", 20_000)])
        .unwrap();
    admin.logout().unwrap();
    assert_eq!(backup(&src, &w.vault, "carol"), 2);
    assert_eq!(backup(&src, &w.vault, "bob"), 2);
    let view2 = view(&src, Mode::Exact);
    let state2 = client_state(&src);
    assert_ne!(view1, view2);
    if std::env::var_os("H12_DEBUG").is_some() {
        for (k, v) in &view2 {
            println!("== {k}\n{}", &v[..v.len().min(400)]);
        }
        println!("{state2:?}");
    }

    // --exact into a fresh server: carol first (bob's \Seen is in her folder).
    let t1 = cyrus("exact12");
    let t = Instant::now();
    ok(&exact(&w, &t1, "carol", &[]), "exact carol");
    let r = exact(&w, &t1, "bob", &[]);
    ok(&r, "exact bob");
    println!("exact restore of bob: {} in {:?}", r.1, t.elapsed());
    same(&view(&t1, Mode::Exact), &view2, "exact restore");
    let problems = qresync_resumes(&t1, &state2);
    assert!(problems.is_empty(), "QRESYNC resume: {problems:#?}");

    // Again: refused (the user exists), nothing touched; with --resume: nothing to do.
    let r = exact(&w, &t1, "bob", &[]);
    assert_ne!(r.0, 0, "a second exact restore must be refused: {}", r.2);
    assert!(r.2.contains("already has mailboxes"), "{}", r.2);
    let r = exact(&w, &t1, "bob", &["--resume"]);
    ok(&r, "resume");
    assert_eq!(
        (r.1["created"].as_u64(), r.1["appended"].as_u64()),
        (Some(0), Some(0)),
        "{}",
        r.1
    );
    same(&view(&t1, Mode::Exact), &view2, "after --resume");

    // Point in time: run 1, exactly.
    let t3 = cyrus("pit12");
    ok(&exact(&w, &t3, "carol", &[]), "exact carol");
    ok(&exact(&w, &t3, "bob", &["--run", "1"]), "exact bob --run 1");
    same(&view(&t3, Mode::Exact), &view1, "exact restore of run 1");
    let problems = qresync_resumes(&t3, &state1);
    assert!(
        problems.is_empty(),
        "QRESYNC resume at run 1: {problems:#?}"
    );

    // Over IMAP into another fresh server.
    let t2 = cyrus("imap12");
    ok(&over_imap(&w, &t2, "carol"), "imap carol");
    let t = Instant::now();
    let r = over_imap(&w, &t2, "bob");
    ok(&r, "imap bob");
    println!("IMAP restore of bob: {} in {:?}", r.1, t.elapsed());
    let warnings = r.1["warnings"].as_array().cloned().unwrap_or_default();
    assert!(
        warnings.iter().any(|x| x["folder"] == "INBOX/Gone"),
        "the subscription to a folder that no longer exists is a warning: {}",
        r.1
    );
    let mut want = view(&src, Mode::Imap);
    // Cyrus subscribes over IMAP only to folders that exist.
    let lsub = want["lsub"].replace("INBOX/Gone\n", "");
    want.insert("lsub".into(), lsub);
    same(&view(&t2, Mode::Imap), &want, "IMAP restore");
    // A rerun appends nothing.
    let r = over_imap(&w, &t2, "bob");
    ok(&r, "imap rerun");
    assert_eq!(r.1["appended"], 0, "{}", r.1);
    assert_eq!(r.1["created"], 0, "{}", r.1);

    // Into another user: everything appended, and the new owner has every right on
    // what the restore created (the backed-up ACL names bob).
    let imap = t2.imap_addr.to_string();
    let r = restore(&w, &["bob", "--imap", &imap, "--to-user", "eve"]);
    ok(&r, "--to-user eve");
    assert_eq!(r.1["appended"], want_total(&want), "{}", r.1);
    let mut eve = t2.admin_as("eve").unwrap();
    for e in eve.list("", "INBOX*").unwrap() {
        let rights = eve.myrights(&e.name).unwrap();
        assert!(
            "lrswipkxtecdan".chars().all(|c| rights.contains(c)),
            "eve's rights on {}: {rights}",
            e.name
        );
    }
    eve.logout().unwrap();
}

/// How many messages a view lists in bob's own folders.
fn want_total(v: &std::collections::BTreeMap<String, String>) -> u64 {
    v.iter()
        .filter(|(k, _)| k.starts_with("messages INBOX"))
        .map(|(_, m)| m.lines().filter(|l| !l.is_empty()).count() as u64)
        .sum()
}

crate::per_cyrus!(realistic_user_exact_point_in_time_and_imap);
