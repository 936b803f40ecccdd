//! The verifying TLS client of the backup host (to `cyrvaultd`) and of restore (to
//! Cyrus's imapd and timsieved). The server is trusted through a CA file (its chain
//! and its name are checked), a pinned certificate (the SHA-256 of its DER; the name
//! is not checked, the pin is the identity), or both. With neither, the system's CA
//! bundle is used. There is no "accept anything" mode.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use super::TlsError;
use crate::cyrus::config::ConfigError;

/// Debian's bundle of the system's trusted CAs (package ca-certificates).
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How to trust a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// PEM file of CA certificates the server's chain must lead to.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of the server's certificate (DER), as
    /// `openssl x509 -noout -fingerprint -sha256` prints it.
    pub pin: Option<[u8; 32]>,
    /// The name the certificate must carry; None: the host part of the address.
    pub server_name: Option<String>,
}

/// Parse a pin: 64 hex digits, colons allowed, an `openssl ... -fingerprint` line's
/// `sha256 Fingerprint=` prefix allowed.
pub fn parse_pin(text: &str) -> std::result::Result<[u8; 32], String> {
    let value = text.rsplit('=').next().unwrap_or(text);
    let digits: String = value.chars().filter(|c| *c != ':').collect();
    let mut pin = [0u8; 32];
    hex::decode_to_slice(digits.trim(), &mut pin).map_err(|_| {
        format!("{text:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")
    })?;
    Ok(pin)
}

/// The SHA-256 of a certificate, as a pin.
pub fn fingerprint(cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_der).into()
}

/// The host part of `host:port` / `[v6]:port`, to check the certificate against.
pub fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => addr,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The identity to verify for a connection to `addr`.
pub fn server_name(opts: &ClientOptions, addr: &str) -> Result<ServerName<'static>, TlsError> {
    let name = opts
        .server_name
        .clone()
        .unwrap_or_else(|| host_of(addr).to_string());
    ServerName::try_from(name.clone()).map_err(|e| {
        TlsError::Config(ConfigError::new(
            addr,
            "tls_server_name",
            format!("{name:?} is not a host name or address to check a certificate against: {e}"),
        ))
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let bad = |m: String| {
        TlsError::Config(ConfigError::new(
            &path.display().to_string(),
            "tls_ca_file",
            m,
        ))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<_, _>>())
        .map_err(|e| bad(format!("reading CA certificates: {e}")))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad("holds no usable CA certificate".into()));
    }
    Ok(roots)
}

/// A client configuration that verifies servers as `opts` says.
pub fn config(opts: &ClientOptions) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = super::provider();
    let chain = match (&opts.ca_file, &opts.pin) {
        (Some(ca), _) => Some(load_roots(ca)?),
        (None, Some(_)) => None,
        (None, None) => Some(load_roots(Path::new(SYSTEM_CA_FILE))?),
    };
    let webpki = match chain {
        Some(roots) => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| TlsError::Setup(format!("building the TLS verifier: {e}")))?,
        ),
        None => None,
    };
    let verifier = Arc::new(Verifier {
        webpki,
        pin: opts.pin,
        provider: Arc::clone(&provider),
    });
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(super::VERSIONS)
        .map_err(|e| TlsError::Setup(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The server's certificate is not the pinned one; says which one it is (the pin an
/// admin would check, or set after a planned change of certificate).
#[derive(Debug)]
struct PinMismatch {
    got: [u8; 32],
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server's certificate is not the pinned one (its SHA-256 is {})",
            hex::encode_upper(self.got)
        )
    }
}

impl std::error::Error for PinMismatch {}

/// Chain and name through webpki (when a CA is configured), and the pin (when one
/// is); the handshake signature always, with the provider's algorithms.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if let Some(w) = &self.webpki {
            w.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        if let Some(pin) = &self.pin {
            let got = fingerprint(end_entity);
            if got != *pin {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch {
                        got,
                    }))),
                ));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_in_every_usual_spelling() {
        let hexed = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        for t in [
            hexed.clone(),
            colons.clone(),
            format!("sha256 Fingerprint={colons}"),
        ] {
            assert_eq!(parse_pin(&t).unwrap(), [0xab; 32], "{t}");
        }
        assert!(parse_pin("abcd").is_err());
        assert!(parse_pin(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("imap1.example.org:2901"), "imap1.example.org");
        assert_eq!(host_of("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(host_of("[::1]:2901"), "::1");
        assert_eq!(host_of("imap1"), "imap1");
    }
}
