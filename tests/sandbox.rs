//! The test sandbox against a real Cyrus 3.6: start/stop, isolation of parallel
//! instances, partitions, LMTP, tools, generated and awkward mail, history, and
//! cleanup when a test panics.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cyrvault_testkit::sandbox::{
    Listen, MailGen, PopulatePlan, Sandbox, SandboxOptions, ServiceLine, make_history, populate,
    port_open,
};

fn opts(hint: &str) -> SandboxOptions {
    SandboxOptions {
        name_hint: hint.into(),
        ..SandboxOptions::default()
    }
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Cyrus logged no database or I/O error (when its syslog is captured).
fn assert_healthy(sb: &Sandbox) {
    let log = sb.syslog();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("DBERROR") || l.contains("IOERROR") || l.contains("fatal"))
        .collect();
    assert!(bad.is_empty(), "cyrus reported errors:\n{}", bad.join("\n"));
}

/// Every file and directory below `dir`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.clone());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(&p, out);
            }
        }
    }
}

#[test]
fn start_and_stop() {
    let mut sb = Sandbox::start(opts("startstop")).expect("sandbox starts");
    let root = sb.root.clone();
    let pid = sb.master_pid().unwrap();
    assert!(pid_alive(pid));
    let admin = sb.admin().unwrap();
    assert!(admin.has_capability("IMAP4REV1"));
    assert!(admin.greeting().contains(&sb.servername));
    admin.logout().unwrap();
    // Nothing of the system instance is referenced.
    let conf = std::fs::read_to_string(&sb.imapd_conf).unwrap();
    assert!(
        !conf.contains("/var/lib/cyrus")
            && !conf.contains("/run/cyrus")
            && !conf.contains("/var/spool")
    );
    sb.stop().unwrap();
    assert!(!port_open(sb.imap_addr));
    assert!(!port_open(sb.lmtp_addr));
    assert!(!pid_alive(pid));
    drop(sb);
    assert!(!root.exists());
}

#[test]
fn three_sandboxes_in_parallel_are_isolated() {
    let handles: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                let sb = Sandbox::start(opts(&format!("par{i}"))).expect("sandbox starts");
                let user = format!("user{i}");
                sb.create_user(&user, None).unwrap();
                sb.append(
                    &user,
                    None,
                    &[],
                    None,
                    format!("Subject: {i}\r\n\r\nhi\r\n").as_bytes(),
                )
                .unwrap();
                sb
            })
        })
        .collect();
    let sbs: Vec<Sandbox> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, sb) in sbs.iter().enumerate() {
        let mut admin = sb.admin().unwrap();
        let names: Vec<String> = admin
            .list("", "*")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(
            names,
            vec![format!("user.user{i}")],
            "sandbox {i} sees only its own user"
        );
        for (j, other) in sbs.iter().enumerate() {
            if i != j {
                assert_ne!(sb.imap_addr, other.imap_addr);
                assert_ne!(sb.lmtp_addr, other.lmtp_addr);
                assert_ne!(sb.root, other.root);
                assert!(!other.root.starts_with(&sb.root));
            }
        }
    }
    let pids: Vec<u32> = sbs.iter().map(|s| s.master_pid().unwrap()).collect();
    drop(sbs);
    assert!(pids.iter().all(|p| !pid_alive(*p)));
}

#[test]
fn users_land_on_the_partition_asked_for() {
    let sb = Sandbox::start(opts("parts")).unwrap();
    sb.create_user("alice", Some("p1")).unwrap();
    sb.create_user("bob", Some("p2")).unwrap();
    sb.create_user("carol", None).unwrap();
    sb.create_folder("bob", "Work", Some("p1")).unwrap();
    sb.append(
        "bob",
        Some("Work"),
        &["\\Seen"],
        None,
        b"Subject: w\r\n\r\nwork\r\n",
    )
    .unwrap();
    let p1 = sb.partition_dir("p1").unwrap().to_path_buf();
    let p2 = sb.partition_dir("p2").unwrap().to_path_buf();
    assert_ne!(p1, p2);
    for (mbox, part) in [
        ("user.alice", &p1),
        ("user.bob", &p2),
        ("user.carol", &p1),
        ("user.bob.Work", &p1),
    ] {
        let path = sb.mbpath(mbox).unwrap();
        assert!(
            path.starts_with(part),
            "{mbox} at {} not under {}",
            path.display(),
            part.display()
        );
        assert!(
            path.join("cyrus.header").is_file(),
            "{mbox} has a cyrus.header"
        );
        assert!(path.join("cyrus.index").is_file());
    }
    assert!(sb.mbpath("user.bob.Work").unwrap().join("1.").is_file());
    let dump = sb.ctl_mboxlist_dump().unwrap();
    assert_eq!(dump["user.alice"]["partition"], "p1");
    assert_eq!(dump["user.bob"]["partition"], "p2");
    assert_eq!(dump["user.bob.Work"]["partition"], "p1");
    // 3.6 default: uuid directories.
    let bob = dump["user.bob"]["uniqueid"].as_str().unwrap().to_string();
    assert!(sb.mbpath("user.bob").unwrap().ends_with(format!(
        "uuid/{}/{}/{bob}",
        &bob[0..1],
        &bob[1..2]
    )));
}

#[test]
fn legacy_hashed_dirs_and_unix_separator() {
    let sb = Sandbox::start(SandboxOptions {
        legacy_dirs: true,
        unixhierarchysep: true,
        ..opts("legacy")
    })
    .unwrap();
    sb.create_user("bob", Some("p2")).unwrap();
    sb.create_folder("bob", "Lists/rust", None).unwrap();
    assert_eq!(
        sb.mailbox_name("bob", Some("Lists/rust")),
        "user/bob/Lists/rust"
    );
    sb.append(
        "bob",
        Some("Lists/rust"),
        &[],
        None,
        b"Subject: r\r\n\r\nrust\r\n",
    )
    .unwrap();
    let p2 = sb.partition_dir("p2").unwrap();
    // hashimapspool: <part>/<first letter>/user/<name>/<folders...>
    assert!(p2.join("b/user/bob/cyrus.header").is_file());
    assert!(p2.join("b/user/bob/Lists/rust/1.").is_file());
    let dump = sb.ctl_mboxlist_dump().unwrap();
    assert!(dump["user.bob"]["mbtype"].as_str().unwrap().contains('l'));
}

#[test]
fn lmtp_delivers_to_inbox_and_plus_folder_with_dot_stuffing() {
    let sb = Sandbox::start(opts("lmtp")).unwrap();
    sb.create_user("dave", None).unwrap();
    sb.create_folder("dave", "Work", None).unwrap();
    // With Date and Message-ID present lmtpd adds none (it adds both when missing).
    let msg = b"Date: Wed, 01 Jan 2020 10:00:00 +0100\r\nMessage-ID: <dots@x>\r\nFrom: x@y\r\nSubject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n";
    sb.deliver_lmtp("dave", None, msg).unwrap();
    sb.deliver_lmtp("dave", Some("Work"), msg).unwrap();
    sb.deliver_lmtp("dave", Some("Work"), msg).unwrap();
    // lmtpd cannot address a folder with a space (it does not unquote local parts).
    sb.create_folder("dave", "Sent Items", None).unwrap();
    let err = sb
        .deliver_lmtp("dave", Some("Sent Items"), msg)
        .unwrap_err();
    assert!(
        matches!(
            err,
            cyrvault_host::Error::Service(cyrvault::Error::Refused(_))
        ),
        "{err}"
    );
    let mut c = sb.login("dave").unwrap();
    assert_eq!(c.select("INBOX").unwrap().exists, 1);
    assert_eq!(c.select("INBOX.Work").unwrap().exists, 2);
    let f = c.uid_fetch("1", "(BODY.PEEK[])").unwrap();
    let body = f[0].body.as_ref().unwrap();
    // lmtpd prepends Return-Path, Received, X-Cyrus-Session-Id and X-Sieve; our bytes follow intact.
    assert!(body.ends_with(msg), "{}", String::from_utf8_lossy(body));
    assert!(body.starts_with(b"Return-Path:"));
}

#[test]
fn tools_run_as_cyrus_and_leave_no_root_files() {
    let sb = Sandbox::start(opts("tools")).unwrap();
    sb.create_user("erin", None).unwrap();
    sb.append("erin", None, &[], None, b"Subject: t\r\n\r\ntools\r\n")
        .unwrap();
    let out = sb.mbexamine("user.erin").unwrap();
    assert!(out.contains("Number of Messages: 1 "), "{out}");
    sb.ctl_mboxlist_dump().unwrap();
    sb.tool_ok("ctl_cyrusdb", &["-c"]).unwrap();
    let cyrus_uid = nix::unistd::User::from_name("cyrus")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let mut files = Vec::new();
    walk(&sb.root.join("conf"), &mut files);
    walk(&sb.root.join("spool"), &mut files);
    walk(&sb.root.join("lock"), &mut files);
    assert!(files.len() > 10);
    for f in files {
        let uid = std::fs::symlink_metadata(&f).unwrap().uid();
        assert_eq!(uid, cyrus_uid, "{} is owned by uid {uid}", f.display());
    }
}

#[test]
fn extra_services_get_ports_and_config() {
    let mut svc = ServiceLine::tcp("imapextra", "imapd");
    svc.options = "prefork=0".into();
    let unix = ServiceLine {
        listen: Listen::Unix,
        ..ServiceLine::tcp("lmtpsock", "lmtpd")
    };
    let sb = Sandbox::start(SandboxOptions {
        extra_services: vec![svc, unix],
        extra_imapd_conf: vec![("imapextra_servername".into(), "extra-name".into())],
        ..opts("extra")
    })
    .unwrap();
    let addr = sb.service_addrs["imapextra"];
    assert_ne!(addr, sb.imap_addr);
    // The service-specific servername proves the service read our imapd.conf (-C).
    let c = cyrvault_host::imap::Client::connect(addr).unwrap();
    assert!(c.greeting().starts_with("extra-name"), "{}", c.greeting());
    let sock = &sb.service_sockets["lmtpsock"];
    assert!(sock.starts_with(&sb.root));
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    let mut buf = [0u8; 200];
    let n = std::io::Read::read(&mut s, &mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"220 "),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[test]
fn populate_a_few_hundred_messages() {
    let sb = Sandbox::start(opts("populate")).unwrap();
    let plan = PopulatePlan {
        users: vec!["alice".into(), "bob".into(), "carol".into()],
        folders_per_user: 6,
        messages: 300,
        seed: 11,
        max_message_size: 300 * 1024,
        ..PopulatePlan::default()
    };
    let t = std::time::Instant::now();
    let pop = populate(&sb, &plan).unwrap();
    eprintln!(
        "populate: {} appended, {} via lmtp, {} duplicates, {} fixtures in {:?}",
        pop.appended,
        pop.delivered,
        pop.duplicates,
        pop.fixtures.len(),
        t.elapsed()
    );
    assert_eq!(pop.appended + pop.delivered, 300);
    assert!(pop.delivered >= 30 && pop.duplicates >= 30);
    assert_eq!(
        pop.expected.keys().collect::<Vec<_>>(),
        pop.stored.keys().collect::<Vec<_>>()
    );
    let mut guid_places: BTreeMap<&str, usize> = BTreeMap::new();
    let mut total_bytes = 0u64;
    for (mbox, expected) in &pop.expected {
        let stored = &pop.stored[mbox];
        assert_eq!(stored.len(), *expected, "{mbox}");
        // mbexamine reads the index directly: the same count.
        let ex = sb.mbexamine(mbox).unwrap();
        assert!(
            ex.contains(&format!("Number of Messages: {expected} ")),
            "{mbox}: {ex}"
        );
        for m in stored {
            *guid_places.entry(m.guid.as_str()).or_default() += 1;
            total_bytes += m.size;
        }
    }
    // The same message in several folders has one GUID.
    assert!(guid_places.values().filter(|&&n| n >= 2).count() >= 30);
    // Users are spread over both partitions.
    let dump = sb.ctl_mboxlist_dump().unwrap();
    assert_eq!(dump["user.alice"]["partition"], "p1");
    assert_eq!(dump["user.bob"]["partition"], "p2");
    assert_eq!(dump["user.alice.Archive"]["partition"], "p2");
    // A child created without a partition inherits its parent's.
    assert_eq!(dump["user.alice.Archive.2023"]["partition"], "p2");
    // Spaces and modified UTF-7 names made it.
    assert!(pop.stored.contains_key("user.carol.Sent Items"));
    assert!(!pop.stored["user.alice.Entw&APw-rfe"].is_empty());
    // Sizes from FETCH match the message files on disk.
    let mut c = sb.login("bob").unwrap();
    c.select("INBOX").unwrap();
    let dir = sb.mbpath("user.bob").unwrap();
    for m in &pop.stored["user.bob"] {
        let len = std::fs::metadata(dir.join(format!("{}.", m.uid)))
            .unwrap()
            .len();
        assert_eq!(len, m.size);
    }
    assert_healthy(&sb);
    eprintln!(
        "populate: {} mailboxes, {} bytes stored",
        pop.stored.len(),
        total_bytes
    );
}

#[test]
fn awkward_fixtures_are_stored_byte_for_byte() {
    let sb = Sandbox::start(opts("fixtures")).unwrap();
    let pop = populate(
        &sb,
        &PopulatePlan {
            users: vec!["fred".into()],
            folders_per_user: 0,
            messages: 0,
            ..PopulatePlan::default()
        },
    )
    .unwrap();
    assert!(pop.fixtures.len() >= 10, "{:?}", pop.fixtures.keys());
    let stored = &pop.stored["user.fred.Fixtures"];
    assert_eq!(stored.len(), pop.fixtures.len());
    let mut c = sb.login("fred").unwrap();
    c.examine("INBOX.Fixtures").unwrap();
    let fetched = c.uid_fetch("1:*", "(UID BODY.PEEK[])").unwrap();
    // Appended in name order, so UIDs follow the sorted fixture names.
    for ((name, sent), f) in pop.fixtures.iter().zip(&fetched) {
        assert_eq!(
            f.body.as_deref(),
            Some(sent.as_slice()),
            "fixture {name} changed in Cyrus"
        );
    }
    // 8-bit header bytes survive (munge8bit: no).
    assert!(pop.fixtures["headers-utf8.bin"].iter().any(|&b| b >= 0x80));
}

#[test]
fn big_message_roundtrips_over_imap() {
    let sb = Sandbox::start(opts("big")).unwrap();
    sb.create_user("gina", None).unwrap();
    let mail = MailGen::new(5).message_of_size(4_500_000);
    let (_, uid) = sb
        .append(
            "gina",
            None,
            &["$Forwarded", "Work"],
            Some(mail.date),
            &mail.bytes,
        )
        .unwrap();
    let mut c = sb.login("gina").unwrap();
    c.examine("INBOX").unwrap();
    let f = c
        .uid_fetch(
            &uid.to_string(),
            "(UID FLAGS INTERNALDATE RFC822.SIZE DIGEST.SHA1 BODY.PEEK[])",
        )
        .unwrap();
    assert_eq!(f[0].body.as_deref(), Some(mail.bytes.as_slice()));
    assert_eq!(f[0].rfc822_size, Some(mail.bytes.len() as u64));
    assert_eq!(f[0].internaldate.map(|d| d.0), Some(mail.date));
    assert_eq!(
        f[0].digest_sha1.as_deref(),
        Some(cyrvault::cyrus::Guid::of(&mail.bytes).to_hex().as_str())
    );
    let flags = f[0].flags.clone().unwrap();
    assert!(flags.contains(&"$Forwarded".to_string()) && flags.contains(&"Work".to_string()));
}

#[test]
fn history_expunges_renames_and_leaves_deleted_mailboxes() {
    let sb = Sandbox::start(opts("history")).unwrap();
    let pop = populate(
        &sb,
        &PopulatePlan {
            messages: 40,
            max_message_size: 20_000,
            fixtures: false,
            ..PopulatePlan::default()
        },
    )
    .unwrap();
    let h = make_history(&sb, &pop, 3).unwrap();
    assert!(!h.expunged.is_empty() && h.flag_changes > 0);
    assert_eq!(h.renamed.len(), 2);
    assert_eq!(h.deleted.len(), 2);
    let dump = sb.ctl_mboxlist_dump().unwrap();
    let names: Vec<&String> = dump.as_object().unwrap().keys().collect();
    for (old, new) in &h.renamed {
        assert!(dump.get(new).is_some(), "{new} missing in {names:?}");
        assert!(
            dump.get(old)
                .is_none_or(|e| e["mbtype"].as_str().unwrap_or("").contains('d'))
        );
    }
    for d in &h.deleted {
        let tail = d.strip_prefix("user.").unwrap();
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(&format!("DELETED.user.{tail}."))),
            "no DELETED.* for {d} in {names:?}"
        );
    }
    let mut c = sb.login("alice").unwrap();
    let info = c.select("INBOX").unwrap();
    let before = pop.stored["user.alice"].len();
    let gone = h.expunged.iter().filter(|(m, _)| m == "user.alice").count();
    assert_eq!(info.exists as usize, before - gone);
    assert_healthy(&sb);
}

#[test]
fn a_panicking_test_still_stops_cyrus() {
    let seen = std::sync::Mutex::new(None);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let sb = Sandbox::start(opts("panic")).unwrap();
        *seen.lock().unwrap() = Some((sb.master_pid().unwrap(), sb.root.clone(), sb.imap_addr));
        panic!("deliberate test panic with a running sandbox");
    }));
    assert!(r.is_err());
    let (pid, root, addr) = seen.lock().unwrap().clone().unwrap();
    assert!(!pid_alive(pid), "master {pid} still running");
    assert!(!port_open(addr));
    assert!(!root.exists());
}

/// Run by `a_killed_test_process_still_stops_cyrus` in a child process: start a
/// sandbox, report it, and abort without unwinding (so no Drop runs).
#[test]
#[ignore = "helper, run by a_killed_test_process_still_stops_cyrus"]
fn watchdog_child() {
    if std::env::var_os("CYRVAULT_WATCHDOG_CHILD").is_none() {
        return;
    }
    let sb = Sandbox::start(opts("abort")).unwrap();
    println!(
        "SANDBOX {} {} {}",
        sb.master_pid().unwrap(),
        sb.imap_addr,
        sb.root.display()
    );
    std::io::Write::flush(&mut std::io::stdout()).unwrap();
    std::process::abort();
}

#[test]
fn a_killed_test_process_still_stops_cyrus() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "sandbox::watchdog_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CYRVAULT_WATCHDOG_CHILD", "1")
        .env_remove("CYRVAULT_KEEP_SANDBOX")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child aborts");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.split_once("SANDBOX ").map(|(_, rest)| rest))
        .expect("child reported its sandbox");
    let parts: Vec<&str> = std::iter::once("").chain(line.split(' ')).collect();
    let pid: u32 = parts[1].parse().unwrap();
    let addr: std::net::SocketAddr = parts[2].parse().unwrap();
    let root = PathBuf::from(parts[3]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while (pid_alive(pid) || root.exists()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!pid_alive(pid), "master {pid} survived its test process");
    assert!(!port_open(addr));
    assert!(!root.exists(), "{} left behind", root.display());
}

#[test]
fn a_taken_port_is_a_clear_start_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let svc = ServiceLine {
        listen: Listen::Tcp(port),
        ..ServiceLine::tcp("taken", "imapd")
    };
    let before: Vec<PathBuf> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("cyrvault-taken-"))
        .collect();
    let err = match Sandbox::start(SandboxOptions {
        extra_services: vec![svc],
        ..opts("taken")
    }) {
        Ok(_) => panic!("started although port {port} is taken"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("unable to bind a listen address"), "{err}");
    assert!(err.contains("exit status: 69"), "{err}");
    assert!(err.contains("master log tail"), "{err}");
    // Every attempt cleaned up after itself.
    let after = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.path().to_string_lossy().contains("cyrvault-taken-"))
        .count();
    assert_eq!(after, before.len());
    drop(holder);
}

#[test]
fn imap_client_against_real_cyrus() {
    use cyrvault_host::imap::Client;
    let sb = Sandbox::start(opts("imapc")).unwrap();
    sb.create_user("hank", None).unwrap();

    // Admin proxy authentication: the admin's credentials, the user's session.
    let mut c = Client::connect(sb.imap_addr).unwrap();
    c.authenticate_plain("hank", "cyrus", "x").unwrap();
    let mut p = sb.admin_as("hank").unwrap();
    assert_eq!(p.select("INBOX").unwrap().exists, 0);
    p.logout().unwrap();
    // A non-admin cannot act for someone else.
    let mut n = Client::connect(sb.imap_addr).unwrap();
    let err = n.authenticate_plain("hank", "mallory", "x").unwrap_err();
    assert_eq!(err.kind, cyrvault_host::imap::ImapErrorKind::No, "{err}");
    let info = c.select("INBOX").unwrap();
    assert_eq!(info.exists, 0);
    assert!(info.uidvalidity > 0 && info.uidnext == 1 && info.mailboxid.is_some());

    // Quoted-string escapes: Cyrus never allows '"' or '\\' in mailbox names, but
    // any password passes (alwaystrue) once the server has unquoted it.
    let mut q = Client::connect(sb.imap_addr).unwrap();
    q.login("hank", "pa\"ss\\word \"x\"").unwrap();
    q.logout().unwrap();
    // Names with spaces, brackets and parentheses go out quoted and come back in LIST;
    // an 8-bit name goes out as a literal (refused or taken, the session survives).
    let odd = "INBOX.Re: [list] (2) ~#$'";
    let err = c.create("INBOX.back\\slash").unwrap_err().to_string();
    assert!(
        err.contains("create \"INBOX.back\\\\slash\" answered NO"),
        "{err}"
    );
    c.create(odd).unwrap();
    let names: Vec<String> = c
        .list("", "INBOX*")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.contains(&odd.to_string()), "{names:?}");
    let _ = c.create("INBOX.caf\u{e9}");
    c.noop().unwrap();

    // Synchronising literals (no LITERAL+): the client waits for "+ go ahead".
    c.disable_literal_plus();
    let msg = b"Subject: sync\r\n\r\nsynchronising literal\r\n";
    let (uv, uid) = c
        .append(odd, &["\\Flagged"], Some(1_600_000_000), msg)
        .unwrap()
        .unwrap();
    assert_eq!(uv, c.select(odd).unwrap().uidvalidity);
    let f = c
        .uid_fetch(
            &uid.to_string(),
            "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])",
        )
        .unwrap();
    assert_eq!(f[0].body.as_deref(), Some(&msg[..]));
    assert_eq!(f[0].internaldate, Some((1_600_000_000, 0)));

    // STORE, EXPUNGE, STATUS, ACLs, subscriptions, RENAME, DELETE.
    let stored = c
        .uid_store(&uid.to_string(), "+FLAGS", &["\\Deleted", "$Label1"])
        .unwrap();
    assert!(
        stored[0]
            .flags
            .as_ref()
            .unwrap()
            .contains(&"$Label1".to_string())
    );
    assert_eq!(c.expunge().unwrap(), vec![1]);
    let st = c.status(odd, "(MESSAGES UIDNEXT)").unwrap();
    assert!(st.contains(&("MESSAGES".to_string(), 0)) && st.contains(&("UIDNEXT".to_string(), 2)));
    c.setacl("INBOX", "anyone", "lr").unwrap();
    let acl = c.getacl("INBOX").unwrap();
    assert!(
        acl.contains(&("anyone".to_string(), "lr".to_string())),
        "{acl:?}"
    );
    c.deleteacl("INBOX", "anyone").unwrap();
    c.subscribe(odd).unwrap();
    assert_eq!(c.lsub("", "*").unwrap().len(), 1);
    c.rename(odd, "INBOX.plain").unwrap();
    c.delete("INBOX.plain").unwrap();
    // A NO is a typed error naming the command, with the server's code and text.
    let err = c.select("INBOX.nonexistent").unwrap_err();
    assert_eq!(err.kind, cyrvault_host::imap::ImapErrorKind::No);
    assert_eq!(err.command, "select \"INBOX.nonexistent\"");
    assert_eq!(err.server, sb.imap_addr.to_string());
    eprintln!("select nonexistent: {err}");
    c.create("INBOX.twice").unwrap();
    let err = c.create("INBOX.twice").unwrap_err();
    eprintln!("create existing: {err}");
    assert!(err.is_no(None), "{err}");
    let bad = c
        .execute(&[cyrvault_host::imap::Arg::Atom("FROBNICATE")])
        .unwrap();
    assert_eq!(bad.status.status, cyrvault_host::imap::Status::Bad);
    let crate_err: cyrvault_host::Error = c
        .run(&[cyrvault_host::imap::Arg::Atom("FROBNICATE")])
        .unwrap_err()
        .into();
    assert!(matches!(
        crate_err,
        cyrvault_host::Error::Service(cyrvault::Error::Imap { .. })
    ));
    c.logout().unwrap();

    // create_on_partition is an admin-only Cyrus extension.
    let mut admin = sb.admin().unwrap();
    admin.create_on_partition("user.hank.onp2", "p2").unwrap();
    assert!(
        sb.mbpath("user.hank.onp2")
            .unwrap()
            .starts_with(sb.partition_dir("p2").unwrap())
    );
    assert!(admin.create_on_partition("user.hank.nope", "p9").is_err());
}

#[test]
fn bad_options_are_refused_and_leave_nothing_behind() {
    let count = || {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("cyrvault-badopt")
            })
            .count()
    };
    let before = count();
    for o in [
        SandboxOptions {
            partitions: 1,
            ..opts("badopt")
        },
        SandboxOptions {
            name_hint: "bad opt".into(),
            ..SandboxOptions::default()
        },
        SandboxOptions {
            extra_services: vec![ServiceLine::tcp("no-dash", "imapd")],
            ..opts("badopt")
        },
    ] {
        let err = Sandbox::start(o).err().expect("refused");
        assert!(
            matches!(
                err,
                cyrvault_host::Error::Service(cyrvault::Error::Refused(_))
            ),
            "{err}"
        );
    }
    // A service whose program does not exist: master refuses to run.
    let err = Sandbox::start(SandboxOptions {
        extra_services: vec![ServiceLine::tcp("ghost", "/nonexistent/cyrvaultd")],
        ..opts("badopt")
    })
    .err()
    .expect("master refuses a missing program");
    assert!(err.to_string().contains("master exited early"), "{err}");
    assert_eq!(count(), before);
}

#[test]
fn cyrus_syslog_is_captured_per_sandbox() {
    let sb = Sandbox::start(opts("syslog")).unwrap();
    if !sb.syslog_captured() {
        crate::prerequisite::missing(
            "cyrus_syslog_is_captured_per_sandbox",
            "syslog capture (a /dev/log exists, or no mount namespaces here)",
        );
        return;
    }
    sb.create_user("ivan", None).unwrap();
    let mut c = sb.login("ivan").unwrap();
    c.select("INBOX").unwrap();
    c.logout().unwrap();
    sb.tool_ok("ctl_mboxlist", &["-d"]).unwrap();
    // Give the reader thread a moment.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = sb.syslog();
    eprintln!("{log}");
    assert!(log.contains(&sb.servername), "{log}");
    assert!(log.contains("login:"), "imapd's login line: {log}");
    // A healthy private instance: no database or I/O errors.
    assert!(
        !log.contains("DBERROR") && !log.contains("IOERROR"),
        "{log}"
    );
    // The namespace hides nothing else: the system has still no /dev/log.
    assert!(!Path::new("/dev/log").exists());
}
