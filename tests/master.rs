//! cyrvaultd under Cyrus's REAL master (/usr/lib/cyrus/bin/master, Debian's 3.6.1):
//! master starts it on demand, it answers on the socket master listens on, it exits
//! after `-U` uses and master starts a fresh one, master's SIGTERM stops everything,
//! and master survives a child killed mid-session.
//!
//! Each test runs its own master (as root; master drops to cyrus) from a scratch
//! directory with a minimal imapd.conf/cyrus.conf on a free port. A Drop guard kills
//! master and any cyrvaultd left behind, so a failing test leaves nothing running.
//! TODO(lead): switch the fixture to the shared sandbox once it lands.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, chown};

const MASTER: &str = "/usr/lib/cyrus/bin/master";
const CTL_CYRUSDB: &str = "/usr/lib/cyrus/bin/ctl_cyrusdb";

/// A running master with our service, and its scratch directory.
struct Master {
    child: Child,
    dir: PathBuf,
    port: u16,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local addr").port()
}

fn chown_tree(path: &Path, user: &User) {
    chown(path, Some(user.uid), Some(user.gid)).expect("chown to cyrus");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            chown_tree(&entry.expect("dir entry").path(), user);
        }
    }
}

impl Master {
    fn start(max_uses: u32) -> Master {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests start Cyrus's master, which must run as root"
        );
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cyrvault-master-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["conf", "spool", "lock", "proc"] {
            std::fs::create_dir_all(dir.join(sub)).expect("creating the scratch tree");
        }
        let d = dir.display();
        let imapd = dir.join("imapd.conf");
        std::fs::write(
            &imapd,
            format!(
                "configdirectory: {d}/conf\npartition-default: {d}/spool\n\
                 mboxname_lockpath: {d}/lock\nproc_path: {d}/proc\n"
            ),
        )
        .expect("writing imapd.conf");
        let port = free_port();
        let service = env!("CARGO_BIN_EXE_cyrvaultd");
        std::fs::write(
            dir.join("cyrus.conf"),
            format!(
                "START {{\n  recover cmd=\"{CTL_CYRUSDB} -C {imapd} -r\"\n}}\n\
                 SERVICES {{\n  cyrvault cmd=\"{service} -C {imapd} -U {max_uses}\" \
                 listen=\"127.0.0.1:{port}\"\n}}\n",
                imapd = imapd.display()
            ),
        )
        .expect("writing cyrus.conf");
        let cyrus = User::from_name("cyrus")
            .ok()
            .flatten()
            .expect("user cyrus exists");
        chown_tree(&dir, &cyrus);
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod scratch dir");

        // master's shutdown does kill(0, SIGTERM): give each master its own process
        // group so it cannot signal the test runner or the other tests' masters.
        let child = Command::new(MASTER)
            .process_group(0)
            .arg("-M")
            .arg(dir.join("cyrus.conf"))
            .arg("-C")
            .arg(&imapd)
            .arg("-p")
            .arg(dir.join("master.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting Cyrus master");
        let mut master = Master { child, dir, port };
        master.wait_listening();
        master
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits"))
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("master exited during startup: {status}");
            }
            // Not a probe connection: that would be a client and use up a service use.
            if is_listening(self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("master did not listen on port {} within 20 s", self.port);
    }

    fn connect(&self) -> TcpStream {
        let stream =
            TcpStream::connect(("127.0.0.1", self.port)).expect("connecting to master's port");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        stream
    }

    /// Live (non-zombie) cyrvaultd processes whose parent is this master.
    fn service_children(&self) -> Vec<i32> {
        children_named(self.pid().as_raw(), "cyrvaultd")
    }

    /// The cyrvaultd child whose fd 0 is the server side of `client`'s connection.
    /// (master may fork a spare child when a status message and a stale "listener
    /// readable" arrive in the same select round, so "the only child" is not enough.)
    fn serving_child(&self, client: &TcpStream) -> i32 {
        let client_port = client.local_addr().expect("client addr").port();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(inode) = tcp_inode(self.port, client_port) {
                let link = format!("socket:[{inode}]");
                let serving: Vec<i32> = self
                    .service_children()
                    .into_iter()
                    .filter(|pid| {
                        std::fs::read_link(format!("/proc/{pid}/fd/0"))
                            .is_ok_and(|l| l.to_string_lossy() == link)
                    })
                    .collect();
                if let [pid] = serving[..] {
                    return pid;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no cyrvaultd child of master {} holds the connection from port {client_port}; \
                 children: {:?}",
                self.pid(),
                self.service_children()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let kids = self.service_children();
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(self.pid(), Signal::SIGTERM);
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        for pid in kids {
            if process_alive(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether something listens on 127.0.0.1:`port` (from /proc/net/tcp, state 0A).
fn is_listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1).unwrap_or("");
            let state = fields.nth(1).unwrap_or("");
            local == want && state == "0A"
        })
}

/// The socket inode of the established connection 127.0.0.1:`local` <-
/// 127.0.0.1:`remote` (from /proc/net/tcp).
fn tcp_inode(local: u16, remote: u16) -> Option<u64> {
    let (want_local, want_remote) = (
        format!("0100007F:{local:04X}"),
        format!("0100007F:{remote:04X}"),
    );
    std::fs::read_to_string("/proc/net/tcp")
        .ok()?
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (l, r, inode) = (fields.get(1)?, fields.get(2)?, fields.get(9)?);
            (*l == want_local && *r == want_remote).then(|| inode.parse().ok())?
        })
}

/// (pid, comm, state, ppid) of every process, from /proc/*/stat.
fn processes() -> Vec<(i32, String, char, i32)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = rest.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        out.push((pid, comm, state, ppid));
    }
    out
}

fn children_named(parent: i32, name: &str) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, comm, state, ppid)| *ppid == parent && comm == name && *state != 'Z')
        .map(|(pid, ..)| pid)
        .collect()
}

/// Running and not a zombie.
fn process_alive(pid: i32) -> bool {
    processes()
        .iter()
        .any(|(p, _, state, _)| *p == pid && *state != 'Z')
}

fn wait_gone(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !process_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn read_exact_str(stream: &mut TcpStream, len: usize) -> String {
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).expect("reading the reply");
    String::from_utf8_lossy(&buf).into_owned()
}

/// PING gets backupcyrusd's reply; the connection stays open.
fn ping(stream: &mut TcpStream) {
    stream.write_all(b"PING\n").expect("sending PING");
    assert_eq!(read_exact_str(stream, 13), "OK\nDONE PING\n");
}

/// QUIT gets "OK" and then the service closes the connection.
fn quit(stream: &mut TcpStream) {
    stream.write_all(b"QUIT\n").expect("sending QUIT");
    assert_eq!(read_exact_str(stream, 3), "OK\n");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("reading to EOF");
    assert!(rest.is_empty(), "bytes after QUIT: {rest:?}");
}

#[test]
fn master_starts_cyrvaultd_and_replaces_it_after_max_uses() {
    let master = Master::start(3);
    let mut uses: std::collections::BTreeMap<i32, u32> = Default::default();
    for round in 0..9 {
        let mut client = master.connect();
        ping(&mut client);
        let pid = master.serving_child(&client);
        quit(&mut client);
        let n = uses.entry(pid).or_default();
        *n += 1;
        eprintln!("use {round}: served by {pid} (its use {n})");
        assert!(*n <= 3, "child {pid} served more than -U 3 connections");
        if *n == 3 {
            assert!(
                wait_gone(pid, Duration::from_secs(10)),
                "child {pid} should exit after -U 3 uses"
            );
        }
    }
    let retired = uses.values().filter(|n| **n == 3).count();
    assert!(
        retired >= 2,
        "children retired after 3 uses, replaced: {uses:?}"
    );
    // The accept lock lives where Cyrus's service.c puts it.
    assert!(master.dir.join("conf/socket/cyrvault-0.lock").exists());
}

#[test]
fn sigterm_to_master_stops_master_and_its_children() {
    let mut master = Master::start(10);
    let mut client = master.connect();
    ping(&mut client);
    let busy = master.serving_child(&client);
    quit(&mut client);
    let children = master.service_children();
    assert!(children.contains(&busy));
    // The child is now idle in accept (READY); shut master down.
    kill(master.pid(), Signal::SIGTERM).expect("signalling master");
    let status = master
        .wait_exit(Duration::from_secs(15))
        .expect("master exits within 15 s of SIGTERM");
    for pid in children {
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "cyrvaultd {pid} still running after master's shutdown"
        );
    }
    assert!(!is_listening(master.port), "nothing listens after shutdown");
    eprintln!("master exited with {status}");
}

#[test]
fn master_survives_a_child_killed_mid_session() {
    let master = Master::start(10);
    let mut client = master.connect();
    ping(&mut client);
    let victim = master.serving_child(&client);
    kill(Pid::from_raw(victim), Signal::SIGKILL).expect("killing the child");
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no bytes after the kill");
    assert!(
        wait_gone(victim, Duration::from_secs(5)),
        "killed child is reaped"
    );

    let mut client = master.connect();
    ping(&mut client);
    let next = master.serving_child(&client);
    assert_ne!(next, victim);
    quit(&mut client);
    assert!(
        process_alive(master.pid().as_raw()),
        "master is still running"
    );
}

#[test]
fn sighup_to_master_recycles_idle_children() {
    let master = Master::start(10);
    let mut client = master.connect();
    ping(&mut client);
    let old = master.serving_child(&client);
    quit(&mut client);
    let before = master.service_children();
    // master rereads cyrus.conf and passes SIGHUP on; the idle child exits.
    kill(master.pid(), Signal::SIGHUP).expect("signalling master");
    for pid in &before {
        assert!(
            wait_gone(*pid, Duration::from_secs(10)),
            "idle child {pid} (served: {old}) should exit on SIGHUP"
        );
    }
    let mut client = master.connect();
    ping(&mut client);
    let fresh = master.serving_child(&client);
    assert!(!before.contains(&fresh), "a new child serves after SIGHUP");
    quit(&mut client);
}

// ---------------------------------------------------------------------------------
// The same binary with the test in master's seat: a real pipe on fd 3 and a real
// listening socket on fd 4, so the exact bytes master would read, and the exit status
// master would see, can be checked (master itself only reports those to syslog).

/// cyrvaultd started the way master starts it, with the status pipe's read end here.
struct Direct {
    child: Child,
    status: std::fs::File,
    port: u16,
    dir: PathBuf,
}

impl Direct {
    fn start(extra: &[&str]) -> Direct {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cyrvault-direct-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("conf")).expect("scratch dir");
        let imapd = dir.join("imapd.conf");
        std::fs::write(&imapd, format!("configdirectory: {}/conf\n", dir.display()))
            .expect("imapd.conf");
        let cyrus = User::from_name("cyrus")
            .ok()
            .flatten()
            .expect("user cyrus exists");
        chown_tree(&dir, &cyrus);

        let listener = TcpListener::bind("127.0.0.1:0").expect("listening");
        let port = listener.local_addr().expect("addr").port();
        let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
        let (pipe_fd, listen_fd) = {
            use std::os::fd::AsRawFd;
            (write_end.as_raw_fd(), listener.as_raw_fd())
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_cyrvaultd"));
        command
            .arg("-C")
            .arg(&imapd)
            .args(extra)
            .env("CYRUS_SERVICE", "cyrvault")
            .env("CYRUS_ID", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: between fork and exec the closure only calls the async-signal-safe
        // fcntl and dup2 on descriptors this process owns, as master's child does: move
        // both out of the way, then onto 3 and 4 without FD_CLOEXEC.
        unsafe {
            command.pre_exec(move || {
                let high_pipe = libc::fcntl(pipe_fd, libc::F_DUPFD, 100);
                let high_listen = libc::fcntl(listen_fd, libc::F_DUPFD, 100);
                if high_pipe < 0
                    || high_listen < 0
                    || libc::dup2(high_pipe, 3) < 0
                    || libc::dup2(high_listen, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(high_pipe);
                libc::close(high_listen);
                Ok(())
            });
        }
        let child = command.spawn().expect("starting cyrvaultd");
        drop(write_end);
        drop(listener);
        Direct {
            child,
            status: std::fs::File::from(read_end),
            port,
            dir,
        }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits")
    }

    /// The next 8-byte status message, as (code, pid), within 10 s.
    fn next_message(&mut self) -> (i32, i32) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.status.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(10_000u16)).expect("poll");
        assert_eq!(ready, 1, "no status message within 10 s");
        let mut msg = [0u8; 8];
        self.status.read_exact(&mut msg).expect("an 8-byte message");
        let code = i32::from_ne_bytes(msg[..4].try_into().expect("4 bytes"));
        let pid = i32::from_ne_bytes(msg[4..].try_into().expect("4 bytes"));
        (code, pid)
    }

    /// Wait until the handlers are installed (SigCgt has SIGTERM), i.e. it is idle.
    fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
            let caught = status
                .lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
                .unwrap_or(0);
            if caught & (1 << (libc::SIGTERM - 1)) != 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("cyrvaultd never installed its signal handlers");
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connecting");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        stream
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).expect("signalling cyrvaultd");
    }

    /// The exit code, within `secs` seconds (panics on death by signal or a hang).
    fn exit_code(&mut self, secs: u64) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status
                    .code()
                    .unwrap_or_else(|| panic!("cyrvaultd died by a signal: {status}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("cyrvaultd did not exit within {secs} s");
    }

    /// Exactly these (code, our pid) messages come next.
    fn expect_messages(&mut self, codes: &[i32]) {
        let pid = self.pid();
        for code in codes {
            assert_eq!(self.next_message(), (*code, pid));
        }
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const AVAILABLE: i32 = 1;
const UNAVAILABLE: i32 = 2;
const CONNECTION: i32 = 3;

#[test]
fn status_messages_and_idle_timeout_exit() {
    let mut d = Direct::start(&["-U", "5", "-T", "1"]);
    for _ in 0..2 {
        let mut client = d.connect();
        ping(&mut client);
        d.expect_messages(&[UNAVAILABLE, CONNECTION]);
        quit(&mut client);
        d.expect_messages(&[AVAILABLE]);
    }
    // Idle after a connection: the -T 1 alarm (1 s + jitter < 2 s) ends it with 0.
    let started = Instant::now();
    assert_eq!(d.exit_code(10), 0);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(d.dir.join("conf/socket/cyrvault-0.lock").exists());
}

#[test]
fn max_uses_exit_cleanly_without_available() {
    let mut d = Direct::start(&["-U", "1"]);
    let mut client = d.connect();
    ping(&mut client);
    quit(&mut client);
    d.expect_messages(&[UNAVAILABLE, CONNECTION]);
    assert_eq!(d.exit_code(10), 0);
    let mut rest = Vec::new();
    d.status
        .read_to_end(&mut rest)
        .expect("reading the pipe to EOF");
    assert!(rest.is_empty(), "nothing after CONNECTION: {rest:?}");
}

#[test]
fn sigterm_while_idle_exits_zero() {
    let mut d = Direct::start(&[]);
    d.wait_idle();
    d.signal(Signal::SIGTERM);
    assert_eq!(d.exit_code(10), 0, "idle in READY must never exit non-zero");
}

#[test]
fn sighup_while_idle_exits_zero() {
    let mut d = Direct::start(&[]);
    d.wait_idle();
    d.signal(Signal::SIGHUP);
    assert_eq!(d.exit_code(10), 0);
}

#[test]
fn sigterm_mid_session_exits_tempfail() {
    let mut d = Direct::start(&[]);
    let mut client = d.connect();
    ping(&mut client);
    d.expect_messages(&[UNAVAILABLE, CONNECTION]);
    d.signal(Signal::SIGTERM);
    assert_eq!(d.exit_code(10), 75);
}

#[test]
fn sighup_finishes_the_session_then_exits() {
    let mut d = Direct::start(&[]);
    let mut client = d.connect();
    ping(&mut client);
    d.expect_messages(&[UNAVAILABLE, CONNECTION]);
    d.signal(Signal::SIGHUP);
    ping(&mut client);
    quit(&mut client);
    assert_eq!(d.exit_code(10), 0);
}

#[test]
fn standalone_x_serves_stdin_stdout() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cyrvaultd"))
        .arg("-X")
        .env("CYRUS_SERVICE", "cyrvault")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting cyrvaultd -X");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"PING\nQUIT\n")
        .expect("writing");
    let output = child.wait_with_output().expect("waiting");
    assert!(output.status.success(), "{}", output.status);
    assert_eq!(output.stdout, b"OK\nDONE PING\nOK\n");
}

/// Try (non-blocking) to take or release a whole-file fcntl write lock.
fn try_lock(file: &std::fs::File, lock: bool) -> bool {
    use std::os::fd::AsRawFd;
    let flock = libc::flock {
        l_type: (if lock { libc::F_WRLCK } else { libc::F_UNLCK }) as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETLK(&flock)).is_ok()
}

#[test]
fn accept_is_serialised_by_cyrus_accept_lock() {
    let mut d = Direct::start(&[]);
    d.wait_idle();
    let path = d.dir.join("conf/socket/cyrvault-0.lock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never created",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("opening the accept lock");
    // Idle in accept: cyrvaultd holds the lock (give it a moment to take it).
    let deadline = Instant::now() + Duration::from_secs(10);
    while try_lock(&file, true) {
        try_lock(&file, false);
        assert!(
            Instant::now() < deadline,
            "cyrvaultd never took the accept lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // In a session it has released it: we can take it, and then it cannot accept.
    let mut client = d.connect();
    ping(&mut client);
    d.expect_messages(&[UNAVAILABLE, CONNECTION]);
    assert!(try_lock(&file, true), "lock released during the session");
    quit(&mut client);
    d.expect_messages(&[AVAILABLE]);
    let mut second = d.connect();
    second.write_all(b"PING\n").expect("sending PING");
    second
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("short timeout");
    let mut byte = [0u8; 1];
    assert!(
        second.read(&mut byte).is_err(),
        "served while we held the accept lock"
    );
    assert!(try_lock(&file, false), "releasing our lock");
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert_eq!(read_exact_str(&mut second, 13), "OK\nDONE PING\n");
    d.expect_messages(&[UNAVAILABLE, CONNECTION]);
    quit(&mut second);
}
