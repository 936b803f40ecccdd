//! Unit tests of the twoskip reader on images laid out the way Cyrus writes them.

use super::*;

/// Builds a twoskip image the way Cyrus lays it out (for unit tests only;
/// the integration tests use files written by Cyrus itself).
pub(crate) struct Builder {
    pub buf: Vec<u8>,
}

impl Builder {
    pub fn new() -> Self {
        let mut b = Builder {
            buf: vec![0; HEADER_SIZE],
        };
        b.record(DUMMY, MAX_LEVEL, &[0; 32], b"", b"");
        b
    }

    /// Append a record; returns its offset.
    pub fn record(&mut self, kind: u8, level: u8, ptrs: &[u64], key: &[u8], val: &[u8]) -> u64 {
        let off = self.buf.len() as u64;
        let mut rec = vec![kind, level];
        rec.extend_from_slice(&(key.len() as u16).to_be_bytes());
        rec.extend_from_slice(&(val.len() as u32).to_be_bytes());
        for p in ptrs {
            rec.extend_from_slice(&p.to_be_bytes());
        }
        let head = crc32(&rec);
        let mut kv = [key, val].concat();
        kv.resize(kv.len().div_ceil(8) * 8, 0);
        rec.extend_from_slice(&head.to_be_bytes());
        rec.extend_from_slice(&crc32(&kv).to_be_bytes());
        rec.extend_from_slice(&kv);
        self.buf.extend_from_slice(&rec);
        off
    }

    pub fn set_ptr(&mut self, rec: u64, i: usize, val: u64) {
        let r = rec as usize;
        let at = r + 8 + 8 * i;
        self.buf[at..at + 8].copy_from_slice(&val.to_be_bytes());
        let level = usize::from(self.buf[r + 1]);
        let end = r + 8 + 8 * (level + 1);
        let crc = crc32(&self.buf[r..end]);
        self.buf[end..end + 4].copy_from_slice(&crc.to_be_bytes());
    }

    pub fn finish(mut self, num: u64) -> Vec<u8> {
        let size = self.buf.len() as u64;
        let mut h = TWOSKIP_MAGIC.to_vec();
        h.extend_from_slice(&1u32.to_be_bytes());
        h.extend_from_slice(&1u64.to_be_bytes());
        h.extend_from_slice(&num.to_be_bytes());
        h.extend_from_slice(&size.to_be_bytes());
        h.extend_from_slice(&size.to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes());
        let crc = crc32(&h);
        h.extend_from_slice(&crc.to_be_bytes());
        self.buf[..HEADER_SIZE].copy_from_slice(&h);
        self.buf
    }
}

fn two_keys() -> (Builder, u64, u64) {
    let mut b = Builder::new();
    let r1 = b.record(RECORD, 1, &[0, 0], b"a", b"1");
    let r2 = b.record(RECORD, 1, &[0, 0], b"b", b"22");
    b.set_ptr(HEADER_SIZE as u64, 0, r1);
    b.set_ptr(r1, 1, r2);
    (b, r1, r2)
}

#[test]
fn empty_db_has_no_records() {
    let buf = Builder::new().finish(0);
    assert_eq!(buf.len(), 336);
    assert!(read_all(&buf).unwrap().is_empty());
    let h = parse_twoskip_header(&buf).unwrap();
    assert_eq!((h.version, h.current_size, h.is_dirty()), (1, 336, false));
}

#[test]
fn walks_level0_and_prefers_larger_committed_pointer() {
    let (mut b, r1, r2) = two_keys();
    // A stale alternative pointer in slot 0 that is smaller loses.
    b.set_ptr(r1, 0, HEADER_SIZE as u64);
    let buf = b.finish(2);
    let recs = read_all(&buf).unwrap();
    assert_eq!(
        recs,
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"22".to_vec())
        ]
    );
    assert_eq!(prefix(&recs, b"b").len(), 1);
    assert_eq!(prefix(&recs, b"c").len(), 0);
    let _ = r2;
}

#[test]
fn pointer_past_current_size_is_ignored() {
    let (mut b, r1, _r2) = two_keys();
    b.set_ptr(r1, 0, 1 << 40);
    let buf = b.finish(2);
    assert_eq!(read_all(&buf).unwrap().len(), 2);
}

#[test]
fn delete_records_are_followed() {
    let (mut b, r1, r2) = two_keys();
    let del = b.record(DELETE, 0, &[r2], b"", b"");
    b.set_ptr(HEADER_SIZE as u64, 0, del);
    let buf = b.finish(1);
    assert_eq!(
        read_all(&buf).unwrap(),
        vec![(b"b".to_vec(), b"22".to_vec())]
    );
    let _ = r1;
}

#[test]
fn cycle_is_an_error_not_a_hang() {
    let (mut b, r1, r2) = two_keys();
    b.set_ptr(r2, 1, r1);
    let e = read_all(&b.finish(2)).unwrap_err();
    assert!(e.to_string().contains("out of order"), "{e}");
    // A cycle through DELETE records only (no keys to compare).
    let mut b = Builder::new();
    let d1 = b.record(DELETE, 0, &[0], b"", b"");
    let d2 = b.record(DELETE, 0, &[d1], b"", b"");
    b.set_ptr(d1, 0, d2);
    b.set_ptr(HEADER_SIZE as u64, 0, d1);
    let e = read_all(&b.finish(0)).unwrap_err();
    assert!(e.to_string().contains("cycle"), "{e}");
}

#[test]
fn header_checks_in_order() {
    let buf = Builder::new().finish(0);
    let mut bad = buf.clone();
    bad[0] = 0;
    assert_eq!(
        parse_twoskip_header(&bad).unwrap_err().kind,
        ParseErrorKind::BadMagic
    );
    let mut bad = buf.clone();
    bad[23] = 2;
    assert!(matches!(
        parse_twoskip_header(&bad).unwrap_err().kind,
        ParseErrorKind::UnsupportedVersion { found: 2, .. }
    ));
    let mut bad = buf.clone();
    bad[40] ^= 1;
    assert!(matches!(
        parse_twoskip_header(&bad).unwrap_err().kind,
        ParseErrorKind::BadCrc { .. }
    ));
    assert!(parse_twoskip_header(&buf[..63]).is_err());
}

#[test]
fn wrong_num_records_is_reported() {
    let (b, _, _) = two_keys();
    let e = read_all(&b.finish(3)).unwrap_err();
    assert!(matches!(
        e.kind,
        ParseErrorKind::BadSize {
            field: "num_records",
            ..
        }
    ));
}

#[test]
fn long_key_uses_64_bit_length() {
    let mut b = Builder::new();
    let key = vec![b'k'; 70_000];
    // Hand-build a record with the 0xFFFF escape and a 64-bit key length.
    let off = b.buf.len() as u64;
    let mut rec = vec![RECORD, 1, 0xff, 0xff, 0, 0, 0, 1];
    rec.extend_from_slice(&(key.len() as u64).to_be_bytes());
    rec.extend_from_slice(&[0; 16]);
    let head = crc32(&rec);
    let mut kv = [key.as_slice(), b"v"].concat();
    kv.resize(kv.len().div_ceil(8) * 8, 0);
    rec.extend_from_slice(&head.to_be_bytes());
    rec.extend_from_slice(&crc32(&kv).to_be_bytes());
    rec.extend_from_slice(&kv);
    b.buf.extend_from_slice(&rec);
    b.set_ptr(HEADER_SIZE as u64, 0, off);
    let recs = read_all(&b.finish(1)).unwrap();
    assert_eq!(recs[0].0.len(), 70_000);
    assert_eq!(recs[0].1, b"v");
}

/// A tiny deterministic PRNG (xorshift64*), so the cases are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A clean twoskip image holding `entries` (sorted, distinct keys), each on
/// levels 0..level, linked the way Cyrus links them: level 0 through slot 0,
/// level i >= 1 through pointer i + 1. With `delete_after`, a DELETE record
/// is spliced into level 0 after that entry (as a committed delete leaves it).
fn skiplist(entries: &[(Vec<u8>, Vec<u8>, u8)], delete_after: Option<usize>) -> Vec<u8> {
    let mut b = Builder::new();
    let offs: Vec<u64> = entries
        .iter()
        .map(|(k, v, l)| b.record(RECORD, *l, &vec![0; usize::from(*l) + 1], k, v))
        .collect();
    let dummy = HEADER_SIZE as u64;
    for level in 0..MAX_LEVEL {
        let slot = if level == 0 {
            0
        } else {
            usize::from(level) + 1
        };
        let mut prev = dummy;
        for (i, (_, _, l)) in entries.iter().enumerate() {
            if *l > level {
                b.set_ptr(prev, slot, offs[i]);
                prev = offs[i];
            }
        }
    }
    if let Some(i) = delete_after {
        let succ = offs.get(i + 1).copied().unwrap_or(0);
        let del = b.record(DELETE, 0, &[succ], b"", b"");
        b.set_ptr(offs[i], 0, del);
    }
    b.finish(entries.len() as u64)
}

fn random_entries(rng: &mut Rng, n: usize) -> Vec<(Vec<u8>, Vec<u8>, u8)> {
    // A small alphabet (with 0x1F, the mailbox hierarchy separator) so keys
    // share long prefixes and one key is often a prefix of another.
    const ALPHA: &[u8] = b"Nab\x1fu";
    let mut keys = std::collections::BTreeSet::new();
    while keys.len() < n {
        let len = 1 + rng.below(6) as usize;
        keys.insert(
            (0..len)
                .map(|_| ALPHA[rng.below(5) as usize])
                .collect::<Vec<u8>>(),
        );
    }
    keys.into_iter()
        .map(|k| {
            let mut level = 1;
            while level < MAX_LEVEL && rng.below(2) == 0 {
                level += 1;
            }
            let v = format!("v{}", rng.below(1000)).into_bytes();
            (k, v, level)
        })
        .collect()
}

fn set_dirty(buf: &mut [u8]) {
    buf[56..60].copy_from_slice(&FLAG_DIRTY.to_be_bytes());
    let crc = crc32(&buf[..60]);
    buf[60..64].copy_from_slice(&crc.to_be_bytes());
}

fn prefix_walk(buf: &[u8], p: &[u8]) -> Records {
    let mut db = Twoskip::open(buf, buf.len() as u64).unwrap();
    let mut out = Records::new();
    db.prefix(p, |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        Ok(true)
    })
    .unwrap();
    out
}

#[test]
fn lookups_and_prefix_walks_equal_the_full_walk() {
    let mut rng = Rng(0x5eed);
    for case in 0..60 {
        let n = 1 + rng.below(120) as usize;
        let entries = random_entries(&mut rng, n);
        let delete_after = (case % 3 == 0 && n > 1).then(|| rng.below(n as u64 - 1) as usize);
        let mut buf = skiplist(&entries, delete_after);
        let all = read_all(&buf).unwrap();
        assert_eq!(all.len(), n);
        for dirty in [false, true] {
            if dirty {
                set_dirty(&mut buf);
            }
            let mut db = Twoskip::open(buf.as_slice(), buf.len() as u64).unwrap();
            assert_eq!(db.first().unwrap().as_ref(), all.first());
            assert_eq!(db.last().unwrap().as_ref(), all.last());
            for (k, v) in &all {
                assert_eq!(db.get(k).unwrap().as_ref(), Some(v), "case {case}");
                let mut absent = k.clone();
                absent.push(0);
                assert_eq!(db.get(&absent).unwrap(), None);
            }
            for p in [
                &b""[..],
                b"N",
                b"a",
                b"a\x1f",
                b"ab",
                b"u\x1fa",
                b"zz",
                b"\x1f",
            ] {
                assert_eq!(
                    prefix_walk(&buf, p),
                    prefix(&all, p),
                    "case {case} prefix {p:?}"
                );
            }
        }
    }
}

#[test]
fn a_descent_counts_its_reads() {
    // 4096 keys: a lookup reads O(log n) records, the full walk all of them.
    let mut rng = Rng(7);
    let entries: Vec<(Vec<u8>, Vec<u8>, u8)> = (0..4096u32)
        .map(|i| {
            let mut level = 1;
            while level < MAX_LEVEL && rng.below(2) == 0 {
                level += 1;
            }
            (format!("k{i:06}").into_bytes(), b"v".to_vec(), level)
        })
        .collect();
    let buf = skiplist(&entries, None);
    struct Counting<'a>(&'a [u8], usize);
    impl Source for Counting<'_> {
        type Error = ParseError;
        fn read(&mut self, off: u64, len: usize) -> Result<&[u8], ParseError> {
            self.1 += 1;
            let start = (off as usize).min(self.0.len());
            Ok(&self.0[start..(start + len).min(self.0.len())])
        }
    }
    let mut db = Twoskip::open(Counting(&buf, 0), buf.len() as u64).unwrap();
    assert_eq!(db.get(b"k002718").unwrap().as_deref(), Some(&b"v"[..]));
    let reads = db.source().1;
    assert!(reads < 200, "{reads} reads for one lookup among 4096 keys");
}

#[test]
fn a_corrupt_upper_pointer_is_an_error_not_a_hang() {
    let entries: Vec<(Vec<u8>, Vec<u8>, u8)> = (0..8u8)
        .map(|i| (vec![b'a' + i], b"v".to_vec(), 3))
        .collect();
    let mut b = Builder::new();
    let offs: Vec<u64> = entries
        .iter()
        .map(|(k, v, l)| b.record(RECORD, *l, &[0; 4], k, v))
        .collect();
    for slot in [0, 2, 3] {
        let mut prev = HEADER_SIZE as u64;
        for &o in &offs {
            b.set_ptr(prev, slot, o);
            prev = o;
        }
    }
    // Level 2 of the last record points back to the first: a cycle there.
    b.set_ptr(offs[7], 3, offs[0]);
    let buf = b.finish(8);
    let mut db = Twoskip::open(buf.as_slice(), buf.len() as u64).unwrap();
    let e = db.last().unwrap_err();
    assert!(e.to_string().contains("out of order"), "{e}");
    // The level-0 walk does not use it.
    assert_eq!(read_all(&buf).unwrap().len(), 8);
}

#[test]
fn a_range_walk_does_not_read_the_value_that_ends_it() {
    // `a1`, `a2` in range; `b` (1 MiB value) ends it and comes first in the
    // lookup of `c`: neither reads its value.
    let big = vec![b'x'; 1 << 20];
    let entries: Vec<(Vec<u8>, Vec<u8>, u8)> = vec![
        (b"a1".to_vec(), b"v1".to_vec(), 2),
        (b"a2".to_vec(), b"v2".to_vec(), 1),
        (b"b".to_vec(), big, 1),
        (b"c".to_vec(), b"v3".to_vec(), 1),
    ];
    let buf = skiplist(&entries, None);
    struct Bytes<'a>(&'a [u8], usize);
    impl Source for Bytes<'_> {
        type Error = ParseError;
        fn read(&mut self, off: u64, len: usize) -> Result<&[u8], ParseError> {
            let start = (off as usize).min(self.0.len());
            let s = &self.0[start..(start + len).min(self.0.len())];
            self.1 += s.len();
            Ok(s)
        }
    }
    let mut db = Twoskip::open(Bytes(&buf, 0), buf.len() as u64).unwrap();
    let mut got = Vec::new();
    db.prefix(b"a", |k, v| {
        got.push((k.to_vec(), v.to_vec()));
        Ok(true)
    })
    .unwrap();
    assert_eq!(
        got,
        [
            (b"a1".to_vec(), b"v1".to_vec()),
            (b"a2".to_vec(), b"v2".to_vec())
        ]
    );
    let mut none = 0;
    db.prefix(b"ab", |_, _| {
        none += 1;
        Ok(true)
    })
    .unwrap();
    assert_eq!(none, 0);
    assert_eq!(db.get(b"c").unwrap().as_deref(), Some(&b"v3"[..]));
    let read = db.source().1;
    assert!(read < 64 * 1024, "{read} bytes read");
    // The value itself is still there for a walk that wants it.
    let mut n = 0;
    db.walk_range(
        b"b",
        |k| k == b"b",
        |_, v| {
            n = v.len();
            Ok(true)
        },
    )
    .unwrap();
    assert_eq!(n, 1 << 20);
}
