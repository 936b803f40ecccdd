//! TLS on every wire cyrvault speaks: the service's `STARTTLS` (server side), the
//! backup client's connection to it, and restore's IMAP and ManageSieve connections
//! (client side). rustls with the aws-lc-rs provider, TLS 1.3 only (doc/security.md).
//!
//! [`Stream`] is a connection that starts in plaintext and may switch to TLS in place
//! (STARTTLS); [`Shared`] hands out a reader half and a writer half of one stream, so
//! the line readers and writers built on `Read`/`Write` keep working across the
//! switch. [`server`] builds the service's configuration from Cyrus's
//! `tls_server_cert`/`tls_server_key`; [`client`] builds a verifying client (CA file,
//! pinned certificate, or both). The service uses only `server` and this file.
#![forbid(unsafe_code)]

pub mod client;
pub mod server;
mod stream;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

use crate::cyrus::config::ConfigError;
use crate::kind::ErrorKind;

pub use stream::{Half, Shared, Stream};

/// Why a TLS configuration could not be built: a setting to correct (a certificate,
/// key or CA file, a server name), or rustls refusing our own setup. Failures of a
/// handshake are `io::Error`s of the stream ([`is_tls_verdict`], [`describe`]). The
/// service's `Error` (and the host's) convert it at their edge.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A setting names an unusable file or value; names the option.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// rustls refused a configuration we build the same way everywhere: a bug.
    #[error("{0}")]
    Setup(String),
}

impl TlsError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TlsError::Config(_) => ErrorKind::Config,
            TlsError::Setup(_) => ErrorKind::Software,
        }
    }
}

/// The crypto provider every configuration is built with.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The protocol versions offered and accepted: TLS 1.3 only (every peer is ours or a
/// Cyrus with OpenSSL, which speaks it).
pub(crate) const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Whether an I/O error from a TLS handshake is TLS's verdict (a certificate that
/// does not verify, an alert from the peer, a protocol violation) rather than the
/// network failing: the first cannot be fixed by trying again.
pub fn is_tls_verdict(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

/// The text of a TLS handshake error for a person: rustls's own, except that a
/// certificate our verifier refused with a reason of its own (a pin that does not
/// match) says that reason rather than rustls's debug form of it.
pub fn describe(e: &std::io::Error) -> String {
    use rustls::{CertificateError, Error};
    match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(CertificateError::Other(why))) => {
            format!("invalid peer certificate: {why}")
        }
        _ => e.to_string(),
    }
}
