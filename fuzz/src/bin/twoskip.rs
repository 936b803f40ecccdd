//! Cyrus's twoskip databases (mailboxes.db, annotations.db): header and every record,
//! and the mailbox list built from the records.

use cyrvault::cyrus::{mboxlist, twoskip};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = twoskip::parse_twoskip_header(data);
        if let Ok(records) = twoskip::read_all(data) {
            let _ = twoskip::prefix(&records, b"user.");
            let _ = mboxlist::parse_mboxlist(&records, "DELETED");
        }
    });
}
