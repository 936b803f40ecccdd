//! The service side of the wire protocol: a whole session over the input bytes as a
//! client would send them (line reader, request parser, access gate, AUTH, every
//! command against a small in-memory spool). The first byte picks the access policy
//! (closed with a secret, closed without one, open), as cyrvaultd's options would.

use cyrvault::protocol::parse_request_line;
use cyrvault::secret::Secret;
use cyrvault::service::{AccessPolicy, ServiceStats, Session, SessionConfig};
use cyrvault_fuzz::MemSpool;

fn main() {
    let secret = Secret::from_bytes(b"fuzz-secret-0123456789abcdefghijklmn").unwrap();
    let stats = ServiceStats::default();
    afl::fuzz!(|data: &[u8]| {
        let Some((mode, wire)) = data.split_first() else {
            return;
        };
        for line in wire.split(|&b| b == b'\n') {
            let _ = parse_request_line(line, true);
        }
        let access = match mode % 3 {
            0 => AccessPolicy::required(vec![secret.clone()]),
            1 => AccessPolicy::required(Vec::new()),
            _ => AccessPolicy::open(vec![secret.clone()]),
        };
        let cfg = SessionConfig::new(b"imap1", access);
        let mut out = Vec::new();
        let _ = Session::new(&cfg, &MemSpool, &stats).run(&mut &wire[..], &mut out);
    });
}
