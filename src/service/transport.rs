//! The client connection as the session sees it: the socket's two descriptors with
//! time limits, possibly switched to TLS.
//!
//! [`Timed`] waits for the socket with `poll` before every read and write, for at
//! most the inactivity timeout (`cyrvaultd_timeout`, default 600 s, as upstream's
//! `prot_settimeout(bcd_in, 600)`) and never past the session's deadline (the time
//! left to authenticate, `cyrvaultd_auth_timeout`). Either ends the session with a
//! `TimedOut` error: an idle or silent client cannot keep a service process (one of
//! master's `maxchild`) for longer than that.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Default `cyrvaultd_timeout`: seconds without a byte from (or to) the client.
pub const DEFAULT_TIMEOUT: u64 = 600;
/// Default `cyrvaultd_auth_timeout`: seconds a connection has to authenticate.
pub const DEFAULT_AUTH_TIMEOUT: u64 = 30;

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

    /// Time left; None without a deadline.
    fn left(&self) -> Option<Duration> {
        match self.at_ms.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_millis(at).saturating_sub(self.origin.elapsed())),
        }
    }
}

/// The socket's reading and writing descriptors with the time limits.
pub struct Timed<R, W> {
    input: R,
    output: W,
    idle: Option<Duration>,
    deadline: Deadline,
}

impl<R: Read + AsFd, W: Write + AsFd> Timed<R, W> {
    /// `idle`: the inactivity timeout (None: wait for ever).
    pub fn new(input: R, output: W, idle: Option<Duration>, deadline: Deadline) -> Self {
        Timed {
            input,
            output,
            idle,
            deadline,
        }
    }
}

/// Wait until `fd` is ready for `flags`, within the idle timeout and the deadline.
fn wait(
    fd: std::os::fd::BorrowedFd<'_>,
    flags: PollFlags,
    idle: Option<Duration>,
    deadline: &Deadline,
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
        // wait in slices of at most a minute (poll's timeout is bounded)
        let ms: u16 = match limit {
            None => 60_000,
            Some(l) => u16::try_from(l.as_millis().clamp(1, 60_000)).unwrap_or(60_000),
        };
        let mut fds = [PollFd::new(fd, flags)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

impl<R: Read + AsFd, W: Write + AsFd> Read for Timed<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        wait(
            self.input.as_fd(),
            PollFlags::POLLIN,
            self.idle,
            &self.deadline,
        )?;
        self.input.read(buf)
    }
}

impl<R: Read + AsFd, W: Write + AsFd> Write for Timed<R, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        wait(
            self.output.as_fd(),
            PollFlags::POLLOUT,
            self.idle,
            &self.deadline,
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
}
