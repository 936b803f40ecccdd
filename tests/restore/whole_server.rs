//! Issue #12 item 3: `cyrvault restore --all` of every user of a lost server onto a
//! replacement, N users at a time — exactly through sync_server and over IMAP — with a
//! restore killed halfway (kill -9) and run again, and a rerun that does nothing.
//! Compared user by user over IMAP with the lost server.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cyrvault_testkit::sandbox::{PopulatePlan, Sandbox, SandboxOptions, ServiceLine, populate};

use super::must_show::{Work, work};

fn cyrus(name: &str) -> Sandbox {
    Sandbox::start(SandboxOptions {
        name_hint: name.into(),
        extra_services: vec![
            ServiceLine::tcp("cyrvaultd", env!("CARGO_BIN_EXE_cyrvaultd")),
            ServiceLine::tcp("sieve", "timsieved"),
            ServiceLine::tcp("syncserver", "sync_server"),
        ],
        ..Default::default()
    })
    .unwrap()
}

/// What IMAP shows of a user: folders, subscriptions, per folder its status (with
/// `exact` UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ too), messages (with `exact` their UIDs
/// and MODSEQs) and ACL.
fn user_view(sb: &Sandbox, user: &str, exact: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut c = sb.admin_as(user).unwrap();
    let mut admin = sb.admin().unwrap();
    let mut names: Vec<String> = c
        .list("", "INBOX*")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    out.insert("list".into(), names.join("\n"));
    let mut subs: Vec<String> = c
        .lsub("", "*")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    subs.sort();
    out.insert("lsub".into(), subs.join("\n"));
    for n in &names {
        let st: Vec<String> = c
            .status(n, "(MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)")
            .unwrap()
            .into_iter()
            .filter(|(k, _)| exact || k == "MESSAGES")
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        out.insert(format!("status {n}"), st.join(" "));
        let info = c.examine(n).unwrap();
        let mut msgs = Vec::new();
        if info.exists > 0 {
            let mut v = c
                .uid_fetch("1:*", "(UID FLAGS INTERNALDATE DIGEST.SHA1 MODSEQ)")
                .unwrap();
            v.sort_by_key(|f| f.uid);
            for f in v {
                let mut flags: Vec<String> = f
                    .flags
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|x| !x.eq_ignore_ascii_case("\\Recent"))
                    .collect();
                flags.sort();
                let head = if exact {
                    format!("{} {} ", f.uid.unwrap(), f.modseq.unwrap())
                } else {
                    String::new()
                };
                msgs.push(format!(
                    "{head}{} {flags:?} {}",
                    f.digest_sha1.unwrap(),
                    f.internaldate.unwrap().0
                ));
            }
        }
        out.insert(format!("messages {n}"), msgs.join("\n"));
        let aname = n.replacen("INBOX", &format!("user.{user}"), 1);
        let mut acl = admin.getacl(&aname).unwrap();
        acl.sort();
        out.insert(format!("acl {n}"), format!("{acl:?}"));
    }
    c.logout().unwrap();
    admin.logout().unwrap();
    out
}

fn all(w: &Work, args: &[&str]) -> (i32, serde_json::Value, String) {
    super::must_show::restore(w, &[&["--all"], args].concat())
}

#[track_caller]
fn same_users(src: &Sandbox, dst: &Sandbox, users: &[String], exact: bool, what: &str) {
    for u in users {
        let d = super::realistic::diff(&user_view(dst, u, exact), &user_view(src, u, exact));
        assert!(d.is_empty(), "{what}: user {u}: {}", d.join("\n"));
    }
}

#[test]
fn whole_server_exact_killed_and_resumed_then_imap() {
    let w = work("all");
    let src = cyrus("lost12");
    let users: Vec<String> = (0..12).map(|i| format!("user{i:02}")).collect();
    let plan = PopulatePlan {
        users: users.clone(),
        folders_per_user: 4,
        messages: 900,
        seed: 12,
        partitions: false,
        max_message_size: 40_000,
        lmtp_every: 0,
        duplicate_every: 9,
        fixtures: false,
    };
    populate(&src, &plan).unwrap();
    let out = Command::new(crate::bins::cyrvault())
        .args(["backup", "--all", "--server"])
        .arg(src.service_addrs["cyrvaultd"].to_string())
        .arg("--secret-file")
        .arg(&src.cyrvaultd_secret_file)
        .arg("--vault")
        .arg(&w.vault)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // Exactly onto a replacement. user00 is left half restored first (its INBOX and
    // one folder only, as if a restore had died between folders), then the whole
    // server goes one user at a time and is killed after a few users.
    let t1 = cyrus("new12");
    let sync = t1.service_addrs["syncserver"].to_string();
    {
        use cyrvault_host::restore::exact::{ExactOptions, ExactTarget, restore_exact};
        use cyrvault_host::restore::{NoProgress, Selection, Source, plan};
        let ua = cyrvault_host::vault::Vault::open(&w.vault)
            .unwrap()
            .user("user00")
            .unwrap()
            .unwrap();
        let mut src_arch = Source::open(&ua.archive, &ua.catalog).unwrap();
        let mut p = plan(&mut src_arch, &Selection::default()).unwrap();
        p.folders.truncate(2);
        p.subscriptions.clear();
        let target = ExactTarget {
            addr: sync.clone(),
            admin: "cyrus".into(),
            password: "x".into(),
            partition: "p1".into(),
        };
        let s = restore_exact(
            &mut src_arch,
            &p,
            &target,
            &ExactOptions::default(),
            &mut NoProgress,
        )
        .unwrap();
        assert_eq!((s.created, s.failed), (2, 0), "{s:?}");
    }
    let mut child = Command::new(crate::bins::cyrvault())
        .args([
            "restore",
            "--all",
            "--exact",
            "--sync",
            &sync,
            "--partition",
            "p1",
        ])
        .args(["--jobs", "1", "--vault"])
        .arg(&w.vault)
        .arg("--password-file")
        .arg(&w.password_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for _ in 0..3 {
        let l = lines.next().unwrap().unwrap();
        assert!(l.starts_with('['), "progress line: {l}");
    }
    // Mid-way through the fourth user, or just after it.
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap();
    child.wait().unwrap();

    let t = Instant::now();
    let r = all(
        &w,
        &[
            "--exact",
            "--sync",
            &sync,
            "--partition",
            "p1",
            "--jobs",
            "3",
        ],
    );
    assert_eq!(r.0, 0, "{}\n{}", r.1, r.2);
    let rep = &r.1;
    assert_eq!(rep["users"], 12, "{rep}");
    assert_eq!(rep["failed"], 0, "{rep}");
    assert!(rep["unchanged"].as_u64().unwrap() >= 3, "{rep}");
    println!(
        "exact --all after a kill: {} users restored, {} complete already, {} messages in {:?}",
        rep["restored"],
        rep["unchanged"],
        rep["appended"],
        t.elapsed()
    );
    same_users(&src, &t1, &users, true, "exact --all");
    // A rerun does nothing.
    let r = all(
        &w,
        &[
            "--exact",
            "--sync",
            &sync,
            "--partition",
            "p1",
            "--jobs",
            "3",
        ],
    );
    assert_eq!(r.0, 0, "{}\n{}", r.1, r.2);
    assert_eq!(
        (r.1["unchanged"].as_u64(), r.1["appended"].as_u64()),
        (Some(12), Some(0)),
        "{}",
        r.1
    );

    // Over IMAP onto another replacement, then again.
    let t2 = cyrus("imap12all");
    let imap = t2.imap_addr.to_string();
    let sieve = t2.service_addrs["sieve"].to_string();
    let r = all(&w, &["--imap", &imap, "--sieve", &sieve, "--jobs", "3"]);
    assert_eq!(r.0, 0, "{}\n{}", r.1, r.2);
    assert_eq!(r.1["restored"], 12, "{}", r.1);
    same_users(&src, &t2, &users, false, "IMAP --all");
    let r = all(&w, &["--imap", &imap, "--sieve", &sieve, "--jobs", "3"]);
    assert_eq!(r.0, 0, "{}\n{}", r.1, r.2);
    assert_eq!(
        (r.1["unchanged"].as_u64(), r.1["appended"].as_u64()),
        (Some(12), Some(0)),
        "{}",
        r.1
    );
}
