//! `cyrus.cache`: the per-mailbox cache of parsed message data.
//!
//! Owns the cache file layout: a 4-byte generation number, then entries of
//! exactly ten length-prefixed, 4-byte-padded items, appended back to back and
//! found only through an index record's `cache_offset`. It does not own the
//! records that point into it (`index.rs`). The cache is derived data (Cyrus
//! rebuilds it from the message file), but its CRC ties it to the index record,
//! so a backup can check that the two belong together. Layout and sources:
//! `doc/cyrus-files.md` ("cyrus.cache"); Cyrus: `cache_parserecord` and
//! `mailbox_cacherecord_internal` in `imap/mailbox.c`.
#![forbid(unsafe_code)]

use super::index::IndexRecord;
use super::{Be, ParseError, ParseErrorKind, crc32};

/// Number of items in every entry (`NUM_CACHE_FIELDS`, `imap/mailbox.h`).
pub const NUM_CACHE_FIELDS: usize = 10;

/// The first entry of a file starts right after the generation number.
pub const FIRST_ENTRY_OFFSET: u64 = 4;

/// The generation number in the first 4 bytes (the index `generation_no` when
/// the file was created; Cyrus 3.6 writes it but never checks it).
pub fn parse_cache_generation(buf: &[u8]) -> Result<u32, ParseError> {
    Be::new(buf, "cyrus.cache generation", 0).u32(0)
}

/// One cache entry, borrowing its items from the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheEntry<'a> {
    /// File offset of the entry (the record's `cache_offset`).
    pub offset: u64,
    /// The ten items' data, without length prefix or padding.
    pub items: [&'a [u8]; NUM_CACHE_FIELDS],
    /// Bytes from `offset` to the end of the tenth item's padding: what
    /// `cache_crc` covers.
    pub len: u64,
}

impl<'a> CacheEntry<'a> {
    /// IMAP ENVELOPE text.
    pub fn envelope(&self) -> &'a [u8] {
        self.items[0]
    }
    /// IMAP BODYSTRUCTURE text.
    pub fn bodystructure(&self) -> &'a [u8] {
        self.items[1]
    }
    /// IMAP BODY text.
    pub fn body(&self) -> &'a [u8] {
        self.items[2]
    }
    /// Binary MIME section table.
    pub fn section(&self) -> &'a [u8] {
        self.items[3]
    }
    /// The cached raw header lines.
    pub fn headers(&self) -> &'a [u8] {
        self.items[4]
    }
    pub fn from(&self) -> &'a [u8] {
        self.items[5]
    }
    pub fn to(&self) -> &'a [u8] {
        self.items[6]
    }
    pub fn cc(&self) -> &'a [u8] {
        self.items[7]
    }
    pub fn bcc(&self) -> &'a [u8] {
        self.items[8]
    }
    /// Decoded subject as an IMAP nstring.
    pub fn subject(&self) -> &'a [u8] {
        self.items[9]
    }
}

/// Parse the entry at `offset`, checking every item's length (and padding)
/// against the end of `buf`.
pub fn parse_cache_entry(buf: &[u8], offset: u64) -> Result<CacheEntry<'_>, ParseError> {
    const WHAT: &str = "cyrus.cache entry";
    if offset < FIRST_ENTRY_OFFSET {
        return Err(ParseError::invalid(
            WHAT,
            offset,
            format!("entry offset {offset} lies inside the generation number"),
        ));
    }
    let be = Be::new(buf, WHAT, 0);
    let start = usize::try_from(offset).map_err(|_| {
        ParseError::truncated(WHAT, offset, 4, 0) // beyond any addressable buffer
    })?;
    let mut items: [&[u8]; NUM_CACHE_FIELDS] = [&[]; NUM_CACHE_FIELDS];
    let mut at = start;
    for item in &mut items {
        let len = be.u32(at)? as usize;
        // (len + 3) & !3 cannot overflow: len < 2^32 and usize is 64-bit here,
        // but stay checked for 32-bit targets.
        let padded = len
            .checked_add(3)
            .map(|n| n & !3)
            .ok_or_else(|| ParseError::truncated(WHAT, at as u64, u64::MAX, 0))?;
        let data_at = at + 4;
        let padded_bytes = be.bytes(data_at, padded)?;
        *item = &padded_bytes[..len];
        at = data_at + padded;
    }
    Ok(CacheEntry {
        offset,
        items,
        len: (at - start) as u64,
    })
}

/// Check that `rec`'s cache entry parses and that its CRC32 equals the
/// record's `cache_crc` (0 means the record carries no CRC: parse only).
pub fn check_record(cache_file: &[u8], rec: &IndexRecord) -> Result<(), ParseError> {
    let what = || format!("cyrus.cache entry for uid {}", rec.uid);
    if rec.cache_offset == 0 {
        return Err(ParseError::invalid(what(), 0, "record has no cache offset"));
    }
    let entry = parse_cache_entry(cache_file, rec.cache_offset)
        .map_err(|e| ParseError { what: what(), ..e })?;
    if rec.cache_crc == 0 {
        return Ok(());
    }
    // parse_cache_entry proved offset..offset+len is inside the buffer.
    let bytes = &cache_file[entry.offset as usize..(entry.offset + entry.len) as usize];
    let computed = crc32(bytes);
    if computed != rec.cache_crc {
        return Err(ParseError::new(
            what(),
            rec.cache_offset,
            ParseErrorKind::BadCrc {
                stored: rec.cache_crc,
                computed,
            },
        ));
    }
    Ok(())
}

/// Encode one entry from its ten items (lengths, data, zero padding), as
/// `message_write_xdrstring` in `imap/message.c` lays them out.
///
/// # Panics
/// If an item is 4 GiB or longer (its length would not fit the u32 prefix).
pub fn write_cache_entry(items: &[&[u8]; NUM_CACHE_FIELDS]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        let len = u32::try_from(item.len()).expect("cache item of 4 GiB or more");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(item);
        out.resize(out.len() + (4 - item.len() % 4) % 4, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(entry: &[u8]) -> Vec<u8> {
        let mut f = 7u32.to_be_bytes().to_vec();
        f.extend_from_slice(entry);
        f
    }

    #[test]
    fn entry_round_trips() {
        let items: [&[u8]; 10] = [
            b"env", b"bs", b"b", b"", b"hdrs", b"f", b"t", b"", b"", b"\"s\"",
        ];
        let e = write_cache_entry(&items);
        assert_eq!(e.len() % 4, 0);
        let f = file_with(&e);
        assert_eq!(parse_cache_generation(&f).unwrap(), 7);
        let p = parse_cache_entry(&f, 4).unwrap();
        assert_eq!(p.items, items);
        assert_eq!(p.len, e.len() as u64);
        assert_eq!(p.subject(), b"\"s\"");
        assert_eq!(p.envelope(), b"env");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let items: [&[u8]; 10] = [
            b"envelope",
            b"x",
            b"yy",
            b"zzz",
            b"",
            b"a",
            b"b",
            b"c",
            b"d",
            b"e",
        ];
        let f = file_with(&write_cache_entry(&items));
        for cut in 4..f.len() {
            let e = parse_cache_entry(&f[..cut], 4).unwrap_err();
            assert!(matches!(e.kind, ParseErrorKind::Truncated { .. }), "{cut}");
            assert!(e.offset >= 4 && e.offset <= cut as u64, "{cut}: {e}");
        }
    }

    #[test]
    fn huge_item_length_is_truncation_not_panic() {
        let mut f = file_with(&[]);
        f.extend_from_slice(&u32::MAX.to_be_bytes());
        let e = parse_cache_entry(&f, 4).unwrap_err();
        assert_eq!(e.offset, 8);
        assert!(matches!(e.kind, ParseErrorKind::Truncated { .. }));
        assert!(parse_cache_entry(&f, u64::MAX).is_err());
        assert!(parse_cache_entry(&f, 2).is_err());
    }

    #[test]
    fn crc_is_checked_unless_zero() {
        let items: [&[u8]; 10] = [b"a"; 10];
        let e = write_cache_entry(&items);
        let f = file_with(&e);
        let mut rec = IndexRecord {
            uid: 5,
            cache_offset: 4,
            cache_crc: crc32(&e),
            ..Default::default()
        };
        check_record(&f, &rec).unwrap();
        rec.cache_crc ^= 1;
        let err = check_record(&f, &rec).unwrap_err();
        assert_eq!(err.what, "cyrus.cache entry for uid 5");
        assert_eq!(err.offset, 4);
        rec.cache_crc = 0;
        check_record(&f, &rec).unwrap();
        rec.cache_offset = 0;
        assert!(check_record(&f, &rec).is_err());
    }
}
