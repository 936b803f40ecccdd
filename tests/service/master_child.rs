//! The shipped SERVICES line under Cyrus's real master: clients connect, list and
//! snapshot users, `-U` recycles the child, and a child killed -9 in the middle of
//! a session leaves no Cyrus lock behind.

use std::time::{Duration, Instant};

use cyrvault::protocol::request::Request;
use cyrvault_testkit::sandbox::{MailGen, PopulatePlan, populate};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::load::{check_folder, fetch_and_verify};
use super::*;

/// How long an APPEND may take right after a child was killed (it takes a few ms
/// when nothing is locked; a stale lock would block it until the kernel frees it,
/// which it does with the process, or forever if it were a lock file).
const APPEND_BOUND: Duration = Duration::from_secs(3);

fn timed_append(sb: &cyrvault_testkit::sandbox::Sandbox, user: &str) -> Duration {
    let mut c = sb.login(user).expect("IMAP login");
    let t = Instant::now();
    c.append("INBOX", &[], None, b"Subject: after kill\r\n\r\nx\r\n")
        .expect("APPEND after the kill");
    let took = t.elapsed();
    c.logout().unwrap();
    took
}

/// On Cyrus 3.6 and 3.10 (`per_cyrus!`).
fn master_runs_the_snippet_and_survives_killed_children(
    cyrus: &cyrvault_testkit::sandbox::CyrusInstall,
) {
    let sb = start_on(Some(cyrus), "svcmaster", &[], vec![]);
    let plan = PopulatePlan {
        users: vec!["alice".into(), "bob".into()],
        folders_per_user: 2,
        messages: 24,
        max_message_size: 32 * 1024,
        fixtures: false,
        ..Default::default()
    };
    populate(&sb, &plan).expect("populate");
    let big = MailGen::new(9).message_of_size(6 << 20).bytes;
    let (_, big_uid) = sb.append("alice", None, &[], None, &big).unwrap();
    let slot = sb.servername.as_bytes().to_vec();

    // USERS, FMULTISTATUS, SNAPSHOT, FMETA, FDATA over master's socket.
    let mut c = client(&sb, "cyrvaultd");
    c.ping().unwrap();
    assert_eq!(c.users().unwrap(), [b"alice".to_vec(), b"bob".to_vec()]);
    let listed = c.fmultistatus(b"alice").unwrap();
    assert_eq!(listed[0].name, b"INBOX");
    let mut snap = Grouped::default();
    let done = c
        .fetch(
            &Request::Snapshot {
                slot: slot.clone(),
                user: b"alice".to_vec(),
            },
            &mut snap,
        )
        .unwrap();
    assert_eq!(done[0], b"SNAPSHOT");
    assert_eq!(done[1], listed.len().to_string().as_bytes());
    assert_eq!(snap.folders.len(), listed.len());
    let mut fetched = 0;
    for (f, l) in snap.folders.iter().zip(&listed) {
        assert_eq!(f.name, l.name);
        assert_eq!(f.uniqueid.as_bytes(), l.uniqueid.as_slice());
        let index = check_folder(f);
        let (ok, gone) = fetch_and_verify(&mut c, b"alice", &f.name, &index).unwrap();
        assert_eq!(gone, 0, "nothing is expunged here");
        fetched += ok;
    }
    assert!(fetched >= 13, "alice's messages fetched: {fetched}");
    let st = status(&mut c, &slot);
    assert_eq!(st["sessions_total"], 1, "{st:?}");
    c.quit().unwrap();

    // -U (50 in the snippet): one child serves 50 sessions, then master starts a
    // new one. STATUS counts sessions per process.
    let (_, args, _) = snippet_entry();
    let uses: u64 = args
        .iter()
        .position(|a| a == "-U")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .expect("-U <n> in the snippet");
    // Master may run more than one child (it forks another when a connection
    // arrives before the last child said AVAILABLE), so follow children by pid.
    let mut served: std::collections::BTreeMap<i32, u64> = Default::default();
    let mut retired = None;
    for _ in 0..(4 * uses) {
        let s = tcp(addr(&sb, "cyrvaultd"));
        let mut c = authenticated(&sb, s.try_clone().unwrap());
        let n = status(&mut c, &slot)["sessions_total"];
        let pid = server_pid(&s).expect("the child serving this connection");
        c.quit().unwrap();
        assert!(n <= uses, "child {pid} served {n} > {uses} sessions");
        served.insert(pid, n);
        if n == uses {
            retired = Some(pid);
            break;
        }
        // let the child report AVAILABLE before the next connection
        std::thread::sleep(Duration::from_millis(5));
    }
    let retired = retired.unwrap_or_else(|| panic!("no child reached -U {uses}: {served:?}"));
    // The child that reached -U exits, and the service goes on with another one.
    let gone = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        !std::path::Path::new(&format!("/proc/{retired}")).exists()
            || std::fs::read_to_string(format!("/proc/{retired}/stat"))
                .map(|st| st.contains(") Z "))
                .unwrap_or(true)
    });
    assert!(gone, "child {retired} still running after {uses} sessions");
    let s = tcp(addr(&sb, "cyrvaultd"));
    let mut c = authenticated(&sb, s.try_clone().unwrap());
    let n = status(&mut c, &slot)["sessions_total"];
    let pid = server_pid(&s).expect("the child serving this connection");
    c.quit().unwrap();
    assert_ne!(pid, retired, "a retired child answered");
    assert!(n <= uses);

    // kill -9 a child while it streams a 6 MB FDATA; then one while it works
    // through a burst of pipelined FMETAs (it takes and drops the locks 200 times).
    let mut r = Raw::new(addr(&sb, "cyrvaultd"));
    r.auth(&sb);
    r.send(format!("FDATA {} alice INBOX {big_uid}\n", sb.servername).as_bytes());
    assert_eq!(r.line(), "OK");
    assert!(r.line().starts_with(&format!("DATA {big_uid} ")));
    let mut buf = vec![0u8; 64 * 1024];
    std::io::Read::read_exact(&mut r.reader, &mut buf).unwrap();
    let pid = server_pid(&r.stream).expect("the child serving us");
    assert_ne!(Some(pid as u32), sb.master_pid());
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let took = timed_append(&sb, "alice");
    assert!(took < APPEND_BOUND, "APPEND after kill took {took:?}");
    eprintln!("APPEND right after kill -9 mid-FDATA: {took:?}");

    let mut r = Raw::new(addr(&sb, "cyrvaultd"));
    r.auth(&sb);
    let line = format!(
        "FMETA {} alice INBOX header index annotations\n",
        sb.servername
    );
    r.send(line.repeat(200).as_bytes());
    assert_eq!(r.line(), "OK");
    let pid = server_pid(&r.stream).expect("the child serving us");
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let took = timed_append(&sb, "alice");
    assert!(took < APPEND_BOUND, "APPEND after kill took {took:?}");
    eprintln!("APPEND right after kill -9 during FMETAs: {took:?}");

    // master is still there and serves new clients
    let mut c = client(&sb, "cyrvaultd");
    c.ping().unwrap();
    assert_eq!(c.users().unwrap().len(), 2);
    assert!(!sb.syslog().contains("IOERROR"), "{}", sb.syslog_tail(4000));
}

crate::per_cyrus!(master_runs_the_snippet_and_survives_killed_children);
