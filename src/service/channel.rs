//! What the session may ask of its connection beyond reading and writing: whether
//! TLS is on, switching to it (`STARTTLS`), and the TLS channel binding `AUTH`
//! mixes into its MACs.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::ServerConfig;

use crate::protocol::auth::BINDING_LEN;
use crate::tls::Shared;

/// The connection under a session.
pub trait Channel {
    /// Whether this connection can switch to TLS at all.
    fn can_tls(&self) -> bool;
    /// Whether TLS is on.
    fn is_tls(&self) -> bool;
    /// Do the server side of the TLS handshake now.
    fn start_tls(&self, config: Arc<ServerConfig>) -> io::Result<()>;
    /// The TLS exporter's bytes for `AUTH` (None in plaintext).
    fn binding(&self) -> Option<[u8; BINDING_LEN]>;
}

/// A plain `Read`/`Write` pair that cannot do TLS (tests, `Session::run`).
pub struct NoChannel;

impl Channel for NoChannel {
    fn can_tls(&self) -> bool {
        false
    }
    fn is_tls(&self) -> bool {
        false
    }
    fn start_tls(&self, _config: Arc<ServerConfig>) -> io::Result<()> {
        Err(io::Error::other("this connection cannot do TLS"))
    }
    fn binding(&self) -> Option<[u8; BINDING_LEN]> {
        None
    }
}

impl<S: Read + Write> Channel for Shared<S> {
    fn can_tls(&self) -> bool {
        true
    }
    fn is_tls(&self) -> bool {
        self.lock().is_tls()
    }
    fn start_tls(&self, config: Arc<ServerConfig>) -> io::Result<()> {
        self.lock().start_server(config)
    }
    fn binding(&self) -> Option<[u8; BINDING_LEN]> {
        self.lock().binding()
    }
}
