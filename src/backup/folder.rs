//! One changed folder in a run: `FMETA` for its metadata, `records_from_meta`, the
//! records' GUIDs the archive lacks fetched with `FDATA` (at most [`FDATA_BATCH`] UIDs
//! per request), each message's SHA-1 checked against its GUID before it is stored
//! (a mismatch is spool damage: reported, not stored), and the folder's entries
//! written (`folders/<uniqueid>/<run>/...`, `messages/<g0g1>/<guid>`).
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::io::Write;

use super::ext::{FolderStats, stat3};
use super::listing::Listed;
use super::run::{RunCtx, now_secs, proto};
use super::{FDATA_BATCH, RACY_SECS, SpoolDamage};
use crate::archive::{ArchiveWriter, folder_entry, message_entry, run_id};
use crate::cyrus::Guid;
use crate::error::{Error, Result};
use crate::model::{FileStat, FolderState, RecordState, records_from_meta};
use crate::protocol::client::{Collect, Receiver};
use crate::protocol::{DataHeader, ProtocolError, Reply, Request};

/// What a changed folder gave.
pub(super) struct Taken {
    pub(super) state: FolderState,
    pub(super) records: Vec<RecordState>,
    pub(super) stats: FolderStats,
}

impl RunCtx<'_> {
    /// FMETA, records, missing messages by FDATA, and the folder's entries.
    pub(super) fn take_folder(&mut self, f: &Listed) -> Result<Option<Taken>> {
        let items: Vec<Vec<u8>> = ["header", "index", "annotations", "mailbox_annotations"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let req = Request::FMeta {
            slot: self.server.slot(),
            user: self.userid.as_bytes().to_vec(),
            folder: f.name.as_bytes().to_vec(),
            items: Some(items),
        };
        let mut rx = Collect::default();
        let done = match self.server.client.fetch(&req, &mut rx) {
            Ok(d) => d,
            Err(ProtocolError::No(t)) => {
                self.skip(f, format!("FMETA answered NO {t}"));
                return Ok(None);
            }
            Err(e) => return Err(proto(self.server, "FMETA", e)),
        };
        if done.get(1).map(|u| u.as_slice()) != Some(f.uniqueid.as_bytes()) {
            self.skip(
                f,
                "the folder was replaced between listing and reading".into(),
            );
            return Ok(None);
        }
        let now = now_secs();
        let mut stats = FolderStats::default();
        let mut files: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for (h, bytes) in rx.files {
            let s = stat3(&h.stat);
            stats.set(&h.name, s);
            if h.name != b"mailbox_annotations" && h.stat.mtime.saturating_add(RACY_SECS) > now {
                stats.racy = true;
            }
            self.rep.meta_bytes_fetched += bytes.len() as u64;
            files.insert(h.name, bytes);
        }
        let (Some(header), Some(index)) = (files.get(&b"header"[..]), files.get(&b"index"[..]))
        else {
            self.skip(f, "cyrus.header or cyrus.index missing".into());
            return Ok(None);
        };
        let (mut state, records) = match records_from_meta(header, index) {
            Ok(x) => x,
            Err(e) => {
                self.skip(f, format!("metadata does not parse: {e}"));
                return Ok(None);
            }
        };
        state.index_file_stat = stats.index.map(|[size, mtime, inode]| FileStat {
            size,
            mtime: i64::try_from(mtime).unwrap_or(i64::MAX),
            inode,
        });
        let runid = run_id(self.run);
        let entry = |file: &str| {
            folder_entry(&f.uniqueid, &runid, file).map_err(|e| Error::archive("(entry)", e))
        };
        for (proto_name, file) in [
            (&b"header"[..], "cyrus.header"),
            (b"index", "cyrus.index"),
            (b"annotations", "cyrus.annotations"),
            (b"mailbox_annotations", "mailbox_annotations.json"),
        ] {
            if let Some(bytes) = files.get(proto_name) {
                self.writer.add(&entry(file)?, bytes, now)?;
            }
        }
        let mut summary = serde_json::to_value(&state)
            .map_err(|e| Error::Other(format!("encoding state.json: {e}")))?;
        if let serde_json::Value::Object(m) = &mut summary {
            m.insert("name".into(), f.record_name().into());
            m.insert("internal_name".into(), f.internal(self.userid).into());
            m.insert("uniqueid".into(), f.uniqueid.clone().into());
            m.insert("records".into(), records.len().into());
            if let Some(d) = &f.deleted {
                m.insert("deleted_at".into(), d.at.into());
            }
        }
        let summary = serde_json::to_vec_pretty(&summary)
            .map_err(|e| Error::Other(format!("encoding state.json: {e}")))?;
        self.writer.add(&entry("state.json")?, &summary, now)?;
        self.fetch_messages(f, &records)?;
        Ok(Some(Taken {
            state,
            records,
            stats,
        }))
    }

    /// FDATA for the records whose GUID the archive does not have yet.
    fn fetch_messages(&mut self, f: &Listed, records: &[RecordState]) -> Result<()> {
        let mut want: Vec<(u32, Guid, i64)> = Vec::new();
        let mut seen: HashSet<Guid> = HashSet::new();
        for r in records {
            if r.guid.0 == [0u8; 20] {
                log::warn!(
                    target: "cyrvault::backup",
                    "user {} folder {} uid {}: record has no GUID; not fetched",
                    self.userid, f.name, r.uid
                );
                continue;
            }
            if !self.have.contains(&r.guid) && seen.insert(r.guid) {
                want.push((r.uid, r.guid, r.internaldate));
            }
        }
        if want.is_empty() {
            return Ok(());
        }
        let guids: Vec<Guid> = want.iter().map(|w| w.1).collect();
        let missing: HashSet<Guid> = self.catalog.missing_guids(&guids)?.into_iter().collect();
        for (_, g, _) in &want {
            if !missing.contains(g) {
                self.have.insert(*g);
            }
        }
        want.retain(|w| missing.contains(&w.1));
        for batch in want.chunks(FDATA_BATCH) {
            let expected: HashMap<u32, (Guid, i64)> =
                batch.iter().map(|(u, g, d)| (*u, (*g, *d))).collect();
            let uids: Vec<u32> = batch.iter().map(|w| w.0).collect();
            let mut rx = MessageRx {
                writer: &mut *self.writer,
                expected: &expected,
                buf: Vec::new(),
                user: self.userid,
                folder: &f.name,
                stored: Vec::new(),
                bytes: 0,
                damage: Vec::new(),
                missing: Vec::new(),
                err: None,
                progress: self.opts.progress.as_deref(),
            };
            let r =
                self.server
                    .client
                    .fdata(self.userid.as_bytes(), f.name.as_bytes(), &uids, &mut rx);
            if let Some(e) = rx.err.take() {
                return Err(e);
            }
            let (stored, bytes, damage, missing) = (rx.stored, rx.bytes, rx.damage, rx.missing);
            match r {
                Ok(_) => {}
                Err(ProtocolError::No(t)) => {
                    self.skip(f, format!("FDATA answered NO {t}"));
                }
                Err(e) => return Err(proto(self.server, "FDATA", e)),
            }
            let rx = (stored, bytes, damage, missing);
            self.rep.messages_fetched += rx.0.len() as u64;
            self.rep.bytes_fetched += rx.1;
            self.have.extend(rx.0.iter().copied());
            self.rep.damage.extend(rx.2);
            self.rep
                .missing
                .extend(rx.3.into_iter().map(|u| (f.name.clone(), u)));
        }
        Ok(())
    }
}

/// FDATA files: each checked against its GUID, then stored.
struct MessageRx<'a> {
    writer: &'a mut ArchiveWriter,
    expected: &'a HashMap<u32, (Guid, i64)>,
    buf: Vec<u8>,
    user: &'a str,
    folder: &'a str,
    stored: Vec<Guid>,
    bytes: u64,
    damage: Vec<SpoolDamage>,
    missing: Vec<u32>,
    err: Option<Error>,
    progress: Option<&'a dyn super::Progress>,
}

impl Receiver for MessageRx<'_> {
    fn file(&mut self, _header: &DataHeader) -> std::result::Result<&mut dyn Write, ProtocolError> {
        self.buf.clear();
        Ok(&mut self.buf)
    }

    fn file_done(
        &mut self,
        header: &DataHeader,
        sha1: &[u8; 20],
    ) -> std::result::Result<(), ProtocolError> {
        let uid: Option<u32> = std::str::from_utf8(&header.name)
            .ok()
            .and_then(|s| s.parse().ok());
        let Some((uid, (guid, internaldate))) =
            uid.and_then(|u| self.expected.get(&u).map(|e| (u, *e)))
        else {
            return Err(ProtocolError::MalformedReply {
                what: "FDATA sent a file that was not asked for",
            });
        };
        // The protocol checked the transfer; this checks the spool: the bytes must be
        // the message Cyrus's index names.
        if *sha1 != guid.0 {
            self.damage.push(SpoolDamage {
                user: self.user.to_string(),
                folder: self.folder.to_string(),
                uid,
                expected: guid.to_hex(),
                got: Guid(*sha1).to_hex(),
            });
            return Ok(());
        }
        let mtime = u64::try_from(internaldate).unwrap_or(0);
        if let Err(e) = self.writer.add(&message_entry(&guid), &self.buf, mtime) {
            self.err = Some(e);
            return Err(ProtocolError::MalformedReply {
                what: "archive write failed",
            });
        }
        self.stored.push(guid);
        self.bytes += self.buf.len() as u64;
        if let Some(p) = self.progress {
            p.bytes(self.buf.len() as u64);
        }
        Ok(())
    }

    fn missing(&mut self, text: &[u8]) -> std::result::Result<(), ProtocolError> {
        let t = String::from_utf8_lossy(text);
        if let Some(uid) = t
            .strip_prefix("no such file ")
            .or_else(|| t.strip_prefix("failed to open file "))
            .and_then(|u| u.trim().parse().ok())
        {
            log::warn!(
                target: "cyrvault::backup",
                "user {} folder {} uid {uid}: the server has no file for it ({t})",
                self.user, self.folder
            );
            self.missing.push(uid);
        }
        Ok(())
    }

    fn other(&mut self, reply: Reply) -> std::result::Result<(), ProtocolError> {
        log::debug!(target: "cyrvault::backup", "FDATA: unexpected line {reply:?}");
        Ok(())
    }
}
