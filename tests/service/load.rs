//! Consistency under load: while 4 IMAP clients APPEND, STORE flags, EXPUNGE and
//! RENAME in one user, 200 consecutive SNAPSHOTs of that user through the running
//! service are each internally consistent, and every live record's message file
//! hashes to its GUID or is reported gone.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cyrvault::cyrus::index::{Index, parse_index};
use cyrvault::cyrus::{Guid, crc32, header};
use cyrvault::protocol::ProtocolError;
use cyrvault::protocol::request::Request;
use cyrvault_host::imap::Arg;
use cyrvault_testkit::sandbox::MailGen;

use super::*;

/// Check one folder of a snapshot: `cyrus.header` parses, `cyrus.index` parses
/// with valid header and record CRCs, holds exactly `num_records` records, and its
/// `header_file_crc` is the CRC of the header sent with it (both were read under
/// the same lock). Returns the index.
pub fn check_folder(f: &SnapFolder) -> Index {
    let name = String::from_utf8_lossy(&f.name);
    let hbytes = f
        .files
        .get("header")
        .unwrap_or_else(|| panic!("{name}: no header"));
    let ibytes = f
        .files
        .get("index")
        .unwrap_or_else(|| panic!("{name}: no index"));
    let h = header::parse_header(hbytes).unwrap_or_else(|e| panic!("{name}: header: {e}"));
    assert_eq!(
        h.uniqueid.as_deref(),
        Some(f.uniqueid.as_str()),
        "{name}: uniqueid in cyrus.header"
    );
    let index = parse_index(ibytes).unwrap_or_else(|e| panic!("{name}: index: {e}"));
    let hd = &index.header;
    assert_eq!(index.records.len(), hd.num_records as usize, "{name}");
    let end = u64::from(hd.start_offset) + u64::from(hd.num_records) * u64::from(hd.record_size);
    assert!(
        ibytes.len() as u64 >= end,
        "{name}: index shorter than its records"
    );
    assert_eq!(
        hd.header_file_crc,
        crc32(hbytes),
        "{name}: index and header from different moments"
    );
    index
}

/// FDATA every record of `index` that is not UNLINKED, 1024 UIDs per request:
/// each file must hash to the record's GUID, or be `NO no such file <uid>`.
/// Returns (files verified, files reported gone), or the protocol error (a folder
/// renamed away meanwhile gives `No("no such folder ...")`).
pub fn fetch_and_verify(
    c: &mut TcpClient,
    user: &[u8],
    folder: &[u8],
    index: &Index,
) -> Result<(usize, usize), ProtocolError> {
    let live: Vec<(u32, Guid)> = index
        .records
        .iter()
        .filter(|r| !r.is_unlinked())
        .map(|r| (r.uid, r.guid))
        .collect();
    let (mut ok, mut gone) = (0, 0);
    for batch in live.chunks(1024) {
        let uids: Vec<u32> = batch.iter().map(|(u, _)| *u).collect();
        let mut rx = ByUid::default();
        c.fdata(user, folder, &uids, &mut rx)?;
        for (uid, guid) in batch {
            match rx.files.get(uid) {
                Some(bytes) => {
                    assert_eq!(
                        Guid::of(bytes),
                        *guid,
                        "uid {uid}: file does not hash to its GUID"
                    );
                    ok += 1;
                }
                None => {
                    let want = format!("no such file {uid}");
                    assert!(
                        rx.missing.contains(&want),
                        "uid {uid}: neither sent nor reported gone: {:?}",
                        rx.missing
                    );
                    gone += 1;
                }
            }
        }
        assert_eq!(rx.files.len() + rx.missing.len(), batch.len());
    }
    Ok((ok, gone))
}

/// What the IMAP writers did and what went wrong for them.
#[derive(Default)]
struct Writers {
    ops: AtomicU64,
    errors: Mutex<Vec<String>>,
}

fn writer(sb: &cyrvault_testkit::sandbox::Sandbox, w: &Writers, stop: &AtomicBool, role: usize) {
    let fail = |what: String| w.errors.lock().unwrap().push(what);
    let mut c = match sb.login("load") {
        Ok(c) => c,
        Err(e) => return fail(format!("login: {e}")),
    };
    let mut mg = MailGen::new(100 + role as u64).with_max_size(4096);
    let mut renamed = false;
    if (role == 1 || role == 2)
        && let Err(e) = c.select("INBOX")
    {
        return fail(format!("select: {e}"));
    }
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let r = match role {
            0 => c
                .append("INBOX", &["\\Seen"], None, &mg.message().bytes)
                .map(|_| ()),
            1 => {
                let op = if n.is_multiple_of(2) {
                    "+FLAGS"
                } else {
                    "-FLAGS"
                };
                c.uid_store("1:*", op, &["\\Flagged", "$Work"]).map(|_| ())
            }
            2 => c.select("INBOX").and_then(|info| {
                if info.exists > 30 {
                    c.run(&[
                        Arg::Atom("STORE"),
                        Arg::Atom("1:10"),
                        Arg::Atom("+FLAGS.SILENT"),
                        Arg::Atom("(\\Deleted)"),
                    ])?;
                    c.expunge()?;
                }
                Ok(())
            }),
            _ => {
                let (from, to) = if renamed {
                    ("INBOX.Ren2", "INBOX.Ren")
                } else {
                    ("INBOX.Ren", "INBOX.Ren2")
                };
                renamed = !renamed;
                c.rename(from, to)
            }
        };
        match r {
            Ok(()) => {
                w.ops.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => return fail(format!("writer {role} op {n}: {e}")),
        }
        // leave the two cores to Cyrus and the service now and then
        std::thread::sleep(Duration::from_millis(if role == 0 { 5 } else { 10 }));
    }
    let _ = c.logout();
}

#[test]
fn snapshots_under_load_are_consistent() {
    // semidelayed: EXPUNGE unlinks the files at close, so FDATA meets vanished files
    let sb = start("svcload", &[("expunge_mode", "semidelayed")], vec![]);
    sb.create_user("load", None).unwrap();
    sb.create_folder("load", "Ren", None).unwrap();
    let mut mg = MailGen::new(7).with_max_size(4096);
    let seed: Vec<Vec<u8>> = (0..40).map(|_| mg.message().bytes).collect();
    let refs: Vec<&[u8]> = seed.iter().map(Vec::as_slice).collect();
    bulk_append(&sb, "load", "INBOX", &refs[..30], 30);
    bulk_append(&sb, "load", "INBOX.Ren", &refs[30..], 10);

    let slot = sb.servername.as_bytes().to_vec();
    let writers = Writers::default();
    let stop = AtomicBool::new(false);
    let (mut verified, mut gone, mut folder_races, mut snaps) = (0, 0, 0, 0);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for role in 0..4 {
            let (sb, w, stop) = (&sb, &writers, &stop);
            s.spawn(move || writer(sb, w, stop, role));
        }
        // stop the writers even if an assertion below panics
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _guard = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_millis(200));
        let mut c = client(&sb, "cyrvaultd");
        for _ in 0..200 {
            let mut snap = Grouped::default();
            c.fetch(
                &Request::Snapshot {
                    slot: slot.clone(),
                    user: b"load".to_vec(),
                },
                &mut snap,
            )
            .expect("SNAPSHOT");
            snaps += 1;
            for f in &snap.folders {
                if f.missing.iter().any(|m| m.starts_with("no such folder")) {
                    folder_races += 1; // renamed between listing and opening
                    continue;
                }
                let index = check_folder(f);
                match fetch_and_verify(&mut c, b"load", &f.name, &index) {
                    Ok((o, g)) => {
                        verified += o;
                        gone += g;
                    }
                    Err(ProtocolError::No(t)) if t.starts_with("no such folder") => {
                        folder_races += 1
                    }
                    Err(e) => panic!("FDATA {}: {e}", String::from_utf8_lossy(&f.name)),
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let errors = writers.errors.lock().unwrap().clone();
    eprintln!(
        "load: {snaps} snapshots in {:?}; {verified} files verified, {gone} reported gone, \
         {folder_races} rename races; IMAP ops {}",
        t0.elapsed(),
        writers.ops.load(Ordering::Relaxed)
    );
    assert!(errors.is_empty(), "IMAP clients saw errors: {errors:?}");
    assert_eq!(snaps, 200);
    assert!(
        writers.ops.load(Ordering::Relaxed) > 200,
        "the writers barely ran"
    );
    assert!(!sb.syslog().contains("IOERROR"), "{}", sb.syslog_tail(4000));
}
