//! What the C side hands us, made safe: `argc`/`argv` to `Vec<OsString>`, the client
//! connection on fds 0/1 as borrowed `Read`/`Write` (never closed by a Rust `Drop`), the
//! fds master gives a service child (3 and 4) as owned fds, and the end-of-session
//! reset of fds 0/1 to /dev/null (so the client sees EOF, as Cyrus's
//! `cyrus_reset_stdio` does).

use std::ffi::{CStr, OsStr, OsString, c_char, c_int};
use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{FcntlArg, fcntl};

/// Copy a C `argv` (argc entries, NULL pointers skipped) into owned strings.
///
/// # Safety
/// `argv` is NULL or points to at least `argc` pointers, each NULL or a valid
/// NUL-terminated string, all valid for the duration of the call.
pub(crate) unsafe fn argv_to_vec(argc: c_int, argv: *const *const c_char) -> Vec<OsString> {
    let Ok(count) = usize::try_from(argc) else {
        return Vec::new();
    };
    if argv.is_null() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: the caller guarantees argv has at least argc entries.
        let ptr = unsafe { *argv.add(i) };
        if ptr.is_null() {
            break;
        }
        // SAFETY: the caller guarantees each non-NULL entry is a valid C string.
        let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
        out.push(OsStr::from_bytes(bytes).to_os_string());
    }
    out
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    #[test]
    fn argv_is_copied_and_stops_at_null() {
        let a = CString::new("cyrvaultd").unwrap();
        let b = CString::new("-U").unwrap();
        let argv = [a.as_ptr(), b.as_ptr(), std::ptr::null()];
        // SAFETY: argv has 3 valid entries (the last NULL).
        let v = unsafe { argv_to_vec(3, argv.as_ptr()) };
        assert_eq!(v, vec![OsString::from("cyrvaultd"), OsString::from("-U")]);
        // SAFETY: a NULL argv is allowed.
        assert!(unsafe { argv_to_vec(2, std::ptr::null()) }.is_empty());
        // SAFETY: a negative argc reads nothing.
        assert!(unsafe { argv_to_vec(-1, argv.as_ptr()) }.is_empty());
    }

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
