//! cyrvaultd as it runs in production: started by Cyrus's REAL master from the
//! shipped `cyrus-conf/cyrus.conf.snippet` line, inside a real sandbox (Cyrus
//! 3.6.1), reached over TCP. Issue #3's "Must show" list:
//!
//! * `master_child`: the snippet works; USERS, SNAPSHOT, FMULTISTATUS/FMETA/FDATA;
//!   `-U` recycles the child; a child killed -9 mid-session leaves no lock.
//! * `load`: 200 snapshots while 4 IMAP clients write; each is consistent.
//! * `lock_hold`: FMETA lock hold on a big folder; no growth with message size.
//! * `security`: secret, replay, bounds, names, logs, world-readable secret, allowlist.
//! * `secure_default` (issue #13): nothing without AUTH by default, TLS against a MITM
//!   relay, idle connections dropped, hostile connections beside a backup.
//! * `fleet_tls`: cyrvault.conf's `tls`, `tls_ca_file`, `<server>_tls_pin` (#13).
//! * `interop`: the transcripts replayed on a real spool; a base-protocol-only
//!   client backs a user up completely (GUIDs == mbexamine's).
//! * `status`: `cyrvault status --server`: figures summed across master's children.
//!
//! This file holds what they share: the SERVICES line built from the snippet, the
//! sandbox start, TCP clients with bounded waits, and a few small parsers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use cyrvault::cyrus::Guid;
use cyrvault::protocol::ProtocolError;
use cyrvault::protocol::client::{Client, Receiver};
use cyrvault::protocol::reply::{DataHeader, Reply};
use cyrvault::protocol::request::Request;
use cyrvault_testkit::sandbox::{Listen, Sandbox, SandboxOptions, ServiceLine};

mod fleet_tls;
mod interop;
mod load;
mod lock_hold;
mod master_child;
mod secure_default;
mod security;
mod status;

/// Longest any single read from the service may take before a test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// The `cyrvaultd` entry of the shipped snippet: `(name, cmd words after the
/// program, other key=value words)`. The program must be `.../cyrvaultd`.
pub fn snippet_entry() -> (String, Vec<String>, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cyrus-conf/cyrus.conf.snippet");
    let text = std::fs::read_to_string(&path).expect("reading cyrus.conf.snippet");
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.starts_with('#') && l.starts_with("cyrvaultd"))
        .expect("a cyrvaultd line in cyrus.conf.snippet");
    let (name, mut rest) = line
        .split_once(char::is_whitespace)
        .expect("name then keys");
    let mut cmd = None;
    let mut others = Vec::new();
    while !rest.trim_start().is_empty() {
        rest = rest.trim_start();
        let (key, after) = rest.split_once('=').expect("key=value");
        let (value, quoted, tail) = if let Some(q) = after.strip_prefix('"') {
            let (v, t) = q.split_once('"').expect("closing quote");
            (v, true, t)
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (&after[..end], false, &after[end..])
        };
        match key {
            "cmd" => cmd = Some(value.to_string()),
            "listen" => {} // replaced by a loopback port
            _ if quoted => others.push(format!("{key}=\"{value}\"")),
            _ => others.push(format!("{key}={value}")),
        }
        rest = tail;
    }
    let cmd = cmd.expect("cmd= in the snippet");
    let mut words = cmd.split_whitespace();
    let prog = words.next().expect("a program");
    assert!(prog.ends_with("/cyrvaultd"), "snippet runs {prog}");
    (
        name.to_string(),
        words.map(String::from).collect(),
        others.join(" "),
    )
}

/// The snippet's SERVICES line for this build, named `name` (the snippet's own name
/// unless another entry is wanted), listening on a free loopback port; `-C` is
/// inserted by the sandbox.
pub fn service_line(name: Option<&str>) -> ServiceLine {
    let (snip_name, args, options) = snippet_entry();
    let mut cmd = env!("CARGO_BIN_EXE_cyrvaultd").to_string();
    for a in args {
        cmd.push(' ');
        cmd.push_str(&a);
    }
    ServiceLine {
        name: name.unwrap_or(&snip_name).to_string(),
        cmd,
        listen: Listen::AutoTcp,
        options,
        pass_config: true,
    }
}

/// A sandbox with the snippet's `cyrvaultd` line, plus `extra` services and conf.
pub fn start(hint: &str, extra_conf: &[(&str, &str)], extra: Vec<ServiceLine>) -> Sandbox {
    start_on(None, hint, extra_conf, extra)
}

/// [`start`] on a given Cyrus installation (None: the system's).
pub fn start_on(
    cyrus: Option<&cyrvault_testkit::sandbox::CyrusInstall>,
    hint: &str,
    extra_conf: &[(&str, &str)],
    extra: Vec<ServiceLine>,
) -> Sandbox {
    let mut services = vec![service_line(None)];
    services.extend(extra);
    Sandbox::start(SandboxOptions {
        name_hint: hint.into(),
        extra_imapd_conf: extra_conf
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        extra_services: services,
        cyrus: cyrus.cloned(),
        ..Default::default()
    })
    .expect("starting the sandbox")
}

/// Where the service `name` of this sandbox listens.
pub fn addr(sb: &Sandbox, name: &str) -> SocketAddr {
    *sb.service_addrs
        .get(name)
        .unwrap_or_else(|| panic!("no address for service {name}"))
}

/// A TCP connection with bounded waits.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connecting");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Our protocol client over TCP to the service of `sb` named `name`.
pub type TcpClient = Client<BufReader<TcpStream>, TcpStream>;

/// A client on `s` that has not authenticated.
pub fn unauthenticated(sb: &Sandbox, s: TcpStream) -> TcpClient {
    Client::new(
        BufReader::new(s.try_clone().unwrap()),
        s,
        sb.servername.as_bytes(),
    )
}

/// A client on `s`, authenticated with the sandbox's secret (the server proved it
/// knows it too).
pub fn authenticated(sb: &Sandbox, s: TcpStream) -> TcpClient {
    let mut c = unauthenticated(sb, s);
    let secret = sb
        .cyrvaultd_secret()
        .expect("the sandbox's cyrvaultd secret");
    c.authenticate(secret.bytes(), None).expect("AUTH");
    c
}

/// An authenticated client to the service of `sb` named `name`.
pub fn client(sb: &Sandbox, name: &str) -> TcpClient {
    authenticated(sb, tcp(addr(sb, name)))
}

/// A line-level connection for requests the typed client will not send.
pub struct Raw {
    pub stream: TcpStream,
    pub reader: BufReader<TcpStream>,
}

impl Raw {
    pub fn new(addr: SocketAddr) -> Raw {
        let stream = tcp(addr);
        Raw {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("sending");
    }
    /// One reply line without its `\n`; empty at EOF.
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        self.reader
            .read_until(b'\n', &mut buf)
            .expect("reading a reply line");
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
    /// Send a line and return the first reply line.
    pub fn ask(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes());
        self.line()
    }
    /// `AUTH` with the sandbox's secret, by hand (the server's proof is checked).
    pub fn auth(&mut self, sb: &Sandbox) {
        use cyrvault::protocol::auth::{Transcript, client_answer, verify_server};
        let secret = sb
            .cyrvaultd_secret()
            .expect("the sandbox's cyrvaultd secret");
        let slot = &sb.servername;
        let cn = [0x42u8; 32];
        assert_eq!(
            self.ask(&format!("AUTH {slot} BEGIN {}", hex::encode(cn))),
            "OK"
        );
        let ch = self.line();
        let sn: [u8; 32] = hex::decode(ch.strip_prefix("CHALLENGE ").expect("CHALLENGE"))
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(self.line(), "DONE AUTH");
        let t = Transcript {
            server_nonce: &sn,
            client_nonce: &cn,
            slot: slot.as_bytes(),
            binding: None,
        };
        let a = client_answer(secret.bytes(), &t);
        assert_eq!(
            self.ask(&format!("AUTH {slot} ANSWER {}", hex::encode(a))),
            "OK"
        );
        let proof = self.line();
        let p = hex::decode(proof.strip_prefix("PROOF ").expect("PROOF")).unwrap();
        assert!(verify_server(secret.bytes(), &t, &p), "the server's proof");
        assert_eq!(self.line(), "DONE AUTH");
    }
    /// Everything until the server closes.
    pub fn rest(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.reader.read_to_end(&mut out).expect("reading to EOF");
        out
    }
}

/// `STATUS` values by key.
pub fn status(c: &mut TcpClient, slot: &[u8]) -> BTreeMap<String, u64> {
    let mut rx = Grouped::default();
    c.fetch(
        &Request::Status {
            slot: slot.to_vec(),
        },
        &mut rx,
    )
    .expect("STATUS");
    rx.status
}

/// A receiver that groups files by the `FOLDER` line before them (SNAPSHOT), keeps
/// `NO` texts, and `STATUS` values.
#[derive(Default)]
pub struct Grouped {
    /// Files before the first FOLDER line (user files), by name.
    pub user: Vec<(String, Vec<u8>)>,
    /// `(folder name, files by name, NO texts)` per FOLDER line.
    pub folders: Vec<SnapFolder>,
    /// NO lines before any FOLDER line.
    pub missing: Vec<String>,
    pub status: BTreeMap<String, u64>,
    current: Vec<u8>,
}

/// One folder of a SNAPSHOT.
#[derive(Default, Debug)]
pub struct SnapFolder {
    pub name: Vec<u8>,
    pub uniqueid: String,
    pub files: BTreeMap<String, Vec<u8>>,
    pub missing: Vec<String>,
}

impl Receiver for Grouped {
    fn file(&mut self, _h: &DataHeader) -> Result<&mut dyn Write, ProtocolError> {
        self.current.clear();
        Ok(&mut self.current)
    }
    fn file_done(&mut self, h: &DataHeader, sha1: &[u8; 20]) -> Result<(), ProtocolError> {
        let bytes = std::mem::take(&mut self.current);
        assert_eq!(Guid::of(&bytes).to_hex(), hex::encode(sha1));
        let name = String::from_utf8_lossy(&h.name).into_owned();
        match self.folders.last_mut() {
            Some(f) => {
                f.files.insert(name, bytes);
            }
            None => self.user.push((name, bytes)),
        }
        Ok(())
    }
    fn missing(&mut self, text: &[u8]) -> Result<(), ProtocolError> {
        let t = String::from_utf8_lossy(text).into_owned();
        match self.folders.last_mut() {
            Some(f) => f.missing.push(t),
            None => self.missing.push(t),
        }
        Ok(())
    }
    fn other(&mut self, reply: Reply) -> Result<(), ProtocolError> {
        match reply {
            Reply::Folder { name, uniqueid, .. } => self.folders.push(SnapFolder {
                name,
                uniqueid: String::from_utf8_lossy(&uniqueid).into_owned(),
                ..Default::default()
            }),
            Reply::Status { key, value } => {
                self.status
                    .insert(String::from_utf8_lossy(&key).into_owned(), value);
            }
            // the Cyrus version and conventions (text values)
            Reply::StatusText { .. } => {}
            other => panic!("unexpected line {other:?}"),
        }
        Ok(())
    }
}

/// Files of an FDATA answer by UID, and the NO texts.
#[derive(Default)]
pub struct ByUid {
    pub files: BTreeMap<u32, Vec<u8>>,
    pub missing: Vec<String>,
    current: Vec<u8>,
}

impl Receiver for ByUid {
    fn file(&mut self, _h: &DataHeader) -> Result<&mut dyn Write, ProtocolError> {
        self.current.clear();
        Ok(&mut self.current)
    }
    fn file_done(&mut self, h: &DataHeader, _sha1: &[u8; 20]) -> Result<(), ProtocolError> {
        let uid = String::from_utf8_lossy(&h.name)
            .parse::<u32>()
            .expect("FDATA names files by UID");
        self.files.insert(uid, std::mem::take(&mut self.current));
        Ok(())
    }
    fn missing(&mut self, text: &[u8]) -> Result<(), ProtocolError> {
        self.missing
            .push(String::from_utf8_lossy(text).into_owned());
        Ok(())
    }
    fn other(&mut self, reply: Reply) -> Result<(), ProtocolError> {
        panic!("unexpected line in FDATA: {reply:?}")
    }
}

/// The GUIDs of every record `mbexamine` prints, with their SYSFLAGS, by UID, for
/// each mailbox in its output (`Examining <name>...`... lines start a mailbox).
pub fn mbexamine_guids(out: &str) -> Vec<(Guid, u32)> {
    let record_line = |l: &str| {
        let t = l.trim_start();
        t.starts_with('>')
            || t.split_once("> UID:")
                .is_some_and(|(n, _)| n.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut res = Vec::new();
    for line in out.lines().filter(|l| record_line(l)) {
        let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name));
        if let (Some(g), Some(f)) = (field("GUID:"), field("SYSFLAGS:")) {
            res.push((
                Guid::from_hex(g).expect("GUID hex"),
                u32::from_str_radix(f, 16).expect("SYSFLAGS hex"),
            ));
        }
    }
    res
}

/// The pid of the process on this host whose socket is the server end of `s`
/// (found through /proc/net/tcp and /proc/*/fd).
pub fn server_pid(s: &TcpStream) -> Option<i32> {
    let local = s.local_addr().ok()?.port();
    let remote = s.peer_addr().ok()?.port();
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = tcp.lines().skip(1).find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        let port = |a: &str| u16::from_str_radix(a.rsplit(':').next()?, 16).ok();
        (port(w.get(1)?)? == remote && port(w.get(2)?)? == local).then(|| w.get(9).copied())?
    })?;
    let want = format!("socket:[{inode}]");
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy() == want) {
                return Some(pid);
            }
        }
    }
    None
}

/// Percentile (0..=100) of sorted values.
pub fn percentile(sorted: &[u64], pct: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = (sorted.len() * pct).div_ceil(100).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Multiappend `messages` to `mailbox` as `user` over one raw IMAP connection
/// (LITERAL+ and MULTIAPPEND, `batch` messages per command): fast bulk loading.
pub fn bulk_append(sb: &Sandbox, user: &str, mailbox: &str, messages: &[&[u8]], batch: usize) {
    let s = tcp(sb.imap_addr);
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut tag = 0;
    let mut run = |w: &mut TcpStream, cmd: Vec<u8>| {
        tag += 1;
        let t = format!("b{tag}");
        w.write_all(format!("{t} ").as_bytes()).unwrap();
        w.write_all(&cmd).unwrap();
        w.write_all(b"\r\n").unwrap();
        loop {
            let mut l = String::new();
            assert!(r.read_line(&mut l).unwrap() > 0, "IMAP closed");
            if let Some(rest) = l.strip_prefix(&format!("{t} ")) {
                assert!(rest.starts_with("OK"), "{t}: {l}");
                return;
            }
        }
    };
    run(&mut w, format!("LOGIN {user} x").into_bytes());
    for chunk in messages.chunks(batch.max(1)) {
        let mut cmd = format!("APPEND \"{mailbox}\"").into_bytes();
        for m in chunk {
            cmd.extend_from_slice(format!(" {{{}+}}\r\n", m.len()).as_bytes());
            cmd.extend_from_slice(m);
        }
        run(&mut w, cmd);
    }
    run(&mut w, b"LOGOUT".to_vec());
}
