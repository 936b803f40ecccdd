//! The `AUTH` extension on the service side: nonces, checking the client's answer
//! against every configured secret (the current one and, during a rotation, the
//! next), and the proof that shows the client this server knows the secret too.
//! The MACs themselves are `protocol::auth`; doc/protocol.md 2.2 has the exchange.
#![forbid(unsafe_code)]

use crate::protocol::AUTH_LEN;
use crate::protocol::auth::{BINDING_LEN, Transcript, server_proof, verify_client};
use crate::secret::Secret;
use crate::{Error, Result};

/// A fresh random nonce from the operating system.
pub fn new_nonce() -> Result<[u8; AUTH_LEN]> {
    let mut n = [0u8; AUTH_LEN];
    getrandom::getrandom(&mut n)
        .map_err(|e| Error::Other(format!("getting random bytes for an auth nonce: {e}")))?;
    Ok(n)
}

/// What an `AUTH ANSWER` came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The answer was right: send this proof; the session is authenticated.
    Accepted([u8; AUTH_LEN]),
    /// No secret is configured on this server.
    NotConfigured,
    /// No challenge is outstanding (never asked, or already answered).
    NoChallenge,
    /// Wrong answer; the challenge is spent.
    Rejected,
}

/// Per-session authentication state.
#[derive(Debug)]
pub struct Authenticator {
    secrets: Vec<Secret>,
    /// `(server nonce, client nonce)` of the outstanding challenge.
    pending: Option<([u8; AUTH_LEN], [u8; AUTH_LEN])>,
    authenticated: bool,
}

impl Authenticator {
    /// `secrets`: every secret an answer may be made with (empty: AUTH not offered).
    pub fn new(secrets: Vec<Secret>) -> Self {
        Authenticator {
            secrets,
            pending: None,
            authenticated: false,
        }
    }

    /// Whether a secret is configured (then `AUTH` is offered).
    pub fn offered(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// Whether `AUTH` succeeded in this session.
    pub fn authenticated(&self) -> bool {
        self.authenticated
    }

    /// `AUTH BEGIN <client nonce>`: a new server nonce, replacing any outstanding
    /// challenge. None if no secret is configured.
    pub fn begin(&mut self, client_nonce: [u8; AUTH_LEN]) -> Result<Option<[u8; AUTH_LEN]>> {
        if self.secrets.is_empty() {
            return Ok(None);
        }
        let n = new_nonce()?;
        self.pending = Some((n, client_nonce));
        Ok(Some(n))
    }

    /// `AUTH ANSWER`: check and spend the outstanding challenge. Every secret is
    /// tried (each comparison in constant time); the proof is made with the one that
    /// matched, so a client that knows either secret of a rotation can verify it.
    pub fn answer(
        &mut self,
        slot: &[u8],
        binding: Option<&[u8; BINDING_LEN]>,
        given: &[u8; AUTH_LEN],
    ) -> AuthOutcome {
        if self.secrets.is_empty() {
            return AuthOutcome::NotConfigured;
        }
        let Some((server_nonce, client_nonce)) = self.pending.take() else {
            return AuthOutcome::NoChallenge;
        };
        let t = Transcript {
            server_nonce: &server_nonce,
            client_nonce: &client_nonce,
            slot,
            binding,
        };
        let mut matched = None;
        for s in &self.secrets {
            if verify_client(s.bytes(), &t, given) && matched.is_none() {
                matched = Some(s);
            }
        }
        match matched {
            Some(s) => {
                self.authenticated = true;
                AuthOutcome::Accepted(server_proof(s.bytes(), &t))
            }
            None => AuthOutcome::Rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::auth::{client_answer, verify_server};

    fn secret(s: &[u8]) -> Secret {
        Secret::from_bytes(s).unwrap()
    }

    const OLD: &[u8] = b"old-secret-abcdefghijklmnopqrstuvwxyz";
    const NEW: &[u8] = b"new-secret-ABCDEFGHIJKLMNOPQRSTUVWXYZ";

    fn answer_for(key: &[u8], sn: &[u8; 32], cn: &[u8; 32], slot: &[u8]) -> [u8; 32] {
        client_answer(
            key,
            &Transcript {
                server_nonce: sn,
                client_nonce: cn,
                slot,
                binding: None,
            },
        )
    }

    #[test]
    fn nonces_are_fresh() {
        assert_ne!(new_nonce().unwrap(), new_nonce().unwrap());
    }

    #[test]
    fn single_use_challenge_proof_and_rotation() {
        let mut a = Authenticator::new(vec![secret(OLD), secret(NEW)]);
        assert!(a.offered() && !a.authenticated());
        assert_eq!(a.answer(b"s", None, &[0; 32]), AuthOutcome::NoChallenge);
        let cn = [5u8; 32];
        let sn = a.begin(cn).unwrap().unwrap();
        let good = answer_for(NEW, &sn, &cn, b"s");
        assert_eq!(a.answer(b"s", None, &[0; 32]), AuthOutcome::Rejected);
        // the challenge was spent by the failed try
        assert_eq!(a.answer(b"s", None, &good), AuthOutcome::NoChallenge);
        // either secret of the rotation works, and the proof is made with it
        for key in [OLD, NEW] {
            let mut a = Authenticator::new(vec![secret(OLD), secret(NEW)]);
            let sn = a.begin(cn).unwrap().unwrap();
            let AuthOutcome::Accepted(proof) =
                a.answer(b"s", None, &answer_for(key, &sn, &cn, b"s"))
            else {
                panic!("not accepted");
            };
            let t = Transcript {
                server_nonce: &sn,
                client_nonce: &cn,
                slot: b"s",
                binding: None,
            };
            assert!(verify_server(key, &t, &proof));
            assert!(a.authenticated());
        }
        // an answer to an old challenge does not fit a new one (replay)
        let mut b = Authenticator::new(vec![secret(OLD)]);
        let sn1 = b.begin(cn).unwrap().unwrap();
        let old_answer = answer_for(OLD, &sn1, &cn, b"s");
        let _ = b.begin(cn).unwrap().unwrap();
        assert_eq!(b.answer(b"s", None, &old_answer), AuthOutcome::Rejected);
        // a TLS-bound answer does not fit a plaintext transcript
        let sn = b.begin(cn).unwrap().unwrap();
        let bound = client_answer(
            OLD,
            &Transcript {
                server_nonce: &sn,
                client_nonce: &cn,
                slot: b"s",
                binding: Some(&[1; 32]),
            },
        );
        assert_eq!(b.answer(b"s", None, &bound), AuthOutcome::Rejected);
    }

    #[test]
    fn no_secret_offers_nothing() {
        let mut a = Authenticator::new(Vec::new());
        assert!(!a.offered());
        assert_eq!(a.begin([0; 32]).unwrap(), None);
        assert_eq!(a.answer(b"s", None, &[0; 32]), AuthOutcome::NotConfigured);
    }
}
