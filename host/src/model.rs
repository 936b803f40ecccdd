//! The plain data of a backup run, shared by the backup pipeline, the catalog and
//! `reindex`: the run manifest (`runs/<run>.json` in the archive), the per-folder
//! state (`folders/<uniqueid>/<run>/state.json`) and the per-message record state.
//!
//! This module owns the *meaning* of a folder snapshot: [`records_from_meta`] turns a
//! folder's `cyrus.header` + `cyrus.index` bytes into [`FolderState`] and
//! [`RecordState`]s. The backup pipeline calls it on the bytes it just pulled, and
//! `reindex` calls it on the same bytes read back from the archive, so the two catalogs
//! agree by construction. It does no I/O and no SQL (that is `catalog/`), and it knows
//! nothing about the archive's byte layout (that is `archive/`).
//!
//! Everything here is serde (de)serialisable; see `doc/catalog.md` for the JSON.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

pub mod retention;

use crate::cyrus::header::parse_header;
use crate::cyrus::index::{FLAG_INTERNAL_EXPUNGED, parse_records};
use crate::cyrus::{Guid, ParseError, crc32};
// This layer fails only as a Cyrus file that does not parse, named by its file: the
// service's `Error::Parse`, below every host layer, is its error type.
use cyrvault::error::{Error, Result};

/// Version of the run manifest JSON ([`RunManifest::format`]). Readers refuse higher.
/// History: 1 — first version; 2 — [`FolderInRun::deleted_at`] (a folder in Cyrus's
/// delayed-delete area, which a version-1 reader would take for a live folder).
pub const MANIFEST_FORMAT: u32 = 2;

/// The system flag bits kept in [`RecordState::system_flags`]: the 16 IMAP flag bits
/// (`\Answered` .. `\Seen` live in the low 5) and `FLAG_INTERNAL_EXPUNGED`. The other
/// internal bits (ARCHIVED, SNOOZED, NEEDS_CLEANUP, SPLITCONVERSATION) describe where
/// Cyrus keeps a message, not what the user sees, so a change there is not a new
/// record version. UNLINKED records are not kept at all.
pub const KEPT_FLAG_BITS: u32 = 0xFFFF | FLAG_INTERNAL_EXPUNGED;

/// Where one archive entry's bytes are: inflate the gzip member starting at
/// `member_offset`, skip `offset_in_member` uncompressed bytes, read `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntryLoc {
    /// File offset of the gzip member holding the entry.
    pub member_offset: u64,
    /// Uncompressed offset of the entry's data inside that member.
    pub offset_in_member: u64,
    /// Length of the entry's data.
    pub size: u64,
}

/// `(size, mtime, inode)` of a folder's `cyrus.index` when it was read: a cheap extra
/// "has anything changed" signal beside the header fields. Not derivable from the
/// bytes, so [`records_from_meta`] leaves it `None` and the pipeline fills it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FileStat {
    /// Bytes.
    pub size: u64,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// Inode number (a repack writes a new file).
    pub inode: u64,
}

impl From<crate::spool::FileStat> for FileStat {
    fn from(s: crate::spool::FileStat) -> FileStat {
        FileStat {
            size: s.size,
            mtime: s.mtime,
            inode: s.inode,
        }
    }
}

/// What decides cheaply whether a folder changed since the last run: the index header
/// fields Cyrus bumps on every change. Stored per folder per run in the catalog and as
/// `state.json` in the archive.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FolderState {
    /// IMAP UIDVALIDITY.
    pub uidvalidity: u32,
    /// Bumped by every change to a record or the folder (CONDSTORE).
    pub highestmodseq: u64,
    /// Highest UID ever assigned.
    pub last_uid: u32,
    /// Non-expunged messages (the IMAP EXISTS count).
    pub exists: u32,
    /// Records in the index, expunged ones included.
    pub num_records: u32,
    /// Bumped by every repack.
    pub generation_no: u32,
    /// `cyrus.index` minor version the state was read from.
    pub minor_version: u32,
    /// Cyrus's `synccrcs.basic` over all records.
    pub sync_crc_basic: u32,
    /// CRC-32 of `cyrus.header` (ACL, flag names, name), as stored in the index header.
    pub header_file_crc: u32,
    /// `stat()` of `cyrus.index` at read time, if the reader had it.
    #[serde(default)]
    pub index_file_stat: Option<FileStat>,
}

impl FolderState {
    /// Whether two states describe the same folder content. The file stat is compared
    /// only when both sides have one (a reindexed state has what the pipeline stored).
    pub fn same_content(&self, other: &FolderState) -> bool {
        let stat_eq = match (self.index_file_stat, other.index_file_stat) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        stat_eq
            && FolderState {
                index_file_stat: None,
                ..self.clone()
            } == FolderState {
                index_file_stat: None,
                ..other.clone()
            }
    }
}

/// One message as one folder sees it at one run: the user-visible part of a
/// `cyrus.index` record. Times are whole seconds since the epoch (index v20's
/// sub-second part is dropped: IMAP cannot carry it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordState {
    /// IMAP UID in the folder.
    pub uid: u32,
    /// SHA-1 of the message file; the key of `messages/<g0g1>/<guid>` in the archive.
    #[serde(with = "guid_hex")]
    pub guid: Guid,
    /// Cyrus system flag bits masked with [`KEPT_FLAG_BITS`].
    pub system_flags: u32,
    /// User flags (IMAP keywords) by name, sorted, without duplicates.
    pub keywords: Vec<String>,
    /// IMAP INTERNALDATE.
    pub internaldate: i64,
    /// Message size in bytes.
    pub size: u64,
    /// The record's modseq.
    pub modseq: u64,
    /// When Cyrus last changed the record.
    pub last_updated: i64,
    /// 0 where the index version has no savedate (below 15) or Cyrus kept none.
    pub savedate: i64,
}

impl RecordState {
    /// Whether the record carries Cyrus's EXPUNGED bit (invisible to IMAP, file kept).
    pub fn is_expunged(&self) -> bool {
        self.system_flags & FLAG_INTERNAL_EXPUNGED != 0
    }
}

/// One folder in a run manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderInRun {
    /// Cyrus mailbox UniqueID (kept across renames).
    pub uniqueid: String,
    /// External name relative to the user: `INBOX`, `Sent`, `Lists/cyrus`.
    pub name: String,
    /// Cyrus's internal name at this run, e.g. `user.bob.Lists.cyrus`.
    pub internal_name: String,
    /// The folder disappeared from the server in this run.
    pub deleted: bool,
    /// The folder's state at this run (what the catalog stores for it).
    pub state: FolderState,
    /// The run whose stored meta (`folders/<uniqueid>/<snapshot_run>/...`) describes
    /// the folder: this run if it changed, an earlier one if it did not.
    pub snapshot_run: u64,
    /// The folder sits in Cyrus's delayed-delete area (`DELETED.user.<u>.*.<hex>`,
    /// `delete_mode: delayed`): the user deleted it at this time (Unix seconds, the
    /// hex stamp of its name), Cyrus still holds it, and this run captured it. `name`
    /// is then the name it had before, `internal_name` the `DELETED.*` one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
}

/// Which run's user-level files (seen, subscriptions, sieve, quota) describe the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStateRef {
    /// The run whose `user/<run>/...` entries hold the files.
    pub snapshot_run: u64,
    /// The files, by kind and name.
    pub files: Vec<UserFile>,
}

/// One user-level file kept in the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserFile {
    /// Which kind of file.
    pub kind: UserFileKind,
    /// File name (a sieve script's name; `seen` / `sub` otherwise).
    pub name: String,
    /// For a sieve script: whether it is the active one.
    #[serde(default)]
    pub active: bool,
}

/// Kinds of user-level files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserFileKind {
    /// The user's seen state (`user/<run>/seen`).
    Seen,
    /// Subscriptions (`user/<run>/subscriptions`).
    Subs,
    /// A sieve script (`user/<run>/sieve/<name>`).
    Sieve,
    /// The user's quota roots and limits (`user/<run>/quota`, the service's `quota`
    /// file: `cyrus::quota`). Added with the QUOTA extension; older runs have none.
    Quota,
}

impl UserFileKind {
    /// The name used in the catalog and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            UserFileKind::Seen => "seen",
            UserFileKind::Subs => "subs",
            UserFileKind::Sieve => "sieve",
            UserFileKind::Quota => "quota",
        }
    }

    /// Inverse of [`UserFileKind::as_str`].
    pub fn from_name(s: &str) -> Option<UserFileKind> {
        match s {
            "seen" => Some(UserFileKind::Seen),
            "subs" => Some(UserFileKind::Subs),
            "sieve" => Some(UserFileKind::Sieve),
            "quota" => Some(UserFileKind::Quota),
            _ => None,
        }
    }
}

/// The manifest written as the last entry of a run (`runs/<run>.json`): with it, the
/// archive alone says what the mailbox looked like at that run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// Run number (1, 2, ...; `runs/000001.json`).
    pub run: u64,
    /// The user's name at this run (follows a rename on the server).
    pub user: String,
    /// Unix seconds.
    pub started: i64,
    /// Unix seconds.
    pub finished: i64,
    /// The server pulled from (`host:port`).
    pub server: String,
    /// cyrvault version that made the run.
    pub tool_version: String,
    /// Every folder live at this run, plus those found gone in it (`deleted`).
    pub folders: Vec<FolderInRun>,
    /// The user-level files, if the run took them.
    pub user_state: Option<UserStateRef>,
    /// File offsets of the gzip members written in this run.
    pub members: Vec<u64>,
}

/// Decode a manifest, refusing formats newer than [`MANIFEST_FORMAT`].
pub fn parse_manifest(bytes: &[u8]) -> std::result::Result<RunManifest, ParseError> {
    let m: RunManifest = serde_json::from_slice(bytes).map_err(|e| {
        ParseError::invalid("run manifest", e.column() as u64, format!("bad JSON: {e}"))
    })?;
    if m.format > MANIFEST_FORMAT || m.format == 0 {
        return Err(ParseError::new(
            "run manifest",
            0,
            crate::cyrus::ParseErrorKind::UnsupportedVersion {
                found: u64::from(m.format),
                supported: "1-2",
            },
        ));
    }
    Ok(m)
}

/// The folder state and record states described by one folder's `cyrus.header` and
/// `cyrus.index` bytes. Records are in index order (ascending UID). UNLINKED records
/// are skipped (their files are gone); EXPUNGED records whose files remain are kept
/// with the bit set. A header whose CRC differs from the index's `header_file_crc`
/// is logged and used anyway, as Cyrus does.
pub fn records_from_meta(
    header_bytes: &[u8],
    index_bytes: &[u8],
) -> Result<(FolderState, Vec<RecordState>)> {
    let header = parse_header(header_bytes).map_err(|e| Error::parse("cyrus.header", e))?;
    // Record by record: a big folder's records are never all parsed at once.
    let index = parse_records(index_bytes).map_err(|e| Error::parse("cyrus.index", e))?;
    let h = index.header.clone();
    let h = &h;
    let crc = crc32(header_bytes);
    // Cyrus (imap/mailbox.c, mailbox_lock_index) only logs "Header CRC mismatch" and
    // goes on using both files, so a mismatch is Cyrus's own state, not a torn read
    // (we read the pair under the index lock). Do as Cyrus does: warn and go on.
    // 0 means "not recorded".
    if h.header_file_crc != 0 && h.header_file_crc != crc {
        log::warn!(
            target: "cyrvault::model",
            "cyrus.header crc {crc:08x} differs from cyrus.index header_file_crc {:08x} \
             (mailbox {}): using both as Cyrus does",
            h.header_file_crc,
            header.uniqueid.as_deref().unwrap_or("?")
        );
    }
    let state = FolderState {
        uidvalidity: h.uidvalidity,
        highestmodseq: h.highestmodseq,
        last_uid: h.last_uid,
        exists: h.exists,
        num_records: h.num_records,
        generation_no: h.generation_no,
        minor_version: h.minor_version,
        sync_crc_basic: h.sync_crc_basic,
        header_file_crc: h.header_file_crc,
        index_file_stat: None,
    };
    let mut records = Vec::with_capacity(h.num_records as usize);
    for r in index {
        let r = r.map_err(|e| Error::parse("cyrus.index", e))?;
        if r.is_unlinked() {
            continue;
        }
        let mut keywords: Vec<String> = r
            .user_flag_bits()
            // A set bit with no name in cyrus.header has no IMAP meaning: Cyrus itself
            // drops it when it reports flags, so do we.
            .filter_map(|bit| header.user_flags.get(bit).cloned().flatten())
            .collect();
        keywords.sort();
        keywords.dedup();
        records.push(RecordState {
            uid: r.uid,
            guid: r.guid,
            system_flags: r.system_flags & KEPT_FLAG_BITS,
            keywords,
            internaldate: secs(r.internaldate.secs()),
            size: r.size,
            modseq: r.modseq,
            last_updated: secs(r.last_updated.secs()),
            savedate: secs(r.savedate.secs()),
        });
    }
    Ok((state, records))
}

/// Unix seconds as i64 (SQLite's integer); a u64 past i64::MAX is not a real time.
fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

/// Serde for [`Guid`] as 40 hex digits (the crate's `Guid` serialises that way; this
/// adds the way back without touching `cyrus/`).
pub(crate) mod guid_hex {
    use crate::cyrus::Guid;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(g: &Guid, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&g.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Guid, D::Error> {
        let s = String::deserialize(d)?;
        Guid::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("bad guid {s:?}: need 40 hex digits")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_manifest() -> RunManifest {
        RunManifest {
            format: MANIFEST_FORMAT,
            run: 3,
            user: "bob".into(),
            started: 1_700_000_000,
            finished: 1_700_000_060,
            server: "imap1:2005".into(),
            tool_version: "0.1.0".into(),
            folders: vec![FolderInRun {
                uniqueid: "u-1".into(),
                name: "INBOX".into(),
                internal_name: "user.bob".into(),
                deleted: false,
                state: FolderState {
                    uidvalidity: 7,
                    highestmodseq: 9,
                    index_file_stat: Some(FileStat {
                        size: 1,
                        mtime: 2,
                        inode: 3,
                    }),
                    ..Default::default()
                },
                snapshot_run: 2,
                deleted_at: None,
            }],
            user_state: Some(UserStateRef {
                snapshot_run: 3,
                files: vec![UserFile {
                    kind: UserFileKind::Sieve,
                    name: "main".into(),
                    active: true,
                }],
            }),
            members: vec![0, 4096],
        }
    }

    #[test]
    fn manifest_json_round_trip() {
        let m = sample_manifest();
        let json = serde_json::to_vec(&m).unwrap();
        assert_eq!(parse_manifest(&json).unwrap(), m);
    }

    #[test]
    fn newer_manifest_is_refused_by_version() {
        let mut m = sample_manifest();
        m.format = MANIFEST_FORMAT + 1;
        let e = parse_manifest(&serde_json::to_vec(&m).unwrap()).unwrap_err();
        assert!(e.to_string().contains("unsupported version 3"), "{e}");
        // version 1 (no `deleted_at`) is still read
        let mut m = sample_manifest();
        m.format = 1;
        assert_eq!(parse_manifest(&serde_json::to_vec(&m).unwrap()).unwrap(), m);
    }

    #[test]
    fn record_guid_is_hex_in_json_and_bad_hex_is_refused() {
        let r = RecordState {
            uid: 1,
            guid: Guid::of(b"x"),
            system_flags: 0,
            keywords: vec![],
            internaldate: 0,
            size: 1,
            modseq: 1,
            last_updated: 0,
            savedate: 0,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["guid"].as_str(), Some(Guid::of(b"x").to_hex().as_str()));
        let back: RecordState = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, r);
        let mut bad = v;
        bad["guid"] = "zz".into();
        assert!(serde_json::from_value::<RecordState>(bad).is_err());
    }

    #[test]
    fn same_content_ignores_a_missing_stat() {
        let a = FolderState {
            highestmodseq: 5,
            index_file_stat: Some(FileStat::default()),
            ..Default::default()
        };
        let b = FolderState {
            index_file_stat: None,
            ..a.clone()
        };
        assert!(a.same_content(&b));
        let c = FolderState {
            index_file_stat: Some(FileStat {
                size: 1,
                ..Default::default()
            }),
            ..a.clone()
        };
        assert!(!a.same_content(&c));
        let d = FolderState {
            highestmodseq: 6,
            ..a.clone()
        };
        assert!(!a.same_content(&d));
    }
}
