//! Byte layouts of `cyrus.index` versions 12 to 20: one table per version
//! listing (offset, field, on-disk type) for the header and the record, and
//! the glue that moves values between those tables and the structs.
//!
//! Owned by `super` (the parser and writer); nothing here is public outside
//! `cyrus::index`. Tables follow `imap/index_file.c` (master) and the
//! `OFFSET_*` constants of `imap/mailbox.h` (3.6.1); `doc/cyrus-files.md`
//! prints them.
#![forbid(unsafe_code)]

use super::{CyrusTime, IndexHeader, IndexRecord, NS};
use crate::cyrus::{Be, ParseError};

// Layout tables. One row per stored field: (offset, field, on-disk type).
// Everything in [0, header_len - 4) not covered by a row is spare and must be 0.

#[derive(Clone, Copy, Debug)]
pub(super) enum Ty {
    U32,
    U64,
    /// u32 seconds
    T32,
    /// u64 nanoseconds
    T64,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum H {
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
pub(super) use Ty::*;

pub(super) type HRow = (usize, H, Ty);

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
pub(super) fn sizes(version: u32) -> Option<(usize, usize)> {
    match version {
        12 => Some((128, 96)),
        13 => Some((128, 104)),
        14 | 15 => Some((160, 104)),
        16..=19 => Some((160, 112)),
        20 => Some((192, 144)),
        _ => None,
    }
}

pub(super) fn header_rows(version: u32) -> Vec<HRow> {
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

pub(super) fn ty_len(ty: Ty) -> usize {
    match ty {
        U32 | T32 => 4,
        U64 | T64 => 8,
    }
}

/// Read one value; times come back as nanoseconds.
pub(super) fn read_val(be: &Be<'_>, off: usize, ty: Ty) -> Result<u64, ParseError> {
    Ok(match ty {
        U32 => u64::from(be.u32(off)?),
        U64 | T64 => be.u64(off)?,
        T32 => CyrusTime::from_secs(u64::from(be.u32(off)?)).0,
    })
}

/// Encode one value (times given as nanoseconds). Narrowing to 32 bits keeps
/// the low bits, as Cyrus's `htonl` of a wider value does.
pub(super) fn put_val(buf: &mut [u8], off: usize, ty: Ty, v: u64) {
    match ty {
        U32 => buf[off..off + 4].copy_from_slice(&(v as u32).to_be_bytes()),
        T32 => buf[off..off + 4].copy_from_slice(&((v / NS) as u32).to_be_bytes()),
        U64 | T64 => buf[off..off + 8].copy_from_slice(&v.to_be_bytes()),
    }
}

impl IndexHeader {
    pub(super) fn get(&self, f: H) -> u64 {
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
    pub(super) fn set(&mut self, f: H, v: u64) {
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

// Records.

#[derive(Clone, Copy, Debug)]
pub(super) enum R {
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

pub(super) type RRow = (usize, R, Ty);

/// The first 88 bytes shared by v12-19 (`COMMON_RECORD_FIELDS` and the GUID
/// and modseq after it, `index_file.c`), with the slot at 52 given as `$slot52`,
/// then the version's tail.
macro_rules! rec_v12_19 {
    ($slot52:expr; $($tail:expr),* $(,)?) => {
        &[
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
            $slot52,
            (56, R::CacheVersionWord, U32),
            // 60..80 is the GUID, handled apart (see GUID_AT)
            (80, R::Modseq, U64),
            $($tail),*
        ]
    };
}

/// v12: legacy content_lines at 52, cache_crc at 88, record_crc at 92.
const REC_V12: &[RRow] = rec_v12_19!((52, R::ContentLines, U32); (88, R::CacheCrc, U32));
/// v13, v14: cid inserted before cache_crc.
const REC_V13: &[RRow] =
    rec_v12_19!((52, R::ContentLines, U32); (88, R::Cid, U64), (96, R::CacheCrc, U32));
/// v15: savedate takes over the content_lines slot.
const REC_V15: &[RRow] =
    rec_v12_19!((52, R::Savedate, T32); (88, R::Cid, U64), (96, R::CacheCrc, U32));
/// v16 to v19: createdmodseq pushes the CRCs down.
const REC_V16: &[RRow] = rec_v12_19!(
    (52, R::Savedate, T32);
    (88, R::Cid, U64),
    (96, R::Createdmodseq, U64),
    (104, R::CacheCrc, U32),
);
/// v20: sizes and times widened to 64 bits, everything 8-aligned.
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
pub(super) const GUID_AT: usize = 60;

/// The record table of a supported version (callers check `sizes` first).
pub(super) fn record_rows(version: u32) -> &'static [RRow] {
    match version {
        12 => REC_V12,
        13 | 14 => REC_V13,
        15 => REC_V15,
        20 => REC_V20,
        _ => REC_V16,
    }
}

impl IndexRecord {
    pub(super) fn get(&self, f: R) -> u64 {
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

    pub(super) fn set(&mut self, f: R, v: u64) {
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
