//! Cyrus's dlist syntax (mailboxes.db values, the replication protocol): parse, and
//! print what parsed, which must parse again to the same value.

use cyrvault::cyrus::dlist;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = dlist::parse_dlist_line(data);
        if let Ok(d) = dlist::parse_dlist(data) {
            let printed = dlist::print_dlist(&d);
            let again = dlist::parse_dlist(&printed).expect("a printed dlist parses");
            assert_eq!(again, d, "print/parse round trip");
        }
    });
}
