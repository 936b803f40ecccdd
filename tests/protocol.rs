//! Protocol transcripts (tests/transcripts/): the parser, the renderer that turns a
//! transcript plus a spool into (client input, exact expected server output), and
//! checks that every transcript parses and renders.
//!
//! The replay against `cyrvaultd` on a real Cyrus sandbox is the lead's: implement
//! [`Resolver`] over the real spool files and compare `serve()`'s output with
//! [`render`]'s. Here the transcripts are also played against our session over an
//! in-memory fixture of the README's spool. That checks that the transcripts and the
//! session agree with each other (both were derived from upstream's source); it does
//! not test reading Cyrus files.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use cyrvault::protocol::FileStat;
use cyrvault::protocol::reply::synthetic_ino;
use cyrvault::protocol::token::decode_reply_token;
use cyrvault::service::AccessPolicy;
use cyrvault::service::session::{
    Fetch, Folder, FolderEntry, FolderOpen, MetaFile, OpenFile, ServiceStats, Session,
    SessionConfig, Spool, UserFile, Want,
};

/// One transcript step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `C:` a client line (without its newline).
    Send(String),
    /// `S:` an exact server line.
    Expect(String),
    /// `S?` a server line expected iff the file exists.
    ExpectIf { file: String, line: String },
    /// `F:` a file frame, or `NO no such file <name>`.
    Frame { file: String, name: String },
    /// `A:` the mailbox_annotations frame of a JSON file next to the transcript.
    Annotations { json: String },
    /// `E:` the server closes the connection.
    Close,
}

/// A parsed transcript file.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub path: PathBuf,
    pub steps: Vec<Step>,
}

/// Parse a transcript; errors name the line.
pub fn parse_transcript(path: &Path, text: &str) -> Result<Transcript, String> {
    let mut steps = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), n + 1);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (tag, rest) = line.split_at(line.find(' ').unwrap_or(line.len()));
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let two = || {
            rest.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| format!("{}: {tag} needs two fields", at()))
        };
        steps.push(match tag {
            "C:" => Step::Send(rest.to_string()),
            "S:" => Step::Expect(rest.to_string()),
            "S?" => {
                let (file, line) = two()?;
                Step::ExpectIf { file, line }
            }
            "F:" => {
                let (file, name) = two()?;
                Step::Frame { file, name }
            }
            "A:" if !rest.is_empty() => Step::Annotations {
                json: rest.to_string(),
            },
            "E:" if rest.is_empty() => Step::Close,
            _ => return Err(format!("{}: unknown line {line:?}", at())),
        });
    }
    Ok(Transcript {
        path: path.to_path_buf(),
        steps,
    })
}

/// What a replay needs to know about the spool it runs on.
pub trait Resolver {
    fn servername(&self) -> String;
    /// Stat and bytes of a file ref (`alice:seen`, `alice/INBOX:index`, `bob/INBOX:msg:1`),
    /// None if it does not exist.
    fn file(&self, fileref: &str) -> Option<(FileStat, Vec<u8>)>;
    fn uniqueid(&self, folder: &str) -> Option<String>;
    fn jmapid(&self, folder: &str) -> Option<String>;
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha1::digest(b))
}

fn stat_str(st: FileStat) -> String {
    format!("{} {} {}", st.size, st.mtime, st.ino)
}

fn annot_stat(json: &[u8]) -> FileStat {
    FileStat {
        size: json.len() as u64,
        mtime: 0,
        ino: synthetic_ino(&Sha1::digest(json).into()),
    }
}

fn expand(t: &Transcript, text: &str, r: &dyn Resolver) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("{}: unclosed placeholder in {text:?}", t.path.display()))?;
        let ph = &rest[open + 1..open + close];
        let missing = || format!("{}: cannot resolve {{{ph}}}", t.path.display());
        let (kind, arg) = ph.split_once(':').unwrap_or((ph, ""));
        out.push_str(&match kind {
            "servername" => r.servername(),
            "stat" => stat_str(r.file(arg).ok_or_else(missing)?.0),
            "sha1" => sha_hex(&r.file(arg).ok_or_else(missing)?.1),
            "uniqueid" => r.uniqueid(arg).ok_or_else(missing)?,
            "jmapid" => r.jmapid(arg).ok_or_else(missing)?,
            "annot-stat" => stat_str(annot_stat(&read_json(t, arg)?)),
            _ => {
                return Err(format!(
                    "{}: unknown placeholder {{{ph}}}",
                    t.path.display()
                ));
            }
        });
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn read_json(t: &Transcript, name: &str) -> Result<Vec<u8>, String> {
    let p = t.path.with_file_name(name);
    std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))
}

fn frame(out: &mut Vec<u8>, name: &str, st: FileStat, bytes: &[u8]) {
    out.extend_from_slice(format!("DATA {name} {}\n", stat_str(st)).as_bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(format!("DONE {name} {}\n", sha_hex(bytes)).as_bytes());
}

/// Client input and the exact expected output of a transcript on a spool.
pub fn render(t: &Transcript, r: &dyn Resolver) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut input = Vec::new();
    let mut expected = Vec::new();
    let mut closed = false;
    for step in &t.steps {
        match step {
            Step::Send(text) => {
                input.extend_from_slice(expand(t, text, r)?.replace("\\r", "\r").as_bytes());
                input.push(b'\n');
            }
            _ if closed => return Err(format!("{}: server output after E:", t.path.display())),
            Step::Expect(line) => {
                expected.extend_from_slice(expand(t, line, r)?.as_bytes());
                expected.push(b'\n');
            }
            Step::ExpectIf { file, line } => {
                if r.file(file).is_some() {
                    expected.extend_from_slice(expand(t, line, r)?.as_bytes());
                    expected.push(b'\n');
                }
            }
            Step::Frame { file, name } => match r.file(file) {
                Some((st, bytes)) => frame(&mut expected, name, st, &bytes),
                None => expected.extend_from_slice(format!("NO no such file {name}\n").as_bytes()),
            },
            Step::Annotations { json } => {
                let bytes = read_json(t, json)?;
                frame(
                    &mut expected,
                    "mailbox_annotations",
                    annot_stat(&bytes),
                    &bytes,
                );
            }
            Step::Close => closed = true,
        }
    }
    Ok((input, expected))
}

/// Every transcript file, parsed.
pub fn all_transcripts() -> Vec<Transcript> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/transcripts")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).expect("reading transcript");
            parse_transcript(p, &text).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// In-memory fixture of the README's spool (for the self-consistency check only).

#[derive(Clone)]
struct FixFolder {
    uniqueid: &'static str,
    files: BTreeMap<&'static str, Vec<u8>>, // header, index, annotations
    annotations_json: Option<&'static str>,
    messages: BTreeMap<u32, Vec<u8>>,
}

/// Per user: the per-user files (seen, sub) and the folders in FMULTISTATUS order.
type FixUser = (
    BTreeMap<&'static str, Vec<u8>>,
    Vec<(&'static str, FixFolder)>,
);

struct Fixture {
    users: BTreeMap<&'static str, FixUser>,
}

fn msg(s: &str) -> Vec<u8> {
    format!("Subject: {s}\r\n\r\n{s}\r\n").into_bytes()
}

fn folder(uid: &'static str, msgs: &[(u32, &str)], json: Option<&'static str>) -> FixFolder {
    let mut files = BTreeMap::new();
    files.insert("header", format!("header of {uid}").into_bytes());
    files.insert("index", format!("index of {uid}").into_bytes());
    FixFolder {
        uniqueid: uid,
        files,
        annotations_json: json,
        messages: msgs.iter().map(|(u, s)| (*u, msg(s))).collect(),
    }
}

fn fixture() -> Fixture {
    let mut users = BTreeMap::new();
    let mut alice_files = BTreeMap::new();
    alice_files.insert("seen", b"seen db bytes".to_vec());
    alice_files.insert("sub", b"user.alice\nuser.alice.Sent\n".to_vec());
    users.insert(
        "alice",
        (
            alice_files,
            vec![
                (
                    "INBOX",
                    folder("u-a-inbox", &[(1, "a1"), (2, "a2"), (3, "a3")], None),
                ),
                ("INBOX.Sent", folder("u-a-sent", &[(1, "s1")], None)),
                (
                    "INBOX.Work Stuff",
                    folder(
                        "u-a-work",
                        &[(1, "w1"), (2, "w2")],
                        Some("alice-work-stuff-annotations.json"),
                    ),
                ),
            ],
        ),
    );
    users.insert(
        "bob",
        (
            BTreeMap::new(),
            vec![
                ("INBOX", folder("u-b-inbox", &[(1, "b1")], None)),
                ("INBOX.Shared", folder("u-b-shared", &[(1, "sh1")], None)),
            ],
        ),
    );
    Fixture { users }
}

fn fstat(bytes: &[u8], salt: u64) -> FileStat {
    FileStat {
        size: bytes.len() as u64,
        mtime: 1_750_000_000 + salt,
        ino: 1000 + salt,
    }
}

fn json_bytes(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/transcripts")
            .join(name),
    )
    .expect("annotation json")
}

impl Fixture {
    fn folder(&self, user: &str, name: &str) -> Option<&FixFolder> {
        self.users
            .get(user)?
            .1
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| f)
    }
}

impl Resolver for Fixture {
    fn servername(&self) -> String {
        "cyrvault-test".into()
    }
    fn file(&self, fileref: &str) -> Option<(FileStat, Vec<u8>)> {
        let fileref = String::from_utf8(decode_reply_token(fileref.as_bytes())).ok()?;
        if let Some((user, rest)) = fileref.split_once('/') {
            let (fname, what) = rest.split_once(':')?;
            let f = self.folder(user, fname)?;
            if let Some(uid) = what.strip_prefix("msg:") {
                let uid: u32 = uid.parse().ok()?;
                let b = f.messages.get(&uid)?.clone();
                return Some((fstat(&b, u64::from(uid)), b));
            }
            let b = f.files.get(what)?.clone();
            return Some((fstat(&b, 7), b));
        }
        let (user, what) = fileref.split_once(':')?;
        let b = self.users.get(user)?.0.get(what)?.clone();
        Some((fstat(&b, 3), b))
    }
    fn uniqueid(&self, folder: &str) -> Option<String> {
        let folder = String::from_utf8(decode_reply_token(folder.as_bytes())).ok()?;
        let (user, name) = folder.split_once('/')?;
        Some(self.folder(user, name)?.uniqueid.to_string())
    }
    fn jmapid(&self, folder: &str) -> Option<String> {
        self.uniqueid(folder).map(|_| String::new())
    }
}

struct FixOpen<'a> {
    f: &'a FixFolder,
}

fn fetch_of(b: Option<&Vec<u8>>, salt: u64) -> Fetch<'_> {
    match b {
        None => Fetch::Missing,
        Some(b) => Fetch::Open(OpenFile {
            stat: fstat(b, salt),
            reader: Box::new(b.as_slice()) as Box<dyn Read>,
        }),
    }
}

impl Folder for FixOpen<'_> {
    fn uniqueid(&self) -> &[u8] {
        self.f.uniqueid.as_bytes()
    }
    fn jmapid(&self) -> &[u8] {
        b""
    }
    fn meta_stat(&self, file: MetaFile) -> Option<FileStat> {
        let name = std::str::from_utf8(file.wire_name()).ok()?;
        self.f.files.get(name).map(|b| fstat(b, 7))
    }
    fn open_meta(&self, file: MetaFile) -> Fetch<'_> {
        let name = std::str::from_utf8(file.wire_name()).unwrap_or("");
        fetch_of(self.f.files.get(name), 7)
    }
    fn mailbox_annotations(&self) -> cyrvault::Result<Option<Vec<u8>>> {
        Ok(self.f.annotations_json.map(json_bytes))
    }
    fn message_file(&self, uid: u32) -> Option<PathBuf> {
        self.f
            .messages
            .contains_key(&uid)
            .then(|| PathBuf::from(uid.to_string()))
    }
    fn unlock_index(&mut self) {}
    fn open_message(&self, path: &Path) -> Fetch<'_> {
        let uid: u32 = path.to_string_lossy().parse().unwrap_or(0);
        fetch_of(self.f.messages.get(&uid), u64::from(uid))
    }
}

impl Spool for Fixture {
    fn users(&self) -> cyrvault::Result<Vec<Vec<u8>>> {
        Ok(self.users.keys().map(|u| u.as_bytes().to_vec()).collect())
    }
    fn user_file_stat(&self, user: &[u8], which: UserFile) -> cyrvault::Result<Option<FileStat>> {
        Ok(self.user_file(user, which).map(|b| fstat(b, 3)))
    }
    fn open_user_file(&self, user: &[u8], which: UserFile) -> cyrvault::Result<Fetch<'_>> {
        Ok(fetch_of(self.user_file(user, which), 3))
    }
    fn folders(&self, user: &[u8]) -> cyrvault::Result<Vec<FolderEntry>> {
        let Some((_, folders)) = std::str::from_utf8(user)
            .ok()
            .and_then(|u| self.users.get(u))
        else {
            return Ok(vec![]);
        };
        Ok(folders
            .iter()
            .map(|(name, f)| FolderEntry {
                name: name.as_bytes().to_vec(),
                uniqueid: f.uniqueid.as_bytes().to_vec(),
                jmapid: vec![],
                header: f.files.get("header").map(|b| fstat(b, 7)),
                index: f.files.get("index").map(|b| fstat(b, 7)),
                annotations: f.files.get("annotations").map(|b| fstat(b, 7)),
                mailbox_annotations: f.annotations_json.map(json_bytes),
                deleted: None,
            })
            .collect())
    }
    fn open_folder(
        &self,
        user: &[u8],
        folder: &[u8],
        _want: Want<'_>,
    ) -> cyrvault::Result<FolderOpen<'_>> {
        let u = String::from_utf8_lossy(user);
        let name = String::from_utf8_lossy(folder);
        match self.folder(&u, &name) {
            Some(f) => Ok(FolderOpen::Open(Box::new(FixOpen { f }))),
            None => {
                // altnamespace: no, '.' separator: INBOX.x -> user.<u>.x
                let rest = name.strip_prefix("INBOX").unwrap_or(&name);
                Ok(FolderOpen::Missing {
                    intname: format!("user.{u}{rest}").into_bytes(),
                })
            }
        }
    }
    fn sieve_scripts(&self, _user: &[u8]) -> cyrvault::Result<Vec<Vec<u8>>> {
        Ok(vec![])
    }
    fn open_sieve(&self, _user: &[u8], _name: &[u8]) -> cyrvault::Result<Fetch<'_>> {
        Ok(Fetch::Missing)
    }
}

impl Fixture {
    fn user_file(&self, user: &[u8], which: UserFile) -> Option<&Vec<u8>> {
        let u = std::str::from_utf8(user).ok()?;
        let name = match which {
            UserFile::Seen => "seen",
            UserFile::Sub => "sub",
            UserFile::Quota => "quota",
        };
        self.users.get(u)?.0.get(name)
    }
}

#[test]
fn every_transcript_parses_and_renders() {
    let all = all_transcripts();
    let names: Vec<_> = all
        .iter()
        .filter_map(|t| t.path.file_stem()?.to_str().map(String::from))
        .collect();
    for want in [
        "ping",
        "quit",
        "users",
        "meta",
        "fmultistatus",
        "fmeta",
        "fdata",
        "errors",
    ] {
        assert!(names.iter().any(|n| n == want), "missing transcript {want}");
    }
    let fx = fixture();
    for t in &all {
        let (input, expected) = render(t, &fx).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !input.is_empty() && !expected.is_empty(),
            "{}",
            t.path.display()
        );
    }
}

#[test]
fn parser_rejects_malformed_lines() {
    let p = Path::new("x.txt");
    assert!(parse_transcript(p, "Z: what").is_err());
    assert!(parse_transcript(p, "F: onlyone").is_err());
    assert!(parse_transcript(p, "E: extra").is_err());
    let t = parse_transcript(p, "# c\n\nC: PING\nS: OK\nS? a:seen STAT seen 1\nE:\n").unwrap();
    assert_eq!(
        t.steps,
        [
            Step::Send("PING".into()),
            Step::Expect("OK".into()),
            Step::ExpectIf {
                file: "a:seen".into(),
                line: "STAT seen 1".into()
            },
            Step::Close
        ]
    );
    let bad = parse_transcript(p, "S: {nosuch:x}").unwrap();
    assert!(render(&bad, &fixture()).is_err());
}

/// Self-consistency: the session, over the in-memory fixture, answers every transcript
/// exactly. The real-spool replay is the lead's.
#[test]
fn transcripts_agree_with_the_session_on_a_fixture() {
    let fx = fixture();
    // the base protocol as upstream serves it: no authentication
    let mut cfg = SessionConfig::new(b"cyrvault-test", AccessPolicy::open(Vec::new()));
    cfg.peer = "transcript".into();
    let stats = ServiceStats::default();
    for t in all_transcripts() {
        let (input, expected) = render(&t, &fx).unwrap();
        let mut out = Vec::new();
        Session::new(&cfg, &fx, &stats)
            .run(&mut input.as_slice(), &mut out)
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expected),
            "{}",
            t.path.display()
        );
    }
}
