//! Reading an archive: members one by one with their file offsets, one entry by
//! inflating only its member, and a whole-archive scan that survives damage.
//!
//! A damaged member is reported as a typed error naming its offset; the scan then
//! looks for the next gzip magic after that offset and goes on, so damage costs only
//! the entries of the damaged member. Readers take no lock: the archive is append-only,
//! so at worst a reader sees a member that a writer is still appending, reported as a
//! truncated tail.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::error::{ArchiveError, Damage};
use super::error::{ArchiveFailure, Result};
use super::gzip::{self, Ended, Fail, Input};
use super::tarfmt::TarParser;
use super::{EntryLoc, MemberInfo};
use crate::io_error::IoContext;

/// Iterates the gzip members of an archive, yielding each with its offsets and entries.
///
/// After an error the iterator ends, unless [`Members::resync`] is called (readers that
/// can seek) to continue at the next plausible member start.
pub struct Members<R> {
    input: Option<Input<R>>,
    path: PathBuf,
    /// Offset of the member that failed last, for `resync`.
    failed_at: Option<u64>,
}

impl<R: Read> Members<R> {
    /// Members of the archive read from `reader`, which is at file offset 0.
    pub fn new(reader: R) -> Self {
        Self::at(reader, 0, Path::new("archive"))
    }

    /// Members read from `reader`, positioned at file offset `offset`; `path` names the
    /// archive in errors.
    pub fn at(reader: R, offset: u64, path: &Path) -> Self {
        Members {
            input: Some(Input::new(reader, offset)),
            path: path.to_path_buf(),
            failed_at: None,
        }
    }

    /// The file offset where the next member would start.
    pub fn next_offset(&self) -> Option<u64> {
        self.input.as_ref().map(|i| i.pos)
    }

    fn damaged(&self, offset: u64, damage: Damage) -> ArchiveFailure {
        ArchiveFailure::archive(&self.path, ArchiveError::Damaged { offset, damage })
    }
}

impl<R: Read> Iterator for Members<R> {
    type Item = Result<MemberInfo>;

    fn next(&mut self) -> Option<Self::Item> {
        let input = self.input.as_mut()?;
        let start = input.pos;
        match input.ensure(1) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return Some(Err(ArchiveFailure::io("reading", &self.path, e))),
        }
        let mut parser = TarParser::new();
        let result = gzip::read_member(input, &mut |chunk| parser.feed(chunk).map(|()| true));
        let outcome = match result {
            Ok(Ended::Complete { len, crc32 }) => {
                parser.finish().map(|entries| (len, crc32, entries))
            }
            Ok(Ended::Stopped) => Err(Damage::Truncated),
            Err(Fail::Damage(d)) => Err(d),
            Err(Fail::Io(e)) => {
                self.input = None;
                return Some(Err(ArchiveFailure::io("reading", &self.path, e)));
            }
        };
        match outcome {
            Ok((uncompressed_len, crc32, entries)) => Some(Ok(MemberInfo {
                offset: start,
                compressed_len: input.pos - start,
                uncompressed_len,
                crc32,
                entries,
            })),
            Err(damage) => {
                self.input = None;
                self.failed_at = Some(start);
                Some(Err(self.damaged(start, damage)))
            }
        }
    }
}

impl<R: Read + Seek> Members<R> {
    /// After a damaged member, move to the next offset past its start that looks like a
    /// member header; returns that offset, or `None` at end of file.
    pub fn resync(&mut self, mut reader: R) -> Result<Option<u64>> {
        let from = match (self.failed_at, self.next_offset()) {
            (Some(failed), _) => failed + 1,
            (None, Some(pos)) => pos,
            (None, None) => 0,
        };
        reader
            .seek(SeekFrom::Start(from))
            .at("seeking in", &self.path)?;
        let mut input = Input::new(reader, from);
        let found = gzip::seek_magic(&mut input).at("reading", &self.path)?;
        let at = input.pos;
        // Re-create the input at the candidate so `next` starts cleanly there.
        let mut reader = input.into_inner();
        reader
            .seek(SeekFrom::Start(at))
            .at("seeking in", &self.path)?;
        self.input = Some(Input::new(reader, at));
        self.failed_at = None;
        Ok(found.then_some(at))
    }
}

/// One damaged region found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanDamage {
    /// Offset of the damaged member (where its magic is, or where one was expected).
    pub offset: u64,
    /// Bytes from `offset` to the next good member (or the end of the file).
    pub len: u64,
    /// What was wrong with the first member of the region.
    pub error: ArchiveError,
}

/// The result of scanning an archive end to end.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Every complete, intact member, in file order.
    pub members: Vec<MemberInfo>,
    /// Damaged regions; their entries are unreadable, everything else is fine.
    pub damage: Vec<ScanDamage>,
    /// A truncated member at the very end (a crash leftover a writer will cut):
    /// `(offset, len)`.
    pub truncated_tail: Option<(u64, u64)>,
    /// The file length.
    pub len: u64,
}

impl Scan {
    /// Message entries whose bytes do not hash to their name (spool damage stored as
    /// is, or a bug): `(member offset, entry)`.
    pub fn misnamed(&self) -> Vec<(u64, &EntryLoc)> {
        self.members
            .iter()
            .flat_map(|m| m.entries.iter().map(move |e| (m.offset, e)))
            .filter(|(_, e)| {
                matches!(super::parse_entry_name(&e.name), super::EntryName::Message(g) if g != e.sha1)
            })
            .collect()
    }
}

/// Scan the whole archive: inflate every member, check CRC-32 and ISIZE, parse the tar
/// entries and hash them; resynchronise after damage.
pub fn scan(path: &Path) -> Result<Scan> {
    scan_from(path, 0)
}

/// [`scan`] starting at `offset`, which must be a member boundary.
pub fn scan_from(path: &Path, offset: u64) -> Result<Scan> {
    scan_part(path, offset, u64::MAX).map(|p| p.scan)
}

/// [`scan`] on two threads: the archive is cut near its middle at a member start, and
/// each half is inflated, checked and hashed on its own core (what `verify` spends
/// its time on). The cut is where our writer's member header (`gzip::HEADER`) is found
/// after the middle; it is taken only if the first half's last member ends exactly
/// there with no damage open across it, else (a header's bytes inside compressed data,
/// damage at the cut, a member larger than the search) the archive is scanned again
/// in one pass: the answer is always that of [`scan`].
pub fn scan_parallel(path: &Path) -> Result<Scan> {
    let len = std::fs::metadata(path)
        .at("reading metadata of", path)?
        .len();
    // Below two members' worth a second thread is not worth starting.
    if len < PARALLEL_MIN {
        return scan(path);
    }
    let Some(cut) = find_member_header(path, len / 2)? else {
        return scan(path);
    };
    let (first, second) = std::thread::scope(|s| {
        let second = s.spawn(|| scan_part(path, cut, u64::MAX));
        let first = scan_part(path, 0, cut);
        (first, second.join())
    });
    let second = second.map_err(|_| {
        ArchiveFailure::other(format!(
            "{}: the thread scanning the archive's second half panicked",
            path.display()
        ))
    })??;
    let first = first?;
    if first.stopped_at.is_none() {
        // The cut was no member start: the first part went on to the end.
        return Ok(first.scan);
    }
    if first.stopped_at != Some(cut) || first.open_damage {
        return scan(path);
    }
    let mut out = first.scan;
    out.members.extend(second.scan.members);
    out.damage.extend(second.scan.damage);
    out.truncated_tail = second.scan.truncated_tail;
    out.len = second.scan.len;
    Ok(out)
}

/// Archives smaller than this are scanned on one thread.
const PARALLEL_MIN: u64 = 4 << 20;

/// How far past `from` [`find_member_header`] looks (members are ~1-2 MB compressed
/// at the default target; a bigger one just means one thread).
const HEADER_SEARCH: u64 = 8 << 20;

/// The offset of the first `gzip::HEADER` (the exact header our writer puts on every
/// member) at or after `from`, within [`HEADER_SEARCH`] bytes. A candidate only:
/// the same bytes may occur inside compressed data.
fn find_member_header(path: &Path, from: u64) -> Result<Option<u64>> {
    let mut f = File::open(path).at("opening", path)?;
    f.seek(SeekFrom::Start(from)).at("seeking in", path)?;
    let mut buf = Vec::new();
    f.take(HEADER_SEARCH)
        .read_to_end(&mut buf)
        .at("reading", path)?;
    Ok(buf
        .windows(gzip::HEADER.len())
        .position(|w| w == gzip::HEADER)
        .map(|p| from + p as u64))
}

/// One part of a scan: the members that start in `[from, to)`.
struct Part {
    scan: Scan,
    /// `Some(offset)` when the part stopped because the next member would start at
    /// `offset >= to` (not at the end of the file).
    stopped_at: Option<u64>,
    /// A damaged region was still open where the part stopped.
    open_damage: bool,
}

/// Scan the members that start in `[from, to)`; `from` must be a member boundary. At
/// the end of the file, an open damaged region is a truncated tail or damage as in
/// [`scan`]; at `to`, the part stops and says so.
fn scan_part(path: &Path, from: u64, to: u64) -> Result<Part> {
    let mut file = File::open(path).at("opening", path)?;
    let len = file.metadata().at("reading metadata of", path)?.len();
    file.seek(SeekFrom::Start(from)).at("seeking in", path)?;
    let mut out = Scan {
        len,
        ..Scan::default()
    };
    let mut members = Members::at(file.try_clone().at("opening", path)?, from, path);
    // The open damaged region: where it started and its first error.
    let mut region: Option<(u64, ArchiveError)> = None;
    let mut stopped_at = None;
    loop {
        if let Some(at) = members.next_offset().filter(|&at| at >= to && at < len) {
            stopped_at = Some(at);
            break;
        }
        match members.next() {
            None => break,
            Some(Ok(m)) => {
                if let Some((start, error)) = region.take() {
                    out.damage.push(ScanDamage {
                        offset: start,
                        len: m.offset - start,
                        error,
                    });
                }
                out.members.push(m);
            }
            Some(Err(e)) => {
                let Some(archive_error) = e.as_archive().cloned() else {
                    return Err(e);
                };
                if region.is_none() {
                    let at = archive_error.offset().unwrap_or(0);
                    region = Some((at, archive_error));
                }
                if members
                    .resync(file.try_clone().at("opening", path)?)?
                    .is_none()
                {
                    break;
                }
            }
        }
    }
    if stopped_at.is_some() {
        return Ok(Part {
            scan: out,
            stopped_at,
            open_damage: region.is_some(),
        });
    }
    if let Some((start, error)) = region {
        if is_crash_leftover(&mut file, path, start, len)? {
            out.truncated_tail = Some((start, len - start));
        } else {
            out.damage.push(ScanDamage {
                offset: start,
                len: len - start,
                error,
            });
        }
    }
    Ok(Part {
        scan: out,
        stopped_at: None,
        open_damage: false,
    })
}

/// Whether the bytes `[at, len)` are what a crash while appending one member leaves:
/// a valid prefix of a member (it inflates cleanly until the bytes run out), possibly
/// followed by zero bytes (blocks the filesystem allocated but never wrote), and no
/// intact member after it.
pub fn is_crash_leftover(file: &mut File, path: &Path, at: u64, len: u64) -> Result<bool> {
    let tail_len = usize::try_from(len - at).unwrap_or(usize::MAX);
    // A leftover is at most one member; members are bounded by the target size unless
    // an entry is huge, so read the tail in memory only when it is reasonable.
    if tail_len > 1 << 30 {
        return Ok(false);
    }
    let mut tail = vec![0u8; tail_len];
    file.seek(SeekFrom::Start(at)).at("seeking in", path)?;
    std::io::Read::read_exact(file, &mut tail).at("reading", path)?;
    let truncated_prefix = |bytes: &[u8]| {
        let mut members = Members::at(bytes, at, path);
        // A complete member here would have been accepted by the caller's scan.
        matches!(
            members
                .next()
                .map(|r| r.map_err(|e| e.as_archive().cloned())),
            Some(Err(Some(ArchiveError::Damaged {
                damage: Damage::Truncated,
                ..
            })))
        )
    };
    // Zero runs shorter than a block are ordinary bytes (a trailer's ISIZE often ends
    // in zeros); a longer run at the end is what a crash leaves where the filesystem
    // allocated blocks that were never written.
    let nonzero = tail.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    let is_prefix = if nonzero == 0 {
        return Ok(true);
    } else if truncated_prefix(&tail) {
        true
    } else {
        tail.len() - nonzero >= 512 && truncated_prefix(&tail[..nonzero])
    };
    if !is_prefix {
        return Ok(false);
    }
    // No intact member may follow (that would make this damage, not a leftover).
    let mut later = Members::at(std::io::Cursor::new(&tail[..]), 0, path);
    let _ = later.next();
    while later.resync(std::io::Cursor::new(&tail[..]))?.is_some() {
        if let Some(Ok(_)) = later.next() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Inflate the member at `member_offset` and return its `size` bytes at uncompressed
/// offset `offset_in_member`, stopping as soon as they are read (the member's CRC is not
/// checked then; check the entry's SHA-1 instead, it is in the catalog).
pub fn read_entry_at<R: Read + Seek>(
    reader: &mut R,
    path: &Path,
    member_offset: u64,
    offset_in_member: u64,
    size: u64,
) -> Result<Vec<u8>> {
    reader
        .seek(SeekFrom::Start(member_offset))
        .at("seeking in", path)?;
    let out_of_range = || {
        ArchiveFailure::archive(
            path,
            ArchiveError::OutOfRange {
                member_offset,
                offset_in_member,
                size,
            },
        )
    };
    let end = offset_in_member
        .checked_add(size)
        .ok_or_else(out_of_range)?;
    // Do not trust `size` for the allocation: grow as bytes arrive.
    let mut out = Vec::with_capacity(usize::try_from(size.min(64 << 20)).unwrap_or(0));
    let mut input = Input::new(reader, member_offset);
    let mut pos: u64 = 0;
    let result = gzip::read_member(&mut input, &mut |chunk| {
        let chunk_end = pos + chunk.len() as u64;
        if chunk_end > offset_in_member {
            let from = offset_in_member.saturating_sub(pos);
            let to = end.min(chunk_end) - pos;
            // from <= to <= chunk.len() by construction.
            out.extend_from_slice(&chunk[from as usize..to as usize]);
        }
        pos = chunk_end;
        Ok(pos < end)
    });
    match result {
        Ok(Ended::Stopped) => Ok(out),
        Ok(Ended::Complete { .. }) if out.len() as u64 == size => Ok(out),
        Ok(Ended::Complete { .. }) => Err(out_of_range()),
        Err(Fail::Io(e)) => Err(ArchiveFailure::io("reading", path, e)),
        Err(Fail::Damage(damage)) => Err(ArchiveFailure::archive(
            path,
            ArchiveError::Damaged {
                offset: member_offset,
                damage,
            },
        )),
    }
}

/// Read and check the one member at `member_offset` (CRC, ISIZE, tar structure).
pub fn read_member_at<R: Read + Seek>(
    reader: &mut R,
    path: &Path,
    member_offset: u64,
) -> Result<MemberInfo> {
    reader
        .seek(SeekFrom::Start(member_offset))
        .at("seeking in", path)?;
    match Members::at(reader, member_offset, path).next() {
        Some(r) => r,
        None => Err(ArchiveFailure::archive(
            path,
            ArchiveError::Damaged {
                offset: member_offset,
                damage: Damage::Truncated,
            },
        )),
    }
}

/// Find an entry by name in a member's list (for callers holding a [`MemberInfo`]).
pub fn find_entry<'a>(member: &'a MemberInfo, name: &str) -> Option<&'a EntryLoc> {
    member.entries.iter().find(|e| e.name == name)
}
