//! Byte layouts of Cyrus's on-disk files (Cyrus 3.6, and older/newer index versions).
//!
//! Everything here is pure: bytes in, typed values (or bytes) out. No I/O, no locks:
//! callers in `service`, `inspect` and the tests read files under `lock` guards and
//! hand the bytes here. Errors are [`ParseError`]s carrying what was being parsed and
//! the byte offset; the caller wraps them with the file path (`Error::parse`).
//!
//! Facts come from `../shared/cyrus-reference.md` and the Cyrus source it cites;
//! `doc/cyrus-files.md` lists them per file.
#![forbid(unsafe_code)]

pub mod annotations;
pub mod cache;
pub mod config;
pub mod dlist;
pub mod flat;
pub mod header;
pub mod index;
pub mod mboxlist;
pub mod paths;
pub mod quota;
pub mod twoskip;
pub mod version;

use std::fmt;

/// A message GUID: the SHA-1 of the message file, as Cyrus stores it in `cyrus.index`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(pub [u8; 20]);

impl Guid {
    /// The GUID of these bytes (SHA-1).
    pub fn of(bytes: &[u8]) -> Guid {
        use sha1::{Digest, Sha1};
        Guid(Sha1::digest(bytes).into())
    }

    /// 40 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse 40 hex digits.
    pub fn from_hex(s: &str) -> Option<Guid> {
        let mut out = [0u8; 20];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Guid(out))
    }

    /// Parse exactly 40 lower-case hex digits (the one spelling `to_hex` writes), with
    /// no allocation: for names read by the hundred thousand (`verify`, `reindex`).
    pub fn from_lower_hex(s: &str) -> Option<Guid> {
        let b = s.as_bytes();
        if b.len() != 40 {
            return None;
        }
        // 0xff: not a lower-case hex digit.
        const DIGIT: [u8; 256] = {
            let mut t = [0xffu8; 256];
            let mut i = 0;
            while i < 10 {
                t[b'0' as usize + i] = i as u8;
                i += 1;
            }
            let mut i = 0;
            while i < 6 {
                t[b'a' as usize + i] = 10 + i as u8;
                i += 1;
            }
            t
        };
        let mut out = [0u8; 20];
        let mut bad = 0u8;
        for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
            let (hi, lo) = (DIGIT[usize::from(pair[0])], DIGIT[usize::from(pair[1])]);
            bad |= hi | lo;
            *o = (hi << 4) | (lo & 0x0f);
        }
        // Any 0xff sets the high bits that no digit (0-15) has.
        (bad & 0xf0 == 0).then_some(Guid(out))
    }

    /// Cyrus uses all-zero for "no GUID known".
    pub fn is_null(&self) -> bool {
        self.0 == [0u8; 20]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({})", self.to_hex())
    }
}

impl serde::Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

/// CRC-32 (IEEE, zlib's), the checksum every Cyrus format uses.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// What went wrong while parsing a Cyrus file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// The input ended before a field: `need` bytes were needed at the offset, `have` remained.
    Truncated { need: u64, have: u64 },
    /// The magic bytes are not the expected ones.
    BadMagic,
    /// A version we do not read. `supported` names the versions we do.
    UnsupportedVersion { found: u64, supported: &'static str },
    /// A stored checksum does not match the computed one.
    BadCrc { stored: u32, computed: u32 },
    /// A size field disagrees with the version or the data.
    BadSize {
        field: &'static str,
        found: u64,
        expected: u64,
    },
    /// Anything else that is malformed; the text says what.
    Invalid(String),
}

/// A parse failure: what was being parsed, at which byte offset, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What was being parsed, e.g. "cyrus.index header" or "cyrus.index record 12".
    pub what: String,
    /// Byte offset in the input where the problem is.
    pub offset: u64,
    pub kind: ParseErrorKind,
}

impl ParseError {
    pub fn new(what: impl Into<String>, offset: u64, kind: ParseErrorKind) -> Self {
        ParseError {
            what: what.into(),
            offset,
            kind,
        }
    }

    pub fn truncated(what: impl Into<String>, offset: u64, need: u64, have: u64) -> Self {
        Self::new(what, offset, ParseErrorKind::Truncated { need, have })
    }

    pub fn invalid(what: impl Into<String>, offset: u64, msg: impl Into<String>) -> Self {
        Self::new(what, offset, ParseErrorKind::Invalid(msg.into()))
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}: ", self.what, self.offset)?;
        match &self.kind {
            ParseErrorKind::Truncated { need, have } => {
                write!(f, "truncated (needed {need} bytes, {have} left)")
            }
            ParseErrorKind::BadMagic => write!(f, "bad magic"),
            ParseErrorKind::UnsupportedVersion { found, supported } => {
                write!(f, "unsupported version {found} (supported: {supported})")
            }
            ParseErrorKind::BadCrc { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
                )
            }
            ParseErrorKind::BadSize {
                field,
                found,
                expected,
            } => {
                write!(f, "bad {field}: {found} (expected {expected})")
            }
            ParseErrorKind::Invalid(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for ParseError {}

/// Bounds-checked big-endian reads over a byte slice, for the parsers in this module.
pub(crate) struct Be<'a> {
    pub buf: &'a [u8],
    pub what: &'a str,
    /// Offset of `buf[0]` in the file, so errors report file offsets.
    pub base: u64,
}

impl<'a> Be<'a> {
    pub fn new(buf: &'a [u8], what: &'a str, base: u64) -> Self {
        Be { buf, what, base }
    }

    pub fn bytes(&self, off: usize, len: usize) -> Result<&'a [u8], ParseError> {
        let end = off.checked_add(len);
        match end {
            Some(end) if end <= self.buf.len() => Ok(&self.buf[off..end]),
            _ => Err(ParseError::truncated(
                self.what,
                self.base + off as u64,
                len as u64,
                self.buf.len().saturating_sub(off) as u64,
            )),
        }
    }

    pub fn u32(&self, off: usize) -> Result<u32, ParseError> {
        let b = self.bytes(off, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&self, off: usize) -> Result<u64, ParseError> {
        let b = self.bytes(off, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn guid_hex_round_trip() {
        let g = Guid::of(b"hello");
        assert_eq!(Guid::from_hex(&g.to_hex()), Some(g));
        assert_eq!(g.to_hex(), "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d");
    }

    #[test]
    fn be_reads_are_bounded() {
        let be = Be::new(&[0, 0, 0, 1, 2], "t", 100);
        assert_eq!(be.u32(0).unwrap(), 1);
        let e = be.u32(2).unwrap_err();
        assert_eq!(e.offset, 102);
        assert!(matches!(
            e.kind,
            ParseErrorKind::Truncated { need: 4, have: 3 }
        ));
    }
}
