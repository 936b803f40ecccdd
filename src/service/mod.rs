//! The lock-and-stream service: one session over any `Read`/`Write` pair.
//!
//! `ffi` (and so the `cyrvaultd` binary and Cyrus's own `service.c`) calls [`init`]
//! once per process and [`serve`] once per connection. This module never calls
//! `process::exit` and knows nothing about C types or master's file descriptors.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::cyrus::config::{self, ImapdConf};
use crate::{Error, Result};

pub mod allow;
pub mod auth;
pub mod backend;
pub mod counters;
pub mod master;
pub mod session;

pub use auth::{AuthPolicy, Secret};
pub use session::{
    Fetch, Folder, FolderEntry, FolderOpen, MetaFile, OpenFile, ServiceStats, Session,
    SessionConfig, Spool, UserFile,
};

/// What `init` learned once per process: the configuration, the spool and the
/// session settings. Built once per process (`service_init`), used by every session.
pub struct ServiceContext {
    /// `CYRUS_SERVICE` from master, or "cyrvaultd" (Cyrus's `config_ident`: the
    /// prefix of service-specific imapd.conf options).
    pub service_name: String,
    /// The `-C` file, or None for /etc/imapd.conf.
    pub config_path: Option<PathBuf>,
    /// Session settings (servername, secret, auth policy).
    pub session: SessionConfig,
    /// Addresses allowed to connect (`cyrvaultd_allow`).
    pub allow: allow::AllowList,
    /// The Cyrus spool this service reads.
    pub spool: backend::CyrusSpool,
}

impl std::fmt::Debug for ServiceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceContext")
            .field("service_name", &self.service_name)
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

/// What one session did, for the one syslog line per session.
#[derive(Debug, Clone, Default)]
pub struct SessionSummary {
    pub user: Option<String>,
    pub folders: u64,
    pub bytes_out: u64,
    /// Longest namespace+index lock hold of this session (what STATUS
    /// `lock_hold_max_us` reports for the process), microseconds.
    pub max_lock_hold_us: u64,
}

/// Default seconds to wait for a Cyrus lock before the request fails.
pub const DEFAULT_LOCK_TIMEOUT: i64 = 10;

/// Counters shared by every session of this process (`STATUS`).
pub fn stats() -> &'static ServiceStats {
    static STATS: OnceLock<ServiceStats> = OnceLock::new();
    STATS.get_or_init(ServiceStats::default)
}

/// The value of our own option `cyrvaultd_<name>`.
fn option<'c>(conf: &'c ImapdConf, name: &str) -> Option<&'c str> {
    conf.get(&format!("cyrvaultd_{name}"))
}

/// Set up the service from its arguments (what remains after master's runtime options
/// `-C -U -T -D -X` were taken out; `-C` is passed here as `config_path`): read
/// imapd.conf as Cyrus does for this service name, load and check the secret file
/// (a file others can read is refused: the service does not start), parse the
/// allowlist, open the spool. Never exits.
pub fn init(
    service_name: &str,
    config_path: Option<PathBuf>,
    _args: &[OsString],
) -> Result<ServiceContext> {
    let conf = config::load(config_path.as_deref(), Some(service_name))?;
    let file = conf.file().to_string();
    let secret = match option(&conf, "secret_file") {
        Some(p) => Some(Secret::load(
            std::path::Path::new(p),
            "cyrvaultd_secret_file",
        )?),
        None => None,
    };
    let allow = allow::AllowList::parse(
        option(&conf, "allow").unwrap_or(""),
        &file,
        "cyrvaultd_allow",
    )?;
    let timeout = match option(&conf, "lock_timeout") {
        None => DEFAULT_LOCK_TIMEOUT,
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| {
                Error::Config(config::ConfigError::new(
                    &file,
                    "cyrvaultd_lock_timeout",
                    format!("expected a number of seconds > 0, got {v:?}"),
                ))
            })?,
    };
    if secret.is_none() {
        log::warn!(
            target: "cyrvault::service",
            "no cyrvaultd_secret_file in {file}: the service answers anyone who can connect (base backupcyrusd protocol, no authentication)"
        );
    }
    let session = SessionConfig {
        servername: conf.servername().into_bytes(),
        secret,
        auth_policy: AuthPolicy::default(),
        buffer_budget: session::BUFFER_BUDGET,
        peer: String::new(),
    };
    raise_fd_limit();
    stats().tally.set_info(cyrus_info(&conf));
    let socket_dir = conf.configdirectory().join("socket");
    let spool = crate::spool::Spool::open(conf, Duration::from_secs(timeout as u64))?;
    // service-wide counters across master's children: without the file (no socket
    // directory: not under master) STATUS reports this process's figures only
    match counters::SharedCounters::open(&socket_dir, service_name, spool.locker().owner()) {
        Ok(c) => stats().tally.attach(c, spool.locker().stats_handle()),
        Err(e) => log::warn!(
            target: "cyrvault::service",
            "service-wide counters off (STATUS reports this process only): {e}"
        ),
    }
    Ok(ServiceContext {
        service_name: service_name.to_string(),
        config_path,
        session,
        allow,
        spool: backend::CyrusSpool::new(spool, backend::FD_BUDGET),
    })
}

/// What `STATUS` tells about the Cyrus this service reads: its version (unknown
/// until the service detects it) and the imapd.conf conventions that shape names
/// and paths. `(key, token)`.
fn cyrus_info(conf: &ImapdConf) -> Vec<(String, String)> {
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    vec![
        ("cyrus_version".into(), "unknown".into()),
        (
            "cyrus_virtdomains".into(),
            format!("{:?}", conf.virtdomains()).to_ascii_lowercase(),
        ),
        (
            "cyrus_unixhierarchysep".into(),
            yes(conf.unixhierarchysep()),
        ),
        ("cyrus_altnamespace".into(), yes(conf.altnamespace())),
        (
            "cyrus_mailbox_layout".into(),
            if conf.mailbox_legacy_dirs() {
                "legacy"
            } else {
                "uuid"
            }
            .into(),
        ),
        ("cyrus_hashimapspool".into(), yes(conf.hashimapspool())),
        ("cyrus_fulldirhash".into(), yes(conf.fulldirhash())),
        (
            "cyrus_mboxlist_db".into(),
            conf.mboxlist_db().unwrap_or("unknown").to_string(),
        ),
        (
            "cyrus_partitions".into(),
            conf.partitions().len().to_string(),
        ),
    ]
}

/// FDATA keeps message descriptors open after the locks are gone: give the
/// process as many as its hard limit allows.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Serve one client on `input`/`output` until it quits or disconnects, and log
/// one line for the session (client, user, folders, bytes, duration, max lock hold).
pub fn serve(
    ctx: &ServiceContext,
    input: &mut dyn Read,
    output: &mut dyn Write,
    peer: Option<SocketAddr>,
) -> Result<SessionSummary> {
    let peer_text = peer
        .map(|p| p.to_string())
        .unwrap_or_else(|| "local".to_string());
    if let Some(p) = peer
        && !ctx.allow.allows(p.ip())
    {
        log::warn!(target: "cyrvault::service", "refused connection from {peer_text}: not in cyrvaultd_allow");
        stats().tally.refused();
        let _ = output.write_all(b"NO access denied\n");
        let _ = output.flush();
        return Err(Error::Refused(format!(
            "{peer_text} is not in cyrvaultd_allow"
        )));
    }
    let started = Instant::now();
    let before = ctx.spool.spool().lock_stats();
    let mut cfg = ctx.session.clone();
    cfg.peer = peer_text.clone();
    // Replies are assembled in a buffer and flushed once per command (the session
    // flushes): writing each reply line with its own write(2) on a TCP socket meets
    // Nagle and the client's delayed ACK, a 40 ms stall per command.
    let mut output = std::io::BufWriter::with_capacity(64 * 1024, output);
    stats().tally.session_started();
    let result = Session::new(&cfg, &ctx.spool, stats()).run(input, &mut output);
    let _ = output.flush();
    if result.is_err() {
        stats().tally.error();
    }
    stats().tally.session_ended();
    let after = ctx.spool.spool().lock_stats();
    let (summary, hold, outcome) = match &result {
        Ok(s) => (s.clone(), s.max_lock_hold_us.to_string(), "ok".to_string()),
        // the session's own figures are lost with the error: report the process's
        Err(e) => (
            SessionSummary::default(),
            format!("{}(process)", after.max_held.as_micros()),
            format!("error: {e}"),
        ),
    };
    log::info!(
        target: "cyrvault::service",
        "session client={peer_text} user={} folders={} bytes={} duration_ms={} locks={} max_lock_hold_us={hold} {outcome}",
        summary.user.as_deref().unwrap_or("-"),
        summary.folders,
        summary.bytes_out,
        started.elapsed().as_millis(),
        after.count.saturating_sub(before.count),
    );
    result
}
