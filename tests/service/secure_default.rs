//! Issue #13's "Must show", against cyrvaultd under Cyrus's real master:
//!
//! * `nothing_without_authentication`: every command, unauthenticated, on the
//!   default configuration (a secret configured; and no secret at all): no byte of
//!   mail or metadata comes back.
//! * `tls_against_a_relay`: a relay on loopback that records and alters bytes can
//!   neither read nor change a TLS session; the client refuses a wrong certificate,
//!   a wrong pin, a server without TLS, and plaintext injected after STARTTLS.
//! * `idle_connections_are_dropped`: `maxchild` idle connections (authenticated, and
//!   unauthenticated from several addresses) are dropped after the timeouts, and a
//!   backup then succeeds.
//! * `hostile_connections_beside_a_backup`: 200 hostile connections (idle, slow,
//!   garbage, wrong AUTH) from another address while a backup runs: it succeeds in
//!   far less than the authentication timeout.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cyrvault_host::backup::{self, BackupOptions, ConnectOptions, Server};
use cyrvault_host::vault::Vault;
use cyrvault_testkit::sandbox::SandboxOptions;

use super::*;
use crate::certs::Pki;

/// A TCP connection to `to` from the loopback address `from` (127.0.0.2, ...: every
/// 127/8 address is this machine; the service sees another peer).
fn tcp_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    use std::os::fd::AsRawFd;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(from, 0)),
    )
    .unwrap();
    let SocketAddr::V4(to4) = to else {
        panic!("ipv4 only")
    };
    connect(fd.as_raw_fd(), &SockaddrIn::from(to4)).unwrap();
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Some mail for alice, with a canary string a relay must never see.
const CANARY: &str = "CANARY-7c1e-mail-body-never-on-the-wire";

fn mail_for_alice(sb: &Sandbox, n: usize) {
    sb.create_user("alice", None).unwrap();
    sb.create_folder("alice", "Private", None).unwrap();
    for i in 0..n {
        let body = format!(
            "Subject: secret plans {i}\r\nFrom: a@example.org\r\n\r\n{CANARY} {}\r\n",
            "x".repeat(2000 + 97 * i)
        );
        let folder = if i % 2 == 0 { None } else { Some("Private") };
        sb.append("alice", folder, &[], None, body.as_bytes())
            .unwrap();
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cyrvault-secdef-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every command a client can send, with arguments that name real data.
fn every_command(slot: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        "CAPABILITY {s}",
        "USERS {s}",
        "users {s}",
        "META {s} alice",
        "META {s} alice seen sub",
        "FMULTISTATUS {s} alice",
        "FMETA {s} alice INBOX",
        "FMETA {s} alice INBOX header index annotations mailbox_annotations",
        "FMETA {s} alice Private header index",
        "FDATA {s} alice INBOX 1 2 3",
        "fdata {s} alice Private 1",
        "SNAPSHOT {s} alice",
        "PARTITIONS {s}",
        "STATUS {s}",
        "STARTTLS {s}",
        "AUTH {s} BEGIN 0000000000000000000000000000000000000000000000000000000000000000",
        "AUTH {s} ANSWER 0000000000000000000000000000000000000000000000000000000000000000",
        "FROB {s} alice",
        "USERS wrong-slot",
        "FDATA wrong-slot alice INBOX 1",
    ]
    .iter()
    .map(|t| t.replace("{s}", slot))
    .collect();
    v.push("PING".into());
    v
}

/// Send each command on its own connection and collect every reply byte (until
/// the server closes or stays silent for a moment).
fn replies_unauthenticated(addr: SocketAddr, slot: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for cmd in every_command(slot) {
        let mut s = tcp(addr);
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        s.write_all(format!("{cmd}\nQUIT\n").as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        out.push((cmd, String::from_utf8_lossy(&got).into_owned()));
    }
    out
}

/// The reply lines a client without AUTH may see.
fn harmless(line: &str) -> bool {
    line == "OK"
        || line == "DONE PING"
        || line == "DONE CAPABILITY"
        || line == "DONE AUTH"
        || line.starts_with("NO ")
        || line.starts_with("CAP ")
        || line.starts_with("CHALLENGE ")
}

#[test]
fn nothing_without_authentication() {
    for with_secret in [true, false] {
        let sb = Sandbox::start(SandboxOptions {
            name_hint: "secdef-none".into(),
            extra_services: vec![service_line(None)],
            cyrvaultd_secret: with_secret,
            ..Default::default()
        })
        .unwrap();
        mail_for_alice(&sb, 4);
        let slot = sb.servername.clone();
        let replies = replies_unauthenticated(addr(&sb, "cyrvaultd"), &slot);
        for (cmd, reply) in &replies {
            for line in reply.lines() {
                assert!(harmless(line), "{cmd:?} got {line:?}");
            }
            for secret_bit in ["alice", "Private", CANARY, "spool", "DATA ", "STAT "] {
                assert!(
                    !reply.contains(secret_bit),
                    "{cmd:?} leaked {secret_bit:?}: {reply:?}"
                );
            }
        }
        let refused = replies
            .iter()
            .filter(|(_, r)| r.contains("NO authentication required"))
            .count();
        // USERS x2, META x2, FMULTISTATUS, FMETA x3, FDATA x2, SNAPSHOT, PARTITIONS,
        // STATUS, FROB, wrong-slot x2
        assert_eq!(refused, 16, "{replies:#?}");
        eprintln!(
            "secret configured: {with_secret}; every command unauthenticated:\n{}",
            replies
                .iter()
                .map(|(c, r)| format!("  {c:.60} -> {:?}", r.lines().next().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("\n")
        );
        if !with_secret {
            assert!(
                sb.syslog().contains("every request is refused") || !sb.syslog_captured(),
                "{}",
                sb.syslog_tail(3000)
            );
        }
    }
}

/// A relay between a client and the service that records both directions, and may
/// alter what passes.
struct Relay {
    addr: SocketAddr,
    to_server: Arc<Mutex<Vec<u8>>>,
    to_client: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

#[derive(Clone, Copy)]
enum Tamper {
    None,
    /// Flip one bit of the server's stream once this many bytes went by.
    FlipServerByte(usize),
    /// Send `USERS <slot>` in plaintext right behind the client's STARTTLS line.
    InjectAfterStartTls,
}

impl Relay {
    fn start(upstream: SocketAddr, tamper: Tamper, slot: &str) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let to_server = Arc::new(Mutex::new(Vec::new()));
        let to_client = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ts, tc, st) = (to_server.clone(), to_client.clone(), stop.clone());
        let inject = format!("USERS {slot}\n").into_bytes();
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let (client, _) = match l.accept() {
                    Ok(c) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let server = TcpStream::connect(upstream).unwrap();
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (ts, tc) = (ts.clone(), tc.clone());
                let inject = inject.clone();
                std::thread::spawn(move || pump(client, server, ts, tamper, Some(inject), true));
                std::thread::spawn(move || pump(s2, c2, tc, tamper, None, false));
            }
        });
        Relay {
            addr,
            to_server,
            to_client,
            stop,
        }
    }

    fn seen(&self) -> (Vec<u8>, Vec<u8>) {
        (
            self.to_server.lock().unwrap().clone(),
            self.to_client.lock().unwrap().clone(),
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    log: Arc<Mutex<Vec<u8>>>,
    tamper: Tamper,
    inject: Option<Vec<u8>>,
    client_side: bool,
) {
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0usize;
    let mut flipped = false;
    let mut injected = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        log.lock().unwrap().extend_from_slice(chunk);
        if let (Tamper::FlipServerByte(at), false) = (tamper, client_side)
            && !flipped
            && total + n > at
        {
            let i = at.saturating_sub(total).min(n - 1);
            chunk[i] ^= 0x20;
            flipped = true;
        }
        total += n;
        if to.write_all(chunk).is_err() {
            break;
        }
        if let (Tamper::InjectAfterStartTls, Some(extra)) = (tamper, &inject)
            && !injected
            && chunk.windows(9).any(|w| w == b"STARTTLS ")
        {
            let _ = to.write_all(extra);
            injected = true;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// `cyrvault backup alice` to `addr` with `args`; (exit code, stderr).
fn backup_cli(
    sb: &Sandbox,
    vault: &std::path::Path,
    addr: SocketAddr,
    args: &[&str],
) -> (i32, String) {
    let o = Command::new(crate::bins::cyrvault())
        .args(["backup", "alice", "--server", &addr.to_string(), "--vault"])
        .arg(vault)
        .arg("--secret-file")
        .arg(&sb.cyrvaultd_secret_file)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn tls_against_a_relay() {
    let pki = Pki::new("relay");
    let (cert, key) = (
        pki.cert.display().to_string(),
        pki.key.display().to_string(),
    );
    // the certificate for this service only, as Cyrus services override options
    let sb = start(
        "secdef-tls",
        &[
            ("cvtls_tls_server_cert", &cert),
            ("cvtls_tls_server_key", &key),
            ("cvopen_tls_server_cert", &cert),
            ("cvopen_tls_server_key", &key),
            ("cvopen_cyrvaultd_allow_unauthenticated", "yes"),
        ],
        vec![service_line(Some("cvtls")), service_line(Some("cvopen"))],
    );
    mail_for_alice(&sb, 12);
    let slot = sb.servername.clone();
    let tls_svc = addr(&sb, "cvtls");
    let dir = scratch("tls");
    let ca = pki.ca.display().to_string();
    let other = pki.other_ca.display().to_string();

    // 1. Through a recording relay: the backup works, and the relay saw no mail,
    // no user name, no command after STARTTLS.
    let relay = Relay::start(tls_svc, Tamper::None, &slot);
    let (code, err) = backup_cli(&sb, &dir.join("v1"), relay.addr, &["--tls-ca-file", &ca]);
    assert_eq!(code, 0, "{err}");
    let (up, down) = relay.seen();
    let (up_s, down_s) = (
        String::from_utf8_lossy(&up).into_owned(),
        String::from_utf8_lossy(&down).into_owned(),
    );
    for bit in [
        CANARY,
        "alice",
        "Private",
        "secret plans",
        "FDATA",
        "SNAPSHOT",
        "AUTH",
    ] {
        assert!(
            !up_s.contains(bit) && !down_s.contains(bit),
            "relay saw {bit:?}"
        );
    }
    // what was plaintext: the servername probe and STARTTLS, nothing else
    assert!(
        up_s.starts_with("CAPABILITY cyrvault-probe-servername\n"),
        "{up_s:.80}"
    );
    assert!(up_s.contains(&format!("STARTTLS {slot}\n")));
    assert!(
        down.len() > 20_000,
        "the mail went through the relay, encrypted"
    );
    eprintln!(
        "relay saw {} bytes up, {} down; no mail, user or command in them",
        up.len(),
        down.len()
    );
    drop(relay);

    // 2. A relay that flips one bit of the server's stream after the handshake:
    // the client notices (TLS record authentication) and nothing is committed.
    let relay = Relay::start(tls_svc, Tamper::FlipServerByte(6000), &slot);
    let vault2 = dir.join("v2");
    let (code, err) = backup_cli(&sb, &vault2, relay.addr, &["--tls-ca-file", &ca]);
    assert_ne!(code, 0, "an altered session must fail");
    let lower = err.to_lowercase();
    assert!(
        ["tls", "decrypt", "mac", "corrupt"]
            .iter()
            .any(|w| lower.contains(w)),
        "{err}"
    );
    eprintln!("one flipped bit: exit {code}: {}", err.trim());
    drop(relay);
    // and a clean run afterwards works on the same vault
    let (code, err) = backup_cli(&sb, &vault2, tls_svc, &["--tls-ca-file", &ca]);
    assert_eq!(code, 0, "{err}");

    // 3. Plaintext injected behind STARTTLS is never answered.
    let relay = Relay::start(tls_svc, Tamper::InjectAfterStartTls, &slot);
    let (code, err) = backup_cli(&sb, &dir.join("v3"), relay.addr, &["--tls-ca-file", &ca]);
    assert_ne!(code, 0);
    let (_, down) = relay.seen();
    assert!(
        !String::from_utf8_lossy(&down).contains("USER alice"),
        "injection answered"
    );
    eprintln!("injected USERS after STARTTLS: exit {code}: {}", err.trim());
    drop(relay);

    // 4. The client refuses a certificate it cannot trust, and a wrong pin; a
    // right pin alone is enough.
    let (code, err) = backup_cli(&sb, &dir.join("v4"), tls_svc, &["--tls-ca-file", &other]);
    assert_eq!(code, 77, "wrong CA: {err}");
    assert!(err.contains("certificate"), "{err}");
    eprintln!("untrusted certificate: exit {code}: {}", err.trim());
    let wrong_pin = "00".repeat(32);
    let (code, err) = backup_cli(&sb, &dir.join("v4"), tls_svc, &["--tls-pin", &wrong_pin]);
    assert_eq!(code, 77, "wrong pin: {err}");
    let (code, err) = backup_cli(&sb, &dir.join("v5"), tls_svc, &["--tls-pin", &pki.pin]);
    assert_eq!(code, 0, "right pin: {err}");

    // 5. TLS asked for, a server without it: refused, never plaintext.
    let plain = addr(&sb, "cyrvaultd");
    let (code, err) = backup_cli(&sb, &dir.join("v6"), plain, &["--tls-ca-file", &ca]);
    assert_eq!(code, 77, "{err}");
    assert!(err.contains("does not offer"), "{err}");

    // 6. Without --tls against the TLS service: AUTH is refused outside TLS.
    let (code, err) = backup_cli(&sb, &dir.join("v7"), tls_svc, &[]);
    assert_eq!(code, 77, "{err}");
    assert!(err.contains("--tls"), "{err}");

    // 7. The stock Perl client beside TLS: where unauthenticated plaintext is allowed
    // it still works on the same port (STARTTLS is offered, not imposed on it).
    let mut r = Raw::new(addr(&sb, "cvopen"));
    assert_eq!(r.ask(&format!("USERS {slot}")), "OK");
    assert_eq!(r.line(), "USER alice");
    let mut r = Raw::new(addr(&sb, "cvopen"));
    assert_eq!(r.ask(&format!("CAPABILITY {slot}")), "OK");
    let caps: Vec<String> = (0..4).map(|_| r.line()).collect();
    assert!(caps.contains(&"CAP STARTTLS".to_string()), "{caps:?}");

    // 8. A wrong --servername is the configuration's fault, not "try again later".
    let (code, err) = backup_cli(
        &sb,
        &dir.join("v8"),
        plain,
        &["--servername", "not-this-server"],
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains(&format!("servername is \"{slot}\"")), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn backup_alice(sb: &Sandbox, server: SocketAddr, vault: &std::path::Path) -> backup::UserReport {
    let opts = ConnectOptions {
        secret: Some(sb.cyrvaultd_secret().unwrap()),
        ..Default::default()
    };
    let mut s = Server::connect(&server.to_string(), &opts).unwrap();
    let v = Vault::open(vault).unwrap();
    backup::backup_user(&mut s, &v, "alice", &BackupOptions::default()).unwrap()
}

/// Wait (bounded) for the server to close `s`; the time it took.
fn closed_within(mut s: TcpStream, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(t.elapsed()),
            Err(_) => return None,
        }
    }
}

#[test]
fn idle_connections_are_dropped() {
    let (_, _, options) = snippet_entry();
    let maxchild: usize = options
        .split_whitespace()
        .find_map(|w| w.strip_prefix("maxchild="))
        .and_then(|v| v.parse().ok())
        .expect("maxchild in the snippet");
    let sb = start(
        "secdef-idle",
        // the two limits far enough apart that each is seen to act on its own
        &[("cyrvaultd_timeout", "6"), ("cyrvaultd_auth_timeout", "2")],
        vec![],
    );
    mail_for_alice(&sb, 4);
    let svc = addr(&sb, "cyrvaultd");
    let dir = scratch("idle");

    // maxchild authenticated connections that then say nothing hold every child
    let mut idle = Vec::new();
    for _ in 0..maxchild {
        let mut r = Raw::new(svc);
        r.auth(&sb);
        idle.push(r);
    }
    let mut waiting = tcp(svc);
    waiting
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    waiting.write_all(b"PING\n").unwrap();
    let mut buf = [0u8; 64];
    assert!(
        waiting.read(&mut buf).is_err(),
        "a {}th connection was served while {maxchild} idle ones hold the children",
        maxchild + 1
    );
    let t = Instant::now();
    for r in idle {
        let took = closed_within(r.stream, Duration::from_secs(30))
            .expect("an idle connection was not dropped");
        assert!(took < Duration::from_secs(14), "{took:?}");
    }
    let dropped_after = t.elapsed();
    // the waiting one is served now
    waiting.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let n = waiting.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("OK"));
    drop(waiting);
    let rep = backup_alice(&sb, svc, &dir.join("vault"));
    assert_eq!(rep.messages_fetched, 4);
    eprintln!(
        "{maxchild} idle authenticated connections dropped {dropped_after:?} after the \
         check (cyrvaultd_timeout 6 s); then a backup of alice: {} messages",
        rep.messages_fetched
    );

    // unauthenticated idle connections from maxchild different addresses (so the
    // per-address limit does not turn them away): dropped after the auth timeout,
    // well before the 6 s inactivity timeout would
    let t = Instant::now();
    let quiet: Vec<TcpStream> = (0..maxchild)
        .map(|i| tcp_from(Ipv4Addr::new(127, 0, 0, 10 + i as u8), svc))
        .collect();
    for s in quiet {
        let took =
            closed_within(s, Duration::from_secs(20)).expect("a silent connection was not dropped");
        assert!(
            took < Duration::from_millis(5500),
            "{took:?}: not the 2 s authentication timeout"
        );
    }
    eprintln!(
        "{maxchild} silent unauthenticated connections dropped within {:?} (cyrvaultd_auth_timeout 2 s)",
        t.elapsed()
    );
    let rep = backup_alice(&sb, svc, &dir.join("vault"));
    assert_eq!(rep.messages_fetched, 0, "nothing new");

    // Cyrus's shutdown file: the next command is refused with its first line and the
    // process exits; without it the service works again.
    let msg = sb.config_dir().join("msg");
    std::fs::create_dir_all(&msg).unwrap();
    std::fs::write(msg.join("shutdown"), "down for maintenance\nsecond line\n").unwrap();
    let mut r = Raw::new(svc);
    assert_eq!(r.ask("PING"), "NO shutdown: down for maintenance");
    assert!(r.rest().is_empty(), "the session ends");
    std::fs::remove_file(msg.join("shutdown")).unwrap();
    let mut r = Raw::new(svc);
    assert_eq!(r.ask("PING"), "OK");
    assert!(
        sb.syslog().contains("cyrvaultd_timeout") || !sb.syslog_captured(),
        "{}",
        sb.syslog_tail(3000)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hostile_connections_beside_a_backup() {
    // the snippet's service with every default (timeouts 600 s / 30 s, peer limit 2)
    let sb = start("secdef-hostile", &[], vec![]);
    mail_for_alice(&sb, 30);
    let svc = addr(&sb, "cyrvaultd");
    let slot = sb.servername.clone();
    let dir = scratch("hostile");
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<std::collections::BTreeMap<String, usize>>> = Default::default();
    let started = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for i in 0..200usize {
        let (stop, outcomes, started, slot) = (
            stop.clone(),
            outcomes.clone(),
            started.clone(),
            slot.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut s = tcp_from(attacker, svc);
            started.fetch_add(1, Ordering::SeqCst);
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let kind = i % 4;
            let deadline = Instant::now() + Duration::from_secs(40);
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            let mut sent = 0;
            loop {
                if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                    break;
                }
                let w = match kind {
                    // idle: nothing at all
                    0 => Ok(()),
                    // slow: a byte now and then, never a newline
                    1 => s.write_all(b"F"),
                    // garbage lines
                    2 if sent < 100 => s.write_all(&[0xff, b' ', b'x', b'\r', b'\n']),
                    // wrong answers
                    3 if sent < 20 => s.write_all(
                        format!(
                            "AUTH {slot} BEGIN {z}\nAUTH {slot} ANSWER {z}\n",
                            z = "00".repeat(32)
                        )
                        .as_bytes(),
                    ),
                    _ => Ok(()),
                };
                sent += 1;
                if w.is_err() {
                    break;
                }
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            let text = String::from_utf8_lossy(&got);
            let first = text
                .lines()
                .rev()
                .find(|l| l.starts_with("NO "))
                .map(|l| l.chars().take(40).collect::<String>())
                .unwrap_or_else(|| "(no refusal: held until the test ended)".into());
            *outcomes.lock().unwrap().entry(first).or_default() += 1;
        }));
    }
    // the backup starts while the hostile connections pour in
    while started.load(Ordering::SeqCst) < 20 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let t = Instant::now();
    let rep = backup_alice(&sb, svc, &dir.join("vault"));
    let took = t.elapsed();
    assert_eq!(rep.messages_fetched, 30);
    assert!(
        took < Duration::from_secs(25),
        "the backup waited {took:?} behind hostile connections (auth timeout 30 s)"
    );
    stop.store(true, Ordering::SeqCst);
    for th in threads {
        th.join().unwrap();
    }
    let outcomes = outcomes.lock().unwrap();
    eprintln!(
        "backup of alice (30 messages) beside 200 hostile connections from {attacker}: {took:?}\n\
         hostile outcomes: {outcomes:#?}"
    );
    assert!(
        outcomes
            .keys()
            .any(|k| k.starts_with("NO too many unauthenticated")),
        "{outcomes:?}"
    );
    drop(outcomes);

    // Silent connections from 100 addresses (the per-address limit cannot count
    // them): they hold every process, but each gives it up 2 s after it was
    // accepted when another client waits, so a backup gets through long before the
    // 30 s authentication timeout would free a process.
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for i in 0..100u8 {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut s = tcp_from(Ipv4Addr::new(127, 0, 1, i), svc);
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buf = [0u8; 64];
            let until = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                match s.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return true,
                }
            }
            false
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let rep = backup_alice(&sb, svc, &dir.join("vault2"));
    let took = t.elapsed();
    stop.store(true, Ordering::SeqCst);
    let dropped = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|d| *d)
        .count();
    assert_eq!(rep.messages_fetched, 30);
    assert!(
        took < Duration::from_secs(28),
        "the backup waited {took:?} behind silent connections from 100 addresses"
    );
    eprintln!(
        "backup beside 100 silent connections from 100 addresses: {took:?} \
         ({dropped} of them were closed by the service meanwhile)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
