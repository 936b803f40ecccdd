//! Test certificates, made fresh by each test (rcgen): a CA and a server certificate
//! it signed for 127.0.0.1 and localhost, and a second, unrelated CA. Written to a
//! scratch directory readable by the cyrus user (the key mode 0600, owned by cyrus),
//! removed on drop. No private key is ever committed.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

static N: AtomicU32 = AtomicU32::new(0);

/// A CA, a server certificate and key it issued, and an unrelated CA.
pub struct Pki {
    pub dir: PathBuf,
    /// PEM of the CA that issued the server certificate.
    pub ca: PathBuf,
    /// PEM of an unrelated CA (a client trusting it must refuse the server).
    pub other_ca: PathBuf,
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600, owned by cyrus).
    pub key: PathBuf,
    /// SHA-256 of the server certificate's DER, hex: the right pin.
    pub pin: String,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    (p.self_signed(&key).unwrap(), key)
}

impl Pki {
    pub fn new(hint: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "cyrvault-pki-{hint}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (ca_cert, ca_key) = ca("cyrvault test CA");
        let (other, _) = ca("someone else's CA");
        let mut p =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "cyrvaultd test server");
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
        let pin = hex::encode(cyrvault::tls::client::fingerprint(cert.der()));
        let cyrus = nix::unistd::User::from_name("cyrus")
            .unwrap()
            .expect("user cyrus");
        let write = |name: &str, text: String, mode: u32| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            nix::unistd::chown(&path, Some(cyrus.uid), Some(cyrus.gid)).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", ca_cert.pem(), 0o644),
            other_ca: write("other-ca.pem", other.pem(), 0o644),
            cert: write("server.pem", cert.pem(), 0o644),
            key: write("server.key", key.serialize_pem(), 0o600),
            pin,
            dir,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
