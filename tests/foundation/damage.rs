//! Damaged copies of a live mailbox's `cyrus.index`, `cyrus.header` and
//! `cyrus.cache`: the binary and the library give typed errors naming the file
//! and the offset, never a panic.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cyrvault::cyrus::crc32;
use cyrvault::cyrus::index::parse_index;
use cyrvault::lock::{LockMode, Locker};
use cyrvault_testkit::sandbox::{PopulatePlan, make_history, populate};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{conf, cyrvault, start};

/// `cyrvault inspect <what> <dir>` must fail cleanly (EX_DATAERR, never a panic's
/// 101) with a message naming `file` and `at offset <offset>`.
fn binary_refuses(what: &str, dir: &Path, file: &str, offset: u64, also: &str) {
    let out = cyrvault(&["inspect", what, dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(65),
        "inspect {what}: {}: {err}",
        out.status
    );
    let path = dir.join(file);
    assert!(err.contains(path.to_str().unwrap()), "no path in {err:?}");
    assert!(
        err.contains(&format!(" at offset {offset}: ")),
        "want offset {offset}: {err:?}"
    );
    assert!(err.contains(also), "want {also:?}: {err:?}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A scratch mailbox directory holding the three files.
fn put(dir: &Path, index: &[u8], header: &[u8], cache: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("cyrus.index"), index).unwrap();
    std::fs::write(dir.join("cyrus.header"), header).unwrap();
    std::fs::write(dir.join("cyrus.cache"), cache).unwrap();
}

fn fix_header_crc(b: &mut [u8], hlen: usize) {
    let crc = crc32(&b[..hlen - 4]);
    b[hlen - 4..hlen].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn damaged_live_files_give_typed_errors_never_panics() {
    let sb = start("found-damage");
    let user = "finn";
    let pop = populate(
        &sb,
        &PopulatePlan {
            users: vec![user.into()],
            folders_per_user: 0,
            messages: 30,
            seed: 4242,
            max_message_size: 12 * 1024,
            fixtures: false,
            ..PopulatePlan::default()
        },
    )
    .unwrap();
    make_history(&sb, &pop, 1).unwrap();
    let live = sb.mbpath(&sb.mailbox_name(user, None)).unwrap();
    // copy the three files under the index lock, as a Cyrus reader would
    let locker = Locker::new(&conf(&sb), Duration::from_secs(10)).unwrap();
    let lock = locker
        .index(&live.join("cyrus.index"), LockMode::Shared)
        .unwrap();
    let read = |f: &str| std::fs::read(live.join(f)).unwrap();
    let (ib, hb, cb) = (
        read("cyrus.index"),
        read("cyrus.header"),
        read("cyrus.cache"),
    );
    drop(lock);
    let good = parse_index(&ib).unwrap();
    let (hlen, rsize) = (
        good.header.start_offset as usize,
        good.header.record_size as usize,
    );
    let used = hlen + good.records.len() * rsize;
    assert!(good.records.len() >= 20 && good.records.iter().any(|r| r.is_expunged()));
    let work: PathBuf = sb.root.join("damage");

    // -- a handful through the binary
    let d = work.join("truncated");
    put(&d, &ib[..hlen + 2 * rsize + 50], &hb, &cb);
    binary_refuses(
        "index",
        &d,
        "cyrus.index",
        (hlen + 2 * rsize) as u64,
        "record 3",
    );
    let d = work.join("header-crc");
    let mut b = ib.clone();
    b[44] ^= 0x01; // uidvalidity
    put(&d, &b, &hb, &cb);
    binary_refuses(
        "index",
        &d,
        "cyrus.index",
        (hlen - 4) as u64,
        "checksum mismatch",
    );
    let d = work.join("record-crc");
    let mut b = ib.clone();
    b[hlen + rsize + 35] ^= 0x10; // \Seen in record 2
    put(&d, &b, &hb, &cb);
    binary_refuses(
        "index",
        &d,
        "cyrus.index",
        (hlen + 2 * rsize - 4) as u64,
        "record 2",
    );
    let d = work.join("record-size");
    let mut b = ib.clone();
    b[16..20].copy_from_slice(&104u32.to_be_bytes());
    fix_header_crc(&mut b, hlen);
    put(&d, &b, &hb, &cb);
    binary_refuses(
        "index",
        &d,
        "cyrus.index",
        16,
        "bad record_size: 104 (expected 112)",
    );
    let d = work.join("header-file");
    put(&d, &ib, &hb[..40], &cb);
    binary_refuses("header", &d, "cyrus.header", 0, "cyrus.header");
    binary_refuses("index", &d, "cyrus.header", 0, "cyrus.header");
    let d = work.join("cache");
    let r = &good.records[1];
    let mut c = cb.clone();
    c[r.cache_offset as usize + 12] ^= 0x20;
    put(&d, &ib, &hb, &c);
    let out = cyrvault(&["inspect", "cache", d.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(d.join("cyrus.cache").to_str().unwrap()),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "cyrus.cache entry for uid {} at offset {}: checksum mismatch",
            r.uid, r.cache_offset
        )),
        "{text}"
    );
    let d = work.join("empty");
    put(&d, b"", &hb, &cb);
    binary_refuses("index", &d, "cyrus.index", 8, "truncated");
    let mut rng = SmallRng::seed_from_u64(0x0da3_a6e0);
    for i in 0..6 {
        let d = work.join(format!("random-{i}"));
        let mut b = ib.clone();
        let p = rng.gen_range(0..used);
        b[p] ^= rng.gen_range(1..=255u8);
        put(&d, &b, &hb, &cb);
        let out = cyrvault(&["inspect", "index", d.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "flip at {p}: {err}");
        assert!(
            err.contains(" at offset ") && err.contains("cyrus.index"),
            "{err}"
        );
    }

    // -- thousands through the library: seeded flips and cuts of all three files
    let d = work.join("random");
    let entries: Vec<(u64, u64)> = good
        .records
        .iter()
        .map(|r| {
            let e = cyrvault::cyrus::cache::parse_cache_entry(&cb, r.cache_offset).unwrap();
            (r.cache_offset, r.cache_offset + e.len)
        })
        .collect();
    const NAMES: [&str; 3] = ["cyrus.index", "cyrus.header", "cyrus.cache"];
    put(&d, &ib, &hb, &cb);
    let mut last = None;
    let mut counts = [0usize; 3];
    let t = Instant::now();
    for round in 0..3000u32 {
        let target = rng.gen_range(0..3usize);
        let orig = [&ib, &hb, &cb][target];
        let mut m = orig.clone();
        let mut single = None;
        if rng.gen_range(0..10) == 0 {
            m.truncate(rng.gen_range(0..orig.len()));
        } else {
            let n = if rng.gen_bool(0.5) {
                1
            } else {
                rng.gen_range(2..6)
            };
            for _ in 0..n {
                let p = rng.gen_range(0..m.len());
                m[p] ^= rng.gen_range(1..=255u8);
                single = (n == 1).then_some(p);
            }
        }
        // only the damaged file differs from the originals in `d`
        if let Some(prev) = last.replace(target) {
            std::fs::write(d.join(NAMES[prev]), [&ib, &hb, &cb][prev]).unwrap();
        }
        std::fs::write(d.join(NAMES[target]), &m).unwrap();
        let ctx = format!(
            "round {round}: file {target}, flip {single:?}, len {}",
            m.len()
        );
        let results = std::panic::catch_unwind(|| {
            (
                cyrvault::inspect::index(&d).map(|_| ()),
                cyrvault::inspect::header(&d).map(|_| ()),
                cyrvault::inspect::cache(&d, None),
            )
        })
        .unwrap_or_else(|_| panic!("inspect panicked: {ctx}"));
        let errors = [&results.0.as_ref().err(), &results.1.as_ref().err()];
        for e in errors
            .into_iter()
            .flatten()
            .chain(results.2.as_ref().err().iter())
        {
            let s = e.to_string();
            assert!(
                s.starts_with(d.to_str().unwrap()) && s.contains(" at offset "),
                "{ctx}: {s}"
            );
            assert!(matches!(e, cyrvault::Error::Parse { .. }), "{ctx}: {e:?}");
        }
        match target {
            // the index: any change to its used part is caught
            0 => {
                let touched = m.len() < used || single.is_some_and(|p| p < used);
                if touched {
                    assert!(results.0.is_err(), "{ctx}: damage not detected");
                    counts[0] += 1;
                }
            }
            1 => counts[1] += usize::from(results.0.is_err() || results.1.is_err()),
            // the cache: a single flip inside an entry fails exactly that entry
            _ => {
                let report = results.2.as_ref();
                if let (Some(p), Ok(rep)) = (single, report) {
                    let p = p as u64;
                    for (e, (from, to)) in rep.entries.iter().zip(&entries) {
                        let inside = (*from..*to).contains(&p);
                        assert_eq!(!e.crc_ok, inside, "{ctx}: uid {} {:?}", e.uid, e.error);
                        if inside {
                            let msg = e.error.as_deref().unwrap_or("");
                            assert!(msg.contains(" at offset "), "{ctx}: {msg}");
                            counts[2] += 1;
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "damage: 3000 mutations in {:?}; caught: index {}, header {}, cache entries {}",
        t.elapsed(),
        counts[0],
        counts[1],
        counts[2]
    );
    assert!(counts[0] > 400 && counts[2] > 200, "{counts:?}");

    // mailboxes.db of the same server: a cut through the binary, flips through
    // the library (twoskip checks a CRC per record)
    let db = {
        let p = sb.config_dir().join("mailboxes.db");
        let _l = locker.file(&p, LockMode::Shared, true).unwrap();
        std::fs::read(&p).unwrap()
    };
    let dbfile = work.join("mailboxes.db");
    std::fs::write(&dbfile, &db[..db.len() - 10]).unwrap();
    let out = cyrvault(&["inspect", "mailboxes", dbfile.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains(dbfile.to_str().unwrap()) && err.contains(" at offset "),
        "{err}"
    );
    let mut db_caught = 0;
    for round in 0..1000 {
        let mut m = db.clone();
        for _ in 0..rng.gen_range(1..4) {
            let p = rng.gen_range(0..m.len());
            m[p] ^= rng.gen_range(1..=255u8);
        }
        std::fs::write(&dbfile, &m).unwrap();
        let r = std::panic::catch_unwind(|| cyrvault::inspect::mailboxes(&dbfile, "DELETED"))
            .unwrap_or_else(|_| panic!("inspect mailboxes panicked in round {round}"));
        if let Err(e) = r {
            let s = e.to_string();
            assert!(
                matches!(e, cyrvault::Error::Parse { .. }),
                "round {round}: {e:?}"
            );
            assert!(
                s.starts_with(dbfile.to_str().unwrap()) && s.contains(" at offset "),
                "{s}"
            );
            db_caught += 1;
        }
    }
    eprintln!(
        "damage: mailboxes.db ({} bytes): 1000 mutations, {db_caught} refused",
        db.len()
    );
    assert!(db_caught > 500, "{db_caught}");
}
