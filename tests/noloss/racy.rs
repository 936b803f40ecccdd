//! The "racy" stat rule on the server's clock. A flag change in the same second as the
//! run read the folder leaves `cyrus.index`'s stat as it was (same size, inode and
//! whole-second mtime): only the racy mark makes the next run read the folder again.
//! The change is made by a `Progress::folder_read` hook right after `FMETA` (real
//! Cyrus, real IMAP), in the second the folder was written and read.
//!
//! With `SERVERTIME` the mark is taken against the server's clock while it held the
//! folder: once that second is over, the folder is unchanged again. Against a stock
//! server (base protocol) the newest mtime seen stands in for the server's clock, so
//! the most recently changed folder is read again every run (doc/backup.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cyrvault_host::backup::Progress;
use cyrvault_host::imap::Client;
use cyrvault_testkit::sandbox::MailGen;

use super::env;

/// Sets `\Flagged` on UID 2 of INBOX when the run has read INBOX's metadata.
struct FlagWhenRead {
    imap: SocketAddr,
    fired: AtomicBool,
}

impl Progress for FlagWhenRead {
    fn user_started(&self, _user: &str, _folders: usize) {}
    fn folder(&self, _user: &str, _name: &str) {}
    fn bytes(&self, _n: u64) {}
    fn folder_read(&self, _user: &str, name: &str) {
        if name != "INBOX" || self.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut c = Client::connect(self.imap).unwrap();
        c.login("rosa", "pw").unwrap();
        c.select("INBOX").unwrap();
        c.uid_store("2", "+FLAGS", &["\\Flagged"]).unwrap();
        c.logout().unwrap();
    }
}

/// Sleep until just after the start of the next second.
fn next_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    std::thread::sleep(Duration::from_nanos(
        1_000_000_000 - u64::from(now.subsec_nanos()) + 20_000_000,
    ));
}

fn racy(base: bool) {
    let e = env(if base { "racybase" } else { "racy" }, base);
    e.sb.create_user("rosa", None).unwrap();
    let mut mail = MailGen::new(5);
    let m = mail.message_of_size(2000);
    e.sb.append("rosa", None, &[], Some(m.date), &m.bytes)
        .unwrap();
    // A first run makes the archive, so the next one is quick: written, read and
    // flagged within one second.
    assert!(!e.backup("rosa").has_problems());
    let m = mail.message_of_size(2000);
    next_second();
    e.sb.append("rosa", None, &[], Some(m.date), &m.bytes)
        .unwrap();
    let hook = Arc::new(FlagWhenRead {
        imap: e.sb.imap_addr,
        fired: AtomicBool::new(false),
    });
    let r1 = e.backup_with("rosa", Some(hook.clone()));
    assert!(hook.fired.load(Ordering::SeqCst));
    assert!(!r1.has_problems(), "{r1:?}");
    std::thread::sleep(Duration::from_millis(2100));
    let r2 = e.backup("rosa");
    assert_eq!(r2.folders_changed, 1, "INBOX read again: {r2:?}");
    let cat = e.catalog("rosa");
    let inbox = cat.folder_by_name_at("INBOX", 3).unwrap().unwrap();
    let rec = cat.record_at(&inbox.uniqueid, 2, 3).unwrap().unwrap();
    assert_ne!(
        rec.system_flags & cyrvault::cyrus::index::FLAG_FLAGGED,
        0,
        "\\Flagged seen by run 3: {rec:?}"
    );
    drop(cat);
    let r3 = e.backup("rosa");
    if base {
        // INBOX holds the newest mtime the run sees: racy against that bound.
        assert_eq!(r3.folders_changed, 1, "{r3:?}");
    } else {
        assert_eq!(
            (r3.folders_changed, r3.folders_unchanged),
            (0, 1),
            "the server's clock has moved past the change: {r3:?}"
        );
    }
}

#[test]
fn a_flag_change_in_the_second_of_the_read_is_caught_next_run() {
    racy(false);
}

#[test]
fn racy_rule_with_the_base_protocol_uses_the_newest_mtime() {
    racy(true);
}
