//! The per-user archive: one append-only `.tar.gz` made of whole gzip members.
//!
//! This module owns the bytes of the archive and the durability order (member written,
//! file fsynced, directory fsynced for a new file, and only then does the caller commit
//! its catalog). It does not decide *what* is stored: the backup logic names entries
//! with the helpers below and hands their bytes to [`ArchiveWriter`].
//!
//! The format is written down for operators in `doc/archive-format.md`:
//! - every member is a complete gzip member (RFC 1952) holding whole tar entries, padded
//!   to 512-byte blocks, with no end-of-archive zero blocks, so the concatenation is one
//!   gzip stream and one tar stream (`tar -xzf ARCHIVE` works);
//! - the first member of an archive holds `cyrvault/FORMAT` ([`FORMAT_VERSION`]);
//! - an entry never spans two members, so one entry is read back by inflating one member
//!   ([`read_entry_at`]).
//!
//! Files: `names.rs` (entry naming), `gzip.rs` (member framing, inflate with member
//! boundaries), `tarfmt.rs` (tar headers and the streaming entry parser), `compress.rs`
//! (text/binary lanes and the deflate settings), `lock.rs` (the writer lock), `write.rs` (the writer: lock, tail
//! repair, second-thread compression, fsync order), `read.rs` (member iteration,
//! single-entry reads, scan with resync, the crash-leftover rule), `rewrite.rs` (a new
//! archive from an old one: members copied byte for byte or re-packed, for
//! retention), `error.rs`.
//!
//! Offsets are `u64` everywhere (archives pass 4 GiB); the gzip ISIZE field is the
//! only 32-bit quantity and is compared modulo 2^32.
#![forbid(unsafe_code)]

mod compress;
mod error;
mod gzip;
mod lock;
mod names;
mod read;
pub mod rewrite;
mod tarfmt;
mod write;

pub use compress::{Lane, Level, classify};
pub use error::{ArchiveError, ArchiveFailure, Damage, Result};
pub use lock::{LOCK_GRACE, lock_archive, lock_exclusive};
pub use names::{
    EntryName, FORMAT_ENTRY, GENERATION_ENTRY, MAX_COMPONENT, MAX_NAME, decode_component,
    encode_component, folder_entry, message_entry, message_entry_guid, parse_entry_name,
    retention_entry, run_id, run_manifest_entry, user_entry, user_file_entry, valid_run_id,
};
pub use read::{
    Members, Scan, ScanDamage, find_entry, is_crash_leftover, read_entry_at, read_member_at, scan,
    scan_from, scan_parallel,
};
pub use write::{ArchiveWriter, DEFAULT_MEMBER_TARGET, OpenReport, WriterOptions};

use crate::cyrus::Guid;

/// The highest archive format version this cyrvault reads (`cyrvault/FORMAT`). Readers
/// refuse archives whose first member names a higher version. Version 2 is an archive
/// retention rewrote (`doc/retention.md`): a generation, retention events, and runs
/// described by the entries of runs it removed, which a version-1 reader would
/// misread.
pub const FORMAT_VERSION: u32 = 2;

/// The version a new archive starts at: nothing in it needs a version-2 reader.
pub const NEW_ARCHIVE_FORMAT: u32 = 1;

/// The exact content of the `cyrvault/FORMAT` entry of a new archive.
pub fn format_entry_content() -> Vec<u8> {
    format_entry_for(NEW_ARCHIVE_FORMAT)
}

/// The content of a `cyrvault/FORMAT` entry for `version`.
pub fn format_entry_for(version: u32) -> Vec<u8> {
    format!("cyrvault archive format {version}\n").into_bytes()
}

/// Parse the content of a `cyrvault/FORMAT` entry into its version.
pub fn parse_format_entry(bytes: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(bytes).ok()?;
    let rest = text.strip_prefix("cyrvault archive format ")?;
    rest.trim_end_matches('\n').parse().ok()
}

/// Where one tar entry lives: inflate the member at [`MemberInfo::offset`], skip
/// `offset_in_member` uncompressed bytes, read `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EntryLoc {
    /// The entry's path inside the tar stream (see `names.rs`).
    pub name: String,
    /// Uncompressed offset of the entry's data (after its header blocks) in the member.
    pub offset_in_member: u64,
    /// Size of the entry's data in bytes.
    pub size: u64,
    /// SHA-1 of the entry's data (for a message entry, its GUID).
    pub sha1: Guid,
}

/// One complete gzip member of an archive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemberInfo {
    /// File offset of the member's first byte (the gzip magic).
    pub offset: u64,
    /// Length of the member in the file, gzip header and trailer included.
    pub compressed_len: u64,
    /// Uncompressed length (the tar bytes), a multiple of 512.
    pub uncompressed_len: u64,
    /// CRC-32 of the uncompressed bytes, as in the member's gzip trailer.
    pub crc32: u32,
    /// The entries in file order.
    pub entries: Vec<EntryLoc>,
}

impl MemberInfo {
    /// File offset just past this member (where the next one starts).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.compressed_len)
    }

    /// The catalog's location of one of this member's entries.
    pub fn locate(&self, entry: &EntryLoc) -> crate::model::EntryLoc {
        crate::model::EntryLoc {
            member_offset: self.offset,
            offset_in_member: entry.offset_in_member,
            size: entry.size,
        }
    }
}

/// Read the entry the catalog located (see [`read_entry_at`]).
pub fn read_located<R: std::io::Read + std::io::Seek>(
    reader: &mut R,
    path: &std::path::Path,
    loc: &crate::model::EntryLoc,
) -> Result<Vec<u8>> {
    read_entry_at(
        reader,
        path,
        loc.member_offset,
        loc.offset_in_member,
        loc.size,
    )
}
