//! Security against the running service (`cyrvaultd_secret_file` set): what a
//! client without the secret, with a wrong or replayed answer, with overlong lines
//! or hostile names gets, that each refusal is logged, that a world-readable
//! secret keeps the service from starting, and that the allowlist is enforced.
//! (`secure_default.rs` has the rest of issue #13: the default without a secret,
//! TLS, timeouts, hostile connections.)

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cyrvault::protocol::auth::{Transcript, client_answer};
use nix::unistd::{User, chown};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const SECRET: &[u8] = b"svctest-secret-0123456789abcdefghij";
const CLIENT_NONCE: [u8; 32] = [0x33; 32];

/// A directory of ours holding the secret files; removed on drop.
struct Secrets {
    dir: PathBuf,
}

impl Secrets {
    fn new(tag: &str) -> Secrets {
        let dir =
            std::env::temp_dir().join(format!("cyrvault-svcsec-{tag}-{}", std::process::id()));
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

/// `AUTH BEGIN` with [`CLIENT_NONCE`]; returns the server's nonce.
fn begin(r: &mut Raw, slot: &str) -> [u8; 32] {
    assert_eq!(
        r.ask(&format!("AUTH {slot} BEGIN {}", hex::encode(CLIENT_NONCE))),
        "OK"
    );
    let ch = r.line();
    let hex = ch.strip_prefix("CHALLENGE ").expect("CHALLENGE line");
    assert_eq!(r.line(), "DONE AUTH");
    hex::decode(hex).unwrap().try_into().unwrap()
}

fn answer_line(slot: &str, answer: &[u8]) -> String {
    format!("AUTH {slot} ANSWER {}", hex::encode(answer))
}

fn right_answer(slot: &str, server_nonce: &[u8; 32]) -> [u8; 32] {
    client_answer(
        SECRET,
        &Transcript {
            server_nonce,
            client_nonce: &CLIENT_NONCE,
            slot: slot.as_bytes(),
            binding: None,
        },
    )
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
    let secrets = Secrets::new("bounds");
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

    // A wrong answer: refused at once (no delay holds the child), logged, and the
    // session ends; the address's next AUTH within the delay is refused too.
    let _ = begin(&mut r, &slot);
    let t = Instant::now();
    assert_eq!(
        r.ask(&answer_line(&slot, &[0u8; 32])),
        "NO authentication failed"
    );
    assert!(r.rest().is_empty(), "the session ends after a failed AUTH");
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "a failure held the child: {took:?}"
    );
    assert!(
        logged(&sb, "auth failed from 127.0.0.1"),
        "{}",
        sb.syslog_tail(3000)
    );
    let mut again = Raw::new(svc);
    let refused = again.ask(&format!("AUTH {slot} BEGIN {}", hex::encode(CLIENT_NONCE)));
    assert!(
        refused.starts_with("NO authentication failed recently from this address"),
        "{refused}"
    );
    assert!(again.rest().is_empty());
    std::thread::sleep(Duration::from_millis(2100));

    // A right answer works once; recorded and replayed it fails, in the same
    // session (challenge used up) and in a new one (new server nonce).
    let mut a = Raw::new(svc);
    let nonce = begin(&mut a, &slot);
    let recorded = right_answer(&slot, &nonce);
    assert_eq!(a.ask(&answer_line(&slot, &recorded)), "OK");
    assert!(a.line().starts_with("PROOF "));
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
    assert!(b.rest().is_empty());

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

    // 300 refusals in one session: logged at a bounded rate, the rest counted.
    assert_eq!(a.ask("QUIT"), "OK");
    assert!(
        logged(&sb, "were not logged (rate limit)"),
        "{}",
        sb.syslog_tail(3000)
    );
    let refusal_lines = sb.syslog().matches("refused request from").count();
    assert!(
        refusal_lines < 150,
        "{refusal_lines} refusal lines for ~320 refusals"
    );
    eprintln!("~320 refusals in one session: {refusal_lines} syslog lines");

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

/// Secret rotation (doc/security.md 4): with `cyrvaultd_secret_file_next` the
/// service accepts both secrets, and proves itself with the one the client used.
#[test]
fn rotation_accepts_either_secret_and_proves_with_it() {
    use cyrvault::secret::Secret;
    let secrets = Secrets::new("rotation");
    const NEXT: &[u8] = b"svctest-next-secret-ZYXWVUTSRQPONMLK";
    let next = secrets.dir.join("next.secret");
    std::fs::write(&next, NEXT).unwrap();
    let cyrus = User::from_name("cyrus").unwrap().expect("user cyrus");
    chown(&next, Some(cyrus.uid), Some(cyrus.gid)).unwrap();
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o600)).unwrap();
    let good = secrets.path("good.secret");
    let next_path = next.display().to_string();
    let sb = start(
        "svcrot",
        &[
            ("cyrvaultd_secret_file", &good),
            ("cyrvaultd_secret_file_next", &next_path),
        ],
        vec![],
    );
    sb.create_user("alice", None).unwrap();
    for key in [SECRET, NEXT] {
        let mut c = unauthenticated(&sb, tcp(addr(&sb, "cyrvaultd")));
        let s = Secret::from_bytes(key).unwrap();
        c.authenticate(s.bytes(), None)
            .expect("either secret of the rotation authenticates (and the proof verifies)");
        assert_eq!(c.users().unwrap(), [b"alice".to_vec()]);
    }
    let mut c = unauthenticated(&sb, tcp(addr(&sb, "cyrvaultd")));
    assert!(
        c.authenticate(b"a-third-secret-nobody-configured-0123", None)
            .is_err()
    );
    drop(secrets);
}
