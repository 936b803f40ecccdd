//! The driver of `bench/scale.sh` (issue #10 item 5): a private real Cyrus 3.6 (the
//! test sandbox, Cyrus's own `master`, `cyrvaultd` as a SERVICES entry with a shared
//! secret), filled and measured on command. Every Cyrus file is written by Cyrus:
//! mail over IMAP (`MULTIAPPEND`), extra mailboxes by `ctl_mboxlist -u`.
//!
//! Usage: `scale_load WORK_DIR CYRVAULTD_PATH` (the sandbox goes under
//! `$CYRVAULT_SANDBOX_DIR`). It prints `READY`, writes `WORK_DIR/sandbox.env`, then
//! answers one line per command read on stdin:
//!
//! | command | answer |
//! |---|---|
//! | `load-users N MSGS SEED HOLD_USERS` | `LOADED users msgs bytes secs held_msgs held_bytes` |
//! | `append-held` | `APPENDED msgs bytes secs` |
//! | `big-folder USER N` | `BIGFOLDER msgs bytes secs` (N small messages in INBOX) |
//! | `big-archive USER BYTES` | `BIGARCHIVE msgs bytes secs` (4 MB mostly incompressible messages) |
//! | `undump FIRST COUNT FOLDERS` | `UNDUMPED mailboxes secs` (users `bulkNNNNNN` with FOLDERS sub-folders) |
//! | `fmeta USER1 USER2 FOLDER N` | `FMETA median_ms min_ms max_ms` (N FMETAs alternating users: no list cache hit) |
//! | `fdata USER FOLDER` | `FDATA fmeta_ms fdata_secs msgs bytes batches` (all messages, 1024 UIDs per FDATA) |
//! | `sessions` | `SESSIONS n cpu_us_sum cpu_us_max maxrss_kb_max hwm_kb` (cyrvaultd's session lines since the last call; the largest VmHWM of its live processes) |
//! | `quit` | stops Cyrus and removes the sandbox |
//!
//! It is an example, not a test: `cargo test` compiles it but never runs it.
#![forbid(unsafe_code)]

use std::fs;
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use cyrvault::cyrus::index::parse_index;
use cyrvault::protocol::client::{Client, Collect, Receiver};
use cyrvault::protocol::reply::{DataHeader, Reply};
use cyrvault::protocol::{ProtocolError, Request};
use cyrvault_host::imap::{Arg, Client as Imap};
use cyrvault_testkit::sandbox::{MailGen, Sandbox, SandboxOptions, ServiceLine};

/// The secret cyrvaultd and the clients share.
const SECRET: &[u8] = b"scale-secret-0123456789abcdefghijkl\n";
/// One MULTIAPPEND carries at most this many messages...
const BATCH_MSGS: usize = 1000;
/// ...or this many bytes.
const BATCH_BYTES: usize = 16 << 20;
/// Folders of every loaded user besides INBOX.
const FOLDERS: [&str; 3] = ["Sent", "Archive", "Lists/dev"];

type BoxError = Box<dyn std::error::Error>;

/// One user's messages to load: (folder, message bytes).
type UserMail = (String, Vec<(String, Vec<u8>)>);

struct Driver {
    sb: Sandbox,
    /// The cyrvaultd binary master runs (its children are found by `/proc/*/exe`).
    daemon: PathBuf,
    held: Vec<(String, String, Vec<u8>)>,
    syslog_at: u64,
}

/// APPEND `msgs` to `mailbox` of `user` in MULTIAPPEND batches on one connection.
fn append(sb: &Sandbox, user: &str, mailbox: &str, msgs: &[Vec<u8>]) -> Result<(), BoxError> {
    let mut c: Imap = sb.login(user)?;
    let mut i = 0;
    while i < msgs.len() {
        let mut args = vec![Arg::Atom("APPEND"), Arg::Str(mailbox.as_bytes())];
        let mut bytes = 0;
        let start = i;
        while i < msgs.len() && i - start < BATCH_MSGS && bytes < BATCH_BYTES {
            args.push(Arg::Atom(if i % 3 == 0 { "()" } else { "(\\Seen)" }));
            args.push(Arg::Literal(&msgs[i]));
            bytes += msgs[i].len();
            i += 1;
        }
        c.run(&args)
            .map_err(|e| format!("APPEND to {mailbox} of {user}: {e}"))?;
    }
    c.logout()?;
    Ok(())
}

impl Driver {
    fn mailbox(&self, folder: &str) -> String {
        if folder == "INBOX" {
            "INBOX".into()
        } else {
            self.sb.user_mailbox_name(Some(folder))
        }
    }

    /// `N` users `userNNNN`, alternating partitions, `msgs` messages each spread over
    /// INBOX and three folders; 1 % of the messages of the first `hold_users` users
    /// are held back for `append-held`.
    fn load_users(
        &mut self,
        n: usize,
        msgs: usize,
        seed: u64,
        hold: usize,
    ) -> Result<String, BoxError> {
        let t = Instant::now();
        let mut plan: Vec<UserMail> = Vec::new();
        let (mut total, mut bytes) = (0usize, 0usize);
        for u in 0..n {
            let user = format!("user{u:04}");
            let part = if u % 2 == 0 { "p1" } else { "p2" };
            self.sb.create_user(&user, Some(part))?;
            for f in FOLDERS {
                self.sb.create_folder(&user, f, None)?;
            }
            let mut gen_ = MailGen::new(seed.wrapping_add(u as u64));
            let mut mine = Vec::new();
            for m in 0..msgs {
                let folder = ["INBOX", "INBOX", FOLDERS[0], FOLDERS[1], FOLDERS[2]][m % 5];
                let body = gen_.message().bytes;
                if u < hold && m % 100 == 50.min(msgs - 1) {
                    self.held.push((user.clone(), folder.to_string(), body));
                } else {
                    total += 1;
                    bytes += body.len();
                    mine.push((folder.to_string(), body));
                }
            }
            plan.push((user, mine));
        }
        let sb = &self.sb;
        let boxes: Vec<(String, String)> = std::iter::once("INBOX")
            .chain(FOLDERS)
            .map(|f| (f.to_string(), self.mailbox(f)))
            .collect();
        std::thread::scope(|s| -> Result<(), String> {
            let handles: Vec<_> = (0..2)
                .map(|k| {
                    let plan = &plan;
                    let boxes = &boxes;
                    s.spawn(move || -> Result<(), String> {
                        for (user, mine) in plan.iter().skip(k).step_by(2) {
                            for (f, mbox) in boxes {
                                let these: Vec<Vec<u8>> = mine
                                    .iter()
                                    .filter(|(g, _)| g == f)
                                    .map(|(_, b)| b.clone())
                                    .collect();
                                append(sb, user, mbox, &these).map_err(|e| e.to_string())?;
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| "loader thread panicked".to_string())??;
            }
            Ok(())
        })?;
        let held_bytes: usize = self.held.iter().map(|h| h.2.len()).sum();
        Ok(format!(
            "LOADED {n} {total} {bytes} {:.1} {} {held_bytes}",
            t.elapsed().as_secs_f64(),
            self.held.len()
        ))
    }

    fn append_held(&mut self) -> Result<String, BoxError> {
        let t = Instant::now();
        let held = std::mem::take(&mut self.held);
        for (user, folder, body) in &held {
            append(
                &self.sb,
                user,
                &self.mailbox(folder),
                std::slice::from_ref(body),
            )?;
        }
        let bytes: usize = held.iter().map(|h| h.2.len()).sum();
        Ok(format!(
            "APPENDED {} {bytes} {:.2}",
            held.len(),
            t.elapsed().as_secs_f64()
        ))
    }

    /// `n` messages of ~800 bytes into `user`'s INBOX.
    fn big_folder(&mut self, user: &str, n: usize) -> Result<String, BoxError> {
        let t = Instant::now();
        self.sb.create_user(user, None)?;
        let mut gen_ = MailGen::new(4242);
        let (mut sent, mut bytes) = (0, 0);
        let mut c: Imap = self.sb.login(user)?;
        while sent < n {
            let k = BATCH_MSGS.min(n - sent);
            let batch: Vec<Vec<u8>> = (0..k).map(|_| gen_.message_of_size(800).bytes).collect();
            let mut args = vec![Arg::Atom("APPEND"), Arg::Str(b"INBOX")];
            for m in &batch {
                args.push(Arg::Atom("()"));
                args.push(Arg::Literal(m));
                bytes += m.len();
            }
            c.run(&args)?;
            sent += k;
            if sent % 20_000 == 0 {
                eprintln!("scale_load: {user}: {sent} messages appended");
            }
        }
        c.logout()?;
        Ok(format!(
            "BIGFOLDER {sent} {bytes} {:.1}",
            t.elapsed().as_secs_f64()
        ))
    }

    /// Messages of ~4 MB (random base64 attachments: gzip keeps ~76 %) until `want` bytes.
    fn big_archive(&mut self, user: &str, want: u64) -> Result<String, BoxError> {
        let t = Instant::now();
        self.sb.create_user(user, None)?;
        let mut gen_ = MailGen::new(777);
        let (mut sent, mut bytes) = (0usize, 0u64);
        let mut c: Imap = self.sb.login(user)?;
        while bytes < want {
            let batch: Vec<Vec<u8>> = (0..4)
                .map(|_| gen_.message_of_size(4_000_000).bytes)
                .collect();
            let mut args = vec![Arg::Atom("APPEND"), Arg::Str(b"INBOX")];
            for m in &batch {
                args.push(Arg::Atom("()"));
                args.push(Arg::Literal(m));
                bytes += m.len() as u64;
                sent += 1;
            }
            c.run(&args)?;
        }
        c.logout()?;
        Ok(format!(
            "BIGARCHIVE {sent} {bytes} {:.1}",
            t.elapsed().as_secs_f64()
        ))
    }

    /// `ctl_mboxlist -u` of `count` users `bulkNNNNNN` (from `first`) with `folders`
    /// sub-folders each: `count * (folders + 1)` mailboxes.
    fn undump(&mut self, first: usize, count: usize, folders: usize) -> Result<String, BoxError> {
        let t = Instant::now();
        let mut json = String::from("{");
        let mut n = 0usize;
        for i in first..first + count {
            for f in 0..=folders {
                let name = if f == 0 {
                    format!("user.bulk{i:06}")
                } else {
                    format!("user.bulk{i:06}.Folder{f}")
                };
                if n > 0 {
                    json.push(',');
                }
                json.push_str(&format!(
                    "\"{name}\":{{\"uidvalidity\":\"1700000000\",\"createdmodseq\":\"1\",\
                     \"foldermodseq\":\"1\",\"mbtype\":\"e\",\"partition\":\"p{}\",\
                     \"acl\":{{\"bulk{i:06}\":\"lrswipkxtecdan\"}},\
                     \"uniqueid\":\"b0000000-0000-4000-8000-{i:06}{f:06}\"}}",
                    1 + i % 2
                ));
                n += 1;
            }
        }
        json.push('}');
        let bin = Path::new("/usr/lib/cyrus/bin/ctl_mboxlist");
        let mut child = self
            .sb
            .cyrus_command(bin)
            .arg("-C")
            .arg(&self.sb.imapd_conf)
            .arg("-u")
            .current_dir(&self.sb.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .ok_or("no stdin")?
            .write_all(json.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(
                format!("ctl_mboxlist -u: {}", String::from_utf8_lossy(&out.stderr)).into(),
            );
        }
        Ok(format!("UNDUMPED {n} {:.1}", t.elapsed().as_secs_f64()))
    }

    fn connect(&self) -> Result<Client<TcpStream, TcpStream>, BoxError> {
        let s = TcpStream::connect(self.sb.service_addrs["cyrvaultd"])?;
        s.set_nodelay(true)?;
        let mut c = Client::new(s.try_clone()?, s, self.sb.servername.as_bytes());
        c.capabilities()?;
        c.authenticate(SECRET.trim_ascii_end(), None)?;
        Ok(c)
    }

    /// `n` FMETAs of `folder`, alternating between two users' so that none is
    /// answered from the service's per-owner cache.
    fn fmeta(&self, users: [&str; 2], folder: &str, n: usize) -> Result<String, BoxError> {
        let mut c = self.connect()?;
        let mut ms = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            fmeta_index(&mut c, &self.sb.servername, users[i % 2], folder)?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        c.quit()?;
        ms.sort_by(f64::total_cmp);
        Ok(format!(
            "FMETA {:.3} {:.3} {:.3}",
            ms[ms.len() / 2],
            ms[0],
            ms[ms.len() - 1]
        ))
    }

    /// FMETA, then every message by FDATA in batches of 1024 UIDs (bytes discarded).
    fn fdata(&self, user: &str, folder: &str) -> Result<String, BoxError> {
        let mut c = self.connect()?;
        let t = Instant::now();
        let index = fmeta_index(&mut c, &self.sb.servername, user, folder)?;
        let fmeta_ms = t.elapsed().as_secs_f64() * 1e3;
        let idx = parse_index(&index)?;
        let uids: Vec<u32> = idx
            .records
            .iter()
            .filter(|r| !r.is_unlinked())
            .map(|r| r.uid)
            .collect();
        let t = Instant::now();
        let mut sink = Discard::default();
        let mut batches = 0;
        for batch in uids.chunks(1024) {
            c.fdata(user.as_bytes(), folder.as_bytes(), batch, &mut sink)?;
            batches += 1;
        }
        let secs = t.elapsed().as_secs_f64();
        c.quit()?;
        Ok(format!(
            "FDATA {fmeta_ms:.1} {secs:.2} {} {} {batches}",
            sink.files, sink.bytes
        ))
    }

    /// cyrvaultd's `session ...` syslog lines since the last call.
    fn sessions(&mut self) -> Result<String, BoxError> {
        // A session's line is written as it ends, just after the client's QUIT.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let path = self.sb.root.join("log/syslog");
        let mut f = fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        f.seek(SeekFrom::Start(self.syslog_at))?;
        let mut text = String::new();
        f.read_to_string(&mut text)?;
        self.syslog_at += text.len() as u64;
        let (mut n, mut sum, mut max, mut rss) = (0u64, 0u64, 0u64, 0u64);
        for line in text.lines().filter(|l| l.contains("session client=")) {
            let field = |k: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            if let (Some(cpu), Some(kb)) = (field("cpu_us="), field("maxrss_kb=")) {
                n += 1;
                sum += cpu;
                max = max.max(cpu);
                rss = rss.max(kb);
            }
        }
        Ok(format!(
            "SESSIONS {n} {sum} {max} {rss} {}",
            self.children_hwm()
        ))
    }

    /// The largest `VmHWM` (KiB) of the live cyrvaultd processes: the same figure
    /// from outside, for a service that does not log it.
    fn children_hwm(&self) -> u64 {
        let Ok(dir) = fs::read_dir("/proc") else {
            return 0;
        };
        dir.filter_map(|e| e.ok())
            .filter(|e| fs::read_link(e.path().join("exe")).is_ok_and(|x| x == self.daemon))
            .filter_map(|e| fs::read_to_string(e.path().join("status")).ok())
            .filter_map(|st| {
                st.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .max()
            .unwrap_or(0)
    }
}

/// `FMETA user folder header index annotations mailbox_annotations`; the index bytes.
fn fmeta_index(
    c: &mut Client<TcpStream, TcpStream>,
    slot: &str,
    user: &str,
    folder: &str,
) -> Result<Vec<u8>, BoxError> {
    let items = ["header", "index", "annotations", "mailbox_annotations"];
    let req = Request::FMeta {
        slot: slot.as_bytes().to_vec(),
        user: user.as_bytes().to_vec(),
        folder: folder.as_bytes().to_vec(),
        items: Some(items.iter().map(|i| i.as_bytes().to_vec()).collect()),
    };
    let mut rx = Collect::default();
    c.fetch(&req, &mut rx)?;
    rx.files
        .into_iter()
        .find(|(h, _)| h.name == b"index")
        .map(|(_, b)| b)
        .ok_or_else(|| format!("FMETA {user} {folder}: no index").into())
}

/// Counts files and bytes, keeps nothing.
#[derive(Default)]
struct Discard {
    files: u64,
    bytes: u64,
    sink: std::io::Sink,
}

impl Receiver for Discard {
    fn file(&mut self, h: &DataHeader) -> Result<&mut dyn Write, ProtocolError> {
        self.bytes += h.stat.size;
        Ok(&mut self.sink)
    }
    fn file_done(&mut self, _: &DataHeader, _: &[u8; 20]) -> Result<(), ProtocolError> {
        self.files += 1;
        Ok(())
    }
    fn missing(&mut self, _: &[u8]) -> Result<(), ProtocolError> {
        Ok(())
    }
    fn other(&mut self, _: Reply) -> Result<(), ProtocolError> {
        Ok(())
    }
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: scale_load WORK_DIR CYRVAULTD_PATH".into());
    }
    let work = PathBuf::from(&args[1]);
    let daemon_path = fs::canonicalize(&args[2]).map_err(|e| format!("{}: {e}", args[2]))?;
    let daemon = daemon_path.to_str().ok_or("cyrvaultd path is not UTF-8")?;
    fs::create_dir_all(&work)?;
    fs::set_permissions(&work, fs::Permissions::from_mode(0o755))?;
    let secret = work.join("secret");
    fs::write(&secret, SECRET)?;
    let cyrus = nix::unistd::User::from_name("cyrus")?.ok_or("no user cyrus")?;
    nix::unistd::chown(&secret, Some(cyrus.uid), Some(cyrus.gid))?;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600))?;

    let sb = Sandbox::start(SandboxOptions {
        name_hint: "scale".into(),
        extra_services: vec![ServiceLine::tcp("cyrvaultd", daemon)],
        extra_imapd_conf: vec![
            (
                "cyrvaultd_secret_file".to_string(),
                secret.display().to_string(),
            ),
            // The 200,000-message folder: no quota, no per-message limits in the way.
            ("maxmessagesize".to_string(), "0".to_string()),
        ],
        ..Default::default()
    })?;
    if !sb.syslog_captured() {
        eprintln!("scale_load: syslog is not captured: no per-session CPU/RSS figures");
    }
    let spool: Vec<String> = sb
        .partitions
        .iter()
        .map(|(_, d)| d.display().to_string())
        .chain([sb.config_dir().display().to_string()])
        .collect();
    let env = format!(
        "ADDR={}\nSECRET_FILE={}\nSANDBOX_ROOT={}\nSERVERNAME={}\nSPOOL_DIRS=\"{}\"\n",
        sb.service_addrs["cyrvaultd"],
        secret.display(),
        sb.root.display(),
        sb.servername,
        spool.join(" "),
    );
    fs::write(work.join("sandbox.env"), env)?;
    let mut d = Driver {
        sb,
        daemon: daemon_path,
        held: Vec::new(),
        syslog_at: 0,
    };
    let mut out = std::io::stdout();
    writeln!(out, "READY")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> Result<usize, BoxError> {
            Ok(w.get(i).ok_or("missing argument")?.parse::<usize>()?)
        };
        let answer = match w.first().copied() {
            Some("load-users") => d.load_users(num(1)?, num(2)?, num(3)? as u64, num(4)?),
            Some("append-held") => d.append_held(),
            Some("big-folder") => d.big_folder(w.get(1).ok_or("user")?, num(2)?),
            Some("big-archive") => d.big_archive(w.get(1).ok_or("user")?, num(2)? as u64),
            Some("undump") => d.undump(num(1)?, num(2)?, num(3)?),
            Some("fmeta") => d.fmeta(
                [w.get(1).ok_or("user")?, w.get(2).ok_or("user")?],
                w.get(3).ok_or("folder")?,
                num(4)?,
            ),
            Some("fdata") => d.fdata(w.get(1).ok_or("user")?, w.get(2).ok_or("folder")?),
            Some("sessions") => d.sessions(),
            Some("quit") | None => break,
            Some(other) => Err(format!("unknown command {other:?}").into()),
        };
        match answer {
            Ok(a) => writeln!(out, "{a}")?,
            Err(e) => writeln!(out, "ERROR {e}")?,
        }
        out.flush()?;
    }
    drop(d);
    Ok(())
}
