//! The client connection as the session sees it: the socket's two descriptors with
//! time limits, possibly switched to TLS.
//!
//! [`Timed`] waits for the socket with `poll` before every read and write, for at
//! most the inactivity timeout (`cyrvaultd_timeout`, default 600 s, as upstream's
//! `prot_settimeout(bcd_in, 600)`) and never past the session's deadline (the time
//! left to authenticate, `cyrvaultd_auth_timeout`). Either ends the session with a
//! `TimedOut` error: an idle or silent client cannot keep a service process (one of
//! master's `maxchild`) for longer than that.
//!
//! And while a client has not authenticated, the wait also watches the service's
//! listening socket (master's fd 4): when other clients are waiting for a process
//! (a connection is pending there) and this one has had [`PREEMPT_GRACE`] to
//! authenticate, it gives its process up. Silent clients from many addresses (which
//! the per-address limit cannot count) then cost a waiting backup seconds, not
//! `cyrvaultd_auth_timeout` each.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Default `cyrvaultd_timeout`: seconds without a byte from (or to) the client.
pub const DEFAULT_TIMEOUT: u64 = 600;
/// Default `cyrvaultd_auth_timeout`: seconds a connection has to authenticate.
pub const DEFAULT_AUTH_TIMEOUT: u64 = 30;
/// Time an unauthenticated connection keeps its process while others wait for one.
pub const PREEMPT_GRACE: Duration = Duration::from_secs(2);

/// A deadline shared between the session (which lifts it after AUTH) and the
/// connection (which enforces it). Milliseconds after `origin`; 0 means none.
#[derive(Debug, Clone)]
pub struct Deadline {
    origin: Instant,
    at_ms: Arc<AtomicU64>,
}

impl Default for Deadline {
    fn default() -> Self {
        Deadline {
            origin: Instant::now(),
            at_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Deadline {
    /// End the session `after` from now (unless lifted first).
    pub fn set_in(&self, after: Duration) {
        let ms = self
            .origin
            .elapsed()
            .saturating_add(after)
            .as_millis()
            .max(1);
        self.at_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// No deadline any more.
    pub fn lift(&self) {
        self.at_ms.store(0, Ordering::Relaxed);
    }

    /// Whether a deadline is set (the client has not authenticated).
    fn active(&self) -> bool {
        self.at_ms.load(Ordering::Relaxed) != 0
    }

    /// Time left; None without a deadline.
    fn left(&self) -> Option<Duration> {
        match self.at_ms.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_millis(at).saturating_sub(self.origin.elapsed())),
        }
    }
}

/// The socket's reading and writing descriptors with the time limits.
pub struct Timed<'l, R, W> {
    input: R,
    output: W,
    idle: Option<Duration>,
    deadline: Deadline,
    /// The service's listening socket, to see whether other clients wait.
    waiters: Option<BorrowedFd<'l>>,
    since: Instant,
}

impl<'l, R: Read + AsFd, W: Write + AsFd> Timed<'l, R, W> {
    /// `idle`: the inactivity timeout (None: wait for ever).
    pub fn new(input: R, output: W, idle: Option<Duration>, deadline: Deadline) -> Self {
        Timed {
            input,
            output,
            idle,
            deadline,
            waiters: None,
            since: Instant::now(),
        }
    }

    /// Give the process up to a waiting client (see the module documentation) when
    /// `listener` has a pending connection.
    pub fn yield_to(mut self, listener: Option<BorrowedFd<'l>>) -> Self {
        self.waiters = listener;
        self
    }
}

/// While unauthenticated past the grace: whether another client waits for a process.
fn others_wait<'l>(
    waiters: Option<BorrowedFd<'l>>,
    deadline: &Deadline,
    since: Instant,
) -> Option<BorrowedFd<'l>> {
    waiters.filter(|_| deadline.active() && since.elapsed() >= PREEMPT_GRACE)
}

/// Wait until `fd` is ready for `flags`, within the idle timeout and the deadline.
fn wait(
    fd: BorrowedFd<'_>,
    flags: PollFlags,
    idle: Option<Duration>,
    deadline: &Deadline,
    waiters: Option<BorrowedFd<'_>>,
    since: Instant,
) -> io::Result<()> {
    let start = Instant::now();
    loop {
        let by_deadline = deadline.left();
        let by_idle = idle.map(|i| i.saturating_sub(start.elapsed()));
        let limit = match (by_idle, by_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if limit == Some(Duration::ZERO) {
            let what = if by_deadline == Some(Duration::ZERO) {
                "the client did not authenticate in time (cyrvaultd_auth_timeout)"
            } else {
                "no activity from the client (cyrvaultd_timeout)"
            };
            return Err(io::Error::new(io::ErrorKind::TimedOut, what));
        }
        // before the grace is over, wake up when it is (then watch the listener too)
        let watch = others_wait(waiters, deadline, since);
        let limit = match (waiters, watch) {
            (Some(_), None) if deadline.active() => {
                let g = PREEMPT_GRACE.saturating_sub(since.elapsed());
                Some(limit.map_or(g, |l| l.min(g)))
            }
            _ => limit,
        };
        // wait in slices of at most a minute (poll's timeout is bounded)
        let ms: u16 = match limit {
            None => 60_000,
            Some(l) => u16::try_from(l.as_millis().clamp(1, 60_000)).unwrap_or(60_000),
        };
        let mut fds = vec![PollFd::new(fd, flags)];
        if let Some(l) = watch {
            fds.push(PollFd::new(l, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {
                let ready = |p: &PollFd<'_>| p.revents().is_some_and(|r| !r.is_empty());
                if fds.first().is_some_and(ready) {
                    return Ok(());
                }
                if fds.get(1).is_some_and(ready) {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client did not authenticate within 2 s while other clients wait for a process",
                    ));
                }
            }
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

impl<R: Read + AsFd, W: Write + AsFd> Read for Timed<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        wait(
            self.input.as_fd(),
            PollFlags::POLLIN,
            self.idle,
            &self.deadline,
            self.waiters,
            self.since,
        )?;
        self.input.read(buf)
    }
}

impl<R: Read + AsFd, W: Write + AsFd> Write for Timed<'_, R, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        wait(
            self.output.as_fd(),
            PollFlags::POLLOUT,
            self.idle,
            &self.deadline,
            None,
            self.since,
        )?;
        self.output.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.output.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn idle_timeout_and_deadline_end_reads() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut t = Timed::new(
            a.try_clone().unwrap(),
            a,
            Some(Duration::from_millis(100)),
            Deadline::default(),
        );
        let start = Instant::now();
        let e = t.read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("cyrvaultd_timeout"), "{e}");
        assert!(start.elapsed() >= Duration::from_millis(100));

        let (a, mut b) = UnixStream::pair().unwrap();
        let d = Deadline::default();
        let mut t = Timed::new(a.try_clone().unwrap(), a, None, d.clone());
        b.write_all(b"x").unwrap();
        d.set_in(Duration::from_millis(150));
        let mut buf = [0u8; 4];
        assert_eq!(
            t.read(&mut buf).unwrap(),
            1,
            "data before the deadline is read"
        );
        let e = t.read(&mut buf).unwrap_err();
        assert!(e.to_string().contains("cyrvaultd_auth_timeout"), "{e}");
        d.lift();
        b.write_all(b"y").unwrap();
        assert_eq!(
            t.read(&mut buf).unwrap(),
            1,
            "a lifted deadline no longer applies"
        );
    }

    #[test]
    fn an_unauthenticated_client_yields_to_a_waiting_one_after_the_grace() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let d = Deadline::default();
        d.set_in(Duration::from_secs(30));
        let mut t =
            Timed::new(a.try_clone().unwrap(), a, None, d.clone()).yield_to(Some(listener.as_fd()));
        // nobody waits: data is read as usual
        b.write_all(b"x").unwrap();
        assert_eq!(t.read(&mut [0u8; 4]).unwrap(), 1);
        // someone waits: the client keeps the process until its grace is over
        let _waiting = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let e = t.read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("other clients wait"), "{e}");
        assert!(t.since.elapsed() >= PREEMPT_GRACE);
        // an authenticated client (no deadline) is never preempted
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut t = Timed::new(
            a.try_clone().unwrap(),
            a,
            Some(Duration::from_millis(300)),
            Deadline::default(),
        )
        .yield_to(Some(listener.as_fd()));
        t.since -= PREEMPT_GRACE;
        let e = t.read(&mut [0u8; 4]).unwrap_err();
        assert!(e.to_string().contains("cyrvaultd_timeout"), "{e}");
        b.write_all(b"y").unwrap();
    }
}
