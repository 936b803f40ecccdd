//! One client connection: read request lines, answer them as `backupcyrusd` would,
//! plus cyrvault's announced extensions (CAPABILITY, AUTH, STATUS, SNAPSHOT).
//!
//! The session is written against the [`Spool`] and [`Folder`] traits: the real
//! implementation reads Cyrus's files under Cyrus's locks (the lead's spool reader);
//! the session decides *when* a folder is opened (its index lock taken), when the
//! index lock is dropped and when the folder is closed, in upstream's order
//! (doc/protocol.md, "Locks"). Syntax lives in `crate::protocol`.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha1::{Digest, Sha1};

use super::SessionSummary;
use super::access::{Access, AccessPolicy, Verdict};
use super::channel::{Channel, NoChannel};
use super::shutdown::ShutdownFile;
use super::transport::Deadline;
pub use crate::protocol::client::PartitionMap;
use crate::protocol::reply::synthetic_ino;
use crate::protocol::token::c_atoi_u32;
use crate::protocol::{
    FileStat, LineReader, MAX_LINE, ProtocolError, Refusal, ReplyWriter, Request,
    parse_request_line,
};
use crate::tls::Shared;
use crate::{Error, Result};

/// A file ready to be sent: its `stat` and a reader at its first byte.
pub struct OpenFile<'a> {
    /// What `stat` said; exactly `stat.size` bytes will be read from `reader`.
    pub stat: FileStat,
    /// The file's bytes.
    pub reader: Box<dyn Read + 'a>,
}

/// Outcome of opening a file, with upstream's two failure replies.
pub enum Fetch<'a> {
    /// `stat` failed: `NO no such file <name>` (or nothing, in a listing).
    Missing,
    /// `open` failed: `NO failed to open file <name>`.
    OpenFailed,
    /// Opened.
    Open(OpenFile<'a>),
}

/// The per-user files of `META`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserFile {
    /// `<user>.seen` in the user's config directory.
    Seen,
    /// `<user>.sub`.
    Sub,
    /// Extension: the synthetic `quota` file (the user's quota roots with their
    /// database values, `cyrus::quota`). Never listed by `META` without items; sent
    /// for the item `quota` and by `SNAPSHOT`.
    Quota,
}

/// The per-folder files of `FMETA`/`FMULTISTATUS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaFile {
    /// `cyrus.header`
    Header,
    /// `cyrus.index`
    Index,
    /// `cyrus.annotations` (per-message annotations)
    Annotations,
}

impl MetaFile {
    /// The name on the wire.
    pub fn wire_name(self) -> &'static [u8] {
        match self {
            MetaFile::Header => b"header",
            MetaFile::Index => b"index",
            MetaFile::Annotations => b"annotations",
        }
    }
    const ALL: [MetaFile; 3] = [MetaFile::Header, MetaFile::Index, MetaFile::Annotations];
}

/// One folder as `FMULTISTATUS` lists it (read from the mailbox list without opening
/// the mailbox, as upstream does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderEntry {
    /// External name relative to the user (`INBOX`, `Sent`, ...).
    pub name: Vec<u8>,
    /// The mailbox uniqueid.
    pub uniqueid: Vec<u8>,
    /// The JMAP id (Cyrus 3.13 on); empty before.
    pub jmapid: Vec<u8>,
    /// `stat` of cyrus.header (None: missing).
    pub header: Option<FileStat>,
    /// `stat` of cyrus.index.
    pub index: Option<FileStat>,
    /// `stat` of cyrus.annotations.
    pub annotations: Option<FileStat>,
    /// The synthetic `mailbox_annotations` JSON (None: the folder has none).
    pub mailbox_annotations: Option<Vec<u8>>,
    /// For a delayed-delete folder (`DELETED.*`): when it was deleted and what it
    /// was called (the `FDELETED` extension).
    pub deleted: Option<DeletedAs>,
}

/// What a delayed-delete folder was before it was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedAs {
    /// Deletion time, Unix seconds (the hex stamp of the name).
    pub time: u64,
    /// The external name it had (`INBOX.Old`, `Old`, `shared.News`).
    pub original: Vec<u8>,
    /// Cyrus's internal name now (`DELETED.user.bob.Old.5F3A1B2C`).
    pub internal: Vec<u8>,
}

/// One top-level shared hierarchy (`SHARED`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedEntry {
    /// Its owner id, `%<top>[@<domain>]`.
    pub owner: Vec<u8>,
    /// The UniqueID of its top-level entry.
    pub uniqueid: Vec<u8>,
    /// Its partition.
    pub partition: Vec<u8>,
}

/// What a request needs of a folder it opens: the spool loads only that (an
/// `FDATA` of 1,024 UIDs must not cost a read of a 200,000-record index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want<'u> {
    /// The metadata files (`FMETA`, `SNAPSHOT`).
    Meta,
    /// The message files of these UIDs (`FDATA`), in any order.
    Messages(&'u [u32]),
}

/// Result of opening a folder.
pub enum FolderOpen<'a> {
    /// Opened: name lock and index lock held until [`Folder::unlock_index`] / drop.
    Open(Box<dyn Folder + 'a>),
    /// No such folder; `intname` is the internal name `FMETA` reports.
    Missing { intname: Vec<u8> },
}

/// What the base commands and SNAPSHOT need from a Cyrus spool.
pub trait Spool {
    /// All user ids, in mailbox-list order (`USERS`).
    fn users(&self) -> Result<Vec<Vec<u8>>>;
    /// `stat` of a per-user file, None if missing.
    fn user_file_stat(&self, user: &[u8], which: UserFile) -> Result<Option<FileStat>>;
    /// Open a per-user file.
    fn open_user_file(&self, user: &[u8], which: UserFile) -> Result<Fetch<'_>>;
    /// The user's folders including deleted ones (`FMULTISTATUS`).
    fn folders(&self, user: &[u8]) -> Result<Vec<FolderEntry>>;
    /// Open a folder by external name, taking Cyrus's shared locks, for what
    /// `want` says.
    fn open_folder(&self, user: &[u8], folder: &[u8], want: Want<'_>) -> Result<FolderOpen<'_>>;
    /// Names of the files in the user's sieve directory (SNAPSHOT).
    fn sieve_scripts(&self, user: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Open one of them.
    fn open_sieve(&self, user: &[u8], name: &[u8]) -> Result<Fetch<'_>>;
    /// `USERFILES` listing: `(name, stat)` of `seen`, `sub` and `sieve/<file>` for
    /// every file SNAPSHOT would send (plus `sieve/defaultbc`, the link itself), as
    /// far as they exist, without locks (as `META`). The default builds it from the
    /// calls above; a real spool stats the files without reading them.
    fn user_file_stats(&self, user: &[u8]) -> Result<Vec<(Vec<u8>, FileStat)>> {
        let mut out = Vec::new();
        for (which, name) in [(UserFile::Seen, &b"seen"[..]), (UserFile::Sub, b"sub")] {
            if let Some(st) = self.user_file_stat(user, which)? {
                out.push((name.to_vec(), st));
            }
        }
        for s in self.sieve_scripts(user)? {
            if let Fetch::Open(f) = self.open_sieve(user, &s)? {
                let mut name = b"sieve/".to_vec();
                name.extend_from_slice(&s);
                out.push((name, f.stat));
            }
        }
        Ok(out)
    }
    /// `PARTITIONS`: every partition with its path and filesystem device, and every
    /// user's INBOX partition. A spool that cannot tell refuses.
    fn partitions(&self) -> Result<PartitionMap> {
        Err(Error::Refused("this spool does not list partitions".into()))
    }
    /// `SHARED`: every top-level shared hierarchy, each an owner the other commands
    /// take in place of a user. A spool that cannot tell refuses.
    fn shared(&self) -> Result<Vec<SharedEntry>> {
        Err(Error::Refused(
            "this spool does not list shared hierarchies".into(),
        ))
    }
}

/// An open folder. Dropping it releases every lock it holds.
pub trait Folder {
    /// The mailbox uniqueid (for `DONE FMETA`/`DONE FDATA`, `FOLDER`).
    fn uniqueid(&self) -> &[u8];
    /// The JMAP id (Cyrus 3.13 on); empty before.
    fn jmapid(&self) -> &[u8];
    /// `stat` of a metadata file, None if missing.
    fn meta_stat(&self, file: MetaFile) -> Option<FileStat>;
    /// Open a metadata file (read under the index lock).
    fn open_meta(&self, file: MetaFile) -> Fetch<'_>;
    /// The synthetic annotations JSON, None if the folder has no annotations.
    fn mailbox_annotations(&self) -> Result<Option<Vec<u8>>>;
    /// The message file of `uid`, looked up in the index (index lock held).
    fn message_file(&self, uid: u32) -> Option<PathBuf>;
    /// Drop the index lock (and the user namespace lock); the name lock stays.
    fn unlock_index(&mut self);
    /// Open a message file found by [`Folder::message_file`].
    fn open_message(&self, path: &Path) -> Fetch<'_>;
    /// Whether the metadata files are private copies that stay readable after
    /// [`Folder::unlock_index`]: the session then releases every lock first and
    /// sends them straight from the copies, without buffering them again.
    fn detached(&self) -> bool {
        false
    }
    /// How long Cyrus's index (and namespace) locks were really held, when the
    /// folder released them itself before the session's `unlock_index` (the real
    /// spool does: it copies the meta files and lets go at once). None: the time
    /// from open to `unlock_index` is the hold.
    fn lock_hold(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Counters for `STATUS`, shared by the sessions of one service process.
#[derive(Debug, Default)]
pub struct ServiceStats {
    sessions_total: AtomicU64,
    sessions_active: AtomicU64,
    locks_held: AtomicU64,
    bytes_served: AtomicU64,
    holds: Mutex<LockHolds>,
    /// The service-wide figures (across master's children) and Cyrus facts.
    pub tally: super::counters::Tally,
}

/// Index-lock hold times in power-of-two microsecond buckets.
#[derive(Debug, Default)]
struct LockHolds {
    count: u64,
    max_us: u64,
    buckets: [u64; 32],
}

impl ServiceStats {
    /// Record one index-lock hold.
    pub fn record_lock_hold(&self, us: u64) {
        self.tally.lock_hold(us);
        if let Ok(mut h) = self.holds.lock() {
            h.count += 1;
            h.max_us = h.max_us.max(us);
            let b = (64 - us.leading_zeros()) as usize;
            if let Some(slot) = h.buckets.get_mut(b.min(31)) {
                *slot += 1;
            }
        }
    }

    /// `(sessions_total, sessions_active, locks_held, bytes_served, max_us, p99_us)`;
    /// p99 is the upper edge of the bucket holding the 99th percentile.
    pub fn snapshot(&self) -> [(&'static str, u64); 6] {
        let (max_us, p99) = match self.holds.lock() {
            Ok(h) => {
                let want = h.count - h.count / 100;
                let mut seen = 0;
                let mut p99 = 0;
                for (i, n) in h.buckets.iter().enumerate() {
                    seen += n;
                    if seen >= want && *n > 0 {
                        p99 = if i == 0 { 0 } else { (1u64 << i) - 1 };
                        break;
                    }
                }
                (h.max_us, p99.min(h.max_us))
            }
            Err(_) => (0, 0),
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("sessions_total", get(&self.sessions_total)),
            ("sessions_active", get(&self.sessions_active)),
            ("locks_held", get(&self.locks_held)),
            ("bytes_served", get(&self.bytes_served)),
            ("lock_hold_max_us", max_us),
            ("lock_hold_p99_us", p99),
        ]
    }
}

/// What a session needs besides the spool.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Cyrus's `servername`: the slot every command must name.
    pub servername: Vec<u8>,
    /// Who may run requests: secrets, `cyrvaultd_allow_unauthenticated`, TLS,
    /// per-address limits (service::access).
    pub access: AccessPolicy,
    /// Cyrus's shutdown file, looked for before every command.
    pub shutdown: Option<ShutdownFile>,
    /// Most metadata bytes of one folder buffered so its locks are released before
    /// sending ([`BUFFER_BUDGET`] is the usual value; 0 streams under the lock always).
    pub buffer_budget: u64,
    /// Peer description for log lines.
    pub peer: String,
    /// The peer's address (per-address limits), when it is an IP peer.
    pub peer_addr: Option<IpAddr>,
    /// This connection's authentication deadline (shared with its transport).
    pub deadline: Deadline,
}

impl SessionConfig {
    /// A configuration for `servername` with `access`, the usual buffer budget, no
    /// shutdown file and an unnamed peer.
    pub fn new(servername: &[u8], access: AccessPolicy) -> Self {
        SessionConfig {
            servername: servername.to_vec(),
            access,
            shutdown: None,
            buffer_budget: BUFFER_BUDGET,
            peer: String::new(),
            peer_addr: None,
            deadline: Deadline::default(),
        }
    }
}

enum Flow {
    Continue,
    Quit,
}

fn end_flow(v: Verdict) -> Flow {
    match v {
        Verdict::End(_) => Flow::Quit,
        _ => Flow::Continue,
    }
}

/// Holds a folder and accounts for its index lock.
struct Held<'a> {
    folder: Box<dyn Folder + 'a>,
    since: Option<Instant>,
    stats: &'a ServiceStats,
    /// The session's longest hold so far (microseconds), for its log line.
    session_max: Arc<AtomicU64>,
}

impl<'a> Held<'a> {
    fn new(
        folder: Box<dyn Folder + 'a>,
        stats: &'a ServiceStats,
        session_max: &Arc<AtomicU64>,
    ) -> Self {
        stats.locks_held.fetch_add(1, Ordering::Relaxed);
        Held {
            folder,
            since: Some(Instant::now()),
            stats,
            session_max: Arc::clone(session_max),
        }
    }
    fn unlock_index(&mut self) {
        if let Some(t) = self.since.take() {
            self.folder.unlock_index();
            self.stats.locks_held.fetch_sub(1, Ordering::Relaxed);
            let held = self.folder.lock_hold().unwrap_or_else(|| t.elapsed());
            let us = u64::try_from(held.as_micros()).unwrap_or(u64::MAX);
            self.stats.record_lock_hold(us);
            self.session_max.fetch_max(us, Ordering::Relaxed);
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.unlock_index();
    }
}

/// One connection's state machine.
pub struct Session<'a> {
    cfg: &'a SessionConfig,
    spool: &'a dyn Spool,
    stats: &'a ServiceStats,
    access: Access,
    summary: SessionSummary,
    max_hold_us: Arc<AtomicU64>,
    /// Refusals not logged because of the rate limit.
    unlogged: u64,
    /// The client sent `CAPABILITY`: it is a cyrvault client, which is told the
    /// class of a failure that retrying cannot fix (doc/protocol.md, 2.7).
    extended: bool,
}

type W<'w> = ReplyWriter<&'w mut dyn Write>;

impl<'a> Session<'a> {
    /// A new session; counts it in `stats` until it is dropped.
    pub fn new(cfg: &'a SessionConfig, spool: &'a dyn Spool, stats: &'a ServiceStats) -> Self {
        stats.sessions_total.fetch_add(1, Ordering::Relaxed);
        stats.sessions_active.fetch_add(1, Ordering::Relaxed);
        Session {
            cfg,
            spool,
            stats,
            access: Access::start(&cfg.access, cfg.peer_addr, cfg.deadline.clone()),
            summary: SessionSummary::default(),
            max_hold_us: Arc::new(AtomicU64::new(0)),
            unlogged: 0,
            extended: false,
        }
    }

    /// Serve until `QUIT`, end of stream, a refusal that ends the session (a failed
    /// AUTH, the bounds before authentication, the shutdown file), or an error that
    /// leaves the stream unusable (I/O, a timeout, a file shorter than announced, a
    /// spool failure after `OK` was sent: the client then sees a cut answer, never a
    /// silently incomplete one). This connection cannot switch to TLS.
    pub fn run(self, input: &mut dyn Read, output: &mut dyn Write) -> Result<SessionSummary> {
        self.run_on(input, output, &NoChannel)
    }

    /// Like [`Session::run`], on a connection that can switch to TLS (`STARTTLS`).
    pub fn run_channel<S: Read + Write>(self, shared: &Shared<S>) -> Result<SessionSummary> {
        let mut input = shared.half();
        // replies are assembled in a buffer and flushed once per command: writing
        // each line with its own write(2) meets Nagle and the client's delayed ACK
        // (a 40 ms stall per command), and TLS gets full records
        let mut output = std::io::BufWriter::with_capacity(64 * 1024, shared.half());
        self.run_on(&mut input, &mut output, shared)
    }

    fn run_on(
        mut self,
        input: &mut dyn Read,
        output: &mut dyn Write,
        chan: &dyn Channel,
    ) -> Result<SessionSummary> {
        let mut lines = LineReader::new(input, MAX_LINE);
        let mut w: W<'_> = ReplyWriter::new(output);
        let res = match self.access.refuse_at_start() {
            Some(text) => self.turn_away(&text, &mut lines, &mut w),
            None => self.run_loop(&mut lines, &mut w, chan),
        };
        self.summary.bytes_out = w.bytes_out();
        self.summary.max_lock_hold_us = self.max_hold_us.load(Ordering::Relaxed);
        self.stats
            .bytes_served
            .fetch_add(w.bytes_out(), Ordering::Relaxed);
        log::info!(
            target: "cyrvault::session",
            "session end peer={} user={} folders={} requests={} failed={} refused={} bytes_in={} bytes_out={}{}{}",
            self.cfg.peer,
            self.summary.user.as_deref().unwrap_or("-"),
            self.summary.folders,
            self.summary.requests,
            self.summary.failed,
            self.summary.refused,
            lines.bytes_in(),
            w.bytes_out(),
            if chan.is_tls() { " tls" } else { "" },
            res.as_ref().err().map(|e| format!(" error={e}")).unwrap_or_default()
        );
        if self.unlogged > 0 {
            log::warn!(
                target: "cyrvault::session",
                "{} more refused requests from {} were not logged (rate limit)",
                self.unlogged,
                self.cfg.peer
            );
        }
        res.map(|()| self.summary.clone())
    }

    fn run_loop(
        &mut self,
        lines: &mut LineReader<&mut dyn Read>,
        w: &mut W<'_>,
        chan: &dyn Channel,
    ) -> Result<()> {
        loop {
            lines.set_max_line(self.access.max_line());
            let parsed = match lines.read_line() {
                Ok(None) => return Ok(()),
                Ok(Some(l)) => {
                    self.summary.requests += 1;
                    if let Some(text) = self.cfg.shutdown.as_ref().and_then(ShutdownFile::check) {
                        // Cyrus's maintenance switch, looked for before every command
                        w.no(format!("shutdown: {text}").as_bytes())?;
                        w.flush()?;
                        log::info!(target: "cyrvault::session", "shutdown file present: ending the session with {}", self.cfg.peer);
                        return Ok(());
                    }
                    parse_request_line(&l.bytes, l.terminated)
                }
                Err(e @ ProtocolError::LineTooLong { .. }) => {
                    self.summary.requests += 1;
                    Err(e)
                }
                Err(e) => return Err(e.into()),
            };
            let before = w.bytes_out();
            let flow = match parsed {
                Ok(req) => self.handle(req, w, chan, lines.buffered())?,
                Err(e) => {
                    // a bound broken by the line, the command or the slot
                    let v = self.access.malformed(&e);
                    self.refuse(&v, w)?;
                    end_flow(v)
                }
            };
            // Answers to pipelined requests go out together: a complete request
            // already buffered here is answered before the flush, so a client's batch
            // (an unchanged user's FMULTISTATUS + USERFILES + quota, doc/protocol.md)
            // costs one write(2), not one per answer (each would wait for the ACK of
            // the one before it where Nagle is on: ~40 ms per user, issue 10). A
            // partial line is not a request: the answers go out before the service
            // would block reading the rest. QUIT and STARTTLS always flush.
            if !matches!(flow, Flow::Continue) || !lines.has_line() {
                w.flush()?;
            }
            self.stats
                .tally
                .request(w.bytes_out().saturating_sub(before));
            if let Flow::Quit = flow {
                return Ok(());
            }
        }
    }

    fn handle(
        &mut self,
        req: Request,
        w: &mut W<'_>,
        chan: &dyn Channel,
        buffered: usize,
    ) -> Result<Flow> {
        if let Request::Quit = req {
            w.ok()?;
            return Ok(Flow::Quit);
        }
        // who may do what comes first (before the slot check: an unauthenticated
        // client learns nothing from a probe but the servername of `NO iam`)
        let v = self.access.check(&req);
        if v != Verdict::Run {
            self.refuse(&v, w)?;
            return Ok(end_flow(v));
        }
        if let Request::Ping = req {
            w.ok()?;
            w.done("PING", &[])?;
            return Ok(Flow::Continue);
        }
        if req.slot() != Some(self.cfg.servername.as_slice()) {
            let mut t = b"iam ".to_vec();
            t.extend_from_slice(&self.cfg.servername);
            self.log_refusal(b"wrong slot (not this servername)");
            w.no(&t)?;
            return Ok(Flow::Continue);
        }
        match req {
            Request::Users { .. } => self.users(w)?,
            Request::Meta { user, items, .. } => self.meta(&user, items, w)?,
            Request::FMultiStatus { user, .. } => self.fmultistatus(&user, w)?,
            Request::FMeta {
                user,
                folder,
                items,
                ..
            } => self.fmeta(&user, &folder, items, w)?,
            Request::FData {
                user,
                folder,
                items,
                ..
            } => self.fdata(&user, &folder, &items, w)?,
            Request::Capability { .. } => self.capability(w, chan)?,
            Request::Auth { slot, step } => return self.auth_step(&slot, step, w, chan),
            Request::StartTls { .. } => return self.starttls(w, chan, buffered),
            Request::Status { .. } => self.status(w)?,
            Request::Snapshot { user, .. } => self.snapshot(&user, w)?,
            Request::Partitions { .. } => self.partitions(w)?,
            Request::UserFiles { user, fetch, .. } => self.userfiles(&user, fetch, w)?,
            Request::Shared { .. } => self.shared(w)?,
            Request::FDeleted { user, .. } => self.fdeleted(&user, w)?,
            Request::Refused { refusal, .. } => match refusal_text(refusal) {
                Some(text) => {
                    self.log_refusal(&text);
                    w.no(&text)?;
                }
                None => self.log_refusal(b"(silently, as upstream) malformed argument"),
            },
            Request::Quit | Request::Ping => {}
        }
        Ok(Flow::Continue)
    }

    /// One log line per refused request (client error: bad syntax, a bound, a name
    /// rule, missing authentication), with the peer; the text is cut to 200 bytes.
    /// Rate-limited per process (service::refusal_log): what is held back is
    /// counted and reported at the end of the session.
    fn log_refusal(&mut self, text: &[u8]) {
        self.summary.refused += 1;
        self.stats.tally.refused();
        if !super::refusal_log::allow() {
            self.unlogged = self.unlogged.saturating_add(1);
            return;
        }
        log::warn!(
            target: "cyrvault::session",
            "refused request from {}: {}",
            self.cfg.peer,
            super::refusal_log::printable(text),
        );
    }

    fn note_user(&mut self, user: &[u8]) {
        self.summary.user = Some(String::from_utf8_lossy(user).into_owned());
    }

    /// A spool failure before anything was written: `NO internal error`, logged
    /// and counted. A cyrvault client (it sent `CAPABILITY`) is told the class and
    /// the message of a failure that retrying cannot fix:
    /// `NO internal error [DATAERR] <message>` (doc/protocol.md, 2.7).
    fn spool_failed(&mut self, what: &str, user: &[u8], e: &Error, w: &mut W<'_>) -> Result<()> {
        self.summary.failed += 1;
        self.stats.tally.error();
        log::error!(
            target: "cyrvault::session",
            "{what} for user {} from {}: {e}",
            String::from_utf8_lossy(user),
            self.cfg.peer
        );
        if self.extended && !e.is_temporary() {
            // one line: no control bytes from a path or a parse message
            let text: String = format!("internal error [{}] {e}", e.kind().wire_name())
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .take(2000)
                .collect();
            w.no(text.as_bytes())?;
        } else {
            w.no(b"internal error")?;
        }
        Ok(())
    }

    fn users(&mut self, w: &mut W<'_>) -> Result<()> {
        let users = match self.spool.users() {
            Ok(u) => u,
            Err(e) => return self.spool_failed("listing users", b"-", &e, w),
        };
        w.ok()?;
        for u in &users {
            w.user(u)?;
        }
        w.done("USERS", &[])?;
        Ok(())
    }

    fn meta(&mut self, user: &[u8], items: Option<Vec<Vec<u8>>>, w: &mut W<'_>) -> Result<()> {
        self.note_user(user);
        let Some(items) = items else {
            let mut stats = Vec::new();
            for (which, name) in [(UserFile::Seen, &b"seen"[..]), (UserFile::Sub, b"sub")] {
                match self.spool.user_file_stat(user, which) {
                    Ok(st) => stats.push((name, st)),
                    Err(e) => return self.spool_failed("stat of user file", user, &e, w),
                }
            }
            w.ok()?;
            for (name, st) in stats {
                if let Some(st) = st {
                    w.stat(None, name, st)?;
                }
            }
            w.done("META", &[])?;
            return Ok(());
        };
        w.ok()?;
        for item in &items {
            let which = match item.as_slice() {
                b"seen" => UserFile::Seen,
                b"sub" => UserFile::Sub,
                b"quota" => UserFile::Quota,
                _ => continue, // upstream ignores unknown items
            };
            let fetch = self.spool.open_user_file(user, which)?;
            send_fetch(item, fetch, w)?;
        }
        w.done("META", &[])?;
        Ok(())
    }

    fn fmultistatus(&mut self, user: &[u8], w: &mut W<'_>) -> Result<()> {
        self.note_user(user);
        let folders = match self.spool.folders(user) {
            Ok(f) => f,
            Err(e) => return self.spool_failed("listing folders", user, &e, w),
        };
        w.ok()?;
        for f in &folders {
            w.folder(&f.name, &f.uniqueid, &f.jmapid)?;
            for (file, st) in MetaFile::ALL.iter().zip([f.header, f.index, f.annotations]) {
                if let Some(st) = st {
                    w.stat(Some(&f.name), file.wire_name(), st)?;
                }
            }
            if let Some(json) = &f.mailbox_annotations {
                w.stat(Some(&f.name), b"mailbox_annotations", annot_stat(json))?;
            }
        }
        w.done("FMULTISTATUS", &[])?;
        Ok(())
    }

    fn open(
        &mut self,
        user: &[u8],
        folder: &[u8],
        want: Want<'_>,
        w: &mut W<'_>,
    ) -> Result<Option<FolderOpen<'a>>> {
        self.note_user(user);
        match self.spool.open_folder(user, folder, want) {
            Ok(o) => {
                if let FolderOpen::Open(_) = o {
                    self.summary.folders += 1;
                }
                Ok(Some(o))
            }
            Err(e) => {
                self.spool_failed("opening folder", user, &e, w)?;
                Ok(None)
            }
        }
    }

    fn fmeta(
        &mut self,
        user: &[u8],
        folder: &[u8],
        items: Option<Vec<Vec<u8>>>,
        w: &mut W<'_>,
    ) -> Result<()> {
        let mut held = match self.open(user, folder, Want::Meta, w)? {
            None => return Ok(()),
            Some(FolderOpen::Missing { intname }) => {
                // FMETA names the internal name here, FDATA the name as given
                w.no_name("no such folder", &intname)?;
                return Ok(());
            }
            Some(FolderOpen::Open(f)) => Held::new(f, self.stats, &self.max_hold_us),
        };
        w.ok()?;
        match items {
            None => {
                for file in MetaFile::ALL {
                    if let Some(st) = held.folder.meta_stat(file) {
                        w.stat(None, file.wire_name(), st)?;
                    }
                }
                if let Some(json) = held.folder.mailbox_annotations()? {
                    w.stat(None, b"mailbox_annotations", annot_stat(&json))?;
                }
            }
            Some(items) => {
                // unknown items are ignored, as upstream does
                let wanted: Vec<MetaItem> = items.iter().filter_map(|i| meta_item(i)).collect();
                let files: Vec<MetaFile> = wanted
                    .iter()
                    .filter_map(|i| match i {
                        MetaItem::File(f) => Some(*f),
                        _ => None,
                    })
                    .collect();
                if held.folder.detached() {
                    // private copies: every lock goes first, then the same bytes
                    // are sent straight from the copies (doc/protocol.md, 1.7)
                    let json = held.folder.mailbox_annotations()?;
                    // the clock is read before the name lock goes, as below
                    let servertime = servertime_frame();
                    held.unlock_index();
                    for item in &wanted {
                        match item {
                            MetaItem::File(file) => {
                                send_fetch(file.wire_name(), held.folder.open_meta(*file), w)?
                            }
                            MetaItem::Annotations => {
                                write_frames(vec![annotations_frame(json.clone())], w)?
                            }
                            MetaItem::ServerTime => write_frames(vec![servertime.clone()], w)?,
                        }
                    }
                    w.done("FMETA", &[held.folder.uniqueid(), held.folder.jmapid()])?;
                    return Ok(());
                }
                if fits_budget(held.folder.as_ref(), &files, self.cfg.buffer_budget) {
                    // same bytes as upstream, but read into memory under the lock and
                    // sent after every lock is released (doc/protocol.md, 1.7)
                    let mut frames = Vec::with_capacity(wanted.len());
                    for item in &wanted {
                        frames.push(match item {
                            MetaItem::File(file) => {
                                buffer_meta(held.folder.as_ref(), *file, self.cfg.buffer_budget)?
                            }
                            MetaItem::Annotations => {
                                annotations_frame(held.folder.mailbox_annotations()?)
                            }
                            // the lock is still held: no writer has touched the files
                            MetaItem::ServerTime => servertime_frame(),
                        });
                    }
                    let ids = [
                        held.folder.uniqueid().to_vec(),
                        held.folder.jmapid().to_vec(),
                    ];
                    held.unlock_index();
                    drop(held);
                    write_frames(frames, w)?;
                    w.done("FMETA", &[&ids[0], &ids[1]])?;
                    return Ok(());
                }
                // too big to buffer: stream under the index lock, as upstream does
                for item in &wanted {
                    match item {
                        MetaItem::File(file) => {
                            send_fetch(file.wire_name(), held.folder.open_meta(*file), w)?
                        }
                        MetaItem::Annotations => write_frames(
                            vec![annotations_frame(held.folder.mailbox_annotations()?)],
                            w,
                        )?,
                        MetaItem::ServerTime => write_frames(vec![servertime_frame()], w)?,
                    }
                }
            }
        }
        w.done("FMETA", &[held.folder.uniqueid(), held.folder.jmapid()])?;
        held.unlock_index();
        Ok(())
    }

    fn fdata(
        &mut self,
        user: &[u8],
        folder: &[u8],
        items: &[Vec<u8>],
        w: &mut W<'_>,
    ) -> Result<()> {
        let uids: Vec<u32> = items.iter().map(|i| c_atoi_u32(i)).collect();
        let mut held = match self.open(user, folder, Want::Messages(&uids), w)? {
            None => return Ok(()),
            Some(FolderOpen::Missing { .. }) => {
                w.no_name("no such folder", folder)?;
                return Ok(());
            }
            Some(FolderOpen::Open(f)) => Held::new(f, self.stats, &self.max_hold_us),
        };
        w.ok()?;
        // resolve every UID under the index lock, then drop it before sending
        let files: Vec<Option<PathBuf>> = uids
            .iter()
            .map(|&uid| held.folder.message_file(uid))
            .collect();
        held.unlock_index();
        for (item, path) in items.iter().zip(files) {
            let fetch = match &path {
                Some(p) => held.folder.open_message(p),
                None => Fetch::Missing,
            };
            send_fetch(item, fetch, w)?;
        }
        w.done("FDATA", &[held.folder.uniqueid(), held.folder.jmapid()])?;
        Ok(())
    }

    fn status(&mut self, w: &mut W<'_>) -> Result<()> {
        w.ok()?;
        for (k, v) in self.stats.snapshot() {
            w.status(k, v)?;
        }
        for (k, v) in self.stats.tally.status_lines() {
            match v.parse::<u64>() {
                Ok(n) => w.status(&k, n)?,
                Err(_) => w.status_text(&k, v.as_bytes())?,
            }
        }
        w.done("STATUS", &[])?;
        Ok(())
    }

    fn shared(&mut self, w: &mut W<'_>) -> Result<()> {
        let list = match self.spool.shared() {
            Ok(l) => l,
            Err(e) => return self.spool_failed("listing shared hierarchies", b"-", &e, w),
        };
        w.ok()?;
        for s in &list {
            w.shared(&s.owner, &s.uniqueid, &s.partition)?;
        }
        w.done("SHARED", &[])?;
        Ok(())
    }

    fn fdeleted(&mut self, user: &[u8], w: &mut W<'_>) -> Result<()> {
        self.note_user(user);
        let folders = match self.spool.folders(user) {
            Ok(f) => f,
            Err(e) => return self.spool_failed("listing deleted folders", user, &e, w),
        };
        w.ok()?;
        for f in &folders {
            if let Some(d) = &f.deleted {
                w.fdeleted(&f.name, &f.uniqueid, d.time, &d.original, &d.internal)?;
            }
        }
        w.done("FDELETED", &[])?;
        Ok(())
    }

    fn partitions(&mut self, w: &mut W<'_>) -> Result<()> {
        let map = match self.spool.partitions() {
            Ok(m) => m,
            Err(e) => return self.spool_failed("listing partitions", b"-", &e, w),
        };
        w.ok()?;
        for (name, path, dev) in &map.partitions {
            w.partition(name, path, *dev)?;
        }
        for (user, part) in &map.users {
            w.userpart(user, part)?;
        }
        w.done("PARTITIONS", &[])?;
        Ok(())
    }

    /// `USERFILES`: the user's own files (seen, sub, sieve) listed with their stats,
    /// or sent (`FETCH`) as SNAPSHOT sends them, without any folder.
    fn userfiles(&mut self, user: &[u8], fetch: bool, w: &mut W<'_>) -> Result<()> {
        self.note_user(user);
        if !fetch {
            let stats = match self.spool.user_file_stats(user) {
                Ok(s) => s,
                Err(e) => return self.spool_failed("stat of user files", user, &e, w),
            };
            w.ok()?;
            for (name, st) in &stats {
                w.stat(None, name, *st)?;
            }
            w.done("USERFILES", &[])?;
            return Ok(());
        }
        let scripts = match self.spool.sieve_scripts(user) {
            Ok(s) => s,
            Err(e) => return self.spool_failed("listing sieve scripts", user, &e, w),
        };
        w.ok()?;
        self.send_user_files(user, &scripts, w)?;
        w.done("USERFILES", &[])?;
        Ok(())
    }

    /// `seen`, `sub`, `quota` and every sieve file, as SNAPSHOT and `USERFILES FETCH`
    /// send them.
    fn send_user_files(&mut self, user: &[u8], scripts: &[Vec<u8>], w: &mut W<'_>) -> Result<()> {
        for (which, name) in [
            (UserFile::Seen, &b"seen"[..]),
            (UserFile::Sub, b"sub"),
            (UserFile::Quota, b"quota"),
        ] {
            send_fetch(name, self.spool.open_user_file(user, which)?, w)?;
        }
        for s in scripts {
            let mut name = b"sieve/".to_vec();
            name.extend_from_slice(s);
            send_fetch(&name, self.spool.open_sieve(user, s)?, w)?;
        }
        Ok(())
    }

    fn snapshot(&mut self, user: &[u8], w: &mut W<'_>) -> Result<()> {
        self.note_user(user);
        let listed = self.spool.folders(user).and_then(|f| {
            let s = self.spool.sieve_scripts(user)?;
            Ok((f, s))
        });
        let (folders, scripts) = match listed {
            Ok(x) => x,
            Err(e) => return self.spool_failed("listing for snapshot", user, &e, w),
        };
        w.ok()?;
        self.send_user_files(user, &scripts, w)?;
        let mut sent = 0u64;
        for f in &folders {
            // each folder under its own index lock, released before the next
            let mut held = match self.open(user, &f.name, Want::Meta, w)? {
                // `open` answered `NO <why>` (a damaged folder, a lock timeout):
                // the other folders still come
                None => continue,
                Some(FolderOpen::Missing { .. }) => {
                    w.no_name("no such folder", &f.name)?;
                    continue;
                }
                Some(FolderOpen::Open(folder)) => Held::new(folder, self.stats, &self.max_hold_us),
            };
            let ids = [
                held.folder.uniqueid().to_vec(),
                held.folder.jmapid().to_vec(),
            ];
            if held.folder.detached() {
                // private copies: locks go first, then straight from the copies
                let json = held.folder.mailbox_annotations()?;
                held.unlock_index();
                w.folder(&f.name, &ids[0], &ids[1])?;
                for file in MetaFile::ALL {
                    send_fetch(file.wire_name(), held.folder.open_meta(file), w)?;
                }
                if let Some(json) = json {
                    write_frames(vec![annotations_frame(Some(json))], w)?;
                }
            } else if fits_budget(held.folder.as_ref(), &MetaFile::ALL, self.cfg.buffer_budget) {
                let mut frames = Vec::with_capacity(4);
                for file in MetaFile::ALL {
                    frames.push(buffer_meta(
                        held.folder.as_ref(),
                        file,
                        self.cfg.buffer_budget,
                    )?);
                }
                if let Some(json) = held.folder.mailbox_annotations()? {
                    frames.push(annotations_frame(Some(json)));
                }
                drop(held);
                w.folder(&f.name, &ids[0], &ids[1])?;
                write_frames(frames, w)?;
            } else {
                w.folder(&f.name, &ids[0], &ids[1])?;
                for file in MetaFile::ALL {
                    send_fetch(file.wire_name(), held.folder.open_meta(file), w)?;
                }
                if let Some(json) = held.folder.mailbox_annotations()? {
                    write_frames(vec![annotations_frame(Some(json))], w)?;
                }
            }
            sent += 1;
        }
        w.done("SNAPSHOT", &[sent.to_string().as_bytes()])?;
        Ok(())
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.stats.sessions_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The text of the `NO` line for a refusal; None for upstream's silent refusal.
fn refusal_text(refusal: Refusal) -> Option<Vec<u8>> {
    Some(match refusal {
        Refusal::BadCommand => b"bad command".to_vec(),
        Refusal::Unknown(cmd) => {
            let mut t = b"unknown command ".to_vec();
            t.extend_from_slice(&cmd);
            t
        }
        Refusal::MissingUser => b"missing user".to_vec(),
        Refusal::Silent => return None,
        Refusal::Literal => b"literals are not supported".to_vec(),
        Refusal::Invalid(e) => e.to_string().into_bytes(),
    })
}

/// `STAT` data of the synthetic annotations file: length, mtime 0, synthetic inode.
fn annot_stat(json: &[u8]) -> FileStat {
    let sha: [u8; 20] = Sha1::digest(json).into();
    FileStat {
        size: json.len() as u64,
        mtime: 0,
        ino: synthetic_ino(&sha),
    }
}

/// How long a turned-away connection is read from before it is closed.
const TURN_AWAY_DRAIN_MS: u64 = 50;

/// Most bytes of metadata files one folder may have buffered in memory so that its
/// locks can be released before the files are sent; bigger folders are streamed
/// under the index lock, as upstream always does.
pub const BUFFER_BUDGET: u64 = 32 << 20;

/// One reply unit prepared under a lock and written after it is released.
#[derive(Clone)]
enum Frame {
    Data {
        name: &'static [u8],
        stat: FileStat,
        bytes: Vec<u8>,
    },
    /// `NO <prefix> <encoded name>`.
    NoName(&'static str, &'static [u8]),
    /// `NO <text>`.
    No(&'static [u8]),
}

fn fits_budget(folder: &dyn Folder, files: &[MetaFile], budget: u64) -> bool {
    files
        .iter()
        .filter_map(|f| folder.meta_stat(*f))
        .try_fold(0u64, |acc, st| acc.checked_add(st.size))
        .is_some_and(|total| total <= budget)
}

/// Read a metadata file completely (exactly the size its open `stat` reported).
fn buffer_meta(folder: &dyn Folder, file: MetaFile, budget: u64) -> Result<Frame> {
    let name = file.wire_name();
    Ok(match folder.open_meta(file) {
        Fetch::Missing => Frame::NoName("no such file", name),
        Fetch::OpenFailed => Frame::NoName("failed to open file", name),
        Fetch::Open(mut f) => {
            if f.stat.size > budget {
                return Err(Error::Protocol(format!(
                    "{} grew past the buffer budget while being opened",
                    String::from_utf8_lossy(name)
                )));
            }
            let mut bytes = Vec::with_capacity(f.stat.size as usize);
            let got = (&mut f.reader)
                .take(f.stat.size)
                .read_to_end(&mut bytes)
                .map_err(|e| {
                    Error::Protocol(format!("reading {}: {e}", String::from_utf8_lossy(name)))
                })?;
            if got as u64 != f.stat.size {
                return Err(ProtocolError::ShortSource {
                    name: String::from_utf8_lossy(name).into_owned(),
                    announced: f.stat.size,
                    got: got as u64,
                }
                .into());
            }
            Frame::Data {
                name,
                stat: f.stat,
                bytes,
            }
        }
    })
}

/// One `FMETA` item a session serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetaItem {
    File(MetaFile),
    /// `mailbox_annotations`: the synthetic JSON.
    Annotations,
    /// `servertime` (extension `SERVERTIME`, doc/protocol.md 2.6).
    ServerTime,
}

/// The item an `FMETA` item name asks for (`None`: unknown, ignored as upstream does).
fn meta_item(name: &[u8]) -> Option<MetaItem> {
    Some(match name {
        b"header" => MetaItem::File(MetaFile::Header),
        b"index" => MetaItem::File(MetaFile::Index),
        b"annotations" => MetaItem::File(MetaFile::Annotations),
        b"mailbox_annotations" => MetaItem::Annotations,
        b"servertime" => MetaItem::ServerTime,
        _ => return None,
    })
}

/// The server's clock now, while the folder's lock is held, as a file named
/// `servertime`: `<seconds>.<nanoseconds>\n`, with the seconds as its mtime too. A
/// client compares the folder's file mtimes with it to tell a "racy" stat (a change in
/// the same second could follow unseen) on the clock that stamped them.
fn servertime_frame() -> Frame {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let bytes = format!("{}.{:09}\n", now.as_secs(), now.subsec_nanos()).into_bytes();
    Frame::Data {
        name: b"servertime",
        stat: FileStat {
            size: bytes.len() as u64,
            mtime: now.as_secs(),
            ino: 0,
        },
        bytes,
    }
}

fn annotations_frame(json: Option<Vec<u8>>) -> Frame {
    match json {
        None => Frame::No(b"empty mailbox_annotations"),
        Some(bytes) => Frame::Data {
            name: b"mailbox_annotations",
            stat: annot_stat(&bytes),
            bytes,
        },
    }
}

fn write_frames(frames: Vec<Frame>, w: &mut W<'_>) -> Result<()> {
    for f in frames {
        match f {
            Frame::Data { name, stat, bytes } => {
                w.data(name, stat, &mut bytes.as_slice())?;
            }
            Frame::NoName(prefix, name) => w.no_name(prefix, name)?,
            Frame::No(text) => w.no(text)?,
        }
    }
    Ok(())
}

fn send_fetch(name: &[u8], fetch: Fetch<'_>, w: &mut W<'_>) -> Result<()> {
    match fetch {
        Fetch::Missing => w.no_name("no such file", name)?,
        Fetch::OpenFailed => w.no_name("failed to open file", name)?,
        Fetch::Open(mut f) => {
            w.data(name, f.stat, &mut f.reader)?;
        }
    }
    Ok(())
}

// The handshake half of the session (refusals, CAPABILITY, AUTH, STARTTLS): a child
// module, so it sees the session's fields.
#[path = "session_handshake.rs"]
mod handshake;

#[cfg(test)]
#[path = "session_tests.rs"]
pub(crate) mod tests;
