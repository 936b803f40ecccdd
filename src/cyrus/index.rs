//! `cyrus.index`: the per-mailbox header and fixed-size message records.
//!
//! Owns the byte layout of every index minor version from 12 to 20 (Cyrus 2.4 to
//! `master`; Cyrus 3.6 writes 17), a strict parser and an exact writer: parsing a
//! file Cyrus wrote and writing it back gives the same bytes. It does not own
//! locking (`crate::lock`), `cyrus.header` (`header.rs`) or `cyrus.cache`
//! (`cache.rs`). Field tables, CRC rules and their Cyrus sources are in
//! `doc/cyrus-files.md`; the layouts follow `imap/index_file.c` (master) and
//! `mailbox_buf_to_index_header` in `imap/mailbox.c` (3.6.1).
#![forbid(unsafe_code)]

mod layout;

use super::{Be, Guid, ParseError, ParseErrorKind, crc32};
use layout::{GUID_AT, header_rows, put_val, read_val, record_rows, sizes, ty_len};

/// The index minor versions this module reads and writes, for error messages.
pub const SUPPORTED_VERSIONS: &str = "12-20";

/// Record `system_flags` word: the IMAP system flags (low 16 bits) ...
/// The longest index header of any supported version (v20: 192 bytes); reading this
/// many bytes of a `cyrus.index` always gets its whole header.
pub const INDEX_HEADER_MAX: usize = 192;

pub const FLAG_ANSWERED: u32 = 1 << 0;
pub const FLAG_FLAGGED: u32 = 1 << 1;
pub const FLAG_DELETED: u32 = 1 << 2;
pub const FLAG_DRAFT: u32 = 1 << 3;
pub const FLAG_SEEN: u32 = 1 << 4;
/// ... and Cyrus's internal flags (high 16 bits), `imap/mailbox.h`.
pub const FLAG_INTERNAL_SNOOZED: u32 = 1 << 26;
pub const FLAG_INTERNAL_SPLITCONVERSATION: u32 = 1 << 27;
pub const FLAG_INTERNAL_NEEDS_CLEANUP: u32 = 1 << 28;
pub const FLAG_INTERNAL_ARCHIVED: u32 = 1 << 29;
pub const FLAG_INTERNAL_UNLINKED: u32 = 1 << 30;
pub const FLAG_INTERNAL_EXPUNGED: u32 = 1 << 31;

/// A Cyrus timestamp, kept as nanoseconds since the epoch so that both on-disk
/// forms round-trip exactly: `t32` (seconds, v12-19) and `ns64` (v20).
///
/// Serialized (JSON) as whole seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CyrusTime(pub u64);

const NS: u64 = 1_000_000_000;

impl CyrusTime {
    /// From whole seconds.
    pub fn from_secs(secs: u64) -> CyrusTime {
        CyrusTime(secs.saturating_mul(NS))
    }
    /// Whole seconds since the epoch.
    pub fn secs(self) -> u64 {
        self.0 / NS
    }
    /// The sub-second part (always 0 for versions below 20).
    pub fn subsec_nanos(self) -> u32 {
        (self.0 % NS) as u32
    }
    /// Nanoseconds since the epoch (the v20 on-disk value).
    pub fn as_nanos(self) -> u64 {
        self.0
    }
}

impl serde::Serialize for CyrusTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.secs())
    }
}

/// The `cyrus.index` header, every field of versions 12 to 20.
///
/// Fields a version does not store are zero after parsing and are not written.
/// No defaults are applied (Cyrus reads a stored `highestmodseq` of 0 as 1 and
/// fakes `changes_epoch` below v17; this struct holds what is on disk).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexHeader {
    pub generation_no: u32,
    pub format: u32,
    pub minor_version: u32,
    pub start_offset: u32,
    pub record_size: u32,
    pub num_records: u32,
    pub last_appenddate: CyrusTime,
    pub last_uid: u32,
    pub quota_mailbox_used: u64,
    pub pop3_last_login: CyrusTime,
    pub uidvalidity: u32,
    pub deleted: u32,
    pub answered: u32,
    pub flagged: u32,
    pub exists: u32,
    pub options: u32,
    pub leaked_cache_records: u32,
    pub highestmodseq: u64,
    pub deletedmodseq: u64,
    pub first_expunged: CyrusTime,
    pub last_repack_time: CyrusTime,
    /// CRC32 of the whole `cyrus.header` file when it was last written.
    pub header_file_crc: u32,
    /// XOR of per-record sync CRCs, see [`sync_crc_basic`].
    pub sync_crc_basic: u32,
    pub recentuid: u32,
    pub recenttime: CyrusTime,
    pub pop3_show_after: CyrusTime,
    /// 32 bits on disk before v20, 64 bits in v20.
    pub quota_annot_used: u64,
    pub sync_crc_annot: u32,
    pub unseen: u32,
    pub createdmodseq: u64,
    pub changes_epoch: CyrusTime,
    pub quota_deleted_used: u64,
    pub quota_expunged_used: u64,
    /// The stored header CRC (recomputed by [`write_header`]).
    pub header_crc: u32,
}

/// One message record of `cyrus.index`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexRecord {
    pub uid: u32,
    pub internaldate: CyrusTime,
    /// The Date: header, date only (Cyrus drops the time of day).
    pub sentdate: CyrusTime,
    /// Message file size; 32 bits on disk before v20.
    pub size: u64,
    pub header_size: u32,
    /// The Date: header in UTC.
    pub gmtime: CyrusTime,
    /// Offset of this record's entry in `cyrus.cache`, 48 bits: the top 16 bits
    /// live in the high half of the on-disk cache_version word (`mailbox.c`,
    /// `mailbox_buf_to_index_record`).
    pub cache_offset: u64,
    pub last_updated: CyrusTime,
    /// The full on-disk word: system flags (low 16 bits) and internal flags.
    pub system_flags: u32,
    /// User flag bitmap: flag `i` is bit `i % 32` of word `i / 32`.
    pub user_flags: [u32; 4],
    /// Time the message was saved into this mailbox (v15+; 0 before).
    pub savedate: CyrusTime,
    /// v12-14 only: the slot savedate took over held Cyrus 2.x's line count.
    /// Cyrus 3 writes 0; files written by 2.4 carry real values.
    pub legacy_content_lines: u32,
    /// Cache format version (low 16 bits of the on-disk word).
    pub cache_version: u16,
    /// SHA-1 of the message file.
    pub guid: Guid,
    pub modseq: u64,
    /// Conversation id ("thrid"), v13+.
    pub cid: u64,
    pub createdmodseq: u64,
    /// Base conversation id, v20 only.
    pub basecid: u64,
    /// CRC32 of the cache entry; 0 means none was recorded.
    pub cache_crc: u32,
    /// The stored record CRC (recomputed by [`write_record`]).
    pub record_crc: u32,
}

impl IndexRecord {
    /// EXPUNGED: invisible to IMAP; the file may still exist.
    pub fn is_expunged(&self) -> bool {
        self.system_flags & FLAG_INTERNAL_EXPUNGED != 0
    }
    /// UNLINKED: the message file is gone or about to be; a tombstone.
    pub fn is_unlinked(&self) -> bool {
        self.system_flags & FLAG_INTERNAL_UNLINKED != 0
    }
    /// ARCHIVED: the file lives on the archive partition.
    pub fn is_archived(&self) -> bool {
        self.system_flags & FLAG_INTERNAL_ARCHIVED != 0
    }

    /// IMAP names of the set system flags, in bit order.
    pub fn system_flag_names(&self) -> Vec<&'static str> {
        SYSTEM_FLAG_NAMES
            .iter()
            .filter(|(bit, _)| self.system_flags & bit != 0)
            .map(|(_, name)| *name)
            .collect()
    }

    /// Numbers (0..128) of the set user flags, ascending.
    pub fn user_flag_bits(&self) -> impl Iterator<Item = usize> + '_ {
        (0..128usize).filter(|i| self.user_flags[i / 32] & (1u32 << (i % 32)) != 0)
    }
}

const SYSTEM_FLAG_NAMES: [(u32, &str); 5] = [
    (FLAG_ANSWERED, "\\Answered"),
    (FLAG_FLAGGED, "\\Flagged"),
    (FLAG_DELETED, "\\Deleted"),
    (FLAG_DRAFT, "\\Draft"),
    (FLAG_SEEN, "\\Seen"),
];

/// A whole parsed `cyrus.index`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Index {
    pub header: IndexHeader,
    pub records: Vec<IndexRecord>,
}

const WHAT_HEADER: &str = "cyrus.index header";

/// Parse and validate the header: length, then version, then
/// `start_offset`/`record_size` against the version, then the header CRC, then
/// the fields (spare bytes must be zero, as Cyrus always writes them).
pub fn parse_header(buf: &[u8]) -> Result<IndexHeader, ParseError> {
    let be = Be::new(buf, WHAT_HEADER, 0);
    let version = be.u32(8)?;
    let Some((hlen, rsize)) = sizes(version) else {
        return Err(ParseError::new(
            WHAT_HEADER,
            8,
            ParseErrorKind::UnsupportedVersion {
                found: version.into(),
                supported: SUPPORTED_VERSIONS,
            },
        ));
    };
    let head = be.bytes(0, hlen)?;
    for (off, field, expected) in [(12, "start_offset", hlen), (16, "record_size", rsize)] {
        let found = be.u32(off)?;
        if found as usize != expected {
            return Err(ParseError::new(
                WHAT_HEADER,
                off as u64,
                ParseErrorKind::BadSize {
                    field,
                    found: found.into(),
                    expected: expected as u64,
                },
            ));
        }
    }
    let stored = be.u32(hlen - 4)?;
    let computed = crc32(&head[..hlen - 4]);
    if stored != computed {
        return Err(ParseError::new(
            WHAT_HEADER,
            (hlen - 4) as u64,
            ParseErrorKind::BadCrc { stored, computed },
        ));
    }
    let rows = header_rows(version);
    let mut covered = vec![false; hlen - 4];
    let mut h = IndexHeader::default();
    for &(off, f, ty) in &rows {
        h.set(f, read_val(&be, off, ty)?);
        covered[off..off + ty_len(ty)]
            .iter_mut()
            .for_each(|c| *c = true);
    }
    h.header_crc = stored;
    check_spare(head, &covered, WHAT_HEADER, 0)?;
    Ok(h)
}

/// Cyrus zeroes the buffer before writing, so a non-zero spare byte means a
/// writer we do not know (and would break byte-exact write-back).
fn check_spare(buf: &[u8], covered: &[bool], what: &str, base: u64) -> Result<(), ParseError> {
    for (i, c) in covered.iter().enumerate() {
        if !c && buf[i] != 0 {
            return Err(ParseError::invalid(
                what,
                base + i as u64,
                format!("spare byte is {:#04x}, not zero", buf[i]),
            ));
        }
    }
    Ok(())
}

/// Encode a header in the layout of `h.minor_version`, recomputing the CRC.
/// `start_offset` and `record_size` are written as that version requires;
/// every other field is written as given (counts are not recomputed).
///
/// # Panics
/// If `h.minor_version` is not one of [`SUPPORTED_VERSIONS`]: building a
/// header for a version we cannot lay out is a caller bug.
pub fn write_header(h: &IndexHeader) -> Vec<u8> {
    let Some((hlen, rsize)) = sizes(h.minor_version) else {
        panic!(
            "write_header: index version {} is not in {SUPPORTED_VERSIONS}",
            h.minor_version
        );
    };
    let mut h = h.clone();
    h.start_offset = hlen as u32;
    h.record_size = rsize as u32;
    let mut buf = vec![0u8; hlen];
    for (off, f, ty) in header_rows(h.minor_version) {
        put_val(&mut buf, off, ty, h.get(f));
    }
    let crc = crc32(&buf[..hlen - 4]);
    buf[hlen - 4..].copy_from_slice(&crc.to_be_bytes());
    buf
}

/// Parse record `recno` (1-based) from `rec`, which starts at `file_offset` in
/// the file. The record CRC is checked before any field is read. Errors name
/// "cyrus.index record N" and carry file offsets.
pub fn parse_record(
    hdr: &IndexHeader,
    rec: &[u8],
    recno: u32,
    file_offset: u64,
) -> Result<IndexRecord, ParseError> {
    // The record's name is only formatted when there is an error to report.
    parse_record_inner(hdr.minor_version, rec, file_offset).map_err(|e| ParseError {
        what: format!("cyrus.index record {recno}"),
        ..e
    })
}

fn parse_record_inner(version: u32, rec: &[u8], base: u64) -> Result<IndexRecord, ParseError> {
    const WHAT: &str = "cyrus.index record";
    let Some((_, rsize)) = sizes(version) else {
        return Err(ParseError::new(
            WHAT,
            base,
            ParseErrorKind::UnsupportedVersion {
                found: version.into(),
                supported: SUPPORTED_VERSIONS,
            },
        ));
    };
    let be = Be::new(rec, WHAT, base);
    let body = be.bytes(0, rsize)?;
    let stored = be.u32(rsize - 4)?;
    let computed = crc32(&body[..rsize - 4]);
    if stored != computed {
        return Err(ParseError::new(
            WHAT,
            base + (rsize - 4) as u64,
            ParseErrorKind::BadCrc { stored, computed },
        ));
    }
    let mut r = IndexRecord::default();
    for &(off, f, ty) in record_rows(version) {
        r.set(f, read_val(&be, off, ty)?);
    }
    let mut guid = [0u8; 20];
    guid.copy_from_slice(be.bytes(GUID_AT, 20)?);
    r.guid = Guid(guid);
    r.record_crc = stored;
    Ok(r)
}

/// Encode a record in the layout of `h.minor_version`, recomputing its CRC.
/// Fields the version does not store are dropped.
///
/// # Panics
/// If `h.minor_version` is not one of [`SUPPORTED_VERSIONS`].
pub fn write_record(h: &IndexHeader, r: &IndexRecord) -> Vec<u8> {
    let Some((_, rsize)) = sizes(h.minor_version) else {
        panic!(
            "write_record: index version {} is not in {SUPPORTED_VERSIONS}",
            h.minor_version
        );
    };
    let mut buf = vec![0u8; rsize];
    for &(off, f, ty) in record_rows(h.minor_version) {
        put_val(&mut buf, off, ty, r.get(f));
    }
    buf[GUID_AT..GUID_AT + 20].copy_from_slice(&r.guid.0);
    let crc = crc32(&buf[..rsize - 4]);
    buf[rsize - 4..].copy_from_slice(&crc.to_be_bytes());
    buf
}

/// Parse a whole `cyrus.index`: the header, then exactly `num_records` records
/// (bytes after them are left over from uncommitted appends and ignored).
/// UIDs must be strictly increasing and not above `last_uid`.
pub fn parse_index(buf: &[u8]) -> Result<Index, ParseError> {
    let records = parse_records(buf)?;
    let header = records.header.clone();
    let records = records.collect::<Result<Vec<_>, _>>()?;
    Ok(Index { header, records })
}

/// Parse the header of a whole `cyrus.index` and check that the buffer holds
/// `num_records` records; the records are then parsed one at a time by the returned
/// iterator, with the checks of [`parse_index`]. For a caller that keeps a summary of
/// each record: a folder of 200,000 messages is never held as a `Vec<IndexRecord>`
/// (~32 MB) beside the file's bytes.
pub fn parse_records(buf: &[u8]) -> Result<Records<'_>, ParseError> {
    let header = parse_header(buf)?;
    let start = u64::from(header.start_offset);
    let rsize = u64::from(header.record_size);
    let len = buf.len() as u64;
    // How many whole records the buffer holds; never trust num_records beyond it.
    let room = len.saturating_sub(start) / rsize;
    if u64::from(header.num_records) > room {
        let at = start + room * rsize;
        return Err(ParseError::truncated(
            format!("cyrus.index record {}", room + 1),
            at,
            rsize,
            len - at,
        ));
    }
    Ok(Records {
        buf,
        header,
        next: 1,
        prev_uid: 0,
        failed: false,
    })
}

/// The records of a `cyrus.index`, parsed one by one ([`parse_records`]). After an
/// error the iterator ends.
#[derive(Debug)]
pub struct Records<'a> {
    buf: &'a [u8],
    /// The file's header, parsed and checked.
    pub header: IndexHeader,
    /// The 1-based number of the next record.
    next: u32,
    prev_uid: u32,
    failed: bool,
}

impl Records<'_> {
    fn record(&mut self, recno: u32) -> Result<IndexRecord, ParseError> {
        let start = u64::from(self.header.start_offset);
        let rsize = u64::from(self.header.record_size);
        let off = start + u64::from(recno - 1) * rsize;
        let (from, to) = (off as usize, (off + rsize) as usize);
        let slice = self.buf.get(from..to).ok_or_else(|| {
            ParseError::truncated(format!("cyrus.index record {recno}"), off, rsize, 0)
        })?;
        let rec = parse_record(&self.header, slice, recno, off)?;
        if rec.uid <= self.prev_uid || rec.uid > self.header.last_uid {
            return Err(ParseError::invalid(
                format!("cyrus.index record {recno}"),
                off,
                format!(
                    "uid {} out of order (previous uid {}, last_uid {})",
                    rec.uid, self.prev_uid, self.header.last_uid
                ),
            ));
        }
        self.prev_uid = rec.uid;
        Ok(rec)
    }
}

impl Iterator for Records<'_> {
    type Item = Result<IndexRecord, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next > self.header.num_records {
            return None;
        }
        let recno = self.next;
        self.next += 1;
        let r = self.record(recno);
        self.failed = r.is_err();
        Some(r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.header.num_records + 1).saturating_sub(self.next) as usize;
        (0, Some(left))
    }
}

/// Encode a whole index: header (with `num_records` set to the number of
/// records) and every record, all CRCs recomputed.
///
/// # Panics
/// If the header's version is not one of [`SUPPORTED_VERSIONS`].
pub fn write_index(i: &Index) -> Vec<u8> {
    let mut h = i.header.clone();
    h.num_records = u32::try_from(i.records.len()).expect("more than 2^32 index records");
    let mut out = write_header(&h);
    for r in &i.records {
        out.extend_from_slice(&write_record(&h, r));
    }
    out
}

/// The `synccrcs.basic` value of a mailbox (`crc_basic` in `imap/mailbox.c`):
/// XOR over non-expunged records of CRC32 of
/// `"<uid> <modseq> <last_updated> (<flagcrc>) <internaldate> <guid-hex>"`,
/// where flagcrc XORs CRC32 of each set flag's lowercased name. User flag
/// names come from `cyrus.header` (slot `i` names flag `i`; `None` = unused).
pub fn sync_crc_basic(records: &[IndexRecord], user_flag_names: &[Option<String>]) -> u32 {
    records
        .iter()
        .filter(|r| !r.is_expunged())
        .fold(0, |acc, r| acc ^ record_sync_crc(r, user_flag_names))
}

fn record_sync_crc(r: &IndexRecord, names: &[Option<String>]) -> u32 {
    // Order of XOR does not matter; Cyrus names them in this order.
    let mut flagcrc = 0u32;
    for (bit, name) in [
        (FLAG_DELETED, "\\deleted"),
        (FLAG_ANSWERED, "\\answered"),
        (FLAG_FLAGGED, "\\flagged"),
        (FLAG_DRAFT, "\\draft"),
        (FLAG_SEEN, "\\seen"),
    ] {
        if r.system_flags & bit != 0 {
            flagcrc ^= crc32(name.as_bytes());
        }
    }
    for i in r.user_flag_bits() {
        if let Some(Some(name)) = names.get(i) {
            flagcrc ^= crc32(&cstring_lower(name.as_bytes()));
        }
    }
    let line = format!(
        "{} {} {} ({}) {} {}",
        r.uid,
        r.modseq,
        r.last_updated.secs(),
        flagcrc,
        r.internaldate.secs(),
        r.guid.to_hex()
    );
    crc32(line.as_bytes())
}

/// What Cyrus hashes for a flag name: copied into a 4096-byte C buffer
/// (`strlcpy`, so at most 4095 bytes and up to the first NUL), ASCII-lowercased.
fn cstring_lower(name: &[u8]) -> Vec<u8> {
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    name[..end.min(4095)].to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_header(version: u32) -> IndexHeader {
        let t = |s| CyrusTime::from_secs(s);
        IndexHeader {
            generation_no: 3,
            minor_version: version,
            num_records: 0,
            last_appenddate: t(1_700_000_001),
            last_uid: 9,
            quota_mailbox_used: 12345,
            pop3_last_login: t(1_700_000_002),
            uidvalidity: 1_700_000_000,
            highestmodseq: 77,
            deletedmodseq: 5,
            first_expunged: t(1_700_000_003),
            last_repack_time: t(1_700_000_004),
            header_file_crc: 0xdead_beef,
            sync_crc_basic: 0x1234_5678,
            recentuid: 8,
            recenttime: t(1_700_000_005),
            pop3_show_after: t(if version >= 13 { 1_700_000_006 } else { 0 }),
            quota_annot_used: if version >= 13 { 56 } else { 0 },
            sync_crc_annot: if version >= 13 { 12_345_678 } else { 0 },
            unseen: if version >= 14 { 2 } else { 0 },
            createdmodseq: if version >= 16 { 1 } else { 0 },
            changes_epoch: t(if version >= 17 { 1_700_000_007 } else { 0 }),
            quota_deleted_used: if version >= 18 { 11 } else { 0 },
            quota_expunged_used: if version >= 18 { 22 } else { 0 },
            options: 1,
            exists: 4,
            ..Default::default()
        }
    }

    #[test]
    fn header_round_trips_every_version() {
        for v in 12..=20u32 {
            let h = sample_header(v);
            let bytes = write_header(&h);
            let (hlen, rsize) = sizes(v).unwrap();
            assert_eq!(bytes.len(), hlen);
            let back = parse_header(&bytes).unwrap();
            assert_eq!(back.start_offset as usize, hlen);
            assert_eq!(back.record_size as usize, rsize);
            let mut want = h.clone();
            want.start_offset = hlen as u32;
            want.record_size = rsize as u32;
            want.header_crc = back.header_crc;
            assert_eq!(back, want, "version {v}");
            assert_eq!(write_header(&back), bytes);
        }
    }

    #[test]
    fn v20_keeps_nanoseconds() {
        let mut h = sample_header(20);
        h.last_appenddate = CyrusTime(1_700_000_000_123_456_789);
        let back = parse_header(&write_header(&h)).unwrap();
        assert_eq!(back.last_appenddate.secs(), 1_700_000_000);
        assert_eq!(back.last_appenddate.subsec_nanos(), 123_456_789);
    }

    #[test]
    fn header_tables_do_not_overlap() {
        for v in 12..=20u32 {
            let (hlen, _) = sizes(v).unwrap();
            let mut used = vec![0u8; hlen - 4];
            for (off, _, ty) in header_rows(v) {
                for b in &mut used[off..off + ty_len(ty)] {
                    *b += 1;
                }
            }
            assert!(used.iter().all(|&n| n <= 1), "overlap in v{v}");
        }
    }

    #[test]
    fn record_tables_cover_every_byte_once() {
        for v in 12..=20u32 {
            let (_, rsize) = sizes(v).unwrap();
            let mut used = vec![0u8; rsize - 4];
            for &(off, _, ty) in record_rows(v) {
                for b in &mut used[off..off + ty_len(ty)] {
                    *b += 1;
                }
            }
            for b in &mut used[GUID_AT..GUID_AT + 20] {
                *b += 1;
            }
            assert!(used.iter().all(|&n| n == 1), "v{v}: {used:?}");
        }
    }

    #[test]
    fn version_outside_range_is_unsupported() {
        for v in [0u32, 9, 10, 11, 21, u32::MAX] {
            let mut buf = vec![0u8; 200];
            buf[8..12].copy_from_slice(&v.to_be_bytes());
            let e = parse_header(&buf).unwrap_err();
            assert_eq!(e.offset, 8);
            assert_eq!(
                e.kind,
                ParseErrorKind::UnsupportedVersion {
                    found: v.into(),
                    supported: "12-20"
                }
            );
        }
    }

    #[test]
    fn nonzero_spare_byte_is_rejected() {
        let mut b = write_header(&sample_header(17));
        b[150] = 1;
        let crc = crc32(&b[..156]);
        b[156..].copy_from_slice(&crc.to_be_bytes());
        let e = parse_header(&b).unwrap_err();
        assert_eq!(e.offset, 150);
        assert!(matches!(e.kind, ParseErrorKind::Invalid(_)));
    }

    #[test]
    fn cache_offset_uses_48_bits() {
        let h = sample_header(17);
        let r = IndexRecord {
            uid: 1,
            cache_offset: 0x0000_1234_8765_4321,
            cache_version: 11,
            ..Default::default()
        };
        let b = write_record(&h, &r);
        assert_eq!(&b[24..28], &0x8765_4321u32.to_be_bytes());
        assert_eq!(&b[56..60], &0x1234_000bu32.to_be_bytes());
        let back = parse_record(&h, &b, 1, 160).unwrap();
        assert_eq!(back.cache_offset, r.cache_offset);
        assert_eq!(back.cache_version, 11);
    }

    #[test]
    fn flag_helpers() {
        let r = IndexRecord {
            system_flags: FLAG_SEEN | FLAG_ANSWERED | FLAG_INTERNAL_EXPUNGED,
            user_flags: [0b101, 0, 0x8000_0000, 1],
            ..Default::default()
        };
        assert_eq!(r.system_flag_names(), vec!["\\Answered", "\\Seen"]);
        assert_eq!(r.user_flag_bits().collect::<Vec<_>>(), vec![0, 2, 95, 96]);
        assert!(r.is_expunged() && !r.is_unlinked() && !r.is_archived());
    }

    #[test]
    fn record_crc_checked_before_fields() {
        let h = sample_header(12);
        let mut b = write_record(
            &h,
            &IndexRecord {
                uid: 1,
                ..Default::default()
            },
        );
        b[0] ^= 1;
        let e = parse_record(&h, &b, 7, 1000).unwrap_err();
        assert_eq!(e.what, "cyrus.index record 7");
        assert_eq!(e.offset, 1000 + 92);
        assert!(matches!(e.kind, ParseErrorKind::BadCrc { .. }));
    }

    #[test]
    fn flag_name_is_hashed_as_a_c_string() {
        assert_eq!(cstring_lower(b"Wo\0rk"), b"wo".to_vec());
        assert_eq!(cstring_lower(&[b'A'; 5000]).len(), 4095);
    }
}
