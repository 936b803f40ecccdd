//! Writing a *new* archive from an old one (retention's compaction, `doc/retention.md`):
//! members still wholly needed are copied byte for byte (no inflate, no deflate), a
//! member that mixes kept and dropped entries is inflated and its kept entries are
//! re-packed into a fresh member, and the first member is rebuilt with the archive's
//! generation. What to keep is the caller's business; this file owns only the bytes.
//!
//! Erasure guarantee: a re-packed member is built from nothing but the kept entries'
//! header blocks and data, padded with zeros, compressed into a new buffer, so no byte
//! of a dropped entry survives in it (not in its padding, not in deflate's window: the
//! compressor never saw those bytes). The new archive is a new file; the old one's
//! blocks go back to the filesystem when it is unlinked.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::compress::{classify, gzip_member};
use super::error::{ArchiveError, Damage};
use super::error::{ArchiveFailure, Result};
use super::gzip::{self, Ended, Fail, Input};
use super::names::{FORMAT_ENTRY, GENERATION_ENTRY, check_name};
use super::tarfmt::{TarParser, entry_headers, padded};
use super::{EntryLoc, FORMAT_VERSION, MemberInfo, format_entry_for};
use crate::io_error::IoContext;

/// The raw bytes of the member at `offset`, `len` bytes long (as the catalog gives it).
pub fn read_raw(file: &mut File, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    let n = usize::try_from(len).map_err(|_| {
        ArchiveFailure::archive(
            path,
            ArchiveError::OutOfRange {
                member_offset: offset,
                offset_in_member: 0,
                size: len,
            },
        )
    })?;
    let mut buf = vec![0u8; n];
    file.seek(SeekFrom::Start(offset)).at("seeking in", path)?;
    file.read_exact(&mut buf).at("reading", path)?;
    Ok(buf)
}

/// Inflate one whole member held in memory (`raw` is exactly the member): its tar bytes
/// and its description, with CRC-32, ISIZE and the tar structure checked. `offset`
/// names it in errors and in the returned [`MemberInfo`].
pub fn inflate_member(raw: &[u8], path: &Path, offset: u64) -> Result<(Vec<u8>, MemberInfo)> {
    inflate_member_with(raw, path, offset, TarParser::new())
}

/// [`inflate_member`] without hashing the entries (their `sha1` is all zeros): what a
/// compaction needs to re-pack a member, a fifth cheaper.
pub fn inflate_member_unhashed(
    raw: &[u8],
    path: &Path,
    offset: u64,
) -> Result<(Vec<u8>, MemberInfo)> {
    inflate_member_with(raw, path, offset, TarParser::without_hashes())
}

fn inflate_member_with(
    raw: &[u8],
    path: &Path,
    offset: u64,
    mut parser: TarParser,
) -> Result<(Vec<u8>, MemberInfo)> {
    let damaged = |damage| ArchiveFailure::archive(path, ArchiveError::Damaged { offset, damage });
    let mut input = Input::new(raw, 0);
    let mut tar = Vec::with_capacity(raw.len().saturating_mul(2));
    let ended = gzip::read_member(&mut input, &mut |chunk| {
        tar.extend_from_slice(chunk);
        parser.feed(chunk).map(|()| true)
    });
    let (len, crc32) = match ended {
        Ok(Ended::Complete { len, crc32 }) => (len, crc32),
        Ok(Ended::Stopped) => return Err(damaged(Damage::Truncated)),
        Err(Fail::Damage(d)) => return Err(damaged(d)),
        Err(Fail::Io(e)) => return Err(ArchiveFailure::io("reading", path, e)),
    };
    if input.pos != raw.len() as u64 {
        return Err(damaged(Damage::BadHeader(
            "bytes after the member's trailer (the catalog's length is wrong)",
        )));
    }
    let entries = parser.finish().map_err(damaged)?;
    Ok((
        tar,
        MemberInfo {
            offset,
            compressed_len: raw.len() as u64,
            uncompressed_len: len,
            crc32,
            entries,
        },
    ))
}

/// Bytes of header block(s) the writer puts before an entry of `size` bytes named
/// `name` (512, or more with a pax header): with the entry's data offset it gives where
/// the entry starts in its member.
pub fn header_len(name: &str, size: u64) -> u64 {
    entry_headers(name, size, 0).len() as u64
}

/// Bytes an entry of `size` bytes takes in a member after its headers (data and
/// zero padding to the tar block).
pub fn padded_len(size: u64) -> Option<u64> {
    padded(size)
}

/// One tar entry as the writer makes it: headers, data, zero padding. The name is
/// checked like every name the writer takes.
pub fn tar_entry(
    name: &str,
    data: &[u8],
    mtime: u64,
) -> std::result::Result<Vec<u8>, ArchiveError> {
    check_name(name)?;
    let mut v = entry_headers(name, data.len() as u64, mtime);
    v.extend_from_slice(data);
    let to = padded(v.len() as u64).ok_or(ArchiveError::BadName {
        name: name.to_string(),
        why: "entry too large",
    })?;
    v.resize(usize::try_from(to).unwrap_or(usize::MAX), 0);
    Ok(v)
}

/// The kept entries of a member's tar bytes, re-packed: for each entry with
/// `keep[i]`, its header block(s) (the bytes between the previous entry's padded end
/// and its data, so pax headers and the original mtime come along) and its data,
/// zero-padded. Returns the new tar bytes and where each kept entry now is, in order.
pub fn repack_tar(
    tar: &[u8],
    entries: &[EntryLoc],
    keep: &[bool],
) -> std::result::Result<(Vec<u8>, Vec<EntryLoc>), Damage> {
    let bad = |what| Damage::BadTar {
        offset_in_member: 0,
        what,
    };
    let mut out = Vec::new();
    let mut locs = Vec::new();
    let mut prev_end: u64 = 0;
    for (e, &k) in entries.iter().zip(keep) {
        let data_end = e.offset_in_member.checked_add(e.size).ok_or(bad("size"))?;
        let padded_end = padded(data_end).ok_or(bad("size"))?;
        if e.offset_in_member < prev_end || padded_end > tar.len() as u64 {
            return Err(bad("entry outside its member"));
        }
        if k {
            let start = out.len() as u64;
            let hdr = &tar[prev_end as usize..e.offset_in_member as usize];
            out.extend_from_slice(hdr);
            out.extend_from_slice(&tar[e.offset_in_member as usize..data_end as usize]);
            let to = padded(out.len() as u64).ok_or(bad("size"))?;
            out.resize(to as usize, 0);
            locs.push(EntryLoc {
                name: e.name.clone(),
                offset_in_member: start + hdr.len() as u64,
                size: e.size,
                sha1: e.sha1,
            });
        }
        prev_end = padded_end;
    }
    Ok((out, locs))
}

/// Compress tar bytes into one gzip member at the level of their lane (text: deflate
/// 4, base64-heavy: Huffman-only, as the writer does). Returns the member and its CRC.
pub fn compress_member(tar: &[u8]) -> (Vec<u8>, u32) {
    gzip_member(tar, classify(tar).default_level())
}

/// The first member of a rewritten archive: `cyrvault/FORMAT`, then
/// `cyrvault/GENERATION` holding `generation` (one line, under 400 bytes). Stored, not
/// deflated: its length does not depend on the generation, so a later compaction that
/// keeps everything before some member keeps those members' offsets (and their
/// runs' manifests need not change).
pub fn format_member(generation: &str, mtime: u64) -> std::result::Result<Vec<u8>, ArchiveError> {
    let mut tar = tar_entry(FORMAT_ENTRY, &format_entry_for(FORMAT_VERSION), mtime)?;
    tar.extend(tar_entry(
        GENERATION_ENTRY,
        format!("{generation}\n").as_bytes(),
        mtime,
    )?);
    if generation.len() >= 400 {
        return Err(ArchiveError::BadName {
            name: GENERATION_ENTRY.to_string(),
            why: "generation line too long",
        });
    }
    Ok(gzip_member(&tar, super::Level::Store).0)
}

/// The archive's generation: the line in `cyrvault/GENERATION` of the first member, or
/// `None` for an archive never rewritten (its first member holds only the format).
pub fn read_generation(file: &mut File, path: &Path) -> Result<Option<String>> {
    let first = super::read::read_member_at(file, path, 0)?;
    let Some(e) = first.entries.iter().find(|e| e.name == GENERATION_ENTRY) else {
        return Ok(None);
    };
    let bytes = super::read::read_entry_at(file, path, 0, e.offset_in_member, e.size)?;
    Ok(Some(
        String::from_utf8_lossy(&bytes)
            .trim_end_matches('\n')
            .to_string(),
    ))
}

/// A new archive being written from scratch (compaction's output), holding an
/// exclusive `flock` on it from creation until it is dropped (so once it is renamed
/// over the old archive, a backup that opens the path finds it locked).
#[derive(Debug)]
pub struct NewArchive {
    file: File,
    path: PathBuf,
    len: u64,
}

impl NewArchive {
    /// Create (or truncate a stale) file at `path` and lock it. The caller holds the
    /// old archive's lock, so no other compaction writes there.
    pub fn create(path: &Path) -> Result<NewArchive> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .at("creating", path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(ArchiveFailure::archive(path, ArchiveError::Locked));
            }
            Err(TryLockError::Error(e)) => return Err(ArchiveFailure::io("locking", path, e)),
        }
        Ok(NewArchive {
            file,
            path: path.to_path_buf(),
            len: 0,
        })
    }

    /// Bytes written so far (the offset of the next member).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The new archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one whole member; returns its offset.
    pub fn append(&mut self, member: &[u8]) -> Result<u64> {
        let at = self.len;
        self.file.write_all(member).at("writing", &self.path)?;
        self.len += member.len() as u64;
        Ok(at)
    }

    /// Copy `len` bytes at `offset` of `src` (whole members of the old archive) to the
    /// end, in the kernel where it can (`copy_file_range`: no user-space copy, and a
    /// shared extent on filesystems that reflink). Returns the new offset.
    pub fn copy_from(&mut self, src: &File, src_path: &Path, offset: u64, len: u64) -> Result<u64> {
        let at = self.len;
        let mut s = src;
        s.seek(SeekFrom::Start(offset)).at("seeking in", src_path)?;
        let copied =
            std::io::copy(&mut s.take(len), &mut self.file).at("copying to", &self.path)?;
        if copied != len {
            return Err(ArchiveFailure::archive(
                src_path,
                ArchiveError::Damaged {
                    offset,
                    damage: Damage::Truncated,
                },
            ));
        }
        self.len += len;
        Ok(at)
    }

    /// Make the written bytes durable (`fsync`).
    pub fn sync(&mut self) -> Result<()> {
        Ok(self.file.sync_all().at("syncing", &self.path)?)
    }

    /// Move the new archive to `to` (atomically replacing it) and fsync the directory;
    /// the lock stays held on the file until this value is dropped.
    pub fn rename_to(&mut self, to: &Path) -> Result<()> {
        std::fs::rename(&self.path, to).at("renaming into place", to)?;
        self.path = to.to_path_buf();
        let dir = match to.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Ok(File::open(dir)
            .and_then(|d| d.sync_all())
            .at("syncing directory", dir)?)
    }

    /// The open file (to read back what was written).
    pub fn file(&self) -> &File {
        &self.file
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Level;

    #[test]
    fn repack_keeps_only_what_is_kept_and_reads_back() {
        let secret = b"TOP-SECRET-BODY".repeat(100);
        let mut tar = tar_entry("messages/aa/one", b"first", 7).unwrap();
        tar.extend(tar_entry("messages/bb/two", &secret, 8).unwrap());
        let long = format!("user/000001/sieve/{}/{}", "n".repeat(200), "m".repeat(200));
        tar.extend(tar_entry(&long, b"third", 9).unwrap());
        let (gz, _) = gzip_member(&tar, Level::Deflate(6));
        let (got, info) = inflate_member(&gz, Path::new("t"), 0).unwrap();
        assert_eq!(got, tar);
        assert_eq!(info.entries.len(), 3);
        let (new_tar, locs) = repack_tar(&got, &info.entries, &[true, false, true]).unwrap();
        assert!(
            !new_tar.windows(15).any(|w| w == b"TOP-SECRET-BODY"),
            "no byte of the dropped entry"
        );
        let (gz2, _) = compress_member(&new_tar);
        let (back, info2) = inflate_member(&gz2, Path::new("t"), 0).unwrap();
        assert_eq!(back, new_tar);
        let names: Vec<&str> = info2.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["messages/aa/one", long.as_str()]);
        assert_eq!(
            locs.iter().map(|l| l.offset_in_member).collect::<Vec<_>>(),
            info2
                .entries
                .iter()
                .map(|e| e.offset_in_member)
                .collect::<Vec<_>>()
        );
        let off = locs[1].offset_in_member as usize;
        assert_eq!(&back[off..off + 5], b"third");
        assert_eq!(header_len("messages/aa/one", 5), 512);
        assert_eq!(header_len(&long, 5), 3 * 512);
    }

    #[test]
    fn the_first_member_has_one_length_for_every_generation() {
        let a = format_member("1 0123456789abcdef", 5).unwrap();
        let b = format_member("12345 fedcba9876543210", 7).unwrap();
        assert_eq!(a.len(), b.len());
        let (_, info) = inflate_member(&a, Path::new("t"), 0).unwrap();
        let names: Vec<&str> = info.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, [FORMAT_ENTRY, GENERATION_ENTRY]);
    }

    #[test]
    fn a_member_with_trailing_bytes_is_refused() {
        let tar = tar_entry("a", b"x", 0).unwrap();
        let (mut gz, _) = gzip_member(&tar, Level::Deflate(6));
        gz.push(0);
        assert!(inflate_member(&gz, Path::new("t"), 0).is_err());
    }
}
