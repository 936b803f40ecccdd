//! The client side of the wire protocol: everything our backup client reads from a
//! server (reply lines, listings, DATA frames with their SHA-1, CAPABILITY, AUTH
//! with the server's proof), the input being what a hostile server sends.

use cyrvault::protocol::client::{Client, Collect};
use cyrvault::protocol::parse_reply;
use cyrvault::protocol::request::Request;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        for line in data.split(|&b| b == b'\n') {
            let _ = parse_reply(line);
        }
        let mut c = Client::new(data, std::io::sink(), b"imap1");
        let _ = c.capabilities();
        let _ = c.authenticate(b"fuzz-secret-0123456789abcdefghijklmn", None);
        let _ = c.users();
        let _ = c.partitions();
        let _ = c.meta_listing(b"bob");
        let _ = c.fmultistatus(b"bob");
        let _ = c.fmeta_listing(b"bob", b"INBOX");
        let mut rx = Collect::default();
        let _ = c.fdata(b"bob", b"INBOX", &[1, 2, 3], &mut rx);
        let snap = Request::Snapshot {
            slot: b"imap1".to_vec(),
            user: b"bob".to_vec(),
        };
        let _ = c.fetch(&snap, &mut rx);
        let _ = c.ping();
    });
}
