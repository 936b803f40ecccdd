//! One connection to the service a backup pulls from: `cyrvaultd` (extensions, TLS,
//! AUTH) or a stock `backupcyrusd` (base protocol, no authentication).
//!
//! In order (doc/protocol.md 2, doc/security.md): TCP; the servername, if the caller
//! does not know it (both servers answer a wrong slot with `NO iam <servername>`, so
//! one probe line tells it); `STARTTLS` and the handshake when TLS is asked for
//! (the server's certificate checked against the CA file or the pin; a server
//! without TLS is refused, never used in plaintext); `CAPABILITY`; `AUTH` both ways
//! when we hold the secret (the server must prove it knows it too, bound to the TLS
//! session when there is one). A server that turns us away because too many of our
//! connections are authenticating at once is asked again after a short pause.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::{BackupError, Result};
use crate::protocol::ProtocolError;
use crate::protocol::client::{Capability, Client};
use crate::secret::Secret;
use crate::tls::client::ClientOptions;
use crate::tls::{Half, Shared, Stream};
use cyrvault::error::ErrorKind;

/// The slot sent by the servername probe: no real servername looks like it.
const PROBE_SLOT: &str = "cyrvault-probe-servername";

/// How often a connection turned away as "busy" is tried again.
const BUSY_RETRIES: u32 = 8;

/// How to reach and talk to a server.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// The server's `servername` (the slot); `None`: learn it from the server.
    pub servername: Option<String>,
    /// The shared secret for `AUTH` (cyrvaultd with `cyrvaultd_secret_file`).
    pub secret: Option<Secret>,
    /// Speak only the base protocol (what a stock `backupcyrusd` understands): no
    /// `CAPABILITY`, no `AUTH`, no `SNAPSHOT`.
    pub base_only: bool,
    /// Socket read/write timeout; `None`: 600 s (the server's own idle timeout).
    pub timeout: Option<Duration>,
    /// TLS: `Some` requires it (`STARTTLS`) and says how to trust the server.
    pub tls: Option<ClientOptions>,
}

/// The connection under a [`Server`].
pub type Conn = Half<TcpStream>;

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
    pub(crate) client: Client<Conn, Conn>,
    stream: Shared<TcpStream>,
    /// `host:port` as given.
    pub addr: String,
    /// The slot in use.
    pub servername: String,
    /// The announced extensions; `None` on the base protocol.
    pub extensions: Option<Vec<Capability>>,
    opts: ConnectOptions,
}

fn proto(addr: &str, what: &str, e: ProtocolError) -> BackupError {
    e.in_context(&format!("{addr}: {what}")).into()
}

/// The server cannot be trusted or does not trust us (secret, certificate, pin, TLS
/// asked for and not offered): exit 77, trying again cannot help.
fn trust(addr: &str, message: String) -> BackupError {
    BackupError::server(ErrorKind::Permission, format!("{addr}: {message}"))
}

/// The server turned the connection away for now (too many of our connections
/// authenticating at once, or an AUTH failure from this address a moment ago).
fn busy(e: &BackupError) -> bool {
    busy_text(&e.to_string())
}

/// Map a refusal at connection time to what it means: a wrong servername (78) or
/// credentials refused or unproven (77) are the configuration's fault; the other
/// answers are classified as everywhere (`Error::from_server_no`).
fn refused(addr: &str, what: &str, e: ProtocolError) -> BackupError {
    match &e {
        ProtocolError::No(t) if t.starts_with("TLS required") => trust(
            addr,
            "the server accepts AUTH only inside TLS: connect with --tls (and --tls-ca-file or --tls-pin)"
                .into(),
        ),
        ProtocolError::ServerNotProven => trust(addr, e.to_string()),
        _ => proto(addr, what, e),
    }
}

impl Server {
    /// Connect to `addr` (`host:port`), learn the servername if needed, switch to TLS
    /// if asked, probe for the extensions (unless `base_only`) and authenticate.
    pub fn connect(addr: &str, opts: &ConnectOptions) -> Result<Server> {
        let mut tries = 0;
        loop {
            match Server::connect_once(addr, opts) {
                Err(e) if busy(&e) && tries < BUSY_RETRIES => {
                    tries += 1;
                    log::info!(target: "cyrvault::backup", "{addr}: {e}; trying again");
                    std::thread::sleep(backoff(tries));
                }
                other => return other,
            }
        }
    }

    fn connect_once(addr: &str, opts: &ConnectOptions) -> Result<Server> {
        if opts.secret.is_some() && opts.base_only {
            return Err(BackupError::refused(
                "--base-protocol has no AUTH: a secret cannot be used with it".into(),
            ));
        }
        let stream = Shared::new(Stream::plain(open(addr, opts)?));
        let servername = match &opts.servername {
            Some(s) => s.clone(),
            None => probe_servername(addr, &mut stream.half())?,
        };
        let mut client = Client::new(stream.half(), stream.half(), servername.as_bytes());
        if let Some(tls) = &opts.tls {
            start_tls(addr, &stream, &mut client, tls)?;
        }
        let mut extensions = None;
        if opts.base_only && opts.servername.is_some() {
            // the base protocol has no CAPABILITY: check a given slot with a request
            // that costs the server nothing (an unknown user's META listing)
            client
                .meta_listing(b"cyrvault-slot-check")
                .map_err(|e| refused(addr, "META", e))?;
        }
        if !opts.base_only {
            extensions = client
                .capabilities()
                .map_err(|e| refused(addr, "CAPABILITY", e))?;
            let auth = extensions
                .as_ref()
                .is_some_and(|c| c.iter().any(|(n, _)| n == b"AUTH"));
            match (&opts.secret, auth) {
                (Some(secret), true) => {
                    let binding = stream.lock().binding();
                    client
                        .authenticate(secret.bytes(), binding.as_ref())
                        .map_err(|e| refused(addr, "AUTH", e))?;
                }
                (None, true) if has(&extensions, "UNAUTHENTICATED") => {}
                (None, true) => {
                    return Err(trust(
                        addr,
                        "the server requires authentication: give the shared secret with --secret-file"
                            .into(),
                    ));
                }
                (Some(_), false) => {
                    // it could not prove who it is: never back up from it with a secret
                    return Err(trust(
                        addr,
                        "the server does not offer AUTH, so it cannot prove it knows the secret (a stock backupcyrusd takes no --secret-file)"
                            .into(),
                    ));
                }
                (None, false) => {}
            }
        }
        Ok(Server {
            client,
            stream,
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

    /// Whether the connection runs in TLS.
    pub fn is_tls(&self) -> bool {
        self.stream.lock().is_tls()
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
        has(&self.extensions, name)
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

fn has(caps: &Option<Vec<Capability>>, name: &str) -> bool {
    caps.as_ref()
        .is_some_and(|c| c.iter().any(|(n, _)| n == name.as_bytes()))
}

/// 150 ms, 300 ms, ... with some jitter (several workers start at once).
fn backoff(tries: u32) -> Duration {
    let jitter = u64::from(std::process::id() % 97) + u64::from(tries) * 13 % 50;
    Duration::from_millis(150 * u64::from(tries) + jitter)
}

/// `STARTTLS <slot>`, then the handshake; anything but TLS is refused.
fn start_tls(
    addr: &str,
    stream: &Shared<TcpStream>,
    client: &mut Client<Conn, Conn>,
    opts: &ClientOptions,
) -> Result<()> {
    let config = crate::tls::client::config(opts)?;
    let name = crate::tls::client::server_name(opts, addr)?;
    match client.starttls() {
        Ok(()) => {}
        Err(ProtocolError::No(t)) if t.starts_with("iam ") || busy_text(&t) => {
            return Err(refused(addr, "STARTTLS", ProtocolError::No(t)));
        }
        Err(ProtocolError::No(t)) => {
            return Err(trust(
                addr,
                format!("TLS was asked for, and the server does not offer it ({t})"),
            ));
        }
        Err(e) => return Err(proto(addr, "STARTTLS", e)),
    }
    if client.buffered() > 0 {
        return Err(trust(
            addr,
            "the server sent data after STARTTLS before the TLS handshake".into(),
        ));
    }
    stream
        .lock()
        .start_client(config, name)
        .map_err(|e| match crate::tls::is_tls_verdict(&e) {
            true => trust(addr, format!("TLS: {}", crate::tls::describe(&e))),
            false => BackupError::protocol(format!("{addr}: TLS handshake: {e}")),
        })
}

fn busy_text(t: &str) -> bool {
    t.contains("too many unauthenticated connections")
        || t.contains("authentication failed recently")
}

fn open(addr: &str, opts: &ConnectOptions) -> Result<TcpStream> {
    let fail = |e: std::io::Error| BackupError::protocol(format!("connecting to {addr}: {e}"));
    let sa = addr
        .to_socket_addrs()
        .map_err(fail)?
        .next()
        .ok_or_else(|| BackupError::refused(format!("{addr}: no address to connect to")))?;
    let timeout = opts.timeout.unwrap_or(Duration::from_secs(600));
    let s = TcpStream::connect_timeout(&sa, Duration::from_secs(30)).map_err(fail)?;
    s.set_read_timeout(Some(timeout)).map_err(fail)?;
    s.set_write_timeout(Some(timeout)).map_err(fail)?;
    s.set_nodelay(true).map_err(fail)?;
    Ok(s)
}

/// Send `CAPABILITY <probe>` and read the one answer line byte by byte (so nothing is
/// buffered past it): `NO iam <servername>` names the slot.
fn probe_servername(addr: &str, s: &mut Conn) -> Result<String> {
    s.write_all(format!("CAPABILITY {PROBE_SLOT}\n").as_bytes())
        .and_then(|()| s.flush())
        .map_err(|e| BackupError::protocol(format!("{addr}: sending the servername probe: {e}")))?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = s.read(&mut b).map_err(|e| {
            BackupError::protocol(format!("{addr}: reading the servername probe: {e}"))
        })?;
        if n == 0 || b[0] == b'\n' || line.len() > 4096 {
            break;
        }
        line.push(b[0]);
    }
    let text = String::from_utf8_lossy(&line).trim_end().to_string();
    match text.strip_prefix("NO iam ") {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => match text.strip_prefix("NO ") {
            Some(t) if busy_text(t) => Err(BackupError::protocol(format!("{addr}: {t}"))),
            _ => Err(BackupError::refused(format!(
                "{addr}: could not learn the servername (the probe got {text:?}); give it with --servername"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_servername_and_credentials_are_permanent() {
        let e = refused("h:1", "CAPABILITY", ProtocolError::No("iam imap1".into()));
        assert_eq!(e.exit_code(), cyrvault::error::EX_CONFIG, "{e}");
        assert!(e.to_string().contains("\"imap1\""), "{e}");
        for t in [
            "authentication required",
            "authentication failed",
            "TLS required: send STARTTLS before AUTH",
        ] {
            let e = refused("h:1", "AUTH", ProtocolError::No(t.into()));
            assert_eq!(e.kind(), ErrorKind::Permission, "{t}: {e}");
        }
        let e = refused("h:1", "AUTH", ProtocolError::ServerNotProven);
        assert_eq!(e.kind(), ErrorKind::Permission, "{e}");
        // a server busy or shutting down is worth trying again later
        assert!(refused("h:1", "X", ProtocolError::No("shutdown: upgrade".into())).is_temporary());
        assert!(busy(&BackupError::protocol(
            "h:1: too many unauthenticated connections from this address".into()
        )));
    }
}
