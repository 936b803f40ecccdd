//! The service's TLS configuration, from Cyrus's own options: `tls_server_cert` (the
//! certificate chain, PEM) and `tls_server_key` (its private key, PEM; when unset,
//! the key is read from the certificate file, as Cyrus does). A
//! `<service>_tls_server_cert` line overrides them for the service, as for every
//! Cyrus service.
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;
use crate::cyrus::config::ConfigError;

/// Build the server configuration from a certificate file and a key file (which may
/// be the same file). `cert_option`/`key_option` name the settings in errors.
pub fn config(
    conf_file: &str,
    cert: &Path,
    cert_option: &str,
    key: &Path,
    key_option: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let bad = |option: &str, message: String| {
        TlsError::Config(ConfigError::new(conf_file, option, message))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<std::result::Result<_, _>>())
        .map_err(|e| {
            bad(
                cert_option,
                format!("reading certificates from {}: {e}", cert.display()),
            )
        })?;
    if chain.is_empty() {
        return Err(bad(
            cert_option,
            format!("{} holds no PEM certificate", cert.display()),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        bad(
            key_option,
            format!("reading the private key from {}: {e}", key.display()),
        )
    })?;
    let cfg = ServerConfig::builder_with_provider(super::provider())
        .with_protocol_versions(super::VERSIONS)
        .map_err(|e| TlsError::Setup(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            bad(
                key_option,
                format!(
                    "{} and {} do not make a usable certificate and key: {e}",
                    cert.display(),
                    key.display()
                ),
            )
        })?;
    Ok(Arc::new(cfg))
}
