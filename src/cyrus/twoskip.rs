//! The twoskip database format (`lib/cyrusdb_twoskip.c`): header and ordered walk.
//!
//! twoskip is the backend of `mailboxes.db`, `annotations.db`, per-mailbox
//! `cyrus.annotations`, the per-user `seen` db and more. This module reads a
//! byte copy of such a file (taken by the caller under Cyrus's fcntl read lock,
//! `lock.rs`) and returns the committed key/value pairs in key order. It never
//! writes twoskip: restores go through `ctl_mboxlist -u` / `cyr_dbtool`.
//!
//! The walk is the one Cyrus's `foreach` does (`advance_loc`/`read_skipdelete`):
//! start at the DUMMY record at offset 64 and follow the level-0 links. Each
//! record has two alternative level-0 pointers; the valid one is the larger of
//! those that lie below the header's `current_size` (`_getloc`). Because only
//! bytes below `current_size` are ever read, a file caught mid-transaction
//! (DIRTY flag set, uncommitted tail) still yields its last committed state.
//! Every record head and tail CRC is checked. Corruption never panics or hangs:
//! keys must strictly increase and the number of steps is bounded, so a pointer
//! cycle ends in a [`ParseError`]. Layout: `doc/cyrus-files.md`, "twoskip".
#![forbid(unsafe_code)]

use super::{Be, ParseError, ParseErrorKind, crc32};

/// The 20 magic bytes at offset 0 (same first 4 bytes as skiplist).
pub const TWOSKIP_MAGIC: &[u8; 20] = b"\xa1\x02\x8b\x0dtwoskip file\0\0\0\0";
/// The only format version Cyrus has written; it rejects anything greater.
pub const TWOSKIP_VERSION: u32 = 1;
/// Header size; the DUMMY record starts right after it.
pub const HEADER_SIZE: usize = 64;
/// Highest record level (the DUMMY has this level, i.e. 32 pointers).
pub const MAX_LEVEL: u8 = 31;
/// Header flag: a write transaction is in progress (or crashed).
pub const FLAG_DIRTY: u32 = 1;

const DUMMY: u8 = b'=';
const RECORD: u8 = b'+';
const DELETE: u8 = b'-';
const COMMIT: u8 = b'$';

/// Key/value pairs in key order, as [`read_all`] returns them.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// The 64-byte twoskip header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TwoskipHeader {
    /// Format version (1).
    pub version: u32,
    /// Repack count; offsets from an older generation are meaningless.
    pub generation: u64,
    /// Number of live keys as of the last commit.
    pub num_records: u64,
    /// File size right after the last repack.
    pub repack_size: u64,
    /// File size at the last commit: bytes beyond it are uncommitted.
    pub current_size: u64,
    /// Bit 0 ([`FLAG_DIRTY`]): a transaction is open or crashed.
    pub flags: u32,
}

impl TwoskipHeader {
    /// True if a writer was active (or died) when the copy was taken.
    pub fn is_dirty(&self) -> bool {
        self.flags & FLAG_DIRTY != 0
    }
}

/// Parse and check the header: magic, then version, then CRC.
pub fn parse_twoskip_header(buf: &[u8]) -> Result<TwoskipHeader, ParseError> {
    const WHAT: &str = "twoskip header";
    let be = Be::new(buf, WHAT, 0);
    let head = be.bytes(0, HEADER_SIZE)?;
    if &head[..20] != TWOSKIP_MAGIC {
        return Err(ParseError::new(WHAT, 0, ParseErrorKind::BadMagic));
    }
    let version = be.u32(20)?;
    if version > TWOSKIP_VERSION {
        return Err(ParseError::new(
            WHAT,
            20,
            ParseErrorKind::UnsupportedVersion {
                found: version.into(),
                supported: "1",
            },
        ));
    }
    let stored = be.u32(60)?;
    let computed = crc32(&head[..60]);
    if stored != computed {
        return Err(ParseError::new(
            WHAT,
            60,
            ParseErrorKind::BadCrc { stored, computed },
        ));
    }
    Ok(TwoskipHeader {
        version,
        generation: be.u64(24)?,
        num_records: be.u64(32)?,
        repack_size: be.u64(40)?,
        current_size: be.u64(48)?,
        flags: be.u32(56)?,
    })
}

/// One record head as read from the file (key/value located, CRCs checked).
struct Record {
    kind: u8,
    ptrs: Vec<u64>,
    key: std::ops::Range<usize>,
    val: std::ops::Range<usize>,
}

/// Reads records from `buf[..end]`, where `end` is the header's `current_size`.
struct Reader<'a> {
    buf: &'a [u8],
    end: usize,
}

impl Reader<'_> {
    fn read(&self, off: u64) -> Result<Record, ParseError> {
        let what = "twoskip record";
        let bad = |msg: String| ParseError::invalid(what, off, msg);
        let start = usize::try_from(off)
            .ok()
            .filter(|&o| o >= HEADER_SIZE && o < self.end)
            .ok_or_else(|| {
                bad(format!(
                    "pointer outside the committed area [64, {})",
                    self.end
                ))
            })?;
        let be = Be::new(&self.buf[..self.end], what, 0);
        let head = be.bytes(start, 8)?;
        let (kind, level) = (head[0], head[1]);
        if level > MAX_LEVEL {
            return Err(bad(format!("level {level} > {MAX_LEVEL}")));
        }
        let mut pos = start + 8;
        let mut keylen = u64::from(u16::from_be_bytes([head[2], head[3]]));
        if keylen == u64::from(u16::MAX) {
            keylen = be.u64(pos)?;
            pos += 8;
        }
        let mut vallen = u64::from(u32::from_be_bytes([head[4], head[5], head[6], head[7]]));
        if vallen == u64::from(u32::MAX) {
            vallen = be.u64(pos)?;
            pos += 8;
        }
        let nptrs = usize::from(level) + 1;
        let mut ptrs = Vec::with_capacity(nptrs);
        for _ in 0..nptrs {
            ptrs.push(be.u64(pos)?);
            pos += 8;
        }
        let stored_head = be.u32(pos)?;
        let stored_tail = be.u32(pos + 4)?;
        let computed = crc32(&self.buf[start..pos]);
        if stored_head != computed {
            return Err(ParseError::new(
                "twoskip record head",
                off,
                ParseErrorKind::BadCrc {
                    stored: stored_head,
                    computed,
                },
            ));
        }
        let kv_start = pos + 8;
        let kv = keylen
            .checked_add(vallen)
            .and_then(|n| n.checked_add(7))
            .map(|n| n & !7)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad("key/value length overflows".into()))?;
        let padded = be.bytes(kv_start, kv)?;
        let keylen = keylen as usize; // both fit: keylen + vallen <= kv <= buf.len()
        let vallen = vallen as usize;
        let computed = crc32(padded);
        if stored_tail != computed {
            return Err(ParseError::new(
                "twoskip record tail",
                off,
                ParseErrorKind::BadCrc {
                    stored: stored_tail,
                    computed,
                },
            ));
        }
        Ok(Record {
            kind,
            ptrs,
            key: kv_start..kv_start + keylen,
            val: kv_start + keylen..kv_start + keylen + vallen,
        })
    }

    /// The level-0 successor (`_getloc(db, rec, 0)`): of the two alternative
    /// pointers, ignore one that is at or past `end`, else take the larger.
    fn next0(&self, rec: &Record) -> u64 {
        let end = self.end as u64;
        let p0 = rec.ptrs.first().copied().unwrap_or(0);
        let p1 = rec.ptrs.get(1).copied().unwrap_or(0);
        if p0 >= end {
            p1
        } else if p1 >= end {
            p0
        } else {
            p0.max(p1)
        }
    }
}

/// All committed (key, value) pairs in key order: the ordered level-0 walk.
///
/// `buf` must start at offset 0 of the file and hold at least `current_size`
/// bytes; anything after `current_size` is ignored. The walk also checks that
/// it found exactly the header's `num_records` keys.
pub fn read_all(buf: &[u8]) -> Result<Records, ParseError> {
    let header = parse_twoskip_header(buf)?;
    let end = usize::try_from(header.current_size)
        .ok()
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| {
            ParseError::truncated(
                "twoskip file",
                buf.len() as u64,
                header.current_size.saturating_sub(buf.len() as u64),
                0,
            )
        })?;
    let reader = Reader { buf, end };
    let dummy = reader.read(HEADER_SIZE as u64)?;
    if dummy.kind != DUMMY {
        return Err(ParseError::invalid(
            "twoskip record",
            HEADER_SIZE as u64,
            "first record is not the DUMMY list head",
        ));
    }
    // Every record is at least 24 bytes long, so a walk that takes more steps
    // than this has met some record twice: a pointer cycle.
    let max_steps = end / 24 + 1;
    let mut steps = 0usize;
    let mut out: Records = Vec::new();
    let mut next = reader.next0(&dummy);
    while next != 0 {
        steps += 1;
        if steps > max_steps {
            return Err(ParseError::invalid(
                "twoskip file",
                next,
                "pointer cycle in the record chain",
            ));
        }
        let rec = reader.read(next)?;
        match rec.kind {
            // A DELETE stands in for a removed key; its only pointer is the successor.
            DELETE => next = rec.ptrs.first().copied().unwrap_or(0),
            RECORD => {
                let key = &buf[rec.key.clone()];
                if let Some((prev, _)) = out.last()
                    && prev.as_slice() >= key
                {
                    return Err(ParseError::invalid(
                        "twoskip record",
                        next,
                        "keys out of order (corrupt pointer)",
                    ));
                }
                out.push((key.to_vec(), buf[rec.val.clone()].to_vec()));
                next = reader.next0(&rec);
            }
            DUMMY | COMMIT => {
                return Err(ParseError::invalid(
                    "twoskip record",
                    next,
                    "a DUMMY or COMMIT record inside the key chain",
                ));
            }
            other => {
                return Err(ParseError::invalid(
                    "twoskip record",
                    next,
                    format!("unknown record type 0x{other:02x}"),
                ));
            }
        }
    }
    if out.len() as u64 != header.num_records {
        return Err(ParseError::new(
            "twoskip header",
            32,
            ParseErrorKind::BadSize {
                field: "num_records",
                found: header.num_records,
                expected: out.len() as u64,
            },
        ));
    }
    Ok(out)
}

/// The records whose key starts with `prefix`, from a key-ordered slice such as
/// [`read_all`] returns (binary search, then a contiguous run).
pub fn prefix<'a>(records: &'a [(Vec<u8>, Vec<u8>)], prefix: &[u8]) -> &'a [(Vec<u8>, Vec<u8>)] {
    let start = records.partition_point(|(k, _)| k.as_slice() < prefix);
    let len = records[start..]
        .iter()
        .take_while(|(k, _)| k.starts_with(prefix))
        .count();
    &records[start..start + len]
}

#[cfg(test)]
mod tests {
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
}
