//! One connection to the service a backup pulls from: `cyrvaultd` (extensions, AUTH)
//! or a stock `backupcyrusd` (base protocol, no authentication).
//!
//! The slot every command carries must be the server's `servername`. If the caller does
//! not know it, [`Server::connect`] learns it: both servers answer a command with a
//! wrong slot `NO iam <servername>` (doc/protocol.md 1.3), and `CAPABILITY` is allowed
//! before authentication, so one probe line on the fresh connection tells it.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::protocol::ProtocolError;
use crate::protocol::client::{Capability, Client};

/// The slot sent by the servername probe: no real servername looks like it.
const PROBE_SLOT: &str = "cyrvault-probe-servername";

/// How to reach and talk to a server.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// The server's `servername` (the slot); `None`: learn it from the server.
    pub servername: Option<String>,
    /// The shared secret for `AUTH` (cyrvaultd with `cyrvaultd_secret_file`).
    pub secret: Option<Vec<u8>>,
    /// Speak only the base protocol (what a stock `backupcyrusd` understands): no
    /// `CAPABILITY`, no `AUTH`, no `SNAPSHOT`.
    pub base_only: bool,
    /// Socket read/write timeout; `None`: 600 s (the server's own idle timeout).
    pub timeout: Option<Duration>,
}

/// How to open another connection to a server already connected to (`Send`, for the
/// threads of parallel jobs).
#[derive(Debug, Clone)]
pub struct Connector {
    addr: String,
    opts: ConnectOptions,
}

impl Connector {
    /// Connect and authenticate.
    pub fn connect(&self) -> Result<Server> {
        Server::connect(&self.addr, &self.opts)
    }
}

/// A connected, authenticated session.
pub struct Server {
    pub(crate) client: Client<TcpStream, TcpStream>,
    /// `host:port` as given.
    pub addr: String,
    /// The slot in use.
    pub servername: String,
    /// The announced extensions; `None` on the base protocol.
    pub extensions: Option<Vec<Capability>>,
    opts: ConnectOptions,
}

fn proto(addr: &str, what: &str, e: ProtocolError) -> Error {
    e.in_context(&format!("{addr}: {what}"))
}

impl Server {
    /// Connect to `addr` (`host:port`), learn the servername if needed, probe for the
    /// extensions (unless `base_only`) and authenticate when the server asks for it.
    pub fn connect(addr: &str, opts: &ConnectOptions) -> Result<Server> {
        let stream = open(addr, opts)?;
        let servername = match &opts.servername {
            Some(s) => s.clone(),
            None => probe_servername(addr, &stream)?,
        };
        let reader = stream
            .try_clone()
            .map_err(|e| Error::Protocol(format!("{addr}: cloning the socket: {e}")))?;
        let mut client = Client::new(reader, stream, servername.as_bytes());
        let mut extensions = None;
        if !opts.base_only {
            extensions = client
                .capabilities()
                .map_err(|e| proto(addr, "CAPABILITY", e))?;
            let auth = extensions
                .as_ref()
                .is_some_and(|c| c.iter().any(|(n, _)| n == b"AUTH"));
            match (&opts.secret, auth) {
                (Some(secret), true) => client
                    .authenticate(secret)
                    .map_err(|e| proto(addr, "AUTH", e))?,
                (None, true) => {
                    return Err(Error::Refused(format!(
                        "{addr} requires authentication: give the shared secret with --secret-file"
                    )));
                }
                (Some(_), false) => log::warn!(
                    target: "cyrvault::backup",
                    "{addr} does not offer AUTH: the secret is not used"
                ),
                (None, false) => {}
            }
        }
        Ok(Server {
            client,
            addr: addr.to_string(),
            servername,
            extensions,
            opts: opts.clone(),
        })
    }

    /// Drop this connection and open a new one with the same options and slot (after
    /// an error that may have left the protocol stream out of step).
    pub fn reconnect(&mut self) -> Result<()> {
        *self = self.connector().connect()?;
        Ok(())
    }

    /// What it takes to open more connections like this one (same address, options
    /// and slot, no probe): one per parallel job.
    pub fn connector(&self) -> Connector {
        Connector {
            addr: self.addr.clone(),
            opts: ConnectOptions {
                servername: Some(self.servername.clone()),
                ..self.opts.clone()
            },
        }
    }

    /// Whether the server announced the extension `name` (`SNAPSHOT`, `STATUS`, ...).
    pub fn has(&self, name: &str) -> bool {
        self.extensions
            .as_ref()
            .is_some_and(|c| c.iter().any(|(n, _)| n == name.as_bytes()))
    }

    /// `USERS`: every user the server holds.
    pub fn users(&mut self) -> Result<Vec<String>> {
        let users = self
            .client
            .users()
            .map_err(|e| proto(&self.addr, "USERS", e))?;
        Ok(users
            .into_iter()
            .map(|u| String::from_utf8_lossy(&u).into_owned())
            .collect())
    }

    /// Extension `SHARED`: every top-level shared hierarchy as `(owner id,
    /// partition)`, the owner id (`%shared`) backed up like a user. Empty, with a
    /// warning, from a server without the extension (a stock `backupcyrusd` cannot
    /// list shared mailboxes).
    pub fn shared_owners(&mut self) -> Result<Vec<(String, String)>> {
        if !self.has("SHARED") {
            log::warn!(
                target: "cyrvault::backup",
                "{}: the server does not offer SHARED (a stock backupcyrusd, or an older \
                 cyrvaultd): shared mailboxes are not listed and not backed up",
                self.addr
            );
            return Ok(Vec::new());
        }
        let all = self
            .client
            .shared()
            .map_err(|e| proto(&self.addr, "SHARED", e))?;
        Ok(all
            .into_iter()
            .map(|s| {
                (
                    String::from_utf8_lossy(&s.owner).into_owned(),
                    String::from_utf8_lossy(&s.partition).into_owned(),
                )
            })
            .collect())
    }

    /// The slot as bytes (for requests built by the caller).
    pub(crate) fn slot(&self) -> Vec<u8> {
        self.servername.as_bytes().to_vec()
    }
}

fn open(addr: &str, opts: &ConnectOptions) -> Result<TcpStream> {
    let fail = |e: std::io::Error| Error::Protocol(format!("connecting to {addr}: {e}"));
    let sa = addr
        .to_socket_addrs()
        .map_err(fail)?
        .next()
        .ok_or_else(|| Error::Refused(format!("{addr}: no address to connect to")))?;
    let timeout = opts.timeout.unwrap_or(Duration::from_secs(600));
    let s = TcpStream::connect_timeout(&sa, Duration::from_secs(30)).map_err(fail)?;
    s.set_read_timeout(Some(timeout)).map_err(fail)?;
    s.set_write_timeout(Some(timeout)).map_err(fail)?;
    s.set_nodelay(true).map_err(fail)?;
    Ok(s)
}

/// Send `CAPABILITY <probe>` and read the one answer line byte by byte (so nothing is
/// buffered past it): `NO iam <servername>` names the slot.
fn probe_servername(addr: &str, stream: &TcpStream) -> Result<String> {
    let mut s = stream;
    s.write_all(format!("CAPABILITY {PROBE_SLOT}\n").as_bytes())
        .map_err(|e| Error::Protocol(format!("{addr}: sending the servername probe: {e}")))?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = s
            .read(&mut b)
            .map_err(|e| Error::Protocol(format!("{addr}: reading the servername probe: {e}")))?;
        if n == 0 || b[0] == b'\n' || line.len() > 4096 {
            break;
        }
        line.push(b[0]);
    }
    let text = String::from_utf8_lossy(&line).trim_end().to_string();
    match text.strip_prefix("NO iam ") {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(Error::Refused(format!(
            "{addr}: could not learn the servername (the probe got {text:?}); give it with --servername"
        ))),
    }
}
