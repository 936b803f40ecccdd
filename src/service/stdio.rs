//! The process side of a session, shared by `cyrvaultd` (`service::master`) and the C
//! ABI (`ffi`): the client connection on fds 0/1 as borrowed `Read`/`Write` (never
//! closed by a Rust `Drop`), the fds master gives a service child (3 and 4) as owned
//! fds, one session served on fds 0/1, and the end-of-session reset of fds 0/1 to
//! /dev/null (so the client sees EOF, as Cyrus's `cyrus_reset_stdio` does).

use std::ffi::c_int;
use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{FcntlArg, fcntl};

use crate::error::EX_SOFTWARE;
use crate::service::{self, ServiceContext};

/// Whether `fd` is an open descriptor in this process.
fn is_open(fd: RawFd) -> bool {
    fcntl(fd, FcntlArg::F_GETFD).is_ok()
}

/// One of fds 0/1, borrowed: reads and writes go straight to the descriptor (no
/// buffering that could carry bytes from one client to the next), and dropping it
/// never closes the descriptor.
pub struct BorrowedStdio {
    file: ManuallyDrop<File>,
}

impl BorrowedStdio {
    fn borrow(fd: RawFd) -> io::Result<Self> {
        if !is_open(fd) {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("file descriptor {fd} is not open"),
            ));
        }
        // SAFETY: fd is open (checked above) and stays open for the process's lifetime
        // as far as this value is concerned: ManuallyDrop means we never close it.
        let file = unsafe { File::from_raw_fd(fd) };
        Ok(Self {
            file: ManuallyDrop::new(file),
        })
    }

    /// The client's side we read from (fd 0).
    pub fn stdin() -> io::Result<Self> {
        Self::borrow(0)
    }

    /// The client's side we write to (fd 1).
    pub fn stdout() -> io::Result<Self> {
        Self::borrow(1)
    }
}

impl std::os::fd::AsFd for BorrowedStdio {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Read for BorrowedStdio {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Write for BorrowedStdio {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The peer address of the socket on fd 0, if it is an IP socket.
pub fn stdin_peer() -> Option<SocketAddr> {
    if !is_open(0) {
        return None;
    }
    // SAFETY: fd 0 is open (checked above); ManuallyDrop keeps it open afterwards.
    // peer_addr only calls getpeername, which fails cleanly on a non-IP socket.
    let stream = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(0) });
    stream.peer_addr().ok()
}

/// Master's listening socket (fd 4) when this process runs under Cyrus's own
/// `service.c`, which keeps it open for the whole process: a stream socket in the
/// listening state.
pub fn listener() -> Option<std::os::fd::BorrowedFd<'static>> {
    use nix::sys::socket::{getsockopt, sockopt};
    const LISTEN_FD: RawFd = 4;
    if !is_open(LISTEN_FD) {
        return None;
    }
    // SAFETY: fd 4 is open (checked above) and master's listening socket stays open
    // for the life of a service process; we never close it.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(LISTEN_FD) };
    matches!(getsockopt(&fd, sockopt::AcceptConn), Ok(true)).then_some(fd)
}

/// Point fds 0 and 1 at /dev/null, which closes this process's hold on the client
/// connection (the client sees EOF) without leaving 0/1 free for the next `open`.
pub fn reset_stdio() -> io::Result<()> {
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    use std::os::fd::AsRawFd;
    for fd in [0, 1] {
        nix::unistd::dup2(devnull.as_raw_fd(), fd).map_err(io::Error::from)?;
    }
    Ok(())
}

/// Which low fds have been taken by [`take_inherited_fd`] (bit n = fd n).
static TAKEN: AtomicU64 = AtomicU64::new(0);

/// Take ownership of a descriptor this process inherited (master's status pipe 3 and
/// listen socket 4). Each fd (0..64) can be taken once; a second call, or a closed fd,
/// is an error.
pub fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    let bit = u32::try_from(fd)
        .ok()
        .filter(|n| *n < 64)
        .map(|n| 1u64 << n)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "fd out of range"))?;
    if TAKEN.fetch_or(bit, Ordering::SeqCst) & bit != 0 {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("file descriptor {fd} was already taken"),
        ));
    }
    if !is_open(fd) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("file descriptor {fd} is not open (not started by master?)"),
        ));
    }
    // SAFETY: fd is open (checked above), and the TAKEN bitmap guarantees no other
    // OwnedFd was made from it by this module; nothing else in the crate claims fds 3/4.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The service name: `$CYRUS_SERVICE` (set by master) or "cyrvaultd".
pub fn service_name_from_env() -> String {
    std::env::var("CYRUS_SERVICE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cyrvaultd".to_string())
}

/// Serve one client on fds 0/1 with `ctx` (used by `cyrvaultd`, which keeps its own
/// context), then reset fds 0/1 to /dev/null so the client sees the end. `listener`:
/// the service's listening socket (master's fd 4), if there is one.
pub fn serve_stdio_with(ctx: &ServiceContext, listener: Option<BorrowedFd<'_>>) -> c_int {
    let peer = stdin_peer();
    let code = match (BorrowedStdio::stdin(), BorrowedStdio::stdout()) {
        (Ok(input), Ok(output)) => match service::serve(ctx, input, output, peer, listener) {
            Ok(summary) => {
                log::info!(
                    "session done: peer={} user={} folders={} bytes_out={} {}",
                    peer.map(|p| p.to_string())
                        .unwrap_or_else(|| "[local]".into()),
                    summary.user.as_deref().unwrap_or("-"),
                    summary.folders,
                    summary.bytes_out,
                    summary.outcome()
                );
                0
            }
            Err(err) => {
                log::error!("session failed: {err}");
                err.exit_code()
            }
        },
        (Err(err), _) | (_, Err(err)) => {
            log::error!("service_main: client descriptors: {err}");
            EX_SOFTWARE
        }
    };
    if let Err(err) = reset_stdio() {
        log::error!("service_main: resetting fds 0/1 to /dev/null: {err}");
    }
    code
}

/// Release what the process holds and exit with `code`. Locks are fcntl locks on fds
/// that the exit closes; the log is flushed first.
pub fn abort_process(code: i32) -> ! {
    log::logger().flush();
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taking_an_fd_twice_fails() {
        use std::os::fd::IntoRawFd;
        assert!(take_inherited_fd(64).is_err());
        assert!(take_inherited_fd(-1).is_err());
        // A descriptor we own and hand over (the test process has few open fds).
        let raw = File::open("/dev/null").unwrap().into_raw_fd();
        assert!(raw < 64, "fd {raw}");
        let first = take_inherited_fd(raw).expect("first take");
        assert!(take_inherited_fd(raw).is_err(), "second take");
        drop(first);
    }
}
