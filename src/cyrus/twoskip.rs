//! The twoskip database format (`lib/cyrusdb_twoskip.c`): header, records,
//! the ordered walk, and key lookups the way Cyrus does them.
//!
//! twoskip is the backend of `mailboxes.db`, `annotations.db`, per-mailbox
//! `cyrus.annotations`, the per-user `seen` db and more. This module reads such
//! a file through a [`Source`]: an in-memory copy (`&[u8]`), or, in `spool`, the
//! live file read with `pread` while the caller holds Cyrus's shared fcntl lock
//! (`lock.rs`). It never writes twoskip: restores go through `ctl_mboxlist -u` /
//! `cyr_dbtool`.
//!
//! Two ways in, both Cyrus's:
//!
//! * [`read_all`]: every committed record in key order, the walk Cyrus's
//!   `foreach` does (`advance_loc`/`read_skipdelete`): from the DUMMY record at
//!   offset 64, follow the level-0 links. Each record has two alternative level-0
//!   pointers; the valid one is the larger of those below the header's
//!   `current_size` (`_getloc`).
//! * [`Twoskip`] (`twoskip/cursor.rs`): a skiplist descent to the first key at or
//!   after a given one (`relocate`), then the level-0 walk from there — a lookup
//!   or a prefix range costs O(log n) record reads, not a pass over the file.
//!
//! Only bytes below `current_size` are ever read, so a file caught
//! mid-transaction (DIRTY flag set, uncommitted tail) still yields its last
//! committed state; in that state only level 0 is trusted (the upper levels are
//! rewritten in place by a transaction and are not protected by the two-slot
//! scheme), so a lookup walks level 0 from the DUMMY. Every record head and tail
//! CRC is checked. Corruption never panics or hangs: keys must strictly increase
//! and the number of steps is bounded, so a pointer cycle ends in a
//! [`ParseError`]. Layout: `doc/cyrus-files.md`, "twoskip".
#![forbid(unsafe_code)]

mod cursor;

pub use cursor::Twoskip;

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

/// The longest record head: 8 fixed bytes, two 64-bit lengths, 32 pointers,
/// two CRCs.
const MAX_HEAD: usize = 8 + 16 + 8 * (MAX_LEVEL as usize + 1) + 8;

/// One record: key and value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Key/value pairs in key order, as [`read_all`] returns them.
pub type Records = Vec<KeyValue>;

/// Random access to the bytes of a twoskip file.
///
/// `&[u8]` is one (a copy taken under the lock); `spool` reads the live file
/// with `pread` while it holds Cyrus's shared lock. The reader only asks for
/// bytes below the header's `current_size`.
pub trait Source {
    /// What reading can fail with besides a format error (I/O).
    type Error: From<ParseError>;
    /// The bytes `[off, off + len)`; fewer only where the file ends.
    fn read(&mut self, off: u64, len: usize) -> Result<&[u8], Self::Error>;
}

impl Source for &[u8] {
    type Error = ParseError;

    fn read(&mut self, off: u64, len: usize) -> Result<&[u8], ParseError> {
        let start = usize::try_from(off).unwrap_or(usize::MAX).min(self.len());
        let end = start.saturating_add(len).min(self.len());
        Ok(&self[start..end])
    }
}

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

/// One record as read from the file, CRCs checked, key and value copied out.
struct Record {
    /// Its offset.
    off: u64,
    kind: u8,
    level: u8,
    /// `level + 1` pointers (the rest are 0).
    ptrs: [u64; MAX_LEVEL as usize + 1],
    key: Vec<u8>,
    val: Vec<u8>,
}

impl Record {
    /// The level-0 successor (`_getloc(db, rec, 0)`): of the two alternative
    /// pointers, ignore one that is at or past `end`, else take the larger.
    fn next0(&self, end: u64) -> u64 {
        let (p0, p1) = (self.ptrs[0], self.ptrs[1]);
        if p0 >= end {
            p1
        } else if p1 >= end {
            p0
        } else {
            p0.max(p1)
        }
    }

    /// The successor on skiplist level `level` >= 1 (`nextloc[level + 1]`); a
    /// pointer into the uncommitted tail counts as "none".
    fn next_at(&self, level: u8, end: u64) -> u64 {
        let p = self.ptrs[usize::from(level) + 1];
        if p >= end { 0 } else { p }
    }
}

/// How much of a record [`read_record`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Head (CRC checked) and key: enough to steer a lookup, as Cyrus's
    /// `relocate` does; the value is left empty and the tail CRC unchecked.
    Key,
    /// Everything, both CRCs checked.
    Whole,
}

/// Read and check the record at `off`, which must lie in `[64, end)`.
fn read_record<S: Source>(src: &mut S, off: u64, end: u64, part: Part) -> Result<Record, S::Error> {
    let what = "twoskip record";
    let bad = |msg: String| ParseError::invalid(what, off, msg);
    if off < HEADER_SIZE as u64 || off >= end {
        return Err(bad(format!("pointer outside the committed area [64, {end})")).into());
    }
    // At most MAX_HEAD bytes of head, never past the committed end.
    let room = usize::try_from(end - off).unwrap_or(usize::MAX);
    let head_bytes = src.read(off, MAX_HEAD.min(room))?;
    let be = Be::new(head_bytes, what, off);
    let fixed = be.bytes(0, 8)?;
    let (kind, level) = (fixed[0], fixed[1]);
    if level > MAX_LEVEL {
        return Err(bad(format!("level {level} > {MAX_LEVEL}")).into());
    }
    let mut pos = 8;
    let mut keylen = u64::from(u16::from_be_bytes([fixed[2], fixed[3]]));
    if keylen == u64::from(u16::MAX) {
        keylen = be.u64(pos)?;
        pos += 8;
    }
    let mut vallen = u64::from(u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]));
    if vallen == u64::from(u32::MAX) {
        vallen = be.u64(pos)?;
        pos += 8;
    }
    let mut ptrs = [0u64; MAX_LEVEL as usize + 1];
    for p in ptrs.iter_mut().take(usize::from(level) + 1) {
        *p = be.u64(pos)?;
        pos += 8;
    }
    let stored_head = be.u32(pos)?;
    let stored_tail = be.u32(pos + 4)?;
    let computed = crc32(be.bytes(0, pos)?);
    if stored_head != computed {
        return Err(ParseError::new(
            "twoskip record head",
            off,
            ParseErrorKind::BadCrc {
                stored: stored_head,
                computed,
            },
        )
        .into());
    }
    // Key + value + padding to 8 bytes, all below `end`.
    let kv_off = off + (pos + 8) as u64;
    let kv = keylen
        .checked_add(vallen)
        .and_then(|n| n.checked_add(7))
        .map(|n| n & !7)
        .filter(|&n| kv_off.checked_add(n).is_some_and(|e| e <= end))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            ParseError::truncated(
                what,
                kv_off,
                keylen.saturating_add(vallen),
                end.saturating_sub(kv_off),
            )
        })?;
    // Both fit: keylen + vallen <= kv <= usize::MAX.
    let (k, v) = (keylen as usize, vallen as usize);
    if part == Part::Key {
        let key = src.read(kv_off, k)?;
        if key.len() != k {
            return Err(ParseError::truncated(what, kv_off, k as u64, key.len() as u64).into());
        }
        return Ok(Record {
            off,
            kind,
            level,
            ptrs,
            key: key.to_vec(),
            val: Vec::new(),
        });
    }
    let padded = src.read(kv_off, kv)?;
    if padded.len() != kv {
        return Err(ParseError::truncated(what, kv_off, kv as u64, padded.len() as u64).into());
    }
    let computed = crc32(padded);
    if stored_tail != computed {
        return Err(ParseError::new(
            "twoskip record tail",
            off,
            ParseErrorKind::BadCrc {
                stored: stored_tail,
                computed,
            },
        )
        .into());
    }
    Ok(Record {
        off,
        kind,
        level,
        ptrs,
        key: padded[..k].to_vec(),
        val: padded[k..k + v].to_vec(),
    })
}

/// All committed (key, value) pairs in key order: the ordered level-0 walk.
///
/// `buf` must start at offset 0 of the file and hold at least `current_size`
/// bytes; anything after `current_size` is ignored. The walk also checks that
/// it found exactly the header's `num_records` keys.
pub fn read_all(buf: &[u8]) -> Result<Records, ParseError> {
    let mut db = Twoskip::open(buf, buf.len() as u64)?;
    let num_records = db.header().num_records;
    let mut out: Records = Vec::new();
    db.walk_from(b"", |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        Ok(true)
    })?;
    if out.len() as u64 != num_records {
        return Err(ParseError::new(
            "twoskip header",
            32,
            ParseErrorKind::BadSize {
                field: "num_records",
                found: num_records,
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
mod tests;
