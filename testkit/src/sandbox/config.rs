//! The two configuration files a sandbox writes: `imapd.conf` (Cyrus options) and
//! `cyrus.conf` (what `master` starts). Pure: text in, text out; `mod.rs` writes them.
//!
//! Every path points inside the sandbox root so a sandbox never touches the system
//! instance (`/var/lib/cyrus`, `/run/cyrus`, `/var/spool/cyrus`).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where a service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A free TCP port on 127.0.0.1, picked at start.
    AutoTcp,
    /// This TCP port on 127.0.0.1.
    Tcp(u16),
    /// A UNIX socket `socket/<name>.sock` inside the sandbox.
    Unix,
}

/// One extra line in cyrus.conf's SERVICES section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLine {
    /// Service name (alphanumeric; it becomes `CYRUS_SERVICE` and the config ident).
    pub name: String,
    /// Command: program (absolute, or a Cyrus program of the sandbox's installation,
    /// e.g. `timsieved`) and arguments.
    pub cmd: String,
    /// Where it listens.
    pub listen: Listen,
    /// Further `key=value` words, e.g. `prefork=1 maxchild=4`.
    pub options: String,
    /// Insert `-C <imapd.conf>` after the program (master does not pass its own -C down).
    pub pass_config: bool,
}

impl ServiceLine {
    /// A TCP service on an automatically chosen port, given `-C`.
    pub fn tcp(name: &str, cmd: &str) -> ServiceLine {
        ServiceLine {
            name: name.to_string(),
            cmd: cmd.to_string(),
            listen: Listen::AutoTcp,
            options: String::new(),
            pass_config: true,
        }
    }
}

/// Everything the two files depend on, resolved (ports chosen, paths known).
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    pub servername: String,
    pub imapd_conf: PathBuf,
    pub config_dir: PathBuf,
    /// (partition name, directory), the first is the default partition.
    pub partitions: Vec<(String, PathBuf)>,
    pub lock_dir: PathBuf,
    pub sieve_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub tmp_dir: PathBuf,
    pub imap_addr: SocketAddr,
    pub lmtp_addr: SocketAddr,
    pub hashimapspool: bool,
    pub unixhierarchysep: bool,
    pub legacy_dirs: bool,
    /// The secret file every cyrvaultd service of the sandbox is configured with
    /// (None: no `cyrvaultd_secret_file` line).
    pub cyrvaultd_secret_file: Option<PathBuf>,
    /// User overrides and additions, applied last (a key given here replaces ours).
    pub extra: Vec<(String, String)>,
    /// The Cyrus installation's program directory: cyrus.conf names its programs
    /// by full path (master would resolve a bare name in its own compiled-in
    /// directory, which is the system's).
    pub bin_dir: PathBuf,
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// The imapd.conf text.
pub fn imapd_conf(l: &Layout) -> String {
    let mut kv: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| kv.push((k.to_string(), v));
    put("configdirectory", p(&l.config_dir));
    if let Some((name, _)) = l.partitions.first() {
        put("defaultpartition", name.clone());
    }
    for (name, dir) in &l.partitions {
        put(&format!("partition-{name}"), p(dir));
    }
    put("mboxname_lockpath", p(&l.lock_dir));
    put("sievedir", p(&l.sieve_dir));
    put("temp_path", p(&l.tmp_dir));
    put("proc_path", p(&l.config_dir.join("proc")));
    put("servername", l.servername.clone());
    put("syslog_prefix", l.servername.clone());
    put("admins", "cyrus".into());
    // Any password is accepted: tests log in as any user without a password database.
    put("sasl_pwcheck_method", "alwaystrue".into());
    put("sasl_mech_list", "PLAIN LOGIN".into());
    put("allowplaintext", "yes".into());
    put("lmtpsocket", p(&l.socket_dir.join("lmtp")));
    put("idlesocket", p(&l.socket_dir.join("idle")));
    put("notifysocket", p(&l.socket_dir.join("notify")));
    put("hashimapspool", yes(l.hashimapspool).into());
    put("unixhierarchysep", yes(l.unixhierarchysep).into());
    put("mailbox_legacy_dirs", yes(l.legacy_dirs).into());
    put("altnamespace", "no".into());
    put("virtdomains", "off".into());
    put("delete_mode", "delayed".into());
    put("expunge_mode", "delayed".into());
    // A port taken by someone else must make master exit, not run without the service.
    put("master_bind_errors_fatal", "yes".into());
    // Keep 8-bit header bytes as sent, so backups see the awkward bytes too.
    put("munge8bit", "no".into());
    put("reject8bit", "no".into());
    put("lmtp_downcase_rcpt", "no".into());
    // Every LMTP delivery is stored, even a repeated Message-ID (Cyrus's default
    // would silently drop the second copy into the same mailbox).
    put("duplicatesuppression", "no".into());
    put("conversations", "no".into());
    // cyrvaultd refuses every request without a secret (or an explicit
    // cyrvaultd_allow_unauthenticated): every sandbox has one (doc/security.md)
    if let Some(f) = &l.cyrvaultd_secret_file {
        put("cyrvaultd_secret_file", p(f));
    }
    for (k, v) in &l.extra {
        let key = k.to_ascii_lowercase();
        kv.retain(|(existing, _)| *existing != key);
        kv.push((key, v.clone()));
    }
    let mut out = format!("# cyrvault test sandbox {}\n", l.servername);
    for (k, v) in kv {
        out.push_str(&format!("{k}: {v}\n"));
    }
    out
}

/// The `listen=` value of a service.
pub fn listen_value(l: &Layout, svc: &ServiceLine, port: Option<u16>) -> String {
    match (&svc.listen, port) {
        (Listen::Unix, _) => p(&unix_socket_path(l, &svc.name)),
        (Listen::Tcp(port), _) => format!("127.0.0.1:{port}"),
        (Listen::AutoTcp, Some(port)) => format!("127.0.0.1:{port}"),
        (Listen::AutoTcp, None) => "127.0.0.1:0".into(),
    }
}

/// The path of a UNIX-socket service.
pub fn unix_socket_path(l: &Layout, name: &str) -> PathBuf {
    l.socket_dir.join(format!("{name}.sock"))
}

/// A bare program name is one of the installation's: by full path (master alone
/// would look in its compiled-in directory, the system's).
fn program(l: &Layout, prog: &str) -> String {
    if prog.contains('/') {
        prog.to_string()
    } else {
        p(&l.bin_dir.join(prog))
    }
}

fn with_config(l: &Layout, cmd: &str, pass_config: bool) -> String {
    if !pass_config {
        let (prog, rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
        let prog = program(l, prog);
        return if rest.is_empty() {
            prog
        } else {
            format!("{prog} {rest}")
        };
    }
    let mut words = cmd.split_whitespace();
    let prog = words.next().unwrap_or_default();
    let rest: Vec<&str> = words.collect();
    let mut out = format!("{} -C {}", program(l, prog), p(&l.imapd_conf));
    for w in rest {
        out.push(' ');
        out.push_str(w);
    }
    out
}

/// The cyrus.conf text. `extra` pairs each extra service with its chosen port.
pub fn cyrus_conf(l: &Layout, extra: &[(ServiceLine, Option<u16>)]) -> String {
    let conf = p(&l.imapd_conf);
    let bin = p(&l.bin_dir);
    let mut out = format!(
        "# cyrvault test sandbox {}\nSTART {{\n  recover cmd=\"{bin}/ctl_cyrusdb -C {conf} -r\"\n}}\n\nSERVICES {{\n",
        l.servername
    );
    out.push_str(&format!(
        "  imap cmd=\"{bin}/imapd -C {conf}\" listen=\"{}\" prefork=0 maxchild=100\n",
        l.imap_addr
    ));
    out.push_str(&format!(
        "  lmtp cmd=\"{bin}/lmtpd -C {conf} -a\" listen=\"{}\" prefork=0 maxchild=20\n",
        l.lmtp_addr
    ));
    for (svc, port) in extra {
        out.push_str(&format!(
            "  {} cmd=\"{}\" listen=\"{}\" {}\n",
            svc.name,
            with_config(l, &svc.cmd, svc.pass_config),
            listen_value(l, svc, *port),
            svc.options
        ));
    }
    out.push_str("}\n\nEVENTS {\n}\n\nDAEMON {\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        let root = PathBuf::from("/tmp/sbx");
        Layout {
            servername: "sbx-1".into(),
            imapd_conf: root.join("etc/imapd.conf"),
            config_dir: root.join("conf"),
            partitions: vec![
                ("p1".into(), root.join("spool/p1")),
                ("p2".into(), root.join("spool/p2")),
            ],
            lock_dir: root.join("lock"),
            sieve_dir: root.join("sieve"),
            socket_dir: root.join("socket"),
            tmp_dir: root.join("tmp"),
            imap_addr: "127.0.0.1:40143".parse().unwrap(),
            lmtp_addr: "127.0.0.1:40024".parse().unwrap(),
            hashimapspool: true,
            unixhierarchysep: false,
            legacy_dirs: false,
            cyrvaultd_secret_file: Some(root.join("etc/cyrvaultd.secret")),
            extra: vec![
                ("Delete_Mode".into(), "immediate".into()),
                ("foo_bar".into(), "1".into()),
            ],
            bin_dir: PathBuf::from("/opt/c/bin"),
            root,
        }
    }

    #[test]
    fn imapd_conf_has_private_paths_and_overrides() {
        let text = imapd_conf(&layout());
        assert!(text.contains("configdirectory: /tmp/sbx/conf\n"));
        assert!(text.contains("defaultpartition: p1\n"));
        assert!(text.contains("partition-p2: /tmp/sbx/spool/p2\n"));
        assert!(text.contains("delete_mode: immediate\n"));
        assert!(!text.contains("delete_mode: delayed"));
        assert!(text.contains("foo_bar: 1\n"));
        assert!(!text.contains("/var/lib/cyrus") && !text.contains("/run/cyrus"));
        // Cyrus treats a duplicated key as fatal.
        let keys: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, _)| k)
            .collect();
        let mut dedup = keys.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(keys.len(), dedup.len());
    }

    #[test]
    fn every_service_gets_its_own_config_flag() {
        let l = layout();
        let mut svc = ServiceLine::tcp("cyrvault", "/usr/local/bin/cyrvaultd -v");
        svc.options = "prefork=1".into();
        let unix = ServiceLine {
            listen: Listen::Unix,
            ..ServiceLine::tcp("sock", "x")
        };
        let text = cyrus_conf(&l, &[(svc, Some(40555)), (unix, None)]);
        // Cyrus's own programs by full path, from the sandbox's installation.
        assert!(
            text.contains("recover cmd=\"/opt/c/bin/ctl_cyrusdb -C /tmp/sbx/etc/imapd.conf -r\"")
        );
        assert!(text.contains(
            "imap cmd=\"/opt/c/bin/imapd -C /tmp/sbx/etc/imapd.conf\" listen=\"127.0.0.1:40143\""
        ));
        assert!(text.contains(
            "lmtp cmd=\"/opt/c/bin/lmtpd -C /tmp/sbx/etc/imapd.conf -a\" listen=\"127.0.0.1:40024\""
        ));
        assert!(text.contains(
            "cyrvault cmd=\"/usr/local/bin/cyrvaultd -C /tmp/sbx/etc/imapd.conf -v\" listen=\"127.0.0.1:40555\" prefork=1"
        ));
        assert!(text.contains(
            "sock cmd=\"/opt/c/bin/x -C /tmp/sbx/etc/imapd.conf\" listen=\"/tmp/sbx/socket/sock.sock\""
        ));
    }
}
