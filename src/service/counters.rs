//! Service-wide counters: what every `cyrvaultd` process master started since master
//! itself started, for `STATUS` (and `cyrvault status --server`). Master forks one
//! process per concurrent connection and replaces them after `-U` uses, so each
//! process adds its own figures into one small file,
//! `{configdirectory}/socket/<service>.counters` (beside master's accept locks,
//! owned by cyrus, mode 0600). Layout and rules: doc/service.md ("Counters").
//!
//! Cheap: a process adds what it counted since its last addition at most once a
//! second while serving, at the end of each session and before answering `STATUS`:
//! one open, one lock, one 256-byte read and write. Session start and end also
//! claim and free a slot in the active-session table (one lock each).
//!
//! Crash-safe: every change is one `pwrite` made under an exclusive lock (the kernel
//! drops the lock with a killed process); the header carries a CRC, so a torn write
//! after a power loss is seen and the counters start afresh; a process killed in a
//! session loses at most a second of its figures, and its slot is skipped (and
//! reused) once its pid is no longer a child of this master. Counters restart when
//! master restarts: the header names master (boot id, pid, start time).
#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::io_error::IoContext;
use crate::lock::{self, LockMode, LockStats, LockStatsSnapshot};

const MAGIC: &[u8; 8] = b"CYRVCNTR";
/// The layout version this code reads and writes.
pub const VERSION: u32 = 1;
/// Header: magic, version, CRC, master's identity, epoch, counters.
const HEAD_LEN: usize = 256;
/// Whole file: the header, then the active-session slots (one pid each, 0 = free).
const FILE_LEN: usize = 4096;
const SLOTS: usize = (FILE_LEN - HEAD_LEN) / 4;
const COUNTERS_AT: usize = 56;
/// How long a process waits for the counters file's lock before giving up (its
/// figures are then added next time).
const LOCK_WAIT: Duration = Duration::from_secs(1);
/// Most often a serving process adds its figures.
const EVERY: Duration = Duration::from_secs(1);

/// The counters, in file order; `STATUS` calls them `service_<name>`.
pub const NAMES: [&str; 9] = [
    "sessions",
    "requests",
    "bytes",
    "lock_waits",
    "lock_wait_us",
    "lock_timeouts",
    "errors",
    "refused",
    "lock_hold_max_us",
];
/// The one counter that keeps a maximum instead of a sum.
const MAX_INDEX: usize = 8;

/// A process's figures since it started (cumulative; the file gets differences).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures(pub [u64; NAMES.len()]);

impl Figures {
    /// Figures from the process's counts, its longest index-lock hold and its
    /// locker's wait statistics.
    pub fn of(
        [sessions, requests, bytes, errors, refused, max_hold_us]: [u64; 6],
        locks: &LockStatsSnapshot,
    ) -> Figures {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Figures([
            sessions,
            requests,
            bytes,
            locks.waits,
            us(locks.total_waited),
            locks.timeouts,
            errors,
            refused,
            max_hold_us,
        ])
    }
}

/// Which master the counters belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Master {
    boot: [u8; 16],
    pid: u32,
    start_ticks: u64,
}

impl Master {
    /// Our parent (master, or whatever started us) as the kernel describes it.
    fn current() -> Master {
        let pid = nix::unistd::getppid().as_raw().max(0) as u32;
        let mut boot = [0u8; 16];
        if let Ok(id) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
            let hexed: String = id.trim().chars().filter(|c| *c != '-').collect();
            let _ = hex::decode_to_slice(hexed.as_bytes(), &mut boot);
        }
        Master {
            boot,
            pid,
            start_ticks: proc_stat(pid).map_or(0, |s| s.start_ticks),
        }
    }
}

/// The two fields of `/proc/<pid>/stat` we use.
struct ProcStat {
    ppid: u32,
    start_ticks: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        ppid: f.get(1)?.parse().ok()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

/// What the file says, service-wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTotals {
    /// When the counters started (master's start, as seen by its first child), ms.
    pub since_ms: u64,
    /// The counters, in [`NAMES`] order.
    pub figures: Figures,
    /// Sessions being served now (by live children of this master).
    pub active: u64,
}

/// The decoded header.
struct Head {
    master: Master,
    since_ms: u64,
    figures: Figures,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Why a header was not taken as it is.
#[derive(Debug, PartialEq, Eq)]
enum Bad {
    /// Empty or short file (new), wrong magic or CRC (damaged): start afresh.
    Fresh(&'static str),
    /// Written by a newer cyrvaultd: leave it alone.
    Newer(u32),
}

/// Parse a header: magic, then version, then CRC, then the fields.
fn parse_head(b: &[u8]) -> std::result::Result<Head, Bad> {
    if b.len() < HEAD_LEN || b[..8].iter().all(|&x| x == 0) {
        return Err(Bad::Fresh("new"));
    }
    if &b[..8] != MAGIC {
        return Err(Bad::Fresh("wrong magic"));
    }
    let version = le_u32(b, 8);
    if version > VERSION {
        return Err(Bad::Newer(version));
    }
    if version != VERSION || le_u32(b, 12) != crc32fast::hash(&b[16..HEAD_LEN]) {
        return Err(Bad::Fresh("bad checksum"));
    }
    let mut boot = [0u8; 16];
    boot.copy_from_slice(&b[16..32]);
    let mut figures = Figures::default();
    for (i, f) in figures.0.iter_mut().enumerate() {
        *f = le_u64(b, COUNTERS_AT + 8 * i);
    }
    Ok(Head {
        master: Master {
            boot,
            pid: le_u32(b, 32),
            start_ticks: le_u64(b, 40),
        },
        since_ms: le_u64(b, 48),
        figures,
    })
}

fn encode_head(h: &Head) -> [u8; HEAD_LEN] {
    let mut b = [0u8; HEAD_LEN];
    b[..8].copy_from_slice(MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[16..32].copy_from_slice(&h.master.boot);
    b[32..36].copy_from_slice(&h.master.pid.to_le_bytes());
    b[40..48].copy_from_slice(&h.master.start_ticks.to_le_bytes());
    b[48..56].copy_from_slice(&h.since_ms.to_le_bytes());
    for (i, f) in h.figures.0.iter().enumerate() {
        let at = COUNTERS_AT + 8 * i;
        b[at..at + 8].copy_from_slice(&f.to_le_bytes());
    }
    let crc = crc32fast::hash(&b[16..HEAD_LEN]);
    b[12..16].copy_from_slice(&crc.to_le_bytes());
    b
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The counters file of one service, as one process uses it.
#[derive(Debug)]
pub struct SharedCounters {
    path: PathBuf,
    master: Master,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Figures already added to the file.
    added: Figures,
    last: Instant,
    /// Our slot in the active-session table while serving.
    slot: Option<usize>,
}

impl SharedCounters {
    /// Open (create, owned by `owner` when given) `{dir}/{service}.counters`.
    pub fn open(dir: &Path, service: &str, owner: Option<(u32, u32)>) -> Result<SharedCounters> {
        let path = dir.join(format!("{service}.counters"));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .at("opening the counters file", &path)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                .at("handing the counters file to the cyrus user", &path)?;
        }
        let c = SharedCounters {
            path,
            master: Master::current(),
            state: Mutex::new(State {
                added: Figures::default(),
                last: Instant::now(),
                slot: None,
            }),
        };
        // validate (and, for a new master, reset) once now, so errors show at start
        c.update(|_, _| Ok(()))?;
        Ok(c)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on the header (and the file) under the exclusive lock, then write the
    /// header back in one `pwrite`. A header of another master, or damaged, is reset
    /// first; one written by a newer version is an error and is left alone.
    fn update(&self, f: impl FnOnce(&mut Head, &File) -> Result<()>) -> Result<()> {
        let held = lock::lock_file(&self.path, LockMode::Exclusive, LOCK_WAIT, false)?;
        let file = held.file();
        let mut b = [0u8; HEAD_LEN];
        let n = read_upto(file, &mut b, 0).at("reading the counters file", &self.path)?;
        let mut head = match parse_head(&b[..n]) {
            Ok(h) if h.master == self.master => h,
            Ok(_) => self.fresh(file, None)?,
            Err(Bad::Fresh(why)) => self.fresh(file, (why != "new").then_some(why))?,
            Err(Bad::Newer(v)) => {
                return Err(Error::Other(format!(
                    "{}: counters layout version {v} is newer than this cyrvaultd's {VERSION}; leaving it alone",
                    self.path.display()
                )));
            }
        };
        f(&mut head, file)?;
        file.write_all_at(&encode_head(&head), 0)
            .at("writing the counters file", &self.path)
            .map_err(Error::from)
    }

    /// A zeroed file for this master (the whole slot table cleared too).
    fn fresh(&self, file: &File, damaged: Option<&str>) -> Result<Head> {
        if let Some(why) = damaged {
            log::warn!(target: "cyrvault::service", "{}: {why}; the service counters start afresh", self.path.display());
        }
        file.write_all_at(&[0u8; FILE_LEN], 0)
            .at("resetting the counters file", &self.path)?;
        Ok(Head {
            master: self.master,
            since_ms: now_ms(),
            figures: Figures::default(),
        })
    }

    /// Add what `now` counted beyond what was already added. Without `force`, only
    /// if a second has passed since the last addition. A lock that cannot be had in
    /// time leaves the figures for the next call.
    pub fn add(&self, now: Figures, force: bool) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if !force && st.last.elapsed() < EVERY {
            return;
        }
        if now == st.added {
            st.last = Instant::now();
            return;
        }
        let added = st.added;
        let r = self.update(|h, _| {
            add_into(h, now, added);
            Ok(())
        });
        st.last = Instant::now();
        match r {
            Ok(()) => st.added = now,
            Err(e) => log::debug!(target: "cyrvault::service", "adding to the counters: {e}"),
        }
    }

    /// A session starts: take a slot in the active-session table and add the
    /// figures (the new session among them) in the same write.
    pub fn session_started(&self, now: Figures) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let me = std::process::id();
        let mut got = None;
        let added = st.added;
        let r = self.update(|h, file| {
            add_into(h, now, added);
            let pids = read_slots(file, &self.path)?;
            let master = h.master.pid;
            let pick = pids
                .iter()
                .position(|&p| p == me)
                .or_else(|| pids.iter().position(|&p| p == 0 || !alive(p, master)));
            if let Some(i) = pick {
                file.write_all_at(&me.to_le_bytes(), (HEAD_LEN + 4 * i) as u64)
                    .at("claiming a counters slot", &self.path)?;
                got = Some(i);
            }
            Ok(())
        });
        match r {
            Ok(()) => {
                st.added = now;
                st.last = Instant::now();
            }
            Err(e) => log::debug!(target: "cyrvault::service", "counters slot: {e}"),
        }
        st.slot = got;
    }

    /// The session ended: free the slot, add the figures.
    pub fn session_ended(&self, now: Figures) {
        let slot = self.state.lock().ok().and_then(|mut st| st.slot.take());
        if let Some(i) = slot {
            let r = lock::lock_file(&self.path, LockMode::Exclusive, LOCK_WAIT, false)
                .map_err(Error::from)
                .and_then(|held| {
                    held.file()
                        .write_all_at(&0u32.to_le_bytes(), (HEAD_LEN + 4 * i) as u64)
                        .at("freeing a counters slot", &self.path)
                        .map_err(Error::from)
                });
            if let Err(e) = r {
                log::debug!(target: "cyrvault::service", "counters slot: {e}");
            }
        }
        self.add(now, true);
    }

    /// The service-wide figures now (under a shared lock).
    pub fn read(&self) -> Result<ServiceTotals> {
        let held = lock::lock_file(&self.path, LockMode::Shared, LOCK_WAIT, false)?;
        let mut b = vec![0u8; FILE_LEN];
        let n = read_upto(held.file(), &mut b, 0).at("reading the counters file", &self.path)?;
        let head = parse_head(&b[..n])
            .map_err(|e| Error::Other(format!("{}: counters file: {e:?}", self.path.display())))?;
        let active = if n == FILE_LEN {
            (0..SLOTS)
                .map(|i| le_u32(&b, HEAD_LEN + 4 * i))
                .filter(|&p| p != 0 && alive(p, head.master.pid))
                .count() as u64
        } else {
            0
        };
        Ok(ServiceTotals {
            since_ms: head.since_ms,
            figures: head.figures,
            active,
        })
    }
}

/// What one service process counts for the service-wide figures, and what it knows
/// about the Cyrus it serves; shared by its sessions (part of `ServiceStats`).
/// Without [`Tally::attach`] (tests, `-X`) it counts but `STATUS` has no
/// service-wide lines.
#[derive(Debug, Default)]
pub struct Tally {
    sessions: AtomicU64,
    requests: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    refused: AtomicU64,
    max_hold_us: AtomicU64,
    shared: OnceLock<(SharedCounters, Arc<LockStats>)>,
    info: OnceLock<Vec<(String, String)>>,
}

impl Tally {
    /// Add this process's figures to `counters`, with lock figures from `locks`.
    pub fn attach(&self, counters: SharedCounters, locks: Arc<LockStats>) {
        let _ = self.shared.set((counters, locks));
    }

    /// What `STATUS` says about Cyrus (`cyrus_version`, conventions): `(key, token)`.
    pub fn set_info(&self, info: Vec<(String, String)>) {
        let _ = self.info.set(info);
    }

    fn figures(&self, locks: &LockStats) -> Figures {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Figures::of(
            [
                get(&self.sessions),
                get(&self.requests),
                get(&self.bytes),
                get(&self.errors),
                get(&self.refused),
                get(&self.max_hold_us),
            ],
            &locks.snapshot(),
        )
    }

    /// A session starts.
    pub fn session_started(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        if let Some((c, locks)) = self.shared.get() {
            c.session_started(self.figures(locks));
        }
    }

    /// A session ended (its figures are added now).
    pub fn session_ended(&self) {
        if let Some((c, locks)) = self.shared.get() {
            c.session_ended(self.figures(locks));
        }
    }

    /// A request was answered with `bytes` reply bytes (added at most once a second).
    pub fn request(&self, bytes: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some((c, locks)) = self.shared.get() {
            c.add(self.figures(locks), false);
        }
    }

    /// A request failed on our side (`NO internal error`), or a session ended in an
    /// error.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A folder's namespace+index locks were held `us` microseconds (what `STATUS`
    /// calls a lock hold: how long writers of that mailbox were kept waiting).
    pub fn lock_hold(&self, us: u64) {
        self.max_hold_us.fetch_max(us, Ordering::Relaxed);
    }

    /// A request or connection was refused (bad syntax, a bound, no authentication,
    /// not in the allowlist).
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// The service-wide `STATUS` lines (after adding this process's figures), then
    /// the Cyrus lines; numbers as decimal text.
    pub fn status_lines(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some((c, locks)) = self.shared.get() {
            c.add(self.figures(locks), true);
            match c.read() {
                Ok(t) => {
                    out.push(("service_since".into(), (t.since_ms / 1000).to_string()));
                    out.push(("service_sessions_active".into(), t.active.to_string()));
                    for (name, v) in NAMES.iter().zip(t.figures.0) {
                        out.push((format!("service_{name}"), v.to_string()));
                    }
                }
                Err(e) => log::warn!(target: "cyrvault::service", "reading the counters: {e}"),
            }
        }
        out.extend(self.info.get().cloned().unwrap_or_default());
        out
    }
}

/// Add `now - added` into the header's counters (the maximum for the one that keeps
/// a maximum).
fn add_into(h: &mut Head, now: Figures, added: Figures) {
    for (i, (cur, old)) in now.0.iter().zip(added.0.iter()).enumerate() {
        let slot = &mut h.figures.0[i];
        if i == MAX_INDEX {
            *slot = (*slot).max(*cur);
        } else {
            *slot = slot.saturating_add(cur.saturating_sub(*old));
        }
    }
}

/// Whether `pid` is a live child of `master` (a slot of a killed child, or of a pid
/// reused by something else, does not count).
fn alive(pid: u32, master: u32) -> bool {
    proc_stat(pid).is_some_and(|s| s.ppid == master)
}

fn read_slots(file: &File, path: &Path) -> Result<Vec<u32>> {
    let mut b = vec![0u8; FILE_LEN - HEAD_LEN];
    let n = read_upto(file, &mut b, HEAD_LEN as u64).at("reading the counters slots", path)?;
    Ok((0..n / 4).map(|i| le_u32(&b, 4 * i)).collect())
}

/// `read_at` until `buf` is full or the file ends; the bytes read.
fn read_upto(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "cyrvault-counters-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn figs(n: u64) -> Figures {
        let mut f = Figures([n; NAMES.len()]);
        f.0[MAX_INDEX] = n * 10;
        f
    }

    #[test]
    fn two_processes_add_up_and_max_is_kept() {
        let d = dir();
        let a = SharedCounters::open(&d, "svc", None).unwrap();
        let b = SharedCounters::open(&d, "svc", None).unwrap();
        a.add(figs(3), true);
        b.add(figs(2), true);
        a.add(figs(5), true); // a's total went from 3 to 5: adds 2
        let t = a.read().unwrap();
        assert_eq!(t.figures.0[0], 7);
        assert_eq!(t.figures.0[MAX_INDEX], 50);
        // not forced within a second: nothing written yet
        b.add(figs(4), false);
        assert_eq!(b.read().unwrap().figures.0[0], 7);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn slots_count_live_sessions_only() {
        let d = dir();
        // the test process plays master's child: its parent is "master"
        let c = SharedCounters::open(&d, "svc", None).unwrap();
        c.session_started(Figures::default());
        assert_eq!(c.read().unwrap().active, 1);
        // a slot of a dead pid (or of no child of ours) does not count
        let f = OpenOptions::new()
            .write(true)
            .open(d.join("svc.counters"))
            .unwrap();
        f.write_all_at(&1u32.to_le_bytes(), (HEAD_LEN + 4 * 100) as u64)
            .unwrap();
        assert_eq!(c.read().unwrap().active, 1);
        c.session_ended(figs(1));
        let t = c.read().unwrap();
        assert_eq!((t.active, t.figures.0[0]), (0, 1));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damage_resets_another_master_resets_newer_is_left_alone() {
        let d = dir();
        let c = SharedCounters::open(&d, "svc", None).unwrap();
        c.add(figs(3), true);
        let p = d.join("svc.counters");
        let mut bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len(), FILE_LEN);
        // a flipped counter byte: the CRC catches it and the counters restart
        bytes[COUNTERS_AT] ^= 0x40;
        std::fs::write(&p, &bytes).unwrap();
        let c = SharedCounters::open(&d, "svc", None).unwrap();
        assert_eq!(c.read().unwrap().figures, Figures::default());
        // another master (pid differs): reset on the next update
        c.add(figs(2), true);
        let mut other = parse_head(&std::fs::read(&p).unwrap()).unwrap();
        other.master.pid ^= 1;
        std::fs::write(&p, encode_head(&other)).unwrap();
        let c = SharedCounters::open(&d, "svc", None).unwrap();
        assert_eq!(c.read().unwrap().figures, Figures::default());
        // a newer layout: refused, not rewritten
        let mut b = std::fs::read(&p).unwrap();
        b[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
        std::fs::write(&p, &b).unwrap();
        let e = SharedCounters::open(&d, "svc", None).unwrap_err();
        assert!(e.to_string().contains("newer"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn header_round_trip_and_proc_stat() {
        let h = Head {
            master: Master::current(),
            since_ms: 123,
            figures: figs(9),
        };
        let b = encode_head(&h);
        let back = parse_head(&b).unwrap();
        assert_eq!(
            (back.master, back.since_ms, back.figures),
            (h.master, 123, figs(9))
        );
        assert_eq!(parse_head(&b[..100]).err(), Some(Bad::Fresh("new")));
        let me = proc_stat(std::process::id()).unwrap();
        assert_eq!(me.ppid, nix::unistd::getppid().as_raw() as u32);
        assert!(me.start_ticks > 0);
    }
}
