//! Mailbox annotations from the global `annotations.db` (reference §5.1): a
//! folder's rows are the key range `<uniqueid> NUL ...` of that twoskip file,
//! read by a lookup and a walk under its shared lock (`db.rs`); the rest of the
//! file (every other mailbox's annotations, server annotations) is not read.
//! `FDATA` never gets here: message data needs no annotations.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use super::db::with_db;
use super::error::{Result, SpoolError};
use super::{FolderRef, Spool, copy};
use crate::cyrus::annotations::{self, Annotation, AnnotationDb};
use crate::cyrus::twoskip;

impl Spool {
    /// `annotation_db_path`, or `annotations.db` in the config directory.
    fn annotations_db_path(&self) -> PathBuf {
        match self.conf.get("annotation_db_path") {
            Some(p) => PathBuf::from(p),
            None => self.conf.configdirectory().join("annotations.db"),
        }
    }

    /// The global annotations of each folder, in `folders` order: the records
    /// under `<uniqueid> NUL` (all of them for a folder, tombstones included),
    /// read under one shared lock of `annotations.db`. Empty lists if the file
    /// does not exist.
    pub fn folder_annotations(&self, folders: &[&FolderRef]) -> Result<Vec<Vec<Annotation>>> {
        let path = self.annotations_db_path();
        self.reads.annotations_db();
        let ranges = with_db(&self.locker, &path, &self.reads.annotations_bytes, |db| {
            let mut out = Vec::with_capacity(folders.len());
            for f in folders {
                let mut key = f.uniqueid().as_bytes().to_vec();
                key.push(0);
                let mut recs = Vec::new();
                db.prefix_into(&key, &mut recs)?;
                out.push(recs);
            }
            Ok(out)
        })?;
        let Some(ranges) = ranges else {
            return Ok(vec![Vec::new(); folders.len()]);
        };
        ranges
            .iter()
            .map(|recs| {
                annotations::parse_annotations(recs, AnnotationDb::Global)
                    .map_err(|e| SpoolError::parse(&path, e))
            })
            .collect()
    }

    /// Every record of the global `annotations.db`, copied under its shared
    /// lock; empty if the file does not exist. O(server): for inspection and
    /// tests; the service reads [`Spool::folder_annotations`].
    pub fn global_annotations(&self) -> Result<Vec<Annotation>> {
        let path = self.annotations_db_path();
        self.reads.annotations_db();
        let Some(copy) = copy::copy_twoskip(&self.locker, &path)? else {
            return Ok(Vec::new());
        };
        self.reads.annotations_bytes.fetch_add(
            copy.bytes.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let records = twoskip::read_all(&copy.bytes).map_err(|e| SpoolError::parse(&path, e))?;
        annotations::parse_annotations(&records, AnnotationDb::Global)
            .map_err(|e| SpoolError::parse(&path, e))
    }

    /// Upstream's synthetic `mailbox_annotations` file of a folder, from its
    /// annotations (as [`Spool::folder_annotations`] gives them; rows of other
    /// mailboxes are ignored); None if the folder has none.
    pub fn mailbox_annotations(&self, folder: &FolderRef, all: &[Annotation]) -> Option<Vec<u8>> {
        let owner = folder.entry.userid.as_deref();
        let rows = annotations::mailbox_annotation_rows(all, folder.uniqueid(), owner);
        let rows: Vec<crate::protocol::annotations::Annotation<'_>> = rows
            .iter()
            .map(
                |[entry, userid, value]| crate::protocol::annotations::Annotation {
                    entry,
                    userid,
                    value,
                },
            )
            .collect();
        crate::protocol::annotations::mailbox_annotations_json(&rows)
    }
}
