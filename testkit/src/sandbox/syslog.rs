//! Catching Cyrus's syslog messages per sandbox.
//!
//! Cyrus logs through `syslog(3)`, which writes datagrams to `/dev/log`. Test machines
//! often have no syslog daemon, so those messages (IOERRORs, DBERRORs, our own
//! service's logs) would be lost. When `/dev/log` is absent and mount namespaces are
//! available, each Cyrus program of a sandbox runs in a private mount namespace whose
//! `/dev` is a small tmpfs holding the usual device nodes (bind-mounted from the real
//! `/dev`) and a `/dev/log` symlink to the sandbox's own socket. A thread here reads
//! that socket into `log/syslog`. Nothing outside the namespace changes.
#![forbid(unsafe_code)]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use cyrvault_host::error::{Error, IoContext, Result};

/// Device nodes a Cyrus program may open.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Whether this machine needs and allows the private `/dev/log`: there is no
/// `/dev/log`, `CYRVAULT_SANDBOX_SYSLOG` is not `0`, and `unshare --mount` works
/// (probed once per process).
pub fn capture_possible() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| {
        if Path::new("/dev/log").exists()
            || std::env::var_os("CYRVAULT_SANDBOX_SYSLOG").is_some_and(|v| v == "0")
        {
            return false;
        }
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "/bin/true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The shell script that prepares the namespace and then execs `"$0" "$@"`.
/// `root` must not contain a single quote (checked by the caller).
pub fn namespace_script(root: &Path) -> String {
    let r = root.display();
    let mut s = format!(
        "set -e\nR='{r}'\nmkdir -p \"$R/run/realdev\"\nmount --bind /dev \"$R/run/realdev\"\n\
         mount -t tmpfs -o mode=0755,size=64k sandboxdev /dev\n"
    );
    for d in DEVICES {
        s.push_str(&format!(
            "if [ -e \"$R/run/realdev/{d}\" ]; then : > /dev/{d}; mount --bind \"$R/run/realdev/{d}\" /dev/{d}; fi\n"
        ));
    }
    s.push_str(
        "ln -s /proc/self/fd /dev/fd\nln -s \"$R/log/syslog.sock\" /dev/log\n\
         umount -l \"$R/run/realdev\"\nexec \"$0\" \"$@\"\n",
    );
    s
}

/// A `Command` that runs `program` inside the namespace of `root`.
pub fn wrapped(root: &Path, program: &Path) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(namespace_script(root))
        .arg(program);
    c
}

/// Reads syslog datagrams from `log/syslog.sock` into `log/syslog` until dropped.
pub struct SyslogSink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The file the messages go to.
    pub path: PathBuf,
}

impl SyslogSink {
    /// Bind the socket (mode 0666 so the cyrus user can send) and start the reader.
    pub fn start(socket: &Path, out: &Path) -> Result<SyslogSink> {
        let sock = UnixDatagram::bind(socket).at("binding syslog socket", socket)?;
        fs::set_permissions(socket, fs::Permissions::from_mode(0o666)).at("chmod", socket)?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .at("setting timeout on", socket)?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .at("opening", out)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sandbox-syslog".into())
            .spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match sock.recv(&mut buf) {
                        Ok(n) => {
                            let mut line = buf[..n].to_vec();
                            while line.last().is_some_and(|&b| b == b'\n' || b == 0) {
                                line.pop();
                            }
                            line.push(b'\n');
                            let _ = file.write_all(&line);
                        }
                        // Timeouts let us notice the stop flag; drain before leaving.
                        Err(_) if flag.load(Ordering::Relaxed) => break,
                        Err(_) => {}
                    }
                }
            })
            .map_err(|e| Error::other(format!("starting syslog reader: {e}")))?;
        Ok(SyslogSink {
            stop,
            thread: Some(thread),
            path: out.to_path_buf(),
        })
    }
}

impl Drop for SyslogSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_binds_devices_and_links_dev_log() {
        let s = namespace_script(Path::new("/tmp/cyrvault-x"));
        assert!(s.starts_with("set -e\nR='/tmp/cyrvault-x'\n"));
        assert!(s.contains("mount -t tmpfs"));
        assert!(s.contains("mount --bind \"$R/run/realdev/urandom\" /dev/urandom"));
        assert!(s.contains("ln -s \"$R/log/syslog.sock\" /dev/log"));
        assert!(s.ends_with("exec \"$0\" \"$@\"\n"));
    }

    #[test]
    fn sink_writes_datagrams_as_lines() {
        let dir = std::env::temp_dir().join(format!("cyrvault-syslog-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s.sock");
        let out = dir.join("syslog");
        let sink = SyslogSink::start(&sock, &out).unwrap();
        let tx = UnixDatagram::unbound().unwrap();
        tx.send_to(b"<22>Nov 29 21:00:00 imap[1]: hello", &sock)
            .unwrap();
        tx.send_to(b"<22>Nov 29 21:00:01 imap[1]: world\n", &sock)
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        drop(sink);
        let text = fs::read_to_string(&out).unwrap();
        assert_eq!(
            text,
            "<22>Nov 29 21:00:00 imap[1]: hello\n<22>Nov 29 21:00:01 imap[1]: world\n"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
