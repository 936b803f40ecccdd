//! The shared secret of the `AUTH` extension, as both sides keep it: the service
//! (`cyrvaultd_secret_file`, `cyrvaultd_secret_file_next`) and the backup host
//! (`--secret-file`, `<server>_secret_file` in cyrvault.conf).
//!
//! Both sides apply the same rules when they load one (doc/security.md): a regular
//! file (not a symlink), not readable or writable by group or others, at least
//! [`MIN_SECRET`] bytes after the trailing newline is trimmed, and not an obviously
//! repetitive string (at least [`MIN_DISTINCT`] different byte values). A short or
//! guessable secret is what an offline guess against one recorded AUTH exchange
//! would break; the rule makes `openssl rand -base64 32` the easy way to make one.
#![forbid(unsafe_code)]

use std::fmt;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::cyrus::config::ConfigError;
use crate::io_error::{IoContext, IoError};
use crate::kind::ErrorKind;

/// Why a secret file was refused: a setting to correct, or the file could not be
/// read. The service's `Error` (and the host's) convert it at their edge.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file breaks the rules (symlink, mode, length, variety); names the option.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The file could not be opened or read.
    #[error(transparent)]
    Io(#[from] IoError),
}

impl SecretError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SecretError::Config(_) => ErrorKind::Config,
            SecretError::Io(_) => ErrorKind::Io,
        }
    }
}

/// Shortest accepted secret, in bytes (after trimming the trailing newline): 32
/// characters of base64 or hex carry at least 128 random bits.
pub const MIN_SECRET: usize = 32;

/// Fewest different byte values a secret must contain (refuses `aaaa...`, `abab...`).
pub const MIN_DISTINCT: usize = 8;

/// Longest accepted secret file.
pub const MAX_SECRET: usize = 4096;

/// A shared secret. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

impl Secret {
    /// Use these bytes (trailing CR/LF trimmed) as the secret, if they pass the rules.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Secret, String> {
        let mut b = bytes;
        while let Some(rest) = b.strip_suffix(b"\n").or_else(|| b.strip_suffix(b"\r")) {
            b = rest;
        }
        if b.len() < MIN_SECRET {
            return Err(format!(
                "the secret has {} bytes, fewer than {MIN_SECRET} (make one with: openssl rand -base64 32)",
                b.len()
            ));
        }
        if b.len() > MAX_SECRET {
            return Err(format!("the secret is longer than {MAX_SECRET} bytes"));
        }
        let mut seen = [false; 256];
        for &x in b {
            seen[usize::from(x)] = true;
        }
        let distinct = seen.iter().filter(|s| **s).count();
        if distinct < MIN_DISTINCT {
            return Err(format!(
                "the secret uses only {distinct} different bytes: it is too easy to guess (make one with: openssl rand -base64 32)"
            ));
        }
        Ok(Secret(b.to_vec()))
    }

    /// The secret's bytes (for the HMAC).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Load the secret file at `path`; `option` names the setting in errors
    /// (`cyrvaultd_secret_file`, `--secret-file`, `imap1_secret_file`). Refuses a
    /// symlink, a file that is not a regular file, a file group or others may read
    /// or write (a secret other local users can read protects nothing), and a secret
    /// that breaks the length rules.
    pub fn load(path: &Path, option: &str) -> Result<Secret, SecretError> {
        let cfg = |message: String| {
            SecretError::Config(ConfigError {
                file: path.display().to_string(),
                option: option.to_string(),
                message,
            })
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    cfg("the secret file is a symlink: name the file itself".into())
                } else {
                    IoError::new("opening secret file", path, e).into()
                }
            })?;
        let meta = file.metadata().at("checking secret file", path)?;
        if !meta.is_file() {
            return Err(cfg("the secret file is not a regular file".into()));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o066 != 0 {
            return Err(cfg(format!(
                "the secret file has mode {mode:04o}: it must not be readable or writable by group or others (chmod 600)"
            )));
        }
        let mut bytes = Vec::new();
        file.take(MAX_SECRET as u64 + 3)
            .read_to_end(&mut bytes)
            .at("reading secret file", path)?;
        Secret::from_bytes(&bytes).map_err(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const GOOD: &[u8] = b"Zq3vJ0x9Kp2mWc8Lr5tYb7Nd1Fg4Hs6A\n";

    #[test]
    fn length_and_variety_rules() {
        assert_eq!(Secret::from_bytes(GOOD).unwrap().bytes(), &GOOD[..32]);
        let short = Secret::from_bytes(b"0123456789abcdef\n").unwrap_err();
        assert!(
            short.contains("16 bytes") && short.contains("openssl"),
            "{short}"
        );
        let dull = Secret::from_bytes(&[b'a'; 40]).unwrap_err();
        assert!(dull.contains("only 1 different"), "{dull}");
        assert!(Secret::from_bytes(&b"ab".repeat(20)).is_err());
        assert!(Secret::from_bytes(&vec![b'x'; MAX_SECRET + 1]).is_err());
        assert_eq!(
            format!("{:?}", Secret::from_bytes(GOOD).unwrap()),
            "Secret(<32 bytes>)"
        );
    }

    #[test]
    fn load_refuses_group_or_world_access_and_symlinks() {
        let dir = std::env::temp_dir().join(format!("cyrvault-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("secret");
        std::fs::write(&p, GOOD).unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o604, false),
            (0o620, false),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = Secret::load(&p, "--secret-file");
            assert_eq!(r.is_ok(), ok, "mode {mode:o}: {r:?}");
            if let Err(e) = r {
                let msg = e.to_string();
                assert!(
                    msg.contains("chmod 600") && msg.contains("--secret-file"),
                    "{msg}"
                );
            }
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let e = Secret::load(&link, "x").unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        assert!(Secret::load(&dir.join("missing"), "x").is_err());
        let short = dir.join("short");
        std::fs::write(&short, b"too-short\n").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = Secret::load(&short, "imap1_secret_file")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("imap1_secret_file") && e.contains("fewer than 32"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
