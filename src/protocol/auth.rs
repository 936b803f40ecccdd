//! The pure part of the `AUTH` extension, shared by the service (verify) and our client
//! (answer): `HMAC-SHA256(secret, nonce || "cyrvault-auth-v1" || 0x00 || slot)`.
//! Secrets, nonces and the session state live in `service::auth`.
#![forbid(unsafe_code)]

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::AUTH_LEN;

type HmacSha256 = Hmac<Sha256>;

/// Fixed label mixed into every answer; a new scheme gets a new label.
pub const CONTEXT_LABEL: &[u8] = b"cyrvault-auth-v1";

fn mac(secret: &[u8], nonce: &[u8; AUTH_LEN], slot: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: this cannot fail
    let mut m = match <HmacSha256 as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("hmac takes keys of any length"),
    };
    m.update(nonce);
    m.update(CONTEXT_LABEL);
    m.update(&[0]);
    m.update(slot);
    m
}

/// The answer to `nonce` when talking to server `slot`.
pub fn auth_answer(secret: &[u8], nonce: &[u8; AUTH_LEN], slot: &[u8]) -> [u8; AUTH_LEN] {
    mac(secret, nonce, slot).finalize().into_bytes().into()
}

/// Check an answer, in constant time.
pub fn auth_verify(secret: &[u8], nonce: &[u8; AUTH_LEN], slot: &[u8], answer: &[u8]) -> bool {
    mac(secret, nonce, slot).verify_slice(answer).is_ok()
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
    fn answer_is_bound_to_everything() {
        let n = [7u8; AUTH_LEN];
        let a = auth_answer(b"secret-one-16byt", &n, b"imap1");
        assert!(auth_verify(b"secret-one-16byt", &n, b"imap1", &a));
        assert!(!auth_verify(b"secret-one-16byt", &n, b"imap2", &a));
        assert!(!auth_verify(b"secret-two-16byt", &n, b"imap1", &a));
        assert!(!auth_verify(
            b"secret-one-16byt",
            &[8; AUTH_LEN],
            b"imap1",
            &a
        ));
        assert!(!auth_verify(b"secret-one-16byt", &n, b"imap1", &a[..31]));
        // the label is part of it: a plain HMAC of nonce||slot differs
        let mut plain = <HmacSha256 as Mac>::new_from_slice(b"secret-one-16byt").unwrap();
        plain.update(&n);
        plain.update(b"imap1");
        assert_ne!(&plain.finalize().into_bytes()[..], &a[..]);
    }
}
