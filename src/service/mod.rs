//! The lock-and-stream service: one session over any `Read`/`Write` pair.
//!
//! `ffi` (and so the `cyrvaultd` binary and Cyrus's own `service.c`) calls [`init`]
//! once per process and [`serve`] once per connection. This module never calls
//! `process::exit` and knows nothing about C types or master's file descriptors.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::Result;

pub mod auth;
pub mod master;
pub mod session;

pub use auth::{AuthPolicy, Secret};
pub use session::{
    Fetch, Folder, FolderEntry, FolderOpen, MetaFile, OpenFile, ServiceStats, Session,
    SessionConfig, Spool, UserFile,
};

/// What `init` learned once per process: the service name (Cyrus's `config_ident`,
/// used for `<service>_<option>` lookups), the imapd.conf in use, and whatever the
/// session needs from it.
#[derive(Debug, Clone)]
pub struct ServiceContext {
    /// `CYRUS_SERVICE` from master, or "cyrvaultd".
    pub service_name: String,
    /// The `-C` file, or None for /etc/imapd.conf.
    pub config_path: Option<PathBuf>,
}

/// What one session did, for the one syslog line per session.
#[derive(Debug, Clone, Default)]
pub struct SessionSummary {
    pub user: Option<String>,
    pub folders: u64,
    pub bytes_out: u64,
}

/// Set up the service from its arguments (what remains after master's runtime options
/// `-C -U -T -D -X` were taken out; `-C` is passed here as `config_path`).
pub fn init(
    service_name: &str,
    config_path: Option<PathBuf>,
    _args: &[OsString],
) -> Result<ServiceContext> {
    Ok(ServiceContext {
        service_name: service_name.to_string(),
        config_path,
    })
}

/// Serve one client on `input`/`output` until it quits or disconnects.
///
/// TEMPORARY (branch h-ffi only, replaced at merge by the real session): a minimal
/// PING/QUIT loop answering exactly as Cyrus's backupcyrusd does (no greeting;
/// `PING` -> `OK\nDONE PING\n`, `QUIT` -> `OK\n`), so the FFI and master tests
/// exercise real bytes.
pub fn serve(
    _ctx: &ServiceContext,
    input: &mut dyn Read,
    output: &mut dyn Write,
    _peer: Option<SocketAddr>,
) -> Result<SessionSummary> {
    use std::io::BufRead;
    let io_err = |op: &'static str| move |e| crate::Error::io(op, "client connection", e);
    let mut reader = std::io::BufReader::new(input);
    let mut line = Vec::new();
    let mut summary = SessionSummary::default();
    loop {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .map_err(io_err("reading"))?
            == 0
        {
            return Ok(summary);
        }
        let text = String::from_utf8_lossy(&line);
        let command = text.split_whitespace().next().unwrap_or("");
        let reply: &[u8] = if command.eq_ignore_ascii_case("PING") {
            b"OK\nDONE PING\n"
        } else if command.eq_ignore_ascii_case("QUIT") {
            b"OK\n"
        } else {
            b"NO unknown command\n"
        };
        output.write_all(reply).map_err(io_err("writing"))?;
        output.flush().map_err(io_err("writing"))?;
        summary.bytes_out += reply.len() as u64;
        if command.eq_ignore_ascii_case("QUIT") {
            return Ok(summary);
        }
    }
}
