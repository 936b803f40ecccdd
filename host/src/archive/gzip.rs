//! Gzip member framing (RFC 1952): the header we write, a header parser that accepts
//! what stock gzip writes, and inflating exactly one member from a byte stream while
//! keeping track of where it ends in the file.
//!
//! `flate2`'s `MultiGzDecoder` hides member boundaries; the catalog needs them, so the
//! framing is done here and only raw deflate is left to zlib-rs.

use std::io::{self, Read};

use zlib_rs::{Inflate, InflateFlush, Status};

use super::error::Damage;

/// The first three bytes of every member: ID1, ID2, CM=deflate.
pub(crate) const MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];

/// Header flags (RFC 1952 section 2.3.1).
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
const RESERVED: u8 = 0xe0;

/// A gzip header longer than this (a huge FNAME/FCOMMENT/FEXTRA) is refused.
const MAX_HEADER: usize = 1 << 20;

/// The 10-byte header we write: no name, no mtime (the tar headers carry mtimes),
/// OS = 3 (Unix).
pub(crate) const HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3];

/// The 8-byte trailer: CRC-32 and ISIZE (length mod 2^32), little-endian.
pub(crate) fn trailer(crc: u32, len: u64) -> [u8; 8] {
    let mut t = [0u8; 8];
    t[..4].copy_from_slice(&crc.to_le_bytes());
    // ISIZE is defined as the length modulo 2^32.
    t[4..].copy_from_slice(&((len & 0xffff_ffff) as u32).to_le_bytes());
    t
}

/// Parse a gzip header at the start of `buf`: `Ok(Some(len))` when complete,
/// `Ok(None)` when `buf` is a valid but incomplete prefix, `Err` when malformed.
pub(crate) fn parse_header(buf: &[u8]) -> Result<Option<usize>, Damage> {
    for (i, m) in MAGIC.iter().enumerate() {
        match buf.get(i) {
            None => return Ok(None),
            Some(b) if b != m => return Err(Damage::BadMagic),
            Some(_) => {}
        }
    }
    let Some(&flags) = buf.get(3) else {
        return Ok(None);
    };
    if flags & RESERVED != 0 {
        return Err(Damage::BadHeader("reserved flag bits set"));
    }
    let mut pos = 10usize;
    if buf.len() < pos {
        return Ok(None);
    }
    if flags & FEXTRA != 0 {
        let Some(x) = buf.get(pos..pos + 2) else {
            return Ok(None);
        };
        let xlen = usize::from(u16::from_le_bytes([x[0], x[1]]));
        pos += 2 + xlen;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let Some(rest) = buf.get(pos..) else {
                return Ok(None);
            };
            match rest.iter().position(|&b| b == 0) {
                Some(n) => pos += n + 1,
                None if pos + rest.len() > MAX_HEADER => {
                    return Err(Damage::BadHeader("name or comment too long"));
                }
                None => return Ok(None),
            }
        }
    }
    if flags & FHCRC != 0 {
        pos += 2;
    }
    if pos > MAX_HEADER {
        return Err(Damage::BadHeader("header too long"));
    }
    Ok(if buf.len() >= pos { Some(pos) } else { None })
}

/// A buffered reader that knows the file offset of its next unread byte.
pub(crate) struct Input<R> {
    r: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// File offset of `buf[start]`.
    pub pos: u64,
    eof: bool,
}

impl<R: Read> Input<R> {
    /// Wrap `r`, whose next byte is at file offset `pos`.
    pub fn new(r: R, pos: u64) -> Self {
        Input {
            r,
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            pos,
            eof: false,
        }
    }

    /// The unread bytes in the buffer.
    pub fn avail(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Mark `n` buffered bytes as read.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.end - self.start);
        self.start += n;
        self.pos += n as u64;
    }

    /// Read more bytes into the buffer; returns how many were added (0 at end of file).
    pub fn fill(&mut self) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                let new_len = self.buf.len() * 2;
                self.buf.resize(new_len, 0);
            }
        }
        loop {
            match self.r.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(0);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Make at least `n` bytes available unless the file ends first; true if they are.
    pub fn ensure(&mut self, n: usize) -> io::Result<bool> {
        while self.end - self.start < n {
            if self.fill()? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Give back the inner reader (its position is past the buffered bytes).
    pub fn into_inner(self) -> R {
        self.r
    }
}

/// Why reading a member stopped.
#[derive(Debug)]
pub(crate) enum Fail {
    Io(io::Error),
    Damage(Damage),
}

impl From<Damage> for Fail {
    fn from(d: Damage) -> Self {
        Fail::Damage(d)
    }
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Io(e)
    }
}

/// How a member read ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Trailer read and checked: the uncompressed length and its CRC-32.
    Complete { len: u64, crc32: u32 },
    /// The sink asked to stop early (the trailer was not checked).
    Stopped,
}

/// Read one gzip member starting at the input's position: parse the header, inflate,
/// hand every uncompressed chunk to `sink` (which returns false to stop early), then
/// check CRC-32 and ISIZE. On success the input is positioned just past the trailer.
pub(crate) fn read_member<R: Read>(
    input: &mut Input<R>,
    sink: &mut dyn FnMut(&[u8]) -> Result<bool, Damage>,
) -> Result<Ended, Fail> {
    // Header.
    loop {
        match parse_header(input.avail())? {
            Some(n) => {
                input.consume(n);
                break;
            }
            None => {
                if input.fill()? == 0 {
                    return Err(Damage::Truncated.into());
                }
            }
        }
    }
    // Raw deflate body.
    let mut inflate = Inflate::new(false, 15);
    let mut out = vec![0u8; 64 * 1024];
    let mut crc = crc32fast::Hasher::new();
    let mut total: u64 = 0;
    loop {
        if input.avail().is_empty() && input.fill()? == 0 {
            return Err(Damage::Truncated.into());
        }
        let (in0, out0) = (inflate.total_in(), inflate.total_out());
        let status = inflate
            .decompress(input.avail(), &mut out, InflateFlush::NoFlush)
            .map_err(|e| Damage::Deflate(e.as_str()))?;
        let used = usize::try_from(inflate.total_in() - in0).unwrap_or(usize::MAX);
        let made = usize::try_from(inflate.total_out() - out0).unwrap_or(usize::MAX);
        input.consume(used);
        if made > 0 {
            let chunk = out.get(..made).ok_or(Damage::Deflate("output overrun"))?;
            crc.update(chunk);
            total = total.saturating_add(made as u64);
            if !sink(chunk)? {
                return Ok(Ended::Stopped);
            }
        }
        if status == Status::StreamEnd {
            break;
        }
        if used == 0 && made == 0 && input.fill()? == 0 {
            // No progress and no more input: the member is cut short.
            return Err(Damage::Truncated.into());
        }
    }
    // Trailer.
    if !input.ensure(8)? {
        return Err(Damage::Truncated.into());
    }
    let t = input.avail();
    let stored_crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
    let stored_size = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
    input.consume(8);
    let computed = crc.finalize();
    if stored_crc != computed {
        return Err(Damage::BadCrc {
            stored: stored_crc,
            computed,
        }
        .into());
    }
    let isize = (total & 0xffff_ffff) as u32;
    if stored_size != isize {
        return Err(Damage::BadSize {
            stored: stored_size,
            computed: isize,
        }
        .into());
    }
    Ok(Ended::Complete {
        len: total,
        crc32: computed,
    })
}

/// Skip forward to the next byte sequence that looks like a member header (magic and
/// no reserved flags). Returns false at end of file.
pub(crate) fn seek_magic<R: Read>(input: &mut Input<R>) -> io::Result<bool> {
    loop {
        if !input.ensure(4)? {
            let n = input.avail().len();
            input.consume(n);
            return Ok(false);
        }
        let a = input.avail();
        if a[..3] == MAGIC && a[3] & RESERVED == 0 {
            return Ok(true);
        }
        // Jump to the next 0x1f after the first byte.
        let skip = a[1..]
            .iter()
            .position(|&b| b == MAGIC[0])
            .map_or(a.len(), |p| p + 1);
        input.consume(skip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    #[test]
    fn header_parsing() {
        assert_eq!(parse_header(&HEADER), Ok(Some(10)));
        assert_eq!(parse_header(&HEADER[..5]), Ok(None));
        assert_eq!(parse_header(&[]), Ok(None));
        assert_eq!(parse_header(&[0x1f, 0x8c]), Err(Damage::BadMagic));
        // FNAME "ab\0" then FCOMMENT "c\0" then FHCRC.
        let h = [0x1f, 0x8b, 8, FNAME | FCOMMENT | FHCRC, 0, 0, 0, 0, 0, 3,
                 b'a', b'b', 0, b'c', 0, 0xaa, 0xbb];
        assert_eq!(parse_header(&h), Ok(Some(17)));
        assert_eq!(parse_header(&h[..12]), Ok(None));
        // FEXTRA of 2 bytes.
        let h = [0x1f, 0x8b, 8, FEXTRA, 0, 0, 0, 0, 0, 3, 2, 0, 9, 9];
        assert_eq!(parse_header(&h), Ok(Some(14)));
        let h = [0x1f, 0x8b, 8, 0x20, 0, 0, 0, 0, 0, 3];
        assert!(matches!(parse_header(&h), Err(Damage::BadHeader(_))));
    }

    #[test]
    fn trailer_is_mod_2_32() {
        let t = trailer(1, (1u64 << 32) + 5);
        assert_eq!(t, [1, 0, 0, 0, 5, 0, 0, 0]);
    }
}
