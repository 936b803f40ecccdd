//! Reading `cyrus.index` records without holding all of them: the records of
//! given UIDs from the locked file (`FDATA`), and a validation pass over a copy
//! (`FMETA`) that keeps nothing. Records are fixed-size and in UID order
//! (`imap/mailbox.c`), so a UID is found by binary search; every record used is
//! CRC-checked by `cyrus::index::parse_record`. See `doc/cyrus-files.md`, "One
//! mailbox".
#![forbid(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::copy::MetaCopy;
use crate::cyrus::ParseError;
use crate::cyrus::index::{self, IndexHeader, IndexRecord};

/// Enough bytes for the largest index header (v20: 192).
const INDEX_HEADER_MAX: usize = 256;

/// Index records read in one step: of a validation pass, or around the UIDs of
/// an `FDATA` (64 KiB or so).
const RECORD_WINDOW: usize = 512;

/// A failure reading the index under its lock.
pub(crate) enum ReadError {
    Io(io::Error),
    Parse(ParseError),
}

impl From<ParseError> for ReadError {
    fn from(e: ParseError) -> Self {
        ReadError::Parse(e)
    }
}

/// Exactly `buf.len()` bytes at `off`, or a truncation error.
fn read_exact(
    f: &File,
    buf: &mut [u8],
    off: u64,
    what: &str,
) -> std::result::Result<(), ReadError> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => {
                return Err(ParseError::truncated(what, off, buf.len() as u64, got as u64).into());
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(())
}

/// The index header and where its records are: `(header, start, record size)`,
/// after checking that `num_records` records fit in `size` bytes.
fn index_layout(
    head: &[u8],
    size: u64,
) -> std::result::Result<(IndexHeader, u64, u64), ParseError> {
    let h = index::parse_header(head)?;
    let (start, rsize) = (u64::from(h.start_offset), u64::from(h.record_size));
    let room = size.saturating_sub(start) / rsize;
    if u64::from(h.num_records) > room {
        let at = start + room * rsize;
        return Err(ParseError::truncated(
            format!("cyrus.index record {}", room + 1),
            at,
            rsize,
            size - at,
        ));
    }
    Ok((h, start, rsize))
}

/// The header and the records of `uids` that exist (in UID order), read from
/// the locked `cyrus.index`: a binary search by single-record reads to the first
/// wanted UID past the current window, then a window of [`RECORD_WINDOW`]
/// records from there, which usually holds the rest of a batch.
pub(crate) fn select_records(
    f: &File,
    size: u64,
    uids: &[u32],
) -> std::result::Result<(IndexHeader, Vec<IndexRecord>), ReadError> {
    let mut head = vec![0u8; INDEX_HEADER_MAX.min(size as usize)];
    read_exact(f, &mut head, 0, "cyrus.index header")?;
    let (h, start, rsize) = index_layout(&head, size)?;
    let n = u64::from(h.num_records);
    let mut wanted: Vec<u32> = uids.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let rs = rsize as usize; // a supported record size (<= 144)
    let read_rec = |i: u64, buf: &mut [u8]| -> std::result::Result<IndexRecord, ReadError> {
        let off = start + i * rsize;
        read_exact(f, &mut buf[..rs], off, "cyrus.index record")?;
        Ok(index::parse_record(&h, &buf[..rs], (i + 1) as u32, off)?)
    };
    let mut one = vec![0u8; rs];
    let mut window: Vec<IndexRecord> = Vec::new();
    // Records [win_lo, win_hi) are in `window`.
    let (mut win_lo, mut win_hi) = (0u64, 0u64);
    let mut found = Vec::new();
    for uid in wanted {
        let in_window = window.last().is_some_and(|r| uid <= r.uid);
        if !in_window {
            // First record at or after win_hi with a UID >= uid.
            let (mut lo, mut hi) = (win_hi, n);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if read_rec(mid, &mut one)?.uid < uid {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            if lo == n {
                break;
            }
            let count = (n - lo).min(RECORD_WINDOW as u64);
            let mut bytes = vec![0u8; count as usize * rs];
            read_exact(f, &mut bytes, start + lo * rsize, "cyrus.index records")?;
            window.clear();
            for (k, rec) in bytes.chunks_exact(rs).enumerate() {
                let i = lo + k as u64;
                let r = index::parse_record(&h, rec, (i + 1) as u32, start + i * rsize)?;
                if window.last().is_some_and(|p: &IndexRecord| r.uid <= p.uid) {
                    return Err(ParseError::invalid(
                        format!("cyrus.index record {}", i + 1),
                        start + i * rsize,
                        "uid out of order",
                    )
                    .into());
                }
                window.push(r);
            }
            (win_lo, win_hi) = (lo, lo + count);
        }
        let _ = win_lo;
        if let Ok(k) = window.binary_search_by_key(&uid, |r| r.uid) {
            found.push(window[k].clone());
        }
    }
    Ok((h, found))
}

/// Validate a copy of `cyrus.index` in windows, keeping nothing: the header,
/// `num_records` records that fit, every record CRC, UIDs strictly increasing
/// and not above `last_uid` (what [`index::parse_index`] checks).
pub(crate) fn check_index(copy: &MetaCopy) -> std::result::Result<IndexHeader, ParseError> {
    let io_err = |e: io::Error| ParseError::invalid("cyrus.index copy", 0, e.to_string());
    let mut head = vec![0u8; INDEX_HEADER_MAX];
    let got = copy.read_at(&mut head, 0).map_err(io_err)?;
    head.truncate(got);
    let (h, start, rsize) = index_layout(&head, copy.len())?;
    let rs = rsize as usize;
    let mut buf = vec![0u8; RECORD_WINDOW * rs];
    let mut prev_uid = 0u32;
    let mut i = 0u64;
    let n = u64::from(h.num_records);
    while i < n {
        let count = (n - i).min(RECORD_WINDOW as u64) as usize;
        let off = start + i * rsize;
        let bytes = &mut buf[..count * rs];
        let got = copy.read_at(bytes, off).map_err(io_err)?;
        if got != bytes.len() {
            return Err(ParseError::truncated(
                "cyrus.index records",
                off,
                bytes.len() as u64,
                got as u64,
            ));
        }
        for (k, rec) in bytes.chunks_exact(rs).enumerate() {
            let recno = i + k as u64 + 1;
            let at = off + (k * rs) as u64;
            let r = index::parse_record(&h, rec, recno as u32, at)?;
            if r.uid <= prev_uid || r.uid > h.last_uid {
                return Err(ParseError::invalid(
                    format!("cyrus.index record {recno}"),
                    at,
                    format!(
                        "uid {} out of order (previous uid {prev_uid}, last_uid {})",
                        r.uid, h.last_uid
                    ),
                ));
            }
            prev_uid = r.uid;
        }
        i += count as u64;
    }
    Ok(h)
}
