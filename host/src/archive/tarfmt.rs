//! Tar entries inside a member: the headers we write, and a streaming parser that
//! walks the tar bytes of one member as they are inflated and records where each
//! entry's data starts.
//!
//! We write POSIX ustar headers (mode 0600, uid/gid 0, the caller's mtime); a name that
//! does not fit ustar's name/prefix fields, or a size of 8 GiB or more, gets a pax
//! extended header (`x`) before it, which GNU tar, bsdtar and Python's tarfile read.
//! No end-of-archive zero blocks are ever written: members are appended for years and
//! GNU tar stops at the first zero block without `--ignore-zeros`.

use sha1::{Digest, Sha1};
use tar::{EntryType, Header};

use super::EntryLoc;
use super::error::Damage;
use crate::cyrus::Guid;

/// The tar block size.
pub(crate) const BLOCK: u64 = 512;
/// The largest size ustar's 11 octal digits hold (8 GiB - 1).
const USTAR_MAX_SIZE: u64 = 0o777_7777_7777;
/// A pax header's data larger than this is refused when parsing.
const MAX_PAX: u64 = 1 << 20;

/// Round `n` up to a whole number of tar blocks.
pub(crate) fn padded(n: u64) -> Option<u64> {
    n.checked_add(BLOCK - 1).map(|x| x / BLOCK * BLOCK)
}

/// One pax record: `"<len> <key>=<value>\n"`, where len counts the whole record.
fn pax_record(key: &str, value: &str) -> String {
    let body = key.len() + value.len() + 3; // space, '=', newline
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    format!("{len} {key}={value}\n")
}

fn ustar_header(name: &str, size: u64, mtime: u64, ty: EntryType) -> (Header, bool) {
    let mut h = Header::new_ustar();
    let fits = h.set_path(name).is_ok();
    if !fits {
        // Keep a readable, truncated name for tools that ignore pax.
        // The last 90 bytes (at a character boundary) fit the 100-byte field.
        let mut cut = name.len().saturating_sub(90);
        while !name.is_char_boundary(cut) {
            cut += 1;
        }
        let short = name[cut..].trim_start_matches('/');
        // If even that is refused the field stays empty: pax carries the real name.
        let _ = h.set_path(short);
    }
    h.set_size(size.min(USTAR_MAX_SIZE));
    h.set_mode(0o600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(ty);
    h.set_cksum();
    (h, fits)
}

/// The header block(s) for an entry of `size` bytes named `name`.
pub(crate) fn entry_headers(name: &str, size: u64, mtime: u64) -> Vec<u8> {
    let (h, fits) = ustar_header(name, size, mtime, EntryType::Regular);
    let mut out = Vec::with_capacity(512);
    if !fits || size > USTAR_MAX_SIZE {
        let mut pax = String::new();
        if !fits {
            pax.push_str(&pax_record("path", name));
        }
        if size > USTAR_MAX_SIZE {
            pax.push_str(&pax_record("size", &size.to_string()));
        }
        let (ph, _) = ustar_header(
            "PaxHeaders/entry",
            pax.len() as u64,
            mtime,
            EntryType::XHeader,
        );
        out.extend_from_slice(ph.as_bytes());
        out.extend_from_slice(pax.as_bytes());
        let pad = padded(pax.len() as u64).unwrap_or(0) as usize - pax.len();
        out.resize(out.len() + pad, 0);
    }
    out.extend_from_slice(h.as_bytes());
    out
}

/// How many of `avail` bytes to take when `left` remain (no truncating casts).
fn take(left: u64, avail: usize) -> usize {
    usize::try_from(left).map_or(avail, |l| l.min(avail))
}

enum State {
    /// Collecting a 512-byte header block.
    Header,
    /// Inside a regular entry's data: bytes left, then padding.
    Data { left: u64, pad: u64 },
    /// Inside a pax/GNU long-name header's data (collected), then padding.
    Meta {
        kind: EntryType,
        left: u64,
        pad: u64,
    },
    /// Skipping an entry we do not record (directories, links, global pax).
    Skip { left: u64 },
}

/// Walks the tar bytes of one member, chunk by chunk.
pub(crate) struct TarParser {
    state: State,
    /// Uncompressed bytes seen so far.
    pos: u64,
    block: Vec<u8>,
    meta: Vec<u8>,
    pax_path: Option<String>,
    pax_size: Option<u64>,
    current: Option<(String, u64, u64)>,
    hasher: Sha1,
    /// Whether to hash each entry's data (off: `EntryLoc::sha1` is all zeros).
    hash: bool,
    /// Entries recorded so far.
    pub entries: Vec<EntryLoc>,
}

impl TarParser {
    pub fn new() -> Self {
        TarParser {
            state: State::Header,
            pos: 0,
            block: Vec::with_capacity(512),
            meta: Vec::new(),
            pax_path: None,
            pax_size: None,
            current: None,
            hasher: Sha1::new(),
            hash: true,
            entries: Vec::new(),
        }
    }

    /// A parser that does not hash entries (a compaction re-packing a member needs
    /// only where entries are).
    pub fn without_hashes() -> Self {
        TarParser {
            hash: false,
            ..Self::new()
        }
    }

    fn bad(&self, what: &'static str) -> Damage {
        Damage::BadTar {
            offset_in_member: self.pos,
            what,
        }
    }

    /// Feed the next uncompressed bytes of the member.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), Damage> {
        while !chunk.is_empty() {
            let mut header_ready = false;
            let mut entry_done = false;
            let mut meta_done = None;
            let mut next = None;
            let used = match &mut self.state {
                State::Header => {
                    let n = (512 - self.block.len()).min(chunk.len());
                    self.block.extend_from_slice(&chunk[..n]);
                    header_ready = self.block.len() == 512;
                    n
                }
                State::Data { left, pad } => {
                    if *left > 0 {
                        let n = take(*left, chunk.len());
                        if self.hash {
                            self.hasher.update(&chunk[..n]);
                        }
                        *left -= n as u64;
                        entry_done = *left == 0;
                        if entry_done && *pad == 0 {
                            next = Some(State::Header);
                        }
                        n
                    } else {
                        let n = take(*pad, chunk.len());
                        *pad -= n as u64;
                        if *pad == 0 {
                            next = Some(State::Header);
                        }
                        n
                    }
                }
                State::Meta { kind, left, pad } => {
                    let n = if *left > 0 {
                        let n = take(*left, chunk.len());
                        self.meta.extend_from_slice(&chunk[..n]);
                        *left -= n as u64;
                        n
                    } else {
                        let n = take(*pad, chunk.len());
                        *pad -= n as u64;
                        n
                    };
                    if *left == 0 && *pad == 0 {
                        meta_done = Some(*kind);
                        next = Some(State::Header);
                    }
                    n
                }
                State::Skip { left } => {
                    let n = take(*left, chunk.len());
                    *left -= n as u64;
                    if *left == 0 {
                        next = Some(State::Header);
                    }
                    n
                }
            };
            self.pos += used as u64;
            chunk = &chunk[used..];
            if let Some(state) = next {
                self.state = state;
            }
            if entry_done {
                self.finish_entry();
            }
            if let Some(kind) = meta_done {
                self.meta_done(kind)?;
            }
            if header_ready {
                self.header()?;
            }
        }
        Ok(())
    }

    fn finish_entry(&mut self) {
        if let Some((name, offset, size)) = self.current.take() {
            let digest: [u8; 20] = std::mem::take(&mut self.hasher).finalize().into();
            self.entries.push(EntryLoc {
                name,
                offset_in_member: offset,
                size,
                sha1: Guid(digest),
            });
        }
    }

    fn header(&mut self) -> Result<(), Damage> {
        let mut h = Header::new_old();
        h.as_mut_bytes().copy_from_slice(&self.block);
        self.block.clear();
        if h.as_bytes().iter().all(|&b| b == 0) {
            return Err(self.bad("zero block (end-of-archive marker) inside a member"));
        }
        let stored = h
            .cksum()
            .map_err(|_| self.bad("unreadable header checksum"))?;
        let computed: u32 = h
            .as_bytes()
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        if stored != computed {
            return Err(self.bad("header checksum mismatch"));
        }
        let size = h
            .entry_size()
            .map_err(|_| self.bad("unreadable size field"))?;
        let ty = h.entry_type();
        if ty == EntryType::XHeader || ty == EntryType::GNULongName {
            if size > MAX_PAX {
                return Err(self.bad("extended header too large"));
            }
            self.meta.clear();
            let pad = padded(size).ok_or_else(|| self.bad("size overflow"))? - size;
            self.state = State::Meta {
                kind: ty,
                left: size,
                pad,
            };
            return Ok(());
        }
        let size = self.pax_size.take().unwrap_or(size);
        let name = match self.pax_path.take() {
            Some(p) => p,
            None => String::from_utf8(h.path_bytes().into_owned())
                .map_err(|_| self.bad("entry name is not UTF-8"))?,
        };
        let data_len = padded(size).ok_or_else(|| self.bad("size overflow"))?;
        if ty == EntryType::Regular || ty == EntryType::Continuous {
            self.current = Some((name, self.pos, size));
            self.hasher = Sha1::new();
            if size == 0 {
                self.finish_entry();
                self.state = State::Header;
            } else {
                self.state = State::Data {
                    left: size,
                    pad: data_len - size,
                };
            }
        } else if data_len > 0 && ty != EntryType::Directory && ty != EntryType::Symlink {
            self.state = State::Skip { left: data_len };
        } else {
            self.state = State::Header;
        }
        Ok(())
    }

    fn meta_done(&mut self, kind: EntryType) -> Result<(), Damage> {
        if kind == EntryType::GNULongName {
            let name = self.meta.split(|&b| b == 0).next().unwrap_or(&[]);
            let name = std::str::from_utf8(name).map_err(|_| self.bad("long name is not UTF-8"))?;
            self.pax_path = Some(name.to_string());
            return Ok(());
        }
        let mut rest = &self.meta[..];
        while !rest.is_empty() {
            let sp = rest
                .iter()
                .position(|&b| b == b' ')
                .ok_or_else(|| self.bad("pax record without length"))?;
            let len: usize = std::str::from_utf8(&rest[..sp])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| self.bad("pax record length is not a number"))?;
            let rec = rest
                .get(sp + 1..len)
                .ok_or_else(|| self.bad("pax record overruns"))?;
            let rec = rec
                .strip_suffix(b"\n")
                .ok_or_else(|| self.bad("pax record without newline"))?;
            let eq = rec
                .iter()
                .position(|&b| b == b'=')
                .ok_or_else(|| self.bad("pax record without '='"))?;
            let value = std::str::from_utf8(&rec[eq + 1..])
                .map_err(|_| self.bad("pax value is not UTF-8"))?;
            match &rec[..eq] {
                b"path" => self.pax_path = Some(value.to_string()),
                b"size" => {
                    self.pax_size = Some(
                        value
                            .parse()
                            .map_err(|_| self.bad("pax size is not a number"))?,
                    )
                }
                _ => {}
            }
            rest = &rest[len..];
        }
        Ok(())
    }

    /// The member ended: it must end between entries.
    pub fn finish(self) -> Result<Vec<EntryLoc>, Damage> {
        match self.state {
            State::Header if self.block.is_empty() => {
                if self.pax_path.is_some() || self.pax_size.is_some() {
                    return Err(self.bad("member ends after an extended header"));
                }
                Ok(self.entries)
            }
            _ => Err(self.bad("member ends inside a tar entry")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, data: &[u8]) -> Vec<u8> {
        let mut v = entry_headers(name, data.len() as u64, 1_700_000_000);
        v.extend_from_slice(data);
        v.resize(padded(v.len() as u64).unwrap() as usize, 0);
        v
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record("path", "abc"), "12 path=abc\n");
        let r = pax_record("path", &"x".repeat(95));
        assert_eq!(r.len().to_string(), r.split(' ').next().unwrap());
    }

    #[test]
    fn parse_what_we_write_in_any_chunking() {
        let long = format!("user/000001/sieve/{}", "n".repeat(300));
        let mut tar = entry("messages/ab/abc", b"hello");
        tar.extend(entry(&long, b"long named"));
        tar.extend(entry("empty", b""));
        for chunk in [1usize, 7, 511, 512, 513, 100_000] {
            let mut p = TarParser::new();
            for c in tar.chunks(chunk) {
                p.feed(c).unwrap();
            }
            let e = p.finish().unwrap();
            assert_eq!(e.len(), 3, "chunk {chunk}");
            assert_eq!(e[0].name, "messages/ab/abc");
            assert_eq!(e[0].offset_in_member, 512);
            assert_eq!(e[0].sha1, Guid::of(b"hello"));
            assert_eq!(e[1].name, long);
            assert_eq!(e[1].size, 10);
            let off = e[1].offset_in_member as usize;
            assert_eq!(&tar[off..off + 10], b"long named");
            assert_eq!(e[2].size, 0);
        }
    }

    #[test]
    fn huge_sizes_and_non_ascii_long_names_use_pax() {
        let name = format!("user/000001/sieve/{}", "é".repeat(150));
        let size = 9u64 << 30;
        let headers = entry_headers(&name, size, 0);
        assert_eq!(headers.len(), 3 * 512, "pax header, pax data, ustar header");
        let mut p = TarParser::new();
        p.feed(&headers).unwrap();
        let (got_name, offset, got_size) = p.current.clone().unwrap();
        assert_eq!((got_name, offset, got_size), (name, 3 * 512, size));
        assert!(matches!(p.state, State::Data { left, pad: 0 } if left == size));
    }

    #[test]
    fn damage_is_named() {
        let mut tar = entry("a", b"x");
        tar[0] ^= 1;
        let mut p = TarParser::new();
        assert!(matches!(
            p.feed(&tar),
            Err(Damage::BadTar {
                offset_in_member: 512,
                ..
            })
        ));
        let tar = entry("a", b"xyz");
        let mut p = TarParser::new();
        p.feed(&tar[..600]).unwrap();
        assert!(p.finish().is_err());
        let mut p = TarParser::new();
        assert!(p.feed(&[0u8; 512]).is_err());
    }
}
