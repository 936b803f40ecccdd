//! The `AUTH` extension: the shared secret, nonces, and the HMAC check.
//!
//! The server sends a fresh 32-byte random nonce; the client answers
//! `HMAC-SHA256(secret, nonce || context)` where the context is
//! `"cyrvault-auth-v1" || 0x00 || slot` (the servername the client addressed), so the
//! secret never crosses the wire, an answer is bound to one server, and, because a
//! nonce is consumed by the first answer to it, a recorded answer can never be played
//! back. Failed answers are logged and delayed. See doc/protocol.md, "AUTH".
#![forbid(unsafe_code)]

use std::fmt;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use crate::cyrus::config::ConfigError;
use crate::error::IoContext;
use crate::protocol::AUTH_LEN;
use crate::protocol::auth::{auth_answer, auth_verify};
use crate::{Error, Result};

pub use crate::protocol::auth::CONTEXT_LABEL;

/// Shortest accepted secret, in bytes (after trimming the trailing newline).
pub const MIN_SECRET: usize = 16;

/// Longest accepted secret file.
pub const MAX_SECRET: usize = 4096;

/// The shared secret. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

impl Secret {
    /// Use these bytes (trailing CR/LF trimmed) as the secret.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Secret, &'static str> {
        let mut b = bytes;
        while let Some(rest) = b.strip_suffix(b"\n").or_else(|| b.strip_suffix(b"\r")) {
            b = rest;
        }
        if b.len() < MIN_SECRET {
            return Err("secret is shorter than 16 bytes");
        }
        if b.len() > MAX_SECRET {
            return Err("secret is longer than 4096 bytes");
        }
        Ok(Secret(b.to_vec()))
    }

    /// Load the secret file named by config option `option`. Refuses a file that is
    /// not a regular file or that group or others may read or write: a secret that
    /// other local users can read protects nothing.
    pub fn load(path: &Path, option: &str) -> Result<Secret> {
        let cfg = |message: String| {
            Error::Config(ConfigError {
                file: path.display().to_string(),
                option: option.to_string(),
                message,
            })
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .at("opening secret file", path)?;
        let meta = file.metadata().at("checking secret file", path)?;
        if !meta.is_file() {
            return Err(cfg("secret file is not a regular file".into()));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o066 != 0 {
            return Err(cfg(format!(
                "secret file has mode {mode:04o}: it must not be readable or writable by group or others (chmod 600)"
            )));
        }
        let mut bytes = Vec::new();
        file.take(MAX_SECRET as u64 + 3)
            .read_to_end(&mut bytes)
            .at("reading secret file", path)?;
        Secret::from_bytes(&bytes).map_err(|m| cfg(m.to_string()))
    }
}

/// A fresh random nonce from the operating system.
pub fn new_nonce() -> Result<[u8; AUTH_LEN]> {
    let mut n = [0u8; AUTH_LEN];
    getrandom::getrandom(&mut n)
        .map_err(|e| Error::Other(format!("getting random bytes for an auth nonce: {e}")))?;
    Ok(n)
}

/// The client's answer to `nonce` when talking to server `slot`.
pub fn answer(secret: &Secret, nonce: &[u8; AUTH_LEN], slot: &[u8]) -> [u8; AUTH_LEN] {
    auth_answer(&secret.0, nonce, slot)
}

/// Check an answer in constant time.
pub fn verify(secret: &Secret, nonce: &[u8; AUTH_LEN], slot: &[u8], answer: &[u8]) -> bool {
    auth_verify(&secret.0, nonce, slot, answer)
}

/// How hard the service is on failed answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthPolicy {
    /// Sleep after every failed answer (slows down guessing).
    pub fail_delay: Duration,
    /// After this many failures the session is ended.
    pub max_failures: u32,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        AuthPolicy {
            fail_delay: Duration::from_secs(2),
            max_failures: 3,
        }
    }
}

/// What an `AUTH ANSWER` came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The answer was right; the session is authenticated.
    Accepted,
    /// No secret is configured on this server.
    NotConfigured,
    /// No nonce is outstanding (never asked, or already used).
    NoChallenge,
    /// Wrong answer; the nonce is spent.
    Rejected,
    /// Wrong answer and the failure limit is reached: end the session.
    TooManyFailures,
}

/// Per-session authentication state.
#[derive(Debug)]
pub struct Authenticator {
    secret: Option<Secret>,
    policy: AuthPolicy,
    pending: Option<[u8; AUTH_LEN]>,
    authenticated: bool,
    failures: u32,
}

impl Authenticator {
    /// No secret means authentication is neither offered nor required.
    pub fn new(secret: Option<Secret>, policy: AuthPolicy) -> Self {
        Authenticator {
            secret,
            policy,
            pending: None,
            authenticated: false,
            failures: 0,
        }
    }

    /// Whether a secret is configured (then `AUTH` is offered and required).
    pub fn required(&self) -> bool {
        self.secret.is_some()
    }

    /// Whether commands other than PING, QUIT, CAPABILITY and AUTH may run.
    pub fn may_proceed(&self) -> bool {
        self.secret.is_none() || self.authenticated
    }

    /// `AUTH BEGIN`: a new nonce, replacing any outstanding one. None if no secret.
    pub fn begin(&mut self) -> Result<Option<[u8; AUTH_LEN]>> {
        if self.secret.is_none() {
            return Ok(None);
        }
        let n = new_nonce()?;
        self.pending = Some(n);
        Ok(Some(n))
    }

    /// `AUTH ANSWER`: check and spend the outstanding nonce. A failure is logged and
    /// delayed by the policy before this returns.
    pub fn answer(&mut self, slot: &[u8], given: &[u8; AUTH_LEN], peer: &str) -> AuthOutcome {
        let Some(secret) = &self.secret else {
            return AuthOutcome::NotConfigured;
        };
        let Some(nonce) = self.pending.take() else {
            return AuthOutcome::NoChallenge;
        };
        if verify(secret, &nonce, slot, given) {
            self.authenticated = true;
            log::info!(target: "cyrvault::auth", "auth ok from {peer}");
            return AuthOutcome::Accepted;
        }
        self.failures = self.failures.saturating_add(1);
        log::warn!(
            target: "cyrvault::auth",
            "auth failed from {peer} (failure {} of {})",
            self.failures,
            self.policy.max_failures
        );
        std::thread::sleep(self.policy.fail_delay);
        if self.failures >= self.policy.max_failures {
            AuthOutcome::TooManyFailures
        } else {
            AuthOutcome::Rejected
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    fn secret() -> Secret {
        Secret::from_bytes(b"0123456789abcdef-test\n").unwrap()
    }

    fn fast() -> AuthPolicy {
        AuthPolicy {
            fail_delay: Duration::from_millis(50),
            max_failures: 3,
        }
    }

    #[test]
    fn answer_binds_nonce_slot_and_secret() {
        let s = secret();
        let n = [7u8; AUTH_LEN];
        let a = answer(&s, &n, b"imap1");
        assert!(verify(&s, &n, b"imap1", &a));
        assert!(!verify(&s, &n, b"imap2", &a));
        assert!(!verify(&s, &[8u8; AUTH_LEN], b"imap1", &a));
        let other = Secret::from_bytes(b"another-secret-of-16").unwrap();
        assert!(!verify(&other, &n, b"imap1", &a));
        assert!(!verify(&s, &n, b"imap1", &a[..31]));
    }

    #[test]
    fn secret_rules() {
        assert!(Secret::from_bytes(b"short\n").is_err());
        assert_eq!(secret().0, b"0123456789abcdef-test");
        assert_eq!(format!("{:?}", secret()), "Secret(<21 bytes>)");
    }

    #[test]
    fn nonces_are_fresh() {
        assert_ne!(new_nonce().unwrap(), new_nonce().unwrap());
    }

    #[test]
    fn flow_single_use_nonce_and_failure_limit() {
        let mut a = Authenticator::new(Some(secret()), fast());
        assert!(a.required() && !a.may_proceed());
        assert_eq!(a.answer(b"s", &[0; 32], "t"), AuthOutcome::NoChallenge);
        let n = a.begin().unwrap().unwrap();
        let good = answer(&secret(), &n, b"s");
        let t = Instant::now();
        assert_eq!(a.answer(b"s", &[0; 32], "t"), AuthOutcome::Rejected);
        assert!(
            t.elapsed() >= Duration::from_millis(50),
            "failure must be delayed"
        );
        // the nonce was spent by the failed try: the right answer is now too late
        assert_eq!(a.answer(b"s", &good, "t"), AuthOutcome::NoChallenge);
        let n2 = a.begin().unwrap().unwrap();
        assert_ne!(n, n2);
        // an answer to the old nonce does not fit the new one (replay)
        assert_eq!(a.answer(b"s", &good, "t"), AuthOutcome::Rejected);
        let n3 = a.begin().unwrap().unwrap();
        assert_eq!(
            a.answer(b"s", &answer(&secret(), &n3, b"s"), "t"),
            AuthOutcome::Accepted
        );
        assert!(a.may_proceed());
        // and a replay of the accepted answer finds no challenge
        assert_eq!(
            a.answer(b"s", &answer(&secret(), &n3, b"s"), "t"),
            AuthOutcome::NoChallenge
        );

        let mut b = Authenticator::new(Some(secret()), fast());
        for want in [
            AuthOutcome::Rejected,
            AuthOutcome::Rejected,
            AuthOutcome::TooManyFailures,
        ] {
            b.begin().unwrap();
            assert_eq!(b.answer(b"s", &[1; 32], "t"), want);
        }
    }

    #[test]
    fn no_secret_means_open() {
        let mut a = Authenticator::new(None, fast());
        assert!(!a.required() && a.may_proceed());
        assert_eq!(a.begin().unwrap(), None);
        assert_eq!(a.answer(b"s", &[0; 32], "t"), AuthOutcome::NotConfigured);
    }

    #[test]
    fn load_refuses_group_or_world_access() {
        let dir = std::env::temp_dir().join(format!("cyrvault-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("secret");
        std::fs::write(&p, b"0123456789abcdef-file\n").unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o604, false),
            (0o620, false),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = Secret::load(&p, "cyrvault_secret_file");
            assert_eq!(r.is_ok(), ok, "mode {mode:o}: {r:?}");
            if let Err(e) = r {
                let msg = e.to_string();
                assert!(
                    msg.contains("chmod 600") && msg.contains("cyrvault_secret_file"),
                    "{msg}"
                );
            }
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Secret::load(&p, "x").unwrap().0, b"0123456789abcdef-file");
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(Secret::load(&link, "x").is_err(), "symlinks are refused");
        assert!(Secret::load(&dir.join("missing"), "x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
