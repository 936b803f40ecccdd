//! Security against the running service (`cyrvaultd_secret_file` set): what a
//! client without the secret, with a wrong or replayed answer, with overlong lines
//! or hostile names gets, that each refusal is logged, that a world-readable
//! secret keeps the service from starting, and that the allowlist is enforced.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cyrvault::protocol::auth::auth_answer;
use nix::unistd::{User, chown};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const SECRET: &[u8] = b"svctest-secret-0123456789abcdef";

/// A directory of ours holding the secret files; removed on drop.
struct Secrets {
    dir: PathBuf,
}

impl Secrets {
    fn new() -> Secrets {
        let dir = std::env::temp_dir().join(format!("cyrvault-svcsec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cyrus = User::from_name("cyrus").unwrap().expect("user cyrus");
        for (name, mode) in [("good.secret", 0o600), ("world.secret", 0o644)] {
            let p = dir.join(name);
            std::fs::write(&p, SECRET).unwrap();
            chown(&p, Some(cyrus.uid), Some(cyrus.gid)).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        Secrets { dir }
    }
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `AUTH BEGIN`; returns the nonce.
fn begin(r: &mut Raw, slot: &str) -> [u8; 32] {
    assert_eq!(r.ask(&format!("AUTH {slot} BEGIN")), "OK");
    let ch = r.line();
    let hex = ch.strip_prefix("CHALLENGE ").expect("CHALLENGE line");
    assert_eq!(r.line(), "DONE AUTH");
    hex::decode(hex).unwrap().try_into().unwrap()
}

fn answer_line(slot: &str, answer: &[u8]) -> String {
    format!("AUTH {slot} ANSWER {}", hex::encode(answer))
}

/// Wait (bounded) until the captured syslog contains `needle`.
fn logged(sb: &Sandbox, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if sb.syslog().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn secret_bounds_names_logs_and_allowlist() {
    let secrets = Secrets::new();
    let good = secrets.path("good.secret");
    let world = secrets.path("world.secret");
    let sb = start(
        "svcsec",
        &[
            ("cyrvaultd_secret_file", &good),
            ("cvworld_cyrvaultd_secret_file", &world),
            ("cvdeny_cyrvaultd_allow", "10.9.9.9"),
        ],
        vec![service_line(Some("cvworld")), service_line(Some("cvdeny"))],
    );
    assert!(
        sb.syslog_captured(),
        "these checks read the service's syslog"
    );
    sb.create_user("alice", None).unwrap();
    sb.append("alice", None, &[], None, b"Subject: s\r\n\r\nx\r\n")
        .unwrap();
    let slot = sb.servername.clone();
    let svc = addr(&sb, "cyrvaultd");

    // No AUTH: everything but PING, QUIT, CAPABILITY, AUTH is refused.
    let mut r = Raw::new(svc);
    assert_eq!(r.ask("PING"), "OK");
    assert_eq!(r.line(), "DONE PING");
    for cmd in [
        format!("USERS {slot}"),
        format!("FMETA {slot} alice INBOX header"),
        format!("FDATA {slot} alice INBOX 1"),
        format!("SNAPSHOT {slot} alice"),
    ] {
        assert_eq!(r.ask(&cmd), "NO authentication required", "{cmd}");
    }
    assert!(
        logged(&sb, "authentication required"),
        "{}",
        sb.syslog_tail(3000)
    );

    // A wrong answer: refused after the delay, logged.
    let _ = begin(&mut r, &slot);
    let t = Instant::now();
    assert_eq!(
        r.ask(&answer_line(&slot, &[0u8; 32])),
        "NO authentication failed"
    );
    let delay = t.elapsed();
    assert!(delay >= Duration::from_millis(1500), "no delay: {delay:?}");
    assert!(
        logged(&sb, "auth failed from 127.0.0.1"),
        "{}",
        sb.syslog_tail(3000)
    );
    // ... and still not authenticated
    assert_eq!(
        r.ask(&format!("USERS {slot}")),
        "NO authentication required"
    );

    // A right answer works once; recorded and replayed it fails, in the same
    // session (nonce used up) and in a new one (new nonce).
    let mut a = Raw::new(svc);
    let nonce = begin(&mut a, &slot);
    let recorded = auth_answer(SECRET, &nonce, slot.as_bytes());
    assert_eq!(a.ask(&answer_line(&slot, &recorded)), "OK");
    assert_eq!(a.line(), "DONE AUTH");
    assert_eq!(a.ask(&format!("USERS {slot}")), "OK");
    assert_eq!(a.line(), "USER alice");
    assert_eq!(a.line(), "DONE USERS");
    assert_eq!(
        a.ask(&answer_line(&slot, &recorded)),
        "NO no challenge outstanding"
    );
    let mut b = Raw::new(svc);
    let _ = begin(&mut b, &slot);
    assert_eq!(
        b.ask(&answer_line(&slot, &recorded)),
        "NO authentication failed"
    );
    assert_eq!(
        b.ask(&format!("USERS {slot}")),
        "NO authentication required"
    );

    // Authenticated session `a`: bounds and names. Each gets NO, the session goes
    // on (PING after each), and each is logged.
    let long = "X".repeat(100 * 1024);
    let cases: Vec<(String, &str)> = vec![
        (format!("USERS {slot} {long}"), "NO line too long"),
        (format!("FROB {slot} x"), "NO unknown command FROB"),
        (
            format!("FMETA {slot} ..%2F..%2Fetc INBOX header"),
            "NO invalid user",
        ),
        (format!("FMETA {slot} ../x INBOX header"), "NO invalid user"),
        (
            format!("FMETA {slot} al%00ice INBOX header"),
            "NO invalid user",
        ),
        (
            format!("FDATA {slot} alice INBOX%00x 1"),
            "NO invalid folder",
        ),
        // A folder name is looked up in mailboxes.db, never used as a path: a name
        // with `..` in it is simply not one of alice's folders (issue 9: Cyrus
        // accepts `INBOX/..` as a folder name, so it must not be refused).
        (
            format!("FMETA {slot} alice INBOX/../../x header"),
            "NO no such folder",
        ),
        (
            format!("FMETA {slot} alice INBOX.%2E%2E%2F%2E%2E header"),
            "NO no such folder",
        ),
        (
            format!("META {slot} {}", "u".repeat(300)),
            "NO user too long",
        ),
        (
            format!("FMETA {slot} alice {} header", "f".repeat(2000)),
            "NO folder too long",
        ),
        (
            format!("FMETA {slot} alice {} header", "f".repeat(10 * 1024)),
            "NO ",
        ),
        (format!("META {slot} {}", "u".repeat(10 * 1024)), "NO "),
    ];
    let mut answers = Vec::new();
    for (line, want) in &cases {
        let got = a.ask(line);
        assert!(
            got.starts_with(want),
            "{}...: {got}",
            &line[..line.len().min(60)]
        );
        assert_eq!(a.ask("PING"), "OK", "after {got}");
        assert_eq!(a.line(), "DONE PING");
        answers.push(got);
    }
    // every refusal is logged (a folder that is not there is an answer, not one)
    for got in answers
        .iter()
        .filter(|a| !a.starts_with("NO no such folder"))
    {
        let text = got.strip_prefix("NO ").unwrap();
        let head = &text[..text.len().min(40)];
        assert!(
            logged(&sb, head),
            "not logged: {got}\n{}",
            sb.syslog_tail(3000)
        );
    }
    eprintln!("refusals: {answers:#?}");

    // Seeded random lines: never a crash, a hang or a closed session.
    let mut rng = StdRng::seed_from_u64(3);
    let words = [
        "USERS",
        "META",
        "FMETA",
        "FDATA",
        "FMULTISTATUS",
        "SNAPSHOT",
        "AUTH",
        "STATUS",
        "CAPABILITY",
    ];
    for _ in 0..300 {
        let mut line = Vec::new();
        if rng.gen_bool(0.7) {
            line.extend_from_slice(words[rng.gen_range(0..words.len())].as_bytes());
            line.push(b' ');
            if rng.gen_bool(0.8) {
                line.extend_from_slice(slot.as_bytes());
                line.push(b' ');
            }
        }
        for _ in 0..rng.gen_range(0..120) {
            let b: u8 = rng.r#gen();
            line.push(match b {
                b'\n' => b' ',
                b if b < 0x80 && rng.gen_bool(0.3) => b'%',
                b => b,
            });
        }
        if line.starts_with(b"QUIT") {
            continue;
        }
        line.push(b'\n');
        a.send(&line);
        a.send(b"PING\n");
        // read up to our PING's answer (the random line may have produced anything)
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no PING answer");
            let l = a.line();
            if l == "DONE PING" {
                break;
            }
            assert!(
                !l.is_empty(),
                "session closed after {:?}",
                String::from_utf8_lossy(&line)
            );
        }
    }

    // A world-readable secret: the child refuses to start, a client gets no session.
    let mut w = Raw::new(addr(&sb, "cvworld"));
    w.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = std::io::Write::write_all(&mut w.stream, b"PING\n");
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut w.reader, &mut got);
    assert!(
        got.is_empty(),
        "a session with a world-readable secret: {got:?}"
    );
    assert!(logged(&sb, "chmod 600"), "{}", sb.syslog_tail(4000));
    let log = sb.syslog();
    let why = log.lines().find(|l| l.contains("chmod 600")).unwrap_or("");
    eprintln!("world-readable secret: {why}");

    // An address outside cyrvaultd_allow: refused before anything else.
    let mut d = Raw::new(addr(&sb, "cvdeny"));
    assert_eq!(d.ask("PING"), "NO access denied");
    // then the connection closes (EOF, or a reset: our PING was never read)
    let mut after = Vec::new();
    let _ = std::io::Read::read_to_end(&mut d.reader, &mut after);
    assert!(after.is_empty(), "{after:?}");
    assert!(
        logged(&sb, "not in cyrvaultd_allow"),
        "{}",
        sb.syslog_tail(3000)
    );
    drop(secrets);
}
