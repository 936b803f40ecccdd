//! The pure part of the `AUTH` extension (doc/protocol.md 2.2), shared by the service
//! (verify the client, prove itself) and our client (answer, check the proof).
//!
//! Both sides pick a fresh 32-byte nonce. The client's answer and the server's proof
//! are HMAC-SHA256 under the shared secret over the same transcript, with a different
//! role label so that one can never stand in for the other:
//!
//! ```text
//! HMAC(secret, "cyrvault-auth-v2" 0x00 role 0x00 server_nonce client_nonce
//!              u16be(len slot) slot  binding)
//! role    = "client" | "server"
//! binding = 0x00                                  (plaintext session)
//!         | 0x01 <32 bytes of the TLS exporter>   (inside TLS: RFC 5705/8446
//!                                                  exporter, label EXPORTER_LABEL)
//! ```
//!
//! The secret never crosses the wire; the server's nonce makes a recorded answer
//! useless; the client's nonce makes a recorded proof useless; the slot binds both to
//! one server; the TLS binding ties them to this one TLS session, so a relay that
//! terminates TLS on both sides cannot pass an exchange through.
#![forbid(unsafe_code)]

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::AUTH_LEN;

type HmacSha256 = Hmac<Sha256>;

/// Fixed label mixed into every MAC; a new scheme gets a new label.
pub const CONTEXT_LABEL: &[u8] = b"cyrvault-auth-v2";

/// The TLS exporter label of the channel binding (RFC 5705 private-use label).
pub const EXPORTER_LABEL: &[u8] = b"EXPERIMENTAL-cyrvault-auth-binding";

/// Bytes taken from the TLS exporter for the binding.
pub const BINDING_LEN: usize = 32;

/// What both MACs cover besides the secret and the role.
#[derive(Debug, Clone, Copy)]
pub struct Transcript<'a> {
    /// The server's `CHALLENGE` nonce.
    pub server_nonce: &'a [u8; AUTH_LEN],
    /// The client's nonce from `AUTH <slot> BEGIN <nonce>`.
    pub client_nonce: &'a [u8; AUTH_LEN],
    /// The slot (the server's `servername`).
    pub slot: &'a [u8],
    /// The TLS exporter output when the session runs inside TLS.
    pub binding: Option<&'a [u8; BINDING_LEN]>,
}

fn mac(secret: &[u8], role: &[u8], t: &Transcript<'_>) -> HmacSha256 {
    // HMAC takes keys of any length: this cannot fail
    let mut m = match <HmacSha256 as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("hmac takes keys of any length"),
    };
    m.update(CONTEXT_LABEL);
    m.update(&[0]);
    m.update(role);
    m.update(&[0]);
    m.update(t.server_nonce);
    m.update(t.client_nonce);
    // the slot is at most MAX_TOKEN (4096) bytes on the wire; longer never verifies
    let len = u16::try_from(t.slot.len()).unwrap_or(u16::MAX);
    m.update(&len.to_be_bytes());
    m.update(t.slot);
    match t.binding {
        None => m.update(&[0]),
        Some(b) => {
            m.update(&[1]);
            m.update(b);
        }
    }
    m
}

/// The client's answer.
pub fn client_answer(secret: &[u8], t: &Transcript<'_>) -> [u8; AUTH_LEN] {
    mac(secret, b"client", t).finalize().into_bytes().into()
}

/// Check a client's answer, in constant time.
pub fn verify_client(secret: &[u8], t: &Transcript<'_>, answer: &[u8]) -> bool {
    mac(secret, b"client", t).verify_slice(answer).is_ok()
}

/// The server's proof, sent after a right answer.
pub fn server_proof(secret: &[u8], t: &Transcript<'_>) -> [u8; AUTH_LEN] {
    mac(secret, b"server", t).finalize().into_bytes().into()
}

/// Check the server's proof, in constant time.
pub fn verify_server(secret: &[u8], t: &Transcript<'_>, proof: &[u8]) -> bool {
    mac(secret, b"server", t).verify_slice(proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        // RFC 4231 test case 2 (key "Jefe") through the same Hmac type
        let mut m = <HmacSha256 as Mac>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn answer_and_proof_are_bound_to_everything() {
        let (sn, cn, b) = ([7u8; AUTH_LEN], [9u8; AUTH_LEN], [3u8; BINDING_LEN]);
        let t = Transcript {
            server_nonce: &sn,
            client_nonce: &cn,
            slot: b"imap1",
            binding: None,
        };
        let key = b"secret-one-of-at-least-32-bytes!";
        let a = client_answer(key, &t);
        assert!(verify_client(key, &t, &a));
        let p = server_proof(key, &t);
        assert!(verify_server(key, &t, &p));
        // the two roles never stand in for each other (no reflection)
        assert_ne!(a, p);
        assert!(!verify_server(key, &t, &a));
        assert!(!verify_client(key, &t, &p));
        let variants = [
            Transcript {
                slot: b"imap2",
                ..t
            },
            Transcript {
                server_nonce: &cn,
                ..t
            },
            Transcript {
                client_nonce: &sn,
                ..t
            },
            Transcript {
                binding: Some(&b),
                ..t
            },
        ];
        for v in &variants {
            assert!(!verify_client(key, v, &a), "{v:?}");
            assert!(!verify_server(key, v, &p), "{v:?}");
        }
        assert!(!verify_client(b"secret-two-of-at-least-32-bytes!", &t, &a));
        assert!(!verify_client(key, &t, &a[..31]));
        // bound to the binding bytes themselves
        let tb = Transcript {
            binding: Some(&b),
            ..t
        };
        let other = [4u8; BINDING_LEN];
        let ab = client_answer(key, &tb);
        assert!(verify_client(key, &tb, &ab));
        assert!(!verify_client(
            key,
            &Transcript {
                binding: Some(&other),
                ..t
            },
            &ab
        ));
    }
}
