//! The child side of Cyrus master's service protocol, in Rust: what `master/service.c`
//! does for a C service, for the `cyrvaultd` binary.
//!
//! master forks us with the status pipe on fd 3 and the listening socket on fd 4 and
//! `CYRUS_SERVICE`/`CYRUS_ID` in the environment. We take the runtime options
//! `-C -U -T -D -X`, initialise once, then loop: (after the first client, arm the
//! reuse-timeout alarm) take the accept lock `{configdirectory}/socket/<service>-<id>.lock`,
//! wait for and accept a connection, release the lock, tell master UNAVAILABLE, put the
//! connection on fds 0/1, tell master CONNECTION, serve, and either tell master
//! AVAILABLE or exit (after `-U` uses, on SIGHUP, on the idle timeout). Shutdown
//! signals end the process with 0 (idle) or 75 (mid-session). We never exit non-zero
//! while idle in READY except on a fatal accept error, as Cyrus does.
//!
//! Facts from cyrus-reference §10 and Cyrus's master/service.c and master/service.h.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};

use crate::error::{EX_OSERR, EX_SOFTWARE, EX_TEMPFAIL, EX_USAGE};
use crate::io_error::IoContext;
use crate::service::{signals, stdio};
use crate::{Error, Result};

/// master's status pipe (`STATUS_FD` in master/service.h).
pub const STATUS_FD: RawFd = 3;
/// master's listening socket (`LISTEN_FD` in master/service.h).
pub const LISTEN_FD: RawFd = 4;
/// Default `-U`: connections served before the process exits (`MAX_USE`).
pub const MAX_USE: u32 = 250;
/// Default `-T`: seconds an idle, used process waits for another client (`REUSE_TIMEOUT`).
pub const REUSE_TIMEOUT: u32 = 60;

/// The status codes a service child sends master (`enum` in master/service.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Notify {
    /// Idle and ready to accept (BUSY -> READY).
    Available = 1,
    /// Busy: not accepting (READY -> BUSY).
    Unavailable = 2,
    /// Now serving a connection.
    Connection = 3,
}

impl Notify {
    /// The 8-byte message master reads: C `int` code then `pid_t`, host byte order.
    pub fn encode(self, pid: i32) -> [u8; 8] {
        let mut msg = [0u8; 8];
        let (code, rest) = msg.split_at_mut(4);
        code.copy_from_slice(&(self as i32).to_ne_bytes());
        rest.copy_from_slice(&pid.to_ne_bytes());
        msg
    }
}

/// The runtime options master's service skeleton owns; everything else is passed
/// through to the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// `-C <file>`: imapd.conf to use instead of /etc/imapd.conf.
    pub config: Option<PathBuf>,
    /// `-U <uses>`: connections before exiting (negative becomes 0; 0 means one).
    pub max_use: u32,
    /// `-T <seconds>`: base idle timeout once a connection has been served.
    pub reuse_timeout: u32,
    /// `-D`: Cyrus runs its `debug_command` hook; we only log that we do not.
    pub debugger: bool,
    /// `-X`: serve one session on stdin/stdout without master.
    pub standalone: bool,
    /// Every other argument, in order.
    pub passthrough: Vec<OsString>,
}

impl RuntimeOptions {
    /// Parse the arguments after argv[0]. Options and their values must be separate
    /// words (`-C /etc/imapd.conf`), as with Cyrus's service.c.
    pub fn parse(args: &[OsString]) -> Result<Self> {
        let mut options = RuntimeOptions {
            config: None,
            max_use: MAX_USE,
            reuse_timeout: REUSE_TIMEOUT,
            debugger: false,
            standalone: false,
            passthrough: Vec::new(),
        };
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let text = arg.to_str().unwrap_or("");
            match text {
                "-C" | "-U" | "-T" => {
                    let value = iter
                        .next()
                        .ok_or_else(|| usage(&format!("{text} needs a value")))?;
                    match text {
                        "-C" => options.config = Some(PathBuf::from(value)),
                        "-U" => options.max_use = parse_count(text, value)?,
                        _ => options.reuse_timeout = parse_count(text, value)?,
                    }
                }
                "-D" => options.debugger = true,
                "-X" => options.standalone = true,
                t if t.len() > 2
                    && (t.starts_with("-C") || t.starts_with("-U") || t.starts_with("-T")) =>
                {
                    return Err(usage(&format!(
                        "{t}: put a space between the option and its value"
                    )));
                }
                _ => options.passthrough.push(arg.clone()),
            }
        }
        Ok(options)
    }
}

fn usage(message: &str) -> Error {
    Error::Refused(format!(
        "usage: cyrvaultd [-C imapd.conf] [-U uses] [-T timeout] [-D] [-X]: {message}"
    ))
}

/// A decimal count; negative values become 0 (as Cyrus does for `-U`).
fn parse_count(option: &str, value: &OsString) -> Result<u32> {
    let text = value.to_str().unwrap_or("");
    let n: i64 = text
        .parse()
        .map_err(|_| usage(&format!("{option} {text:?} is not a number")))?;
    Ok(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

/// The value of `key` in the imapd.conf at `config` (default /etc/imapd.conf).
/// Lines are `key: value`; `#` lines are comments; keys compare case-insensitively.
///
/// TODO(lead): replace with `crate::cyrus::config` (service-specific overrides,
/// `@include`) once it is merged; this reads only the plain top-level key.
pub(crate) fn imapd_option(config: Option<&Path>, key: &str) -> Result<Option<String>> {
    let path = config.unwrap_or(Path::new("/etc/imapd.conf"));
    let text = std::fs::read(path).at("reading", path)?;
    Ok(imapd_option_in(&String::from_utf8_lossy(&text), key))
}

fn imapd_option_in(text: &str, key: &str) -> Option<String> {
    text.lines()
        .map(str::trim_start)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim().to_string())
        .next_back()
}

/// Open syslog the way Cyrus does for `service` (ident with `CYRUS_SYSLOG_PREFIX` or
/// `syslog_prefix`, facility from `syslog_facility`) and install the panic hook.
/// A config that cannot be read leaves the defaults (the error surfaces in init).
pub fn setup_logging(service: &str, config: Option<&Path>) {
    let conf_prefix = imapd_option(config, "syslog_prefix").ok().flatten();
    let facility = imapd_option(config, "syslog_facility")
        .ok()
        .flatten()
        .and_then(|name| crate::log::parse_facility(&name))
        .unwrap_or(crate::log::DEFAULT_FACILITY);
    let env_prefix = std::env::var("CYRUS_SYSLOG_PREFIX").ok();
    let ident = crate::log::syslog_ident(service, env_prefix.as_deref(), conf_prefix.as_deref());
    let level = if std::env::var_os("CYRUS_VERBOSE").is_some() {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    crate::log::init_syslog(&ident, facility, level);
    crate::log::install_panic_hook();
}

/// When running as root, become the Cyrus user (`cyrus_user`, default "cyrus") with its
/// primary group and supplementary groups, as `cyrus_init` does.
fn become_cyrus(config: Option<&Path>) -> Result<()> {
    use nix::unistd::{Uid, User, geteuid, initgroups, setgid, setuid};
    if !geteuid().is_root() {
        return Ok(());
    }
    let name = imapd_option(config, "cyrus_user")?.unwrap_or_else(|| "cyrus".to_string());
    let user = User::from_name(&name)
        .ok()
        .flatten()
        .ok_or_else(|| Error::NotFound {
            what: "cyrus_user",
            name: name.clone(),
        })?;
    let cname =
        std::ffi::CString::new(name.clone()).map_err(|_| Error::Other("bad cyrus_user".into()))?;
    let fail = |what: &str, e: nix::Error| Error::Other(format!("becoming {name}: {what}: {e}"));
    initgroups(&cname, user.gid).map_err(|e| fail("initgroups", e))?;
    setgid(user.gid).map_err(|e| fail("setgid", e))?;
    setuid(user.uid).map_err(|e| fail("setuid", e))?;
    if setuid(Uid::from_raw(0)).is_ok() {
        return Err(Error::Other(format!("becoming {name}: could regain root")));
    }
    Ok(())
}

/// fd 3: the status pipe to master.
struct StatusPipe {
    file: File,
    pid: i32,
}

impl StatusPipe {
    /// Send one 8-byte message in a single write (atomic: smaller than PIPE_BUF).
    fn notify(&mut self, code: Notify) {
        let msg = code.encode(self.pid);
        loop {
            match self.file.write(&msg) {
                Ok(8) => return,
                Ok(n) => {
                    log::error!("notify master {code:?}: short write of {n} bytes");
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("notify master {code:?}: {e}");
                    return;
                }
            }
        }
    }
}

/// The exclusive fcntl lock that lets only one idle child of a service sit in accept.
struct AcceptLock {
    file: File,
    path: PathBuf,
}

impl AcceptLock {
    fn open(config_dir: &Path, service: &str, id: &str) -> Result<Self> {
        let dir = config_dir.join("socket");
        let path = dir.join(format!("{service}-{id}.lock"));
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
                std::fs::create_dir_all(&dir).at("creating", &dir)?;
                open()
            }
            other => other,
        }
        .at("opening", &path)?;
        Ok(AcceptLock { file, path })
    }

    /// Take the lock without waiting (`Ok(false)`: another child holds it), or
    /// release it. Never blocks: a blocking wait could miss a signal that lands just
    /// before it (the flag is checked, then the wait starts) and sleep forever, which
    /// keeps master's shutdown waiting.
    fn set(&self, lock: bool) -> io::Result<bool> {
        let kind = if lock { libc::F_WRLCK } else { libc::F_UNLCK };
        let flock = libc::flock {
            l_type: kind as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        match fcntl(self.file.as_raw_fd(), FcntlArg::F_SETLK(&flock)) {
            Ok(_) => Ok(true),
            Err(nix::Error::EAGAIN) | Err(nix::Error::EACCES) => Ok(false),
            Err(e) => Err(io::Error::from(e)),
        }
    }
}

/// fd 4, typed by its address family.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    fn from_fd(fd: OwnedFd) -> Result<Self> {
        let addr: SockaddrStorage = getsockname(fd.as_raw_fd())
            .map_err(|e| Error::Other(format!("listen socket (fd 4): getsockname: {e}")))?;
        let sotype = nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::SockType)
            .map_err(|e| Error::Other(format!("listen socket (fd 4): SO_TYPE: {e}")))?;
        if sotype != nix::sys::socket::SockType::Stream {
            return Err(Error::Other(
                "listen socket (fd 4) is not a stream socket: use proto=tcp".into(),
            ));
        }
        match addr.family() {
            Some(AddressFamily::Unix) => Ok(Listener::Unix(UnixListener::from(fd))),
            Some(AddressFamily::Inet | AddressFamily::Inet6) => {
                Ok(Listener::Tcp(TcpListener::from(fd)))
            }
            other => Err(Error::Other(format!(
                "listen socket (fd 4): unsupported family {other:?}"
            ))),
        }
    }

    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }

    fn accept(&self) -> io::Result<Conn> {
        match self {
            Listener::Tcp(l) => {
                let (stream, _) = l.accept()?;
                let _ = nix::sys::socket::setsockopt(
                    &stream,
                    nix::sys::socket::sockopt::KeepAlive,
                    &true,
                );
                Ok(Conn::Tcp(stream))
            }
            Listener::Unix(l) => l.accept().map(|(s, _)| Conn::Unix(s)),
        }
    }
}

impl Conn {
    fn raw(&self) -> RawFd {
        match self {
            Conn::Tcp(s) => s.as_raw_fd(),
            Conn::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// Identity of the running binary, to notice a package upgrade (as service.c does).
fn binary_identity() -> Option<(u64, u64, u64, i64)> {
    let exe = std::env::current_exe().ok()?;
    let meta = std::fs::metadata(exe).ok()?;
    Some((meta.dev(), meta.ino(), meta.size(), meta.mtime()))
}

/// `T + (something in 0..T)`: spreads the exits of idle children.
fn jittered(timeout: u32) -> u32 {
    if timeout == 0 {
        return 0;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let seed = nanos ^ std::process::id().wrapping_mul(2_654_435_761);
    timeout.saturating_add(seed % timeout)
}

/// Why the accept loop stopped, and the exit status that goes with it.
fn stop_code(stop: signals::Stop) -> i32 {
    match stop {
        signals::Stop::Shutdown | signals::Stop::Hangup | signals::Stop::IdleTimeout => 0,
    }
}

/// Entry point of `cyrvaultd`: `args` is the whole argv. Returns the exit status.
pub fn run(args: Vec<OsString>) -> i32 {
    let rest = args.get(1..).unwrap_or_default();
    let options = match RuntimeOptions::parse(rest) {
        Ok(o) => o,
        Err(err) => {
            eprintln!("cyrvaultd: {err}");
            return EX_USAGE;
        }
    };
    if options.standalone {
        return run_standalone(&options);
    }
    let (Ok(service), Ok(id)) = (std::env::var("CYRUS_SERVICE"), std::env::var("CYRUS_ID")) else {
        crate::log::init_syslog(
            "cyrvaultd",
            crate::log::DEFAULT_FACILITY,
            log::LevelFilter::Info,
        );
        let msg =
            "CYRUS_SERVICE and CYRUS_ID must be set: cyrvaultd is started by master (or use -X)";
        log::error!("{msg}");
        eprintln!("cyrvaultd: {msg}");
        return EX_SOFTWARE;
    };
    setup_logging(&service, options.config.as_deref());
    match serve_master(&service, &id, &options) {
        Ok(code) => code,
        Err((code, err)) => {
            log::error!("{err}");
            code
        }
    }
}

/// `-X`: one session on stdin/stdout, no master.
fn run_standalone(options: &RuntimeOptions) -> i32 {
    let service = stdio::service_name_from_env();
    setup_logging(&service, options.config.as_deref());
    if let Err(err) = become_cyrus(options.config.as_deref()) {
        log::error!("{err}");
        return EX_USAGE;
    }
    match crate::service::init(&service, options.config.clone(), &options.passthrough) {
        Ok(ctx) => stdio::serve_stdio_with(&ctx, None),
        Err(err) => {
            log::error!("init: {err}");
            err.exit_code()
        }
    }
}

type Fatal = (i32, Error);

fn serve_master(service: &str, id: &str, options: &RuntimeOptions) -> Result<i32, Fatal> {
    let config = options.config.as_deref();
    become_cyrus(config).map_err(|e| (EX_USAGE, e))?;
    if options.debugger {
        log::warn!("-D given: cyrvaultd has no debug_command hook; ignoring");
    }
    let os = |what: &str, e: nix::Error| (EX_OSERR, Error::Other(format!("{what}: {e}")));
    for fd in [STATUS_FD, LISTEN_FD] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| {
            let msg = format!("fd {fd}: {e} (not started by master? use -X)");
            (EX_SOFTWARE, Error::Other(msg))
        })?;
    }
    let status = stdio::take_inherited_fd(STATUS_FD)
        .map_err(|e| (EX_SOFTWARE, Error::Other(format!("status pipe: {e}"))))?;
    let listen = stdio::take_inherited_fd(LISTEN_FD)
        .map_err(|e| (EX_SOFTWARE, Error::Other(format!("listen socket: {e}"))))?;
    let listener = Listener::from_fd(listen).map_err(|e| (EX_SOFTWARE, e))?;
    let mut status = StatusPipe {
        file: File::from(status),
        pid: i32::try_from(std::process::id()).unwrap_or(0),
    };

    let ctx = crate::service::init(service, options.config.clone(), &options.passthrough)
        .map_err(|e| (1, e))?;
    // Like service.c: without the lock file, children still work, just not serialised.
    let lock = imapd_option(config, "configdirectory")
        .and_then(|v| v.ok_or_else(|| Error::Other("imapd.conf has no configdirectory".into())))
        .and_then(|dir| AcceptLock::open(Path::new(&dir), service, id))
        .inspect_err(|e| log::error!("accept locking disabled: {e}"))
        .ok();
    let binary = binary_identity();
    log::debug!(
        "ready: service={service} id={id} max_use={} timeout={}",
        options.max_use,
        options.reuse_timeout
    );

    let mut uses: u32 = 0;
    loop {
        signals::enter_idle().map_err(|e| os("installing signal handlers", e))?;
        if let Some(stop) = signals::pending() {
            return Ok(stop_code(stop));
        }
        if uses > 0 && options.reuse_timeout > 0 {
            nix::unistd::alarm::set(jittered(options.reuse_timeout));
        }
        let conn = match accept_one(lock.as_ref(), &listener, binary) {
            Ok(Some(conn)) => conn,
            Ok(None) => {
                nix::unistd::alarm::cancel();
                let stop = signals::pending().unwrap_or(signals::Stop::Hangup);
                log::debug!("leaving the accept loop: {stop:?}");
                return Ok(stop_code(stop));
            }
            Err(e) => {
                return Err((EX_OSERR, Error::Other(format!("accepting on fd 4: {e}"))));
            }
        };
        nix::unistd::alarm::cancel();
        signals::clear_alarm();

        status.notify(Notify::Unavailable);
        for fd in [0, 1] {
            nix::unistd::dup2(conn.raw(), fd).map_err(|e| os("dup2 of the connection", e))?;
        }
        drop(conn);
        status.notify(Notify::Connection);
        uses = uses.saturating_add(1);

        signals::enter_session().map_err(|e| os("installing signal handlers", e))?;
        let code = stdio::serve_stdio_with(&ctx, Some(listener.as_fd()));
        if code != 0 {
            log::debug!("session ended with code {code}");
        }
        if let Some(text) = ctx.session.shutdown.as_ref().and_then(|s| s.check()) {
            // Cyrus's shutdown file: no more sessions from this process
            log::info!("shutdown file present ({text}); exiting");
            return Ok(0);
        }
        if uses >= options.max_use {
            log::debug!(
                "served {uses} connections (-U {}); exiting",
                options.max_use
            );
            return Ok(0);
        }
        if let Some(stop) = signals::pending() {
            return Ok(match stop {
                signals::Stop::Shutdown => EX_TEMPFAIL,
                other => stop_code(other),
            });
        }
        status.notify(Notify::Available);
    }
}

/// How often an idle child waiting for the accept lock tries again.
const IDLE_WAKEUP_LOCK: std::time::Duration = std::time::Duration::from_millis(100);
/// How long (ms) an idle child sleeps in poll() before it looks at its signal flags.
const IDLE_WAKEUP_POLL_MS: u16 = 1000;

/// Take the accept lock, wait for a client, accept it, release the lock. `None` when a
/// signal (SIGHUP, SIGALRM, shutdown) or a changed binary says to stop instead.
fn accept_one(
    lock: Option<&AcceptLock>,
    listener: &Listener,
    binary: Option<(u64, u64, u64, i64)>,
) -> io::Result<Option<Conn>> {
    if let Some(lock) = lock {
        loop {
            if signals::pending().is_some() {
                return Ok(None);
            }
            match lock.set(true) {
                Ok(true) => break,
                Ok(false) => std::thread::sleep(IDLE_WAKEUP_LOCK),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("locking {}: {e}", lock.path.display()),
                    ));
                }
            }
        }
    }
    let result = wait_and_accept(listener, binary);
    if let Some(lock) = lock
        && let Err(e) = lock.set(false)
    {
        log::error!("unlocking {}: {e}", lock.path.display());
    }
    result
}

fn wait_and_accept(
    listener: &Listener,
    binary: Option<(u64, u64, u64, i64)>,
) -> io::Result<Option<Conn>> {
    loop {
        if signals::pending().is_some() {
            return Ok(None);
        }
        if binary.is_some() && binary_identity() != binary {
            log::info!("the cyrvaultd binary changed; exiting so master starts the new one");
            return Ok(None);
        }
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        // A bounded wait: a signal that lands between the check above and poll()
        // would otherwise be noticed only at the next connection.
        match poll(&mut fds, PollTimeout::from(IDLE_WAKEUP_POLL_MS)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        match listener.accept() {
            Ok(conn) => return Ok(Some(conn)),
            Err(e) if is_transient(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Accept errors that only mean "this client went away" or "try again".
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EAGAIN
                | libc::EINTR
                | libc::ECONNABORTED
                | libc::ENETDOWN
                | libc::EPROTO
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::ECONNRESET
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn runtime_options_are_taken_out() {
        let o = RuntimeOptions::parse(&os(&[
            "-C",
            "/x/imapd.conf",
            "-U",
            "3",
            "-s",
            "-T",
            "10",
            "-D",
            "-X",
            "foo",
        ]))
        .unwrap();
        assert_eq!(o.config.as_deref(), Some(Path::new("/x/imapd.conf")));
        assert_eq!(o.max_use, 3);
        assert_eq!(o.reuse_timeout, 10);
        assert!(o.debugger && o.standalone);
        assert_eq!(o.passthrough, os(&["-s", "foo"]));
    }

    #[test]
    fn defaults_and_negative_uses() {
        let o = RuntimeOptions::parse(&[]).unwrap();
        assert_eq!(
            (o.max_use, o.reuse_timeout, o.config),
            (MAX_USE, REUSE_TIMEOUT, None)
        );
        assert_eq!(
            RuntimeOptions::parse(&os(&["-U", "-5"])).unwrap().max_use,
            0
        );
    }

    #[test]
    fn bad_options_are_usage_errors() {
        for bad in [&["-C/etc/imapd.conf"][..], &["-U"], &["-T", "soon"]] {
            let err = RuntimeOptions::parse(&os(bad)).unwrap_err();
            assert_eq!(err.exit_code(), EX_USAGE, "{bad:?}");
        }
    }

    #[test]
    fn notify_is_eight_host_endian_bytes() {
        let msg = Notify::Connection.encode(0x1234);
        assert_eq!(&msg[..4], &3i32.to_ne_bytes());
        assert_eq!(&msg[4..], &0x1234i32.to_ne_bytes());
    }

    #[test]
    fn imapd_option_reads_plain_keys() {
        let text =
            "# c\nconfigdirectory: /var/lib/cyrus\nSyslog_Prefix:  cyrus \npartition-default:/p\n";
        assert_eq!(
            imapd_option_in(text, "configdirectory").as_deref(),
            Some("/var/lib/cyrus")
        );
        assert_eq!(
            imapd_option_in(text, "syslog_prefix").as_deref(),
            Some("cyrus")
        );
        assert_eq!(
            imapd_option_in(text, "partition-default").as_deref(),
            Some("/p")
        );
        assert_eq!(imapd_option_in(text, "missing"), None);
    }

    #[test]
    fn jitter_stays_within_twice_the_timeout() {
        for t in [1, 2, 60] {
            let j = jittered(t);
            assert!(j >= t && j < 2 * t, "{t} -> {j}");
        }
        assert_eq!(jittered(0), 0);
    }
}
