//! One changed folder in a run: `FMETA` for its metadata, `records_from_meta`, the
//! records' GUIDs the archive lacks fetched with `FDATA` (at most [`FDATA_BATCH`] UIDs
//! per request), each message's SHA-1 checked against its GUID before it is stored
//! (a mismatch is spool damage: reported, not stored), and the folder's entries
//! written (`folders/<uniqueid>/<run>/...`, `messages/<g0g1>/<guid>`).
//!
//! The folder's entries are written only once every message its records name is held
//! (in the archive already, or stored in this run). Anything else — `FMETA` or `FDATA`
//! answering `NO` because the folder was renamed or deleted meanwhile, a message file
//! gone, a message that does not hash to its GUID, metadata that does not parse — makes
//! the folder FAILED for this run (`UserReport::fail_folder`): nothing of its new state
//! is written and the catalog carries its previous state forward. The messages that
//! did arrive intact are stored all the same, so the next run does not fetch them again.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::io::Write;

use super::ext::{FolderStats, stat3};
use super::listing::Listed;
use super::run::{RunCtx, now_secs, proto};
use super::{BackupError, Result};
use super::{FDATA_BATCH, FailureClass, FolderFailure, RACY_SECS, SpoolDamage};
use crate::archive::{ArchiveWriter, folder_entry, message_entry, run_id};
use crate::cyrus::Guid;
use crate::model::{FileStat, FolderState, RecordState, records_from_meta};
use crate::protocol::client::{Collect, Receiver};
use crate::protocol::{DataHeader, ProtocolError, Reply, Request};
use cyrvault::error::ErrorKind;

/// What a changed folder gave.
pub(super) struct Taken {
    pub(super) state: FolderState,
    pub(super) records: Vec<RecordState>,
    pub(super) stats: FolderStats,
}

/// The `FMETA` items a run asks for (plus [`SERVERTIME_ITEM`] when announced).
const META_ITEMS: [&str; 4] = ["header", "index", "annotations", "mailbox_annotations"];

/// The `FMETA` item of the `SERVERTIME` extension (doc/protocol.md 2.6): the server's
/// clock while it held the folder's lock. A stock server ignores unknown items.
pub(crate) const SERVERTIME_ITEM: &str = "servertime";

/// Whether a file with this mtime, read while the server's clock said `clock`, may
/// change again within the same second without its stat moving (see [`RACY_SECS`]).
pub(super) fn is_racy(mtime: u64, clock: u64) -> bool {
    mtime.saturating_add(RACY_SECS) > clock
}

/// A lower bound of the server's clock, for servers without `SERVERTIME` (a stock
/// `backupcyrusd`): the newest mtime the run has seen from the server (a file cannot
/// be modified after "now"), capped by our own clock (so a file stamped in the future
/// cannot raise it). Lower than the truth only makes more folders racy: slower, never
/// wrong. The cost: a user's most recently modified folder is read again each run
/// until something newer changes on the server.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ClockFloor {
    newest_mtime: u64,
}

impl ClockFloor {
    /// A file of the server's had this mtime.
    pub(super) fn saw_mtime(&mut self, mtime: u64) {
        self.newest_mtime = self.newest_mtime.max(mtime);
    }

    /// The bound.
    pub(super) fn floor(&self) -> u64 {
        self.newest_mtime.min(now_secs())
    }
}

/// How fetching a folder's messages ended.
enum Fetched {
    /// Every message the folder's records name is held now (some may have been held
    /// already, in the archive or in this run).
    Complete,
    /// The folder cannot be committed in this run.
    Failed(FailureClass, String),
}

impl RunCtx<'_> {
    /// A changed folder: `FMETA`, its records, the messages the archive lacks by
    /// `FDATA`, then (only when every message its records name is held) its entries.
    /// `Ok(None)`: the folder failed (pushed to the report); the catalog carries its
    /// previous state forward and nothing of its new state is written.
    pub(super) fn take_folder(&mut self, f: &Listed) -> Result<Option<Taken>> {
        let mut items: Vec<Vec<u8>> = META_ITEMS.iter().map(|s| s.as_bytes().to_vec()).collect();
        if self.server.has("SERVERTIME") {
            items.push(SERVERTIME_ITEM.as_bytes().to_vec());
        }
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
                let (class, why) =
                    no_answer_class(&t, "FMETA", "renamed or deleted since it was listed");
                self.fail(f, class, why);
                return Ok(None);
            }
            Err(e) => return Err(proto(self.server, "FMETA", e)),
        };
        if done.get(1).map(|u| u.as_slice()) != Some(f.uniqueid.as_bytes()) {
            let why = format!(
                "FMETA answered for UniqueID {}: the folder was replaced between listing and reading",
                done.get(1)
                    .map_or_else(String::new, |u| String::from_utf8_lossy(u).into_owned())
            );
            self.fail(f, FailureClass::Temporary, why);
            return Ok(None);
        }
        let mut stats = FolderStats::default();
        let mut files: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut server_clock = None;
        for (h, bytes) in rx.files {
            if h.name == SERVERTIME_ITEM.as_bytes() {
                server_clock = Some(h.stat.mtime);
                continue;
            }
            stats.set(&h.name, stat3(&h.stat));
            if h.name != b"mailbox_annotations" {
                self.clock.saw_mtime(h.stat.mtime);
            }
            self.rep.meta_bytes_fetched += bytes.len() as u64;
            files.insert(h.name, bytes);
        }
        // The server's clock when it read the files, or a lower bound of it.
        let clock = server_clock.unwrap_or_else(|| self.clock.floor());
        stats.racy = [stats.header, stats.index, stats.annotations]
            .iter()
            .flatten()
            .any(|[_, mtime, _]| is_racy(*mtime, clock));
        let (Some(header), Some(index)) = (files.get(&b"header"[..]), files.get(&b"index"[..]))
        else {
            let why = format!(
                "FMETA sent no cyrus.header or cyrus.index ({})",
                rx.missing
                    .iter()
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            self.fail(f, FailureClass::Damaged, why);
            return Ok(None);
        };
        let (mut state, mut records) = match records_from_meta(header, index) {
            Ok(x) => x,
            Err(e) => {
                let why = format!("its metadata does not parse: {e} (run reconstruct)");
                self.fail(f, FailureClass::Damaged, why);
                return Ok(None);
            }
        };
        if !self.erased.is_empty() {
            // Erased (doc/retention.md): not in this state, not fetched.
            let n = records.len();
            let run = self.run;
            records.retain(|r| {
                self.erased
                    .get(&r.guid)
                    .is_none_or(|e| e.keeps(run, r.is_expunged()))
            });
            self.rep.messages_erased_skipped += (n - records.len()) as u64;
        }
        state.index_file_stat = stats.index.map(|[size, mtime, inode]| FileStat {
            size,
            mtime: i64::try_from(mtime).unwrap_or(i64::MAX),
            inode,
        });
        if let Some(p) = &self.opts.progress {
            p.folder_read(self.userid, &f.name);
        }
        if let Fetched::Failed(class, why) = self.fetch_messages(f, &records)? {
            self.fail(f, class, why);
            return Ok(None);
        }
        // Every GUID the new state names is held: checked here, before anything of the
        // folder's new state is written, and again by the catalog's writer.
        let unheld: Vec<u32> = records
            .iter()
            .filter(|r| !self.have.contains(&r.guid))
            .map(|r| r.uid)
            .collect();
        if !unheld.is_empty() {
            let why = format!(
                "{} record(s) name messages the archive does not hold (uids {})",
                unheld.len(),
                uid_list(&unheld)
            );
            self.fail(f, FailureClass::Damaged, why);
            return Ok(None);
        }
        self.write_folder_entries(f, &state, records.len(), files)?;
        Ok(Some(Taken {
            state,
            records,
            stats,
        }))
    }

    /// The folder's entries: `folders/<uniqueid>/<run>/cyrus.header`, `cyrus.index`,
    /// `cyrus.annotations`, `mailbox_annotations.json` and `state.json`. The files are
    /// handed over, not copied: a big `cyrus.index` is compressed from its own buffer.
    fn write_folder_entries(
        &mut self,
        f: &Listed,
        state: &FolderState,
        records: usize,
        mut files: HashMap<Vec<u8>, Vec<u8>>,
    ) -> Result<()> {
        let now = now_secs();
        let runid = run_id(self.run);
        let entry = |file: &str| {
            folder_entry(&f.uniqueid, &runid, file).map_err(|e| BackupError::archive("(entry)", e))
        };
        for (proto_name, file) in [
            (&b"header"[..], "cyrus.header"),
            (b"index", "cyrus.index"),
            (b"annotations", "cyrus.annotations"),
            (b"mailbox_annotations", "mailbox_annotations.json"),
        ] {
            if let Some(bytes) = files.remove(proto_name) {
                self.writer.add_owned(&entry(file)?, bytes, now)?;
            }
        }
        let mut summary = serde_json::to_value(state)
            .map_err(|e| BackupError::other(format!("encoding state.json: {e}")))?;
        if let serde_json::Value::Object(m) = &mut summary {
            m.insert("name".into(), f.record_name().into());
            m.insert("internal_name".into(), f.internal(self.userid).into());
            m.insert("uniqueid".into(), f.uniqueid.clone().into());
            m.insert("records".into(), records.into());
            if let Some(d) = &f.deleted {
                m.insert("deleted_at".into(), d.at.into());
            }
        }
        let summary = serde_json::to_vec_pretty(&summary)
            .map_err(|e| BackupError::other(format!("encoding state.json: {e}")))?;
        self.writer.add(&entry("state.json")?, &summary, now)?;
        Ok(())
    }

    /// FDATA for the records whose GUID the archive does not have yet. Messages that
    /// arrive intact are stored (and held) whatever becomes of the folder.
    fn fetch_messages(&mut self, f: &Listed, records: &[RecordState]) -> Result<Fetched> {
        // One pass: a GUID held already (in the archive, adopted, or stored in this
        // run) costs a set lookup, one the catalog has a primary-key lookup (then it
        // is held); the rest are wanted, each once. No list of every GUID is built, so
        // a folder of 200,000 messages costs the `have` set and the wanted ones, by
        // their index in `records` (4 bytes each, not a copy of UID, GUID and date:
        // ~6 MB less at the peak of a full backup of such a folder).
        let mut want: Vec<u32> = Vec::new();
        let mut wanted: HashSet<Guid> = HashSet::new();
        let mut no_guid = Vec::new();
        for (i, r) in records.iter().enumerate() {
            if r.guid.0 == [0u8; 20] {
                no_guid.push(r.uid);
                continue;
            }
            if self.have.contains(&r.guid) || wanted.contains(&r.guid) {
                continue;
            }
            if self.catalog.has_message(&r.guid)? {
                self.have.insert(r.guid);
            } else {
                wanted.insert(r.guid);
                // records.len() comes from a u32 count (cyrus.index num_records).
                want.push(u32::try_from(i).unwrap_or(u32::MAX));
            }
        }
        drop(wanted);
        if !no_guid.is_empty() {
            return Ok(Fetched::Failed(
                FailureClass::Damaged,
                format!(
                    "record(s) without a GUID in cyrus.index (uids {}; run reconstruct)",
                    uid_list(&no_guid)
                ),
            ));
        }
        if want.is_empty() {
            return Ok(Fetched::Complete);
        }
        self.written.messages.reserve(want.len());
        let mut damaged = Vec::new();
        let mut gone = Vec::new();
        for batch in want.chunks(FDATA_BATCH) {
            let batch: Vec<&RecordState> = batch
                .iter()
                .filter_map(|&i| records.get(i as usize))
                .collect();
            let expected: HashMap<u32, (Guid, i64)> = batch
                .iter()
                .map(|r| (r.uid, (r.guid, r.internaldate)))
                .collect();
            let uids: Vec<u32> = batch.iter().map(|r| r.uid).collect();
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
            // What arrived intact is stored and counts as held, whatever follows.
            self.rep.messages_fetched += rx.stored.len() as u64;
            self.rep.bytes_fetched += rx.bytes;
            self.have.extend(rx.stored.iter().copied());
            damaged.extend(rx.damage.iter().map(|d| d.uid));
            self.rep.damage.extend(rx.damage);
            gone.extend(rx.missing.iter().copied());
            self.rep
                .missing
                .extend(rx.missing.into_iter().map(|u| (f.name.clone(), u)));
            let done = self.writer.take_written();
            let archive = self.writer.path().to_path_buf();
            self.written.absorb(done, &archive)?;
            match r {
                Ok(_) => {}
                Err(ProtocolError::No(t)) => {
                    let (class, why) =
                        no_answer_class(&t, "FDATA", "renamed or deleted between FMETA and FDATA");
                    return Ok(Fetched::Failed(class, why));
                }
                Err(e) => return Err(proto(self.server, "FDATA", e)),
            }
        }
        // A damaged copy is fine if an intact one is held (another folder had it).
        damaged.retain(|uid| {
            records
                .iter()
                .find(|r| r.uid == *uid)
                .is_none_or(|r| !self.have.contains(&r.guid))
        });
        if !damaged.is_empty() {
            return Ok(Fetched::Failed(
                FailureClass::Damaged,
                format!(
                    "spool damage: the message file(s) of uid(s) {} do not hash to their GUID                      (run reconstruct)",
                    uid_list(&damaged)
                ),
            ));
        }
        gone.retain(|uid| {
            records
                .iter()
                .find(|r| r.uid == *uid)
                .is_none_or(|r| !self.have.contains(&r.guid))
        });
        if !gone.is_empty() {
            return Ok(Fetched::Failed(
                FailureClass::Temporary,
                format!(
                    "the server had no message file for uid(s) {} (expunged and purged while \
                     the folder was read; if this repeats, the spool lacks them: run reconstruct)",
                    uid_list(&gone)
                ),
            ));
        }
        Ok(Fetched::Complete)
    }

    /// Push a failure of `f` into the report.
    fn fail(&mut self, f: &Listed, class: FailureClass, why: String) {
        self.rep.fail_folder(FolderFailure::new(
            self.userid,
            &f.name,
            Some(&f.uniqueid),
            class,
            why,
        ));
    }
}

/// `1, 5, 9` (at most 10, then `... (N in all)`).
fn uid_list(uids: &[u32]) -> String {
    let mut s: Vec<String> = uids.iter().take(10).map(u32::to_string).collect();
    if uids.len() > 10 {
        s.push(format!("... ({} in all)", uids.len()));
    }
    s.join(", ")
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
    err: Option<BackupError>,
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
        // The protocol hashed the bytes as they arrived and they equal the GUID: the
        // writer need not hash them again.
        if let Err(e) = self
            .writer
            .add_hashed(&message_entry(&guid), &self.buf, mtime, guid)
        {
            self.err = Some(e.into());
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

/// A folder's `NO` answer as a failure class: a cyrvaultd says when retrying
/// cannot fix it (`NO internal error [DATAERR] ...`, `Error::from_server_no`): a
/// file it cannot read is Damaged (65); anything else (the folder went away
/// between two requests) is Temporary, as `usual` says.
fn no_answer_class(text: &str, what: &str, usual: &str) -> (FailureClass, String) {
    let e = BackupError::from_server_no("", text);
    match e.kind() {
        ErrorKind::Temporary => (
            FailureClass::Temporary,
            format!("{what} answered NO {text} ({usual})"),
        ),
        ErrorKind::Data => (FailureClass::Damaged, format!("{what}: {e}")),
        _ => (FailureClass::Refused, format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn racy_is_within_a_second_of_the_servers_clock() {
        // read at 100.x on the server's clock
        assert!(
            is_racy(100, 100),
            "same second: a second change may follow unseen"
        );
        assert!(
            is_racy(99, 100),
            "a second of slack for a lagging file system clock"
        );
        assert!(!is_racy(98, 100));
        assert!(is_racy(105, 100), "stamped after the clock: racy");
    }

    #[test]
    fn the_clock_floor_is_the_newest_mtime_capped_by_our_clock() {
        let mut c = ClockFloor::default();
        assert_eq!(c.floor(), 0, "nothing seen: every file is racy");
        c.saw_mtime(1_000);
        c.saw_mtime(900);
        assert_eq!(c.floor(), 1_000);
        c.saw_mtime(u64::MAX / 2);
        assert!(
            c.floor() <= now_secs(),
            "a file from the future does not raise it"
        );
    }

    #[test]
    fn uid_lists_are_cut() {
        assert_eq!(uid_list(&[1, 5]), "1, 5");
        let many: Vec<u32> = (1..=12).collect();
        assert_eq!(
            uid_list(&many),
            "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... (12 in all)"
        );
    }
}
