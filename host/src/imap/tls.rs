//! TLS on an IMAP connection: implicit (imaps) or `STARTTLS` (RFC 3501 6.2.1), the
//! server's certificate checked (`crate::tls::client`). A child module of `imap`, so
//! it works on the client's connection directly.
#![forbid(unsafe_code)]

use super::{Arg, Client, ImapErrorKind, Result, Status};
use crate::tls::client::ClientOptions;

/// How to get TLS on an IMAP (or ManageSieve) connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// `STARTTLS` after the greeting (port 143; ManageSieve's 4190).
    StartTls,
    /// TLS from the first byte (imaps, port 993).
    Implicit,
}

/// TLS for a connection: how, and how to trust the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub mode: TlsMode,
    pub trust: ClientOptions,
}

impl Client {
    /// `STARTTLS` (RFC 3501 6.2.1), the handshake, and the capabilities again (what
    /// was announced in plaintext is not to be trusted).
    pub(super) fn starttls(&mut self, t: &Tls) -> Result<()> {
        if !self.has_capability("STARTTLS") {
            return Err(self.err(
                ImapErrorKind::Tls,
                "TLS was asked for, and the server does not announce STARTTLS".into(),
            ));
        }
        let reply = self.execute(&[Arg::Atom("STARTTLS")])?;
        if reply.status.status != Status::Ok {
            return Err(self.err(
                ImapErrorKind::Tls,
                format!("STARTTLS refused: {}", reply.status.text),
            ));
        }
        if !self.reader.buffer().is_empty() {
            return Err(self.err(
                ImapErrorKind::Tls,
                "the server sent data after STARTTLS before the TLS handshake".into(),
            ));
        }
        self.handshake(t)?;
        self.caps.clear();
        self.capability()?;
        Ok(())
    }

    /// The client side of the TLS handshake on this connection.
    pub(super) fn handshake(&mut self, t: &Tls) -> Result<()> {
        self.command = "TLS handshake".into();
        let tls_err = |c: &Client, text: String| c.err(ImapErrorKind::Tls, text);
        let config =
            crate::tls::client::config(&t.trust).map_err(|e| tls_err(self, e.to_string()))?;
        let name = crate::tls::client::server_name(&t.trust, &self.given)
            .map_err(|e| tls_err(self, e.to_string()))?;
        let res = self.stream.lock().start_client(config, name);
        res.map_err(|e| {
            let kind = if crate::tls::is_tls_verdict(&e) {
                ImapErrorKind::Tls
            } else {
                ImapErrorKind::Io
            };
            self.err(kind, format!("TLS: {}", crate::tls::describe(&e)))
        })
    }

    /// Whether the session runs in TLS.
    pub fn is_tls(&self) -> bool {
        self.stream.lock().is_tls()
    }
}
