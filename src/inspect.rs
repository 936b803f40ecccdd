//! What `cyrvault inspect` reads and prints: one Cyrus file (or a mailbox
//! directory) through our parsers, as a serialisable report.
//!
//! This is an admin's window into Cyrus's files and the oracle hook of the tests:
//! `inspect index --json` is compared with Cyrus's `mbexamine`, `inspect mailboxes
//! --json` with `ctl_mboxlist -d`. Reading takes the shared lock a Cyrus reader
//! takes on the file itself (the index lock, or the twoskip lock), so a live
//! mailbox is never read torn; nothing is ever written.
#![forbid(unsafe_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::cyrus::cache;
use crate::cyrus::header::{self, MailboxHeader};
use crate::cyrus::index::{self, IndexHeader, IndexRecord};
use crate::cyrus::mboxlist::{self, KindCounts, MailboxEntry};
use crate::cyrus::twoskip;
use crate::io_error::IoContext;
use crate::lock::{LockMode, lock_file};
use crate::{Error, Result};

/// How long inspect waits for Cyrus to release a file it is writing.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// `cyrus.index` (and the keyword names from the `cyrus.header` beside it).
#[derive(Debug, Serialize)]
pub struct IndexReport {
    pub path: PathBuf,
    pub header: IndexHeader,
    /// User flag names by slot, from `cyrus.header` when it is beside the index.
    pub user_flags: Vec<Option<String>>,
    pub records: Vec<RecordView>,
}

/// One index record with its flags spelled out.
#[derive(Debug, Serialize)]
pub struct RecordView {
    pub uid: u32,
    pub guid: String,
    pub internaldate: u64,
    pub size: u64,
    pub modseq: u64,
    pub last_updated: u64,
    pub savedate: u64,
    /// `\Answered \Flagged \Deleted \Draft \Seen`, those set.
    pub system_flags: Vec<&'static str>,
    /// Keyword names (or `#<slot>` for a slot without a name).
    pub keywords: Vec<String>,
    pub expunged: bool,
    pub unlinked: bool,
    pub archived: bool,
    /// The record as parsed, every field.
    pub record: IndexRecord,
}

/// `cyrus.header`.
#[derive(Debug, Serialize)]
pub struct HeaderReport {
    pub path: PathBuf,
    pub header: MailboxHeader,
}

/// `cyrus.cache`, walked through the index records that point into it.
#[derive(Debug, Serialize)]
pub struct CacheReport {
    pub path: PathBuf,
    pub generation: u32,
    pub entries: Vec<CacheView>,
}

/// One cache entry as a record sees it.
#[derive(Debug, Serialize)]
pub struct CacheView {
    pub uid: u32,
    pub offset: u64,
    pub len: u64,
    /// The record's cache CRC matches the entry (or it has none).
    pub crc_ok: bool,
    pub error: Option<String>,
    pub subject: String,
    pub from: String,
    pub envelope: String,
}

/// `mailboxes.db`.
#[derive(Debug, Serialize)]
pub struct MailboxesReport {
    pub path: PathBuf,
    pub generation: u64,
    pub users: Vec<String>,
    pub mailboxes: Vec<MailboxEntry>,
    /// Records by kind, the skipped ones included.
    pub records: KindCounts,
}

impl MailboxesReport {
    /// One line: records by kind, what was skipped, and what the kinds say
    /// about the Cyrus version that wrote the file.
    pub fn records_summary(&self) -> String {
        let k = &self.records;
        let mut s = format!(
            "{} N, {} I read; skipped {} reverse-ACL, {} user-group, {} JMAP-id",
            k.names, k.ids, k.reverse_acls, k.user_groups, k.jmap_ids
        );
        if k.unknown > 0 {
            s.push_str(&format!(
                ", {} of no kind Cyrus 3.6-3.13 writes (first {})",
                k.unknown,
                k.first_unknown.as_deref().unwrap_or("?")
            ));
        }
        match k.newest_marker() {
            Some((a, b)) => s.push_str(&format!("; written by Cyrus {a}.{b} or newer")),
            None => s.push_str("; layout of Cyrus 3.6 or newer"),
        }
        s
    }
}

/// A mailbox directory stands for the file of that name inside it.
fn resolve(path: &Path, file: &str) -> PathBuf {
    if path.is_dir() {
        path.join(file)
    } else {
        path.to_path_buf()
    }
}

/// Read a whole file under a shared lock on the file itself.
fn read_locked(path: &Path, reopen_if_replaced: bool) -> Result<Vec<u8>> {
    let lock = lock_file(path, LockMode::Shared, LOCK_TIMEOUT, reopen_if_replaced)?;
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut lock.file(), &mut buf).at("reading", path)?;
    Ok(buf)
}

/// Parse `cyrus.index` at `path` (a file, or a mailbox directory).
pub fn index(path: &Path) -> Result<IndexReport> {
    let index_path = resolve(path, "cyrus.index");
    // The index lock also covers cyrus.header (Cyrus rewrites it only under it).
    let lock = lock_file(&index_path, LockMode::Shared, LOCK_TIMEOUT, false)?;
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut lock.file(), &mut buf).at("reading", &index_path)?;
    let header_path = index_path.with_file_name("cyrus.header");
    let header_bytes = match fs::read(&header_path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("reading", &header_path, e)),
    };
    drop(lock);
    let parsed = index::parse_index(&buf).map_err(|e| Error::parse(&index_path, e))?;
    let user_flags = match header_bytes {
        Some(b) => {
            header::parse_header(&b)
                .map_err(|e| Error::parse(&header_path, e))?
                .user_flags
        }
        None => Vec::new(),
    };
    let records = parsed
        .records
        .into_iter()
        .map(|r| view(r, &user_flags))
        .collect();
    Ok(IndexReport {
        path: index_path,
        header: parsed.header,
        user_flags,
        records,
    })
}

fn view(r: IndexRecord, names: &[Option<String>]) -> RecordView {
    let keywords = r
        .user_flag_bits()
        .map(|i| match names.get(i) {
            Some(Some(n)) => n.clone(),
            _ => format!("#{i}"),
        })
        .collect();
    RecordView {
        uid: r.uid,
        guid: r.guid.to_hex(),
        internaldate: r.internaldate.secs(),
        size: r.size,
        modseq: r.modseq,
        last_updated: r.last_updated.secs(),
        savedate: r.savedate.secs(),
        system_flags: r.system_flag_names(),
        keywords,
        expunged: r.is_expunged(),
        unlinked: r.is_unlinked(),
        archived: r.is_archived(),
        record: r,
    }
}

/// Parse `cyrus.header` at `path` (a file, or a mailbox directory).
pub fn header(path: &Path) -> Result<HeaderReport> {
    let header_path = resolve(path, "cyrus.header");
    let buf = fs::read(&header_path).at("reading", &header_path)?;
    let header = header::parse_header(&buf).map_err(|e| Error::parse(&header_path, e))?;
    Ok(HeaderReport {
        path: header_path,
        header,
    })
}

/// Walk `cyrus.cache` at `path` through the records of the `cyrus.index` beside it
/// (or at `index_path`), checking every entry against its record.
pub fn cache(path: &Path, index_path: Option<&Path>) -> Result<CacheReport> {
    let cache_path = resolve(path, "cyrus.cache");
    let index_path = match index_path {
        Some(p) => resolve(p, "cyrus.index"),
        None => cache_path.with_file_name("cyrus.index"),
    };
    // Cache appends happen under the exclusive index lock: read both under the shared one.
    let lock = lock_file(&index_path, LockMode::Shared, LOCK_TIMEOUT, false)?;
    let mut ibuf = Vec::new();
    std::io::Read::read_to_end(&mut lock.file(), &mut ibuf).at("reading", &index_path)?;
    let cbuf = fs::read(&cache_path).at("reading", &cache_path)?;
    drop(lock);
    let idx = index::parse_index(&ibuf).map_err(|e| Error::parse(&index_path, e))?;
    let generation =
        cache::parse_cache_generation(&cbuf).map_err(|e| Error::parse(&cache_path, e))?;
    let mut entries = Vec::with_capacity(idx.records.len());
    for r in &idx.records {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let (len, subject, from, envelope) = match cache::parse_cache_entry(&cbuf, r.cache_offset) {
            Ok(e) => (e.len, text(e.subject()), text(e.from()), text(e.envelope())),
            Err(_) => (0, String::new(), String::new(), String::new()),
        };
        let check = cache::check_record(&cbuf, r);
        entries.push(CacheView {
            uid: r.uid,
            offset: r.cache_offset,
            len,
            crc_ok: check.is_ok(),
            error: check.err().map(|e| e.to_string()),
            subject,
            from,
            envelope,
        });
    }
    Ok(CacheReport {
        path: cache_path,
        generation,
        entries,
    })
}

/// Parse `mailboxes.db` at `path` (a twoskip file), read under its shared lock.
pub fn mailboxes(path: &Path, deletedprefix: &str) -> Result<MailboxesReport> {
    let buf = read_locked(path, true)?;
    let head = twoskip::parse_twoskip_header(&buf).map_err(|e| Error::parse(path, e))?;
    let records = twoskip::read_all(&buf).map_err(|e| Error::parse(path, e))?;
    let list =
        mboxlist::parse_mboxlist(&records, deletedprefix).map_err(|e| Error::parse(path, e))?;
    Ok(MailboxesReport {
        path: path.to_path_buf(),
        generation: head.generation,
        users: list.users(),
        mailboxes: list.entries().to_vec(),
        records: list.kinds.clone(),
    })
}

/// The `ctl_mboxlist -d` form of `mailboxes.db` at `path`.
pub fn mailboxes_ctl_json(path: &Path, deletedprefix: &str) -> Result<serde_json::Value> {
    let buf = read_locked(path, true)?;
    let records = twoskip::read_all(&buf).map_err(|e| Error::parse(path, e))?;
    let list =
        mboxlist::parse_mboxlist(&records, deletedprefix).map_err(|e| Error::parse(path, e))?;
    Ok(list.to_ctl_mboxlist_json())
}
