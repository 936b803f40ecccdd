//! Protocol-level session tests over an in-memory [`Spool`].
//!
//! These test the session's own logic (dispatch order, exact reply bytes, auth, bounds,
//! lock order against the trait); they do NOT test reading Cyrus files: that is the
//! real spool's job, replayed against a real Cyrus by the lead (tests/transcripts/).

use std::collections::BTreeMap;

use super::*;
use crate::protocol::auth::{Transcript, client_answer, verify_server};
use crate::protocol::{Reply, ReplyReader};
use crate::secret::Secret;

const SERVER: &str = "imap1";

struct MemFolder {
    name: &'static str,
    uniqueid: &'static str,
    jmapid: &'static str,
    header: Option<Vec<u8>>,
    index: Option<Vec<u8>>,
    annotations: Option<Vec<u8>>,
    annots_json: Option<Vec<u8>>,
    messages: BTreeMap<u32, Vec<u8>>,
}

pub(crate) struct MemSpool {
    user: &'static str,
    seen: Option<Vec<u8>>,
    sub: Option<Vec<u8>>,
    folders: Vec<MemFolder>,
    sieve: Vec<(&'static str, Vec<u8>)>,
    events: std::sync::Mutex<Vec<String>>,
}

fn st(bytes: &[u8], ino: u64) -> FileStat {
    FileStat {
        size: bytes.len() as u64,
        mtime: 1_700_000_000,
        ino,
    }
}

fn fetch(bytes: &Option<Vec<u8>>, ino: u64) -> Fetch<'_> {
    match bytes {
        None => Fetch::Missing,
        Some(b) => Fetch::Open(OpenFile {
            stat: st(b, ino),
            reader: Box::new(b.as_slice()),
        }),
    }
}

struct MemOpen<'a> {
    f: &'a MemFolder,
    events: &'a std::sync::Mutex<Vec<String>>,
}

impl MemOpen<'_> {
    fn ev(&self, e: String) {
        self.events.lock().unwrap().push(e);
    }
}

impl Folder for MemOpen<'_> {
    fn uniqueid(&self) -> &[u8] {
        self.f.uniqueid.as_bytes()
    }
    fn jmapid(&self) -> &[u8] {
        self.f.jmapid.as_bytes()
    }
    fn meta_stat(&self, file: MetaFile) -> Option<FileStat> {
        match file {
            MetaFile::Header => self.f.header.as_deref().map(|b| st(b, 11)),
            MetaFile::Index => self.f.index.as_deref().map(|b| st(b, 12)),
            MetaFile::Annotations => self.f.annotations.as_deref().map(|b| st(b, 13)),
        }
    }
    fn open_meta(&self, file: MetaFile) -> Fetch<'_> {
        self.ev(format!(
            "read {}",
            String::from_utf8_lossy(file.wire_name())
        ));
        match file {
            MetaFile::Header => fetch(&self.f.header, 11),
            MetaFile::Index => fetch(&self.f.index, 12),
            MetaFile::Annotations => fetch(&self.f.annotations, 13),
        }
    }
    fn mailbox_annotations(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.f.annots_json.clone())
    }
    fn message_file(&self, uid: u32) -> Option<PathBuf> {
        self.ev(format!("resolve {uid}"));
        self.f
            .messages
            .contains_key(&uid)
            .then(|| PathBuf::from(format!("{uid}.")))
    }
    fn unlock_index(&mut self) {
        self.ev(format!("unlock {}", self.f.name));
    }
    fn open_message(&self, path: &Path) -> Fetch<'_> {
        self.ev(format!("send {}", path.display()));
        let uid: u32 = path
            .to_string_lossy()
            .trim_end_matches('.')
            .parse()
            .unwrap_or(0);
        match self.f.messages.get(&uid) {
            None => Fetch::Missing,
            Some(b) => Fetch::Open(OpenFile {
                stat: st(b, 100 + u64::from(uid)),
                reader: Box::new(b.as_slice()),
            }),
        }
    }
}

impl Drop for MemOpen<'_> {
    fn drop(&mut self) {
        self.ev(format!("close {}", self.f.name));
    }
}

impl Spool for MemSpool {
    fn users(&self) -> Result<Vec<Vec<u8>>> {
        Ok(vec![self.user.into(), b"carol".to_vec()])
    }
    fn partitions(&self) -> Result<crate::service::session::PartitionMap> {
        Ok(crate::service::session::PartitionMap {
            partitions: vec![
                (b"p1".to_vec(), b"/srv/p 1".to_vec(), 2049),
                (b"p2".to_vec(), b"/srv/p2".to_vec(), 2065),
            ],
            users: vec![
                (self.user.into(), b"p2".to_vec()),
                (b"carol".to_vec(), b"p1".to_vec()),
            ],
        })
    }
    fn user_file_stat(&self, user: &[u8], which: UserFile) -> Result<Option<FileStat>> {
        if user != self.user.as_bytes() {
            return Ok(None);
        }
        Ok(match which {
            UserFile::Seen => self.seen.as_deref().map(|b| st(b, 1)),
            UserFile::Sub => self.sub.as_deref().map(|b| st(b, 2)),
            UserFile::Quota => None,
        })
    }
    fn open_user_file(&self, user: &[u8], which: UserFile) -> Result<Fetch<'_>> {
        if user != self.user.as_bytes() {
            return Ok(Fetch::Missing);
        }
        Ok(match which {
            UserFile::Seen => fetch(&self.seen, 1),
            UserFile::Sub => fetch(&self.sub, 2),
            UserFile::Quota => Fetch::Missing,
        })
    }
    fn folders(&self, user: &[u8]) -> Result<Vec<FolderEntry>> {
        if user != self.user.as_bytes() {
            return Ok(vec![]);
        }
        Ok(self
            .folders
            .iter()
            .map(|f| FolderEntry {
                name: f.name.into(),
                uniqueid: f.uniqueid.into(),
                jmapid: f.jmapid.into(),
                header: f.header.as_deref().map(|b| st(b, 11)),
                index: f.index.as_deref().map(|b| st(b, 12)),
                annotations: f.annotations.as_deref().map(|b| st(b, 13)),
                mailbox_annotations: f.annots_json.clone(),
                deleted: None,
            })
            .collect())
    }
    fn open_folder(&self, user: &[u8], folder: &[u8], _want: Want<'_>) -> Result<FolderOpen<'_>> {
        let found = (user == self.user.as_bytes())
            .then(|| self.folders.iter().find(|f| f.name.as_bytes() == folder))
            .flatten();
        match found {
            Some(f) => {
                self.events.lock().unwrap().push(format!("lock {}", f.name));
                Ok(FolderOpen::Open(Box::new(MemOpen {
                    f,
                    events: &self.events,
                })))
            }
            None => {
                let mut intname = b"user.".to_vec();
                intname.extend_from_slice(user);
                intname.push(b'.');
                intname.extend_from_slice(folder);
                Ok(FolderOpen::Missing { intname })
            }
        }
    }
    fn sieve_scripts(&self, _user: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .sieve
            .iter()
            .map(|(n, _)| n.as_bytes().to_vec())
            .collect())
    }
    fn open_sieve(&self, _user: &[u8], name: &[u8]) -> Result<Fetch<'_>> {
        Ok(self
            .sieve
            .iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map_or(Fetch::Missing, |(_, b)| {
                Fetch::Open(OpenFile {
                    stat: st(b, 50),
                    reader: Box::new(b.as_slice()),
                })
            }))
    }
}

pub(crate) fn spool() -> MemSpool {
    MemSpool {
        user: "bob",
        seen: Some(b"seen-db".to_vec()),
        sub: None,
        folders: vec![
            MemFolder {
                name: "INBOX",
                uniqueid: "u-inbox",
                jmapid: "Jinbox",
                header: Some(b"HDR".to_vec()),
                index: Some(b"IDX".to_vec()),
                annotations: None,
                annots_json: None,
                messages: [(1, b"msg one".to_vec()), (2, b"msg two".to_vec())].into(),
            },
            MemFolder {
                name: "Sent Items",
                uniqueid: "u-sent",
                jmapid: "Jsent",
                header: Some(b"H2".to_vec()),
                index: Some(b"I2".to_vec()),
                annotations: Some(b"A2".to_vec()),
                annots_json: Some(b"[[\"/comment\",\"\",\"x\"]]".to_vec()),
                messages: BTreeMap::new(),
            },
        ],
        sieve: vec![("main.script", b"keep;".to_vec())],
        events: std::sync::Mutex::new(Vec::new()),
    }
}

/// A session configuration: with a secret, the default (authentication required);
/// without one, `cyrvaultd_allow_unauthenticated` (the base protocol, as upstream).
pub(crate) fn cfg(secret: Option<Secret>) -> SessionConfig {
    let access = match secret {
        Some(s) => AccessPolicy::required(vec![s]),
        None => AccessPolicy::open(Vec::new()),
    };
    let mut c = SessionConfig::new(SERVER.as_bytes(), access);
    c.peer = "test".into();
    c
}

fn run_with(sp: &MemSpool, c: &SessionConfig, stats: &ServiceStats, input: &[u8]) -> String {
    let mut out = Vec::new();
    Session::new(c, sp, stats)
        .run(&mut &input[..], &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

fn run(input: &str) -> String {
    run_with(
        &spool(),
        &cfg(None),
        &ServiceStats::default(),
        input.as_bytes(),
    )
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha1::digest(b))
}

fn data(name: &str, bytes: &[u8], mtime: u64, ino: u64) -> String {
    format!(
        "DATA {name} {} {mtime} {ino}\n{}DONE {name} {}\n",
        bytes.len(),
        String::from_utf8_lossy(bytes),
        sha(bytes)
    )
}

#[test]
fn ping_quit_and_eof() {
    assert_eq!(run("PING\nQUIT\nPING\n"), "OK\nDONE PING\nOK\n");
    assert_eq!(run("ping"), "OK\nDONE PING\n");
    assert_eq!(run(""), "");
}

#[test]
fn slot_check_comes_first() {
    assert_eq!(run("USERS imap2\n"), "NO iam imap1\n");
    assert_eq!(run("NOPE other x\n"), "NO iam imap1\n");
    assert_eq!(run("META\n\n\r\n"), "NO iam imap1\n".repeat(3));
}

#[test]
fn upstream_refusal_texts() {
    assert_eq!(run("META imap1\n"), "NO bad command\n");
    assert_eq!(run("Nope imap1 x\n"), "NO unknown command Nope\n");
    assert_eq!(run("FMETA imap1 bob\n"), "NO missing user\n");
    assert_eq!(run("FDATA imap1 bob\n"), "NO missing user\n");
    assert_eq!(run("META imap1  bob\nPING\n"), "OK\nDONE PING\n");
    assert_eq!(run("FMETA imap1 {3}\n"), "NO literals are not supported\n");
    assert_eq!(
        run("META imap1 ..%2Fetc\n"),
        "NO invalid user: contains '/'\n"
    );
}

#[test]
fn users_and_meta() {
    assert_eq!(
        run("USERS imap1\n"),
        "OK\nUSER bob\nUSER carol\nDONE USERS\n"
    );
    assert_eq!(
        run("META imap1 bob\n"),
        "OK\nSTAT seen 7 1700000000 1\nDONE META\n"
    );
    assert_eq!(
        run("META imap1 bob seen sub junk\n"),
        format!(
            "OK\n{}NO no such file sub\nDONE META\n",
            data("seen", b"seen-db", 1_700_000_000, 1)
        )
    );
    assert_eq!(run("META imap1 nobody\n"), "OK\nDONE META\n");
}

#[test]
fn fmultistatus_lists_every_folder() {
    let json = b"[[\"/comment\",\"\",\"x\"]]";
    let ino = crate::protocol::reply::synthetic_ino(&Sha1::digest(json).into());
    assert_eq!(
        run("FMULTISTATUS imap1 bob\n"),
        format!(
            "OK\n\
             FOLDER INBOX u-inbox Jinbox\n\
             STAT INBOX header 3 1700000000 11\n\
             STAT INBOX index 3 1700000000 12\n\
             FOLDER Sent%20Items u-sent Jsent\n\
             STAT Sent%20Items header 2 1700000000 11\n\
             STAT Sent%20Items index 2 1700000000 12\n\
             STAT Sent%20Items annotations 2 1700000000 13\n\
             STAT Sent%20Items mailbox_annotations {} 0 {ino}\n\
             DONE FMULTISTATUS\n",
            json.len()
        )
    );
}

#[test]
fn fmeta_listing_data_and_missing_folder() {
    assert_eq!(
        run("FMETA imap1 bob INBOX\n"),
        "OK\nSTAT header 3 1700000000 11\nSTAT index 3 1700000000 12\nDONE FMETA u-inbox Jinbox\n"
    );
    assert_eq!(
        run("FMETA imap1 bob INBOX header annotations mailbox_annotations bogus\n"),
        format!(
            "OK\n{}NO no such file annotations\nNO empty mailbox_annotations\nDONE FMETA u-inbox Jinbox\n",
            data("header", b"HDR", 1_700_000_000, 11)
        )
    );
    assert_eq!(
        run("FMETA imap1 bob Nope\n"),
        "NO no such folder user.bob.Nope\n"
    );
    let sp = spool();
    run_with(
        &sp,
        &cfg(None),
        &ServiceStats::default(),
        b"FMETA imap1 bob INBOX index header\n",
    );
    // the index lock is held until the command's DONE: files are read under it
    assert_eq!(
        *sp.events.lock().unwrap(),
        [
            "lock INBOX",
            "read index",
            "read header",
            "unlock INBOX",
            "close INBOX"
        ]
    );
}

#[test]
fn fdata_resolves_under_lock_then_sends_unlocked() {
    let sp = spool();
    let out = run_with(
        &sp,
        &cfg(None),
        &ServiceStats::default(),
        b"FDATA imap1 bob INBOX 2 99 abc 1\n",
    );
    assert_eq!(
        out,
        format!(
            "OK\n{}NO no such file 99\nNO no such file abc\n{}DONE FDATA u-inbox Jinbox\n",
            data("2", b"msg two", 1_700_000_000, 102),
            data("1", b"msg one", 1_700_000_000, 101)
        )
    );
    assert_eq!(
        *sp.events.lock().unwrap(),
        [
            "lock INBOX",
            "resolve 2",
            "resolve 99",
            "resolve 0",
            "resolve 1",
            "unlock INBOX",
            "send 2.",
            "send 1.",
            "close INBOX"
        ]
    );
    // FDATA names the folder as given, not the internal name
    assert_eq!(
        run("FDATA imap1 bob No%20pe 1\n"),
        "NO no such folder No%20pe\n"
    );
}

#[test]
fn overlong_line_answers_no_and_resyncs() {
    let mut input = vec![b'x'; MAX_LINE + 10];
    input.extend_from_slice(b"\nPING\n");
    let out = run_with(&spool(), &cfg(None), &ServiceStats::default(), &input);
    assert_eq!(out, "NO line too long (limit 65536 bytes)\nOK\nDONE PING\n");
}

const SECRET: &[u8] = b"a-shared-secret-for-tests-0123456789";

#[test]
fn fdeleted_and_shared_listings() {
    // The memory spool has no delayed-delete folder and lists no shared hierarchy:
    // FDELETED is an empty listing, SHARED a refusal naming nothing internal.
    let out = run_with(
        &spool(),
        &cfg(None),
        &ServiceStats::default(),
        b"FDELETED imap1 bob\nSHARED imap1\nFDELETED imap1\n",
    );
    assert_eq!(
        out,
        "OK\nDONE FDELETED\nNO internal error\nNO bad command\n"
    );
}

#[test]
fn auth_gate_challenge_proof_and_replay() {
    let secret = Secret::from_bytes(SECRET).unwrap();
    let c = cfg(Some(secret.clone()));
    let sp = spool();
    let stats = ServiceStats::default();
    // everything but the handshake is refused
    let out = run_with(&sp, &c, &stats, b"USERS imap1\nPING\nCAPABILITY imap1\n");
    assert_eq!(
        out,
        "NO authentication required\nOK\nDONE PING\nOK\nCAP VERSION 2\nCAP AUTH HMAC-SHA256-MUTUAL\n\
         CAP STATUS\nCAP SNAPSHOT\nCAP PARTITIONS\nCAP QUOTA\nCAP SERVERTIME\nCAP USERFILES\nCAP SHARED\nCAP FDELETED\n\
         CAP MAXLINE 65536\nCAP MAXITEMS 4096\nDONE CAPABILITY\n"
    );

    // a real exchange over a socket pair: the client computes the answer and checks
    // the server's proof
    let cn = [0x5a; 32];
    let (mut client, mut server) = std::os::unix::net::UnixStream::pair().unwrap();
    let replay = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut input = server.try_clone().unwrap();
            Session::new(&c, &sp, &stats).run(&mut input, &mut server)
        });
        let mut r = ReplyReader::new(client.try_clone().unwrap());
        let begin = format!("AUTH imap1 BEGIN {}\n", hex::encode(cn));
        client.write_all(begin.as_bytes()).unwrap();
        r.expect_ok().unwrap();
        let Reply::Challenge(sn) = r.next_reply().unwrap() else {
            panic!("no challenge")
        };
        assert_eq!(r.next_reply().unwrap(), Reply::Done(vec![b"AUTH".to_vec()]));
        let t = Transcript {
            server_nonce: &sn,
            client_nonce: &cn,
            slot: SERVER.as_bytes(),
            binding: None,
        };
        let a = client_answer(SECRET, &t);
        let line = format!("AUTH imap1 ANSWER {}\nUSERS imap1\nQUIT\n", hex::encode(a));
        client.write_all(line.as_bytes()).unwrap();
        r.expect_ok().unwrap();
        let Reply::Proof(p) = r.next_reply().unwrap() else {
            panic!("no proof")
        };
        assert!(
            verify_server(SECRET, &t, &p),
            "the server proves the secret"
        );
        assert_eq!(r.next_reply().unwrap(), Reply::Done(vec![b"AUTH".to_vec()]));
        r.expect_ok().unwrap();
        assert_eq!(r.next_reply().unwrap(), Reply::User(b"bob".to_vec()));
        h.join().unwrap().unwrap();
        format!("{begin}{line}")
    });

    // the same lines in a new session: the server's nonce is new, the old answer
    // fails, and a failure ends the session at once (USERS is never answered)
    let out = run_with(&sp, &c, &stats, replay.as_bytes());
    assert!(out.starts_with("OK\nCHALLENGE "), "{out}");
    assert!(
        out.ends_with("DONE AUTH\nNO authentication failed\n"),
        "{out}"
    );
    // an answer without a challenge; BEGIN without the client's nonce
    let out = run_with(
        &sp,
        &c,
        &stats,
        format!(
            "AUTH imap1 ANSWER {}\nAUTH imap1 BEGIN\nPING\n",
            "00".repeat(32)
        )
        .as_bytes(),
    );
    assert_eq!(
        out,
        "NO no challenge outstanding\nNO bad auth argument: missing client nonce\nOK\nDONE PING\n"
    );
}

#[test]
fn default_without_secret_refuses_everything_but_the_handshake() {
    let c = SessionConfig::new(SERVER.as_bytes(), AccessPolicy::required(Vec::new()));
    let sp = spool();
    let out = run_with(
        &sp,
        &c,
        &ServiceStats::default(),
        b"CAPABILITY imap1\nAUTH imap1 BEGIN 0000000000000000000000000000000000000000000000000000000000000000\n\
          USERS imap1\nMETA imap1 bob seen\nFMULTISTATUS imap1 bob\nFMETA imap1 bob INBOX index\n\
          FDATA imap1 bob INBOX 1\nSNAPSHOT imap1 bob\nPARTITIONS imap1\nSTATUS imap1\nSTARTTLS imap1\nQUIT\n",
    );
    assert!(!out.contains("CAP AUTH"), "{out}");
    let refusals: Vec<&str> = out.lines().filter(|l| l.starts_with("NO ")).collect();
    assert_eq!(
        refusals,
        [
            "NO authentication not configured",
            "NO authentication required",
            "NO authentication required",
            "NO authentication required",
            "NO authentication required",
            "NO authentication required",
            "NO authentication required",
            "NO authentication required",
            "NO authentication required",
            "NO TLS is not available (no tls_server_cert)",
        ],
        "{out}"
    );
    assert!(!out.contains("bob") && !out.contains("DATA"), "{out}");
}

#[test]
fn bounds_before_authentication_end_the_session() {
    let c = cfg(Some(Secret::from_bytes(SECRET).unwrap()));
    let sp = spool();
    // an overlong line before AUTH ends the session (the PING is never answered)
    let mut input = vec![b'x'; 2000];
    input.extend_from_slice(b"\nPING\n");
    let out = run_with(&sp, &c, &ServiceStats::default(), &input);
    assert_eq!(out, "NO line too long (limit 1024 bytes)\n");
    // so does the 17th request
    let out = run_with(
        &sp,
        &c,
        &ServiceStats::default(),
        "PING\n".repeat(20).as_bytes(),
    );
    assert_eq!(out.matches("DONE PING").count(), 16, "{out}");
    assert!(
        out.ends_with("NO too many requests before authentication (limit 16)\n"),
        "{out}"
    );
}

#[test]
fn without_secret_auth_is_not_offered() {
    let out = run(&format!(
        "CAPABILITY imap1\nAUTH imap1 BEGIN {}\n",
        "ab".repeat(32)
    ));
    assert!(!out.contains("CAP AUTH"), "{out}");
    assert!(out.ends_with("NO authentication not configured\n"), "{out}");
}

#[test]
fn status_reports_sessions_locks_and_bytes() {
    let sp = spool();
    let stats = ServiceStats::default();
    let first = run_with(&sp, &cfg(None), &stats, b"FMETA imap1 bob INBOX index\n");
    let out = run_with(&sp, &cfg(None), &stats, b"STATUS imap1\n");
    let mut r = ReplyReader::new(out.as_bytes());
    r.expect_ok().unwrap();
    let mut got = BTreeMap::new();
    while let Reply::Status { key, value } = r.next_reply().unwrap() {
        got.insert(String::from_utf8(key).unwrap(), value);
    }
    assert_eq!(got["sessions_total"], 2);
    assert_eq!(got["sessions_active"], 1);
    assert_eq!(got["locks_held"], 0);
    assert_eq!(got["bytes_served"], first.len() as u64);
    assert!(got["lock_hold_p99_us"] <= got["lock_hold_max_us"]);
}

#[test]
fn snapshot_is_one_round_trip_with_verified_frames() {
    let sp = spool();
    let out = run_with(
        &sp,
        &cfg(None),
        &ServiceStats::default(),
        b"SNAPSHOT imap1 bob\n",
    );
    let mut r = ReplyReader::new(out.as_bytes());
    r.expect_ok().unwrap();
    let mut seen = Vec::new();
    loop {
        match r.next_reply().unwrap() {
            Reply::Data(h) => {
                r.read_data(&h, &mut Vec::new()).unwrap();
                seen.push(format!("data {}", String::from_utf8_lossy(&h.name)));
            }
            Reply::Folder { name, .. } => {
                seen.push(format!("folder {}", String::from_utf8_lossy(&name)))
            }
            Reply::No(t) => seen.push(format!("no {}", String::from_utf8_lossy(&t))),
            Reply::Done(w) => {
                assert_eq!(w, [b"SNAPSHOT".to_vec(), b"2".to_vec()]);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            "data seen",
            "no no such file sub",
            "no no such file quota",
            "data sieve/main.script",
            "folder INBOX",
            "data header",
            "data index",
            "no no such file annotations",
            "folder Sent Items",
            "data header",
            "data index",
            "data annotations",
            "data mailbox_annotations",
        ]
    );
    // one folder locked at a time
    let ev = sp.events.lock().unwrap();
    let locks: Vec<_> = ev
        .iter()
        .filter(|e| e.starts_with("lock") || e.starts_with("close"))
        .collect();
    assert_eq!(
        locks,
        [
            "lock INBOX",
            "close INBOX",
            "lock Sent Items",
            "close Sent Items"
        ]
    );
}

/// Seeded fuzz: random, mostly well-formed command lines pipelined into one session.
/// The session must never fail or panic, and everything it writes must parse as a
/// reply stream with valid DATA frames.
#[test]
fn fuzz_session_output_is_always_well_formed() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    const WORDS: &[&str] = &[
        "PING",
        "USERS",
        "META",
        "FMETA",
        "FDATA",
        "FMULTISTATUS",
        "CAPABILITY",
        "STATUS",
        "SNAPSHOT",
        "AUTH",
        "BEGIN",
        "imap1",
        "imap1",
        "imap1",
        "bob",
        "bob",
        "INBOX",
        "Sent%20Items",
        "Nope",
        "seen",
        "sub",
        "header",
        "index",
        "annotations",
        "mailbox_annotations",
        "1",
        "2",
        "7",
        "abc",
        "",
        "\"bob\"",
        "{3}",
        "..",
        "%00",
        "\r",
    ];
    let mut rng = SmallRng::seed_from_u64(42);
    let sp = spool();
    let c = cfg(None);
    let stats = ServiceStats::default();
    let (mut frames, mut lines) = (0u32, 0u32);
    for _ in 0..200 {
        let mut input = Vec::new();
        for _ in 0..100 {
            let n = rng.gen_range(1..8);
            let mut words: Vec<&str> = (0..n)
                .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
                .collect();
            if rng.gen_bool(0.5) {
                // a well-formed prefix: command, slot, user, folder
                let cmds = ["META", "FMETA", "FDATA", "SNAPSHOT", "FMULTISTATUS"];
                let folders = ["INBOX", "Sent%20Items"];
                let mut head = vec![cmds[rng.gen_range(0..cmds.len())], "imap1", "bob"];
                if head[0].starts_with('F') {
                    head.push(folders[rng.gen_range(0..2)]);
                }
                head.append(&mut words);
                words = head;
            }
            input.extend_from_slice(words.join(" ").as_bytes());
            input.push(b'\n');
        }
        let mut out = Vec::new();
        Session::new(&c, &sp, &stats)
            .run(&mut input.as_slice(), &mut out)
            .unwrap();
        let mut r = ReplyReader::new(out.as_slice());
        loop {
            match r.next_reply() {
                Ok(Reply::Data(h)) => {
                    r.read_data(&h, &mut std::io::sink()).unwrap();
                    frames += 1;
                }
                Ok(_) => lines += 1,
                Err(crate::protocol::ProtocolError::UnexpectedEof { .. }) => break,
                Err(e) => panic!("bad reply stream: {e}\n{}", String::from_utf8_lossy(&out)),
            }
        }
    }
    assert_eq!(stats.snapshot()[2], ("locks_held", 0));
    // the vocabulary must reach the file-sending paths, not only refusals
    assert!(
        frames > 100 && lines > 5000,
        "frames={frames} lines={lines}"
    );
}

/// Throughput of the DATA framing over a socket pair (debug build). Run with
/// `cargo test --lib measure_data_throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_data_throughput() {
    use std::os::unix::net::UnixStream;
    use std::time::Instant;
    const SIZE: u64 = 64 << 20;
    let (a, b) = UnixStream::pair().unwrap();
    let t = Instant::now();
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut w = ReplyWriter::new(std::io::BufWriter::new(a));
            let st = FileStat {
                size: SIZE,
                mtime: 0,
                ino: 0,
            };
            w.data(b"big", st, &mut std::io::repeat(b'x').take(SIZE))
                .unwrap();
            w.flush().unwrap();
        });
        let mut r = ReplyReader::new(b);
        let Reply::Data(h) = r.next_reply().unwrap() else {
            panic!("no data")
        };
        r.read_data(&h, &mut std::io::sink()).unwrap();
    });
    let secs = t.elapsed().as_secs_f64();
    println!(
        "DATA frame: {} MiB in {secs:.2} s = {:.0} MiB/s (write+sha1 | read+sha1, debug)",
        SIZE >> 20,
        (SIZE >> 20) as f64 / secs
    );
}

/// A writer that logs each write into the spool's event list, to see which locks are
/// held while reply bytes go out.
struct LoggingWriter<'a> {
    events: &'a std::sync::Mutex<Vec<String>>,
    out: Vec<u8>,
}

impl Write for LoggingWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut ev = self.events.lock().unwrap();
        if ev.last().map(String::as_str) != Some("write") {
            ev.push("write".into());
        }
        self.out.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged(sp: &MemSpool, budget: u64, input: &[u8]) -> (Vec<String>, Vec<u8>) {
    let mut c = cfg(None);
    c.buffer_budget = budget;
    let stats = ServiceStats::default();
    let mut w = LoggingWriter {
        events: &sp.events,
        out: Vec::new(),
    };
    Session::new(&c, sp, &stats)
        .run(&mut &input[..], &mut w)
        .unwrap();
    let ev = sp.events.lock().unwrap().clone();
    (ev, w.out)
}

#[test]
fn fmeta_files_are_sent_after_locks_are_released_when_they_fit() {
    let line = b"FMETA imap1 bob Sent%20Items index mailbox_annotations header\n";
    let (ev, buffered) = logged(&spool(), BUFFER_BUDGET, line);
    // OK is written under the lock (as upstream), the files only after close
    assert_eq!(
        ev,
        [
            "lock Sent Items",
            "write",
            "read index",
            "read header",
            "unlock Sent Items",
            "close Sent Items",
            "write"
        ]
    );
    // over budget: streamed under the index lock, upstream's way; same bytes
    let (ev, streamed) = logged(&spool(), 1, line);
    assert_eq!(
        ev,
        [
            "lock Sent Items",
            "write",
            "read index",
            "write",
            "read header",
            "write",
            "unlock Sent Items",
            "close Sent Items"
        ]
    );
    assert_eq!(buffered, streamed);
}

#[test]
fn userfiles_lists_then_sends_the_user_files_alone() {
    let out = run("USERFILES imap1 bob\nUSERFILES imap1 bob FETCH\nUSERFILES imap1 bob ALL\n");
    let mut r = ReplyReader::new(out.as_bytes());
    r.expect_ok().unwrap();
    let mut listed = Vec::new();
    loop {
        match r.next_reply().unwrap() {
            Reply::Stat {
                folder: None,
                name,
                stat,
            } => listed.push((String::from_utf8_lossy(&name).into_owned(), stat.size)),
            Reply::Done(w) => {
                assert_eq!(w, [b"USERFILES".to_vec()]);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["seen", "sieve/main.script"],
        "sub is missing: left out"
    );
    r.expect_ok().unwrap();
    let mut sent = Vec::new();
    loop {
        match r.next_reply().unwrap() {
            Reply::Data(h) => {
                let mut b = Vec::new();
                r.read_data(&h, &mut b).unwrap();
                sent.push(format!(
                    "data {} {}",
                    String::from_utf8_lossy(&h.name),
                    b.len()
                ));
            }
            Reply::No(t) => sent.push(format!("no {}", String::from_utf8_lossy(&t))),
            Reply::Done(w) => {
                assert_eq!(w, [b"USERFILES".to_vec()]);
                break;
            }
            other => panic!("unexpected {other:?}: no folder data"),
        }
    }
    // The listed sizes are the sizes sent.
    assert_eq!(
        sent,
        [
            format!("data seen {}", listed[0].1),
            "no no such file sub".to_string(),
            "no no such file quota".to_string(),
            format!("data sieve/main.script {}", listed[1].1),
        ]
    );
    assert!(
        matches!(r.next_reply().unwrap(), Reply::No(t) if t.starts_with(b"bad userfiles argument")),
        "{out}"
    );
}

#[test]
fn snapshot_sends_each_folder_after_its_locks_are_released() {
    let (ev, buffered) = logged(&spool(), BUFFER_BUDGET, b"SNAPSHOT imap1 bob\n");
    let closes: Vec<usize> = ev
        .iter()
        .enumerate()
        .filter(|(_, e)| e.starts_with("close"))
        .map(|(i, _)| i)
        .collect();
    for i in closes {
        assert_eq!(ev.get(i + 1).map(String::as_str), Some("write"), "{ev:?}");
    }
    let (_, streamed) = logged(&spool(), 0, b"SNAPSHOT imap1 bob\n");
    assert_eq!(buffered, streamed);
}

#[test]
fn partitions_lists_devices_then_user_partitions() {
    assert_eq!(
        run("PARTITIONS imap1\n"),
        "OK\nPARTITION p1 %2Fsrv%2Fp%201 2049\nPARTITION p2 %2Fsrv%2Fp2 2065\n\
         USERPART bob p2\nUSERPART carol p1\nDONE PARTITIONS\n"
    );
    assert_eq!(run("PARTITIONS imap2\n"), "NO iam imap1\n");
    let r = crate::protocol::reply::parse_reply(b"PARTITION p1 %2Fsrv%2Fp%201 2049").unwrap();
    assert_eq!(
        r,
        crate::protocol::reply::Reply::Partition {
            name: b"p1".to_vec(),
            path: b"/srv/p 1".to_vec(),
            dev: 2049
        }
    );
}

#[test]
fn fmeta_servertime_is_the_clock_while_the_folder_is_held() {
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = run("FMETA imap1 bob INBOX header servertime\n");
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("DATA servertime "))
        .unwrap_or_else(|| panic!("{out}"));
    let f: Vec<&str> = lines[at].split(' ').collect();
    let secs: u64 = f[3].parse().unwrap();
    assert!(before <= secs && secs <= after, "{out}");
    let (whole, nanos) = lines[at + 1].split_once('.').unwrap();
    assert_eq!(whole.parse::<u64>().unwrap(), secs);
    assert_eq!(nanos.len(), 9);
    assert_eq!(f[2], (lines[at + 1].len() + 1).to_string(), "size");
    assert!(lines[at + 2].starts_with("DONE servertime "), "{out}");
    assert!(out.ends_with("DONE FMETA u-inbox Jinbox\n"), "{out}");
    // a stock client never asks for it: the base reply is unchanged
    assert!(!run("FMETA imap1 bob INBOX header\n").contains("servertime"));
}

/// A spool whose every read fails: with a parse error (retrying cannot fix it),
/// or an I/O-level error that may pass (`temporary`).
struct FailingSpool {
    temporary: bool,
}

impl FailingSpool {
    fn err(&self) -> Error {
        if self.temporary {
            Error::Protocol("lock busy".into())
        } else {
            Error::parse(
                "/var/lib/cyrus/mailboxes.db",
                crate::cyrus::ParseError::invalid("mailboxes.db", 3, "bad\nrecord"),
            )
        }
    }
}

impl Spool for FailingSpool {
    fn users(&self) -> Result<Vec<Vec<u8>>> {
        Err(self.err())
    }
    fn user_file_stat(&self, _: &[u8], _: UserFile) -> Result<Option<FileStat>> {
        Err(self.err())
    }
    fn open_user_file(&self, _: &[u8], _: UserFile) -> Result<Fetch<'_>> {
        Err(self.err())
    }
    fn folders(&self, _: &[u8]) -> Result<Vec<FolderEntry>> {
        Err(self.err())
    }
    fn open_folder(&self, _: &[u8], _: &[u8], _: Want<'_>) -> Result<FolderOpen<'_>> {
        Err(self.err())
    }
    fn sieve_scripts(&self, _: &[u8]) -> Result<Vec<Vec<u8>>> {
        Err(self.err())
    }
    fn open_sieve(&self, _: &[u8], _: &[u8]) -> Result<Fetch<'_>> {
        Err(self.err())
    }
}

#[test]
fn failed_requests_are_counted_and_a_cyrvault_client_learns_the_class() {
    let c = cfg(None);
    let stats = ServiceStats::default();
    let run = |sp: &FailingSpool, input: &str| {
        let mut out = Vec::new();
        let summary = Session::new(&c, sp, &stats)
            .run(&mut input.as_bytes(), &mut out)
            .unwrap();
        (String::from_utf8(out).unwrap(), summary)
    };
    let permanent = FailingSpool { temporary: false };
    // A base-protocol client: upstream's text, nothing more.
    let (out, s) = run(&permanent, "USERS imap1\nFMULTISTATUS imap1 bob\nPING\n");
    assert_eq!(out, "NO internal error\nNO internal error\nOK\nDONE PING\n");
    assert_eq!((s.requests, s.failed, s.refused), (3, 2, 0));
    assert_eq!(s.outcome(), "failed (2 of 3 requests)");
    // After CAPABILITY: the class and the message, on one line.
    let (out, s) = run(&permanent, "CAPABILITY imap1\nUSERS imap1\n");
    let last = out.lines().last().unwrap();
    assert_eq!(
        last,
        "NO internal error [DATAERR] /var/lib/cyrus/mailboxes.db: mailboxes.db at offset 3: bad?record"
    );
    assert_eq!(s.failed, 1);
    // A failure that may pass stays upstream's plain text.
    let (out, _) = run(
        &FailingSpool { temporary: true },
        "CAPABILITY imap1\nUSERS imap1\n",
    );
    assert!(out.ends_with("NO internal error\n"), "{out}");
    // Refusals are counted apart; a clean session is ok.
    let (_, s) = run(&permanent, "USERS imap2\nPING\n");
    assert_eq!((s.requests, s.failed, s.refused), (2, 0, 1));
    assert_eq!(s.outcome(), "refused (1 of 2 requests)");
    let (_, s) = run(&permanent, "PING\nQUIT\n");
    assert_eq!(s.outcome(), "ok");
}

/// The writes that reach it, as the socket would see them.
struct Writes(Vec<usize>);

impl Write for Writes {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.push(b.len());
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A reader that hands out one chunk per read (a client writing one request at a time).
struct Chunks<'a>(std::collections::VecDeque<&'a [u8]>);

impl Read for Chunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(c) = self.0.pop_front() else {
            return Ok(0);
        };
        let n = c.len().min(buf.len());
        buf[..n].copy_from_slice(&c[..n]);
        if n < c.len() {
            self.0.push_front(&c[n..]);
        }
        Ok(n)
    }
}

/// Issue 10: a pipelined batch (the backup's FMULTISTATUS + USERFILES + META quota) is
/// answered in one write; flushed per answer, the second write waited under Nagle for
/// the client's delayed ACK (~40 ms per unchanged user). Requests that arrive one by
/// one are still answered one by one, before the reader waits.
#[test]
fn pipelined_requests_are_answered_in_one_write() {
    let answers = |chunks: Vec<&[u8]>| {
        let mut sock = Writes(Vec::new());
        {
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, &mut sock);
            let mut input = Chunks(chunks.into());
            Session::new(&cfg(None), &spool(), &ServiceStats::default())
                .run(&mut input, &mut out)
                .unwrap();
        }
        sock.0
    };
    assert_eq!(answers(vec![b"PING\nPING\nPING\n"]).len(), 1);
    assert_eq!(answers(vec![b"PING\n", b"PING\n", b"PING\n"]).len(), 3);
    // A partial line buffered is not a request: the answer before it goes out.
    assert_eq!(answers(vec![b"PING\nPI", b"NG\n"]).len(), 2);
    // QUIT flushes even with more input buffered.
    assert_eq!(
        answers(vec![b"PING\nQUIT\nPING\n"]),
        vec![b"OK\nDONE PING\nOK\n".len()]
    );
}

/// A connection whose reads hand out `chunks` one per call and whose writes are
/// recorded one per call (what `write(2)` would see).
struct Recorded {
    chunks: std::collections::VecDeque<Vec<u8>>,
    writes: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl Read for Recorded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(mut c) = self.chunks.pop_front() else {
            return Ok(0);
        };
        let n = c.len().min(buf.len());
        buf[..n].copy_from_slice(&c[..n]);
        if n < c.len() {
            self.chunks.push_front(c.split_off(n));
        }
        Ok(n)
    }
}

impl Write for Recorded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !buf.is_empty() {
            self.writes.lock().unwrap().push(buf.to_vec());
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The answers of a session over a connection that delivers `chunks`, one
/// `Vec` per write the session made.
fn writes_for(chunks: &[&str]) -> Vec<String> {
    let writes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let conn = Recorded {
        chunks: chunks.iter().map(|c| c.as_bytes().to_vec()).collect(),
        writes: writes.clone(),
    };
    let shared = crate::tls::Shared::new(crate::tls::Stream::plain(conn));
    let (sp, c, stats) = (spool(), cfg(None), ServiceStats::default());
    Session::new(&c, &sp, &stats).run_channel(&shared).unwrap();
    let w = writes.lock().unwrap();
    w.iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect()
}

/// Pipelined requests (a client's batch, as an unchanged user's FMULTISTATUS +
/// USERFILES + quota) are answered in one write: one answer per write would make each
/// wait for the ACK of the one before it where Nagle is on (issue #10: 27 ms per
/// unchanged user). A request that came alone is answered before the next read, so a
/// client waiting for it is never kept waiting.
#[test]
fn pipelined_answers_leave_in_one_write_and_a_lone_one_at_once() {
    let batch = "FMULTISTATUS imap1 bob\nMETA imap1 bob\nPING\n";
    let together = writes_for(&[batch]);
    assert_eq!(together.len(), 1, "{together:?}");
    assert_eq!(
        together[0],
        run(batch),
        "same bytes as one answer per write"
    );
    let apart = writes_for(&["PING\n", "PING\n", "PING\n"]);
    assert_eq!(apart, vec![run("PING\n"); 3]);
}
