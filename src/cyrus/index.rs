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

use super::{Be, Guid, ParseError, ParseErrorKind, crc32};

/// The index minor versions this module reads and writes, for error messages.
pub const SUPPORTED_VERSIONS: &str = "12-20";

/// Record `system_flags` word: the IMAP system flags (low 16 bits) ...
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

// ---------------------------------------------------------------------------
// Layout tables. One row per stored field: (offset, field, on-disk type).
// Everything in [0, header_len - 4) not covered by a row is spare and must be 0.

#[derive(Clone, Copy, Debug)]
enum Ty {
    U32,
    U64,
    /// u32 seconds
    T32,
    /// u64 nanoseconds
    T64,
}

#[derive(Clone, Copy, Debug)]
enum H {
    GenerationNo,
    Format,
    MinorVersion,
    StartOffset,
    RecordSize,
    NumRecords,
    LastAppenddate,
    LastUid,
    QuotaMailboxUsed,
    Pop3LastLogin,
    Uidvalidity,
    Deleted,
    Answered,
    Flagged,
    Exists,
    Options,
    LeakedCacheRecords,
    Highestmodseq,
    Deletedmodseq,
    FirstExpunged,
    LastRepackTime,
    HeaderFileCrc,
    SyncCrcBasic,
    Recentuid,
    Recenttime,
    Pop3ShowAfter,
    QuotaAnnotUsed,
    SyncCrcAnnot,
    Unseen,
    Createdmodseq,
    ChangesEpoch,
    QuotaDeletedUsed,
    QuotaExpungedUsed,
}

use H::*;
use Ty::*;

type HRow = (usize, H, Ty);

/// The first 24 bytes, identical in every version.
const HDR_BASE: &[HRow] = &[
    (0, GenerationNo, U32),
    (4, Format, U32),
    (8, MinorVersion, U32),
    (12, StartOffset, U32),
    (16, RecordSize, U32),
    (20, NumRecords, U32),
];

/// v12 (and the prefix of v13-18): `V12_HEADER_FIELDS` in `index_file.c`.
const HDR_V12: &[HRow] = &[
    (24, LastAppenddate, T32),
    (28, LastUid, U32),
    (32, QuotaMailboxUsed, U64),
    (40, Pop3LastLogin, T32),
    (44, Uidvalidity, U32),
    (48, Deleted, U32),
    (52, Answered, U32),
    (56, Flagged, U32),
    (60, Options, U32),
    (64, LeakedCacheRecords, U32),
    (68, Highestmodseq, U64),
    (76, Deletedmodseq, U64),
    (84, Exists, U32),
    (88, FirstExpunged, T32),
    (92, LastRepackTime, T32),
    (96, HeaderFileCrc, U32),
    (100, SyncCrcBasic, U32),
    (104, Recentuid, U32),
    (108, Recenttime, T32),
];
const HDR_V13: &[HRow] = &[
    (112, Pop3ShowAfter, T32),
    (116, QuotaAnnotUsed, U32),
    (120, SyncCrcAnnot, U32),
];
const HDR_V14: &[HRow] = &[(124, Unseen, U32)];
const HDR_V16: &[HRow] = &[(128, Createdmodseq, U64)];
const HDR_V17: &[HRow] = &[(136, ChangesEpoch, T32)];
/// v18 (dev only): two unaligned u64s after v17's fields.
const HDR_V18: &[HRow] = &[(140, QuotaDeletedUsed, U64), (148, QuotaExpungedUsed, U64)];
/// v19 rearranged everything after the base so u64s are 8-aligned.
const HDR_V19: &[HRow] = &[
    (24, LastAppenddate, T32),
    (28, LastUid, U32),
    (32, QuotaMailboxUsed, U64),
    (40, Pop3LastLogin, T32),
    (44, Uidvalidity, U32),
    (48, Deleted, U32),
    (52, Answered, U32),
    (56, Flagged, U32),
    (60, Exists, U32),
    (64, Options, U32),
    (68, LeakedCacheRecords, U32),
    (72, Highestmodseq, U64),
    (80, Deletedmodseq, U64),
    (88, FirstExpunged, T32),
    (92, LastRepackTime, T32),
    (96, HeaderFileCrc, U32),
    (100, SyncCrcBasic, U32),
    (104, Recentuid, U32),
    (108, Recenttime, T32),
    (112, Pop3ShowAfter, T32),
    (116, QuotaAnnotUsed, U32),
    (120, SyncCrcAnnot, U32),
    (124, Unseen, U32),
    (128, Createdmodseq, U64),
    (136, QuotaDeletedUsed, U64),
    (144, QuotaExpungedUsed, U64),
    (152, ChangesEpoch, T32),
];
/// v20: times become ns64 and quota_annot_used u64.
const HDR_V20: &[HRow] = &[
    (24, LastAppenddate, T64),
    (32, QuotaMailboxUsed, U64),
    (40, Pop3LastLogin, T64),
    (48, Deleted, U32),
    (52, Answered, U32),
    (56, Flagged, U32),
    (60, Exists, U32),
    (64, Options, U32),
    (68, LeakedCacheRecords, U32),
    (72, Highestmodseq, U64),
    (80, Deletedmodseq, U64),
    (88, LastUid, U32),
    (92, Uidvalidity, U32),
    (96, HeaderFileCrc, U32),
    (100, SyncCrcBasic, U32),
    (104, Recenttime, T64),
    (112, Pop3ShowAfter, T64),
    (120, SyncCrcAnnot, U32),
    (124, Unseen, U32),
    (128, Createdmodseq, U64),
    (136, QuotaDeletedUsed, U64),
    (144, QuotaExpungedUsed, U64),
    (152, QuotaAnnotUsed, U64),
    (160, ChangesEpoch, T64),
    (168, FirstExpunged, T64),
    (176, LastRepackTime, T64),
    (184, Recentuid, U32),
];

/// Header length and record size per version (`index_files_by_version`).
fn sizes(version: u32) -> Option<(usize, usize)> {
    match version {
        12 => Some((128, 96)),
        13 => Some((128, 104)),
        14 | 15 => Some((160, 104)),
        16..=19 => Some((160, 112)),
        20 => Some((192, 144)),
        _ => None,
    }
}

fn header_rows(version: u32) -> Vec<HRow> {
    let mut rows: Vec<HRow> = HDR_BASE.to_vec();
    match version {
        19 => rows.extend_from_slice(HDR_V19),
        20 => rows.extend_from_slice(HDR_V20),
        _ => {
            rows.extend_from_slice(HDR_V12);
            let tail: [(u32, &[HRow]); 5] = [
                (13, HDR_V13),
                (14, HDR_V14),
                (16, HDR_V16),
                (17, HDR_V17),
                (18, HDR_V18),
            ];
            for (since, more) in tail {
                if version >= since {
                    rows.extend_from_slice(more);
                }
            }
        }
    }
    rows
}

fn ty_len(ty: Ty) -> usize {
    match ty {
        U32 | T32 => 4,
        U64 | T64 => 8,
    }
}

/// Read one value; times come back as nanoseconds.
fn read_val(be: &Be<'_>, off: usize, ty: Ty) -> Result<u64, ParseError> {
    Ok(match ty {
        U32 => u64::from(be.u32(off)?),
        U64 | T64 => be.u64(off)?,
        T32 => CyrusTime::from_secs(u64::from(be.u32(off)?)).0,
    })
}

/// Encode one value (times given as nanoseconds). Narrowing to 32 bits keeps
/// the low bits, as Cyrus's `htonl` of a wider value does.
fn put_val(buf: &mut [u8], off: usize, ty: Ty, v: u64) {
    match ty {
        U32 => buf[off..off + 4].copy_from_slice(&(v as u32).to_be_bytes()),
        T32 => buf[off..off + 4].copy_from_slice(&((v / NS) as u32).to_be_bytes()),
        U64 | T64 => buf[off..off + 8].copy_from_slice(&v.to_be_bytes()),
    }
}

impl IndexHeader {
    fn get(&self, f: H) -> u64 {
        match f {
            GenerationNo => self.generation_no.into(),
            Format => self.format.into(),
            MinorVersion => self.minor_version.into(),
            StartOffset => self.start_offset.into(),
            RecordSize => self.record_size.into(),
            NumRecords => self.num_records.into(),
            LastAppenddate => self.last_appenddate.0,
            LastUid => self.last_uid.into(),
            QuotaMailboxUsed => self.quota_mailbox_used,
            Pop3LastLogin => self.pop3_last_login.0,
            Uidvalidity => self.uidvalidity.into(),
            Deleted => self.deleted.into(),
            Answered => self.answered.into(),
            Flagged => self.flagged.into(),
            Exists => self.exists.into(),
            Options => self.options.into(),
            LeakedCacheRecords => self.leaked_cache_records.into(),
            Highestmodseq => self.highestmodseq,
            Deletedmodseq => self.deletedmodseq,
            FirstExpunged => self.first_expunged.0,
            LastRepackTime => self.last_repack_time.0,
            HeaderFileCrc => self.header_file_crc.into(),
            SyncCrcBasic => self.sync_crc_basic.into(),
            Recentuid => self.recentuid.into(),
            Recenttime => self.recenttime.0,
            Pop3ShowAfter => self.pop3_show_after.0,
            QuotaAnnotUsed => self.quota_annot_used,
            SyncCrcAnnot => self.sync_crc_annot.into(),
            Unseen => self.unseen.into(),
            Createdmodseq => self.createdmodseq,
            ChangesEpoch => self.changes_epoch.0,
            QuotaDeletedUsed => self.quota_deleted_used,
            QuotaExpungedUsed => self.quota_expunged_used,
        }
    }

    /// `v` comes from `read_val`, so 32-bit fields always fit.
    fn set(&mut self, f: H, v: u64) {
        let n = v as u32;
        match f {
            GenerationNo => self.generation_no = n,
            Format => self.format = n,
            MinorVersion => self.minor_version = n,
            StartOffset => self.start_offset = n,
            RecordSize => self.record_size = n,
            NumRecords => self.num_records = n,
            LastAppenddate => self.last_appenddate = CyrusTime(v),
            LastUid => self.last_uid = n,
            QuotaMailboxUsed => self.quota_mailbox_used = v,
            Pop3LastLogin => self.pop3_last_login = CyrusTime(v),
            Uidvalidity => self.uidvalidity = n,
            Deleted => self.deleted = n,
            Answered => self.answered = n,
            Flagged => self.flagged = n,
            Exists => self.exists = n,
            Options => self.options = n,
            LeakedCacheRecords => self.leaked_cache_records = n,
            Highestmodseq => self.highestmodseq = v,
            Deletedmodseq => self.deletedmodseq = v,
            FirstExpunged => self.first_expunged = CyrusTime(v),
            LastRepackTime => self.last_repack_time = CyrusTime(v),
            HeaderFileCrc => self.header_file_crc = n,
            SyncCrcBasic => self.sync_crc_basic = n,
            Recentuid => self.recentuid = n,
            Recenttime => self.recenttime = CyrusTime(v),
            Pop3ShowAfter => self.pop3_show_after = CyrusTime(v),
            QuotaAnnotUsed => self.quota_annot_used = v,
            SyncCrcAnnot => self.sync_crc_annot = n,
            Unseen => self.unseen = n,
            Createdmodseq => self.createdmodseq = v,
            ChangesEpoch => self.changes_epoch = CyrusTime(v),
            QuotaDeletedUsed => self.quota_deleted_used = v,
            QuotaExpungedUsed => self.quota_expunged_used = v,
        }
    }
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

// ---------------------------------------------------------------------------
// Records.

#[derive(Clone, Copy, Debug)]
enum R {
    Uid,
    Internaldate,
    Sentdate,
    Size,
    HeaderSize,
    Gmtime,
    /// low 32 bits of cache_offset
    CacheOffsetLo,
    LastUpdated,
    SystemFlags,
    UserFlags(usize),
    Savedate,
    ContentLines,
    /// cache_version | cache_offset bits 32..47 in the high half
    CacheVersionWord,
    Modseq,
    Cid,
    Createdmodseq,
    Basecid,
    CacheCrc,
}

type RRow = (usize, R, Ty);

/// `COMMON_RECORD_FIELDS` of `index_file.c` (v6-19), up to offset 52.
const REC_COMMON: &[RRow] = &[
    (0, R::Uid, U32),
    (4, R::Internaldate, T32),
    (8, R::Sentdate, T32),
    (12, R::Size, U32),
    (16, R::HeaderSize, U32),
    (20, R::Gmtime, T32),
    (24, R::CacheOffsetLo, U32),
    (28, R::LastUpdated, T32),
    (32, R::SystemFlags, U32),
    (36, R::UserFlags(0), U32),
    (40, R::UserFlags(1), U32),
    (44, R::UserFlags(2), U32),
    (48, R::UserFlags(3), U32),
    (56, R::CacheVersionWord, U32),
    // 60..80 is the GUID, handled apart (see GUID_AT)
    (80, R::Modseq, U64),
];
const REC_V20: &[RRow] = &[
    (0, R::Uid, U32),
    (4, R::CacheOffsetLo, U32),
    (8, R::Internaldate, T64),
    (16, R::Sentdate, T64),
    (24, R::Size, U64),
    (32, R::HeaderSize, U32),
    (36, R::SystemFlags, U32),
    (40, R::UserFlags(0), U32),
    (44, R::UserFlags(1), U32),
    (48, R::UserFlags(2), U32),
    (52, R::UserFlags(3), U32),
    (56, R::CacheVersionWord, U32),
    (80, R::Modseq, U64),
    (88, R::Cid, U64),
    (96, R::Createdmodseq, U64),
    (104, R::Gmtime, T64),
    (112, R::LastUpdated, T64),
    (120, R::Savedate, T64),
    (128, R::Basecid, U64),
    (136, R::CacheCrc, U32),
];
/// The GUID sits at 60..80 in every supported version.
const GUID_AT: usize = 60;

fn record_rows(version: u32) -> Vec<RRow> {
    if version == 20 {
        return REC_V20.to_vec();
    }
    let mut rows = REC_COMMON.to_vec();
    if version >= 15 {
        rows.push((52, R::Savedate, T32));
    } else {
        rows.push((52, R::ContentLines, U32));
    }
    match version {
        12 => rows.push((88, R::CacheCrc, U32)),
        13..=15 => rows.extend_from_slice(&[(88, R::Cid, U64), (96, R::CacheCrc, U32)]),
        _ => rows.extend_from_slice(&[
            (88, R::Cid, U64),
            (96, R::Createdmodseq, U64),
            (104, R::CacheCrc, U32),
        ]),
    }
    rows
}

impl IndexRecord {
    fn get(&self, f: R) -> u64 {
        match f {
            R::Uid => self.uid.into(),
            R::Internaldate => self.internaldate.0,
            R::Sentdate => self.sentdate.0,
            R::Size => self.size,
            R::HeaderSize => self.header_size.into(),
            R::Gmtime => self.gmtime.0,
            R::CacheOffsetLo => self.cache_offset & 0xffff_ffff,
            R::LastUpdated => self.last_updated.0,
            R::SystemFlags => self.system_flags.into(),
            R::UserFlags(i) => self.user_flags[i].into(),
            R::Savedate => self.savedate.0,
            R::ContentLines => self.legacy_content_lines.into(),
            R::CacheVersionWord => {
                u64::from(self.cache_version) | ((self.cache_offset >> 16) & 0xffff_0000)
            }
            R::Modseq => self.modseq,
            R::Cid => self.cid,
            R::Createdmodseq => self.createdmodseq,
            R::Basecid => self.basecid,
            R::CacheCrc => self.cache_crc.into(),
        }
    }

    fn set(&mut self, f: R, v: u64) {
        let n = v as u32;
        match f {
            R::Uid => self.uid = n,
            R::Internaldate => self.internaldate = CyrusTime(v),
            R::Sentdate => self.sentdate = CyrusTime(v),
            R::Size => self.size = v,
            R::HeaderSize => self.header_size = n,
            R::Gmtime => self.gmtime = CyrusTime(v),
            R::CacheOffsetLo => self.cache_offset |= v,
            R::LastUpdated => self.last_updated = CyrusTime(v),
            R::SystemFlags => self.system_flags = n,
            R::UserFlags(i) => self.user_flags[i] = n,
            R::Savedate => self.savedate = CyrusTime(v),
            R::ContentLines => self.legacy_content_lines = n,
            R::CacheVersionWord => {
                self.cache_version = (n & 0xffff) as u16;
                self.cache_offset |= u64::from(n & 0xffff_0000) << 16;
            }
            R::Modseq => self.modseq = v,
            R::Cid => self.cid = v,
            R::Createdmodseq => self.createdmodseq = v,
            R::Basecid => self.basecid = v,
            R::CacheCrc => self.cache_crc = n,
        }
    }
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
    let what = format!("cyrus.index record {recno}");
    let Some((_, rsize)) = sizes(hdr.minor_version) else {
        return Err(ParseError::new(
            what,
            file_offset,
            ParseErrorKind::UnsupportedVersion {
                found: hdr.minor_version.into(),
                supported: SUPPORTED_VERSIONS,
            },
        ));
    };
    let be = Be::new(rec, &what, file_offset);
    let body = be.bytes(0, rsize)?;
    let stored = be.u32(rsize - 4)?;
    let computed = crc32(&body[..rsize - 4]);
    if stored != computed {
        return Err(ParseError::new(
            what.as_str(),
            file_offset + (rsize - 4) as u64,
            ParseErrorKind::BadCrc { stored, computed },
        ));
    }
    let mut r = IndexRecord::default();
    for (off, f, ty) in record_rows(hdr.minor_version) {
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
    for (off, f, ty) in record_rows(h.minor_version) {
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
    let mut records = Vec::with_capacity(header.num_records as usize);
    let mut prev_uid = 0u32;
    for recno in 1..=header.num_records {
        let off = start + u64::from(recno - 1) * rsize;
        let (from, to) = (off as usize, (off + rsize) as usize);
        let slice = buf.get(from..to).ok_or_else(|| {
            ParseError::truncated(format!("cyrus.index record {recno}"), off, rsize, 0)
        })?;
        let rec = parse_record(&header, slice, recno, off)?;
        if rec.uid <= prev_uid || rec.uid > header.last_uid {
            return Err(ParseError::invalid(
                format!("cyrus.index record {recno}"),
                off,
                format!(
                    "uid {} out of order (previous uid {prev_uid}, last_uid {})",
                    rec.uid, header.last_uid
                ),
            ));
        }
        prev_uid = rec.uid;
        records.push(rec);
    }
    Ok(Index { header, records })
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
            for (off, _, ty) in record_rows(v) {
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
