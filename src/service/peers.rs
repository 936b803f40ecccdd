//! What the service's processes know together about each peer address: how many of
//! its connections are not authenticated yet (at most `cyrvaultd_peer_limit`), and
//! whether it failed an `AUTH` in the last [`FAIL_DELAY`] (then its next tries are
//! refused at once). Cyrus's master runs one process per connection, so this lives
//! in a file every child opens: `{configdirectory}/socket/<service>-peers`.
//!
//! Layout: [`BUCKETS`] little-endian `u64`s, "refuse AUTH until" in Unix
//! milliseconds, one per bucket (a hash of the address; an IPv6 address by its /64,
//! which is what one host usually holds). Behind them, [`MAX_LIMIT`] bytes per
//! bucket that are never written: a connection holds one of its bucket's first
//! `limit` bytes with an open-file-description lock (`F_OFD_SETLK`) while it is not
//! authenticated. The kernel drops the lock when the connection's descriptor closes
//! or its process dies, so a killed child leaves nothing behind, and nothing waits:
//! a full bucket is a refusal, not a queue. Two addresses in one bucket share its
//! budget; with 65536 buckets that takes many addresses on purpose.
//!
//! A failed AUTH therefore costs the guesser [`FAIL_DELAY`] without holding a child
//! process for it (the session ends at once, and the child takes the next client).
#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{FcntlArg, fcntl};

/// Buckets addresses are hashed into.
pub const BUCKETS: u64 = 65536;
/// The largest per-peer limit (bytes reserved per bucket for slot locks).
pub const MAX_LIMIT: u32 = 64;
/// Default most unauthenticated connections from one address at once.
pub const DEFAULT_LIMIT: u32 = 2;
/// After a failed AUTH, how long the peer's next AUTH attempts are refused.
pub const FAIL_DELAY: Duration = Duration::from_secs(2);

const SLOTS_AT: u64 = BUCKETS * 8;

/// The shared table of one service.
#[derive(Debug)]
pub struct PeerTable {
    path: PathBuf,
    file: File,
    limit: u32,
}

/// One held unauthenticated slot; dropping it (on AUTH success or at the end of the
/// session) frees it.
#[derive(Debug)]
pub struct PeerSlot {
    _file: File,
}

fn bucket(ip: IpAddr) -> u64 {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    // SipHash with fixed keys: every process of this binary agrees on the bucket
    let mut h = std::hash::DefaultHasher::new();
    match ip {
        IpAddr::V4(a) => a.octets().hash(&mut h),
        IpAddr::V6(a) => a.octets()[..8].hash(&mut h),
    }
    h.finish() % BUCKETS
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl PeerTable {
    /// Open (creating, mode 0600) the table of `service` under `config_dir`, allowing
    /// `limit` unauthenticated connections per address (clamped to 1..=64).
    pub fn open(config_dir: &Path, service: &str, limit: u32) -> io::Result<PeerTable> {
        let dir = config_dir.join("socket");
        let path = dir.join(format!("{service}-peers"));
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
        };
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&dir)?;
                open()
            }
            other => other,
        }?;
        Ok(PeerTable {
            path,
            file,
            limit: limit.clamp(1, MAX_LIMIT),
        })
    }

    /// The table's file (for log lines).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The per-address limit in force.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Take one of `ip`'s unauthenticated slots; `Ok(None)` when all are held.
    pub fn enter(&self, ip: IpAddr) -> io::Result<Option<PeerSlot>> {
        // a description of our own: OFD locks belong to it, so slots held by other
        // sessions of this process conflict with ours as other processes' do
        let file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        let base = SLOTS_AT + bucket(ip) * u64::from(MAX_LIMIT);
        for k in 0..u64::from(self.limit) {
            let lock = libc::flock {
                l_type: libc::F_WRLCK as libc::c_short,
                l_whence: libc::SEEK_SET as libc::c_short,
                l_start: libc::off_t::try_from(base + k).unwrap_or(libc::off_t::MAX),
                l_len: 1,
                l_pid: 0,
            };
            match fcntl(file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&lock)) {
                Ok(_) => return Ok(Some(PeerSlot { _file: file })),
                Err(nix::Error::EAGAIN) | Err(nix::Error::EACCES) => continue,
                Err(e) => return Err(io::Error::from(e)),
            }
        }
        Ok(None)
    }

    /// How long `ip`'s AUTH attempts are still refused after its last failure.
    pub fn penalty(&self, ip: IpAddr) -> Option<Duration> {
        let mut b = [0u8; 8];
        self.file.read_exact_at(&mut b, bucket(ip) * 8).ok()?;
        let until = u64::from_le_bytes(b);
        let now = now_ms();
        // never more than one FAIL_DELAY, whatever the file says
        let left = until.saturating_sub(now).min(FAIL_DELAY.as_millis() as u64);
        (left > 0).then(|| Duration::from_millis(left))
    }

    /// Record a failed AUTH from `ip`.
    pub fn punish(&self, ip: IpAddr) -> io::Result<()> {
        let until = now_ms().saturating_add(FAIL_DELAY.as_millis() as u64);
        self.file.write_all_at(&until.to_le_bytes(), bucket(ip) * 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(limit: u32) -> (PeerTable, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "cyrvault-peers-{}-{limit}-{}",
            std::process::id(),
            now_ms()
        ));
        (PeerTable::open(&dir, "cyrvaultd", limit).unwrap(), dir)
    }

    #[test]
    fn slots_per_address_and_release_on_drop() {
        let (t, dir) = table(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = t.enter(a).unwrap().expect("first slot");
        let s2 = t.enter(a).unwrap().expect("second slot");
        assert!(t.enter(a).unwrap().is_none(), "a third is refused");
        // the v4-mapped v6 spelling is the same peer
        assert!(
            t.enter("::ffff:192.0.2.1".parse().unwrap())
                .unwrap()
                .is_none()
        );
        if bucket(a) != bucket(b) {
            assert!(t.enter(b).unwrap().is_some(), "another address has its own");
        }
        drop(s1);
        let s3 = t.enter(a).unwrap().expect("a freed slot is taken again");
        drop((s2, s3));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failure_refuses_the_address_for_the_delay() {
        let (t, dir) = table(1);
        let a: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        assert_eq!(t.penalty(a), None);
        t.punish(a).unwrap();
        let left = t.penalty(a).expect("penalised");
        assert!(left <= FAIL_DELAY && left > FAIL_DELAY / 2, "{left:?}");
        // same /64, same host
        assert!(t.penalty("2001:db8:1:2::9".parse().unwrap()).is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
