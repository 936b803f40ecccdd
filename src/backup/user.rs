//! The user-level files in a run: `META` lists `seen`/`sub`; they are fetched (with
//! `SNAPSHOT` when the server has it, which adds the sieve directory and the quota) on
//! the first run, when their stats moved, when the quota limits changed, or with
//! `SNAPSHOT` when any folder changed; and stored anew only when their SHA-1s differ
//! from the stored ones. The quota (a cyrvaultd extension, `CAP QUOTA`; a stock
//! `backupcyrusd` has none) is asked for on every run with `META <user> quota`, one
//! short line per quota root; it counts as changed only when its roots or limits
//! change, not its usage, which moves with every message.
#![forbid(unsafe_code)]

use std::io::Write;

use super::ext::{BackupExt, UserStats, stat3};
use super::recover::user_file_entry;
use super::run::{RunCtx, now_secs, proto};
use crate::cyrus::Guid;
use crate::error::Result;
use crate::model::{UserFile, UserFileKind, UserStateRef};
use crate::protocol::client::{Collect, Receiver};
use crate::protocol::{DataHeader, ProtocolError, Reply, Request};

impl RunCtx<'_> {
    /// User-level files: fetched when the first run, when `META`'s stats changed, or
    /// (with `SNAPSHOT`, for the sieve files) when any folder changed; stored anew only
    /// when their bytes differ from the last stored ones.
    pub(super) fn user_state(
        &mut self,
        last_run: Option<u64>,
        prev: &BackupExt,
    ) -> Result<(Option<UserStateRef>, Option<UserStats>)> {
        if self.userid.starts_with('%') {
            // A shared hierarchy (doc/protocol.md 2.8) has no seen, subscriptions or
            // sieve of its own: nothing to ask for.
            return Ok((None, None));
        }
        let listing = self
            .server
            .client
            .meta_listing(self.userid.as_bytes())
            .map_err(|e| proto(self.server, "META", e))?;
        let mut seen = None;
        let mut sub = None;
        for (n, s) in &listing {
            match n.as_slice() {
                b"seen" => seen = Some(stat3(s)),
                b"sub" => sub = Some(stat3(s)),
                _ => {}
            }
        }
        let snapshot = self.server.has("SNAPSHOT");
        let prev_files: Vec<(u64, UserFile)> = match last_run {
            Some(l) => self
                .catalog
                .user_files_at(l)?
                .into_iter()
                .map(|(r, f, _)| (r, f))
                .collect(),
            None => Vec::new(),
        };
        let this_run = self.run;
        let carried = |prev_user: &UserStats| {
            let snapshot_run = prev_files.first().map_or(this_run, |(r, _)| *r);
            let files = prev_files.iter().map(|(_, f)| f.clone()).collect();
            (
                Some(UserStateRef {
                    snapshot_run,
                    files,
                }),
                Some(prev_user.clone()),
            )
        };
        let changed_folders = self.rep.folders_changed + self.rep.folders_gone > 0;
        let quota_key = if self.server.has("QUOTA") {
            let q = self.fetch_quota()?;
            Some(quota_limits_sha1(&q))
        } else {
            None
        };
        if let Some(p) = &prev.user
            && last_run.is_some()
            && p.seen == seen
            && p.sub == sub
            && p.sha1.get(QUOTA_KEY) == quota_key.as_ref()
            && !(snapshot && changed_folders)
        {
            return Ok(carried(p));
        }
        let files = if snapshot {
            self.snapshot_user_files()?
        } else {
            self.meta_user_files()?
        };
        let mut sha1 = std::collections::BTreeMap::new();
        for (f, bytes) in &files {
            if f.kind == UserFileKind::Quota {
                continue;
            }
            let key = user_file_entry(0, f)?
                .trim_start_matches("user/000000/")
                .to_string();
            sha1.insert(key, Guid::of(bytes).to_hex());
        }
        if let Some(k) = quota_key {
            sha1.insert(QUOTA_KEY.to_string(), k);
        }
        let stats = UserStats { seen, sub, sha1 };
        if let Some(p) = &prev.user
            && last_run.is_some()
            && p.sha1 == stats.sha1
        {
            let (r, _) = carried(p);
            return Ok((r, Some(stats)));
        }
        let now = now_secs();
        for (f, bytes) in &files {
            self.writer
                .add(&user_file_entry(self.run, f)?, bytes, now)?;
        }
        self.rep.user_state_stored = true;
        Ok((
            Some(UserStateRef {
                snapshot_run: self.run,
                files: files.into_iter().map(|(f, _)| f).collect(),
            }),
            Some(stats),
        ))
    }

    /// The quota file (`META <user> quota`); empty when the user has no quota root.
    fn fetch_quota(&mut self) -> Result<Vec<u8>> {
        let req = Request::Meta {
            slot: self.server.slot(),
            user: self.userid.as_bytes().to_vec(),
            items: Some(vec![b"quota".to_vec()]),
        };
        let mut rx = Collect::default();
        self.server
            .client
            .fetch(&req, &mut rx)
            .map_err(|e| proto(self.server, "META quota", e))?;
        Ok(rx
            .files
            .into_iter()
            .find(|(h, _)| h.name == b"quota")
            .map(|(_, b)| b)
            .unwrap_or_default())
    }

    fn meta_user_files(&mut self) -> Result<Vec<(UserFile, Vec<u8>)>> {
        let mut items = vec![b"seen".to_vec(), b"sub".to_vec()];
        if self.server.has("QUOTA") {
            items.push(b"quota".to_vec());
        }
        let req = Request::Meta {
            slot: self.server.slot(),
            user: self.userid.as_bytes().to_vec(),
            items: Some(items),
        };
        let mut rx = Collect::default();
        self.server
            .client
            .fetch(&req, &mut rx)
            .map_err(|e| proto(self.server, "META", e))?;
        let mut out = Vec::new();
        for (h, bytes) in rx.files {
            self.rep.meta_bytes_fetched += bytes.len() as u64;
            let kind = match h.name.as_slice() {
                b"seen" => UserFileKind::Seen,
                b"sub" => UserFileKind::Subs,
                b"quota" => UserFileKind::Quota,
                _ => continue,
            };
            out.push((
                UserFile {
                    kind,
                    name: String::from_utf8_lossy(&h.name).into_owned(),
                    active: false,
                },
                bytes,
            ));
        }
        Ok(out)
    }

    fn snapshot_user_files(&mut self) -> Result<Vec<(UserFile, Vec<u8>)>> {
        let req = Request::Snapshot {
            slot: self.server.slot(),
            user: self.userid.as_bytes().to_vec(),
        };
        let mut rx = SnapshotRx::default();
        self.server
            .client
            .fetch(&req, &mut rx)
            .map_err(|e| proto(self.server, "SNAPSHOT", e))?;
        self.rep.meta_bytes_fetched += rx.bytes;
        let mut out = Vec::new();
        // The active script: Cyrus's `defaultbc` is a link to the active `<name>.bc`.
        let active_bc = rx
            .files
            .iter()
            .find(|(n, _)| n == "sieve/defaultbc")
            .map(|(_, b)| Guid::of(b));
        let active: Option<String> = active_bc.and_then(|g| {
            rx.files.iter().find_map(|(n, b)| {
                let s = n.strip_prefix("sieve/")?.strip_suffix(".bc")?;
                (Guid::of(b) == g).then(|| format!("{s}.script"))
            })
        });
        for (name, bytes) in rx.files {
            let (kind, fname) = match name.as_str() {
                "seen" => (UserFileKind::Seen, name.clone()),
                "sub" => (UserFileKind::Subs, name.clone()),
                "quota" => (UserFileKind::Quota, name.clone()),
                n => match n.strip_prefix("sieve/") {
                    Some(s) if !s.is_empty() => (UserFileKind::Sieve, s.to_string()),
                    _ => continue,
                },
            };
            let is_active = kind == UserFileKind::Sieve && active.as_deref() == Some(&fname);
            out.push((
                UserFile {
                    kind,
                    name: fname,
                    active: is_active,
                },
                bytes,
            ));
        }
        Ok(out)
    }
}

/// The key of the quota in [`UserStats::sha1`].
const QUOTA_KEY: &str = "quota-limits";

/// SHA-1 (hex) of the quota file's roots and limits, without usage or modseq, so that
/// only a change of limits counts as a change (an unparsable file: of its bytes).
fn quota_limits_sha1(bytes: &[u8]) -> String {
    match crate::cyrus::quota::parse_quota_file(bytes) {
        Ok(roots) => {
            let mut canon = String::new();
            for (root, v) in roots {
                canon.push_str(&format!("{root}\t{:?}\n", v.limits));
            }
            Guid::of(canon.as_bytes()).to_hex()
        }
        Err(_) => Guid::of(bytes).to_hex(),
    }
}

/// SNAPSHOT: keep the user files (before the first FOLDER line), drop folder files.
#[derive(Default)]
struct SnapshotRx {
    in_folders: bool,
    files: Vec<(String, Vec<u8>)>,
    cur: Vec<u8>,
    sink: std::io::Sink,
    bytes: u64,
}

impl Receiver for SnapshotRx {
    fn file(&mut self, _h: &DataHeader) -> std::result::Result<&mut dyn Write, ProtocolError> {
        if self.in_folders {
            return Ok(&mut self.sink);
        }
        self.cur.clear();
        Ok(&mut self.cur)
    }

    fn file_done(
        &mut self,
        h: &DataHeader,
        _sha1: &[u8; 20],
    ) -> std::result::Result<(), ProtocolError> {
        self.bytes += h.stat.size;
        if !self.in_folders {
            self.files.push((
                String::from_utf8_lossy(&h.name).into_owned(),
                std::mem::take(&mut self.cur),
            ));
        }
        Ok(())
    }

    fn missing(&mut self, _text: &[u8]) -> std::result::Result<(), ProtocolError> {
        Ok(())
    }

    fn other(&mut self, reply: Reply) -> std::result::Result<(), ProtocolError> {
        if matches!(reply, Reply::Folder { .. }) {
            self.in_folders = true;
        }
        Ok(())
    }
}
