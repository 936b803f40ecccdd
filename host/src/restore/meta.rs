//! A folder's archived metadata as of a run, read for restore: `cyrus.header`,
//! `cyrus.index` (whole, or only its header), `cyrus.annotations` and the folder's
//! mailbox annotations (`mailbox_annotations.json`, the service's synthetic file:
//! special-use, comments and every other mailbox annotation, private ones with their
//! user). The catalog knows where the first three are; the JSON is found by name in the
//! members that hold the folder's other entries of that snapshot (it is written
//! between `cyrus.annotations` and `state.json`, in the same lane).
#![forbid(unsafe_code)]

use serde::Serialize;

use super::Source;
use crate::archive::{folder_entry, run_id};
use crate::cyrus::header::{MailboxHeader, parse_header};
use crate::cyrus::index::{INDEX_HEADER_MAX, IndexHeader, parse_header as parse_index_header};
use crate::error::{Error, Result};

/// One mailbox annotation: entry (`/specialuse`, `/comment`, `/vendor/...`), user
/// (empty: shared; else whose private value it is) and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MailboxAnnotation {
    /// The entry name without `/shared` or `/private`.
    pub entry: String,
    /// Empty for a shared annotation, else the user it is private to.
    pub userid: String,
    /// The value.
    pub value: String,
}

impl MailboxAnnotation {
    /// The METADATA name (RFC 5464): `/shared<entry>` or `/private<entry>`.
    pub fn metadata_name(&self) -> String {
        let scope = if self.userid.is_empty() {
            "/shared"
        } else {
            "/private"
        };
        format!("{scope}{}", self.entry)
    }
}

/// Parse `mailbox_annotations.json`: an array of `[entry, userid, value]`.
pub fn parse_mailbox_annotations(json: &[u8]) -> Result<Vec<MailboxAnnotation>> {
    let rows: Vec<(String, String, String)> = serde_json::from_slice(json)
        .map_err(|e| Error::other(format!("mailbox_annotations.json: {e}")))?;
    Ok(rows
        .into_iter()
        .map(|(entry, userid, value)| MailboxAnnotation {
            entry,
            userid,
            value,
        })
        .collect())
}

/// What [`Source::folder_files`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexWant {
    /// Not the index.
    None,
    /// Only its header (options, UIDVALIDITY, ...): a few hundred bytes inflated.
    Header,
    /// The whole file (every record).
    Whole,
}

/// A folder's stored meta at one run.
#[derive(Debug, Clone, Default)]
pub struct FolderFiles {
    /// The run whose snapshot this is (the folder's last change at or before the run).
    pub snapshot_run: u64,
    /// `cyrus.header`, parsed (ACL, keyword names, quota root, UniqueID).
    pub header: Option<MailboxHeader>,
    /// Its raw bytes.
    pub header_bytes: Vec<u8>,
    /// The index header (with [`IndexWant::Header`] or [`IndexWant::Whole`]).
    pub index_header: Option<IndexHeader>,
    /// The whole `cyrus.index` (with [`IndexWant::Whole`]).
    pub index: Option<Vec<u8>>,
    /// `cyrus.annotations` (with [`IndexWant::Whole`]), if the folder had one.
    pub annotations: Option<Vec<u8>>,
    /// Mailbox annotations (none stored: empty).
    pub mailbox_annotations: Vec<MailboxAnnotation>,
}

impl Source {
    /// The folder `uniqueid`'s meta as of `run` (its snapshot at or before it). A
    /// folder with no stored snapshot gives empty files.
    pub fn folder_files(
        &mut self,
        uniqueid: &str,
        run: u64,
        want: IndexWant,
    ) -> Result<FolderFiles> {
        let Some(snap) = self.catalog.folder_snapshot_at(uniqueid, run)? else {
            return Ok(FolderFiles::default());
        };
        let mut out = FolderFiles {
            snapshot_run: snap.snapshot_run,
            ..FolderFiles::default()
        };
        let what = |f: &str| format!("{f} of folder {uniqueid} (run {})", snap.snapshot_run);
        if let Some(loc) = snap.meta.header {
            out.header_bytes = self.read_entry(&loc)?;
            out.header = Some(
                parse_header(&out.header_bytes)
                    .map_err(|e| Error::parse(what("cyrus.header"), e))?,
            );
        }
        if let Some(loc) = snap.meta.index {
            let bytes = match want {
                IndexWant::None => None,
                IndexWant::Header => Some(self.read_entry_prefix(&loc, INDEX_HEADER_MAX as u64)?),
                IndexWant::Whole => Some(self.read_entry(&loc)?),
            };
            if let Some(b) = &bytes {
                out.index_header =
                    Some(parse_index_header(b).map_err(|e| Error::parse(what("cyrus.index"), e))?);
            }
            if want == IndexWant::Whole {
                out.index = bytes;
            }
        }
        if want == IndexWant::Whole
            && let Some(loc) = snap.meta.annotations
        {
            out.annotations = Some(self.read_entry(&loc)?);
        }
        let name = folder_entry(
            uniqueid,
            &run_id(snap.snapshot_run),
            "mailbox_annotations.json",
        )
        .map_err(|e| Error::archive("(entry name)", e))?;
        let mut members: Vec<u64> = [snap.meta.annotations, snap.meta.index, snap.meta.state]
            .iter()
            .flatten()
            .map(|l| l.member_offset)
            .collect();
        members.dedup();
        if let Some(loc) = self.find_entry_in(&name, &members)? {
            let json = self.read_entry(&loc)?;
            out.mailbox_annotations = parse_mailbox_annotations(&json)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_as_the_service_writes_it() {
        let json = b"[\n  [\n    \"/comment\",\n    \"\",\n    \"my sent\"\n  ],\n  [\n    \
                     \"/specialuse\",\n    \"bob\",\n    \"\\\\Sent\"\n  ]\n]";
        let a = parse_mailbox_annotations(json).unwrap();
        assert_eq!(a[0].metadata_name(), "/shared/comment");
        assert_eq!(a[1].metadata_name(), "/private/specialuse");
        assert_eq!(
            (a[1].userid.as_str(), a[1].value.as_str()),
            ("bob", "\\Sent")
        );
        assert!(parse_mailbox_annotations(b"{}").is_err());
    }
}
