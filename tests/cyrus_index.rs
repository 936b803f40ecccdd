//! `cyrus.index` / `cyrus.cache` against files written by real Cyrus.
//!
//! Fixtures (tests/fixtures/cyrus-index, see its README): v12..v17 of one
//! mailbox made by Cyrus 3.6.1 (`make-fixtures.sh`), plus v9/v10/v12/v19 files
//! from older and newer Cyrus releases. The oracle is Cyrus's own output saved
//! next to them: `mbexamine` (non-expunged records, header counts, cache items)
//! and `unexpunge -l` (expunged records).

use std::path::PathBuf;

use cyrvault::cyrus::cache::{check_record, parse_cache_entry, parse_cache_generation};
use cyrvault::cyrus::index::{
    Index, IndexRecord, parse_header, parse_index, sync_crc_basic, write_header, write_index,
    write_record,
};
use cyrvault::cyrus::{Guid, ParseErrorKind, crc32};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A file of tests/fixtures/cyrus-index (also read by the catalog's tests).
pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let p: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests/fixtures/cyrus-index",
        name,
    ]
    .iter()
    .collect();
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Every mailbox fixture with index, cache and header: (prefix, version).
const MAILBOXES: &[(&str, u32)] = &[
    ("v12", 12),
    ("v13", 13),
    ("v14", 14),
    ("v15", 15),
    ("v16", 16),
    ("v17", 17),
    ("old-v12", 12),
    ("old-v19", 19),
];

fn load(prefix: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    (
        fixture(&format!("{prefix}.cyrus.index")),
        fixture(&format!("{prefix}.cyrus.cache")),
        fixture(&format!("{prefix}.cyrus.header")),
    )
}

// ---------------------------------------------------------------------------
// cyrus.header user flag names (test-side; header.rs owns the real parser)

/// Flag names from a 3.6 DList header (`U (a b NIL)`) or an old-format one
/// (second line after the magic, names each followed by a space).
fn user_flag_names(header: &[u8]) -> Vec<Option<String>> {
    let text = String::from_utf8_lossy(&header[115..]);
    let first = text.lines().next().unwrap_or("");
    if first.starts_with('%') {
        let Some(at) = first.find(" U (") else {
            return Vec::new();
        };
        let rest = &first[at + 4..];
        let end = rest.find(')').unwrap();
        rest[..end]
            .split(' ')
            .map(|n| (n != "NIL").then(|| n.to_string()))
            .collect()
    } else {
        let line = text.lines().nth(1).unwrap_or("");
        line.split(' ')
            .filter(|n| !n.is_empty())
            .map(|n| Some(n.to_string()))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// mbexamine output

#[derive(Debug, Default)]
struct ExHeader {
    generation: u32,
    version: u32,
    header_size: u32,
    record_size: u32,
    exists: u32,
    mailbox_size: u64,
    annot_size: u64,
    last_appenddate: u64,
    uidvalidity: u32,
    last_uid: u32,
    deleted: u32,
    answered: u32,
    flagged: u32,
    pop3_last_login: u64,
    highestmodseq: u64,
    user_flags: Vec<String>,
}

#[derive(Debug, Default)]
struct ExRecord {
    uid: u32,
    internaldate: u64,
    sentdate: u64,
    savedate: u64,
    size: u64,
    header_size: u32,
    last_updated: u64,
    sysflags: u32,
    cache_version: u16,
    guid: String,
    modseq: u64,
    thrid: Option<u64>,
    internal_flags: Vec<String>,
    system_flags: Vec<String>,
    /// mbexamine prints user_flags[3] first.
    user_flags: [u32; 4],
    /// Envel, BdyStr, Body, CacHdr, From, To, Cc, Bcc, Subjct
    cache_items: Vec<Vec<u8>>,
}

/// The shared oracle's parse of mbexamine output, in this test's typed shape.
fn parse_mbexamine(out: &[u8]) -> (ExHeader, Vec<ExRecord>) {
    let ex = crate::mbexamine::parse_mbexamine(out);
    let hd = |k: &str| -> u64 { *ex.header.get(k).unwrap_or_else(|| panic!("no {k}")) };
    let h = ExHeader {
        generation: hd("generation_no") as u32,
        version: hd("minor_version") as u32,
        header_size: hd("start_offset") as u32,
        record_size: hd("record_size") as u32,
        exists: hd("exists") as u32,
        mailbox_size: hd("quota_mailbox_used"),
        annot_size: hd("quota_annot_used"),
        last_appenddate: hd("last_appenddate"),
        uidvalidity: hd("uidvalidity") as u32,
        last_uid: hd("last_uid") as u32,
        deleted: hd("deleted") as u32,
        answered: hd("answered") as u32,
        flagged: hd("flagged") as u32,
        pop3_last_login: hd("pop3_last_login"),
        highestmodseq: hd("highestmodseq"),
        user_flags: ex.user_flags.clone(),
    };
    let recs = ex
        .records
        .into_iter()
        .map(|r| {
            let n = |k: &str| -> u64 { *r.nums.get(k).unwrap_or_else(|| panic!("no {k}")) };
            ExRecord {
                uid: n("UID:") as u32,
                internaldate: n("INT_DATE:"),
                sentdate: n("SENTDATE:"),
                savedate: n("SAVEDATE:"),
                size: n("SIZE:"),
                header_size: n("HDRSIZE:") as u32,
                last_updated: n("LASTUPD :"),
                sysflags: r.sysflags,
                cache_version: n("CACHEVER:") as u16,
                guid: r.guid.clone(),
                modseq: n("MODSEQ:"),
                thrid: r.thrid,
                internal_flags: r.internal_flags.clone(),
                system_flags: r.system_flags.clone(),
                user_flags: r.user_flags,
                // the nine items mbexamine prints, in its order
                cache_items: [
                    "Envel", "BdyStr", "Body", "CacHdr", "From", "To", "Cc", "Bcc", "Subjct",
                ]
                .iter()
                .map(|k| {
                    r.cache
                        .get(*k)
                        .unwrap_or_else(|| panic!("no cache {k}"))
                        .clone()
                })
                .collect(),
            }
        })
        .collect();
    (h, recs)
}

// ---------------------------------------------------------------------------
// unexpunge -l output (expunged records), times printed by ctime() in UTC

#[derive(Debug)]
struct Expunged {
    uid: u32,
    size: u64,
    sent: u64,
    recv: u64,
    expg: u64,
}

fn parse_unexpunge(out: &str) -> Vec<Expunged> {
    crate::mbexamine::parse_unexpunge(out)
        .into_iter()
        .map(|[uid, size, sent, recv, expg]| Expunged {
            uid: uid as u32,
            size,
            sent,
            recv,
            expg,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The fixtures as Cyrus wrote them

#[test]
fn every_fixture_parses_with_valid_crcs_and_writes_back_identically() {
    for &(prefix, version) in MAILBOXES {
        let (ib, cb, hb) = load(prefix);
        let idx = parse_index(&ib).unwrap_or_else(|e| panic!("{prefix}: {e}"));
        assert_eq!(idx.header.minor_version, version, "{prefix}");
        assert_eq!(idx.records.len(), idx.header.num_records as usize);
        // exactly num_records records and nothing after them in these files
        let used =
            idx.header.start_offset as usize + idx.records.len() * idx.header.record_size as usize;
        assert_eq!(used, ib.len(), "{prefix}");
        assert_eq!(write_index(&idx), ib, "{prefix}: write-back differs");
        assert_eq!(
            write_header(&idx.header),
            ib[..idx.header.start_offset as usize]
        );
        // header_file_crc ties the index to its cyrus.header
        assert_eq!(idx.header.header_file_crc, crc32(&hb), "{prefix}");
        // every record's cache entry parses and matches its CRC
        parse_cache_generation(&cb).unwrap();
        for r in &idx.records {
            assert_ne!(r.cache_crc, 0, "{prefix} uid {}", r.uid);
            check_record(&cb, r).unwrap_or_else(|e| panic!("{prefix}: {e}"));
        }
        // synccrcs.basic recomputed from the records and the header's flag names
        let names = user_flag_names(&hb);
        assert_eq!(
            sync_crc_basic(&idx.records, &names),
            idx.header.sync_crc_basic,
            "{prefix}"
        );
        // JSON works and shows times as seconds
        let json = serde_json::to_value(&idx).unwrap();
        assert_eq!(
            json["header"]["uidvalidity"].as_u64(),
            Some(idx.header.uidvalidity.into())
        );
        assert_eq!(
            json["records"][0]["internaldate"].as_u64(),
            Some(idx.records[0].internaldate.secs())
        );
        assert_eq!(
            json["records"][0]["guid"].as_str(),
            Some(idx.records[0].guid.to_hex().as_str())
        );
    }
}

#[test]
fn empty_v19_index_parses() {
    let b = fixture("old-v19-empty.cyrus.index");
    let idx = parse_index(&b).unwrap();
    assert_eq!(idx.header.minor_version, 19);
    assert!(idx.records.is_empty());
    assert_eq!(idx.header.sync_crc_basic, 0);
    assert_eq!(write_index(&idx), b);
}

#[test]
fn v9_and_v10_are_refused_by_name() {
    for (name, v) in [("old-v9.cyrus.index", 9u64), ("old-v10.cyrus.index", 10)] {
        let e = parse_index(&fixture(name)).unwrap_err();
        assert_eq!(e.offset, 8, "{name}");
        assert_eq!(
            e.kind,
            ParseErrorKind::UnsupportedVersion {
                found: v,
                supported: "12-20"
            }
        );
        assert!(e.to_string().contains(&format!("unsupported version {v}")));
    }
}

/// Our parse against mbexamine's view of the same files.
fn compare_with_mbexamine(prefix: &str, idx: &Index, names: &[Option<String>]) {
    let ex = fixture(&format!("{prefix}.mbexamine.txt"));
    let cache = fixture(&format!("{prefix}.cyrus.cache"));
    agrees_with_mbexamine(prefix, idx, names, &ex, &cache);
}

/// Our parse of one mailbox's `cyrus.index` (and the `cyrus.cache` beside it)
/// against mbexamine's output for it: every header count, every non-expunged
/// record, every cache item mbexamine prints. `prefix` names it in failures.
pub(crate) fn agrees_with_mbexamine(
    prefix: &str,
    idx: &Index,
    names: &[Option<String>],
    mbexamine_out: &[u8],
    cache: &[u8],
) {
    let (h, ex) = parse_mbexamine(mbexamine_out);
    let ih = &idx.header;
    assert_eq!(h.generation, ih.generation_no);
    assert_eq!(h.version, ih.minor_version);
    assert_eq!(h.header_size, ih.start_offset);
    assert_eq!(h.record_size, ih.record_size);
    assert_eq!(h.exists, ih.exists);
    assert_eq!(h.mailbox_size, ih.quota_mailbox_used);
    assert_eq!(h.annot_size, ih.quota_annot_used);
    assert_eq!(h.last_appenddate, ih.last_appenddate.secs());
    assert_eq!(h.uidvalidity, ih.uidvalidity);
    assert_eq!(h.last_uid, ih.last_uid);
    assert_eq!(
        (h.deleted, h.answered, h.flagged),
        (ih.deleted, ih.answered, ih.flagged)
    );
    assert_eq!(h.pop3_last_login, ih.pop3_last_login.secs());
    assert_eq!(h.highestmodseq, ih.highestmodseq);
    let our_names: Vec<String> = names.iter().flatten().cloned().collect();
    assert_eq!(h.user_flags, our_names);

    let live: Vec<&IndexRecord> = idx.records.iter().filter(|r| !r.is_expunged()).collect();
    assert_eq!(
        live.len(),
        ex.len(),
        "{prefix}: mbexamine shows non-expunged records"
    );
    assert_eq!(live.len() as u32, ih.exists);
    for (r, e) in live.iter().zip(&ex) {
        let ctx = format!("{prefix} uid {}", r.uid);
        assert_eq!(r.uid, e.uid, "{ctx}");
        assert_eq!(r.internaldate.secs(), e.internaldate, "{ctx}");
        assert_eq!(r.sentdate.secs(), e.sentdate, "{ctx}");
        assert_eq!(r.savedate.secs(), e.savedate, "{ctx}");
        assert_eq!(r.size, e.size, "{ctx}");
        assert_eq!(r.header_size, e.header_size, "{ctx}");
        assert_eq!(r.last_updated.secs(), e.last_updated, "{ctx}");
        assert_eq!(r.system_flags & 0xffff, e.sysflags, "{ctx}");
        assert_eq!(r.cache_version, e.cache_version, "{ctx}");
        assert_eq!(r.guid.to_hex(), e.guid, "{ctx}");
        assert_eq!(r.modseq, e.modseq, "{ctx}");
        if let Some(thrid) = e.thrid {
            assert_eq!(r.cid, thrid, "{ctx}");
        }
        assert_eq!(r.user_flags, e.user_flags, "{ctx}");
        assert!(e.internal_flags.is_empty(), "{ctx}");
        let mut ours: Vec<String> = r
            .system_flag_names()
            .iter()
            .map(|n| format!("FLAG_{}", n.trim_start_matches('\\').to_uppercase()))
            .collect();
        let mut theirs = e.system_flags.clone();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{ctx}");
        // cache items as mbexamine printed them (all but the section table)
        let entry = parse_cache_entry(cache, r.cache_offset).unwrap();
        let mine: Vec<&[u8]> = vec![
            entry.envelope(),
            entry.bodystructure(),
            entry.body(),
            entry.headers(),
            entry.from(),
            entry.to(),
            entry.cc(),
            entry.bcc(),
            entry.subject(),
        ];
        for (i, (a, b)) in mine.iter().zip(&e.cache_items).enumerate() {
            assert_eq!(*a, b.as_slice(), "{ctx} cache item {i}");
        }
    }
}

#[test]
fn parses_agree_with_mbexamine() {
    for prefix in ["v12", "v13", "v14", "v15", "v16", "v17", "old-v12"] {
        let (ib, _, hb) = load(prefix);
        let idx = parse_index(&ib).unwrap();
        compare_with_mbexamine(prefix, &idx, &user_flag_names(&hb));
    }
}

#[test]
fn expunged_records_agree_with_unexpunge() {
    for v in 12..=17 {
        let prefix = format!("v{v}");
        let idx = parse_index(&fixture(&format!("{prefix}.cyrus.index"))).unwrap();
        let gone = parse_unexpunge(
            &String::from_utf8(fixture(&format!("{prefix}.unexpunge.txt"))).unwrap(),
        );
        let ours: Vec<&IndexRecord> = idx.records.iter().filter(|r| r.is_expunged()).collect();
        assert_eq!(ours.len(), gone.len(), "{prefix}");
        assert_eq!(
            ours.len(),
            1,
            "{prefix}: the fixture has one expunged record"
        );
        for (r, g) in ours.iter().zip(&gone) {
            assert_eq!(r.uid, g.uid);
            assert_eq!(r.size, g.size);
            assert_eq!(r.sentdate.secs(), g.sent);
            assert_eq!(r.internaldate.secs(), g.recv);
            assert_eq!(r.last_updated.secs(), g.expg);
            assert!(!r.is_unlinked() && !r.is_archived());
            assert_eq!(r.system_flag_names(), vec!["\\Deleted"]);
        }
    }
}

#[test]
fn guids_are_sha1_of_the_message_files() {
    let mut checked = 0;
    for (prefix, msg) in [
        ("v17", "msg-"),
        ("v12", "msg-"),
        ("old-v19", "old-v19-msg-"),
    ] {
        let idx = parse_index(&fixture(&format!("{prefix}.cyrus.index"))).unwrap();
        for r in &idx.records {
            let body = fixture(&format!("{msg}{}.", r.uid));
            assert_eq!(r.guid, Guid::of(&body), "{prefix} uid {}", r.uid);
            assert_eq!(r.size, body.len() as u64);
            checked += 1;
        }
    }
    assert_eq!(checked, 6 + 6 + 4);
}

/// What changes between the versions of the same mailbox is only what the
/// layouts say: v12 has no cid, v12-14 no savedate, v12-15 no createdmodseq.
#[test]
fn versions_hold_the_same_mailbox() {
    let v17 = parse_index(&fixture("v17.cyrus.index")).unwrap();
    for v in 12..=16u32 {
        let idx = parse_index(&fixture(&format!("v{v}.cyrus.index"))).unwrap();
        assert_eq!(idx.records.len(), v17.records.len());
        for (a, b) in idx.records.iter().zip(&v17.records) {
            assert_eq!((a.uid, a.guid, a.modseq), (b.uid, b.guid, b.modseq));
            assert_eq!(
                (a.system_flags, a.user_flags),
                (b.system_flags, b.user_flags)
            );
            assert_eq!(a.cid, if v >= 13 { b.cid } else { 0 }, "v{v}");
            assert_eq!(
                a.savedate,
                if v >= 15 {
                    b.savedate
                } else {
                    Default::default()
                }
            );
            assert_eq!(a.createdmodseq, if v >= 16 { b.createdmodseq } else { 0 });
            assert_eq!(a.legacy_content_lines, 0);
        }
        assert_eq!(
            idx.header.unseen,
            if v >= 14 { v17.header.unseen } else { 0 }
        );
    }
    // user flag 32 and 33 (word 1) are set on uid 5; cids are really there
    let r5 = v17.records.iter().find(|r| r.uid == 5).unwrap();
    assert_eq!(r5.user_flag_bits().collect::<Vec<_>>(), vec![32, 33]);
    assert!(v17.records.iter().all(|r| r.cid != 0));
    // the 2016 v12 file carries Cyrus 2.4's content_lines in the savedate slot
    let old = parse_index(&fixture("old-v12.cyrus.index")).unwrap();
    assert_eq!(old.records[0].legacy_content_lines, 40);
    assert_eq!(old.records[0].cache_version, 3);
}

// ---------------------------------------------------------------------------
// Damage

fn fix_header_crc(b: &mut [u8], hlen: usize) {
    let crc = crc32(&b[..hlen - 4]);
    b[hlen - 4..hlen].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn truncation_at_every_length_is_a_typed_error() {
    let full = fixture("v12.cyrus.index");
    let (start, rsize) = (128usize, 96usize);
    for cut in 0..full.len() {
        let e = parse_index(&full[..cut]).unwrap_err();
        let ParseErrorKind::Truncated { need, have } = e.kind else {
            panic!("cut {cut}: {e}");
        };
        let want_offset = if cut < 12 {
            8 // the version field
        } else if cut < start {
            0 // the whole header
        } else {
            (start + (cut - start) / rsize * rsize) as u64 // first missing record
        };
        assert_eq!(e.offset, want_offset, "cut {cut}: {e}");
        assert!(have < need, "cut {cut}: {e}");
        if cut >= start {
            let recno = (cut - start) / rsize + 1;
            assert_eq!(e.what, format!("cyrus.index record {recno}"));
        }
    }
    // leftover bytes after num_records are ignored
    let mut longer = full.clone();
    longer.extend_from_slice(&[0xAB; 150]);
    assert_eq!(parse_index(&longer).unwrap(), parse_index(&full).unwrap());
}

#[test]
fn bad_header_crc() {
    let mut b = fixture("v17.cyrus.index");
    b[44] ^= 0x01; // uidvalidity
    let e = parse_index(&b).unwrap_err();
    assert_eq!(e.what, "cyrus.index header");
    assert_eq!(e.offset, 156);
    assert!(matches!(e.kind, ParseErrorKind::BadCrc { .. }));
    assert!(
        e.to_string()
            .starts_with("cyrus.index header at offset 156: checksum mismatch")
    );
}

#[test]
fn bad_record_crc() {
    let mut b = fixture("v17.cyrus.index");
    let rec3 = 160 + 2 * 112;
    b[rec3 + 32] ^= 0x10; // \Seen in record 3's flags
    let e = parse_index(&b).unwrap_err();
    assert_eq!(e.what, "cyrus.index record 3");
    assert_eq!(e.offset, (rec3 + 108) as u64);
    assert!(matches!(e.kind, ParseErrorKind::BadCrc { .. }));
}

#[test]
fn bad_record_size_and_start_offset() {
    let orig = fixture("v17.cyrus.index");
    for (off, field, value, expected) in [
        (16usize, "record_size", 104u32, 112u64),
        (12, "start_offset", 128, 160),
    ] {
        for fix_crc in [false, true] {
            let mut b = orig.clone();
            b[off..off + 4].copy_from_slice(&value.to_be_bytes());
            if fix_crc {
                fix_header_crc(&mut b, 160);
            }
            let e = parse_index(&b).unwrap_err();
            assert_eq!(e.offset, off as u64);
            assert_eq!(
                e.kind,
                ParseErrorKind::BadSize {
                    field,
                    found: value.into(),
                    expected
                }
            );
        }
    }
}

#[test]
fn uids_must_increase() {
    let mut idx = parse_index(&fixture("v17.cyrus.index")).unwrap();
    idx.records.swap(1, 2);
    let b = write_index(&idx);
    let e = parse_index(&b).unwrap_err();
    assert_eq!(e.what, "cyrus.index record 3");
    assert_eq!(e.offset, 160 + 2 * 112);
    assert!(matches!(e.kind, ParseErrorKind::Invalid(_)));
}

#[test]
fn huge_num_records_is_truncation_not_allocation() {
    let mut b = fixture("v17.cyrus.index");
    b[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
    fix_header_crc(&mut b, 160);
    let e = parse_index(&b).unwrap_err();
    assert_eq!(e.what, "cyrus.index record 7");
    assert_eq!(e.offset, 160 + 6 * 112);
    assert!(matches!(
        e.kind,
        ParseErrorKind::Truncated { need: 112, have: 0 }
    ));
}

#[test]
fn damaged_cache_entry_is_caught() {
    let (ib, mut cb, _) = load("v17");
    let idx = parse_index(&ib).unwrap();
    let r = &idx.records[1];
    let at = r.cache_offset as usize + 10;
    cb[at] ^= 0x20;
    let e = check_record(&cb, r).unwrap_err();
    assert_eq!(e.offset, r.cache_offset);
    assert_eq!(e.what, "cyrus.cache entry for uid 2");
    assert!(matches!(e.kind, ParseErrorKind::BadCrc { .. }));
    // the other records' entries are untouched
    check_record(&cb, &idx.records[0]).unwrap();
    // an item length pointing past the end of the file
    let mut cb2 = load("v17").1;
    let o = r.cache_offset as usize;
    cb2[o..o + 4].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
    let e = check_record(&cb2, r).unwrap_err();
    assert_eq!(e.offset, r.cache_offset + 4);
    assert!(matches!(e.kind, ParseErrorKind::Truncated { .. }));
}

/// Seeded random byte flips over the real files: every result is a typed
/// error at a sensible offset or a clean parse, never a panic. A single
/// flipped byte inside the header or a record is always caught (CRC32 detects
/// every burst of up to 32 bits), at the offset we can predict.
#[test]
fn random_byte_flips() {
    let mut rng = SmallRng::seed_from_u64(0x6379_7276_6175_6c74);
    let mut caught = 0;
    let mut cache_caught = 0;
    for round in 0..4000 {
        let &(prefix, _) = &MAILBOXES[round % MAILBOXES.len()];
        let (ib, cb, _) = load(prefix);
        let good = parse_index(&ib).unwrap();
        let hlen = good.header.start_offset as usize;
        let rsize = good.header.record_size as usize;

        // index: one byte
        let mut b = ib.clone();
        let p = rng.gen_range(0..b.len());
        let x: u8 = rng.gen_range(1..=255);
        b[p] ^= x;
        let e = parse_index(&b).expect_err("a flipped byte must be detected");
        caught += 1;
        if p < hlen {
            assert!(
                [8u64, 12, 16, (hlen - 4) as u64].contains(&e.offset)
                    || matches!(e.kind, ParseErrorKind::Truncated { .. }),
                "{prefix} flip at {p}: {e}"
            );
        } else {
            let recno = (p - hlen) / rsize + 1;
            assert_eq!(
                e.what,
                format!("cyrus.index record {recno}"),
                "{prefix} flip at {p}"
            );
            assert_eq!(
                e.offset as usize,
                hlen + recno * rsize - 4,
                "{prefix} flip at {p}"
            );
        }

        // index: several bytes anywhere; only "no panic, offset inside the file"
        let mut b = ib.clone();
        for _ in 0..rng.gen_range(2..6) {
            let p = rng.gen_range(0..b.len());
            b[p] = rng.r#gen();
        }
        if let Err(e) = parse_index(&b) {
            assert!(e.offset <= b.len() as u64, "{prefix}: {e}");
        }

        // cache: one byte; caught exactly when it lands in some record's entry
        let mut c = cb.clone();
        let p = rng.gen_range(0..c.len());
        c[p] ^= rng.gen_range(1..=255u8);
        let mut hit = false;
        for r in &good.records {
            let len = parse_cache_entry(&cb, r.cache_offset).unwrap().len;
            let inside = (r.cache_offset..r.cache_offset + len).contains(&(p as u64));
            match check_record(&c, r) {
                Ok(()) => assert!(!inside, "{prefix} uid {} flip at {p} missed", r.uid),
                Err(e) => {
                    assert!(inside, "{prefix} uid {} flip at {p}: {e}", r.uid);
                    assert!(e.offset >= r.cache_offset && e.offset <= c.len() as u64);
                    hit = true;
                }
            }
        }
        cache_caught += usize::from(hit);
        let _ = parse_cache_generation(&c);
    }
    assert_eq!(caught, 4000);
    assert!(cache_caught > 3000, "{cache_caught}");
}

#[test]
fn record_writer_matches_every_stored_record() {
    for &(prefix, _) in MAILBOXES {
        let ib = fixture(&format!("{prefix}.cyrus.index"));
        let idx = parse_index(&ib).unwrap();
        let (s, n) = (
            idx.header.start_offset as usize,
            idx.header.record_size as usize,
        );
        for (i, r) in idx.records.iter().enumerate() {
            assert_eq!(write_record(&idx.header, r), ib[s + i * n..s + (i + 1) * n]);
        }
        assert_eq!(parse_header(&ib).unwrap(), idx.header);
    }
}
