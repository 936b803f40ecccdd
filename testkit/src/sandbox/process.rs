//! The life cycle of a sandbox's Cyrus processes: installing Cyrus if needed, picking
//! ports, running `master` in its own process group with a watchdog, waiting for the
//! greetings, and stopping. The directory and configuration are `mod.rs`'s.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Group, Pid, User};

use super::{CYRUS_BIN, Sandbox, lmtp, other};
use cyrvault_host::error::{IoContext, Result};
use cyrvault_host::imap::Client;

/// Packages installed (as root, with apt-get) when Cyrus is missing.
const PACKAGES: &[&str] = &[
    "cyrus-imapd",
    "cyrus-admin",
    "cyrus-clients",
    "cyrus-replication",
    "sasl2-bin",
];
/// sysexits EX_UNAVAILABLE: master's exit code when a listen address cannot be bound.
const EX_UNAVAILABLE: i32 = 69;
/// Bounded wait for master to stop after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static INSTALL: Mutex<()> = Mutex::new(());

/// A free TCP port on 127.0.0.1 not handed out before by this process. Another process
/// may still take it before master binds; `start` retries then.
pub(super) fn pick_port() -> Result<u16> {
    let mut guard = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let used = guard.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| other(format!("binding 127.0.0.1:0 to find a free port: {e}")))?;
        let port = l
            .local_addr()
            .map_err(|e| other(format!("reading a bound port: {e}")))?
            .port();
        if used.insert(port) {
            return Ok(port);
        }
    }
    Err(other("no free port found in 100 tries".into()))
}

/// Install Cyrus with apt-get if it is missing and we are root; else a clear error.
pub(super) fn ensure_cyrus_installed() -> Result<()> {
    let master = Path::new(CYRUS_BIN).join("master");
    if master.exists() {
        return Ok(());
    }
    let _g = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if master.exists() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(other(format!(
            "{} is missing; install the packages {} (needs root)",
            master.display(),
            PACKAGES.join(" ")
        )));
    }
    log::info!(target: "sandbox", "installing Cyrus: apt-get install {}", PACKAGES.join(" "));
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| other(format!("running apt-get: {e}")))?;
        if !out.status.success() {
            return Err(other(format!(
                "apt-get {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    };
    run(&["update"])?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend_from_slice(PACKAGES);
    run(&args)?;
    if !master.exists() {
        return Err(other(format!(
            "{} still missing after apt-get install",
            master.display()
        )));
    }
    Ok(())
}

pub(super) fn cyrus_ids() -> Result<(nix::unistd::Uid, nix::unistd::Gid)> {
    let user = User::from_name("cyrus")
        .map_err(|e| other(format!("looking up user cyrus: {e}")))?
        .ok_or_else(|| other("there is no user cyrus (is cyrus-imapd installed?)".into()))?;
    let group = Group::from_name("mail")
        .map_err(|e| other(format!("looking up group mail: {e}")))?
        .ok_or_else(|| other("there is no group mail".into()))?;
    Ok((user.uid, group.gid))
}

/// The last `max` bytes of a file, as text ("" if unreadable).
pub fn file_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Lines of the system syslog files that mention `needle` (Cyrus logs to syslog;
/// many test machines have no syslog daemon, then this is empty).
pub(super) fn system_syslog_lines(needle: &str) -> String {
    let mut out = String::new();
    for f in ["/var/log/syslog", "/var/log/mail.log", "/var/log/messages"] {
        let tail = file_tail(Path::new(f), 256 * 1024);
        for line in tail.lines().filter(|l| l.contains(needle)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    let lines: Vec<&str> = out.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

impl Sandbox {
    pub(super) fn master_log(&self) -> PathBuf {
        self.root.join("log/master.log")
    }

    /// The last 8 KiB of master's log (its stderr and its children's).
    pub fn master_log_tail(&self) -> String {
        file_tail(&self.master_log(), 8192)
    }

    pub(super) fn spawn_master(&mut self) -> Result<()> {
        let log_path = self.master_log();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .at("opening", &log_path)?;
        let log2 = log.try_clone().at("duplicating", &log_path)?;
        let pidfile = self.root.join("run/master.pid");
        let bin = self.cyrus.program("master");
        // No -d: master stays in the foreground as our child. -L sends its (and its
        // children's) stdout/stderr to the log; -p keeps it off the system pidfile.
        // process_group(0): master's shutdown signals its whole process group, which
        // must not be ours.
        let child = self
            .cyrus_command(&bin)
            .arg("-M")
            .arg(&self.cyrus_conf)
            .arg("-C")
            .arg(&self.imapd_conf)
            .arg("-p")
            .arg(&pidfile)
            .arg("-l")
            .arg("32")
            .arg("-L")
            .arg(&log_path)
            .env_remove("CYRUS_PREFIX")
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .at("starting", &bin)?;
        let pid = child.id();
        self.master = Some(child);
        self.spawn_watchdog(pid);
        Ok(())
    }

    /// A `sh` that waits for EOF on a pipe only we hold, then kills master's process
    /// group: if this process dies without running Drop (SIGKILL, abort), Cyrus still
    /// goes away. On a normal stop we kill the watchdog first.
    pub(super) fn spawn_watchdog(&mut self, pgid: u32) {
        let rm = if self.keep {
            String::new()
        } else {
            format!("; rm -rf '{}'", self.root.display())
        };
        let script = format!(
            "read _ignored; kill -TERM -{pgid} 2>/dev/null; sleep 3; kill -KILL -{pgid} 2>/dev/null{rm}"
        );
        match Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
        {
            Ok(c) => self.watchdog = Some(c),
            Err(e) => log::warn!(target: "sandbox", "no watchdog for {}: {e}", self.servername),
        }
    }

    /// Wait for our IMAP and LMTP greetings. An error says whether new ports may help.
    pub(super) fn wait_ready(
        &mut self,
        timeout: Duration,
    ) -> std::result::Result<(), (bool, String)> {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            if let Some(child) = self.master.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                // master's fatal() only reaches syslog; its exit code is what we see.
                // With master_bind_errors_fatal a taken address exits EX_UNAVAILABLE.
                if status.code() == Some(EX_UNAVAILABLE) {
                    return Err((
                        true,
                        format!(
                            "master exited with {status}: unable to bind a listen address (taken?)"
                        ),
                    ));
                }
                return Err((false, format!("master exited early with {status}")));
            }
            match Client::connect(self.imap_addr) {
                Ok(c) if c.greeting().contains(&self.servername) => {
                    // The LMTP listener was bound by the same master before it forked
                    // anything, but check its greeting too: it proves lmtpd runs.
                    match lmtp::greeting(self.lmtp_addr) {
                        Ok(g) if g.contains(&self.servername) => return Ok(()),
                        Ok(g) => last = format!("lmtp greeting from someone else: {g}"),
                        Err(e) => last = format!("lmtp: {e}"),
                    }
                }
                Ok(c) => {
                    return Err((
                        true,
                        format!(
                            "port {} answers for another server: {}",
                            self.imap_addr,
                            c.greeting()
                        ),
                    ));
                }
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err((
                    false,
                    format!("no imap greeting within {timeout:?}: {last}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// master's process id while it runs.
    pub fn master_pid(&self) -> Option<u32> {
        self.master.as_ref().map(Child::id)
    }

    /// Stop Cyrus: SIGTERM master, wait (bounded), then SIGKILL its process group.
    /// Idempotent. The directory is removed on drop, not here.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let Some(mut child) = self.master.take() else {
            return Ok(());
        };
        let pgid =
            Pid::from_raw(i32::try_from(child.id()).map_err(|_| other("pid out of range".into()))?);
        // SIGTERM to master alone: it signals its group and waits for its children
        // (services log "graceful shutdown initiated by unexpected process" otherwise).
        let _ = kill(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut status = None;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(s)) => {
                    status = Some(s);
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(other(format!("waiting for master {pgid}: {e}"))),
            }
        }
        if status.is_none() {
            log::warn!(target: "sandbox", "master {pgid} of {} ignored SIGTERM; killing", self.servername);
        }
        // Children that outlived master (or master itself) get SIGKILL; ESRCH is fine.
        let _ = killpg(pgid, Signal::SIGKILL);
        if status.is_none() {
            child
                .wait()
                .map_err(|e| other(format!("reaping master {pgid}: {e}")))?;
        }
        Ok(())
    }
}

/// Whether something accepts TCP connections at `addr` (used by tests after stop).
pub fn port_open(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}
