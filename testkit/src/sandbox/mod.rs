//! A private, real Cyrus IMAP instance for tests and demos.
//!
//! [`Sandbox::start`] lays out a fresh directory tree (config dir, N spool partitions,
//! locks, sockets, logs) owned by `cyrus:mail`, writes `imapd.conf` and `cyrus.conf`
//! (`config.rs`) with every path inside that tree and every service on 127.0.0.1 on a
//! free high port, and runs Cyrus's own `master` in the foreground as a child in its
//! own process group. Dropping the sandbox (or [`Sandbox::stop`]) terminates that
//! group and removes the tree; a small watchdog process does the same if the test
//! process dies without unwinding. Several sandboxes run side by side.
//!
//! Helpers log in over IMAP (`imap::Client`), deliver over LMTP (`lmtp.rs`), run
//! Cyrus tools against the sandbox's config, and load generated mail (`mailgen.rs`,
//! `populate.rs`). See `doc/sandbox.md`.
#![forbid(unsafe_code)]

pub mod config;
pub mod corpus;
pub mod install;
pub mod lmtp;
pub mod mailgen;
pub mod populate;
mod process;
pub mod syslog;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::unistd::chown;

use cyrvault_host::error::{Error, IoContext, Result};
use cyrvault_host::imap::Client;

pub use config::{Listen, ServiceLine};
pub use install::CyrusInstall;
pub use mailgen::MailGen;
pub use populate::{
    History, PopulatePlan, Population, StoredMessage, fill_folder, make_history, populate,
};
use process::{cyrus_ids, pick_port, system_syslog_lines};
pub use process::{file_tail, port_open};

/// Where Debian installs Cyrus's programs (the system installation).
pub const CYRUS_BIN: &str = "/usr/lib/cyrus/bin";
/// The admin user every sandbox declares (`admins: cyrus`).
pub const ADMIN: &str = "cyrus";
/// Any password works (`sasl_pwcheck_method: alwaystrue`); this is the one we send.
pub const PASSWORD: &str = "sandbox";
/// How often start is retried when a chosen port was taken meanwhile.
const START_ATTEMPTS: usize = 4;

/// What kind of Cyrus to start.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// A word that goes into the directory name and servername (letters, digits, `-`).
    pub name_hint: String,
    /// Number of spool partitions `p1`..`pN` (at least 2); `p1` is the default.
    pub partitions: usize,
    /// Extra or overriding imapd.conf lines.
    pub extra_imapd_conf: Vec<(String, String)>,
    /// Extra SERVICES lines (e.g. the cyrvaultd service).
    pub extra_services: Vec<ServiceLine>,
    /// `hashimapspool` (Debian's default is on).
    pub hashimapspool: bool,
    /// `unixhierarchysep`: `/` instead of `.` as the hierarchy separator.
    pub unixhierarchysep: bool,
    /// `mailbox_legacy_dirs`: name-based spool directories instead of `uuid/`.
    pub legacy_dirs: bool,
    /// How long to wait for the first IMAP greeting.
    pub start_timeout: Duration,
    /// Configure cyrvaultd with the sandbox's random secret (`cyrvaultd_secret_file`;
    /// the default). Off: no such line, the service's closed default.
    pub cyrvaultd_secret: bool,
    /// Which Cyrus to run (None: the system's, installed with apt-get if missing).
    pub cyrus: Option<CyrusInstall>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            name_hint: "sbx".into(),
            partitions: 2,
            extra_imapd_conf: Vec::new(),
            extra_services: Vec::new(),
            hashimapspool: true,
            unixhierarchysep: false,
            legacy_dirs: false,
            start_timeout: Duration::from_secs(30),
            cyrvaultd_secret: true,
            cyrus: None,
        }
    }
}

/// A running private Cyrus. Dropping it stops Cyrus and removes `root`
/// (unless `CYRVAULT_KEEP_SANDBOX` is set).
pub struct Sandbox {
    /// The sandbox's directory; everything Cyrus writes is below it.
    pub root: PathBuf,
    /// The imapd.conf every Cyrus program here must be given with `-C`.
    pub imapd_conf: PathBuf,
    /// The cyrus.conf master runs.
    pub cyrus_conf: PathBuf,
    /// IMAP service address.
    pub imap_addr: SocketAddr,
    /// LMTP service address (`lmtpd -a`: preauthorised as `postman`).
    pub lmtp_addr: SocketAddr,
    /// TCP addresses of the extra services, by name.
    pub service_addrs: BTreeMap<String, SocketAddr>,
    /// UNIX socket paths of the extra services, by name.
    pub service_sockets: BTreeMap<String, PathBuf>,
    /// This instance's `servername` (also its syslog prefix).
    pub servername: String,
    /// Partitions (name, directory); the first is the default.
    pub partitions: Vec<(String, PathBuf)>,
    /// The options it was started with.
    pub options: SandboxOptions,
    /// The secret file `cyrvaultd_secret_file` names (random, owned by cyrus, mode
    /// 0600), unless `extra_imapd_conf` names another.
    pub cyrvaultd_secret_file: PathBuf,
    /// The Cyrus installation it runs.
    pub cyrus: CyrusInstall,
    master: Option<Child>,
    watchdog: Option<Child>,
    syslog: Option<syslog::SyslogSink>,
    postable: Mutex<HashSet<String>>,
    keep: bool,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn other(msg: String) -> Error {
    Error::other(msg)
}
/// A fresh random secret (64 hex digits) at `path`, owned by cyrus, mode 0600.
fn write_secret(path: &Path, uid: nix::unistd::Uid, gid: nix::unistd::Gid) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut raw = [0u8; 32];
    getrandom::getrandom(&mut raw).map_err(|e| other(format!("random secret: {e}")))?;
    fs::write(path, format!("{}\n", hex::encode(raw))).at("writing", path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).at("chmod", path)?;
    chown(path, Some(uid), Some(gid))
        .map_err(|e| other(format!("chown cyrus:mail {}: {e}", path.display())))
}

/// Removes a directory tree when dropped, unless emptied.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

enum Attempt {
    Ready(Box<Sandbox>),
    /// Failed in a way a new set of ports may fix.
    Retry(Error),
}

impl Sandbox {
    /// Start a private Cyrus. See the module documentation.
    pub fn start(opts: SandboxOptions) -> Result<Sandbox> {
        if opts.partitions < 2 {
            return Err(Error::refused(format!(
                "sandbox needs at least 2 partitions, got {}",
                opts.partitions
            )));
        }
        for svc in &opts.extra_services {
            if svc.name.is_empty() || !svc.name.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(Error::refused(format!(
                    "service name {:?} must be alphanumeric",
                    svc.name
                )));
            }
        }
        if opts.name_hint.is_empty()
            || !opts
                .name_hint
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(Error::refused(format!(
                "sandbox name hint {:?} must be letters, digits and '-'",
                opts.name_hint
            )));
        }
        let cyrus = match &opts.cyrus {
            Some(c) => c.clone(),
            None => CyrusInstall::system()?,
        };
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::refused(
                "the Cyrus sandbox must be started as root (its directories go to cyrus:mail \
                 and master switches to the cyrus user itself)"
                    .into(),
            ));
        }
        let mut last = None;
        for attempt in 1..=START_ATTEMPTS {
            match Self::try_start(&opts, &cyrus)? {
                Attempt::Ready(sb) => return Ok(*sb),
                Attempt::Retry(e) => {
                    log::warn!(target: "sandbox", "start attempt {attempt} failed, retrying: {e}");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| other("sandbox did not start".into())))
    }

    fn try_start(opts: &SandboxOptions, cyrus: &CyrusInstall) -> Result<Attempt> {
        let base = std::env::var_os("CYRVAULT_SANDBOX_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let servername = format!(
            "{}-{}-{seq}-{:x}",
            opts.name_hint,
            std::process::id(),
            nanos % 0xfffff
        );
        let root = base.join(format!("cyrvault-{servername}"));
        let root_text = root.display().to_string();
        // cyrus.conf values are double-quoted without escapes; imapd.conf values are trimmed.
        if root_text
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b == b'"' || b == b'\'' || b == b'#')
        {
            return Err(Error::refused(format!(
                "sandbox directory {root_text} must not contain spaces, quotes or '#'"
            )));
        }
        fs::create_dir_all(&base).at("creating", &base)?;
        fs::create_dir(&root).at("creating", &root)?;
        let keep = std::env::var_os("CYRVAULT_KEEP_SANDBOX").is_some();
        // Until the Sandbox value exists (its Drop cleans up), a failure removes the tree.
        let mut guard = RemoveOnDrop(Some(root.clone()));
        if keep {
            guard.0 = None;
        }

        let partitions: Vec<(String, PathBuf)> = (1..=opts.partitions)
            .map(|i| (format!("p{i}"), root.join("spool").join(format!("p{i}"))))
            .collect();
        let imap_port = pick_port()?;
        let lmtp_port = pick_port()?;
        let layout = config::Layout {
            root: root.clone(),
            servername: servername.clone(),
            imapd_conf: root.join("etc/imapd.conf"),
            config_dir: root.join("conf"),
            partitions: partitions.clone(),
            lock_dir: root.join("lock"),
            sieve_dir: root.join("sieve"),
            socket_dir: root.join("socket"),
            tmp_dir: root.join("tmp"),
            imap_addr: SocketAddr::from(([127, 0, 0, 1], imap_port)),
            lmtp_addr: SocketAddr::from(([127, 0, 0, 1], lmtp_port)),
            hashimapspool: opts.hashimapspool,
            unixhierarchysep: opts.unixhierarchysep,
            legacy_dirs: opts.legacy_dirs,
            cyrvaultd_secret_file: opts
                .cyrvaultd_secret
                .then(|| root.join("etc/cyrvaultd.secret")),
            extra: opts.extra_imapd_conf.clone(),
            bin_dir: cyrus.bin_dir.clone(),
        };
        let mut extra = Vec::new();
        let mut service_addrs = BTreeMap::new();
        let mut service_sockets = BTreeMap::new();
        for svc in &opts.extra_services {
            let port = match svc.listen {
                Listen::AutoTcp => Some(pick_port()?),
                Listen::Tcp(p) => Some(p),
                Listen::Unix => None,
            };
            match port {
                Some(p) => {
                    service_addrs.insert(svc.name.clone(), SocketAddr::from(([127, 0, 0, 1], p)));
                }
                None => {
                    service_sockets.insert(
                        svc.name.clone(),
                        config::unix_socket_path(&layout, &svc.name),
                    );
                }
            }
            extra.push((svc.clone(), port));
        }

        let (uid, gid) = cyrus_ids()?;
        let log_dir = root.join("log");
        let dirs = [
            root.join("etc"),
            layout.config_dir.clone(),
            // imapd/lmtpd bind their idle client sockets here whatever idlesocket says.
            layout.config_dir.join("socket"),
            // The database environment's recovery stamp lives in db/ (DBERROR without).
            layout.config_dir.join("db"),
            layout.config_dir.join("proc"),
            layout.config_dir.join("log"),
            layout.lock_dir.clone(),
            layout.sieve_dir.clone(),
            layout.socket_dir.clone(),
            layout.tmp_dir.clone(),
            log_dir.clone(),
            root.join("spool"),
            root.join("run"),
        ];
        for d in dirs.iter().chain(partitions.iter().map(|(_, d)| d)) {
            fs::create_dir_all(d).at("creating", d)?;
        }
        for d in std::iter::once(&root)
            .chain(dirs.iter())
            .chain(partitions.iter().map(|(_, d)| d))
        {
            chown(d, Some(uid), Some(gid))
                .map_err(|e| other(format!("chown cyrus:mail {}: {e}", d.display())))?;
        }
        let secret_file = root.join("etc/cyrvaultd.secret");
        write_secret(&secret_file, uid, gid)?;
        let cyrus_conf = root.join("etc/cyrus.conf");
        fs::write(&layout.imapd_conf, config::imapd_conf(&layout))
            .at("writing", &layout.imapd_conf)?;
        fs::write(&cyrus_conf, config::cyrus_conf(&layout, &extra)).at("writing", &cyrus_conf)?;

        let mut sb = Sandbox {
            root: root.clone(),
            imapd_conf: layout.imapd_conf.clone(),
            cyrus_conf,
            imap_addr: layout.imap_addr,
            lmtp_addr: layout.lmtp_addr,
            service_addrs,
            service_sockets,
            servername,
            partitions,
            cyrvaultd_secret_file: secret_file,
            options: opts.clone(),
            cyrus: cyrus.clone(),
            master: None,
            watchdog: None,
            syslog: None,
            postable: Mutex::new(HashSet::new()),
            keep,
        };
        // From here on, Drop cleans up whatever happens.
        guard.0 = None;
        if syslog::capture_possible() {
            let log = sb.root.join("log");
            sb.syslog = Some(syslog::SyslogSink::start(
                &log.join("syslog.sock"),
                &log.join("syslog"),
            )?);
        }
        sb.spawn_master()?;
        match sb.wait_ready(opts.start_timeout) {
            Ok(()) => Ok(Attempt::Ready(Box::new(sb))),
            Err((retry, e)) => {
                let err = other(format!(
                    "starting cyrus sandbox {}: {e}\n--- master log tail ---\n{}\n--- syslog ---\n{}",
                    sb.root.display(),
                    sb.master_log_tail(),
                    sb.syslog_tail(8192)
                ));
                drop(sb);
                if retry {
                    Ok(Attempt::Retry(err))
                } else {
                    Err(err)
                }
            }
        }
    }

    /// A connection logged in as the admin `cyrus`.
    pub fn admin(&self) -> Result<Client> {
        let mut c = Client::connect(self.imap_addr)?;
        c.login(ADMIN, PASSWORD)?;
        Ok(c)
    }

    /// A connection logged in as `user` (any password is accepted).
    pub fn login(&self, user: &str) -> Result<Client> {
        let mut c = Client::connect(self.imap_addr)?;
        c.login(user, PASSWORD)?;
        Ok(c)
    }

    /// A session of `user` opened with the admin's credentials (AUTHENTICATE PLAIN
    /// with authorization id `user`, Cyrus's admin proxy login).
    pub fn admin_as(&self, user: &str) -> Result<Client> {
        let mut c = Client::connect(self.imap_addr)?;
        c.authenticate_plain(user, ADMIN, PASSWORD)?;
        Ok(c)
    }

    /// The hierarchy separator of this instance.
    pub fn separator(&self) -> char {
        if self.options.unixhierarchysep {
            '/'
        } else {
            '.'
        }
    }

    /// The admin's name for a user's mailbox: `user.alice` or `user.alice.Work.Sub`.
    /// `folder` uses `/` between levels whatever the separator.
    pub fn mailbox_name(&self, user: &str, folder: Option<&str>) -> String {
        let sep = self.separator();
        let mut name = format!("user{sep}{user}");
        if let Some(f) = folder {
            for part in f.split('/') {
                name.push(sep);
                name.push_str(part);
            }
        }
        name
    }

    /// The user's own name for a folder: `INBOX` or `INBOX.Work.Sub`.
    pub fn user_mailbox_name(&self, folder: Option<&str>) -> String {
        let sep = self.separator();
        let mut name = String::from("INBOX");
        if let Some(f) = folder {
            for part in f.split('/') {
                name.push(sep);
                name.push_str(part);
            }
        }
        name
    }

    /// Create a user's INBOX, on `partition` (e.g. `"p2"`) or the default.
    pub fn create_user(&self, user: &str, partition: Option<&str>) -> Result<()> {
        self.create_mailbox(&self.mailbox_name(user, None), partition)
    }

    /// Create a user's folder (`folder` with `/` between levels), on `partition` or
    /// the parent's partition.
    pub fn create_folder(&self, user: &str, folder: &str, partition: Option<&str>) -> Result<()> {
        self.create_mailbox(&self.mailbox_name(user, Some(folder)), partition)
    }

    fn create_mailbox(&self, name: &str, partition: Option<&str>) -> Result<()> {
        let mut admin = self.admin()?;
        match partition {
            Some(p) => admin.create_on_partition(name, p)?,
            None => admin.create(name)?,
        }
        Ok(admin.logout()?)
    }

    /// APPEND a message to a user's folder (INBOX when `folder` is None), logged in as
    /// the user. Returns (uidvalidity, uid).
    pub fn append(
        &self,
        user: &str,
        folder: Option<&str>,
        flags: &[&str],
        internaldate: Option<i64>,
        message: &[u8],
    ) -> Result<(u32, u32)> {
        let mut c = self.login(user)?;
        let mailbox = self.user_mailbox_name(folder);
        let r = c.append(&mailbox, flags, internaldate, message)?;
        c.logout()?;
        r.ok_or_else(|| other(format!("APPEND to {mailbox} for {user} gave no APPENDUID")))
    }

    /// Deliver over LMTP to `user` (INBOX) or `user+folder`. For a folder, `anyone`
    /// is first given the `p` (post) right on it, or Cyrus silently delivers to INBOX
    /// instead (verified on 3.6.1: `lmtpd -a` preauthenticates as `postman`, but a
    /// `postman p` ACL entry is not enough).
    pub fn deliver_lmtp(&self, user: &str, folder: Option<&str>, message: &[u8]) -> Result<()> {
        let rcpt = self.lmtp_recipient(user, folder).ok_or_else(|| {
            Error::refused(format!(
                "folder {folder:?} of {user} cannot be addressed over LMTP (spaces, '&' or 8-bit)"
            ))
        })?;
        if let Some(f) = folder {
            self.ensure_postable(&self.mailbox_name(user, Some(f)))?;
        }
        lmtp::deliver(self.lmtp_addr, &self.servername, &[&rcpt], message)
    }

    /// The LMTP local part for a user's folder (`alice+Work.Sub`), or `None` when
    /// lmtpd cannot map such a name back to the folder (see [`lmtp::addressable`]).
    pub fn lmtp_recipient(&self, user: &str, folder: Option<&str>) -> Option<String> {
        let rcpt = match folder {
            Some(f) => {
                let sub: Vec<&str> = f.split('/').collect();
                format!("{user}+{}", sub.join(&self.separator().to_string()))
            }
            None => user.to_string(),
        };
        lmtp::addressable(&rcpt).then_some(rcpt)
    }

    fn ensure_postable(&self, mailbox: &str) -> Result<()> {
        let mut set = self.postable.lock().unwrap_or_else(|e| e.into_inner());
        if set.contains(mailbox) {
            return Ok(());
        }
        let mut admin = self.admin()?;
        admin.setacl(mailbox, "anyone", "p")?;
        admin.logout()?;
        set.insert(mailbox.to_string());
        Ok(())
    }

    /// Run a Cyrus tool of this sandbox's installation with `-C <imapd.conf>`
    /// first. Tools started as root switch to the cyrus user themselves
    /// (`cyrus_init`).
    pub fn tool(&self, name: &str, args: &[&str]) -> Result<Output> {
        let bin = self.cyrus.program(name);
        Ok(self
            .cyrus_command(&bin)
            .arg("-C")
            .arg(&self.imapd_conf)
            .args(args)
            .env_remove("CYRUS_PREFIX")
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()
            .at("running", &bin)?)
    }

    /// Run a tool and return its stdout; a non-zero exit is an error with stderr.
    pub fn tool_ok(&self, name: &str, args: &[&str]) -> Result<String> {
        let out = self.tool(name, args)?;
        if !out.status.success() {
            return Err(other(format!(
                "{name} {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `mbexamine <mailbox>` output (admin mailbox name, e.g. `user.alice`).
    pub fn mbexamine(&self, mailbox: &str) -> Result<String> {
        self.tool_ok("mbexamine", &[mailbox])
    }

    /// `ctl_mboxlist -d` parsed: an object keyed by internal mailbox name.
    pub fn ctl_mboxlist_dump(&self) -> Result<serde_json::Value> {
        let text = self.tool_ok("ctl_mboxlist", &["-d"])?;
        serde_json::from_str(&text)
            .map_err(|e| other(format!("ctl_mboxlist -d printed invalid JSON: {e}")))
    }

    /// `mbpath <mailbox>`: the data directory of a mailbox.
    pub fn mbpath(&self, mailbox: &str) -> Result<PathBuf> {
        Ok(PathBuf::from(self.tool_ok("mbpath", &[mailbox])?.trim()))
    }

    /// A `Command` for a Cyrus program of this sandbox: inside the private `/dev/log`
    /// namespace when syslog is captured (see `syslog.rs`), else plain; with the
    /// installation's `LD_LIBRARY_PATH`.
    pub fn cyrus_command(&self, program: &Path) -> Command {
        let mut c = if self.syslog.is_some() {
            syslog::wrapped(&self.root, program)
        } else {
            Command::new(program)
        };
        self.cyrus.set_env(&mut c);
        c
    }

    /// Whether Cyrus's syslog messages are captured into `log/syslog`.
    pub fn syslog_captured(&self) -> bool {
        self.syslog.is_some()
    }

    /// Everything Cyrus logged to syslog so far (captured), or the system syslog lines
    /// that mention this sandbox's servername (not captured; often none).
    pub fn syslog(&self) -> String {
        match &self.syslog {
            Some(sink) => fs::read_to_string(&sink.path).unwrap_or_default(),
            None => system_syslog_lines(&self.servername),
        }
    }

    /// The last `max` bytes of [`Sandbox::syslog`].
    pub fn syslog_tail(&self, max: u64) -> String {
        match &self.syslog {
            Some(sink) => file_tail(&sink.path, max),
            None => system_syslog_lines(&self.servername),
        }
    }

    /// The directory of partition `name` (`p1`, `p2`, ...).
    pub fn partition_dir(&self, name: &str) -> Option<&Path> {
        self.partitions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.as_path())
    }

    /// Cyrus's `configdirectory`.
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("conf")
    }

    /// The sandbox's cyrvaultd secret, as a client loads it (checked like
    /// `--secret-file`).
    pub fn cyrvaultd_secret(&self) -> Result<cyrvault::secret::Secret> {
        cyrvault::secret::Secret::load(&self.cyrvaultd_secret_file, "sandbox cyrvaultd_secret_file")
            .map_err(Into::into)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::warn!(target: "sandbox", "stopping {}: {e}", self.servername);
        }
        // After master: its last words are still read.
        self.syslog = None;
        if self.keep {
            // The one place the library writes to stderr: the user asked to keep the
            // sandbox for debugging and needs to know where it is.
            eprintln!("cyrvault sandbox kept at {}", self.root.display());
        } else if let Err(e) = fs::remove_dir_all(&self.root) {
            log::warn!(target: "sandbox", "removing {}: {e}", self.root.display());
        }
    }
}
