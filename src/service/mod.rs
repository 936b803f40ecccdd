//! The lock-and-stream service: one session over any `Read`/`Write` pair.
//!
//! `ffi` (and so the `cyrvaultd` binary and Cyrus's own `service.c`) calls [`init`]
//! once per process and [`serve`] once per connection. This module never calls
//! `process::exit` and knows nothing about C types or master's file descriptors.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::cyrus::config::{self, ConfigError, ImapdConf};
use crate::tls::{Shared, Stream};
use crate::{Error, Result};

pub mod access;
pub mod allow;
pub mod auth;
pub mod backend;
pub mod channel;
pub mod counters;
pub mod master;
pub mod peers;
pub mod refusal_log;
pub mod session;
pub mod shutdown;
pub mod signals;
pub mod stdio;
pub mod transport;

pub use crate::secret::Secret;
pub use access::AccessPolicy;
pub use session::{
    DeletedAs, Fetch, Folder, FolderEntry, FolderOpen, MetaFile, OpenFile, ServiceStats, Session,
    SessionConfig, SharedEntry, Spool, UserFile,
};

/// What `init` learned once per process: the configuration, the spool and the
/// session settings. Built once per process (`service_init`), used by every session.
pub struct ServiceContext {
    /// `CYRUS_SERVICE` from master, or "cyrvaultd" (Cyrus's `config_ident`: the
    /// prefix of service-specific imapd.conf options).
    pub service_name: String,
    /// The `-C` file, or None for /etc/imapd.conf.
    pub config_path: Option<PathBuf>,
    /// Session settings (servername, access policy, shutdown file).
    pub session: SessionConfig,
    /// `cyrvaultd_timeout`: the inactivity timeout of a connection.
    pub timeout: Duration,
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
    /// Request lines read.
    pub requests: u64,
    /// Requests the service failed (`NO internal error`: the spool could not be
    /// read).
    pub failed: u64,
    /// Requests refused as the client's fault (syntax, bounds, names, wrong slot,
    /// authentication).
    pub refused: u64,
}

impl SessionSummary {
    /// The outcome word of the session's log line: `ok` only when no request
    /// failed or was refused.
    pub fn outcome(&self) -> String {
        match (self.failed, self.refused) {
            (0, 0) => "ok".into(),
            (f, 0) => format!("failed ({f} of {} requests)", self.requests),
            (0, r) => format!("refused ({r} of {} requests)", self.requests),
            (f, r) => format!(
                "failed ({f} failed, {r} refused of {} requests)",
                self.requests
            ),
        }
    }
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
/// imapd.conf as Cyrus does for this service name, load and check the secret files
/// (a file others can read is refused: the service does not start), the TLS
/// certificate, the timeouts and limits, parse the allowlist, open the per-address
/// table and the spool. Never exits. doc/security.md lists every option.
pub fn init(
    service_name: &str,
    config_path: Option<PathBuf>,
    _args: &[OsString],
) -> Result<ServiceContext> {
    let conf = config::load(config_path.as_deref(), Some(service_name))?;
    let file = conf.file().to_string();
    let mut secrets = Vec::new();
    for name in ["secret_file", "secret_file_next"] {
        if let Some(p) = option(&conf, name) {
            secrets.push(Secret::load(Path::new(p), &format!("cyrvaultd_{name}"))?);
        }
    }
    let allow_unauthenticated = conf.get_switch("cyrvaultd_allow_unauthenticated", false)?;
    let allow = allow::AllowList::parse(
        option(&conf, "allow").unwrap_or(""),
        &file,
        "cyrvaultd_allow",
    )?;
    let seconds = |name: &str, default: u64| -> Result<Duration> {
        let v = conf.get_duration(name, 's', default as i64)?;
        u64::try_from(v)
            .ok()
            .filter(|v| *v > 0)
            .map(Duration::from_secs)
            .ok_or_else(|| {
                Error::Config(ConfigError::new(
                    &file,
                    name,
                    "expected a number of seconds > 0",
                ))
            })
    };
    let lock_timeout = seconds("cyrvaultd_lock_timeout", DEFAULT_LOCK_TIMEOUT as u64)?;
    let timeout = seconds("cyrvaultd_timeout", transport::DEFAULT_TIMEOUT)?;
    let auth_timeout = seconds("cyrvaultd_auth_timeout", transport::DEFAULT_AUTH_TIMEOUT)?;
    let peer_limit = conf.get_int("cyrvaultd_peer_limit", i64::from(peers::DEFAULT_LIMIT))?;
    let peer_limit = u32::try_from(peer_limit)
        .ok()
        .filter(|n| (1..=peers::MAX_LIMIT).contains(n))
        .ok_or_else(|| {
            Error::Config(ConfigError::new(
                &file,
                "cyrvaultd_peer_limit",
                format!("expected 1 to {}, got {peer_limit}", peers::MAX_LIMIT),
            ))
        })?;
    // Cyrus's own TLS options; `<service>_tls_server_cert` overrides them
    let tls = match conf.get("tls_server_cert") {
        None => None,
        Some(cert) => {
            let key = conf.get("tls_server_key").unwrap_or(cert);
            Some(crate::tls::server::config(
                &file,
                Path::new(cert),
                "tls_server_cert",
                Path::new(key),
                "tls_server_key",
            )?)
        }
    };
    let config_dir = conf.configdirectory().to_path_buf();
    // with the service open to all, per-address limits would only hurt the
    // stock client's parallel sessions
    let peer_table = if allow_unauthenticated {
        None
    } else {
        match peers::PeerTable::open(&config_dir, service_name, peer_limit) {
            Ok(t) => Some(Arc::new(t)),
            Err(e) => {
                log::error!(
                    target: "cyrvault::service",
                    "{}/socket/{service_name}-peers: {e}: no per-address limits",
                    config_dir.display()
                );
                None
            }
        }
    };
    if secrets.is_empty() && !allow_unauthenticated {
        log::error!(
            target: "cyrvault::service",
            "no cyrvaultd_secret_file in {file}: every request is refused; configure a secret (doc/security.md), or cyrvaultd_allow_unauthenticated: yes for Cyrus 3.13's stock Perl client on a trusted network"
        );
    } else if allow_unauthenticated {
        log::warn!(
            target: "cyrvault::service",
            "cyrvaultd_allow_unauthenticated in {file}: anyone who can connect reads every mailbox"
        );
    }
    let access = AccessPolicy {
        secrets,
        allow_unauthenticated,
        tls,
        peers: peer_table,
        auth_timeout,
    };
    if access.tls.is_none() && !access.secrets.is_empty() {
        log::info!(
            target: "cyrvault::service",
            "no tls_server_cert: sessions are authenticated but not encrypted"
        );
    }
    let mut session = SessionConfig::new(conf.servername().as_bytes(), access);
    session.shutdown = Some(shutdown::ShutdownFile::new(&config_dir, service_name));
    raise_fd_limit();
    let socket_dir = conf.configdirectory().join("socket");
    let info_conf = conf.clone();
    let spool = crate::spool::Spool::open(conf, lock_timeout)?;
    // Which Cyrus this is decides how the user namespace lock is named: say it once.
    spool.detection().log();
    stats()
        .tally
        .set_info(cyrus_info(&info_conf, spool.detection()));
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
        timeout,
        allow,
        spool: backend::CyrusSpool::new(spool, backend::FD_BUDGET),
    })
}

/// What `STATUS` tells about the Cyrus this service reads: its release as detected
/// at start (`spool::detect`), where that came from, the conventions that follow, and
/// the imapd.conf settings that shape names and paths. `(key, token)`.
fn cyrus_info(conf: &ImapdConf, d: &crate::spool::Detection) -> Vec<(String, String)> {
    use crate::spool::detect::Source as DetectionSource;
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    let version = d
        .version
        .as_ref()
        .map_or_else(|| "unknown".to_string(), |v| v.to_string());
    let source = match &d.source {
        DetectionSource::Master(_) => "master",
        DetectionSource::MailboxesDb => "mailboxes.db",
        DetectionSource::Unknown => "unknown",
    };
    let support = match d.support {
        Some(s) => format!("{s:?}").to_ascii_lowercase(),
        None => "unknown".into(),
    };
    vec![
        ("cyrus_version".into(), version),
        ("cyrus_version_source".into(), source.into()),
        ("cyrus_support".into(), support),
        (
            "cyrus_user_lock".into(),
            d.conventions.user_lock.example().to_string(),
        ),
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

/// User + system CPU time of this process so far, in microseconds (a session's
/// cost is the difference; the service serves one session at a time).
fn cpu_micros() -> u64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0, |u| {
        let us = |t: nix::sys::time::TimeVal| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                + u64::try_from(t.tv_usec()).unwrap_or(0)
        };
        us(u.user_time()) + us(u.system_time())
    })
}

/// Peak resident set size of this process so far (`ru_maxrss`, KiB on Linux).
fn peak_rss_kb() -> u64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0, |u| u64::try_from(u.max_rss()).unwrap_or(0))
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

/// Serve one client on `input`/`output` (the socket's descriptors) until it quits
/// or disconnects or a time limit ends it, and log one line for the session
/// (client, user, folders, bytes, duration, max lock hold). `listener` is the
/// service's listening socket when known: an unauthenticated client gives its
/// process up when others wait there (service::transport).
pub fn serve<R, W>(
    ctx: &ServiceContext,
    input: R,
    mut output: W,
    peer: Option<SocketAddr>,
    listener: Option<BorrowedFd<'_>>,
) -> Result<SessionSummary>
where
    R: Read + AsFd,
    W: Write + AsFd,
{
    let peer_text = peer
        .map(|p| p.to_string())
        .unwrap_or_else(|| "local".to_string());
    if let Some(p) = peer
        && !ctx.allow.allows(p.ip())
    {
        if refusal_log::allow() {
            log::warn!(target: "cyrvault::service", "refused connection from {peer_text}: not in cyrvaultd_allow");
        }
        stats().tally.refused();
        let _ = output.write_all(b"NO access denied\n");
        let _ = output.flush();
        return Err(Error::Refused(format!(
            "{peer_text} is not in cyrvaultd_allow"
        )));
    }
    // Answers are whole (one flush per batch of requests, session.rs): Nagle could
    // only hold one back until the client's delayed ACK, ~40 ms on a connection that
    // has gone quiet. Cyrus's master does not set it on the sockets it passes;
    // its own services do (`tcp_disable_nagle(1)` in sync_server.c, lib/util.c).
    // Not a TCP socket (a UNIX socket, a pipe under `-X`): nothing to do.
    let _ = nix::sys::socket::setsockopt(
        &output.as_fd(),
        nix::sys::socket::sockopt::TcpNoDelay,
        &true,
    );
    let started = Instant::now();
    let cpu_before = cpu_micros();
    let before = ctx.spool.spool().lock_stats();
    let mut cfg = ctx.session.clone();
    cfg.peer = peer_text.clone();
    cfg.peer_addr = peer.map(|p| p.ip());
    cfg.deadline = transport::Deadline::default();
    let timed = transport::Timed::new(input, output, Some(ctx.timeout), cfg.deadline.clone())
        .yield_to(listener);
    let shared = Shared::new(Stream::plain(timed));
    stats().tally.session_started();
    let result = Session::new(&cfg, &ctx.spool, stats()).run_channel(&shared);
    shared.lock().close_notify();
    if result.is_err() {
        stats().tally.error();
    }
    stats().tally.session_ended();
    let after = ctx.spool.spool().lock_stats();
    let (summary, hold, outcome) = match &result {
        Ok(s) => (s.clone(), s.max_lock_hold_us.to_string(), s.outcome()),
        // the session's own figures are lost with the error: report the process's
        Err(e) => (
            SessionSummary::default(),
            format!("{}(process)", after.max_held.as_micros()),
            format!("error: {e}"),
        ),
    };
    log::info!(
        target: "cyrvault::service",
        "session client={peer_text} user={} folders={} requests={} failed={} refused={} bytes={} duration_ms={} cpu_us={} maxrss_kb={} locks={} max_lock_hold_us={hold} {outcome}",
        summary.user.as_deref().unwrap_or("-"),
        summary.folders,
        summary.requests,
        summary.failed,
        summary.refused,
        summary.bytes_out,
        started.elapsed().as_millis(),
        cpu_micros().saturating_sub(cpu_before),
        peak_rss_kb(),
        after.count.saturating_sub(before.count),
    );
    result
}
